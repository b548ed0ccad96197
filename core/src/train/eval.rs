//! Evaluation: top-1 / top-5 / loss of a sub-model on a split (pixel accuracy, mean and per-class
//! IoU / loss for segmentation), in order; BN re-estimation.

use std::sync::Arc;

use tch::{Device, Kind, Reduction, TchError, Tensor};

use crate::data::segment::IGNORE;
use crate::data::{self, Loader, LoaderSpec, Splits};
use crate::model::{Exec, Net};
use crate::spec::arch::Widths;

use super::miou::Confusion;

/// Top-1, top-5 (fractions) and mean loss of one evaluation; for a segmentation set top-1 and
/// top-5 are NaN (there is no class per image) and `seg` holds its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub top1: f64,
    pub top5: f64,
    /// Mean cross-entropy per image (segmentation: per scored pixel).
    pub loss: f64,
    pub seg: Option<SegScores>,
}

/// Segmentation scores of one evaluation (fractions).
#[derive(Debug, Clone, PartialEq)]
pub struct SegScores {
    pub pixel_accuracy: f64,
    /// Mean over the classes present in targets or predictions.
    pub miou: f64,
    /// Per class; `None` where the class is in neither.
    pub iou: Vec<Option<f64>>,
}

impl Scores {
    /// The figure runs are selected and compared on: top-1, or mean IoU for segmentation.
    pub fn primary(&self) -> f64 {
        self.seg.as_ref().map_or(self.top1, |s| s.miou)
    }
}

/// [`Scores`] of the sub-model `widths` on `data` (normalised with `norm`): `splits.val` every
/// epoch, `splits.test` once at the end of a run.
pub fn evaluate(
    net: &Net,
    widths: &Widths,
    exec: Exec,
    data: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    batch_size: usize,
    device: Device,
) -> Result<Scores, TchError> {
    score(data, norm, batch_size, device, |x| {
        net.forward(x, widths, false, exec)
    })
}

/// [`Scores`] of any classifier `forward` (normalised images → logits) on `data`, every image
/// once, in order: the training loop's sub-models and an exported model alike.
pub fn score<E: From<TchError>>(
    data: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    batch_size: usize,
    device: Device,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor, E>,
) -> Result<Scores, E> {
    if data.is_segmentation() {
        return score_pixels(data, norm, batch_size, device, forward);
    }
    let (mut top1, mut top5, mut loss, mut n) = (0i64, 0i64, 0f64, 0usize);
    let k = 5.min(data.classes as i64);
    tch::no_grad(|| {
        for b in Loader::new(data.clone(), norm, in_order(batch_size)) {
            let x = to_images(&b.images, b.n, data, device);
            let y = Tensor::from_slice(&b.labels).to(device);
            let logits = forward(&x)?;
            loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * b.n as f64;
            top1 += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let (_, idx) = logits.topk(k, -1, true, false);
            top5 += idx
                .eq_tensor(&y.unsqueeze(-1))
                .sum(Kind::Int64)
                .int64_value(&[]);
            n += b.n;
        }
        Ok::<(), E>(())
    })?;
    let n = n.max(1) as f64;
    Ok(Scores {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        loss: loss / n,
        seg: None,
    })
}

/// [`score`] of a segmentation model (normalised images → [N, classes, H, W] logits): the
/// confusion matrix over every scored pixel ([`IGNORE`] left out), counted on the device.
fn score_pixels<E: From<TchError>>(
    data: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    batch_size: usize,
    device: Device,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor, E>,
) -> Result<Scores, E> {
    let classes = data.classes as i64;
    let mut confusion = Confusion::new(data.classes);
    let (mut loss, mut pixels) = (0f64, 0i64);
    tch::no_grad(|| {
        for b in Loader::new(data.clone(), norm, in_order(batch_size)) {
            let x = to_images(&b.images, b.n, data, device);
            let y = to_masks(&b.labels, b.n, data, device);
            let logits = forward(&x)?;
            let scored = y.f_ne(i64::from(IGNORE))?;
            let n = scored.f_sum(Kind::Int64)?.int64_value(&[]);
            let ce = logits.f_cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Sum,
                i64::from(IGNORE),
                0.0,
            )?;
            loss += ce.double_value(&[]);
            pixels += n;
            let pairs = y
                .f_masked_select(&scored)?
                .f_mul_scalar(classes)?
                .f_add(&logits.f_argmax(1, false)?.f_masked_select(&scored)?)?;
            let counts = pairs.f_bincount(None::<Tensor>, classes * classes)?;
            confusion.add_counts(&Vec::<i64>::try_from(counts.to_device(Device::Cpu))?);
        }
        Ok::<(), E>(())
    })?;
    Ok(Scores {
        top1: f64::NAN,
        top5: f64::NAN,
        loss: loss / pixels.max(1) as f64,
        seg: Some(SegScores {
            pixel_accuracy: confusion.pixel_accuracy(),
            miou: confusion.mean_iou(),
            iou: confusion.iou(),
        }),
    })
}

/// Evaluation order: every image once, in order, no augmentation.
pub fn in_order(batch_size: usize) -> LoaderSpec {
    LoaderSpec {
        batch_size,
        train: false,
        augment: false,
        seed: 0,
        epoch: 0,
        prefetch: 2,
    }
}

/// Re-estimate BN statistics of the sub-model `widths`: reset them, then average the batch
/// statistics of the first `images` training images (in train mode, without gradients).
pub fn reestimate_bn(
    net: &Net,
    widths: &Widths,
    exec: Exec,
    splits: &Splits,
    images: usize,
    batch_size: usize,
    device: Device,
) -> Result<(), TchError> {
    if images == 0 {
        return Ok(());
    }
    net.reset_bn_stats();
    let result = tch::no_grad(|| {
        for (i, b) in Loader::first(
            splits.train.clone(),
            &splits.norm,
            in_order(batch_size),
            images,
        )
        .enumerate()
        {
            net.set_bn_momentum(Some(1.0 / (i + 1) as f64)); // a cumulative average
            let _ = net.forward(
                &to_images(&b.images, b.n, &splits.train, device),
                widths,
                true,
                exec,
            )?;
        }
        Ok(())
    });
    net.set_bn_momentum(None);
    result
}

/// A batch's per-pixel targets as [N, H, W] class indices.
pub(super) fn to_masks(labels: &[i64], n: usize, d: &data::Dataset, device: Device) -> Tensor {
    Tensor::from_slice(labels)
        .view([n as i64, d.height as i64, d.width as i64])
        .to(device)
}

/// A batch's targets as the loss takes them: [N] classes, or [N, H, W] for a segmentation set.
pub(super) fn to_targets(labels: &[i64], n: usize, d: &data::Dataset, device: Device) -> Tensor {
    if d.is_segmentation() {
        to_masks(labels, n, d, device)
    } else {
        Tensor::from_slice(labels).to(device)
    }
}

pub(super) fn to_images(images: &[f32], n: usize, d: &data::Dataset, device: Device) -> Tensor {
    Tensor::from_slice(images)
        .view([n as i64, d.channels as i64, d.height as i64, d.width as i64])
        .to(device)
}
