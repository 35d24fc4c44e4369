"""Checkpoint files: reading ours and the authors' (safely), writing ours, and ``hf://`` weights.

Nothing here unpickles arbitrary objects: torch files load with ``weights_only=True`` and a file that needs
more is refused (except known plain configuration classes, read into dicts through inert stand-ins).
brainfm's own format is a safetensors file whose metadata carries the model card, so a checkpoint says which
architecture and input space it belongs to.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import atomic_path
from brainfm_cli.io.provenance import sha256sum

FORMAT = "brainfm"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt", ".bin", ".ckpt")


@dataclass
class Checkpoint:
    """A state dict (or the authors' container) read from disk, with provenance."""

    state: dict[str, Any]
    path: Path
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata
    config: dict | None = None  # a Hugging Face ``config.json`` beside the weights

    @property
    def card(self) -> dict | None:
        """The model card embedded by brainfm, or None for a foreign checkpoint."""
        if self.metadata.get("format") == FORMAT and "card" in self.metadata:
            return json.loads(self.metadata["card"])
        if isinstance(self.state.get("brainfm_card"), str):
            return json.loads(self.state["brainfm_card"])
        return None


def resolve_hf(uri: str) -> Path:
    """``hf://ORG/REPO[/SUBFOLDER]`` → a local folder, through huggingface_hub (cache first; offline is clear)."""
    parts = uri[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise BrainfmError(f"'{uri}' is not a Hugging Face address", fix="write hf://ORG/REPO or hf://ORG/REPO/SUBFOLDER")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BrainfmError(f"loading {uri} needs the huggingface_hub package", fix="pip install 'brainfm[hub]', or "
                           "download the files yourself and pass --weights PATH") from None
    patterns = [f"{sub}/*" if sub else "*"]
    offline = os.environ.get("BRAINFM_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        folder = Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=offline))
    except Exception as exc:  # huggingface_hub raises many types: offline, not found, gated, network
        why = type(exc).__name__
        raise BrainfmError(f"could not get {uri} from the Hugging Face Hub ({why}: {str(exc).splitlines()[0][:200]})",
                           fix="check the network (or unset BRAINFM_OFFLINE/HF_HUB_OFFLINE); offline, download "
                           f"https://huggingface.co/{repo} elsewhere and pass --weights with the local path") from None
    target = folder / sub if sub else folder
    if not target.exists():
        raise BrainfmError(f"{uri}: the repository has no '{sub}'", fix="check the subfolder name")
    return target


def _weights_in_folder(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(found) == 1:
        return found[0]
    what = "several weight files: " + ", ".join(p.name for p in found) if found else "no weight file"
    raise BrainfmError(f"the folder holds {what}", path=folder,
                       fix="pass --weights with the weight file itself (model.safetensors, *.pth, …)")


def read_checkpoint(source: str | Path) -> Checkpoint:
    """Read weights from a file, a folder (Hugging Face layout) or ``hf://``; refuse unsafe or broken files."""
    if str(source).startswith("hf://"):
        source = resolve_hf(str(source))
    path = Path(source)
    if not path.exists():
        raise BrainfmError("weights not found", path=path, fix="check the --weights path")
    config = None
    if path.is_dir():
        folder = path
        path = _weights_in_folder(path)
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text())
    elif (path.parent / "config.json").is_file() and path.name in WEIGHT_FILES:
        config = json.loads((path.parent / "config.json").read_text())
    digest = sha256sum(path)
    if path.name.endswith(".safetensors"):
        state, meta = _read_safetensors(path)
    else:
        state, meta = _read_torch(path), {}
    if not isinstance(state, dict):
        raise BrainfmError(f"the file holds a {type(state).__name__}, not a state dict", path=path,
                           fix="save weights with torch.save(model.state_dict(), …) or give the original checkpoint")
    return Checkpoint(state=state, path=path, sha256=digest, metadata=meta, config=config)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BrainfmError(f"not a readable safetensors file ({exc}); it is truncated or corrupt", path=path,
                           fix="download or copy the file again") from None
    return state, dict(meta)


# Classes some authors pickle into their checkpoints that hold only plain attributes: they are read through
# inert stand-ins (still weights_only) and become dicts. mind-vis (SC-MBM) saves its ``config.Config_*`` object.
PLAIN_CONFIG_CLASSES = re.compile(r"^config\.Config_\w+$")


class _PlainConfig:
    """Receives the attributes of a pickled configuration object; nothing of the original class runs."""


def _plain_config_globals(path: Path) -> list | None:
    """Stand-ins for the file's unsafe globals when every one is a known plain configuration class, else None."""
    import torch

    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:  # torch < 2.5
        return None
    try:
        names = finder(str(path))
    except Exception:
        return None
    if not names or not all(PLAIN_CONFIG_CLASSES.match(n) for n in names):
        return None
    return [(type(n.rpartition(".")[2], (_PlainConfig,), {}), n) for n in names]


def _as_plain(obj: Any) -> Any:
    if isinstance(obj, _PlainConfig):
        return {k: _as_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _as_plain(v) for k, v in obj.items()}
    return obj


def _read_torch(path: Path) -> Any:
    import torch

    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # a torch zip, or a (legacy) pickle
        raise BrainfmError("not a checkpoint: neither a PyTorch file (zip or pickle) nor safetensors", path=path,
                           fix="give the weights file itself (.safetensors, .pt, .pth, .bin); a text or HTML page "
                           "saved under that name is not one (download it again)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        stand_ins = _plain_config_globals(path)
        if stand_ins is not None:
            try:
                with torch.serialization.safe_globals(stand_ins):
                    return _as_plain(torch.load(path, map_location="cpu", weights_only=True))
            except pickle.UnpicklingError:
                pass
        first = str(exc).strip().splitlines()[0][:240]
        raise BrainfmError(f"refused to load: the file holds Python objects other than tensors, which could run "
                           f"code when unpickled ({first})", path=path,
                           fix="get the weights as safetensors, or re-save only the state dict from a trusted "
                           "environment: torch.save(model.state_dict(), PATH)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as exc:  # the unpickler's errors on bytes that are not a checkpoint
        raise BrainfmError(f"not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]}); it is truncated "
                           "or corrupt", path=path, fix="download or copy the file again") from None


def save_checkpoint(state_dict: dict, card: dict, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write brainfm's own checkpoint: safetensors with the model card in its metadata (atomic)."""
    from safetensors.torch import save

    from brainfm_cli import __version__

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "brainfm_version": __version__, "card": json.dumps(card, sort_keys=True)}
    meta.update(extra or {})
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(_canonical_safetensors(save(tensors, metadata=meta)))
    return Path(path)


def _canonical_safetensors(blob: bytes) -> bytes:
    """The same file with its JSON header written in sorted key order (safetensors writes its metadata map in a
    random order per process), so identical weights give identical bytes and SHA-256."""
    import struct

    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def strip_prefix(state: dict, prefix: str) -> dict:
    """Keys starting with ``prefix`` with it removed (e.g. DDP's ``module.``); others kept as they are."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def check_keys(expected: dict, given: dict, path: Path | str | None, what: str,
               ignore_unexpected: tuple[str, ...] = ()) -> None:
    """Missing, unexpected or mis-shaped keys are an error that lists them (weights for another model)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(k for k in set(given) - set(expected) if not k.startswith(ignore_unexpected))
    shapes = sorted(f"{k} {tuple(given[k].shape)} ≠ {tuple(expected[k].shape)}" for k in set(expected) & set(given)
                    if tuple(given[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or shapes):
        return

    def show(items):
        return ", ".join(items[:6]) + (f" … ({len(items)} in all)" if len(items) > 6 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {show(shapes)}")
    raise BrainfmError(f"these weights do not fit {what}: " + "; ".join(parts), path=path,
                       fix="pass weights made for this model (see 'brainfm models show NAME'), or the matching --model")
