"""The ground truth ``perturb`` is judged against: every region's BOLD response to stimulating each network.

Protocol: from the stationary regime, a constant input is added to the neural equation of every region
of one network (step onset at t = 0). The response is the difference from an unstimulated run driven
by the same noise (common random numbers), averaged over ``repeats`` noise draws; it is reported as a
time course at the TR and as its mean over a window after onset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainfm_cli.tasks.simulate.dynamics import Hemodynamics, Network, NeuralModel, State, integrate, paired_noise


@dataclass(frozen=True)
class StimulationProtocol:
    amplitude: float
    window: tuple[float, float] = (60.0, 120.0)
    repeats: int = 2
    burn_in: float = 100.0

    def describe(self, model: NeuralModel, dt: float) -> dict:
        return {
            "input": f"constant {self.amplitude:g} added to the neural equation (the 'u' term of {model.name}) of "
                     "every region of the stimulated network, switched on at t = 0 and kept on",
            "amplitude": self.amplitude,
            "baseline": "an unstimulated run driven by the same noise (common random numbers)",
            "start": f"{self.burn_in:g} s of unstimulated simulation from rest, shared by all conditions",
            "repeats": self.repeats,
            "window_s": list(self.window),
            "integration_step_s": dt,
            "response": "mean over repeats of (stimulated - unstimulated) BOLD, percent signal change",
        }


def stimulation_response(model: NeuralModel, net: Network, members: list[np.ndarray], protocol: StimulationProtocol,
                         rngs: list[np.random.Generator], *, dt: float, tr: float,
                         hemo: Hemodynamics = Hemodynamics()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Responses for one coupling matrix (``net`` with P = 1) to stimulating each boolean region set in ``members``.

    Returns (window-mean response [N, S], time course [S, T, N], sample times [T]), BOLD in % change.
    """
    n_regions = net.shape[1]
    k = protocol.repeats
    n_cond = len(members) + 1
    burn = int(round(protocol.burn_in / dt))
    every = int(round(tr / dt))
    state = State.rest(1, n_regions, model.n_vars, k)
    integrate(model, net, state, paired_noise(rngs, 1, n_regions, model.n_vars), dt=dt, n_steps=burn,
              record_every=every, record_from=burn, hemo=hemo)
    state = state.tile(n_cond)
    drive = np.zeros((1, n_regions, n_cond * k))
    for c, m in enumerate(members, start=1):
        drive[0, np.asarray(m, bool), c * k:(c + 1) * k] = protocol.amplitude
    n_after = int(round(protocol.window[1] / dt))
    bold = integrate(model, net, state, paired_noise(rngs, n_cond, n_regions, model.n_vars), dt=dt,
                     n_steps=n_after, record_every=every, record_from=every - 1, hemo=hemo, drive=drive)
    bold = bold[0].reshape(n_cond, k, -1, n_regions).mean(axis=1)  # (conditions, T, N)
    course = np.concatenate([np.zeros((n_cond - 1, 1, n_regions)), bold[1:] - bold[:1]], axis=1)
    times = np.arange(course.shape[1]) * every * dt
    inside = (times >= protocol.window[0] - 1e-9) & (times <= protocol.window[1] + 1e-9)
    return course[:, inside].mean(axis=1).T, course, times
