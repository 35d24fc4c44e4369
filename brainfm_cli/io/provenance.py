"""Provenance recorded in every output: the ``GeneratedBy`` block of sidecars and files' SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from brainfm_cli import __version__


def generated_by(command: str) -> dict:
    """The sidecar block naming brainfm, its version and the command that wrote the file."""
    return {"Name": "brainfm", "Version": __version__, "Command": command}


def sha256sum(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (weights files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def dataset_generated_by(pipeline: str) -> list[dict]:
    """``GeneratedBy`` of a BIDS ``dataset_description.json`` (a list of pipelines, BIDS 1.9)."""
    return [{"Name": "brainfm", "Version": __version__, "Description": f"brainfm {pipeline}"}]
