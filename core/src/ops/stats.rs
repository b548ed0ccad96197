//! Distribution statistics of weight tensors, for the weight-discrepancy records (method.md §5):
//! histograms on fixed bin edges with under/overflow counts, mean, standard deviation, excess
//! kurtosis (Gaussian 0, Laplace 3), KL divergence from the histogram to the best-fit Gaussian and
//! Laplace, and the 1-Wasserstein distance between two samples. Plain `f32` slices in, numbers out.

use serde::{Deserialize, Serialize};

/// Fixed bin edges, chosen once per layer (at its first snapshot) and reused for every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edges(pub Vec<f64>);

impl Edges {
    /// `bins` equal bins over mean ± `width_sd` standard deviations of `values`.
    pub fn around(values: &[f32], bins: usize, width_sd: f64) -> Self {
        let m = Moments::of(values);
        let half = (m.std * width_sd).max(1e-8);
        let (lo, hi) = (m.mean - half, m.mean + half);
        Self(
            (0..=bins)
                .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
                .collect(),
        )
    }

    pub fn bins(&self) -> usize {
        self.0.len().saturating_sub(1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub underflow: u64,
    pub overflow: u64,
}

impl Histogram {
    pub fn of(values: &[f32], edges: &Edges) -> Self {
        let e = &edges.0;
        let bins = edges.bins();
        let (lo, hi) = (e[0], e[bins]);
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u64; bins];
        let (mut underflow, mut overflow) = (0, 0);
        for &v in values {
            let v = f64::from(v);
            if v < lo {
                underflow += 1;
            } else if v >= hi {
                overflow += 1;
            } else {
                counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
            }
        }
        Self {
            counts,
            underflow,
            overflow,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub mean: f64,
    pub std: f64,
    /// Excess kurtosis: 0 for a Gaussian, 3 for a Laplace.
    pub kurtosis: f64,
}

impl Moments {
    pub fn of(values: &[f32]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let (mut m2, mut m4) = (0.0, 0.0);
        for &v in values {
            let d = f64::from(v) - mean;
            m2 += d * d;
            m4 += d * d * d * d;
        }
        m2 /= n;
        m4 /= n;
        let kurtosis = if m2 > 0.0 { m4 / (m2 * m2) - 3.0 } else { 0.0 };
        Self {
            mean,
            std: m2.sqrt(),
            kurtosis,
        }
    }
}

fn normal_cdf(x: f64, mean: f64, std: f64) -> f64 {
    0.5 * (1.0 + erf((x - mean) / (std * std::f64::consts::SQRT_2)))
}

fn laplace_cdf(x: f64, mu: f64, b: f64) -> f64 {
    if x < mu {
        0.5 * ((x - mu) / b).exp()
    } else {
        1.0 - 0.5 * (-(x - mu) / b).exp()
    }
}

/// Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), enough for binned probabilities.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// KL(p ‖ q) from the in-range histogram to a distribution given by its CDF, both normalised over
/// the histogram's range.
fn kl_to(h: &Histogram, edges: &Edges, cdf: impl Fn(f64) -> f64) -> f64 {
    let total: u64 = h.counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let e = &edges.0;
    let mass: Vec<f64> = e
        .windows(2)
        .map(|w| (cdf(w[1]) - cdf(w[0])).max(0.0))
        .collect();
    let z: f64 = mass.iter().sum::<f64>().max(1e-300);
    h.counts
        .iter()
        .zip(&mass)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &q)| {
            let p = c as f64 / total as f64;
            p * (p / (q / z).max(1e-12)).ln()
        })
        .sum()
}

/// Everything recorded for one weight sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightStats {
    pub mean: f64,
    pub std: f64,
    pub kurtosis: f64,
    /// KL from the histogram to the maximum-likelihood Gaussian.
    pub kl_gaussian: f64,
    /// KL from the histogram to the maximum-likelihood Laplace (median, mean absolute deviation).
    pub kl_laplace: f64,
}

impl WeightStats {
    pub fn of(values: &[f32], edges: &Edges, hist: &Histogram) -> Self {
        let m = Moments::of(values);
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let median = sorted.get(sorted.len() / 2).map_or(0.0, |&v| f64::from(v));
        let b = (values
            .iter()
            .map(|&v| (f64::from(v) - median).abs())
            .sum::<f64>()
            / values.len().max(1) as f64)
            .max(1e-12);
        let std = m.std.max(1e-12);
        Self {
            mean: m.mean,
            std: m.std,
            kurtosis: m.kurtosis,
            kl_gaussian: kl_to(hist, edges, |x| normal_cdf(x, m.mean, std)),
            kl_laplace: kl_to(hist, edges, |x| laplace_cdf(x, median, b)),
        }
    }
}

/// 1-Wasserstein distance between two equally sized samples: the mean gap between their order
/// statistics. (Unequal sizes compare quantiles at the smaller size.)
pub fn wasserstein1(a: &[f32], b: &[f32]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let at = |v: &[f32], i: usize| f64::from(v[i * v.len() / n]);
    (0..n).map(|i| (at(&a, i) - at(&b, i)).abs()).sum::<f64>() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gaussian(n: usize) -> Vec<f32> {
        let mut r = Rng::new(5);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn laplace(n: usize) -> Vec<f32> {
        let mut r = Rng::new(6);
        (0..n)
            .map(|_| {
                let u = r.uniform() - 0.5;
                (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()) as f32
            })
            .collect()
    }

    #[test]
    fn kurtosis_and_kl_tell_gaussian_from_laplace() {
        for (sample, kurt, gaussian_closer) in [
            (gaussian(200_000), 0.0, true),
            (laplace(200_000), 3.0, false),
        ] {
            let edges = Edges::around(&sample, 80, 6.0);
            let h = Histogram::of(&sample, &edges);
            assert_eq!(
                h.counts.iter().sum::<u64>() + h.underflow + h.overflow,
                sample.len() as u64
            );
            let s = WeightStats::of(&sample, &edges, &h);
            assert!(
                (s.kurtosis - kurt).abs() < 0.15,
                "kurtosis {} vs {kurt}",
                s.kurtosis
            );
            assert_eq!(s.kl_gaussian < s.kl_laplace, gaussian_closer, "{s:?}");
            assert!(s.kl_gaussian.min(s.kl_laplace) < 0.01, "{s:?}");
        }
    }

    #[test]
    fn histogram_edges_and_overflow() {
        let edges = Edges(vec![0.0, 1.0, 2.0]);
        let h = Histogram::of(&[-1.0, 0.0, 0.5, 1.0, 1.99, 2.0, 7.0], &edges);
        assert_eq!((h.counts, h.underflow, h.overflow), (vec![2, 2], 1, 2));
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let a = gaussian(1000);
        let b: Vec<f32> = a.iter().map(|v| v + 0.25).collect();
        assert!((wasserstein1(&a, &b) - 0.25).abs() < 1e-6);
        assert!(wasserstein1(&a, &a) < 1e-12);
    }
}
