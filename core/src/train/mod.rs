//! Training: SGD with Nesterov momentum (its state checkpointable), warm-up + cosine learning rate,
//! label-smoothed cross-entropy, per-step and per-epoch metrics, a checkpoint at every epoch end,
//! and divergence detection. One run's training loop runs on one worker thread; tensors never
//! leave it.
//!
//! Layout: [`trainer`] (the loop), [`context`] (what a run is given, its device and model),
//! [`sgd`] (optimiser, schedule), [`step`] (one training step), [`eval`] (evaluation, BN
//! re-estimation), [`checkpoint`] (save, and what resume reads), [`record`] (metrics, hardware
//! cost, histograms), [`miou`] (segmentation scores from a confusion matrix), [`memory`] (what a
//! run needs of a GPU's memory, and a `parallel` that does not fit), [`probe`] (where a
//! step's update of the shared weights comes from),
//! [`reeval`] (a checkpoint evaluated again under other BN statistics). Only the run manager
//! (`run.rs`) starts [`train`].

mod checkpoint;
mod context;
mod eval;
pub mod memory;
mod miou;
mod probe;
mod record;
mod reeval;
mod sgd;
mod step;
mod trainer;

pub use context::{RunContext, build_net, build_seeded_net, resolve_device};
pub use eval::{Scores, SegScores, evaluate, in_order, reestimate_bn, score};
pub use miou::Confusion;
pub use probe::{
    GradSource, ParamKind, ProbeError, ProbeSpec, RunProbe, Sources, Weights, grad_sources,
    probe_run,
};
pub use record::{HIST_BINS, HIST_WIDTH_SD, weight_snapshot};
pub use reeval::{BnStats, Reevaluation, Split, reevaluate_run};
pub use sgd::{Sgd, lr_at};
pub use step::{StepLosses, StepSpec, aug_exec, train_step};
pub use trainer::{sorts_channels, train};

use std::path::PathBuf;

use crate::data::DataError;
use crate::store::StoreError;

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
    /// The disk (or a file-size limit) is full: what could not be written. The run resumes from
    /// its last whole checkpoint once there is space.
    #[error("disk full: {0}; free some space, then resume the run")]
    DiskFull(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("CUDA was requested (--device cuda) but no CUDA device is available")]
    NoCuda,
    /// A panic in the training code (a torch call tch unwraps, a bug): the run fails with it
    /// instead of its thread dying with the run left `running`.
    #[error("internal error: {0}")]
    Panic(String),
}

/// How a training call ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// `val_score`: the last epoch's validation top-1 (mean IoU for segmentation);
    /// `test_score`: the test set's, evaluated once at the end (`None` with `eval.test = false`).
    Finished {
        val_score: f64,
        test_score: Option<f64>,
    },
    Stopped,
}

#[cfg(test)]
mod tests;
