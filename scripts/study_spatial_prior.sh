#!/usr/bin/env bash
# Study (issue 26): start every move from the intervened structure scaled about its centroid
# (prior=scale), let pixels near a moved soft boundary take the moved image in full (fill=strip),
# and keep the head's own correction small (displacement_weight), against the previous recipe
# (prior=none, fill=warp, no displacement term). Each variant names all four settings, so the
# runs do not depend on the recipe's defaults. Chest phantom: the demo's base, with the true
# counterfactuals; JSRT: base 0 of scripts/study_spatial_fill_jsrt.sh, with none, Reg-CFT and
# the seeds' Seg-CFT on the same base; the CCTA phantom, where its positional base exists (made by
#   N=200 SEG_EPOCHS=25 GEN_EPOCHS=25 METHODS=none OUT=runs/spatial_ccta bash scripts/study_spatial_ccta.sh).
#   bash scripts/study_spatial_prior.sh          # about 25 minutes on 2 cores once the bases exist
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DEMO=${DEMO:-runs/demo}
DATA=${DATA:-runs/data/jsrt/datalist.json}
SEGMENTORS=${SEGMENTORS:-docs/bench/robustness/segmentor_fixed_anatomy.json}
WORK=${WORK:-runs/spatial_jsrt}
OUT=${OUT:-docs/bench/spatial}
[ -f "$DEMO/metrics.json" ] || "$SEGCFT" demo --out "$DEMO" --seed 0
[ -f "$WORK/generator_s0.json" ] || { echo "no $WORK/generator_s0 (run scripts/study_spatial_fill_jsrt.sh)" >&2; exit 2; }
recipe() {  # prior fill displacement_weight [steps]
  echo --spatial "prior=$1" --spatial "fill=$2" --spatial "displacement_weight=$3" --spatial "steps=${4:-200}"
}
declare -A chest=(
  [chest64_prior_before]="$(recipe none warp 0)"
  [chest64_prior_alone]="$(recipe scale strip 0 1)"
  [chest64_prior_warp]="$(recipe scale warp 0)"
  [chest64_prior_strip]="$(recipe scale strip 0)"
  [chest64_prior_strip_d3]="$(recipe scale strip 3)"
  [chest64_prior_strip_d10]="$(recipe scale strip 10)"
)
for name in "${!chest[@]}"; do
  # shellcheck disable=SC2086  # the recipe's words are separate arguments
  [ -f "$OUT/$name.json" ] || "$SEGCFT" bench cft --data "$DEMO/data/datalist.json" --generator "$DEMO/generator" \
    --segmentors "$DEMO/segmentor.json" --methods spatial-seg ${chest[$name]} --seed 0 --out "$OUT/$name.json"
done
common=(--data "$DATA" --generator "$WORK/generator_s0" --segmentors "$SEGMENTORS" --steps 100 --lr 3e-4 --relative-targets --seed 0)
# shellcheck disable=SC2046
[ -f "$OUT/jsrt64_prior_before_base0.json" ] || "$SEGCFT" bench cft "${common[@]}" --methods none,reg,seg,spatial-seg \
  $(recipe none warp 0) --out "$OUT/jsrt64_prior_before_base0.json"
for weight in 3 10; do
  # shellcheck disable=SC2046
  [ -f "$OUT/jsrt64_prior_strip_d${weight}_base0.json" ] || "$SEGCFT" bench cft "${common[@]}" --methods spatial-seg \
    $(recipe scale strip "$weight") --out "$OUT/jsrt64_prior_strip_d${weight}_base0.json"
done
CCTA=${CCTA:-runs/spatial_ccta}
if [ -f "$CCTA/generator.json" ]; then
  ccta=(--data "$CCTA/data/datalist.json" --generator "$CCTA/generator" --config-file bundles/ccta_generator/configs/positional.json
        --segmentors "$CCTA/segmentor.json" --steps 100 --lr 3e-4 --relative-targets --seed 0)
  # shellcheck disable=SC2046
  [ -f "$OUT/ccta64_prior_before.json" ] || "$SEGCFT" bench cft "${ccta[@]}" --methods none,spatial-seg,spatial-pos-seg \
    $(recipe none warp 0) --out "$OUT/ccta64_prior_before.json"
  # shellcheck disable=SC2046
  [ -f "$OUT/ccta64_prior_strip_d10.json" ] || "$SEGCFT" bench cft "${ccta[@]}" --methods spatial-seg,spatial-pos-seg \
    $(recipe scale strip 10) --out "$OUT/ccta64_prior_strip_d10.json"
fi
