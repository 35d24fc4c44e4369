"""TSV/JSON reading and writing shared by every command: atomic writes, ``-`` for stdin/stdout.

Outputs are written to a temporary name in the destination folder and renamed into place only
when complete, so an error or Ctrl-C never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import pandas as pd

from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.nifti import NIFTI_EXT

NA = "n/a"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes every output 0600


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a file for writing that appears at ``path`` only once fully written."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh


@contextlib.contextmanager
def atomic_group(paths: list[str | Path]) -> Iterator[list[Path]]:
    """Temporary paths for several files that must appear together (a TSV and its sidecar)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def check_output_folder(out: Path, files: tuple[str, ...], overwrite: bool) -> None:
    """A report folder: not a file, and not already holding the command's outputs unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise BrainfmError("the output exists and is not a folder", path=out, fix="choose a folder for -o")
    existing = [f for f in files if (out / f).exists()]
    if existing and not overwrite:
        raise BrainfmError(f"the folder already holds {', '.join(existing)}", path=out,
                           fix="pass --overwrite or choose another -o")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pathlib values so ``json.dump`` accepts them."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n"


def write_json(obj: Any, path: str | Path) -> None:
    """Write pretty JSON atomically."""
    with atomic_write(path) as fh:
        fh.write(json_text(obj))


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BrainfmError("file not found", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BrainfmError(f"not valid JSON ({exc})", path=path, fix="repair or delete the file") from None


def tsv_text(df: pd.DataFrame, float_format: str = "%.7g") -> str:
    """A DataFrame as BIDS TSV text: tab-separated, ``n/a`` for missing, no index column."""
    buf = io.StringIO()
    df.to_csv(buf, sep="\t", index=False, na_rep=NA, float_format=float_format, lineterminator="\n")
    return buf.getvalue()


def write_tsv(df: pd.DataFrame, path: str | Path, float_format: str = "%.7g") -> None:
    """Write a TSV atomically, or to standard output when ``path`` is ``-``."""
    text = tsv_text(df, float_format)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_write(path) as fh:
        fh.write(text)


def read_tsv(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` as missing) from a file, or from standard input when ``path`` is ``-``."""
    source: Any = sys.stdin if str(path) == "-" else Path(path)
    name = "<stdin>" if str(path) == "-" else str(path)
    if source is not sys.stdin and not source.is_file():
        raise BrainfmError("file not found", path=name, fix="check the path")
    try:
        return pd.read_csv(source, sep="\t", na_values=[NA], keep_default_na=False, **kwargs)
    except pd.errors.EmptyDataError:
        if source is sys.stdin:
            raise BrainfmError("nothing arrived on standard input", path=name,
                               fix="pipe a TSV into the command, e.g. 'brainfm embed … -o - | brainfm probe - …', "
                               "and check that the command before the pipe succeeded") from None
        raise BrainfmError("the TSV file is empty", path=name, fix="regenerate it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BrainfmError(f"not a readable TSV ({exc})", path=name,
                           fix="write tab-separated values with a header row") from None


DATA_EXT = NIFTI_EXT + (".tsv.gz", ".tsv", ".json")  # BIDS data files' extensions


def split_ext(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of a file name, double extensions (``.nii.gz``, ``.tsv.gz``) kept whole."""
    for ext in DATA_EXT:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot else (name, "")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a BIDS data file: same name with ``.json`` for its extension."""
    path = Path(path)
    stem, ext = split_ext(path.name)
    return path.with_name(stem + ".json") if ext in DATA_EXT else path.with_suffix(".json")


class TsvStream:
    """Rows appended to an open TSV (header first), flushed as they come: memory stays flat for long outputs."""

    def __init__(self, handle: IO, float_format: str = "%.7g"):
        self.handle = handle
        self.float_format = float_format
        self.columns: list[str] | None = None
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        if self.columns is None:
            self.columns = list(df.columns)
            self.handle.write("\t".join(self.columns) + "\n")
        elif list(df.columns) != self.columns:
            raise ValueError("rows with different columns in one TSV")
        df.to_csv(self.handle, sep="\t", index=False, header=False, na_rep=NA, float_format=self.float_format,
                  lineterminator="\n")
        self.handle.flush()
        self.rows += len(df)
