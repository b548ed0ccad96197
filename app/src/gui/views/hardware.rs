//! Hardware: the current run's cost on the Eyeriss-like accelerator (method.md §7) under either
//! cost model — ShiftAddNAS's simulator (the paper's figures) or the project's own — chosen by a
//! toggle that every energy figure of the app follows; per layer, energy stacked by op kind and
//! memory level; totals of the tiny MF model, the same architecture all-Mult, and the largest
//! augmented model; latency.

use std::collections::BTreeSet;

use egui_plot::{Bar, BarChart, Plot};
use shiftadd_core::hw::{CLOCK_HZ, LayerCost};
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::RunId;

use crate::chart::svg::{Chart, ChartSeries, Mark};
use crate::gui::ctx::ViewCtx;
use crate::gui::data::backend::HwRecords;
use crate::gui::widgets::export::ExportRequest;
use crate::gui::widgets::plot::{hover_point, plot_header};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    #[default]
    Tiny,
    TinyMult,
    Augmented,
}

impl Model {
    const ALL: [Self; 3] = [Self::Tiny, Self::TinyMult, Self::Augmented];

    fn key(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::TinyMult => "tiny-mult",
            Self::Augmented => "augmented",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Tiny => "tiny (MF)",
            Self::TinyMult => "tiny, all Mult",
            Self::Augmented => "largest augmented",
        }
    }
}

#[derive(Default)]
pub struct HardwareView {
    pub model: Model,
    /// How the next integer program is made (the deployment card's options).
    /// Signed powers of two of the MF layers' BN multipliers (0: a multiplier).
    pub deploy_shifts: u32,
    pub deploy_8bit: bool,
    /// The run whose integer program last set those options: a run's card opens showing how its
    /// program was made, and the user's changes stand until another run is shown.
    deploy_options_of: Option<RunId>,
}

/// Totals of one model from its per-layer rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub macs: i64,
    /// Energy of the MACs.
    pub compute_mj: f64,
    /// BN, activation and residual-add operations.
    pub other_mj: f64,
    pub memory_mj: f64,
    pub latency_ms: f64,
}

impl Totals {
    pub fn energy_mj(&self) -> f64 {
        self.compute_mj + self.other_mj + self.memory_mj
    }

    pub fn of(layers: &[LayerCost]) -> Self {
        let mut t = Self::default();
        let mut cycles = 0.0;
        for l in layers {
            t.macs += l.macs;
            t.compute_mj += l.compute_pj * 1e-9;
            t.other_mj += l.other_pj * 1e-9;
            t.memory_mj += l.memory.total() * 1e-9;
            cycles += l.cycles;
        }
        t.latency_ms = cycles / CLOCK_HZ * 1e3;
        t
    }
}

/// The parsed records of `model` under cost model `hw` (`None` when the run has none).
fn model_of(models: &[HwRecords], hw: HwModel, model: Model) -> Option<&HwRecords> {
    models
        .iter()
        .find(|m| m.key == model.key() && m.hw_model == hw.as_str())
}

/// Energy segments per layer (µJ), in stacking order: compute of each op kind, other ops,
/// then the memory levels.
pub fn segments(layers: &[LayerCost]) -> Vec<(&'static str, Vec<f64>)> {
    let uj = 1e-6;
    let compute = |op: &str| -> Vec<f64> {
        layers
            .iter()
            .map(|l| if l.op == op { l.compute_pj * uj } else { 0.0 })
            .collect()
    };
    vec![
        ("compute: Mult", compute("mult")),
        ("compute: Shift", compute("shift")),
        ("compute: Add", compute("add")),
        (
            "BN / ReLU / residual",
            layers.iter().map(|l| l.other_pj * uj).collect(),
        ),
        ("DRAM", layers.iter().map(|l| l.memory.dram * uj).collect()),
        (
            "global buffer",
            layers.iter().map(|l| l.memory.gb * uj).collect(),
        ),
        ("NoC", layers.iter().map(|l| l.memory.noc * uj).collect()),
        ("RF", layers.iter().map(|l| l.memory.rf * uj).collect()),
    ]
}

const SEGMENT_COLORS: [egui::Color32; 8] = [
    egui::Color32::from_rgb(0xe0, 0x50, 0x5a),
    egui::Color32::from_rgb(0x4e, 0x9a, 0xf0),
    egui::Color32::from_rgb(0x5c, 0xc0, 0x6c),
    egui::Color32::from_rgb(0xa8, 0x7c, 0xe0),
    egui::Color32::from_rgb(0x70, 0x60, 0x50),
    egui::Color32::from_rgb(0xc0, 0x9a, 0x6a),
    egui::Color32::from_rgb(0xd0, 0xc8, 0x40),
    egui::Color32::from_rgb(0x40, 0xc8, 0xd0),
];

impl HardwareView {
    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        let Some(run) = vcx.current else {
            ui.label("Select a run in the list to see its hardware cost.");
            return;
        };
        let Some(details) = vcx.data.data.get(&run).and_then(|d| d.details.as_ref()) else {
            ui.spinner();
            return;
        };
        if details.hw.is_empty() {
            ui.label(format!(
                "Run #{run} has no hardware-cost records, and its config cannot be read to price it."
            ));
            return;
        }
        let hw = *vcx.hw_model;
        ui.heading(format!("Hardware cost · run #{run} · {}", hw.title()));
        crate::gui::widgets::common::hw_model_toggle(ui, vcx.hw_model);
        if details.hw_priced {
            ui.weak(
                "Priced from the run's config: this database holds no cost records of it \
                 (a compacted results database leaves them out).",
            );
        }
        if !details.hw.iter().any(|m| m.hw_model == hw.as_str()) {
            ui.label(format!(
                "Run #{run} was recorded before the {} existed: its costs are under the other \
                 model only. `shiftadd hw` on its config prices it under both.",
                hw.title()
            ));
            return;
        }
        totals_ui(ui, &details.hw, hw);
        ui.separator();
        self.deploy_ui(ui, vcx, run);
        ui.separator();
        self.per_layer_ui(ui, vcx, run, hw);
    }

    /// The deployment card: the run as an integer program (`shiftadd export RUN --int`) — its
    /// accuracy beside the float model's, the multiplications left by layer, flash and SRAM —
    /// or the button that makes it.
    fn deploy_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, run: RunId) {
        let running = vcx
            .searches
            .deploys
            .get(&run)
            .filter(|j| j.running())
            .map(|j| j.last.clone());
        let failed = vcx
            .searches
            .deploys
            .get(&run)
            .and_then(|j| j.outcome.as_ref())
            .and_then(|o| o.as_ref().err().cloned());
        if self.deploy_options_of != Some(run)
            && let Some(r) = vcx.searches.report(run)
        {
            self.deploy_shifts = r.bn_shifts;
            self.deploy_8bit = r.act_bits <= 8;
            self.deploy_options_of = Some(run);
        }
        ui.horizontal(|ui| {
            ui.strong("Deployment without multipliers");
            if let Some(last) = &running {
                ui.spinner();
                ui.label(format!("making the integer program: {last}"));
                return;
            }
            let made = vcx.searches.report(run).is_some();
            let label = if made { "Make again" } else { "Make the integer program" };
            if ui
                .button(label)
                .on_hover_text(
                    "as `shiftadd export RUN --int`: integer activations, Shift layers as shifts, \
                     Add layers as integer |x − w| sums, int8 stem and classifier; evaluated \
                     against the float model on the whole test split (a minute or so); written \
                     with its C to exports/ beside the database",
                )
                .clicked()
                && let Err(e) = vcx.searches.start_deploy(
                    run,
                    shiftadd_core::deploy::IntOptions {
                        act_bits: if self.deploy_8bit { 8 } else { 16 },
                        bn_shifts: self.deploy_shifts,
                        ..shiftadd_core::deploy::IntOptions::default()
                    },
                )
            {
                vcx.searches.reports.insert(run, None);
                ui.colored_label(ui.visuals().error_fg_color, e.to_string());
            }
            let shifts = |n: u32| match n {
                0 => "BN: multiply".to_owned(),
                1 => "BN: 1 shift".to_owned(),
                n => format!("BN: {n} shifts"),
            };
            egui::ComboBox::from_id_salt("deploy-shifts")
                .selected_text(shifts(self.deploy_shifts))
                .show_ui(ui, |ui| {
                    for n in 0..=3 {
                        ui.selectable_value(&mut self.deploy_shifts, n, shifts(n));
                    }
                })
                .response
                .on_hover_text(
                    "how MF layers requantise: a multiply per output, or the BN multiplier rounded to \
                     1–3 signed powers of two (shifts and additions, no multiplication left at all)",
                );
            ui.checkbox(&mut self.deploy_8bit, "8-bit activations");
        });
        if let Some(e) = failed {
            crate::gui::widgets::markdown::label(ui, &e, Some(ui.visuals().warn_fg_color));
        }
        let dir = vcx.searches.deploy_dir(run);
        match vcx.searches.report(run) {
            Some(r) => deploy_card(ui, run, r, &dir),
            None if running.is_none() => {
                ui.weak("No integer program of this run yet (it needs the run's checkpoint).");
            }
            None => {}
        }
    }

    /// The per-layer energy chart of the chosen model (and its CSV / PNG export).
    fn per_layer_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>, run: RunId, hw: HwModel) {
        let Some(details) = vcx.data.data.get(&run).and_then(|d| d.details.as_ref()) else {
            return;
        };
        ui.horizontal(|ui| {
            ui.label("Per layer:");
            for m in Model::ALL {
                ui.radio_value(&mut self.model, m, m.title());
            }
        });
        let layers: &[LayerCost] = model_of(&details.hw, hw, self.model).map_or(&[], |m| &m.layers);
        if layers.is_empty() {
            crate::gui::widgets::plot::empty_plot(
                ui,
                &format!("Energy per layer of the {}", self.model.title()),
                (ui.available_height() - 30.0).max(200.0),
            );
            return;
        }
        let id = format!("run{run}-hw-{}-{}", hw.as_str(), self.model.key());
        let header = plot_header(
            ui,
            &id,
            &format!(
                "Energy per layer (µJ), {}, stacked by op kind and memory level",
                hw.title()
            ),
            vcx.export,
            None,
            true,
        );
        let segs = segments(layers);
        if header.csv {
            vcx.export.request(ExportRequest::Csv {
                name: id.clone(),
                text: segments_csv(layers, &segs),
            });
        }
        let hover: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| layer_text(&format!("{} ({})", l.name, l.op), i, &segs))
            .collect();
        let entries: Vec<(String, egui::Color32)> = segs
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.iter().any(|x| *x != 0.0))
            .map(|(k, (name, _))| ((*name).to_owned(), SEGMENT_COLORS[k]))
            .collect();
        let hidden = crate::gui::widgets::plot::hidden_curves(ui.ctx(), &id);
        // Energy from 0 (a margin below would read as negative energy) to the tallest stack.
        let top = (0..layers.len())
            .map(|i| {
                segs.iter()
                    .filter(|(name, _)| !hidden.contains(*name))
                    .map(|(_, v)| v[i].max(0.0))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        let shown = Plot::new(&id)
            .default_y_bounds(0.0, if top > 0.0 { top * 1.08 } else { 1.0 })
            .default_x_bounds(-0.6, layers.len() as f64 - 0.4)
            .y_grid_spacer(|g| crate::gui::widgets::plot::nice_grid(&g, 28.0))
            .y_axis_formatter(crate::gui::widgets::plot::logged(
                ui.ctx(),
                &id,
                1,
                true,
                |m, _| crate::chart::format::format_num(m.value, m.step_size),
            ))
            .height((ui.available_height() - 30.0).max(200.0))
            .x_axis_label("layer")
            .y_axis_label("µJ")
            .label_formatter(move |pos| layer_hover(&hover, hover_point(pos).x))
            .show(ui, |p| {
                let mut charts: Vec<BarChart> = Vec::new();
                for (k, (name, values)) in segs.iter().enumerate() {
                    if values.iter().all(|v| *v == 0.0) || hidden.contains(*name) {
                        continue;
                    }
                    let bars = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| Bar::new(i as f64, *v).width(0.8))
                        .collect();
                    let below: Vec<&BarChart> = charts.iter().collect();
                    let chart = BarChart::new(*name, bars)
                        .color(SEGMENT_COLORS[k])
                        .stack_on(&below);
                    charts.push(chart);
                }
                for c in charts {
                    p.bar_chart(c);
                }
            });
        crate::gui::widgets::plot::legend_row(ui, &id, &entries);
        if header.wants_vector() {
            let series = stacked_series(layers.len(), &segs, &hidden);
            let b = shown.transform.bounds();
            let f = |v: f64, s: f64| crate::chart::format::format_num(v, s);
            let chart = Chart {
                title: format!("Energy per layer (µJ), {}", hw.title()),
                x_label: "layer".into(),
                y_label: "µJ".into(),
                bounds: [b.min(), b.max()],
                series,
                x_fmt: &f,
                y_fmt: &f,
                x_categories: Vec::new(),
            };
            header.vector_export(vcx.export, &id, chart.render());
        }
        vcx.export
            .capture_if_requested(ui.ctx(), &id, header.region(ui));
    }
}

/// What a layer's bar holds: its total and each segment that is not zero (µJ).
fn layer_text(name: &str, i: usize, segs: &[(&str, Vec<f64>)]) -> String {
    let total: f64 = segs.iter().map(|(_, v)| v[i]).sum();
    let mut text = format!("{name}\n{total:.3} µJ");
    for (seg, v) in segs.iter().filter(|(_, v)| v[i] != 0.0) {
        text.push_str(&format!("\n  {seg}: {:.3}", v[i]));
    }
    text
}

/// The hover of the bar nearest `x` (the bars stand at 0, 1, …): the layer's figures, never the
/// pointer's height.
fn layer_hover(texts: &[String], x: f64) -> Option<String> {
    let i = x.round();
    (i >= 0.0).then(|| texts.get(i as usize)).flatten().cloned()
}

/// One line per layer: its name, op and each segment's energy (µJ).
fn segments_csv(layers: &[LayerCost], segs: &[(&str, Vec<f64>)]) -> String {
    let mut text = String::from("layer,name,op");
    for (s, _) in segs {
        text.push_str(&format!(",{s} uJ"));
    }
    text.push('\n');
    for (i, l) in layers.iter().enumerate() {
        text.push_str(&format!("{i},{},{}", l.name, l.op));
        for (_, v) in segs {
            text.push_str(&format!(",{}", v[i]));
        }
        text.push('\n');
    }
    text
}

/// The segments not `hidden` as the SVG draws a stack: each segment as the running total from
/// the top one down, so that the lower segments cover the upper ones' bases.
fn stacked_series(
    n: usize,
    segs: &[(&str, Vec<f64>)],
    hidden: &BTreeSet<String>,
) -> Vec<ChartSeries> {
    let mut totals = vec![0.0; n];
    let mut series = Vec::new();
    for (k, (name, values)) in segs.iter().enumerate() {
        if values.iter().all(|v| *v == 0.0) || hidden.contains(*name) {
            continue;
        }
        for (t, v) in totals.iter_mut().zip(values) {
            *t += v;
        }
        series.push(ChartSeries {
            name: (*name).to_owned(),
            color: SEGMENT_COLORS[k],
            mark: Mark::Bars(0.8),
            points: totals
                .iter()
                .enumerate()
                .map(|(i, t)| [i as f64, *t])
                .collect(),
        });
    }
    series.reverse();
    series
}

/// The totals of the run's three models under cost model `hw`.
fn totals_ui(ui: &mut egui::Ui, records: &[HwRecords], hw: HwModel) {
    egui::Grid::new("hw-totals").striped(true).show(ui, |ui| {
        for h in [
            "Model",
            "MACs",
            "MAC energy mJ",
            "BN/ReLU/residual mJ",
            "Memory mJ",
            "Energy mJ",
            "Latency ms",
            "× tiny energy",
        ] {
            ui.strong(h);
        }
        ui.end_row();
        let tiny =
            model_of(records, hw, Model::Tiny).map_or(0.0, |m| Totals::of(&m.layers).energy_mj());
        for m in Model::ALL {
            let Some(rec) = model_of(records, hw, m) else {
                continue;
            };
            let bad = rec.unreadable;
            let t = Totals::of(&rec.layers);
            ui.label(m.title());
            ui.label(format!("{:.2} M", t.macs as f64 / 1e6));
            ui.label(format!("{:.4}", t.compute_mj));
            if hw == HwModel::Shiftaddnas {
                ui.weak("not charged")
                    .on_hover_text("the simulator prices convolutions and FC layers only");
            } else {
                ui.label(format!("{:.4}", t.other_mj));
            }
            ui.label(format!("{:.4}", t.memory_mj));
            ui.label(format!("{:.4}", t.energy_mj()));
            ui.label(format!("{:.3}", t.latency_ms));
            ui.label(if tiny > 0.0 {
                format!("{:.2}", t.energy_mj() / tiny)
            } else {
                "–".into()
            });
            if bad > 0 {
                ui.colored_label(ui.visuals().warn_fg_color, format!("{bad} rows unreadable"));
            }
            ui.end_row();
        }
    });
}

/// What an integer program of the run gave: accuracy and agreement, multiplications left by
/// layer (a chart), flash and SRAM.
fn deploy_card(
    ui: &mut egui::Ui,
    run: RunId,
    r: &shiftadd_core::deploy::IntReport,
    dir: &std::path::Path,
) {
    let t = &r.test;
    let c = &r.costs;
    ui.label(format!(
        "integer {:.2} % vs float {:.2} % top-1 · the same class on {:.2} % of {} test images · {}-bit activations{}",
        t.int_top1 * 100.0,
        t.float_top1 * 100.0,
        t.agreement * 100.0,
        t.images,
        r.act_bits,
        match r.bn_shifts {
            0 => String::new(),
            1 => ", BN as 1 shift".to_owned(),
            n => format!(", BN as {n} shifts"),
        }
    ));
    let packed: u64 = c.layers.iter().map(|l| l.packed_weight_bits).sum();
    ui.label(format!(
        "multiplications left in MF layers: {}{} · flash {:.1} KiB (weights packed {:.1} KiB) · peak SRAM {:.1} KiB",
        c.mf_multiplies,
        if c.mf_multiplies > 0 { " (their BN requantisation)" } else { "" },
        c.flash_bytes as f64 / 1024.0,
        packed as f64 / 8.0 / 1024.0,
        c.peak_sram_bytes as f64 / 1024.0
    ));
    if !r.energy.is_empty() {
        let each: Vec<String> = r
            .energy
            .iter()
            .map(|e| {
                format!(
                    "{}: {:.2} µJ (compute {:.2}, {}-bit data {:.2}; the float model {:.2})",
                    e.model.title(),
                    e.energy_mj * 1e3,
                    e.compute_mj * 1e3,
                    e.word_bits,
                    e.memory_mj * 1e3,
                    e.float_energy_mj * 1e3
                )
            })
            .collect();
        ui.label(format!("energy per image · {}", each.join(" · ")));
    }
    let id = format!("run{run}-deploy-mul");
    let layers: Vec<_> = c.layers.iter().filter(|l| l.kind != "argmax").collect();
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let top = layers.iter().map(|l| l.ops.mul).max().unwrap_or(0) as f64;
    let mf_color = egui::Color32::from_rgb(0x4e, 0x9a, 0xf0);
    let other = ui.visuals().weak_text_color();
    let bars = |mf: bool| -> Vec<Bar> {
        layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.mf == mf)
            .map(|(i, l)| {
                Bar::new(i as f64, l.ops.mul as f64)
                    .name(&l.name)
                    .width(0.7)
            })
            .collect()
    };
    let hover_lines: Vec<String> = layers
        .iter()
        .map(|l| format!("{} ({}): {} multiplications", l.name, l.kind, l.ops.mul))
        .collect();
    Plot::new(&id)
        .height(130.0)
        .default_y_bounds(0.0, if top > 0.0 { top * 1.1 } else { 1.0 })
        .default_x_bounds(-0.6, layers.len() as f64 - 0.4)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .y_axis_label("multiplications")
        // Every layer named: one mark per bar, names on alternate lines, each given two bars'
        // width (egui_plot drops a label wider than its mark's spacing).
        .x_grid_spacer(|g| crate::gui::widgets::plot::slot_marks(&g, 2.0))
        .custom_x_axes(vec![
            egui_plot::AxisHints::new_x()
                .label_spacing(10.0..=20.0)
                .formatter(crate::gui::widgets::plot::logged(
                    ui.ctx(),
                    &id,
                    0,
                    false,
                    move |m, _| {
                        let i = m.value.round();
                        if (m.value - i).abs() > 1e-6 || i < 0.0 {
                            return String::new();
                        }
                        names
                            .get(i as usize)
                            .map(|n| crate::gui::widgets::plot::staggered(i as usize, n))
                            .unwrap_or_default()
                    },
                )),
        ])
        .y_axis_formatter(crate::gui::widgets::plot::logged(
            ui.ctx(),
            &id,
            1,
            true,
            |m, _| crate::chart::format::format_num(m.value, m.step_size),
        ))
        .label_formatter(move |pos| {
            let i = hover_point(pos).x.round();
            (i >= 0.0)
                .then(|| hover_lines.get(i as usize).cloned())
                .flatten()
        })
        .show(ui, |p| {
            p.bar_chart(BarChart::new("MF layers", bars(true)).color(mf_color));
            p.bar_chart(BarChart::new("stem, pool, classifier", bars(false)).color(other));
        });
    ui.weak(format!(
        "Blue: MF layers (their multiplications are the per-channel BN requantisation; none with BN as shifts); grey: the int8 stem and classifier and the pool. Files: {}",
        dir.display()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-layer chart's hover showed the pointer's height ("54.462 µJ" over a 44 µJ bar);
    /// it shows the layer's total and its segments, whatever the pointer's height.
    #[test]
    fn a_layers_hover_is_its_total_and_segments() {
        let segs: Vec<(&str, Vec<f64>)> =
            vec![("compute", vec![1.0, 4.0]), ("DRAM", vec![0.0, 40.0])];
        let texts: Vec<String> = (0..2)
            .map(|i| layer_text(&format!("l{i}"), i, &segs))
            .collect();
        assert_eq!(texts[1], "l1\n44.000 µJ\n  compute: 4.000\n  DRAM: 40.000");
        assert_eq!(texts[0], "l0\n1.000 µJ\n  compute: 1.000");
        assert_eq!(layer_hover(&texts, 1.3).as_deref(), Some(texts[1].as_str()));
        assert_eq!(layer_hover(&texts, -0.7), None);
        assert_eq!(layer_hover(&texts, 2.0), None);
    }
}
