"""Plain aligned text tables: the one formatter behind every table the commands print.

    metric      max-IoU  ADLA
    ----------  -------  ----
    AP             11.6  16.1
    AP50 car       26.5  31.8
"""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[Sequence[object]], *, align: str | None = None, rule: bool = True,
                 short_last_rule: bool = False) -> str:
    """``rows`` (the header first, then the body; cells through ``str``) as aligned plain text.

    Each column is as wide as its widest cell, columns are separated by two spaces and every line is
    right-trimmed. ``align``: one letter per column, ``l`` (left, the default) or ``r`` (right, for
    numbers); the last letter holds for the columns after it, so ``"lr"`` is a left-aligned first column
    and right-aligned others. ``rule``: a line of dashes under the header, as wide as each column;
    ``short_last_rule``: under the last column only as wide as its heading (a free-text last column).
    """
    table = [[str(c) for c in r] for r in rows]
    if not table:
        return ""
    n = len(table[0])
    if any(len(r) != n for r in table):
        raise ValueError(f"every row needs {n} cells (as many as the header), got {sorted({len(r) for r in table})}")
    letters = align or "l"
    if set(letters) - {"l", "r"}:
        raise ValueError(f"align takes the letters l and r, got {align!r}")
    right = [letters[min(i, len(letters) - 1)] == "r" for i in range(n)]
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
             for row in table]
    if rule:
        dashes = ["-" * w for w in widths]
        if short_last_rule and n:
            dashes[-1] = "-" * len(table[0][-1])
        lines.insert(1, "  ".join(dashes).rstrip())
    return "\n".join(lines)
