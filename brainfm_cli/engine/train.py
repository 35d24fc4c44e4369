"""The pretraining loop shared by every family: data, schedules, precision, DDP, checkpoints and resume.

One frozen :class:`TrainConfig` describes a run and is saved into its folder. Every random draw is a pure
function of (seed, epoch, step, rank), so a run resumed from its last checkpoint continues exactly where it was.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from brainfm_cli.data.corpus import load_corpus, load_forecast_pairs, split_by_participant
from brainfm_cli.device import autocast, choose_dtype, resolve_device
from brainfm_cli.engine.distributed import barrier, device_for, init_distributed, shutdown
from brainfm_cli.engine.ema import build_objective, update_teachers
from brainfm_cli.engine.schedules import cosine, warmup_cosine
from brainfm_cli.engine.validate import Validator, collapse_warning
from brainfm_cli.layers.linear import weights_updated
from brainfm_cli.errors import BrainfmError
from brainfm_cli.atlases import load_atlas
from brainfm_cli.io.files import atomic_path, atomic_write, read_tsv, write_json, write_tsv
from brainfm_cli.io.provenance import generated_by, sha256sum
from brainfm_cli.io.timeseries import discover_timeseries
from brainfm_cli.models import architecture_class, build, get_card
from brainfm_cli.models._space import match_regions, space_for_atlas
from brainfm_cli.models.objective import StepInfo

log = logging.getLogger("brainfm.pretrain")

CHECKPOINT = "checkpoints/last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """A pretraining run. ``None`` optimisation values take the family's published recipe."""

    model: str
    corpus: tuple[str, ...]
    output: str
    size: str | None = None  # one of the card's named sizes, applied before ``architecture``
    atlas: str | None = None  # the corpus's atlas (a name or an image file): the model is made for its regions
    atlas_labels: str | None = None
    transfer_networks: bool = False
    architecture: dict = field(default_factory=dict)
    objective: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 16
    accumulation: int = 1
    lr: float | None = None
    start_lr: float | None = None
    min_lr: float | None = None
    warmup: float | None = None  # fraction of training spent warming the learning rate up
    weight_decay: float | None = None
    final_weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    grad_clip: float | None = None
    crops_per_run: int | None = None  # None: enough crops that an epoch covers each run's samples about once
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    checkpoint_every: int = 50
    max_steps: int | None = None  # the schedule's length (instead of epochs × steps per epoch)
    time_limit: float | None = None  # seconds: fit the schedule into it and stop cleanly there, with a checkpoint
    val_fraction: float = 0.2  # participants held out for validation (none when it rounds to 0)
    val: tuple[str, ...] = ()  # a validation corpus instead of a split
    val_every: int | None = None  # steps between validations (default: ten per run)
    tr: float | None = None
    missing: str = "error"
    weights: str | None = None  # start from these weights (fine-tuning; default: the model card's own)
    forecast: dict = field(default_factory=dict)  # context, horizon, freeze_encoder, from_scratch: forecast fine-tuning

    def to_dict(self) -> dict:
        d = asdict(self)
        d["corpus"] = list(self.corpus)
        d["val"] = list(self.val)
        d["betas"] = list(self.betas) if self.betas else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        missing = [k for k in ("model", "corpus", "output") if d.get(k) is None]
        if missing:
            raise BrainfmError(f"the configuration lacks {missing}", fix="give them in the YAML or on the command line")
        d["corpus"] = tuple(d["corpus"])
        d["val"] = tuple(d.get("val") or ())
        if d.get("betas"):
            d["betas"] = tuple(d["betas"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise BrainfmError(f"unknown configuration keys {sorted(unknown)}",
                               fix=f"valid keys: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)

    def with_recipe(self, recipe: dict) -> "TrainConfig":
        """Fill unset optimisation values from the family's recipe."""
        filled = {k: v for k, v in recipe.items() if k in self.__dataclass_fields__ and getattr(self, k) is None}
        if "betas" in filled:
            filled["betas"] = tuple(filled["betas"])
        return replace(self, **filled)


def param_groups(module: torch.nn.Module) -> list[dict]:
    """Two AdamW groups: weights with decay, and biases / 1-D parameters (norms, tokens' scales) without."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def adamw(groups: list[dict], device: torch.device, lr: float, betas, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``groups``: the fused kernel on CPU and CUDA (one pass over every tensor; on the CPU ×2.8–4.2 the
    speed of ``foreach``, whose CPU form is a loop of per-tensor ops: bench/bench_pretrain.py), else ``foreach``.
    A fused step does not bump the parameters' version counters: call ``layers.linear.weights_updated()`` after
    it."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused,
                             foreach=None if fused else True)


def set_schedule(opt: torch.optim.Optimizer, step: int, total: int, warmup: int, start_lr: float, lr: float,
                 min_lr: float, weight_decay: float, final_weight_decay: float) -> tuple[float, float]:
    """Set every group's learning rate at ``step`` of ``total`` (linear warm-up over ``warmup`` steps, then cosine)
    and the decayed groups' weight decay (cosine); returns both."""
    lr_now = warmup_cosine(step, total, warmup, start_lr, lr, min_lr)
    wd_now = cosine(step, total, weight_decay, final_weight_decay)
    for group in opt.param_groups:
        group["lr"] = lr_now
        if group.get("apply_wd"):
            group["weight_decay"] = wd_now
    return lr_now, wd_now


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


class Trainer:
    """Runs a :class:`TrainConfig` to completion, checkpointing and logging on the main process."""

    def __init__(self, config: TrainConfig, on_step: Callable[[int, int, dict], None] | None = None,
                 on_plan: Callable[[dict], None] | None = None):
        self.config = config
        self.on_step = on_step
        self.on_plan = on_plan
        self.precision: dict | None = None  # the dtype the run used, and why (written into the model card)

    def run(self, resume: bool = False) -> Path:
        cfg = self.config
        out = Path(cfg.output)
        base_device = resolve_device(cfg.device)
        dist = init_distributed(base_device)
        try:
            device = device_for(dist, base_device)
            dtype, reason = choose_dtype(cfg.dtype, device, task="pretrain")
            self.precision = {"dtype": str(dtype).replace("torch.", ""), "reason": reason}
            log.info("precision: %s", reason)
            space_args: dict = {}
            torch.manual_seed(cfg.seed)
            if cfg.forecast:
                objective = self._forecasting()
            else:
                card = get_card(cfg.model)
                if cfg.size:
                    card = card.with_size(cfg.size)
                if cfg.architecture:
                    card = card.with_architecture(**cfg.architecture)
                if cfg.atlas:
                    card, space_args = self._card_for_atlas(card)
                objective = build_objective(build(card, **space_args), cfg.objective)
            card = objective.model.card  # a family may complete its input space when built (SC-MBM: the voxel set)
            cfg = cfg.with_recipe(objective.recipe)
            self.config = cfg
            corpus = self._read(cfg.corpus, card, objective)
            if cfg.val:
                val = self._read(cfg.val, card, objective)
            else:
                corpus, val = split_by_participant(corpus, cfg.val_fraction, cfg.seed)
            if cfg.crops_per_run is None:
                mean_len = float(np.mean([r.shape[1] for r in corpus.runs]))
                cfg = replace(cfg, crops_per_run=max(1, int(round(mean_len / corpus.length))))
                self.config = cfg
            objective.to(device)
            ckpt_path = out / CHECKPOINT
            state = self._resume_state(ckpt_path, resume)
            if dist.main:
                self._write_config(out)
                if "gradients" in space_args:
                    self._write_gradients(out, card, space_args["gradients"])
            barrier(dist)
            validator = Validator(val, objective, cfg.seed, device, train=corpus) if val is not None else None
            return self._loop(objective, corpus, card, device, dtype, dist, state, validator)
        finally:
            shutdown(dist)

    def _read(self, inputs, card, objective):
        """A corpus prepared for ``card``: crops of the objective's length, or for forecasting (context, future)
        pairs whose contexts never see their future."""
        cfg = self.config
        if cfg.forecast:
            C, H = int(cfg.forecast["context"]), int(cfg.forecast["horizon"])
            return load_forecast_pairs(list(inputs), card, C, H, max(1, H // 2), tr=cfg.tr, missing=cfg.missing)
        return load_corpus(list(inputs), card, objective.sample_length, tr=cfg.tr, missing=cfg.missing)

    def _forecasting(self):
        """The forecasting objective around the model to fine-tune: its trained weights (the card's, or
        ``weights``), or a random initialisation of the same architecture (``from_scratch``: the baseline that
        says what pretraining adds)."""
        from brainfm_cli.models import load
        from brainfm_cli.models.forecast import Forecasting

        cfg = self.config
        spec = dict(cfg.forecast)
        reshaped = [k for k in ("size", "atlas", "architecture", "objective") if getattr(cfg, k)]
        if reshaped:
            raise BrainfmError(f"forecast fine-tuning takes the model as it was trained; {reshaped} would change it",
                               fix="drop them (pretrain a model of that shape first, then forecast fit it)")
        unknown = set(spec) - {"context", "horizon", "freeze_encoder", "from_scratch"}
        if unknown or not {"context", "horizon"} <= set(spec):
            raise BrainfmError(f"forecast settings need context and horizon, got {sorted(spec)}",
                               fix="e.g. forecast: {context: 180, horizon: 20}")
        if spec.get("from_scratch"):
            model = build(get_card(cfg.model))
        else:
            model = load(cfg.model, weights=cfg.weights).train()
        return Forecasting(model, int(spec["context"]), int(spec["horizon"]), bool(spec.get("freeze_encoder")))

    def _card_for_atlas(self, card) -> tuple:
        """The card re-targeted to the corpus's regions of ``--atlas`` (all or a subset, matched by name), with
        what the family derives from the atlas or the corpus (networks, gradients)."""
        cfg = self.config
        atlas = load_atlas(cfg.atlas, cfg.atlas_labels, transfer=cfg.transfer_networks)
        first = discover_timeseries(list(cfg.corpus))[0]
        columns = list(read_tsv(first, nrows=0).columns)
        regions = match_regions(columns, atlas, first)
        ref = str(Path(cfg.atlas).resolve()) if cfg.atlas_labels else cfg.atlas
        labels = str(Path(cfg.atlas_labels).resolve()) if cfg.atlas_labels else None
        card = space_for_atlas(card, atlas, regions, ref, labels)
        card, space_args = architecture_class(card.architecture["name"]).adapt_to_atlas(card, atlas, list(cfg.corpus))
        log.info("model input: %d regions of atlas %s", len(regions), atlas.name)
        return card, space_args

    def _write_gradients(self, out: Path, card, maps) -> None:
        """The gradients computed from the corpus, beside the run (the model carries them too)."""
        import pandas as pd

        table = pd.DataFrame(maps, columns=[f"gradient_{i + 1:02d}" for i in range(maps.shape[1])])
        table.insert(0, "region", list(card.input.regions))
        write_tsv(table, out / "gradients.tsv", float_format="%.9g")
        write_json({"Description": card.architecture.get("gradients_source"), "GeneratedBy": generated_by("pretrain")},
                   out / "gradients.json")

    def _resume_state(self, path: Path, resume: bool) -> dict | None:
        for stale in path.parent.glob(f".{path.name}.*.part"):  # a process killed while writing (SIGKILL)
            stale.unlink(missing_ok=True)
        if not resume:
            if path.exists():
                raise BrainfmError("this run folder already holds a checkpoint", path=path.parent.parent,
                                   fix="pass --resume to continue it, or choose another -o folder")
            return None
        if not path.exists():
            raise BrainfmError("--resume: no checkpoint to resume from", path=path,
                               fix="start without --resume, or point -o at the folder of the interrupted run")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BrainfmError(f"the checkpoint cannot be read ({type(exc).__name__}: {str(exc)[:200]})", path=path,
                               fix="delete it to start over (it is written atomically, so this is unusual)") from None
        if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
            raise BrainfmError("the checkpoint holds no run configuration (not a checkpoint of 'brainfm pretrain')",
                               path=path, fix="point -o at the folder of the interrupted run, or start without --resume")
        saved = TrainConfig.from_dict(state["config"])
        mine = self.config.with_recipe({k: v for k, v in saved.to_dict().items() if k in (
            "lr", "start_lr", "min_lr", "warmup", "weight_decay", "final_weight_decay", "betas", "grad_clip")})
        differ = [k for k in ("model", "size", "atlas", "architecture", "objective", "epochs", "batch_size",
                              "accumulation", "seed", "crops_per_run", "val_fraction", "val", "weights", "forecast")
                  if getattr(saved, k) != getattr(mine, k)]
        if differ:
            raise BrainfmError(f"--resume with settings that differ from the checkpoint's: {differ}", path=path,
                               fix="resume with the original settings (see config.yaml in the run folder)")
        return state

    def _write_config(self, out: Path) -> None:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        with atomic_write(out / "config.yaml") as fh:
            yaml.safe_dump(self.config.to_dict(), fh, sort_keys=False)

    def _loop(self, objective, corpus, card, device, dtype, dist, state, validator=None) -> Path:
        from torch.nn.parallel import DistributedDataParallel

        cfg = self.config
        out = Path(cfg.output)
        samples = len(corpus) * cfg.crops_per_run
        per_step = cfg.batch_size * cfg.accumulation * dist.world
        steps_per_epoch = max(1, samples // per_step)
        if samples < per_step:
            log.warning("the corpus (%d samples) is smaller than one optimiser step (%d); samples repeat within a "
                        "step", samples, per_step)
        total = int(state["total"]) if state is not None and state.get("total") else \
            (cfg.max_steps or cfg.epochs * steps_per_epoch)
        fit_to_time = cfg.time_limit is not None and not cfg.max_steps and state is None
        # a run's schedule is fixed when it starts; --max-steps given on --resume only says where to stop this time
        stop_at = min(total, cfg.max_steps) if state is not None and cfg.max_steps else total
        warmup = int(round(cfg.warmup * total))
        groups = param_groups(objective)
        opt = adamw(groups, device, cfg.lr, cfg.betas, cfg.weight_decay)
        scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
        step = 0
        if state is not None:
            objective.load_state_dict(state["objective"])
            opt.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            log.info("resumed from step %d", step)
        net = DistributedDataParallel(objective) if dist.enabled else objective
        metrics = _MetricsLog(out / "metrics.tsv", step) if dist.main else None
        validation = _MetricsLog(out / "validation.tsv", step) if dist.main and validator is not None else None
        val_every = cfg.val_every or max(1, total // 10)
        if self.on_plan and dist.main:
            self.on_plan({"total": total, "steps_per_epoch": steps_per_epoch, "crops_per_run": cfg.crops_per_run,
                          "runs": len(corpus), "participants": len(set(corpus.participants)),
                          "validation_participants": validator.participants if validator else 0,
                          "start": step, "time_limit": cfg.time_limit})
        initial: dict = {}
        if validation is not None:  # the untrained model's figures: what training must improve on
            initial = validator(objective, step, total)
            if step == 0:
                validation.write(0, 0, initial)
        stop = _StopFlag()
        logs: dict = {}
        figures: dict = {}
        started = time.monotonic()
        timed_at: float | None = None
        with stop:
            while step < stop_at:
                epoch = step // steps_per_epoch
                order = np.random.default_rng(_seed(cfg.seed, epoch)).permutation(samples) % len(corpus)
                if len(order) < per_step:
                    order = np.resize(order, per_step)
                lr, wd = set_schedule(opt, step, total, warmup, cfg.start_lr, cfg.lr, cfg.min_lr, cfg.weight_decay,
                                      cfg.final_weight_decay)
                within = step % steps_per_epoch
                logs = {}
                objective.train()
                for micro in range(cfg.accumulation):
                    lo = ((within * cfg.accumulation + micro) * dist.world + dist.rank) * cfg.batch_size
                    idx = order[lo:lo + cfg.batch_size]
                    x, valid = corpus.sample(idx, np.random.default_rng(_seed(cfg.seed, epoch, step, dist.rank, micro)))
                    absent = torch.from_numpy(corpus.absent_of(idx)).to(device) if corpus.has_absent else None
                    gen = torch.Generator().manual_seed(_seed(cfg.seed, step, dist.rank, micro, 1))
                    info = StepInfo(step, total, gen)
                    sync = micro == cfg.accumulation - 1 or not dist.enabled
                    ctx = net.no_sync() if not sync else contextlib.nullcontext()
                    with ctx, autocast(device, dtype):
                        loss, terms = net(torch.from_numpy(x).to(device), torch.from_numpy(valid).to(device), info,
                                          absent)
                    if not torch.isfinite(loss):
                        raise BrainfmError(f"the loss became {loss.item()} at step {step}",
                                           fix="lower --lr, use --dtype float32, or check the corpus for outliers")
                    scaled = loss / cfg.accumulation
                    (scaler.scale(scaled) if scaler else scaled).backward()
                    for k, v in terms.items():
                        logs[k] = logs.get(k, 0.0) + float(v) / cfg.accumulation
                if scaler:
                    scaler.unscale_(opt)
                if cfg.grad_clip:
                    logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip))
                (scaler.step(opt), scaler.update()) if scaler else opt.step()
                weights_updated()  # the fused step leaves version counters alone: re-pack inference weights
                opt.zero_grad(set_to_none=True)
                logs.update(update_teachers(objective, step, total))
                logs.update(lr=lr, weight_decay=wd)
                step += 1
                if fit_to_time:  # time two steps after the first (which pays for warm-up), then fit the schedule
                    if timed_at is None:
                        timed_at, timed_step = time.monotonic(), step
                    elif step == timed_step + 2:
                        per_step = (time.monotonic() - timed_at) / 2
                        left = cfg.time_limit - (time.monotonic() - started)
                        total = stop_at = min(total, step + max(0, int(0.95 * left / per_step)))
                        warmup = int(round(cfg.warmup * total))
                        fit_to_time = False
                        log.info("schedule fitted to the time limit: %d steps", total)
                if metrics:
                    metrics.write(step, epoch, logs)
                out_of_time = cfg.time_limit is not None and time.monotonic() - started >= cfg.time_limit
                if validation is not None and (step % val_every == 0 or step >= stop_at or out_of_time):
                    figures = validator(objective, step, total)
                    validation.write(step, epoch, figures)
                    warning = collapse_warning(figures, step, step / max(1, total), initial)
                    if warning:
                        log.warning(warning)
                    logs = {**logs, **figures}
                if self.on_step and dist.main:
                    self.on_step(step, total, logs)
                if dist.main and (step % cfg.checkpoint_every == 0 or step >= stop_at or stop.requested
                                  or out_of_time):
                    self._checkpoint(out, objective, opt, scaler, step, total)
                if stop.requested:
                    raise KeyboardInterrupt
                if out_of_time and step < stop_at:
                    log.warning("stopped at the time limit (%.0f s) after step %d of %d, with a checkpoint: "
                                "--resume continues the run", cfg.time_limit, step, total)
                    break
        if dist.main:
            return self._export(out, objective, card, step, total, logs, corpus, figures)
        return out / "model.safetensors"

    def _checkpoint(self, out: Path, objective, opt, scaler, step: int, total: int) -> None:
        state = {"objective": objective.state_dict(), "optimizer": opt.state_dict(), "step": step, "total": total,
                 "config": self.config.to_dict(), "scaler": scaler.state_dict() if scaler else None}
        with atomic_path(out / CHECKPOINT) as tmp:
            torch.save(state, tmp)

    def _export(self, out: Path, objective, card, step, total, logs, corpus, figures) -> Path:
        import yaml

        model = objective.export_model()
        training = dict(card.training)
        training.update({
            "recipe": {k: v for k, v in self.config.to_dict().items() if k not in ("output", "device")},
            "steps": step, "total_steps": total, "runs": len(corpus), "participants": len(set(corpus.participants)),
            "final_loss": logs.get("loss"),
        })
        if self.precision:
            training["precision"] = self.precision
        if figures:
            training["validation"] = {k: round(float(v), 6) for k, v in figures.items()}
        space = model.card.input
        with torch.no_grad():  # the embedding width of the default pooling, for the card
            probe = torch.zeros(1, space.n_regions, space.seq_len, device=next(model.parameters()).device)
            width = int(model.pool(model.encode(probe), model.default_pooling).shape[-1])
        embedding = {**model.card.embedding, "width": width, "default": model.default_pooling}
        model.card = replace(model.card, training=training, embedding=embedding, weights={"file": "model.safetensors"})
        path = model.save(out / "model.safetensors")
        card_dict = model.card.to_dict()
        card_dict["weights"] = {"file": "model.safetensors", "sha256": sha256sum(path)}
        with atomic_write(out / "model.yaml") as fh:
            yaml.safe_dump(card_dict, fh, sort_keys=False, allow_unicode=True)
        write_report(out, model.card)
        return path


def write_report(out: Path, card) -> Path:
    """``report.html`` in the run folder: the training loss and every validation figure over the steps."""
    import pandas as pd

    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm pretrain: {card.name}")
    rep.paragraph(f"{card.family} ({card.architecture.get('size', '')}), {card.input.n_regions} regions of "
                  f"{card.input.atlas or card.input.atlas_description}; "
                  f"{card.training.get('steps')} of {card.training.get('total_steps')} steps on "
                  f"{card.training.get('runs')} runs of {card.training.get('participants')} participants.")
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t", na_values=["n/a"])
    fig = new_figure(6.0, 3.2)
    ax = fig.subplots()
    ax.plot(metrics["step"], metrics["loss"], lw=1, label="training loss")
    val_path = out / "validation.tsv"
    val = pd.read_csv(val_path, sep="\t", na_values=["n/a"]) if val_path.exists() else None
    if val is not None and "val_loss" in val:
        ax.plot(val["step"], val["val_loss"], marker="o", lw=1, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    rep.figure(fig, caption="The objective on training batches and on the held-out participants.")
    if val is not None:
        r2 = [c for c in val.columns if c.startswith("val_r2_")]
        if r2:
            fig = new_figure(6.0, 3.2)
            ax = fig.subplots()
            for c in r2:
                ax.plot(val["step"], val[c], marker="o", lw=1, label=f"mask ratio {c.split('_')[-1]}")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_xlabel("step")
            ax.set_ylabel("held-out R² on hidden values")
            ax.legend(frameon=False)
            rep.figure(fig, caption="Masked reconstruction on held-out participants (0: predicting the mean; "
                                    "compare with 'brainfm reconstruct', which adds the baselines).")
        rep.table(val, caption="Validation figures (step 0: the untrained model)", float_format="{:.4g}")
    else:
        rep.note("No validation split (--val-fraction 0 or too few participants): nothing says how well the "
                 "model does on data it has not seen.")
    return rep.write(out / "report.html")


class _MetricsLog:
    """``metrics.tsv``: one row per optimiser step; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            lines = path.read_text().splitlines()
            if lines:
                self.columns = lines[0].split("\t")
                kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[0]) <= resumed_step]
                path.write_text("\n".join(kept) + "\n")

    def write(self, step: int, epoch: int, logs: dict) -> None:
        row = {"step": step, "epoch": epoch, **logs}
        if self.columns is None:
            self.columns = list(row)
            self.path.write_text("\t".join(self.columns) + "\n")
        vals = [row.get(c, "n/a") for c in self.columns]
        with open(self.path, "a") as fh:
            fh.write("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals) + "\n")


class _StopFlag:
    """Turns SIGTERM (a scheduler's kill) into a clean stop: checkpoint at the current step, then exit."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False
