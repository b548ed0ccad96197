//! Elastic layers: a conv that stores its maximum width and runs a leading slice of it, through
//! its operator role (Mult, Shift, Add) and the forward pass's [`Exec`] mode, with its weight
//! remap; and the BN whose parameters and running statistics are sliced alike.

use std::cell::Cell;

use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

use crate::ops::{self, adder, remap::Remap, shift};
use crate::spec::arch::{Act, OpSpec};
use crate::spec::config::{OpKind, RemapKind};

/// How MF layers compute in one forward pass (method.md §4, `aug.hybrid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// The tiny model: MF layers use their operator on remapped weights.
    Tiny,
    /// Everything multiplicative on the stored weights (ShiftAddAug's augmented model).
    Mult,
    /// MF layers use their operator on the whole (wider) slice.
    Mf,
    /// MF layers use their operator on the tiny slice and Mult on the added channels.
    Split,
}

/// What an MF layer's weights look like to each view: the discrepancy snapshot of one layer.
pub struct LayerWeights {
    pub name: String,
    pub role: OpKind,
    /// The tiny slice of the stored weights (what the multiplicative model uses).
    pub stored: Tensor,
    /// What the MF operator uses before any power-of-two rounding.
    pub remapped: Tensor,
    /// Shift layers: the power-of-two weights.
    pub pow2: Option<Tensor>,
}

/// The shape and operator role of one elastic conv: what [`ElasticConv::new`] builds.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvShape {
    pub max_in: i64,
    pub max_out: i64,
    pub kernel: i64,
    pub stride: i64,
    /// One input channel per output channel (`groups = channels`).
    pub depthwise: bool,
    /// The tiny model's (input, output) channels: the leading slice it runs.
    pub tiny: (i64, i64),
    pub role: OpKind,
}

impl ConvShape {
    /// A dense 1×1 conv, stride 1.
    pub(super) fn pointwise(max_in: i64, max_out: i64, tiny: (i64, i64), role: OpKind) -> Self {
        Self {
            max_in,
            max_out,
            kernel: 1,
            stride: 1,
            depthwise: false,
            tiny,
            role,
        }
    }
}

/// A conv or linear weight that stores its maximum width and runs a leading slice, with the
/// operator its role gives it.
#[derive(Debug)]
pub struct ElasticConv {
    pub name: String,
    pub weight: Tensor,
    /// The stored kernel size.
    pub kernel: i64,
    /// The tiny model's kernel: the centre of the stored one (smaller only for a TargetNet's
    /// depthwise conv inside a SubNet with a larger kernel there).
    pub tiny_kernel: i64,
    pub stride: i64,
    pub depthwise: bool,
    pub role: OpKind,
    /// The tiny model's (in, out) channels of this layer.
    pub tiny: (i64, i64),
    pub(super) remap: Option<Remap>,
    pub(super) bits: i64,
    pub(super) act_fixed_point: bool,
    pub(super) add_scale: adder::GradScale,
    /// The factor from the stored tensor to what the Add operator sees (`ops.add_storage =
    /// "mult"`: √(fan_in / 2); 1 otherwise, and for every other role).
    pub(super) add_view: f64,
}

impl ElasticConv {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(p: &nn::Path<'_>, shape: ConvShape, ops: &OpSpec) -> Self {
        let ConvShape {
            max_in,
            max_out,
            kernel,
            stride,
            depthwise,
            tiny,
            role,
        } = shape;
        let in_per_group = if depthwise { 1 } else { max_in };
        let weight = p.var(
            "weight",
            &[max_out, in_per_group, kernel, kernel],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        );
        // The inverse of kaiming's standard deviation, √2 / √fan_in (tch's default init).
        let add_view = if role == OpKind::Add && ops.add_mult_storage {
            ((in_per_group * kernel * kernel) as f64 / 2.0).sqrt()
        } else {
            1.0
        };
        if role == OpKind::Add && ops.add_unit_init && !ops.add_mult_storage {
            // The same draw, rescaled: every conv is followed by BN, so the multiplicative view
            // computes the same function; the Add view sees weights at its inputs' scale.
            tch::no_grad(|| {
                let rms = weight.square().mean(Kind::Float).sqrt().clamp_min(1e-12);
                let _ = weight.shallow_clone().g_div_(&rms);
            });
        }
        let remapped = role == OpKind::Add || (role == OpKind::Shift && ops.remap_shift);
        Self {
            name: p.path("weight").trim_end_matches(".weight").to_owned(),
            weight,
            kernel,
            tiny_kernel: kernel,
            stride,
            depthwise,
            role,
            tiny,
            remap: remapped.then(|| Remap::new(&(p / "remap"), ops.remap, ops.remap_bins)),
            bits: ops.weight_bits,
            act_fixed_point: ops.act_fixed_point,
            add_scale: ops.add_scale,
            add_view,
        }
    }

    /// What the Add operator sees of a slice `w` of the stored tensor: `w` × the view factor s,
    /// whose gradient reaches `w` ÷ s (not × s), so that an update moves the Add view exactly as
    /// it would move a tensor stored at the Add operator's scale. `w` itself where s = 1.
    pub(super) fn add_view_of(&self, w: &Tensor) -> Tensor {
        if self.add_view == 1.0 {
            return w.shallow_clone();
        }
        let s = self.add_view;
        let fixed = w.detach();
        &fixed * s + (w - &fixed) / s
    }

    /// The view factor of an Add layer (1 unless `ops.add_storage = "mult"`).
    pub fn add_view(&self) -> f64 {
        self.add_view
    }

    /// The leading `out` × `c_in` slice, at the centre `kernel` × `kernel` of the stored kernel.
    pub(super) fn slice_k(&self, c_in: i64, out: i64, kernel: i64) -> Tensor {
        let w = if self.depthwise {
            self.weight.narrow(0, 0, c_in)
        } else {
            self.weight.narrow(0, 0, out).narrow(1, 0, c_in)
        };
        if kernel >= self.kernel {
            w
        } else {
            let off = (self.kernel - kernel) / 2;
            w.narrow(2, off, kernel).narrow(3, off, kernel)
        }
    }

    /// The tiny model's slice of the stored weights.
    pub(super) fn tiny_slice(&self, c_in: i64, out: i64) -> Tensor {
        self.slice_k(c_in, out, self.tiny_kernel)
    }

    /// The weights the MF operator sees for a slice: remapped, and for Shift rounded to powers of two.
    pub(super) fn mf_weight(&self, w: &Tensor) -> Tensor {
        let w = &self.add_view_of(w);
        let r = self.remap.as_ref().map_or_else(
            || w.shallow_clone(),
            |m| self.remap_nested(w, |t| m.apply(t)),
        );
        if self.role == OpKind::Shift {
            shift::shift_weight(&r, self.bits)
        } else {
            r
        }
    }

    /// `R(w)` of a slice; a slice wider than the tiny model's (an MF augmented forward,
    /// `hybrid = "mf"`) gets `R` of the tiny block in its leading block, so that the tiny
    /// channels see the same weights in the tiny and the augmented forward. (A nested kernel
    /// larger than the tiny model's is remapped as a whole.)
    pub(super) fn remap_nested(&self, w: &Tensor, remap: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let r = remap(w);
        let size = w.size();
        let rows = self.tiny.1.min(size[0]);
        let cols = if self.depthwise {
            size[1]
        } else {
            self.tiny.0.min(size[1])
        };
        if (rows, cols) == (size[0], size[1]) || size[3] != self.tiny_kernel {
            return r;
        }
        let tiny = remap(&w.narrow(0, 0, rows).narrow(1, 0, cols));
        let top = r.narrow(0, 0, rows).slice_scatter(&tiny, 1, 0, cols, 1);
        r.slice_scatter(&top, 0, 0, rows, 1)
    }

    /// An Add layer's weight for a slice, as [`Self::mf_weight`], split for the op (see
    /// [`Remap::apply_split`]): the weight, whose gradient AdderNet's scaling applies to, and the
    /// raw-gradient sink of the remap's parameters (`None` without any).
    pub(super) fn add_weight(&self, w: &Tensor) -> (Tensor, Option<Tensor>) {
        let w = &self.add_view_of(w);
        let Some(m) = &self.remap else {
            return (w.shallow_clone(), None);
        };
        let weights = self.remap_nested(w, |t| m.apply_to_weights(t));
        let params = m
            .has_params()
            .then(|| self.remap_nested(w, |t| m.map_params(t)));
        (weights, params)
    }

    /// [`Self::mf_weight`]'s values without the straight-through arithmetic (exact powers of two).
    pub(super) fn mf_weight_exact(&self, w: &Tensor) -> Tensor {
        let w = &self.add_view_of(w).detach();
        let r = self
            .remap
            .as_ref()
            .map_or_else(|| w.copy(), |m| m.apply(w).detach());
        if self.role == OpKind::Shift {
            shift::quantize(&r, self.bits)
        } else {
            r
        }
    }

    pub(super) fn mult_conv(&self, x: &Tensor, w: &Tensor, groups: i64) -> Tensor {
        let pad = w.size()[3] / 2;
        x.conv2d(
            w,
            None::<Tensor>,
            [self.stride, self.stride],
            [pad, pad],
            [1, 1],
            groups,
        )
    }

    pub(super) fn mf_conv(&self, x: &Tensor, w: &Tensor, groups: i64) -> Result<Tensor, TchError> {
        if self.role == OpKind::Add {
            let (f, sink) = self.add_weight(w);
            let pad = w.size()[3] / 2;
            return adder::adder_conv2d_scaled(
                x,
                &f,
                sink.as_ref(),
                self.stride,
                pad,
                groups,
                self.add_scale,
            );
        }
        let wq = self.mf_weight(w);
        match self.role {
            OpKind::Shift if self.act_fixed_point => {
                Ok(self.mult_conv(&shift::fixed_point_16_16(x), &wq, groups))
            }
            _ => Ok(self.mult_conv(x, &wq, groups)),
        }
    }

    /// Run on `x` ([N, c_in, H, W]) producing `out` channels (depthwise: `out` must equal `c_in`).
    pub fn forward(&self, x: &Tensor, out: i64, exec: Exec) -> Result<Tensor, TchError> {
        self.forward_kernel(x, out, self.kernel, exec)
    }

    /// [`Self::forward`] with the centre `kernel` × `kernel` of the stored kernel.
    pub fn forward_kernel(
        &self,
        x: &Tensor,
        out: i64,
        kernel: i64,
        exec: Exec,
    ) -> Result<Tensor, TchError> {
        let c_in = x.size()[1];
        let groups = if self.depthwise { c_in } else { 1 };
        let w = self.slice_k(c_in, out, kernel);
        match (self.role, exec) {
            (OpKind::Mult, _) | (_, Exec::Mult) => Ok(self.mult_conv(x, &w, groups)),
            (_, Exec::Tiny | Exec::Mf) => self.mf_conv(x, &w, groups),
            (_, Exec::Split) => self.split_conv(x, &w, c_in, out),
        }
    }

    /// Tiny slice through the MF operator, the added channels multiplicative.
    pub(super) fn split_conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        c_in: i64,
        out: i64,
    ) -> Result<Tensor, TchError> {
        let (ti, to) = (self.tiny.0.min(c_in), self.tiny.1.min(out));
        if self.depthwise {
            let mf = self.mf_conv(&x.narrow(1, 0, ti), &w.narrow(0, 0, ti), ti)?;
            if ti == c_in {
                return Ok(mf);
            }
            let rest = self.mult_conv(
                &x.narrow(1, ti, c_in - ti),
                &w.narrow(0, ti, c_in - ti),
                c_in - ti,
            );
            return Ok(Tensor::cat(&[mf, rest], 1));
        }
        let mask = Tensor::ones(w.size(), (w.kind(), w.device()));
        let _ = mask.narrow(0, 0, to).narrow(1, 0, ti).fill_(0.0);
        let mult = self.mult_conv(x, &(w * mask), 1);
        let mf = self.mf_conv(&x.narrow(1, 0, ti), &w.narrow(0, 0, to).narrow(1, 0, ti), 1)?;
        let mf = if to < out {
            mf.constant_pad_nd([0, 0, 0, 0, 0, out - to])
        } else {
            mf
        };
        Ok(mult + mf)
    }

    /// The discrepancy views of this layer's tiny slice (`None` for Mult layers).
    pub fn weights_view(&self) -> Option<LayerWeights> {
        if self.role == OpKind::Mult {
            return None;
        }
        tch::no_grad(|| {
            let stored = self.tiny_slice(self.tiny.0, self.tiny.1).detach().copy();
            let seen = self.add_view_of(&stored);
            let remapped = self
                .remap
                .as_ref()
                .map_or_else(|| seen.copy(), |m| m.apply(&seen).detach());
            let pow2 = (self.role == OpKind::Shift).then(|| shift::quantize(&remapped, self.bits));
            Some(LayerWeights {
                name: self.name.clone(),
                role: self.role,
                stored,
                remapped,
                pow2,
            })
        })
    }

    /// The KL(remapped ‖ Laplace) regulariser of the tiny slice (`None` without a remap).
    pub fn remap_kl(&self, bins: i64) -> Option<Tensor> {
        let remap = self.remap.as_ref().filter(|r| r.kind != RemapKind::None)?;
        Some(ops::remap::soft_kl_to_laplace(
            &remap.apply(&self.add_view_of(&self.tiny_slice(self.tiny.0, self.tiny.1))),
            bins,
        ))
    }
}

/// Batch norm whose parameters and running statistics are sliced to the input's channel count.
/// With `aug.bn = "separate"` it holds a second γ, β that only augmented passes use.
#[derive(Debug)]
pub struct ElasticBn {
    pub name: String,
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// The augmented passes' own (γ, β), `aug_weight` and `aug_bias` (None: they share the tiny
    /// model's).
    pub aug_affine: Option<(Tensor, Tensor)>,
    pub(super) momentum: Cell<f64>,
}

impl ElasticBn {
    /// A BN of `max_c` channels; `separate_aug`: with the augmented passes' own γ, β.
    pub(super) fn new(p: &nn::Path<'_>, max_c: i64, separate_aug: bool) -> Self {
        Self {
            name: p.path("weight").trim_end_matches(".weight").to_owned(),
            weight: p.var("weight", &[max_c], Init::Const(1.0)),
            bias: p.var("bias", &[max_c], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[max_c]),
            running_var: p.ones_no_train("running_var", &[max_c]),
            aug_affine: separate_aug.then(|| {
                (
                    p.var("aug_weight", &[max_c], Init::Const(1.0)),
                    p.var("aug_bias", &[max_c], Init::Const(0.0)),
                )
            }),
            momentum: Cell::new(BN_MOMENTUM),
        }
    }

    /// The (γ, β) a pass in `exec` uses: the augmented passes' own where they have them.
    fn affine(&self, exec: Exec) -> (&Tensor, &Tensor) {
        match &self.aug_affine {
            Some((w, b)) if exec != Exec::Tiny => (w, b),
            _ => (&self.weight, &self.bias),
        }
    }

    /// Batch norm of `x` [N, C, H, W] (sliced to its C channels) as a pass in `exec` computes it,
    /// then `act`. In training one fused op ([`ops::bn`], with ReLU6 fused in); in evaluation
    /// (x − running mean)·γ/σ + β, centred first.
    pub fn forward(
        &self,
        x: &Tensor,
        train: bool,
        act: Act,
        exec: Exec,
    ) -> Result<Tensor, TchError> {
        let c = x.size()[1];
        let (weight, bias) = self.affine(exec);
        let (weight, bias) = (weight.narrow(0, 0, c), bias.narrow(0, 0, c));
        let (running_mean, running_var) = (
            self.running_mean.narrow(0, 0, c),
            self.running_var.narrow(0, 0, c),
        );
        if train {
            let p = ops::bn::BnParams {
                weight: &weight,
                bias: &bias,
                running_mean: &running_mean,
                running_var: &running_var,
                momentum: self.momentum.get(),
                eps: BN_EPS,
            };
            let y = ops::bn::batch_norm_train(x, &p, act == Act::Relu6)?;
            return if act == Act::Relu6 {
                Ok(y)
            } else {
                activate(&y, act)
            };
        }
        // Centred first, as the training kernel is: ATen's inference batch norm computes
        // x·a + (b − mean·a), which cancels away the small spread of an Add layer's outputs
        // far from 0 (issue 18: a run whose train-mode accuracy was 84 % evaluated at 51 %).
        let shape = [1, c, 1, 1];
        let a = (&weight * (&running_var + BN_EPS).f_rsqrt()?).f_view(shape)?;
        let y = (x.f_sub(&running_mean.f_view(shape)?)?)
            .f_mul(&a)?
            .f_add(&bias.f_view(shape)?)?;
        activate(&y, act)
    }

    /// Every per-channel tensor with its variable name (what channel sorting permutes).
    pub(super) fn tensors(&self) -> Vec<(&Tensor, String)> {
        let mut v = vec![
            (&self.weight, format!("{}.weight", self.name)),
            (&self.bias, format!("{}.bias", self.name)),
            (&self.running_mean, format!("{}.running_mean", self.name)),
            (&self.running_var, format!("{}.running_var", self.name)),
        ];
        if let Some((w, b)) = &self.aug_affine {
            v.push((w, format!("{}.aug_weight", self.name)));
            v.push((b, format!("{}.aug_bias", self.name)));
        }
        v
    }
}

/// `act` applied to `x`.
pub fn activate(x: &Tensor, act: Act) -> Result<Tensor, TchError> {
    match act {
        Act::None => Ok(x.shallow_clone()),
        Act::Relu => x.f_relu(),
        Act::Relu6 => x.f_relu6(),
        Act::HSwish => x.f_hardswish(),
        Act::HSigmoid => x.f_hardsigmoid(),
    }
}

pub(super) const BN_MOMENTUM: f64 = 0.1;

pub(super) const BN_EPS: f64 = 1e-5;
