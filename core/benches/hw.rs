//! Hardware-cost throughput (issues 5, 14): architectures evaluated per second, on random augmented
//! widths of `mbv2-tiny` and `mcunet`, by the project's model in its fast analytic mode (what the
//! NAS uses) and its tiling search, and by the ShiftAddNAS simulator as the NAS uses it (exact,
//! memoised per layer shape: after the first pass every layer is a lookup) and with every layer
//! searched afresh (a cold memo). Criterion prints the throughput in architectures/s (`elem/s`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shiftadd_core::hw::{self, shiftaddnas};
use shiftadd_core::rng::Rng;
use shiftadd_core::spec::arch::{ArchSpec, OpSpec, Widths};
use shiftadd_core::spec::config::{HwConfig, HwMode, HwModel, ModelName, OpKind};
use shiftadd_core::spec::layers::{self, Layer};
use std::time::Duration;

/// 64 random sub-models (every stage, head and block draws its own factor).
fn architectures() -> Vec<Vec<Layer>> {
    let mut rng = Rng::new(1);
    let ops = OpSpec {
        kind: OpKind::Shift,
        ..OpSpec::mult()
    };
    let mut out = Vec::new();
    for i in 0..64 {
        let model = if i % 2 == 0 {
            ModelName::Mbv2Tiny
        } else {
            ModelName::Mcunet
        };
        let spec = ArchSpec::named(model, 3, 32, 100);
        let mut f = |choices: &[f64]| choices[rng.below(choices.len())];
        let stage: Vec<f64> = (0..spec.stages()).map(|_| f(&[1.0, 1.8, 2.6])).collect();
        let expand: Vec<f64> = (0..spec.blocks.len())
            .map(|_| f(&[1.0, 1.6, 2.2, 2.8]))
            .collect();
        let w = Widths::scaled(&spec, f(&[1.0, 1.8]), &stage, f(&[1.0, 1.8]), &expand);
        out.push(layers::layers(&spec, &w, &ops, 32));
    }
    out
}

fn cost_models(c: &mut Criterion) {
    let archs = architectures();
    let mut group = c.benchmark_group("hw");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(archs.len() as u64));
    for (name, model, mode) in [
        ("project-analytic", HwModel::Project, HwMode::Analytic),
        ("project-search", HwModel::Project, HwMode::Search),
        (
            "shiftaddnas-memoised",
            HwModel::Shiftaddnas,
            HwMode::Analytic,
        ),
    ] {
        let cfg = HwConfig {
            model,
            mode,
            ..HwConfig::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                archs
                    .iter()
                    .map(|a| hw::model_cost("a", a, &cfg).energy_mj)
                    .sum::<f64>()
            });
        });
    }
    group.bench_function("shiftaddnas-unmemoised", |b| {
        b.iter(|| {
            archs
                .iter()
                .flat_map(|a| a.iter())
                .map(|l| shiftaddnas::search(&shiftaddnas::SimLayer::of(l), 32).energy_mj)
                .sum::<f64>()
        });
    });
    group.finish();
}

criterion_group!(benches, cost_models);
criterion_main!(benches);
