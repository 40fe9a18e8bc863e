"""Reading a checkpoint written by Dassl's ``save_checkpoint`` without running code from the file.

The official CoOp-family repositories save, per registered model, a ``torch.save`` dict with
``state_dict``, ``epoch``, ``optimizer``, ``scheduler`` and ``val_result`` under
``OUTPUT/<model name>/model.pth.tar-<epoch>`` (and ``model-best.pth.tar``). Everything is read with
``torch.load(weights_only=True)``. One thing stops a plain weights-only read of a real file: Dassl's
warm-up scheduler keeps the scheduler it hands over to as an attribute, so its state dict pickles a
``torch.optim.lr_scheduler`` object, and through it the optimizer object. Those classes (and only
those, plus the ``defaultdict`` the optimizer's state is) are read as inert records: the file's
values land in a plain object's ``__dict__`` and no constructor, ``__setstate__`` or other code of
theirs runs. Any other class the file names is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vlprompt.errors import ArtifactError

#: what Dassl names the files: every epoch's, and a copy of the best one
EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")
BEST_FILE = "model-best.pth.tar"


class PickledRecord:
    """Stands in for an optimizer or scheduler object pickled in a checkpoint: it only holds the values."""


def _plain_dict(*_args) -> dict:
    """Stands in for ``collections.defaultdict`` (an optimizer's ``state``): a plain dict of the same items."""
    return {}


def _stand_in(name: str):
    """The inert replacement of global ``name``, or None where the file may not name it."""
    if name.startswith(("torch.optim.", "dassl.optim.")):
        return PickledRecord
    return {"collections.defaultdict": _plain_dict, "builtins.dict": dict}.get(name)


@dataclass
class DasslCheckpoint:
    """A checkpoint's model state and where it came from."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int | None
    sha256: str


def find_checkpoint_file(path: str | Path, model_name: str, others: dict[str, str] | None = None) -> Path:
    """The checkpoint file ``path`` stands for: the file itself, or in a Dassl output folder (the run's
    or its ``model_name`` subfolder) ``model-best.pth.tar`` where present, else the last epoch's file.
    ``others`` names, per model folder, the methods that save there (for the message when the folder
    holds another model's checkpoints)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise ArtifactError(f"checkpoint {path} not found; give the file (e.g. OUTPUT/{model_name}/"
                            f"model.pth.tar-10) or the Dassl output folder that holds {model_name}/")
    folder = path / model_name if (path / model_name).is_dir() else path
    found = _checkpoint_files(folder)
    if found:
        return found[0]
    present = [d.name for d in sorted(path.iterdir()) if d.is_dir() and _checkpoint_files(d)]
    where = "; it holds " + ", ".join(f"{d}/ (saved by {(others or {}).get(d, 'another model')})" for d in present) \
        if present else ""
    raise ArtifactError(f"{path} is a folder without a {model_name} checkpoint: neither {folder / BEST_FILE} nor any "
                        f"{folder}/model.pth.tar-N exists{where}; give the checkpoint file itself or the method "
                        "that saved it")


def _checkpoint_files(folder: Path) -> list[Path]:
    """Dassl's checkpoints in ``folder``, the one its load_model reads by default first: the best, then the
    epochs from the last."""
    epochs = sorted(((int(m.group(1)), f) for f in folder.iterdir() if (m := EPOCH_FILE.fullmatch(f.name))),
                    reverse=True)
    best = [folder / BEST_FILE] if (folder / BEST_FILE).is_file() else []
    return best + [f for _, f in epochs]


def read_dassl_checkpoint(path: str | Path, what: str) -> DasslCheckpoint:
    """Load a Dassl checkpoint file safely and check its outer layout; ``what`` names the expected
    checkpoint in messages (e.g. "a CoOp checkpoint")."""
    path = Path(path)
    try:
        content = _load(path)
    except ArtifactError:
        raise
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # e.g. "invalid load key": not a pickle at all
            raise _unreadable(path, what, exc) from None
        raise ArtifactError(f"{path} pickles Python objects that a weights-only read does not create (they could "
                            f"run code): {str(exc).splitlines()[0]}; a Dassl checkpoint holds tensors, numbers and "
                            "the optimizer's and scheduler's state only") from None
    except Exception as exc:  # torch, zipfile and pickle raise many types for a damaged file
        raise _unreadable(path, what, exc) from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise ArtifactError(f"{path} is {_describe(content)}, not a Dassl checkpoint: {what} is a dict with "
                            "'state_dict', 'epoch', 'optimizer' and 'scheduler' (as Dassl's save_checkpoint writes "
                            "it under OUTPUT/<model name>/model.pth.tar-N)")
    state = content["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ArtifactError(f"{path} has a 'state_dict' that is not a mapping of names to tensors; {what} holds "
                            "the prompt learner's tensors there")
    epoch = content.get("epoch")
    return DasslCheckpoint(path=path, state_dict=dict(state), epoch=epoch if isinstance(epoch, int) else None,
                           sha256=_sha256(path))


def _sha256(path: Path) -> str:
    """The file's SHA-256, read in blocks (a whole-model checkpoint is hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unreadable(path: Path, what: str, exc: Exception) -> ArtifactError:
    detail = str(exc).splitlines()[0] if str(exc) else "no detail"
    return ArtifactError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {detail}): the file is "
                         f"truncated or damaged, or not a torch.save file; {what} is a file Dassl's save_checkpoint "
                         "wrote; copy or download it again")


def _load(path: Path):
    """``torch.load(weights_only=True)`` with the inert stand-ins for the globals a Dassl file may name."""
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except ValueError:  # not the zip format (torch < 1.6 or not a torch file): a plain weights-only read decides
        named = []
    refused = sorted(n for n in named if _stand_in(n) is None)
    if refused:
        raise ArtifactError(f"{path} pickles Python objects of {', '.join(refused)}, which a weights-only read "
                            "does not create (they could run code); a Dassl checkpoint holds tensors, numbers and "
                            "the optimizer's and scheduler's state only")
    with torch.serialization.safe_globals([(_stand_in(n), n) for n in named]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _describe(content) -> str:
    """What a loaded file holds, for messages about a file that is not a Dassl checkpoint."""
    if isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        keys = list(content)
        if any(k.startswith(("visual.", "transformer.")) for k in keys) and "token_embedding.weight" in keys:
            return f"a whole CLIP model's state dict ({len(keys)} tensors)"
        return f"a bare state dict of {len(keys)} tensors ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
    if isinstance(content, dict):
        return f"a dict with keys {sorted(map(str, content))[:6]}"
    return f"a {type(content).__name__}"
