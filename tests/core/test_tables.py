"""adla.tables.format_table: the one formatter behind the commands' tables."""

from __future__ import annotations

import pytest

from adla.tables import format_table


def test_header_rule_two_spaces_and_trimmed_lines():
    out = format_table([("variant", "time (s)", "status"), ("runtime", "4.01", "ok"), ("one-tile", "5.25", "FAILED")])
    assert out.splitlines() == [
        "variant   time (s)  status",
        "--------  --------  ------",
        "runtime   4.01      ok",
        "one-tile  5.25      FAILED",
    ]


def test_right_aligned_columns_and_no_rule():
    out = format_table([("metric", "A", "B"), ("AP", 12.3, "-"), ("AP50 car", "5.0", 100.0)], align="lr", rule=False)
    assert out.splitlines() == [
        "metric       A      B",
        "AP        12.3      -",
        "AP50 car   5.0  100.0",
    ]


def test_short_last_rule_for_a_free_text_column():
    out = format_table([("step", "time (s)", "result"), ("export", "5", "adla.onnx, parity ok")], align="lrl",
                       short_last_rule=True)
    assert out.splitlines()[1] == "------  --------  ------"
    assert out.splitlines()[2] == "export         5  adla.onnx, parity ok"


def test_bad_input():
    assert format_table([]) == ""
    with pytest.raises(ValueError, match="cells"):
        format_table([("a", "b"), ("only one",)])
    with pytest.raises(ValueError, match="align"):
        format_table([("a",)], align="c")
