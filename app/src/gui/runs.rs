//! The runs list: a sortable, filterable table of every run in the database. Click a name to
//! make it the current run (Monitor, Weights, Hardware); tick runs to compare them.

use serde::{Deserialize, Serialize};
use shiftadd_core::run::Command;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::{RunId, Status};

use super::backend::RunRow;
use super::ctx::{Persisted, View};
use super::data::DataCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortKey {
    #[default]
    Id,
    Name,
    Status,
    Best,
    Last,
    Test,
    Energy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunsSettings {
    pub filter: String,
    pub sort: SortKey,
    pub descending: bool,
}

impl Default for RunsSettings {
    fn default() -> Self {
        Self {
            filter: String::new(),
            sort: SortKey::Id,
            descending: true,
        }
    }
}

/// Whether `row` matches every word of `filter` (in name, tags, status, dataset, model,
/// operator, hybrid mode or `#id`).
pub fn matches(row: &RunRow, filter: &str) -> bool {
    let s = &row.summary;
    let hay = format!(
        "#{} {} {} {} {} {} {} {}",
        s.id, s.name, s.tags, s.status, s.dataset, s.model, s.operator, row.hybrid
    )
    .to_lowercase();
    filter
        .split_whitespace()
        .all(|w| hay.contains(&w.to_lowercase()))
}

/// The runs that pass the filter, in the chosen order (energy: under cost model `hw`).
pub fn sorted<'a>(rows: &'a [RunRow], settings: &RunsSettings, hw: HwModel) -> Vec<&'a RunRow> {
    let mut v: Vec<&RunRow> = rows
        .iter()
        .filter(|r| matches(r, &settings.filter))
        .collect();
    let num = |x: Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
    v.sort_by(|a, b| {
        let (a, b) = (&a.summary, &b.summary);
        match settings.sort {
            SortKey::Id => a.id.cmp(&b.id),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
            SortKey::Best => num(a.best_val_top1).total_cmp(&num(b.best_val_top1)),
            SortKey::Last => num(a.last_val_top1).total_cmp(&num(b.last_val_top1)),
            SortKey::Test => num(a.test_top1).total_cmp(&num(b.test_top1)),
            SortKey::Energy => {
                num(a.energy_under(hw.as_str())).total_cmp(&num(b.energy_under(hw.as_str())))
            }
        }
        .then(a.id.cmp(&b.id))
    });
    if settings.descending {
        v.reverse();
    }
    v
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.2}", v * 100.0))
}

fn header(ui: &mut egui::Ui, settings: &mut RunsSettings, key: SortKey, title: &str) {
    let arrow = if settings.sort == key {
        if settings.descending {
            " (desc)"
        } else {
            " (asc)"
        }
    } else {
        ""
    };
    if ui
        .add(
            egui::Button::new(egui::RichText::new(format!("{title}{arrow}")).strong()).frame(false),
        )
        .on_hover_text(format!("sort by {}", title.to_lowercase()))
        .clicked()
    {
        if settings.sort == key {
            settings.descending = !settings.descending;
        } else {
            settings.sort = key;
            settings.descending = matches!(
                key,
                SortKey::Best | SortKey::Last | SortKey::Test | SortKey::Id
            );
        }
    }
}

fn status_color(ui: &egui::Ui, status: Status) -> egui::Color32 {
    match status {
        Status::Running => egui::Color32::from_rgb(0x5c, 0xc0, 0x6c),
        Status::Paused | Status::Queued => egui::Color32::from_rgb(0xd0, 0xc8, 0x40),
        Status::Failed => ui.visuals().error_fg_color,
        Status::Interrupted | Status::Stopped => ui.visuals().warn_fg_color,
        Status::Finished => ui.visuals().text_color(),
    }
}

/// The runs panel.
pub fn runs_panel(
    ui: &mut egui::Ui,
    data: &DataCache,
    persisted: &mut Persisted,
    commands: &mut Vec<Command>,
) {
    let Persisted {
        view,
        current,
        compare,
        runs: settings,
        hw_model,
        ..
    } = persisted;
    let hw = *hw_model;
    ui.horizontal(|ui| {
        ui.heading("Runs");
        ui.add(
            egui::TextEdit::singleline(&mut settings.filter)
                .hint_text("filter: name, tag, status, model…")
                .desired_width(220.0),
        )
        .accessible_name("filter runs")
        .on_hover_text("words to match in name, tags, status, dataset, model, operator or #id");
        if !compare.is_empty() && ui.button(format!("Compare {}", compare.len())).clicked() {
            *view = View::Compare;
        }
        if !compare.is_empty()
            && ui
                .small_button("clear")
                .on_hover_text("untick all")
                .clicked()
        {
            compare.clear();
        }
    });
    if !data.runs_loaded {
        ui.spinner();
        return;
    }
    if data.runs.is_empty() {
        ui.label("No runs yet: pick a preset in Launch and press Launch.");
        return;
    }
    let rows = sorted(&data.runs, settings, hw);
    egui::ScrollArea::both()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            egui::Grid::new("runs-table")
                .striped(true)
                .num_columns(12)
                .spacing([10.0, 4.0])
                .show(ui, |ui| {
                    header(ui, settings, SortKey::Id, "Id");
                    header(ui, settings, SortKey::Name, "Name");
                    header(ui, settings, SortKey::Status, "Status");
                    ui.strong("Tags");
                    ui.strong("Data");
                    ui.strong("Model");
                    ui.strong("Op");
                    ui.strong("Hybrid");
                    header(ui, settings, SortKey::Best, "Val best %");
                    header(ui, settings, SortKey::Last, "Val last %");
                    header(ui, settings, SortKey::Test, "Test %");
                    let unit = match hw {
                        HwModel::Shiftaddnas => "mJ (ShiftAddNAS)",
                        HwModel::Project => "mJ (project)",
                    };
                    header(ui, settings, SortKey::Energy, unit);
                    ui.end_row();
                    for row in rows {
                        row_ui(ui, row, data, current, compare, view, commands);
                        ui.label(
                            row.summary
                                .energy_under(hw.as_str())
                                .map_or_else(|| "–".into(), |e| format!("{e:.3}")),
                        )
                        .on_hover_text(format!("tiny model, per inference, {}", hw.title()));
                        ui.end_row();
                    }
                });
        });
}

fn row_ui(
    ui: &mut egui::Ui,
    row: &RunRow,
    data: &DataCache,
    current: &mut Option<RunId>,
    compare: &mut Vec<RunId>,
    view: &mut View,
    commands: &mut Vec<Command>,
) {
    let s = &row.summary;
    let mut ticked = compare.contains(&s.id);
    if ui
        .checkbox(&mut ticked, format!("#{}", s.id))
        .on_hover_text("compare this run")
        .changed()
    {
        if ticked {
            compare.push(s.id);
        } else {
            compare.retain(|r| *r != s.id);
        }
    }
    let selected = *current == Some(s.id);
    let name = ui.selectable_label(selected, &s.name);
    if name.clicked() {
        *current = Some(s.id);
        if matches!(view, View::Launch | View::Compare) {
            *view = View::Monitor;
        }
    }
    name.context_menu(|ui| {
        if data.live.contains_key(&s.id) || s.status == Status::Queued {
            if ui.button("Stop").clicked() {
                commands.push(Command::Stop(s.id));
                ui.close();
            }
        } else if s.status != Status::Finished && ui.button("Resume").clicked() {
            commands.push(Command::Resume {
                run: s.id,
                request: 0,
            });
            ui.close();
        }
    });
    let status = ui.colored_label(status_color(ui, s.status), s.status.as_str());
    if let Some(reason) = &s.reason {
        status.on_hover_text(reason);
    }
    ui.label(&s.tags);
    ui.label(&s.dataset);
    ui.label(&s.model);
    ui.label(&s.operator);
    ui.label(&row.hybrid);
    ui.label(pct(s.best_val_top1));
    ui.label(pct(s.last_val_top1));
    ui.label(pct(s.test_top1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftadd_core::store::RunSummary;

    fn row(id: RunId, name: &str, best: Option<f64>) -> RunRow {
        RunRow {
            summary: RunSummary {
                id,
                name: name.into(),
                status: Status::Finished,
                reason: None,
                dataset: "synthetic".into(),
                model: "micro".into(),
                operator: "add".into(),
                seed: 0,
                tags: "ablation".into(),
                created_at: 0.0,
                finished_at: None,
                epochs_done: None,
                last_val_top1: best,
                best_val_top1: best,
                test_top1: best,
                energy_mj: None,
                energy_shiftaddnas_mj: None,
                energy_project_mj: None,
                uid: format!("uid-{id}"),
            },
            hybrid: "mult".into(),
        }
    }

    #[test]
    fn filter_and_sort() {
        let rows = vec![
            row(1, "a", Some(0.5)),
            row(2, "b", None),
            row(3, "c", Some(0.7)),
        ];
        let mut s = RunsSettings {
            sort: SortKey::Best,
            descending: true,
            ..RunsSettings::default()
        };
        let ids: Vec<RunId> = sorted(&rows, &s, HwModel::Shiftaddnas)
            .iter()
            .map(|r| r.summary.id)
            .collect();
        assert_eq!(
            ids,
            vec![3, 1, 2],
            "missing values sort last when descending"
        );
        s.filter = "ABLATION #2".into();
        let ids: Vec<RunId> = sorted(&rows, &s, HwModel::Shiftaddnas)
            .iter()
            .map(|r| r.summary.id)
            .collect();
        assert_eq!(ids, vec![2]);
    }
}
