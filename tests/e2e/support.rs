//! Helpers: run the CLI, write small configs, read the database directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

/// The CLI under test (the same `shiftadd_app::main` as the `shiftadd` binary).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shiftadd-under-test"));
    c.env_remove("SHIFTADD_DB").env("SHIFTADD_LOG", "warn");
    // Under Slurm, `train` continues its job's run; the tests set a job id where they mean it.
    for var in ["SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"] {
        c.env_remove(var);
    }
    c
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("spawn shiftadd");
    assert!(
        out.status.success(),
        "shiftadd {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run and expect failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("spawn shiftadd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "shiftadd {args:?} should fail; stderr:\n{stderr}"
    );
    stderr
}

/// A small synthetic config: `train` images, `epochs` epochs of batch 50, one torch thread.
/// A synthetic `micro` config training on exactly `train` images (100 more are generated and held
/// out for validation).
pub fn tiny_config(dir: &Path, name: &str, train: usize, epochs: usize) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let generated = train + 100;
    std::fs::write(
        &path,
        format!(
            "[data]\ndataset = \"synthetic\"\nsynthetic_train = {generated}\nval_images = 100\nsynthetic_test = 200\n\
             [model]\nname = \"micro\"\n[aug]\nhybrid = \"none\"\n\
             [train]\nepochs = {epochs}\nbatch_size = 50\nlr = 0.1\nwarmup_epochs = 0.5\nthreads = 1\n"
        ),
    )
    .expect("write config");
    path
}

pub fn db(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open db");
    c.busy_timeout(std::time::Duration::from_secs(30))
        .expect("timeout");
    c
}

pub fn runs_json(db: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(&[
        "runs",
        "--all",
        "--db",
        db.to_str().expect("utf8"),
        "--json",
    ]);
    serde_json::from_slice(&out.stdout).expect("runs --json is JSON")
}

pub fn run_id(out: &Output) -> i64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|id| id.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no run id in stdout: {stdout}"))
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// The last `train/loss` step any run of `db` recorded (0 before the database exists).
pub fn last_step(db_path: &Path) -> i64 {
    if !db_path.exists() {
        return 0;
    }
    db(db_path)
        .query_row(
            "SELECT COALESCE(MAX(step), 0) FROM metrics WHERE key = 'train/loss'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

/// Send `sig` to a child process (SIGTERM as a cluster preempts a job, SIGINT as Ctrl-C).
pub fn signal(child: &std::process::Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    #[allow(unsafe_code)]
    // SAFETY: sends a signal to our own child process.
    let sent = unsafe { libc::kill(pid, sig) };
    assert_eq!(sent, 0, "signal {sig} to {pid}");
}

/// Poll `done` every `every` until it holds; fail naming `what` after five minutes.
pub fn wait_until(what: &str, every: std::time::Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(every);
    }
}

/// Damage a database as a failing disk would: noise over six pages after the first (the
/// tables' roots), the header left intact.
pub fn damage_pages(db: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open");
    f.seek(SeekFrom::Start(4096)).expect("seek");
    f.write_all(&[0xA5; 4096 * 6]).expect("write");
}

/// A run of `micro` on synthetic data with the default config, seed 0 and no tags, as a test
/// records one directly (set other fields with `NewRun { tags, ..synthetic_run(..) }`).
pub fn synthetic_run(name: &str, operator: &str) -> shiftadd_core::store::NewRun {
    shiftadd_core::store::NewRun {
        name: name.into(),
        config_toml: shiftadd_core::spec::config::Config::default().to_toml(),
        dataset: "synthetic".into(),
        model: "micro".into(),
        operator: operator.into(),
        seed: 0,
        tags: String::new(),
        provenance: String::new(),
    }
}

/// Run `shiftadd <args>` (a `train` writing run 1 into `dbp`), stop it with SIGTERM three steps
/// in (as a cluster preempts a job), check it stopped, and resume it to the end.
pub fn preempt_and_resume(name: &str, args: &[&str], dbp: &Path) {
    let child = bin()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until(
        &format!("{name}: three steps"),
        std::time::Duration::from_millis(20),
        || last_step(dbp) >= 3,
    );
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().expect("reaped");
    assert!(!out.status.success(), "{name}: stopped, not finished");
    let listed = runs_json(dbp);
    assert_eq!(listed[0]["status"], "stopped", "{name}: {listed:?}");
    run_ok(&["resume", "1", "--db", s(dbp)]);
}
