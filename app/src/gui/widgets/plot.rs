//! Plot helpers shared by the views (the curves themselves, their smoothing and formatting are
//! `chart/`'s): draw-time decimation, the Pareto front, readable ticks (1-2-5 steps, log axes labelled with their values), a legend beside
//! the data, and the series plot widget: per-plot x axis (step, epoch, wall time, relative
//! time) and log-x / log-y, a hover listing every curve at that x, CSV / PNG / SVG export.
//!
//! Order matters: a series is smoothed at full resolution, then decimated for the pixels it
//! covers. Smoothing a decimated series would change with the zoom level.

use egui::{Color32, Ui};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use egui_plot::{FilledArea, GridInput, GridMark, Line, Plot, PlotBounds, PlotTransform, Points};

use super::export::{Export, ExportRequest};
use crate::chart::bands::Group;
use crate::chart::format::color;
use crate::chart::format::{csv_field, format_log, format_num};
use crate::chart::series::{PlotAxes, Series, XAxis, ema_debiased};
use crate::chart::svg::{self, Chart, ChartSeries, Mark};

/// `plot` (with id `id`) with readable ticks on both axes: 1-2-5 steps, a label about every 70 px
/// along x and 28 px along y, numbers as [`format_num`] writes them; y values are labelled times
/// `y_scale` with `y_unit` appended (a fraction plotted as is, read in %: 100, " %"), so no point
/// is copied to change its unit. `quantities` says which axes hold quantities that cannot be
/// negative ([`TickLog`]).
pub fn readable_ticks<'a>(
    plot: Plot<'a>,
    ctx: &egui::Context,
    id: &str,
    quantities: [bool; 2],
    y_scale: f64,
    y_unit: &'static str,
) -> Plot<'a> {
    plot.x_grid_spacer(|g| nice_grid(&g, 70.0))
        .y_grid_spacer(|g| nice_grid(&g, 28.0))
        .x_axis_formatter(logged(ctx, id, 0, quantities[0], |m, _| {
            format_num(m.value, m.step_size)
        }))
        .y_axis_formatter(logged(ctx, id, 1, quantities[1], move |m, _| {
            format!(
                "{}{y_unit}",
                format_num(m.value * y_scale, m.step_size * y_scale)
            )
        }))
}

/// The tick labels every plot wrote in its last frame, by plot id and axis (0: x, 1: y), with
/// whether the axis holds a quantity that cannot be negative — so that a test can check every
/// plot of a view: no label repeated on an axis, none negative where nothing can be.
#[derive(Clone, Default)]
pub struct TickLog(Arc<Mutex<HashMap<(String, usize), AxisTicks>>>);

/// One axis' labels in one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AxisTicks {
    pub labels: Vec<String>,
    pub quantity: bool,
    pass: u64,
}

impl TickLog {
    fn of(ctx: &egui::Context) -> Self {
        ctx.data_mut(|d| {
            d.get_temp_mut_or_default::<Self>(egui::Id::NULL.with("tick-log"))
                .clone()
        })
    }

    /// Every axis' labels of the last frame each plot was drawn in.
    pub fn read(ctx: &egui::Context) -> Vec<(String, usize, AxisTicks)> {
        let log = Self::of(ctx);
        let Ok(map) = log.0.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = map
            .iter()
            .map(|((id, axis), t)| (id.clone(), *axis, t.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Forget every plot's labels (a test's next frames log afresh).
    pub fn clear(ctx: &egui::Context) {
        if let Ok(mut map) = Self::of(ctx).0.lock() {
            map.clear();
        }
    }
}

/// `fmt` as plot `id`'s formatter of `axis` (0: x, 1: y), each label it writes noted in the
/// [`TickLog`] (an axis' labels start afresh every frame).
pub fn logged<'a>(
    ctx: &egui::Context,
    id: &str,
    axis: usize,
    quantity: bool,
    fmt: impl Fn(GridMark, &std::ops::RangeInclusive<f64>) -> String + 'a,
) -> impl Fn(GridMark, &std::ops::RangeInclusive<f64>) -> String + 'a {
    let (log, key, ctx) = (TickLog::of(ctx), (id.to_owned(), axis), ctx.clone());
    move |m, r| {
        let label = fmt(m, r);
        if !label.is_empty()
            && let Ok(mut map) = log.0.lock()
        {
            let pass = ctx.cumulative_pass_nr();
            let t = map.entry(key.clone()).or_default();
            if t.pass != pass {
                t.labels.clear();
                t.pass = pass;
            }
            t.quantity = quantity;
            t.labels.push(label.clone());
        }
        label
    }
}

/// Grid marks at 1-2-5 steps with a labelled tick about every `label_px` pixels (egui_plot's
/// default steps by powers of ten, which leaves a short axis with a single label).
pub fn nice_grid(input: &GridInput, label_px: f64) -> Vec<GridMark> {
    // `base_step_size` is the value spanned by the plot's minimum grid spacing (8 px).
    let per_px = input.base_step_size / 8.0;
    let coarse = svg::nice_step(per_px * label_px, 1.0);
    let mantissa = coarse / 10f64.powf(coarse.log10().floor());
    let fine = coarse
        / if (mantissa - 2.0).abs() < 1e-9 {
            4.0
        } else {
            5.0
        };
    let (lo, hi) = input.bounds;
    svg::ticks(lo, hi, fine)
        .into_iter()
        .map(|value| {
            let on = |s: f64| ((value / s).round() * s - value).abs() < s * 1e-6;
            let step_size = if on(coarse * 10.0) {
                coarse * 10.0
            } else if on(coarse) {
                coarse
            } else {
                fine
            };
            GridMark { value, step_size }
        })
        .collect()
}

/// `marks` at multiples of `unit` only, none finer than it (`unit` 0: all of them).
pub fn whole_marks(marks: Vec<GridMark>, unit: f64) -> Vec<GridMark> {
    if unit <= 0.0 {
        return marks;
    }
    marks
        .into_iter()
        .filter(|m| ((m.value / unit).round() * unit - m.value).abs() < unit * 1e-6)
        .map(|m| GridMark {
            step_size: m.step_size.max(unit),
            ..m
        })
        .collect()
}

/// One grid mark per whole value in view — the slots of a chart of named bars — each marked as
/// spanning `span` slots, which is the room egui_plot gives its label (a label wider than its
/// mark's spacing is not drawn). With [`staggered`] names, `span` 2 labels every slot.
pub fn slot_marks(input: &GridInput, span: f64) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    (lo.ceil() as i64..=hi.floor() as i64)
        .map(|i| GridMark {
            value: i as f64,
            step_size: span,
        })
        .collect()
}

/// Slot `i`'s name on the axis' first line (even `i`) or second (odd), so that each name may be
/// two slots wide without running into its neighbours'.
pub fn staggered(i: usize, name: &str) -> String {
    if i % 2 == 1 {
        format!("\n{name}")
    } else {
        name.to_owned()
    }
}

/// Log axes: ticks at whole decades when the range spans several, else the 1-2-5 marks.
pub fn log_grid(input: &GridInput, label_px: f64) -> Vec<GridMark> {
    let marks = nice_grid(input, label_px);
    if marks.iter().any(|m| m.step_size >= 1.0) {
        marks
            .into_iter()
            .filter(|m| (m.value - m.value.round()).abs() < 1e-9)
            .map(|m| GridMark {
                value: m.value,
                step_size: m.step_size.max(1.0),
            })
            .collect()
    } else {
        marks
    }
}

/// Reduce the points with `x` in `[x_min, x_max]` to at most two per bucket (the minimum and
/// maximum y of each of `buckets` equal x-intervals, in x order), plus the nearest point outside
/// on each side so lines run to the edge. Series shorter than `2 * buckets` come back unchanged.
pub fn decimate(xs: &[f64], ys: &[f64], x_min: f64, x_max: f64, buckets: usize) -> Vec<[f64; 2]> {
    let n = xs.len().min(ys.len());
    let lo = xs[..n].partition_point(|&x| x < x_min).saturating_sub(1);
    let hi = (xs[..n].partition_point(|&x| x <= x_max) + 1).min(n);
    if lo >= hi {
        return Vec::new();
    }
    let (xs, ys) = (&xs[lo..hi], &ys[lo..hi]);
    // An open range (the whole series) buckets the data's own extent.
    let (x_min, x_max) = (x_min.max(xs[0]), x_max.min(xs[xs.len() - 1]));
    if xs.len() <= 2 * buckets.max(1) || x_max <= x_min {
        return xs.iter().zip(ys).map(|(&x, &y)| [x, y]).collect();
    }
    let width = (x_max - x_min) / buckets as f64;
    let mut out = Vec::with_capacity(2 * buckets + 2);
    let mut start = 0;
    for b in 1..=buckets {
        // Bucket b holds x < x_min + b·width (the last one everything left); its end is found by
        // binary search, so the inner loop is a plain min/max scan.
        let end = if b == buckets {
            xs.len()
        } else {
            let edge = x_min + width * b as f64;
            start + xs[start..].partition_point(|&x| x < edge)
        };
        if end > start {
            let (imin, imax) = min_max_index(&ys[start..end]);
            let (a, c) = (start + imin.min(imax), start + imin.max(imax));
            out.push([xs[a], ys[a]]);
            if c != a {
                out.push([xs[c], ys[c]]);
            }
        }
        start = end;
    }
    out
}

/// Indices of the smallest and largest value (NaNs lose to any number).
fn min_max_index(ys: &[f64]) -> (usize, usize) {
    let (mut imin, mut imax) = (0, 0);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, &y) in ys.iter().enumerate() {
        if y < lo {
            lo = y;
            imin = i;
        }
        if y > hi {
            hi = y;
            imax = i;
        }
    }
    (imin, imax)
}

pub use shiftadd_core::nas::pareto_front;

/// A curve as the user configured it for display.
pub struct Curve<'a> {
    pub name: String,
    pub series: &'a Series,
    pub color: Color32,
}

/// Display options of a series plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotStyle {
    /// Debiased-EMA weight; 0 = raw.
    pub smoothing: f64,
    /// Plot log10(y) (non-positive values are dropped); each plot can also switch it on.
    pub log_y: bool,
    /// Link the x axis of every plot that shares this group id.
    pub link_x: Option<egui::Id>,
    pub height: f32,
    /// The values are fractions shown as percent (accuracy): ×100 on the axis and in the hover.
    pub percent: bool,
}

impl Default for PlotStyle {
    fn default() -> Self {
        Self {
            smoothing: 0.0,
            log_y: false,
            link_x: None,
            height: 200.0,
            percent: false,
        }
    }
}

/// Series shorter than this are drawn raw: an EMA over a handful of per-epoch points lags far
/// behind them.
pub const MIN_POINTS_TO_SMOOTH: usize = 20;

/// The per-plot axes of plot `id` (kept between starts).
pub fn plot_axes(ctx: &egui::Context, id: &str) -> PlotAxes {
    ctx.data_mut(|d| *d.get_persisted_mut_or_default::<PlotAxes>(axes_id(id)))
}

fn axes_id(id: &str) -> egui::Id {
    egui::Id::unique(("plot-axes", id))
}

/// Change the axes of plot `id` (what its header's controls do).
pub fn set_plot_axes(ctx: &egui::Context, id: &str, axes: PlotAxes) {
    ctx.data_mut(|d| d.insert_persisted(axes_id(id), axes));
}

/// The names of the curves of plot `id` the user hid by clicking the legend.
fn hidden_id(id: &str) -> egui::Id {
    egui::Id::unique(("plot-hidden", id))
}

/// The curves of plot `id` hidden through its legend (see [`legend_row`]).
pub fn hidden_curves(ctx: &egui::Context, id: &str) -> BTreeSet<String> {
    ctx.data(|d| d.get_temp(hidden_id(id))).unwrap_or_default()
}

/// A legend drawn beside a plot, never over it: a swatch and name per entry; clicking one hides
/// or shows it. Returns the names now hidden.
pub fn legend_row(ui: &mut Ui, id: &str, entries: &[(String, Color32)]) -> BTreeSet<String> {
    let key = hidden_id(id);
    let mut hidden: BTreeSet<String> = ui.data(|d| d.get_temp(key)).unwrap_or_default();
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 10.0;
        for (name, color) in entries {
            let off = hidden.contains(name);
            let c = if off {
                color.gamma_multiply(0.3)
            } else {
                *color
            };
            let text = egui::RichText::new(format!("— {name}")).color(c);
            if ui
                .add(egui::Button::new(text).frame(false))
                .on_hover_text(if off {
                    "show this curve"
                } else {
                    "hide this curve"
                })
                .clicked()
                && !hidden.remove(name)
            {
                hidden.insert(name.clone());
            }
        }
    });
    ui.data_mut(|d| d.insert_temp(key, hidden.clone()));
    hidden
}

/// The y tick label of a value as plotted.
fn y_label(v: f64, step: f64, log: bool, percent: bool) -> String {
    let text = if log {
        format_log(v)
    } else {
        format_num(v, step)
    };
    if percent { format!("{text} %") } else { text }
}

/// The x tick label of a value as plotted.
fn x_label(v: f64, step: f64, axes: PlotAxes) -> String {
    if axes.log_x {
        format_log(v)
    } else {
        axes.x.format(v, step)
    }
}

/// A titled line plot of `curves`: axes chosen in its header, a legend below it, a hover with
/// every curve's value, CSV / PNG / SVG export. The CSV holds what the plot shows (smoothed
/// values when smoothing is on, the raw values beside them) in the visible x range.
pub fn series_plot(
    ui: &mut Ui,
    id: &str,
    title: &str,
    curves: &[Curve<'_>],
    style: PlotStyle,
    export: &mut Export,
) {
    let bounds_id = ui.scope_id().with(id).with("bounds");
    let shown: Option<PlotBounds> = ui.data(|d| d.get_temp(bounds_id));
    let mut axes = plot_axes(ui.ctx(), id);
    let header = plot_header(ui, id, title, export, Some(&mut axes), true);
    set_plot_axes(ui.ctx(), id, axes);
    let log_y = style.log_y || axes.log_y;
    if header.csv {
        // The visible range cuts the CSV where the plot's x is the step.
        let by_step = axes.x == XAxis::Step && !axes.log_x;
        let (x_min, x_max) = shown
            .filter(|_| by_step)
            .map_or((f64::NEG_INFINITY, f64::INFINITY), |b| {
                (b.min()[0], b.max()[0])
            });
        export.request(ExportRequest::Csv {
            name: id.to_owned(),
            text: curves_csv(curves, style.smoothing, x_min, x_max),
        });
    }
    let x_title = if axes.log_x {
        format!("{} (log)", axes.x.title())
    } else {
        axes.x.title().to_owned()
    };
    let percent = style.percent;
    if curves.iter().all(|c| c.series.is_empty()) {
        // No point yet: say so where the plot will be, instead of axes around nothing.
        // The legend row it would have: the plots beside it stay level.
        empty_plot(ui, title, style.height + 22.0);
        return;
    }
    let hidden = hidden_curves(ui.ctx(), id);
    // A metric that never goes below 0 should not be drawn on an axis that does.
    let y_quantity = curves
        .iter()
        .all(|c| c.series.ys.iter().all(|v| v.is_nan() || *v >= 0.0));
    let mut plot = series_frame(
        ui.ctx(),
        id,
        &style,
        axes,
        log_y,
        x_title.clone(),
        y_quantity,
    );
    // One point, or a constant: a range around it, not a sliver of ticks that read alike.
    // In the points' units: an accuracy is plotted in percent.
    let y_scale = if style.percent { 100.0 } else { 1.0 };
    let (xs, ys) = flat_extents(curves, &hidden, axes, log_y, y_scale);
    if let Some((lo, hi)) = xs {
        plot = plot.include_x(lo).include_x(hi);
    }
    if let Some((lo, hi)) = ys {
        plot = plot.include_y(lo).include_y(hi);
    }
    let view = View { style, axes, log_y };
    let mut drawn: Vec<Drawn> = Vec::new();
    let mut pointer = None;
    let response = plot.show(ui, |plot_ui| {
        let bounds = plot_ui.plot_bounds();
        let px = plot_ui.transform().frame().width().max(1.0) as usize;
        // While the plot fits its data (not zoomed or panned), bucket whole series: cutting them
        // to last frame's bounds would keep those bounds from ever growing.
        let (x_min, x_max) = if !plot_ui.auto_bounds().x && bounds.is_valid_x() {
            (bounds.min()[0], bounds.max()[0])
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        pointer = plot_ui.pointer_coordinate();
        let ctx = plot_ui.ctx().clone();
        for c in curves.iter().filter(|c| !hidden.contains(&c.name)) {
            drawn.push(draw_curve(plot_ui, &ctx, id, c, view, (x_min, x_max, px)));
        }
    });
    let plotted = *response.transform.bounds();
    ui.data_mut(|d| d.insert_temp(bounds_id, plotted));
    remember_transform(ui.ctx(), id, response.transform);
    if let Some(p) = pointer.filter(|_| response.response.hovered()) {
        hover_values(&response.response, p.x, &drawn, view);
    }
    let entries: Vec<(String, Color32)> =
        curves.iter().map(|c| (c.name.clone(), c.color)).collect();
    if entries.len() > 1 || entries.iter().any(|e| !e.0.is_empty()) {
        legend_row(ui, id, &entries);
    }
    if header.wants_vector() {
        let svg = SeriesSvg {
            title,
            x_title,
            axes,
            log_y,
            percent,
        };
        header.vector_export(export, id, svg.render(&drawn, plotted));
    }
    export.capture_if_requested(ui.ctx(), id, header.region(ui));
}

/// Where a plot with nothing to draw stands: its height, and what it waits for.
pub fn empty_plot(ui: &mut Ui, title: &str, height: f32) {
    let size = egui::vec2(ui.available_width(), height);
    ui.allocate_ui(size, |ui| {
        ui.set_min_size(size);
        ui.centered_and_justified(|ui| {
            ui.weak(format!("{title}: nothing recorded yet"));
        });
    });
}

/// A range of plotted values: (low, high).
pub type Range = (f64, f64);

/// For each axis along which every shown point of `curves` sits at one value (one point, or a
/// constant), a range around that value in plotted coordinates (log axes: log10): x by 5 % or at
/// least 1, y by 5 % or at least 0.001 (0.1 on a log axis), never below 0 for values that are
/// not. `None` where the points spread (the plot fits them itself).
pub fn flat_extents(
    curves: &[Curve<'_>],
    hidden: &BTreeSet<String>,
    axes: PlotAxes,
    log_y: bool,
    y_scale: f64,
) -> (Option<Range>, Option<Range>) {
    let plotted = |v: f64, log: bool| {
        if log {
            (v > 0.0).then(|| v.log10())
        } else {
            Some(v)
        }
    };
    // The value each axis sits at, while every point so far shares it (`Some(None)`: none yet,
    // `None`: they spread). Drawn every frame over every point, so it stops at the first spread
    // of both axes.
    let (mut x_at, mut y_at): (Option<Option<f64>>, Option<Option<f64>>) = (Some(None), Some(None));
    let same = |at: &mut Option<Option<f64>>, v: f64| match *at {
        Some(None) => *at = Some(Some(v)),
        Some(Some(held)) if held != v => *at = None,
        _ => {}
    };
    'curves: for c in curves.iter().filter(|c| !hidden.contains(&c.name)) {
        let x_values = c.series.x_values(axes.x);
        for (x, y) in x_values.iter().zip(&c.series.ys) {
            if let (Some(x), Some(y)) = (plotted(*x, axes.log_x), plotted(*y * y_scale, log_y))
                && x.is_finite()
                && y.is_finite()
            {
                same(&mut x_at, x);
                same(&mut y_at, y);
                if x_at.is_none() && y_at.is_none() {
                    break 'curves;
                }
            }
        }
    }
    let flat = |at: Option<Option<f64>>, min_pad: f64, log: bool| {
        let first = at.flatten()?;
        let pad = (first.abs() * 0.05).max(if log { 0.1 } else { min_pad });
        let lo = if !log && first >= 0.0 {
            (first - pad).max(0.0)
        } else {
            first - pad
        };
        Some((lo, first + pad))
    };
    (flat(x_at, 1.0, axes.log_x), flat(y_at, 1e-3, log_y))
}

/// The empty plot a series plot draws into: its axes' labels, grids and tick formats, its x
/// linked to other plots' when the style says.
fn series_frame(
    ctx: &egui::Context,
    id: &str,
    style: &PlotStyle,
    axes: PlotAxes,
    log_y: bool,
    x_title: String,
    y_quantity: bool,
) -> Plot<'static> {
    let percent = style.percent;
    let mut plot = Plot::new(id)
        .height(style.height)
        .x_axis_label(x_title)
        .show_x(false)
        .show_y(false)
        // Steps and seconds are labelled whole: no marks between them (a short range would
        // read "9 9 9 10 10 10").
        .x_grid_spacer(move |g| {
            let whole = !axes.log_x && axes.x != XAxis::Epoch;
            whole_marks(nice_grid(&g, 70.0), if whole { 1.0 } else { 0.0 })
        })
        .y_grid_spacer(move |g| {
            if log_y {
                log_grid(&g, 28.0)
            } else {
                nice_grid(&g, 28.0)
            }
        })
        // x is a step, an epoch or a time; y whatever the curves hold.
        .x_axis_formatter(logged(ctx, id, 0, true, move |m, _| {
            x_label(m.value, m.step_size, axes)
        }))
        .y_axis_formatter(logged(ctx, id, 1, y_quantity, move |m, _| {
            y_label(m.value, m.step_size, log_y, percent)
        }))
        .y_axis_min_width(36.0);
    if let Some(group) = style.link_x {
        plot = plot
            .link_axis(group, [true, false])
            .link_cursor(group, [true, false]);
    }
    plot
}

/// Draw curve `c` (its raw values faint beneath when smoothed, its points marked when sparse),
/// from the points cached for this view, x range and width (`px`), rebuilt when those change.
fn draw_curve(
    plot_ui: &mut egui_plot::PlotUi<'_>,
    ctx: &egui::Context,
    id: &str,
    c: &Curve<'_>,
    view: View,
    (x_min, x_max, px): (f64, f64, usize),
) -> Drawn {
    let cache_id = egui::Id::unique((id, &c.name, "curve-cache"));
    let key = CacheKey::new(c.series, view, x_min, x_max, px);
    let mut cache: CurveCache = ctx.data(|d| d.get_temp(cache_id)).unwrap_or_default();
    if cache.key != Some(key) {
        cache = CurveCache::build(c.series, view, x_min, x_max, px, key);
        ctx.data_mut(|d| d.insert_temp(cache_id, cache.clone()));
    }
    if let Some(raw) = &cache.raw {
        // Raw curve, faint, beneath the smoothed one.
        plot_ui.line(
            Line::new("", raw.as_ref().clone())
                .color(c.color.gamma_multiply(0.25))
                .allow_hover(false)
                .id(egui::Id::unique((id, &c.name, "raw"))),
        );
    }
    plot_ui.line(
        Line::new(c.name.clone(), cache.shown.as_ref().clone())
            .color(c.color)
            .id(egui::Id::unique((id, &c.name))),
    );
    if cache.shown.len() <= 30 {
        // Sparse series (per-epoch metrics): mark the points, a single one included.
        plot_ui.points(
            Points::new("", cache.shown.as_ref().clone())
                .color(c.color)
                .radius(2.5)
                .allow_hover(false),
        );
    }
    (c.name.clone(), c.color, cache.shown.clone())
}

/// A series plot as the SVG export writes it: what it was titled and how its axes read.
struct SeriesSvg<'a> {
    title: &'a str,
    x_title: String,
    axes: PlotAxes,
    log_y: bool,
    percent: bool,
}

impl SeriesSvg<'_> {
    fn render(&self, drawn: &[Drawn], plotted: PlotBounds) -> String {
        let series = drawn
            .iter()
            .map(|(name, color, pts)| ChartSeries {
                name: name.clone(),
                color: *color,
                mark: Mark::Line,
                points: pts.as_ref().clone(),
            })
            .collect();
        let (axes, log_y, percent) = (self.axes, self.log_y, self.percent);
        let xf = move |v: f64, s: f64| x_label(v, s, axes);
        let yf = move |v: f64, s: f64| y_label(v, s, log_y, percent);
        Chart {
            title: self.title.to_owned(),
            x_label: self.x_title.clone(),
            y_label: if percent { "%".into() } else { String::new() },
            bounds: [plotted.min(), plotted.max()],
            series,
            x_fmt: &xf,
            y_fmt: &yf,
            x_categories: Vec::new(),
        }
        .render()
    }
}

/// The band plot's hover at step `x`: each shown group's mean ± std at the recorded step
/// nearest `x` (scaled by `k`, in `unit`), never the pointer's height.
pub fn band_hover(
    groups: &[Group],
    hidden: &BTreeSet<String>,
    x: f64,
    (k, unit): (f64, &str),
) -> Option<String> {
    let mut lines = Vec::new();
    for g in groups.iter().filter(|g| !hidden.contains(&g.name)) {
        let Some(&(step, mean, std)) = g
            .band
            .iter()
            .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))
        else {
            continue;
        };
        lines.push(format!(
            "{}: {:.2} ± {:.2}{unit} (step {step:.0})",
            g.name,
            mean * k,
            std * k
        ));
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A curve as drawn this frame: name, colour, plotted points.
type Drawn = (String, Color32, Arc<Vec<[f64; 2]>>);

/// Where plot `id` was drawn in its last frame: its frame on screen and the bounds it showed,
/// in plotted coordinates (log axes: log10).
pub fn plot_transform(ctx: &egui::Context, id: &str) -> Option<PlotTransform> {
    ctx.data(|d| d.get_temp(egui::Id::unique(("plot-transform", id))))
}

/// Record plot `id`'s transform of this frame (see [`plot_transform`]).
pub fn remember_transform(ctx: &egui::Context, id: &str, transform: PlotTransform) {
    ctx.data_mut(|d| d.insert_temp(egui::Id::unique(("plot-transform", id)), transform));
}

/// What series plot `id` showed in its last frame, in plotted coordinates (log axes: log10).
pub fn plotted_bounds(ctx: &egui::Context, id: &str) -> Option<PlotBounds> {
    plot_transform(ctx, id).map(|t| *t.bounds())
}

/// The value of every drawn curve at plot x `x` (its nearest point), as a tooltip.
fn hover_values(response: &egui::Response, x: f64, drawn: &[Drawn], view: View) {
    let rows: Vec<(String, Color32, f64, f64)> = drawn
        .iter()
        .filter_map(|(name, color, pts)| {
            let i = pts.partition_point(|p| p[0] < x);
            let near = [i.checked_sub(1), (i < pts.len()).then_some(i)]
                .into_iter()
                .flatten()
                .min_by(|&a, &b| (pts[a][0] - x).abs().total_cmp(&(pts[b][0] - x).abs()))?;
            Some((name.clone(), *color, pts[near][0], pts[near][1]))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    response.clone().on_hover_ui_at_pointer(|ui| {
        ui.label(format!(
            "{} {}",
            view.axes.x.title(),
            x_label(x, 0.001_f64.max(x.abs() * 1e-4), view.axes)
        ));
        for (name, color, _, y) in rows {
            let v = if view.log_y { 10f64.powf(y) } else { y };
            let text = if view.style.percent {
                format!("{v:.2} %")
            } else {
                format!("{v:.6}")
            };
            ui.colored_label(color, format!("{name}: {text}"));
        }
    });
}

/// Where a plot (with its title row) starts, and which of its export buttons were clicked.
pub struct PlotHeader {
    pub csv: bool,
    svg: bool,
    /// PNG asked for of a plot that has an SVG: drawn off screen from it.
    png: bool,
    /// Below the title row.
    top_left: egui::Pos2,
    width: f32,
}

impl PlotHeader {
    /// The area from below the title row down to where `ui` is now (after the plot): what a
    /// screen capture of a plot without an SVG shows, axes and legend included, buttons not.
    pub fn region(&self, ui: &Ui) -> egui::Rect {
        egui::Rect::from_min_max(
            self.top_left,
            egui::pos2(self.top_left.x + self.width, ui.cursor().min.y),
        )
    }

    /// Whether SVG or PNG was asked for of a plot that has an SVG (call [`Self::vector_export`]).
    pub fn wants_vector(&self) -> bool {
        self.svg || self.png
    }

    /// Export plot `id`'s figure as asked: the SVG itself, or a PNG drawn from it off screen.
    pub fn vector_export(&self, export: &mut Export, id: &str, svg: String) {
        let name = id.to_owned();
        export.request(if self.svg {
            ExportRequest::Text {
                name,
                ext: "svg",
                text: svg,
            }
        } else {
            ExportRequest::Figure { name, svg }
        });
    }
}

/// The title row of a plot with its export buttons (SVG where the view writes one; given
/// `axes`, its axis controls).
pub fn plot_header(
    ui: &mut Ui,
    id: &str,
    title: &str,
    export: &mut Export,
    axes: Option<&mut PlotAxes>,
    vector: bool,
) -> PlotHeader {
    export.title(id, title);
    let width = ui.available_width();
    let (csv, svg, png) = ui
        .horizontal(|ui| {
            // Buttons from the right first; the title takes what is left, cut short with "…"
            // (full on hover) rather than pushing the plot wider than its column.
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let png = ui
                    .small_button("PNG")
                    .on_hover_text(if vector {
                        "save this plot as a PNG image, drawn at the size and scale you choose"
                    } else {
                        "save this plot as a PNG image, as on screen"
                    })
                    .clicked();
                if png && !vector {
                    export.request(ExportRequest::Png {
                        name: id.to_owned(),
                    });
                }
                let svg = vector
                    && ui
                        .small_button("SVG")
                        .on_hover_text(
                            "save this plot as SVG (vector, with title, axes and legend)",
                        )
                        .clicked();
                let csv = ui
                    .small_button("CSV")
                    .on_hover_text("save what this plot shows as CSV")
                    .clicked();
                if let Some(axes) = axes {
                    // In a menu: a narrow plot's title row keeps room for its title.
                    let summary = format!(
                        "{}{}{}",
                        axes.x.title(),
                        if axes.log_x { ", log x" } else { "" },
                        if axes.log_y { ", log y" } else { "" }
                    );
                    ui.menu_button(format!("x: {summary}"), |ui| {
                        ui.label("x axis");
                        for a in XAxis::ALL {
                            ui.radio_value(&mut axes.x, a, a.title());
                        }
                        ui.separator();
                        ui.checkbox(&mut axes.log_x, "log x")
                            .on_hover_text("logarithmic x axis");
                        ui.checkbox(&mut axes.log_y, "log y")
                            .on_hover_text("logarithmic y axis");
                    })
                    .response
                    .accessible_name(format!("axes of {title}"))
                    .on_hover_text("x axis (step, epoch, wall time, relative time), log x, log y");
                }
                ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                    ui.add(egui::Label::new(egui::RichText::new(title).strong()).truncate());
                });
                (csv, svg, png && vector)
            })
            .inner
        })
        .inner;
    PlotHeader {
        csv,
        svg,
        png,
        top_left: ui.cursor().min,
        width,
    }
}

/// What a curve's points depend on besides its data.
#[derive(Debug, Clone, Copy, PartialEq)]
struct View {
    style: PlotStyle,
    axes: PlotAxes,
    log_y: bool,
}

/// What a curve's drawn points depend on; equal keys reuse the cached points.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CacheKey {
    len: usize,
    last: [u64; 2],
    smoothing: u64,
    log_y: bool,
    percent: bool,
    axes: PlotAxes,
    range: [u64; 2],
    px: usize,
}

impl CacheKey {
    fn new(s: &Series, view: View, x_min: f64, x_max: f64, px: usize) -> Self {
        let last = s.last().unwrap_or((0.0, 0.0));
        Self {
            len: s.len(),
            last: [last.0.to_bits(), last.1.to_bits()],
            smoothing: view.style.smoothing.to_bits(),
            log_y: view.log_y,
            percent: view.style.percent,
            axes: view.axes,
            range: [x_min.to_bits(), x_max.to_bits()],
            px,
        }
    }
}

/// A curve's decimated points (and its raw points when smoothed), kept between frames in egui's
/// temporary storage: a frame where nothing moved does no smoothing or decimation at all.
#[derive(Debug, Clone, Default)]
struct CurveCache {
    key: Option<CacheKey>,
    shown: Arc<Vec<[f64; 2]>>,
    raw: Option<Arc<Vec<[f64; 2]>>>,
}

impl CurveCache {
    fn build(s: &Series, view: View, x_min: f64, x_max: f64, px: usize, key: CacheKey) -> Self {
        let scale = if view.style.percent { 100.0 } else { 1.0 };
        let y = |v: f64| {
            let v = v * scale;
            if view.log_y { v.log10() } else { v }
        };
        let x = |v: f64| if view.axes.log_x { v.log10() } else { v };
        let finish = |pts: Vec<[f64; 2]>| -> Arc<Vec<[f64; 2]>> {
            Arc::new(
                pts.into_iter()
                    .map(|[a, b]| [x(a), y(b)])
                    .filter(|p| p[0].is_finite() && p[1].is_finite())
                    .collect(),
            )
        };
        // The visible range is in plotted coordinates; decimation works on the data's.
        let unx = |v: f64| if view.axes.log_x { 10f64.powf(v) } else { v };
        let (x_min, x_max) = (unx(x_min), unx(x_max));
        let xs = s.x_values(view.axes.x);
        let smoothing = view.style.smoothing;
        if smoothing > 0.0 && s.len() >= MIN_POINTS_TO_SMOOTH {
            let smoothed = ema_debiased(&s.ys, smoothing);
            Self {
                key: Some(key),
                shown: finish(decimate(&xs, &smoothed, x_min, x_max, px)),
                // The faint raw curve only shows the spread: a quarter of the resolution
                // (its extremes still kept per 4-pixel bucket) halves what is tessellated.
                raw: Some(finish(decimate(&xs, &s.ys, x_min, x_max, (px / 4).max(1)))),
            }
        } else {
            Self {
                key: Some(key),
                shown: finish(decimate(&xs, &s.ys, x_min, x_max, px)),
                raw: None,
            }
        }
    }
}

/// `series,x,y[,raw]` rows of every curve within `[x_min, x_max]`.
pub fn curves_csv(curves: &[Curve<'_>], smoothing: f64, x_min: f64, x_max: f64) -> String {
    let mut out = String::from(if smoothing > 0.0 {
        "series,step,smoothed,raw\n"
    } else {
        "series,step,value\n"
    });
    for c in curves {
        let smoothed = (smoothing > 0.0).then(|| {
            if c.series.len() >= MIN_POINTS_TO_SMOOTH {
                ema_debiased(&c.series.ys, smoothing)
            } else {
                c.series.ys.clone()
            }
        });
        for (i, (&x, &y)) in c.series.xs.iter().zip(&c.series.ys).enumerate() {
            if x < x_min || x > x_max {
                continue;
            }
            let name = csv_field(&c.name);
            match &smoothed {
                Some(s) => out.push_str(&format!("{name},{x},{},{y}\n", s[i])),
                None => out.push_str(&format!("{name},{x},{y}\n")),
            }
        }
    }
    out
}

/// The plot coordinates a hover label is about.
pub fn hover_point(pos: &egui_plot::HoverPosition<'_>) -> egui_plot::PlotPoint {
    match pos {
        egui_plot::HoverPosition::NearDataPoint { position, .. }
        | egui_plot::HoverPosition::Elsewhere { position } => *position,
    }
}

/// Groups of curves as mean lines over ±std bands (over their raw seeds' lines, faint, where the
/// groups carry them).
pub fn band_plot(ui: &mut egui::Ui, id: &str, y_label: &str, groups: &[Group], height: f32) {
    // Accuracy reads in percent, as everywhere else: the labels are scaled, not the points.
    let (k, unit) = if crate::chart::format::is_accuracy(y_label) {
        (100.0, " %")
    } else {
        (1.0, "")
    };
    if groups.iter().all(|g| g.band.is_empty()) {
        empty_plot(ui, y_label, height);
        return;
    }
    // One point per curve (a one-epoch study) would give the plot no extent: frame it.
    let ys: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.band.iter().map(|b| b.1))
        .collect();
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(*y), b.max(*y))
        });
    let pad = if hi - lo < 1e-9 {
        lo.abs().max(1.0) * 0.05
    } else {
        0.0
    };
    let hidden = hidden_curves(ui.ctx(), id);
    // Variants with nothing recorded yet have no curve to name.
    let entries: Vec<(String, egui::Color32)> = groups
        .iter()
        .filter(|g| !g.band.is_empty())
        .map(|g| (g.name.clone(), color(g.color)))
        .collect();
    let legend_h = 22.0 * (1.0 + (entries.len() as f32 / 4.0).floor());
    let hidden_now = hidden.clone();
    // Steps from 0 (no margin below it: a step is never negative), labelled whole.
    let x_max = groups
        .iter()
        .flat_map(|g| g.band.iter().map(|b| b.0))
        .fold(0.0, f64::max);
    let shown = readable_ticks(Plot::new(id), ui.ctx(), id, [true, true], k, unit)
        .x_grid_spacer(|g| whole_marks(nice_grid(&g, 70.0), 1.0))
        .set_margin_fraction(egui::vec2(0.0, 0.05))
        .include_x(0.0)
        .include_x((x_max * 1.03).max(1.0))
        .include_y(if lo.is_finite() { lo - pad } else { 0.0 })
        .include_y(if hi.is_finite() { hi + pad } else { 1.0 })
        .height((height - legend_h).max(200.0))
        .x_axis_label("step")
        .y_axis_label(y_label.to_owned())
        .label_formatter(move |pos| band_hover(groups, &hidden_now, hover_point(pos).x, (k, unit)))
        .show(ui, |p| {
            for g in groups.iter().filter(|g| !hidden.contains(&g.name)) {
                let c = color(g.color);
                for pts in &g.seeds {
                    p.line(
                        Line::new("", pts.clone())
                            .color(c.gamma_multiply(0.3))
                            .width(1.0)
                            .allow_hover(false),
                    );
                }
                // One mesh per band (a noisy band is not convex, so no polygon fan).
                let xs: Vec<f64> = g.band.iter().map(|b| b.0).collect();
                let lo: Vec<f64> = g.band.iter().map(|b| b.1 - b.2).collect();
                let hi: Vec<f64> = g.band.iter().map(|b| b.1 + b.2).collect();
                p.add(
                    FilledArea::new(format!("{} ± std", g.name), &xs, &lo, &hi)
                        .fill_color(c.gamma_multiply(0.25))
                        .allow_hover(false),
                );
                let mean: Vec<[f64; 2]> = g.band.iter().map(|(x, m, _)| [*x, *m]).collect();
                p.line(Line::new(g.name.clone(), mean).color(c).width(2.0));
            }
        });
    remember_transform(ui.ctx(), id, shown.transform);
    legend_row(ui, id, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_in_view_gets_a_mark_and_neighbours_alternate_lines() {
        let input = GridInput {
            bounds: (-0.6, 11.6),
            base_step_size: 0.05,
        };
        let marks = slot_marks(&input, 2.0);
        let values: Vec<f64> = marks.iter().map(|m| m.value).collect();
        assert_eq!(values, (0..=11).map(f64::from).collect::<Vec<_>>());
        assert!(marks.iter().all(|m| m.step_size == 2.0));
        let lines: Vec<usize> = (0..4)
            .map(|i| staggered(i, "blocks.0.dw").lines().count())
            .collect();
        assert_eq!(lines, [1, 2, 1, 2]);
        assert_eq!(staggered(3, "fc").trim_start(), "fc");
    }

    #[test]
    fn decimate_keeps_extremes_per_bucket_and_bounds_size() {
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(f64::from).collect();
        let mut ys: Vec<f64> = xs.iter().map(|x| (x * 0.01).sin()).collect();
        ys[54_321] = 100.0; // a spike must survive
        ys[12_345] = -100.0;
        let out = decimate(&xs, &ys, 0.0, f64::from(n - 1), 500);
        assert!(out.len() <= 2 * 500 + 4, "{}", out.len());
        assert!(out.iter().any(|p| p[1] == 100.0));
        assert!(out.iter().any(|p| p[1] == -100.0));
        assert!(out.windows(2).all(|w| w[0][0] < w[1][0]), "x order kept");
        // A visible window keeps one point beyond each edge.
        let out = decimate(&xs, &ys, 1000.5, 2000.5, 5000);
        assert_eq!(out.first().map(|p| p[0]), Some(1000.0));
        assert_eq!(out.last().map(|p| p[0]), Some(2001.0));
        // An open range buckets the whole series.
        let out = decimate(&xs, &ys, f64::NEG_INFINITY, f64::INFINITY, 500);
        assert!(out.len() <= 2 * 500 + 4 && out.len() > 500, "{}", out.len());
        assert_eq!(out.last().map(|p| p[0]), Some(f64::from(n - 1)));
        // Short series pass unchanged.
        assert_eq!(decimate(&[1.0, 2.0], &[3.0, 4.0], 0.0, 9.0, 10).len(), 2);
        assert!(decimate(&[], &[], 0.0, 1.0, 10).is_empty());
    }

    #[test]
    fn csv_quotes_and_respects_range() {
        let s = Series::new(vec![0.0, 1.0, 2.0], vec![1.0, 2.0, 3.0]);
        let curves = [Curve {
            name: "a,b".into(),
            series: &s,
            color: Color32::WHITE,
        }];
        let csv = curves_csv(&curves, 0.0, 0.5, 2.0);
        assert_eq!(csv, "series,step,value\n\"a,b\",1,2\n\"a,b\",2,3\n");
        let csv = curves_csv(&curves, 0.5, 0.0, 0.0);
        assert!(
            csv.starts_with("series,step,smoothed,raw\n\"a,b\",0,1,1\n"),
            "{csv}"
        );
    }

    /// The band plot's hover showed the pointer's height as a value; it shows each group's
    /// mean ± std at the nearest recorded step now, hidden groups left out.
    #[test]
    fn the_band_hover_reads_the_groups_not_the_pointer() {
        let g = |name: &str, band: Vec<(f64, f64, f64)>| Group {
            color: 0,
            name: name.into(),
            band,
            seeds: Vec::new(),
        };
        let groups = [
            g(
                "lr = 0.1 (n = 3)",
                vec![(100.0, 0.80, 0.01), (200.0, 0.85, 0.02)],
            ),
            g("lr = 0.5 (n = 3)", vec![(100.0, 0.70, 0.03)]),
        ];
        let none = BTreeSet::new();
        let text = band_hover(&groups, &none, 190.0, (100.0, " %")).expect("a hover");
        assert_eq!(
            text,
            "lr = 0.1 (n = 3): 85.00 ± 2.00 % (step 200)\nlr = 0.5 (n = 3): 70.00 ± 3.00 % (step 100)"
        );
        let hidden: BTreeSet<String> = ["lr = 0.5 (n = 3)".to_owned()].into();
        let text = band_hover(&groups, &hidden, 90.0, (100.0, " %")).expect("a hover");
        assert_eq!(text, "lr = 0.1 (n = 3): 80.00 ± 1.00 % (step 100)");
        assert_eq!(band_hover(&[], &none, 5.0, (1.0, "")), None);
    }

    /// One point, or a constant, drew axes around a sliver ("3 3 3 3 3" on x, a negative
    /// accuracy on y); they get a range around the value now, not below 0 for what is not.
    #[test]
    fn one_point_and_constant_series_get_a_range_around_them() {
        let one = Series::new(vec![3.0], vec![0.8]);
        let constant = Series::new(vec![10.0, 20.0, 30.0], vec![0.0; 3]);
        let curve = |s| Curve {
            name: "c".into(),
            series: s,
            color: Color32::WHITE,
        };
        let none = BTreeSet::new();
        let axes = PlotAxes::default();
        let (x, y) = flat_extents(&[curve(&one)], &none, axes, false, 1.0);
        assert_eq!(x, Some((2.0, 4.0)));
        let (lo, hi) = y.expect("a y range");
        assert!(
            (lo - 0.76).abs() < 1e-12 && (hi - 0.84).abs() < 1e-12,
            "{lo} {hi}"
        );
        let (x, y) = flat_extents(&[curve(&constant)], &none, axes, false, 1.0);
        assert_eq!(x, None, "x spreads");
        assert_eq!(
            y,
            Some((0.0, 1e-3)),
            "never below 0 for a quantity that is not"
        );
        let (_, y) = flat_extents(&[curve(&one)], &none, axes, true, 1.0);
        let (lo, hi) = y.expect("log y");
        assert!((lo - (0.8f64.log10() - 0.1)).abs() < 1e-12 && hi > lo);
        let hidden: BTreeSet<String> = ["c".to_owned()].into();
        assert_eq!(
            flat_extents(&[curve(&one)], &hidden, axes, false, 1.0),
            (None, None)
        );
    }

    /// The labels `draw` puts on screen over two frames (AccessKit updates are incremental).
    fn labels_drawn(ctx: &egui::Context, mut draw: impl FnMut(&mut Ui)) -> Vec<String> {
        let mut labels = Vec::new();
        for _ in 0..2 {
            let mut out = ctx.run_ui(egui::RawInput::default(), &mut draw);
            out.textures_delta.clear(); // no renderer here
            labels.extend(
                out.platform_output
                    .accesskit_update
                    .expect("accesskit is on")
                    .nodes
                    .iter()
                    .filter_map(|(_, n)| n.label().or(n.value()).map(str::to_owned)),
            );
        }
        labels
    }

    /// A band plot of groups with nothing recorded (a study whose cells have not reported) says
    /// so, with no axes.
    #[test]
    fn an_empty_band_plot_says_it_waits() {
        let ctx = egui::Context::default();
        ctx.enable_accesskit();
        let groups = [Group {
            color: 0,
            name: "mult".into(),
            band: Vec::new(),
            seeds: Vec::new(),
        }];
        let labels = labels_drawn(&ctx, |ui| {
            band_plot(ui, "empty-band", "val/top1", &groups, 200.0);
        });
        assert!(
            labels.iter().any(|l| l == "val/top1: nothing recorded yet"),
            "{labels:?}"
        );
        assert!(plot_transform(&ctx, "empty-band").is_none());
    }

    /// A plot with no point drew axes from -0.5 to 0.5 around nothing; it says what it waits
    /// for instead, and draws no plot.
    #[test]
    fn an_empty_plot_says_it_waits_and_draws_no_axes() {
        let ctx = egui::Context::default();
        ctx.enable_accesskit();
        let empty = Series::default();
        // Nothing is exported: the folder is never written.
        let mut export = Export::new(std::env::temp_dir().join("unused-exports"), None);
        let labels = labels_drawn(&ctx, |ui| {
            let curves = [Curve {
                name: "val".into(),
                series: &empty,
                color: Color32::WHITE,
            }];
            series_plot(
                ui,
                "empty-val",
                "Validation top-1",
                &curves,
                PlotStyle::default(),
                &mut export,
            );
        });
        assert!(
            labels
                .iter()
                .any(|l| l == "Validation top-1: nothing recorded yet"),
            "{labels:?}"
        );
        assert!(
            plotted_bounds(&ctx, "empty-val").is_none(),
            "no plot was drawn"
        );
    }
}
