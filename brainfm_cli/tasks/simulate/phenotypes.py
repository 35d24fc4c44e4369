"""Participants' phenotypes and the known ways they change the dynamics (the planted effects)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfm_cli.tasks.simulate.connectome import has_network, normalise


@dataclass(frozen=True)
class PhenotypeEffects:
    """The planted effects, applied to an individual's coupling C and global gain G.

    age: C_ij ×= exp(−age_effect · (age − age_min)/10 · d_ij/100 mm), then C is rescaled to largest
    eigenvalue 1 — long-range edges weaken relative to short ones, the overall gain stays;
    diagnosis = 1: C_ij ×= diagnosis_factor for i, j both in ``diagnosis_network``;
    sex = M: G ×= male_gain. ``control_score`` is drawn at random and changes nothing (a negative control).
    """

    age_min: float = 20.0
    age_max: float = 80.0
    age_effect: float = 0.2
    diagnosis_factor: float = 0.7
    male_gain: float = 1.02
    reference_age: float = 50.0

    def describe(self, network: str) -> dict:
        return {
            "age": {
                "target": "coupling matrix C (long edges relative to short ones)",
                "formula": "C_ij *= exp(-age_effect * (age - age_min) / 10 * d_ij / 100); then C /= largest "
                           "eigenvalue of C (coupling moves from long to short edges)",
                "age_effect": self.age_effect, "age_min": self.age_min, "distance_units": "mm",
                "expected_fc_change": "long-range FC decreases and short-range FC increases with age",
            },
            "diagnosis": {
                "target": f"coupling within the {network} network",
                "formula": "C_ij *= diagnosis_factor if diagnosis == 1 and i, j both in network",
                "network": network, "diagnosis_factor": self.diagnosis_factor,
                "expected_fc_change": f"within-{network} FC is lower when diagnosis = 1",
            },
            "sex": {
                "target": "global coupling gain G",
                "formula": "G *= male_gain if sex == 'M'", "male_gain": self.male_gain,
                "expected_fc_change": "FC slightly higher overall for M",
            },
            "control_score": {"target": "none", "formula": "no effect on the dynamics (a negative control)"},
            "reference_participant": {"age": self.reference_age, "sex": "F", "diagnosis": 0,
                                      "individual_variation": "none"},
        }


def diagnosis_network(networks: list[str]) -> str:
    """The network a diagnosis alters: the default-mode network when the atlas has one, else the largest."""
    names = [n for n in networks if has_network(n)]
    if not names:
        raise ValueError("no networks")
    for n in dict.fromkeys(names):
        if "default" in n.lower() or n.lower() in ("dmn", "dm"):
            return n
    counts = pd.Series(names).value_counts(sort=False)
    return str(counts.index[int(np.argmax(counts.to_numpy()))])


def draw_participants(n: int, rng: np.random.Generator, effects: PhenotypeEffects) -> pd.DataFrame:
    """``participants.tsv`` rows: uniform ages, balanced sex and diagnosis, a random control score."""
    ids = [f"sub-{i + 1:02d}" if n < 100 else f"sub-{i + 1:03d}" for i in range(n)]
    age = np.round(rng.uniform(effects.age_min, effects.age_max, n)).astype(int)
    sex = np.array(["F", "M"] * ((n + 1) // 2))[:n][rng.permutation(n)]
    diagnosis = (np.arange(n) % 2)[rng.permutation(n)]
    score = np.round(rng.normal(100, 15, n)).astype(int)
    return pd.DataFrame({"participant_id": ids, "age": age, "sex": sex, "diagnosis": diagnosis,
                         "control_score": score})


def participants_json(effects: PhenotypeEffects, network: str) -> dict:
    """The BIDS ``participants.json`` describing each column, with the effect each has in the simulation."""
    return {
        "participant_id": {"Description": "participant label"},
        "age": {"Description": f"age; simulated effect: weakens long-range relative to short-range coupling "
                f"(factor exp(-{effects.age_effect} * (age - {effects.age_min:g}) / 10 * distance / 100 mm), then "
                "rescaled to the same largest eigenvalue)",
                "Units": "year"},
        "sex": {"Description": f"sex; simulated effect: global coupling gain x{effects.male_gain:g} for M",
                "Levels": {"F": "female", "M": "male"}},
        "diagnosis": {"Description": f"binary diagnosis; simulated effect: coupling within the {network} network "
                      f"x{effects.diagnosis_factor:g} when 1", "Levels": {"0": "control", "1": "diagnosed"}},
        "control_score": {"Description": "random score with no effect on the simulated dynamics "
                          "(a negative control for probes)", "Units": "arbitrary"},
    }


def apply_effects(coupling: np.ndarray, gain: float, dist: np.ndarray, in_network: np.ndarray, row: dict,
                  effects: PhenotypeEffects) -> tuple[np.ndarray, float]:
    """An individual's coupling and gain after the planted phenotype effects."""
    age_factor = np.exp(-effects.age_effect * (float(row["age"]) - effects.age_min) / 10 * dist / 100)
    c = normalise(coupling * age_factor)
    if int(row["diagnosis"]) == 1:
        pair = in_network[:, None] & in_network[None, :]
        c = np.where(pair, c * effects.diagnosis_factor, c)
    g = gain * (effects.male_gain if row["sex"] == "M" else 1.0)
    return c, g
