#!/usr/bin/env bash
# Study (docs/research/2026-12-07-generator-parents.md): does the plain generator follow its
# parents? The demo's chest phantom and judge, the demo's generator budget (25 epochs, 225
# updates), one variable changed per variant: KL warm-up, KL weight, FiLM conditioning,
# likelihood scale. Each variant's `segcft bench generator` report reports the dose-response
# slope (judged / requested change) and the KL per latent level.
#
#   make demo && bash scripts/study_generator_parents.sh        # about 4 minutes per variant on 2 cores
set -euo pipefail
DATA=${DATA:-runs/demo/data/datalist.json}
JUDGE=${JUDGE:-runs/demo/segmentor.json}
OUT=${OUT:-docs/bench/generator_parents}
WORK=${WORK:-runs/study_parents}
SEGCFT=${SEGCFT:-segcft}
ONLY=${ONLY:-}
mkdir -p "$OUT" "$WORK"
# the demo's generator settings (segcft/cli/demo.py)
DEMO=(--set epochs=25 --set val_interval=5 --set sample_interval=25 --set resume=false --set patience=25 --set progress=false)
variant() {  # NAME SETTINGS...
  local name=$1; shift
  if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then return; fi
  rm -rf "${WORK:?}/$name"
  "$SEGCFT" bench generator --data "$DATA" --run "$WORK/$name" --judge "$JUDGE" --out "$OUT/$name.json" --seed 0 "${DEMO[@]}" "$@"
}
variant demo        --set kl_warmup_steps=225
variant warmup20    --set kl_warmup_steps=20
variant beta3       --set kl_warmup_steps=20 --set kl_weight=3.0
variant film        --set kl_warmup_steps=20 --set 'hvae={"conditioning": "film"}'
variant film_beta3  --set kl_warmup_steps=20 --set kl_weight=3.0 --set 'hvae={"conditioning": "film"}'
variant film_fixed  --set kl_warmup_steps=20 --set 'hvae={"conditioning": "film", "likelihood_scale": "fixed", "std_init": 0.05}'
