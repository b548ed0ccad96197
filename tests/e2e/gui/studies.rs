//! The Studies view: the table, its metric, banded curves.

use super::*;

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
                // The cell's config, as a study records it: the variant's lr, the seed.
                config_toml: {
                    let mut c = Config::default();
                    c.train.lr = if variant == "wider" { 0.05 } else { 0.1 };
                    c.train.seed = seed;
                    c.to_toml()
                },
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
    // Parallel coordinates over the cells, and what each key explains of test/top1: the learning
    // rate (the variants' difference) 0.0121 / 0.0131 of the variance, the seed 0.0009 / 0.0131.
    choose_table_metric(h, "train loss: augmented vs tiny", "parallel coordinates");
    wait_for(h, "the parallel coordinates", |h| {
        has_label(h, "4 of 4 cells kept by the brushes")
    });
    assert!(has_label_containing(h, "Importance for test/top1"));
    assert!(has_label(h, "train.lr") && has_label(h, "train.seed"));
    assert!(has_label_containing(h, "92 %") && has_label_containing(h, "7 %"));
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
