//! Segmentation data (issue 48): images with a class index per pixel (a [`Dataset`] with
//! `masks`), from a
//! folder in the Pascal VOC layout ([`load_voc`]) or composed from Fashion-MNIST items on a larger
//! canvas ([`compose`]).
//!
//! # The VOC layout
//! `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (an 8-bit index PNG — palette indices, as
//! VOC writes them — or an 8-bit grayscale one; the value is the class, [`IGNORE`] = 255 is not
//! scored) and `ImageSets/Segmentation/<split>.txt` (one id a line). Every listed pair is read and
//! checked before a run starts: a missing file, one that does not decode, a mask of another size
//! than its image, a class index out of range — each refused naming the file (and the pixel).
//! Images are resized to a square `size` (bilinear), masks alike (nearest: a class stays a class).
//!
//! # The composite set
//! Each canvas holds `items` Fashion-MNIST images (28 × 28, drawn in order, a later one over an
//! earlier one) at uniform positions; a pixel of an item at intensity ≥ `foreground` is labelled
//! with the item's class + 1 (0 is the background), one between `edge` and `foreground` is
//! [`IGNORE`] (the soft outline, as VOC marks object boundaries) unless a later item covers it.
//! Items come from the source split given (training items for training canvases, test items for
//! test canvases), so nothing of the test set is seen in training. Deterministic in the seed.

use std::path::Path;

use crate::rng::Rng;

use super::{DataError, Dataset, not_a_file};

/// The mask value that is not scored (VOC's boundary and "void" label).
pub const IGNORE: u8 = 255;

/// The classes of `fashion-mnist-scenes`: the background, then Fashion-MNIST's ten.
pub const SCENE_CLASSES: [&str; 11] = [
    "background",
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Pascal VOC's 21 classes, in its index order.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv/monitor",
];

/// The name of class `c` of data set `dataset` (`fashion-mnist-scenes`, or `voc` with VOC's 21
/// classes); else its index.
pub fn class_name(dataset: &str, classes: usize, c: usize) -> String {
    let names: &[&str] = match (dataset, classes) {
        ("fashion-mnist-scenes", 11) => &SCENE_CLASSES,
        ("voc", 21) => &VOC_CLASSES,
        _ => &[],
    };
    names
        .get(c)
        .map_or_else(|| format!("class {c}"), |n| (*n).to_owned())
}

/// How the composite set is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Composite {
    /// Side of the square canvas (pixels).
    pub canvas: usize,
    /// Items per canvas, from `items.0` to `items.1` inclusive.
    pub items: (usize, usize),
    /// Intensity from which an item's pixel is its class.
    pub foreground: u8,
    /// Intensity from which, below `foreground`, a pixel is not scored.
    pub edge: u8,
}

impl Default for Composite {
    /// 48 × 48 canvases of 3–5 items. Measured on 2,000 canvases of Fashion-MNIST's training
    /// items: 65 % of the pixels are background (VOC's share is about 70 %), 4.4 % the soft
    /// outline that is not scored, and an image holds 3.4 classes on average, items overlapping
    /// often enough that occlusion matters. A 64-pixel canvas with 2–4 items leaves 79 %
    /// background and 2.7 classes (each class under 2.5 % of the pixels); 40 pixels with 2–3,
    /// 65 % and 2.3.
    fn default() -> Self {
        Self {
            canvas: 48,
            items: (3, 5),
            foreground: 64,
            edge: 16,
        }
    }
}

/// `n` canvases of `params` drawn from the items of `source` (single-channel images of one size
/// no larger than the canvas), in order of the seed.
pub fn compose(source: &Dataset, n: usize, params: &Composite, seed: u64) -> Dataset {
    let (side, (ih, iw)) = (params.canvas, (source.height, source.width));
    let plane = side * side;
    let mut images = vec![0u8; n * plane];
    let mut masks = vec![0u8; n * plane];
    let mut rng = Rng::new(seed);
    let (lo, hi) = params.items;
    for k in 0..n {
        let (img, mask) = (
            &mut images[k * plane..(k + 1) * plane],
            &mut masks[k * plane..(k + 1) * plane],
        );
        let count = lo + rng.below(hi - lo + 1);
        for _ in 0..count {
            let item = rng.below(source.len());
            let (y0, x0) = (rng.below(side - ih + 1), rng.below(side - iw + 1));
            let pixels = &source.images[item * ih * iw..(item + 1) * ih * iw];
            let class = (source.labels[item] + 1) as u8;
            for y in 0..ih {
                for x in 0..iw {
                    let v = pixels[y * iw + x];
                    if v < params.edge {
                        continue;
                    }
                    let at = (y0 + y) * side + x0 + x;
                    img[at] = v;
                    mask[at] = if v >= params.foreground {
                        class
                    } else {
                        IGNORE
                    };
                }
            }
        }
    }
    Dataset {
        channels: 1,
        height: side,
        width: side,
        classes: source.classes + 1,
        images,
        labels: Vec::new(),
        masks,
    }
}

/// Check, before a run is created, every pair both lists of the VOC-layout folder `dir` name:
/// each image's header (its size) and each mask whole — a missing file, a mask that does not
/// decode, one of another size than its image, a class index of `classes` or more — refused
/// naming the file. An image damaged past its header is found when it loads (still before any
/// training step). Decoding the masks only, this reads VOC 2012's 2,913 pairs in a few seconds.
pub fn check_voc(dir: &Path, classes: usize) -> Result<(), DataError> {
    for split in ["train", "val"] {
        for id in split_ids(dir, split)? {
            let ip = dir.join("JPEGImages").join(format!("{id}.jpg"));
            let mp = dir.join("SegmentationClass").join(format!("{id}.png"));
            if let Some(e) = not_a_file(&ip) {
                return Err(e);
            }
            if !ip.exists() {
                return Err(DataError::Missing {
                    what: "image".into(),
                    path: ip,
                    hint: listed_in(split),
                });
            }
            let size = image::image_dimensions(&ip)
                .map_err(|e| DataError::format(&ip, format!("not an image: {e}")))?;
            checked_mask((&ip, &mp), size, classes, split)?;
        }
    }
    Ok(())
}

/// The ids of `split` in a VOC-layout folder.
fn split_ids(dir: &Path, split: &str) -> Result<Vec<String>, DataError> {
    let list = dir
        .join("ImageSets/Segmentation")
        .join(format!("{split}.txt"));
    if let Some(e) = not_a_file(&list) {
        return Err(e);
    }
    let text = std::fs::read_to_string(&list).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            what: format!("the {split} list"),
            path: list.clone(),
            hint: "a VOC-layout folder has ImageSets/Segmentation/{train,val}.txt".into(),
        },
        _ => DataError::Io {
            path: list.clone(),
            source: e,
        },
    })?;
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Err(DataError::format(&list, "lists no image"));
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.contains(['/', '\\']) || id.starts_with('.'))
    {
        return Err(DataError::format(
            &list,
            format!("id {bad:?} is not a file name (it would reach outside the folder)"),
        ));
    }
    Ok(ids)
}

/// Where a file of `split` is named.
fn listed_in(split: &str) -> String {
    format!("listed in ImageSets/Segmentation/{split}.txt")
}

/// The bytes of `path`, refused naming it when it is missing or not a file.
fn read(path: &Path, what: &str, split: &str) -> Result<Vec<u8>, DataError> {
    if let Some(e) = not_a_file(path) {
        return Err(e);
    }
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            what: what.into(),
            path: path.to_path_buf(),
            hint: listed_in(split),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// An index mask: its (width, height) and one byte a pixel.
fn decode_mask(path: &Path, split: &str) -> Result<((u32, u32), Vec<u8>), DataError> {
    let bytes = read(path, "mask", split)?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let bad = |m: String| DataError::format(path, m);
    let mut reader = decoder
        .read_info()
        .map_err(|e| bad(format!("not a PNG mask: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("not a PNG mask: {e}")))?;
    if info.bit_depth != png::BitDepth::Eight
        || !matches!(
            info.color_type,
            png::ColorType::Indexed | png::ColorType::Grayscale
        )
    {
        return Err(bad(format!(
            "a {:?} {:?}-bit PNG: a mask is an 8-bit index (palette) or grayscale PNG whose value is the class",
            info.color_type, info.bit_depth as u8
        )));
    }
    let (w, h) = (info.width, info.height);
    buf.truncate(info.buffer_size());
    Ok(((w, h), buf))
}

/// The mask at `mp` of the image at `ip` (`image` its width and height), checked: an 8-bit index
/// PNG of the image's size whose values are classes below `classes` or [`IGNORE`].
fn checked_mask(
    (ip, mp): (&Path, &Path),
    image: (u32, u32),
    classes: usize,
    split: &str,
) -> Result<((u32, u32), Vec<u8>), DataError> {
    let ((w, h), mask) = decode_mask(mp, split)?;
    if image != (w, h) {
        return Err(DataError::format(
            mp,
            format!(
                "mask is {w} × {h}, its image {} is {} × {}",
                ip.display(),
                image.0,
                image.1
            ),
        ));
    }
    if let Some(at) = mask
        .iter()
        .position(|&v| v != IGNORE && usize::from(v) >= classes)
    {
        let (x, y) = (at % w as usize, at / w as usize);
        return Err(DataError::format(
            mp,
            format!(
                "class index {} at pixel ({x}, {y}): the data set has {classes} classes (0–{}), and {IGNORE} marks pixels not scored",
                mask[at],
                classes - 1
            ),
        ));
    }
    Ok(((w, h), mask))
}

/// Load `split` of the VOC-layout folder `dir`: `classes` classes (background included), images
/// and masks resized to `size` × `size`; `rgb` keeps three channels, else one (luma).
pub fn load_voc(
    dir: &Path,
    split: &str,
    classes: usize,
    size: usize,
    rgb: bool,
) -> Result<Dataset, DataError> {
    use image::imageops::{FilterType, resize};
    let ids = split_ids(dir, split)?;
    let channels = if rgb { 3 } else { 1 };
    let (side, plane) = (size as u32, size * size);
    let mut images = Vec::with_capacity(ids.len() * channels * plane);
    let mut masks = Vec::with_capacity(ids.len() * plane);
    for id in &ids {
        let ip = dir.join("JPEGImages").join(format!("{id}.jpg"));
        let mp = dir.join("SegmentationClass").join(format!("{id}.png"));
        let image = image::load_from_memory(&read(&ip, "image", split)?)
            .map_err(|e| DataError::format(&ip, format!("not an image: {e}")))?;
        let size = (image.width(), image.height());
        let ((w, h), mask) = checked_mask((&ip, &mp), size, classes, split)?;
        let mask = image::GrayImage::from_raw(w, h, mask)
            .ok_or_else(|| DataError::format(&mp, "mask size does not match its data"))?;
        masks.extend_from_slice(&resize(&mask, side, side, FilterType::Nearest));
        if rgb {
            let small = resize(&image.to_rgb8(), side, side, FilterType::Triangle);
            for c in 0..3 {
                images.extend(small.pixels().map(|p| p.0[c]));
            }
        } else {
            images.extend_from_slice(&resize(&image.to_luma8(), side, side, FilterType::Triangle));
        }
    }
    Ok(Dataset {
        channels,
        height: size,
        width: size,
        classes,
        images,
        labels: Vec::new(),
        masks,
    })
}

/// Write `data` as a VOC-layout folder at `dir` (JPEG images, index PNG masks, the `split` list;
/// ids `000000`, `000001`, …): the fixture the loader's tests read, and a way to hand the
/// composite set to other tools.
pub fn write_voc(dir: &Path, split: &str, data: &Dataset) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| DataError::Io { path, source: e }
    };
    for sub in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let (w, h) = (data.width as u32, data.height as u32);
    let mut ids = String::new();
    for i in 0..data.len() {
        let id = format!("{i:06}");
        let (img, mask) = data.item(i);
        let plane = data.height * data.width;
        let rgb: Vec<u8> = (0..plane)
            .flat_map(|p| (0..3).map(move |c| img[(c % data.channels) * plane + p]))
            .collect();
        let ip = dir.join("JPEGImages").join(format!("{id}.jpg"));
        image::save_buffer(&ip, &rgb, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| DataError::format(&ip, e.to_string()))?;
        let mp = dir.join("SegmentationClass").join(format!("{id}.png"));
        write_index_png(&mp, (w, h), mask)?;
        ids.push_str(&id);
        ids.push('\n');
    }
    let list = dir
        .join("ImageSets/Segmentation")
        .join(format!("{split}.txt"));
    std::fs::write(&list, ids).map_err(io(&list))
}

/// Write `mask` as an 8-bit palette PNG (VOC's form: a grey ramp palette).
pub fn write_index_png(path: &Path, (w, h): (u32, u32), mask: &[u8]) -> Result<(), DataError> {
    let file = std::fs::File::create(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette((0..=255u8).flat_map(|v| [v, v, v]).collect::<Vec<u8>>());
    let bad = |e: png::EncodingError| DataError::format(path, e.to_string());
    let mut writer = enc.write_header().map_err(bad)?;
    writer.write_image_data(mask).map_err(bad)?;
    writer.finish().map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Dataset {
        // Ten 28 × 28 items: item i is a filled square of intensity 200 with a soft rim of 40,
        // class i.
        let mut images = Vec::new();
        for i in 0..10usize {
            for y in 0..28usize {
                for x in 0..28usize {
                    let d = y.min(x).min(27 - y).min(27 - x);
                    images.push(match d {
                        0..=3 => 0,
                        4 => 40,
                        _ => 200 + i as u8,
                    });
                }
            }
        }
        Dataset {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
            images,
            labels: (0..10).collect(),
            masks: Vec::new(),
        }
    }

    #[test]
    fn composites_label_foreground_rims_and_background() {
        let src = items();
        let params = Composite::default();
        let a = compose(&src, 50, &params, 3);
        assert_eq!((a.len(), a.classes, a.height), (50, 11, 48));
        assert_eq!(
            compose(&src, 50, &params, 3).masks,
            a.masks,
            "deterministic"
        );
        assert_ne!(compose(&src, 50, &params, 4).masks, a.masks);
        let mut seen = [0usize; 256];
        for (img, mask) in (0..a.len()).map(|i| a.item(i)) {
            for (&v, &m) in img.iter().zip(mask) {
                seen[usize::from(m)] += 1;
                // A labelled pixel shows its item: class c + 1 at intensity 200 + c.
                match m {
                    0 => assert_eq!(v, 0),
                    IGNORE => assert_eq!(v, 40),
                    c => assert_eq!(v, 199 + c),
                }
            }
        }
        assert!(seen[0] > 0 && seen[usize::from(IGNORE)] > 0);
        assert!(
            (1..=10).filter(|&c| seen[c] > 0).count() >= 8,
            "most classes drawn"
        );
        // 3–5 items with 20 × 20 cores on 48 × 48: background is a fifth to three quarters.
        let bg = seen[0] as f64 / (50 * 48 * 48) as f64;
        assert!((0.2..0.75).contains(&bg), "{bg}");
    }

    fn fixture(dir: &Path) -> Dataset {
        let data = compose(&items(), 4, &Composite::default(), 1);
        write_voc(dir, "train", &data).expect("write");
        write_voc(dir, "val", &data).expect("write");
        data
    }

    #[test]
    fn the_voc_loader_reads_what_was_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = fixture(dir.path());
        let back = load_voc(dir.path(), "val", 11, 48, false).expect("load");
        assert_eq!(back.masks, data.masks, "index PNGs are exact");
        assert_eq!((back.len(), back.channels, back.classes), (4, 1, 11));
        // JPEG is lossy: close, not equal.
        let err = back
            .images
            .iter()
            .zip(&data.images)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .sum::<f64>()
            / data.images.len() as f64;
        assert!(err < 8.0, "mean error {err}");
        let small = load_voc(dir.path(), "train", 11, 32, true).expect("load");
        assert_eq!(
            (small.channels, small.height, small.masks.len()),
            (3, 32, 4 * 32 * 32)
        );
        assert!(small.masks.iter().all(|&m| m == IGNORE || m < 11));
    }

    #[test]
    fn bad_voc_files_are_refused_naming_them() {
        let dir = tempfile::tempdir().expect("tmp");
        fixture(dir.path());
        // Each refused alike by the check before a run is created and by the load.
        let load = || {
            let loaded = load_voc(dir.path(), "train", 11, 32, false).map(|_| ());
            let checked = check_voc(dir.path(), 11);
            assert_eq!(
                loaded.as_ref().map_err(ToString::to_string),
                checked.as_ref().map_err(ToString::to_string),
                "the check before the run sees what the load sees"
            );
            loaded
        };
        let mask = dir.path().join("SegmentationClass/000002.png");
        // A class index out of range.
        let mut m = vec![0u8; 48 * 48];
        m[5 * 48 + 7] = 11;
        write_index_png(&mask, (48, 48), &m).expect("write");
        let e = load().expect_err("class 11").to_string();
        assert!(
            e.contains("000002.png") && e.contains("class index 11 at pixel (7, 5)"),
            "{e}"
        );
        // A mask of the wrong size.
        write_index_png(&mask, (40, 48), &vec![0u8; 40 * 48]).expect("write");
        let e = load().expect_err("size").to_string();
        assert!(
            e.contains("000002.png") && e.contains("mask is 40 × 48") && e.contains("48 × 48"),
            "{e}"
        );
        // A mask that is not an index PNG.
        std::fs::write(&mask, b"not a png").expect("write");
        let e = load().expect_err("format").to_string();
        assert!(
            e.contains("000002.png") && e.contains("not a PNG mask"),
            "{e}"
        );
        // A missing image.
        write_index_png(&mask, (48, 48), &vec![0u8; 48 * 48]).expect("write");
        load().expect("whole again");
        std::fs::remove_file(dir.path().join("JPEGImages/000001.jpg")).expect("rm");
        let e = load().expect_err("missing").to_string();
        assert!(e.contains("JPEGImages/000001.jpg"), "{e}");
        // An id that would leave the folder, and a missing list.
        std::fs::write(
            dir.path().join("ImageSets/Segmentation/train.txt"),
            "../x\n",
        )
        .expect("w");
        let e = load().expect_err("escape").to_string();
        assert!(e.contains("train.txt") && e.contains("\"../x\""), "{e}");
        let e = load_voc(dir.path(), "test", 11, 32, false)
            .expect_err("no list")
            .to_string();
        assert!(e.contains("ImageSets/Segmentation/test.txt"), "{e}");
    }
}
