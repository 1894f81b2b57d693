#!/usr/bin/env bash
# The default model's test numbers of docs/MODELS.md: CASIA v1 test, the synthesized test set (held-out photos
# and cameras), and the verdicts on the untouched held-out authentic photos. Run once, after the model was
# chosen and calibrated on val.
#   bash benchmarks/default_model/evaluate.sh SYN_TEST_DIR [CHECKPOINT] [OUT_DIR]
set -euo pipefail
SYN_TEST=${1:?usage: evaluate.sh SYN_TEST_DIR [CHECKPOINT] [OUT_DIR]}
CKPT=${2:-default}
OUT=${3:-default-model-eval}
mkdir -p "$OUT"
for set in casia:../shared/data/casia1/test.json synthetic:$SYN_TEST/list.json photos:configs/default-model/test_photos.json; do
  for model in "$CKPT" ela; do
    tamperscope evaluate --checkpoint "$model" --data "${set#*:}" --on-mismatch skip --no-progress \
      --out "$OUT/${set%%:*}-$(basename "$model" .safetensors).json"
  done
done
python benchmarks/default_model/verdicts.py configs/default-model/test_photos.json --checkpoint "$CKPT" \
  --out "$OUT/photos-verdicts.jsonl"
python benchmarks/default_model/verdicts.py ../shared/data/casia1/test.json --checkpoint "$CKPT" \
  --out "$OUT/casia-verdicts.jsonl"
