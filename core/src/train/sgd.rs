//! The optimiser and its schedule: SGD with (Nesterov) momentum, weight decay on conv / linear
//! weights only (the Add layers' at a rate of their own if the config sets one), checkpointable
//! by name and channel-permutable; linear warm-up then cosine. The
//! update of each parameter is one pass (`csrc/sgd.cpp`) with the roundings of the unfused ops;
//! on a GPU, one multi-tensor update per weight-decay group (few launches for the whole model).
#![allow(unsafe_code)] // FFI to csrc/sgd.cpp; each call is checked below

use std::ffi::c_char;

use tch::{TchError, Tensor, nn};
use torch_sys::C_tensor;

unsafe extern "C" {
    fn shiftadd_sgd_step(
        p: *mut C_tensor,
        g: *const C_tensor,
        buf: *mut C_tensor,
        lr: f64,
        momentum: f64,
        nesterov: i32,
        weight_decay: f64,
        err: *mut *mut c_char,
    ) -> i32;
    fn shiftadd_sgd_step_many(
        ps: *mut *mut C_tensor,
        gs: *mut *const C_tensor,
        bufs: *mut *mut C_tensor,
        n: i64,
        lr: f64,
        momentum: f64,
        nesterov: i32,
        weight_decay: f64,
        err: *mut *mut c_char,
    ) -> i32;
}

/// The C side's status: 0, or -1 with a malloc'd message (taken and freed here).
fn checked(rc: i32, err: *mut c_char) -> Result<(), TchError> {
    if rc == 0 {
        return Ok(());
    }
    Err(TchError::Torch(
        crate::ops::adder::take_string(err).unwrap_or_else(|| "sgd step failed".to_owned()),
    ))
}

use crate::model::{Net, Permutation};
use crate::spec::config::TrainConfig;

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to 0 at `total`.
pub fn lr_at(step: i64, warmup: i64, total: i64, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    0.5 * peak * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Whether weight decay applies to a parameter: conv and linear weights only — never BN
/// parameters, biases, or a remap's parameters (decay would pull `fc`'s matrix towards 0 instead
/// of the identity it starts at, and `cdf-affine`'s scales away from 1).
fn decays(name: &str, t: &Tensor) -> bool {
    t.dim() > 1 && !name.split('.').any(|part| part == "remap")
}

/// SGD with (Nesterov) momentum and decoupled-from-BN weight decay, in PyTorch's formulation:
/// `g += wd·p` (conv/linear weights only), `buf = μ·buf + g`, `d = g + μ·buf` (Nesterov) or `buf`,
/// `p -= lr·d`. Momentum buffers are named like their parameters, so they checkpoint by name.
pub struct Sgd {
    /// (name, parameter, its weight decay).
    params: Vec<(String, Tensor, f64)>,
    bufs: Vec<Tensor>,
    momentum: f64,
    nesterov: bool,
}

impl Sgd {
    pub fn new(vs: &nn::VarStore, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor, f64)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let decay = if decays(&name, &t) {
                    weight_decay.max(0.0)
                } else {
                    0.0
                };
                (name, t, decay)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let bufs = params.iter().map(|(_, t, _)| t.zeros_like()).collect();
        Self {
            params,
            bufs,
            momentum,
            nesterov,
        }
    }

    /// A run's optimiser: `train`'s momentum and weight decay over `vs`, the weights of `net`'s
    /// Add layers at `train.add_weight_decay` where it is set (AdderNet trains them at 5e-4).
    pub fn for_run(vs: &nn::VarStore, net: &Net, train: &TrainConfig) -> Self {
        let mut opt = Self::new(vs, train.momentum, train.nesterov, train.weight_decay);
        if let Some(wd) = train.add_weight_decay {
            for crate::model::AddWeight { name, .. } in net.add_weights() {
                let slot = opt.params.iter_mut().find(|(n, _, _)| *n == name);
                let (_, _, decay) = slot.unwrap_or_else(|| {
                    panic!("Add weight `{name}` is not a parameter of the store")
                });
                *decay = wd.max(0.0);
            }
        }
        opt
    }

    /// The weight decay applied to the named parameter (`None`: no such trained parameter).
    pub fn decay_of(&self, name: &str) -> Option<f64> {
        self.params
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, wd)| *wd)
    }

    pub fn zero_grad(&mut self) {
        for (_, p, _) in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn step(&mut self, lr: f64) {
        self.try_step(lr)
            .unwrap_or_else(|e| panic!("SGD update failed: {e}"));
    }

    /// [`Self::step`], with libtorch's error if an update fails (a device or dtype mismatch).
    /// Parameters on a GPU are updated per weight-decay group with multi-tensor ops (a few
    /// launches per group); on the CPU each in one pass with the unfused ops' roundings.
    pub fn try_step(&mut self, lr: f64) -> Result<(), TchError> {
        let on_gpu = self
            .params
            .first()
            .is_some_and(|(_, p, _)| p.device() != tch::Device::Cpu);
        if on_gpu {
            self.try_step_grouped(lr)
        } else {
            self.try_step_each(lr)
        }
    }

    fn try_step_each(&mut self, lr: f64) -> Result<(), TchError> {
        for ((_, p, wd), buf) in self.params.iter_mut().zip(self.bufs.iter_mut()) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let mut err: *mut c_char = std::ptr::null_mut();
            // SAFETY: all three are live tensor handles owned by this optimizer (p, buf) or just
            // returned by libtorch (g); the C side only reads g and writes p and buf in place.
            let rc = unsafe {
                shiftadd_sgd_step(
                    p.as_mut_ptr(),
                    g.as_ptr(),
                    buf.as_mut_ptr(),
                    lr,
                    self.momentum.max(0.0),
                    i32::from(self.nesterov),
                    *wd,
                    &raw mut err,
                )
            };
            checked(rc, err)?;
        }
        Ok(())
    }

    /// The update per weight-decay group in multi-tensor ops (what a GPU run takes).
    pub(crate) fn try_step_grouped(&mut self, lr: f64) -> Result<(), TchError> {
        let mut decays: Vec<f64> = self.params.iter().map(|(_, _, wd)| *wd).collect();
        decays.sort_by(f64::total_cmp);
        decays.dedup();
        for wd in decays {
            let (mut ps, mut gs, mut bs, mut grads) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((_, p, pwd), buf) in self.params.iter_mut().zip(self.bufs.iter_mut()) {
                if *pwd != wd {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                ps.push(p.as_mut_ptr());
                gs.push(g.as_ptr());
                bs.push(buf.as_mut_ptr());
                grads.push(g); // kept alive for the call
            }
            if ps.is_empty() {
                continue;
            }
            let mut err: *mut c_char = std::ptr::null_mut();
            // SAFETY: the arrays hold `ps.len()` live handles each (parameters and buffers owned
            // by this optimizer, gradients held in `grads`); the C side reads the gradients and
            // updates parameters and buffers in place.
            let rc = unsafe {
                shiftadd_sgd_step_many(
                    ps.as_mut_ptr(),
                    gs.as_mut_ptr(),
                    bs.as_mut_ptr(),
                    ps.len() as i64,
                    lr,
                    self.momentum.max(0.0),
                    i32::from(self.nesterov),
                    wd,
                    &raw mut err,
                )
            };
            checked(rc, err)?;
        }
        Ok(())
    }

    /// Apply a channel permutation to the momentum buffer of the named parameter.
    pub fn permute(&mut self, p: &Permutation) {
        if let Some(i) = self.params.iter().position(|(name, _, _)| *name == p.var) {
            tch::no_grad(|| {
                let sorted = self.bufs[i].index_select(p.dim, &p.perm);
                self.bufs[i].copy_(&sorted);
            });
        }
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.bufs)
            .map(|((name, _, _), b)| (name.clone(), b.shallow_clone()))
            .collect()
    }

    pub fn load_state(&mut self, saved: &[(String, Tensor)]) -> Result<(), String> {
        for ((name, _, _), buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let src = saved
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("optimizer state lacks `{name}`"))?;
            if src.size() != buf.size() {
                return Err(format!(
                    "optimizer state `{name}` has shape {:?}, expected {:?}",
                    src.size(),
                    buf.size()
                ));
            }
            tch::no_grad(|| buf.copy_(src));
        }
        Ok(())
    }
}
