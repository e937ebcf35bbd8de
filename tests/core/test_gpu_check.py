"""scripts/gpu_check.sh, the one prepared GPU check (issue 11), end to end in its CPU dry run.

No machine here has a GPU; this runs every step of the script at tiny sizes on the CPU so that the script
a lent GPU machine will run once cannot rot: each step's table must reach the summary file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

# What each step prints when it ran: one line of its table (or of the step's skip report).
STEP_TABLES = {
    0: "packages: rasterio",
    1: "ADLA / max-IoU step time:",
    2: "assign bench:",
    3: "speed-up (one-tile / runtime):",
    4: "adds nothing at inference",
    5: "step 5: SKIPPED: --skip-kit",
}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--skip-kit", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    for n, marker in STEP_TABLES.items():
        assert f"== step {n}:" in summary, f"step {n} missing from the summary"
        section = summary.split(f"== step {n}:")[1].split("\n== ")[0]
        assert marker in section, f"step {n}'s table is not in the summary:\n{section}"
        if n < 5:
            assert f"step {n}: ok in" in section, f"step {n} did not run cleanly:\n{section}"
    assert "== targets ==" in summary and "== status ==" in summary
    for n in (1, 2, 3, 4):
        assert "no result" not in summary.split("== targets ==")[1].splitlines()[n]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"train_step", "assign", "model"}
    assert results["train_step"]["rows"][0]["images_per_s"] > 0
    assert (out / "log.txt").stat().st_size > 0
    assert not list(tmp_path.glob("adla_gpu_check.*")), "the scratch folder was not removed"
