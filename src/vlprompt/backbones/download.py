"""The checkpoint file behind an open_clip pretrained tag: from the local cache, else downloaded once the
download host has answered a single short connection attempt.

open_clip asks the Hugging Face hub with five retries per candidate file, which on a machine without a
network costs about 50 s and dozens of warnings before the same failure. One connection attempt with a
short timeout tells an offline machine at once, and the error then says how to use a local file.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives, download_pretrained, has_hf_hub

from vlprompt.errors import BackboneError

#: seconds the one connection attempt (name lookup included) may take before the machine counts as offline
REACH_TIMEOUT_S = 5.0


def checkpoint_of_tag(name: str, tag: str, cfg: dict, cache_dir: str | None, offline_hint: str) -> str:
    """The local path of the weights of ``name`` with open_clip tag ``tag`` (its pretrained ``cfg``)."""
    hub = _hub_source(cfg)
    cached = _cached(cfg, hub, cache_dir)
    if cached:
        return cached
    url = f"{_hf_endpoint()}/{hub[0]}/resolve/main/{hub[1][0]}" if hub else cfg["url"]
    if hub and _hf_offline():
        raise BackboneError(f"the weights of {name} ({tag}) are not in the local cache and HF_HUB_OFFLINE is set; "
                            f"download {url} elsewhere, then {offline_hint}")
    reason = _unreachable(url)
    if reason:
        raise BackboneError(f"cannot download the weights of {name} ({tag}): {urlsplit(url).hostname} cannot be "
                            f"reached ({reason}); this machine looks offline. Download {url} elsewhere, then "
                            f"{offline_hint}")
    try:
        return download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # hub and file errors
        raise BackboneError(f"could not download the weights of {name} ({tag}) from {url}: {exc}; download the "
                            f"file elsewhere, then {offline_hint}") from exc


def _hub_source(cfg: dict) -> tuple[str, list[str]] | None:
    """(repository, candidate file names, preferred first) when open_clip would use the hub, else None."""
    if not (cfg.get("hf_hub") and has_hf_hub()):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    return repo, [*_get_safe_alternatives(filename), filename]


def _cached(cfg: dict, hub: tuple[str, list[str]] | None, cache_dir: str | None) -> str | None:
    if hub:
        from huggingface_hub import try_to_load_from_cache

        for filename in hub[1]:
            path = try_to_load_from_cache(hub[0], filename, cache_dir=cache_dir)
            if isinstance(path, str) and os.path.isfile(path):
                return path
        return None
    target = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
    # open_clip checks a cached file's SHA-256 and returns it without the network when it matches
    return download_pretrained(cfg, cache_dir=cache_dir) if os.path.isfile(target) else None


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host (or the HTTPS proxy that serves it) takes no connection, or None when it does.

    One attempt; it runs in a daemon thread so that a name lookup that hangs is bounded too."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname, proxy_parts.port or 80
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(REACH_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer within {REACH_TIMEOUT_S:g} s"
