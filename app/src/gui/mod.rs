//! The desktop app: a runs list always at hand and the views Launch, Monitor, Weights, Hardware,
//! Compare, NAS and Studies, drawn with the widgets of [`widgets`] and the curves and formats of
//! [`crate::chart`]. The UI thread never calls tch or blocks on I/O: commands go to the run manager,
//! queries to the `ui-data` thread, and both answer over bounded channels that the app drains
//! under a time budget in [`eframe::App::logic`].
//!
//! Its floors, bottom first; each imports only from the ones below it (tests/e2e/layering.rs):
//! - [`data`]: the `ui-data` thread and its queries ([`data::backend`]), the cache the views
//!   read ([`data::cache`]), the runs filter, and the searches and studies started here;
//! - [`widgets`]: plots, the Save dialog, Markdown, a job's progress line: any view may use them;
//! - [`settings`]: what the views persist between sessions;
//! - [`ctx`]: what a view gets each frame ([`ViewCtx`]); [`shortcuts`]: the keyboard;
//! - [`views`]: one file (or folder) per view, none importing another;
//! - `app`: the shell that lays the views out and drains the channels.

mod app;
pub mod ctx;
pub mod data;
pub mod settings;
pub mod shortcuts;
pub mod views;
pub mod widgets;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shiftadd_core::run::Event;
use shiftadd_core::store::StoreError;

use data::backend::{self, Backend};
use data::searches;

pub use app::StudioApp;
pub use ctx::{ExitChoice, Persisted, View, ViewCtx};

/// Open the app on `db` (creating it if needed) and return when the window closes and any
/// runs left training headless have ended.
pub fn run(db: &Path) -> anyhow::Result<ExitCode> {
    let slot: Arc<OnceLock<egui::Context>> = Arc::new(OnceLock::new());
    // A file that is not a database at all (or not ours, or from a newer version) is refused
    // before any window, in one of its own: that check reads the header only. Checking a large
    // database's pages and migrating it happen behind the window ([`data::opening`]).
    // (A new file is created by the writer; an older schema is migrated by it.)
    match shiftadd_core::store::Reader::open(db) {
        Ok(_) | Err(StoreError::NotMigrated { .. }) => {}
        Err(_) if !db.exists() => {}
        Err(e) => {
            // A user who opened the app from a desktop sees no terminal: say it in a window too.
            let message = e.to_string();
            let _ = show_open_failed(db, &message);
            return Err(e.into());
        }
    }
    let opening = data::opening::open_in_background(db, backend::lazy_waker(slot.clone()))?;
    let exit_choice = Arc::new(Mutex::new(None));
    let experiments = experiments_dir();
    shiftadd_core::host::set_experiments_dir(&experiments);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ShiftAdd Studio")
            .with_inner_size([1500.0, 920.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    let (commands, events, state) = (
        opening.commands.clone(),
        opening.events.clone(),
        opening.state.clone(),
    );
    let app_exit = exit_choice.clone();
    let db_for_app = db.to_path_buf();
    let searches_slot: Arc<OnceLock<Arc<Mutex<searches::Searches>>>> = Arc::new(OnceLock::new());
    let app_searches = searches_slot.clone();
    eframe::run_native(
        "ShiftAdd Studio",
        options,
        Box::new(move |cc| {
            let _ = slot.set(cc.egui_ctx.clone());
            let mut backend =
                Backend::new(&db_for_app, experiments, commands, events, &cc.egui_ctx)?;
            backend.opening = state;
            let _ = app_searches.set(backend.searches.clone());
            let persisted = StudioApp::restore(cc.storage);
            Ok(Box::new(StudioApp::new(backend, persisted, app_exit)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))?;
    let choice = exit_choice.lock().ok().and_then(|c| *c);
    if let Some(s) = searches_slot.get()
        && let Ok(mut s) = s.lock()
        && let Some(what) = s.running_text()
    {
        if choice == Some(ExitChoice::LeaveRunning) {
            eprintln!("window closed; {what} keep running headless");
        } else {
            s.stop_all();
        }
        s.wait_all();
    }
    match opening.finish() {
        Some(manager) => finish_headless(manager, db, choice),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// A small window saying why the database could not be opened (damaged, not ours, locked, …),
/// with what to do; it closes with Quit. Nothing was changed on disk.
fn show_open_failed(db: &Path, message: &str) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ShiftAdd Studio: cannot open the database")
            .with_inner_size([720.0, 260.0]),
        ..Default::default()
    };
    let (db, message) = (db.to_path_buf(), message.to_owned());
    eframe::run_ui_native("ShiftAdd Studio", options, move |ui, _| {
        egui::CentralPanel::default().show(ui, |ui| open_failed_ui(ui, &db, &message));
    })
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The body of [`show_open_failed`]: the database, the error (selectable, so the `.recover`
/// command can be copied) and Quit.
pub fn open_failed_ui(ui: &mut egui::Ui, db: &Path, message: &str) {
    ui.heading("The database could not be opened");
    ui.label(format!("Database: {}", db.display()));
    ui.add_space(8.0);
    ui.add(egui::Label::new(egui::RichText::new(message).monospace()).selectable(true));
    ui.add_space(8.0);
    ui.label("Open another database with `shiftadd gui --db FILE`.");
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        if ui.button("Copy the message").clicked() {
            ui.ctx().copy_text(message.to_owned());
        }
        if ui.button("Quit").clicked() {
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
    });
}

/// After the window: stop the runs, or follow them to the end on the terminal.
pub fn finish_headless(
    manager: shiftadd_core::run::ManagerHandle,
    db: &Path,
    choice: Option<ExitChoice>,
) -> anyhow::Result<ExitCode> {
    if choice == Some(ExitChoice::LeaveRunning) && manager.busy() > 0 {
        eprintln!(
            "window closed; {} run(s) keep training headless (database {}). Ctrl-C interrupts them; `shiftadd resume ID` continues.",
            manager.busy(),
            db.display()
        );
        while manager.busy() > 0 {
            match manager.events.recv_timeout(Duration::from_millis(500)) {
                Ok(Event::EpochEnded {
                    run,
                    epoch,
                    val_score,
                    val_top5,
                }) => {
                    let metric = if val_top5.is_some() { "top-1" } else { "mIoU" };
                    eprintln!(
                        "run {run}: epoch {epoch}: val {metric} {:.2} %",
                        val_score * 100.0
                    );
                }
                Ok(Event::Finished {
                    run,
                    val_score,
                    test_score,
                }) => {
                    let test =
                        test_score.map_or(String::new(), |t| format!(", test {:.2} %", t * 100.0));
                    eprintln!(
                        "run {run} finished: val {:.2} %{test} (top-1; mIoU for segmentation)",
                        val_score * 100.0
                    );
                }
                Ok(Event::Failed { run, reason }) => eprintln!("run {run} failed: {reason}"),
                Ok(Event::Stopped { run }) => eprintln!("run {run} stopped"),
                _ => {}
            }
        }
    }
    // Shutdown stops whatever still trains after its current batch; the writer flushes.
    manager.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// The preset folder: `./experiments` when the app starts in a checkout, else the one it was
/// built from.
pub fn experiments_dir() -> PathBuf {
    let here = PathBuf::from("experiments");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}
