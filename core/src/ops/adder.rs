//! The AdderNet convolution: `Y = -Σ |X_patch - F|`, with the full-precision weight gradient
//! `X - F` and the HardTanh input gradient `clamp(F - X, -1, 1)` (method.md §2). The work is done
//! by a libtorch autograd function compiled from `csrc/adder.cpp`, so training code calls it like
//! any other differentiable op. Peak memory is bounded by chunking (see the C++ file).
#![allow(unsafe_code)] // FFI to csrc/adder.cpp; each call is checked below

use std::ffi::{CStr, c_char};

use tch::{TchError, Tensor};
use torch_sys::C_tensor;

pub use crate::spec::arch::GradScale;

/// Floats in one temporary block of the pairwise |X − F| computation (64 MiB).
pub const DEFAULT_CHUNK_ELEMS: i64 = 1 << 24;

unsafe extern "C" {
    fn shiftadd_adder_conv2d(
        x: *const C_tensor,
        f: *const C_tensor,
        sink: *const C_tensor,
        stride: i64,
        pad: i64,
        groups: i64,
        chunk: i64,
        eta: f64,
        relative: i32,
        err: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn shiftadd_adder_conv2d_backward(
        x: *const C_tensor,
        f: *const C_tensor,
        gy: *const C_tensor,
        stride: i64,
        pad: i64,
        groups: i64,
        chunk: i64,
        which: i64,
        err: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn shiftadd_free_error(err: *mut c_char);
}

/// Turn the C side's (tensor, error) pair into a `Result`, taking ownership of both.
pub(crate) fn take(ptr: *mut C_tensor, err: *mut c_char) -> Result<Tensor, TchError> {
    if ptr.is_null() {
        let msg = if err.is_null() {
            "adder_conv2d failed".to_owned()
        } else {
            // SAFETY: a non-null `err` is a NUL-terminated string malloc'd by the C side, freed here once.
            let msg = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
            unsafe { shiftadd_free_error(err) };
            msg
        };
        Err(TchError::Torch(msg))
    } else {
        // SAFETY: a non-null result is a fresh heap `at::Tensor*`, the handle type tch owns and frees.
        Ok(unsafe { Tensor::from_ptr(ptr) })
    }
}

/// Differentiable adder convolution of `x` [N, C, H, W] with `f` [O, C/groups, k, k], raw gradients.
pub fn adder_conv2d(
    x: &Tensor,
    f: &Tensor,
    stride: i64,
    pad: i64,
    groups: i64,
) -> Result<Tensor, TchError> {
    adder_conv2d_chunked(
        x,
        f,
        stride,
        pad,
        groups,
        DEFAULT_CHUNK_ELEMS,
        GradScale::NONE,
    )
}

/// [`adder_conv2d`] whose backward applies AdderNet's adaptive scaling `scale` to dF. `sink`, when
/// given, must have `f`'s shape; its values are not read, and it receives the *raw* dF: a weight
/// remap passes its own parameters' path there, so that they learn from the unscaled gradient
/// while the shared weights get AdderNet's scaled one.
pub fn adder_conv2d_scaled(
    x: &Tensor,
    f: &Tensor,
    sink: Option<&Tensor>,
    stride: i64,
    pad: i64,
    groups: i64,
    scale: GradScale,
) -> Result<Tensor, TchError> {
    if let Some(t) = sink.filter(|t| t.size() != f.size()) {
        return Err(TchError::Shape(format!(
            "adder_conv2d: gradient sink {:?} differs from the weight {:?}",
            t.size(),
            f.size()
        )));
    }
    call_forward(x, f, sink, stride, pad, groups, DEFAULT_CHUNK_ELEMS, scale)
}

/// [`adder_conv2d_scaled`] with an explicit temporary-block size (tests use small ones to exercise chunking).
pub fn adder_conv2d_chunked(
    x: &Tensor,
    f: &Tensor,
    stride: i64,
    pad: i64,
    groups: i64,
    chunk: i64,
    scale: GradScale,
) -> Result<Tensor, TchError> {
    call_forward(x, f, None, stride, pad, groups, chunk, scale)
}

#[allow(clippy::too_many_arguments)] // the C signature, in one place
fn call_forward(
    x: &Tensor,
    f: &Tensor,
    sink: Option<&Tensor>,
    stride: i64,
    pad: i64,
    groups: i64,
    chunk: i64,
    scale: GradScale,
) -> Result<Tensor, TchError> {
    let mut err = std::ptr::null_mut();
    let sink = sink.map_or(std::ptr::null(), Tensor::as_ptr);
    // SAFETY: the handles are live tch tensors (or null for `sink`) for the duration of the call;
    // `err` is a valid out-pointer.
    let ptr = unsafe {
        shiftadd_adder_conv2d(
            x.as_ptr(),
            f.as_ptr(),
            sink,
            stride,
            pad,
            groups,
            chunk,
            scale.eta,
            i32::from(scale.relative),
            &raw mut err,
        )
    };
    take(ptr, err)
}

/// The explicit gradients `(dX, dF)` for upstream gradient `gy` (what autograd computes).
pub fn adder_conv2d_backward(
    x: &Tensor,
    f: &Tensor,
    gy: &Tensor,
    stride: i64,
    pad: i64,
    groups: i64,
    chunk: i64,
) -> Result<(Tensor, Tensor), TchError> {
    let call = |which: i64| {
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `adder_conv2d_chunked`.
        let ptr = unsafe {
            shiftadd_adder_conv2d_backward(
                x.as_ptr(),
                f.as_ptr(),
                gy.as_ptr(),
                stride,
                pad,
                groups,
                chunk,
                which,
                &raw mut err,
            )
        };
        take(ptr, err)
    };
    Ok((call(0)?, call(1)?))
}

/// The usual AdderNet formulation, written naively with unfold (im2col) on whole tensors: the
/// pairwise `|X − F|` block `[N, G, O/G, C/G·k², L]` exists in full, in forward and again in
/// backward. It is the reference the fast kernel is tested and benchmarked against, never used
/// for training.
pub mod unfold {
    use tch::Tensor;

    /// `(cols [N, G, 1, K, L], filters [1, G, O/G, K, 1], output H×W)`.
    fn operands(x: &Tensor, f: &Tensor, s: i64, p: i64, g: i64) -> (Tensor, Tensor, (i64, i64)) {
        let (n, _, h, w) = x.size4().expect("input is [N, C, H, W]");
        let (o, cg, kh, kw) = f.size4().expect("weight is [O, C/G, k, k]");
        let cols = x.im2col([kh, kw], [1, 1], [p, p], [s, s]); // [N, C·k², L]
        let l = cols.size()[2];
        let k = cg * kh * kw;
        let (ho, wo) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
        debug_assert_eq!(ho * wo, l);
        (
            cols.view([n, g, 1, k, l]),
            f.view([1, g, o / g, k, 1]),
            (ho, wo),
        )
    }

    /// `Y = −Σ_k |X_patch − F|`.
    pub fn forward(x: &Tensor, f: &Tensor, s: i64, p: i64, g: i64) -> Tensor {
        let (xc, fc, (ho, wo)) = operands(x, f, s, p, g);
        let y = -(&xc - &fc).abs().sum_dim_intlist(3, false, x.kind()); // [N, G, O/G, L]
        y.view([x.size()[0], f.size()[0], ho, wo])
    }

    /// `(dX, dF)` for the upstream gradient `gy`: `dF = Σ gy·(X − F)`,
    /// `dX = col2im(Σ_o gy·clamp(F − X, −1, 1))`.
    pub fn backward(
        x: &Tensor,
        f: &Tensor,
        gy: &Tensor,
        s: i64,
        p: i64,
        g: i64,
    ) -> (Tensor, Tensor) {
        let (n, c, h, w) = x.size4().expect("input is [N, C, H, W]");
        let (_, _, kh, kw) = f.size4().expect("weight is [O, C/G, k, k]");
        let (xc, fc, _) = operands(x, f, s, p, g);
        let (og, l) = (fc.size()[2], xc.size()[4]);
        let go = gy.reshape([n, g, og, 1, l]);
        let df = (&go * (&xc - &fc)).sum_dim_intlist(&[0i64, 4][..], false, x.kind()); // [G, O/G, K]
        let dcols = (&go * (&fc - &xc).clamp(-1.0, 1.0)).sum_dim_intlist(2, false, x.kind()); // [N, G, K, L]
        let dx = dcols
            .view([n, c * kh * kw, l])
            .col2im([h, w], [kh, kw], [1, 1], [p, p], [s, s]);
        (dx, df.view(f.size().as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn reference(
        x: &Tensor,
        f: &Tensor,
        s: i64,
        p: i64,
        g: i64,
        gy: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let y = unfold::forward(x, f, s, p, g);
        let (dx, df) = unfold::backward(x, f, gy, s, p, g);
        (y, dx, df)
    }

    #[test]
    fn forward_and_both_gradients_match_the_formulas() {
        tch::manual_seed(3);
        // (N, C, H, W, O, k, stride, pad, groups) — odd sizes, stride 2, padding, groups, depthwise.
        let cases = [
            (2, 3, 7, 5, 4, 3, 1, 1, 1),
            (3, 4, 9, 8, 6, 3, 2, 1, 2),
            (2, 6, 8, 8, 6, 3, 1, 1, 6),
            (2, 5, 11, 7, 5, 5, 2, 2, 5),
            (1, 8, 5, 5, 16, 1, 1, 0, 1),
            (2, 4, 6, 6, 8, 3, 2, 0, 4),
        ];
        for (n, c, h, w, o, k, s, p, g) in cases {
            let mut x = Tensor::randn([n, c, h, w], OPTS).set_requires_grad(true);
            let mut f = (Tensor::randn([o, c / g, k, k], OPTS) * 0.5).set_requires_grad(true);
            for chunk in [DEFAULT_CHUNK_ELEMS, 7] {
                let y = adder_conv2d_chunked(&x, &f, s, p, g, chunk, GradScale::NONE)
                    .expect("valid shapes");
                let gy = Tensor::randn(y.size(), OPTS);
                let (ry, rdx, rdf) = reference(&x.detach(), &f.detach(), s, p, g, &gy);
                assert!(
                    y.allclose(&ry, 1e-9, 1e-9, false),
                    "forward {:?}",
                    (n, c, h, w, o, k, s, p, g)
                );
                x.zero_grad();
                f.zero_grad();
                (&y * &gy).sum(Kind::Double).backward();
                assert!(
                    x.grad().allclose(&rdx, 1e-9, 1e-9, false),
                    "dX {:?}",
                    (c, k, s, p, g)
                );
                assert!(
                    f.grad().allclose(&rdf, 1e-9, 1e-9, false),
                    "dF {:?}",
                    (c, k, s, p, g)
                );
                let (dx, df) = adder_conv2d_backward(&x.detach(), &f.detach(), &gy, s, p, g, chunk)
                    .expect("ok");
                assert!(
                    dx.allclose(&rdx, 1e-9, 1e-9, false) && df.allclose(&rdf, 1e-9, 1e-9, false)
                );
            }
        }
    }

    /// The float32 CPU kernel against the double-precision formulas, multi-threaded.
    #[test]
    fn fast_float_kernel_matches_the_formulas() {
        tch::manual_seed(7);
        let cases = [
            (3, 3, 7, 5, 5, 3, 1, 1, 1),
            (4, 4, 9, 8, 6, 3, 2, 1, 2),
            (3, 6, 8, 8, 6, 3, 1, 1, 6),
            (2, 5, 11, 7, 5, 5, 2, 2, 5),
            (5, 8, 5, 5, 16, 1, 1, 0, 1),
            (2, 16, 12, 12, 24, 1, 1, 0, 1),
            (2, 4, 6, 6, 8, 3, 2, 0, 4),
            (2, 12, 17, 13, 12, 7, 2, 3, 12),
            (1, 9, 6, 6, 9, 3, 1, 1, 9),
            (3, 7, 4, 9, 7, 5, 1, 2, 7),
        ];
        let fopts = (Kind::Float, Device::Cpu);
        for (n, c, h, w, o, k, s, p, g) in cases {
            let mut x = Tensor::randn([n, c, h, w], fopts).set_requires_grad(true);
            let mut f = (Tensor::randn([o, c / g, k, k], fopts) * 0.5).set_requires_grad(true);
            let y = adder_conv2d(&x, &f, s, p, g).expect("valid shapes");
            let gy = Tensor::randn(y.size(), fopts);
            let (ry, rdx, rdf) = reference(
                &x.detach().to_kind(Kind::Double),
                &f.detach().to_kind(Kind::Double),
                s,
                p,
                g,
                &gy.to_kind(Kind::Double),
            );
            let close =
                |a: &Tensor, b: &Tensor| a.to_kind(Kind::Double).allclose(b, 1e-4, 1e-4, false);
            assert!(close(&y, &ry), "forward {:?}", (n, c, h, w, o, k, s, p, g));
            x.zero_grad();
            f.zero_grad();
            (&y * &gy).sum(Kind::Float).backward();
            assert!(close(&x.grad(), &rdx), "dX {:?}", (c, k, s, p, g));
            assert!(close(&f.grad(), &rdf), "dF {:?}", (c, k, s, p, g));
        }
    }

    /// An input that needs no gradient gets none computed; the weight's is as when it does.
    #[test]
    fn no_input_gradient_where_none_is_needed() {
        tch::manual_seed(6);
        let fopts = (Kind::Float, Device::Cpu);
        for (c, o, k, s, p, g) in [
            (6, 8, 1, 1, 0, 1),
            (6, 8, 3, 1, 1, 2),
            (12, 12, 3, 2, 1, 12),
        ] {
            let x = Tensor::randn([3, c, 8, 8], fopts);
            let f = (Tensor::randn([o, c / g, k, k], fopts) * 0.5).set_requires_grad(true);
            let y = adder_conv2d(&x, &f, s, p, g).expect("valid shapes");
            let gy = Tensor::randn(y.size(), fopts);
            (&y * &gy).sum(Kind::Float).backward();
            let xg = x.copy().set_requires_grad(true);
            let f2 = f.detach().copy().set_requires_grad(true);
            let y2 = adder_conv2d(&xg, &f2, s, p, g).expect("valid shapes");
            (&y2 * &gy).sum(Kind::Float).backward();
            assert!(!x.grad().defined(), "no dX for an input without gradient");
            assert!(xg.grad().defined());
            // The same sums (fast-math may vectorise the shorter loop differently).
            assert!(
                f.grad().allclose(&f2.grad(), 1e-5, 1e-5, false),
                "dF {:?}",
                (c, o, k, s, p, g)
            );
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_crashes() {
        let x = Tensor::zeros([1, 3, 4, 4], (Kind::Float, Device::Cpu));
        let f = Tensor::zeros([2, 2, 3, 3], (Kind::Float, Device::Cpu));
        let err = adder_conv2d(&x, &f, 1, 1, 1)
            .expect_err("3 channels vs 2")
            .to_string();
        assert!(err.contains("channels"), "{err}");
        assert!(
            !err.contains("frame #"),
            "no C++ backtrace in messages: {err}"
        );
    }

    /// AdderNet's scaling of one call: the raw dF rescaled to norm η·√numel (times rms(F) when
    /// relative), the direction kept, dX untouched.
    #[test]
    fn adaptive_scaling_rescales_this_calls_weight_gradient() {
        tch::manual_seed(5);
        let fopts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([2, 4, 6, 6], fopts);
        let f0 = Tensor::randn([5, 4, 3, 3], fopts) * 0.1;
        let gy = Tensor::randn([2, 5, 6, 6], fopts);
        let (rdx, rdf) = adder_conv2d_backward(&x, &f0, &gy, 1, 1, 1, DEFAULT_CHUNK_ELEMS)
            .expect("valid shapes");
        let rms = f0.square().mean(Kind::Float).sqrt().double_value(&[]);
        for (relative, expect_norm) in [
            (false, 0.2 * 180f64.sqrt()),
            (true, 0.2 * 180f64.sqrt() * rms),
        ] {
            let mut x = x.copy().set_requires_grad(true);
            let mut f = f0.copy().set_requires_grad(true);
            x.zero_grad();
            f.zero_grad();
            let scale = GradScale { eta: 0.2, relative };
            let y = adder_conv2d_scaled(&x, &f, None, 1, 1, 1, scale).expect("valid shapes");
            (&y * &gy).sum(Kind::Float).backward();
            let g = f.grad();
            let norm = g.norm().double_value(&[]);
            assert!(
                (norm - expect_norm).abs() < 1e-4 * expect_norm,
                "{norm} vs {expect_norm}"
            );
            let cos = (&g * &rdf).sum(Kind::Float).double_value(&[])
                / (norm * rdf.norm().double_value(&[]));
            assert!(cos > 0.9999, "direction kept: cos {cos}");
            assert!(
                x.grad().allclose(&rdx, 1e-5, 1e-5, false),
                "dX is not scaled"
            );
        }
        // A sink (a remap's parameter path) gets the raw dF while the weight gets the scaled one.
        let f = f0.copy().set_requires_grad(true);
        let sink = f0.copy().set_requires_grad(true);
        let scale = GradScale {
            eta: 0.2,
            relative: true,
        };
        let y = adder_conv2d_scaled(&x, &f, Some(&sink), 1, 1, 1, scale).expect("valid shapes");
        (&y * &gy).sum(Kind::Float).backward();
        assert!(
            sink.grad().allclose(&rdf, 1e-5, 1e-5, false),
            "the sink's gradient is raw"
        );
        let norm = f.grad().norm().double_value(&[]);
        let expect = 0.2 * 180f64.sqrt() * rms;
        assert!((norm - expect).abs() < 1e-4 * expect, "{norm} vs {expect}");
        let wrong = Tensor::zeros([5, 4, 1, 1], fopts);
        assert!(adder_conv2d_scaled(&x, &f, Some(&wrong), 1, 1, 1, scale).is_err());
    }
}
