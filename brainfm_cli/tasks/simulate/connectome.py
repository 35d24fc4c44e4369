"""Structural coupling between atlas regions: distance decay plus shared network membership."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONNECTOME_RULE = ("W_ij = exp(-d_ij / length_mm), keeping each region's strongest `density` fraction of edges "
                   "(either end), plus network_weight for pairs in the same network; C = D^-1/2 W D^-1/2 scaled "
                   "to largest eigenvalue 1; individuals: C_ij * exp(individual_sd * e_ij - individual_sd^2 / 2), "
                   "e symmetric standard normal, rescaled to largest eigenvalue 1; then the phenotype effects")
NO_NETWORK = frozenset({"", "unassigned", "none", "unknown", "n/a", "nan", "background"})


def has_network(name: str) -> bool:
    return str(name).strip().lower() not in NO_NETWORK


@dataclass(frozen=True)
class ConnectomeRecipe:
    """How the reference coupling is built, and how much individuals vary around it.

    W_ij = exp(−d_ij / length_mm), keeping each region's strongest ``density`` fraction of edges,
    plus ``network_weight`` for every pair in the same network; then C = D^−½ W D^−½ (largest
    eigenvalue 1). Individuals multiply each edge by a symmetric log-normal factor (sd
    ``individual_sd``) and are renormalised to the same largest eigenvalue.
    """

    length_mm: float = 20.0
    density: float = 0.1
    network_weight: float = 3.0
    individual_sd: float = 0.15
    degree_power: float = 1.0


def distances(coords: np.ndarray) -> np.ndarray:
    """Euclidean distances (mm) between region coordinates."""
    coords = np.asarray(coords, dtype=float)
    return np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))


def same_network(networks: list[str]) -> np.ndarray:
    """Pairs of regions in the same (real) network; unassigned regions pair with nobody."""
    net = np.asarray([str(n) for n in networks])
    real = np.array([has_network(n) for n in net])
    same = (net[:, None] == net[None, :]) & real[:, None] & real[None, :]
    np.fill_diagonal(same, False)
    return same


def normalise(w: np.ndarray) -> np.ndarray:
    """Scale a symmetric non-negative matrix so its largest eigenvalue is 1."""
    return w / np.linalg.eigvalsh(w)[-1]


def reference_coupling(coords: np.ndarray, networks: list[str], recipe: ConnectomeRecipe) -> np.ndarray:
    """The reference participant's coupling matrix (symmetric, zero diagonal, largest eigenvalue 1)."""
    d = distances(coords)
    w = np.exp(-d / recipe.length_mm)
    np.fill_diagonal(w, 0.0)
    cut = np.quantile(w, 1 - recipe.density, axis=1)
    keep = (w >= cut[:, None]) | (w >= cut[None, :])
    w = w * keep + recipe.network_weight * same_network(networks)
    np.fill_diagonal(w, 0.0)
    deg = w.sum(axis=1)
    deg[deg == 0] = 1.0
    w = w / (deg[:, None] * deg[None, :]) ** (recipe.degree_power / 2)
    return normalise(w)


def individual_coupling(reference: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    """The reference with symmetric log-normal edge noise, renormalised (same sparsity, same largest eigenvalue)."""
    n = reference.shape[0]
    e = rng.standard_normal((n, n))
    e = np.triu(e, 1)
    e = e + e.T
    return normalise(reference * np.exp(sd * e - sd * sd / 2))
