//! Run management: each edit changes what it says and nothing else; delete removes the run's
//! rows and its checkpoint folder, and nothing of any other run nor anything outside the
//! database's own checkpoint folder, whatever paths the database records.

use super::manage::{self, RunEdit};
use super::*;

fn new_run(name: &str, tags: &str) -> NewRun {
    NewRun {
        name: name.into(),
        config_toml: String::new(),
        dataset: "synthetic".into(),
        model: "micro".into(),
        operator: "add".into(),
        seed: 0,
        tags: tags.into(),
        provenance: "{\"cpu\":\"test\"}".into(),
    }
}

/// Every row of `table` as text, ordered, for before/after comparisons.
fn dump(db: &std::path::Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
        .expect("prepare");
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("|"))
    })
    .expect("query")
    .collect::<rusqlite::Result<_>>()
    .expect("rows")
}

/// A checkpoint of `run` in database `db`'s own checkpoint folder, recorded; its folder.
fn with_checkpoint(w: &Writer, db: &std::path::Path, run: RunId) -> std::path::PathBuf {
    let folder = manage::checkpoint_dir(db, run);
    std::fs::create_dir_all(&folder).expect("mkdir");
    let stem = folder.join("epoch-0001");
    for ext in ["model.ot", "optim.ot"] {
        std::fs::write(folder.join(format!("epoch-0001.{ext}")), b"x").expect("write");
    }
    w.send(WriteOp::Checkpoint {
        row: CheckpointRow {
            run,
            epoch: 1,
            step: 10,
            path: stem.display().to_string(),
            rng_state: "0".into(),
        },
        keep: 3,
    })
    .expect("send");
    w.send(WriteOp::Metrics(vec![MetricRow {
        run,
        key: keys::VAL_TOP1.into(),
        step: 10,
        epoch: 1,
        wall_time: 0.0,
        value: 0.5,
    }]))
    .expect("send");
    folder
}

#[test]
fn edits_change_their_field_move_the_clock_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let a = w.create_run(new_run("a", "study,nas-proxy")).expect("a");
    let b = w.create_run(new_run("b", "x")).expect("b");
    w.status(a, Status::Finished, None);
    w.status(b, Status::Finished, None);
    w.flush().expect("flush");
    let b_before = dump(&db, "runs");
    manage::edit(&db, a, &RunEdit::Rename("  add-aug seed 0 ".into())).expect("rename");
    manage::edit(&db, a, &RunEdit::AddTag("keep, paper".into())).expect("tag");
    manage::edit(&db, a, &RunEdit::AddTag("keep".into())).expect("tag again");
    manage::edit(&db, a, &RunEdit::RemoveTag("nas-proxy".into())).expect("untag");
    manage::edit(&db, a, &RunEdit::SetNotes("**best** so far".into())).expect("notes");
    manage::edit(&db, a, &RunEdit::Archive(true)).expect("archive");
    let r = Reader::open(&db).expect("reader");
    let runs = r.runs().expect("runs");
    let ra = runs.iter().find(|x| x.id == a).expect("a");
    assert_eq!(ra.name, "add-aug seed 0");
    assert_eq!(ra.tags, "study,keep,paper");
    assert_eq!(ra.notes, "**best** so far");
    assert!(ra.archived);
    let rb = runs.iter().find(|x| x.id == b).expect("b");
    assert!(!rb.archived && rb.name == "b" && rb.tags == "x");
    let edited: Option<f64> = r
        .conn
        .query_row("SELECT edited_at FROM runs WHERE id = ?1", [a], |x| {
            x.get(0)
        })
        .expect("edited_at");
    assert!(edited.is_some_and(|t| t > 0.0));
    manage::edit(&db, a, &RunEdit::Archive(false)).expect("unarchive");
    assert!(!Reader::open(&db).expect("r").run(a).expect("a").archived);
    manage::edit(&db, a, &RunEdit::SetTags(" , y ,y,z".into())).expect("set tags");
    assert_eq!(Reader::open(&db).expect("r").run(a).expect("a").tags, "y,z");
    // Bad requests change nothing and say what is wrong.
    let e = manage::edit(&db, a, &RunEdit::Rename("  ".into())).expect_err("empty name");
    assert!(e.to_string().contains("cannot be empty"), "{e}");
    let e = manage::edit(&db, 99, &RunEdit::Archive(true)).expect_err("no run");
    assert!(e.to_string().contains("run 99 does not exist"), "{e}");
    assert_eq!(
        Reader::open(&db).expect("r").run(a).expect("a").name,
        "add-aug seed 0"
    );
    // Run b's row never changed.
    let b_rows: Vec<String> = dump(&db, "runs")
        .into_iter()
        .filter(|row| row.contains("Text(\"b\")"))
        .collect();
    assert_eq!(
        b_rows,
        b_before
            .into_iter()
            .filter(|row| row.contains("Text(\"b\")"))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.provenance(a).expect("provenance"), "{\"cpu\":\"test\"}");
}

#[test]
fn delete_removes_the_run_its_rows_and_its_checkpoint_folder_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let a = w.create_run(new_run("a", "")).expect("a");
    let b = w.create_run(new_run("b", "")).expect("b");
    let live = w.create_run(new_run("live", "")).expect("live");
    let fa = with_checkpoint(&w, &db, a);
    let fb = with_checkpoint(&w, &db, b);
    w.status(a, Status::Finished, None);
    w.status(b, Status::Stopped, None);
    w.status(live, Status::Running, None);
    w.send(WriteOp::NasCandidate(NasCandidateRow {
        run: b,
        stage: 1,
        generation: 0,
        arch: "{}".into(),
        cost: 1.0,
        proxy_accuracy: Some(0.5),
        status: CandidateStatus::Done,
        proxy_run: Some(a),
        slurm: None,
    }))
    .expect("candidate");
    w.flush().expect("flush");
    let b_metrics: Vec<String> = dump(&db, "metrics")
        .into_iter()
        .filter(|r| r.contains(&format!("Integer({b})|")))
        .collect();
    let gone = manage::delete(&db, a).expect("delete");
    assert_eq!(gone.folders, vec![fa.clone()]);
    assert_eq!(gone.files, 2);
    assert!(!fa.exists(), "its checkpoint folder is removed");
    assert!(
        fb.join("epoch-0001.model.ot").exists(),
        "another run's files stay"
    );
    let r = Reader::open(&db).expect("reader");
    assert!(matches!(r.run(a), Err(StoreError::NoRun(_))));
    assert!(r.metrics(a).expect("metrics").is_empty());
    assert!(r.last_checkpoint(a).expect("ck").is_none());
    let kept: Vec<String> = dump(&db, "metrics");
    assert_eq!(kept, b_metrics, "only run b's metrics are left");
    let cands = r.nas_candidates(b).expect("candidates");
    assert_eq!(cands.len(), 1, "the candidate keeps its figures");
    assert_eq!(cands[0].proxy_run, None);
    assert_eq!(cands[0].proxy_accuracy, Some(0.5));
    // An active run is refused, and keeps everything.
    let e = manage::delete(&db, live).expect_err("active");
    assert!(e.to_string().contains("stop it before deleting"), "{e}");
    assert!(Reader::open(&db).expect("r").run(live).is_ok());
    // A folder holding something else than checkpoints is left (only the checkpoints go).
    std::fs::write(fb.join("notes.txt"), b"mine").expect("write");
    let gone = manage::delete(&db, b).expect("delete b");
    assert!(gone.folders.is_empty());
    assert_eq!(gone.files, 2);
    assert!(fb.join("notes.txt").exists());
}

#[test]
fn metric_keys_and_summaries() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let a = w.create_run(new_run("a", "")).expect("a");
    let b = w.create_run(new_run("b", "")).expect("b");
    let row = |run, key: &str, step, value| MetricRow {
        run,
        key: key.into(),
        step,
        epoch: 0,
        wall_time: 0.0,
        value,
    };
    w.send(WriteOp::Metrics(vec![
        row(a, "val/top1", 1, 0.4),
        row(a, "val/top1", 2, 0.7),
        row(a, "val/top1", 3, 0.6),
        row(a, "train/loss", 1, 2.0),
        row(b, "val/top1", 5, 0.1),
        row(b, "sys/rss_mb", 5, 100.0),
    ]))
    .expect("send");
    w.flush().expect("flush");
    let r = Reader::open(&db).expect("reader");
    assert_eq!(
        r.metric_keys().expect("keys"),
        ["sys/rss_mb", "train/loss", "val/top1"]
    );
    let s = r.metric_summary("val/top1").expect("summary");
    assert_eq!(
        s,
        vec![
            MetricSummary {
                run: a,
                last: 0.6,
                max: 0.7,
                min: 0.4
            },
            MetricSummary {
                run: b,
                last: 0.1,
                max: 0.1,
                min: 0.1
            }
        ]
    );
}

/// A hostile (or imported) database whose checkpoint rows name files outside the project: delete
/// removes the run's rows and touches none of them, nor what a link in its own folder points at.
#[test]
fn delete_never_trusts_a_recorded_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let outside = dir.path().join("papers");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let precious = [
        "important.txt",
        "important.tex",
        "epoch-0001.model.ot",
        "run-1",
    ];
    for f in precious {
        std::fs::write(outside.join(f), b"mine").expect("write");
    }
    let w = Writer::open(&db).expect("open");
    let run = w.create_run(new_run("imported", "")).expect("run");
    for (epoch, stem) in [
        (1, "important"),
        (2, "epoch-0001"),
        (3, "../papers/important"),
    ] {
        let path = if stem.starts_with("..") {
            stem.to_owned() // relative: resolved against the database's folder before
        } else {
            outside.join(stem).display().to_string()
        };
        w.send(WriteOp::Checkpoint {
            row: CheckpointRow {
                run,
                epoch,
                step: 10 * epoch,
                path,
                rng_state: "0".into(),
            },
            keep: 10,
        })
        .expect("send");
    }
    w.status(run, Status::Finished, None);
    w.flush().expect("flush");
    drop(w);
    // Its own folder is a link to the outside folder.
    let own = manage::checkpoint_dir(&db, run);
    std::fs::create_dir_all(own.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, &own).expect("symlink");
    let gone = manage::delete(&db, run).expect("delete");
    assert_eq!((gone.files, gone.folders.len()), (0, 0), "{gone:?}");
    for f in precious {
        assert!(outside.join(f).exists(), "{f} was deleted");
    }
    assert!(
        matches!(
            Reader::open(&db).expect("r").run(run),
            Err(StoreError::NoRun(_))
        ),
        "the run's rows are gone"
    );
}

/// A zombie import: runs recorded as running elsewhere, with a heartbeat an hour in the future
/// (another machine's clock) or one that is not a time at all. Opening the database marks them
/// interrupted, saying why, and they can then be deleted; a run beating now stays running.
#[test]
fn a_heartbeat_from_another_clock_does_not_keep_a_run_alive() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let ids: Vec<RunId> = ["future", "text", "live"]
        .iter()
        .map(|n| w.create_run(new_run(n, "")).expect("run"))
        .collect();
    w.flush().expect("flush");
    drop(w);
    let c = rusqlite::Connection::open(&db).expect("raw");
    let now = now_secs();
    for (id, beat) in [
        (ids[0], rusqlite::types::Value::Real(now + 3600.0)),
        (ids[1], rusqlite::types::Value::Text("soon".into())),
        (ids[2], rusqlite::types::Value::Real(now)),
    ] {
        c.execute(
            "UPDATE runs SET status = 'running', heartbeat_at = ?2, owner_host = 'elsewhere',
             owner_pid = 1 WHERE id = ?1",
            rusqlite::params![id, beat],
        )
        .expect("zombie");
    }
    drop(c);
    drop(Writer::open(&db).expect("opens"));
    let r = Reader::open(&db).expect("reader");
    let future = r.run(ids[0]).expect("run");
    assert_eq!(future.status, Status::Interrupted);
    assert!(
        future
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("in the future")),
        "{:?}",
        future.reason
    );
    assert_eq!(r.run(ids[1]).expect("run").status, Status::Interrupted);
    assert_eq!(r.run(ids[2]).expect("run").status, Status::Running);
    drop(r);
    for id in &ids[..2] {
        manage::delete(&db, *id).expect("a swept zombie can be deleted");
    }
}

#[test]
fn a_deleted_runs_id_is_never_given_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("s.db");
    let w = Writer::open(&db).expect("open");
    let a = w.create_run(new_run("a", "")).expect("a");
    let b = w.create_run(new_run("b", "")).expect("b");
    for id in [a, b] {
        w.status(id, Status::Finished, None);
    }
    w.flush().expect("flush");
    // The newest run goes: SQLite's rowid alone would hand its id to the next run.
    manage::delete(&db, b).expect("delete b");
    let c = w.create_run(new_run("c", "")).expect("c");
    assert!(c > b, "run {c} took the id of deleted run {b} or lower");
    w.status(c, Status::Finished, None);
    w.flush().expect("flush");
    // Every run deleted, the floor still holds; and an import takes ids above it too.
    manage::delete(&db, a).expect("delete a");
    manage::delete(&db, c).expect("delete c");
    let other = dir.path().join("other.db");
    let o = Writer::open(&other).expect("other");
    let x = o.create_run(new_run("x", "")).expect("x");
    o.status(x, Status::Finished, None);
    o.flush().expect("flush");
    drop(o);
    super::import::import(&db, &other).expect("import");
    let runs = Reader::open(&db).expect("reader").runs().expect("runs");
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].id > c,
        "the imported run took id {} ≤ {c}",
        runs[0].id
    );
    let d = w.create_run(new_run("d", "")).expect("d");
    assert!(d > runs[0].id);
}
