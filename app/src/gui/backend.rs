//! The app's side of the threads: the run manager's channels, and the `ui-data` thread that runs
//! every SQLite query and file read so the UI thread never waits on I/O. Both wake the UI through
//! the egui context when something arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use shiftadd_core::Config;
use shiftadd_core::hw::LayerCost;
use shiftadd_core::nas::best_subnet;
use shiftadd_core::run::{Command, Event};
use shiftadd_core::spec::space::NasArch;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::{
    HistogramRow, HwCostRow, NasCandidateRow, Reader, RunId, RunSummary, StoreError, StudyJobRow,
    StudyRow, StudyRunRow,
};
use shiftadd_core::study::report::{self, Table};

use super::plot::Series;
use super::searches::Searches;

/// Requests to the `ui-data` thread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Query {
    /// The runs table.
    Runs,
    /// A run's config, logs, histograms and hardware cost (metrics come with [`Query::Metrics`]).
    Details(RunId),
    /// A run's metric rows with step > `after` (`None`: all, replacing what the UI holds).
    Metrics { run: RunId, after: Option<i64> },
    /// The candidates of a NAS search.
    Nas(RunId),
    /// The `*.toml` presets of a folder.
    Presets(PathBuf),
    /// Every study with its table.
    Studies,
}

/// One row of the runs table: the stored summary plus what the table derives from the config.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub summary: RunSummary,
    pub hybrid: String,
}

/// What the `ui-data` thread hands back.
#[derive(Debug, Clone)]
pub enum Loaded {
    Runs(Vec<RunRow>),
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
}

/// One stored study: its spec (parsed back from the database), its cells, its table.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyData {
    pub row: StudyRow,
    /// `None` if the stored spec no longer parses (written by another version).
    pub study: Option<Study>,
    pub cells: Vec<StudyRunRow>,
    /// Where cells train when not here (a Slurm task each), as the coordinator last saw it.
    pub jobs: Vec<StudyJobRow>,
    pub table: Option<Table>,
}

fn studies(r: &Reader) -> Result<Vec<StudyData>, shiftadd_core::store::StoreError> {
    let mut out = Vec::new();
    for row in r.studies()? {
        let study: Option<Study> = serde_json::from_str(&row.spec).ok();
        let table = match &study {
            Some(s) => Some(report::table(s, row.id, r)?),
            None => None,
        };
        out.push(StudyData {
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
    /// The best-architectures table: indices into `rows` of evaluated candidates, TargetNets
    /// first, best proxy accuracy first, each with its parsed architecture.
    pub best: Vec<(usize, Option<NasArch>)>,
    /// The SubNet the TargetNets sit in (the best stage-1 candidate).
    pub subnet: Option<NasArch>,
}

impl NasData {
    pub fn new(rows: Vec<NasCandidateRow>) -> Self {
        let mut best: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].proxy_accuracy.is_some())
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
        })
    }
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
                batch.sort();
                batch.dedup();
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
    /// `aug.hybrid` per run: stored configs never change, so each is parsed once.
    hybrid: HashMap<RunId, String>,
}

fn answer(db: &Path, state: &mut DataState, q: Query) -> Loaded {
    if let Query::Presets(dir) = &q {
        return read_presets(dir);
    }
    let reader = &mut state.reader;
    if reader.is_none() {
        // Nothing recorded yet: the manager creates (and migrates) the file on its first write.
        let not_yet = || match q {
            Query::Runs => Loaded::Runs(Vec::new()),
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
        Query::Runs => runs(r, &mut state.hybrid).map(Loaded::Runs),
        Query::Details(run) => details(r, run).map(|d| Loaded::Details(Box::new(d))),
        Query::Metrics { run, after } => metrics(r, run, after),
        Query::Presets(dir) => Ok(read_presets(&dir)),
        Query::Studies => studies(r)
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

fn runs(r: &Reader, hybrid: &mut HashMap<RunId, String>) -> Result<Vec<RunRow>, String> {
    let summaries = r.runs().map_err(|e| e.to_string())?;
    Ok(summaries
        .into_iter()
        .map(|summary| {
            let hybrid = hybrid
                .entry(summary.id)
                .or_insert_with(|| {
                    r.config_toml(summary.id)
                        .ok()
                        .and_then(|t| t.parse::<toml::Table>().ok())
                        .and_then(|t| t.get("aug")?.get("hybrid")?.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .clone();
            RunRow { summary, hybrid }
        })
        .collect())
}

fn details(r: &Reader, run: RunId) -> Result<Details, String> {
    let e = |e: shiftadd_core::store::StoreError| e.to_string();
    let config_toml = r.config_toml(run).map_err(e)?;
    Ok(Details {
        run,
        config: Config::from_toml_str(&config_toml, &format!("run {run}"), &[])
            .ok()
            .map(Arc::new),
        config_toml,
        logs: r.logs(run).map_err(e)?,
        histograms: r.histograms(run).map_err(e)?,
        hw: HwRecords::from_rows(&r.hw_cost(run).map_err(e)?),
    })
}

fn metrics(r: &Reader, run: RunId, after: Option<i64>) -> Result<Loaded, String> {
    let rows = r
        .metrics_after(run, after.unwrap_or(i64::MIN))
        .map_err(|e| e.to_string())?;
    let last_step = rows.iter().map(|m| m.step).max();
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for m in rows {
        let s = series.entry(m.key).or_default();
        s.xs.push(m.step as f64);
        s.ys.push(m.value);
    }
    Ok(Loaded::Metrics {
        run,
        replace: after.is_none(),
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
mod tests {
    use super::*;

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
}
