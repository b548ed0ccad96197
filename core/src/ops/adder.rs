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
    fn shiftadd_adder_conv2d_part(
        x: *const C_tensor,
        f: *const C_tensor,
        gy: *const C_tensor,
        stride: i64,
        pad: i64,
        groups: i64,
        chunk: i64,
        imp: i64,
        which: i64,
        err: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn shiftadd_adder_cuda_available(t: *const C_tensor) -> i32;
    fn shiftadd_adder_cuda_ptx(arch: *const c_char, err: *mut *mut c_char) -> *mut c_char;
    fn shiftadd_cuda_mem_info(
        index: i64,
        free: *mut u64,
        total: *mut u64,
        err: *mut *mut c_char,
    ) -> i32;
    fn shiftadd_free_error(err: *mut c_char);
}

/// A string the C side malloc'd (a result or an error), copied and freed; `None` for null.
pub(crate) fn take_string(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer from the C side is a NUL-terminated string malloc'd there,
    // freed here once.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { shiftadd_free_error(p) };
    Some(text)
}

/// Turn the C side's (tensor, error) pair into a `Result`, taking ownership of both.
pub(crate) fn take(ptr: *mut C_tensor, err: *mut c_char) -> Result<Tensor, TchError> {
    if ptr.is_null() {
        Err(TchError::Torch(
            take_string(err).unwrap_or_else(|| "adder_conv2d failed".to_owned()),
        ))
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
    let geo = Geometry {
        stride,
        pad,
        groups,
        chunk,
    };
    Ok((
        adder_part(Impl::Auto, Part::InputGrad, x, f, gy, geo)?,
        adder_part(Impl::Auto, Part::WeightGrad, x, f, gy, geo)?,
    ))
}

/// Which implementation computes a part of the op (csrc/adder.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// What training runs: `Fast` for CPU float32, `Tiled` on CUDA where its kernels load, else
    /// `Reference`.
    Auto = 0,
    /// The formulation on ATen ops (im2col, chunked pairwise blocks).
    Reference = 1,
    /// The tiled kernels of csrc/adder_tiled.h: NVRTC-compiled on CUDA, each block's threads
    /// in turn on the CPU (float32 or float64).
    Tiled = 2,
    /// The CPU float32 kernel.
    Fast = 3,
}

/// One part of the op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Forward = 0,
    InputGrad = 1,
    WeightGrad = 2,
}

/// A call's stride, padding, groups and the reference formulation's temporary-block size.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub stride: i64,
    pub pad: i64,
    pub groups: i64,
    pub chunk: i64,
}

/// `part` of the op by `imp`, without autograd (for tests and benches): `Y`, or the raw `dX` /
/// `dF` for upstream gradient `gy` (ignored for `Y`).
pub fn adder_part(
    imp: Impl,
    part: Part,
    x: &Tensor,
    f: &Tensor,
    gy: &Tensor,
    geo: Geometry,
) -> Result<Tensor, TchError> {
    let mut err = std::ptr::null_mut();
    // SAFETY: the handles are live tch tensors for the duration of the call; `err` is a valid
    // out-pointer.
    let ptr = unsafe {
        shiftadd_adder_conv2d_part(
            x.as_ptr(),
            f.as_ptr(),
            gy.as_ptr(),
            geo.stride,
            geo.pad,
            geo.groups,
            geo.chunk,
            imp as i64,
            part as i64,
            &raw mut err,
        )
    };
    take(ptr, err)
}

/// The tiled kernels compiled by NVRTC to PTX for compute capability `arch` ("90" for an H100),
/// without a device: what a GPU compiles on its first Add layer. An error where NVRTC cannot be
/// loaded (a libtorch without CUDA) or the source does not compile (with NVRTC's log).
pub fn cuda_kernels_ptx(arch: &str) -> Result<String, TchError> {
    let arch = std::ffi::CString::new(arch)
        .map_err(|_| TchError::Torch("architecture with a NUL byte".into()))?;
    let mut err = std::ptr::null_mut();
    // SAFETY: `arch` is NUL-terminated; `err` is a valid out-pointer.
    let ptx = unsafe { shiftadd_adder_cuda_ptx(arch.as_ptr(), &raw mut err) };
    take_string(ptx)
        .ok_or_else(|| TchError::Torch(take_string(err).unwrap_or_else(|| "NVRTC failed".into())))
}

/// `(free, total)` bytes of CUDA device `index`, as the driver counts them (what every process
/// leaves free); an error where there is no driver or no such device.
pub fn cuda_memory(index: usize) -> Result<(u64, u64), TchError> {
    let (mut free, mut total) = (0u64, 0u64);
    let mut err = std::ptr::null_mut();
    // SAFETY: valid out-pointers for the duration of the call.
    let rc = unsafe {
        shiftadd_cuda_mem_info(
            i64::try_from(index).unwrap_or(i64::MAX),
            &raw mut free,
            &raw mut total,
            &raw mut err,
        )
    };
    if rc == 0 {
        return Ok((free, total));
    }
    let msg = if err.is_null() {
        "the CUDA driver cannot be asked".to_owned()
    } else {
        // SAFETY: a NUL-terminated string malloc'd by the C side, freed here once.
        let m = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { shiftadd_free_error(err) };
        m
    };
    Err(TchError::Torch(msg))
}

/// Whether the tiled kernels run on `t`'s CUDA device (the first call per device loads NVRTC and
/// the driver and compiles them; a reason they cannot is printed once on stderr). False on the CPU.
pub fn cuda_kernels_available(t: &Tensor) -> bool {
    // SAFETY: a live tch tensor handle.
    unsafe { shiftadd_adder_cuda_available(t.as_ptr()) != 0 }
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

    /// The shapes the tiled kernels are checked on: tiles cut at every edge (O not a multiple of
    /// 64, positions not of 64, K not of 16), groups with enough channels to tile, the direct
    /// forward (depthwise, few channels per group), stride 2, padding, 1×1, a 7×7 kernel.
    /// (N, C, H, W, O, k, stride, pad, groups).
    type Case = (i64, i64, i64, i64, i64, i64, i64, i64, i64);

    const TILED_CASES: [Case; 10] = [
        (2, 3, 7, 5, 20, 3, 1, 1, 1),
        (2, 16, 9, 11, 70, 3, 2, 1, 1),
        (1, 40, 10, 10, 130, 1, 1, 0, 1),
        (2, 32, 8, 9, 48, 3, 1, 1, 2),
        (3, 6, 8, 8, 6, 3, 1, 1, 6),
        (2, 5, 11, 7, 5, 5, 2, 2, 5),
        (2, 12, 17, 13, 12, 7, 2, 3, 12),
        (2, 4, 6, 6, 8, 3, 2, 0, 4),
        (1, 8, 5, 5, 16, 1, 1, 0, 1),
        (2, 9, 12, 12, 17, 3, 1, 2, 1),
    ];

    fn part(
        imp: Impl,
        which: Part,
        x: &Tensor,
        f: &Tensor,
        gy: &Tensor,
        (s, p, g): (i64, i64, i64),
    ) -> Tensor {
        let geo = Geometry {
            stride: s,
            pad: p,
            groups: g,
            chunk: DEFAULT_CHUNK_ELEMS,
        };
        adder_part(imp, which, x, f, gy, geo).expect("valid shapes")
    }

    /// The GPU's Add (csrc/adder_tiled.h), run on the CPU block by block in float64, against
    /// the formulas: forward, dX and dF, to rounding.
    #[test]
    fn tiled_kernels_match_the_formulas_in_float64() {
        tch::manual_seed(11);
        for (n, c, h, w, o, k, s, p, g) in TILED_CASES {
            let x = Tensor::randn([n, c, h, w], OPTS);
            let f = Tensor::randn([o, c / g, k, k], OPTS) * 0.5;
            let y = part(Impl::Tiled, Part::Forward, &x, &f, &x, (s, p, g));
            let gy = Tensor::randn(y.size(), OPTS);
            let (ry, rdx, rdf) = reference(&x, &f, s, p, g, &gy);
            let case = (n, c, h, w, o, k, s, p, g);
            assert!(y.allclose(&ry, 1e-10, 1e-10, false), "forward {case:?}");
            let dx = part(Impl::Tiled, Part::InputGrad, &x, &f, &gy, (s, p, g));
            assert!(dx.allclose(&rdx, 1e-10, 1e-10, false), "dX {case:?}");
            let df = part(Impl::Tiled, Part::WeightGrad, &x, &f, &gy, (s, p, g));
            assert!(df.allclose(&rdf, 1e-9, 1e-9, false), "dF {case:?}");
        }
    }

    /// The same kernels in float32 (the GPU's training precision) within float32 rounding.
    #[test]
    fn tiled_kernels_match_the_formulas_in_float32() {
        tch::manual_seed(12);
        let fopts = (Kind::Float, Device::Cpu);
        for (n, c, h, w, o, k, s, p, g) in TILED_CASES {
            let x = Tensor::randn([n, c, h, w], fopts);
            let f = Tensor::randn([o, c / g, k, k], fopts) * 0.5;
            let y = part(Impl::Tiled, Part::Forward, &x, &f, &x, (s, p, g));
            let gy = Tensor::randn(y.size(), fopts);
            let double = |t: &Tensor| t.to_kind(Kind::Double);
            let (ry, rdx, rdf) = reference(&double(&x), &double(&f), s, p, g, &double(&gy));
            let case = (n, c, h, w, o, k, s, p, g);
            let close = |a: &Tensor, b: &Tensor| double(a).allclose(b, 1e-4, 1e-4, false);
            assert!(close(&y, &ry), "forward {case:?}");
            let dx = part(Impl::Tiled, Part::InputGrad, &x, &f, &gy, (s, p, g));
            assert!(close(&dx, &rdx), "dX {case:?}");
            let df = part(Impl::Tiled, Part::WeightGrad, &x, &f, &gy, (s, p, g));
            assert!(close(&df, &rdf), "dF {case:?}");
        }
        // Mixed or integer operands are refused, naming the types; so is the fast kernel on float64.
        let x = Tensor::randn([1, 4, 5, 5], fopts);
        let f = Tensor::randn([4, 4, 3, 3], OPTS);
        let geo = Geometry {
            stride: 1,
            pad: 1,
            groups: 1,
            chunk: DEFAULT_CHUNK_ELEMS,
        };
        let err = adder_part(Impl::Tiled, Part::Forward, &x, &f, &x, geo)
            .expect_err("float and double")
            .to_string();
        assert!(err.contains("Float") && err.contains("Double"), "{err}");
        let xd = x.to_kind(Kind::Double);
        let err = adder_part(Impl::Fast, Part::Forward, &xd, &f, &xd, geo)
            .expect_err("fast is float32")
            .to_string();
        assert!(err.contains("float32"), "{err}");
        assert!(
            !cuda_kernels_available(&xd),
            "no CUDA kernels for a CPU tensor"
        );
    }

    /// The CUDA side of the same source compiles under NVRTC (a build whose libtorch has CUDA
    /// carries NVRTC; no device is needed to compile): every kernel the launcher looks up is in
    /// the PTX, for the compute capabilities of the machines the project is lent (H100/H200: 9.0)
    /// and an older one. Where libtorch has no CUDA, NVRTC's absence is what is reported.
    #[test]
    fn the_cuda_kernels_compile_under_nvrtc() {
        if !cfg!(libtorch_cuda) {
            let err = cuda_kernels_ptx("90").expect_err("no NVRTC without CUDA");
            assert!(err.to_string().contains("NVRTC"), "{err}");
            return;
        }
        for arch in ["90", "80"] {
            let ptx = cuda_kernels_ptx(arch).unwrap_or_else(|e| panic!("compute_{arch}: {e}"));
            assert!(ptx.contains(&format!(".target sm_{arch}")), "{arch}");
            for stem in [
                "sa_add_forward_tiled_",
                "sa_add_forward_direct_",
                "sa_add_input_grad_",
            ] {
                for suffix in ["f32", "f64"] {
                    assert!(
                        ptx.contains(&format!(".entry {stem}{suffix}")),
                        "{stem}{suffix} missing from the PTX for compute_{arch}"
                    );
                }
            }
        }
        let err = cuda_kernels_ptx("1").expect_err("no such architecture");
        assert!(err.to_string().contains("NVRTC"), "{err}");
    }

    /// The tiled kernels' memory bound (issue 42): beyond its inputs and outputs, forward and dX
    /// allocate one block's tiles per thread, and dF what the multiplicative conv's weight gradient
    /// needs (here ATen's CPU im2col of the batch, [N, C·k², L]) — never the
    /// [N, O, C·k², L] block of the pairwise formulation. Measured as the process's peak resident
    /// memory, reset before the calls (`/proc/self/clear_refs`), in a child process of this test
    /// binary so that no other test allocates meanwhile.
    #[test]
    fn tiled_kernels_stay_within_their_memory_bound() {
        if !crate::host::test_alone(
            "ops::adder::tests::tiled_kernels_stay_within_their_memory_bound",
        ) {
            return;
        }
        fn peak_kib() -> i64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmHWM")
        }
        // The pairwise block would be 4 × 128 × 576 × 1024 doubles = 2.4 GB.
        let (n, c, hw, o) = (4, 64, 32, 128);
        let x = Tensor::randn([n, c, hw, hw], OPTS);
        let f = Tensor::randn([o, c, 3, 3], OPTS);
        let gy = Tensor::randn([n, o, hw, hw], OPTS);
        let bytes = |t: &Tensor| t.numel() as i64 * 8;
        let operands = bytes(&x) + bytes(&f) + bytes(&gy);
        let pairwise = n * o * c * 9 * hw * hw * 8;
        let im2col = n * c * 9 * hw * hw * 8;
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (clear_refs)");
        let before = peak_kib();
        let y = part(Impl::Tiled, Part::Forward, &x, &f, &gy, (1, 1, 1));
        let dx = part(Impl::Tiled, Part::InputGrad, &x, &f, &gy, (1, 1, 1));
        let df = part(Impl::Tiled, Part::WeightGrad, &x, &f, &gy, (1, 1, 1));
        let grew = (peak_kib() - before) * 1024;
        let outputs = bytes(&y) + bytes(&dx) + bytes(&df);
        // Outputs, the weight gradient's im2col (and one copy for its GEMM), 32 MiB of slack for
        // threads' tiles, the allocator and libtorch's own buffers.
        let bound = outputs + 2 * im2col + (32 << 20);
        println!(
            "peak grew {:.1} MiB; bound {:.1} MiB; operands {:.1} MiB; the pairwise block {:.0} MiB",
            grew as f64 / 1048576.0,
            bound as f64 / 1048576.0,
            operands as f64 / 1048576.0,
            pairwise as f64 / 1048576.0
        );
        assert!(
            grew <= bound,
            "peak grew {grew} bytes, over the bound {bound}"
        );
        assert!(bound * 10 < pairwise, "the shape shows the bound");
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
