#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy on the TensorRT code against tensorrt-stubs, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check adla train export runtime tests
python tests/export/trt_stubs.py .venv/trt-stubs && MYPYPATH=.venv/trt-stubs mypy --config-file .venv/trt-stubs/mypy.ini export/tensorrt_build.py runtime/backends.py
python -m pytest -q "$@"
