//! Is the augmented model working? NetAug rests on the wider augmented model fitting the
//! training data better than the tiny one and pulling the tiny model's shared weights along. Per
//! augmented variant of a study and per epoch: the sampled augmented models' training loss
//! (`train/epoch_loss_aug`) beside the tiny model's (`train/epoch_loss`), mean over the finished
//! seeds, and their gap (augmented − tiny) paired per seed. A gap below zero is what the method
//! expects; at or above zero the augmented model fits no better than the model it should help.

use serde::Serialize;

use super::report::{Format, csv_field};
use super::stats::Summary;
use crate::spec::study::Study;
use crate::store::{Reader, Status, StoreError, keys};

/// One epoch of one variant, over its finished seeds that recorded both losses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FitPoint {
    /// 1-based.
    pub epoch: i64,
    pub tiny: Summary,
    pub aug: Summary,
    /// Augmented − tiny, per seed.
    pub gap: Summary,
}

/// One augmented variant's epochs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitRow {
    pub variant: String,
    pub points: Vec<FitPoint>,
}

/// The augmented variants of a study (those whose finished cells recorded an augmented loss).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    pub study: i64,
    pub name: String,
    pub rows: Vec<FitRow>,
}

/// The training losses of `study`'s augmented variants, from the database alone.
pub fn fit(study: &Study, id: i64, reader: &Reader) -> Result<Fit, StoreError> {
    let cells = reader.study_runs(id)?;
    let finished: std::collections::HashSet<i64> = reader
        .runs()?
        .into_iter()
        .filter(|r| r.status == Status::Finished)
        .map(|r| r.id)
        .collect();
    let mut rows = Vec::new();
    for v in &study.variants {
        // epoch → (tiny, aug) of every seed that has both.
        let mut by_epoch: std::collections::BTreeMap<i64, Vec<(f64, f64)>> = Default::default();
        for c in cells
            .iter()
            .filter(|c| c.variant == v.name && finished.contains(&c.run))
        {
            let aug = reader.metric_series(c.run, keys::TRAIN_EPOCH_LOSS_AUG)?;
            if aug.is_empty() {
                continue;
            }
            let tiny = reader.metric_series(c.run, keys::TRAIN_EPOCH_LOSS)?;
            for a in &aug {
                if let Some(t) = tiny.iter().find(|t| t.epoch == a.epoch) {
                    by_epoch
                        .entry(a.epoch)
                        .or_default()
                        .push((t.value, a.value));
                }
            }
        }
        let points: Vec<FitPoint> = by_epoch
            .into_iter()
            .filter_map(|(epoch, pairs)| {
                let of = |f: fn(&(f64, f64)) -> f64| {
                    Summary::of(&pairs.iter().map(f).collect::<Vec<_>>())
                };
                Some(FitPoint {
                    epoch,
                    tiny: of(|p| p.0)?,
                    aug: of(|p| p.1)?,
                    gap: of(|p| p.1 - p.0)?,
                })
            })
            .collect();
        if !points.is_empty() {
            rows.push(FitRow {
                variant: v.name.clone(),
                points,
            });
        }
    }
    Ok(Fit {
        study: id,
        name: study.name.clone(),
        rows,
    })
}

impl FitRow {
    /// The last epoch's gap: "+0.153 ± 0.021 (n = 3)".
    pub fn last_gap_text(&self) -> String {
        self.points
            .last()
            .map_or_else(String::new, |p| gap_text(&p.gap))
    }
}

fn gap_text(g: &Summary) -> String {
    if g.ci95.is_finite() {
        format!("{:+.3} ± {:.3} (n = {})", g.mean, g.ci95, g.n)
    } else {
        format!("{:+.3} (n = {})", g.mean, g.n)
    }
}

impl Fit {
    /// Markdown or CSV (`None` for LaTeX, which this table does not have).
    pub fn render(&self, format: Format) -> Option<String> {
        match format {
            Format::Markdown => Some(self.markdown()),
            Format::Csv => Some(self.csv()),
            Format::Latex => None,
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "Study {} ({}): training loss of the augmented models (`train/epoch_loss_aug`) beside \
             the tiny model's (`train/epoch_loss`), per epoch, mean over the finished seeds; gap = \
             augmented − tiny, paired per seed, ± 95 % CI. NetAug expects the gap below zero.\n\n",
            self.study, self.name
        );
        if self.rows.is_empty() {
            s.push_str("No finished augmented cell has recorded its augmented loss yet.\n");
            return s;
        }
        let mut head = String::from("| epoch |");
        let mut rule = String::from("|---|");
        for r in &self.rows {
            head.push_str(&format!(" {0} tiny | {0} aug | {0} gap |", r.variant));
            rule.push_str("---|---|---|");
        }
        s.push_str(&format!("{head}\n{rule}\n"));
        let mut epochs: Vec<i64> = self
            .rows
            .iter()
            .flat_map(|r| r.points.iter().map(|p| p.epoch))
            .collect();
        epochs.sort_unstable();
        epochs.dedup();
        for e in epochs {
            s.push_str(&format!("| {e} |"));
            for r in &self.rows {
                match r.points.iter().find(|p| p.epoch == e) {
                    Some(p) => s.push_str(&format!(
                        " {:.3} | {:.3} | {:+.3} |",
                        p.tiny.mean, p.aug.mean, p.gap.mean
                    )),
                    None => s.push_str(" – | – | – |"),
                }
            }
            s.push('\n');
        }
        s.push_str("\nLast epoch, augmented − tiny: ");
        let last: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{} {}", r.variant, r.last_gap_text()))
            .collect();
        s.push_str(&last.join("; "));
        s.push_str(".\n");
        s
    }

    fn csv(&self) -> String {
        let mut s =
            String::from("variant,epoch,n,tiny_loss,tiny_ci95,aug_loss,aug_ci95,gap,gap_ci95\n");
        let num = |x: f64| {
            if x.is_finite() {
                format!("{x}")
            } else {
                String::new()
            }
        };
        for r in &self.rows {
            for p in &r.points {
                s.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&r.variant),
                    p.epoch,
                    p.gap.n,
                    p.tiny.mean,
                    num(p.tiny.ci95),
                    p.aug.mean,
                    num(p.aug.ci95),
                    p.gap.mean,
                    num(p.gap.ci95)
                ));
            }
        }
        s
    }
}
