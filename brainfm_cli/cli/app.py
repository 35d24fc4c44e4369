"""The ``brainfm`` command: registers each subcommand (thin modules that parse, validate and call one task)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from brainfm_cli import __version__
from brainfm_cli.cli import (atlases, embed, forecast, gradients, models, networks, parcellate, perturb, pretrain,
                             probe, reconstruct, simulate, voxels)
from brainfm_cli.cli._errors import BrainfmGroup

app = typer.Typer(
    name="brainfm",
    cls=BrainfmGroup,
    help="Brain-dynamics foundation models for your own fMRI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text: "[/SUB]" or "[0, 1]" is not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("parcellate")(parcellate.parcellate)
app.command("atlases")(atlases.atlases)
app.command("gradients")(gradients.gradients)
app.command("embed")(embed.embed)
app.add_typer(models.app, name="models")
app.command("pretrain")(pretrain.pretrain)
app.command("probe")(probe.probe)
app.command("reconstruct")(reconstruct.reconstruct)
app.add_typer(forecast.app, name="forecast")
app.command("perturb")(perturb.perturb)
app.command("networks")(networks.networks)
app.command("simulate")(simulate.simulate)
app.command("voxels")(voxels.voxels)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"brainfm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Brain-dynamics foundation models for your own fMRI."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
