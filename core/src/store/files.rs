//! Files around a database: temporary copies removed when dropped, and gzip-compressed
//! databases (a results database, `shiftadd compact OUT.db.gz`) read through one.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::schema::{Result, StoreError};

/// A temporary file removed (with SQLite's side files) when dropped.
pub(super) struct TempDb(pub(super) PathBuf);

impl TempDb {
    /// A fresh name in the temporary folder; `what` goes into it.
    pub(super) fn new(what: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("shiftadd-{what}-{}-{n}.db", std::process::id()));
        let temp = TempDb(path);
        temp.remove();
        temp
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

pub(super) fn write_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` names a gzip file (by its first two bytes).
pub fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == [0x1f, 0x8b])
}

/// Decompress the gzip file `path` into a temporary file.
pub(super) fn gunzip(path: &Path) -> Result<TempDb> {
    let out = TempDb::new("gunzip");
    let file = std::fs::File::open(path).map_err(|_| StoreError::NoFile {
        path: path.to_path_buf(),
    })?;
    let mut decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut dst = std::fs::File::create(&out.0).map_err(write_err(&out.0))?;
    std::io::copy(&mut decoder, &mut dst).map_err(|e| StoreError::NotOurs {
        path: path.to_path_buf(),
        why: format!("it does not decompress as gzip ({e})"),
    })?;
    Ok(out)
}
