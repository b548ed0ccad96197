//! Deployment without multipliers: the tiny model of an export as an integer program
//! ([`program`]), made from the float program ([`float`], f64, pure Rust) by calibrating each
//! tensor's grid ([`build`]), run by a pure-Rust interpreter ([`interp`]) and counted
//! ([`count`]); [`c`] writes it as C99. `shiftadd export RUN --int DIR` drives it:
//! [`export_int`] writes `int_model.json`, evaluates it against the float program on the test
//! split and reports both, with the counts, in `int_report.json`.

pub mod build;
pub mod c;
pub mod count;
pub mod energy;
pub mod float;
pub mod interp;
pub mod kernel;
pub mod program;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset};
use crate::export::{ExportError, ExportedModel};
use crate::spec::config::Config;
use crate::store::{Reader, RunId};

pub use build::{IntOptions, Source};
pub use count::Costs;
pub use float::FloatNet;
pub use program::IntModel;

pub const INT_FILE: &str = "int_model.json";
pub const REPORT_FILE: &str = "int_report.json";

/// How far the integer program's activations are from the float program's at one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerDiff {
    pub step: usize,
    pub name: String,
    /// The largest |integer value − float value| over the images, in the tensor's units.
    pub max_abs_diff: f64,
    /// The largest |float value| there, for scale.
    pub max_abs: f64,
    /// The step's grid: its resolution is 2^-frac.
    pub frac: i32,
}

/// The integer program against the float one on a split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agreement {
    pub images: usize,
    pub int_top1: f64,
    pub float_top1: f64,
    /// Share of images where both predict the same class.
    pub agreement: f64,
    pub layers: Vec<LayerDiff>,
}

/// What `export --int` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntReport {
    pub run: RunId,
    pub act_bits: u32,
    /// Signed powers of two of the MF layers' requantisation multipliers (0: full multipliers).
    pub bn_shifts: u32,
    /// The float export's own top-1 through libtorch, as `export` evaluates it.
    pub export_top1: f64,
    pub test: Agreement,
    pub costs: Costs,
    /// Per image under each hardware model (empty in reports written before it was priced).
    #[serde(default)]
    pub energy: Vec<energy::IntEnergy>,
}

/// Names of the steps as the report shows them.
fn step_names(model: &IntModel) -> Vec<String> {
    let mut residual = 0;
    model
        .steps
        .iter()
        .map(|s| match s {
            program::IntStep::Conv(c) => c.name.clone(),
            program::IntStep::Save => "save".into(),
            program::IntStep::AddSaved { .. } => {
                residual += 1;
                format!("residual {residual}")
            }
            program::IntStep::Pool { .. } => "pool".into(),
        })
        .collect()
}

/// Run both programs on the first `limit` images of `data` (all of them without one), on
/// `threads` threads; `progress` hears how many images are done, now and then.
pub fn agreement(
    model: &IntModel,
    net: &FloatNet,
    data: &Dataset,
    limit: Option<usize>,
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Agreement {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    let size = data.image_size();
    let names = step_names(model);
    let steps = model.steps.len();
    #[derive(Default)]
    struct Tally {
        int_ok: usize,
        float_ok: usize,
        same: usize,
        diff: Vec<f64>,
        top: Vec<f64>,
    }
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    let mut t = Tally {
                        diff: vec![0.0; steps],
                        top: vec![0.0; steps],
                        ..Tally::default()
                    };
                    for i in start..(start + chunk).min(n) {
                        let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if k.is_multiple_of(500) {
                            progress(k, n);
                        }
                        let image = &data.images[i * size..(i + 1) * size];
                        let label = usize::from(data.labels[i]);
                        let mut ft = Vec::new();
                        let logits = net.forward(&net.normalise(image), Some(&mut ft));
                        let mut it = Vec::new();
                        let ints = model.run(model.input(image), Some(&mut it));
                        let (fp, ip) = (interp::argmax(&logits), interp::argmax(&ints));
                        t.float_ok += usize::from(fp == label);
                        t.int_ok += usize::from(ip == label);
                        t.same += usize::from(fp == ip);
                        for (k, ((f, (q, frac)), d)) in
                            ft.iter().zip(&it).zip(t.diff.iter_mut()).enumerate()
                        {
                            let unit = 2f64.powi(-frac);
                            for (a, b) in f.iter().zip(q) {
                                *d = d.max((a - f64::from(*b) * unit).abs());
                                t.top[k] = t.top[k].max(a.abs());
                            }
                        }
                    }
                    t
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut total = Tally {
        diff: vec![0.0; steps],
        top: vec![0.0; steps],
        ..Tally::default()
    };
    for t in tallies {
        total.int_ok += t.int_ok;
        total.float_ok += t.float_ok;
        total.same += t.same;
        for k in 0..steps.min(t.diff.len()) {
            total.diff[k] = total.diff[k].max(t.diff[k]);
            total.top[k] = total.top[k].max(t.top[k]);
        }
    }
    let share = |k: usize| k as f64 / n.max(1) as f64;
    let fracs: Vec<i32> = model
        .steps
        .iter()
        .scan(model.input_frac, |f, s| {
            *f = match s {
                program::IntStep::Conv(c) => c.out_frac,
                program::IntStep::Save => *f,
                program::IntStep::AddSaved { out_frac, .. }
                | program::IntStep::Pool { out_frac, .. } => *out_frac,
            };
            Some(*f)
        })
        .collect();
    Agreement {
        images: n,
        int_top1: share(total.int_ok),
        float_top1: share(total.float_ok),
        agreement: share(total.same),
        layers: (0..steps)
            .filter(|&k| !matches!(model.steps[k], program::IntStep::Save))
            .map(|k| LayerDiff {
                step: k,
                name: names[k].clone(),
                max_abs_diff: total.diff[k],
                max_abs: total.top[k],
                frac: fracs[k],
            })
            .collect(),
    }
}

/// Write `model` as `int_model.json` in `dir`.
pub fn save(model: &IntModel, dir: &Path) -> Result<PathBuf, ExportError> {
    let path = dir.join(INT_FILE);
    let io = |e: &dyn std::fmt::Display| ExportError::File {
        path: path.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    let text = serde_json::to_string(model).map_err(|e| io(&e))?;
    std::fs::write(&path, text).map_err(|e| io(&e))?;
    Ok(path)
}

/// Read an `int_report.json` (what the app shows of an earlier `export --int`).
pub fn load_report(path: &Path) -> Result<IntReport, ExportError> {
    let bad = |message: String| ExportError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Read and check an `int_model.json`; a file that does not hold together is refused naming
/// the file and what is wrong.
pub fn load(path: &Path) -> Result<IntModel, ExportError> {
    let bad = |message: String| ExportError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let model: IntModel = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    model.validate().map_err(bad)?;
    Ok(model)
}

/// The first `n` training images, normalised: the calibration set.
fn calibration_images(net: &FloatNet, train: &Dataset, n: usize) -> Vec<Vec<f64>> {
    let size = train.image_size();
    (0..n.min(train.len()))
        .map(|i| net.normalise(&train.images[i * size..(i + 1) * size]))
        .collect()
}

/// Export run `run`'s tiny model as an integer program into `dir` (with the float export beside
/// it), evaluate both on the test split (the first `limit` images; `progress` hears how many
/// are done) and write the report.
pub fn export_int(
    db: &Path,
    run: RunId,
    dir: &Path,
    opts: IntOptions,
    limit: Option<usize>,
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(IntModel, IntReport), ExportError> {
    let exported = crate::export::export_run(db, run, dir)?;
    let reader = Reader::open(db)?;
    let cfg = Config::from_toml_str(&reader.config_toml(run)?, &format!("run {run}"), &[])
        .map_err(|e| ExportError::Config {
            run,
            message: e.to_string(),
        })?;
    let float = ExportedModel::load(dir)?;
    // A program the integer one cannot follow is refused before the float one is evaluated.
    let net = FloatNet::from_export(&float)?;
    let export_top1 = float.evaluate(&cfg.data, 256)?;
    let splits = data::load(&cfg.data)?;
    let calibration = calibration_images(&net, &splits.train, 256);
    let source = Source {
        run,
        model: exported.json.model.clone(),
        dataset: exported.json.dataset.clone(),
        operator: exported.json.operator,
    };
    let model =
        build::build(&net, &calibration, source, opts).map_err(|message| ExportError::File {
            path: dir.join("model.safetensors"),
            message,
        })?;
    save(&model, dir)?;
    let test = agreement(&model, &net, &splits.test, limit, threads, progress);
    let costs = count::costs(&model);
    let report = IntReport {
        run,
        act_bits: opts.act_bits,
        bn_shifts: opts.bn_shifts,
        export_top1,
        test,
        energy: energy::energies(&model, &costs, &cfg.hw),
        costs,
    };
    let rp = dir.join(REPORT_FILE);
    let text = serde_json::to_string_pretty(&report).map_err(|e| ExportError::File {
        path: rp.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&rp, text).map_err(|e| ExportError::File {
        path: rp.clone(),
        message: e.to_string(),
    })?;
    Ok((model, report))
}

/// The report as the command line prints it: accuracies, then a row per layer.
pub fn report_text(r: &IntReport) -> String {
    use std::fmt::Write as _;
    let t = &r.test;
    let mut s = String::new();
    let bn = match r.bn_shifts {
        0 => "BN as a per-channel multiply and shift".to_owned(),
        1 => "MF layers' BN scales rounded to powers of two".to_owned(),
        n => format!("MF layers' BN multipliers as {n} shifts"),
    };
    writeln!(
        s,
        "run {} as an integer program ({}-bit activations, {bn}), {} test images:",
        r.run, r.act_bits, t.images
    )
    .ok();
    writeln!(
        s,
        "  top-1: integer {:.2} %, float {:.2} % (Rust f64; the export through libtorch: {:.2} %); the same class on {:.2} % of images",
        t.int_top1 * 100.0,
        t.float_top1 * 100.0,
        r.export_top1 * 100.0,
        t.agreement * 100.0
    )
    .ok();
    writeln!(
        s,
        "  {:<18} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>4} {:>18}",
        "layer", "kind", "shift", "add/sub", "abs", "mul", "cmp", "bits", "|int−float| of max"
    )
    .ok();
    for l in &r.costs.layers {
        let diff = t.layers.iter().find(|d| d.name == l.name).map_or_else(
            || "-".to_owned(),
            |d| format!("{:.4} of {:.1}", d.max_abs_diff, d.max_abs),
        );
        let o = &l.ops;
        writeln!(
            s,
            "  {:<18} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>4} {:>18}",
            l.name, l.kind, o.shift, o.add_sub, o.abs, o.mul, o.cmp, l.acc_bits, diff
        )
        .ok();
    }
    let o = &r.costs.total;
    writeln!(
        s,
        "  {:<18} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "total", "", o.shift, o.add_sub, o.abs, o.mul, o.cmp
    )
    .ok();
    let packed: u64 = r.costs.layers.iter().map(|l| l.packed_weight_bits).sum();
    writeln!(
        s,
        "  multiplications in MF layers: {}{}; flash {:.1} KiB as the generated C stores it (weights packed: {:.1} KiB); peak SRAM {:.1} KiB",
        r.costs.mf_multiplies,
        if r.costs.mf_multiplies > 0 { " (their BN requantisation)" } else { "" },
        r.costs.flash_bytes as f64 / 1024.0,
        packed as f64 / 8.0 / 1024.0,
        r.costs.peak_sram_bytes as f64 / 1024.0
    )
    .ok();
    for e in &r.energy {
        writeln!(
            s,
            "  energy per image, {}: {:.4} mJ (compute {:.4}, {}-bit data movement {:.4}); the float model as the Hardware view prices it: {:.4} mJ (compute {:.4})",
            e.model.title(),
            e.energy_mj,
            e.compute_mj,
            e.word_bits,
            e.memory_mj,
            e.float_energy_mj,
            e.float_compute_mj
        )
        .ok();
    }
    s
}
