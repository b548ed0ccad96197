//! Study files (`experiments/studies/*.toml`): a base config, variants (named override sets, or a
//! grid of keys × values), seeds, the metric to report and the baseline to compare with. A study
//! is validated whole — every variant × seed resolves to a valid run config — before anything
//! runs, so a bad file costs nothing.
//!
//! ```toml
//! name = "smoke-study"
//! base = "../smoke.toml"      # relative to the study file; or inline sections under [config]
//! seeds = [0, 1]
//! metric = "test/top1"        # what the table reports (runs select on val/* only)
//! baseline = "mult"
//! parallel = 2
//!
//! [config.train]              # applied to the base, before the variants
//! epochs = 2
//!
//! [[variant]]
//! name = "mult"
//! set = { "ops.kind" = "mult" }
//!
//! [grid]                      # or: every combination of these values is a variant
//! "ops.kind" = ["shift", "add"]
//!
//! [prune]                     # optional: stop hopeless cells early (median rule)
//! warmup_epochs = 2           # never before a cell has trained this many epochs
//! min_cells = 3               # other cells that must have reached that epoch
//! margin_points = 10.0        # prune only this many points of val/top1 below their median
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Config, ConfigError, apply_override};

/// The metrics a study may report: the tiny model's final validation and test figures
/// (segmentation studies: mean IoU and pixel accuracy in place of top-1 and top-5).
pub const METRICS: [&str; 10] = [
    "test/top1",
    "test/top5",
    "test/loss",
    "val/top1",
    "val/top5",
    "val/loss",
    "test/miou",
    "test/pixel_acc",
    "val/miou",
    "val/pixel_acc",
];

/// Whether `metric` is one only a segmentation run records (`*/loss` is either's).
fn is_segmentation_metric(metric: &str) -> bool {
    metric.ends_with("/miou") || metric.ends_with("/pixel_acc")
}

/// Why a study file cannot run.
/// The largest study file read (bytes).
pub const MAX_STUDY_BYTES: u64 = 1 << 20;
/// The most cells (variants × seeds) a study may hold.
pub const MAX_CELLS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("cannot read study {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("study {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("study {origin}, variant `{variant}`: {source}")]
    Config {
        origin: String,
        variant: String,
        source: ConfigError,
    },
}

/// One cell family of the table: a name and the overrides (`section.key=value`) that make it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub sets: Vec<String>,
    /// The variant this one's paired difference is taken against (`vs = "..."`; default: the
    /// study's baseline), e.g. Shift + ShiftAddAug against direct Shift. Reporting only: not part
    /// of the study's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs: Option<String>,
}

impl Variant {
    pub fn new(name: impl Into<String>, sets: Vec<String>) -> Self {
        Self {
            name: name.into(),
            sets,
            vs: None,
        }
    }
}

pub use super::config::Prune;

/// A validated study: every variant × seed config resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub name: String,
    /// The base config as TOML (the preset's text with `[config]` applied), before variants.
    pub base_toml: String,
    pub seeds: Vec<u64>,
    pub metric: String,
    pub baseline: String,
    pub parallel: usize,
    pub variants: Vec<Variant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
}

impl Study {
    /// Read, expand and validate `path`; `sets` apply to the base (after `[config]`). A file
    /// over [`MAX_STUDY_BYTES`] is refused before it is parsed (read no further than that, so
    /// `/dev/zero` is refused too).
    pub fn load(path: &Path, sets: &[String]) -> Result<Self, StudyError> {
        use std::io::Read;
        let read_err = |source| StudyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_STUDY_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_STUDY_BYTES {
            return Err(StudyError::Invalid {
                origin: path.display().to_string(),
                message: format!(
                    "the file is over {} KiB; a study file is a few variants and a grid",
                    MAX_STUDY_BYTES / 1024
                ),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| StudyError::Invalid {
            origin: path.display().to_string(),
            message: "the file is not UTF-8 text".into(),
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &path.display().to_string(), dir, sets)
    }

    /// [`Self::load`] from text; `dir` resolves a relative `base`.
    pub fn parse(
        text: &str,
        origin: &str,
        dir: &Path,
        sets: &[String],
    ) -> Result<Self, StudyError> {
        let bad = |message: String| StudyError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let mut t: toml::Table = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        let known = [
            "name", "base", "config", "seeds", "metric", "baseline", "parallel", "variant", "grid",
            "prune",
        ];
        if let Some(k) = t.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown key `{k}` (allowed: {})",
                known.join(", ")
            )));
        }
        let name = match t.remove("name") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
            Some(_) => return Err(bad("`name` must be a non-empty string".into())),
            None => return Err(bad("`name` is missing".into())),
        };
        let base_toml = base_config(&mut t, dir, &bad)?;
        let seeds = parse_seeds(t.remove("seeds"), &bad)?;
        let metric_given = t.contains_key("metric");
        let metric = match t.remove("metric") {
            Some(toml::Value::String(m)) if METRICS.contains(&m.as_str()) => m,
            Some(v) => {
                return Err(bad(format!(
                    "`metric` = {v}: must be one of {}",
                    METRICS.join(", ")
                )));
            }
            None => "test/top1".to_owned(),
        };
        let parallel = match t.remove("parallel") {
            Some(toml::Value::Integer(n)) if (1..=64).contains(&n) => n as usize,
            Some(v) => {
                return Err(bad(format!(
                    "`parallel` = {v}: must be an integer in [1, 64]"
                )));
            }
            None => 2,
        };
        let prune = parse_prune(t.remove("prune"), &bad)?;
        let mut variants = named_variants(t.remove("variant"), &bad)?;
        variants.extend(grid_variants(t.remove("grid"), seeds.len(), &bad)?);
        check_variants(&variants, seeds.len(), &bad)?;
        let baseline = match t.remove("baseline") {
            Some(toml::Value::String(b)) if variants.iter().any(|v| v.name == b) => b,
            Some(v) => {
                return Err(bad(format!(
                    "`baseline` = {v}: not a variant (variants: {})",
                    variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => variants[0].name.clone(),
        };
        let study = Self {
            name,
            base_toml,
            seeds,
            metric,
            baseline,
            parallel,
            variants,
            prune,
        };
        let extra: Vec<String> = sets.to_vec();
        let mut study = study;
        for v in &study.variants {
            for &seed in &study.seeds {
                let cfg =
                    study
                        .config_with(v, seed, &extra)
                        .map_err(|source| StudyError::Config {
                            origin: origin.to_owned(),
                            variant: v.name.clone(),
                            source,
                        })?;
                // A segmentation cell records mIoU and pixel accuracy, a classifier top-1/top-5.
                let seg = cfg.model.task == crate::spec::config::Task::Segmentation;
                let either = study.metric.ends_with("/loss");
                if metric_given && !either && seg != is_segmentation_metric(&study.metric) {
                    return Err(bad(format!(
                        "`metric` = {:?}: variant {} is {} (model.task); its metrics are {}",
                        study.metric,
                        v.name,
                        cfg.model.task.as_str(),
                        if seg {
                            "test/miou, test/pixel_acc, test/loss and their val/ ones"
                        } else {
                            "test/top1, test/top5, test/loss and their val/ ones"
                        }
                    )));
                }
                if !metric_given && seg {
                    study.metric = "test/miou".into();
                }
            }
        }
        Ok(Self {
            base_toml: apply_sets(&study.base_toml, &extra).map_err(|source| {
                StudyError::Config {
                    origin: origin.to_owned(),
                    variant: "(base)".into(),
                    source,
                }
            })?,
            ..study
        })
    }

    /// The run config of one cell.
    pub fn config(&self, variant: &Variant, seed: u64) -> Result<Config, ConfigError> {
        self.config_with(variant, seed, &[])
    }

    fn config_with(
        &self,
        variant: &Variant,
        seed: u64,
        extra: &[String],
    ) -> Result<Config, ConfigError> {
        let mut sets = extra.to_vec();
        sets.extend(variant.sets.iter().cloned());
        sets.push(format!("train.seed={seed}"));
        Config::from_toml_str(&self.base_toml, &format!("study {}", self.name), &sets)
    }

    /// The cells in table order: every variant, every seed.
    pub fn cells(&self) -> impl Iterator<Item = (&Variant, u64)> {
        self.variants
            .iter()
            .flat_map(|v| self.seeds.iter().map(move |&s| (v, s)))
    }

    /// What makes two studies the same study (a rerun resumes it): everything but `parallel`
    /// and the variants' `vs`.
    pub fn identity(&self) -> String {
        let variants: Vec<_> = self
            .variants
            .iter()
            .map(|v| serde_json::json!({"name": v.name, "sets": v.sets}))
            .collect();
        serde_json::json!({
            "name": self.name,
            "base": self.base_toml,
            "seeds": self.seeds,
            "metric": self.metric,
            "baseline": self.baseline,
            "variants": variants,
        })
        .to_string()
    }

    /// Whether `stored`, a study row's identity, names this study (see [`same_study`]).
    pub fn identifies(&self, stored: &str) -> bool {
        same_study(stored, &self.identity())
    }

    /// The variant `v`'s paired difference is taken against (`None`: `v` is the baseline).
    pub fn reference_of<'a>(&'a self, v: &'a Variant) -> Option<&'a str> {
        match &v.vs {
            Some(vs) => Some(vs),
            None if v.name == self.baseline => None,
            None => Some(&self.baseline),
        }
    }
}

/// Whether two study identities name the same study: equal but for the base's `train.threads`,
/// which says how the cells train, not what they train (a cell's run is adopted whatever its
/// thread count), so a rerun with another thread count continues the study and resumes its cells
/// in flight rather than starting a second study beside it.
pub fn same_study(a: &str, b: &str) -> bool {
    a == b || matches!((identity_key(a), identity_key(b)), (Some(x), Some(y)) if x == y)
}

/// An identity with `train.threads` taken out of its base (`None`: not an identity this
/// version wrote).
fn identity_key(identity: &str) -> Option<serde_json::Value> {
    let mut key: serde_json::Value = serde_json::from_str(identity).ok()?;
    let mut base: toml::Table = toml::from_str(key.get("base")?.as_str()?).ok()?;
    if let Some(toml::Value::Table(train)) = base.get_mut("train") {
        train.remove("threads");
    }
    key["base"] = toml::to_string(&base).ok()?.into();
    Some(key)
}

/// `section.key=value` overrides applied to `base`, as TOML again (checked as a config).
fn apply_sets(base: &str, sets: &[String]) -> Result<String, ConfigError> {
    if sets.is_empty() {
        return Ok(base.to_owned());
    }
    Config::from_toml_str(base, "study base", sets)?;
    let mut table: toml::Table = toml::from_str(base).map_err(|e| ConfigError::Parse {
        origin: "study base".into(),
        message: e.message().to_owned(),
    })?;
    for s in sets {
        apply_override(&mut table, s)?;
    }
    Ok(toml::to_string(&table).unwrap_or_default())
}

/// `inline` sections over `base`, key by key.
fn merge(base: &mut toml::Table, inline: toml::Table) {
    for (section, value) in inline {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(i)) => b.extend(i),
            (_, v) => {
                base.insert(section, v);
            }
        }
    }
}

/// `section.key = value` pairs of a table as override strings (values as TOML literals).
fn overrides(
    table: &toml::Table,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<Vec<String>, StudyError> {
    let mut out = Vec::new();
    for (k, v) in table {
        if k.split('.').count() != 2 {
            return Err(bad(format!(
                "`{k}`: override keys are `section.key` (e.g. \"ops.kind\")"
            )));
        }
        out.push(format!("{k}={v}"));
    }
    Ok(out)
}

/// The study's base config as TOML: the file `base` names (relative to `dir`), with the
/// inline `config` table merged over it.
fn base_config(
    t: &mut toml::Table,
    dir: &Path,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<String, StudyError> {
    let base_text = match t.remove("base") {
        Some(toml::Value::String(p)) => {
            let p = dir.join(p);
            std::fs::read_to_string(&p)
                .map_err(|e| bad(format!("`base` = {}: {e}", p.display())))?
        }
        Some(_) => return Err(bad("`base` must be a path (a string)".into())),
        None => String::new(),
    };
    let mut base: toml::Table =
        toml::from_str(&base_text).map_err(|e| bad(format!("`base`: {}", e.message())))?;
    match t.remove("config") {
        Some(toml::Value::Table(inline)) => merge(&mut base, inline),
        Some(_) => return Err(bad("`config` must be a table of config sections".into())),
        None => {}
    }
    toml::to_string(&base).map_err(|e| bad(e.to_string()))
}

/// `[prune]`: the keys of [`Prune`], each optional (its default), none other.
fn parse_prune(
    v: Option<toml::Value>,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<Option<Prune>, StudyError> {
    let table = match v {
        None => return Ok(None),
        Some(toml::Value::Table(t)) => t,
        Some(v) => return Err(bad(format!("`prune` = {v}: must be a table ([prune])"))),
    };
    let mut p = Prune::default();
    for (k, v) in table {
        match (k.as_str(), v) {
            ("warmup_epochs", toml::Value::Integer(n)) if (1..=100_000).contains(&n) => {
                p.warmup_epochs = n;
            }
            ("min_cells", toml::Value::Integer(n)) if (1..=10_000).contains(&n) => {
                p.min_cells = n as usize;
            }
            ("margin_points", v)
                if v.as_float()
                    .or(v.as_integer().map(|i| i as f64))
                    .is_some_and(|m| (0.0..=100.0).contains(&m)) =>
            {
                p.margin_points = v
                    .as_float()
                    .or(v.as_integer().map(|i| i as f64))
                    .unwrap_or(0.0);
            }
            ("warmup_epochs" | "min_cells", v) => {
                return Err(bad(format!(
                    "`prune.{k}` = {v}: must be a positive integer"
                )));
            }
            ("margin_points", v) => {
                return Err(bad(format!(
                    "`prune.margin_points` = {v}: must be a number of points in [0, 100]"
                )));
            }
            (k, _) => {
                return Err(bad(format!(
                    "unknown key `prune.{k}` (allowed: warmup_epochs, min_cells, margin_points)"
                )));
            }
        }
    }
    Ok(Some(p))
}

/// `seeds`: a non-empty list of distinct non-negative integers.
fn parse_seeds(
    value: Option<toml::Value>,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<Vec<u64>, StudyError> {
    let seeds: Vec<u64> = match value {
        Some(toml::Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_integer().filter(|s| *s >= 0).map(|s| s as u64))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`seeds` must be non-negative integers".into()))?,
        Some(_) => return Err(bad("`seeds` must be a non-empty list of integers".into())),
        None => return Err(bad("`seeds` is missing (e.g. seeds = [0, 1, 2])".into())),
    };
    let mut unique = seeds.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != seeds.len() {
        return Err(bad("`seeds` repeats a seed".into()));
    }
    Ok(seeds)
}

/// The variants as a study can run them: some, not too many cells, named once each, every
/// `vs` naming another variant.
fn check_variants(
    variants: &[Variant],
    seeds: usize,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<(), StudyError> {
    let cells = variants.len().saturating_mul(seeds);
    if cells > MAX_CELLS {
        return Err(bad(format!(
            "{} variants × {} seeds is {cells} cells; a study holds at most {MAX_CELLS}",
            variants.len(),
            seeds
        )));
    }
    if variants.is_empty() {
        return Err(bad(
            "no variants: give [[variant]] blocks (name, set) or a [grid]".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = variants.iter().find(|v| !names.insert(v.name.as_str())) {
        return Err(bad(format!("two variants are named `{}`", dup.name)));
    }
    for v in variants {
        match v.vs.as_deref() {
            Some(vs) if vs == v.name => {
                return Err(bad(format!(
                    "variant `{}`: `vs` names the variant itself",
                    v.name
                )));
            }
            Some(vs) if !variants.iter().any(|w| w.name == vs) => {
                return Err(bad(format!(
                    "variant `{}`: `vs` = \"{vs}\" is not a variant",
                    v.name
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn named_variants(
    value: Option<toml::Value>,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<Vec<Variant>, StudyError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let toml::Value::Array(items) = value else {
        return Err(bad("`variant` must be [[variant]] blocks".into()));
    };
    items
        .into_iter()
        .map(|item| {
            let toml::Value::Table(mut t) = item else {
                return Err(bad("a [[variant]] must be a table (name, set)".into()));
            };
            let name = match t.remove("name") {
                Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
                _ => return Err(bad("every [[variant]] needs a `name`".into())),
            };
            let sets = match t.remove("set") {
                Some(toml::Value::Table(s)) => overrides(&s, bad)?,
                None => Vec::new(),
                Some(_) => return Err(bad(format!("variant `{name}`: `set` must be a table"))),
            };
            let vs = match t.remove("vs") {
                Some(toml::Value::String(s)) => Some(s),
                None => None,
                Some(_) => {
                    return Err(bad(format!(
                        "variant `{name}`: `vs` must be a variant's name"
                    )));
                }
            };
            if let Some(k) = t.keys().next() {
                return Err(bad(format!(
                    "variant `{name}`: unknown key `{k}` (allowed: name, set, vs)"
                )));
            }
            Ok(Variant { name, sets, vs })
        })
        .collect()
}

/// Every combination of a `[grid]`'s values, named `key=value,key=value`.
/// Refused, with what it would have held, when its combinations × `seeds` exceed [`MAX_CELLS`]
/// (counted before anything is expanded).
fn grid_variants(
    value: Option<toml::Value>,
    seeds: usize,
    bad: &dyn Fn(String) -> StudyError,
) -> Result<Vec<Variant>, StudyError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let toml::Value::Table(grid) = value else {
        return Err(bad(
            "`grid` must be a table of `\"section.key\" = [values]`".into(),
        ));
    };
    let combinations = grid.values().fold(1usize, |n, v| {
        n.saturating_mul(v.as_array().map_or(1, Vec::len).max(1))
    });
    if combinations.saturating_mul(seeds) > MAX_CELLS {
        return Err(bad(format!(
            "the grid has {combinations} combinations × {seeds} seeds; a study holds at most \
             {MAX_CELLS} cells"
        )));
    }
    let mut out = vec![Variant::new("", Vec::new())];
    for (k, values) in grid {
        let toml::Value::Array(values) = values else {
            return Err(bad(format!("grid `{k}`: must be a list of values")));
        };
        if values.is_empty() {
            return Err(bad(format!("grid `{k}`: the list of values is empty")));
        }
        if k.split('.').count() != 2 {
            return Err(bad(format!("grid `{k}`: keys are `section.key`")));
        }
        let short = k.split('.').nth(1).unwrap_or(&k).to_owned();
        out = out
            .into_iter()
            .flat_map(|v| {
                let (k, short) = (k.clone(), short.clone());
                values.iter().map(move |x| {
                    let shown = x.as_str().map_or_else(|| x.to_string(), str::to_owned);
                    let name = if v.name.is_empty() {
                        format!("{short}={shown}")
                    } else {
                        format!("{},{short}={shown}", v.name)
                    };
                    let mut sets = v.sets.clone();
                    sets.push(format!("{k}={x}"));
                    Variant::new(name, sets)
                })
            })
            .collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Study, StudyError> {
        Study::parse(text, "t.toml", Path::new("."), &[])
    }

    /// A million-cell grid is refused from its list lengths, before anything is expanded; a
    /// file over the size limit (or one without end, `/dev/zero`) before it is parsed.
    #[test]
    fn unbounded_study_files_are_refused_up_front() {
        let values = format!(
            "[{}]",
            (0..10)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let keys = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|k| format!("\"train.{k}\" = {values}\n"))
            .collect::<String>();
        let e = parse(&format!("name = \"g\"\nseeds = [0]\n[grid]\n{keys}"))
            .expect_err("10^6 cells")
            .to_string();
        assert!(
            e.contains("1000000 combinations") && e.contains("at most 10000 cells"),
            "{e}"
        );
        let e = parse(&format!(
            "name = \"g\"\nseeds = [0, 1, 2]\n[grid]\n\"train.lr\" = [{}]\n",
            (0..4000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .expect_err("12,000 cells")
        .to_string();
        assert!(e.contains("4000 combinations × 3 seeds"), "{e}");
        let dir = tempfile::tempdir().expect("tmp");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, format!("name = \"x\"\n# {}\n", "y".repeat(2 << 20))).expect("write");
        for path in [big.as_path(), Path::new("/dev/zero")] {
            let e = Study::load(path, &[]).expect_err("too big").to_string();
            assert!(e.contains("over 1024 KiB"), "{}: {e}", path.display());
        }
    }

    /// A segmentation study reports mIoU unless told otherwise, and a metric its cells do not
    /// record (top-1 of a segmentation cell, mIoU of a classifier) is refused naming the key.
    #[test]
    fn a_studys_metric_fits_its_task() {
        let seg = "[config.model]\ntask = \"segmentation\"\n[config.data]\ndataset = \"fashion-mnist-scenes\"\n";
        let study = |metric: &str, config: &str| {
            parse(&format!(
                "name = \"s\"\nseeds = [0]\n{metric}\n[[variant]]\nname = \"a\"\nset = {{}}\n{config}"
            ))
        };
        assert_eq!(study("", seg).expect("parses").metric, "test/miou");
        assert_eq!(study("", "").expect("parses").metric, "test/top1");
        let loss = study("metric = \"test/loss\"", seg).expect("loss is either's");
        assert_eq!(loss.metric, "test/loss");
        let e = study("metric = \"test/top1\"", seg)
            .expect_err("no top-1 per pixel")
            .to_string();
        assert!(e.contains("`metric`") && e.contains("segmentation"), "{e}");
        let e = study("metric = \"val/miou\"", "")
            .expect_err("no mIoU of a classifier")
            .to_string();
        assert!(
            e.contains("classification") && e.contains("test/top1"),
            "{e}"
        );
    }

    #[test]
    fn every_study_file_shipped_loads_and_every_cell_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/studies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("studies folder") {
            let path = e.expect("entry").path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let study = Study::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            for (v, seed) in study.cells() {
                study
                    .config(v, seed)
                    .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), v.name));
            }
            n += 1;
        }
        assert!(n >= 8, "{n} study files");
    }

    #[test]
    fn a_variant_may_name_its_own_reference() {
        let text = |vs: &str| {
            format!(
                r#"
name = "s"
seeds = [0]
baseline = "mult"
[[variant]]
name = "mult"
set = {{ "ops.kind" = "mult" }}
[[variant]]
name = "shift"
set = {{ "ops.kind" = "shift" }}
[[variant]]
name = "shift-aug"
set = {{ "ops.kind" = "shift", "aug.hybrid" = "mult" }}
{vs}
"#
            )
        };
        let plain = parse(&text("")).expect("valid");
        let paired = parse(&text("vs = \"shift\"")).expect("valid");
        assert_eq!(paired.variants[2].vs.as_deref(), Some("shift"));
        assert_eq!(paired.reference_of(&paired.variants[2]), Some("shift"));
        assert_eq!(paired.reference_of(&paired.variants[1]), Some("mult"));
        assert_eq!(paired.reference_of(&paired.variants[0]), None);
        assert_eq!(
            plain.identity(),
            paired.identity(),
            "reporting only: the same study"
        );
        for (vs, says) in [
            ("vs = \"shift-aug\"", "names the variant itself"),
            ("vs = \"div\"", "`vs` = \"div\" is not a variant"),
            ("vs = 3", "`vs` must be a variant's name"),
        ] {
            let err = parse(&text(vs)).expect_err("refused").to_string();
            assert!(err.contains(says), "{vs}: {err}");
        }
    }

    #[test]
    fn named_variants_and_a_grid_expand_to_cells() {
        let s = parse(
            r#"
name = "s"
seeds = [0, 1]
baseline = "mult"
[config.train]
epochs = 1
[[variant]]
name = "mult"
set = { "ops.kind" = "mult" }
[grid]
"ops.kind" = ["shift", "add"]
"aug.hybrid" = ["none", "mult"]
"#,
        )
        .expect("valid");
        let names: Vec<&str> = s.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "mult");
        assert!(names.contains(&"hybrid=mult,kind=add") || names.contains(&"kind=add,hybrid=mult"));
        assert_eq!(s.cells().count(), 10);
        let v = &s.variants[0];
        let c = s.config(v, 1).expect("config");
        assert_eq!((c.train.seed, c.train.epochs), (1, 1));
        assert_eq!(s.metric, "test/top1");
        assert_eq!(s.parallel, 2);
        let faster = Study {
            parallel: 4,
            ..s.clone()
        };
        assert_eq!(
            s.identity(),
            faster.identity(),
            "parallel is not part of a study"
        );
        let other = Study {
            seeds: vec![0],
            ..s.clone()
        };
        assert_ne!(s.identity(), other.identity());
        assert!(!s.identifies(&other.identity()));
    }

    #[test]
    fn a_thread_count_does_not_make_another_study() {
        let text = "name = \"s\"\nseeds = [0, 1]\n[config.train]\nepochs = 1\n\n\
                    [[variant]]\nname = \"mult\"\nset = { \"ops.kind\" = \"mult\" }\n";
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
            Study::parse(text, "t.toml", Path::new("."), &sets).expect("study")
        };
        let (plain, one, two) = (
            load(&[]),
            load(&["train.threads=1"]),
            load(&["train.threads=2"]),
        );
        assert_ne!(
            plain.identity(),
            one.identity(),
            "the base records the override"
        );
        assert!(plain.identifies(&one.identity()) && one.identifies(&two.identity()));
        assert!(two.identifies(&plain.identity()));
        let epochs = load(&["train.epochs=2"]);
        assert!(
            !plain.identifies(&epochs.identity()),
            "what is trained still counts"
        );
        assert!(!plain.identifies("not json"));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("name = \"s\"\nseeds = [0]\n", "no variants"),
            (
                "seeds = [0]\n[[variant]]\nname = \"a\"\n",
                "`name` is missing",
            ),
            (
                "name = \"s\"\n[[variant]]\nname = \"a\"\n",
                "`seeds` is missing",
            ),
            (
                "name = \"s\"\nseeds = [0]\nfoo = 1\n[[variant]]\nname = \"a\"\n",
                "unknown key `foo`",
            ),
            (
                "name = \"s\"\nseeds = [0]\n[[variant]]\nname = \"a\"\nset = { \"train.nope\" = 1 }\n",
                "nope",
            ),
            (
                "name = \"s\"\nseeds = [0]\n[[variant]]\nname = \"a\"\nset = { \"train.epochs\" = 0 }\n",
                "train.epochs",
            ),
            (
                "name = \"s\"\nseeds = [0]\nmetric = \"acc\"\n[[variant]]\nname = \"a\"\n",
                "`metric`",
            ),
            (
                "name = \"s\"\nseeds = [0]\nbaseline = \"b\"\n[[variant]]\nname = \"a\"\n",
                "`baseline`",
            ),
            (
                "name = \"s\"\nseeds = [0, 0]\n[[variant]]\nname = \"a\"\n",
                "repeats",
            ),
            (
                "name = \"s\"\nseeds = [0]\n[grid]\n\"ops.kind\" = []\n",
                "empty",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(want).to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
