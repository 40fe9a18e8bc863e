"""New-user probes 14-18: files that lie are refused or repaired, a full disk is one clear message, and
every file gets the user's umask.

Each case runs the real command line in a fresh process on real files: a prompt whose config points its
backbone at a malicious pickle, a checkpoint and cache entries holding NaN or cut short, a tiny tmpfs
that fills up, and a run under umask 022.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from vlprompt.learners.artifact import CONFIG_DIGEST, CONFIG_FILE, config_digest


def vlprompt_cli(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "vlprompt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def train_args(images: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """A seconds-long run: the embedded model with its weights, the user's folder, one epoch."""
    return ["train", "--preset", "world-demo", f"data.dataset=folder:{images}", "train.epochs=1",
            f"output_dir={out}", f"cache_dir={cache}", *extra]


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder_factory):
    """One finished run under umask 022 (its run folder, feature cache and export are checked below)."""
    root = tmp_path_factory.mktemp("trained")
    image_folder_factory(root / "images", per_class=2)
    done = vlprompt_cli(*train_args(root / "images", root / "runs", root / "cache"), cwd=root, umask=0o022)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (root / "runs").iterdir()
    exported = vlprompt_cli("export", "--prompt", str(run_dir / "prompt"), "--out", str(root / "classifier"),
                            cwd=root, umask=0o022)
    assert exported.returncode == 0, exported.stderr[-3000:]
    return root, run_dir


# -- 14: a prompt whose backbone entry names a malicious pickle ---------------------------------------

@pytest.fixture
def evil_prompt(trained, tmp_path):
    """The trained prompt with ``backbone.pretrained`` pointing at a pickle that would create a file."""
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    prompt = shutil.copytree(trained[1] / "prompt", tmp_path / "prompt")
    config = json.loads((prompt / CONFIG_FILE).read_text())
    config["backbone"]["pretrained"] = str(tmp_path / "evil.pt")
    (prompt / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (24, 24), (200, 10, 10)).save(tmp_path / "photo.png")
    return prompt, marker


def test_altered_prompt_is_refused_before_its_backbone_file_is_read(evil_prompt, tmp_path):
    prompt, marker = evil_prompt
    done = vlprompt_cli("predict", "--prompt", str(prompt), str(tmp_path / "photo.png"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {prompt / CONFIG_FILE} does not match the SHA-256 it recorded when it was saved: it was changed "
        "or damaged after saving; re-save the prompt (rerun its training or save_pretrained) or use an intact copy"]
    assert not marker.exists()


def test_a_rehashed_pickle_backbone_gets_vlprompts_words_only(evil_prompt, tmp_path):
    """A tamperer who also records the new SHA-256 gets as far as the file: it is not unpickled, and the
    only words are vlprompt's (torch's advice to use weights_only=False, and its warnings, never show)."""
    prompt, marker = evil_prompt
    config = json.loads((prompt / CONFIG_FILE).read_text())
    config[CONFIG_DIGEST] = config_digest(config)
    (prompt / CONFIG_FILE).write_text(json.dumps(config))
    done = vlprompt_cli("predict", "--prompt", str(prompt), str(tmp_path / "photo.png"), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot read checkpoint {tmp_path / 'evil.pt'}: ") and "weights_only" not in line
    assert "never loads pickled objects" in line
    assert not marker.exists()


# -- 15: NaN in checkpoint.pt -------------------------------------------------------------------------

def test_checkpoint_with_nan_in_its_prompt_is_refused_with_delete_to_restart(tmp_path, image_folder_factory):
    from vlprompt.engine.config import resolve_config
    from vlprompt.engine.run import run_dir_of, run_experiment

    image_folder_factory(tmp_path / "images", per_class=2)
    args = train_args(tmp_path / "images", tmp_path / "runs", tmp_path / "cache", "train.epochs=2")
    config = resolve_config("world-demo", args[3:])
    interrupted = run_experiment(config, stop_after_epoch=1)
    assert (interrupted.status, interrupted.epochs_done, interrupted.results) == ("interrupted", 1, None)
    checkpoint = run_dir_of(config) / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["learner"]["ctx"][0, 0] = float("nan")
    torch.save(state, checkpoint)

    resumed = vlprompt_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert error_lines(resumed) == [
        f"error: checkpoint {checkpoint} holds NaN or infinite values (ctx): it was damaged or saved after training "
        "diverged; delete it to restart the run from the beginning"]
    assert "Traceback" not in resumed.stderr and not (checkpoint.parent / "results.json").exists()
    checkpoint.unlink()  # the advice works
    restarted = vlprompt_cli(*args, cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-3000:]


# -- 16: damaged feature-cache entries ----------------------------------------------------------------

def test_damaged_cache_entries_are_removed_and_recomputed_with_one_line_each(trained, tmp_path):
    root, run_dir = trained
    cache = shutil.copytree(root / "cache", tmp_path / "cache")
    entries = sorted((cache / "features").glob("*.safetensors"))
    assert len(entries) == 2  # train and test features of the folder
    intact = {p.name: p.read_bytes() for p in entries}
    truncated, poisoned = entries
    truncated.write_bytes(intact[truncated.name][: len(intact[truncated.name]) // 2])
    with safe_open(str(poisoned), framework="pt") as f:
        features = f.get_tensor("features")
    features[0, 1, :3] = float("nan")  # recorded with its true SHA-256, as a tamperer who knows the format would
    sha = hashlib.sha256(features.contiguous().numpy()).hexdigest()
    poisoned.write_bytes(save({"features": features}, metadata={"sha256": sha}))

    done = vlprompt_cli(*train_args(root / "images", tmp_path / "runs", cache), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    damaged = [line for line in done.stderr.splitlines() if "feature cache entry" in line]
    assert len(damaged) == 2 and all("damaged" in line and "computing the features again" in line for line in damaged)
    assert any(str(truncated) in line for line in damaged) and any("NaN" in line and str(poisoned) in line
                                                                   for line in damaged)
    assert {p.name: p.read_bytes() for p in (cache / "features").glob("*.safetensors")} == intact
    (again,) = (tmp_path / "runs").iterdir()
    first, second = (json.loads((d / "results.json").read_text())["metrics"] for d in (run_dir, again))
    assert second == first


def test_flipped_bits_in_a_cache_entry_are_caught_by_its_checksum(tmp_path, tiny_backbone, classnames,
                                                                   image_folder_factory, caplog):
    from vlprompt.data.feature_cache import FeatureCache
    from vlprompt.data.records import DatasetSplits, ImageRecord

    root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("train",))
    records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "train").iterdir()))
               for f in sorted(d.iterdir())]
    data = DatasetSplits("tiny", classnames, records, [], [])
    cache = FeatureCache(tmp_path / "cache")
    first = cache.features(tiny_backbone, data, records)
    (entry,) = (tmp_path / "cache").iterdir()
    raw = bytearray(entry.read_bytes())
    raw[-2] ^= 0x01  # a finite float still, and a well-formed file
    entry.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        again = cache.features(tiny_backbone, data, records)
    assert torch.equal(again, first)
    assert [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()] == [
        f"feature cache entry {entry} is damaged (its SHA-256 does not match the one recorded when it was "
        "written); removed it, computing the features again"]


# -- 17: a full disk ----------------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs, mounted for the test (root in a container that allows mounts) and filled by ``fill``."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root with "
                    "CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> None:
    """Fill the file system up to ``leave`` free bytes (tmpfs counts whole 4 KiB pages)."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    fs = os.statvfs(mount)
    assert abs(fs.f_bavail * fs.f_frsize - leave) < 4096


def leftovers(mount: Path) -> list[str]:
    return sorted(str(p) for p in mount.rglob("*") if p.name.endswith(".tmp"))


@pytest.mark.parametrize("where, leave, written", [
    ("cache", 4096, "features/*.safetensors"),  # was SafetensorError
    ("output", 8192, "runs/*/checkpoint.pt"),  # was torch's "enforce fail at inline_container.cc"
    ("output", 0, "runs/*/.lock"),  # was OSError
])
def test_a_full_disk_is_one_message_naming_the_file_system_and_file(trained, small_fs, tmp_path, where, leave,
                                                                      written):
    root, _ = trained
    fill(small_fs, leave)
    out, cache = (small_fs / "runs", tmp_path / "cache") if where == "output" else (tmp_path / "runs", small_fs)
    done = vlprompt_cli(*train_args(root / "images", out, cache), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = error_lines(done)
    prefix = f"error: no space left on {small_fs} (tmpfs) while writing "
    assert line.startswith(prefix), line
    target = Path(line[len(prefix):].split("; ")[0])
    assert target.match(str(small_fs / written))
    if target.name == ".lock":  # the lock file itself stays, released: no half-written holder in it
        assert target.read_bytes() == b""
    else:
        assert not target.exists()
    assert leftovers(small_fs) == []


def test_export_to_a_full_disk_names_the_final_file_and_leaves_nothing(trained, small_fs, tmp_path):
    _, run_dir = trained
    fill(small_fs, 0)
    done = vlprompt_cli("export", "--prompt", str(run_dir / "prompt"), "--out", str(small_fs / "clf"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert error_lines(done) == [f"error: no space left on {small_fs} (tmpfs) while writing "
                                 f"{small_fs / 'clf' / 'classifier.safetensors'}; free some space or write elsewhere"]
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


def test_writers_map_storage_errors_of_a_real_file_system(small_fs):
    from vlprompt.errors import WriteError
    from vlprompt.io import write_bytes

    with pytest.raises(WriteError, match=f"^no space left on {small_fs} \\(tmpfs\\) while writing "
                                         f"{small_fs / 'big.bin'}; ") as full:
        write_bytes(small_fs / "big.bin", b"x" * (3 << 20))
    assert full.value.errno == 28 and list(small_fs.iterdir()) == []
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(WriteError, match=f"^{small_fs} \\(tmpfs\\) is read-only: cannot write {small_fs / 'a.json'}"):
        write_bytes(small_fs / "a.json", b"{}")


# -- 18: every file gets the user's umask -------------------------------------------------------------

def test_every_file_of_a_run_its_cache_and_its_export_gets_umask_022(trained):
    root, _ = trained
    paths = [p for top in ("runs", "cache", "classifier") for p in [root / top, *(root / top).rglob("*")]]
    names = {p.name for p in paths}
    assert {"classifier.safetensors", "checkpoint.pt", "prompt.safetensors", "results.json"} <= names
    assert any(p.parent.name == "features" for p in paths)
    modes = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}
    expected = {str(p.relative_to(root)): oct(0o755 if p.is_dir() else 0o644) for p in paths}
    assert modes == expected
