//! DeepShift-Q (method.md §2, "Shift"): weights become signed powers of two,
//! `Wq = sign(W)·2^p`, `p = clamp(round(log2|W|), −(2^(b−1)−1), 0)`; magnitudes below the smallest
//! power map to it and zero maps to `+2^pmin`. Gradients pass straight through. Optionally the
//! layer input is rounded to 16.16 fixed point, also straight-through.
//!
//! Both maps run as one autograd function (`csrc/shift.cpp`): a single pass forward, the gradient
//! passed through untouched backward — no `x + (q − x).detach()` temporaries.
#![allow(unsafe_code)] // FFI to csrc/shift.cpp; the call is checked below

use std::ffi::c_char;

use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn shiftadd_straight_through(
        x: *const C_tensor,
        op: i64,
        arg: i64,
        err: *mut *mut c_char,
    ) -> *mut C_tensor;
}

const OP_FIXED_16_16: i64 = 0;
const OP_POW2: i64 = 1;

/// `q(x)` with a straight-through gradient (see `csrc/shift.cpp` for the maps).
fn straight_through_map(x: &Tensor, op: i64, arg: i64) -> Tensor {
    let mut err = std::ptr::null_mut();
    // SAFETY: `x` is a live tch tensor for the duration of the call; `err` is a valid out-pointer.
    let ptr = unsafe { shiftadd_straight_through(x.as_ptr(), op, arg, &raw mut err) };
    // The maps accept every tensor (other dtypes and devices take an ATen path), so an error here
    // is a broken invariant (e.g. out of memory), not bad user input.
    super::adder::take(ptr, err).unwrap_or_else(|e| panic!("shift map failed: {e}"))
}

/// Smallest exponent for `bits`-bit shift weights (bits = 5 gives −15).
pub fn min_exponent(bits: i64) -> i64 {
    -((1i64 << (bits - 1)) - 1)
}

/// The power-of-two values themselves (no gradient path).
pub fn quantize(w: &Tensor, bits: i64) -> Tensor {
    tch::no_grad(|| straight_through_map(w, OP_POW2, min_exponent(bits)))
}

/// Power-of-two weights with a straight-through gradient to `w`.
pub fn shift_weight(w: &Tensor, bits: i64) -> Tensor {
    straight_through_map(w, OP_POW2, min_exponent(bits))
}

/// Round to 16.16 fixed point (multiples of 2⁻¹⁶), straight-through.
pub fn fixed_point_16_16(x: &Tensor) -> Tensor {
    straight_through_map(x, OP_FIXED_16_16, 0)
}

/// Whether every element is ±2^p with p in [min_exponent(bits), 0] (used by export checks).
pub fn all_powers_of_two(values: &[f32], bits: i64) -> bool {
    let pmin = min_exponent(bits) as i32;
    values.iter().all(|&v| {
        let a = v.abs();
        let p = a.log2().round() as i32;
        (pmin..=0).contains(&p) && a == 2f32.powi(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn rounds_in_the_log_domain_and_clamps() {
        let w = Tensor::from_slice(&[0.3f32, -0.3, 0.0, 1e-9, -1e-9, 5.0, 0.7, -0.125, 0.36]);
        let q = Vec::<f32>::try_from(quantize(&w, 5)).expect("f32");
        let m = 2f32.powi(-15);
        // log2(0.3) = −1.74 → −2; log2(0.7) = −0.51 → −1; log2(0.36) = −1.47 → −1.
        assert_eq!(q, vec![0.25, -0.25, m, m, -m, 1.0, 0.5, -0.125, 0.5]);
        assert!(all_powers_of_two(&q, 5));
        assert!(!all_powers_of_two(&[0.3], 5));
        let q3 = Vec::<f32>::try_from(quantize(&Tensor::from_slice(&[0.01f32]), 3)).expect("f32");
        assert_eq!(q3, vec![0.125], "3 bits: p ≥ −3");
    }

    /// The single-pass float kernel against the formulas written with tensor ops.
    #[test]
    fn the_float_kernel_matches_the_formulas() {
        tch::manual_seed(2);
        let w = Tensor::randn([4096], (Kind::Float, tch::Device::Cpu)) * 0.3;
        let w = Tensor::cat(
            &[w, Tensor::from_slice(&[0.0f32, -0.0, 1e-30, 8.0, -3.0])],
            0,
        );
        for bits in [3, 5, 8] {
            let pmin = min_exponent(bits) as f64;
            let sign = w.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0;
            let p = w
                .abs()
                .clamp_min(pmin.exp2())
                .log2()
                .round()
                .clamp(pmin, 0.0);
            let expected = Vec::<f32>::try_from(sign * p.exp2()).expect("f32");
            let got = Vec::<f32>::try_from(quantize(&w, bits)).expect("f32");
            let v = Vec::<f32>::try_from(&w).expect("f32");
            for ((g, e), x) in got.iter().zip(&expected).zip(&v) {
                // Only a value within float error of a rounding boundary may differ.
                let frac = (x.abs().max(pmin.exp2() as f32).log2().fract()).abs();
                assert!(
                    g == e || (frac - 0.5).abs() < 1e-5,
                    "{x}: {g} vs {e} ({bits} bits)"
                );
            }
            // The double (ATen) path gives the same values.
            let d = Vec::<f64>::try_from(quantize(&w.to_kind(Kind::Double), bits)).expect("f64");
            assert!(
                d.iter()
                    .zip(&got)
                    .filter(|(a, b)| **a as f32 != **b)
                    .count()
                    <= 2
            );
        }
        let x = Tensor::randn([5000], (Kind::Float, tch::Device::Cpu)) * 100.0;
        let expected = (&x * 65536.0).round() / 65536.0;
        assert!(fixed_point_16_16(&x).equal(&expected));
        // Ties (to even), either side of 2^23 / 2^16, signed zeros, inf and NaN, bit for bit, at
        // every offset of the vector loop (its 8-lane body and scalar tail).
        let u = 1.0f32 / 65536.0;
        let edge = [
            0.5 * u,
            1.5 * u,
            2.5 * u,
            -0.5 * u,
            -2.5 * u,
            127.99998,
            128.0,
            128.00002,
            4096.5,
            -4096.5,
            3.0e38,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-30,
        ];
        for skip in 0..9 {
            let v: Vec<f32> = edge
                .iter()
                .cycle()
                .skip(skip)
                .take(edge.len() * 3)
                .copied()
                .collect();
            let got =
                Vec::<f32>::try_from(fixed_point_16_16(&Tensor::from_slice(&v))).expect("f32");
            for (x, g) in v.iter().zip(&got) {
                let e = (x * 65536.0).round_ties_even() / 65536.0;
                assert!(
                    g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()),
                    "{x}: {g} vs {e}"
                );
            }
        }
        assert!(
            fixed_point_16_16(&x.to_kind(Kind::Double))
                .to_kind(Kind::Float)
                .allclose(&expected, 0.0, 1e-5, false)
        );
    }

    #[test]
    fn gradients_pass_straight_through() {
        let w = Tensor::from_slice(&[0.3f32, -0.7]).set_requires_grad(true);
        let x = Tensor::from_slice(&[1.0f32 / 3.0, 2.0]).set_requires_grad(true);
        (shift_weight(&w, 5) * fixed_point_16_16(&x) * Tensor::from_slice(&[2.0f32, 3.0]))
            .sum(Kind::Float)
            .backward();
        // d/dw = 2·xq etc., as if the rounding were the identity.
        let gw = Vec::<f32>::try_from(w.grad()).expect("f32");
        let gx = Vec::<f32>::try_from(x.grad()).expect("f32");
        let xq = (1.0f32 / 3.0 * 65536.0).round() / 65536.0;
        assert!(
            (gw[0] - 2.0 * xq).abs() < 1e-6 && (gw[1] - 6.0).abs() < 1e-6,
            "{gw:?}"
        );
        assert!(
            (gx[0] - 0.5).abs() < 1e-6 && (gx[1] + 1.5).abs() < 1e-6,
            "{gx:?}"
        );
    }
}
