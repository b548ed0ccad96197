//! Architecture specs: what a model *is*, as plain data — its blocks and channel counts
//! ([`ArchSpec`]), every way to get one (a named model, the config, a NAS architecture, a
//! TargetNet inside its SubNet), the widths of its sub-models ([`Widths`]: the tiny one, the
//! largest augmented one), and the operator of every layer ([`OpSpec`]). No tensors.

use serde::{Deserialize, Serialize};

use super::config::{AugConfig, Config, Hybrid, MfLayers, ModelName, OpKind, RemapKind, Task};
use super::space::{NasArch, STAGE_BASE};

/// An activation after a layer (its BN, where it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    #[default]
    None,
    Relu,
    Relu6,
    /// MobileNetV3's `x · relu6(x + 3) / 6`.
    HSwish,
    /// `relu6(x + 3) / 6` (the SE gate).
    HSigmoid,
}

impl Act {
    /// Its name as papers write it.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no activation",
            Self::Relu => "ReLU",
            Self::Relu6 => "ReLU6",
            Self::HSwish => "h-swish",
            Self::HSigmoid => "h-sigmoid",
        }
    }

    /// Multiplications and additions (compares counted as additions) per element, as the
    /// hardware models charge them: `relu` a compare, `relu6` two, `h_sigmoid` an addition, two
    /// compares and a multiply by 1/6, `h_swish` that and the multiply by `x`.
    pub fn ops(self) -> (i64, i64) {
        match self {
            Self::None => (0, 0),
            Self::Relu => (0, 1),
            Self::Relu6 => (0, 2),
            Self::HSigmoid => (1, 3),
            Self::HSwish => (2, 3),
        }
    }
}

/// Squeeze-and-excitation (MobileNetV3, as NetAug builds it): pool, a 1×1 conv to
/// [`se_channels`]`(mid)` with bias, ReLU, a 1×1 conv back with bias, h-sigmoid, and the block's
/// mid channels multiplied by that gate.
pub fn se_channels(mid: i64) -> i64 {
    make_divisible(mid as f64 / 4.0, 8).max(16)
}

/// One inverted-residual block (1×1 expand → k×k depthwise → 1×1 project).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    pub stage: usize,
    pub in_c: i64,
    pub out_c: i64,
    /// Channels after expansion; equal to `in_c` when the block has no expand conv.
    pub mid_c: i64,
    pub kernel: i64,
    pub stride: i64,
    pub expand: bool,
    /// The tiny model runs this block. `false`: a block of the augmented SubNet only (depth
    /// augmentation, method.md §6); such a block is always residual, so skipping it is the identity.
    pub tiny: bool,
    /// The block may add its input to its output (when its shape allows). `false` for a stage's
    /// first block in the models taken from NetAug's code (`proxyless-w0.35`, `mbv3-w0.35`), whose
    /// shortcut rule excludes it even where stride and channels would allow one.
    pub shortcut: bool,
    /// The activation after the expand and depthwise convs (the project conv has none).
    pub act: Act,
    /// Squeeze-and-excitation on the depthwise conv's output.
    pub se: bool,
}

impl BlockSpec {
    pub fn residual(&self) -> bool {
        self.shortcut && self.stride == 1 && self.in_c == self.out_c
    }
}

/// A whole architecture at its base (tiny) width.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchSpec {
    pub in_channels: i64,
    pub stem_c: i64,
    pub stem_stride: i64,
    pub blocks: Vec<BlockSpec>,
    /// 1×1 conv after the blocks (`mbv2-tiny`); `None` feeds the pooled features to the classifier.
    pub head_c: Option<i64>,
    /// The activation after the stem and after the head conv.
    pub stem_act: Act,
    pub head_act: Act,
    /// A 1×1 conv with bias (no BN) and h-swish on the pooled features, before the classifier
    /// (`mbv3-w0.35`: 1,280); not width-augmented.
    pub final_c: Option<i64>,
    pub classes: i64,
    /// With an augmented SubNet (`aug.arch`): its channel counts per block, the most any augmented
    /// sub-model may use. `None`: augmentation widths are bounded by the `aug` factors only.
    pub aug_cap: Option<Widths>,
    /// The segmentation head in place of pooling and the classifier (`model.task =
    /// "segmentation"`); `None`: a classifier.
    pub seg: Option<SegHead>,
}

/// LR-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019), the segmentation head of the
/// tiny-model segmentation papers: on the backbone's last map, a 1×1 conv (BN, ReLU) to
/// `channels`, gated per channel by a sigmoid of a 1×1 conv of the pooled map; upsampled to the
/// skip map (the `tap` block's output, one downsampling earlier), a 1×1 classifier on each of
/// the two, summed, and upsampled to the input. Only 1×1 convs and one pooled gate: its cost is
/// a few per cent of a tiny backbone's, where an ASPP or a decoder of 3×3 convs would rival it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegHead {
    /// The block whose output is the skip map (`None`: the stem's): the last block of the tiny
    /// model before the final downsampling.
    pub tap: Option<usize>,
    /// Channels of the gated branch.
    pub channels: i64,
}

/// MobileNet channel rounding: to a multiple of 8, never below 90 % of the request.
pub fn make_divisible(v: f64, divisor: i64) -> i64 {
    let d = divisor as f64;
    let mut r = ((v + d / 2.0) / d).floor() * d;
    r = r.max(d);
    if r < 0.9 * v {
        r += d;
    }
    r as i64
}

struct StagePlan {
    out_c: i64,
    expands: Vec<i64>,
    kernels: Vec<i64>,
    stride: i64,
    /// Each block's mid channels, where the model gives them outright (`mbv3-w0.35`); else
    /// `in × expand`.
    mids: Vec<i64>,
    act: Act,
    se: bool,
}

impl StagePlan {
    /// The stage with activation `act`, SE in every block if `se`.
    fn with(self, act: Act, se: bool) -> Self {
        Self { act, se, ..self }
    }
}

/// The named models' structure beyond their stages.
struct Frame {
    stem_c: i64,
    plans: Vec<StagePlan>,
    head_c: Option<i64>,
    stem_act: Act,
    head_act: Act,
    final_c: Option<i64>,
}

impl ArchSpec {
    /// The named architecture for `in_channels`-channel `resolution`-pixel inputs and `classes` classes.
    pub fn named(name: ModelName, in_channels: i64, resolution: i64, classes: i64) -> Self {
        // For inputs of 32 px or less, the stem and the first downsampling stage use stride 1.
        let small = resolution <= 32;
        let first_down = if small { 1 } else { 2 };
        let stem_stride = if small { 1 } else { 2 };
        let w = |c: f64| make_divisible(c * 0.35, 8);
        let relu6 = |stem_c, plans, head_c| Frame {
            stem_c,
            plans,
            head_c,
            stem_act: Act::Relu6,
            head_act: Act::Relu6,
            final_c: None,
        };
        let frame = match name {
            ModelName::Micro => relu6(
                16,
                vec![plan(24, &[3], &[3], 2), plan(32, &[3], &[3], 2)],
                Some(64),
            ),
            ModelName::Mbv2Tiny => {
                let mut plans = vec![
                    plan(w(16.0), &[1], &[3], 1),
                    plan(w(24.0), &[6; 2], &[3; 2], first_down),
                ];
                for (c, n, s) in [(32.0, 3, 2), (64.0, 4, 2), (96.0, 3, 1), (160.0, 3, 2)] {
                    plans.push(plan(w(c), &vec![6; n], &vec![3; n], s));
                }
                plans.push(plan(112, &[6], &[3], 1)); // head MBConv(56→112, k3, e6)
                relu6(w(32.0), plans, Some(448))
            }
            // ProxylessNAS-Mobile (Cai et al., ICLR 2019) at width 0.35 as NetAug builds it
            // (`models/base/proxylessnas.py` of mit-han-lab/tinyml): every width
            // make_divisible(w · 0.35, 8), the first block a depthwise-separable conv (expand 1),
            // then five searched stages and a head MBConv(k7, e6) to 320·0.35; the 1×1 head conv
            // keeps 1,280 channels (NetAug's max(·, 1280)).
            ModelName::ProxylessW035 => relu6(
                w(32.0),
                vec![
                    plan(w(16.0), &[1], &[3], 1),
                    plan(w(32.0), &[3, 3], &[5, 3], first_down),
                    plan(w(40.0), &[3, 3, 3, 3], &[7, 3, 5, 5], 2),
                    plan(w(80.0), &[6, 3, 3, 3], &[7, 5, 5, 5], 2),
                    plan(w(96.0), &[6, 3, 3, 3], &[5, 5, 5, 5], 1),
                    plan(w(192.0), &[6, 6, 3, 3], &[7, 7, 7, 7], 2),
                    plan(w(320.0), &[6], &[7], 1), // head MBConv(64→112, k7, e6)
                ],
                Some(w(1280.0).max(1280)),
            ),
            ModelName::Mbv3W035 => mbv3_frame(0.35, first_down),
            ModelName::Mcunet => relu6(
                16,
                vec![
                    plan(8, &[1], &[3], 1),
                    plan(16, &[3, 5, 5, 4], &[7, 3, 7, 5], first_down),
                    plan(24, &[5, 5, 5], &[5, 5, 5], 2),
                    plan(40, &[5, 6, 4], &[3, 7, 5], 2),
                    plan(48, &[5, 5, 5], &[5, 7, 3], 1),
                    plan(96, &[6, 5, 4], &[3, 7, 3], 2),
                    plan(160, &[5], &[7], 1), // head MBConv(96→160, k7, mid 480)
                ],
                None,
            ),
        };
        // NetAug's shortcut rule: never on a stage's first block but the stem's separable block
        // (which has one where its shape allows: `mbv3-w0.35`). The models defined before it keep
        // theirs (at 32 px `mbv2-tiny`'s second stage starts 8 → 8 at stride 1, residual).
        let netaug = matches!(name, ModelName::ProxylessW035 | ModelName::Mbv3W035);
        Self::from_frame(&frame, !netaug, (in_channels, stem_stride, classes))
    }

    /// MobileNetV3-Large at width multiplier `width` (1.0: the paper's), as [`Self::named`]
    /// builds `mbv3-w0.35`, for `resolution`-pixel inputs.
    pub fn mbv3(width: f64, in_channels: i64, resolution: i64, classes: i64) -> Self {
        let small = resolution <= 32;
        let frame = mbv3_frame(width, if small { 1 } else { 2 });
        Self::from_frame(
            &frame,
            false,
            (in_channels, if small { 1 } else { 2 }, classes),
        )
    }

    fn from_frame(
        frame: &Frame,
        first_block_shortcut: bool,
        (in_channels, stem_stride, classes): (i64, i64, i64),
    ) -> Self {
        let mut blocks = Vec::new();
        let mut in_c = frame.stem_c;
        for (stage, p) in frame.plans.iter().enumerate() {
            for (i, (&e, &k)) in p.expands.iter().zip(&p.kernels).enumerate() {
                let mid_c = p.mids.get(i).copied().unwrap_or(in_c * e);
                blocks.push(BlockSpec {
                    stage,
                    in_c,
                    out_c: p.out_c,
                    mid_c,
                    kernel: k,
                    stride: if i == 0 { p.stride } else { 1 },
                    expand: mid_c != in_c || e > 1,
                    tiny: true,
                    shortcut: i != 0 || stage == 0 || first_block_shortcut,
                    act: p.act,
                    se: p.se,
                });
                in_c = p.out_c;
            }
        }
        Self {
            in_channels,
            stem_c: frame.stem_c,
            stem_stride,
            blocks,
            head_c: frame.head_c,
            stem_act: frame.stem_act,
            head_act: frame.head_act,
            final_c: frame.final_c,
            classes,
            aug_cap: None,
            seg: None,
        }
    }

    /// The configured architecture: `model.arch` (a NAS architecture) when set, else `model.name`;
    /// with `aug.arch` too, the TargetNet inside that SubNet (see [`crate::spec::space::NasArch::to_spec_within`]).
    ///
    /// A segmentation model whose last map would be under 6 px on a side takes the small-input
    /// strides (the stem and the first downsampling stage at stride 1) — as segmentation
    /// backbones drop their last downsampling (DeepLab's output stride) — so that at 48 px every
    /// model ends at 6 × 6 (output stride 8) rather than 2 × 2; it carries the [`SegHead`]
    /// instead of its classifier.
    pub fn from_config(cfg: &Config, in_channels: i64, resolution: i64, classes: i64) -> Self {
        let build = |res: i64| match (&cfg.model.arch, &cfg.aug.arch) {
            (Some(target), Some(sub)) => target.to_spec_within(sub, (in_channels, res, classes)),
            (Some(target), None) => target.to_spec(in_channels, res, classes),
            (None, _) => Self::named(cfg.model.name, in_channels, res, classes),
        };
        let mut spec = build(resolution);
        if cfg.model.task != Task::Segmentation {
            return spec;
        }
        if resolution > 32 && resolution / spec.output_stride() < 6 {
            // The strides' rule reads the resolution only as "small" (≤ 32 px) or not.
            spec = build(32);
        }
        spec.final_c = None;
        spec.seg = Some(SegHead {
            tap: spec.skip_tap(),
            channels: cfg.model.seg_channels,
        });
        spec
    }

    /// How many input pixels a step of the last map spans.
    pub fn output_stride(&self) -> i64 {
        self.blocks.iter().map(|b| b.stride).product::<i64>() * self.stem_stride
    }

    /// The last tiny block whose output is at a smaller stride than the final map (`None`: no
    /// block downsamples, or only the first does: the stem's output).
    fn skip_tap(&self) -> Option<usize> {
        let mut stride = self.stem_stride;
        let strides: Vec<i64> = self
            .blocks
            .iter()
            .map(|b| {
                stride *= b.stride;
                stride
            })
            .collect();
        let last = stride;
        (0..self.blocks.len())
            .rev()
            .find(|&i| self.blocks[i].tiny && strides[i] < last)
    }

    /// Output channels of block `tap` (`None`: the stem) in widths `w`.
    pub fn tap_channels(&self, w: &Widths, tap: Option<usize>) -> i64 {
        tap.map_or(w.stem, |i| w.out[i])
    }

    pub fn stages(&self) -> usize {
        self.blocks.iter().map(|b| b.stage + 1).max().unwrap_or(0)
    }
}

/// MobileNetV3-Large (Howard et al., ICCV 2019) at width `width` as NetAug builds it
/// (`models/base/mbv3.py` of mit-han-lab/tinyml): h-swish stem, a residual depthwise-separable
/// block with ReLU, five stages whose mid channels are make_divisible(round(mid · width), 8) of
/// the paper's, ReLU in the first two and h-swish after, SE in the second, fourth and fifth; a
/// 1×1 head conv to 960 · width (BN, h-swish), pooling, a 1×1 conv to max(1280 · width, 1280)
/// (bias, h-swish), the classifier. `first_down`: the first downsampling stage's stride.
fn mbv3_frame(width: f64, first_down: i64) -> Frame {
    let w = |c: f64| make_divisible(c * width, 8);
    let stage = |out: f64, mids: &[f64], k: i64, stride: i64| StagePlan {
        mids: mids
            .iter()
            .map(|m| make_divisible((m * width).round(), 8))
            .collect(),
        ..plan(w(out), &vec![0; mids.len()], &vec![k; mids.len()], stride)
    };
    Frame {
        stem_c: w(16.0),
        plans: vec![
            plan(w(16.0), &[1], &[3], 1).with(Act::Relu, false),
            stage(24.0, &[64.0, 72.0], 3, first_down).with(Act::Relu, false),
            stage(40.0, &[72.0, 120.0, 120.0], 5, 2).with(Act::Relu, true),
            stage(80.0, &[240.0, 200.0, 184.0, 184.0], 3, 2).with(Act::HSwish, false),
            stage(112.0, &[480.0, 672.0], 3, 1).with(Act::HSwish, true),
            stage(160.0, &[672.0, 960.0, 960.0], 5, 2).with(Act::HSwish, true),
        ],
        head_c: Some(w(960.0)),
        stem_act: Act::HSwish,
        head_act: Act::HSwish,
        final_c: Some(w(1280.0).max(1280)),
    }
}

fn plan(out_c: i64, expands: &[i64], kernels: &[i64], stride: i64) -> StagePlan {
    StagePlan {
        out_c,
        expands: expands.to_vec(),
        kernels: kernels.to_vec(),
        stride,
        mids: Vec::new(),
        act: Act::Relu6,
        se: false,
    }
}

/// The channel counts of one sub-model: per block (mid, out), plus stem and head, and which
/// blocks it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widths {
    pub stem: i64,
    pub mid: Vec<i64>,
    pub out: Vec<i64>,
    pub head: Option<i64>,
    /// Per block: whether this sub-model runs it (the tiny model skips the SubNet-only blocks).
    pub active: Vec<bool>,
    /// Per block: the depthwise kernel it runs (inside a SubNet, the tiny model runs the centre
    /// of a larger stored kernel: kernel nesting).
    pub kernel: Vec<i64>,
}

/// Channels for `base` scaled by `factor` (factor 1 is exactly `base`; never below it).
pub fn scaled(base: i64, factor: f64) -> i64 {
    if factor <= 1.0 {
        base
    } else {
        make_divisible(base as f64 * factor, 8).max(base)
    }
}

impl Widths {
    /// `base` scaled: one factor for the stem, one per stage, one for the head, one per block's
    /// expansion. As in NetAug, a block's mid width grows with its width-augmented input:
    /// `make_divisible(aug_e · e · in_width)`, `e` the block's own expand ratio.
    pub fn scaled(spec: &ArchSpec, stem: f64, stage: &[f64], head: f64, expand: &[f64]) -> Self {
        let base = spec.base_widths();
        let stem_w = scaled(base.stem, stem);
        let out: Vec<i64> = spec
            .blocks
            .iter()
            .zip(&base.out)
            .map(|(b, &o)| scaled(o, stage[b.stage]))
            .collect();
        let mid = spec
            .blocks
            .iter()
            .zip(&base.mid)
            .enumerate()
            .map(|(i, (b, &m))| {
                if !b.expand {
                    return m;
                }
                let in_w = if i == 0 { stem_w } else { out[i - 1] };
                scaled(m, expand[i] * in_w as f64 / b.in_c as f64)
            })
            .collect();
        Self {
            stem: stem_w,
            mid,
            out,
            head: base.head.map(|h| scaled(h, head)),
            active: base.active,
            kernel: base.kernel,
        }
    }

    /// Every count between the tiny model's (`base`) and `cap`'s.
    pub fn clamped(mut self, base: &Self, cap: &Self) -> Self {
        let clamp = |v: i64, lo: i64, hi: i64| v.min(hi).max(lo);
        self.stem = clamp(self.stem, base.stem, cap.stem);
        for i in 0..self.mid.len() {
            self.mid[i] = clamp(self.mid[i], base.mid[i], cap.mid[i]);
            self.out[i] = clamp(self.out[i], base.out[i], cap.out[i]);
        }
        if let (Some(h), Some(lo), Some(hi)) = (self.head, base.head, cap.head) {
            self.head = Some(clamp(h, lo, hi));
        }
        self
    }
}

impl ArchSpec {
    /// The tiny model's widths.
    pub fn base_widths(&self) -> Widths {
        let spec = self;
        Widths {
            stem: spec.stem_c,
            mid: spec.blocks.iter().map(|b| b.mid_c).collect(),
            out: spec.blocks.iter().map(|b| b.out_c).collect(),
            head: spec.head_c,
            active: spec.blocks.iter().map(|b| b.tiny).collect(),
            kernel: spec.blocks.iter().map(|b| b.kernel).collect(),
        }
    }

    /// The largest sub-model an augmentation config can sample.
    pub fn max_widths(&self, aug: &AugConfig) -> Widths {
        let spec = self;
        if aug.hybrid == Hybrid::None {
            return spec.base_widths();
        }
        let top = |v: &[f64]| v.iter().copied().fold(1.0, f64::max);
        let (e, w) = (top(&aug.expand), top(&aug.width));
        let widest = Widths::scaled(
            spec,
            w,
            &vec![w; spec.stages()],
            w,
            &vec![e; spec.blocks.len()],
        );
        match &spec.aug_cap {
            Some(cap) => Widths {
                active: vec![true; spec.blocks.len()],
                kernel: cap.kernel.clone(),
                ..widest.clamped(&spec.base_widths(), cap)
            },
            None => widest,
        }
    }
}

/// Operator settings shared by every layer of a net.
#[derive(Debug, Clone)]
pub struct OpSpec {
    pub kind: OpKind,
    pub mf_layers: MfLayers,
    pub weight_bits: i64,
    pub act_fixed_point: bool,
    pub remap: RemapKind,
    pub remap_bins: i64,
    pub remap_shift: bool,
    /// AdderNet's adaptive gradient scaling of Add calls.
    pub add_scale: GradScale,
    /// Initialise Add layers' stored weights at unit RMS (AdderNet's N(0,1) scale) instead of
    /// kaiming's.
    pub add_unit_init: bool,
    /// Add layers' shared tensors are stored at the multiplicative scale and rescaled for the
    /// Add view (`ops.add_storage = "mult"`).
    pub add_mult_storage: bool,
    /// The augmented passes' BN γ, β are their own (`aug.bn = "separate"`).
    pub separate_aug_bn: bool,
    /// SE convs take the block's operator (`ops.se = "mf"`); else they are Mult.
    pub se_mf: bool,
}

impl OpSpec {
    /// All layers multiplicative.
    pub fn mult() -> Self {
        Self {
            kind: OpKind::Mult,
            mf_layers: MfLayers::Body,
            weight_bits: 5,
            act_fixed_point: false,
            remap: RemapKind::None,
            remap_bins: 100,
            remap_shift: false,
            add_scale: GradScale::NONE,
            add_unit_init: false,
            add_mult_storage: false,
            separate_aug_bn: false,
            se_mf: false,
        }
    }

    pub fn from_config(c: &Config) -> Self {
        Self {
            kind: c.ops.kind,
            mf_layers: c.ops.mf_layers,
            weight_bits: c.ops.weight_bits,
            act_fixed_point: c.ops.act_fixed_point,
            remap: c.remap.kind,
            remap_bins: c.remap.bins,
            remap_shift: c.remap.shift,
            add_scale: GradScale {
                eta: c.ops.add_eta,
                relative: c.ops.add_eta_relative,
            },
            add_unit_init: c.ops.add_init == crate::spec::config::AddInit::Unit,
            add_mult_storage: c.ops.add_storage == crate::spec::config::AddStorage::Mult,
            separate_aug_bn: c.aug.bn == crate::spec::config::AugBn::Separate,
            se_mf: c.ops.se == crate::spec::config::SeOp::Mf,
        }
    }

    /// The operator of an SE conv of `block`.
    pub fn se_role(&self, block: &BlockSpec) -> OpKind {
        if self.se_mf {
            self.block_role(block, true)
        } else {
            OpKind::Mult
        }
    }

    /// The operator of a conv of `block` (`pointwise`: 1×1): SubNet-only blocks are Mult, since
    /// only the multiplicative augmented model runs them.
    pub fn block_role(&self, block: &BlockSpec, pointwise: bool) -> OpKind {
        if block.tiny {
            self.conv_role(false, pointwise)
        } else {
            OpKind::Mult
        }
    }

    /// The operator of a conv layer (`stem`: the first conv; `pointwise`: 1×1).
    pub fn conv_role(&self, stem: bool, pointwise: bool) -> OpKind {
        let mf = match self.mf_layers {
            MfLayers::Body => !stem,
            MfLayers::Pointwise => pointwise && !stem,
            MfLayers::All => true,
        };
        if mf { self.kind } else { OpKind::Mult }
    }

    /// The classifier's operator: MF only with `mf_layers = "all"`, and then Shift.
    pub fn classifier_role(&self) -> OpKind {
        if self.mf_layers == MfLayers::All && self.kind != OpKind::Mult {
            OpKind::Shift
        } else {
            OpKind::Mult
        }
    }
}

impl NasArch {
    /// The architecture as the project's model spec.
    pub fn to_spec(&self, in_channels: i64, resolution: i64, classes: i64) -> ArchSpec {
        let small = resolution <= 32;
        let w = |c: f64| make_divisible(c * 0.35, 8);
        let stem_c = w(32.0);
        let mut blocks = vec![BlockSpec {
            stage: 0,
            in_c: stem_c,
            out_c: w(16.0),
            mid_c: stem_c,
            kernel: 3,
            stride: 1,
            expand: false,
            tiny: true,
            shortcut: true,
            act: Act::Relu6,
            se: false,
        }];
        let mut in_c = w(16.0);
        for (i, (s, (base, stride))) in self.stages.iter().zip(STAGE_BASE).enumerate() {
            let out_c = make_divisible(base * 0.35 * s.width, 8);
            let stride = if i == 0 && small { 1 } else { stride };
            for (j, (&k, &e)) in s.kernels.iter().zip(&s.expands).enumerate() {
                blocks.push(BlockSpec {
                    stage: i + 1,
                    in_c,
                    out_c,
                    mid_c: in_c * e,
                    kernel: k,
                    stride: if j == 0 { stride } else { 1 },
                    expand: true,
                    tiny: true,
                    shortcut: true,
                    act: Act::Relu6,
                    se: false,
                });
                in_c = out_c;
            }
        }
        blocks.push(BlockSpec {
            stage: self.stages.len() + 1,
            in_c,
            out_c: 112,
            mid_c: in_c * 6,
            kernel: 3,
            stride: 1,
            expand: true,
            tiny: true,
            shortcut: true,
            act: Act::Relu6,
            se: false,
        });
        ArchSpec {
            in_channels,
            stem_c,
            stem_stride: if small { 1 } else { 2 },
            blocks,
            head_c: Some(448),
            stem_act: Act::Relu6,
            head_act: Act::Relu6,
            final_c: None,
            classes,
            aug_cap: None,
            seg: None,
        }
    }

    /// `self` (a TargetNet) inside the SubNet `sub` (`is_sub_model(self, sub)`), as one elastic
    /// model: per stage the TargetNet's blocks, then the SubNet's deeper blocks, which only
    /// augmented sub-models run (`tiny: false`; residual, at the TargetNet's stage width, with the
    /// SubNet's kernel and expand); and the SubNet's channel counts as the cap of augmented
    /// widths and kernels ([`ArchSpec::aug_cap`]): a shared block stores the SubNet's kernel and
    /// the TargetNet runs its centre (kernel nesting). `base_widths()` of the result is exactly
    /// the TargetNet.
    pub fn to_spec_within(
        &self,
        sub: &Self,
        (channels, resolution, classes): (i64, i64, i64),
    ) -> ArchSpec {
        let tiny = self.to_spec(channels, resolution, classes);
        let big = sub.to_spec(channels, resolution, classes);
        let in_stage = |spec: &ArchSpec, stage: usize| -> Vec<BlockSpec> {
            spec.blocks
                .iter()
                .filter(|b| b.stage == stage)
                .cloned()
                .collect()
        };
        let mut blocks = Vec::new();
        let mut cap = Widths {
            stem: big.stem_c,
            mid: Vec::new(),
            out: Vec::new(),
            head: big.head_c,
            active: Vec::new(),
            kernel: Vec::new(),
        };
        for stage in 0..tiny.stages() {
            let (t, b) = (in_stage(&tiny, stage), in_stage(&big, stage));
            for (j, sb) in b.iter().enumerate() {
                let block = match t.get(j) {
                    Some(tb) => tb.clone(),
                    None => {
                        let c = t.last().map_or(sb.out_c, |l| l.out_c);
                        BlockSpec {
                            stage,
                            in_c: c,
                            out_c: c,
                            mid_c: c * (sb.mid_c / sb.in_c),
                            kernel: sb.kernel,
                            stride: 1,
                            expand: sb.expand,
                            tiny: false,
                            shortcut: true,
                            act: sb.act,
                            se: sb.se,
                        }
                    }
                };
                cap.mid.push(sb.mid_c.max(block.mid_c));
                cap.out.push(sb.out_c.max(block.out_c));
                cap.active.push(true);
                cap.kernel.push(sb.kernel.max(block.kernel));
                blocks.push(block);
            }
        }
        ArchSpec {
            blocks,
            aug_cap: Some(cap),
            ..tiny
        }
    }
}

/// AdderNet's adaptive gradient scaling (method.md §2), applied by the op's backward to dF of the
/// weight that call used, per call: `dF ← η·√numel(F)·dF / max(‖dF‖₂, 1e-12)`, and with `relative`
/// also `× rms(F)`, so that an update's size relative to the weights is AdderNet's with its N(0,1)
/// weights whatever their scale. A multiplicative forward of the same shared tensor is untouched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradScale {
    /// η; 0 leaves dF as the formula gives it.
    pub eta: f64,
    pub relative: bool,
}

impl GradScale {
    /// The raw gradients `X − F` (no scaling).
    pub const NONE: Self = Self {
        eta: 0.0,
        relative: false,
    };
}
