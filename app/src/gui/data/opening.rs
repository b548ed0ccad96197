//! Opening the database for writing off the UI thread: the window is up at once and says that
//! the database is being checked (SQLite's quick check reads every page of a large file), and
//! commands sent meanwhile wait for the run manager. [`open_in_background`] hands the app the
//! manager's channels straight away; a thread opens the manager, then forwards commands to it
//! and its events back. A database this user cannot write, or one that cannot be opened at all,
//! leaves the channels answering every start with the reason, and the app browses it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, select};
use shiftadd_core::run::{Command, Event, ManagerHandle, Waker, spawn_manager};
use shiftadd_core::store::StoreError;

/// Where the opening stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Opening {
    /// Checking and migrating the file (`bytes` long).
    Checking { bytes: u64 },
    /// The run manager is up: runs can start.
    Ready,
    /// This user cannot write the file: it is browsed, nothing can start.
    ReadOnly,
    /// The file cannot be opened for writing (damaged, not a shiftadd database, …): why.
    Failed(String),
}

impl Opening {
    /// The line the status bar shows while this lasts (`None` once ready).
    pub fn status(&self) -> Option<String> {
        match self {
            Self::Checking { bytes } => Some(format!(
                "checking the database ({:.0} MB) before anything is written to it; browsing works meanwhile",
                *bytes as f64 / 1e6
            )),
            Self::Ready | Self::ReadOnly => None,
            Self::Failed(why) => Some(format!("the database cannot be written: {why}")),
        }
    }
}

/// The manager being opened: the channels the app talks through at once, the state, and (once
/// opened) the manager itself, for after the window closes.
pub struct OpeningManager {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    pub state: Arc<Mutex<Opening>>,
    manager: Arc<Mutex<Option<ManagerHandle>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OpeningManager {
    /// Stop forwarding (waiting for the opening to end first) and hand over the manager, if the
    /// database could be opened for writing.
    pub fn finish(mut self) -> Option<ManagerHandle> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.manager.lock().ok()?.take()
    }
}

/// Open `db`'s run manager on a thread; the app gets its channels now.
pub fn open_in_background(db: &Path, waker: Waker) -> std::io::Result<OpeningManager> {
    let (cmd_tx, cmd_rx) = bounded::<Command>(64);
    let (ev_tx, ev_rx) = bounded::<Event>(256);
    let bytes = std::fs::metadata(db).map_or(0, |m| m.len());
    let state = Arc::new(Mutex::new(Opening::Checking { bytes }));
    let manager = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (db, state, slot, stop) = (
            db.to_path_buf(),
            state.clone(),
            manager.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("open-db".into())
            .spawn(move || {
                let set = |s: Opening| {
                    if let Ok(mut st) = state.lock() {
                        *st = s;
                    }
                };
                match spawn_manager(&db, waker.clone()) {
                    Ok(m) => {
                        set(Opening::Ready);
                        waker();
                        forward(&m, &cmd_rx, &ev_tx, &waker, &stop);
                        if let Ok(mut slot) = slot.lock() {
                            *slot = Some(m);
                        }
                    }
                    Err(e) => {
                        let reason = refusal(&db, &e);
                        set(match e {
                            StoreError::ReadOnly { .. } => Opening::ReadOnly,
                            e => Opening::Failed(e.to_string()),
                        });
                        waker();
                        refuse(&reason, &cmd_rx, &ev_tx, &waker, &stop);
                    }
                }
            })?
    };
    Ok(OpeningManager {
        commands: cmd_tx,
        events: ev_rx,
        state,
        manager,
        stop,
        thread: Some(thread),
    })
}

/// Commands to the manager, its events back, until the app goes or `stop` is set.
fn forward(
    m: &ManagerHandle,
    commands: &Receiver<Command>,
    events: &Sender<Event>,
    waker: &Waker,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        select! {
            recv(commands) -> c => match c {
                Ok(c) => {
                    if m.commands.send(c).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            recv(m.events) -> e => match e {
                Ok(e) => {
                    if events.send_timeout(e, Duration::from_secs(5)).is_err() {
                        return;
                    }
                    waker();
                }
                Err(_) => return,
            },
            default(Duration::from_millis(100)) => {}
        }
    }
}

/// The reason every start is refused with when the database cannot be written.
pub(super) fn refusal(db: &Path, e: &StoreError) -> String {
    match e {
        StoreError::ReadOnly { .. } => format!(
            "{} is read-only here (a read-only file, folder or mount): runs can be browsed, not started",
            db.display()
        ),
        e => format!("the database cannot be written: {e}"),
    }
}

/// Answer every start, queue or resume with `reason` until the app goes or `stop` is set.
pub(super) fn refuse(
    reason: &str,
    commands: &Receiver<Command>,
    events: &Sender<Event>,
    waker: &Waker,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let c = match commands.recv_timeout(Duration::from_millis(100)) {
            Ok(c) => c,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(_) => return,
        };
        let request = match c {
            Command::Start { request, .. }
            | Command::Queue { request, .. }
            | Command::Resume { request, .. } => request,
            Command::Shutdown => return,
            _ => continue,
        };
        let rejected = Event::Rejected {
            request,
            reason: reason.to_owned(),
        };
        if events
            .send_timeout(rejected, Duration::from_secs(5))
            .is_err()
        {
            return;
        }
        waker();
    }
}
