//! A search's or study's line in its view: progress and a Stop button while it runs, then how
//! it ended.

use crate::gui::data::searches::Job;

/// One job's line in its view: progress and a Stop button while it runs, then how it ended.
pub fn job_ui<T>(
    ui: &mut egui::Ui,
    job: &Job<T>,
    (stop, hover): (&str, &str),
    done: impl Fn(&T) -> String,
) {
    ui.horizontal(|ui| match &job.outcome {
        None => {
            // The button comes first: after the progress line, it would move whenever the line
            // changes, and a click aimed at it could land where it no longer is.
            if ui.button(stop).on_hover_text(hover).clicked() {
                job.stop();
            }
            ui.spinner();
            ui.label(format!("{}: {}", job.name, job.last));
        }
        Some(Ok(o)) => {
            ui.label(format!("{}: {}", job.name, done(o)));
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().warn_fg_color, format!("{}: {e}", job.name));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui::accesskit::{Rect, Role};

    /// One frame of `job_ui` with `events`; the Stop button's bounds in it.
    fn frame(ctx: &egui::Context, job: &Job<()>, events: Vec<egui::Event>) -> Rect {
        let input = egui::RawInput {
            events,
            ..Default::default()
        };
        let mut out = ctx.run_ui(input, |ui| {
            job_ui(ui, job, ("Stop study", "stop it"), |()| String::new());
        });
        out.textures_delta.clear(); // no renderer here
        let update = out
            .platform_output
            .accesskit_update
            .expect("accesskit is on");
        update
            .nodes
            .iter()
            .find(|(_, n)| n.role() == Role::Button && n.label() == Some("Stop study"))
            .and_then(|(_, n)| n.bounds())
            .expect("a Stop button")
    }

    /// A click aimed at Stop from one frame lands on it in the next, even when the progress line
    /// changed in between (it changes whenever the job reports; the e2e test once missed).
    #[test]
    fn stop_stays_where_it_was_while_the_progress_line_changes() {
        let ctx = egui::Context::default();
        ctx.enable_accesskit();
        let mut job: Job<()> = Job::running_for_test("starting", false);
        let _ = frame(&ctx, &job, Vec::new());
        let aimed = frame(&ctx, &job, Vec::new());
        job.last =
            "study 2: 15 cells, 6 to train, 9 done; resuming run 22 (shift-aug / seed 0)".into();
        let pos = egui::pos2(
            ((aimed.x0 + aimed.x1) / 2.0) as f32,
            ((aimed.y0 + aimed.y1) / 2.0) as f32,
        );
        let press = |pressed| egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::default(),
        };
        let now = frame(
            &ctx,
            &job,
            vec![egui::Event::PointerMoved(pos), press(true), press(false)],
        );
        assert_eq!(now, aimed, "the button moved with the line");
        assert!(job.stop_requested(), "the click stopped the job");
    }
}
