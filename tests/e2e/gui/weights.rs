//! The Weights view: the epoch slider and its histogram.

use super::*;

#[test]
fn epoch_slider_changes_the_histogram_shown() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let persisted = Persisted {
        view: View::Weights,
        current: Some(1),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    // Latest epoch first: underflow 21.
    wait_for(h, "the histogram", |h| {
        has_label_containing(h, "out of range 21 below")
    });
    assert!(has_label(h, "blocks.0.pw"), "the MF layer is listed");
    h.get_by_role(egui::accesskit::Role::Slider)
        .decrement_accesskit();
    wait_for(h, "epoch 1", |h| {
        has_label_containing(h, "out of range 11 below")
    });
    assert!(has_label(h, "showing epoch 1"));
    h.get_by_role(egui::accesskit::Role::Slider)
        .decrement_accesskit();
    wait_for(h, "epoch 0", |h| {
        has_label_containing(h, "out of range 1 below")
    });
    assert!(has_label(h, "showing epoch 0 (before training)"));
    // The histogram as SVG: bars of the stored weights, the remapped ones, both named.
    let (svg, texts) = export_svg(h);
    assert!(
        texts.iter().any(|t| t == "stored") && texts.iter().any(|t| t == "remapped"),
        "{texts:?}"
    );
    assert!(svg.matches("<rect").count() > 10, "a bar per bin");
}
