"""``brainfm atlases``: every atlas brainfm knows, with its size, space, networks, origin and licence."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from brainfm_cli.cli._output import stderr


def atlases(
    fetch: Annotated[Optional[str], typer.Option(
        "--fetch", help="Download a nilearn-fetchable atlas (e.g. schaefer400-7) into the brainfm data folder.")] = None,
    tsv: Annotated[bool, typer.Option("--tsv", help="Print the list as TSV on standard output.")] = False,
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

    table = Table(title=f"brainfm atlases (cache: {data_dir()})")
    for col in ("name", "regions", "space", "networks", "coordinates", "kind", "availability", "licence"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("name", "regions", "space", "networks", "coordinates", "kind",
                                            "availability", "licence")))
    Console(width=max(Console().width, 140)).print(table)
