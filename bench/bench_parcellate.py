"""Parcellation speed: brainfm vs nilearn's maskers on the same 91×109×91×300 float32 run, same numbers.

Run with ``python bench/bench_parcellate.py`` (or ``make bench``). It writes the test run once to
``bench/.cache/`` and prints, for a label atlas (AAL) and the Seitzman-300 spheres:
the floor (time to merely load the file), nilearn's masker, brainfm's first run (including the
atlas-to-grid assignment) and a further run on the same grid (assignment reused), the speed-up ratios,
and the max abs difference of the standardised outputs (must be ≤ 1e-5) against nilearn run on the
same voxels in float64 (nilearn's own float32 path rounds region means to float32, which is also shown).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

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


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    from brainfm_cli.atlases import load_atlas
    from brainfm_cli.data import extract as ex
    from brainfm_cli.io.bids import BoldRun
    from brainfm_cli.data.clean import CleanParams
    from brainfm_cli.data.extract import extract_run

    path = make_run(args.volumes)
    print(f"run: {path.name} {SHAPE + (args.volumes,)} float32, {path.stat().st_size / 1e6:.0f} MB on disk")
    floor, _ = timed(lambda: nib.load(path).get_fdata(dtype=np.float32), args.repeats)
    print(f"floor (nibabel load + read as float32): {floor:.2f} s")
    run = BoldRun(path=path, entities={"sub": "bench", "task": "rest"}, metadata={"RepetitionTime": 2.0})
    params = CleanParams(standardize=True)

    exact_img = nib.Nifti1Image(nib.load(path).get_fdata(dtype=np.float64), AFFINE_2MM)

    def nilearn_spheres(atlas, source=str(path)):
        out = np.zeros((args.volumes, atlas.n_regions))
        for r in np.unique(atlas.radii()):
            idx = np.nonzero(atlas.radii() == r)[0]
            masker = NiftiSpheresMasker([tuple(c) for c in atlas.coords[idx]], radius=float(r), allow_overlap=True,
                                        standardize="zscore_sample")
            out[:, idx] = masker.fit_transform(source)
        return out

    def nilearn_labels(atlas, source=str(path)):
        masker = NiftiLabelsMasker(atlas.image, strategy="mean", standardize="zscore_sample")
        out = masker.fit_transform(source)
        ids = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
        full = np.full((out.shape[0], atlas.n_regions), np.nan)
        full[:, [atlas.indices.index(i) for i in ids]] = out
        return full

    rows = []
    for name, reference in (("aal", nilearn_labels), ("seitzman300", nilearn_spheres)):
        atlas = load_atlas(name)
        t_ref, ref = timed(lambda: reference(atlas), args.repeats)

        def ours_cold():
            ex._CACHE.clear()
            return extract_run(run, atlas, params).data.to_numpy()

        t_cold, ours = timed(ours_cold, args.repeats)
        t_warm, ours = timed(lambda: extract_run(run, atlas, params).data.to_numpy(), args.repeats)
        exact = reference(atlas, exact_img)  # nilearn on float64 voxels: its float32 path rounds region means
        both = ~np.isnan(ours).all(0) & ~np.isnan(ref).all(0)
        diff = float(np.nanmax(np.abs(ours[:, both] - exact[:, both])))
        diff32 = float(np.nanmax(np.abs(ours[:, both] - ref[:, both])))
        rows.append((name, t_ref, t_cold, t_warm, diff))
        print(f"{name:12s} nilearn {t_ref:6.2f} s | brainfm first run {t_cold:6.2f} s ({t_ref / t_cold:4.1f}x) | "
              f"next runs {t_warm:6.2f} s ({t_ref / t_warm:4.1f}x) | floor {floor:.2f} s | "
              f"max|diff| {diff:.1e} vs nilearn float64, {diff32:.1e} vs its float32 run, {both.sum()} regions")
    ok = all(d <= 1e-5 for *_, d in rows)
    print("outputs identical within 1e-5:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
