//! A small Markdown renderer for run notes: `#` headings, `-` / `*` / `1.` lists, `**bold**`,
//! `*italic*`, `` `code` ``, paragraphs. Anything else shows as written.

use egui::text::LayoutJob;
use egui::{FontId, TextFormat, Ui};

/// Draw `text` as Markdown.
pub fn show(ui: &mut Ui, text: &str) {
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            ui.add_space(4.0);
            continue;
        }
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            let size = [20.0, 17.0, 15.0, 14.0, 14.0, 14.0][hashes - 1];
            ui.label(
                egui::RichText::new(trimmed[hashes..].trim())
                    .strong()
                    .size(size),
            );
            continue;
        }
        let (bullet, rest) =
            if let Some(r) = trimmed.strip_prefix("- ").or(trimmed.strip_prefix("* ")) {
                ("•  ".to_owned(), r)
            } else if let Some((n, r)) = trimmed
                .split_once(". ")
                .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            {
                (format!("{n}.  "), r)
            } else {
                (String::new(), trimmed)
            };
        let indent = (line.len() - trimmed.len()) as f32 * 4.0;
        ui.horizontal_wrapped(|ui| {
            ui.add_space(indent);
            ui.label(inline(ui, &format!("{bullet}{rest}")));
        });
    }
}

/// One line of inline Markdown — `` `code` ``, `**bold**`, `*italic*` — as a label, in `color`
/// (the text colour when `None`): messages from the core name keys and files in backticks, and a
/// status line, a dialog or a tooltip shows them styled, never the markers.
pub fn label(ui: &mut Ui, text: &str, color: Option<egui::Color32>) -> egui::Response {
    let job = job(ui, text, color);
    ui.label(job)
}

/// One line of inline Markdown laid out for a label of one's own (e.g. one that truncates).
pub fn job(ui: &Ui, text: &str, color: Option<egui::Color32>) -> LayoutJob {
    inline_in(ui, text, color.unwrap_or_else(|| ui.visuals().text_color()))
}

/// `response`'s tooltip as Markdown (see [`show`]).
pub fn hover(response: egui::Response, text: &str) -> egui::Response {
    response.on_hover_ui(|ui| show(ui, text))
}

/// The spans of one line: bold, italic and code marked, the markers removed. A marker opens a
/// style only where the line closes it again (`val/*` or a lone backtick stay as written).
pub fn spans(text: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<(String, bool, bool, bool)> = Vec::new();
    let (mut bold, mut italic, mut code) = (false, false, false);
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, b, i, c, out: &mut Vec<(String, bool, bool, bool)>| {
        if !cur.is_empty() {
            out.push((std::mem::take(cur), b, i, c));
        }
    };
    // Whether `marker` occurs again after the current position (a style it opens is closed).
    let closes = |rest: &std::iter::Peekable<std::str::Chars<'_>>, marker: &str| {
        rest.clone().collect::<String>().contains(marker)
    };
    // An emphasis opens only before a non-space (`2 * 3` and `val/* x` stay as written).
    let opens = |rest: &std::iter::Peekable<std::str::Chars<'_>>| {
        rest.clone().next().is_some_and(|c| !c.is_whitespace())
    };
    while let Some(ch) = chars.next() {
        match ch {
            '`' if code || closes(&chars, "`") => {
                flush(&mut cur, bold, italic, code, &mut out);
                code = !code;
            }
            '*' if !code
                && chars.peek() == Some(&'*')
                && (bold || {
                    let mut after = chars.clone();
                    after.next();
                    opens(&after) && closes(&after, "**")
                }) =>
            {
                chars.next();
                flush(&mut cur, bold, italic, code, &mut out);
                bold = !bold;
            }
            '*' if !code
                && chars.peek() != Some(&'*')
                && (italic || opens(&chars) && closes(&chars, "*")) =>
            {
                flush(&mut cur, bold, italic, code, &mut out);
                italic = !italic;
            }
            c => cur.push(c),
        }
    }
    flush(&mut cur, bold, italic, code, &mut out);
    out
}

fn inline(ui: &Ui, text: &str) -> LayoutJob {
    inline_in(ui, text, ui.visuals().text_color())
}

fn inline_in(ui: &Ui, text: &str, normal: egui::Color32) -> LayoutJob {
    let mut job = LayoutJob::default();
    let body = egui::TextStyle::Body.resolve(ui.style());
    let mono = FontId::monospace(body.size);
    let strong = ui.visuals().strong_text_color();
    for (s, bold, italic, code) in spans(text) {
        job.append(
            &s,
            0.0,
            TextFormat {
                font_id: if code { mono.clone() } else { body.clone() },
                color: if bold { strong } else { normal },
                italics: italic,
                background: if code {
                    ui.visuals().code_bg_color
                } else {
                    egui::Color32::TRANSPARENT
                },
                ..TextFormat::default()
            },
        );
    }
    job
}

#[cfg(test)]
mod tests {
    use super::spans;

    #[test]
    fn inline_markers_become_styles() {
        assert_eq!(
            spans("a **b** *c* `d*e`"),
            vec![
                ("a ".into(), false, false, false),
                ("b".into(), true, false, false),
                (" ".into(), false, false, false),
                ("c".into(), false, true, false),
                (" ".into(), false, false, false),
                ("d*e".into(), false, false, true),
            ]
        );
    }

    #[test]
    fn a_marker_never_closed_stays_as_written() {
        let plain = |s: &str| vec![(s.to_owned(), false, false, false)];
        assert_eq!(spans("keys under `train.*"), plain("keys under `train.*"));
        assert_eq!(spans("val/* and 2*3"), plain("val/* and 2*3"));
        assert_eq!(spans("a ** b"), plain("a ** b"));
        assert_eq!(
            spans("run 3 (`x`) is running"),
            vec![
                ("run 3 (".into(), false, false, false),
                ("x".into(), false, false, true),
                (") is running".into(), false, false, false),
            ]
        );
    }
}
