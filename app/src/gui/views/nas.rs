//! NAS: the candidates of a two-stage search (`shiftadd nas`) — proxy accuracy vs cost by stage
//! and generation, the Pareto front of the TargetNets, the budget, and the best architectures
//! with a button that trains one with the search's recipe. Updates live while the search runs
//! (in this or another process: it polls the database).

use std::sync::Arc;

use egui_plot::{Line, MarkerShape, Plot, Points, VLine};
use shiftadd_core::Config;
use shiftadd_core::nas::{pareto_front, target_config, unit};
use shiftadd_core::run::Command;
use shiftadd_core::spec::space::NasArch;
use shiftadd_core::store::{CandidateStatus, NasCandidateRow, RunId};

use crate::chart::format::color;
use crate::chart::format::csv_field;
use crate::gui::ctx::ViewCtx;
use crate::gui::data::backend::NasData;
use crate::gui::widgets::export::ExportRequest;
use crate::gui::widgets::job::job_ui;
use crate::gui::widgets::plot::{hover_point, plot_header};

#[derive(Default)]
pub struct NasView {
    /// The search shown (the latest one until another is picked).
    pub search: Option<RunId>,
    next_request: u64,
}

/// One line summary of an architecture: per stage depth × kernels / expands @ width.
pub fn arch_summary(a: &NasArch) -> String {
    a.stages
        .iter()
        .map(|s| {
            let k: Vec<String> = s.kernels.iter().map(ToString::to_string).collect();
            let e: Vec<String> = s.expands.iter().map(ToString::to_string).collect();
            format!("k{} e{} w{}", k.join(""), e.join(""), s.width)
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

impl NasView {
    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        let current = &mut self.search;
        let searches: Vec<(RunId, String, String)> = vcx
            .data
            .runs
            .iter()
            .filter(|r| r.summary.model == shiftadd_core::nas::SEARCH_MODEL)
            .map(|r| {
                (
                    r.summary.id,
                    r.summary.name.clone(),
                    r.summary.status.to_string(),
                )
            })
            .collect();
        ui.horizontal(|ui| {
            ui.heading("NAS");
            ui.label("search:");
            for (id, name, status) in &searches {
                if ui
                    .selectable_label(*current == Some(*id), format!("#{id} {name} ({status})"))
                    .clicked()
                {
                    *current = Some(*id);
                }
            }
        });
        jobs_ui(ui, vcx);
        if current.is_none_or(|c| !searches.iter().any(|s| s.0 == c)) {
            // Show the latest search rather than an empty view.
            if let Some(latest) = searches.iter().map(|s| s.0).max() {
                *current = Some(latest);
            }
        }
        let Some(search) = current.filter(|c| searches.iter().any(|s| s.0 == *c)) else {
            ui.label(if searches.is_empty() {
                "No NAS search in this database yet: load a preset such as nas-smoke in Launch and press Start NAS search (or run `shiftadd nas experiments/nas-smoke.toml` on the same database); it appears here, live."
            } else {
                "Pick a search above."
            });
            return;
        };
        vcx.data.want_nas(search);
        // Cheap handles: the config and the rows are shared with the cache, not copied per frame.
        let config = vcx
            .data
            .data
            .get(&search)
            .and_then(|d| d.details.as_ref())
            .and_then(|d| d.config.clone());
        let Some(nas) = vcx.data.nas.get(&search).map(Arc::clone) else {
            ui.spinner();
            return;
        };
        let (budget, u) = config.as_ref().map_or((f64::NAN, "mJ".to_owned()), |c| {
            let unit = unit(c.nas.budget_kind);
            (c.nas.budget, format!("{unit} ({})", c.hw.model.title()))
        });
        let rows = &nas.rows;
        let count = |st: CandidateStatus| rows.iter().filter(|r| r.status == st).count();
        let pruned = match count(CandidateStatus::Pruned) {
            0 => String::new(),
            n => format!(", {n} pruned"),
        };
        ui.label(format!(
            "{} candidates ({} evaluated{pruned}) · TargetNet budget {budget} {u} · stage 1 costs are of the multiplicative SubNet, stage 2 of the MF TargetNet",
            rows.len(),
            count(CandidateStatus::Done)
        ));
        slurm_line(ui, rows);
        let avail = ui.available_height();
        ui.columns(2, |cols| {
            scatter_ui(&mut cols[0], vcx, search, rows, budget, &u, avail);
            self.table_ui(&mut cols[1], vcx, &nas, config.as_deref(), &u);
        });
    }

    fn table_ui(
        &mut self,
        ui: &mut egui::Ui,
        vcx: &mut ViewCtx<'_>,
        nas: &NasData,
        config: Option<&Config>,
        u: &str,
    ) {
        ui.strong("Best architectures");
        egui::ScrollArea::both().id_salt("nas-table").show(ui, |ui| {
            egui::Grid::new("nas-best").striped(true).show(ui, |ui| {
                let on_slurm = nas.rows.iter().any(|r| r.slurm.is_some());
                for h in ["", "Stage", "Gen", &format!("Cost {u}"), "Proxy top-1 %"] {
                    ui.strong(h);
                }
                if on_slurm {
                    ui.strong("Slurm task");
                }
                ui.strong("Architecture");
                ui.end_row();
                for (i, arch) in nas.best.iter().take(20) {
                    let r = &nas.rows[*i];
                    // The action first: architecture strings are long.
                    match (r.stage, config, arch, &nas.subnet) {
                        (2, Some(cfg), Some(target), Some(sub)) => {
                            if ui
                                .button("Train")
                                .on_hover_text("train this TargetNet inside the search's SubNet with its full recipe (ShiftAddAug)")
                                .clicked()
                            {
                                let c = target_config(cfg, target, sub);
                                self.next_request += 1;
                                vcx.commands.push(Command::Start {
                                    config: Box::new(c),
                                    name: format!("nas{}-target", r.run),
                                    tags: format!("nas-best,nas{}", r.run),
                                    request: 5000 + self.next_request,
                                });
                            }
                        }
                        _ => {
                            ui.label("");
                        }
                    }
                    ui.label(if r.stage == 1 { "1 SubNet" } else { "2 TargetNet" });
                    ui.label(r.generation.to_string());
                    ui.label(format!("{:.4}", r.cost));
                    ui.label(format!("{:.2}", r.proxy_accuracy.unwrap_or(0.0) * 100.0));
                    if on_slurm {
                        ui.label(r.slurm.as_deref().unwrap_or("here"));
                    }
                    ui.monospace(arch.as_ref().map_or_else(|| r.arch.clone(), arch_summary))
                        .on_hover_text(&r.arch);
                    ui.end_row();
                }
            });
        });
    }
}

/// The legend's name of the pruned candidates' points.
const PRUNED_SERIES: &str = "pruned (score at the stop)";

/// Where the proxies trained on Slurm are, at a glance: "On Slurm: 2 COMPLETED, 1 RUNNING of 4
/// proxies" (the state is the second word of each candidate's `slurm` record).
fn slurm_line(ui: &mut egui::Ui, rows: &[NasCandidateRow]) {
    let mut states: Vec<(&str, usize)> = Vec::new();
    for state in rows
        .iter()
        .filter_map(|r| r.slurm.as_deref())
        .filter_map(|s| s.split_whitespace().nth(1))
    {
        match states.iter_mut().find(|(st, _)| *st == state) {
            Some(entry) => entry.1 += 1,
            None => states.push((state, 1)),
        }
    }
    if states.is_empty() {
        return;
    }
    let total: usize = states.iter().map(|s| s.1).sum();
    let text: Vec<String> = states.iter().map(|(st, n)| format!("{n} {st}")).collect();
    ui.label(format!("On Slurm: {} of {total} proxies", text.join(", ")));
}

/// This session's searches: progress, Stop, and how each ended.
fn jobs_ui(ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
    for job in &vcx.searches.jobs {
        job_ui(
            ui,
            job,
            (
                "Stop search",
                "stop its proxy runs; starting the same config again resumes it, reusing every stored candidate",
            ),
            |o| format!("finished (search #{}; {})", o.search, o.tally()),
        );
    }
}

fn scatter_ui(
    ui: &mut egui::Ui,
    vcx: &mut ViewCtx<'_>,
    search: RunId,
    rows: &[NasCandidateRow],
    budget: f64,
    u: &str,
    height: f32,
) {
    let id = format!("nas{search}-candidates");
    let header = plot_header(
        ui,
        &id,
        "Candidates: proxy accuracy vs cost",
        vcx.export,
        None,
        false,
    );
    if header.csv {
        let mut text = String::from("stage,generation,cost,proxy_top1,status,proxy_run,arch\n");
        for r in rows {
            text.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                r.stage,
                r.generation,
                r.cost,
                r.proxy_accuracy.map_or(String::new(), |a| a.to_string()),
                r.status,
                r.proxy_run.map_or(String::new(), |p| p.to_string()),
                csv_field(&r.arch)
            ));
        }
        vcx.export.request(ExportRequest::Csv {
            name: id.clone(),
            text,
        });
    }
    // A pruned proxy's score is from before its stop: shown, never on the front.
    let pruned = |r: &&NasCandidateRow| r.status == CandidateStatus::Pruned;
    let stage2: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.stage == 2 && !pruned(r))
        .map(|r| (r.cost, r.proxy_accuracy.map_or(f64::NAN, |a| a * 100.0)))
        .collect();
    let front: Vec<[f64; 2]> = pareto_front(&stage2)
        .into_iter()
        .map(|i| [stage2[i].0, stage2[i].1])
        .collect();
    let u_owned = u.to_owned();
    let generations = rows.iter().map(|r| r.generation).max().unwrap_or(0);
    // One series per stage and generation, named as the legend shows it.
    let mut groups: Vec<(String, MarkerShape, egui::Color32, Vec<[f64; 2]>)> = Vec::new();
    for stage in [1, 2] {
        for g in 0..=generations {
            let pts: Vec<[f64; 2]> = rows
                .iter()
                .filter(|r| r.stage == stage && r.generation == g && !pruned(r))
                .filter_map(|r| Some([r.cost, r.proxy_accuracy? * 100.0]))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let (shape, name) = if stage == 1 {
                (MarkerShape::Circle, format!("stage 1 SubNets, gen {g}"))
            } else {
                (MarkerShape::Diamond, format!("stage 2 TargetNets, gen {g}"))
            };
            let c = color(g as usize + if stage == 2 { 4 } else { 0 });
            groups.push((name, shape, c, pts));
        }
    }
    let cut: Vec<[f64; 2]> = rows
        .iter()
        .filter(pruned)
        .filter_map(|r| Some([r.cost, r.proxy_accuracy? * 100.0]))
        .collect();
    if !cut.is_empty() {
        let grey = ui.visuals().weak_text_color();
        groups.push((PRUNED_SERIES.to_owned(), MarkerShape::Cross, grey, cut));
    }
    if groups.is_empty() {
        // No candidate scored yet: say so, not axes around nothing with a negative cost.
        crate::gui::widgets::plot::empty_plot(
            ui,
            "Candidates (the first proxy is training)",
            (height - 90.0).max(200.0),
        );
        return;
    }
    let front_color = ui.visuals().strong_text_color();
    let budget_color = egui::Color32::from_rgb(0xe0, 0x50, 0x5a);
    let mut entries: Vec<(String, egui::Color32)> =
        groups.iter().map(|g| (g.0.clone(), g.2)).collect();
    entries.push(("Pareto front (TargetNets)".into(), front_color));
    entries.push(("budget".into(), budget_color));
    let hidden = crate::gui::widgets::plot::hidden_curves(ui.ctx(), &id);
    let shown = crate::gui::widgets::plot::readable_ticks(
        Plot::new(&id),
        ui.ctx(),
        &id,
        [true, true],
        1.0,
        " %",
    )
    .height((height - 90.0).max(200.0))
    .x_axis_label(format!("cost, {u}"))
    .y_axis_label("proxy top-1 %")
    .label_formatter(move |pos| {
        let p = hover_point(pos);
        Some(format!("{:.4} {u_owned}\n{:.2} %", p.x, p.y))
    })
    .show(ui, |p| {
        for (name, shape, c, pts) in groups.into_iter().filter(|g| !hidden.contains(&g.0)) {
            p.points(Points::new(name, pts).shape(shape).radius(5.0).color(c));
        }
        if front.len() > 1 && !hidden.contains("Pareto front (TargetNets)") {
            p.line(Line::new("Pareto front (TargetNets)", front).color(front_color));
        }
        if budget.is_finite() && !hidden.contains("budget") {
            p.vline(VLine::new("budget", budget).color(budget_color));
        }
    });
    crate::gui::widgets::plot::remember_transform(ui.ctx(), &id, shown.transform);
    crate::gui::widgets::plot::legend_row(ui, &id, &entries);
    vcx.export
        .capture_if_requested(ui.ctx(), &id, header.region(ui));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_per_stage() {
        let s = arch_summary(&NasArch::mbv2_tiny());
        assert!(s.starts_with("k33 e66 w1 | k333 e666 w1"), "{s}");
        assert_eq!(s.matches('|').count(), 4);
    }
}
