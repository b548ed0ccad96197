//! Where a ShiftAddAug step's update of the shared weights comes from: for each parameter, the
//! gradient of the tiny model's loss (MF operators on remapped weights, AdderNet's scaling and the
//! KL term included: what the optimiser gets from it) beside α × the augmented model's, on the
//! same batches and weights. Both are the training step's own halves ([`super::step`]), taken
//! apart. The tiny model's slice of a parameter is where its gradient is non-zero; the augmented
//! gradient is split into that slice and the rest (channels only the augmented model uses).

use std::path::Path;
use std::sync::Arc;

use tch::{Device, Kind, Tensor, nn};

use crate::data::{self, Loader, LoaderSpec};
use crate::model::Net;
use crate::rng::Rng;
use crate::spec::config::{Config, Hybrid};
use crate::store::{Reader, RunId};

use super::TrainError;
use super::context::build_seeded_net;
use super::eval::to_images;
use super::step::{AugHalf, aug_exec, tiny_backward};

/// What to probe: how many training batches (their mean is reported), and whether widths are
/// augmented (the first part of training, `aug.stop_width_frac`) or only expand factors.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub batches: usize,
    pub width_on: bool,
}

/// The two gradients on one parameter, each a mean over the probed batches of its L2 norm.
#[derive(Debug, Clone, PartialEq)]
pub struct GradSource {
    pub name: String,
    /// What the parameter is.
    pub kind: ParamKind,
    /// Elements of the tiny model's slice (where its gradient was non-zero).
    pub tiny_elems: i64,
    pub elems: i64,
    /// ‖g_tiny‖.
    pub tiny: f64,
    /// ‖α g_aug‖ on the tiny model's slice.
    pub aug_shared: f64,
    /// ‖α g_aug‖ on the rest of the parameter.
    pub aug_only: f64,
    /// cos(g_tiny, α g_aug) on the tiny model's slice (0 where either is zero).
    pub cosine: f64,
}

/// The kinds of parameter a probe groups its table by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// The stored weight of an Add layer (AdderNet-scaled in the tiny model).
    AddWeight,
    /// Any other conv or linear weight (Mult or Shift in the tiny model).
    Weight,
    /// BN's γ and β.
    Bn,
    /// A remap's own parameters.
    Remap,
    /// Biases.
    Other,
}

impl ParamKind {
    fn of(name: &str, dims: usize, add: &[String]) -> Self {
        let parts: Vec<&str> = name.split('.').collect();
        if add.iter().any(|a| a == name) {
            Self::AddWeight
        } else if parts.contains(&"remap") {
            Self::Remap
        } else if dims > 1 {
            Self::Weight
        } else if parts.iter().any(|p| p.ends_with("bn")) {
            Self::Bn
        } else {
            Self::Other
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::AddWeight => "Add layers' weights",
            Self::Weight => "other conv / fc weights",
            Self::Bn => "BN γ, β",
            Self::Remap => "remap parameters",
            Self::Other => "biases",
        }
    }

    pub const ALL: [Self; 5] = [
        Self::AddWeight,
        Self::Weight,
        Self::Bn,
        Self::Remap,
        Self::Other,
    ];
}

impl GradSource {
    /// ‖α g_aug‖ / ‖g_tiny‖ on the shared slice (∞ where the tiny model has no gradient).
    pub fn ratio(&self) -> f64 {
        if self.tiny > 0.0 {
            self.aug_shared / self.tiny
        } else {
            f64::INFINITY
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "run {0} trains its tiny model directly (aug.hybrid = \"none\"): it has no augmented gradient to compare"
    )]
    Direct(RunId),
    #[error(
        "run {0} has no checkpoint yet (it never finished an epoch); probe it at initialisation with --init"
    )]
    NoCheckpoint(RunId),
    #[error("run {run}: stored config: {message}")]
    Config { run: RunId, message: String },
    #[error("run {run} keeps no checkpoint of epoch {epoch} (it keeps epochs {kept})")]
    NoEpoch {
        run: RunId,
        epoch: i64,
        kept: String,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Train(#[from] TrainError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// What [`grad_sources`] measured: per parameter, and the two losses (means over the batches).
#[derive(Debug, Clone)]
pub struct Sources {
    pub params: Vec<GradSource>,
    pub tiny_loss: f64,
    pub aug_loss: f64,
}

/// The gradient sources of every trainable parameter of `vs` over the first `spec.batches`
/// training batches of epoch 0 (the run's own data order), in the order of `vs`'s names.
pub fn grad_sources(
    cfg: &Config,
    net: &Net,
    vs: &nn::VarStore,
    train: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    spec: ProbeSpec,
) -> Result<Sources, TrainError> {
    let exec = aug_exec(cfg.aug.hybrid).ok_or(TrainError::Panic(
        "grad_sources: a direct run has no augmented gradient".into(),
    ))?;
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sums = vec![[0.0f64; 4]; params.len()];
    let mut tiny_elems = vec![0i64; params.len()];
    let tiny = net.spec.base_widths();
    let mut rng = Rng::derive(cfg.train.seed, 0xC0FFEE, 0);
    let loader = first_batches(cfg, train, norm, spec.batches);
    let device = vs.device();
    let zero = |params: &mut Vec<(String, Tensor)>| {
        for (_, p) in params.iter_mut() {
            p.zero_grad();
        }
    };
    let grads = |params: &[(String, Tensor)]| -> Vec<Tensor> {
        params
            .iter()
            .map(|(_, p)| {
                let g = p.grad();
                if g.defined() {
                    g.detach().to_kind(Kind::Double).copy()
                } else {
                    p.zeros_like().to_kind(Kind::Double)
                }
            })
            .collect()
    };
    let add: Vec<String> = net.add_weights().into_iter().map(|a| a.name).collect();
    let mut n = 0usize;
    let (mut tiny_loss, mut aug_loss) = (0.0, 0.0);
    let aug = AugHalf {
        net,
        cfg,
        exec,
        width_on: spec.width_on,
    };
    for batch in loader {
        let x = to_images(&batch.images, batch.n, train, device);
        let y = super::eval::to_targets(&batch.labels, batch.n, train, device);
        zero(&mut params);
        tiny_loss += tiny_backward(net, cfg, &tiny, &x, &y)?.double_value(&[]);
        let gt = grads(&params);
        zero(&mut params);
        aug_loss += aug.backward(&mut rng, &x, &y)?.double_value(&[]);
        let ga = grads(&params);
        for (i, (t, a)) in gt.iter().zip(&ga).enumerate() {
            let mask = t.ne(0.0);
            let shared = a * mask.to_kind(Kind::Double);
            let only = a - &shared;
            let (nt, ns) = (t.norm().double_value(&[]), shared.norm().double_value(&[]));
            let dot = (t * &shared).sum(Kind::Double).double_value(&[]);
            let cos = if nt > 0.0 && ns > 0.0 {
                dot / (nt * ns)
            } else {
                0.0
            };
            let s = &mut sums[i];
            s[0] += nt;
            s[1] += ns;
            s[2] += only.norm().double_value(&[]);
            s[3] += cos;
            tiny_elems[i] = tiny_elems[i].max(mask.sum(Kind::Int64).int64_value(&[]));
        }
        n += 1;
    }
    zero(&mut params);
    let n = n.max(1) as f64;
    let params = params
        .iter()
        .zip(sums)
        .zip(tiny_elems)
        .map(|(((name, p), s), te)| GradSource {
            name: name.clone(),
            kind: ParamKind::of(name, p.dim(), &add),
            tiny_elems: te,
            elems: p.numel() as i64,
            tiny: s[0] / n,
            aug_shared: s[1] / n,
            aug_only: s[2] / n,
            cosine: s[3] / n,
        })
        .collect();
    Ok(Sources {
        params,
        tiny_loss: tiny_loss / n,
        aug_loss: aug_loss / n,
    })
}

/// The first `batches` training batches of a run's first epoch, as its training draws them.
pub(super) fn first_batches(
    cfg: &Config,
    train: &Arc<data::Dataset>,
    norm: &[(f32, f32)],
    batches: usize,
) -> Loader {
    Loader::first(
        train.clone(),
        norm,
        LoaderSpec {
            batch_size: cfg.train.batch_size,
            train: true,
            augment: cfg.data.augment,
            seed: cfg.train.seed,
            epoch: 0,
            prefetch: 1,
        },
        batches * cfg.train.batch_size,
    )
}

/// What [`probe_run`] measured, and on what.
#[derive(Debug, Clone)]
pub struct RunProbe {
    pub run: RunId,
    pub name: String,
    /// The checkpoint's (epoch, step), or `None` at initialisation.
    pub at: Option<(i64, i64)>,
    pub alpha: f64,
    pub batch_size: usize,
    pub spec: ProbeSpec,
    pub sources: Sources,
}

/// [`grad_sources`] of a recorded run: at its last checkpoint, or (`init`) at the weights its
/// seed starts from; `sets` override keys of its config (`key=value`, as `--set`). On the CPU;
/// nothing is written.
pub fn probe_run(
    db: &Path,
    run: RunId,
    init: bool,
    sets: &[String],
    spec: ProbeSpec,
) -> Result<RunProbe, ProbeError> {
    let at = if init { Weights::Init } else { Weights::Last };
    let r = load_recorded(db, run, at, sets, |cfg| {
        if cfg.aug.hybrid == Hybrid::None {
            Err(ProbeError::Direct(run))
        } else {
            Ok(())
        }
    })?;
    let sources = grad_sources(&r.cfg, &r.net, &r.vs, &r.splits.train, &r.splits.norm, spec)?;
    Ok(RunProbe {
        run,
        name: r.name,
        at: r.at,
        alpha: r.cfg.aug.alpha,
        batch_size: r.cfg.train.batch_size,
        spec,
        sources,
    })
}

/// Which weights of a recorded run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Those its seed starts from.
    Init,
    /// Its last checkpoint's.
    Last,
    /// The checkpoint at the end of this epoch (1-based), if it is still kept.
    Epoch(i64),
}

/// A recorded run's config, data and model, with the weights asked for, on the CPU.
pub(super) struct Recorded {
    pub name: String,
    pub cfg: Config,
    /// The checkpoint's (epoch, step), or `None` at initialisation.
    pub at: Option<(i64, i64)>,
    pub splits: data::Splits,
    pub vs: nn::VarStore,
    pub file: Option<std::path::PathBuf>,
    pub net: Net,
}

/// Load run `run` of `db` at `at`, its config with `sets` applied and then passed to `check`
/// (before anything is read from disk).
pub(super) fn load_recorded(
    db: &Path,
    run: RunId,
    at: Weights,
    sets: &[String],
    check: impl FnOnce(&Config) -> Result<(), ProbeError>,
) -> Result<Recorded, ProbeError> {
    let reader = Reader::open(db)?;
    let summary = reader.run(run)?;
    let toml = reader.config_toml(run)?;
    let cfg = Config::from_toml_str(&toml, &format!("run {run}"), sets).map_err(|e| {
        ProbeError::Config {
            run,
            message: e.to_string(),
        }
    })?;
    check(&cfg)?;
    let ckpt = match at {
        Weights::Init => None,
        Weights::Last => Some(
            reader
                .last_checkpoint(run)?
                .ok_or(ProbeError::NoCheckpoint(run))?,
        ),
        Weights::Epoch(epoch) => {
            let kept = reader.checkpoints(run)?;
            let found = kept.iter().find(|c| c.epoch == epoch).cloned();
            Some(found.ok_or_else(|| {
                ProbeError::NoEpoch {
                    run,
                    epoch,
                    kept: kept
                        .iter()
                        .map(|c| c.epoch.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?)
        }
    };
    let splits = data::load(&cfg.data).map_err(TrainError::from)?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = build_seeded_net(&cfg, &vs.root(), &splits.train);
    let file = ckpt
        .as_ref()
        .map(|ck| Path::new(&ck.path).with_extension("model.ot"));
    if let Some(file) = &file {
        vs.load(file).map_err(|e| ProbeError::File {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(Recorded {
        name: summary.name,
        cfg,
        at: ckpt.map(|c| (c.epoch, c.step)),
        splits,
        vs,
        file,
        net,
    })
}
