//! Training: SGD with Nesterov momentum (its state checkpointable), warm-up + cosine learning rate,
//! label-smoothed cross-entropy, per-step and per-epoch metrics, a checkpoint at every epoch end,
//! and divergence detection. One run's training loop runs on one worker thread; tensors never
//! leave it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, TchError, Tensor, nn};

use crate::data::{self, DataError, Loader, LoaderSpec, Splits};
use crate::hw;
use crate::model::{Exec, Net, Permutation};
use crate::ops::stats::{self, Edges, Histogram, WeightStats};
use crate::protocol::{Control, ControlState, Event};
use crate::rng::Rng;
use crate::spec::arch::{ArchSpec, OpSpec, Widths};
use crate::spec::config::{Config, DeviceChoice, HwModel, Hybrid};
use crate::store::{
    CheckpointRow, HistogramRow, MetricRow, RunId, Status, StoreError, WriteOp, Writer, keys,
    now_secs,
};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("diverged: loss is {loss} at step {step}")]
    Diverged { step: i64, loss: f64 },
    #[error("data: {0}")]
    Data(#[from] DataError),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("CUDA was requested (--device cuda) but no CUDA device is available")]
    NoCuda,
}

/// How a training call ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// `val_top1`: the last epoch's validation top-1; `test_top1`: the test set's, evaluated once
    /// at the end (`None` with `eval.test = false`).
    Finished {
        val_top1: f64,
        test_top1: Option<f64>,
    },
    Stopped,
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to 0 at `total`.
pub fn lr_at(step: i64, warmup: i64, total: i64, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    0.5 * peak * (1.0 + (std::f64::consts::PI * t).cos())
}

pub fn resolve_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::NoCuda),
    }
}

/// Whether weight decay applies to a parameter: conv and linear weights only — never BN
/// parameters, biases, or a remap's parameters (decay would pull `fc`'s matrix towards 0 instead
/// of the identity it starts at, and `cdf-affine`'s scales away from 1).
fn decays(name: &str, t: &Tensor) -> bool {
    t.dim() > 1 && !name.split('.').any(|part| part == "remap")
}

/// SGD with (Nesterov) momentum and decoupled-from-BN weight decay, in PyTorch's formulation:
/// `g += wd·p` (conv/linear weights only), `buf = μ·buf + g`, `d = g + μ·buf` (Nesterov) or `buf`,
/// `p -= lr·d`. Momentum buffers are named like their parameters, so they checkpoint by name.
pub struct Sgd {
    params: Vec<(String, Tensor, bool)>,
    bufs: Vec<Tensor>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    pub fn new(vs: &nn::VarStore, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor, bool)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let decay = decays(&name, &t);
                (name, t, decay)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let bufs = params.iter().map(|(_, t, _)| t.zeros_like()).collect();
        Self {
            params,
            bufs,
            momentum,
            nesterov,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p, _) in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p, decay), buf) in self.params.iter_mut().zip(self.bufs.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = if *decay && self.weight_decay > 0.0 {
                    g + &*p * self.weight_decay
                } else {
                    g
                };
                let d = if self.momentum > 0.0 {
                    let _ = buf.g_mul_scalar_(self.momentum).g_add_(&g);
                    if self.nesterov {
                        g + &*buf * self.momentum
                    } else {
                        buf.shallow_clone()
                    }
                } else {
                    g
                };
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// Apply a channel permutation to the momentum buffer of the named parameter.
    pub fn permute(&mut self, p: &Permutation) {
        if let Some(i) = self.params.iter().position(|(name, _, _)| *name == p.var) {
            tch::no_grad(|| {
                let sorted = self.bufs[i].index_select(p.dim, &p.perm);
                self.bufs[i].copy_(&sorted);
            });
        }
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.bufs)
            .map(|((name, _, _), b)| (name.clone(), b.shallow_clone()))
            .collect()
    }

    pub fn load_state(&mut self, saved: &[(String, Tensor)]) -> Result<(), String> {
        for ((name, _, _), buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let src = saved
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("optimizer state lacks `{name}`"))?;
            if src.size() != buf.size() {
                return Err(format!(
                    "optimizer state `{name}` has shape {:?}, expected {:?}",
                    src.size(),
                    buf.size()
                ));
            }
            tch::no_grad(|| buf.copy_(src));
        }
        Ok(())
    }
}

/// What a checkpoint stores beyond tensors (JSON in the `checkpoints.rng_state` column).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CheckpointMeta {
    rng: u64,
}

fn checkpoint_paths(stem: &Path) -> (PathBuf, PathBuf) {
    (
        stem.with_extension("model.ot"),
        stem.with_extension("optim.ot"),
    )
}

/// Everything a run's training thread needs from its surroundings.
pub struct RunContext<'a> {
    pub run: RunId,
    pub config: &'a Config,
    pub writer: &'a Writer,
    pub control: &'a Control,
    pub emit: &'a dyn Fn(Event),
    /// Folder for this run's checkpoint files.
    pub checkpoint_dir: PathBuf,
    /// Continue from this checkpoint (metrics after it already deleted).
    pub resume: Option<CheckpointRow>,
    /// Histogram bin edges per layer recorded before the checkpoint (resume only).
    pub histogram_edges: HashMap<String, Edges>,
}

/// Top-1, top-5 (fractions) and mean loss of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
}

/// [`Scores`] of the sub-model `widths` on `data` (normalised with `norm`): `splits.val` every
/// epoch, `splits.test` once at the end of a run.
pub fn evaluate(
    net: &Net,
    widths: &Widths,
    exec: Exec,
    data: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    batch_size: usize,
    device: Device,
) -> Result<Scores, TchError> {
    let (mut top1, mut top5, mut loss, mut n) = (0i64, 0i64, 0f64, 0usize);
    let k = 5.min(data.classes as i64);
    tch::no_grad(|| {
        for b in Loader::new(data.clone(), norm, in_order(batch_size)) {
            let x = to_images(&b.images, b.n, data, device);
            let y = Tensor::from_slice(&b.labels).to(device);
            let logits = net.forward(&x, widths, false, exec)?;
            loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * b.n as f64;
            top1 += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let (_, idx) = logits.topk(k, -1, true, false);
            top5 += idx
                .eq_tensor(&y.unsqueeze(-1))
                .sum(Kind::Int64)
                .int64_value(&[]);
            n += b.n;
        }
        Ok::<(), TchError>(())
    })?;
    let n = n.max(1) as f64;
    Ok(Scores {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        loss: loss / n,
    })
}

/// Evaluation order: every image once, in order, no augmentation.
pub fn in_order(batch_size: usize) -> LoaderSpec {
    LoaderSpec {
        batch_size,
        train: false,
        augment: false,
        seed: 0,
        epoch: 0,
        prefetch: 2,
    }
}

/// Re-estimate BN statistics of the sub-model `widths`: reset them, then average the batch
/// statistics of the first `images` training images (in train mode, without gradients).
pub fn reestimate_bn(
    net: &Net,
    widths: &Widths,
    exec: Exec,
    splits: &Splits,
    images: usize,
    batch_size: usize,
    device: Device,
) -> Result<(), TchError> {
    if images == 0 {
        return Ok(());
    }
    let mut subset = (*splits.train).clone();
    subset.labels.truncate(images);
    subset
        .images
        .truncate(images.min(subset.len()) * subset.image_size());
    net.reset_bn_stats();
    let result = tch::no_grad(|| {
        for (i, b) in Loader::new(
            std::sync::Arc::new(subset),
            &splits.norm,
            in_order(batch_size),
        )
        .enumerate()
        {
            net.set_bn_momentum(Some(1.0 / (i + 1) as f64)); // a cumulative average
            let _ = net.forward(
                &to_images(&b.images, b.n, &splits.train, device),
                widths,
                true,
                exec,
            )?;
        }
        Ok(())
    });
    net.set_bn_momentum(None);
    result
}

fn to_images(images: &[f32], n: usize, d: &data::Dataset, device: Device) -> Tensor {
    Tensor::from_slice(images)
        .view([n as i64, d.channels as i64, d.height as i64, d.width as i64])
        .to(device)
}

/// Collects metric rows and ships them to the writer in batches.
struct MetricSink<'a> {
    run: RunId,
    writer: &'a Writer,
    rows: Vec<MetricRow>,
}

impl MetricSink<'_> {
    fn push(&mut self, key: &str, step: i64, epoch: i64, value: f64) {
        self.rows.push(MetricRow {
            run: self.run,
            key: key.to_owned(),
            step,
            epoch,
            wall_time: now_secs(),
            value,
        });
    }

    fn ship(&mut self) {
        if !self.rows.is_empty() {
            self.writer
                .send_or_log(WriteOp::Metrics(std::mem::take(&mut self.rows)));
        }
    }
}

/// What one training step needs besides the batch.
pub struct StepSpec<'a> {
    pub config: &'a Config,
    pub tiny: &'a Widths,
    pub aug_exec: Option<Exec>,
    pub width_on: bool,
    pub lr: f64,
}

/// Losses of one step (before the optimizer update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    pub tiny: f64,
    pub aug: Option<f64>,
}

/// One ShiftAddAug step: forward/backward the tiny model (MF operators on remapped weights, plus
/// the KL regulariser), then — unless `hybrid = "none"` — one sampled augmented sub-model weighted
/// by α; one SGD update. AdderNet's gradient scaling happens inside each Add call's backward (on dF
/// of the weight that call used), so the multiplicative model's gradient and the KL term's stay raw.
pub fn train_step(
    net: &Net,
    opt: &mut Sgd,
    rng: &mut Rng,
    x: &Tensor,
    y: &Tensor,
    spec: &StepSpec<'_>,
    step: i64,
) -> Result<StepLosses, TrainError> {
    let cfg = spec.config;
    let ls = cfg.train.label_smoothing;
    opt.zero_grad();
    let logits = net.forward(x, spec.tiny, true, Exec::Tiny)?;
    let mut loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, ls)?;
    let tiny = loss.double_value(&[]);
    if !tiny.is_finite() {
        return Err(TrainError::Diverged { step, loss: tiny });
    }
    if let Some(kl) = net
        .remap_kl(cfg.remap.bins)
        .filter(|_| cfg.remap.kl_weight > 0.0)
    {
        loss += kl * cfg.remap.kl_weight;
    }
    loss.backward();
    let mut aug = None;
    if let Some(exec) = spec.aug_exec {
        let widths = net.sample_widths(&cfg.aug, rng, spec.width_on);
        let logits = net.forward(x, &widths, true, exec)?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, ls)?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::Diverged { step, loss: value });
        }
        (loss * cfg.aug.alpha).backward();
        aug = Some(value);
    }
    opt.step(spec.lr);
    Ok(StepLosses { tiny, aug })
}

/// How the augmented forward computes for a hybrid mode (`None`: no augmented forward).
pub fn aug_exec(hybrid: Hybrid) -> Option<Exec> {
    match hybrid {
        Hybrid::None => None,
        Hybrid::Mult => Some(Exec::Mult),
        Hybrid::Mf => Some(Exec::Mf),
        Hybrid::Split => Some(Exec::Split),
    }
}

/// Build the run's model as configured (tiny + the widest augmented sub-model it can sample).
pub fn build_net(cfg: &Config, root: &nn::Path<'_>, d: &data::Dataset) -> Net {
    let spec = ArchSpec::from_config(cfg, d.channels as i64, d.height as i64, d.classes as i64);
    let max = spec.max_widths(&cfg.aug);
    Net::new(root, spec, max, &OpSpec::from_config(cfg))
}

/// Store the hardware cost of the run's models (per layer, under both cost models) and the tiny
/// model's totals as step-0 metrics: `hw/*` under the run's `hw.model`, `hw/<model>/*` under each
/// (energy in mJ, latency in ms).
fn record_hw_cost(ctx: &RunContext<'_>, d: &data::Dataset) -> Result<(), TrainError> {
    let shape = (d.channels as i64, d.height as i64, d.classes as i64);
    let metric = |key: &str, value: f64| MetricRow {
        run: ctx.run,
        key: key.to_owned(),
        step: 0,
        epoch: 0,
        wall_time: now_secs(),
        value,
    };
    let mut metrics = Vec::new();
    for model in HwModel::ALL {
        let mut cfg = ctx.config.clone();
        cfg.hw = hw::under(&cfg.hw, model);
        let costs = hw::config_costs(&cfg, shape.0, shape.1, shape.2);
        ctx.writer
            .send(WriteOp::HwCost(hw::cost_rows(ctx.run, &costs)))?;
        let (tiny, all_mult) = (&costs[0], &costs[1]);
        if model == ctx.config.hw.model {
            metrics.extend([
                metric(keys::HW_ENERGY_MJ, tiny.energy_mj),
                metric(keys::HW_COMPUTE_MJ, tiny.compute_mj),
                metric(keys::HW_MEMORY_MJ, tiny.memory_mj),
                metric(keys::HW_LATENCY_MS, tiny.latency_ms),
                metric(keys::HW_ENERGY_MJ_ALL_MULT, all_mult.energy_mj),
            ]);
        }
        let key = |name: &str| keys::hw_under(model.as_str(), name);
        metrics.extend([
            metric(&key("energy_mj"), tiny.energy_mj),
            metric(&key("latency_ms"), tiny.latency_ms),
            metric(&key("energy_mj_all_mult"), all_mult.energy_mj),
        ]);
    }
    ctx.writer.send(WriteOp::Metrics(metrics))?;
    Ok(())
}

/// Histogram rows of every MF layer's weight views at `epoch`; bin edges are fixed per layer at
/// its first snapshot (kept in `edges`).
pub fn weight_snapshot(
    net: &Net,
    run: RunId,
    epoch: i64,
    edges: &mut HashMap<String, Edges>,
) -> Result<Vec<HistogramRow>, TchError> {
    let mut rows = Vec::new();
    for lw in net.mf_weights() {
        let stored = Vec::<f32>::try_from(lw.stored.flatten(0, -1).to_kind(Kind::Float))?;
        let remapped = Vec::<f32>::try_from(lw.remapped.flatten(0, -1).to_kind(Kind::Float))?;
        let e = edges
            .entry(lw.name.clone())
            .or_insert_with(|| Edges::around(&stored, HIST_BINS, HIST_WIDTH_SD))
            .clone();
        let mut views = vec![("stored", stored.clone()), ("remapped", remapped)];
        if let Some(p) = &lw.pow2 {
            views.push((
                "pow2",
                Vec::<f32>::try_from(p.flatten(0, -1).to_kind(Kind::Float))?,
            ));
        }
        for (kind, values) in views {
            let hist = Histogram::of(&values, &e);
            let ws = WeightStats::of(&values, &e, &hist);
            let mut stats = serde_json::to_value(ws).unwrap_or_default();
            if kind != "stored" {
                stats["w1_to_stored"] = serde_json::json!(stats::wasserstein1(&stored, &values));
            }
            stats["op"] = serde_json::json!(lw.role.as_str());
            rows.push(HistogramRow {
                run,
                layer: lw.name.clone(),
                kind: kind.to_owned(),
                epoch,
                edges: e.0.clone(),
                counts: hist.counts,
                underflow: hist.underflow,
                overflow: hist.overflow,
                stats,
            });
        }
    }
    Ok(rows)
}

/// Whether channels are sorted at the start of `epoch` (0-based): NetAug sorts only while width
/// augmentation is on (the first `width_epochs`), and only when there is an augmented model.
pub fn sorts_channels(cfg: &Config, epoch: usize, width_epochs: usize) -> bool {
    cfg.aug.hybrid != Hybrid::None && cfg.aug.sort_channels && epoch < width_epochs
}

/// Bins of the discrepancy histograms.
pub const HIST_BINS: usize = 100;
/// Half-width of the histogram range, in standard deviations of the stored weights at the first
/// snapshot (wide, because Add weights grow several-fold during training).
pub const HIST_WIDTH_SD: f64 = 10.0;

/// Held while a run seeds torch's global generator and initialises its weights.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Train the run described by `ctx` until it finishes, is stopped, or fails.
pub fn train(ctx: &RunContext<'_>) -> Result<Outcome, TrainError> {
    let cfg = ctx.config;
    let t = &cfg.train;
    let device = resolve_device(t.device)?;
    let splits = data::load(&cfg.data)?;
    let d = splits.train.clone();
    let mut vs = nn::VarStore::new(device);
    // Weight init draws from torch's process-wide generator: seed it and build under one lock, so
    // runs training at once in this process (the app, a NAS search) each get their seed's weights.
    let net = {
        let _init = INIT_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(t.seed as i64);
        build_net(cfg, &vs.root(), &d)
    };
    let tiny = net.spec.base_widths();
    let max = net.max.clone();
    let aug = aug_exec(cfg.aug.hybrid);
    let mut opt = Sgd::new(&vs, t.momentum, t.nesterov, t.weight_decay);
    let mut rng = Rng::derive(t.seed, 0xC0FFEE, 0);

    let steps_per_epoch = (d.len() / t.batch_size) as i64;
    if steps_per_epoch == 0 {
        return Err(TrainError::Data(DataError::Format {
            path: data::data_dir(&cfg.data),
            message: format!(
                "{} training images, fewer than one batch of {}",
                d.len(),
                t.batch_size
            ),
        }));
    }
    let total_steps = steps_per_epoch * t.epochs as i64;
    let warmup = (t.warmup_epochs * steps_per_epoch as f64).round() as i64;
    let peak = t.peak_lr();
    let width_epochs = (cfg.aug.stop_width_frac * t.epochs as f64).ceil() as usize;

    let mut edges: HashMap<String, Edges> = HashMap::new();
    let (mut epoch0, mut step) = (0usize, 0i64);
    if let Some(ck) = &ctx.resume {
        let (model, optim) = checkpoint_paths(Path::new(&ck.path));
        let bad = |path: &Path, message: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        vs.load(&model).map_err(|e| bad(&model, e.to_string()))?;
        let saved = Tensor::load_multi_with_device(&optim, device)
            .map_err(|e| bad(&optim, e.to_string()))?;
        opt.load_state(&saved).map_err(|m| bad(&optim, m))?;
        let meta: CheckpointMeta = serde_json::from_str(&ck.rng_state)
            .map_err(|e| bad(Path::new(&ck.path), e.to_string()))?;
        rng = Rng::new(meta.rng);
        epoch0 = ck.epoch as usize;
        step = ck.step;
        edges = ctx.histogram_edges.clone();
        ctx.writer.log(
            ctx.run,
            log::Level::Info,
            format!("resumed from epoch {} (step {step})", ck.epoch),
        );
    } else {
        let rows = weight_snapshot(&net, ctx.run, 0, &mut edges)?;
        ctx.writer.send(WriteOp::Histograms(rows))?;
        record_hw_cost(ctx, &d)?;
    }

    let mut sink = MetricSink {
        run: ctx.run,
        writer: ctx.writer,
        rows: Vec::new(),
    };
    ctx.writer.status(ctx.run, Status::Running, None);
    (ctx.emit)(Event::Running {
        run: ctx.run,
        epoch: epoch0 as i64,
        total_epochs: t.epochs as i64,
        step,
        total_steps,
    });
    let mut val_top1 = 0.0;
    // The tiny model on one split, with whatever BN statistics it holds.
    let eval_tiny = |data: &Arc<data::Dataset>| {
        evaluate(
            &net,
            &tiny,
            Exec::Tiny,
            data,
            &splits.norm,
            cfg.eval.batch_size,
            device,
        )
    };
    for epoch in epoch0..t.epochs {
        let epoch_no = epoch as i64 + 1;
        if sorts_channels(cfg, epoch, width_epochs) {
            for p in net.sort_channels(cfg.aug.sort_stage_channels) {
                opt.permute(&p);
            }
        }
        let loader = Loader::new(
            d.clone(),
            &splits.norm,
            LoaderSpec {
                batch_size: t.batch_size,
                train: true,
                augment: cfg.data.augment,
                seed: t.seed,
                epoch: epoch as u64,
                prefetch: cfg.data.prefetch,
            },
        );
        let epoch_start = Instant::now();
        let mut last_ship = Instant::now();
        let (mut loss_sum, mut images) = (0f64, 0usize);
        for batch in loader {
            if ctx.control.wait_while_paused(ctx.run, ctx.writer, ctx.emit) == ControlState::Stop {
                sink.ship();
                return Ok(Outcome::Stopped);
            }
            let step_start = Instant::now();
            let x = to_images(&batch.images, batch.n, &d, device);
            let y = Tensor::from_slice(&batch.labels).to(device);
            let lr = lr_at(step, warmup, total_steps, peak);
            let spec = StepSpec {
                config: cfg,
                tiny: &tiny,
                aug_exec: aug,
                width_on: epoch < width_epochs,
                lr,
            };
            step += 1;
            let losses = match train_step(&net, &mut opt, &mut rng, &x, &y, &spec, step) {
                Ok(l) => l,
                Err(e) => {
                    sink.ship();
                    return Err(e);
                }
            };
            let ips = batch.n as f64 / step_start.elapsed().as_secs_f64().max(1e-9);
            sink.push(keys::TRAIN_LOSS, step, epoch_no, losses.tiny);
            if let Some(a) = losses.aug {
                sink.push(keys::TRAIN_LOSS_AUG, step, epoch_no, a);
            }
            sink.push(keys::TRAIN_LR, step, epoch_no, lr);
            sink.push(keys::TRAIN_IMAGES_PER_SEC, step, epoch_no, ips);
            loss_sum += losses.tiny * batch.n as f64;
            images += batch.n;
            if last_ship.elapsed().as_millis() >= 250 {
                sink.ship();
                last_ship = Instant::now();
                (ctx.emit)(Event::Progress {
                    run: ctx.run,
                    epoch: epoch_no,
                    step,
                    total_steps,
                    loss: losses.tiny,
                    images_per_sec: images as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9),
                });
            }
        }
        let train_secs = epoch_start.elapsed().as_secs_f64();
        let (eb, bn) = (cfg.eval.batch_size, cfg.eval.bn_images);
        if let Some(exec) = aug.filter(|_| cfg.eval.aug_top1) {
            reestimate_bn(&net, &max, exec, &splits, bn, eb, device)?;
            let widest = evaluate(&net, &max, exec, &splits.val, &splits.norm, eb, device)?;
            sink.push(keys::VAL_TOP1_WIDEST, step, epoch_no, widest.top1);
        }
        // Last, so the running statistics saved with the checkpoint are the tiny model's.
        reestimate_bn(&net, &tiny, Exec::Tiny, &splits, bn, eb, device)?;
        let val = eval_tiny(&splits.val)?;
        let (top1, top5, val_loss) = (val.top1, val.top5, val.loss);
        val_top1 = top1;
        sink.push(
            keys::TRAIN_EPOCH_LOSS,
            step,
            epoch_no,
            loss_sum / images.max(1) as f64,
        );
        sink.push(
            keys::TRAIN_EPOCH_IMAGES_PER_SEC,
            step,
            epoch_no,
            images as f64 / train_secs.max(1e-9),
        );
        sink.push(keys::VAL_TOP1, step, epoch_no, top1);
        sink.push(keys::VAL_TOP5, step, epoch_no, top5);
        sink.push(keys::VAL_LOSS, step, epoch_no, val_loss);
        sink.ship();
        ctx.writer.send(WriteOp::Histograms(weight_snapshot(
            &net, ctx.run, epoch_no, &mut edges,
        )?))?;
        ctx.writer.log(
            ctx.run,
            log::Level::Info,
            format!(
                "epoch {epoch_no}/{}: val top-1 {:.2} %, top-5 {:.2} %, {:.0} images/s",
                t.epochs,
                top1 * 100.0,
                top5 * 100.0,
                images as f64 / train_secs.max(1e-9)
            ),
        );
        (ctx.emit)(Event::EpochEnded {
            run: ctx.run,
            epoch: epoch_no,
            val_top1: top1,
            val_top5: top5,
        });
        save_checkpoint(ctx, &vs, &opt, rng, epoch_no, step)?;
        (ctx.emit)(Event::CheckpointSaved {
            run: ctx.run,
            epoch: epoch_no,
            step,
        });
    }
    if epoch0 == t.epochs {
        // Resumed after its last epoch (stopped before the test evaluation): the checkpoint holds
        // the tiny model's BN statistics, so this repeats that epoch's validation figure.
        val_top1 = eval_tiny(&splits.val)?.top1;
    }
    let test_top1 = if cfg.eval.test {
        // The tiny model's BN statistics are those of the last epoch's re-estimation (saved with
        // its checkpoint, so a resumed run that had already trained every epoch has them too).
        let test = eval_tiny(&splits.test)?;
        let epoch = t.epochs as i64;
        sink.push(keys::TEST_TOP1, step, epoch, test.top1);
        sink.push(keys::TEST_TOP5, step, epoch, test.top5);
        sink.push(keys::TEST_LOSS, step, epoch, test.loss);
        sink.ship();
        ctx.writer.log(
            ctx.run,
            log::Level::Info,
            format!(
                "test: top-1 {:.2} %, top-5 {:.2} % ({} images, evaluated once at the end)",
                test.top1 * 100.0,
                test.top5 * 100.0,
                splits.test.len()
            ),
        );
        Some(test.top1)
    } else {
        None
    };
    Ok(Outcome::Finished {
        val_top1,
        test_top1,
    })
}

fn save_checkpoint(
    ctx: &RunContext<'_>,
    vs: &nn::VarStore,
    opt: &Sgd,
    rng: Rng,
    epoch: i64,
    step: i64,
) -> Result<(), TrainError> {
    let dir = &ctx.checkpoint_dir;
    let fail = |path: &Path, message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
    let stem = dir.join(format!("epoch-{epoch:04}"));
    let (model, optim) = checkpoint_paths(&stem);
    // Write under temporary names, then rename: a kill mid-write never leaves a torn checkpoint.
    let tmp_model = model.with_extension("tmp");
    let tmp_optim = optim.with_extension("tmp");
    vs.save(&tmp_model)
        .map_err(|e| fail(&model, e.to_string()))?;
    Tensor::save_multi(&opt.state(), &tmp_optim).map_err(|e| fail(&optim, e.to_string()))?;
    std::fs::rename(&tmp_model, &model).map_err(|e| fail(&model, e.to_string()))?;
    std::fs::rename(&tmp_optim, &optim).map_err(|e| fail(&optim, e.to_string()))?;
    let keep = ctx.config.train.keep_checkpoints;
    ctx.writer.send(WriteOp::Checkpoint {
        row: CheckpointRow {
            run: ctx.run,
            epoch,
            step,
            path: stem.display().to_string(),
            rng_state: serde_json::json!(CheckpointMeta { rng: rng.state }).to_string(),
        },
        keep,
    })?;
    // Files of checkpoints past the retention window.
    let old = epoch - keep as i64;
    if old >= 1 {
        let (m, o) = checkpoint_paths(&dir.join(format!("epoch-{old:04}")));
        let _ = std::fs::remove_file(m);
        let _ = std::fs::remove_file(o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::adder;
    use tch::nn::OptimizerConfig;

    #[test]
    fn channels_are_sorted_only_while_width_augmentation_is_on() {
        let mut cfg = Config::default();
        cfg.train.epochs = 4;
        cfg.aug.stop_width_frac = 0.5;
        let width_epochs = (cfg.aug.stop_width_frac * cfg.train.epochs as f64).ceil() as usize;
        let sorted: Vec<bool> = (0..4)
            .map(|e| sorts_channels(&cfg, e, width_epochs))
            .collect();
        assert_eq!(sorted, [true, true, false, false]);
        cfg.aug.hybrid = Hybrid::None;
        assert!(
            (0..4).all(|e| !sorts_channels(&cfg, e, width_epochs)),
            "no augmented model"
        );
        cfg.aug.hybrid = Hybrid::Mult;
        cfg.aug.sort_channels = false;
        assert!((0..4).all(|e| !sorts_channels(&cfg, e, width_epochs)));
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let (warm, total, peak) = (10, 110, 0.5);
        assert!((lr_at(0, warm, total, peak) - 0.05).abs() < 1e-12);
        assert!((lr_at(9, warm, total, peak) - 0.5).abs() < 1e-12);
        assert!((lr_at(10, warm, total, peak) - 0.5).abs() < 1e-12);
        assert!((lr_at(60, warm, total, peak) - 0.25).abs() < 1e-12);
        assert!(lr_at(110, warm, total, peak).abs() < 1e-12);
        let lrs: Vec<f64> = (10..110).map(|s| lr_at(s, warm, total, peak)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        assert!(
            (lr_at(0, 0, 100, 1.0) - 1.0).abs() < 1e-12,
            "no warm-up starts at the peak"
        );
    }

    /// Weight decay pulls conv weights towards 0 but leaves the `fc` remap's matrix at the
    /// identity it starts at.
    #[test]
    fn remap_parameters_are_not_decayed() {
        let mut cfg = Config::default();
        cfg.ops.kind = crate::spec::config::OpKind::Add;
        cfg.remap.kind = crate::spec::config::RemapKind::Fc;
        cfg.aug.hybrid = Hybrid::None;
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build_net(&cfg, &vs.root(), &micro_data());
        let vars = vs.variables();
        let fc_remap: Vec<&String> = vars
            .keys()
            .filter(|k| k.ends_with("remap.fc_weight"))
            .collect();
        assert!(!fc_remap.is_empty());
        let before: HashMap<String, Tensor> =
            vars.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        let mut opt = Sgd::new(&vs, 0.9, true, 0.1);
        opt.zero_grad();
        // A defined but zero gradient everywhere: only weight decay moves anything.
        vars.values()
            .map(|t| (t * 0.0).sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
            .backward();
        opt.step(0.5);
        for name in fc_remap {
            assert!(vars[name].equal(&before[name]), "{name} was decayed");
        }
        let w = "blocks.0.expand.weight";
        assert!(!vars[w].equal(&before[w]), "conv weights are decayed");
    }

    #[test]
    fn sgd_nesterov_matches_hand_computation() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.var("w", &[1, 2], nn::Init::Const(1.0)); // decayed (2-D)
        let b = root.var("b", &[2], nn::Init::Const(1.0)); // not decayed (1-D)
        let mut opt = Sgd::new(&vs, 0.9, true, 0.1);
        let (mu, wd, lr) = (0.9, 0.1, 0.5);
        let (mut pw, mut pb, mut bw, mut bb) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
        for _ in 0..3 {
            opt.zero_grad();
            // loss = sum(w²) + sum(3·b): grad w = 2w, grad b = 3
            let loss = (&w * &w).sum(Kind::Float) + (&b * 3.0).sum(Kind::Float);
            loss.backward();
            opt.step(lr);
            let gw = 2.0 * pw + wd * pw;
            bw = mu * bw + gw;
            pw -= lr * (gw + mu * bw);
            let gb = 3.0;
            bb = mu * bb + gb;
            pb -= lr * (gb + mu * bb);
        }
        assert!(
            (w.double_value(&[0, 0]) - pw).abs() < 1e-5,
            "{} vs {pw}",
            w.double_value(&[0, 0])
        );
        assert!((b.double_value(&[1]) - pb).abs() < 1e-5);
        // The state round-trips by name.
        let state = opt.state();
        let mut fresh = Sgd::new(&vs, 0.9, true, 0.1);
        fresh.load_state(&state).expect("same names and shapes");
        assert!(
            fresh
                .state()
                .iter()
                .zip(&state)
                .all(|(a, b)| a.1.equal(&b.1))
        );
        assert!(fresh.load_state(&[]).is_err());
    }

    fn step_setup(hybrid: Hybrid) -> (Config, Tensor, Tensor) {
        let mut cfg = Config::default();
        cfg.ops.kind = crate::spec::config::OpKind::Shift;
        cfg.aug.hybrid = hybrid;
        cfg.train.weight_decay = 0.0;
        cfg.remap.kl_weight = 0.0;
        tch::manual_seed(9);
        let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        (cfg, x, y)
    }

    fn micro_data() -> data::Dataset {
        data::Dataset {
            channels: 3,
            height: 32,
            width: 32,
            classes: 10,
            images: Vec::new(),
            labels: Vec::new(),
        }
    }

    #[test]
    fn hybrid_none_trains_exactly_the_tiny_model() {
        let (mut cfg, x, y) = step_setup(Hybrid::None);
        // Mult operators: Shift's rounding would turn float-level differences between the two
        // optimizers' arithmetic into power-of-two jumps.
        cfg.ops.kind = crate::spec::config::OpKind::Mult;
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build_net(&cfg, &vs.root(), &micro_data());
        assert_eq!(
            net.max,
            net.spec.base_widths(),
            "nothing but the tiny model exists"
        );
        // The same model and init, trained by tch's own SGD on the tiny loss alone.
        let mut ref_vs = nn::VarStore::new(Device::Cpu);
        let reference = build_net(&cfg, &ref_vs.root(), &micro_data());
        ref_vs.copy(&vs).expect("same variables");
        let mut ref_opt = nn::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            wd: 0.0,
            nesterov: true,
        }
        .build(&ref_vs, 0.05)
        .expect("sgd");
        let mut opt = Sgd::new(&vs, 0.9, true, 0.0);
        let mut rng = Rng::new(0);
        let tiny = net.spec.base_widths();
        for step in 1..=3 {
            let spec = StepSpec {
                config: &cfg,
                tiny: &tiny,
                aug_exec: aug_exec(cfg.aug.hybrid),
                width_on: true,
                lr: 0.05,
            };
            let losses = train_step(&net, &mut opt, &mut rng, &x, &y, &spec, step).expect("step");
            assert_eq!(losses.aug, None);
            let logits = reference
                .forward(&x, &tiny, true, Exec::Tiny)
                .expect("forward");
            let loss = logits.cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                cfg.train.label_smoothing,
            );
            assert!((loss.double_value(&[]) - losses.tiny).abs() < 1e-5);
            ref_opt.backward_step(&loss);
        }
        let ours = vs.variables();
        for (name, t) in ref_vs.variables() {
            assert!(
                t.allclose(&ours[&name], 1e-5, 1e-6, false),
                "{name} differs from plain SGD on the tiny model"
            );
        }
    }

    /// Everything trainable's gradient, by name (copies).
    fn grads(vs: &nn::VarStore) -> HashMap<String, Tensor> {
        vs.variables()
            .into_iter()
            .filter(|(_, t)| t.grad().defined())
            .map(|(n, t)| (n, t.grad().copy()))
            .collect()
    }

    fn add_config(hybrid: Hybrid) -> Config {
        let mut cfg = Config::default();
        cfg.ops.kind = crate::spec::config::OpKind::Add;
        cfg.ops.add_eta_relative = false;
        cfg.aug.hybrid = hybrid;
        cfg.remap.kind = crate::spec::config::RemapKind::None;
        cfg.remap.kl_weight = 0.0;
        cfg.train.weight_decay = 0.0;
        cfg
    }

    /// The same net (same variables) whose Add calls return the raw gradient `X − F`.
    fn raw_twin(cfg: &Config, vs: &nn::VarStore) -> (nn::VarStore, Net) {
        let mut raw_vs = nn::VarStore::new(Device::Cpu);
        let d = micro_data();
        let spec = ArchSpec::from_config(cfg, d.channels as i64, d.height as i64, d.classes as i64);
        let max = spec.max_widths(&cfg.aug);
        let ops = OpSpec {
            add_scale: adder::GradScale::NONE,
            ..OpSpec::from_config(cfg)
        };
        let net = Net::new(&raw_vs.root(), spec, max, &ops);
        raw_vs.copy(vs).expect("same variables");
        (raw_vs, net)
    }

    /// An Add `micro` net, its raw-gradient twin on the same variables, and a batch.
    struct AddFixture {
        cfg: Config,
        x: Tensor,
        y: Tensor,
        vs: nn::VarStore,
        net: Net,
        raw_vs: nn::VarStore,
        raw: Net,
        tiny: Widths,
    }

    impl AddFixture {
        fn new(hybrid: Hybrid) -> Self {
            let (_, x, y) = step_setup(hybrid);
            let cfg = add_config(hybrid);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build_net(&cfg, &vs.root(), &micro_data());
            let (raw_vs, raw) = raw_twin(&cfg, &vs);
            let tiny = net.spec.base_widths();
            Self {
                cfg,
                x,
                y,
                vs,
                net,
                raw_vs,
                raw,
                tiny,
            }
        }
    }

    /// `g · η·√n / ‖g‖`: AdderNet's scaling of a gradient whose weight slice has `n` elements.
    fn adder_scaled(g: &Tensor, n: i64, eta: f64) -> Tensor {
        g * (eta * (n as f64).sqrt() / g.norm().double_value(&[]).max(1e-12))
    }

    /// `hybrid = "none"` steps exactly as before the scaling moved into the op: there the whole
    /// stored tensor is the tiny slice, so scaling it after backward is the same arithmetic.
    #[test]
    fn hybrid_none_add_steps_as_with_whole_tensor_scaling() {
        let AddFixture {
            cfg,
            x,
            y,
            vs,
            net,
            raw_vs,
            raw,
            tiny,
        } = AddFixture::new(Hybrid::None);
        let (mut opt, mut raw_opt) = (
            Sgd::new(&vs, 0.9, true, 0.0),
            Sgd::new(&raw_vs, 0.9, true, 0.0),
        );
        let mut rng = Rng::new(0);
        // One step: later ones would amplify float32 rounding through |x − f|'s kinks.
        for step in 1..=1 {
            let spec = StepSpec {
                config: &cfg,
                tiny: &tiny,
                aug_exec: None,
                width_on: true,
                lr: 0.05,
            };
            train_step(&net, &mut opt, &mut rng, &x, &y, &spec, step).expect("step");
            // The previous rule: raw backward, then η-scaling of each Add weight's whole gradient.
            raw_opt.zero_grad();
            let logits = raw.forward(&x, &tiny, true, Exec::Tiny).expect("forward");
            logits
                .cross_entropy_loss::<Tensor>(
                    &y,
                    None,
                    Reduction::Mean,
                    -100,
                    cfg.train.label_smoothing,
                )
                .backward();
            for (_, w, n) in raw.add_layers() {
                assert_eq!(
                    n,
                    w.numel() as i64,
                    "direct training: the tiny slice is the whole tensor"
                );
                let mut g = w.grad();
                let scaled = adder_scaled(&g, n, cfg.ops.add_eta);
                tch::no_grad(|| g.copy_(&scaled));
            }
            raw_opt.step(0.05);
        }
        let ours = vs.variables();
        for (name, t) in raw_vs.variables() {
            let diff = (&t - &ours[&name]).abs().max().double_value(&[]);
            assert!(
                t.allclose(&ours[&name], 1e-4, 1e-5, false), // float32 arithmetic in two orders
                "{name} differs from the whole-tensor rule by {diff}"
            );
        }
    }

    /// With `hybrid = "mult"`, an Add layer's shared tensor receives the η-scaled Add gradient of
    /// the tiny slice plus the raw gradient of the multiplicative augmented model.
    #[test]
    fn hybrid_mult_scales_only_the_tiny_add_gradient() {
        let AddFixture {
            cfg,
            x,
            y,
            vs,
            net,
            raw_vs,
            raw,
            tiny,
        } = AddFixture::new(Hybrid::Mult);
        let mut opt = Sgd::new(&vs, 0.0, false, 0.0);
        let mut rng = Rng::new(3);
        let mut replay = rng;
        let spec = StepSpec {
            config: &cfg,
            tiny: &tiny,
            aug_exec: aug_exec(cfg.aug.hybrid),
            width_on: true,
            lr: 0.0, // leaves the weights as they are: the accumulated gradient stays readable
        };
        train_step(&net, &mut opt, &mut rng, &x, &y, &spec, 1).expect("step");
        let total = grads(&vs);
        let ls = cfg.train.label_smoothing;
        let loss = |logits: Tensor| {
            logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, ls)
        };
        let mut raw_opt = Sgd::new(&raw_vs, 0.0, false, 0.0);
        raw_opt.zero_grad();
        loss(raw.forward(&x, &tiny, true, Exec::Tiny).expect("tiny")).backward();
        let tiny_grads = grads(&raw_vs);
        raw_opt.zero_grad();
        let widths = raw.sample_widths(&cfg.aug, &mut replay, true);
        assert_ne!(widths, tiny, "the step sampled a wider model");
        (loss(raw.forward(&x, &widths, true, Exec::Mult).expect("aug")) * cfg.aug.alpha).backward();
        let mult_grads = grads(&raw_vs);
        let layers = raw.add_layers();
        assert!(layers.len() >= 4);
        for (name, w, n) in layers {
            assert!(
                n < w.numel() as i64,
                "{name}: the shared tensor is wider than the tiny slice"
            );
            let key = format!("{name}.weight");
            let expected = adder_scaled(&tiny_grads[&key], n, cfg.ops.add_eta) + &mult_grads[&key];
            assert!(
                total[&key].allclose(&expected, 1e-4, 1e-6, false),
                "{name}: scaled tiny + raw Mult gradient expected"
            );
            // And it is not what scaling the accumulated gradient would give.
            let accumulated = &tiny_grads[&key] + &mult_grads[&key];
            let old = adder_scaled(&accumulated, w.numel() as i64, cfg.ops.add_eta);
            assert!(!total[&key].allclose(&old, 1e-3, 1e-5, false), "{name}");
        }
    }

    #[test]
    fn hybrid_mult_trains_the_augmented_channels_too() {
        let (cfg, x, y) = step_setup(Hybrid::Mult);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build_net(&cfg, &vs.root(), &micro_data());
        let tiny = net.spec.base_widths();
        assert!(net.max.out.iter().zip(&tiny.out).all(|(m, t)| m > t));
        let before = vs.variables()["blocks.1.project.weight"].copy();
        let mut opt = Sgd::new(&vs, 0.9, true, 0.0);
        let mut rng = Rng::new(0);
        let spec = StepSpec {
            config: &cfg,
            tiny: &tiny,
            aug_exec: aug_exec(cfg.aug.hybrid),
            width_on: true,
            lr: 0.05,
        };
        let mut saw_aug = false;
        for step in 1..=4 {
            saw_aug |= train_step(&net, &mut opt, &mut rng, &x, &y, &spec, step)
                .expect("step")
                .aug
                .is_some();
        }
        assert!(saw_aug);
        let after = &vs.variables()["blocks.1.project.weight"];
        let (t_out, t_in) = (tiny.out[1], tiny.mid[1]);
        let outside = (after - &before)
            .narrow(0, t_out, after.size()[0] - t_out)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        let inside = (after - &before)
            .narrow(0, 0, t_out)
            .narrow(1, 0, t_in)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(
            outside > 0.0 && inside > 0.0,
            "outside {outside}, inside {inside}"
        );
    }
}
