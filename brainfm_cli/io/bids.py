"""Finding BOLD runs: single NIfTI files, BIDS raw datasets and fMRIPrep derivatives, with BIDS filters.

Also the repetition time of a run: BIDS sidecars with inheritance first, then the NIfTI header.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import read_json, sidecar_path, split_ext
from brainfm_cli.io.nifti import header_tr, is_nifti, load_image

log = logging.getLogger("brainfm.data")

PREFERRED_SPACE = "MNI152NLin2009cAsym"


def parse_entities(name: str) -> tuple[dict[str, str], str]:
    """BIDS key-value entities and the suffix of a file name (``sub-01_task-rest_bold.nii.gz``)."""
    stem, _ = split_ext(Path(name).name)
    parts = stem.split("_")
    entities: dict[str, str] = {}
    suffix = ""
    for i, part in enumerate(parts):
        key, sep, value = part.partition("-")
        if sep and key and value:
            entities[key] = value
        elif i == len(parts) - 1:
            suffix = part
    return entities, suffix


def missing_input_fix(item: Path) -> str:
    """What to do about an input that does not exist; a bare label (``02``, ``sub-02``) was meant as a filter."""
    name = str(item)
    if "/" not in name and "." not in name and len(name) <= 24 and name.replace("-", "").replace("_", "").isalnum():
        return (f"'{name}' looks like a participant label, not a path: put labels after --participant-label "
                "(several may follow it), and the dataset folder before the options")
    return "check the path"


def _strip(label: str, prefix: str) -> str:
    return label[len(prefix) + 1:] if label.startswith(prefix + "-") else label


def _same_run_label(a: str, b: str) -> bool:
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


@dataclass
class RunFilter:
    """BIDS filters shared by every command (``--participant-label``, ``--session``, ``--task``, ``--run``)."""

    participant_label: list[str] | None = None
    session: list[str] | None = None
    task: list[str] | None = None
    run: list[str] | None = None

    def __post_init__(self):
        self.participant_label = [_strip(p, "sub") for p in self.participant_label] if self.participant_label else None
        self.session = [_strip(s, "ses") for s in self.session] if self.session else None
        self.task = [_strip(t, "task") for t in self.task] if self.task else None
        self.run = [_strip(r, "run") for r in self.run] if self.run else None

    def accepts(self, entities: dict[str, str]) -> bool:
        if self.participant_label and entities.get("sub") not in self.participant_label:
            return False
        if self.session and entities.get("ses") not in self.session:
            return False
        if self.task and entities.get("task") not in self.task:
            return False
        if self.run and not any(_same_run_label(entities.get("run", ""), r) for r in self.run):
            return False
        return True

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class BoldRun:
    """One functional run: its file, BIDS entities, dataset root, confounds file and merged sidecar."""

    path: Path
    entities: dict[str, str]
    root: Path | None = None
    confounds: Path | None = None
    metadata: dict = field(default_factory=dict)
    derivatives: bool = False

    @property
    def label(self) -> str:
        return self.path.name


def _dataset_root(path: Path) -> Path | None:
    """The nearest folder above ``path`` holding a ``dataset_description.json``."""
    for parent in [path.parent, *path.parents]:
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def _fallback_entities(path: Path) -> dict[str, str]:
    """Entities for a non-BIDS file name: participant from the file stem, task unknown."""
    stem, _ = split_ext(path.name)
    entities, _ = parse_entities(path.name)
    if "sub" not in entities:
        entities["sub"] = re.sub(r"[^A-Za-z0-9]", "", stem) or "unknown"
    entities.setdefault("task", "unknown")
    return entities


def _confounds_for(path: Path) -> Path | None:
    """fMRIPrep's ``*_desc-confounds_timeseries.tsv`` (or older ``_regressors.tsv``) beside a run."""
    entities, _ = parse_entities(path.name)
    keep = [f"{k}-{entities[k]}" for k in ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")
            if k in entities]
    base = "_".join(keep)
    for name in (f"{base}_desc-confounds_timeseries.tsv", f"{base}_desc-confounds_regressors.tsv"):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _sidecar_chain(path: Path, root: Path | None) -> list[Path]:
    """Applicable ``*_bold.json`` files from the dataset root down to the run (BIDS inheritance)."""
    entities, suffix = parse_entities(path.name)
    folders = [path.parent]
    if root is not None:
        p = path.parent
        while p != root and root in p.parents:
            p = p.parent
            folders.append(p)
    chain = []
    for folder in reversed(folders):
        for cand in sorted(folder.glob(f"*_{suffix}.json")) if suffix else []:
            if cand == sidecar_path(path):
                continue
            cand_entities, cand_suffix = parse_entities(cand.name)
            if cand_suffix == suffix and all(entities.get(k) == v for k, v in cand_entities.items()):
                chain.append(cand)
    own = sidecar_path(path)
    if own.is_file():
        chain.append(own)
    return chain


def read_metadata(path: Path, root: Path | None) -> dict:
    """The run's metadata merged from its sidecar chain (deeper files override)."""
    merged: dict = {}
    for p in _sidecar_chain(path, root):
        merged.update(read_json(p))
    return merged


def _find_in_folder(folder: Path) -> tuple[list[Path], bool]:
    """BOLD NIfTI files under a BIDS raw or fMRIPrep derivatives folder; second value: derivatives?"""
    preproc = sorted(p for p in folder.glob("sub-*/**/func/*_desc-preproc_bold.nii*") if is_nifti(p))
    if preproc:
        return preproc, True
    raw = sorted(p for p in folder.glob("sub-*/**/func/*_bold.nii*") if is_nifti(p))
    raw += sorted(p for p in folder.glob("sub-*/func/*_bold.nii*") if is_nifti(p) and p not in raw)
    return sorted(set(raw)), False


def discover_bold(inputs: list[str | Path], filters: RunFilter | None = None, space: str | None = None) -> list[BoldRun]:
    """Every BOLD run named by ``inputs`` (files or dataset folders) that passes ``filters``.

    In fMRIPrep derivatives, runs come in several output spaces: ``space`` picks one; by default
    MNI152NLin2009cAsym is used where present, and several other spaces are an error naming them.
    """
    filters = filters or RunFilter()
    if not inputs:
        raise BrainfmError("no input given", fix="name NIfTI runs, a BIDS dataset or an fMRIPrep derivatives folder")
    runs: list[BoldRun] = []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise BrainfmError("input not found", path=item, fix=missing_input_fix(item))
        if item.is_dir():
            files, derivatives = _find_in_folder(item)
            if not files:
                has_subjects = any(item.glob("sub-*"))
                why = ("it has sub-* folders but no func/*_bold.nii[.gz] files" if has_subjects
                       else "it is empty or not a BIDS dataset (no sub-*/func/*_bold.nii.gz)")
                raise BrainfmError(f"no BOLD runs found: {why}", path=item,
                                   fix="point at a BIDS dataset, an fMRIPrep derivatives folder, or NIfTI files")
            for f in files:
                entities, _ = parse_entities(f.name)
                root = _dataset_root(f) or item
                runs.append(BoldRun(path=f, entities=entities, root=root, derivatives=derivatives,
                                    confounds=_confounds_for(f) if derivatives else None))
        else:
            if not is_nifti(item):
                load_image(item, what="BOLD run")  # raises a clear error for non-NIfTI files
            entities = _fallback_entities(item)
            parsed, _ = parse_entities(item.name)
            runs.append(BoldRun(path=item, entities=entities, root=_dataset_root(item),
                                confounds=_confounds_for(item), derivatives="desc" in parsed))
    selected = [r for r in runs if filters.accepts(r.entities)]
    if not selected:
        subs = sorted({r.entities.get("sub", "?") for r in runs})
        raise BrainfmError(f"no run matches the filters {filters.describe()} (participants present: "
                           f"{', '.join(subs[:20])}{' ...' if len(subs) > 20 else ''})",
                           path=inputs[0] if len(inputs) == 1 else None, fix="check --participant-label/--session/--task/--run")
    selected = _choose_space(selected, space)
    for r in selected:
        r.metadata = read_metadata(r.path, r.root)
    return selected


def _choose_space(runs: list[BoldRun], space: str | None) -> list[BoldRun]:
    spaces = sorted({r.entities.get("space") for r in runs if r.entities.get("space")})
    if space is not None:
        chosen = [r for r in runs if r.entities.get("space") == space]
        if not chosen:
            raise BrainfmError(f"no run in space '{space}' (spaces present: {spaces or 'none'})",
                               fix="pick one of the spaces present with --space")
        return chosen
    if len(spaces) <= 1:
        return runs
    if PREFERRED_SPACE in spaces:
        log.info("several output spaces present %s: using %s (choose with --space)", spaces, PREFERRED_SPACE)
        return [r for r in runs if r.entities.get("space") in (PREFERRED_SPACE, None)]
    raise BrainfmError(f"runs come in several spaces {spaces}", fix="choose one with --space (atlases are in MNI space)")


def resolve_tr(run: BoldRun, img=None, override: float | None = None) -> float | None:
    """Repetition time (s): ``--tr`` > BIDS sidecar (with inheritance) > NIfTI header.

    A header that disagrees with the sidecar is a warning (the sidecar wins); a ``--tr`` that
    contradicts the sidecar is an error, since the sidecar is the dataset's own record.
    """
    sidecar = run.metadata.get("RepetitionTime")
    if sidecar is not None:
        try:
            sidecar = float(sidecar)
        except (TypeError, ValueError):
            raise BrainfmError(f"RepetitionTime {sidecar!r} in the sidecar is not a number", path=run.path,
                               fix="correct RepetitionTime in the run's JSON sidecar") from None
        if sidecar <= 0:
            raise BrainfmError(f"the sidecar gives RepetitionTime {sidecar}", path=run.path,
                               fix="correct RepetitionTime (seconds, > 0) in the run's JSON sidecar")
    if override is not None:
        if override <= 0:
            raise BrainfmError(f"--tr must be a positive number of seconds, not {override}", fix="give e.g. --tr 2.0")
        if sidecar is not None and abs(override - sidecar) > 1e-3:
            raise BrainfmError(f"--tr {override} contradicts RepetitionTime {sidecar} in the BIDS sidecar",
                               path=run.path, fix="drop --tr, or correct the sidecar if it is wrong")
        return override
    head = header_tr(img) if img is not None else None
    if sidecar is not None:
        if head is not None and abs(head - sidecar) > 1e-3:
            log.warning("%s: header TR %.4g s disagrees with the sidecar's RepetitionTime %.4g s; using the sidecar",
                        run.path.name, head, sidecar)
        return sidecar
    return head
