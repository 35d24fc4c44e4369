"""Everything the commands print goes through here: data to standard output, progress and messages to standard
error (rich never redirects standard output, so ``-o - | next-command`` works in a terminal too)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from rich.console import Console

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def setup_logging() -> None:
    """Send brainfm's log records (warnings and above) to standard error through rich."""
    from rich.logging import RichHandler

    logger = logging.getLogger("brainfm")
    logger.handlers[:] = [RichHandler(console=stderr, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class _Bar:
    """What a task sees of the progress display: ``advance``, ``total`` and a status ``text``."""

    def __init__(self, progress, task_id):
        self._progress, self._id = progress, task_id

    def advance(self, *_args) -> None:
        self._progress.advance(self._id)

    def total(self, n: int | None) -> None:
        self._progress.update(self._id, total=n)

    def update(self, completed: int, total: int | None = None, text: str | None = None) -> None:
        self._progress.update(self._id, completed=completed, total=total,
                              **({"description": text} if text is not None else {}))


@contextlib.contextmanager
def progress(label: str, quiet: bool = False, total: int | None = None, status: str = "") -> Iterator[_Bar]:
    """A transient progress bar on standard error labelled ``label`` (a spinner until the total is known)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(label), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr, disable=quiet,
                  transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
        yield _Bar(bar, bar.add_task(status, total=total))


def fit_columns(table, flexible: int = 12):
    """A rich table whose short columns keep their full width on a narrow terminal (names, counts, flags never
    turn into '…'); only columns wider than ``flexible`` characters give way."""
    for column in table.columns:
        cells = [str(c) for c in column._cells] + [str(column.header)]
        width = max(len(c) for c in cells)
        if width <= flexible or column.header == "name":
            column.min_width = width
        else:
            column.overflow = "ellipsis"
    return table
