//! Multiplication-free operators (method.md §2) and the weight remap (§5).
//!
//! - [`adder`]: AdderNet convolution, a libtorch autograd function in `csrc/adder.cpp`; on CUDA
//!   the tiled kernels of `csrc/adder_tiled.h`, compiled by NVRTC ([`adder_bench`] compares them).
//! - [`shift`]: DeepShift-Q power-of-two weights and 16.16 fixed-point activations, both with
//!   straight-through gradients.
//! - [`remap`]: heterogeneous weight sharing — the stored (multiplicative) weights mapped to the
//!   MF operator's distribution on the fly.
//! - [`stats`]: histograms and distribution statistics of weights (the discrepancy records).
//! - [`bn`]: training-mode batch norm fused with its ReLU6 (`csrc/bn.cpp`).
//! - [`layout`]: channels-last activations for the all-multiplicative passes on the CPU.

pub mod adder;
pub mod adder_bench;
pub mod bn;
pub mod layout;
pub mod remap;
pub mod shift;
pub mod stats;

/// `a + (b - a).detach()`: the value of `b` with the gradient of `a` (straight-through).
pub fn straight_through(a: &tch::Tensor, b: &tch::Tensor) -> tch::Tensor {
    a + (b - a).detach()
}
