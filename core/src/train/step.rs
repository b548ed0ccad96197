//! One ShiftAddAug training step: the tiny model (MF operators on remapped weights, plus the KL
//! regulariser) and one sampled augmented sub-model, then one SGD update.

use tch::{Reduction, Tensor};

use crate::model::{Exec, Net};
use crate::rng::Rng;
use crate::spec::arch::Widths;
use crate::spec::config::{Config, Hybrid};

use super::TrainError;
use super::sgd::Sgd;

/// What one training step needs besides the batch.
pub struct StepSpec<'a> {
    pub config: &'a Config,
    pub tiny: &'a Widths,
    pub aug_exec: Option<Exec>,
    pub width_on: bool,
    pub lr: f64,
}

/// Losses of one step (before the optimizer update), as detached scalars on the training device:
/// reading them is a host synchronisation on CUDA, so the training loop reads a batch of steps'
/// losses at once ([`StepLosses::values`] for one).
#[derive(Debug)]
pub struct StepLosses {
    pub tiny: Tensor,
    pub aug: Option<Tensor>,
}

impl StepLosses {
    /// (tiny, augmented) as numbers.
    pub fn values(&self) -> (f64, Option<f64>) {
        (
            self.tiny.double_value(&[]),
            self.aug.as_ref().map(|a| a.double_value(&[])),
        )
    }
}

/// One ShiftAddAug step: forward/backward the tiny model (MF operators on remapped weights, plus
/// the KL regulariser), then — unless `hybrid = "none"` — one sampled augmented sub-model weighted
/// by α; one SGD update. AdderNet's gradient scaling happens inside each Add call's backward (on dF
/// of the weight that call used), so the multiplicative model's gradient and the KL term's stay raw.
/// Nothing is read back to the host: the caller checks the losses for divergence when it reads
/// them.
pub fn train_step(
    net: &Net,
    opt: &mut Sgd,
    rng: &mut Rng,
    x: &Tensor,
    y: &Tensor,
    spec: &StepSpec<'_>,
) -> Result<StepLosses, TrainError> {
    let cfg = spec.config;
    let ls = cfg.train.label_smoothing;
    opt.zero_grad();
    let logits = net.forward(x, spec.tiny, true, Exec::Tiny)?;
    let ce = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, ls)?;
    let tiny = ce.detach();
    // Out of place: `tiny` shares the cross-entropy's storage.
    let loss = match net
        .remap_kl(cfg.remap.bins)
        .filter(|_| cfg.remap.kl_weight > 0.0)
    {
        Some(kl) => ce + kl * cfg.remap.kl_weight,
        None => ce,
    };
    loss.backward();
    let mut aug = None;
    if let Some(exec) = spec.aug_exec {
        let widths = net.sample_widths(&cfg.aug, rng, spec.width_on);
        let logits = net.forward(x, &widths, true, exec)?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, ls)?;
        aug = Some(loss.detach());
        (loss * cfg.aug.alpha).backward();
    }
    opt.try_step(spec.lr)?;
    Ok(StepLosses { tiny, aug })
}

/// How the augmented forward computes for a hybrid mode (`None`: no augmented forward).
pub fn aug_exec(hybrid: Hybrid) -> Option<Exec> {
    match hybrid {
        Hybrid::None => None,
        Hybrid::Mult => Some(Exec::Mult),
        Hybrid::Mf => Some(Exec::Mf),
        Hybrid::Split => Some(Exec::Split),
    }
}
