"""The ``pretrain`` task: a run's configuration from a YAML file and the command line, then the engine's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from brainfm_cli.engine.train import Trainer, TrainConfig
from brainfm_cli.errors import BrainfmError


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


def pretrain(config: TrainConfig, resume: bool = False,
             on_step: Callable[[int, int, dict], None] | None = None) -> Path:
    """Train ``config`` to completion (or continue it from its last checkpoint); returns ``model.safetensors``."""
    return Trainer(config, on_step=on_step).run(resume=resume)
