#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy on the TensorRT code against tensorrt-stubs, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ADLA_EXTRAS=${ADLA_EXTRAS:-dev,ray} bash scripts/install.sh   # the tests run the Ray path for real
. .venv/bin/activate
ruff check adla train export runtime app tests
# the real TensorRT 10.3 / 10.16 / 11.4 Python bindings (17 MB, no GPU) for tests/export/test_trt_api.py
python scripts/trt_api_check.py --install-only
python tests/export/trt_stubs.py .venv/trt-stubs && MYPYPATH=.venv/trt-stubs mypy --config-file .venv/trt-stubs/mypy.ini export/tensorrt_build.py runtime/backends.py
python -m pytest -q "$@"
