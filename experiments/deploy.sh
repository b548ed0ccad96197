#!/usr/bin/env bash
# Issue 46's table: each run of a cell as an integer program under each requantisation option,
# then one row per option, mean ± 95 % CI over the runs (experiments/deploy_table.py).
#
#   experiments/deploy.sh --db paper.db [--out DIR] RUN...      # e.g. the three seeds of a cell
#   OPTIONS="mult a8 s2" experiments/deploy.sh --db paper.db 82 83 84
#
# Options (each one `shiftadd export RUN --int DIR` with): `mult` (16-bit activations, BN a
# multiply per output), `a8` (8-bit activations), `s1`, `s2`, `s3` (MF layers' BN multipliers as
# 1, 2, 3 signed powers of two). A run whose DIR already holds an int_report.json of the same
# options is not exported again: delete the folder to redo it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHIFTADD:-target/debug/shiftadd}
db=""
out=exports
runs=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --db) db=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -*) echo "deploy.sh: unknown option $1" >&2; exit 2 ;;
        *) runs+=("$1"); shift ;;
    esac
done
[[ -n $db && ${#runs[@]} -gt 0 ]] || { echo "usage: deploy.sh --db DB [--out DIR] RUN..." >&2; exit 2; }
options=${OPTIONS:-mult a8 s1 s2 s3}
mkdir -p "$out"
for opt in $options; do
    case $opt in
        mult) args=() ;;
        a8) args=(--act-bits 8) ;;
        s[1-9]) args=(--bn-shifts "${opt#s}") ;;
        *) echo "deploy.sh: unknown option '$opt' (mult, a8, s1, s2, s3)" >&2; exit 2 ;;
    esac
    for run in "${runs[@]}"; do
        dir=$out/run-$run-$opt
        if [[ ! -e $dir/int_report.json ]]; then
            echo "deploy.sh: run $run, $opt → $dir" >&2
            "$bin" export "$run" --int "$dir" "${args[@]}" --db "$db" > "$dir.log" 2>&1 || {
                echo "deploy.sh: run $run, $opt failed; see $dir.log" >&2; exit 1; }
        fi
    done
done
python3 experiments/deploy_table.py --out "$out" --options "$options" "${runs[@]}"
