//! ShiftAddAug end to end on `synthetic`: Shift and Add tiny models trained inside a
//! multiplicative augmented model, with discrepancy histograms for every MF layer.

use shiftadd_core::store::keys;

use crate::support::{db, run_id, run_ok, runs_json, s};

#[test]
fn shift_and_add_smoke_runs_record_discrepancy_histograms() {
    let dir = tempfile::tempdir().expect("tmp");
    let dbp = dir.path().join("studio.db");
    for op in ["shift", "add"] {
        let preset = format!(
            "{}/../experiments/smoke-{op}-aug.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = run_ok(&[
            "train",
            &preset,
            "--db",
            s(&dbp),
            "--threads",
            "1",
            "--set",
            "data.synthetic_train=1000",
            "--set",
            "train.epochs=1",
            "--set",
            "train.batch_size=50",
            "--set",
            "eval.bn_images=200",
        ]);
        let id = run_id(&out);
        let runs = runs_json(&dbp);
        let run = runs.iter().find(|r| r["id"] == id).expect("listed");
        assert_eq!(run["status"], "finished", "{op}");
        assert_eq!(run["operator"], op);

        let c = db(&dbp);
        let count = |key: &str| -> i64 {
            c.query_row(
                "SELECT COUNT(*) FROM metrics WHERE run_id = ?1 AND key = ?2",
                rusqlite::params![id, key],
                |r| r.get(0),
            )
            .expect("count")
        };
        // 1,000 synthetic images less the default validation tenth: 900, 18 batches of 50.
        assert_eq!(count(keys::TRAIN_LOSS), 18, "{op}: one tiny loss per step");
        assert_eq!(
            count(keys::TRAIN_LOSS_AUG),
            18,
            "{op}: one augmented loss per step"
        );
        assert_eq!(count(keys::VAL_TOP1), 1, "{op}: validation every epoch");
        // The epoch's augmented loss beside the tiny model's: the mean of its steps' (all
        // batches hold 50 images, so image-weighted is the plain mean).
        let one = |sql: &str| -> f64 {
            c.query_row(sql, [id], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        let epoch_aug =
            one("SELECT value FROM metrics WHERE run_id = ?1 AND key = 'train/epoch_loss_aug'");
        let step_mean =
            one("SELECT avg(value) FROM metrics WHERE run_id = ?1 AND key = 'train/loss_aug'");
        assert!(
            (epoch_aug - step_mean).abs() < 1e-9 * step_mean.abs().max(1.0),
            "{op}: epoch {epoch_aug} vs steps {step_mean}"
        );
        assert_eq!(
            count(keys::TEST_TOP1),
            1,
            "{op}: the test set once, at the end"
        );
        assert_eq!(
            count(keys::VAL_TOP1_WIDEST),
            0,
            "eval.aug_top1 is off by default"
        );
        // micro has 7 MF layers under mf_layers = "body" (2 blocks × expand/dw/project + head).
        let views: Vec<(String, String, i64, String)> = c
            .prepare("SELECT layer, kind, epoch, stats FROM histograms WHERE run_id = ?1")
            .expect("prepare")
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let layers: std::collections::BTreeSet<&str> = views.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(layers.len(), 7, "{op}: {layers:?}");
        let kinds: &[&str] = if op == "shift" {
            &["pow2", "remapped", "stored"]
        } else {
            &["remapped", "stored"]
        };
        for layer in &layers {
            for kind in kinds {
                for epoch in [0, 1] {
                    let row = views
                        .iter()
                        .find(|v| v.0 == *layer && v.1 == *kind && v.2 == epoch);
                    let stats: serde_json::Value = serde_json::from_str(
                        &row.unwrap_or_else(|| panic!("{op} {layer} {kind} {epoch}"))
                            .3,
                    )
                    .expect("json");
                    for key in ["mean", "std", "kurtosis", "kl_gaussian", "kl_laplace"] {
                        assert!(
                            stats[key].as_f64().is_some_and(f64::is_finite),
                            "{op} {layer} {kind}: {key}"
                        );
                    }
                }
            }
        }
        // `weights/add_std` (Add models only): the largest Add layer's stored std of the epoch.
        let stored_std = views
            .iter()
            .filter(|v| v.1 == "stored" && v.2 == 1)
            .map(|v| {
                serde_json::from_str::<serde_json::Value>(&v.3).expect("json")["std"]
                    .as_f64()
                    .expect("std")
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let add_std: Vec<f64> = c
            .prepare("SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2")
            .expect("prepare")
            .query_map(rusqlite::params![id, keys::WEIGHTS_ADD_STD], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        if op == "add" {
            assert_eq!(add_std.len(), 1, "one per epoch");
            assert!(
                (add_std[0] - stored_std).abs() < 1e-9,
                "{add_std:?} vs {stored_std}"
            );
        } else {
            assert!(
                add_std.is_empty(),
                "a Shift model has no Add weights: {add_std:?}"
            );
        }
        // Export the tiny MF model; evaluated from its files it reproduces the run's accuracy.
        let model_dir = dir.path().join(format!("model-{op}"));
        let out = run_ok(&[
            "export",
            &id.to_string(),
            "--model",
            s(&model_dir),
            "--db",
            s(&dbp),
        ]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("test top-1"));
        let exported = shiftadd_core::export::ExportedModel::load(&model_dir).expect("load export");
        let cfg = shiftadd_core::Config::from_toml_str(
            &std::fs::read_to_string(&preset).expect("preset"),
            "preset",
            &["data.synthetic_train=1000".into()],
        )
        .expect("config");
        let top1 = exported.evaluate(&cfg.data, 256).expect("evaluate");
        let recorded = run["test_top1"].as_f64().expect("recorded");
        assert!(
            (top1 - recorded).abs() <= 0.001,
            "{op}: exported {top1} vs recorded {recorded}"
        );
        let mf_convs: Vec<&String> = exported
            .json
            .steps
            .iter()
            .filter_map(|st| match st {
                shiftadd_core::model::Step::Conv { name, op: o, .. } if o.as_str() == op => {
                    Some(name)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            mf_convs.len(),
            7,
            "{op}: every MF layer exported with its operator"
        );
        if op == "add" {
            grads_splits_the_update_of_the_shared_weights(&dbp, id);
        }
        eval_reproduces_the_recorded_validation(&dbp, id);
        the_integer_program_follows_the_float_model_and_its_c_agrees(
            &dbp,
            id,
            op,
            &cfg,
            dir.path(),
        );
        if op == "shift" {
            for name in mf_convs {
                let w = exported.tensor(&format!("{name}.weight")).expect("weight");
                let values = Vec::<f32>::try_from(w.flatten(0, -1)).expect("f32");
                assert!(
                    shiftadd_core::ops::shift::all_powers_of_two(&values, 5),
                    "{name}: not all signed powers of two in [2^-15, 1]"
                );
            }
        }

        // The Add layers' remap (cdf-affine) makes the weights Laplace-like at the start.
        if op == "add" {
            let kurt = |kind: &str| -> f64 {
                let row = views
                    .iter()
                    .find(|v| v.0 == "blocks.0.project" && v.1 == kind && v.2 == 0)
                    .expect("row");
                serde_json::from_str::<serde_json::Value>(&row.3).expect("json")["kurtosis"]
                    .as_f64()
                    .expect("f64")
            };
            assert!(
                kurt("stored") < 0.0 && (kurt("remapped") - 3.0).abs() < 0.6,
                "{} {}",
                kurt("stored"),
                kurt("remapped")
            );
        }
    }
}

/// `shiftadd grads` on a finished Add + ShiftAddAug run: per parameter, the two gradients; with
/// `aug.add_grad = "adder"` the augmented share of every Add weight's update grows; a direct run
/// is refused with the reason.
fn grads_splits_the_update_of_the_shared_weights(dbp: &std::path::Path, id: i64) {
    let probe = |sets: &[&str]| -> serde_json::Value {
        let id = id.to_string();
        let mut args = vec!["grads", &id, "--db", s(dbp), "--batches", "2", "--json"];
        for set in sets {
            args.extend(["--set", set]);
        }
        serde_json::from_slice(&run_ok(&args).stdout).expect("grads --json")
    };
    let raw = probe(&[]);
    let adder = probe(&["aug.add_grad=adder"]);
    let params = |v: &serde_json::Value| v["params"].as_array().expect("params").clone();
    let (raw_p, adder_p) = (params(&raw), params(&adder));
    assert_eq!(raw_p.len(), adder_p.len());
    assert!(raw["tiny_loss"].as_f64().is_some_and(f64::is_finite));
    let ratio = |p: &serde_json::Value| {
        p["aug_shared"].as_f64().expect("aug") / p["tiny"].as_f64().expect("tiny")
    };
    let mut mf = 0;
    for (r, a) in raw_p.iter().zip(&adder_p) {
        let name = r["name"].as_str().expect("name");
        assert_eq!(a["name"], r["name"]);
        for key in ["tiny", "aug_shared", "aug_only", "cosine"] {
            assert!(r[key].as_f64().is_some_and(f64::is_finite), "{name} {key}");
        }
        if r["kind"] == "Add layers' weights" {
            mf += 1;
            assert!(ratio(a) > ratio(r), "{name}: {} vs {}", ratio(a), ratio(r));
        } else if r["tiny"].as_f64() > Some(0.0) {
            let (a, r) = (ratio(a), ratio(r));
            assert!(
                (a - r).abs() <= 1e-6 * r.max(1.0),
                "{name}: unchanged, {a} vs {r}"
            );
        }
    }
    assert!(mf >= 4, "Add weights probed: {mf}");
    let id = id.to_string();
    let err = crate::support::run_err(&["grads", &id, "--db", s(dbp), "--set", "aug.hybrid=none"]);
    assert!(err.contains("directly"), "{err}");
}

/// `shiftadd export RUN --int DIR` on a trained run (issue 46): the integer program agrees with
/// the float model on nearly every test image, its MF layers multiply only in their
/// requantisation (and not at all with `--bn-shifts 2`), and its generated C, compiled with the
/// system's `cc`, gives the Rust interpreter's logits bit for bit.
fn the_integer_program_follows_the_float_model_and_its_c_agrees(
    dbp: &std::path::Path,
    id: i64,
    op: &str,
    cfg: &shiftadd_core::Config,
    tmp: &std::path::Path,
) {
    use shiftadd_core::deploy;
    let report = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(deploy::REPORT_FILE)).expect("report"),
        )
        .expect("json")
    };
    let int_dir = tmp.join(format!("int-{op}"));
    let args = [
        "export",
        &id.to_string(),
        "--int",
        s(&int_dir),
        "--images",
        "300",
        "--db",
        s(dbp),
    ];
    let out = run_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("multiplications in MF layers"), "{text}");
    let r = report(&int_dir);
    let t = &r["test"];
    assert_eq!(t["images"], 300);
    assert!(
        t["agreement"].as_f64().expect("agreement") >= 0.95,
        "{op}: {t}"
    );
    let (int, float) = (
        t["int_top1"].as_f64().expect("int"),
        t["float_top1"].as_f64().expect("float"),
    );
    assert!(
        (int - float).abs() <= 0.03,
        "{op}: integer {int} vs float {float}"
    );
    assert!(r["costs"]["mf_multiplies"].as_u64().expect("mf") > 0);
    // Its energy under each hardware model, beside the float model priced from the very layers
    // the Hardware view prices for this config: the program's convs are the tiny model's.
    let (channels, resolution, classes) = cfg.data.input_shape();
    let energy = r["energy"].as_array().expect("energy");
    assert_eq!(
        energy.len(),
        shiftadd_core::spec::config::HwModel::ALL.len(),
        "{op}"
    );
    for e in energy {
        let model: shiftadd_core::spec::config::HwModel =
            serde_json::from_value(e["model"].clone()).expect("model");
        let mut c = cfg.clone();
        c.hw = shiftadd_core::hw::under(&c.hw, model);
        let want = shiftadd_core::hw::config_costs(&c, channels, resolution, classes)[0].energy_mj;
        let got = e["float_energy_mj"].as_f64().expect("float energy");
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{op} under {model:?}: {got} vs the Hardware view's {want}"
        );
        let (compute, memory) = (
            e["compute_mj"].as_f64().expect("compute"),
            e["memory_mj"].as_f64().expect("memory"),
        );
        assert!(compute > 0.0 && memory > 0.0, "{op}: {e}");
    }
    let layers = r["costs"]["layers"].as_array().expect("layers");
    assert_eq!(
        layers.iter().filter(|l| l["mf"] == true).count(),
        7,
        "{op}: the 7 MF layers"
    );
    let pow2_dir = tmp.join(format!("int-{op}-pow2"));
    let mut pow2 = args.to_vec();
    pow2[3] = s(&pow2_dir);
    pow2.extend(["--bn-shifts", "2"]);
    run_ok(&pow2);
    assert_eq!(
        report(&pow2_dir)["costs"]["mf_multiplies"],
        0,
        "{op}: no multiply with --bn-shifts"
    );
    // The C: compiled and run on the first 100 test images, the interpreter's logits exactly.
    let model = deploy::load(&int_dir.join(deploy::INT_FILE)).expect("int_model.json");
    let splits = shiftadd_core::data::load(&cfg.data).expect("data");
    let size = splits.test.image_size();
    let images = &splits.test.images[..100 * size];
    std::fs::write(int_dir.join("images.bin"), images).expect("images");
    let exe = int_dir.join("classify");
    let cc = std::process::Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(int_dir.join("model.c"))
        .arg(int_dir.join("main.c"))
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let ran = std::process::Command::new(&exe)
        .arg(int_dir.join("images.bin"))
        .output()
        .expect("classify");
    let lines: Vec<String> = String::from_utf8_lossy(&ran.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 100);
    for (k, line) in lines.iter().enumerate() {
        let logits = model.run(model.input(&images[k * size..(k + 1) * size]), None);
        let want: Vec<String> = logits.iter().map(ToString::to_string).collect();
        assert!(
            line.starts_with(&want.join(" ")),
            "{op} image {k}: C {line} vs Rust {want:?}"
        );
    }
}

/// `shiftadd eval` from the last checkpoint: with the statistics saved in it, and with them
/// re-estimated on the same `eval.bn_images` (200 here), it reproduces the validation the run
/// recorded at that epoch; each batch's own statistics give another figure; the BN offsets it
/// lists are those the run recorded as `val/bn_offset`; `--split train` evaluates the images it
/// trained on, `--images N` the first N. A checkpoint that is not kept is refused with the epochs that are.
fn eval_reproduces_the_recorded_validation(dbp: &std::path::Path, id: i64) {
    let sid = id.to_string();
    let out = run_ok(&[
        "eval",
        &sid,
        "--db",
        s(dbp),
        "--bn-images",
        "200,900",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval --json");
    let rows = v["rows"].as_array().expect("rows");
    let sources: Vec<(&str, Option<u64>)> = rows
        .iter()
        .map(|r| (r["bn"].as_str().expect("bn"), r["bn_images"].as_u64()))
        .collect();
    assert_eq!(
        sources,
        [
            ("saved", None),
            ("reestimated", Some(200)),
            ("reestimated", Some(900)),
            ("batch", None)
        ]
    );
    let top1 = |i: usize| rows[i]["top1"].as_f64().expect("top1");
    let recorded = |key: &str| -> f64 {
        db(dbp)
            .query_row(
                "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step DESC",
                rusqlite::params![id, key],
                |r| r.get(0),
            )
            .expect(key)
    };
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["images"], 100, "the validation tenth of 1,000");
    assert!(
        (top1(0) - recorded(keys::VAL_TOP1)).abs() < 1e-9,
        "saved statistics: {} vs recorded {}",
        top1(0),
        recorded(keys::VAL_TOP1)
    );
    assert_eq!(top1(1), top1(0), "re-estimated as the epoch end did");
    for r in rows {
        assert!(r["loss"].as_f64().is_some_and(f64::is_finite), "{r}");
    }
    let offsets = v["bn_offsets"].as_array().expect("offsets");
    assert!(offsets.len() >= 7, "every BN layer: {}", offsets.len());
    let worst = offsets[0]["mean_over_sd"].as_f64().expect("offset");
    assert!(
        (worst - recorded(keys::VAL_BN_OFFSET)).abs() <= 1e-6 * worst.max(1.0),
        "{worst} vs recorded {}",
        recorded(keys::VAL_BN_OFFSET)
    );
    // On the images it trained on: the training set less the validation tenth, or its head.
    let eval_train = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", &sid, "--db", s(dbp), "--split", "train"];
        args.extend_from_slice(extra);
        args.extend(["--bn-images", "200", "--json"]);
        serde_json::from_slice(&run_ok(&args).stdout).expect("eval --split train --json")
    };
    let t = eval_train(&[]);
    assert_eq!(
        (t["split"].as_str(), t["images"].as_u64()),
        (Some("train"), Some(900))
    );
    let train_top1 = t["rows"][0]["top1"].as_f64().expect("train top1");
    assert!((0.0..=1.0).contains(&train_top1), "{train_top1}");
    let h = eval_train(&["--images", "250"]);
    assert_eq!(h["images"].as_u64(), Some(250), "the first 250 of them");
    let err = crate::support::run_err(&["eval", &sid, "--db", s(dbp), "--images", "0"]);
    assert!(err.contains("--images"), "{err}");
    let err = crate::support::run_err(&["eval", &sid, "--db", s(dbp), "--epoch", "5"]);
    assert!(err.contains("keeps epochs 1"), "{err}");
}
