//! `shiftadd study --executor slurm`: with stand-in `sbatch` / `squeue` / `scancel` / `scontrol`
//! scripts (`tests/slurm/fake/`: the submission's arguments, every cell imported once, a job that
//! fails, a node that vanishes), and on a real single-node Slurm (`tests/slurm/start.sh`; CI
//! starts one and sets `SHIFTADD_REQUIRE_SLURM=1`): the same table as the local executor, and a
//! `scancel` mid-study after which every started cell is stopped with a checkpoint and a rerun
//! finishes the study.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{bin, db, last_step, s, wait_until};

fn preset(name: &str) -> String {
    format!(
        "{}/../experiments/studies/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fake_tools() -> String {
    let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/slurm/fake");
    format!("{fake}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `shiftadd study` with the stand-in Slurm tools first in PATH.
fn study_on_fake(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let state = dir.join("fake");
    std::fs::create_dir_all(&state).expect("fake state");
    let mut c = bin();
    c.args(["study"]).args(args);
    c.env("PATH", fake_tools()).env("FAKE_SLURM_DIR", &state);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("spawn")
}

/// The runs of a database: (uid, status) of each.
fn runs(dbp: &Path) -> Vec<(String, String)> {
    db(dbp)
        .prepare("SELECT uid, status FROM runs ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Every cell of the smoke study filled by one finished run, each run once.
fn assert_every_cell_finished_once(dbp: &Path, why: &str) {
    let merged = runs(dbp);
    assert_eq!(merged.len(), 4, "{why}: {merged:?}");
    assert!(merged.iter().all(|(_, st)| st == "finished"), "{merged:?}");
    let uids: BTreeSet<&String> = merged.iter().map(|r| &r.0).collect();
    assert_eq!(uids.len(), 4, "each run once");
}

/// The local executor's table of `file` (trained into `local`) equals `coord`'s, seed for seed.
fn assert_same_table_as_local(file: &str, coord: &Path, local: &Path, sets: &[&str]) {
    let mut args = vec!["study", file, "--db", s(local)];
    args.extend_from_slice(sets);
    let out = bin().args(&args).output().expect("local");
    assert!(out.status.success(), "{}", stderr(&out));
    // Seed for seed the same numbers; the training times are the two machines' own.
    let same = |dbp| without_column(&report_csv(file, dbp, sets), "train_secs");
    assert_eq!(same(coord), same(local));
}

/// `csv` without its column `name`.
fn without_column(csv: &str, name: &str) -> String {
    let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
    let i = header.iter().position(|h| *h == name).expect(name);
    csv.lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split(',').collect();
            fields.remove(i);
            fields.join(",") + "\n"
        })
        .collect()
}

fn report_csv(file: &str, dbp: &Path, sets: &[&str]) -> String {
    let mut args = vec!["study", file, "--db", s(dbp), "--report", "csv"];
    args.extend_from_slice(sets);
    let out = bin().args(&args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_study_on_stand_in_slurm_is_one_array_whose_cells_are_imported_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (coord, local) = (dir.path().join("coord.db"), dir.path().join("local.db"));
    let shared = dir.path().join("shared");
    let file = preset("smoke-study");
    // Two threads split over two cells: one each, as each Slurm task gets.
    let one_epoch = ["--set", "train.epochs=1", "--set", "train.threads=2"];
    let mut args = vec![file.as_str(), "--db", s(&coord), "--executor", "slurm"];
    args.extend([
        "--shared",
        s(&shared),
        "--slurm-args",
        // Split as a shell splits it: the quoted comment is one argument, spaces and all.
        "--partition=test --time=00:10:00 --comment='two words'",
    ]);
    args.extend(one_epoch);
    let out = study_on_fake(dir.path(), &args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("4 runs submitted as Slurm job array 77"),
        "{said}"
    );
    assert!(said.contains("4 trained, 0 resumed"), "{said}");

    let submitted = std::fs::read_to_string(dir.path().join("fake/sbatch.args")).expect("args");
    let submitted: Vec<&str> = submitted.lines().collect();
    let folder = std::fs::read_dir(&shared)
        .expect("shared")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("smoke-study-"))
        })
        .expect("the study's folder");
    let logs = format!("--output={}/logs/task-%a.out", folder.display());
    let script = format!("{}/job.sh", folder.display());
    assert_eq!(
        submitted,
        [
            "--parsable",
            "--array=0-3%2",
            "--signal=B:USR1@60",
            "--requeue",
            "--job-name=shiftadd-smoke-study",
            logs.as_str(),
            "--partition=test",
            "--time=00:10:00",
            "--comment=two words",
            script.as_str(),
        ]
    );
    let job = std::fs::read_to_string(&script).expect("job.sh");
    assert!(job.contains("exec ") && job.contains("study-task"), "{job}");

    assert_every_cell_finished_once(&coord, "every cell imported");
    // Where each cell ran, for the app: its task and how it ended.
    let jobs: Vec<(String, String, String)> = db(&coord)
        .prepare("SELECT job, state, detail FROM study_jobs ORDER BY job")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let expected: Vec<(String, String, String)> = (0..4)
        .map(|i| (format!("77_{i}"), "COMPLETED".into(), "exit 0:0".into()))
        .collect();
    assert_eq!(jobs, expected);
    // Every step the tasks recorded is in the coordinator's database.
    let mut in_snapshots = 0i64;
    for e in std::fs::read_dir(folder.join("cells"))
        .expect("cells")
        .flatten()
    {
        in_snapshots += db(&e.path())
            .query_row("SELECT COUNT(*) FROM metrics", [], |r| r.get::<_, i64>(0))
            .expect("count");
    }
    let merged_rows: i64 = db(&coord)
        .query_row("SELECT COUNT(*) FROM metrics", [], |r| r.get(0))
        .expect("count");
    assert_eq!(merged_rows, in_snapshots);

    // The same table as the local executor's, seed for seed.
    assert_same_table_as_local(&file, &coord, &local, &one_epoch);

    // A rerun submits nothing.
    std::fs::remove_file(dir.path().join("fake/sbatch.args")).expect("rm");
    let out = study_on_fake(dir.path(), &args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("4 already done"), "{}", stderr(&out));
    assert!(
        !dir.path().join("fake/sbatch.args").exists(),
        "nothing submitted"
    );

    // An unclosed quote is refused, named, before anything is submitted.
    let other = dir.path().join("other.db");
    let bad = [
        file.as_str(),
        "--db",
        s(&other),
        "--executor",
        "slurm",
        "--shared",
        s(&shared),
        "--slurm-args",
        "--comment='two words",
    ];
    let out = study_on_fake(dir.path(), &bad, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a quote is not closed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("fake/sbatch.args").exists(),
        "nothing submitted"
    );
}

#[test]
fn a_failed_job_and_a_vanished_node_are_named_and_a_rerun_finishes_the_study() {
    let dir = tempfile::tempdir().expect("tmp");
    let coord = dir.path().join("coord.db");
    let shared = dir.path().join("shared");
    let file = preset("smoke-study");
    let args = [
        file.as_str(),
        "--db",
        s(&coord),
        "--executor",
        "slurm",
        "--shared",
        s(&shared),
        "--set",
        "train.epochs=2",
    ];
    let out = study_on_fake(
        dir.path(),
        &args,
        &[
            ("FAKE_SLURM_FAIL_TASK", "1"),
            ("FAKE_SLURM_VANISH_TASK", "2"),
        ],
    );
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("2 of 4 cells did not finish on Slurm"),
        "{said}"
    );
    assert!(
        said.contains("mult / seed 1 (task 77_1: FAILED, exit 1:0; no run)"),
        "{said}"
    );
    assert!(
        said.contains("shift-aug / seed 0 (task 77_2: NODE_FAIL"),
        "{said}"
    );
    assert!(said.contains("rerun the study to continue them"), "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{said}"
    );

    for f in ["task-1.rc", "task-2.rc", "wrapper-1.pid", "wrapper-2.pid"] {
        let _ = std::fs::remove_file(dir.path().join("fake").join(f));
    }
    // The rerun, one task at a time: what is left is priced at that, not at the file's 2.
    let mut one_at_a_time = args.to_vec();
    one_at_a_time.extend(["--parallel", "1"]);
    let out = study_on_fake(dir.path(), &one_at_a_time, &[]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let left = said
        .lines()
        .find(|l| l.contains(" to go ("))
        .unwrap_or_else(|| panic!("what is left, before the array: {said}"));
    assert!(
        left.starts_with("2 cells to go (")
            && !left.contains("at a time")
            && left.ends_with(" (time in Slurm's queue not counted)"),
        "{left}"
    );
    assert_every_cell_finished_once(&coord, "one run per cell, the vanished one continued");
}

/// Whether a Slurm cluster answers here; with `SHIFTADD_REQUIRE_SLURM=1` (CI) it must.
fn slurm_here() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var_os("SHIFTADD_REQUIRE_SLURM").is_none(),
            "SHIFTADD_REQUIRE_SLURM is set but no Slurm answers (tests/slurm/start.sh starts one)"
        );
        eprintln!(
            "no Slurm here (tests/slurm/start.sh starts one): the real-Slurm test did not run"
        );
    }
    up
}

/// A copy of the smoke study under another name, `epochs` epochs of `images` images.
fn study_copy(dir: &Path, name: &str, epochs: usize, images: usize) -> PathBuf {
    let text = std::fs::read_to_string(preset("smoke-study"))
        .expect("smoke-study")
        .replace("name = \"smoke-study\"", &format!("name = \"{name}\""))
        .replace(
            "base = \"../smoke.toml\"",
            &format!(
                "base = \"{}/../experiments/smoke.toml\"",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .replace("epochs = 2", &format!("epochs = {epochs}"))
        .replace(
            "synthetic_train = 2000",
            &format!("synthetic_train = {images}"),
        );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn on_a_real_slurm_a_study_matches_the_local_table_and_survives_scancel() {
    if !slurm_here() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let shared = dir.path().join("shared");
    let file = preset("smoke-study");
    // Two threads split over two cells: one each, as each Slurm task gets.
    let one_epoch = ["--set", "train.epochs=1", "--set", "train.threads=2"];
    let (coord, local) = (dir.path().join("coord.db"), dir.path().join("local.db"));
    let mut args = vec![
        "study",
        file.as_str(),
        "--db",
        s(&coord),
        "--executor",
        "slurm",
    ];
    args.extend(["--shared", s(&shared)]);
    args.extend(one_epoch);
    let out = bin().args(&args).output().expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_every_cell_finished_once(&coord, "every cell on Slurm");
    assert_same_table_as_local(&file, &coord, &local, &one_epoch);

    // scancel mid-study: the started cells stop with a checkpoint; a rerun finishes the study.
    let name = format!("smoke-cancel-{}", std::process::id());
    let long = study_copy(dir.path(), &name, 3, 6000);
    let cancel_db = dir.path().join("cancel.db");
    let args = [
        "study",
        s(&long),
        "--db",
        s(&cancel_db),
        "--executor",
        "slurm",
        "--shared",
        s(&shared),
    ];
    let coordinator = bin()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until(
        "a cell to get going on Slurm",
        Duration::from_millis(500),
        || last_step(&cancel_db) >= 20,
    );
    let job = Command::new("squeue")
        .args(["-h", "-n", &format!("shiftadd-{name}"), "-o", "%A"])
        .output()
        .expect("squeue");
    let job = String::from_utf8_lossy(&job.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    assert!(!job.is_empty(), "the array is queued");
    let cancelled = Command::new("scancel").arg(&job).status().expect("scancel");
    assert!(cancelled.success());
    let out = coordinator.wait_with_output().expect("coordinator");
    let said = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a cancelled study is a stopped one: {said}"
    );
    assert!(said.contains("was cancelled"), "{said}");
    let c = db(&cancel_db);
    let started: Vec<(i64, String, Option<String>, i64)> = c
        .prepare(
            "SELECT r.id, r.status, r.reason, (SELECT COUNT(*) FROM checkpoints k WHERE k.run_id = r.id)
             FROM runs r",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(!started.is_empty());
    for (run, status, reason, checkpoints) in &started {
        assert_eq!(status, "stopped", "run {run}: {reason:?}");
        assert_eq!(reason.as_deref(), Some("stopped by SIGTERM"), "run {run}");
        assert!(*checkpoints > 0, "run {run} has a checkpoint");
    }
    drop(c);
    let out = bin().args(args).output().expect("rerun");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_every_cell_finished_once(&cancel_db, "stopped cells continued, not retrained");
}

#[test]
fn a_nas_search_on_stand_in_slurm_dispatches_each_generation_and_scores_from_the_imports() {
    use shiftadd_core::store::{CandidateStatus, Reader, Status};

    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("nas.db");
    let shared = dir.path().join("shared");
    let state = dir.path().join("fake");
    std::fs::create_dir_all(&state).expect("fake state");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/nas-smoke.toml");
    let args = [
        "nas",
        preset,
        "--db",
        s(&dbp),
        "--executor",
        "slurm",
        "--shared",
        s(&shared),
        "--set",
        "nas.population=2",
        "--set",
        "nas.generations=1",
        "--set",
        "nas.parallel=2",
    ];
    let search = || {
        bin()
            .args(args)
            .env("PATH", fake_tools())
            .env("FAKE_SLURM_DIR", &state)
            .output()
            .expect("spawn")
    };
    let out = search();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("on Slurm"), "{}", stderr(&out));
    let calls = std::fs::read_to_string(state.join("sbatch.calls")).expect("calls");
    assert_eq!(
        calls.lines().count(),
        2,
        "one array per generation of each stage: {calls}"
    );
    assert!(
        calls.lines().all(|l| l.contains("--array=0-1%2")),
        "{calls}"
    );

    let reader = Reader::open(&dbp).expect("db");
    let runs = reader.runs().expect("runs");
    let search_row = runs
        .iter()
        .find(|r| r.model == shiftadd_core::nas::SEARCH_MODEL)
        .expect("search row");
    assert_eq!(search_row.status, Status::Finished);
    let rows = reader.nas_candidates(search_row.id).expect("candidates");
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        assert_eq!(row.status, CandidateStatus::Done, "{row:?}");
        let proxy = runs
            .iter()
            .find(|r| Some(r.id) == row.proxy_run)
            .expect("its proxy run was imported");
        assert_eq!(proxy.status, Status::Finished);
        assert!(proxy.tags.contains("slurm-task-"), "{}", proxy.tags);
        assert_eq!(
            row.proxy_accuracy, proxy.last_val_top1,
            "scored from the imported run"
        );
        let slurm = row.slurm.as_deref().expect("where it trained");
        assert!(
            slurm.starts_with("77_") && slurm.contains("COMPLETED"),
            "{slurm}"
        );
    }
    assert_eq!(runs.len(), 5, "the search and one run per candidate");
    drop(reader);
    // A rerun replays the stored candidates and submits nothing.
    let out = search();
    assert!(out.status.success(), "{}", stderr(&out));
    let again = std::fs::read_to_string(state.join("sbatch.calls")).expect("calls");
    assert_eq!(again, calls, "nothing submitted again");
}
