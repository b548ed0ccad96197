//! Studies on a Slurm cluster (`--executor slurm`): the cells a study lacks become one job array
//! ([`crate::slurm::Array`]); each task fills its cell in its own database, whose snapshots the
//! coordinator imports, recording where each cell runs (`study_jobs`) for the app.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{Plan, StudyOutcome, StudyRunError, Todo};
use crate::slurm::{Array, Layout, Manifest, SlurmSpec, Task, cell_file};
use crate::spec::study::Study;
use crate::store::{Status, Writer};

/// Train what `study` lacks as a Slurm job array, importing the cells' snapshots into `db` as
/// they come; `stop` cancels the array (every cell stops with a checkpoint).
pub fn run(
    study: &Study,
    db: &Path,
    slurm: &SlurmSpec,
    parallel: usize,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<StudyOutcome, StudyRunError> {
    let writer = Writer::open(db)?;
    let Plan { id, mut out, todo } = super::plan(study, db, &writer, report)?;
    writer.flush()?;
    if todo.is_empty() {
        return Ok(out);
    }
    let queue = " (time in Slurm's queue not counted)";
    super::report_left(study, id, db, parallel.max(1), queue, report)?;
    let identity = study.identity();
    let layout = Layout::of(&slurm.shared, &study.name, &identity);
    let mut tasks = Vec::new();
    for (v, seed, what) in &todo {
        let file = cell_file(&v.name, *seed);
        match what {
            Todo::Resume(_) if layout.cell_db(&file).is_file() => out.resumed += 1,
            _ => out.trained += 1,
        }
        tasks.push(Task {
            variant: v.name.clone(),
            seed: *seed,
            name: format!("{}-{}-s{seed}", study.name, v.name),
            tags: format!("study,study{id},slurm,{}", layout.task_tag(&file)),
            config: study.config(v, *seed)?.to_toml(),
            file,
        });
    }
    let manifest = Manifest {
        name: study.name.clone(),
        identity: identity.clone(),
        spec: serde_json::to_string(study).unwrap_or_default(),
        tasks,
    };
    let array = Array {
        db,
        writer: &writer,
        layout: &layout,
        manifest: &manifest,
        study: Some(id),
        on_state: None,
    };
    let d = array.dispatch(slurm, parallel, stop, &format!("study {id}"), report)?;
    let n = manifest.tasks.len();
    let mut unfinished = Vec::new();
    for (i, t) in manifest.tasks.iter().enumerate() {
        match d.statuses[i] {
            Some(Status::Finished) => {}
            Some(Status::Failed) => out.failed += 1,
            status => {
                let run = status.map_or_else(|| "no run".to_owned(), |s| format!("run {s}"));
                unfinished.push(format!(
                    "{} / seed {} (task {}_{i}: {}; {run})",
                    t.variant,
                    t.seed,
                    d.job,
                    d.ended_text(i)
                ));
            }
        }
    }
    if d.stopped() {
        report(format!(
            "job array {} was cancelled: {} cells stopped with a checkpoint or never started",
            d.job,
            unfinished.len()
        ));
        return Err(StudyRunError::Stopped);
    }
    if !unfinished.is_empty() {
        return Err(StudyRunError::Slurm(format!(
            "{} of {n} cells did not finish on Slurm: {}; their logs are in {}; rerun the study to continue them",
            unfinished.len(),
            unfinished.join(", "),
            layout.logs().display()
        )));
    }
    Ok(out)
}
