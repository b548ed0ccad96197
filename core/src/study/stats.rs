//! The statistics of a study table: per variant n, mean, standard deviation, the 95 % confidence
//! interval of the mean (Student t), min and max; against the baseline, the paired difference
//! over the seeds both have, with its 95 % interval and the two-sided paired t-test p-value.

use serde::Serialize;

/// One variant's values (one per seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one value.
    pub std: f64,
    /// Half-width of the 95 % interval of the mean; `NaN` for fewer than two values.
    pub ci95: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let ci95 = if n > 1 {
            t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Self {
            n,
            mean,
            std,
            ci95,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// A variant against the baseline over their common seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    /// Common seeds.
    pub n: usize,
    /// Mean of (variant − baseline).
    pub diff: f64,
    /// Half-width of its 95 % interval (`NaN` below two pairs).
    pub ci95: f64,
    /// Two-sided paired t-test p-value (`NaN` below two pairs; 0 if every difference is equal
    /// and non-zero, 1 if all are zero).
    pub p: f64,
}

impl Paired {
    /// `pairs`: (variant, baseline) per common seed.
    pub fn of(pairs: &[(f64, f64)]) -> Option<Self> {
        let d: Vec<f64> = pairs.iter().map(|(a, b)| a - b).collect();
        let s = Summary::of(&d)?;
        let p = if s.n < 2 {
            f64::NAN
        } else if s.std == 0.0 {
            if s.mean == 0.0 { 1.0 } else { 0.0 }
        } else {
            let t = s.mean / (s.std / (s.n as f64).sqrt());
            t_two_sided_p(t, (s.n - 1) as f64)
        };
        Some(Self {
            n: s.n,
            diff: s.mean,
            ci95: s.ci95,
            p,
        })
    }

    /// Whether the 95 % interval excludes 0.
    pub fn significant(&self) -> bool {
        self.ci95.is_finite() && (self.diff - self.ci95 > 0.0 || self.diff + self.ci95 < 0.0)
    }
}

/// Two-sided p-value of Student's t with `df` degrees of freedom: `I_{df/(df+t²)}(df/2, 1/2)`.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The `q` quantile (0.5 < q < 1) of Student's t with `df` degrees of freedom, by bisection on
/// the distribution function.
pub fn t_quantile(q: f64, df: f64) -> f64 {
    let tail = 2.0 * (1.0 - q); // two-sided p at the quantile
    let (mut lo, mut hi) = (0.0, 1e3);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_two_sided_p(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularised incomplete beta function `I_x(a, b)` (continued fraction, Lentz's method).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = if d.abs() < TINY { TINY } else { d };
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_the_table() {
        // Student t, 97.5 % quantiles (any statistics table): df 1, 2, 4, 10, 30.
        for (df, want) in [
            (1.0, 12.706),
            (2.0, 4.303),
            (4.0, 2.776),
            (10.0, 2.228),
            (30.0, 2.042),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 1e-3), "df {df}: {got} vs {want}");
        }
        // Two-sided p of t = 2.0 with 5 df is 0.1019 (tables); t = 0 gives 1.
        assert!(close(t_two_sided_p(2.0, 5.0), 0.1019, 1e-4));
        assert!(close(t_two_sided_p(0.0, 5.0), 1.0, 1e-12));
        // I_x(1, 1) = x; Γ(5) = 24.
        assert!(close(incomplete_beta(1.0, 1.0, 0.3), 0.3, 1e-12));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
    }

    #[test]
    fn summary_and_paired_difference_by_hand() {
        // 0.70, 0.72, 0.74: mean 0.72, std 0.02, CI 4.303 · 0.02 / √3 = 0.049687.
        let s = Summary::of(&[0.70, 0.72, 0.74]).expect("values");
        assert_eq!(s.n, 3);
        assert!(close(s.mean, 0.72, 1e-12) && close(s.std, 0.02, 1e-12));
        assert!(
            close(s.ci95, 4.302_65 * 0.02 / 3f64.sqrt(), 1e-6),
            "{}",
            s.ci95
        );
        assert_eq!((s.min, s.max), (0.70, 0.74));
        // Differences 0.02, 0.03, 0.04 vs the baseline: mean 0.03, std 0.01, t = 0.03/(0.01/√3)
        // = 5.196 on 2 df: p = 0.0351; CI half-width 4.303 · 0.01/√3 = 0.0248 → significant.
        let p = Paired::of(&[(0.72, 0.70), (0.75, 0.72), (0.78, 0.74)]).expect("pairs");
        assert!(close(p.diff, 0.03, 1e-12) && close(p.ci95, 0.024_84, 1e-4));
        assert!(close(p.p, 0.0351, 5e-4), "{}", p.p);
        assert!(p.significant());
        // Differences +0.01 and −0.01: the interval crosses 0.
        let q = Paired::of(&[(0.71, 0.70), (0.70, 0.71)]).expect("pairs");
        assert!(!q.significant() && close(q.diff, 0.0, 1e-12));
        // One value: no interval.
        let one = Summary::of(&[0.5]).expect("one");
        assert!(one.ci95.is_nan() && one.std == 0.0);
        assert!(Summary::of(&[]).is_none());
    }
}
