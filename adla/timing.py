"""Wall-clock timing of repeated calls, for the benchmark commands (median and spread over runs).

``torch.utils.benchmark.Timer`` times one statement in blocks of calls; the benchmarks here need every
single call's time (median, p10-p90, min/max) and several callables interleaved round by round, so that
a drift in the machine's load hits each alike. ``sync`` (e.g. ``torch.cuda.synchronize``) runs right
before the clock starts and right before it stops, so queued GPU work is neither counted nor missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def time_call(fn: Callable[[], T], *, sync: Callable[[], object] | None = None) -> tuple[float, T]:
    """Seconds one call of ``fn`` takes, and what it returned."""
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0, out


def time_interleaved(fns: Sequence[Callable[[], object]], *, warmup: int = 0, runs: int = 1,
                     sync: Callable[[], object] | None = None, alternate: bool = True,
                     progress: Callable[[range], Iterable[int]] | None = None) -> list[list[float]]:
    """Per callable, the seconds of each of its ``runs`` timed calls.

    First ``warmup`` untimed rounds, then ``runs`` timed ones; a round calls every callable once, in the
    given order, or (``alternate``) backwards in every other timed round (A B, B A, A B, ...).
    ``progress`` wraps the timed rounds (e.g. a tqdm bar).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    rounds = range(runs)
    for r in progress(rounds) if progress is not None else rounds:
        order = reversed(range(len(fns))) if alternate and r % 2 else range(len(fns))
        for i in order:
            times[i].append(time_call(fns[i], sync=sync)[0])
    return times


def time_callable(fn: Callable[[], object], *, warmup: int = 0, runs: int = 1,
                  sync: Callable[[], object] | None = None) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn``, after ``warmup`` untimed ones."""
    return time_interleaved([fn], warmup=warmup, runs=runs, sync=sync)[0]
