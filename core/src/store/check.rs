//! `shiftadd check`, and the row check `shiftadd import` runs before it merges: SQLite's own
//! integrity check, then every row of shiftadd's tables against the schema this code writes —
//! each column holding the kind of value its declaration names (SQLite stores whatever a writer
//! gave it: text in a time column, a blob for a name), and a status one of the names this code
//! knows. A row that fails is named by table, key and column; nothing is changed.

use std::path::Path;

use rusqlite::Connection;

use super::reader::found;
use super::schema::{CandidateStatus, Result, Status, StoreError, migrate, one_line, read_only};

/// What `shiftadd check` found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// SQLite's `integrity_check` lines other than "ok" (at most 100).
    pub problems: Vec<String>,
    /// Rows whose values this code cannot read (at most [`DAMAGE_LIMIT`]), when SQLite found the
    /// file sound.
    pub damaged: Vec<Damage>,
    pub schema_version: i64,
    /// Rows of `runs` and `metrics`, where they could be counted.
    pub runs: Option<i64>,
    pub metric_rows: Option<i64>,
}

/// How many damaged rows a check names at most.
pub const DAMAGE_LIMIT: usize = 100;

/// One row whose column does not hold what the schema says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub table: String,
    /// The row's key, as `column = value` pairs (`id = 7`; `run_id = 3, key = 'val/top1', step = 9`).
    pub row: String,
    pub column: String,
    /// What it holds (`the text "yesterday"`).
    pub found: String,
    /// What belongs there (`a number`, `a run status`).
    pub expected: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {}: {} holds {}, where {} belongs",
            self.table, self.row, self.column, self.found, self.expected
        )
    }
}

/// Check `path` (read-only; nothing is changed): SQLite's `integrity_check`, then, if the file is
/// sound, every row against the schema.
pub fn check(path: &Path) -> Result<CheckReport> {
    if !path.exists() {
        return Err(StoreError::NoFile {
            path: path.to_path_buf(),
        });
    }
    let sq = |source| StoreError::sqlite(path, source);
    let conn = read_only(path)?;
    let checked: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA integrity_check(100)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    let lines = match checked {
        Ok(lines) => lines,
        // Damage SQLite cannot even walk is itself the finding.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            vec![one_line(&e.to_string())]
        }
        Err(e) => return Err(sq(e)),
    };
    // One finding a line (SQLite may return several in one row), its banner and "ok" left out.
    let problems: Vec<String> = lines
        .iter()
        .flat_map(|l| l.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "ok" && !l.starts_with("*** in database"))
        .map(str::to_owned)
        .collect();
    let damaged = if problems.is_empty() {
        damaged_rows(&conn, "main", DAMAGE_LIMIT).map_err(sq)?
    } else {
        Vec::new()
    };
    let count = |table: &str| {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .ok()
    };
    Ok(CheckReport {
        schema_version: conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or(-1),
        runs: count("runs"),
        metric_rows: count("metrics"),
        problems,
        damaged,
    })
}

/// One column as this code's schema declares it.
struct Column {
    name: String,
    /// `typeof()` results it may hold.
    kinds: &'static [&'static str],
    /// Its values, when it holds one of a few names.
    names: Option<Vec<&'static str>>,
    /// Part of the row's key (its primary key; `rowid` for a table without one).
    key: bool,
}

/// shiftadd's tables as the current schema declares them: migrated in memory, so the declaration
/// read is this code's, never the checked file's.
fn reference() -> rusqlite::Result<Vec<(String, Vec<Column>)>> {
    let conn = Connection::open_in_memory()?;
    migrate(&conn)?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(
            "SELECT name, upper(type), \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
        )?;
        let columns = stmt
            .query_map([&table], |r| {
                let (name, ty, not_null, pk): (String, String, bool, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let kinds: &'static [&'static str] = match (ty.as_str(), not_null) {
                    ("INTEGER", true) => &["integer"],
                    ("INTEGER", false) => &["integer", "null"],
                    ("REAL", true) => &["real", "integer"],
                    ("REAL", false) => &["real", "integer", "null"],
                    ("TEXT", true) => &["text"],
                    ("TEXT", false) => &["text", "null"],
                    _ => &["integer", "real", "text", "blob", "null"],
                };
                let names = match (table.as_str(), name.as_str()) {
                    ("runs", "status") => Some(Status::ALL.map(Status::as_str).to_vec()),
                    ("nas_candidates", "status") => {
                        Some(CandidateStatus::ALL.map(CandidateStatus::as_str).to_vec())
                    }
                    _ => None,
                };
                Ok(Column {
                    name,
                    kinds,
                    names,
                    key: pk > 0,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push((table, columns));
    }
    Ok(out)
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Up to `limit` rows of the tables in database `schema` of `conn` (`main`, or an attached one)
/// whose values do not hold what this code's schema says. One scan per table; a table the file
/// lacks is skipped (an older schema is migrated before its rows are read).
pub(super) fn damaged_rows(
    conn: &Connection,
    schema: &str,
    limit: usize,
) -> rusqlite::Result<Vec<Damage>> {
    let mut out = Vec::new();
    for (table, columns) in reference()? {
        if out.len() >= limit {
            break;
        }
        let present: bool = conn.query_row(
            &format!(
                "SELECT COUNT(*) > 0 FROM {}.sqlite_master WHERE type = 'table' AND name = ?1",
                ident(schema)
            ),
            [&table],
            |r| r.get(0),
        )?;
        if !present {
            continue;
        }
        // The first bad column of each row, by its position, in one pass over the table.
        let tests: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let col = ident(&c.name);
                let kinds: Vec<String> = c.kinds.iter().map(|k| literal(k)).collect();
                let mut bad = format!("typeof({col}) NOT IN ({})", kinds.join(", "));
                if let Some(names) = &c.names {
                    let names: Vec<String> = names.iter().map(|n| literal(n)).collect();
                    bad = format!("({bad} OR {col} NOT IN ({}))", names.join(", "));
                }
                format!("WHEN {bad} THEN {i}")
            })
            .collect();
        let keys: Vec<&Column> = columns.iter().filter(|c| c.key).collect();
        let key_sql = if keys.is_empty() {
            "'rowid = ' || rowid".to_owned()
        } else {
            keys.iter()
                .map(|c| format!("{} || ' = ' || quote({})", literal(&c.name), ident(&c.name)))
                .collect::<Vec<_>>()
                .join(" || ', ' || ")
        };
        let all: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let sql = format!(
            "SELECT * FROM (SELECT substr({key_sql}, 1, 80), CASE {} END AS bad, {} FROM {}.{})
             WHERE bad IS NOT NULL LIMIT {}",
            tests.join(" "),
            all.join(", "),
            ident(schema),
            ident(&table),
            limit - out.len()
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let bad: usize = r.get(1)?;
            let column = &columns[bad];
            let expected = match (&column.names, column.kinds[0]) {
                (Some(_), _) if table == "runs" => "a run status".to_owned(),
                (Some(_), _) => "a NAS candidate status".to_owned(),
                (None, "integer") => "an integer".to_owned(),
                (None, "real") => "a number".to_owned(),
                (None, _) => "text".to_owned(),
            };
            out.push(Damage {
                table: table.clone(),
                row: r.get::<_, String>(0)?,
                column: column.name.clone(),
                found: found(r.get_ref(2 + bad)?),
                expected,
            });
        }
    }
    Ok(out)
}
