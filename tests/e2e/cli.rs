//! The smoke preset end to end: train, list, export.

use crate::support::{run_id, run_ok, runs_json, s};

#[test]
fn smoke_preset_trains_lists_and_exports() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("studio.db");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/smoke.toml");
    let started = std::time::Instant::now();
    let out = run_ok(&["train", preset, "--db", s(&db)]);
    let secs = started.elapsed().as_secs_f64();
    let id = run_id(&out);
    eprintln!("smoke preset: run {id} in {secs:.1} s");

    let runs = runs_json(&db);
    let run = runs.iter().find(|r| r["id"] == id).expect("listed");
    assert_eq!(run["status"], "finished");
    assert_eq!(run["epochs_done"], 5);
    let top1 = run["last_val_top1"].as_f64().expect("accuracy recorded");
    assert!(
        top1 > 0.4,
        "smoke accuracy {top1} should be well above chance (0.1)"
    );

    let csv = dir.path().join("m.csv");
    run_ok(&["export", &id.to_string(), "--csv", s(&csv), "--db", s(&db)]);
    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("run_id,key,step,epoch,wall_time,value"));
    let val: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(",val/top1,"))
        .map(|l| {
            l.rsplit(',')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("value")
        })
        .collect();
    assert_eq!(val.len(), 5);
    assert!((val[4] - top1).abs() < 1e-9);
    assert!(text.lines().filter(|l| l.contains(",train/loss,")).count() > 400);

    let table = String::from_utf8(run_ok(&["runs", "--db", s(&db)]).stdout).expect("utf8");
    assert!(
        table.contains("smoke") && table.contains("finished"),
        "{table}"
    );
}
