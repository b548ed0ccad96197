//! Monitor: the current run's live curves (loss of the tiny and augmented models, tiny top-1 —
//! mean IoU and pixel accuracy for segmentation — learning rate, images/s), progress with epoch,
//! step and ETA, Pause / Resume / Stop, the run's log with its failure reason, and for a
//! segmentation run its first validation images with their true and predicted masks, predicted
//! anew from each epoch's checkpoint.

use std::sync::Arc;

use shiftadd_core::data::segment::{IGNORE, class_name};
use shiftadd_core::export::{MaskPanel, class_colour, render_panels};
use shiftadd_core::host::keys as host_keys;
use shiftadd_core::run::Command;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::{RunId, RunSummary, Status, keys};

use crate::chart::format::color;
use crate::chart::format::format_secs;
use crate::chart::series::Series;
use crate::gui::ctx::ViewCtx;
use crate::gui::data::backend::RunRow;
use crate::gui::data::cache::{DataCache, Live, RunData};
use crate::gui::widgets::export::{Export, ExportRequest};
use crate::gui::widgets::markdown;
use crate::gui::widgets::plot::{Curve, PlotStyle, series_plot};

pub struct MonitorView {
    pub show_log: bool,
    /// The masks panel drawn: (run, its checkpoint's step) and its texture.
    masks: Option<((RunId, i64), egui::TextureHandle)>,
}

impl Default for MonitorView {
    fn default() -> Self {
        Self {
            show_log: true,
            masks: None,
        }
    }
}

impl MonitorView {
    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        let Some(run) = vcx.current else {
            ui.label("Select a run in the list (or launch one) to monitor it.");
            return;
        };
        header_ui(ui, run, vcx);
        ui.separator();
        let seg = vcx
            .data
            .row(run)
            .map(|r| (r.summary.segmentation, r.summary.epochs_done));
        let seg_epochs = match seg {
            Some((true, done)) => {
                let done = done.unwrap_or(0);
                if done > 0 {
                    vcx.data.want_masks(run, done);
                }
                Some(done)
            }
            _ => None,
        };
        let empty = RunData::default();
        let d = vcx.data.data.get(&run).unwrap_or(&empty);
        let log_height = if self.show_log { 180.0 } else { 24.0 };
        let system = d.series.contains_key(host_keys::CPU_PCT);
        let rows = if system { 3.0 } else { 2.0 };
        let plot_h = ((ui.available_height() - log_height - 40.0 - 50.0 * rows) / rows).max(110.0);
        let group = egui::Id::unique(("monitor-x", run));
        let style = PlotStyle {
            link_x: Some(group),
            height: plot_h,
            ..PlotStyle::default()
        };
        let curves = |keys: &[(&str, &str)]| -> Vec<Curve<'_>> {
            keys.iter()
                .enumerate()
                .filter_map(|(i, (k, label))| {
                    d.series.get(*k).map(|s: &Series| Curve {
                        name: (*label).to_owned(),
                        series: s,
                        color: color(i),
                    })
                })
                .collect()
        };
        ui.columns(2, |cols| {
            series_plot(
                &mut cols[0],
                &format!("run{run}-loss"),
                "Training loss",
                &curves(&[
                    (keys::TRAIN_LOSS, "tiny"),
                    (keys::TRAIN_LOSS_AUG, "augmented"),
                ]),
                style,
                vcx.export,
            );
            let scores: &[(&str, &str)] = if seg_epochs.is_some() {
                &[
                    (keys::VAL_MIOU, "tiny mIoU (validation)"),
                    (keys::TEST_MIOU, "tiny mIoU (test, end of run)"),
                    (keys::VAL_PIXEL_ACC, "tiny pixel accuracy (validation)"),
                    (keys::VAL_MIOU_WIDEST, "exact widest augmented config, mIoU"),
                ]
            } else {
                &[
                    (keys::VAL_TOP1, "tiny (validation)"),
                    (keys::TEST_TOP1, "tiny (test, end of run)"),
                    (keys::VAL_TOP1_WIDEST, "exact widest augmented config"),
                    (
                        keys::VAL_TOP1_AUG_LEGACY,
                        "widest augmented (runs before the validation split: on test)",
                    ),
                ]
            };
            series_plot(
                &mut cols[1],
                &format!("run{run}-top1"),
                if seg_epochs.is_some() {
                    "Validation mIoU and pixel accuracy"
                } else {
                    "Validation top-1"
                },
                &curves(scores),
                PlotStyle {
                    percent: true,
                    ..style
                },
                vcx.export,
            );
            series_plot(
                &mut cols[0],
                &format!("run{run}-lr"),
                "Learning rate",
                &curves(&[(keys::TRAIN_LR, "lr")]),
                style,
                vcx.export,
            );
            match seg_epochs {
                Some(done) => {
                    let held = vcx.data.masks.get(&run).map(|(_, p)| p.clone());
                    let dataset = vcx.data.row(run).map_or("", |r| r.summary.dataset.as_str());
                    self.masks_ui(&mut cols[1], (run, done), held, plot_h, vcx.export);
                    if let Some(Ok(p)) = vcx.data.masks.get(&run).map(|(_, p)| p) {
                        legend_ui(&mut cols[1], dataset, p.classes);
                    }
                }
                None => series_plot(
                    &mut cols[1],
                    &format!("run{run}-speed"),
                    "Images / s",
                    &curves(&[(keys::TRAIN_IMAGES_PER_SEC, "images/s")]),
                    style,
                    vcx.export,
                ),
            }
            if system {
                series_plot(
                    &mut cols[0],
                    &format!("run{run}-cpu"),
                    "Process CPU % (of one core) and GPU use %",
                    &curves(&[
                        (host_keys::CPU_PCT, "CPU %"),
                        (host_keys::GPU_UTIL_PCT, "GPU %"),
                    ]),
                    style,
                    vcx.export,
                );
                series_plot(
                    &mut cols[1],
                    &format!("run{run}-memory"),
                    "Memory (MiB): process RSS, GPU",
                    &curves(&[
                        (host_keys::RSS_MB, "RSS"),
                        (host_keys::GPU_MEM_MB, "GPU memory"),
                    ]),
                    style,
                    vcx.export,
                );
            }
        });
        ui.checkbox(&mut self.show_log, "Log");
        if self.show_log {
            log_ui(ui, d);
        }
    }
}

impl MonitorView {
    /// A segmentation run's first validation images (columns): the image, its ground truth,
    /// the last checkpoint's prediction, coloured by class (VOC's palette; white: not scored).
    fn masks_ui(
        &mut self,
        ui: &mut egui::Ui,
        (run, done): (RunId, i64),
        panel: Option<Result<Arc<MaskPanel>, String>>,
        height: f32,
        export: &mut Export,
    ) {
        ui.horizontal(|ui| {
            ui.strong("Validation masks");
            if let Some(Ok(p)) = &panel {
                ui.label(format!("· image, truth, prediction · epoch {}", p.epoch));
            }
        });
        let p = match panel {
            None if done == 0 => {
                ui.label("Masks appear after the first epoch's checkpoint.");
                return;
            }
            None => {
                ui.label("Predicting the masks…");
                return;
            }
            Some(Err(why)) => {
                ui.label(format!("No masks: {why}"));
                return;
            }
            Some(Ok(p)) => p,
        };
        let key = (run, p.step);
        if self.masks.as_ref().is_none_or(|(k, _)| *k != key) {
            match render_panels(&[&p], 1, true) {
                Ok(((w, h), rgb)) => {
                    let image = egui::ColorImage::from_rgb([w, h], &rgb);
                    let tex = ui.ctx().load_texture(
                        format!("masks-{run}"),
                        image,
                        egui::TextureOptions::NEAREST,
                    );
                    self.masks = Some((key, tex));
                }
                Err(why) => {
                    ui.label(why);
                    return;
                }
            }
        }
        let Some((_, tex)) = &self.masks else {
            return;
        };
        // Up to 1.6 plots high: the masks are what a segmentation run is looked at for.
        let size = tex.size_vec2();
        let fit = ((1.6 * height) / size.y)
            .min(ui.available_width() / size.x)
            .max(0.5);
        ui.add(egui::Image::new((tex.id(), size * fit)).alt_text(format!(
            "validation masks of run {run}: image, truth and prediction for {} images",
            p.len()
        )));
        let save = ui
            .horizontal(|ui| {
                ui.button("Save PNG…").on_hover_text(
                    "the image, truth and prediction of each image in a row, 4 × 4 pixels a pixel",
                )
            })
            .inner;
        if save.clicked()
            && let Ok(((w, h), rgb)) = render_panels(&[&p], 4, false)
        {
            export.request(ExportRequest::Image {
                name: format!("run{run}-masks"),
                image: Arc::new(egui::ColorImage::from_rgb([w, h], &rgb)),
            });
        }
    }
}

/// Which colour is which class (and white: not scored).
fn legend_ui(ui: &mut egui::Ui, dataset: &str, classes: usize) {
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 4.0;
        let chip = |ui: &mut egui::Ui, rgb: [u8; 3], name: String| {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
            ui.painter()
                .rect_filled(rect, 1.0, egui::Color32::from_rgb(rgb[0], rgb[1], rgb[2]));
            ui.small(name);
            ui.add_space(4.0);
        };
        for c in 0..classes.min(255) {
            chip(ui, class_colour(c as u8), class_name(dataset, classes, c));
        }
        chip(ui, class_colour(IGNORE), "not scored".into());
    });
}

fn header_ui(ui: &mut egui::Ui, run: RunId, vcx: &mut ViewCtx<'_>) {
    let data: &DataCache = vcx.data;
    let row = data.row(run);
    let status = row.map(|r| r.summary.status);
    ui.horizontal(|ui| {
        ui.heading(format!(
            "#{run} {}",
            row.map_or("", |r| r.summary.name.as_str())
        ));
        ui.label(format!("status: {}", status.map_or("…", Status::as_str)));
        if let Some(r) = row {
            ui.weak(format!(
                "{} · {} · {} · hybrid {}",
                r.summary.dataset, r.summary.model, r.summary.operator, r.hybrid
            ));
            if !r.summary.tags.is_empty() {
                ui.weak(format!("tags: {}", r.summary.tags));
            }
        }
    });
    let details = data.data.get(&run).and_then(|d| d.details.as_ref());
    match details.map(|d| &d.provenance) {
        Some(Some(p)) => {
            let threads = data
                .data
                .get(&run)
                .and_then(|d| d.series.get(host_keys::THREADS))
                .and_then(crate::chart::series::Series::last)
                .map(|(_, t)| format!(" · {t:.0} threads"))
                .unwrap_or_default();
            ui.weak(format!("{}{threads}", p.summary()))
                .on_hover_text(format!(
                    "experiments folder: {}",
                    p.experiments.as_deref().unwrap_or("?")
                ));
        }
        Some(None) => {
            ui.weak("recorded before provenance was kept (commit, versions, hardware)");
        }
        None => {}
    }
    if let Some(notes) = row
        .map(|r| r.summary.notes.as_str())
        .filter(|n| !n.trim().is_empty())
    {
        egui::CollapsingHeader::new("Notes")
            .default_open(true)
            .show(ui, |ui| markdown::show(ui, notes));
    }
    if let Some(reason) = row.and_then(|r| r.summary.reason.as_ref()) {
        let failed = status == Some(Status::Failed);
        let color = if failed {
            ui.visuals().error_fg_color
        } else {
            ui.visuals().warn_fg_color
        };
        let line = format!("{}: {reason}", if failed { "failed" } else { "note" });
        markdown::label(ui, &line, Some(color));
    }
    if let Some(why) = row.and_then(RunRow::not_learning) {
        ui.colored_label(ui.visuals().warn_fg_color, why);
    }
    let live = data.live.get(&run).cloned();
    ui.horizontal(|ui| progress_ui(ui, run, status, live.as_ref(), vcx));
}

/// A run's progress bar with Stop and Pause / Resume while it trains (figures after the
/// buttons, so that they do not move), or Resume / Stop for a run that is not training.
fn progress_ui(
    ui: &mut egui::Ui,
    run: RunId,
    status: Option<Status>,
    live: Option<&Live>,
    vcx: &mut ViewCtx<'_>,
) {
    match live {
        Some(l) => {
            let eta = l.eta_secs(vcx.now).map_or_else(|| "–".into(), format_secs);
            let text = format!(
                "epoch {}/{} · step {}/{} · ETA {eta}{}",
                l.epoch,
                l.total_epochs,
                l.step,
                l.total_steps,
                if l.paused { " · paused" } else { "" }
            );
            ui.add(
                egui::ProgressBar::new(l.fraction())
                    .text(text)
                    .desired_width(460.0),
            );
            // The buttons sit right of the fixed-width bar and before the figures, whose width
            // changes with every update: a click aimed at them lands where they still are. Stop
            // comes first, so that Pause turning into Resume does not move it either.
            if ui
                .button("Stop")
                .on_hover_text("stop after the current batch; resumable from the last checkpoint")
                .clicked()
            {
                vcx.commands.push(Command::Stop(run));
            }
            if l.paused {
                if ui.button("Resume").clicked() {
                    vcx.commands.push(Command::Unpause(run));
                }
            } else if ui.button("Pause").clicked() {
                vcx.commands.push(Command::Pause(run));
            }
            if l.loss.is_finite() {
                ui.label(format!("loss {:.3}", l.loss));
            }
            if l.images_per_sec.is_finite() {
                ui.label(format!("{:.0} img/s", l.images_per_sec));
            }
        }
        None => {
            let resumable = matches!(
                status,
                Some(Status::Stopped | Status::Interrupted | Status::Failed)
            );
            if status == Some(Status::Queued) {
                ui.label("waiting in the queue");
                if ui
                    .button("Stop")
                    .on_hover_text("take it off the queue")
                    .clicked()
                {
                    vcx.commands.push(Command::Stop(run));
                }
            } else if resumable
                && ui
                    .button("Resume")
                    .on_hover_text("continue from the last checkpoint")
                    .clicked()
            {
                vcx.commands.push(Command::Resume { run, request: 0 });
            }
            if let Some(r) = vcx
                .data
                .row(run)
                .filter(|_| status == Some(Status::Finished))
            {
                ui.label(finished_summary(&r.summary, *vcx.hw_model));
            }
        }
    }
}

/// A finished run in one line: how long it trained, its accuracies, its energy under the cost
/// model shown.
fn finished_summary(s: &RunSummary, hw: HwModel) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{:.2} %", v * 100.0));
    let mut parts = vec![format!(
        "trained {}",
        s.duration_secs()
            .map_or_else(|| "–".to_owned(), format_secs)
    )];
    let score = if s.segmentation { " mIoU" } else { "" };
    parts.push(format!("best val{score} {}", pct(s.best_val_top1)));
    parts.push(format!("last val{score} {}", pct(s.last_val_top1)));
    parts.push(format!("test{score} {}", pct(s.test_top1)));
    if let Some(e) = s.energy_under(hw.as_str()) {
        parts.push(format!("{e:.4} mJ ({})", hw.title()));
    }
    parts.join(" · ")
}

fn log_ui(ui: &mut egui::Ui, d: &RunData) {
    let Some(details) = &d.details else {
        ui.spinner();
        return;
    };
    egui::ScrollArea::vertical()
        .max_height(150.0)
        .stick_to_bottom(true)
        .auto_shrink([false, true])
        .show(ui, |ui| {
            if details.logs.is_empty() {
                ui.weak("no log lines yet");
            }
            let t0 = details.logs.first().map_or(0.0, |l| l.0);
            for (t, level, msg) in &details.logs {
                let color = match level.as_str() {
                    "ERROR" => ui.visuals().error_fg_color,
                    "WARN" => ui.visuals().warn_fg_color,
                    _ => ui.visuals().text_color(),
                };
                ui.colored_label(
                    color,
                    format!("{:>8} {level:<5} {msg}", format_secs(t - t0)),
                );
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_secs(59.4), "0:59");
        assert_eq!(format_secs(61.0), "1:01");
        assert_eq!(format_secs(3725.0), "1:02:05");
        assert_eq!(format_secs(f64::NAN), "–");
    }

    /// Monitor's header said nothing of a finished run's outcome; it sums it up in one line.
    #[test]
    fn a_finished_run_is_summed_up_in_one_line() {
        let mut s = crate::gui::data::backend::tests::row(1, "mult-aug-s3", "").summary;
        s.started_at = Some(100.0);
        s.finished_at = Some(100.0 + 42.0 * 60.0);
        s.best_val_top1 = Some(0.9088);
        s.last_val_top1 = Some(0.9066);
        s.test_top1 = Some(0.9049);
        s.energy_shiftaddnas_mj = Some(0.1512);
        let line = finished_summary(&s, HwModel::Shiftaddnas);
        assert!(
            line.contains("best val 90.88 %")
                && line.contains("last val 90.66 %")
                && line.contains("test 90.49 %")
                && line.contains("0.1512 mJ"),
            "{line}"
        );
        assert!(line.starts_with("trained 42"), "{line}");
        s.test_top1 = None;
        assert!(finished_summary(&s, HwModel::Project).contains("test –"));
    }
}
