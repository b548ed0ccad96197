//! The Monitor view: live validation points, Stop, the plots' axes.

use super::*;

/// A run trained by another process records an epoch's validation at the step of the epoch's last
/// batch, seconds after that batch's own rows: the app, polling in between, still shows it (it
/// once fetched only steps after the last one it held, and lost every live validation point).
#[test]
fn a_live_runs_validation_written_after_its_last_batch_still_shows() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("live.db");
    let w = Writer::open(&db).expect("db");
    let run = w
        .create_run(crate::support::synthetic_run("elsewhere", "add"))
        .expect("run");
    w.status(run, Status::Running, None);
    let loss_rows = |steps: std::ops::RangeInclusive<i64>| -> Vec<MetricRow> {
        steps
            .map(|s| metric_row(run, keys::TRAIN_LOSS, s, 1.0 / s as f64))
            .collect()
    };
    w.send(WriteOp::Metrics(loss_rows(1..=10)))
        .expect("metrics");
    w.flush().expect("flush");
    let persisted = Persisted {
        view: View::Monitor,
        current: Some(run),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    let series = |h: &Harness<'static, StudioApp>, key: &str| -> Vec<f64> {
        h.state()
            .data()
            .data
            .get(&run)
            .and_then(|d| d.series.get(key))
            .map(|s| s.xs.clone())
            .unwrap_or_default()
    };
    wait_for(h, "the training rows", |h| {
        series(h, keys::TRAIN_LOSS).last() == Some(&10.0)
    });
    // The epoch's validation at step 10, then the next epoch's first batches.
    w.send(WriteOp::Metrics(vec![metric_row(
        run,
        keys::VAL_TOP1,
        10,
        0.5,
    )]))
    .expect("val");
    w.flush().expect("flush");
    wait_for(h, "the validation point at the held step", |h| {
        series(h, keys::VAL_TOP1) == [10.0]
    });
    w.send(WriteOp::Metrics(loss_rows(11..=12)))
        .expect("metrics");
    w.flush().expect("flush");
    wait_for(h, "the next batches", |h| {
        series(h, keys::TRAIN_LOSS).last() == Some(&12.0)
    });
    let held: Vec<f64> = (1..=12).map(f64::from).collect();
    assert_eq!(
        series(h, keys::TRAIN_LOSS),
        held,
        "each step once, in order: the rows at the held step fetched again are not doubled"
    );
    assert_eq!(series(h, keys::VAL_TOP1), [10.0]);
}

/// The real manager behind the app: Launch trains, Stop stops, and the database agrees.
#[test]
fn the_stop_shortcut_stops_a_real_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("live.db");
    let slot: Arc<OnceLock<egui::Context>> = Arc::new(OnceLock::new());
    let manager = spawn_manager(
        &db,
        shiftadd_app::gui::data::backend::lazy_waker(slot.clone()),
    )
    .expect("manager");
    let (commands, events) = (manager.commands.clone(), manager.events.clone());
    let exit = Arc::new(Mutex::new(None));
    let app_db = db.clone();
    let mut h = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(move |cc| {
            let _ = slot.set(cc.egui_ctx.clone());
            let backend = Backend::new(&app_db, experiments(), commands, events, &cc.egui_ctx)
                .expect("ui-data thread");
            StudioApp::new(backend, Persisted::default(), exit)
        });
    wait_for(&mut h, "presets", |h| has_label(h, "smoke"));
    for (key, value) in [
        ("data.synthetic_train", "2000"),
        ("train.epochs", "50"),
        ("train.threads", "1"),
    ] {
        h.get_by_label(key).set_text_value_accesskit(value);
        h.step();
    }
    h.get_by_label("Launch run").click();
    wait_for(&mut h, "training to start", |h| {
        has_label(h, "Stop") && has_label_containing(h, "step ")
    });
    let run = h
        .state()
        .persisted()
        .current
        .expect("the new run is current");
    // The keyboard: Ctrl+Shift+P pauses, Ctrl+Shift+S stops (the F1 overlay lists them).
    let mods = egui::Modifiers::COMMAND | egui::Modifiers::SHIFT;
    h.key_press_modifiers(mods, egui::Key::P);
    wait_for(&mut h, "the run to pause", |h| {
        has_label_containing(h, "· paused")
    });
    h.key_press_modifiers(mods, egui::Key::S);
    wait_for(&mut h, "the run to stop", |h| {
        has_label(h, "status: stopped")
    });
    let reader = Reader::open(&db).expect("reader");
    assert_eq!(
        reader.run(run).expect("run").status,
        shiftadd_core::store::Status::Stopped
    );
    assert!(h.state().data().live.is_empty());
    drop(h);
    manager.shutdown();
}

#[test]
fn a_plot_switched_to_wall_time_and_log_y_changes_its_axes() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    tracker_runs(&db);
    let persisted = Persisted {
        view: View::Monitor,
        current: Some(1),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    let id = "run1-loss";
    let bounds = |h: &Harness<'static, StudioApp>| {
        shiftadd_app::gui::widgets::plot::plotted_bounds(&h.ctx, id)
    };
    wait_for(h, "the loss plot over steps", |h| {
        bounds(h).is_some_and(|b| b.max()[0] >= 29.0 && b.max()[0] < 100.0)
    });
    let linear = bounds(h).expect("bounds");
    assert!(linear.max()[1] >= 2.0, "loss up to 2: {linear:?}");
    click(h, "axes of Training loss");
    click(h, "wall time (UTC)");
    wait_for(h, "wall-time x", |h| {
        bounds(h).is_some_and(|b| b.min()[0] > 1.7e9 && b.max()[0] < 1.9e9)
    });
    click(h, "axes of Training loss");
    click(h, "log y");
    h.step();
    wait_for(h, "log y", |h| {
        bounds(h).is_some_and(|b| b.max()[1] < 1.0 && b.min()[1] < -0.5)
    });
    let axes = shiftadd_app::gui::widgets::plot::plot_axes(&h.ctx, id);
    assert!(axes.log_y && axes.x == shiftadd_app::chart::series::XAxis::Wall);
}

/// A segmentation run's Monitor shows its first validation images with their true and predicted
/// masks, predicted from its last checkpoint (the epoch it names), its scores as mIoU; ticked with
/// another in Compare, their predictions sit side by side on the same images.
#[test]
fn a_segmentation_runs_masks_show_in_monitor_and_side_by_side_in_compare() {
    let dir = tempfile::tempdir().expect("tmp");
    let items = dir.path().join("fmnist");
    crate::segmentation::fake_fashion_mnist(&items, 600, 100);
    let cfg = crate::segmentation::scenes_config(dir.path(), "seg", &items, 1);
    let db = dir.path().join("seg.db");
    for op in ["mult", "shift"] {
        let set = format!("ops.kind={op}");
        let (c, d) = (crate::support::s(&cfg), crate::support::s(&db));
        crate::support::run_ok(&["train", c, "--db", d, "--set", &set]);
    }
    let persisted = Persisted {
        view: View::Monitor,
        current: Some(1),
        compare: vec![1, 2],
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    let panel = |h: &Harness<'static, StudioApp>, run: shiftadd_core::store::RunId| {
        h.state()
            .data()
            .masks
            .get(&run)
            .and_then(|(_, p)| p.as_ref().ok().cloned())
    };
    wait_for(h, "run 1's masks", |h| panel(h, 1).is_some());
    let p = panel(h, 1).expect("masks");
    assert_eq!(
        (p.len(), p.epoch, p.height),
        (4, 1, 40),
        "4 images at epoch 1"
    );
    assert!(p.predicted.iter().all(|&c| usize::from(c) < p.classes));
    wait_for(h, "the masks drawn", |h| {
        has_label_containing(h, "validation masks of run 1")
            && has_label_containing(h, "image, truth, prediction · epoch 1")
            && has_label_containing(h, "best val mIoU")
    });
    h.get_by_label("Compare").click();
    h.step();
    wait_for(h, "both runs' masks side by side", |h| {
        panel(h, 2).is_some() && has_label_containing(h, "validation masks side by side")
    });
    assert_eq!(
        panel(h, 2).expect("run 2").images,
        p.images,
        "the same images"
    );
    // Saved: a row per image — the image, its truth, each run's prediction — 4 × 4 a pixel.
    let before = h.state().export().written.len();
    click(h, "Save masks PNG…");
    wait_for(h, "the Save dialog", |h| has_label(h, "Save"));
    click(h, "Save");
    wait_for(h, "the PNG", |h| h.state().export().written.len() > before);
    let path = h.state().export().written[before].clone();
    let png = image::open(&path).expect("a PNG").to_rgb8();
    let (tile, gap) = (40 * 4, 2);
    assert_eq!(
        (png.width(), png.height()),
        (gap + 4 * (tile + gap), gap + 4 * (tile + gap)),
        "{}: 4 tiles across (image, truth, two runs), 4 rows",
        path.display()
    );
}
