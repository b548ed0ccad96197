//! A study's results table, from the database alone: per variant the reported metric of every
//! finished cell, its [`Summary`], and against the baseline the [`Paired`] difference over common
//! seeds; rendered as Markdown, CSV or LaTeX.

use serde::Serialize;

use super::stats::{Paired, Summary};
use crate::spec::study::Study;
use std::collections::HashMap;

use crate::store::{Reader, RunId, Status, StoreError};

/// One variant's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub variant: String,
    /// (seed, value) of every finished cell.
    pub values: Vec<(u64, f64)>,
    /// Cells without a value yet (not run, running, failed).
    pub missing: usize,
    pub summary: Option<Summary>,
    /// Against the baseline (`None` for the baseline itself, or without common seeds).
    pub paired: Option<Paired>,
    /// The best mean of the table (highest; lowest for a loss).
    pub best: bool,
}

/// The table of a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub study: i64,
    pub name: String,
    pub metric: String,
    pub baseline: String,
    pub rows: Vec<Row>,
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
    for v in &study.variants {
        let mut values = Vec::new();
        for &seed in &study.seeds {
            let Some(c) = cells.iter().find(|c| c.variant == v.name && c.seed == seed) else {
                continue;
            };
            if status.get(&c.run) != Some(&Status::Finished) {
                continue;
            }
            if let Some(x) = reader.last_metric(c.run, &study.metric)? {
                values.push((seed, x));
            }
        }
        let xs: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
        rows.push(Row {
            variant: v.name.clone(),
            missing: study.seeds.len() - values.len(),
            summary: Summary::of(&xs),
            values,
            paired: None,
            best: false,
        });
    }
    let base = rows
        .iter()
        .find(|r| r.variant == study.baseline)
        .map(|r| r.values.clone())
        .unwrap_or_default();
    for r in rows.iter_mut().filter(|r| r.variant != study.baseline) {
        let pairs: Vec<(f64, f64)> = r
            .values
            .iter()
            .filter_map(|(s, x)| base.iter().find(|(t, _)| t == s).map(|(_, b)| (*x, *b)))
            .collect();
        r.paired = Paired::of(&pairs);
    }
    let lower_is_better = study.metric.ends_with("loss");
    let score = |r: &Row| {
        r.summary
            .map(|s| if lower_is_better { -s.mean } else { s.mean })
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
    })
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

/// Values of fractions (top-1 etc.) are shown in percent, losses as they are.
fn scale(metric: &str) -> (f64, &'static str) {
    if metric.ends_with("loss") {
        (1.0, "")
    } else {
        (100.0, " %")
    }
}

/// The paired column in words: the difference with its interval, and whether it is significant.
pub fn paired_text(p: Option<&Paired>, k: f64, baseline: bool) -> String {
    match p {
        _ if baseline => "baseline".into(),
        None => "–".into(),
        Some(p) if !p.ci95.is_finite() => format!("{:+.2} (n = {}, no interval)", p.diff * k, p.n),
        Some(p) => {
            let verdict = if p.significant() {
                format!("p = {:.3}", p.p)
            } else {
                format!("not significant, p = {:.3}", p.p)
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

impl Table {
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
            "Study {} ({}): `{}`{unit}, mean ± 95 % CI over seeds; difference vs `{}` paired over common seeds.\n\n",
            self.study, self.name, self.metric, self.baseline
        );
        s.push_str("| variant | n | mean ± 95 % CI | std | min | max | vs baseline |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let name = if r.best {
                format!("**{}**", r.variant)
            } else {
                r.variant.clone()
            };
            let vs = paired_text(r.paired.as_ref(), k, r.variant == self.baseline);
            match r.summary {
                Some(m) => s.push_str(&format!(
                    "| {name} | {}{} | {:.2} ± {} | {:.2} | {:.2} | {:.2} | {vs} |\n",
                    m.n,
                    if r.missing > 0 {
                        format!(" (+{} missing)", r.missing)
                    } else {
                        String::new()
                    },
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
                    "| {name} | 0 ({} missing) | – | – | – | – | {vs} |\n",
                    r.missing
                )),
            }
        }
        s
    }

    fn csv(&self) -> String {
        let mut s = String::from(
            "variant,n,missing,mean,ci95,std,min,max,diff_vs_baseline,diff_ci95,p_value,pairs,significant,best,values\n",
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
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                r.variant,
                m.map_or(0, |m| m.n),
                r.missing,
                f(m.map(|m| m.mean)),
                f(m.map(|m| m.ci95)),
                f(m.map(|m| m.std)),
                f(m.map(|m| m.min)),
                f(m.map(|m| m.max)),
                f(p.map(|p| p.diff)),
                f(p.map(|p| p.ci95)),
                f(p.map(|p| p.p)),
                p.map_or(0, |p| p.n),
                p.is_some_and(|p| p.significant()),
                r.best,
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
            let vs = esc(&paired_text(
                r.paired.as_ref(),
                k,
                r.variant == self.baseline,
            ))
            .replace('±', "$\\pm$");
            s.push_str(&format!(
                "{name} & {} & {cell} & {vs} \\\\\n",
                r.summary.map_or(0, |m| m.n)
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s
    }
}
