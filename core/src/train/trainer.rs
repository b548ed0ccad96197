//! The training loop of one run: epochs of steps, channel sorting, evaluation, checkpoints,
//! stop / pause, divergence, and the test evaluation at the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tch::{Tensor, nn};

use crate::data::{self, DataError, Loader, LoaderSpec};
use crate::model::Exec;
use crate::ops::stats::Edges;
use crate::protocol::{ControlState, Event};
use crate::rng::Rng;
use crate::spec::config::{Config, Hybrid};
use crate::store::{Status, WriteOp, keys};

use super::checkpoint::{CheckpointMeta, checkpoint_paths, save_checkpoint};
use super::context::{RunContext, build_net, resolve_device};
use super::eval::{evaluate, reestimate_bn, to_images};
use super::record::{MetricSink, record_hw_cost, weight_snapshot};
use super::sgd::{Sgd, lr_at};
use super::step::{StepSpec, aug_exec, train_step};
use super::{Outcome, TrainError};

/// Whether channels are sorted at the start of `epoch` (0-based): NetAug sorts only while width
/// augmentation is on (the first `width_epochs`), and only when there is an augmented model.
pub fn sorts_channels(cfg: &Config, epoch: usize, width_epochs: usize) -> bool {
    cfg.aug.hybrid != Hybrid::None && cfg.aug.sort_channels && epoch < width_epochs
}

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
