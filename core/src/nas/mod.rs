//! The two-stage NAS search driver (method.md §6): stage 1 evolves multiplicative SubNets under
//! m × the budget, stage 2 MF TargetNets inside the best SubNet under the budget; every candidate
//! is proxy-trained as an ordinary run through the run manager (`nas.parallel` at a time), stored
//! in `nas_candidates`, and replayed from there when the same search runs again. The space itself
//! is plain data in [`crate::spec::space`].
//!
//! [`cost`] prices a candidate and keeps the Pareto front; the search here evaluates each
//! generation's candidates through [`local`] (the run manager) or [`slurm`] (one job array).

mod cost;
mod local;
mod slurm;
#[cfg(test)]
mod tests;

pub use cost::{cost, pareto_front};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::prune::Curves;
use crate::rng::Rng;
use crate::run::ManagerHandle;
use crate::slurm::SlurmSpec;
use crate::spec::config::Hybrid;
use crate::spec::config::{BudgetKind, Config, OpKind};
use crate::spec::space::NasArch;
use crate::store::{
    CandidateStatus, NasCandidateRow, NewRun, Reader, RunId, Status, StoreError, WriteOp,
};

/// The result of a search.
#[derive(Debug, Clone)]
pub struct NasOutcome {
    /// The search's run row (its candidates hang off it).
    pub search: RunId,
    pub subnet: NasArch,
    pub subnet_proxy: f64,
    pub target: NasArch,
    pub target_cost: f64,
    pub target_proxy: f64,
    /// Candidates whose proxy training was skipped because a stored result existed.
    pub reused: usize,
    pub evaluated: usize,
    /// Candidates whose proxy training the pruning rule (`nas.prune`) stopped early, this time.
    pub pruned: usize,
}

impl NasOutcome {
    /// What the search trained: "12 candidates trained (3 of them pruned), 4 reused from earlier".
    pub fn tally(&self) -> String {
        let pruned = match self.pruned {
            0 => String::new(),
            n => format!(" ({n} of them pruned)"),
        };
        format!(
            "{} candidates trained{pruned}, {} reused from earlier",
            self.evaluated, self.reused
        )
    }
}

/// An evaluated candidate.
#[derive(Debug, Clone)]
struct Scored {
    arch: NasArch,
    cost: f64,
    proxy: f64,
    /// Pruned: `proxy` is its last before the stop, and it is never the stage's choice.
    pruned: bool,
}

/// A candidate's proxy score (0 for a failed training), and whether the pruning rule cut its
/// training short.
#[derive(Debug, Clone, Copy, Default)]
struct Proxy {
    accuracy: f64,
    pruned: bool,
}

/// The config of a candidate's proxy training.
fn proxy_config(cfg: &Config, arch: &NasArch, stage: i64, subnet: Option<&NasArch>) -> Config {
    let n = &cfg.nas;
    let mut c = cfg.clone();
    c.model.arch = Some(arch.clone());
    c.data.train_subset = n.proxy_train;
    // Ranked on validation images held out of the training file; the test set is never touched.
    c.data.val_images = crate::spec::config::ValImages::Count(n.proxy_val);
    c.eval.test = false;
    c.train.epochs = n.proxy_epochs;
    c.train.batch_size = n.proxy_batch_size;
    c.train.warmup_epochs = c.train.warmup_epochs.min(0.3 * n.proxy_epochs as f64);
    c.eval.bn_images = c.eval.bn_images.min(n.proxy_train / 2);
    c.train.keep_checkpoints = 1;
    if stage == 1 {
        // The SubNet is multiplicative and trained directly.
        c.ops.kind = OpKind::Mult;
        c.aug.hybrid = Hybrid::None;
    } else {
        if let Some(sub) = subnet {
            let t = target_config(&c, arch, sub);
            c.aug = t.aug;
        }
        c.aug.hybrid = Hybrid::Mult;
    }
    c
}

/// The config that trains the TargetNet `target` inside the SubNet `sub` with the recipe of
/// `cfg` (the search's config): `model.arch` and `aug.arch` set, and the augmentation factors
/// extended where they fall short of the SubNet's size (augmented widths are capped at it).
pub fn target_config(cfg: &Config, target: &NasArch, sub: &NasArch) -> Config {
    let mut c = cfg.clone();
    c.model.arch = Some(target.clone());
    c.aug.arch = Some(sub.clone());
    let (w, e) = augment_factors(target, sub);
    let reach = |factors: &mut Vec<f64>, r: f64| {
        if factors.iter().all(|f| *f < r) {
            factors.push(r);
        }
    };
    reach(&mut c.aug.width, w);
    reach(&mut c.aug.expand, e);
    c
}

/// The SubNet a search's TargetNets sit in: its best evaluated stage-1 candidate (highest proxy
/// accuracy, then lowest cost), as the driver chooses it.
pub fn best_subnet(rows: &[NasCandidateRow]) -> Option<NasArch> {
    rows.iter()
        .filter(|r| r.stage == 1 && r.status == CandidateStatus::Done)
        .filter_map(|r| {
            Some((
                NasArch::from_json(&r.arch).ok()?,
                (r.proxy_accuracy?, r.cost),
            ))
        })
        .max_by(|a, b| rank(a.1, b.1))
        .map(|(a, _)| a)
}

/// Width and expand factors that widen `target` to about `sub` (the largest ratios over stages
/// and blocks): the augmented models of the TargetNet's proxy training reach the SubNet's size.
pub fn augment_factors(target: &NasArch, sub: &NasArch) -> (f64, f64) {
    let mut w: f64 = 1.0;
    let mut e: f64 = 1.0;
    for (t, s) in target.stages.iter().zip(&sub.stages) {
        w = w.max(s.width / t.width);
        for (a, b) in t.expands.iter().zip(&s.expands) {
            e = e.max(*b as f64 / *a as f64);
        }
    }
    ((w * 100.0).round() / 100.0, (e * 100.0).round() / 100.0)
}

/// The error of a search stopped through its flag.
/// The `model` column of a search's own run row (its candidates' proxy runs are ordinary runs).
pub const SEARCH_MODEL: &str = "nas-search";

/// Why a search ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum NasError {
    /// The stop flag was set (the search row is marked stopped; a rerun resumes it).
    #[error("search stopped by user")]
    Stopped,
    /// `nas.parallel` proxies would not fit the GPU they train on (found before anything was
    /// recorded).
    #[error("search refused: {0} (set nas.parallel)")]
    Memory(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the run manager stopped answering: {0}")]
    ManagerGone(String),
    /// The dataset is missing or damaged (found before the search was recorded).
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("proxy training refused: {0}")]
    ProxyRefused(String),
    #[error("proxy run {0} was stopped; rerun the search to resume it")]
    ProxyStopped(RunId),
    /// Proxies dispatched to Slurm did not all finish.
    #[error("{0}")]
    Slurm(String),
    /// A stage produced no candidate at all.
    #[error("{0}")]
    Empty(&'static str),
    #[error(
        "model.task = \"segmentation\": the NAS scores candidates by a classifier's proxy top-1 \
         and prices a classifier's layers; search the backbone on the classification data set \
         (e.g. fashion-mnist), then train it with the segmentation head (model.arch)"
    )]
    Segmentation,
    /// The thread running the search panicked (reported by whoever joined it).
    #[error("the search thread panicked")]
    Panicked,
}

struct Search<'a> {
    cfg: &'a Config,
    db: &'a Path,
    manager: &'a ManagerHandle,
    /// Where proxies train when not on `manager`: one Slurm array per generation.
    slurm: Option<&'a SlurmSpec>,
    /// Set by whoever runs the search to stop it (proxy runs in flight stop; stored ones stay).
    stop: &'a AtomicBool,
    search: RunId,
    stored: HashMap<(i64, String), NasCandidateRow>,
    report: &'a mut dyn FnMut(String),
    shape: (i64, i64, i64),
    reused: usize,
    evaluated: usize,
    /// Proxy runs started (names them).
    launched: usize,
    next_request: u64,
    /// Under `nas.prune`: each stage's proxy validation curves (stored candidates' and those
    /// trained here), the pruning rule's reference.
    curves: HashMap<i64, Curves>,
    pruned: usize,
}

/// One generation's candidates (architecture, cost) at a stage, inside `subnet` in stage 2.
struct Batch<'b> {
    stage: i64,
    generation: i64,
    batch: &'b [(NasArch, f64)],
    subnet: Option<&'b NasArch>,
}

impl Search<'_> {
    /// The stored proxy score of `arch` at `stage`, if it was settled before (evaluated or
    /// pruned).
    fn stored_proxy(&self, stage: i64, arch: &NasArch) -> Option<Proxy> {
        let row = self.stored.get(&(stage, arch.to_json()))?;
        let pruned = match row.status {
            CandidateStatus::Done => false,
            CandidateStatus::Pruned => true,
            _ => return None,
        };
        Some(Proxy {
            accuracy: row.proxy_accuracy?,
            pruned,
        })
    }

    /// Torch threads of one proxy training: the `train.threads` budget (0: the cores) split
    /// between the candidates trained at once.
    fn threads_per_candidate(&self) -> usize {
        let budget = match self.cfg.train.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        (budget / self.cfg.nas.parallel.max(1)).max(1)
    }

    /// The stored proxy scores of `batch` (0 where none), and the indices still to train.
    fn reuse_stored(
        &mut self,
        stage: i64,
        generation: i64,
        batch: &[(NasArch, f64)],
    ) -> (Vec<Proxy>, std::collections::VecDeque<usize>) {
        let mut out = vec![Proxy::default(); batch.len()];
        let mut todo = std::collections::VecDeque::new();
        for (i, (arch, cost)) in batch.iter().enumerate() {
            match self.stored_proxy(stage, arch) {
                Some(proxy) => {
                    self.reused += 1;
                    out[i] = proxy;
                    (self.report)(format!(
                        "stage {stage} gen {generation}: cost {cost:.4}, proxy top-1 {:.2} % (stored{})",
                        proxy.accuracy * 100.0,
                        if proxy.pruned { ", pruned" } else { "" }
                    ));
                }
                None => todo.push_back(i),
            }
        }
        (out, todo)
    }

    /// Proxy accuracies of `batch` (stored ones reused; the rest trained through the run
    /// manager, `nas.parallel` at a time), in the batch's order.
    fn evaluate_all(
        &mut self,
        stage: i64,
        generation: i64,
        batch: &[(NasArch, f64)],
        subnet: Option<&NasArch>,
    ) -> Result<Vec<Proxy>, NasError> {
        let (mut out, todo) = self.reuse_stored(stage, generation, batch);
        let at = Batch {
            stage,
            generation,
            batch,
            subnet,
        };
        match self.slurm {
            Some(slurm) => self.evaluate_on_slurm(slurm, &at, &Vec::from(todo), &mut out)?,
            None => self.evaluate_locally(&at, todo, &mut out)?,
        }
        Ok(out)
    }

    /// Record candidate `row`'s proxy `accuracy` (none: its training failed; `pruned`: its
    /// last before the pruning rule stopped it), keep it for the rest of the search, and say so;
    /// its score (0 for a failed one).
    fn settle(
        &mut self,
        mut row: NasCandidateRow,
        accuracy: Option<f64>,
        pruned: bool,
        how: &str,
    ) -> Result<Proxy, NasError> {
        self.evaluated += 1;
        row.proxy_accuracy = accuracy;
        row.status = match (accuracy, pruned) {
            (None, _) => CandidateStatus::Failed,
            (Some(_), false) => CandidateStatus::Done,
            (Some(_), true) => {
                self.pruned += 1;
                CandidateStatus::Pruned
            }
        };
        self.record(row.clone())?;
        (self.report)(format!(
            "stage {} gen {}: cost {:.4}, proxy top-1 {:.2} % (run {}{how}{})",
            row.stage,
            row.generation,
            row.cost,
            accuracy.unwrap_or(0.0) * 100.0,
            row.proxy_run.unwrap_or_default(),
            if row.status == CandidateStatus::Pruned {
                ", pruned"
            } else {
                ""
            }
        ));
        self.stored.insert((row.stage, row.arch.clone()), row);
        Ok(Proxy {
            accuracy: accuracy.unwrap_or(0.0),
            pruned: pruned && accuracy.is_some(),
        })
    }

    fn record(&self, row: NasCandidateRow) -> Result<(), NasError> {
        let w = self.manager.writer();
        w.send(WriteOp::NasCandidate(row))?;
        Ok(w.flush()?)
    }

    /// One stage of evolution: a random feasible population, then children of the better half.
    /// `cost_of` returns the cost and the limit it must respect; `repair` keeps a child valid
    /// for the stage (stage 2: inside the SubNet).
    fn evolve(
        &mut self,
        stage: i64,
        rng: &mut Rng,
        cost_of: &dyn Fn(&NasArch, &mut Rng) -> (f64, f64),
        repair: &dyn Fn(NasArch) -> NasArch,
        subnet: Option<&NasArch>,
    ) -> Result<Vec<Scored>, NasError> {
        let n = self.cfg.nas.clone();
        let mut seen: Vec<NasArch> = Vec::new();
        let mut scored: Vec<Scored> = Vec::new();
        let mut cheapest: Option<(NasArch, f64)> = None;
        for generation in 0..n.generations as i64 {
            let parents: Vec<Scored> = {
                let mut s = scored.clone();
                s.sort_by(|a, b| b.proxy.total_cmp(&a.proxy));
                s.truncate((n.population / 2).max(1));
                s
            };
            let mut batch = Vec::new();
            let mut tries = 0;
            while batch.len() < n.population && tries < 200 * n.population {
                tries += 1;
                let child = if generation == 0 || parents.is_empty() {
                    repair(NasArch::sample(rng))
                } else {
                    let a = &parents[rng.below(parents.len())].arch;
                    let base = if parents.len() > 1 && rng.uniform() < n.crossover {
                        a.crossover(&parents[rng.below(parents.len())].arch, rng)
                    } else {
                        a.clone()
                    };
                    repair(base.mutate(rng, n.mutation))
                };
                if child.validate().is_err() || seen.contains(&child) {
                    continue;
                }
                let (cost, limit) = cost_of(&child, rng);
                if cheapest.as_ref().is_none_or(|c| cost < c.1) {
                    cheapest = Some((child.clone(), cost));
                }
                if cost <= limit {
                    seen.push(child.clone());
                    batch.push((child, cost));
                }
            }
            if batch.is_empty() && scored.is_empty() {
                let (arch, cost) = cheapest
                    .clone()
                    .ok_or(NasError::Empty("no architecture sampled"))?;
                (self.report)(format!(
                    "stage {stage}: nothing in the space meets the budget; the cheapest found costs {cost:.4}"
                ));
                batch.push((arch, cost));
            }
            let proxies = self.evaluate_all(stage, generation, &batch, subnet)?;
            for ((arch, cost), p) in batch.into_iter().zip(proxies) {
                scored.push(Scored {
                    arch,
                    cost,
                    proxy: p.accuracy,
                    pruned: p.pruned,
                });
            }
        }
        Ok(scored)
    }
}

/// The stage's choice: the best candidate whose proxy training ran its course (a pruned one
/// only where nothing else was evaluated).
fn best(scored: &[Scored]) -> Option<&Scored> {
    let any_full = scored.iter().any(|s| !s.pruned);
    scored
        .iter()
        .filter(|s| !(any_full && s.pruned))
        .max_by(|a, b| rank((a.proxy, a.cost), (b.proxy, b.cost)))
}

/// Which of two (proxy accuracy, cost) candidates is better: higher accuracy, then lower cost.
fn rank(a: (f64, f64), b: (f64, f64)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1))
}

/// Run (or resume) the two-stage search of `cfg` (method.md §6) on `manager`'s threads.
/// A rerun with the same config continues the latest search of that config and reuses every
/// candidate it stored (the sampling is seeded, so the same candidates come up again); a
/// finished search is thereby replayed without training anything.
/// Setting `stop` ends it early with [`NasError::Stopped`] (the search row is marked stopped; a
/// rerun resumes it).
pub fn search(
    cfg: &Config,
    db: &Path,
    name: &str,
    manager: &ManagerHandle,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<NasOutcome, NasError> {
    search_on(cfg, db, name, manager, None, stop, report)
}

/// [`search`], with each generation's proxy trainings dispatched to Slurm as one job array
/// (`nas.parallel` at once) when `slurm` is given; `manager` then only records.
pub fn search_on(
    cfg: &Config,
    db: &Path,
    name: &str,
    manager: &ManagerHandle,
    slurm: Option<&SlurmSpec>,
    stop: &AtomicBool,
    report: &mut dyn FnMut(String),
) -> Result<NasOutcome, NasError> {
    if cfg.model.task == crate::spec::config::Task::Segmentation {
        return Err(NasError::Segmentation);
    }
    crate::data::check_available(&cfg.data)?;
    if slurm.is_none() {
        // On a GPU: `nas.parallel` proxies of the space's largest architecture fit, or nothing starts.
        let parallel = cfg.nas.parallel.max(1);
        let largest = proxy_config(cfg, &NasArch::largest(), 2, None);
        if let Some(why) = crate::train::memory::cuda_refusal(&vec![largest; parallel], parallel) {
            return Err(NasError::Memory(why));
        }
    }
    let writer = manager.writer();
    writer.flush()?;
    let toml = cfg.to_toml();
    let reader = Reader::open(db)?;
    let same_search = |text: &str| {
        Config::from_toml_str(text, "stored search", &[])
            .is_ok_and(|stored| search_identity(&stored) == search_identity(cfg))
    };
    let previous = reader
        .runs()?
        .into_iter()
        .filter(|r| r.model == SEARCH_MODEL)
        .filter(|r| reader.config_toml(r.id).is_ok_and(|t| same_search(&t)))
        .map(|r| r.id)
        .max();
    let search = match previous {
        Some(id) => {
            writer.send_or_log(WriteOp::Claim(id));
            report(format!("resuming NAS search {id}"));
            id
        }
        None => writer.create_run(NewRun {
            name: name.to_owned(),
            config_toml: toml,
            dataset: cfg.data.dataset.as_str().into(),
            model: SEARCH_MODEL.into(),
            operator: cfg.ops.kind.as_str().into(),
            seed: cfg.nas.seed,
            tags: "nas".into(),
            provenance: crate::host::provenance_json(),
        })?,
    };
    writer.status(search, Status::Running, None);
    let stored = reader
        .nas_candidates(search)?
        .into_iter()
        .map(|r| ((r.stage, r.arch.clone()), r))
        .collect();
    let mut s = Search {
        cfg,
        db,
        manager,
        slurm,
        stop,
        search,
        stored,
        report,
        shape: cfg.data.input_shape(),
        reused: 0,
        evaluated: 0,
        launched: 0,
        next_request: 1 << 40,
        curves: HashMap::new(),
        pruned: 0,
    };
    if cfg.nas.prune_rule().is_some() {
        s.curves = stored_curves(&reader, &s.stored)?;
    }
    let result = run_stages(&mut s);
    match &result {
        Ok(o) => {
            writer.log(
                search,
                log::Level::Info,
                format!(
                    "best TargetNet {} (cost {:.4}, proxy top-1 {:.2} %)",
                    o.target.to_json(),
                    o.target_cost,
                    o.target_proxy * 100.0
                ),
            );
            writer.status(search, Status::Finished, None);
        }
        Err(e @ NasError::Stopped) => writer.status(search, Status::Stopped, Some(e.to_string())),
        Err(e) => writer.status(search, Status::Failed, Some(e.to_string())),
    }
    writer.flush()?;
    result
}

/// What makes two search configs the same search: everything but how it is executed (thread
/// counts, candidates at once). Stored configs are resolved first, so keys added in later
/// versions take their defaults and an old search still resumes.
fn search_identity(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    c.train.threads = 0;
    c.nas.parallel = 1;
    c
}

fn run_stages(s: &mut Search<'_>) -> Result<NasOutcome, NasError> {
    let cfg = s.cfg;
    let n = &cfg.nas;
    let shape = s.shape;
    let mut rng = Rng::new(n.seed);
    let multiples = n.multiples.clone();
    let stage1_cost = |a: &NasArch, rng: &mut Rng| {
        let m = multiples[rng.below(multiples.len())];
        (
            cost(a, OpKind::Mult, cfg, n.budget_kind, shape),
            m * n.budget,
        )
    };
    (s.report)(format!(
        "stage 1: multiplicative SubNets under m × {} {}",
        n.budget,
        unit(n.budget_kind)
    ));
    let stage1 = s.evolve(1, &mut rng, &stage1_cost, &|a| a, None)?;
    let sub = best(&stage1)
        .ok_or(NasError::Empty("stage 1 evaluated nothing"))?
        .clone();
    (s.report)(format!(
        "stage 1 best SubNet: proxy top-1 {:.2} %, Mult cost {:.4} {}",
        sub.proxy * 100.0,
        sub.cost,
        unit(n.budget_kind)
    ));
    let op = cfg.ops.kind;
    let stage2_cost = |a: &NasArch, _: &mut Rng| (cost(a, op, cfg, n.budget_kind, shape), n.budget);
    let subnet = sub.arch.clone();
    let repair = |a: NasArch| a.clamp_into(&subnet);
    (s.report)(format!(
        "stage 2: {} TargetNets inside the SubNet under {} {}",
        op.as_str(),
        n.budget,
        unit(n.budget_kind)
    ));
    let stage2 = s.evolve(2, &mut rng, &stage2_cost, &repair, Some(&sub.arch))?;
    let target = best(&stage2)
        .ok_or(NasError::Empty("stage 2 evaluated nothing"))?
        .clone();
    Ok(NasOutcome {
        search: s.search,
        subnet: sub.arch,
        subnet_proxy: sub.proxy,
        target: target.arch,
        target_cost: target.cost,
        target_proxy: target.proxy,
        reused: s.reused,
        evaluated: s.evaluated,
        pruned: s.pruned,
    })
}

/// Each stage's proxy validation curves of the settled candidates in `stored`, the pruning
/// rule's reference when a search resumes.
fn stored_curves(
    reader: &Reader,
    stored: &HashMap<(i64, String), NasCandidateRow>,
) -> Result<HashMap<i64, Curves>, NasError> {
    let mut out: HashMap<i64, Curves> = HashMap::new();
    for row in stored.values() {
        let settled = matches!(row.status, CandidateStatus::Done | CandidateStatus::Pruned);
        if let (true, Some(run)) = (settled, row.proxy_run) {
            let curves = out
                .entry(row.stage)
                .or_insert_with(|| Curves::new("candidates"));
            for m in reader.metric_series(run, crate::store::keys::VAL_TOP1)? {
                curves.record(run, m.epoch, m.value);
            }
        }
    }
    Ok(out)
}

pub fn unit(kind: BudgetKind) -> &'static str {
    match kind {
        BudgetKind::Energy => "mJ",
        BudgetKind::Latency => "ms",
    }
}
