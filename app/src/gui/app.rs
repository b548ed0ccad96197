//! [`StudioApp`], the `eframe::App`: `logic` drains the run manager's events and the data
//! thread's answers under a time budget and schedules queries; `ui` draws the top bar, the runs
//! panel and the current view; the close dialog.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shiftadd_core::run::{Command, Event};
use shiftadd_core::store::RunId;

use crate::gui::ctx::{ExitChoice, Persisted, View, ViewCtx};
use crate::gui::data::backend::{Backend, DRAIN_BUDGET, Loaded, Query};
use crate::gui::data::cache::DataCache;
use crate::gui::data::opening::Opening;
use crate::gui::shortcuts;
use crate::gui::views::{compare, hardware, launch, monitor, nas, runs, study, weights};
use crate::gui::widgets::export::Export;
use crate::gui::widgets::markdown;

const PERSIST_KEY: &str = "shiftadd-studio";

pub struct StudioApp {
    persisted: Persisted,
    backend: Backend,
    data: DataCache,
    launch: launch::LaunchView,
    monitor: monitor::MonitorView,
    weights: weights::WeightsView,
    hardware: hardware::HardwareView,
    compare: compare::CompareView,
    nas: nas::NasView,
    study: study::StudyView,
    export: Export,
    runs: runs::RunsView,
    outbox: Vec<Command>,
    /// Changes to runs for the data thread, sent after the frame.
    changes: Vec<Query>,
    /// Whether the selection was checked against the first runs list.
    pruned: bool,
    /// The keyboard shortcuts overlay is open.
    help: bool,
    /// Whether the window had focus (notifications go out only while it has not).
    focused: bool,
    status: Option<String>,
    /// The close dialog is open.
    asking_close: bool,
    exit_choice: Arc<Mutex<Option<ExitChoice>>>,
    last_metrics_poll: Instant,
    last_runs_poll: Instant,
}

impl StudioApp {
    pub fn new(
        backend: Backend,
        persisted: Persisted,
        exit_choice: Arc<Mutex<Option<ExitChoice>>>,
    ) -> Self {
        let export_dir = backend
            .db
            .parent()
            .map_or_else(|| PathBuf::from("exports"), |p| p.join("exports"));
        let persisted = persisted.for_database(&backend.db);
        let export = Export::new(export_dir, persisted.export_dir.clone());
        let mut app = Self {
            persisted,
            runs: runs::RunsView::default(),
            changes: Vec::new(),
            pruned: false,
            help: false,
            focused: true,
            data: DataCache::default(),
            launch: launch::LaunchView::default(),
            monitor: monitor::MonitorView::default(),
            weights: weights::WeightsView::default(),
            hardware: hardware::HardwareView::default(),
            compare: compare::CompareView::default(),
            nas: nas::NasView::default(),
            study: study::StudyView::default(),
            export,
            outbox: Vec::new(),
            status: None,
            asking_close: false,
            exit_choice,
            last_metrics_poll: Instant::now(),
            last_runs_poll: Instant::now(),
            backend,
        };
        app.data.mark_runs_stale();
        app.query(Query::Presets(app.backend.experiments_dir.clone()));
        app
    }

    /// Restore persisted state from eframe's storage, if any.
    pub fn restore(storage: Option<&dyn eframe::Storage>) -> Persisted {
        storage
            .and_then(|s| eframe::get_value(s, PERSIST_KEY))
            .unwrap_or_default()
    }

    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    pub fn data(&self) -> &DataCache {
        &self.data
    }

    /// What the app has loaded (tests read it).
    pub fn data_cache(&self) -> &DataCache {
        &self.data
    }

    pub fn launch_view(&self) -> &launch::LaunchView {
        &self.launch
    }

    pub fn export(&self) -> &Export {
        &self.export
    }

    fn query(&mut self, q: Query) {
        if let Err(e) = self.backend.queries.try_send(q) {
            self.data.unsent(&e.into_inner());
        }
    }

    fn drain(&mut self, now: Instant) {
        let t0 = Instant::now();
        while t0.elapsed() < DRAIN_BUDGET {
            let Ok(e) = self.backend.events.try_recv() else {
                break;
            };
            self.data.apply_event(&e, now);
            self.launch.on_event(&e);
            if let Event::Failed { run, reason } = &e {
                self.status = Some(format!("run {run} failed: {reason}"));
            }
            if !self.focused {
                shortcuts::notify_event(&e, &self.data);
            }
        }
        while t0.elapsed() < DRAIN_BUDGET {
            let Ok(l) = self.backend.loaded.try_recv() else {
                break;
            };
            if let Loaded::Presets { configs, studies } = &l {
                self.launch.set_presets(configs.clone(), studies.clone());
            }
            let prune = match &l {
                Loaded::Runs { .. } => !self.pruned,
                Loaded::Managed(Ok(_)) => true,
                _ => false,
            };
            let runs_list = matches!(l, Loaded::Runs { .. });
            self.data.apply_loaded(l);
            if runs_list && prune {
                // A selection restored from an earlier session, or runs just deleted: ids the
                // database does not hold are dropped (Details of them would only fail).
                let data = &self.data;
                self.persisted
                    .prune(|r| data.row(r).is_some() || data.live.contains_key(&r));
                self.pruned = true;
            } else if prune {
                self.pruned = false; // prune again once the list after the change arrives
            }
        }
        self.export.poll();
    }

    fn visible_runs(&self) -> Vec<RunId> {
        match self.persisted.view {
            View::Compare => self.persisted.compare.clone(),
            View::Launch => Vec::new(),
            View::Nas => self.nas.search.into_iter().collect(),
            View::Studies => self.study.visible_runs(&self.data),
            _ => self.persisted.current.into_iter().collect(),
        }
    }

    fn send_changes(&mut self) {
        for q in std::mem::take(&mut self.changes) {
            self.query(q);
        }
    }

    fn send_commands(&mut self) {
        for c in std::mem::take(&mut self.outbox) {
            if let Err(e) = self.backend.commands.try_send(c) {
                self.status = Some(format!("the run manager is not answering: {e}"));
            }
        }
    }

    /// Queue the data the visible runs need; returns when to look again if queries are waiting
    /// on the poll interval (so a view change with no further input still loads).
    fn refresh(&mut self, now: Instant) -> Option<Duration> {
        let visible = self.visible_runs();
        for &r in &visible {
            self.data.want(r);
        }
        if now.duration_since(self.last_runs_poll) > Duration::from_secs(3) {
            // Runs started elsewhere (the CLI, another window) show up too.
            self.last_runs_poll = now;
            self.data.mark_runs_stale();
            if self.persisted.view == View::Nas
                && let Some(r) = self.nas.search
            {
                self.data.mark_nas_stale(r);
            }
            if self.persisted.view == View::Studies {
                self.data.mark_studies_stale();
            }
            // A run trained by another process sends no events: poll what is shown of it.
            for &r in &visible {
                if self.data.is_active(r) && !self.data.live.contains_key(&r) {
                    self.data.mark_stale(r);
                }
            }
        }
        let interval = Duration::from_millis(300);
        let since = now.duration_since(self.last_metrics_poll);
        if since > interval {
            self.last_metrics_poll = now;
            for q in self.data.queries(&visible) {
                self.query(q);
            }
            None
        } else {
            self.data
                .has_pending(&visible)
                .then(|| interval - since + Duration::from_millis(1))
        }
    }

    fn handle_close(&mut self, ctx: &egui::Context) {
        let requested = ctx.input(|i| i.viewport().close_requested());
        let decided = self.exit_choice.lock().map(|c| c.is_some()).unwrap_or(true);
        if requested
            && !decided
            && (!self.data.active_here().is_empty() || self.searches_running().is_some())
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.asking_close = true;
        }
    }

    fn apply_shortcuts(&mut self, keys: &[shortcuts::Action]) {
        for a in keys {
            match *a {
                shortcuts::Action::View(v) => self.persisted.view = v,
                shortcuts::Action::Help => self.help = !self.help,
                shortcuts::Action::PauseResume | shortcuts::Action::Stop => {
                    let Some(run) = self.persisted.current else {
                        self.status = Some("no current run: select one in the list".into());
                        continue;
                    };
                    let live = self.data.live.get(&run);
                    let queued = self
                        .data
                        .row(run)
                        .is_some_and(|r| r.summary.status == shiftadd_core::store::Status::Queued);
                    match (*a, live) {
                        (shortcuts::Action::Stop, Some(_)) => self.outbox.push(Command::Stop(run)),
                        (shortcuts::Action::Stop, None) if queued => {
                            self.outbox.push(Command::Stop(run));
                        }
                        (shortcuts::Action::PauseResume, Some(l)) if l.paused => {
                            self.outbox.push(Command::Unpause(run));
                        }
                        (shortcuts::Action::PauseResume, Some(_)) => {
                            self.outbox.push(Command::Pause(run));
                        }
                        _ => {
                            self.status = Some(format!("run {run} is not training in this window"));
                        }
                    }
                }
            }
        }
        self.send_commands();
    }

    /// Runs the database last said are training (any process's).
    fn running_in_database(&self) -> usize {
        self.data
            .runs
            .iter()
            .filter(|r| r.summary.status == shiftadd_core::store::Status::Running)
            .count()
    }

    /// Whether runs train that send this window no events (the CLI's, another window's).
    fn training_elsewhere(&self) -> bool {
        self.running_in_database() > self.data.live.len()
    }

    /// What of this session's NAS searches and studies runs, in words.
    fn searches_running(&self) -> Option<String> {
        self.backend
            .searches
            .lock()
            .ok()
            .and_then(|s| s.running_text())
    }

    /// Take the progress of this session's searches: new lines refresh the runs table and the
    /// candidates (a search's rows appear before the 3 s poll would see them).
    fn poll_searches(&mut self) {
        let (lines, ended) = self
            .backend
            .searches
            .lock()
            .map(|mut s| {
                let before = s.running();
                let lines = s.poll();
                (lines, s.running() < before)
            })
            .unwrap_or_default();
        // A job that ended has just written its runs' last status, perhaps without a line.
        if !lines.is_empty() || ended {
            self.data.mark_runs_stale();
            if let Some(r) = self.nas.search {
                self.data.mark_nas_stale(r);
            }
        }
    }

    fn close_dialog(&mut self, ctx: &egui::Context) {
        if !self.asking_close {
            return;
        }
        let active = self.data.active_here();
        let searching = self.searches_running();
        let mut choice = None;
        let mut cancel = false;
        egui::Modal::new(egui::Id::unique("close-dialog")).show(ctx, |ui| {
            ui.heading("Runs are still training");
            let list: Vec<String> = active.iter().map(|r| format!("#{r}")).collect();
            if !active.is_empty() {
                ui.label(format!(
                    "{} run(s) of this session are active: {}.",
                    active.len(),
                    list.join(", ")
                ));
            }
            if let Some(what) = &searching {
                ui.label(format!(
                    "Also running, started in this session: {what} (stopped, each resumes when started again)."
                ));
            }
            ui.label("Stop them (each stays resumable from its last checkpoint), or leave them training without a window — the process ends when they do, and everything is recorded either way.");
            ui.horizontal(|ui| {
                if ui.button("Stop runs and quit").clicked() {
                    choice = Some(ExitChoice::StopRuns);
                }
                if ui.button("Leave running headless").clicked() {
                    choice = Some(ExitChoice::LeaveRunning);
                }
                if ui.button("Cancel").clicked() {
                    cancel = true;
                }
            });
        });
        if cancel {
            self.asking_close = false;
        }
        if let Some(c) = choice {
            if c == ExitChoice::LeaveRunning {
                // A paused run left without a window would wait forever: let it continue.
                for (run, live) in &self.data.live {
                    if live.paused {
                        self.outbox.push(Command::Unpause(*run));
                    }
                }
            }
            if let Ok(mut slot) = self.exit_choice.lock() {
                *slot = Some(c);
            }
            self.asking_close = false;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("ShiftAdd Studio");
            ui.separator();
            for (i, v) in View::ALL.into_iter().enumerate() {
                ui.selectable_value(&mut self.persisted.view, v, v.title())
                    .on_hover_text(format!("Ctrl+{}", i + 1));
            }
            ui.separator();
            ui.weak(format!("database {}", self.backend.db.display()));
            if self.backend.is_read_only() {
                ui.colored_label(ui.visuals().warn_fg_color, "read-only")
                    .on_hover_text(
                        "This user cannot write the database (a read-only file, folder or mount): \
                         runs can be browsed and exported, not started, edited or deleted.",
                    );
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .small_button("?")
                    .on_hover_text("keyboard shortcuts (F1)")
                    .clicked()
                {
                    self.help = !self.help;
                }
                let theme = if self.persisted.light {
                    "light theme"
                } else {
                    "dark theme"
                };
                if ui
                    .small_button(theme)
                    .on_hover_text("switch between the light and the dark theme")
                    .clicked()
                {
                    self.persisted.light = !self.persisted.light;
                }
            });
        });
    }

    fn status_bar(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            // From the database too: runs of a NAS search or another process train without events here.
            let training = self
                .running_in_database()
                .max(self.data.live.values().filter(|l| !l.paused).count());
            ui.label(match training {
                0 => "no run training".to_owned(),
                n => format!("{n} run(s) training"),
            });
            if let Some(what) = self.searches_running() {
                ui.separator();
                ui.label(format!("{what} running"));
            }
            if let Some(s) = self.export.status() {
                ui.separator();
                markdown::label(ui, &s, None);
            }
            if let Some(s) = &self.data.managed {
                ui.separator();
                markdown::label(ui, s, None);
            }
            let opening = self.backend.opening();
            if let Some(s) = opening.status() {
                ui.separator();
                if matches!(opening, Opening::Checking { .. }) {
                    ui.spinner();
                    markdown::label(ui, &s, None);
                } else {
                    markdown::label(ui, &s, Some(ui.visuals().error_fg_color));
                }
            }
            if let Some(s) = &self.status {
                ui.separator();
                markdown::label(ui, s, Some(ui.visuals().warn_fg_color));
            }
            if let Some(e) = &self.data.last_error {
                ui.separator();
                markdown::label(ui, e, Some(ui.visuals().error_fg_color));
            }
        });
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let now = Instant::now();
        self.focused = ctx.input(|i| i.viewport().focused.unwrap_or(true));
        let theme = if self.persisted.light {
            egui::Theme::Light
        } else {
            egui::Theme::Dark
        };
        if ctx.theme() != theme {
            ctx.set_theme(theme);
            // This frame's root was laid out with the old style: draw the next one whole.
            ctx.request_repaint();
        }
        let keys = shortcuts::read(ctx);
        self.apply_shortcuts(&keys);
        self.drain(now);
        self.poll_searches();
        if let Some(wait) = self.refresh(now) {
            ctx.request_repaint_after(wait);
        }
        self.handle_close(ctx);
        if self.data.live.values().any(|l| !l.paused) {
            // The ETA ticks even when no event arrives (not while paused: nothing moves).
            ctx.request_repaint_after(Duration::from_millis(500));
        } else if self.training_elsewhere() {
            // Runs of another process send no events here: poll the database as it goes.
            ctx.request_repaint_after(Duration::from_secs(3));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let now = Instant::now();
        let visible_before = self.visible_runs();
        egui::Panel::top("top").show(ui, |ui| self.top_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        let Self {
            persisted,
            data,
            launch,
            monitor,
            weights,
            hardware,
            compare,
            nas,
            study,
            export,
            outbox,
            backend,
            runs,
            changes,
            ..
        } = self;
        egui::Panel::left("runs")
            .resizable(true)
            .default_size(600.0)
            .min_size(540.0)
            .show(ui, |ui| {
                runs.ui(ui, data, persisted, outbox, changes);
            });
        let shared = backend.searches.clone();
        let Ok(mut searches) = shared.lock() else {
            return;
        };
        // Exports are named after what the view shows.
        let run_name = |run: Option<RunId>| {
            run.and_then(|r| data.row(r))
                .map(|r| r.summary.name.clone())
        };
        export.subject = match persisted.view {
            View::Monitor | View::Weights | View::Hardware => run_name(persisted.current),
            View::Nas => run_name(nas.search).or_else(|| Some("nas".into())),
            View::Studies => study.shown_name(data),
            View::Compare => Some("compare".into()),
            View::Launch => None,
        };
        let mut vcx = ViewCtx {
            data,
            current: persisted.current,
            compare: &persisted.compare,
            commands: outbox,
            export,
            searches: &mut searches,
            now,
            hw_model: &mut persisted.hw_model,
        };
        egui::CentralPanel::default().show(ui, |ui| match persisted.view {
            View::Launch => launch.ui(ui, &mut vcx),
            View::Monitor => monitor.ui(ui, &mut vcx),
            View::Weights => weights.ui(ui, &mut vcx),
            View::Hardware => hardware.ui(ui, &mut vcx),
            View::Compare => compare.ui(ui, &mut vcx, &mut persisted.compare_settings),
            View::Nas => nas.ui(ui, &mut vcx),
            View::Studies => study.ui(ui, &mut vcx),
        });
        drop(searches);
        if launch.take_study_started() {
            persisted.view = View::Studies;
        }
        if launch.take_search_started() {
            // Follow the new search (the NAS view shows the latest one).
            nas.search = None;
            persisted.view = View::Nas;
        }
        if let Some(run) = launch.take_created() {
            // A run just created from the form: follow it.
            persisted.current = Some(run);
            persisted.view = View::Monitor;
        }
        let ctx = ui.ctx().clone();
        if self.help {
            shortcuts::help_window(&ctx, &mut self.help);
        }
        if let Some(folder) = self.export.dialog(&ctx) {
            self.persisted.export_dir = Some(folder);
        }
        self.close_dialog(&ctx);
        self.send_commands();
        self.send_changes();
        if self.visible_runs() != visible_before {
            // A click changed what is on screen: the next frame's `logic` asks for its data (no
            // input may arrive to trigger that frame otherwise).
            ctx.request_repaint();
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, PERSIST_KEY, &self.persisted);
    }
}
