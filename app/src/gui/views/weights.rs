//! Weights: the weight discrepancy of the current run's MF layers. A table of every layer with
//! its numbers (kurtosis, KL to the fitted Gaussian / Laplace, Wasserstein-1 to the stored
//! weights); for the chosen layer the stored, remapped and power-of-two histograms overlaid on
//! their shared bin edges with fitted Gaussian and Laplace curves, an epoch slider, and a
//! histogram-over-epochs heat map.

use std::collections::{BTreeMap, BTreeSet};

use egui_plot::{Bar, BarChart, Heatmap, Line, Plot, PlotPoint};
use shiftadd_core::store::HistogramRow;

use crate::chart::format::color;
use crate::chart::format::csv_field;
use crate::chart::svg::{Chart, ChartSeries, Mark};
use crate::gui::ctx::ViewCtx;
use crate::gui::widgets::export::{Export, ExportRequest};
use crate::gui::widgets::plot::plot_header;

#[derive(Default)]
pub struct WeightsView {
    pub layer: Option<String>,
    /// Index into the layer's epochs; `None` follows the latest.
    pub epoch_index: Option<usize>,
    pub heat_kind: HeatKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeatKind {
    #[default]
    Stored,
    Remapped,
}

/// Columns of the heat map over epochs.
const HEAT_BINS: usize = 100;

/// One layer's histograms: kind → epoch → row.
type LayerHists<'a> = BTreeMap<&'a str, BTreeMap<i64, &'a HistogramRow>>;

fn by_layer(rows: &[HistogramRow]) -> BTreeMap<&str, LayerHists<'_>> {
    let mut out: BTreeMap<&str, LayerHists<'_>> = BTreeMap::new();
    for r in rows {
        out.entry(r.layer.as_str())
            .or_default()
            .entry(r.kind.as_str())
            .or_default()
            .insert(r.epoch, r);
    }
    out
}

fn stat(r: Option<&&HistogramRow>, key: &str) -> Option<f64> {
    r.and_then(|r| r.stats.get(key))
        .and_then(serde_json::Value::as_f64)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

/// Expected count per bin of a fitted density: `total · pdf(center) · width`.
pub fn fitted_counts(edges: &[f64], total: f64, pdf: impl Fn(f64) -> f64) -> Vec<[f64; 2]> {
    edges
        .windows(2)
        .map(|w| {
            let c = 0.5 * (w[0] + w[1]);
            [c, total * pdf(c) * (w[1] - w[0])]
        })
        .collect()
}

pub fn gaussian_pdf(mean: f64, std: f64) -> impl Fn(f64) -> f64 {
    move |x| {
        let z = (x - mean) / std;
        (-0.5 * z * z).exp() / (std * (2.0 * std::f64::consts::PI).sqrt())
    }
}

/// Laplace with the same mean and standard deviation (scale b = std / √2).
pub fn laplace_pdf(mean: f64, std: f64) -> impl Fn(f64) -> f64 {
    let b = std / std::f64::consts::SQRT_2;
    move |x| (-(x - mean).abs() / b).exp() / (2.0 * b)
}

/// The weights' range over `rows`, each with its own edges (snapshots fit their edges to their
/// weights since issue 45): the union of each row's occupied bins, in weight units.
fn occupied_range<'a>(rows: impl Iterator<Item = &'a HistogramRow>) -> Option<(f64, f64)> {
    rows.filter(|r| r.edges.len() == r.counts.len() + 1 && !r.counts.is_empty())
        .map(|r| {
            let (lo, hi) = occupied_bins(std::iter::once(r));
            (r.edges[lo], r.edges[hi])
        })
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
        .filter(|(lo, hi)| hi > lo)
}

/// `r`'s counts moved onto `bins` equal bins over `[lo, hi)`, each count to the bin of its own
/// bin's centre (rows recorded with different edges then share one grid, as the heat map needs).
fn rebin(r: &HistogramRow, (lo, hi): (f64, f64), bins: usize) -> Vec<u64> {
    let mut out = vec![0; bins];
    let width = (hi - lo) / bins as f64;
    for (i, &c) in r.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let centre = 0.5 * (r.edges[i] + r.edges[i + 1]);
        let j = ((centre - lo) / width).floor();
        if j >= 0.0 && (j as usize) < bins {
            out[j as usize] += c;
        }
    }
    out
}

/// The bins `lo..hi` that hold any weight in any of `rows` (two bins of margin each side), so
/// plots zoom to where the weights are rather than the full ±10 SD range.
fn occupied_bins<'a>(rows: impl Iterator<Item = &'a HistogramRow>) -> (usize, usize) {
    let mut lo = usize::MAX;
    let mut hi = 0;
    let mut n = 0;
    for r in rows {
        n = n.max(r.counts.len());
        if let Some(first) = r.counts.iter().position(|&c| c > 0) {
            lo = lo.min(first);
        }
        if let Some(last) = r.counts.iter().rposition(|&c| c > 0) {
            hi = hi.max(last + 1);
        }
    }
    if lo >= hi {
        return (0, n);
    }
    (lo.saturating_sub(2), (hi + 2).min(n))
}

/// A histogram as a step outline: (edge, count) corners.
fn steps(r: &HistogramRow) -> Vec<[f64; 2]> {
    let mut pts = Vec::with_capacity(2 * r.counts.len() + 2);
    for (i, &c) in r.counts.iter().enumerate() {
        let (a, b) = (r.edges[i], r.edges[i + 1]);
        pts.push([a, c as f64]);
        pts.push([b, c as f64]);
    }
    pts
}

impl WeightsView {
    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        let Some(run) = vcx.current else {
            ui.label("Select a run in the list to see its weight distributions.");
            return;
        };
        let ViewCtx { data, export, .. } = vcx;
        let Some(details) = data.data.get(&run).and_then(|d| d.details.as_ref()) else {
            ui.spinner();
            return;
        };
        let layers = by_layer(&details.histograms);
        if layers.is_empty() {
            ui.label(format!(
                "Run #{run} has no MF layers (a multiplicative tiny model): nothing is remapped."
            ));
            return;
        }
        if self
            .layer
            .as_deref()
            .is_none_or(|l| !layers.contains_key(l))
        {
            self.layer = layers.keys().next().map(|s| (*s).to_owned());
        }
        ui.heading(format!("Weight discrepancy · run #{run}"));
        egui::Panel::top("weights-table")
            .resizable(true)
            .default_size(200.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.table_ui(ui, &layers));
            });
        let Some(layer) = self.layer.clone() else {
            return;
        };
        let Some(hists) = layers.get(layer.as_str()) else {
            return;
        };
        let Some(stored) = hists.get("stored") else {
            return;
        };
        let epochs: Vec<i64> = stored.keys().copied().collect();
        let last = epochs.len().saturating_sub(1);
        let mut idx = self.epoch_index.unwrap_or(last).min(last);
        ui.horizontal(|ui| {
            ui.strong(&layer);
            let slider = egui::Slider::new(&mut idx, 0..=last)
                .text("epoch")
                .custom_formatter(|v, _| {
                    epochs
                        .get(v as usize)
                        .map_or_else(String::new, |e| format!("{e}"))
                });
            if ui.add_enabled(last > 0, slider).changed() {
                self.epoch_index = Some(idx);
            }
            let epoch = epochs.get(idx).copied().unwrap_or(0);
            ui.label(format!(
                "showing epoch {epoch}{}",
                if epoch == 0 { " (before training)" } else { "" }
            ));
            if self.epoch_index.is_some() && ui.small_button("latest").clicked() {
                self.epoch_index = None;
            }
        });
        let epoch = epochs.get(idx).copied().unwrap_or(0);
        let avail = ui.available_height();
        let at = LayerPlot {
            run,
            layer: &layer,
            hists,
            epoch,
        };
        ui.columns(2, |cols| {
            histogram_ui(&mut cols[0], &at, avail - 30.0, export);
            self.heatmap_ui(&mut cols[1], &at, avail - 60.0, export);
        });
    }

    fn table_ui(&mut self, ui: &mut egui::Ui, layers: &BTreeMap<&str, LayerHists<'_>>) {
        egui::Grid::new("weights-layers")
            .striped(true)
            .num_columns(8)
            .show(ui, |ui| {
                for h in [
                    "Layer",
                    "Op",
                    "Kurtosis stored",
                    "Kurtosis remapped",
                    "KL to Gauss, remapped",
                    "KL to Laplace, remapped",
                    "W1 remapped",
                    "W1 pow2",
                ] {
                    ui.strong(h);
                }
                ui.end_row();
                for (name, hists) in layers {
                    let latest = |kind: &str| hists.get(kind).and_then(|e| e.values().next_back());
                    let (s, r, p) = (latest("stored"), latest("remapped"), latest("pow2"));
                    let selected = self.layer.as_deref() == Some(*name);
                    if ui.selectable_label(selected, *name).clicked() {
                        self.layer = Some((*name).to_owned());
                    }
                    ui.label(
                        s.and_then(|r| r.stats.get("op"))
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or(""),
                    );
                    ui.label(num(stat(s, "kurtosis")));
                    ui.label(num(stat(r, "kurtosis")));
                    ui.label(num(stat(r, "kl_gaussian")));
                    ui.label(num(stat(r, "kl_laplace")));
                    ui.label(num(stat(r, "w1_to_stored")));
                    ui.label(num(stat(p, "w1_to_stored")));
                    ui.end_row();
                }
            });
    }

    fn heatmap_ui(
        &mut self,
        ui: &mut egui::Ui,
        at: &LayerPlot<'_>,
        height: f32,
        export: &mut Export,
    ) {
        let (hists, epoch) = (at.hists, at.epoch);
        let id = at.id("heatmap");
        let kind = match self.heat_kind {
            HeatKind::Stored => "stored",
            HeatKind::Remapped => "remapped",
        };
        let header = plot_header(
            ui,
            &id,
            "Histogram over epochs (log counts)",
            export,
            None,
            false,
        );
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.heat_kind, HeatKind::Stored, "stored");
            ui.radio_value(&mut self.heat_kind, HeatKind::Remapped, "remapped");
        });
        let Some(rows) = hists.get(kind) else { return };
        // One grid for every epoch (their edges differ: each snapshot fits its own weights).
        let cols = HEAT_BINS;
        let range = occupied_range(rows.values().copied()).unwrap_or((0.0, 1.0));
        // Row 0 (the first epoch) is drawn at the bottom.
        let mut values = Vec::with_capacity(rows.len() * cols);
        for r in rows.values() {
            values.extend(rebin(r, range, cols).iter().map(|&c| (c as f64).ln_1p()));
        }
        if header.csv {
            let mut text = String::from("epoch,bin_low,bin_high,count\n");
            for (e, r) in rows {
                for (i, c) in r.counts.iter().enumerate() {
                    text.push_str(&format!("{e},{},{},{c}\n", r.edges[i], r.edges[i + 1]));
                }
            }
            export.request(ExportRequest::Csv {
                name: id.clone(),
                text,
            });
        }
        let n_rows = values.len() / cols.max(1);
        let epochs: Vec<i64> = rows.keys().copied().collect();
        let first_edge = range.0;
        let bin_width = (range.1 - range.0) / cols as f64;
        Plot::new(&id)
            .height(height.max(150.0))
            .x_grid_spacer(|g| crate::gui::widgets::plot::nice_grid(&g, 70.0))
            .x_axis_formatter(crate::gui::widgets::plot::logged(
                ui.ctx(),
                &id,
                0,
                false,
                |m, _| crate::chart::format::format_num(m.value, m.step_size),
            ))
            .x_axis_label("weight")
            .y_axis_label("epoch")
            .y_axis_formatter(crate::gui::widgets::plot::logged(
                ui.ctx(),
                &id,
                1,
                true,
                move |mark, _| {
                    // Row k is centred on y = k.
                    let row = mark.value;
                    if row.fract().abs() < 1e-9 && row >= 0.0 {
                        epochs
                            .get(row as usize)
                            .map_or_else(String::new, ToString::to_string)
                    } else {
                        String::new()
                    }
                },
            ))
            .show(ui, |p| {
                if n_rows > 0 {
                    p.heatmap(
                        Heatmap::new(values, cols)
                            .show_labels(false)
                            .at(PlotPoint::new(first_edge, -0.5))
                            .tile_size(bin_width as f32, 1.0),
                    );
                    let row = rows.keys().position(|e| *e == epoch).unwrap_or(0);
                    let y = row as f64;
                    let x1 = first_edge + bin_width * cols as f64;
                    p.line(
                        Line::new("shown epoch", vec![[first_edge, y], [x1, y]])
                            .color(egui::Color32::WHITE),
                    );
                }
            });
        export.capture_if_requested(ui.ctx(), &id, header.region(ui));
    }
}

/// What both of a layer's plots show: run, layer, its histograms, the epoch picked.
struct LayerPlot<'a> {
    run: i64,
    layer: &'a str,
    hists: &'a LayerHists<'a>,
    epoch: i64,
}

impl LayerPlot<'_> {
    /// The plot's id (its memory, its export name): `run3-stem.conv-hist`.
    fn id(&self, what: &str) -> String {
        format!("run{}-{}-{what}", self.run, self.layer)
    }
}

/// A layer's histogram at one epoch: the stored weights as bars, the remapped and pow2 ones as
/// steps, and the Gaussian and Laplace fits to the stored ones (none when they do not vary).
struct Histogram<'a> {
    rows: Vec<(&'a str, &'a HistogramRow)>,
    fits: Vec<(&'static str, Vec<[f64; 2]>)>,
}

impl<'a> Histogram<'a> {
    fn at(hists: &LayerHists<'a>, epoch: i64) -> Option<Histogram<'a>> {
        let rows: Vec<(&str, &HistogramRow)> = ["stored", "remapped", "pow2"]
            .into_iter()
            .filter_map(|k| Some((k, *hists.get(k)?.get(&epoch)?)))
            .collect();
        let stored = rows.first()?.1;
        let total = stored.counts.iter().sum::<u64>() as f64;
        let mean = stat(Some(&stored), "mean").unwrap_or(0.0);
        let std = stat(Some(&stored), "std").unwrap_or(0.0);
        let fits = if std > 0.0 {
            vec![
                (
                    "Gaussian fit",
                    fitted_counts(&stored.edges, total, gaussian_pdf(mean, std)),
                ),
                (
                    "Laplace fit",
                    fitted_counts(&stored.edges, total, laplace_pdf(mean, std)),
                ),
            ]
        } else {
            Vec::new()
        };
        Some(Histogram { rows, fits })
    }

    fn stored(&self) -> &'a HistogramRow {
        self.rows[0].1
    }

    /// Every series' name and colour, in legend order.
    fn entries(&self) -> Vec<(String, egui::Color32)> {
        let rows = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (k, _))| ((*k).to_owned(), color(i)));
        let fits = self
            .fits
            .iter()
            .enumerate()
            .map(|(i, (n, _))| ((*n).to_owned(), color(5 + i)));
        rows.chain(fits).collect()
    }

    /// One line per bin of every series.
    fn csv(&self) -> String {
        let mut text = String::from("series,bin_low,bin_high,count\n");
        for (k, r) in &self.rows {
            for (i, c) in r.counts.iter().enumerate() {
                text.push_str(&format!("{k},{},{},{c}\n", r.edges[i], r.edges[i + 1]));
            }
        }
        let edges = &self.stored().edges;
        for (name, pts) in &self.fits {
            for (i, [_, y]) in pts.iter().enumerate() {
                text.push_str(&format!(
                    "{},{},{},{y}\n",
                    csv_field(name),
                    edges[i],
                    edges[i + 1]
                ));
            }
        }
        text
    }

    /// The series not `hidden`, as the SVG export draws them.
    fn chart_series(&self, hidden: &BTreeSet<String>) -> Vec<ChartSeries> {
        let mut series = Vec::new();
        for (i, (k, r)) in self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| !hidden.contains(*k))
        {
            let width = r
                .edges
                .get(1)
                .zip(r.edges.first())
                .map_or(1.0, |(b, a)| b - a);
            let (mark, points) = if i == 0 {
                (Mark::Bars(width), bar_centres(r))
            } else {
                (Mark::Line, steps(r))
            };
            series.push(ChartSeries {
                name: (*k).to_owned(),
                color: color(i),
                mark,
                points,
            });
        }
        for (i, (name, pts)) in self
            .fits
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| !hidden.contains(*n))
        {
            series.push(ChartSeries {
                name: (*name).to_owned(),
                color: color(5 + i),
                mark: Mark::Line,
                points: pts.clone(),
            });
        }
        series
    }
}

/// Each bin's centre and count.
fn bar_centres(r: &HistogramRow) -> Vec<[f64; 2]> {
    r.counts
        .iter()
        .enumerate()
        .map(|(b, &c)| [0.5 * (r.edges[b] + r.edges[b + 1]), c as f64])
        .collect()
}

fn histogram_ui(ui: &mut egui::Ui, at: &LayerPlot<'_>, height: f32, export: &mut Export) {
    let (layer, epoch) = (at.layer, at.epoch);
    let id = at.id("hist");
    let header = plot_header(ui, &id, "Stored vs remapped weights", export, None, true);
    let Some(h) = Histogram::at(at.hists, epoch) else {
        ui.label("no histogram at this epoch");
        return;
    };
    let stored = h.stored();
    ui.label(format!(
        "epoch {epoch} · {} weights · out of range {} below, {} above",
        stored.counts.iter().sum::<u64>() + stored.underflow + stored.overflow,
        stored.underflow,
        stored.overflow
    ));
    if header.csv {
        export.request(ExportRequest::Csv {
            name: id.clone(),
            text: h.csv(),
        });
    }
    // Every epoch's weights in view: the slider does not move the axis.
    let all_epochs = at.hists.values().flat_map(|e| e.values().copied());
    let whole = (stored.edges[0], stored.edges[stored.edges.len() - 1]);
    let (x_min, x_max) = occupied_range(all_epochs).unwrap_or(whole);
    let hidden = crate::gui::widgets::plot::hidden_curves(ui.ctx(), &id);
    let tallest = h
        .rows
        .iter()
        .flat_map(|(_, r)| r.counts.iter().copied())
        .max()
        .unwrap_or(0);
    let y_top = (tallest as f64 * 1.15).max(1.0);
    let shown = crate::gui::widgets::plot::readable_ticks(
        Plot::new(&id),
        ui.ctx(),
        &id,
        [false, true],
        1.0,
        "",
    )
    // Counts: whole, from 0 (the bars stand on it), above the tallest bar.
    .y_grid_spacer(|g| {
        crate::gui::widgets::plot::whole_marks(crate::gui::widgets::plot::nice_grid(&g, 28.0), 1.0)
    })
    .default_y_bounds(0.0, y_top)
    .height((height - 24.0).max(150.0))
    .x_axis_label("weight")
    .y_axis_label("count")
    .default_x_bounds(x_min, x_max)
    .show(ui, |p| {
        for (i, (k, r)) in h.rows.iter().enumerate() {
            if hidden.contains(*k) {
                continue;
            }
            if i == 0 {
                let bars = r
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| {
                        let (a, e) = (r.edges[b], r.edges[b + 1]);
                        Bar::new(0.5 * (a + e), c as f64).width(e - a)
                    })
                    .collect();
                p.bar_chart(BarChart::new(*k, bars).color(color(i).gamma_multiply(0.6)));
            } else {
                p.line(
                    Line::new(*k, steps(r))
                        .color(color(i))
                        .width(1.5)
                        .allow_band(false),
                );
            }
        }
        for (i, (name, pts)) in h.fits.iter().enumerate() {
            if hidden.contains(*name) {
                continue;
            }
            p.line(
                Line::new(*name, pts.clone())
                    .color(color(5 + i))
                    .style(egui_plot::LineStyle::dashed_loose()),
            );
        }
    });
    crate::gui::widgets::plot::legend_row(ui, &id, &h.entries());
    if header.wants_vector() {
        let b = shown.transform.bounds();
        let f = |v: f64, s: f64| crate::chart::format::format_num(v, s);
        let chart = Chart {
            title: format!("{layer}: stored vs remapped weights, epoch {epoch}"),
            x_label: "weight".into(),
            y_label: "count".into(),
            bounds: [b.min(), b.max()],
            series: h.chart_series(&hidden),
            x_fmt: &f,
            y_fmt: &f,
            x_categories: Vec::new(),
        };
        header.vector_export(export, &id, chart.render());
    }
    export.capture_if_requested(ui.ctx(), &id, header.region(ui));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots with edges of their own (weights that grew tenfold) share one range and one
    /// heat-map grid; every count lands in it.
    #[test]
    fn epochs_with_their_own_edges_share_one_range_and_grid() {
        let row = |edges: Vec<f64>, counts: Vec<u64>| HistogramRow {
            run: 1,
            layer: "l".into(),
            kind: "stored".into(),
            epoch: 0,
            edges,
            counts,
            underflow: 0,
            overflow: 0,
            stats: serde_json::Value::Null,
        };
        let early = row(vec![-1.0, -0.5, 0.0, 0.5, 1.0], vec![1, 4, 4, 1]);
        let late = row(vec![-10.0, -5.0, 0.0, 5.0, 10.0], vec![2, 3, 3, 2]);
        let range = occupied_range([&early, &late].into_iter()).expect("a range");
        assert_eq!(range, (-10.0, 10.0));
        let grid = rebin(&early, range, 20);
        assert_eq!(grid.iter().sum::<u64>(), 10, "every count kept");
        assert_eq!(&grid[9..11], &[5, 5], "the early weights sit in the middle");
        assert_eq!(rebin(&late, range, 20).iter().sum::<u64>(), 10);
        assert_eq!(
            occupied_range([&row(vec![0.0, 1.0], vec![0])].into_iter()),
            Some((0.0, 1.0))
        );
    }

    #[test]
    fn plots_zoom_to_the_occupied_bins() {
        let row = |counts: Vec<u64>| HistogramRow {
            run: 1,
            layer: "l".into(),
            kind: "stored".into(),
            epoch: 0,
            edges: (0..=counts.len()).map(|i| i as f64).collect(),
            counts,
            underflow: 0,
            overflow: 0,
            stats: serde_json::Value::Null,
        };
        let a = row(vec![0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0]);
        let b = row(vec![0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(occupied_bins([&a, &b].into_iter()), (2, 10));
        assert_eq!(
            occupied_bins([&row(vec![0; 5])].into_iter()),
            (0, 5),
            "empty: everything"
        );
    }

    #[test]
    fn fitted_densities_integrate_to_the_total() {
        let edges: Vec<f64> = (0..=400).map(|i| -10.0 + 0.05 * f64::from(i)).collect();
        for pdf in [
            Box::new(gaussian_pdf(0.5, 1.5)) as Box<dyn Fn(f64) -> f64>,
            Box::new(laplace_pdf(0.5, 1.5)),
        ] {
            let sum: f64 = fitted_counts(&edges, 1000.0, pdf)
                .iter()
                .map(|p| p[1])
                .sum();
            assert!((sum - 1000.0).abs() < 5.0, "{sum}");
        }
        // Same std: Laplace variance 2b² = std².
        let b = 1.5 / std::f64::consts::SQRT_2;
        assert!((2.0 * b * b - 1.5 * 1.5).abs() < 1e-12);
    }
}
