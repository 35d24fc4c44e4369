"""Package layout only (metadata lives in pyproject.toml).

The top-level ``models/`` folder (model cards and small shipped checkpoints) installs as
``brainfm_cli._model_cards``, so cards are found the same way from a wheel or a checkout.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["brainfm_cli", "brainfm_cli.*"]) + ["brainfm_cli._model_cards"],
    package_dir={"brainfm_cli._model_cards": "models"},
)
