//! Issue 45, item 1: every plot of every view reads sensibly when there is nothing, one point or
//! a constant to show. Each view is rendered over three databases — a run with nothing recorded,
//! a run with one value per metric, a run whose values never change — and every axis of every
//! plot drawn is checked in the [`TickLog`]: no tick label repeats, and no axis of a quantity that
//! cannot be negative (a step, a time, an accuracy, a loss, a count, an energy) shows a negative
//! label. Where nothing is recorded, the series plots say what they wait for.

use shiftadd_app::gui::widgets::plot::TickLog;
use shiftadd_core::spec::space::NasArch;
use shiftadd_core::store::{CandidateStatus, NasCandidateRow, StudyRunRow};

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Nothing,
    OnePoint,
    Constant,
}

/// Two runs (a study's two cells, ticked in Compare) and a NAS search, with `shape`'s metrics.
fn shaped_db(dir: &Path, shape: Shape) -> PathBuf {
    let db = dir.join(format!("{shape:?}.db"));
    let w = Writer::open(&db).expect("db");
    let study = Study::parse(
        "name = \"ticks\"\nseeds = [0]\nbaseline = \"a\"\n\
         [[variant]]\nname = \"a\"\n[[variant]]\nname = \"b\"\nset = { \"train.lr\" = 0.05 }\n",
        "ticks.toml",
        dir,
        &[],
    )
    .expect("study");
    let id = w
        .create_study(
            &study.name,
            &study.identity(),
            &serde_json::to_string(&study).expect("json"),
        )
        .expect("study row");
    let steps: Vec<i64> = match shape {
        Shape::Nothing => Vec::new(),
        Shape::OnePoint => vec![10],
        Shape::Constant => vec![10, 20, 30, 40],
    };
    for (variant, lr) in [("a", 0.1), ("b", 0.05)] {
        let mut cfg = Config::default();
        cfg.train.lr = lr;
        let run = w
            .create_run(NewRun {
                config_toml: cfg.to_toml(),
                ..crate::support::synthetic_run(variant, "add")
            })
            .expect("run");
        let mut rows = Vec::new();
        for &s in &steps {
            for (key, value) in [
                (keys::TRAIN_LOSS, 1.5),
                (keys::TRAIN_LR, 0.1),
                (keys::TRAIN_IMAGES_PER_SEC, 900.0),
                (keys::VAL_TOP1, 0.5),
                (keys::TEST_TOP1, 0.5),
                (keys::TRAIN_EPOCH_LOSS, 1.5),
                (keys::HW_ENERGY_MJ, 0.12),
                (keys::hw_under("shiftaddnas", "energy_mj").as_str(), 0.12),
                (shiftadd_core::host::keys::CPU_PCT, 150.0),
                (shiftadd_core::host::keys::RSS_MB, 300.0),
            ] {
                rows.push(metric_row(run, key, s, value));
            }
        }
        w.send(WriteOp::Metrics(rows)).expect("metrics");
        let hists: Vec<HistogramRow> = steps
            .iter()
            .enumerate()
            .flat_map(|(e, _)| {
                ["stored", "remapped"].map(|kind| HistogramRow {
                    run,
                    layer: "blocks.0.pw".into(),
                    kind: kind.into(),
                    epoch: e as i64,
                    edges: vec![0.0, 0.5, 1.0],
                    counts: vec![4, 4],
                    underflow: 0,
                    overflow: 0,
                    stats: serde_json::json!({"mean": 0.5, "std": 0.0, "op": "add"}),
                })
            })
            .collect();
        w.send(WriteOp::Histograms(hists)).expect("histograms");
        w.status(run, Status::Finished, None);
        w.send(WriteOp::StudyRun(StudyRunRow {
            study: id,
            variant: variant.into(),
            seed: 0,
            run,
        }))
        .expect("cell");
    }
    let mut cfg = Config::default();
    cfg.nas.budget = 1.0;
    let search = w
        .create_run(NewRun {
            name: "search".into(),
            config_toml: cfg.to_toml(),
            model: shiftadd_core::nas::SEARCH_MODEL.into(),
            tags: "nas".into(),
            ..crate::support::synthetic_run("search", "mult")
        })
        .expect("search");
    for _ in &steps {
        w.send(WriteOp::NasCandidate(NasCandidateRow {
            run: search,
            stage: 1,
            generation: 0,
            arch: NasArch::mbv2_tiny().to_json(),
            cost: 1.0,
            proxy_accuracy: Some(0.4),
            status: CandidateStatus::Done,
            proxy_run: None,
            slurm: None,
        }))
        .expect("candidate");
    }
    w.status(search, Status::Finished, None);
    w.flush().expect("flush");
    db
}

/// Every axis the view's plots drew: no label twice, none negative on a quantity's axis.
fn check_axes(h: &Harness<'static, StudioApp>, what: &str) -> usize {
    let axes = TickLog::read(&h.ctx);
    for (plot, axis, t) in &axes {
        let mut seen = std::collections::HashSet::new();
        for l in &t.labels {
            assert!(
                seen.insert(l.as_str()),
                "{what}: plot {plot} axis {axis} repeats {l:?}: {:?}",
                t.labels
            );
            assert!(
                !(t.quantity && (l.starts_with('-') || l.starts_with('−'))),
                "{what}: plot {plot} axis {axis} runs negative: {:?} {:?}",
                t.labels,
                shiftadd_app::gui::widgets::plot::plot_transform(&h.ctx, plot).map(|t| *t.bounds())
            );
        }
    }
    axes.len()
}

#[test]
fn every_plot_reads_sensibly_with_nothing_one_point_or_a_constant() {
    let dir = tempfile::tempdir().expect("tmp");
    for shape in [Shape::Nothing, Shape::OnePoint, Shape::Constant] {
        let db = shaped_db(dir.path(), shape);
        let mut drawn = 0;
        for view in [
            View::Monitor,
            View::Weights,
            View::Hardware,
            View::Compare,
            View::Nas,
            View::Studies,
        ] {
            let current = if view == View::Nas { 3 } else { 1 };
            let persisted = Persisted {
                view,
                current: Some(current),
                compare: vec![1, 2],
                ..Persisted::default()
            }
            .in_database(&db);
            let mut f = fake_app(&db, persisted);
            let h = &mut f.harness;
            wait_for(h, "the runs", |h| {
                h.state().data().runs_loaded && h.state().data().data.contains_key(&current)
            });
            for _ in 0..20 {
                h.step();
                std::thread::sleep(Duration::from_millis(10));
            }
            TickLog::clear(&h.ctx);
            h.step();
            h.step();
            let what = format!("{view:?} with {shape:?}");
            drawn += check_axes(h, &what);
            if shape == Shape::Nothing && view == View::Monitor {
                assert!(
                    h.query_all_by_label_contains("nothing recorded yet")
                        .next()
                        .is_some(),
                    "{what}: the empty plots say what they wait for"
                );
            }
        }
        if shape != Shape::Nothing {
            assert!(drawn >= 10, "{shape:?}: only {drawn} axes drawn");
        }
    }
}
