"""Neural dynamics on a region network plus Balloon–Windkessel hemodynamics, integrated in batches.

State arrays are laid out ``(P, N, M)``: P coupling matrices (participants), N regions, M runs or
conditions sharing a matrix, so each time step's coupling is one batched matrix product and the
rest is element-wise numpy. Integration is Euler–Maruyama at a fine step; BOLD is sampled every TR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

MODELS = ("linear", "hopf")


def single_threaded_blas():
    """Limit BLAS to one thread: for 300 × 300 products extra threads only contend (badly, on a busy
    machine), and one thread keeps results independent of the machine's core count."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@dataclass(frozen=True)
class Hemodynamics:
    """Balloon–Windkessel constants (Friston et al. 2003): signal decay, autoregulation, transit, stiffness,
    resting oxygen extraction, resting blood volume; BOLD coefficients k1 = 7·E0, k2 = 2, k3 = 2·E0 − 0.2."""

    kappa: float = 0.65
    gamma: float = 0.41
    tau: float = 0.98
    alpha: float = 0.32
    e0: float = 0.34
    v0: float = 0.02

    def bold(self, lv: np.ndarray, lq: np.ndarray) -> np.ndarray:
        """BOLD percent signal change from log blood volume and log deoxyhaemoglobin."""
        v, q = np.exp(lv), np.exp(lq)
        k1, k2, k3 = 7 * self.e0, 2.0, 2 * self.e0 - 0.2
        return 100 * self.v0 * (k1 * (1 - q) + k2 * (1 - q / v) + k3 * (1 - v))

    def steady_bold(self, z: np.ndarray) -> np.ndarray:
        """BOLD percent change at the fixed point for a constant neural drive ``z`` (rest: z = 0 → 0)."""
        f = 1 + np.asarray(z, dtype=float) / self.gamma
        if np.any(f <= 0):
            raise ValueError("drive too negative: blood flow would stop")
        v = f ** self.alpha
        q = v * (1 - (1 - self.e0) ** (1 / f)) / self.e0
        return self.bold(np.log(v), np.log(q))


@dataclass(frozen=True)
class NeuralModel:
    """The local dynamics and their constants (one set for every region and participant).

    ``linear``: dx = [(−x + G·C x)/tau + u] dt + sigma dW, stable while G·λmax(C) < 1.
    ``hopf``: Stuart–Landau oscillators near their bifurcation, dz = [(a + iω)z − |z|²z
    + G·Σ_j C_ij (z_j − z_i) + u] dt + sigma dW, with ω drawn per region in ``freq_hz``.
    The hemodynamic drive is ``drive_gain`` · x (the real part for ``hopf``).
    """

    name: str = "linear"
    tau: float = 1.0
    sigma: float = 1.0
    drive_gain: float = 0.1
    criticality: float = 0.94  # linear: G of the reference participant, with λmax(C) = 1
    hopf_a: float = -0.02
    hopf_g: float = 0.7
    freq_hz: tuple[float, float] = (0.04, 0.07)

    def __post_init__(self):
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name}")

    @property
    def n_vars(self) -> int:
        return 1 if self.name == "linear" else 2

    @property
    def reference_gain(self) -> float:
        return self.criticality if self.name == "linear" else self.hopf_g

    def describe(self) -> dict:
        if self.name == "linear":
            return {"name": "linear", "equation": "dx = [(-x + G * C @ x) / tau + u] dt + sigma dW",
                    "tau_s": self.tau, "sigma": self.sigma, "drive_gain": self.drive_gain,
                    "reference_G": self.criticality, "coupling_normalisation": "largest eigenvalue of C is 1"}
        return {"name": "hopf", "equation": "dz = [(a + i*omega) z - |z|^2 z + G * sum_j C_ij (z_j - z_i) + u] dt"
                " + sigma dW (real and imaginary parts each get independent noise)",
                "a": self.hopf_a, "sigma": self.sigma, "drive_gain": self.drive_gain, "reference_G": self.hopf_g,
                "frequency_range_hz": list(self.freq_hz), "hemodynamic_drive": "drive_gain * Re(z)"}


@dataclass
class Network:
    """What one batch of simulations runs on: P coupling matrices with their gains (and frequencies)."""

    coupling: np.ndarray  # (P, N, N)
    gain: np.ndarray  # (P,)
    omega: np.ndarray | None = None  # (P, N) rad/s, hopf only

    @property
    def shape(self) -> tuple[int, int]:
        return self.coupling.shape[0], self.coupling.shape[1]


NoiseSource = Callable[[int], np.ndarray]  # n_steps -> (n_steps, P, N, V, M) standard normals


@dataclass
class State:
    """Neural state (P, N, V, M) and the hemodynamic state (P, N, M): flow-inducing signal and log f, v, q."""

    neural: np.ndarray
    s: np.ndarray
    lf: np.ndarray
    lv: np.ndarray
    lq: np.ndarray

    @classmethod
    def rest(cls, n_nets: int, n_regions: int, n_vars: int, n_runs: int) -> "State":
        zeros = lambda: np.zeros((n_nets, n_regions, n_runs))  # noqa: E731
        return cls(np.zeros((n_nets, n_regions, n_vars, n_runs)), zeros(), zeros(), zeros(), zeros())

    def tile(self, n: int) -> "State":
        """``n`` copies of every run, laid out copy-major along the run axis (for paired conditions)."""
        return State(np.tile(self.neural, (1, 1, 1, n)), *(np.tile(a, (1, 1, n)) for a in
                                                             (self.s, self.lf, self.lv, self.lq)))


def integrate(model: NeuralModel, net: Network, state: State, noise: NoiseSource, *, dt: float, n_steps: int,
              record_every: int, record_from: int, hemo: Hemodynamics = Hemodynamics(),
              drive: np.ndarray | None = None, drive_from: int = 0, chunk: int = 500) -> np.ndarray:
    """Advance ``state`` (in place) by ``n_steps``; returns BOLD (% change) as (P, M, T, N).

    Samples are taken after steps ``record_from + k·record_every``. ``drive`` is a constant input
    added to the neural equation from step ``drive_from`` on, broadcastable to (P, N, M). ``noise(k)``
    yields the next ``k`` steps of standard normals; callers make it deterministic per run.
    """
    P, N = net.shape
    V, M = model.n_vars, state.neural.shape[-1]
    C = net.coupling
    G = net.gain[:, None, None]
    u_on = 0.0 if drive is None else np.broadcast_to(drive, (P, N, M))
    sq = model.sigma * np.sqrt(dt)
    z_state, s, lf, lv, lq = state.neural, state.s, state.lf, state.lv, state.lq
    h = hemo
    w_exp, log_e, dt_h = 1.0 / h.alpha - 1.0, np.log(1.0 - h.e0), dt / h.tau
    if model.name == "hopf":
        strength = C.sum(axis=2)[:, :, None]  # diffusive coupling: Σ_j C_ij (z_j − z_i)
        omega = net.omega[:, :, None]
    n_out = (n_steps - 1 - record_from) // record_every + 1 if n_steps > record_from else 0
    out = np.empty((P, M, n_out, N))
    k_out = 0
    done = 0
    with single_threaded_blas():
        while done < n_steps:
            for xi in noise(min(chunk, n_steps - done)):
                u = u_on if done >= drive_from else 0.0
                cz = np.matmul(C, z_state.reshape(P, N, V * M)).reshape(P, N, V, M)
                if model.name == "linear":
                    x = z_state[:, :, 0]
                    x += dt * ((G * cz[:, :, 0] - x) / model.tau + u) + sq * xi[:, :, 0]
                else:
                    x, y = z_state[:, :, 0], z_state[:, :, 1]
                    r2 = x * x + y * y
                    dx = (model.hopf_a - r2) * x - omega * y + G * (cz[:, :, 0] - strength * x) + u
                    dy = (model.hopf_a - r2) * y + omega * x + G * (cz[:, :, 1] - strength * y)
                    x += dt * dx + sq * xi[:, :, 0]
                    y += dt * dy + sq * xi[:, :, 1]
                f = np.exp(lf)
                inv_f = 1.0 / f
                w = np.exp(lv * w_exp)  # v^(1/alpha) / v
                extraction = 1.0 - np.exp(log_e * inv_f)
                lf += dt * s * inv_f
                s += dt * (model.drive_gain * z_state[:, :, 0] - h.kappa * s - h.gamma * (f - 1.0))
                lq += dt_h * (f * extraction * np.exp(-lq) / h.e0 - w)
                lv += dt_h * (f * np.exp(-lv) - w)
                if done >= record_from and (done - record_from) % record_every == 0:
                    out[:, :, k_out] = h.bold(lv, lq).transpose(0, 2, 1)
                    k_out += 1
                done += 1
    if not np.all(np.isfinite(out)) or not np.all(np.isfinite(z_state)):
        raise FloatingPointError("the simulation diverged (non-finite values)")
    return out


def run_noise(rngs: list[list[np.random.Generator]], n_regions: int, n_vars: int) -> NoiseSource:
    """Noise for (P, M) runs, each run drawing from its own generator (so a run's noise is its own)."""
    def draw(k: int) -> np.ndarray:
        parts = [[g.standard_normal((k, n_regions, n_vars)) for g in row] for row in rngs]
        return np.stack([np.stack(row, axis=-1) for row in parts], axis=1)
    return draw


def paired_noise(rngs: list[np.random.Generator], n_conditions: int, n_regions: int, n_vars: int) -> NoiseSource:
    """Noise shared by every condition of a repeat (common random numbers): M = conditions × repeats."""
    def draw(k: int) -> np.ndarray:
        reps = np.stack([g.standard_normal((k, n_regions, n_vars)) for g in rngs], axis=-1)  # (k, N, V, K)
        return np.tile(reps, (1, 1, 1, n_conditions))[:, None]
    return draw
