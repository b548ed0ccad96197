//! The run manager: runs train on named background threads; [`Command`]s come in and [`Event`]s go
//! out over bounded crossbeam channels, and an injected waker tells the consumer (the UI, the CLI)
//! that something arrived. SQLite is the source of truth; events only say that something new is
//! there. Only plain data crosses threads: configs, ids, numbers, strings.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::data;
use crate::ops::stats::Edges;
pub use crate::protocol::{Command, Control, ControlState, Event, Waker};
use crate::spec::config::Config;
use crate::store::{self, NewRun, Reader, RunId, Status, StoreError, Writer};
use crate::train::{self, Outcome, RunContext, TrainError};

/// The consumer's side of a running manager.
pub struct ManagerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    busy: Arc<AtomicUsize>,
    writer: Writer,
    thread: Option<JoinHandle<()>>,
}

impl ManagerHandle {
    /// The manager's database writer (shared: records of the caller go through the same thread).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs this manager is training or holds in its queue (updated within ~0.1 s).
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Stop all runs and wait for the manager to end.
    pub fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.commands.send(Command::Shutdown);
            let _ = t.join();
        }
    }
}

pub use crate::store::manage::checkpoint_dir;

/// Open the database (migrating it, marking dead runs interrupted) and start the manager thread.
pub fn spawn_manager(db: &Path, waker: Waker) -> Result<ManagerHandle, StoreError> {
    spawn_manager_with(db, waker, None)
}

/// [`spawn_manager`], with the runs' checkpoints under `checkpoints` (`run-<id>` folders) instead
/// of next to the database: a cluster task keeps them on the shared file system.
pub fn spawn_manager_with(
    db: &Path,
    waker: Waker,
    checkpoints: Option<PathBuf>,
) -> Result<ManagerHandle, StoreError> {
    let writer = Writer::open(db)?;
    let (cmd_tx, cmd_rx) = bounded::<Command>(64);
    let (ev_tx, ev_rx) = bounded::<Event>(1024);
    let db = db.to_path_buf();
    let busy = Arc::new(AtomicUsize::new(0));
    let manager_busy = busy.clone();
    let handle_writer = writer.clone();
    let thread = std::thread::Builder::new()
        .name("run-manager".into())
        .spawn(move || {
            Manager {
                db,
                checkpoints,
                writer,
                events: ev_tx,
                waker,
                runs: HashMap::new(),
                queue: VecDeque::new(),
                busy: manager_busy,
            }
            .serve(&cmd_rx);
        })
        .map_err(|source| StoreError::Dir {
            path: PathBuf::from("run-manager thread"),
            source,
        })?;
    Ok(ManagerHandle {
        commands: cmd_tx,
        events: ev_rx,
        busy,
        writer: handle_writer,
        thread: Some(thread),
    })
}

/// What a resume starts from.
struct Resume {
    config: Config,
    ckpt: Option<store::CheckpointRow>,
    edges: HashMap<String, Edges>,
}

struct RunThread {
    control: Arc<Control>,
    handle: JoinHandle<()>,
}

struct Manager {
    db: PathBuf,
    /// Where checkpoint folders go when not next to the database.
    checkpoints: Option<PathBuf>,
    writer: Writer,
    events: Sender<Event>,
    waker: Waker,
    runs: HashMap<RunId, RunThread>,
    /// Queued runs (rows exist, status `queued`), started one at a time when nothing trains.
    queue: VecDeque<(RunId, Config)>,
    busy: Arc<AtomicUsize>,
}

impl Manager {
    fn serve(mut self, commands: &Receiver<Command>) {
        loop {
            // Wake up now and then even without commands: a finished run lets the queue move.
            let cmd = match commands.recv_timeout(Duration::from_millis(100)) {
                Ok(cmd) => Some(cmd),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            self.runs.retain(|_, r| !r.handle.is_finished());
            match cmd {
                None => {}
                Some(Command::Start {
                    config,
                    name,
                    tags,
                    request,
                }) => {
                    if let Some((run, config)) = self.create(*config, name, tags, request) {
                        self.launch(run, config, None, HashMap::new());
                    }
                }
                Some(Command::Queue {
                    config,
                    name,
                    tags,
                    request,
                }) => {
                    if let Some(entry) = self.create(*config, name, tags, request) {
                        self.writer.log(
                            entry.0,
                            log::Level::Info,
                            "queued: starts when no other run of this session trains".into(),
                        );
                        self.queue.push_back(entry);
                    }
                }
                Some(Command::Resume { run, request }) => self.resume(run, request),
                Some(Command::Pause(run)) => self.control(run, ControlState::Pause),
                Some(Command::Unpause(run)) => self.control(run, ControlState::Run),
                Some(Command::Stop(run)) => self.stop(run),
                Some(Command::StopAll { reason }) => self.stop_all(&reason),
                Some(Command::Shutdown) => break,
            }
            if self.runs.is_empty()
                && let Some((run, config)) = self.queue.pop_front()
            {
                self.launch(run, config, None, HashMap::new());
            }
            self.busy
                .store(self.runs.len() + self.queue.len(), Ordering::SeqCst);
        }
        for (run, _) in std::mem::take(&mut self.queue) {
            self.unqueue(run, "the queue was cancelled at shutdown before it started");
        }
        for r in self.runs.values() {
            r.control.set(ControlState::Stop);
        }
        for (_, r) in self.runs.drain() {
            let _ = r.handle.join();
        }
        self.busy.store(0, Ordering::SeqCst);
    }

    fn stop(&mut self, run: RunId) {
        if let Some(i) = self.queue.iter().position(|(id, _)| *id == run) {
            self.queue.remove(i);
            self.unqueue(run, "taken off the queue before it started");
        } else {
            self.control(run, ControlState::Stop);
        }
    }

    fn stop_all(&mut self, reason: &str) {
        for (run, _) in std::mem::take(&mut self.queue) {
            self.unqueue(run, &format!("{reason} before it started"));
        }
        for r in self.runs.values() {
            r.control.stop_because(reason);
        }
    }

    /// A queued run that never started: stopped (resumable from scratch), with the reason.
    fn unqueue(&self, run: RunId, reason: &str) {
        self.writer
            .status(run, Status::Stopped, Some(reason.to_owned()));
        if let Err(e) = self.writer.flush() {
            log::error!("run {run}: its status may be lost: {e}");
        }
        self.emit(Event::Stopped { run });
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
        (self.waker)();
    }

    fn control(&self, run: RunId, s: ControlState) {
        match self.runs.get(&run) {
            Some(r) => r.control.set(s),
            None => log::warn!("run {run} is not running in this process; {s:?} ignored"),
        }
    }

    /// Check the device and the data, and create the run row; `None` (after a `Rejected` event)
    /// if any fails.
    fn create(
        &mut self,
        config: Config,
        name: String,
        tags: String,
        request: u64,
    ) -> Option<(RunId, Config)> {
        // Everything that would fail the run at its start is refused before it exists: the
        // device, then the data.
        let device = crate::train::resolve_device(config.train.device).map(|_| ());
        let checked = device
            .map_err(|e| e.to_string())
            .and_then(|()| data::check_available(&config.data).map_err(|e| e.to_string()));
        if let Err(reason) = checked {
            self.emit(Event::Rejected { request, reason });
            return None;
        }
        let new = NewRun {
            name,
            config_toml: config.to_toml(),
            dataset: config.data.dataset.as_str().into(),
            model: config.model.label().into(),
            operator: config.ops.kind.as_str().into(),
            seed: config.train.seed,
            tags,
            provenance: crate::host::provenance_json(),
        };
        match self.writer.create_run(new) {
            Ok(run) => {
                // Counted before anyone hears of it, so `busy` never reads 0 for a created run.
                self.busy.fetch_add(1, Ordering::SeqCst);
                self.emit(Event::Created { request, run });
                Some((run, config))
            }
            Err(e) => {
                self.emit(Event::Rejected {
                    request,
                    reason: e.to_string(),
                });
                None
            }
        }
    }

    fn resume(&mut self, run: RunId, request: u64) {
        match self.prepare_resume(run) {
            Ok(r) => {
                self.emit(Event::Created { request, run });
                self.launch(run, r.config, r.ckpt, r.edges);
            }
            Err(reason) => self.emit(Event::Rejected { request, reason }),
        }
    }

    fn prepare_resume(&self, run: RunId) -> Result<Resume, String> {
        if self.runs.contains_key(&run) || self.queue.iter().any(|(id, _)| *id == run) {
            return Err(format!("run {run} is already running"));
        }
        self.writer.flush().map_err(|e| e.to_string())?;
        let reader = Reader::open(&self.db).map_err(|e| e.to_string())?;
        let summary = reader.run(run).map_err(|e| e.to_string())?;
        let status = summary.status;
        if status.is_active() {
            return Err(format!("run {run} is {status} in another process"));
        }
        if status == Status::Finished {
            return Err(format!("run {run} has already finished"));
        }
        let toml = reader.config_toml(run).map_err(|e| e.to_string())?;
        let config =
            Config::from_toml_str(&toml, &format!("run {run}"), &[]).map_err(|e| e.to_string())?;
        let ckpt = reader.last_checkpoint(run).map_err(|e| e.to_string())?;
        let edges = reader
            .histograms(run)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|h| (h.layer, Edges(h.edges)))
            .collect();
        if let Some(c) = &ckpt {
            let model = Path::new(&c.path).with_extension("model.ot");
            if !model.is_file() {
                return Err(format!(
                    "run {run}: checkpoint file {} is missing",
                    model.display()
                ));
            }
        }
        self.writer.send_or_log(store::WriteOp::Claim(run));
        let (step, epoch) = ckpt.as_ref().map_or((0, 0), |c| (c.step, c.epoch));
        let removed = self
            .writer
            .truncate_after(run, step, epoch)
            .map_err(|e| e.to_string())?;
        self.writer.log(
            run,
            log::Level::Info,
            format!("resuming after epoch {epoch} (step {step}); {removed} metric rows recorded after it were removed"),
        );
        self.writer.status(run, Status::Queued, None);
        Ok(Resume {
            config,
            ckpt,
            edges,
        })
    }

    fn launch(
        &mut self,
        run: RunId,
        config: Config,
        resume: Option<store::CheckpointRow>,
        histogram_edges: HashMap<String, Edges>,
    ) {
        let control = Arc::new(Control::default());
        let writer = self.writer.clone();
        let events = self.events.clone();
        let waker = self.waker.clone();
        let checkpoint_dir = match &self.checkpoints {
            Some(root) => root.join(format!("run-{run}")),
            None => checkpoint_dir(&self.db, run),
        };
        let thread_control = control.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("run-{run}"))
            .spawn(move || {
                let threads = match config.train.threads {
                    0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                    n => n,
                };
                tch::set_num_threads(i32::try_from(threads).unwrap_or(1));
                let emit = |e: Event| {
                    // Progress may be dropped when the consumer lags (SQLite has it all); the rest may not.
                    if matches!(e, Event::Progress { .. }) {
                        let _ = events.try_send(e);
                    } else {
                        let _ = events.send(e);
                    }
                    waker();
                };
                let ctx = RunContext {
                    run,
                    config: &config,
                    writer: &writer,
                    control: &thread_control,
                    emit: &emit,
                    checkpoint_dir,
                    resume,
                    histogram_edges,
                };
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train::train(&ctx)))
                        .unwrap_or_else(|payload| Err(TrainError::Panic(panic_message(&*payload))));
                let event = match result {
                    Ok(Outcome::Finished {
                        val_score,
                        test_score,
                    }) => {
                        writer.status(run, Status::Finished, None);
                        Event::Finished {
                            run,
                            val_score,
                            test_score,
                        }
                    }
                    Ok(Outcome::Stopped) => {
                        let reason = thread_control
                            .stop_reason()
                            .unwrap_or_else(|| "stopped by user".into());
                        writer.status(run, Status::Stopped, Some(reason));
                        Event::Stopped { run }
                    }
                    Err(e) => {
                        let reason = e.to_string(); // a divergence reads "diverged: ..."
                        writer.log(run, log::Level::Error, reason.clone());
                        writer.status(run, Status::Failed, Some(reason.clone()));
                        Event::Failed { run, reason }
                    }
                };
                if let Err(e) = writer.flush() {
                    log::error!("run {run}: final records may be lost: {e}");
                }
                emit(event);
            });
        match spawned {
            Ok(handle) => {
                self.runs.insert(run, RunThread { control, handle });
            }
            Err(e) => {
                let reason = format!("cannot start a thread: {e}");
                self.writer
                    .status(run, Status::Failed, Some(reason.clone()));
                self.emit(Event::Failed { run, reason });
            }
        }
    }
}

/// The text of a panic's payload (its first line: torch appends a C++ backtrace).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    text.lines().next().unwrap_or(text).to_owned()
}

#[cfg(test)]
mod panic_tests {
    use super::panic_message;

    #[test]
    fn a_panic_becomes_its_first_line() {
        let caught = std::panic::catch_unwind(|| {
            panic!("{}", "index out of range in self\nframe #0: ...");
        })
        .expect_err("panicked");
        assert_eq!(panic_message(&*caught), "index out of range in self");
        let caught = std::panic::catch_unwind(|| panic!("plain")).expect_err("panicked");
        assert_eq!(panic_message(&*caught), "plain");
    }
}
