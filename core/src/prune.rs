//! Pruning decisions ([`Prune`]: the median rule with a margin), shared by the study driver (a
//! study's cells) and the NAS driver (a stage's proxy trainings): each run's best validation
//! top-1 so far, epoch by epoch, and whether a run has fallen out of reach of the others.

use std::collections::HashMap;

use crate::spec::study::Prune;
use crate::store::RunId;

/// Each run's validation top-1 by epoch (finished runs from the database, runs in flight as
/// their epochs end).
#[derive(Debug)]
pub struct Curves {
    by_run: HashMap<RunId, Vec<(i64, f64)>>,
    /// What the runs are, in a verdict's words ("cells", "candidates").
    noun: &'static str,
}

impl Curves {
    /// No curve yet; `noun` names the runs in verdicts ("cells" of a study).
    pub fn new(noun: &'static str) -> Self {
        Self {
            by_run: HashMap::new(),
            noun,
        }
    }

    /// `run`'s validation top-1 after `epoch` (a value recorded again replaces the earlier one).
    pub fn record(&mut self, run: RunId, epoch: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let points = self.by_run.entry(run).or_default();
        match points.binary_search_by_key(&epoch, |p| p.0) {
            Ok(i) => points[i].1 = value,
            Err(i) => points.insert(i, (epoch, value)),
        }
    }

    /// `run`'s best value up to `epoch`, if it has reached `epoch`.
    fn best_at(&self, run: RunId, epoch: i64) -> Option<f64> {
        let points = self.by_run.get(&run)?;
        points.iter().any(|p| p.0 >= epoch).then(|| {
            points
                .iter()
                .take_while(|p| p.0 <= epoch)
                .map(|p| p.1)
                .fold(f64::NEG_INFINITY, f64::max)
        })
    }

    /// Why `run` is to be pruned after `epoch` under `rule`, or `None` while it is in reach (or
    /// the rule cannot tell yet: before the warm-up, with too few other runs at that epoch).
    pub fn verdict(&self, rule: &Prune, run: RunId, epoch: i64) -> Option<String> {
        if epoch < rule.warmup_epochs {
            return None;
        }
        let own = self.best_at(run, epoch)?;
        let mut others: Vec<f64> = self
            .by_run
            .keys()
            .filter(|&&r| r != run)
            .filter_map(|&r| self.best_at(r, epoch))
            .collect();
        if others.len() < rule.min_cells.max(1) {
            return None;
        }
        others.sort_by(f64::total_cmp);
        let n = others.len();
        let median = if n % 2 == 1 {
            others[n / 2]
        } else {
            0.5 * (others[n / 2 - 1] + others[n / 2])
        };
        let bar = median - rule.margin_points / 100.0;
        (own < bar).then(|| {
            format!(
                "pruned after epoch {epoch}: best val/top1 {:.2} % is below the median of {n} other {} ({:.2} %){}",
                own * 100.0,
                self.noun,
                median * 100.0,
                if rule.margin_points > 0.0 {
                    format!(" less {} points", rule.margin_points)
                } else {
                    String::new()
                }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(margin: f64) -> Prune {
        Prune {
            warmup_epochs: 2,
            min_cells: 3,
            margin_points: margin,
        }
    }

    #[test]
    fn a_cell_far_below_the_median_is_pruned_once_the_rule_can_tell() {
        let mut c = Curves::new("cells");
        // Three good cells, one at chance.
        for (run, top1) in [
            (1, [0.70, 0.80, 0.85]),
            (2, [0.72, 0.81, 0.86]),
            (3, [0.69, 0.79, 0.84]),
        ] {
            for (e, v) in top1.into_iter().enumerate() {
                c.record(run, e as i64 + 1, v);
            }
        }
        c.record(9, 1, 0.10);
        assert_eq!(c.verdict(&rule(10.0), 9, 1), None, "before the warm-up");
        c.record(9, 2, 0.11);
        let why = c.verdict(&rule(10.0), 9, 2).expect("pruned at epoch 2");
        assert!(
            why.contains("11.00 %") && why.contains("80.00 %") && why.contains("3 other"),
            "{why}"
        );
        // A good cell slightly below the median survives the margin, not the bare median rule.
        assert_eq!(c.verdict(&rule(10.0), 3, 2), None);
        assert!(c.verdict(&rule(0.0), 3, 2).is_some());
        // Too few other cells at that epoch: no verdict.
        assert_eq!(
            c.verdict(&rule(10.0), 9, 3),
            None,
            "9 has not reached epoch 3"
        );
        c.record(9, 3, 0.12);
        let mut few = Curves::new("cells");
        few.record(1, 2, 0.8);
        few.record(9, 2, 0.1);
        assert_eq!(few.verdict(&rule(10.0), 9, 2), None, "one other cell only");
    }

    #[test]
    fn the_best_so_far_counts_not_the_last_value() {
        let mut c = Curves::new("cells");
        for run in 1..=3 {
            c.record(run, 2, 0.5);
        }
        c.record(9, 1, 0.6);
        c.record(9, 2, 0.2);
        assert_eq!(
            c.verdict(&rule(0.0), 9, 2),
            None,
            "its best, 60 %, is above 50 %"
        );
        c.record(9, 2, f64::NAN);
        assert_eq!(c.best_at(9, 2), Some(0.6), "a NaN is not recorded");
    }
}
