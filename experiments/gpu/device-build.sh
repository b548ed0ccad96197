#!/usr/bin/env bash
# The shiftadd binary for the GPU machine (issue 42), built here, carried there.
#
# The GPU machine has no cargo and no registry; its python holds torch 2.11.0 (+cu130), which
# tch 0.24 binds (this project pins tch 0.26 for torch 2.13.0, the wheel it installs here). The
# project keeps its pin — every figure and test here is on 2.13 — and this script makes the
# second build: a copy of the tree whose manifests name tch/torch-sys 0.24, built in release
# against the PyPI wheel of torch 2.11.0 in .venv-device (its CPU and CUDA libraries are the
# device's, by soname), stripped into target/device/shiftadd (about 30 MB: with the tracked tree,
# under the 64 MiB a device run carries).
#
# At run time the binary finds libtorch through LD_LIBRARY_PATH, which experiments/gpu/check.sh
# sets from its python's torch (`torch/lib`); the rpath it was linked with names this machine's
# .venv-device, which does not exist there.
#
#   experiments/gpu/device-build.sh            # build (the first time: torch wheel + ~15 min)
#   experiments/gpu/device-build.sh --rehearse # and train a one-epoch run with it here, on the
#                                              # CPU, against .venv-device's libraries
# Then, with the device tool: carry target/device, run `experiments/gpu/check.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
torch_version=${DEVICE_TORCH:-2.11.0}
tch_version=${DEVICE_TCH:-0.24}
venv=.venv-device
src=target/device-src
out=target/device

if [[ ! -e $venv/.torch-$torch_version ]]; then
    echo "device-build: installing torch==$torch_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$torch_version"
    touch "$venv/.torch-$torch_version"
fi
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')

# The tree as git sees it (tracked, and new files not ignored), manifests re-pinned.
rm -rf "$src"
mkdir -p "$src"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$src" 2>/dev/null || true
sed -i -E "s/^(tch|torch-sys) = \"[0-9.]+\"/\1 = \"$tch_version\"/" \
    "$src/Cargo.toml" "$src"/*/Cargo.toml
rm -f "$src/Cargo.lock"
echo "device-build: tch $tch_version against torch $torch_version ($torch_dir)" >&2
(cd "$src" && env -u LIBTORCH_USE_PYTORCH LIBTORCH="$torch_dir" CARGO_TARGET_DIR="$PWD/../device-target" \
    cargo build --release -p shiftadd-app --bin shiftadd)
mkdir -p "$out"
strip -o "$out/shiftadd" target/device-target/release/shiftadd
{
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo "tch $tch_version, torch $torch_version, built $(date -u +%FT%TZ)"
    ls -l "$out/shiftadd"
} >"$out/BUILD.txt"
cat "$out/BUILD.txt" >&2

if [[ ${1:-} == --rehearse ]]; then
    export LD_LIBRARY_PATH=$torch_dir/lib
    ldd "$out/shiftadd" | grep -E '^\s*lib(torch|c10)' >&2
    ldd "$out/shiftadd" | grep -q 'libtorch_cuda.so' || { echo "device-build: libtorch_cuda is not linked" >&2; exit 1; }
    work=$(mktemp -d)
    "$out/shiftadd" train experiments/smoke.toml --db "$work/rehearse.db" --device cpu --set train.epochs=1
    rm -rf "$work"
    echo "device-build: rehearsed: the device binary trained a run here against torch $torch_version" >&2
fi
