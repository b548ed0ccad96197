//! Every view setting that persists between starts (`Persisted` stores them): the runs table's
//! columns, sort, filter and folding, and Compare's metrics, smoothing and grouping. Data only,
//! below the views that edit them and the context that carries them, so that neither imports a
//! view for its settings' types.

use serde::{Deserialize, Serialize};
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::keys;

use crate::gui::data::filter::Filter;

/// Which figure of a metric a column shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Agg {
    Last,
    /// The largest value.
    Best,
    Min,
}

impl Agg {
    pub const ALL: [Self; 3] = [Self::Last, Self::Best, Self::Min];

    pub fn title(self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::Best => "best",
            Self::Min => "min",
        }
    }
}

/// A column of the runs table after the id and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Col {
    Status,
    Tags,
    Data,
    Model,
    Op,
    Hybrid,
    Seed,
    ValBest,
    ValLast,
    Test,
    Energy,
    Duration,
    /// A config key (`train.lr`).
    Config(String),
    /// A metric's figure (`val/top5`, best).
    Metric(String, Agg),
}

impl Col {
    pub const BUILT_IN: [Self; 12] = [
        Self::Status,
        Self::Tags,
        Self::Data,
        Self::Model,
        Self::Op,
        Self::Hybrid,
        Self::Seed,
        Self::ValBest,
        Self::ValLast,
        Self::Test,
        Self::Energy,
        Self::Duration,
    ];

    pub fn title(&self, hw: HwModel) -> String {
        match self {
            Self::Status => "Status".into(),
            Self::Tags => "Tags".into(),
            Self::Data => "Data".into(),
            Self::Model => "Model".into(),
            Self::Op => "Op".into(),
            Self::Hybrid => "Hybrid".into(),
            Self::Seed => "Seed".into(),
            Self::ValBest => "Val best %".into(),
            Self::ValLast => "Val last %".into(),
            Self::Test => "Test %".into(),
            Self::Energy => match hw {
                HwModel::Shiftaddnas => "mJ (ShiftAddNAS)".into(),
                HwModel::Project => "mJ (project)".into(),
            },
            Self::Duration => "Duration".into(),
            Self::Config(k) => k.clone(),
            Self::Metric(k, a) => format!("{k} ({})", a.title()),
        }
    }

    /// The metric this column needs loaded with the runs.
    pub fn metric(&self) -> Option<&str> {
        match self {
            Self::Metric(k, _) => Some(k),
            _ => None,
        }
    }
}

/// What the table sorts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SortBy {
    #[default]
    Id,
    Name,
    Col(Col),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct RunsSettings {
    pub filter: String,
    pub sort: SortBy,
    pub descending: bool,
    /// The columns after id and name, in order.
    pub columns: Vec<Col>,
    pub show_archived: bool,
    /// Fold NAS proxies under their search and study cells under their study.
    pub fold: bool,
}

impl Default for RunsSettings {
    fn default() -> Self {
        Self {
            filter: String::new(),
            sort: SortBy::Id,
            descending: true,
            columns: vec![
                Col::Status,
                Col::Tags,
                Col::Model,
                Col::Op,
                Col::Hybrid,
                Col::ValBest,
                Col::Test,
                Col::Energy,
            ],
            show_archived: false,
            fold: true,
        }
    }
}

impl RunsSettings {
    /// The metric keys the table needs loaded: its metric columns' and its filter's.
    pub fn metric_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .columns
            .iter()
            .filter_map(Col::metric)
            .map(str::to_owned)
            .collect();
        if let Ok(f) = Filter::parse(&self.filter) {
            keys.extend(f.metric_keys());
        }
        keys
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompareSettings {
    /// The metric of each overlay plot.
    pub metrics: [String; 2],
    pub smoothing: f64,
    pub log_y: bool,
    /// Group the curves by this config key (empty: one curve per run): each group is drawn as
    /// its mean over a ±std band.
    pub group_by: String,
}

impl Default for CompareSettings {
    fn default() -> Self {
        Self {
            metrics: [keys::VAL_TOP1.into(), keys::TRAIN_LOSS.into()],
            smoothing: 0.6,
            log_y: false,
            group_by: String::new(),
        }
    }
}
