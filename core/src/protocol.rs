//! Everything that crosses threads between the run manager, the training threads and their
//! consumers (the UI, the CLI): [`Command`]s in, [`Event`]s out, the [`Control`] flag a training
//! loop polls between steps, and the [`Waker`] the manager calls after sending events. Only plain
//! data: configs, ids, numbers, strings.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::spec::config::Config;
use crate::store::{RunId, Status, Writer};

/// Requests to the run manager.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create a run from a validated config and start training it.
    Start {
        config: Box<Config>,
        name: String,
        tags: String,
        /// Echoed in [`Event::Created`] / [`Event::Rejected`] so the sender knows its run.
        request: u64,
    },
    /// Create a run now (status `queued`) and start it once no other run of this manager is
    /// training; queued runs start one at a time, in the order they were queued.
    Queue {
        config: Box<Config>,
        name: String,
        tags: String,
        request: u64,
    },
    /// Continue a run that is not active from its last checkpoint (or from scratch if it has none).
    Resume { run: RunId, request: u64 },
    /// Pause a running run after its current batch.
    Pause(RunId),
    /// Continue a paused run.
    Unpause(RunId),
    /// Stop a run after its current batch (or take it off the queue); it stays resumable from
    /// its last checkpoint.
    Stop(RunId),
    /// Stop every run of this manager after its current batch (each saves a checkpoint where it
    /// is) and empty the queue, recording `reason` (e.g. "stopped by SIGTERM").
    StopAll { reason: String },
    /// Stop every run, wait for them, and end the manager thread.
    Shutdown,
}

/// Notifications from the manager and the run threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run row exists (a start or a resume was accepted).
    Created {
        request: u64,
        run: RunId,
    },
    /// A start or resume was refused before any training began.
    Rejected {
        request: u64,
        reason: String,
    },
    /// Training (re)started at `epoch` (epochs already done) and `step`.
    Running {
        run: RunId,
        epoch: i64,
        total_epochs: i64,
        step: i64,
        total_steps: i64,
    },
    /// A few times per second while training.
    Progress {
        run: RunId,
        epoch: i64,
        step: i64,
        total_steps: i64,
        loss: f64,
        images_per_sec: f64,
    },
    /// `val_score`: the epoch's validation top-1, or mean IoU for segmentation (the figure runs
    /// are selected on); `val_top5`: its top-5 (`None` for segmentation).
    EpochEnded {
        run: RunId,
        epoch: i64,
        val_score: f64,
        val_top5: Option<f64>,
    },
    CheckpointSaved {
        run: RunId,
        epoch: i64,
        step: i64,
    },
    Paused {
        run: RunId,
    },
    Resumed {
        run: RunId,
    },
    /// `val_score`: the last validation top-1 (mean IoU for segmentation); `test_score`: the
    /// test set's, evaluated once at the end (`None` when the config turns it off).
    Finished {
        run: RunId,
        val_score: f64,
        test_score: Option<f64>,
    },
    Stopped {
        run: RunId,
    },
    Failed {
        run: RunId,
        reason: String,
    },
}

impl Event {
    /// Whether this event ends its run's thread.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Finished { .. } | Self::Stopped { .. } | Self::Failed { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlState {
    Run,
    Pause,
    Stop,
}

/// A run's control flag, shared between the manager and the run thread; checked every batch.
/// A stop may carry its reason (the first one given is kept).
#[derive(Debug, Default)]
pub struct Control(AtomicU8, Mutex<Option<String>>);

impl Control {
    /// Stop, saying why (unless an earlier stop already said).
    pub fn stop_because(&self, reason: &str) {
        if let Ok(mut r) = self.1.lock()
            && r.is_none()
            && self.get() != ControlState::Stop
        {
            *r = Some(reason.to_owned());
        }
        self.set(ControlState::Stop);
    }

    /// Why the run was stopped, if the stop said.
    pub fn stop_reason(&self) -> Option<String> {
        self.1.lock().ok().and_then(|r| r.clone())
    }

    pub fn set(&self, s: ControlState) {
        // Stop wins over everything; nothing un-stops a run.
        let v = match s {
            ControlState::Run => 0,
            ControlState::Pause => 1,
            ControlState::Stop => 2,
        };
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur != 2).then_some(v)
            });
    }

    pub fn get(&self) -> ControlState {
        match self.0.load(Ordering::SeqCst) {
            0 => ControlState::Run,
            1 => ControlState::Pause,
            _ => ControlState::Stop,
        }
    }

    /// Block while paused (recording the pause); returns the state to act on.
    pub fn wait_while_paused(
        &self,
        run: RunId,
        writer: &Writer,
        emit: &dyn Fn(Event),
    ) -> ControlState {
        if self.get() != ControlState::Pause {
            return self.get();
        }
        writer.status(run, Status::Paused, None);
        emit(Event::Paused { run });
        while self.get() == ControlState::Pause {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.get() == ControlState::Run {
            writer.status(run, Status::Running, None);
            emit(Event::Resumed { run });
        }
        self.get()
    }
}

/// Called after events are sent (e.g. `egui::Context::request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;
