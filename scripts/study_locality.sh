#!/usr/bin/env bash
# Study (docs/research/2026-12-07-locality-terms.md): do Seg-CFT's locality terms move
# boundaries instead of repainting? The demo's base generator, guide and judge, the demo's
# Seg-CFT budget (100 steps at 3e-4, lambda rate 0.1, no EMA); seg (the seeds' loss) and
# local-seg (with the terms) fine-tuned from the same base with the same interventions.
#
#   make demo && bash scripts/study_locality.sh         # about 10 minutes on 2 cores
set -euo pipefail
DEMO=${DEMO:-runs/demo}
OUT=${OUT:-docs/bench/locality}
SEGCFT=${SEGCFT:-segcft}
mkdir -p "$OUT"
"$SEGCFT" bench cft --data "$DEMO/data/datalist.json" --generator "$DEMO/generator" --segmentors "$DEMO/segmentor.json" \
    --methods none,seg,local-seg --steps 100 --lr 3e-4 --lagrange-lr 0.1 --ema-decay 0 --seed 0 \
    --locality local "$@" --out "$OUT/chest_demo_local.json"
