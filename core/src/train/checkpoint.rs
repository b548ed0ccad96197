//! Checkpoints: model and optimiser tensors written under temporary names then renamed (a kill
//! mid-write never leaves a torn checkpoint), recorded in the store with the RNG state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::rng::Rng;
use crate::store::{CheckpointRow, WriteOp};

use super::TrainError;
use super::context::RunContext;
use super::sgd::Sgd;

/// What a checkpoint stores beyond tensors (JSON in the `checkpoints.rng_state` column).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct CheckpointMeta {
    pub(super) rng: u64,
    /// Where in the next epoch a checkpoint taken mid-epoch (at a stop) is; absent (all zero)
    /// at an epoch's end.
    #[serde(default, flatten)]
    pub(super) partial: Partial,
}

/// The part of an epoch trained so far: its batches, and what its figures add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Partial {
    #[serde(default)]
    pub(super) batches: usize,
    /// Σ loss × images of those batches.
    #[serde(default)]
    pub(super) loss_sum: f64,
    /// Σ augmented loss × images, and the images, of those batches that had an augmented pass.
    #[serde(default)]
    pub(super) aug_loss_sum: f64,
    #[serde(default)]
    pub(super) aug_images: usize,
    #[serde(default)]
    pub(super) images: usize,
    /// Seconds spent training them.
    #[serde(default)]
    pub(super) secs: f64,
}

pub(super) fn checkpoint_paths(stem: &Path) -> (PathBuf, PathBuf) {
    (
        stem.with_extension("model.ot"),
        stem.with_extension("optim.ot"),
    )
}

pub(super) fn save_checkpoint(
    ctx: &RunContext<'_>,
    vs: &nn::VarStore,
    opt: &Sgd,
    rng: Rng,
    epoch: i64,
    step: i64,
    partial: Partial,
) -> Result<(), TrainError> {
    let dir = &ctx.checkpoint_dir;
    let fail = |path: &Path, message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
    // `epoch`: epochs completed. A mid-epoch checkpoint takes that epoch's record (the newest
    // wins) under a name of its own, and goes at the next epoch's end.
    let stem = if partial.batches == 0 {
        dir.join(format!("epoch-{epoch:04}"))
    } else {
        dir.join(format!("epoch-{epoch:04}-step-{step:08}"))
    };
    let (model, optim) = checkpoint_paths(&stem);
    // Serialised in memory, written by Rust (libtorch's own file writer aborts the process when
    // the disk fills), under temporary names, then renamed: a kill or a full disk mid-write never
    // leaves a torn checkpoint.
    let mut model_bytes = Vec::new();
    vs.save_to_stream(&mut model_bytes)
        .map_err(|e| fail(&model, e.to_string()))?;
    let mut optim_bytes = Vec::new();
    Tensor::save_multi_to_stream(&opt.state(), &mut optim_bytes)
        .map_err(|e| fail(&optim, e.to_string()))?;
    for (path, bytes) in [(&model, &model_bytes), (&optim, &optim_bytes)] {
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, bytes) {
            for p in [&model, &optim] {
                let _ = std::fs::remove_file(p.with_extension("tmp"));
            }
            return Err(if is_disk_full(&e) {
                TrainError::DiskFull(format!("cannot write checkpoint {}: {e}", path.display()))
            } else {
                fail(path, e.to_string())
            });
        }
    }
    std::fs::rename(model.with_extension("tmp"), &model)
        .map_err(|e| fail(&model, e.to_string()))?;
    std::fs::rename(optim.with_extension("tmp"), &optim)
        .map_err(|e| fail(&optim, e.to_string()))?;
    let keep = ctx.config.train.keep_checkpoints;
    ctx.writer.send(WriteOp::Checkpoint {
        row: CheckpointRow {
            run: ctx.run,
            epoch,
            step,
            // Absolute: a resume (or an import into another database) may start anywhere.
            path: std::path::absolute(&stem)
                .unwrap_or_else(|_| stem.clone())
                .display()
                .to_string(),
            rng_state: serde_json::json!(CheckpointMeta {
                rng: rng.state,
                partial
            })
            .to_string(),
        },
        keep,
    })?;
    if partial.batches > 0 {
        return Ok(());
    }
    // Files of checkpoints past the retention window, and of any mid-epoch one (this supersedes it).
    let old = epoch - keep as i64;
    if old >= 1 {
        let (m, o) = checkpoint_paths(&dir.join(format!("epoch-{old:04}")));
        let _ = std::fs::remove_file(m);
        let _ = std::fs::remove_file(o);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().contains("-step-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// No space left, a quota, or a file-size limit.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    ) || e.kind() == std::io::ErrorKind::StorageFull
}
