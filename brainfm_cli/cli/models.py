"""``brainfm models``: the registered models, their input spaces and whether weights are at hand."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from brainfm_cli.cli._output import fit_columns, stderr

app = typer.Typer(help="List registered models, or show one model card.", no_args_is_help=False, rich_markup_mode=None,
                  invoke_without_command=True, add_completion=False)


@app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print the list as TSV on standard output.")] = False,
) -> None:
    """List registered models: family, input space, size, embedding width, weights."""
    if ctx.invoked_subcommand is not None:
        return
    from brainfm_cli.models import list_models

    rows = list_models()
    if tsv:
        import pandas as pd

        from brainfm_cli.io.files import write_tsv

        write_tsv(pd.DataFrame(rows), "-")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="brainfm models ('brainfm models show NAME' for the card)", box=None, pad_edge=False,
                  caption="weights: shipped with brainfm; published (the authors': --weights FILE|hf://…); pretrain "
                          "(none: train your own, or --weights)")
    for c in ("name", "family", "regions", "TR", "window", "weights"):
        table.add_column(c, no_wrap=True)
    for r in rows:
        weights = r["weights"] if r["weights"] in ("shipped",) else \
            ("pretrain" if str(r["weights"]).startswith("none") else "published")  # a local file or hf:// source
        table.add_row(r["name"], r["family"], str(r["regions"]), f"{r['tr']:g} s", str(r["window"]), weights)
    Console(highlight=False).print(fit_columns(table))


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Model name or card YAML.")],
         json_out: Annotated[Optional[bool], typer.Option("--json", help="Print the card as JSON.")] = False) -> None:
    """Print a model card."""
    import json

    import yaml

    from brainfm_cli.models import get_card

    card = get_card(name)
    data = card.to_dict()
    data["weights_present"] = card.weights_file is not None
    if card.sizes:
        from brainfm_cli.models import size_parameters

        data["size_parameters"] = size_parameters(card)
    typer.echo(json.dumps(data, indent=2) if json_out else yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
