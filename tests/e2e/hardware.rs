//! `shiftadd hw` on the Fashion-MNIST presets, and the hardware cost every run stores.

use crate::support::{db, run_err, run_id, run_ok, s, tiny_config};

fn preset(name: &str) -> String {
    format!("{}/../experiments/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn hw_orders_shift_add_mult_and_reports_memory_beside_compute() {
    let (shift, add, mult) = (
        preset("fmnist-mbv2tiny-shift"),
        preset("fmnist-mbv2tiny-add"),
        preset("fmnist-mbv2tiny-mult"),
    );
    let out = run_ok(&["hw", &shift, &add, &mult, "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(all.len(), 3);
    let tiny = |i: usize, key: &str| all[i]["models"][0][key].as_f64().expect("number");
    let (s_c, a_c, m_c) = (
        tiny(0, "compute_mj"),
        tiny(1, "compute_mj"),
        tiny(2, "compute_mj"),
    );
    assert!(
        s_c < a_c && a_c < m_c,
        "paper convention: {s_c} < {a_c} < {m_c}"
    );
    for (i, c) in all.iter().enumerate() {
        let models = c["models"].as_array().expect("models");
        assert_eq!(models.len(), 3, "tiny, all-mult, largest augmented");
        let layers = models[0]["layers"].as_array().expect("layers");
        let sum: f64 = layers
            .iter()
            .map(|l| l["compute_pj"].as_f64().expect("pj"))
            .sum();
        assert!(
            (sum * 1e-9 - tiny(i, "compute_mj")).abs() < 1e-12,
            "totals add up"
        );
        assert!(tiny(i, "memory_mj") > 0.0 && tiny(i, "latency_ms") > 0.0);
        // The augmented model is bigger, and the all-mult twin moves the same data.
        assert!(models[2]["energy_mj"].as_f64() > models[0]["energy_mj"].as_f64());
        assert_eq!(models[1]["memory_mj"], models[0]["memory_mj"]);
    }
    // The table form names the three models and orders the summary by compute energy.
    let text = String::from_utf8(run_ok(&["hw", &mult, &shift]).stdout).expect("utf8");
    assert!(
        text.contains("largest augmented") && text.contains("tiny (all mult)"),
        "{text}"
    );
    let summary = text.split("summary").nth(1).expect("summary");
    assert!(
        summary.find("shift.toml") < summary.find("mult.toml"),
        "{summary}"
    );
    // Full convention: every MAC also pays an add, so compute energy grows.
    let full = run_ok(&["hw", &shift, "--json", "--set", "hw.convention=full"]);
    let full: Vec<serde_json::Value> = serde_json::from_slice(&full.stdout).expect("JSON");
    assert!(full[0]["models"][0]["compute_mj"].as_f64().expect("mJ") > s_c);
    let err = run_err(&["hw", &shift, "--set", "hw.bits=16"]);
    assert!(err.contains("hw.bits") && err.contains("8 or 32"), "{err}");
}

#[test]
fn a_run_stores_its_hardware_cost_when_it_starts() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "hwrun", 100, 1);
    let id = run_id(&run_ok(&["train", s(&cfg), "--db", s(&dbp)]));
    let c = db(&dbp);
    let layers: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM hw_cost WHERE run_id = ?1 AND model = 'tiny'",
            [id],
            |r| r.get(0),
        )
        .expect("count");
    // micro: stem + 2 blocks × (expand, dw, project) + head + fc.
    assert_eq!(layers, 9);
    let energy: f64 = c
        .query_row(
            "SELECT value FROM metrics WHERE run_id = ?1 AND key = 'hw/energy_mj'",
            [id],
            |r| r.get(0),
        )
        .expect("hw/energy_mj recorded");
    let detail: String = c
        .query_row(
            "SELECT detail FROM hw_cost WHERE run_id = ?1 AND model = 'tiny' AND layer = 'stem.conv'",
            [id],
            |r| r.get(0),
        )
        .expect("stem row");
    let detail: serde_json::Value = serde_json::from_str(&detail).expect("JSON detail");
    assert!(
        energy > 0.0 && detail["macs"].as_i64() > Some(0),
        "{detail}"
    );
}
