//! DeepShift-Q (method.md §2, "Shift"): weights become signed powers of two,
//! `Wq = sign(W)·2^p`, `p = clamp(round(log2|W|), −(2^(b−1)−1), 0)`; magnitudes below the smallest
//! power map to it and zero maps to `+2^pmin`. Gradients pass straight through. Optionally the
//! layer input is rounded to 16.16 fixed point, also straight-through.

use tch::Tensor;

use super::straight_through;

/// Smallest exponent for `bits`-bit shift weights (bits = 5 gives −15).
pub fn min_exponent(bits: i64) -> i64 {
    -((1i64 << (bits - 1)) - 1)
}

/// The power-of-two values themselves (no gradient path).
pub fn quantize(w: &Tensor, bits: i64) -> Tensor {
    let pmin = min_exponent(bits) as f64;
    tch::no_grad(|| {
        let sign = w.ge(0.0).to_kind(w.kind()) * 2.0 - 1.0; // zero → +1
        let p = w
            .abs()
            .clamp_min(pmin.exp2())
            .log2()
            .round()
            .clamp(pmin, 0.0);
        sign * p.exp2()
    })
}

/// Power-of-two weights with a straight-through gradient to `w`.
pub fn shift_weight(w: &Tensor, bits: i64) -> Tensor {
    straight_through(w, &quantize(w, bits))
}

/// Round to 16.16 fixed point (multiples of 2⁻¹⁶), straight-through.
pub fn fixed_point_16_16(x: &Tensor) -> Tensor {
    let q = tch::no_grad(|| (x * 65536.0).round() / 65536.0);
    straight_through(x, &q)
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
