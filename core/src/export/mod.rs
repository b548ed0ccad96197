//! Export of a run's tiny MF model — `model.safetensors` + `model.json` — and its evaluation from
//! those files alone, which must reproduce the run's last tiny evaluation.
//!
//! `model.json` lists the [`Step`]s of the tiny program in execution order; each tensor is stored
//! in the safetensors file under `<layer>.weight` / `.bias` / `.mean` / `.scale`. Shift layers'
//! weights are exact signed powers of two; Add layers' are the remapped weights; BN is folded
//! into Mult convs (`.weight`, `.bias`) and kept after MF ones as (y − `.mean`)·`.scale` +
//! `.bias`, centred first (exports made before that store `.scale` and `.shift`, and still load).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor, nn};

use crate::data::{self, DataError};
use crate::model::{Program, Step, activate, step_act, upsample};
use crate::ops::{adder, shift};
use crate::spec::config::{Config, DataConfig, OpKind};
use crate::store::{Reader, RunId, StoreError};
use crate::train;

mod masks;

pub use masks::{MaskPanel, class_colour, predict_masks, render_panels, write_png};

pub const FORMAT: &str = "shiftadd-tiny-v1";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("run {0} has no checkpoint to export (it never finished an epoch)")]
    NoCheckpoint(RunId),
    #[error("run {run}: stored config: {message}")]
    Config { run: RunId, message: String },
    #[error("data: {0}")]
    Data(#[from] DataError),
    #[error("torch: {0}")]
    Torch(#[from] TchError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelJson {
    pub format: String,
    pub run: RunId,
    pub model: String,
    pub dataset: String,
    pub operator: OpKind,
    pub weight_bits: i64,
    /// Input [channels, height, width] and the per-channel (mean, std) of the training split.
    pub input: [i64; 3],
    pub norm: Vec<(f32, f32)>,
    pub classes: i64,
    pub steps: Vec<Step>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    pub json: ModelJson,
    pub tensors: usize,
}

/// A run's model as its last checkpoint holds it, with the config and data it trained on.
pub(crate) struct RunModel {
    pub summary: crate::store::RunSummary,
    pub cfg: Config,
    pub checkpoint: crate::store::CheckpointRow,
    pub splits: data::Splits,
    pub net: crate::model::Net,
    /// Owns the net's tensors.
    _vs: nn::VarStore,
}

impl RunModel {
    /// Load `run` of the database `db` from its last checkpoint, on the CPU.
    pub fn load(db: &Path, run: RunId) -> Result<Self, ExportError> {
        let reader = Reader::open(db)?;
        let summary = reader.run(run)?;
        let toml = reader.config_toml(run)?;
        let cfg = Config::from_toml_str(&toml, &format!("run {run}"), &[]).map_err(|e| {
            ExportError::Config {
                run,
                message: e.to_string(),
            }
        })?;
        let checkpoint = reader
            .last_checkpoint(run)?
            .ok_or(ExportError::NoCheckpoint(run))?;
        let splits = data::load(&cfg.data)?;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = train::build_net(&cfg, &vs.root(), &splits.train);
        let model_file = Path::new(&checkpoint.path).with_extension("model.ot");
        vs.load(&model_file).map_err(|e| ExportError::File {
            path: model_file.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            summary,
            cfg,
            checkpoint,
            splits,
            net,
            _vs: vs,
        })
    }
}

/// Write the tiny MF model of `run`'s last checkpoint into `dir`.
pub fn export_run(db: &Path, run: RunId, dir: &Path) -> Result<Exported, ExportError> {
    let RunModel {
        summary,
        cfg,
        splits,
        net,
        ..
    } = RunModel::load(db, run)?;
    let Program { steps, tensors } = net.tiny_program();
    let d = &splits.train;
    let json = ModelJson {
        format: FORMAT.into(),
        run,
        model: summary.model,
        dataset: summary.dataset,
        operator: cfg.ops.kind,
        weight_bits: cfg.ops.weight_bits,
        input: [d.channels as i64, d.height as i64, d.width as i64],
        norm: splits.norm.clone(),
        classes: d.classes as i64,
        steps,
    };
    let io = |path: &Path, e: &dyn std::fmt::Display| ExportError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let st = dir.join("model.safetensors");
    let contiguous: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.contiguous()))
        .collect();
    Tensor::write_safetensors(&contiguous, &st).map_err(|e| io(&st, &e))?;
    let jp = dir.join("model.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| io(&jp, &e))?;
    std::fs::write(&jp, text).map_err(|e| io(&jp, &e))?;
    Ok(Exported {
        dir: dir.to_path_buf(),
        json,
        tensors: contiguous.len(),
    })
}

/// The numbers in `model.json` that size what `forward` allocates, within what any tiny model
/// uses (a damaged file could otherwise ask for terabytes).
fn check_ranges(json: &ModelJson) -> Result<(), String> {
    let [c, h, w] = json.input;
    if !(1..=64).contains(&c) || !(1..=1024).contains(&h) || !(1..=1024).contains(&w) {
        return Err(format!(
            "input {:?} outside [1..64, 1..1024, 1..1024]",
            json.input
        ));
    }
    if json.norm.len() != c as usize {
        return Err(format!(
            "{} norm entries for {c} input channels",
            json.norm.len()
        ));
    }
    for step in &json.steps {
        let conv = match step {
            Step::SegHead { cbr, .. } => cbr.as_ref(),
            other => other,
        };
        if let Step::Conv {
            name,
            stride,
            pad,
            groups,
            ..
        } = conv
            && (!(1..=16).contains(stride)
                || !(0..=16).contains(pad)
                || !(1..=4096).contains(groups))
        {
            return Err(format!(
                "conv {name}: stride {stride}, pad {pad}, groups {groups} outside 1..16, 0..16, 1..4096"
            ));
        }
    }
    Ok(())
}

/// A conv of `x` by `w` through operator `op` (`(stride, pad, groups)`), Shift layers' inputs
/// on 16.16 fixed point where `fixed`.
fn op_conv(
    x: &Tensor,
    w: &Tensor,
    op: OpKind,
    fixed: bool,
    (stride, pad, groups): (i64, i64, i64),
) -> Result<Tensor, TchError> {
    let input = if fixed {
        shift::fixed_point_16_16(x)
    } else {
        x.shallow_clone()
    };
    match op {
        OpKind::Add => adder::adder_conv2d(&input, w, stride, pad, groups),
        OpKind::Mult | OpKind::Shift => input.f_conv2d(
            w,
            None::<Tensor>,
            [stride, stride],
            [pad, pad],
            [1, 1],
            groups,
        ),
    }
}

/// An exported tiny model, loaded from its two files.
pub struct ExportedModel {
    pub json: ModelJson,
    tensors: std::collections::HashMap<String, Tensor>,
}

impl ExportedModel {
    pub fn load(dir: &Path) -> Result<Self, ExportError> {
        let jp = dir.join("model.json");
        let bad = |path: &Path, message: String| ExportError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&jp).map_err(|e| bad(&jp, e.to_string()))?;
        let json: ModelJson = serde_json::from_str(&text).map_err(|e| bad(&jp, e.to_string()))?;
        if json.format != FORMAT {
            return Err(bad(
                &jp,
                format!("format {:?}, expected {FORMAT:?}", json.format),
            ));
        }
        check_ranges(&json).map_err(|m| bad(&jp, m))?;
        let st = dir.join("model.safetensors");
        let tensors = Tensor::read_safetensors(&st).map_err(|e| bad(&st, e.to_string()))?;
        Ok(Self {
            json,
            tensors: tensors.into_iter().collect(),
        })
    }

    /// Whether the export holds tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor, ExportError> {
        self.tensors.get(name).ok_or_else(|| ExportError::File {
            path: PathBuf::from("model.safetensors"),
            message: format!("missing tensor {name}"),
        })
    }

    /// A [`Step::Conv`] on `x` (any other step: `x` unchanged).
    fn conv(&self, step: &Step, x: &Tensor) -> Result<Tensor, ExportError> {
        let Step::Conv {
            name,
            op,
            stride,
            pad,
            groups,
            relu6,
            act_fixed_point,
            folded_bn,
            act,
        } = step
        else {
            return Ok(x.shallow_clone());
        };
        let w = self.tensor(&format!("{name}.weight"))?;
        let mut y = op_conv(x, w, *op, *act_fixed_point, (*stride, *pad, *groups))?;
        let per_channel = |t: &str| -> Result<Tensor, ExportError> {
            Ok(self.tensor(&format!("{name}.{t}"))?.f_view([1, -1, 1, 1])?)
        };
        if *folded_bn {
            y = y.f_add(&per_channel("bias")?)?;
        } else if self.tensors.contains_key(&format!("{name}.mean")) {
            y = y
                .f_sub(&per_channel("mean")?)?
                .f_mul(&per_channel("scale")?)?
                .f_add(&per_channel("bias")?)?;
        } else {
            // Exports before the centred form: y·scale + shift.
            y = y
                .f_mul(&per_channel("scale")?)?
                .f_add(&per_channel("shift")?)?;
        }
        Ok(activate(&y, step_act(*relu6, *act))?)
    }

    /// A 1×1 layer `name` (`.weight`, and `.bias` where `bias`) through `op` on `x`.
    fn pointwise(
        &self,
        name: &str,
        x: &Tensor,
        (op, fixed): (OpKind, bool),
        bias: bool,
    ) -> Result<Tensor, ExportError> {
        let w = self.tensor(&format!("{name}.weight"))?;
        let y = op_conv(x, w, op, fixed, (1, 0, 1))?;
        if !bias {
            return Ok(y);
        }
        Ok(y.f_add(
            &self
                .tensor(&format!("{name}.bias"))?
                .f_view([1, -1, 1, 1])?,
        )?)
    }

    /// Logits for a normalised batch `x` [N, C, H, W]: [N, classes], or per pixel
    /// [N, classes, H, W] for a segmentation model.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ExportError> {
        let size = [x.size()[2], x.size()[3]];
        let mut x = x.shallow_clone();
        let mut saved = Vec::new();
        let no_save = || ExportError::File {
            path: PathBuf::from("model.json"),
            message: "a step reads a saved map, and none was saved".into(),
        };
        for step in &self.json.steps {
            x = match step {
                Step::Conv { .. } => self.conv(step, &x)?,
                Step::SegHead {
                    cbr,
                    gate,
                    high,
                    low,
                    op,
                    act_fixed_point,
                } => {
                    let skip: Tensor = saved.pop().ok_or_else(no_save)?;
                    let how = (*op, *act_fixed_point);
                    let pooled = x.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
                    let g = self.pointwise(gate, &pooled, how, false)?.f_hardsigmoid()?;
                    let h = self.conv(cbr, &x)?.f_mul(&g)?;
                    let h = upsample(&h, [skip.size()[2], skip.size()[3]])?;
                    let y = self
                        .pointwise(high, &h, how, true)?
                        .f_add(&self.pointwise(low, &skip, how, true)?)?;
                    upsample(&y, size)?
                }
                Step::Se {
                    name,
                    op,
                    act_fixed_point,
                } => {
                    let part = |p: &str, input: &Tensor| -> Result<Tensor, ExportError> {
                        let w = self.tensor(&format!("{name}.{p}.weight"))?;
                        let b = self.tensor(&format!("{name}.{p}.bias"))?;
                        Ok(op_conv(input, w, *op, *act_fixed_point, (1, 0, 1))?
                            .f_add(&b.f_view([1, -1, 1, 1])?)?)
                    };
                    let pooled = x.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
                    let gate = part("expand", &part("reduce", &pooled)?.f_relu()?)?;
                    x.f_mul(&gate.f_hardsigmoid()?)?
                }
                Step::Save => {
                    saved.push(x.shallow_clone());
                    x
                }
                Step::AddSaved => x.f_add(&saved.pop().ok_or_else(no_save)?)?,
                Step::Pool => x.f_mean_dim(&[2i64, 3][..], false, Kind::Float)?,
                Step::Linear {
                    name,
                    act_fixed_point,
                    act,
                    ..
                } => {
                    let input = if *act_fixed_point {
                        shift::fixed_point_16_16(&x)
                    } else {
                        x.shallow_clone()
                    };
                    let y = input.f_linear(
                        self.tensor(&format!("{name}.weight"))?,
                        Some(self.tensor(&format!("{name}.bias"))?),
                    )?;
                    activate(&y, act.unwrap_or_default())?
                }
            };
        }
        Ok(x)
    }

    /// Top-1 accuracy on the test split of `data` (normalised with the exported statistics); mean
    /// IoU for a segmentation model.
    pub fn evaluate(&self, data: &DataConfig, batch_size: usize) -> Result<f64, ExportError> {
        let splits = data::load(data)?;
        let scores = train::score(
            &splits.test,
            &self.json.norm,
            batch_size,
            Device::Cpu,
            |x| self.forward(x),
        )?;
        Ok(scores.primary())
    }
}
