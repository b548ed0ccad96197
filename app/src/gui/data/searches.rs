//! NAS searches and studies started from the app. Each runs its driver ([`nas::search`],
//! [`study::run`]) on its own thread with its own run manager on the same database: the driver
//! consumes that manager's events, so the app's manager and event stream stay as they are. The
//! app sees their candidates, cells and runs through the database, exactly as it sees ones
//! started by the CLI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};
use std::collections::BTreeMap;

use shiftadd_core::Config;
use shiftadd_core::deploy::{self, IntReport};
use shiftadd_core::nas::{self, NasOutcome};
use shiftadd_core::run::{ManagerHandle, Waker, spawn_manager};
use shiftadd_core::slurm::SlurmSpec;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::RunId;
use shiftadd_core::study::{self, StudyOutcome};

/// One search or study of this session; `T` is how it ends.
pub struct Job<T> {
    pub name: String,
    stop: Arc<AtomicBool>,
    lines: Receiver<String>,
    /// The newest progress line (what the CLI prints).
    pub last: String,
    handle: Option<JoinHandle<Result<T, String>>>,
    /// How it ended, once it has.
    pub outcome: Option<Result<T, String>>,
}

/// A NAS search of this session.
pub type SearchJob = Job<NasOutcome>;
/// A study of this session.
pub type StudyJob = Job<StudyOutcome>;
/// An integer program of a run made in this session (`export --int`).
pub type DeployJob = Job<IntReport>;

impl<T> Job<T> {
    pub fn running(&self) -> bool {
        self.handle.is_some()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Take new progress lines; collect the result once the thread has ended.
    fn poll(&mut self) -> Vec<String> {
        let lines: Vec<String> = self.lines.try_iter().collect();
        if let Some(l) = lines.last() {
            self.last.clone_from(l);
        }
        if self.handle.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(h) = self.handle.take()
        {
            self.outcome = Some(
                h.join()
                    .unwrap_or_else(|_| Err(format!("the {} thread panicked", self.name))),
            );
        }
        lines
    }

    /// Run `work` on a thread named `thread` (no run manager: it trains nothing).
    fn spawn_plain(
        name: String,
        thread: &str,
        waker: Waker,
        work: impl FnOnce(&(dyn Fn(String) + Sync)) -> Result<T, String> + Send + 'static,
    ) -> std::io::Result<Self>
    where
        T: Send + 'static,
    {
        let (tx, rx) = bounded(256);
        let handle = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let report = |line: String| {
                    let _ = tx.try_send(line);
                    waker();
                };
                let result = work(&report);
                waker();
                result
            })?;
        Ok(Self {
            name,
            stop: Arc::new(AtomicBool::new(false)),
            lines: rx,
            last: "starting".into(),
            handle: Some(handle),
            outcome: None,
        })
    }

    /// Run `work` on a thread named `thread` with its own run manager on `db`.
    fn spawn(
        name: String,
        thread: &str,
        db: PathBuf,
        waker: Waker,
        work: impl FnOnce(
            &Path,
            &ManagerHandle,
            &AtomicBool,
            &mut dyn FnMut(String),
        ) -> Result<T, String>
        + Send
        + 'static,
    ) -> std::io::Result<Self>
    where
        T: Send + 'static,
    {
        // The view shows the newest line; a UI that has not drained 256 lines drops new ones
        // until it does (the outcome comes through the thread's result, never a line).
        let (tx, rx) = bounded(256);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let manager = spawn_manager(&db, waker.clone()).map_err(|e| e.to_string())?;
                let mut report = |line: String| {
                    let _ = tx.try_send(line);
                    waker();
                };
                let result = work(&db, &manager, &flag, &mut report);
                manager.shutdown();
                waker();
                result
            })?;
        Ok(Self {
            name,
            stop,
            lines: rx,
            last: "starting".into(),
            handle: Some(handle),
            outcome: None,
        })
    }
}

/// What Launch chose for a study on Slurm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmChoice {
    /// The shared folder (`None`: `<db folder>/<db name>-slurm`).
    pub shared: Option<PathBuf>,
    pub sbatch_args: Vec<String>,
}

/// The searches started in this session.
pub struct Searches {
    db: PathBuf,
    waker: Waker,
    pub jobs: Vec<SearchJob>,
    pub studies: Vec<StudyJob>,
    /// Integer programs being made, by run.
    pub deploys: BTreeMap<RunId, DeployJob>,
    /// Reports of integer programs read from `exports/` (`None`: there is none yet), by run.
    pub reports: BTreeMap<RunId, Option<IntReport>>,
}

impl Searches {
    pub fn new(db: &Path, waker: Waker) -> Self {
        Self {
            db: db.to_path_buf(),
            waker,
            jobs: Vec::new(),
            studies: Vec::new(),
            deploys: BTreeMap::new(),
            reports: BTreeMap::new(),
        }
    }

    /// Where the app keeps run `run`'s integer program: `exports/run-<id>-int/` beside the
    /// database.
    pub fn deploy_dir(&self, run: RunId) -> PathBuf {
        self.db
            .parent()
            .unwrap_or(Path::new("."))
            .join("exports")
            .join(format!("run-{run}-int"))
    }

    /// The report of run `run`'s integer program, if one was made (read once, then kept).
    pub fn report(&mut self, run: RunId) -> Option<&IntReport> {
        let dir = self.deploy_dir(run);
        self.reports
            .entry(run)
            .or_insert_with(|| deploy::load_report(&dir.join(deploy::REPORT_FILE)).ok())
            .as_ref()
    }

    /// Make run `run`'s integer program as `shiftadd export RUN --int` does, into
    /// [`Self::deploy_dir`], evaluated on the whole test split.
    pub fn start_deploy(&mut self, run: RunId, opts: deploy::IntOptions) -> std::io::Result<()> {
        let (db, dir) = (self.db.clone(), self.deploy_dir(run));
        let job = Job::spawn_plain(
            format!("integer program of run {run}"),
            "deploy",
            self.waker.clone(),
            move |report| {
                report("exporting, calibrating and evaluating on the test split".into());
                let threads =
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
                let progress =
                    |k: usize, n: usize| report(format!("evaluated {k} of {n} test images"));
                let (model, r) = deploy::export_int(&db, run, &dir, opts, None, threads, &progress)
                    .map_err(|e| e.to_string())?;
                deploy::c::write(&model, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(r)
            },
        )?;
        self.reports.remove(&run);
        self.deploys.insert(run, job);
        Ok(())
    }

    /// Start searching `config` (its `[nas]` section and training recipe) under `name`. Like
    /// `shiftadd nas`, a config searched before resumes its latest search. With `slurm`, each
    /// generation's proxies train as one job array (Stop cancels it).
    pub fn start(
        &mut self,
        config: Config,
        name: String,
        slurm: Option<SlurmChoice>,
    ) -> std::io::Result<()> {
        let search_name = name.clone();
        let spec = slurm
            .map(|c| SlurmSpec::for_db(&self.db, c.shared.as_deref(), c.sbatch_args))
            .transpose()?;
        let job = Job::spawn(
            name,
            nas::SEARCH_MODEL,
            self.db.clone(),
            self.waker.clone(),
            move |db, manager, stop, report| {
                nas::search_on(
                    &config,
                    db,
                    &search_name,
                    manager,
                    spec.as_ref(),
                    stop,
                    report,
                )
                .map_err(|e| e.to_string())
            },
        )?;
        self.jobs.push(job);
        Ok(())
    }

    /// Run (or continue) `study` like `shiftadd study`: a study run before trains only what it
    /// lacks. With `slurm`, as `--executor slurm` does: Stop then cancels the job array.
    pub fn start_study(&mut self, study: Study, slurm: Option<SlurmChoice>) -> std::io::Result<()> {
        let spec = slurm
            .map(|c| SlurmSpec::for_db(&self.db, c.shared.as_deref(), c.sbatch_args))
            .transpose()?;
        let job = Job::spawn(
            study.name.clone(),
            "study",
            self.db.clone(),
            self.waker.clone(),
            move |db, manager, stop, report| {
                match &spec {
                    None => study::run(&study, db, manager, study.parallel, stop, report),
                    Some(spec) => study::slurm::run(&study, db, spec, study.parallel, stop, report),
                }
                .map_err(|e| e.to_string())
            },
        )?;
        self.studies.push(job);
        Ok(())
    }

    /// Progress lines that arrived since the last call, per job; finished jobs get their result.
    pub fn poll(&mut self) -> Vec<String> {
        let mut lines: Vec<String> = self.jobs.iter_mut().flat_map(Job::poll).collect();
        lines.extend(self.studies.iter_mut().flat_map(Job::poll));
        for (run, job) in &mut self.deploys {
            job.poll();
            if let Some(Ok(r)) = &job.outcome
                && !matches!(self.reports.get(run), Some(Some(_)))
            {
                self.reports.insert(*run, Some(r.clone()));
            }
        }
        lines
    }

    pub fn running(&self) -> usize {
        let (searches, studies) = self.running_by_kind();
        searches + studies
    }

    /// How many NAS searches and how many studies of this session are running.
    fn running_by_kind(&self) -> (usize, usize) {
        (
            self.jobs.iter().filter(|j| j.running()).count(),
            self.studies.iter().filter(|j| j.running()).count(),
        )
    }

    /// "1 NAS search and 2 studies" (what runs), or `None` when nothing does.
    pub fn running_text(&self) -> Option<String> {
        let count = |n: usize, one: &str, many: &str| match n {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        };
        let (searches, studies) = self.running_by_kind();
        let parts: Vec<String> = [
            count(searches, "NAS search", "NAS searches"),
            count(studies, "study", "studies"),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    pub fn stop_all(&self) {
        for j in &self.jobs {
            j.stop();
        }
        for j in &self.studies {
            j.stop();
        }
    }

    /// Block until every search has ended, printing their progress to stderr (after the window).
    pub fn wait_all(&mut self) {
        while self.running() > 0 {
            for line in self.poll() {
                eprintln!("{line}");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for line in self.poll() {
            eprintln!("{line}");
        }
        for j in &self.jobs {
            match &j.outcome {
                Some(Ok(o)) => eprintln!(
                    "search {} ({}): best TargetNet {} (proxy top-1 {:.2} %)",
                    o.search,
                    j.name,
                    o.target.to_json(),
                    o.target_proxy * 100.0
                ),
                Some(Err(e)) => eprintln!("search {}: {e}", j.name),
                None => {}
            }
        }
        for j in &self.studies {
            match &j.outcome {
                Some(Ok(o)) => eprintln!("study {} ({}): {}", o.study, j.name, o.counts()),
                Some(Err(e)) => eprintln!("study {}: {e}", j.name),
                None => {}
            }
        }
    }
}

#[cfg(test)]
impl<T: Send + 'static> Job<T> {
    /// A job of this session that has not ended (as `job_ui` sees it); with `thread`, one whose
    /// thread is still held (as `running` counts it).
    pub(crate) fn running_for_test(last: &str, thread: bool) -> Self {
        Job {
            name: "smoke-study".into(),
            stop: Arc::default(),
            lines: crossbeam_channel::never(),
            last: last.into(),
            handle: thread.then(|| {
                std::thread::Builder::new()
                    .name("test-job".into())
                    .spawn(|| Err(String::new()))
                    .expect("spawn")
            }),
            outcome: None,
        }
    }

    /// Whether Stop was pressed.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_job<T: Send + 'static>(last: &str, thread: bool) -> Job<T> {
        Job::running_for_test(last, thread)
    }

    #[test]
    fn what_runs_is_named_by_kind() {
        let db = PathBuf::from("unused.db");
        let mut s = Searches::new(&db, Arc::new(|| {}));
        assert_eq!(s.running_text(), None);
        s.studies.push(running_job("a", true));
        assert_eq!(s.running_text().as_deref(), Some("1 study"));
        s.studies.push(running_job("b", true));
        s.jobs.push(running_job("nas", true));
        s.jobs.push(running_job("ended", false));
        assert_eq!(
            s.running_text().as_deref(),
            Some("1 NAS search and 2 studies")
        );
    }
}
