//! What the UI holds of the database: the runs table, each opened run's series and details, and
//! the live progress the run manager reports. Filled from [`Loaded`] answers and [`Event`]s; the
//! views only read it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use shiftadd_core::export::MaskPanel;
use shiftadd_core::run::Event;
use shiftadd_core::store::RunId;

use crate::chart::series::Series;
use crate::gui::data::backend::{Details, Loaded, NasData, Query, RunRow, StudyData};

/// Live state of a training run, from the manager's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The epoch in progress, 1-based.
    pub epoch: i64,
    pub total_epochs: i64,
    pub step: i64,
    pub total_steps: i64,
    pub loss: f64,
    pub images_per_sec: f64,
    pub paused: bool,
    /// When (and at which step) the current stretch of training began, for the ETA.
    pub since: Instant,
    pub since_step: i64,
}

impl Live {
    /// Seconds left at the rate seen since training (re)started.
    pub fn eta_secs(&self, now: Instant) -> Option<f64> {
        if self.paused {
            return None;
        }
        let done = self.step - self.since_step;
        let elapsed = now.duration_since(self.since).as_secs_f64();
        (done > 0 && elapsed > 0.0)
            .then(|| (self.total_steps - self.step).max(0) as f64 * elapsed / done as f64)
    }

    pub fn fraction(&self) -> f32 {
        if self.total_steps > 0 {
            (self.step as f32 / self.total_steps as f32).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// One run's loaded data.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub series: BTreeMap<String, Series>,
    pub last_step: Option<i64>,
    pub details: Option<Details>,
    /// Parsed config, flattened to `section.key` → value text.
    pub config: BTreeMap<String, String>,
}

/// Everything loaded, plus bookkeeping of what to refresh.
#[derive(Default)]
pub struct DataCache {
    pub runs: Vec<RunRow>,
    /// Every study's name, by id (loaded with the runs).
    pub study_names: BTreeMap<i64, String>,
    pub runs_loaded: bool,
    pub data: HashMap<RunId, RunData>,
    pub live: HashMap<RunId, Live>,
    /// Candidates of NAS searches.
    pub nas: HashMap<RunId, Arc<NasData>>,
    /// Searches whose candidates to (re)fetch.
    stale_nas: HashSet<RunId>,
    /// Every study with its table (`None` until first loaded).
    pub studies: Option<Arc<Vec<StudyData>>>,
    studies_stale: bool,
    /// The metric each study's table reports where the view chose one other than the study's own
    /// (by study id; loaded with the studies).
    study_metrics: BTreeMap<i64, String>,
    /// Runs whose metrics changed since they were last fetched.
    stale_metrics: HashSet<RunId>,
    /// Runs whose details (logs, histograms, hardware) changed.
    stale_details: HashSet<RunId>,
    runs_stale: bool,
    /// Metrics queries in flight (one at a time per run keeps `from` consistent).
    in_flight: HashSet<RunId>,
    pub last_error: Option<String>,
    /// Every metric key recorded (the runs table's column chooser).
    pub metric_keys: Vec<String>,
    /// The metric keys the runs table shows or filters on (loaded with the runs).
    runs_metrics: Vec<String>,
    /// The outcome of the last rename / tag / note / archive / delete.
    pub managed: Option<String>,
    /// Counts runs lists received (views cache what they derive from the list by it).
    pub runs_version: u64,
    /// Segmentation runs' mask panels, by run: for the epochs done when asked, and the panel
    /// (or why there is none).
    pub masks: HashMap<RunId, (i64, Result<Arc<MaskPanel>, String>)>,
    /// Mask panels to ask for (run, epochs done), and those asked for.
    masks_wanted: BTreeSet<(RunId, i64)>,
    masks_in_flight: HashSet<RunId>,
}

impl DataCache {
    pub fn row(&self, run: RunId) -> Option<&RunRow> {
        self.runs.iter().find(|r| r.summary.id == run)
    }

    pub fn is_active(&self, run: RunId) -> bool {
        self.live.contains_key(&run) || self.row(run).is_some_and(|r| r.summary.status.is_active())
    }

    /// Runs this session trains (known from events): they need a decision at window close.
    pub fn active_here(&self) -> Vec<RunId> {
        let mut v: Vec<RunId> = self.live.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn apply_loaded(&mut self, l: Loaded) {
        match l {
            Loaded::Runs {
                rows,
                metric_keys,
                study_names,
            } => {
                let exists = |id: RunId| rows.iter().any(|r| r.summary.id == id);
                // Runs deleted (here or elsewhere) leave no stale data behind.
                self.data.retain(|id, _| exists(*id));
                self.runs = rows;
                self.metric_keys = metric_keys;
                self.study_names = study_names;
                self.runs_loaded = true;
                self.runs_version += 1;
            }
            Loaded::Managed(outcome) => match outcome {
                Ok(message) => {
                    self.managed = Some(message);
                    self.runs_stale = true;
                }
                Err(e) => self.last_error = Some(e),
            },
            Loaded::Details(d) => {
                let entry = self.data.entry(d.run).or_default();
                entry.config = crate::gui::data::backend::flatten_config(&d.config_toml);
                entry.details = Some(*d);
            }
            Loaded::Metrics {
                run,
                replace,
                series,
                last_step,
            } => {
                self.in_flight.remove(&run);
                let entry = self.data.entry(run).or_default();
                if replace {
                    entry.series = series;
                    entry.last_step = last_step;
                } else {
                    for (k, s) in series {
                        entry.series.entry(k).or_default().merge_newer(&s);
                    }
                    entry.last_step = last_step.max(entry.last_step);
                }
            }
            Loaded::Presets { .. } => {}
            Loaded::Nas { run, nas } => {
                self.nas.insert(run, nas);
            }
            Loaded::Studies(s) => self.studies = Some(s),
            Loaded::Masks { run, epoch, panel } => {
                self.masks_in_flight.remove(&run);
                self.masks.insert(run, (epoch, panel));
            }
            Loaded::Error(e) => {
                log::warn!("{e}");
                self.last_error = Some(e);
            }
        }
    }

    pub fn apply_event(&mut self, e: &Event, now: Instant) {
        match e {
            Event::Created { run, .. } => {
                self.runs_stale = true;
                self.stale_details.insert(*run);
            }
            Event::Rejected { .. } => {}
            Event::Running {
                run,
                epoch,
                total_epochs,
                step,
                total_steps,
            } => {
                self.live.insert(
                    *run,
                    Live {
                        // `Running` counts epochs done; `Progress` the epoch in progress (1-based).
                        epoch: *epoch + 1,
                        total_epochs: *total_epochs,
                        step: *step,
                        total_steps: *total_steps,
                        loss: f64::NAN,
                        images_per_sec: f64::NAN,
                        paused: false,
                        since: now,
                        since_step: *step,
                    },
                );
                // A resume truncates metrics after its checkpoint: reload them whole.
                if let Some(d) = self.data.get_mut(run) {
                    d.last_step = None;
                    d.series.clear();
                }
                self.stale_metrics.insert(*run);
                self.stale_details.insert(*run);
                self.runs_stale = true;
            }
            Event::Progress {
                run,
                epoch,
                step,
                total_steps,
                loss,
                images_per_sec,
            } => {
                if let Some(l) = self.live.get_mut(run) {
                    l.epoch = *epoch;
                    l.step = *step;
                    l.total_steps = *total_steps;
                    l.loss = *loss;
                    l.images_per_sec = *images_per_sec;
                }
                self.stale_metrics.insert(*run);
            }
            Event::EpochEnded { run, .. } | Event::CheckpointSaved { run, .. } => {
                self.stale_metrics.insert(*run);
                self.stale_details.insert(*run);
                self.runs_stale = true;
            }
            Event::Paused { run } | Event::Resumed { run } => {
                if let Some(l) = self.live.get_mut(run) {
                    l.paused = matches!(e, Event::Paused { .. });
                    if !l.paused {
                        l.since = now;
                        l.since_step = l.step;
                    }
                }
                self.runs_stale = true;
            }
            Event::Finished { run, .. } | Event::Stopped { run } | Event::Failed { run, .. } => {
                self.live.remove(run);
                self.stale_metrics.insert(*run);
                self.stale_details.insert(*run);
                self.runs_stale = true;
            }
        }
    }

    pub fn mark_runs_stale(&mut self) {
        self.runs_stale = true;
    }

    /// The metric keys the runs table needs; a change reloads the runs.
    pub fn set_runs_metrics(&mut self, mut keys: Vec<String>) {
        keys.sort();
        keys.dedup();
        if keys != self.runs_metrics {
            self.runs_metrics = keys;
            self.runs_stale = true;
        }
    }

    /// Ask for a search's candidates (again: searches run in other processes too).
    pub fn want_nas(&mut self, run: RunId) {
        if !self.nas.contains_key(&run) {
            self.stale_nas.insert(run);
            self.stale_details.insert(run);
        }
    }

    /// The metric the table of study `id` is to report: `None` for the study's own.
    pub fn study_metric(&self, id: i64) -> Option<&str> {
        self.study_metrics.get(&id).map(String::as_str)
    }

    /// Report `metric` in study `id`'s table (`None`: the study's own); a change reloads the
    /// studies.
    pub fn set_study_metric(&mut self, id: i64, metric: Option<String>) {
        let changed = match metric {
            Some(m) => self.study_metrics.insert(id, m.clone()) != Some(m),
            None => self.study_metrics.remove(&id).is_some(),
        };
        self.studies_stale |= changed;
    }

    /// Refetch the studies and their tables.
    pub fn mark_studies_stale(&mut self) {
        self.studies_stale = true;
    }

    /// Refetch a search's candidates.
    pub fn mark_nas_stale(&mut self, run: RunId) {
        self.stale_nas.insert(run);
    }

    /// Refetch a run's new metrics and its details.
    pub fn mark_stale(&mut self, run: RunId) {
        self.stale_metrics.insert(run);
        self.stale_details.insert(run);
    }

    /// Ask for a run's data if it is not loaded yet.
    pub fn want(&mut self, run: RunId) {
        if !self.data.contains_key(&run) && !self.in_flight.contains(&run) {
            self.stale_metrics.insert(run);
            self.stale_details.insert(run);
        }
    }

    /// Ask for `run`'s mask panel at `epoch` epochs done, unless it is held or on its way.
    pub fn want_masks(&mut self, run: RunId, epoch: i64) {
        let held = self.masks.get(&run).is_some_and(|(e, _)| *e == epoch);
        if !held && !self.masks_in_flight.contains(&run) {
            self.masks_wanted.insert((run, epoch));
        }
    }

    /// Whether [`Self::queries`] would send anything for `visible`.
    pub fn has_pending(&self, visible: &[RunId]) -> bool {
        self.runs_stale
            || self.studies_stale
            || !self.stale_nas.is_empty()
            || !self.masks_wanted.is_empty()
            || visible.iter().any(|r| {
                self.stale_details.contains(r)
                    || (self.stale_metrics.contains(r) && !self.in_flight.contains(r))
            })
    }

    /// The queries to send now for the runs in `visible` (the runs list always).
    pub fn queries(&mut self, visible: &[RunId]) -> Vec<Query> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.runs_stale) {
            out.push(Query::Runs {
                metrics: self.runs_metrics.clone(),
            });
        }
        for run in std::mem::take(&mut self.stale_nas) {
            out.push(Query::Nas(run));
        }
        for (run, epoch) in std::mem::take(&mut self.masks_wanted) {
            self.masks_in_flight.insert(run);
            out.push(Query::Masks { run, epoch });
        }
        if std::mem::take(&mut self.studies_stale) {
            out.push(Query::Studies {
                metrics: self.study_metrics.clone(),
            });
        }
        for &run in visible {
            if self.stale_metrics.contains(&run) && !self.in_flight.contains(&run) {
                self.stale_metrics.remove(&run);
                self.in_flight.insert(run);
                let from = self.data.get(&run).and_then(|d| d.last_step);
                out.push(Query::Metrics { run, from });
            }
            if self.stale_details.remove(&run) {
                out.push(Query::Details(run));
            }
        }
        out
    }

    /// A query could not be sent: forget that it is in flight so it is retried.
    pub fn unsent(&mut self, q: &Query) {
        match q {
            Query::Runs { .. } => self.runs_stale = true,
            Query::Edit { .. } | Query::Delete(_) => {
                self.last_error = Some("the data thread is busy: the change was not sent".into());
            }
            Query::Metrics { run, .. } => {
                self.in_flight.remove(run);
                self.stale_metrics.insert(*run);
            }
            Query::Details(run) => {
                self.stale_details.insert(*run);
            }
            Query::Nas(run) => {
                self.stale_nas.insert(*run);
            }
            Query::Studies { .. } => self.studies_stale = true,
            Query::Masks { run, epoch } => {
                self.masks_in_flight.remove(run);
                self.masks_wanted.insert((*run, *epoch));
            }
            Query::Presets(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftadd_core::store::keys;

    #[test]
    fn eta_uses_rate_since_start() {
        let t0 = Instant::now();
        let live = Live {
            epoch: 0,
            total_epochs: 1,
            step: 60,
            total_steps: 100,
            loss: 1.0,
            images_per_sec: 1.0,
            paused: false,
            since: t0,
            since_step: 50,
        };
        let eta = live
            .eta_secs(t0 + std::time::Duration::from_secs(10))
            .expect("eta");
        assert!((eta - 40.0).abs() < 1e-9, "{eta}");
        assert!((live.fraction() - 0.6).abs() < 1e-6);
    }

    #[test]
    fn incremental_metrics_extend_and_full_loads_replace() {
        let mut c = DataCache::default();
        let s = |xs: Vec<f64>| {
            let ys = xs.clone();
            BTreeMap::from([(keys::TRAIN_LOSS.to_owned(), Series::new(xs, ys))])
        };
        c.want(1);
        c.runs_stale = false;
        assert!(c.has_pending(&[1]) && !c.has_pending(&[2]));
        assert_eq!(
            c.queries(&[1]),
            vec![Query::Metrics { run: 1, from: None }, Query::Details(1)]
        );
        assert!(!c.has_pending(&[1]), "sent: nothing waits any more");
        c.apply_loaded(Loaded::Metrics {
            run: 1,
            replace: true,
            series: s(vec![1.0, 2.0]),
            last_step: Some(2),
        });
        c.apply_event(
            &Event::Progress {
                run: 1,
                epoch: 0,
                step: 3,
                total_steps: 9,
                loss: 1.0,
                images_per_sec: 1.0,
            },
            Instant::now(),
        );
        assert_eq!(
            c.queries(&[1]),
            vec![Query::Metrics {
                run: 1,
                from: Some(2)
            }]
        );
        c.apply_loaded(Loaded::Metrics {
            run: 1,
            replace: false,
            series: s(vec![3.0]),
            last_step: Some(3),
        });
        assert_eq!(c.data[&1].series[keys::TRAIN_LOSS].xs, vec![1.0, 2.0, 3.0]);
        assert!(c.queries(&[1]).is_empty(), "nothing new");
    }

    #[test]
    fn a_studys_chosen_metric_reloads_the_studies_with_it_and_only_a_change_does() {
        let mut c = DataCache::default();
        c.set_study_metric(3, None);
        assert!(
            c.queries(&[]).is_empty(),
            "no choice, no change: nothing to load"
        );
        c.set_study_metric(3, Some(keys::VAL_TOP1.into()));
        assert_eq!(c.study_metric(3), Some(keys::VAL_TOP1));
        assert_eq!(c.study_metric(4), None);
        assert_eq!(
            c.queries(&[]),
            vec![Query::Studies {
                metrics: BTreeMap::from([(3, keys::VAL_TOP1.to_owned())])
            }]
        );
        c.set_study_metric(3, Some(keys::VAL_TOP1.into()));
        assert!(c.queries(&[]).is_empty(), "the same choice again");
        // Back to the study's own: reloaded without it.
        c.set_study_metric(3, None);
        assert_eq!(
            c.queries(&[]),
            vec![Query::Studies {
                metrics: BTreeMap::new()
            }]
        );
        // A query that could not be sent is sent again, with the choice.
        c.set_study_metric(5, Some(keys::TRAIN_LOSS.into()));
        let q = c.queries(&[]);
        c.unsent(&q[0]);
        assert_eq!(c.queries(&[]), q);
    }
}
