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


# Placeholders in --help: what a value is, in the words of the field (flags show none).
METAVARS = {
    "tr": "SECONDS", "high_pass": "HZ", "low_pass": "HZ", "smoothing_fwhm": "MM", "time_limit": "DURATION",
    "model": "NAME", "size": "NAME", "atlas": "NAME|FILE", "roi_atlas": "NAME|FILE", "weights": "FILE|hf://REPO",
    "participant_label": "LABEL", "session": "LABEL", "run": "LABEL", "space": "SPACE", "device": "DEVICE",
    "dtype": "DTYPE", "pooling": "POOLING", "aggregate": "none|mean", "missing_regions": "error|zero",
    "confounds": "STRATEGY", "arch": "KEY=VALUE", "objective": "KEY=VALUE", "target": "COLUMN",
    "group_by": "COLUMN", "head": "linear|mlp", "baseline": "fc|none", "mask_ratio": "RATIO",
    "val_fraction": "FRACTION", "min_coverage": "FRACTION", "seed": "N", "roi_labels": "LABELS",
    "output": "PATH", "participants": "FILE", "timeseries": "PATH", "train": "PATH", "val": "PATH",
}
BY_TYPE = {"path": "PATH", "integer": "N", "float": "NUMBER", "text": "TEXT"}


def name_placeholders(command) -> None:
    """Give every option of ``command`` (and its subcommands) a placeholder that says what the value is."""
    for sub in getattr(command, "commands", {}).values():
        name_placeholders(sub)
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) or param.metavar is not None or param.name in ("help", "version"):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            param.metavar = param.name.upper()
            continue
        kind = getattr(getattr(param, "type", None), "name", "text")
        meta = METAVARS.get(param.name) or BY_TYPE.get(kind, "VALUE")
        if param.name == "task":  # a BIDS entity, except probe's regression|classification
            meta = "regression|classification" if command.name == "probe" else "LABEL"
        if param.name == "confounds" and command.name == "probe":
            meta = "COLUMNS"
        param.metavar = meta + ("..." if getattr(param, "multiple", False) or param.nargs == -1 else "")


ENTITY_FLAGS = ("--participant-label", "--session", "--task", "--run")


def expand_entity_lists(args: list[str]) -> list[str]:
    """BIDS-App filters take several values after one flag (``--participant-label 01 02``): the values that
    follow, up to the next option, become repeated flags. A value that is an existing path stays an input."""
    command = next((a for a in args if not a.startswith("-")), None)
    out, i = [], 0
    while i < len(args):
        out.append(args[i])
        flag = args[i]
        i += 1
        if flag in ENTITY_FLAGS and not (flag == "--task" and command == "probe") and i < len(args):
            out.append(args[i])
            i += 1
            while i < len(args) and not args[i].startswith("-") and not Path(args[i]).exists():
                out += [flag, args[i]]
                i += 1
    return out


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
