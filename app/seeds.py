"""Seed spread of a detector comparison (the demo's ``--seeds``): mean +- std per metric and the paired
difference between two models.

Training a small detector from scratch moves its AP by several points from seed to seed, more than
many published gains. ``adla demo --seeds N`` trains each assigner N times (seed k for both, so the
runs pair up) and reports, per metric: each model's mean and sample standard deviation, and the
paired difference (model B - model A, seed by seed) with its mean, standard deviation, range and 95 %
confidence interval (Student's t over the seeds: the interval that would hold the mean difference of
infinitely many seeds 95 % of the time, if the seeds' differences are roughly normal), and in how many
seeds model B is ahead: a difference that changes sign from seed to seed is not a result.
"""

from __future__ import annotations

import math
from pathlib import Path

from adla.tables import format_table

KEYS = ("AP", "AP50", "AP75", "AP_vt", "AP_t", "AP_s", "train/AP50")


def metric_rows(runs: dict[str, list[dict]], classes: list[str] | None = None) -> list[str]:
    """The metric names present in every run of ``runs`` (``AP50 <class>`` for per-class AP50), in order."""
    keys = [k for k in KEYS if all(_value(m, k) is not None for ms in runs.values() for m in ms)]
    for c in classes or []:
        key = f"AP50 {c}"
        if all(_value(m, key) is not None for ms in runs.values() for m in ms):
            keys.append(key)
    return keys


def _value(metrics: dict, key: str) -> float | None:
    """A metric in % or None when undefined (-1: no ground truth in that range)."""
    if key.startswith("AP50 "):
        v = metrics.get("per_class_AP50", {}).get(key[5:])
    else:
        v = metrics.get(key)
    if v is None or not isinstance(v, (int, float)) or v < 0:
        return None
    return 100.0 * float(v)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


# Student's t, two-sided 95 % (the 0.975 quantile), for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the table to 30, then the
    Cornish-Fisher expansion around the normal's 1.95996, within 0.001 there)."""
    if df < 1:
        raise ValueError(f"need at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """The 95 % confidence interval of the mean of ``values`` (t-based; (nan, nan) for one value)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, std = mean_std(values)
    half = t975(n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def summarize(runs: dict[str, list[dict]], baseline: str, candidate: str,
              classes: list[str] | None = None) -> list[dict]:
    """One row per metric: {"metric", baseline: (mean, std), candidate: (mean, std), "diff": (mean, std),
    "diff_range": (min, max), "diff_ci": 95 % interval of the mean difference, "ahead": seeds where
    candidate > baseline, "values": {name: [per-seed values]}}. Runs are paired by position (seed)."""
    if len(runs[baseline]) != len(runs[candidate]):
        raise ValueError("paired runs need the same number of seeds for both models")
    rows = []
    for key in metric_rows(runs, classes):
        # every value is defined: metric_rows keeps only the metrics present in every run
        per = {name: [float(_value(m, key)) for m in ms] for name, ms in runs.items()}  # type: ignore[arg-type]
        diffs = [c - b for b, c in zip(per[baseline], per[candidate])]
        rows.append({"metric": key, baseline: mean_std(per[baseline]), candidate: mean_std(per[candidate]),
                     "diff": mean_std(diffs), "diff_range": (min(diffs), max(diffs)), "diff_ci": mean_ci(diffs),
                     "ahead": sum(d > 0 for d in diffs), "values": per})
    return rows


def format_seed_table(rows: list[dict], baseline: str, candidate: str, labels: dict[str, str] | None = None,
                      seeds: int | None = None) -> str:
    """The summary as an aligned text table (metrics in %)."""
    labels = labels or {}
    lb, lc = labels.get(baseline, baseline), labels.get(candidate, candidate)
    head = ["metric", f"{lb} mean+-std", f"{lc} mean+-std", f"{lc} - {lb} (paired)", "diff 95% CI",
            "diff min..max", f"{lc} ahead"]
    table = [head]
    for r in rows:
        n = len(r["values"][candidate])
        lo, hi = r.get("diff_ci", (math.nan, math.nan))
        ci = "-" if math.isnan(lo) else f"{lo:+.1f}..{hi:+.1f}"
        table.append([r["metric"], _pm(r[baseline]), _pm(r[candidate]), _pm(r["diff"], signed=True), ci,
                      f"{r['diff_range'][0]:+.1f}..{r['diff_range'][1]:+.1f}", f"{r['ahead']}/{n}"])
    lines = [format_table(table, align="lr")]
    if seeds is not None:
        lines.append(f"({seeds} seed(s) per model; std is the sample standard deviation over seeds; the 95% CI "
                     "of the paired difference is Student's t over the seeds)")
    return "\n".join(lines)


def _pm(ms: tuple[float, float], signed: bool = False) -> str:
    return f"{ms[0]:+.1f} +- {ms[1]:.1f}" if signed else f"{ms[0]:.1f} +- {ms[1]:.1f}"


def plot_seeds(rows: list[dict], baseline: str, candidate: str, path: str | Path,
               labels: dict[str, str] | None = None) -> Path:
    """Per-metric dots (one per seed) and mean bars for both models, and the paired differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adla.io import atomic_path

    labels = labels or {}
    names = [r["metric"] for r in rows]
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(names) + 4), 4.2),
                                  gridspec_kw={"width_ratios": [3, 2]})
    for j, (model, colour, dx) in enumerate(((baseline, "tab:blue", -0.18), (candidate, "tab:orange", 0.18))):
        means = [r[model][0] for r in rows]
        ax.bar([i + dx for i in range(len(rows))], means, width=0.34, color=colour, alpha=0.45,
               label=labels.get(model, model))
        for i, r in enumerate(rows):
            vals = r["values"][model]
            ax.scatter([i + dx] * len(vals), vals, color=colour, s=14, zorder=3)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title("per seed (dots) and mean (bars)")
    ax.legend()
    for i, r in enumerate(rows):
        diffs = [c - b for b, c in zip(r["values"][baseline], r["values"][candidate])]
        axd.scatter([i] * len(diffs), diffs, color="tab:green", s=14, zorder=3)
        lo, hi = r.get("diff_ci", (math.nan, math.nan))
        err = r["diff"][1] if math.isnan(lo) else (hi - lo) / 2
        axd.errorbar([i], [r["diff"][0]], yerr=[err], color="black", capsize=4, fmt="o", ms=4)
    axd.axhline(0, color="grey", lw=0.8)
    axd.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    axd.set_title(f"{labels.get(candidate, candidate)} - {labels.get(baseline, baseline)}, paired by seed "
                  "(bar: 95% CI)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
