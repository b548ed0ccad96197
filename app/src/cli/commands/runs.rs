//! Commands on the store: `runs` (list, show, edit, delete), `export`, `import`, `compact`,
//! `check`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shiftadd_core::store::manage::{self, RunEdit};
use shiftadd_core::store::{self, Reader, RunId};
use shiftadd_core::{Config, deploy, export, host};

use super::{check_destination, create_destination, pct, sweep};
use crate::cli::args::{CheckArgs, CompactArgs, ExportArgs, ImportArgs, RunsArgs};
use crate::cli::text::{LINE_CHARS, NAME_CHARS, shown};
use crate::cli::{db_path, existing_db};

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
    if csv.is_none() && model.is_none() && a.int.is_none() && a.masks.is_none() {
        bail!("nothing to export: pass --csv FILE, --model DIR, --int DIR and/or --masks FILE.png");
    }
    if let Some(csv) = csv {
        let n = export_csv(&Reader::open(&db)?, run, csv, a.force)?;
        println!("wrote {n} metric rows of run {run} to {}", csv.display());
    }
    if let Some(dir) = model {
        export_model(&db, run, dir, a.force)?;
    }
    if let Some(dir) = &a.int {
        export_int(&db, run, dir, a)?;
    }
    if let Some(png) = &a.masks {
        check_destination(png, a.force)?;
        let n = a.mask_images as usize;
        let panels = std::iter::once(run)
            .chain(a.beside.iter().copied())
            .map(|r| export::predict_masks(&db, r, n))
            .collect::<Result<Vec<_>, _>>()?;
        export::write_png(&panels.iter().collect::<Vec<_>>(), 4, png)?;
        let epochs: Vec<String> = panels
            .iter()
            .map(|p| format!("run {} at epoch {}", p.run, p.epoch))
            .collect();
        println!(
            "wrote {} validation images with their masks, true and predicted ({}), to {}",
            panels[0].len(),
            epochs.join(", "),
            png.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `export --int DIR`: the integer program, its C, and how it compares with the float model.
fn export_int(db: &Path, run: RunId, dir: &Path, a: &ExportArgs) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link: not written through (nothing was written; name the folder itself)",
            dir.display()
        );
    }
    let files = [
        "model.safetensors",
        "model.json",
        deploy::INT_FILE,
        deploy::REPORT_FILE,
    ];
    for f in files.iter().chain(&deploy::c::FILES) {
        check_destination(&dir.join(f), a.force)?;
    }
    let opts = deploy::IntOptions {
        act_bits: a.act_bits,
        bn_shifts: a.bn_shifts,
        ..deploy::IntOptions::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (model, report) = deploy::export_int(db, run, dir, opts, a.images, threads, &|_, _| {})?;
    deploy::c::write(&model, dir)?;
    print!("{}", deploy::report_text(&report));
    println!(
        "wrote {}, {} and C ({}) to {}",
        deploy::INT_FILE,
        deploy::REPORT_FILE,
        deploy::c::FILES.join(", "),
        dir.display()
    );
    Ok(())
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
