//! `shiftadd nas` on the smoke preset: both stages within budget, the TargetNets inside the
//! chosen SubNet, every candidate stored, and a rerun that trains nothing.

use shiftadd_core::Config;
use shiftadd_core::nas::cost;
use shiftadd_core::spec::space::{NasArch, is_sub_model};
use shiftadd_core::store::Reader;

use crate::support::{run_ok, s};

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
    let shape = cfg.data.dataset.input_shape();
    let reader = Reader::open(&db).expect("db");
    let search = reader
        .runs()
        .expect("runs")
        .into_iter()
        .find(|r| r.model == shiftadd_core::nas::SEARCH_MODEL)
        .expect("the search has a run row");
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
