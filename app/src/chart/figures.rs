//! A study's two figures as SVG, fit for a paper: a metric's curves by variant (mean line over a
//! ±std band across seeds) and the reported metric by variant (each seed's value, the mean with
//! its 95 % interval, the baseline's mean dashed across). The Studies view's SVG buttons write
//! them from what it shows; `shiftadd study FILE --report … --figures DIR` writes the same two
//! headless, from the database alone, so that a results page's figures come from a command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use egui::Color32;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::Reader;
use shiftadd_core::study::report::{self, Row, Table};

use super::bands::{Group, value_extent};
use super::format::{color, format_count, format_num};
use super::series::Series;
use super::svg::{Chart, ChartSeries, Mark};

/// The curves figure's title (the view's plot title).
pub fn curves_title(metric: &str) -> String {
    format!("{metric} by variant: mean ± std over seeds")
}

/// The means figure's title (the view's plot title).
pub fn means_title(metric: &str) -> String {
    format!("{metric} by variant: mean ± 95 % CI, seeds beside, baseline dashed")
}

/// The y axis' title: the metric, with its unit where it is shown scaled.
fn y_title(metric: &str) -> String {
    if report::is_accuracy(metric) {
        format!("{metric} (%)")
    } else {
        metric.to_owned()
    }
}

/// `c` mixed towards white by `t` (0: `c`, 1: white): a faint line that stays opaque in SVG.
fn faint(c: Color32, t: f32) -> Color32 {
    let mix = |v: u8| (f32::from(v) + (255.0 - f32::from(v)) * t).round() as u8;
    Color32::from_rgb(mix(c.r()), mix(c.g()), mix(c.b()))
}

/// The curves of `groups` (built by [`Group::of`]) for `metric`: every band first, then the seeds'
/// lines (where the groups carry them), then the means on top, named in the legend.
pub fn curves_svg(title: &str, metric: &str, groups: &[Group]) -> String {
    let (k, _) = report::scale(metric);
    let mut bands = Vec::new();
    let mut seeds = Vec::new();
    let mut means = Vec::new();
    let (mut x_max, mut lo, mut hi) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    // A variant with nothing recorded yet (an unfinished study) has no curve, nor a legend entry.
    for g in groups.iter().filter(|g| !g.band.is_empty()) {
        let c = color(g.color);
        let mut edge: Vec<[f64; 2]> = g.band.iter().map(|(x, m, sd)| [*x, (m + sd) * k]).collect();
        edge.extend(g.band.iter().rev().map(|(x, m, sd)| [*x, (m - sd) * k]));
        for p in edge.iter().filter(|p| p[0].is_finite() && p[1].is_finite()) {
            x_max = x_max.max(p[0]);
            lo = lo.min(p[1]);
            hi = hi.max(p[1]);
        }
        bands.push(ChartSeries {
            name: String::new(),
            color: c,
            mark: Mark::Band,
            points: edge,
        });
        for s in &g.seeds {
            seeds.push(ChartSeries {
                name: String::new(),
                color: faint(c, 0.55),
                mark: Mark::Line,
                points: s.iter().map(|p| [p[0], p[1] * k]).collect(),
            });
        }
        means.push(ChartSeries {
            name: g.name.clone(),
            color: c,
            mark: Mark::Line,
            points: g.band.iter().map(|(x, m, _)| [*x, m * k]).collect(),
        });
    }
    if report::is_accuracy(metric) {
        (lo, hi) = (lo.max(0.0), hi.min(100.0));
    }
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.03).max(1e-9);
    bands.extend(seeds);
    bands.extend(means);
    let xf = |v: f64, _: f64| format_count(v);
    let yf = |v: f64, step: f64| format_num(v, step);
    Chart {
        title: title.to_owned(),
        x_label: "step".into(),
        y_label: y_title(metric),
        bounds: [[0.0, lo - pad], [x_max.max(1.0), hi + pad]],
        series: bands,
        x_fmt: &xf,
        y_fmt: &yf,
        x_categories: Vec::new(),
    }
    .render()
}

/// What the means figure draws for one variant at `x`, in the metric's units times `k`.
pub struct Marks {
    /// Each seed's value, side by side a little left of the mean, so that none hides another.
    pub seeds: Vec<[f64; 2]>,
    /// The mean, where the variant has a value.
    pub mean: Option<[f64; 2]>,
    /// The 95 % interval as segments: the whisker, clipped to the range (an accuracy's interval
    /// can reach past 100 %), then a cap at each end the range did not clip — a clipped end has
    /// none, so it reads as going on.
    pub whisker: Vec<[[f64; 2]; 2]>,
}

/// The marks of row `r` at `x` on the range `lo..hi` (in the metric's units).
pub fn marks(x: f64, r: &Row, (lo, hi): (f64, f64), k: f64) -> Marks {
    let n = r.values.len();
    let spread = 0.08 * n.saturating_sub(1) as f64;
    let seeds = r
        .values
        .iter()
        .enumerate()
        .map(|(j, (_, v))| {
            let t = if n > 1 {
                j as f64 / (n - 1) as f64
            } else {
                0.5
            };
            [x - 0.22 - spread / 2.0 + t * spread, v * k]
        })
        .collect();
    let mut whisker = Vec::new();
    if let Some(m) = r.summary.filter(|m| m.ci95.is_finite()) {
        let (a, b) = (m.mean - m.ci95, m.mean + m.ci95);
        let (ca, cb) = (a.max(lo), b.min(hi));
        whisker.push([[x, ca * k], [x, cb * k]]);
        for (y, clipped) in [(ca, ca > a), (cb, cb < b)] {
            if !clipped {
                whisker.push([[x - 0.08, y * k], [x + 0.08, y * k]]);
            }
        }
    }
    Marks {
        seeds,
        mean: r.summary.map(|m| [x, m.mean * k]),
        whisker,
    }
}

/// `table`'s metric by variant, on a range fitted to its values: per variant its seeds as small
/// dots left of the mean, the mean as a large dot, its 95 % interval as a whisker (clipped to the
/// range without a cap, as in the view), and the baseline's mean as a dashed line. A variant with
/// cells still missing says how many of its seeds it shows.
pub fn means_svg(title: &str, table: &Table) -> String {
    let (k, _) = report::scale(&table.metric);
    let (lo, hi) = value_extent(table).unwrap_or((0.0, 1.0));
    let n = table.rows.len();
    let dark = Color32::from_rgb(0x33, 0x33, 0x33);
    let mut series = Vec::new();
    if let Some(b) = table
        .rows
        .iter()
        .find(|r| r.variant == table.baseline)
        .and_then(|r| r.summary)
    {
        series.push(ChartSeries {
            name: format!("{} mean (baseline)", table.baseline),
            color: Color32::from_rgb(0x88, 0x88, 0x88),
            mark: Mark::Dashed,
            points: vec![[-0.5, b.mean * k], [n as f64 - 0.5, b.mean * k]],
        });
    }
    let mut whiskers = Vec::new();
    for (i, r) in table.rows.iter().enumerate() {
        let c = color(i);
        let m = marks(i as f64, r, (lo, hi), k);
        series.push(ChartSeries {
            name: String::new(),
            color: c,
            mark: Mark::Points(2.5),
            points: m.seeds,
        });
        whiskers.extend(m.whisker.into_iter().flatten());
        if let Some(mean) = m.mean {
            series.push(ChartSeries {
                name: String::new(),
                color: c,
                mark: Mark::Points(5.0),
                points: vec![mean],
            });
        }
    }
    series.push(ChartSeries {
        name: "95 % CI".into(),
        color: dark,
        mark: Mark::Segments,
        points: whiskers,
    });
    let categories = table
        .rows
        .iter()
        .map(|r| {
            if r.missing > 0 {
                let of = r.values.len() + r.missing;
                format!("{} ({} of {of} seeds)", r.variant, r.values.len())
            } else {
                r.variant.clone()
            }
        })
        .collect();
    let none = |_: f64, _: f64| String::new();
    let yf = |v: f64, step: f64| format_num(v, step);
    Chart {
        title: title.to_owned(),
        x_label: "variant".into(),
        y_label: y_title(&table.metric),
        bounds: [[-0.5, lo * k], [n.max(1) as f64 - 0.5, hi * k]],
        series,
        x_fmt: &none,
        y_fmt: &yf,
        x_categories: categories,
    }
    .render()
}

/// `metric`'s series of each cell of `study` (stored as study `id`), grouped by variant in the
/// spec's order: the curves figure's groups. Fails, naming the metrics there are, when no cell
/// has recorded `metric`.
pub fn study_groups(
    reader: &Reader,
    spec: &Study,
    id: i64,
    metric: &str,
) -> anyhow::Result<Vec<Group>> {
    let cells = reader.study_runs(id)?;
    let mut per_cell = Vec::new();
    for c in &cells {
        let mut s = Series::default();
        for m in reader.metric_series(c.run, metric)? {
            s.push_row(&m);
        }
        per_cell.push((c.variant.as_str(), s));
    }
    if per_cell.iter().all(|(_, s)| s.xs.is_empty()) {
        require_recorded(reader, spec, id, metric)?;
    }
    Ok(spec
        .variants
        .iter()
        .enumerate()
        .map(|(j, v)| {
            let series: Vec<&Series> = per_cell
                .iter()
                .filter(|(variant, s)| *variant == v.name && !s.xs.is_empty())
                .map(|(_, s)| s)
                .collect();
            Group::of(j, v.name.clone(), &series, false)
        })
        .collect())
}

/// Fails, naming the metrics its cells do record, when no cell of `study` (stored as study `id`)
/// has recorded `metric`.
pub fn require_recorded(
    reader: &Reader,
    spec: &Study,
    id: i64,
    metric: &str,
) -> anyhow::Result<()> {
    let cells = reader.study_runs(id)?;
    let mut known = BTreeSet::new();
    for c in &cells {
        known.extend(reader.metrics(c.run)?.into_iter().map(|m| m.key));
    }
    if known.contains(metric) {
        return Ok(());
    }
    let known: Vec<String> = known.into_iter().collect();
    bail!(
        "no cell of study `{}` has recorded `{metric}`{}",
        spec.name,
        if known.is_empty() {
            " (its cells have recorded nothing yet)".to_owned()
        } else {
            format!("; its cells record: {}", known.join(", "))
        }
    );
}

/// A metric as part of a file name: `val/top1` → `val-top1`.
pub fn slug(metric: &str) -> String {
    metric
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Write study `id`'s two figures into `dir` (created if needed): `<name>-<curves metric>-curves.svg`
/// and `<name>-<table metric>-means.svg`, each titled with the study's name. Returns their paths.
pub fn write_study_figures(
    reader: &Reader,
    spec: &Study,
    id: i64,
    table: &Table,
    curves_metric: &str,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let groups = study_groups(reader, spec, id, curves_metric)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = slug(&spec.name);
    let files = [
        (
            dir.join(format!("{name}-{}-curves.svg", slug(curves_metric))),
            curves_svg(
                &format!("{}: {}", spec.name, curves_title(curves_metric)),
                curves_metric,
                &groups,
            ),
        ),
        (
            dir.join(format!("{name}-{}-means.svg", slug(&table.metric))),
            means_svg(
                &format!("{}: {}", spec.name, means_title(&table.metric)),
                table,
            ),
        ),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests {
    use shiftadd_core::study::stats::Summary;

    use super::*;
    use crate::chart::series::Series;

    /// A table row of `values` (seeds 0, 1, …) with `missing` cells still to come.
    pub(crate) fn row(variant: &str, values: &[f64], missing: usize) -> Row {
        Row {
            variant: variant.into(),
            values: values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, *v))
                .collect(),
            missing,
            failed: 0,
            running: 0,
            pruned: 0,
            summary: Summary::of(values),
            against: None,
            paired: None,
            best: false,
            train_secs: None,
        }
    }

    /// The number in attribute `name` of the SVG element `tag`.
    fn attr(tag: &str, name: &str) -> f64 {
        let at = tag.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        tag[at..at + tag[at..].find('"').expect("end")]
            .parse()
            .expect("number")
    }

    #[test]
    fn means_name_every_variant_whisker_each_interval_and_dash_the_baseline() {
        let table = Table {
            study: 3,
            name: "s".into(),
            metric: "test/top1".into(),
            baseline: "direct".into(),
            rows: vec![
                row("direct", &[0.85, 0.86, 0.84], 0),
                row("aug <x>", &[0.83, 0.82, 0.84], 0),
                row("late", &[0.80], 2),
            ],
            left: Default::default(),
        };
        let svg = means_svg("s: means", &table);
        // Every variant labels its place on the axis; one still training says how many seeds it has.
        for label in ["direct", "aug &lt;x&gt;", "late (1 of 3 seeds)"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
        }
        // Whiskers: two variants with an interval, each a vertical line and two caps (the one
        // seed of `late` has none).
        let whiskers: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<line") && l.contains("#333333"))
            .collect();
        assert_eq!(whiskers.len(), 6, "{svg}");
        // The baseline's mean: a dashed line, level, at the height of direct's mean dot.
        let dashed = svg
            .lines()
            .find(|l| l.contains("stroke-dasharray"))
            .expect("baseline");
        assert!(dashed.contains("direct mean (baseline)"), "{dashed}");
        let ys: Vec<f64> = dashed
            .split("points=\"")
            .nth(1)
            .expect("points")
            .split('"')
            .next()
            .expect("points")
            .split(' ')
            .map(|p| p.split(',').nth(1).expect("y").parse().expect("y"))
            .collect();
        let mean_dot = svg
            .lines()
            .find(|l| l.starts_with("<circle") && l.contains("r=\"5\""))
            .expect("direct's mean");
        assert!(ys.len() == 2 && ys[0] == ys[1], "{dashed}");
        assert!(
            (attr(mean_dot, "cy") - ys[0]).abs() < 0.01,
            "{mean_dot} vs {dashed}"
        );
        // A dot per seed, and a mean dot per variant (`late` has no interval but a mean).
        assert_eq!(svg.matches("r=\"2.5\"").count(), 3 + 3 + 1, "{svg}");
        assert_eq!(svg.matches("r=\"5\"").count(), 3, "{svg}");
    }

    #[test]
    fn curves_band_each_variant_under_its_mean_in_percent() {
        let a = Series::new(vec![100.0, 200.0], vec![0.5, 0.7]);
        let b = Series::new(vec![100.0, 200.0], vec![0.6, 0.9]);
        let groups = vec![
            Group::of(0, "direct".into(), &[&a, &b], false),
            Group::of(1, "aug".into(), &[&a], true),
        ];
        let svg = curves_svg("s: curves", "val/top1", &groups);
        assert_eq!(svg.matches("<polygon").count(), 2, "a band per variant");
        // Means are named in the legend and drawn after every band (on top of them).
        let last_band = svg.rfind("<polygon").expect("band");
        for name in ["direct", "aug"] {
            let at = svg
                .find(&format!("<title>{name}</title>"))
                .expect("mean line");
            assert!(at > last_band, "{name}'s mean under a band");
            assert!(svg.contains(&format!(">{name}</text>")), "legend: {name}");
        }
        // `aug` carries its one seed's line, faint and nameless.
        assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
        // Accuracy reads in percent: the axis spans the band (0.55 ± 0.07 … 0.9) in % and says so.
        assert!(svg.contains(">val/top1 (%)</text>"), "{svg}");
        assert!(
            svg.contains(">90</text>") || svg.contains(">85</text>"),
            "{svg}"
        );
        assert!(!svg.contains(">0.9</text>"), "{svg}");
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(slug("val/top1"), "val-top1");
        assert_eq!(slug("paper main"), "paper-main");
    }
}
