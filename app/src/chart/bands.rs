//! A study's curves as bands: per step, the mean and spread over seeds of a variant's series
//! ([`Group`]), thinned for drawing, and the value range a table of results spans. Data, shared by
//! the Studies and Compare views and by the figures the CLI writes; no drawing.

use shiftadd_core::study::report::{self, Table};

use super::series::Series;

/// Per x (step) where every seed has a value: (x, mean, std). Series are sorted by x, so one
/// cursor per series walks them once.
pub fn band(series: &[&Series]) -> Vec<(f64, f64, f64)> {
    let Some(first) = series.first() else {
        return Vec::new();
    };
    let mut cursors = vec![0usize; series.len()];
    let mut ys = Vec::with_capacity(series.len());
    let mut out = Vec::new();
    for &x in &first.xs {
        ys.clear();
        for (s, c) in series.iter().zip(cursors.iter_mut()) {
            while *c < s.xs.len() && s.xs[*c] < x {
                *c += 1;
            }
            if *c < s.xs.len() && s.xs[*c] == x {
                ys.push(s.ys[*c]);
            }
        }
        if ys.len() != series.len() || ys.iter().any(|y| !y.is_finite()) {
            continue;
        }
        let n = ys.len() as f64;
        let mean = ys.iter().sum::<f64>() / n;
        let var = if ys.len() > 1 {
            ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        out.push((x, mean, var.sqrt()));
    }
    out
}

/// At most about `max` points of `v`, evenly strided, the last kept (long curves draw as fast as
/// short ones; a band is smooth at this resolution).
pub fn thin<T: Copy>(v: Vec<T>, max: usize) -> Vec<T> {
    if v.len() <= max {
        return v;
    }
    let stride = v.len().div_ceil(max);
    let last = v[v.len() - 1];
    let mut out: Vec<T> = v.into_iter().step_by(stride).collect();
    out.push(last);
    out
}

/// A series as at most about `max` plot points (as [`thin`], without copying it whole first).
fn thin_series(s: &Series, max: usize) -> Vec<[f64; 2]> {
    let n = s.xs.len();
    let stride = n.div_ceil(max.max(1)).max(1);
    let mut out: Vec<[f64; 2]> = (0..n).step_by(stride).map(|i| [s.xs[i], s.ys[i]]).collect();
    if n > 0 && !(n - 1).is_multiple_of(stride) {
        out.push([s.xs[n - 1], s.ys[n - 1]]);
    }
    out
}

/// One group of curves, ready to draw: its colour index, name, band `(x, mean, std)` and (when
/// seeds are drawn) its raw series thinned to plot points.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub color: usize,
    pub name: String,
    pub band: Vec<(f64, f64, f64)>,
    pub seeds: Vec<Vec<[f64; 2]>>,
}

impl Group {
    /// The band of `series` (thinned for drawing), and their raw lines if `with_seeds`.
    pub fn of(color: usize, name: String, series: &[&Series], with_seeds: bool) -> Self {
        Self {
            color,
            name,
            band: thin(band(series), 2000),
            seeds: if with_seeds {
                series.iter().map(|s| thin_series(s, 300)).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The range the means plot shows (in the metric's units): every seed's value and every 95 %
/// interval, with a margin of an eighth of the span on each side (a small one around a single
/// value); `None` without a value. An accuracy's range stays within 0–100 %: a wide interval
/// (one failed seed of three) would otherwise stretch the axis past what the metric can reach.
pub fn value_extent(table: &Table) -> Option<(f64, f64)> {
    let (lo, hi) = raw_extent(table)?;
    Some(if report::is_accuracy(&table.metric) {
        (lo.max(0.0), hi.min(1.0))
    } else {
        (lo, hi)
    })
}

fn raw_extent(table: &Table) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for r in &table.rows {
        let ends = r
            .summary
            .iter()
            .filter(|m| m.ci95.is_finite())
            .flat_map(|m| [m.mean - m.ci95, m.mean + m.ci95]);
        for v in r.values.iter().map(|(_, v)| *v).chain(ends) {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if lo > hi {
        return None;
    }
    let pad = if hi - lo > 1e-12 {
        (hi - lo) / 8.0
    } else {
        lo.abs().max(1e-3) * 0.02
    };
    Some((lo - pad, hi + pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_mean_and_std_where_every_seed_has_a_point() {
        let a = Series::new(vec![1.0, 2.0, 3.0], vec![0.2, 0.4, 0.6]);
        let b = Series::new(vec![1.0, 3.0], vec![0.4, 0.8]);
        let band = band(&[&a, &b]);
        // x = 2 is missing in `b`; at x = 1: mean 0.3, std √0.02; at 3: 0.7, √0.02.
        assert_eq!(band.len(), 2);
        assert_eq!(band[0].0, 1.0);
        assert!((band[0].1 - 0.3).abs() < 1e-12 && (band[0].2 - 0.02f64.sqrt()).abs() < 1e-12);
        assert!((band[1].1 - 0.7).abs() < 1e-12);
        assert!(super::band(&[]).is_empty());
        let long: Vec<usize> = (0..10_000).collect();
        let t = thin(long, 1000);
        assert!(t.len() <= 1001 && t[0] == 0 && *t.last().expect("last") == 9_999);
        assert_eq!(thin(vec![1, 2, 3], 10), [1, 2, 3]);
        let s = Series::new(
            (0..10).map(f64::from).collect(),
            (0..10).map(|i| f64::from(i) * 2.0).collect(),
        );
        // Stride 4: points 0, 4, 8, and the last (9) kept.
        assert_eq!(
            thin_series(&s, 3),
            [[0.0, 0.0], [4.0, 8.0], [8.0, 16.0], [9.0, 18.0]]
        );
        assert_eq!(thin_series(&s, 100).len(), 10);
    }
}
