"""Functional connectivity of one run: Pearson correlation between regions, Fisher z-transformed."""

from __future__ import annotations

import numpy as np

R_LIMIT = 1 - 1e-7  # |r| is clipped here before arctanh, so identical regions give a large finite z


def fisher_z_fc(series: np.ndarray) -> np.ndarray:
    """``arctanh(r)`` between the columns of ``series`` (time × regions), zero diagonal; regions that are all-NaN
    or constant give NaN rows and columns."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(series, rowvar=False)
    np.fill_diagonal(r, 0.0)
    return np.arctanh(np.clip(r, -R_LIMIT, R_LIMIT))
