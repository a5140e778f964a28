#!/usr/bin/env bash
# Reproduce every report behind docs/results.md, then generate the page from them.
#
#   make results                      # full scale: the figures of docs/results.md
#   make results SCALE=small          # every stage at a few epochs/steps: checks the chain
#
# Reports go to $OUT/bench/ under the names docs/results.yaml gives them, so the manifest is
# copied beside them and the page ($OUT/results.md) is generated exactly as docs/results.md is.
# Compare the two, then copy the reports into docs/bench/ to update the headline.
#
# Run time on 2 cores: `segcft bench report` prints the stage times the current reports
# recorded (the page's own figures, not a guess); generator training comes on top.
# SCALE=small took about 45 minutes on 2 cores (2026-12-07); its figures mean nothing: it is a check of the chain.
set -euo pipefail

OUT=${OUT:-runs/results}
SCALE=${SCALE:-full}
JSRT=${SEGCFT_JSRT:-../shared/data/jsrt}
SEGCFT=${SEGCFT:-segcft}
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cpu}

case "$SCALE" in
  full)  N=600; SEG_EPOCHS=(); SEG_PHANTOM=(--epochs 40); GEN_JSRT=120; GEN_PHANTOM=40; STEPS=900; SPATIAL=200; FULLRES_CASES=8; DEMO=() ;;
  small) N=40; SEG_EPOCHS=(--epochs 1); SEG_PHANTOM=(--epochs 1); GEN_JSRT=1; GEN_PHANTOM=1; STEPS=4; SPATIAL=4; FULLRES_CASES=1
         DEMO=(--n 40 --segmentor-epochs 1 --generator-epochs 1 --cft-steps 2 --spatial-steps 2) ;;
  *) echo "SCALE must be full or small, not '$SCALE'" >&2; exit 2 ;;
esac

B=$OUT/bench
W=$OUT/work
mkdir -p "$B/spatial" "$W"
CFT=(--steps "$STEPS" --lr 1e-4 --lagrange-lr 0.3 --relative-targets --ema-decay 0.995 --device "$DEVICE")
generator() {  # generator CONFIGS ROOT DATALIST EPOCHS SEED
  "$PYTHON" -m monai.bundle run --config_file "$1" --bundle_root "$2" --datalist "$3" --epochs "$4" \
      --seed "$5" --device "$DEVICE" --progress false
}

# The demo, and Spatial Seg-CFT on its base.
"$SEGCFT" demo --out "$W/demo" --seed 0 "${DEMO[@]}"
cp "$W/demo/metrics.json" "$B/demo_metrics.json"
"$SEGCFT" bench cft --data "$W/demo/data/datalist.json" --generator "$W/demo/generator" --segmentors "$W/demo/segmentor.json" \
    --seed 0 --methods none,spatial-seg --spatial "steps=$SPATIAL" --device "$DEVICE" --out "$B/spatial/chest64_shared.json"

mkdir -p "$B/fullres"
"$SEGCFT" bench fullres --model "$W/demo/model" --data "$W/demo/data/datalist.json" --size 256 --cases "$FULLRES_CASES" \
    --out "$B/fullres/chest_demo_256.json"

# JSRT: segmentors, four base models, the seeds' methods on each.
"$SEGCFT" data jsrt --src "$JSRT" --out "$W/data/jsrt"
J=$W/data/jsrt/datalist.json
"$SEGCFT" bench segmentor --data "$J" --out "$B/segmentor_jsrt.json" --work-dir "$W/segmentor_jsrt" --seed 0 "${SEG_EPOCHS[@]}"
for s in 0 1 2 3; do
  generator bundles/cxr_generator/configs/train.json "$W/generator_jsrt_s$s" "$J" "$GEN_JSRT" "$s"
done
"$SEGCFT" bench generator --data "$J" --run "$W/generator_jsrt_s0" --judge "$B/segmentor_jsrt.json" --out "$B/generator_jsrt.json"
"$SEGCFT" bench cft --data "$J" --segmentors "$B/segmentor_jsrt.json" "${CFT[@]}" --generator "$W/generator_jsrt_s0" \
    --methods none,reg,seg --out "$B/cft_jsrt_ema995_base0.json"
"$SEGCFT" bench cft --data "$J" --segmentors "$B/segmentor_jsrt.json" "${CFT[@]}" --generator "$W/generator_jsrt_s1" \
    --methods seg --out "$B/cft_jsrt_ema995_base1_seg.json"
"$SEGCFT" bench cft --data "$J" --segmentors "$B/segmentor_jsrt.json" "${CFT[@]}" --generator "$W/generator_jsrt_s1" \
    --methods none,reg --out "$B/cft_jsrt_ema995_base1_reg.json"
for s in 2 3; do
  "$SEGCFT" bench cft --data "$J" --segmentors "$B/segmentor_jsrt.json" "${CFT[@]}" --generator "$W/generator_jsrt_s$s" \
      --methods none,reg,seg --out "$B/cft_jsrt_ema995_base$s.json"
done

# Chest phantom: the seeds' methods against the true counterfactuals.
"$SEGCFT" data phantom --kind cxr --n "$N" --size 64 --seed 0 --out "$W/data/cxr_phantom"
C=$W/data/cxr_phantom/datalist.json
"$SEGCFT" bench segmentor --data "$C" --out "$B/segmentor_cxr_phantom.json" --work-dir "$W/segmentor_cxr_phantom" \
    --image-size 64 --seed 0 "${SEG_PHANTOM[@]}"
generator "['bundles/cxr_generator/configs/train.json','bundles/cxr_generator/configs/phantom.json']" \
    "$W/generator_cxr_phantom" "$C" "$GEN_PHANTOM" 0
"$SEGCFT" bench cft --data "$C" --generator "$W/generator_cxr_phantom" --segmentors "$B/segmentor_cxr_phantom.json" \
    "${CFT[@]}" --methods none,reg,seg --out "$B/cft_cxr_phantom_judged.json"

# CCTA phantom: the four methods, and a second fine-tuning seed of Seg-CFT.
"$SEGCFT" data phantom --kind ccta --n "$N" --size 64 --seed 0 --out "$W/data/ccta_phantom"
A=$W/data/ccta_phantom/datalist.json
"$SEGCFT" bench segmentor --data "$A" --out "$B/segmentor_ccta_phantom.json" --work-dir "$W/segmentor_ccta" --seed 0 "${SEG_EPOCHS[@]}"
generator bundles/ccta_generator/configs/train.json "$W/generator_ccta" "$A" "$GEN_PHANTOM" 0
"$SEGCFT" bench generator --data "$A" --run "$W/generator_ccta" --judge "$B/segmentor_ccta_phantom.json" \
    --out "$B/generator_ccta_phantom.json"
generator "['bundles/ccta_generator/configs/train.json','bundles/ccta_generator/configs/positional.json']" \
    "$W/generator_ccta_pos" "$A" "$GEN_PHANTOM" 0
POS=(--config-file bundles/ccta_generator/configs/positional.json)
"$SEGCFT" bench cft --data "$A" --generator "$W/generator_ccta_pos" "${POS[@]}" --segmentors "$B/segmentor_ccta_phantom.json" \
    "${CFT[@]}" --methods none,reg,seg,pos-seg --out "$B/cft_ccta_ema995_loc.json"
"$SEGCFT" bench cft --data "$A" --generator "$W/generator_ccta_pos" "${POS[@]}" --segmentors "$B/segmentor_ccta_phantom.json" \
    "${CFT[@]}" --methods none,seg --seed 1 --out "$B/cft_ccta_ema995_seed1.json"

# The page, from these reports, as docs/results.md is made from docs/bench/.
cp docs/results.yaml "$OUT/results.yaml"
mkdir -p "$OUT/figures"
cp "$W/demo/figures/counterfactuals.png" "$OUT/figures/demo_counterfactuals.png"
cp "$W/demo/figures/dose_response.png" "$OUT/figures/demo_dose_response.png"
"$SEGCFT" bench report --manifest "$OUT/results.yaml" --out "$OUT/results.md"
