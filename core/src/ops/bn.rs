//! Training-mode batch norm fused with the ReLU6 after it (`csrc/bn.cpp`): one autograd node and
//! two passes over the activation each way, where ATen's `batch_norm` + `relu6` take five forward
//! and three backward with a full-size temporary in between (issue 17). CPU float32 activations
//! in NCHW or channels-last; anything else runs those ATen ops. Values agree with them up to float
//! rounding (tests below); the running statistics are updated as ATen does (unbiased variance).
#![allow(unsafe_code)] // FFI to csrc/bn.cpp; each call is checked below

use std::ffi::c_char;

use tch::{TchError, Tensor};
use torch_sys::C_tensor;

use super::adder::take;

unsafe extern "C" {
    fn shiftadd_bn_relu6(
        x: *const C_tensor,
        w: *const C_tensor,
        b: *const C_tensor,
        rm: *const C_tensor,
        rv: *const C_tensor,
        momentum: f64,
        eps: f64,
        relu6: i32,
        fused: i32,
        err: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// A batch norm's parameters and running statistics, each [C] (the statistics updated in place).
pub struct BnParams<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub momentum: f64,
    pub eps: f64,
}

impl<'a> BnParams<'a> {
    pub fn new(
        weight: &'a Tensor,
        bias: &'a Tensor,
        running_mean: &'a Tensor,
        running_var: &'a Tensor,
        momentum: f64,
        eps: f64,
    ) -> Self {
        Self {
            weight,
            bias,
            running_mean,
            running_var,
            momentum,
            eps,
        }
    }
}

/// Training-mode batch norm of `x` [N, C, H, W] over (N, H, W), then ReLU6 when `relu6`.
pub fn batch_norm_train(x: &Tensor, p: &BnParams<'_>, relu6: bool) -> Result<Tensor, TchError> {
    call(x, p, relu6, true)
}

/// [`batch_norm_train`] computed by the ATen ops it replaces (the reference in tests and benches).
pub fn batch_norm_train_unfused(
    x: &Tensor,
    p: &BnParams<'_>,
    relu6: bool,
) -> Result<Tensor, TchError> {
    call(x, p, relu6, false)
}

fn call(x: &Tensor, p: &BnParams<'_>, relu6: bool, fused: bool) -> Result<Tensor, TchError> {
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: every handle is a live tch tensor for the duration of the call; `err` is a valid
    // out-pointer; the C side returns a new handle or sets `err`.
    let ptr = unsafe {
        shiftadd_bn_relu6(
            x.as_ptr(),
            p.weight.as_ptr(),
            p.bias.as_ptr(),
            p.running_mean.as_ptr(),
            p.running_var.as_ptr(),
            p.momentum,
            p.eps,
            i32::from(relu6),
            i32::from(fused),
            &raw mut err,
        )
    };
    take(ptr, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout;
    use tch::{Device, Kind};

    struct Case {
        x: Tensor,
        w: Tensor,
        b: Tensor,
        rm: Tensor,
        rv: Tensor,
    }

    impl Case {
        fn new(shape: [i64; 4], offset: f64, spread: f64) -> Self {
            let c = shape[1];
            let f = (Kind::Float, Device::Cpu);
            Self {
                x: Tensor::randn(shape, f) * spread + offset,
                w: (Tensor::rand([c], f) + 0.5).set_requires_grad(true),
                b: (Tensor::randn([c], f) * 2.0).set_requires_grad(true),
                rm: Tensor::randn([c], f),
                rv: Tensor::rand([c], f) + 0.5,
            }
        }

        /// (y, dx, dw, db, running mean, running var) of one forward/backward with incoming
        /// gradient `g`: fused, or ATen's ops in float64 (the reference), as float32.
        fn run(&self, g: &Tensor, relu6: bool, fused: bool) -> [Tensor; 6] {
            let kind = if fused { Kind::Float } else { Kind::Double };
            // A copy: the running statistics are updated in place.
            let at = |t: &Tensor| t.detach().to_kind(kind).copy();
            let (rm, rv, g) = (at(&self.rm), at(&self.rv), at(g));
            let (x, w, b) = (
                at(&self.x).set_requires_grad(true),
                at(&self.w).set_requires_grad(true),
                at(&self.b).set_requires_grad(true),
            );
            let p = BnParams::new(&w, &b, &rm, &rv, 0.1, 1e-5);
            let xin = if layout::is_channels_last(&self.x) {
                layout::channels_last(&x).expect("4-D")
            } else {
                x.shallow_clone()
            };
            let y = if fused {
                batch_norm_train(&xin, &p, relu6)
            } else {
                batch_norm_train_unfused(&xin, &p, relu6)
            }
            .expect("bn");
            let grads = Tensor::run_backward(&[(&y * &g).sum(kind)], &[&x, &w, &b], false, false);
            let [dx, dw, db]: [Tensor; 3] = grads.try_into().expect("three gradients");
            [y.detach(), dx, dw, db, rm, rv].map(|t| t.to_kind(Kind::Float))
        }
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let err = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        assert!(
            err <= 2e-5 * scale,
            "{what}: max error {err} (scale {scale})"
        );
    }

    /// The fused op against ATen's in float64 (ATen's float32 is itself off by ~1e-4 where the
    /// mean is far from 0).
    fn agree(case: &Case, relu6: bool) {
        // One incoming gradient for both, different at every element.
        let g = Tensor::randn(case.x.size(), (Kind::Float, Device::Cpu));
        let fused = case.run(&g, relu6, true);
        let aten = case.run(&g, relu6, false);
        for (i, what) in ["y", "dx", "dweight", "dbias", "running mean", "running var"]
            .iter()
            .enumerate()
        {
            close(&fused[i], &aten[i], what);
        }
    }

    #[test]
    fn fused_batch_norm_agrees_with_aten_in_either_layout() {
        tch::manual_seed(5);
        for relu6 in [true, false] {
            // NCHW, several planes and a tail that is not a multiple of the vector width.
            agree(&Case::new([6, 5, 7, 3], 1.0, 2.0), relu6);
            // Channels-last (the multiplicative passes' layout).
            let mut c = Case::new([4, 12, 5, 5], 0.5, 3.0);
            c.x = layout::channels_last(&c.x).expect("4-D");
            agree(&c, relu6);
            // An Add layer's outputs: far from 0, small spread (the shifted statistics keep the variance).
            agree(&Case::new([8, 4, 4, 4], -500.0, 0.5), relu6);
            // 1×1 planes (both layouts at once).
            agree(&Case::new([16, 9, 1, 1], 0.0, 1.0), relu6);
        }
    }

    #[test]
    fn what_the_fused_path_does_not_take_still_runs() {
        // A double activation is not fusable: ATen's ops answer.
        let f = (Kind::Double, Device::Cpu);
        let x = Tensor::randn([4, 3, 2, 2], f);
        let (w, b, rm, rv) = (
            Tensor::ones([3], f),
            Tensor::zeros([3], f),
            Tensor::zeros([3], f),
            Tensor::ones([3], f),
        );
        let p = BnParams::new(&w, &b, &rm, &rv, 0.1, 1e-5);
        let y = batch_norm_train(&x, &p, true).expect("double runs unfused");
        assert_eq!(y.kind(), Kind::Double);
        assert!(y.min().double_value(&[]) >= 0.0 && y.max().double_value(&[]) <= 6.0);
        // Neither NCHW nor channels-last (a transposed view): ATen's ops, the same values.
        let xf = Tensor::randn([4, 3, 5, 2], (Kind::Float, Device::Cpu)).transpose(2, 3);
        let (w, b) = (w.to_kind(Kind::Float), b.to_kind(Kind::Float));
        let (rm, rv) = (b.copy(), w.copy());
        let p = BnParams::new(&w, &b, &rm, &rv, 0.1, 1e-5);
        let y = batch_norm_train(&xf, &p, false).expect("strided runs unfused");
        let z = batch_norm_train_unfused(&xf, &p, false).expect("aten");
        assert!(y.equal(&z), "the same ATen ops");
    }
}
