//! Conv-layer benchmark (issue 4): for every distinct conv shape of `mbv2-tiny` and `mcunet`
//! (Fashion-MNIST input, 32 px, batch 64), forward + backward of
//! - `add`: the project's AdderNet conv (direct kernel, through autograd),
//! - `unfold`: the usual AdderNet formulation ([`adder::unfold`], explicit backward),
//! - `mult`: an ordinary conv (libtorch).
//!
//! `experiments/bench/summary.py` turns the results into ratios.
//!
//! And the fused training-mode batch norm + ReLU6 ([`bn`]) against ATen's `batch_norm` + `relu6`,
//! forward + backward, on activation shapes of `mbv2-tiny`, NCHW and channels-last.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shiftadd_core::ops::{adder, bn, layout};
use shiftadd_core::spec::arch::{ArchSpec, OpSpec};
use shiftadd_core::spec::config::{ModelName, OpKind};
use shiftadd_core::spec::layers::{self, LayerKind};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

mod common;

fn shapes() -> Vec<(String, layers::Layer)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let ops = OpSpec {
        kind: OpKind::Add,
        ..OpSpec::mult()
    };
    for (model, name) in [
        (ModelName::Mbv2Tiny, "mbv2-tiny"),
        (ModelName::Mcunet, "mcunet"),
    ] {
        let spec = ArchSpec::named(model, 1, common::RES, 10);
        for l in layers::layers(&spec, &spec.base_widths(), &ops, common::RES) {
            if l.kind == LayerKind::Linear {
                continue;
            }
            // The same key format as torch_reference.py.
            let key = format!(
                "{}x{}-{} k{} s{} g{}",
                l.c_in, l.h_in, l.c_out, l.kernel, l.stride, l.groups
            );
            if seen.insert(key.clone()) {
                out.push((format!("{name}/{key}"), l));
            }
        }
    }
    out
}

fn conv_layers(c: &mut Criterion) {
    common::init();
    let opts = (Kind::Float, Device::Cpu);
    let only = std::env::var("SHIFTADD_BENCH_FILTER").unwrap_or_default();
    for (id, l) in shapes() {
        if !id.contains(&only) {
            continue;
        }
        let (s, p, g) = (l.stride, l.kernel / 2, l.groups);
        let x =
            Tensor::randn([common::BATCH, l.c_in, l.h_in, l.w_in], opts).set_requires_grad(true);
        let w = (Tensor::randn([l.c_out, l.c_in / g, l.kernel, l.kernel], opts) * 0.1)
            .set_requires_grad(true);
        let mut group = c.benchmark_group("conv");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        group.bench_function(BenchmarkId::new("add", &id), |b| {
            b.iter(|| {
                let y = adder::adder_conv2d(&x, &w, s, p, g).expect("valid shape");
                y.sum(Kind::Float).backward();
            });
        });
        group.bench_function(BenchmarkId::new("unfold", &id), |b| {
            b.iter(|| {
                let y = adder::unfold::forward(&x.detach(), &w.detach(), s, p, g);
                adder::unfold::backward(&x.detach(), &w.detach(), &y.ones_like(), s, p, g)
            });
        });
        group.bench_function(BenchmarkId::new("mult", &id), |b| {
            b.iter(|| {
                let y = x.conv2d(&w, None::<Tensor>, [s, s], [p, p], [1, 1], g);
                y.sum(Kind::Float).backward();
            });
        });
        group.finish();
    }
}

fn batch_norms(c: &mut Criterion) {
    common::init();
    let opts = (Kind::Float, Device::Cpu);
    let only = std::env::var("SHIFTADD_BENCH_FILTER").unwrap_or_default();
    let mut group = c.benchmark_group("bn_relu6");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (ch, hw) in [(16, 32), (48, 16), (96, 8), (144, 4)] {
        for last in [false, true] {
            let id = format!("{ch}x{hw}x{hw} {}", if last { "nhwc" } else { "nchw" });
            if !id.contains(&only) {
                continue;
            }
            let x = Tensor::randn([common::BATCH, ch, hw, hw], opts);
            let x = if last {
                layout::channels_last(&x).expect("4-D")
            } else {
                x
            };
            let x = x.set_requires_grad(true);
            let w = Tensor::ones([ch], opts).set_requires_grad(true);
            let b = Tensor::zeros([ch], opts).set_requires_grad(true);
            let (rm, rv) = (Tensor::zeros([ch], opts), Tensor::ones([ch], opts));
            let p = bn::BnParams::new(&w, &b, &rm, &rv, 0.1, 1e-5);
            let g = Tensor::randn(x.size(), opts);
            for (name, f) in [
                ("fused", bn::batch_norm_train as fn(&_, &_, _) -> _),
                ("aten", bn::batch_norm_train_unfused),
            ] {
                group.bench_function(BenchmarkId::new(name, &id), |bench| {
                    bench.iter(|| {
                        let y: Tensor = f(&x, &p, true).expect("bn");
                        (y * &g).sum(Kind::Float).backward();
                    });
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, conv_layers, batch_norms);
criterion_main!(benches);
