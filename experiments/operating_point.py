#!/usr/bin/env python3
"""Issue 41, item 3: the Add operating point the remap question is asked on, chosen mechanically.

Reads a finished `add-operating-point` study from a database (through `shiftadd study --report
csv --metric val/top1`) and prints, one per line, the `key=value` overrides (TOML literals) of
its augmented variant with the highest mean validation top-1 — the last epoch's, over its seeds —
without its `remap.kind` (the remap is what the next study varies). Chosen on validation before any
test figure of the next study exists, by a rule written before this study's numbers (RESULTS.md).
Exits 1, saying why, if the study is not finished (a cell missing, failed, running or pruned).

    experiments/operating_point.py --db DB [--study FILE] [--shiftadd BIN]
"""
import argparse
import csv
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path


def literal(v):
    """A TOML literal of a study file's value (what `--set` reads)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


def main():
    root = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--study", default=str(root / "studies" / "add-operating-point.toml"))
    ap.add_argument("--shiftadd", default="target/debug/shiftadd")
    a = ap.parse_args()
    study = tomllib.loads(Path(a.study).read_text())
    variants = {v["name"]: v.get("set", {}) for v in study["variant"]}
    report = subprocess.run(
        [a.shiftadd, "study", a.study, "--db", a.db, "--report", "csv", "--metric", "val/top1"],
        capture_output=True, text=True)
    if report.returncode != 0:
        sys.exit(f"operating_point: {a.study}: {report.stderr.strip()}")
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    seeds = len(study["seeds"])
    unfinished = [r["variant"] for r in rows
                  if int(r["n"]) < seeds or any(int(r[k]) for k in ("missing", "failed", "running", "pruned"))]
    if unfinished or not rows:
        sys.exit(f"operating_point: {study['name']} is not finished ({', '.join(unfinished) or 'no cells'})")
    augmented = [r for r in rows if variants[r["variant"]].get("aug.hybrid", "mult") != "none"]
    best = max(augmented, key=lambda r: float(r["mean"]))
    print(f"operating_point: {best['variant']} (mean val/top1 {float(best['mean']) * 100:.2f} %, of "
          + ", ".join(f"{r['variant']} {float(r['mean']) * 100:.2f}" for r in augmented) + ")",
          file=sys.stderr)
    for k, v in variants[best["variant"]].items():
        if k != "remap.kind":
            print(f"{k}={literal(v)}")


if __name__ == "__main__":
    main()
