"""Validation during pretraining, on held-out participants: does the model capture the data, or has it collapsed?

Every family: the objective's loss on fixed crops of the validation runs, and the effective rank (RankMe; Garrido
et al. 2023) and spread between windows of its embeddings — a collapsed encoder gives the same embedding for
every window. Masked-reconstruction families also report R² on hidden values at mask ratios 0.2 / 0.5 / 0.75
(BrainLM's Table 1) and the spread of their predictions; a model predicting the mean everywhere has R² ≈ 0 and a
spread near 0. Every draw is seeded, so the same model gives the same figures.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from brainfm_cli.data.corpus import Corpus, windows
from brainfm_cli.data.reconstruction import r2_and_mse
from brainfm_cli.models.objective import StepInfo

log = logging.getLogger("brainfm.pretrain")

RATIOS = (0.2, 0.5, 0.75)
MAX_WINDOWS = 64  # enough for stable figures, bounded cost


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
    """Computes the validation figures of ``objective`` on ``corpus`` (held-out participants)."""

    def __init__(self, corpus: Corpus, objective, seed: int, device: torch.device, batch_size: int = 8):
        model = objective.export_model()
        length = int(model.card.input.seq_len)
        self.crops = self._subset(windows(corpus, max(length, objective.sample_length))[0], seed)
        # embeddings and reconstructions on windows every quarter window: enough of them to tell spread from none
        self.inputs = self._subset(windows(corpus, length, max(1, length // 4))[0], seed)
        self.seed, self.device, self.batch = seed, device, batch_size
        self.participants = len(set(corpus.participants))

    @staticmethod
    def _subset(x: np.ndarray, seed: int) -> np.ndarray:
        if len(x) <= MAX_WINDOWS:
            return x
        return x[np.sort(np.random.default_rng(seed).permutation(len(x))[:MAX_WINDOWS])]

    @property
    def empty(self) -> bool:
        return len(self.inputs) == 0

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
                xb = torch.from_numpy(self.crops[lo:lo + self.batch]).to(self.device)
                valid = torch.full((xb.shape[0],), xb.shape[-1], dtype=torch.long, device=self.device)
                info = StepInfo(step, total, torch.Generator().manual_seed(self.seed + lo))
                loss, _ = objective(xb, valid, info)
                losses.append(float(loss) * xb.shape[0])
            if len(self.crops):
                out["val_loss"] = sum(losses) / len(self.crops)
            model = objective.export_model()
            z = np.concatenate([model.pool(model.encode(torch.from_numpy(self.inputs[lo:lo + self.batch])
                                                        .to(self.device)), model.default_pooling).float().cpu().numpy()
                                for lo in range(0, len(self.inputs), self.batch)])
            out["val_rankme"] = rankme(z)
            out["val_embedding_spread"] = embedding_spread(z)
            if hasattr(model, "reconstruct_values"):
                out.update(self._reconstruction(model))
        finally:
            objective.train(was)
        return out

    def _reconstruction(self, model) -> dict[str, float]:
        from brainfm_cli.masking.random import TokenMask

        out = {}
        for k, ratio in enumerate(RATIOS):
            g = torch.Generator().manual_seed(self.seed * 7919 + k)
            truth, guess = [], []
            for lo in range(0, len(self.inputs), self.batch):
                xb = torch.from_numpy(self.inputs[lo:lo + self.batch]).to(self.device)
                masks = [model.value_mask(1, xb.shape[-1], ratio, g) for _ in range(xb.shape[0])]
                tm = TokenMask.cat([m[0] for m in masks])
                hidden = torch.cat([m[1] for m in masks]).to(self.device)
                pred = model.reconstruct_values(xb, tm)
                truth.append(xb[hidden].cpu().numpy())
                guess.append(pred[hidden].float().cpu().numpy())
            t, p = np.concatenate(truth), np.concatenate(guess)
            out[f"val_r2_{ratio:g}"] = r2_and_mse(t, p)[0]
            if ratio == 0.75:
                out["val_prediction_sd"] = float(p.std() / max(t.std(), 1e-12))
        return out


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
