//! Hardware cost model (method.md §7): compute energy by operator kind, and the data movement of
//! an Eyeriss-like accelerator, per layer, for one image (batch 1 inference).
//!
//! # Compute
//! Every MAC of a layer is charged at its operator's unit energy (pJ, 45 nm; 32- or 8-bit row):
//!
//! | bits | mult | add  | shift |
//! |------|------|------|-------|
//! | 32   | 3.7  | 0.9  | 0.13  |
//! | 8    | 0.2  | 0.03 | 0.024 |
//!
//! `paper` convention: one op of the layer's kind per MAC. `full`: Mult MAC = mult + add, Shift MAC
//! = shift + add, Add MAC = 2 adds. Besides the MACs, every conv output element costs one BN
//! (one mult + one add: BN folds into a per-channel affine), ReLU6 two comparisons (charged as adds;
//! ReLU one; h-swish an add, two compares and two mults, h-sigmoid one mult fewer), a residual one
//! add, and an SE gate one mult per gated activation; these are reported as `other` so the
//! operator comparison stays visible.
//!
use serde::{Deserialize, Serialize};

/// The clock of both models' accelerator.
pub const CLOCK_HZ: f64 = 250e6;

pub mod project;
pub mod shiftaddnas;

use crate::spec::arch::{ArchSpec, OpSpec, Widths};
use crate::spec::config::{Config, Convention, HwConfig, HwModel, OpKind};
use crate::spec::layers::{self, Layer};
use crate::store::{HwCostRow, RunId};

/// Unit compute energy (pJ) of one `op` at `bits` (32 or 8).
pub fn unit_energy(op: OpKind, bits: i64) -> f64 {
    match (bits <= 8, op) {
        (false, OpKind::Mult) => 3.7,
        (false, OpKind::Add) => 0.9,
        (false, OpKind::Shift) => 0.13,
        (true, OpKind::Mult) => 0.2,
        (true, OpKind::Add) => 0.03,
        (true, OpKind::Shift) => 0.024,
    }
}

/// Compute energy (pJ) of `macs` MACs of kind `op`.
pub fn mac_energy(op: OpKind, macs: i64, bits: i64, convention: Convention) -> f64 {
    let per = match convention {
        Convention::Paper => unit_energy(op, bits),
        Convention::Full => match op {
            OpKind::Add => 2.0 * unit_energy(OpKind::Add, bits),
            _ => unit_energy(op, bits) + unit_energy(OpKind::Add, bits),
        },
    };
    per * macs as f64
}

/// Energy (pJ) by memory level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemEnergy {
    pub dram: f64,
    pub gb: f64,
    pub noc: f64,
    pub rf: f64,
}

impl MemEnergy {
    pub fn total(&self) -> f64 {
        self.dram + self.gb + self.noc + self.rf
    }

    fn add(&mut self, o: &Self) {
        self.dram += o.dram;
        self.gb += o.gb;
        self.noc += o.noc;
        self.rf += o.rf;
    }
}

/// Everything the cost model says about one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    pub kind: String,
    pub op: String,
    pub c_in: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
    pub h_out: i64,
    pub macs: i64,
    pub params: i64,
    pub in_activations: i64,
    pub out_activations: i64,
    /// BN, ReLU6 and residual-add operations (not MACs).
    pub other_ops: i64,
    /// Compute energy of the MACs (pJ).
    pub compute_pj: f64,
    /// Compute energy of the BN / activation / residual ops (pJ).
    pub other_pj: f64,
    pub memory: MemEnergy,
    pub tiling: LayerTiling,
    /// Cycles at 250 MHz (the simulator's Shift layers: its shortened cycles, counted as cycles).
    pub cycles: f64,
}

/// The tiling a model chose for a layer (untagged: rows stored before the simulator existed hold
/// the project's tiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerTiling {
    Project(project::Tiling),
    Shiftaddnas(shiftaddnas::SimTiling),
}

impl LayerCost {
    pub fn energy_pj(&self) -> f64 {
        self.compute_pj + self.other_pj + self.memory.total()
    }
}

/// One model's cost: per-layer rows and totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    pub label: String,
    /// The cost model that priced it.
    pub model: HwModel,
    pub layers: Vec<LayerCost>,
    pub macs_mult: i64,
    pub macs_shift: i64,
    pub macs_add: i64,
    pub params: i64,
    pub compute_mj: f64,
    pub other_mj: f64,
    pub memory: MemEnergy,
    pub memory_mj: f64,
    pub energy_mj: f64,
    pub latency_ms: f64,
}

/// Cost of a list of layers (one model), under `hw.model`.
pub fn model_cost(label: &str, list: &[Layer], hw: &HwConfig) -> ModelCost {
    let layers: Vec<LayerCost> = list.iter().map(|l| layer_cost(l, hw)).collect();
    let mut macs = [0i64; 3];
    let mut memory = MemEnergy::default();
    for (l, c) in list.iter().zip(&layers) {
        macs[l.op as usize] += c.macs;
        memory.add(&c.memory);
    }
    let pj_to_mj = 1e-9;
    let compute_mj = layers.iter().map(|l| l.compute_pj).sum::<f64>() * pj_to_mj;
    let other_mj = layers.iter().map(|l| l.other_pj).sum::<f64>() * pj_to_mj;
    let memory_mj = memory.total() * pj_to_mj;
    let cycles: f64 = layers.iter().map(|l| l.cycles).sum();
    ModelCost {
        label: label.to_owned(),
        model: hw.model,
        params: layers.iter().map(|l| l.params).sum(),
        layers,
        macs_mult: macs[OpKind::Mult as usize],
        macs_shift: macs[OpKind::Shift as usize],
        macs_add: macs[OpKind::Add as usize],
        compute_mj,
        other_mj,
        memory,
        memory_mj,
        energy_mj: compute_mj + other_mj + memory_mj,
        latency_ms: cycles / CLOCK_HZ * 1e3,
    }
}

/// One layer's cost under `hw.model`.
pub fn layer_cost(l: &Layer, hw: &HwConfig) -> LayerCost {
    let out = l.out_activations();
    let (bn, res) = (i64::from(l.bn) * out, i64::from(l.residual_add) * out);
    // The activation's multiplications and additions, and the gate's multiplications (SE).
    let (act_mul, act_add) = l.act.ops();
    let (mul, add) = (
        act_mul * out + l.gated + 4 * l.upsampled,
        act_add * out + res + 3 * l.upsampled,
    );
    let mut cost = LayerCost {
        name: l.name.clone(),
        kind: l.kind.as_str().to_owned(),
        op: l.op.as_str().to_owned(),
        c_in: l.c_in,
        c_out: l.c_out,
        kernel: l.kernel,
        stride: l.stride,
        groups: l.groups,
        h_out: l.h_out,
        macs: l.macs(),
        params: l.params(),
        in_activations: l.in_activations(),
        out_activations: out,
        other_ops: 2 * bn + mul + add,
        compute_pj: 0.0,
        other_pj: 0.0,
        memory: MemEnergy::default(),
        tiling: LayerTiling::Project(project::Tiling::default()),
        cycles: 0.0,
    };
    match hw.model {
        HwModel::Project => {
            let mv = project::movement(l, hw.bits, hw.mode);
            cost.compute_pj = mac_energy(l.op, l.macs(), hw.bits, hw.convention);
            cost.other_pj = (bn + mul) as f64 * unit_energy(OpKind::Mult, hw.bits)
                + (bn + add) as f64 * unit_energy(OpKind::Add, hw.bits);
            cost.memory = mv.energy;
            cost.tiling = LayerTiling::Project(mv.tiling);
            cost.cycles = mv.cycles;
        }
        HwModel::Shiftaddnas => {
            // The simulator works in mJ and seconds; it does not charge BN / activations.
            let sim = shiftaddnas::simulate(&shiftaddnas::SimLayer::of(l), hw.bits);
            let b = &sim.breakdown;
            let mj_to_pj = 1e9;
            cost.compute_pj = b.compute * mj_to_pj;
            cost.memory = MemEnergy {
                dram: (b.dram + b.dram_gb) * mj_to_pj,
                gb: b.gb * mj_to_pj,
                noc: b.noc * mj_to_pj,
                rf: b.rf * mj_to_pj,
            };
            cost.tiling = LayerTiling::Shiftaddnas(sim.tiling);
            cost.cycles = sim.latency_s * CLOCK_HZ;
        }
    }
    cost
}

/// `hw` with its cost model set to `model` (the simulator counts one op per MAC, so a `full`
/// convention falls back to `paper` there).
pub fn under(hw: &HwConfig, model: HwModel) -> HwConfig {
    let convention = match model {
        HwModel::Shiftaddnas => Convention::Paper,
        HwModel::Project => hw.convention,
    };
    HwConfig {
        model,
        convention,
        ..hw.clone()
    }
}

/// The three models `shiftadd hw` reports for a config: the tiny MF model, the same architecture
/// all-Mult, and the largest augmented model (multiplicative, as ShiftAddAug trains it).
pub fn config_costs(cfg: &Config, channels: i64, resolution: i64, classes: i64) -> Vec<ModelCost> {
    let spec = ArchSpec::from_config(cfg, channels, resolution, classes);
    let tiny = spec.base_widths();
    let ops = OpSpec::from_config(cfg);
    let mut out = vec![
        model_cost(
            &format!("tiny ({})", cfg.ops.kind.as_str()),
            &layers::layers(&spec, &tiny, &ops, resolution),
            &cfg.hw,
        ),
        model_cost(
            "tiny (all mult)",
            &layers::layers(&spec, &tiny, &OpSpec::mult(), resolution),
            &cfg.hw,
        ),
    ];
    let mut aug = cfg.aug.clone();
    aug.hybrid = crate::spec::config::Hybrid::Mult;
    let max: Widths = spec.max_widths(&aug);
    out.push(model_cost(
        "largest augmented (mult)",
        &layers::layers(&spec, &max, &OpSpec::mult(), resolution),
        &cfg.hw,
    ));
    out
}

/// What training records of a config's hardware cost, priced again from the config alone (the
/// dataset's input shape as `shiftadd hw` takes it): the rows of [`config_costs`] under each cost
/// model, for run `run`. For runs whose records a database does not hold (a compacted results
/// database leaves them out).
pub fn priced_rows(run: RunId, cfg: &Config) -> Vec<HwCostRow> {
    let (channels, resolution, classes) = cfg.data.input_shape();
    HwModel::ALL
        .into_iter()
        .flat_map(|model| {
            let mut c = cfg.clone();
            c.hw = under(&c.hw, model);
            cost_rows(run, &config_costs(&c, channels, resolution, classes))
        })
        .collect()
}

/// The store rows of a config's costed models, as [`config_costs`] returns them (`tiny`,
/// `tiny-mult`, `augmented`; repeated per cost model), for run `run`.
pub fn cost_rows(run: RunId, costs: &[ModelCost]) -> Vec<HwCostRow> {
    let mut rows = Vec::new();
    let names = ["tiny", "tiny-mult", "augmented"];
    for (cost, model) in costs.iter().zip(names.iter().cycle()) {
        for (i, l) in cost.layers.iter().enumerate() {
            rows.push(HwCostRow {
                run,
                hw_model: cost.model.as_str().to_owned(),
                model: (*model).to_owned(),
                layer_index: i as i64,
                layer: l.name.clone(),
                detail: serde_json::to_value(l).unwrap_or_default(),
            });
        }
    }
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::config::ModelName;
    use crate::spec::layers::LayerKind;

    pub(crate) fn layer(
        kind: LayerKind,
        c_in: i64,
        c_out: i64,
        k: i64,
        s: i64,
        size: i64,
        op: OpKind,
    ) -> Layer {
        let h_out = (size + 2 * (k / 2) - k) / s + 1;
        Layer {
            name: "l".into(),
            kind,
            op,
            c_in,
            c_out,
            kernel: k,
            stride: s,
            groups: if kind == LayerKind::Depthwise {
                c_in
            } else {
                1
            },
            h_in: size,
            w_in: size,
            h_out,
            w_out: h_out,
            bn: kind != LayerKind::Linear,
            act: crate::spec::arch::Act::Relu6,
            residual_add: false,
            gated: 0,
            upsampled: 0,
        }
    }

    #[test]
    fn op_counts_match_hand_computation() {
        // 3×3 conv 3→16 on 32×32, stride 1: 16·32·32·3·9 MACs.
        let c = layer(LayerKind::Conv, 3, 16, 3, 1, 32, OpKind::Mult);
        assert_eq!(c.macs(), 16 * 32 * 32 * 27);
        assert_eq!(c.params(), 16 * 27);
        // depthwise 3×3, 48 channels, 16×16 → 8×8 (stride 2): 48·8·8·9.
        let d = layer(LayerKind::Depthwise, 48, 48, 3, 2, 16, OpKind::Add);
        assert_eq!(
            (d.macs(), d.params(), d.out_activations()),
            (48 * 64 * 9, 48 * 9, 48 * 64)
        );
        // pointwise 48→16 on 8×8: 16·64·48.
        let p = layer(LayerKind::Pointwise, 48, 16, 1, 1, 8, OpKind::Shift);
        assert_eq!(p.macs(), 16 * 64 * 48);
        // linear 448→10.
        let f = layer(LayerKind::Linear, 448, 10, 1, 1, 1, OpKind::Mult);
        assert_eq!((f.macs(), f.params()), (4480, 4480));
    }

    #[test]
    fn energy_totals_match_the_table() {
        let hw = HwConfig {
            model: HwModel::Project,
            ..HwConfig::default()
        };
        let p = layer(LayerKind::Pointwise, 48, 16, 1, 1, 8, OpKind::Shift);
        let macs = (16 * 64 * 48) as f64;
        assert!(
            (mac_energy(OpKind::Shift, p.macs(), 32, Convention::Paper) - macs * 0.13).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Shift, p.macs(), 32, Convention::Full) - macs * 1.03).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Add, p.macs(), 8, Convention::Full) - macs * 0.06).abs() < 1e-6
        );
        assert!(
            (mac_energy(OpKind::Mult, p.macs(), 8, Convention::Paper) - macs * 0.2).abs() < 1e-6
        );
        let cost = model_cost("x", std::slice::from_ref(&p), &hw);
        let out = (16 * 64) as f64;
        let other = out * (3.7 + 0.9) + 2.0 * out * 0.9; // BN + ReLU6
        let l = &cost.layers[0];
        assert!((l.compute_pj - macs * 0.13).abs() < 1e-6);
        assert!(
            (l.other_pj - other).abs() < 1e-6,
            "{} vs {other}",
            l.other_pj
        );
        let total_pj = macs * 0.13 + other + l.memory.total();
        assert!((cost.energy_mj - total_pj * 1e-9).abs() < 1e-15);
        assert_eq!(
            (cost.macs_shift, cost.macs_mult, cost.macs_add),
            (p.macs(), 0, 0)
        );
    }

    #[test]
    fn shift_below_add_below_mult_in_the_paper_convention() {
        let spec = ArchSpec::named(ModelName::Mbv2Tiny, 1, 32, 10);
        let w = spec.base_widths();
        let hw = HwConfig {
            model: HwModel::Project,
            ..HwConfig::default()
        };
        let cost = |kind| {
            let ops = OpSpec {
                kind,
                ..OpSpec::mult()
            };
            model_cost("m", &layers::layers(&spec, &w, &ops, 32), &hw)
        };
        let (s, a, m) = (cost(OpKind::Shift), cost(OpKind::Add), cost(OpKind::Mult));
        assert!(s.compute_mj < a.compute_mj && a.compute_mj < m.compute_mj);
        // The data movement does not depend on the operator.
        assert!((s.memory_mj - m.memory_mj).abs() < 1e-12);
        assert_eq!(s.macs_shift + s.macs_mult, m.macs_mult);
    }

    fn mbv2_tiny(kind: OpKind, hw: &HwConfig) -> ModelCost {
        let spec = ArchSpec::named(ModelName::Mbv2Tiny, 1, 32, 10);
        let w = spec.base_widths();
        let ops = OpSpec {
            kind,
            ..OpSpec::mult()
        };
        model_cost("m", &layers::layers(&spec, &w, &ops, 32), hw)
    }

    #[test]
    fn under_the_simulator_mf_networks_save_what_the_paper_reports() {
        let sim = HwConfig::default();
        assert_eq!(sim.model, HwModel::Shiftaddnas);
        let (s, a, m) = (
            mbv2_tiny(OpKind::Shift, &sim),
            mbv2_tiny(OpKind::Add, &sim),
            mbv2_tiny(OpKind::Mult, &sim),
        );
        assert!(s.energy_mj <= a.energy_mj && a.energy_mj < m.energy_mj);
        // The paper: "68.9 % less energy than multiplicative networks".
        for mf in [&s, &a] {
            let saving = 1.0 - mf.energy_mj / m.energy_mj;
            assert!(
                (0.6..0.8).contains(&saving),
                "{}: saving {saving}",
                mf.label
            );
            assert_eq!(
                mf.other_mj, 0.0,
                "the simulator does not charge BN / activations"
            );
        }
        // The project's model moves the same data for every operator: it saves little.
        let project = under(&sim, HwModel::Project);
        let (sp, mp) = (
            mbv2_tiny(OpKind::Shift, &project),
            mbv2_tiny(OpKind::Mult, &project),
        );
        assert!(1.0 - sp.energy_mj / mp.energy_mj < 0.2);
        assert_eq!(
            (s.model, sp.model),
            (HwModel::Shiftaddnas, HwModel::Project)
        );
        // Latency is reported in ms: cycles / 250 MHz × 1000.
        let cycles: f64 = m.layers.iter().map(|l| l.cycles).sum();
        assert!((m.latency_ms - cycles / 250e3).abs() < 1e-12);
    }

    #[test]
    fn layer_costs_of_either_model_round_trip_through_json() {
        let l = layer(LayerKind::Conv, 16, 32, 3, 1, 32, OpKind::Shift);
        for model in HwModel::ALL {
            let hw = under(&HwConfig::default(), model);
            let cost = layer_cost(&l, &hw);
            let back: LayerCost =
                serde_json::from_value(serde_json::to_value(&cost).unwrap()).unwrap();
            assert_eq!(back, cost);
            let is_sim = matches!(cost.tiling, LayerTiling::Shiftaddnas(_));
            assert_eq!(is_sim, model == HwModel::Shiftaddnas);
        }
        // A row stored before the simulator existed (the project's tiling, no model) still reads.
        let old = serde_json::json!({"m_g": 16, "c_g": 8, "p_g": 4, "m_s": 16, "p_s": 4, "c_r": 4, "q_r": 8});
        let t: LayerTiling = serde_json::from_value(old).unwrap();
        assert!(matches!(t, LayerTiling::Project(p) if p.m_g == 16));
    }

    #[test]
    fn the_full_convention_belongs_to_the_project_model() {
        let mut cfg = Config::default();
        cfg.hw.convention = Convention::Full;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("hw.convention") && err.contains("hw.model"),
            "{err}"
        );
        cfg.hw.model = HwModel::Project;
        cfg.validate().unwrap();
        assert_eq!(
            under(&cfg.hw, HwModel::Shiftaddnas).convention,
            Convention::Paper
        );
        assert_eq!(
            under(&cfg.hw, HwModel::Project).convention,
            Convention::Full
        );
    }
}
