//! `make soak` (issue 21): four `shiftadd train` processes write one database for `--minutes`
//! while a reader polls it as the app does (the runs list and every live run's metrics, five
//! times a second), then every run is stopped with SIGTERM. Checked at the end: no lock error
//! anywhere, every run's step sequence whole (each step once, none missing), the `-wal` file's
//! size bounded, the trainers' memory flat. Prints a sample line every `--every` seconds and a
//! summary; exits 1 when a check fails.
//!
//! soak [--minutes M] [--every S] [--dir DIR] [--shiftadd PATH]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shiftadd_core::store::{Reader, Status};

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn is_lock_error(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("locked") || t.contains("busy")
}

fn main() -> ExitCode {
    let mut minutes = 30.0_f64;
    let mut every = 60u64;
    let mut dir: Option<PathBuf> = None;
    let mut shiftadd: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--minutes" => minutes = v.parse().unwrap_or(minutes),
            "--every" => every = v.parse().unwrap_or(every),
            "--dir" => dir = Some(PathBuf::from(v)),
            "--shiftadd" => shiftadd = Some(PathBuf::from(v)),
            _ => {
                eprintln!("usage: soak [--minutes M] [--every S] [--dir DIR] [--shiftadd PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let shiftadd = shiftadd.unwrap_or_else(|| exe.with_file_name("shiftadd"));
    let dir = dir.unwrap_or_else(|| {
        exe.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            .join(format!("soak-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let db = dir.join("soak.db");
    let wal = dir.join("soak.db-wal");
    println!(
        "soak: {minutes} min, 4 trainers + a polling reader, database {}",
        db.display()
    );
    // Four kinds of run, long enough to train for the whole soak (stopped by SIGTERM).
    let kinds = [
        ("mult", "none"),
        ("shift", "none"),
        ("add", "none"),
        ("add", "mult"),
    ];
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, (op, hybrid)) in kinds.iter().enumerate() {
        // Add at the paper studies' rate and AdderNet's eta rule: stable for thousands of steps
        // (issue 18: the relative rule diverges at 0.05).
        let lr = if *op == "add" { 0.025 } else { 0.05 };
        let cfg = dir.join(format!("soak-{i}.toml"));
        let text = format!(
            "[data]\ndataset = \"synthetic\"\nsynthetic_train = 2100\nval_images = 100\nsynthetic_test = 200\n\
             [model]\nname = \"micro\"\n[ops]\nkind = \"{op}\"\nadd_eta_relative = false\n\
             [aug]\nhybrid = \"{hybrid}\"\n\
             [train]\nepochs = 100000\nbatch_size = 50\nlr = {lr}\nthreads = 1\nkeep_checkpoints = 2\n"
        );
        if let Err(e) = std::fs::write(&cfg, text) {
            eprintln!("error: {}: {e}", cfg.display());
            return ExitCode::FAILURE;
        }
        let log = dir.join(format!("train-{i}.err"));
        let child = Command::new(&shiftadd)
            .arg("train")
            .arg(&cfg)
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn();
        match child {
            Ok(c) => children.push((format!("{op}/{hybrid}"), c)),
            Err(e) => {
                eprintln!("error: cannot start {}: {e}", shiftadd.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // The reader, polling like the app's data thread.
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let reader_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, polls, errors, db) = (
            stop.clone(),
            polls.clone(),
            reader_errors.clone(),
            db.clone(),
        );
        std::thread::Builder::new()
            .name("soak-reader".into())
            .spawn(move || {
                let mut reader = None;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if reader.is_none() {
                        reader = Reader::open(&db).ok();
                        continue;
                    }
                    let Some(r) = &reader else { continue };
                    match r.runs() {
                        Ok(runs) => {
                            for run in runs.iter().filter(|x| x.status == Status::Running) {
                                if let Err(e) = r.metrics(run.id)
                                    && let Ok(mut v) = errors.lock()
                                {
                                    v.push(e.to_string());
                                }
                            }
                        }
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(e.to_string());
                            }
                        }
                    }
                    polls.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawn the reader")
    };
    let t0 = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<(f64, u64, Vec<f64>)> = Vec::new();
    let mut next = Duration::ZERO;
    let mut max_wal = 0u64;
    while t0.elapsed() < total {
        std::thread::sleep(Duration::from_millis(500));
        max_wal = max_wal.max(file_len(&wal));
        if t0.elapsed() >= next {
            next += Duration::from_secs(every);
            let rss: Vec<f64> = children.iter().map(|(_, c)| rss_mib(c.id())).collect();
            let wal_now = file_len(&wal);
            println!(
                "{:>6.1} min  wal {:>7.2} MiB (max {:>6.2})  rss {}  reader polls {}",
                t0.elapsed().as_secs_f64() / 60.0,
                wal_now as f64 / 1048576.0,
                max_wal as f64 / 1048576.0,
                rss.iter()
                    .map(|m| format!("{m:.0}"))
                    .collect::<Vec<_>>()
                    .join("/"),
                polls.load(Ordering::Relaxed)
            );
            samples.push((t0.elapsed().as_secs_f64(), wal_now, rss));
        }
        let ended = children
            .iter_mut()
            .find_map(|(name, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| name.clone()));
        if let Some(name) = ended {
            eprintln!("a trainer ({name}) ended before the soak did");
            break;
        }
    }
    let elapsed = t0.elapsed();
    for (_, c) in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let mut failures = Vec::new();
    for (i, (name, c)) in children.iter_mut().enumerate() {
        let code = c.wait().ok().and_then(|s| s.code());
        if code != Some(3) {
            failures.push(format!(
                "trainer {name} exited {code:?}, expected 3 (stopped)"
            ));
        }
        let err = std::fs::read_to_string(dir.join(format!("train-{i}.err"))).unwrap_or_default();
        for line in err.lines().filter(|l| is_lock_error(l)) {
            failures.push(format!("trainer {name}: {line}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let reader_errors = reader_errors.lock().map(|v| v.clone()).unwrap_or_default();
    let lock_errors = reader_errors.iter().filter(|e| is_lock_error(e)).count();
    if !reader_errors.is_empty() {
        failures.push(format!(
            "reader: {} errors ({lock_errors} lock errors), first: {}",
            reader_errors.len(),
            reader_errors[0]
        ));
    }
    // Every run's steps, each once and none missing.
    let mut rows = 0u64;
    let mut steps_per_run = BTreeMap::new();
    match Reader::open(&db) {
        Ok(r) => {
            for run in r.runs().unwrap_or_default() {
                let m = r.metrics(run.id).unwrap_or_default();
                rows += m.len() as u64;
                let mut steps: Vec<i64> = m
                    .iter()
                    .filter(|x| x.key == "train/loss")
                    .map(|x| x.step)
                    .collect();
                steps.sort_unstable();
                let n = steps.len();
                let whole = steps.iter().enumerate().all(|(i, &s)| s == i as i64 + 1);
                if !whole {
                    failures.push(format!(
                        "run {}: {n} train/loss rows, not each of steps 1..{n} once",
                        run.id
                    ));
                }
                steps_per_run.insert(run.id, n);
            }
        }
        Err(e) => failures.push(format!("cannot read the database at the end: {e}")),
    }
    // Memory: the last sample against the first taken after five minutes (warm-up).
    let warm = samples.iter().find(|s| s.0 >= 300.0).or(samples.first());
    let growth: Vec<f64> = match (warm, samples.last()) {
        (Some(a), Some(b)) => a.2.iter().zip(&b.2).map(|(x, y)| y - x).collect(),
        _ => Vec::new(),
    };
    println!(
        "soak: {:.1} min; reader polls {}; lock errors {lock_errors}; wal max {:.2} MiB, end {:.2} MiB; \
         trainer RSS growth after warm-up {} MiB; metric rows {rows}; train/loss steps per run {:?}",
        elapsed.as_secs_f64() / 60.0,
        polls.load(Ordering::Relaxed),
        max_wal as f64 / 1048576.0,
        file_len(&wal) as f64 / 1048576.0,
        growth
            .iter()
            .map(|g| format!("{g:+.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        steps_per_run.values().collect::<Vec<_>>()
    );
    if failures.is_empty() {
        println!("soak: passed");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("soak: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
