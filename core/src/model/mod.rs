//! Elastic models: `micro`, `mbv2-tiny`, `mcunet`, `proxyless-w0.35` and `mbv3-w0.35` (method.md §3;
//! the last with h-swish, squeeze-and-excitation and a dense layer after pooling).
//!
//! Every layer stores its *maximum* width and runs a leading-channel slice of it
//! (`W_full[:c_out, :c_in]`, with BN parameters and running statistics sliced alike), so a sub-model
//! is only a choice of widths: [`Widths`]. The tiny model is `ArchSpec::base_widths`; augmented
//! sub-models (`aug.expand` and `aug.width`, or a NAS SubNet given as `aug.arch`) choose larger
//! per-block expand and per-stage width factors up to the maxima given at construction.
//!
//! Each conv has a *role* (Mult, Shift or Add, from `ops.kind` and `ops.mf_layers`) and every
//! forward pass an [`Exec`] mode that says how MF layers compute in it (tiny, augmented
//! multiplicative, augmented MF, or split), which is how `aug.hybrid` is realised.
//!
//! Variable names under the `VarStore` are stable checkpoint keys:
//! `stem.conv.weight`, `blocks.3.dw.weight`, `blocks.3.dw_bn.running_mean`, `fc.weight`, ...
//!
//! Layout: [`elastic`] (the sliced conv and BN, the [`Exec`] modes), [`sort`] (channel sorting),
//! [`program`] (the tiny model as the flat program export writes); the [`Net`] here.

mod elastic;
mod program;
mod seg;
mod sort;

pub use elastic::{ElasticBn, ElasticConv, Exec, LayerWeights, activate};
pub use program::{Program, Step, step_act};
pub use seg::upsample;
pub use sort::Permutation;

use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

use crate::ops::layout;
use crate::rng::Rng;
use crate::spec::arch::{Act, ArchSpec, BlockSpec, GradScale, OpSpec, Widths, se_channels};
use crate::spec::config::{AugConfig, OpKind};

use elastic::{BN_MOMENTUM, ConvShape};

#[derive(Debug)]
struct Block {
    spec: BlockSpec,
    expand: Option<(ElasticConv, ElasticBn)>,
    dw: ElasticConv,
    dw_bn: ElasticBn,
    project: ElasticConv,
    project_bn: ElasticBn,
    se: Option<Se>,
}

/// Squeeze-and-excitation on a block's mid channels: two 1×1 convs with biases around the
/// pooled features, the second's h-sigmoid gating every channel. Its hidden width follows the
/// mid width a sub-model runs ([`se_channels`]), a leading slice like every other layer's.
#[derive(Debug)]
struct Se {
    reduce: ElasticConv,
    reduce_bias: Tensor,
    expand: ElasticConv,
    expand_bias: Tensor,
}

impl Se {
    fn new(p: &nn::Path<'_>, (max_mid, tiny_mid): (i64, i64), role: OpKind, ops: &OpSpec) -> Self {
        let (max_h, tiny_h) = (se_channels(max_mid), se_channels(tiny_mid));
        let (rp, ep) = (p / "reduce", p / "expand");
        Self {
            reduce: ElasticConv::new(
                &rp,
                ConvShape::pointwise(max_mid, max_h, (tiny_mid, tiny_h), role),
                ops,
            ),
            reduce_bias: rp.var("bias", &[max_h], Init::Const(0.0)),
            expand: ElasticConv::new(
                &ep,
                ConvShape::pointwise(max_h, max_mid, (tiny_h, tiny_mid), role),
                ops,
            ),
            expand_bias: ep.var("bias", &[max_mid], Init::Const(0.0)),
        }
    }

    /// `x` [N, C, H, W] gated per channel.
    fn forward(&self, x: &Tensor, exec: Exec) -> Result<Tensor, TchError> {
        let c = x.size()[1];
        let h = se_channels(c);
        let bias = |b: &Tensor, n: i64| b.narrow(0, 0, n).view([1, n, 1, 1]);
        let pooled = x.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
        let r = (self.reduce.forward(&pooled, h, exec)? + bias(&self.reduce_bias, h)).f_relu()?;
        let g = (self.expand.forward(&r, c, exec)? + bias(&self.expand_bias, c)).f_hardsigmoid()?;
        x.f_mul(&g)
    }
}

impl Block {
    /// Block `i` of `max` from its spec, on an input of `(max, tiny)` channels.
    fn new(
        p: &nn::Path<'_>,
        b: &BlockSpec,
        (prev, prev_tiny): (i64, i64),
        max: &Widths,
        i: usize,
        ops: &OpSpec,
    ) -> Self {
        let (mid, out) = (max.mid[i], max.out[i]);
        let pw = ops.block_role(b, true);
        let expand = b.expand.then(|| {
            (
                ElasticConv::new(
                    &(p / "expand"),
                    ConvShape::pointwise(prev, mid, (prev_tiny, b.mid_c), pw),
                    ops,
                ),
                ElasticBn::new(&(p / "expand_bn"), mid, ops.separate_aug_bn),
            )
        });
        let (dw_c, dw_tiny) = if b.expand {
            (mid, b.mid_c)
        } else {
            (prev, prev_tiny)
        };
        // The stored kernel is the largest any sub-model runs; the tiny model runs its centre.
        let mut dw = ElasticConv::new(
            &(p / "dw"),
            ConvShape {
                max_in: dw_c,
                max_out: dw_c,
                kernel: max.kernel[i].max(b.kernel),
                stride: b.stride,
                depthwise: true,
                tiny: (dw_tiny, dw_tiny),
                role: ops.block_role(b, b.kernel == 1),
            },
            ops,
        );
        dw.tiny_kernel = b.kernel;
        Self {
            spec: b.clone(),
            expand,
            dw,
            dw_bn: ElasticBn::new(&(p / "dw_bn"), dw_c, ops.separate_aug_bn),
            project: ElasticConv::new(
                &(p / "project"),
                ConvShape::pointwise(dw_c, out, (dw_tiny, b.out_c), pw),
                ops,
            ),
            project_bn: ElasticBn::new(&(p / "project_bn"), out, ops.separate_aug_bn),
            se: b
                .se
                .then(|| Se::new(&(p / "se"), (dw_c, dw_tiny), ops.se_role(b), ops)),
        }
    }
}

/// The classifier on `(max, tiny)` features: a 1×1 "conv" weight and a bias (PyTorch's init).
fn classifier(
    p: &nn::Path<'_>,
    (features, features_tiny): (i64, i64),
    classes: i64,
    ops: &OpSpec,
) -> (ElasticConv, Tensor) {
    let fc = ElasticConv::new(
        p,
        ConvShape::pointwise(
            features,
            classes,
            (features_tiny, classes),
            ops.classifier_role(),
        ),
        ops,
    );
    let bound = 1.0 / (features as f64).sqrt();
    let bias = p.var(
        "bias",
        &[classes],
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    );
    (fc, bias)
}

/// An Add layer's stored weight, as [`Net::add_weights`] lists them.
pub struct AddWeight {
    /// The variable's name.
    pub name: String,
    pub weight: Tensor,
    /// The gradient scaling its Add calls apply.
    pub scale: GradScale,
    /// The factor from the stored tensor to the Add view (1 unless `ops.add_storage = "mult"`).
    pub view: f64,
}

/// A network of elastic layers; `forward` runs the sub-model given by a [`Widths`].
#[derive(Debug)]
pub struct Net {
    pub spec: ArchSpec,
    stem: ElasticConv,
    stem_bn: ElasticBn,
    blocks: Vec<Block>,
    head: Option<(ElasticConv, ElasticBn)>,
    /// The 1×1 conv with bias on the pooled features (`ArchSpec::final_c`), Mult.
    final_conv: Option<(ElasticConv, Tensor)>,
    /// The segmentation head (`spec.seg`), whose high branch's classifier is `fc`.
    seg: Option<seg::SegLayers>,
    /// The classifier, stored as a 1×1 "conv" weight [classes, features, 1, 1].
    fc: ElasticConv,
    fc_bias: Tensor,
    pub max: Widths,
    /// Whether any layer's role is Add (fixed at construction).
    has_add: bool,
}

impl Net {
    /// Build `spec` with layers sized for `max` widths and operators from `ops`.
    pub fn new(root: &nn::Path<'_>, spec: ArchSpec, max: Widths, ops: &OpSpec) -> Self {
        let base = spec.base_widths();
        let stem_p = root / "stem";
        let stem = ElasticConv::new(
            &(&stem_p / "conv"),
            ConvShape {
                max_in: spec.in_channels,
                max_out: max.stem,
                kernel: 3,
                stride: spec.stem_stride,
                depthwise: false,
                tiny: (spec.in_channels, base.stem),
                role: ops.conv_role(true, false),
            },
            ops,
        );
        let stem_bn = ElasticBn::new(&(&stem_p / "bn"), max.stem, ops.separate_aug_bn);
        let mut blocks = Vec::new();
        let mut input = (max.stem, base.stem);
        for (i, b) in spec.blocks.iter().enumerate() {
            blocks.push(Block::new(&(root / "blocks" / i), b, input, &max, i, ops));
            input = (max.out[i], b.out_c);
        }
        let (prev, prev_tiny) = input;
        let head = max.head.zip(base.head).map(|(h, ht)| {
            let p = root / "head";
            let role = ops.conv_role(false, true);
            (
                ElasticConv::new(
                    &(&p / "conv"),
                    ConvShape::pointwise(prev, h, (prev_tiny, ht), role),
                    ops,
                ),
                ElasticBn::new(&(&p / "bn"), h, ops.separate_aug_bn),
            )
        });
        let pooled = (max.head.unwrap_or(prev), base.head.unwrap_or(prev_tiny));
        // Not width-augmented: the augmented head feeds it more channels, its output stays.
        let final_conv = spec
            .final_c
            .map(|f| classifier(&(root / "final"), pooled, f, &OpSpec::mult()));
        let seg = spec.seg.map(|head| {
            let skip = (
                spec.tap_channels(&max, head.tap),
                spec.tap_channels(&base, head.tap),
            );
            seg::SegLayers::new(&(root / "seg"), head, (pooled, skip), spec.classes, ops)
        });
        let features = match (spec.final_c, &seg) {
            (_, Some(s)) => (s.spec.channels, s.spec.channels),
            (Some(f), None) => (f, f),
            (None, None) => pooled,
        };
        let (fc, fc_bias) = classifier(&(root / "fc"), features, spec.classes, ops);
        let mut net = Self {
            spec,
            stem,
            stem_bn,
            blocks,
            head,
            final_conv,
            seg,
            fc,
            fc_bias,
            max,
            has_add: false,
        };
        net.has_add = net
            .convs()
            .iter()
            .any(|c| c.role == crate::spec::config::OpKind::Add);
        net
    }

    /// A plain multiplicative model: maximum widths are the base widths.
    pub fn plain(root: &nn::Path<'_>, spec: ArchSpec) -> Self {
        let max = spec.base_widths();
        Self::new(root, spec, max, &OpSpec::mult())
    }

    /// One augmented sub-model: every block draws an expand factor, and (while `width` is on) the
    /// stem, every stage and the head draw a width factor. Inside a SubNet (`aug.arch`) the widths
    /// are capped at the SubNet's, and every stage with SubNet-only blocks draws how many of them
    /// run (0 to all, leading ones first: elastic depth).
    pub fn sample_widths(&self, aug: &AugConfig, rng: &mut Rng, width: bool) -> Widths {
        let stages = self.spec.stages();
        let mut pick = |v: &[f64]| v[rng.below(v.len())];
        // [stem, stage 0, …, stage S−1, head]
        let w: Vec<f64> = (0..stages + 2)
            .map(|_| if width { pick(&aug.width) } else { 1.0 })
            .collect();
        let expand: Vec<f64> = (0..self.spec.blocks.len())
            .map(|_| pick(&aug.expand))
            .collect();
        let widths = Widths::scaled(&self.spec, w[0], &w[1..=stages], w[stages + 1], &expand);
        let Some(cap) = &self.spec.aug_cap else {
            return widths;
        };
        let base = self.spec.base_widths();
        let mut widths = widths.clamped(&base, cap);
        for (i, k) in widths.kernel.iter_mut().enumerate() {
            // Any odd kernel from the tiny model's to the SubNet's.
            let choices = (cap.kernel[i] - base.kernel[i]) / 2 + 1;
            if choices > 1 {
                *k = base.kernel[i] + 2 * rng.below(choices as usize) as i64;
            }
        }
        for stage in 0..stages {
            let extra: Vec<usize> = (0..self.spec.blocks.len())
                .filter(|&i| self.spec.blocks[i].stage == stage && !self.spec.blocks[i].tiny)
                .collect();
            if !extra.is_empty() {
                let depth = rng.below(extra.len() + 1);
                for &i in &extra[..depth] {
                    widths.active[i] = true;
                }
            }
        }
        widths
    }

    /// Whether a pass in `exec` runs any Add layer through the Add operator.
    fn runs_add(&self, exec: Exec) -> bool {
        exec != Exec::Mult && self.has_add
    }

    /// Logits of the sub-model `w` for a batch `x` [N, C, H, W]: [N, classes], or with a
    /// segmentation head [N, classes, H, W]. A pass without Add layers runs channels-last on
    /// the CPU ([`layout`]).
    pub fn forward(
        &self,
        x: &Tensor,
        w: &Widths,
        train: bool,
        exec: Exec,
    ) -> Result<Tensor, TchError> {
        let x = if layout::pays(x, self.runs_add(exec)) {
            layout::channels_last(x)?
        } else {
            x.shallow_clone()
        };
        let size = [x.size()[2], x.size()[3]];
        let mut x = self.stem_bn.forward(
            &self.stem.forward(&x, w.stem, exec)?,
            train,
            self.spec.stem_act,
            exec,
        )?;
        let tap = self.seg.as_ref().map(|s| s.spec.tap);
        let mut skip = (tap == Some(None)).then(|| x.shallow_clone());
        for (i, b) in self.blocks.iter().enumerate() {
            if !w.active[i] {
                continue;
            }
            let act = b.spec.act;
            let mut h = match &b.expand {
                Some((conv, bn)) => {
                    bn.forward(&conv.forward(&x, w.mid[i], exec)?, train, act, exec)?
                }
                None => x.shallow_clone(),
            };
            let c = h.size()[1];
            h = b.dw_bn.forward(
                &b.dw.forward_kernel(&h, c, w.kernel[i], exec)?,
                train,
                act,
                exec,
            )?;
            if let Some(se) = &b.se {
                h = se.forward(&h, exec)?;
            }
            h = b.project_bn.forward(
                &b.project.forward(&h, w.out[i], exec)?,
                train,
                Act::None,
                exec,
            )?;
            x = if b.spec.residual() && h.size() == x.size() {
                h + &x
            } else {
                h
            };
            if tap == Some(Some(i)) {
                skip = Some(x.shallow_clone());
            }
        }
        if let (Some((conv, bn)), Some(hc)) = (&self.head, w.head) {
            x = bn.forward(
                &conv.forward(&x, hc, exec)?,
                train,
                self.spec.head_act,
                exec,
            )?;
        }
        if let (Some(seg), Some(skip)) = (&self.seg, &skip) {
            return seg.forward((&x, skip), (&self.fc, &self.fc_bias), size, train, exec);
        }
        let mut pooled = x.f_mean_dim(&[2i64, 3][..], true, Kind::Float)?;
        if let (Some((conv, bias)), Some(f)) = (&self.final_conv, self.spec.final_c) {
            let y = conv.forward(&pooled, f, Exec::Mult)? + bias.view([1, f, 1, 1]);
            pooled = elastic::activate(&y, Act::HSwish)?;
        }
        let logits = self.fc.forward(&pooled, self.spec.classes, exec)?;
        Ok(logits.flatten(1, -1) + &self.fc_bias)
    }

    fn convs(&self) -> Vec<&ElasticConv> {
        let mut v = vec![&self.stem];
        for b in &self.blocks {
            v.extend(b.expand.as_ref().map(|(c, _)| c));
            v.push(&b.dw);
            v.extend(
                b.se.as_ref()
                    .map(|se| [&se.reduce, &se.expand])
                    .into_iter()
                    .flatten(),
            );
            v.push(&b.project);
        }
        v.extend(self.head.as_ref().map(|(c, _)| c));
        v.extend(self.final_conv.as_ref().map(|(c, _)| c));
        v.extend(self.seg.iter().flat_map(seg::SegLayers::convs));
        v.push(&self.fc);
        v
    }

    fn bns(&self) -> Vec<&ElasticBn> {
        let mut v = vec![&self.stem_bn];
        for b in &self.blocks {
            v.extend(b.expand.as_ref().map(|(_, n)| n));
            v.push(&b.dw_bn);
            v.push(&b.project_bn);
        }
        v.extend(self.head.as_ref().map(|(_, n)| n));
        v.extend(self.seg.as_ref().map(|s| &s.cbr_bn));
        v
    }

    /// The stored weights of the Add layers.
    pub fn add_weights(&self) -> Vec<AddWeight> {
        self.convs()
            .into_iter()
            .filter(|c| c.role == crate::spec::config::OpKind::Add)
            .map(|c| AddWeight {
                name: format!("{}.weight", c.name),
                weight: c.weight.shallow_clone(),
                scale: c.add_scale,
                view: c.add_view(),
            })
            .collect()
    }

    /// Add layers: (name, stored weight, numel of the tiny model's slice), for tests of
    /// AdderNet's gradient scaling.
    #[cfg(test)]
    pub(crate) fn add_layers(&self) -> Vec<(String, Tensor, i64)> {
        self.convs()
            .into_iter()
            .filter(|c| c.role == crate::spec::config::OpKind::Add)
            .map(|c| {
                let tiny = c.tiny_slice(c.tiny.0, c.tiny.1).numel() as i64;
                (c.name.clone(), c.weight.shallow_clone(), tiny)
            })
            .collect()
    }

    /// Discrepancy views of every MF layer.
    pub fn mf_weights(&self) -> Vec<LayerWeights> {
        self.convs()
            .into_iter()
            .filter_map(ElasticConv::weights_view)
            .collect()
    }

    /// Σ over remapped layers of KL(remapped tiny weights ‖ fitted Laplace); `None` if no layer remaps.
    pub fn remap_kl(&self, bins: i64) -> Option<Tensor> {
        self.convs()
            .into_iter()
            .filter_map(|c| c.remap_kl(bins))
            .reduce(|a, b| a + b)
    }

    /// The tiny MF model materialised for export, in execution order: remapped (and for Shift,
    /// power-of-two) weights; BN folded into Mult convs and kept as a per-channel affine after MF
    /// ones (folding would break their weights' form).
    pub fn tiny_program(&self) -> Program {
        tch::no_grad(|| {
            let base = self.spec.base_widths();
            let mut p = Program::default();
            let mut c = self.spec.in_channels;
            p.conv(
                &self.stem,
                &self.stem_bn,
                (c, base.stem),
                self.spec.stem_act,
            );
            c = base.stem;
            let tap = self.seg.as_ref().map(|s| s.spec.tap);
            if tap == Some(None) {
                p.steps.push(Step::Save);
            }
            for (i, b) in self.blocks.iter().enumerate() {
                if !b.spec.tiny {
                    continue;
                }
                if b.spec.residual() {
                    p.steps.push(Step::Save);
                }
                if let Some((conv, bn)) = &b.expand {
                    p.conv(conv, bn, (c, base.mid[i]), b.spec.act);
                    c = base.mid[i];
                }
                p.conv(&b.dw, &b.dw_bn, (c, c), b.spec.act);
                if let Some(se) = &b.se {
                    p.se(
                        &format!("blocks.{i}.se"),
                        (&se.reduce, &se.reduce_bias),
                        (&se.expand, &se.expand_bias),
                        (c, se_channels(c)),
                    );
                }
                p.conv(&b.project, &b.project_bn, (c, base.out[i]), Act::None);
                c = base.out[i];
                if b.spec.residual() {
                    p.steps.push(Step::AddSaved);
                }
                if tap == Some(Some(i)) {
                    p.steps.push(Step::Save);
                }
            }
            if let (Some((conv, bn)), Some(h)) = (&self.head, base.head) {
                p.conv(conv, bn, (c, h), self.spec.head_act);
                c = h;
            }
            if let Some(seg) = &self.seg {
                let skip = self.spec.tap_channels(&base, seg.spec.tap);
                seg.program(&mut p, (&self.fc, &self.fc_bias), (c, skip));
                return p;
            }
            p.steps.push(Step::Pool);
            if let (Some((conv, bias)), Some(f)) = (&self.final_conv, self.spec.final_c) {
                p.linear(conv, bias, (c, f), Act::HSwish);
                c = f;
            }
            p.linear(&self.fc, &self.fc_bias, (c, self.spec.classes), Act::None);
            p
        })
    }

    /// Reset BN running statistics and switch their momentum (`None`: back to the default).
    pub fn reset_bn_stats(&self) {
        tch::no_grad(|| {
            for bn in self.bns() {
                let _ = bn.running_mean.shallow_clone().fill_(0.0);
                let _ = bn.running_var.shallow_clone().fill_(1.0);
            }
        });
    }

    /// Per BN layer, the largest |running mean| / running σ over its channels: how far from 0,
    /// in units of their spread, the values it normalises sit (large behind Add layers, whose
    /// outputs are negative L1 distances).
    pub fn bn_offsets(&self) -> Vec<(String, f64)> {
        tch::no_grad(|| {
            self.bns()
                .into_iter()
                .map(|bn| {
                    let sd = (&bn.running_var + elastic::BN_EPS).sqrt();
                    let r = (bn.running_mean.abs() / sd).max().double_value(&[]);
                    (bn.name.clone(), r)
                })
                .collect()
        })
    }

    pub fn set_bn_momentum(&self, momentum: Option<f64>) {
        for bn in self.bns() {
            bn.momentum.set(momentum.unwrap_or(BN_MOMENTUM));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::adder;
    use crate::spec::arch::{make_divisible, scaled};
    use crate::spec::config::{MfLayers, ModelName, OpKind, RemapKind};
    use tch::Device;

    /// An Add layer's outputs sit far from 0 with a small spread (here 3·10⁶ away, σ 0.5). The
    /// evaluation BN must normalise them as float64 arithmetic on the same float32 inputs and
    /// statistics does; ATen's inference formula x·a + (b − mean·a) loses the spread to
    /// cancellation.
    #[test]
    fn evaluation_bn_resolves_a_small_spread_far_from_zero() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = ElasticBn::new(&vs.root().sub("bn"), 4, false);
        tch::manual_seed(7);
        let x = (Tensor::randn([8, 4, 5, 5], (Kind::Double, Device::Cpu)) * 0.5 - 3.0e6)
            .to_kind(Kind::Float);
        let x64 = x.to_kind(Kind::Double);
        let dims: &[i64] = &[0, 2, 3];
        let (mean, var) = (
            x64.mean_dim(dims, false, Kind::Double),
            x64.var_dim(dims, false, false),
        );
        tch::no_grad(|| {
            bn.running_mean.shallow_clone().copy_(&mean);
            bn.running_var.shallow_clone().copy_(&var);
        });
        let shape = [1, 4, 1, 1];
        let (mean, var) = (
            bn.running_mean.to_kind(Kind::Double),
            bn.running_var.to_kind(Kind::Double),
        );
        let want = (&x64 - mean.view(shape)) / (var + elastic::BN_EPS).sqrt().view(shape);
        let err = |y: &Tensor| {
            (y.to_kind(Kind::Double) - &want)
                .abs()
                .max()
                .double_value(&[])
        };
        let got = bn.forward(&x, false, Act::None, Exec::Tiny).expect("bn");
        assert!(err(&got) < 1e-4, "max error {}", err(&got));
        let aten = x.batch_norm(
            Some(&bn.weight),
            Some(&bn.bias),
            Some(&bn.running_mean),
            Some(&bn.running_var),
            false,
            0.1,
            elastic::BN_EPS,
            false,
        );
        assert!(err(&aten) > 1e-2, "these inputs show the cancellation");
    }

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

        // ProxylessNAS w0.35: NetAug's widths, and its shortcut rule — the first block of the
        // 96·0.35 stage maps 32 → 32 at stride 1 but adds no shortcut; the blocks after it do.
        let px = ArchSpec::named(ModelName::ProxylessW035, 3, 32, 10);
        let outs: Vec<i64> = px.blocks.iter().map(|b| b.out_c).collect();
        assert_eq!(
            outs,
            [
                8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32, 64, 64, 64, 64, 112
            ]
        );
        assert_eq!((px.stem_c, px.head_c), (16, Some(1280)));
        let first96 = &px.blocks[11];
        assert_eq!((first96.in_c, first96.out_c, first96.stride), (32, 32, 1));
        assert!(!first96.residual() && px.blocks[12].residual());
        let head = px.blocks.last().expect("blocks");
        assert_eq!((head.in_c, head.mid_c, head.kernel), (64, 384, 7));

        // MobileNetV3 w0.35: NetAug's mids and SE placement, the stem's residual separable
        // block, ReLU then h-swish, the head conv and the 1,280-wide dense layer after pooling.
        let v3 = ArchSpec::named(ModelName::Mbv3W035, 3, 32, 10);
        let mids: Vec<i64> = v3.blocks.iter().map(|b| b.mid_c).collect();
        assert_eq!(
            mids,
            [
                8, 24, 24, 24, 40, 40, 88, 72, 64, 64, 168, 232, 232, 336, 336
            ]
        );
        let se: Vec<usize> = (0..v3.blocks.len()).filter(|&i| v3.blocks[i].se).collect();
        assert_eq!(se, [3, 4, 5, 10, 11, 12, 13, 14]);
        assert!(v3.blocks[0].residual() && !v3.blocks[0].expand);
        assert_eq!(v3.blocks[5].act, Act::Relu);
        assert_eq!(v3.blocks[6].act, Act::HSwish);
        assert_eq!(
            (v3.stem_c, v3.stem_act, v3.head_c, v3.final_c),
            (8, Act::HSwish, Some(336), Some(1280))
        );
        assert_eq!(se_channels(24), 16, "NetAug's floor of 16");
        assert_eq!(se_channels(336), 88);
    }

    #[test]
    fn forward_shapes_and_final_map_size() {
        for (name, c) in [
            (ModelName::Micro, 3),
            (ModelName::Mbv2Tiny, 1),
            (ModelName::Mcunet, 3),
            (ModelName::ProxylessW035, 1),
            (ModelName::Mbv3W035, 3),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Net::plain(&vs.root(), ArchSpec::named(name, c, 32, 10));
            let x = Tensor::randn([2, c, 32, 32], (Kind::Float, Device::Cpu));
            let w = net.spec.base_widths();
            let y = net.forward(&x, &w, true, Exec::Tiny).expect("forward");
            assert_eq!(y.size(), vec![2, 10], "{name:?}");
            let total_stride: i64 =
                net.spec.stem_stride * net.spec.blocks.iter().map(|b| b.stride).product::<i64>();
            assert!(
                32 / total_stride >= 2,
                "{name:?}: last feature map at least 2×2"
            );
        }
    }

    /// Segmentation (issue 48): every model at 48 px ends at a 6 × 6 map (output stride 8),
    /// taps its skip map one downsampling earlier, and returns per-pixel logits at the input
    /// size — tiny, augmented and split passes alike; its head's layers are the hardware
    /// models' last four, at those maps.
    #[test]
    fn segmentation_models_give_a_logit_per_pixel() {
        use crate::spec::config::{Config, ModelName as M, Task};
        use crate::spec::layers::layers;
        for name in [
            M::Micro,
            M::Mbv2Tiny,
            M::Mcunet,
            M::ProxylessW035,
            M::Mbv3W035,
        ] {
            let mut cfg = Config::default();
            cfg.model.name = name;
            cfg.model.task = Task::Segmentation;
            cfg.model.seg_channels = 16;
            cfg.ops.kind = OpKind::Shift;
            let spec = ArchSpec::from_config(&cfg, 1, 48, 11);
            assert_eq!(spec.output_stride(), 8, "{name:?}");
            assert_eq!(spec.final_c, None, "{name:?}: no dense layer after pooling");
            let seg = spec.seg.expect("a head");
            let tap = seg.tap.expect("a block before the last downsampling");
            let stride_at_tap: i64 = spec.stem_stride
                * spec.blocks[..=tap]
                    .iter()
                    .map(|b| b.stride)
                    .product::<i64>();
            assert_eq!(
                stride_at_tap, 4,
                "{name:?}: the skip map one downsampling earlier"
            );
            assert!(spec.blocks[tap + 1..].iter().any(|b| b.stride == 2));
            let vs = nn::VarStore::new(Device::Cpu);
            let ops = OpSpec::from_config(&cfg);
            let max = spec.max_widths(&cfg.aug);
            let net = Net::new(&vs.root(), spec.clone(), max.clone(), &ops);
            let x = Tensor::randn([2, 1, 48, 48], (Kind::Float, Device::Cpu));
            for (w, exec) in [
                (spec.base_widths(), Exec::Tiny),
                (max.clone(), Exec::Mult),
                (max.clone(), Exec::Split),
            ] {
                let y = net.forward(&x, &w, true, exec).expect("forward");
                assert_eq!(y.size(), vec![2, 11, 48, 48], "{name:?} {exec:?}");
            }
            let l = layers(&spec, &spec.base_widths(), &ops, 48);
            let tail: Vec<(&str, i64, i64)> = l[l.len() - 4..]
                .iter()
                .map(|l| (l.name.as_str(), l.h_in, l.c_out))
                .collect();
            assert_eq!(
                tail,
                [
                    ("seg.cbr", 6, 16),
                    ("seg.gate", 1, 16),
                    ("fc", 12, 11),
                    ("seg.low", 12, 11)
                ],
                "{name:?}"
            );
            let (gate, low) = (&l[l.len() - 3], &l[l.len() - 1]);
            assert_eq!(gate.gated, 16 * 6 * 6, "the gate scales the 6 × 6 branch");
            assert_eq!(gate.upsampled, 16 * 12 * 12, "upsampled to the skip map");
            assert_eq!(
                low.upsampled,
                11 * 48 * 48,
                "the logits upsampled to the input"
            );
            assert!(low.residual_add, "the two classifiers' logits summed");
            assert_eq!(l[l.len() - 4].op, OpKind::Shift, "cbr is a body conv: MF");
            assert_eq!(low.op, OpKind::Mult, "the classifiers are Mult, as `fc` is");
        }
    }

    #[test]
    fn sub_model_uses_the_leading_slice() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ArchSpec::named(ModelName::Micro, 3, 32, 10);
        let base = spec.base_widths();
        let max = Widths {
            stem: base.stem * 2,
            mid: base.mid.iter().map(|m| m * 2).collect(),
            out: base.out.iter().map(|o| o * 2).collect(),
            head: base.head.map(|h| h * 2),
            active: base.active.clone(),
            kernel: base.kernel.clone(),
        };
        let wide = Net::new(&vs.root(), spec.clone(), max, &OpSpec::mult());
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
        let a = wide.forward(&x, &base, false, Exec::Tiny).expect("forward");
        let b = tiny
            .forward(&x, &tiny.spec.base_widths(), false, Exec::Tiny)
            .expect("forward");
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
    }

    fn ops(kind: OpKind, mf_layers: MfLayers) -> OpSpec {
        OpSpec {
            kind,
            mf_layers,
            weight_bits: 5,
            act_fixed_point: true,
            remap: RemapKind::CdfAffine,
            remap_bins: 100,
            remap_shift: false,
            add_scale: adder::GradScale::NONE,
            add_unit_init: false,
            add_mult_storage: false,
            separate_aug_bn: false,
            se_mf: false,
        }
    }

    fn wide_micro(vs: &nn::VarStore, ops: &OpSpec) -> Net {
        let spec = ArchSpec::named(ModelName::Micro, 3, 32, 10);
        let aug = AugConfig::default();
        let max = spec.max_widths(&aug);
        Net::new(&vs.root(), spec, max, ops)
    }

    /// `add_init = "unit"`: Add layers start at unit RMS (AdderNet's scale), the others at
    /// kaiming's; the multiplicative view computes the same function either way (BN follows).
    #[test]
    fn add_layers_start_at_unit_rms() {
        let rms = |t: &Tensor| t.square().mean(Kind::Float).sqrt().double_value(&[]);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let build = |unit| {
            let vs = nn::VarStore::new(Device::Cpu);
            let ops = OpSpec {
                add_unit_init: unit,
                ..ops(OpKind::Add, MfLayers::Body)
            };
            let net = wide_micro(&vs, &ops);
            (vs, net)
        };
        let (kaiming_vs, kaiming) = build(false);
        let (mut unit_vs, unit) = build(true);
        for (k, u) in kaiming.convs().iter().zip(unit.convs()) {
            let (rk, ru) = (rms(&k.weight), rms(&u.weight));
            assert!(rk < 0.9, "{}: kaiming scale, rms {rk}", k.name);
            if u.role == OpKind::Add {
                assert!((ru - 1.0).abs() < 1e-4, "{}: rms {ru}", u.name);
            } else {
                assert!(ru < 0.9, "{}: kaiming scale, rms {ru}", u.name);
            }
        }
        // The same weights but for the Add layers' scale (other tests share torch's generator,
        // so the two nets are not drawn alike): the multiplicative view computes the same function.
        unit_vs.copy(&kaiming_vs).expect("same variables");
        tch::no_grad(|| {
            for c in unit.convs().iter().filter(|c| c.role == OpKind::Add) {
                let r = rms(&c.weight);
                let _ = c.weight.shallow_clone().g_div_scalar_(r);
            }
        });
        let logits = [&kaiming, &unit].map(|net| {
            net.forward(&x, &net.max.clone(), true, Exec::Mult)
                .expect("forward")
        });
        assert!(
            logits[0].allclose(&logits[1], 1e-3, 1e-3, false),
            "BN makes the scale invisible to Mult"
        );
    }

    #[test]
    fn mf_layers_choose_the_roles() {
        let roles = |kind, layers| {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = wide_micro(&vs, &ops(kind, layers));
            net.convs()
                .iter()
                .map(|c| (c.name.clone(), c.role))
                .collect::<Vec<_>>()
        };
        let body = roles(OpKind::Add, MfLayers::Body);
        assert_eq!(body[0], ("stem.conv".to_owned(), OpKind::Mult));
        assert_eq!(
            body.last().map(|r| r.1),
            Some(OpKind::Mult),
            "classifier stays Mult"
        );
        assert!(body[1..body.len() - 1].iter().all(|r| r.1 == OpKind::Add));
        let pw = roles(OpKind::Shift, MfLayers::Pointwise);
        assert!(
            pw.iter()
                .filter(|r| r.0.ends_with(".dw"))
                .all(|r| r.1 == OpKind::Mult)
        );
        assert!(
            pw.iter()
                .filter(|r| r.0.ends_with(".project"))
                .all(|r| r.1 == OpKind::Shift)
        );
        let all = roles(OpKind::Add, MfLayers::All);
        assert_eq!(all[0].1, OpKind::Add);
        assert_eq!(
            all.last().map(|r| r.1),
            Some(OpKind::Shift),
            "an MF classifier is Shift"
        );
    }

    /// Non-trivial BN statistics, so that their permutation matters.
    fn randomise_bn(net: &Net) {
        tch::no_grad(|| {
            for bn in net.bns() {
                let c = bn.running_mean.size()[0];
                let opts = (Kind::Float, Device::Cpu);
                bn.running_mean
                    .shallow_clone()
                    .copy_(&Tensor::randn([c], opts));
                bn.running_var
                    .shallow_clone()
                    .copy_(&Tensor::rand([c], opts).g_add_scalar_(0.5));
                bn.bias.shallow_clone().copy_(&Tensor::randn([c], opts));
            }
        });
    }

    fn l1_rows(w: &Tensor, dims: &[i64]) -> Vec<f32> {
        Vec::<f32>::try_from(w.abs().sum_dim_intlist(dims, false, Kind::Float)).expect("f32")
    }

    /// Non-increasing up to float rounding: the sort and this check sum the same |w| in
    /// different orders, so two near-equal norms may come out a few ulps the other way round.
    fn descending(v: &[f32]) -> bool {
        v.windows(2).all(|w| w[0] >= w[1] - 1e-5 * w[1].abs())
    }

    /// NetAug's expand augmentation: an augmented block's mid width is `aug_e · e · in_width`
    /// with `in_width` the block's width-augmented input, not its base input.
    #[test]
    fn mid_width_grows_with_the_augmented_input() {
        let spec = ArchSpec::named(ModelName::Micro, 3, 32, 10);
        let n = spec.blocks.len();
        let stages = spec.stages();
        let w = Widths::scaled(&spec, 2.6, &vec![2.6; stages], 2.6, &vec![2.8; n]);
        for (i, b) in spec.blocks.iter().enumerate().filter(|(_, b)| b.expand) {
            let e = b.mid_c as f64 / b.in_c as f64;
            let in_w = if i == 0 { w.stem } else { w.out[i - 1] };
            assert!(in_w > b.in_c, "the input is width-augmented");
            assert_eq!(
                w.mid[i],
                make_divisible(2.8 * e * in_w as f64, 8),
                "block {i}"
            );
        }
        // Only the expand factor: mid grows with it alone, inputs stay at the base.
        let e_only = Widths::scaled(&spec, 1.0, &vec![1.0; stages], 1.0, &vec![2.8; n]);
        let base = spec.base_widths();
        assert_eq!(e_only.out, base.out);
        for (i, b) in spec.blocks.iter().enumerate().filter(|(_, b)| b.expand) {
            assert_eq!(e_only.mid[i], scaled(b.mid_c, 2.8));
        }
        // Factor 1 everywhere is exactly the tiny model.
        assert_eq!(
            Widths::scaled(&spec, 1.0, &vec![1.0; stages], 1.0, &vec![1.0; n]),
            base
        );
        // The widest sub-model's mid reaches 2.8 × 2.6 × the base mid (NetAug: 7.3×).
        let max = spec.max_widths(&AugConfig::default());
        assert!(
            max.mid[0] as f64 >= 0.9 * 2.8 * 2.6 * base.mid[0] as f64,
            "{max:?}"
        );
    }

    #[test]
    fn channel_sorting_keeps_the_full_network_function() {
        tch::manual_seed(4);
        for (kind, stage_channels) in [
            (OpKind::Mult, false),
            (OpKind::Add, false),
            (OpKind::Mult, true),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = wide_micro(&vs, &ops(kind, MfLayers::Body));
            randomise_bn(&net);
            let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
            let max = net.max.clone();
            let base = net.spec.base_widths();
            let before = net.forward(&x, &max, false, Exec::Mult).expect("forward");
            let tiny_before = net.forward(&x, &base, false, Exec::Mult).expect("forward");
            let stem_before = net.stem.weight.copy();
            let perms = net.sort_channels(stage_channels);
            assert!(!perms.is_empty());
            let after = net.forward(&x, &max, false, Exec::Mult).expect("forward");
            assert!(
                before.allclose(&after, 1e-4, 1e-4, false),
                "{kind:?}: the full network changed"
            );
            let tiny_after = net.forward(&x, &base, false, Exec::Mult).expect("forward");
            assert!(
                !tiny_before.allclose(&tiny_after, 1e-4, 1e-4, false),
                "the tiny slice now holds other channels"
            );
            // NetAug's criterion: the mid channels' L1 norms in the consuming pointwise conv's
            // input columns descend (not the producing expand conv's rows).
            for b in &net.blocks {
                if b.expand.is_some() {
                    let cols = l1_rows(&b.project.weight, &[0, 2, 3]);
                    assert!(descending(&cols), "{}: {cols:?}", b.project.name);
                }
            }
            let stem = l1_rows(&net.stem.weight, &[1, 2, 3]);
            if stage_channels {
                assert!(
                    descending(&stem),
                    "the extension sorts the stem too: {stem:?}"
                );
            } else {
                assert!(
                    net.stem.weight.equal(&stem_before),
                    "NetAug never sorts the stem"
                );
                assert!(perms.iter().all(|p| !p.var.starts_with("stem")));
            }
        }
    }

    /// ProxylessNAS and MobileNetV3 w0.35 at their widest augmented width: sorting (kernels up
    /// to 7, a stage whose first block adds no shortcut though its shape allows one; SE's convs,
    /// MF here, sorted with their block, its hidden channels too) keeps the network's function,
    /// and the tiny model is its leading slice.
    #[test]
    fn the_paper_models_sort_their_channels_and_keep_their_function() {
        tch::manual_seed(5);
        for (name, kind) in [
            (ModelName::ProxylessW035, OpKind::Shift),
            (ModelName::Mbv3W035, OpKind::Add),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let spec = ArchSpec::named(name, 1, 32, 10);
            let max = spec.max_widths(&AugConfig::default());
            let ops = OpSpec {
                se_mf: true,
                ..ops(kind, MfLayers::Body)
            };
            let net = Net::new(&vs.root(), spec, max, &ops);
            randomise_bn(&net);
            let x = Tensor::randn([2, 1, 32, 32], (Kind::Float, Device::Cpu));
            let (max, base) = (net.max.clone(), net.spec.base_widths());
            let before = net.forward(&x, &max, false, Exec::Mult).expect("forward");
            let tiny = net.forward(&x, &base, false, Exec::Tiny).expect("forward");
            assert_eq!(tiny.size(), vec![2, 10]);
            let perms = net.sort_channels(false);
            assert!(
                perms.len() >= net.blocks.len(),
                "{name:?}: {} permutations",
                perms.len()
            );
            if name == ModelName::Mbv3W035 {
                assert!(perms.iter().any(|p| p.var.ends_with("se.reduce.bias")));
                assert!(perms.iter().any(|p| p.var.ends_with("se.expand.bias")));
                assert!(
                    net.convs()
                        .iter()
                        .any(|c| c.name.ends_with("se.reduce") && c.role == kind)
                );
            }
            let after = net.forward(&x, &max, false, Exec::Mult).expect("forward");
            // ReLU and h-swish do not bound activations as ReLU6 does: float32 rounding of the
            // reordered sums grows through 15 blocks of randomised BN to 0.05–0.4 % of the
            // logits' range, with the draw (tests share torch's generator, so the draw varies);
            // with ReLU6 everywhere the same net agrees to 1e-3 absolute. A wrong permutation
            // (SE's input columns left unsorted: tried) changes them by 170 % of it.
            let scale = before.abs().max().double_value(&[]);
            assert!(
                before.allclose(&after, 1e-3, 2e-2 * scale, false),
                "{name:?}: the widest network changed under sorting: {} of {scale}",
                (&before - &after).abs().max().double_value(&[])
            );
        }
    }

    /// `aug.bn = "separate"`: augmented passes normalise with their own γ, β and the tiny model
    /// with its own; channel sorting carries both, so the full network's function survives it.
    #[test]
    fn separate_augmented_bn_serves_augmented_passes_only_and_is_sorted_with_the_channels() {
        tch::manual_seed(8);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = wide_micro(
            &vs,
            &OpSpec {
                separate_aug_bn: true,
                ..ops(OpKind::Shift, MfLayers::Body)
            },
        );
        randomise_bn(&net);
        let (x, max, base) = (
            Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu)),
            net.max.clone(),
            net.spec.base_widths(),
        );
        let run = |w: &Widths, exec| net.forward(&x, w, false, exec).expect("forward");
        let (tiny, mult) = (run(&base, Exec::Tiny), run(&max, Exec::Mult));
        let bns = net.bns();
        assert!(bns.iter().all(|bn| bn.aug_affine.is_some()));
        // The augmented γ, β away from the tiny model's, different in every channel.
        tch::no_grad(|| {
            for bn in &bns {
                let (w, b) = bn.aug_affine.as_ref().expect("separate");
                let c = w.size()[0];
                let opts = (Kind::Float, Device::Cpu);
                w.shallow_clone().copy_(&(Tensor::rand([c], opts) + 0.5));
                b.shallow_clone().copy_(&Tensor::randn([c], opts));
            }
        });
        assert!(
            tiny.equal(&run(&base, Exec::Tiny)),
            "the tiny model ignores the augmented γ, β"
        );
        let mult = {
            let now = run(&max, Exec::Mult);
            assert!(
                !mult.allclose(&now, 1e-3, 1e-3, false),
                "the augmented pass uses them"
            );
            now
        };
        let perms = net.sort_channels(true);
        assert!(perms.iter().any(|p| p.var.ends_with(".aug_weight")));
        assert!(perms.iter().any(|p| p.var.ends_with(".aug_bias")));
        assert!(
            mult.allclose(&run(&max, Exec::Mult), 1e-4, 1e-4, false),
            "the full augmented network changed under sorting"
        );
        // The exported tiny model folds the tiny model's BN, never the augmented one's.
        let program = net.tiny_program();
        tch::no_grad(|| {
            for bn in &bns {
                let (w, _) = bn.aug_affine.as_ref().expect("separate");
                let _ = w.shallow_clone().g_mul_scalar_(3.0);
            }
        });
        let again = net.tiny_program();
        assert_eq!(program.tensors.len(), again.tensors.len());
        for ((name, a), (_, b)) in program.tensors.iter().zip(&again.tensors) {
            assert!(a.equal(b), "{name} depends on the augmented γ");
        }
        assert!(program.tensors.iter().all(|(n, _)| !n.contains("aug")));
    }

    /// `hybrid = "mf"`: the tiny channels of a wide MF slice see exactly the tiny model's
    /// remapped weights (the remap of the wide slice alone would rank them among the added ones).
    #[test]
    fn mf_augmented_forward_remaps_the_tiny_block_as_the_tiny_model_does() {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = wide_micro(&vs, &ops(OpKind::Add, MfLayers::Body));
        let mut checked = 0;
        for b in &net.blocks {
            for conv in [
                b.expand.as_ref().map(|(c, _)| c),
                Some(&b.dw),
                Some(&b.project),
            ]
            .into_iter()
            .flatten()
            {
                let (ti, to) = conv.tiny;
                let tiny = conv.mf_weight(&conv.tiny_slice(ti, to));
                // The whole stored tensor: the widest slice any augmented forward runs.
                let wide = conv.mf_weight(&conv.weight);
                let cols = if conv.depthwise { 1 } else { ti };
                let lead = wide.narrow(0, 0, to).narrow(1, 0, cols);
                assert!(lead.equal(&tiny), "{}: tiny block differs", conv.name);
                let plain = conv.remap.as_ref().expect("Add remaps").apply(&conv.weight);
                assert!(
                    !plain.narrow(0, 0, to).narrow(1, 0, cols).equal(&tiny),
                    "{}: the wide slice's own remap would differ",
                    conv.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 4);
    }

    #[test]
    fn split_with_tiny_widths_is_the_tiny_mf_model() {
        tch::manual_seed(5);
        for kind in [OpKind::Shift, OpKind::Add] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = wide_micro(&vs, &ops(kind, MfLayers::Body));
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            let tiny = net.spec.base_widths();
            let a = net.forward(&x, &tiny, true, Exec::Tiny).expect("tiny");
            let b = net.forward(&x, &tiny, true, Exec::Split).expect("split");
            assert!(a.allclose(&b, 1e-4, 1e-4, false), "{kind:?}");
            // The augmented forwards run and differ from each other on wider widths.
            let max = net.max.clone();
            let m = net.forward(&x, &max, true, Exec::Mult).expect("mult");
            let s = net.forward(&x, &max, true, Exec::Split).expect("split");
            let f = net.forward(&x, &max, true, Exec::Mf).expect("mf");
            assert!(
                !m.allclose(&s, 1e-4, 1e-4, false) && !s.allclose(&f, 1e-4, 1e-4, false),
                "{kind:?}"
            );
            // Gradients reach the stored weights through every mode.
            (a.sum(Kind::Float) + m.sum(Kind::Float) + s.sum(Kind::Float) + f.sum(Kind::Float))
                .backward();
            assert!(
                net.blocks[0]
                    .project
                    .weight
                    .grad()
                    .abs()
                    .sum(Kind::Float)
                    .double_value(&[])
                    > 0.0
            );
        }
    }

    #[test]
    fn sampled_widths_stay_within_the_maximum() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = wide_micro(&vs, &OpSpec::mult());
        let aug = AugConfig::default();
        let mut rng = Rng::new(1);
        let base = net.spec.base_widths();
        let mut saw_wider = false;
        for _ in 0..50 {
            let w = net.sample_widths(&aug, &mut rng, true);
            assert!(w.stem >= base.stem && w.stem <= net.max.stem);
            assert!(w.mid.iter().zip(&net.max.mid).all(|(a, b)| a <= b));
            assert!(w.out.iter().zip(&net.max.out).all(|(a, b)| a <= b));
            saw_wider |= w.out != base.out;
            let no_width = net.sample_widths(&aug, &mut rng, false);
            assert_eq!(
                (no_width.stem, &no_width.out),
                (base.stem, &base.out),
                "width augmentation off"
            );
        }
        assert!(saw_wider);
    }

    #[test]
    fn layer_list_shapes_follow_the_forward_pass_of_the_built_model() {
        // Run the real tiny net with hooks-free bookkeeping: the logits' shape and every layer's
        // parameter count must agree with the stored weight slices.
        let spec = ArchSpec::named(ModelName::Mbv2Tiny, 1, 32, 10);
        let vs = nn::VarStore::new(Device::Cpu);
        let ops = OpSpec {
            kind: OpKind::Shift,
            ..OpSpec::mult()
        };
        let net = Net::new(&vs.root(), spec.clone(), spec.base_widths(), &ops);
        let w = spec.base_widths();
        let list = crate::spec::layers::layers(&spec, &w, &ops, 32);
        let weights = vs.variables();
        for l in &list {
            let t = &weights[&format!("{}.weight", l.name)];
            assert_eq!(t.numel() as i64, l.params(), "{}", l.name);
        }
        assert_eq!(
            list.len(),
            1 + 3 * spec.blocks.len() - 1 + 1 + 1,
            "stem, blocks (first has no expand), head, fc"
        );
        assert_eq!(list[0].op, OpKind::Mult, "the stem stays multiplicative");
        assert!(
            list[1..list.len() - 1]
                .iter()
                .all(|l| l.op == OpKind::Shift)
        );
        assert_eq!(list.last().map(|l| l.op), Some(OpKind::Mult));
        // Spatial sizes: 32 → 32 (stem, stage 1 stride 1 at 32 px) … → 4 at the head.
        let head = &list[list.len() - 2];
        assert_eq!((head.h_in, head.h_out, head.c_out), (4, 4, 448));
        let x = Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        let logits = net.forward(&x, &w, false, Exec::Tiny).expect("forward");
        assert_eq!(logits.size(), vec![2, 10]);
        // Roles follow `mf_layers`.
        let pw = OpSpec {
            mf_layers: MfLayers::Pointwise,
            ..ops
        };
        let list = crate::spec::layers::layers(&spec, &w, &pw, 32);
        assert!(
            list.iter()
                .filter(|l| l.kind == crate::spec::layers::LayerKind::Depthwise)
                .all(|l| l.op == OpKind::Mult)
        );
    }
}
