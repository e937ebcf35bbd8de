"""User-facing errors: one exception type whose message names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class AdlaError(Exception):
    """An error caused by the user's input (a file, a config, an argument).

    The CLI prints ``str(err)`` without a traceback and exits with status 2.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
