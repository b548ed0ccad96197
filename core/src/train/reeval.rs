//! A recorded run's tiny model evaluated again from one of its checkpoints, under several sources
//! of BN statistics: those saved with the checkpoint (re-estimated on `eval.bn_images` training
//! images at that epoch's end, what its validation used), statistics re-estimated on more or fewer
//! images, or each evaluation batch's own (train-mode BN). A model whose accuracy comes back with
//! better statistics was let down by its BN estimate; one that stays low has weights that do not
//! fit the task. Nothing is written.

use std::path::Path;

use crate::data::Dataset;
use crate::model::Exec;
use crate::store::RunId;

use super::eval::{Scores, reestimate_bn, score};
use super::probe::{ProbeError, Weights, load_recorded};

/// Where the BN statistics of one evaluation come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnStats {
    /// The running statistics saved with the checkpoint.
    Saved,
    /// Re-estimated on the first N training images (as every epoch end does with `eval.bn_images`).
    Reestimated(usize),
    /// Each evaluation batch normalised by its own statistics (`eval.batch_size` images).
    Batch,
}

impl BnStats {
    pub fn label(&self) -> String {
        match self {
            Self::Saved => "saved with the checkpoint".to_owned(),
            Self::Reestimated(n) => format!("re-estimated on {n} training images"),
            Self::Batch => "each batch's own (train-mode BN)".to_owned(),
        }
    }
}

/// Which split to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images the run trained on (the training set less the validation split), as
    /// they are stored, without the training augmentation: with [`Split::Test`] it tells a model
    /// that underfits (both low) from one that overfits (train far above test).
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

/// What [`reevaluate_run`] measured.
#[derive(Debug, Clone)]
pub struct Reevaluation {
    pub run: RunId,
    pub name: String,
    /// The checkpoint's (epoch, step).
    pub epoch: i64,
    pub step: i64,
    pub split: Split,
    pub images: usize,
    pub batch_size: usize,
    pub rows: Vec<(BnStats, Scores)>,
    /// [`crate::model::Net::bn_offsets`] of the statistics saved with the checkpoint, largest first.
    pub bn_offsets: Vec<(String, f64)>,
}

/// Evaluate run `run`'s tiny model from its checkpoint `at` (not [`Weights::Init`]) on `split`
/// (its first `images` only, where given), once per entry of `stats`, each from the checkpoint's
/// weights and statistics as saved.
pub fn reevaluate_run(
    db: &Path,
    run: RunId,
    at: Weights,
    split: Split,
    images: Option<usize>,
    stats: &[BnStats],
) -> Result<Reevaluation, ProbeError> {
    let mut r = load_recorded(db, run, at, &[], |_| Ok(()))?;
    let (Some((epoch, step)), Some(file)) = (r.at, r.file.clone()) else {
        return Err(ProbeError::NoCheckpoint(run));
    };
    let data: &std::sync::Arc<Dataset> = match split {
        Split::Train => &r.splits.train,
        Split::Val => &r.splits.val,
        Split::Test => &r.splits.test,
    };
    let data = match images {
        Some(n) if n < data.len() => std::sync::Arc::new(data.head(n)),
        _ => data.clone(),
    };
    let (bs, device) = (r.cfg.eval.batch_size, r.vs.device());
    let tiny = r.net.spec.base_widths();
    let mut bn_offsets = r.net.bn_offsets();
    bn_offsets.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut rows = Vec::with_capacity(stats.len());
    for &s in stats {
        // Every evaluation starts from the checkpoint as saved: re-estimation and train-mode BN
        // both change the running statistics in place.
        r.vs.load(&file).map_err(|e| ProbeError::File {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        if let BnStats::Reestimated(n) = s {
            reestimate_bn(&r.net, &tiny, Exec::Tiny, &r.splits, n, bs, device)
                .map_err(super::TrainError::from)?;
        }
        let train_mode = s == BnStats::Batch;
        let scores = score(&data, &r.splits.norm, bs, device, |x| {
            r.net.forward(x, &tiny, train_mode, Exec::Tiny)
        })
        .map_err(super::TrainError::from)?;
        rows.push((s, scores));
    }
    Ok(Reevaluation {
        run,
        name: r.name,
        epoch,
        step,
        split,
        images: data.len(),
        batch_size: bs,
        rows,
        bn_offsets,
    })
}
