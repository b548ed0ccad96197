//! Run management: rename, tags, notes, archive, and delete (with the run's checkpoint files).
//!
//! Each edit is one short transaction on its own connection (the CLI's `shiftadd runs --set-name
//! …`, the app's data thread), so it works while other processes train into the database. An
//! edit moves the run's `edited_at` clock, so `shiftadd import` carries it to other copies.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::schema::{Result, RunId, Status, StoreError, now_secs, open_rw};

/// A change to one run's record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunEdit {
    Rename(String),
    /// Replace the tags (comma-separated; blanks dropped, duplicates kept once).
    SetTags(String),
    AddTag(String),
    RemoveTag(String),
    /// Replace the notes (Markdown).
    SetNotes(String),
    Archive(bool),
}

impl RunEdit {
    /// What it does, for a status line: "renamed to `x`".
    pub fn describe(&self) -> String {
        match self {
            Self::Rename(n) => format!("renamed to `{n}`"),
            Self::SetTags(t) => format!("tags set to `{t}`"),
            Self::AddTag(t) => format!("tagged `{t}`"),
            Self::RemoveTag(t) => format!("tag `{t}` removed"),
            Self::SetNotes(_) => "notes saved".into(),
            Self::Archive(true) => "archived".into(),
            Self::Archive(false) => "unarchived".into(),
        }
    }
}

/// The longest run name accepted (in characters); a study's cell names run to about 60.
pub const MAX_NAME_CHARS: usize = 200;

/// Whether a character would steer a terminal or reorder text rather than show: C0 and C1
/// controls, DEL, and Unicode's bidirectional embeddings, overrides and isolates.
pub fn is_steering(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Why `name` cannot name a run (`None`: it can): empty, longer than [`MAX_NAME_CHARS`], or
/// holding a character that would steer a terminal (ESC, a carriage return, a right-to-left
/// override, …).
pub fn name_problem(name: &str) -> Option<String> {
    let n = name.chars().count();
    if name.trim().is_empty() {
        return Some("a name cannot be empty".into());
    }
    if n > MAX_NAME_CHARS {
        return Some(format!(
            "a name is at most {MAX_NAME_CHARS} characters (this one has {n})"
        ));
    }
    name.chars().position(is_steering).map(|i| {
        let c = name.chars().nth(i).unwrap_or_default();
        format!(
            "a name cannot hold control characters (U+{:04X} at character {})",
            u32::from(c),
            i + 1
        )
    })
}

/// Tags normalised: trimmed, no blanks, no commas inside one, each once, in first-seen order.
pub fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for t in tags.into_iter().flat_map(|t| t.split(',')).map(str::trim) {
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out.join(",")
}

fn sq(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    |source| StoreError::sqlite(path, source)
}

/// Apply `edit` to run `run` of the database at `db`.
pub fn edit(db: &Path, run: RunId, edit: &RunEdit) -> Result<()> {
    let mut conn = open_rw(db)?;
    let sq = sq(db);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&sq)?;
    let tags: String = tx
        .query_row("SELECT tags FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()
        .map_err(&sq)?
        .ok_or(StoreError::NoRun(run))?;
    let now = now_secs();
    let set = |column: &str, value: &dyn rusqlite::ToSql| {
        tx.execute(
            &format!("UPDATE runs SET {column} = ?2, edited_at = ?3 WHERE id = ?1"),
            params![run, value, now],
        )
    };
    match edit {
        RunEdit::Rename(n) => {
            let n = n.trim();
            if let Some(why) = name_problem(n) {
                return Err(StoreError::Invalid(format!("run {run}: {why}")));
            }
            set("name", &n)
        }
        RunEdit::SetTags(t) => set("tags", &normalise_tags([t.as_str()])),
        RunEdit::AddTag(t) => set("tags", &normalise_tags([tags.as_str(), t.as_str()])),
        RunEdit::RemoveTag(t) => {
            let gone: Vec<&str> = t.split(',').map(str::trim).collect();
            let kept: Vec<&str> = tags
                .split(',')
                .filter(|x| !gone.contains(&x.trim()))
                .collect();
            set("tags", &normalise_tags(kept))
        }
        RunEdit::SetNotes(n) => set("notes", n),
        RunEdit::Archive(a) => set("archived", a),
    }
    .map_err(&sq)?;
    tx.commit().map_err(&sq)
}

/// Where the checkpoint files of `run` live for database `db`: `<db stem>-checkpoints/run-<id>`
/// beside it — the only place [`delete`] removes files from.
pub fn checkpoint_dir(db: &Path, run: RunId) -> PathBuf {
    let stem = db
        .file_stem()
        .map_or_else(|| "studio".into(), |s| s.to_string_lossy().into_owned());
    db.with_file_name(format!("{stem}-checkpoints"))
        .join(format!("run-{run}"))
}

/// What [`delete`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub run: RunId,
    pub name: String,
    /// The run's checkpoint folder, where it is left empty and removed.
    pub folders: Vec<PathBuf>,
    /// Checkpoint files removed (the `epoch-*` files of the run's own folder).
    pub files: usize,
}

/// Whatever a value holds, as text (bytes that are not UTF-8 replaced).
fn lossy(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// Delete run `run`: its rows everywhere (metrics, logs, histograms, hardware cost, checkpoints,
/// its NAS candidates and study cells) and its checkpoint files. A run still active (queued,
/// running, paused) is refused: stop it first. A NAS candidate whose proxy it was keeps its
/// figures and forgets the run.
pub fn delete(db: &Path, run: RunId) -> Result<Deleted> {
    let mut conn = open_rw(db)?;
    let sq = sq(db);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&sq)?;
    // Read as whatever they hold: a damaged run (an unknown status, a name that is not text) is
    // one a user must be able to delete.
    let (name, status): (String, Option<Status>) = tx
        .query_row("SELECT name, status FROM runs WHERE id = ?1", [run], |r| {
            let (name, status) = (lossy(r.get_ref(0)?), lossy(r.get_ref(1)?));
            Ok((name, Status::parse(&status)))
        })
        .optional()
        .map_err(&sq)?
        .ok_or(StoreError::NoRun(run))?;
    if let Some(status) = status.filter(|s| s.is_active()) {
        return Err(StoreError::Invalid(format!(
            "run {run} (`{name}`) is {status}: stop it before deleting it"
        )));
    }
    tx.execute(
        "UPDATE nas_candidates SET proxy_run = NULL WHERE proxy_run = ?1",
        [run],
    )
    .map_err(&sq)?;
    // Every other table refers to the run with ON DELETE CASCADE.
    tx.execute("DELETE FROM runs WHERE id = ?1", [run])
        .map_err(&sq)?;
    tx.commit().map_err(&sq)?;
    // Files go only after the rows are gone: a failure here leaves files without a run, never a
    // run without its files.
    let mut out = Deleted {
        run,
        name,
        folders: Vec::new(),
        files: 0,
    };
    // Only what this project made for this run: the regular `epoch-*` files of this database's
    // own `run-<id>` folder. The checkpoint paths recorded in the database are never trusted to
    // say which files those are: an imported (or hostile) database may name anything.
    let dir = checkpoint_dir(db, run);
    let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
    if is_dir {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            // `file_type` does not follow links: a link is never a checkpoint.
            let file = e.file_type().is_ok_and(|t| t.is_file());
            if file
                && e.file_name().to_string_lossy().starts_with("epoch-")
                && std::fs::remove_file(e.path()).is_ok()
            {
                out.files += 1;
            }
        }
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if empty && std::fs::remove_dir(&dir).is_ok() {
            out.folders.push(dir);
        }
    }
    Ok(out)
}
