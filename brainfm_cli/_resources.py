"""Where brainfm's shipped files live, from an installed wheel or from a source checkout."""

from __future__ import annotations

import os
from pathlib import Path


def model_cards_dir() -> Path:
    """The folder of model cards: ``brainfm_cli._model_cards`` in a wheel, ``models/`` in a checkout."""
    try:
        from importlib.resources import files

        path = Path(str(files("brainfm_cli._model_cards")))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "models"


def data_dir() -> Path:
    """brainfm's one cache for fetched atlases and weights: ``$BRAINFM_DATA`` or ``~/.cache/brainfm``."""
    root = os.environ.get("BRAINFM_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "brainfm"
