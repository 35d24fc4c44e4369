"""Turn library errors into one clear line on standard error and exit status 1 (data contracts §5)."""

from __future__ import annotations

import functools
import logging
import sys

import typer
from rich.console import Console

from brainfm_cli.errors import BrainfmError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def setup_logging(verbose: int = 0) -> None:
    """Send brainfm's log records (warnings by default) to standard error through rich."""
    from rich.logging import RichHandler

    logger = logging.getLogger("brainfm")
    logger.handlers[:] = [RichHandler(console=stderr, show_time=False, show_path=False, markup=False)]
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def handle_errors(command):
    """Decorate a typer command so a ``BrainfmError`` prints its message and exits with status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            return command(*args, **kwargs)
        except BrainfmError as exc:
            stderr.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print("interrupted: no partial output was left behind")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(1) from None

    return wrapper
