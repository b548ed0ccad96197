//! The segmentation head ([`SegHead`]: LR-ASPP) on an elastic backbone. Its input widths follow
//! the sub-model's (a leading slice, like the classifier's); its own widths are not augmented.
//! The high branch's classifier is the net's `fc` (so `fc.weight` / `fc.bias` name the last
//! layer of either task).

use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

use crate::spec::arch::{Act, OpSpec, SegHead};

use super::elastic::{ConvShape, ElasticBn, ElasticConv, Exec};
use super::program::Program;

/// LR-ASPP's layers but the high branch's classifier.
#[derive(Debug)]
pub(super) struct SegLayers {
    pub spec: SegHead,
    /// 1×1 conv, BN, ReLU on the last map: an MF pointwise conv where the body's are.
    pub cbr: ElasticConv,
    pub cbr_bn: ElasticBn,
    /// 1×1 conv on the pooled last map, h-sigmoid: the per-channel gate (operator as the
    /// classifier's).
    pub gate: ElasticConv,
    /// 1×1 classifier with bias on the skip map (operator as the classifier's).
    pub low: ElasticConv,
    pub low_bias: Tensor,
}

impl SegLayers {
    /// The head on `features` = (max, tiny) channels of the last map and `skip` those of the
    /// skip map, for `classes` classes.
    pub fn new(
        p: &nn::Path<'_>,
        spec: SegHead,
        (features, skip): ((i64, i64), (i64, i64)),
        classes: i64,
        ops: &OpSpec,
    ) -> Self {
        let c = spec.channels;
        let pw = |name: &str, (max, tiny): (i64, i64), out: i64, role| {
            ElasticConv::new(
                &(p / name),
                ConvShape::pointwise(max, out, (tiny, out), role),
                ops,
            )
        };
        let low = pw("low", skip, classes, ops.classifier_role());
        let bound = 1.0 / (skip.0 as f64).sqrt();
        let low_bias = (p / "low").var(
            "bias",
            &[classes],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        Self {
            spec,
            cbr: pw("cbr", features, c, ops.conv_role(false, true)),
            cbr_bn: ElasticBn::new(&(p / "cbr_bn"), c, ops.separate_aug_bn),
            gate: pw("gate", features, c, ops.classifier_role()),
            low,
            low_bias,
        }
    }

    /// Per-pixel logits at `size` (the input's) from the last map `x` and the skip map `skip`;
    /// `fc` (with `fc_bias`) classifies the gated branch.
    pub fn forward(
        &self,
        (x, skip): (&Tensor, &Tensor),
        (fc, fc_bias): (&ElasticConv, &Tensor),
        size: [i64; 2],
        train: bool,
        exec: Exec,
    ) -> Result<Tensor, TchError> {
        let c = self.spec.channels;
        let h = self
            .cbr_bn
            .forward(&self.cbr.forward(x, c, exec)?, train, Act::Relu, exec)?;
        let pooled = x.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
        let gate = self.gate.forward(&pooled, c, exec)?.f_hardsigmoid()?;
        let classes = fc_bias.size()[0];
        let bias = |b: &Tensor| b.f_view([1, classes, 1, 1]);
        let skip_size = [skip.size()[2], skip.size()[3]];
        let high = fc.forward(&upsample(&h.f_mul(&gate)?, skip_size)?, classes, exec)?;
        let low = self.low.forward(skip, classes, exec)?;
        let y = high
            .f_add(&bias(fc_bias)?)?
            .f_add(&low)?
            .f_add(&bias(&self.low_bias)?)?;
        upsample(&y, size)
    }

    pub fn convs(&self) -> [&ElasticConv; 3] {
        [&self.cbr, &self.gate, &self.low]
    }

    /// The head as the tiny model's program step (after the backbone's, with the skip map
    /// saved): its convs at the tiny widths `features` and `skip`.
    pub fn program(
        &self,
        p: &mut Program,
        (fc, fc_bias): (&ElasticConv, &Tensor),
        (features, skip): (i64, i64),
    ) {
        let (c, classes) = (self.spec.channels, fc_bias.size()[0]);
        p.seg_head(
            (&self.cbr, &self.cbr_bn, features, c),
            &self.gate,
            (fc, fc_bias),
            (&self.low, &self.low_bias, skip),
            classes,
        );
    }
}

/// Bilinear resize of `x` [N, C, H, W] to `size` (half-pixel centres, as torchvision's
/// `interpolate(…, align_corners=False)`); the identity at the same size.
pub fn upsample(x: &Tensor, size: [i64; 2]) -> Result<Tensor, TchError> {
    if x.size()[2..] == size {
        return Ok(x.shallow_clone());
    }
    x.f_upsample_bilinear2d(size, false, None, None)
}
