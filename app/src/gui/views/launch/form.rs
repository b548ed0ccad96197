//! The Launch form's model: one field per config key (the keys of `Config::default()`, in the
//! order and with the help text of `experiments/README.md`), edited as text and validated by the
//! same code and messages as `shiftadd train --set section.key=value`.

use std::collections::BTreeMap;

use shiftadd_core::Config;
use shiftadd_core::spec::config::ConfigError;

/// The config reference, compiled in: it supplies order, help and choices.
const REFERENCE: &str = include_str!("../../../../../experiments/README.md");

/// What the reference says about one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyDoc {
    pub allowed: String,
    pub meaning: String,
    /// The allowed values when the reference lists them (`a`, `b`, `c`).
    pub choices: Vec<String>,
}

/// How a field is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Bool,
    /// A TOML string; edited without quotes.
    Text,
    /// Anything else (numbers, lists): edited as a TOML literal.
    Literal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub section: String,
    pub key: String,
    pub kind: FieldKind,
    /// The default, as edited text.
    pub default: String,
    pub text: String,
    pub doc: KeyDoc,
}

impl Field {
    /// `section.key`
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The `--set` argument this field stands for.
    pub fn override_arg(&self) -> String {
        let value = match self.kind {
            FieldKind::Text => toml::Value::String(self.text.clone()).to_string(),
            FieldKind::Bool | FieldKind::Literal => self.text.trim().to_owned(),
        };
        format!("{}={value}", self.path())
    }

    pub fn is_default(&self) -> bool {
        self.text.trim() == self.default
    }
}

/// The form: fields, the preset they came from, and the validation outcome.
#[derive(Debug, Clone)]
pub struct Form {
    pub preset: Option<String>,
    pub name: String,
    pub tags: String,
    pub fields: Vec<Field>,
    /// `section.key` → message, for fields whose value is refused.
    pub errors: BTreeMap<String, String>,
    /// A problem not tied to one field (e.g. a preset that does not parse).
    pub general_error: Option<String>,
    /// The validated config, when there are no errors.
    pub config: Option<Config>,
}

impl Default for Form {
    fn default() -> Self {
        let mut form = Self {
            preset: None,
            name: "run".into(),
            tags: String::new(),
            fields: default_fields(),
            errors: BTreeMap::new(),
            general_error: None,
            config: None,
        };
        form.validate();
        form
    }
}

impl Form {
    /// Fill the form from a preset's TOML text (keys it does not name take their default).
    pub fn load_preset(&mut self, name: &str, text: &str) {
        *self = Self::default();
        self.preset = Some(name.to_owned());
        self.name = name.to_owned();
        match text.parse::<toml::Table>() {
            Ok(table) => {
                for f in &mut self.fields {
                    if let Some(v) = table.get(&f.section).and_then(|s| s.get(&f.key)) {
                        f.text = value_text(v);
                    }
                }
                // Keys the form has no field for would be dropped silently: name them instead.
                if let Err(e) = Config::from_toml_str(text, &format!("preset {name}"), &[]) {
                    self.general_error = Some(e.to_string());
                }
            }
            Err(e) => {
                self.general_error = Some(format!("preset {name}: {}", e.message().trim()));
            }
        }
        self.validate();
    }

    pub fn field(&self, path: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.path() == path)
    }

    pub fn field_mut(&mut self, path: &str) -> Option<&mut Field> {
        self.fields.iter_mut().find(|f| f.path() == path)
    }

    /// Every field as a `--set` argument.
    pub fn overrides(&self) -> Vec<String> {
        self.fields.iter().map(Field::override_arg).collect()
    }

    /// Re-check every field alone (so a message lands on the field that causes it), then the
    /// whole config (rules that involve several keys).
    pub fn validate(&mut self) {
        self.errors.clear();
        self.config = None;
        for f in &self.fields {
            match Config::from_toml_str("", "form", &[f.override_arg()]) {
                // A rule about another key (CIFAR needs `data.dir`) is checked with all keys below.
                Err(ConfigError::Invalid { key, .. }) if key != f.path() => {}
                Err(e) => {
                    self.errors.insert(f.path(), e.to_string());
                }
                Ok(_) => {}
            }
        }
        if !self.errors.is_empty() {
            return;
        }
        match Config::from_toml_str("", "form", &self.overrides()) {
            Ok(c) => self.config = Some(c),
            Err(e) => {
                let key = match &e {
                    ConfigError::Invalid { key, .. } => key.clone(),
                    _ => String::new(),
                };
                self.errors.insert(key, e.to_string());
            }
        }
    }

    /// Whether Launch / Queue may be pressed.
    pub fn launchable(&self) -> bool {
        self.config.is_some() && self.general_error.is_none() && !self.name.trim().is_empty()
    }

    /// Sections in reference order, each with its field indices.
    pub fn sections(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            match out.iter_mut().find(|(s, _)| *s == f.section) {
                Some((_, v)) => v.push(i),
                None => out.push((f.section.clone(), vec![i])),
            }
        }
        out
    }
}

/// Edited text of a TOML value: strings bare, everything else as a literal.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn default_fields() -> Vec<Field> {
    let docs = reference_docs();
    let table: toml::Table = Config::default().to_toml().parse().unwrap_or_default();
    let mut fields = Vec::new();
    for (section, v) in &table {
        let toml::Value::Table(keys) = v else {
            continue;
        };
        for (key, value) in keys {
            let kind = match value {
                toml::Value::Boolean(_) => FieldKind::Bool,
                toml::Value::String(_) => FieldKind::Text,
                _ => FieldKind::Literal,
            };
            let text = value_text(value);
            fields.push(Field {
                section: section.clone(),
                key: key.clone(),
                kind,
                default: text.clone(),
                text,
                doc: docs
                    .get(&format!("{section}.{key}"))
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default(),
            });
        }
    }
    // Reference order; keys it does not document go last.
    let rank = |f: &Field| docs.get(&f.path()).map_or(usize::MAX, |(i, _)| *i);
    fields.sort_by_key(|f| rank(f));
    fields
}

/// `section.key` → (position, doc), from the key tables of the reference.
pub fn reference_docs() -> BTreeMap<String, (usize, KeyDoc)> {
    let mut out = BTreeMap::new();
    let mut section = None;
    for line in REFERENCE.lines() {
        if let Some(rest) = line.strip_prefix("## `[") {
            section = rest.split(']').next().map(str::to_owned);
            continue;
        }
        if line.starts_with("## ") {
            section = None;
        }
        let Some(section) = &section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | default | allowed | meaning |
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`');
        let allowed = cells[3].to_owned();
        let choices = choices(&allowed);
        let n = out.len();
        out.insert(
            format!("{section}.{key}"),
            (
                n,
                KeyDoc {
                    allowed,
                    meaning: cells[4].to_owned(),
                    choices,
                },
            ),
        );
    }
    out
}

/// `` `a`, `b`, `c` `` → [a, b, c]; anything else (ranges, prose) → none.
fn choices(allowed: &str) -> Vec<String> {
    let items: Vec<&str> = allowed.split(',').map(str::trim).collect();
    if items.len() < 2
        || !items
            .iter()
            .all(|i| i.len() > 2 && i.starts_with('`') && i.ends_with('`'))
    {
        return Vec::new();
    }
    items
        .iter()
        .map(|i| i.trim_matches('`').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_has_a_documented_field() {
        let form = Form::default();
        assert!(form.config.is_some(), "{:?}", form.errors);
        let docs = reference_docs();
        for f in &form.fields {
            assert!(
                docs.contains_key(&f.path()),
                "{} is not in experiments/README.md",
                f.path()
            );
        }
        assert!(form.field("train.epochs").is_some() && form.field("hw.mode").is_some());
        assert_eq!(form.sections()[0].0, "data", "reference order");
    }

    #[test]
    fn every_documented_choice_is_accepted() {
        let form = Form::default();
        for f in &form.fields {
            for c in &f.doc.choices {
                let mut g = f.clone();
                g.text.clone_from(c);
                let mut sets = vec![g.override_arg()];
                if f.path() == "data.dataset" && (c.starts_with("cifar") || c == "voc") {
                    sets.push("data.dir=\"/x\"".into());
                }
                // A class per pixel needs a segmentation model, and the other way round.
                if f.path() == "data.dataset"
                    && ["fashion-mnist-scenes", "voc"].contains(&c.as_str())
                {
                    sets.push("model.task=\"segmentation\"".into());
                }
                if f.path() == "model.task" && c == "segmentation" {
                    sets.push("data.dataset=\"fashion-mnist-scenes\"".into());
                }
                if f.path() == "hw.convention" && c == "full" {
                    sets.push("hw.model=\"project\"".into());
                }
                if f.path() == "ops.add_storage" && c == "mult" {
                    sets.push("ops.kind=\"add\"".into());
                }
                if f.path() == "nas.prune" && c == "true" {
                    // Pruning acts after an epoch that is not a proxy's last.
                    sets.push("nas.proxy_epochs=2".into());
                }
                assert!(
                    Config::from_toml_str("", "t", &sets).is_ok(),
                    "{} = {c}",
                    f.path()
                );
            }
        }
        assert_eq!(
            form.field("remap.kind").map(|f| f.doc.choices.len()),
            Some(4)
        );
        assert_eq!(
            form.field("ops.add_init").map(|f| f.doc.choices.clone()),
            Some(vec!["kaiming".to_owned(), "unit".to_owned()])
        );
    }

    #[test]
    fn invalid_value_is_flagged_on_its_field_with_the_cli_message() {
        let mut form = Form::default();
        if let Some(f) = form.field_mut("train.epochs") {
            f.text = "0".into();
        }
        form.validate();
        let msg = form.errors.get("train.epochs").expect("flagged");
        let cli =
            Config::from_toml_str("", "form", &["train.epochs=0".into()]).expect_err("cli refuses");
        assert_eq!(msg, &cli.to_string());
        assert!(!form.launchable());
        if let Some(f) = form.field_mut("train.lr") {
            f.text = "fast".into();
        }
        form.validate();
        assert!(form.errors.contains_key("train.lr"), "{:?}", form.errors);
    }

    #[test]
    fn preset_fills_fields_and_cross_key_rules_apply() {
        let mut form = Form::default();
        form.load_preset("p", "[train]\nepochs = 3\n[data]\ndataset = \"cifar10\"\n");
        assert_eq!(
            form.field("train.epochs").map(|f| f.text.as_str()),
            Some("3")
        );
        assert!(form.errors.contains_key("data.dir"), "{:?}", form.errors);
        form.load_preset("q", "[train]\nepocs = 3\n");
        assert!(
            form.general_error
                .as_deref()
                .is_some_and(|e| e.contains("epocs"))
        );
        assert!(!form.launchable());
    }
}
