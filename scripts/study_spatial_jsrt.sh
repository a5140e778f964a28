#!/usr/bin/env bash
# Study (issue 26): Spatial Seg-CFT on JSRT over three base models, beside the seeds' Seg-CFT and
# Reg-CFT on each same base, at demo scale: 64 px generators of 25 epochs (seeds 0, 1, 2), the seeds'
# methods at the demo's 100 steps (learning rate 3e-4), the spatial one at its recipe (200 steps).
# Guide and judge: the bundle-default JSRT segmentors of scripts/study_robustness.sh.
#   bash scripts/study_spatial_jsrt.sh          # about 30 minutes on 2 cores
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DATA=${DATA:-runs/data/jsrt/datalist.json}
SEGMENTORS=${SEGMENTORS:-docs/bench/robustness/segmentor_fixed_anatomy.json}
WORK=${WORK:-runs/spatial_jsrt}
OUT=${OUT:-docs/bench/spatial}
EPOCHS=${EPOCHS:-25}
[ -f "$DATA" ] || "$SEGCFT" data jsrt --src "${SEGCFT_JSRT:-../shared/data/jsrt}" --out "$(dirname "$DATA")"
[ -f "$SEGMENTORS" ] || { echo "no segmentor report at $SEGMENTORS (run scripts/study_robustness.sh)" >&2; exit 2; }
STEPS=${STEPS:-100}
SPATIAL_STEPS=${SPATIAL_STEPS:-200}
mkdir -p "$OUT"
for seed in 0 1 2; do
  [ -f "$OUT/jsrt64_base$seed.json" ] && continue  # a base already measured (rerun: delete its report)
  # bench generator's --seed is also the bundle's training seed; a base already trained is kept
  [ -f "$WORK/generator_s$seed.json" ] || "$SEGCFT" bench generator --data "$DATA" --run "$WORK/generator_s$seed" --judge "$SEGMENTORS" --epochs "$EPOCHS" \
    --seed "$seed" --out "$WORK/generator_s$seed.json"
  "$SEGCFT" bench cft --data "$DATA" --generator "$WORK/generator_s$seed" --segmentors "$SEGMENTORS" \
    --methods none,reg,seg,spatial-seg --steps "$STEPS" --lr 3e-4 --spatial "steps=$SPATIAL_STEPS" --relative-targets --seed 0 \
    --out "$OUT/jsrt64_base$seed.json"
done
"$SEGCFT" bench summary --report "$OUT/jsrt64_base0.json" --report "$OUT/jsrt64_base1.json" --report "$OUT/jsrt64_base2.json" \
  --pair spatial-seg,seg --pair spatial-seg,reg --pair seg,reg --out "$OUT/jsrt64_bases.json"
