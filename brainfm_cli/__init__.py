"""brainfm: brain-dynamics foundation models for neuroimaging analysts' own fMRI."""

__version__ = "0.1.0"
