//! `experiments/gpu/check.sh`, the one script for a GPU machine (issue 42), runs end to end here in
//! its dry-run mode: every part on the CPU at tiny sizes, with this build's binary and the project's
//! python, and its summary has every table filled.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_check_runs_end_to_end_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} (make setup installs it)",
        python.display()
    );
    let out = tempfile::tempdir().expect("tmp");
    let run = Command::new("bash")
        .arg(root.join("experiments/gpu/check.sh"))
        .arg("--dry-run")
        .env("OUT", out.path())
        .env("SHIFTADD", env!("CARGO_BIN_EXE_shiftadd-under-test"))
        .env("PYTHON", &python)
        // Enough for the first three parts and a little of the study on two busy cores.
        .env("CHECK_SECONDS", "200")
        .output()
        .expect("bash");
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    let summary = std::fs::read_to_string(out.path().join("summary.md")).expect("summary.md");
    for section in ["## seed", "## add", "## step", "## cells", "## study"] {
        assert!(summary.contains(section), "{section} missing:\n{summary}");
    }
    // The four fixtures ran on both "devices" (here both the CPU) and agree.
    let seed_rows: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("| ") && l.ends_with("| yes |"))
        .collect();
    assert_eq!(seed_rows.len(), 4, "{summary}");
    // The Add implementations, the tiled kernels among them, each checked, and a timing row.
    assert!(summary.contains("tiled kernels ran"), "{summary}");
    for imp in [
        "| reference | f64 |",
        "| tiled | f64 |",
        "| tiled | f32 |",
        "| fast | f32 |",
    ] {
        assert!(summary.contains(imp), "{imp} missing:\n{summary}");
    }
    assert!(summary.contains("| Mult conv | ATen Add |"), "{summary}");
    // Every mode at both batch sizes has a figure from this project and from PyTorch.
    let step_rows: Vec<&str> = summary.lines().filter(|l| l.ends_with("× |")).collect();
    assert_eq!(step_rows.len(), 12, "{summary}");
    // K = 1 and 2 cells, each with a throughput.
    for k in ["| 1 |", "| 2 |"] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(k) && !l.contains("| 0 |")),
            "cells {k}:\n{summary}"
        );
    }
    assert!(out.path().join("check.db").exists());
}
