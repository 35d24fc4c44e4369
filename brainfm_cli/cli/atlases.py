"""``brainfm atlases``: every atlas brainfm knows, with its size, template space and networks (``--tsv`` adds its
origin, licence and where the template's name comes from)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from brainfm_cli.cli._output import fit_columns, stderr


def atlases(
    fetch: Annotated[Optional[str], typer.Option(
        "--fetch", metavar="NAME",
        help="Download a nilearn-fetchable atlas (e.g. schaefer400-7) into the brainfm data folder.")] = None,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print the list as TSV on standard output, with each atlas's "
                                                   "source, licence and where its template's name comes from.")] = False,
) -> None:
    """List available atlases (offline ones and nilearn-fetchable ones)."""
    from brainfm_cli._resources import data_dir
    from brainfm_cli.atlases import list_atlases, load_atlas

    if fetch:
        atlas = load_atlas(fetch)
        stderr.print(f"{atlas.name}: {atlas.n_regions} regions, cached under {data_dir()}")
        return
    rows = list_atlases()
    if tsv:
        import pandas as pd

        from brainfm_cli.io.files import write_tsv

        write_tsv(pd.DataFrame(rows), "-")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"brainfm atlases (cache: {data_dir()})", box=None, pad_edge=False)
    for col in ("name", "regions", "space", "networks", "kind", "availability"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        regions = str(r["regions"]).split(" ")[0] if r["availability"] == "offline" else "<N>"
        example = r["availability"].removeprefix("nilearn fetch (e.g. ").rstrip(")")
        availability = "offline" if r["availability"] == "offline" else f"online (--fetch {example})"
        table.add_row(r["name"], regions, r["space"], "yes" if r["networks"] else "-", r["kind"], availability)
    console = Console(highlight=False)
    console.print(fit_columns(table))
    console.print("space: the template as the atlas's own source names it. 'brainfm atlases --tsv' adds where that "
                  "comes from, each atlas's source and its licence.", markup=False)
