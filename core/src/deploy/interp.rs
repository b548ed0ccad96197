//! The integer program run in Rust: integers only, no libtorch, no float. What the generated C
//! computes, step for step (wrapping arithmetic, as C's two's-complement integers; the builder
//! keeps every product inside 63 bits, so nothing wraps in a program it made).

use super::kernel::conv;
use super::program::{IntConv, IntModel, IntStep, IntWeights, Requant};

/// `v·2^-s` rounded half up (`s` > 0), or `v·2^-s` exactly (`s` ≤ 0, a left shift).
pub fn round_shift(v: i64, s: i32) -> i64 {
    if s > 0 {
        v.wrapping_add(1i64 << (s - 1)) >> s
    } else {
        v.wrapping_shl((-s) as u32)
    }
}

/// One output channel's requantisation of `acc`, before the clamp.
pub fn requant(r: &Requant, ch: usize, acc: i64) -> i64 {
    round_shift(
        acc.wrapping_sub(r.mean[ch]).wrapping_mul(r.mult[ch]),
        r.shift[ch],
    )
    .wrapping_add(r.bias[ch])
}

/// The accumulators of a conv, before requantisation.
pub fn accumulate(c: &IntConv, x: &[i32]) -> Vec<i64> {
    match &c.weights {
        IntWeights::Shift { sign, shl } => conv(&c.geo, x, 0, |i, v| {
            i64::from(sign[i]) * i64::from(v).wrapping_shl(u32::from(shl[i]))
        }),
        IntWeights::Add { w } => conv(&c.geo, x, 0, |i, v| -(i64::from(v) - i64::from(w[i])).abs()),
        IntWeights::Mult { w } => conv(&c.geo, x, 0, |i, v| i64::from(v) * i64::from(w[i])),
    }
}

impl IntModel {
    /// An image's bytes on the input grid (one table lookup per pixel).
    pub fn input(&self, image: &[u8]) -> Vec<i32> {
        let plane = self.input[1] * self.input[2];
        image
            .iter()
            .enumerate()
            .map(|(i, &b)| self.lut[i / plane][usize::from(b)])
            .collect()
    }

    /// The logits (on the last step's grid) of an input; `trace` receives each step's output and
    /// its grid.
    pub fn run(&self, x: Vec<i32>, mut trace: Option<&mut Vec<(Vec<i32>, i32)>>) -> Vec<i32> {
        let (lo, hi) = self.act_range();
        let saturate = |v: i64| v.clamp(lo, hi) as i32;
        let mut x = x;
        let mut frac = self.input_frac;
        let mut saved: Vec<(Vec<i32>, i32)> = Vec::new();
        for step in &self.steps {
            x = match step {
                IntStep::Conv(c) => {
                    let acc = accumulate(c, &x);
                    let area = c.geo.out.1 * c.geo.out.2;
                    let six = round_shift(6, -c.out_frac);
                    frac = c.out_frac;
                    acc.iter()
                        .enumerate()
                        .map(|(i, &a)| {
                            let v = requant(&c.requant, i / area, a);
                            saturate(if c.relu6 { v.clamp(0, six) } else { v })
                        })
                        .collect()
                }
                IntStep::Save => {
                    saved.push((x.clone(), frac));
                    x
                }
                IntStep::AddSaved {
                    shift_current,
                    shift_saved,
                    out_frac,
                } => {
                    let (s, _) = saved.pop().unwrap_or_default();
                    frac = *out_frac;
                    x.iter()
                        .zip(&s)
                        .map(|(&a, &b)| {
                            saturate(
                                round_shift(i64::from(a), *shift_current)
                                    .wrapping_add(round_shift(i64::from(b), *shift_saved)),
                            )
                        })
                        .collect()
                }
                IntStep::Pool {
                    channels,
                    area,
                    mult,
                    shift,
                    out_frac,
                } => {
                    frac = *out_frac;
                    (0..*channels)
                        .map(|c| {
                            let sum: i64 = x[c * area..(c + 1) * area]
                                .iter()
                                .map(|&v| i64::from(v))
                                .sum();
                            saturate(round_shift(sum.wrapping_mul(*mult), *shift))
                        })
                        .collect()
                }
            };
            if let Some(t) = trace.as_deref_mut() {
                t.push((x.clone(), frac));
            }
        }
        x
    }

    /// The predicted class of an image: the first largest logit.
    pub fn classify(&self, image: &[u8]) -> usize {
        argmax(&self.run(self.input(image), None))
    }
}

/// The index of the first largest value.
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
