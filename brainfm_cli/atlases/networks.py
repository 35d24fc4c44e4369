"""Give an atlas without networks the Seitzman-300 network of the nearest Seitzman ROI (by centroid)."""

from __future__ import annotations

import numpy as np

from brainfm_cli.atlases.base import Atlas

TRANSFER_NOTE = ("networks transferred from seitzman300: each region takes the network of the Seitzman-300 "
                 "ROI whose centre is nearest to the region's centroid (Euclidean, MNI mm)")


def transfer_networks(atlas: Atlas, reference: Atlas | None = None) -> Atlas:
    """A copy of ``atlas`` whose regions carry the network of the nearest ``reference`` region."""
    from brainfm_cli.atlases.builtin import seitzman300

    reference = reference or seitzman300()
    src = atlas.region_coords()
    ref = reference.region_coords()
    d2 = ((src[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    nearest = np.nanargmin(np.where(np.isnan(d2), np.inf, d2), axis=1)
    networks = [reference.networks[i] for i in nearest]
    return atlas.with_networks(networks, TRANSFER_NOTE)
