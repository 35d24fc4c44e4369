"""The ``pretrain`` task: a run's configuration from a YAML file and the command line, then the engine's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from brainfm_cli.engine.train import Trainer, TrainConfig
from brainfm_cli.errors import BrainfmError


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from ``900``, ``90s``, ``15m``, ``1h30m`` or ``2h`` (what a scheduler's wall-time looks like)."""
    import re

    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    if not value or parts is None or not any(parts.groups()):
        raise BrainfmError(f"--time-limit {text!r} is not a duration", fix="write e.g. 900, 90s, 15m or 1h30m")
    h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
    seconds = 3600 * h + 60 * m + sec
    if seconds <= 0:
        raise BrainfmError(f"--time-limit {text!r} is not a positive duration", fix="e.g. --time-limit 15m")
    return seconds


def build_config(config_file: str | Path | None, flags: dict, architecture: dict | None = None,
                 objective: dict | None = None) -> TrainConfig:
    """A ``TrainConfig`` from a YAML file (any field), overridden by the flags that were given (not None) and by
    ``--arch`` / ``--objective`` pairs, which are merged into the file's blocks."""
    import yaml

    values: dict = {}
    if config_file is not None:
        try:
            values = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BrainfmError(f"cannot read the configuration ({exc})", path=config_file,
                               fix="give a YAML mapping of pretrain settings") from None
        if not isinstance(values, dict):
            raise BrainfmError("the configuration is not a YAML mapping", path=config_file,
                               fix="give a YAML mapping of pretrain settings (see config.yaml of a run)")
    values.update({k: v for k, v in flags.items() if v is not None})
    values["architecture"] = {**values.get("architecture", {}), **(architecture or {})}
    values["objective"] = {**values.get("objective", {}), **(objective or {})}
    return TrainConfig.from_dict(values)


def pretrain(config: TrainConfig, resume: bool = False, on_step: Callable[[int, int, dict], None] | None = None,
             on_plan: Callable[[dict], None] | None = None) -> Path:
    """Train ``config`` to completion (or continue it from its last checkpoint); returns ``model.safetensors``.
    ``on_plan`` hears the resolved schedule before the first step, ``on_step`` each step's figures."""
    return Trainer(config, on_step=on_step, on_plan=on_plan).run(resume=resume)
