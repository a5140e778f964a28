#!/usr/bin/env bash
# Study (issue 26): what a pixel that a moved boundary crosses takes, on the demo's chest-phantom
# base: the local class means (fill=means, the default until this study) or the moved image's own tissue
# (fill=warp). Spatial Seg-CFT at the spatial recipe otherwise, same base, seed and interventions.
# The demo's base is made first where runs/ lacks it (about 6-10 minutes).
#   bash scripts/study_spatial_fill.sh          # about 6 minutes on 2 cores after the demo
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DEMO=${DEMO:-runs/demo}
OUT=${OUT:-docs/bench/spatial}
[ -f "$DEMO/metrics.json" ] || "$SEGCFT" demo --out "$DEMO" --seed 0
for fill in means warp; do
  "$SEGCFT" bench cft --data "$DEMO/data/datalist.json" --generator "$DEMO/generator" --segmentors "$DEMO/segmentor.json" \
    --methods spatial-seg --spatial "fill=$fill" --seed 0 --out "$OUT/chest64_fill_$fill.json"
done
