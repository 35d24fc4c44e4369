"""The ``voxels`` task: BOLD runs → voxel time series inside an ROI (the input of voxel models such as SC-MBM),
written like ``parcellate``'s output, with the voxel list that ``pretrain`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from brainfm_cli.data.clean import CleanParams
from brainfm_cli.data.voxels import VOXEL_LIST, RoiSpec, extract_voxel_run
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter, discover_bold
from brainfm_cli.io.files import atomic_group, json_text, read_json, sidecar_path, tsv_text
from brainfm_cli.io.nifti import load_bold
from brainfm_cli.io.timeseries import write_dataset_description, write_timeseries
from brainfm_cli.tasks.parcellate import plan_outputs


def write_voxel_runs(inputs: list[str], out_dir: str | Path, roi: RoiSpec, params: CleanParams,
                     filters: RunFilter | None = None,
                     space: str | None = None, overwrite: bool = False,
                     on_start: Callable[[int], None] | None = None,
                     on_done: Callable[[Path], None] | None = None) -> list[Path]:
    """Voxel series of every selected run into ``out_dir`` (a derivatives folder like ``parcellate``'s), with
    the voxel list ``voxels.tsv`` (+ JSON) that ``pretrain --arch voxels=…`` reads. All runs share one voxel set."""
    runs = discover_bold(inputs, filters, space)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainfmError("the output path exists and is not a folder", path=out_dir, fix="choose a folder for -o")
    targets = plan_outputs(runs, out_dir, roi.name, overwrite)
    if on_start:
        on_start(len(runs))
    sets = {}
    for run in runs:
        img = load_bold(run.path)
        vs = roi.select(img.shape, img.affine)
        sets.setdefault(vs.identity()["sha256"], (vs, run.path))
    if len(sets) > 1:
        (a, pa), (b, pb) = list(sets.values())[:2]
        raise BrainfmError(f"the runs lie on different grids, so the ROI gives different voxel sets ({a.count} "
                           f"voxels in {pa.name}, {b.count} in {pb.name})",
                           fix="resample the runs to one grid, or extract each grid into its own folder")
    voxels = next(iter(sets.values()))[0]
    listing = out_dir / VOXEL_LIST
    if listing.exists() and not overwrite:
        old = read_json(sidecar_path(listing)) if sidecar_path(listing).is_file() else {}
        if old.get("sha256") != voxels.identity()["sha256"]:
            raise BrainfmError("the folder already holds another voxel set", path=listing,
                               fix="choose another -o folder, or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_group([listing, sidecar_path(listing)]) as (tmp, tmp_json):
        tmp.write_text(tsv_text(voxels.to_frame()), encoding="utf-8")
        tmp_json.write_text(json_text({**voxels.identity(), "Source": voxels.source, "roi": roi.describe()}),
                            encoding="utf-8")
    written = []
    for run, target in zip(runs, targets):
        ts = extract_voxel_run(run, roi, params)
        write_timeseries(ts.data, target, ts.sidecar)
        written.append(target)
        if len(written) == 1:
            write_dataset_description(out_dir, pipeline="voxels")
        if on_done:
            on_done(target)
    return written
