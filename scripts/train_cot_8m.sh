#!/usr/bin/env bash
# Reproduces paradecode/zoo/cot-8m on one GPU (about 17 minutes on an H200 alone): three stages of
# scripts/train_cot.py, each continuing the one before. The shipped model was trained with time
# budgets (stage 1 beside two other runs on the same H200, 3,279 steps, the warm stage ending at
# step 1,407; stage 2 alone, 8,748 steps; stage 3 alone, 4,452 steps); the step counts that gave
# are fixed here, so the learning-rate schedule and the warm stage run over steps. GPU training is
# not bit-reproducible; expect the held-out accuracy within a few points.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=${TMP:-/tmp/cot-8m}
# 1. from scratch: 43% of the steps on a 32-word canvas with mostly 1-2-step chains (the warm
#    stage in which the model learns to look names up in the prompt), then the full mix
python scripts/train_cot.py --out "$TMP/stage1" --max-steps 3279 --warm-share 0.429 --head-decay 0 \
  --time-budget 3600 --baseline ''
# 2. more of the full mix, new data, a fresh cosine from lr 1e-3
python scripts/train_cot.py --out "$TMP/stage2" --init "$TMP/stage1" --seed 1 --lr 1e-3 --warmup 100 \
  --head-decay 0 --max-steps 8748 --time-budget 3600
# 3. without label smoothing (0.02 capped every sure token near confidence 0.98, which silenced
#    LocalLeap's 0.99 anchors and made EB-Sampler's entropy sum grow by ~0.19 per token); new data,
#    lr 3e-4 (the shipped stage ran 4,452 steps in a 270 s budget)
python scripts/train_cot.py --out paradecode/zoo/cot-8m --init "$TMP/stage2" --seed 3 --label-smoothing 0 --lr 3e-4 \
  --warmup 100 --head-decay 0 --max-steps 4452 --time-budget 3600
# Learn2PD's filter for it (benchmarks/cot_bench.py trains the same when it is missing)
python scripts/train_learn2pd.py --model paradecode/zoo/cot-8m --tasks cot-train --n 200 --seed 123 --epochs 3000 --device cuda
