//! Hardware cost model (method.md §7): compute energy by operator kind, and the data movement of
//! an Eyeriss-like accelerator, per layer, for one image (batch 1 inference).
//!
//! # Compute
//! Every MAC of a layer is charged at its operator's unit energy (pJ, 45 nm; 32- or 8-bit row):
//!
//! | bits | mult | add  | shift |
//! |------|------|------|-------|
//! | 32   | 3.7  | 0.9  | 0.13  |
//! | 8    | 0.2  | 0.03 | 0.024 |
//!
//! `paper` convention: one op of the layer's kind per MAC. `full`: Mult MAC = mult + add, Shift MAC
//! = shift + add, Add MAC = 2 adds. Besides the MACs, every conv output element costs one BN
//! (one mult + one add: BN folds into a per-channel affine), ReLU6 two comparisons (charged as adds)
//! and a residual one add; these are reported as `other` so the operator comparison stays visible.
//!
//! # Data movement
//! Hardware: a 16×12 PE array at 250 MHz; each PE has a register file (RF) holding at most 224
//! weight, 12 input and 24 partial-sum words; a 64 K-word global buffer (GB); DRAM. Energy per
//! 16-bit word: DRAM 200 pJ, GB 22.2, NoC 7.4, RF 3.7 (RF weight accesses 7.4), scaled by bits/16.
//!
//! A layer has `M` output channels, `C` input channels per output channel (`C = 1` depthwise),
//! `P×Q` outputs per channel, an `R×S` kernel with stride `s`. A *tiling* ([`Tiling`]) chooses
//! - GB tiles of `m_g` output channels × `c_g` input channels × `p_g` output rows (whole rows),
//! - a spatial mapping of `m_s ≤ 16` output channels (array rows) × `p_s ≤ 12` output rows (columns),
//! - per PE pass, `c_r` input channels and `q_r` output columns held in the RF.
//!
//! Limits: `c_r·R·S ≤ 224` (weights), `c_r·S ≤ 12` (one input row segment per channel),
//! `q_r ≤ 24` (partial sums), and the GB tile `in + weights + out ≤ 65 536` words with
//! `in = c_in_tile · rows(p_g) · cols(Q)`, `rows(p) = min((p−1)s + R, p·R)`,
//! `cols(q) = min((q−1)s + S, q·S)`, `c_in_tile = c_g` (dense) or `m_g` (depthwise).
//!
//! Loop order DRAM→GB: output-channel tiles, then row tiles, then input-channel tiles innermost, so
//! partial sums stay in the GB and each output leaves it once. Access counts (words), summed
//! exactly over ragged tiles (Σ over the tiles of a split; `n_X` = number of tiles):
//! - DRAM: weights `n_P·W`; inputs `n_M · C · Σ_p rows(p)·cols(Q)` (dense) or
//!   `M · Σ_p rows(p)·cols(Q)` (depthwise); outputs `M·P·Q`.
//! - GB: every DRAM read is a GB write (fill); every output is read once for write-back; and per
//!   PE-array pass (one block of `m_b ≤ m_s` channels × `p_b ≤ p_s` rows × `q_b ≤ q_r` columns ×
//!   `c_b ≤ c_r` input channels) the GB sends `c_b·rows(p_b)·cols(q_b)` input words (`m_b` times
//!   that when depthwise), `m_b·c_b·R·S` weight words, and reads (except on a tile's first input
//!   chunk) and writes `m_b·p_b·q_b` partial sums.
//! - NoC: inputs are multicast to the `m_b` array rows (dense), weights to the `p_b` columns;
//!   partial sums travel once per GB access.
//! - RF: each MAC reads an input, a weight (at the weight cost), a partial sum and writes it back;
//!   every word delivered by the NoC is written into an RF once.
//!
//! Latency: a pass takes `c_b·R·S·q_b` cycles (one MAC per PE per cycle); DRAM delivers 4 words per
//! cycle (64 bits); `cycles = max(Σ pass cycles, DRAM words / 4)`, `ms = cycles / 250 MHz`.
//! The search keeps the tiling with the lowest `E/E_ub + L/L_ub` (energy plus latency, each
//! normalised by the upper bound below so neither unit dominates).
//!
//! # Upper bound
//! With no reuse at all every MAC would move its operands through every level. From the counts
//! above, for any legal tiling: DRAM ≤ 3·MACs (weights ≤ P·Q·W, inputs ≤ MACs since
//! `rows(p) ≤ p·R`, `cols(Q) ≤ Q·S`, outputs ≤ MACs), GB ≤ 7·MACs (fills ≤ 2, input, weight,
//! partial-sum reads and writes ≤ 1 each, write-back ≤ 1), NoC ≤ 4·MACs (each multicast delivers
//! at most the pass's MACs), RF ≤ 8·MACs (4 per MAC + fills ≤ NoC). So
//! `E_mem ≤ MACs·(3·e_DRAM + 7·e_GB + 4·e_NoC + 8·e_RFw)·bits/16` ([`upper_bound`]) and
//! `cycles ≤ MACs`. Tests check that every searched tiling respects it.
//!
//! The fast analytic mode ([`HwMode::Analytic`]) evaluates one heuristic tiling (the largest
//! spatial and RF blocks, GB tile halved along its largest dimension until it fits) with the same
//! formulas, so the two modes agree in kind and differ only in how hard they look.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Convention, HwConfig, HwMode, OpKind};
use crate::layers::{self, Layer, LayerKind};
use crate::model::{ArchSpec, Net, OpSpec, Widths};

pub const PE_ROWS: i64 = 16;
pub const PE_COLS: i64 = 12;
pub const RF_WEIGHTS: i64 = 224;
pub const RF_INPUTS: i64 = 12;
pub const RF_PSUMS: i64 = 24;
pub const GB_WORDS: i64 = 65_536;
pub const CLOCK_HZ: f64 = 250e6;
pub const DRAM_WORDS_PER_CYCLE: f64 = 4.0;

/// Energy per 16-bit word access, pJ.
pub const E_DRAM: f64 = 200.0;
pub const E_GB: f64 = 22.2;
pub const E_NOC: f64 = 7.4;
pub const E_RF: f64 = 3.7;
pub const E_RF_WEIGHT: f64 = 7.4;

/// Unit compute energy (pJ) of one `op` at `bits` (32 or 8).
pub fn unit_energy(op: OpKind, bits: i64) -> f64 {
    match (bits <= 8, op) {
        (false, OpKind::Mult) => 3.7,
        (false, OpKind::Add) => 0.9,
        (false, OpKind::Shift) => 0.13,
        (true, OpKind::Mult) => 0.2,
        (true, OpKind::Add) => 0.03,
        (true, OpKind::Shift) => 0.024,
    }
}

/// Compute energy (pJ) of `macs` MACs of kind `op`.
pub fn mac_energy(op: OpKind, macs: i64, bits: i64, convention: Convention) -> f64 {
    let per = match convention {
        Convention::Paper => unit_energy(op, bits),
        Convention::Full => match op {
            OpKind::Add => 2.0 * unit_energy(OpKind::Add, bits),
            _ => unit_energy(op, bits) + unit_energy(OpKind::Add, bits),
        },
    };
    per * macs as f64
}

/// One loop tiling of a layer (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiling {
    pub m_g: i64,
    pub c_g: i64,
    pub p_g: i64,
    pub m_s: i64,
    pub p_s: i64,
    pub c_r: i64,
    pub q_r: i64,
}

/// Word accesses per memory level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Accesses {
    pub dram: f64,
    pub gb: f64,
    pub noc: f64,
    pub rf: f64,
    /// RF accesses charged at the weight cost (part of `rf`).
    pub rf_weight: f64,
}

/// Energy (pJ) by memory level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemEnergy {
    pub dram: f64,
    pub gb: f64,
    pub noc: f64,
    pub rf: f64,
}

impl MemEnergy {
    pub fn total(&self) -> f64 {
        self.dram + self.gb + self.noc + self.rf
    }

    fn of(a: &Accesses, bits: i64) -> Self {
        let scale = bits as f64 / 16.0;
        Self {
            dram: a.dram * E_DRAM * scale,
            gb: a.gb * E_GB * scale,
            noc: a.noc * E_NOC * scale,
            rf: ((a.rf - a.rf_weight) * E_RF + a.rf_weight * E_RF_WEIGHT) * scale,
        }
    }

    fn add(&mut self, o: &Self) {
        self.dram += o.dram;
        self.gb += o.gb;
        self.noc += o.noc;
        self.rf += o.rf;
    }
}

/// The layer as the dataflow sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    m: i64,
    c: i64,
    p: i64,
    q: i64,
    r: i64,
    s: i64,
    stride: i64,
    depthwise: bool,
}

impl Dims {
    fn of(l: &Layer) -> Self {
        let depthwise = l.kind == LayerKind::Depthwise;
        Self {
            m: l.c_out,
            c: l.c_in / l.groups,
            p: l.h_out,
            q: l.w_out,
            r: l.kernel,
            s: l.kernel,
            stride: l.stride,
            depthwise,
        }
    }

    fn macs(&self) -> f64 {
        (self.m * self.c * self.r * self.s * self.p * self.q) as f64
    }

    fn rows(&self, p: i64) -> i64 {
        ((p - 1) * self.stride + self.r).min(p * self.r)
    }

    fn cols(&self, q: i64) -> i64 {
        ((q - 1) * self.stride + self.s).min(q * self.s)
    }
}

/// `n` split into tiles of `t`: (tile size, how many) for the full tiles and the remainder.
fn split(n: i64, t: i64) -> [(i64, i64); 2] {
    [(t, n / t), (n % t, i64::from(n % t > 0))]
}

/// Σ over the tiles of `split(n, t)` of `f(tile)`.
fn sum_over(n: i64, t: i64, f: impl Fn(i64) -> f64) -> f64 {
    split(n, t)
        .iter()
        .filter(|(_, k)| *k > 0)
        .map(|&(size, k)| k as f64 * f(size))
        .sum()
}

fn tiles(n: i64, t: i64) -> f64 {
    ((n + t - 1) / t) as f64
}

impl Tiling {
    /// Whether the tiling respects the PE-array, RF and GB limits for `d`.
    fn legal(&self, d: &Dims) -> bool {
        let in_tile = if d.depthwise { self.m_g } else { self.c_g };
        let gb = in_tile * d.rows(self.p_g) * d.cols(d.q)
            + self.m_g * self.c_g * d.r * d.s
            + self.m_g * self.p_g * d.q;
        (1..=d.m).contains(&self.m_g)
            && (1..=d.c).contains(&self.c_g)
            && (1..=d.p).contains(&self.p_g)
            && (1..=self.m_g.min(PE_ROWS)).contains(&self.m_s)
            && (1..=self.p_g.min(PE_COLS)).contains(&self.p_s)
            && (1..=self.c_g).contains(&self.c_r)
            && (1..=d.q.min(RF_PSUMS)).contains(&self.q_r)
            && self.c_r * d.r * d.s <= RF_WEIGHTS
            && self.c_r * d.s <= RF_INPUTS
            && gb <= GB_WORDS
    }

    /// Accesses per level and cycles, for a legal tiling.
    fn cost(&self, d: &Dims) -> (Accesses, f64) {
        let t = self;
        let (rs, w_total) = (d.r * d.s, (d.m * d.c * d.r * d.s) as f64);
        let out = (d.m * d.p * d.q) as f64;
        let cols_q = d.cols(d.q) as f64;
        let sum_rows = sum_over(d.p, t.p_g, |p| d.rows(p) as f64);
        let dram_in = if d.depthwise {
            d.m as f64 * sum_rows * cols_q
        } else {
            tiles(d.m, t.m_g) * d.c as f64 * sum_rows * cols_q
        };
        let dram_w = tiles(d.p, t.p_g) * w_total;
        let dram = dram_in + dram_w + out;

        // Per GB tile (m, c, p sizes), sums over the array passes inside it; the GB tiles of one
        // layer are visited once each.
        let q_blocks = tiles(d.q, t.q_r);
        let sum_cols_qb = sum_over(d.q, t.q_r, |q| d.cols(q) as f64);
        let mut gb_in = 0.0;
        let mut gb_w = 0.0;
        let mut psum = 0.0; // GB partial-sum reads + writes
        let mut noc_in = 0.0;
        let mut noc_w = 0.0;
        let mut cycles = 0.0;
        for &(mg, km) in split(d.m, t.m_g).iter().filter(|s| s.1 > 0) {
            let m_blocks = tiles(mg, t.m_s);
            let sum_mb = mg as f64; // Σ over m-blocks of m_b
            for &(pg, kp) in split(d.p, t.p_g).iter().filter(|s| s.1 > 0) {
                let p_blocks = tiles(pg, t.p_s);
                let sum_rows_pb = sum_over(pg, t.p_s, |p| d.rows(p) as f64);
                let sum_pb = pg as f64;
                for &(cg, kc) in split(d.c, t.c_g).iter().filter(|s| s.1 > 0) {
                    let k = (km * kp * kc) as f64;
                    let c_chunks = tiles(cg, t.c_r);
                    let sum_cb = cg as f64;
                    // inputs: dense → one read per (m-block) pass, multicast to m_b rows;
                    // depthwise → each array row reads its own channel.
                    let inputs_per_m = sum_cb * sum_rows_pb * sum_cols_qb;
                    let (gi, ni) = if d.depthwise {
                        (
                            sum_mb * sum_rows_pb * sum_cols_qb,
                            sum_mb * sum_rows_pb * sum_cols_qb,
                        )
                    } else {
                        (m_blocks * inputs_per_m, sum_mb * inputs_per_m)
                    };
                    gb_in += k * gi;
                    noc_in += k * ni;
                    let weights = sum_mb * sum_cb * rs as f64 * p_blocks * q_blocks;
                    gb_w += k * weights;
                    noc_w += k * sum_mb * sum_cb * rs as f64 * sum_pb * q_blocks;
                    let o_tile = sum_mb * sum_pb * d.q as f64;
                    psum += k * o_tile * 2.0 * c_chunks;
                    cycles += k * m_blocks * p_blocks * sum_cb * rs as f64 * d.q as f64;
                }
            }
        }
        psum -= out; // the very first chunk of every output has no partial sum to read
        let macs = d.macs();
        let gb = (dram_in + dram_w) + out + gb_in + gb_w + psum;
        let noc = noc_in + noc_w + psum;
        let rf = 4.0 * macs + noc;
        let cycles = cycles.max(dram / DRAM_WORDS_PER_CYCLE);
        (
            Accesses {
                dram,
                gb,
                noc,
                rf,
                rf_weight: macs,
            },
            cycles,
        )
    }
}

/// The analytic upper bound on one layer's memory energy (pJ) and cycles: no reuse anywhere.
pub fn upper_bound(l: &Layer, bits: i64) -> (f64, f64) {
    let macs = Dims::of(l).macs();
    let per = 3.0 * E_DRAM + 7.0 * E_GB + 4.0 * E_NOC + 8.0 * E_RF_WEIGHT;
    (macs * per * bits as f64 / 16.0, macs)
}

/// Candidate tile sizes: powers of two below `n`, and `n`.
fn candidates(n: i64, cap: i64) -> Vec<i64> {
    let top = n.min(cap).max(1);
    let mut v: Vec<i64> = std::iter::successors(Some(1i64), |x| Some(x * 2))
        .take_while(|&x| x < top)
        .collect();
    v.push(top);
    v
}

/// The heuristic tiling of the analytic mode: largest RF and spatial blocks, then the GB tile
/// halved along its largest dimension until it fits.
fn heuristic(d: &Dims) -> Tiling {
    let c_r = (RF_WEIGHTS / (d.r * d.s))
        .min(RF_INPUTS / d.s)
        .clamp(1, d.c.max(1));
    let mut t = Tiling {
        m_g: d.m,
        c_g: d.c,
        p_g: d.p,
        m_s: d.m.min(PE_ROWS),
        p_s: d.p.min(PE_COLS),
        c_r,
        q_r: d.q.min(RF_PSUMS),
    };
    while !t.legal(d) {
        let halve = |x: i64| ((x + 1) / 2).max(1);
        if t.m_g >= t.c_g && t.m_g >= t.p_g && t.m_g > 1 {
            t.m_g = halve(t.m_g);
        } else if t.c_g >= t.p_g && t.c_g > 1 {
            t.c_g = halve(t.c_g);
        } else if t.p_g > 1 {
            t.p_g = halve(t.p_g);
        } else {
            break; // a single output row of one channel never exceeds the GB for our layers
        }
        t.m_s = t.m_s.min(t.m_g);
        t.p_s = t.p_s.min(t.p_g);
        t.c_r = t.c_r.min(t.c_g);
    }
    t
}

/// The cost of one layer's data movement under `tiling`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    pub tiling: Tiling,
    pub accesses: Accesses,
    pub energy: MemEnergy,
    pub cycles: f64,
}

/// Search (or, in analytic mode, pick) the tiling of `l` with the lowest normalised
/// energy-plus-latency.
pub fn movement(l: &Layer, bits: i64, mode: HwMode) -> Movement {
    let d = Dims::of(l);
    let eval = |t: Tiling| {
        let (accesses, cycles) = t.cost(&d);
        Movement {
            tiling: t,
            accesses,
            energy: MemEnergy::of(&accesses, bits),
            cycles,
        }
    };
    let first = eval(heuristic(&d));
    if mode == HwMode::Analytic {
        return first;
    }
    let (e_ub, c_ub) = upper_bound(l, bits);
    let score = |m: &Movement| m.energy.total() / e_ub + m.cycles / c_ub;
    let mut best = first;
    let mut best_score = score(&best);
    for m_g in candidates(d.m, d.m) {
        for c_g in candidates(d.c, d.c) {
            for p_g in candidates(d.p, d.p) {
                for c_r in candidates(c_g, RF_INPUTS) {
                    for q_r in candidates(d.q, RF_PSUMS) {
                        let t = Tiling {
                            m_g,
                            c_g,
                            p_g,
                            m_s: m_g.min(PE_ROWS),
                            p_s: p_g.min(PE_COLS),
                            c_r,
                            q_r,
                        };
                        if !t.legal(&d) {
                            continue;
                        }
                        let m = eval(t);
                        let s = score(&m);
                        if s < best_score {
                            (best, best_score) = (m, s);
                        }
                    }
                }
            }
        }
    }
    best
}

/// Everything the cost model says about one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    pub kind: String,
    pub op: String,
    pub c_in: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
    pub h_out: i64,
    pub macs: i64,
    pub params: i64,
    pub in_activations: i64,
    pub out_activations: i64,
    /// BN, ReLU6 and residual-add operations (not MACs).
    pub other_ops: i64,
    /// Compute energy of the MACs (pJ).
    pub compute_pj: f64,
    /// Compute energy of the BN / activation / residual ops (pJ).
    pub other_pj: f64,
    pub memory: MemEnergy,
    pub tiling: Tiling,
    pub cycles: f64,
}

impl LayerCost {
    pub fn energy_pj(&self) -> f64 {
        self.compute_pj + self.other_pj + self.memory.total()
    }
}

/// One model's cost: per-layer rows and totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    pub label: String,
    pub layers: Vec<LayerCost>,
    pub macs_mult: i64,
    pub macs_shift: i64,
    pub macs_add: i64,
    pub params: i64,
    pub compute_mj: f64,
    pub other_mj: f64,
    pub memory: MemEnergy,
    pub memory_mj: f64,
    pub energy_mj: f64,
    pub latency_ms: f64,
}

/// Cost of a list of layers (one model).
pub fn model_cost(label: &str, list: &[Layer], hw: &HwConfig) -> ModelCost {
    let mut layers = Vec::with_capacity(list.len());
    let (mut macs, mut memory) = ([0i64; 3], MemEnergy::default());
    for l in list {
        let mv = movement(l, hw.bits, hw.mode);
        let out = l.out_activations();
        let (bn, relu, res) = (
            i64::from(l.bn) * out,
            i64::from(l.relu6) * out,
            i64::from(l.residual_add) * out,
        );
        let other_pj = bn as f64
            * (unit_energy(OpKind::Mult, hw.bits) + unit_energy(OpKind::Add, hw.bits))
            + (2 * relu + res) as f64 * unit_energy(OpKind::Add, hw.bits);
        macs[l.op as usize] += l.macs();
        memory.add(&mv.energy);
        layers.push(LayerCost {
            name: l.name.clone(),
            kind: l.kind.as_str().to_owned(),
            op: l.op.as_str().to_owned(),
            c_in: l.c_in,
            c_out: l.c_out,
            kernel: l.kernel,
            stride: l.stride,
            groups: l.groups,
            h_out: l.h_out,
            macs: l.macs(),
            params: l.params(),
            in_activations: l.in_activations(),
            out_activations: out,
            other_ops: 2 * bn + 2 * relu + res,
            compute_pj: mac_energy(l.op, l.macs(), hw.bits, hw.convention),
            other_pj,
            memory: mv.energy,
            tiling: mv.tiling,
            cycles: mv.cycles,
        });
    }
    let pj_to_mj = 1e-9;
    let compute_mj = layers.iter().map(|l| l.compute_pj).sum::<f64>() * pj_to_mj;
    let other_mj = layers.iter().map(|l| l.other_pj).sum::<f64>() * pj_to_mj;
    let memory_mj = memory.total() * pj_to_mj;
    let cycles: f64 = layers.iter().map(|l| l.cycles).sum();
    ModelCost {
        label: label.to_owned(),
        params: layers.iter().map(|l| l.params).sum(),
        layers,
        macs_mult: macs[OpKind::Mult as usize],
        macs_shift: macs[OpKind::Shift as usize],
        macs_add: macs[OpKind::Add as usize],
        compute_mj,
        other_mj,
        memory,
        memory_mj,
        energy_mj: compute_mj + other_mj + memory_mj,
        latency_ms: cycles / CLOCK_HZ * 1e3,
    }
}

/// The three models `shiftadd hw` reports for a config: the tiny MF model, the same architecture
/// all-Mult, and the largest augmented model (multiplicative, as ShiftAddAug trains it).
pub fn config_costs(cfg: &Config, channels: i64, resolution: i64, classes: i64) -> Vec<ModelCost> {
    let spec = ArchSpec::from_config(cfg, channels, resolution, classes);
    let tiny = Net::base_widths(&spec);
    let ops = OpSpec::from_config(cfg);
    let mut out = vec![
        model_cost(
            &format!("tiny ({})", cfg.ops.kind.as_str()),
            &layers::layers(&spec, &tiny, &ops, resolution),
            &cfg.hw,
        ),
        model_cost(
            "tiny (all mult)",
            &layers::layers(&spec, &tiny, &OpSpec::mult(), resolution),
            &cfg.hw,
        ),
    ];
    let mut aug = cfg.aug.clone();
    aug.hybrid = crate::config::Hybrid::Mult;
    let max: Widths = Net::max_widths(&spec, &aug);
    out.push(model_cost(
        "largest augmented (mult)",
        &layers::layers(&spec, &max, &OpSpec::mult(), resolution),
        &cfg.hw,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelName;
    use crate::rng::Rng;

    fn layer(
        kind: LayerKind,
        c_in: i64,
        c_out: i64,
        k: i64,
        s: i64,
        size: i64,
        op: OpKind,
    ) -> Layer {
        let h_out = (size + 2 * (k / 2) - k) / s + 1;
        Layer {
            name: "l".into(),
            kind,
            op,
            c_in,
            c_out,
            kernel: k,
            stride: s,
            groups: if kind == LayerKind::Depthwise {
                c_in
            } else {
                1
            },
            h_in: size,
            w_in: size,
            h_out,
            w_out: h_out,
            bn: kind != LayerKind::Linear,
            relu6: true,
            residual_add: false,
        }
    }

    #[test]
    fn op_counts_match_hand_computation() {
        // 3×3 conv 3→16 on 32×32, stride 1: 16·32·32·3·9 MACs.
        let c = layer(LayerKind::Conv, 3, 16, 3, 1, 32, OpKind::Mult);
        assert_eq!(c.macs(), 16 * 32 * 32 * 27);
        assert_eq!(c.params(), 16 * 27);
        // depthwise 3×3, 48 channels, 16×16 → 8×8 (stride 2): 48·8·8·9.
        let d = layer(LayerKind::Depthwise, 48, 48, 3, 2, 16, OpKind::Add);
        assert_eq!(
            (d.macs(), d.params(), d.out_activations()),
            (48 * 64 * 9, 48 * 9, 48 * 64)
        );
        // pointwise 48→16 on 8×8: 16·64·48.
        let p = layer(LayerKind::Pointwise, 48, 16, 1, 1, 8, OpKind::Shift);
        assert_eq!(p.macs(), 16 * 64 * 48);
        // linear 448→10.
        let f = layer(LayerKind::Linear, 448, 10, 1, 1, 1, OpKind::Mult);
        assert_eq!((f.macs(), f.params()), (4480, 4480));
    }

    #[test]
    fn energy_totals_match_the_table() {
        let hw = HwConfig::default();
        let p = layer(LayerKind::Pointwise, 48, 16, 1, 1, 8, OpKind::Shift);
        let macs = (16 * 64 * 48) as f64;
        assert!(
            (mac_energy(OpKind::Shift, p.macs(), 32, Convention::Paper) - macs * 0.13).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Shift, p.macs(), 32, Convention::Full) - macs * 1.03).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Add, p.macs(), 8, Convention::Full) - macs * 0.06).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Mult, p.macs(), 8, Convention::Paper) - macs * 0.2).abs() < 1e-6
        );
        let cost = model_cost("x", std::slice::from_ref(&p), &hw);
        let out = (16 * 64) as f64;
        let other = out * (3.7 + 0.9) + 2.0 * out * 0.9; // BN + ReLU6
        let l = &cost.layers[0];
        assert!((l.compute_pj - macs * 0.13).abs() < 1e-6);
        assert!(
            (l.other_pj - other).abs() < 1e-6,
            "{} vs {other}",
            l.other_pj
        );
        let total_pj = macs * 0.13 + other + l.memory.total();
        assert!((cost.energy_mj - total_pj * 1e-9).abs() < 1e-15);
        assert_eq!(
            (cost.macs_shift, cost.macs_mult, cost.macs_add),
            (p.macs(), 0, 0)
        );
    }

    #[test]
    fn searched_tilings_respect_the_limits_and_the_upper_bound() {
        let mut rng = Rng::new(5);
        let mut pick = |lo: i64, hi: i64| lo + rng.below((hi - lo + 1) as usize) as i64;
        for case in 0..300 {
            let kind = [LayerKind::Conv, LayerKind::Depthwise, LayerKind::Pointwise][case % 3];
            let k = match kind {
                LayerKind::Pointwise => 1,
                _ => [3, 5, 7][pick(0, 2) as usize],
            };
            let c_in = pick(1, 512);
            let c_out = if kind == LayerKind::Depthwise {
                c_in
            } else {
                pick(1, 512)
            };
            let size = pick(1, 64);
            let l = layer(kind, c_in, c_out, k, pick(1, 2), size, OpKind::Mult);
            let d = Dims::of(&l);
            let (e_ub, c_ub) = upper_bound(&l, 32);
            for mode in [HwMode::Search, HwMode::Analytic] {
                let m = movement(&l, 32, mode);
                let t = m.tiling;
                assert!(t.legal(&d), "{case}: {t:?} breaks a limit for {d:?}");
                let gb = (if d.depthwise { t.m_g } else { t.c_g }) * d.rows(t.p_g) * d.cols(d.q)
                    + t.m_g * t.c_g * d.r * d.s
                    + t.m_g * t.p_g * d.q;
                assert!(gb <= GB_WORDS && t.m_s * t.p_s <= PE_ROWS * PE_COLS);
                assert!(t.c_r * d.r * d.s <= RF_WEIGHTS && t.q_r <= RF_PSUMS);
                assert!(
                    m.energy.total() <= e_ub * (1.0 + 1e-12) && m.cycles <= c_ub,
                    "{case}: {} > {e_ub} or {} > {c_ub} ({d:?}, {t:?})",
                    m.energy.total(),
                    m.cycles
                );
                assert!(m.accesses.dram >= (l.params() + l.out_activations()) as f64);
            }
            let searched = movement(&l, 32, HwMode::Search);
            let quick = movement(&l, 32, HwMode::Analytic);
            let score = |m: &Movement| m.energy.total() / e_ub + m.cycles / c_ub;
            assert!(
                score(&searched) <= score(&quick) + 1e-12,
                "the search starts from the heuristic"
            );
        }
    }

    #[test]
    fn shift_below_add_below_mult_in_the_paper_convention() {
        let spec = ArchSpec::named(ModelName::Mbv2Tiny, 1, 32, 10);
        let w = Net::base_widths(&spec);
        let hw = HwConfig::default();
        let cost = |kind| {
            let ops = OpSpec {
                kind,
                ..OpSpec::mult()
            };
            model_cost("m", &layers::layers(&spec, &w, &ops, 32), &hw)
        };
        let (s, a, m) = (cost(OpKind::Shift), cost(OpKind::Add), cost(OpKind::Mult));
        assert!(s.compute_mj < a.compute_mj && a.compute_mj < m.compute_mj);
        // The data movement does not depend on the operator.
        assert!((s.memory_mj - m.memory_mj).abs() < 1e-12);
        assert_eq!(s.macs_shift + s.macs_mult, m.macs_mult);
    }
}
