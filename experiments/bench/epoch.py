"""End-to-end epoch bench (issue 17): one whole epoch as a run does it — training steps, BN
re-estimation, validation, the weight snapshot and the checkpoint — of `micro` and `mbv2-tiny` on
a fixed Fashion-MNIST subset, per operator mode, for this tree and for an older commit built side
by side, printed as ratios.

Each cell is `shiftadd train` for two epochs; the figure is the second epoch: the time between
the two epochs' `val/top1` records (so start-up, data loading and the hardware cost are not
counted, and the first epoch warms the caches). Widths stay sampled in both epochs
(`aug.stop_width_frac = 1`). The subset keeps a full run's proportions (55,000 training, 5,000
validation, 2,000 BN images): `--images` training images, `--val` validation, `--bn` BN images.
Old and new alternate cell by cell, so drift on the machine hits both alike.

Usage: python epoch.py [--old REV] [--images 2048] [--val 192] [--bn 80] [--threads 2]
                       [--models micro,mbv2-tiny] [--modes mult,shift,shift-aug,add,add-aug]
                       [--reps 1] [--json OUT]
The old commit is checked out as a git worktree in target/bench-old and built once into
target/bench-old-target (the first time as long as a release build from scratch); its binary is
kept as target/bench-epoch/shiftadd-<commit>.
"""

import argparse
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The commit before issue 17's speed work (issue 16's last commit).
DEFAULT_OLD = "039b327"


def sh(cmd, cwd=ROOT, env=None):
    print("+", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def cargo_build(cwd, target):
    """Build the release `shiftadd` of the tree at `cwd` into `target` (the trees need separate
    target folders: cargo gives a workspace's own crates the same artefact names in both); the
    path of the executable."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(target), LIBTORCH=str(ROOT / ".venv/torch"))
    cmd = ["cargo", "build", "--release", "-p", "shiftadd-app", "--bin", "shiftadd",
           "--message-format=json-render-diagnostics"]
    print("+", " ".join(cmd), f"(in {cwd})", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.PIPE, text=True)
    exe = None
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            exe = msg["executable"]
    if exe is None:
        raise SystemExit(f"cargo built no executable in {cwd}")
    return pathlib.Path(exe)


def stash(exe, name):
    dest = ROOT / "target/bench-epoch" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    dest.write_bytes(exe.read_bytes())
    dest.chmod(0o755)
    return dest


def rev_parse(rev, cwd=ROOT):
    return subprocess.run(["git", "rev-parse", rev], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def build_new():
    return stash(cargo_build(ROOT, ROOT / "target"), "shiftadd-new")


def build_old(rev):
    """The old commit as a worktree in target/bench-old, built once per commit."""
    want = rev_parse(rev)
    cached = ROOT / "target/bench-epoch" / f"shiftadd-{want[:12]}"
    if cached.exists():
        return cached, want[:9]
    tree = ROOT / "target/bench-old"
    if not tree.exists():
        # A worktree whose folder went with `cargo clean` is still registered: forget it first.
        sh(["git", "worktree", "prune"])
        sh(["git", "worktree", "add", "--detach", str(tree), want])
    elif rev_parse("HEAD", tree) != want:
        sh(["git", "checkout", "--quiet", "--detach", want], cwd=tree)
    return stash(cargo_build(tree, ROOT / "target/bench-old-target"), cached.name), want[:9]


def epoch_seconds(binary, model, mode, args, work):
    """Seconds of the second epoch of a two-epoch run of `mode` on `model`."""
    db = pathlib.Path(work) / f"{binary.name}-{model}-{mode}-{time.time_ns()}.db"
    cmd = [
        str(binary), "train", str(ROOT / f"experiments/fmnist-mbv2tiny-{mode}.toml"),
        "--db", str(db), "--threads", str(args.threads),
        "--set", f"model.name={model}",
        "--set", f"data.train_subset={args.images}",
        "--set", f"data.val_images={args.val}",
        "--set", f"eval.bn_images={args.bn}",
        "--set", "eval.test=false",
        "--set", "train.epochs=2",
        "--set", "aug.stop_width_frac=1.0",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT epoch, wall_time FROM metrics WHERE key = 'val/top1' ORDER BY epoch"
        ).fetchall()
    if len(rows) != 2:
        raise SystemExit(f"{cmd}: expected 2 epochs of val/top1, got {rows}")
    return rows[1][1] - rows[0][1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=DEFAULT_OLD)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--val", type=int, default=192)
    ap.add_argument("--bn", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="micro,mbv2-tiny")
    ap.add_argument("--modes", default="mult,shift,shift-aug,add,add-aug")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()

    old, old_rev = build_old(args.old)
    new = build_new()
    results = []
    with tempfile.TemporaryDirectory(prefix="shiftadd-epoch-") as work:
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                t = {"old": [], "new": []}
                for rep in range(args.reps):
                    # Alternate which goes first.
                    order = [("old", old), ("new", new)]
                    if rep % 2:
                        order.reverse()
                    for name, binary in order:
                        t[name].append(epoch_seconds(binary, model, mode, args, work))
                row = {
                    "model": model,
                    "mode": mode,
                    "old_s": min(t["old"]),
                    "new_s": min(t["new"]),
                }
                row["ratio"] = row["old_s"] / row["new_s"]
                results.append(row)
                print(
                    f"{model:<10} {mode:<10} old {row['old_s']:7.2f} s "
                    f"({args.images / row['old_s']:6.1f} img/s)  new {row['new_s']:7.2f} s "
                    f"({args.images / row['new_s']:6.1f} img/s)  new/old speed {row['ratio']:.2f}×",
                    flush=True,
                )
    print()
    print(f"One epoch ({args.images} training + {args.val} validation + {args.bn} BN images, "
          f"{args.threads} threads; best of {args.reps}); old = {old_rev}")
    print("| model | mode | old s | old img/s | new s | new img/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['mode']} | {r['old_s']:.2f} | {args.images / r['old_s']:.1f} "
              f"| {r['new_s']:.2f} | {args.images / r['new_s']:.1f} | {r['ratio']:.2f}× |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"old": old_rev, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
