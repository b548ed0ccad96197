//! The app around the views: read-only databases, closing while training, the Save dialog,
//! what is rendered, a database that cannot be opened.

use super::*;

/// Issue 43, item 5: on a database this user cannot write, the app browses (the runs are listed),
/// shows "read-only", and a launch is refused with the reason instead of failing to open. (That
/// such a file is detected and read without writing is `bad_input.rs`'s, as another user.)
#[test]
fn a_read_only_database_is_browsed_and_a_launch_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut harness = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let waker: shiftadd_core::run::Waker = Arc::new(move || ctx.request_repaint());
            let (commands, events) =
                shiftadd_app::gui::data::backend::read_only_manager(&db, waker).expect("stand-in");
            let mut backend = Backend::new(&db, experiments(), commands, events, &cc.egui_ctx)
                .expect("ui-data thread");
            backend.read_only = true;
            StudioApp::new(backend, Persisted::default(), Arc::new(Mutex::new(None)))
        });
    let h = &mut harness;
    wait_for(h, "the runs list", |h| has_label(h, "#2"));
    assert!(has_label(h, "read-only"), "the top bar says so");
    click(h, "smoke-shift-aug");
    h.get_by_label("Launch run").click();
    wait_for(h, "the refusal", |h| {
        has_label_containing(h, "is read-only here")
    });
}

#[test]
fn closing_while_training_asks_and_records_the_choice() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut f = fake_app(&dir.path().join("new.db"), Persisted::default());
    let h = &mut f.harness;
    let close = |h: &mut Harness<'static, StudioApp>| {
        h.input_mut()
            .viewports
            .entry(egui::ViewportId::ROOT)
            .or_default()
            .events
            .push(egui::ViewportEvent::Close);
        h.step();
        // The harness keeps viewport events until told otherwise.
        if let Some(v) = h.input_mut().viewports.get_mut(&egui::ViewportId::ROOT) {
            v.events.clear();
        }
        h.step();
    };
    // Nothing trains: no question.
    close(h);
    assert!(!has_label(h, "Runs are still training"));
    f.events
        .send(Event::Running {
            run: 7,
            epoch: 0,
            total_epochs: 3,
            step: 0,
            total_steps: 300,
        })
        .expect("event");
    h.step();
    close(h);
    assert!(has_label(h, "Runs are still training"), "the dialog opens");
    click(h, "Cancel");
    wait_for(h, "the dialog to close", |h| {
        !has_label(h, "Runs are still training")
    });
    assert_eq!(*f.exit.lock().expect("lock"), None);
    close(h);
    click(h, "Leave running headless");
    assert_eq!(
        *f.exit.lock().expect("lock"),
        Some(ExitChoice::LeaveRunning)
    );
}

/// After the window closes: "leave running" trains to the end, "stop" stops; nothing is lost.
#[test]
fn window_close_choices_keep_every_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("headless.db");
    let manager = spawn_manager(&db, Arc::new(|| {})).expect("manager");
    let run = start(&manager, &tiny_config(dir.path(), "short", 200, 1));
    finish_headless(manager, &db, Some(ExitChoice::LeaveRunning)).expect("headless");
    let reader = Reader::open(&db).expect("reader");
    assert_eq!(
        reader.run(run).expect("run").status,
        shiftadd_core::store::Status::Finished
    );
    assert!(
        reader
            .metrics(run)
            .expect("metrics")
            .iter()
            .any(|m| m.key == keys::VAL_TOP1)
    );

    let manager = spawn_manager(&db, Arc::new(|| {})).expect("manager");
    let run = start(&manager, &tiny_config(dir.path(), "long", 2000, 50));
    loop {
        if let Ok(Event::Progress { .. }) = manager.events.recv_timeout(Duration::from_secs(120)) {
            break;
        }
    }
    finish_headless(manager, &db, Some(ExitChoice::StopRuns)).expect("stop");
    let reader = Reader::open(&db).expect("reader");
    let summary = reader.run(run).expect("run");
    assert_eq!(summary.status, shiftadd_core::store::Status::Stopped);
    assert!(
        reader
            .metrics(run)
            .expect("metrics")
            .iter()
            .any(|m| m.key == keys::TRAIN_LOSS),
        "metrics recorded before the stop are kept"
    );
}

#[test]
fn the_save_dialog_walks_folders_and_remembers_the_last_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let figs = dir.path().join("figs");
    std::fs::create_dir_all(&figs).expect("mkdir");
    let persisted = Persisted {
        view: View::Compare,
        compare: vec![1, 2],
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    let csv = |h: &mut Harness<'static, StudioApp>| {
        wait_for(h, "a CSV button", |h| has_label(h, "CSV"));
        h.query_all_by_label("CSV").next().expect("CSV").click();
        h.step();
        wait_for(h, "the Save dialog", |h| has_label(h, "Save"));
    };
    csv(h);
    // The first export opens in exports/ beside the database.
    let exports = dir.path().join("exports").display().to_string();
    assert_eq!(h.state().export().dialog_folder(), Some(exports.as_str()));
    click(h, "Up");
    click(h, "figs/");
    assert_eq!(
        h.state().export().dialog_folder(),
        Some(figs.display().to_string().as_str())
    );
    click(h, "Save");
    wait_for(h, "the CSV file", |h| {
        !h.state().export().written.is_empty()
    });
    let written = h.state().export().written[0].clone();
    assert_eq!(written.parent(), Some(figs.as_path()));
    assert!(
        std::fs::read_to_string(&written)
            .expect("read")
            .contains(',')
    );
    assert_eq!(
        h.state().persisted().export_dir.as_deref(),
        Some(figs.as_path())
    );
    // The next export opens where the last one went; Cancel writes nothing.
    csv(h);
    assert_eq!(
        h.state().export().dialog_folder(),
        Some(figs.display().to_string().as_str())
    );
    click(h, "Cancel");
    for _ in 0..5 {
        h.step();
    }
    assert_eq!(h.state().export().dialog_folder(), None);
    assert_eq!(h.state().export().written.len(), 1);
    assert_eq!(std::fs::read_dir(&figs).expect("ls").count(), 1);
}

/// Rows (or columns) of `img` inside `rect` (pixels) holding ink: pixels far from the region's
/// commonest colour (its background). Returns the runs of consecutive inked lines along `axis`
/// (0: columns, 1: rows), each as (start, length), gaps up to `gap` joined.
fn ink_runs(img: &image::RgbaImage, rect: [u32; 4], axis: usize, gap: u32) -> Vec<(u32, u32)> {
    let [x0, y0, x1, y1] = rect;
    let (x1, y1) = (x1.min(img.width()), y1.min(img.height()));
    let mut counts = std::collections::HashMap::new();
    for y in y0..y1 {
        for x in x0..x1 {
            *counts.entry(img.get_pixel(x, y).0).or_insert(0u32) += 1;
        }
    }
    let bg = counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map(|(c, _)| c)
        .expect("a non-empty region");
    let ink = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        (0..3).map(|i| p[i].abs_diff(bg[i]) as u32).sum::<u32>() > 150
    };
    let (lines, across) = if axis == 0 {
        (x0..x1, y0..y1)
    } else {
        (y0..y1, x0..x1)
    };
    let inked: Vec<u32> = lines
        .filter(|&l| {
            across
                .clone()
                .any(|a| if axis == 0 { ink(l, a) } else { ink(a, l) })
        })
        .collect();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for l in inked {
        match runs.last_mut() {
            Some((s, n)) if l <= *s + *n + gap => *n = l - *s + 1,
            _ => runs.push((l, 1)),
        }
    }
    runs
}

/// Pixels near `at` (points) within a small distance of `color`.
fn pixels_of(img: &image::RgbaImage, at: egui::Pos2, ppp: f32, color: egui::Color32) -> usize {
    let (cx, cy) = ((at.x * ppp) as i64, (at.y * ppp) as i64);
    let r = (6.0 * ppp) as i64;
    let want = color.to_srgba_unmultiplied();
    let mut n = 0;
    for y in cy - r..=cy + r {
        for x in cx - r..=cx + r {
            let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
                continue;
            };
            if x < img.width() && y < img.height() {
                let p = img.get_pixel(x, y).0;
                if (0..3)
                    .map(|i| u32::from(p[i].abs_diff(want[i])))
                    .sum::<u32>()
                    < 60
                {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Render `h` in software (wgpu on lavapipe; `make setup` installs mesa-vulkan-drivers).
fn render(h: &mut Harness<'static, StudioApp>) -> image::RgbaImage {
    for _ in 0..3 {
        h.step();
    }
    h.render().unwrap_or_else(|e| {
        panic!("software rendering failed ({e}); install a Vulkan driver: apt-get install mesa-vulkan-drivers")
    })
}

#[test]
fn rendered_plots_show_tick_labels_on_both_axes_and_no_legend_over_a_point() {
    use shiftadd_app::chart::format::color;
    use shiftadd_app::gui::widgets::plot::plot_transform;
    for light in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let db = seeded_db(dir.path());
        let persisted = Persisted {
            view: View::Monitor,
            current: Some(1),
            light,
            ..Persisted::default()
        }
        .in_database(&db);
        let mut f = fake_app(&db, persisted);
        let h = &mut f.harness;
        wait_for(h, "the loss plot", |h| {
            plot_transform(&h.ctx, "run1-loss").is_some_and(|t| t.bounds().max()[0] >= 29.0)
        });
        let img = render(h);
        let ppp = h.ctx.pixels_per_point();
        let frame = *plot_transform(&h.ctx, "run1-loss").expect("drawn").frame();
        let px = |v: f32| (v * ppp).max(0.0) as u32;
        // Tick labels left of the frame: separate lines of text down the y axis.
        let y_labels: Vec<_> = ink_runs(
            &img,
            [
                px(frame.left() - 34.0),
                px(frame.top()),
                px(frame.left() - 3.0),
                px(frame.bottom()),
            ],
            1,
            1,
        )
        .into_iter()
        .filter(|&(_, n)| (4..=24).contains(&n))
        .collect();
        assert!(
            y_labels.len() >= 3,
            "light {light}: y tick labels {y_labels:?}"
        );
        // Below the frame: separate labels along the x axis.
        let x_labels = ink_runs(
            &img,
            [
                px(frame.left()),
                px(frame.bottom() + 2.0),
                px(frame.right()),
                px(frame.bottom() + 16.0),
            ],
            0,
            6,
        );
        assert!(
            x_labels.len() >= 3,
            "light {light}: x tick labels {x_labels:?}"
        );

        // Compare's accuracy-vs-energy scatter: each ticked run's diamond is visible, nothing
        // (a legend) drawn over it.
        drop(f);
        let persisted = Persisted {
            view: View::Compare,
            compare: vec![1, 2],
            light,
            ..Persisted::default()
        }
        .in_database(&db);
        let mut f = fake_app(&db, persisted);
        let h = &mut f.harness;
        let id = "compare-pareto-shiftaddnas";
        wait_for(h, "the scatter with both runs", |h| {
            plot_transform(&h.ctx, id).is_some_and(|t| t.bounds().is_valid())
                && h.state().data().runs.len() == 2
        });
        let img = render(h);
        let t = plot_transform(&h.ctx, id).expect("drawn");
        // Seeded: best validation top-1 0.2·3 + lr, energy 1 + lr (runs 1 and 2: lr 0.1, 0.05).
        for (j, lr) in [0.1, 0.05].into_iter().enumerate() {
            let at =
                t.position_from_point(&egui_plot::PlotPoint::new(1.0 + lr, (0.6 + lr) * 100.0));
            assert!(t.frame().contains(at), "run {} inside the frame", j + 1);
            let seen = pixels_of(&img, at, ppp, color(j));
            assert!(
                seen >= 8,
                "light {light}: run {}'s point shows {seen} pixels of its colour",
                j + 1
            );
        }
    }
}

#[test]
fn a_damaged_database_opens_a_window_that_says_how_to_salvage_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    crate::support::damage_pages(&db);
    let before = std::fs::read(&db).expect("read");
    let Err(e) = spawn_manager(&db, Arc::new(|| {})) else {
        panic!("a damaged database opened");
    };
    let message = e.to_string();
    let path = db.clone();
    let h = Harness::new_ui(move |ui| shiftadd_app::gui::open_failed_ui(ui, &path, &message));
    assert!(h.query_by_label_contains("is damaged").is_some());
    assert!(h.query_by_label_contains(".recover").is_some());
    assert!(h.query_by_label("Quit").is_some());
    assert!(
        std::fs::read(&db).expect("read") == before,
        "nothing was changed"
    );
}

/// Issue 45: the window waited for the database's quick check (every page of a large file). The
/// run manager now opens behind the window: its channels work at once (a command waits), the
/// state says "checking", then ready — and a damaged file leaves the window browsing, every start
/// refused with why, the file unchanged.
#[test]
fn the_database_opens_behind_the_window() {
    use shiftadd_app::gui::data::opening::{Opening, open_in_background};
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let bytes = std::fs::metadata(&db).expect("size").len();
    let o = open_in_background(&db, Arc::new(|| {})).expect("thread");
    let first = o.state.lock().expect("state").clone();
    assert!(
        first == Opening::Checking { bytes } || first == Opening::Ready,
        "{first:?}"
    );
    assert!(
        Opening::Checking { bytes: 734_000_000 }
            .status()
            .is_some_and(|s| s.starts_with("checking the database (734 MB)")),
    );
    let t0 = Instant::now();
    while *o.state.lock().expect("state") != Opening::Ready {
        assert!(t0.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let manager = o.finish().expect("the manager, for after the window");
    manager.shutdown();
    // A damaged file: the state says why, a start is refused with it, nothing is written.
    let bad = dir.path().join("bad.db");
    std::fs::copy(&db, &bad).expect("copy");
    crate::support::damage_pages(&bad);
    let before = std::fs::read(&bad).expect("read");
    let o = open_in_background(&bad, Arc::new(|| {})).expect("thread");
    let t0 = Instant::now();
    let why = loop {
        if let Opening::Failed(why) = o.state.lock().expect("state").clone() {
            break why;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no verdict");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(why.contains("damaged"), "{why}");
    o.commands
        .send(Command::Resume { run: 1, request: 7 })
        .expect("send");
    match o.events.recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Rejected { request: 7, reason }) => {
            assert!(
                reason.starts_with("the database cannot be written"),
                "{reason}"
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(o.finish().is_none());
    assert!(
        std::fs::read(&bad).expect("read") == before,
        "nothing was changed"
    );
}
