"""Ground-truth BOLD simulation: neural dynamics on an atlas's regions, Balloon–Windkessel hemodynamics,
participants whose phenotypes change the dynamics in known ways, written as a BIDS dataset."""

from brainfm_cli.tasks.simulate.dataset import SimulationConfig, SimulationResult, simulate_dataset

__all__ = ["SimulationConfig", "SimulationResult", "simulate_dataset"]
