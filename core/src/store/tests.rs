//! The store's own tests: write/read, migrations, schema versions, dead runs.

use super::schema::MIGRATIONS;
use super::*;
use rusqlite::Connection;

fn new_run(name: &str) -> NewRun {
    NewRun {
        name: name.into(),
        config_toml: String::new(),
        dataset: "synthetic".into(),
        model: "micro".into(),
        operator: "mult".into(),
        seed: 0,
        tags: String::new(),
        provenance: String::new(),
    }
}

#[test]
fn write_read_truncate_and_checkpoint_retention() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("a/b/studio.db");
    let w = Writer::open(&db).expect("open");
    let id = w.create_run(new_run("x")).expect("create");
    w.status(id, Status::Running, None);
    let rows: Vec<MetricRow> = (0..10)
        .map(|s| MetricRow {
            run: id,
            key: keys::TRAIN_LOSS.into(),
            step: s,
            epoch: s / 5,
            wall_time: 0.0,
            value: s as f64,
        })
        .collect();
    w.send(WriteOp::Metrics(rows)).expect("send");
    for e in 0..4 {
        w.send(WriteOp::Checkpoint {
            row: CheckpointRow {
                run: id,
                epoch: e,
                step: e * 2,
                path: format!("p{e}"),
                rng_state: "{}".into(),
            },
            keep: 2,
        })
        .expect("send");
    }
    assert_eq!(w.truncate_after(id, 6, 1).expect("truncate"), 3);
    w.flush().expect("flush");
    let r = Reader::open(&db).expect("reader");
    assert_eq!(r.metrics(id).expect("metrics").len(), 7);
    let ck = r.last_checkpoint(id).expect("q").expect("some");
    assert_eq!((ck.epoch, ck.step), (3, 6));
    let n: i64 = r
        .conn
        .query_row("SELECT COUNT(*) FROM checkpoints", [], |x| x.get(0))
        .expect("count");
    assert_eq!(n, 2);
    assert_eq!(r.run(id).expect("run").status, Status::Running);
    // One key's series, by step, whatever else the run recorded.
    let val = |step, value| MetricRow {
        run: id,
        key: keys::VAL_TOP1.into(),
        step,
        epoch: 0,
        wall_time: 0.0,
        value,
    };
    w.send(WriteOp::Metrics(vec![val(4, 50.0), val(2, 40.0)]))
        .expect("send");
    w.flush().expect("flush");
    let got = r.metric_series(id, keys::VAL_TOP1).expect("series");
    let got: Vec<(i64, f64)> = got.iter().map(|m| (m.step, m.value)).collect();
    assert_eq!(got, [(2, 40.0), (4, 50.0)]);
    let loss = r.metric_series(id, keys::TRAIN_LOSS).expect("series");
    assert_eq!(
        loss.iter().map(|m| m.step).collect::<Vec<_>>(),
        (0..=6).collect::<Vec<_>>()
    );
    assert!(r.metric_series(id, "no/such").expect("series").is_empty());
}

#[test]
fn v2_hardware_costs_and_configs_become_the_project_models() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("old.db");
    let c = Connection::open(&db).expect("raw");
    c.execute_batch(MIGRATIONS[0]).expect("v1");
    c.execute_batch(MIGRATIONS[1]).expect("v2");
    c.pragma_update(None, "user_version", 2).expect("v2");
    let config = "[train]\nepochs = 1\n\n[hw]\nconvention = \"full\"\nbits = 32\n";
    c.execute(
        "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed,
                           app_version, created_at)
         VALUES (1, 'old', 'finished', ?1, 'synthetic', 'micro', 'shift', 0, '0', 0)",
        [config],
    )
    .expect("run");
    c.execute(
        "INSERT INTO hw_cost VALUES (1, 'tiny', 0, 'stem', '{\"name\": \"stem\"}')",
        [],
    )
    .expect("cost");
    drop(c);
    drop(Writer::open(&db).expect("migrates"));
    let r = Reader::open(&db).expect("reader");
    let rows = r.hw_cost(1).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].hw_model.as_str(), rows[0].model.as_str()),
        ("project", "tiny")
    );
    let text: String = r
        .conn
        .query_row("SELECT config FROM runs WHERE id = 1", [], |x| x.get(0))
        .expect("config");
    assert!(
        text.contains("[hw]\nmodel = \"project\"\nconvention = \"full\""),
        "{text}"
    );
    assert!(
        text.starts_with("[train]\nepochs = 1\n"),
        "nothing else changed: {text}"
    );
}

/// v9 derives `weights/add_std` for epochs recorded before the trainer wrote it: the largest std
/// of the epoch's `stored` Add histograms, at its `train/epoch_loss` step; what a run recorded
/// itself stays.
#[test]
fn v9_backfills_the_add_weight_std_from_the_stored_histograms() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("v8.db");
    let c = Connection::open(&db).expect("raw");
    for sql in &MIGRATIONS[..8] {
        c.execute_batch(sql).expect("migration");
    }
    c.pragma_update(None, "user_version", 8).expect("v8");
    for id in [1, 2] {
        c.execute(
            "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed,
                               app_version, created_at, uid)
             VALUES (?1, 'r', 'finished', '', 'synthetic', 'micro', 'add', 0, '0', 0, ?1)",
            [id],
        )
        .expect("run");
    }
    let hist = |run: i64, layer: &str, kind: &str, epoch: i64, op: &str, std: f64| {
        c.execute(
            "INSERT INTO histograms VALUES (?1, ?2, ?3, ?4, '[]', '[]', 0, 0, ?5)",
            rusqlite::params![
                run,
                layer,
                kind,
                epoch,
                format!(r#"{{"op":"{op}","std":{std},"mean":0.0}}"#)
            ],
        )
        .expect("histogram");
    };
    let metric = |run: i64, key: &str, step: i64, epoch: i64, value: f64| {
        c.execute(
            "INSERT INTO metrics VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![run, key, step, epoch, 1000.0 + step as f64, value],
        )
        .expect("metric");
    };
    for epoch in 0..=2 {
        let e = epoch as f64;
        hist(1, "blocks.0.dw", "stored", epoch, "add", 1.0 + e);
        hist(1, "blocks.0.expand", "stored", epoch, "add", 1.5 + 2.0 * e);
        hist(1, "blocks.0.dw", "remapped", epoch, "add", 100.0);
        hist(1, "stem", "stored", epoch, "shift", 50.0);
        hist(2, "blocks.0.dw", "stored", epoch, "add", 3.0);
        if epoch > 0 {
            metric(1, "train/epoch_loss", 10 * epoch, epoch, 0.5);
            metric(2, "train/epoch_loss", 10 * epoch, epoch, 0.5);
        }
    }
    // Run 2 recorded epoch 2 itself (a run resumed with a newer trainer).
    metric(2, "weights/add_std", 20, 2, 3.25);
    drop(c);
    drop(Writer::open(&db).expect("migrates"));
    let r = Reader::open(&db).expect("reader");
    let got = |run| {
        r.metric_series(run, "weights/add_std")
            .expect("series")
            .iter()
            .map(|m| (m.step, m.epoch, m.wall_time, m.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got(1),
        [(10, 1, 1010.0, 3.5), (20, 2, 1020.0, 5.5)],
        "the largest stored Add std per epoch, at its epoch loss; none before training"
    );
    assert_eq!(got(2), [(10, 1, 1010.0, 3.0), (20, 2, 1020.0, 3.25)]);
}

/// v10 derives `train/epoch_loss_aug` for epochs recorded before the trainer wrote it: the mean
/// of the epoch's per-step `train/loss_aug`, at its `train/epoch_loss` step; runs that did not
/// augment get none, and what a run recorded itself stays.
#[test]
fn v10_backfills_the_augmented_epoch_loss_from_the_step_losses() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("v9.db");
    let c = Connection::open(&db).expect("raw");
    for sql in &MIGRATIONS[..9] {
        c.execute_batch(sql).expect("migration");
    }
    c.pragma_update(None, "user_version", 9).expect("v9");
    for id in [1, 2, 3] {
        c.execute(
            "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed,
                               app_version, created_at, uid)
             VALUES (?1, 'r', 'finished', '', 'synthetic', 'micro', 'shift', 0, '0', 0, ?1)",
            [id],
        )
        .expect("run");
    }
    let metric = |run: i64, key: &str, step: i64, epoch: i64, value: f64| {
        c.execute(
            "INSERT INTO metrics VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![run, key, step, epoch, 1000.0 + step as f64, value],
        )
        .expect("metric");
    };
    for run in [1, 2, 3] {
        for step in 1..=4 {
            let epoch = (step + 1) / 2;
            metric(run, "train/loss", step, epoch, 0.5);
            if run != 3 {
                metric(run, "train/loss_aug", step, epoch, step as f64);
            }
        }
        metric(run, "train/epoch_loss", 2, 1, 0.5);
        metric(run, "train/epoch_loss", 4, 2, 0.5);
    }
    // Run 2 recorded epoch 2 itself (a run resumed with a newer trainer).
    metric(2, "train/epoch_loss_aug", 4, 2, 9.0);
    drop(c);
    drop(Writer::open(&db).expect("migrates"));
    let r = Reader::open(&db).expect("reader");
    let got = |run| {
        r.metric_series(run, "train/epoch_loss_aug")
            .expect("series")
            .iter()
            .map(|m| (m.step, m.epoch, m.wall_time, m.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(got(1), [(2, 1, 1002.0, 1.5), (4, 2, 1004.0, 3.5)]);
    assert_eq!(got(2), [(2, 1, 1002.0, 1.5), (4, 2, 1004.0, 9.0)]);
    assert_eq!(got(3), [], "a run that did not augment gets none");
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    drop(Writer::open(&db).expect("open"));
    let c = Connection::open(&db).expect("raw");
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    let err = Writer::open(&db).err().expect("refused").to_string();
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    assert!(Reader::open(&db).is_err());
    let c = Connection::open(&db).expect("raw");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("v");
    assert_eq!(v, 99);
}

#[test]
fn a_reader_refuses_a_file_the_writer_has_not_migrated_yet() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("new.db");
    // What a reader polling a database sees between its creation and the migrations' commit.
    drop(Connection::open(&db).expect("raw"));
    let err = Reader::open(&db).err().expect("refused").to_string();
    assert!(
        err.contains("schema version 0") && err.contains("older"),
        "{err}"
    );
    drop(Writer::open(&db).expect("migrates"));
    assert!(Reader::open(&db).expect("reader").studies().is_ok());
}

#[test]
fn dead_owner_is_marked_interrupted_at_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let id = w.create_run(new_run("x")).expect("create");
    w.status(id, Status::Running, None);
    w.flush().expect("flush");
    drop(w);
    // Pretend the owner was another, now dead, process on this host.
    let c = Connection::open(&db).expect("raw");
    c.execute("UPDATE runs SET owner_pid = 999999999", [])
        .expect("update");
    drop(c);
    drop(Writer::open(&db).expect("reopen"));
    let r = Reader::open(&db).expect("reader").run(id).expect("run");
    assert_eq!(r.status, Status::Interrupted);
}

#[test]
fn many_openers_of_a_new_database_at_once_all_succeed() {
    // Issue 21 item 9: writers that open the same new file at the same moment (each its own
    // connection, as processes are) never fail, and each records its run.
    let dir = tempfile::tempdir().expect("tmp");
    let (rounds, openers) = (40, 12);
    for round in 0..rounds {
        let db = dir.path().join(format!("fresh-{round}.db"));
        let gate = std::sync::Arc::new(std::sync::Barrier::new(openers));
        let handles: Vec<_> = (0..openers)
            .map(|i| {
                let (db, gate) = (db.clone(), gate.clone());
                std::thread::Builder::new()
                    .name("opener".into())
                    .spawn(move || {
                        gate.wait();
                        let w = Writer::open(&db).map_err(|e| format!("open: {e}"))?;
                        w.create_run(new_run(&format!("r{i}")))
                            .map_err(|e| format!("create: {e}"))
                    })
                    .expect("spawn")
            })
            .collect();
        let mut ids: Vec<RunId> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<std::result::Result<_, String>>()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), openers, "round {round}: one run each");
        assert_eq!(
            Reader::open(&db)
                .expect("reader")
                .runs()
                .expect("runs")
                .len(),
            openers
        );
    }
}

/// Overwrite pages `pages` (4 KiB each, counted from 0) of `db` with noise.
fn damage(db: &std::path::Path, pages: &[u64]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open");
    for &p in pages {
        f.seek(SeekFrom::Start(p * 4096)).expect("seek");
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        f.write_all(&noise).expect("write");
    }
}

#[test]
fn a_damaged_database_says_so_and_how_to_salvage_it_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("studio.db");
    {
        let w = Writer::open(&db).expect("open");
        for i in 0..3 {
            w.create_run(new_run(&format!("r{i}"))).expect("run");
        }
        w.flush().expect("flush");
    }
    // Checkpointed into the main file by the last close: a sound file reads as such.
    let sound = check(&db).expect("check");
    assert!(sound.problems.is_empty(), "{:?}", sound.problems);
    assert_eq!(
        (sound.runs, sound.schema_version),
        (Some(3), SCHEMA_VERSION)
    );
    damage(&db, &[1, 2, 3]);
    let before = std::fs::read(&db).expect("read");
    for err in [
        Writer::open(&db)
            .err()
            .expect("the writer refuses it")
            .to_string(),
        Reader::open(&db)
            .and_then(|r| r.runs().map(|_| r))
            .err()
            .expect("the reader refuses it")
            .to_string(),
    ] {
        assert!(
            err.contains("is damaged") && err.contains(".recover"),
            "{err}"
        );
    }
    let report = check(&db).expect("check reports, not fails");
    assert!(!report.problems.is_empty());
    let after = std::fs::read(&db).expect("read");
    let first_change = before.iter().zip(&after).position(|(a, b)| a != b);
    assert!(
        first_change.is_none() && before.len() == after.len(),
        "nothing was changed: first change at byte {first_change:?}, {} -> {} bytes",
        before.len(),
        after.len()
    );
}
