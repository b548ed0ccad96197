//! Studies: the variants × seeds tables of `shiftadd study` — per study its progress per cell, the
//! results table (mean ± 95 % CI, the paired difference from the baseline; live as runs finish),
//! the metric per variant (seeds, mean and CI whiskers on a range fitted to them), and any metric's curves grouped by variant (mean
//! line, ±std band, the seeds faint on demand). Tables export as CSV, Markdown and LaTeX, plots
//! as PNG and SVG ([`super::figures`]). Updates by polling the database (studies run from the CLI). A study on Slurm shows
//! where each cell runs (its task and Slurm state, as the coordinator records them) and can be
//! cancelled from here (`scancel` of its array).

use std::sync::Arc;

use crossbeam_channel::{Receiver, bounded};

use egui_plot::{AxisHints, GridMark, HLine, Line, LineStyle, Plot, Points, VLine};
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::{RunId, Status};
use shiftadd_core::study::report::{self, Format, Row, Table, Verdict, duration_text, paired_text};

use crate::chart::bands::{Group, value_extent};
use crate::chart::figures;
use crate::chart::format::color;
use crate::chart::series::Series;
use crate::gui::ctx::ViewCtx;
use crate::gui::data::backend::StudyData;
use crate::gui::data::cache::DataCache;
use crate::gui::widgets::export::ExportRequest;
use crate::gui::widgets::job::job_ui;
use crate::gui::widgets::plot::{hover_point, plot_header};

pub struct StudyView {
    /// The study shown (the latest until another is picked).
    pub selected: Option<i64>,
    /// The metric of the curves.
    pub curve_metric: String,
    /// Draw every seed's curve faintly under the band.
    pub show_seeds: bool,
    /// The groups last drawn, and what each was computed from: a group's band is recomputed only
    /// when the study, the metric or the seeds toggle changes, or one of its own cells' series
    /// grows (a live study recomputes one variant per new point, not all of them).
    cache: Option<(CurvesKey, Vec<GroupKey>, Arc<Vec<Group>>)>,
    /// A `scancel` in flight (it runs off the UI thread), and what the last one said.
    cancel: Option<Receiver<String>>,
    cancel_said: Option<String>,
}

/// What every drawn curve of a study depends on: the study, the metric, whether seeds are drawn.
#[derive(Debug, Clone, PartialEq)]
struct CurvesKey {
    study: i64,
    metric: String,
    seeds: bool,
}

/// What one variant's group depends on besides [`CurvesKey`]: per cell, its run and series length
/// (series only grow).
type GroupKey = Vec<(RunId, usize)>;

impl Default for StudyView {
    fn default() -> Self {
        Self {
            selected: None,
            curve_metric: "val/top1".into(),
            show_seeds: false,
            cache: None,
            cancel: None,
            cancel_said: None,
        }
    }
}

impl StudyView {
    fn current<'a>(&self, studies: &'a [StudyData]) -> Option<&'a StudyData> {
        self.selected
            .and_then(|id| studies.iter().find(|s| s.row.id == id))
            .or_else(|| studies.last())
    }

    /// The name of the study shown (exports are named after it).
    pub fn shown_name(&self, data: &DataCache) -> Option<String> {
        self.current(data.studies.as_deref()?)
            .map(|s| s.row.name.clone())
    }

    /// The runs whose curves the view draws: every cell of the study shown.
    pub fn visible_runs(&self, data: &DataCache) -> Vec<RunId> {
        data.studies
            .as_deref()
            .and_then(|s| self.current(s))
            .map(|s| s.cells.iter().map(|c| c.run).collect())
            .unwrap_or_default()
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        jobs_ui(ui, vcx);
        let Some(studies) = vcx.data.studies.clone() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.weak("reading the studies and their cells from the database…");
            });
            return;
        };
        if studies.is_empty() {
            ui.label(
                "No studies yet: run one with `shiftadd study experiments/studies/smoke-study.toml`.",
            );
            return;
        }
        ui.horizontal_wrapped(|ui| {
            ui.heading("Studies");
            let shown = self.current(&studies).map(|s| s.row.id);
            for s in studies.iter() {
                if ui
                    .selectable_label(
                        shown == Some(s.row.id),
                        format!("#{} {}", s.row.id, s.row.name),
                    )
                    .clicked()
                {
                    self.selected = Some(s.row.id);
                }
            }
        });
        let Some(s) = self.current(&studies) else {
            return;
        };
        let (Some(spec), Some(table)) = (&s.study, &s.table) else {
            ui.label("This study's stored spec does not parse with this version of shiftadd.");
            return;
        };
        let total = spec.variants.len() * spec.seeds.len();
        let finished = s
            .cells
            .iter()
            .filter(|c| {
                vcx.data
                    .row(c.run)
                    .is_some_and(|r| r.summary.status == Status::Finished)
            })
            .count();
        let reporting = if table.metric == spec.metric {
            table.metric.clone()
        } else {
            format!("{} (the study's own: {})", table.metric, spec.metric)
        };
        ui.label(format!(
            "{finished} of {total} cells finished · {} variants × {} seeds · reporting {reporting} · baseline {}",
            spec.variants.len(),
            spec.seeds.len(),
            table.baseline
        ));
        let on_slurm = !s.jobs.is_empty();
        if on_slurm {
            self.slurm_ui(ui, vcx, s);
        }
        if let Some(head) = table.left.head() {
            let rough = if table.left.rough_epochs > 0 {
                " (rough)"
            } else {
                ""
            };
            // A Slurm array's cells are priced at the pace of those already imported.
            let queue = if on_slurm {
                " Time in Slurm's queue is not counted."
            } else {
                ""
            };
            ui.weak(format!("{head}{rough}")).on_hover_text(format!(
                "Training time only, evaluation not counted: each epoch left {}.{queue}",
                table.left.basis()
            ));
        }
        table_ui(ui, vcx, s, &spec.metric, table);
        ui.separator();
        let avail = ui.available_height();
        ui.columns(2, |cols| {
            means_ui(&mut cols[0], vcx, table, avail);
            self.curves_ui(&mut cols[1], vcx, s, avail);
        });
    }

    /// Where the cells of a Slurm study run: the array's states at a glance, per cell its task, state
    /// and node (or how it ended), and Cancel while any task is live.
    fn slurm_ui(&mut self, ui: &mut egui::Ui, vcx: &ViewCtx<'_>, s: &StudyData) {
        if let Some(rx) = &self.cancel
            && let Ok(said) = rx.try_recv()
        {
            self.cancel_said = Some(said);
            self.cancel = None;
        }
        let array = s.jobs[0].job.split('_').next().unwrap_or("").to_owned();
        let mut states: Vec<(String, usize)> = Vec::new();
        for j in &s.jobs {
            match states.iter_mut().find(|(st, _)| *st == j.state) {
                Some(entry) => entry.1 += 1,
                None => states.push((j.state.clone(), 1)),
            }
        }
        let summary: Vec<String> = states.iter().map(|(st, n)| format!("{n} {st}")).collect();
        let live = s
            .jobs
            .iter()
            .any(shiftadd_core::store::StudyJobRow::is_live);
        ui.horizontal(|ui| {
            ui.label(format!("On Slurm: job array {array} · {}", summary.join(", ")));
            if live && self.cancel.is_none() {
                let hint = "scancel the array: every cell stops after its batch with a checkpoint; running the study again continues them";
                if ui.button("Cancel Slurm jobs").on_hover_text(hint).clicked() {
                    let (tx, rx) = bounded(1);
                    let job = array.clone();
                    let ctx = ui.ctx().clone();
                    let spawned = std::thread::Builder::new()
                        .name("scancel".into())
                        .spawn(move || {
                            let said = match shiftadd_core::slurm::cancel(&job) {
                                Ok(()) => format!("job array {job} cancelled; its cells are stopping"),
                                Err(e) => e.to_string(),
                            };
                            let _ = tx.send(said);
                            ctx.request_repaint();
                        });
                    match spawned {
                        Ok(_) => self.cancel = Some(rx),
                        Err(e) => self.cancel_said = Some(format!("cannot start scancel: {e}")),
                    }
                }
            }
            if self.cancel.is_some() {
                ui.spinner();
            }
            if let Some(said) = &self.cancel_said {
                ui.label(said);
            }
        });
        egui::CollapsingHeader::new("Where the cells run")
            .id_salt(("slurm-cells", s.row.id))
            .show(ui, |ui| {
                egui::Grid::new(("slurm-grid", s.row.id))
                    .striped(true)
                    .show(ui, |ui| {
                        for h in ["cell", "Slurm task", "state", "where / how", "run"] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for j in &s.jobs {
                            ui.label(format!("{} / seed {}", j.variant, j.seed));
                            ui.label(format!("{} {}", j.executor, j.job));
                            ui.label(&j.state);
                            ui.label(&j.detail);
                            let run = s
                                .cells
                                .iter()
                                .find(|c| c.variant == j.variant && c.seed == j.seed)
                                .map_or_else(
                                    || {
                                        if j.is_live() {
                                            "not yet imported"
                                        } else {
                                            "no run"
                                        }
                                        .to_owned()
                                    },
                                    |c| {
                                        let status = vcx.data.row(c.run).map_or_else(
                                            || "?".to_owned(),
                                            |r| r.summary.status.to_string(),
                                        );
                                        format!("run {} · {status}", c.run)
                                    },
                                );
                            ui.label(run);
                            ui.end_row();
                        }
                    });
            });
    }

    /// The groups of curves of study `s` for the metric and seeds toggle chosen, from the cache
    /// where their cells did not change, and how many were computed afresh.
    fn groups(
        &mut self,
        s: &StudyData,
        spec: &Study,
        data: &DataCache,
    ) -> (Arc<Vec<Group>>, usize) {
        let key = CurvesKey {
            study: s.row.id,
            metric: self.curve_metric.clone(),
            seeds: self.show_seeds,
        };
        let cells_of = |variant: &str| -> Vec<(RunId, &Series)> {
            s.cells
                .iter()
                .filter(|c| c.variant == variant)
                .filter_map(|c| {
                    let series = data.data.get(&c.run)?.series.get(&self.curve_metric)?;
                    Some((c.run, series))
                })
                .collect()
        };
        let group_keys: Vec<GroupKey> = spec
            .variants
            .iter()
            .map(|v| {
                cells_of(&v.name)
                    .iter()
                    .map(|(run, series)| (*run, series.xs.len()))
                    .collect()
            })
            .collect();
        if let Some((k, gk, g)) = &self.cache
            && *k == key
            && *gk == group_keys
        {
            return (g.clone(), 0);
        }
        // Keep the groups whose cells did not change; compute the others.
        let reusable = self
            .cache
            .as_ref()
            .filter(|(k, gk, _)| *k == key && gk.len() == group_keys.len());
        let mut computed = 0;
        let groups: Vec<Group> = spec
            .variants
            .iter()
            .enumerate()
            .map(|(j, v)| match reusable {
                Some((_, gk, g)) if gk[j] == group_keys[j] => g[j].clone(),
                _ => {
                    computed += 1;
                    let series: Vec<&Series> =
                        cells_of(&v.name).into_iter().map(|(_, s)| s).collect();
                    Group::of(j, v.name.clone(), &series, self.show_seeds)
                }
            })
            .collect();
        let groups = Arc::new(groups);
        self.cache = Some((key, group_keys, groups.clone()));
        (groups, computed)
    }

    fn curves_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, s: &StudyData, height: f32) {
        let data: &DataCache = vcx.data;
        let keys = recorded_keys(s, data);
        // The headline curve of the task the cells learn: top-1, or mIoU for segmentation.
        for (from, to) in [("val/top1", "val/miou"), ("val/miou", "val/top1")] {
            if self.curve_metric == from
                && !keys.iter().any(|k| k == from)
                && keys.iter().any(|k| k == to)
            {
                self.curve_metric = to.into();
            }
        }
        ui.horizontal(|ui| {
            egui::ComboBox::from_id_salt("study-curve-metric")
                .selected_text(&self.curve_metric)
                .show_ui(ui, |ui| {
                    if s.fit.as_ref().is_some_and(|f| !f.rows.is_empty()) {
                        ui.selectable_value(&mut self.curve_metric, FIT.into(), FIT)
                            .on_hover_text(FIT_HELP);
                    }
                    ui.selectable_value(&mut self.curve_metric, PARALLEL.into(), PARALLEL)
                        .on_hover_text(PARALLEL_HELP);
                    for k in &keys {
                        ui.selectable_value(&mut self.curve_metric, k.clone(), k);
                    }
                });
            if self.curve_metric != FIT && self.curve_metric != PARALLEL {
                ui.checkbox(&mut self.show_seeds, "seeds");
            }
        });
        if self.curve_metric == FIT {
            fit_ui(ui, vcx, s, height);
            return;
        }
        if self.curve_metric == PARALLEL {
            parallel_ui(ui, vcx, s, height);
            return;
        }
        let id = format!("study{}-curves", s.row.id);
        let title = figures::curves_title(&self.curve_metric);
        let header = plot_header(ui, &id, &title, vcx.export, None, true);
        let Some(spec) = &s.study else {
            return;
        };
        // A study's cells load one run at a time: say so, rather than draw a variant as absent.
        let loading = s
            .cells
            .iter()
            .filter(|c| !data.data.contains_key(&c.run))
            .count();
        if loading > 0 {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "loading the curves of {loading} of {} cells",
                    s.cells.len()
                ));
            });
        }
        let (groups, _) = self.groups(s, spec, data);
        if header.csv {
            let mut text = String::from("variant,x,mean,std\n");
            for g in groups.iter() {
                for (x, m, sd) in &g.band {
                    text.push_str(&format!("{},{x},{m},{sd}\n", g.name));
                }
            }
            vcx.export.request(ExportRequest::Csv {
                name: id.clone(),
                text,
            });
        }
        if header.wants_vector() {
            let svg = figures::curves_svg(
                &format!("{}: {title}", s.row.name),
                &self.curve_metric,
                &groups,
            );
            header.vector_export(vcx.export, &id, svg);
        }
        crate::gui::widgets::plot::band_plot(ui, &id, &self.curve_metric, &groups, height - 60.0);
        vcx.export
            .capture_if_requested(ui.ctx(), &id, header.region(ui));
    }
}

/// The curves chooser's entry for the parallel coordinates ([`parallel_ui`]).
const PARALLEL: &str = "parallel coordinates";
const PARALLEL_HELP: &str = "Every finished cell as a line across the config keys that vary \
    between the cells, its table metric, its best validation top-1 and its energy; drag along an \
    axis to keep a range (click the axis to clear it). Below: how much of the metric's variance \
    each key explains on its own.";

/// The study's cells in parallel coordinates (config keys that vary, then the table's metric,
/// best validation top-1 and energy), brushable, and each key's importance for the table's
/// metric beneath.
fn parallel_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, s: &StudyData, height: f32) {
    let (Some(spec), Some(table)) = (&s.study, &s.table) else {
        crate::gui::widgets::plot::empty_plot(ui, PARALLEL, height);
        return;
    };
    let hw = *vcx.hw_model;
    let (k, _) = report::scale(&table.metric);
    let unit = |k: f64| if k > 1.0 { " %" } else { "" };
    let mut cells = Vec::new();
    for c in &s.cells {
        let Some(row) = vcx.data.row(c.run) else {
            continue;
        };
        let Some(group) = spec.variants.iter().position(|v| v.name == c.variant) else {
            continue;
        };
        let value = table
            .rows
            .iter()
            .find(|r| r.variant == c.variant)
            .and_then(|r| r.values.iter().find(|(seed, _)| *seed == c.seed))
            .map(|(_, v)| v * k);
        let r = &row.summary;
        cells.push(crate::chart::parallel::Cell {
            run: c.run,
            group,
            label: format!("{} / seed {} (run #{})", c.variant, c.seed, c.run),
            config: row.config.clone(),
            metrics: vec![
                (format!("{}{}", table.metric, unit(k)), value),
                ("val/top1 best %".into(), r.best_val_top1.map(|v| v * 100.0)),
                (
                    format!("energy mJ ({})", hw.title()),
                    r.energy_under(hw.as_str()),
                ),
            ],
        });
    }
    let labels: Vec<String> = cells.iter().map(|c| c.label.clone()).collect();
    let coords = crate::chart::parallel::coords(&cells);
    let importance = crate::chart::parallel::importance(&cells, 0);
    let rows = importance.len().min(6) as f32;
    let plot_height = (height - 70.0 - 22.0 * rows).max(180.0);
    let kept = crate::gui::widgets::parallel::parallel_plot(
        ui,
        &format!("study{}-parallel", s.row.id),
        &coords,
        &labels,
        color,
        plot_height,
    );
    let n_kept = kept.iter().filter(|k| **k).count();
    ui.weak(format!(
        "{n_kept} of {} cells kept by the brushes",
        kept.len()
    ));
    if importance.is_empty() {
        ui.weak("importance: needs two finished cells whose metric differs");
        return;
    }
    ui.label(format!(
        "Importance for {}: the share of its variance over the {} finished cells each key explains alone",
        table.metric,
        cells.iter().filter(|c| c.metrics[0].1.is_some()).count()
    ))
    .on_hover_text(
        "first-order functional ANOVA on the cells: Σ n·(group mean − mean)² / Σ (value − mean)² per key. \
         Exact on a full grid; keys that only vary together share their credit; train.seed is the noise floor.",
    );
    egui::Grid::new("study-importance")
        .num_columns(2)
        .show(ui, |ui| {
            for (key, share) in importance.iter().take(6) {
                ui.label(key);
                ui.add(
                    egui::ProgressBar::new(*share as f32)
                        .desired_width(220.0)
                        .text(format!("{:.0} %", share * 100.0)),
                );
                ui.end_row();
            }
        });
}

/// The curves chooser's entry for the augmented models' fit ([`fit_ui`]).
const FIT: &str = "train loss: augmented vs tiny";
const FIT_HELP: &str = "Per augmented variant and epoch, the sampled augmented models' training \
    loss (dashed) beside the tiny model's (solid), mean over the finished seeds. NetAug relies on \
    the augmented model fitting better (dashed below solid); `shiftadd study FILE --report md \
    --fit` prints the same with the gap's 95 % CI.";

/// Is the augmented model working? Per augmented variant, its training loss per epoch (dashed)
/// beside the tiny model's (solid, the same colour), and the last epoch's gap with its interval.
fn fit_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, s: &StudyData, height: f32) {
    let Some(fit) = s.fit.as_ref().filter(|f| !f.rows.is_empty()) else {
        ui.label("No finished augmented cell has recorded its augmented loss yet.");
        return;
    };
    let id = format!("study{}-fit", s.row.id);
    let header = plot_header(ui, &id, FIT, vcx.export, None, false);
    if header.csv {
        vcx.export.request(ExportRequest::Csv {
            name: id.clone(),
            text: fit.render(Format::Csv).unwrap_or_default(),
        });
    }
    let color_of = |variant: &str| {
        s.study
            .as_ref()
            .and_then(|spec| spec.variants.iter().position(|v| v.name == variant))
            .unwrap_or(0)
    };
    let gaps: Vec<String> = fit
        .rows
        .iter()
        .map(|r| format!("{} {}", r.variant, r.last_gap_text()))
        .collect();
    ui.weak("solid: the tiny model · dashed: its augmented models (same colour)")
        .on_hover_text(FIT_HELP);
    ui.weak(format!("last epoch, augmented − tiny: {}", gaps.join("; ")))
        .on_hover_text(FIT_HELP);
    let hidden = crate::gui::widgets::plot::hidden_curves(ui.ctx(), &id);
    let entries: Vec<(String, egui::Color32)> = fit
        .rows
        .iter()
        .map(|r| (r.variant.clone(), color(color_of(&r.variant))))
        .collect();
    let shown = crate::gui::widgets::plot::readable_ticks(
        Plot::new(&id),
        ui.ctx(),
        &id,
        [true, true],
        1.0,
        "",
    )
    .height((height - 130.0).max(200.0))
    .x_axis_label("epoch")
    .y_axis_label("training loss")
    .label_formatter(|pos| {
        let p = hover_point(pos);
        Some(format!("epoch {:.0}: {:.4}", p.x, p.y))
    })
    .show(ui, |p| {
        for r in fit.rows.iter().filter(|r| !hidden.contains(&r.variant)) {
            let c = color(color_of(&r.variant));
            let tiny: Vec<[f64; 2]> = r
                .points
                .iter()
                .map(|q| [q.epoch as f64, q.tiny.mean])
                .collect();
            let aug: Vec<[f64; 2]> = r
                .points
                .iter()
                .map(|q| [q.epoch as f64, q.aug.mean])
                .collect();
            p.line(
                Line::new(format!("{} tiny", r.variant), tiny)
                    .color(c)
                    .width(2.0),
            );
            p.line(
                Line::new(format!("{} augmented", r.variant), aug)
                    .color(c)
                    .width(2.0)
                    .style(LineStyle::dashed_loose()),
            );
        }
    });
    crate::gui::widgets::plot::remember_transform(ui.ctx(), &id, shown.transform);
    crate::gui::widgets::plot::legend_row(ui, &id, &entries);
    vcx.export
        .capture_if_requested(ui.ctx(), &id, header.region(ui));
}

/// The metric keys the loaded cells of study `s` have recorded, sorted.
fn recorded_keys(s: &StudyData, data: &DataCache) -> Vec<String> {
    let mut keys: Vec<String> = s
        .cells
        .iter()
        .filter_map(|c| data.data.get(&c.run))
        .flat_map(|d| d.series.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// This session's studies (started from Launch): progress, Stop, and how each ended.
fn jobs_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
    for job in &vcx.searches.studies {
        job_ui(
            ui,
            job,
            (
                "Stop study",
                "stop its runs; starting the same study again resumes them",
            ),
            |o| format!("finished (study #{}; {})", o.study, o.counts()),
        );
    }
}

/// The results table of study `s` (whose own metric is `own`), with its metric chooser (any key
/// its cells recorded; the table and the means plot follow) and its exports.
fn table_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, s: &StudyData, own: &str, table: &Table) {
    table_toolbar(ui, vcx, s, own, table);
    table_grid(ui, table);
}

/// Above the table: the metric it reports (the study's own or any recorded one), what the
/// numbers are, which way is better, and its export as CSV, Markdown or LaTeX.
fn table_toolbar(
    ui: &mut egui::Ui,
    vcx: &mut ViewCtx<'_>,
    s: &StudyData,
    own: &str,
    table: &Table,
) {
    ui.horizontal_wrapped(|ui| {
        let chosen = vcx.data.study_metric(s.row.id).unwrap_or(own).to_owned();
        let mut pick = chosen.clone();
        egui::ComboBox::from_id_salt(("study-table-metric", s.row.id))
            .selected_text(&pick)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut pick, own.to_owned(), format!("{own} (the study's)"));
                for key in recorded_keys(s, vcx.data).into_iter().filter(|k| k != own) {
                    let label = key.clone();
                    ui.selectable_value(&mut pick, key, label);
                }
            })
            .response
            .on_hover_text(
                "the metric the table and the means plot report: each finished cell's last value",
            );
        if pick != chosen {
            vcx.data
                .set_study_metric(s.row.id, (pick != own).then_some(pick));
        }
        if chosen != table.metric {
            ui.spinner(); // the table of the metric chosen is loading
        }
        ui.strong(format!(
            "mean ± 95 % CI (Student t) over seeds; vs `{}` paired over common seeds",
            table.baseline
        ));
        let (sense, why) = match report::better(&table.metric) {
            Some(report::Better::Higher) => ("higher is better", "the best mean is bold"),
            Some(report::Better::Lower) => ("lower is better", "the best mean is bold"),
            None => (
                "no best, no verdict",
                "this metric describes a run rather than scores it: no row is best, and no \
                 difference is read as better or worse",
            ),
        };
        ui.weak(sense).on_hover_text(why);
        let name = if table.metric == own {
            format!("study{}-{}", table.study, table.name)
        } else {
            format!(
                "study{}-{}-{}",
                table.study,
                table.name,
                figures::slug(&table.metric)
            )
        };
        if ui.small_button("CSV").clicked() {
            vcx.export.request(ExportRequest::Csv {
                name: name.clone(),
                text: table.render(Format::Csv),
            });
        }
        if ui.small_button("Markdown").clicked() {
            vcx.export.request(ExportRequest::Text {
                name: name.clone(),
                ext: "md",
                text: table.render(Format::Markdown),
            });
        }
        if ui.small_button("LaTeX").clicked() {
            vcx.export.request(ExportRequest::Text {
                name,
                ext: "tex",
                text: table.render(Format::Latex),
            });
        }
    });
}

/// One row per variant: n, mean ± CI, spread, the paired difference to the baseline coloured
/// by its verdict, and the time per cell.
fn table_grid(ui: &mut egui::Ui, table: &Table) {
    let (k, _) = report::scale(&table.metric);
    egui::Grid::new("study-table").striped(true).show(ui, |ui| {
        for h in [
            "Variant",
            "n",
            "Mean ± 95 % CI",
            "Std",
            "Min",
            "Max",
            "vs baseline",
            "Time/cell",
        ] {
            ui.strong(h);
        }
        ui.end_row();
        for r in &table.rows {
            table_row(ui, table, r, k);
            ui.end_row();
        }
    });
}

fn table_row(ui: &mut egui::Ui, table: &Table, r: &Row, k: f64) {
    let name = egui::RichText::new(&r.variant);
    ui.label(if r.best { name.strong() } else { name });
    match r.summary {
        Some(m) => {
            ui.label(r.count_text("to go"));
            let ci = if m.ci95.is_finite() {
                format!("{:.2} ± {:.2}", m.mean * k, m.ci95 * k)
            } else {
                format!("{:.2}", m.mean * k)
            };
            ui.label(ci);
            ui.label(format!("{:.2}", m.std * k));
            ui.label(format!("{:.2}", m.min * k));
            ui.label(format!("{:.2}", m.max * k));
        }
        None => {
            ui.label(r.count_text("to go"));
            // Mean, std, min, max: nothing yet (the paired column follows).
            for _ in 0..4 {
                ui.weak("–");
            }
        }
    }
    let vs = paired_text(r, k, &table.baseline);
    match table.verdict(r) {
        Some(Verdict::Better) => {
            ui.colored_label(egui::Color32::from_rgb(0x5c, 0xc0, 0x6c), vs)
                .on_hover_text("better than its reference: the 95 % interval excludes 0");
        }
        Some(Verdict::Worse) => {
            ui.colored_label(egui::Color32::from_rgb(0xe0, 0x70, 0x5c), vs)
                .on_hover_text("worse than its reference: the 95 % interval excludes 0");
        }
        None => {
            ui.label(vs);
        }
    }
    ui.label(duration_text(r.train_secs))
        .on_hover_text("mean training time of the finished cells (evaluation excluded)");
}

/// A variant's figures as the means plot's hover shows them: mean ± 95 % CI over n seeds, in the
/// table's unit (`k`: 100 for accuracies).
fn means_hover(r: &Row, k: f64) -> String {
    let unit = if k > 1.0 { " %" } else { "" };
    match r.summary {
        Some(m) if m.ci95.is_finite() => format!(
            "{}\nmean {:.2} ± {:.2}{unit} (95 % CI, n = {})",
            r.variant,
            m.mean * k,
            m.ci95 * k,
            m.n
        ),
        Some(m) => format!("{}\nmean {:.2}{unit} (n = {})", r.variant, m.mean * k, m.n),
        None => format!("{}\nno finished cell yet", r.variant),
    }
}

/// The metric per variant on a range fitted to the values: each seed's value as a small mark, the
/// mean as a large point with its 95 % interval as whiskers, and the baseline's mean as a dashed
/// line across. A bar from zero would hide what a study is about: differences of a point or two
/// between variants that all score 80–90 %.
fn means_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, table: &Table, height: f32) {
    let (k, _) = report::scale(&table.metric);
    let id = format!("study{}-means", table.study);
    let title = figures::means_title(&table.metric);
    let header = plot_header(ui, &id, &title, vcx.export, None, true);
    if header.wants_vector() {
        let svg = figures::means_svg(&format!("{}: {title}", table.name), table);
        header.vector_export(vcx.export, &id, svg);
    }
    let Some((lo, hi)) = value_extent(table) else {
        crate::gui::widgets::plot::empty_plot(ui, &table.metric, height);
        return;
    };
    let layout = MeansLayout::fit(ui, table);
    let plot = means_axes(
        Plot::new(&id),
        ui.ctx(),
        &id,
        &layout,
        table,
        (lo * k, hi * k),
        k,
    );
    let plot = plot.height(if layout.across {
        (height - 30.0).max(200.0)
    } else {
        (height - 30.0).max(28.0 * layout.n as f32 + 60.0)
    });
    let whisker_color = ui.visuals().strong_text_color();
    let baseline = table
        .rows
        .iter()
        .find(|r| r.variant == table.baseline)
        .and_then(|r| r.summary);
    plot.show(ui, |p| {
        if let Some(b) = baseline {
            let name = format!("{} (baseline) mean", table.baseline);
            let style = LineStyle::dashed_loose();
            let color = whisker_color.gamma_multiply(0.5);
            if layout.across {
                p.hline(HLine::new(name, b.mean * k).color(color).style(style));
            } else {
                p.vline(VLine::new(name, b.mean * k).color(color).style(style));
            }
        }
        for (i, r) in table.rows.iter().enumerate() {
            let c = color(i);
            let marks = figures::marks(layout.slot(i), r, (lo, hi), k);
            let place = |pts: Vec<[f64; 2]>| -> Vec<[f64; 2]> {
                pts.into_iter().map(|q| layout.place(q)).collect()
            };
            p.points(
                Points::new(format!("{} seeds", r.variant), place(marks.seeds))
                    .color(c.gamma_multiply(0.8))
                    .radius(2.5),
            );
            for (j, segment) in marks.whisker.into_iter().enumerate() {
                let name = if j == 0 {
                    format!("{} 95 % CI", r.variant)
                } else {
                    String::new()
                };
                p.line(Line::new(name, place(segment.to_vec())).color(whisker_color));
            }
            if let Some(mean) = marks.mean {
                p.points(
                    Points::new(r.variant.clone(), vec![layout.place(mean)])
                        .color(c)
                        .radius(5.0),
                );
            }
        }
    });
    vcx.export
        .capture_if_requested(ui.ctx(), &id, header.region(ui));
}

/// How the means plot lays its variants out: across the x axis while every name fits under its
/// mark whole; otherwise one row each, top to bottom, with the names beside the rows (a forest
/// plot), where a name has the width of the longest rather than a share of the plot's width.
struct MeansLayout {
    across: bool,
    n: usize,
    names: Vec<String>,
    /// The width the names take beside the rows.
    name_room: f32,
}

impl MeansLayout {
    fn fit(ui: &egui::Ui, table: &Table) -> Self {
        let n = table.rows.len();
        let variants: Vec<&str> = table.rows.iter().map(|r| r.variant.as_str()).collect();
        // egui_plot leaves out a tick label wider than the space between ticks: the frame is the
        // width less the y axis, and a margin on each side.
        let per_variant = 0.85 * (ui.available_width() - 60.0) / n.max(1) as f32;
        let width = |t: &str| text_width(ui, t);
        let under = fit_labels(&variants, per_variant, width);
        if under.iter().zip(&variants).all(|(a, b)| a == b) {
            return Self {
                across: true,
                n,
                names: under,
                name_room: 0.0,
            };
        }
        let widest = variants.iter().map(|v| width(v)).fold(0.0, f32::max);
        let name_room = widest.min(0.4 * ui.available_width()).max(40.0);
        Self {
            across: false,
            n,
            names: fit_labels(&variants, name_room, width),
            name_room,
        }
    }

    /// Variant `i`'s position on the variants' axis (the first on top when they are rows).
    fn slot(&self, i: usize) -> f64 {
        if self.across {
            i as f64
        } else {
            (self.n - 1 - i) as f64
        }
    }

    /// The variant at `pos` on the variants' axis.
    fn variant_at(&self, pos: f64) -> Option<usize> {
        let p = pos.round();
        let i = if self.across {
            p
        } else {
            self.n as f64 - 1.0 - p
        };
        (i >= 0.0 && i < self.n as f64).then_some(i as usize)
    }

    /// A point given as (variant's slot, value) in plot coordinates.
    fn place(&self, [slot, value]: [f64; 2]) -> [f64; 2] {
        if self.across {
            [slot, value]
        } else {
            [value, slot]
        }
    }
}

/// The means plot's axes: the metric's (with its unit, ticks fitted) and the variants' (a mark
/// under every variant, each named), in `layout`'s orientation; the hover names the variant.
fn means_axes<'a>(
    plot: Plot<'a>,
    ctx: &egui::Context,
    id: &str,
    layout: &MeansLayout,
    table: &Table,
    (lo, hi): (f64, f64),
    k: f64,
) -> Plot<'a> {
    let unit = if k > 1.0 { " %" } else { "" };
    let (value_axis, name_axis) = if layout.across { (1, 0) } else { (0, 1) };
    let values = crate::gui::widgets::plot::logged(
        ctx,
        id,
        value_axis,
        true,
        move |m: GridMark, _: &std::ops::RangeInclusive<f64>| {
            format!(
                "{}{unit}",
                crate::chart::format::format_num(m.value, m.step_size)
            )
        },
    );
    let names = layout.names.clone();
    let name_of = move |mark: GridMark, _: &std::ops::RangeInclusive<f64>| {
        let i = mark.value.round();
        if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let n = layout.n;
    let across = layout.across;
    let names_at = move |mark: GridMark, r: &std::ops::RangeInclusive<f64>| -> String {
        // Rows run top to bottom: the mark at the top is the first variant.
        let flipped = GridMark {
            value: if across {
                mark.value
            } else {
                n as f64 - 1.0 - mark.value
            },
            ..mark
        };
        name_of(flipped, r)
    };
    let every_variant = |g: egui_plot::GridInput| crate::gui::widgets::plot::slot_marks(&g, 1.0);
    // The hover says what the variant measured, not where the pointer is.
    let hover_texts: Vec<String> = table.rows.iter().map(|r| means_hover(r, k)).collect();
    let (slots, pick) = (
        (-0.5, n as f64 - 0.5),
        MeansLayout {
            names: Vec::new(),
            ..*layout
        },
    );
    let plot = plot.label_formatter(move |pos| {
        let p = hover_point(pos);
        pick.variant_at(if pick.across { p.x } else { p.y })
            .and_then(|i| hover_texts.get(i))
            .cloned()
    });
    // A labelled value about every 28 px up the y axis, every 50 px along the x axis (its labels
    // lie side by side).
    let nice =
        |px: f64| move |g: egui_plot::GridInput| crate::gui::widgets::plot::nice_grid(&g, px);
    if across {
        plot.y_grid_spacer(nice(28.0))
            .y_axis_formatter(values)
            .x_grid_spacer(every_variant)
            .include_x(slots.0)
            .include_x(slots.1)
            .include_y(lo)
            .include_y(hi)
            .custom_x_axes(vec![
                AxisHints::new_x().label_spacing(10.0..=20.0).formatter(
                    crate::gui::widgets::plot::logged(ctx, id, name_axis, false, names_at),
                ),
            ])
            .y_axis_label(table.metric.clone())
    } else {
        plot.x_grid_spacer(nice(50.0))
            .x_axis_formatter(values)
            .y_grid_spacer(every_variant)
            .include_y(slots.0)
            .include_y(slots.1)
            .include_x(lo)
            .include_x(hi)
            .custom_y_axes(vec![
                AxisHints::new_y()
                    .label_spacing(10.0..=20.0)
                    .min_thickness(layout.name_room + 8.0)
                    .formatter(crate::gui::widgets::plot::logged(
                        ctx, id, name_axis, false, names_at,
                    )),
            ])
            .x_axis_label(table.metric.clone())
    }
}

/// The width of `text` in the font egui_plot draws tick labels with.
fn text_width(ui: &egui::Ui, text: &str) -> f32 {
    let font = egui::TextStyle::Body.resolve(ui.style());
    ui.painter()
        .layout_no_wrap(text.to_owned(), font, egui::Color32::WHITE)
        .size()
        .x
}

/// Bar labels shortened until `width` (of a text) says each fits in `room`, each still told from
/// the others where it can be: where one `key=value` name does not fit, such names drop their key
/// (the axis says what varies) unless the value alone would read as another bar's
/// (`direct-epochs=10` and `epochs=10` keep theirs); a name still too wide loses characters from
/// its middle behind an ellipsis, keeping its start and its end, where one study's variants tend
/// to differ (`width-off`, `width-all-epochs` → `wid…ff`, `wid…hs`).
fn fit_labels(names: &[&str], room: f32, width: impl Fn(&str) -> f32) -> Vec<String> {
    let drop_keys = names.iter().any(|n| n.contains('=') && width(n) > room);
    fn value(n: &str) -> &str {
        n.split_once('=').map_or(n, |(_, v)| v)
    }
    names
        .iter()
        .map(|&name| {
            let short = value(name);
            let clashes = names.iter().any(|&m| m != name && value(m) == short);
            let name = if drop_keys && !clashes { short } else { name };
            if width(name) <= room {
                return name.to_owned();
            }
            let chars: Vec<char> = name.chars().collect();
            (1..chars.len())
                .rev()
                .map(|k| {
                    let (head, tail) = (k.div_ceil(2), k / 2);
                    let head: String = chars[..head].iter().collect();
                    let tail: String = chars[chars.len() - tail..].iter().collect();
                    format!("{head}…{tail}")
                })
                .find(|t| width(t) <= room)
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The means plot's hover showed the pointer's height as if it were a value; it shows the
    /// variant's mean ± CI and n now, whatever the pointer's height.
    #[test]
    fn the_means_hover_says_what_the_variant_measured() {
        let row = crate::chart::figures::tests::row("shift-aug", &[0.898, 0.899, 0.896], 0);
        let m = row.summary.expect("three seeds");
        let text = means_hover(&row, 100.0);
        assert!(text.starts_with("shift-aug\nmean "), "{text}");
        assert!(text.contains(&format!("{:.2} ± {:.2} %", m.mean * 100.0, m.ci95 * 100.0)));
        assert!(text.ends_with("n = 3)"), "{text}");
        let empty = crate::chart::figures::tests::row("mf", &[], 0);
        assert_eq!(means_hover(&empty, 100.0), "mf\nno finished cell yet");
    }

    #[test]
    fn many_variants_become_rows_with_their_names_whole() {
        let row = |variant: &str| crate::chart::figures::tests::row(variant, &[0.85, 0.86], 0);
        let table = |names: &[&str]| Table {
            study: 1,
            name: "t".into(),
            metric: "test/top1".into(),
            baseline: names[0].into(),
            rows: names.iter().map(|n| row(n)).collect(),
            left: Default::default(),
        };
        // The layout as a 520-point wide column of the Studies view sees it.
        let fit = |t: &Table| {
            let ctx = egui::Context::default();
            let mut layout = None;
            let input = egui::RawInput {
                screen_rect: Some(egui::Rect::from_min_size(
                    egui::Pos2::ZERO,
                    egui::vec2(520.0, 600.0),
                )),
                ..Default::default()
            };
            let mut out = ctx.run_ui(input, |ui| layout = Some(MeansLayout::fit(ui, t)));
            out.textures_delta.clear();
            layout.expect("laid out")
        };
        let few = fit(&table(&["mult", "shift"]));
        assert!(few.across && few.names == ["mult", "shift"]);
        // Issue 45: at 6+ variants the names under the marks were cut to "di…t a…r wi…f".
        let names = [
            "direct-none",
            "aug-none+adder",
            "aug-none+adder+bn",
            "direct",
            "aug",
            "aug+bn",
            "width-all-epochs",
            "width-off",
        ];
        let many = fit(&table(&names));
        assert!(!many.across, "eight long names side by side");
        assert_eq!(many.names, names, "every name whole beside its row");
        // The first variant is the top row, and the hover finds each by its row.
        assert_eq!(many.slot(0), 7.0);
        assert_eq!(many.variant_at(7.2), Some(0));
        assert_eq!(many.variant_at(0.0), Some(7));
        assert_eq!(many.variant_at(8.0), None);
        assert_eq!(many.place([7.0, 86.0]), [86.0, 7.0]);
    }

    #[test]
    fn the_means_plot_fits_its_range_to_the_seeds_and_intervals() {
        let row =
            |variant: &str, values: &[f64]| crate::chart::figures::tests::row(variant, values, 0);
        let mut table = Table {
            study: 1,
            name: "t".into(),
            metric: "test/top1".into(),
            baseline: "a".into(),
            rows: vec![row("a", &[0.85, 0.845, 0.853]), row("b", &[0.83, 0.82])],
            left: Default::default(),
        };
        let (lo, hi) = value_extent(&table).expect("values");
        let b = table.rows[1].summary.expect("b");
        // b's two seeds give a wide interval: it sets both ends, with an eighth of the span around.
        let (want_lo, want_hi) = (b.mean - b.ci95, b.mean + b.ci95);
        let pad = (want_hi - want_lo) / 8.0;
        assert!((lo - (want_lo - pad)).abs() < 1e-12 && (hi - (want_hi + pad)).abs() < 1e-12);
        // One seed each: the seeds alone, nowhere near 0.
        table.rows = vec![row("a", &[0.85]), row("b", &[0.82])];
        let (lo, hi) = value_extent(&table).expect("values");
        assert!(
            (lo - (0.82 - 0.03 / 8.0)).abs() < 1e-12 && (hi - (0.85 + 0.03 / 8.0)).abs() < 1e-12
        );
        table.rows = vec![row("a", &[0.85])];
        let (lo, hi) = value_extent(&table).expect("one value");
        assert!(lo < 0.85 && hi > 0.85 && hi - lo < 0.05, "{lo} {hi}");
        table.rows = vec![row("a", &[])];
        assert_eq!(value_extent(&table), None);
        // One failed seed of three: an interval past 100 % (and below 0), clipped for an
        // accuracy, not for a loss.
        table.rows = vec![row("mf", &[0.4984, 0.8515, 0.8507])];
        let (lo, hi) = value_extent(&table).expect("values");
        assert!(lo >= 0.0 && hi == 1.0, "{lo} {hi}");
        table.metric = "test/loss".into();
        let (_, hi) = value_extent(&table).expect("values");
        assert!(hi > 1.0, "{hi}");
    }

    #[test]
    fn bar_labels_drop_their_key_then_their_middle_to_fit_and_stay_apart() {
        let w = |t: &str| 7.0 * t.chars().count() as f32;
        let names = ["remap=none", "remap=cdf-affine", "direct-pointwise"];
        // Room for everything.
        assert_eq!(fit_labels(&names, 200.0, w), names);
        // One `key=value` name too wide: every such name drops its key; others keep theirs.
        assert_eq!(
            fit_labels(&["remap=none", "remap=cdf-affine", "direct"], 70.0, w),
            ["none", "cdf-affine", "direct"]
        );
        // Still too wide: the middle goes, the start and the end stay.
        assert_eq!(fit_labels(&names, 42.0, w), ["none", "cdf…ne", "dir…se"]);
        assert_eq!(fit_labels(&["anything"], 5.0, w), [""], "no room: no label");
        // A value that would read as another bar's keeps its key (add-aug-factors' two
        // 10-epoch variants were both labelled "10"); names that share a start keep their ends.
        let factors = [
            "alpha=0.5",
            "direct-epochs=10",
            "epochs=10",
            "width-off",
            "width-all-epochs",
        ];
        let fitted = fit_labels(&factors, 63.0, w);
        assert_eq!(
            fitted,
            ["0.5", "dire…s=10", "epochs=10", "width-off", "widt…ochs"]
        );
        let fitted = fit_labels(&factors, 42.0, w);
        assert_eq!(fitted, ["0.5", "dir…10", "epo…10", "wid…ff", "wid…hs"]);
        for (i, a) in fitted.iter().enumerate() {
            assert!(
                fitted[..i].iter().all(|b| b != a),
                "{a} twice in {fitted:?}"
            );
        }
    }

    /// A study of three variants × two seeds whose runs each carry `val/top1` over `n` steps.
    fn live_study(n: usize) -> (StudyData, DataCache) {
        use shiftadd_core::spec::study::Variant;
        use shiftadd_core::store::{StudyRow, StudyRunRow};
        let variants: Vec<Variant> = (0..3)
            .map(|v| Variant::new(format!("v{v}"), vec![format!("train.lr=0.{}", v + 1)]))
            .collect();
        let mut data = DataCache::default();
        let mut cells = Vec::new();
        for (v, variant) in variants.iter().enumerate() {
            for seed in 0..2u64 {
                let run = (v * 2 + seed as usize + 1) as RunId;
                let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
                let ys: Vec<f64> = xs
                    .iter()
                    .map(|x| x * 0.01 + v as f64 + seed as f64)
                    .collect();
                let mut rd = crate::gui::data::cache::RunData::default();
                rd.series.insert("val/top1".into(), Series::new(xs, ys));
                data.data.insert(run, rd);
                cells.push(StudyRunRow {
                    study: 1,
                    variant: variant.name.clone(),
                    seed,
                    run,
                });
            }
        }
        let study = Study {
            name: "live".into(),
            base_toml: String::new(),
            seeds: vec![0, 1],
            metric: "test/top1".into(),
            baseline: "v0".into(),
            parallel: 2,
            variants,
            prune: None,
        };
        let row = StudyRow {
            id: 1,
            name: "live".into(),
            identity: String::new(),
            spec: String::new(),
            created_at: 0.0,
        };
        let s = StudyData {
            row,
            study: Some(study),
            cells,
            jobs: Vec::new(),
            table: None,
            fit: None,
        };
        (s, data)
    }

    #[test]
    fn a_new_point_recomputes_only_its_own_variants_band_and_the_result_is_fresh() {
        let (s, mut data) = live_study(50);
        let spec = s.study.clone().expect("spec");
        let mut view = StudyView::default();
        let (first, computed) = view.groups(&s, &spec, &data);
        assert_eq!((first.len(), computed), (3, 3));
        assert_eq!(
            view.groups(&s, &spec, &data).1,
            0,
            "nothing changed: all cached"
        );
        // Run 4 (variant v1, seed 1) and run 3 (v1, seed 0) gain a point at x = 50.
        for run in [3, 4] {
            let series = data
                .data
                .get_mut(&run)
                .and_then(|d| d.series.get_mut("val/top1"))
                .expect("series");
            series.xs.push(50.0);
            series.ys.push(10.0);
        }
        let (after, computed) = view.groups(&s, &spec, &data);
        assert_eq!(computed, 1, "only v1's band is computed again");
        assert_eq!(after[0], first[0]);
        assert_eq!(after[2], first[2]);
        assert_eq!(after[1].band.last().map(|b| (b.0, b.1)), Some((50.0, 10.0)));
        // The same as a view computing everything from scratch.
        let (fresh, _) = StudyView::default().groups(&s, &spec, &data);
        assert_eq!(*after, *fresh);
        // Another metric or the seeds toggle computes every group.
        view.show_seeds = true;
        let (with_seeds, computed) = view.groups(&s, &spec, &data);
        assert_eq!(computed, 3);
        assert!(with_seeds.iter().all(|g| g.seeds.len() == 2));
    }
}
