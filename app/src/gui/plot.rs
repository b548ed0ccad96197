//! Plot helpers shared by the views: draw-time decimation, debiased-EMA smoothing, the Pareto
//! front, and the series plot widget with its CSV / PNG export buttons.
//!
//! Order matters: a series is smoothed at full resolution, then decimated for the pixels it
//! covers. Smoothing a decimated series would change with the zoom level.

use egui::{Color32, Ui};
use std::sync::Arc;

use egui_plot::{Legend, Line, Plot, PlotBounds, Points};

use super::export::{Export, ExportRequest};

/// One named curve: x (step) and y values, equally long, x ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

impl Series {
    pub fn len(&self) -> usize {
        self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        Some((*self.xs.last()?, *self.ys.last()?))
    }
}

/// Debiased exponential moving average (as TensorBoard and W&B smooth): `m_t = a m_{t-1} +
/// (1-a) y_t`, divided by `1 - a^t` so the start is not pulled towards zero. Non-finite values
/// pass through without entering the average. `a` in [0, 1); 0 returns the input.
pub fn ema_debiased(ys: &[f64], a: f64) -> Vec<f64> {
    if a <= 0.0 {
        return ys.to_vec();
    }
    let a = a.min(0.999_999);
    let mut m = 0.0;
    let mut weight = 0.0;
    ys.iter()
        .map(|&y| {
            if !y.is_finite() {
                return y;
            }
            m = a * m + (1.0 - a) * y;
            weight = a * weight + (1.0 - a);
            m / weight
        })
        .collect()
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
    /// Plot log10(y) (non-positive values are dropped).
    pub log_y: bool,
    /// Link the x axis of every plot that shares this group id.
    pub link_x: Option<egui::Id>,
    pub height: f32,
}

impl Default for PlotStyle {
    fn default() -> Self {
        Self {
            smoothing: 0.0,
            log_y: false,
            link_x: None,
            height: 200.0,
        }
    }
}

/// A titled line plot of `curves` with CSV / PNG export buttons. The CSV holds what the plot
/// shows (smoothed values when smoothing is on, the raw values beside them) in the visible x range.
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
    let header = plot_header(ui, id, title, export);
    if header.csv {
        let (x_min, x_max) = shown.map_or((f64::NEG_INFINITY, f64::INFINITY), |b| {
            (b.min()[0], b.max()[0])
        });
        export.request(ExportRequest::Csv {
            name: id.to_owned(),
            text: curves_csv(curves, style.smoothing, x_min, x_max),
        });
    }
    let mut plot = Plot::new(id)
        .height(style.height)
        .legend(Legend::default())
        .x_axis_label("step");
    if style.log_y {
        plot = plot.y_axis_formatter(|mark, _| format!("1e{:.1}", mark.value));
    }
    if let Some(group) = style.link_x {
        plot = plot
            .link_axis(group, [true, false])
            .link_cursor(group, [true, false]);
    }
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
        let ctx = plot_ui.ctx().clone();
        for c in curves {
            let cache_id = egui::Id::unique((id, &c.name, "curve-cache"));
            let key = CacheKey::new(c.series, style, x_min, x_max, px);
            let mut cache: CurveCache = ctx.data(|d| d.get_temp(cache_id)).unwrap_or_default();
            if cache.key != Some(key) {
                cache = CurveCache::build(c.series, style, x_min, x_max, px, key);
                ctx.data_mut(|d| d.insert_temp(cache_id, cache.clone()));
            }
            if let Some(raw) = &cache.raw {
                // Raw curve, faint, beneath the smoothed one; no name: the legend lists each
                // run once.
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
        }
    });
    ui.data_mut(|d| d.insert_temp(bounds_id, *response.transform.bounds()));
    export.capture_if_requested(ui.ctx(), id, header.region(ui));
}

/// Where a plot (with its title row) starts, and whether its CSV button was clicked.
pub struct PlotHeader {
    pub csv: bool,
    top_left: egui::Pos2,
    width: f32,
}

impl PlotHeader {
    /// The area from the title row down to where `ui` is now (after the plot): what a PNG of
    /// the plot shows, axes and legend included.
    pub fn region(&self, ui: &Ui) -> egui::Rect {
        egui::Rect::from_min_max(
            self.top_left,
            egui::pos2(self.top_left.x + self.width, ui.cursor().min.y),
        )
    }
}

/// The title row of a plot with its export buttons.
pub fn plot_header(ui: &mut Ui, id: &str, title: &str, export: &mut Export) -> PlotHeader {
    let top_left = ui.cursor().min;
    let width = ui.available_width();
    let csv = ui
        .horizontal(|ui| {
            ui.strong(title);
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .small_button("PNG")
                    .on_hover_text("save this plot as a PNG image")
                    .clicked()
                {
                    export.request(ExportRequest::Png {
                        name: id.to_owned(),
                    });
                }
                ui.small_button("CSV")
                    .on_hover_text("save what this plot shows as CSV")
                    .clicked()
            })
            .inner
        })
        .inner;
    PlotHeader {
        csv,
        top_left,
        width,
    }
}

/// What a curve's drawn points depend on; equal keys reuse the cached points.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CacheKey {
    len: usize,
    last: [u64; 2],
    smoothing: u64,
    log_y: bool,
    range: [u64; 2],
    px: usize,
}

impl CacheKey {
    fn new(s: &Series, style: PlotStyle, x_min: f64, x_max: f64, px: usize) -> Self {
        let last = s.last().unwrap_or((0.0, 0.0));
        Self {
            len: s.len(),
            last: [last.0.to_bits(), last.1.to_bits()],
            smoothing: style.smoothing.to_bits(),
            log_y: style.log_y,
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
    fn build(
        s: &Series,
        style: PlotStyle,
        x_min: f64,
        x_max: f64,
        px: usize,
        key: CacheKey,
    ) -> Self {
        let y = |v: f64| if style.log_y { v.log10() } else { v };
        let finish = |pts: Vec<[f64; 2]>| -> Arc<Vec<[f64; 2]>> {
            Arc::new(
                pts.into_iter()
                    .map(|[a, b]| [a, y(b)])
                    .filter(|p| p[1].is_finite())
                    .collect(),
            )
        };
        if style.smoothing > 0.0 {
            let smoothed = ema_debiased(&s.ys, style.smoothing);
            Self {
                key: Some(key),
                shown: finish(decimate(&s.xs, &smoothed, x_min, x_max, px)),
                // The faint raw curve only shows the spread: a quarter of the resolution
                // (its extremes still kept per 4-pixel bucket) halves what is tessellated.
                raw: Some(finish(decimate(
                    &s.xs,
                    &s.ys,
                    x_min,
                    x_max,
                    (px / 4).max(1),
                ))),
            }
        } else {
            Self {
                key: Some(key),
                shown: finish(decimate(&s.xs, &s.ys, x_min, x_max, px)),
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
        let smoothed = (smoothing > 0.0).then(|| ema_debiased(&c.series.ys, smoothing));
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

/// Quote a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The plot coordinates a hover label is about.
pub fn hover_point(pos: &egui_plot::HoverPosition<'_>) -> egui_plot::PlotPoint {
    match pos {
        egui_plot::HoverPosition::NearDataPoint { position, .. }
        | egui_plot::HoverPosition::Elsewhere { position } => *position,
    }
}

/// A palette of distinguishable colours for runs and curves.
pub fn color(i: usize) -> Color32 {
    const P: [Color32; 10] = [
        Color32::from_rgb(0x4e, 0x9a, 0xf0),
        Color32::from_rgb(0xf0, 0x8c, 0x3a),
        Color32::from_rgb(0x5c, 0xc0, 0x6c),
        Color32::from_rgb(0xe0, 0x50, 0x5a),
        Color32::from_rgb(0xa8, 0x7c, 0xe0),
        Color32::from_rgb(0xc0, 0x9a, 0x6a),
        Color32::from_rgb(0xe8, 0x86, 0xc8),
        Color32::from_rgb(0x9a, 0x9a, 0x9a),
        Color32::from_rgb(0xd0, 0xc8, 0x40),
        Color32::from_rgb(0x40, 0xc8, 0xd0),
    ];
    P[i % P.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_debiased_and_zero_weight_is_identity() {
        let ys = [10.0, 10.0, 10.0];
        // Debiased: a constant series stays constant from the first point.
        for v in ema_debiased(&ys, 0.9) {
            assert!((v - 10.0).abs() < 1e-9, "{v}");
        }
        assert_eq!(ema_debiased(&[1.0, 2.0], 0.0), vec![1.0, 2.0]);
        let s = ema_debiased(&[0.0, 1.0], 0.5);
        // m1 = 0, w1 = .5; m2 = .5, w2 = .75 -> 0.6667
        assert!((s[1] - 0.5 / 0.75).abs() < 1e-9);
        let s = ema_debiased(&[1.0, f64::NAN, 1.0], 0.5);
        assert!(s[1].is_nan() && (s[2] - 1.0).abs() < 1e-9);
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
        let s = Series {
            xs: vec![0.0, 1.0, 2.0],
            ys: vec![1.0, 2.0, 3.0],
        };
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
}
