//! `shiftadd hw` on the Fashion-MNIST presets under both cost models, and the hardware cost every
//! run stores.

use shiftadd_core::store::keys;

use crate::support::{db, run_err, run_id, run_ok, s, tiny_config};

fn preset(name: &str) -> String {
    format!("{}/../experiments/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn hw_orders_shift_add_mult_under_both_models_and_the_simulator_saves_like_the_paper() {
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
    // The default is the paper's simulator: Shift ≤ Add < Mult in total energy, and the MF
    // networks save about what the paper reports (68.9 %).
    let (s_e, a_e, m_e) = (
        tiny(0, "energy_mj"),
        tiny(1, "energy_mj"),
        tiny(2, "energy_mj"),
    );
    assert!(s_e <= a_e && a_e < m_e, "{s_e} <= {a_e} < {m_e}");
    for mf in [s_e, a_e] {
        assert!(
            (0.6..0.8).contains(&(1.0 - mf / m_e)),
            "saving {}",
            1.0 - mf / m_e
        );
    }
    for (i, c) in all.iter().enumerate() {
        assert_eq!(c["hw"]["model"], "shiftaddnas");
        let models = c["models"].as_array().expect("models");
        assert!(models.iter().all(|m| m["model"] == "shiftaddnas"));
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
        // The augmented model is bigger; under the simulator the MF layers move less.
        assert!(models[2]["energy_mj"].as_f64() > models[0]["energy_mj"].as_f64());
        let (mem, mem_mult) = (
            models[0]["memory_mj"].as_f64(),
            models[1]["memory_mj"].as_f64(),
        );
        if i < 2 {
            assert!(mem < mem_mult, "{i}: {mem:?} < {mem_mult:?}");
        } else {
            assert_eq!(mem, mem_mult);
        }
    }
    // The project's model: the all-mult twin moves the same data, so the MF saving is small.
    let project = run_ok(&["hw", &shift, "--json", "--set", "hw.model=project"]);
    let project: Vec<serde_json::Value> = serde_json::from_slice(&project.stdout).expect("JSON");
    let models = &project[0]["models"];
    assert_eq!(models[0]["model"], "project");
    assert_eq!(models[1]["memory_mj"], models[0]["memory_mj"]);
    let saving = 1.0
        - models[0]["energy_mj"].as_f64().expect("mJ")
            / models[1]["energy_mj"].as_f64().expect("mJ");
    assert!(saving < 0.2, "{saving}");
    // The table form names the three models and orders the summary by compute energy.
    let text = String::from_utf8(run_ok(&["hw", &mult, &shift]).stdout).expect("utf8");
    assert!(
        text.contains("largest augmented") && text.contains("tiny (all mult)"),
        "{text}"
    );
    assert!(
        text.contains("ShiftAddNAS simulator (hw.model = shiftaddnas)")
            && text.contains("MF saving"),
        "{text}"
    );
    let summary = text.split("summary").nth(1).expect("summary");
    assert!(
        summary.find("shift.toml") < summary.find("mult.toml"),
        "{summary}"
    );
    // Full convention (project model only): every MAC also pays an add, so compute energy grows.
    let sets = ["--set", "hw.model=project", "--set", "hw.convention=full"];
    let full = run_ok(&[&["hw", &shift, "--json"][..], &sets].concat());
    let full: Vec<serde_json::Value> = serde_json::from_slice(&full.stdout).expect("JSON");
    assert!(full[0]["models"][0]["compute_mj"].as_f64().expect("mJ") > s_c);
    let err = run_err(&["hw", &shift, "--set", "hw.convention=full"]);
    assert!(
        err.contains("hw.convention") && err.contains("hw.model"),
        "{err}"
    );
    let err = run_err(&["hw", &shift, "--set", "hw.bits=16"]);
    assert!(err.contains("hw.bits") && err.contains("8 or 32"), "{err}");
}

#[test]
fn a_run_stores_its_hardware_cost_under_both_models_when_it_starts() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    let cfg = tiny_config(dir.path(), "hwrun", 100, 1);
    let id = run_id(&run_ok(&["train", s(&cfg), "--db", s(&dbp)]));
    let c = db(&dbp);
    for hw_model in ["shiftaddnas", "project"] {
        let layers: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM hw_cost WHERE run_id = ?1 AND model = 'tiny' AND hw_model = ?2",
                rusqlite::params![id, hw_model],
                |r| r.get(0),
            )
            .expect("count");
        // micro: stem + 2 blocks × (expand, dw, project) + head + fc.
        assert_eq!(layers, 9, "{hw_model}");
    }
    let metric = |key: &str| -> f64 {
        c.query_row(
            "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2",
            rusqlite::params![id, key],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let energy = metric(keys::HW_ENERGY_MJ);
    // The headline figure is the config's model (the default: the simulator).
    assert_eq!(energy, metric(&keys::hw_under("shiftaddnas", "energy_mj")));
    assert!(metric(&keys::hw_under("project", "energy_mj")) > 0.0);
    let runs = run_ok(&["runs", "--json", "--db", s(&dbp)]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).expect("JSON");
    assert_eq!(runs[0]["energy_shiftaddnas_mj"].as_f64(), Some(energy));
    assert!(runs[0]["energy_project_mj"].as_f64() > Some(0.0));
    let detail: String = c
        .query_row(
            "SELECT detail FROM hw_cost WHERE run_id = ?1 AND model = 'tiny' AND layer = 'stem.conv'
             AND hw_model = 'shiftaddnas'",
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
