//! Evaluation: top-1 / top-5 / loss of a sub-model on a split, in order; BN re-estimation.

use std::sync::Arc;

use tch::{Device, Kind, TchError, Tensor};

use crate::data::{self, Loader, LoaderSpec, Splits};
use crate::model::{Exec, Net};
use crate::spec::arch::Widths;

/// Top-1, top-5 (fractions) and mean loss of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
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

pub(super) fn to_images(images: &[f32], n: usize, d: &data::Dataset, device: Device) -> Tensor {
    Tensor::from_slice(images)
        .view([n as i64, d.channels as i64, d.height as i64, d.width as i64])
        .to(device)
}
