"""Which wins on this machine for a study (issue 17, item 4): cells one at a time with every core's
thread each (`--parallel 1`), or as many cells at once as cores with one thread each
(`--parallel 2` on 2 cores, the study tool splitting the `train.threads` budget)?

A study of four cells (shift-aug and add-aug × 2 seeds) of one epoch on a Fashion-MNIST subset,
run both ways with `shiftadd study`; prints the wall time of each and the ratio.

Usage: python threads.py [--bin target/release/shiftadd] [--models micro,mbv2-tiny]
                         [--images 1024] [--parallel 1,2]
"""

import argparse
import pathlib
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

STUDY = """
name = "threads-{model}"
base = "{root}/experiments/fmnist-mbv2tiny-mult.toml"
seeds = [0, 1]
metric = "val/top1"
baseline = "shift-aug"

[config.model]
name = "{model}"

[config.data]
train_subset = {images}
val_images = 192

[config.eval]
bn_images = 80
test = false

[config.train]
epochs = 1

[[variant]]
name = "shift-aug"
set = {{ "ops.kind" = "shift", "aug.hybrid" = "mult" }}

[[variant]]
name = "add-aug"
set = {{ "ops.kind" = "add", "aug.hybrid" = "mult" }}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/shiftadd"))
    ap.add_argument("--models", default="micro,mbv2-tiny")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--parallel", default="1,2")
    args = ap.parse_args()
    print("| model | --parallel | threads per cell | wall s | cells/hour |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="shiftadd-threads-") as work:
        for model in args.models.split(","):
            study = pathlib.Path(work) / f"{model}.toml"
            study.write_text(STUDY.format(model=model, root=ROOT, images=args.images))
            for k in [int(p) for p in args.parallel.split(",")]:
                db = pathlib.Path(work) / f"{model}-{k}.db"
                t0 = time.perf_counter()
                subprocess.run([args.bin, "study", str(study), "--db", str(db), "--parallel", str(k)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall = time.perf_counter() - t0
                cores = len(__import__("os").sched_getaffinity(0))
                print(f"| {model} | {k} | {max(1, cores // k)} | {wall:.1f} | {4 * 3600 / wall:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
