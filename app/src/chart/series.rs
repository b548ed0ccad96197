//! A curve as data: [`Series`] (steps, values, epochs, wall times), the x axes it can be drawn
//! against, and what is computed from it before drawing (debiased EMA smoothing). No drawing.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::format::{format_count, format_num, format_secs};

/// One named curve: x (step) and y values, equally long, x ascending; with the epoch and wall
/// time of each point when loaded from the store (empty otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub epochs: Vec<f64>,
    pub walls: Vec<f64>,
}

/// What a plot's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum XAxis {
    #[default]
    Step,
    /// Fractional epochs: a per-step point sits within its epoch, a per-epoch one at its end.
    Epoch,
    /// Wall-clock time (UTC).
    Wall,
    /// Seconds since the curve's first point.
    Relative,
}

impl XAxis {
    pub const ALL: [Self; 4] = [Self::Step, Self::Epoch, Self::Wall, Self::Relative];

    pub fn title(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Epoch => "epoch",
            Self::Wall => "wall time (UTC)",
            Self::Relative => "relative time",
        }
    }

    /// A tick label for x value `v` (`step`: the tick spacing).
    pub fn format(self, v: f64, step: f64) -> String {
        match self {
            Self::Step => format_count(v),
            Self::Epoch => format_num(v, step),
            Self::Wall => {
                let t = v.rem_euclid(86_400.0) as u64;
                if step < 60.0 {
                    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                } else {
                    format!("{:02}:{:02}", t / 3600, t / 60 % 60)
                }
            }
            Self::Relative => format_secs(v),
        }
    }
}

/// A plot's axes as the user set them (kept per plot, between starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PlotAxes {
    pub x: XAxis,
    pub log_x: bool,
    pub log_y: bool,
}

/// Debiased exponential moving average (as TensorBoard and W&B smooth): `m_t = a m_{t-1} +
/// (1-a) y_t`, divided by `1 - a^t` so the start is not pulled towards zero. Non-finite values
/// pass through without entering the average. `a` in [0, 1); 0 returns the input.
pub fn ema_debiased(ys: &[f64], a: f64) -> Vec<f64> {
    if a <= 0.0 {
        return ys.to_vec();
    }
    let a = a.min(0.999_999);
    let mut m = 0.0;
    let mut weight = 0.0;
    ys.iter()
        .map(|&y| {
            if !y.is_finite() {
                return y;
            }
            m = a * m + (1.0 - a) * y;
            weight = a * weight + (1.0 - a);
            m / weight
        })
        .collect()
}

impl Series {
    /// Append a stored metric row (rows come sorted by step).
    pub fn push_row(&mut self, m: &shiftadd_core::store::MetricRow) {
        self.xs.push(m.step as f64);
        self.ys.push(m.value);
        self.epochs.push(m.epoch as f64);
        self.walls.push(m.wall_time);
    }

    /// A series of step-indexed points (tests, synthetic data).
    pub fn new(xs: Vec<f64>, ys: Vec<f64>) -> Self {
        Self {
            xs,
            ys,
            ..Self::default()
        }
    }

    /// The x values on `axis` (steps where the series lacks epochs or wall times).
    pub fn x_values(&self, axis: XAxis) -> Cow<'_, [f64]> {
        let n = self.xs.len();
        match axis {
            XAxis::Epoch if self.epochs.len() == n => {
                Cow::Owned(fractional_epochs(&self.xs, &self.epochs))
            }
            XAxis::Wall if self.walls.len() == n => Cow::Borrowed(&self.walls),
            XAxis::Relative if self.walls.len() == n => {
                let t0 = self.walls.first().copied().unwrap_or(0.0);
                Cow::Owned(self.walls.iter().map(|w| w - t0).collect())
            }
            _ => Cow::Borrowed(&self.xs),
        }
    }

    pub fn len(&self) -> usize {
        self.xs.len()
    }

    /// Append `newer`'s points (sorted by step, as the store returns them) that are not held yet:
    /// a point at the last held step replaces it, points before it are already held.
    pub fn merge_newer(&mut self, newer: &Series) {
        let has_epochs = newer.epochs.len() == newer.xs.len();
        let has_walls = newer.walls.len() == newer.xs.len();
        for i in 0..newer.xs.len() {
            let (x, y) = (newer.xs[i], newer.ys[i]);
            let epoch = has_epochs.then(|| newer.epochs[i]);
            let wall = has_walls.then(|| newer.walls[i]);
            match self.xs.last() {
                Some(&last) if x < last => continue,
                Some(&last) if x == last => {
                    let j = self.xs.len() - 1;
                    self.ys[j] = y;
                    if let (Some(e), Some(held)) = (epoch, self.epochs.get_mut(j)) {
                        *held = e;
                    }
                    if let (Some(w), Some(held)) = (wall, self.walls.get_mut(j)) {
                        *held = w;
                    }
                }
                _ => {
                    self.xs.push(x);
                    self.ys.push(y);
                    self.epochs.extend(epoch);
                    self.walls.extend(wall);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        Some((*self.xs.last()?, *self.ys.last()?))
    }
}

/// Epoch coordinates of points at `steps` recorded in `epochs` (1-based): a point at the last
/// step of epoch e sits at e, one part-way through at the fraction of that epoch's steps done.
pub fn fractional_epochs(steps: &[f64], epochs: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(steps.len());
    let mut i = 0;
    let mut prev_end: Option<f64> = None;
    while i < steps.len() {
        let e = epochs[i];
        let mut j = i;
        while j + 1 < steps.len() && epochs[j + 1] == e {
            j += 1;
        }
        let end = steps[j];
        let start = prev_end.unwrap_or(steps[i] - 1.0);
        for &s in &steps[i..=j] {
            let frac = if end > start {
                (s - start) / (end - start)
            } else {
                1.0
            };
            out.push(e - 1.0 + frac.clamp(0.0, 1.0));
        }
        prev_end = Some(end);
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_points_extend_a_series_and_replace_its_last_step() {
        let series = |xs: &[f64], ys: &[f64], walls: &[f64]| Series {
            xs: xs.to_vec(),
            ys: ys.to_vec(),
            epochs: vec![0.0; xs.len()],
            walls: walls.to_vec(),
        };
        let mut held = series(&[1.0, 2.0], &[0.1, 0.2], &[10.0, 20.0]);
        // Step 1 is held already, step 2 is the last held one (fetched again), 3 and 4 are new.
        held.merge_newer(&series(
            &[1.0, 2.0, 3.0, 4.0],
            &[9.0, 0.25, 0.3, 0.4],
            &[11.0, 21.0, 30.0, 40.0],
        ));
        assert_eq!(held.xs, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(held.ys, [0.1, 0.25, 0.3, 0.4]);
        assert_eq!(held.walls, [10.0, 21.0, 30.0, 40.0]);
        assert_eq!(held.epochs.len(), 4);
        let mut empty = Series::default();
        empty.merge_newer(&series(&[5.0], &[0.5], &[50.0]));
        assert_eq!(
            (empty.xs, empty.ys, empty.walls),
            (vec![5.0], vec![0.5], vec![50.0])
        );
    }

    #[test]
    fn ema_is_debiased_and_zero_weight_is_identity() {
        let ys = [10.0, 10.0, 10.0];
        // Debiased: a constant series stays constant from the first point.
        for v in ema_debiased(&ys, 0.9) {
            assert!((v - 10.0).abs() < 1e-9, "{v}");
        }
        assert_eq!(ema_debiased(&[1.0, 2.0], 0.0), vec![1.0, 2.0]);
        let s = ema_debiased(&[0.0, 1.0], 0.5);
        // m1 = 0, w1 = .5; m2 = .5, w2 = .75 -> 0.6667
        assert!((s[1] - 0.5 / 0.75).abs() < 1e-9);
        let s = ema_debiased(&[1.0, f64::NAN, 1.0], 0.5);
        assert!(s[1].is_nan() && (s[2] - 1.0).abs() < 1e-9);
    }
}
