"""Functional gradients of a corpus: group FC → normalised-angle affinity → diffusion-map embedding.

This is the positional code of Brain-JEPA (its ``gradient_mapping_450.csv`` was made with BrainSpace's
``GradientMaps(kernel="normalized_angle", approach="dm")``), computed here for any atlas:

1. group FC: Pearson r per run → Fisher z → mean over a participant's runs → mean over participants → tanh;
2. affinity: keep the top 10 % of each row (BrainSpace's ``sparsity=0.9``), cosine similarity between rows,
   ``1 − arccos(cos)/π``, negatives zeroed;
3. diffusion map (Coifman & Lafon 2006) with anisotropy ``alpha=0.5``: W ← D^-α W D^-α, then the
   random-walk operator P = Q⁻¹W; multi-scale eigenvalue scaling λ/(1−λ) (``diffusion_time=0``);
4. eigenvectors ψ normalised as Coifman & Lafon define them: ψ₀ = 1 and Σᵢ πᵢ ψⱼ(i)² = 1 under the walk's
   stationary distribution π (for near-uniform degrees this is BrainSpace's unit-norm vector divided by ψ₀);
5. sign: each component's largest-magnitude entry is positive (BrainSpace's convention).

BrainSpace runs ARPACK's symmetric solver directly on the non-symmetric P; we solve the symmetric conjugate
Q^-1/2 W Q^-1/2 exactly (same eigenvalues; its eigenvectors map to P's right eigenvectors), so results
agree with BrainSpace up to solver tolerance and are deterministic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from brainfm_cli.data.connectivity import fisher_z_fc
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import read_tsv


@dataclass(frozen=True)
class GradientRecipe:
    n_components: int = 30
    sparsity: float = 0.9
    alpha: float = 0.5
    diffusion_time: float = 0.0
    kernel: str = "normalized_angle"
    fc: str = "pearson r per run, Fisher z, mean over runs within participant then over participants, tanh"


def group_fc(runs: list[np.ndarray], participants: list[str]) -> np.ndarray:
    """Group FC (r) over runs, each participant weighted once; regions missing in a run are skipped there."""
    by_sub: dict[str, list[np.ndarray]] = {}
    for series, sub in zip(runs, participants):
        by_sub.setdefault(sub, []).append(fisher_z_fc(series))
    with warnings.catch_warnings():  # all-NaN slices (a region missing everywhere) are reported below
        warnings.simplefilter("ignore", RuntimeWarning)
        per_sub = [np.nanmean(np.stack(z), axis=0) for z in by_sub.values()]
        z = np.nanmean(np.stack(per_sub), axis=0)
    r = np.tanh(z)
    np.fill_diagonal(r, 1.0)
    return r


def normalized_angle_affinity(fc: np.ndarray, sparsity: float = 0.9) -> np.ndarray:
    """BrainSpace's affinity: row-wise top ``1 − sparsity`` kept, then 1 − angle/π between rows."""
    n = fc.shape[0]
    k = int(n * (1 - sparsity))
    if k <= 0:
        raise BrainfmError(f"sparsity {sparsity} keeps no connection of {n} regions", fix="lower --sparsity")
    kept = np.zeros_like(fc)
    top = np.argpartition(fc, n - k, axis=1)[:, -k:]
    rows = np.arange(n)[:, None]
    kept[rows, top] = fc[rows, top]
    norms = np.linalg.norm(kept, axis=1)
    if (norms == 0).any():
        raise BrainfmError("some regions have no positive connection left after sparsification",
                           fix="use more data, or a lower --sparsity")
    cos = np.clip((kept @ kept.T) / np.outer(norms, norms), -1.0, 1.0)
    aff = 1.0 - np.arccos(cos) / np.pi
    aff[aff < 0] = 0.0
    return aff


def diffusion_map(affinity: np.ndarray, n_components: int = 30, alpha: float = 0.5,
                  diffusion_time: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalue-scaled diffusion-map components (regions × n) and their scaled eigenvalues."""
    from scipy.linalg import eigh

    n = affinity.shape[0]
    if not 0 < n_components < n:
        raise BrainfmError(f"{n_components} components asked of {n} regions", fix=f"use fewer than {n} components")
    w = affinity.astype(np.float64, copy=True)
    if alpha > 0:
        d = w.sum(axis=1) ** -alpha
        w *= d[:, None] * d[None, :]
    q = w.sum(axis=1)
    s = w / np.sqrt(np.outer(q, q))
    vals, vecs = eigh(s, subset_by_index=[n - n_components - 1, n - 1])
    vals, vecs = vals[::-1], vecs[:, ::-1]
    psi = vecs / vecs[:, [0]]  # right eigenvectors of P = Q^-1 W; the first becomes all ones
    lam = vals / vals[0]
    lam, psi = lam[1:], psi[:, 1:]
    lam = lam / (1 - lam) if diffusion_time <= 0 else lam ** diffusion_time
    maps = psi * lam[None, :]
    maps *= np.sign(maps[np.abs(maps).argmax(axis=0), np.arange(maps.shape[1])])
    return maps, lam


def compute_gradients(runs: list[np.ndarray], participants: list[str], recipe: GradientRecipe = GradientRecipe()
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gradients regions × components, eigenvalues, group FC) of a corpus of region time series."""
    fc = group_fc(runs, participants)
    if np.isnan(fc).any():
        bad = np.nonzero(np.isnan(fc).all(axis=0) | np.isnan(np.diag(fc)))[0]
        raise BrainfmError(f"regions {bad[:10].tolist()} have no data in any run of the corpus",
                           fix="parcellate with better coverage, or drop those regions")
    aff = normalized_angle_affinity(fc, recipe.sparsity)
    maps, lam = diffusion_map(aff, recipe.n_components, recipe.alpha, recipe.diffusion_time)
    return maps, lam, fc


def load_gradients(path, n_regions: int | None = None) -> np.ndarray:
    """A gradient matrix from brainfm's TSV (``region`` + components) or the authors' header-less CSV."""
    import pandas as pd

    path = str(path)
    try:
        if path.endswith(".csv"):
            values = pd.read_csv(path, header=None).to_numpy(dtype=float)
        else:
            table = read_tsv(path)
            values = table.drop(columns=[c for c in ("region",) if c in table.columns]).to_numpy(dtype=float)
    except (ValueError, OSError) as exc:
        raise BrainfmError(f"not a gradient table ({exc})", path=path,
                           fix="give brainfm's gradients TSV or a numeric CSV (regions × components)") from None
    if not np.isfinite(values).all():
        raise BrainfmError("the gradient table has missing or non-finite values", path=path,
                           fix="recompute it with 'brainfm gradients'")
    if n_regions is not None and values.shape[0] != n_regions:
        raise BrainfmError(f"the gradient table has {values.shape[0]} rows but the model expects {n_regions} regions",
                           path=path, fix="use gradients computed on the model's atlas")
    return values
