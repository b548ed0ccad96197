//! The rows the writer records and the reader returns.

use serde::Serialize;

use super::schema::{CandidateStatus, RunId, Status};

/// What a new run row holds.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub name: String,
    pub config_toml: String,
    pub dataset: String,
    pub model: String,
    pub operator: String,
    pub seed: u64,
    pub tags: String,
    /// Where and with what it runs (JSON, see `host::Provenance`); empty when not known.
    pub provenance: String,
}

/// One run's figures for one metric key (the runs table's metric columns).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSummary {
    pub run: RunId,
    pub last: f64,
    pub max: f64,
    pub min: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub run: RunId,
    pub key: String,
    pub step: i64,
    pub epoch: i64,
    pub wall_time: f64,
    pub value: f64,
}

/// One weight histogram of one MF layer at one epoch (epoch 0 = before training).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramRow {
    pub run: RunId,
    pub layer: String,
    /// `stored`, `remapped` or `pow2`.
    pub kind: String,
    pub epoch: i64,
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub underflow: u64,
    pub overflow: u64,
    /// mean, std, kurtosis, kl_gaussian, kl_laplace, w1_to_stored (not for `stored`), op.
    pub stats: serde_json::Value,
}

/// One layer of one model's hardware cost (`detail`: a serialised `hw::LayerCost`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HwCostRow {
    pub run: RunId,
    /// The cost model that priced it: `shiftaddnas` or `project` (`spec::config::HwModel`).
    pub hw_model: String,
    /// `tiny`, `tiny-mult` or `augmented`.
    pub model: String,
    pub layer_index: i64,
    pub layer: String,
    pub detail: serde_json::Value,
}

/// One candidate of a NAS search (`run`: the search's own run row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NasCandidateRow {
    pub run: RunId,
    /// 1: the multiplicative SubNet; 2: the MF TargetNet inside it.
    pub stage: i64,
    pub generation: i64,
    /// JSON of the NAS architecture (`spec::space::NasArch`).
    pub arch: String,
    /// In the budget's unit (mJ or ms); stage 1: of the Mult SubNet, stage 2: of the MF TargetNet.
    pub cost: f64,
    pub proxy_accuracy: Option<f64>,
    pub status: CandidateStatus,
    pub proxy_run: Option<RunId>,
    /// Its proxy's Slurm task and state (`1234_5 RUNNING (node7)`), when trained on Slurm.
    pub slurm: Option<String>,
}

/// A study as stored: `identity` says whether a rerun is the same study; `spec` is its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyRow {
    pub id: i64,
    pub name: String,
    pub identity: String,
    pub spec: String,
    pub created_at: f64,
}

/// The run that fills one cell (variant × seed) of a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyRunRow {
    pub study: i64,
    pub variant: String,
    pub seed: u64,
    pub run: RunId,
}

/// Where one cell of a study trains, as its coordinator last saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyJobRow {
    pub study: i64,
    pub variant: String,
    pub seed: u64,
    /// `slurm`.
    pub executor: String,
    /// The scheduler's id of the cell's task (`1234_5`).
    pub job: String,
    /// The scheduler's state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, …).
    pub state: String,
    /// Where it runs or why it waits (a node, `(Priority)`), or how it ended (`exit 1:0`).
    pub detail: String,
}

impl StudyJobRow {
    /// Whether the scheduler still holds the task (not ended one way or another).
    pub fn is_live(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "COMPLETING"
                | "CONFIGURING"
                | "REQUEUED"
                | "RESIZING"
                | "SUSPENDED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "SIGNALING"
                | "STAGE_OUT"
        )
    }
}

/// A checkpoint record: files live at `path` (a stem; see `train::checkpoint`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub run: RunId,
    pub epoch: i64,
    pub step: i64,
    pub path: String,
    pub rng_state: String,
}

/// One run as listed by `shiftadd runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub dataset: String,
    pub model: String,
    pub operator: String,
    pub seed: i64,
    pub tags: String,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub epochs_done: Option<i64>,
    /// The last and the best validation top-1 — mean IoU for a segmentation run
    /// (`segmentation`): the figure runs are selected on.
    pub last_val_top1: Option<f64>,
    pub best_val_top1: Option<f64>,
    /// Top-1 (mean IoU for segmentation) on the test set, evaluated once at the end of the run
    /// (`test/top1`, `test/miou`); `None` for runs recorded before the validation split
    /// existed, or still training.
    pub test_top1: Option<f64>,
    /// Energy per inference of the tiny model under the run's own `hw.model` (`hw/energy_mj`).
    pub energy_mj: Option<f64>,
    /// The same under each cost model (`hw/<model>/energy_mj`); runs recorded before the
    /// simulator existed have only the project's (their `hw/energy_mj`).
    pub energy_shiftaddnas_mj: Option<f64>,
    pub energy_project_mj: Option<f64>,
    /// Globally unique: the same run in any database it was imported into.
    pub uid: String,
    /// Hidden from default listings (`shiftadd runs --all`, the app's "archived" toggle).
    pub archived: bool,
    pub notes: String,
    pub started_at: Option<f64>,
    pub heartbeat_at: Option<f64>,
    /// It scores pixels: its `*_top1` figures are mean IoU.
    pub segmentation: bool,
}

impl RunSummary {
    /// Seconds the run has trained so far or took (start to finish, or to its last heartbeat).
    pub fn duration_secs(&self) -> Option<f64> {
        let start = self.started_at?;
        let end = self.finished_at.or(self.heartbeat_at)?;
        Some((end - start).max(0.0))
    }

    /// Its tags, split at commas, empty ones dropped.
    pub fn tag_list(&self) -> impl Iterator<Item = &str> {
        self.tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

impl RunSummary {
    /// The tiny model's energy under cost model `hw_model` (`shiftaddnas` or `project`).
    pub fn energy_under(&self, hw_model: &str) -> Option<f64> {
        match hw_model {
            "shiftaddnas" => self.energy_shiftaddnas_mj,
            "project" => self.energy_project_mj,
            _ => None,
        }
    }
}
