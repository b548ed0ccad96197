//! The single writer thread: it owns the read-write connection, commits [`WriteOp`]s in batched
//! transactions in order, and beats the heartbeat of the runs this process owns.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rusqlite::{Connection, TransactionBehavior, params};

use super::rows::{
    CheckpointRow, HistogramRow, HwCostRow, MetricRow, NasCandidateRow, NewRun, StudyJobRow,
    StudyRunRow,
};
use super::schema::{
    HEARTBEAT_EVERY, NEXT_RUN_ID, Result, RunId, Status, StoreError, hostname, now_secs, open_rw,
};

/// Messages to the writer thread. Ops with a `reply` are answered after their transaction commits.
#[derive(Debug)]
pub enum WriteOp {
    /// Insert a run (status `queued`), owned by this process; replies with its id.
    CreateRun(NewRun, Sender<Result<RunId>>),
    /// Take ownership of an existing run (resume): this process now beats its heartbeat.
    Claim(RunId),
    /// Set the status (and reason); terminal states stop the heartbeat.
    Status {
        run: RunId,
        status: Status,
        reason: Option<String>,
    },
    Metrics(Vec<MetricRow>),
    Histograms(Vec<HistogramRow>),
    /// A run's hardware cost: one row per (model, layer), detail as JSON.
    HwCost(Vec<HwCostRow>),
    /// Insert or update a NAS candidate (keyed by search run, stage and architecture).
    NasCandidate(NasCandidateRow),
    Log {
        run: RunId,
        level: log::Level,
        message: String,
    },
    /// Record a checkpoint whose files are written; drop rows of checkpoints beyond `keep`.
    Checkpoint {
        row: CheckpointRow,
        keep: usize,
    },
    /// Resume preparation: delete metrics recorded after `step` (and histograms after `epoch`).
    TruncateAfter {
        run: RunId,
        step: i64,
        epoch: i64,
        reply: Sender<Result<usize>>,
    },
    /// Insert a study; replies with its id.
    CreateStudy {
        name: String,
        identity: String,
        spec: String,
        reply: Sender<Result<i64>>,
    },
    /// Record the run that fills a study cell.
    StudyRun(StudyRunRow),
    /// Record where a study cell trains (replacing what was recorded).
    StudyJob(StudyJobRow),
    /// Reply once everything sent before has committed.
    Flush(Sender<()>),
}

/// Handle to the writer thread; cloning shares the thread. Dropping the last handle flushes and
/// stops it.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<WriteOp>,
    _joiner: std::sync::Arc<Joiner>,
    /// Set by the writer thread when the disk (or the file-size limit) is full: the runs that
    /// write through it stop rather than train on without a record.
    full: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

struct Joiner {
    tx: Option<Sender<WriteOp>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Joiner {
    fn drop(&mut self) {
        // Every other sender is gone; once ours is too, the thread drains the queue and ends.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Writer {
    /// Open the database read-write (migrating, sweeping dead runs) and start the writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = open_rw(path)?;
        let (tx, rx) = bounded::<WriteOp>(4096);
        let path_buf = path.to_path_buf();
        let full = std::sync::Arc::new(std::sync::Mutex::new(None));
        let full_flag = full.clone();
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(&conn, &path_buf, &rx, &full_flag))
            .map_err(|source| StoreError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            tx: tx.clone(),
            _joiner: std::sync::Arc::new(Joiner {
                tx: Some(tx),
                handle: Some(handle),
            }),
            full,
        })
    }

    /// Why writes stopped landing, when the disk filled up (`database …: database or disk is
    /// full`); `None` while they land.
    pub fn disk_full(&self) -> Option<String> {
        self.full.lock().ok().and_then(|f| f.clone())
    }

    pub fn send(&self, op: WriteOp) -> Result<()> {
        self.tx.send(op).map_err(|_| StoreError::WriterGone)
    }

    pub fn create_run(&self, run: NewRun) -> Result<RunId> {
        let (reply, rx) = bounded(1);
        self.send(WriteOp::CreateRun(run, reply))?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Insert a study row (see [`WriteOp::CreateStudy`]); its id.
    pub fn create_study(&self, name: &str, identity: &str, spec: &str) -> Result<i64> {
        let (tx, rx) = bounded(1);
        self.send(WriteOp::CreateStudy {
            name: name.to_owned(),
            identity: identity.to_owned(),
            spec: spec.to_owned(),
            reply: tx,
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    pub fn truncate_after(&self, run: RunId, step: i64, epoch: i64) -> Result<usize> {
        let (reply, rx) = bounded(1);
        self.send(WriteOp::TruncateAfter {
            run,
            step,
            epoch,
            reply,
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    pub fn flush(&self) -> Result<()> {
        let (reply, rx) = bounded(1);
        self.send(WriteOp::Flush(reply))?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    pub fn status(&self, run: RunId, status: Status, reason: Option<String>) {
        self.send_or_log(WriteOp::Status {
            run,
            status,
            reason,
        });
    }

    /// Record a line of the run's log (shown by the app); the terminal gets it at DEBUG only,
    /// since whoever follows the run reports what matters itself.
    pub fn log(&self, run: RunId, level: log::Level, message: String) {
        log::debug!("run {run}: {level}: {message}");
        self.send_or_log(WriteOp::Log {
            run,
            level,
            message,
        });
    }

    /// For fire-and-forget ops: a stopped writer is logged once here, not returned.
    pub fn send_or_log(&self, op: WriteOp) {
        if self.send(op).is_err() {
            log::error!("database writer has stopped; a record was lost");
        }
    }
}

fn writer_loop(
    conn: &Connection,
    path: &Path,
    rx: &Receiver<WriteOp>,
    full: &std::sync::Mutex<Option<String>>,
) {
    let mut owned: BTreeSet<RunId> = BTreeSet::new();
    let mut last_beat = Instant::now();
    loop {
        let first = match rx.recv_timeout(HEARTBEAT_EVERY) {
            Ok(op) => Some(op),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<WriteOp> = first.into_iter().collect();
        while batch.len() < 2048 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let beat = last_beat.elapsed() >= HEARTBEAT_EVERY && !owned.is_empty();
        if batch.is_empty() && !beat {
            continue;
        }
        if beat {
            last_beat = Instant::now();
        }
        if let Err(e) = apply_batch(conn, &mut batch, &mut owned, beat) {
            let disk_full = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
            // A full disk stops the runs, whose failure says so: no second error line.
            let level = if disk_full {
                log::Level::Warn
            } else {
                log::Level::Error
            };
            log::log!(
                level,
                "database {}: a batch of {} writes failed: {e}",
                path.display(),
                batch.len()
            );
            if disk_full && let Ok(mut f) = full.lock() {
                f.get_or_insert_with(|| format!("database {}: {e}", path.display()));
            }
            for op in batch {
                answer_failure(op, path, &e);
            }
        } else if let Ok(mut f) = full.lock() {
            // Space is back (a later batch landed).
            *f = None;
        }
    }
}

fn answer_failure(op: WriteOp, path: &Path, e: &rusqlite::Error) {
    let err = || StoreError::Sqlite {
        path: path.to_path_buf(),
        source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(1), Some(e.to_string())),
    };
    match op {
        WriteOp::CreateRun(_, reply) => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::TruncateAfter { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::CreateStudy { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Flush(reply) => {
            let _ = reply.send(());
        }
        _ => {}
    }
}

fn apply_batch(
    conn: &Connection,
    batch: &mut Vec<WriteOp>,
    owned: &mut BTreeSet<RunId>,
    beat: bool,
) -> rusqlite::Result<()> {
    let conn_tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let now = now_secs();
    let mut replies: Vec<Box<dyn FnOnce()>> = Vec::new();
    for op in batch.iter() {
        apply_one(&conn_tx, op, owned, now, &mut replies)?;
    }
    if beat || batch.iter().any(|op| matches!(op, WriteOp::Claim(_))) {
        for id in owned.iter() {
            conn_tx.execute(
                "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
    }
    conn_tx.commit()?;
    batch.clear();
    for reply in replies {
        reply();
    }
    Ok(())
}

/// One op inside the batch's transaction; replies wait in `replies` until it commits.
fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
    owned: &mut BTreeSet<RunId>,
    now: f64,
    replies: &mut Vec<Box<dyn FnOnce()>>,
) -> rusqlite::Result<()> {
    match op {
        WriteOp::CreateRun(run, reply) => {
            let id = create_run(tx, run, now)?;
            owned.insert(id);
            let reply = reply.clone();
            replies.push(Box::new(move || {
                let _ = reply.send(Ok(id));
            }));
        }
        WriteOp::Claim(run) => {
            tx.execute(
                "UPDATE runs SET owner_host = ?2, owner_pid = ?3, heartbeat_at = ?4 WHERE id = ?1",
                params![run, hostname(), i64::from(std::process::id()), now],
            )?;
            owned.insert(*run);
        }
        WriteOp::Status {
            run,
            status,
            reason,
        } => {
            set_status(tx, *run, *status, reason.as_deref(), now)?;
            if !status.is_active() {
                owned.remove(run);
            }
        }
        WriteOp::Metrics(rows) => insert_metrics(tx, rows)?,
        WriteOp::NasCandidate(c) => upsert_candidate(tx, c)?,
        WriteOp::HwCost(rows) => insert_hw_cost(tx, rows)?,
        WriteOp::Histograms(rows) => insert_histograms(tx, rows)?,
        WriteOp::Log {
            run,
            level,
            message,
        } => {
            tx.execute(
                "INSERT INTO logs (run_id, wall_time, level, message) VALUES (?1, ?2, ?3, ?4)",
                params![run, now, level.as_str(), message],
            )?;
        }
        WriteOp::Checkpoint { row, keep } => record_checkpoint(tx, row, *keep, now)?,
        WriteOp::TruncateAfter {
            run,
            step,
            epoch,
            reply,
        } => {
            let n = truncate_after(tx, *run, *step, *epoch)?;
            let reply = reply.clone();
            replies.push(Box::new(move || {
                let _ = reply.send(Ok(n));
            }));
        }
        WriteOp::CreateStudy {
            name,
            identity,
            spec,
            reply,
        } => {
            tx.execute(
                "INSERT INTO studies (name, identity, spec, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, identity, spec, now],
            )?;
            let id = tx.last_insert_rowid();
            let reply = reply.clone();
            replies.push(Box::new(move || {
                let _ = reply.send(Ok(id));
            }));
        }
        WriteOp::StudyRun(r) => {
            tx.execute(
                "INSERT OR REPLACE INTO study_runs (study_id, variant, seed, run_id)
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.study, r.variant, r.seed as i64, r.run],
            )?;
        }
        WriteOp::StudyJob(j) => {
            tx.execute(
                "INSERT OR REPLACE INTO study_jobs
                     (study_id, variant, seed, executor, job, state, detail, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    j.study,
                    j.variant,
                    j.seed as i64,
                    j.executor,
                    j.job,
                    j.state,
                    j.detail,
                    now
                ],
            )?;
        }
        WriteOp::Flush(reply) => {
            let reply = reply.clone();
            replies.push(Box::new(move || {
                let _ = reply.send(());
            }));
        }
    }
    Ok(())
}

/// Insert a run row (status `queued`, owned by this process); its id.
fn create_run(tx: &rusqlite::Transaction<'_>, run: &NewRun, now: f64) -> rusqlite::Result<RunId> {
    tx.execute(
        &format!(
            "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed, tags,
                               app_version, created_at, heartbeat_at, owner_host, owner_pid, uid,
                               provenance)
             VALUES ({NEXT_RUN_ID}, ?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11,
                     lower(hex(randomblob(16))), ?12)"
        ),
        params![
            run.name,
            run.config_toml,
            run.dataset,
            run.model,
            run.operator,
            run.seed as i64,
            run.tags,
            env!("CARGO_PKG_VERSION"),
            now,
            hostname(),
            i64::from(std::process::id()),
            run.provenance,
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Set a run's status and reason, with the timestamp the status implies.
fn set_status(
    tx: &rusqlite::Transaction<'_>,
    run: RunId,
    status: Status,
    reason: Option<&str>,
    now: f64,
) -> rusqlite::Result<()> {
    let sql = match status {
        Status::Running => {
            "UPDATE runs SET status = ?2, reason = ?3, started_at = COALESCE(started_at, ?4),
             finished_at = NULL WHERE id = ?1"
        }
        Status::Finished
        | Status::Stopped
        | Status::Failed
        | Status::Interrupted
        | Status::Pruned => {
            "UPDATE runs SET status = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1"
        }
        Status::Queued | Status::Paused => {
            "UPDATE runs SET status = ?2, reason = ?3, heartbeat_at = ?4 WHERE id = ?1"
        }
        Status::Damaged => {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                "`damaged` is how an unreadable row is listed, never a status to store".into(),
            ));
        }
    };
    tx.execute(sql, params![run, status, reason, now])?;
    Ok(())
}

fn insert_metrics(tx: &rusqlite::Transaction<'_>, rows: &[MetricRow]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO metrics (run_id, key, step, epoch, wall_time, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for m in rows {
        stmt.execute(params![m.run, m.key, m.step, m.epoch, m.wall_time, m.value])?;
    }
    Ok(())
}

/// Insert or update a NAS candidate, keyed by (search, stage, architecture).
fn upsert_candidate(tx: &rusqlite::Transaction<'_>, c: &NasCandidateRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO nas_candidates
         (run_id, stage, generation, arch, cost, proxy_accuracy, status, proxy_run, slurm)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (run_id, stage, arch) DO UPDATE SET
         cost = excluded.cost, proxy_accuracy = excluded.proxy_accuracy,
         status = excluded.status, proxy_run = excluded.proxy_run, slurm = excluded.slurm",
    )?
    .execute(params![
        c.run,
        c.stage,
        c.generation,
        c.arch,
        c.cost,
        c.proxy_accuracy,
        c.status,
        c.proxy_run,
        c.slurm
    ])?;
    Ok(())
}

fn insert_hw_cost(tx: &rusqlite::Transaction<'_>, rows: &[HwCostRow]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO hw_cost (run_id, hw_model, model, layer_index, layer, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for h in rows {
        stmt.execute(params![
            h.run,
            h.hw_model,
            h.model,
            h.layer_index,
            h.layer,
            h.detail.to_string()
        ])?;
    }
    Ok(())
}

fn insert_histograms(
    tx: &rusqlite::Transaction<'_>,
    rows: &[HistogramRow],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO histograms
         (run_id, layer, kind, epoch, edges, counts, underflow, overflow, stats)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for h in rows {
        stmt.execute(params![
            h.run,
            h.layer,
            h.kind,
            h.epoch,
            serde_json::to_string(&h.edges).unwrap_or_default(),
            serde_json::to_string(&h.counts).unwrap_or_default(),
            h.underflow as i64,
            h.overflow as i64,
            h.stats.to_string(),
        ])?;
    }
    Ok(())
}

/// Record a checkpoint and drop the rows of checkpoints beyond the newest `keep`.
fn record_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    row: &CheckpointRow,
    keep: usize,
    now: f64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO checkpoints (run_id, epoch, step, path, rng_state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![row.run, row.epoch, row.step, row.path, row.rng_state, now],
    )?;
    tx.execute(
        "DELETE FROM checkpoints WHERE run_id = ?1 AND epoch NOT IN
         (SELECT epoch FROM checkpoints WHERE run_id = ?1 ORDER BY epoch DESC LIMIT ?2)",
        params![row.run, keep as i64],
    )?;
    Ok(())
}

/// Resume preparation: delete metrics after `step` and histograms after `epoch`; how many
/// metric rows went.
fn truncate_after(
    tx: &rusqlite::Transaction<'_>,
    run: RunId,
    step: i64,
    epoch: i64,
) -> rusqlite::Result<usize> {
    let n = tx.execute(
        "DELETE FROM metrics WHERE run_id = ?1 AND step > ?2",
        params![run, step],
    )?;
    tx.execute(
        "DELETE FROM histograms WHERE run_id = ?1 AND epoch > ?2",
        params![run, epoch],
    )?;
    Ok(n)
}
