#!/usr/bin/env bash
# Study (issue 26): the spatial-intensity mechanism on the CCTA phantom, beside the seeds' Seg-CFT
# and Positional Seg-CFT on the same positional base, judged by the phantom's true counterfactuals.
# A demo-scale chain: 300 cases at 64 px, segmentors 30 epochs, the positional generator 30 epochs,
# the seeds' methods at the demo's 100 steps (learning rate 3e-4), the spatial ones at their recipe.
#   bash scripts/study_spatial_ccta.sh          # about 25 minutes on 2 cores
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
WORK=${WORK:-runs/spatial_ccta}
OUT=${OUT:-docs/bench/spatial}
N=${N:-300}
SEG_EPOCHS=${SEG_EPOCHS:-30}
GEN_EPOCHS=${GEN_EPOCHS:-30}
STEPS=${STEPS:-100}
METHODS=${METHODS:-none,seg,pos-seg,spatial-seg,spatial-pos-seg}
NAME=${NAME:-ccta64_methods}  # the report's name in $OUT
SPATIAL_ARGS=(${SPATIAL_ARGS:-})  # more --spatial KEY=VALUE options, e.g. "--spatial fill=means"
SPATIAL_STEPS=${SPATIAL_STEPS:-200}
mkdir -p "$OUT"
DATA=$WORK/data/datalist.json
[ -f "$DATA" ] || "$SEGCFT" data phantom --kind ccta --n "$N" --size 64 --seed 0 --out "$WORK/data"
"$SEGCFT" bench segmentor --data "$DATA" --out "$WORK/segmentor.json" --work-dir "$WORK/segmentor" \
  --epochs "$SEG_EPOCHS" --seed 0 --reuse
POS=bundles/ccta_generator/configs/positional.json
"$SEGCFT" bench generator --data "$DATA" --run "$WORK/generator" --judge "$WORK/segmentor.json" \
  --config-file "$POS" --epochs "$GEN_EPOCHS" --seed 0 --out "$WORK/generator.json"
"$SEGCFT" bench cft --data "$DATA" --generator "$WORK/generator" --config-file "$POS" --segmentors "$WORK/segmentor.json" \
  --methods "$METHODS" --steps "$STEPS" --lr 3e-4 --spatial "steps=$SPATIAL_STEPS" --relative-targets --seed 0 "${SPATIAL_ARGS[@]}" \
  --out "$OUT/$NAME.json"
