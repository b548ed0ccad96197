//! Trainings on a Slurm cluster: a list of run configs becomes one job array; each task trains one
//! run into a database of its own on node-local disk (SQLite in WAL mode is for one host only,
//! never NFS) and ships a consistent snapshot of it to the shared folder every few seconds and at
//! its end; the coordinator polls the jobs and imports the snapshots ([`crate::store::import`]), so
//! its database — and the app reading it — shows cluster runs live. Studies
//! ([`crate::study::slurm`]) and NAS generations ([`crate::nas`]) dispatch through [`Array`].
//!
//! The shared folder of an array (`<shared>/<what>-<identity>/`) holds `manifest.json` (what the
//! tasks train), `job.sh` (what `sbatch` runs), `cells/<task>.db` (the snapshots),
//! `checkpoints/<task>/` (so a requeued task continues on any node) and `logs/`. A task's run
//! carries the tag `slurm-task-<folder>-<task>`, the same for every job of that task, by which the
//! coordinator (and a requeued job) finds it.
//!
//! Slurm does the scheduling: `--array=0-N%K` throttles to `parallel` tasks at once,
//! `--signal=B:USR1@60` warns a task a minute before its time limit (it stops, saves a checkpoint
//! and requeues itself), `--requeue` lets preemption requeue it; `scancel` sends SIGTERM, and every
//! run stops after its current batch with a checkpoint.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::run::{Command, Event, ManagerHandle};
use crate::spec::config::{Config, ConfigError};
use crate::store::{
    self, Reader, RunId, Status, StoreError, StudyJobRow, StudyRunRow, WriteOp, Writer,
};

/// Why a Slurm dispatch or task went wrong (one line each).
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("{0}")]
    Slurm(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the run manager stopped answering: {0}")]
    ManagerGone(String),
}

/// How often a task ships its snapshot.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Where and how trainings are submitted.
#[derive(Debug, Clone)]
pub struct SlurmSpec {
    /// A folder every node and the coordinator see (NFS, Lustre, …).
    pub shared: PathBuf,
    /// More `sbatch` arguments (partition, account, time, GPUs), one per element.
    pub sbatch_args: Vec<String>,
    /// The `shiftadd` binary the tasks run.
    pub executable: PathBuf,
    /// How often the coordinator asks Slurm and imports snapshots.
    pub poll: Duration,
}

impl SlurmSpec {
    /// The spec for a coordinator on database `db`: the shared folder given (default
    /// `<db folder>/<db name>-slurm`), made absolute; this binary as the tasks' executable; polls
    /// every 2 s.
    pub fn for_db(
        db: &Path,
        shared: Option<&Path>,
        sbatch_args: Vec<String>,
    ) -> std::io::Result<Self> {
        let shared = match shared {
            Some(dir) => dir.to_path_buf(),
            None => {
                let stem = db
                    .file_stem()
                    .map_or_else(|| "studio".into(), |s| s.to_string_lossy().into_owned());
                db.with_file_name(format!("{stem}-slurm"))
            }
        };
        Ok(Self {
            shared: std::path::absolute(shared)?,
            sbatch_args,
            executable: std::env::current_exe()?,
            poll: Duration::from_secs(2),
        })
    }
}

/// One training (a study cell, a NAS proxy) as a task of the array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub variant: String,
    pub seed: u64,
    pub name: String,
    pub tags: String,
    /// The run's config (TOML).
    pub config: String,
    /// The task's file names in the shared folder (`cells/<file>.db`, `checkpoints/<file>/`).
    pub file: String,
}

impl Task {
    /// The tag that names the task's run (`slurm-task-…`, among its tags).
    pub fn tag(&self) -> Option<&str> {
        self.tags.split(',').find(|t| t.starts_with(TASK_TAG))
    }

    /// "variant / seed 1" for a study cell, else the run's name.
    pub fn label(&self) -> String {
        if self.variant.is_empty() {
            self.name.clone()
        } else {
            format!("{} / seed {}", self.variant, self.seed)
        }
    }
}

/// The prefix of the tag that ties a run to its task, so the coordinator finds it after import.
const TASK_TAG: &str = "slurm-task-";

/// What every task of an array reads: the study as its driver records it (`identity` empty for
/// NAS proxies), and the tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub identity: String,
    /// The study's JSON (the `studies.spec` column).
    pub spec: String,
    pub tasks: Vec<Task>,
}

/// A study's folder in the shared directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// `<shared>/<study name>-<16 hex digits of its identity>`: an edited study (another
    /// identity) gets a folder of its own.
    pub fn of(shared: &Path, name: &str, identity: &str) -> Self {
        let h = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            root: shared.join(format!("{}-{h:016x}", file_safe(name))),
        }
    }

    /// The layout a manifest file sits in.
    pub fn around(manifest: &Path) -> Self {
        Self {
            root: manifest
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        }
    }

    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    pub fn script(&self) -> PathBuf {
        self.root.join("job.sh")
    }

    pub fn cell_db(&self, file: &str) -> PathBuf {
        self.root.join("cells").join(format!("{file}.db"))
    }

    pub fn checkpoints(&self, file: &str) -> PathBuf {
        self.root.join("checkpoints").join(file)
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The tag of the run of task `file`: the same for every job of it (a requeue, a rerun).
    pub fn task_tag(&self, file: &str) -> String {
        let folder = self
            .root
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        format!("{TASK_TAG}{folder}-{file}")
    }
}

/// A file name for one cell of a study (`variant`, `seed`), unique whatever the names: the
/// file-safe name (cut to 60 characters) and 16 hex digits of a stable hash of the exact name —
/// `a b` and `a_b` read alike but name different files.
pub(crate) fn cell_file(variant: &str, seed: u64) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not promised to be).
    let hash = variant.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let safe: String = file_safe(variant).chars().take(60).collect();
    format!("{safe}-{hash:016x}-s{seed}")
}

/// A name as a file name: letters, digits, `-`, `_`, `.`; anything else becomes `_`.
pub(crate) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn slurm_error(message: String) -> SlurmError {
    SlurmError::Slurm(message)
}

fn io_error(path: &Path, e: &std::io::Error) -> SlurmError {
    slurm_error(format!("{}: {e}", path.display()))
}

/// Run a Slurm command; its standard output.
fn slurm_tool(tool: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Process::new(tool).args(args).output().map_err(|e| {
        slurm_error(format!(
            "cannot run `{tool}`: {e} (is this a Slurm login node? `--executor local` trains here)"
        ))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(slurm_error(format!(
            "`{tool} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            err.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The job id `sbatch --parsable` printed (`12345` or `12345;cluster`).
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let id = stdout.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_owned())
}

/// `squeue -h -r -j JOB -o %i|%T|%R` lines: array index → (state, reason or node).
pub fn parse_squeue(stdout: &str, job: &str) -> BTreeMap<usize, (String, String)> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.trim().splitn(3, '|');
        let (Some(id), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(index) = id
            .strip_prefix(job)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|i| i.parse().ok())
        else {
            continue;
        };
        out.insert(
            index,
            (state.to_owned(), parts.next().unwrap_or("").to_owned()),
        );
    }
    out
}

/// `scontrol -o show job JOB` lines: array index → (state, exit code), for the tasks that ended.
/// Tasks that never started share one record whose `ArrayTaskId` is a set (`2-3`, `4,6-9%2`).
pub fn parse_scontrol(stdout: &str) -> BTreeMap<usize, (String, String)> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let (Some(ids), Some(state)) = (field("ArrayTaskId"), field("JobState")) else {
            continue;
        };
        let exit = field("ExitCode").unwrap_or("?");
        let ids = ids.split('%').next().unwrap_or("");
        for part in ids.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) {
                for index in lo..=hi.min(lo + 100_000) {
                    out.insert(index, (state.to_owned(), exit.to_owned()));
                }
            }
        }
    }
    out
}

/// The tasks of `job` Slurm still holds (pending, running, completing, requeued).
fn queued(job: &str) -> Result<BTreeMap<usize, (String, String)>, SlurmError> {
    let args: Vec<String> = ["-h", "-r", "-j", job, "-o", "%i|%T|%R"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    match slurm_tool("squeue", &args) {
        Ok(text) => Ok(parse_squeue(&text, job)),
        // Once every task has ended and the job left the controller's memory.
        Err(SlurmError::Slurm(m)) if m.contains("Invalid job id") => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// How the tasks of `job` ended, where the controller still remembers (no accounting needed).
fn ended(job: &str) -> BTreeMap<usize, (String, String)> {
    let args = vec![
        "-o".to_owned(),
        "show".to_owned(),
        "job".to_owned(),
        job.to_owned(),
    ];
    slurm_tool("scontrol", &args)
        .map(|t| parse_scontrol(&t))
        .unwrap_or_default()
}

fn write_atomically(path: &Path, text: &str) -> Result<(), SlurmError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, &e))
}

fn make_executable(path: &Path) -> Result<(), SlurmError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error(path, &e))
}

/// The job script: the task's own process is the batch shell's (`exec`), so Slurm's signals reach
/// it.
fn job_script(executable: &Path, manifest: &Path) -> String {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    format!(
        "#!/bin/sh\n# Written by shiftadd (--executor slurm): one training per array task.\n\
         exec {} study-task {} \"$SLURM_ARRAY_TASK_ID\"\n",
        quote(executable),
        quote(manifest)
    )
}

/// What the coordinator has seen of one task.
#[derive(Debug, Default)]
struct Seen {
    modified: Option<(SystemTime, u64)>,
    run: Option<RunId>,
    status: Option<Status>,
    state: String,
}

/// A job array of trainings to dispatch: the tasks' manifest in its shared folder, and the
/// coordinator's database that the tasks' snapshots are imported into.
pub struct Array<'a> {
    pub db: &'a Path,
    pub writer: &'a Writer,
    pub layout: &'a Layout,
    pub manifest: &'a Manifest,
    /// The study whose cells these are: their tasks' states go to `study_jobs`.
    pub study: Option<i64>,
    /// Told each task's state as it changes.
    pub on_state: Option<OnState<'a>>,
}

/// Told (task index, Slurm task id, state, node or reason) as a task's state changes.
pub type OnState<'a> = &'a dyn Fn(usize, &str, &str, &str);

/// How a dispatched array ended.
#[derive(Debug)]
pub struct Dispatched {
    pub job: String,
    /// Per task, its run in the coordinator's database, and that run's status.
    pub runs: Vec<Option<RunId>>,
    pub statuses: Vec<Option<Status>>,
    /// How Slurm says each task ended: (state, exit code), where it still remembers.
    pub ended: BTreeMap<usize, (String, String)>,
    /// Whether this coordinator cancelled it (its stop flag).
    pub cancelled: bool,
}

impl Dispatched {
    /// "FAILED, exit 1:0", or "ended" where Slurm no longer knows.
    pub fn ended_text(&self, i: usize) -> String {
        self.ended.get(&i).map_or_else(
            || "ended".to_owned(),
            |(state, exit)| format!("{state}, exit {exit}"),
        )
    }

    /// Stopped as a whole: cancelled here, or every task that did not finish was cancelled by
    /// `scancel` elsewhere (its run stopped cleanly, or it never started).
    pub fn stopped(&self) -> bool {
        let mut cut = (0..self.runs.len())
            .filter(|&i| !matches!(self.statuses[i], Some(Status::Finished | Status::Failed)))
            .peekable();
        let any = cut.peek().is_some();
        let all_cancelled = cut.all(|i| {
            let cancelled = self
                .ended
                .get(&i)
                .is_some_and(|(st, _)| st.starts_with("CANCELLED"));
            self.statuses[i] == Some(Status::Stopped) || (self.statuses[i].is_none() && cancelled)
        });
        self.cancelled || (any && all_cancelled)
    }
}

impl Array<'_> {
    /// Write the manifest and job script, submit the array (`parallel` at once), follow it to its
    /// end importing what the tasks ship, and say how each task ended. `what` names it in reports.
    pub fn dispatch(
        &self,
        slurm: &SlurmSpec,
        parallel: usize,
        stop: &AtomicBool,
        what: &str,
        report: &mut dyn FnMut(String),
    ) -> Result<Dispatched, SlurmError> {
        let (layout, manifest, writer) = (self.layout, self.manifest, self.writer);
        for dir in [
            layout.root.join("cells"),
            layout.root.join("checkpoints"),
            layout.logs(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
        }
        let text = serde_json::to_string_pretty(manifest).unwrap_or_default();
        write_atomically(&layout.manifest(), &text)?;
        write_atomically(
            &layout.script(),
            &job_script(&slurm.executable, &layout.manifest()),
        )?;
        make_executable(&layout.script())?;
        let n = manifest.tasks.len();
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--array=0-{}%{}", n - 1, parallel.max(1)),
            "--signal=B:USR1@60".to_owned(),
            "--requeue".to_owned(),
            format!("--job-name=shiftadd-{}", file_safe(&manifest.name)),
            format!("--output={}", layout.logs().join("task-%a.out").display()),
        ];
        args.extend(slurm.sbatch_args.iter().cloned());
        args.push(layout.script().display().to_string());
        let job = parse_job_id(&slurm_tool("sbatch", &args)?)
            .ok_or_else(|| slurm_error("sbatch --parsable printed no job id".to_owned()))?;
        report(format!(
            "{what}: {n} runs submitted as Slurm job array {job} (at most {} at once); shared folder {}",
            parallel.max(1),
            layout.root.display()
        ));
        let record = |i: usize, state: &str, detail: &str| -> Result<(), SlurmError> {
            if let Some(tell) = self.on_state {
                tell(i, &format!("{job}_{i}"), state, detail);
            }
            let (Some(study), t) = (self.study, &manifest.tasks[i]) else {
                return Ok(());
            };
            Ok(writer.send(WriteOp::StudyJob(StudyJobRow {
                study,
                variant: t.variant.clone(),
                seed: t.seed,
                executor: "slurm".into(),
                job: format!("{job}_{i}"),
                state: state.into(),
                detail: detail.into(),
            }))?)
        };
        for i in 0..n {
            record(i, "PENDING", "submitted")?;
        }
        writer.flush()?;
        let mut seen: Vec<Seen> = (0..n).map(|_| Seen::default()).collect();
        let mut cancelled = false;
        loop {
            if stop.load(Ordering::Relaxed) && !cancelled {
                report(format!(
                    "cancelling job {job}: every run stops after its batch with a checkpoint"
                ));
                slurm_tool("scancel", std::slice::from_ref(&job))?;
                cancelled = true;
            }
            let listed = queued(&job)?;
            for (&i, (state, detail)) in &listed {
                if seen.get(i).is_some_and(|s| s.state != *state) {
                    record(i, state, detail)?;
                }
            }
            self.import_changed(&listed, &mut seen, &job, report)?;
            if listed.is_empty() {
                break;
            }
            std::thread::sleep(slurm.poll);
        }
        // The last snapshots (a task writes its final one before it exits).
        self.import_changed(&BTreeMap::new(), &mut seen, &job, report)?;
        let ended = ended(&job);
        for i in 0..n {
            match ended.get(&i) {
                Some((state, exit)) => record(i, state, &format!("exit {exit}"))?,
                None => record(i, "ENDED", "no longer known to Slurm")?,
            }
        }
        writer.flush()?;
        Ok(Dispatched {
            job,
            runs: seen.iter().map(|s| s.run).collect(),
            statuses: seen.iter().map(|s| s.status).collect(),
            ended,
            cancelled,
        })
    }

    /// Import each snapshot that changed since the last look, and tell what changed for its
    /// task's run.
    fn import_changed(
        &self,
        listed: &BTreeMap<usize, (String, String)>,
        seen: &mut [Seen],
        job: &str,
        report: &mut dyn FnMut(String),
    ) -> Result<(), SlurmError> {
        let mut any = false;
        for (i, (t, s)) in self.manifest.tasks.iter().zip(seen.iter_mut()).enumerate() {
            if let Some((state, where_)) = listed.get(&i)
                && *state != s.state
            {
                report(format!(
                    "{}: Slurm task {job}_{i} {state} ({where_})",
                    t.label()
                ));
                s.state.clone_from(state);
            }
            let path = self.layout.cell_db(&t.file);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            if s.modified == Some(stamp) {
                continue;
            }
            match store::import::import(self.db, &path) {
                Ok(_) => {
                    s.modified = Some(stamp);
                    any = true;
                }
                // A snapshot is renamed into place whole; a failure is the file system's, retried.
                Err(e) => report(format!("{}: snapshot not imported yet: {e}", t.label())),
            }
        }
        if !any {
            return Ok(());
        }
        let reader = Reader::open(self.db)?;
        let runs = reader.runs()?;
        for (t, s) in self.manifest.tasks.iter().zip(seen.iter_mut()) {
            let tag = t.tag();
            // The newest run of the task (a study cell may also hold an older local one).
            let Some(summary) = runs
                .iter()
                .filter(|r| tag.is_some_and(|tag| r.tags.split(',').any(|x| x == tag)))
                .max_by_key(|r| r.id)
            else {
                continue;
            };
            s.run = Some(summary.id);
            if s.status != Some(summary.status) {
                let detail = match summary.status {
                    Status::Finished => format!(
                        ", val top-1 {}, test top-1 {}",
                        pct(summary.last_val_top1),
                        pct(summary.test_top1)
                    ),
                    Status::Failed | Status::Stopped => {
                        format!(
                            ": {}",
                            summary.reason.as_deref().unwrap_or("no reason given")
                        )
                    }
                    _ => String::new(),
                };
                report(format!(
                    "{}: run {} {}{detail}",
                    t.label(),
                    summary.id,
                    summary.status
                ));
                s.status = Some(summary.status);
            }
        }
        Ok(())
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2} %", v * 100.0))
}

/// One task of an array, ready to train: what it trains, its local database, the shared folder.
#[derive(Debug, Clone)]
pub struct CellTask {
    pub manifest: Manifest,
    pub layout: Layout,
    pub task: Task,
    /// The task's own database on node-local disk.
    pub local_db: PathBuf,
}

impl CellTask {
    /// Read the manifest, pick task `index` (default: `$SLURM_ARRAY_TASK_ID`), and place the local
    /// database in `$SHIFTADD_LOCAL_DIR`, `$TMPDIR` or `/tmp` — seeded from the cell's snapshot
    /// when an earlier job of it (preempted, cancelled, out of time) left one.
    pub fn prepare(manifest: &Path, index: Option<usize>) -> Result<Self, SlurmError> {
        let text = std::fs::read_to_string(manifest).map_err(|e| io_error(manifest, &e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| slurm_error(format!("{}: {e}", manifest.display())))?;
        let index = match index {
            Some(i) => i,
            None => std::env::var("SLURM_ARRAY_TASK_ID")
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    slurm_error(
                        "no task index: pass one, or run under Slurm (SLURM_ARRAY_TASK_ID)".into(),
                    )
                })?,
        };
        let task = m.tasks.get(index).cloned().ok_or_else(|| {
            slurm_error(format!(
                "{} has {} tasks; there is no task {index}",
                manifest.display(),
                m.tasks.len()
            ))
        })?;
        let local = ["SHIFTADD_LOCAL_DIR", "TMPDIR"]
            .iter()
            .find_map(|v| std::env::var_os(v).filter(|d| !d.is_empty()))
            .map_or_else(std::env::temp_dir, PathBuf::from);
        let job = std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| std::process::id().to_string());
        let local_db = local.join(format!("shiftadd-{job}-{}.db", task.file));
        let t = Self {
            manifest: m,
            layout: Layout::around(manifest),
            task,
            local_db,
        };
        // Only the shared snapshot speaks for the cell; a local file is a leftover.
        t.remove_local();
        let snapshot = t.layout.cell_db(&t.task.file);
        if snapshot.is_file() {
            store::snapshot::restore(&snapshot, &t.local_db)?;
        }
        Ok(t)
    }

    /// Where the cell's checkpoints go (shared, so a requeued job continues on any node).
    pub fn checkpoints(&self) -> PathBuf {
        self.layout.checkpoints(&self.task.file)
    }

    /// Remove the local database (its snapshot in the shared folder holds everything).
    pub fn remove_local(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.local_db.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    fn ship(&self, writer: &Writer) -> Result<(), SlurmError> {
        writer.flush()?;
        Ok(store::snapshot::snapshot(
            &self.local_db,
            &self.layout.cell_db(&self.task.file),
        )?)
    }
}

/// How a task's cell ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CellOutcome {
    Finished,
    Failed(String),
    Stopped,
}

/// Train the task's cell on `manager` (opened on [`CellTask::local_db`] with the task's
/// checkpoint folder), shipping snapshots while it trains and once at its end.
pub fn run_task(
    t: &CellTask,
    manager: &ManagerHandle,
    report: &mut dyn FnMut(String),
) -> Result<CellOutcome, SlurmError> {
    let writer = manager.writer();
    writer.flush()?;
    let reader = Reader::open(&t.local_db)?;
    // The task's run from an earlier job of it (restored from its snapshot), found by its tag.
    let tag = t.task.tag();
    let earlier = reader
        .runs()?
        .into_iter()
        .filter(|r| tag.is_some_and(|tag| r.tags.split(',').any(|x| x == tag)))
        .max_by_key(|r| r.id)
        .map(|r| r.id);
    // A study's cell is recorded in the study (a NAS proxy task has no study).
    let study = match t.manifest.identity.as_str() {
        "" => None,
        identity => match reader
            .studies()?
            .into_iter()
            .rfind(|s| crate::spec::study::same_study(&s.identity, identity))
        {
            Some(s) => Some(s.id),
            None => Some(writer.create_study(&t.manifest.name, identity, &t.manifest.spec)?),
        },
    };
    let command = match earlier.map(|run| (run, reader.run(run).map(|s| s.status))) {
        Some((_, Ok(Status::Finished))) => {
            t.ship(writer)?;
            return Ok(CellOutcome::Finished);
        }
        Some((run, Ok(Status::Failed))) => {
            t.ship(writer)?;
            return Ok(CellOutcome::Failed(format!("run {run} had failed before")));
        }
        Some((run, _)) => {
            report(format!("resuming run {run} from its last checkpoint"));
            Command::Resume { run, request: 1 }
        }
        None => {
            let mut cfg = Config::from_toml_str(&t.task.config, &t.task.name, &[])?;
            cfg.train.threads = task_threads(cfg.train.threads);
            Command::Start {
                config: Box::new(cfg),
                name: t.task.name.clone(),
                tags: t.task.tags.clone(),
                request: 1,
            }
        }
    };
    drop(reader);
    manager
        .commands
        .send(command)
        .map_err(|e| SlurmError::ManagerGone(e.to_string()))?;
    // Snapshots on a thread of their own, so a long epoch still ships its steps.
    let done = Arc::new(AtomicBool::new(false));
    let shipper = {
        let (done, t, writer) = (done.clone(), t.clone(), writer.clone());
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let until = std::time::Instant::now() + SNAPSHOT_EVERY;
                    while std::time::Instant::now() < until && !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    if let Err(e) = t.ship(&writer) {
                        log::warn!("snapshot not shipped: {e}");
                    }
                }
            })
            .map_err(|e| slurm_error(format!("cannot start the snapshot thread: {e}")))?
    };
    let outcome = loop {
        let Ok(event) = manager.events.recv() else {
            break Err(SlurmError::ManagerGone("its channel closed".into()));
        };
        match event {
            Event::Created { run, .. } => {
                if let Some(study) = study {
                    writer.send(WriteOp::StudyRun(StudyRunRow {
                        study,
                        variant: t.task.variant.clone(),
                        seed: t.task.seed,
                        run,
                    }))?;
                }
                report(format!("run {run}: {}", t.task.label()));
            }
            Event::Rejected { reason, .. } => break Ok(CellOutcome::Failed(reason)),
            Event::EpochEnded {
                epoch, val_score, ..
            } => report(format!(
                "epoch {epoch}: val {:.2} % (top-1; mIoU for segmentation)",
                val_score * 100.0
            )),
            Event::Finished { .. } => break Ok(CellOutcome::Finished),
            Event::Failed { reason, .. } => break Ok(CellOutcome::Failed(reason)),
            Event::Stopped { .. } => break Ok(CellOutcome::Stopped),
            _ => {}
        }
    };
    done.store(true, Ordering::Relaxed);
    let _ = shipper.join();
    t.ship(writer)?;
    outcome
}

/// Torch threads of a task: the CPUs Slurm gave it (`SLURM_CPUS_PER_TASK`), else one under Slurm
/// (its default allocation), else the config's.
fn task_threads(configured: usize) -> usize {
    if let Some(n) = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
    {
        return n;
    }
    if std::env::var_os("SLURM_JOB_ID").is_some() {
        return 1;
    }
    configured
}

/// Cancel a study's job array (`scancel`): every task stops after its batch with a checkpoint.
pub fn cancel(job: &str) -> Result<(), SlurmError> {
    slurm_tool("scancel", &[job.to_owned()]).map(|_| ())
}

/// After a stop at SIGUSR1 (the time limit is near): put this task back in the queue, where it
/// continues from the checkpoint it just saved.
pub fn requeue_self() -> Result<(), SlurmError> {
    let (Ok(job), Ok(task)) = (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) else {
        return Ok(());
    };
    slurm_tool("scontrol", &["requeue".to_owned(), format!("{job}_{task}")]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_outputs_are_parsed() {
        assert_eq!(parse_job_id("4242\n").as_deref(), Some("4242"));
        assert_eq!(parse_job_id("4242;cluster\n").as_deref(), Some("4242"));
        assert_eq!(parse_job_id("sbatch: error\n"), None);
        let q = parse_squeue(
            "17_0|RUNNING|node1\n17_1|PENDING|(JobArrayTaskLimit)\n170_2|RUNNING|x\nbad\n",
            "17",
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q[&0], ("RUNNING".to_owned(), "node1".to_owned()));
        assert_eq!(q[&1].0, "PENDING");
        let s = parse_scontrol(
            "JobId=18 ArrayJobId=17 ArrayTaskId=1 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0\n\
             JobId=17 ArrayJobId=17 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0\n",
        );
        assert_eq!(s[&1], ("FAILED".to_owned(), "1:0".to_owned()));
        assert_eq!(s[&0].0, "COMPLETED");
        let pending = parse_scontrol(
            "JobId=20 ArrayJobId=20 ArrayTaskId=2-3,5%2 JobState=CANCELLED ExitCode=0:0\n",
        );
        assert_eq!(pending.keys().copied().collect::<Vec<_>>(), vec![2, 3, 5]);
    }

    #[test]
    fn the_job_script_execs_the_task_with_its_index() {
        let s = job_script(
            Path::new("/opt/it's/shiftadd"),
            Path::new("/shared/s-1/manifest.json"),
        );
        assert!(s.starts_with("#!/bin/sh\n"), "{s}");
        assert!(
            s.contains("exec '/opt/it'\\''s/shiftadd' study-task '/shared/s-1/manifest.json' \"$SLURM_ARRAY_TASK_ID\""),
            "{s}"
        );
        assert_eq!(file_safe("add aug/2"), "add_aug_2");
        // Two names that read alike as files are two files; one name is one file, always.
        assert_ne!(cell_file("a b", 0), cell_file("a_b", 0));
        assert_eq!(cell_file("a b", 0), cell_file("a b", 0));
        assert_ne!(cell_file("a b", 0), cell_file("a b", 1));
        assert!(cell_file("a b", 3).starts_with("a_b-") && cell_file("a b", 3).ends_with("-s3"));
        assert!(
            cell_file(&"x".repeat(500), 0).len() < 100,
            "long names are cut"
        );
    }
}
