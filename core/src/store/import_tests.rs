//! `shiftadd import`'s merge: idempotence, newer snapshots, studies and NAS candidates, older
//! schemas, and files refused with nothing changed.

use std::path::Path;

use rusqlite::Connection;

use super::import::{ImportSummary, import};
use super::schema::MIGRATIONS;
use super::*;

pub(super) fn run(name: &str, seed: u64) -> NewRun {
    NewRun {
        name: name.into(),
        config_toml: format!("[train]\nseed = {seed}\n"),
        dataset: "synthetic".into(),
        model: "micro".into(),
        operator: "add".into(),
        seed,
        tags: String::new(),
        provenance: String::new(),
    }
}

fn metrics(run: RunId, steps: std::ops::Range<i64>) -> WriteOp {
    WriteOp::Metrics(
        steps
            .map(|s| MetricRow {
                run,
                key: keys::TRAIN_LOSS.into(),
                step: s,
                epoch: 1,
                wall_time: s as f64,
                value: 1.0 / (s as f64 + 1.0),
            })
            .collect(),
    )
}

/// One per-layer hardware cost row of `run`.
pub(super) fn hw_cost(run: RunId) -> WriteOp {
    WriteOp::HwCost(vec![HwCostRow {
        run,
        hw_model: "shiftaddnas".into(),
        model: "tiny".into(),
        layer_index: 0,
        layer: "stem".into(),
        detail: serde_json::json!({"energy_mj": 0.5}),
    }])
}

/// A database with a finished study cell, a running one, and a NAS search whose candidate
/// names its proxy run; the writer is returned so a test can record more.
fn source(db: &Path) -> (Writer, [RunId; 3]) {
    let w = Writer::open(db).expect("open");
    let a = w.create_run(run("cell-a", 0)).expect("a");
    let b = w.create_run(run("cell-b", 1)).expect("b");
    let search = w.create_run(run("search", 0)).expect("search");
    for id in [a, b, search] {
        w.status(id, Status::Running, None);
        w.log(id, log::Level::Info, format!("run {id} started"));
    }
    w.send(metrics(a, 1..40)).expect("m");
    w.send(metrics(b, 1..10)).expect("m");
    w.send(WriteOp::Checkpoint {
        row: CheckpointRow {
            run: a,
            epoch: 1,
            step: 39,
            path: "/ckpt/a/epoch-0001".into(),
            rng_state: "{\"rng\":7}".into(),
        },
        keep: 2,
    })
    .expect("ck");
    w.send(hw_cost(a)).expect("hw");
    w.send(WriteOp::Histograms(vec![HistogramRow {
        run: a,
        layer: "stem".into(),
        kind: "stored".into(),
        epoch: 0,
        edges: vec![0.0, 1.0],
        counts: vec![3],
        underflow: 0,
        overflow: 0,
        stats: serde_json::json!({"mean": 0.5}),
    }]))
    .expect("hist");
    w.send(WriteOp::NasCandidate(NasCandidateRow {
        run: search,
        stage: 1,
        generation: 0,
        arch: "{\"w\":1}".into(),
        cost: 1.5,
        proxy_accuracy: Some(0.4),
        status: CandidateStatus::Done,
        proxy_run: Some(b),
        slurm: Some("77_1 COMPLETED (exit 0:0)".into()),
    }))
    .expect("cand");
    let study = w.create_study("s", "identity-1", "{}").expect("study");
    for (variant, seed, r) in [("add", 0, a), ("add", 1, b)] {
        w.send(WriteOp::StudyRun(StudyRunRow {
            study,
            variant: variant.into(),
            seed,
            run: r,
        }))
        .expect("cell");
    }
    w.status(a, Status::Finished, None);
    w.flush().expect("flush");
    (w, [a, b, search])
}

/// Every table's rows in a fixed order, as text: equal before and after means nothing changed.
fn contents(db: &Path) -> String {
    let c = Connection::open(db).expect("raw");
    let mut out = String::new();
    for (table, order) in [
        ("runs", "id"),
        ("metrics", "run_id, key, step"),
        ("histograms", "run_id, layer, kind, epoch"),
        ("hw_cost", "run_id, hw_model, model, layer_index"),
        ("checkpoints", "run_id, epoch"),
        ("logs", "run_id, wall_time, message"),
        ("nas_candidates", "id"),
        ("studies", "id"),
        ("study_runs", "study_id, variant, seed"),
    ] {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .expect("select");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("rows");
        for row in rows {
            out.push_str(table);
            out.push(' ');
            out.push_str(&row.expect("row").join("|"));
            out.push('\n');
        }
    }
    out
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db)
        .expect("raw")
        .query_row(sql, [], |r| r.get(0))
        .expect("count")
}

/// A consistent copy of a live database, as a cluster job ships it.
fn snapshot(from: &Path, to: &Path) {
    let c = Connection::open(from).expect("raw");
    c.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .expect("vacuum into");
}

#[test]
fn a_file_imported_twice_is_merged_once_with_everything_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("job.db"), dir.path().join("main.db"));
    let (w, [a, b, search]) = source(&src);
    // Tags that name the search and the study by their ids in the file.
    let conn = Connection::open(&src).expect("src");
    for (id, tags) in [
        (a, "study,study1".to_owned()),
        (b, format!("nas-proxy,nas{search},keep9")),
    ] {
        conn.execute(
            "UPDATE runs SET tags = ?1 WHERE id = ?2",
            rusqlite::params![tags, id],
        )
        .expect("tags");
    }
    drop(conn);
    // The target already holds a run and a study of its own, so local ids differ from the file's.
    let local = Writer::open(&dst).expect("dst");
    local.create_run(run("mine", 9)).expect("mine");
    local
        .create_study("other", "identity-0", "{}")
        .expect("study");
    local.flush().expect("flush");
    drop(local);
    let first = import(&dst, &src).expect("import");
    assert_eq!(
        first,
        ImportSummary {
            added: 3,
            studies_added: 1,
            cells_added: 2,
            ..ImportSummary::default()
        }
    );
    let r = Reader::open(&dst).expect("reader");
    let runs = r.runs().expect("runs");
    assert_eq!(runs.len(), 4);
    let cell_a = runs.iter().find(|s| s.name == "cell-a").expect("a");
    let cell_b = runs.iter().find(|s| s.name == "cell-b").expect("b");
    let search = runs.iter().find(|s| s.name == "search").expect("search");
    assert_ne!(cell_a.id, a, "imported runs take new local ids");
    assert_eq!(cell_a.status, Status::Finished);
    assert_eq!(r.metrics(cell_a.id).expect("m").len(), 39);
    assert_eq!(r.hw_cost(cell_a.id).expect("hw").len(), 1);
    assert_eq!(r.histograms(cell_a.id).expect("h").len(), 1);
    let ck = r.last_checkpoint(cell_a.id).expect("q").expect("ck");
    assert_eq!((ck.step, ck.path.as_str()), (39, "/ckpt/a/epoch-0001"));
    assert_eq!(r.logs(cell_a.id).expect("logs").len(), 1);
    let cands = r.nas_candidates(search.id).expect("cands");
    assert_eq!(cands.len(), 1);
    assert_eq!(
        cands[0].proxy_run,
        Some(cell_b.id),
        "proxy run mapped to its local id"
    );
    let study: Vec<_> = r
        .studies()
        .expect("studies")
        .into_iter()
        .filter(|s| s.name == "s")
        .collect();
    assert_eq!(study.len(), 1);
    assert_ne!(study[0].id, 1, "the file's study takes a new local id");
    assert_eq!(
        (cell_a.tags.as_str(), cell_b.tags.clone()),
        (
            format!("study,study{}", study[0].id).as_str(),
            format!("nas-proxy,nas{},keep9", search.id)
        ),
        "tags name the search and the study by their local ids"
    );
    let cells = r.study_runs(study[0].id).expect("cells");
    assert_eq!(
        cells.iter().map(|c| c.run).collect::<Vec<_>>(),
        vec![cell_a.id, cell_b.id]
    );
    drop(r);
    let before = contents(&dst);
    let again = import(&dst, &src).expect("again");
    assert_eq!(
        again,
        ImportSummary {
            unchanged: 3,
            ..ImportSummary::default()
        }
    );
    assert!(!again.changed());
    assert_eq!(contents(&dst), before, "a second import changes no row");
    drop(w);
}

#[test]
fn a_newer_snapshot_of_a_running_run_replaces_its_rows_and_an_older_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let dst = dir.path().join("main.db");
    let src = dir.path().join("job.db");
    let (w, [_, b, _]) = source(&src);
    let old = dir.path().join("snap-1.db");
    snapshot(&src, &old);
    import(&dst, &old).expect("first snapshot");
    let local_b = || {
        Reader::open(&dst)
            .expect("reader")
            .runs()
            .expect("runs")
            .into_iter()
            .find(|s| s.name == "cell-b")
            .expect("b")
    };
    let before = local_b();
    assert_eq!(before.status, Status::Running);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Training went on: steps 10..30, a log line, then the run finished.
    w.send(metrics(b, 10..30)).expect("m");
    w.log(b, log::Level::Info, "epoch 1 done".into());
    w.status(b, Status::Finished, None);
    w.flush().expect("flush");
    let new = dir.path().join("snap-2.db");
    snapshot(&src, &new);
    let s = import(&dst, &new).expect("newer snapshot");
    assert_eq!((s.replaced, s.unchanged, s.added), (1, 2, 0), "{s}");
    let after = local_b();
    assert_eq!(after.id, before.id, "the run keeps its local id");
    assert_eq!(after.status, Status::Finished);
    let r = Reader::open(&dst).expect("reader");
    let steps: Vec<i64> = r
        .metrics(after.id)
        .expect("m")
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, (1..30).collect::<Vec<_>>(), "each step once");
    assert_eq!(r.logs(after.id).expect("logs").len(), 2);
    drop(r);
    let settled = contents(&dst);
    let s = import(&dst, &old).expect("older snapshot");
    assert_eq!((s.kept, s.replaced, s.added), (1, 0, 0), "{s}");
    assert_eq!(contents(&dst), settled, "an older snapshot changes nothing");
    assert_eq!(
        count(&dst, "SELECT COUNT(*) FROM runs"),
        3,
        "no run is ever duplicated"
    );
    drop(w);
}

#[test]
fn an_older_schema_is_migrated_in_a_copy_and_names_its_runs_alike_every_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let (old, dst) = (dir.path().join("v4.db"), dir.path().join("main.db"));
    let c = Connection::open(&old).expect("raw");
    for sql in &MIGRATIONS[..4] {
        c.execute_batch(sql).expect("migration");
    }
    c.pragma_update(None, "user_version", 4).expect("v4");
    c.execute(
        "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed, app_version,
                           created_at, owner_host, owner_pid)
         VALUES (1, 'legacy', 'finished', '', 'synthetic', 'micro', 'mult', 0, '0', 12.5, 'h', 7)",
        [],
    )
    .expect("run");
    drop(c);
    let before = std::fs::read(&old).expect("read");
    assert_eq!(import(&dst, &old).expect("import").added, 1);
    assert_eq!(
        std::fs::read(&old).expect("read"),
        before,
        "the file is only read"
    );
    assert_eq!(import(&dst, &old).expect("again").unchanged, 1);
    // The file itself, once migrated, names the run as its imported copy does.
    drop(Writer::open(&old).expect("migrate the file"));
    assert_eq!(import(&dst, &old).expect("migrated file").unchanged, 1);
    assert_eq!(count(&dst, "SELECT COUNT(*) FROM runs"), 1);
}

#[test]
fn bad_files_are_refused_with_one_line_and_nothing_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    let dst = dir.path().join("main.db");
    let (w, _) = source(&dir.path().join("good.db"));
    drop(w);
    import(&dst, &dir.path().join("good.db")).expect("good");
    let before = contents(&dst);

    let missing = dir.path().join("missing.db");
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "these are notes, not a database ".repeat(200)).expect("write");
    let empty = dir.path().join("empty.db");
    Connection::open(&empty)
        .expect("raw")
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("other");
    let newer = dir.path().join("newer.db");
    snapshot(&dir.path().join("good.db"), &newer);
    Connection::open(&newer)
        .expect("raw")
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    // A damaged page in the middle of a database with enough rows to span many pages.
    let damaged = dir.path().join("damaged.db");
    {
        let w = Writer::open(&damaged).expect("open");
        let id = w.create_run(run("big", 0)).expect("run");
        w.send(metrics(id, 1..3000)).expect("m");
        w.flush().expect("flush");
    }
    let mut bytes = std::fs::read(&damaged).expect("read");
    assert!(bytes.len() > 16 * 4096, "{} bytes", bytes.len());
    for b in &mut bytes[8 * 4096..9 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, bytes).expect("write");
    // A run name written by another tool as bytes that are not UTF-8.
    let not_utf8 = dir.path().join("not-utf8.db");
    snapshot(&dir.path().join("good.db"), &not_utf8);
    Connection::open(&not_utf8)
        .expect("raw")
        .execute(
            "UPDATE runs SET name = CAST(X'63656C6CFF' AS TEXT) WHERE name = 'cell-b'",
            [],
        )
        .expect("update");

    for (file, expect) in [
        (&missing, "no such file"),
        (&text, "not an SQLite file"),
        (&empty, "has no shiftadd tables"),
        (&newer, "schema version 99"),
        (&damaged, "is damaged"),
        (&not_utf8, "runs.name holds text that is not UTF-8"),
        (&dst, "being imported into"),
    ] {
        let err = import(&dst, file).expect_err("refused").to_string();
        assert!(err.contains(expect), "{}: {err}", file.display());
        assert!(err.contains("nothing was changed"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert_eq!(
            contents(&dst),
            before,
            "{} changed the database",
            file.display()
        );
    }
}

/// Five finished runs, of which three damaged: `zombie` (an unknown status), `yesterday` (text
/// where a time belongs), `x-metric` (text in its validation metric's value).
fn write_damaged(hostile: &Path) {
    {
        let w = Writer::open(hostile).expect("open");
        for (i, name) in ["fine", "zombie", "yesterday", "x-metric", "fine-too"]
            .iter()
            .enumerate()
        {
            let id = w.create_run(run(name, i as u64)).expect("run");
            w.send(metrics(id, 0..3)).expect("m");
            w.send(WriteOp::Metrics(vec![MetricRow {
                run: id,
                key: keys::VAL_TOP1.into(),
                step: 2,
                epoch: 1,
                wall_time: 2.0,
                value: 50.0,
            }]))
            .expect("val");
            w.status(id, Status::Finished, None);
        }
        w.flush().expect("flush");
    }
    Connection::open(hostile)
        .expect("raw")
        .execute_batch(
            "UPDATE runs SET status = 'zombie' WHERE name = 'zombie';
             UPDATE runs SET created_at = 'yesterday' WHERE name = 'yesterday';
             UPDATE metrics SET value = 'x' WHERE key = 'val/top1'
                 AND run_id = (SELECT id FROM runs WHERE name = 'x-metric');",
        )
        .expect("damage");
}

/// The listing of [`write_damaged`]'s file: all five runs, the three damaged ones as damaged
/// with the column named.
fn assert_listed_as_damaged(listed: &[RunSummary]) {
    let shown: Vec<(String, Status, Option<String>)> = listed
        .iter()
        .map(|r| (r.name.clone(), r.status, r.reason.clone()))
        .collect();
    assert_eq!(shown.len(), 5, "{shown:?}");
    let damaged: Vec<&str> = listed
        .iter()
        .filter(|r| r.status == Status::Damaged)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(damaged, ["zombie", "yesterday", "x-metric"], "{shown:?}");
    let reason = |name: &str| {
        let r = listed.iter().find(|r| r.name == name).expect("listed");
        r.reason.clone().unwrap_or_default()
    };
    assert!(
        reason("zombie").contains("\"zombie\""),
        "{}",
        reason("zombie")
    );
    assert!(
        reason("yesterday").contains("created_at"),
        "{}",
        reason("yesterday")
    );
    assert!(
        reason("x-metric").contains("metric's value"),
        "{}",
        reason("x-metric")
    );
    assert!(
        listed
            .iter()
            .filter(|r| r.status == Status::Finished)
            .all(|r| r.last_val_top1 == Some(50.0))
    );
}

/// Issue 43, item 2: an unknown status, text where a time belongs, and text in a metric's value
/// each broke every listing, and import took such a file in.
#[test]
fn a_damaged_row_is_listed_as_damaged_named_by_check_and_refused_by_import() {
    let dir = tempfile::tempdir().expect("tmp");
    let hostile = dir.path().join("hostile.db");
    write_damaged(&hostile);

    // Listed: every run, the three damaged ones as damaged with the column named.
    let listed = Reader::open(&hostile)
        .expect("reader")
        .runs()
        .expect("listing");
    assert_listed_as_damaged(&listed);

    let reader = Reader::open(&hostile).expect("reader");
    let summaries = reader.metric_summary(keys::VAL_TOP1).expect("summary");
    assert_eq!(
        summaries.len(),
        4,
        "the damaged value is left out, not the summary"
    );

    // Named by check: table, row, column, what it holds.
    let report = check(&hostile).expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let named: Vec<String> = report.damaged.iter().map(ToString::to_string).collect();
    assert_eq!(named.len(), 3, "{named:?}");
    assert!(
        named
            .iter()
            .any(|d| d.starts_with("runs row id = 2: status holds the text \"zombie\"")),
        "{named:?}"
    );
    assert!(
        named
            .iter()
            .any(|d| d.starts_with("runs row id = 3: created_at holds the text \"yesterday\"")),
        "{named:?}"
    );
    assert!(
        named
            .iter()
            .any(|d| d.starts_with("metrics row run_id = 4, key = 'val/top1', step = 2: value")),
        "{named:?}"
    );

    // Refused by import, naming the row and column, before the target is even created; a
    // database that exists is left as it was.
    let fresh = dir.path().join("fresh.db");
    let err = import(&fresh, &hostile).expect_err("refused").to_string();
    assert!(
        err.contains("nothing was changed")
            && err.contains(
                "metrics row run_id = 4, key = 'val/top1', step = 2: value holds the text"
            ),
        "{err}"
    );
    assert!(!fresh.exists(), "the target was created");
    let dst = dir.path().join("main.db");
    let (w, _) = source(&dir.path().join("good.db"));
    drop(w);
    import(&dst, &dir.path().join("good.db")).expect("good");
    let before = contents(&dst);
    import(&dst, &hostile).expect_err("refused");
    assert_eq!(contents(&dst), before);

    // A damaged run can be deleted, and then the file is sound.
    for name in ["zombie", "yesterday", "x-metric"] {
        let id = listed.iter().find(|r| r.name == name).expect("listed").id;
        manage::delete(&hostile, id).expect("delete a damaged run");
    }
    assert!(check(&hostile).expect("check").damaged.is_empty());
    import(&dst, &hostile).expect("now it imports");
}

#[test]
fn a_target_holding_text_that_is_not_utf8_is_merged_into_without_a_panic() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("job.db"), dir.path().join("main.db"));
    let (w, _) = source(&src);
    drop(w);
    import(&dst, &src).expect("first");
    // Another tool wrote a name the importer's run comparison reads back.
    Connection::open(&dst)
        .expect("raw")
        .execute(
            "UPDATE runs SET name = CAST(X'FF' AS TEXT) WHERE name = 'cell-a'",
            [],
        )
        .expect("update");
    let summary = import(&dst, &src).expect("second import");
    assert_eq!(count(&dst, "SELECT COUNT(*) FROM runs"), 3, "{summary:?}");
}
