//! The Compare view: the config diff, groups as bands, SVG export.

use super::*;

#[test]
fn selecting_two_runs_shows_their_config_diff() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#2"));
    h.get_by_label("#1").click();
    h.step();
    h.get_by_label("#2").click();
    h.step();
    assert_eq!(h.state().persisted().compare, vec![1, 2]);
    click(h, "Compare 2");
    wait_for(h, "the config diff", |h| {
        has_label(h, "Config diff (1 keys differ)")
    });
    assert!(has_label(h, "train.lr"), "the differing key is listed");
    assert!(
        has_label(h, "0.1") && has_label(h, "0.05"),
        "with each run's value"
    );
    assert!(!has_label(h, "train.epochs"), "equal keys are not listed");
    assert_eq!(h.state().persisted().compare, vec![1, 2]);
}

#[test]
fn compare_group_by_draws_one_band_per_group() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let persisted = Persisted {
        view: View::Compare,
        compare: vec![1, 2],
        compare_settings: shiftadd_app::gui::settings::CompareSettings {
            group_by: "train.lr".into(),
            ..Default::default()
        },
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    // alpha (lr 0.1) and beta (lr 0.05): two groups of one run each.
    wait_for(h, "the grouped plots", |h| {
        has_label(h, "val/top1 grouped by train.lr: mean ± std (2 groups)")
    });
    assert!(has_label(
        h,
        "train/loss grouped by train.lr: mean ± std (2 groups)"
    ));
    // The groups as the plot names them, once both runs' series have loaded (the titles can
    // come first on a loaded machine).
    wait_for(h, "both runs' series", |h| {
        shiftadd_app::gui::views::compare::groups_of(
            h.state().data_cache(),
            &[1, 2],
            "train.lr",
            "val/top1",
        )
        .iter()
        .all(|g| g.name.ends_with("(n = 1)"))
    });
    let data = h.state().data_cache();
    let groups =
        shiftadd_app::gui::views::compare::groups_of(data, &[1, 2], "train.lr", "val/top1");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["train.lr = 0.05 (n = 1)", "train.lr = 0.1 (n = 1)"]);
    assert!(
        groups.iter().all(|g| g.band.len() == 3),
        "3 epochs of val/top1 each"
    );
}

#[test]
fn svg_export_of_a_compare_plot_has_axes_and_the_run_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let persisted = Persisted {
        view: View::Compare,
        compare: vec![1, 2],
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "both runs' curves", |h| {
        h.state()
            .data()
            .data
            .get(&2)
            .is_some_and(|d| !d.series.is_empty())
    });
    for _ in 0..5 {
        h.step();
    }
    let (svg, texts) = export_svg(h);
    let doc = roxmltree::Document::parse(&svg).expect("xml");
    assert_eq!(
        doc.root_element().tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert!(texts.iter().any(|t| t.contains("alpha")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("beta")), "{texts:?}");
    assert!(
        texts.iter().any(|t| t == "step"),
        "the x axis is labelled: {texts:?}"
    );
    assert!(texts.len() >= 8, "tick labels: {texts:?}");
    assert!(
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count()
            >= 2,
        "a line per run"
    );
}

/// Issue 45: Compare's tables lost their right columns off screen, and scrolling to them took
/// the run names away too. Scrolled sideways to the last column, each table keeps its first
/// column (the run, the key) where it was.
#[test]
fn compare_tables_keep_their_first_column_when_scrolled_sideways() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let persisted = Persisted {
        view: View::Compare,
        compare: vec![1, 2],
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "the tables", |h| {
        has_label(h, "img/s") && has_label(h, "Config diff (1 keys differ)")
    });
    let left = |h: &Harness<'static, StudioApp>, label: &str| h.get_by_label(label).rect().left();
    let (run, key, status) = (left(h, "Run"), left(h, "key"), left(h, "Val best top-1 %"));
    h.get_by_label("img/s").scroll_to_me();
    for _ in 0..5 {
        h.step();
    }
    assert!(
        left(h, "Val best top-1 %") < status - 20.0,
        "the other columns scrolled"
    );
    assert_eq!(left(h, "Run"), run, "the run column stays");
    assert_eq!(left(h, "key"), key, "the key column stays");
}
