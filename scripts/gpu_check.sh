#!/usr/bin/env bash
# The prepared device check: the GPU path end to end, in one run of at most about 8 minutes on
# one GPU, its JSON reports written to $OUT.
#
#   scripts/gpu_check.sh                                   # on a CUDA machine: 192 px, GPU budgets
#   DEVICE=cpu SIZE=64 PRESET=cpu64 BUDGET=tiny scripts/gpu_check.sh   # the same steps on CPU (the tests run this)
#
# Steps: the CUDA tests; JSRT segmentors (guide and judge) for a short budget; the generator
# for a fixed budget with its test ELBO, sharpness and plain dose-response; Seg-CFT on it;
# training and counterfactual throughput in float32 and bfloat16 with peak memory and a
# device check of every module's inputs. Inputs: JSRT from $SEGCFT_JSRT (or a prepared
# datalist in $DATALIST), segcft installed, or on an offline machine with its own torch the
# wheels that scripts/prepare_device.sh wrote, named by $WHEELS and installed here first.
set -euo pipefail

OUT=${OUT:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-192}
PRESET=${PRESET:-gpu192}
BUDGET=${BUDGET:-gpu}
JSRT=${SEGCFT_JSRT:-../shared/data/jsrt}
SEGCFT=${SEGCFT:-segcft}
PYTHON=${PYTHON:-python}

case "$BUDGET" in
  gpu)  SEG_EPOCHS=30; GEN_EPOCHS=60; CFT_STEPS=300; TESTS=1 ;;
  tiny) SEG_EPOCHS=1; GEN_EPOCHS=1; CFT_STEPS=2; TESTS=0 ;;
  *) echo "BUDGET must be gpu or tiny, not '$BUDGET'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
W=$OUT/work
START=$(date +%s)
stage() { echo "[gpu_check $(( $(date +%s) - START )) s] $*"; }

if [ -n "${WHEELS:-}" ]; then
  stage "installing the wheels in $WHEELS beside this machine's torch"
  SITE=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH
fi

if [ "$TESTS" = 1 ]; then
  stage "CUDA tests"
  "$PYTHON" -m pytest -q tests/test_io.py -k cuda --junitxml "$OUT/cuda_tests.xml"
fi

if [ -z "${DATALIST:-}" ]; then
  stage "JSRT datalist"
  "$SEGCFT" data jsrt --src "$JSRT" --out "$W/data/jsrt"
  DATALIST=$W/data/jsrt/datalist.json
fi

stage "segmentors at $SIZE px, $SEG_EPOCHS epochs"
"$SEGCFT" bench segmentor --data "$DATALIST" --out "$OUT/segmentor.json" --work-dir "$W/segmentor" \
    --image-size "$SIZE" --epochs "$SEG_EPOCHS" --device "$DEVICE" --seed 0

GEN=(--set "image_size=$SIZE" --set "preset=$PRESET")
stage "generator $PRESET, $GEN_EPOCHS epochs"
"$SEGCFT" bench generator --data "$DATALIST" --run "$W/generator" --judge "$OUT/segmentor.json" \
    --epochs "$GEN_EPOCHS" --device "$DEVICE" "${GEN[@]}" --out "$OUT/generator.json"

stage "Seg-CFT, $CFT_STEPS steps"
"$SEGCFT" bench cft --data "$DATALIST" --generator "$W/generator" --segmentors "$OUT/segmentor.json" \
    --methods none,seg --steps "$CFT_STEPS" --device "$DEVICE" "${GEN[@]}" --out "$OUT/cft.json"

stage "throughput, float32 and bfloat16"
"$SEGCFT" bench speed --data "$DATALIST" --run "$W/generator" --device "$DEVICE" "${GEN[@]}" --out "$OUT/speed.json"
stage "done"
