//! The parallel-coordinates plot: an axis per [`Coords`] axis, a line per cell in its group's
//! colour; drag along an axis to brush a range (lines outside every brush fade), click an axis to
//! clear its brush, hover near a line for its cell.

use std::collections::BTreeMap;

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, Ui, vec2};

use crate::chart::parallel::{Coords, Scale};

/// What a brush drag is doing: the axis and where it began (0 bottom, 1 top).
#[derive(Clone, Copy, Debug)]
struct Drag {
    axis: usize,
    from: f64,
}

/// Draw `coords` (lines labelled `labels`, coloured by `color(group)`) `height` points tall; the
/// brushes live in egui's memory under `id`. Returns which lines every brush keeps.
pub fn parallel_plot(
    ui: &mut Ui,
    id: &str,
    coords: &Coords,
    labels: &[String],
    color: impl Fn(usize) -> Color32,
    height: f32,
) -> Vec<bool> {
    let n = coords.axes.len();
    let (rect, response) =
        ui.allocate_exact_size(vec2(ui.available_width(), height), Sense::click_and_drag());
    let brush_id = ui.scope_id().with(id).with("brushes");
    let drag_id = ui.scope_id().with(id).with("drag");
    let mut brushes: BTreeMap<usize, (f64, f64)> =
        ui.data(|d| d.get_temp(brush_id)).unwrap_or_default();
    brushes.retain(|&a, _| a < n);
    if n < 2 {
        ui.painter().text(
            rect.center(),
            Align2::CENTER_CENTER,
            "nothing to draw yet: the cells differ in no key, or have no finished value",
            FontId::proportional(13.0),
            ui.visuals().weak_text_color(),
        );
        return vec![true; coords.lines.len()];
    }
    // Room above for the axis names (two staggered rows), beside for the values.
    let area = Rect::from_min_max(rect.min + vec2(56.0, 44.0), rect.max - vec2(24.0, 14.0));
    let x_of = |i: usize| area.left() + area.width() * i as f32 / (n - 1) as f32;
    let y_of = |t: f64| area.bottom() - area.height() * t as f32;
    let t_of = |y: f32| f64::from(((area.bottom() - y) / area.height()).clamp(0.0, 1.0));
    let axis_near = |p: Pos2| {
        (0..n)
            .min_by(|&a, &b| (x_of(a) - p.x).abs().total_cmp(&(x_of(b) - p.x).abs()))
            .filter(|&a| (x_of(a) - p.x).abs() <= 16.0)
    };
    // Brushing: a drag along an axis sets its range, a click on it clears it.
    if response.drag_started()
        && let Some(p) = response.interact_pointer_pos()
        && let Some(axis) = axis_near(p)
    {
        ui.data_mut(|d| d.insert_temp(drag_id, (axis, t_of(p.y))));
    }
    let drag: Option<Drag> = ui
        .data(|d| d.get_temp::<(usize, f64)>(drag_id))
        .map(|(axis, from)| Drag { axis, from });
    if let (Some(d), Some(p)) = (drag, response.interact_pointer_pos())
        && response.dragged()
    {
        let to = t_of(p.y);
        brushes.insert(d.axis, (d.from.min(to), d.from.max(to)));
    }
    if response.drag_stopped() {
        ui.data_mut(|d| d.remove::<(usize, f64)>(drag_id));
    }
    if response.clicked()
        && let Some(axis) = response.interact_pointer_pos().and_then(axis_near)
    {
        brushes.remove(&axis);
    }
    let kept = coords.kept(&brushes);
    let painter = ui.painter_at(rect);
    let weak = ui.visuals().weak_text_color();
    let text = ui.visuals().text_color();
    // Lines: the faded first, the kept over them.
    let faded = Color32::from_gray(110).gamma_multiply(0.25);
    let line_points = |at: &[Option<f64>]| -> Vec<Vec<Pos2>> {
        let mut runs = vec![Vec::new()];
        for (i, t) in at.iter().enumerate() {
            match t {
                Some(t) => runs
                    .last_mut()
                    .map_or((), |r| r.push(Pos2::new(x_of(i), y_of(*t)))),
                None => runs.push(Vec::new()),
            }
        }
        runs.into_iter().filter(|r| r.len() > 1).collect()
    };
    for pass in [false, true] {
        for ((group, at), keep) in coords.lines.iter().zip(&kept) {
            if *keep != pass {
                continue;
            }
            let stroke = if pass {
                Stroke::new(1.6, color(*group).gamma_multiply(0.85))
            } else {
                Stroke::new(1.0, faded)
            };
            for run in line_points(at) {
                painter.add(egui::Shape::line(run, stroke));
            }
        }
    }
    // Axes, their names, their ends (or categories), and the brushes.
    let font = FontId::proportional(12.0);
    let spacing = area.width() / (n - 1) as f32;
    for (i, axis) in coords.axes.iter().enumerate() {
        let x = x_of(i);
        painter.line_segment(
            [Pos2::new(x, area.top()), Pos2::new(x, area.bottom())],
            Stroke::new(1.0, text.gamma_multiply(0.7)),
        );
        // Names alternate between two rows: each has twice the axes' spacing.
        let room = if i == 0 || i == n - 1 {
            spacing
        } else {
            2.0 * spacing - 8.0
        };
        let name = fit(&painter, &axis.name, room, &font);
        // The end axes' names run inwards, not past the plot's edges.
        let align = match i {
            0 => Align2::LEFT_TOP,
            i if i == n - 1 => Align2::RIGHT_TOP,
            _ => Align2::CENTER_TOP,
        };
        let x_name = match i {
            0 => rect.left() + 2.0,
            i if i == n - 1 => rect.right() - 2.0,
            _ => x,
        };
        painter.text(
            Pos2::new(x_name, rect.top() + 2.0 + 16.0 * (i % 2) as f32),
            align,
            name,
            font.clone(),
            if axis.metric { text } else { weak },
        );
        match &axis.scale {
            Scale::Categories(c) => {
                for (j, v) in c.iter().enumerate() {
                    let t = if c.len() > 1 {
                        j as f64 / (c.len() - 1) as f64
                    } else {
                        0.5
                    };
                    painter.text(
                        Pos2::new(x - 4.0, y_of(t)),
                        Align2::RIGHT_CENTER,
                        fit(&painter, v.trim_matches('"'), spacing * 0.9 - 6.0, &font),
                        FontId::proportional(11.0),
                        weak,
                    );
                }
            }
            Scale::Numeric { .. } => {
                for t in [0.0, 1.0] {
                    painter.text(
                        Pos2::new(x - 4.0, y_of(t)),
                        Align2::RIGHT_CENTER,
                        fit(&painter, &axis.value_at(t), spacing * 0.9 - 6.0, &font),
                        FontId::proportional(11.0),
                        weak,
                    );
                }
            }
        }
        if let Some(&(lo, hi)) = brushes.get(&i) {
            let r = Rect::from_min_max(Pos2::new(x - 6.0, y_of(hi)), Pos2::new(x + 6.0, y_of(lo)));
            painter.rect_filled(r, 2.0, ui.visuals().selection.bg_fill.gamma_multiply(0.6));
            painter.text(
                Pos2::new(x + 8.0, r.top()),
                Align2::LEFT_TOP,
                format!("{} – {}", axis.value_at(lo), axis.value_at(hi)),
                FontId::proportional(11.0),
                text,
            );
        }
    }
    // Hover: the nearest line's cell.
    if let Some(p) = response.hover_pos()
        && let Some(j) = nearest_line(coords, &kept, p, &x_of, &y_of)
    {
        let label = labels.get(j).cloned().unwrap_or_default();
        response.on_hover_text_at_pointer(label);
    }
    ui.data_mut(|d| d.insert_temp(brush_id, brushes));
    kept
}

/// The line nearest to `p` (within 8 points), preferring kept ones.
fn nearest_line(
    coords: &Coords,
    kept: &[bool],
    p: Pos2,
    x_of: &dyn Fn(usize) -> f32,
    y_of: &dyn Fn(f64) -> f32,
) -> Option<usize> {
    let n = coords.axes.len();
    let seg = (0..n - 1).find(|&i| p.x >= x_of(i) && p.x <= x_of(i + 1))?;
    let (x0, x1) = (x_of(seg), x_of(seg + 1));
    let u = (p.x - x0) / (x1 - x0);
    coords
        .lines
        .iter()
        .enumerate()
        .filter_map(|(j, (_, at))| {
            let (a, b) = (at[seg]?, at[seg + 1]?);
            let y = y_of(a) + u * (y_of(b) - y_of(a));
            let d = (y - p.y).abs() + if kept[j] { 0.0 } else { 4.0 };
            (d <= 8.0).then_some((j, d))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(j, _)| j)
}

/// `text` cut with "…" to fit `width`.
fn fit(painter: &egui::Painter, text: &str, width: f32, font: &FontId) -> String {
    let w = |t: &str| {
        painter
            .layout_no_wrap(t.to_owned(), font.clone(), Color32::WHITE)
            .size()
            .x
    };
    if w(text) <= width {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .rev()
        .map(|k| format!("{}…", chars[..k].iter().collect::<String>()))
        .find(|t| w(t) <= width)
        .unwrap_or_else(|| "…".into())
}
