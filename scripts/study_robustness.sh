#!/usr/bin/env bash
# Study (issue 22): do per-image percentile normalisation and scanner augmentation make the JSRT
# segmentors robust to other scanners and exposures, at no cost on JSRT itself? Trains the guide
# and the judge four times (normalise fixed|percentile x augmentation anatomy|scanners), then
# measures all eight on the shifted copies of the test split (segcft bench robustness).
#   bash scripts/study_robustness.sh                 # 64 px, 80 epochs: about 25 minutes on 2 cores
#   SIZE=32 EPOCHS=1 OUT=/tmp/rob bash scripts/study_robustness.sh   # the chain in about 2 minutes
set -euo pipefail

SEGCFT=${SEGCFT:-segcft}
DATA=${DATA:-runs/data/jsrt/datalist.json}
OUT=${OUT:-docs/bench/robustness}
WORK=${WORK:-runs/robustness}
SIZE=${SIZE:-64}
EPOCHS=${EPOCHS:-80}
[ -f "$DATA" ] || "$SEGCFT" data jsrt --src "${SEGCFT_JSRT:-../shared/data/jsrt}" --out "$(dirname "$DATA")"
mkdir -p "$OUT"

labels=()
for normalise in fixed percentile; do
  for augmentation in anatomy scanners; do
    name=${normalise}_${augmentation}
    "$SEGCFT" bench segmentor --data "$DATA" --out "$OUT/segmentor_$name.json" --work-dir "$WORK/$name" \
      --image-size "$SIZE" --epochs "$EPOCHS" --seed 0 --set "normalise=$normalise" --set "augmentation=$augmentation"
    labels+=(--segmentors "$name=$OUT/segmentor_$name.json")
  done
done
"$SEGCFT" bench robustness --data "$DATA" "${labels[@]}" --seed 0 --out "$OUT/jsrt_shifts.json"
