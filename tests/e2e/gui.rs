//! The desktop app driven through AccessKit (egui_kittest): a fake run manager (channels this
//! test holds) or the real one, and databases written through the store. No GPU, no window.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use shiftadd_app::gui::backend::Backend;
use shiftadd_app::gui::{ExitChoice, Persisted, StudioApp, View, finish_headless};
use shiftadd_core::Config;
use shiftadd_core::run::{Command, Event, ManagerHandle, spawn_manager};
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::{
    HistogramRow, MetricRow, NewRun, Reader, RunId, Status, WriteOp, Writer, keys,
};

use crate::support::tiny_config;

fn experiments() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

/// A metric row of `run` at `step` (epoch `step / 10`), as the seeded databases record them.
fn metric_row(run: RunId, key: &str, step: i64, value: f64) -> MetricRow {
    MetricRow {
        run,
        key: key.into(),
        step,
        epoch: step / 10,
        wall_time: 0.0,
        value,
    }
}

/// The app over channels the test holds: (harness, commands sent, events to inject, exit choice).
struct Fake {
    harness: Harness<'static, StudioApp>,
    commands: Receiver<Command>,
    events: Sender<Event>,
    exit: Arc<Mutex<Option<ExitChoice>>>,
}

fn fake_app(db: &Path, persisted: Persisted) -> Fake {
    let (cmd_tx, cmd_rx) = bounded(64);
    let (ev_tx, ev_rx) = bounded(64);
    let exit = Arc::new(Mutex::new(None));
    let app_exit = exit.clone();
    let db = db.to_path_buf();
    let harness = Harness::builder()
        .with_size([1500.0, 950.0])
        .build_eframe(move |cc| {
            let backend = Backend::new(&db, experiments(), cmd_tx, ev_rx, &cc.egui_ctx)
                .expect("ui-data thread");
            StudioApp::new(backend, persisted, app_exit)
        });
    Fake {
        harness,
        commands: cmd_rx,
        events: ev_tx,
        exit,
    }
}

/// Step the app until `done` holds (the data thread answers asynchronously).
fn wait_for(
    h: &mut Harness<'static, StudioApp>,
    what: &str,
    done: impl Fn(&Harness<'static, StudioApp>) -> bool,
) {
    let t0 = Instant::now();
    loop {
        h.step();
        if done(h) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn has_label(h: &Harness<'static, StudioApp>, label: &str) -> bool {
    h.query_all_by_label(label).next().is_some()
}

/// Wait for the widget labelled `label`, then click it.
fn click(h: &mut Harness<'static, StudioApp>, label: &str) {
    wait_for(h, label, |h| has_label(h, label));
    h.get_by_label(label).click();
    h.step();
}

/// Wait for the runs list, then the name button of run `name` in it.
fn run_button<'h>(h: &'h mut Harness<'static, StudioApp>, name: &'h str) -> egui_kittest::Node<'h> {
    wait_for(h, name, |h| {
        h.state().data().runs_loaded
            && h.query_by_role_and_label(egui::accesskit::Role::Button, name)
                .is_some()
    });
    h.get_by_role_and_label(egui::accesskit::Role::Button, name)
}

fn has_label_containing(h: &Harness<'static, StudioApp>, part: &str) -> bool {
    h.query_by_label_contains(part).is_some()
}

/// Two finished runs that differ in `train.lr`, with metrics and weight histograms at epochs
/// 0, 1, 2 (underflow = 10·epoch + 1, so each epoch is recognisable).
fn seeded_db(dir: &Path) -> PathBuf {
    let db = dir.join("seeded.db");
    let w = Writer::open(&db).expect("db");
    for (name, lr) in [("alpha", 0.1), ("beta", 0.05)] {
        let mut cfg = Config::default();
        cfg.train.lr = lr;
        let run = w
            .create_run(NewRun {
                name: name.into(),
                config_toml: cfg.to_toml(),
                dataset: "synthetic".into(),
                model: "micro".into(),
                operator: "add".into(),
                seed: 0,
                tags: "gui-test".into(),
                provenance: String::new(),
            })
            .expect("run");
        let metric = |key: &str, step: i64, value: f64| metric_row(run, key, step, value);
        let mut rows: Vec<MetricRow> = (0..30)
            .map(|s| metric(keys::TRAIN_LOSS, s, 2.0 / (1.0 + s as f64)))
            .collect();
        rows.extend((1..=3).map(|e| metric(keys::VAL_TOP1, e * 10, 0.2 * e as f64 + lr)));
        rows.push(metric(keys::HW_ENERGY_MJ, 0, 1.0 + lr));
        rows.push(metric(
            &keys::hw_under("shiftaddnas", "energy_mj"),
            0,
            1.0 + lr,
        ));
        w.send(WriteOp::Metrics(rows)).expect("metrics");
        let edges: Vec<f64> = (0..=10).map(|i| -1.0 + 0.2 * f64::from(i)).collect();
        let hist = |kind: &str, epoch: i64| HistogramRow {
            run,
            layer: "blocks.0.pw".into(),
            kind: kind.into(),
            epoch,
            edges: edges.clone(),
            counts: vec![1, 2, 5, 9, 14, 14, 9, 5, 2, 1],
            underflow: 10 * epoch as u64 + 1,
            overflow: 0,
            stats: serde_json::json!({"mean": 0.0, "std": 0.4, "kurtosis": 3.0 + epoch as f64,
                "kl_gaussian": 0.01, "kl_laplace": 0.2, "w1_to_stored": 0.05, "op": "add"}),
        };
        let hists = (0..3)
            .flat_map(|e| [hist("stored", e), hist("remapped", e)])
            .collect();
        w.send(WriteOp::Histograms(hists)).expect("histograms");
        w.status(run, Status::Finished, None);
    }
    w.flush().expect("flush");
    db
}

#[test]
fn launching_a_preset_sends_its_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut f = fake_app(&dir.path().join("new.db"), Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "presets", |h| has_label(h, "smoke-shift-aug"));
    h.get_by_label("smoke-shift-aug").click();
    h.step();
    h.get_by_label("Launch run").click();
    h.step();
    let cmd = f.commands.try_recv().expect("a command was sent");
    let Command::Start { config, name, .. } = cmd else {
        panic!("expected Start, got {cmd:?}")
    };
    assert_eq!(name, "smoke-shift-aug");
    let expected =
        Config::load(&experiments().join("smoke-shift-aug.toml"), &[]).expect("preset parses");
    assert_eq!(
        *config, expected,
        "the form sends the preset's resolved config"
    );
    // The manager's answer is shown, and the app follows the new run in Monitor.
    f.events
        .send(Event::Created {
            request: 1001,
            run: 42,
        })
        .expect("event");
    wait_for(h, "the run to be followed", |h| {
        h.state().persisted().view == View::Monitor && h.state().persisted().current == Some(42)
    });
}

#[test]
fn invalid_value_disables_launch_and_shows_the_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut f = fake_app(&dir.path().join("new.db"), Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "presets", |h| has_label(h, "smoke"));
    h.get_by_label("train.epochs").set_text_value_accesskit("0");
    h.step();
    h.step();
    let cli_message = Config::from_toml_str("", "form", &["train.epochs=0".into()])
        .expect_err("refused")
        .to_string();
    assert!(has_label(h, &cli_message), "inline message: {cli_message}");
    assert!(
        h.get_by_label("Launch run").accesskit_node().is_disabled(),
        "Launch is disabled"
    );
    h.get_by_label("Launch run").click();
    h.step();
    assert!(f.commands.try_recv().is_err(), "nothing was sent");
    // Fixing the value enables it again.
    h.get_by_label("train.epochs").set_text_value_accesskit("2");
    h.step();
    h.step();
    assert!(!h.get_by_label("Launch run").accesskit_node().is_disabled());
}

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
                shiftadd_app::gui::backend::read_only_manager(&db, waker).expect("stand-in");
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

/// Issue 43, item 2: one row of a hostile or damaged database (an unknown status, text in a
/// metric's value) once made the whole runs table fail; now it is listed as damaged, the others
/// as usual.
#[test]
fn a_damaged_row_is_shown_as_damaged_and_the_others_are_listed() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    rusqlite::Connection::open(&db)
        .expect("raw")
        .execute_batch(
            "UPDATE runs SET status = 'zombie' WHERE name = 'beta';
             UPDATE metrics SET value = 'x' WHERE run_id = 1 AND key = 'val/top1' AND step = 30;",
        )
        .expect("damage");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#2"));
    assert!(has_label(h, "#1"), "the other run is listed");
    let rows = &h.state().data().runs;
    let statuses: Vec<Status> = rows.iter().map(|r| r.summary.status).collect();
    assert_eq!(statuses, [Status::Damaged, Status::Damaged], "{statuses:?}");
    assert!(has_label(h, "damaged"), "the status column says so");
    let alpha = rows
        .iter()
        .find(|r| r.summary.name == "alpha")
        .expect("alpha");
    assert!(
        alpha
            .summary
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("metric's value")),
        "{:?}",
        alpha.summary.reason
    );
}

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

/// The real manager behind the app: Launch trains, Stop stops, and the database agrees.
#[test]
fn the_stop_shortcut_stops_a_real_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("live.db");
    let slot: Arc<OnceLock<egui::Context>> = Arc::new(OnceLock::new());
    let manager =
        spawn_manager(&db, shiftadd_app::gui::backend::lazy_waker(slot.clone())).expect("manager");
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

fn start(manager: &ManagerHandle, config: &Path) -> RunId {
    let cfg = Config::load(config, &[]).expect("config");
    manager
        .commands
        .send(Command::Start {
            config: Box::new(cfg),
            name: "headless".into(),
            tags: String::new(),
            request: 1,
        })
        .expect("send");
    loop {
        match manager.events.recv_timeout(Duration::from_secs(120)) {
            Ok(Event::Created { run, .. }) => return run,
            Ok(Event::Rejected { reason, .. }) => panic!("{reason}"),
            Ok(_) => {}
            Err(e) => panic!("no Created event: {e}"),
        }
    }
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

/// The NAS view lists a search's candidates and trains a chosen TargetNet with its recipe.
#[test]
fn nas_view_trains_a_chosen_target_net() {
    use shiftadd_core::spec::space::NasArch;
    use shiftadd_core::store::NasCandidateRow;

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("nas.db");
    let w = Writer::open(&db).expect("db");
    let mut cfg = Config::default();
    cfg.nas.budget = 1.25;
    let search = w
        .create_run(NewRun {
            name: "search".into(),
            config_toml: cfg.to_toml(),
            dataset: "synthetic".into(),
            model: shiftadd_core::nas::SEARCH_MODEL.into(),
            operator: "mult".into(),
            seed: 0,
            tags: "nas".into(),
            provenance: String::new(),
        })
        .expect("run");
    let target = NasArch::mbv2_tiny();
    for (stage, acc) in [(1, 0.4), (2, 0.3)] {
        w.send(WriteOp::NasCandidate(NasCandidateRow {
            run: search,
            stage,
            generation: 0,
            arch: target.to_json(),
            cost: 1.0,
            proxy_accuracy: Some(acc),
            status: shiftadd_core::store::CandidateStatus::Done,
            proxy_run: None,
            slurm: (stage == 2).then(|| "4242_1 COMPLETED (exit 0:0)".to_owned()),
        }))
        .expect("candidate");
    }
    w.status(search, Status::Finished, None);
    w.flush().expect("flush");
    drop(w);
    let persisted = Persisted {
        view: View::Nas,
        current: Some(search),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "the candidates", |h| {
        has_label(h, "Best architectures") && has_label(h, "Train")
    });
    assert!(has_label(h, "2 TargetNet") && has_label(h, "1 SubNet"));
    // The TargetNet's proxy trained on Slurm, the SubNet's here.
    assert!(has_label(h, "On Slurm: 1 COMPLETED of 1 proxies"));
    assert!(has_label(h, "4242_1 COMPLETED (exit 0:0)") && has_label(h, "here"));
    click(h, "Train");
    let cmd = f.commands.try_recv().expect("a command was sent");
    let Command::Start { config, .. } = cmd else {
        panic!("expected Start, got {cmd:?}")
    };
    assert_eq!(config.model.arch.as_ref(), Some(&target));
    assert_eq!(
        config.aug.arch.as_ref(),
        Some(&target),
        "inside the best SubNet"
    );
    assert!(
        (config.nas.budget - 1.25).abs() < 1e-12,
        "the search's recipe"
    );
}

/// Candidates of `db`'s first search that finished proxy training, and the search's status.
fn search_state(db: &Path) -> (usize, Option<shiftadd_core::store::Status>) {
    let Ok(r) = Reader::open(db) else {
        return (0, None);
    };
    let Some(search) = r
        .runs()
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.model == shiftadd_core::nas::SEARCH_MODEL)
    else {
        return (0, None);
    };
    let done = r
        .nas_candidates(search.id)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.status == shiftadd_core::store::CandidateStatus::Done)
        .count();
    (done, Some(search.status))
}

#[test]
fn a_nas_search_starts_stops_and_resumes_from_the_app() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("search.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    click(h, "nas-smoke");
    for (key, value) in [
        ("nas.population", "2"),
        ("nas.generations", "1"),
        ("nas.parallel", "1"),
        ("nas.proxy_train", "100"),
        ("nas.proxy_val", "50"),
    ] {
        h.get_by_label(key).set_text_value_accesskit(value);
        h.step();
    }
    h.step();
    click(h, "Start NAS search");
    wait_for(h, "the app to follow the search", |h| {
        h.state().persisted().view == View::Nas
    });
    wait_for(h, "a stored candidate", |_| search_state(&db).0 >= 1);
    click(h, "Stop search");
    wait_for(h, "the search to stop", |h| {
        has_label_containing(h, "search stopped by user")
    });
    let (stored, status) = search_state(&db);
    assert_eq!(status, Some(shiftadd_core::store::Status::Stopped));
    assert!((1..4).contains(&stored), "{stored} candidates stored");
    let runs = Reader::open(&db).expect("db").runs().expect("runs");
    assert!(
        runs.iter()
            .all(|r| r.status != shiftadd_core::store::Status::Running),
        "no proxy run is left training: {runs:?}"
    );
    let reader = Reader::open(&db).expect("db");
    let search = runs
        .iter()
        .find(|r| r.model == shiftadd_core::nas::SEARCH_MODEL)
        .expect("search");
    let rows = reader.nas_candidates(search.id).expect("rows");
    assert!(
        rows.iter()
            .all(|c| c.status == shiftadd_core::store::CandidateStatus::Done
                || c.status == shiftadd_core::store::CandidateStatus::Stopped),
        "interrupted candidates say so: {rows:?}"
    );
    // Starting the same config again resumes that search and trains only what is missing.
    h.get_by_label("Launch").click();
    h.step();
    click(h, "Start NAS search");
    wait_for(h, "the resumed search to finish", |h| {
        has_label_containing(h, "finished (search #1;")
    });
    let label = h
        .query_by_label_contains("finished (search #1;")
        .and_then(|n| n.accesskit_node().value()) // a Label's text is its AccessKit value
        .expect("label");
    let reused: usize = label
        .split(", ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("reused count in {label:?}"));
    assert_eq!(reused, stored, "{label}");
    assert_eq!(
        search_state(&db),
        (4, Some(shiftadd_core::store::Status::Finished))
    );
}

#[test]
fn hardware_view_shows_each_models_totals_under_either_cost_model() {
    use shiftadd_core::spec::config::HwModel;
    use shiftadd_core::store::HwCostRow;

    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut cfg = Config::default();
    let costs = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
    cfg.hw.model = HwModel::Project;
    let project = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
    let mut rows = shiftadd_core::hw::cost_rows(1, &costs);
    rows.extend(shiftadd_core::hw::cost_rows(1, &project));
    rows.push(HwCostRow {
        run: 1,
        hw_model: "shiftaddnas".into(),
        model: "augmented".into(),
        layer_index: 999,
        layer: "broken".into(),
        detail: serde_json::json!({"name": "broken"}),
    });
    let w = Writer::open(&db).expect("db");
    w.send(WriteOp::HwCost(rows)).expect("hw rows");
    w.flush().expect("flush");
    drop(w);
    let persisted = Persisted {
        view: View::Hardware,
        current: Some(1),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "the totals", |h| has_label(h, "largest augmented"));
    for c in &costs {
        // MAC counts as the cost model computed them, one row per model.
        let macs = c.layers.iter().map(|l| l.macs).sum::<i64>() as f64 / 1e6;
        assert!(has_label(h, &format!("{macs:.2} M")), "{} MACs", c.label);
    }
    assert!(
        has_label(h, "1 rows unreadable"),
        "the broken row is reported"
    );
    let ratio = costs[2].energy_mj / costs[0].energy_mj;
    assert!(
        has_label(h, &format!("{ratio:.2}")),
        "× tiny energy {ratio:.2}"
    );
    // The figures name their model; the toggle switches every total to the other.
    assert!(has_label(
        h,
        "Hardware cost · run #1 · ShiftAddNAS simulator"
    ));
    let energy = |c: &shiftadd_core::hw::ModelCost| format!("{:.4}", c.energy_mj);
    assert!(
        has_label(h, &energy(&costs[1])),
        "simulator: tiny all-Mult total"
    );
    click(h, "project model");
    wait_for(h, "the project totals", |h| {
        has_label(h, &energy(&project[1]))
    });
    assert!(has_label_containing(
        h,
        "Energy per layer (µJ), project model"
    ));
    assert!(
        !has_label(h, "1 rows unreadable"),
        "the broken row is the simulator's"
    );
    // The stacked bars as SVG, with the segments' names in its legend.
    let (svg, texts) = export_svg(h);
    assert!(
        texts.iter().any(|t| t.contains("Energy per layer")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("compute") || t.contains("DRAM")),
        "{texts:?}"
    );
    assert!(svg.matches("<rect").count() > 5);
}

#[test]
fn studies_view_shows_the_table_and_banded_curves() {
    use shiftadd_core::spec::study::Study;
    use shiftadd_core::store::StudyRunRow;

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("study.db");
    let study = Study::parse(
        "name = \"gui-study\"\nseeds = [0, 1]\nbaseline = \"base\"\n\
         [[variant]]\nname = \"base\"\n[[variant]]\nname = \"wider\"\nset = { \"train.lr\" = 0.05 }\n",
        "gui-study.toml",
        dir.path(),
        &[],
    )
    .expect("study");
    let w = Writer::open(&db).expect("db");
    let id = w
        .create_study(
            &study.name,
            &study.identity(),
            &serde_json::to_string(&study).expect("json"),
        )
        .expect("study row");
    // test/top1: base 0.60, 0.62; wider 0.70, 0.74 (paired differences 0.10, 0.12).
    // weights/add_std, which the study does not report: base 2, 4; wider 6, 10.
    for (variant, seed, top1, add_std) in [
        ("base", 0, 0.60, 2.0),
        ("base", 1, 0.62, 4.0),
        ("wider", 0, 0.70, 6.0),
        ("wider", 1, 0.74, 10.0),
    ] {
        let run = w
            .create_run(NewRun {
                seed,
                tags: "study".into(),
                ..crate::support::synthetic_run(&format!("{variant}-s{seed}"), "mult")
            })
            .expect("run");
        let metric = |key: &str, step: i64, value: f64| metric_row(run, key, step, value);
        let mut rows: Vec<MetricRow> = (1..=3)
            .map(|e| metric(keys::VAL_TOP1, e * 10, top1 * e as f64 / 3.0))
            .collect();
        rows.push(metric(keys::TEST_TOP1, 30, top1));
        rows.push(metric(keys::WEIGHTS_ADD_STD, 30, add_std));
        // Training losses per epoch; `wider` augments: its augmented model's loss is the tiny
        // model's + 0.1 (seed 0) and + 0.3 (seed 1) — a gap of +0.2 ± 1.271 at the last epoch.
        for e in 1..=3 {
            let tiny = 1.0 / e as f64;
            rows.push(metric(keys::TRAIN_EPOCH_LOSS, e * 10, tiny));
            if variant == "wider" {
                let gap = if seed == 0 { 0.1 } else { 0.3 };
                rows.push(metric(keys::TRAIN_EPOCH_LOSS_AUG, e * 10, tiny + gap));
            }
        }
        w.send(WriteOp::Metrics(rows)).expect("metrics");
        w.status(run, shiftadd_core::store::Status::Finished, None);
        w.send(WriteOp::StudyRun(StudyRunRow {
            study: id,
            variant: variant.into(),
            seed,
            run,
        }))
        .expect("cell");
    }
    // The cells ran on Slurm, as a coordinator records them.
    for (variant, seed, state, detail) in [
        ("base", 0, "COMPLETED", "exit 0:0"),
        ("base", 1, "COMPLETED", "exit 0:0"),
        ("wider", 0, "RUNNING", "node7"),
        ("wider", 1, "PENDING", "(JobArrayTaskLimit)"),
    ] {
        w.send(WriteOp::StudyJob(shiftadd_core::store::StudyJobRow {
            study: id,
            variant: variant.into(),
            seed,
            executor: "slurm".into(),
            job: format!(
                "999999_{}",
                usize::from(variant == "wider") * 2 + seed as usize
            ),
            state: state.into(),
            detail: detail.into(),
        }))
        .expect("job");
    }
    w.flush().expect("flush");
    drop(w);
    let persisted = Persisted {
        view: View::Studies,
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "the study table", |h| has_label(h, "wider"));
    assert!(
        has_label(
            h,
            "On Slurm: job array 999999 · 2 COMPLETED, 1 RUNNING, 1 PENDING"
        ),
        "where the cells run, at a glance"
    );
    click(h, "Where the cells run");
    wait_for(h, "the cells' tasks", |h| has_label(h, "slurm 999999_2"));
    assert!(has_label(h, "node7") && has_label(h, "(JobArrayTaskLimit)"));
    click(h, "Cancel Slurm jobs");
    // scancel answers: done, or why not (a test machine may have no Slurm at all, or a Slurm
    // that knows no job 999999 or whose controller is down: the app says so).
    wait_for(h, "scancel's answer", |h| {
        has_label(h, "job array 999999 cancelled; its cells are stopping")
            || has_label_containing(h, "cannot run `scancel`")
            || has_label_containing(h, "`scancel 999999` failed")
    });
    assert!(has_label(
        h,
        "4 of 4 cells finished · 2 variants × 2 seeds · reporting test/top1 · baseline base"
    ));
    // base: mean 61.00, CI 12.706·0.01414/√2 ·100 = 12.71; wider 72.00.
    assert!(has_label(h, "61.00 ± 12.71"), "base mean ± CI");
    assert!(has_label(h, "72.00 ± 25.41"), "wider mean ± CI");
    assert!(
        has_label_containing(h, "+11.00 ± 12.71"),
        "paired difference vs base"
    );
    assert!(has_label(h, "baseline"));
    wait_for(h, "the banded curves", |h| {
        has_label(h, "val/top1 by variant: mean ± std over seeds")
    });
    // While a cell's run is loading the view says so; once every cell's is, it does not.
    wait_for(h, "every cell's curves", |h| {
        h.state().data().data.len() == 4
    });
    h.step();
    assert!(
        !has_label_containing(h, "loading the curves"),
        "every cell loaded: nothing is said to be loading"
    );
    assert!(
        has_label(h, "LaTeX") && has_label(h, "Markdown"),
        "the table's exports"
    );
    // The table reports any metric the cells recorded, chosen over the study's own.
    choose_table_metric(h, "test/top1", "weights/add_std");
    wait_for(h, "the weights/add_std table", |h| {
        has_label(h, "3.00 ± 12.71")
    });
    assert!(has_label(h, "8.00 ± 25.41"), "wider's mean ± CI");
    assert!(
        has_label_containing(h, "+5.00 ± 12.71"),
        "paired difference"
    );
    assert!(
        !has_label(h, "61.00 ± 12.71"),
        "test/top1 is no longer shown"
    );
    assert!(has_label_containing(
        h,
        "reporting weights/add_std (the study's own: test/top1)"
    ));
    assert!(
        has_label_containing(h, "no best, no verdict"),
        "a weight std describes a run, it does not score it"
    );
    choose_table_metric(h, "weights/add_std", "test/top1 (the study's)");
    wait_for(h, "the study's own table again", |h| {
        has_label(h, "61.00 ± 12.71")
    });
    assert!(has_label_containing(
        h,
        "reporting test/top1 · baseline base"
    ));
    // Is the augmented model working? Its loss beside the tiny model's, for `wider` only.
    choose_table_metric(h, "val/top1", "train loss: augmented vs tiny");
    wait_for(h, "the fit plot", |h| {
        has_label(
            h,
            "last epoch, augmented − tiny: wider +0.200 ± 1.271 (n = 2)",
        )
    });
    assert!(
        !has_label_containing(h, "base +"),
        "a variant that does not augment has no augmented loss"
    );
}

/// Open the Studies table's metric chooser (showing `current`) and pick the entry labelled `pick`.
fn choose_table_metric(h: &mut Harness<'static, StudioApp>, current: &str, pick: &str) {
    h.query_all_by_role(egui::accesskit::Role::ComboBox)
        .find(|n| n.value().as_deref() == Some(current))
        .expect("the table's metric chooser")
        .click();
    h.step();
    click(h, pick);
}

#[test]
fn a_study_starts_from_launch_and_fills_its_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("study-launch.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "presets", |h| has_label(h, "smoke"));
    click(h, "smoke");
    for (key, value) in [
        ("train.epochs", "1"),
        ("data.synthetic_train", "300"),
        ("data.synthetic_test", "100"),
        ("train.batch_size", "50"),
    ] {
        h.get_by_label(key).set_text_value_accesskit(value);
        h.step();
    }
    h.get_by_label("Study: vary")
        .set_text_value_accesskit("train.lr");
    h.step();
    h.get_by_label("over").set_text_value_accesskit("0.05, 0.1");
    h.step();
    click(h, "Start study");
    wait_for(h, "the app to follow the study", |h| {
        h.state().persisted().view == View::Studies
    });
    wait_for(h, "the study to finish", |h| {
        has_label_containing(h, "finished (study #1; 6 trained")
    });
    // Two values × three seeds, each cell its own run with that learning rate.
    let reader = Reader::open(&db).expect("db");
    let cells = reader.study_runs(1).expect("cells");
    assert_eq!(cells.len(), 6, "{cells:?}");
    for c in &cells {
        let cfg = Config::from_toml_str(&reader.config_toml(c.run).expect("config"), "run", &[])
            .expect("config parses");
        let lr = if c.variant == "lr=0.05" { 0.05 } else { 0.1 };
        assert!(
            (cfg.train.lr - lr).abs() < 1e-12 && cfg.train.seed == c.seed,
            "{c:?}"
        );
        assert_eq!(cfg.train.epochs, 1, "the form's config is the base");
    }
    wait_for(h, "the table", |h| has_label(h, "lr=0.1"));
}

#[test]
fn a_study_file_starts_from_launch_and_stops() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("study-file.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    click(h, "smoke-study");
    // What the file runs, before anything does.
    wait_for(h, "the study file's summary", |h| {
        has_label(
            h,
            "2 variants × 2 seeds = 4 cells, 2 at a time; reports test/top1 against mult",
        )
    });
    assert!(!db.exists(), "picking a study file runs nothing");
    click(h, "Start study file");
    wait_for(h, "the app to follow the study", |h| {
        h.state().persisted().view == View::Studies
    });
    // The study recorded is the file's own (its variants, seeds and base), not the form's.
    let file = experiments().join("studies/smoke-study.toml");
    let expected = Study::load(&file, &[]).expect("smoke-study parses");
    let t0 = Instant::now();
    let stored = loop {
        if let Ok(r) = Reader::open(&db)
            && let Some(row) = r.studies().expect("studies").pop()
        {
            break row;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no study recorded");
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    };
    let spec: Study = serde_json::from_str(&stored.spec).expect("stored spec");
    assert_eq!(spec, expected);
    assert_eq!(stored.identity, expected.identity());
    click(h, "Stop study");
    wait_for(h, "the study to stop", |h| {
        assert!(
            !has_label_containing(h, "smoke-study: finished"),
            "Stop did not reach the study: it ran to its end"
        );
        has_label_containing(h, "study stopped; rerun it to continue")
            || has_label_containing(h, "was stopped; rerun the study to resume it")
    });
    // The view says what is left of the stopped study ("4 cells to go (8 epochs): …").
    wait_for(h, "what is left to train", |h| {
        has_label_containing(h, " to go (") && has_label_containing(h, " epochs)")
    });
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
        shiftadd_app::gui::compare::groups_of(
            h.state().data_cache(),
            &[1, 2],
            "train.lr",
            "val/top1",
        )
        .iter()
        .all(|g| g.name.ends_with("(n = 1)"))
    });
    let data = h.state().data_cache();
    let groups = shiftadd_app::gui::compare::groups_of(data, &[1, 2], "train.lr", "val/top1");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["train.lr = 0.05 (n = 1)", "train.lr = 0.1 (n = 1)"]);
    assert!(
        groups.iter().all(|g| g.band.len() == 3),
        "3 epochs of val/top1 each"
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

/// Click the first SVG button on screen; the SVG file it writes, and the texts in it.
fn export_svg(h: &mut Harness<'static, StudioApp>) -> (String, Vec<String>) {
    let before = h.state().export().written.len();
    wait_for(h, "an SVG button", |h| has_label(h, "SVG"));
    h.query_all_by_label("SVG")
        .next()
        .expect("an SVG button")
        .click();
    h.step();
    wait_for(h, "the Save dialog", |h| has_label(h, "Save"));
    click(h, "Save");
    wait_for(h, "the SVG file", |h| {
        h.state().export().written[before..]
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "svg"))
    });
    let path = h.state().export().written[before..]
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "svg"))
        .expect("svg")
        .clone();
    let text = std::fs::read_to_string(&path).expect("read");
    let doc = roxmltree::Document::parse(&text).expect("the export parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect();
    (text, texts)
}

/// Extra runs for the tracker tests: a NAS search (run 3) with two proxies (4, 5), metrics with
/// real wall times, and a checkpoint folder for run 2. Returns run 2's checkpoint folder.
fn tracker_runs(db: &Path) -> PathBuf {
    let w = Writer::open(db).expect("db");
    let add = |name: &str, tags: &str| {
        let run = w
            .create_run(NewRun {
                tags: tags.into(),
                ..crate::support::synthetic_run(name, "shift")
            })
            .expect("run");
        w.status(run, Status::Finished, None);
        run
    };
    assert_eq!(add("search", "nas"), 3);
    assert_eq!(add("proxy-a", "nas-proxy,nas3"), 4);
    assert_eq!(add("proxy-b", "nas-proxy,nas3"), 5);
    // Run 1's loss again, 10 s apart from a wall-clock start.
    let rows = (0..30)
        .map(|s| MetricRow {
            wall_time: 1_800_000_000.0 + 10.0 * s as f64,
            ..metric_row(1, keys::TRAIN_LOSS, s, 2.0 / (1.0 + s as f64))
        })
        .collect();
    w.send(WriteOp::Metrics(rows)).expect("metrics");
    // Where the project keeps a run's checkpoints for this database (`<db>-checkpoints/run-2`):
    // the only place deleting a run removes files from.
    let folder = shiftadd_core::run::checkpoint_dir(db, 2);
    std::fs::create_dir_all(&folder).expect("mkdir");
    for ext in ["model.ot", "optim.ot"] {
        std::fs::write(folder.join(format!("epoch-0003.{ext}")), b"x").expect("write");
    }
    w.send(WriteOp::Checkpoint {
        row: shiftadd_core::store::CheckpointRow {
            run: 2,
            epoch: 3,
            step: 30,
            path: folder.join("epoch-0003").display().to_string(),
            rng_state: "0".into(),
        },
        keep: 3,
    })
    .expect("checkpoint");
    w.flush().expect("flush");
    folder
}

#[test]
fn a_selection_persisted_for_one_database_is_not_applied_to_another() {
    let dir = tempfile::tempdir().expect("tmp");
    let seeded = seeded_db(dir.path());
    // The selection of a session on the seeded database…
    let mut f = fake_app(&seeded, Persisted::default());
    wait_for(&mut f.harness, "the runs list", |h| has_label(h, "#2"));
    f.harness.get_by_label("#2").click();
    f.harness.step();
    run_button(&mut f.harness, "alpha").click();
    f.harness.step();
    let saved = f.harness.state().persisted().clone();
    assert_eq!((saved.current, saved.compare.clone()), (Some(1), vec![2]));
    drop(f);
    // …is kept when the same database opens again…
    let mut again = fake_app(&seeded, saved.clone());
    wait_for(&mut again.harness, "the runs list", |h| has_label(h, "#2"));
    assert_eq!(again.harness.state().persisted().compare, vec![2]);
    assert_eq!(again.harness.state().persisted().current, Some(1));
    drop(again);
    // …and dropped on another one: nothing ticked, nothing current, no error about run ids.
    let other = dir.path().join("other.db");
    let w = Writer::open(&other).expect("db");
    let run = w
        .create_run(crate::support::synthetic_run("fresh", "mult"))
        .expect("run");
    w.status(run, Status::Finished, None);
    w.flush().expect("flush");
    let mut f = fake_app(&other, saved);
    wait_for(&mut f.harness, "the other runs list", |h| {
        has_label(h, "fresh")
    });
    for _ in 0..20 {
        f.harness.step();
    }
    let p = f.harness.state().persisted();
    assert!(p.compare.is_empty(), "{:?}", p.compare);
    assert_eq!(p.current, None);
    assert!(f.harness.state().data().last_error.is_none());
    assert!(!has_label(&f.harness, "Compare 1"));
}

#[test]
fn the_column_chooser_adds_a_config_key_column_and_the_filter_hides_proxies() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    tracker_runs(&db);
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#3"));
    assert!(
        !has_label(h, "#4"),
        "proxies fold under their search by default"
    );
    click(h, "Columns");
    wait_for(h, "the column chooser", |h| has_label(h, "add column"));
    h.get_by_label("add column")
        .set_text_value_accesskit("train.lr");
    h.step();
    wait_for(h, "the offer", |h| {
        h.query_by_role_and_label(egui::accesskit::Role::Button, "train.lr")
            .is_some()
    });
    h.get_by_role_and_label(egui::accesskit::Role::Button, "train.lr")
        .click();
    h.step();
    wait_for(h, "the train.lr column", |h| {
        h.state()
            .persisted()
            .runs
            .columns
            .iter()
            .any(|c| matches!(c, shiftadd_app::gui::settings::Col::Config(k) if k == "train.lr"))
    });
    h.key_press(egui::Key::Escape);
    h.step();
    assert!(has_label(h, "train.lr"), "the header");
    assert!(
        has_label(h, "0.05") && has_label(h, "0.1"),
        "each run's value"
    );
    // Unfolded, proxies list; `-tag:nas-proxy` hides them again.
    click(h, "fold");
    wait_for(h, "the proxies", |h| {
        has_label(h, "#4") && has_label(h, "#5")
    });
    h.get_by_label("filter runs")
        .set_text_value_accesskit("-tag:nas-proxy");
    wait_for(h, "the filter", |h| !has_label(h, "#4"));
    assert!(!has_label(h, "#5"));
    assert!(has_label(h, "#1") && has_label(h, "#2") && has_label(h, "#3"));
    h.get_by_label("filter runs")
        .set_text_value_accesskit("val/top1>0.68");
    // Its figures load with the runs: until then nothing matches.
    wait_for(h, "the metric filter", |h| {
        !has_label(h, "#2") && has_label(h, "#1")
    });
    assert!(has_label(h, "#1"), "alpha's last val/top1 is 0.7");
}

#[test]
fn rename_tag_note_archive_and_delete_change_the_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let folder = tracker_runs(&db);
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    let reader = Reader::open(&db).expect("reader");
    let run = |id| reader.run(id).expect("run");
    wait_for(h, "the runs list", |h| has_label(h, "alpha"));
    let menu = |h: &mut Harness<'static, StudioApp>, name: &str, item: &str| {
        run_button(h, name).click_secondary();
        h.step();
        click(h, item);
    };
    // Each dialog: (run shown as, menu item, field, text typed, what the database then holds).
    type Check<'a> = Box<dyn Fn() -> bool + 'a>;
    let edits: [(&str, &str, &str, &str, Check<'_>); 3] = [
        (
            "alpha",
            "Rename…",
            "new name",
            "alpha-renamed",
            Box::new(|| run(1).name == "alpha-renamed"),
        ),
        (
            "alpha-renamed",
            "Tags…",
            "tags",
            "paper, keep",
            Box::new(|| run(1).tags == "paper,keep"),
        ),
        (
            "alpha-renamed",
            "Notes…",
            "notes",
            "# Best so far\n- lr **0.1**",
            Box::new(|| run(1).notes.contains("Best so far")),
        ),
    ];
    for (name, item, field, text, saved) in edits {
        menu(h, name, item);
        wait_for(h, field, |h| has_label(h, field));
        h.get_by_label(field).set_text_value_accesskit(text);
        h.step();
        click(h, "Save");
        wait_for(h, item, |_| saved());
    }
    // Monitor shows the notes rendered.
    run_button(h, "alpha-renamed").click();
    wait_for(h, "the notes in Monitor", |h| has_label(h, "Best so far"));
    menu(h, "alpha-renamed", "Archive");
    wait_for(h, "the archive", |_| run(1).archived);
    wait_for(h, "the archived run to hide", |h| {
        !has_label(h, "alpha-renamed")
    });
    assert!(has_label(h, "beta"), "other runs stay listed");
    // Delete, confirmed: run 2's rows and its checkpoint folder go, nothing else.
    assert!(folder.exists());
    menu(h, "beta", "Delete…");
    wait_for(h, "the confirmation", |h| {
        has_label_containing(h, "cannot be undone")
    });
    click(h, "Delete");
    wait_for(h, "the delete", |_| reader.run(2).is_err());
    assert!(!folder.exists(), "its checkpoint folder is removed");
    assert!(reader.metrics(2).expect("metrics").is_empty());
    assert_eq!(run(1).name, "alpha-renamed", "run 1 is untouched");
    assert!(!reader.metrics(1).expect("metrics").is_empty());
    assert_eq!(reader.runs().expect("runs").len(), 4);
    wait_for(h, "the runs list without beta", |h| !has_label(h, "beta"));
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
