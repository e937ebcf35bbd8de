"""Value ranges of config fields, checked when a config dataclass is built.

Each config dataclass lists its ranges in a ``RANGES`` class table and calls ``check_ranges`` from
``__post_init__``; adding a field with a range is one line in that table. Specs:

    ">= 1"   "> 0"   "<= 1"   "< 1"        a bound
    "[0, 1]"  "(0, 1]"  "[0, 1)"  "(0, 1)"  an interval, closed or open at either end
    "in a|b|c"                             one of these strings

``None`` always passes (optional fields), and a tuple passes when every element does.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from adla.errors import AdlaError

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class ConfigValueError(AdlaError, ValueError):
    """A config field outside its range. ``field`` is the field's name, ``reason`` the rest."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field} {reason}")


def _in_range(value: Any, spec: str) -> bool:
    spec = spec.strip()
    if spec.startswith("in "):
        return value in {s.strip() for s in spec[3:].split("|")}
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return False
    if spec[0] in "[(" and spec[-1] in "])":
        lo, hi = (float(s) for s in spec[1:-1].split(","))
        low_ok = value >= lo if spec[0] == "[" else value > lo
        high_ok = value <= hi if spec[-1] == "]" else value < hi
        return low_ok and high_ok
    for op in (">=", "<=", ">", "<"):  # two-character operators first
        if spec.startswith(op):
            return _OPS[op](value, float(spec[len(op):]))
    raise ValueError(f"bad range spec {spec!r}")


def _describe(spec: str) -> str:
    spec = spec.strip()
    if spec.startswith("in "):
        return f"be one of {[s.strip() for s in spec[3:].split('|')]}"
    if spec[0] in "[(":
        return f"be in {spec}"
    return f"be {spec}"


def check_ranges(cfg: Any, ranges: Mapping[str, str]) -> None:
    """Raise ConfigValueError naming the first field of dataclass ``cfg`` whose value is out of range."""
    names = {f.name for f in fields(cfg)}
    for name, spec in ranges.items():
        if name not in names:
            raise ValueError(f"{type(cfg).__name__}.RANGES names no field {name!r}")
        value = getattr(cfg, name)
        if value is None:
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if not _in_range(v, spec):
                got = f"{v!r}" if values is not value else f"{v!r} in {list(value)!r}"
                raise ConfigValueError(name, f"must {_describe(spec)}, got {got}")
