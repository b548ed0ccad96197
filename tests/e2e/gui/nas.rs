//! The NAS view: a chosen TargetNet trained, a search started, stopped and resumed.

use super::*;

/// The NAS view lists a search's candidates and trains a chosen TargetNet with its recipe.
#[test]
fn nas_view_trains_a_chosen_target_net() {
    use shiftadd_core::spec::space::NasArch;
    use shiftadd_core::store::NasCandidateRow;

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("nas.db");
    let w = Writer::open(&db).expect("db");
    let mut cfg = Config::default();
    cfg.nas.budget = 1.25;
    let search = w
        .create_run(NewRun {
            name: "search".into(),
            config_toml: cfg.to_toml(),
            dataset: "synthetic".into(),
            model: shiftadd_core::nas::SEARCH_MODEL.into(),
            operator: "mult".into(),
            seed: 0,
            tags: "nas".into(),
            provenance: String::new(),
        })
        .expect("run");
    let target = NasArch::mbv2_tiny();
    for (stage, acc) in [(1, 0.4), (2, 0.3)] {
        w.send(WriteOp::NasCandidate(NasCandidateRow {
            run: search,
            stage,
            generation: 0,
            arch: target.to_json(),
            cost: 1.0,
            proxy_accuracy: Some(acc),
            status: shiftadd_core::store::CandidateStatus::Done,
            proxy_run: None,
            slurm: (stage == 2).then(|| "4242_1 COMPLETED (exit 0:0)".to_owned()),
        }))
        .expect("candidate");
    }
    w.status(search, Status::Finished, None);
    w.flush().expect("flush");
    drop(w);
    let persisted = Persisted {
        view: View::Nas,
        current: Some(search),
        ..Persisted::default()
    }
    .in_database(&db);
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    wait_for(h, "the candidates", |h| {
        has_label(h, "Best architectures") && has_label(h, "Train")
    });
    assert!(has_label(h, "2 TargetNet") && has_label(h, "1 SubNet"));
    // The TargetNet's proxy trained on Slurm, the SubNet's here.
    assert!(has_label(h, "On Slurm: 1 COMPLETED of 1 proxies"));
    assert!(has_label(h, "4242_1 COMPLETED (exit 0:0)") && has_label(h, "here"));
    click(h, "Train");
    let cmd = f.commands.try_recv().expect("a command was sent");
    let Command::Start { config, .. } = cmd else {
        panic!("expected Start, got {cmd:?}")
    };
    assert_eq!(config.model.arch.as_ref(), Some(&target));
    assert_eq!(
        config.aug.arch.as_ref(),
        Some(&target),
        "inside the best SubNet"
    );
    assert!(
        (config.nas.budget - 1.25).abs() < 1e-12,
        "the search's recipe"
    );
}

/// Candidates of `db`'s first search that finished proxy training, and the search's status.
fn search_state(db: &Path) -> (usize, Option<shiftadd_core::store::Status>) {
    let Ok(r) = Reader::open(db) else {
        return (0, None);
    };
    let Some(search) = r
        .runs()
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.model == shiftadd_core::nas::SEARCH_MODEL)
    else {
        return (0, None);
    };
    let done = r
        .nas_candidates(search.id)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.status == shiftadd_core::store::CandidateStatus::Done)
        .count();
    (done, Some(search.status))
}

#[test]
fn a_nas_search_starts_stops_and_resumes_from_the_app() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("search.db");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    click(h, "nas-smoke");
    for (key, value) in [
        ("nas.population", "2"),
        ("nas.generations", "1"),
        ("nas.parallel", "1"),
        ("nas.proxy_train", "100"),
        ("nas.proxy_val", "50"),
    ] {
        h.get_by_label(key).set_text_value_accesskit(value);
        h.step();
    }
    h.step();
    click(h, "Start NAS search");
    wait_for(h, "the app to follow the search", |h| {
        h.state().persisted().view == View::Nas
    });
    wait_for(h, "a stored candidate", |_| search_state(&db).0 >= 1);
    click(h, "Stop search");
    wait_for(h, "the search to stop", |h| {
        has_label_containing(h, "search stopped by user")
    });
    let (stored, status) = search_state(&db);
    assert_eq!(status, Some(shiftadd_core::store::Status::Stopped));
    assert!((1..4).contains(&stored), "{stored} candidates stored");
    let runs = Reader::open(&db).expect("db").runs().expect("runs");
    assert!(
        runs.iter()
            .all(|r| r.status != shiftadd_core::store::Status::Running),
        "no proxy run is left training: {runs:?}"
    );
    let reader = Reader::open(&db).expect("db");
    let search = runs
        .iter()
        .find(|r| r.model == shiftadd_core::nas::SEARCH_MODEL)
        .expect("search");
    let rows = reader.nas_candidates(search.id).expect("rows");
    assert!(
        rows.iter()
            .all(|c| c.status == shiftadd_core::store::CandidateStatus::Done
                || c.status == shiftadd_core::store::CandidateStatus::Stopped),
        "interrupted candidates say so: {rows:?}"
    );
    // Starting the same config again resumes that search and trains only what is missing.
    h.get_by_label("Launch").click();
    h.step();
    click(h, "Start NAS search");
    wait_for(h, "the resumed search to finish", |h| {
        has_label_containing(h, "finished (search #1;")
    });
    let label = h
        .query_by_label_contains("finished (search #1;")
        .and_then(|n| n.accesskit_node().value()) // a Label's text is its AccessKit value
        .expect("label");
    let reused: usize = label
        .split(", ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("reused count in {label:?}"));
    assert_eq!(reused, stored, "{label}");
    assert_eq!(
        search_state(&db),
        (4, Some(shiftadd_core::store::Status::Finished))
    );
}
