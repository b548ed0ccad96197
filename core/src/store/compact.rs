//! Compact results databases (`shiftadd compact`): what a finished study needs to be reported,
//! plotted and imported again, small enough to keep in a repository.
//!
//! The copy holds the settled runs (finished, or failed) with their studies, NAS candidates,
//! logs and scalar metrics; per-step series thinned to a few points an epoch (each epoch's last
//! step kept, so every per-epoch figure is exact); each run's first and last weight histograms.
//! It leaves out checkpoints (a resumed cell needs the machine that trained it), the per-layer
//! hardware breakdown (`shiftadd hw` recomputes it from the run's config; the run's `hw/*`
//! figures stay) and the runs still in flight (a study retrains such a cell). Migrations run on
//! the full copy first, so what they derive from per-step data is exact.
//!
//! A name ending in `.gz` is written gzip-compressed; `shiftadd import` reads either.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::files::{TempDb, is_gzip, write_err};
use super::schema::{self, Result, StoreError};

/// Per-step points kept per run, metric and epoch by default (at least 2: the epoch's first and
/// last).
pub const STEPS_PER_EPOCH: usize = 8;

/// What a compaction kept and left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactSummary {
    /// Settled runs kept.
    pub runs: usize,
    /// Runs left out because they were still in flight (queued, running, paused, stopped,
    /// interrupted).
    pub unsettled: usize,
    pub studies: usize,
    /// Metric rows before and after thinning.
    pub metrics_before: usize,
    pub metrics_after: usize,
    /// Size of the written file.
    pub bytes: u64,
}

impl std::fmt::Display for CompactSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs and {} studies, {} of {} metric rows, {:.1} MB",
            self.runs,
            self.studies,
            self.metrics_after,
            self.metrics_before,
            self.bytes as f64 / 1e6
        )?;
        if self.unsettled > 0 {
            write!(
                f,
                "; left out {} runs still in flight (a study retrains them)",
                self.unsettled
            )?;
        }
        Ok(())
    }
}

/// Write a compact results copy of database `db` to `to` (gzip-compressed when `to` ends in
/// `.gz`), replacing `to` whole or not at all; `db` is only read.
pub fn compact(db: &Path, to: &Path, steps_per_epoch: usize) -> Result<CompactSummary> {
    if std::path::absolute(db).ok() == std::path::absolute(to).ok() {
        return Err(StoreError::NotOurs {
            path: to.to_path_buf(),
            why: "it is the database being compacted (name another file)".into(),
        });
    }
    if is_gzip(db) {
        return Err(StoreError::NotOurs {
            path: db.to_path_buf(),
            why: "it is gzip-compressed: import it into a database, then compact that".into(),
        });
    }
    super::import::inspect(db)?;
    let work = TempDb::new("compact");
    super::snapshot::snapshot(db, &work.0)?;
    let sq = |source| StoreError::sqlite(&work.0, source);
    let mut summary = CompactSummary::default();
    {
        let conn = Connection::open(&work.0).map_err(sq)?;
        schema::migrate(&conn).map_err(sq)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
        let count = |sql: &str| -> Result<usize> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(sq)
        };
        summary.metrics_before = count("SELECT COUNT(*) FROM metrics")?;
        summary.unsettled = count(
            "SELECT COUNT(*) FROM runs WHERE status NOT IN ('finished', 'failed', 'pruned')",
        )?;
        // Every `stride`-th step from the epoch's first, and its last: at most `keep` points.
        let keep = steps_per_epoch.max(2) as i64;
        conn.execute_batch(&format!(
            "BEGIN;
             DELETE FROM runs WHERE status NOT IN ('finished', 'failed', 'pruned');
             DELETE FROM checkpoints;
             DELETE FROM hw_cost;
             DELETE FROM study_jobs;
             DELETE FROM histograms WHERE (run_id, epoch) NOT IN (
                 SELECT run_id, min(epoch) FROM histograms GROUP BY run_id
                 UNION SELECT run_id, max(epoch) FROM histograms GROUP BY run_id);
             DELETE FROM metrics WHERE (run_id, key, step) IN (
                 SELECT run_id, key, step FROM (
                     SELECT run_id, key, step,
                            row_number() OVER (PARTITION BY run_id, key, epoch ORDER BY step) - 1
                                AS i,
                            count(*) OVER (PARTITION BY run_id, key, epoch) AS n
                     FROM metrics)
                 WHERE n > {keep} AND i != n - 1 AND i % ((n + {keep} - 3) / ({keep} - 1)) != 0);
             COMMIT;
             VACUUM;"
        ))
        .map_err(sq)?;
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sq)?;
        summary.runs = count("SELECT COUNT(*) FROM runs")?;
        summary.studies = count("SELECT COUNT(*) FROM studies")?;
        summary.metrics_after = count("SELECT COUNT(*) FROM metrics")?;
    }
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: to.to_path_buf(),
            source,
        })?;
    }
    let gz = to.extension().is_some_and(|e| e == "gz");
    let written = if gz {
        gzip(&work.0, &tmp)
    } else {
        std::fs::copy(&work.0, &tmp).map(|_| ())
    };
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, to)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(to)(e));
    }
    summary.bytes = std::fs::metadata(to).map_err(write_err(to))?.len();
    Ok(summary)
}

fn gzip(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::io::BufReader::new(std::fs::File::open(from)?);
    let dst = std::fs::File::create(to)?;
    let mut enc = flate2::write::GzEncoder::new(dst, flate2::Compression::best());
    std::io::copy(&mut src, &mut enc)?;
    enc.finish()?.sync_all()
}

/// Write `bytes` to `path` (for tests that make damaged files).
#[cfg(test)]
pub(super) fn write_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(bytes).expect("write");
}
