//! Bad input gets a clear message and a non-zero exit, and loses nothing already recorded.

use std::io::Write;
use std::path::Path;

use crate::support::{db, run_err, run_ok, runs_json, s, tiny_config};

fn metric_rows(dbp: &Path) -> i64 {
    db(dbp)
        .query_row("SELECT COUNT(*) FROM metrics", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn bad_configs_data_and_divergence_are_reported_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "good", 200, 1);
    run_ok(&["train", s(&cfg), "--db", s(&dbp)]);
    let recorded = metric_rows(&dbp);
    assert!(recorded > 0);

    // Unknown key.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[train]\nepocs = 3\n").expect("write");
    let err = run_err(&["train", s(&typo), "--db", s(&dbp)]);
    assert!(err.contains("epocs") && err.lines().count() == 1, "{err}");

    // Out-of-range value.
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "train.batch_size=0",
    ]);
    assert!(
        err.contains("train.batch_size") && err.contains("[1, 8192]"),
        "{err}"
    );

    // Missing dataset directory: refused before a run is created.
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "data.dataset=fashion-mnist",
        "--set",
        "data.dir=/nonexistent/fm",
    ]);
    assert!(
        err.contains("/nonexistent/fm") && err.contains("idx"),
        "{err}"
    );
    assert_eq!(runs_json(&dbp).len(), 1);

    // Truncated idx file: refused naming the file (its gzip trailer gives the length away).
    let fm = dir.path().join("fm");
    std::fs::create_dir(&fm).expect("mkdir");
    for (stem, shape) in [
        ("train-images-idx3-ubyte", vec![100, 28, 28]),
        ("train-labels-idx1-ubyte", vec![100]),
        ("t10k-images-idx3-ubyte", vec![20, 28, 28]),
        ("t10k-labels-idx1-ubyte", vec![20]),
    ] {
        let n: usize = shape.iter().product();
        shiftadd_core::data::write_idx(&fm.join(stem), &shape, &vec![1u8; n]).expect("idx");
    }
    let bytes = std::fs::read(fm.join("train-images-idx3-ubyte")).expect("read");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(fm.join("train-images-idx3-ubyte.gz")).expect("create"),
        flate2::Compression::fast(),
    );
    gz.write_all(&bytes[..bytes.len() / 2]).expect("gz");
    gz.finish().expect("gz");
    std::fs::remove_file(fm.join("train-images-idx3-ubyte")).expect("rm");
    let fm_dir = format!("data.dir={}", s(&fm));
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "data.dataset=fashion-mnist",
        "--set",
        &fm_dir,
    ]);
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("truncated"),
        "{err}"
    );

    // Corrupt CIFAR file.
    let cifar = dir.path().join("cifar");
    std::fs::create_dir(&cifar).expect("mkdir");
    std::fs::write(cifar.join("train.bin"), vec![0u8; 5000]).expect("write");
    std::fs::write(cifar.join("test.bin"), vec![0u8; 3074]).expect("write");
    let cdir = format!("data.dir={}", s(&cifar));
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "data.dataset=cifar100",
        "--set",
        &cdir,
    ]);
    assert!(
        err.contains("train.bin") && err.contains("corrupt"),
        "{err}"
    );
    // A CIFAR-100 file of whole records, one of whose labels is out of range.
    let rec = 2 + 3072;
    let mut bad = vec![0u8; 3 * rec];
    bad[rec + 1] = 250; // record 1's fine label
    std::fs::write(cifar.join("train.bin"), &bad).expect("write");
    std::fs::write(cifar.join("test.bin"), vec![0u8; rec]).expect("write");
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "data.dataset=cifar100",
        "--set",
        &cdir,
    ]);
    assert!(
        err.contains("train.bin") && err.contains("record 1: label 250 outside 0..100"),
        "{err}"
    );
    // A device this machine does not have (the test machines have no GPU; on one with CUDA the
    // run would start, so nothing is asserted there).
    if !tch::Cuda::is_available() {
        let err = run_err(&["train", s(&cfg), "--db", s(&dbp), "--device", "cuda"]);
        assert!(err.contains("CUDA"), "{err}");
    }
    // All refused before a run row existed.
    assert_eq!(runs_json(&dbp).len(), 1);

    // Divergence.
    let div = tiny_config(dir.path(), "div", 1000, 1);
    let err = run_err(&[
        "train",
        s(&div),
        "--db",
        s(&dbp),
        "--set",
        "train.lr=1e9",
        "--set",
        "train.warmup_epochs=0",
    ]);
    assert!(err.contains("diverged"), "{err}");
    let runs = runs_json(&dbp);
    let last = runs.last().expect("runs");
    assert_eq!(last["status"], "failed");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("diverged")),
        "{last}"
    );

    // Nothing earlier was lost.
    assert_eq!(runs[0]["status"], "finished");
    let c = db(&dbp);
    let first_rows: i64 = c
        .query_row("SELECT COUNT(*) FROM metrics WHERE run_id = 1", [], |r| {
            r.get(0)
        })
        .expect("n");
    assert_eq!(first_rows, recorded);
    drop(c);

    // A database from a newer schema: refused, untouched.
    db(&dbp)
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    let before = std::fs::read(&dbp).expect("read db");
    let err = run_err(&["train", s(&cfg), "--db", s(&dbp)]);
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    let err = run_err(&["runs", "--db", s(&dbp)]);
    assert!(err.contains("newer"), "{err}");
    assert_eq!(
        std::fs::read(&dbp).expect("read db"),
        before,
        "the refused database is unchanged"
    );
}

#[test]
fn a_damaged_database_is_named_with_how_to_salvage_it_and_check_reports_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "good", 100, 1);
    run_ok(&["train", s(&cfg), "--db", s(&dbp)]);
    let out = run_ok(&["check", "--db", s(&dbp)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(": ok (schema v") && text.contains("1 runs"),
        "{text}"
    );
    crate::support::damage_pages(&dbp);
    let before = std::fs::read(&dbp).expect("read");
    for args in [
        vec!["runs", "--db", s(&dbp)],
        vec!["train", s(&cfg), "--db", s(&dbp)],
    ] {
        let err = run_err(&args);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("is damaged") && err.contains(".recover"),
            "{args:?}: {err}"
        );
    }
    let out = crate::support::bin()
        .args(["check", "--db", s(&dbp)])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("damaged") && text.contains(".recover"),
        "{text}"
    );
    assert!(
        std::fs::read(&dbp).expect("read") == before,
        "nothing was changed"
    );
}

#[test]
fn a_truncated_dataset_fails_train_study_and_nas_before_any_row_is_recorded() {
    use shiftadd_core::data::write_idx;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("fmnist");
    std::fs::create_dir_all(&data).expect("mkdir");
    for (split, n) in [("train", 60usize), ("t10k", 20)] {
        write_idx(
            &data.join(format!("{split}-images-idx3-ubyte")),
            &[n, 28, 28],
            &vec![7; n * 784],
        )
        .expect("images");
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(
            &data.join(format!("{split}-labels-idx1-ubyte")),
            &[n],
            &labels,
        )
        .expect("labels");
    }
    let images = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).expect("read");
    std::fs::write(&images, &bytes[..bytes.len() - 500]).expect("truncate");
    let dbp = dir.path().join("studio.db");
    let set = format!("data.dir={}", data.display());
    let experiments = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let preset = experiments.join("fmnist-mbv2tiny-mult.toml");
    let study = experiments.join("studies/paper-main.toml");
    let nas = experiments.join("nas-fmnist.toml");
    for args in [
        vec!["train", s(&preset)],
        vec!["study", s(&study)],
        vec!["nas", s(&nas)],
    ] {
        let mut args = args;
        args.extend(["--set", &set, "--db", s(&dbp)]);
        let err = run_err(&args);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
            "{args:?}: {err}"
        );
    }
    if dbp.exists() {
        let conn = db(&dbp);
        let count = |t: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(
            (count("runs"), count("studies")),
            (0, 0),
            "nothing recorded"
        );
    }
}

/// Names from a database (an import, another user) reach the terminal escaped: no ESC / OSC
/// sequence, carriage return, NUL or right-to-left override is printed as it is, a 200,000-
/// character name neither panics nor widens the table past its cut; new names are checked.
#[test]
fn hostile_run_names_are_printed_escaped_and_refused_as_new_names() {
    use shiftadd_core::store::{NewRun, Status, Writer};
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("hostile.db");
    let w = Writer::open(&dbp).expect("db");
    let long = "n".repeat(200_000);
    let names = [
        "title\u{1b}]0;pwned\u{7}after",
        "hidden\rshown",
        "nul\0byte",
        "rtl\u{202e}txt.exe",
        long.as_str(),
    ];
    let mut ids = Vec::new();
    for name in names {
        let id = w
            .create_run(NewRun {
                tags: "ok,\u{1b}[2Jwipe".into(),
                ..crate::support::synthetic_run(name, "mult")
            })
            .expect("run");
        w.status(id, Status::Failed, Some("bad\u{1b}[31mreason".into()));
        ids.push(id);
    }
    w.flush().expect("flush");
    drop(w);
    let raw = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let clean = |text: &str| {
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
    };
    let listed = raw(&run_ok(&["runs", "--db", s(&dbp)]));
    assert!(clean(&listed), "{listed:?}");
    assert!(
        listed.contains("title\\u{1b}]0;pwned\\u{7}after"),
        "{listed}"
    );
    assert!(listed.contains("hidden\\u{d}shown") && listed.contains("rtl\\u{202e}txt.exe"));
    assert!(listed.contains("bad\\u{1b}[31mreason"), "{listed}");
    let widest = listed.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(
        widest < 250,
        "a 200,000-character name is cut: {widest} columns"
    );
    for &id in &ids {
        let one = raw(&run_ok(&["runs", &id.to_string(), "--db", s(&dbp)]));
        assert!(clean(&one), "{one:?}");
    }
    let detail = raw(&run_ok(&["runs", &ids[0].to_string(), "--db", s(&dbp)]));
    assert!(detail.contains("tags: ok,\\u{1b}[2Jwipe"), "{detail}");
    // New names: a length limit and no steering characters, said on one line.
    let id = ids[1].to_string();
    let huge = "x".repeat(65_536);
    let err = run_err(&["runs", &id, "--set-name", &huge, "--db", s(&dbp)]);
    assert!(
        err.contains("at most 200 characters") && err.contains("65536"),
        "{err}"
    );
    let err = run_err(&["runs", &id, "--set-name", "a\u{1b}[2Jb", "--db", s(&dbp)]);
    assert!(err.contains("control characters") && clean(&err), "{err:?}");
    let smoke = format!("{}/../experiments/smoke.toml", env!("CARGO_MANIFEST_DIR"));
    let err = run_err(&["train", &smoke, "--name", "x\ry", "--db", s(&dbp)]);
    assert!(err.contains("control characters"), "{err:?}");
    assert_eq!(runs_json(&dbp).len(), names.len(), "nothing was created");
}

/// A typo in `--db` creates nothing: reading commands refuse a missing database, naming it, and
/// leave no file or folder behind; a folder is not a database.
#[test]
fn reading_commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let typo = dir.path().join("sub").join("typo.db");
    let study = format!(
        "{}/../experiments/studies/smoke-study.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    for args in [
        vec!["runs"],
        vec!["runs", "1", "--set-name", "x"],
        vec!["check"],
        vec!["export", "1", "--csv", "/dev/null"],
        vec!["eval", "1"],
        vec!["grads", "1"],
        vec!["resume", "1"],
        vec!["compact", "out.db.gz"],
        vec!["study", &study, "--report", "md"],
    ] {
        let mut all = args.clone();
        all.extend(["--db", s(&typo)]);
        let err = run_err(&all);
        assert!(
            err.contains("no database at") && err.contains("typo.db"),
            "{args:?}: {err}"
        );
        assert!(
            !dir.path().join("sub").exists(),
            "{args:?} created the folder"
        );
    }
    let err = run_err(&["runs", "--db", s(dir.path())]);
    assert!(err.contains("is a folder, not a database"), "{err}");
}

/// `shiftadd` as a user who cannot write `dir` or the files in it: as root, the same binary run as
/// `nobody` (root writes whatever it likes); otherwise the folder and its files made read-only.
fn as_reader_who_cannot_write(dir: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let exe = env!("CARGO_BIN_EXE_shiftadd-under-test");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut c = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", exe]);
        c
    } else {
        std::process::Command::new(exe)
    };
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let mode = if e.path().is_dir() { 0o777 } else { 0o444 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let out = c
        .args(args)
        .env_remove("SHIFTADD_DB")
        .env("SHIFTADD_LOG", "warn")
        .env("HOME", dir)
        .output()
        .expect("spawn");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}

/// Issue 43, item 5: every command, `runs`, `check` and `export` included, failed on a database
/// it could not write ("unable to open database file"), and a read of another user's file left
/// `-wal`/`-shm` files behind. Now reading works and leaves the folder as it was; a change is
/// refused, naming why.
#[test]
fn a_database_this_user_cannot_write_is_read_and_nothing_is_left_beside_it() {
    use shiftadd_core::store::{MetricRow, Status, WriteOp, Writer, keys};
    let top = tempfile::tempdir().expect("tmp");
    let dir = top.path().join("ro");
    let out = top.path().join("out");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::create_dir_all(&out).expect("out");
    let dbp = dir.join("theirs.db");
    {
        let w = Writer::open(&dbp).expect("db");
        let id = w
            .create_run(crate::support::synthetic_run("theirs", "mult"))
            .expect("run");
        let rows = (0..5)
            .map(|step| MetricRow {
                run: id,
                key: keys::TRAIN_LOSS.into(),
                step,
                epoch: 0,
                wall_time: step as f64,
                value: 1.0,
            })
            .collect();
        w.send(WriteOp::Metrics(rows)).expect("metrics");
        w.status(id, Status::Finished, None);
        w.flush().expect("flush");
    }
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&dir), ["theirs.db"], "the writer closed cleanly");
    let before = std::fs::read(&dbp).expect("bytes");
    // Another user may pass through the test's folder, and write the output folder.
    for (d, mode) in [(top.path(), 0o755), (out.as_path(), 0o777)] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let csv = out.join("theirs.csv");
    for args in [
        vec!["runs"],
        vec!["runs", "1"],
        vec!["check"],
        vec!["export", "1", "--csv", s(&csv)],
    ] {
        let mut all = args.clone();
        all.extend(["--db", s(&dbp)]);
        let o = as_reader_who_cannot_write(&dir, &all);
        let (said, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(
            said.contains("theirs") || said.contains("ok") || said.contains("metric rows"),
            "{args:?}: {said}"
        );
        assert_eq!(
            listing(&dir),
            ["theirs.db"],
            "{args:?} left files beside it"
        );
    }
    assert!(csv.is_file(), "the export was written");
    let o = as_reader_who_cannot_write(&dir, &["runs", "--db", s(&dbp)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("read-only here"));
    // A change is refused, named, and changes nothing.
    let o = as_reader_who_cannot_write(&dir, &["runs", "1", "--tag", "x", "--db", s(&dbp)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot be written by this user"), "{err}");
    assert_eq!(listing(&dir), ["theirs.db"]);
    assert!(
        std::fs::read(&dbp).expect("bytes") == before,
        "the file changed"
    );
}
