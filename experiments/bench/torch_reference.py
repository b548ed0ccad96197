"""PyTorch (Python, eager) reference for `make bench`.

The same computations as the Rust benches, written the way a researcher would in PyTorch:

* `conv`: for every conv layer shape of `mbv2-tiny` and `mcunet` (Fashion-MNIST input, 32 px,
  batch 64), forward + backward of an ordinary conv and of the usual AdderNet conv (unfold, then
  |X - F| summed, with AdderNet's custom backward: full-precision dF, HardTanh dX).
* `train`: one training step of `mbv2-tiny` (batch 64) per operator mode, with the project's
  recipe: Nesterov SGD (momentum 0.9, weight decay 4e-5 on conv/linear weights), label smoothing
  0.1, MF layers = every conv but the stem (`mf_layers = "body"`), Shift = DeepShift-Q 5-bit
  weights + 16.16 activations (straight-through), Add = AdderNet + cdf-affine remap + KL
  regulariser (1e-4) + adaptive gradient scaling (eta 0.2). `*-aug` modes add ShiftAddAug's
  augmented step: a wider multiplicative sub-model sharing the weights (fixed at expand 2.2 and
  width 1.8, the same sub-model the Rust bench uses).

Prints one JSON object on stdout: {"threads": n, "conv": {...}, "train": {...}}.
Usage: python torch_reference.py [--threads 2] [--only conv|train] [--quick]
                                 [--device cpu|cuda] [--batch 64] [--modes mult,add-aug] [--channels 1]
         (`--device cuda`: every tensor made there, each timing synchronised; what the GPU
          check, experiments/gpu/check.sh, compares the project's step with)
       python torch_reference.py --memory MODE [--steps N] [--batch 64]
         (build MODE's model and run N training steps, untimed: for `/usr/bin/time -v`;
          --steps 0 gives the baseline)
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

BATCH = 64
CHANNELS = 1  # Fashion-MNIST; 3 for the synthetic data set the GPU check trains on
RES = 32


# --- architecture (mirrors core/src/model.rs ArchSpec::named) -------------------------------

def make_divisible(v, divisor=8):
    r = math.floor((v + divisor / 2) / divisor) * divisor
    r = max(r, divisor)
    if r < 0.9 * v:
        r += divisor
    return int(r)


def arch(name):
    """(stem_c, blocks[(stage, in, out, mid, k, stride, expand)], head_c) at 32 px, 1 channel."""
    if name == "mbv2-tiny":
        w = lambda c: make_divisible(c * 0.35)
        plans = [(w(16), [1], [3], 1), (w(24), [6] * 2, [3] * 2, 1)]
        for c, n, s in [(32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2)]:
            plans.append((w(c), [6] * n, [3] * n, s))
        plans.append((112, [6], [3], 1))
        stem, head = w(32), 448
    elif name == "mcunet":
        plans = [(8, [1], [3], 1), (16, [3, 5, 5, 4], [7, 3, 7, 5], 1), (24, [5, 5, 5], [5, 5, 5], 2),
                 (40, [5, 6, 4], [3, 7, 5], 2), (48, [5, 5, 5], [5, 7, 3], 1),
                 (96, [6, 5, 4], [3, 7, 3], 2), (160, [5], [7], 1)]
        stem, head = 16, None
    else:
        raise ValueError(name)
    blocks, c = [], stem
    for stage, (out, es, ks, s) in enumerate(plans):
        for i, (e, k) in enumerate(zip(es, ks)):
            blocks.append((stage, c, out, c * e, k, s if i == 0 else 1, e != 1))
            c = out
    return stem, blocks, head


def conv_shapes(name):
    """(label, c_in, c_out, k, stride, groups, size) of every conv of the tiny model."""
    stem, blocks, head = arch(name)
    out, size = [("stem", 1, stem, 3, 1, 1, RES)], RES
    for i, (_, cin, cout, mid, k, s, e) in enumerate(blocks):
        if e:
            out.append((f"b{i}.expand", cin, mid, 1, 1, 1, size))
        c = mid if e else cin
        out.append((f"b{i}.dw", c, c, k, s, c, size))
        size = (size + 2 * (k // 2) - k) // s + 1
        out.append((f"b{i}.project", c, cout, 1, 1, 1, size))
    if head:
        out.append(("head", blocks[-1][2], head, 1, 1, 1, size))
    return out


def tiny_macs(name):
    """Multiply-accumulates of one forward pass of the tiny model on one image (convs and the
    classifier; BN and activations not counted)."""
    total = 0
    for _, cin, cout, k, s, g, size in conv_shapes(name):
        out = (size + 2 * (k // 2) - k) // s + 1
        total += (cin // g) * cout * k * k * out * out
    _, blocks, head = arch(name)
    return total + (head or blocks[-1][2]) * 10


# --- operators ---------------------------------------------------------------------------------

class Adder2d(torch.autograd.Function):
    """AdderNet conv, the usual way (unfold), with AdderNet's custom backward."""

    @staticmethod
    def forward(ctx, x, w, stride, pad, groups):
        n, c, h, wd = x.shape
        o, cg, k, _ = w.shape
        cols = F.unfold(x, k, padding=pad, stride=stride)  # [N, C*k*k, L]
        l = cols.shape[2]
        xc = cols.view(n, groups, 1, cg * k * k, l)
        wc = w.view(1, groups, o // groups, cg * k * k, 1)
        y = -(xc - wc).abs().sum(3)
        ctx.save_for_backward(x, w)
        ctx.geo = (stride, pad, groups)
        ho = (h + 2 * pad - k) // stride + 1
        return y.view(n, o, ho, l // ho)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, pad, groups = ctx.geo
        n, c, h, wd = x.shape
        o, cg, k, _ = w.shape
        cols = F.unfold(x, k, padding=pad, stride=stride)
        l = cols.shape[2]
        xc = cols.view(n, groups, 1, cg * k * k, l)
        wc = w.view(1, groups, o // groups, cg * k * k, 1)
        go = gy.reshape(n, groups, o // groups, 1, l)
        dw = (go * (xc - wc)).sum((0, 4)).view_as(w)
        dcols = (go * (wc - xc).clamp(-1, 1)).sum(2).view(n, c * k * k, l)
        dx = F.fold(dcols, (h, wd), k, padding=pad, stride=stride)
        return dx, dw, None, None, None


def ste(a, b):
    return a + (b - a).detach()


def shift_weight(w, bits=5):
    pmin = -(2 ** (bits - 1) - 1)
    with torch.no_grad():
        sign = (w >= 0).to(w.dtype) * 2 - 1
        p = w.abs().clamp_min(2.0 ** pmin).log2().round().clamp(pmin, 0)
        q = sign * p.exp2()
    return ste(w, q)


def fixed_16_16(x):
    with torch.no_grad():
        q = (x * 65536).round() / 65536
    return ste(x, q)


class CdfAffine(torch.nn.Module):
    """cdf remap (rank -> Laplace quantile, straight-through) + per-bin learnable affine."""

    def __init__(self, bins=100):
        super().__init__()
        self.bins = bins
        self.a = torch.nn.Parameter(torch.ones(bins))
        self.b = torch.nn.Parameter(torch.zeros(bins))

    def forward(self, w):
        flat = w.flatten()
        n = flat.numel()
        with torch.no_grad():
            order = flat.argsort()
            ranks = torch.empty_like(order).scatter_(0, order, torch.arange(n))
            mu, b = flat.mean(), flat.std(unbiased=False) / math.sqrt(2)
            c = (ranks.to(flat.dtype) + 0.5) / n - 0.5
            target = mu - b * c.sign() * (1 - 2 * c.abs()).log()
            lo = flat.min()
            span = (flat.max() - lo).clamp_min(1e-12)
            k = ((flat - lo) / span * self.bins).floor().clamp(0, self.bins - 1).long()
        r = ste(flat, target)
        return (self.a[k] * r + self.b[k]).view_as(w)


def soft_kl_to_laplace(r, bins=100):
    flat = r.flatten()
    n = flat.numel()
    with torch.no_grad():
        mu = flat.mean().item()
        b = max(flat.std(unbiased=False).item() / math.sqrt(2), 1e-12)
    lo, hi = mu - 8 * b, mu + 8 * b
    width = (hi - lo) / bins
    t = ((flat - lo) / width - 0.5).clamp(0, bins - 1)
    with torch.no_grad():
        k0 = t.floor().clamp(0, max(bins - 2, 0)).long()
    frac = t - k0.to(t.dtype)
    k1 = (k0 + 1).clamp_max(bins - 1)
    counts = torch.zeros(bins).index_add(0, k0, 1 - frac).index_add(0, k1, frac)
    p = counts / n
    cdf = lambda x: 0.5 * math.exp((x - mu) / b) if x < mu else 1 - 0.5 * math.exp(-(x - mu) / b)
    q = torch.tensor([max(cdf(lo + width * (i + 1)) - cdf(lo + width * i), 1e-12) for i in range(bins)])
    q = q / q.sum()
    return (p * ((p + 1e-12).log() - q.log())).sum()


# --- elastic mbv2-tiny (mirrors core/src/model.rs Net) -----------------------------------------

class Conv(torch.nn.Module):
    def __init__(self, cin, cout, k, s, dw, role, tiny):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(cout, 1 if dw else cin, k, k))
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.k, self.s, self.dw, self.role, self.tiny = k, s, dw, role, tiny
        self.remap = CdfAffine() if role == "add" else None

    def sliced(self, cin, cout):
        return self.weight[:cin] if self.dw else self.weight[:cout, :cin]

    def forward(self, x, cout, mult):
        cin = x.shape[1]
        g = cin if self.dw else 1
        w = self.sliced(cin, cout)
        if self.role == "mult" or mult:
            return F.conv2d(x, w, None, self.s, self.k // 2, 1, g)
        if self.remap is not None:
            w = self.remap(w)
        if self.role == "shift":
            return F.conv2d(fixed_16_16(x), shift_weight(w), None, self.s, self.k // 2, 1, g)
        return Adder2d.apply(x, w, self.s, self.k // 2, g)

    def kl(self):
        if self.remap is None:
            return None
        return soft_kl_to_laplace(self.remap(self.sliced(*self.tiny)))


class BN(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(c))
        self.bias = torch.nn.Parameter(torch.zeros(c))
        self.register_buffer("rm", torch.zeros(c))
        self.register_buffer("rv", torch.ones(c))

    def forward(self, x):
        c = x.shape[1]
        return F.batch_norm(x, self.rm[:c], self.rv[:c], self.weight[:c], self.bias[:c], True, 0.1, 1e-5)


def scaled(base, f):
    return base if f <= 1 else max(make_divisible(base * f), base)


class Net(torch.nn.Module):
    def __init__(self, kind, max_expand, max_width):
        super().__init__()
        stem, blocks, head = arch("mbv2-tiny")
        self.blocks_spec = blocks
        self.base = self.widths(1.0, 1.0)
        mx = self.widths(max_expand, max_width)
        role = kind
        self.stem = Conv(CHANNELS, mx["stem"], 3, 1, False, "mult", (CHANNELS, stem))
        self.stem_bn = BN(mx["stem"])
        self.layers = torch.nn.ModuleList()
        prev, prev_t = mx["stem"], stem
        for i, (_, cin, cout, mid, k, s, e) in enumerate(blocks):
            m = torch.nn.Module()
            m.expand = Conv(prev, mx["mid"][i], 1, 1, False, role, (prev_t, mid)) if e else None
            m.expand_bn = BN(mx["mid"][i]) if e else None
            dc, dt = (mx["mid"][i], mid) if e else (prev, prev_t)
            m.dw = Conv(dc, dc, k, s, True, role, (dt, dt))
            m.dw_bn = BN(dc)
            m.project = Conv(dc, mx["out"][i], 1, 1, False, role, (dt, cout))
            m.project_bn = BN(mx["out"][i])
            self.layers.append(m)
            prev, prev_t = mx["out"][i], cout
        self.head = Conv(prev, mx["head"], 1, 1, False, role, (prev_t, head))
        self.head_bn = BN(mx["head"])
        self.fc = Conv(mx["head"], 10, 1, 1, False, "mult", (head, 10))
        bound = 1 / math.sqrt(mx["head"])
        self.fc_bias = torch.nn.Parameter(torch.empty(10).uniform_(-bound, bound))

    def widths(self, expand, width):
        # As core/src/spec/arch.rs Widths::scaled (NetAug): a block's mid width grows with its
        # width-augmented input too, make_divisible(expand · mid · in_width / in_c).
        stem, blocks, head = arch("mbv2-tiny")
        stem_w = scaled(stem, width)
        out = [scaled(o, width) for (_, _, o, _, _, _, _) in blocks]
        mid = []
        for i, (_, cin, _, m, _, _, e) in enumerate(blocks):
            in_w = stem_w if i == 0 else out[i - 1]
            mid.append(scaled(m, expand * in_w / cin) if e else m)
        return {"stem": stem_w, "mid": mid, "out": out, "head": scaled(head, width)}

    def forward(self, x, w, mult):
        x = F.relu6(self.stem_bn(self.stem(x, w["stem"], mult)))
        for i, (m, spec) in enumerate(zip(self.layers, self.blocks_spec)):
            h = x
            if m.expand is not None:
                h = F.relu6(m.expand_bn(m.expand(h, w["mid"][i], mult)))
            h = F.relu6(m.dw_bn(m.dw(h, h.shape[1], mult)))
            h = m.project_bn(m.project(h, w["out"][i], mult))
            residual = spec[5] == 1 and spec[1] == spec[2] and h.shape == x.shape
            x = h + x if residual else h
        x = F.relu6(self.head_bn(self.head(x, w["head"], mult)))
        pooled = x.mean((2, 3), keepdim=True)
        return self.fc(pooled, 10, mult).flatten(1) + self.fc_bias

    def kl(self):
        terms = [c.kl() for c in self.modules() if isinstance(c, Conv)]
        terms = [t for t in terms if t is not None]
        return sum(terms) if terms else None


AUG_EXPAND, AUG_WIDTH = 2.2, 1.8


def train_step_fn(mode):
    kind, aug = mode.split("-")[0], mode.endswith("-aug")
    net = Net(kind, AUG_EXPAND if aug else 1.0, AUG_WIDTH if aug else 1.0)
    # The Rust bench prints the same count: the two models must be the same size.
    print(f"{mode}: {sum(p.numel() for p in net.parameters())} parameters", file=sys.stderr)
    decay = [p for n, p in net.named_parameters() if p.dim() > 1]
    other = [p for n, p in net.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5}, {"params": other, "weight_decay": 0}],
                          lr=0.05, momentum=0.9, nesterov=True)
    add_weights = [c.weight for c in net.modules() if isinstance(c, Conv) and c.role == "add"]
    aug_w = net.widths(AUG_EXPAND, AUG_WIDTH)
    x = torch.randn(BATCH, CHANNELS, RES, RES)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x, net.base, False), y, label_smoothing=0.1)
        kl = net.kl()
        if kl is not None:
            loss = loss + 1e-4 * kl
        loss.backward()
        if aug:
            F.cross_entropy(net(x, aug_w, True), y, label_smoothing=0.1).backward()
        with torch.no_grad():
            for w in add_weights:
                g = w.grad
                g.mul_(0.2 * math.sqrt(g.numel()) / g.norm().clamp_min(1e-12))
        opt.step()

    return step


def sync():
    if torch.cuda.is_available() and torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, min_iters, min_time):
    fn()  # warm-up
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > 4 * min_time and len(times) >= 2:
            break
    times.sort()
    return times[len(times) // 2]  # median, seconds


def conv_bench(quick):
    out, seen = {}, set()
    for model in ["mbv2-tiny", "mcunet"]:
        for label, cin, cout, k, s, g, size in conv_shapes(model):
            key = f"{cin}x{size}-{cout} k{k} s{s} g{g}"
            if key in seen:
                continue
            seen.add(key)
            x = torch.randn(BATCH, cin, size, size, requires_grad=True)
            w = (torch.randn(cout, cin // g, k, k) * 0.1).requires_grad_()
            gy = None

            def run_conv():
                y = F.conv2d(x, w, None, s, k // 2, 1, g)
                y.sum().backward()

            def run_adder():
                y = Adder2d.apply(x, w, s, k // 2, g)
                y.sum().backward()

            row = {"model": model, "layer": label, "conv_s": timeit(run_conv, 5, 0.3)}
            row["unfold_s"] = timeit(run_adder, 1 if quick else 3, 0.3)
            out[key] = row
            print(f"conv {key}: conv {row['conv_s'] * 1e3:.2f} ms, unfold adder {row['unfold_s'] * 1e3:.1f} ms",
                  file=sys.stderr)
    return out


MODES = ["mult", "shift", "add", "mult-aug", "shift-aug", "add-aug"]


def train_bench(quick, modes=MODES):
    out = {}
    for mode in modes:
        torch.manual_seed(0)
        step = train_step_fn(mode)
        slow = mode.startswith("add")
        secs = timeit(step, 1 if (quick or slow) else 5, 1.0 if slow else 3.0)
        out[mode] = {"step_s": secs, "images_per_s": BATCH / secs}
        print(f"train {mode}: {secs * 1e3:.0f} ms/step, {BATCH / secs:.1f} images/s", file=sys.stderr)
    return out


def main():
    global BATCH, CHANNELS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["conv", "train"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory", metavar="MODE")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--channels", type=int, default=CHANNELS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_device(args.device)
    BATCH, CHANNELS = args.batch, args.channels
    if args.memory:
        step = train_step_fn(args.memory)
        for _ in range(args.steps):
            step()
        return
    torch.manual_seed(0)
    result = {"threads": args.threads, "torch": torch.__version__, "batch": BATCH,
              "device": args.device}
    if args.only in (None, "conv"):
        result["conv"] = conv_bench(args.quick)
    if args.only in (None, "train"):
        result["train"] = train_bench(args.quick, args.modes.split(","))
        result["mult_macs_per_image"] = tiny_macs("mbv2-tiny")
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
