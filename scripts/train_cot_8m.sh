#!/usr/bin/env bash
# Reproduces paradecode/zoo/cot-8m on one GPU (about 13 minutes on an H200 alone): two stages of
# scripts/train_cot.py, the second continuing the first. The shipped model was trained with time
# budgets (stage 1 beside two other runs on the same H200, 3,279 steps, the warm stage ending at
# step 1,407; stage 2 alone, 8,748 steps); the step counts that gave are fixed here, so the
# learning-rate schedule and the warm stage run over steps. GPU training is not bit-reproducible;
# expect the held-out accuracy within a few points.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=${TMP:-/tmp/cot-8m}
# 1. from scratch: 43% of the steps on a 32-word canvas with mostly 1-2-step chains (the warm
#    stage in which the model learns to look names up in the prompt), then the full mix
python scripts/train_cot.py --out "$TMP/stage1" --max-steps 3279 --warm-share 0.429 --head-decay 0 \
  --time-budget 3600 --baseline ''
# 2. more of the full mix, new data, a fresh cosine from lr 1e-3
python scripts/train_cot.py --out paradecode/zoo/cot-8m --init "$TMP/stage1" --seed 1 --lr 1e-3 --warmup 100 \
  --head-decay 0 --max-steps 8748 --time-budget 3600
