//! What a run records besides checkpoints: metric rows in batches, the hardware cost under both
//! cost models, and the weight-discrepancy histograms of every MF layer.

use std::collections::HashMap;

use tch::{Kind, TchError};

use crate::data::{self};
use crate::hw;
use crate::model::Net;
use crate::ops::stats::{self, Edges, Histogram, WeightStats};
use crate::spec::config::HwModel;
use crate::store::{HistogramRow, MetricRow, RunId, WriteOp, Writer, keys, now_secs};

use super::TrainError;
use super::context::RunContext;

/// Collects metric rows and ships them to the writer in batches.
pub(super) struct MetricSink<'a> {
    pub(super) run: RunId,
    pub(super) writer: &'a Writer,
    pub(super) rows: Vec<MetricRow>,
}

impl MetricSink<'_> {
    pub(super) fn push(&mut self, key: &str, step: i64, epoch: i64, value: f64) {
        self.push_at(key, step, epoch, value, now_secs());
    }

    /// [`Self::push`] of a value measured at `wall_time` (seconds since the epoch).
    pub(super) fn push_at(&mut self, key: &str, step: i64, epoch: i64, value: f64, wall_time: f64) {
        self.rows.push(MetricRow {
            run: self.run,
            key: key.to_owned(),
            step,
            epoch,
            wall_time,
            value,
        });
    }

    pub(super) fn ship(&mut self) {
        if !self.rows.is_empty() {
            self.writer
                .send_or_log(WriteOp::Metrics(std::mem::take(&mut self.rows)));
        }
    }
}

/// Store the hardware cost of the run's models (per layer, under both cost models) and the tiny
/// model's totals as step-0 metrics: `hw/*` under the run's `hw.model`, `hw/<model>/*` under each
/// (energy in mJ, latency in ms).
pub(super) fn record_hw_cost(ctx: &RunContext<'_>, d: &data::Dataset) -> Result<(), TrainError> {
    let shape = (d.channels as i64, d.height as i64, d.classes as i64);
    let metric = |key: &str, value: f64| MetricRow {
        run: ctx.run,
        key: key.to_owned(),
        step: 0,
        epoch: 0,
        wall_time: now_secs(),
        value,
    };
    let mut metrics = Vec::new();
    for model in HwModel::ALL {
        let mut cfg = ctx.config.clone();
        cfg.hw = hw::under(&cfg.hw, model);
        let costs = hw::config_costs(&cfg, shape.0, shape.1, shape.2);
        ctx.writer
            .send(WriteOp::HwCost(hw::cost_rows(ctx.run, &costs)))?;
        let (tiny, all_mult) = (&costs[0], &costs[1]);
        if model == ctx.config.hw.model {
            metrics.extend([
                metric(keys::HW_ENERGY_MJ, tiny.energy_mj),
                metric(keys::HW_COMPUTE_MJ, tiny.compute_mj),
                metric(keys::HW_MEMORY_MJ, tiny.memory_mj),
                metric(keys::HW_LATENCY_MS, tiny.latency_ms),
                metric(keys::HW_ENERGY_MJ_ALL_MULT, all_mult.energy_mj),
            ]);
        }
        let key = |name: &str| keys::hw_under(model.as_str(), name);
        metrics.extend([
            metric(&key("energy_mj"), tiny.energy_mj),
            metric(&key("latency_ms"), tiny.latency_ms),
            metric(&key("energy_mj_all_mult"), all_mult.energy_mj),
        ]);
    }
    ctx.writer.send(WriteOp::Metrics(metrics))?;
    Ok(())
}

/// Histogram rows of every MF layer's weight views at `epoch`; bin edges are fitted to each
/// snapshot's stored weights (and kept in `edges`, which a checkpoint carries): Add weights grow
/// tens-fold in training, and edges fixed at the first snapshot left most of them out of range.
pub fn weight_snapshot(
    net: &Net,
    run: RunId,
    epoch: i64,
    edges: &mut HashMap<String, Edges>,
) -> Result<Vec<HistogramRow>, TchError> {
    let mut rows = Vec::new();
    for lw in net.mf_weights() {
        let stored = Vec::<f32>::try_from(lw.stored.flatten(0, -1).to_kind(Kind::Float))?;
        let remapped = Vec::<f32>::try_from(lw.remapped.flatten(0, -1).to_kind(Kind::Float))?;
        let e = Edges::around(&stored, HIST_BINS, HIST_WIDTH_SD);
        edges.insert(lw.name.clone(), e.clone());
        let mut views = vec![("stored", stored.clone()), ("remapped", remapped)];
        if let Some(p) = &lw.pow2 {
            views.push((
                "pow2",
                Vec::<f32>::try_from(p.flatten(0, -1).to_kind(Kind::Float))?,
            ));
        }
        for (kind, values) in views {
            let hist = Histogram::of(&values, &e);
            let ws = WeightStats::of(&values, &e, &hist);
            let mut stats = serde_json::to_value(ws).unwrap_or_default();
            if kind != "stored" {
                stats["w1_to_stored"] = serde_json::json!(stats::wasserstein1(&stored, &values));
            }
            stats["op"] = serde_json::json!(lw.role.as_str());
            rows.push(HistogramRow {
                run,
                layer: lw.name.clone(),
                kind: kind.to_owned(),
                epoch,
                edges: e.0.clone(),
                counts: hist.counts,
                underflow: hist.underflow,
                overflow: hist.overflow,
                stats,
            });
        }
    }
    Ok(rows)
}

/// [`keys::WEIGHTS_ADD_STD`](crate::store::keys::WEIGHTS_ADD_STD) of an epoch's
/// [`weight_snapshot`]: the largest std of an Add layer's stored weights (`None` without Add
/// layers).
pub fn largest_add_std(rows: &[HistogramRow]) -> Option<f64> {
    rows.iter()
        .filter(|r| r.kind == "stored" && r.stats["op"] == "add")
        .filter_map(|r| r.stats["std"].as_f64())
        .max_by(f64::total_cmp)
}

/// Bins of the discrepancy histograms.
pub const HIST_BINS: usize = 100;
/// Half-width of the histogram range, in standard deviations of the snapshot's stored weights
/// (wide enough for the remapped and power-of-two views, which share the stored view's bins).
pub const HIST_WIDTH_SD: f64 = 10.0;
