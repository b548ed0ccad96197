//! The command line's definitions (clap): what each subcommand takes. Dispatch is in
//! [`super`], the subcommands themselves in [`super::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shiftadd_core::store::RunId;

#[derive(Parser, Debug)]
#[command(
    name = "shiftadd",
    version,
    about = "ShiftAdd Studio: train multiplication-free tiny networks with ShiftAddAug"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DbArg {
    /// Database file (default: $SHIFTADD_DB, else the platform data directory's shiftadd/studio.db).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Open the app (the default when no command is given).
    Gui(GuiArgs),
    /// Train a run headless, with a progress bar; prints the run id.
    Train(TrainArgs),
    /// Two-stage hardware-aware NAS: a multiplicative SubNet, then the MF TargetNet inside it.
    /// A rerun with the same config resumes the search (stored candidates are not retrained).
    Nas(NasArgs),
    /// Continue an interrupted or stopped run from its last checkpoint.
    Resume(ResumeArgs),
    /// List runs with status and headline metrics.
    Runs(RunsArgs),
    /// Hardware cost (energy, latency) of the configured tiny model, the same architecture
    /// all-Mult, and the largest augmented model.
    Hw(HwArgs),
    /// Export a run's metrics as CSV.
    Export(ExportArgs),
    /// Where a ShiftAddAug run's update of the shared weights comes from: per parameter, the
    /// tiny model's gradient beside α × the augmented model's (norms, ratio, cosine), over a few
    /// training batches at the run's last checkpoint (or --init). Nothing is written.
    Grads(GradsArgs),
    /// Evaluate a run's tiny model again from a checkpoint, with the BN statistics saved in it,
    /// re-estimated on more or fewer training images, and each batch's own: tells a model let
    /// down by its BN estimate from one whose weights are poor. Nothing is written.
    Eval(EvalArgs),
    /// Train a study (variants × seeds, `parallel` at a time) and print its table with 95 %
    /// intervals; a rerun trains only what is missing. With --report: the table only, from the
    /// database.
    Study(StudyArgs),
    /// Merge other shiftadd databases (a cluster job's, a colleague's) into this one: runs with
    /// everything recorded for them, NAS candidates and studies. Importing a file again changes
    /// nothing; a newer snapshot of a run replaces its rows.
    Import(ImportArgs),
    /// Write a compact results database: the settled runs with their studies, scalar metrics
    /// (per-step series thinned), first and last histograms; no checkpoints, no runs in flight.
    /// A name ending in .gz is written compressed; `shiftadd import` reads either.
    Compact(CompactArgs),
    /// Check the Add convolution's implementations on a device against the float64 formulas,
    /// then time forward + both gradients on a model's Add layer shapes beside the
    /// multiplicative conv of each shape (on CUDA: the NVRTC-compiled kernels against ATen's
    /// formulation). Exit 1 when an implementation is inaccurate.
    AddBench(AddBenchArgs),
    /// Check a database for damage (SQLite's integrity_check; nothing is changed). Exit 0 when
    /// it is sound, 1 with the damage listed and how to salvage the rest.
    Check(CheckArgs),
    /// Train one cell of a study submitted with `--executor slurm` (run by its job script).
    #[command(hide = true)]
    StudyTask(StudyTaskArgs),
}

// `shiftadd add-bench`.
#[derive(clap::Args, Debug)]
pub struct AddBenchArgs {
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto", value_parser = ["cpu", "cuda", "auto"])]
    pub device: String,
    /// The model whose Add layer shapes are timed.
    #[arg(long, default_value = "mbv2-tiny")]
    pub model: String,
    #[arg(long, default_value_t = 128)]
    pub batch: i64,
    /// Input resolution (pixels).
    #[arg(long, default_value_t = 32)]
    pub resolution: i64,
    /// Timed repetitions per shape (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Torch intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

// `shiftadd import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Databases to merge (each is only read; gzip-compressed ones too, e.g. a results database).
    #[arg(required = true, value_name = "OTHER.db")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

// `shiftadd compact`.
#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// The results database to write (replaced whole; e.g. experiments/results/paper.db.gz).
    #[arg(value_name = "OUT.db[.gz]")]
    pub out: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Per-step points kept per run, metric and epoch (at least 2: its first and last step).
    #[arg(long, default_value_t = shiftadd_core::store::compact::STEPS_PER_EPOCH)]
    pub steps_per_epoch: usize,
}

// `shiftadd check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub db: DbArg,
}

// `shiftadd study`.
#[derive(clap::Args, Debug)]
pub struct StudyArgs {
    /// Study file (TOML; see experiments/studies/).
    pub file: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Cells trained at once (overrides the file's `parallel`).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Override a key of the base config, e.g. --set train.epochs=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print the table from the database without training: md, csv or tex.
    #[arg(long, value_parser = ["md", "csv", "tex"])]
    pub report: Option<String>,
    /// Write the table to this file instead of standard output (a new file; see --force).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With --out: replace the file if it exists (never through a symbolic link).
    #[arg(long, requires = "out")]
    pub force: bool,
    /// With --report: pair the variants against this one instead of the file's `baseline`
    /// (those with a `vs` of their own keep it), e.g. every remap against direct training.
    #[arg(long, value_name = "VARIANT", requires = "report")]
    pub baseline: Option<String>,
    /// With --report: tabulate this metric (each cell's last recorded value) instead of the
    /// file's `metric`, e.g. `weights/add_std`, `val/bn_offset`, `train/epoch_loss`.
    #[arg(long, value_name = "METRIC", requires = "report")]
    pub metric: Option<String>,
    /// With --report: instead of the table, the augmented variants' training loss beside their
    /// tiny models', per epoch (mean over seeds, gap paired per seed): does the augmented model
    /// fit better, as NetAug relies on? md or csv.
    #[arg(long, requires = "report", conflicts_with_all = ["metric", "baseline"])]
    pub fit: bool,
    /// With --report: also write the study's two figures into this folder as SVG — the
    /// --curves metric by variant (mean ± std over seeds) and the reported metric by variant
    /// (seeds, mean ± 95 % CI, baseline dashed) — as the Studies view draws them.
    #[arg(long, value_name = "DIR", requires = "report")]
    pub figures: Option<PathBuf>,
    /// The metric whose curves --figures draws.
    #[arg(
        long,
        value_name = "METRIC",
        default_value = "val/top1",
        requires = "figures"
    )]
    pub curves: String,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Where trainings run (`shiftadd study`, `shiftadd nas`).
#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// `local` (this machine's threads) or `slurm` (one job array per study, or per NAS
    /// generation; each task trains one run and ships its database to --shared, imported here
    /// as it goes).
    #[arg(long, value_parser = ["local", "slurm"], default_value = "local")]
    pub executor: String,
    /// More sbatch arguments for --executor slurm, split as a shell splits them: separated by
    /// spaces, quotes keep one whole (e.g. "--partition=gpu --time=04:00:00 --comment='two words'").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub slurm_args: Option<String>,
    /// A folder every node sees, for --executor slurm (default: `<db folder>/<db name>-slurm`).
    #[arg(long, value_name = "DIR")]
    pub shared: Option<PathBuf>,
}

// `shiftadd study-task` (what a Slurm job of `--executor slurm` runs).
#[derive(clap::Args, Debug)]
pub struct StudyTaskArgs {
    /// The study's manifest.json in the shared folder.
    pub manifest: PathBuf,
    /// The task (default: $SLURM_ARRAY_TASK_ID).
    pub index: Option<usize>,
}

// `shiftadd gui`.
#[derive(clap::Args, Debug)]
pub struct GuiArgs {
    #[command(flatten)]
    pub db: DbArg,
}

// `shiftadd train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Run configuration (TOML).
    pub config: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Override a config key, e.g. --set train.epochs=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// cpu, cuda or auto (overrides train.device).
    #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
    pub device: Option<String>,
    /// Torch intra-op threads (overrides train.threads; 0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run name (default: the config file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated tags stored with the run.
    #[arg(long, default_value = "")]
    pub tags: String,
}

// `shiftadd nas`.
#[derive(clap::Args, Debug)]
pub struct NasArgs {
    /// Search configuration (TOML; the `[nas]` section and the training recipe).
    pub config: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Override a config key, e.g. --set nas.budget=1.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Then train the best TargetNet with the full recipe (ShiftAddAug), with a progress bar.
    #[arg(long)]
    pub train_best: bool,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

// `shiftadd resume`.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    pub run: RunId,
    #[command(flatten)]
    pub db: DbArg,
}

// `shiftadd runs`.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Runs to show or change (none: list every run).
    #[arg(value_name = "RUN")]
    pub runs: Vec<RunId>,
    #[command(flatten)]
    pub db: DbArg,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// List archived runs too.
    #[arg(long)]
    pub all: bool,
    /// Rename the run (one RUN).
    #[arg(long, value_name = "NAME")]
    pub set_name: Option<String>,
    /// Add a tag (repeatable; comma-separated lists too).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "TAG")]
    pub untags: Vec<String>,
    /// Replace the notes (Markdown, shown in Monitor); `-` reads them from stdin.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Hide the runs from default listings.
    #[arg(long, conflicts_with = "unarchive")]
    pub archive: bool,
    #[arg(long)]
    pub unarchive: bool,
    /// Delete the runs with everything recorded for them and their checkpoint files (asks
    /// first on a terminal; elsewhere needs --yes).
    #[arg(long, conflicts_with_all = ["set_name", "tags", "untags", "note", "archive", "unarchive"])]
    pub delete: bool,
    /// Do not ask before deleting.
    #[arg(long, requires = "delete")]
    pub yes: bool,
}

// `shiftadd hw`.
#[derive(clap::Args, Debug)]
pub struct HwArgs {
    /// Run configurations (TOML); several print one after another, then a summary.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Override a config key, e.g. --set hw.model=project (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Machine-readable output (every model with its per-layer rows).
    #[arg(long)]
    pub json: bool,
    /// Per-layer tables even when several configs are given.
    #[arg(long)]
    pub layers: bool,
}

// `shiftadd grads`.
#[derive(clap::Args, Debug)]
pub struct GradsArgs {
    pub run: RunId,
    #[command(flatten)]
    pub db: DbArg,
    /// Training batches to average over (the run's first batches of epoch 1).
    #[arg(long, default_value_t = 8)]
    pub batches: usize,
    /// At the weights the run's seed starts from instead of its last checkpoint.
    #[arg(long)]
    pub init: bool,
    /// Probe the run's weights under a changed config, e.g. --set aug.add_grad=adder or
    /// --set aug.alpha=0.5 (repeatable; keys that change the model's shape cannot load its
    /// checkpoint).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Sample only expand factors, not widths (the part of training after
    /// `aug.stop_width_frac`); by default widths are augmented too.
    #[arg(long)]
    pub no_width: bool,
    /// Machine-readable output (one object per parameter).
    #[arg(long)]
    pub json: bool,
}

// `shiftadd eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    pub run: RunId,
    #[command(flatten)]
    pub db: DbArg,
    /// The checkpoint at the end of this epoch (1-based; only the kept ones,
    /// `train.keep_checkpoints`); the last one by default.
    #[arg(long)]
    pub epoch: Option<i64>,
    /// The split to evaluate on: `train` is the images the run trained on (less the validation
    /// split), without augmentation; against `test` it tells underfitting from overfitting.
    #[arg(long, value_enum, default_value_t = EvalSplit::Val)]
    pub split: EvalSplit,
    /// Evaluate the split's first N images only (all of them by default).
    #[arg(long, value_name = "N")]
    pub images: Option<usize>,
    /// Re-estimate BN statistics on this many training images, once per value (comma-separated
    /// or repeated).
    #[arg(long, value_delimiter = ',', default_values_t = [2000usize, 20000])]
    pub bn_images: Vec<usize>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalSplit {
    Train,
    Val,
    Test,
}

// `shiftadd export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    pub run: RunId,
    /// Write all scalar metrics to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the trained tiny MF model (safetensors + JSON) to this folder.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Write the tiny model as an integer program (no multiplication in its MF layers) to this
    /// folder, with its C source, and evaluate it against the float model on the test split:
    /// integer vs float top-1, agreement, per-layer error, operation counts, flash and SRAM.
    #[arg(long, value_name = "DIR")]
    pub int: Option<PathBuf>,
    /// Signed bits of the integer program's activations (4–16).
    #[arg(long, default_value_t = 16, requires = "int")]
    pub act_bits: u32,
    /// Round each MF layer's BN multiplier to N signed powers of two: N shifts and N − 1
    /// additions, no multiply left in any MF layer (1: a bare power of two; 0: a multiplier).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "int", value_parser = clap::value_parser!(u32).range(0..=4))]
    pub bn_shifts: u32,
    /// Evaluate the integer program on the first N test images only.
    #[arg(long, value_name = "N", requires = "int")]
    pub images: Option<usize>,
    /// A segmentation run: write a PNG of its first validation images, each with its ground
    /// truth and the last checkpoint's predicted mask (and those of `--beside` runs).
    #[arg(long, value_name = "FILE.png")]
    pub masks: Option<PathBuf>,
    /// With `--masks`: other runs (on the same data) whose predictions go beside this one's.
    #[arg(long, value_name = "RUN", requires = "masks", num_args = 1..)]
    pub beside: Vec<RunId>,
    /// With `--masks`: how many validation images (rows).
    #[arg(long, value_name = "N", default_value_t = 4, requires = "masks", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub mask_images: u32,
    /// Replace files that exist (never through a symbolic link).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
}
