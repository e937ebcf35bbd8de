#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy on the TensorRT code against tensorrt-stubs and on the
# whole package, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ADLA_EXTRAS=${ADLA_EXTRAS:-dev,ray} bash scripts/install.sh   # the tests run the Ray path for real
. .venv/bin/activate
ruff check adla train export runtime app tests
# the real TensorRT 10.3 / 10.16 / 11.4 Python bindings (17 MB, no GPU) for tests/export/test_trt_api.py
python scripts/trt_api_check.py --install-only
python tests/export/trt_stubs.py .venv/trt-stubs && MYPYPATH=.venv/trt-stubs mypy --config-file .venv/trt-stubs/mypy.ini export/tensorrt_build.py runtime/backends.py
# mypy over the whole package: mypy does not follow pyproject's package-dir mapping, so it reads a tree of
# links that lays the folders out as the installed package (adla/train -> train/, ...)
M=.venv/mypy-src && rm -rf "$M" && mkdir -p "$M/adla" && ln -s "$PWD"/adla/* "$M/adla/" \
  && for d in train export runtime app; do ln -s "$PWD/$d" "$M/adla/$d"; done \
  && (cd "$M" && MYPYPATH=. mypy -p adla --ignore-missing-imports --follow-imports=silent --no-error-summary \
      --disable-error-code annotation-unchecked)
python -m pytest -q "$@"
