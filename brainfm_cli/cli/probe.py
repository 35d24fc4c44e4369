"""``brainfm probe``: leakage-free evaluation of embeddings against a phenotype, beside the FC baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._errors import command_line
from brainfm_cli.cli._output import progress, stderr


def probe(
    target: Annotated[str, typer.Option("--target", help="participants.tsv column to predict.")],
    participants: Annotated[Path, typer.Option(
        "--participants", help="BIDS participants.tsv (participant_id, then phenotypes).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder (metrics, predictions, report).")],
    embeddings: Annotated[Optional[list[str]], typer.Argument(
        help="Embedding TSVs from 'brainfm embed' ('-' reads standard input). Omit them to evaluate the FC "
             "baseline of --timeseries alone.")] = None,
    name: Annotated[Optional[list[str]], typer.Option(
        "--name", metavar="NAME", help="What to call each embeddings file in the results, one per file in order "
                                       "(default: the model in its sidecar, else the file name; standard input has "
                                       "neither: name it, e.g. --name brainlm). Repeatable.")] = None,
    task: Annotated[Optional[str], typer.Option(
        "--task", help="regression or classification (default: inferred from the column).")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="fc (needs --timeseries; the default when it is given) or none.")] = None,
    timeseries: Annotated[Optional[list[str]], typer.Option(
        "--timeseries", help="Region time series the embeddings came from ('brainfm parcellate' output): "
                             "the FC baseline. Repeatable.")] = None,
    folds: Annotated[int, typer.Option("--folds", help="Outer folds.")] = 5,
    repeats: Annotated[int, typer.Option("--repeats", help="Repeats of the grouped CV (fresh shuffles).")] = 10,
    permutations: Annotated[int, typer.Option(
        "--permutations", help="Target permutations for the p-value (0: none).")] = 100,
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="participants.tsv column (e.g. site) whose groups never straddle a split.")] = None,
    confounds: Annotated[Optional[str], typer.Option(
        "--confounds", help="Comma-separated participants.tsv columns regressed out of the features in each "
                            "training fold (e.g. age,sex,site).")] = None,
    aggregate: Annotated[str, typer.Option(
        "--aggregate", help="mean: average a participant's rows before fitting; none: fit on rows, average "
                            "predictions per participant.")] = "mean",
    head: Annotated[str, typer.Option(
        "--head", help="linear (ridge / logistic) or mlp (scikit-learn, one hidden layer).")] = "linear",
    seed: o.Seed = 0,
    n_jobs: Annotated[int, typer.Option("--n-jobs", "-j", help="Parallel workers over folds (-1: all cores); "
                                                              "the results do not depend on it.")] = 1,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Predict a phenotype from embeddings with grouped, nested CV, next to the functional-connectivity baseline."""
    from brainfm_cli.tasks.probe import ProbeOptions, probe as run

    options = ProbeOptions(task=task, baseline=baseline, timeseries=tuple(timeseries or ()), folds=folds,
                           repeats=repeats, permutations=permutations, group_by=group_by,
                           confounds=tuple(c.strip() for c in (confounds or "").split(",") if c.strip()),
                           aggregate=aggregate, head=head, seed=seed, n_jobs=n_jobs, names=tuple(name or ()),
                           overwrite=overwrite, command=command_line())
    with progress("probe", quiet) as bar:
        result = run(embeddings or [], participants, target, output, options, progress=bar.update)
    _print_summary(result, output)


def _print_summary(result, output) -> None:
    from rich.console import Console
    from rich.table import Table

    from brainfm_cli.tasks.probe import scores_table, verdicts
    from brainfm_cli.tasks.probe.figures import clip_range, clipped

    s = result.setup
    scores = scores_table(result)  # the report's table, word for word
    table = Table(title=f"{result.settings['target']} ({s.task}), n = {len(s.participants)}")
    for col in scores.columns:
        table.add_column(col, justify="left" if col in ("model", "metric") else "right")
    for row in scores.itertuples(index=False):
        table.add_row(*row)
    console = Console(highlight=False, markup=False)
    console.print(table)
    if clipped(result.metrics):
        stderr.print(f"note: intervals are clipped to the metric's range ({clip_range(s.task)}); one that reaches "
                     "it is wide, usually for few participants", markup=False)
    for line in verdicts(result)[len(result.models):]:
        console.print(line)
    for note in result.notes:
        stderr.print(f"note: {note}", markup=False)
    stderr.print(f"wrote metrics.tsv, predictions.tsv, comparisons.tsv, metrics.json and report.html to {output}",
                 markup=False)
