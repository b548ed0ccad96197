//! Parallel coordinates over a study's cells — an axis per config key that varies between them,
//! then the metrics — and each key's importance for a metric: the share of the metric's variance
//! across the cells that the key explains on its own (the first-order terms of a functional
//! ANOVA, computed on the cells themselves rather than on a fitted surrogate; on a full grid they
//! are exact, and keys that only ever vary together share their credit). Nothing is drawn here.

use std::collections::BTreeMap;
use std::sync::Arc;

use shiftadd_core::store::RunId;

/// Keys that differ between cells without being part of what a study compares.
const NOT_AXES: [&str; 2] = ["train.seed", "train.threads"];

/// One cell as the plot sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub run: RunId,
    /// Its variant's place in the study (the colour).
    pub group: usize,
    pub label: String,
    /// Its resolved config, `section.key` → the value as TOML text (the run row's, shared: the
    /// view builds its cells every frame).
    pub config: Arc<BTreeMap<String, String>>,
    /// Its metrics by axis name (`None`: not recorded).
    pub metrics: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// Numbers from `lo` to `hi` (on a log scale where they are all positive and span two decades
    /// or more).
    Numeric { lo: f64, hi: f64, log: bool },
    /// Values by name, evenly spaced, in sorted order.
    Categories(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub scale: Scale,
    /// A metric (after the config keys).
    pub metric: bool,
}

impl Axis {
    /// Where `v` (as TOML text, or a number's text) sits on this axis: 0 at the bottom, 1 at the top.
    fn place(&self, v: &str) -> Option<f64> {
        match &self.scale {
            Scale::Categories(c) => {
                let i = c.iter().position(|x| x == v)?;
                Some(if c.len() > 1 {
                    i as f64 / (c.len() - 1) as f64
                } else {
                    0.5
                })
            }
            Scale::Numeric { lo, hi, log } => {
                let x: f64 = v.parse().ok()?;
                let f = |x: f64| if *log { x.log10() } else { x };
                let span = f(*hi) - f(*lo);
                Some(if span > 0.0 {
                    ((f(x) - f(*lo)) / span).clamp(0.0, 1.0)
                } else {
                    0.5
                })
            }
        }
    }

    /// The value at `t` (0 bottom, 1 top) as text, for the axis' ticks and a brush's range.
    pub fn value_at(&self, t: f64) -> String {
        match &self.scale {
            Scale::Categories(c) if c.is_empty() => String::new(),
            Scale::Categories(c) => {
                let i = (t * (c.len() - 1) as f64).round() as usize;
                c[i.min(c.len() - 1)].clone()
            }
            Scale::Numeric { lo, hi, log } => {
                let v = if *log {
                    10f64.powf(lo.log10() + t * (hi.log10() - lo.log10()))
                } else {
                    lo + t * (hi - lo)
                };
                crate::chart::format::format_num(v, (hi - lo).abs() / 100.0)
            }
        }
    }
}

/// The plot: its axes, and per cell its place on each (`None` where it has no value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Coords {
    pub axes: Vec<Axis>,
    pub lines: Vec<(usize, Vec<Option<f64>>)>,
}

impl Coords {
    /// Which lines pass every brush (axis index → the range kept, 0 bottom to 1 top); a line with
    /// no value on a brushed axis does not.
    pub fn kept(&self, brushes: &BTreeMap<usize, (f64, f64)>) -> Vec<bool> {
        self.lines
            .iter()
            .map(|(_, at)| {
                brushes.iter().all(|(&axis, &(lo, hi))| {
                    at.get(axis)
                        .copied()
                        .flatten()
                        .is_some_and(|t| (lo - 1e-9..=hi + 1e-9).contains(&t))
                })
            })
            .collect()
    }
}

/// The axes of `cells`: every config key whose value differs between them (numeric where every
/// value is a number), then each metric with a value.
pub fn coords(cells: &[Cell]) -> Coords {
    let mut axes = Vec::new();
    let mut values: Vec<Vec<String>> = Vec::new();
    for key in varying_keys(cells) {
        let texts: Vec<String> = cells
            .iter()
            .map(|c| c.config.get(&key).cloned().unwrap_or_default())
            .collect();
        let scale =
            numeric_scale(texts.iter().map(|t| t.parse::<f64>().ok())).unwrap_or_else(|| {
                let mut c: Vec<String> = texts.clone();
                c.sort();
                c.dedup();
                Scale::Categories(c)
            });
        axes.push(Axis {
            name: key,
            scale,
            metric: false,
        });
        values.push(texts);
    }
    let names: Vec<String> = cells
        .first()
        .map(|c| c.metrics.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let xs: Vec<Option<f64>> = cells
            .iter()
            .map(|c| c.metrics.get(i).and_then(|m| m.1).filter(|v| v.is_finite()))
            .collect();
        let Some(scale) = numeric_scale(xs.iter().copied().filter(Option::is_some)) else {
            continue;
        };
        axes.push(Axis {
            name: name.clone(),
            scale,
            metric: true,
        });
        values.push(
            xs.iter()
                .map(|x| x.map_or_else(String::new, |v| v.to_string()))
                .collect(),
        );
    }
    let lines = cells
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = axes
                .iter()
                .zip(&values)
                .map(|(a, v)| a.place(&v[j]))
                .collect();
            (c.group, at)
        })
        .collect();
    Coords { axes, lines }
}

/// The config keys whose values differ between `cells` (seeds and thread counts aside).
fn varying_keys(cells: &[Cell]) -> Vec<String> {
    let Some(first) = cells.first() else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = first.config.keys().collect();
    for c in cells {
        keys.extend(c.config.keys());
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !NOT_AXES.contains(&k.as_str()))
        .filter(|k| {
            cells
                .iter()
                .any(|c| c.config.get(*k) != first.config.get(*k))
        })
        .cloned()
        .collect()
}

/// A numeric scale over `xs` if every one is a number (and there is one).
fn numeric_scale(xs: impl Iterator<Item = Option<f64>>) -> Option<Scale> {
    let xs: Vec<f64> = xs.collect::<Option<Vec<f64>>>()?;
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo.is_finite() && hi.is_finite()).then(|| Scale::Numeric {
        lo,
        hi,
        log: lo > 0.0 && hi / lo >= 100.0,
    })
}

/// Each varying config key's importance for metric `at` (an index into the cells' metrics), and
/// the seed's: the share of the metric's variance over the cells that the key's value explains
/// alone, `Σ_groups n_g (mean_g − mean)² / Σ (y − mean)²`. Largest first; empty with fewer than
/// two cells having the metric, or when it does not vary.
pub fn importance(cells: &[Cell], at: usize) -> Vec<(String, f64)> {
    let with: Vec<(&Cell, f64)> = cells
        .iter()
        .filter_map(|c| {
            c.metrics
                .get(at)
                .and_then(|m| m.1)
                .filter(|v| v.is_finite())
                .map(|v| (c, v))
        })
        .collect();
    if with.len() < 2 {
        return Vec::new();
    }
    let n = with.len() as f64;
    let mean = with.iter().map(|(_, y)| y).sum::<f64>() / n;
    let total: f64 = with.iter().map(|(_, y)| (y - mean).powi(2)).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let cells_with: Vec<Cell> = with.iter().map(|(c, _)| (*c).clone()).collect();
    let mut keys = varying_keys(&cells_with);
    if cells_with
        .iter()
        .any(|c| c.config.get("train.seed") != cells_with[0].config.get("train.seed"))
    {
        keys.push("train.seed".into());
    }
    let mut out: Vec<(String, f64)> = keys
        .into_iter()
        .map(|key| {
            let mut groups: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
            for (c, y) in &with {
                let g = groups
                    .entry(c.config.get(&key).map_or("", String::as_str))
                    .or_default();
                g.0 += y;
                g.1 += 1.0;
            }
            let between: f64 = groups
                .values()
                .map(|(sum, k)| k * (sum / k - mean).powi(2))
                .sum();
            (key, between / total)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(run: RunId, kind: &str, lr: f64, seed: u64, top1: Option<f64>) -> Cell {
        let config: BTreeMap<String, String> = [
            ("ops.kind", format!("\"{kind}\"")),
            ("train.lr", lr.to_string()),
            ("train.seed", seed.to_string()),
            ("train.epochs", "20".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Cell {
            run,
            group: usize::from(kind == "shift"),
            label: format!("{kind} {lr} s{seed}"),
            config: Arc::new(config),
            metrics: vec![("test/top1".into(), top1)],
        }
    }

    #[test]
    fn axes_are_the_varying_keys_then_the_metrics() {
        let cells = vec![
            cell(1, "mult", 0.01, 0, Some(0.9)),
            cell(2, "shift", 1.0, 1, Some(0.8)),
            cell(3, "shift", 0.1, 2, None),
        ];
        let c = coords(&cells);
        let names: Vec<&str> = c.axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["ops.kind", "train.lr", "test/top1"],
            "seed and constant keys left out"
        );
        assert_eq!(
            c.axes[0].scale,
            Scale::Categories(vec!["\"mult\"".into(), "\"shift\"".into()])
        );
        assert_eq!(
            c.axes[1].scale,
            Scale::Numeric {
                lo: 0.01,
                hi: 1.0,
                log: true
            },
            "two decades: a log axis"
        );
        assert_eq!(c.lines[0], (0, vec![Some(0.0), Some(0.0), Some(1.0)]));
        assert_eq!(c.lines[1], (1, vec![Some(1.0), Some(1.0), Some(0.0)]));
        let mid = c.lines[2].1[1].expect("lr 0.1");
        assert!(
            (mid - 0.5).abs() < 1e-12,
            "0.1 halfway on a log axis: {mid}"
        );
        assert_eq!(c.lines[2].1[2], None, "no test/top1 recorded");
        assert_eq!(c.axes[1].value_at(0.5), "0.100");
    }

    #[test]
    fn brushes_keep_the_lines_within_every_range() {
        let cells = vec![
            cell(1, "mult", 0.01, 0, Some(0.9)),
            cell(2, "shift", 1.0, 1, Some(0.8)),
            cell(3, "shift", 0.1, 2, None),
        ];
        let c = coords(&cells);
        let mut b = BTreeMap::new();
        assert_eq!(c.kept(&b), [true, true, true], "no brush keeps every line");
        b.insert(0, (0.9, 1.0));
        assert_eq!(c.kept(&b), [false, true, true], "shift only");
        b.insert(2, (0.0, 0.5));
        assert_eq!(
            c.kept(&b),
            [false, true, false],
            "and test/top1 low: no value is not kept"
        );
    }

    #[test]
    fn importance_is_the_share_of_variance_each_key_explains_alone() {
        // A 2 × 2 grid × 2 seeds: the kind moves the metric by 10 points, the lr not at all, the
        // seed by ±1.
        let mut cells = Vec::new();
        for (i, (kind, lr)) in [("mult", 0.1), ("mult", 0.2), ("shift", 0.1), ("shift", 0.2)]
            .into_iter()
            .enumerate()
        {
            for seed in 0..2u64 {
                let y =
                    if kind == "mult" { 0.9 } else { 0.8 } + if seed == 0 { 0.01 } else { -0.01 };
                cells.push(cell((2 * i) as i64 + seed as i64, kind, lr, seed, Some(y)));
            }
        }
        let imp = importance(&cells, 0);
        let get = |k: &str| imp.iter().find(|(n, _)| n == k).expect(k).1;
        // Total: 8 × (0.05² + 0.01²) ; kind: 8 × 0.05² ; seed: 8 × 0.01².
        let total = 0.05f64.powi(2) + 0.01f64.powi(2);
        assert!((get("ops.kind") - 0.05f64.powi(2) / total).abs() < 1e-9);
        assert!((get("train.seed") - 0.01f64.powi(2) / total).abs() < 1e-9);
        assert!(get("train.lr").abs() < 1e-9);
        assert_eq!(imp[0].0, "ops.kind", "largest first");
        assert!(importance(&cells[..1], 0).is_empty(), "one cell");
    }
}
