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
        (0..outs)
            .filter(|o| {
                (o * self.stride + at)
                    .checked_sub(self.pad)
                    .is_some_and(|i| i < n)
            })
            .count()
    }

    /// Every tap of one output channel, padding included.
    pub fn taps_all(&self) -> usize {
        self.out.1 * self.out.2 * self.k * self.k * self.per_group()
    }
}

/// The conv of `x` ([C, H, W], row-major) under `geo`: each output is the sum over its taps of
/// `tap(weight index, input value)`, a padded position reading `pad`.
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
    for o in 0..oc {
        let first_in = (o / out_per_group) * per_group;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = A::default();
                for i in 0..per_group {
                    let plane = &x[(first_in + i) * h * w..(first_in + i + 1) * h * w];
                    for ky in 0..k {
                        let y = (oy * s + ky).wrapping_sub(p);
                        for kx in 0..k {
                            let xx = (ox * s + kx).wrapping_sub(p);
                            let v = if y < h && xx < w {
                                plane[y * w + xx]
                            } else {
                                pad
                            };
                            acc += tap(((o * per_group + i) * k + ky) * k + kx, v);
                        }
                    }
                }
                out[(o * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}
