//! Tests of the training engine.

use std::collections::HashMap;

use tch::{Device, Kind, Reduction, Tensor, nn};

use super::context::build_net;
use super::sgd::{Sgd, lr_at};
use super::step::{StepSpec, aug_exec, train_step};
use super::trainer::sorts_channels;
use crate::data::{self};
use crate::model::{Exec, Net};
use crate::ops::adder;
use crate::rng::Rng;
use crate::spec::arch::{ArchSpec, OpSpec, Widths};
use crate::spec::config::{AugBn, Config, Hybrid};
use tch::nn::OptimizerConfig;

#[test]
fn channels_are_sorted_only_while_width_augmentation_is_on() {
    let mut cfg = Config::default();
    cfg.train.epochs = 4;
    cfg.aug.stop_width_frac = 0.5;
    let width_epochs = (cfg.aug.stop_width_frac * cfg.train.epochs as f64).ceil() as usize;
    let sorted: Vec<bool> = (0..4)
        .map(|e| sorts_channels(&cfg, e, width_epochs))
        .collect();
    assert_eq!(sorted, [true, true, false, false]);
    cfg.aug.hybrid = Hybrid::None;
    assert!(
        (0..4).all(|e| !sorts_channels(&cfg, e, width_epochs)),
        "no augmented model"
    );
    cfg.aug.hybrid = Hybrid::Mult;
    cfg.aug.sort_channels = false;
    assert!((0..4).all(|e| !sorts_channels(&cfg, e, width_epochs)));
}

#[test]
fn schedule_warms_up_then_decays_to_zero() {
    let (warm, total, peak) = (10, 110, 0.5);
    assert!((lr_at(0, warm, total, peak) - 0.05).abs() < 1e-12);
    assert!((lr_at(9, warm, total, peak) - 0.5).abs() < 1e-12);
    assert!((lr_at(10, warm, total, peak) - 0.5).abs() < 1e-12);
    assert!((lr_at(60, warm, total, peak) - 0.25).abs() < 1e-12);
    assert!(lr_at(110, warm, total, peak).abs() < 1e-12);
    let lrs: Vec<f64> = (10..110).map(|s| lr_at(s, warm, total, peak)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    assert!(
        (lr_at(0, 0, 100, 1.0) - 1.0).abs() < 1e-12,
        "no warm-up starts at the peak"
    );
}

/// Weight decay pulls conv weights towards 0 but leaves the `fc` remap's matrix at the
/// identity it starts at.
#[test]
fn remap_parameters_are_not_decayed() {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    cfg.remap.kind = crate::spec::config::RemapKind::Fc;
    cfg.aug.hybrid = Hybrid::None;
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = build_net(&cfg, &vs.root(), &micro_data());
    let vars = vs.variables();
    let fc_remap: Vec<&String> = vars
        .keys()
        .filter(|k| k.ends_with("remap.fc_weight"))
        .collect();
    assert!(!fc_remap.is_empty());
    let before: HashMap<String, Tensor> = vars.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
    let mut opt = Sgd::new(&vs, 0.9, true, 0.1);
    opt.zero_grad();
    // A defined but zero gradient everywhere: only weight decay moves anything.
    vars.values()
        .map(|t| (t * 0.0).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
        .backward();
    opt.step(0.5);
    for name in fc_remap {
        assert!(vars[name].equal(&before[name]), "{name} was decayed");
    }
    let w = "blocks.0.expand.weight";
    assert!(!vars[w].equal(&before[w]), "conv weights are decayed");
}

/// `train.add_weight_decay` gives the Add layers' stored weights a rate of their own; every other
/// conv and linear weight keeps `train.weight_decay`, and the remap's parameters none.
#[test]
fn add_weights_decay_at_their_own_rate() {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    cfg.remap.kind = crate::spec::config::RemapKind::Fc;
    cfg.train.weight_decay = 0.01;
    cfg.train.add_weight_decay = Some(0.3);
    cfg.train.momentum = 0.0;
    cfg.validate().expect("valid");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    let add: Vec<String> = net.add_weights().into_iter().map(|a| a.name).collect();
    assert!(add.len() >= 4, "{add:?}");
    let vars = vs.variables();
    let mut opt = Sgd::for_run(&vs, &net, &cfg.train);
    for (name, t) in &vars {
        let want = if !t.requires_grad() {
            None // BN running statistics: not trained
        } else if add.contains(name) {
            Some(0.3)
        } else if t.dim() > 1 && !name.contains("remap") {
            Some(0.01)
        } else {
            Some(0.0)
        };
        assert_eq!(opt.decay_of(name), want, "{name}");
    }
    // And the step applies them: with a zero gradient and no momentum, a step scales each
    // weight by 1 − lr·wd.
    let before: HashMap<String, Tensor> = vars.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
    opt.zero_grad();
    vars.values()
        .map(|t| (t * 0.0).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
        .backward();
    let lr = 0.5;
    opt.step(lr);
    for (name, wd) in [(&add[0], 0.3), (&"stem.conv.weight".to_owned(), 0.01)] {
        let want = &before[name.as_str()] * (1.0 - lr * wd);
        let diff = (&vars[name.as_str()] - want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: off by {diff}");
    }
    // Without the key, the Add weights decay like every other conv.
    cfg.train.add_weight_decay = None;
    let plain = Sgd::for_run(&vs, &net, &cfg.train);
    assert_eq!(plain.decay_of(&add[0]), Some(0.01));
    // A model without Add layers has nothing for the key to apply to.
    cfg.train.add_weight_decay = Some(5e-4);
    cfg.ops.kind = crate::spec::config::OpKind::Shift;
    let err = cfg.validate().expect_err("no Add layers").to_string();
    assert!(err.contains("train.add_weight_decay"), "{err}");
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    cfg.train.add_weight_decay = Some(-1.0);
    assert!(cfg.validate().is_err(), "negative decay");
}

/// `weights/add_std` is the largest std of an Add layer's stored weights, read off the epoch's
/// histogram rows; a model without Add layers records none.
#[test]
fn the_largest_add_weight_std_is_read_off_the_stored_histograms() {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    let crate::model::AddWeight {
        name, weight: w, ..
    } = net.add_weights().swap_remove(1);
    tch::no_grad(|| {
        let _ = w.shallow_clone().g_mul_scalar_(7.0);
    });
    let layer = name.trim_end_matches(".weight");
    let tiny = net
        .mf_weights()
        .into_iter()
        .find(|l| l.name == layer)
        .expect("an MF layer");
    // The histograms describe the tiny model's slice of the stored tensor (population std).
    let want = tiny.stored.std(false).double_value(&[]);
    let rows = super::record::weight_snapshot(&net, 1, 0, &mut HashMap::new()).expect("rows");
    let got = super::record::largest_add_std(&rows).expect("an Add model");
    assert!((got - want).abs() < 1e-4 * want, "{name}: {got} vs {want}");
    assert!(want > 5.0, "unit-std weights scaled by 7: {want}");
    cfg.ops.kind = crate::spec::config::OpKind::Shift;
    let vs = nn::VarStore::new(Device::Cpu);
    let shift = build_net(&cfg, &vs.root(), &micro_data());
    let rows = super::record::weight_snapshot(&shift, 1, 0, &mut HashMap::new()).expect("rows");
    assert!(!rows.is_empty());
    assert_eq!(super::record::largest_add_std(&rows), None);
}

/// Issue 45: histogram edges were fixed at a layer's first snapshot, and an Add layer whose weights
/// grew showed "out of range 115 below, 20 above" of 432 weights. Each snapshot's edges fit its
/// weights now: after a thirty-fold growth, nothing of the stored view is out of range.
#[test]
fn histogram_edges_follow_weights_that_grow() {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    let mut edges = HashMap::new();
    let before = super::record::weight_snapshot(&net, 1, 0, &mut edges).expect("rows");
    for w in net.add_weights() {
        tch::no_grad(|| {
            let _ = w.weight.shallow_clone().g_mul_scalar_(30.0);
        });
    }
    let after = super::record::weight_snapshot(&net, 1, 1, &mut edges).expect("rows");
    let outside = |rows: &[crate::store::HistogramRow]| {
        rows.iter()
            .filter(|r| r.kind == "stored")
            .map(|r| {
                let total = r.counts.iter().sum::<u64>() + r.underflow + r.overflow;
                (r.underflow + r.overflow) as f64 / total as f64
            })
            .fold(0.0, f64::max)
    };
    assert_eq!(outside(&before), 0.0);
    assert_eq!(outside(&after), 0.0, "grown weights stay in range");
    let width = |rows: &[crate::store::HistogramRow]| {
        let r = rows
            .iter()
            .find(|r| r.kind == "stored")
            .expect("a stored view");
        r.edges[r.edges.len() - 1] - r.edges[0]
    };
    assert!(
        width(&after) > 10.0 * width(&before),
        "the range grew with the weights"
    );
}

#[test]
fn sgd_nesterov_matches_hand_computation() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let w = root.var("w", &[1, 2], nn::Init::Const(1.0)); // decayed (2-D)
    let b = root.var("b", &[2], nn::Init::Const(1.0)); // not decayed (1-D)
    let mut opt = Sgd::new(&vs, 0.9, true, 0.1);
    let (mu, wd, lr) = (0.9, 0.1, 0.5);
    let (mut pw, mut pb, mut bw, mut bb) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for _ in 0..3 {
        opt.zero_grad();
        // loss = sum(w²) + sum(3·b): grad w = 2w, grad b = 3
        let loss = (&w * &w).sum(Kind::Float) + (&b * 3.0).sum(Kind::Float);
        loss.backward();
        opt.step(lr);
        let gw = 2.0 * pw + wd * pw;
        bw = mu * bw + gw;
        pw -= lr * (gw + mu * bw);
        let gb = 3.0;
        bb = mu * bb + gb;
        pb -= lr * (gb + mu * bb);
    }
    assert!(
        (w.double_value(&[0, 0]) - pw).abs() < 1e-5,
        "{} vs {pw}",
        w.double_value(&[0, 0])
    );
    assert!((b.double_value(&[1]) - pb).abs() < 1e-5);
    // The state round-trips by name.
    let state = opt.state();
    let mut fresh = Sgd::new(&vs, 0.9, true, 0.1);
    fresh.load_state(&state).expect("same names and shapes");
    assert!(
        fresh
            .state()
            .iter()
            .zip(&state)
            .all(|(a, b)| a.1.equal(&b.1))
    );
    assert!(fresh.load_state(&[]).is_err());
}

/// The fused update (`csrc/sgd.cpp`) rounds exactly as the ATen ops it replaced — bit for bit,
/// with and without momentum, Nesterov and decay — and bumps the parameter's version counter as an
/// in-place op would (the remap's cache keys on it).
#[test]
fn fused_sgd_equals_the_unfused_ops_bit_for_bit() {
    tch::manual_seed(4);
    for (momentum, nesterov, wd) in [(0.9, true, 4e-5), (0.9, false, 0.0), (0.0, false, 0.1)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var(
            "w",
            &[300, 70],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let mut opt = Sgd::new(&vs, momentum, nesterov, wd);
        let mut p = w.detach().copy();
        let mut buf = p.zeros_like();
        for step in 0..3 {
            opt.zero_grad();
            let target = Tensor::randn([300, 70], (Kind::Float, Device::Cpu));
            (&w * &target).sum(Kind::Float).backward();
            let g = w.grad().detach().copy();
            let version = w.internal_version();
            let lr = 0.05 * f64::from(step + 1);
            opt.step(lr);
            assert!(w.internal_version() > version, "version bumped");
            // The previous implementation, op by op.
            let g = if wd > 0.0 { &g + &p * wd } else { g };
            let d = if momentum > 0.0 {
                buf = &buf * momentum + &g;
                if nesterov {
                    &g + &buf * momentum
                } else {
                    buf.shallow_clone()
                }
            } else {
                g
            };
            p = &p - d * lr;
            assert!(
                w.detach().equal(&p),
                "momentum {momentum}, nesterov {nesterov}, wd {wd}, step {step}: max diff {}",
                (&w.detach() - &p).abs().max().double_value(&[])
            );
        }
    }
}

/// The multi-tensor update a GPU run takes (`Sgd::try_step_grouped`: one group per weight decay)
/// is the per-parameter update: decayed and undecayed parameters, one without a gradient left
/// alone, momentum carried over three steps — within float32 rounding (run here on the CPU).
#[test]
fn grouped_sgd_is_the_per_parameter_update() {
    tch::manual_seed(8);
    let init = nn::Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = (&root / "conv").var("weight", &[16, 8, 3, 3], init);
        let b = (&root / "bn").var("bias", &[16], init);
        let idle = (&root / "idle").var("weight", &[4, 4], init);
        (vs, [w, b, idle])
    };
    let (va, a) = make();
    let (mut vb, b) = make();
    vb.copy(&va).expect("same start");
    let mut each = Sgd::new(&va, 0.9, true, 5e-4);
    let mut grouped = Sgd::new(&vb, 0.9, true, 5e-4);
    for step in 0..3 {
        each.zero_grad();
        grouped.zero_grad();
        let t = [
            Tensor::randn([16, 8, 3, 3], (Kind::Float, Device::Cpu)),
            Tensor::randn([16], (Kind::Float, Device::Cpu)),
        ];
        for params in [&a, &b] {
            ((&params[0] * &t[0]).sum(Kind::Float) + (&params[1] * &t[1]).sum(Kind::Float))
                .backward();
        }
        let version = b[0].internal_version();
        each.step(0.1);
        grouped.try_step_grouped(0.1).expect("grouped step");
        assert!(b[0].internal_version() > version, "version bumped");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                x.allclose(y, 1e-6, 1e-6, false),
                "step {step}: max diff {}",
                (x - y).abs().max().double_value(&[])
            );
        }
    }
    assert!(
        a[2].equal(&b[2]),
        "a parameter without a gradient is left alone"
    );
}

fn step_setup(hybrid: Hybrid) -> (Config, Tensor, Tensor) {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Shift;
    cfg.aug.hybrid = hybrid;
    cfg.train.weight_decay = 0.0;
    cfg.remap.kl_weight = 0.0;
    tch::manual_seed(9);
    let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    (cfg, x, y)
}

fn micro_data() -> data::Dataset {
    data::Dataset {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
        images: Vec::new(),
        labels: Vec::new(),
        masks: Vec::new(),
    }
}

#[test]
fn hybrid_none_trains_exactly_the_tiny_model() {
    let (mut cfg, x, y) = step_setup(Hybrid::None);
    // Mult operators: Shift's rounding would turn float-level differences between the two
    // optimizers' arithmetic into power-of-two jumps.
    cfg.ops.kind = crate::spec::config::OpKind::Mult;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    assert_eq!(
        net.max,
        net.spec.base_widths(),
        "nothing but the tiny model exists"
    );
    // The same model and init, trained by tch's own SGD on the tiny loss alone.
    let mut ref_vs = nn::VarStore::new(Device::Cpu);
    let reference = build_net(&cfg, &ref_vs.root(), &micro_data());
    ref_vs.copy(&vs).expect("same variables");
    let mut ref_opt = nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 0.0,
        nesterov: true,
    }
    .build(&ref_vs, 0.05)
    .expect("sgd");
    let mut opt = Sgd::new(&vs, 0.9, true, 0.0);
    let mut rng = Rng::new(0);
    let tiny = net.spec.base_widths();
    for _ in 1..=3 {
        let spec = StepSpec {
            config: &cfg,
            tiny: &tiny,
            aug_exec: aug_exec(cfg.aug.hybrid),
            width_on: true,
            lr: 0.05,
        };
        let losses = train_step(&net, &mut opt, &mut rng, &x, &y, &spec).expect("step");
        assert!(losses.aug.is_none());
        let logits = reference
            .forward(&x, &tiny, true, Exec::Tiny)
            .expect("forward");
        let loss = logits.cross_entropy_loss::<Tensor>(
            &y,
            None,
            Reduction::Mean,
            -100,
            cfg.train.label_smoothing,
        );
        assert!((loss.double_value(&[]) - losses.values().0).abs() < 1e-5);
        ref_opt.backward_step(&loss);
    }
    let ours = vs.variables();
    for (name, t) in ref_vs.variables() {
        assert!(
            t.allclose(&ours[&name], 1e-5, 1e-6, false),
            "{name} differs from plain SGD on the tiny model"
        );
    }
}

/// Everything trainable's gradient, by name (copies).
fn grads(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .filter(|(_, t)| t.grad().defined())
        .map(|(n, t)| (n, t.grad().copy()))
        .collect()
}

fn add_config(hybrid: Hybrid) -> Config {
    let mut cfg = Config::default();
    cfg.ops.kind = crate::spec::config::OpKind::Add;
    cfg.ops.add_eta_relative = false;
    cfg.aug.hybrid = hybrid;
    cfg.remap.kind = crate::spec::config::RemapKind::None;
    cfg.remap.kl_weight = 0.0;
    cfg.train.weight_decay = 0.0;
    cfg
}

/// The same net (same variables) whose Add calls return the raw gradient `X − F`.
fn raw_twin(cfg: &Config, vs: &nn::VarStore) -> (nn::VarStore, Net) {
    let mut raw_vs = nn::VarStore::new(Device::Cpu);
    let d = micro_data();
    let spec = ArchSpec::from_config(cfg, d.channels as i64, d.height as i64, d.classes as i64);
    let max = spec.max_widths(&cfg.aug);
    let ops = OpSpec {
        add_scale: adder::GradScale::NONE,
        ..OpSpec::from_config(cfg)
    };
    let net = Net::new(&raw_vs.root(), spec, max, &ops);
    raw_vs.copy(vs).expect("same variables");
    (raw_vs, net)
}

/// An Add `micro` net, its raw-gradient twin on the same variables, and a batch.
struct AddFixture {
    cfg: Config,
    x: Tensor,
    y: Tensor,
    vs: nn::VarStore,
    net: Net,
    raw_vs: nn::VarStore,
    raw: Net,
    tiny: Widths,
}

impl AddFixture {
    fn new(hybrid: Hybrid) -> Self {
        let (_, x, y) = step_setup(hybrid);
        let cfg = add_config(hybrid);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build_net(&cfg, &vs.root(), &micro_data());
        let (raw_vs, raw) = raw_twin(&cfg, &vs);
        let tiny = net.spec.base_widths();
        Self {
            cfg,
            x,
            y,
            vs,
            net,
            raw_vs,
            raw,
            tiny,
        }
    }

    /// One training step at lr 0 (the weights stay, the accumulated gradient stays readable) with
    /// a fresh `Rng::new(3)`, then the same step's two halves on the raw-gradient twin, replaying
    /// the draw of the augmented widths: (step's gradient, raw tiny gradient, α × Mult gradient).
    fn step_and_halves(&self) -> [HashMap<String, Tensor>; 3] {
        let Self {
            cfg,
            x,
            y,
            vs,
            net,
            raw_vs,
            raw,
            tiny,
        } = self;
        let mut opt = Sgd::new(vs, 0.0, false, 0.0);
        let mut rng = Rng::new(3);
        let mut replay = rng;
        let spec = StepSpec {
            config: cfg,
            tiny,
            aug_exec: aug_exec(cfg.aug.hybrid),
            width_on: true,
            lr: 0.0,
        };
        train_step(net, &mut opt, &mut rng, x, y, &spec).expect("step");
        let total = grads(vs);
        let ls = cfg.train.label_smoothing;
        let loss = |logits: Tensor| {
            logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, ls)
        };
        let mut raw_opt = Sgd::new(raw_vs, 0.0, false, 0.0);
        raw_opt.zero_grad();
        loss(raw.forward(x, tiny, true, Exec::Tiny).expect("tiny")).backward();
        let tiny_grads = grads(raw_vs);
        raw_opt.zero_grad();
        let widths = raw.sample_widths(&cfg.aug, &mut replay, true);
        assert_ne!(&widths, tiny, "the step sampled a wider model");
        (loss(raw.forward(x, &widths, true, Exec::Mult).expect("aug")) * cfg.aug.alpha).backward();
        [total, tiny_grads, grads(raw_vs)]
    }
}

/// `g · η·√n / ‖g‖`: AdderNet's scaling of a gradient whose weight slice has `n` elements.
fn adder_scaled(g: &Tensor, n: i64, eta: f64) -> Tensor {
    g * (eta * (n as f64).sqrt() / g.norm().double_value(&[]).max(1e-12))
}

/// `hybrid = "none"` steps exactly as before the scaling moved into the op: there the whole
/// stored tensor is the tiny slice, so scaling it after backward is the same arithmetic.
#[test]
fn hybrid_none_add_steps_as_with_whole_tensor_scaling() {
    let AddFixture {
        cfg,
        x,
        y,
        vs,
        net,
        raw_vs,
        raw,
        tiny,
    } = AddFixture::new(Hybrid::None);
    let (mut opt, mut raw_opt) = (
        Sgd::new(&vs, 0.9, true, 0.0),
        Sgd::new(&raw_vs, 0.9, true, 0.0),
    );
    let mut rng = Rng::new(0);
    // One step: later ones would amplify float32 rounding through |x − f|'s kinks.
    for _ in 1..=1 {
        let spec = StepSpec {
            config: &cfg,
            tiny: &tiny,
            aug_exec: None,
            width_on: true,
            lr: 0.05,
        };
        train_step(&net, &mut opt, &mut rng, &x, &y, &spec).expect("step");
        // The previous rule: raw backward, then η-scaling of each Add weight's whole gradient.
        raw_opt.zero_grad();
        let logits = raw.forward(&x, &tiny, true, Exec::Tiny).expect("forward");
        logits
            .cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                cfg.train.label_smoothing,
            )
            .backward();
        for (_, w, n) in raw.add_layers() {
            assert_eq!(
                n,
                w.numel() as i64,
                "direct training: the tiny slice is the whole tensor"
            );
            let mut g = w.grad();
            let scaled = adder_scaled(&g, n, cfg.ops.add_eta);
            tch::no_grad(|| g.copy_(&scaled));
        }
        raw_opt.step(0.05);
    }
    let ours = vs.variables();
    for (name, t) in raw_vs.variables() {
        let diff = (&t - &ours[&name]).abs().max().double_value(&[]);
        assert!(
            t.allclose(&ours[&name], 1e-4, 1e-5, false), // float32 arithmetic in two orders
            "{name} differs from the whole-tensor rule by {diff}"
        );
    }
}

/// With `hybrid = "mult"`, an Add layer's shared tensor receives the η-scaled Add gradient of
/// the tiny slice plus the raw gradient of the multiplicative augmented model.
#[test]
fn hybrid_mult_scales_only_the_tiny_add_gradient() {
    let fx = AddFixture::new(Hybrid::Mult);
    let [total, tiny_grads, mult_grads] = fx.step_and_halves();
    let (cfg, raw) = (&fx.cfg, &fx.raw);
    let layers = raw.add_layers();
    assert!(layers.len() >= 4);
    for (name, w, n) in layers {
        assert!(
            n < w.numel() as i64,
            "{name}: the shared tensor is wider than the tiny slice"
        );
        let key = format!("{name}.weight");
        let expected = adder_scaled(&tiny_grads[&key], n, cfg.ops.add_eta) + &mult_grads[&key];
        assert!(
            total[&key].allclose(&expected, 1e-4, 1e-6, false),
            "{name}: scaled tiny + raw Mult gradient expected"
        );
        // And it is not what scaling the accumulated gradient would give.
        let accumulated = &tiny_grads[&key] + &mult_grads[&key];
        let old = adder_scaled(&accumulated, w.numel() as i64, cfg.ops.add_eta);
        assert!(!total[&key].allclose(&old, 1e-3, 1e-5, false), "{name}");
    }
}

#[test]
fn hybrid_mult_trains_the_augmented_channels_too() {
    let (cfg, x, y) = step_setup(Hybrid::Mult);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    let tiny = net.spec.base_widths();
    assert!(net.max.out.iter().zip(&tiny.out).all(|(m, t)| m > t));
    let before = vs.variables()["blocks.1.project.weight"].copy();
    let mut opt = Sgd::new(&vs, 0.9, true, 0.0);
    let mut rng = Rng::new(0);
    let spec = StepSpec {
        config: &cfg,
        tiny: &tiny,
        aug_exec: aug_exec(cfg.aug.hybrid),
        width_on: true,
        lr: 0.05,
    };
    let mut saw_aug = false;
    for _ in 1..=4 {
        saw_aug |= train_step(&net, &mut opt, &mut rng, &x, &y, &spec)
            .expect("step")
            .aug
            .is_some();
    }
    assert!(saw_aug);
    let after = &vs.variables()["blocks.1.project.weight"];
    let (t_out, t_in) = (tiny.out[1], tiny.mid[1]);
    let outside = (after - &before)
        .narrow(0, t_out, after.size()[0] - t_out)
        .abs()
        .sum(Kind::Float)
        .double_value(&[]);
    let inside = (after - &before)
        .narrow(0, 0, t_out)
        .narrow(1, 0, t_in)
        .abs()
        .sum(Kind::Float)
        .double_value(&[]);
    assert!(
        outside > 0.0 && inside > 0.0,
        "outside {outside}, inside {inside}"
    );
}

/// With `aug.add_grad = "adder"`, the augmented model's gradient on an Add layer's shared tensor
/// is AdderNet-scaled over the elements it touched, then weighted by α; every other parameter
/// gets the raw sum as before.
#[test]
fn adder_scaled_augmentation_scales_the_mult_gradient_of_add_layers_only() {
    let mut fx = AddFixture::new(Hybrid::Mult);
    fx.cfg.aug.add_grad = crate::spec::config::AugGrad::Adder;
    fx.cfg.aug.alpha = 0.5;
    let [total, tiny_grads, mult_grads] = fx.step_and_halves();
    let (cfg, raw) = (&fx.cfg, &fx.raw);
    let eta = cfg.ops.add_eta;
    let mut add_names = Vec::new();
    for (name, _, n) in raw.add_layers() {
        let key = format!("{name}.weight");
        let g = &mult_grads[&key];
        let touched = g.ne(0.0).sum(Kind::Int64).int64_value(&[]);
        let expected =
            adder_scaled(&tiny_grads[&key], n, eta) + adder_scaled(g, touched, eta) * cfg.aug.alpha;
        assert!(
            total[&key].allclose(&expected, 1e-4, 1e-6, false),
            "{name}: scaled tiny + α × scaled Mult gradient expected"
        );
        let aug_part = (&total[&key] - adder_scaled(&tiny_grads[&key], n, eta))
            .norm()
            .double_value(&[]);
        let size = cfg.aug.alpha * eta * (touched as f64).sqrt();
        assert!(
            (aug_part - size).abs() < 1e-3 * size,
            "{name}: {aug_part} vs {size}"
        );
        add_names.push(key);
    }
    assert!(add_names.len() >= 4);
    for (key, t) in &total {
        if add_names.contains(key) || !tiny_grads.contains_key(key) {
            continue;
        }
        let expected = &tiny_grads[key] + &mult_grads[key];
        assert!(
            t.allclose(&expected, 1e-4, 1e-6, false),
            "{key}: not an Add layer's weight, so the raw sum"
        );
    }
}

/// `aug.add_grad_ratio` = ρ sizes the AdderNet-scaled augmented gradient at ρ × the tiny
/// model's (× α); it needs `add_grad = "adder"`.
#[test]
fn the_augmented_share_of_an_add_update_is_rho() {
    let mut fx = AddFixture::new(Hybrid::Mult);
    fx.cfg.aug.add_grad = crate::spec::config::AugGrad::Adder;
    fx.cfg.aug.add_grad_ratio = 0.25;
    fx.cfg.validate().expect("valid");
    let [total, tiny_grads, mult_grads] = fx.step_and_halves();
    let eta = fx.cfg.ops.add_eta;
    let layers = fx.raw.add_layers();
    assert!(layers.len() >= 4);
    for (name, _, n) in layers {
        let key = format!("{name}.weight");
        let touched = mult_grads[&key].ne(0.0).sum(Kind::Int64).int64_value(&[]);
        let aug_part = (&total[&key] - adder_scaled(&tiny_grads[&key], n, eta))
            .norm()
            .double_value(&[]);
        let size = 0.25 * eta * (touched as f64).sqrt();
        assert!(
            (aug_part - size).abs() < 1e-3 * size,
            "{name}: {aug_part} vs ρ·η·√k = {size}"
        );
    }
    fx.cfg.aug.add_grad = crate::spec::config::AugGrad::Raw;
    let e = fx.cfg.validate().expect_err("ρ without adder").to_string();
    assert!(e.contains("aug.add_grad_ratio"), "{e}");
    fx.cfg.aug.add_grad = crate::spec::config::AugGrad::Adder;
    fx.cfg.aug.add_grad_ratio = 0.0;
    let e = fx.cfg.validate().expect_err("ρ = 0").to_string();
    assert!(e.contains("aug.add_grad_ratio"), "{e}");
}

/// `ops.add_storage = "mult"`: the shared tensor sits at kaiming's scale, the Add view at unit
/// RMS; a direct Add step moves the Add view exactly as the same step moves a tensor stored at
/// the Add scale, and leaves every other parameter as it leaves it.
#[test]
fn add_weights_stored_at_the_mult_scale_train_their_add_view_as_before() {
    let rms = |t: &Tensor| t.square().mean(Kind::Float).sqrt().double_value(&[]);
    let (_, x, y) = step_setup(Hybrid::None);
    let unit_cfg = add_config(Hybrid::None);
    let mut mult_cfg = unit_cfg.clone();
    mult_cfg.ops.add_storage = crate::spec::config::AddStorage::Mult;
    mult_cfg.validate().expect("valid");
    let (unit_vs, mut mult_vs) = (
        nn::VarStore::new(Device::Cpu),
        nn::VarStore::new(Device::Cpu),
    );
    let unit = build_net(&unit_cfg, &unit_vs.root(), &micro_data());
    let mult = build_net(&mult_cfg, &mult_vs.root(), &micro_data());
    let views: Vec<(String, f64)> = mult
        .add_weights()
        .into_iter()
        .map(|a| {
            let r = rms(&a.weight);
            assert!(a.view > 1.5, "{}: view factor {}", a.name, a.view);
            assert!(
                (r * a.view - 1.0).abs() < 0.1,
                "{}: stored at rms {r}, the Add view at {}",
                a.name,
                r * a.view
            );
            (a.name, a.view)
        })
        .collect();
    assert!(views.len() >= 4);
    // The same weights, the Add layers' stored ÷ their view factor.
    mult_vs.copy(&unit_vs).expect("same variables");
    tch::no_grad(|| {
        for (name, view) in &views {
            let _ = mult_vs.variables()[name.as_str()]
                .shallow_clone()
                .g_div_scalar_(*view);
        }
    });
    let tiny = unit.spec.base_widths();
    for (cfg, vs, net) in [(&unit_cfg, &unit_vs, &unit), (&mult_cfg, &mult_vs, &mult)] {
        let mut opt = Sgd::new(vs, 0.9, true, 0.0);
        let spec = StepSpec {
            config: cfg,
            tiny: &tiny,
            aug_exec: None,
            width_on: true,
            lr: 0.05,
        };
        train_step(net, &mut opt, &mut Rng::new(0), &x, &y, &spec).expect("step");
    }
    let after = mult_vs.variables();
    for (name, t) in unit_vs.variables() {
        let view = views.iter().find(|(n, _)| *n == name).map_or(1.0, |v| v.1);
        let seen = &after[&name] * view;
        let diff = (&t - &seen).abs().max().double_value(&[]);
        assert!(
            t.allclose(&seen, 1e-4, 1e-5, false),
            "{name}: the Add view of the stored tensor moved off by {diff}"
        );
    }
    let mut shift = mult_cfg.clone();
    shift.ops.kind = crate::spec::config::OpKind::Shift;
    let e = shift.validate().expect_err("no Add layers").to_string();
    assert!(e.contains("ops.add_storage"), "{e}");
}

/// `grad_sources` takes a step apart: its tiny gradient and its augmented gradient are those of
/// the training step's two halves on the same batch, and they add up to the step's gradient.
#[test]
fn the_probe_splits_a_step_into_its_two_gradients() {
    let cfg = add_config(Hybrid::Mult);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut d = micro_data();
    let n = 2 * cfg.train.batch_size;
    tch::manual_seed(5);
    d.images = Vec::<f32>::try_from(Tensor::rand(
        [(n * 3 * 32 * 32) as i64],
        (Kind::Float, Device::Cpu),
    ))
    .expect("images")
    .into_iter()
    .map(|v| (v * 255.0).round() as u8)
    .collect();
    d.labels = (0..n).map(|i| (i % 10) as u16).collect();
    let d = std::sync::Arc::new(d);
    let net = build_net(&cfg, &vs.root(), &d);
    let norm = d.channel_stats();
    let spec = super::ProbeSpec {
        batches: 1,
        width_on: true,
    };
    let probe = super::grad_sources(&cfg, &net, &vs, &d, &norm, spec).expect("probe");
    // The step itself on the same batch, with the same draw of the augmented widths.
    let batch = super::probe::first_batches(&cfg, &d, &norm, 1)
        .next()
        .expect("a batch");
    let x = super::eval::to_images(&batch.images, batch.n, &d, Device::Cpu);
    let y = Tensor::from_slice(&batch.labels);
    let mut opt = Sgd::new(&vs, 0.0, false, 0.0);
    let tiny = net.spec.base_widths();
    let step = StepSpec {
        config: &cfg,
        tiny: &tiny,
        aug_exec: aug_exec(cfg.aug.hybrid),
        width_on: true,
        lr: 0.0,
    };
    let mut rng = Rng::derive(cfg.train.seed, 0xC0FFEE, 0);
    train_step(&net, &mut opt, &mut rng, &x, &y, &step).expect("step");
    let total = grads(&vs);
    assert_eq!(probe.params.len(), total.len());
    let mut add_weights = 0;
    for s in &probe.params {
        let g = total[&s.name].to_kind(Kind::Double);
        // ‖t + a‖² = ‖t‖² + ‖a_shared‖² + ‖a_only‖² + 2·cos·‖t‖·‖a_shared‖.
        let sum = s.tiny.powi(2)
            + s.aug_shared.powi(2)
            + s.aug_only.powi(2)
            + 2.0 * s.cosine * s.tiny * s.aug_shared;
        let want = g.norm().double_value(&[]).powi(2);
        assert!(
            (sum - want).abs() <= 1e-3 * want.max(1e-12),
            "{}: the two halves give {sum}, the step {want}",
            s.name
        );
        assert!((-1.0..=1.0).contains(&s.cosine), "{}", s.name);
        assert!(s.tiny_elems <= s.elems, "{}", s.name);
        if s.kind == super::ParamKind::AddWeight && s.tiny > 0.0 && s.aug_only > 0.0 {
            add_weights += 1;
        }
    }
    assert!(
        add_weights >= 4,
        "the shared weights have augmented-only channels"
    );
    assert!(probe.tiny_loss.is_finite() && probe.aug_loss.is_finite());
}

#[test]
fn adder_scaled_augmentation_needs_a_multiplicative_augmented_model() {
    for (hybrid, ok) in [
        (Hybrid::Mult, true),
        (Hybrid::Mf, false),
        (Hybrid::Split, false),
        (Hybrid::None, false),
    ] {
        let mut cfg = add_config(hybrid);
        cfg.aug.add_grad = crate::spec::config::AugGrad::Adder;
        let got = cfg.validate();
        assert_eq!(got.is_ok(), ok, "{hybrid:?}: {got:?}");
        if let Err(e) = got {
            assert!(e.to_string().contains("aug.add_grad"), "{e}");
        }
    }
}

/// `aug.bn = "separate"`: the augmented model's gradient reaches its own γ, β and never the tiny
/// model's, while the convolutions stay shared; a direct run cannot ask for it.
#[test]
fn separate_augmented_bn_keeps_the_augmented_gradient_off_the_tiny_models_bn() {
    use super::step::{AugHalf, tiny_backward};
    let (mut cfg, x, y) = step_setup(Hybrid::Mult);
    cfg.aug.bn = AugBn::Separate;
    cfg.validate().expect("a valid config");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build_net(&cfg, &vs.root(), &micro_data());
    let tiny = net.spec.base_widths();
    let vars = vs.variables();
    let names = [
        "stem.bn.weight",
        "blocks.1.dw_bn.bias",
        "stem.bn.aug_weight",
        "blocks.1.dw_bn.aug_bias",
        "blocks.1.project.weight",
    ];
    // |gradient| of each named variable, then zeroed (0 where none reached it).
    let take = || -> Vec<f64> {
        names
            .iter()
            .map(|n| {
                let mut g = vars[*n].grad();
                if !g.defined() {
                    return 0.0;
                }
                let norm = g.norm().double_value(&[]);
                let _ = g.zero_();
                norm
            })
            .collect()
    };
    let tiny_loss = tiny_backward(&net, &cfg, &tiny, &x, &y).expect("tiny half");
    let from_tiny = take();
    let aug_loss = AugHalf {
        net: &net,
        cfg: &cfg,
        exec: Exec::Mult,
        width_on: true,
    }
    .backward(&mut Rng::new(1), &x, &y)
    .expect("augmented half");
    let from_aug = take();
    for loss in [tiny_loss, aug_loss] {
        assert!(loss.double_value(&[]).is_finite());
    }
    let reached = |v: &[f64]| v.iter().map(|g| *g > 0.0).collect::<Vec<_>>();
    assert_eq!(
        reached(&from_tiny),
        [true, true, false, false, true],
        "{names:?}: {from_tiny:?}"
    );
    assert_eq!(
        reached(&from_aug),
        [false, false, true, true, true],
        "{names:?}: {from_aug:?}"
    );
    cfg.aug.hybrid = Hybrid::None;
    let err = cfg.validate().expect_err("no augmented model").to_string();
    assert!(err.contains("aug.bn"), "{err}");
}

/// A new run of `cfg` named `name`, trained on this thread to its end (checkpoints under `dir`).
fn train_here(
    cfg: &Config,
    writer: &crate::store::Writer,
    dir: &std::path::Path,
    name: &str,
) -> (
    crate::store::RunId,
    Result<super::Outcome, super::TrainError>,
) {
    let run = writer
        .create_run(crate::store::NewRun {
            name: name.to_owned(),
            config_toml: cfg.to_toml(),
            dataset: cfg.data.dataset.as_str().into(),
            model: cfg.model.label().into(),
            operator: cfg.ops.kind.as_str().into(),
            seed: cfg.train.seed,
            tags: String::new(),
            provenance: String::new(),
        })
        .expect("run");
    let control = crate::protocol::Control::default();
    let ctx = super::context::RunContext {
        run,
        config: cfg,
        writer,
        control: &control,
        emit: &|_| {},
        checkpoint_dir: dir.join(format!("ck-{name}")),
        resume: None,
        histogram_edges: HashMap::new(),
    };
    (run, super::trainer::train(&ctx))
}

/// A seed means the same run on any device (issue 42): the weights are drawn on the CPU's
/// generator, and after that nothing in a run — steps of every kind (Mult, Shift and Add, tiny and
/// augmented), remap, validation, BN re-estimation, histograms, the test pass — draws from
/// torch's generators: data order, crops, flips and sampled widths come from the run's own
/// [`Rng`], which is the same on every device. Checked on the CPU: torch's generator, seeded and
/// used for the weights as a run does, must be exactly where it was after the whole run. (CUDA
/// draws from a generator of its own, so a draw anywhere here would be a different stream there.)
///
/// Torch's generator is global to the process, and the other tests seed it while they run: the
/// check runs in a child process of this test binary, alone.
#[test]
fn a_run_draws_nothing_from_torchs_generators_after_its_seeded_init() {
    if !crate::host::test_alone(
        "train::tests::a_run_draws_nothing_from_torchs_generators_after_its_seeded_init",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    for (ops, hybrid) in [
        ("mult", "none"),
        ("shift", "mult"),
        ("add", "mult"),
        ("add", "mf"),
    ] {
        let set = [
            "data.dataset=synthetic".to_owned(),
            "data.synthetic_train=200".to_owned(),
            "data.synthetic_test=32".to_owned(),
            "data.val_images=16".to_owned(),
            "model.name=micro".to_owned(),
            format!("ops.kind={ops}"),
            format!("aug.hybrid={hybrid}"),
            "eval.bn_images=32".to_owned(),
            "train.epochs=2".to_owned(),
            "train.batch_size=32".to_owned(),
            "train.seed=5".to_owned(),
            "train.threads=1".to_owned(),
        ];
        let cfg = Config::from_toml_str("", "test", &set).expect("config");
        // Where the generator is after the seeded init, and nothing else.
        let splits = data::load(&cfg.data).expect("data");
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = super::context::build_seeded_net(&cfg, &vs.root(), &splits.train);
        let after_init = Tensor::rand([4], (Kind::Double, Device::Cpu));
        // Now the whole run.
        let db = dir.path().join(format!("{ops}-{hybrid}.db"));
        let writer = crate::store::Writer::open(&db).expect("db");
        let (_, outcome) = train_here(&cfg, &writer, dir.path(), &format!("{ops}-{hybrid}"));
        assert!(
            matches!(outcome, Ok(super::Outcome::Finished { .. })),
            "{outcome:?}"
        );
        let after_run = Tensor::rand([4], (Kind::Double, Device::Cpu));
        assert!(
            after_run.equal(&after_init),
            "{ops} hybrid={hybrid}: the run drew from torch's generator after its init \
             ({after_run} vs {after_init})"
        );
    }
}

/// A run whose batches come from the training set's resident copy (what `data.on_device` gives
/// a GPU run) trains exactly as one fed by the loader thread: the same per-step losses, bit for
/// bit, over two epochs of crops, flips and a shuffled order, augmented passes included.
#[test]
fn a_run_fed_from_the_resident_set_trains_as_the_loaders() {
    let dir = tempfile::tempdir().expect("tmp");
    let set = [
        "data.dataset=synthetic",
        "data.synthetic_train=160",
        "data.synthetic_test=32",
        "data.val_images=16",
        "model.name=micro",
        "ops.kind=shift",
        "aug.hybrid=mult",
        "eval.bn_images=32",
        "eval.test=false",
        "train.epochs=2",
        "train.batch_size=32",
        "train.seed=3",
        "train.threads=1",
    ]
    .map(str::to_owned);
    let cfg = Config::from_toml_str("", "test", &set).expect("config");
    let db = dir.path().join("resident.db");
    let writer = crate::store::Writer::open(&db).expect("db");
    let mut losses = Vec::new();
    for resident in [false, true] {
        super::trainer::RESIDENT_ON_CPU.with(|c| c.set(resident));
        let (run, outcome) = train_here(&cfg, &writer, dir.path(), &format!("resident-{resident}"));
        super::trainer::RESIDENT_ON_CPU.with(|c| c.set(false));
        assert!(
            matches!(outcome, Ok(super::Outcome::Finished { .. })),
            "{outcome:?}"
        );
        writer.flush().expect("flush");
        let reader = crate::store::Reader::open(&db).expect("reader");
        let series: Vec<f64> = reader
            .metric_series(run, crate::store::keys::TRAIN_LOSS)
            .expect("losses")
            .iter()
            .map(|r| r.value)
            .collect();
        losses.push(series);
    }
    assert_eq!(
        losses[0].len(),
        8,
        "4 steps an epoch (144 images), 2 epochs"
    );
    assert_eq!(losses[0], losses[1], "the same losses from either source");
}
