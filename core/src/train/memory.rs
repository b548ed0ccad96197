//! What one run needs of a device's memory (issue 42, item 5): so that a study or a NAS can put
//! `parallel` cells on one GPU and refuse, before anything starts, a `parallel` whose cells would
//! not fit.
//!
//! An upper estimate from the config alone, summed per kind of tensor:
//! - **state**: the stored (widest) model's weights, their gradients and the momentum buffers,
//!   and a remap's cached copy: 4 × weights, float32;
//! - **activations**: the larger of the two passes a step runs one after the other (the tiny
//!   model, then the widest augmented one; each pass's graph is freed by its backward): per layer
//!   its input (kept for the weight gradient), its output before BN and after the activation
//!   (kept by BN and the activation), times the batch; plus the backward's two largest live
//!   activation gradients;
//! - **data**: with `data.on_device`, the training set's resident copy (bytes, padded for the
//!   crop; the files' image counts — a VOC folder's is not known before it is read, and counts 0);
//! - **workspace**: what Add's backward and cuDNN take beyond that, 128 MiB (the ATen
//!   formulation's pairwise block and its copy, where the tiled kernels cannot run; cuDNN's
//!   workspace otherwise).
//!
//! The process's own CUDA context (about 0.5 GiB, shared by the cells of one process) is not a
//! cell's: the free memory [`cuda_refusal`] compares with is read once that context exists.

use tch::Device;

use crate::spec::arch::{ArchSpec, OpSpec};
use crate::spec::config::{Config, Hybrid};
use crate::spec::layers::{Layer, layers};

/// Beyond state and activations, per cell (see the module's notes).
pub const WORKSPACE_BYTES: u64 = 128 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub state: u64,
    pub activations: u64,
    pub data: u64,
    pub workspace: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.state + self.activations + self.data + self.workspace
    }
}

/// Bytes of the training set's resident copy (`data.on_device`), from the config alone.
fn resident_bytes(cfg: &Config) -> u64 {
    use crate::spec::config::DatasetName;
    let d = &cfg.data;
    if !d.on_device {
        return 0;
    }
    let images = match d.dataset {
        DatasetName::Synthetic => d.synthetic_train,
        DatasetName::FashionMnist => 60_000,
        DatasetName::Cifar10 | DatasetName::Cifar100 => 50_000,
        DatasetName::FashionMnistScenes => d.scenes_train,
        DatasetName::Voc => 0,
    };
    let images = if d.train_subset > 0 {
        images.min(d.train_subset)
    } else {
        images
    };
    let (c, side, _) = d.input_shape();
    let padded = (side + 8) as u64 * (side + 8) as u64;
    let target = if cfg.model.task == crate::spec::config::Task::Segmentation {
        padded
    } else {
        8
    };
    images as u64 * (c as u64 * padded + target)
}

/// Bytes of one pass's saved activations and its backward's live gradients, per image.
fn pass_bytes(list: &[Layer]) -> u64 {
    let saved: i64 = list
        .iter()
        .map(|l| l.in_activations() + 2 * l.out_activations())
        .sum();
    let mut largest: Vec<i64> = list.iter().map(Layer::out_activations).collect();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let grads: i64 = largest.iter().take(2).sum();
    u64::try_from(saved + grads).unwrap_or(0) * 4
}

/// The estimate for a run of `cfg` on `resolution`-pixel inputs of `channels` channels.
pub fn estimate(cfg: &Config) -> MemoryEstimate {
    let (channels, resolution, classes) = cfg.data.input_shape();
    let spec = ArchSpec::from_config(cfg, channels, resolution, classes);
    let ops = OpSpec::from_config(cfg);
    let tiny = layers(&spec, &spec.base_widths(), &ops, resolution);
    let widest = spec.max_widths(&cfg.aug);
    let aug = if cfg.aug.hybrid == Hybrid::None {
        Vec::new()
    } else {
        layers(&spec, &widest, &OpSpec::mult(), resolution)
    };
    let stored = layers(&spec, &widest, &OpSpec::mult(), resolution);
    let weights: i64 = stored
        .iter()
        .map(|l| l.params() + if l.bn { 2 * l.c_out } else { l.c_out })
        .sum();
    let batch = cfg.train.batch_size as u64;
    MemoryEstimate {
        state: u64::try_from(weights).unwrap_or(0) * 4 * 4,
        activations: batch * pass_bytes(&tiny).max(pass_bytes(&aug)),
        data: resident_bytes(cfg),
        workspace: WORKSPACE_BYTES,
    }
}

/// Why `parallel` cells of the given estimates do not fit `free` bytes of `device`, or `None`
/// when they do: the cells take the `parallel` largest estimates.
pub fn refusal(
    estimates: &[MemoryEstimate],
    parallel: usize,
    free: u64,
    device: &str,
) -> Option<String> {
    let mut totals: Vec<u64> = estimates.iter().map(MemoryEstimate::total).collect();
    totals.sort_unstable_by(|a, b| b.cmp(a));
    let at_once = parallel.max(1).min(totals.len().max(1));
    let need: u64 = totals.iter().take(at_once).sum();
    if need <= free {
        return None;
    }
    let largest = totals.first().copied().unwrap_or(0);
    let fits = free.checked_div(largest).unwrap_or(0);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let advice = if fits == 0 {
        "not even one cell fits: lower train.batch_size".to_owned()
    } else {
        format!("--parallel {fits} fits")
    };
    Some(format!(
        "{at_once} cells at once need about {:.1} GiB of {device}'s memory (the largest cell {:.2} GiB) \
         and {device} has {:.1} GiB free; {advice}",
        gib(need),
        gib(largest),
        gib(free)
    ))
}

/// Why `parallel` cells of these configs would not fit the GPU they train on, or `None`: on the
/// CPU, and where the driver cannot be asked (the runs then meet the device as before).
pub fn cuda_refusal(configs: &[Config], parallel: usize) -> Option<String> {
    let index = configs
        .iter()
        .find_map(|c| match super::resolve_device(c.train.device) {
            Ok(Device::Cuda(i)) => Some(i),
            _ => None,
        })?;
    let (free, _) = crate::ops::adder::cuda_memory(index).ok()?;
    let estimates: Vec<MemoryEstimate> = configs.iter().map(estimate).collect();
    refusal(&estimates, parallel, free, &format!("cuda:{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(set: &[&str]) -> Config {
        let set: Vec<String> = set.iter().map(|s| (*s).to_owned()).collect();
        Config::from_toml_str("", "test", &set).expect("config")
    }

    /// The estimate grows with the batch (activations) and with augmentation (the widest pass),
    /// and its state is the stored model's.
    #[test]
    fn the_estimate_follows_batch_augmentation_and_model() {
        let base = [
            "data.dataset=synthetic",
            "model.name=mbv2-tiny",
            "aug.hybrid=none",
        ];
        let small = estimate(&config(&[&base[..], &["train.batch_size=64"]].concat()));
        let large = estimate(&config(&[&base[..], &["train.batch_size=128"]].concat()));
        assert_eq!(large.activations, 2 * small.activations);
        assert_eq!(large.state, small.state);
        let aug = estimate(&config(&[
            "data.dataset=synthetic",
            "model.name=mbv2-tiny",
            "aug.hybrid=mult",
            "train.batch_size=64",
        ]));
        assert!(aug.activations > small.activations, "{aug:?} vs {small:?}");
        // The resident training set: 10,000 synthetic 3 × 40 × 40 images with labels, or none.
        assert_eq!(small.data, 10_000 * (3 * 40 * 40 + 8));
        let off = estimate(&config(
            &[&base[..], &["train.batch_size=64", "data.on_device=false"]].concat(),
        ));
        assert_eq!(off.data, 0);
        let micro = estimate(&config(&[
            "data.dataset=synthetic",
            "model.name=micro",
            "train.batch_size=64",
        ]));
        assert!(micro.total() < aug.total());
    }

    /// Cells that fit are let through; ones that do not are refused with the figures and a
    /// `--parallel` that fits.
    #[test]
    fn too_many_cells_are_refused_with_what_fits() {
        let cell = MemoryEstimate {
            state: 1 << 30,
            activations: 1 << 30,
            data: 0,
            workspace: 0,
        };
        let cells = [cell; 12];
        let free = 8 * (2 << 30) + (1 << 29);
        assert_eq!(refusal(&cells, 8, free, "cuda:0"), None);
        let why = refusal(&cells, 12, free, "cuda:0").expect("12 do not fit");
        assert!(
            why.contains("12 cells at once need about 24.0 GiB"),
            "{why}"
        );
        assert!(why.contains("16.5 GiB free; --parallel 8 fits"), "{why}");
        // A study of 3 cells at parallel 12 needs only 3 cells' memory.
        assert_eq!(refusal(&cells[..3], 12, 3 * (2 << 30), "cuda:0"), None);
        // On the CPU nothing is refused.
        assert_eq!(
            cuda_refusal(
                &[config(&["data.dataset=synthetic", "train.device=cpu"])],
                64
            ),
            None
        );
        let why = refusal(&cells, 1, 1 << 30, "cuda:0").expect("none fits");
        assert!(why.contains("not even one cell fits"), "{why}");
    }
}
