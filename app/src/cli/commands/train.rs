//! Commands that train: `train` (and a Slurm job's own run), `nas`, `resume`, and the progress
//! bar that follows a run.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use shiftadd_core::run::{Command, Event, ManagerHandle};
use shiftadd_core::store::manage::{self};
use shiftadd_core::store::{self, Reader, RunId};
use shiftadd_core::{Config, nas};

use super::{open_manager, record_experiments_dir, slurm_spec};
use crate::cli::args::{NasArgs, ResumeArgs, TrainArgs};
use crate::cli::signals::{self, stop_runs_on_signal};
use crate::cli::text::{NAME_CHARS, shown};
use crate::cli::{db_path, existing_db};

/// `shiftadd train`: start a run and follow it with a progress bar.
pub fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let TrainArgs {
        config,
        db,
        mut sets,
        device,
        threads,
        name,
        tags,
    } = a;
    if let Some(d) = device {
        sets.push(format!("train.device={d}"));
    }
    if let Some(t) = threads {
        sets.push(format!("train.threads={t}"));
    }
    let cfg = Config::load(&config, &sets)?;
    record_experiments_dir(&config);
    let name = name.unwrap_or_else(|| {
        config
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned())
    });
    if let Some(why) = manage::name_problem(&name) {
        bail!("run name `{}`: {why}", shown(&name, NAME_CHARS));
    }
    let db = db_path(&db)?;
    let manager = open_manager(&db)?;
    stop_runs_on_signal(&manager)?;
    // Under Slurm the run belongs to its job: a requeued job (preempted, out of time) continues it.
    let mut tags = tags;
    if let Some(job) = slurm_job_tag() {
        match job_run(&db, &job)? {
            JobRun::Continue(run) => {
                eprintln!(
                    "{job}: continuing run {run} from its last checkpoint (the job was requeued)"
                );
                manager.commands.send(Command::Resume { run, request: 1 })?;
                return follow(manager, &db);
            }
            JobRun::Finished(run) => {
                eprintln!("{job}: run {run} of this job has already finished");
                manager.shutdown();
                return Ok(ExitCode::SUCCESS);
            }
            JobRun::New => {
                tags = if tags.is_empty() {
                    job
                } else {
                    format!("{tags},{job}")
                };
            }
        }
    }
    manager.commands.send(Command::Start {
        config: Box::new(cfg),
        name,
        tags,
        request: 1,
    })?;
    follow(manager, &db)
}

/// The tag that names this Slurm job's run (`slurm-job-<id>`, `slurm-job-<array id>_<task>`), when
/// running under Slurm; a requeued job keeps its id.
fn slurm_job_tag() -> Option<String> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(array), Some(task)) => Some(format!("slurm-job-{array}_{task}")),
        _ => var("SLURM_JOB_ID").map(|id| format!("slurm-job-{id}")),
    }
}

/// What an earlier start of this Slurm job left.
enum JobRun {
    New,
    Continue(RunId),
    Finished(RunId),
}

/// The newest run tagged `job` that did not fail: continue it unless it finished. A run still
/// marked active belongs to the job's previous start, which is gone: its heartbeat goes stale
/// within seconds, and then it is resumable.
fn job_run(db: &Path, job: &str) -> anyhow::Result<JobRun> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        drop(store::open_rw(db)?); // marks runs of dead processes interrupted
        let found = Reader::open(db)?
            .runs()?
            .into_iter()
            .filter(|r| r.tags.split(',').any(|t| t == job))
            .filter(|r| r.status != store::Status::Failed)
            .max_by_key(|r| r.id);
        match found {
            None => return Ok(JobRun::New),
            Some(r) if r.status == store::Status::Finished => return Ok(JobRun::Finished(r.id)),
            Some(r) if !r.status.is_active() => return Ok(JobRun::Continue(r.id)),
            Some(r) if std::time::Instant::now() > deadline => {
                bail!(
                    "run {} of {job} is still {} in another process",
                    r.id,
                    r.status
                )
            }
            Some(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// `shiftadd nas`: run (or resume) a search; with `--train-best`, train its best TargetNet.
pub fn nas(a: NasArgs) -> anyhow::Result<ExitCode> {
    let NasArgs {
        config,
        db,
        sets,
        train_best,
        slurm,
    } = a;
    let cfg = Config::load(&config, &sets)?;
    record_experiments_dir(&config);
    let name = config
        .file_stem()
        .map_or_else(|| "nas".into(), |s| s.to_string_lossy().into_owned());
    let db = db_path(&db)?;
    let manager = open_manager(&db)?;
    stop_runs_on_signal(&manager)?;
    let slurm = slurm_spec(&slurm, &db)?;
    let outcome = match nas::search_on(
        &cfg,
        &db,
        &name,
        &manager,
        slurm.as_ref(),
        &signals::STOP,
        &mut |line| eprintln!("{line}"),
    ) {
        Ok(o) => o,
        Err(e @ (nas::NasError::Stopped | nas::NasError::ProxyStopped(_))) => {
            manager.shutdown();
            eprintln!("{e}; a rerun of the same command resumes the search");
            return Ok(ExitCode::from(3));
        }
        Err(e) => bail!("{e}"),
    };
    let unit = nas::unit(cfg.nas.budget_kind);
    let arch = outcome.target.to_json();
    println!("search {}", outcome.search);
    println!(
        "best TargetNet ({}): cost {:.4} {unit}, proxy top-1 {:.2} %",
        cfg.ops.kind.as_str(),
        outcome.target_cost,
        outcome.target_proxy * 100.0
    );
    println!("{arch}");
    let sub = outcome.subnet.to_json();
    eprintln!(
        "{}; train it inside its SubNet with:\n  shiftadd train {} --set 'model.arch={arch}' --set 'aug.arch={sub}'",
        outcome.tally(),
        config.display()
    );
    if !train_best {
        manager.shutdown();
        return Ok(ExitCode::SUCCESS);
    }
    let best = nas::target_config(&cfg, &outcome.target, &outcome.subnet);
    manager.commands.send(Command::Start {
        config: Box::new(best),
        name: format!("{name}-best"),
        tags: format!("nas-best,nas{}", outcome.search),
        request: 1,
    })?;
    follow(manager, &db)
}

/// `shiftadd resume`: continue a run from its last checkpoint.
pub fn resume(a: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let (run, db) = (a.run, &a.db);
    let db = existing_db(db)?;
    let manager = open_manager(&db)?;
    stop_runs_on_signal(&manager)?;
    manager.commands.send(Command::Resume { run, request: 1 })?;
    follow(manager, &db)
}

/// Drive the progress bar from the manager's events until the run ends.
fn follow(manager: ManagerHandle, db: &Path) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    let mut metric = "top-1";
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
                val_score,
                val_top5,
                ..
            } => {
                // A segmentation run has no top-5: its score is the mean IoU.
                metric = if val_top5.is_some() { "top-1" } else { "mIoU" };
                say(match val_top5 {
                    Some(top5) => format!(
                        "epoch {epoch}: val top-1 {:.2} %  top-5 {:.2} %",
                        val_score * 100.0,
                        top5 * 100.0
                    ),
                    None => format!("epoch {epoch}: val mIoU {:.2} %", val_score * 100.0),
                });
            }
            Event::Finished {
                run,
                val_score,
                test_score,
            } => {
                bar.finish_and_clear();
                eprintln!(
                    "run {run} finished: val {metric} {:.2} %{} (database {})",
                    val_score * 100.0,
                    test_score.map_or(String::new(), |t| format!(
                        ", test {metric} {:.2} %",
                        t * 100.0
                    )),
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
