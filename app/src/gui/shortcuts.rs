//! Keyboard shortcuts (listed in the F1 overlay) and desktop notifications.
//!
//! Shortcuts: Ctrl+1…7 switch views, Ctrl+Shift+P pauses or resumes the current run,
//! Ctrl+Shift+S stops it, F1 shows them all. A notification (through the desktop's
//! `notify-send`, where there is one) says when a run finishes or fails while the window is
//! in the background.

use egui::{Key, KeyboardShortcut, Modifiers};
use shiftadd_core::run::Event;

use crate::gui::ctx::View;
use crate::gui::data::cache::DataCache;

/// What a shortcut asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View(View),
    PauseResume,
    Stop,
    Help,
}

const VIEW_KEYS: [Key; 7] = [
    Key::Num1,
    Key::Num2,
    Key::Num3,
    Key::Num4,
    Key::Num5,
    Key::Num6,
    Key::Num7,
];

pub const PAUSE: KeyboardShortcut =
    KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::P);
pub const STOP: KeyboardShortcut =
    KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::S);
pub const HELP: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::F1);

/// The shortcuts pressed this frame (consumed, so no text field also sees them).
pub fn read(ctx: &egui::Context) -> Vec<Action> {
    ctx.input_mut(|i| {
        let mut out = Vec::new();
        for (v, key) in View::ALL.into_iter().zip(VIEW_KEYS) {
            if i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, key)) {
                out.push(Action::View(v));
            }
        }
        if i.consume_shortcut(&PAUSE) {
            out.push(Action::PauseResume);
        }
        if i.consume_shortcut(&STOP) {
            out.push(Action::Stop);
        }
        if i.consume_shortcut(&HELP) {
            out.push(Action::Help);
        }
        out
    })
}

/// The overlay listing every shortcut.
pub fn help_window(ctx: &egui::Context, open: &mut bool) {
    egui::Window::new("Keyboard shortcuts")
        .open(open)
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
        .show(ctx, |ui| {
            egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                for (i, v) in View::ALL.into_iter().enumerate() {
                    ui.monospace(format!("Ctrl+{}", i + 1));
                    ui.label(format!("{} view", v.title()));
                    ui.end_row();
                }
                for (s, what) in [
                    (PAUSE, "pause / resume the current run"),
                    (STOP, "stop the current run (it stays resumable)"),
                    (HELP, "this overlay"),
                ] {
                    ui.monospace(ctx.format_shortcut(&s));
                    ui.label(what);
                    ui.end_row();
                }
                ui.monospace("shift-click");
                ui.label("tick a range of runs");
                ui.end_row();
                ui.monospace("right-click a run");
                ui.label("stop, resume, rename, tags, notes, archive, delete");
                ui.end_row();
            });
        });
}

/// Tell the desktop that a run ended (the window is in the background).
pub fn notify_event(e: &Event, data: &DataCache) {
    let name = |run| {
        data.row(run).map_or_else(
            || format!("run {run}"),
            |r| format!("run {run} `{}`", r.summary.name),
        )
    };
    let (title, body) = match e {
        Event::Finished { run, .. } => ("Run finished", name(*run)),
        Event::Failed { run, reason } => ("Run failed", format!("{}: {reason}", name(*run))),
        _ => return,
    };
    notify(title, &body);
}

/// A desktop notification through `notify-send` (freedesktop); nothing where there is none.
pub fn notify(title: &str, body: &str) {
    let spawned = std::process::Command::new("notify-send")
        .args(["--app-name=ShiftAdd Studio", title, body])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reap it off the UI thread (a reaper that cannot start leaves a zombie until exit).
        let _ = std::thread::Builder::new()
            .name("notify-reaper".into())
            .spawn(move || child.wait());
    }
}
