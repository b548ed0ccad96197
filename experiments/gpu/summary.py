"""The GPU check's summary (experiments/gpu/check.sh): its tables, in Markdown, from what the
check wrote to OUT (check.db, add-bench.json, torch-b*.json, cells.txt and cells-k*-*.db).

Usage: python summary.py OUT [--device cuda]     # the tables
       python summary.py --best-k OUT             # the K with the most images/s in all
"""

import argparse
import json
import pathlib
import sqlite3
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests/fixtures/steps20/steps20.json"
# A seed is the same run on any device when the device's losses stay this close to the CPU's:
# the first step differs only by the order of float sums (init and data are the same bits), later
# steps by that difference carried through 20 updates (tiny batches, Add's |x - f| kinks).
FIRST_STEP_TOL = 1e-3
ALL_STEPS_TOL = 5e-2
WARM_STEPS = 3  # steps left out of a step's median (allocator and kernel warm-up)


def series(db, run_name, key):
    row = db.execute("SELECT id FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", (run_name,)).fetchone()
    if row is None:
        return None
    return [v for (v,) in db.execute(
        "SELECT value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step", (row[0], key))]


def seed_table(db, device):
    recorded = json.loads(RECORDED.read_text())
    out = ["## seed: the 20-step fixtures on %s vs the CPU (same binary, same seed)" % device, "",
           "| fixture | steps | step 1 |Δ| | max |Δ| | max |Δ| vs recorded CPU | within %g / %g |"
           % (FIRST_STEP_TOL, ALL_STEPS_TOL), "|---|---|---|---|---|---|"]
    for name in sorted(recorded):
        dev = series(db, f"seed-{device}-{name}", "train/loss")
        cpu = series(db, f"seed-cpu-{name}", "train/loss")
        if not dev or not cpu:
            out.append(f"| {name} | — | — | — | — | did not run |")
            continue
        n = min(len(dev), len(cpu))
        diffs = [abs(a - b) for a, b in zip(dev, cpu)]
        rec = recorded[name]["train/loss"]
        vs_rec = max(abs(a - b) for a, b in zip(dev, rec)) if rec else float("nan")
        ok = n == len(rec) and diffs[0] <= FIRST_STEP_TOL and max(diffs) <= ALL_STEPS_TOL
        out.append(f"| {name} | {n} | {diffs[0]:.2e} | {max(diffs):.2e} | {vs_rec:.2e} | {'yes' if ok else '**no**'} |")
    return out


def step_table(db, out_dir):
    rows, ours = [], {}
    for ref in sorted(out_dir.glob("torch-b*.json"), key=lambda p: int(p.stem[7:])):
        batch = int(ref.stem[7:])
        try:
            torch = json.loads(ref.read_text()).get("train", {})
        except ValueError:
            torch = {}
        for mode in ["mult", "shift", "add", "mult-aug", "shift-aug", "add-aug"]:
            s = series(db, f"step-{mode}-b{batch}", "train/images_per_sec")
            mine = statistics.median(s[WARM_STEPS:] or s) if s else None
            ours[(mode, batch)] = mine
            theirs = torch.get(mode, {}).get("images_per_s")
            ratio = f"{mine / theirs:.2f}×" if mine and theirs else "—"
            rows.append(f"| {mode} | {batch} | {fmt(mine)} | {fmt(theirs)} | {ratio} |")
    out = ["## step: images/s of a training step (mbv2-tiny, synthetic 3×32×32; median of warm steps)", "",
           "| mode | batch | this project | PyTorch eager | ratio |", "|---|---|---|---|---|"] + rows
    out += ["", "Add vs Mult (this project): " + ", ".join(
        f"batch {b}: {ours[('add', b)] / ours[('mult', b)]:.0%}"
        for b in sorted({b for (_, b) in ours}) if ours.get(("add", b)) and ours.get(("mult", b)))]
    return out


def cells(out_dir):
    """(K, images/s in all by wall time, images/s in all by the cells' own steps) per K."""
    path = out_dir / "cells.txt"
    result = []
    for line in path.read_text().splitlines() if path.exists() else []:
        k, images, t0, t1, batch = line.split()
        k, images = int(k), int(images)
        steps = 0.0
        for db_path in out_dir.glob(f"cells-k{k}-*.db"):
            with sqlite3.connect(db_path) as db:
                s = series(db, db_path.stem, "train/images_per_sec")
                if s:
                    steps += statistics.median(s[WARM_STEPS:] or s)
        finished = len(list(out_dir.glob(f"cells-k{k}-*.db")))
        result.append((k, finished * images / max(float(t1) - float(t0), 1e-9), steps, int(batch)))
    return result


def cells_table(out_dir):
    c = cells(out_dir)
    batch = c[0][3] if c else "?"
    out = [f"## cells: K one-epoch Mult cells at once (mbv2-tiny, batch {batch})", "",
           "| K | images/s in all (wall, start-up included) | images/s in all (sum of the cells' steps) |",
           "|---|---|---|"]
    for k, wall, steps, _ in c:
        out.append(f"| {k} | {wall:,.0f} | {steps:,.0f} |")
    if c:
        out += ["", f"best K (wall): {best_k(out_dir)}"]
    return out


def best_k(out_dir):
    c = cells(out_dir)
    return max(c, key=lambda r: r[1])[0] if c else 1


def study_table(db):
    out = ["## study: paper-main-mbv2tiny on synthetic data, in the time left", ""]
    row = db.execute("SELECT id FROM studies WHERE name = 'paper-main-mbv2tiny'").fetchone() \
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'studies'").fetchone() else None
    if row is None:
        return out + ["not started"]
    done, total = db.execute(
        "SELECT SUM(r.status = 'finished'), COUNT(*) FROM study_runs s JOIN runs r ON r.id = s.run_id "
        "WHERE s.study_id = ?", row).fetchone()
    epochs = db.execute(
        "SELECT COUNT(*) FROM metrics m JOIN study_runs s ON s.run_id = m.run_id "
        "WHERE s.study_id = ? AND m.key = 'val/top1'", row).fetchone()[0]
    try:
        import tomllib
        study = tomllib.loads((ROOT / "experiments/studies/paper-main-mbv2tiny.toml").read_text())
        cells_in_study = len(study["variant"]) * len(study["seeds"])
    except (ImportError, OSError, KeyError, ValueError):
        cells_in_study = "?"
    return out + [f"{done or 0} of {cells_in_study} cells finished ({total} started), {epochs} epochs trained"]


def add_table(out_dir):
    path = out_dir / "add-bench.json"
    head = ["## add: the Add implementations on the device (shiftadd add-bench)", ""]
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return head + ["did not run (logs/add-bench.log)"]
    out = head + [f"{r['device']}, tiled kernels {'ran' if r['tiled'] else '**unavailable** (see the log)'}; "
                  "largest error over the reference's scale, against the float64 formulas:", "",
                  "| impl | type | forward | dX | dF |", "|---|---|---|---|---|"]
    for a in r["accuracy"]:
        out.append(f"| {a['implementation']} | {a['kind']} | {a['forward']:.1e} | {a['input_grad']:.1e} | "
                   f"{a['weight_grad']:.1e} |")
    t = r["timings"]
    mult = sum(x["mult_ms"] for x in t)
    ref = sum(x["reference_ms"] for x in t)
    add = sum(x["add_ms"] for x in t)
    name = t[0]["add_implementation"] if t else "add"
    out += ["", f"{r['model']}'s {len(t)} Add layer shapes, batch {r['batch']}, {r['resolution']} px, float32, "
            "forward + dX + dF (sum of per-shape medians, ms):", "",
            "| Mult conv | ATen Add | %s | Add / Mult | ATen Add / Mult |" % name, "|---|---|---|---|---|",
            f"| {mult:.2f} | {ref:.2f} | {add:.2f} | {add / mult if mult else float('nan'):.2f}x | "
            f"{ref / mult if mult else float('nan'):.2f}x |"]
    return out


def fmt(x):
    return "—" if x is None else f"{x:,.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--best-k", action="store_true")
    a = ap.parse_args()
    out_dir = pathlib.Path(a.out)
    if a.best_k:
        print(best_k(out_dir))
        return
    env = (out_dir / "env.txt").read_text() if (out_dir / "env.txt").exists() else ""
    lines = ["# GPU check (experiments/gpu/check.sh)", "", "```", env.strip(), "```", ""]
    with sqlite3.connect(out_dir / "check.db") as db:
        for table in (seed_table(db, a.device), add_table(out_dir), step_table(db, out_dir), cells_table(out_dir),
                      study_table(db)):
            lines += table + [""]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
