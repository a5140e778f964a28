#!/usr/bin/env bash
# Study (issue 26): does Spatial Seg-CFT (fill=warp) undershoot because its head is not trained
# long enough? The spatial recipe at 600 steps instead of 200, on the demo's chest-phantom base and
# on JSRT base 0 of scripts/study_spatial_fill_jsrt.sh; the 200-step runs are that study's and
# scripts/study_spatial_fill.sh's (same bases, seed and interventions).
#   bash scripts/study_spatial_steps.sh          # about 8 minutes on 2 cores once the bases exist
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DEMO=${DEMO:-runs/demo}
DATA=${DATA:-runs/data/jsrt/datalist.json}
SEGMENTORS=${SEGMENTORS:-docs/bench/robustness/segmentor_fixed_anatomy.json}
WORK=${WORK:-runs/spatial_jsrt}
OUT=${OUT:-docs/bench/spatial}
STEPS=${STEPS:-600}
[ -f "$DEMO/metrics.json" ] || "$SEGCFT" demo --out "$DEMO" --seed 0
[ -f "$WORK/generator_s0.json" ] || { echo "no $WORK/generator_s0 (run scripts/study_spatial_fill_jsrt.sh)" >&2; exit 2; }
"$SEGCFT" bench cft --data "$DEMO/data/datalist.json" --generator "$DEMO/generator" --segmentors "$DEMO/segmentor.json" \
  --methods spatial-seg --spatial fill=warp --spatial "steps=$STEPS" --seed 0 --out "$OUT/chest64_warp_steps$STEPS.json"
"$SEGCFT" bench cft --data "$DATA" --generator "$WORK/generator_s0" --segmentors "$SEGMENTORS" --steps 100 --lr 3e-4 \
  --relative-targets --seed 0 --methods spatial-seg --spatial fill=warp --spatial "steps=$STEPS" \
  --out "$OUT/jsrt64_warp_steps${STEPS}_base0.json"
