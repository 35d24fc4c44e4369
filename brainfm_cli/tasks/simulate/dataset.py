"""``brainfm simulate``: a BIDS dataset of simulated BOLD with its ground truth under ``derivatives/simulation/``.

Every random draw comes from a generator seeded by (seed, purpose, participant, run), so a run's
data depend only on the seed and its own identity, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.io.provenance import dataset_generated_by, generated_by
from brainfm_cli.atlases.base import Atlas
from brainfm_cli.io.files import write_json, write_tsv
from brainfm_cli.io.timeseries import NAME_ENTITIES, timeseries_path, write_dataset_description, write_timeseries
from brainfm_cli.errors import BrainfmError
from brainfm_cli.tasks.simulate.connectome import (
    CONNECTOME_RULE,
    ConnectomeRecipe,
    distances,
    has_network,
    individual_coupling,
    reference_coupling,
)
from brainfm_cli.tasks.simulate.dynamics import (
    MODELS,
    Hemodynamics,
    Network,
    NeuralModel,
    State,
    integrate,
    run_noise,
    single_threaded_blas,
)
from brainfm_cli.tasks.simulate.phenotypes import (
    PhenotypeEffects,
    apply_effects,
    diagnosis_network,
    draw_participants,
    participants_json,
)
from brainfm_cli.tasks.simulate.stimulation import StimulationProtocol, stimulation_response

log = logging.getLogger("brainfm.simulate")

SPACES = ("regions", "mni")
TRUTH = Path("derivatives") / "simulation"
BATCH = 8  # participants integrated together (one batched matrix product per step)
_PURPOSE = {"phenotypes": 1, "participant": 2, "run": 3, "measurement": 4, "image": 5, "reference": 6, "stim": 7}


def default_model(name: str) -> NeuralModel:
    """The neural model with constants tuned for realistic BOLD (std ≈ 0.6–0.8 %, within > between FC)."""
    if name == "linear":
        return NeuralModel(name="linear", tau=1.0, sigma=1.0, drive_gain=0.1, criticality=0.94)
    if name == "hopf":
        return NeuralModel(name="hopf", sigma=0.02, drive_gain=3.0, hopf_a=-0.02, hopf_g=0.7)
    raise BrainfmError(f"unknown model '{name}'", fix=f"use one of {', '.join(MODELS)}")


def stimulation_protocol(model: NeuralModel, burn_in: float) -> StimulationProtocol:
    """The stimulation amplitude gives a response of a few tenths of a percent in the stimulated network."""
    if model.name == "linear":
        return StimulationProtocol(amplitude=0.05, repeats=2, burn_in=burn_in)
    return StimulationProtocol(amplitude=0.005, repeats=4, burn_in=burn_in)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; everything not here is a documented constant recorded in ``simulation.json``."""

    participants: int = 10
    sessions: int = 1
    runs: int = 1
    duration: float = 600.0
    tr: float = 2.0
    space: str = "regions"
    voxel_size: float = 3.0
    seed: int = 0
    model: str = "linear"
    task: str = "rest"
    dt: float = 0.02
    burn_in: float = 100.0
    noise: float = 0.15  # measurement noise sd, relative to the run's median region BOLD sd
    noise_fwhm: float = 6.0  # mm, spatial smoothness of the image noise (mni)

    def validate(self) -> None:
        checks = [
            (self.participants >= 1, "--participants must be at least 1", "e.g. --participants 20"),
            (self.sessions >= 1, "--sessions must be at least 1", "e.g. --sessions 2"),
            (self.runs >= 1, "--runs must be at least 1", "e.g. --runs 2"),
            (self.tr > 0, f"--tr must be positive, not {self.tr}", "give seconds, e.g. --tr 2"),
            (self.duration >= 10 * self.tr, f"--duration {self.duration:g} s gives fewer than 10 volumes at "
             f"TR {self.tr:g} s", "give a longer --duration (seconds)"),
            (self.space in SPACES, f"unknown --space '{self.space}'", "use regions or mni"),
            (self.voxel_size >= 1, f"--voxel-size {self.voxel_size:g} mm is too fine", "use 2, 3 or coarser"),
            (0 < self.dt <= min(0.1, self.tr), f"--dt {self.dt:g} s is outside (0, 0.1]", "e.g. --dt 0.02"),
            (self.burn_in >= 0, "--burn-in cannot be negative", "e.g. --burn-in 100"),
            (self.noise >= 0, "--noise cannot be negative", "e.g. --noise 0.2"),
            (self.task.isalnum(), f"task label '{self.task}' must be alphanumeric", "e.g. --task rest"),
            (0 <= self.seed < 2 ** 63, "--seed must be a non-negative integer", "e.g. --seed 0"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise BrainfmError(message, fix=fix)
        default_model(self.model)

    @property
    def step(self) -> float:
        """The integration step actually used: ``dt`` shortened so a whole number of steps makes one TR."""
        return self.tr / int(np.ceil(self.tr / self.dt - 1e-9))

    @property
    def n_volumes(self) -> int:
        return int(round(self.duration / self.tr))


@dataclass
class SimulationResult:
    out_dir: Path
    n_runs: int = 0
    files: list[Path] = field(default_factory=list)
    seconds_dynamics: float = 0.0
    seconds_writing: float = 0.0
    seconds_ground_truth: float = 0.0


def _rng(seed: int, purpose: str, *ids: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _PURPOSE[purpose], *map(int, ids)])


def check_atlas(atlas: Atlas) -> None:
    """Simulation needs a network for each region (for coupling and the diagnosis effect) and coordinates."""
    if atlas.networks is None:
        raise BrainfmError(f"atlas '{atlas.name}' has no networks, and the simulated coupling and phenotype effects "
                           "are built on network membership",
                           fix="add --transfer-networks (nearest Seitzman-300 network), or use seitzman300 or "
                           "dosenbach160")
    if not any(has_network(n) for n in atlas.networks):
        raise BrainfmError(f"no region of atlas '{atlas.name}' belongs to a named network",
                           fix="give networks in the labels TSV, or use --transfer-networks")
    coords = atlas.region_coords()
    if not np.all(np.isfinite(coords)):
        bad = [lab for lab, c in zip(atlas.labels, coords) if not np.all(np.isfinite(c))]
        raise BrainfmError(f"{len(bad)} region(s) of atlas '{atlas.name}' have no coordinates (e.g. {bad[0]})",
                           fix="use an atlas whose regions are all present in its image")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BrainfmError("the output path exists and is not a folder", path=out, fix="choose a folder for -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BrainfmError("the output folder is not empty", path=out,
                           fix="choose a new folder, or pass --overwrite to write over it")


def _entities(cfg: SimulationConfig, pid: str, ses: int, run: int) -> dict[str, str]:
    ent = {"sub": pid.removeprefix("sub-"), "task": cfg.task}
    if cfg.sessions > 1:
        ent["ses"] = str(ses + 1)
    if cfg.runs > 1:
        ent["run"] = str(run + 1)
    return ent


def _stem(ent: dict[str, str]) -> str:
    return "_".join(f"{k}-{ent[k]}" for k in NAME_ENTITIES if ent.get(k))


def _func_dir(root: Path, ent: dict[str, str]) -> Path:
    folder = root / f"sub-{ent['sub']}"
    return (folder / f"ses-{ent['ses']}" if ent.get("ses") else folder) / "func"


def simulate_dataset(out_dir: str | Path, atlas: Atlas, cfg: SimulationConfig, overwrite: bool = False,
                     on_run: Callable[[dict], None] | None = None) -> SimulationResult:
    """Simulate every participant's runs and write the dataset and its ground truth; returns what was written."""
    import os
    import shutil

    out = Path(out_dir)
    _check_output(out, overwrite)
    # built in a hidden sibling folder and renamed into place at the end: an error or Ctrl-C leaves nothing
    build = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        with single_threaded_blas():
            try:
                result = _simulate(build, atlas, cfg, True, on_run)
            except FloatingPointError as exc:
                raise BrainfmError(f"{exc} at --dt {cfg.dt:g} s", fix="use a smaller --dt, e.g. 0.01") from None
        if out.exists():
            shutil.rmtree(out)
        os.replace(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    result.out_dir = out
    result.files = [out / f.relative_to(build) if f.is_relative_to(build) else f for f in result.files]
    return result


def _simulate(out: Path, atlas: Atlas, cfg: SimulationConfig, overwrite: bool,
              on_run: Callable[[dict], None] | None) -> SimulationResult:
    cfg.validate()
    check_atlas(atlas)
    _check_output(out, overwrite)
    model = default_model(cfg.model)
    hemo = Hemodynamics()
    recipe = ConnectomeRecipe()
    effects = PhenotypeEffects()
    dt, every = cfg.step, int(round(cfg.tr / cfg.step))
    n_regions = atlas.n_regions
    coords = atlas.region_coords()
    networks = [str(n) for n in atlas.networks]
    dist = distances(coords)
    target = diagnosis_network(networks)
    in_target = np.array([n == target for n in networks])
    reference = reference_coupling(coords, networks, recipe)
    table = draw_participants(cfg.participants, _rng(cfg.seed, "phenotypes"), effects)
    result = SimulationResult(out_dir=out)

    painter = None
    if cfg.space == "mni":
        from brainfm_cli.tasks.simulate.images import make_painter

        painter = make_painter(atlas, cfg.voxel_size, cfg.noise_fwhm)
        missing = [lab for lab, ok in zip(atlas.labels, painter.covered()) if not ok]
        if missing:
            log.warning("%d region(s) own no voxel on the %g mm grid and are absent from the images: %s",
                        len(missing), cfg.voxel_size, ", ".join(missing[:8]))

    out.mkdir(parents=True, exist_ok=True)
    truth = out / TRUTH
    rows = table.to_dict("records")
    n_per = cfg.sessions * cfg.runs
    for start in range(0, len(rows), BATCH):
        batch = list(range(start, min(start + BATCH, len(rows))))
        couplings, gains, omegas = [], [], []
        for p in batch:
            rng = _rng(cfg.seed, "participant", p)
            c = individual_coupling(reference, rng, recipe.individual_sd)
            c, g = apply_effects(c, model.reference_gain, dist, in_target, rows[p], effects)
            omegas.append(2 * np.pi * rng.uniform(*model.freq_hz, n_regions))
            _check_stable(model, c, g, rows[p]["participant_id"])
            couplings.append(c)
            gains.append(g)
            _write_coupling(truth, rows[p], c, g, atlas, model, result)
        net = Network(np.stack(couplings), np.asarray(gains), np.stack(omegas))
        rngs = [[_rng(cfg.seed, "run", p, k) for k in range(n_per)] for p in batch]
        burn = int(round(cfg.burn_in / dt))
        t0 = time.perf_counter()
        bold = integrate(model, net, State.rest(len(batch), n_regions, model.n_vars, n_per),
                         run_noise(rngs, n_regions, model.n_vars), dt=dt, hemo=hemo,
                         n_steps=burn + cfg.n_volumes * every, record_every=every, record_from=burn + every - 1)
        t1 = time.perf_counter()
        result.seconds_dynamics += t1 - t0
        for i, p in enumerate(batch):
            for k in range(n_per):
                ent = _entities(cfg, rows[p]["participant_id"], k // cfg.runs, k % cfg.runs)
                _write_run(out, truth, ent, bold[i, k], cfg, atlas, painter, p, k, result)
                result.n_runs += 1
                if on_run:
                    on_run(ent)
        result.seconds_writing += time.perf_counter() - t1

    t0 = time.perf_counter()
    stim = _write_ground_truth(truth, atlas, cfg, model, hemo, reference, dist, in_target, effects, result)
    result.seconds_ground_truth = time.perf_counter() - t0
    _write_dataset_files(out, table, cfg, atlas, effects, target)
    _write_simulation_json(truth, cfg, atlas, model, hemo, recipe, effects, target, stim, painter)
    return result


def _check_stable(model: NeuralModel, c: np.ndarray, g: float, pid: str) -> None:
    if model.name == "linear":
        top = g * np.linalg.eigvalsh(c)[-1]
        if top >= 0.99:
            raise BrainfmError(f"{pid}: the linear system would be unstable (G·λmax = {top:.3f})",
                               fix="this is a bug in the simulation constants; please report it")


def _labelled(matrix: np.ndarray, atlas: Atlas, columns: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, columns=columns or atlas.labels)
    frame.insert(0, "region", atlas.labels)
    return frame


def _write_coupling(truth: Path, row: dict, c: np.ndarray, g: float, atlas: Atlas, model: NeuralModel,
                    result: SimulationResult) -> None:
    pid = row["participant_id"]
    path = truth / pid / f"{pid}_coupling.tsv"
    write_tsv(_labelled(c, atlas), path)
    write_json({
        "Description": "structural coupling matrix C of this participant (rows receive from columns; symmetric), "
                       "after the planted phenotype effects; the dynamics use G * C",
        "GlobalGain": g, "Model": model.name,
        "Phenotypes": {k: v for k, v in row.items() if k != "participant_id"},
        "Units": "dimensionless", "Regions": atlas.n_regions,
    }, path.with_suffix(".json"))
    result.files.append(path)


def _run_sidecar(cfg: SimulationConfig, atlas: Atlas, n_vols: int, noise_sd: float) -> dict:
    """The region time-series sidecar, with parcellate's keys (data contracts §1), marked as simulated."""
    side = {
        "RepetitionTime": cfg.tr,
        "SamplingFrequency": 1.0 / cfg.tr,
        "Atlas": atlas.describe(),
        "Sources": [],
        "ConfoundsStrategy": "none",
        "Detrend": False,
        "HighPass": None,
        "LowPass": None,
        "Standardize": False,
        "SmoothingFWHM": None,
        "NumberOfVolumesDiscarded": 0,
        "CensoredVolumes": [],
        "NumberOfVolumes": n_vols,
        "RegionsBelowCoverage": [],
        "Networks": dict(zip(atlas.labels, atlas.networks)),
        "NetworksSource": atlas.network_source or "atlas",
        "Simulated": True,
        "Units": "image intensity with resting baseline 100 (so changes read as percent signal change)",
        "MeasurementNoiseSD": noise_sd,
        "GroundTruth": str(TRUTH),
        "GeneratedBy": generated_by("simulate"),
    }
    return side


def _write_run(out: Path, truth: Path, ent: dict, bold: np.ndarray, cfg: SimulationConfig, atlas: Atlas,
               painter, p: int, k: int, result: SimulationResult) -> None:
    """One run: the noiseless BOLD under the ground truth, and the observed data (regions TSV or NIfTI)."""
    noise_sd = cfg.noise * float(np.median(bold.std(axis=0)))
    clean = truth / _func_dir(Path(), ent) / f"{_stem(ent)}_atlas-{_atlas_tag(atlas)}_desc-noiseless_bold.tsv"
    write_timeseries(pd.DataFrame(bold, columns=atlas.labels), clean, {
        "Description": "noiseless simulated BOLD of each region (Balloon-Windkessel output, before measurement "
                       "noise), percent signal change", "RepetitionTime": cfg.tr, "Units": "percent signal change",
        "Atlas": atlas.describe()})
    if painter is None:
        rng = _rng(cfg.seed, "measurement", p, k)
        data = 100.0 + bold + noise_sd * rng.standard_normal(bold.shape)
        path = timeseries_path(out, ent, atlas.name)
        write_timeseries(pd.DataFrame(data, columns=atlas.labels), path, _run_sidecar(cfg, atlas, len(bold), noise_sd))
    else:
        from brainfm_cli.tasks.simulate.images import baseline_field, write_painted_run

        path = _func_dir(out, ent) / f"{_stem(ent)}_bold.nii.gz"
        field_ = baseline_field(painter, _rng(cfg.seed, "image", p))
        write_painted_run(path, bold, painter, _rng(cfg.seed, "image", p, k), tr=cfg.tr, noise_sd=noise_sd,
                          field=field_)
        write_json({
            "RepetitionTime": cfg.tr, "TaskName": cfg.task, "SkullStripped": True,
            "SpatialReference": "MNI152 (brainfm simulate grid)", "VoxelSizeMM": cfg.voxel_size,
            "Simulated": True, "NoiseSD": noise_sd, "NoiseFWHMmm": cfg.noise_fwhm,
            "Description": "simulated BOLD: each atlas region's series painted into its voxels (resting "
                           "intensity 100 times a smooth field) plus spatially smooth Gaussian noise",
            "Atlas": atlas.describe(), "GroundTruth": str(TRUTH),
            "GeneratedBy": generated_by("simulate"),
        }, path.with_name(path.name.replace(".nii.gz", ".json")))
    result.files.append(path)


def _atlas_tag(atlas: Atlas) -> str:
    return "".join(ch for ch in atlas.name if ch.isalnum())


def _write_ground_truth(truth: Path, atlas: Atlas, cfg: SimulationConfig, model: NeuralModel, hemo: Hemodynamics,
                        reference: np.ndarray, dist: np.ndarray, in_target: np.ndarray, effects: PhenotypeEffects,
                        result: SimulationResult) -> dict:
    """The reference participant's coupling and its stimulation responses (regions × networks, and over time)."""
    ref_row = {"age": effects.reference_age, "sex": "F", "diagnosis": 0}
    c, g = apply_effects(reference, model.reference_gain, dist, in_target, ref_row, effects)
    omega = 2 * np.pi * _rng(cfg.seed, "reference").uniform(*model.freq_hz, atlas.n_regions)
    write_tsv(_labelled(c, atlas), truth / "reference_coupling.tsv")
    write_json({"Description": "coupling matrix C of the reference participant (no individual variation; "
                "phenotypes as in phenotype_effects.json 'reference_participant'); the stimulation ground "
                "truth is computed on it", "GlobalGain": g, "Model": model.name, "Units": "dimensionless"},
               truth / "reference_coupling.json")
    names = list(dict.fromkeys(n for n in atlas.networks if has_network(n)))
    members = [np.array([n == name for n in atlas.networks]) for name in names]
    protocol = stimulation_protocol(model, cfg.burn_in)
    rngs = [_rng(cfg.seed, "stim", r) for r in range(protocol.repeats)]
    response, course, times = stimulation_response(model, Network(c[None], np.array([g]), omega[None]), members,
                                                   protocol, rngs, dt=cfg.step, tr=cfg.tr, hemo=hemo)
    write_tsv(_labelled(response, atlas, names), truth / "stimulation_response.tsv")
    description = {
        "Description": "true response of every region (rows) to stimulating each network (columns): mean BOLD "
                       "change over the window after onset, in the reference participant",
        "Units": "percent signal change (the region series' units: their resting baseline is 100)",
        "Protocol": protocol.describe(model, cfg.step),
        "Networks": {n: int(m.sum()) for n, m in zip(names, members)},
        "RepetitionTime": cfg.tr,
    }
    write_json(description, truth / "stimulation_response.json")
    frames = []
    for name, block in zip(names, course):
        frame = pd.DataFrame(block, columns=atlas.labels)
        frame.insert(0, "time", times)
        frame.insert(0, "network", name)
        frames.append(frame)
    write_tsv(pd.concat(frames, ignore_index=True), truth / "stimulation_timecourse.tsv")
    write_json({**description, "Description": "BOLD change after stimulation onset (t = 0 s) for each network, "
                "sampled every TR up to the end of the window; rows: network × time, columns: regions"},
               truth / "stimulation_timecourse.json")
    result.files += [truth / "stimulation_response.tsv", truth / "stimulation_timecourse.tsv"]
    return {"protocol": protocol.describe(model, cfg.step), "networks": names}


def _write_dataset_files(out: Path, table: pd.DataFrame, cfg: SimulationConfig, atlas: Atlas,
                         effects: PhenotypeEffects, target: str) -> None:
    write_tsv(table, out / "participants.tsv")
    write_json(participants_json(effects, target), out / "participants.json")
    if cfg.space == "regions":
        write_dataset_description(out, pipeline="simulate")
    else:
        write_json({"Name": "brainfm simulated BOLD", "BIDSVersion": "1.9.0", "DatasetType": "raw",
                    "License": "CC0", "GeneratedBy": dataset_generated_by("simulate")},
                   out / "dataset_description.json")
    write_dataset_description(out / TRUTH, pipeline="simulate")
    write_tsv(pd.DataFrame({"region": atlas.labels, "network": atlas.networks,
                            **dict(zip("xyz", atlas.region_coords().T))}), out / TRUTH / "regions.tsv")


def _write_simulation_json(truth: Path, cfg: SimulationConfig, atlas: Atlas, model: NeuralModel, hemo: Hemodynamics,
                           recipe: ConnectomeRecipe, effects: PhenotypeEffects, target: str, stim: dict,
                           painter) -> None:
    """Everything needed to redo the simulation; written last, so its presence marks a complete dataset."""
    write_json(effects.describe(target), truth / "phenotype_effects.json")
    write_json({
        "Config": asdict(cfg),
        "IntegrationStep": cfg.step,
        "Integration": "Euler-Maruyama at IntegrationStep; BOLD sampled every TR after a burn-in from rest",
        "NumberOfVolumes": cfg.n_volumes,
        "Atlas": atlas.describe(),
        "NeuralModel": model.describe(),
        "Hemodynamics": {"model": "Balloon-Windkessel (Friston et al. 2003), integrated in log f, v, q",
                         **asdict(hemo), "k1": round(7 * hemo.e0, 6), "k2": 2.0, "k3": round(2 * hemo.e0 - 0.2, 6),
                         "bold": "100 * v0 * (k1 (1 - q) + k2 (1 - q / v) + k3 (1 - v)) percent"},
        "Connectome": {**asdict(recipe), "rule": CONNECTOME_RULE},
        "DiagnosisNetwork": target,
        "MeasurementNoise": f"sd = {cfg.noise:g} x the run's median region BOLD sd; white over regions (regions) "
                            f"or spatially smooth (FWHM {cfg.noise_fwhm:g} mm) over voxels (mni)",
        "Stimulation": stim,
        "Image": None if painter is None else {"shape": list(painter.shape), "affine": painter.affine.tolist(),
                                               "baseline": 100.0, "noise_fwhm_mm": cfg.noise_fwhm},
        "Seeds": "numpy default_rng([seed, purpose, participant index, run index]); purposes: "
                 + ", ".join(f"{k}={v}" for k, v in _PURPOSE.items()),
        "GeneratedBy": generated_by("simulate"),
    }, truth / "simulation.json")
