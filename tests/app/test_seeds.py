"""Seed spread: mean +- sample std per model and the paired difference, by hand."""

import math

import pytest

from adla.app.seeds import format_seed_table, mean_ci, mean_std, plot_seeds, summarize, t975


def _m(ap50: float, car: float, vt: float = -1.0) -> dict:
    return {"AP50": ap50, "AP_vt": vt, "per_class_AP50": {"car": car, "bus": -1.0}}


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_students_t_quantile_and_interval():
    assert t975(1) == 12.706 and t975(9) == 2.262 and t975(30) == 2.042  # the table
    assert t975(40) == pytest.approx(2.021, abs=0.001) and t975(120) == pytest.approx(1.980, abs=0.001)
    lo, hi = mean_ci([1.0, 2.0, 3.0])  # mean 2, std 1, n 3: 2 +- 4.303 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert all(math.isnan(v) for v in mean_ci([1.0]))


def test_paired_difference_per_seed():
    runs = {"maxiou": [_m(0.10, 0.30), _m(0.20, 0.40)], "adla": [_m(0.25, 0.35), _m(0.30, 0.50)]}
    rows = summarize(runs, "maxiou", "adla", classes=["car", "bus"])
    assert [r["metric"] for r in rows] == ["AP50", "AP50 car"]  # AP_vt and bus undefined (-1): left out
    ap50 = rows[0]
    assert ap50["maxiou"] == pytest.approx((15.0, math.sqrt(50.0)))
    assert ap50["adla"] == pytest.approx((27.5, math.sqrt(12.5)))
    assert ap50["diff"] == pytest.approx((12.5, math.sqrt(12.5)))  # paired: +15 and +10
    assert ap50["diff_range"] == pytest.approx((10.0, 15.0))
    half = 12.706 * math.sqrt(12.5) / math.sqrt(2)  # t(1 df) x std / sqrt(2 seeds)
    assert ap50["diff_ci"] == pytest.approx((12.5 - half, 12.5 + half))
    table = format_seed_table(rows, "maxiou", "adla", {"maxiou": "max-IoU", "adla": "ADLA"}, seeds=2)
    assert "ADLA - max-IoU (paired)" in table and "+12.5 +- 3.5" in table and "+10.0..+15.0" in table
    assert "diff 95% CI" in table and "-19.3..+44.3" in table
    assert ap50["ahead"] == 2 and rows[1]["ahead"] == 2  # ADLA ahead in both seeds, on both metrics
    assert "ADLA ahead" in table and table.splitlines()[2].rstrip().endswith("2/2")
    mixed = summarize({"a": [_m(0.1, 0.3), _m(0.2, 0.4)], "b": [_m(0.3, 0.3), _m(0.1, 0.4)]}, "a", "b", ["car"])
    assert [r["ahead"] for r in mixed] == [1, 0]  # +20 then -10; a tie is not ahead


def test_unpaired_runs_are_refused():
    with pytest.raises(ValueError, match="same number of seeds"):
        summarize({"a": [_m(0.1, 0.1)], "b": []}, "a", "b")


def test_plot_is_written(tmp_path):
    runs = {"maxiou": [_m(0.10, 0.30), _m(0.20, 0.40)], "adla": [_m(0.25, 0.35), _m(0.30, 0.50)]}
    path = plot_seeds(summarize(runs, "maxiou", "adla", ["car"]), "maxiou", "adla", tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
