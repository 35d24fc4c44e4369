"""``brainfm perturb``: alter a region's or network's input in silico and read how the model's forecast and
embedding respond (beside a VAR); ``brainfm perturb optimise REST --target TASK``: BrainLM v1's optimised
perturbation between two states."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def perturb(
    inputs: Annotated[list[str], typer.Argument(
        help="Region time-series TSVs or folders; 'optimise REST…' (with --target) runs the optimised perturbation.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="A model name, card YAML, a pretrain run's or a forecast run's model.yaml.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the response TSVs, sidecar and report.")],
    region: Annotated[Optional[list[str]], typer.Option("--region", help="Region(s) to perturb; repeatable.")] = None,
    network: Annotated[Optional[list[str]], typer.Option("--network", help="Network(s) to perturb; repeatable.")] = None,
    all_networks: Annotated[bool, typer.Option(
        "--all-networks", help="Perturb each network in turn (network_response.tsv, with a VAR beside the model and "
                               "the simulator's truth when the inputs come from 'brainfm simulate').")] = False,
    mode: Annotated[str, typer.Option("--mode", metavar="scale|clamp|add",
                                      help="How the input changes over the context.")] = "add",
    value: Annotated[float, typer.Option("--value", metavar="NUMBER", help="The factor, level or shift (z units).")] = 1.0,
    target: Annotated[Optional[list[str]], typer.Option(
        "--target", help="optimise: the target state's runs (repeatable).")] = None,
    steps: Annotated[int, typer.Option("--steps", metavar="N", help="optimise: gradient steps.")] = 200,
    penalty: Annotated[float, typer.Option("--penalty", metavar="NUMBER", help="optimise: L2 penalty on the "
                                           "perturbation.")] = 1e-2,
    truth: Annotated[Optional[str], typer.Option(
        "--truth", metavar="FILE", help="A simulator's stimulation_response.tsv (default: found beside the "
                                        "inputs).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Checkpoint (default: the card's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", metavar="N", help="Windows per forward pass.")] = 8,
    device: o.Device = "auto",
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Perturb regions or networks in silico and report how the model's forecast and embedding respond."""
    from brainfm_cli.errors import BrainfmError
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.perturb import PerturbOptions, optimise, perturb as run_task

    optimising = inputs[0] == "optimise"
    if optimising:
        inputs = inputs[1:]
        if not inputs or not target:
            raise BrainfmError("perturb optimise needs the resting-state runs and --target with the target state's",
                               fix="brainfm perturb optimise REST… --target TASK… --model NAME -o DIR")
        opts = PerturbOptions(model=model, weights=weights, all_networks=True, seed=seed, batch_size=batch_size,
                              device=device, filters=RunFilter(participant_label, session, task, run), tr=tr,
                              missing=missing_regions, overwrite=overwrite)
        with progress("perturb optimise", quiet) as bar:
            table = optimise(inputs, target, output, opts, steps=steps, penalty=penalty, progress=bar.update)
        stderr.print(f"largest perturbation: {', '.join(table['region'].head(5))}; wrote perturbation.tsv, "
                     f"perturbation.json and report.html to {output}", markup=False)
        return
    if target:
        raise BrainfmError("--target belongs to 'perturb optimise'", fix="brainfm perturb optimise REST… --target TASK…")
    opts = PerturbOptions(model=model, weights=weights, regions=tuple(region or ()), networks=tuple(network or ()),
                          all_networks=all_networks, mode=mode, value=value, truth=truth, seed=seed,
                          batch_size=batch_size, device=device, filters=RunFilter(participant_label, session, task, run),
                          tr=tr, missing=missing_regions, overwrite=overwrite)
    with progress("perturb", quiet) as bar:
        run_task(inputs, output, opts, progress=bar.update)
    stderr.print(f"wrote the responses, sidecar and report.html to {output}", markup=False)
