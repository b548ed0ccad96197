//! The command line: [`args`] defines it, [`main`] parses and dispatches to one function per
//! subcommand in [`commands`], which print tables and progress bars and map outcomes to exit
//! codes (errors on one line).

mod args;
mod commands;
mod signals;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::gui;
use args::{Cli, Cmd, DbArg};

/// Entry point of the binary: run, print any error on one line, map to an exit code.
pub fn main() -> ExitCode {
    // First, before any thread exists: training reuses freed memory instead of page-faulting it.
    let allocator = shiftadd_core::alloc::tune_for_training();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("SHIFTADD_LOG", "error"))
        .format_timestamp(None)
        .init();
    log::debug!("allocator: {allocator:?}");
    let cli = Cli::parse();
    if cli.command.is_some() {
        default_sigpipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", text::shown(&one_line(&e), text::LINE_CHARS));
            log::debug!("{e:?}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each once: a cause whose text the line already holds
/// (an error's message often ends with its source's) is not repeated. `SHIFTADD_LOG=debug`
/// prints the whole chain.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    // SQLite's causes restate their error in other case, behind "Error code N: "...
    let plain = |t: &str| {
        let t = t.trim().to_lowercase();
        let t = match t.strip_prefix("error code ") {
            Some(rest) => rest
                .split_once(": ")
                .map_or(t.clone(), |(_, msg)| msg.to_owned()),
            None => t,
        };
        // ... and in other words: "Unable to open the database file".
        t.trim_end_matches('.')
            .split_whitespace()
            .filter(|w| !matches!(*w, "the" | "a" | "an"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if plain(&line).contains(&plain(&text)) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Command-line tables end quietly when their reader goes away (`shiftadd hw … | head`), as
/// other tools do, instead of panicking on a broken pipe.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal at start-up; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub(crate) fn db_path(arg: &DbArg) -> anyhow::Result<PathBuf> {
    if let Some(p) = &arg.db {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("SHIFTADD_DB").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = dirs::data_dir()
        .context("no platform data directory; pass --db PATH or set SHIFTADD_DB")?;
    Ok(base.join("shiftadd").join("studio.db"))
}

/// The database a reading command reads: [`db_path`]'s, which must exist — a typo in `--db`
/// names no database, and reading never creates one (only commands that record do).
pub(crate) fn existing_db(arg: &DbArg) -> anyhow::Result<PathBuf> {
    let db = db_path(arg)?;
    match std::fs::metadata(&db) {
        Ok(m) if m.is_dir() => anyhow::bail!(
            "{} is a folder, not a database (nothing was changed)",
            db.display()
        ),
        Ok(_) => Ok(db),
        Err(_) => anyhow::bail!(
            "no database at {} (nothing was created: `shiftadd train`, `study` or the app make one)",
            db.display()
        ),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => gui::run(&db_path(&DbArg { db: None })?),
        Some(Cmd::Gui(a)) => gui::run(&db_path(&a.db)?),
        Some(Cmd::Train(a)) => commands::train(a),
        Some(Cmd::Nas(a)) => commands::nas(a),
        Some(Cmd::Resume(a)) => commands::resume(&a),
        Some(Cmd::Hw(a)) => commands::hw(&a),
        Some(Cmd::Runs(a)) => commands::runs(&a),
        Some(Cmd::Export(a)) => commands::export(&a),
        Some(Cmd::Grads(a)) => commands::grads(&a),
        Some(Cmd::Eval(a)) => commands::eval(&a),
        Some(Cmd::Study(a)) => commands::study(&a),
        Some(Cmd::Import(a)) => commands::import(&a),
        Some(Cmd::Compact(a)) => commands::compact(&a),
        Some(Cmd::Check(a)) => commands::check(&a),
        Some(Cmd::AddBench(a)) => commands::add_bench(&a),
        Some(Cmd::StudyTask(a)) => commands::study_task(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug)]
    struct Wraps(std::io::Error);
    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read config x.toml: {}", self.0)
        }
    }
    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(Wraps(io));
        assert_eq!(
            one_line(&e),
            "cannot read config x.toml: No such file or directory"
        );
        let sqlite = anyhow::Error::new(std::io::Error::other(
            "Error code 14: Unable to open the database file",
        ))
        .context("database x.db: unable to open database file: x.db");
        assert_eq!(
            one_line(&sqlite),
            "database x.db: unable to open database file: x.db"
        );
        let e = e.context("study paper.toml");
        assert_eq!(
            one_line(&e),
            "study paper.toml: cannot read config x.toml: No such file or directory"
        );
    }
}
