//! Elastic models: `micro`, `mbv2-tiny` and `mcunet` (method.md §3).
//!
//! Every layer stores its *maximum* width and runs a leading-channel slice of it
//! (`W_full[:c_out, :c_in]`, with BN parameters and running statistics sliced alike), so a sub-model
//! is only a choice of widths: [`Widths`]. The tiny model is [`Net::base_widths`]; augmented
//! sub-models (a later issue) choose larger per-block expand and per-stage width factors up to the
//! maxima given at construction.
//!
//! Variable names under the `VarStore` are stable checkpoint keys:
//! `stem.conv.weight`, `blocks.3.dw.weight`, `blocks.3.dw_bn.running_mean`, `fc.weight`, ...

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::config::ModelName;

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
}

impl BlockSpec {
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.in_c == self.out_c
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
    pub classes: i64,
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
}

impl ArchSpec {
    /// The named architecture for `in_channels`-channel `resolution`-pixel inputs and `classes` classes.
    pub fn named(name: ModelName, in_channels: i64, resolution: i64, classes: i64) -> Self {
        // For inputs of 32 px or less, the stem and the first downsampling stage use stride 1.
        let small = resolution <= 32;
        let first_down = if small { 1 } else { 2 };
        let stem_stride = if small { 1 } else { 2 };
        let (stem_c, plans, head_c) = match name {
            ModelName::Micro => (
                16,
                vec![plan(24, &[3], &[3], 2), plan(32, &[3], &[3], 2)],
                Some(64),
            ),
            ModelName::Mbv2Tiny => {
                let w = |c: f64| make_divisible(c * 0.35, 8);
                let mut plans = vec![
                    plan(w(16.0), &[1], &[3], 1),
                    plan(w(24.0), &[6; 2], &[3; 2], first_down),
                ];
                for (c, n, s) in [(32.0, 3, 2), (64.0, 4, 2), (96.0, 3, 1), (160.0, 3, 2)] {
                    plans.push(plan(w(c), &vec![6; n], &vec![3; n], s));
                }
                plans.push(plan(112, &[6], &[3], 1)); // head MBConv(56→112, k3, e6)
                (w(32.0), plans, Some(448))
            }
            ModelName::Mcunet => (
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
        let mut blocks = Vec::new();
        let mut in_c = stem_c;
        for (stage, p) in plans.iter().enumerate() {
            for (i, (&e, &k)) in p.expands.iter().zip(&p.kernels).enumerate() {
                blocks.push(BlockSpec {
                    stage,
                    in_c,
                    out_c: p.out_c,
                    mid_c: in_c * e,
                    kernel: k,
                    stride: if i == 0 { p.stride } else { 1 },
                    expand: e != 1,
                });
                in_c = p.out_c;
            }
        }
        Self {
            in_channels,
            stem_c,
            stem_stride,
            blocks,
            head_c,
            classes,
        }
    }

    pub fn stages(&self) -> usize {
        self.blocks.iter().map(|b| b.stage + 1).max().unwrap_or(0)
    }
}

fn plan(out_c: i64, expands: &[i64], kernels: &[i64], stride: i64) -> StagePlan {
    StagePlan {
        out_c,
        expands: expands.to_vec(),
        kernels: kernels.to_vec(),
        stride,
    }
}

/// The channel counts of one sub-model: per block (mid, out), plus stem and head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widths {
    pub stem: i64,
    pub mid: Vec<i64>,
    pub out: Vec<i64>,
    pub head: Option<i64>,
}

/// A convolution that stores its maximum width and runs a leading slice.
#[derive(Debug)]
pub struct ElasticConv {
    pub weight: Tensor,
    pub kernel: i64,
    pub stride: i64,
    pub depthwise: bool,
}

impl ElasticConv {
    fn new(
        p: &nn::Path<'_>,
        max_in: i64,
        max_out: i64,
        kernel: i64,
        stride: i64,
        depthwise: bool,
    ) -> Self {
        let in_per_group = if depthwise { 1 } else { max_in };
        let weight = p.var(
            "weight",
            &[max_out, in_per_group, kernel, kernel],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        );
        Self {
            weight,
            kernel,
            stride,
            depthwise,
        }
    }

    /// Run on `x` ([N, c_in, H, W]) producing `out` channels (depthwise: `out` must equal `c_in`).
    pub fn forward(&self, x: &Tensor, out: i64) -> Tensor {
        let c_in = x.size()[1];
        let pad = self.kernel / 2;
        if self.depthwise {
            let w = self.weight.narrow(0, 0, c_in);
            x.conv2d(
                &w,
                None::<Tensor>,
                [self.stride, self.stride],
                [pad, pad],
                [1, 1],
                c_in,
            )
        } else {
            let w = self.weight.narrow(0, 0, out).narrow(1, 0, c_in);
            x.conv2d(
                &w,
                None::<Tensor>,
                [self.stride, self.stride],
                [pad, pad],
                [1, 1],
                1,
            )
        }
    }
}

/// Batch norm whose parameters and running statistics are sliced to the input's channel count.
#[derive(Debug)]
pub struct ElasticBn {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl ElasticBn {
    fn new(p: &nn::Path<'_>, max_c: i64) -> Self {
        Self {
            weight: p.var("weight", &[max_c], Init::Const(1.0)),
            bias: p.var("bias", &[max_c], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[max_c]),
            running_var: p.ones_no_train("running_var", &[max_c]),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let c = x.size()[1];
        x.batch_norm(
            Some(self.weight.narrow(0, 0, c)),
            Some(self.bias.narrow(0, 0, c)),
            Some(self.running_mean.narrow(0, 0, c)),
            Some(self.running_var.narrow(0, 0, c)),
            train,
            0.1,
            1e-5,
            false,
        )
    }
}

#[derive(Debug)]
struct Block {
    spec: BlockSpec,
    expand: Option<(ElasticConv, ElasticBn)>,
    dw: ElasticConv,
    dw_bn: ElasticBn,
    project: ElasticConv,
    project_bn: ElasticBn,
}

/// A network of elastic layers; `forward` runs the sub-model given by a [`Widths`].
#[derive(Debug)]
pub struct Net {
    pub spec: ArchSpec,
    stem: ElasticConv,
    stem_bn: ElasticBn,
    blocks: Vec<Block>,
    head: Option<(ElasticConv, ElasticBn)>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    pub max: Widths,
}

impl Net {
    /// Build `spec` with layers sized for `max` widths (use `spec`'s own widths for a plain model).
    pub fn new(root: &nn::Path<'_>, spec: ArchSpec, max: Widths) -> Self {
        let stem_p = root / "stem";
        let stem = ElasticConv::new(
            &(&stem_p / "conv"),
            spec.in_channels,
            max.stem,
            3,
            spec.stem_stride,
            false,
        );
        let stem_bn = ElasticBn::new(&(&stem_p / "bn"), max.stem);
        let mut blocks = Vec::new();
        let mut prev = max.stem;
        let bp = root / "blocks";
        for (i, b) in spec.blocks.iter().enumerate() {
            let p = &bp / i;
            let (mid, out) = (max.mid[i], max.out[i]);
            let expand = b.expand.then(|| {
                (
                    ElasticConv::new(&(&p / "expand"), prev, mid, 1, 1, false),
                    ElasticBn::new(&(&p / "expand_bn"), mid),
                )
            });
            let dw_c = if b.expand { mid } else { prev };
            blocks.push(Block {
                spec: b.clone(),
                expand,
                dw: ElasticConv::new(&(&p / "dw"), dw_c, dw_c, b.kernel, b.stride, true),
                dw_bn: ElasticBn::new(&(&p / "dw_bn"), dw_c),
                project: ElasticConv::new(&(&p / "project"), dw_c, out, 1, 1, false),
                project_bn: ElasticBn::new(&(&p / "project_bn"), out),
            });
            prev = out;
        }
        let head = max.head.map(|h| {
            let p = root / "head";
            (
                ElasticConv::new(&(&p / "conv"), prev, h, 1, 1, false),
                ElasticBn::new(&(&p / "bn"), h),
            )
        });
        let features = max.head.unwrap_or(prev);
        let fc = root / "fc";
        let bound = 1.0 / (features as f64).sqrt();
        let fc_weight = fc.var(
            "weight",
            &[spec.classes, features],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        );
        let fc_bias = fc.var(
            "bias",
            &[spec.classes],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        Self {
            spec,
            stem,
            stem_bn,
            blocks,
            head,
            fc_weight,
            fc_bias,
            max,
        }
    }

    /// A plain (non-augmented) model: maximum widths are the base widths.
    pub fn plain(root: &nn::Path<'_>, spec: ArchSpec) -> Self {
        let max = Self::base_widths(&spec);
        Self::new(root, spec, max)
    }

    /// The tiny model's widths.
    pub fn base_widths(spec: &ArchSpec) -> Widths {
        Widths {
            stem: spec.stem_c,
            mid: spec.blocks.iter().map(|b| b.mid_c).collect(),
            out: spec.blocks.iter().map(|b| b.out_c).collect(),
            head: spec.head_c,
        }
    }

    /// Logits of the sub-model `w` for a batch `x` [N, C, H, W].
    pub fn forward(&self, x: &Tensor, w: &Widths, train: bool) -> Tensor {
        let mut x = self
            .stem_bn
            .forward(&self.stem.forward(x, w.stem), train)
            .relu6();
        for (i, b) in self.blocks.iter().enumerate() {
            let mut h = match &b.expand {
                Some((conv, bn)) => bn.forward(&conv.forward(&x, w.mid[i]), train).relu6(),
                None => x.shallow_clone(),
            };
            let c = h.size()[1];
            h = b.dw_bn.forward(&b.dw.forward(&h, c), train).relu6();
            h = b
                .project_bn
                .forward(&b.project.forward(&h, w.out[i]), train);
            x = if b.spec.residual() && h.size() == x.size() {
                h + &x
            } else {
                h
            };
        }
        if let (Some((conv, bn)), Some(hc)) = (&self.head, w.head) {
            x = bn.forward(&conv.forward(&x, hc), train).relu6();
        }
        let pooled = x.mean_dim(&[2i64, 3][..], false, Kind::Float);
        let c = pooled.size()[1];
        pooled.linear(&self.fc_weight.narrow(1, 0, c), Some(&self.fc_bias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn mobilenet_channel_rounding() {
        let got: Vec<i64> = [32.0, 16.0, 24.0, 32.0, 64.0, 96.0, 160.0, 320.0]
            .iter()
            .map(|c| make_divisible(c * 0.35, 8))
            .collect();
        assert_eq!(got, vec![16, 8, 8, 16, 24, 32, 56, 112]);
    }

    #[test]
    fn named_architectures_have_the_documented_shape() {
        let m = ArchSpec::named(ModelName::Mbv2Tiny, 3, 32, 10);
        assert_eq!(m.stem_c, 16);
        assert_eq!(m.blocks.len(), 1 + 2 + 3 + 4 + 3 + 3 + 1);
        let head = m.blocks.last().expect("blocks");
        assert_eq!(
            (head.in_c, head.mid_c, head.out_c, head.kernel),
            (56, 336, 112, 3)
        );
        assert_eq!(m.head_c, Some(448));
        assert_eq!(
            (m.stem_stride, m.blocks[1].stride),
            (1, 1),
            "32 px keeps stride 1 early"
        );
        let big = ArchSpec::named(ModelName::Mbv2Tiny, 3, 224, 1000);
        assert_eq!((big.stem_stride, big.blocks[1].stride), (2, 2));

        let mc = ArchSpec::named(ModelName::Mcunet, 3, 32, 100);
        let outs: Vec<i64> = mc.blocks.iter().map(|b| b.out_c).collect();
        assert_eq!(
            outs,
            vec![
                8, 16, 16, 16, 16, 24, 24, 24, 40, 40, 40, 48, 48, 48, 96, 96, 96, 160
            ]
        );
        let kernels: Vec<i64> = mc.blocks[1..5].iter().map(|b| b.kernel).collect();
        assert_eq!(kernels, vec![7, 3, 7, 5]);
        assert_eq!(mc.blocks.last().map(|b| b.mid_c), Some(480));
        assert_eq!(mc.head_c, None);
    }

    #[test]
    fn forward_shapes_and_final_map_size() {
        for (name, c) in [
            (ModelName::Micro, 3),
            (ModelName::Mbv2Tiny, 1),
            (ModelName::Mcunet, 3),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Net::plain(&vs.root(), ArchSpec::named(name, c, 32, 10));
            let x = Tensor::randn([2, c, 32, 32], (Kind::Float, Device::Cpu));
            let w = Net::base_widths(&net.spec);
            let y = net.forward(&x, &w, true);
            assert_eq!(y.size(), vec![2, 10], "{name:?}");
            let total_stride: i64 =
                net.spec.stem_stride * net.spec.blocks.iter().map(|b| b.stride).product::<i64>();
            assert!(
                32 / total_stride >= 2,
                "{name:?}: last feature map at least 2×2"
            );
        }
    }

    #[test]
    fn sub_model_uses_the_leading_slice() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ArchSpec::named(ModelName::Micro, 3, 32, 10);
        let base = Net::base_widths(&spec);
        let max = Widths {
            stem: base.stem * 2,
            mid: base.mid.iter().map(|m| m * 2).collect(),
            out: base.out.iter().map(|o| o * 2).collect(),
            head: base.head.map(|h| h * 2),
        };
        let wide = Net::new(&vs.root(), spec.clone(), max);
        // A plain net whose weights are copied from the leading slices computes the same function.
        let vs2 = nn::VarStore::new(Device::Cpu);
        let tiny = Net::plain(&vs2.root(), spec);
        tch::no_grad(|| {
            let wide_vars = vs.variables();
            for (name, mut t) in vs2.variables() {
                let full = &wide_vars[&name];
                let mut src = full.shallow_clone();
                for (d, &n) in t.size().iter().enumerate() {
                    src = src.narrow(d as i64, 0, n);
                }
                t.copy_(&src);
            }
        });
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let a = wide.forward(&x, &base, false);
        let b = tiny.forward(&x, &Net::base_widths(&tiny.spec), false);
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
    }
}
