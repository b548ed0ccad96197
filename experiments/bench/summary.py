"""Print the ratio tables of `make bench` from criterion's estimates and the PyTorch reference.

Usage: python summary.py CRITERION_DIR TORCH_JSON [--markdown]
  CRITERION_DIR  target/criterion (written by `cargo bench -p shiftadd-core`)
  TORCH_JSON     the output of torch_reference.py (same threads)
"""

import json
import pathlib
import sys


def criterion_means(root):
    """{(group, function, parameter): mean seconds} from criterion's `new/` records."""
    out = {}
    for bench in pathlib.Path(root).glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        key = (meta["group_id"], meta.get("function_id"), meta.get("value_str"))
        out[key] = est["mean"]["point_estimate"] * 1e-9
    return out


def fmt_ms(s):
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def table(headers, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    md = "--markdown" in sys.argv
    means = criterion_means(sys.argv[1])
    ref = json.loads(pathlib.Path(sys.argv[2]).read_text())
    threads = ref["threads"]

    conv = {}
    for (group, fn, param), secs in means.items():
        if group == "conv" and param:
            conv.setdefault(param, {})[fn] = secs
    rows, worst_unfold, worst_conv = [], float("inf"), 0.0
    for param, m in conv.items():
        if not {"add", "unfold", "mult"} <= m.keys():
            continue
        model, key = param.split("/", 1)
        py = ref.get("conv", {}).get(key, {})
        vs_unfold = m["unfold"] / m["add"]
        vs_conv = m["add"] / m["mult"]
        worst_unfold, worst_conv = min(worst_unfold, vs_unfold), max(worst_conv, vs_conv)
        rows.append([
            model, key, fmt_ms(m["add"]), fmt_ms(m["unfold"]), fmt_ms(m["mult"]),
            f"{vs_unfold:.0f}x", f"{vs_conv:.2f}x",
            fmt_ms(py["unfold_s"]) if "unfold_s" in py else "-",
            f"{py['unfold_s'] / m['add']:.0f}x" if "unfold_s" in py else "-",
        ])
    if rows:
        print(f"Conv layers, forward + backward, batch {ref.get('batch', 64)}, {threads} threads (ms)")
        print(table(["model", "shape (cin x size - cout k s g)", "add", "unfold (Rust)", "conv",
                     "unfold/add", "add/conv", "unfold (Python)", "python unfold/add"], rows, md))
        print(f"worst case: add is {worst_unfold:.0f}x faster than the unfold reference, "
              f"{worst_conv:.2f}x the time of an ordinary conv\n")

    rows = []
    for mode, py in ref.get("train", {}).items():
        secs = means.get(("train_step", mode, None))
        if secs is None:
            continue
        rows.append([mode, f"{64 / secs:.1f}", f"{py['images_per_s']:.1f}",
                     f"{py['step_s'] / secs:.2f}x"])
    if rows:
        print(f"Training step, mbv2-tiny, batch 64, {threads} threads (images/s)")
        print(table(["mode", "shiftadd (Rust)", "PyTorch Python", "speed-up"], rows, md))
    secs = means.get(("train_step", "mult", None))
    macs = ref.get("mult_macs_per_image")
    if secs and macs:
        # A training step is about three forward passes (forward, input and weight gradients).
        flops = 6 * macs * 64 / secs
        mhz = max(float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz"))
        peak = threads * mhz * 1e6 * 2 * 8 * 2  # 2 FMA units × 8 fp32 lanes (AVX2) × 2 flops
        print(f"\nmult step: {flops / 1e9:.1f} GFLOP/s ({macs / 1e6:.2f} M MACs per image × 6 × "
              f"{64 / secs:.0f} images/s); peak of {threads} cores at {mhz / 1e3:.2f} GHz with "
              f"AVX2 FMA: {peak / 1e9:.0f} GFLOP/s ({100 * flops / peak:.0f} %)")


if __name__ == "__main__":
    main()
