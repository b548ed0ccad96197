//! A study's results table, from the database alone: per variant the reported metric of every
//! finished cell, its [`Summary`], and against the baseline the [`Paired`] difference over common
//! seeds; rendered as Markdown, CSV or LaTeX.

use serde::Serialize;

use super::stats::{Paired, Summary};
use crate::spec::config::Config;
use crate::spec::study::Study;
use std::collections::HashMap;

use crate::store::{Reader, RunId, Status, StoreError};

/// One variant's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub variant: String,
    /// (seed, value) of every finished cell.
    pub values: Vec<(u64, f64)>,
    /// Cells without a value (not run, running, failed).
    pub missing: usize,
    /// Of those, cells whose run failed (diverged, or an error): not coming.
    pub failed: usize,
    /// Of those, cells whose run is training now.
    pub running: usize,
    /// Of those, cells stopped by the study's pruning rule: not coming.
    pub pruned: usize,
    pub summary: Option<Summary>,
    /// The variant this row is paired against: the study's baseline, or the variant's own `vs`
    /// (`None` for the baseline itself).
    pub against: Option<String>,
    /// The difference from `against` over common seeds (`None` without common seeds).
    pub paired: Option<Paired>,
    /// The best mean of the table (highest; lowest for a loss or a cost; none for a metric that
    /// describes rather than scores, see [`better`]).
    pub best: bool,
    /// Mean training time of the finished cells, in seconds ([`Reader::train_seconds`]).
    pub train_secs: Option<f64>,
}

impl Row {
    /// The finished cells and what the others are: "3", "2 (+1 missing)", "0 (2 failed)",
    /// "0 (2 training, +1 missing)"; `pending` names the cells still to come ("missing" in a
    /// report, "to go" while it runs).
    pub fn count_text(&self, pending: &str) -> String {
        let n = self.summary.map_or(0, |m| m.n);
        let waiting = self
            .missing
            .saturating_sub(self.failed + self.running + self.pruned);
        let mut parts = Vec::new();
        if self.running > 0 {
            parts.push(format!("{} training", self.running));
        }
        if waiting > 0 {
            parts.push(format!("+{waiting} {pending}"));
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.pruned > 0 {
            parts.push(format!("{} pruned", self.pruned));
        }
        if parts.is_empty() {
            n.to_string()
        } else {
            format!("{n} ({})", parts.join(", "))
        }
    }
}

/// The table of a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub study: i64,
    pub name: String,
    pub metric: String,
    pub baseline: String,
    pub rows: Vec<Row>,
    /// What is left to train.
    pub left: Left,
}

/// One cell as [`Left::estimate`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellPace {
    pub variant: String,
    /// Epochs its config trains.
    pub epochs: usize,
    /// Epochs it has trained, and how long that took ([`Reader::train_seconds`]).
    pub done: usize,
    pub secs: f64,
    /// Finished or failed: nothing more to come.
    pub settled: bool,
    /// What sets its pace besides its variant's own factors ([`pace_kind`]); `None` where its
    /// config does not parse.
    pub kind: Option<String>,
}

/// The part of a config that sets how long an epoch takes: the model, the operator, the
/// augmentation, the data, the batch and the device. A variant with nothing timed yet is
/// priced at the pace of the cells of its kind (a direct variant at direct training's, an
/// augmented one at augmented training's), which differ by 2–3× where both train.
pub fn pace_kind(c: &Config) -> String {
    let model = if c.model.arch.is_some() {
        "arch"
    } else {
        c.model.name.as_str()
    };
    format!(
        "{model} {} hybrid={} {} subset={} batch={} {:?}",
        c.ops.kind.as_str(),
        c.aug.hybrid.as_str(),
        c.data.dataset.as_str(),
        c.data.train_subset,
        c.train.batch_size,
        c.train.device,
    )
}

/// What is left of a study's training: the cells still to come (running, stopped or not
/// started), their epochs, and an estimate of the training time they need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Left {
    pub cells: usize,
    pub epochs: usize,
    /// Training seconds of those epochs summed, each at the pace (seconds per epoch) of its
    /// variant's finished cells, else of the cell itself so far, else of the finished cells of
    /// its kind ([`pace_kind`]), else of every finished cell of the study; `None` while no epoch
    /// has been timed at all. Evaluation is not counted.
    pub secs: Option<f64>,
    /// Of `epochs`, those priced at the pace of other variants of their kind (their own has
    /// nothing timed yet).
    pub like_epochs: usize,
    /// Of `epochs`, those priced at the study-wide pace (nothing of their variant or kind timed
    /// yet): the estimate is rough where this is large.
    pub rough_epochs: usize,
    /// Cells the study trains at once.
    pub parallel: usize,
    /// The longest single cell's share of `secs`: however many run at once, the wall time is at
    /// least this.
    pub longest: f64,
}

impl Left {
    pub fn estimate(cells: &[CellPace], parallel: usize) -> Self {
        let pace = |of: &dyn Fn(&CellPace) -> bool| {
            let (secs, epochs) = cells
                .iter()
                .filter(|c| c.done > 0 && of(c))
                .fold((0.0, 0), |(s, e), c| (s + c.secs, e + c.done));
            (epochs > 0).then(|| secs / epochs as f64)
        };
        let study = pace(&|c| c.settled);
        let mut left = Self {
            parallel: parallel.max(1),
            secs: Some(0.0),
            ..Self::default()
        };
        for c in cells.iter().filter(|c| !c.settled) {
            let epochs = c.epochs.saturating_sub(c.done);
            left.cells += 1;
            left.epochs += epochs;
            let own = (c.done > 0).then(|| c.secs / c.done as f64);
            let like = || {
                let kind = c.kind.as_ref()?;
                pace(&|d| d.settled && d.kind.as_ref() == Some(kind))
            };
            let rate = if let Some(r) = pace(&|d| d.settled && d.variant == c.variant).or(own) {
                Some(r)
            } else if let Some(r) = like() {
                left.like_epochs += epochs;
                Some(r)
            } else {
                left.rough_epochs += epochs;
                study
            };
            left.secs = match (left.secs, rate) {
                (Some(s), Some(r)) => {
                    left.longest = left.longest.max(r * epochs as f64);
                    Some(s + r * epochs as f64)
                }
                _ => None,
            };
        }
        left
    }

    /// Cells trained at once while any is left: no more than there are.
    pub fn at_once(&self) -> usize {
        self.parallel.min(self.cells).max(1)
    }

    /// The wall time the training left takes, `at_once` cells at a time: the seconds shared
    /// between them, or the longest cell where that is longer (one long cell left of a study
    /// running two at a time takes its own time, not half of it).
    pub fn wall_secs(&self) -> Option<f64> {
        self.secs
            .map(|s| (s / self.at_once() as f64).max(self.longest))
    }

    /// "23 cells to go (410 epochs): ≈ 8.4 h of training, 2 at a time", or `None` when nothing
    /// is left.
    pub fn head(&self) -> Option<String> {
        if self.cells == 0 {
            return None;
        }
        let cells = format!(
            "{} cell{} to go ({} epochs)",
            self.cells,
            if self.cells == 1 { "" } else { "s" },
            self.epochs
        );
        let Some(wall) = self.wall_secs() else {
            return Some(format!("{cells}: no epoch timed yet to estimate from"));
        };
        let at_once = match self.at_once() {
            1 => String::new(),
            k => format!(", {k} at a time"),
        };
        Some(format!(
            "{cells}: ≈ {} of training{at_once}",
            hours_text(wall)
        ))
    }

    /// How the estimate was made, and how rough it is.
    pub fn basis(&self) -> String {
        let mut text = String::from("at the pace of the cells timed so far");
        if self.like_epochs > 0 {
            text += &format!(
                "; {} of the epochs at the pace of other variants like theirs (same model, operator, augmentation and data)",
                self.like_epochs
            );
        }
        if self.rough_epochs > 0 {
            text += &format!(
                "; {} of the epochs at the study's mean pace (nothing of their kind timed), so rough",
                self.rough_epochs
            );
        }
        text
    }

    /// [`Self::head`] with [`Self::basis`].
    pub fn text(&self) -> Option<String> {
        let head = self.head()?;
        Some(if self.secs.is_some() {
            format!("{head}, {}", self.basis())
        } else {
            head
        })
    }
}

/// A duration in the unit a reader plans with: "52 min", "8.4 h".
fn hours_text(secs: f64) -> String {
    if secs < 3600.0 {
        format!("{:.0} min", (secs / 60.0).max(1.0))
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// The table of study `id` (whose spec is `study`), from its runs' recorded metrics.
pub fn table(study: &Study, id: i64, reader: &Reader) -> Result<Table, StoreError> {
    let cells = reader.study_runs(id)?;
    // One query for every run's status (`Reader::run` lists all runs each time).
    let status: HashMap<RunId, Status> = reader
        .runs()?
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect();
    let mut rows = Vec::new();
    let mut paces = Vec::new();
    for v in &study.variants {
        let mut values = Vec::new();
        let mut secs = Vec::new();
        let (mut failed, mut running, mut pruned) = (0, 0, 0);
        for &seed in &study.seeds {
            let cell = cells.iter().find(|c| c.variant == v.name && c.seed == seed);
            let state = cell.and_then(|c| status.get(&c.run).copied());
            let timed = match cell {
                Some(c) => train_time(reader, c.run)?,
                None => None,
            };
            let config = study.config(v, seed).ok();
            let epochs = match &timed {
                Some(t) => Some(t.epochs),
                None => config.as_ref().map(|c| c.train.epochs),
            };
            if let Some(epochs) = epochs {
                paces.push(CellPace {
                    variant: v.name.clone(),
                    epochs,
                    done: timed.as_ref().map_or(0, |t| t.done),
                    secs: timed.as_ref().map_or(0.0, |t| t.secs),
                    settled: matches!(
                        state,
                        Some(Status::Finished | Status::Failed | Status::Pruned)
                    ),
                    kind: config.as_ref().map(pace_kind),
                });
            }
            let Some(c) = cell else {
                continue;
            };
            match state {
                Some(Status::Finished) => {}
                Some(Status::Failed) => {
                    failed += 1;
                    continue;
                }
                Some(Status::Running) => {
                    running += 1;
                    continue;
                }
                Some(Status::Pruned) => {
                    pruned += 1;
                    continue;
                }
                _ => continue,
            }
            if let Some(x) = reader.last_metric(c.run, &study.metric)? {
                values.push((seed, x));
                secs.extend(timed.filter(|t| t.done > 0).map(|t| t.secs));
            }
        }
        let xs: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
        rows.push(Row {
            variant: v.name.clone(),
            missing: study.seeds.len() - values.len(),
            failed,
            running,
            pruned,
            summary: Summary::of(&xs),
            values,
            against: study.reference_of(v).map(str::to_owned),
            paired: None,
            best: false,
            train_secs: (!secs.is_empty()).then(|| secs.iter().sum::<f64>() / secs.len() as f64),
        });
    }
    pair(&mut rows);
    let sense = better(&study.metric);
    let score = |r: &Row| {
        let s = r.summary?;
        Some(if sense? == Better::Lower {
            -s.mean
        } else {
            s.mean
        })
    };
    if let Some(best) = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| score(r).map(|s| (i, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
    {
        rows[best].best = true;
    }
    Ok(Table {
        study: id,
        name: study.name.clone(),
        metric: study.metric.clone(),
        baseline: study.baseline.clone(),
        rows,
        left: Left::estimate(&paces, study.parallel),
    })
}

/// How long `run` trained (its own batch size, from its recorded config).
/// A run's training so far: the epochs its config trains, those done and their seconds.
struct TrainTime {
    epochs: usize,
    done: usize,
    secs: f64,
}

fn train_time(reader: &Reader, run: RunId) -> Result<Option<TrainTime>, StoreError> {
    let toml = reader.config_toml(run)?;
    let Ok(cfg) = Config::from_toml_str(&toml, &format!("run {run}"), &[]) else {
        return Ok(None); // a config this version cannot read: no time rather than no table
    };
    let (secs, done) = reader
        .train_seconds(run, cfg.train.batch_size)?
        .unwrap_or((0.0, 0));
    Ok(Some(TrainTime {
        epochs: cfg.train.epochs,
        done,
        secs,
    }))
}

/// A training time as the table shows it: "45.2 min", "52 s".
pub fn duration_text(secs: Option<f64>) -> String {
    match secs {
        None => "–".into(),
        Some(s) if s < 60.0 => format!("{s:.0} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

/// Each row's paired difference from the row it is `against`, over their common seeds.
fn pair(rows: &mut [Row]) {
    let values: HashMap<String, Vec<(u64, f64)>> = rows
        .iter()
        .map(|r| (r.variant.clone(), r.values.clone()))
        .collect();
    for r in rows {
        let Some(base) = r.against.as_ref().and_then(|a| values.get(a)) else {
            continue;
        };
        let pairs: Vec<(f64, f64)> = r
            .values
            .iter()
            .filter_map(|(s, x)| base.iter().find(|(t, _)| t == s).map(|(_, b)| (*x, *b)))
            .collect();
        r.paired = Paired::of(&pairs);
    }
}

/// `s` as one CSV field: quoted when it holds a comma, a quote or a line break (a grid
/// variant's name, `hybrid=mult,kind=add`, does).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The output forms of [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Csv,
    Latex,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "md" | "markdown" => Some(Self::Markdown),
            "csv" => Some(Self::Csv),
            "tex" | "latex" => Some(Self::Latex),
            _ => None,
        }
    }
}

/// Whether `metric` is a fraction shown in percent: a top-1 / top-5 or an accuracy.
pub fn is_accuracy(metric: &str) -> bool {
    let k = metric.rsplit('/').next().unwrap_or(metric);
    k.starts_with("top1") || k.starts_with("top5") || k.contains("accuracy")
}

/// The factor and unit `metric`'s values are shown with: accuracies in percent, the rest (losses,
/// hardware cost, wall time) as they are.
pub fn scale(metric: &str) -> (f64, &'static str) {
    if is_accuracy(metric) {
        (100.0, " %")
    } else {
        (1.0, "")
    }
}

/// The paired column of `row` in words: the difference with its interval and whether it is
/// significant, prefixed with what it is against where that is not the study's `baseline`.
pub fn paired_text(row: &Row, k: f64, baseline: &str) -> String {
    let Some(against) = row.against.as_deref() else {
        return "baseline".into();
    };
    let text = difference_text(row.paired.as_ref(), k);
    if against == baseline {
        text
    } else {
        format!("vs {against}: {text}")
    }
}

fn difference_text(p: Option<&Paired>, k: f64) -> String {
    match p {
        None => "–".into(),
        Some(p) if !p.ci95.is_finite() => format!("{:+.2} (n = {}, no interval)", p.diff * k, p.n),
        Some(p) => {
            // Three decimals, as a p-value is read; below that, a bound rather than "0.000".
            let p_value = if p.p < 0.001 {
                "p < 0.001".to_owned()
            } else {
                format!("p = {:.3}", p.p)
            };
            let verdict = if p.significant() {
                p_value
            } else {
                format!("not significant, {p_value}")
            };
            format!(
                "{:+.2} ± {:.2} ({verdict}, n = {})",
                p.diff * k,
                p.ci95 * k,
                p.n
            )
        }
    }
}

/// A difference from the reference whose 95 % interval excludes zero, read in the metric's sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Better,
    Worse,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// Which way `metric` improves: accuracies up, losses and hardware costs down. `None` for a
/// metric that describes a run rather than scores it (a weight's std, a BN offset, a learning
/// rate, a throughput): its table marks no best and reads no difference as better or worse.
pub fn better(metric: &str) -> Option<Better> {
    if is_accuracy(metric) {
        Some(Better::Higher)
    } else if metric.ends_with("loss") || metric.starts_with("hw/") {
        Some(Better::Lower)
    } else {
        None
    }
}

impl Table {
    /// `row` against its reference: better or worse where the difference is significant.
    pub fn verdict(&self, row: &Row) -> Option<Verdict> {
        let p = row.paired.filter(Paired::significant)?;
        let gain = match better(&self.metric)? {
            Better::Lower => -p.diff,
            Better::Higher => p.diff,
        };
        Some(if gain > 0.0 {
            Verdict::Better
        } else {
            Verdict::Worse
        })
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            Format::Csv => self.csv(),
            Format::Latex => self.latex(),
        }
    }

    fn markdown(&self) -> String {
        let (k, unit) = scale(&self.metric);
        let mut s = format!(
            "Study {} ({}): `{}`{unit}, mean ± 95 % CI over seeds; difference vs `{}` paired over common seeds; \
             training time per cell (mean; evaluation excluded).\n\n",
            self.study, self.name, self.metric, self.baseline
        );
        s.push_str(
            "| variant | n | mean ± 95 % CI | std | min | max | vs baseline | time/cell |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let name = if r.best {
                format!("**{}**", r.variant)
            } else {
                r.variant.clone()
            };
            let vs = paired_text(r, k, &self.baseline);
            let time = duration_text(r.train_secs);
            match r.summary {
                Some(m) => s.push_str(&format!(
                    "| {name} | {} | {:.2} ± {} | {:.2} | {:.2} | {:.2} | {vs} | {time} |\n",
                    r.count_text("missing"),
                    m.mean * k,
                    if m.ci95.is_finite() {
                        format!("{:.2}", m.ci95 * k)
                    } else {
                        "–".into()
                    },
                    m.std * k,
                    m.min * k,
                    m.max * k
                )),
                None => s.push_str(&format!(
                    "| {name} | {} | – | – | – | – | {vs} | {time} |\n",
                    r.count_text("missing")
                )),
            }
        }
        if let Some(seeds) = self.per_seed_text() {
            s.push_str(&format!("\n{seeds}\n"));
        }
        if let Some(left) = self.left.text() {
            s.push_str(&format!("\n{left}.\n"));
        }
        s
    }

    /// Every finished cell's value, a variant at a time in seed order, "–" where a seed has none:
    /// "Per seed (`test/top1` %, seeds 0 / 1 / 2): mult 89.75 / 90.51 / 90.31; add 84.80 / – /
    /// 85.57." `None` while no cell has finished.
    fn per_seed_text(&self) -> Option<String> {
        let mut seeds: Vec<u64> = self
            .rows
            .iter()
            .flat_map(|r| r.values.iter().map(|(seed, _)| *seed))
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.is_empty() {
            return None;
        }
        let (k, unit) = scale(&self.metric);
        let variants: Vec<String> = self
            .rows
            .iter()
            .filter(|r| !r.values.is_empty())
            .map(|r| {
                let values: Vec<String> = seeds
                    .iter()
                    .map(|seed| {
                        r.values
                            .iter()
                            .find(|(s, _)| s == seed)
                            .map_or_else(|| "–".to_owned(), |(_, x)| format!("{:.2}", x * k))
                    })
                    .collect();
                format!("{} {}", r.variant, values.join(" / "))
            })
            .collect();
        let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
        Some(format!(
            "Per seed (`{}`{unit}, seed{} {}): {}.",
            self.metric,
            if seeds.len() == 1 { "" } else { "s" },
            seeds.join(" / "),
            variants.join("; ")
        ))
    }

    fn csv(&self) -> String {
        let mut s = String::from(
            "variant,n,missing,failed,running,pruned,mean,ci95,std,min,max,against,diff,diff_ci95,p_value,pairs,significant,best,train_secs,values\n",
        );
        let f = |x: Option<f64>| {
            x.filter(|v| v.is_finite())
                .map_or_else(String::new, |v| v.to_string())
        };
        for r in &self.rows {
            let m = r.summary;
            let p = r.paired;
            let values: Vec<String> = r.values.iter().map(|(sd, v)| format!("{sd}:{v}")).collect();
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&r.variant),
                m.map_or(0, |m| m.n),
                r.missing,
                r.failed,
                r.running,
                r.pruned,
                f(m.map(|m| m.mean)),
                f(m.map(|m| m.ci95)),
                f(m.map(|m| m.std)),
                f(m.map(|m| m.min)),
                f(m.map(|m| m.max)),
                csv_field(r.against.as_deref().unwrap_or("")),
                f(p.map(|p| p.diff)),
                f(p.map(|p| p.ci95)),
                f(p.map(|p| p.p)),
                p.map_or(0, |p| p.n),
                p.is_some_and(|p| p.significant()),
                r.best,
                f(r.train_secs),
                values.join(" ")
            ));
        }
        s
    }

    fn latex(&self) -> String {
        let (k, _) = scale(&self.metric);
        let esc = |t: &str| {
            t.replace('_', "\\_")
                .replace('%', "\\%")
                .replace('&', "\\&")
                .replace('<', "\\textless{}")
                .replace('>', "\\textgreater{}")
        };
        let mut s = format!(
            "% Study {} ({}): {}, mean $\\pm$ 95\\,\\% CI over seeds\n\\begin{{tabular}}{{lrrl}}\n\\toprule\nvariant & $n$ & {} & vs.\\ {} \\\\\n\\midrule\n",
            self.study,
            esc(&self.name),
            esc(&self.metric),
            esc(&self.metric),
            esc(&self.baseline)
        );
        for r in &self.rows {
            let name = if r.best {
                format!("\\textbf{{{}}}", esc(&r.variant))
            } else {
                esc(&r.variant)
            };
            let cell = r.summary.map_or_else(
                || "--".into(),
                |m| {
                    if m.ci95.is_finite() {
                        format!("{:.2} $\\pm$ {:.2}", m.mean * k, m.ci95 * k)
                    } else {
                        format!("{:.2}", m.mean * k)
                    }
                },
            );
            let vs = esc(&paired_text(r, k, &self.baseline)).replace('±', "$\\pm$");
            s.push_str(&format!(
                "{name} & {} & {cell} & {vs} \\\\\n",
                r.summary.map_or(0, |m| m.n)
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, against: Option<&str>, values: &[(u64, f64)]) -> Row {
        let xs: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
        Row {
            variant: variant.into(),
            values: values.to_vec(),
            missing: 0,
            failed: 0,
            running: 0,
            pruned: 0,
            summary: Summary::of(&xs),
            against: against.map(str::to_owned),
            paired: None,
            best: false,
            train_secs: None,
        }
    }

    #[test]
    fn each_row_is_paired_with_its_own_reference_over_common_seeds() {
        let mut rows = vec![
            row("shift", None, &[(0, 0.80), (1, 0.82), (2, 0.81)]),
            row("shift-aug", None, &[(0, 0.83), (1, 0.84), (2, 0.86)]),
            row("add", Some("shift"), &[(0, 0.70), (1, 0.71), (2, 0.69)]),
            // Seed 2 of `add` is its only common seed with this row.
            row("add-aug", Some("add"), &[(2, 0.75), (5, 0.9)]),
        ];
        rows[1].against = Some("shift".into());
        pair(&mut rows);
        assert!(rows[0].paired.is_none(), "the baseline");
        let aug = rows[1].paired.expect("paired");
        // Differences 0.03, 0.02, 0.05: mean 0.10 / 3.
        assert_eq!(aug.n, 3);
        assert!((aug.diff - 0.1 / 3.0).abs() < 1e-12, "{aug:?}");
        let add = rows[2].paired.expect("paired");
        assert!((add.diff - (-0.11)).abs() < 1e-12, "{add:?}");
        let one = rows[3].paired.expect("one common seed");
        assert_eq!(one.n, 1);
        assert!((one.diff - 0.06).abs() < 1e-12 && !one.ci95.is_finite());
        // The column says what a difference is against when it is not the study's baseline.
        assert_eq!(paired_text(&rows[0], 100.0, "shift"), "baseline");
        assert!(!paired_text(&rows[1], 100.0, "shift").starts_with("vs"));
        let text = paired_text(&rows[3], 100.0, "shift");
        assert!(text.starts_with("vs add: +6.00"), "{text}");
        // A p-value below 0.001 reads as that bound, not as "p = 0.000"; LaTeX sets it as text.
        let mut sure = row("sure", Some("shift"), &[(0, 0.9), (1, 0.9), (2, 0.9)]);
        let paired = |p| Paired {
            n: 3,
            diff: 0.0441,
            ci95: 0.0015,
            p,
        };
        sure.paired = Some(paired(2e-4));
        assert_eq!(
            paired_text(&sure, 100.0, "shift"),
            "+4.41 ± 0.15 (p < 0.001, n = 3)"
        );
        sure.paired = Some(paired(0.0012));
        assert_eq!(
            paired_text(&sure, 100.0, "shift"),
            "+4.41 ± 0.15 (p = 0.001, n = 3)"
        );
        sure.paired = Some(paired(2e-4));
        let table = Table {
            study: 1,
            name: "t".into(),
            metric: "test/top1".into(),
            baseline: "shift".into(),
            rows: vec![rows[0].clone(), sure],
            left: Left::default(),
        };
        let tex = table.render(Format::Latex);
        assert!(tex.contains("(p \\textless{} 0.001, n = 3)"), "{tex}");
        // The n column says what the cells without a value are.
        let mut r = row("x", None, &[(0, 0.5)]);
        assert_eq!(r.count_text("missing"), "1");
        (r.missing, r.failed) = (2, 1);
        assert_eq!(r.count_text("missing"), "1 (+1 missing, 1 failed)");
        let mut none = row("y", None, &[]);
        (none.missing, none.failed) = (2, 2);
        assert_eq!(none.count_text("to go"), "0 (2 failed)");
        let mut live = row("z", None, &[]);
        (live.missing, live.running) = (3, 2);
        assert_eq!(live.count_text("missing"), "0 (2 training, +1 missing)");
    }

    #[test]
    fn the_markdown_report_lists_each_variants_seeds_with_a_dash_where_one_is_missing() {
        let mut table = Table {
            study: 1,
            name: "t".into(),
            metric: "test/top1".into(),
            baseline: "mult".into(),
            rows: vec![
                row("mult", None, &[(0, 0.8975), (1, 0.9051), (2, 0.9031)]),
                row("add", Some("mult"), &[(2, 0.8557), (0, 0.848)]),
                row("shift", Some("mult"), &[]),
            ],
            left: Left::default(),
        };
        let md = table.render(Format::Markdown);
        assert!(
            md.contains(
                "\nPer seed (`test/top1` %, seeds 0 / 1 / 2): mult 89.75 / 90.51 / 90.31; add 84.80 / – / 85.57.\n"
            ),
            "{md}"
        );
        // A metric in its own unit, one seed.
        table.metric = "weights/add_std".into();
        table.rows = vec![row("direct", None, &[(3, 183.19)])];
        let md = table.render(Format::Markdown);
        assert!(
            md.contains("Per seed (`weights/add_std`, seed 3): direct 183.19."),
            "{md}"
        );
        // Nothing finished: no line.
        table.rows = vec![row("direct", None, &[])];
        assert!(!table.render(Format::Markdown).contains("Per seed"));
    }

    #[test]
    fn what_is_left_is_priced_at_its_variants_pace_then_its_own_then_the_studys() {
        let cell = |variant: &str, epochs, done, secs, settled| CellPace {
            variant: variant.into(),
            epochs,
            done,
            secs,
            settled,
            kind: None,
        };
        let cells = [
            // Variant `a` finished at 10 and 30 s an epoch: its pace is 20 s.
            cell("a", 10, 10, 100.0, true),
            cell("a", 10, 10, 300.0, true),
            cell("a", 10, 0, 0.0, false), // 10 epochs × 20 s
            // `b` has nothing finished: its running cell's own pace, 10 s, for its 15 epochs left.
            cell("b", 20, 5, 50.0, false),
            // `c` has nothing timed: the settled cells' pace, (400 + 40) s / 22 epochs = 20 s.
            cell("c", 4, 0, 0.0, false),
            cell("d", 20, 2, 40.0, true), // failed at epoch 2: nothing more to come
        ];
        let left = Left::estimate(&cells, 2);
        assert_eq!((left.cells, left.epochs, left.rough_epochs), (3, 29, 4));
        let secs = left.secs.expect("timed");
        assert!((secs - (200.0 + 150.0 + 80.0)).abs() < 1e-9, "{secs}");
        let text = left.text().expect("cells left");
        assert!(
            text.starts_with("3 cells to go (29 epochs): ≈ 4 min of training, 2 at a time"),
            "{text}"
        );
        assert!(
            text.contains("4 of the epochs at the study's mean pace"),
            "{text}"
        );
        // Hours once it is long; nothing said when nothing is left.
        let long = Left::estimate(
            &[
                cell("a", 10, 10, 3600.0, true),
                cell("a", 20, 0, 0.0, false),
            ],
            1,
        );
        assert_eq!(
            long.text().expect("left"),
            "1 cell to go (20 epochs): ≈ 2.0 h of training, at the pace of the cells timed so far"
        );
        // One cell left of a study that trains two at a time takes its own time, not half.
        let mut two = long;
        two.parallel = 2;
        assert_eq!(two.text(), long.text());
        // Two cells left, one of them long: the long one sets the wall time, not the mean.
        let uneven = Left::estimate(
            &[
                cell("a", 10, 10, 3600.0, true),
                cell("a", 20, 0, 0.0, false), // 7,200 s
                cell("b", 10, 10, 36.0, true),
                cell("b", 10, 0, 0.0, false), // 36 s
            ],
            2,
        );
        assert!((uneven.longest - 7200.0).abs() < 1e-9);
        assert_eq!(uneven.wall_secs(), Some(7200.0));
        assert!(
            uneven
                .text()
                .expect("left")
                .starts_with("2 cells to go (30 epochs): ≈ 2.0 h of training, 2 at a time"),
        );
        let untimed = Left::estimate(&[cell("a", 10, 0, 0.0, false)], 2);
        assert_eq!(untimed.secs, None);
        assert!(
            untimed
                .text()
                .expect("left")
                .ends_with("no epoch timed yet to estimate from")
        );
        assert_eq!(Left::estimate(&cells[..2], 2).text(), None);
    }

    #[test]
    fn a_variant_with_nothing_timed_is_priced_at_the_pace_of_its_kind() {
        let cell = |variant: &str, kind: &str, epochs, done, secs, settled| CellPace {
            variant: variant.into(),
            epochs,
            done,
            secs,
            settled,
            kind: Some(kind.into()),
        };
        let cells = [
            cell("direct", "none", 10, 10, 100.0, true), // 10 s an epoch
            cell("aug", "mult", 10, 10, 400.0, true),    // 40 s an epoch
            // Nothing of its own timed: direct training's pace, not the study's 25 s.
            cell("direct-pointwise", "none", 10, 0, 0.0, false),
            cell("pointwise", "mult", 5, 0, 0.0, false),
            // A kind nothing has timed: the study's mean pace.
            cell("mf", "mf", 2, 0, 0.0, false),
        ];
        let left = Left::estimate(&cells, 1);
        assert_eq!((left.like_epochs, left.rough_epochs), (15, 2));
        let secs = left.secs.expect("timed");
        assert!((secs - (100.0 + 200.0 + 50.0)).abs() < 1e-9, "{secs}");
        let basis = left.basis();
        assert!(
            basis.contains("; 15 of the epochs at the pace of other variants like theirs"),
            "{basis}"
        );
        assert!(
            basis.ends_with(
                "2 of the epochs at the study's mean pace (nothing of their kind timed), so rough"
            ),
            "{basis}"
        );
        // Without kinds (configs that do not parse) it is the study's pace, as before.
        let blind: Vec<CellPace> = cells
            .iter()
            .map(|c| CellPace {
                kind: None,
                ..c.clone()
            })
            .collect();
        let left = Left::estimate(&blind, 1);
        assert_eq!((left.like_epochs, left.rough_epochs), (0, 17));
        assert!((left.secs.expect("timed") - 17.0 * 25.0).abs() < 1e-9);
    }

    #[test]
    fn the_pace_kind_tells_direct_from_augmented_training_and_nothing_else_of_a_variant() {
        let base = Config::from_toml_str("", "test", &[]).expect("defaults");
        let with = |set: &str| Config::from_toml_str("", "test", &[set.to_owned()]).expect("set");
        assert_eq!(pace_kind(&base), pace_kind(&with("train.lr=0.5")));
        assert_eq!(pace_kind(&base), pace_kind(&with("aug.alpha=0.5")));
        assert_eq!(pace_kind(&base), pace_kind(&with("train.epochs=3")));
        let hybrid = if base.aug.hybrid == crate::spec::config::Hybrid::None {
            "aug.hybrid=\"mult\""
        } else {
            "aug.hybrid=\"none\""
        };
        assert_ne!(pace_kind(&base), pace_kind(&with(hybrid)));
        assert_ne!(pace_kind(&base), pace_kind(&with("data.train_subset=100")));
        assert_ne!(pace_kind(&base), pace_kind(&with("train.batch_size=64")));
    }

    #[test]
    fn a_significant_difference_reads_better_or_worse_in_the_metrics_sense() {
        let mut rows = vec![
            row("base", None, &[(0, 0.80), (1, 0.82), (2, 0.81)]),
            row("down", Some("base"), &[(0, 0.70), (1, 0.71), (2, 0.72)]),
            row("up", Some("base"), &[(0, 0.90), (1, 0.93), (2, 0.91)]),
            row("same", Some("base"), &[(0, 0.79), (1, 0.83), (2, 0.82)]),
        ];
        pair(&mut rows);
        let mut table = Table {
            study: 1,
            name: "t".into(),
            metric: "test/top1".into(),
            baseline: "base".into(),
            rows,
            left: Left::default(),
        };
        let verdicts = |t: &Table| t.rows.iter().map(|r| t.verdict(r)).collect::<Vec<_>>();
        use Verdict::{Better, Worse};
        assert_eq!(verdicts(&table), [None, Some(Worse), Some(Better), None]);
        table.metric = "val/loss".into();
        assert_eq!(verdicts(&table), [None, Some(Better), Some(Worse), None]);
        table.metric = "hw/shiftaddnas/energy_mj".into();
        assert_eq!(verdicts(&table), [None, Some(Better), Some(Worse), None]);
        table.metric = "weights/add_std".into();
        assert_eq!(
            verdicts(&table),
            [None; 4],
            "a descriptive metric is neither"
        );
    }
}
