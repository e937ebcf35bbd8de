#!/usr/bin/env bash
# Install (if needed) and run the demo on built-in synthetic data; extra arguments go to `adla demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
adla demo "$@"
