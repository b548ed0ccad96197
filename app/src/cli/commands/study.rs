//! `study`: run a study here or on Slurm, its report and figures; `study-task`, one Slurm cell.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use shiftadd_core::run::spawn_manager_with;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::Reader;
use shiftadd_core::study;
use shiftadd_core::study::report::{self, Format};

use shiftadd_core::slurm::SlurmSpec;

use super::{
    check_destination, open_manager, record_experiments_dir, slurm_spec, sweep, write_table,
};
use crate::chart::figures;
use crate::cli::args::{StudyArgs, StudyTaskArgs};
use crate::cli::signals::{self, stop_runs_on_signal};
use crate::cli::{db_path, existing_db};

/// `shiftadd study`: train what the study lacks, then print its table (or, with `--report`, only
/// print the table).
pub fn study(a: &StudyArgs) -> anyhow::Result<ExitCode> {
    let spec = Study::load(&a.file, &a.sets)?;
    if let Some(out) = &a.out {
        check_destination(out, a.force)?;
    }
    record_experiments_dir(&a.file);
    let db = db_path(&a.db)?;
    if let Some(r) = &a.report {
        let db = existing_db(&a.db)?;
        sweep(&db)?;
        let reader = Reader::open(&db)?;
        let Some(id) = reader
            .studies()?
            .into_iter()
            .rfind(|s| spec.identifies(&s.identity))
            .map(|s| s.id)
        else {
            bail!(
                "study `{}` has not run in {} (run `shiftadd study {}` first)",
                spec.name,
                db.display(),
                a.file.display()
            );
        };
        let format = Format::parse(r).context("--report takes md, csv or tex")?;
        if a.fit {
            let fit = study::fit::fit(&spec, id, &reader)?;
            let text = fit
                .render(format)
                .context("--fit writes md or csv (the loss table has no LaTeX form)")?;
            write_table(&text, a.out.as_deref(), a.force)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut spec = spec;
        if let Some(b) = &a.baseline {
            if !spec.variants.iter().any(|v| &v.name == b) {
                let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
                bail!(
                    "--baseline {b}: not a variant of `{}` (variants: {})",
                    spec.name,
                    names.join(", ")
                );
            }
            b.clone_into(&mut spec.baseline);
        }
        if let Some(m) = &a.metric {
            m.clone_into(&mut spec.metric);
        }
        let table = report::table(&spec, id, &reader)?;
        if a.metric.is_some() && table.rows.iter().all(|r| r.values.is_empty()) {
            figures::require_recorded(&reader, &spec, id, &spec.metric)?;
        }
        if let Some(dir) = &a.figures {
            for path in figures::write_study_figures(&reader, &spec, id, &table, &a.curves, dir)? {
                eprintln!("wrote {}", path.display());
            }
        }
        write_table(&table.render(format), a.out.as_deref(), a.force)?;
        return Ok(ExitCode::SUCCESS);
    }
    let parallel = a.parallel.unwrap_or(spec.parallel);
    if let Some(slurm) = slurm_spec(&a.slurm, &db)? {
        return study_on_slurm(a, &spec, &db, &slurm, parallel);
    }
    let manager = open_manager(&db)?;
    stop_runs_on_signal(&manager)?;
    let result = study::run(
        &spec,
        &db,
        &manager,
        parallel,
        &signals::STOP,
        &mut |line| {
            eprintln!("{line}");
        },
    );
    manager.shutdown();
    finish_study(&spec, &db, result, a.out.as_deref())
}

/// `shiftadd study --executor slurm`: submit the missing cells as one job array, import their
/// snapshots as they come, then print the table.
fn study_on_slurm(
    a: &StudyArgs,
    spec: &Study,
    db: &Path,
    slurm: &SlurmSpec,
    parallel: usize,
) -> anyhow::Result<ExitCode> {
    // The first signal cancels the array (the coordinator trains nothing itself).
    signals::watch(|_| {})?;
    let result = study::slurm::run(spec, db, slurm, parallel, &signals::STOP, &mut |line| {
        eprintln!("{line}");
    });
    finish_study(spec, db, result, a.out.as_deref())
}

/// A study's end, whichever executor trained it: the counts and the table; exit 3 if it was
/// stopped, 1 if a cell failed.
fn finish_study(
    spec: &Study,
    db: &Path,
    result: Result<study::StudyOutcome, study::StudyRunError>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let outcome = match result {
        Ok(o) => o,
        Err(e @ (study::StudyRunError::Stopped | study::StudyRunError::RunStopped { .. })) => {
            eprintln!("{e}; a rerun of the same command continues the study");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("study {}: {}", outcome.study, outcome.counts());
    let table = report::table(spec, outcome.study, &Reader::open(db)?)?;
    // `out` was checked before the study started (`study`): written as it is now.
    write_table(&table.render(Format::Markdown), out, true)?;
    Ok(if outcome.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `shiftadd study-task`: train one cell of a Slurm study into a node-local database, shipping
/// snapshots to the shared folder; exit 0 finished, 1 failed, 3 stopped (requeued first if the
/// stop was Slurm's time-limit warning).
pub fn study_task(a: &StudyTaskArgs) -> anyhow::Result<ExitCode> {
    let task = shiftadd_core::slurm::CellTask::prepare(&a.manifest, a.index)?;
    eprintln!(
        "cell {} / seed {}: database {}, snapshots to {}",
        task.task.variant,
        task.task.seed,
        task.local_db.display(),
        task.layout.cell_db(&task.task.file).display()
    );
    let manager = spawn_manager_with(&task.local_db, Arc::new(|| {}), Some(task.checkpoints()))?;
    stop_runs_on_signal(&manager)?;
    let result = shiftadd_core::slurm::run_task(&task, &manager, &mut |line| eprintln!("{line}"));
    manager.shutdown();
    let code = match result? {
        shiftadd_core::slurm::CellOutcome::Finished => ExitCode::SUCCESS,
        shiftadd_core::slurm::CellOutcome::Failed(reason) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
        shiftadd_core::slurm::CellOutcome::Stopped => {
            if signals::time_is_up() {
                shiftadd_core::slurm::requeue_self()?;
                eprintln!("requeued: the next job of this task continues from the checkpoint");
            }
            ExitCode::from(3)
        }
    };
    task.remove_local();
    Ok(code)
}
