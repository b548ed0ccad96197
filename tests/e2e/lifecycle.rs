//! SIGKILL mid-epoch, then interrupted → resume → finished, with an exact metric history.

use std::time::{Duration, Instant};

use crate::support::{bin, db, run_ok, runs_json, s, tiny_config};

#[test]
fn killed_run_is_interrupted_then_resumes_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let epochs = 4;
    let cfg = tiny_config(dir.path(), "kill", 2000, epochs); // 40 steps per epoch
    let mut child = bin()
        .args(["train", s(&cfg), "--db", s(&dbp)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");

    // Wait for a checkpoint and some steps recorded after it, then kill -9 mid-epoch.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (ckpt_step, run) = loop {
        assert!(Instant::now() < deadline, "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(50));
        if !dbp.exists() {
            continue;
        }
        let c = db(&dbp);
        let ck: Option<(i64, i64)> = c
            .query_row(
                "SELECT step, run_id FROM checkpoints ORDER BY step DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        let Some((step, run)) = ck else { continue };
        let last: i64 = c
            .query_row(
                "SELECT COALESCE(MAX(step), 0) FROM metrics WHERE key = 'train/loss'",
                [],
                |r| r.get(0),
            )
            .expect("max step");
        if last >= step + 5 && last % 40 != 0 {
            break (step, run);
        }
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let c = db(&dbp);
    let after_ckpt: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM metrics WHERE step > ?1",
            [ckpt_step],
            |r| r.get(0),
        )
        .expect("count");
    assert!(
        after_ckpt > 0,
        "rows after the checkpoint exist before resume"
    );
    let status: String = c
        .query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .expect("status");
    assert_eq!(status, "running", "nobody has looked yet");
    drop(c);

    // The next start marks it interrupted.
    let listed = runs_json(&dbp);
    assert_eq!(listed[0]["status"], "interrupted", "{listed:?}");

    let resume_start = shiftadd_core::store::now_secs();
    run_ok(&["resume", &run.to_string(), "--db", s(&dbp)]);
    let listed = runs_json(&dbp);
    assert_eq!(listed[0]["status"], "finished");
    assert_eq!(listed[0]["epochs_done"], epochs as i64);

    let c = db(&dbp);
    let dupes: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM (SELECT key, step FROM metrics WHERE run_id = ?1 GROUP BY key, step HAVING COUNT(*) > 1)",
            [run],
            |r| r.get(0),
        )
        .expect("dupes");
    assert_eq!(dupes, 0);
    let stale: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM metrics WHERE run_id = ?1 AND step > ?2 AND wall_time < ?3",
            rusqlite::params![run, ckpt_step, resume_start],
            |r| r.get(0),
        )
        .expect("stale");
    assert_eq!(
        stale, 0,
        "no row after the checkpoint survives from before the kill"
    );
    let steps: Vec<i64> = c
        .prepare("SELECT step FROM metrics WHERE run_id = ?1 AND key = 'train/loss' ORDER BY step")
        .expect("prepare")
        .query_map([run], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let expected: Vec<i64> = (1..=40 * epochs as i64).collect();
    assert_eq!(steps, expected, "every step exactly once, none missing");
    let reason: Option<String> = c
        .query_row("SELECT reason FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .expect("reason");
    assert_eq!(reason, None);
}

#[test]
fn resuming_a_finished_run_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "done", 200, 1);
    run_ok(&["train", s(&cfg), "--db", s(&dbp)]);
    let err = crate::support::run_err(&["resume", "1", "--db", s(&dbp)]);
    assert!(err.contains("already finished"), "{err}");
    let err = crate::support::run_err(&["resume", "42", "--db", s(&dbp)]);
    assert!(err.contains("42"), "{err}");
}
