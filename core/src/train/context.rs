//! What a run's training thread is given ([`RunContext`]), its device, and the model it builds.

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, nn};

use crate::data::{self};
use crate::model::Net;
use crate::ops::stats::Edges;
use crate::protocol::{Control, Event};
use crate::spec::arch::{ArchSpec, OpSpec};
use crate::spec::config::{Config, DeviceChoice};
use crate::store::{CheckpointRow, RunId, Writer};

use super::TrainError;

pub fn resolve_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::NoCuda),
    }
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

/// Build the run's model as configured (tiny + the widest augmented sub-model it can sample).
pub fn build_net(cfg: &Config, root: &nn::Path<'_>, d: &data::Dataset) -> Net {
    let spec = ArchSpec::from_config(cfg, d.channels as i64, d.height as i64, d.classes as i64);
    let max = spec.max_widths(&cfg.aug);
    Net::new(root, spec, max, &OpSpec::from_config(cfg))
}

/// Held while a run seeds torch's global generator and initialises its weights.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`build_net`] with the weights of the run's seed (`train.seed`). Weight init draws from
/// torch's process-wide generator: it is seeded and the model built under one lock, so runs
/// training at once in this process (the app, a NAS search) each get their seed's weights.
pub fn build_seeded_net(cfg: &Config, root: &nn::Path<'_>, d: &data::Dataset) -> Net {
    let _init = INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(cfg.train.seed as i64);
    build_net(cfg, root, d)
}
