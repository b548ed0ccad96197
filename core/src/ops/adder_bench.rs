//! The Add implementations side by side on one device (issue 42, item 4): each checked against
//! the float64 formulas there, then timed on a model's own Add layer shapes against the
//! multiplicative conv of the same shape. `shiftadd add-bench` prints it; the GPU check
//! (`experiments/gpu/check.sh`) runs it on CUDA, where the tiled kernels replace the ATen
//! formulation. On the CPU its figures compare the float32 kernel with the tiled kernels' host
//! emulation, which is there for tests, not for speed.

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::adder::{self, Geometry, Impl, Part};
use crate::spec::arch::{ArchSpec, OpSpec};
use crate::spec::config::ModelName;
use crate::spec::layers::{LayerKind, layers};

/// One implementation's largest error against the float64 formulas over the check's shapes.
#[derive(Clone, Debug, Serialize)]
pub struct Accuracy {
    pub implementation: String,
    pub kind: String,
    pub forward: f64,
    pub input_grad: f64,
    pub weight_grad: f64,
}

/// One layer shape's forward + both gradients, milliseconds (median of the repetitions).
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub shape: String,
    pub mult_ms: f64,
    pub reference_ms: f64,
    /// The tiled kernels where they run on this device, else the float32 CPU kernel.
    pub add_ms: f64,
    pub add_implementation: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub model: String,
    pub batch: i64,
    pub resolution: i64,
    /// Whether the tiled kernels run on this device (always true on the CPU: the host emulation).
    pub tiled: bool,
    pub accuracy: Vec<Accuracy>,
    pub timings: Vec<Timing>,
}

impl Report {
    /// Sums over the shapes: (Mult, reference Add, Add) milliseconds.
    pub fn totals(&self) -> (f64, f64, f64) {
        self.timings.iter().fold((0.0, 0.0, 0.0), |(m, r, a), t| {
            (m + t.mult_ms, r + t.reference_ms, a + t.add_ms)
        })
    }
}

/// A conv shape: (C, H, W, O, k, stride, pad, groups).
type Shape = (i64, i64, i64, i64, i64, i64, i64, i64);

/// The check's shapes: tiles cut at every edge, depthwise, stride 2, a 1×1 and a 5×5.
const CHECK_SHAPES: [Shape; 6] = [
    (3, 7, 5, 20, 3, 1, 1, 1),
    (16, 9, 11, 70, 3, 2, 1, 1),
    (40, 10, 10, 130, 1, 1, 0, 1),
    (32, 8, 9, 48, 3, 1, 1, 2),
    (12, 17, 13, 12, 5, 2, 2, 12),
    (9, 12, 12, 17, 3, 1, 2, 1),
];

/// The distinct Add layer shapes of `model`'s tiny network at `resolution` (the stem and the
/// classifier stay multiplicative, as the paper keeps them).
pub fn model_shapes(model: ModelName, resolution: i64) -> Vec<Shape> {
    let spec = ArchSpec::named(model, 3, resolution, 10);
    let mut shapes: Vec<Shape> = layers(&spec, &spec.base_widths(), &OpSpec::mult(), resolution)
        .iter()
        .filter(|l| l.kind != LayerKind::Linear && l.name != "stem" && l.name != "first_conv")
        .filter(|l| l.c_in > 3)
        .map(|l| {
            (
                l.c_in,
                l.h_in,
                l.w_in,
                l.c_out,
                l.kernel,
                l.stride,
                l.kernel / 2,
                l.groups,
            )
        })
        .collect();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
}

fn max_error(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double).to_device(Device::Cpu)
        - b.to_kind(Kind::Double).to_device(Device::Cpu))
    .abs()
    .max()
    .double_value(&[])
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Each implementation that runs on `device`, in float64 and float32, against the float64
/// formulas (`adder::unfold`) on the CPU.
pub fn accuracy(device: Device) -> Result<Vec<Accuracy>, tch::TchError> {
    let mut imps = vec![(Impl::Reference, "reference"), (Impl::Tiled, "tiled")];
    if device == Device::Cpu {
        imps.push((Impl::Fast, "fast"));
    } else if !adder::cuda_kernels_available(&Tensor::zeros([1], (Kind::Float, device))) {
        imps.retain(|(i, _)| *i != Impl::Tiled);
    }
    let mut out = Vec::new();
    for (imp, name) in imps {
        for kind in [Kind::Double, Kind::Float] {
            if imp == Impl::Fast && kind == Kind::Double {
                continue;
            }
            let mut worst = [0f64; 3];
            for (i, &(c, h, w, o, k, s, p, g)) in CHECK_SHAPES.iter().enumerate() {
                tch::manual_seed(100 + i as i64);
                let cpu = (Kind::Double, Device::Cpu);
                let x = Tensor::randn([2, c, h, w], cpu);
                let f = Tensor::randn([o, c / g, k, k], cpu) * 0.5;
                let ry = adder::unfold::forward(&x, &f, s, p, g);
                let gy = Tensor::randn(ry.size(), cpu);
                let (rdx, rdf) = adder::unfold::backward(&x, &f, &gy, s, p, g);
                let on = |t: &Tensor| t.to_kind(kind).to_device(device);
                let (xd, fd, gd) = (on(&x), on(&f), on(&gy));
                let geo = Geometry {
                    stride: s,
                    pad: p,
                    groups: g,
                    chunk: adder::DEFAULT_CHUNK_ELEMS,
                };
                let y = adder::adder_part(imp, Part::Forward, &xd, &fd, &gd, geo)?;
                let dx = adder::adder_part(imp, Part::InputGrad, &xd, &fd, &gd, geo)?;
                let df = adder::adder_part(imp, Part::WeightGrad, &xd, &fd, &gd, geo)?;
                // Relative to the reference's scale, so float32 and float64 read alike.
                let scale = |t: &Tensor| t.abs().max().double_value(&[]).max(1.0);
                worst[0] = worst[0].max(max_error(&y, &ry) / scale(&ry));
                worst[1] = worst[1].max(max_error(&dx, &rdx) / scale(&rdx));
                worst[2] = worst[2].max(max_error(&df, &rdf) / scale(&rdf));
            }
            out.push(Accuracy {
                implementation: name.into(),
                kind: if kind == Kind::Double { "f64" } else { "f32" }.into(),
                forward: worst[0],
                input_grad: worst[1],
                weight_grad: worst[2],
            });
        }
    }
    Ok(out)
}

/// Median milliseconds of `reps` calls of `body` (after one warm-up), synchronised on CUDA.
fn median_ms(
    device: Device,
    reps: usize,
    mut body: impl FnMut() -> Result<(), tch::TchError>,
) -> Result<f64, tch::TchError> {
    body()?;
    sync(device);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        body()?;
        sync(device);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Forward + dX + dF of every Add layer shape of `model` at `batch` × `resolution` px in float32:
/// the multiplicative conv (ATen's, with its gradients), the ATen Add formulation, and the Add
/// that training runs on `device`.
pub fn timings(
    device: Device,
    model: ModelName,
    batch: i64,
    resolution: i64,
    reps: usize,
) -> Result<Vec<Timing>, tch::TchError> {
    let opts = (Kind::Float, device);
    let tiled = device != Device::Cpu && adder::cuda_kernels_available(&Tensor::zeros([1], opts));
    let (add_imp, add_name) = match (device, tiled) {
        (Device::Cpu, _) => (Impl::Fast, "fast (CPU float32)"),
        (_, true) => (Impl::Tiled, "tiled (NVRTC)"),
        (_, false) => (Impl::Reference, "reference (no NVRTC)"),
    };
    let mut out = Vec::new();
    for (c, h, w, o, k, s, p, g) in model_shapes(model, resolution) {
        tch::manual_seed(1);
        let x = Tensor::randn([batch, c, h, w], opts);
        let f = Tensor::randn([o, c / g, k, k], opts) * 0.1;
        let geo = Geometry {
            stride: s,
            pad: p,
            groups: g,
            chunk: adder::DEFAULT_CHUNK_ELEMS,
        };
        let y = adder::adder_part(Impl::Reference, Part::Forward, &x, &f, &x, geo)?;
        let gy = Tensor::randn(y.size(), opts);
        let (xr, fr, gr) = (&x, &f, &gy);
        let add = |imp: Impl| {
            move || -> Result<(), tch::TchError> {
                for part in [Part::Forward, Part::InputGrad, Part::WeightGrad] {
                    let _ = adder::adder_part(imp, part, xr, fr, gr, geo)?;
                }
                Ok(())
            }
        };
        let mult = || -> Result<(), tch::TchError> {
            let xg = x.shallow_clone().set_requires_grad(true);
            let fg = f.shallow_clone().set_requires_grad(true);
            let y = xg.f_conv2d(&fg, None::<Tensor>, [s, s], [p, p], [1, 1], g)?;
            (y * &gy).sum(Kind::Float).f_backward()?;
            Ok(())
        };
        out.push(Timing {
            shape: format!("{c}x{h}x{w} -> {o}, k{k} s{s} g{g}"),
            mult_ms: median_ms(device, reps, mult)?,
            reference_ms: median_ms(device, reps, add(Impl::Reference))?,
            add_ms: median_ms(device, reps, add(add_imp))?,
            add_implementation: add_name.into(),
        });
    }
    Ok(out)
}

/// [`accuracy`] and [`timings`] together, with `threads` torch intra-op threads (0: torch's default).
pub fn report(
    device: Device,
    model: ModelName,
    batch: i64,
    resolution: i64,
    reps: usize,
    threads: usize,
) -> Result<Report, tch::TchError> {
    if threads > 0 {
        tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    }
    let tiled = device == Device::Cpu
        || adder::cuda_kernels_available(&Tensor::zeros([1], (Kind::Float, device)));
    Ok(Report {
        device: format!("{device:?}"),
        model: model.as_str().into(),
        batch,
        resolution,
        tiled,
        accuracy: accuracy(device)?,
        timings: timings(device, model, batch, resolution, reps)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's own check finds every implementation accurate on the CPU, and its shapes
    /// are mbv2-tiny's Add layers (depthwise and 1×1 among them).
    #[test]
    fn the_add_bench_checks_and_times_every_implementation_on_the_cpu() {
        let r = report(Device::Cpu, ModelName::Mbv2Tiny, 2, 16, 1, 0).expect("runs");
        let names: Vec<_> = r
            .accuracy
            .iter()
            .map(|a| (a.implementation.as_str(), a.kind.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("reference", "f64"),
                ("reference", "f32"),
                ("tiled", "f64"),
                ("tiled", "f32"),
                ("fast", "f32")
            ]
        );
        for a in &r.accuracy {
            let tol = if a.kind == "f64" { 1e-12 } else { 1e-5 };
            assert!(
                a.forward < tol && a.input_grad < tol && a.weight_grad < tol,
                "{a:?}"
            );
        }
        let shapes = model_shapes(ModelName::Mbv2Tiny, 16);
        assert!(
            shapes.iter().any(|s| s.7 == s.0 && s.7 > 1),
            "a depthwise shape: {shapes:?}"
        );
        assert!(shapes.iter().any(|s| s.4 == 1), "a 1×1 shape");
        assert_eq!(r.timings.len(), shapes.len());
        assert!(
            r.timings
                .iter()
                .all(|t| t.mult_ms > 0.0 && t.add_ms > 0.0 && t.reference_ms > 0.0)
        );
    }
}
