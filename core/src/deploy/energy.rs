//! The integer program's energy per image under either hardware model (method.md §7): its
//! counted operations ([`super::count`]) priced at the 45 nm table of [`crate::hw`], and the data
//! movement of its layers as that model moves them, at the program's activation width.
//!
//! - Compute: an operation on operands of the activations' width (a tap's shift, multiply,
//!   subtraction or absolute value; a saturating compare) is charged at the table's 8-bit row when
//!   activations have 8 bits, else at its 32-bit row (the table has no 16-bit row, so 16-bit
//!   activations are charged as 32-bit: an upper bound); accumulation and requantisation at the
//!   32-bit row (the generated C's accumulators). A shift is a shift, a multiply a multiply, and an
//!   addition, subtraction, absolute value or compare an addition — as the hardware view charges
//!   ReLU6. Every operation is counted once, so no convention (`paper`, `full`) applies.
//! - Memory: each conv of the program is the layer the hardware view prices (its geometry, operator,
//!   BN, ReLU6, residual add), moved at 8 bits when activations have 8, else at 16.
//!
//! Beside it, the float model as the hardware view prices it (one op of the layer's kind per MAC,
//! BN and activations as that model charges them, at the run's `hw.bits`): the same layers, so
//! the two differ in what is computed and at which width, not in what the network is.

use serde::{Deserialize, Serialize};

use crate::hw::{self, unit_energy};
use crate::spec::arch::Act;
use crate::spec::config::{HwConfig, HwModel, OpKind};
use crate::spec::layers::{Layer, LayerKind};

use super::count::{Costs, OpCounts};
use super::program::{IntModel, IntStep};

/// One layer's energy per image (pJ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerEnergy {
    pub name: String,
    pub compute_pj: f64,
    /// Zero for steps the hardware models do not move data for (residual adds, pool, argmax).
    pub memory_pj: f64,
}

/// The integer program's energy per image under one hardware model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntEnergy {
    pub model: HwModel,
    /// Bits of a moved word.
    pub word_bits: i64,
    pub compute_mj: f64,
    pub memory_mj: f64,
    pub energy_mj: f64,
    /// The float model as the hardware view prices it, under the same model (its compute and
    /// total).
    pub float_compute_mj: f64,
    pub float_energy_mj: f64,
    pub layers: Vec<LayerEnergy>,
}

/// The conv steps of `model` as the hardware models' layers.
pub fn hw_layers(model: &IntModel) -> Vec<Layer> {
    let mut out = Vec::new();
    for (i, step) in model.steps.iter().enumerate() {
        let IntStep::Conv(c) = step else { continue };
        let g = &c.geo;
        let (c_in, h_in, w_in) = g.input;
        let (c_out, h_out, w_out) = g.out;
        let classifier = matches!(
            model.steps.get(i.wrapping_sub(1)),
            Some(IntStep::Pool { .. })
        );
        let kind = if classifier {
            LayerKind::Linear
        } else if g.groups > 1 && g.groups == c_in {
            LayerKind::Depthwise
        } else if g.k == 1 {
            LayerKind::Pointwise
        } else {
            LayerKind::Conv
        };
        let n = |v: usize| v as i64;
        out.push(Layer {
            name: c.name.clone(),
            kind,
            op: c.weights.op(),
            c_in: n(c_in),
            c_out: n(c_out),
            kernel: n(g.k),
            stride: n(g.stride),
            groups: n(g.groups),
            h_in: n(h_in),
            w_in: n(w_in),
            h_out: n(h_out),
            w_out: n(w_out),
            bn: !classifier,
            act: if c.relu6 { Act::Relu6 } else { Act::None },
            residual_add: matches!(model.steps.get(i + 1), Some(IntStep::AddSaved { .. })),
            gated: 0,
            upsampled: 0,
        });
    }
    out
}

/// Energy (pJ) of `ops`, `narrow` of them on operands of `act_bits`, the rest at 32 bits.
pub fn price(ops: &OpCounts, narrow: &OpCounts, act_bits: u32) -> f64 {
    let at = |o: &OpCounts, bits: i64| {
        let add = (o.add_sub + o.abs + o.cmp) as f64;
        o.shift as f64 * unit_energy(OpKind::Shift, bits)
            + o.mul as f64 * unit_energy(OpKind::Mult, bits)
            + add * unit_energy(OpKind::Add, bits)
    };
    let wide = OpCounts {
        shift: ops.shift - narrow.shift,
        add_sub: ops.add_sub - narrow.add_sub,
        abs: ops.abs - narrow.abs,
        mul: ops.mul - narrow.mul,
        cmp: ops.cmp - narrow.cmp,
    };
    at(narrow, i64::from(act_bits)) + at(&wide, 32)
}

/// The energy of `model` (counted as `costs`) under `hw`'s cost model; the float model priced
/// as `hw` says.
pub fn energy(model: &IntModel, costs: &Costs, hw: &HwConfig) -> IntEnergy {
    let word_bits = if model.act_bits <= 8 { 8 } else { 16 };
    let moved = HwConfig {
        bits: word_bits,
        ..hw.clone()
    };
    let layers = hw_layers(model);
    let pj_to_mj = 1e-9;
    let per_layer: Vec<LayerEnergy> = costs
        .layers
        .iter()
        .map(|l| LayerEnergy {
            name: l.name.clone(),
            compute_pj: price(&l.ops, &l.narrow, model.act_bits),
            memory_pj: layers
                .iter()
                .find(|h| h.name == l.name)
                .map_or(0.0, |h| hw::layer_cost(h, &moved).memory.total()),
        })
        .collect();
    let compute_mj = per_layer.iter().map(|l| l.compute_pj).sum::<f64>() * pj_to_mj;
    let memory_mj = per_layer.iter().map(|l| l.memory_pj).sum::<f64>() * pj_to_mj;
    let float = hw::model_cost("float", &layers, hw);
    IntEnergy {
        model: hw.model,
        word_bits,
        compute_mj,
        memory_mj,
        energy_mj: compute_mj + memory_mj,
        float_compute_mj: float.compute_mj + float.other_mj,
        float_energy_mj: float.energy_mj,
        layers: per_layer,
    }
}

/// The energy under each hardware model, from the run's `hw` settings.
pub fn energies(model: &IntModel, costs: &Costs, hw: &HwConfig) -> Vec<IntEnergy> {
    HwModel::ALL
        .into_iter()
        .map(|m| energy(model, costs, &hw::under(hw, m)))
        .collect()
}
