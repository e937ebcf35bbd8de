"""Importing adla changes no process-wide state; the ``adla`` command sets what it needs in ``main()``."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, os, sys, warnings
import numpy as np
from PIL import Image
import onnx, onnxruntime, rasterio, torch, torchvision  # what third-party imports set is theirs
before = (dict(os.environ), list(map(repr, warnings.filters)))
import importlib, pkgutil
import adla
for mod in ["adla.app.cli", "adla.app.demo", "adla.train.loop", "adla.export.onnx_export",
            "adla.runtime.pipeline", "adla.runtime.readers", "adla.runtime.ray_infer"]:
    importlib.import_module(mod)
from adla.runtime.readers import SceneReader
Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    SceneReader(sys.argv[1]).close()
# GDAL_CACHEMAX is adla's for its own GDAL reads, set on the first read (runtime/readers.py)
env_after = {k: v for k, v in os.environ.items()
             if before[0].get(k) != v and not k.startswith(("GDAL_", "PROJ_"))}
out = {"env": env_after, "filters_same": list(map(repr, warnings.filters)) == before[1],
       "warned": [w.category.__name__ for w in caught]}
from adla.app.cli import process_settings
process_settings()
out["omp"] = os.environ.get("OMP_WAIT_POLICY")
out["filters_same_after_main"] = list(map(repr, warnings.filters)) == before[1]
print(json.dumps(out))
"""


def test_importing_adla_sets_nothing_process_wide_and_main_does(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    res = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "plain.png")], capture_output=True,
                         text=True, env=env, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["env"] == {} and out["filters_same"]  # imports and a library read leave the process alone
    assert "NotGeoreferencedWarning" in out["warned"]  # rasterio's own warning reaches a library caller
    assert out["omp"] == "PASSIVE" and not out["filters_same_after_main"]  # the command sets both
