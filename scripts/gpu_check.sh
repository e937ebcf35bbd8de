#!/usr/bin/env bash
# The one prepared GPU check (issue 11): CUDA training with AMP, the CUDA assigner, fp16 tiled inference
# and the inference-cost comparison, FP32 vs FP16 vs INT8 (issue 18, step 6), in one run of under 10
# minutes, every table into one folder.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine (DEVICE=cuda, the default)
#   bash scripts/gpu_check.sh --device cpu     # dry run at tiny sizes, here (about a minute)
#   bash scripts/gpu_check.sh --stage          # here, once, before a session with a GPU: see below
# Options: --out DIR (default $OUT when set, else gpu_check_out), --skip-kit (step 5 off), --kit-iters N,
# --budget S (seconds for the whole run; default 580 on CUDA). Environment: DEVICE, OUT, PYTHON, SKIP_KIT,
# KIT_ITERS, BUDGET, KIT_DIR, AIRBUS_SCENE, STAGE_DIR.
#
# Install-time notes: what the script expects
# - A Python with torch: $PYTHON, else .venv/bin/python (scripts/install.sh), else python3. On the lent GPU
#   machine (library device README, KINDS.md) python3 is /opt/torch/.venv with torch 2.11 + CUDA 13,
#   torchvision, numpy, pillow, pyyaml, tqdm, matplotlib, onnx, onnxscript, onnxruntime (CPU only),
#   tensorboard; it has NO rasterio, faster-coco-eval or pycocotools, NO network, and NO ../shared.
# - adla itself needs no install there: when `import adla.app` fails, the script builds a shim folder
#   (symlinks mapping adla.train/export/runtime/app onto train/, export/, runtime/, app/, as pyproject does) and
#   puts it on PYTHONPATH.
# - The missing packages and the real data travel in runs/gpu_check_stage/ (runs/ is git-ignored), made
#   here by `--stage`: wheels for cp312 manylinux x86_64 (rasterio + affine, cligj, click-plugins;
#   faster-coco-eval; pycocotools), the Airbus 2560 px scene of the README's bench, the KIT AIS frames
#   converted at 0.33x. Then, from a session with a device: run(command="bash scripts/gpu_check.sh",
#   carry=["runs/gpu_check_stage"], timeout_s=540). The script installs the wheels into a scratch folder
#   (pip --no-index --target) when rasterio / faster_coco_eval do not import.
# - Without the stage: steps 1, 2 and 4 run; step 3 needs rasterio (every scene reader is rasterio's;
#   without it the step is reported and skipped); step 5 needs faster-coco-eval and the KIT frames.
# - Every step runs under `timeout` (budgets below sum to under 10 minutes on CUDA); a step that fails or
#   times out is reported and the next one runs. Output: summary.txt (every table), log.txt (all output,
#   progress bars included), results.json (the steps' JSON), all in the out folder.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEVICE=${DEVICE:-cuda}
OUT_DIR=${OUT:-gpu_check_out}
SKIP_KIT=${SKIP_KIT:-0}
KIT_ITERS=${KIT_ITERS:-}
BUDGET=${BUDGET:-}
STAGE=0
STAGE_DIR=${STAGE_DIR:-runs/gpu_check_stage}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --skip-kit) SKIP_KIT=1; shift ;;
    --kit-iters) KIT_ITERS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --stage) STAGE=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu_check.sh: --device must be cpu or cuda" >&2; exit 2 ;; esac

SHARED_DATA=${SHARED_DATA:-$ROOT/../shared/data}
KIT_DIR=${KIT_DIR:-$SHARED_DATA/kit_ais}
AIRBUS_NAME=ef8ff443-e09b-405d-a432-3b5bde0a278b.jpg   # the README's bench scene
AIRBUS_SCENE=${AIRBUS_SCENE:-$SHARED_DATA/airbus_aircraft/valid/$AIRBUS_NAME}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "$ROOT/.venv/bin/python"; return
  fi
  echo python3
}
PY=$(pick_python)

# ---------------------------------------------------------------------------------------------------
# --stage: here, with the package index and ../shared; fills runs/gpu_check_stage (about 30 MB).
if [ "$STAGE" = 1 ]; then
  set -e
  mkdir -p "$STAGE_DIR/wheels" "$STAGE_DIR/data"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${STAGE_PY_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$STAGE_DIR/wheels" \
    "rasterio>=1.3" affine cligj click-plugins "faster-coco-eval>=1.6" "pycocotools>=2.0.7"
  [ -f "$AIRBUS_SCENE" ] && cp "$AIRBUS_SCENE" "$STAGE_DIR/data/airbus_2560.jpg"
  if [ -d "$KIT_DIR" ]; then
    for split in train:MOS* val:MunichStreet02-*; do
      name=${split%%:*}; glob=${split#*:}
      rm -rf "$STAGE_DIR/data/kit/${name}_images"
      "$PY" -m adla.app.cli data convert --format yolo --images "$KIT_DIR" --labels "$KIT_DIR" \
        --names "$KIT_DIR/aerial.names" --include "$glob" --downscale 0.33 --out "$STAGE_DIR/data/kit/$name.json"
    done
  fi
  du -sh "$STAGE_DIR"/* && echo "staged; carry [\"$STAGE_DIR\"] in the device call"
  exit 0
fi

# ---------------------------------------------------------------------------------------------------
# Sizes. cuda: the issue's; cpu: a dry run of every code path at tiny sizes.
if [ "$DEVICE" = cuda ]; then
  : "${BUDGET:=580}"; : "${KIT_ITERS:=2000}"; KIT_SET=(data.num_workers=6)
  CFG_ADLA=configs/aitod_retinanet_r50_adla.yaml; CFG_MAXIOU=configs/aitod_retinanet_r50_maxiou.yaml
  TS_ARGS=(--size 800 --batch 2 --objects 300 --steps 200 --warmup 10)
  SMOKE_SET=(optim.iters=30 data.batch_size=2 data.num_workers=4); SYNTH=(--size 800 --train 16 --val 2 --classes 8)
  ASSIGN_ARGS=(--gts 10 100 1000 5000 --size 800 --repeats 5)
  TILE_ARGS=(--tile 800 --batch 16 --workers 4 --score 0.3 --runs 2); SYNTH_SIDES=(8192); SMALL_SIDE=2560
  MODEL_ARGS=(--input-size 800 800 --runs 50 --warmup 10 --backends torch)
  T_SETUP=60; T1=120; T2=60; T3=130; T4=75; T5_MIN=60  # 445 s; step 5 gets what is left of BUDGET
  Q_SIZE=512; Q_ARGS=(--tile 512 --batch 8 --workers 4 --score 0.3 --runs 3 --tile-runs 50); T6=120  # step 6: 120 s more than before
else
  : "${BUDGET:=600}"; : "${KIT_ITERS:=4}"; KIT_SET=()
  CFG_ADLA=configs/cpu_small_adla.yaml; CFG_MAXIOU=configs/cpu_small_maxiou.yaml
  TS_ARGS=(--size 96 --batch 1 --objects 10 --steps 1 --warmup 0)
  SMOKE_SET=(optim.iters=1 data.batch_size=1 data.num_workers=0); SYNTH=(--size 96 --train 2 --val 1 --classes 3)
  ASSIGN_ARGS=(--gts 10 50 --size 128 --repeats 1)
  TILE_ARGS=(--tile 128 --batch 4 --workers 1 --score 0.3 --runs 1); SYNTH_SIDES=(); SMALL_SIDE=320
  MODEL_ARGS=(--input-size 96 96 --runs 2 --warmup 0 --backends torch)
  T_SETUP=120; T1=120; T2=60; T3=120; T4=120; T5_MIN=30
  Q_SIZE=96; Q_ARGS=(--tile 96 --batch 4 --workers 1 --score 0.3 --runs 3 --tile-runs 3); T6=120
  # One thread: on a small shared machine two threads that wait on each other are up to 30x slower.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
fi

mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/summary.txt
LOG=$OUT_DIR/log.txt
WORK=$(mktemp -d "${TMPDIR:-/tmp}/adla_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$SUMMARY"; : >"$LOG"
START=$SECONDS
STATUS=()

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - (SECONDS - START))); }

# run_step N TITLE TIMEOUT CMD...: prints the command's stdout (the tables) into summary and log, stderr
# (progress) into the log only; reports ok / FAILED / TIMED OUT with seconds, and never stops the script.
run_step() {
  local n=$1 title=$2 limit=$3; shift 3
  local t0=$SECONDS rc
  say ""
  say "== step $n: $title =="
  say "\$ $*"
  echo "== step $n: $title" >>"$LOG"
  if [ "$limit" -lt 1 ]; then
    say "step $n: SKIPPED: no time left in the ${BUDGET} s budget"; STATUS+=("step $n: skipped (no time)"); return 0
  fi
  if [ "$(type -t "$1")" = function ]; then  # a step function runs in its own bash, under the timeout
    set -- bash -c "$(declare -p "${STEP_VARS[@]}"); $(declare -f adla "${STEP_FUNCS[@]}"); $*"
  fi
  timeout --kill-after=10 "$limit" "$@" 2>>"$LOG" | tee -a "$SUMMARY" "$LOG"
  rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0))
  if [ "$rc" = 0 ]; then
    say "step $n: ok in ${dt} s"; STATUS+=("step $n: ok (${dt} s) $title")
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    say "step $n: TIMED OUT after ${limit} s (see log.txt)"; STATUS+=("step $n: TIMED OUT (${limit} s) $title")
  else
    say "step $n: FAILED (exit $rc) after ${dt} s; last lines of its output:"
    tail -n 8 "$LOG" | sed 's/^/  | /' | tee -a "$SUMMARY"
    STATUS+=("step $n: FAILED (exit $rc) $title")
  fi
  return 0
}
skip_step() {
  say ""; say "== step $1: $2 =="; say "step $1: SKIPPED: $3"; STATUS+=("step $1: skipped ($3) $2")
}
adla() { "$PY" -m adla.app.cli "$@"; }
# what the step functions see in their own bash (see run_step)
STEP_VARS=(PY ROOT WORK DEVICE STAGE_DIR KIT_DIR AIRBUS_SCENE CFG_ADLA CFG_MAXIOU TS_ARGS SMOKE_SET SYNTH
           ASSIGN_ARGS TILE_ARGS SYNTH_SIDES SMALL_SIDE MODEL_ARGS KIT_ITERS KIT_SET Q_SIZE Q_ARGS)
STEP_FUNCS=(setup step1 step3 step5 step6)
lim() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }

# ---------------------------------------------------------------------------------------------------
# step 0: environment, adla importable (shim if need be), staged wheels, untrained checkpoints.
setup() {
  set -e
  if ! "$PY" -c "import rasterio, faster_coco_eval" 2>/dev/null && ls "$STAGE_DIR"/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
      "$STAGE_DIR"/wheels/*.whl >/dev/null
    echo "installed staged wheels: $(cd "$STAGE_DIR/wheels" && ls | tr '\n' ' ')"
  fi
  if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('adla.app') is None)" 2>/dev/null; then
    mkdir -p "$WORK/shim/adla"
    for f in "$ROOT"/adla/*; do ln -s "$f" "$WORK/shim/adla/"; done
    for s in train export runtime app; do ln -s "$ROOT/$s" "$WORK/shim/adla/$s"; done
    echo "adla not installed for $PY: using a shim of symlinks on PYTHONPATH"
  fi
  "$PY" - "$DEVICE" "$WORK/ckpt" "$CFG_MAXIOU" "$CFG_ADLA" <<'EOF'
import importlib, platform, sys
import torch
from adla.checkpoint import save_checkpoint
from adla.config import load_config
from adla.model import build_detector
device, out, *configs = sys.argv[1:]
print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
have = {}
for m in ("rasterio", "faster_coco_eval", "onnxruntime"):
    try:
        have[m] = getattr(importlib.import_module(m), "__version__", "yes")
    except ImportError:
        have[m] = "NO"
print("packages: " + ", ".join(f"{m} {v}" for m, v in have.items()))
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("--device cuda but torch sees no CUDA device")
for cfg_path in configs:  # untrained weights: steps 3 and 4 time the network, not what it learnt
    cfg = load_config(cfg_path, [])
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    path = save_checkpoint(f"{out}/{cfg.assigner.name}.pt", cfg, model,
                           [f"class{i}" for i in range(cfg.model.num_classes)])
    print(f"checkpoint {path}: {cfg.model.backbone}, {cfg.model.num_classes} classes, untrained")
EOF
}
# The staged wheels and the shim (made by step 0, if needed) come first; folders that stay empty are ignored.
# PYTHONSAFEPATH: `python -m`/`-c` must not put the repo root first on sys.path, where adla/ (without
# adla/train) would hide the shim; an installed adla does not need the working folder either.
export PYTHONPATH="$WORK/site:$WORK/shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1
say "adla GPU check, device $DEVICE, budget ${BUDGET} s, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  | sed 's/^/nvidia-smi: /' | tee -a "$SUMMARY"
run_step 0 "environment, adla on the path, untrained checkpoints" "$T_SETUP" setup
have_ckpt() { [ -f "$WORK/ckpt/maxiou.pt" ] && [ -f "$WORK/ckpt/adla.pt" ]; }
has_module() { "$PY" -c "import $1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------------
# step 1: training step, AMP, both assigners interleaved on the same batch; then the real loop briefly.
step1() {
  local rc=0
  adla bench train-step --config "$CFG_ADLA" "${TS_ARGS[@]}" --device "$DEVICE" --amp --json "$WORK/train_step.json" || rc=$?
  echo
  set -e
  echo "adla train smoke test (the real loop: DataLoader, AMP, GradScaler, checkpoint) on synthetic images:"
  local t0=$SECONDS
  # data synth + train in one interpreter (one start-up less)
  "$PY" -c "import sys; from adla.app.cli import main; a = sys.argv[1:]; i = a.index('--'); \
sys.exit(main(a[:i]) or main(a[i + 1:]))" data synth --out "$WORK/synth" "${SYNTH[@]}" -- \
    train "$CFG_ADLA" --out "$WORK/smoke" --device "$DEVICE" --no-eval --set \
    data.train_ann="$WORK/synth/train.json" data.train_images="$WORK/synth" \
    data.val_ann="$WORK/synth/val.json" data.val_images="$WORK/synth" "${SMOKE_SET[@]}" >/dev/null
  local n=${SMOKE_SET[0]#optim.iters=}
  echo "adla train $(basename "$CFG_ADLA"): $n iterations in $((SECONDS - t0)) s wall (start-up and data synthesis included); $(ls "$WORK/smoke"/*.pt | xargs -n1 basename | tr '\n' ' ')"
  return $rc
}
run_step 1 "training step on $DEVICE (AMP on CUDA), ADLA vs max-IoU" "$(lim $T1)" step1

# step 2: the assigners alone at 118k anchors (800 px).
run_step 2 "assigner bench on $DEVICE" "$(lim $T2)" adla bench assign --device "$DEVICE" "${ASSIGN_ARGS[@]}" --json "$WORK/assign.json"

# step 3: tiled inference, batched runtime vs one tile at a time, .pt model (fp16 autocast on CUDA).
step3() {
  local scenes=() side s rc=0 airbus=""
  [ -f "$AIRBUS_SCENE" ] && airbus=$AIRBUS_SCENE
  [ -f "$STAGE_DIR/data/airbus_2560.jpg" ] && airbus=$STAGE_DIR/data/airbus_2560.jpg
  if [ -n "$airbus" ] && [ "$DEVICE" = cuda ]; then
    scenes+=("$airbus")
  else
    [ "$DEVICE" = cuda ] && echo "(no Airbus scene here: a synthetic ${SMALL_SIDE} px scene stands in)"
    SYNTH_SIDES=("$SMALL_SIDE" "${SYNTH_SIDES[@]}")
  fi
  for side in "${SYNTH_SIDES[@]}"; do
    "$PY" -c "import sys; from pathlib import Path; from adla.runtime.bench import write_synthetic_scene as w; \
w(Path(sys.argv[1]), int(sys.argv[2]))" "$WORK/scene_$side.tif" "$side" || return 1
    scenes+=("$WORK/scene_$side.tif")
  done
  for s in "${scenes[@]}"; do  # a scene that fails is reported by its exit status; the next one still runs
    adla bench tiled "$s" --model "$WORK/ckpt/adla.pt" --device "$DEVICE" "${TILE_ARGS[@]}" || rc=$?
    echo
  done
  echo "model: the untrained ADLA checkpoint of step 0 (few detections at score 0.3): the figures time reads,"
  echo "batching, fp16 inference (autocast on CUDA) and the merge of what there is, not a trained model's output"
  return $rc
}
if ! has_module rasterio; then
  skip_step 3 "tiled inference on $DEVICE" "rasterio is not importable (every scene reader is rasterio's); stage wheels with --stage and carry $STAGE_DIR"
elif ! have_ckpt; then
  skip_step 3 "tiled inference on $DEVICE" "no checkpoint (step 0 failed)"
else
  run_step 3 "tiled inference on $DEVICE: batched runtime vs one tile at a time" "$(lim $T3)" step3
fi

# step 4: baseline vs ADLA at inference: parameters, FLOPs, graphs, interleaved latency ratio.
if have_ckpt; then
  run_step 4 "inference cost on $DEVICE: ADLA vs max-IoU" "$(lim $T4)" adla bench model \
    "$WORK/ckpt/maxiou.pt" "$WORK/ckpt/adla.pt" "${MODEL_ARGS[@]}" --out "$WORK/model_bench"
else
  skip_step 4 "inference cost on $DEVICE: ADLA vs max-IoU" "no checkpoint (step 0 failed)"
fi

# step 6 (before step 5, which takes what is left): FP32 vs FP16 vs INT8. ONNX models of the untrained ADLA
# checkpoint (INT8: QDQ, calibrated on the Airbus scene or a synthetic one); on CUDA with TensorRT, the three
# engines (INT8 from the QDQ model, the TensorRT 11 path), their side-by-side latency and the AP of each on
# the staged KIT validation frames (untrained: the AP exercises the path, it is not a result).
step6() {
  local rc=0 m=$WORK/ckpt/adla.pt e=$WORK/precision cal=$WORK/precision/calib scene val p
  mkdir -p "$cal"
  scene=$STAGE_DIR/data/airbus_2560.jpg; [ -f "$scene" ] || scene=$AIRBUS_SCENE
  if [ ! -f "$scene" ] || [ "$DEVICE" = cpu ]; then
    scene=$WORK/precision/scene.tif
    "$PY" -c "import sys; from pathlib import Path; from adla.runtime.bench import write_synthetic_scene as w; \
w(Path(sys.argv[1]), int(sys.argv[2]))" "$scene" "$SMALL_SIDE" || return 1
  fi
  "$PY" -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').save(sys.argv[2])" \
    "$scene" "$cal/scene.png" || return 1
  adla export "$m" --format onnx --input-size "$Q_SIZE" "$Q_SIZE" --no-check --out "$e/adla.onnx" || return 1
  adla export "$e/adla.onnx" --int8 --calib-images "$cal" --calib-batch 1 --calib-max 16 --calib-method minmax \
    --out "$e/adla.int8.onnx" || rc=$?
  adla export "$e/adla.onnx" --fp16 --out "$e/adla.fp16.onnx" || rc=$?
  local models=("$e/adla.onnx" "$e/adla.fp16.onnx" "$e/adla.int8.onnx")
  if [ "$DEVICE" = cuda ] && "$PY" -c "import tensorrt" 2>/dev/null; then
    for p in fp32 fp16 int8; do
      local flags=()
      [ "$p" = fp16 ] && flags=(--fp16)
      [ "$p" = int8 ] && flags=(--int8 --int8-path qdq --calib-images "$cal" --calib-batch 1 --calib-max 16)
      adla export "$m" --format engine "${flags[@]}" --input-size "$Q_SIZE" "$Q_SIZE" --min-batch 1 \
        --opt-batch 8 --max-batch 8 --workspace-gb 4 --out "$e/adla.$p.engine" || rc=$?
    done
    models=("$e/adla.fp32.engine" "$e/adla.fp16.engine" "$e/adla.int8.engine")
  else
    echo "(no TensorRT or no CUDA here: FP32 / FP16 / INT8 compared as ONNX models through onnxruntime)"
  fi
  for p in 1 2; do  # FP32 vs FP16, FP32 vs INT8: scene time and one-tile latency, interleaved
    [ -f "${models[$p]}" ] && { adla bench tiled "$scene" --model "${models[0]}" --compare "${models[$p]}" \
      --compare-only --device "$DEVICE" "${Q_ARGS[@]}" || rc=$?; echo; }
  done
  val=$STAGE_DIR/data/kit/val.json
  if [ -f "$val" ] && "$PY" -c "import faster_coco_eval" 2>/dev/null; then
    adla bench accuracy --ann "$val" --images "$STAGE_DIR/data/kit/val_images" --device "$DEVICE" \
      $(for p in "${models[@]}"; do [ -f "$p" ] && printf -- '--model %s ' "$p"; done) || rc=$?
  else
    echo "(no staged KIT validation set or no faster_coco_eval: AP not measured)"
  fi
  return $rc
}
if have_ckpt; then
  run_step 6 "FP32 vs FP16 vs INT8 (QDQ) on $DEVICE: export, engines, latency, AP" "$(lim $T6)" step6
else
  skip_step 6 "FP32 vs FP16 vs INT8 (QDQ) on $DEVICE" "no checkpoint (step 0 failed)"
fi

# step 5 (optional): R18 GN from scratch on the KIT AIS frames at 0.33x, both assigners, the demo's recipe.
step5() {
  set -e
  local d=$STAGE_DIR/data/kit split glob
  if [ ! -f "$d/train.json" ]; then
    d=$WORK/kit
    for split in train:MOS* val:MunichStreet02-*; do
      glob=${split#*:}
      adla data convert --format yolo --images "$KIT_DIR" --labels "$KIT_DIR" --names "$KIT_DIR/aerial.names" \
        --include "$glob" --downscale 0.33 --out "$d/${split%%:*}.json" >/dev/null 2>&1
    done
  fi
  adla demo --out "$WORK/kit_demo" --data "$d/train.json" --images "$d/train_images" --val "$d/val.json" \
    --val-images "$d/val_images" --skip-export --set optim.iters="$KIT_ITERS" "${KIT_SET[@]}"
}
T5=$(left)
if [ "$SKIP_KIT" = 1 ]; then
  skip_step 5 "KIT AIS 0.33x, R18 GN from scratch, both assigners" "--skip-kit"
elif [ ! -f "$STAGE_DIR/data/kit/train.json" ] && [ ! -d "$KIT_DIR" ]; then
  skip_step 5 "KIT AIS 0.33x, R18 GN from scratch, both assigners" "no KIT data ($KIT_DIR, $STAGE_DIR/data/kit)"
elif ! has_module faster_coco_eval; then
  skip_step 5 "KIT AIS 0.33x, R18 GN from scratch, both assigners" "faster_coco_eval is not importable (stage wheels)"
elif [ "$T5" -lt "$T5_MIN" ]; then
  skip_step 5 "KIT AIS 0.33x, R18 GN from scratch, both assigners" "only ${T5} s left of ${BUDGET} s"
else
  run_step 5 "KIT AIS 0.33x, R18 GN from scratch, $KIT_ITERS iterations, both assigners" "$T5" step5
fi

# ---------------------------------------------------------------------------------------------------
# results: every step's JSON in one file, and each target met or not.
say ""
say "== targets =="
"$PY" - "$WORK" "$OUT_DIR/results.json" "$SUMMARY" <<'EOF' | tee -a "$SUMMARY"
import json, re, sys
from pathlib import Path
work, out, summary = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]).read_text()
res = {}
for name, path in {"train_step": "train_step.json", "assign": "assign.json",
                   "model": "model_bench/model_bench.json"}.items():
    if (work / path).is_file():
        res[name] = json.loads((work / path).read_text())
out.write_text(json.dumps(res, indent=1, default=str))
ok = lambda c: "met" if c else "MISSED"
if "train_step" in res:
    r = res["train_step"]["ratio_adla_over_maxiou"]
    print(f"1. ADLA / max-IoU train step {r:.3f} (target <= 1.05): {ok(r <= 1.05)}")
else:
    print("1. train step: no result")
if "assign" in res:
    rows = res["assign"]["rows"]
    worst = max(rows, key=lambda x: x["ratio"])
    print(f"2. ADLA / max-IoU assign, worst {worst['ratio']:.2f} at {worst['gts']} GTs "
          f"({', '.join('%d: %.2f' % (x['gts'], x['ratio']) for x in rows)}) (target <= 1.3): {ok(worst['ratio'] <= 1.3)}")
else:
    print("2. assign: no result")
step3 = summary.split("== step 3:")[1].split("== step 4:")[0] if "== step 3:" in summary else ""
speed = [float(x) for x in re.findall(r"speed-up \(one-tile / runtime\): ([\d.]+)x", step3)]
eff = [float(x) for x in re.findall(r"pipeline efficiency \(model / runtime\): ([\d.]+)", step3)]
if speed:
    print(f"3. tiled speed-up per scene {speed} (target >= 3): {ok(min(speed) >= 3)}; "
          f"pipeline efficiency {eff} (target >= 0.9): {ok(bool(eff) and min(eff) >= 0.9)}")
else:
    print("3. tiled: no result")
if "model" in res and res["model"].get("comparison"):
    c = res["model"]["comparison"][0]
    lr = c["latency_ratio"].get("torch")
    same = c["same_params"] and c["same_flops"] and c["graphs_identical"]
    print(f"4. latency ratio ADLA / max-IoU {lr['median']:.3f} (p10-p90 {lr['p10']:.3f}-{lr['p90']:.3f}; "
          f"target 1.00 within spread): {ok(lr['p10'] <= 1.0 <= lr['p90'])}; same network: {same}")
else:
    print("4. model: no result")
EOF
say ""
say "== status =="
for s in "${STATUS[@]}"; do say "$s"; done
say "total $((SECONDS - START)) s of a ${BUDGET} s budget; tables in $SUMMARY, full output in $LOG"
