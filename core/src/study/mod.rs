//! Studies: a table of variants × seeds (a [`Study`], validated from its file) trained through
//! the run manager `parallel` at a time with the thread budget split between them, recorded in
//! `studies` / `study_runs`, and resumable: a rerun of the same study trains only the cells it
//! lacks and resumes interrupted ones. A cell whose config a finished (or diverged) run of the
//! database already trained (another study, an earlier edit of this one: a grid given one more
//! value) adopts that run instead of training it again. [`stats`] holds the table's statistics,
//! [`report`] the table itself (from the database alone) and its Markdown / CSV / LaTeX forms,
//! [`fit`] the augmented models' training loss beside the tiny models'.

pub mod fit;
pub mod report;
pub mod slurm;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use crate::prune::Curves;
use crate::run::{Command, Event, ManagerHandle};
use crate::spec::config::{Config, ConfigError};
use crate::spec::study::{Study, Variant};
use crate::store::{Reader, RunId, Status, StoreError, StudyRunRow, WriteOp, Writer};

/// Why a study ended without a complete table.
#[derive(Debug, thiserror::Error)]
pub enum StudyRunError {
    #[error("study stopped; rerun it to continue")]
    Stopped,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the run manager stopped answering: {0}")]
    ManagerGone(String),
    /// A cell's dataset is missing or damaged (found before anything was recorded).
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("run of cell {cell} refused: {reason}")]
    Refused { cell: String, reason: String },
    #[error("run {run} (cell {cell}) is {status} in another process; wait for it or stop it")]
    Busy {
        run: RunId,
        cell: String,
        status: Status,
    },
    #[error("run {run} (cell {cell}) was stopped; rerun the study to resume it")]
    RunStopped { run: RunId, cell: String },
    #[error("{0}")]
    Slurm(String),
    /// `parallel` cells would not fit the GPU they train on (found before anything was recorded).
    #[error("study refused: {0}")]
    Memory(String),
    #[error("{0}")]
    Cluster(#[from] crate::slurm::SlurmError),
}

/// What a study invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyOutcome {
    pub study: i64,
    /// Cells trained from scratch this time.
    pub trained: usize,
    /// Cells resumed from a checkpoint.
    pub resumed: usize,
    /// Cells already finished (or failed) before, adopted ones included.
    pub reused: usize,
    /// Cells filled with a finished (or diverged) run of the same config from outside this study.
    pub adopted: usize,
    /// Cells whose run failed (kept: a failed run is not retried).
    pub failed: usize,
    /// Cells stopped by the study's pruning rule (this time or before; not retrained).
    pub pruned: usize,
}

impl StudyOutcome {
    /// "2 trained, 0 resumed, 4 already done (3 adopted), 0 failed".
    pub fn counts(&self) -> String {
        let adopted = if self.adopted > 0 {
            format!(" ({} adopted)", self.adopted)
        } else {
            String::new()
        };
        let pruned = if self.pruned > 0 {
            format!(", {} pruned", self.pruned)
        } else {
            String::new()
        };
        format!(
            "{} trained, {} resumed, {} already done{adopted}, {} failed{pruned}",
            self.trained, self.resumed, self.reused, self.failed
        )
    }
}

/// How one cell will be filled.
enum Todo {
    Start,
    Resume(RunId),
}

/// What a study's invocation will do: its id, the cells already settled (counted in `out`), and
/// the cells left to train, in order.
struct Plan<'s> {
    id: i64,
    out: StudyOutcome,
    todo: VecDeque<(&'s Variant, u64, Todo)>,
}

/// Find or create the study's row, fill the cells the database already trained (adopting runs of
/// the same config), and list what is left.
fn plan<'s>(
    study: &'s Study,
    db: &Path,
    writer: &Writer,
    report: &mut dyn FnMut(String),
) -> Result<Plan<'s>, StudyRunError> {
    writer.flush()?;
    let reader = Reader::open(db)?;
    let identity = study.identity();
    let existing = reader
        .studies()?
        .into_iter()
        .rfind(|s| study.identifies(&s.identity))
        .map(|s| s.id);
    let id = match existing {
        Some(id) => {
            report(format!("continuing study {id} ({})", study.name));
            id
        }
        None => {
            let spec = serde_json::to_string(study).unwrap_or_default();
            writer.create_study(&study.name, &identity, &spec)?
        }
    };
    let done: HashMap<(String, u64), RunId> = reader
        .study_runs(id)?
        .into_iter()
        .map(|r| ((r.variant, r.seed), r.run))
        .collect();
    let mut out = StudyOutcome {
        study: id,
        trained: 0,
        resumed: 0,
        reused: 0,
        adopted: 0,
        failed: 0,
        pruned: 0,
    };
    let runs = reader.runs()?;
    let status: HashMap<RunId, Status> = runs.iter().map(|r| (r.id, r.status)).collect();
    // What a cell may adopt: a finished run, or one that diverged (a property of its config, like
    // a result); not a failure of the machine or the code, which a new run may not repeat.
    let settled: Vec<RunId> = runs
        .iter()
        .filter(|r| {
            r.status == Status::Finished
                || (r.status == Status::Failed
                    && r.reason
                        .as_deref()
                        .is_some_and(|m| m.starts_with("diverged")))
        })
        .map(|r| r.id)
        .collect();
    let mut todo: VecDeque<(&Variant, u64, Todo)> = VecDeque::new();
    // Built on the first missing cell: reading every settled run's config costs a query each.
    let mut adoptable: Option<HashMap<String, RunId>> = None;
    for (v, seed) in study.cells() {
        let cell = cell_name(v, seed);
        match done.get(&(v.name.clone(), seed)) {
            None => {
                let by_training = match &mut adoptable {
                    Some(a) => a,
                    None => adoptable.insert(settled_by_training(&reader, &settled)?),
                };
                match by_training.get(&training_key(&study.config(v, seed)?)) {
                    Some(&run) => {
                        writer.send(WriteOp::StudyRun(StudyRunRow {
                            study: id,
                            variant: v.name.clone(),
                            seed,
                            run,
                        }))?;
                        let diverged = status.get(&run) == Some(&Status::Failed);
                        report(format!(
                            "{cell}: adopted run {run}, which trained the same config{}",
                            if diverged { " (and diverged)" } else { "" }
                        ));
                        out.reused += 1;
                        out.adopted += 1;
                        out.failed += usize::from(diverged);
                    }
                    None => todo.push_back((v, seed, Todo::Start)),
                }
            }
            Some(&run) => match status.get(&run).copied().ok_or(StoreError::NoRun(run))? {
                Status::Finished => out.reused += 1,
                Status::Failed => {
                    out.reused += 1;
                    out.failed += 1;
                }
                Status::Pruned => {
                    out.reused += 1;
                    out.pruned += 1;
                }
                Status::Stopped | Status::Interrupted => {
                    todo.push_back((v, seed, Todo::Resume(run)));
                }
                status => return Err(StudyRunError::Busy { run, cell, status }),
            },
        }
    }
    report(format!(
        "study {id}: {} cells, {} to train, {} done",
        study.cells().count(),
        todo.len(),
        out.reused
    ));
    Ok(Plan { id, out, todo })
}

/// Run (or continue) `study` on `manager`'s threads, `parallel` cells at once; `report` gets a
/// line per event worth telling. Setting `stop` stops the cells in flight (resumable).
pub fn run(
    study: &Study,
    db: &Path,
    manager: &ManagerHandle,
    parallel: usize,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<StudyOutcome, StudyRunError> {
    // Every cell's data is there and whole before the study, or any run, is recorded.
    let mut checked = Vec::new();
    for (v, seed) in study.cells() {
        let data = study.config(v, seed)?.data;
        if !checked.contains(&data) {
            crate::data::check_available(&data)?;
            checked.push(data);
        }
    }
    let parallel = parallel.max(1);
    // On a GPU: `parallel` cells fit in its memory, or nothing starts.
    let configs = study
        .cells()
        .map(|(v, seed)| study.config(v, seed))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(why) = crate::train::memory::cuda_refusal(&configs, parallel) {
        return Err(StudyRunError::Memory(why));
    }
    let writer = manager.writer();
    let Plan { id, out, mut todo } = plan(study, db, writer, report)?;
    writer.flush()?;
    report_left(study, id, db, parallel, "", report)?;
    let mut cells = Cells {
        study,
        id,
        parallel,
        out,
        pending: HashMap::new(),
        next_request: 1u64 << 41,
        curves: match &study.prune {
            Some(_) => recorded_curves(id, db)?,
            None => Curves::new("cells"),
        },
    };
    let result = loop {
        while cells.pending.len() < parallel
            && let Some(next) = todo.pop_front()
        {
            cells.send(manager, next, report)?;
        }
        if cells.pending.is_empty() {
            break Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            break Err(StudyRunError::Stopped);
        }
        let event = match manager.events.recv_timeout(Duration::from_millis(250)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(e) => break Err(StudyRunError::ManagerGone(e.to_string())),
        };
        if let Err(e) = cells.on_event(event, writer, &manager.commands, report) {
            break Err(e);
        }
    };
    if result.is_err() {
        // Leave nothing of this study training behind; every cell stays resumable.
        for p in cells.pending.values() {
            if let Some(run) = p.run {
                let _ = manager.commands.send(Command::Stop(run));
            }
        }
    }
    writer.flush()?;
    result.map(|()| cells.out)
}

/// A cell sent to the run manager: its name, variant and seed, and its run once created.
struct InFlight<'s> {
    cell: String,
    variant: &'s Variant,
    seed: u64,
    run: Option<RunId>,
    /// Why it is being stopped by the pruning rule (the stop sent, not yet done).
    pruned: Option<String>,
    /// Its config's epochs: after the last no verdict is given (a stop would race its end).
    epochs: i64,
}

/// The cells of study `id` in flight, by the request that started them, and the tally so far.
struct Cells<'s> {
    study: &'s Study,
    id: i64,
    parallel: usize,
    out: StudyOutcome,
    pending: HashMap<u64, InFlight<'s>>,
    next_request: u64,
    /// The cells' validation curves, for the pruning rule (empty without one).
    curves: Curves,
}

impl<'s> Cells<'s> {
    /// Start (or resume) one cell: its config's threads shared among the cells in parallel.
    fn send(
        &mut self,
        manager: &ManagerHandle,
        (v, seed, what): (&'s Variant, u64, Todo),
        report: &mut dyn FnMut(String),
    ) -> Result<(), StudyRunError> {
        self.next_request += 1;
        let request = self.next_request;
        let cell = cell_name(v, seed);
        let mut cfg = self.study.config(v, seed)?;
        let epochs = cfg.train.epochs as i64;
        let command = match what {
            Todo::Start => {
                cfg.train.threads = threads_per_cell(cfg.train.threads, self.parallel);
                self.out.trained += 1;
                Command::Start {
                    config: Box::new(cfg),
                    name: format!("{}-{}-s{seed}", self.study.name, v.name),
                    tags: format!("study,study{}", self.id),
                    request,
                }
            }
            Todo::Resume(run) => {
                self.out.resumed += 1;
                report(format!("resuming run {run} ({cell})"));
                Command::Resume { run, request }
            }
        };
        manager
            .commands
            .send(command)
            .map_err(|e| StudyRunError::ManagerGone(e.to_string()))?;
        self.pending.insert(
            request,
            InFlight {
                cell,
                variant: v,
                seed,
                run: None,
                pruned: None,
                epochs,
            },
        );
        Ok(())
    }

    /// The request whose cell runs as `run`.
    fn of_run(&self, run: RunId) -> Option<u64> {
        self.pending
            .iter()
            .find(|(_, p)| p.run == Some(run))
            .map(|(r, _)| *r)
    }

    /// Take `run`'s cell out of flight, if it is one of ours.
    fn settle(&mut self, run: RunId) -> Option<InFlight<'s>> {
        let request = self.of_run(run)?;
        self.pending.remove(&request)
    }

    /// A cell's epoch ended: note its validation top-1 and, under a pruning rule, stop it if it
    /// has fallen out of reach (it is recorded as pruned once it has stopped).
    fn on_epoch(
        &mut self,
        run: RunId,
        epoch: i64,
        val_score: f64,
        commands: &crossbeam_channel::Sender<Command>,
        report: &mut dyn FnMut(String),
    ) -> Result<(), StudyRunError> {
        let Some(rule) = &self.study.prune else {
            return Ok(());
        };
        let Some(request) = self.of_run(run) else {
            return Ok(());
        };
        self.curves.record(run, epoch, val_score);
        let verdict = self.curves.verdict(rule, run, epoch);
        let Some(p) = self.pending.get_mut(&request) else {
            return Ok(());
        };
        if let (None, Some(why), true) = (&p.pruned, verdict, epoch < p.epochs) {
            report(format!("{}: run {run} {why}", p.cell));
            p.pruned = Some(why);
            commands
                .send(Command::Stop(run))
                .map_err(|e| StudyRunError::ManagerGone(e.to_string()))?;
        }
        Ok(())
    }

    /// Record what the manager says of a cell; an error ends the study (a cell refused or
    /// stopped from outside, the database failing).
    fn on_event(
        &mut self,
        event: Event,
        writer: &Writer,
        commands: &crossbeam_channel::Sender<Command>,
        report: &mut dyn FnMut(String),
    ) -> Result<(), StudyRunError> {
        match event {
            Event::EpochEnded {
                run,
                epoch,
                val_score,
                ..
            } => self.on_epoch(run, epoch, val_score, commands, report)?,
            Event::Created { request, run } => {
                if let Some(p) = self.pending.get_mut(&request) {
                    p.run = Some(run);
                    writer.send(WriteOp::StudyRun(StudyRunRow {
                        study: self.id,
                        variant: p.variant.name.clone(),
                        seed: p.seed,
                        run,
                    }))?;
                }
            }
            Event::Rejected { request, reason } => {
                if let Some(p) = self.pending.remove(&request) {
                    return Err(StudyRunError::Refused {
                        cell: p.cell,
                        reason,
                    });
                }
            }
            Event::Finished {
                run,
                val_score,
                test_score,
            } => {
                if let Some(p) = self.settle(run) {
                    let test =
                        test_score.map_or_else(|| "-".into(), |t| format!("{:.2}", t * 100.0));
                    report(format!(
                        "{}: run {run} finished, val {:.2} %, test {test} % (top-1; mIoU for segmentation)",
                        p.cell,
                        val_score * 100.0
                    ));
                }
            }
            Event::Failed { run, reason } => {
                if let Some(p) = self.settle(run) {
                    self.out.failed += 1;
                    report(format!("{}: run {run} failed: {reason}", p.cell));
                }
            }
            Event::Stopped { run } => match self.settle(run) {
                Some(InFlight {
                    pruned: Some(why), ..
                }) => {
                    self.out.pruned += 1;
                    writer.status(run, Status::Pruned, Some(why));
                }
                Some(p) => return Err(StudyRunError::RunStopped { run, cell: p.cell }),
                None => {}
            },
            _ => {}
        }
        Ok(())
    }
}

/// What a config trains, as text: the config with the thread count (which changes the speed, not
/// the experiment) cleared.
/// Say what is left of study `id` and how long it takes, priced at the `parallel` it trains at
/// now (which `--parallel` may set apart from the file's); `note` follows the estimate.
fn report_left(
    study: &Study,
    id: i64,
    db: &Path,
    parallel: usize,
    note: &str,
    report: &mut dyn FnMut(String),
) -> Result<(), StudyRunError> {
    let priced = Study {
        parallel,
        ..study.clone()
    };
    if let Some(left) = report::table(&priced, id, &Reader::open(db)?)?.left.text() {
        report(format!("{left}{note}"));
    }
    Ok(())
}

/// The validation curves of study `id`'s cells recorded so far (the pruning rule's reference).
fn recorded_curves(id: i64, db: &Path) -> Result<Curves, StudyRunError> {
    let reader = Reader::open(db)?;
    let mut curves = Curves::new("cells");
    for cell in reader.study_runs(id)? {
        // Top-1, or mean IoU for a segmentation cell (a run records one of the two).
        for key in [crate::store::keys::VAL_TOP1, crate::store::keys::VAL_MIOU] {
            for m in reader.metric_series(cell.run, key)? {
                curves.record(cell.run, m.epoch, m.value);
            }
        }
    }
    Ok(curves)
}

fn training_key(cfg: &Config) -> String {
    let mut c = cfg.clone();
    c.train.threads = 0;
    c.to_toml()
}

/// The `settled` runs by [`training_key`] (the earliest of equals).
fn settled_by_training(
    reader: &Reader,
    settled: &[RunId],
) -> Result<HashMap<String, RunId>, StudyRunError> {
    let mut runs = settled.to_vec();
    runs.sort_unstable();
    let mut out = HashMap::new();
    for run in runs {
        // A config this version cannot read trained something else.
        if let Ok(cfg) = Config::from_toml_str(&reader.config_toml(run)?, "run", &[]) {
            out.entry(training_key(&cfg)).or_insert(run);
        }
    }
    Ok(out)
}

/// Torch threads of one cell: the `train.threads` budget (0: the cores) split `parallel` ways.
fn threads_per_cell(budget: usize, parallel: usize) -> usize {
    let budget = match budget {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    (budget / parallel.max(1)).max(1)
}

fn cell_name(v: &Variant, seed: u64) -> String {
    format!("{} / seed {seed}", v.name)
}
