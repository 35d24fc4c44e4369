"""The one exception brainfm raises for bad data or a failed run; the CLI turns it into exit status 1."""

from __future__ import annotations

from pathlib import Path


class BrainfmError(Exception):
    """A failure in the user's data or run: says what went wrong, where, and how to fix it.

    ``path`` names the file or folder at fault; ``fix`` is one sentence telling the user what to do.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(str(self))

    def __reduce__(self):  # keep path and fix across process boundaries (joblib workers)
        return (_rebuild, (self.message, self.path, self.fix))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


def _rebuild(message, path, fix):
    return BrainfmError(message, path=path, fix=fix)
