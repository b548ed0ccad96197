//! Proxies trained on a Slurm cluster: one job array per generation (`nas.parallel` at once),
//! each proxy scored from its imported run's last validation top-1, as a local one is.

use super::{Batch, NasError, Proxy, Search, proxy_config};
use crate::slurm::{Array, Layout, Manifest, SlurmSpec, Task};
use crate::store::{CandidateStatus, NasCandidateRow, Reader, Status, WriteOp, keys};

impl Search<'_> {
    /// The proxies `todo` of `batch` as one Slurm job array (`nas.parallel` at once); each proxy
    /// is scored from its imported run's last validation top-1, as a local one is.
    pub(super) fn evaluate_on_slurm(
        &mut self,
        slurm: &SlurmSpec,
        at: &Batch<'_>,
        todo: &[usize],
        out: &mut [Proxy],
    ) -> Result<(), NasError> {
        if todo.is_empty() {
            return Ok(());
        }
        let (stage, generation, batch) = (at.stage, at.generation, at.batch);
        let what = format!("nas{}", self.search);
        let layout = Layout::of(&slurm.shared, &what, &format!("s{stage}-g{generation}"));
        let manifest = self.manifest(at, todo, &what, &layout);
        let writer = self.manager.writer();
        // Each proxy's task and Slurm state, on its candidate's row, for the NAS view.
        let rows: Vec<NasCandidateRow> = todo
            .iter()
            .map(|&i| NasCandidateRow {
                run: self.search,
                stage,
                generation,
                arch: batch[i].0.to_json(),
                cost: batch[i].1,
                proxy_accuracy: None,
                status: CandidateStatus::Pending,
                proxy_run: None,
                slurm: None,
            })
            .collect();
        let on_state = |k: usize, task: &str, state: &str, detail: &str| {
            writer.send_or_log(WriteOp::NasCandidate(NasCandidateRow {
                slurm: Some(format!("{task} {state} ({detail})")),
                ..rows[k].clone()
            }));
        };
        let array = Array {
            db: self.db,
            writer,
            layout: &layout,
            manifest: &manifest,
            study: None,
            on_state: Some(&on_state),
        };
        let label = format!("stage {stage} gen {generation}");
        let d = array
            .dispatch(slurm, self.cfg.nas.parallel, self.stop, &label, self.report)
            .map_err(|e| NasError::Slurm(e.to_string()))?;
        let reader = Reader::open(self.db)?;
        let mut cut_short = Vec::new();
        for (k, &i) in todo.iter().enumerate() {
            let accuracy = match (d.runs[k], d.statuses[k]) {
                (Some(run), Some(Status::Finished)) => reader.last_metric(run, keys::VAL_TOP1)?,
                (_, Some(Status::Failed)) => None,
                _ => {
                    cut_short.push(format!("{} ({})", manifest.tasks[k].name, d.ended_text(k)));
                    // As a local proxy stopped mid-way: a resumed search trains it again.
                    self.record(NasCandidateRow {
                        status: CandidateStatus::Stopped,
                        proxy_run: d.runs[k],
                        slurm: Some(format!("{}_{k} {}", d.job, d.ended_text(k))),
                        ..rows[k].clone()
                    })?;
                    continue;
                }
            };
            let row = NasCandidateRow {
                proxy_run: d.runs[k],
                slurm: Some(format!("{}_{k} {}", d.job, d.ended_text(k))),
                ..rows[k].clone()
            };
            out[i] = self.settle(row, accuracy, false, ", on Slurm")?;
        }
        if d.stopped() {
            return Err(NasError::Stopped);
        }
        if !cut_short.is_empty() {
            return Err(NasError::Slurm(format!(
                "{} proxies did not finish on Slurm: {}; their logs are in {}; rerun the search to continue it",
                cut_short.len(),
                cut_short.join(", "),
                layout.logs().display()
            )));
        }
        Ok(())
    }

    /// The array's tasks: one proxy training per candidate `todo` of the batch, named by its
    /// architecture so that a resumed search finds the same task's snapshot.
    fn manifest(&self, at: &Batch<'_>, todo: &[usize], what: &str, layout: &Layout) -> Manifest {
        let (stage, generation) = (at.stage, at.generation);
        let tasks: Vec<Task> = todo
            .iter()
            .map(|&i| {
                let (arch, _) = &at.batch[i];
                let json = arch.to_json();
                let h = json.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                let file = format!("s{stage}-g{generation}-{h:016x}");
                let mut config = proxy_config(self.cfg, arch, stage, at.subnet);
                config.train.threads = 0;
                Task {
                    variant: String::new(),
                    seed: config.train.seed,
                    name: format!("{what}-s{stage}-g{generation}-{i}"),
                    tags: format!("nas-proxy,{what},slurm,{}", layout.task_tag(&file)),
                    config: config.to_toml(),
                    file,
                }
            })
            .collect();
        Manifest {
            name: format!("{what}-s{stage}-g{generation}"),
            identity: String::new(),
            spec: String::new(),
            tasks,
        }
    }
}
