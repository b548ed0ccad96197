//! The Launch view: presets, the form's validation, studies started from it.

use super::*;

#[test]
fn launching_a_preset_sends_its_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut f = fake_app(&dir.path().join("new.db"), Persisted::default());
    let h = &mut f.harness;
    click(h, "smoke-shift-aug");
    h.get_by_label("Launch run").click();
    h.step();
    let cmd = f.commands.try_recv().expect("a command was sent");
    let Command::Start { config, name, .. } = cmd else {
        panic!("expected Start, got {cmd:?}")
    };
    assert_eq!(name, "smoke-shift-aug");
    let expected =
        Config::load(&experiments().join("smoke-shift-aug.toml"), &[]).expect("preset parses");
    assert_eq!(
        *config, expected,
        "the form sends the preset's resolved config"
    );
    // The manager's answer is shown, and the app follows the new run in Monitor.
    f.events
        .send(Event::Created {
            request: 1001,
            run: 42,
        })
        .expect("event");
    wait_for(h, "the run to be followed", |h| {
        h.state().persisted().view == View::Monitor && h.state().persisted().current == Some(42)
    });
    // Back in Launch the answer is still there, until the form changes: then it is stale.
    click(h, "Launch");
    assert!(has_label(h, "run 42 started"));
    h.get_by_label("train.epochs").set_text_value_accesskit("3");
    h.step();
    h.step();
    assert!(!has_label(h, "run 42 started"), "a stale status line stays");
}

#[test]
fn invalid_value_disables_launch_and_shows_the_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut f = fake_app(&dir.path().join("new.db"), Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "presets", |h| has_label(h, "smoke"));
    let field_top = |h: &Harness<'static, StudioApp>| h.get_by_label("train.epochs").rect().top();
    let before = field_top(h);
    h.get_by_label("train.epochs").set_text_value_accesskit("0");
    h.step();
    h.step();
    // The status line ("1 invalid value(s)…") has its row already: the form does not move.
    assert!(has_label(h, "1 invalid value(s): Launch is disabled"));
    assert_eq!(
        field_top(h),
        before,
        "the form jumped when a status line appeared"
    );
    let cli_message = Config::from_toml_str("", "form", &["train.epochs=0".into()])
        .expect_err("refused")
        .to_string();
    // The CLI's message, its `key` styled as code rather than in backticks.
    let shown = cli_message.replace('`', "");
    assert!(has_label(h, &shown), "inline message: {shown}");
    assert!(
        h.get_by_label("Launch run").accesskit_node().is_disabled(),
        "Launch is disabled"
    );
    h.get_by_label("Launch run").click();
    h.step();
    assert!(f.commands.try_recv().is_err(), "nothing was sent");
    // Fixing the value enables it again.
    h.get_by_label("train.epochs").set_text_value_accesskit("2");
    h.step();
    h.step();
    assert!(!h.get_by_label("Launch run").accesskit_node().is_disabled());
}

#[test]
fn a_study_starts_from_launch_and_fills_its_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("study-launch.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "presets", |h| has_label(h, "smoke"));
    click(h, "smoke");
    for (key, value) in [
        ("train.epochs", "1"),
        ("data.synthetic_train", "300"),
        ("data.synthetic_test", "100"),
        ("train.batch_size", "50"),
    ] {
        h.get_by_label(key).set_text_value_accesskit(value);
        h.step();
    }
    h.get_by_label("Study: vary")
        .set_text_value_accesskit("train.lr");
    h.step();
    h.get_by_label("over").set_text_value_accesskit("0.05, 0.1");
    h.step();
    click(h, "Start study");
    wait_for(h, "the app to follow the study", |h| {
        h.state().persisted().view == View::Studies
    });
    wait_for(h, "the study to finish", |h| {
        has_label_containing(h, "finished (study #1; 6 trained")
    });
    // Two values × three seeds, each cell its own run with that learning rate.
    let reader = Reader::open(&db).expect("db");
    let cells = reader.study_runs(1).expect("cells");
    assert_eq!(cells.len(), 6, "{cells:?}");
    for c in &cells {
        let cfg = Config::from_toml_str(&reader.config_toml(c.run).expect("config"), "run", &[])
            .expect("config parses");
        let lr = if c.variant == "lr=0.05" { 0.05 } else { 0.1 };
        assert!(
            (cfg.train.lr - lr).abs() < 1e-12 && cfg.train.seed == c.seed,
            "{c:?}"
        );
        assert_eq!(cfg.train.epochs, 1, "the form's config is the base");
    }
    wait_for(h, "the table", |h| has_label(h, "lr=0.1"));
}

#[test]
fn a_study_file_starts_from_launch_and_stops() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("study-file.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    click(h, "smoke-study");
    // What the file runs, before anything does.
    wait_for(h, "the study file's summary", |h| {
        has_label(
            h,
            "2 variants × 2 seeds = 4 cells, 2 at a time; reports test/top1 against mult",
        )
    });
    assert!(!db.exists(), "picking a study file runs nothing");
    click(h, "Start study file");
    wait_for(h, "the app to follow the study", |h| {
        h.state().persisted().view == View::Studies
    });
    // The study recorded is the file's own (its variants, seeds and base), not the form's.
    let file = experiments().join("studies/smoke-study.toml");
    let expected = Study::load(&file, &[]).expect("smoke-study parses");
    let t0 = Instant::now();
    let stored = loop {
        if let Ok(r) = Reader::open(&db)
            && let Some(row) = r.studies().expect("studies").pop()
        {
            break row;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no study recorded");
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    };
    let spec: Study = serde_json::from_str(&stored.spec).expect("stored spec");
    assert_eq!(spec, expected);
    assert_eq!(stored.identity, expected.identity());
    click(h, "Stop study");
    wait_for(h, "the study to stop", |h| {
        assert!(
            !has_label_containing(h, "smoke-study: finished"),
            "Stop did not reach the study: it ran to its end"
        );
        has_label_containing(h, "study stopped; rerun it to continue")
            || has_label_containing(h, "was stopped; rerun the study to resume it")
    });
    // The view says what is left of the stopped study ("4 cells to go (8 epochs): …").
    wait_for(h, "what is left to train", |h| {
        has_label_containing(h, " to go (") && has_label_containing(h, " epochs)")
    });
}
