"""Validation during pretraining, on held-out participants: does the model capture the data, or has it collapsed?

Every family: the objective's loss on fixed crops of the validation runs, and the effective rank (RankMe; Garrido
et al. 2023) and spread between windows of its embeddings — a collapsed encoder gives the same embedding for
every window — and a linear read-out of each held-out window's functional connectivity from its embedding (ridge
fitted on windows of the training participants; skill over predicting their mean FC, on the leading principal
axes of window FC: how much of what makes a window's FC its own the embedding carries).
Masked-reconstruction families also report R² on hidden values at mask ratios 0.2 / 0.5 / 0.75 (BrainLM's
Table 1) and the spread of their predictions; a model predicting the mean everywhere has R² ≈ 0 and a spread
near 0. Every draw is seeded, so the same model gives the same figures.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from brainfm_cli.data.connectivity import fisher_z_fc
from brainfm_cli.data.corpus import Corpus, Windows, windows
from brainfm_cli.data.reconstruction import r2_and_mse
from brainfm_cli.models.objective import StepInfo

log = logging.getLogger("brainfm.pretrain")

RATIOS = (0.2, 0.5, 0.75)
MAX_WINDOWS = 32  # enough for stable figures, bounded cost (a validation is ~7 forward passes of each)
FC_TRAIN_WINDOWS = 64  # training windows the FC read-out is fitted on
FC_COMPONENTS = 10  # principal axes of window-to-window FC that the read-out predicts
FC_MIN_LENGTH = 20  # samples a window needs for its FC to mean something
# × the kernel's mean eigenvalue; inf: predict the fitting mean (what cross-validation falls back to when the
# embeddings of a left-out participant lie where the read-out only extrapolates)
READOUT_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, float("inf"))


def rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    """``exp(entropy)`` of the normalised singular values of the embeddings ``[N, D]`` (1 … min(N, D))."""
    s = np.linalg.svd(np.asarray(z, dtype=np.float64) - z.mean(axis=0), compute_uv=False)
    p = s / (s.sum() + eps) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_spread(z: np.ndarray) -> float:
    """How much the embeddings differ between windows: mean squared distance to their mean over their mean
    squared norm (0 when every window gets the same embedding)."""
    z = np.asarray(z, dtype=np.float64)
    return float(((z - z.mean(axis=0)) ** 2).sum(axis=1).mean() / max((z ** 2).sum(axis=1).mean(), 1e-300))


class Validator:
    """Computes the validation figures of ``objective`` on ``corpus`` (held-out participants); ``train`` (the
    training corpus) supplies the windows the FC read-out is fitted on."""

    def __init__(self, corpus: Corpus, objective, seed: int, device: torch.device, batch_size: int = 8,
                 train: Corpus | None = None):
        model = objective.export_model()
        length = int(model.card.input.seq_len)
        self.crops = self._subset(windows(corpus, max(length, objective.sample_length)), seed)
        # embeddings and reconstructions on windows every quarter window: enough of them to tell spread from none
        self.inputs = self._subset(windows(corpus, length, max(1, length // 4)), seed)
        self.seed, self.device, self.batch = seed, device, batch_size
        self.participants = len(set(corpus.participants))
        self.fc = None
        if train is not None and length >= FC_MIN_LENGTH:
            # windows every eighth of a window: enough of them to fit and score a read-out on short corpora
            fit = self._subset(windows(train, length, max(1, length // 8)), seed, FC_TRAIN_WINDOWS)
            scored = self._subset(windows(corpus, length, max(1, length // 8)), seed)
            if len(set(fit.participants)) >= 2 and len(scored) >= 2:
                self.fc = (fit, scored, *fc_components(window_fc(fit), window_fc(scored)))

    @staticmethod
    def _subset(w: Windows, seed: int, n: int = MAX_WINDOWS) -> Windows:
        if len(w) <= n:
            return w
        return w.take(np.sort(np.random.default_rng(seed).permutation(len(w))[:n]))

    @property
    def empty(self) -> bool:
        return len(self.inputs) == 0

    def _absent(self, w: Windows, lo: int) -> torch.Tensor | None:
        a = w.absent[lo:lo + self.batch]
        return torch.from_numpy(a).to(self.device) if a.any() else None

    def embed(self, model, w: Windows) -> np.ndarray:
        """The default pooling of ``model`` for every window ``[N, D]`` (regions without data masked)."""
        out = []
        for lo in range(0, len(w), self.batch):
            xb = torch.from_numpy(w.x[lo:lo + self.batch]).to(self.device)
            mask = model.padding_mask([xb.shape[-1]] * xb.shape[0], xb.shape[-1], self._absent(w, lo))
            enc = model.encode(xb, None if mask is None else mask.to(self.device))
            out.append(model.pool(enc, model.default_pooling).float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def __call__(self, objective, step: int, total: int) -> dict[str, float]:
        if self.empty:
            return {}
        was = objective.training
        objective.eval()
        out: dict[str, float] = {}
        try:
            losses = []
            for lo in range(0, len(self.crops), self.batch):  # no crops when every run is shorter than one
                xb = torch.from_numpy(self.crops.x[lo:lo + self.batch]).to(self.device)
                valid = torch.full((xb.shape[0],), xb.shape[-1], dtype=torch.long, device=self.device)
                info = StepInfo(step, total, torch.Generator().manual_seed(self.seed + lo))
                loss, _ = objective(xb, valid, info, self._absent(self.crops, lo))
                losses.append(float(loss) * xb.shape[0])
            if len(self.crops):
                out["val_loss"] = sum(losses) / len(self.crops)
            model = objective.export_model()
            z = self.embed(model, self.inputs)
            out["val_rankme"] = rankme(z)
            out["val_embedding_spread"] = embedding_spread(z)
            if self.fc is not None:
                fit, scored, fc_fit, fc_val = self.fc
                out["val_fc_r2"] = readout_r2(self.embed(model, fit), fc_fit, fit.participants,
                                              self.embed(model, scored), fc_val)
            if model.card.forecast:
                out.update(self._forecast(model))
            elif hasattr(model, "reconstruct_values"):
                out.update(self._reconstruction(model))
        finally:
            objective.train(was)
        return out

    def _forecast(self, model) -> dict[str, float]:
        """R² of the forecasts of held-out crops (context, then horizon): over the whole horizon and one step ahead."""
        C, H = int(model.card.forecast["context"]), int(model.card.forecast["horizon"])
        truth, guess = [], []
        for lo in range(0, len(self.crops), self.batch):
            xb = torch.from_numpy(self.crops.x[lo:lo + self.batch, :, :C + H]).to(self.device)
            absent = self._absent(self.crops, lo)
            pred = model.forecast(xb[..., :C], absent).float().cpu().numpy()
            keep = ~self.crops.absent[lo:lo + self.batch]
            truth.append(xb[..., C:].cpu().numpy()[keep])
            guess.append(pred[keep])
        t, p = np.concatenate(truth), np.concatenate(guess)  # [values, H]
        return {"val_forecast_r2": r2_and_mse(t.ravel(), p.ravel())[0],
                "val_forecast_r2_step1": r2_and_mse(t[:, 0], p[:, 0])[0]}

    def _reconstruction(self, model) -> dict[str, float]:
        from brainfm_cli.masking.random import TokenMask

        out = {}
        w = self.inputs
        for k, ratio in enumerate(RATIOS):
            g = torch.Generator().manual_seed(self.seed * 7919 + k)
            truth, guess = [], []
            for lo in range(0, len(w), self.batch):
                xb = torch.from_numpy(w.x[lo:lo + self.batch]).to(self.device)
                masks = [model.value_mask(1, xb.shape[-1], ratio, g) for _ in range(xb.shape[0])]
                tm = TokenMask.cat([m[0] for m in masks])
                absent = self._absent(w, lo)
                hidden = torch.cat([m[1] for m in masks]).to(self.device)
                if absent is not None:  # values without data are never scored
                    hidden = hidden & ~absent.reshape(absent.shape[0], absent.shape[1], *[1] * (hidden.ndim - 2))
                pred = model.reconstruct_values(xb, tm, absent)
                truth.append(xb[hidden].cpu().numpy())
                guess.append(pred[hidden].float().cpu().numpy())
            t, p = np.concatenate(truth), np.concatenate(guess)
            out[f"val_r2_{ratio:g}"] = r2_and_mse(t, p)[0]
            if ratio == 0.75:
                out["val_prediction_sd"] = float(p.std() / max(t.std(), 1e-12))
        return out


def window_fc(w: Windows) -> np.ndarray:
    """``[N, R(R−1)/2]``: the upper triangle of each window's Fisher-z FC (0 where a region has no data)."""
    R = w.x.shape[1]
    iu = np.triu_indices(R, k=1)
    return np.stack([np.nan_to_num(fisher_z_fc(x.T.astype(np.float64))[iu]) for x in w.x]) if len(w) else \
        np.zeros((0, len(iu[0])))


def fc_components(fc_fit: np.ndarray, fc_val: np.ndarray, k: int = FC_COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """Both sets of window FCs projected on the ``k`` leading principal axes of the fitting windows' FC (around
    their mean): the main ways a window's FC departs from the average (single FC entries of a short window are
    mostly sampling noise, which no embedding can carry)."""
    axes = np.linalg.svd(fc_fit - fc_fit.mean(axis=0), full_matrices=False)[2][:k].T  # [E, k]
    return fc_fit @ axes, fc_val @ axes


def readout_r2(z_fit: np.ndarray, y_fit: np.ndarray, groups: list[str], z: np.ndarray, y: np.ndarray) -> float:
    """Skill of a ridge read-out of ``y`` (e.g. each window's FC) from the embeddings ``z`` over predicting the
    fitting set's mean: ``1 − SSE / Σ(y − ȳ_fit)²`` on ``(z, y)``. Fitted on ``(z_fit, y_fit)``, the penalty
    chosen by leave-one-participant-out over ``groups``. What it credits is what a window's FC has beyond the
    average FC — the participant's own pattern and the window's departures from it."""
    z_fit, y_fit, z, y = (np.asarray(a, dtype=np.float64) for a in (z_fit, y_fit, z, y))
    labels = np.asarray(groups)
    errors = np.zeros(len(READOUT_PENALTIES))
    for g in np.unique(labels):
        tr, te = labels != g, labels == g
        for i, penalty in enumerate(READOUT_PENALTIES):
            pred = _ridge(z_fit[tr], y_fit[tr], z_fit[te], penalty)
            errors[i] += float(((pred - y_fit[te]) ** 2).sum())
    pred = _ridge(z_fit, y_fit, z, READOUT_PENALTIES[int(np.argmin(errors))])
    sst = float(((y - y_fit.mean(axis=0)) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def _ridge(z_fit: np.ndarray, y_fit: np.ndarray, z: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge predictions in kernel form (few windows, wide targets). Features are centred, not standardised: a
    direction along which the fitting windows hardly vary gets a small weight instead of an amplified one (an
    untrained encoder's embeddings barely vary); the penalty is relative to the mean eigenvalue of the kernel."""
    if penalty == float("inf"):
        return np.broadcast_to(y_fit.mean(axis=0), (len(z), y_fit.shape[1]))
    mu = z_fit.mean(axis=0)
    a, b = z_fit - mu, z - mu
    K = a @ a.T
    lam = penalty * max(float(np.trace(K)) / len(a), 1e-300)
    coef = np.linalg.solve(K + lam * np.eye(len(a)), y_fit - y_fit.mean(axis=0))
    return (b @ a.T) @ coef + y_fit.mean(axis=0)


def collapse_warning(figures: dict[str, float], step: int, progress: float,
                     initial: dict[str, float] | None = None) -> str | None:
    """A sentence naming the step and the sign of collapse, or None while training is young (before a quarter of
    the run a model may still predict the mean) or the figures look alive. Embeddings count as collapsed when
    their spread between windows fell a hundredfold below the untrained model's (``initial``)."""
    if progress < 0.25:
        return None
    signs = []
    sd = figures.get("val_prediction_sd")
    r2 = [v for k, v in figures.items() if k.startswith("val_r2_") and v == v]
    if sd is not None and sd < 0.1 and r2 and max(r2) < 0.02:
        signs.append(f"it predicts the mean (held-out R² {max(r2):.3f}, predictions with {sd:.3f} of the data's "
                     "spread)")
    spread, before = figures.get("val_embedding_spread"), (initial or {}).get("val_embedding_spread")
    if spread is not None and before and spread < 0.01 * before:
        signs.append(f"every window gets nearly the same embedding (spread {spread:.1e}, {before:.1e} untrained)")
    if not signs:
        return None
    return f"step {step}: the model looks collapsed on held-out participants: " + "; ".join(signs)
