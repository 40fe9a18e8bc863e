"""``--download`` against a local HTTP server on 127.0.0.1 that honours Range requests (and can break off)."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
from official_archives import pack
from test_prepare import publish, relative_records

from vlprompt.data.download import download, part_path
from vlprompt.data.prepare import DOWNLOADS, prepare_dataset
from vlprompt.errors import DataError


class Server:
    """Serves ``folder``; ``cut[name] = n`` sends only the first n bytes of the next response for ``name`` (with
    the full Content-Length) and drops the connection; ``ranges=False`` ignores Range headers."""

    def __init__(self, folder: Path):
        self.folder, self.cut, self.ranges, self.requests = folder, {}, True, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                path = server.folder / name
                server.requests.append((name, self.headers.get("Range")))
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.ranges:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut:
                    body = body[: server.cut.pop(name)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    (tmp_path / "served").mkdir()
    s = Server(tmp_path / "served")
    yield s
    s.close()


def served_file(server: Server, name: str, size: int = 3 * (1 << 20) + 123) -> tuple[bytes, str]:
    data = os.urandom(size)
    (server.folder / name).write_bytes(data)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    data, checksum = served_file(server, "big.tar.gz")
    dest = tmp_path / "downloads" / "big.tar.gz"
    server.cut["big.tar.gz"] = 1_500_000
    with pytest.raises(DataError, match="run the same command again to resume it"):
        download(server.url("big.tar.gz"), dest, checksum, "a test")
    assert not dest.exists() and part_path(dest).stat().st_size == 1_500_000
    assert download(server.url("big.tar.gz"), dest, checksum, "a test") == dest
    assert dest.read_bytes() == data and not part_path(dest).exists()
    assert server.requests == [("big.tar.gz", None), ("big.tar.gz", "bytes=1500000-")]


def test_a_server_that_ignores_the_range_restarts_the_file(server, tmp_path):
    data, checksum = served_file(server, "f.zip")
    dest = tmp_path / "f.zip"
    part_path(dest).write_bytes(b"x" * 1000)  # a stale part that does not match the file
    server.ranges = False
    download(server.url("f.zip"), dest, checksum)
    assert dest.read_bytes() == data


def test_a_complete_part_is_verified_and_renamed(server, tmp_path):
    data, checksum = served_file(server, "f.tgz", size=5000)
    dest = tmp_path / "f.tgz"
    part_path(dest).write_bytes(data)  # complete, but interrupted before the rename
    download(server.url("f.tgz"), dest, checksum)
    assert dest.read_bytes() == data and server.requests == [("f.tgz", "bytes=5000-")]


def test_a_wrong_checksum_is_refused_and_leaves_nothing(server, tmp_path):
    served_file(server, "f.tar")
    dest = tmp_path / "f.tar"
    wrong = "md5:" + "0" * 32
    with pytest.raises(DataError, match=r"does not match its published checksum .*expected 0{32}; checksum from "
                                        r"somewhere\); the download was removed"):
        download(server.url("f.tar"), dest, wrong, "somewhere")
    assert list(tmp_path.iterdir()) == [server.folder]


def test_an_existing_file_is_never_replaced_and_errors_name_the_address(server, tmp_path):
    served_file(server, "f.tar")
    dest = tmp_path / "f.tar"
    dest.write_bytes(b"mine")
    download(server.url("f.tar"), dest, None)
    assert dest.read_bytes() == b"mine"
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url("absent.tar"), tmp_path / "absent.tar")
    with pytest.raises(DataError, match="this machine may be offline"):
        download("http://127.0.0.1:1/x.tar", tmp_path / "x.tar")


def test_prepare_with_download_fetches_every_file_and_lays_out_the_dataset(server, datasets_root, tmp_path,
                                                                            monkeypatch):
    files = pack("caltech101", datasets_root, server.folder)
    publish(monkeypatch, "caltech101", files, url_of=server.url)
    root = tmp_path / "data"
    server.cut["caltech-101.zip"] = 100
    with pytest.raises(DataError, match="run the same command again to resume it"):
        prepare_dataset("caltech101", root, download=True)
    assert not (root / "caltech-101").exists()
    prepare_dataset("caltech101", root, download=True)
    assert relative_records("caltech101", root) == relative_records("caltech101", datasets_root)
    assert sorted(os.listdir(root / DOWNLOADS)) == ["caltech-101.zip", "split_zhou_Caltech101.json"]
    assert ("caltech-101.zip", "bytes=100-") in server.requests
