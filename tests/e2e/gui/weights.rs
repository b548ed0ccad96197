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

/// Issue 45: a PNG was a crop of the screen with the export buttons in it, named by an internal
/// id and a timestamp. A plot with a figure is drawn off screen from its SVG, at the width and
/// scale chosen in the Save dialog, and named after the run and the plot.
#[test]
fn a_png_is_the_figure_drawn_off_screen_at_the_size_asked_for() {
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
    wait_for(h, "the histogram", |h| {
        has_label_containing(h, "out of range 21 below")
    });
    // The histogram's PNG button: the first on the view (the heat map's comes after).
    h.query_all_by_label("PNG").next().expect("PNG").click();
    h.step();
    wait_for(h, "the Save dialog", |h| has_label(h, "Save"));
    assert!(has_label(h, "Export Stored vs remapped weights as PNG"));
    assert!(has_label(h, "Width") && has_label(h, "Scale"));
    click(h, "1×");
    assert!(has_label(h, "760 px wide"), "760 points at 1×");
    click(h, "Save");
    wait_for(h, "the PNG file", |h| {
        !h.state().export().written.is_empty()
    });
    let path = h.state().export().written[0].clone();
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("alpha_Stored-vs-remapped-weights.png"),
        "named after the run and the plot"
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&path).expect("open"),
    ));
    let info = decoder.read_info().expect("a PNG");
    assert_eq!(
        (info.info().width, info.info().height),
        (760, 440),
        "the figure's own size, not the screen's"
    );
}
