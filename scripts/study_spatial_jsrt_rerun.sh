#!/usr/bin/env bash
# Study (issue 26): no fine-tuning and Spatial Seg-CFT on the three JSRT bases of
# scripts/study_spatial_jsrt.sh again, for the figures its reports lack (locality with descendants),
# then one summary with Reg-CFT and the seeds' Seg-CFT from that study's reports. The bases are
# retrained from their seeds where runs/ lacks them; the summary refuses reports whose eps or noise
# floor differ, so a base that did not come back the same stops it.
#   bash scripts/study_spatial_jsrt_rerun.sh          # about 25 minutes on 2 cores
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DATA=${DATA:-runs/data/jsrt/datalist.json}
SEGMENTORS=${SEGMENTORS:-docs/bench/robustness/segmentor_fixed_anatomy.json}
WORK=${WORK:-runs/spatial_jsrt}
OUT=${OUT:-docs/bench/spatial}
EPOCHS=${EPOCHS:-25}
STEPS=${STEPS:-100}  # the first study's settings of the seeds' methods: the summary refuses reports that differ
LR=${LR:-3e-4}
SPATIAL_STEPS=${SPATIAL_STEPS:-200}
[ -f "$DATA" ] || "$SEGCFT" data jsrt --src "${SEGCFT_JSRT:-../shared/data/jsrt}" --out "$(dirname "$DATA")"
sources=()
for seed in 0 1 2; do
  [ -f "$OUT/jsrt64_base$seed.json" ] || { echo "no $OUT/jsrt64_base$seed.json (run scripts/study_spatial_jsrt.sh)" >&2; exit 2; }
  [ -f "$WORK/generator_s$seed.json" ] || "$SEGCFT" bench generator --data "$DATA" --run "$WORK/generator_s$seed" --judge "$SEGMENTORS" \
    --epochs "$EPOCHS" --seed "$seed" --out "$WORK/generator_s$seed.json"
  [ -f "$OUT/jsrt64_base${seed}_rerun.json" ] || "$SEGCFT" bench cft --data "$DATA" --generator "$WORK/generator_s$seed" \
    --segmentors "$SEGMENTORS" --methods none,spatial-seg --steps "$STEPS" --lr "$LR" --spatial "steps=$SPATIAL_STEPS" --relative-targets --seed 0 \
    --out "$OUT/jsrt64_base${seed}_rerun.json"
  sources+=(--report "$OUT/jsrt64_base$seed.json:reg,seg" --report "$OUT/jsrt64_base${seed}_rerun.json:none,spatial-seg")
done
"$SEGCFT" bench summary "${sources[@]}" --pair spatial-seg,seg --pair spatial-seg,reg --pair seg,reg --out "$OUT/jsrt64_bases_rerun.json"
