//! The SQLite store: the schema (its one owner), migrations, the single writer thread and
//! read-only queries.
//!
//! * WAL mode; every connection waits up to [`BUSY_TIMEOUT`] for a lock, writers take it up front
//!   (`BEGIN IMMEDIATE`), so several processes can record runs into one database.
//! * One [`Writer`] thread per process owns the read-write connection; everything else sends it
//!   [`WriteOp`]s and it commits them in batched transactions, in order. It also beats the
//!   heartbeat of the runs this process owns.
//! * The schema version is `PRAGMA user_version`; a database from a newer version is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

pub type RunId = i64;

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the writer beats the heartbeat of this process's active runs.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A run whose heartbeat is older than this is considered dead.
pub const HEARTBEAT_STALE_SECS: f64 = 20.0;

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        config TEXT NOT NULL,
        dataset TEXT NOT NULL,
        model TEXT NOT NULL,
        operator TEXT NOT NULL,
        seed INTEGER NOT NULL,
        tags TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        app_version TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL,
        owner_host TEXT,
        owner_pid INTEGER
    );
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        step INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        wall_time REAL NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, key, step)
    ) WITHOUT ROWID;
    CREATE TABLE histograms (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        layer TEXT NOT NULL,
        kind TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        edges TEXT NOT NULL,
        counts TEXT NOT NULL,
        underflow INTEGER NOT NULL,
        overflow INTEGER NOT NULL,
        stats TEXT NOT NULL,
        PRIMARY KEY (run_id, layer, kind, epoch)
    );
    CREATE TABLE hw_cost (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        layer_index INTEGER NOT NULL,
        layer TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (run_id, model, layer_index)
    );
    CREATE TABLE checkpoints (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        step INTEGER NOT NULL,
        path TEXT NOT NULL,
        rng_state TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (run_id, epoch)
    );
    CREATE TABLE nas_candidates (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        stage INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        arch TEXT NOT NULL,
        cost REAL,
        proxy_accuracy REAL,
        status TEXT NOT NULL
    );
    CREATE TABLE logs (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        wall_time REAL NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX logs_run ON logs(run_id, wall_time);",
    // v2: a NAS candidate names the run of its proxy training; one row per (search, stage, arch).
    "ALTER TABLE nas_candidates ADD COLUMN proxy_run INTEGER;
    CREATE UNIQUE INDEX nas_candidates_arch ON nas_candidates(run_id, stage, arch);",
    // v3: hardware costs name the cost model that priced them; older rows are the project's, and
    // so are the older runs' configs (`[hw] model`, which they lack, now defaults to the simulator).
    "CREATE TABLE hw_cost_v3 (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        hw_model TEXT NOT NULL,
        model TEXT NOT NULL,
        layer_index INTEGER NOT NULL,
        layer TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (run_id, hw_model, model, layer_index)
    );
    INSERT INTO hw_cost_v3 (run_id, hw_model, model, layer_index, layer, detail)
        SELECT run_id, 'project', model, layer_index, layer, detail FROM hw_cost;
    DROP TABLE hw_cost;
    ALTER TABLE hw_cost_v3 RENAME TO hw_cost;
    UPDATE runs SET config = replace(config, '[hw]' || char(10),
            '[hw]' || char(10) || 'model = \"project\"' || char(10))
        WHERE instr(config, '[hw]' || char(10)) > 0;",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this shiftadd ({supported}); \
         open it with a newer shiftadd (nothing was changed)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot create the folder of database {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run {0} does not exist")]
    NoRun(RunId),
    #[error("the database writer has stopped")]
    WriterGone,
}

type Result<T> = std::result::Result<T, StoreError>;

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: i64) -> bool {
    // Linux only; elsewhere fall back on the heartbeat alone.
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Run status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Paused,
    Finished,
    Stopped,
    Failed,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Paused,
            Self::Finished,
            Self::Stopped,
            Self::Failed,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running | Self::Paused)
    }
}

/// Open (creating if needed) a read-write connection, migrate, and mark dead runs `interrupted`.
pub fn open_rw(path: &Path) -> Result<Connection> {
    let sq = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(sq)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sq)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sq)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sq)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
    migrate(&conn).map_err(sq)?;
    sweep_dead_runs(&conn).map_err(sq)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    // Re-read inside the (immediate, via the write below) transaction: another process may have migrated.
    tx.execute_batch("CREATE TABLE IF NOT EXISTS _migrate_lock (x); DROP TABLE _migrate_lock;")?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

/// Mark runs `interrupted` whose owner is gone: its process is dead (same host), or its heartbeat is stale.
fn sweep_dead_runs(conn: &Connection) -> rusqlite::Result<usize> {
    let host = hostname();
    let now = now_secs();
    let mut dead = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, heartbeat_at, owner_host, owner_pid FROM runs
             WHERE status IN ('queued', 'running', 'paused')",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, RunId>(0)?,
                r.get::<_, Option<f64>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, beat, owner_host, pid) = row?;
            let stale = beat.is_none_or(|b| now - b > HEARTBEAT_STALE_SECS);
            let owner_dead = owner_host.as_deref() == Some(host.as_str())
                && pid.is_some_and(|p| p != i64::from(std::process::id()) && !pid_alive(p));
            if stale || owner_dead {
                dead.push((id, beat));
            }
        }
    }
    for (id, beat) in &dead {
        let reason = match beat {
            Some(b) => format!(
                "process ended without finishing (last heartbeat {:.0} s ago)",
                now - b
            ),
            None => "process ended before the run started".to_owned(),
        };
        conn.execute(
            "UPDATE runs SET status = 'interrupted', reason = ?2 WHERE id = ?1",
            params![id, reason],
        )?;
        log::warn!("run {id} marked interrupted: {reason}");
    }
    Ok(dead.len())
}

/// Open a read-only connection (for readers: the CLI's listings, the UI).
pub fn open_ro(path: &Path) -> Result<Connection> {
    let sq = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sq)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

/// What a new run row holds.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub name: String,
    pub config_toml: String,
    pub dataset: String,
    pub model: String,
    pub operator: String,
    pub seed: u64,
    pub tags: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub run: RunId,
    pub key: String,
    pub step: i64,
    pub epoch: i64,
    pub wall_time: f64,
    pub value: f64,
}

/// One weight histogram of one MF layer at one epoch (epoch 0 = before training).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramRow {
    pub run: RunId,
    pub layer: String,
    /// `stored`, `remapped` or `pow2`.
    pub kind: String,
    pub epoch: i64,
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub underflow: u64,
    pub overflow: u64,
    /// mean, std, kurtosis, kl_gaussian, kl_laplace, w1_to_stored (not for `stored`), op.
    pub stats: serde_json::Value,
}

/// One layer of one model's hardware cost (`detail`: a serialised [`crate::hw::LayerCost`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HwCostRow {
    pub run: RunId,
    /// The cost model that priced it: `shiftaddnas` or `project` (`crate::config::HwModel`).
    pub hw_model: String,
    /// `tiny`, `tiny-mult` or `augmented`.
    pub model: String,
    pub layer_index: i64,
    pub layer: String,
    pub detail: serde_json::Value,
}

impl HwCostRow {
    /// The per-layer rows of a config's costed models, as [`crate::hw::config_costs`] returns
    /// them (`tiny`, `tiny-mult`, `augmented`; repeated per cost model).
    pub fn of_costs(run: RunId, costs: &[crate::hw::ModelCost]) -> Vec<Self> {
        let mut rows = Vec::new();
        let names = ["tiny", "tiny-mult", "augmented"];
        for (cost, model) in costs.iter().zip(names.iter().cycle()) {
            for (i, l) in cost.layers.iter().enumerate() {
                rows.push(Self {
                    run,
                    hw_model: cost.model.as_str().to_owned(),
                    model: (*model).to_owned(),
                    layer_index: i as i64,
                    layer: l.name.clone(),
                    detail: serde_json::to_value(l).unwrap_or_default(),
                });
            }
        }
        rows
    }
}

/// One candidate of a NAS search (`run`: the search's own run row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NasCandidateRow {
    pub run: RunId,
    /// 1: the multiplicative SubNet; 2: the MF TargetNet inside it.
    pub stage: i64,
    pub generation: i64,
    /// JSON of [`crate::nas::NasArch`].
    pub arch: String,
    /// In the budget's unit (mJ or ms); stage 1: of the Mult SubNet, stage 2: of the MF TargetNet.
    pub cost: f64,
    pub proxy_accuracy: Option<f64>,
    /// `done`, `failed` or `pending`.
    pub status: String,
    pub proxy_run: Option<RunId>,
}

/// A checkpoint record: files live at `path` (a stem; see `train::checkpoint`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub run: RunId,
    pub epoch: i64,
    pub step: i64,
    pub path: String,
    pub rng_state: String,
}

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
    /// Reply once everything sent before has committed.
    Flush(Sender<()>),
}

/// Handle to the writer thread; cloning shares the thread. Dropping the last handle flushes and
/// stops it.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<WriteOp>,
    _joiner: std::sync::Arc<Joiner>,
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
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(&conn, &path_buf, &rx))
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
        })
    }

    pub fn send(&self, op: WriteOp) -> Result<()> {
        self.tx.send(op).map_err(|_| StoreError::WriterGone)
    }

    pub fn create_run(&self, run: NewRun) -> Result<RunId> {
        let (reply, rx) = bounded(1);
        self.send(WriteOp::CreateRun(run, reply))?;
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

fn writer_loop(conn: &Connection, path: &Path, rx: &Receiver<WriteOp>) {
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
            log::error!(
                "database {}: a batch of {} writes failed: {e}",
                path.display(),
                batch.len()
            );
            for op in batch {
                answer_failure(op, path, &e);
            }
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

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
    owned: &mut BTreeSet<RunId>,
    now: f64,
    replies: &mut Vec<Box<dyn FnOnce()>>,
) -> rusqlite::Result<()> {
    match op {
        WriteOp::CreateRun(run, reply) => {
            tx.execute(
                "INSERT INTO runs (name, status, config, dataset, model, operator, seed, tags,
                                   app_version, created_at, heartbeat_at, owner_host, owner_pid)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
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
                ],
            )?;
            let id = tx.last_insert_rowid();
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
            let sql = match status {
                Status::Running => {
                    "UPDATE runs SET status = ?2, reason = ?3, started_at = COALESCE(started_at, ?4),
                     finished_at = NULL WHERE id = ?1"
                }
                Status::Finished | Status::Stopped | Status::Failed | Status::Interrupted => {
                    "UPDATE runs SET status = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1"
                }
                Status::Queued | Status::Paused => {
                    "UPDATE runs SET status = ?2, reason = ?3, heartbeat_at = ?4 WHERE id = ?1"
                }
            };
            tx.execute(sql, params![run, status.as_str(), reason, now])?;
            if !status.is_active() {
                owned.remove(run);
            }
        }
        WriteOp::Metrics(rows) => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO metrics (run_id, key, step, epoch, wall_time, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for m in rows {
                stmt.execute(params![m.run, m.key, m.step, m.epoch, m.wall_time, m.value])?;
            }
        }
        WriteOp::NasCandidate(c) => {
            tx.prepare_cached(
                "INSERT INTO nas_candidates
                 (run_id, stage, generation, arch, cost, proxy_accuracy, status, proxy_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (run_id, stage, arch) DO UPDATE SET
                 cost = excluded.cost, proxy_accuracy = excluded.proxy_accuracy,
                 status = excluded.status, proxy_run = excluded.proxy_run",
            )?
            .execute(params![
                c.run,
                c.stage,
                c.generation,
                c.arch,
                c.cost,
                c.proxy_accuracy,
                c.status,
                c.proxy_run
            ])?;
        }
        WriteOp::HwCost(rows) => {
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
        }
        WriteOp::Histograms(rows) => {
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
        }
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
        WriteOp::Checkpoint { row, keep } => {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, epoch, step, path, rng_state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.run, row.epoch, row.step, row.path, row.rng_state, now],
            )?;
            tx.execute(
                "DELETE FROM checkpoints WHERE run_id = ?1 AND epoch NOT IN
                 (SELECT epoch FROM checkpoints WHERE run_id = ?1 ORDER BY epoch DESC LIMIT ?2)",
                params![row.run, *keep as i64],
            )?;
        }
        WriteOp::TruncateAfter {
            run,
            step,
            epoch,
            reply,
        } => {
            let n = tx.execute(
                "DELETE FROM metrics WHERE run_id = ?1 AND step > ?2",
                params![run, step],
            )?;
            tx.execute(
                "DELETE FROM histograms WHERE run_id = ?1 AND epoch > ?2",
                params![run, epoch],
            )?;
            let reply = reply.clone();
            replies.push(Box::new(move || {
                let _ = reply.send(Ok(n));
            }));
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

/// One run as listed by `shiftadd runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub name: String,
    pub status: String,
    pub reason: Option<String>,
    pub dataset: String,
    pub model: String,
    pub operator: String,
    pub seed: i64,
    pub tags: String,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub epochs_done: Option<i64>,
    pub last_val_top1: Option<f64>,
    pub best_val_top1: Option<f64>,
    /// Top-1 on the test set, evaluated once at the end of the run (`test/top1`); `None` for runs
    /// recorded before the validation split existed, or still training.
    pub test_top1: Option<f64>,
    /// Energy per inference of the tiny model under the run's own `hw.model` (`hw/energy_mj`).
    pub energy_mj: Option<f64>,
    /// The same under each cost model (`hw/<model>/energy_mj`); runs recorded before the
    /// simulator existed have only the project's (their `hw/energy_mj`).
    pub energy_shiftaddnas_mj: Option<f64>,
    pub energy_project_mj: Option<f64>,
}

impl RunSummary {
    /// The tiny model's energy under cost model `hw_model` (`shiftaddnas` or `project`).
    pub fn energy_under(&self, hw_model: &str) -> Option<f64> {
        match hw_model {
            "shiftaddnas" => self.energy_shiftaddnas_mj,
            "project" => self.energy_project_mj,
            _ => None,
        }
    }
}

/// Read-side queries over any connection.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: open_ro(path)?,
            path: path.to_path_buf(),
        })
    }

    fn sq(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let sql = "SELECT r.id, r.name, r.status, r.reason, r.dataset, r.model, r.operator, r.seed, r.tags,
                   r.created_at, r.finished_at,
                   (SELECT MAX(epoch) FROM metrics m WHERE m.run_id = r.id AND m.key = 'val/top1'),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = 'val/top1'
                        ORDER BY step DESC LIMIT 1),
                   (SELECT MAX(value) FROM metrics m WHERE m.run_id = r.id AND m.key = 'val/top1'),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = 'hw/energy_mj'
                        ORDER BY step LIMIT 1),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = 'test/top1'
                        ORDER BY step DESC LIMIT 1),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id
                        AND m.key = 'hw/shiftaddnas/energy_mj' ORDER BY step LIMIT 1),
                   COALESCE(
                       (SELECT value FROM metrics m WHERE m.run_id = r.id
                            AND m.key = 'hw/project/energy_mj' ORDER BY step LIMIT 1),
                       (SELECT value FROM metrics m WHERE m.run_id = r.id
                            AND m.key = 'hw/energy_mj' ORDER BY step LIMIT 1))
                   FROM runs r ORDER BY r.id";
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    reason: r.get(3)?,
                    dataset: r.get(4)?,
                    model: r.get(5)?,
                    operator: r.get(6)?,
                    seed: r.get(7)?,
                    tags: r.get(8)?,
                    created_at: r.get(9)?,
                    finished_at: r.get(10)?,
                    epochs_done: r.get(11)?,
                    last_val_top1: r.get(12)?,
                    best_val_top1: r.get(13)?,
                    energy_mj: r.get(14)?,
                    test_top1: r.get(15)?,
                    energy_shiftaddnas_mj: r.get(16)?,
                    energy_project_mj: r.get(17)?,
                })
            })
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }

    pub fn run(&self, id: RunId) -> Result<RunSummary> {
        self.runs()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(StoreError::NoRun(id))
    }

    pub fn config_toml(&self, id: RunId) -> Result<String> {
        self.conn
            .query_row("SELECT config FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.sq(e))?
            .ok_or(StoreError::NoRun(id))
    }

    /// All metric rows of a run, ordered by key then step.
    pub fn metrics(&self, id: RunId) -> Result<Vec<MetricRow>> {
        self.metrics_after(id, i64::MIN)
    }

    /// A run's metric rows with step > `after`, ordered by key then step (live views fetch
    /// only what is new).
    pub fn metrics_after(&self, id: RunId, after: i64) -> Result<Vec<MetricRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT run_id, key, step, epoch, wall_time, value FROM metrics
                 WHERE run_id = ?1 AND step > ?2 ORDER BY key, step",
            )
            .map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map(rusqlite::params![id, after], |r| {
                Ok(MetricRow {
                    run: r.get(0)?,
                    key: r.get(1)?,
                    step: r.get(2)?,
                    epoch: r.get(3)?,
                    wall_time: r.get(4)?,
                    value: r.get(5)?,
                })
            })
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }

    pub fn last_checkpoint(&self, id: RunId) -> Result<Option<CheckpointRow>> {
        self.conn
            .query_row(
                "SELECT run_id, epoch, step, path, rng_state FROM checkpoints
                 WHERE run_id = ?1 ORDER BY step DESC LIMIT 1",
                [id],
                |r| {
                    Ok(CheckpointRow {
                        run: r.get(0)?,
                        epoch: r.get(1)?,
                        step: r.get(2)?,
                        path: r.get(3)?,
                        rng_state: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sq(e))
    }

    /// A run's hardware-cost rows, ordered by model and layer.
    pub fn hw_cost(&self, id: RunId) -> Result<Vec<HwCostRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, hw_model, model, layer_index, layer, detail FROM hw_cost
                 WHERE run_id = ?1 ORDER BY hw_model, model, layer_index",
            )
            .map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map([id], |r| {
                let text: String = r.get(5)?;
                Ok(HwCostRow {
                    run: r.get(0)?,
                    hw_model: r.get(1)?,
                    model: r.get(2)?,
                    layer_index: r.get(3)?,
                    layer: r.get(4)?,
                    detail: serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            5,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                })
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| self.sq(e))?;
        Ok(rows)
    }

    /// Histograms of a run, ordered by layer, kind, epoch.
    pub fn histograms(&self, id: RunId) -> Result<Vec<HistogramRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, layer, kind, epoch, edges, counts, underflow, overflow, stats
                 FROM histograms WHERE run_id = ?1 ORDER BY layer, kind, epoch",
            )
            .map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map([id], |r| {
                let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
                    let text: String = r.get(i)?;
                    serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            i,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
                };
                let edges: Vec<f64> = serde_json::from_value(json(4)?).unwrap_or_default();
                let counts: Vec<u64> = serde_json::from_value(json(5)?).unwrap_or_default();
                Ok(HistogramRow {
                    run: r.get(0)?,
                    layer: r.get(1)?,
                    kind: r.get(2)?,
                    epoch: r.get(3)?,
                    edges,
                    counts,
                    underflow: r.get::<_, i64>(6)? as u64,
                    overflow: r.get::<_, i64>(7)? as u64,
                    stats: json(8)?,
                })
            })
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }

    /// The candidates of NAS search `id`, in the order they were first stored.
    pub fn nas_candidates(&self, id: RunId) -> Result<Vec<NasCandidateRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, stage, generation, arch, cost, proxy_accuracy, status, proxy_run
                 FROM nas_candidates WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(NasCandidateRow {
                    run: r.get(0)?,
                    stage: r.get(1)?,
                    generation: r.get(2)?,
                    arch: r.get(3)?,
                    cost: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
                    proxy_accuracy: r.get(5)?,
                    status: r.get(6)?,
                    proxy_run: r.get(7)?,
                })
            })
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }

    pub fn logs(&self, id: RunId) -> Result<Vec<(f64, String, String)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT wall_time, level, message FROM logs WHERE run_id = ?1 ORDER BY wall_time",
            )
            .map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run(name: &str) -> NewRun {
        NewRun {
            name: name.into(),
            config_toml: String::new(),
            dataset: "synthetic".into(),
            model: "micro".into(),
            operator: "mult".into(),
            seed: 0,
            tags: String::new(),
        }
    }

    #[test]
    fn write_read_truncate_and_checkpoint_retention() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("a/b/studio.db");
        let w = Writer::open(&db).expect("open");
        let id = w.create_run(new_run("x")).expect("create");
        w.status(id, Status::Running, None);
        let rows: Vec<MetricRow> = (0..10)
            .map(|s| MetricRow {
                run: id,
                key: "train/loss".into(),
                step: s,
                epoch: s / 5,
                wall_time: 0.0,
                value: s as f64,
            })
            .collect();
        w.send(WriteOp::Metrics(rows)).expect("send");
        for e in 0..4 {
            w.send(WriteOp::Checkpoint {
                row: CheckpointRow {
                    run: id,
                    epoch: e,
                    step: e * 2,
                    path: format!("p{e}"),
                    rng_state: "{}".into(),
                },
                keep: 2,
            })
            .expect("send");
        }
        assert_eq!(w.truncate_after(id, 6, 1).expect("truncate"), 3);
        w.flush().expect("flush");
        let r = Reader::open(&db).expect("reader");
        assert_eq!(r.metrics(id).expect("metrics").len(), 7);
        let ck = r.last_checkpoint(id).expect("q").expect("some");
        assert_eq!((ck.epoch, ck.step), (3, 6));
        let n: i64 = r
            .conn
            .query_row("SELECT COUNT(*) FROM checkpoints", [], |x| x.get(0))
            .expect("count");
        assert_eq!(n, 2);
        assert_eq!(r.run(id).expect("run").status, "running");
    }

    #[test]
    fn v2_hardware_costs_and_configs_become_the_project_models() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("old.db");
        let c = Connection::open(&db).expect("raw");
        c.execute_batch(MIGRATIONS[0]).expect("v1");
        c.execute_batch(MIGRATIONS[1]).expect("v2");
        c.pragma_update(None, "user_version", 2).expect("v2");
        let config = "[train]\nepochs = 1\n\n[hw]\nconvention = \"full\"\nbits = 32\n";
        c.execute(
            "INSERT INTO runs (id, name, status, config, dataset, model, operator, seed,
                               app_version, created_at)
             VALUES (1, 'old', 'finished', ?1, 'synthetic', 'micro', 'shift', 0, '0', 0)",
            [config],
        )
        .expect("run");
        c.execute(
            "INSERT INTO hw_cost VALUES (1, 'tiny', 0, 'stem', '{\"name\": \"stem\"}')",
            [],
        )
        .expect("cost");
        drop(c);
        drop(Writer::open(&db).expect("migrates"));
        let r = Reader::open(&db).expect("reader");
        let rows = r.hw_cost(1).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].hw_model.as_str(), rows[0].model.as_str()),
            ("project", "tiny")
        );
        let text: String = r
            .conn
            .query_row("SELECT config FROM runs WHERE id = 1", [], |x| x.get(0))
            .expect("config");
        assert!(
            text.contains("[hw]\nmodel = \"project\"\nconvention = \"full\""),
            "{text}"
        );
        assert!(
            text.starts_with("[train]\nepochs = 1\n"),
            "nothing else changed: {text}"
        );
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("s.db");
        drop(Writer::open(&db).expect("open"));
        let c = Connection::open(&db).expect("raw");
        c.pragma_update(None, "user_version", 99).expect("bump");
        drop(c);
        let err = Writer::open(&db).err().expect("refused").to_string();
        assert!(
            err.contains("schema version 99") && err.contains("newer"),
            "{err}"
        );
        assert!(Reader::open(&db).is_err());
        let c = Connection::open(&db).expect("raw");
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("v");
        assert_eq!(v, 99);
    }

    #[test]
    fn dead_owner_is_marked_interrupted_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("s.db");
        let w = Writer::open(&db).expect("open");
        let id = w.create_run(new_run("x")).expect("create");
        w.status(id, Status::Running, None);
        w.flush().expect("flush");
        drop(w);
        // Pretend the owner was another, now dead, process on this host.
        let c = Connection::open(&db).expect("raw");
        c.execute("UPDATE runs SET owner_pid = 999999999", [])
            .expect("update");
        drop(c);
        drop(Writer::open(&db).expect("reopen"));
        let r = Reader::open(&db).expect("reader").run(id).expect("run");
        assert_eq!(r.status, "interrupted");
    }
}
