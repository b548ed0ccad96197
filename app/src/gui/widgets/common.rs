//! Small widgets more than one view shows.

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
