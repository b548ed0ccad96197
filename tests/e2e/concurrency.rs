//! Two runs at once in one database while a reader polls it: no "database is locked".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{bin, s, tiny_config};

#[test]
fn two_writers_and_a_polling_reader_never_see_a_locked_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "par", 1000, 3);
    // Create the schema first so the reader has something to read from its first poll.
    drop(shiftadd_core::store::Writer::open(&dbp).expect("schema"));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, dbp) = (done.clone(), dbp.clone());
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let reader = shiftadd_core::store::Reader::open(&dbp).expect("reader");
                let mut polls = 0usize;
                while !done.load(Ordering::SeqCst) {
                    let runs = reader.runs().expect("runs query never fails");
                    for r in &runs {
                        reader.metrics(r.id).expect("metrics query never fails");
                    }
                    polls += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                polls
            })
            .expect("spawn")
    };
    let children: Vec<_> = (0..2)
        .map(|_| {
            bin()
                .args(["train", s(&cfg), "--db", s(&dbp)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.to_lowercase().contains("locked"), "{stderr}");
    }
    done.store(true, Ordering::SeqCst);
    let polls = reader.join().expect("reader thread");
    assert!(polls > 10, "the reader polled during training ({polls})");
    let runs = crate::support::runs_json(&dbp);
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r["status"] == "finished" && r["epochs_done"] == 3),
        "{runs:?}"
    );
}

#[test]
fn processes_starting_together_on_a_new_database_never_fail() {
    // Issue 21 item 9: `shiftadd train` processes started at the same moment on a database that
    // does not exist yet (observed once: one exited 1 before creating its run). Each round a new
    // file; every process must finish its run.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = tiny_config(dir.path(), "start", 100, 1);
    let (rounds, procs) = (4, 6);
    for round in 0..rounds {
        let dbp = dir.path().join(format!("new-{round}.db"));
        let children: Vec<_> = (0..procs)
            .map(|_| {
                bin()
                    .args(["train", s(&cfg), "--db", s(&dbp), "--threads", "1"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let runs = crate::support::runs_json(&dbp);
        assert_eq!(runs.len(), procs, "round {round}");
        assert!(runs.iter().all(|r| r["status"] == "finished"), "{runs:?}");
    }
}
