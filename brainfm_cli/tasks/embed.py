"""The ``embed`` task: runs (region TSVs or NIfTI) → model-ready windows → batched encoder → embeddings TSV.

Streaming: one run is read at a time, windows are encoded a batch at a time and rows are written as they are
produced, so memory stays flat however many runs are embedded (data contracts §3 for the output).
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from brainfm_cli.atlases import load_atlas
from brainfm_cli.data.clean import CleanParams
from brainfm_cli.data.corpus import check_regions, expected_regions
from brainfm_cli.data.extract import extract_run
from brainfm_cli.data.preprocess import Preprocessor, Window
from brainfm_cli.data.voxels import RoiSpec, extract_voxel_run
from brainfm_cli.device import autocast, choose_dtype, describe, resolve_dtype
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter, discover_bold, parse_entities
from brainfm_cli.io.files import TsvStream, atomic_group, json_text, sidecar_path
from brainfm_cli.io.nifti import is_nifti, load_bold
from brainfm_cli.io.provenance import generated_by
from brainfm_cli.io.timeseries import RegionTimeseries, discover_timeseries, read_timeseries
from brainfm_cli.models import architecture_class, get_card, load

log = logging.getLogger("brainfm.embed")

ID_COLUMNS = ("participant_id", "session_id", "task", "run", "window", "source")


@dataclass
class RunSource:
    """One input run, loaded lazily (a region TSV is read, a NIfTI run is parcellated, when its turn comes)."""

    path: Path
    entities: dict[str, str]
    load: Callable[[], RegionTimeseries]


@dataclass
class EmbedOptions:
    """Everything ``embed`` needs besides its inputs and output: the model and its weights, how windows are cut,
    pooled and aggregated, compute, the BIDS filters, and how NIfTI inputs are parcellated (atlas, confounds, or
    the voxels inside ``roi``, a ``data.voxels.RoiSpec``). Values are checked here, once."""

    model: str
    weights: str | None = None
    pooling: str | None = None
    window: int | None = None
    stride: int | None = None
    aggregate: str = "none"  # "none": a row per window; "mean": a row per run
    batch_size: int = 8
    missing: str = "error"
    device: str = "auto"
    dtype: str = "auto"
    tr: float | None = None
    seed: int = 0
    average_window: float | None = None  # seconds; for models that average runs over windows (SC-MBM)
    filters: RunFilter = field(default_factory=RunFilter)
    space: str | None = None
    atlas: str | None = None
    atlas_labels: str | None = None
    confounds: str = "none"
    space_args: dict = field(default_factory=dict)  # the family's input-space arguments (coords=, gradients=)
    roi: RoiSpec | None = None
    overwrite: bool = False

    def __post_init__(self):
        if self.aggregate not in ("none", "mean"):
            raise BrainfmError(f"unknown --aggregate '{self.aggregate}'", fix="use none or mean")
        if self.batch_size < 1:
            raise BrainfmError("--batch-size must be at least 1", fix="e.g. --batch-size 8")


def read_path_list(stream) -> list[str]:
    """Paths given one per line on standard input (``embed -``)."""
    paths = [line.strip() for line in stream if line.strip()]
    if not paths:
        raise BrainfmError("no paths on standard input", fix="pipe one path per line, e.g. 'ls *.tsv | brainfm embed -'")
    return paths


def discover_sources(inputs: list[str], filters: RunFilter, space: str | None, atlas_factory, clean,
                     tr: float | None, roi=None) -> list[RunSource]:
    """Region time-series TSVs (files or derivatives folders) and BOLD runs (parcellated on the fly, or their
    voxels inside ``roi`` — a ``data.voxels.RoiSpec`` — taken as the regions)."""
    if inputs == ["-"]:
        inputs = read_path_list(sys.stdin)
    tables, images = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            (tables if any(p.rglob("*_timeseries.tsv")) else images).append(item)
        elif is_nifti(item):
            images.append(item)
        else:
            tables.append(item)
    sources: list[RunSource] = []
    if tables:
        for f in discover_timeseries(tables, filters):
            entities = parse_entities(f.name)[0]
            sources.append(RunSource(f, entities, lambda f=f: read_timeseries(f, tr=tr)))
    if images:
        for run in discover_bold(images, filters, space):
            loader = (lambda run=run: extract_voxel_run(run, roi, clean)) if roi is not None else \
                (lambda run=run: extract_run(run, atlas_factory(), clean))
            sources.append(RunSource(run.path, dict(run.entities), loader))
    elif roi is not None:
        raise BrainfmError("--roi-mask/--roi-atlas select voxels of NIfTI runs, and no NIfTI run was given",
                           fix="give BOLD runs, or drop the option (voxel TSVs from 'brainfm voxels' hold the voxels)")
    return sources


def _id_columns(sources: list[RunSource], aggregate: str) -> list[str]:
    have = {k for s in sources for k in s.entities}
    cols = ["participant_id"]
    cols += [c for c, e in (("session_id", "ses"), ("task", "task"), ("run", "run")) if e in have]
    if aggregate == "none":
        cols.append("window")
    return cols + ["source"]


def _ids(source: RunSource, window: int | None) -> dict:
    e = source.entities
    return {"participant_id": f"sub-{e.get('sub', 'unknown')}", "session_id": f"ses-{e['ses']}" if "ses" in e else None,
            "task": e.get("task"), "run": e.get("run"), "window": window, "source": str(source.path)}


def iter_windows(sources: list[RunSource], prep: Preprocessor, card, expected, opts: EmbedOptions,
                 on_run: Callable[[], None] | None = None) -> Iterator[tuple[RunSource, Window, list[int]]]:
    """Every window of every run, in order; runs are read one at a time."""
    for source in sources:
        ts = source.load()
        data = check_regions(ts, card, expected, source.path)
        x, missing = prep.prepare(data.to_numpy(), ts.tr if ts.tr is not None else opts.tr, source.path,
                                  list(data.columns))
        if missing:
            masked = opts.missing == "mask" and architecture_class(card.architecture["name"]).region_tokens
            how = "kept out of the model's attention" if masked else \
                "filled with zeros (the mean after normalisation)"
            log.warning("%s: %d region(s) without data were %s", source.path.name, len(missing), how)
        for w in prep.windows(x, opts.window, opts.stride, source.path):
            yield source, w, missing
        if on_run:
            on_run()


def _batches(it, size):
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_rows(model, sources, prep, expected, opts: EmbedOptions, on_run=None) -> Iterator[pd.DataFrame]:
    """Yield embedding rows (a DataFrame per batch, or per run with ``aggregate='mean'``)."""
    import torch

    pooling = opts.pooling or model.default_pooling
    if pooling not in model.poolings:
        raise BrainfmError(f"{model.card.name} has no pooling '{pooling}'", fix=f"use one of {', '.join(model.poolings)}")
    device = next(model.parameters()).device
    dtype = resolve_dtype(opts.dtype, device, model.card.architecture.get("name"))
    id_cols = _id_columns(sources, opts.aggregate)
    pending: dict[int, list] = {}  # run index → pooled vectors, for aggregate=mean
    order = {id(s): i for i, s in enumerate(sources)}

    def frame(ids: list[dict], vectors: np.ndarray, token_rows: bool) -> pd.DataFrame:
        head = pd.DataFrame(ids)[[c for c in id_cols]]
        width = vectors.shape[-1]
        body = pd.DataFrame(vectors.reshape(-1, width), columns=[f"emb_{i:04d}" for i in range(width)])
        if token_rows:
            n = vectors.shape[1]
            head = head.loc[head.index.repeat(n)].reset_index(drop=True)
            head.insert(len(head.columns) - 1, "token", np.tile(np.arange(n), len(ids)))
        return pd.concat([head, body], axis=1)

    torch.manual_seed(opts.seed)
    with torch.inference_mode():
        for batch in _batches(iter_windows(sources, prep, model.card, expected, opts, on_run), opts.batch_size):
            x = torch.from_numpy(np.stack([w.x for _, w, _ in batch])).to(device)
            absent = None
            if opts.missing == "mask" and any(gone for _, _, gone in batch):
                absent = torch.zeros(len(batch), x.shape[1], dtype=torch.bool)
                for i, (_, _, gone) in enumerate(batch):
                    absent[i, gone] = True
            mask = model.padding_mask([w.valid for _, w, _ in batch], x.shape[-1], absent)
            with autocast(device, dtype):
                out = model.encode(x, mask=None if mask is None else mask.to(device))
                pooled = model.pool(out, pooling)
            vectors = pooled.float().cpu().numpy()
            if opts.aggregate == "mean":
                for (source, _, _), v in zip(batch, vectors):
                    pending.setdefault(order[id(source)], []).append(v)
                done = [i for i in pending if i < order[id(batch[-1][0])]]
                for i in sorted(done):
                    yield frame([_ids(sources[i], None)], np.mean(pending.pop(i), axis=0, keepdims=True),
                                pooling == "tokens")
                continue
            ids = [_ids(source, w.index) for source, w, _ in batch]
            yield frame(ids, vectors, pooling == "tokens")
    for i in sorted(pending):
        yield frame([_ids(sources[i], None)], np.mean(pending.pop(i), axis=0, keepdims=True), pooling == "tokens")


def _averaged(card, window: float | None):
    """The card's input space, with the averaging window replaced by ``--average-window`` when given."""
    if window is None:
        return card.input
    if card.input.resampling != "average":
        raise BrainfmError(f"{card.name} resamples runs to TR {card.input.tr} s; --average-window is for models "
                           "that average runs over windows (SC-MBM)", fix="drop --average-window")
    if window <= 0:
        raise BrainfmError(f"--average-window must be a positive number of seconds, not {window}", fix="e.g. 8")
    return replace(card.input, tr=float(window))


def embed(inputs: list[str], output: str, opts: EmbedOptions, on_run: Callable[[], None] | None = None,
          on_start: Callable[[int], None] | None = None) -> dict:
    """Embed every selected run with ``opts.model`` into ``output`` (a TSV path, or ``-`` for stdout); returns the
    sidecar. With ``opts.roi`` the voxels inside it are embedded: the model is built for the voxel set the ROI
    gives on the first run's grid (a trained voxel model checks that it is its own)."""
    model_name, weights, atlas, roi = opts.model, opts.weights, opts.atlas, opts.roi
    out_path = None if output == "-" else Path(output)
    if out_path is not None:
        if out_path.is_dir():
            raise BrainfmError("the output is a folder", path=out_path, fix="give a file name such as embeddings.tsv")
        if out_path.exists() and not opts.overwrite:
            raise BrainfmError("the output file already exists", path=out_path, fix="pass --overwrite or choose another -o")
    card = get_card(model_name)
    atlas_name = atlas or card.input.atlas
    expected = expected_regions(card) if atlas is None else None

    @functools.cache  # one atlas for every run (a user atlas is read once)
    def atlas_factory():
        if atlas_name is None:
            raise BrainfmError(f"{card.name} works in {card.input.atlas_description}, which brainfm cannot fetch",
                               fix="parcellate the run yourself, or give that atlas: --atlas FILE.nii.gz --atlas-labels "
                               "FILE.tsv")
        a = load_atlas(atlas_name, opts.atlas_labels if atlas else card.input.atlas_labels)
        if card.input.regions and set(card.input.regions) <= set(a.labels):
            return a  # the model's regions are a subset of the atlas: extracted whole, then selected
        if a.n_regions != card.input.n_regions:
            raise BrainfmError(f"atlas {a.name} has {a.n_regions} regions; {card.name} needs {card.input.n_regions}",
                               fix=f"use the model's atlas ({card.input.atlas or card.input.atlas_description})")
        return a

    clean = CleanParams(confounds=opts.confounds, tr=opts.tr)
    sources = discover_sources(inputs, opts.filters, opts.space, atlas_factory, clean, opts.tr, roi)
    if roi is None and any(is_nifti(s.path) for s in sources):
        atlas_factory()  # a missing or mismatched atlas is reported before any weights are loaded
    space_args = dict(opts.space_args)
    if roi is not None:
        img = load_bold(next(s.path for s in sources if is_nifti(s.path)))
        space_args["voxels"] = roi.select(img.shape, img.affine)
    model = load(model_name, weights=weights, device=opts.device, **space_args)
    card = model.card
    prep = Preprocessor.from_space(_averaged(card, opts.average_window), missing=opts.missing)
    device = next(model.parameters()).device
    if on_start:
        on_start(len(sources))
    sidecar = {
        "Model": card.name, "ModelFamily": card.family, "Architecture": card.architecture.get("name"),
        "ModelCardVersion": card.version, "Weights": model.weights_info.get("path"),
        "WeightsSHA256": model.weights_info.get("sha256"), "WeightsFormat": model.weights_info.get("format"),
        "Pooling": opts.pooling or model.default_pooling, "Aggregate": opts.aggregate,
        "WindowStride": opts.stride or opts.window or card.input.seq_len,
        "InputSpace": {"atlas": card.input.atlas or card.input.atlas_description, "n_regions": card.input.n_regions,
                       **({"voxels": card.input.voxels} if card.input.voxels else {})},
        "Preprocessing": prep.describe(), "Runs": len(sources),
        "Compute": describe(device, *choose_dtype(opts.dtype, device, card.architecture.get("name"))),
        "GeneratedBy": generated_by("embed"),
    }
    rows = embed_rows(model, sources, prep, expected, opts, on_run)
    if out_path is None:
        stream = TsvStream(sys.stdout)
        for df in rows:
            stream.write(df)
        return sidecar
    with atomic_group([out_path, sidecar_path(out_path)]) as (tmp, tmp_json):
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            stream = TsvStream(fh)
            for df in rows:
                stream.write(df)
        if stream.rows == 0:
            raise BrainfmError("no embeddings were produced", fix="check the inputs")
        sidecar["Rows"] = stream.rows
        tmp_json.write_text(json_text(sidecar), encoding="utf-8")
    return sidecar
