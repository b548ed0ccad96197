#!/usr/bin/env python3
"""Summarise a before/after database of experiments/fidelity/before-after.sh as a Markdown table.

Per (model, preset): test top-1 of each seed (`test/top1`; runs recorded before the validation
split have none: there the last `val/top1` *was* on the full test set), their mean, the last
validation top-1 where one exists, and the mean training images/s of the last epoch.
    python3 experiments/fidelity/table.py before.db [after.db]
"""
import sqlite3
import sys
import tomllib
from collections import defaultdict


def last(c, run, key):
    row = c.execute(
        "SELECT value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step DESC LIMIT 1",
        (run, key),
    ).fetchone()
    return None if row is None else row[0]


def summary(path):
    c = sqlite3.connect(path)
    cells = defaultdict(list)
    for run, name, status, config in c.execute("SELECT id, name, status, config FROM runs ORDER BY id"):
        cfg = tomllib.loads(config)
        if status != "finished":
            continue
        test = last(c, run, "test/top1")
        val = last(c, run, "val/top1")
        has_val_split = test is not None
        cells[(cfg["model"]["name"], name.replace("fmnist-mbv2tiny-", ""))].append(
            {
                "seed": cfg["train"]["seed"],
                "test": test if has_val_split else val,
                "val": val if has_val_split else None,
                "ips": last(c, run, "train/epoch_images_per_sec"),
                "lr": cfg["train"]["lr"],
            }
        )
    return cells


def fmt(v, scale=100.0, digits=1):
    return "–" if v is None else f"{v * scale:.{digits}f}"


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    dbs = [summary(p) for p in paths]
    keys = sorted({k for d in dbs for k in d}, key=lambda k: (k[0] != "micro", k[0], k[1]))
    order = ["mult", "shift", "shift-aug", "add", "add-aug"]
    keys.sort(key=lambda k: (k[0] != "micro", order.index(k[1]) if k[1] in order else 99))
    head = "| model | variant |"
    rule = "|---|---|"
    for p in paths:
        head += f" {p}: test top-1 per seed | mean | img/s |"
        rule += "---|---|---|"
    print(head)
    print(rule)
    for k in keys:
        line = f"| `{k[0]}` | {k[1]} |"
        for d in dbs:
            runs = sorted(d.get(k, []), key=lambda r: r["seed"])
            tests = [r["test"] for r in runs if r["test"] is not None]
            ips = [r["ips"] for r in runs if r["ips"] is not None]
            line += " " + " / ".join(fmt(r["test"]) for r in runs) + " |"
            line += f" **{fmt(sum(tests) / len(tests)) if tests else '–'}** |"
            line += f" {sum(ips) / len(ips):.0f} |" if ips else " – |"
        print(line)


if __name__ == "__main__":
    main()
