#!/usr/bin/env python3
"""Issue 46's table from the int_report.json files `experiments/deploy.sh` writes.

    python3 experiments/deploy_table.py --out exports --options "mult a8 s2" 82 83 84

One row per option: integer top-1, integer − float (paired per run), agreement, multiplications
in MF layers and in all, shifts, energy per image under both hardware models (the integer program,
and the float model as the Hardware view prices it), flash and peak SRAM. Accuracies are mean ±
95 % CI over the runs (Student t); a count that is the same for every run is printed once.
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

# Two-sided 95 % Student t quantiles, by degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]

LABELS = {
    "mult": "a multiply per output (16-bit activations)",
    "a8": "a multiply, 8-bit activations",
    "s1": "1 shift (the scale rounded to a power of two)",
    "s2": "2 shifts (2 signed powers of two)",
    "s3": "3 shifts",
}


def ci(values, signed=False):
    """Mean ± the 95 % half-width, in percent."""
    v = [x * 100.0 for x in values]
    m = statistics.fmean(v)
    mean = f"{m:+.2f}" if signed else f"{m:.2f}"
    if len(v) < 2:
        return mean
    t = T95[len(v) - 2] if len(v) - 2 < len(T95) else 1.96
    return f"{mean} ± {t * statistics.stdev(v) / math.sqrt(len(v)):.2f}"


def same(values, fmt="{:,}"):
    """One value when every run has it, else their range."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def energy(report, model):
    for e in report.get("energy", []):
        if e["model"] == model:
            return e
    sys.exit(f"deploy_table: run {report['run']}'s report has no energy under {model} (made before it was priced: export it again)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="exports")
    ap.add_argument("--options", default="mult a8 s1 s2 s3")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    print("| MF layers' BN requantisation | integer top-1 % | integer − float (points) | same class as float % "
          "| multiplications in MF layers | multiplications in all | shifts "
          "| µJ / image, simulator: integer (float) | µJ / image, project: integer (float) | flash KiB | peak SRAM KiB |")
    print("|---" * 11 + "|")
    for opt in a.options.split():
        reports = []
        for run in a.runs:
            path = Path(a.out) / f"run-{run}-{opt}" / "int_report.json"
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                sys.exit(f"deploy_table: {path}: {err}")
        test = [r["test"] for r in reports]
        costs = [r["costs"] for r in reports]
        diff = [t["int_top1"] - t["float_top1"] for t in test]

        def uj(model):
            es = [energy(r, model) for r in reports]
            return (same([e["energy_mj"] * 1e3 for e in es], "{:.1f}")
                    + f" ({same([e['float_energy_mj'] * 1e3 for e in es], '{:.1f}')})")

        mf = [c["mf_multiplies"] for c in costs]
        print("| " + " | ".join([
            LABELS.get(opt, opt),
            ci([t["int_top1"] for t in test]),
            ci(diff, signed=True),
            ci([t["agreement"] for t in test]),
            ("**0**" if max(mf) == 0 else same(mf)),
            same([c["total"]["mul"] for c in costs]),
            same([c["total"]["shift"] for c in costs]),
            uj("shiftaddnas"),
            uj("project"),
            same([c["flash_bytes"] / 1024 for c in costs], "{:.1f}"),
            same([c["peak_sram_bytes"] / 1024 for c in costs], "{:.0f}"),
        ]) + " |")
    floats = [r["test"]["float_top1"] for r in reports]
    print(f"\nfloat top-1 (Rust f64) {ci(floats)} over runs {', '.join(a.runs)}; "
          f"{reports[0]['test']['images']} test images each")


if __name__ == "__main__":
    main()
