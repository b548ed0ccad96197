//! The app's side of the threads: the run manager's channels, and the `ui-data` thread that runs
//! every SQLite query and file read so the UI thread never waits on I/O. Both wake the UI through
//! the egui context when something arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use shiftadd_core::Config;
use shiftadd_core::export::MaskPanel;
use shiftadd_core::hw::LayerCost;
use shiftadd_core::nas::best_subnet;
use shiftadd_core::run::{Command, Event};
use shiftadd_core::spec::space::NasArch;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::manage::{self, RunEdit};
use shiftadd_core::store::{
    HistogramRow, HwCostRow, MetricSummary, NasCandidateRow, Reader, RunId, RunSummary, StoreError,
    StudyJobRow, StudyRow, StudyRunRow,
};
use shiftadd_core::study::fit::Fit;
use shiftadd_core::study::report::{self, Table};

use crate::chart::series::Series;
use crate::gui::data::opening::Opening;
use crate::gui::data::searches::Searches;

/// Requests to the `ui-data` thread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Query {
    /// Change a run's record (applied in the order sent, before the reads of the same batch).
    Edit { run: RunId, edit: RunEdit },
    /// Delete runs with their checkpoint files.
    Delete(Vec<RunId>),
    /// The runs table, with these metrics' figures per run.
    Runs { metrics: Vec<String> },
    /// A run's config, logs, histograms and hardware cost (metrics come with [`Query::Metrics`]).
    Details(RunId),
    /// A run's metric rows from step `from` on, inclusive (`None`: all, replacing what the UI
    /// holds). Inclusive because a step's rows can arrive in two writes: a run records its
    /// validation at the step of the epoch's last batch, seconds after that batch's own rows.
    Metrics { run: RunId, from: Option<i64> },
    /// The candidates of a NAS search.
    Nas(RunId),
    /// The `*.toml` presets of a folder.
    Presets(PathBuf),
    /// Every study with its table: of the metric chosen for it here (by study id), else of the
    /// study's own.
    Studies { metrics: BTreeMap<i64, String> },
    /// A segmentation run's first validation images with their masks, true and predicted by its
    /// last checkpoint (`epoch`: the epochs done when asked, which keys the answer).
    Masks { run: RunId, epoch: i64 },
}

/// Validation images the masks panel shows.
pub const MASK_IMAGES: usize = 4;

/// One row of the runs table: the stored summary plus what the table derives from the config.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub summary: RunSummary,
    pub hybrid: String,
    /// The resolved config flattened (`section.key` → TOML text; shared with the data thread's
    /// cache: stored configs never change).
    pub config: Arc<BTreeMap<String, String>>,
    /// The figures of the metrics the table asked for, by key.
    pub metrics: BTreeMap<String, MetricSummary>,
}

impl RunRow {
    pub fn new(summary: RunSummary) -> Self {
        Self {
            summary,
            hybrid: String::new(),
            config: Arc::default(),
            metrics: BTreeMap::new(),
        }
    }

    pub fn config_mut(&mut self) -> &mut BTreeMap<String, String> {
        Arc::make_mut(&mut self.config)
    }

    /// Why the run is not learning, if it is not: past [`NOT_LEARNING_AFTER`] of its epochs, its
    /// best validation top-1 is still within 1.5 × chance (1 / classes). Early epochs are left
    /// alone; a dataset whose classes are unknown is not judged.
    pub fn not_learning(&self) -> Option<String> {
        let s = &self.summary;
        let classes = match s.dataset.as_str() {
            "cifar100" => 100.0,
            "fashion-mnist" | "cifar10" | "synthetic" => 10.0,
            _ => return None,
        };
        let total: f64 = self.config.get("train.epochs")?.parse().ok()?;
        let done = s.epochs_done? as f64;
        if total < 1.0 || done < (NOT_LEARNING_AFTER * total).max(1.0) {
            return None;
        }
        let best = s.best_val_top1?;
        (best <= 1.5 / classes).then(|| {
            format!(
                "not learning: best validation top-1 {:.1} % after {done:.0} of {total:.0} epochs \
                 (chance is {:.0} %)",
                best * 100.0,
                100.0 / classes
            )
        })
    }
}

/// The share of its epochs after which a run still at chance is flagged as not learning.
pub const NOT_LEARNING_AFTER: f64 = 0.25;

/// What the `ui-data` thread hands back.
#[derive(Debug, Clone)]
pub enum Loaded {
    Runs {
        rows: Vec<RunRow>,
        /// Every metric key recorded (for the column chooser).
        metric_keys: Vec<String>,
        /// Every study's name, by id (the runs table's fold rows name their study).
        study_names: BTreeMap<i64, String>,
    },
    /// What an edit or delete did (`Err`: why it did nothing).
    Managed(Result<String, String>),
    Details(Box<Details>),
    Metrics {
        run: RunId,
        /// Whether these rows replace the held ones (a full load) or extend them.
        replace: bool,
        series: BTreeMap<String, Series>,
        last_step: Option<i64>,
    },
    /// The config presets of `experiments/`, and the study files of `experiments/studies/`.
    Presets {
        configs: Vec<Preset>,
        studies: Vec<Preset>,
    },
    Nas {
        run: RunId,
        nas: Arc<NasData>,
    },
    Studies(Arc<Vec<StudyData>>),
    Masks {
        run: RunId,
        epoch: i64,
        panel: Result<Arc<MaskPanel>, String>,
    },
    /// A query failed; the message names what and why.
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    pub run: RunId,
    pub config_toml: String,
    /// The stored config resolved (`None` if it no longer parses, e.g. written by a newer version).
    pub config: Option<Arc<Config>>,
    /// (wall time, level, message)
    pub logs: Vec<(f64, String, String)>,
    pub histograms: Vec<HistogramRow>,
    /// The hardware-cost records per model, parsed (in the order `tiny`, `tiny-mult`, `augmented`
    /// as stored).
    pub hw: Vec<HwRecords>,
    /// `hw` was priced from the config here: the database holds no records of it (a compacted
    /// results database leaves them out).
    pub hw_priced: bool,
    /// Where it ran (`None` for runs recorded before provenance was kept).
    pub provenance: Option<shiftadd_core::host::Provenance>,
}

/// One stored study: its spec (parsed back from the database), its cells, its table (of the metric
/// the view chose for it, which `table.metric` names; the spec keeps the study's own).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyData {
    pub row: StudyRow,
    /// `None` if the stored spec no longer parses (written by another version).
    pub study: Option<Study>,
    pub cells: Vec<StudyRunRow>,
    /// Where cells train when not here (a Slurm task each), as the coordinator last saw it.
    pub jobs: Vec<StudyJobRow>,
    pub table: Option<Table>,
    /// The augmented variants' training loss beside their tiny models' (`None` as for `table`).
    pub fit: Option<Fit>,
}

fn studies(
    r: &Reader,
    metrics: &BTreeMap<i64, String>,
) -> Result<Vec<StudyData>, shiftadd_core::store::StoreError> {
    let mut out = Vec::new();
    for row in r.studies()? {
        let study: Option<Study> = serde_json::from_str(&row.spec).ok();
        // The table reports the metric chosen for this study, else the study's own.
        let table = match &study {
            Some(s) => {
                let mut spec = s.clone();
                if let Some(m) = metrics.get(&row.id) {
                    m.clone_into(&mut spec.metric);
                }
                Some(report::table(&spec, row.id, r)?)
            }
            None => None,
        };
        let fit = match &study {
            Some(s) => Some(shiftadd_core::study::fit::fit(s, row.id, r)?),
            None => None,
        };
        out.push(StudyData {
            fit,
            cells: r.study_runs(row.id)?,
            jobs: r.study_jobs(row.id)?,
            row,
            study,
            table,
        });
    }
    Ok(out)
}

/// The per-layer hardware cost of one of a run's models under one cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct HwRecords {
    /// The cost model: `shiftaddnas` or `project`.
    pub hw_model: String,
    /// `tiny`, `tiny-mult` or `augmented`.
    pub key: String,
    pub layers: Vec<LayerCost>,
    /// Rows whose detail JSON did not parse (skipped, and reported by the view).
    pub unreadable: usize,
}

impl HwRecords {
    /// Group stored rows by cost model and model, parsing each row's detail once.
    pub fn from_rows(rows: &[HwCostRow]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for r in rows {
            let i = match out
                .iter()
                .position(|m| m.key == r.model && m.hw_model == r.hw_model)
            {
                Some(i) => i,
                None => {
                    out.push(Self {
                        hw_model: r.hw_model.clone(),
                        key: r.model.clone(),
                        layers: Vec::new(),
                        unreadable: 0,
                    });
                    out.len() - 1
                }
            };
            match serde_json::from_value(r.detail.clone()) {
                Ok(l) => out[i].layers.push(l),
                Err(_) => out[i].unreadable += 1,
            }
        }
        out
    }
}

/// A search's candidates, with what the NAS view derives from them worked out once.
#[derive(Debug, Clone, PartialEq)]
pub struct NasData {
    pub rows: Vec<NasCandidateRow>,
    /// The best-architectures table: indices into `rows` of evaluated candidates (not pruned:
    /// a pruned proxy's score is from before its stop), TargetNets first, best proxy accuracy
    /// first, each with its parsed architecture.
    pub best: Vec<(usize, Option<NasArch>)>,
    /// The SubNet the TargetNets sit in (the best stage-1 candidate).
    pub subnet: Option<NasArch>,
}

impl NasData {
    pub fn new(rows: Vec<NasCandidateRow>) -> Self {
        let mut best: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                rows[i].status == shiftadd_core::store::CandidateStatus::Done
                    && rows[i].proxy_accuracy.is_some()
            })
            .collect();
        let acc = |i: usize| rows[i].proxy_accuracy.unwrap_or(0.0);
        best.sort_by(|&a, &b| {
            rows[b]
                .stage
                .cmp(&rows[a].stage)
                .then(acc(b).total_cmp(&acc(a)))
        });
        Self {
            best: best
                .into_iter()
                .map(|i| (i, NasArch::from_json(&rows[i].arch).ok()))
                .collect(),
            subnet: best_subnet(&rows),
            rows,
        }
    }
}

/// A preset file: its name (file stem) and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// Everything the app talks to. Tests build one with channels they hold the other ends of.
pub struct Backend {
    pub db: PathBuf,
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    pub queries: Sender<Query>,
    pub loaded: Receiver<Loaded>,
    pub experiments_dir: PathBuf,
    /// NAS searches started from the app (shared with `gui::run`, which waits for them).
    pub searches: Arc<Mutex<Searches>>,
    /// The database cannot be written by this user: the app browses it, and says so; every start
    /// is refused by [`read_only_manager`] with the reason.
    pub read_only: bool,
    /// How opening the database for writing stands ([`super::opening`]; ready unless the app
    /// opened it in the background).
    pub opening: Arc<Mutex<Opening>>,
}

impl Backend {
    /// A backend over the run manager's channels, with a fresh `ui-data` thread reading `db`.
    pub fn new(
        db: &Path,
        experiments_dir: PathBuf,
        commands: Sender<Command>,
        events: Receiver<Event>,
        ctx: &egui::Context,
    ) -> std::io::Result<Self> {
        let (queries, loaded) = spawn_data_thread(db.to_path_buf(), ctx.clone())?;
        let repaint = ctx.clone();
        let waker: shiftadd_core::run::Waker = Arc::new(move || repaint.request_repaint());
        Ok(Self {
            db: db.to_path_buf(),
            commands,
            events,
            queries,
            loaded,
            experiments_dir,
            searches: Arc::new(Mutex::new(Searches::new(db, waker))),
            read_only: false,
            opening: Arc::new(Mutex::new(Opening::Ready)),
        })
    }

    /// How opening the database stands now.
    pub fn opening(&self) -> Opening {
        self.opening.lock().map_or(Opening::Ready, |o| o.clone())
    }

    /// Whether the database is browsed only (this user cannot write it).
    pub fn is_read_only(&self) -> bool {
        self.read_only || self.opening() == Opening::ReadOnly
    }
}

/// What stands in for the run manager on a database this user cannot write: every start, queue
/// or resume is answered `Rejected` with the reason (nothing can be recorded); stop and pause
/// have nothing to act on. Its thread ends when the commands' sender is dropped or at `Shutdown`.
pub fn read_only_manager(
    db: &Path,
    waker: shiftadd_core::run::Waker,
) -> std::io::Result<(Sender<Command>, Receiver<Event>)> {
    let (cmd_tx, cmd_rx) = bounded::<Command>(64);
    let (ev_tx, ev_rx) = bounded::<Event>(64);
    let reason = super::opening::refusal(
        db,
        &StoreError::ReadOnly {
            path: db.to_path_buf(),
        },
    );
    std::thread::Builder::new()
        .name("read-only".into())
        .spawn(move || {
            let never = std::sync::atomic::AtomicBool::new(false);
            super::opening::refuse(&reason, &cmd_rx, &ev_tx, &waker, &never);
        })?;
    Ok((cmd_tx, ev_rx))
}

/// Start the `ui-data` thread: it drains and de-duplicates queued requests, runs them, and
/// wakes the UI after each answer.
pub fn spawn_data_thread(
    db: PathBuf,
    ctx: egui::Context,
) -> std::io::Result<(Sender<Query>, Receiver<Loaded>)> {
    let (q_tx, q_rx) = bounded::<Query>(256);
    let (l_tx, l_rx) = bounded::<Loaded>(256);
    std::thread::Builder::new()
        .name("ui-data".into())
        .spawn(move || {
            let mut state = DataState::default();
            while let Ok(first) = q_rx.recv() {
                let mut batch = vec![first];
                while let Ok(q) = q_rx.try_recv() {
                    batch.push(q);
                }
                // Changes first, in the order sent; then the reads, each once.
                let (mut changes, mut reads): (Vec<Query>, Vec<Query>) = batch
                    .into_iter()
                    .partition(|q| matches!(q, Query::Edit { .. } | Query::Delete(_)));
                reads.sort();
                reads.dedup();
                changes.append(&mut reads);
                let batch = changes;
                for q in batch {
                    let answer = answer(&db, &mut state, q);
                    if l_tx.send(answer).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                }
            }
        })?;
    Ok((q_tx, l_rx))
}

/// What the `ui-data` thread keeps between queries.
#[derive(Default)]
struct DataState {
    reader: Option<Reader>,
    /// Each run's flattened config: stored configs never change, so each is parsed once.
    configs: HashMap<RunId, Arc<BTreeMap<String, String>>>,
    /// The metric keys recorded, and when they were read (a scan of the metrics index, done
    /// at most every [`METRIC_KEYS_EVERY`] while runs write).
    metric_keys: Option<(std::time::Instant, Vec<String>)>,
}

/// How often the column chooser's list of metric keys is read again.
const METRIC_KEYS_EVERY: Duration = Duration::from_secs(15);

/// Apply an edit or delete through the store; the line the status bar shows.
fn manage_runs(db: &Path, q: &Query) -> Result<String, String> {
    match q {
        Query::Edit { run, edit } => manage::edit(db, *run, edit)
            .map(|()| format!("run {run}: {}", edit.describe()))
            .map_err(|e| e.to_string()),
        Query::Delete(runs) => {
            let mut done = Vec::new();
            for &run in runs {
                let d = manage::delete(db, run).map_err(|e| {
                    let before = if done.is_empty() {
                        String::new()
                    } else {
                        format!(" (deleted before it: {})", done.join(", "))
                    };
                    format!("{e}{before}")
                })?;
                done.push(format!("#{run} `{}`", d.name));
            }
            Ok(format!(
                "deleted {} with their checkpoint files",
                done.join(", ")
            ))
        }
        _ => Err("not a change".into()),
    }
}

fn answer(db: &Path, state: &mut DataState, q: Query) -> Loaded {
    if let Query::Presets(dir) = &q {
        return read_presets(dir);
    }
    if let Query::Masks { run, epoch } = q {
        // Loads the run's data and checkpoint: about a second, once an epoch.
        let panel = shiftadd_core::export::predict_masks(db, run, MASK_IMAGES)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        return Loaded::Masks { run, epoch, panel };
    }
    if matches!(q, Query::Edit { .. } | Query::Delete(_)) {
        // The reader's snapshot must not pin what the change removes.
        state.reader = None;
        return Loaded::Managed(manage_runs(db, &q));
    }
    let reader = &mut state.reader;
    if reader.is_none() {
        // Nothing recorded yet: the manager creates (and migrates) the file on its first write.
        let not_yet = || match q {
            Query::Runs { .. } => Loaded::Runs {
                rows: Vec::new(),
                metric_keys: Vec::new(),
                study_names: BTreeMap::new(),
            },
            _ => Loaded::Error(format!("database {} does not exist yet", db.display())),
        };
        if !db.exists() {
            return not_yet();
        }
        match Reader::open(db) {
            Ok(r) => *reader = Some(r),
            Err(StoreError::NotMigrated { .. }) => return not_yet(),
            Err(e) => return Loaded::Error(e.to_string()),
        }
    }
    let Some(r) = reader.as_ref() else {
        return Loaded::Error("no database reader".into());
    };
    let result = match q {
        Query::Runs { metrics } => {
            let stale = state
                .metric_keys
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > METRIC_KEYS_EVERY);
            if stale {
                match r.metric_keys() {
                    Ok(k) => state.metric_keys = Some((std::time::Instant::now(), k)),
                    Err(e) => return Loaded::Error(e.to_string()),
                }
            }
            let keys = state
                .metric_keys
                .as_ref()
                .map(|(_, k)| k.clone())
                .unwrap_or_default();
            runs(r, &mut state.configs, &metrics, keys)
        }
        Query::Details(run) => details(r, run).map(|d| Loaded::Details(Box::new(d))),
        Query::Edit { .. } | Query::Delete(_) | Query::Masks { .. } => Err("answered above".into()),
        Query::Metrics { run, from } => metrics(r, run, from),
        Query::Presets(dir) => Ok(read_presets(&dir)),
        Query::Studies { metrics } => studies(r, &metrics)
            .map(|v| Loaded::Studies(Arc::new(v)))
            .map_err(|e| e.to_string()),
        Query::Nas(run) => r
            .nas_candidates(run)
            .map(|rows| Loaded::Nas {
                run,
                nas: Arc::new(NasData::new(rows)),
            })
            .map_err(|e| e.to_string()),
    };
    result.unwrap_or_else(|e| {
        // A broken connection is reopened on the next query.
        state.reader = None;
        Loaded::Error(e)
    })
}

fn runs(
    r: &Reader,
    configs: &mut HashMap<RunId, Arc<BTreeMap<String, String>>>,
    metrics: &[String],
    metric_keys: Vec<String>,
) -> Result<Loaded, String> {
    let e = |e: StoreError| e.to_string();
    let summaries = r.runs().map_err(e)?;
    let mut figures: BTreeMap<RunId, BTreeMap<String, MetricSummary>> = BTreeMap::new();
    for key in metrics {
        for m in r.metric_summary(key).map_err(e)? {
            figures.entry(m.run).or_default().insert(key.clone(), m);
        }
    }
    let rows = summaries
        .into_iter()
        .map(|summary| {
            let config = configs
                .entry(summary.id)
                .or_insert_with(|| {
                    Arc::new(
                        r.config_toml(summary.id)
                            .map(|t| flatten_config(&t))
                            .unwrap_or_default(),
                    )
                })
                .clone();
            let hybrid = config
                .get("aug.hybrid")
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default();
            RunRow {
                metrics: figures.remove(&summary.id).unwrap_or_default(),
                summary,
                hybrid,
                config,
            }
        })
        .collect();
    // A study table this code cannot read costs the fold rows their names, not the listing.
    let study_names = r
        .studies()
        .map(|v| v.into_iter().map(|s| (s.id, s.name)).collect())
        .unwrap_or_default();
    Ok(Loaded::Runs {
        rows,
        metric_keys,
        study_names,
    })
}

fn details(r: &Reader, run: RunId) -> Result<Details, String> {
    let e = |e: shiftadd_core::store::StoreError| e.to_string();
    let config_toml = r.config_toml(run).map_err(e)?;
    let config = Config::from_toml_str(&config_toml, &format!("run {run}"), &[])
        .ok()
        .map(Arc::new);
    let mut hw_rows = r.hw_cost(run).map_err(e)?;
    let hw_priced = hw_rows.is_empty() && config.is_some();
    if let (true, Some(cfg)) = (hw_priced, &config) {
        hw_rows = shiftadd_core::hw::priced_rows(run, cfg);
    }
    Ok(Details {
        run,
        config,
        config_toml,
        logs: r.logs(run).map_err(e)?,
        histograms: r.histograms(run).map_err(e)?,
        hw: HwRecords::from_rows(&hw_rows),
        hw_priced,
        provenance: serde_json::from_str(&r.provenance(run).map_err(e)?).ok(),
    })
}

fn metrics(r: &Reader, run: RunId, from: Option<i64>) -> Result<Loaded, String> {
    let rows = r
        .metrics_from(run, from.unwrap_or(i64::MIN))
        .map_err(|e| e.to_string())?;
    let last_step = rows.iter().map(|m| m.step).max();
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for mut m in rows {
        let key = std::mem::take(&mut m.key);
        series.entry(key).or_default().push_row(&m);
    }
    Ok(Loaded::Metrics {
        run,
        replace: from.is_none(),
        series,
        last_step,
    })
}

fn read_presets(dir: &Path) -> Loaded {
    let configs = match toml_files(dir) {
        Ok(c) => c,
        Err(e) => return Loaded::Error(format!("cannot list presets in {}: {e}", dir.display())),
    };
    // Study files are optional: an experiments folder without `studies/` has none.
    let studies = toml_files(&dir.join("studies")).unwrap_or_default();
    Loaded::Presets { configs, studies }
}

/// The `.toml` files of `dir` with their text, sorted by name.
fn toml_files(dir: &Path) -> std::io::Result<Vec<Preset>> {
    let mut presets: Vec<Preset> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let name = path.file_stem()?.to_string_lossy().into_owned();
            Some(Preset { name, path, text })
        })
        .collect();
    presets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(presets)
}

/// `section.key` → value as TOML text, for config diffs. The config is resolved first, so a
/// key added after a run was recorded shows its default rather than a difference.
pub fn flatten_config(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let resolved = shiftadd_core::Config::from_toml_str(text, "stored config", &[])
        .map_or_else(|_| text.to_owned(), |c| c.to_toml());
    let Ok(table) = resolved.parse::<toml::Table>() else {
        return out;
    };
    for (section, v) in &table {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    out.insert(format!("{section}.{k}"), v.to_string());
                }
            }
            other => {
                out.insert(section.clone(), other.to_string());
            }
        }
    }
    out
}

/// The waker the run manager calls: repaint the UI once it exists.
pub fn lazy_waker(slot: Arc<std::sync::OnceLock<egui::Context>>) -> shiftadd_core::run::Waker {
    Arc::new(move || {
        if let Some(ctx) = slot.get() {
            ctx.request_repaint();
        }
    })
}

/// How long the UI thread may spend draining channels per frame.
pub const DRAIN_BUDGET: Duration = Duration::from_millis(4);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A runs-table row for tests: finished, synthetic, micro, add, hybrid mult.
    pub(crate) fn row(id: RunId, name: &str, tags: &str) -> RunRow {
        let mut r = RunRow::new(RunSummary {
            id,
            name: name.into(),
            status: shiftadd_core::store::Status::Finished,
            reason: None,
            dataset: "synthetic".into(),
            model: "micro".into(),
            operator: "add".into(),
            seed: 0,
            tags: tags.into(),
            created_at: 0.0,
            finished_at: None,
            epochs_done: None,
            last_val_top1: None,
            best_val_top1: None,
            test_top1: None,
            energy_mj: None,
            energy_shiftaddnas_mj: None,
            energy_project_mj: None,
            uid: format!("uid-{id}"),
            archived: false,
            notes: String::new(),
            started_at: None,
            heartbeat_at: None,
            segmentation: false,
        });
        r.hybrid = "mult".into();
        r
    }

    #[test]
    fn config_flattens_to_dotted_keys() {
        let f = flatten_config("[train]\nepochs = 3\n[data]\ndataset = \"synthetic\"\n");
        assert_eq!(f["train.epochs"], "3");
        assert_eq!(f["data.dataset"], "\"synthetic\"");
        assert_eq!(
            f["nas.population"], "4",
            "keys it does not name take their default"
        );
    }

    #[test]
    fn hw_rows_are_grouped_by_model_and_parsed_once() {
        let mut cfg = Config::default();
        let mut costs = shiftadd_core::hw::config_costs(&cfg, 3, 32, 10);
        cfg.hw.model = shiftadd_core::spec::config::HwModel::Project;
        costs.extend(shiftadd_core::hw::config_costs(&cfg, 3, 32, 10));
        let mut rows = shiftadd_core::hw::cost_rows(1, &costs);
        rows.push(HwCostRow {
            run: 1,
            hw_model: "shiftaddnas".into(),
            model: "tiny".into(),
            layer_index: 99,
            layer: "broken".into(),
            detail: serde_json::json!({"name": "broken"}),
        });
        let models = HwRecords::from_rows(&rows);
        let keys: Vec<String> = models
            .iter()
            .map(|m| format!("{}/{}", m.hw_model, m.key))
            .collect();
        assert_eq!(
            keys,
            [
                "shiftaddnas/tiny",
                "shiftaddnas/tiny-mult",
                "shiftaddnas/augmented",
                "project/tiny",
                "project/tiny-mult",
                "project/augmented"
            ]
        );
        assert_eq!(models[0].layers, costs[0].layers);
        assert_eq!(models[5].layers, costs[5].layers);
        assert_ne!(
            models[0].layers, models[3].layers,
            "the two cost models differ"
        );
        assert_eq!(models[0].unreadable, 1);
        assert_eq!(models[3].unreadable, 0);
    }

    /// An Add + ShiftAddAug smoke run sat at chance (10.5 %) for its whole life and nothing said
    /// so: past a quarter of its epochs at chance, a run is flagged; before, or learning, not.
    #[test]
    fn a_run_at_chance_past_a_quarter_of_its_epochs_is_flagged() {
        let mut r = row(1, "add-aug", "");
        r.config_mut().insert("train.epochs".into(), "20".into());
        r.summary.best_val_top1 = Some(0.105);
        r.summary.epochs_done = Some(4);
        assert_eq!(r.not_learning(), None, "4 of 20 epochs: too early to say");
        r.summary.epochs_done = Some(5);
        let why = r.not_learning().expect("flagged");
        assert!(
            why.contains("10.5 %") && why.contains("5 of 20") && why.contains("chance is 10 %"),
            "{why}"
        );
        r.summary.best_val_top1 = Some(0.31);
        assert_eq!(r.not_learning(), None, "31 % is learning");
        r.summary.dataset = "cifar100".into();
        r.summary.best_val_top1 = Some(0.012);
        assert!(r.not_learning().is_some(), "1.2 % on 100 classes");
        r.summary.dataset = "unknown".into();
        assert_eq!(r.not_learning(), None);
    }
}
