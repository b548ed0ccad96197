#!/usr/bin/env bash
# The one script for a GPU machine (issue 42): everything the project wants to know from a GPU,
# in one go, under 9 minutes, each part under its own timeout; logs, a database and the summary
# written to $OUT, the summary table printed last.
#
#   experiments/gpu/check.sh                 # on the GPU machine (--device cuda)
#   experiments/gpu/check.sh --dry-run       # here: the same steps on the CPU at tiny sizes
#
# Parts, in order:
#   seed   the four 20-step fixtures (tests/fixtures/steps20) on the device and on the CPU, same
#          binary, same seed: per-step losses compared (a seed is the same run on any device)
#   add    `shiftadd add-bench`: each Add implementation on the device against the float64
#          formulas (the NVRTC-compiled tiled kernels among them), then forward + both gradients
#          of mbv2-tiny's Add layer shapes beside the Mult conv of each shape
#   step   images/s of a training step per operator mode (mbv2-tiny, synthetic 3x32x32) at batch
#          128 and 1024, against experiments/bench/torch_reference.py's same model in PyTorch
#          eager on the same device
#   cells  K one-epoch Mult cells at once (K = 1, 4, 8, 12): images/s in all, the best K
#   study  in the time left, paper-main-mbv2tiny on synthetic data, K cells at a time, stopped
#          (SIGTERM: its runs checkpoint) at the deadline; how many cells finished
#
# Environment: OUT (default ./gpu-check-out), SHIFTADD (the binary; default target/device/shiftadd,
# then target/release/shiftadd), PYTHON (one with torch; default python3), CHECK_SECONDS (the
# whole check's budget, default 510).
set -uo pipefail
cd "$(dirname "$0")/../.."
device=cuda
dry=0
for a in "$@"; do
    case $a in
        --dry-run) dry=1; device=cpu ;;
        --device=*) device=${a#--device=} ;;
        *) echo "usage: check.sh [--dry-run] [--device=cuda|cpu]" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-check-out}
PYTHON=${PYTHON:-python3}
budget=${CHECK_SECONDS:-510}
bin=${SHIFTADD:-}
if [[ -z $bin ]]; then
    for b in target/device/shiftadd target/release/shiftadd; do
        [[ -x $b ]] && { bin=$b; break; }
    done
fi
[[ -n $bin && -x $bin ]] || { echo "check: no shiftadd binary (set SHIFTADD)" >&2; exit 2; }
# The device build (experiments/gpu/device-build.sh) finds libtorch through its python's torch.
if ldd "$bin" 2>/dev/null | grep -q 'not found'; then
    torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
        || { echo "check: $bin lacks libtorch and $PYTHON has no torch" >&2; exit 2; }
    export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
mkdir -p "$OUT/logs"
db=$OUT/check.db
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
log() { echo "check: $* ($(( $(date +%s) - start )) s)" | tee -a "$OUT/logs/check.log" >&2; }
# Run "$@" under a timeout of $1 seconds (times $scale), output to logs/$2.log; never fails the
# script.
timed() {
    local secs=$(( $1 * scale )) name=$2; shift 2
    timeout --signal=TERM --kill-after=10 "$secs" "$@" >>"$OUT/logs/$name.log" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && log "$name: exit $rc (logs/$name.log)"
    return 0
}

# The parts' timeouts are sized for the GPU machine; the dry run shares two cores with whatever
# else runs (the test suite runs it beside other tests), so it waits longer.
if [[ $dry -eq 1 ]]; then
    scale=${CHECK_TIMEOUT_SCALE:-5}
    batches=(8 16); steps=3; ks=(1 2); cell_batch=16; cell_images=64; modes=mult,shift,add,mult-aug,shift-aug,add-aug
    study_set=(--set data.synthetic_train=128 --set data.synthetic_test=32 --set data.val_images=16
               --set eval.bn_images=16 --set train.epochs=1 --set train.batch_size=16)
    threads=1
    add_bench_set=(--batch 4 --resolution 16 --reps 1)
else
    scale=${CHECK_TIMEOUT_SCALE:-1}
    batches=(128 1024); steps=24; ks=(1 4 8 12); cell_batch=128; cell_images=16384; modes=mult,shift,add,mult-aug,shift-aug,add-aug
    study_set=(--set data.synthetic_train=20000 --set data.synthetic_test=2000 --set data.val_images=2000)
    threads=4
    add_bench_set=(--batch 128 --resolution 32 --reps 10)
fi

log "device $device, binary $bin, budget $budget s, out $OUT"
{
    echo "binary: $bin"
    ldd "$bin" 2>/dev/null | grep -E '^\s*lib(torch|c10)' || true
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    "$PYTHON" -c 'import torch; print("python torch", torch.__version__, "cuda", torch.cuda.is_available())'
} >"$OUT/env.txt" 2>&1

# seed: the fixtures on the device, then on the CPU.
for dev in "$device" cpu; do
    for cfg in tests/fixtures/steps20/*.toml; do
        name=$(basename "$cfg" .toml)
        timed 60 seed "$bin" train "$cfg" --db "$db" --device "$dev" --name "seed-$dev-$name" --tags check-seed
    done
    [[ $dev == cpu ]] && break
done
log "seed done"

# add: the Add kernels checked and timed on the device.
timed 90 add-bench "$bin" add-bench --device "$device" --threads "$threads" --json "$OUT/add-bench.json" \
    "${add_bench_set[@]}"
log "add done"

# step: the project's step per mode and batch, then PyTorch's.
for b in "${batches[@]}"; do
    for mode in ${modes//,/ }; do
        op=${mode%-aug}; hybrid=none; [[ $mode == *-aug ]] && hybrid=mult
        timed 90 step "$bin" train experiments/smoke.toml --db "$db" --device "$device" --threads "$threads" \
            --name "step-$mode-b$b" --tags check-step \
            --set model.name=mbv2-tiny --set data.dataset=synthetic --set ops.kind="$op" --set aug.hybrid=$hybrid \
            --set train.batch_size="$b" --set data.synthetic_train=$(( b * steps )) --set data.synthetic_test=32 \
            --set data.val_images=16 --set eval.bn_images=16 --set eval.test=false --set train.epochs=1 \
            --set aug.stop_width_frac=1
    done
    timed 150 "torch-b$b" "$PYTHON" experiments/bench/torch_reference.py --only train --device "$device" \
        --batch "$b" --channels 3 --threads "$threads" --modes "$modes" $([[ $dry -eq 1 ]] && echo --quick)
    # The JSON is the log's last object.
    "$PYTHON" -c 'import sys,json; t=open(sys.argv[1]).read(); i=t.rfind("\n{"); print(t[i+1:] if i>=0 else t[t.find("{"):])' \
        "$OUT/logs/torch-b$b.log" >"$OUT/torch-b$b.json" 2>/dev/null || true
done
log "step done"

# cells: K one-epoch Mult cells at once, images/s in all (each cell's own images over the wall time).
for k in "${ks[@]}"; do
    t0=$(date +%s.%N)
    pids=()
    for i in $(seq 1 "$k"); do
        timeout --signal=TERM $(( 120 * scale )) "$bin" train experiments/smoke.toml --db "$OUT/cells-k$k-$i.db" --device "$device" \
            --threads "$threads" --name "cells-k$k-$i" --tags check-cells \
            --set model.name=mbv2-tiny --set data.dataset=synthetic --set ops.kind=mult --set aug.hybrid=none \
            --set train.batch_size=$cell_batch --set data.synthetic_train=$cell_images --set data.synthetic_test=32 \
            --set data.val_images=16 --set eval.bn_images=16 --set eval.test=false --set train.epochs=1 \
            >>"$OUT/logs/cells.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s.%N)
    echo "$k $cell_images $t0 $t1 $cell_batch" >>"$OUT/cells.txt"
done
log "cells done"

# study: in the time that is left (less 40 s for the report and the summary).
k_best=$("$PYTHON" experiments/gpu/summary.py --best-k "$OUT" 2>/dev/null || echo 1)
secs=$(( $(left) - 40 ))
if (( secs > 20 )); then
    log "study: paper-main-mbv2tiny on synthetic data, $k_best at a time, $secs s"
    timed "$secs" study "$bin" study experiments/studies/paper-main-mbv2tiny.toml --db "$db" --parallel "$k_best" \
        --set data.dataset=synthetic --set train.device="$device" --set train.threads="$threads" "${study_set[@]}"
else
    log "study: no time left"
fi
timed 30 study-report "$bin" study experiments/studies/paper-main-mbv2tiny.toml --db "$db" --report md \
    --set data.dataset=synthetic --set train.device="$device" --set train.threads="$threads" "${study_set[@]}"
log "study done"

"$PYTHON" experiments/gpu/summary.py "$OUT" --device "$device" | tee "$OUT/summary.md"
