//! Read-only queries (the CLI's listings, the UI's `ui-data` thread).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::keys;
use super::rows::{
    CheckpointRow, HistogramRow, HwCostRow, MetricRow, MetricSummary, NasCandidateRow, RunSummary,
    StudyJobRow, StudyRow, StudyRunRow,
};
use super::schema::{Result, RunId, Status, StoreError, open_ro};

/// One row of [`Reader::runs`], read column by column: a column that does not hold what it
/// should (an unknown status, text where a time belongs — a damaged or hostile file) is read as
/// its default, and the run is listed as [`Status::Damaged`] with the first such column named in
/// its `reason`, so one bad row never takes the others out of a listing.
fn run_summary(r: &rusqlite::Row<'_>) -> RunSummary {
    let mut c = Lenient {
        row: r,
        damage: None,
    };
    let status_text = c.text(2, "status");
    let mut summary = RunSummary {
        id: c.int(0, "id"),
        name: c.text(1, "name"),
        status: Status::Finished,
        reason: c.opt(3, "reason"),
        dataset: c.text(4, "dataset"),
        model: c.text(5, "model"),
        operator: c.text(6, "operator"),
        seed: c.int(7, "seed"),
        tags: c.text(8, "tags"),
        created_at: c.real(9, "created_at"),
        finished_at: c.opt(10, "finished_at"),
        epochs_done: c.opt(11, "a metric's epoch"),
        last_val_top1: c.opt(12, "a metric's value"),
        best_val_top1: c.opt(13, "a metric's value"),
        energy_mj: c.opt(14, "a metric's value"),
        test_top1: c.opt(15, "a metric's value"),
        energy_shiftaddnas_mj: c.opt(16, "a metric's value"),
        energy_project_mj: c.opt(17, "a metric's value"),
        uid: c.opt::<String>(18, "uid").unwrap_or_default(),
        archived: c.opt(19, "archived").unwrap_or(false),
        notes: c.text(20, "notes"),
        started_at: c.opt(21, "started_at"),
        heartbeat_at: c.opt(22, "heartbeat_at"),
        segmentation: c.opt(23, "a flag").unwrap_or(false),
    };
    match (Status::parse(&status_text), c.damage) {
        (Some(status), None) => summary.status = status,
        (None, None) => {
            summary.status = Status::Damaged;
            summary.reason = Some(format!(
                "status holds {}, not a run status",
                short(&status_text)
            ));
        }
        (_, Some(damage)) => {
            summary.status = Status::Damaged;
            summary.reason = Some(damage);
        }
    }
    summary
}

/// A row read leniently: the first column that cannot be read is remembered, its default used.
struct Lenient<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    damage: Option<String>,
}

impl Lenient<'_, '_> {
    fn get<T: rusqlite::types::FromSql + Default>(&mut self, i: usize, column: &str) -> T {
        self.opt(i, column).unwrap_or_default()
    }

    fn opt<T: rusqlite::types::FromSql>(&mut self, i: usize, column: &str) -> Option<T> {
        match self.row.get::<_, Option<T>>(i) {
            Ok(v) => v,
            Err(_) => {
                if self.damage.is_none() {
                    let found = match self.row.get_ref(i) {
                        Ok(v) => found(v),
                        Err(_) => "nothing readable".into(),
                    };
                    self.damage = Some(format!("{column} holds {found}"));
                }
                None
            }
        }
    }

    fn text(&mut self, i: usize, column: &str) -> String {
        self.get(i, column)
    }

    fn int(&mut self, i: usize, column: &str) -> i64 {
        self.get(i, column)
    }

    fn real(&mut self, i: usize, column: &str) -> f64 {
        self.get(i, column)
    }
}

/// A stored value as a person reads it: its kind, and text quoted and cut short.
pub(super) fn found(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => "nothing (NULL)".into(),
        ValueRef::Integer(n) => format!("the integer {n}"),
        ValueRef::Real(x) => format!("the number {x}"),
        ValueRef::Text(t) => format!("the text {}", short(&String::from_utf8_lossy(t))),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// `text` quoted, cut to 40 characters.
fn short(text: &str) -> String {
    let mut cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Read-side queries over any connection.
pub struct Reader {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: open_ro(path)?,
            path: path.to_path_buf(),
        })
    }

    fn sq(&self, source: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.path, source)
    }

    /// Every row of `sql` with `params`, mapped by `f`; SQLite errors name the database.
    fn all<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sq(e))?;
        let rows = stmt.query_map(params, f).map_err(|e| self.sq(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sq(e))
    }

    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let sql = "SELECT r.id, r.name, r.status, r.reason, r.dataset, r.model, r.operator, r.seed, r.tags,
                   r.created_at, r.finished_at,
                   (SELECT MAX(epoch) FROM metrics m WHERE m.run_id = r.id
                        AND m.key IN (:val_top1, :val_miou)),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id
                        AND m.key IN (:val_top1, :val_miou) ORDER BY step DESC LIMIT 1),
                   (SELECT MAX(value) FROM metrics m WHERE m.run_id = r.id
                        AND m.key IN (:val_top1, :val_miou)),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = :hw_energy
                        ORDER BY step LIMIT 1),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id
                        AND m.key IN (:test_top1, :test_miou) ORDER BY step DESC LIMIT 1),
                   (SELECT value FROM metrics m WHERE m.run_id = r.id
                        AND m.key = :hw_sim ORDER BY step LIMIT 1),
                   COALESCE(
                       (SELECT value FROM metrics m WHERE m.run_id = r.id
                            AND m.key = :hw_project ORDER BY step LIMIT 1),
                       (SELECT value FROM metrics m WHERE m.run_id = r.id
                            AND m.key = :hw_energy ORDER BY step LIMIT 1)),
                   r.uid, r.archived, r.notes, r.started_at, r.heartbeat_at,
                   EXISTS (SELECT 1 FROM metrics m WHERE m.run_id = r.id AND m.key = :val_miou)
                   FROM runs r ORDER BY r.id";
        let (sim, project) = (
            keys::hw_under("shiftaddnas", "energy_mj"),
            keys::hw_under("project", "energy_mj"),
        );
        let params = rusqlite::named_params! {
            ":val_top1": keys::VAL_TOP1,
            ":val_miou": keys::VAL_MIOU,
            ":test_miou": keys::TEST_MIOU,
            ":hw_energy": keys::HW_ENERGY_MJ,
            ":test_top1": keys::TEST_TOP1,
            ":hw_sim": sim,
            ":hw_project": project,
        };
        self.all(sql, params, |r| Ok(run_summary(r)))
    }

    pub fn run(&self, id: RunId) -> Result<RunSummary> {
        self.runs()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(StoreError::NoRun(id))
    }

    pub fn config_toml(&self, id: RunId) -> Result<String> {
        self.conn
            .query_row("SELECT config FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.sq(e))?
            .ok_or(StoreError::NoRun(id))
    }

    /// A run's provenance JSON (empty for runs recorded before v8 or without one).
    pub fn provenance(&self, id: RunId) -> Result<String> {
        self.conn
            .query_row("SELECT provenance FROM runs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sq(e))?
            .ok_or(StoreError::NoRun(id))
    }

    /// Every metric key recorded, sorted.
    pub fn metric_keys(&self) -> Result<Vec<String>> {
        // One index seek per distinct (run, key) pair rather than a scan of every row.
        self.all(
            "WITH RECURSIVE k(run_id, key) AS (
                 SELECT run_id, key FROM (SELECT run_id, key FROM metrics ORDER BY run_id, key LIMIT 1)
                 UNION ALL
                 SELECT (SELECT run_id FROM metrics m WHERE (m.run_id, m.key) > (k.run_id, k.key)
                         ORDER BY m.run_id, m.key LIMIT 1),
                        (SELECT key FROM metrics m WHERE (m.run_id, m.key) > (k.run_id, k.key)
                         ORDER BY m.run_id, m.key LIMIT 1)
                 FROM k WHERE k.run_id IS NOT NULL)
             SELECT DISTINCT key FROM k WHERE key IS NOT NULL ORDER BY key",
            [],
            |r| r.get(0),
        )
    }

    /// Per run that recorded `key`: its last value (highest step), the largest and the smallest.
    pub fn metric_summary(&self, key: &str) -> Result<Vec<MetricSummary>> {
        self.all(
            // Numbers only: a value a damaged file holds as text is left out here (its run is
            // listed as damaged), not the whole summary.
            "SELECT run_id,
                    (SELECT value FROM metrics l WHERE l.run_id = m.run_id AND l.key = ?1
                     AND typeof(value) IN ('real', 'integer') ORDER BY step DESC LIMIT 1),
                    MAX(value), MIN(value)
             FROM metrics m WHERE key = ?1 AND typeof(value) IN ('real', 'integer')
             GROUP BY run_id",
            [key],
            |r| {
                Ok(MetricSummary {
                    run: r.get(0)?,
                    last: r.get(1)?,
                    max: r.get(2)?,
                    min: r.get(3)?,
                })
            },
        )
    }

    /// All metric rows of a run, ordered by key then step.
    pub fn metrics(&self, id: RunId) -> Result<Vec<MetricRow>> {
        self.metrics_from(id, i64::MIN)
    }

    /// One metric of a run, by step: a seek on the table's key, not a read of the run's rows.
    pub fn metric_series(&self, id: RunId, key: &str) -> Result<Vec<MetricRow>> {
        self.metric_rows(
            "SELECT run_id, key, step, epoch, wall_time, value FROM metrics
                 WHERE run_id = ?1 AND key = ?2 ORDER BY step",
            rusqlite::params![id, key],
        )
    }

    /// A run's metric rows with step ≥ `from`, ordered by key then step. Live views fetch from
    /// the last step they hold, inclusive: a run writes a step's rows in more than one batch (its
    /// validation lands at the epoch's last step, seconds after that step's training rows).
    pub fn metrics_from(&self, id: RunId, from: i64) -> Result<Vec<MetricRow>> {
        self.metric_rows(
            "SELECT run_id, key, step, epoch, wall_time, value FROM metrics
                 WHERE run_id = ?1 AND step >= ?2 ORDER BY key, step",
            rusqlite::params![id, from],
        )
    }

    fn metric_rows(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<MetricRow>> {
        self.all(sql, params, |r| {
            Ok(MetricRow {
                run: r.get(0)?,
                key: r.get(1)?,
                step: r.get(2)?,
                epoch: r.get(3)?,
                wall_time: r.get(4)?,
                value: r.get(5)?,
            })
        })
    }

    pub fn last_checkpoint(&self, id: RunId) -> Result<Option<CheckpointRow>> {
        self.conn
            .query_row(
                "SELECT run_id, epoch, step, path, rng_state FROM checkpoints
                 WHERE run_id = ?1 ORDER BY step DESC LIMIT 1",
                [id],
                checkpoint_row,
            )
            .optional()
            .map_err(|e| self.sq(e))
    }

    /// A run's retained checkpoints (`train.keep_checkpoints` of them), oldest first.
    pub fn checkpoints(&self, id: RunId) -> Result<Vec<CheckpointRow>> {
        self.all(
            "SELECT run_id, epoch, step, path, rng_state FROM checkpoints
             WHERE run_id = ?1 ORDER BY step",
            [id],
            checkpoint_row,
        )
    }

    /// A run's hardware-cost rows, ordered by model and layer.
    pub fn hw_cost(&self, id: RunId) -> Result<Vec<HwCostRow>> {
        self.all(
            "SELECT run_id, hw_model, model, layer_index, layer, detail FROM hw_cost
             WHERE run_id = ?1 ORDER BY hw_model, model, layer_index",
            [id],
            |r| {
                let text: String = r.get(5)?;
                Ok(HwCostRow {
                    run: r.get(0)?,
                    hw_model: r.get(1)?,
                    model: r.get(2)?,
                    layer_index: r.get(3)?,
                    layer: r.get(4)?,
                    detail: serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            5,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                })
            },
        )
    }

    /// Every study, oldest first.
    pub fn studies(&self) -> Result<Vec<StudyRow>> {
        self.all(
            "SELECT id, name, identity, spec, created_at FROM studies ORDER BY id",
            [],
            |r| {
                Ok(StudyRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    identity: r.get(2)?,
                    spec: r.get(3)?,
                    created_at: r.get(4)?,
                })
            },
        )
    }

    /// Where a study's cells train (cells trained locally have no row).
    pub fn study_jobs(&self, study: i64) -> Result<Vec<StudyJobRow>> {
        self.all(
            "SELECT study_id, variant, seed, executor, job, state, detail FROM study_jobs
             WHERE study_id = ?1 ORDER BY variant, seed",
            [study],
            |r| {
                Ok(StudyJobRow {
                    study: r.get(0)?,
                    variant: r.get(1)?,
                    seed: r.get::<_, i64>(2)? as u64,
                    executor: r.get(3)?,
                    job: r.get(4)?,
                    state: r.get(5)?,
                    detail: r.get(6)?,
                })
            },
        )
    }

    /// The runs of a study's cells.
    pub fn study_runs(&self, study: i64) -> Result<Vec<StudyRunRow>> {
        self.all(
            "SELECT study_id, variant, seed, run_id FROM study_runs WHERE study_id = ?1
             ORDER BY variant, seed",
            [study],
            |r| {
                Ok(StudyRunRow {
                    study: r.get(0)?,
                    variant: r.get(1)?,
                    seed: r.get::<_, i64>(2)? as u64,
                    run: r.get(3)?,
                })
            },
        )
    }

    /// The last value (highest step) of `key` for `run`.
    pub fn last_metric(&self, run: RunId, key: &str) -> Result<Option<f64>> {
        self.conn
            .query_row(
                "SELECT value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step DESC LIMIT 1",
                rusqlite::params![run, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sq(e))
    }

    /// How long `run` trained, in seconds: each recorded epoch's steps × `batch_size` images at
    /// the epoch's recorded throughput (`train/epoch_images_per_sec`), summed, with the number
    /// of epochs. Training only (evaluation, BN re-estimation and time stopped are not counted);
    /// `None` before the first epoch ends.
    pub fn train_seconds(&self, run: RunId, batch_size: usize) -> Result<Option<(f64, usize)>> {
        let epochs = self.all(
            "SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step",
            rusqlite::params![run, keys::TRAIN_EPOCH_IMAGES_PER_SEC],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
        )?;
        let mut before = 0;
        let mut secs = 0.0;
        for &(step, rate) in &epochs {
            secs += (step - before) as f64 * batch_size as f64 / rate.max(1e-9);
            before = step;
        }
        Ok((!epochs.is_empty()).then_some((secs, epochs.len())))
    }

    /// Histograms of a run, ordered by layer, kind, epoch.
    pub fn histograms(&self, id: RunId) -> Result<Vec<HistogramRow>> {
        self.all(
            "SELECT run_id, layer, kind, epoch, edges, counts, underflow, overflow, stats
                 FROM histograms WHERE run_id = ?1 ORDER BY layer, kind, epoch",
            [id],
            |r| {
                let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
                    let text: String = r.get(i)?;
                    serde_json::from_str(&text).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            i,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
                };
                let edges: Vec<f64> = serde_json::from_value(json(4)?).unwrap_or_default();
                let counts: Vec<u64> = serde_json::from_value(json(5)?).unwrap_or_default();
                Ok(HistogramRow {
                    run: r.get(0)?,
                    layer: r.get(1)?,
                    kind: r.get(2)?,
                    epoch: r.get(3)?,
                    edges,
                    counts,
                    underflow: r.get::<_, i64>(6)? as u64,
                    overflow: r.get::<_, i64>(7)? as u64,
                    stats: json(8)?,
                })
            },
        )
    }

    /// The candidates of NAS search `id`, in the order they were first stored.
    pub fn nas_candidates(&self, id: RunId) -> Result<Vec<NasCandidateRow>> {
        self.all(
            "SELECT run_id, stage, generation, arch, cost, proxy_accuracy, status, proxy_run,
                    slurm
                 FROM nas_candidates WHERE run_id = ?1 ORDER BY id",
            [id],
            |r| {
                Ok(NasCandidateRow {
                    run: r.get(0)?,
                    stage: r.get(1)?,
                    generation: r.get(2)?,
                    arch: r.get(3)?,
                    cost: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
                    proxy_accuracy: r.get(5)?,
                    status: r.get(6)?,
                    proxy_run: r.get(7)?,
                    slurm: r.get(8)?,
                })
            },
        )
    }

    pub fn logs(&self, id: RunId) -> Result<Vec<(f64, String, String)>> {
        self.all(
            "SELECT wall_time, level, message FROM logs WHERE run_id = ?1 ORDER BY wall_time",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRow> {
    Ok(CheckpointRow {
        run: r.get(0)?,
        epoch: r.get(1)?,
        step: r.get(2)?,
        path: r.get(3)?,
        rng_state: r.get(4)?,
    })
}
