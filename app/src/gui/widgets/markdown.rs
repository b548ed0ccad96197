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

/// The spans of one line: bold, italic and code marked, the markers removed.
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
    while let Some(ch) = chars.next() {
        match ch {
            '`' => {
                flush(&mut cur, bold, italic, code, &mut out);
                code = !code;
            }
            '*' if !code && chars.peek() == Some(&'*') => {
                chars.next();
                flush(&mut cur, bold, italic, code, &mut out);
                bold = !bold;
            }
            '*' if !code => {
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
    let mut job = LayoutJob::default();
    let body = egui::TextStyle::Body.resolve(ui.style());
    let mono = FontId::monospace(body.size);
    let strong = ui.visuals().strong_text_color();
    let normal = ui.visuals().text_color();
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
}
