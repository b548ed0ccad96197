//! The two-stage NAS search driver (method.md §6): stage 1 evolves multiplicative SubNets under
//! m × the budget, stage 2 MF TargetNets inside the best SubNet under the budget; every candidate
//! is proxy-trained as an ordinary run through the run manager (`nas.parallel` at a time), stored
//! in `nas_candidates`, and replayed from there when the same search runs again. The space itself
//! is plain data in [`crate::spec::space`].

use crate::hw::{self, ModelCost};
use crate::rng::Rng;
use crate::spec::arch::OpSpec;
use crate::spec::config::{BudgetKind, Config, HwConfig, OpKind};
use crate::spec::layers;
use crate::spec::space::NasArch;

/// The cost of `arch` with operator `op` for the budget's quantity (analytic hardware mode).
pub fn cost(
    arch: &NasArch,
    op: OpKind,
    cfg: &Config,
    kind: BudgetKind,
    (channels, resolution, classes): (i64, i64, i64),
) -> f64 {
    let spec = arch.to_spec(channels, resolution, classes);
    let widths = spec.base_widths();
    let mut c = cfg.clone();
    c.ops.kind = op;
    let ops = if op == OpKind::Mult {
        OpSpec::mult()
    } else {
        OpSpec::from_config(&c)
    };
    let hw_cfg = HwConfig {
        mode: crate::spec::config::HwMode::Analytic,
        ..cfg.hw.clone()
    };
    let m: ModelCost = hw::model_cost(
        "nas",
        &layers::layers(&spec, &widths, &ops, resolution),
        &hw_cfg,
    );
    match kind {
        BudgetKind::Energy => m.energy_mj,
        BudgetKind::Latency => m.latency_ms,
    }
}

/// Indices of the points on the Pareto front of (cost ↓, accuracy ↑), by ascending cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Net;
    use crate::spec::arch::{ArchSpec, Widths};
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
}

// ---------------------------------------------------------------------------------------------
// The search driver

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use crate::run::{Command, Event, ManagerHandle};
use crate::slurm::{Array, Layout, Manifest, SlurmSpec, Task};
use crate::spec::config::Hybrid;
use crate::store::{
    CandidateStatus, NasCandidateRow, NewRun, Reader, RunId, Status, StoreError, WriteOp, keys,
};

/// The result of a search.
#[derive(Debug, Clone)]
pub struct NasOutcome {
    /// The search's run row (its candidates hang off it).
    pub search: RunId,
    pub subnet: NasArch,
    pub subnet_proxy: f64,
    pub target: NasArch,
    pub target_cost: f64,
    pub target_proxy: f64,
    /// Candidates whose proxy training was skipped because a stored result existed.
    pub reused: usize,
    pub evaluated: usize,
}

/// An evaluated candidate.
#[derive(Debug, Clone)]
struct Scored {
    arch: NasArch,
    cost: f64,
    proxy: f64,
}

/// The config of a candidate's proxy training.
fn proxy_config(cfg: &Config, arch: &NasArch, stage: i64, subnet: Option<&NasArch>) -> Config {
    let n = &cfg.nas;
    let mut c = cfg.clone();
    c.model.arch = Some(arch.clone());
    c.data.train_subset = n.proxy_train;
    // Ranked on validation images held out of the training file; the test set is never touched.
    c.data.val_images = crate::spec::config::ValImages::Count(n.proxy_val);
    c.eval.test = false;
    c.train.epochs = n.proxy_epochs;
    c.train.batch_size = n.proxy_batch_size;
    c.train.warmup_epochs = c.train.warmup_epochs.min(0.3 * n.proxy_epochs as f64);
    c.eval.bn_images = c.eval.bn_images.min(n.proxy_train / 2);
    c.train.keep_checkpoints = 1;
    if stage == 1 {
        // The SubNet is multiplicative and trained directly.
        c.ops.kind = OpKind::Mult;
        c.aug.hybrid = Hybrid::None;
    } else {
        if let Some(sub) = subnet {
            let t = target_config(&c, arch, sub);
            c.aug = t.aug;
        }
        c.aug.hybrid = Hybrid::Mult;
    }
    c
}

/// The config that trains the TargetNet `target` inside the SubNet `sub` with the recipe of
/// `cfg` (the search's config): `model.arch` and `aug.arch` set, and the augmentation factors
/// extended where they fall short of the SubNet's size (augmented widths are capped at it).
pub fn target_config(cfg: &Config, target: &NasArch, sub: &NasArch) -> Config {
    let mut c = cfg.clone();
    c.model.arch = Some(target.clone());
    c.aug.arch = Some(sub.clone());
    let (w, e) = augment_factors(target, sub);
    let reach = |factors: &mut Vec<f64>, r: f64| {
        if factors.iter().all(|f| *f < r) {
            factors.push(r);
        }
    };
    reach(&mut c.aug.width, w);
    reach(&mut c.aug.expand, e);
    c
}

/// The SubNet a search's TargetNets sit in: its best evaluated stage-1 candidate (highest proxy
/// accuracy, then lowest cost), as the driver chooses it.
pub fn best_subnet(rows: &[NasCandidateRow]) -> Option<NasArch> {
    rows.iter()
        .filter(|r| r.stage == 1 && r.status == CandidateStatus::Done)
        .filter_map(|r| {
            Some((
                NasArch::from_json(&r.arch).ok()?,
                (r.proxy_accuracy?, r.cost),
            ))
        })
        .max_by(|a, b| rank(a.1, b.1))
        .map(|(a, _)| a)
}

/// Width and expand factors that widen `target` to about `sub` (the largest ratios over stages
/// and blocks): the augmented models of the TargetNet's proxy training reach the SubNet's size.
pub fn augment_factors(target: &NasArch, sub: &NasArch) -> (f64, f64) {
    let mut w: f64 = 1.0;
    let mut e: f64 = 1.0;
    for (t, s) in target.stages.iter().zip(&sub.stages) {
        w = w.max(s.width / t.width);
        for (a, b) in t.expands.iter().zip(&s.expands) {
            e = e.max(*b as f64 / *a as f64);
        }
    }
    ((w * 100.0).round() / 100.0, (e * 100.0).round() / 100.0)
}

/// The error of a search stopped through its flag.
/// The `model` column of a search's own run row (its candidates' proxy runs are ordinary runs).
pub const SEARCH_MODEL: &str = "nas-search";

/// Why a search ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum NasError {
    /// The stop flag was set (the search row is marked stopped; a rerun resumes it).
    #[error("search stopped by user")]
    Stopped,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the run manager stopped answering: {0}")]
    ManagerGone(String),
    /// The dataset is missing or damaged (found before the search was recorded).
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("proxy training refused: {0}")]
    ProxyRefused(String),
    #[error("proxy run {0} was stopped; rerun the search to resume it")]
    ProxyStopped(RunId),
    /// Proxies dispatched to Slurm did not all finish.
    #[error("{0}")]
    Slurm(String),
    /// A stage produced no candidate at all.
    #[error("{0}")]
    Empty(&'static str),
    /// The thread running the search panicked (reported by whoever joined it).
    #[error("the search thread panicked")]
    Panicked,
}

struct Search<'a> {
    cfg: &'a Config,
    db: &'a Path,
    manager: &'a ManagerHandle,
    /// Where proxies train when not on `manager`: one Slurm array per generation.
    slurm: Option<&'a SlurmSpec>,
    /// Set by whoever runs the search to stop it (proxy runs in flight stop; stored ones stay).
    stop: &'a AtomicBool,
    search: RunId,
    stored: HashMap<(i64, String), NasCandidateRow>,
    report: &'a mut dyn FnMut(String),
    shape: (i64, i64, i64),
    reused: usize,
    evaluated: usize,
    /// Proxy runs started (names them).
    launched: usize,
    next_request: u64,
}

impl Search<'_> {
    /// The stored proxy accuracy of `arch` at `stage`, if it was evaluated before.
    fn stored_accuracy(&self, stage: i64, arch: &NasArch) -> Option<f64> {
        self.stored
            .get(&(stage, arch.to_json()))
            .filter(|row| row.status == CandidateStatus::Done)
            .and_then(|row| row.proxy_accuracy)
    }

    /// Torch threads of one proxy training: the `train.threads` budget (0: the cores) split
    /// between the candidates trained at once.
    fn threads_per_candidate(&self) -> usize {
        let budget = match self.cfg.train.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        (budget / self.cfg.nas.parallel.max(1)).max(1)
    }

    /// The stored proxy accuracies of `batch` (0 where none), and the indices still to train.
    fn reuse_stored(
        &mut self,
        stage: i64,
        generation: i64,
        batch: &[(NasArch, f64)],
    ) -> (Vec<f64>, std::collections::VecDeque<usize>) {
        let mut out = vec![0.0; batch.len()];
        let mut todo = std::collections::VecDeque::new();
        for (i, (arch, cost)) in batch.iter().enumerate() {
            match self.stored_accuracy(stage, arch) {
                Some(acc) => {
                    self.reused += 1;
                    out[i] = acc;
                    (self.report)(format!(
                        "stage {stage} gen {generation}: cost {cost:.4}, proxy top-1 {:.2} % (stored)",
                        acc * 100.0
                    ));
                }
                None => todo.push_back(i),
            }
        }
        (out, todo)
    }

    /// Start one candidate's proxy training; its request id and its (pending) row.
    fn launch(
        &mut self,
        stage: i64,
        generation: i64,
        arch: &NasArch,
        cost: f64,
        subnet: Option<&NasArch>,
        threads: usize,
    ) -> Result<(u64, NasCandidateRow), NasError> {
        let mut config = proxy_config(self.cfg, arch, stage, subnet);
        config.train.threads = threads;
        self.next_request += 1;
        let request = self.next_request;
        let name = format!(
            "nas{}-s{stage}-g{generation}-{}",
            self.search, self.launched
        );
        self.launched += 1;
        self.manager
            .commands
            .send(Command::Start {
                config: Box::new(config),
                name,
                tags: format!("nas-proxy,nas{}", self.search),
                request,
            })
            .map_err(|e| NasError::ManagerGone(e.to_string()))?;
        let row = NasCandidateRow {
            run: self.search,
            stage,
            generation,
            arch: arch.to_json(),
            cost,
            proxy_accuracy: None,
            status: CandidateStatus::Pending,
            proxy_run: None,
            slurm: None,
        };
        Ok((request, row))
    }

    /// Proxy accuracies of `batch` (stored ones reused; the rest trained through the run
    /// manager, `nas.parallel` at a time), in the batch's order.
    fn evaluate_all(
        &mut self,
        stage: i64,
        generation: i64,
        batch: &[(NasArch, f64)],
        subnet: Option<&NasArch>,
    ) -> Result<Vec<f64>, NasError> {
        let (mut out, mut todo) = self.reuse_stored(stage, generation, batch);
        if let Some(slurm) = self.slurm {
            let todo: Vec<usize> = todo.into_iter().collect();
            self.evaluate_on_slurm(slurm, stage, generation, batch, &todo, subnet, &mut out)?;
            return Ok(out);
        }
        let parallel = self.cfg.nas.parallel.max(1);
        let threads = self.threads_per_candidate();
        // In flight, by request id: (batch index, the candidate's row).
        let mut pending: HashMap<u64, (usize, NasCandidateRow)> = HashMap::new();
        let result = loop {
            while pending.len() < parallel
                && let Some(i) = todo.pop_front()
            {
                let (arch, cost) = &batch[i];
                let (request, row) =
                    self.launch(stage, generation, arch, *cost, subnet, threads)?;
                pending.insert(request, (i, row));
            }
            if pending.is_empty() {
                break Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                break Err(NasError::Stopped);
            }
            let event = match self.manager.events.recv_timeout(Duration::from_millis(250)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(e) => break Err(NasError::ManagerGone(e.to_string())),
            };
            let of_run = |pending: &HashMap<u64, (usize, NasCandidateRow)>, run: RunId| {
                pending
                    .iter()
                    .find(|(_, (_, row))| row.proxy_run == Some(run))
                    .map(|(r, _)| *r)
            };
            let (request, accuracy) = match event {
                Event::Created { request, run } if pending.contains_key(&request) => {
                    if let Some((_, row)) = pending.get_mut(&request) {
                        row.proxy_run = Some(run);
                        let row = row.clone();
                        self.record(row)?;
                    }
                    continue;
                }
                Event::Rejected { request, reason } if pending.contains_key(&request) => {
                    break Err(NasError::ProxyRefused(reason));
                }
                Event::Finished { run, val_top1, .. } => match of_run(&pending, run) {
                    Some(r) => (r, Some(val_top1)),
                    None => continue,
                },
                Event::Failed { run, reason } => match of_run(&pending, run) {
                    Some(r) => {
                        (self.report)(format!(
                            "stage {stage} gen {generation}: proxy run {run} failed: {reason}"
                        ));
                        (r, None)
                    }
                    None => continue,
                },
                Event::Stopped { run } if of_run(&pending, run).is_some() => {
                    break Err(NasError::ProxyStopped(run));
                }
                _ => continue,
            };
            let Some((i, mut row)) = pending.remove(&request) else {
                continue;
            };
            self.evaluated += 1;
            row.proxy_accuracy = accuracy;
            row.status = if accuracy.is_some() {
                CandidateStatus::Done
            } else {
                CandidateStatus::Failed
            };
            self.record(row.clone())?;
            let proxy_run = row.proxy_run.unwrap_or_default();
            self.stored.insert((stage, row.arch.clone()), row);
            out[i] = accuracy.unwrap_or(0.0);
            (self.report)(format!(
                "stage {stage} gen {generation}: cost {:.4}, proxy top-1 {:.2} % (run {proxy_run})",
                batch[i].1,
                out[i] * 100.0
            ));
        };
        if let Err(e) = result {
            // Leave nothing of this search training behind; finished candidates stay stored, and
            // the interrupted ones say so (a resumed search trains them again).
            for (_, row) in pending.values() {
                if let Some(run) = row.proxy_run {
                    let _ = self.manager.commands.send(Command::Stop(run));
                    let _ = self.record(NasCandidateRow {
                        status: CandidateStatus::Stopped,
                        ..row.clone()
                    });
                }
            }
            return Err(e);
        }
        Ok(out)
    }

    /// The proxies `todo` of `batch` as one Slurm job array (`nas.parallel` at once); each proxy
    /// is scored from its imported run's last validation top-1, as a local one is.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_on_slurm(
        &mut self,
        slurm: &SlurmSpec,
        stage: i64,
        generation: i64,
        batch: &[(NasArch, f64)],
        todo: &[usize],
        subnet: Option<&NasArch>,
        out: &mut [f64],
    ) -> Result<(), NasError> {
        if todo.is_empty() {
            return Ok(());
        }
        let what = format!("nas{}", self.search);
        let layout = Layout::of(&slurm.shared, &what, &format!("s{stage}-g{generation}"));
        let tasks: Vec<Task> = todo
            .iter()
            .map(|&i| {
                let (arch, _) = &batch[i];
                // Named by its architecture: a resumed search finds the same task's snapshot.
                let json = arch.to_json();
                let h = json.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                let file = format!("s{stage}-g{generation}-{h:016x}");
                let mut config = proxy_config(self.cfg, arch, stage, subnet);
                config.train.threads = 0;
                Task {
                    variant: String::new(),
                    seed: config.train.seed,
                    name: format!("{what}-s{stage}-g{generation}-{i}"),
                    tags: format!("nas-proxy,{what},slurm,{}", layout.task_tag(&file)),
                    config: config.to_toml(),
                    file,
                }
            })
            .collect();
        let manifest = Manifest {
            name: format!("{what}-s{stage}-g{generation}"),
            identity: String::new(),
            spec: String::new(),
            tasks,
        };
        let writer = self.manager.writer();
        // Each proxy's task and Slurm state, on its candidate's row, for the NAS view.
        let rows: Vec<NasCandidateRow> = todo
            .iter()
            .map(|&i| NasCandidateRow {
                run: self.search,
                stage,
                generation,
                arch: batch[i].0.to_json(),
                cost: batch[i].1,
                proxy_accuracy: None,
                status: CandidateStatus::Pending,
                proxy_run: None,
                slurm: None,
            })
            .collect();
        let on_state = |k: usize, task: &str, state: &str, detail: &str| {
            writer.send_or_log(WriteOp::NasCandidate(NasCandidateRow {
                slurm: Some(format!("{task} {state} ({detail})")),
                ..rows[k].clone()
            }));
        };
        let array = Array {
            db: self.db,
            writer,
            layout: &layout,
            manifest: &manifest,
            study: None,
            on_state: Some(&on_state),
        };
        let label = format!("stage {stage} gen {generation}");
        let d = array
            .dispatch(slurm, self.cfg.nas.parallel, self.stop, &label, self.report)
            .map_err(|e| NasError::Slurm(e.to_string()))?;
        let reader = Reader::open(self.db)?;
        let mut cut_short = Vec::new();
        for (k, &i) in todo.iter().enumerate() {
            let (arch, cost) = &batch[i];
            let accuracy = match (d.runs[k], d.statuses[k]) {
                (Some(run), Some(Status::Finished)) => reader.last_metric(run, keys::VAL_TOP1)?,
                (_, Some(Status::Failed)) => None,
                _ => {
                    cut_short.push(format!("{} ({})", manifest.tasks[k].name, d.ended_text(k)));
                    // As a local proxy stopped mid-way: a resumed search trains it again.
                    self.record(NasCandidateRow {
                        status: CandidateStatus::Stopped,
                        proxy_run: d.runs[k],
                        slurm: Some(format!("{}_{k} {}", d.job, d.ended_text(k))),
                        ..rows[k].clone()
                    })?;
                    continue;
                }
            };
            self.evaluated += 1;
            let row = NasCandidateRow {
                run: self.search,
                stage,
                generation,
                arch: arch.to_json(),
                cost: *cost,
                proxy_accuracy: accuracy,
                status: if accuracy.is_some() {
                    CandidateStatus::Done
                } else {
                    CandidateStatus::Failed
                },
                proxy_run: d.runs[k],
                slurm: Some(format!("{}_{k} {}", d.job, d.ended_text(k))),
            };
            self.record(row.clone())?;
            self.stored.insert((stage, row.arch.clone()), row);
            out[i] = accuracy.unwrap_or(0.0);
            (self.report)(format!(
                "{label}: cost {cost:.4}, proxy top-1 {:.2} % (run {}, on Slurm)",
                out[i] * 100.0,
                d.runs[k].unwrap_or_default()
            ));
        }
        if d.stopped() {
            return Err(NasError::Stopped);
        }
        if !cut_short.is_empty() {
            return Err(NasError::Slurm(format!(
                "{} proxies did not finish on Slurm: {}; their logs are in {}; rerun the search to continue it",
                cut_short.len(),
                cut_short.join(", "),
                layout.logs().display()
            )));
        }
        Ok(())
    }

    fn record(&self, row: NasCandidateRow) -> Result<(), NasError> {
        let w = self.manager.writer();
        w.send(WriteOp::NasCandidate(row))?;
        Ok(w.flush()?)
    }

    /// One stage of evolution: a random feasible population, then children of the better half.
    /// `cost_of` returns the cost and the limit it must respect; `repair` keeps a child valid
    /// for the stage (stage 2: inside the SubNet).
    fn evolve(
        &mut self,
        stage: i64,
        rng: &mut Rng,
        cost_of: &dyn Fn(&NasArch, &mut Rng) -> (f64, f64),
        repair: &dyn Fn(NasArch) -> NasArch,
        subnet: Option<&NasArch>,
    ) -> Result<Vec<Scored>, NasError> {
        let n = self.cfg.nas.clone();
        let mut seen: Vec<NasArch> = Vec::new();
        let mut scored: Vec<Scored> = Vec::new();
        let mut cheapest: Option<(NasArch, f64)> = None;
        for generation in 0..n.generations as i64 {
            let parents: Vec<Scored> = {
                let mut s = scored.clone();
                s.sort_by(|a, b| b.proxy.total_cmp(&a.proxy));
                s.truncate((n.population / 2).max(1));
                s
            };
            let mut batch = Vec::new();
            let mut tries = 0;
            while batch.len() < n.population && tries < 200 * n.population {
                tries += 1;
                let child = if generation == 0 || parents.is_empty() {
                    repair(NasArch::sample(rng))
                } else {
                    let a = &parents[rng.below(parents.len())].arch;
                    let base = if parents.len() > 1 && rng.uniform() < n.crossover {
                        a.crossover(&parents[rng.below(parents.len())].arch, rng)
                    } else {
                        a.clone()
                    };
                    repair(base.mutate(rng, n.mutation))
                };
                if child.validate().is_err() || seen.contains(&child) {
                    continue;
                }
                let (cost, limit) = cost_of(&child, rng);
                if cheapest.as_ref().is_none_or(|c| cost < c.1) {
                    cheapest = Some((child.clone(), cost));
                }
                if cost <= limit {
                    seen.push(child.clone());
                    batch.push((child, cost));
                }
            }
            if batch.is_empty() && scored.is_empty() {
                let (arch, cost) = cheapest
                    .clone()
                    .ok_or(NasError::Empty("no architecture sampled"))?;
                (self.report)(format!(
                    "stage {stage}: nothing in the space meets the budget; the cheapest found costs {cost:.4}"
                ));
                batch.push((arch, cost));
            }
            let proxies = self.evaluate_all(stage, generation, &batch, subnet)?;
            for ((arch, cost), proxy) in batch.into_iter().zip(proxies) {
                scored.push(Scored { arch, cost, proxy });
            }
        }
        Ok(scored)
    }
}

fn best(scored: &[Scored]) -> Option<&Scored> {
    scored
        .iter()
        .max_by(|a, b| rank((a.proxy, a.cost), (b.proxy, b.cost)))
}

/// Which of two (proxy accuracy, cost) candidates is better: higher accuracy, then lower cost.
fn rank(a: (f64, f64), b: (f64, f64)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1))
}

/// Run (or resume) the two-stage search of `cfg` (method.md §6) on `manager`'s threads.
/// A rerun with the same config continues the latest search of that config and reuses every
/// candidate it stored (the sampling is seeded, so the same candidates come up again); a
/// finished search is thereby replayed without training anything.
/// Setting `stop` ends it early with [`NasError::Stopped`] (the search row is marked stopped; a
/// rerun resumes it).
pub fn search(
    cfg: &Config,
    db: &Path,
    name: &str,
    manager: &ManagerHandle,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<NasOutcome, NasError> {
    search_on(cfg, db, name, manager, None, stop, report)
}

/// [`search`], with each generation's proxy trainings dispatched to Slurm as one job array
/// (`nas.parallel` at once) when `slurm` is given; `manager` then only records.
pub fn search_on(
    cfg: &Config,
    db: &Path,
    name: &str,
    manager: &ManagerHandle,
    slurm: Option<&SlurmSpec>,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<NasOutcome, NasError> {
    crate::data::check_available(&cfg.data)?;
    let writer = manager.writer();
    writer.flush()?;
    let toml = cfg.to_toml();
    let reader = Reader::open(db)?;
    let same_search = |text: &str| {
        Config::from_toml_str(text, "stored search", &[])
            .is_ok_and(|stored| search_identity(&stored) == search_identity(cfg))
    };
    let previous = reader
        .runs()?
        .into_iter()
        .filter(|r| r.model == SEARCH_MODEL)
        .filter(|r| reader.config_toml(r.id).is_ok_and(|t| same_search(&t)))
        .map(|r| r.id)
        .max();
    let search = match previous {
        Some(id) => {
            writer.send_or_log(WriteOp::Claim(id));
            report(format!("resuming NAS search {id}"));
            id
        }
        None => writer.create_run(NewRun {
            name: name.to_owned(),
            config_toml: toml,
            dataset: cfg.data.dataset.as_str().into(),
            model: SEARCH_MODEL.into(),
            operator: cfg.ops.kind.as_str().into(),
            seed: cfg.nas.seed,
            tags: "nas".into(),
            provenance: crate::host::provenance_json(),
        })?,
    };
    writer.status(search, Status::Running, None);
    let stored = reader
        .nas_candidates(search)?
        .into_iter()
        .map(|r| ((r.stage, r.arch.clone()), r))
        .collect();
    let mut s = Search {
        cfg,
        db,
        manager,
        slurm,
        stop,
        search,
        stored,
        report,
        shape: cfg.data.dataset.input_shape(),
        reused: 0,
        evaluated: 0,
        launched: 0,
        next_request: 1 << 40,
    };
    let result = run_stages(&mut s);
    match &result {
        Ok(o) => {
            writer.log(
                search,
                log::Level::Info,
                format!(
                    "best TargetNet {} (cost {:.4}, proxy top-1 {:.2} %)",
                    o.target.to_json(),
                    o.target_cost,
                    o.target_proxy * 100.0
                ),
            );
            writer.status(search, Status::Finished, None);
        }
        Err(e @ NasError::Stopped) => writer.status(search, Status::Stopped, Some(e.to_string())),
        Err(e) => writer.status(search, Status::Failed, Some(e.to_string())),
    }
    writer.flush()?;
    result
}

/// What makes two search configs the same search: everything but how it is executed (thread
/// counts, candidates at once). Stored configs are resolved first, so keys added in later
/// versions take their defaults and an old search still resumes.
fn search_identity(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    c.train.threads = 0;
    c.nas.parallel = 1;
    c
}

fn run_stages(s: &mut Search<'_>) -> Result<NasOutcome, NasError> {
    let cfg = s.cfg;
    let n = &cfg.nas;
    let shape = s.shape;
    let mut rng = Rng::new(n.seed);
    let multiples = n.multiples.clone();
    let stage1_cost = |a: &NasArch, rng: &mut Rng| {
        let m = multiples[rng.below(multiples.len())];
        (
            cost(a, OpKind::Mult, cfg, n.budget_kind, shape),
            m * n.budget,
        )
    };
    (s.report)(format!(
        "stage 1: multiplicative SubNets under m × {} {}",
        n.budget,
        unit(n.budget_kind)
    ));
    let stage1 = s.evolve(1, &mut rng, &stage1_cost, &|a| a, None)?;
    let sub = best(&stage1)
        .ok_or(NasError::Empty("stage 1 evaluated nothing"))?
        .clone();
    (s.report)(format!(
        "stage 1 best SubNet: proxy top-1 {:.2} %, Mult cost {:.4} {}",
        sub.proxy * 100.0,
        sub.cost,
        unit(n.budget_kind)
    ));
    let op = cfg.ops.kind;
    let stage2_cost = |a: &NasArch, _: &mut Rng| (cost(a, op, cfg, n.budget_kind, shape), n.budget);
    let subnet = sub.arch.clone();
    let repair = |a: NasArch| a.clamp_into(&subnet);
    (s.report)(format!(
        "stage 2: {} TargetNets inside the SubNet under {} {}",
        op.as_str(),
        n.budget,
        unit(n.budget_kind)
    ));
    let stage2 = s.evolve(2, &mut rng, &stage2_cost, &repair, Some(&sub.arch))?;
    let target = best(&stage2)
        .ok_or(NasError::Empty("stage 2 evaluated nothing"))?
        .clone();
    Ok(NasOutcome {
        search: s.search,
        subnet: sub.arch,
        subnet_proxy: sub.proxy,
        target: target.arch,
        target_cost: target.cost,
        target_proxy: target.proxy,
        reused: s.reused,
        evaluated: s.evaluated,
    })
}

pub fn unit(kind: BudgetKind) -> &'static str {
    match kind {
        BudgetKind::Energy => "mJ",
        BudgetKind::Latency => "ms",
    }
}
