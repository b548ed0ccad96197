//! Small widgets more than one view shows: the cost-model toggle, and a grid whose first column
//! stays while the others scroll sideways.

use shiftadd_core::spec::config::HwModel;

/// The toggle between the two cost models (shared by every energy figure of the app).
pub fn hw_model_toggle(ui: &mut egui::Ui, hw: &mut HwModel) {
    ui.horizontal_wrapped(|ui| {
        ui.label("Cost model:");
        ui.selectable_value(hw, HwModel::Shiftaddnas, HwModel::Shiftaddnas.title())
            .on_hover_text(
                "ShiftAddNAS's simulator (hw_utils.py), as the paper's energy figures use it: \
                 Add layers' DRAM/buffer/NoC traffic is free, Shift layers move 10-bit words",
            );
        ui.selectable_value(hw, HwModel::Project, HwModel::Project.title())
            .on_hover_text(
                "the project's own Eyeriss-like model: the same data movement for every operator",
            );
    });
}

/// A grid whose first column stays in place while the others scroll sideways (their scroll bar
/// always shown where they do not fit, so that a cut is seen). Row 0 is the header; `first`
/// draws a row's first cell, `rest` the others. Every cell is one line: both halves keep the same
/// row height, so that rows stay level.
pub fn frozen_grid(
    ui: &mut egui::Ui,
    id: &str,
    rows: usize,
    mut first: impl FnMut(&mut egui::Ui, usize),
    mut rest: impl FnMut(&mut egui::Ui, usize),
) {
    let h = ui.spacing().interact_size.y;
    ui.horizontal_top(|ui| {
        egui::Grid::new((id, "first"))
            .striped(true)
            .min_row_height(h)
            .show(ui, |ui| {
                for r in 0..rows {
                    first(ui, r);
                    ui.end_row();
                }
            });
        egui::ScrollArea::horizontal()
            .id_salt((id, "rest"))
            .scroll_bar_visibility(egui::scroll_area::ScrollBarVisibility::AlwaysVisible)
            .show(ui, |ui| {
                egui::Grid::new((id, "rest"))
                    .striped(true)
                    .min_row_height(h)
                    .show(ui, |ui| {
                        for r in 0..rows {
                            rest(ui, r);
                            ui.end_row();
                        }
                    });
            });
    });
}
