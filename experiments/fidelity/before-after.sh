#!/usr/bin/env bash
# Issue 13, item 9: the small but real recipe run on the code before the fidelity changes and
# again after them, same seeds. `micro` (and `mbv2-tiny` for mult and add) on Fashion-MNIST,
# 6,000 training images, the full test set, 3 epochs, seeds 0 and 1.
#   BIN=path/to/shiftadd DB=results.db PHASE=before|after bash experiments/fidelity/before-after.sh
# PHASE=after also holds out data.val_images=1000 besides the 6,000 training images.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug/shiftadd}
DB=${DB:-fidelity.db}
PHASE=${PHASE:-after}
THREADS=${THREADS:-2}
extra=()
if [ "$PHASE" = after ]; then extra+=(--set data.val_images=1000); fi
run() { # model preset seed
  local lr=()
  if [ "$PHASE" = after ] && [ "$1" = micro ]; then
    # The rates the micro sweep chose (RESULTS.md); the presets carry mbv2-tiny's.
    case "$2" in add*) lr=(--set train.lr=0.1) ;; *) lr=(--set train.lr=0.8) ;; esac
  fi
  "$BIN" train "experiments/fmnist-mbv2tiny-$2.toml" --db "$DB" --threads "$THREADS" \
    --set model.name="$1" --set data.train_subset=6000 --set train.epochs=3 \
    --set train.seed="$3" "${extra[@]}" "${lr[@]}" || echo "run $1 $2 seed $3 failed"
}
for seed in 0 1; do
  for p in mult shift shift-aug add add-aug; do run micro "$p" "$seed"; done
done
for seed in 0 1; do
  for p in mult add; do run mbv2-tiny "$p" "$seed"; done
done
