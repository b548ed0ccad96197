//! Activation layout (`csrc/layout.cpp`): a pass whose every conv is multiplicative (Mult, or
//! Shift's power-of-two conv) runs channels-last (NHWC) on the CPU, where oneDNN's convolutions
//! skip the reorders of every input and output and ATen's batch norm vectorises over channels;
//! measured in `experiments/RESULTS.md` (issue 17). The Add kernel works on NCHW, so passes with
//! Add layers stay NCHW. Values are those of the NCHW pass up to float rounding.
#![allow(unsafe_code)] // FFI to csrc/layout.cpp; each call is checked below

use std::ffi::c_char;

use tch::{Device, TchError, Tensor};
use torch_sys::C_tensor;

use super::adder::take;

unsafe extern "C" {
    fn shiftadd_channels_last(x: *const C_tensor, err: *mut *mut c_char) -> *mut C_tensor;
    fn shiftadd_is_channels_last(x: *const C_tensor) -> i32;
}

/// `x` (4-D) laid out channels-last; differentiable (the gradient returns in `x`'s layout).
pub fn channels_last(x: &Tensor) -> Result<Tensor, TchError> {
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `x` is a live tensor handle; the C side returns a new handle or sets `err`.
    let ptr = unsafe { shiftadd_channels_last(x.as_ptr(), &raw mut err) };
    take(ptr, err)
}

/// Whether `x` is laid out channels-last.
pub fn is_channels_last(x: &Tensor) -> bool {
    // SAFETY: `x` is a live tensor handle; the call only reads its strides.
    unsafe { shiftadd_is_channels_last(x.as_ptr()) == 1 }
}

/// Whether a pass over `x` should run channels-last: on the CPU, 4-D, and without Add layers.
pub fn pays(x: &Tensor, has_add: bool) -> bool {
    !has_add && x.device() == Device::Cpu && x.dim() == 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn channels_last_keeps_values_and_gradients() {
        tch::manual_seed(3);
        let x = Tensor::randn([2, 5, 4, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        // One channel is ambiguous (NCHW strides are channels-last contiguous too): it is restrided.
        let gray = Tensor::randn([2, 1, 4, 3], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&gray) && is_channels_last(&channels_last(&gray).expect("4-D")));
        assert!(!is_channels_last(&x));
        let y = channels_last(&x).expect("4-D");
        assert!(is_channels_last(&y) && y.equal(&x));
        // A conv of either layout gives the same values (up to rounding) and the same gradient.
        let w = Tensor::randn([6, 5, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |t: &Tensor| t.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let (a, b) = (conv(&x), conv(&y));
        assert!(is_channels_last(&b), "the layout propagates");
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
        let g = Tensor::randn(a.size(), (Kind::Float, Device::Cpu));
        let grad =
            |out: Tensor| Tensor::run_backward(&[(out * &g).sum(Kind::Float)], &[&x], false, false);
        let (ga, gb) = (grad(a).remove(0), grad(b).remove(0));
        assert!(ga.allclose(&gb, 1e-5, 1e-5, false));
        assert!(pays(&x, false) && !pays(&x, true) && !pays(&x.flatten(0, 1), false));
        assert!(
            channels_last(&x.flatten(0, 1)).is_err(),
            "3-D: a clear error"
        );
    }
}
