//! Consistent copies of a live database (SQLite's online backup API), for a cluster job to ship
//! its records to a shared folder while it trains: the copy is written under a temporary name,
//! switched out of WAL mode (a single file that readers on other hosts can open read-only) and
//! renamed over the previous one, so a reader sees the last snapshot or the one before, whole.

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::schema::{BUSY_TIMEOUT, Result, StoreError};

/// Write a consistent copy of database `db` to `to` (replacing it atomically).
pub fn snapshot(db: &Path, to: &Path) -> Result<()> {
    let sq = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::sqlite(&path, source)
    };
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq(db))?;
    src.busy_timeout(BUSY_TIMEOUT).map_err(sq(db))?;
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    {
        let mut dst = Connection::open(&tmp).map_err(sq(&tmp))?;
        // All pages in one step: the copy is of one moment even while the writer commits.
        let backup = Backup::new(&src, &mut dst).map_err(sq(&tmp))?;
        let mut tries = 0;
        while backup.step(-1).map_err(sq(&tmp))? != StepResult::Done {
            tries += 1;
            if tries > 300 {
                return Err(StoreError::Write {
                    path: to.to_path_buf(),
                    source: std::io::Error::other("the database stayed locked for 30 s"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(backup);
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sq(&tmp))?;
    }
    std::fs::rename(&tmp, to).map_err(|source| StoreError::Write {
        path: to.to_path_buf(),
        source,
    })
}

/// Seed a task's local database from the snapshot an earlier job of it shipped: a copy whose runs
/// that were still active are marked `interrupted` (that job is gone; this one resumes them).
pub fn restore(snapshot: &Path, local: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = local.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: local.to_path_buf(),
            source,
        })?;
    }
    std::fs::copy(snapshot, local).map_err(|source| StoreError::Write {
        path: local.to_path_buf(),
        source,
    })?;
    let conn = Connection::open(local).map_err(|source| StoreError::sqlite(local, source))?;
    conn.execute(
        "UPDATE runs SET status = 'interrupted',
                reason = 'its job ended before the run did; a requeued job continues it'
         WHERE status IN ('queued', 'running', 'paused')",
        [],
    )
    .map_err(|source| StoreError::sqlite(local, source))?;
    Ok(())
}
