//! `shiftadd study`: the smoke study's runs 2 at a time, its table against the runs' own rows,
//! a rerun that trains nothing, a killed study that resumes with every cell once, a SIGTERM that
//! every stopped run records, and bad study files that stop before anything runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use crate::support::{bin, db, run_err, run_ok, s, signal, tiny_config, wait_until};

fn preset(name: &str) -> String {
    format!(
        "{}/../experiments/studies/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// (variant, seed) → (run, status) of the study's cells.
fn cells(dbp: &std::path::Path) -> BTreeMap<(String, i64), (i64, String)> {
    let c = db(dbp);
    let mut stmt = c
        .prepare(
            "SELECT s.variant, s.seed, r.id, r.status FROM study_runs s JOIN runs r ON r.id = s.run_id",
        )
        .expect("query");
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("cells")
}

/// Seconds `run` trained, from its rows: Σ over epochs of steps × batch / images per second.
fn train_secs(c: &rusqlite::Connection, run: i64) -> f64 {
    let toml: String = c
        .query_row("SELECT config FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .expect("config");
    let batch = shiftadd_core::spec::config::Config::from_toml_str(&toml, "run", &[])
        .expect("config")
        .train
        .batch_size as f64;
    let epochs: Vec<(i64, f64)> = c
        .prepare(
            "SELECT step, value FROM metrics WHERE run_id = ?1
             AND key = 'train/epoch_images_per_sec' ORDER BY step",
        )
        .expect("prepare")
        .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(epochs.len(), 2, "two epochs: {epochs:?}");
    let mut before = 0;
    let secs: f64 = epochs
        .iter()
        .map(|&(step, rate)| {
            let n = (step - std::mem::replace(&mut before, step)) as f64;
            n * batch / rate
        })
        .sum();
    // Training is part of the run's life, not more.
    let span: f64 = c
        .query_row(
            "SELECT finished_at - started_at FROM runs WHERE id = ?1",
            [run],
            |r| r.get(0),
        )
        .expect("span");
    assert!(
        secs > 0.0 && secs <= span,
        "run {run}: {secs} s of {span} s"
    );
    secs
}

/// A study `name` of `variants` × seeds 0 and 1, two cells at a time, on a tiny synthetic base
/// (40 steps per epoch, 2 epochs); its file and database.
fn two_seed_study(dir: &Path, name: &str, variants: &str) -> (PathBuf, PathBuf) {
    tiny_config(dir, "base", 2000, 2);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nbase = \"base.toml\"\nseeds = [0, 1]\nparallel = 2\n{variants}"
        ),
    )
    .expect("write");
    (file, dir.join("studio.db"))
}

/// `shiftadd study FILE --db DB` in the background, its stderr piped.
fn spawn_study(file: &Path, dbp: &Path) -> std::process::Child {
    bin()
        .args(["study", s(file), "--db", s(dbp)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// `shiftadd study FILE --db DB --report FORMAT FLAG VALUE`.
fn report_args<'a>(
    file: &'a str,
    dbp: &'a Path,
    format: &'a str,
    flag: &'a str,
    value: &'a str,
) -> [&'a str; 8] {
    [
        "study",
        file,
        "--db",
        s(dbp),
        "--report",
        format,
        flag,
        value,
    ]
}

#[test]
fn smoke_study_runs_in_parallel_reports_its_runs_and_reruns_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let file = preset("smoke-study");
    let out = run_ok(&["study", &file, "--db", s(&dbp)]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("| mult |") && table.contains("shift-aug") && table.contains("95 % CI"),
        "{table}"
    );
    let cells = cells(&dbp);
    assert_eq!(cells.len(), 4, "2 variants × 2 seeds: {cells:?}");
    assert!(cells.values().all(|(_, st)| st == "finished"), "{cells:?}");
    // Two at a time: some pair of runs overlapped in time.
    let c = db(&dbp);
    let spans: Vec<(f64, f64)> = c
        .prepare("SELECT started_at, finished_at FROM runs")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("spans");
    let overlap = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "no two runs trained at once: {spans:?}");

    // The CSV report equals a computation from the runs' own metric rows.
    let csv = run_ok(&["study", &file, "--db", s(&dbp), "--report", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let row_of = |csv: &str, variant: &str| -> Vec<String> {
        csv.lines()
            .find(|l| l.starts_with(&format!("{variant},")))
            .expect("row")
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    // Each cell's last recorded value of `key`, over `variant`'s cells.
    let last_values = |variant: &str, key: &str| -> Vec<f64> {
        cells
            .iter()
            .filter(|((v, _), _)| v == variant)
            .map(|(_, (run, _))| {
                c.query_row(
                    "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2
                     ORDER BY step DESC LIMIT 1",
                    rusqlite::params![run, key],
                    |r| r.get(0),
                )
                .expect(key)
            })
            .collect()
    };
    let mean_of = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    for variant in ["mult", "shift-aug"] {
        let row = row_of(&csv, variant);
        let values = last_values(variant, "test/top1");
        let mean = mean_of(&values);
        let reported: f64 = row[col("mean")].parse().expect("mean");
        assert!(
            (reported - mean).abs() < 1e-12,
            "{variant}: {reported} vs {mean}"
        );
        assert_eq!(row[col("n")], "2");
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((row[col("min")].parse::<f64>().expect("min") - min).abs() < 1e-12);
        // Training time per cell: each epoch's steps × the run's batch at its recorded throughput.
        let secs: Vec<f64> = cells
            .iter()
            .filter(|((v, _), _)| v == variant)
            .map(|(_, (run, _))| train_secs(&c, *run))
            .collect();
        let mean_secs = secs.iter().sum::<f64>() / secs.len() as f64;
        let reported: f64 = row[col("train_secs")].parse().expect("train_secs");
        assert!(
            mean_secs > 0.0 && (reported - mean_secs).abs() < 1e-9 * mean_secs,
            "{variant}: {reported} s vs {mean_secs} s"
        );
    }
    assert!(table.contains("| time/cell |"), "{table}");
    let shift = csv
        .lines()
        .find(|l| l.starts_with("shift-aug,"))
        .expect("row");
    let fields: Vec<&str> = shift.split(',').collect();
    assert!(
        fields[col("against")] == "mult" && !fields[col("diff")].is_empty(),
        "paired difference vs the baseline: {shift}"
    );
    // --baseline pairs against another variant: the same difference, the other way round.
    let other = run_ok(&[
        "study",
        &file,
        "--db",
        s(&dbp),
        "--report",
        "csv",
        "--baseline",
        "shift-aug",
    ]);
    let other = String::from_utf8_lossy(&other.stdout).into_owned();
    let mult: Vec<&str> = other
        .lines()
        .find(|l| l.starts_with("mult,"))
        .expect("row")
        .split(',')
        .collect();
    let diff = |f: &[&str]| f[col("diff")].parse::<f64>().expect("diff");
    assert_eq!(mult[col("against")], "shift-aug", "{other}");
    assert!((diff(&mult) + diff(&fields)).abs() < 1e-12, "{other}");
    // --fit: the augmented variant's epoch losses beside its tiny model's, from the runs' rows.
    let fit = run_ok(&["study", &file, "--db", s(&dbp), "--report", "csv", "--fit"]);
    let fit = String::from_utf8_lossy(&fit.stdout).into_owned();
    let lines: Vec<&str> = fit.lines().collect();
    assert_eq!(
        lines[0],
        "variant,epoch,n,tiny_loss,tiny_ci95,aug_loss,aug_ci95,gap,gap_ci95"
    );
    assert_eq!(
        lines.len(),
        3,
        "shift-aug's two epochs, no row for mult: {fit}"
    );
    let epoch_mean = |key: &str, epoch: i64| -> f64 {
        let xs: Vec<f64> = cells
            .iter()
            .filter(|((v, _), _)| v == "shift-aug")
            .map(|(_, (run, _))| {
                c.query_row(
                    "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 AND epoch = ?3",
                    rusqlite::params![run, key, epoch],
                    |r| r.get(0),
                )
                .expect(key)
            })
            .collect();
        mean_of(&xs)
    };
    for (line, epoch) in lines[1..].iter().zip(1..) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!((f[0], f[1], f[2]), ("shift-aug", &*epoch.to_string(), "2"));
        let num = |i: usize| f[i].parse::<f64>().expect("number");
        let (tiny, aug) = (
            epoch_mean("train/epoch_loss", epoch),
            epoch_mean("train/epoch_loss_aug", epoch),
        );
        assert!(
            (num(3) - tiny).abs() < 1e-12 && (num(5) - aug).abs() < 1e-12,
            "{line}"
        );
        assert!((num(7) - (aug - tiny)).abs() < 1e-9, "{line}");
    }
    let md = run_ok(&["study", &file, "--db", s(&dbp), "--report", "md", "--fit"]);
    let md = String::from_utf8_lossy(&md.stdout).into_owned();
    assert!(
        md.contains("| epoch | shift-aug tiny | shift-aug aug | shift-aug gap |")
            && md.contains("Last epoch, augmented − tiny: shift-aug "),
        "{md}"
    );
    let err =
        crate::support::run_err(&["study", &file, "--db", s(&dbp), "--report", "tex", "--fit"]);
    assert!(err.contains("md or csv"), "{err}");
    let err = crate::support::run_err(&report_args(&file, &dbp, "md", "--baseline", "nope"));
    assert!(
        err.contains("not a variant") && err.contains("shift-aug"),
        "{err}"
    );

    // --metric tabulates another recorded metric, each cell's last value. One that describes a
    // run rather than scores it (a throughput) marks no best and reads no difference as better.
    let speed_key = "train/epoch_images_per_sec";
    let report = |format: &str, metric: &str| {
        let args = report_args(&file, &dbp, format, "--metric", metric);
        String::from_utf8_lossy(&run_ok(&args).stdout).into_owned()
    };
    let speed = report("csv", speed_key);
    for variant in ["mult", "shift-aug"] {
        let row = row_of(&speed, variant);
        let mean = mean_of(&last_values(variant, speed_key));
        let reported: f64 = row[col("mean")].parse().expect("mean");
        assert!(
            (reported - mean).abs() < 1e-9 * mean,
            "{variant}: {reported} vs {mean}"
        );
        assert_eq!(row[col("best")], "false", "{speed}");
    }
    let md = report("md", speed_key);
    assert!(
        md.contains(&format!("`{speed_key}`")) && !md.contains("**"),
        "{md}"
    );
    let err = crate::support::run_err(&report_args(&file, &dbp, "md", "--metric", "nope"));
    assert!(
        err.contains("has recorded `nope`") && err.contains(speed_key),
        "{err}"
    );

    // --figures: the Studies view's two figures as SVG, from the database alone.
    let figs = dir.path().join("figures");
    let with_figures = |curves: &'static str| {
        let mut args = vec!["study", &file, "--db", s(&dbp), "--report", "md"];
        args.extend(["--figures", s(&figs), "--curves", curves]);
        args
    };
    let out = run_ok(&with_figures("train/loss"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("| mult |"),
        "the table still prints"
    );
    let read = |name: &str| std::fs::read_to_string(figs.join(name)).expect(name);
    let means = read("smoke-study-test-top1-means.svg");
    for variant in ["mult", "shift-aug"] {
        assert!(means.contains(&format!(">{variant}</text>")), "{means}");
    }
    assert_eq!(
        means.matches(r#"r="2.5""#).count(),
        4,
        "a dot per cell: {means}"
    );
    assert!(means.contains("mult mean (baseline)"), "{means}");
    let curves = read("smoke-study-train-loss-curves.svg");
    assert_eq!(curves.matches("<polygon").count(), 2, "{curves}");
    for variant in ["mult", "shift-aug"] {
        assert!(
            curves.contains(&format!("<title>{variant}</title>")),
            "{curves}"
        );
    }
    let err = crate::support::run_err(&with_figures("nope"));
    assert!(
        err.contains("has recorded `nope`") && err.contains("train/loss"),
        "{err}"
    );
    let err = crate::support::run_err(&["study", &file, "--db", s(&dbp), "--figures", s(&figs)]);
    assert!(err.contains("--report"), "{err}");

    // A second invocation trains nothing.
    let again = bin()
        .args(["study", &file, "--db", s(&dbp)])
        .output()
        .expect("spawn");
    assert!(again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("0 trained, 0 resumed, 4 already done"),
        "{err}"
    );
    assert!(!err.contains("to go"), "nothing is left: {err}");
    let runs: i64 = c
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(runs, 4);
    for format in ["md", "tex"] {
        let t = run_ok(&["study", &file, "--db", s(&dbp), "--report", format]);
        assert!(
            String::from_utf8_lossy(&t.stdout).contains("shift"),
            "{format}"
        );
    }

    // Another study (one more seed, one cell at a time, so other thread counts) adopts the
    // cells whose configs already trained and trains only the new one.
    let text = std::fs::read_to_string(&file).expect("smoke study");
    let smoke = format!("{}/../experiments/smoke.toml", env!("CARGO_MANIFEST_DIR"));
    let text = text[..text
        .find("[[variant]]\nname = \"shift-aug\"")
        .expect("variant")]
        .replace("name = \"smoke-study\"", "name = \"smoke-more\"")
        .replace("base = \"../smoke.toml\"", &format!("base = {smoke:?}"))
        .replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
        .replace("parallel = 2", "parallel = 1");
    let more = dir.path().join("more.toml");
    std::fs::write(&more, text).expect("write");
    let out = run_ok(&["study", s(&more), "--db", s(&dbp)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 trained, 0 resumed, 2 already done (2 adopted)"),
        "{err}"
    );
    // Before it trains, what is left, priced at the adopted cells' pace.
    assert!(
        err.contains("1 cell to go (")
            && err.contains(" of training, at the pace of the cells timed so far"),
        "{err}"
    );
    let linked: Vec<(i64, i64)> = c
        .prepare(
            "SELECT s.seed, s.run_id FROM study_runs s JOIN studies t ON t.id = s.study_id
             WHERE t.name = 'smoke-more' ORDER BY s.seed",
        )
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("links");
    for (seed, run) in &linked[..2] {
        assert_eq!(
            cells[&("mult".to_owned(), *seed)].0,
            *run,
            "seed {seed}: the smoke study's own run"
        );
    }
    let runs: i64 = c
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(runs, 5, "one new run");
}

#[test]
fn a_killed_study_resumes_and_fills_every_cell_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (file, dbp) = two_seed_study(
        dir.path(),
        "kill",
        "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"b\"\nset = { \"train.lr\" = 0.05 }\n",
    );
    let mut child = spawn_study(&file, &dbp);
    // Kill once a cell has a checkpoint (mid-study).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(50));
        if !dbp.exists() {
            continue;
        }
        let n: i64 = db(&dbp)
            .query_row("SELECT COUNT(*) FROM checkpoints", [], |r| r.get(0))
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = cells(&dbp);
    assert!(
        before.values().any(|(_, st)| st != "finished"),
        "killed mid-way: {before:?}"
    );
    let out = run_ok(&["study", s(&file), "--db", s(&dbp)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resumed"), "{err}");
    let after = cells(&dbp);
    assert_eq!(after.len(), 4, "every cell once: {after:?}");
    assert!(after.values().all(|(_, st)| st == "finished"), "{after:?}");
    for (cell, (run, _)) in &before {
        assert_eq!(
            after[cell].0, *run,
            "{cell:?} kept its run (resumed, not retrained)"
        );
    }
    let runs: i64 = db(&dbp)
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(runs, 4, "no cell trained twice");
}

#[test]
fn a_study_stopped_by_sigterm_says_so_in_every_run_and_exits_3() {
    let dir = tempfile::tempdir().expect("tmp");
    let (file, dbp) = two_seed_study(dir.path(), "term", "[[variant]]\nname = \"a\"\n");
    let child = spawn_study(&file, &dbp);
    // Both cells training.
    wait_until("both cells to train", Duration::from_millis(30), || {
        dbp.exists()
            && db(&dbp)
                .query_row(
                    "SELECT COUNT(DISTINCT run_id) FROM metrics WHERE key = 'train/loss'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                == 2
    });
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().expect("reaped");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a stopped study exits 3: {err}");
    assert!(err.contains("study stopped; rerun it to continue"), "{err}");
    let reasons: Vec<(String, Option<String>)> = db(&dbp)
        .prepare("SELECT status, reason FROM runs")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for (status, reason) in &reasons {
        assert_eq!(status, "stopped", "{reasons:?}");
        // Not "stopped by user": the signal's reason reaches the runs before the study's own stop.
        assert_eq!(reason.as_deref(), Some("stopped by SIGTERM"), "{reasons:?}");
    }
}

#[test]
fn bad_study_files_stop_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let base = tiny_config(dir.path(), "base", 100, 1);
    let base = base.file_name().and_then(|n| n.to_str()).expect("name");
    let head = format!("name = \"bad\"\nbase = \"{base}\"\n");
    let cases = [
        (format!("{head}seeds = [0]\n"), "no variants"),
        (
            format!("{head}seeds = [0]\nsedes = [1]\n[[variant]]\nname = \"a\"\n"),
            "unknown key `sedes`",
        ),
        (
            format!("{head}[[variant]]\nname = \"a\"\n"),
            "`seeds` is missing",
        ),
        (
            format!(
                "{head}seeds = [0]\n[[variant]]\nname = \"a\"\nset = {{ \"train.epoch\" = 2 }}\n"
            ),
            "epoch",
        ),
        (
            format!(
                "{head}seeds = [0]\n[[variant]]\nname = \"a\"\nset = {{ \"train.lr\" = -1 }}\n"
            ),
            "train.lr",
        ),
        (
            format!("{head}seeds = [0]\nbaseline = \"z\"\n[[variant]]\nname = \"a\"\n"),
            "`baseline`",
        ),
        (
            format!("{head}seeds = [0]\nmetric = \"top1\"\n[[variant]]\nname = \"a\"\n"),
            "`metric`",
        ),
        (
            "name = \"bad\"\nbase = \"missing.toml\"\nseeds = [0]\n[[variant]]\nname = \"a\"\n"
                .into(),
            "missing.toml",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write");
        let err = run_err(&["study", s(&file), "--db", s(&dbp)]);
        assert!(err.contains(want), "case {i}: {want:?} not in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "case {i}: one line: {err}");
    }
    assert!(
        !dbp.exists(),
        "nothing ran, so no database was even created"
    );
}

/// Issue 45: pruning. A study with a hopeless variant (a learning rate that leaves it at chance)
/// under the median rule with a margin: its cells stop after the warm-up, are recorded `pruned`
/// with the reason, count as settled (the table says so, a rerun trains nothing), and trained
/// fewer epochs than their config asks; the good cells are not touched.
#[test]
fn a_hopeless_variant_is_pruned_and_saves_its_epochs() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_config(dir.path(), "base", 3000, 5);
    let file = dir.path().join("prune.toml");
    std::fs::write(
        &file,
        "name = \"prune\"\nbase = \"base.toml\"\nseeds = [0, 1]\nparallel = 2\n\
         [prune]\nwarmup_epochs = 2\nmin_cells = 2\nmargin_points = 5\n\
         [[variant]]\nname = \"good\"\n\
         [[variant]]\nname = \"hopeless\"\nset = { \"train.lr\" = 1e-7 }\n",
    )
    .expect("write");
    let dbp = dir.path().join("studio.db");
    let out = run_ok(&["study", s(&file), "--db", s(&dbp)]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let cells = cells(&dbp);
    let c = db(&dbp);
    let epochs_trained = |run: i64| -> i64 {
        c.query_row(
            "SELECT COALESCE(MAX(epoch), 0) FROM metrics WHERE run_id = ?1 AND key = 'val/top1'",
            [run],
            |r| r.get(0),
        )
        .expect("epochs")
    };
    for seed in [0, 1] {
        let (good, status) = &cells[&("good".to_owned(), seed)];
        assert_eq!(status, "finished", "{log}");
        assert_eq!(epochs_trained(*good), 5);
        let (bad, status) = &cells[&("hopeless".to_owned(), seed)];
        assert_eq!(status, "pruned", "{log}");
        let reason: String = c
            .query_row("SELECT reason FROM runs WHERE id = ?1", [bad], |r| r.get(0))
            .expect("reason");
        assert!(
            reason.starts_with("pruned after epoch ")
                && reason.contains(": best val/top1")
                && reason.contains("below the median of"),
            "{reason}"
        );
        let trained = epochs_trained(*bad);
        assert!(
            (2..5).contains(&trained),
            "pruned run trained {trained} of 5 epochs"
        );
    }
    assert!(table.contains("| hopeless | 0 (2 pruned) |"), "{table}");
    assert!(log.contains("2 pruned"), "{log}");
    // Settled: a rerun trains nothing and keeps them pruned.
    let again = run_ok(&["study", s(&file), "--db", s(&dbp)]);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        log.contains("0 to train") && log.contains("2 pruned"),
        "{log}"
    );
    assert_eq!(self::cells(&dbp), cells);
}
