#!/usr/bin/env bash
# Issue 18's studies in the order they are meant to run, in one database, so that each adopts
# the cells an earlier one trained (the same config and seed is one cell): `paper-remap`, then
# `paper-main` again — the cells it does not adopt (Mult, Shift, Shift + ShiftAddAug), rebuilding
# its database, which the machine that first ran it took along — then `add-aug-factors` (item 5,
# the longest: 9 variants × 3 seeds), which adopts its `aug` and `direct` cells from `paper-remap`,
# then `add-remap-direct` (direct Add and the augmentation, both with no remap; 2 variants ×
# 3 seeds train), then `add-wd` (the Add weights at AdderNet's weight decay; 2 variants × 3 seeds
# train), then `add-aug-bn` (the augmented passes with BN γ, β of their own; 2 variants × 3 seeds
# train).
# Stops at the first study that does not finish (exit 3: stopped, a rerun continues it).
#
#   experiments/paper-queue.sh [DB]                  # default runs-data/paper.db
#   pkill -TERM -f 'shiftadd study'                  # stop: the runs checkpoint where they are
#   SHIFTADD=path/to/shiftadd experiments/paper-queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHIFTADD:-target/debug/shiftadd}
db=${1:-runs-data/paper.db}
for study in paper-remap paper-main add-aug-factors add-remap-direct add-wd add-aug-bn; do
    echo "paper-queue: $study ($(date -u +%H:%M) UTC)" >&2
    "$bin" study "experiments/studies/$study.toml" --db "$db" || exit $?
done
echo "paper-queue: all finished ($(date -u +%H:%M) UTC)" >&2
