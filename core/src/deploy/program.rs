//! The integer program: what `shiftadd export RUN --int DIR` writes (`int_model.json`), the Rust
//! interpreter runs and the generated C compiles. Every number is an integer:
//!
//! - an activation tensor is `q` on a fixed-point grid, value `q·2^-frac`, saturated to
//!   `act_bits` signed bits; `frac` is per tensor (calibrated);
//! - a Shift layer's weight is `sign·2^p`; the layer accumulates `sign·(q << (p − p_min))`, exact,
//!   on the grid `frac_in − p_min`;
//! - an Add layer's weights sit on its input's grid; it accumulates `−|q − w|`, exact;
//! - a Mult layer (the stem and the classifier, as the paper keeps them) has int8 weights with a
//!   scale per output channel, folded into its requantisation;
//! - after each conv, per output channel: `((acc − mean)·mult) >> shift + bias`, clamped to
//!   [0, 6] (ReLU6) or to the activation range: BN and the weight scale in one multiply and one
//!   rounding shift, or (`bn_shifts` = N) with the multiplier rounded to N signed powers of two,
//!   so that `·mult` is N shifts and N − 1 additions and the layer multiplies nothing;
//! - residual adds align both operands to the output grid by shifts; the average pool sums and
//!   requantises once per channel; the prediction is the largest logit.

use serde::{Deserialize, Serialize};

use crate::spec::config::OpKind;

use super::kernel::Geometry;

pub const INT_FORMAT: &str = "shiftadd-int-v1";

/// A layer's weights as integers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntWeights {
    /// `sign` ∈ {−1, 0, 1}; the tap is `sign·(q << shl)`.
    Shift { sign: Vec<i8>, shl: Vec<u8> },
    /// On the input's grid; the tap is `−|q − w|`.
    Add { w: Vec<i32> },
    /// int8; the tap is `q·w`.
    Mult { w: Vec<i8> },
}

impl IntWeights {
    pub fn len(&self) -> usize {
        match self {
            Self::Shift { sign, .. } => sign.len(),
            Self::Add { w } => w.len(),
            Self::Mult { w } => w.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn op(&self) -> OpKind {
        match self {
            Self::Shift { .. } => OpKind::Shift,
            Self::Add { .. } => OpKind::Add,
            Self::Mult { .. } => OpKind::Mult,
        }
    }
}

/// Per output channel: `out = round_shift((acc − mean)·mult, shift) + bias`, then the clamp.
/// `shift` > 0 is a rounding right shift, ≤ 0 a left shift. With `terms` > 0 every `mult` has at
/// most that many nonzero signed binary digits ([`signed_digits`]): `·mult` is computed as that
/// many shifts and additions, no multiplication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requant {
    pub mean: Vec<i64>,
    pub mult: Vec<i64>,
    pub shift: Vec<i32>,
    pub bias: Vec<i64>,
    pub terms: u32,
}

impl Requant {
    /// Whether `·mult` is shifts and additions (no multiply).
    pub fn multiplier_free(&self) -> bool {
        self.terms > 0
    }
}

/// The non-adjacent form of `m`: its fewest signed powers of two, `(sign, exponent)` from the
/// lowest (`m` = Σ sign·2^exponent).
pub fn signed_digits(m: i64) -> Vec<(i8, u32)> {
    let mut out = Vec::new();
    let mut v = i128::from(m);
    let mut e = 0;
    while v != 0 {
        if v & 1 == 1 {
            // 1 where the next bit is 0 (…01), −1 where it is 1 (…11).
            let d: i8 = if v & 3 == 1 { 1 } else { -1 };
            out.push((d, e));
            v -= i128::from(d);
        }
        v >>= 1;
        e += 1;
    }
    out
}

/// A conv (the classifier is a 1 × 1 conv on [C, 1, 1]) of the integer program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntConv {
    pub name: String,
    pub geo: Geometry,
    pub weights: IntWeights,
    /// The input's and the accumulator's grids.
    pub in_frac: i32,
    pub acc_frac: i32,
    pub requant: Requant,
    pub relu6: bool,
    pub out_frac: i32,
    /// Bits the accumulator needs at most (sign included), from the weights and the input range.
    pub acc_bits: u32,
}

/// One step of the integer program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IntStep {
    Conv(Box<IntConv>),
    Save,
    /// `out = round_shift(current, shift_current) + round_shift(saved, shift_saved)`, saturated.
    AddSaved {
        shift_current: i32,
        shift_saved: i32,
        out_frac: i32,
    },
    /// Sum each channel's `area` values, then `round_shift(sum·mult, shift)` onto `out_frac`.
    Pool {
        channels: usize,
        area: usize,
        mult: i64,
        shift: i32,
        out_frac: i32,
    },
}

/// The whole integer program of a tiny model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntModel {
    pub format: String,
    /// The run it was made from, and the float export's facts.
    pub run: i64,
    pub model: String,
    pub dataset: String,
    pub operator: OpKind,
    /// Signed bits of every activation tensor.
    pub act_bits: u32,
    /// Signed powers of two each MF layer's requantisation multiplier was rounded to (0: a full
    /// multiplier; N: N shifts and N − 1 additions, no multiply in MF layers at all).
    pub bn_shifts: u32,
    /// Input [channels, height, width]; `lut[c][byte]` is the normalised pixel on `input_frac`.
    pub input: [usize; 3],
    pub input_frac: i32,
    pub lut: Vec<Vec<i32>>,
    pub classes: usize,
    pub steps: Vec<IntStep>,
}

impl IntModel {
    /// Whether output channel `o` of `conv` computes inside 63 bits on any input: its largest
    /// |accumulator − mean| times |mult| (a program the builder made always does; a hostile file
    /// need not).
    fn fits_63_bits(&self, conv: &IntConv, o: usize) -> bool {
        let g = &conv.geo;
        let per_out = g.weights() / g.out.0.max(1);
        let taps = o * per_out..(o + 1) * per_out;
        let x = 2f64.powi(self.act_bits as i32 - 1);
        let bound: f64 = match &conv.weights {
            IntWeights::Shift { sign, shl } => taps
                .filter(|&i| sign[i] != 0)
                .map(|i| x * 2f64.powi(i32::from(shl[i])))
                .sum(),
            IntWeights::Add { w } => taps.map(|i| x + f64::from(w[i]).abs()).sum(),
            IntWeights::Mult { w } => taps.map(|i| x * f64::from(w[i]).abs()).sum(),
        };
        let r = &conv.requant;
        let centred = bound + (r.mean[o] as f64).abs();
        centred * (r.mult[o].abs().max(1) as f64) < 2f64.powi(62)
            && (r.bias[o] as f64).abs() < 2f64.powi(62)
    }

    /// The largest and smallest value of an activation.
    pub fn act_range(&self) -> (i64, i64) {
        let top = (1i64 << (self.act_bits - 1)) - 1;
        (-top - 1, top)
    }

    /// Check the program hangs together (shapes chain, every per-channel array has one entry
    /// per channel, weights fit their layer, grids and shifts in range); what is wrong, naming
    /// the layer and the array.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != INT_FORMAT {
            return Err(format!("format {:?}, expected {INT_FORMAT:?}", self.format));
        }
        if !(4..=16).contains(&self.act_bits) {
            return Err(format!("act_bits {} outside 4..16", self.act_bits));
        }
        let [c, h, w] = self.input;
        if self.lut.len() != c || self.lut.iter().any(|t| t.len() != 256) {
            return Err(format!("lut: {c} tables of 256 entries expected"));
        }
        let (lo, hi) = self.act_range();
        if self
            .lut
            .iter()
            .flatten()
            .any(|&v| i64::from(v) < lo || i64::from(v) > hi)
        {
            return Err("lut: an entry outside the activation range".into());
        }
        let frac_ok = |f: i32| (-32..=48).contains(&f);
        let shift_ok = |s: i32| (-62..=62).contains(&s);
        let mut shape = (c, h, w);
        let mut saved = Vec::new();
        for step in &self.steps {
            match step {
                IntStep::Conv(conv) => {
                    let at = |what: &str| format!("layer {}: {what}", conv.name);
                    let g = &conv.geo;
                    if g.input != shape {
                        return Err(at(&format!(
                            "input {:?} where the program has {shape:?}",
                            g.input
                        )));
                    }
                    Geometry::new(g.input, g.out.0, g.k, g.stride, g.pad, g.groups)
                        .ok()
                        .filter(|again| again == g)
                        .ok_or_else(|| at("geometry does not hold together"))?;
                    if conv.weights.len() != g.weights() {
                        return Err(at(&format!(
                            "{} weights where the layer has {}",
                            conv.weights.len(),
                            g.weights()
                        )));
                    }
                    if let IntWeights::Shift { sign, shl } = &conv.weights
                        && (shl.len() != sign.len()
                            || sign.iter().any(|s| s.abs() > 1)
                            || shl.iter().any(|&s| s > 40))
                    {
                        return Err(at("shift weights: sign outside −1..1 or shift beyond 40"));
                    }
                    if [g.input.0, g.input.1, g.input.2, g.out.0, g.k]
                        .iter()
                        .any(|&d| d > 4096)
                        || g.input.0 * g.input.1 * g.input.2 > 1 << 24
                        || g.out.0 * g.out.1 * g.out.2 > 1 << 24
                    {
                        return Err(at("a dimension beyond what a tiny model has"));
                    }
                    let r = &conv.requant;
                    let n = g.out.0;
                    for (name, len) in [
                        ("mean", r.mean.len()),
                        ("mult", r.mult.len()),
                        ("shift", r.shift.len()),
                        ("bias", r.bias.len()),
                    ] {
                        if len != n {
                            return Err(at(&format!(
                                "requant.{name} has {len} entries for {n} channels"
                            )));
                        }
                    }
                    if r.terms > 0
                        && r.mult
                            .iter()
                            .any(|&m| signed_digits(m).len() > r.terms as usize)
                    {
                        return Err(at(&format!(
                            "a requant.mult has more than {} signed binary digits",
                            r.terms
                        )));
                    }
                    if !r.shift.iter().all(|&s| shift_ok(s))
                        || !r.mult.iter().all(|m| m.abs() < 1 << 31)
                        || ![conv.in_frac, conv.acc_frac, conv.out_frac]
                            .into_iter()
                            .all(frac_ok)
                        || !(1..=63).contains(&conv.acc_bits)
                    {
                        return Err(at(
                            "a grid, shift, multiplier or accumulator width out of range",
                        ));
                    }
                    if let Some(o) = (0..n).find(|&o| !self.fits_63_bits(conv, o)) {
                        return Err(at(&format!(
                            "channel {o}'s accumulator times its multiplier could pass 63 bits"
                        )));
                    }
                    shape = g.out;
                }
                IntStep::Save => saved.push(shape),
                IntStep::AddSaved {
                    shift_current,
                    shift_saved,
                    out_frac,
                } => {
                    if saved.pop() != Some(shape) {
                        return Err("add_saved: no saved activation of its shape".into());
                    }
                    if !shift_ok(*shift_current) || !shift_ok(*shift_saved) || !frac_ok(*out_frac) {
                        return Err("add_saved: a shift or grid out of range".into());
                    }
                }
                IntStep::Pool {
                    channels,
                    area,
                    mult,
                    shift,
                    out_frac,
                } => {
                    if (*channels, *area) != (shape.0, shape.1 * shape.2) {
                        return Err(format!("pool of {channels} × {area} over {shape:?}"));
                    }
                    if mult.abs() >= 1 << 31 || !shift_ok(*shift) || !frac_ok(*out_frac) {
                        return Err("pool: multiplier, shift or grid out of range".into());
                    }
                    shape = (shape.0, 1, 1);
                }
            }
        }
        if shape != (self.classes, 1, 1) {
            return Err(format!(
                "the program ends in {shape:?}, not {} logits",
                self.classes
            ));
        }
        Ok(())
    }
}
