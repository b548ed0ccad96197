//! Run ids and status, the store's errors, the schema and its migrations, and opening connections
//! (read-write: migrate and sweep dead runs; read-only: version check only).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

pub type RunId = i64;

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the writer beats the heartbeat of this process's active runs.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A run whose heartbeat is older than this is considered dead.
pub const HEARTBEAT_STALE_SECS: f64 = 20.0;

pub(super) const MIGRATIONS: &[&str] = &[
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
    // v4: studies (variants × seeds) and the runs that fill their cells.
    "CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        identity TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX studies_identity ON studies(identity);
    CREATE TABLE study_runs (
        study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
        variant TEXT NOT NULL,
        seed INTEGER NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        PRIMARY KEY (study_id, variant, seed)
    );",
    // v5: a run's globally unique id, so runs merged from other databases (`shiftadd import`)
    // are recognised wherever they trained; existing runs get one.
    // (The existing runs' ids are derived from what they hold, by `fill_legacy_uids`, so any
    // two copies of one older database migrate to the same ids.)
    "ALTER TABLE runs ADD COLUMN uid TEXT;
    CREATE UNIQUE INDEX runs_uid ON runs(uid);",
    // v6: where each cell of a study trains (a Slurm task, its state), as its coordinator saw it.
    "CREATE TABLE study_jobs (
        study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
        variant TEXT NOT NULL,
        seed INTEGER NOT NULL,
        executor TEXT NOT NULL,
        job TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (study_id, variant, seed)
    );",
    // v7: where a NAS candidate's proxy trains when on Slurm (its task and state).
    "ALTER TABLE nas_candidates ADD COLUMN slurm TEXT;",
    // v8: run management and provenance. `archived` hides a run from default listings;
    // `edited_at` is the clock of a rename / tag / note / archive (so an import carries the edit);
    // `provenance` is JSON: commit of the experiments folder, versions, CPU, GPU.
    "ALTER TABLE runs ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN edited_at REAL;
    ALTER TABLE runs ADD COLUMN provenance TEXT NOT NULL DEFAULT '';",
    // v9: `weights/add_std` for the epochs recorded before the trainer wrote it, read off the
    // histograms the same way (`record::largest_add_std`: the largest std of an Add layer's
    // `stored` histogram) at the step and time of that epoch's `train/epoch_loss`, where the
    // trainer writes it. Epochs that have it keep theirs; the snapshot before training (epoch 0)
    // has no epoch loss, and gets none, as with the trainer.
    "INSERT OR IGNORE INTO metrics (run_id, key, step, epoch, wall_time, value)
        SELECT h.run_id, 'weights/add_std', m.step, h.epoch, m.wall_time,
               max(json_extract(h.stats, '$.std'))
        FROM histograms h
        JOIN metrics m ON m.run_id = h.run_id AND m.key = 'train/epoch_loss' AND m.epoch = h.epoch
        WHERE h.kind = 'stored' AND json_extract(h.stats, '$.op') = 'add'
        GROUP BY h.run_id, h.epoch, m.step
        HAVING max(json_extract(h.stats, '$.std')) IS NOT NULL;",
    // v10: `train/epoch_loss_aug` for the epochs recorded before the trainer wrote it: the mean of
    // that epoch's per-step `train/loss_aug` (each step weighs the same; the trainer weighs by
    // images, which differs only through an epoch's last, smaller batch), at the step and time of
    // that epoch's `train/epoch_loss`. Epochs that have it keep theirs.
    "INSERT OR IGNORE INTO metrics (run_id, key, step, epoch, wall_time, value)
        SELECT l.run_id, 'train/epoch_loss_aug', m.step, l.epoch, m.wall_time, avg(l.value)
        FROM metrics l
        JOIN metrics m ON m.run_id = l.run_id AND m.key = 'train/epoch_loss' AND m.epoch = l.epoch
        WHERE l.key = 'train/loss_aug'
        GROUP BY l.run_id, l.epoch, m.step;",
    // v11: a deleted run's id is never given again (SQLite's rowid would hand the largest id out
    // again once its run is gone, and a note, a log or a paper that names "run 12" would then
    // point at another run). `run_id_floor` holds the largest id ever deleted; new runs take
    // `NEXT_RUN_ID`, above it and above every run there is.
    "CREATE TABLE run_id_floor (id INTEGER NOT NULL);
    INSERT INTO run_id_floor VALUES (0);
    CREATE TRIGGER runs_id_floor AFTER DELETE ON runs BEGIN
        UPDATE run_id_floor SET id = max(id, OLD.id);
    END;",
];

/// The id a new run takes: one above the largest there is and the largest ever deleted (v11).
pub(super) const NEXT_RUN_ID: &str = "(SELECT max(coalesce((SELECT max(id) FROM main.runs), 0),
     coalesce((SELECT max(id) FROM main.run_id_floor), 0)) + 1)";

/// The schema version whose migration adds `runs.uid`.
const UID_VERSION: usize = 5;

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
    #[error(
        "database {path} has schema version {found}, older than this shiftadd's ({supported}): \
         it is being created, or any shiftadd command that writes to it will migrate it"
    )]
    NotMigrated {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot create the folder of database {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no such file (nothing was changed)")]
    NoFile { path: PathBuf },
    #[error("{path} is not a shiftadd database: {why} (nothing was changed)")]
    NotOurs { path: PathBuf, why: String },
    /// What was wrong with the database a gzip file held (decompressed into a temporary file).
    #[error("{path}, decompressed: {source}")]
    Compressed {
        path: PathBuf,
        source: Box<StoreError>,
    },
    #[error(
        "{path} is damaged ({detail}); nothing was changed. SQLite can salvage what is left: \
         `sqlite3 {path} .recover | sqlite3 recovered.db`, then use `--db recovered.db` \
         (`shiftadd check --db {path}` lists the damage)"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// A database this process cannot write (a read-only file, folder or mount).
    #[error(
        "{path} cannot be written by this user (a read-only file, folder or mount): commands that \
         only read it work; nothing was changed"
    )]
    ReadOnly { path: PathBuf },
    /// A sound file with a row this code cannot read (`check::Damage`, its first such row).
    #[error(
        "{path}: {damage} (nothing was changed; `shiftadd check --db {path}` names every damaged row)"
    )]
    DamagedRow { path: PathBuf, damage: String },
    #[error("run {0} does not exist")]
    NoRun(RunId),
    /// A request the store refuses (the message says why; nothing was changed).
    #[error("{0} (nothing was changed)")]
    Invalid(String),
    #[error("the database writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// An SQLite error on database `path`, said as what it means: a damaged file names itself
    /// as such (with how to salvage it), a file that is not SQLite as not ours.
    pub fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => Self::NotOurs {
                path: path.to_path_buf(),
                why: "not an SQLite file".into(),
            },
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => Self::Corrupt {
                path: path.to_path_buf(),
                detail: one_line(&source.to_string()),
            },
            Some(rusqlite::ErrorCode::ReadOnly) => Self::ReadOnly {
                path: path.to_path_buf(),
            },
            _ => Self::Sqlite {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// SQLite's multi-line reports as one line.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) type Result<T> = std::result::Result<T, StoreError>;

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn hostname() -> String {
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
    /// Stopped by a study's pruning rule (`reason` says which and why): settled, like a
    /// finished run, but with no final metrics; a rerun of the study does not train it again.
    Pruned,
    /// Never stored: a row whose status or another column cannot be read is listed as damaged
    /// (`RunSummary::reason` says which column and what it holds), so one bad row cannot take the
    /// others out of a listing. `shiftadd check` names it; it can be deleted, not resumed.
    Damaged,
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
            Self::Pruned => "pruned",
            Self::Damaged => "damaged",
        }
    }

    /// The statuses a database may hold (not [`Status::Damaged`], which is only ever read).
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::Finished,
        Self::Stopped,
        Self::Failed,
        Self::Interrupted,
        Self::Pruned,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running | Self::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A NAS candidate's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateStatus {
    /// Chosen and recorded; its proxy training has not finished.
    Pending,
    /// Proxy-trained; `proxy_accuracy` holds the score.
    Done,
    /// Its proxy training failed.
    Failed,
    /// The search was stopped while it trained (a resumed search trains it again).
    Stopped,
    /// Its proxy training was stopped early by the search's pruning rule (`nas.prune`);
    /// `proxy_accuracy` holds its last validation top-1 before the stop. Settled: never trained again,
    /// never chosen.
    Pruned,
}

impl CandidateStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Done,
        Self::Failed,
        Self::Stopped,
        Self::Pruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Pruned => "pruned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Both statuses are stored as their lowercase names; an unknown name in a database is an error
/// that names it (rather than a silently wrong state).
macro_rules! sql_text_enum {
    ($t:ty, $what:literal) => {
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $t {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = v.as_str()?;
                Self::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {text:?} in the database", $what).into(),
                    )
                })
            }
        }
    };
}

impl std::fmt::Display for CandidateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

sql_text_enum!(Status, "run status");
sql_text_enum!(CandidateStatus, "NAS candidate status");

/// Open (creating if needed) a read-write connection, migrate, and mark dead runs `interrupted`.
///
/// Processes that open one new file at the same moment contend for it in ways SQLite answers
/// with BUSY at once, without its busy handler (switching the file to WAL, a migration's lock
/// upgrade): the whole opening is tried again, with a short random pause, for up to
/// [`BUSY_TIMEOUT`].
pub fn open_rw(path: &Path) -> Result<Connection> {
    // A file this process cannot write is refused before SQLite opens it: it would open it
    // read-only and leave `-wal`/`-shm` files (owned by this user) beside another user's file.
    if path.is_file() && !file_writable(path) {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut attempt: u32 = 0;
    loop {
        match open_rw_once(path) {
            Err(StoreError::Sqlite { source, .. })
                if is_busy(&source) && std::time::Instant::now() < deadline =>
            {
                attempt += 1;
                // 1-32 ms, growing with the attempts, jittered by the clock so openers spread.
                let jitter = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() % 8);
                let ms = u64::from((1u32 << attempt.min(5)) + jitter);
                std::thread::sleep(Duration::from_millis(ms));
            }
            r => return r,
        }
    }
}

/// Whether `e` is SQLite's "busy" or "locked" (another connection holds the lock).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn open_rw_once(path: &Path) -> Result<Connection> {
    let sq = |source| StoreError::sqlite(path, source);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(sq)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
    check_version(&conn, path)?;
    // A writer never writes into a damaged file (its first write, the migration lock, could
    // spread the damage): SQLite's quick check first, ~25 ms for a 10 MB database.
    let first: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(sq)?;
    if first != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: one_line(&first),
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

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    // Re-read inside the (immediate, via the write below) transaction: another process may have migrated.
    tx.execute_batch("CREATE TABLE IF NOT EXISTS _migrate_lock (x); DROP TABLE _migrate_lock;")?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        if i + 1 == UID_VERSION {
            fill_legacy_uids(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

/// Give runs recorded before v5 a unique id derived from where and when they were created, so
/// that every copy of an older database (the file itself, a snapshot migrated for an import)
/// names its runs alike.
fn fill_legacy_uids(conn: &Connection) -> rusqlite::Result<()> {
    // What identifies a run: where and when it was created, its local id and name.
    let rows: Vec<(RunId, String)> = conn
        .prepare(
            "SELECT id, COALESCE(owner_host, '') || char(31) || COALESCE(owner_pid, '') || char(31)
                    || printf('%.17g', created_at) || char(31) || id || char(31) || name
             FROM runs WHERE uid IS NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare("UPDATE runs SET uid = ?2 WHERE id = ?1")?;
    for (id, text) in rows {
        update.execute(params![id, legacy_uid(text.as_bytes())])?;
    }
    Ok(())
}

/// 128 bits (two FNV-1a hashes with different offsets) of `bytes`, as 32 hex digits.
fn legacy_uid(bytes: &[u8]) -> String {
    let fnv = |mut h: u64| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
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
        // Read leniently: a value of the wrong type (a damaged or hostile row) is no heartbeat
        // and no owner, not an error that would make the whole database unopenable.
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, RunId>(0)?,
                r.get::<_, f64>(1).ok(),
                r.get::<_, String>(2).ok(),
                r.get::<_, i64>(3).ok(),
            ))
        })?;
        for row in rows {
            let (id, beat, owner_host, pid) = row?;
            // A heartbeat from the future is another machine's clock (an imported run): it says
            // nothing about whether anything still runs, so it counts as stale.
            let stale = beat.is_none_or(|b| {
                !b.is_finite() || now - b > HEARTBEAT_STALE_SECS || b - now > HEARTBEAT_STALE_SECS
            });
            let owner_dead = owner_host.as_deref() == Some(host.as_str())
                && pid.is_some_and(|p| p != i64::from(std::process::id()) && !pid_alive(p));
            if stale || owner_dead {
                dead.push((id, beat));
            }
        }
    }
    for (id, beat) in &dead {
        let reason = match *beat {
            Some(b) if b.is_finite() && b > now => format!(
                "no process here runs it (its heartbeat is {:.0} s in the future: another \
                 machine's clock)",
                b - now
            ),
            Some(b) if b.is_finite() => format!(
                "process ended without finishing (last heartbeat {:.0} s ago)",
                now - b
            ),
            Some(_) => "no process here runs it (its heartbeat is not a time)".to_owned(),
            None => "process ended before the run started".to_owned(),
        };
        // A heartbeat that is not a time is dropped with the claim that the run is alive.
        conn.execute(
            "UPDATE runs SET status = 'interrupted', reason = ?2,
                 heartbeat_at = CASE WHEN typeof(heartbeat_at) IN ('real', 'integer')
                                     THEN heartbeat_at END
             WHERE id = ?1",
            params![id, reason],
        )?;
        log::warn!("run {id} marked interrupted: {reason}");
    }
    Ok(dead.len())
}

/// Refuse a database whose schema is newer than this code's, before anything touches it.
fn check_version(conn: &Connection, path: &Path) -> Result<i64> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::sqlite(path, source))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Whether this process may write the file at `path` (its effective user and groups, and a
/// read-only mount), asked with `access(2)`. Never by opening it: closing any descriptor of a
/// database file drops every POSIX lock this process holds on it, so a connection of this
/// process writing it (the run manager's writer, while a command reads) would lose its locks,
/// and SQLite, believing itself the last user, would delete the `-shm` under it.
pub fn file_writable(path: &Path) -> bool {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    accessat(CWD, path, Access::WRITE_OK, AtFlags::EACCESS).is_ok()
}

/// `path` as an SQLite URI (`file:/abs/path?query`).
pub(super) fn sqlite_uri(path: &Path, query: &str) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|source| StoreError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    let mut uri = String::from("file:");
    for c in abs.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push('?');
    uri.push_str(query);
    Ok(uri)
}

/// A read-only connection that waits for writers' locks (no version check).
///
/// A file this process cannot write (a read-only mount, another user's file) whose writers have
/// all closed it (no `-wal`/`-shm` beside it) is opened as immutable: SQLite then creates
/// nothing beside it, where a plain read-only open of a WAL database needs to create `-shm`
/// (and fails on a read-only folder). A writer that is still at it (its `-wal`/`-shm` exist) is
/// read the usual way, through its shared memory.
pub(super) fn read_only(path: &Path) -> Result<Connection> {
    let sq = |source| StoreError::sqlite(path, source);
    let side = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p).exists()
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if path.is_file() && !side("-wal") && !side("-shm") && !file_writable(path) {
        Connection::open_with_flags(
            sqlite_uri(path, "immutable=1")?,
            flags | OpenFlags::SQLITE_OPEN_URI,
        )
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(sq)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sq)?;
    Ok(conn)
}

/// Open a read-only connection (for readers: the CLI's listings, the UI).
pub fn open_ro(path: &Path) -> Result<Connection> {
    let conn = read_only(path)?;
    // A reader sees every table or none: the migrations commit with the version in one transaction, so
    // an older version means a writer is creating the file right now (or nobody has migrated it yet).
    let found = check_version(&conn, path)?;
    if found < SCHEMA_VERSION {
        return Err(StoreError::NotMigrated {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}
