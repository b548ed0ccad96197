//! One function per subcommand (its arguments: [`super::args`]), and what they share: the run
//! manager, the progress bar that follows a run, the tables.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shiftadd_core::run::{Command, Event, ManagerHandle, spawn_manager, spawn_manager_with};
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::manage::{self, RunEdit};
use shiftadd_core::store::{self, Reader, RunId};
use shiftadd_core::study::report::{self, Format};
use shiftadd_core::{Config, export, host, hw, nas, study, train};

use shiftadd_core::slurm::SlurmSpec;

use super::args::{
    CheckArgs, CompactArgs, EvalArgs, EvalSplit, ExportArgs, GradsArgs, HwArgs, ImportArgs,
    NasArgs, ResumeArgs, RunsArgs, SlurmArgs, StudyArgs, StudyTaskArgs, TrainArgs,
};
use super::signals::{self, stop_runs_on_signal};
use super::text::{LINE_CHARS, NAME_CHARS, shown};
use super::{db_path, existing_db};
use crate::chart::figures;

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
        "{} candidates trained, {} reused from earlier; train it inside its SubNet with:\n  shiftadd train {} --set 'model.arch={arch}' --set 'aug.arch={sub}'",
        outcome.evaluated,
        outcome.reused,
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

/// `shiftadd hw`: the hardware cost of each config's models.
pub fn hw(a: &HwArgs) -> anyhow::Result<ExitCode> {
    let (configs, sets, json, layers) = (&a.configs, &a.sets, a.json, a.layers);
    hw_report(configs, sets, json, layers || configs.len() == 1)?;
    Ok(ExitCode::SUCCESS)
}

/// `shiftadd runs`: the runs table.
pub fn runs(a: &RunsArgs) -> anyhow::Result<ExitCode> {
    let db = existing_db(&a.db)?;
    sweep(&db)?;
    let mut edits = Vec::new();
    if let Some(n) = &a.set_name {
        if a.runs.len() != 1 {
            bail!("--set-name renames one run: give exactly one RUN");
        }
        edits.push(RunEdit::Rename(n.clone()));
    }
    edits.extend(a.tags.iter().map(|t| RunEdit::AddTag(t.clone())));
    edits.extend(a.untags.iter().map(|t| RunEdit::RemoveTag(t.clone())));
    if let Some(n) = &a.note {
        let text = if n == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read the notes from stdin")?;
            s
        } else {
            n.clone()
        };
        edits.push(RunEdit::SetNotes(text));
    }
    if a.archive || a.unarchive {
        edits.push(RunEdit::Archive(a.archive));
    }
    if (a.delete || !edits.is_empty()) && a.runs.is_empty() {
        bail!("name the runs to change: shiftadd runs RUN... --tag T (see `shiftadd runs --help`)");
    }
    let reader = Reader::open(&db)?;
    for &run in &a.runs {
        reader.run(run)?; // every id checked before anything changes
    }
    if a.delete {
        return delete_runs(&db, &reader, &a.runs, a.yes);
    }
    for &run in &a.runs {
        for e in &edits {
            manage::edit(&db, run, e)?;
            println!("run {run}: {}", shown(&e.describe(), LINE_CHARS));
        }
    }
    if edits.is_empty() && !a.runs.is_empty() {
        for &run in &a.runs {
            show_run(&reader, run, a.json)?;
        }
    } else if edits.is_empty() {
        list_runs(&reader, a.json, a.all)?;
    }
    Ok(ExitCode::SUCCESS)
}

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

fn delete_runs(db: &Path, reader: &Reader, runs: &[RunId], yes: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("--delete removes runs for good: add --yes to confirm (nothing was changed)");
        }
        let names: Vec<String> = runs
            .iter()
            .map(|&r| Ok(format!("{r} ({})", shown(&reader.run(r)?.name, NAME_CHARS))))
            .collect::<anyhow::Result<_>>()?;
        print!(
            "delete run(s) {} with their metrics and checkpoint files? [y/N] ",
            names.join(", ")
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing was deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    for &run in runs {
        let d = manage::delete(db, run)?;
        let folders: Vec<String> = d.folders.iter().map(|f| f.display().to_string()).collect();
        println!(
            "deleted run {run} (`{}`): {} checkpoint file(s){}",
            shown(&d.name, NAME_CHARS),
            d.files,
            if folders.is_empty() {
                String::new()
            } else {
                format!(", folder {}", folders.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One run in full: the listing's figures, tags, notes, provenance.
fn show_run(reader: &Reader, run: RunId, json: bool) -> anyhow::Result<()> {
    let r = reader.run(run)?;
    let prov = reader.provenance(run)?;
    let parsed: Option<host::Provenance> = serde_json::from_str(&prov).ok();
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["provenance"] = serde_json::from_str(&prov).unwrap_or(serde_json::Value::Null);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "run {} `{}`: {}{}",
        r.id,
        shown(&r.name, LINE_CHARS),
        r.status,
        r.reason
            .as_ref()
            .map(|x| format!(" ({})", shown(x, LINE_CHARS)))
            .unwrap_or_default()
    );
    println!(
        "  {} · {} · {} · seed {}",
        r.dataset, r.model, r.operator, r.seed
    );
    println!(
        "  val best {} % · val last {} % · test {} % · {} epochs{}",
        pct(r.best_val_top1),
        pct(r.last_val_top1),
        pct(r.test_top1),
        r.epochs_done.unwrap_or(0),
        r.duration_secs()
            .map(|s| format!(" · {s:.0} s"))
            .unwrap_or_default()
    );
    if !r.tags.is_empty() {
        println!("  tags: {}", shown(&r.tags, LINE_CHARS));
    }
    if r.archived {
        println!("  archived");
    }
    match parsed {
        Some(p) => println!("  {}", p.summary()),
        None => println!("  recorded before provenance was kept"),
    }
    for line in r.notes.lines() {
        println!("  | {}", shown(line, LINE_CHARS));
    }
    Ok(())
}

/// `shiftadd export`: a run's metrics as CSV and/or its tiny model.
pub fn export(a: &ExportArgs) -> anyhow::Result<ExitCode> {
    let (run, csv, model, db) = (a.run, &a.csv, &a.model, &a.db);
    let db = existing_db(db)?;
    if csv.is_none() && model.is_none() {
        bail!("nothing to export: pass --csv FILE and/or --model DIR");
    }
    if let Some(csv) = csv {
        let n = export_csv(&Reader::open(&db)?, run, csv, a.force)?;
        println!("wrote {n} metric rows of run {run} to {}", csv.display());
    }
    if let Some(dir) = model {
        export_model(&db, run, dir, a.force)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `shiftadd eval`: a checkpoint's tiny model on train, val or test under each source of BN
/// statistics.
pub fn eval(a: &EvalArgs) -> anyhow::Result<ExitCode> {
    use train::BnStats;
    if a.bn_images.contains(&0) {
        bail!("--bn-images: 0 images cannot estimate BN statistics");
    }
    if a.images == Some(0) {
        bail!("--images: 0 images cannot be evaluated");
    }
    let db = existing_db(&a.db)?;
    let at = a.epoch.map_or(train::Weights::Last, train::Weights::Epoch);
    let split = match a.split {
        EvalSplit::Train => train::Split::Train,
        EvalSplit::Val => train::Split::Val,
        EvalSplit::Test => train::Split::Test,
    };
    let mut stats = vec![BnStats::Saved];
    stats.extend(a.bn_images.iter().map(|&n| BnStats::Reestimated(n)));
    stats.push(BnStats::Batch);
    let e = train::reevaluate_run(&db, a.run, at, split, a.images, &stats)?;
    if a.json {
        let rows: Vec<serde_json::Value> = e
            .rows
            .iter()
            .map(|(s, sc)| {
                let (source, images) = match s {
                    BnStats::Saved => ("saved", None),
                    BnStats::Reestimated(n) => ("reestimated", Some(*n)),
                    BnStats::Batch => ("batch", None),
                };
                serde_json::json!({
                    "bn": source, "bn_images": images,
                    "top1": sc.top1, "top5": sc.top5, "loss": sc.loss,
                })
            })
            .collect();
        let out = serde_json::json!({
            "run": e.run, "epoch": e.epoch, "step": e.step, "split": e.split.as_str(),
            "images": e.images, "batch_size": e.batch_size, "rows": rows,
            "bn_offsets": e.bn_offsets.iter()
                .map(|(n, r)| serde_json::json!({"bn": n, "mean_over_sd": r}))
                .collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "run {} ({}) at epoch {} (step {}): tiny model on {} ({} images, batches of {})",
        e.run,
        e.name,
        e.epoch,
        e.step,
        e.split.as_str(),
        e.images,
        e.batch_size
    );
    println!(
        "{:<40} {:>7} {:>7} {:>8}",
        "BN statistics", "top-1", "top-5", "loss"
    );
    for (s, sc) in &e.rows {
        println!(
            "{:<40} {:>6.2}% {:>6.2}% {:>8.4}",
            s.label(),
            sc.top1 * 100.0,
            sc.top5 * 100.0,
            sc.loss
        );
    }
    println!(
        "BN layers whose saved running mean sits farthest from 0 (|mean| / σ, largest channel):"
    );
    for (name, r) in e.bn_offsets.iter().take(5) {
        println!("  {name:<36} {r:>10.1}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `shiftadd grads`: the tiny and the augmented model's gradients on each shared parameter.
pub fn grads(a: &GradsArgs) -> anyhow::Result<ExitCode> {
    if a.batches == 0 {
        bail!("--batches must be at least 1");
    }
    let db = existing_db(&a.db)?;
    let spec = train::ProbeSpec {
        batches: a.batches,
        width_on: !a.no_width,
    };
    let p = train::probe_run(&db, a.run, a.init, &a.sets, spec)?;
    if a.json {
        let rows: Vec<serde_json::Value> = p
            .sources
            .params
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "kind": s.kind.label(), "elems": s.elems, "tiny_elems": s.tiny_elems,
                    "tiny": s.tiny, "aug_shared": s.aug_shared, "aug_only": s.aug_only,
                    "cosine": s.cosine,
                })
            })
            .collect();
        let out = serde_json::json!({
            "run": p.run, "at": p.at, "alpha": p.alpha, "batches": p.spec.batches,
            "width_on": p.spec.width_on, "tiny_loss": p.sources.tiny_loss,
            "aug_loss": p.sources.aug_loss, "params": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let at = match p.at {
        Some((epoch, step)) => format!("its last checkpoint (epoch {epoch}, step {step})"),
        None => "initialisation".to_owned(),
    };
    println!(
        "run {} ({}) at {at}: mean over {} batches of {}, {}; α = {}",
        p.run,
        p.name,
        p.spec.batches,
        p.batch_size,
        if p.spec.width_on {
            "widths and expand factors augmented"
        } else {
            "expand factors augmented, widths not"
        },
        p.alpha
    );
    if !a.sets.is_empty() {
        println!("with {}", a.sets.join(", "));
    }
    println!(
        "losses: tiny {:.4}, augmented {:.4}",
        p.sources.tiny_loss, p.sources.aug_loss
    );
    println!(
        "{:<34} {:>9} {:>11} {:>11} {:>8} {:>7} {:>11}",
        "parameter", "tiny elems", "‖g tiny‖", "‖α g aug‖", "aug/tiny", "cos", "aug only"
    );
    for s in &p.sources.params {
        // A parameter only the augmented model uses (SubNet-only blocks, `aug.bn = "separate"`)
        // has no tiny gradient to compare with: its whole gradient is in the last column.
        let (ratio, cos) = if s.tiny > 0.0 {
            (format!("{:.3}", s.ratio()), format!("{:.3}", s.cosine))
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        println!(
            "{:<34} {:>9} {:>11.3e} {:>11.3e} {ratio:>8} {cos:>7} {:>11.3e}",
            s.name, s.tiny_elems, s.tiny, s.aug_shared, s.aug_only
        );
    }
    for kind in train::ParamKind::ALL {
        let group: Vec<&train::GradSource> = p
            .sources
            .params
            .iter()
            .filter(|s| s.kind == kind && s.tiny > 0.0)
            .collect();
        if group.is_empty() {
            continue;
        }
        let mut ratios: Vec<f64> = group.iter().map(|s| s.ratio()).collect();
        ratios.sort_by(f64::total_cmp);
        let cos = group.iter().map(|s| s.cosine).sum::<f64>() / group.len() as f64;
        println!(
            "{}: aug/tiny median {:.3} (min {:.3}, max {:.3}), mean cos {:.3}, {} parameters",
            kind.label(),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            cos,
            group.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

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
            .rfind(|s| s.identity == spec.identity())
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

/// `shiftadd import`: check every file, then merge each in its own transaction.
pub fn import(a: &ImportArgs) -> anyhow::Result<ExitCode> {
    let db = db_path(&a.db)?;
    for f in &a.files {
        store::import::inspect(f)?;
    }
    for f in &a.files {
        let summary = store::import::import(&db, f)?;
        println!("{}: {summary}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `shiftadd compact`: a results copy of the database, small enough to commit.
pub fn compact(a: &CompactArgs) -> anyhow::Result<ExitCode> {
    let db = existing_db(&a.db)?;
    let summary = store::compact::compact(&db, &a.out, a.steps_per_epoch)?;
    println!("{}: {summary}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

pub fn check(a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let db = existing_db(&a.db)?;
    let report = store::check(&db)?;
    let counted = |n: Option<i64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    if report.problems.is_empty() && !report.damaged.is_empty() {
        let more = if report.damaged.len() >= store::DAMAGE_LIMIT {
            " (the first ones)"
        } else {
            ""
        };
        println!(
            "{}: {} row(s) hold values shiftadd cannot read{more}; they are listed as damaged, the others as usual:",
            db.display(),
            report.damaged.len()
        );
        for d in &report.damaged {
            println!("  {}", shown(&d.to_string(), LINE_CHARS));
        }
        println!(
            "Nothing was changed. Delete a damaged run with `shiftadd runs RUN --delete --db {}`.",
            db.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    if report.problems.is_empty() {
        println!(
            "{}: ok (schema v{}, {} runs, {} metric rows)",
            db.display(),
            report.schema_version,
            counted(report.runs),
            counted(report.metric_rows)
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: damaged ({} problem(s) found by SQLite's integrity_check):",
        db.display(),
        report.problems.len()
    );
    for p in &report.problems {
        println!("  {p}");
    }
    println!(
        "Nothing was changed. SQLite can salvage what is left: `sqlite3 {0} .recover | sqlite3 recovered.db`, \
         then `shiftadd check --db recovered.db` and use `--db recovered.db`.",
        db.display()
    );
    Ok(ExitCode::FAILURE)
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
            Event::Finished {
                run,
                val_top1,
                test_top1,
            } => {
                bar.finish_and_clear();
                eprintln!(
                    "run {run} finished: val top-1 {:.2} %{} (database {})",
                    val_top1 * 100.0,
                    test_top1.map_or(String::new(), |t| format!(
                        ", test top-1 {:.2} %",
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

/// `shiftadd hw`: per config, totals of its three models and (optionally) per-layer tables.
fn hw_report(
    configs: &[PathBuf],
    sets: &[String],
    json: bool,
    per_layer: bool,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for path in configs {
        let cfg = Config::load(path, sets)?;
        let (c, res, classes) = cfg.data.dataset.input_shape();
        all.push((path, cfg.clone(), hw::config_costs(&cfg, c, res, classes)));
    }
    if json {
        let out: Vec<_> = all
            .iter()
            .map(|(p, cfg, costs)| {
                serde_json::json!({"config": p.display().to_string(), "hw": cfg.hw, "models": costs})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (path, cfg, costs) in &all {
        let how = match cfg.hw.model {
            HwModel::Shiftaddnas => "its own tiling search".to_owned(),
            HwModel::Project => format!(
                "{} convention, {} tilings",
                serde_json::to_value(cfg.hw.convention)?
                    .as_str()
                    .unwrap_or("?"),
                serde_json::to_value(cfg.hw.mode)?.as_str().unwrap_or("?")
            ),
        };
        println!(
            "{}  ({} × {}; {} (hw.model = {}), {}-bit, {how}; energy in mJ per image)",
            path.display(),
            cfg.data.dataset.as_str(),
            cfg.model.label(),
            cfg.hw.model.title(),
            cfg.hw.model.as_str(),
            cfg.hw.bits,
        );
        println!(
            "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "model",
            "MMACs",
            "mult",
            "shift",
            "add",
            "params",
            "compute",
            "other",
            "memory",
            "latency"
        );
        for m in costs {
            let mm = |v: i64| format!("{:.2}", v as f64 / 1e6);
            println!(
                "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.4} {:>9.4} {:>9.4} {:>7.3}ms",
                m.label,
                mm(m.macs_mult + m.macs_shift + m.macs_add),
                mm(m.macs_mult),
                mm(m.macs_shift),
                mm(m.macs_add),
                m.params,
                m.compute_mj,
                m.other_mj,
                m.memory_mj,
                m.latency_ms
            );
        }
        if let [tiny, all_mult, ..] = costs.as_slice()
            && tiny.macs_mult < all_mult.macs_mult
        {
            let saving = 1.0 - tiny.energy_mj / all_mult.energy_mj;
            let (pct, way) = if saving >= 0.0 {
                (saving, "less")
            } else {
                (-saving, "more")
            };
            println!(
                "  MF saving: the tiny model costs {:.1} % {way} energy than the same architecture all-Mult",
                100.0 * pct
            );
        }
        if per_layer {
            for m in costs {
                print_layers(m);
            }
        }
        println!();
    }
    if all.len() > 1 {
        println!(
            "summary: tiny model compute energy, lowest first (mJ per image, each config's hw.model)"
        );
        let mut rows: Vec<_> = all.iter().map(|(p, _, c)| (p, &c[0])).collect();
        rows.sort_by(|a, b| a.1.compute_mj.total_cmp(&b.1.compute_mj));
        for (p, m) in rows {
            println!(
                "  {:<52} {:<14} compute {:.4}  memory {:.4}  total {:.4}",
                p.display(),
                m.label,
                m.compute_mj,
                m.memory_mj,
                m.energy_mj
            );
        }
    }
    Ok(())
}

/// One model's per-layer table (µJ).
fn print_layers(m: &hw::ModelCost) {
    println!("\n  {} — per layer (µJ):", m.label);
    println!(
        "  {:<20} {:<6} {:<5} {:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "layer", "kind", "op", "shape", "MACs", "compute", "DRAM", "GB", "NoC", "RF", "cycles"
    );
    for l in &m.layers {
        let uj = |pj: f64| format!("{:.2}", pj * 1e-6);
        println!(
            "  {:<20} {:<6} {:<5} {:>14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.0}",
            l.name,
            l.kind,
            l.op,
            format!("{}→{} k{} s{}", l.c_in, l.c_out, l.kernel, l.stride),
            l.macs,
            uj(l.compute_pj),
            uj(l.memory.dram),
            uj(l.memory.gb),
            uj(l.memory.noc),
            uj(l.memory.rf),
            l.cycles
        );
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}", v * 100.0))
}

fn list_runs(reader: &Reader, json: bool, all: bool) -> anyhow::Result<()> {
    let mut runs = reader.runs()?;
    let archived = runs.iter().filter(|r| r.archived).count();
    if !all {
        runs.retain(|r| !r.archived);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    if runs.is_empty() {
        match archived {
            0 => println!("no runs yet"),
            n => println!("no runs to list ({n} archived: --all lists them)"),
        }
        return Ok(());
    }
    // The name column fits the longest name (a study's cell names run to 30 characters and
    // more), shown safe and at most `NAME_CHARS` wide.
    let names: Vec<String> = runs.iter().map(|r| shown(&r.name, NAME_CHARS)).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    println!(
        "{:>4}  {:<w$} {:<12} {:<14} {:<10} {:<5} {:>6} {:>9} {:>9} {:>8}",
        "id",
        "name",
        "status",
        "dataset",
        "model",
        "op",
        "epochs",
        "val-last%",
        "val-best%",
        "test%"
    );
    for (r, name) in runs.iter().zip(&names) {
        println!(
            "{:>4}  {:<w$} {:<12} {:<14} {:<10} {:<5} {:>6} {:>9} {:>9} {:>8}{}",
            r.id,
            name,
            r.status,
            r.dataset,
            r.model,
            r.operator,
            r.epochs_done.map_or_else(|| "-".into(), |e| e.to_string()),
            pct(r.last_val_top1),
            pct(r.best_val_top1),
            pct(r.test_top1),
            r.reason
                .as_ref()
                .map(|x| format!("  ({})", shown(x, LINE_CHARS)))
                .unwrap_or_default()
        );
    }
    if archived > 0 && !all {
        println!("({archived} archived run(s) not shown: --all lists them)");
    }
    Ok(())
}

/// Export the tiny MF model, then evaluate it from the written files alone.
fn export_model(db: &Path, run: RunId, dir: &Path, force: bool) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link: not written through (nothing was written; name the folder itself)",
            dir.display()
        );
    }
    for f in ["model.safetensors", "model.json"] {
        check_destination(&dir.join(f), force)?;
    }
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

fn export_csv(reader: &Reader, run: RunId, path: &Path, force: bool) -> anyhow::Result<usize> {
    reader.run(run)?; // a clear error for an unknown run
    let rows = reader.metrics(run)?;
    let mut out = std::io::BufWriter::new(create_destination(path, force)?);
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
