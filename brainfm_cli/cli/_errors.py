"""The one error path of every command: library errors become ``error: … / fix: …`` on standard error.

Exit status: 0 success; 1 any input, option value or run that brainfm rejects (``BrainfmError``, and the
``ValueError``/``KeyError``/``TypeError`` raised by brainfm's own checks); 2 a command line that does not parse
(the parser's usage errors: unknown option, missing argument); 130 interrupted (Ctrl-C), outputs left untouched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from brainfm_cli.cli._options import expand_entity_lists, name_placeholders
from brainfm_cli.cli._output import setup_logging, stderr
from brainfm_cli.errors import BrainfmError

PACKAGE = Path(__file__).resolve().parent.parent
_ARGV: list[str] = []  # the arguments of the running command, for outputs that record their command line


def command_line() -> str:
    """The running command as a shell would take it (``brainfm probe … --target age``)."""
    import shlex

    return shlex.join(["brainfm", *_ARGV])


def raised_by_brainfm(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a ``raise`` statement of brainfm's own code (one of its checks), rather than
    from a library or from a bug (an error the interpreter raised inside brainfm keeps its traceback)."""
    import linecache

    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not Path(filename).resolve().is_relative_to(PACKAGE):
        return False
    return linecache.getline(filename, tb.tb_lineno).strip().startswith("raise ")


def report(exc: BaseException) -> None:
    """Print an error the way every command does."""
    from rich.markup import escape

    if isinstance(exc, BrainfmError):
        text = str(exc)
    else:
        text = f"{exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}\n  fix: check the options and " \
               "inputs of this command (see its --help)"
    stderr.print(f"[bold red]error:[/] {escape(text)}")


class BrainfmGroup(TyperGroup):
    """The root command group: sets up logging once and maps every command's exceptions to exit codes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name_placeholders(self)

    def main(self, args=None, *rest, **kwargs):
        _ARGV[:] = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return super().main(expand_entity_lists(list(_ARGV)), *rest, **kwargs)

    def invoke(self, ctx: typer.Context):
        setup_logging()
        try:
            return super().invoke(ctx)
        except BrainfmError as exc:
            report(exc)
            raise typer.Exit(1) from None
        except (ValueError, KeyError, TypeError) as exc:
            if not raised_by_brainfm(exc):
                raise
            report(exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print("interrupted: no partial output was left behind")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader of our standard output went away (`| head`)
            sys.stderr.close()
            raise typer.Exit(1) from None
