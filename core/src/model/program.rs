//! The tiny model as a flat program of steps (what `export` serialises and evaluates without
//! the elastic layers): convs with their folded BN, residual adds, pooling, the classifier.

use tch::Tensor;

use crate::spec::config::OpKind;

use super::elastic::{BN_EPS, ElasticBn, ElasticConv};

/// One operation of an exported tiny model (see [`Net::tiny_program`]).
#[derive(Debug)]
pub enum Step {
    /// A conv through its operator, then `y·scale + shift` per channel (MF convs) or a bias (Mult
    /// convs, BN folded), then ReLU6 if `relu6`.
    Conv {
        name: String,
        op: OpKind,
        weight: Tensor,
        bias: Option<Tensor>,
        affine: Option<(Tensor, Tensor)>,
        stride: i64,
        pad: i64,
        groups: i64,
        relu6: bool,
        act_fixed_point: bool,
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
        weight: Tensor,
        bias: Tensor,
        act_fixed_point: bool,
    },
}

pub(super) fn conv_step(
    conv: &ElasticConv,
    bn: &ElasticBn,
    c_in: i64,
    c_out: i64,
    relu6: bool,
) -> Step {
    let w = conv.tiny_slice(c_in, c_out);
    let scale =
        bn.weight.narrow(0, 0, c_out) / (bn.running_var.narrow(0, 0, c_out) + BN_EPS).sqrt();
    let shift = bn.bias.narrow(0, 0, c_out) - bn.running_mean.narrow(0, 0, c_out) * &scale;
    let (weight, bias, affine) = match conv.role {
        OpKind::Mult => (&w * scale.view([-1, 1, 1, 1]), Some(shift), None),
        _ => (conv.mf_weight_exact(&w), None, Some((scale, shift))),
    };
    Step::Conv {
        name: conv.name.clone(),
        op: conv.role,
        weight,
        bias,
        affine,
        stride: conv.stride,
        pad: conv.tiny_kernel / 2,
        groups: if conv.depthwise { c_in } else { 1 },
        relu6,
        act_fixed_point: conv.role == OpKind::Shift && conv.act_fixed_point,
    }
}
