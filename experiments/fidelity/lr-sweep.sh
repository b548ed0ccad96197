#!/usr/bin/env bash
# Issue 13, item 8: the learning rate per operator, chosen on validation. `micro` on Fashion-MNIST,
# 6,000 training images + 1,000 validation images held out besides them, 3 epochs, seed 0, for
# every variant of the main table at lr (per 128 images) 0.025, 0.05, 0.1, 0.2; one remap
# (cdf-affine) for all, so that a direct/augmented pair differs in aug.hybrid alone.
#   BIN=path/to/shiftadd DB=sweep.db bash experiments/fidelity/lr-sweep.sh
# MODEL=mbv2-tiny sweeps that model instead; TEST=true also evaluates the test set at the end (it is
# never used to choose: sweep.py reads validation only).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug/shiftadd}
DB=${DB:-lr-sweep.db}
THREADS=${THREADS:-2}
MODEL=${MODEL:-micro}
TEST=${TEST:-false}
SEED=${SEED:-0}
for lr in ${LRS:-0.025 0.05 0.1 0.2}; do
  for p in ${PRESETS:-mult shift shift-aug add add-aug}; do
    "$BIN" train "experiments/fmnist-mbv2tiny-$p.toml" --db "$DB" --threads "$THREADS" \
      --set model.name="$MODEL" --set data.train_subset=6000 --set data.val_images=1000 \
      --set train.epochs=3 --set train.seed="$SEED" --set eval.test="$TEST" --set train.lr="$lr" \
      --set remap.kind=cdf-affine \
      --name "sweep-$p-lr$lr$([ "$SEED" = 0 ] || echo "-seed$SEED")" || echo "sweep $p lr $lr failed"
  done
done
