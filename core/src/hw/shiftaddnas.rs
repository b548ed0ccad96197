//! The hardware simulator ShiftAddNAS publishes, and the paper's energy figures come from
//! (`GATECH-EIC/ShiftAddNAS`, `CV/retraining_hybrid/hw_utils.py`, `get_OPs_HW_metric`, at commit
//! 97594b5), reproduced with its conventions as they are (method.md §7, `hw.model = "shiftaddnas"`).
//!
//! # The layer it sees
//! `N` images (1), an `H×W×C` input, `M` output channels of `E×F`, an `R×S` kernel (`R = S`),
//! stride `s`, and a *type* that sets the unit energies: `Conv` / `FC` (multiplications), `Add`,
//! `Shift`. A layer counts as fully connected (`FC` flag) when it is a linear layer or its input
//! and output are 1×1.
//!
//! **Grouped and depthwise convs** (the simulator has none): the layer is given as a dense conv
//! with `C = c_in / groups` input channels and `M = c_out`, the rule the issue measured with: the
//! MAC count `E·F·M·R·S·C` is then exact, and a depthwise layer is "one input channel per output
//! channel" (`C = 1`, `M = channels`). The input it counts is one group's channels (`H·W·C`).
//! (`cal_energy.py`'s hook passes the full input channel count, which would count `groups` times
//! the MACs; we do not follow that.) Pooling, BN and activations are not charged, as in
//! `cal_energy.py`'s energy sum.
//!
//! # Unit energies (mJ per 16-bit word, scaled by `bits/16`)
//! DRAM 200e-9, global buffer 6 × 3.7e-9, NoC 2 × 3.7e-9, NoC partial sums 1 × 3.7e-9, RF 1 × 3.7e-9,
//! RF weights 2 × 3.7e-9; compute per MAC: mult 3.7e-9 (`Conv`, `FC`), add 0.9e-9, shift 0.13e-9
//! (8-bit: 0.2, 0.03, 0.024). Two conventions make the MF layers cheap:
//! - `Add`: DRAM, global-buffer and NoC (non-partial-sum) energies are **zero** ("on chip");
//! - `Shift`: the memory word is `(16 + 5) // 2 = 10` bits (at 8 bits too), and the time per cycle
//!   is divided by `32 / 10`.
//!
//! # Tilings
//! `N = N0·N3`, `M = M0·M1·M2·M3`, `C = C0·C1·C2·C3`, `E = E1·E3` (`F`, `R`, `S` untiled). The
//! candidates of a dimension are the simulator's own ordered factorisations ([`tile`]), filtered as
//! it filters them: `M0 > 16` and `C3 ≠ 1` (and, unless `FC`, `E1 = 1`) are removed from the lists
//! *while iterating over them*, so a candidate that directly follows a removed one escapes the list
//! filter ([`drop_matching`]); validity then requires `M0 ≤ 16·mf`, `C3 = 1`, `E1 ≠ 1` unless FC,
//! `M1·C1·E1·R < 192·cf` (PEs), `C0·S < 12·mf` (input RF), `M0·C0·S < 960·mf` (weight RF) and
//! `N0·C1·C0·((E1−1)s+R)·((F−1)s+S) + N0·M2·M1·M0·E1·F < 65 536·mf` (buffer), with `mf = cf = 1`
//! at 32 bits and `mf = 2`, `cf = 4` at 8 bits. At 8 bits the escaped `16 < M0 ≤ 32` candidates
//! are valid, so the escape changes results; at 32 bits it does not.
//!
//! # Access counts (words), per tiling
//! With `I = N·H·W·C`, `Wt = R·S·C·M`, `O = N·E·F·M`: DRAM `M3·I + N3·E3·Wt + max(2·C3−1, 1)·O`;
//! GB `M3·M2·I + max(2·C3·(C2−1), 1)·O`; NoC `M3·M2·M1·R·E/H·I + N3·E3·E1·Wt` and partial sums
//! `max(C3·C2·(C1·R−1), 1)·O`; RF `M3·M2·M1·R·E/H·M0·S·F/W·I + max(2·C3·C2·C1·R·(C0·S−1), 1)·O`
//! and weights `N3·E3·E1·F·N0·Wt`. Latency `N3·N0·M3·M2·M0·C3·C2·C0·E3·F·S` cycles at 250 MHz.
//!
//! # The choice
//! Among the valid tilings, in the simulator's enumeration order (N, then M, C, E candidates), the
//! first that minimises `(E − E_min)/E_max + (L − L_min)/L_max`. Every sum and product is
//! evaluated in the simulator's order, in f64, so ties break as they do there.
//!
//! # Units
//! The simulator returns energy in mJ and latency in **seconds** (cycles / 250 MHz), which it
//! labels "ms". Here latency is reported in true milliseconds (seconds × 1000).
//!
//! # Where it differs from the simulator
//! Where the simulator finds no valid tiling it fails (`max()` of an empty list): a conv with a
//! one-row output that is not 1×1 throughout, or a layer too wide for the buffer. Then the `E1 ≠ 1`
//! rule is relaxed; if still nothing is valid, the all-outermost tiling (`N3 = N`, `M3 = M`,
//! `C2 = C`, `E3 = E`) is costed with the same formulas ([`Search`] says which happened).
//!
//! The search is exact; results are memoised per (layer shape, type, bits) for the process, which
//! is what keeps the NAS's fast mode fast: its candidates share their layer shapes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::CLOCK_HZ;
use crate::spec::config::OpKind;
use crate::spec::layers::{Layer, LayerKind};

/// The simulator's layer `type`: it decides the unit energies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SimType {
    Conv,
    Fc,
    Add,
    Shift,
}

/// One layer as the simulator's `layer_dict` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimLayer {
    pub ty: SimType,
    pub n: i64,
    pub h: i64,
    pub w: i64,
    pub c: i64,
    pub m: i64,
    pub k: i64,
    pub e: i64,
    pub f: i64,
    pub stride: i64,
}

impl SimLayer {
    /// The project's layer as the simulator is given it (batch 1; the grouped-conv rule above).
    pub fn of(l: &Layer) -> Self {
        let linear = l.kind == LayerKind::Linear;
        let ty = match l.op {
            OpKind::Mult if linear => SimType::Fc,
            OpKind::Mult => SimType::Conv,
            OpKind::Add => SimType::Add,
            OpKind::Shift => SimType::Shift,
        };
        let (h, w, e, f) = if linear {
            (1, 1, 1, 1)
        } else {
            (l.h_in, l.w_in, l.h_out, l.w_out)
        };
        Self {
            ty,
            n: 1,
            h,
            w,
            c: l.c_in / l.groups.max(1),
            m: l.c_out,
            k: l.kernel,
            e,
            f,
            stride: l.stride,
        }
    }

    /// The simulator's `FC_flag`.
    pub fn fully_connected(&self) -> bool {
        self.ty == SimType::Fc || (self.h == 1 && self.w == 1 && self.e == 1 && self.f == 1)
    }
}

/// One tiling: `N = n0·n3`, `M = m0·m1·m2·m3`, `C = c0·c1·c2·c3`, `E = e1·e3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTiling {
    pub n0: i64,
    pub n3: i64,
    pub m0: i64,
    pub m1: i64,
    pub m2: i64,
    pub m3: i64,
    pub c0: i64,
    pub c1: i64,
    pub c2: i64,
    pub c3: i64,
    pub e1: i64,
    pub e3: i64,
}

/// Unit energies (mJ per word access or per MAC) and the time of one cycle (s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Units {
    pub comp: f64,
    pub dram: f64,
    pub dram_gb: f64,
    pub gb: f64,
    pub noc: f64,
    pub noc_psum: f64,
    pub rf: f64,
    pub rf_weight: f64,
    pub cycle_s: f64,
}

impl Units {
    /// The simulator's `get_unit_energy` (the arithmetic in its order).
    pub fn of(ty: SimType, bits: i64) -> Self {
        let (mult, add, shift) = if bits == 8 {
            (0.2, 0.03, 0.024)
        } else {
            (3.7, 0.9, 0.13)
        };
        let comp = match ty {
            SimType::Conv | SimType::Fc => mult,
            SimType::Add => add,
            SimType::Shift => shift,
        } / 1e9;
        let word_bits = if ty == SimType::Shift {
            (16 + 5) / 2
        } else {
            bits
        };
        let scale = word_bits as f64 / 16.0;
        let per_word = |pj: f64| pj / 1e9 * 3.7 * scale;
        let off_chip = ty != SimType::Add;
        let when = |on: bool, v: f64| if on { v } else { 0.0 };
        Self {
            comp,
            dram: when(off_chip, 200.0 / 1e9 * scale),
            dram_gb: when(off_chip, 0.0 / 1e9 * scale),
            gb: when(off_chip, per_word(6.0)),
            noc: when(off_chip, per_word(2.0)),
            noc_psum: per_word(1.0),
            rf: per_word(1.0),
            rf_weight: per_word(2.0),
            cycle_s: if ty == SimType::Shift {
                1.0 / CLOCK_HZ / (32.0 / word_bits as f64)
            } else {
                1.0 / CLOCK_HZ
            },
        }
    }
}

/// Energy by part (mJ): the simulator's `breakdown[0..6]` (compute, DRAM, DRAM↔GB, GB, NoC, RF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub compute: f64,
    pub dram: f64,
    pub dram_gb: f64,
    pub gb: f64,
    pub noc: f64,
    pub rf: f64,
}

/// How the tiling was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Search {
    /// The simulator's search.
    Exact,
    /// No valid tiling had `E1 ≠ 1`; the rule was relaxed (the simulator would fail).
    RelaxedRows,
    /// Nothing was valid; the all-outermost tiling was costed (the simulator would fail).
    Outermost,
}

/// One layer's simulated cost, in the simulator's units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimCost {
    pub tiling: SimTiling,
    pub energy_mj: f64,
    pub breakdown: Breakdown,
    /// Seconds (what the simulator labels "ms").
    pub latency_s: f64,
    /// Valid tilings it chose among.
    pub candidates: usize,
    pub search: Search,
}

/// The simulator's `get_energy` for one tiling: the total and its breakdown (mJ).
pub fn energy(l: &SimLayer, t: &SimTiling, u: &Units) -> (f64, Breakdown) {
    let (r, s) = (l.k, l.k);
    let num_ifmap = l.n * l.h * l.w * l.c;
    let num_weight = r * s * l.c * l.m;
    let num_ofmap = l.n * l.e * l.f * l.m;
    let computation = (l.n * l.e * l.f * l.m * r * s * l.c) as f64;
    let dram_ifmap = t.m3 * num_ifmap;
    let dram_weight = t.n3 * t.e3 * num_weight;
    let dram_ofmap = (2 * t.c3 - 1).max(1) * num_ofmap;
    let gb_ifmap = t.m3 * t.m2 * num_ifmap;
    let gb_ofmap = (2 * t.c3 * (t.c2 - 1)).max(1) * num_ofmap;
    let rows_seen = (t.m3 * t.m2 * t.m1 * r * l.e) as f64 / l.h as f64;
    let noc_ifmap = rows_seen * num_ifmap as f64;
    let noc_weight = t.n3 * t.e3 * t.e1 * num_weight;
    let noc_ofmap = (t.c3 * t.c2 * (t.c1 * r - 1)).max(1) * num_ofmap;
    let rf_ifmap = rows_seen * t.m0 as f64 * s as f64 * l.f as f64 / l.w as f64 * num_ifmap as f64;
    let rf_weight = t.n3 * t.e3 * t.e1 * l.f * t.n0 * num_weight;
    let rf_ofmap = (t.c3 * t.c2 * t.c1 * r * (t.c0 * s - 1) * 2).max(1) * num_ofmap;
    let b = Breakdown {
        compute: computation * u.comp,
        dram: (dram_ifmap + dram_weight + dram_ofmap) as f64 * u.dram,
        dram_gb: (dram_ifmap + dram_ofmap) as f64 * u.dram_gb,
        gb: (gb_ifmap + gb_ofmap) as f64 * u.gb,
        noc: (noc_ifmap + noc_weight as f64) * u.noc + noc_ofmap as f64 * u.noc_psum,
        rf: (rf_ifmap + rf_ofmap as f64) * u.rf + rf_weight as f64 * u.rf_weight,
    };
    let total = computation * u.comp
        + (dram_ifmap + dram_weight + dram_ofmap) as f64 * u.dram
        + (dram_ifmap + dram_ofmap) as f64 * u.dram_gb
        + (gb_ifmap + gb_ofmap) as f64 * u.gb
        + (noc_ifmap + noc_weight as f64) * u.noc
        + noc_ofmap as f64 * u.noc_psum
        + (rf_ifmap + rf_ofmap as f64) * u.rf
        + rf_weight as f64 * u.rf_weight;
    (total, b)
}

/// The simulator's `get_latency` (s).
pub fn latency(l: &SimLayer, t: &SimTiling, u: &Units) -> f64 {
    (t.n3 * t.n0 * t.m3 * t.m2 * t.m0 * t.c3 * t.c2 * t.c0 * t.e3 * l.f * l.k) as f64 * u.cycle_s
}

/// The simulator's `valid_tiling` (the product identities hold by construction of [`tile`]).
pub fn valid(l: &SimLayer, t: &SimTiling, fully_connected: bool, bits: i64) -> bool {
    let (mem, cmp) = if bits == 8 { (2, 4) } else { (1, 1) };
    let (r, s) = (l.k, l.k);
    let buffer = t.n0 * t.c1 * t.c0 * ((t.e1 - 1) * l.stride + r) * ((l.f - 1) * l.stride + s)
        + t.n0 * t.m2 * t.m1 * t.m0 * t.e1 * l.f;
    t.m0 <= 16 * mem
        && t.c3 == 1
        && (fully_connected || t.e1 != 1)
        && t.m1 * t.c1 * t.e1 * r < 16 * 12 * cmp
        && t.c0 * s < 12 * mem
        && t.m0 * t.c0 * s < 192 * 5 * mem
        && buffer < 65_536 * mem
}

/// Prime factors of `n` in ascending order, with multiplicity (`[1]` for 1).
fn prime_factors(mut n: i64) -> Vec<i64> {
    if n <= 1 {
        return vec![1];
    }
    let mut out = Vec::new();
    let mut p = 2;
    while p * p <= n {
        while n % p == 0 {
            out.push(p);
            n /= p;
        }
        p += if p == 2 { 1 } else { 2 };
    }
    if n > 1 {
        out.push(n);
    }
    out
}

/// The products of the sub-multisets of `factors`, times `x`, in the simulator's order
/// (`possible_mul`: with the first factor before without it, first occurrences kept).
fn products(x: i64, factors: &[i64]) -> Vec<i64> {
    let raw = match factors {
        [] => vec![x],
        [f] => vec![x * f, x],
        [f, rest @ ..] => {
            let mut v = products(x * f, rest);
            v.extend(products(x, rest));
            v
        }
    };
    let mut seen = std::collections::HashSet::new();
    raw.into_iter().filter(|v| seen.insert(*v)).collect()
}

/// The simulator's ordered splits of `num` into `parts` factors (`tile`): the first factor runs
/// over [`products`] of the prime factors, the rest recursively; duplicates dropped.
pub fn tile(num: i64, parts: usize) -> Vec<Vec<i64>> {
    if parts == 1 {
        return vec![vec![num]];
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for first in products(1, &prime_factors(num)) {
        for rest in tile(num / first, parts - 1) {
            let mut v = Vec::with_capacity(parts);
            v.push(first);
            v.extend(rest);
            if seen.insert(v.clone()) {
                out.push(v);
            }
        }
    }
    out
}

/// Python's `for x in list: if bad(x): list.remove(x)`: the element right after a removed one is
/// never looked at, so it stays whatever it is.
pub fn drop_matching(list: &mut Vec<Vec<i64>>, bad: impl Fn(&[i64]) -> bool) {
    let mut i = 0;
    while i < list.len() {
        if bad(&list[i]) {
            list.remove(i);
        }
        i += 1;
    }
}

/// Calls `visit` on every valid tiling of `l`, in the simulator's order.
fn for_each_valid(
    l: &SimLayer,
    bits: i64,
    fully_connected: bool,
    mut visit: impl FnMut(&SimTiling),
) {
    let n_list = tile(l.n, 2);
    let mut m_list = tile(l.m, 4);
    drop_matching(&mut m_list, |t| t[0] > 16);
    let mut c_list = tile(l.c, 4);
    drop_matching(&mut c_list, |t| t[3] != 1);
    let mut e_list = tile(l.e, 2);
    if !fully_connected {
        drop_matching(&mut e_list, |t| t[0] == 1);
    }
    for n in &n_list {
        for m in &m_list {
            for c in &c_list {
                for e in &e_list {
                    let t = SimTiling {
                        n0: n[0],
                        n3: n[1],
                        m0: m[0],
                        m1: m[1],
                        m2: m[2],
                        m3: m[3],
                        c0: c[0],
                        c1: c[1],
                        c2: c[2],
                        c3: c[3],
                        e1: e[0],
                        e3: e[1],
                    };
                    if valid(l, &t, fully_connected, bits) {
                        visit(&t);
                    }
                }
            }
        }
    }
}

/// The simulator's `get_OPs_HW_metric` for one layer, without the memo.
pub fn search(l: &SimLayer, bits: i64) -> SimCost {
    let u = Units::of(l.ty, bits);
    let cost = |t: &SimTiling| (energy(l, t, &u).0, latency(l, t, &u));
    let attempt = |fully_connected: bool| {
        let (mut e_min, mut e_max, mut l_min, mut l_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        let mut count = 0usize;
        for_each_valid(l, bits, fully_connected, |t| {
            let (e, lat) = cost(t);
            (e_min, e_max) = (e_min.min(e), e_max.max(e));
            (l_min, l_max) = (l_min.min(lat), l_max.max(lat));
            count += 1;
        });
        if count == 0 {
            return None;
        }
        let mut best: Option<(f64, SimTiling)> = None;
        for_each_valid(l, bits, fully_connected, |t| {
            let (e, lat) = cost(t);
            let metric = (e - e_min) / e_max + (lat - l_min) / l_max;
            if best.is_none_or(|(b, _)| metric < b) {
                best = Some((metric, *t));
            }
        });
        best.map(|(_, t)| (t, count))
    };
    let (tiling, candidates, search) = if let Some((t, n)) = attempt(l.fully_connected()) {
        (t, n, Search::Exact)
    } else if let Some((t, n)) = attempt(true) {
        (t, n, Search::RelaxedRows)
    } else {
        let t = SimTiling {
            n0: 1,
            n3: l.n,
            m0: 1,
            m1: 1,
            m2: 1,
            m3: l.m,
            c0: 1,
            c1: 1,
            c2: l.c,
            c3: 1,
            e1: 1,
            e3: l.e,
        };
        (t, 0, Search::Outermost)
    };
    let (energy_mj, breakdown) = energy(l, &tiling, &u);
    SimCost {
        tiling,
        energy_mj,
        breakdown,
        latency_s: latency(l, &tiling, &u),
        candidates,
        search,
    }
}

type Memo = Mutex<HashMap<(SimLayer, i64), SimCost>>;

/// [`search`], memoised per (layer, bits) for the life of the process.
pub fn simulate(l: &SimLayer, bits: i64) -> SimCost {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let key = (*l, bits);
    if let Some(c) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return c;
    }
    let c = search(l, bits);
    if let Ok(mut m) = memo.lock() {
        m.insert(key, c);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::tests::layer;

    fn sim(ty: SimType, c: i64, m: i64, k: i64, stride: i64, h: i64) -> SimLayer {
        let e = if ty == SimType::Fc {
            1
        } else {
            (h + 2 * (k / 2) - k) / stride + 1
        };
        SimLayer {
            ty,
            n: 1,
            h,
            w: h,
            c,
            m,
            k,
            e,
            f: e,
            stride,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-30)
    }

    /// One layer of the reference simulator's: what it returned.
    struct Case {
        layer: SimLayer,
        bits: i64,
        energy: f64,
        latency: f64,
        breakdown: [f64; 6],
        tiling: [i64; 12],
        candidates: usize,
    }

    /// The reference's cases (see the test).
    fn reference_cases() -> [Case; 5] {
        [
            // {"type": "Conv", "kernel_size": 3, "stride": 1, "input_H": 32, "input_C": 16,
            //  "output_E": 32, "output_M": 32}
            Case {
                layer: sim(SimType::Conv, 16, 32, 3, 1, 32),
                bits: 32,
                energy: 0.22029271040000004,
                latency: 0.00019660800000000003,
                breakdown: [
                    0.0174587904,
                    0.027033599999999998,
                    0.0,
                    0.0101842944,
                    0.014306508800000003,
                    0.15130951680000004,
                ],
                tiling: [1, 1, 16, 1, 2, 1, 1, 4, 4, 1, 8, 4],
                candidates: 1042,
            },
            // {"type": "Add", "kernel_size": 1, "stride": 1, "input_H": 16, "input_C": 96,
            //  "output_E": 16, "output_M": 24}
            Case {
                layer: sim(SimType::Add, 96, 24, 1, 1, 16),
                bits: 32,
                energy: 0.013715865600000002,
                latency: 1.8432000000000002e-05,
                breakdown: [
                    0.0005308416,
                    0.0,
                    0.0,
                    0.0,
                    4.546560000000001e-05,
                    0.013139558400000003,
                ],
                tiling: [1, 1, 3, 8, 1, 1, 1, 1, 96, 1, 16, 1],
                candidates: 10091,
            },
            // {"type": "Shift", "kernel_size": 3, "stride": 2, "input_H": 16, "input_C": 24,
            //  "output_E": 8, "output_M": 48}
            Case {
                layer: sim(SimType::Shift, 24, 48, 3, 2, 16),
                bits: 32,
                energy: 0.01068965376,
                latency: 5.76e-06,
                breakdown: [
                    8.626176e-05,
                    0.002448,
                    0.0,
                    0.000511488,
                    0.0009945600000000002,
                    0.0066493440000000015,
                ],
                tiling: [1, 1, 16, 1, 3, 1, 1, 6, 4, 1, 8, 1],
                candidates: 4401,
            },
            // {"type": "FC", "kernel_size": 1, "stride": 1, "input_H": 1, "input_C": 1280,
            //  "output_E": 1, "output_M": 10}
            Case {
                layer: sim(SimType::Fc, 1280, 10, 1, 1, 1),
                bits: 32,
                energy: 0.006333153999999998,
                latency: 3.2e-07,
                breakdown: [
                    4.736e-05,
                    0.0056359999999999995,
                    0.0,
                    6.3048e-05,
                    0.000302512,
                    0.00028423400000000007,
                ],
                tiling: [1, 1, 10, 1, 1, 1, 1, 160, 8, 1, 1, 1],
                candidates: 986,
            },
            // 8 bits: {"type": "Conv", "kernel_size": 1, "stride": 1, "input_H": 8, "input_C": 48,
            //  "output_E": 8, "output_M": 64}, num_bits=8. M0 = 32 is a candidate that escaped the
            //  list filter (see `the_list_filter_skips_the_element_after_a_removed_one`).
            Case {
                layer: sim(SimType::Conv, 48, 64, 1, 1, 8),
                bits: 8,
                energy: 0.0027493376000000003,
                latency: 2.048e-06,
                breakdown: [
                    3.93216e-05,
                    0.001024,
                    0.0,
                    0.00012503040000000002,
                    0.0004622336000000001,
                    0.0010987520000000001,
                ],
                tiling: [1, 1, 32, 2, 1, 1, 1, 24, 2, 1, 8, 1],
                candidates: 9739,
            },
        ]
    }

    /// Case `i`'s search against the reference: tiling, count, energy and its parts, latency.
    fn check_case(i: usize, c: &Case) {
        let got = search(&c.layer, c.bits);
        let t = got.tiling;
        let tiling = [
            t.n0, t.n3, t.m0, t.m1, t.m2, t.m3, t.c0, t.c1, t.c2, t.c3, t.e1, t.e3,
        ];
        assert_eq!(tiling, c.tiling, "case {i}: tiling");
        assert_eq!(got.candidates, c.candidates, "case {i}: valid tilings");
        assert_eq!(got.search, Search::Exact);
        assert!(
            close(got.energy_mj, c.energy),
            "case {i}: {} vs {}",
            got.energy_mj,
            c.energy
        );
        assert!(
            close(got.latency_s, c.latency),
            "case {i}: latency {}",
            got.latency_s
        );
        let b = got.breakdown;
        let parts = [b.compute, b.dram, b.dram_gb, b.gb, b.noc, b.rf];
        for (k, (g, want)) in parts.iter().zip(c.breakdown).enumerate() {
            assert!(
                close(*g, want) || (want == 0.0 && *g == 0.0),
                "case {i}, part {k}: {g} vs {want}"
            );
        }
        let sum: f64 = parts.iter().sum();
        assert!(close(sum, got.energy_mj), "case {i}: the parts add up");
        assert_eq!(
            simulate(&c.layer, c.bits),
            got,
            "case {i}: the memo returns the search"
        );
    }

    /// Reference values: `get_OPs_HW_metric(layer_dict, num_bits=bits)` of
    /// `GATECH-EIC/ShiftAddNAS/CV/retraining_hybrid/hw_utils.py` at commit 97594b5 (Python 3.11),
    /// on the `layer_dict` each case spells out (batch 1, `input_W = input_H`, `output_F =
    /// output_E`): its returned energy (mJ), latency (s, printed as "ms"), `breakdown[0..6]`
    /// (compute, DRAM, DRAM-GB, GB, NoC, RF; mJ), the chosen tiling (N0 N3 M0 M1 M2 M3 C0 C1 C2 C3
    /// E1 E3), and the number of valid tilings it chose among.
    #[test]
    fn matches_the_reference_simulator_on_conv_add_shift_and_fc_layers() {
        for (i, c) in reference_cases().iter().enumerate() {
            check_case(i, c);
        }
    }

    /// The Conv case above from the formulas in the module doc, by hand: I = 32·32·16 = 16 384,
    /// Wt = 3·3·16·32 = 4 608, O = 32·32·32 = 32 768, tiling M0 16, M2 2, C1 4, C2 4, E1 8, E3 4.
    #[test]
    fn the_conv_case_follows_from_the_formulas() {
        let l = sim(SimType::Conv, 16, 32, 3, 1, 32);
        let t = search(&l, 32).tiling;
        let u = Units::of(SimType::Conv, 32);
        let (_, b) = energy(&l, &t, &u);
        let word = 32.0 / 16.0; // 32-bit words are two 16-bit accesses
        // DRAM: M3·I + N3·E3·Wt + O = 16 384 + 4·4 608 + 32 768 = 67 584 words at 200 pJ.
        assert!(close(b.dram, 67_584.0 * 200e-9 * word));
        // GB: M3·M2·I + 2·(C2 − 1)·O = 32 768 + 6·32 768 = 229 376 words at 6·3.7 pJ.
        assert!(close(b.gb, 229_376.0 * 6.0 * 3.7e-9 * word));
        // NoC: M3·M2·M1·R·E/H·I + N3·E3·E1·Wt = 6·16 384 + 32·4 608 = 245 760 at 2·3.7 pJ, and
        // partial sums C2·(C1·R − 1)·O = 44·32 768 = 1 441 792 at 3.7 pJ.
        assert!(close(
            b.noc,
            (245_760.0 * 2.0 + 1_441_792.0) * 3.7e-9 * word
        ));
        // RF: inputs 6·16·3·32/32·I = 288·16 384, partial sums 2·C2·C1·R·(C0·S − 1)·O =
        // 192·32 768 (both at 3.7 pJ), weights N3·E3·E1·F·N0·Wt = 1 024·4 608 at 2·3.7 pJ.
        let rf = (288.0 * 16_384.0 + 192.0 * 32_768.0 + 2.0 * 1_024.0 * 4_608.0) * 3.7e-9 * word;
        assert!(close(b.rf, rf), "{} vs {rf}", b.rf);
        // Compute: 32·32·32·9·16 MACs at 3.7 pJ; latency M2·M0·C2·C0·E3·F·S = 49 152 cycles.
        assert!(close(b.compute, 4_718_592.0 * 3.7e-9));
        assert!(close(latency(&l, &t, &u), 49_152.0 / 250e6));
    }

    #[test]
    fn add_layers_move_nothing_off_chip_and_shift_layers_move_ten_bit_words() {
        let (conv, add, shift) = (
            Units::of(SimType::Conv, 32),
            Units::of(SimType::Add, 32),
            Units::of(SimType::Shift, 32),
        );
        assert_eq!((add.dram, add.gb, add.noc), (0.0, 0.0, 0.0));
        assert!(add.noc_psum > 0.0 && add.rf == conv.rf && add.rf_weight == conv.rf_weight);
        assert!(close(shift.dram / conv.dram, 10.0 / 32.0));
        assert!(close(shift.rf / conv.rf, 10.0 / 32.0));
        assert!(close(shift.cycle_s * 3.2, conv.cycle_s));
        // 8 bits: Shift keeps its 10-bit words; the others scale to 8.
        assert!(close(Units::of(SimType::Shift, 8).dram, shift.dram));
        assert!(close(Units::of(SimType::Conv, 8).dram / conv.dram, 0.25));
        assert!(close(Units::of(SimType::Conv, 8).comp, 0.2e-9));
    }

    #[test]
    fn tile_enumerates_in_the_simulators_order() {
        // The reference's tile(12, 2) and tile(8, 3).
        assert_eq!(
            tile(12, 2),
            [[12, 1], [4, 3], [6, 2], [2, 6], [3, 4], [1, 12]]
        );
        assert_eq!(
            tile(8, 3),
            [
                [8, 1, 1],
                [4, 2, 1],
                [4, 1, 2],
                [2, 4, 1],
                [2, 2, 2],
                [2, 1, 4],
                [1, 8, 1],
                [1, 4, 2],
                [1, 2, 4],
                [1, 1, 8]
            ]
        );
        assert_eq!(tile(1, 4), [[1, 1, 1, 1]]);
        assert_eq!(products(1, &[2, 2, 3]), [12, 4, 6, 2, 3, 1]);
        for n in [1, 7, 96, 240, 1280] {
            let splits = tile(n, 4);
            assert!(splits.iter().all(|s| s.iter().product::<i64>() == n));
            let mut unique = splits.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), splits.len(), "{n}: no duplicates");
        }
    }

    #[test]
    fn the_list_filter_skips_the_element_after_a_removed_one() {
        let mut v = vec![vec![17], vec![18], vec![3], vec![20], vec![4]];
        drop_matching(&mut v, |t| t[0] > 16);
        assert_eq!(v, [vec![18], vec![3], vec![4]]);
    }

    #[test]
    fn grouped_convs_are_given_one_groups_input_channels() {
        let dw = layer(LayerKind::Depthwise, 48, 48, 3, 2, 16, OpKind::Add);
        let s = SimLayer::of(&dw);
        assert_eq!((s.c, s.m, s.e, s.ty), (1, 48, 8, SimType::Add));
        let u = Units::of(s.ty, 32);
        let t = search(&s, 32).tiling;
        // The MAC count is exact: compute energy = MACs × the add's unit energy.
        assert!(close(
            energy(&s, &t, &u).1.compute,
            dw.macs() as f64 * 0.9e-9
        ));
        let fc = layer(LayerKind::Linear, 448, 10, 1, 1, 1, OpKind::Mult);
        let s = SimLayer::of(&fc);
        assert!(s.fully_connected() && s.ty == SimType::Fc && s.c == 448);
    }

    #[test]
    fn layers_the_simulator_cannot_tile_still_get_a_cost() {
        // A 3×3 stride-2 conv from 2×2 to 1×1: not FC (input 2×2), and E = 1 leaves no E1 ≠ 1.
        let l = SimLayer {
            e: 1,
            f: 1,
            ..sim(SimType::Conv, 8, 8, 3, 2, 2)
        };
        let c = search(&l, 32);
        assert_eq!(c.search, Search::RelaxedRows);
        assert!(c.energy_mj > 0.0 && c.latency_s > 0.0);
    }
}
