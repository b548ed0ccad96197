#!/usr/bin/env bash
# The project's studies in the order they are meant to run, in one database, so that each adopts
# the cells an earlier one trained (the same config and seed is one cell). Issue 18's six
# (`paper-remap`, `paper-main`, `add-aug-factors`, `add-remap-direct`, `add-wd`, `add-aug-bn`)
# have finished: the committed results database holds them, and rerunning them trains nothing.
# Then issue 41's: `aug-control` (the positive control: NetAug on Mult, and the Shift pair at six
# seeds), then `add-operating-point` (an Add parameterisation where both models learn), then
# `add-remap-operating-point` (the remaps at the operating point it found, picked on validation by
# `experiments/operating_point.py`), then `aug-control-mbv2tiny` (the control's pairs on mbv2-tiny: item 6, for when micro cannot show
# augmentation gains; days of this CPU).
#
# A new database starts from the committed results (`experiments/results/paper.db.gz`); whatever
# way the queue ends — finished, failed, or a study stopped (SIGTERM: its runs checkpoint where
# they are) — the results database is written again from this one (settled runs only: a cell
# still in flight is not in it, and retrains on a machine that lacks its checkpoint).
#
#   experiments/paper-queue.sh [DB]          # default $HOME/shiftadd-runs/paper.db
#   pkill -TERM -f 'shiftadd study'          # stop: the runs checkpoint, the queue compacts
#   SHIFTADD=path/to/shiftadd experiments/paper-queue.sh
#
# The default database lies outside the checkout: a session's checkout is laid anew, while the
# machine (and a database and checkpoints beside it) may be handed on as it was.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${SHIFTADD:-target/debug/shiftadd}
db=${1:-$HOME/shiftadd-runs/paper.db}
results=experiments/results/paper.db.gz
if [[ ! -e $db ]]; then
    echo "paper-queue: $db is new: importing $results" >&2
    "$bin" import "$results" --db "$db" || exit $?
fi
status=0
for study in paper-remap paper-main add-aug-factors add-remap-direct add-wd add-aug-bn \
    aug-control add-operating-point add-remap-operating-point aug-control-mbv2tiny; do
    echo "paper-queue: $study ($(date -u +%H:%M) UTC)" >&2
    sets=()
    if [[ $study == add-remap-operating-point ]]; then
        # The operating point add-operating-point found (its best augmented variant on validation).
        mapfile -t op < <(python3 experiments/operating_point.py --db "$db" --shiftadd "$bin")
        [[ ${#op[@]} -gt 0 ]] || { status=1; break; }
        sets=("${op[@]/#/--set=}")
    fi
    "$bin" study "experiments/studies/$study.toml" --db "$db" "${sets[@]}" || { status=$?; break; }
done
[[ $status -eq 0 ]] && echo "paper-queue: all finished ($(date -u +%H:%M) UTC)" >&2
"$bin" compact "$results" --db "$db" || exit $?
exit $status
