"""The ``Atlas`` record every command works with: ordered labels, a definition, networks, coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Kind = Literal["spheres", "labels", "maps"]
# Spaces where an atlas's source says only "MNI" or "MNI152", not which template.
MNI_UNKNOWN = "MNI, template unknown"
MNI152_UNKNOWN = "MNI152, version unknown"


@dataclass
class Atlas:
    """A parcellation: region labels in order plus how to find each region in an MNI image.

    ``kind`` says how regions are defined: ``spheres`` (``coords`` + ``radius`` in mm), ``labels``
    (a 3-D integer image whose value ``indices[i]`` marks region ``i``) or ``maps`` (a 4-D image,
    one probabilistic map per region). ``networks`` holds one network name per region where known.
    """

    name: str
    labels: list[str]
    kind: Kind
    space: str = MNI_UNKNOWN
    coords: np.ndarray | None = None
    radius: float | np.ndarray | None = None  # one radius, or one per region (Seitzman: 5 mm cortex, 4 mm deep)
    image: object | None = None  # nibabel image for labels/maps atlases
    indices: list[int] | None = None
    networks: list[str] | None = None
    anatomy: list[str] | None = None
    network_source: str | None = None
    source: str = ""
    licence: str = ""
    version: str = ""
    description: str = ""
    _centroids: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        n = len(self.labels)
        if len(set(self.labels)) != n:
            dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ValueError(f"atlas {self.name}: duplicate region labels {dup[:5]}")
        for attr in ("networks", "anatomy", "indices"):
            value = getattr(self, attr)
            if value is not None and len(value) != n:
                raise ValueError(f"atlas {self.name}: {attr} has {len(value)} entries for {n} regions")
        if self.coords is not None:
            self.coords = np.asarray(self.coords, dtype=float).reshape(n, 3)
        if self.radius is not None and np.ndim(self.radius):
            self.radius = np.asarray(self.radius, dtype=float).reshape(n)
            if np.all(self.radius == self.radius[0]):
                self.radius = float(self.radius[0])

    def radii(self) -> np.ndarray:
        """Sphere radius (mm) per region."""
        return np.broadcast_to(np.asarray(self.radius, dtype=float), (self.n_regions,))

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    @property
    def has_networks(self) -> bool:
        return self.networks is not None

    def region_coords(self) -> np.ndarray:
        """MNI coordinates per region: sphere centres, or centroids computed from the image."""
        if self.coords is not None:
            return self.coords
        if self._centroids is None:
            self._centroids = _image_centroids(self)
        return self._centroids

    def with_networks(self, networks: list[str], source: str) -> "Atlas":
        """A copy carrying ``networks`` (e.g. transferred from another atlas), with their provenance."""
        return replace(self, networks=list(networks), network_source=source)

    def describe(self) -> dict:
        """The atlas as recorded in sidecars (data contracts §1 ``Atlas``)."""
        out = {
            "name": self.name,
            "version": self.version,
            "space": self.space,
            "n_regions": self.n_regions,
            "kind": self.kind,
            "source": self.source,
        }
        if self.radius is not None:
            out["radius_mm"] = self.radius if np.ndim(self.radius) == 0 else sorted(set(self.radius.tolist()))
        if self.networks is not None:
            out["networks_from"] = self.network_source or "atlas"
        return out


def _image_centroids(atlas: Atlas) -> np.ndarray:
    """Centre of mass of each region in world (MNI mm) coordinates."""
    img = atlas.image
    data = np.asanyarray(img.dataobj)
    affine = img.affine
    out = np.full((atlas.n_regions, 3), np.nan)
    if atlas.kind == "labels":
        flat = data.reshape(-1, order="F")
        ijk = np.indices(data.shape, dtype=np.float64).reshape(3, -1, order="F")
        lookup = {v: i for i, v in enumerate(atlas.indices)}
        present = np.isin(flat, atlas.indices)
        vals = flat[present]
        pts = ijk[:, present]
        order = np.array([lookup[v] for v in vals]) if vals.size else np.zeros(0, int)
        counts = np.bincount(order, minlength=atlas.n_regions).astype(float)
        for axis in range(3):
            sums = np.bincount(order, weights=pts[axis], minlength=atlas.n_regions)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, axis] = sums / counts
    else:
        grids = [np.arange(n, dtype=np.float64) for n in data.shape[:3]]
        for r in range(data.shape[3]):
            w = np.clip(np.asarray(data[..., r], dtype=np.float64), 0, None)
            mass = w.sum()
            if mass > 0:  # weighted mean of each index along each axis, via the marginals
                out[r] = [(w.sum(axis=tuple(a for a in range(3) if a != ax)) * grids[ax]).sum() / mass
                          for ax in range(3)]
    world = out @ affine[:3, :3].T + affine[:3, 3]
    return world
