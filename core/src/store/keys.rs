//! Metric keys: the names runs record their numbers under, in one place for the trainer, the
//! reader's summaries, the app and the tests.

/// Per step: the tiny model's training loss.
pub const TRAIN_LOSS: &str = "train/loss";
/// Per step: the sampled augmented model's loss (when augmenting).
pub const TRAIN_LOSS_AUG: &str = "train/loss_aug";
pub const TRAIN_LR: &str = "train/lr";
pub const TRAIN_IMAGES_PER_SEC: &str = "train/images_per_sec";
/// Per epoch.
pub const TRAIN_EPOCH_LOSS: &str = "train/epoch_loss";
/// Per epoch, when augmenting: the sampled augmented models' mean training loss over the epoch
/// (image-weighted, as `train/epoch_loss` is the tiny model's). NetAug relies on the augmented
/// model fitting better than the tiny one; the two side by side say whether it does.
pub const TRAIN_EPOCH_LOSS_AUG: &str = "train/epoch_loss_aug";
pub const TRAIN_EPOCH_IMAGES_PER_SEC: &str = "train/epoch_images_per_sec";
/// Tiny model, every epoch, on the validation split.
pub const VAL_TOP1: &str = "val/top1";
pub const VAL_TOP5: &str = "val/top5";
pub const VAL_LOSS: &str = "val/loss";
/// Tiny model, every epoch, after its BN re-estimation: the largest |running mean| / σ of its
/// BN layers. Add layers output negative L1 distances; when their weights grow, the outputs sit
/// so far from 0 that float32 cannot resolve their spread (its spacing at 10⁷ σ is about σ), and
/// evaluation stops matching training (`shiftadd eval` shows it).
pub const VAL_BN_OFFSET: &str = "val/bn_offset";
/// Every epoch, in models with Add layers: the largest standard deviation of an Add layer's
/// stored weights, the tiny model's slice (the `std` of that epoch's `stored` histogram). They start at 1
/// (`ops.add_init = "unit"`) and nothing but weight decay (`train.add_weight_decay`) holds them.
pub const WEIGHTS_ADD_STD: &str = "weights/add_std";
/// The exact widest augmented configuration on validation (`eval.aug_top1`): a diagnostic of
/// the augmented model, not a model training samples often.
pub const VAL_TOP1_WIDEST: &str = "val/top1_widest";
/// Runs recorded before the validation split existed: the widest augmented model's top-1 (then
/// on the test split).
pub const VAL_TOP1_AUG_LEGACY: &str = "val/top1_aug";
/// Tiny model, once at the end of the run, on the test split.
pub const TEST_TOP1: &str = "test/top1";
pub const TEST_TOP5: &str = "test/top5";
pub const TEST_LOSS: &str = "test/loss";
/// Segmentation (`model.task = "segmentation"`), in place of top-1 and top-5: the tiny model's
/// mean IoU (over the classes present) and pixel accuracy, every epoch on the validation split
/// and once at the end on the test split; `val/iou/<class>` and `test/iou/<class>` per class
/// (class 0 is the background).
pub const VAL_MIOU: &str = "val/miou";
pub const VAL_PIXEL_ACC: &str = "val/pixel_acc";
pub const TEST_MIOU: &str = "test/miou";
pub const TEST_PIXEL_ACC: &str = "test/pixel_acc";
/// The widest augmented configuration's mean IoU on validation (`eval.aug_top1`).
pub const VAL_MIOU_WIDEST: &str = "val/miou_widest";

/// `<split>/iou/<class>`: one class's IoU (`split` `val` or `test`).
pub fn iou_of(split: &str, class: usize) -> String {
    format!("{split}/iou/{class}")
}

/// The key a run is selected and compared on for a split (`val` or `test`): top-1, or mean IoU
/// for segmentation.
pub fn primary(split: &str, segmentation: bool) -> &'static str {
    match (split, segmentation) {
        ("test", false) => TEST_TOP1,
        ("test", true) => TEST_MIOU,
        (_, false) => VAL_TOP1,
        (_, true) => VAL_MIOU,
    }
}

/// Hardware cost of the tiny model under the run's own `hw.model` (step 0).
pub const HW_ENERGY_MJ: &str = "hw/energy_mj";
pub const HW_COMPUTE_MJ: &str = "hw/compute_mj";
pub const HW_MEMORY_MJ: &str = "hw/memory_mj";
pub const HW_LATENCY_MS: &str = "hw/latency_ms";
pub const HW_ENERGY_MJ_ALL_MULT: &str = "hw/energy_mj_all_mult";

/// `hw/<cost model>/<name>`: a hardware figure under one cost model (`shiftaddnas`, `project`),
/// `name` one of `energy_mj`, `latency_ms`, `energy_mj_all_mult`.
pub fn hw_under(cost_model: &str, name: &str) -> String {
    format!("hw/{cost_model}/{name}")
}
