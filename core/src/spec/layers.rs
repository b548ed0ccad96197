//! The layer list of a sub-model, in execution order, with the shapes a cost model or a benchmark
//! needs: every conv (stem, expand, depthwise, project, head) and the classifier, each with its
//! operator, channels, kernel, stride, groups and input/output feature-map sizes.
//!
//! It mirrors `model::Net::forward` without building tensors, so it works for any
//! architecture and widths (tiny, augmented, NAS candidates) in microseconds.

use crate::spec::arch::{Act, ArchSpec, OpSpec, Widths, se_channels};
use crate::spec::config::OpKind;

/// What a layer is, for counting and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A dense k×k conv (k > 1), e.g. the stem.
    Conv,
    /// A k×k depthwise conv (groups = channels).
    Depthwise,
    /// A 1×1 conv.
    Pointwise,
    /// The classifier.
    Linear,
}

impl LayerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conv => "conv",
            Self::Depthwise => "dw",
            Self::Pointwise => "pw",
            Self::Linear => "linear",
        }
    }
}

/// One conv or linear layer of a sub-model at a given input resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    pub op: OpKind,
    pub c_in: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
    pub h_in: i64,
    pub w_in: i64,
    pub h_out: i64,
    pub w_out: i64,
    /// Followed by batch norm (every conv but SE's; not the dense layers, which have a bias).
    pub bn: bool,
    /// The activation after it.
    pub act: Act,
    /// Its output is added to the block input (the project conv of a residual block).
    pub residual_add: bool,
    /// Activations multiplied by the gate this layer computes (SE's second conv: every element
    /// of its block's mid map; the segmentation head's gate), a multiplication each.
    pub gated: i64,
    /// Elements bilinearly interpolated after it (the segmentation head's upsampling), four
    /// multiplications and three additions each.
    pub upsampled: i64,
}

impl Layer {
    /// Input channels seen by one output channel.
    pub fn fan_in(&self) -> i64 {
        self.c_in / self.groups * self.kernel * self.kernel
    }

    /// Multiply-accumulates (or their Shift / Add counterparts) per image.
    pub fn macs(&self) -> i64 {
        self.c_out * self.h_out * self.w_out * self.fan_in()
    }

    /// Weights (no BN, no bias).
    pub fn params(&self) -> i64 {
        self.c_out * self.fan_in()
    }

    pub fn in_activations(&self) -> i64 {
        self.c_in * self.h_in * self.w_in
    }

    pub fn out_activations(&self) -> i64 {
        self.c_out * self.h_out * self.w_out
    }
}

fn out_size(size: i64, kernel: i64, stride: i64) -> i64 {
    (size + 2 * (kernel / 2) - kernel) / stride + 1
}

/// After a layer: its BN, activation, residual add and the gate it computes.
#[derive(Clone, Copy)]
struct After {
    bn: bool,
    act: Act,
    residual_add: bool,
    gated: i64,
    upsampled: i64,
}

impl After {
    /// BN then `act`.
    fn bn(act: Act) -> Self {
        Self {
            bn: true,
            act,
            residual_add: false,
            gated: 0,
            upsampled: 0,
        }
    }

    /// A bias (no BN) then `act`.
    fn bias(act: Act) -> Self {
        Self {
            bn: false,
            ..Self::bn(act)
        }
    }
}

/// The layers of sub-model `w` of `spec` on `resolution`-pixel square inputs, operators from `ops`.
pub fn layers(spec: &ArchSpec, w: &Widths, ops: &OpSpec, resolution: i64) -> Vec<Layer> {
    let mut out = Vec::with_capacity(3 * spec.blocks.len() + 3);
    let mut size = resolution;
    let mut push = |name: String,
                    kind: LayerKind,
                    op: OpKind,
                    (c_in, c_out): (i64, i64),
                    (kernel, stride): (i64, i64),
                    size: &mut i64,
                    after: After| {
        let h_out = out_size(*size, kernel, stride);
        out.push(Layer {
            name,
            kind,
            op,
            c_in,
            c_out,
            kernel,
            stride,
            groups: if kind == LayerKind::Depthwise {
                c_in
            } else {
                1
            },
            h_in: *size,
            w_in: *size,
            h_out,
            w_out: h_out,
            bn: after.bn,
            act: after.act,
            residual_add: after.residual_add,
            gated: after.gated,
            upsampled: after.upsampled,
        });
        *size = h_out;
    };
    push(
        "stem.conv".into(),
        LayerKind::Conv,
        ops.conv_role(true, false),
        (spec.in_channels, w.stem),
        (3, spec.stem_stride),
        &mut size,
        After::bn(spec.stem_act),
    );
    let mut c = w.stem;
    let tap = spec.seg.map(|s| s.tap);
    let mut skip = (c, size);
    for (i, b) in spec.blocks.iter().enumerate() {
        if !w.active[i] {
            continue;
        }
        let c_block_in = c;
        if b.expand {
            push(
                format!("blocks.{i}.expand"),
                LayerKind::Pointwise,
                ops.block_role(b, true),
                (c, w.mid[i]),
                (1, 1),
                &mut size,
                After::bn(b.act),
            );
            c = w.mid[i];
        }
        push(
            format!("blocks.{i}.dw"),
            LayerKind::Depthwise,
            ops.block_role(b, b.kernel == 1),
            (c, c),
            (w.kernel[i], b.stride),
            &mut size,
            After::bn(b.act),
        );
        if b.se {
            // On the pooled map; the second conv's h-sigmoid gates all c × size² activations.
            let (hidden, role, mut one) = (se_channels(c), ops.se_role(b), 1);
            push(
                format!("blocks.{i}.se.reduce"),
                LayerKind::Pointwise,
                role,
                (c, hidden),
                (1, 1),
                &mut one,
                After::bias(Act::Relu),
            );
            push(
                format!("blocks.{i}.se.expand"),
                LayerKind::Pointwise,
                role,
                (hidden, c),
                (1, 1),
                &mut one,
                After {
                    gated: c * size * size,
                    ..After::bias(Act::HSigmoid)
                },
            );
        }
        push(
            format!("blocks.{i}.project"),
            LayerKind::Pointwise,
            ops.block_role(b, true),
            (c, w.out[i]),
            (1, 1),
            &mut size,
            After {
                residual_add: b.residual() && c_block_in == w.out[i],
                ..After::bn(Act::None)
            },
        );
        c = w.out[i];
        if tap == Some(Some(i)) {
            skip = (c, size);
        }
    }
    if let Some(h) = w.head {
        push(
            "head.conv".into(),
            LayerKind::Pointwise,
            ops.conv_role(false, true),
            (c, h),
            (1, 1),
            &mut size,
            After::bn(spec.head_act),
        );
        c = h;
    }
    if let Some(seg) = spec.seg {
        // LR-ASPP: the gated branch at the last map, upsampled to the skip map; a classifier on
        // each (their sum an addition per logit), the logits upsampled to the input.
        let (ch, (skip_c, mut skip_size)) = (seg.channels, skip);
        push(
            "seg.cbr".into(),
            LayerKind::Pointwise,
            ops.conv_role(false, true),
            (c, ch),
            (1, 1),
            &mut size,
            After::bn(Act::Relu),
        );
        let (gated, mut one) = (ch * size * size, 1);
        push(
            "seg.gate".into(),
            LayerKind::Linear,
            ops.classifier_role(),
            (c, ch),
            (1, 1),
            &mut one,
            After {
                gated,
                upsampled: if skip_size == size {
                    0
                } else {
                    ch * skip_size * skip_size
                },
                ..After::bias(Act::HSigmoid)
            },
        );
        let mut at_skip = skip_size;
        push(
            "fc".into(),
            LayerKind::Pointwise,
            ops.classifier_role(),
            (ch, spec.classes),
            (1, 1),
            &mut at_skip,
            After::bias(Act::None),
        );
        let upsampled = if skip_size == resolution {
            0
        } else {
            spec.classes * resolution * resolution
        };
        push(
            "seg.low".into(),
            LayerKind::Pointwise,
            ops.classifier_role(),
            (skip_c, spec.classes),
            (1, 1),
            &mut skip_size,
            After {
                residual_add: true,
                upsampled,
                ..After::bias(Act::None)
            },
        );
        return out;
    }
    // Global average pooling, then (MobileNetV3) a dense layer, then the classifier, on a 1×1
    // "map".
    let mut one = 1;
    if let Some(f) = spec.final_c {
        push(
            "final".into(),
            LayerKind::Linear,
            OpKind::Mult,
            (c, f),
            (1, 1),
            &mut one,
            After::bias(Act::HSwish),
        );
        c = f;
    }
    push(
        "fc".into(),
        LayerKind::Linear,
        ops.classifier_role(),
        (c, spec.classes),
        (1, 1),
        &mut one,
        After::bias(Act::None),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_hand_computation() {
        let l = Layer {
            name: "x".into(),
            kind: LayerKind::Depthwise,
            op: OpKind::Add,
            c_in: 48,
            c_out: 48,
            kernel: 3,
            stride: 2,
            groups: 48,
            h_in: 16,
            w_in: 16,
            h_out: 8,
            w_out: 8,
            bn: true,
            act: Act::Relu6,
            residual_add: false,
            gated: 0,
            upsampled: 0,
        };
        assert_eq!(l.macs(), 48 * 8 * 8 * 9);
        assert_eq!(l.params(), 48 * 9);
        assert_eq!(out_size(16, 3, 2), 8);
        assert_eq!(out_size(32, 7, 1), 32);
        assert_eq!(out_size(5, 3, 2), 3);
    }
}

#[cfg(test)]
mod counts {
    use super::*;
    use crate::spec::arch::{ArchSpec, OpSpec};
    use crate::spec::config::ModelName;

    /// MACs (convs and the classifier: what torchprofile counts) and parameters (weights, BN's
    /// γ and β, the classifier's bias) of a named model on 3-channel `resolution`-pixel ImageNet.
    fn counts(name: ModelName, resolution: i64) -> (f64, f64) {
        let spec = ArchSpec::named(name, 3, resolution, 1000);
        let l = layers(&spec, &spec.base_widths(), &OpSpec::mult(), resolution);
        let macs: i64 = l.iter().map(Layer::macs).sum();
        let params: i64 = l
            .iter()
            .map(|l| l.params() + if l.bn { 2 * l.c_out } else { l.c_out })
            .sum();
        (macs as f64 / 1e6, params as f64 / 1e6)
    }

    /// NetAug's README (mit-han-lab/tinyml, `netaug/README.md`, "Pretrained Models") gives each
    /// model's #Params and #MACs at the resolution it trains at: MobileNetV2-Tiny 0.75M / 23.5M
    /// (r144, MCUNet's), MCUNet 0.74M / 81.8M (r176), ProxylessNAS-Mobile w0.35 1.8M / 35.7M
    /// (r160). Ours agree to the digits printed.
    /// MobileNetV3-Large as `mbv3-w0.35` is built, at width 1 and 224 px: 216.6 M MACs (the
    /// TensorFlow models README, `research/slim/nets/mobilenet`: "Large dm=1", 217 M) and
    /// 5,483,032 parameters (torchvision's `mobilenet_v3_large`, whose SE widths agree with
    /// NetAug's at width 1). At width 0.35 no source gives figures; ours are in RESULTS.md.
    #[test]
    fn mobilenet_v3_counts_what_its_references_report() {
        let spec = ArchSpec::mbv3(1.0, 3, 224, 1000);
        let l = layers(&spec, &spec.base_widths(), &OpSpec::mult(), 224);
        let macs: i64 = l.iter().map(Layer::macs).sum();
        let params: i64 = l
            .iter()
            .map(|l| l.params() + if l.bn { 2 * l.c_out } else { l.c_out })
            .sum();
        assert_eq!(params, 5_483_032);
        assert_eq!((macs as f64 / 1e6).round(), 217.0, "{macs}");
        // The 0.35 model at the sizes the issue names: 224 px and 32 px.
        let (m224, p) = counts(ModelName::Mbv3W035, 224);
        assert_eq!(((m224 * 10.0).round(), (p * 100.0).round()), (364.0, 211.0));
        assert_eq!((counts(ModelName::Mbv3W035, 32).0 * 10.0).round(), 115.0);
    }

    #[test]
    fn named_models_count_what_netaug_reports() {
        for (name, r, macs, params) in [
            (ModelName::Mbv2Tiny, 144, 23.5, 0.75),
            (ModelName::Mcunet, 176, 81.8, 0.74),
            (ModelName::ProxylessW035, 160, 35.7, 1.8),
        ] {
            let (m, p) = counts(name, r);
            // Rounded to the reported digits: within half a unit of the last one.
            assert!((m - macs).abs() <= 0.05, "{name:?} MACs: {m} M");
            let half = if params < 1.0 { 0.005 } else { 0.05 };
            assert!((p - params).abs() <= half, "{name:?} params: {p} M");
        }
        // ProxylessNAS w0.35 at the sizes the issue names: 224 px (68.8 M MACs) and 32 px, where
        // the stem and the first downsampling stage keep stride 1 (20.6 M).
        assert_eq!(
            (counts(ModelName::ProxylessW035, 224).0 * 10.0).round(),
            688.0
        );
        assert_eq!(
            (counts(ModelName::ProxylessW035, 32).0 * 10.0).round(),
            206.0
        );
    }
}
