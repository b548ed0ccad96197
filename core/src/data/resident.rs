//! A training set kept in a device's memory (issue 42, item 3): on a GPU, the loader thread's work
//! — gathering a batch, cropping, flipping, normalising, copying it over — becomes a handful of
//! kernels on data already there. The set is stored once as bytes, zero-padded by the crop's 4
//! pixels (masks padded with [`super::segment::IGNORE`]); a batch is `index_select`, two
//! `gather`s (rows, then columns: the crop offset and flip of each image) and a lookup into the
//! per-channel tables. Order, crops and flips are drawn on the CPU from (seed, epoch, image), as
//! the loader thread draws them, so the batches are the loader's, value for value (tested on
//! the CPU against it).

use tch::{Device, Kind, Tensor};

use super::{Dataset, LoaderSpec, batch_count, crop_of, epoch_order, lookup_tables, segment};

/// The crop's padding on each side.
const PAD: i64 = 4;

pub struct Resident {
    /// `u8 [N, C, H + 8, W + 8]`, zero-padded.
    images: Tensor,
    /// `u8 [N, H + 8, W + 8]`, padded with IGNORE (segmentation), else `None`.
    masks: Option<Tensor>,
    /// `i64 [N]` (classification), else `None`.
    labels: Option<Tensor>,
    /// `f32 [C · 256]`: channel c's normalised value of byte v at c · 256 + v.
    lut: Tensor,
    shape: (i64, i64, i64),
    len: usize,
    device: Device,
}

/// Bytes a resident copy of `data` takes on the device.
pub fn bytes(data: &Dataset) -> usize {
    let (c, h, w) = (data.channels, data.height + 8, data.width + 8);
    let mask = if data.is_segmentation() { h * w } else { 8 };
    data.len() * (c * h * w + mask)
}

fn padded(t: &Tensor, fill: i64, h: i64, w: i64) -> Tensor {
    let mut size = t.size();
    let d = size.len();
    size[d - 2] += 2 * PAD;
    size[d - 1] += 2 * PAD;
    let out = Tensor::full(size.as_slice(), fill, (Kind::Uint8, t.device()));
    out.narrow(d as i64 - 2, PAD, h)
        .narrow(d as i64 - 1, PAD, w)
        .copy_(t);
    out
}

impl Resident {
    /// `data` on `device`, normalised by `norm` (the training split's per-channel mean and sd).
    pub fn new(data: &Dataset, norm: &[(f32, f32)], device: Device) -> Self {
        let n = data.len() as i64;
        let (c, h, w) = (data.channels as i64, data.height as i64, data.width as i64);
        let images = Tensor::from_slice(&data.images)
            .view([n, c, h, w])
            .to(device);
        let masks = data.is_segmentation().then(|| {
            let m = Tensor::from_slice(&data.masks).view([n, h, w]).to(device);
            padded(&m, i64::from(segment::IGNORE), h, w)
        });
        let labels = (!data.is_segmentation()).then(|| {
            let l: Vec<i64> = data.labels.iter().map(|&v| i64::from(v)).collect();
            Tensor::from_slice(&l).to(device)
        });
        let lut: Vec<f32> = lookup_tables(norm).iter().flatten().copied().collect();
        Self {
            images: padded(&images, 0, h, w),
            masks,
            labels,
            lut: Tensor::from_slice(&lut).to(device),
            shape: (c, h, w),
            len: data.len(),
            device,
        }
    }

    /// The batch of images `idx` under `spec`'s crops and flips: `f32 [B, C, H, W]` and the
    /// targets as the loss takes them (`i64 [B]` or `i64 [B, H, W]`), on the device.
    pub fn batch(&self, idx: &[usize], spec: LoaderSpec) -> (Tensor, Tensor) {
        let (c, h, w) = self.shape;
        let b = idx.len() as i64;
        let (mut rows, mut cols) = (Vec::with_capacity(idx.len() * h as usize), Vec::new());
        cols.reserve(idx.len() * w as usize);
        for &i in idx {
            let (dx, dy, flip) = crop_of(i, spec);
            let (dx, dy) = (dx as i64, dy as i64);
            rows.extend((0..h).map(|y| y + dy + PAD));
            cols.extend((0..w).map(|x| if flip { w - 1 - x } else { x } + dx + PAD));
        }
        let on = |v: &[i64]| Tensor::from_slice(v).to(self.device);
        let index = on(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (rows, cols) = (on(&rows), on(&cols));
        let crop = |t: &Tensor, lead: &[i64]| {
            // t: [B, lead.., H + 8, W + 8] -> [B, lead.., H, W]
            let shape = |a: i64, bb: i64| [&[b][..], lead, &[a, bb]].concat();
            let ones = vec![1; lead.len()];
            let r = rows
                .view([&[b][..], &ones, &[h, 1]].concat().as_slice())
                .expand(shape(h, w + 2 * PAD).as_slice(), false);
            let by_rows = t.gather(1 + lead.len() as i64, &r, false);
            let cidx = cols
                .view([&[b][..], &ones, &[1, w]].concat().as_slice())
                .expand(shape(h, w).as_slice(), false);
            by_rows.gather(2 + lead.len() as i64, &cidx, false)
        };
        let pixels = crop(&self.images.index_select(0, &index), &[c]);
        let channel = (Tensor::arange(c, (Kind::Int64, self.device)) * 256).view([1, c, 1, 1]);
        let x = self.lut.take(&(pixels.to_kind(Kind::Int64) + channel));
        let y = match (&self.masks, &self.labels) {
            (Some(m), _) => crop(&m.index_select(0, &index), &[]).to_kind(Kind::Int64),
            (None, Some(l)) => l.index_select(0, &index),
            (None, None) => unreachable!("a resident set has labels or masks"),
        };
        (x, y)
    }

    /// The batches of one epoch from batch `skip` on, as the loader thread would make them:
    /// `(images, targets, n)`.
    pub fn epoch(
        &self,
        spec: LoaderSpec,
        skip: usize,
    ) -> impl Iterator<Item = (Tensor, Tensor, usize)> + '_ {
        let order = epoch_order(self.len, spec);
        let batches = batch_count(self.len, spec);
        let size = spec.batch_size.max(1);
        (skip.min(batches)..batches).map(move |b| {
            let idx = &order[b * size..((b + 1) * size).min(self.len)];
            let (x, y) = self.batch(idx, spec);
            (x, y, idx.len())
        })
    }

    /// Batches in an epoch of `spec`.
    pub fn batches(&self, spec: LoaderSpec) -> usize {
        batch_count(self.len, spec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Loader, make_batch};
    use super::*;
    use std::sync::Arc;

    fn dataset(segmentation: bool) -> Dataset {
        let (n, c, h, w) = (23usize, 3usize, 7usize, 5usize);
        let mut r = crate::rng::Rng::derive(4, 0, 0);
        let images = (0..n * c * h * w).map(|_| r.below(256) as u8).collect();
        Dataset {
            channels: c,
            height: h,
            width: w,
            classes: 4,
            images,
            labels: if segmentation {
                Vec::new()
            } else {
                (0..n).map(|i| (i % 4) as u16).collect()
            },
            masks: if segmentation {
                (0..n * h * w).map(|_| r.below(4) as u8).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The resident batches are the loader thread's, value for value: every batch of two
    /// epochs (crops, flips and order drawn), a resume mid-epoch, and evaluation's in-order walk;
    /// classification and segmentation (masks cropped with their images, padding not scored).
    #[test]
    fn resident_batches_are_the_loaders() {
        let norm = [(0.2f32, 0.3f32), (0.5, 0.25), (0.4, 0.2)];
        for seg in [false, true] {
            let data = dataset(seg);
            let resident = Resident::new(&data, &norm, Device::Cpu);
            let shared = Arc::new(data.clone());
            for (train, epoch, skip) in [(true, 0, 0), (true, 1, 0), (true, 1, 2), (false, 0, 0)] {
                let spec = LoaderSpec {
                    batch_size: 5,
                    train,
                    augment: true,
                    seed: 9,
                    epoch,
                    prefetch: 1,
                };
                let host: Vec<_> = Loader::from_batch(shared.clone(), &norm, spec, skip).collect();
                let here: Vec<_> = resident.epoch(spec, skip).collect();
                assert_eq!(
                    host.len(),
                    here.len(),
                    "batches (train {train}, skip {skip})"
                );
                assert_eq!(resident.batches(spec), host.len() + skip);
                let mut flipped_or_cropped = false;
                for (hb, (x, y, n)) in host.iter().zip(&here) {
                    assert_eq!(hb.n, *n);
                    let hx = Tensor::from_slice(&hb.images).view(x.size().as_slice());
                    assert!(
                        hx.equal(x),
                        "images differ (seg {seg}, train {train}, epoch {epoch})"
                    );
                    let hy = Tensor::from_slice(&hb.labels).view(y.size().as_slice());
                    assert!(hy.equal(y), "targets differ (seg {seg}, train {train})");
                    if seg {
                        flipped_or_cropped |=
                            y.eq(i64::from(segment::IGNORE)).any().int64_value(&[]) == 1;
                    }
                }
                if seg && train {
                    assert!(flipped_or_cropped, "some crop reached the padding");
                }
            }
        }
        // The direct call agrees with the host's batch maker too.
        let data = dataset(false);
        let spec = LoaderSpec {
            batch_size: 3,
            train: true,
            augment: true,
            seed: 1,
            epoch: 3,
            prefetch: 1,
        };
        let (x, _) = Resident::new(&data, &norm, Device::Cpu).batch(&[4, 0, 22], spec);
        let hb = make_batch(&data, &norm, &[4, 0, 22], spec);
        assert!(Tensor::from_slice(&hb.images).view([3, 3, 7, 5]).equal(&x));
        assert_eq!(bytes(&data), 23 * (3 * 15 * 13 + 8));
    }
}
