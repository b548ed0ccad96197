//! Training-throughput benchmark (issue 4): one ShiftAddAug training step of `mbv2-tiny`
//! (batch 64, 1×32×32 inputs, the project's recipe) per operator mode. `*-aug` modes add the
//! augmented multiplicative sub-model, fixed at expand 2.2 and width 1.8 so that every step costs
//! the same and `experiments/bench/torch_reference.py` can run the identical model.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shiftadd_core::Config;
use shiftadd_core::model::Net;
use shiftadd_core::rng::Rng;
use shiftadd_core::spec::arch::{ArchSpec, OpSpec};
use shiftadd_core::spec::config::{Hybrid, ModelName, OpKind};
use shiftadd_core::train::{Sgd, StepSpec, aug_exec, train_step};
use std::time::Duration;
use tch::{Device, Kind, Tensor, nn};

mod common;

fn train_steps(c: &mut Criterion) {
    common::init();
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(common::BATCH as u64));
    for (mode, kind, hybrid) in [
        ("mult", OpKind::Mult, Hybrid::None),
        ("shift", OpKind::Shift, Hybrid::None),
        ("add", OpKind::Add, Hybrid::None),
        ("mult-aug", OpKind::Mult, Hybrid::Mult),
        ("shift-aug", OpKind::Shift, Hybrid::Mult),
        ("add-aug", OpKind::Add, Hybrid::Mult),
    ] {
        let mut cfg = Config::default();
        cfg.model.name = ModelName::Mbv2Tiny;
        cfg.ops.kind = kind;
        cfg.aug.hybrid = hybrid;
        cfg.aug.expand = vec![2.2];
        cfg.aug.width = vec![1.8];
        let spec = ArchSpec::named(ModelName::Mbv2Tiny, 1, common::RES, 10);
        let vs = nn::VarStore::new(Device::Cpu);
        let max = spec.max_widths(&cfg.aug);
        let net = Net::new(&vs.root(), spec, max, &OpSpec::from_config(&cfg));
        // torch_reference.py prints the same count: the two models must be the same size.
        let params: usize = vs.trainable_variables().iter().map(Tensor::numel).sum();
        eprintln!("{mode}: {params} parameters");
        let t = &cfg.train;
        let mut opt = Sgd::new(&vs, t.momentum, t.nesterov, t.weight_decay);
        let mut rng = Rng::new(0);
        let tiny = net.spec.base_widths();
        let x = Tensor::randn(
            [common::BATCH, 1, common::RES, common::RES],
            (Kind::Float, Device::Cpu),
        );
        let y = Tensor::randint(10, [common::BATCH], (Kind::Int64, Device::Cpu));
        let step_spec = StepSpec {
            config: &cfg,
            tiny: &tiny,
            aug_exec: aug_exec(hybrid),
            width_on: true,
            lr: 0.05,
        };
        group.bench_function(mode, |b| {
            b.iter(|| train_step(&net, &mut opt, &mut rng, &x, &y, &step_spec).expect("finite"));
        });
    }
    group.finish();
}

criterion_group!(benches, train_steps);
criterion_main!(benches);
