//! The tiny model as a flat program (what `export` writes and evaluates without the elastic
//! layers): convs with their folded BN, residual adds, pooling, the classifier. The steps are
//! plain data — `model.json` lists them as they are — and their tensors are named apart.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::spec::config::OpKind;

use super::elastic::{BN_EPS, ElasticBn, ElasticConv};

/// One operation of the tiny model (see [`super::Net::tiny_program`]). A step's tensors are
/// `<name>.weight`, and `.bias` (Mult convs: BN folded; the classifier) or `.scale` / `.shift`
/// (MF convs: BN kept as a per-channel affine after the operator).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// A conv through its operator, then `y·scale + shift` per channel (MF convs) or a bias (Mult
    /// convs, `folded_bn`), then ReLU6 if `relu6`.
    Conv {
        name: String,
        op: OpKind,
        stride: i64,
        pad: i64,
        groups: i64,
        relu6: bool,
        act_fixed_point: bool,
        folded_bn: bool,
    },
    /// Remember the current activation (a residual block's input).
    Save,
    /// Add the remembered activation.
    AddSaved,
    /// Global average pool to [N, C].
    Pool,
    Linear {
        name: String,
        op: OpKind,
        act_fixed_point: bool,
    },
}

/// The tiny model as a program: its steps in execution order and their named tensors.
#[derive(Debug, Default)]
pub struct Program {
    pub steps: Vec<Step>,
    pub tensors: Vec<(String, Tensor)>,
}

impl Program {
    /// Append a conv of `c_in` → `c_out` channels with its BN folded or kept as an affine.
    pub(super) fn conv(
        &mut self,
        conv: &ElasticConv,
        bn: &ElasticBn,
        (c_in, c_out): (i64, i64),
        relu6: bool,
    ) {
        let w = conv.tiny_slice(c_in, c_out);
        let scale =
            bn.weight.narrow(0, 0, c_out) / (bn.running_var.narrow(0, 0, c_out) + BN_EPS).sqrt();
        let (mean, bias) = (
            bn.running_mean.narrow(0, 0, c_out),
            bn.bias.narrow(0, 0, c_out),
        );
        let name = conv.name.clone();
        let folded_bn = conv.role == OpKind::Mult;
        if folded_bn {
            self.tensors
                .push((format!("{name}.weight"), &w * scale.view([-1, 1, 1, 1])));
            self.tensors
                .push((format!("{name}.bias"), bias - mean * &scale));
        } else {
            // Kept apart and applied centred, (y − mean)·scale + bias: an Add layer's outputs sit
            // far from 0, where y·scale + (bias − mean·scale) cancels their spread away.
            self.tensors
                .push((format!("{name}.weight"), conv.mf_weight_exact(&w)));
            self.tensors.push((format!("{name}.mean"), mean.copy()));
            self.tensors.push((format!("{name}.scale"), scale));
            self.tensors.push((format!("{name}.bias"), bias.copy()));
        }
        self.steps.push(Step::Conv {
            name,
            op: conv.role,
            stride: conv.stride,
            pad: conv.tiny_kernel / 2,
            groups: if conv.depthwise { c_in } else { 1 },
            relu6,
            act_fixed_point: conv.role == OpKind::Shift && conv.act_fixed_point,
            folded_bn,
        });
    }

    /// Append the classifier on `c` features.
    pub(super) fn linear(&mut self, fc: &ElasticConv, bias: &Tensor, c: i64, classes: i64) {
        let w = fc.tiny_slice(c, classes);
        let weight = match fc.role {
            OpKind::Mult => w.copy(),
            _ => fc.mf_weight_exact(&w),
        };
        self.tensors
            .push(("fc.weight".to_owned(), weight.flatten(1, -1)));
        self.tensors.push(("fc.bias".to_owned(), bias.copy()));
        self.steps.push(Step::Linear {
            name: "fc".into(),
            op: fc.role,
            act_fixed_point: fc.role == OpKind::Shift && fc.act_fixed_point,
        });
    }
}
