#!/usr/bin/env bash
# Issue 17 item 2 on one H200 in one call (< 560 s): continue paradecode/zoo/cot-8m on the free-choice
# data (scripts/train_cot.py --free-choice: per step a verb and a commutative step's operand order drawn
# 70/30, choices no other token pins), with stage 3's recipe (docs/dev-notes/issue-17.md), then the
# confidence histogram beside cot-8m's and a fresh-seed accuracy check. Everything lands in $OUT
# (6 files: train.log, hist.log, bench.log, results.tar, cot-free-8m.tar.00/.01).
#     OUT=/path/to/out bash scripts/train_cot_free.sh
# Read: train.log's summary ("held-out accuracy ... {"cot-free": X}", relaxed verifier, N=500, seed
# 20261201; and "committed-token confidences in [0.5, 0.9): A% ... (B% ... without <eos>)"); bench.log's
# "lowconf none steps=256 acc X" (relaxed, N=500, seed 4242; results.tar: bench/cot_bench.json also has
# strict_accuracy). X must stay >= 90%.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output directory}"
W=${W:-/tmp/cot-free}
M=$W/cot-free-8m
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # benchmarks/ scripts import paradecode from the checkout
# 1. training + its N=500 evaluation (lowconf at full steps: accuracy and the committed confidences),
#    ~230 s of training (~5,000 steps at stage 3's ~22 steps/s)
timeout 330 python scripts/train_cot.py --out "$M" --init paradecode/zoo/cot-8m --free-choice \
  --label-smoothing 0 --lr 3e-4 --warmup 100 --head-decay 0 --seed 5 --baseline '' \
  --time-budget 300 --eval-reserve 55 2>&1 | tee "$OUT/train.log"
# 2. the histogram beside cot-8m's (both read from their info.json; seconds)
timeout 60 python benchmarks/confidence_histograms.py --models "cot-8m,$M" \
  --out "$W/hist/confidence_histograms.png" 2>&1 | tee "$OUT/hist.log"
# 3. accuracy on a fresh seed, and how threshold rules now separate (no cache)
timeout 140 python benchmarks/cot_bench.py --model "$M" --task cot-free --device cuda --n 500 --seed 4242 \
  --strategies lowconf,threshold,eb,localleap --caches none --time-limit 100 --out "$W/bench" 2>&1 | tee "$OUT/bench.log"
tar -C "$W" -cf "$OUT/results.tar" hist bench
tar -C "$W" -cf - cot-free-8m | split -b 8M -d - "$OUT/cot-free-8m.tar."
ls -la "$OUT"
