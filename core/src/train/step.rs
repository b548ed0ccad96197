//! One ShiftAddAug training step: the tiny model (MF operators on remapped weights, plus the KL
//! regulariser) and one sampled augmented sub-model, then one SGD update.

use tch::{Kind, Reduction, Tensor};

use crate::model::{Exec, Net};
use crate::rng::Rng;
use crate::spec::arch::Widths;
use crate::spec::config::{AugGrad, Config, Hybrid};

use super::TrainError;

/// Targets not scored: a segmentation mask's [`crate::data::segment::IGNORE`] (no class label
/// reaches it).
const IGNORE_INDEX: i64 = crate::data::segment::IGNORE as i64;
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
    opt.zero_grad();
    let tiny = tiny_backward(net, spec.config, spec.tiny, x, y)?;
    let aug = match spec.aug_exec {
        Some(exec) => Some(
            AugHalf {
                net,
                cfg: spec.config,
                exec,
                width_on: spec.width_on,
            }
            .backward(rng, x, y)?,
        ),
        None => None,
    };
    opt.try_step(spec.lr)?;
    Ok(StepLosses { tiny, aug })
}

/// The tiny model's half of a step: forward the tiny sub-model (MF operators on remapped
/// weights), backward its cross-entropy plus the remap's KL regulariser into the parameters'
/// gradients (accumulating); its cross-entropy, detached.
pub(super) fn tiny_backward(
    net: &Net,
    cfg: &Config,
    tiny: &Widths,
    x: &Tensor,
    y: &Tensor,
) -> Result<Tensor, TrainError> {
    let ls = cfg.train.label_smoothing;
    let logits = net.forward(x, tiny, true, Exec::Tiny)?;
    let ce = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, IGNORE_INDEX, ls)?;
    let out = ce.detach();
    // Out of place: `out` shares the cross-entropy's storage.
    let loss = match net
        .remap_kl(cfg.remap.bins)
        .filter(|_| cfg.remap.kl_weight > 0.0)
    {
        Some(kl) => ce + kl * cfg.remap.kl_weight,
        None => ce,
    };
    loss.backward();
    Ok(out)
}

/// The augmented half of a step: which net, config and augmented execution, and whether width
/// augmentation is on.
pub(super) struct AugHalf<'a> {
    pub net: &'a Net,
    pub cfg: &'a Config,
    pub exec: Exec,
    pub width_on: bool,
}

impl AugHalf<'_> {
    /// Sample one augmented sub-model, forward it as `exec` computes, backward α × its
    /// cross-entropy into the gradients (accumulating), its gradient on Add weights scaled as
    /// `aug.add_grad` says; its cross-entropy, detached.
    pub(super) fn backward(
        &self,
        rng: &mut Rng,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor, TrainError> {
        match self.cfg.aug.add_grad {
            AugGrad::Raw => self.raw_backward(rng, x, y),
            AugGrad::Adder => self.scaled_backward(rng, x, y),
        }
    }

    /// [`Self::backward`] with the gradient as backpropagation gives it.
    fn raw_backward(&self, rng: &mut Rng, x: &Tensor, y: &Tensor) -> Result<Tensor, TrainError> {
        let cfg = self.cfg;
        let ls = cfg.train.label_smoothing;
        let widths = self.net.sample_widths(&cfg.aug, rng, self.width_on);
        let logits = self.net.forward(x, &widths, true, self.exec)?;
        let loss =
            logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, IGNORE_INDEX, ls)?;
        let out = loss.detach();
        (loss * cfg.aug.alpha).backward();
        Ok(out)
    }

    /// [`Self::backward`] with `aug.add_grad = "adder"`: the augmented model's gradient on each
    /// Add layer's stored weight is scaled by AdderNet's rule as the tiny model's Add call scales
    /// its own — `η·√k·g/‖g‖` over the k elements it touched (× their RMS with
    /// `ops.add_eta_relative`) — then weighted by α and added to the tiny model's. Without it the
    /// multiplicative model's raw gradient on those weights is a few thousandths of the tiny
    /// model's scaled one (`shiftadd grads`), so the augmentation hardly moves them. With
    /// `aug.add_grad_ratio` = ρ the augmented gradient is ρ × that size.
    fn scaled_backward(&self, rng: &mut Rng, x: &Tensor, y: &Tensor) -> Result<Tensor, TrainError> {
        let (alpha, rho) = (self.cfg.aug.alpha, self.cfg.aug.add_grad_ratio);
        let layers = self.net.add_weights();
        // The tiny model's gradient set aside, so that the augmented one can be scaled alone.
        let tiny: Vec<Option<Tensor>> = layers
            .iter()
            .map(|a| {
                let mut g = a.weight.grad();
                g.defined().then(|| {
                    let kept = g.copy();
                    let _ = g.zero_();
                    kept
                })
            })
            .collect();
        let loss = self.raw_backward(rng, x, y)?;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (a, tiny) in layers.iter().zip(tiny) {
                let (w, scale) = (&a.weight, a.scale);
                let mut g = w.grad();
                if !g.defined() {
                    continue;
                }
                let touched = g.f_ne(0.0)?.to_kind(Kind::Float);
                let k = touched.f_sum(Kind::Double)?.double_value(&[]);
                let norm = g.f_norm()?.double_value(&[]);
                if scale.eta > 0.0 && k > 0.0 {
                    // The size the Add call gives its own gradient, in the Add view's units.
                    let mut eta = scale.eta * k.sqrt();
                    if scale.relative {
                        let sq = (w * &touched)
                            .f_square()?
                            .f_sum(Kind::Double)?
                            .double_value(&[]);
                        eta *= (sq / k).sqrt() * a.view;
                    }
                    // g is α·g_aug: normalising removes α, so it is applied again, with ρ; an
                    // update of the stored tensor moves the Add view × `view`, so ÷ `view`, as
                    // the tiny model's gradient reaches it.
                    let _ = g.f_mul_scalar_(alpha * rho * eta / (norm.max(1e-12) * a.view))?;
                }
                if let Some(t) = tiny {
                    let _ = g.f_add_(&t)?;
                }
            }
            Ok(())
        })?;
        Ok(loss)
    }
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
