//! The runs table's filter language. Terms are separated by spaces and must all hold:
//!
//! * a word matches name, tags, status, dataset, model, operator, hybrid mode, notes or `#id`;
//! * `key:value` — `tag:nas-proxy` (one of the tags), `status:running`, `op:add`, `model:micro`,
//!   `data:fashion`, `name:seed`, `is:archived` / `is:active` / `is:not-learning`, or any config key
//!   (`ops.kind:add`, `aug.hybrid:mult`);
//! * `key>number` (also `>=`, `<`, `<=`, `=`, `!=`) — a metric's last value (`val/top1>60`,
//!   `sys/rss_mb<500`), a config key (`train.lr<0.1`), or `id`, `seed`, `epochs`, `best`,
//!   `last`, `test`, `energy` (mJ), `duration` (seconds). Accuracies (`best`, `last`, `test`
//!   and metrics such as `val/top1`) are in percent, as every table shows them; a value in
//!   (0, 1] for one is hinted at ([`Filter::hints`]), since it is likely meant as a fraction;
//! * `-term` negates any of these. Quotes keep spaces in one term: `name:"seed 0"`.

use crate::chart::format::is_accuracy;
use crate::gui::data::backend::RunRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Word(String),
    Field { key: String, value: String },
    Compare { key: String, cmp: Cmp, value: f64 },
}

/// A parsed filter: every `(negated, term)` must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub terms: Vec<(bool, Term)>,
}

/// Split at spaces outside double quotes; quotes are dropped.
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Filter {
    /// Parse `s`; an error names the term that is not understood.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for w in words(s) {
            let (neg, body) = match w.strip_prefix('-') {
                Some(rest) if !rest.is_empty() => (true, rest.to_owned()),
                _ => (false, w.clone()),
            };
            terms.push((neg, parse_term(&body)?));
        }
        Ok(Self { terms })
    }

    /// The metric keys (with a `/`) the filter compares: the table must load them.
    pub fn metric_keys(&self) -> Vec<String> {
        self.terms
            .iter()
            .filter_map(|(_, t)| match t {
                Term::Compare { key, .. } | Term::Field { key, .. } if key.contains('/') => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn matches(&self, row: &RunRow) -> bool {
        self.terms.iter().all(|(neg, t)| term_holds(t, row) != *neg)
    }

    /// What the filter probably did not mean: an accuracy compared with a fraction.
    pub fn hints(&self) -> Vec<String> {
        self.terms
            .iter()
            .filter_map(|(_, t)| match t {
                Term::Compare { key, value, .. }
                    if in_percent(key) && *value > 0.0 && *value <= 1.0 =>
                {
                    Some(format!(
                        "{key} is in percent here, as the table shows it: {value} means {value} %, \
                         not {:.0} %",
                        value * 100.0
                    ))
                }
                _ => None,
            })
            .collect()
    }
}

/// Whether `key`'s values are accuracies, compared in percent (as shown).
fn in_percent(key: &str) -> bool {
    matches!(key, "best" | "last" | "test") || (key.contains('/') && is_accuracy(key))
}

fn parse_term(body: &str) -> Result<Term, String> {
    const OPS: [(&str, Cmp); 6] = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        ("!=", Cmp::Ne),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ];
    // The first operator character decides (`a>=b`: `>=` at the position of `>`).
    let first = body.find(['>', '<', '=', '!', ':']);
    if let Some(i) = first {
        let (key, rest) = body.split_at(i);
        if key.is_empty() {
            return Err(format!(
                "`{body}`: a key is missing before `{}`",
                &rest[..1]
            ));
        }
        if let Some(value) = rest.strip_prefix(':') {
            return Ok(Term::Field {
                key: key.to_lowercase(),
                value: value.to_lowercase(),
            });
        }
        for (op, cmp) in OPS {
            if let Some(v) = rest.strip_prefix(op) {
                let value: f64 = v.trim().parse().map_err(|_| {
                    format!("`{body}`: `{op}` compares with a number, `{v}` is not one")
                })?;
                return Ok(Term::Compare {
                    key: key.to_lowercase(),
                    cmp,
                    value,
                });
            }
        }
        return Err(format!("`{body}`: `{}` is not an operator", &rest[..1]));
    }
    Ok(Term::Word(body.to_lowercase()))
}

/// A config value as the filter compares it: TOML text without its quotes, lower case.
fn config_text(v: &str) -> String {
    v.trim_matches('"').to_lowercase()
}

/// A number for `key` of `row`, if it has one, in the unit the table shows it (accuracies in
/// percent).
pub fn number(row: &RunRow, key: &str) -> Option<f64> {
    let scale = if in_percent(key) { 100.0 } else { 1.0 };
    stored(row, key).map(|v| v * scale)
}

/// `key`'s value of `row` as recorded (accuracies as fractions).
fn stored(row: &RunRow, key: &str) -> Option<f64> {
    let s = &row.summary;
    match key {
        "id" => Some(s.id as f64),
        "seed" => Some(s.seed as f64),
        "epochs" => s.epochs_done.map(|e| e as f64),
        "best" => s.best_val_top1,
        "last" => s.last_val_top1,
        "test" => s.test_top1,
        "energy" => s.energy_mj,
        "duration" => s.duration_secs(),
        k if k.contains('/') => row.metrics.get(k).map(|m| m.last),
        k => row.config.get(k).and_then(|v| config_text(v).parse().ok()),
    }
}

fn term_holds(t: &Term, row: &RunRow) -> bool {
    let s = &row.summary;
    let has = |hay: &str, needle: &str| hay.to_lowercase().contains(needle);
    match t {
        Term::Word(w) => {
            let hay = format!(
                "#{} {} {} {} {} {} {} {} {}",
                s.id, s.name, s.tags, s.status, s.dataset, s.model, s.operator, row.hybrid, s.notes
            );
            has(&hay, w)
        }
        Term::Field { key, value } => match key.as_str() {
            "tag" | "tags" => s.tag_list().any(|t| t.eq_ignore_ascii_case(value)),
            "name" => has(&s.name, value),
            "status" => s.status.as_str() == value,
            "op" | "operator" => s.operator.eq_ignore_ascii_case(value),
            "model" => has(&s.model, value),
            "data" | "dataset" => has(&s.dataset, value),
            "hybrid" => row.hybrid.eq_ignore_ascii_case(value),
            "notes" | "note" => has(&s.notes, value),
            "id" => s.id.to_string() == *value,
            "is" => match value.as_str() {
                "archived" => s.archived,
                "active" => s.status.is_active(),
                "not-learning" => row.not_learning().is_some(),
                other => s.status.as_str() == other,
            },
            k if k.contains('/') => {
                number(row, k).is_some_and(|x| value.parse::<f64>().is_ok_and(|v| x == v))
            }
            k => row.config.get(k).is_some_and(|v| config_text(v) == *value),
        },
        Term::Compare { key, cmp, value } => number(row, key).is_some_and(|x| cmp.holds(x, *value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::data::backend::tests::row;
    use shiftadd_core::store::{MetricSummary, Status};

    fn ids(rows: &[RunRow], f: &str) -> Vec<i64> {
        let f = Filter::parse(f).expect("parses");
        rows.iter()
            .filter(|r| f.matches(r))
            .map(|r| r.summary.id)
            .collect()
    }

    #[test]
    fn terms_tags_config_metrics_and_negation() {
        let mut a = row(1, "add-aug seed 0", "study,study3");
        a.config_mut().insert("ops.kind".into(), "\"add\"".into());
        a.config_mut().insert("train.lr".into(), "0.025".into());
        a.metrics.insert(
            "val/top1".into(),
            MetricSummary {
                run: 1,
                last: 0.65,
                max: 0.7,
                min: 0.1,
            },
        );
        let mut b = row(2, "proxy 1", "nas-proxy,nas7");
        b.config_mut().insert("ops.kind".into(), "\"shift\"".into());
        b.config_mut().insert("train.lr".into(), "0.8".into());
        b.summary.status = Status::Running;
        let mut c = row(3, "mult", "");
        c.summary.archived = true;
        c.summary.notes = "Baseline for **everything**".into();
        let rows = vec![a, b, c];
        assert_eq!(ids(&rows, ""), [1, 2, 3]);
        assert_eq!(ids(&rows, "-tag:nas-proxy"), [1, 3]);
        assert_eq!(ids(&rows, "tag:nas-proxy"), [2]);
        assert_eq!(ids(&rows, "tag:nas"), Vec::<i64>::new(), "tags match whole");
        assert_eq!(ids(&rows, "ops.kind:add"), [1]);
        assert_eq!(ids(&rows, "train.lr<0.1"), [1]);
        assert_eq!(ids(&rows, "train.lr>=0.8 -is:archived"), [2]);
        assert_eq!(ids(&rows, "val/top1>60"), [1], "accuracies in percent");
        assert_eq!(ids(&rows, "val/top1>66"), Vec::<i64>::new());
        assert_eq!(ids(&rows, "val/top1=65"), [1]);
        assert_eq!(ids(&rows, "val/top1:65"), [1]);
        assert_eq!(
            ids(&rows, "-val/top1>60"),
            [2, 3],
            "no value: the comparison fails"
        );
        assert_eq!(ids(&rows, "is:archived"), [3]);
        assert_eq!(ids(&rows, "is:active"), [2]);
        assert_eq!(ids(&rows, "status:running"), [2]);
        assert_eq!(ids(&rows, "SEED"), [1], "words ignore case");
        assert_eq!(ids(&rows, "everything"), [3], "notes are searched");
        assert_eq!(ids(&rows, "name:\"seed 0\""), [1]);
        assert_eq!(ids(&rows, "id>1 id!=3"), [2]);
        assert_eq!(ids(&rows, "#2"), [2]);
        assert_eq!(
            Filter::parse("val/top1>0.6 test<0.9")
                .expect("ok")
                .metric_keys(),
            ["val/top1"]
        );
        // A fraction where percent belongs is hinted at; percent, a loss and a count are not.
        let hints = Filter::parse("val/top1>0.6 best>=1 test>90 train/loss<0.5 epochs>0.5")
            .expect("ok")
            .hints();
        assert_eq!(hints.len(), 2, "{hints:?}");
        assert!(hints[0].starts_with("val/top1 is in percent") && hints[0].contains("not 60 %"));
    }

    #[test]
    fn is_not_learning_finds_runs_at_chance() {
        let mut stuck = row(1, "add-aug", "");
        stuck
            .config_mut()
            .insert("train.epochs".into(), "20".into());
        stuck.summary.epochs_done = Some(20);
        stuck.summary.best_val_top1 = Some(0.105);
        let mut fine = stuck.clone();
        fine.summary.id = 2;
        fine.summary.best_val_top1 = Some(0.85);
        let rows = vec![stuck, fine];
        assert_eq!(ids(&rows, "is:not-learning"), [1]);
        assert_eq!(ids(&rows, "-is:not-learning"), [2]);
    }

    #[test]
    fn bad_terms_name_themselves() {
        let e = Filter::parse("ok val/top1>high").expect_err("not a number");
        assert!(
            e.contains("`val/top1>high`") && e.contains("not one"),
            "{e}"
        );
        let e = Filter::parse(":add").expect_err("no key");
        assert!(e.contains("a key is missing"), "{e}");
        let e = Filter::parse("a!b").expect_err("bad op");
        assert!(e.contains("not an operator"), "{e}");
        // A lone dash is a word, not a negation of nothing.
        assert_eq!(
            Filter::parse("-").expect("ok").terms,
            [(false, Term::Word("-".into()))]
        );
    }
}
