//! Segmentation scores (issue 48) from a confusion matrix over pixels: pixel accuracy, per-class
//! IoU and their mean, as VOC and Cityscapes report them. Pixels whose target is the ignore value
//! are not counted; a class that is neither in the targets nor in the predictions of a split has no
//! IoU (its union is empty) and is left out of the mean, not counted as 0 or 1.

use crate::data::segment::IGNORE;

/// Pixel counts: `counts[target × classes + predicted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    pub classes: usize,
    pub counts: Vec<u64>,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Count one image's (or batch's) pixels: `predicted` class per pixel against `target`
    /// ([`IGNORE`] skipped). A target outside the classes is a caller's bug: it panics.
    pub fn add(&mut self, predicted: &[u8], target: &[u8]) {
        assert_eq!(predicted.len(), target.len(), "one prediction a pixel");
        for (&p, &t) in predicted.iter().zip(target) {
            if t == IGNORE {
                continue;
            }
            let (p, t) = (usize::from(p), usize::from(t));
            assert!(
                t < self.classes && p < self.classes,
                "class {t} / {p} of {}",
                self.classes
            );
            self.counts[t * self.classes + p] += 1;
        }
    }

    /// Add counts laid out as `counts` is (a bincount of `target × classes + predicted`).
    pub fn add_counts(&mut self, counts: &[i64]) {
        assert_eq!(
            counts.len(),
            self.counts.len(),
            "a count per (target, predicted)"
        );
        for (a, &b) in self.counts.iter_mut().zip(counts) {
            *a += b.max(0) as u64;
        }
    }

    /// Merge counts from another matrix of the same classes (another thread's share).
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(self.classes, other.classes);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn at(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.classes + p]
    }

    /// Scored pixels.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Correct pixels over scored pixels (0 when none is scored).
    pub fn pixel_accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.at(c, c)).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// Per class TP / (TP + FP + FN); `None` where the union is empty.
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let tp = self.at(c, c);
                let target: u64 = (0..self.classes).map(|p| self.at(c, p)).sum();
                let predicted: u64 = (0..self.classes).map(|t| self.at(t, c)).sum();
                let union = target + predicted - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// The mean of the classes that have an IoU (0 when none has).
    pub fn mean_iou(&self) -> f64 {
        let ious: Vec<f64> = self.iou().into_iter().flatten().collect();
        ious.iter().sum::<f64>() / ious.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 3 × 3 "images", 4 classes: class 3 appears nowhere (no IoU, not in the mean), two
    /// pixels are ignored (whatever is predicted there), class 2 is only ever predicted.
    #[test]
    fn scores_match_a_hand_computed_confusion_matrix() {
        let i = IGNORE;
        let target = [
            [0, 0, 1, 1, 1, 0, i, 0, 0], // image 1
            [1, 1, 1, 0, 0, 0, 0, 1, i], // image 2
        ];
        let predicted = [
            [0, 1, 1, 1, 0, 0, 2, 0, 2], // the ignored pixel's 2 is not counted
            [1, 1, 0, 0, 0, 2, 0, 1, 3], // nor this 3
        ];
        let mut m = Confusion::new(4);
        for (p, t) in predicted.iter().zip(&target) {
            m.add(p, t);
        }
        // By hand, rows the target, columns the prediction:
        //   t0: p0 = 6 (img1: 0,5,7; img2: 3,4,6), p1 = 1 (img1: 1), p2 = 2 (img1: 8; img2: 5)
        //   t1: p0 = 2 (img1: 4; img2: 2),         p1 = 5 (img1: 2,3; img2: 0,1,7)
        let want = [6, 1, 2, 0, 2, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(m.counts, want);
        assert_eq!(m.total(), 16);
        assert!((m.pixel_accuracy() - 11.0 / 16.0).abs() < 1e-12);
        // IoU: class 0 = 6 / (9 + 8 − 6) = 6/11; class 1 = 5 / (7 + 6 − 5) = 5/8; class 2 = 0 /
        // (0 + 2 − 0) = 0; class 3: empty union.
        let iou = m.iou();
        assert!((iou[0].expect("0") - 6.0 / 11.0).abs() < 1e-12);
        assert!((iou[1].expect("1") - 5.0 / 8.0).abs() < 1e-12);
        assert_eq!(iou[2], Some(0.0));
        assert_eq!(iou[3], None);
        let mean = (6.0 / 11.0 + 5.0 / 8.0 + 0.0) / 3.0;
        assert!((m.mean_iou() - mean).abs() < 1e-12);
        // Merging two halves is counting the whole.
        let (mut a, mut b) = (Confusion::new(4), Confusion::new(4));
        a.add(&predicted[0], &target[0]);
        b.add(&predicted[1], &target[1]);
        a.merge(&b);
        assert_eq!(a, m);
        assert_eq!(Confusion::new(3).mean_iou(), 0.0);
    }
}
