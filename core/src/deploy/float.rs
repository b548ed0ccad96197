//! The float export in pure Rust, in f64: the reference the integer program is calibrated on and
//! measured against (per layer), with no libtorch in the loop once the tensors are read. Its
//! semantics are the export's ([`crate::export::ExportedModel::forward`]): convs through their
//! operator, BN folded (Mult) or applied centred after MF convs, ReLU6, residual adds, a global
//! average pool and the classifier; a Shift layer's input rounded to 16.16 where the run did so.

use crate::export::{ExportError, ExportedModel};
use crate::model::{Step, step_act};
use crate::spec::arch::Act;
use crate::spec::config::OpKind;

use super::kernel::{Geometry, conv};

/// A conv (or the classifier, as a 1 × 1 conv on [C, 1, 1]) with its float tensors.
#[derive(Debug, Clone)]
pub struct FloatConv {
    pub name: String,
    pub op: OpKind,
    pub geo: Geometry,
    pub weight: Vec<f64>,
    /// Per output channel: `(y − mean)·scale + bias` (Mult convs and the classifier: mean 0,
    /// scale 1, bias the folded bias).
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub bias: Vec<f64>,
    pub relu6: bool,
    /// The input is rounded to multiples of 2⁻¹⁶ first (a Shift layer trained that way).
    pub fixed_16_16: bool,
}

/// One step of the float program.
#[derive(Debug, Clone)]
pub enum FloatStep {
    Conv(FloatConv),
    Save,
    AddSaved,
    /// Global average pool of a [C, H, W] activation to [C, 1, 1].
    Pool {
        channels: usize,
        area: usize,
    },
}

/// The exported tiny model as plain f64 data.
#[derive(Debug, Clone)]
pub struct FloatNet {
    /// Input [channels, height, width] and the per-channel (mean, std) that normalise it.
    pub input: [usize; 3],
    pub norm: Vec<(f64, f64)>,
    pub classes: usize,
    pub steps: Vec<FloatStep>,
}

/// A tensor of the export as f64 values, refused unless it holds `len` of them.
fn values(model: &ExportedModel, name: &str, len: usize) -> Result<Vec<f64>, ExportError> {
    let t = model.tensor(name)?;
    let got: Vec<f32> = t
        .flatten(0, -1)
        .to_kind(tch::Kind::Float)
        .try_into()
        .map_err(|e: tch::TchError| mismatch(name, &e.to_string()))?;
    if got.len() != len {
        return Err(mismatch(
            name,
            &format!("{} values where the program needs {len}", got.len()),
        ));
    }
    if let Some(bad) = got.iter().find(|v| !v.is_finite()) {
        return Err(mismatch(name, &format!("holds {bad}")));
    }
    Ok(got.into_iter().map(f64::from).collect())
}

/// An export whose tensor does not fit its program: the file and the tensor named.
pub(super) fn mismatch(tensor: &str, why: &str) -> ExportError {
    ExportError::File {
        path: "model.safetensors".into(),
        message: format!("tensor {tensor}: {why}"),
    }
}

/// What the integer program does not cover yet (`mbv3-w0.35`'s h-swish, ReLU, SE and the dense
/// layer before its classifier), refused naming the first step that has it.
fn unsupported(steps: &[Step]) -> Result<(), ExportError> {
    let refuse = |what: String| {
        Err(ExportError::File {
            path: "model.json".into(),
            message: format!(
                "{what}: the integer program covers classifiers of ReLU6 convs, residual adds, pooling and one dense layer (not yet h-swish, ReLU, squeeze-and-excitation, a dense layer before the classifier, or a segmentation head)"
            ),
        })
    };
    for step in steps {
        match step {
            Step::Conv {
                name,
                relu6,
                act: Some(act),
                ..
            } if step_act(*relu6, Some(*act)) != Act::Relu6 => {
                return refuse(format!("conv {name} ends in {}", act.label()));
            }
            Step::Se { name, .. } => return refuse(format!("{name} is squeeze-and-excitation")),
            Step::SegHead { high, .. } => {
                return refuse(format!(
                    "the model ends in a segmentation head ({high} classifies pixels)"
                ));
            }
            Step::Linear {
                name,
                act: Some(act),
                ..
            } if *act != Act::None => {
                return refuse(format!("dense layer {name} ends in {}", act.label()));
            }
            _ => {}
        }
    }
    Ok(())
}

impl FloatNet {
    /// Read the program of an export, checking every tensor against the shapes its steps imply.
    pub fn from_export(model: &ExportedModel) -> Result<Self, ExportError> {
        let json = &model.json;
        unsupported(&json.steps)?;
        let [c, h, w] = json.input.map(|v| v as usize);
        let mut shape = (c, h, w);
        let mut steps = Vec::new();
        let mut saved = Vec::new();
        for step in &json.steps {
            match step {
                Step::Conv {
                    name,
                    op,
                    stride,
                    pad,
                    groups,
                    relu6,
                    act_fixed_point,
                    folded_bn,
                    ..
                } => {
                    let dims = model.tensor(&format!("{name}.weight"))?.size();
                    let [out, per_group, k, k2] = dims[..] else {
                        return Err(mismatch(
                            &format!("{name}.weight"),
                            &format!("shape {dims:?}, not [out, in/groups, k, k]"),
                        ));
                    };
                    let groups = *groups as usize;
                    if k != k2
                        || per_group as usize * groups != shape.0
                        || !(out as usize).is_multiple_of(groups)
                    {
                        return Err(mismatch(
                            &format!("{name}.weight"),
                            &format!(
                                "shape {dims:?} does not fit {} input channels in {groups} groups",
                                shape.0
                            ),
                        ));
                    }
                    let geo = Geometry::new(
                        shape,
                        out as usize,
                        k as usize,
                        *stride as usize,
                        *pad as usize,
                        groups,
                    )
                    .map_err(|why| mismatch(&format!("{name}.weight"), &why))?;
                    let n = geo.out.0;
                    let per_channel = |t: &str| values(model, &format!("{name}.{t}"), n);
                    let (mean, scale, bias) = if *folded_bn {
                        (vec![0.0; n], vec![1.0; n], per_channel("bias")?)
                    } else if model.has_tensor(&format!("{name}.mean")) {
                        (
                            per_channel("mean")?,
                            per_channel("scale")?,
                            per_channel("bias")?,
                        )
                    } else {
                        // Exports before the centred form: y·scale + shift.
                        (vec![0.0; n], per_channel("scale")?, per_channel("shift")?)
                    };
                    let weight = values(model, &format!("{name}.weight"), geo.weights())?;
                    shape = geo.out;
                    steps.push(FloatStep::Conv(FloatConv {
                        name: name.clone(),
                        op: *op,
                        geo,
                        weight,
                        mean,
                        scale,
                        bias,
                        relu6: *relu6,
                        fixed_16_16: *act_fixed_point,
                    }));
                }
                Step::Save => {
                    saved.push(shape);
                    steps.push(FloatStep::Save);
                }
                Step::AddSaved => {
                    let s = saved.pop().ok_or_else(|| ExportError::File {
                        path: "model.json".into(),
                        message: "add_saved without a save".into(),
                    })?;
                    if s != shape {
                        return Err(ExportError::File {
                            path: "model.json".into(),
                            message: format!("add_saved of {s:?} onto {shape:?}"),
                        });
                    }
                    steps.push(FloatStep::AddSaved);
                }
                Step::Se { .. } | Step::SegHead { .. } => unsupported(std::slice::from_ref(step))?,
                Step::Pool => {
                    steps.push(FloatStep::Pool {
                        channels: shape.0,
                        area: shape.1 * shape.2,
                    });
                    shape = (shape.0, 1, 1);
                }
                Step::Linear {
                    name,
                    op,
                    act_fixed_point,
                    ..
                } => {
                    let classes = json.classes as usize;
                    let geo = Geometry::new(shape, classes, 1, 1, 0, 1)
                        .map_err(|why| mismatch(&format!("{name}.weight"), &why))?;
                    let weight = values(model, &format!("{name}.weight"), geo.weights())?;
                    let bias = values(model, &format!("{name}.bias"), classes)?;
                    shape = geo.out;
                    steps.push(FloatStep::Conv(FloatConv {
                        name: name.clone(),
                        op: *op,
                        geo,
                        weight,
                        mean: vec![0.0; classes],
                        scale: vec![1.0; classes],
                        bias,
                        relu6: false,
                        fixed_16_16: *act_fixed_point,
                    }));
                }
            }
        }
        if shape != (json.classes as usize, 1, 1) {
            return Err(ExportError::File {
                path: "model.json".into(),
                message: format!("the program ends in {shape:?}, not {} logits", json.classes),
            });
        }
        Ok(Self {
            input: [c, h, w],
            norm: json
                .norm
                .iter()
                .map(|&(m, s)| (f64::from(m), f64::from(s)))
                .collect(),
            classes: json.classes as usize,
            steps,
        })
    }

    /// An image's bytes, normalised as training normalised them.
    pub fn normalise(&self, image: &[u8]) -> Vec<f64> {
        let plane = self.input[1] * self.input[2];
        image
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let (m, s) = self.norm[i / plane];
                (f64::from(b) / 255.0 - m) / s
            })
            .collect()
    }

    /// Logits of one normalised image; `trace` receives each step's output.
    pub fn forward(&self, x: &[f64], mut trace: Option<&mut Vec<Vec<f64>>>) -> Vec<f64> {
        let mut x = x.to_vec();
        let mut saved: Vec<Vec<f64>> = Vec::new();
        for step in &self.steps {
            x = match step {
                FloatStep::Conv(c) => conv_f64(c, &x),
                FloatStep::Save => {
                    saved.push(x.clone());
                    x
                }
                FloatStep::AddSaved => {
                    let s = saved.pop().unwrap_or_default();
                    x.iter().zip(&s).map(|(a, b)| a + b).collect()
                }
                FloatStep::Pool { channels, area } => (0..*channels)
                    .map(|c| x[c * area..(c + 1) * area].iter().sum::<f64>() / *area as f64)
                    .collect(),
            };
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.clone());
            }
        }
        x
    }
}

/// One float conv: the operator, then the per-channel affine and ReLU6.
fn conv_f64(c: &FloatConv, x: &[f64]) -> Vec<f64> {
    let rounded;
    let x = if c.fixed_16_16 {
        rounded = x
            .iter()
            .map(|v| (v * 65536.0).round() / 65536.0)
            .collect::<Vec<_>>();
        &rounded[..]
    } else {
        x
    };
    let w = &c.weight;
    let y: Vec<f64> = match c.op {
        OpKind::Add => conv(&c.geo, x, 0.0, |i, v| -(v - w[i]).abs()),
        OpKind::Mult | OpKind::Shift => conv(&c.geo, x, 0.0, |i, v| v * w[i]),
    };
    let area = c.geo.out.1 * c.geo.out.2;
    y.iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = i / area;
            let z = (v - c.mean[ch]) * c.scale[ch] + c.bias[ch];
            if c.relu6 { z.clamp(0.0, 6.0) } else { z }
        })
        .collect()
}
