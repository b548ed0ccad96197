//! The desktop app driven through AccessKit (egui_kittest): a fake run manager (channels this
//! test holds) or the real one, and databases written through the store. No GPU, no window.
//!
//! One file per view (and `shell` for the app around them); here, the harness they share: the
//! app over a fake manager ([`fake_app`]), waiting for a state ([`wait_for`]), clicking by
//! label, the seeded databases.

mod compare;
mod hardware;
mod launch;
mod monitor;
mod nas;
mod runs;
mod shell;
mod studies;
mod ticks;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use shiftadd_app::gui::data::backend::Backend;
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

/// Wait for the widget labelled `label`, scroll it into view (as a user scrolls a long list),
/// then click it.
fn click(h: &mut Harness<'static, StudioApp>, label: &str) {
    wait_for(h, label, |h| has_label(h, label));
    h.get_by_label(label).scroll_to_me();
    // Until the scroll has settled — the widget still for a few frames, since an animated
    // scroll may start a frame late — a click aims at where the widget is drawn.
    let mut at = h.get_by_label(label).rect();
    let mut still = 0;
    for _ in 0..100 {
        h.step();
        let now = h.get_by_label(label).rect();
        still = if now == at { still + 1 } else { 0 };
        if still >= 3 {
            break;
        }
        at = now;
    }
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
