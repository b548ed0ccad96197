//! `synthetic`: a procedural, deterministic 10-class dataset of 32×32 RGB images.
//!
//! Each class is a shape (disk, ring, square, hollow square, triangle, plus, X, horizontal stripes,
//! vertical stripes, checker) drawn at a random position, scale and rotation, with random foreground
//! and background colours (either may be the brighter), a background gradient and pixel noise. The
//! class is a matter of shape, not of colour or position, so a linear classifier on pixels does
//! poorly while a small CNN learns it (both checked by tests).

use super::Dataset;
use crate::rng::Rng;

pub const SIZE: usize = 32;
pub const CLASSES: usize = 10;

/// `n` images of split `split` (0 train, 1 test) from `seed`; image `i` depends only on (seed, split, i).
pub fn generate(seed: u64, split: u64, n: usize) -> Dataset {
    let plane = SIZE * SIZE;
    let mut images = vec![0u8; n * 3 * plane];
    let mut labels = Vec::with_capacity(n);
    for (i, img) in images.chunks_exact_mut(3 * plane).enumerate() {
        let mut r = Rng::derive(seed, split, i as u64);
        let class = r.below(CLASSES);
        labels.push(class as u16);
        draw(&mut r, class, img);
    }
    Dataset {
        channels: 3,
        height: SIZE,
        width: SIZE,
        classes: CLASSES,
        images,
        labels,
        masks: Vec::new(),
    }
}

fn inside(class: usize, u: f64, v: f64) -> bool {
    let r = (u * u + v * v).sqrt();
    let m = u.abs().max(v.abs());
    let band = |t: f64, k: f64| ((t + 1.0) * k).floor() as i64 % 2 == 0;
    match class {
        0 => r < 1.0,
        1 => (0.55..1.0).contains(&r),
        2 => m < 0.85,
        3 => (0.5..0.85).contains(&m),
        4 => v > -0.8 && v < 0.8 && u.abs() < 0.55 * (v + 0.8) / 1.6 * 1.8,
        5 => (u.abs() < 0.25 && v.abs() < 1.0) || (v.abs() < 0.25 && u.abs() < 1.0),
        6 => m < 0.9 && ((u - v).abs() < 0.35 || (u + v).abs() < 0.35),
        7 => m < 0.9 && band(v, 2.5),
        8 => m < 0.9 && band(u, 2.5),
        _ => {
            m < 0.9
                && (((u + 1.0) * 2.0).floor() as i64 + ((v + 1.0) * 2.0).floor() as i64) % 2 == 0
        }
    }
}

fn draw(r: &mut Rng, class: usize, img: &mut [u8]) {
    let cx = 16.0 + (r.uniform() - 0.5) * 12.0;
    let cy = 16.0 + (r.uniform() - 0.5) * 12.0;
    let scale = 6.5 + r.uniform() * 5.0;
    let theta = (r.uniform() - 0.5) * 0.8;
    let (sin, cos) = theta.sin_cos();
    // Colours with a luminance contrast of at least 0.3, in either direction.
    let bg: [f64; 3] = std::array::from_fn(|_| r.uniform());
    let lum = |c: &[f64; 3]| (c[0] + c[1] + c[2]) / 3.0;
    let mut fg: [f64; 3] = std::array::from_fn(|_| r.uniform());
    for _ in 0..16 {
        if (lum(&fg) - lum(&bg)).abs() >= 0.3 {
            break;
        }
        fg = std::array::from_fn(|_| r.uniform());
    }
    if (lum(&fg) - lum(&bg)).abs() < 0.3 {
        fg = bg.map(|b| {
            if lum(&bg) > 0.5 {
                b * 0.2
            } else {
                0.8 + b * 0.2
            }
        });
    }
    let grad = [(r.uniform() - 0.5) * 0.3, (r.uniform() - 0.5) * 0.3];
    let plane = SIZE * SIZE;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let u = (cos * dx + sin * dy) / scale;
            let v = (-sin * dx + cos * dy) / scale;
            let on = inside(class, u, v);
            let shade =
                grad[0] * (x as f64 / SIZE as f64 - 0.5) + grad[1] * (y as f64 / SIZE as f64 - 0.5);
            for (ch, out) in img.chunks_exact_mut(plane).enumerate() {
                let base = if on { fg[ch] } else { bg[ch] };
                let value = base + shade + r.normal() * 0.06;
                out[y * SIZE + x] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_split_dependent() {
        let a = generate(1, 0, 500);
        let b = generate(1, 0, 500);
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_ne!(generate(1, 1, 500).images, a.images);
        assert_ne!(generate(2, 0, 500).images, a.images);
        let mut counts = [0; CLASSES];
        for &l in &a.labels {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
        assert_eq!(a.images.len(), 500 * 3 * 32 * 32);
    }
}

#[cfg(test)]
mod linear_baseline {
    use std::sync::Arc;

    use tch::nn::{self, Module, OptimizerConfig};
    use tch::{Device, Kind, Tensor};

    use super::generate;
    use crate::data::{Dataset, Loader, LoaderSpec};

    fn tensors(d: Dataset, norm: &[(f32, f32)]) -> (Tensor, Tensor) {
        let n = d.len();
        let spec = LoaderSpec {
            batch_size: n,
            train: false,
            augment: false,
            seed: 0,
            epoch: 0,
            prefetch: 1,
        };
        let b = Loader::new(Arc::new(d), norm, spec)
            .next()
            .expect("one batch");
        (
            Tensor::from_slice(&b.images).view([n as i64, -1]),
            Tensor::from_slice(&b.labels),
        )
    }

    /// "Learnable but not trivial": a linear classifier on pixels stays far from solving it.
    #[test]
    fn a_linear_classifier_does_not_solve_it() {
        let train = generate(1, 0, 4000);
        let norm = train.channel_stats();
        let (x, y) = tensors(train, &norm);
        let (xt, yt) = tensors(generate(1, 1, 1000), &norm);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root(), 3 * 32 * 32, 10, Default::default());
        let mut opt = nn::Adam::default().build(&vs, 1e-3).expect("adam");
        for _ in 0..150 {
            let loss = lin.forward(&x).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
        }
        let fit = |x: &Tensor, y: &Tensor| {
            tch::no_grad(|| {
                lin.forward(x)
                    .argmax(-1, false)
                    .eq_tensor(y)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[])
            })
        };
        let (train_acc, test_acc) = (fit(&x, &y), fit(&xt, &yt));
        eprintln!("linear classifier on synthetic: train {train_acc:.3}, test {test_acc:.3}");
        assert!(
            train_acc > 0.2,
            "the probe itself must learn something ({train_acc})"
        );
        assert!(
            test_acc < 0.4,
            "linear test accuracy {test_acc} is too high: the dataset is too easy"
        );
    }
}
