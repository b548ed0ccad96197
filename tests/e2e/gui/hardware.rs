//! The Hardware view: each model's totals under either cost model.

use super::*;

/// The app on `db`, showing run `run` in the Hardware view.
fn hardware_app(db: &std::path::Path, run: i64) -> Fake {
    let persisted = Persisted {
        view: View::Hardware,
        current: Some(run),
        ..Persisted::default()
    }
    .in_database(db);
    fake_app(db, persisted)
}

#[test]
fn hardware_view_shows_each_models_totals_under_either_cost_model() {
    use shiftadd_core::spec::config::HwModel;
    use shiftadd_core::store::HwCostRow;

    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut cfg = Config::default();
    let costs = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
    cfg.hw.model = HwModel::Project;
    let project = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
    let mut rows = shiftadd_core::hw::cost_rows(1, &costs);
    rows.extend(shiftadd_core::hw::cost_rows(1, &project));
    rows.push(HwCostRow {
        run: 1,
        hw_model: "shiftaddnas".into(),
        model: "augmented".into(),
        layer_index: 999,
        layer: "broken".into(),
        detail: serde_json::json!({"name": "broken"}),
    });
    let w = Writer::open(&db).expect("db");
    w.send(WriteOp::HwCost(rows)).expect("hw rows");
    w.flush().expect("flush");
    drop(w);
    let mut f = hardware_app(&db, 1);
    let h = &mut f.harness;
    wait_for(h, "the totals", |h| has_label(h, "largest augmented"));
    for c in &costs {
        // MAC counts as the cost model computed them, one row per model.
        let macs = c.layers.iter().map(|l| l.macs).sum::<i64>() as f64 / 1e6;
        assert!(has_label(h, &format!("{macs:.2} M")), "{} MACs", c.label);
    }
    assert!(
        has_label(h, "1 rows unreadable"),
        "the broken row is reported"
    );
    let ratio = costs[2].energy_mj / costs[0].energy_mj;
    assert!(
        has_label(h, &format!("{ratio:.2}")),
        "× tiny energy {ratio:.2}"
    );
    // The figures name their model; the toggle switches every total to the other.
    assert!(has_label(
        h,
        "Hardware cost · run #1 · ShiftAddNAS simulator"
    ));
    let energy = |c: &shiftadd_core::hw::ModelCost| format!("{:.4}", c.energy_mj);
    assert!(
        has_label(h, &energy(&costs[1])),
        "simulator: tiny all-Mult total"
    );
    click(h, "project model");
    wait_for(h, "the project totals", |h| {
        has_label(h, &energy(&project[1]))
    });
    assert!(has_label_containing(
        h,
        "Energy per layer (µJ), project model"
    ));
    assert!(
        !has_label(h, "1 rows unreadable"),
        "the broken row is the simulator's"
    );
    // The stacked bars as SVG, with the segments' names in its legend.
    let (svg, texts) = export_svg(h);
    assert!(
        texts.iter().any(|t| t.contains("Energy per layer")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("compute") || t.contains("DRAM")),
        "{texts:?}"
    );
    assert!(svg.matches("<rect").count() > 5);
}

/// Issue 45: a finished run from a compacted results database (which leaves cost records out)
/// showed "no hardware-cost records yet (they are written when training starts)". Now its cost
/// is priced from its config, as `shiftadd hw` prices it, and the view says so.
#[test]
fn a_run_without_cost_records_is_priced_from_its_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut f = hardware_app(&db, 2);
    let h = &mut f.harness;
    wait_for(h, "the totals", |h| has_label(h, "largest augmented"));
    assert!(has_label_containing(h, "Priced from the run's config"));
    // Run 2's config as stored: the seeded database's synthetic data, 3 × 32 × 32, 10 classes.
    let cfg = Config::from_toml_str(
        &shiftadd_core::store::Reader::open(&db)
            .expect("reader")
            .config_toml(2)
            .expect("config"),
        "run 2",
        &[],
    )
    .expect("config");
    let costs = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
    let macs = costs[0].layers.iter().map(|l| l.macs).sum::<i64>() as f64 / 1e6;
    assert!(
        has_label(h, &format!("{macs:.2} M")),
        "the tiny model's MACs"
    );
}

/// Issue 46: the deployment card shows what an integer program of the run gave (read from
/// `exports/run-N-int/int_report.json` beside the database, as `export --int` or the card's
/// button writes it): accuracies and agreement, multiplications left in MF layers, flash, SRAM.
#[test]
fn the_deployment_card_shows_the_integer_programs_report() {
    use shiftadd_core::deploy::count::{Costs, LayerCount, OpCounts};
    use shiftadd_core::deploy::energy::IntEnergy;
    use shiftadd_core::deploy::{Agreement, IntReport, REPORT_FILE};
    use shiftadd_core::spec::config::HwModel;

    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let layer = |name: &str, kind: &str, mf: bool, mul: u64| LayerCount {
        name: name.into(),
        kind: kind.into(),
        mf,
        ops: OpCounts {
            mul,
            add_sub: 1000,
            ..OpCounts::default()
        },
        narrow: OpCounts::default(),
        acc_bits: 30,
        flash_bytes: 100,
        packed_weight_bits: 400,
    };
    let report = IntReport {
        run: 1,
        act_bits: 8,
        bn_shifts: 2,
        export_top1: 0.885,
        test: Agreement {
            images: 300,
            int_top1: 0.88,
            float_top1: 0.885,
            agreement: 0.99,
            layers: Vec::new(),
        },
        costs: Costs {
            layers: vec![
                layer("stem.conv", "mult", false, 5000),
                layer("blocks.0.dw", "shift", true, 768),
                layer("fc", "mult", false, 640),
            ],
            total: OpCounts::default(),
            mf_multiplies: 768,
            flash_bytes: 18 * 1024,
            peak_sram_bytes: 128 * 1024,
        },
        energy: vec![IntEnergy {
            model: HwModel::Shiftaddnas,
            word_bits: 16,
            compute_mj: 0.0125,
            memory_mj: 0.25,
            energy_mj: 0.2625,
            float_compute_mj: 0.05,
            float_energy_mj: 0.5,
            layers: Vec::new(),
        }],
    };
    let out = dir.path().join("exports").join("run-1-int");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(
        out.join(REPORT_FILE),
        serde_json::to_string(&report).expect("json"),
    )
    .expect("write");
    let mut f = hardware_app(&db, 1);
    let h = &mut f.harness;
    wait_for(h, "the card", |h| {
        has_label_containing(h, "integer 88.00 % vs float 88.50 % top-1")
    });
    assert!(has_label_containing(
        h,
        "the same class on 99.00 % of 300 test images"
    ));
    assert!(has_label_containing(
        h,
        "multiplications left in MF layers: 768"
    ));
    assert!(
        has_label_containing(h, "flash 18.0 KiB") && has_label_containing(h, "peak SRAM 128.0 KiB")
    );
    assert!(
        has_label_containing(
            h,
            &format!(
                "{}: 262.50 µJ (compute 12.50, 16-bit data 250.00; the float model 500.00)",
                HwModel::Shiftaddnas.title()
            )
        ),
        "the integer program's energy beside the float model's"
    );
    assert!(
        has_label(h, "Make again"),
        "a report is there: the button makes it again"
    );
    // The options beside the button are the ones the shown program was made with.
    let chosen: Vec<String> = h
        .query_all_by_role(egui::accesskit::Role::ComboBox)
        .filter_map(|n| n.accesskit_node().value())
        .collect();
    assert!(
        chosen.iter().any(|v| v == "BN: 2 shifts"),
        "the requantisation of the shown program: {chosen:?}"
    );
    assert_eq!(
        h.get_by_label("8-bit activations")
            .accesskit_node()
            .toggled(),
        Some(egui::accesskit::Toggled::True),
        "the shown program has 8-bit activations"
    );
    // Every layer of the multiplications chart is named on its axis.
    let ticks = shiftadd_app::gui::widgets::plot::TickLog::read(&h.ctx);
    let names: Vec<String> = ticks
        .iter()
        .find(|(id, axis, _)| id == "run1-deploy-mul" && *axis == 0)
        .map(|(_, _, t)| t.labels.iter().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["stem.conv", "blocks.0.dw", "fc"], "{ticks:?}");
    // Run 2 has none: the card offers to make it.
    let mut g = hardware_app(&db, 2);
    wait_for(&mut g.harness, "the offer", |h| {
        has_label(h, "Make the integer program")
    });
}
