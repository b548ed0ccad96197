//! SIGKILL mid-epoch, then interrupted → resume → finished, with an exact metric history.

use std::time::{Duration, Instant};

use crate::support::{bin, db, last_step, run_ok, runs_json, s, signal, tiny_config, wait_until};

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

/// Queued runs wait for the one training, start one at a time in order, and a queued run can be
/// taken off the queue before it starts.
#[test]
fn queued_runs_start_one_at_a_time() {
    use shiftadd_core::Config;
    use shiftadd_core::run::{Command, Event, spawn_manager};
    use shiftadd_core::store::Reader;

    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("queue.db");
    let manager = spawn_manager(&dbp, std::sync::Arc::new(|| {})).expect("manager");
    let cfg = Config::load(&tiny_config(dir.path(), "q", 200, 1), &[]).expect("config");
    for (i, name) in ["first", "second", "dropped"].into_iter().enumerate() {
        manager
            .commands
            .send(Command::Queue {
                config: Box::new(cfg.clone()),
                name: name.into(),
                tags: String::new(),
                request: i as u64,
            })
            .expect("send");
    }
    let mut ids = Vec::new();
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while order
        .iter()
        .filter(|e: &&(i64, &str)| e.1 != "running")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "queue did not drain: {order:?}");
        let Ok(e) = manager.events.recv_timeout(Duration::from_secs(60)) else {
            continue;
        };
        match e {
            Event::Created { run, .. } => {
                ids.push(run);
                if ids.len() == 3 {
                    // Take the third off the queue while the first still trains.
                    manager.commands.send(Command::Stop(run)).expect("stop");
                }
            }
            Event::Running { run, .. } => order.push((run, "running")),
            Event::Finished { run, .. } => order.push((run, "finished")),
            Event::Stopped { run } => order.push((run, "stopped")),
            Event::Failed { reason, .. } => panic!("{reason}"),
            _ => {}
        }
    }
    manager.shutdown();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let at = |e: (i64, &str)| {
        order
            .iter()
            .position(|x| *x == e)
            .unwrap_or_else(|| panic!("{e:?} missing from {order:?}"))
    };
    assert!(at((a, "running")) < at((a, "finished")));
    assert!(
        at((a, "finished")) < at((b, "running")),
        "the second starts after the first ends: {order:?}"
    );
    assert!(order.contains(&(a, "finished")) && order.contains(&(b, "finished")));
    assert!(
        !order.contains(&(c, "running")),
        "the dropped run never trained"
    );
    let reader = Reader::open(&dbp).expect("reader");
    let dropped = reader.run(c).expect("run");
    assert_eq!(dropped.status, shiftadd_core::store::Status::Stopped);
    assert!(dropped.reason.is_some_and(|r| r.contains("queue")));
}

/// `train/loss` per step of `run`.
fn losses(dbp: &std::path::Path, run: i64) -> Vec<(i64, f64)> {
    db(dbp)
        .prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = 'train/loss' ORDER BY step")
        .expect("prepare")
        .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn sigterm_mid_epoch_stops_with_a_checkpoint_and_the_requeued_job_continues_exactly() {
    let dir = tempfile::tempdir().expect("tmp");
    let epochs = 3;
    let cfg = tiny_config(dir.path(), "term", 2000, epochs); // 40 steps per epoch
    // The same run, never interrupted.
    let reference = dir.path().join("reference.db");
    let out = run_ok(&["train", s(&cfg), "--db", s(&reference)]);
    let expected = losses(&reference, crate::support::run_id(&out));
    assert_eq!(expected.len(), 40 * epochs);

    let dbp = dir.path().join("studio.db");
    // As a Slurm job: preempted (SIGTERM), then requeued with the same job id and command.
    let child = bin()
        .args(["train", s(&cfg), "--db", s(&dbp)])
        .env("SLURM_JOB_ID", "4242")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Some steps into the second epoch, then SIGTERM (as Slurm sends at preemption).
    wait_until(
        "training to reach the second epoch",
        Duration::from_millis(30),
        || {
            let last = last_step(&dbp);
            last > 45 && (4..30).contains(&(last % 40))
        },
    );
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().expect("reaped");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 at a stop; stderr:\n{stderr}"
    );
    let listed = runs_json(&dbp);
    assert_eq!(listed[0]["status"], "stopped", "{listed:?}");
    assert_eq!(listed[0]["reason"], "stopped by SIGTERM", "{listed:?}");
    let run = listed[0]["id"].as_i64().expect("id");
    let (ck_epoch, ck_step, ck_path): (i64, i64, String) = db(&dbp)
        .query_row(
            "SELECT epoch, step, path FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC LIMIT 1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("a checkpoint");
    let trained = losses(&dbp, run);
    let last = trained.last().expect("steps").0;
    assert_eq!(ck_step, last, "the checkpoint is where training stopped");
    assert!(
        ck_step % 40 != 0 && ck_epoch == ck_step / 40,
        "mid-epoch: {ck_epoch}, {ck_step}"
    );
    assert!(
        std::path::Path::new(&format!("{ck_path}.model.ot")).is_file(),
        "{ck_path}"
    );

    assert_eq!(listed[0]["tags"], "slurm-job-4242");
    let requeued = bin()
        .args(["train", s(&cfg), "--db", s(&dbp)])
        .env("SLURM_JOB_ID", "4242")
        .output()
        .expect("requeued job");
    let said = String::from_utf8_lossy(&requeued.stderr);
    assert!(requeued.status.success(), "{said}");
    assert!(said.contains(&format!("continuing run {run}")), "{said}");
    let listed = runs_json(&dbp);
    assert_eq!(
        listed.len(),
        1,
        "the requeued job continued the run: {listed:?}"
    );
    assert_eq!(listed[0]["status"], "finished");
    let resumed = losses(&dbp, run);
    let steps: Vec<i64> = resumed.iter().map(|r| r.0).collect();
    assert_eq!(
        steps,
        (1..=40 * epochs as i64).collect::<Vec<_>>(),
        "every step exactly once"
    );
    for ((step, got), (_, want)) in resumed.iter().zip(&expected) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "step {step}: {got} after the stop, {want} without it"
        );
    }
    // Nothing of the mid-epoch checkpoint is left once later epochs saved theirs.
    let dir_of = std::path::Path::new(&ck_path).parent().expect("dir");
    let left: Vec<_> = std::fs::read_dir(dir_of)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-step-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_second_sigint_exits_at_once_and_the_run_stays_resumable() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(dir.path(), "twice", 2000, 1);
    // Steps long enough (a large batch through the augmented model) that the second SIGINT
    // arrives while the first one waits for its batch to end.
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text
        .replace("batch_size = 50", "batch_size = 500")
        .replace("hybrid = \"none\"", "hybrid = \"mult\"");
    std::fs::write(&cfg, text).expect("config");
    let dbp = dir.path().join("studio.db");
    let mut child = bin()
        .args(["train", s(&cfg), "--db", s(&dbp)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until("training to get going", Duration::from_millis(30), || {
        last_step(&dbp) >= 1
    });
    // Standard signals do not queue: a second SIGINT sent before the process has taken the first
    // merges with it (on a loaded machine 5 ms is not enough). So it is sent again every 20 ms
    // until the process exits; one of them arrives after the first was taken, mid-batch.
    signal(&child, libc::SIGINT);
    let t0 = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "still running after SIGINTs"
        );
        std::thread::sleep(Duration::from_millis(20));
        if child.try_wait().expect("try_wait").is_none() {
            signal(&child, libc::SIGINT);
        }
    }
    let out = child.wait_with_output().expect("reaped");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("second SIGINT: exiting now"), "{stderr}");
    // Not stopped cleanly: the next look marks it interrupted, and it resumes.
    let listed = runs_json(&dbp);
    assert_eq!(listed[0]["status"], "interrupted", "{listed:?}");
    let run = listed[0]["id"].as_i64().expect("id").to_string();
    run_ok(&["resume", &run, "--db", s(&dbp)]);
    assert_eq!(runs_json(&dbp)[0]["status"], "finished");
}

/// A tmpfs of `size` mounted on `dir` for the test's life (root only, as in CI).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_its_reason_keeps_the_record_and_resumes_with_space() {
    // Issue 21 item 4, on a real size-limited filesystem (a 1 MiB tmpfs; mounting needs root,
    // which CI has).
    let dir = tempfile::tempdir().expect("tmp");
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let Some(small) = SmallDisk::mount(&disk, "1m") else {
        assert!(
            !nix_root(),
            "as root, mounting a tmpfs must work for this test"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let cfg = tiny_config(dir.path(), "fill", 100, 40);
    let dbp = disk.join("studio.db");
    let out = bin()
        .args([
            "train",
            s(&cfg),
            "--db",
            s(&dbp),
            "--set",
            "train.keep_checkpoints=1000",
        ])
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("disk full") && errors[0].contains("resume"),
        "{stderr}"
    );
    // Space comes back: the database reads whole, with what was recorded before the disk filled.
    small.resize("64m");
    run_ok(&["check", "--db", s(&dbp)]);
    let runs = runs_json(&dbp);
    assert_eq!(runs.len(), 1);
    let done = runs[0]["epochs_done"].as_i64().expect("epochs");
    assert!((1..40).contains(&done), "stopped part-way: {}", runs[0]);
    assert_ne!(runs[0]["status"], "finished");
    let steps = |path: &std::path::Path| -> Vec<i64> {
        let c = db(path);
        let mut q = c
            .prepare("SELECT step FROM metrics WHERE key = 'train/loss' ORDER BY step")
            .expect("q");
        q.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("steps")
    };
    let before = steps(&dbp);
    assert!(!before.is_empty());
    // ... and the run resumes from its last whole checkpoint and finishes.
    run_ok(&["resume", "1", "--db", s(&dbp)]);
    let runs = runs_json(&dbp);
    assert_eq!(
        (&runs[0]["status"], &runs[0]["epochs_done"]),
        (&serde_json::json!("finished"), &serde_json::json!(40))
    );
    let after = steps(&dbp);
    assert!(
        before.iter().all(|s| after.contains(s)),
        "nothing recorded was lost"
    );
    drop(small);
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}
