//! Proxies trained here, through the search's run manager, `nas.parallel` at a time; under
//! `nas.prune` a proxy that falls out of reach of its stage's others is stopped after an epoch
//! and settled as pruned.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::{Batch, NasError, Proxy, Search, proxy_config};
use crate::prune::Curves;
use crate::run::{Command, Event};
use crate::store::{CandidateStatus, NasCandidateRow, RunId, Status};

impl Search<'_> {
    /// Start candidate `i`'s proxy training; its request id and its (pending) row.
    fn launch(
        &mut self,
        at: &Batch<'_>,
        i: usize,
        threads: usize,
    ) -> Result<(u64, NasCandidateRow), NasError> {
        let (stage, generation) = (at.stage, at.generation);
        let (arch, cost) = &at.batch[i];
        let mut config = proxy_config(self.cfg, arch, stage, at.subnet);
        config.train.threads = threads;
        self.next_request += 1;
        let request = self.next_request;
        let name = format!(
            "nas{}-s{stage}-g{generation}-{}",
            self.search, self.launched
        );
        self.launched += 1;
        self.manager
            .commands
            .send(Command::Start {
                config: Box::new(config),
                name,
                tags: format!("nas-proxy,nas{}", self.search),
                request,
            })
            .map_err(|e| NasError::ManagerGone(e.to_string()))?;
        let row = NasCandidateRow {
            run: self.search,
            stage,
            generation,
            arch: arch.to_json(),
            cost: *cost,
            proxy_accuracy: None,
            status: CandidateStatus::Pending,
            proxy_run: None,
            slurm: None,
        };
        Ok((request, row))
    }

    /// A proxy run's epoch ended: under a pruning rule, note its validation top-1 in its
    /// stage's curves and stop it if it has fallen out of reach. Why, once it is being stopped.
    fn prune_verdict(
        &mut self,
        stage: i64,
        run: RunId,
        epoch: i64,
        val_score: f64,
    ) -> Option<String> {
        let rule = self.cfg.nas.prune_rule()?;
        let curves = self
            .curves
            .entry(stage)
            .or_insert_with(|| Curves::new("candidates"));
        curves.record(run, epoch, val_score);
        if epoch >= self.cfg.nas.proxy_epochs as i64 {
            // Its last epoch: it is ending anyway, and a stop now would race its end.
            return None;
        }
        let why = curves.verdict(&rule, run, epoch)?;
        (self.report)(format!("stage {stage}: proxy run {run} {why}"));
        let _ = self.manager.commands.send(Command::Stop(run));
        Some(why)
    }

    /// Train the candidates `todo` of the batch, their scores into `out`; on an error the
    /// proxies in flight stop, each recorded as stopped.
    pub(super) fn evaluate_locally(
        &mut self,
        at: &Batch<'_>,
        mut todo: VecDeque<usize>,
        out: &mut [Proxy],
    ) -> Result<(), NasError> {
        let parallel = self.cfg.nas.parallel.max(1);
        let threads = self.threads_per_candidate();
        // In flight, by request id: (batch index, the candidate's row).
        let mut pending: HashMap<u64, (usize, NasCandidateRow)> = HashMap::new();
        // Proxy runs being stopped by the pruning rule, and why; each proxy's last validation
        // top-1 (a pruned one's score, as a finished one's is its last).
        let mut pruning: HashMap<RunId, String> = HashMap::new();
        let mut last: HashMap<RunId, f64> = HashMap::new();
        let result = loop {
            while pending.len() < parallel
                && let Some(i) = todo.pop_front()
            {
                let (request, row) = self.launch(at, i, threads)?;
                pending.insert(request, (i, row));
            }
            if pending.is_empty() {
                break Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                break Err(NasError::Stopped);
            }
            let event = match self.manager.events.recv_timeout(Duration::from_millis(250)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(e) => break Err(NasError::ManagerGone(e.to_string())),
            };
            let of_run = |pending: &HashMap<u64, (usize, NasCandidateRow)>, run: RunId| {
                pending
                    .iter()
                    .find(|(_, (_, row))| row.proxy_run == Some(run))
                    .map(|(r, _)| *r)
            };
            let (request, accuracy, pruned) = match event {
                Event::EpochEnded {
                    run,
                    epoch,
                    val_score,
                    ..
                } if of_run(&pending, run).is_some() => {
                    last.insert(run, val_score);
                    if !pruning.contains_key(&run)
                        && let Some(why) = self.prune_verdict(at.stage, run, epoch, val_score)
                    {
                        pruning.insert(run, why);
                    }
                    continue;
                }
                Event::Created { request, run } if pending.contains_key(&request) => {
                    if let Some((_, row)) = pending.get_mut(&request) {
                        row.proxy_run = Some(run);
                        let row = row.clone();
                        self.record(row)?;
                    }
                    continue;
                }
                Event::Rejected { request, reason } if pending.contains_key(&request) => {
                    break Err(NasError::ProxyRefused(reason));
                }
                Event::Finished { run, val_score, .. } => match of_run(&pending, run) {
                    // The stop came after its last epoch: it ran its course.
                    Some(r) => (r, Some(val_score), false),
                    None => continue,
                },
                Event::Failed { run, reason } => match of_run(&pending, run) {
                    Some(r) => {
                        (self.report)(format!(
                            "stage {} gen {}: proxy run {run} failed: {reason}",
                            at.stage, at.generation
                        ));
                        (r, None, false)
                    }
                    None => continue,
                },
                Event::Stopped { run } if of_run(&pending, run).is_some() => {
                    let Some(why) = pruning.remove(&run) else {
                        break Err(NasError::ProxyStopped(run));
                    };
                    let Some(r) = of_run(&pending, run) else {
                        continue;
                    };
                    self.manager.writer().status(run, Status::Pruned, Some(why));
                    (r, last.get(&run).copied(), true)
                }
                _ => continue,
            };
            let Some((i, row)) = pending.remove(&request) else {
                continue;
            };
            out[i] = self.settle(row, accuracy, pruned, "")?;
        };
        if let Err(e) = result {
            // Leave nothing of this search training behind; finished candidates stay stored, and
            // the interrupted ones say so (a resumed search trains them again).
            for (_, row) in pending.values() {
                if let Some(run) = row.proxy_run {
                    let _ = self.manager.commands.send(Command::Stop(run));
                    let _ = self.record(NasCandidateRow {
                        status: CandidateStatus::Stopped,
                        ..row.clone()
                    });
                }
            }
            return Err(e);
        }
        Ok(())
    }
}
