//! One function per subcommand (its arguments: [`super::args`]), and what they share: the run
//! manager, the progress bar that follows a run, the tables.
//! Grouped by what they do: [`train`], [`study`], [`runs`] (the store), [`inspect`].

mod inspect;
mod runs;
mod study;
mod train;

pub use inspect::{add_bench, eval, grads, hw};
pub use runs::{check, compact, export, import, runs};
pub use study::{study, study_task};
pub use train::{nas, resume, train};

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use shiftadd_core::host;
use shiftadd_core::run::{ManagerHandle, spawn_manager};
use shiftadd_core::slurm::SlurmSpec;
use shiftadd_core::store;

use crate::cli::args::SlurmArgs;

/// The runs of this command record the git commit of the folder `file` is in (for a study file
/// in `experiments/studies/`, of `experiments/`).
fn record_experiments_dir(file: &Path) {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = match dir.file_name() {
        Some(n) if n == "studies" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    host::set_experiments_dir(dir);
}

/// `--executor slurm`'s spec (`None` for `local`).
fn slurm_spec(a: &SlurmArgs, db: &Path) -> anyhow::Result<Option<SlurmSpec>> {
    if a.executor != "slurm" {
        return Ok(None);
    }
    let args = a.slurm_args.as_deref().unwrap_or("");
    // Split as a shell would: quotes keep an argument with spaces whole.
    let Some(args) = shlex::split(args) else {
        bail!("--slurm-args `{args}`: a quote is not closed (nothing was submitted)");
    };
    let spec = SlurmSpec::for_db(db, a.shared.as_deref(), args)
        .context("--shared: cannot resolve the shared folder or this binary's path")?;
    Ok(Some(spec))
}

/// Before a reading command reads `db`: migrate it and mark runs whose process died interrupted,
/// where this user can write it; a read-only database (another user's file, a read-only mount) is
/// read as it is, with a note saying so.
fn sweep(db: &Path) -> anyhow::Result<()> {
    match store::open_rw(db) {
        Ok(_) => Ok(()),
        Err(store::StoreError::ReadOnly { .. }) => {
            eprintln!(
                "note: {} is read-only here: read as it is (runs whose process died are not marked interrupted)",
                db.display()
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` may be written: never through a symbolic link (it would write wherever the
/// link points), and over an existing file only with `--force`.
fn check_destination(path: &Path, force: bool) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link: not written through (nothing was written; name the file itself)",
            path.display()
        ),
        Ok(m) if m.is_dir() => bail!("{} is a folder (nothing was written)", path.display()),
        Ok(_) if !force => bail!(
            "{} exists: add --force to replace it (nothing was written)",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Create `path` for writing, as [`check_destination`] allows: a new file, or with `force` an
/// existing regular file replaced.
fn create_destination(path: &Path, force: bool) -> anyhow::Result<std::fs::File> {
    check_destination(path, force)?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    open.open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn write_table(text: &str, out: Option<&Path>, force: bool) -> anyhow::Result<()> {
    match out {
        Some(p) => create_destination(p, force).and_then(|mut f| {
            f.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", p.display()))
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn open_manager(db: &Path) -> anyhow::Result<ManagerHandle> {
    // The CLI's main thread blocks on the event channel, so it needs no waker.
    Ok(spawn_manager(db, Arc::new(|| {}))?)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}", v * 100.0))
}
