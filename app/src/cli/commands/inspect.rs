//! Commands that look inside a run: `hw` (its cost under both models), `eval`, `grads`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::{Config, hw, train};

use crate::cli::args::{AddBenchArgs, EvalArgs, EvalSplit, GradsArgs, HwArgs};
use crate::cli::existing_db;

/// `shiftadd hw`: the hardware cost of each config's models.
pub fn hw(a: &HwArgs) -> anyhow::Result<ExitCode> {
    let (configs, sets, json, layers) = (&a.configs, &a.sets, a.json, a.layers);
    hw_report(configs, sets, json, layers || configs.len() == 1)?;
    Ok(ExitCode::SUCCESS)
}

/// `shiftadd add-bench`: the Add implementations checked and timed on one device.
pub fn add_bench(a: &AddBenchArgs) -> anyhow::Result<ExitCode> {
    use shiftadd_core::ops::adder_bench;
    use shiftadd_core::spec::config::{DeviceChoice, ModelName};
    let choice = match a.device.as_str() {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda,
        _ => DeviceChoice::Auto,
    };
    let device = train::resolve_device(choice)?;
    let model: ModelName = serde_json::from_value(serde_json::Value::String(a.model.clone()))
        .map_err(|_| {
            anyhow::anyhow!(
                "unknown model {:?} (micro, mbv2-tiny, mcunet, proxyless-w0.35, mbv3-w0.35)",
                a.model
            )
        })?;
    let r = adder_bench::report(device, model, a.batch, a.resolution, a.reps, a.threads)?;
    println!(
        "Add implementations on {} (tiled kernels {}): largest error / reference scale",
        r.device,
        if r.tiled { "run" } else { "unavailable" }
    );
    println!(
        "{:<10} {:<5} {:>10} {:>10} {:>10}",
        "impl", "type", "forward", "dX", "dF"
    );
    let mut accurate = true;
    for x in &r.accuracy {
        let tol = if x.kind == "f64" { 1e-9 } else { 1e-4 };
        accurate &= x.forward < tol && x.input_grad < tol && x.weight_grad < tol;
        println!(
            "{:<10} {:<5} {:>10.1e} {:>10.1e} {:>10.1e}",
            x.implementation, x.kind, x.forward, x.input_grad, x.weight_grad
        );
    }
    println!(
        "\n{} Add layer shapes, batch {}, {} px, float32, forward + dX + dF, median of {} (ms):",
        r.model, r.batch, r.resolution, a.reps
    );
    let add_name = r
        .timings
        .first()
        .map_or("add", |t| t.add_implementation.as_str());
    println!(
        "{:<32} {:>9} {:>11} {:>9} {:>10}",
        "shape", "mult", "aten add", "add", "add/mult"
    );
    for t in &r.timings {
        println!(
            "{:<32} {:>9.3} {:>11.3} {:>9.3} {:>9.2}x",
            t.shape,
            t.mult_ms,
            t.reference_ms,
            t.add_ms,
            t.add_ms / t.mult_ms
        );
    }
    let (m, rf, ad) = r.totals();
    println!(
        "{:<32} {m:>9.3} {rf:>11.3} {ad:>9.3} {:>9.2}x",
        "total",
        ad / m
    );
    println!(
        "add = {add_name}; it takes {:.2}x the ATen formulation's time and {:.2}x the Mult conv's",
        ad / rf,
        ad / m
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    if !accurate {
        eprintln!(
            "add-bench: an implementation is inaccurate (float64 over 1e-9 or float32 over 1e-4 of the scale)"
        );
        return Ok(ExitCode::FAILURE);
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
                match &sc.seg {
                    None => serde_json::json!({
                        "bn": source, "bn_images": images,
                        "top1": sc.top1, "top5": sc.top5, "loss": sc.loss,
                    }),
                    Some(seg) => serde_json::json!({
                        "bn": source, "bn_images": images,
                        "miou": seg.miou, "pixel_acc": seg.pixel_accuracy, "loss": sc.loss,
                    }),
                }
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
    // A segmentation run's scores are mIoU and pixel accuracy (it has no top-1 per image).
    let seg = e.rows.first().is_some_and(|(_, sc)| sc.seg.is_some());
    let (a, b) = if seg {
        ("mIoU", "pixels")
    } else {
        ("top-1", "top-5")
    };
    println!("{:<40} {a:>7} {b:>7} {:>8}", "BN statistics", "loss");
    for (s, sc) in &e.rows {
        let (x, y) = sc
            .seg
            .as_ref()
            .map_or((sc.top1, sc.top5), |g| (g.miou, g.pixel_accuracy));
        println!(
            "{:<40} {:>6.2}% {:>6.2}% {:>8.4}",
            s.label(),
            x * 100.0,
            y * 100.0,
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
        let (c, res, classes) = cfg.data.input_shape();
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
        let mem = train::memory::estimate(cfg);
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "  training memory per run (estimate, batch {}): {:.0} MiB = weights, gradients, momentum {:.0} + activations {:.0} + training set on a GPU {:.0} + workspace {:.0}",
            cfg.train.batch_size,
            mib(mem.total()),
            mib(mem.state),
            mib(mem.activations),
            mib(mem.data),
            mib(mem.workspace)
        );
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
