#!/usr/bin/env python3
"""The learning-rate sweep of experiments/fidelity/lr-sweep.sh as a Markdown table of validation
top-1 (last epoch), and the rate chosen per operator: the best mean of its direct and its
ShiftAddAug variant (Mult has no augmented variant in the main table: its direct run alone).
    python3 experiments/fidelity/sweep.py sweep.db [more.db ...]   (a later database's runs
                                                                 replace an earlier one's)
"""
import re
import sqlite3
import sys
from collections import defaultdict

val = {}
for path in sys.argv[1:]:
    c = sqlite3.connect(path)
    for run, name, status in c.execute("SELECT id, name, status FROM runs ORDER BY id"):
        m = re.fullmatch(r"sweep-(.+)-lr([0-9.]+)", name)
        if not m:
            continue
        row = c.execute(
            "SELECT value FROM metrics WHERE run_id = ? AND key = 'val/top1' ORDER BY step DESC LIMIT 1",
            (run,),
        ).fetchone()
        val[(m[1], float(m[2]))] = row[0] if status == "finished" and row else status
lrs = sorted({lr for _, lr in val})
presets = [p for p in ["mult", "shift", "shift-aug", "add", "add-aug"] if any(k[0] == p for k in val)]
print("| variant | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
print("|---|" + "---|" * len(lrs))
for p in presets:
    cells = []
    for lr in lrs:
        v = val.get((p, lr), "missing")
        cells.append(f"{v * 100:.1f}" if isinstance(v, float) else "–" if v == "missing" else v)
    print(f"| {p} | " + " | ".join(cells) + " |")
print()
for op in ["mult", "shift", "add"]:
    members = [op] + ([f"{op}-aug"] if op != "mult" else [])
    score = defaultdict(list)
    for lr in lrs:
        vs = [val.get((m, lr)) for m in members]
        if all(isinstance(v, float) for v in vs):
            score[lr] = sum(vs) / len(vs)
    if score:
        best = max(score, key=score.get)
        print(f"{op}: lr {best:g} (mean validation top-1 of {', '.join(members)}: {score[best] * 100:.1f} %)")
