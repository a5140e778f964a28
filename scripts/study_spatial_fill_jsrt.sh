#!/usr/bin/env bash
# Study (issue 26): the spatial mechanism's fill (means, then the default, against warp) on three JSRT
# bases, with no fine-tuning, Reg-CFT and the seeds' Seg-CFT on the same bases, seed and
# interventions. One summary per fill, each pairing its Spatial Seg-CFT with the same Reg-CFT and
# Seg-CFT runs. The bases are trained from their seeds where runs/ lacks them (about 3 minutes each).
#   bash scripts/study_spatial_fill_jsrt.sh          # about 35 minutes on 2 cores
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DATA=${DATA:-runs/data/jsrt/datalist.json}
SEGMENTORS=${SEGMENTORS:-docs/bench/robustness/segmentor_fixed_anatomy.json}
WORK=${WORK:-runs/spatial_jsrt}
OUT=${OUT:-docs/bench/spatial}
EPOCHS=${EPOCHS:-25}
STEPS=${STEPS:-100}
LR=${LR:-3e-4}
SPATIAL_STEPS=${SPATIAL_STEPS:-200}
[ -f "$DATA" ] || "$SEGCFT" data jsrt --src "${SEGCFT_JSRT:-../shared/data/jsrt}" --out "$(dirname "$DATA")"
means=() warp=()
for seed in 0 1 2; do
  [ -f "$WORK/generator_s$seed.json" ] || "$SEGCFT" bench generator --data "$DATA" --run "$WORK/generator_s$seed" --judge "$SEGMENTORS" \
    --epochs "$EPOCHS" --seed "$seed" --out "$WORK/generator_s$seed.json"
  common=(--data "$DATA" --generator "$WORK/generator_s$seed" --segmentors "$SEGMENTORS" --steps "$STEPS" --lr "$LR" --relative-targets --seed 0)
  [ -f "$OUT/jsrt64_fill_means_base$seed.json" ] || "$SEGCFT" bench cft "${common[@]}" --methods none,reg,seg,spatial-seg \
    --spatial "steps=$SPATIAL_STEPS" --spatial fill=means --out "$OUT/jsrt64_fill_means_base$seed.json"
  [ -f "$OUT/jsrt64_fill_warp_base$seed.json" ] || "$SEGCFT" bench cft "${common[@]}" --methods spatial-seg \
    --spatial "steps=$SPATIAL_STEPS" --spatial fill=warp --out "$OUT/jsrt64_fill_warp_base$seed.json"
  means+=(--report "$OUT/jsrt64_fill_means_base$seed.json")
  warp+=(--report "$OUT/jsrt64_fill_means_base$seed.json:none,reg,seg" --report "$OUT/jsrt64_fill_warp_base$seed.json:spatial-seg")
done
pairs=(--pair spatial-seg,seg --pair spatial-seg,reg --pair seg,reg --pair spatial-seg,none)
"$SEGCFT" bench summary "${means[@]}" "${pairs[@]}" --out "$OUT/jsrt64_fill_means.json"
"$SEGCFT" bench summary "${warp[@]}" "${pairs[@]}" --out "$OUT/jsrt64_fill_warp.json"
