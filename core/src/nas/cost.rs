//! What the search minimises and keeps: a candidate's cost for the budget's quantity, and the
//! Pareto front of (cost, accuracy) points.

use crate::hw::{self, ModelCost};
use crate::spec::arch::OpSpec;
use crate::spec::config::{BudgetKind, Config, HwConfig, OpKind};
use crate::spec::layers;
use crate::spec::space::NasArch;

/// The cost of `arch` with operator `op` for the budget's quantity (analytic hardware mode).
pub fn cost(
    arch: &NasArch,
    op: OpKind,
    cfg: &Config,
    kind: BudgetKind,
    (channels, resolution, classes): (i64, i64, i64),
) -> f64 {
    let spec = arch.to_spec(channels, resolution, classes);
    let widths = spec.base_widths();
    let mut c = cfg.clone();
    c.ops.kind = op;
    let ops = if op == OpKind::Mult {
        OpSpec::mult()
    } else {
        OpSpec::from_config(&c)
    };
    let hw_cfg = HwConfig {
        mode: crate::spec::config::HwMode::Analytic,
        ..cfg.hw.clone()
    };
    let m: ModelCost = hw::model_cost(
        "nas",
        &layers::layers(&spec, &widths, &ops, resolution),
        &hw_cfg,
    );
    match kind {
        BudgetKind::Energy => m.energy_mj,
        BudgetKind::Latency => m.latency_ms,
    }
}

/// Indices of the points on the Pareto front of (cost ↓, accuracy ↑), by ascending cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}
