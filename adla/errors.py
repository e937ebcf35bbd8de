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


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line.

    A DataLoader worker re-raises an error as the same type with the message "Caught X in DataLoader
    worker process N. Original Traceback ...": the original message is the traceback's last line.
    """
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), text)
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.split(".")[-1] == type(exc).__name__ else last
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
