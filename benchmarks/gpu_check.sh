#!/usr/bin/env bash
# One-GPU check (issue 21, point 2): each paper model and the SegFormer baseline trained about 45 s at 512
# with bf16 autocast on CASIA v1 train, images/s and peak memory (training and inference), then evaluated on
# CASIA v1 test; a Markdown table in OUT/gpu_check.md. Fits a 10-minute GPU slot (no model starts after 9 min).
#
#   bash benchmarks/gpu_check.sh [OUT]                      # on the GPU machine, from the repository root
#   SIZE=64 STEPS=2 LIMIT=8 DEVICE=cpu bash benchmarks/gpu_check.sh /tmp/gpu-dry   # CPU dry run, tiny size
#
# Overrides (environment): SIZE (512), STEPS (0 = about MINUTES of training per model), MINUTES (0.75),
# BATCH (8), LIMIT (0 = all images; else this many tampered + half as many authentic of train and test),
# DEVICE (cuda), WORKERS (4), MODELS (space-separated registry names), DEADLINE (9.0 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-check}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
MODELS=${MODELS:-segformer-b2 frdnet nfavit diffiml diffforensics ifanet}
# shellcheck disable=SC2086
exec "$PY" benchmarks/gpu_check.py --out "$OUT" --size "${SIZE:-512}" --steps "${STEPS:-0}" \
  --minutes "${MINUTES:-0.75}" --batch-size "${BATCH:-8}" --limit "${LIMIT:-0}" --device "${DEVICE:-cuda}" \
  --workers "${WORKERS:-4}" --deadline-minutes "${DEADLINE:-9.0}" --models $MODELS
