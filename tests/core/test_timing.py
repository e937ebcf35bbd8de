"""adla.timing: warm-up, timed runs, interleaving and the sync hook."""

from __future__ import annotations

from adla.timing import time_call, time_callable, time_interleaved


def test_time_call_returns_seconds_and_result_with_sync_around_the_call():
    log: list[str] = []
    seconds, out = time_call(lambda: log.append("fn") or 7, sync=lambda: log.append("sync"))
    assert out == 7 and seconds >= 0.0
    assert log == ["sync", "fn", "sync"]


def test_warmup_is_untimed_and_rounds_alternate():
    calls: list[str] = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = time_interleaved(fns, warmup=1, runs=3, progress=lambda rounds: list(rounds))
    assert [len(t) for t in times] == [3, 3] and all(t >= 0.0 for ts in times for t in ts)
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab"
    calls.clear()
    time_interleaved(fns, runs=2, alternate=False)
    assert "".join(calls) == "abab"


def test_time_callable():
    n = []
    times = time_callable(lambda: n.append(1), warmup=2, runs=4)
    assert len(times) == 4 and len(n) == 6
