//! The one convolution loop every program runs (float reference, integer program, and the shape
//! the generated C has): a [C, H, W] input, `out` channels in `groups`, a square kernel, stride
//! and zero padding; what one tap contributes is the caller's (`v·w`, `−|v − w|`, a shift).

/// The shape of one conv: input, output, kernel, stride, padding, groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Input (channels, height, width).
    pub input: (usize, usize, usize),
    /// Output (channels, height, width).
    pub out: (usize, usize, usize),
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl Geometry {
    /// The geometry of `out` channels over `input`, or why it cannot be one.
    pub fn new(
        input: (usize, usize, usize),
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Result<Self, String> {
        let (c, h, w) = input;
        if groups == 0
            || !c.is_multiple_of(groups)
            || !out.is_multiple_of(groups)
            || k == 0
            || stride == 0
        {
            return Err(format!(
                "{out} outputs of {c} inputs in {groups} groups, kernel {k}, stride {stride}"
            ));
        }
        if h + 2 * pad < k || w + 2 * pad < k {
            return Err(format!("kernel {k} over {h} × {w} padded by {pad}"));
        }
        let side = |n: usize| (n + 2 * pad - k) / stride + 1;
        Ok(Self {
            input,
            out: (out, side(h), side(w)),
            k,
            stride,
            pad,
            groups,
        })
    }

    /// Input channels each output channel reads.
    pub fn per_group(&self) -> usize {
        self.input.0 / self.groups
    }

    /// Weights: out × in/groups × k × k.
    pub fn weights(&self) -> usize {
        self.out.0 * self.per_group() * self.k * self.k
    }

    /// Output positions along the height (`rows`) or the width where kernel offset `at` reads
    /// the input rather than the padding.
    pub fn reads(&self, rows: bool, at: usize) -> usize {
        let (n, outs) = if rows {
            (self.input.1, self.out.1)
        } else {
            (self.input.2, self.out.2)
        };
        let (lo, hi) = inside(n, outs, self.stride, self.pad, at);
        hi - lo
    }

    /// Every tap of one output channel, padding included.
    pub fn taps_all(&self) -> usize {
        self.out.1 * self.out.2 * self.k * self.k * self.per_group()
    }
}

/// The output positions `lo..hi` along one axis (`outs` of them, over `n` inputs) at which kernel
/// offset `at` reads the input rather than the padding.
fn inside(n: usize, outs: usize, stride: usize, pad: usize, at: usize) -> (usize, usize) {
    // o·stride + at − pad ∈ [0, n)
    let lo = pad.saturating_sub(at).div_ceil(stride).min(outs);
    let hi = if n + pad > at {
        (n + pad - at).div_ceil(stride).min(outs)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// The conv of `x` ([C, H, W], row-major) under `geo`: each output is the sum over its taps of
/// `tap(weight index, input value)`, a padded position reading `pad`.
///
/// Each output's sum takes its taps in the order (input channel, kernel row, kernel column), from
/// `A::default()` — the order of the loop nest the generated C has — so a float sum is the same to
/// the bit as that loop's. The loops here run the other way round (one tap over a whole output row
/// at a time, so the weight is loaded once and the row vectorises), which interleaves the outputs'
/// sums without reordering any one of them. `tap` must be a function of its arguments.
pub fn conv<T: Copy, A: Copy + Default + std::ops::AddAssign>(
    geo: &Geometry,
    x: &[T],
    pad: T,
    mut tap: impl FnMut(usize, T) -> A,
) -> Vec<A> {
    let (_, h, w) = geo.input;
    let (oc, oh, ow) = geo.out;
    let (k, s, p) = (geo.k, geo.stride, geo.pad);
    let per_group = geo.per_group();
    let out_per_group = oc / geo.groups;
    let mut out = vec![A::default(); oc * oh * ow];
    for (o, plane_out) in out.chunks_exact_mut(oh * ow).enumerate() {
        let first_in = (o / out_per_group) * per_group;
        for i in 0..per_group {
            let plane = &x[(first_in + i) * h * w..(first_in + i + 1) * h * w];
            for ky in 0..k {
                let (y_lo, y_hi) = inside(h, oh, s, p, ky);
                for kx in 0..k {
                    let wi = ((o * per_group + i) * k + ky) * k + kx;
                    let (x_lo, x_hi) = inside(w, ow, s, p, kx);
                    let padded = tap(wi, pad);
                    for (oy, row_out) in plane_out.chunks_exact_mut(ow).enumerate() {
                        if oy < y_lo || oy >= y_hi {
                            row_out.iter_mut().for_each(|a| *a += padded);
                            continue;
                        }
                        let row = &plane[(oy * s + ky - p) * w..][..w];
                        let (left, rest) = row_out.split_at_mut(x_lo);
                        let (mid, right) = rest.split_at_mut(x_hi - x_lo);
                        left.iter_mut().for_each(|a| *a += padded);
                        right.iter_mut().for_each(|a| *a += padded);
                        let first = x_lo * s + kx - p;
                        if s == 1 {
                            for (a, &v) in mid.iter_mut().zip(&row[first..]) {
                                *a += tap(wi, v);
                            }
                        } else {
                            for (a, &v) in mid.iter_mut().zip(row[first..].iter().step_by(s)) {
                                *a += tap(wi, v);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The loop nest the generated C has: one output at a time, its taps in order.
    fn direct(geo: &Geometry, x: &[f64], w: &[f64]) -> Vec<f64> {
        let (_, h, wd) = geo.input;
        let (oc, oh, ow) = geo.out;
        let (k, s, p, pg) = (geo.k, geo.stride, geo.pad, geo.per_group());
        let mut out = Vec::new();
        for o in 0..oc {
            let first = (o / (oc / geo.groups)) * pg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f64;
                    for i in 0..pg {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (y, xx) = (
                                    (oy * s + ky) as isize - p as isize,
                                    (ox * s + kx) as isize - p as isize,
                                );
                                let v = if y >= 0
                                    && xx >= 0
                                    && (y as usize) < h
                                    && (xx as usize) < wd
                                {
                                    x[((first + i) * h + y as usize) * wd + xx as usize]
                                } else {
                                    0.0
                                };
                                acc += -(v - w[((o * pg + i) * k + ky) * k + kx]).abs();
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
        out
    }

    #[test]
    fn a_float_sum_is_the_direct_loops_to_the_bit() {
        let mut rng = Rng::new(3);
        let shapes = [
            ((3, 5, 5), 4, 3, 1, 1, 1),
            ((4, 6, 7), 4, 3, 2, 1, 4),
            ((6, 4, 4), 3, 1, 1, 0, 3),
            ((2, 7, 5), 5, 5, 2, 2, 1),
            ((8, 3, 3), 8, 3, 1, 0, 8),
            ((2, 9, 8), 4, 3, 3, 2, 2),
            ((1, 2, 2), 2, 5, 1, 3, 1),
            ((16, 8, 8), 16, 3, 2, 1, 16),
        ];
        for (i, o, k, s, p, g) in shapes {
            let geo = Geometry::new(i, o, k, s, p, g).expect("geometry");
            let x: Vec<f64> = (0..i.0 * i.1 * i.2).map(|_| rng.normal() * 3.0).collect();
            let w: Vec<f64> = (0..geo.weights()).map(|_| rng.normal()).collect();
            let got = conv(&geo, &x, 0.0, |j, v| -(v - w[j]).abs());
            let want = direct(&geo, &x, &w);
            assert_eq!(got.len(), want.len(), "{geo:?}");
            for (n, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{geo:?} output {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_reads_of_each_offset_match_the_geometrys_count() {
        for (n, outs, s, p) in [
            (5, 5, 1, 1),
            (7, 4, 2, 1),
            (5, 3, 2, 2),
            (2, 6, 1, 3),
            (9, 3, 3, 2),
        ] {
            for at in 0..2 * p + 2 {
                let (lo, hi) = inside(n, outs, s, p, at);
                let want: Vec<usize> = (0..outs)
                    .filter(|o| (o * s + at).checked_sub(p).is_some_and(|i| i < n))
                    .collect();
                assert_eq!(
                    (lo..hi).collect::<Vec<_>>(),
                    want,
                    "n {n} outs {outs} s {s} p {p} at {at}"
                );
            }
        }
    }
}
