//! The project's own data-movement model (method.md §7).
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

use super::MemEnergy;
use crate::spec::config::HwMode;
use crate::spec::layers::{Layer, LayerKind};

pub const PE_ROWS: i64 = 16;
pub const PE_COLS: i64 = 12;
pub const RF_WEIGHTS: i64 = 224;
pub const RF_INPUTS: i64 = 12;
pub const RF_PSUMS: i64 = 24;
pub const GB_WORDS: i64 = 65_536;
pub const DRAM_WORDS_PER_CYCLE: f64 = 4.0;

/// Energy per 16-bit word access, pJ.
pub const E_DRAM: f64 = 200.0;
pub const E_GB: f64 = 22.2;
pub const E_NOC: f64 = 7.4;
pub const E_RF: f64 = 3.7;
pub const E_RF_WEIGHT: f64 = 7.4;

/// Energy (pJ) per memory level of `a` word accesses at `bits`.
fn energy_of(a: &Accesses, bits: i64) -> MemEnergy {
    let scale = bits as f64 / 16.0;
    MemEnergy {
        dram: a.dram * E_DRAM * scale,
        gb: a.gb * E_GB * scale,
        noc: a.noc * E_NOC * scale,
        rf: ((a.rf - a.rf_weight) * E_RF + a.rf_weight * E_RF_WEIGHT) * scale,
    }
}

/// One loop tiling of a layer (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
            energy: energy_of(&accesses, bits),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::tests::layer;
    use crate::rng::Rng;
    use crate::spec::config::OpKind;

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
}
