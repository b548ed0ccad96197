//! The tiny model as a flat program (what `export` writes and evaluates without the elastic
//! layers): convs with their folded BN, residual adds, pooling, the classifier. The steps are
//! plain data — `model.json` lists them as they are — and their tensors are named apart.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::spec::arch::Act;
use crate::spec::config::OpKind;

use super::elastic::{BN_EPS, ElasticBn, ElasticConv};

/// One operation of the tiny model (see [`super::Net::tiny_program`]). A step's tensors are
/// `<name>.weight`, and `.bias` (Mult convs: BN folded; the classifier) or `.scale` / `.shift`
/// (MF convs: BN kept as a per-channel affine after the operator).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// A conv through its operator, then `y·scale + shift` per channel (MF convs) or a bias (Mult
    /// convs, `folded_bn`), then ReLU6 if `relu6`, or `act` where it is given (ReLU, h-swish:
    /// absent from programs without them, so earlier exports read as they were written).
    Conv {
        name: String,
        op: OpKind,
        stride: i64,
        pad: i64,
        groups: i64,
        relu6: bool,
        act_fixed_point: bool,
        folded_bn: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        act: Option<Act>,
    },
    /// Squeeze-and-excitation: `x · h_sigmoid(E(relu(R(mean(x)) + r)) + e)` per channel, `R`
    /// and `E` 1×1 convs through `op` (`<name>.reduce.weight` / `.bias`, `<name>.expand.weight`
    /// / `.bias`).
    Se {
        name: String,
        op: OpKind,
        act_fixed_point: bool,
    },
    /// Remember the current activation (a residual block's input, or the segmentation head's
    /// skip map).
    Save,
    /// Add the remembered activation.
    AddSaved,
    /// Global average pool to [N, C].
    Pool,
    /// A dense layer on the pooled features, with bias: the classifier (`fc`), or before it
    /// `final` with its activation (`act`).
    Linear {
        name: String,
        op: OpKind,
        act_fixed_point: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        act: Option<Act>,
    },
    /// LR-ASPP on the current map and the remembered skip map (popped), then bilinear
    /// upsampling to the input size: `cbr` (a [`Step::Conv`]: 1×1, BN, ReLU) gated per channel
    /// by h_sigmoid(`<gate>.weight` · mean(x)), upsampled to the skip map and classified by
    /// `<high>.weight` / `.bias`, plus `<low>.weight` / `.bias` on the skip map. The three 1×1
    /// layers compute through `op`.
    SegHead {
        cbr: Box<Step>,
        gate: String,
        high: String,
        low: String,
        op: OpKind,
        act_fixed_point: bool,
    },
}

/// A step's activation as written: `act` where given, else ReLU6 or none.
pub fn step_act(relu6: bool, act: Option<Act>) -> Act {
    act.unwrap_or(if relu6 { Act::Relu6 } else { Act::None })
}

/// How a step writes `act`: (`relu6`, `act` where ReLU6 and none do not say it).
fn write_act(act: Act) -> (bool, Option<Act>) {
    (
        act == Act::Relu6,
        (!matches!(act, Act::Relu6 | Act::None)).then_some(act),
    )
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
        act: Act,
    ) {
        let step = self.conv_step(conv, bn, (c_in, c_out), act);
        self.steps.push(step);
    }

    /// [`Self::conv`]'s tensors, and its step (not appended).
    fn conv_step(
        &mut self,
        conv: &ElasticConv,
        bn: &ElasticBn,
        (c_in, c_out): (i64, i64),
        act: Act,
    ) -> Step {
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
        let (relu6, act) = write_act(act);
        Step::Conv {
            name,
            op: conv.role,
            stride: conv.stride,
            pad: conv.tiny_kernel / 2,
            groups: if conv.depthwise { c_in } else { 1 },
            relu6,
            act_fixed_point: conv.role == OpKind::Shift && conv.act_fixed_point,
            folded_bn,
            act,
        }
    }

    /// Append the segmentation head ([`Step::SegHead`]): `cbr` on `features` channels to `c`,
    /// the gate, the high classifier `fc` on `c`, the low one on `skip` channels.
    pub(super) fn seg_head(
        &mut self,
        (cbr, cbr_bn, features, c): (&ElasticConv, &ElasticBn, i64, i64),
        gate: &ElasticConv,
        (fc, fc_bias): (&ElasticConv, &Tensor),
        (low, low_bias, skip): (&ElasticConv, &Tensor, i64),
        classes: i64,
    ) {
        let cbr = self.conv_step(cbr, cbr_bn, (features, c), Act::Relu);
        self.tensors.push((
            format!("{}.weight", gate.name),
            Self::weight(gate, features, c),
        ));
        for (conv, bias, c_in) in [(fc, fc_bias, c), (low, low_bias, skip)] {
            self.tensors.push((
                format!("{}.weight", conv.name),
                Self::weight(conv, c_in, classes),
            ));
            self.tensors.push((
                format!("{}.bias", conv.name),
                bias.narrow(0, 0, classes).copy(),
            ));
        }
        self.steps.push(Step::SegHead {
            cbr: Box::new(cbr),
            gate: gate.name.clone(),
            high: fc.name.clone(),
            low: low.name.clone(),
            op: fc.role,
            act_fixed_point: fc.role == OpKind::Shift && fc.act_fixed_point,
        });
    }

    /// The weights `conv`'s operator uses on its tiny `c_in` → `out` slice, as exported.
    fn weight(conv: &ElasticConv, c_in: i64, out: i64) -> Tensor {
        let w = conv.tiny_slice(c_in, out);
        match conv.role {
            OpKind::Mult => w.copy(),
            _ => conv.mf_weight_exact(&w),
        }
    }

    /// Append squeeze-and-excitation on `c` channels through `hidden` ones.
    pub(super) fn se(
        &mut self,
        name: &str,
        (reduce, reduce_bias): (&ElasticConv, &Tensor),
        (expand, expand_bias): (&ElasticConv, &Tensor),
        (c, hidden): (i64, i64),
    ) {
        let parts = [
            ("reduce", reduce, reduce_bias, (c, hidden)),
            ("expand", expand, expand_bias, (hidden, c)),
        ];
        for (part, conv, bias, (i, o)) in parts {
            self.tensors
                .push((format!("{name}.{part}.weight"), Self::weight(conv, i, o)));
            self.tensors
                .push((format!("{name}.{part}.bias"), bias.narrow(0, 0, o).copy()));
        }
        self.steps.push(Step::Se {
            name: name.to_owned(),
            op: reduce.role,
            act_fixed_point: reduce.role == OpKind::Shift && reduce.act_fixed_point,
        });
    }

    /// Append a dense layer of `c` → `out` features with its bias, then `act`.
    pub(super) fn linear(
        &mut self,
        fc: &ElasticConv,
        bias: &Tensor,
        (c, out): (i64, i64),
        act: Act,
    ) {
        let name = fc.name.clone();
        self.tensors.push((
            format!("{name}.weight"),
            Self::weight(fc, c, out).flatten(1, -1),
        ));
        self.tensors
            .push((format!("{name}.bias"), bias.narrow(0, 0, out).copy()));
        self.steps.push(Step::Linear {
            name,
            op: fc.role,
            act_fixed_point: fc.role == OpKind::Shift && fc.act_fixed_point,
            act: (act != Act::None).then_some(act),
        });
    }
}
