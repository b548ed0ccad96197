//! `shiftadd nas` on the smoke preset: both stages within budget, the TargetNets inside the
//! chosen SubNet, every candidate stored, and a rerun that trains nothing.

use shiftadd_core::Config;
use shiftadd_core::nas::cost;
use shiftadd_core::spec::space::{NasArch, is_sub_model};
use shiftadd_core::store::Reader;

use crate::support::{run_ok, s};

/// The run row of the one search in a database.
fn search_row(reader: &Reader) -> shiftadd_core::store::RunSummary {
    reader
        .runs()
        .expect("runs")
        .into_iter()
        .find(|r| r.model == shiftadd_core::nas::SEARCH_MODEL)
        .expect("the search has a run row")
}

#[test]
fn nas_smoke_searches_within_budget_and_resumes_without_retraining() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("nas.db");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/nas-smoke.toml");
    let t0 = std::time::Instant::now();
    let out = run_ok(&["nas", preset, "--db", s(&db)]);
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let best_json = stdout.lines().last().expect("arch line").to_owned();
    let best = NasArch::from_json(&best_json).expect("the printed TargetNet is in the space");
    eprintln!("nas-smoke took {minutes:.1} min");

    let cfg = Config::load(std::path::Path::new(preset), &[]).expect("preset");
    let shape = cfg.data.input_shape();
    let reader = Reader::open(&db).expect("db");
    let search = search_row(&reader);
    assert_eq!(search.status, shiftadd_core::store::Status::Finished);
    let rows = reader.nas_candidates(search.id).expect("candidates");
    let n = &cfg.nas;
    assert_eq!(
        rows.len(),
        2 * n.population * n.generations,
        "every candidate stored"
    );
    assert!(
        rows.iter()
            .all(|r| r.status == shiftadd_core::store::CandidateStatus::Done
                && r.proxy_run.is_some())
    );
    let max_multiple = n.multiples.iter().copied().fold(0.0, f64::max);
    let stage1: Vec<_> = rows.iter().filter(|r| r.stage == 1).collect();
    for r in &stage1 {
        let a = NasArch::from_json(&r.arch).expect("stored arch valid");
        let c = cost(
            &a,
            shiftadd_core::spec::config::OpKind::Mult,
            &cfg,
            n.budget_kind,
            shape,
        );
        assert!((c - r.cost).abs() < 1e-9 && c <= max_multiple * n.budget + 1e-9);
    }
    let subnet = stage1
        .iter()
        .max_by(|a, b| {
            a.proxy_accuracy
                .unwrap_or(0.0)
                .total_cmp(&b.proxy_accuracy.unwrap_or(0.0))
                .then(b.cost.total_cmp(&a.cost))
        })
        .map(|r| NasArch::from_json(&r.arch).expect("valid"))
        .expect("stage 1 rows");
    for r in rows.iter().filter(|r| r.stage == 2) {
        let a = NasArch::from_json(&r.arch).expect("valid");
        assert!(
            is_sub_model(&a, &subnet),
            "stage-2 {a:?} is inside the SubNet"
        );
        assert!(
            r.cost <= n.budget + 1e-9,
            "stage-2 cost {} within budget",
            r.cost
        );
    }
    assert!(is_sub_model(&best, &subnet));
    // Stage-2 proxies train each TargetNet inside that SubNet (depth and width augmentation up to
    // it), and every proxy gets its share of the thread budget.
    let share = (cfg.train.threads / n.parallel).max(1);
    for r in &rows {
        let proxy = reader
            .config_toml(r.proxy_run.expect("proxy run"))
            .expect("proxy config");
        let proxy = Config::from_toml_str(&proxy, "proxy", &[]).expect("valid");
        assert_eq!(proxy.train.threads, share);
        // Ranked on validation, never on the test set: the proxy's score is its last validation
        // top-1 and it has no test metrics at all.
        let run = r.proxy_run.expect("proxy run");
        assert!(!proxy.eval.test);
        assert_eq!(
            proxy.data.val_images,
            shiftadd_core::spec::config::ValImages::Count(n.proxy_val)
        );
        let summary = reader.run(run).expect("proxy run row");
        assert_eq!(summary.test_top1, None, "proxy {run} was evaluated on test");
        assert_eq!(r.proxy_accuracy, summary.last_val_top1, "proxy {run}");
        if r.stage == 2 {
            assert_eq!(
                proxy.model.arch.as_ref().map(NasArch::to_json),
                Some(r.arch.clone())
            );
            assert_eq!(
                proxy.aug.arch.as_ref().map(NasArch::to_json),
                Some(subnet.to_json())
            );
        }
    }

    // A rerun with the same config replays the search from the stored candidates.
    let again = run_ok(&["nas", preset, "--db", s(&db)]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("0 candidates trained, {} reused", rows.len())),
        "rerun retrained something:\n{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().last(),
        Some(best_json.as_str())
    );
}

/// `nas.prune`: a proxy that falls below its stage's median after an epoch is stopped there and
/// settled as pruned (its run `pruned` with the reason, its candidate scored at the stop, never
/// the stage's choice); every decision is the median rule's on the stored curves, the others run
/// all their epochs; a rerun replays the pruned ones without training them.
#[test]
fn nas_pruning_stops_proxies_below_the_median_and_replays_them() {
    use shiftadd_core::prune::Curves;
    use shiftadd_core::store::{CandidateStatus, Status, keys};

    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("prune.db");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments/nas-smoke.toml");
    let sets = [
        "nas.prune=true",
        "nas.proxy_epochs=3",
        "nas.prune_warmup_epochs=1",
        "nas.prune_min_candidates=1",
        "nas.population=4",
        "nas.generations=1",
        // One at a time: each decision sees every earlier candidate's whole curve.
        "nas.parallel=1",
    ];
    let mut args = vec!["nas", preset, "--db", s(&db)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let out = run_ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let overrides: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    let cfg = Config::load(std::path::Path::new(preset), &overrides).expect("preset");
    let rule = cfg.nas.prune_rule().expect("pruning on");
    let reader = Reader::open(&db).expect("db");
    let search = search_row(&reader);
    let mut rows = reader.nas_candidates(search.id).expect("candidates");
    rows.sort_by_key(|r| r.proxy_run);
    let mut pruned = 0;
    let mut epochs_cut = 0;
    for stage in [1, 2] {
        // Replay the stage in launch order through the rule: the earlier candidates' curves are
        // the reference of each decision.
        let mut curves = Curves::new("candidates");
        for r in rows.iter().filter(|r| r.stage == stage) {
            let run = r.proxy_run.expect("proxy run");
            let series = reader.metric_series(run, keys::VAL_TOP1).expect("series");
            let mut verdict = None;
            for m in &series {
                curves.record(run, m.epoch, m.value);
                // No verdict after the last epoch: the run has ended by then.
                if verdict.is_none() && m.epoch < cfg.nas.proxy_epochs as i64 {
                    verdict = curves
                        .verdict(&rule, run, m.epoch)
                        .map(|why| (m.epoch, why));
                }
            }
            let summary = reader.run(run).expect("proxy row");
            let last = series.last().expect("an epoch").clone();
            match verdict {
                Some((epoch, why)) => {
                    pruned += 1;
                    epochs_cut += cfg.nas.proxy_epochs as i64 - epoch;
                    assert_eq!(r.status, CandidateStatus::Pruned, "{r:?}: {why}");
                    assert_eq!(summary.status, Status::Pruned, "proxy run {run}");
                    assert_eq!(last.epoch, epoch, "run {run} stopped after epoch {epoch}");
                    assert_eq!(r.proxy_accuracy, Some(last.value), "scored at the stop");
                    let recorded = summary.reason.clone().unwrap_or_default();
                    assert!(
                        recorded.contains("below the median") && recorded.contains("candidates"),
                        "run {run}'s reason: {recorded}"
                    );
                }
                None => {
                    assert_eq!(r.status, CandidateStatus::Done, "{r:?}");
                    assert_eq!(
                        last.epoch, cfg.nas.proxy_epochs as i64,
                        "run {run} ran its course"
                    );
                }
            }
        }
    }
    assert!(pruned > 0, "nothing pruned:\n{stderr}");
    assert!(
        stderr.contains(&format!("({pruned} of them pruned)")),
        "the summary counts the pruned:\n{stderr}"
    );
    eprintln!(
        "pruning: {pruned} of {} proxies pruned, {epochs_cut} of {} proxy epochs not trained",
        rows.len(),
        rows.len() * cfg.nas.proxy_epochs
    );
    // The stage's choices ran their course.
    let chosen = shiftadd_core::nas::best_subnet(&rows).expect("a SubNet");
    assert!(rows.iter().any(|r| r.stage == 1
        && r.status == CandidateStatus::Done
        && NasArch::from_json(&r.arch).is_ok_and(|a| a == chosen)));

    // A rerun replays every candidate, pruned ones included.
    let again_args = args.clone();
    let again = run_ok(&again_args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("0 candidates trained, {} reused", rows.len())),
        "rerun retrained something:\n{stderr}"
    );
}
