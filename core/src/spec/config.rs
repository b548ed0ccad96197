//! Run configuration: one TOML file per run, every key with a default, unknown keys rejected, every
//! value range-checked with an error that names the key, the value and what is allowed.
//!
//! `experiments/README.md` documents every key; keep the two in step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::space::{NasArch, is_sub_model};

/// A configuration problem, phrased for the user: which key, which value, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}` = {value}: {allowed}")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("--set {0}: expected section.key=value, e.g. train.epochs=3")]
    BadOverride(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub ops: OpsConfig,
    pub aug: AugConfig,
    pub remap: RemapConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub hw: HwConfig,
    pub nas: NasConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Synthetic,
    FashionMnist,
    Cifar10,
    Cifar100,
    /// Segmentation: Fashion-MNIST items composed on larger canvases (`data.canvas`, …), with a
    /// class per pixel (0 the background, item class + 1 its foreground).
    FashionMnistScenes,
    /// Segmentation: a folder in the Pascal VOC layout (`data.dir`, `data.voc_*`).
    Voc,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::FashionMnistScenes => "fashion-mnist-scenes",
            Self::Voc => "voc",
        }
    }

    /// Whether its images come with a class per pixel (`model.task = "segmentation"`).
    pub fn is_segmentation(self) -> bool {
        matches!(self, Self::FashionMnistScenes | Self::Voc)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Which dataset.
    pub dataset: DatasetName,
    /// Directory of the dataset files; empty means the dataset's default (Fashion-MNIST only).
    pub dir: String,
    /// Seed of the procedural `synthetic` dataset (the images, not the training order).
    pub synthetic_seed: u64,
    /// Number of synthetic training images.
    pub synthetic_train: usize,
    /// Number of synthetic test images.
    pub synthetic_test: usize,
    /// Validation images held out of the training file (its last N), disjoint from training.
    pub val_images: ValImages,
    /// Use only the first N training images (0 = all), after the validation images are held out.
    pub train_subset: usize,
    /// Use only the first N test images (0 = all).
    pub test_subset: usize,
    /// Random crop (pad 4) and horizontal flip on training batches.
    pub augment: bool,
    /// Batches prepared ahead by the loader thread.
    pub prefetch: usize,
    /// On a GPU, keep the training set in the device's memory and make its batches there (the
    /// same batches as the loader thread); off: the loader thread, as on the CPU.
    pub on_device: bool,
    /// `fashion-mnist-scenes`: side of the square canvas (pixels).
    pub canvas: usize,
    /// `fashion-mnist-scenes`: items per canvas, from `items_min` to `items_max`.
    pub items_min: usize,
    pub items_max: usize,
    /// `fashion-mnist-scenes`: intensity from which an item's pixel is its class.
    pub foreground: u8,
    /// `fashion-mnist-scenes`: intensity from which, below `foreground`, a pixel is not scored.
    pub edge: u8,
    /// `fashion-mnist-scenes`: canvases composed from the training items (validation is held
    /// out of them) and from the test items.
    pub scenes_train: usize,
    pub scenes_test: usize,
    /// `fashion-mnist-scenes`: seed of the composition (the scenes, not the training order).
    pub scenes_seed: u64,
    /// `voc`: classes, background included (mask values below it, or 255: not scored).
    pub voc_classes: usize,
    /// `voc`: side images and masks are resized to (bilinear; masks nearest).
    pub voc_size: usize,
    /// `voc`: keep the three colour channels (else luma).
    pub voc_rgb: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetName::Synthetic,
            dir: String::new(),
            synthetic_seed: 1,
            synthetic_train: 10_000,
            synthetic_test: 2_000,
            val_images: ValImages::Auto,
            train_subset: 0,
            test_subset: 0,
            augment: true,
            prefetch: 4,
            on_device: true,
            canvas: 48,
            items_min: 3,
            items_max: 5,
            foreground: 64,
            edge: 16,
            scenes_train: 10_000,
            scenes_test: 2_000,
            scenes_seed: 1,
            voc_classes: 21,
            voc_size: 64,
            voc_rgb: true,
        }
    }
}

impl DataConfig {
    /// `(channels, resolution, classes)` of the images as the models see them (Fashion-MNIST is
    /// padded to 32 px), known without reading any file.
    pub fn input_shape(&self) -> (i64, i64, i64) {
        match self.dataset {
            DatasetName::Synthetic | DatasetName::Cifar10 => (3, 32, 10),
            DatasetName::FashionMnist => (1, 32, 10),
            DatasetName::Cifar100 => (3, 32, 100),
            DatasetName::FashionMnistScenes => (1, self.canvas as i64, 11),
            DatasetName::Voc => (
                if self.voc_rgb { 3 } else { 1 },
                self.voc_size as i64,
                self.voc_classes as i64,
            ),
        }
    }
}

/// How many training images are held out for validation: `"auto"` (5,000 for Fashion-MNIST and
/// CIFAR, at most a tenth of the training file; a tenth for synthetic) or a count. In TOML a
/// number or the string `"auto"`; a string of digits is read as the number (the app's form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValImages {
    #[default]
    Auto,
    Count(usize),
}

impl ValImages {
    /// The number of validation images for a training file of `train_len` images.
    pub fn resolve(self, dataset: DatasetName, train_len: usize) -> usize {
        match self {
            Self::Count(n) => n,
            Self::Auto => match dataset {
                DatasetName::Synthetic => train_len / 10,
                _ => 5_000.min(train_len / 10),
            },
        }
    }
}

impl Serialize for ValImages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for ValImages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ValImages;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of images")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ValImages, E> {
                Ok(ValImages::Count(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ValImages, E> {
                usize::try_from(v).map(ValImages::Count).map_err(|_| {
                    E::custom(format!("data.val_images = {v}: must be ≥ 1 or \"auto\""))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ValImages, E> {
                match v.trim() {
                    "auto" => Ok(ValImages::Auto),
                    t => t.parse().map(ValImages::Count).map_err(|_| {
                        E::custom(format!(
                            "data.val_images = \"{v}\": expected \"auto\" or a number of images"
                        ))
                    }),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelName {
    #[serde(rename = "micro")]
    Micro,
    #[serde(rename = "mbv2-tiny")]
    Mbv2Tiny,
    #[serde(rename = "mcunet")]
    Mcunet,
    /// ProxylessNAS-Mobile at width 0.35, as NetAug trains it.
    #[serde(rename = "proxyless-w0.35")]
    ProxylessW035,
    /// MobileNetV3-Large at width 0.35, as NetAug trains it.
    #[serde(rename = "mbv3-w0.35")]
    Mbv3W035,
}

impl ModelName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Micro => "micro",
            Self::Mbv2Tiny => "mbv2-tiny",
            Self::Mcunet => "mcunet",
            Self::ProxylessW035 => "proxyless-w0.35",
            Self::Mbv3W035 => "mbv3-w0.35",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub name: ModelName,
    /// A NAS architecture; when set it replaces `name`. Written in the TOML as the JSON of a
    /// [`NasArch`] (`""`: none); parsed and validated once, when the config is read.
    #[serde(with = "arch_text")]
    pub arch: Option<NasArch>,
    /// What the model predicts: a class per image, or a class per pixel (a segmentation head on
    /// the backbone; the data set must be a segmentation one).
    pub task: Task,
    /// The segmentation head's channels (LR-ASPP's inner width; `task = "segmentation"`).
    pub seg_channels: i64,
}

/// What a model predicts (issue 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// A class per image: pooling and a classifier; scored by top-1.
    #[default]
    Classification,
    /// A class per pixel: an LR-ASPP head and upsampling to the input size; scored by mean IoU.
    Segmentation,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Segmentation => "segmentation",
        }
    }
}

impl ModelConfig {
    /// What the runs table and reports call the architecture: its name, or `nas` for a NAS
    /// architecture (`arch`).
    pub fn label(&self) -> &'static str {
        if self.arch.is_none() {
            self.name.as_str()
        } else {
            "nas"
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: ModelName::Micro,
            arch: None,
            task: Task::Classification,
            seg_channels: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Mult,
    Shift,
    Add,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mult => "mult",
            Self::Shift => "shift",
            Self::Add => "add",
        }
    }
}

/// Which layers use the multiplication-free operator (method.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MfLayers {
    /// Every conv except the stem; the classifier stays multiplicative.
    Body,
    /// Only 1×1 convs.
    Pointwise,
    /// Every conv and the classifier (the classifier uses Shift even when `kind = "add"`).
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Operator of the tiny model's multiplication-free layers.
    pub kind: OpKind,
    pub mf_layers: MfLayers,
    /// Shift weight bits b: exponents in [−(2^(b−1)−1), 0].
    pub weight_bits: i64,
    /// Round Shift layers' inputs to 16.16 fixed point (straight-through).
    pub act_fixed_point: bool,
    /// AdderNet adaptive gradient scaling η, applied per Add call to dF of the weight it used.
    pub add_eta: f64,
    /// Scale η by the RMS of the weights each Add call sees, so the relative update per step is
    /// AdderNet's (whose weights are N(0,1)) whatever the shared weights' scale.
    pub add_eta_relative: bool,
    /// How Add layers' stored weights are initialised (with `add_storage = "add"`).
    pub add_init: AddInit,
    /// At whose scale an Add layer's shared tensor is stored: the Add operator's (the Mult view
    /// sees it as it is) or the multiplicative model's (the Add view rescales it).
    pub add_storage: AddStorage,
    /// The operator of squeeze-and-excitation's two 1×1 convs (`mbv3-w0.35`).
    pub se: SeOp,
}

/// What squeeze-and-excitation's two 1×1 convs compute with (issue 47).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SeOp {
    /// Multiplicative, whatever `ops.kind`: they are dense layers on pooled features, as the
    /// classifier is, which the paper keeps multiplicative. What MF SE convs would save is
    /// measured in RESULTS.md ("The paper's other models"): under the ShiftAddNAS simulator a
    /// tenth of `mbv3-w0.35`'s energy with Shift (its 10-bit Shift words cut the SE weights'
    /// traffic), under the project model nothing to speak of; and an Add SE conv, with no BN to
    /// centre its negative L1 distances, starts with its ReLU zeroing them: a constant gate.
    #[default]
    Mult,
    /// The block's operator (`ops.kind`), like the block's other convs.
    Mf,
}

/// Where the scale of an Add layer's shared tensor lives (issue 41). Both views of the tensor
/// learn at one learning rate, and a multiplicative layer's effective rate is lr / (weight RMS)²:
/// stored at the Add operator's unit RMS, the augmented Mult view learns tens to thousands of
/// times slower than NetAug's recipe intends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AddStorage {
    /// Stored at the Add operator's scale (`add_init`); the Mult view uses it as it is.
    #[default]
    Add,
    /// Stored at the multiplicative scale (kaiming's, like every other conv). The Add view is
    /// the stored tensor × √(fan_in / 2) — the inverse of kaiming's standard deviation, so it
    /// starts at unit RMS as AdderNet's weights do — and its gradient reaches the stored tensor
    /// ÷ the same factor, so the Add view moves exactly as it would stored at its own scale.
    Mult,
}

impl AddStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Mult => "mult",
        }
    }
}

/// The initial scale of Add layers' stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddInit {
    /// Kaiming-uniform, like every other conv.
    Kaiming,
    /// The kaiming draw rescaled to unit RMS: AdderNet's N(0,1) scale.
    Unit,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            kind: OpKind::Mult,
            mf_layers: MfLayers::Body,
            weight_bits: 5,
            act_fixed_point: true,
            add_eta: 0.2,
            add_eta_relative: true,
            add_init: AddInit::Unit,
            add_storage: AddStorage::Add,
            se: SeOp::Mult,
        }
    }
}

/// How the augmented model computes (method.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hybrid {
    /// Direct training of the tiny model, no augmentation.
    None,
    /// The augmented model uses the MF operator too (NetAug on an MF net).
    Mf,
    /// ShiftAddAug: the augmented model is fully multiplicative on the stored weights.
    Mult,
    /// Inside the augmented model the tiny slice is MF and the added channels Mult.
    Split,
}

impl Hybrid {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mf => "mf",
            Self::Mult => "mult",
            Self::Split => "split",
        }
    }
}

/// How the augmented model's gradient reaches an Add layer's shared weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AugGrad {
    /// As the augmented forward computes it: a multiplicative layer's gradient is raw (only an
    /// Add call scales its own).
    #[default]
    Raw,
    /// Scaled by AdderNet's rule like the tiny model's Add gradient (η·√k·g/‖g‖ over the k
    /// elements it touched, × the weights' RMS with `ops.add_eta_relative`), then × α.
    Adder,
}

impl AugGrad {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Adder => "adder",
        }
    }
}

/// Whose BN affine parameters (γ, β) the augmented model's passes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AugBn {
    /// The tiny model's, sliced like every other shared weight (NetAug, ShiftAddAug).
    #[default]
    Shared,
    /// A diagnostic extension: a second γ, β per BN layer that only augmented passes use and
    /// train, sorted with the channels and left out of the exported tiny model. Convolutions and
    /// the classifier stay shared; running statistics are re-estimated before every evaluation
    /// anyway. Asks whether the augmented gradient on the shared γ, β is what costs the tiny model.
    Separate,
}

impl AugBn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Separate => "separate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugConfig {
    pub hybrid: Hybrid,
    /// Per-block expand-factor choices for augmented sub-models.
    pub expand: Vec<f64>,
    /// Per-stage width-factor choices for augmented sub-models.
    pub width: Vec<f64>,
    /// Weight α of the augmented loss.
    pub alpha: f64,
    /// Fraction of the epochs after which width augmentation stops (expand continues).
    pub stop_width_frac: f64,
    /// NetAug's channel sorting at every epoch start while width augmentation is on: each
    /// block's mid channels by the L1 norm of the consuming pointwise conv's input columns.
    pub sort_channels: bool,
    /// Extension (not NetAug): also sort the stem's and stage outputs' channels.
    pub sort_stage_channels: bool,
    /// How the augmented model's gradient on an Add layer's shared weights is scaled.
    pub add_grad: AugGrad,
    /// ρ, with `add_grad = "adder"`: the augmented model's share of an Add layer's update — its
    /// AdderNet-scaled gradient is ρ × the size of the tiny model's (× α). 1 is `"adder"` as it
    /// was; ρ < 1 lets the tiny model lead, ρ > 1 the augmented model.
    pub add_grad_ratio: f64,
    /// Whose BN γ, β the augmented passes use: the tiny model's (`shared`) or their own.
    pub bn: AugBn,
    /// The augmented SubNet that `model.arch` sits inside (in the TOML as `model.arch` is;
    /// `""`: none). When set, augmented sub-models may also run the SubNet's deeper blocks, and
    /// their widths are capped at the SubNet's (method.md §6).
    #[serde(with = "arch_text")]
    pub arch: Option<NasArch>,
}

impl Default for AugConfig {
    fn default() -> Self {
        Self {
            hybrid: Hybrid::Mult,
            expand: vec![1.0, 1.6, 2.2, 2.8],
            width: vec![1.0, 1.8, 2.6],
            alpha: 1.0,
            stop_width_frac: 0.5,
            sort_channels: true,
            sort_stage_channels: false,
            add_grad: AugGrad::Raw,
            add_grad_ratio: 1.0,
            bn: AugBn::Shared,
            arch: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemapKind {
    None,
    Cdf,
    CdfAffine,
    Fc,
}

impl RemapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cdf => "cdf",
            Self::CdfAffine => "cdf-affine",
            Self::Fc => "fc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemapConfig {
    pub kind: RemapKind,
    /// K: bins of `cdf-affine`, rank groups of `fc`, bins of the KL regulariser.
    pub bins: i64,
    /// Weight of the KL(remapped histogram ‖ fitted Laplace) regulariser; 0 disables it.
    pub kl_weight: f64,
    /// Remap Shift layers' weights before power-of-two rounding.
    pub shift: bool,
}

impl Default for RemapConfig {
    fn default() -> Self {
        Self {
            kind: RemapKind::CdfAffine,
            bins: 100,
            kl_weight: 1e-4,
            shift: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate per 128 images; the effective rate scales linearly with the batch size.
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay on conv and linear weights (never on BN parameters or biases).
    pub weight_decay: f64,
    /// Weight decay of the Add layers' stored weights instead of `weight_decay` (AdderNet: 5e-4);
    /// absent: `weight_decay`. Only for `ops.kind = "add"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_weight_decay: Option<f64>,
    /// Linear warm-up length in epochs (fractions allowed), then cosine decay to zero.
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    pub seed: u64,
    /// Torch intra-op threads; 0 = one per core.
    pub threads: usize,
    pub device: DeviceChoice,
    /// Checkpoints kept per run (the newest ones).
    pub keep_checkpoints: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 0.025,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 4e-5,
            add_weight_decay: None,
            warmup_epochs: 5.0,
            label_smoothing: 0.1,
            seed: 0,
            threads: 0,
            device: DeviceChoice::Cpu,
            keep_checkpoints: 2,
        }
    }
}

impl TrainConfig {
    /// The learning rate actually used at the peak of the schedule (linear scaling rule).
    pub fn peak_lr(&self) -> f64 {
        self.lr * self.batch_size as f64 / 128.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub batch_size: usize,
    /// Training images used to re-estimate BN statistics before every evaluation (0 = keep the running ones).
    pub bn_images: usize,
    /// Also evaluate, every epoch on validation, the exact widest augmented configuration
    /// (`val/top1_widest`): a diagnostic of the augmented model, which training rarely samples.
    pub aug_top1: bool,
    /// Evaluate the tiny model on the test set once, at the end of the run (`test/*`).
    pub test: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            bn_images: 2000,
            aug_top1: false,
            test: true,
        }
    }
}

/// Which hardware cost model prices a layer (method.md §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwModel {
    /// ShiftAddNAS's simulator, as the paper's figures use it (`hw::shiftaddnas`).
    #[default]
    Shiftaddnas,
    /// The project's own Eyeriss-like model (`hw::project`).
    Project,
}

impl HwModel {
    pub const ALL: [Self; 2] = [Self::Shiftaddnas, Self::Project];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shiftaddnas => "shiftaddnas",
            Self::Project => "project",
        }
    }

    /// How a figure names it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Shiftaddnas => "ShiftAddNAS simulator",
            Self::Project => "project model",
        }
    }
}

/// How compute operations are counted (method.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// One op per MAC of the layer's kind.
    Paper,
    /// A Mult MAC = mult + add, a Shift MAC = shift + add, an Add MAC = 2 adds.
    Full,
}

/// How the data-movement cost is found (method.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwMode {
    /// Search the loop tilings of every layer.
    Search,
    /// One heuristic tiling per layer, in closed form (fast; the NAS uses it).
    Analytic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HwConfig {
    /// The cost model: the paper's simulator (default) or the project's own.
    pub model: HwModel,
    pub convention: Convention,
    /// Operand width: 32 or 8 (the unit-energy table's rows; memory energy scales by bits/16).
    pub bits: i64,
    pub mode: HwMode,
}

impl Default for HwConfig {
    fn default() -> Self {
        Self {
            model: HwModel::Shiftaddnas,
            convention: Convention::Paper,
            bits: 32,
            mode: HwMode::Search,
        }
    }
}

/// A pruning rule, a study's (`[prune]`) or a NAS search's proxies' (`nas.prune`): the median
/// rule of Optuna's `MedianPruner` with a margin. After each epoch from `warmup_epochs` on, a
/// cell whose best validation top-1 so far lies more than `margin_points` below the median of
/// the other cells' best at the same epoch (at least `min_cells` of them, any variant, finished
/// or in flight) is stopped and recorded as `pruned` with the reason. Applies to cells trained
/// here (not on Slurm, where each cell runs alone). How a study trains, not what it measures:
/// not part of a study's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prune {
    pub warmup_epochs: i64,
    pub min_cells: usize,
    pub margin_points: f64,
}

impl Default for Prune {
    fn default() -> Self {
        Self {
            warmup_epochs: 2,
            min_cells: 3,
            margin_points: 0.0,
        }
    }
}

/// The two-stage NAS (method.md §6); CPU-sized defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NasConfig {
    /// What the budget limits.
    pub budget_kind: crate::spec::config::BudgetKind,
    /// Budget of the tiny MF TargetNet: mJ (energy) or ms (latency).
    pub budget: f64,
    /// Stage 1 searches a multiplicative SubNet under m × budget, m drawn from these.
    pub multiples: Vec<f64>,
    pub population: usize,
    pub generations: usize,
    /// Per-choice re-draw probability of a child.
    pub mutation: f64,
    /// Probability that a child is a crossover of two parents (else a mutated copy of one).
    pub crossover: f64,
    /// Epochs of the proxy training of each candidate.
    pub proxy_epochs: usize,
    /// Batch size of the proxy training (small, so a short proxy still takes enough steps;
    /// the learning rate scales with it as in `train.lr`).
    pub proxy_batch_size: usize,
    /// Training images of the proxy training (the first N).
    pub proxy_train: usize,
    /// Validation images of the proxy evaluation (held out of the training file; candidates are
    /// ranked on them, never on the test set). `proxy_test` is read as an old name of this key.
    #[serde(alias = "proxy_test")]
    pub proxy_val: usize,
    /// Candidates proxy-trained at once; they split the `train.threads` budget between them.
    pub parallel: usize,
    /// Seed of the search (sampling, mutation, crossover).
    pub seed: u64,
    /// Stop a candidate's proxy training once it falls out of reach: the median rule of
    /// [`Prune`] over the stage's other candidates (see [`Self::prune_rule`]).
    pub prune: bool,
    /// The first epoch after which a candidate may be pruned (below `proxy_epochs`).
    pub prune_warmup_epochs: usize,
    /// Other candidates of the stage that must have reached that epoch before the rule speaks.
    pub prune_min_candidates: usize,
    /// Prune only this many points of proxy top-1 below the others' median.
    pub prune_margin_points: f64,
}

impl NasConfig {
    /// The pruning rule of the proxy trainings, if `prune` is on.
    pub fn prune_rule(&self) -> Option<Prune> {
        self.prune.then_some(Prune {
            warmup_epochs: self.prune_warmup_epochs as i64,
            min_cells: self.prune_min_candidates,
            margin_points: self.prune_margin_points,
        })
    }
}

impl Default for NasConfig {
    fn default() -> Self {
        Self {
            budget_kind: crate::spec::config::BudgetKind::Energy,
            budget: 0.3,
            multiples: vec![2.2, 2.4, 2.8, 3.2],
            population: 4,
            generations: 2,
            mutation: 0.3,
            crossover: 0.5,
            proxy_epochs: 1,
            proxy_batch_size: 32,
            proxy_train: 1000,
            proxy_val: 500,
            parallel: 2,
            seed: 0,
            prune: false,
            prune_warmup_epochs: 1,
            prune_min_candidates: 2,
            prune_margin_points: 0.0,
        }
    }
}

impl Config {
    /// Read a TOML file, apply `section.key=value` overrides, and validate.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parse TOML text (`origin` names it in errors), apply overrides, validate.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            origin: origin.to_owned(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(clean(&e)))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        arch_text::check(&table)?;
        let config: Self = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_err(keyed(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The resolved configuration as TOML (stored with each run).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise config: {e}"))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_data()?;
        self.validate_ops_and_aug()?;
        self.validate_training()?;
        self.validate_archs()?;
        self.validate_nas()?;
        self.validate_hw()
    }

    /// `[data]`: sizes, held-out images, CIFAR's folder.
    fn validate_data(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        range("data.synthetic_train", d.synthetic_train, 10, 1_000_000)?;
        range("data.synthetic_test", d.synthetic_test, 10, 1_000_000)?;
        range("data.prefetch", d.prefetch, 1, 64)?;
        if let ValImages::Count(n) = d.val_images {
            range("data.val_images", n, 1, 10_000_000)?;
            if d.dataset == DatasetName::Synthetic && n >= d.synthetic_train {
                return Err(invalid(
                    "data.val_images",
                    &n.to_string(),
                    &format!(
                        "must be below data.synthetic_train ({}): validation images are held out of the training images",
                        d.synthetic_train
                    ),
                ));
            }
        }
        self.validate_task()?;
        if matches!(
            d.dataset,
            DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::Voc
        ) && d.dir.is_empty()
        {
            return Err(invalid(
                "data.dir",
                "\"\"",
                "nothing can be downloaded here: name the directory that holds the data set \
                 (CIFAR: its official binary version; VOC: the folder with JPEGImages/)",
            ));
        }
        Ok(())
    }

    /// `model.task` against the data set, and the segmentation keys.
    fn validate_task(&self) -> Result<(), ConfigError> {
        let (d, m) = (&self.data, &self.model);
        let seg = m.task == Task::Segmentation;
        if seg != d.dataset.is_segmentation() {
            return Err(invalid(
                "model.task",
                &format!("\"{}\"", m.task.as_str()),
                &format!(
                    "data.dataset = \"{}\" {}",
                    d.dataset.as_str(),
                    if seg {
                        "has a class per image: segmentation needs \"fashion-mnist-scenes\" or \"voc\""
                    } else {
                        "has a class per pixel: set model.task = \"segmentation\""
                    }
                ),
            ));
        }
        range("model.seg_channels", m.seg_channels, 1, 4096)?;
        range("data.canvas", d.canvas, 32, 1024)?;
        range("data.items_min", d.items_min, 1, 64)?;
        range("data.items_max", d.items_max, d.items_min, 64)?;
        if d.edge > d.foreground {
            return Err(invalid(
                "data.edge",
                &d.edge.to_string(),
                &format!(
                    "must be at most data.foreground ({}): pixels from edge to foreground are the outline not scored",
                    d.foreground
                ),
            ));
        }
        range("data.scenes_train", d.scenes_train, 10, 1_000_000)?;
        range("data.scenes_test", d.scenes_test, 1, 1_000_000)?;
        range("data.voc_classes", d.voc_classes, 2, 255)?;
        range("data.voc_size", d.voc_size, 8, 1024)?;
        if seg && self.aug.sort_stage_channels {
            return Err(invalid(
                "aug.sort_stage_channels",
                "true",
                "sorts stage outputs for a classifier's consumers; the segmentation head reads a \
                 stage's output too, which it does not reorder: use false (NetAug's sorting)",
            ));
        }
        Ok(())
    }

    /// `[ops]` and `[aug]`, and the keys of one that only apply with a value of the other.
    fn validate_ops_and_aug(&self) -> Result<(), ConfigError> {
        let o = &self.ops;
        range("ops.weight_bits", o.weight_bits, 2, 8)?;
        frange("ops.add_eta", o.add_eta, 0.0, 100.0, false)?;
        let a = &self.aug;
        factors("aug.expand", &a.expand)?;
        factors("aug.width", &a.width)?;
        frange("aug.alpha", a.alpha, 0.0, 100.0, true)?;
        frange("aug.stop_width_frac", a.stop_width_frac, 0.0, 1.0, true)?;
        if a.add_grad == AugGrad::Adder && a.hybrid != Hybrid::Mult {
            return Err(invalid(
                "aug.add_grad",
                "\"adder\"",
                &format!(
                    "applies to aug.hybrid = \"mult\" only (here \"{}\": an augmented model that runs \
                     Add calls scales their gradients itself); use \"raw\"",
                    a.hybrid.as_str()
                ),
            ));
        }
        frange("aug.add_grad_ratio", a.add_grad_ratio, 0.0, 1000.0, false)?;
        if a.add_grad_ratio != 1.0 && a.add_grad != AugGrad::Adder {
            return Err(invalid(
                "aug.add_grad_ratio",
                &a.add_grad_ratio.to_string(),
                "sizes the AdderNet-scaled augmented gradient, so it applies to \
                 aug.add_grad = \"adder\" only; set that too, or remove it",
            ));
        }
        if o.add_storage == AddStorage::Mult && o.kind != OpKind::Add {
            return Err(invalid(
                "ops.add_storage",
                "\"mult\"",
                &format!(
                    "places the scale of Add layers' weights, and this model has none \
                     (ops.kind = \"{}\"); remove it",
                    o.kind.as_str()
                ),
            ));
        }
        if a.bn == AugBn::Separate && a.hybrid == Hybrid::None {
            return Err(invalid(
                "aug.bn",
                "\"separate\"",
                "gives the augmented model BN parameters of its own, and aug.hybrid = \"none\" \
                 trains no augmented model; use \"shared\"",
            ));
        }
        Ok(())
    }

    /// `[remap]`, `[train]` and `[eval]`.
    fn validate_training(&self) -> Result<(), ConfigError> {
        range("remap.bins", self.remap.bins, 2, 10_000)?;
        frange("remap.kl_weight", self.remap.kl_weight, 0.0, 1e3, true)?;
        let t = &self.train;
        range("train.epochs", t.epochs, 1, 100_000)?;
        range("train.batch_size", t.batch_size, 1, 8192)?;
        frange("train.lr", t.lr, 0.0, 1e12, false)?;
        frange("train.momentum", t.momentum, 0.0, 1.0, true)?;
        frange("train.weight_decay", t.weight_decay, 0.0, 1.0, true)?;
        if let Some(wd) = t.add_weight_decay {
            frange("train.add_weight_decay", wd, 0.0, 1.0, true)?;
            if self.ops.kind != OpKind::Add {
                return Err(invalid(
                    "train.add_weight_decay",
                    &wd.to_string(),
                    &format!(
                        "applies to Add layers, and this model has none (ops.kind = \"{}\"); \
                         remove it or use train.weight_decay",
                        self.ops.kind.as_str()
                    ),
                ));
            }
        }
        frange("train.warmup_epochs", t.warmup_epochs, 0.0, 1e6, true)?;
        frange("train.label_smoothing", t.label_smoothing, 0.0, 1.0, true)?;
        if t.label_smoothing >= 1.0 {
            return Err(invalid(
                "train.label_smoothing",
                &t.label_smoothing.to_string(),
                "must be in [0, 1)",
            ));
        }
        range("train.threads", t.threads, 0, 1024)?;
        range("train.keep_checkpoints", t.keep_checkpoints, 1, 1000)?;
        range("eval.batch_size", self.eval.batch_size, 1, 8192)?;
        range("eval.bn_images", self.eval.bn_images, 0, 10_000_000)?;
        Ok(())
    }

    /// `model.arch` and `aug.arch`: each valid, and the TargetNet a sub-model of the SubNet.
    fn validate_archs(&self) -> Result<(), ConfigError> {
        for (key, arch) in [
            ("model.arch", &self.model.arch),
            ("aug.arch", &self.aug.arch),
        ] {
            if let Some(Err(e)) = arch.as_ref().map(NasArch::validate) {
                return Err(invalid(key, &arch_text::show(arch), &e.to_string()));
            }
        }
        if let Some(sub) = &self.aug.arch {
            let shown = arch_text::show(&self.aug.arch);
            let target = self.model.arch.as_ref().ok_or_else(|| {
                invalid(
                    "aug.arch",
                    &shown,
                    "needs `model.arch`: the TargetNet that sits inside this SubNet",
                )
            })?;
            if !is_sub_model(target, sub) {
                return Err(invalid(
                    "aug.arch",
                    &shown,
                    "`model.arch` must be a sub-model of it: per stage no deeper, no wider, and per block no larger kernel or expand",
                ));
            }
        }
        Ok(())
    }

    /// `[nas]`.
    fn validate_nas(&self) -> Result<(), ConfigError> {
        let n = &self.nas;
        frange("nas.budget", n.budget, 0.0, 1e9, false)?;
        if n.multiples.is_empty() || n.multiples.iter().any(|m| !(1.0..=10.0).contains(m)) {
            return Err(invalid(
                "nas.multiples",
                &format!("{:?}", n.multiples),
                "must be a non-empty list of multiples in [1, 10]",
            ));
        }
        range("nas.population", n.population, 2, 1000)?;
        range("nas.generations", n.generations, 1, 1000)?;
        frange("nas.mutation", n.mutation, 0.0, 1.0, true)?;
        frange("nas.crossover", n.crossover, 0.0, 1.0, true)?;
        range("nas.proxy_epochs", n.proxy_epochs, 1, 1000)?;
        range("nas.proxy_batch_size", n.proxy_batch_size, 1, 8192)?;
        range("nas.proxy_train", n.proxy_train, 10, 10_000_000)?;
        range("nas.proxy_val", n.proxy_val, 10, 10_000_000)?;
        range("nas.parallel", n.parallel, 1, 64)?;
        range("nas.prune_min_candidates", n.prune_min_candidates, 1, 1000)?;
        frange(
            "nas.prune_margin_points",
            n.prune_margin_points,
            0.0,
            100.0,
            true,
        )?;
        if n.prune {
            range("nas.prune_warmup_epochs", n.prune_warmup_epochs, 1, 1000)?;
            if n.prune_warmup_epochs >= n.proxy_epochs {
                return Err(invalid(
                    "nas.prune_warmup_epochs",
                    &n.prune_warmup_epochs.to_string(),
                    &format!(
                        "must be below nas.proxy_epochs ({}): a candidate is pruned after an epoch that is not its last, so pruning needs proxy_epochs of 2 or more",
                        n.proxy_epochs
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[hw]`: the bit width and a convention the cost model can charge.
    fn validate_hw(&self) -> Result<(), ConfigError> {
        if ![8, 32].contains(&self.hw.bits) {
            return Err(invalid(
                "hw.bits",
                &self.hw.bits.to_string(),
                "must be 8 or 32 (the rows of the unit-energy table)",
            ));
        }
        if self.hw.model == HwModel::Shiftaddnas && self.hw.convention == Convention::Full {
            return Err(invalid(
                "hw.convention",
                "full",
                "must be \"paper\" with hw.model = \"shiftaddnas\" (the simulator charges one op per MAC); \
                 set hw.model = \"project\" to count a MAC as two ops",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        allowed: allowed.to_owned(),
    }
}

/// An integer setting within `[lo, hi]`.
fn range<T: PartialOrd + Copy + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if lo <= value && value <= hi {
        Ok(())
    } else {
        Err(invalid(
            key,
            &value.to_string(),
            &format!("must be an integer in [{lo}, {hi}]"),
        ))
    }
}

/// A non-empty list of width/expand factors, each in [1, 8].
fn factors(key: &str, values: &[f64]) -> Result<(), ConfigError> {
    if !values.is_empty() && values.iter().all(|v| (1.0..=8.0).contains(v)) {
        Ok(())
    } else {
        Err(invalid(
            key,
            &format!("{values:?}"),
            "must be a non-empty list of factors in [1, 8]",
        ))
    }
}

fn frange(key: &str, value: f64, lo: f64, hi: f64, lo_inclusive: bool) -> Result<(), ConfigError> {
    let above = if lo_inclusive {
        value >= lo
    } else {
        value > lo
    };
    if value.is_finite() && above && value <= hi {
        Ok(())
    } else {
        let open = if lo_inclusive { '[' } else { '(' };
        Err(invalid(
            key,
            &value.to_string(),
            &format!("must be a number in {open}{lo}, {hi}]"),
        ))
    }
}

/// One-line form of a TOML error (toml's own messages span several lines with a source excerpt).
fn clean(e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

/// A deserialisation error with the key it belongs to (`train.epochs: invalid type: …`).
fn keyed(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    let msg = clean(e.inner());
    if path.is_empty() || path == "." {
        msg
    } else {
        format!("`{path}`: {msg}")
    }
}

pub(crate) fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadOverride(item.to_owned());
    let (path, raw) = item.split_once('=').ok_or_else(bad)?;
    let (section, key) = path.trim().split_once('.').ok_or_else(bad)?;
    if section.is_empty() || key.is_empty() || key.contains('.') {
        return Err(bad());
    }
    let raw = raw.trim();
    // A TOML literal when it parses as one (3, 0.1, true, "x"), else a bare string (fashion-mnist).
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = entry else {
        return Err(ConfigError::Parse {
            origin: "--set".into(),
            message: format!("`{section}` is not a section"),
        });
    };
    section_table.insert(key.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, sets: &[&str]) -> Result<Config, ConfigError> {
        let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
        Config::from_toml_str(text, "test.toml", &sets)
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = parse("", &[]).expect("empty config is valid");
        assert_eq!(c, Config::default());
        let again = parse(&c.to_toml(), &[]).expect("resolved config parses");
        assert_eq!(again, c);
    }

    /// Every key of the resolved default config, as (section, key, default value).
    fn every_key() -> Vec<(String, String, toml::Value)> {
        let table: toml::Table = toml::from_str(&Config::default().to_toml()).expect("toml");
        let mut keys = Vec::new();
        for (section, t) in table {
            let toml::Value::Table(t) = t else {
                panic!("top-level key {section} is not a section");
            };
            for (key, v) in t {
                keys.push((section.clone(), key, v));
            }
        }
        keys
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_in_files_and_sets() {
        let keys = every_key();
        assert!(keys.len() >= 40, "{} keys", keys.len());
        for (section, key, default) in keys {
            let wrong = match default {
                toml::Value::String(_) | toml::Value::Table(_) => "[1, 2]",
                toml::Value::Array(_) => "{ a = 1 }",
                toml::Value::Boolean(_) => "\"maybe\"",
                _ => "\"five\"",
            };
            let name = format!("{section}.{key}");
            let err = parse(&format!("[{section}]\n{key} = {wrong}\n"), &[])
                .expect_err(&name)
                .to_string();
            assert!(err.contains(&name), "file, {name} = {wrong}: {err}");
            let err = parse("", &[&format!("{name}={wrong}")])
                .expect_err(&name)
                .to_string();
            assert!(err.contains(&name), "--set {name}={wrong}: {err}");
        }
        let err = parse("", &["train.epochs=-3"]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
    }

    #[test]
    fn an_unknown_name_for_an_enum_key_names_the_key() {
        let mut enums = Vec::new();
        for (section, key, default) in every_key() {
            if !matches!(default, toml::Value::String(_)) {
                continue;
            }
            let name = format!("{section}.{key}");
            // Free-text keys (a folder, a name) take any string; the rest are enums.
            if let Err(e) = parse("", &[&format!("{name}=\"no-such-name\"")]) {
                let err = e.to_string();
                assert!(err.contains(&name), "{name}: {err}");
                enums.push(name);
            }
        }
        for must in [
            "ops.kind",
            "aug.hybrid",
            "remap.kind",
            "data.dataset",
            "model.name",
        ] {
            assert!(enums.iter().any(|e| e == must), "{must} in {enums:?}");
        }
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = parse("[train]\nepocs = 3\n", &[]).unwrap_err().to_string();
        assert!(err.contains("epocs"), "{err}");
        let err = parse("[trian]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
    }

    #[test]
    fn out_of_range_names_key_value_and_range() {
        let err = parse("[train]\nepochs = 0\n", &[]).unwrap_err().to_string();
        assert!(err.contains("train.epochs") && err.contains('0') && err.contains("[1, 100000]"));
        let err = parse("", &["train.momentum=1.5"]).unwrap_err().to_string();
        assert!(
            err.contains("train.momentum") && err.contains("1.5"),
            "{err}"
        );
    }

    #[test]
    fn nas_pruning_needs_an_epoch_to_prune_after() {
        let err = parse("", &["nas.prune=true"]).unwrap_err().to_string();
        assert!(
            err.contains("nas.prune_warmup_epochs") && err.contains("proxy_epochs (1)"),
            "{err}"
        );
        let c = parse("", &["nas.prune=true", "nas.proxy_epochs=3"]).expect("valid");
        let rule = c.nas.prune_rule().expect("on");
        assert_eq!((rule.warmup_epochs, rule.min_cells), (1, 2));
        assert_eq!(Config::default().nas.prune_rule(), None, "off by default");
        let err = parse("", &["nas.prune_margin_points=-1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nas.prune_margin_points"), "{err}");
    }

    #[test]
    fn overrides_apply_and_parse_types() {
        let c = parse(
            "[train]\nepochs = 3\n",
            &[
                "train.epochs=7",
                "data.dataset=fashion-mnist",
                "train.lr=0.5",
            ],
        )
        .expect("valid");
        assert_eq!(c.train.epochs, 7);
        assert_eq!(c.data.dataset, DatasetName::FashionMnist);
        assert!((c.train.lr - 0.5).abs() < 1e-12);
        assert!(matches!(
            parse("", &["epochs=3"]),
            Err(ConfigError::BadOverride(_))
        ));
    }

    #[test]
    fn cifar_needs_a_directory() {
        let err = parse("[data]\ndataset = \"cifar10\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.dir"), "{err}");
    }
}

/// What a budget constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetKind {
    /// Energy per inference, mJ.
    Energy,
    /// Latency per inference, ms.
    Latency,
}

/// `model.arch` / `aug.arch` in the TOML: the JSON of a [`NasArch`], `""` for none.
mod arch_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{ConfigError, NasArch, invalid};

    /// The TOML text of an architecture.
    pub fn show(arch: &Option<NasArch>) -> String {
        arch.as_ref().map(NasArch::to_json).unwrap_or_default()
    }

    pub fn serialize<S: Serializer>(arch: &Option<NasArch>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&show(arch))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NasArch>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        NasArch::from_json(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    /// Parse errors of either key as a config error that names it (deserialisation alone would
    /// report them without the key).
    pub fn check(table: &toml::Table) -> Result<(), ConfigError> {
        for (section, key) in [("model", "arch"), ("aug", "arch")] {
            let text = table
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(toml::Value::as_str);
            if let Some(t) = text.filter(|t| !t.trim().is_empty())
                && let Err(e) = NasArch::from_json(t)
            {
                return Err(invalid(&format!("{section}.{key}"), t, &e.to_string()));
            }
        }
        Ok(())
    }
}
