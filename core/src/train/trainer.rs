//! The training loop of one run: epochs of steps, channel sorting, evaluation, checkpoints,
//! stop / pause, divergence, and the test evaluation at the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tch::{Tensor, nn};

use crate::data::{self, DataError, Loader, LoaderSpec};
use crate::host::{self, SysSampler};
use crate::model::{Exec, Net};
use crate::ops::stats::Edges;
use crate::protocol::{ControlState, Event};
use crate::rng::Rng;
use crate::spec::arch::Widths;
use crate::spec::config::{Config, Hybrid};
use crate::store::{CheckpointRow, Status, WriteOp, keys, now_secs};

use super::checkpoint::{CheckpointMeta, Partial, checkpoint_paths, save_checkpoint};
use super::context::{RunContext, build_seeded_net, resolve_device};
use super::eval::{Scores, evaluate, reestimate_bn, to_images, to_targets};
use super::record::{MetricSink, largest_add_std, record_hw_cost, weight_snapshot};
use super::sgd::{Sgd, lr_at};
use super::step::{StepLosses, StepSpec, aug_exec, train_step};
use super::{Outcome, TrainError};

/// Whether channels are sorted at the start of `epoch` (0-based): NetAug sorts only while width
/// augmentation is on (the first `width_epochs`), and only when there is an augmented model.
pub fn sorts_channels(cfg: &Config, epoch: usize, width_epochs: usize) -> bool {
    cfg.aug.hybrid != Hybrid::None && cfg.aug.sort_channels && epoch < width_epochs
}

/// How many steps, and when the learning rate and the width augmentation change.
struct Schedule {
    total_steps: i64,
    warmup: i64,
    peak: f64,
    width_epochs: usize,
}

impl Schedule {
    fn of(cfg: &Config, d: &data::Dataset) -> Result<Self, TrainError> {
        let t = &cfg.train;
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
        Ok(Self {
            total_steps: steps_per_epoch * t.epochs as i64,
            warmup: (t.warmup_epochs * steps_per_epoch as f64).round() as i64,
            peak: t.peak_lr(),
            width_epochs: (cfg.aug.stop_width_frac * t.epochs as f64).ceil() as usize,
        })
    }
}

/// Steps whose losses are read back to the host at once: one synchronisation per this many steps
/// on CUDA (on the CPU reading is free, but the loop is the same).
const LOSS_READ_EVERY: usize = 16;

/// Losses of the steps not read back yet, with when each step ended.
#[derive(Default)]
struct LossBuffer {
    steps: Vec<(i64, usize, f64, StepLosses)>,
    /// Σ loss × images of the steps read so far this epoch.
    sum: f64,
    /// Σ augmented loss × images, and the images, of those of them that had an augmented pass.
    aug_sum: f64,
    aug_images: usize,
}

impl LossBuffer {
    fn push(&mut self, step: i64, images: usize, losses: StepLosses) {
        self.steps.push((step, images, now_secs(), losses));
    }

    fn len(&self) -> usize {
        self.steps.len()
    }

    /// Read every pending loss in one transfer, record them at their steps' times, and fail at
    /// the first that is not finite; the last tiny-model loss (NaN with none pending).
    fn flush(&mut self, sink: &mut MetricSink<'_>, epoch: i64) -> Result<f64, TrainError> {
        if self.steps.is_empty() {
            return Ok(f64::NAN);
        }
        let steps = std::mem::take(&mut self.steps);
        let read = |ts: Vec<&Tensor>| -> Result<Vec<f64>, TrainError> {
            if ts.is_empty() {
                return Ok(Vec::new());
            }
            let all = Tensor::f_stack(&ts, 0)?.f_to_kind(tch::Kind::Double)?;
            Ok(Vec::<f64>::try_from(all.to_device(tch::Device::Cpu))?)
        };
        let tiny = read(steps.iter().map(|s| &s.3.tiny).collect())?;
        let aug = read(steps.iter().filter_map(|s| s.3.aug.as_ref()).collect())?;
        let mut aug = aug.into_iter();
        for ((step, images, wall, losses), t) in steps.iter().zip(&tiny) {
            let a = losses.aug.as_ref().and_then(|_| aug.next());
            for value in std::iter::once(*t).chain(a) {
                if !value.is_finite() {
                    return Err(TrainError::Diverged {
                        step: *step,
                        loss: value,
                    });
                }
            }
            sink.push_at(keys::TRAIN_LOSS, *step, epoch, *t, *wall);
            if let Some(a) = a {
                sink.push_at(keys::TRAIN_LOSS_AUG, *step, epoch, a, *wall);
                self.aug_sum += a * *images as f64;
                self.aug_images += images;
            }
            self.sum += t * *images as f64;
        }
        Ok(tiny.last().copied().unwrap_or(f64::NAN))
    }
}

/// How an epoch's steps ended: all trained, or stopped part-way (what was trained so far).
enum EpochRun {
    Done(Partial),
    Stopped(Partial),
}

/// One run's training state on its thread: the model, optimiser and data, and where it is.
struct Trainer<'a> {
    ctx: &'a RunContext<'a>,
    cfg: &'a Config,
    device: tch::Device,
    splits: data::Splits,
    /// The training set in the GPU's memory (`data.on_device`), when the run trains on one.
    resident: Option<data::resident::Resident>,
    vs: nn::VarStore,
    net: Net,
    opt: Sgd,
    rng: Rng,
    tiny: Widths,
    sched: Schedule,
    /// Histogram bin edges per layer, fixed at the first snapshot.
    edges: HashMap<String, Edges>,
    step: i64,
    /// The process's CPU, memory, threads (and GPU), recorded as `sys/*` metrics.
    sys: SysSampler,
    /// Whether the log already warned that a BN layer's inputs sit beyond float32's resolution.
    warned_bn_offset: bool,
}

#[cfg(test)]
thread_local! {
    /// Tests: make this thread's runs on the CPU take their batches from a resident copy, as a
    /// GPU's do (`data.on_device`), to show the loop trains the same either way.
    pub(super) static RESIDENT_ON_CPU: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`keys::VAL_BN_OFFSET`] above which float32's spacing at the running mean exceeds σ / 1.2.
const BN_OFFSET_WARN: f64 = 1e7;

/// Train the run described by `ctx` until it finishes, is stopped, or fails.
pub fn train(ctx: &RunContext<'_>) -> Result<Outcome, TrainError> {
    let mut tr = Trainer::new(ctx)?;
    let (epoch0, mut partial) = match &ctx.resume {
        Some(ck) => tr.resume(ck)?,
        None => {
            let rows = weight_snapshot(&tr.net, ctx.run, 0, &mut tr.edges)?;
            ctx.writer.send(WriteOp::Histograms(rows))?;
            record_hw_cost(ctx, &tr.splits.train)?;
            (0, Partial::default())
        }
    };
    let mut sink = MetricSink {
        run: ctx.run,
        writer: ctx.writer,
        rows: Vec::new(),
    };
    let epochs = tr.cfg.train.epochs;
    ctx.writer.status(ctx.run, Status::Running, None);
    (ctx.emit)(Event::Running {
        run: ctx.run,
        epoch: epoch0 as i64,
        total_epochs: epochs as i64,
        step: tr.step,
        total_steps: tr.sched.total_steps,
    });
    let mut val_score = 0.0;
    for epoch in epoch0..epochs {
        let result = tr.train_epoch(epoch, std::mem::take(&mut partial), &mut sink);
        match result.inspect_err(|_| sink.ship())? {
            EpochRun::Done(stats) => {
                val_score = tr.end_epoch(epoch as i64 + 1, &stats, &mut sink)?;
            }
            EpochRun::Stopped(part) => {
                sink.ship();
                if part.batches > 0 {
                    // Where it stopped, so a resume continues at the next batch.
                    let (vs, opt) = (&tr.vs, &tr.opt);
                    save_checkpoint(ctx, vs, opt, tr.rng, epoch as i64, tr.step, part)?;
                    (ctx.emit)(Event::CheckpointSaved {
                        run: ctx.run,
                        epoch: epoch as i64,
                        step: tr.step,
                    });
                }
                return Ok(Outcome::Stopped);
            }
        }
    }
    if epoch0 == epochs {
        // Resumed after its last epoch (stopped before the test evaluation): the checkpoint holds
        // the tiny model's BN statistics, so this repeats that epoch's validation figure.
        val_score = tr.eval_tiny(&tr.splits.val)?.primary();
    }
    let test_score = if tr.cfg.eval.test {
        Some(tr.test(&mut sink)?)
    } else {
        None
    };
    Ok(Outcome::Finished {
        val_score,
        test_score,
    })
}

impl<'a> Trainer<'a> {
    /// Load the data and build the model and optimiser (weights from the run's seed).
    fn new(ctx: &'a RunContext<'a>) -> Result<Self, TrainError> {
        let cfg = ctx.config;
        let t = &cfg.train;
        let device = resolve_device(t.device)?;
        let splits = data::load(&cfg.data)?;
        // Weights are drawn on the CPU's generator and then moved, so a seed starts the same run
        // on any device (CUDA's generator draws another stream from the same seed).
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let net = build_seeded_net(cfg, &vs.root(), &splits.train);
        if device != tch::Device::Cpu {
            vs.set_device(device);
        }
        let sched = Schedule::of(cfg, &splits.train)?;
        let resident = match device {
            tch::Device::Cuda(i) if cfg.data.on_device => {
                let need = data::resident::bytes(&splits.train) as u64;
                let free = crate::ops::adder::cuda_memory(i).map_or(0, |(free, _)| free);
                (need <= free / 4)
                    .then(|| data::resident::Resident::new(&splits.train, &splits.norm, device))
            }
            #[cfg(test)]
            tch::Device::Cpu if RESIDENT_ON_CPU.with(std::cell::Cell::get) => Some(
                data::resident::Resident::new(&splits.train, &splits.norm, device),
            ),
            _ => None,
        };
        Ok(Self {
            ctx,
            cfg,
            device,
            resident,
            tiny: net.spec.base_widths(),
            opt: Sgd::for_run(&vs, &net, t),
            rng: Rng::derive(t.seed, 0xC0FFEE, 0),
            splits,
            vs,
            net,
            sched,
            edges: HashMap::new(),
            warned_bn_offset: false,
            step: 0,
            sys: SysSampler::new(
                host::SAMPLE_EVERY,
                match device {
                    tch::Device::Cuda(i) => u32::try_from(i).ok(),
                    _ => None,
                },
            ),
        })
    }

    /// Restore model, optimiser, RNG and position from checkpoint `ck`; the epoch to start at,
    /// and what of it was trained already (a checkpoint taken mid-epoch).
    fn resume(&mut self, ck: &CheckpointRow) -> Result<(usize, Partial), TrainError> {
        let (model, optim) = checkpoint_paths(Path::new(&ck.path));
        let bad = |path: &Path, message: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        self.vs
            .load(&model)
            .map_err(|e| bad(&model, e.to_string()))?;
        let saved = Tensor::load_multi_with_device(&optim, self.device)
            .map_err(|e| bad(&optim, e.to_string()))?;
        self.opt.load_state(&saved).map_err(|m| bad(&optim, m))?;
        let meta: CheckpointMeta = serde_json::from_str(&ck.rng_state)
            .map_err(|e| bad(Path::new(&ck.path), e.to_string()))?;
        self.rng = Rng::new(meta.rng);
        self.step = ck.step;
        self.edges = self.ctx.histogram_edges.clone();
        let at = match meta.partial.batches {
            0 => String::new(),
            b => format!(", {b} batches into epoch {}", ck.epoch + 1),
        };
        self.ctx.writer.log(
            self.ctx.run,
            log::Level::Info,
            format!("resumed from epoch {} (step {}{at})", ck.epoch, ck.step),
        );
        Ok((ck.epoch as usize, meta.partial))
    }

    /// The tiny model on one split, with whatever BN statistics it holds.
    fn eval_tiny(&self, data: &Arc<data::Dataset>) -> Result<Scores, TrainError> {
        Ok(evaluate(
            &self.net,
            &self.tiny,
            Exec::Tiny,
            data,
            &self.splits.norm,
            self.cfg.eval.batch_size,
            self.device,
        )?)
    }

    /// The steps of epoch `epoch` (0-based) from batch `start.batches` on (a resume mid-epoch),
    /// recording per-step metrics; what the epoch adds up to, or how far it got if stopped.
    fn train_epoch(
        &mut self,
        epoch: usize,
        start: Partial,
        sink: &mut MetricSink<'_>,
    ) -> Result<EpochRun, TrainError> {
        let (cfg, ctx) = (self.cfg, self.ctx);
        let t = &cfg.train;
        let epoch_no = epoch as i64 + 1;
        let width_on = epoch < self.sched.width_epochs;
        // Channels are sorted at an epoch's start only: mid-epoch, the checkpoint holds them sorted.
        if start.batches == 0 && sorts_channels(cfg, epoch, self.sched.width_epochs) {
            for p in self.net.sort_channels(cfg.aug.sort_stage_channels) {
                self.opt.permute(&p);
            }
        }
        let d = &self.splits.train;
        let spec = LoaderSpec {
            batch_size: t.batch_size,
            train: true,
            augment: cfg.data.augment,
            seed: t.seed,
            epoch: epoch as u64,
            prefetch: cfg.data.prefetch,
        };
        // The same batches either way: from the GPU's own copy, or the loader thread's.
        let device = self.device;
        let source: Box<dyn Iterator<Item = (Tensor, Tensor, usize)> + '_> = match &self.resident {
            Some(r) => Box::new(r.epoch(spec, start.batches)),
            None => Box::new(
                Loader::from_batch(d.clone(), &self.splits.norm, spec, start.batches).map(
                    move |b| {
                        (
                            to_images(&b.images, b.n, d, device),
                            to_targets(&b.labels, b.n, d, device),
                            b.n,
                        )
                    },
                ),
            ),
        };
        let began = Instant::now();
        let mut last_ship = Instant::now();
        let mut losses = LossBuffer {
            sum: start.loss_sum,
            aug_sum: start.aug_loss_sum,
            aug_images: start.aug_images,
            ..LossBuffer::default()
        };
        let (mut images, mut batches) = (start.images, start.batches);
        let mut images_now = 0usize;
        let so_far = |losses: &LossBuffer, images, batches| Partial {
            batches,
            loss_sum: losses.sum,
            aug_loss_sum: losses.aug_sum,
            aug_images: losses.aug_images,
            images,
            secs: start.secs + began.elapsed().as_secs_f64(),
        };
        for (x, y, n) in source {
            if let Some(why) = ctx.writer.disk_full() {
                // Nothing more would be recorded: stop where the last checkpoint is.
                return Err(TrainError::DiskFull(why));
            }
            if ctx.control.get() != ControlState::Run {
                // Pausing or stopping: what was trained is recorded first.
                losses.flush(sink, epoch_no)?;
                sink.ship();
            }
            if ctx.control.wait_while_paused(ctx.run, ctx.writer, ctx.emit) == ControlState::Stop {
                losses.flush(sink, epoch_no)?;
                return Ok(EpochRun::Stopped(so_far(&losses, images, batches)));
            }
            let step_start = Instant::now();
            let s = &self.sched;
            let lr = lr_at(self.step, s.warmup, s.total_steps, s.peak);
            let spec = StepSpec {
                config: cfg,
                tiny: &self.tiny,
                aug_exec: aug_exec(cfg.aug.hybrid),
                width_on,
                lr,
            };
            self.step += 1;
            let step = self.step;
            let step_losses = train_step(&self.net, &mut self.opt, &mut self.rng, &x, &y, &spec)?;
            let ips = n as f64 / step_start.elapsed().as_secs_f64().max(1e-9);
            sink.push(keys::TRAIN_LR, step, epoch_no, lr);
            sink.push(keys::TRAIN_IMAGES_PER_SEC, step, epoch_no, ips);
            for (key, value) in self.sys.sample(false) {
                sink.push(key, step, epoch_no, value);
            }
            losses.push(step, n, step_losses);
            images += n;
            images_now += n;
            batches += 1;
            if losses.len() >= LOSS_READ_EVERY || last_ship.elapsed().as_millis() >= 250 {
                let loss = losses.flush(sink, epoch_no)?;
                if last_ship.elapsed().as_millis() >= 250 {
                    sink.ship();
                    last_ship = Instant::now();
                    (ctx.emit)(Event::Progress {
                        run: ctx.run,
                        epoch: epoch_no,
                        step,
                        total_steps: s.total_steps,
                        loss,
                        images_per_sec: images_now as f64 / began.elapsed().as_secs_f64().max(1e-9),
                    });
                }
            }
        }
        losses.flush(sink, epoch_no)?;
        Ok(EpochRun::Done(so_far(&losses, images, batches)))
    }

    /// After epoch `epoch_no` (1-based): validation (and the widest augmented configuration),
    /// per-epoch metrics, histograms, the log line, the checkpoint; the validation top-1.
    fn end_epoch(
        &mut self,
        epoch_no: i64,
        stats: &Partial,
        sink: &mut MetricSink<'_>,
    ) -> Result<f64, TrainError> {
        let (cfg, ctx, device, step) = (self.cfg, self.ctx, self.device, self.step);
        let (eb, bn) = (cfg.eval.batch_size, cfg.eval.bn_images);
        let splits = &self.splits;
        if let Some(exec) = aug_exec(cfg.aug.hybrid).filter(|_| cfg.eval.aug_top1) {
            let max = &self.net.max;
            reestimate_bn(&self.net, max, exec, splits, bn, eb, device)?;
            let widest = evaluate(&self.net, max, exec, &splits.val, &splits.norm, eb, device)?;
            let key = match widest.seg {
                Some(_) => keys::VAL_MIOU_WIDEST,
                None => keys::VAL_TOP1_WIDEST,
            };
            sink.push(key, step, epoch_no, widest.primary());
        }
        // Last, so the running statistics saved with the checkpoint are the tiny model's.
        reestimate_bn(&self.net, &self.tiny, Exec::Tiny, splits, bn, eb, device)?;
        let val = self.eval_tiny(&splits.val)?;
        let bn_offset = self.bn_offset(epoch_no, step);
        let images_per_sec = stats.images as f64 / stats.secs.max(1e-9);
        let epoch_loss = stats.loss_sum / stats.images.max(1) as f64;
        sink.push(keys::TRAIN_EPOCH_LOSS, step, epoch_no, epoch_loss);
        if stats.aug_images > 0 {
            let aug_loss = stats.aug_loss_sum / stats.aug_images as f64;
            sink.push(keys::TRAIN_EPOCH_LOSS_AUG, step, epoch_no, aug_loss);
        }
        sink.push(
            keys::TRAIN_EPOCH_IMAGES_PER_SEC,
            step,
            epoch_no,
            images_per_sec,
        );
        push_scores(sink, "val", (step, epoch_no), &val);
        sink.push(keys::VAL_BN_OFFSET, step, epoch_no, bn_offset);
        for (key, value) in self.sys.sample(true) {
            sink.push(key, step, epoch_no, value);
        }
        let rows = weight_snapshot(&self.net, ctx.run, epoch_no, &mut self.edges)?;
        if let Some(std) = largest_add_std(&rows) {
            sink.push(keys::WEIGHTS_ADD_STD, step, epoch_no, std);
        }
        sink.ship();
        ctx.writer.send(WriteOp::Histograms(rows))?;
        ctx.writer.log(
            ctx.run,
            log::Level::Info,
            format!(
                "epoch {epoch_no}/{}: val {}, {images_per_sec:.0} images/s",
                cfg.train.epochs,
                describe(&val),
            ),
        );
        (ctx.emit)(Event::EpochEnded {
            run: ctx.run,
            epoch: epoch_no,
            val_score: val.primary(),
            val_top5: val.seg.is_none().then_some(val.top5),
        });
        save_checkpoint(
            ctx,
            &self.vs,
            &self.opt,
            self.rng,
            epoch_no,
            step,
            Partial::default(),
        )?;
        (ctx.emit)(Event::CheckpointSaved {
            run: ctx.run,
            epoch: epoch_no,
            step,
        });
        Ok(val.primary())
    }

    /// The largest |running mean| / σ of the tiny model's BN layers; the first time it passes
    /// [`BN_OFFSET_WARN`], a warning in the run's log that names the layer.
    fn bn_offset(&mut self, epoch_no: i64, step: i64) -> f64 {
        let worst = self
            .net
            .bn_offsets()
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((layer, offset)) = worst else {
            return 0.0;
        };
        if offset > BN_OFFSET_WARN && !self.warned_bn_offset {
            self.warned_bn_offset = true;
            self.ctx.writer.log(
                self.ctx.run,
                log::Level::Warn,
                format!(
                    "epoch {epoch_no} (step {step}): {layer} normalises values {offset:.1e} σ from 0; \
                     float32 cannot resolve their spread there, so evaluation may fall below \
                     training (compare the BN statistics with `shiftadd eval {}`)",
                    self.ctx.run
                ),
            );
        }
        offset
    }

    /// The test split, once, at the end (`test/*`); its top-1 (mean IoU for segmentation).
    fn test(&self, sink: &mut MetricSink<'_>) -> Result<f64, TrainError> {
        // The tiny model's BN statistics are those of the last epoch's re-estimation (saved with
        // its checkpoint, so a resumed run that had already trained every epoch has them too).
        let test = self.eval_tiny(&self.splits.test)?;
        let epoch = self.cfg.train.epochs as i64;
        push_scores(sink, "test", (self.step, epoch), &test);
        sink.ship();
        self.ctx.writer.log(
            self.ctx.run,
            log::Level::Info,
            format!(
                "test: {} ({} images, evaluated once at the end)",
                describe(&test),
                self.splits.test.len()
            ),
        );
        Ok(test.primary())
    }
}

/// Record one evaluation's scores under `split` (`val` or `test`): top-1, top-5 and loss, or
/// for segmentation mean IoU, pixel accuracy, loss and each class's IoU.
fn push_scores(sink: &mut MetricSink<'_>, split: &str, (step, epoch): (i64, i64), s: &Scores) {
    let test = split == "test";
    let pick = |val: &'static str, test_key: &'static str| if test { test_key } else { val };
    sink.push(pick(keys::VAL_LOSS, keys::TEST_LOSS), step, epoch, s.loss);
    match &s.seg {
        None => {
            sink.push(pick(keys::VAL_TOP1, keys::TEST_TOP1), step, epoch, s.top1);
            sink.push(pick(keys::VAL_TOP5, keys::TEST_TOP5), step, epoch, s.top5);
        }
        Some(seg) => {
            sink.push(pick(keys::VAL_MIOU, keys::TEST_MIOU), step, epoch, seg.miou);
            let acc = pick(keys::VAL_PIXEL_ACC, keys::TEST_PIXEL_ACC);
            sink.push(acc, step, epoch, seg.pixel_accuracy);
            for (class, iou) in seg.iou.iter().enumerate() {
                if let Some(iou) = iou {
                    sink.push(&keys::iou_of(split, class), step, epoch, *iou);
                }
            }
        }
    }
}

/// An evaluation in the log's words.
fn describe(s: &Scores) -> String {
    match &s.seg {
        None => format!(
            "top-1 {:.2} %, top-5 {:.2} %",
            s.top1 * 100.0,
            s.top5 * 100.0
        ),
        Some(seg) => format!(
            "mIoU {:.2} %, pixel accuracy {:.2} %",
            seg.miou * 100.0,
            seg.pixel_accuracy * 100.0
        ),
    }
}
