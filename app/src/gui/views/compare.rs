//! Compare: two or more runs side by side — any metric overlaid with debiased-EMA smoothing (raw
//! curve faint beneath), log-y and linked x axes; a config diff of the keys that differ; a
//! final-metrics table; accuracy vs energy of every run with the Pareto front.

use std::collections::{BTreeMap, BTreeSet};

use egui_plot::{Line, MarkerShape, Plot, Points};
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::{RunId, keys};

use crate::chart::bands::Group;
use crate::chart::format::color;
use crate::chart::format::csv_field;
use crate::chart::series::Series;
use crate::chart::svg::{Chart, ChartSeries, Mark};
use crate::gui::ctx::ViewCtx;
use crate::gui::data::cache::DataCache;
use crate::gui::settings::CompareSettings;
use crate::gui::widgets::common::frozen_grid;
use crate::gui::widgets::export::ExportRequest;
use crate::gui::widgets::plot::band_plot;
use crate::gui::widgets::plot::{
    Curve, PlotStyle, hover_point, pareto_front, plot_header, series_plot,
};

#[derive(Default)]
pub struct CompareView {
    /// The side-by-side masks drawn: each run's checkpoint step, and the texture.
    masks: Option<(Vec<(RunId, i64)>, egui::TextureHandle)>,
}

/// Config keys whose values differ between `runs` (a key missing from a run counts as
/// different), with each run's value.
pub fn config_diff(data: &DataCache, runs: &[RunId]) -> Vec<(String, Vec<String>)> {
    let owned: Vec<Option<BTreeMap<String, String>>> = runs
        .iter()
        .map(|r| {
            let d = data.data.get(r)?;
            let details = d.details.as_ref()?;
            let mut all = d.config.clone();
            all.extend(provenance_keys(details.provenance.as_ref()));
            Some(all)
        })
        .collect();
    let configs: Vec<Option<&BTreeMap<String, String>>> =
        owned.iter().map(Option::as_ref).collect();
    let keys: BTreeSet<&String> = configs.iter().flatten().flat_map(|c| c.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let values: Vec<String> = configs
                .iter()
                .map(|c| {
                    c.map_or("…".into(), |c| {
                        c.get(k).cloned().unwrap_or_else(|| "—".into())
                    })
                })
                .collect();
            let first = &values[0];
            values
                .iter()
                .any(|v| v != first)
                .then(|| (k.clone(), values))
        })
        .collect()
}

/// Where a run ran, as `provenance.*` rows of the config diff.
fn provenance_keys(
    p: Option<&shiftadd_core::host::Provenance>,
) -> impl Iterator<Item = (String, String)> {
    let rows = match p {
        None => vec![("provenance".to_owned(), "not recorded".to_owned())],
        Some(p) => vec![
            ("provenance.shiftadd".into(), p.shiftadd.clone()),
            ("provenance.libtorch".into(), p.libtorch.clone()),
            (
                "provenance.git_commit".into(),
                match (&p.git_commit, p.git_dirty) {
                    (Some(c), Some(true)) => format!("{c} (dirty)"),
                    (Some(c), _) => c.clone(),
                    (None, _) => "—".into(),
                },
            ),
            (
                "provenance.cpu".into(),
                format!("{} ({} cores)", p.cpu, p.cores),
            ),
            (
                "provenance.gpu".into(),
                if p.gpus.is_empty() {
                    "none".into()
                } else {
                    p.gpus.join(", ")
                },
            ),
            ("provenance.host".into(), p.host.clone()),
        ],
    };
    rows.into_iter()
}

/// The headline numbers of a run for the final-metrics table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Final {
    pub best_top1: Option<f64>,
    pub last_top1: Option<f64>,
    /// Test top-1, evaluated once at the end of the run.
    pub test_top1: Option<f64>,
    pub last_loss: Option<f64>,
    pub energy_mj: Option<f64>,
    pub latency_ms: Option<f64>,
    pub images_per_sec: Option<f64>,
}

/// `run`'s headline numbers; energy and latency under cost model `hw`.
pub fn final_metrics(data: &DataCache, run: RunId, hw: HwModel) -> Final {
    let series = data.data.get(&run).map(|d| &d.series);
    let last = |k: &str| {
        series
            .and_then(|s| s.get(k))
            .and_then(crate::chart::series::Series::last)
            .map(|p| p.1)
    };
    let best = series.and_then(|s| s.get(keys::VAL_TOP1)).and_then(|s| {
        s.ys.iter()
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    });
    let row = data.row(run).map(|r| &r.summary);
    Final {
        best_top1: best.or(row.and_then(|r| r.best_val_top1)),
        last_top1: last(keys::VAL_TOP1).or(row.and_then(|r| r.last_val_top1)),
        test_top1: last(keys::TEST_TOP1).or(row.and_then(|r| r.test_top1)),
        last_loss: last(keys::TRAIN_EPOCH_LOSS).or(last(keys::TRAIN_LOSS)),
        energy_mj: last(&keys::hw_under(hw.as_str(), "energy_mj"))
            .or(row.and_then(|r| r.energy_under(hw.as_str()))),
        latency_ms: last(&keys::hw_under(hw.as_str(), "latency_ms")).or_else(|| {
            // Runs recorded before the simulator existed: their `hw/*` are the project's.
            let legacy = last(&keys::hw_under("shiftaddnas", "latency_ms")).is_none();
            (hw == HwModel::Project && legacy)
                .then(|| last(keys::HW_LATENCY_MS))
                .flatten()
        }),
        images_per_sec: last(keys::TRAIN_EPOCH_IMAGES_PER_SEC),
    }
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.*}", digits, v * scale))
}

impl CompareView {
    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, settings: &mut CompareSettings) {
        let runs: Vec<RunId> = vcx.compare.to_vec();
        if runs.len() < 2 {
            ui.label("Tick two or more runs in the list to compare them.");
            if runs.len() == 1 {
                ui.weak(format!("(#{} is ticked)", runs[0]));
            }
            return;
        }
        let name = |r: RunId| {
            vcx.data.row(r).map_or_else(
                || format!("#{r}"),
                |row| format!("#{r} {}", row.summary.name),
            )
        };
        let names: Vec<String> = runs.iter().map(|&r| name(r)).collect();
        toolbar(ui, vcx.data, &runs, settings);
        plots(ui, vcx, &runs, &names, settings);
        ui.separator();
        let segmentation = runs
            .iter()
            .all(|&r| vcx.data.row(r).is_some_and(|row| row.summary.segmentation));
        if segmentation {
            for &r in &runs {
                let done = vcx.data.row(r).and_then(|row| row.summary.epochs_done);
                if let Some(done) = done.filter(|&d| d > 0) {
                    vcx.data.want_masks(r, done);
                }
            }
        }
        let masks = &mut self.masks;
        ui.columns(2, |cols| {
            // Wider than their half: each table's first column stays, the rest scrolls sideways
            // with its bar shown, so that the cut is seen.
            egui::ScrollArea::vertical()
                .id_salt("compare-tables")
                .show(&mut cols[0], |ui| {
                    final_table_ui(ui, vcx.data, &runs, &names, *vcx.hw_model);
                    ui.add_space(8.0);
                    diff_ui(ui, vcx.data, &runs, &names);
                    if segmentation {
                        ui.add_space(8.0);
                        masks_ui(ui, vcx.data, &runs, masks, vcx.export);
                    }
                });
            scatter_ui(&mut cols[1], vcx, &runs);
        });
    }
}

/// Segmentation runs' predictions side by side on the same validation images: a column per
/// image; rows the image, its truth, then each run's prediction in the order ticked.
fn masks_ui(
    ui: &mut egui::Ui,
    data: &DataCache,
    runs: &[RunId],
    drawn: &mut Option<(Vec<(RunId, i64)>, egui::TextureHandle)>,
    export: &mut crate::gui::widgets::export::Export,
) {
    ui.strong("Validation masks (image, truth, then each run's prediction, in the order ticked)");
    let mut panels = Vec::new();
    for &r in runs {
        match data.masks.get(&r).map(|(_, p)| p) {
            Some(Ok(p)) => panels.push(p.clone()),
            Some(Err(why)) => {
                ui.label(format!("#{r}: no masks: {why}"));
                return;
            }
            None => {
                ui.label("Predicting the masks…");
                return;
            }
        }
    }
    let key: Vec<(RunId, i64)> = panels.iter().map(|p| (p.run, p.step)).collect();
    if drawn.as_ref().is_none_or(|(k, _)| *k != key) {
        let refs: Vec<&shiftadd_core::export::MaskPanel> = panels.iter().map(|p| &**p).collect();
        match shiftadd_core::export::render_panels(&refs, 1, true) {
            Ok(((w, h), rgb)) => {
                let tex = ui.ctx().load_texture(
                    "compare-masks",
                    egui::ColorImage::from_rgb([w, h], &rgb),
                    egui::TextureOptions::NEAREST,
                );
                *drawn = Some((key, tex));
            }
            Err(why) => {
                ui.label(why);
                return;
            }
        }
    }
    if let Some((_, tex)) = drawn {
        let size = tex.size_vec2();
        let fit = (ui.available_width() / size.x).clamp(0.5, 4.0);
        ui.add(egui::Image::new((tex.id(), size * fit)).alt_text("validation masks side by side"));
    }
    let save = ui
        .horizontal(|ui| {
            ui.button("Save masks PNG…").on_hover_text(
                "a row per image: the image, its truth, then each run's prediction, 4 × 4 pixels a pixel",
            )
        })
        .inner;
    let refs: Vec<&shiftadd_core::export::MaskPanel> = panels.iter().map(|p| &**p).collect();
    if save.clicked()
        && let Ok(((w, h), rgb)) = shiftadd_core::export::render_panels(&refs, 4, false)
    {
        let runs: Vec<String> = runs.iter().map(ToString::to_string).collect();
        export.request(ExportRequest::Image {
            name: format!("runs{}-masks", runs.join("-")),
            image: std::sync::Arc::new(egui::ColorImage::from_rgb([w, h], &rgb)),
        });
    }
}

/// The heading, smoothing, log scale and the key to group by (one of the keys that differ).
fn toolbar(ui: &mut egui::Ui, data: &DataCache, runs: &[RunId], settings: &mut CompareSettings) {
    ui.horizontal(|ui| {
        ui.heading(format!("Comparing {} runs", runs.len()));
        ui.separator();
        ui.add(
            egui::Slider::new(&mut settings.smoothing, 0.0..=0.99)
                .text("smoothing")
                .fixed_decimals(2),
        )
        .on_hover_text("debiased exponential moving average; the raw curve stays faint beneath");
        ui.checkbox(&mut settings.log_y, "log y");
        ui.separator();
        let differing: Vec<String> = config_diff(data, runs)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let shown = if settings.group_by.is_empty() {
            "(none)".to_owned()
        } else {
            settings.group_by.clone()
        };
        egui::ComboBox::from_id_salt("compare-group-by")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut settings.group_by, String::new(), "(none)");
                for k in &differing {
                    ui.selectable_value(&mut settings.group_by, k.clone(), k);
                }
            })
            .response
            .accessible_name("group by")
            .on_hover_text(
                "a config key: runs with the same value form a group, drawn as its mean ± std",
            );
    });
}

/// The two metric plots side by side: a curve per run, or a band per group.
fn plots(
    ui: &mut egui::Ui,
    vcx: &mut ViewCtx<'_>,
    runs: &[RunId],
    names: &[String],
    settings: &mut CompareSettings,
) {
    let keys: BTreeSet<String> = runs
        .iter()
        .filter_map(|r| vcx.data.data.get(r))
        .flat_map(|d| d.series.keys().cloned())
        .collect();
    let plot_h = (ui.available_height() * 0.45).max(180.0);
    let style = PlotStyle {
        smoothing: settings.smoothing,
        log_y: settings.log_y,
        link_x: Some(egui::Id::unique("compare-x")),
        height: plot_h,
        percent: false,
    };
    ui.columns(2, |cols| {
        for (i, col) in cols.iter_mut().enumerate() {
            egui::ComboBox::from_id_salt(("compare-metric", i))
                .selected_text(settings.metrics[i].clone())
                .width(260.0)
                .show_ui(col, |ui| {
                    for k in &keys {
                        ui.selectable_value(&mut settings.metrics[i], k.clone(), k);
                    }
                })
                .response
                .accessible_name(format!("metric of plot {}", i + 1));
            let key = settings.metrics[i].clone();
            if !settings.group_by.is_empty() {
                let groups = groups_of(vcx.data, runs, &settings.group_by, &key);
                let id = format!("compare-{i}-grouped");
                let title = format!(
                    "{key} grouped by {}: mean ± std ({} groups)",
                    settings.group_by,
                    groups.len()
                );
                plot_header(col, &id, &title, vcx.export, None, false);
                band_plot(col, &id, &key, &groups, plot_h);
                continue;
            }
            let curves: Vec<Curve<'_>> = runs
                .iter()
                .enumerate()
                .filter_map(|(j, r)| {
                    let s = vcx.data.data.get(r)?.series.get(&key)?;
                    Some(Curve {
                        name: names[j].clone(),
                        series: s,
                        color: color(j),
                    })
                })
                .collect();
            series_plot(
                col,
                &format!("compare-{i}"),
                &key,
                &curves,
                PlotStyle {
                    percent: crate::chart::format::is_accuracy(&key),
                    ..style
                },
                vcx.export,
            );
        }
    });
}

/// `runs` grouped by their value of config key `by`, each group's `key` curves as a band.
pub fn groups_of(data: &DataCache, runs: &[RunId], by: &str, key: &str) -> Vec<Group> {
    let mut by_value: BTreeMap<String, Vec<&Series>> = BTreeMap::new();
    for r in runs {
        let Some(d) = data.data.get(r) else { continue };
        let value = d.config.get(by).cloned().unwrap_or_else(|| "—".into());
        let entry = by_value.entry(value).or_default();
        if let Some(s) = d.series.get(key) {
            entry.push(s);
        }
    }
    by_value
        .into_iter()
        .enumerate()
        .map(|(j, (value, series))| {
            Group::of(
                j,
                format!("{by} = {value} (n = {})", series.len()),
                &series,
                false,
            )
        })
        .collect()
}

fn final_table_ui(
    ui: &mut egui::Ui,
    data: &DataCache,
    runs: &[RunId],
    names: &[String],
    hw: HwModel,
) {
    ui.strong(format!(
        "Final metrics (energy and latency: {})",
        hw.title()
    ));
    let finals: Vec<_> = runs.iter().map(|&r| final_metrics(data, r, hw)).collect();
    let heads = [
        "Status",
        "Val best top-1 %",
        "Val last top-1 %",
        "Test top-1 %",
        "Loss",
        "Energy mJ",
        "Latency ms",
        "img/s",
    ];
    frozen_grid(
        ui,
        "compare-final",
        runs.len() + 1,
        |ui, row| match row {
            0 => {
                ui.strong("Run");
            }
            r => {
                ui.colored_label(color(r - 1), &names[r - 1]);
            }
        },
        |ui, row| {
            let Some(r) = row.checked_sub(1) else {
                for h in heads {
                    ui.strong(h);
                }
                return;
            };
            let f = &finals[r];
            ui.label(
                data.row(runs[r])
                    .map_or("…", |row| row.summary.status.as_str()),
            );
            // A segmentation run's scores are mean IoU, marked so.
            let seg = data
                .row(runs[r])
                .is_some_and(|row| row.summary.segmentation);
            let score = |v: Option<f64>| {
                let t = opt(v, 100.0, 2);
                if seg && v.is_some() {
                    format!("{t} mIoU")
                } else {
                    t
                }
            };
            ui.label(score(f.best_top1));
            ui.label(score(f.last_top1));
            ui.label(score(f.test_top1));
            ui.label(opt(f.last_loss, 1.0, 3));
            ui.label(opt(f.energy_mj, 1.0, 4));
            ui.label(opt(f.latency_ms, 1.0, 3));
            ui.label(opt(f.images_per_sec, 1.0, 0));
        },
    );
}

fn diff_ui(ui: &mut egui::Ui, data: &DataCache, runs: &[RunId], names: &[String]) {
    let diff = config_diff(data, runs);
    ui.strong(format!("Config diff ({} keys differ)", diff.len()));
    if diff.is_empty() {
        ui.weak("identical configs (or still loading)");
        return;
    }
    frozen_grid(
        ui,
        "compare-diff",
        diff.len() + 1,
        |ui, row| match row {
            0 => {
                ui.strong("key");
            }
            r => {
                ui.monospace(&diff[r - 1].0);
            }
        },
        |ui, row| {
            let Some(r) = row.checked_sub(1) else {
                for (j, n) in names.iter().enumerate() {
                    ui.colored_label(color(j), n);
                }
                return;
            };
            for v in &diff[r].1 {
                let shown = cell_text(v, DIFF_CHARS);
                let cell = ui.monospace(&shown);
                if shown != *v {
                    cell.on_hover_text(v);
                }
            }
        },
    );
}

/// The widest a config diff's value is shown (a commit hash is 40 characters; a list of factors
/// can be longer): the rest on hover, so that every run's column stays on screen.
const DIFF_CHARS: usize = 18;

/// `v` cut to `max` characters with an ellipsis, whole when it fits.
fn cell_text(v: &str, max: usize) -> String {
    if v.chars().count() <= max {
        v.to_owned()
    } else {
        let head: String = v.chars().take(max.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

/// Every run with an energy under a cost model and a best accuracy: (run, name, energy mJ,
/// best top-1 %), and the indices of those on the Pareto front.
struct Scatter {
    pts: Vec<(RunId, String, f64, f64)>,
    front: Vec<usize>,
}

impl Scatter {
    fn of(data: &DataCache, hw: HwModel) -> Scatter {
        let pts: Vec<(RunId, String, f64, f64)> = data
            .runs
            .iter()
            .filter_map(|r| {
                let s = &r.summary;
                let energy = s.energy_under(hw.as_str())?;
                Some((s.id, s.name.clone(), energy, s.best_val_top1? * 100.0))
            })
            .collect();
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.2, p.3)).collect();
        let front = pareto_front(&xy);
        Scatter { pts, front }
    }

    fn csv(&self, hw: HwModel) -> String {
        let mut text = format!(
            "run,name,energy_mj_{},best_top1_pct,on_front\n",
            hw.as_str()
        );
        for (i, (r, n, e, a)) in self.pts.iter().enumerate() {
            text.push_str(&format!(
                "{r},{},{e},{a},{}\n",
                csv_field(n),
                self.front.contains(&i)
            ));
        }
        text
    }

    /// The runs small, the `selected` ones large in their colours, and the front, for the SVG.
    fn chart_series(&self, selected: &[RunId]) -> Vec<ChartSeries> {
        let pts = &self.pts;
        let mut series = vec![ChartSeries {
            name: "runs".into(),
            color: egui::Color32::GRAY,
            mark: Mark::Points(3.0),
            points: pts
                .iter()
                .filter(|q| !selected.contains(&q.0))
                .map(|q| [q.2, q.3])
                .collect(),
        }];
        for (j, r) in selected.iter().enumerate() {
            if let Some(q) = pts.iter().find(|q| q.0 == *r) {
                series.push(ChartSeries {
                    name: format!("#{} {}", q.0, q.1),
                    color: color(j),
                    mark: Mark::Points(6.0),
                    points: vec![[q.2, q.3]],
                });
            }
        }
        series.push(ChartSeries {
            name: "Pareto front".into(),
            color: egui::Color32::BLACK,
            mark: Mark::Line,
            points: self.front.iter().map(|&i| [pts[i].2, pts[i].3]).collect(),
        });
        series
    }
}

fn scatter_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, selected: &[RunId]) {
    crate::gui::widgets::common::hw_model_toggle(ui, vcx.hw_model);
    let hw = *vcx.hw_model;
    let id = format!("compare-pareto-{}", hw.as_str());
    let id = id.as_str();
    let header = plot_header(
        ui,
        id,
        &format!(
            "Accuracy vs energy, {} (all runs; ticked runs large)",
            hw.title()
        ),
        vcx.export,
        None,
        true,
    );
    let scatter = Scatter::of(vcx.data, hw);
    let (pts, front) = (&scatter.pts, &scatter.front);
    if header.csv {
        vcx.export.request(ExportRequest::Csv {
            name: id.into(),
            text: scatter.csv(hw),
        });
    }
    if pts.is_empty() {
        crate::gui::widgets::plot::empty_plot(
            ui,
            "Accuracy vs energy (runs with both recorded)",
            (ui.available_height() - 22.0).max(200.0),
        );
        return;
    }
    // Energy from 0 (a single run, or runs of one energy, would otherwise get an axis around
    // it that runs negative).
    let x_max = pts.iter().map(|p| p.2).fold(0.0, f64::max);
    let labels: Vec<(f64, f64, String)> = pts
        .iter()
        .map(|p| (p.2, p.3, format!("#{} {}", p.0, p.1)))
        .collect();
    let front_color = ui.visuals().strong_text_color();
    let mut entries = vec![("runs".to_owned(), egui::Color32::GRAY)];
    for (j, r) in selected.iter().enumerate() {
        if let Some(q) = pts.iter().find(|q| q.0 == *r) {
            entries.push((format!("#{} {}", q.0, q.1), color(j)));
        }
    }
    entries.push(("Pareto front".to_owned(), front_color));
    let legend_h = 22.0 * (1.0 + (entries.len() as f32 / 4.0).floor());
    let plot = crate::gui::widgets::plot::readable_ticks(
        Plot::new(id).height((ui.available_height() - legend_h).max(200.0)),
        ui.ctx(),
        id,
        [true, true],
        1.0,
        " %",
    )
    .include_x(0.0)
    .include_x(x_max * 1.08)
    .set_margin_fraction(egui::vec2(0.0, 0.05))
    .x_axis_label(format!("energy per inference, mJ ({})", hw.title()))
    .y_axis_label("best top-1 %")
    .label_formatter(move |pos| {
        let p = hover_point(pos);
        labels
            .iter()
            .min_by(|a, b| {
                let d =
                    |l: &(f64, f64, String)| (l.0 - p.x).powi(2) + ((l.1 - p.y) / 100.0).powi(2);
                d(a).total_cmp(&d(b))
            })
            .map(|l| format!("{}\n{:.4} mJ, {:.2} %", l.2, l.0, l.1))
    });
    let hidden = crate::gui::widgets::plot::hidden_curves(ui.ctx(), id);
    let shown = plot.show(ui, |p| {
        let (sel, other): (Vec<_>, Vec<_>) = pts
            .iter()
            .filter(|q| !hidden.contains(&format!("#{} {}", q.0, q.1)))
            .partition(|q| selected.contains(&q.0));
        let other: Vec<_> = if hidden.contains("runs") {
            Vec::new()
        } else {
            other
        };
        p.points(
            Points::new("runs", other.iter().map(|q| [q.2, q.3]).collect::<Vec<_>>())
                .radius(3.0)
                .color(egui::Color32::GRAY),
        );
        for q in sel {
            let j = selected.iter().position(|r| *r == q.0).unwrap_or(0);
            p.points(
                Points::new(format!("#{} {}", q.0, q.1), vec![[q.2, q.3]])
                    .radius(6.0)
                    .shape(MarkerShape::Diamond)
                    .color(color(j)),
            );
        }
        if !hidden.contains("Pareto front") {
            let line: Vec<[f64; 2]> = front.iter().map(|&i| [pts[i].2, pts[i].3]).collect();
            p.line(Line::new("Pareto front", line).color(front_color));
        }
    });
    crate::gui::widgets::plot::remember_transform(ui.ctx(), id, shown.transform);
    crate::gui::widgets::plot::legend_row(ui, id, &entries);
    if header.wants_vector() {
        let b = shown.transform.bounds();
        let f = |v: f64, s: f64| crate::chart::format::format_num(v, s);
        let chart = Chart {
            title: format!("Accuracy vs energy ({})", hw.title()),
            x_label: format!("energy per inference, mJ ({})", hw.title()),
            y_label: "best validation top-1 %".into(),
            bounds: [b.min(), b.max()],
            series: scatter.chart_series(selected),
            x_fmt: &f,
            y_fmt: &f,
            x_categories: Vec::new(),
        };
        header.vector_export(vcx.export, id, chart.render());
    }
    vcx.export
        .capture_if_requested(ui.ctx(), id, header.region(ui));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit hash in the config diff pushed the other runs' columns off screen; it is cut to a
    /// readable width now (whole on hover), and what fits is left as it is.
    #[test]
    fn long_diff_values_are_cut_and_short_ones_kept() {
        let hash = "b5e5fd0778a1c2e3f4a5b6c7d8e9f0a1b2c3d4e5";
        let shown = cell_text(hash, DIFF_CHARS);
        assert_eq!(shown.chars().count(), DIFF_CHARS);
        assert!(shown.starts_with("b5e5fd0778") && shown.ends_with('…'));
        assert_eq!(cell_text("0.025", DIFF_CHARS), "0.025");
        assert_eq!(cell_text("[1.0, 1.6, 2.2]", DIFF_CHARS), "[1.0, 1.6, 2.2]");
    }
}
