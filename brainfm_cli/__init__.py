"""brainfm: brain-dynamics foundation models for neuroimaging analysts' own fMRI.

The package is a stack of subpackages; each imports only from its own level or the levels below it, never
above (``tests/test_structure.py`` reads the next line and enforces it, function-level imports included):

Stack: errors, _resources → io → atlases → data → device, layers, masking → models → engine → tasks → cli → __main__

- ``errors``, ``_resources``: the one exception type (message, path, fix), where shipped files live.
- ``io``: file formats — NIfTI, BIDS discovery and filters, region time-series files, TSV/JSON sidecars,
  atomic writes, provenance (``GeneratedBy``, SHA-256).
- ``atlases``: built-in, fetched and user atlases (labels, networks, coordinates).
- ``data``: what is computed from runs before any model — region and voxel extraction, denoising,
  model-ready preprocessing, corpora, connectivity and functional gradients.
- ``device``, ``layers``, ``masking``: the torch core — device and precision, the shared transformer blocks,
  the masking collators (index tensors only).
- ``models``: model families, cards and sizes, checkpoints, and the ``Objective`` contract of pretraining.
- ``engine``: the training loop — schedules, EMA teachers, distributed runs, checkpoints and resume.
- ``tasks``: one module or package per command (parcellate, voxels, embed, gradients, probe, simulate,
  pretrain) and the shared HTML report.
- ``cli``: the ``typer`` commands — parse, call one task, map errors to exit codes (``python -m brainfm_cli``
  is ``__main__``).
"""

__version__ = "0.1.0"
