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
