//! What every panel shares: the views, the state kept between starts ([`Persisted`]), and the
//! per-frame context a panel draws with ([`ViewCtx`]: data, selection, outboxes, the cost model
//! shown). Panels depend on this, not on the app that drives them.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use shiftadd_core::run::Command;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::RunId;

use crate::gui::data::cache::DataCache;
use crate::gui::data::searches;
use crate::gui::settings;
use crate::gui::widgets::export::Export;

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
    /// The database the selection below belongs to: run ids mean nothing in another one.
    pub db: Option<std::path::PathBuf>,
    pub view: View,
    /// The run Monitor, Weights and Hardware show.
    pub current: Option<RunId>,
    /// Runs selected for Compare.
    pub compare: Vec<RunId>,
    pub runs: settings::RunsSettings,
    pub compare_settings: settings::CompareSettings,
    /// The cost model every energy figure is shown under (Hardware view's toggle).
    pub hw_model: HwModel,
    /// Light or dark (the top bar's toggle).
    pub light: bool,
    /// The folder of the last export (the Save dialog opens there; any database).
    pub export_dir: Option<std::path::PathBuf>,
}

impl Persisted {
    /// Say that the selection was made in database `db` (a session saves this with it).
    pub fn in_database(mut self, db: &std::path::Path) -> Self {
        self.db = Some(canonical(db));
        self
    }

    /// Keep the selection only if it was made in database `db` (else start with none).
    pub fn for_database(mut self, db: &std::path::Path) -> Self {
        let db = canonical(db);
        if self.db.as_ref() != Some(&db) {
            self.current = None;
            self.compare.clear();
            self.db = Some(db);
        }
        self
    }

    /// Drop selected runs that `exists` does not know (deleted, or never in this database).
    pub fn prune(&mut self, exists: impl Fn(RunId) -> bool) {
        self.compare.retain(|r| exists(*r));
        if self.current.is_some_and(|r| !exists(r)) {
            self.current = None;
        }
    }
}

/// `db` with its folder resolved (not the file: a database created later keeps its name).
fn canonical(db: &std::path::Path) -> std::path::PathBuf {
    {
        match (db.parent(), db.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            })
            .map_or_else(|_| db.to_path_buf(), |d| d.join(name)),
            _ => db.to_path_buf(),
        }
    }
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
