"""Parcellation speed: brainfm vs nilearn's maskers on the same 91×109×91×300 float32 run, same numbers.

Run with ``python bench/bench_parcellate.py [--rounds N]`` (or ``make bench``). It writes the test run once to
``bench/.cache/`` and, for a label atlas (AAL) and the Seitzman-300 spheres, times in each round: the floor
(merely loading the file with nibabel), nilearn's masker, brainfm's first run (including the atlas-to-grid
assignment) and a further run on the same grid (assignment reused). It prints the speed-ups over nilearn and the
ratio to the floor (medians of per-round ratios), and the max abs difference of the standardised outputs (must be
≤ 1e-5) against nilearn run on the same voxels in float64 (nilearn's own float32 path rounds region means to
float32, which is also shown); for the spheres that float64 check covers every 10th sphere (nilearn's cost is
per sphere, and the check does not need all 300).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, median, ratio, rounds  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
AFFINE_2MM = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
SHAPE = (91, 109, 91)


def make_run(n_vols: int) -> Path:
    """A realistic-size run: baseline 1000 inside an MNI brain ellipsoid, ~1 % spatially smooth fluctuations
    (independent AR(1) series on 8 mm blocks) and 0.5 % voxel noise, stored as float32 .nii.gz."""
    path = CACHE / f"sub-bench_task-rest_vols-{n_vols}_v2_bold.nii.gz"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = ijk @ AFFINE_2MM[:3, :3].T + AFFINE_2MM[:3, 3]
    inside = (((xyz - [0, -18, 8]) / [72, 104, 80]) ** 2).sum(1) <= 1
    block = np.ravel_multi_index(tuple((ijk // 4).T), tuple(-(-np.array(SHAPE) // 4)))
    n_blocks = block.max() + 1
    ar = np.zeros((n_vols, n_blocks))
    shocks = rng.standard_normal((n_vols, n_blocks))
    for t in range(1, n_vols):
        ar[t] = 0.8 * ar[t - 1] + 0.6 * shocks[t]
    data = np.zeros((ijk.shape[0], n_vols), dtype=np.float32)
    idx = np.nonzero(inside)[0]
    data[idx] = 1000 + 10 * ar[:, block[idx]].T + 5 * rng.standard_normal((len(idx), n_vols))
    img = nib.Nifti1Image(data.reshape(SHAPE + (n_vols,)), AFFINE_2MM)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((2.0, 2.0, 2.0, 2.0))
    tmp = CACHE / ("partial_" + path.name)
    nib.save(img, tmp)
    tmp.rename(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    from brainfm_cli.atlases import load_atlas
    from brainfm_cli.data import extract as ex
    from brainfm_cli.io.bids import BoldRun
    from brainfm_cli.data.clean import CleanParams
    from brainfm_cli.data.extract import extract_run

    print(machine_line())
    path = make_run(args.volumes)
    print(f"run: {path.name} {SHAPE + (args.volumes,)} float32, {path.stat().st_size / 1e6:.0f} MB on disk; "
          f"{args.rounds} round(s), each: floor, nilearn, brainfm first run, brainfm next run")
    run = BoldRun(path=path, entities={"sub": "bench", "task": "rest"}, metadata={"RepetitionTime": 2.0})
    params = CleanParams(standardize=True)

    def nilearn_spheres(atlas, source=str(path), regions=None):
        regions = np.arange(atlas.n_regions) if regions is None else regions
        out = np.full((args.volumes, atlas.n_regions), np.nan)
        radii = atlas.radii()
        for r in np.unique(radii[regions]):
            idx = regions[radii[regions] == r]
            masker = NiftiSpheresMasker([tuple(c) for c in atlas.coords[idx]], radius=float(r), allow_overlap=True,
                                        standardize="zscore_sample")
            out[:, idx] = masker.fit_transform(source)
        return out

    def nilearn_labels(atlas, source=str(path), regions=None):
        masker = NiftiLabelsMasker(atlas.image, strategy="mean", standardize="zscore_sample")
        out = masker.fit_transform(source)
        ids = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
        full = np.full((out.shape[0], atlas.n_regions), np.nan)
        full[:, [atlas.indices.index(i) for i in ids]] = out
        return full

    ok = True
    for name, reference, subset in (("aal", nilearn_labels, None), ("seitzman300", nilearn_spheres, 10)):
        atlas = load_atlas(name)

        def ours_cold():
            ex._CACHE.clear()
            return extract_run(run, atlas, params).data.to_numpy()

        contenders = {"floor": lambda: nib.load(path).get_fdata(dtype=np.float32), "nilearn": lambda: reference(atlas),
                      "first": ours_cold, "next": lambda: extract_run(run, atlas, params).data.to_numpy()}
        outs = {}
        t = rounds({k: (lambda k=k, f=f: outs.__setitem__(k, f())) for k, f in contenders.items()}, args.rounds,
                   warmup=False, keep_order=True)
        ours, ref = outs["next"], outs["nilearn"]
        regions = None if subset is None else np.arange(0, atlas.n_regions, subset)
        exact_img = nib.Nifti1Image(nib.load(path).get_fdata(dtype=np.float64), AFFINE_2MM)
        exact = reference(atlas, exact_img, regions)  # nilearn on float64 voxels: its float32 path rounds means
        both = ~np.isnan(ours).all(0) & ~np.isnan(ref).all(0)
        checked = both & ~np.isnan(exact).all(0)
        diff = float(np.nanmax(np.abs(ours[:, checked] - exact[:, checked])))
        diff32 = float(np.nanmax(np.abs(ours[:, both] - ref[:, both])))
        ok &= diff <= 1e-5
        print(f"{name:12s} nilearn {median(t['nilearn']):6.2f} s | brainfm first run "
              f"×{ratio(t['nilearn'], t['first']):.1f} faster, next runs ×{ratio(t['nilearn'], t['next']):.1f} | "
              f"brainfm next run / floor {ratio(t['next'], t['floor']):.2f}, "
              f"nilearn / floor {ratio(t['nilearn'], t['floor']):.1f} | "
              f"max|diff| {diff:.1e} vs nilearn float64 ({checked.sum()} regions), {diff32:.1e} vs its float32 run "
              f"({both.sum()} regions)")
    print("outputs identical within 1e-5:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
