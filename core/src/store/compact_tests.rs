//! `shiftadd compact`: a results copy keeps what reports need, thins per-step series, leaves out
//! checkpoints and runs in flight, and imports (gzip-compressed) into another database.

use std::path::Path;

use rusqlite::Connection;

use super::compact::{compact, write_file};
use super::files::is_gzip;
use super::import::import;
use super::import_tests::{hw_cost, run};
use super::*;

/// 3 epochs of 40 steps: per-step losses, per-epoch loss and top-1, histograms at epochs 0–3.
fn record(w: &Writer, run: RunId) {
    let row = |key: &str, step: i64, value: f64| MetricRow {
        run,
        key: key.into(),
        step,
        epoch: (step - 1) / 40 + 1,
        wall_time: step as f64,
        value,
    };
    let mut rows = Vec::new();
    for step in 1..=120_i64 {
        for key in [keys::TRAIN_LOSS, keys::TRAIN_LOSS_AUG] {
            rows.push(row(key, step, 1.0 / step as f64));
        }
        if step % 40 == 0 {
            // The epoch's augmented loss, as the trainer records it: its steps' mean.
            let aug = (step - 39..=step).map(|s| 1.0 / s as f64).sum::<f64>() / 40.0;
            rows.push(row(keys::TRAIN_EPOCH_LOSS_AUG, step, aug));
            let epoch = step / 40;
            rows.push(row(keys::TRAIN_EPOCH_LOSS, step, 0.5 + epoch as f64));
            rows.push(row(keys::VAL_TOP1, step, 80.0 + epoch as f64));
        }
    }
    w.send(WriteOp::Metrics(rows)).expect("metrics");
    w.send(WriteOp::Histograms(
        (0..=3)
            .map(|epoch| HistogramRow {
                run,
                layer: "blocks.0.dw".into(),
                kind: "stored".into(),
                epoch,
                edges: vec![0.0, 1.0],
                counts: vec![epoch as u64],
                underflow: 0,
                overflow: 0,
                stats: serde_json::json!({"std": 1.0}),
            })
            .collect(),
    ))
    .expect("hist");
    w.send(WriteOp::Checkpoint {
        row: CheckpointRow {
            run,
            epoch: 3,
            step: 120,
            path: "/ckpt/run/epoch-0003".into(),
            rng_state: "{}".into(),
        },
        keep: 2,
    })
    .expect("ck");
    w.send(hw_cost(run)).expect("hw");
}

/// A study with a finished cell, a stopped one and a pruned one.
fn source(db: &Path) -> [RunId; 2] {
    let w = Writer::open(db).expect("open");
    let done = w.create_run(run("done", 0)).expect("done");
    let stopped = w.create_run(run("stopped", 1)).expect("stopped");
    let pruned = w.create_run(run("pruned", 2)).expect("pruned");
    for id in [done, stopped] {
        w.status(id, Status::Running, None);
        record(&w, id);
    }
    // Pruned before it recorded anything worth keeping here (its status is what counts).
    w.status(pruned, Status::Running, None);
    let study = w.create_study("s", "identity-1", "{}").expect("study");
    for (seed, r) in [(0, done), (1, stopped), (2, pruned)] {
        w.send(WriteOp::StudyRun(StudyRunRow {
            study,
            variant: "shift".into(),
            seed,
            run: r,
        }))
        .expect("cell");
    }
    w.status(done, Status::Finished, None);
    w.status(stopped, Status::Stopped, Some("stopped by the user".into()));
    w.status(pruned, Status::Pruned, Some("pruned after epoch 2".into()));
    w.flush().expect("flush");
    [done, stopped]
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn a_compact_copy_keeps_the_results_and_imports_gzipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("full.db");
    source(&db);
    let out = dir.path().join("results").join("r.db.gz");
    let sum = compact(&db, &out, 8).expect("compact");
    assert!(is_gzip(&out), "a .gz name is written compressed");
    assert_eq!((sum.runs, sum.unsettled, sum.studies), (2, 1, 1), "{sum}");
    assert_eq!(sum.metrics_before, 2 * (2 * 120 + 3 * 3));
    assert!(sum.bytes > 0 && sum.bytes == std::fs::metadata(&out).expect("meta").len());

    let mine = dir.path().join("mine.db");
    let got = import(&mine, &out).expect("import");
    assert_eq!((got.added, got.studies_added, got.cells_added), (2, 1, 2));
    let c = Connection::open(&mine).expect("open");
    assert_eq!(count(&c, "SELECT COUNT(*) FROM checkpoints"), 0);
    assert_eq!(count(&c, "SELECT COUNT(*) FROM hw_cost"), 0);
    assert_eq!(
        count(&c, "SELECT COUNT(*) FROM runs WHERE name = 'stopped'"),
        0,
        "a run in flight is left out: its cell trains again"
    );
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(*) FROM runs WHERE name = 'pruned' AND status = 'pruned'"
        ),
        1,
        "a pruned cell is settled: kept, so that it is not trained again"
    );
    // Per step: at most 8 points an epoch, every epoch's last step among them.
    let per_epoch: Vec<(String, i64, i64, i64)> = c
        .prepare(
            "SELECT key, epoch, COUNT(*), MAX(step) FROM metrics
             WHERE key IN ('train/loss', 'train/loss_aug') GROUP BY key, epoch ORDER BY key, epoch",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(per_epoch.len(), 6);
    for (key, epoch, n, last) in &per_epoch {
        assert!((2..=8).contains(n), "{key} epoch {epoch}: {n} points");
        assert_eq!(*last, epoch * 40, "{key} epoch {epoch} keeps its last step");
    }
    // Per epoch: every row, exact.
    assert_eq!(
        count(
            &c,
            "SELECT COUNT(*) FROM metrics
             WHERE key IN ('train/epoch_loss', 'train/epoch_loss_aug', 'val/top1')"
        ),
        9
    );
    let aug1: f64 = c
        .query_row(
            "SELECT value FROM metrics WHERE key = 'train/epoch_loss_aug' AND epoch = 1",
            [],
            |r| r.get(0),
        )
        .expect("epoch 1");
    let full: f64 = (1..=40).map(|s| 1.0 / f64::from(s)).sum::<f64>() / 40.0;
    assert!((aug1 - full).abs() < 1e-12, "{aug1} vs {full}");
    let epochs: Vec<i64> = c
        .prepare("SELECT epoch FROM histograms ORDER BY epoch")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(epochs, [0, 3], "the first and last epoch's histograms");
    let r = Reader::open(&mine).expect("reader");
    let runs = r.runs().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0].id, 0);
    assert_eq!(r.study_runs(1).expect("cells").len(), 2);
    drop(r);

    // Importing the copy into the database it came from changes nothing there.
    let before = count(
        &Connection::open(&db).expect("open"),
        "SELECT COUNT(*) FROM metrics",
    );
    let back = import(&db, &out).expect("import back");
    assert_eq!((back.added, back.replaced, back.kept), (0, 0, 1), "{back}");
    assert_eq!(
        count(
            &Connection::open(&db).expect("open"),
            "SELECT COUNT(*) FROM metrics"
        ),
        before
    );
}

#[test]
fn compact_refuses_its_own_source_and_a_bad_gzip_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("full.db");
    source(&db);
    let e = compact(&db, &db, 8).expect_err("own source");
    assert!(e.to_string().contains("being compacted"), "{e}");

    let out = dir.path().join("r.db.gz");
    compact(&db, &out, 8).expect("compact");
    let bytes = std::fs::read(&out).expect("read");
    let cut = dir.path().join("cut.db.gz");
    write_file(&cut, &bytes[..bytes.len() / 2]);
    let mine = dir.path().join("mine.db");
    drop(Writer::open(&mine).expect("create"));
    let e = import(&mine, &cut).expect_err("truncated");
    assert!(e.to_string().contains("cut.db.gz"), "names the file: {e}");
    assert!(e.to_string().contains("gzip"), "says what is wrong: {e}");
    let c = Connection::open(&mine).expect("open");
    assert_eq!(count(&c, "SELECT COUNT(*) FROM runs"), 0);
}
