//! What every panel shares: the views, the state kept between starts ([`Persisted`]), and the
//! per-frame context a panel draws with ([`ViewCtx`]: data, selection, outboxes, the cost model
//! shown). Panels depend on this, not on the app that drives them.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use shiftadd_core::run::Command;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::RunId;

use super::data::DataCache;
use super::export::Export;
use super::{compare, runs, searches};

/// The app's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum View {
    #[default]
    Launch,
    Monitor,
    Weights,
    Hardware,
    Compare,
    Nas,
    Studies,
}

impl View {
    pub const ALL: [Self; 7] = [
        Self::Launch,
        Self::Monitor,
        Self::Weights,
        Self::Hardware,
        Self::Compare,
        Self::Nas,
        Self::Studies,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Launch => "Launch",
            Self::Monitor => "Monitor",
            Self::Weights => "Weights",
            Self::Hardware => "Hardware",
            Self::Compare => "Compare",
            Self::Nas => "NAS",
            Self::Studies => "Studies",
        }
    }
}

/// State kept between starts (eframe stores it with the window geometry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Persisted {
    pub view: View,
    /// The run Monitor, Weights and Hardware show.
    pub current: Option<RunId>,
    /// Runs selected for Compare.
    pub compare: Vec<RunId>,
    pub runs: runs::RunsSettings,
    pub compare_settings: compare::CompareSettings,
    /// The cost model every energy figure is shown under (Hardware view's toggle).
    pub hw_model: HwModel,
}

/// What to do with runs still training when the window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitChoice {
    /// Stop them (each stays resumable from its last checkpoint).
    StopRuns,
    /// Keep training without a window; the process ends when they do.
    LeaveRunning,
}

/// Views share this per frame: the loaded data, the selection, and the outboxes.
pub struct ViewCtx<'a> {
    pub data: &'a mut DataCache,
    pub current: Option<RunId>,
    pub compare: &'a [RunId],
    /// Commands for the run manager, sent after the frame.
    pub commands: &'a mut Vec<Command>,
    pub export: &'a mut Export,
    /// NAS searches of this session.
    pub searches: &'a mut searches::Searches,
    pub now: Instant,
    /// The cost model energy figures are shown under (shared, persisted).
    pub hw_model: &'a mut HwModel,
}
