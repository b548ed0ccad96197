//! `shiftadd-app`: the `shiftadd` binary — thin glue over `shiftadd-core`. This crate holds the
//! command line (progress bars, exit codes, one-line errors); the GUI arrives in a later issue.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shiftadd_core::run::{Command, Event, ManagerHandle, spawn_manager};
use shiftadd_core::store::{self, Reader, RunId};
use shiftadd_core::{Config, export};

#[derive(Parser, Debug)]
#[command(
    name = "shiftadd",
    version,
    about = "ShiftAdd Studio: train multiplication-free tiny networks with ShiftAddAug"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Args, Debug, Clone)]
struct DbArg {
    /// Database file (default: $SHIFTADD_DB, else the platform data directory's shiftadd/studio.db).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open the app (not yet available: prints this help).
    Gui,
    /// Train a run headless, with a progress bar; prints the run id.
    Train {
        /// Run configuration (TOML).
        config: PathBuf,
        #[command(flatten)]
        db: DbArg,
        /// Override a config key, e.g. --set train.epochs=3 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// cpu, cuda or auto (overrides train.device).
        #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
        device: Option<String>,
        /// Torch intra-op threads (overrides train.threads; 0 = one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Run name (default: the config file's name).
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated tags stored with the run.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Continue an interrupted or stopped run from its last checkpoint.
    Resume {
        run: RunId,
        #[command(flatten)]
        db: DbArg,
    },
    /// List runs with status and headline metrics.
    Runs {
        #[command(flatten)]
        db: DbArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Export a run's metrics as CSV.
    Export {
        run: RunId,
        /// Write all scalar metrics to this CSV file.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Write the trained tiny MF model (safetensors + JSON) to this folder.
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
}

/// Entry point of the binary: run, print any error on one line, map to an exit code.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("SHIFTADD_LOG", "error"))
        .format_timestamp(None)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn db_path(arg: &DbArg) -> anyhow::Result<PathBuf> {
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None | Some(Cmd::Gui) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!("\n\nThe desktop app is not built yet; use the commands above.");
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Train {
            config,
            db,
            mut sets,
            device,
            threads,
            name,
            tags,
        }) => {
            if let Some(d) = device {
                sets.push(format!("train.device={d}"));
            }
            if let Some(t) = threads {
                sets.push(format!("train.threads={t}"));
            }
            let cfg = Config::load(&config, &sets)?;
            let name = name.unwrap_or_else(|| {
                config
                    .file_stem()
                    .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned())
            });
            let db = db_path(&db)?;
            let manager = open_manager(&db)?;
            manager.commands.send(Command::Start {
                config: Box::new(cfg),
                name,
                tags,
                request: 1,
            })?;
            follow(manager, &db)
        }
        Some(Cmd::Resume { run, db }) => {
            let db = db_path(&db)?;
            let manager = open_manager(&db)?;
            manager.commands.send(Command::Resume { run, request: 1 })?;
            follow(manager, &db)
        }
        Some(Cmd::Runs { db, json }) => {
            let db = db_path(&db)?;
            drop(store::open_rw(&db)?); // creates/migrates, and marks dead runs interrupted
            list_runs(&Reader::open(&db)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Cmd::Export {
            run,
            csv,
            model,
            db,
        }) => {
            let db = db_path(&db)?;
            if csv.is_none() && model.is_none() {
                bail!("nothing to export: pass --csv FILE and/or --model DIR");
            }
            if let Some(csv) = csv {
                let n = export_csv(&Reader::open(&db)?, run, &csv)?;
                println!("wrote {n} metric rows of run {run} to {}", csv.display());
            }
            if let Some(dir) = model {
                export_model(&db, run, &dir)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_manager(db: &Path) -> anyhow::Result<ManagerHandle> {
    // The CLI's main thread blocks on the event channel, so it needs no waker.
    Ok(spawn_manager(db, Arc::new(|| {}))?)
}

/// Drive the progress bar from the manager's events until the run ends.
fn follow(manager: ManagerHandle, db: &Path) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:28}] {pos}/{len} steps {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let code = loop {
        let Ok(event) = manager.events.recv() else {
            bail!("the run manager stopped unexpectedly");
        };
        match event {
            Event::Created { run, .. } => {
                println!("run {run}");
                let _ = std::io::stdout().flush();
                bar.set_prefix(format!("run {run}"));
            }
            Event::Rejected { reason, .. } => {
                bar.finish_and_clear();
                bail!("{reason}");
            }
            Event::Running {
                step,
                total_steps,
                epoch,
                total_epochs,
                ..
            } => {
                bar.set_length(total_steps as u64);
                bar.set_position(step as u64);
                bar.reset_eta();
                say(format!(
                    "training: epoch {}/{total_epochs}, step {step}/{total_steps}",
                    epoch + 1
                ));
            }
            Event::Progress {
                epoch,
                step,
                loss,
                images_per_sec,
                ..
            } => {
                bar.set_position(step as u64);
                bar.set_message(format!(
                    "epoch {epoch} loss {loss:.3} {images_per_sec:.0} img/s"
                ));
            }
            Event::EpochEnded {
                epoch,
                val_top1,
                val_top5,
                ..
            } => say(format!(
                "epoch {epoch}: val top-1 {:.2} %  top-5 {:.2} %",
                val_top1 * 100.0,
                val_top5 * 100.0
            )),
            Event::Finished { run, val_top1 } => {
                bar.finish_and_clear();
                eprintln!(
                    "run {run} finished: val top-1 {:.2} % (database {})",
                    val_top1 * 100.0,
                    db.display()
                );
                break ExitCode::SUCCESS;
            }
            Event::Stopped { run } => {
                bar.finish_and_clear();
                eprintln!("run {run} stopped; `shiftadd resume {run}` continues it");
                break ExitCode::from(3);
            }
            Event::Failed { run, reason } => {
                bar.finish_and_clear();
                eprintln!("error: run {run} failed: {reason}");
                break ExitCode::FAILURE;
            }
            Event::CheckpointSaved { .. } | Event::Paused { .. } | Event::Resumed { .. } => {}
        }
    };
    manager.shutdown();
    Ok(code)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}", v * 100.0))
}

fn list_runs(reader: &Reader, json: bool) -> anyhow::Result<()> {
    let runs = reader.runs()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!(
        "{:>4}  {:<24} {:<12} {:<14} {:<10} {:<5} {:>6} {:>8} {:>8}",
        "id", "name", "status", "dataset", "model", "op", "epochs", "last%", "best%"
    );
    for r in &runs {
        println!(
            "{:>4}  {:<24} {:<12} {:<14} {:<10} {:<5} {:>6} {:>8} {:>8}{}",
            r.id,
            r.name,
            r.status,
            r.dataset,
            r.model,
            r.operator,
            r.epochs_done.map_or_else(|| "-".into(), |e| e.to_string()),
            pct(r.last_val_top1),
            pct(r.best_val_top1),
            r.reason
                .as_ref()
                .map(|x| format!("  ({x})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Export the tiny MF model, then evaluate it from the written files alone.
fn export_model(db: &Path, run: RunId, dir: &Path) -> anyhow::Result<()> {
    let exported = export::export_run(db, run, dir)?;
    let reader = Reader::open(db)?;
    let cfg = Config::from_toml_str(&reader.config_toml(run)?, &format!("run {run}"), &[])?;
    let top1 = export::ExportedModel::load(dir)?.evaluate(&cfg.data, cfg.eval.batch_size)?;
    let last = reader.run(run)?.last_val_top1;
    println!(
        "wrote run {run}'s tiny {} model ({} steps, {} tensors) to {}: test top-1 {:.2} % from the files (run's last evaluation: {} %)",
        exported.json.operator.as_str(),
        exported.json.steps.len(),
        exported.tensors,
        dir.display(),
        top1 * 100.0,
        pct(last)
    );
    Ok(())
}

fn export_csv(reader: &Reader, run: RunId, path: &Path) -> anyhow::Result<usize> {
    reader.run(run)?; // a clear error for an unknown run
    let rows = reader.metrics(run)?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    writeln!(out, "run_id,key,step,epoch,wall_time,value")?;
    for m in &rows {
        writeln!(
            out,
            "{},{},{},{},{:.3},{}",
            m.run, m.key, m.step, m.epoch, m.wall_time, m.value
        )?;
    }
    out.flush()?;
    Ok(rows.len())
}
