//! Merging other databases into this one (`shiftadd import`): a run trained elsewhere (a cluster
//! job's own database, a colleague's laptop) lands here with everything recorded for it.
//!
//! * Runs are matched by their globally unique id (`runs.uid`), never by their local id: a run
//!   seen before is left alone when the file holds the same record of it, replaced (its rows
//!   deleted and copied anew, its local id kept) when the file's record is newer — a later
//!   snapshot of a run that was still training — and kept as it is here otherwise.
//! * Studies are matched by their identity; a cell the file fills is filled here unless this
//!   database already holds a settled run (finished or failed) for it.
//! * NAS candidates follow their search run, their proxy runs mapped to the local ids.
//! * Each file is checked first (an SQLite file, not damaged, with shiftadd's tables, a schema
//!   this code knows) and merged in one transaction: a bad file changes nothing. A file from an
//!   older schema is copied to a temporary file and migrated there; the file itself is only read.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::files::TempDb;
use super::schema::{self, NEXT_RUN_ID, Result, SCHEMA_VERSION, Status, StoreError};

/// What merging one file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Runs this database did not know.
    pub added: usize,
    /// Runs whose record in the file was newer (a later snapshot): their rows were replaced.
    pub replaced: usize,
    /// Runs recorded here exactly as in the file.
    pub unchanged: usize,
    /// Runs this database holds a record of as new as the file's, or newer: kept as they are.
    pub kept: usize,
    pub studies_added: usize,
    pub cells_added: usize,
    /// Study cells whose unsettled run here gave way to the file's settled one.
    pub cells_replaced: usize,
}

impl ImportSummary {
    /// Whether merging changed anything.
    pub fn changed(&self) -> bool {
        self.added + self.replaced + self.studies_added + self.cells_added + self.cells_replaced > 0
    }
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs added, {} replaced by a newer record, {} unchanged, {} kept (as new or newer here)",
            self.added, self.replaced, self.unchanged, self.kept
        )?;
        if self.studies_added + self.cells_added + self.cells_replaced > 0 {
            write!(
                f,
                "; {} studies added, {} cells filled, {} cells replaced",
                self.studies_added, self.cells_added, self.cells_replaced
            )?;
        }
        Ok(())
    }
}

/// The tables whose rows belong to one run (`run_id`), with the columns copied besides it.
const RUN_TABLES: [(&str, &str); 5] = [
    ("metrics", "key, step, epoch, wall_time, value"),
    (
        "histograms",
        "layer, kind, epoch, edges, counts, underflow, overflow, stats",
    ),
    ("hw_cost", "hw_model, model, layer_index, layer, detail"),
    ("checkpoints", "epoch, step, path, rng_state, created_at"),
    ("logs", "wall_time, level, message"),
];

/// The run row's columns besides `id`.
const RUN_COLUMNS: &str = "name, status, reason, config, dataset, model, operator, seed, tags, \
    notes, app_version, created_at, started_at, finished_at, heartbeat_at, owner_host, owner_pid, uid, \
    archived, edited_at, provenance";

/// Check that `path` is a shiftadd database this code can read (gzip-compressed or not); its
/// schema version.
pub fn inspect(path: &Path) -> Result<i64> {
    if super::files::is_gzip(path) {
        let plain = super::files::gunzip(path)?;
        return inspect_plain(&plain.0).map_err(|e| StoreError::Compressed {
            path: path.to_path_buf(),
            source: Box::new(e),
        });
    }
    inspect_plain(path)
}

fn inspect_plain(path: &Path) -> Result<i64> {
    if !path.is_file() {
        return Err(StoreError::NoFile {
            path: path.to_path_buf(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(path, e))?;
    conn.busy_timeout(schema::BUSY_TIMEOUT)
        .map_err(|e| StoreError::sqlite(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, e))?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| StoreError::sqlite(path, e))?;
    if problems.first().is_none_or(|p: &String| p != "ok") {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: super::schema::one_line(problems.first().map_or("", String::as_str)),
        });
    }
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
             AND name IN ('runs', 'metrics', 'logs', 'checkpoints')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::sqlite(path, e))?;
    if version < 1 || tables < 4 {
        return Err(StoreError::NotOurs {
            path: path.to_path_buf(),
            why: "it has no shiftadd tables".into(),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    check_text(&conn, path)?;
    Ok(version)
}

/// Every text value in `conn`'s text columns is UTF-8 (SQLite stores whatever bytes a writer
/// gave it; text that is not UTF-8 would make every later read of the imported rows fail).
fn check_text(conn: &Connection, path: &Path) -> Result<()> {
    let sq = |source| StoreError::sqlite(path, source);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sq)?;
    for table in tables {
        let quoted = sql_ident(&table);
        let columns: Vec<String> = conn
            .prepare(&format!(
                "SELECT name FROM pragma_table_info({})",
                sql_string(&table)
            ))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sq)?;
        for column in columns {
            let col = sql_ident(&column);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT DISTINCT {col} FROM {quoted} WHERE typeof({col}) = 'text'"
                ))
                .map_err(sq)?;
            let mut rows = stmt.query([]).map_err(sq)?;
            while let Some(row) = rows.next().map_err(sq)? {
                if row.get_ref(0).map_err(sq)?.as_str().is_err() {
                    return Err(StoreError::NotOurs {
                        path: path.to_path_buf(),
                        why: format!("its {table}.{column} holds text that is not UTF-8"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// `s` as a quoted SQL identifier.
fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn migrated_copy(path: &Path) -> Result<TempDb> {
    let copy = TempDb::new("import");
    let sq = |source| StoreError::sqlite(path, source);
    let src = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sq)?;
    src.busy_timeout(schema::BUSY_TIMEOUT).map_err(sq)?;
    src.execute("VACUUM INTO ?1", [copy.0.to_string_lossy()])
        .map_err(sq)?;
    let conn = Connection::open(&copy.0).map_err(sq)?;
    schema::migrate(&conn).map_err(sq)?;
    Ok(copy)
}

/// Merge the shiftadd database `source` into `target` (created and migrated if needed). A
/// gzip-compressed file (a results database, `shiftadd compact OUT.db.gz`) is decompressed into a
/// temporary file first.
pub fn import(target: &Path, source: &Path) -> Result<ImportSummary> {
    // First, before the file is read at all: opening the target's file (even to read its first
    // bytes) and closing it again would drop the locks this process's own connections hold on it.
    if std::path::absolute(target).ok() == std::path::absolute(source).ok() {
        return Err(StoreError::NotOurs {
            path: source.to_path_buf(),
            why: "it is the database being imported into".into(),
        });
    }
    if super::files::is_gzip(source) {
        let plain = super::files::gunzip(source)?;
        return import(target, &plain.0).map_err(|e| StoreError::Compressed {
            path: source.to_path_buf(),
            source: Box::new(e),
        });
    }
    let version = inspect(source)?;
    let copy = (version < SCHEMA_VERSION)
        .then(|| migrated_copy(source))
        .transpose()?;
    let read_from = copy.as_ref().map_or(source, |c| c.0.as_path());
    // Every row it brings in is checked before anything changes (the target is not even
    // created): one unreadable row would take every listing of this database down with it.
    let damaged = schema::read_only(read_from).and_then(|c| {
        super::check::damaged_rows(&c, "main", 1).map_err(|e| StoreError::sqlite(source, e))
    })?;
    if let Some(d) = damaged.first() {
        return Err(StoreError::DamagedRow {
            path: source.to_path_buf(),
            damage: d.to_string(),
        });
    }
    let mut conn = schema::open_rw(target)?;
    let sq = |source| StoreError::sqlite(target, source);
    conn.execute(
        "ATTACH DATABASE ?1 AS src",
        [schema::sqlite_uri(read_from, "mode=ro")?],
    )
    .map_err(|e| StoreError::sqlite(source, e))?;
    let merged = merge(&mut conn).map_err(sq);
    conn.execute("DETACH DATABASE src", []).map_err(sq)?;
    merged
}

/// What decides whether two records of one run are the same: the run row's mutable fields and
/// how much is recorded for it.
const FINGERPRINT: &str = "SELECT r.status, r.reason, r.name, r.tags, r.notes, r.finished_at,
        r.heartbeat_at, r.archived, r.edited_at,
        (SELECT COUNT(*) || ':' || COALESCE(MAX(step), -1) || ':' || COALESCE(SUM(value), 0)
           FROM {db}.metrics m WHERE m.run_id = r.id),
        (SELECT COUNT(*) FROM {db}.logs l WHERE l.run_id = r.id),
        (SELECT COUNT(*) || ':' || COALESCE(MAX(step), -1) FROM {db}.checkpoints c
           WHERE c.run_id = r.id),
        (SELECT COUNT(*) FROM {db}.histograms h WHERE h.run_id = r.id),
        (SELECT COUNT(*) FROM {db}.hw_cost h WHERE h.run_id = r.id),
        (SELECT COUNT(*) || ':' || COALESCE(SUM(status = 'done'), 0) FROM {db}.nas_candidates n
           WHERE n.run_id = r.id)
    FROM {db}.runs r WHERE r.id = ?1";

/// The column of [`FINGERPRINT`] that holds the tags: compared with the ids they name left out
/// (an imported run's `nas3` is renumbered to its search's id here).
const FINGERPRINT_TAGS: usize = 3;

/// When a record of a run was last changed (its clock: every change moves one of these).
const UPDATED: &str = "SELECT MAX(created_at, COALESCE(started_at, 0), COALESCE(finished_at, 0),
        COALESCE(heartbeat_at, 0), COALESCE(edited_at, 0)) FROM {db}.runs WHERE id = ?1";

fn fingerprint(
    tx: &rusqlite::Transaction<'_>,
    db: &str,
    id: i64,
) -> rusqlite::Result<Vec<rusqlite::types::Value>> {
    let mut stmt = tx.prepare_cached(&FINGERPRINT.replace("{db}", db))?;
    let n = stmt.column_count();
    // Compared as stored (text as its bytes): nothing here converts text, so none can fail to.
    stmt.query_row([id], |r| {
        (0..n)
            .map(|i| {
                r.get_ref(i).map(|v| match v {
                    rusqlite::types::ValueRef::Text(b) if i == FINGERPRINT_TAGS => {
                        let tags = String::from_utf8_lossy(b);
                        let unnumbered = renumber_tags(&tags, |_| Some(0), |_| Some(0));
                        rusqlite::types::Value::Blob(unnumbered.into_bytes())
                    }
                    rusqlite::types::ValueRef::Text(b) => rusqlite::types::Value::Blob(b.to_vec()),
                    v => v.into(),
                })
            })
            .collect()
    })
}

fn updated(tx: &rusqlite::Transaction<'_>, db: &str, id: i64) -> rusqlite::Result<f64> {
    tx.query_row(&UPDATED.replace("{db}", db), [id], |r| r.get(0))
}

/// Copy the rows that belong to source run `from` to local run `to` (which has none).
fn copy_run_rows(tx: &rusqlite::Transaction<'_>, from: i64, to: i64) -> rusqlite::Result<()> {
    for (table, cols) in RUN_TABLES {
        tx.execute(
            &format!(
                "INSERT INTO main.{table} (run_id, {cols}) SELECT ?1, {cols} FROM src.{table}
                 WHERE run_id = ?2"
            ),
            params![to, from],
        )?;
    }
    Ok(())
}

fn delete_run_rows(tx: &rusqlite::Transaction<'_>, run: i64) -> rusqlite::Result<()> {
    for (table, _) in RUN_TABLES {
        tx.execute(
            &format!("DELETE FROM main.{table} WHERE run_id = ?1"),
            [run],
        )?;
    }
    tx.execute("DELETE FROM main.nas_candidates WHERE run_id = ?1", [run])?;
    Ok(())
}

fn merge(conn: &mut Connection) -> rusqlite::Result<ImportSummary> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sum = ImportSummary::default();
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS import_map (src INTEGER PRIMARY KEY, dst INTEGER NOT NULL);
         DELETE FROM temp.import_map;",
    )?;
    let runs: Vec<(i64, String)> = tx
        .prepare("SELECT id, uid FROM src.runs ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // Runs whose candidates are copied once every run is mapped.
    let mut copied = Vec::new();
    for (src, uid) in runs {
        let here: Option<i64> = tx
            .query_row("SELECT id FROM main.runs WHERE uid = ?1", [&uid], |r| {
                r.get(0)
            })
            .optional()?;
        let dst = match here {
            None => {
                tx.execute(
                    &format!(
                        "INSERT INTO main.runs (id, {RUN_COLUMNS})
                         SELECT {NEXT_RUN_ID}, {RUN_COLUMNS} FROM src.runs WHERE id = ?1"
                    ),
                    [src],
                )?;
                let dst = tx.last_insert_rowid();
                copy_run_rows(&tx, src, dst)?;
                copied.push((src, dst));
                sum.added += 1;
                dst
            }
            Some(dst) if fingerprint(&tx, "src", src)? == fingerprint(&tx, "main", dst)? => {
                sum.unchanged += 1;
                dst
            }
            Some(dst) if updated(&tx, "src", src)? > updated(&tx, "main", dst)? => {
                tx.execute(
                    &format!(
                        "UPDATE main.runs SET ({RUN_COLUMNS}) = (SELECT {RUN_COLUMNS} FROM src.runs
                         WHERE id = ?1) WHERE id = ?2"
                    ),
                    params![src, dst],
                )?;
                delete_run_rows(&tx, dst)?;
                copy_run_rows(&tx, src, dst)?;
                copied.push((src, dst));
                sum.replaced += 1;
                dst
            }
            Some(dst) => {
                sum.kept += 1;
                dst
            }
        };
        tx.execute(
            "INSERT INTO temp.import_map (src, dst) VALUES (?1, ?2)",
            params![src, dst],
        )?;
    }
    for &(src, dst) in &copied {
        tx.execute(
            "INSERT INTO main.nas_candidates
                 (run_id, stage, generation, arch, cost, proxy_accuracy, status, proxy_run, slurm)
             SELECT ?1, stage, generation, arch, cost, proxy_accuracy, status,
                    (SELECT dst FROM temp.import_map WHERE src = c.proxy_run), slurm
             FROM src.nas_candidates c WHERE run_id = ?2 ORDER BY id",
            params![dst, src],
        )?;
    }
    let studies = merge_studies(&tx, &mut sum)?;
    // Tags that name a search or a study by id (`nas3`, `study7`) name them as numbered here.
    for &(_, dst) in &copied {
        let tags: String =
            tx.query_row("SELECT tags FROM main.runs WHERE id = ?1", [dst], |r| {
                r.get(0)
            })?;
        let run = |id: i64| {
            tx.query_row(
                "SELECT dst FROM temp.import_map WHERE src = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
        };
        let renamed = renumber_tags(&tags, run, |id| studies.get(&id).copied());
        if renamed != tags {
            tx.execute(
                "UPDATE main.runs SET tags = ?1 WHERE id = ?2",
                params![renamed, dst],
            )?;
        }
    }
    tx.execute("DELETE FROM temp.import_map", [])?;
    tx.commit()?;
    Ok(sum)
}

/// `tags` with each tag that names a run by id (`nas3`: a NAS proxy's or chosen TargetNet's
/// search) or a study (`study7`) renumbered through `run` and `study` (a source id to its id
/// here; an id neither knows stays as it was).
fn renumber_tags(
    tags: &str,
    run: impl Fn(i64) -> Option<i64>,
    study: impl Fn(i64) -> Option<i64>,
) -> String {
    tags.split(',')
        .map(|t| {
            let numbered = |prefix: &str| t.strip_prefix(prefix)?.parse::<i64>().ok();
            if let Some(to) = numbered("nas").and_then(&run) {
                format!("nas{to}")
            } else if let Some(to) = numbered("study").and_then(&study) {
                format!("study{to}")
            } else {
                t.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Merge the source's studies into this database's (one per identity) and their cells; each
/// source study's id here.
fn merge_studies(
    tx: &rusqlite::Transaction<'_>,
    sum: &mut ImportSummary,
) -> rusqlite::Result<std::collections::HashMap<i64, i64>> {
    let mut ids = std::collections::HashMap::new();
    let studies: Vec<(i64, String)> = tx
        .prepare("SELECT id, identity FROM src.studies ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (src_study, identity) in studies {
        let here: Option<i64> = tx
            .query_row(
                "SELECT id FROM main.studies WHERE identity = ?1 ORDER BY id DESC LIMIT 1",
                [&identity],
                |r| r.get(0),
            )
            .optional()?;
        let study = match here {
            Some(id) => id,
            None => {
                tx.execute(
                    "INSERT INTO main.studies (name, identity, spec, created_at)
                     SELECT name, identity, spec, created_at FROM src.studies WHERE id = ?1",
                    [src_study],
                )?;
                sum.studies_added += 1;
                tx.last_insert_rowid()
            }
        };
        ids.insert(src_study, study);
        let cells: Vec<(String, i64, i64)> = tx
            .prepare(
                "SELECT s.variant, s.seed, m.dst FROM src.study_runs s
                 JOIN temp.import_map m ON m.src = s.run_id WHERE s.study_id = ?1",
            )?
            .query_map([src_study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (variant, seed, run) in cells {
            let filled: Option<(i64, String)> = tx
                .query_row(
                    "SELECT s.run_id, r.status FROM main.study_runs s JOIN main.runs r
                     ON r.id = s.run_id WHERE s.study_id = ?1 AND s.variant = ?2 AND s.seed = ?3",
                    params![study, variant, seed],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            // A status this code does not know (a damaged row) is not settled.
            let settled = |s: &str| {
                matches!(
                    Status::parse(s),
                    Some(Status::Finished | Status::Failed | Status::Pruned)
                )
            };
            let incoming: String =
                tx.query_row("SELECT status FROM main.runs WHERE id = ?1", [run], |r| {
                    r.get(0)
                })?;
            match filled {
                Some((here, _)) if here == run => {}
                Some((_, status)) if settled(&status) || !settled(&incoming) => {}
                Some(_) => {
                    tx.execute(
                        "UPDATE main.study_runs SET run_id = ?4
                         WHERE study_id = ?1 AND variant = ?2 AND seed = ?3",
                        params![study, variant, seed, run],
                    )?;
                    sum.cells_replaced += 1;
                }
                None => {
                    tx.execute(
                        "INSERT INTO main.study_runs (study_id, variant, seed, run_id)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![study, variant, seed, run],
                    )?;
                    sum.cells_added += 1;
                }
            }
        }
    }
    Ok(ids)
}
