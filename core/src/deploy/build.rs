//! From the float program to the integer one: each tensor's grid calibrated on training images,
//! the weights made integers, and BN with the weight scales folded into one requantisation per
//! output channel.

use super::float::{FloatConv, FloatNet, FloatStep};
use super::program::{INT_FORMAT, IntConv, IntModel, IntStep, IntWeights, Requant};
use crate::spec::config::OpKind;

/// How the integer program is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntOptions {
    /// Signed bits of every activation (16: int16 tensors; 8: int8).
    pub act_bits: u32,
    /// Round each MF layer's requantisation multiplier to this many signed powers of two (0:
    /// keep a full multiplier): `·mult` becomes shifts and additions, no multiply left in any MF
    /// layer; 1 is a bare power of two. The accuracy cost is what the evaluation measures.
    pub bn_shifts: u32,
    /// Bits of a requantisation multiplier (at most; fewer where the accumulator is wide).
    pub mult_bits: u32,
    /// Headroom over the largest calibrated value of a tensor when its grid is chosen.
    pub headroom: f64,
}

impl Default for IntOptions {
    fn default() -> Self {
        Self {
            act_bits: 16,
            bn_shifts: 0,
            mult_bits: 15,
            headroom: 1.25,
        }
    }
}

/// Facts of the export the program records.
#[derive(Debug, Clone)]
pub struct Source {
    pub run: i64,
    pub model: String,
    pub dataset: String,
    pub operator: OpKind,
}

/// The grid (fraction bits) that holds values up to `max_abs` in `bits` signed bits.
pub fn frac_for(max_abs: f64, bits: u32) -> i32 {
    let top = f64::from((1u32 << (bits - 1)) - 1);
    if !(max_abs.is_finite() && max_abs > 0.0) {
        return (bits - 1) as i32;
    }
    // The largest f with max_abs·2^f ≤ top.
    ((top / max_abs).log2().floor() as i32).clamp(-32, 40)
}

/// `scale` as `mult·2^-shift` with `mult` of at most `bits` bits (sign apart) and, when `terms`
/// is not 0, at most `terms` nonzero signed binary digits (each the nearest power of two to
/// what is left, so 1 is the scale rounded to a power of two).
pub fn multiplier(scale: f64, bits: u32, terms: u32) -> (i64, i32) {
    let (m, shift) = full_multiplier(scale, bits);
    if terms == 0 || m == 0 {
        return (m, shift);
    }
    let mut left = m;
    let mut kept = 0i64;
    for _ in 0..terms {
        if left == 0 {
            break;
        }
        let p = (left.unsigned_abs() as f64).log2().round() as u32;
        let digit = left.signum() << p;
        kept += digit;
        left -= digit;
    }
    (kept, shift)
}

fn full_multiplier(scale: f64, bits: u32) -> (i64, i32) {
    if scale == 0.0 || !scale.is_finite() {
        return (0, 0);
    }
    let sign = if scale < 0.0 { -1 } else { 1 };
    let a = scale.abs();
    let e = a.log2().floor() as i32;
    let mut shift = bits as i32 - 1 - e;
    let mut m = (a * 2f64.powi(shift)).round() as i64;
    if m >= 1 << bits {
        m /= 2;
        shift -= 1;
    }
    // Keep the shift in range for tiny or huge scales (precision goes first).
    while shift > 62 {
        m = (m + 1) / 2;
        shift -= 1;
    }
    (sign * m, shift.max(-62))
}

fn bits_of(bound: f64) -> u32 {
    (bound + 1.0).log2().ceil() as u32 + 1
}

/// The largest |value| of each step's output over `images` (normalised), and of the input.
fn calibrate(net: &FloatNet, images: &[Vec<f64>]) -> Vec<f64> {
    let mut max = vec![0f64; net.steps.len()];
    for x in images {
        let mut trace = Vec::new();
        net.forward(x, Some(&mut trace));
        for (m, t) in max.iter_mut().zip(&trace) {
            *m = t.iter().fold(*m, |a, v| a.max(v.abs()));
        }
    }
    max
}

/// The integer program of `net`, its grids calibrated on `calibration` (normalised images).
pub fn build(
    net: &FloatNet,
    calibration: &[Vec<f64>],
    source: Source,
    opts: IntOptions,
) -> Result<IntModel, String> {
    if !(4..=16).contains(&opts.act_bits) {
        return Err(format!("activation bits {} outside 4..16", opts.act_bits));
    }
    if calibration.is_empty() {
        return Err("no calibration image".into());
    }
    let max = calibrate(net, calibration);
    let bits = opts.act_bits;
    let act_max = f64::from((1u32 << (bits - 1)) - 1);
    // The input's grid holds every byte's normalised value.
    let lut_max = net
        .norm
        .iter()
        .flat_map(|&(m, s)| [(0.0 - m) / s, (1.0 - m) / s])
        .fold(0f64, |a, v| a.max(v.abs()));
    let input_frac = frac_for(lut_max, bits);
    let lut = net
        .norm
        .iter()
        .map(|&(m, s)| {
            (0..256)
                .map(|b| ((f64::from(b) / 255.0 - m) / s * 2f64.powi(input_frac)).round() as i32)
                .collect()
        })
        .collect();
    let grid = |i: usize| frac_for(max[i] * opts.headroom, bits);
    let mut frac = input_frac;
    let mut saved = Vec::new();
    let mut steps = Vec::new();
    for (i, step) in net.steps.iter().enumerate() {
        steps.push(match step {
            FloatStep::Conv(c) => {
                let out_frac = if c.relu6 {
                    frac_for(6.0, bits)
                } else {
                    grid(i)
                };
                let conv = int_conv(c, frac, out_frac, act_max, opts)?;
                frac = out_frac;
                IntStep::Conv(Box::new(conv))
            }
            FloatStep::Save => {
                saved.push(frac);
                IntStep::Save
            }
            FloatStep::AddSaved => {
                let other = saved.pop().ok_or("add_saved without a save")?;
                let out_frac = grid(i);
                let step = IntStep::AddSaved {
                    shift_current: frac - out_frac,
                    shift_saved: other - out_frac,
                    out_frac,
                };
                frac = out_frac;
                step
            }
            FloatStep::Pool { channels, area } => {
                let out_frac = grid(i);
                let scale = 2f64.powi(out_frac - frac) / *area as f64;
                let (mult, shift) = multiplier(scale, opts.mult_bits, 0);
                frac = out_frac;
                IntStep::Pool {
                    channels: *channels,
                    area: *area,
                    mult,
                    shift,
                    out_frac,
                }
            }
        });
    }
    let model = IntModel {
        format: INT_FORMAT.into(),
        run: source.run,
        model: source.model,
        dataset: source.dataset,
        operator: source.operator,
        act_bits: bits,
        bn_shifts: opts.bn_shifts,
        input: net.input,
        input_frac,
        lut,
        classes: net.classes,
        steps,
    };
    model.validate()?;
    Ok(model)
}

/// One conv as integers: its weights, the accumulator's grid and width, and the requantisation
/// onto `out_frac`.
fn int_conv(
    c: &FloatConv,
    in_frac: i32,
    out_frac: i32,
    act_max: f64,
    opts: IntOptions,
) -> Result<IntConv, String> {
    let n = c.geo.out.0;
    let per_out = c.geo.weights() / n;
    let bad = |why: String| format!("tensor {}.weight: {why}", c.name);
    // Per output channel: the weights' scale (Mult) and the bound of |acc|.
    let mut wscale = vec![1.0; n];
    let mut bound = vec![0f64; n];
    let (weights, acc_frac) = match c.op {
        OpKind::Shift => {
            let mut exps = Vec::with_capacity(c.weight.len());
            for &w in &c.weight {
                if w == 0.0 {
                    exps.push(None);
                    continue;
                }
                let p = w.abs().log2().round() as i32;
                if 2f64.powi(p) != w.abs() {
                    return Err(bad(format!("{w} is not a signed power of two")));
                }
                exps.push(Some(p));
            }
            let pmin = exps.iter().flatten().copied().min().unwrap_or(0);
            if exps.iter().flatten().any(|&p| p - pmin > 40) {
                return Err(bad("exponents span more than 40 bits".into()));
            }
            let sign = c
                .weight
                .iter()
                .map(|&w| w.signum() as i8 * i8::from(w != 0.0))
                .collect();
            let shl: Vec<u8> = exps
                .iter()
                .map(|p| p.map_or(0, |p| (p - pmin) as u8))
                .collect();
            for (o, b) in bound.iter_mut().enumerate() {
                *b = (0..per_out)
                    .filter(|j| exps[o * per_out + j].is_some())
                    .map(|j| act_max * 2f64.powi(i32::from(shl[o * per_out + j])))
                    .sum();
            }
            (IntWeights::Shift { sign, shl }, in_frac - pmin)
        }
        OpKind::Add => {
            let mut w = Vec::with_capacity(c.weight.len());
            for &v in &c.weight {
                let q = (v * 2f64.powi(in_frac)).round();
                if q.abs() >= f64::from(i32::MAX) {
                    return Err(bad(format!("{v} does not fit 32 bits on the input's grid")));
                }
                w.push(q as i32);
            }
            for (o, b) in bound.iter_mut().enumerate() {
                *b = w[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&q| act_max + f64::from(q).abs())
                    .sum::<f64>();
            }
            (IntWeights::Add { w }, in_frac)
        }
        OpKind::Mult => {
            let mut w = Vec::with_capacity(c.weight.len());
            for o in 0..n {
                let row = &c.weight[o * per_out..(o + 1) * per_out];
                let top = row.iter().fold(0f64, |a, v| a.max(v.abs()));
                wscale[o] = if top > 0.0 { top / 127.0 } else { 1.0 };
                w.extend(
                    row.iter()
                        .map(|v| (v / wscale[o]).round().clamp(-127.0, 127.0) as i8),
                );
                bound[o] = 127.0 * act_max * per_out as f64;
            }
            (IntWeights::Mult { w }, in_frac)
        }
    };
    // Shift-add multipliers are for MF layers; a Mult layer multiplies anyway.
    let terms = if c.op == OpKind::Mult {
        0
    } else {
        opts.bn_shifts
    };
    let mut requant = Requant {
        mean: Vec::with_capacity(n),
        mult: Vec::with_capacity(n),
        shift: Vec::with_capacity(n),
        bias: Vec::with_capacity(n),
        terms,
    };
    let mut widest = 0f64;
    for o in 0..n {
        let mean = (c.mean[o] * 2f64.powi(acc_frac) / wscale[o]).round();
        widest = widest.max(bound[o] + mean.abs());
        requant.mean.push(mean as i64);
    }
    let acc_bits = bits_of(widest);
    if acc_bits > 60 {
        return Err(bad(format!("accumulator needs {acc_bits} bits")));
    }
    let mult_bits = opts.mult_bits.min(62 - acc_bits);
    for (o, ws) in wscale.iter().enumerate() {
        let eff = ws * c.scale[o] * 2f64.powi(out_frac - acc_frac);
        let (m, s) = multiplier(eff, mult_bits, terms);
        requant.mult.push(m);
        requant.shift.push(s);
        requant
            .bias
            .push((c.bias[o] * 2f64.powi(out_frac)).round() as i64);
    }
    Ok(IntConv {
        name: c.name.clone(),
        geo: c.geo,
        weights,
        in_frac,
        acc_frac,
        requant,
        relu6: c.relu6,
        out_frac,
        acc_bits,
    })
}
