//! Datasets and the batch loader.
//!
//! A [`Dataset`] is plain memory: `u8` images in NCHW order and `u16` labels, with the per-channel
//! mean and standard deviation of its training split. The [`Loader`] prepares normalised `f32`
//! batches on a named background thread (random crop with 4-pixel zero padding and horizontal flip
//! for training); its order and augmentation depend only on (seed, epoch), so a resumed run sees
//! exactly the batches it would have seen. On a GPU, [`resident::Resident`] keeps a training set in
//! the device's memory and makes the same batches there.

mod cifar;
mod idx;
pub mod resident;
pub mod segment;
mod synthetic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};

use crate::rng::Rng;
use crate::spec::config::{DataConfig, DatasetName};

pub use cifar::{check as check_cifar_dir, load as load_cifar, write_cifar_binary};
pub use idx::{check_fashion_mnist as check_fashion_mnist_dir, load_fashion_mnist, write_idx};

/// Default location of the Debian `dataset-fashion-mnist` package.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{what} not found at {path} ({hint})")]
    Missing {
        what: String,
        path: PathBuf,
        hint: String,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataError {
    fn format(path: &Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Why something at `path` cannot be read as a data file although it exists (`None`: it is a
/// regular file, or nothing is there): a folder, a FIFO, a device, a socket or a loop of links —
/// none has a length to check, and some never end.
pub(crate) fn not_a_file(path: &Path) -> Option<DataError> {
    use std::os::unix::fs::FileTypeExt;
    let what = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => return None,
        Ok(m) => {
            let t = m.file_type();
            if t.is_dir() {
                "a folder"
            } else if t.is_fifo() {
                "a FIFO (named pipe)"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        }
        // ELOOP: the links point at each other.
        Err(e) if e.raw_os_error() == Some(40) => "a loop of symbolic links",
        Err(_) if std::fs::symlink_metadata(path).is_ok() => "a link to nothing",
        Err(_) => return None,
    };
    Some(DataError::format(
        path,
        format!("is {what}, not a data file (a data file is a regular file of fixed length)"),
    ))
}

/// Images and labels of one split, in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// `len * channels * height * width` bytes, NCHW.
    pub images: Vec<u8>,
    /// A class per image (classification; empty for segmentation).
    pub labels: Vec<u16>,
    /// A class per pixel, `len * height * width` bytes (segmentation: [`segment::IGNORE`] is not
    /// scored; empty for classification).
    pub masks: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.images.len() / self.image_size().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Whether its targets are per pixel.
    pub fn is_segmentation(&self) -> bool {
        !self.masks.is_empty()
    }

    /// Image `i` and its mask (empty for classification).
    pub fn item(&self, i: usize) -> (&[u8], &[u8]) {
        let (n, m) = (self.image_size(), self.plane_if_masked());
        (
            &self.images[i * n..(i + 1) * n],
            &self.masks[i * m..(i + 1) * m],
        )
    }

    /// Mask bytes per image: `height × width` with masks, else 0.
    fn plane_if_masked(&self) -> usize {
        if self.is_segmentation() {
            self.height * self.width
        } else {
            0
        }
    }

    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Remove the last `n` images and return them as a dataset of their own.
    fn split_off_last(&mut self, n: usize) -> Self {
        let keep = self.len() - n.min(self.len());
        let labels = if self.labels.is_empty() {
            Vec::new()
        } else {
            self.labels.split_off(keep)
        };
        Self {
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            masks: self.masks.split_off(keep * self.plane_if_masked()),
            images: self.images.split_off(keep * self.image_size()),
            labels,
        }
    }

    /// A copy of the first `n` images (all of them when there are no more).
    pub fn head(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            images: self.images[..n * self.image_size()].to_vec(),
            labels: self.labels[..n.min(self.labels.len())].to_vec(),
            masks: self.masks[..n * self.plane_if_masked()].to_vec(),
        }
    }

    fn truncate(&mut self, n: usize) {
        if n > 0 && n < self.len() {
            self.labels.truncate(n);
            self.masks.truncate(n * self.plane_if_masked());
            self.images.truncate(n * self.image_size());
        }
    }

    /// Per-channel mean and standard deviation of the pixel values scaled to [0, 1].
    pub fn channel_stats(&self) -> Vec<(f32, f32)> {
        let plane = self.height * self.width;
        (0..self.channels)
            .map(|c| {
                let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
                for img in self.images.chunks_exact(self.image_size()) {
                    for &p in &img[c * plane..(c + 1) * plane] {
                        let v = f64::from(p) / 255.0;
                        sum += v;
                        sq += v * v;
                    }
                    n += plane as f64;
                }
                let mean = sum / n.max(1.0);
                let std = (sq / n.max(1.0) - mean * mean).max(1e-8).sqrt();
                (mean as f32, std as f32)
            })
            .collect()
    }
}

/// Training, validation and test splits plus the normalisation taken from the training split.
/// Validation images are the last `data.val_images` of the training file (deterministic and
/// disjoint from the training images); every per-epoch number and every selection uses them,
/// the test split is evaluated once at the end of a run.
#[derive(Debug, Clone)]
pub struct Splits {
    pub name: DatasetName,
    pub train: Arc<Dataset>,
    pub val: Arc<Dataset>,
    pub test: Arc<Dataset>,
    pub norm: Vec<(f32, f32)>,
}

impl Splits {
    /// The splits as configured: training and test cut to `train_subset` / `test_subset`, the
    /// normalisation of what is left for training.
    fn of(cfg: &DataConfig, mut train: Dataset, val: Dataset, mut test: Dataset) -> Self {
        train.truncate(cfg.train_subset);
        test.truncate(cfg.test_subset);
        let norm = train.channel_stats();
        Self {
            name: cfg.dataset,
            train: Arc::new(train),
            val: Arc::new(val),
            test: Arc::new(test),
            norm,
        }
    }
}

/// The directory a dataset is read from.
pub fn data_dir(cfg: &DataConfig) -> PathBuf {
    let fmnist = matches!(
        cfg.dataset,
        DatasetName::FashionMnist | DatasetName::FashionMnistScenes
    );
    if cfg.dir.is_empty() && fmnist {
        PathBuf::from(FASHION_MNIST_DIR)
    } else {
        PathBuf::from(&cfg.dir)
    }
}

/// Cheap check, before a run is created, that the dataset is there and whole: its directory,
/// every file, and each file's header and size (idx: magic and dimensions against the length,
/// a gzip's recorded length included; CIFAR: whole records). Reads headers and sizes only, so
/// damage inside a file of the right size is still found when it loads.
pub fn check_available(cfg: &DataConfig) -> Result<(), DataError> {
    if cfg.dataset == DatasetName::Synthetic {
        return Ok(());
    }
    let dir = data_dir(cfg);
    if dir.exists() && !dir.is_dir() {
        return Err(DataError::format(
            &dir,
            format!(
                "is a file, not a folder: data.dir names the folder that holds {}'s files",
                cfg.dataset.as_str()
            ),
        ));
    }
    if !dir.is_dir() {
        return Err(DataError::Missing {
            what: format!("{} directory", cfg.dataset.as_str()),
            path: dir,
            hint: hint(cfg.dataset).into(),
        });
    }
    match cfg.dataset {
        DatasetName::Synthetic => Ok(()),
        DatasetName::FashionMnist | DatasetName::FashionMnistScenes => {
            idx::check_fashion_mnist(&dir)
        }
        DatasetName::Cifar10 => cifar::check(&dir, false),
        DatasetName::Cifar100 => cifar::check(&dir, true),
        DatasetName::Voc => segment::check_voc(&dir, cfg.voc_classes),
    }
}

fn hint(name: DatasetName) -> &'static str {
    match name {
        DatasetName::Synthetic => "built in",
        DatasetName::FashionMnist | DatasetName::FashionMnistScenes => {
            "expected the idx files train-images-idx3-ubyte[.gz] etc.; `apt-get install dataset-fashion-mnist` provides them"
        }
        DatasetName::Cifar10 => {
            "expected the CIFAR-10 binary version: data_batch_1..5.bin and test_batch.bin (or their folder cifar-10-batches-bin)"
        }
        DatasetName::Cifar100 => {
            "expected the CIFAR-100 binary version: train.bin and test.bin (or their folder cifar-100-binary)"
        }
        DatasetName::Voc => {
            "expected the Pascal VOC layout: JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt"
        }
    }
}

/// Load both splits as configured.
pub fn load(cfg: &DataConfig) -> Result<Splits, DataError> {
    check_available(cfg)?;
    let dir = data_dir(cfg);
    if cfg.dataset == DatasetName::FashionMnistScenes {
        return load_scenes(cfg, &dir);
    }
    let (mut train, test) = match cfg.dataset {
        DatasetName::Synthetic => (
            synthetic::generate(cfg.synthetic_seed, 0, cfg.synthetic_train),
            synthetic::generate(cfg.synthetic_seed, 1, cfg.synthetic_test),
        ),
        DatasetName::FashionMnist => idx::load_fashion_mnist(&dir)?,
        DatasetName::Cifar10 => cifar::load(&dir, false)?,
        DatasetName::Cifar100 => cifar::load(&dir, true)?,
        DatasetName::FashionMnistScenes => unreachable!("composed above"),
        // VOC's `val` list is its public benchmark split: the test split here, as Fashion-MNIST's
        // and CIFAR's test files are; validation is held out of `train` like theirs.
        DatasetName::Voc => {
            let (classes, size, rgb) = (cfg.voc_classes, cfg.voc_size, cfg.voc_rgb);
            (
                segment::load_voc(&dir, "train", classes, size, rgb)?,
                segment::load_voc(&dir, "val", classes, size, rgb)?,
            )
        }
    };
    let n_val = cfg.val_images.resolve(cfg.dataset, train.len());
    if n_val == 0 || n_val >= train.len() {
        return Err(DataError::format(
            &dir,
            format!(
                "data.val_images = {n_val}: the training file has {} images; validation needs at least one and must leave training images",
                train.len()
            ),
        ));
    }
    let val = train.split_off_last(n_val);
    Ok(Splits::of(cfg, train, val, test))
}

/// `fashion-mnist-scenes`: canvases composed from Fashion-MNIST's items, each split from items
/// of its own — training canvases from the training file's first nine tenths, validation ones
/// from its last tenth, test ones from the test file — so no item of a scored canvas was seen in
/// training.
fn load_scenes(cfg: &DataConfig, dir: &Path) -> Result<Splits, DataError> {
    let (mut items, test_items) = idx::load_fashion_mnist(dir)?;
    let val_items = items.split_off_last(items.len() / 10);
    let n_val = cfg.val_images.resolve(cfg.dataset, cfg.scenes_train);
    if n_val == 0 || n_val >= cfg.scenes_train {
        return Err(DataError::format(
            dir,
            format!(
                "data.val_images = {n_val}: data.scenes_train is {}; validation needs at least one scene and must leave training scenes",
                cfg.scenes_train
            ),
        ));
    }
    let params = segment::Composite {
        canvas: cfg.canvas,
        items: (cfg.items_min, cfg.items_max),
        foreground: cfg.foreground,
        edge: cfg.edge,
    };
    let seed = cfg.scenes_seed;
    let train = segment::compose(&items, cfg.scenes_train - n_val, &params, seed);
    let val = segment::compose(&val_items, n_val, &params, seed ^ 0x5EED_0001);
    let test = segment::compose(&test_items, cfg.scenes_test, &params, seed ^ 0x5EED_0002);
    Ok(Splits::of(cfg, train, val, test))
}

/// One batch, ready to become tensors: `images` is `n * c * h * w` normalised floats; `labels`
/// a class per image, or per pixel (`n * h * w`, [`segment::IGNORE`] not scored) for a
/// segmentation set.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub n: usize,
}

/// How a loader walks its dataset.
#[derive(Debug, Clone, Copy)]
pub struct LoaderSpec {
    pub batch_size: usize,
    /// Shuffle and augment (training) or walk in order without augmentation (evaluation).
    pub train: bool,
    pub augment: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// Batches produced by a background thread; dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    pub batches: usize,
}

impl Loader {
    pub fn new(data: Arc<Dataset>, norm: &[(f32, f32)], spec: LoaderSpec) -> Self {
        Self::first(data, norm, spec, usize::MAX)
    }

    /// The same batches as [`Loader::new`] from batch `skip` on (a run resumed mid-epoch): every
    /// batch depends only on (seed, epoch, its index), so the skipped ones are never made.
    pub fn from_batch(
        data: Arc<Dataset>,
        norm: &[(f32, f32)],
        spec: LoaderSpec,
        skip: usize,
    ) -> Self {
        Self::spawn(data, norm, spec, usize::MAX, skip)
    }

    /// A loader over the first `limit` images of `data` only (no copy of the dataset).
    pub fn first(data: Arc<Dataset>, norm: &[(f32, f32)], spec: LoaderSpec, limit: usize) -> Self {
        Self::spawn(data, norm, spec, limit, 0)
    }

    fn spawn(
        data: Arc<Dataset>,
        norm: &[(f32, f32)],
        spec: LoaderSpec,
        limit: usize,
        skip: usize,
    ) -> Self {
        let n = data.len().min(limit);
        let batches = batch_count(n, spec);
        let (tx, rx) = bounded(spec.prefetch.max(1));
        let norm = norm.to_vec();
        let handle = std::thread::Builder::new()
            .name(format!("loader-e{}", spec.epoch))
            .spawn(move || {
                let order = epoch_order(n, spec);
                for b in skip.min(batches)..batches {
                    let idx = &order[b * spec.batch_size..((b + 1) * spec.batch_size).min(n)];
                    let batch = make_batch(&data, &norm, idx, spec);
                    if tx.send(batch).is_err() {
                        return; // consumer gone
                    }
                }
            })
            .expect("spawning a loader thread");
        Self {
            rx: Some(rx),
            handle: Some(handle),
            batches,
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.rx = None; // unblocks the producer's send
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Batches of an epoch over `n` images: training drops the last partial batch.
pub(crate) fn batch_count(n: usize, spec: LoaderSpec) -> usize {
    if spec.train {
        n / spec.batch_size.max(1)
    } else {
        n.div_ceil(spec.batch_size.max(1))
    }
}

/// The order an epoch walks `n` images in: shuffled by (seed, epoch) for training.
pub(crate) fn epoch_order(n: usize, spec: LoaderSpec) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if spec.train {
        Rng::derive(spec.seed, spec.epoch, u64::MAX).shuffle(&mut order);
    }
    order
}

/// Image `i`'s crop offset (dx, dy, each −4 – 4) and flip in this epoch: drawn from (seed, epoch,
/// i) alone, so any loader on any device makes the same batch.
pub(crate) fn crop_of(i: usize, spec: LoaderSpec) -> (isize, isize, bool) {
    if spec.train && spec.augment {
        let mut r = Rng::derive(spec.seed, spec.epoch, i as u64);
        (
            r.below(9) as isize - 4,
            r.below(9) as isize - 4,
            r.below(2) == 1,
        )
    } else {
        (0, 0, false)
    }
}

/// Per-channel lookup tables: byte -> normalised float (padding is a zero byte: black).
pub(crate) fn lookup_tables(norm: &[(f32, f32)]) -> Vec<[f32; 256]> {
    norm.iter()
        .map(|&(m, s)| std::array::from_fn(|v| (v as f32 / 255.0 - m) / s))
        .collect()
}

fn make_batch(data: &Dataset, norm: &[(f32, f32)], idx: &[usize], spec: LoaderSpec) -> Batch {
    let (c, h, w) = (data.channels, data.height, data.width);
    let size = data.image_size();
    let mut images = vec![0f32; idx.len() * size];
    let plane = if data.is_segmentation() { h * w } else { 0 };
    let mut labels = Vec::with_capacity(idx.len() * plane.max(1));
    let lut = lookup_tables(norm);
    for (slot, &i) in idx.iter().enumerate() {
        if plane == 0 {
            labels.push(i64::from(data.labels[i]));
        }
        let src = &data.images[i * size..(i + 1) * size];
        let dst = &mut images[slot * size..(slot + 1) * size];
        let (dx, dy, flip) = crop_of(i, spec);
        // Where output pixel (x, y) reads from: the same crop and flip for every channel and
        // the mask; `None` in the padding (black, and not scored).
        let source = |x: usize, y: usize| -> Option<usize> {
            let (sy, sx) = (
                y as isize + dy,
                (if flip { w - 1 - x } else { x }) as isize + dx,
            );
            (sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize)
                .then(|| sy as usize * w + sx as usize)
        };
        for ch in 0..c {
            let table = &lut[ch];
            let src_plane = &src[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let byte = source(x, y).map_or(0, |at| src_plane[at]);
                    dst[ch * h * w + y * w + x] = table[byte as usize];
                }
            }
        }
        if plane > 0 {
            let mask = &data.masks[i * plane..(i + 1) * plane];
            for y in 0..h {
                for x in 0..w {
                    let m = source(x, y).map_or(segment::IGNORE, |at| mask[at]);
                    labels.push(i64::from(m));
                }
            }
        }
    }
    Batch {
        images,
        labels,
        n: idx.len(),
    }
}

/// Read a whole file, transparently gunzipping when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO, a folder, a device, a loop of links or a file given where a data file or folder
    /// belongs is named for what it is, not "not found" (and a FIFO is never opened: it would
    /// wait for a writer).
    #[test]
    fn what_is_not_a_data_file_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let fm = dir.path().join("fm");
        std::fs::create_dir(&fm).expect("mkdir");
        let fifo = fm.join("train-images-idx3-ubyte");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "mkfifo");
        let cfg = |dataset: DatasetName, dir: &Path| DataConfig {
            dataset,
            dir: dir.display().to_string(),
            ..DataConfig::default()
        };
        let err = |c: &DataConfig| check_available(c).expect_err("refused").to_string();
        let e = err(&cfg(DatasetName::FashionMnist, &fm));
        assert!(
            e.contains("FIFO") && e.contains("train-images-idx3-ubyte"),
            "{e}"
        );
        std::fs::remove_file(&fifo).expect("rm");
        std::fs::create_dir(&fifo).expect("a folder in its place");
        let e = err(&cfg(DatasetName::FashionMnist, &fm));
        assert!(e.contains("is a folder, not a data file"), "{e}");
        std::fs::remove_dir(&fifo).expect("rm");
        std::os::unix::fs::symlink(fm.join("b"), fm.join("a")).expect("link");
        std::os::unix::fs::symlink(fm.join("a"), fm.join("b")).expect("link");
        std::os::unix::fs::symlink(fm.join("a"), &fifo).expect("link");
        let e = err(&cfg(DatasetName::FashionMnist, &fm));
        assert!(e.contains("loop of symbolic links"), "{e}");
        let cifar = dir.path().join("cifar");
        std::fs::create_dir(&cifar).expect("mkdir");
        std::os::unix::fs::symlink("/dev/zero", cifar.join("test.bin")).expect("link");
        std::fs::write(cifar.join("train.bin"), [0u8; 3074]).expect("write");
        let e = err(&cfg(DatasetName::Cifar100, &cifar));
        assert!(
            e.contains("test.bin") && e.contains("character device"),
            "{e}"
        );
        let e = err(&cfg(DatasetName::Cifar100, &cifar.join("train.bin")));
        assert!(e.contains("is a file, not a folder"), "{e}");
    }

    fn tiny_dataset() -> Dataset {
        Dataset {
            channels: 1,
            height: 4,
            width: 4,
            classes: 2,
            images: (0..64u8).collect(),
            labels: vec![0, 1, 0, 1],
            masks: Vec::new(),
        }
    }

    #[test]
    fn loader_is_deterministic_and_complete() {
        let data = Arc::new(tiny_dataset());
        let norm = data.channel_stats();
        let spec = LoaderSpec {
            batch_size: 2,
            train: true,
            augment: true,
            seed: 3,
            epoch: 1,
            prefetch: 2,
        };
        let a: Vec<Batch> = Loader::new(data.clone(), &norm, spec).collect();
        let b: Vec<Batch> = Loader::new(data.clone(), &norm, spec).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter().map(|b| b.images.clone()).collect::<Vec<_>>(),
            b.iter().map(|b| b.images.clone()).collect::<Vec<_>>()
        );
        let other: Vec<Batch> =
            Loader::new(data.clone(), &norm, LoaderSpec { epoch: 2, ..spec }).collect();
        assert_ne!(
            a[0].images, other[0].images,
            "epochs differ in order or augmentation"
        );
        // Evaluation: in order, no augmentation, partial last batch kept.
        let eval: Vec<Batch> = Loader::new(
            data,
            &norm,
            LoaderSpec {
                batch_size: 3,
                train: false,
                ..spec
            },
        )
        .collect();
        assert_eq!(eval.iter().map(|b| b.n).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(eval[0].labels, vec![0, 1, 0]);
        let (m, s) = norm[0];
        assert!((eval[0].images[5] - (5.0 / 255.0 - m) / s).abs() < 1e-6);
    }

    /// A segmentation batch's mask takes the image's crop and flip pixel for pixel, and the
    /// padding the crop brings in is not scored.
    #[test]
    fn masks_follow_their_images_crop_and_flip() {
        let (h, w) = (6, 5);
        let n = 8;
        // Image bytes 1 + the pixel's index; masks the same index (below IGNORE).
        let images: Vec<u8> = (0..n)
            .flat_map(|_| (0..h * w).map(|p| 1 + p as u8))
            .collect();
        let data = Arc::new(Dataset {
            channels: 1,
            height: h,
            width: w,
            classes: 40,
            masks: images.iter().map(|v| v - 1).collect(),
            images,
            labels: Vec::new(),
        });
        assert!(data.is_segmentation() && data.len() == n);
        let norm = [(0.0, 1.0)];
        let spec = LoaderSpec {
            batch_size: n,
            train: true,
            augment: true,
            seed: 11,
            epoch: 0,
            prefetch: 1,
        };
        let b = Loader::new(data, &norm, spec).next().expect("a batch");
        assert_eq!((b.images.len(), b.labels.len()), (n * h * w, n * h * w));
        let (mut padded, mut moved) = (0, 0);
        for (i, (&x, &m)) in b.images.iter().zip(&b.labels).enumerate() {
            let byte = (x * 255.0).round() as i64;
            if byte == 0 {
                assert_eq!(m, i64::from(segment::IGNORE), "padding is not scored");
                padded += 1;
            } else {
                assert_eq!(m, byte - 1, "pixel {i}: the mask moved with its image");
                moved += i64::from(byte - 1 != (i % (h * w)) as i64);
            }
        }
        assert!(padded > 0 && moved > 0, "crops and flips were drawn");
    }

    #[test]
    fn normalised_training_batches_are_centred() {
        let cfg = DataConfig {
            synthetic_train: 256,
            synthetic_test: 16,
            ..DataConfig::default()
        };
        let splits = load(&cfg).expect("synthetic always loads");
        let spec = LoaderSpec {
            batch_size: 256,
            train: false,
            augment: false,
            seed: 0,
            epoch: 0,
            prefetch: 1,
        };
        let batch = Loader::new(splits.train.clone(), &splits.norm, spec)
            .next()
            .expect("one batch");
        let mean =
            batch.images.iter().map(|&v| f64::from(v)).sum::<f64>() / batch.images.len() as f64;
        let var = batch
            .images
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / batch.images.len() as f64;
        assert!(
            mean.abs() < 1e-3 && (var - 1.0).abs() < 1e-2,
            "mean {mean} var {var}"
        );
    }

    /// The validation images are the training file's last N: deterministic, disjoint from the
    /// training images (with or without `train_subset`), and never the test images.
    #[test]
    fn validation_is_held_out_of_the_training_file() {
        let whole = load(&DataConfig {
            synthetic_train: 500,
            val_images: crate::spec::config::ValImages::Count(1),
            ..DataConfig::default()
        })
        .expect("synthetic");
        let file: Vec<&[u8]> = whole
            .train
            .images
            .chunks(whole.train.image_size())
            .collect();
        let last = whole.val.images.as_slice();
        assert_eq!(file.len(), 499);
        let cfg = DataConfig {
            synthetic_train: 500,
            val_images: crate::spec::config::ValImages::Count(100),
            train_subset: 300,
            ..DataConfig::default()
        };
        let a = load(&cfg).expect("synthetic");
        let b = load(&cfg).expect("synthetic");
        assert_eq!((a.train.len(), a.val.len()), (300, 100));
        assert_eq!(a.val.images, b.val.images, "deterministic");
        let size = a.train.image_size();
        let train: std::collections::HashSet<&[u8]> = a.train.images.chunks(size).collect();
        assert!(
            a.val.images.chunks(size).all(|v| !train.contains(v)),
            "disjoint"
        );
        // Held out of the end of the file: the training images are the file's first ones.
        assert_eq!(&a.train.images[..], &whole.train.images[..300 * size]);
        assert_eq!(
            &a.val.images[99 * size..],
            last,
            "the file's last image is validation"
        );
        assert_eq!(a.test.len(), whole.test.len());
        // Defaults: a tenth of synthetic; too many is an error that names the key.
        let auto = load(&DataConfig {
            synthetic_train: 500,
            ..DataConfig::default()
        })
        .expect("synthetic");
        assert_eq!((auto.train.len(), auto.val.len()), (450, 50));
        let err = load(&DataConfig {
            synthetic_train: 500,
            val_images: crate::spec::config::ValImages::Count(500),
            ..DataConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("data.val_images"), "{err}");
    }

    #[test]
    fn missing_directory_names_path_and_expectation() {
        let cfg = DataConfig {
            dataset: DatasetName::FashionMnist,
            dir: "/nonexistent/fmnist".into(),
            ..DataConfig::default()
        };
        let err = load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/fmnist") && err.contains("train-images-idx3-ubyte"),
            "{err}"
        );
    }
}
