//! Segmentation masks to look at (issue 48): a run's tiny model, as its last checkpoint holds
//! it, on the first few validation images — each shown with its ground truth and the model's
//! prediction as coloured masks, one run beside another, and written as a PNG.
//!
//! Predicted from the checkpoint rather than recorded: each epoch's checkpoint is the model that
//! epoch left (with the tiny model's re-estimated BN statistics), so the panel follows training
//! epoch by epoch without a byte in the database; runs whose checkpoints are gone (imported
//! results) have none to show, and say so.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::data::Loader;
use crate::data::segment::IGNORE;
use crate::model::Exec;
use crate::store::RunId;

use super::{ExportError, RunModel};

/// The first `n` validation images of a segmentation run with their masks, true and predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPanel {
    pub run: RunId,
    /// The checkpoint's epoch (its step: a checkpoint taken mid-epoch is at a later one).
    pub epoch: i64,
    pub step: i64,
    pub classes: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `n × channels × height × width` bytes, as the data set holds them.
    pub images: Vec<u8>,
    /// `n × height × width` class indices ([`IGNORE`]: not scored).
    pub truth: Vec<u8>,
    pub predicted: Vec<u8>,
}

impl MaskPanel {
    pub fn len(&self) -> usize {
        self.truth.len() / (self.height * self.width).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }
}

/// The tiny model of `run`'s last checkpoint on its first `n` validation images.
pub fn predict_masks(db: &Path, run: RunId, n: usize) -> Result<MaskPanel, ExportError> {
    let m = RunModel::load(db, run)?;
    let val = &m.splits.val;
    if !val.is_segmentation() {
        return Err(ExportError::Config {
            run,
            message: "is a classifier (model.task = \"classification\"): it predicts no masks"
                .into(),
        });
    }
    let n = n.min(val.len()).max(1);
    let batch = Loader::first(val.clone(), &m.splits.norm, crate::train::in_order(n), n)
        .next()
        .ok_or_else(|| ExportError::Config {
            run,
            message: "has no validation images".into(),
        })?;
    let (h, w) = (val.height, val.width);
    let x =
        Tensor::from_slice(&batch.images).view([n as i64, val.channels as i64, h as i64, w as i64]);
    let widths = m.net.spec.base_widths();
    let logits = tch::no_grad(|| m.net.forward(&x, &widths, false, Exec::Tiny))?;
    let predicted = logits
        .f_argmax(1, false)?
        .f_to_kind(Kind::Uint8)?
        .to_device(Device::Cpu)
        .flatten(0, -1);
    let plane = h * w;
    Ok(MaskPanel {
        run,
        epoch: m.checkpoint.epoch,
        step: m.checkpoint.step,
        classes: val.classes,
        channels: val.channels,
        height: h,
        width: w,
        images: val.images[..n * val.image_size()].to_vec(),
        truth: val.masks[..n * plane].to_vec(),
        predicted: Vec::<u8>::try_from(predicted)?,
    })
}

/// The colour of class `c` in a mask: Pascal VOC's palette (class 0, the background, black),
/// [`IGNORE`] white.
pub fn class_colour(c: u8) -> [u8; 3] {
    if c == IGNORE {
        return [255; 3];
    }
    let mut rgb = [0u8; 3];
    let mut v = c;
    for shift in (0..8).rev() {
        for (k, channel) in rgb.iter_mut().enumerate() {
            *channel |= ((v >> k) & 1) << shift;
        }
        v >>= 3;
    }
    rgb
}

/// Pixels between tiles and around the panel.
const GAP: usize = 2;

/// `panels` (runs on the same validation images) as one RGB picture, each pixel `scale` ×
/// `scale`: a row per image — the image, its ground truth, then each run's prediction — or with
/// `across` a column per image (those as rows). Its (width, height) and bytes; refused when the
/// panels hold different images.
pub fn render_panels(
    panels: &[&MaskPanel],
    scale: usize,
    across: bool,
) -> Result<((usize, usize), Vec<u8>), String> {
    let first = panels.first().ok_or("no panel to draw")?;
    if let Some(other) = panels.iter().find(|p| {
        (p.height, p.width, p.channels, &p.images)
            != (first.height, first.width, first.channels, &first.images)
    }) {
        return Err(format!(
            "runs {} and {} were validated on different images: their masks cannot sit side by side",
            first.run, other.run
        ));
    }
    let scale = scale.max(1);
    let (th, tw) = (first.height * scale, first.width * scale);
    let (mut rows, mut cols) = (first.len(), 2 + panels.len());
    if across {
        (rows, cols) = (cols, rows);
    }
    let (width, height) = (GAP + cols * (tw + GAP), GAP + rows * (th + GAP));
    let mut rgb = vec![255u8; width * height * 3];
    let plane = first.height * first.width;
    for row in 0..first.len() {
        let image = &first.images[row * first.channels * plane..(row + 1) * first.channels * plane];
        let grey = |p: usize| -> [u8; 3] {
            std::array::from_fn(|c| image[(c % first.channels) * plane + p])
        };
        let truth = &first.truth[row * plane..(row + 1) * plane];
        let mut tiles: Vec<Box<dyn Fn(usize) -> [u8; 3] + '_>> =
            vec![Box::new(grey), Box::new(move |p| class_colour(truth[p]))];
        for panel in panels {
            let pred = &panel.predicted[row * plane..(row + 1) * plane];
            tiles.push(Box::new(move |p| class_colour(pred[p])));
        }
        for (kind, tile) in tiles.iter().enumerate() {
            let (r, c) = if across { (kind, row) } else { (row, kind) };
            let (x0, y0) = (GAP + c * (tw + GAP), GAP + r * (th + GAP));
            for y in 0..th {
                for x in 0..tw {
                    let colour = tile((y / scale) * first.width + x / scale);
                    let at = ((y0 + y) * width + x0 + x) * 3;
                    rgb[at..at + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    Ok(((width, height), rgb))
}

/// [`render_panels`] written as a PNG at `path`.
pub fn write_png(panels: &[&MaskPanel], scale: usize, path: &Path) -> Result<(), ExportError> {
    let bad = |message: String| ExportError::File {
        path: path.to_path_buf(),
        message,
    };
    let ((w, h), rgb) = render_panels(panels, scale, false).map_err(bad)?;
    image::save_buffer(
        path,
        &rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_take_vocs_colours() {
        // VOC's palette: background black, aeroplane (1) dark red, bicycle (2) dark green,
        // bird (3) olive, person (15) pink-ish; 255 white.
        assert_eq!(class_colour(0), [0, 0, 0]);
        assert_eq!(class_colour(1), [128, 0, 0]);
        assert_eq!(class_colour(2), [0, 128, 0]);
        assert_eq!(class_colour(3), [128, 128, 0]);
        assert_eq!(class_colour(15), [192, 128, 128]);
        assert_eq!(class_colour(IGNORE), [255, 255, 255]);
        let distinct: std::collections::HashSet<[u8; 3]> = (0..21).map(class_colour).collect();
        assert_eq!(distinct.len(), 21);
    }

    #[test]
    fn a_panel_row_is_image_truth_and_each_runs_prediction() {
        let panel = |run, predicted: Vec<u8>| MaskPanel {
            run,
            epoch: 1,
            step: 10,
            classes: 3,
            channels: 1,
            height: 1,
            width: 2,
            images: vec![7, 9, 11, 13],
            truth: vec![0, 1, 2, IGNORE],
            predicted,
        };
        let (a, b) = (panel(1, vec![0, 2, 2, 1]), panel(2, vec![1, 1, 0, 0]));
        let ((w, h), rgb) = render_panels(&[&a, &b], 1, false).expect("same images");
        // Four tiles of 2 × 1 with gaps of 2; two rows.
        assert_eq!((w, h), (2 + 4 * (2 + 2), 2 + 2 * (1 + 2)));
        let px = |x: usize, y: usize| -> [u8; 3] {
            let at = (y * w + x) * 3;
            [rgb[at], rgb[at + 1], rgb[at + 2]]
        };
        let tile = |col: usize, x: usize, row: usize| px(2 + col * 4 + x, 2 + row * 3);
        assert_eq!(tile(0, 1, 0), [9, 9, 9], "the image, grey");
        assert_eq!(tile(1, 1, 0), class_colour(1), "its truth");
        assert_eq!(tile(2, 1, 0), class_colour(2), "run 1's prediction");
        assert_eq!(tile(3, 0, 0), class_colour(1), "run 2's");
        assert_eq!(tile(1, 1, 1), [255; 3], "not scored: white");
        assert_eq!(px(0, 0), [255; 3], "a white frame");
        let mut other = panel(3, vec![0; 4]);
        other.images[0] = 8;
        let e = render_panels(&[&a, &other], 1, false).expect_err("different images");
        assert!(e.contains("different images"), "{e}");
        // Across: a column per image, the rows image, truth, predictions.
        let ((w2, h2), across) = render_panels(&[&a, &b], 1, true).expect("same images");
        assert_eq!((w2, h2), (2 + 2 * (2 + 2), 2 + 4 * (1 + 2)));
        let at = ((2 + 2 * 3) * w2 + 2 + 4 + 1) * 3; // row 2 (run 1), column 1, x 1
        assert_eq!(
            across[at..at + 3],
            class_colour(1),
            "run 1 on image 1: class 1"
        );
    }
}
