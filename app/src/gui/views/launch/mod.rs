//! Launch: presets from `experiments/`, a form for every config key grouped by section (defaults
//! shown, invalid values flagged inline with the CLI's messages), Launch, Queue, Start NAS search,
//! and Start study: the form's config with one key varied over values × seeds — or a study file
//! of `experiments/studies/` as it stands.

pub mod form;

use shiftadd_core::run::{Command, Event};
use shiftadd_core::spec::study::Study;
use shiftadd_core::store::RunId;

use crate::gui::ctx::ViewCtx;
use crate::gui::data::backend::Preset;
use crate::gui::data::searches::SlurmChoice;
use crate::gui::widgets::markdown;
use form::{Field, FieldKind, Form};

#[derive(Default)]
pub struct LaunchView {
    pub form: Form,
    presets: Vec<Preset>,
    presets_loaded: bool,
    /// Requests sent and not yet answered: (request id, queued?).
    pending: Vec<(u64, bool)>,
    next_request: u64,
    /// The last answer: Ok(message) or Err(reason).
    pub outcome: Option<Result<String, String>>,
    created: Option<RunId>,
    search_started: bool,
    study_started: bool,
    /// The study row: vary this key over these values, with this many seeds.
    pub study: StudyForm,
    /// The study files of `experiments/studies/`.
    study_files: Vec<Preset>,
    /// The study file picked, and it loaded and validated (or why it does not).
    study_file: Option<(usize, Result<Study, String>)>,
}

/// What "Start study" varies.
pub struct StudyForm {
    pub key: String,
    /// Comma-separated values (TOML literals or bare words, as `--set` takes them).
    pub values: String,
    pub seeds: usize,
    /// Where studies started here train: this machine, or Slurm (`--executor slurm`).
    pub on_slurm: bool,
    /// The shared folder for Slurm (empty: beside the database).
    pub shared: String,
    /// More sbatch arguments, separated by spaces.
    pub slurm_args: String,
}

impl Default for StudyForm {
    fn default() -> Self {
        Self {
            key: "ops.kind".into(),
            values: "mult, shift".into(),
            seeds: 3,
            on_slurm: false,
            shared: String::new(),
            slurm_args: String::new(),
        }
    }
}

impl StudyForm {
    /// Where a study started from the form trains: `None` here, else on Slurm with these choices.
    pub fn executor(&self) -> Option<SlurmChoice> {
        self.on_slurm.then(|| SlurmChoice {
            shared: Some(self.shared.trim())
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from),
            sbatch_args: self
                .slurm_args
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The study of `config` with `key` varied: a `[grid]` over the values, seeds 0..n, the
    /// config as the study's base; validated as a study file is.
    pub fn study(&self, config: &shiftadd_core::Config, name: &str) -> Result<Study, String> {
        let values: Vec<toml::Value> = self
            .values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                toml::from_str::<toml::Table>(&format!("v = {v}"))
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .unwrap_or_else(|| toml::Value::String(v.to_owned()))
            })
            .collect();
        let base: toml::Table = toml::from_str(&config.to_toml()).map_err(|e| e.to_string())?;
        let mut grid = toml::Table::new();
        grid.insert(self.key.trim().to_owned(), toml::Value::Array(values));
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(name.to_owned()));
        t.insert(
            "seeds".into(),
            toml::Value::Array((0..self.seeds as i64).map(toml::Value::Integer).collect()),
        );
        t.insert("config".into(), toml::Value::Table(base));
        t.insert("grid".into(), toml::Value::Table(grid));
        let text = toml::to_string(&t).map_err(|e| e.to_string())?;
        Study::parse(&text, "Launch", std::path::Path::new("."), &[]).map_err(|e| e.to_string())
    }
}

/// Request ids of the form start here (resumes from the runs list use 0).
const FIRST_REQUEST: u64 = 1000;

impl LaunchView {
    pub fn set_presets(&mut self, presets: Vec<Preset>, study_files: Vec<Preset>) {
        let first_time = !self.presets_loaded;
        self.presets = presets;
        self.study_files = study_files;
        self.study_file = None;
        self.presets_loaded = true;
        // Open with the default experiment ready to launch.
        if first_time
            && self.form.preset.is_none()
            && let Some(p) = self
                .presets
                .iter()
                .find(|p| p.name == "smoke")
                .or(self.presets.first())
        {
            self.form.load_preset(&p.name, &p.text);
        }
    }

    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::Created { request, run } => {
                if let Some(i) = self.pending.iter().position(|(r, _)| r == request) {
                    let (_, queued) = self.pending.remove(i);
                    self.outcome = Some(Ok(if queued {
                        format!("run {run} queued")
                    } else {
                        format!("run {run} started")
                    }));
                    if !queued {
                        self.created = Some(*run);
                    }
                }
            }
            Event::Rejected { request, reason } => {
                if let Some(i) = self.pending.iter().position(|(r, _)| r == request) {
                    self.pending.remove(i);
                    self.outcome = Some(Err(reason.clone()));
                }
            }
            _ => {}
        }
    }

    /// A run this view started, once (the app then shows it in Monitor).
    pub fn take_created(&mut self) -> Option<RunId> {
        self.created.take()
    }

    fn submit(&mut self, queue: bool, commands: &mut Vec<Command>) {
        let Some(config) = self.form.config.clone() else {
            return;
        };
        self.next_request = self.next_request.max(FIRST_REQUEST) + 1;
        let request = self.next_request;
        let (name, tags) = (
            self.form.name.trim().to_owned(),
            self.form.tags.trim().to_owned(),
        );
        let config = Box::new(config);
        commands.push(if queue {
            Command::Queue {
                config,
                name,
                tags,
                request,
            }
        } else {
            Command::Start {
                config,
                name,
                tags,
                request,
            }
        });
        self.pending.push((request, queue));
        self.outcome = Some(Ok("sent to the run manager…".into()));
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        egui::Panel::left("presets")
            .resizable(true)
            .default_size(290.0)
            .show(ui, |ui| {
                self.presets_ui(ui);
                ui.separator();
                self.study_files_ui(ui, vcx);
            });
        egui::CentralPanel::default().show(ui, |ui| {
            self.actions_ui(ui, vcx);
            ui.separator();
            let changed = egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| form_ui(ui, &mut self.form))
                .inner;
            if changed {
                self.form.validate();
                self.form_changed();
            }
        });
    }

    fn presets_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Presets");
        if !self.presets_loaded {
            ui.spinner();
        }
        let preset = self.form.preset.clone();
        // Two fifths of the panel: the study files below keep room for their summary, Start
        // button and list whatever the number of presets.
        let height = ui.available_height() * 0.4;
        let chosen = preset_list(ui, "preset-list", &self.presets, height, |p| {
            preset.as_deref() == Some(p.name.as_str())
        });
        if let Some(i) = chosen {
            let p = &self.presets[i];
            self.form.load_preset(&p.name, &p.text);
            self.form_changed();
        }
    }

    /// The study files: pick one to see what it runs, then start it as it stands (the form is not
    /// used; a study file names its own base config).
    fn study_files_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        ui.heading("Study files");
        if self.presets_loaded && self.study_files.is_empty() {
            ui.weak("none in experiments/studies/");
        }
        // The picked file's summary and its Start button sit above the list, so they stay in
        // view however many files there are; the list scrolls in the height left.
        self.study_file_summary_ui(ui, vcx);
        let picked = self
            .study_file
            .as_ref()
            .map(|(i, _)| &self.study_files[*i].path);
        let height = ui.available_height().max(96.0);
        let chosen = preset_list(ui, "study-file-list", &self.study_files, height, |p| {
            picked == Some(&p.path)
        });
        if let Some(i) = chosen {
            // Loaded from disk on each pick: the base preset it names may have changed.
            let study = Study::load(&self.study_files[i].path, &[]).map_err(|e| e.to_string());
            self.study_file = Some((i, study));
        }
    }

    /// What the picked study file runs, and the button that starts it.
    fn study_file_summary_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        let Some((i, study)) = &self.study_file else {
            ui.weak("pick a file to see what it runs");
            return;
        };
        match study {
            Ok(s) => {
                let names: Vec<&str> = s.variants.iter().map(|v| v.name.as_str()).collect();
                ui.label(format!(
                    "{} variants × {} seeds = {} cells, {} at a time; reports {} against {}",
                    s.variants.len(),
                    s.seeds.len(),
                    s.cells().count(),
                    s.parallel,
                    s.metric,
                    s.baseline
                ));
                ui.weak(names.join(", "));
                let hint = "run every cell of this file (cells already in the database are reused, interrupted ones resumed); the Studies view shows the table";
                if ui.button("Start study file").on_hover_text(hint).clicked() {
                    let (study, file) = (s.clone(), self.study_files[*i].name.clone());
                    let cells = study.cells().count();
                    let result = vcx
                        .searches
                        .start_study(study, self.study.executor())
                        .map(|()| format!("study file {file} started: {cells} cells"))
                        .map_err(|e| format!("cannot start the study thread: {e}"));
                    self.study_started = result.is_ok();
                    self.outcome = Some(result);
                }
            }
            Err(e) => {
                markdown::label(ui, e, Some(ui.visuals().error_fg_color));
            }
        }
    }

    /// Start a NAS search of the form's config on its own thread; the app then shows the NAS view.
    fn start_search(&mut self, vcx: &mut ViewCtx<'_>) {
        let Some(config) = self.form.config.clone() else {
            return;
        };
        let name = match self.form.name.trim() {
            "" => "nas".to_owned(),
            n => n.to_owned(),
        };
        self.outcome = Some(
            vcx.searches
                .start(config, name.clone(), self.study.executor())
                .map(|()| {
                    self.search_started = true;
                    format!("NAS search {name} started")
                })
                .map_err(|e| format!("cannot start the search thread: {e}")),
        );
    }

    /// Start the study row's study of the form's config on its own thread.
    fn start_study(&mut self, vcx: &mut ViewCtx<'_>) {
        let Some(config) = self.form.config.clone() else {
            return;
        };
        let name = match self.form.name.trim() {
            "" => format!("vary-{}", self.study.key.trim()),
            n => n.to_owned(),
        };
        let result = self.study.study(&config, &name).and_then(|study| {
            let cells = study.cells().count();
            vcx.searches
                .start_study(study, self.study.executor())
                .map(|()| format!("study {name} started: {cells} cells"))
                .map_err(|e| format!("cannot start the study thread: {e}"))
        });
        self.study_started = result.is_ok();
        self.outcome = Some(result);
    }

    /// Whether a study was just started here, once (the app then shows the Studies view).
    pub fn take_study_started(&mut self) -> bool {
        std::mem::take(&mut self.study_started)
    }

    /// Whether a search was just started here, once (the app then shows the NAS view).
    pub fn take_search_started(&mut self) -> bool {
        std::mem::take(&mut self.search_started)
    }

    fn actions_ui(&mut self, ui: &mut egui::Ui, vcx: &mut ViewCtx<'_>) {
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            ui.add(egui::TextEdit::singleline(&mut self.form.name).desired_width(200.0))
                .labelled_by(label.id);
            let label = ui.label("Tags");
            ui.add(
                egui::TextEdit::singleline(&mut self.form.tags)
                    .hint_text("comma-separated")
                    .desired_width(160.0),
            )
            .labelled_by(label.id);
            ui.separator();
            threads_ui(ui, &mut self.form);
        });
        // The actions on a row of their own: beside the fields they would be clipped on narrow windows.
        ui.horizontal(|ui| {
            let ok = self.form.launchable();
            let hint = if ok {
                "start training now"
            } else {
                "fix the flagged values first"
            };
            if ui
                .add_enabled(ok, egui::Button::new("Launch run"))
                .on_hover_text(hint)
                .on_disabled_hover_text(hint)
                .clicked()
            {
                self.submit(false, vcx.commands);
            }
            if ui
                .add_enabled(ok, egui::Button::new("Queue run"))
                .on_hover_text("start when no other run of this session trains")
                .clicked()
            {
                self.submit(true, vcx.commands);
            }
            let hint = "search this config's [nas] section: stage 1 SubNets, stage 2 TargetNets, each a short proxy run (a config searched before resumes)";
            if ui
                .add_enabled(ok, egui::Button::new("Start NAS search"))
                .on_hover_text(hint)
                .clicked()
            {
                self.start_search(vcx);
            }
            if ui
                .button("Reset")
                .on_hover_text("back to the preset's values")
                .clicked()
            {
                match self
                    .presets
                    .iter()
                    .find(|p| Some(&p.name) == self.form.preset.as_ref())
                {
                    Some(p) => self.form.load_preset(&p.name, &p.text),
                    None => self.form = Form::default(),
                }
                self.form_changed();
            }
        });
        executor_ui(ui, &mut self.study);
        // The study row: the same config, one key varied over values × seeds.
        ui.horizontal(|ui| {
            let ok = self.form.launchable();
            let label = ui.label("Study: vary");
            ui.add(egui::TextEdit::singleline(&mut self.study.key).desired_width(120.0))
                .labelled_by(label.id);
            let label = ui.label("over");
            ui.add(
                egui::TextEdit::singleline(&mut self.study.values)
                    .hint_text("comma-separated values")
                    .desired_width(140.0),
            )
            .labelled_by(label.id);
            let label = ui.label("×");
            ui.add(egui::DragValue::new(&mut self.study.seeds).range(1..=20))
                .labelled_by(label.id);
            ui.label("seeds");
            if ui
                .add_enabled(ok, egui::Button::new("Start study"))
                .on_hover_text("this config with the key set to each value, every value × seed a run, 2 at a time; the Studies view shows the table")
                .clicked()
            {
                self.start_study(vcx);
            }
        });
        self.status_row(ui);
    }

    /// One line, always there, so that the form below never moves: what the form's state or
    /// the last action says, the most pressing first, the whole of it on hover where it is cut.
    fn status_row(&self, ui: &mut egui::Ui) {
        let error = Some(ui.visuals().error_fg_color);
        let mut parts: Vec<(String, Option<egui::Color32>)> = Vec::new();
        let n_errors = self.form.errors.len();
        if n_errors > 0 {
            parts.push((
                format!("{n_errors} invalid value(s): Launch is disabled"),
                error,
            ));
        }
        if let Some(e) = &self.form.general_error {
            parts.push((e.clone(), error));
        }
        match &self.outcome {
            Some(Ok(m)) => parts.push((m.clone(), None)),
            Some(Err(e)) => parts.push((format!("refused: {e}"), error)),
            None => {}
        }
        let height = ui.text_style_height(&egui::TextStyle::Body);
        let size = egui::vec2(ui.available_width(), height);
        let layout = egui::Layout::left_to_right(egui::Align::Center);
        ui.allocate_ui_with_layout(size, layout, |ui| {
            ui.set_min_size(size);
            let Some((_, color)) = parts.first() else {
                return;
            };
            let texts: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
            let job = markdown::job(ui, &texts.join(" · "), *color);
            let line = ui.add(egui::Label::new(job).truncate());
            markdown::hover(line, &texts.join("\n\n"));
        });
    }

    /// The last action's outcome is about the form as it was: an edit makes it stale (an answer
    /// still awaited stays).
    fn form_changed(&mut self) {
        if self.pending.is_empty() {
            self.outcome = None;
        }
    }
}

/// A scrolling list of presets (their first comment line on hover), at most `share` of the
/// height left; the one clicked.
fn preset_list(
    ui: &mut egui::Ui,
    id: &str,
    presets: &[Preset],
    max_height: f32,
    selected: impl Fn(&Preset) -> bool,
) -> Option<usize> {
    let mut chosen = None;
    egui::ScrollArea::vertical()
        .id_salt(id)
        .max_height(max_height)
        .show(ui, |ui| {
            for (i, p) in presets.iter().enumerate() {
                // One line each: a long name is cut with "…" (and shown whole on hover).
                let r = ui.add(
                    egui::Button::selectable(selected(p), &p.name)
                        .wrap_mode(egui::TextWrapMode::Truncate),
                );
                let r = match first_comment(&p.text) {
                    Some(c) => r.on_hover_text(format!("{}\n{c}", p.name)),
                    None => r.on_hover_text(&p.name),
                };
                if r.clicked() {
                    chosen = Some(i);
                }
            }
        });
    chosen
}

/// The first comment line of a preset (what it is for), if it has one.
fn first_comment(text: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.strip_prefix('#'))?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The thread count, bound to `train.threads`.
fn threads_ui(ui: &mut egui::Ui, form: &mut Form) {
    let Some(f) = form.field_mut("train.threads") else {
        return;
    };
    let mut n: u32 = f.text.trim().parse().unwrap_or(0);
    let label = ui.label("Threads");
    let r = ui
        .add(egui::DragValue::new(&mut n).range(0..=256))
        .labelled_by(label.id)
        .on_hover_text("torch intra-op threads (train.threads); 0 = one per core");
    if r.changed() {
        f.text = n.to_string();
        form.validate();
    }
}

/// The form, section by section; returns whether any value changed.
pub fn form_ui(ui: &mut egui::Ui, form: &mut Form) -> bool {
    let mut changed = false;
    for (section, idx) in form.sections() {
        egui::CollapsingHeader::new(format!("[{section}]"))
            .default_open(true)
            .show(ui, |ui| {
                egui::Grid::new(("form", &section))
                    .num_columns(3)
                    .spacing([12.0, 4.0])
                    .show(ui, |ui| {
                        for i in idx {
                            let error = form.errors.get(&form.fields[i].path()).cloned();
                            changed |= field_ui(ui, &mut form.fields[i], error.as_deref());
                            ui.end_row();
                        }
                    });
            });
    }
    // A message not tied to a field.
    if let Some(e) = form.errors.get("") {
        markdown::label(ui, e, Some(ui.visuals().error_fg_color));
    }
    changed
}

fn field_ui(ui: &mut egui::Ui, f: &mut Field, error: Option<&str>) -> bool {
    let label = ui.label(&f.key);
    if !f.doc.meaning.is_empty() {
        label.on_hover_text(format!("{}\nallowed: {}", f.doc.meaning, f.doc.allowed));
    }
    let id = f.path();
    let changed = ui
        .horizontal(|ui| {
            let r = match f.kind {
                FieldKind::Bool => {
                    let mut b = f.text.trim() == "true";
                    let r = ui.checkbox(&mut b, "").accessible_name(&id);
                    if r.changed() {
                        f.text = b.to_string();
                    }
                    r
                }
                _ if !f.doc.choices.is_empty() => {
                    let mut changed = false;
                    let r = egui::ComboBox::from_id_salt(&id)
                        .selected_text(f.text.clone())
                        .show_ui(ui, |ui| {
                            for c in &f.doc.choices {
                                changed |= ui.selectable_value(&mut f.text, c.clone(), c).changed();
                            }
                        })
                        .response
                        .accessible_name(&id);
                    if changed {
                        let mut r = r;
                        r.mark_changed();
                        r
                    } else {
                        r
                    }
                }
                _ => ui
                    .add(
                        egui::TextEdit::singleline(&mut f.text)
                            .id_salt(&id)
                            .desired_width(180.0)
                            .text_color_opt(error.map(|_| ui.visuals().error_fg_color)),
                    )
                    .accessible_name(&id),
            };
            if !f.is_default() {
                let reset = ui
                    .small_button("reset")
                    .on_hover_text(format!("back to the default ({})", f.default));
                if reset.clicked() {
                    f.text.clone_from(&f.default);
                    return true;
                }
            }
            r.changed()
        })
        .inner;
    ui.vertical(|ui| {
        ui.weak(format!("default {}", display_default(f)));
        if let Some(e) = error {
            markdown::label(ui, e, Some(ui.visuals().error_fg_color));
        }
    });
    changed
}

fn display_default(f: &Field) -> String {
    match f.kind {
        FieldKind::Text if f.default.is_empty() => "\"\"".into(),
        _ => f.default.clone(),
    }
}

/// Where the studies and NAS searches started here train: this machine's threads, or Slurm job
/// arrays (the shared folder and sbatch arguments as `--executor slurm` takes them).
fn executor_ui(ui: &mut egui::Ui, study: &mut StudyForm) {
    ui.horizontal(|ui| {
        ui.label("Studies and NAS searches train");
        ui.radio_value(&mut study.on_slurm, false, "here");
        ui.radio_value(&mut study.on_slurm, true, "on Slurm")
            .on_hover_text("one job array; each task trains a cell and ships its database to the shared folder, imported here as it goes");
        if study.on_slurm {
            let label = ui.label("shared folder");
            ui.add(
                egui::TextEdit::singleline(&mut study.shared)
                    .hint_text("beside the database")
                    .desired_width(180.0),
            )
            .labelled_by(label.id);
            let label = ui.label("sbatch args");
            ui.add(
                egui::TextEdit::singleline(&mut study.slurm_args)
                    .hint_text("--partition=… --time=…")
                    .desired_width(200.0),
            )
            .labelled_by(label.id);
        }
    });
}

#[cfg(test)]
mod study_tests {
    use super::*;

    #[test]
    fn the_study_row_varies_one_key_of_the_form_config() {
        let form = StudyForm {
            key: "train.lr".into(),
            values: "0.05, 0.1".into(),
            seeds: 2,
            ..StudyForm::default()
        };
        assert_eq!(form.executor(), None, "here unless Slurm is chosen");
        let cfg = shiftadd_core::Config::default();
        let study = form.study(&cfg, "s").expect("a valid study");
        assert_eq!(study.cells().count(), 4);
        let names: Vec<&str> = study.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["lr=0.05", "lr=0.1"]);
        let on_slurm = StudyForm {
            on_slurm: true,
            shared: " /scratch/me ".into(),
            slurm_args: "--partition=gpu  --time=01:00:00".into(),
            ..StudyForm::default()
        };
        assert_eq!(
            on_slurm.executor(),
            Some(SlurmChoice {
                shared: Some("/scratch/me".into()),
                sbatch_args: vec!["--partition=gpu".into(), "--time=01:00:00".into()],
            })
        );
        let c = study.config(&study.variants[0], 1).expect("cell config");
        assert!((c.train.lr - 0.05).abs() < 1e-12 && c.train.seed == 1);
        let bad = StudyForm {
            key: "train.nope".into(),
            ..form
        };
        assert!(
            bad.study(&cfg, "s")
                .expect_err("unknown key")
                .contains("nope")
        );
    }
}
