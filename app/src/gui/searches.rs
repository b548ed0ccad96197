//! NAS searches started from the app. Each runs [`nas::search`] on its own `nas-search` thread
//! with its own run manager on the same database: the search driver consumes that manager's
//! events, so the app's manager and event stream stay as they are. The app sees a search's
//! candidates and proxy runs through the database, exactly as it sees one started by the CLI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, unbounded};
use shiftadd_core::Config;
use shiftadd_core::nas::{self, NasError, NasOutcome};
use shiftadd_core::run::{Waker, spawn_manager};

/// One search of this session.
pub struct SearchJob {
    pub name: String,
    stop: Arc<AtomicBool>,
    lines: Receiver<String>,
    /// The newest progress line (what the CLI prints).
    pub last: String,
    handle: Option<JoinHandle<Result<NasOutcome, NasError>>>,
    /// How it ended, once it has.
    pub outcome: Option<Result<NasOutcome, NasError>>,
}

impl SearchJob {
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
            self.outcome = Some(h.join().unwrap_or(Err(NasError::Panicked)));
        }
        lines
    }
}

/// The searches started in this session.
pub struct Searches {
    db: PathBuf,
    waker: Waker,
    pub jobs: Vec<SearchJob>,
}

impl Searches {
    pub fn new(db: &Path, waker: Waker) -> Self {
        Self {
            db: db.to_path_buf(),
            waker,
            jobs: Vec::new(),
        }
    }

    /// Start searching `config` (its `[nas]` section and training recipe) under `name`. Like
    /// `shiftadd nas`, a config searched before resumes its latest search.
    pub fn start(&mut self, config: Config, name: String) -> std::io::Result<()> {
        let (tx, rx) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let (db, waker, flag, search_name) = (
            self.db.clone(),
            self.waker.clone(),
            stop.clone(),
            name.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(nas::SEARCH_MODEL.into())
            .spawn(move || {
                let manager = spawn_manager(&db, waker.clone())?;
                let mut report = |line: String| {
                    let _ = tx.send(line);
                    waker();
                };
                let result = nas::search(&config, &db, &search_name, &manager, &flag, &mut report);
                manager.shutdown();
                waker();
                result
            })?;
        self.jobs.push(SearchJob {
            name,
            stop,
            lines: rx,
            last: "starting".into(),
            handle: Some(handle),
            outcome: None,
        });
        Ok(())
    }

    /// Progress lines that arrived since the last call, per job; finished jobs get their result.
    pub fn poll(&mut self) -> Vec<String> {
        self.jobs.iter_mut().flat_map(SearchJob::poll).collect()
    }

    pub fn running(&self) -> usize {
        self.jobs.iter().filter(|j| j.running()).count()
    }

    pub fn stop_all(&self) {
        for j in &self.jobs {
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
    }
}
