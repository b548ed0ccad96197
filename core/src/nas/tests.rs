use super::*;
use crate::model::Net;
use crate::spec::arch::OpSpec;
use crate::spec::arch::{ArchSpec, Widths};
use crate::spec::layers;
use crate::spec::space::is_sub_model;

#[test]
fn sampled_mutated_and_crossed_archs_stay_in_the_space() {
    let mut rng = Rng::new(7);
    let mut pop: Vec<NasArch> = (0..20).map(|_| NasArch::sample(&mut rng)).collect();
    for _ in 0..50 {
        let a = pop[rng.below(20)].clone();
        let b = pop[rng.below(20)].clone();
        let child = a.crossover(&b, &mut rng).mutate(&mut rng, 0.4);
        child.validate().expect("in the space");
        pop.push(child);
    }
    for a in &pop {
        let back = NasArch::from_json(&a.to_json()).expect("JSON round trip");
        assert_eq!(&back, a);
    }
    NasArch::mbv2_tiny()
        .validate()
        .expect("mbv2-tiny is in the space");
    let mut bad = NasArch::mbv2_tiny();
    bad.stages[1].kernels[0] = 4;
    assert!(bad.validate().unwrap_err().to_string().contains("kernel 4"));
}

#[test]
fn mbv2_tiny_in_the_space_matches_the_named_model() {
    let named = ArchSpec::named(crate::spec::config::ModelName::Mbv2Tiny, 3, 32, 10);
    assert_eq!(NasArch::mbv2_tiny().to_spec(3, 32, 10), named);
}

#[test]
fn clamped_targets_are_sub_models() {
    let mut rng = Rng::new(3);
    for _ in 0..100 {
        let sub = NasArch::sample(&mut rng);
        let t = NasArch::sample(&mut rng).clamp_into(&sub);
        // Depths come from the space only when the clamp keeps them there.
        assert!(is_sub_model(&t, &sub), "{t:?} not inside {sub:?}");
    }
    let sub = NasArch::mbv2_tiny();
    let mut wider = sub.clone();
    wider.stages[0].width = 1.5;
    assert!(!is_sub_model(&wider, &sub));
}

/// A TargetNet shallower, narrower and with a smaller kernel than its SubNet.
fn target_and_sub() -> (NasArch, NasArch) {
    let mut sub = NasArch::mbv2_tiny();
    sub.stages[0].kernels[0] = 7;
    sub.stages[1].kernels.push(5);
    sub.stages[1].expands.push(6);
    sub.stages[3].width = 1.5;
    let mut target = sub.clone();
    target.stages[1].kernels.truncate(2);
    target.stages[1].expands.truncate(2);
    target.stages[2].kernels.truncate(2);
    target.stages[2].expands = vec![3, 4];
    target.stages[3].width = 1.0;
    target.stages[0].kernels[0] = 3;
    assert!(is_sub_model(&target, &sub));
    (target, sub)
}

#[test]
fn a_target_inside_its_subnet_is_exactly_the_target_when_tiny() {
    let (target, sub) = target_and_sub();
    let shape = (3, 32, 10);
    let within = target.to_spec_within(&sub, shape);
    let plain = target.to_spec(3, 32, 10);
    assert_eq!(within.blocks.len(), sub.to_spec(3, 32, 10).blocks.len());
    assert_eq!(
        within.blocks.iter().filter(|b| b.tiny).count(),
        plain.blocks.len()
    );
    // The tiny model runs the same layers as the plain TargetNet (names aside: block
    // indices count the SubNet-only blocks too).
    let shape_of = |l: &crate::spec::layers::Layer| {
        (
            l.op,
            l.c_in,
            l.c_out,
            l.kernel,
            l.stride,
            l.h_out,
            l.residual_add,
        )
    };
    let ops = OpSpec::from_config(&Config::default());
    let a: Vec<_> = layers::layers(&within, &within.base_widths(), &ops, 32)
        .iter()
        .map(shape_of)
        .collect();
    let b: Vec<_> = layers::layers(&plain, &plain.base_widths(), &ops, 32)
        .iter()
        .map(shape_of)
        .collect();
    assert_eq!(a, b);
    // SubNet-only blocks are residual (skipping them is the identity) and multiplicative.
    for blk in within.blocks.iter().filter(|b| !b.tiny) {
        assert!(blk.residual(), "{blk:?}");
        assert_eq!(ops.block_role(blk, true), OpKind::Mult);
    }
    // The widest augmented model is the SubNet's size: its depth, its channels.
    let mut aug = crate::spec::config::AugConfig::default();
    aug.width.push(3.0);
    let max = within.max_widths(&aug);
    let big = sub.to_spec(3, 32, 10);
    assert_eq!(max.out, big.base_widths().out);
    assert!(max.active.iter().all(|&a| a));
    // Kernels nest: the first searched block is 3×3 in the TargetNet, 7×7 when augmented.
    let first = within
        .blocks
        .iter()
        .position(|b| b.stage == 1)
        .expect("stage 1");
    assert_eq!(
        (within.base_widths().kernel[first], max.kernel[first]),
        (3, 7)
    );
    let dw = format!("blocks.{first}.dw");
    let kernel_of = |w: &Widths| {
        layers::layers(&within, w, &ops, 32)
            .into_iter()
            .find(|l| l.name == dw)
            .map(|l| l.kernel)
    };
    assert_eq!(kernel_of(&within.base_widths()), Some(3));
    assert_eq!(kernel_of(&max), Some(7));
}

#[test]
fn augmented_samples_stay_between_the_target_and_the_subnet() {
    let (target, sub) = target_and_sub();
    let within = target.to_spec_within(&sub, (1, 32, 10));
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut cfg = Config::default();
    cfg.model.arch = Some(target.clone());
    cfg.aug.arch = Some(sub.clone());
    let max = within.max_widths(&cfg.aug);
    let net = Net::new(
        &vs.root(),
        within.clone(),
        max.clone(),
        &OpSpec::from_config(&cfg),
    );
    let base = within.base_widths();
    let mut rng = Rng::new(5);
    let mut depths = std::collections::BTreeSet::new();
    let mut kernels = std::collections::BTreeSet::new();
    let first = within
        .blocks
        .iter()
        .position(|b| b.stage == 1)
        .expect("stage 1");
    for _ in 0..60 {
        let w = net.sample_widths(&cfg.aug, &mut rng, true);
        kernels.insert(w.kernel[first]);
        for i in 0..w.mid.len() {
            assert!(base.mid[i] <= w.mid[i] && w.mid[i] <= max.mid[i]);
            assert!(base.out[i] <= w.out[i] && w.out[i] <= max.out[i]);
            // Every tiny block always runs; SubNet-only ones are a leading run of the rest.
            assert!(!within.blocks[i].tiny || w.active[i]);
        }
        depths.insert(w.active.iter().filter(|&&a| a).count());
    }
    let tiny_depth = within.blocks.iter().filter(|b| b.tiny).count();
    // Two searched stages of the SubNet have two blocks more each: 0 to 4 extra blocks run.
    assert_eq!(depths, (tiny_depth..=tiny_depth + 4).collect());
    assert_eq!(
        kernels,
        [3, 5, 7].into_iter().collect(),
        "every nested kernel is sampled"
    );
}

#[test]
fn only_the_augmented_model_trains_the_subnet_only_blocks() {
    use crate::model::Exec;
    let (target, sub) = target_and_sub();
    let mut cfg = Config::default();
    cfg.ops.kind = OpKind::Shift;
    cfg.model.arch = Some(target.clone());
    cfg.aug.arch = Some(sub.clone());
    cfg.validate().expect("a valid config");
    let spec = ArchSpec::from_config(&cfg, 1, 32, 10);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let max = spec.max_widths(&cfg.aug);
    let net = Net::new(
        &vs.root(),
        spec.clone(),
        max.clone(),
        &OpSpec::from_config(&cfg),
    );
    let extra = spec
        .blocks
        .iter()
        .position(|b| !b.tiny)
        .expect("a SubNet-only block");
    let var = format!("blocks.{extra}.dw.weight");
    // |∂ sum(logits) / ∂ var| after one forward/backward of sub-model `w` (None: no gradient).
    let grad_of = |w: &Widths, exec: Exec, var: &str| -> Option<tch::Tensor> {
        for v in vs.trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let x = tch::Tensor::randn([2, 1, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        net.forward(&x, w, true, exec)
            .expect("forward")
            .sum(tch::Kind::Float)
            .backward();
        let g = vs.variables()[var].grad();
        g.defined().then(|| g.abs())
    };
    let grad_norm = |w: &Widths, exec: Exec| -> f64 {
        grad_of(w, exec, &var).map_or(0.0, |g| g.sum(tch::Kind::Float).double_value(&[]))
    };
    let tiny = spec.base_widths();
    assert_eq!(
        grad_norm(&tiny, Exec::Tiny),
        0.0,
        "the tiny model skips {var}"
    );
    assert!(
        grad_norm(&max, Exec::Mult) > 0.0,
        "the augmented model trains {var}"
    );
    // Kernel nesting: the tiny model trains the centre 3×3 of the stored 7×7 only.
    let first = spec
        .blocks
        .iter()
        .position(|b| b.stage == 1)
        .expect("stage 1");
    let dw = format!("blocks.{first}.dw.weight");
    let ring_and_centre = |w: &Widths, exec: Exec| -> (f64, f64) {
        let g = grad_of(w, exec, &dw).expect("a gradient");
        let centre = g
            .narrow(2, 2, 3)
            .narrow(3, 2, 3)
            .sum(tch::Kind::Float)
            .double_value(&[]);
        let ring = g.copy();
        let _ = ring.narrow(2, 2, 3).narrow(3, 2, 3).fill_(0.0);
        (ring.sum(tch::Kind::Float).double_value(&[]), centre)
    };
    let (ring, centre) = ring_and_centre(&tiny, Exec::Tiny);
    assert!(
        ring == 0.0 && centre > 0.0,
        "tiny: ring {ring}, centre {centre}"
    );
    let (ring, _) = ring_and_centre(&max, Exec::Mult);
    assert!(ring > 0.0, "the augmented model trains the whole 7×7");
    // The tiny program (export) has the TargetNet's layers only.
    let convs = net
        .tiny_program()
        .steps
        .iter()
        .filter(|s| matches!(s, crate::model::Step::Conv { .. }))
        .count();
    let plain = layers::layers(
        &target.to_spec(1, 32, 10),
        &target.to_spec(1, 32, 10).base_widths(),
        &OpSpec::from_config(&cfg),
        32,
    );
    assert_eq!(convs + 1, plain.len(), "convs + the classifier");
}

#[test]
fn aug_arch_must_contain_model_arch() {
    let (target, sub) = target_and_sub();
    let mut cfg = Config::default();
    cfg.aug.arch = Some(sub.clone());
    let e = cfg.validate().expect_err("needs model.arch").to_string();
    assert!(e.contains("aug.arch") && e.contains("model.arch"), "{e}");
    cfg.model.arch = Some(sub.clone());
    cfg.aug.arch = Some(target.clone());
    let e = cfg.validate().expect_err("not a sub-model").to_string();
    assert!(e.contains("sub-model"), "{e}");
    let c = target_config(&Config::default(), &target, &sub);
    c.validate().expect("the search's recipe config is valid");
    let (w, _) = augment_factors(&target, &sub);
    assert!(c.aug.width.iter().any(|f| *f >= w));
}

#[test]
fn pareto_front_on_hand_made_points() {
    let pts = [
        (3.0, 0.9),
        (1.0, 0.5),
        (2.0, 0.4),
        (2.5, 0.8),
        (4.0, 0.85),
        (1.0, 0.6),
    ];
    assert_eq!(pareto_front(&pts), vec![5, 3, 0]);
    assert!(pareto_front(&[(f64::NAN, 1.0)]).is_empty());
}
