//! Vector export: any plot as a standalone SVG with its title, axes, tick labels and a legend
//! beside the data (never over it), fit for a paper. Views describe what they drew as a
//! [`Chart`]; [`Chart::render`] writes the file's text.

use std::fmt::Write as _;

use egui::Color32;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    Line,
    /// Dots of this radius (px).
    Points(f32),
    /// Bars from y = 0, each this wide in x units, centred on x.
    Bars(f64),
    /// A filled band: the points run along the upper edge, then back along the lower one.
    Band,
    /// Separate line segments: points 0–1, 2–3, … (whiskers, error-bar caps).
    Segments,
    /// A dashed line through the points (a reference level).
    Dashed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    pub name: String,
    pub color: Color32,
    pub mark: Mark,
    pub points: Vec<[f64; 2]>,
}

/// A plot as drawn: data coordinates, the visible bounds, and how ticks read.
pub struct Chart<'a> {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// `[[x_min, y_min], [x_max, y_max]]`.
    pub bounds: [[f64; 2]; 2],
    pub series: Vec<ChartSeries>,
    /// Tick label for a value on each axis (log axes: the value is log10 of what is shown).
    pub x_fmt: &'a dyn Fn(f64, f64) -> String,
    pub y_fmt: &'a dyn Fn(f64, f64) -> String,
    /// A categorical x axis: label `i` under x = i, slanted so that long names fit (empty: a
    /// numeric axis, ticked by `x_fmt`).
    pub x_categories: Vec<String>,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
/// Category labels' slant (degrees) and the width of one of their characters (px, 12 px font).
const SLANT: f64 = 35.0;
const CHAR_W: f64 = 6.6;

/// Text safe inside an XML element or attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hex(c: Color32) -> String {
    format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b())
}

/// A 1-2-5 step giving about `n` ticks over `span`.
pub fn nice_step(span: f64, n: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n.max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// Multiples of `step` within `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last.min(first + 1000))
        .map(|i| i as f64 * step)
        .collect()
}

/// Where the plot area sits in the image, and data coordinates mapped onto it.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    /// The plot area's width and height (px).
    pw: f64,
    ph: f64,
    /// The image's height (px): taller than `H` by what slanted category labels need.
    h: f64,
}

impl Frame {
    fn sx(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw
    }

    fn sy(&self, y: f64) -> f64 {
        TOP + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph
    }

    /// `p` in image coordinates.
    fn px(&self, p: &[f64; 2]) -> Px {
        (self.sx(p[0]), self.sy(p[1]))
    }

    /// The plot area in image coordinates: left, top, right, bottom.
    fn area(&self) -> [f64; 4] {
        [LEFT, TOP, LEFT + self.pw, TOP + self.ph]
    }
}

/// A point in image coordinates.
type Px = (f64, f64);

/// A line at most this many points long is drawn with a marker on each (one point alone would
/// not show at all).
const SPARSE: usize = 12;

fn inside((x, y): Px, [l, t, r, b]: [f64; 4]) -> bool {
    (l - 1e-9..=r + 1e-9).contains(&x) && (t - 1e-9..=b + 1e-9).contains(&y)
}

/// The part of segment `a`–`b` inside `area` (Liang–Barsky), if any.
fn clip_segment(a: Px, b: Px, [l, t, r, bt]: [f64; 4]) -> Option<(Px, Px)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - l),
        (dx, r - a.0),
        (-dy, a.1 - t),
        (dy, bt - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let u = q / p;
            if p < 0.0 {
                t0 = t0.max(u);
            } else {
                t1 = t1.min(u);
            }
        }
    }
    (t0 <= t1).then(|| {
        let at = |u: f64| (a.0 + u * dx, a.1 + u * dy);
        (at(t0), at(t1))
    })
}

/// The runs of a polyline inside `area` (a line leaving the area and coming back is two runs; a
/// lone point inside is a run of one).
fn clip_polyline(points: &[Px], area: [f64; 4]) -> Vec<Vec<Px>> {
    if let [p] = points {
        return if inside(*p, area) {
            vec![vec![*p]]
        } else {
            Vec::new()
        };
    }
    let mut runs: Vec<Vec<Px>> = Vec::new();
    let mut run: Vec<Px> = Vec::new();
    for w in points.windows(2) {
        match clip_segment(w[0], w[1], area) {
            Some((a, b)) => {
                let joins = run
                    .last()
                    .is_some_and(|l| (l.0 - a.0).abs() + (l.1 - a.1).abs() < 1e-9);
                if !joins && !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                if run.is_empty() {
                    run.push(a);
                }
                run.push(b);
            }
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// A polygon cut to `area` (Sutherland–Hodgman, one edge of the area at a time).
fn clip_polygon(points: &[Px], [l, t, r, b]: [f64; 4]) -> Vec<Px> {
    // Each edge: whether a point is on the area's side, and where a segment crosses it.
    type Edge = (fn(Px, f64) -> bool, fn(Px, Px, f64) -> Px, f64);
    let cross_x = |a: Px, c: Px, x: f64| (x, a.1 + (c.1 - a.1) * (x - a.0) / (c.0 - a.0));
    let cross_y = |a: Px, c: Px, y: f64| (a.0 + (c.0 - a.0) * (y - a.1) / (c.1 - a.1), y);
    let edges: [Edge; 4] = [
        (|p, v| p.0 >= v, cross_x, l),
        (|p, v| p.0 <= v, cross_x, r),
        (|p, v| p.1 >= v, cross_y, t),
        (|p, v| p.1 <= v, cross_y, b),
    ];
    let mut poly = points.to_vec();
    for (keep, cross, v) in edges {
        let mut out = Vec::with_capacity(poly.len() + 4);
        for (i, &cur) in poly.iter().enumerate() {
            let prev = poly[(i + poly.len() - 1) % poly.len()];
            match (keep(prev, v), keep(cur, v)) {
                (true, true) => out.push(cur),
                (true, false) => out.push(cross(prev, cur, v)),
                (false, true) => {
                    out.push(cross(prev, cur, v));
                    out.push(cur);
                }
                (false, false) => {}
            }
        }
        poly = out;
        if poly.is_empty() {
            break;
        }
    }
    poly
}

fn points_attr(run: &[Px]) -> String {
    run.iter()
        .map(|(x, y)| format!("{x:.2},{y:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Chart<'_> {
    /// The SVG document: title, grid, tick labels, axis labels, the data cut to the plot area
    /// (a sparse line with a marker on each point), and the legend right of it.
    pub fn render(&self) -> String {
        let f = self.frame();
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#,
            h = f.h
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{}" fill="white"/>"#, f.h);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="15" font-weight="bold">{}</text>"#,
            LEFT,
            escape(&self.title)
        );
        let (xs, ys) = self.ticks(&f);
        self.grid(&mut s, &f, &xs, &ys);
        self.tick_labels(&mut s, &f, &xs, &ys);
        self.axis_labels(&mut s, &f);
        // The data, cut to the plot area here rather than by a clip-path (which some renderers
        // and editors drop, leaving curves over the axes).
        s.push_str("<g class=\"data\">\n");
        for c in &self.series {
            series(&mut s, &f, c);
        }
        s.push_str("</g>\n");
        self.legend(&mut s, &f);
        s.push_str("</svg>\n");
        s
    }

    /// The bounds (an empty range widened to 1) and the image's size.
    fn frame(&self) -> Frame {
        let [[x0, y0], [x1, y1]] = self.bounds;
        // Slanted category labels take room below the axis: the image grows by it, the plot
        // area keeps its height.
        let longest = self
            .x_categories
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0) as f64;
        let drop = (longest * CHAR_W * SLANT.to_radians().sin() - 8.0).max(0.0);
        Frame {
            x0,
            x1: if x1 > x0 { x1 } else { x0 + 1.0 },
            y0,
            y1: if y1 > y0 { y1 } else { y0 + 1.0 },
            pw: W - LEFT - RIGHT,
            ph: H - TOP - BOTTOM,
            h: H + drop,
        }
    }

    /// Where the ticks go: a 1-2-5 step on numeric axes, every category on a categorical x.
    fn ticks(&self, f: &Frame) -> (Vec<f64>, Vec<f64>) {
        let xs = if self.x_categories.is_empty() {
            ticks(f.x0, f.x1, nice_step(f.x1 - f.x0, 6.0))
        } else {
            (0..self.x_categories.len())
                .map(|i| i as f64)
                .filter(|x| (f.x0..=f.x1).contains(x))
                .collect()
        };
        (xs, ticks(f.y0, f.y1, nice_step(f.y1 - f.y0, 6.0)))
    }

    /// Grid lines at the ticks and the plot area's frame.
    fn grid(&self, s: &mut String, f: &Frame, xs: &[f64], ys: &[f64]) {
        let _ = writeln!(
            s,
            r##"<g class="axes" stroke="#cccccc" stroke-width="0.5">"##
        );
        for &x in xs {
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{TOP}" x2="{:.1}" y2="{:.1}"/>"#,
                f.sx(x),
                f.sx(x),
                TOP + f.ph
            );
        }
        for &y in ys {
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
                f.sy(y),
                LEFT + f.pw,
                f.sy(y)
            );
        }
        s.push_str("</g>\n");
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black" stroke-width="1"/>"#,
            f.pw, f.ph
        );
    }

    /// The ticks' labels: numbers as the axis formats them, categories slanted.
    fn tick_labels(&self, s: &mut String, f: &Frame, xs: &[f64], ys: &[f64]) {
        let x_step = nice_step(f.x1 - f.x0, 6.0);
        let y_step = nice_step(f.y1 - f.y0, 6.0);
        let _ = writeln!(s, r#"<g class="tick-labels" fill="black">"#);
        for &x in xs {
            if self.x_categories.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    f.sx(x),
                    TOP + f.ph + 16.0,
                    escape(&(self.x_fmt)(x, x_step))
                );
            } else {
                let (tx, ty) = (f.sx(x) + 4.0, TOP + f.ph + 14.0);
                let _ = writeln!(
                    s,
                    r#"<text x="{tx:.1}" y="{ty:.1}" text-anchor="end" transform="rotate(-{SLANT} {tx:.1} {ty:.1})">{}</text>"#,
                    escape(&self.x_categories[x as usize])
                );
            }
        }
        for &y in ys {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                f.sy(y) + 4.0,
                escape(&(self.y_fmt)(y, y_step))
            );
        }
        s.push_str("</g>\n");
    }

    fn axis_labels(&self, s: &mut String, f: &Frame) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + f.pw / 2.0,
            f.h - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + f.ph / 2.0,
            escape(&self.y_label)
        );
    }

    /// One entry per named series, right of the plot area.
    fn legend(&self, s: &mut String, f: &Frame) {
        let _ = writeln!(s, r#"<g class="legend">"#);
        let mut y = TOP + 8.0;
        for c in self.series.iter().filter(|c| !c.name.is_empty()) {
            let lx = LEFT + f.pw + 14.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="14" height="4" fill="{}"/>"#,
                y - 4.0,
                hex(c.color)
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{y:.1}">{}</text>"#,
                lx + 20.0,
                escape(&c.name)
            );
            y += 18.0;
        }
        s.push_str("</g>\n");
    }
}

/// One series' marks, cut to the plot area (points that are not finite are left out).
fn series(s: &mut String, f: &Frame, c: &ChartSeries) {
    let color = hex(c.color);
    let area = f.area();
    let finite: Vec<&[f64; 2]> = c
        .points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
        .collect();
    let pixels: Vec<Px> = finite.iter().map(|p| f.px(p)).collect();
    let dot = |s: &mut String, (x, y): Px, r: f32| {
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.2}" cy="{y:.2}" r="{r}" fill="{color}"/>"#
        );
    };
    match c.mark {
        Mark::Line | Mark::Dashed => {
            let style = if c.mark == Mark::Dashed {
                r#"stroke-width="1.2" stroke-dasharray="6 4""#
            } else {
                r#"stroke-width="1.5""#
            };
            for run in clip_polyline(&pixels, area).iter().filter(|r| r.len() > 1) {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" {style} points="{}"><title>{}</title></polyline>"#,
                    points_attr(run),
                    escape(&c.name)
                );
            }
            // A reference level (dashed) is not data: no markers.
            if c.mark == Mark::Line && pixels.len() <= SPARSE {
                for &p in pixels.iter().filter(|&&p| inside(p, area)) {
                    dot(s, p, 2.5);
                }
            }
        }
        Mark::Band => {
            let poly = clip_polygon(&pixels, area);
            if poly.len() >= 3 {
                let _ = writeln!(
                    s,
                    r#"<polygon fill="{color}" fill-opacity="0.2" stroke="none" points="{}"/>"#,
                    points_attr(&poly)
                );
            }
        }
        Mark::Points(r) => {
            for &p in pixels.iter().filter(|&&p| inside(p, area)) {
                dot(s, p, r);
            }
        }
        Mark::Segments => {
            let whole = |pair: &&[[f64; 2]]| pair.iter().flatten().all(|v| v.is_finite());
            for pair in c.points.chunks_exact(2).filter(whole) {
                if let Some(((x1, y1), (x2, y2))) =
                    clip_segment(f.px(&pair[0]), f.px(&pair[1]), area)
                {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" stroke="{color}" stroke-width="1.5"/>"#
                    );
                }
            }
        }
        Mark::Bars(w) => {
            let [l, t, r, b] = area;
            for p in finite {
                let (a, z) = (f.sx(p[0] - w / 2.0).max(l), f.sx(p[0] + w / 2.0).min(r));
                let top = f.sy(p[1].max(0.0)).clamp(t, b);
                let base = f.sy(p[1].min(0.0)).clamp(t, b);
                if z > a {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{a:.2}" y="{top:.2}" width="{:.2}" height="{:.2}" fill="{color}"/>"#,
                        (z - a).max(0.5),
                        (base - top).max(0.0)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_1_2_5_and_ticks_cover_the_range() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.9, 6.0), 0.2);
        assert_eq!(nice_step(3000.0, 6.0), 500.0);
        assert_eq!(
            ticks(0.1, 1.0, 0.2),
            vec![0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert!(ticks(0.0, 1.0, 0.0).is_empty());
    }

    #[test]
    fn chart_has_title_ticks_legend_and_escaped_names() {
        let f = |v: f64, _s: f64| format!("{v}");
        let chart = Chart {
            title: "loss <tiny>".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            bounds: [[0.0, 0.0], [10.0, 2.0]],
            series: vec![ChartSeries {
                name: "#1 a&b".into(),
                color: Color32::RED,
                mark: Mark::Line,
                points: vec![[0.0, 2.0], [10.0, f64::NAN], [10.0, 0.5]],
            }],
            x_fmt: &f,
            y_fmt: &f,
            x_categories: Vec::new(),
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("loss &lt;tiny&gt;"));
        assert!(
            svg.contains(">#1 a&amp;b</text>"),
            "legend names the series"
        );
        assert!(
            svg.contains(">10</text>") && svg.contains(">0.5</text>"),
            "tick labels"
        );
        assert!(!svg.contains("NaN"));
        assert!(svg.contains("#ff0000"));
    }

    /// Issue 45: curves sat in a clip-path that some renderers drop, and a one-point series did
    /// not show at all. The data is cut to the plot area in the file itself, and a sparse line
    /// has a marker on each point.
    #[test]
    fn data_is_cut_to_the_plot_area_without_a_clip_path_and_sparse_lines_have_markers() {
        let f = |v: f64, _s: f64| format!("{v}");
        let line = |name: &str, mark: Mark, points: Vec<[f64; 2]>| ChartSeries {
            name: name.into(),
            color: Color32::RED,
            mark,
            points,
        };
        let chart = Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            bounds: [[0.0, 0.0], [10.0, 1.0]],
            series: vec![
                // Out over the top between x = 3 and 7, back in after: two runs.
                line(
                    "dense",
                    Mark::Line,
                    (0..=100)
                        .map(|i| {
                            let x = i as f64 / 10.0;
                            [x, if (3.0..=7.0).contains(&x) { 2.0 } else { 0.5 }]
                        })
                        .collect(),
                ),
                line("one", Mark::Line, vec![[5.0, 0.25]]),
                line("far", Mark::Line, vec![[20.0, 5.0]]),
                line(
                    "band",
                    Mark::Band,
                    vec![[-5.0, 2.0], [15.0, 2.0], [15.0, -1.0], [-5.0, -1.0]],
                ),
                line("whisker", Mark::Segments, vec![[2.0, -3.0], [2.0, 0.5]]),
            ],
            x_fmt: &f,
            y_fmt: &f,
            x_categories: Vec::new(),
        };
        let svg = chart.render();
        assert!(!svg.contains("clip"), "{svg}");
        let doc = roxmltree::Document::parse(&svg).expect("XML");
        let data = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("data"))
            .expect("the data group");
        let [l, t, r, b] = [LEFT, TOP, W - RIGHT, H - BOTTOM];
        let within = |x: f64, y: f64| {
            (l - 0.01..=r + 0.01).contains(&x) && (t - 0.01..=b + 0.01).contains(&y)
        };
        let mut coords = Vec::new();
        for n in data.descendants().filter(roxmltree::Node::is_element) {
            if let Some(points) = n.attribute("points") {
                for xy in points.split(' ') {
                    let (x, y) = xy.split_once(',').expect("x,y");
                    coords.push((x.parse::<f64>().expect("x"), y.parse::<f64>().expect("y")));
                }
            }
            for (ax, ay) in [("cx", "cy"), ("x1", "y1"), ("x2", "y2")] {
                if let (Some(x), Some(y)) = (n.attribute(ax), n.attribute(ay)) {
                    coords.push((x.parse().expect("x"), y.parse().expect("y")));
                }
            }
        }
        assert!(coords.len() > 60, "{}", coords.len());
        for (x, y) in &coords {
            assert!(within(*x, *y), "({x}, {y}) outside the plot area");
        }
        let dense = data
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert_eq!(
            dense, 2,
            "the line leaves the area and comes back: two runs"
        );
        let circles = data
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count();
        assert_eq!(
            circles, 1,
            "the one-point line shows as a marker; the far one not at all"
        );
        let band = data
            .descendants()
            .find(|n| n.has_tag_name("polygon"))
            .expect("band");
        assert_eq!(
            band.attribute("points").expect("points").split(' ').count(),
            4,
            "the band cut to the area's four corners"
        );
        let whisker = data
            .descendants()
            .find(|n| n.has_tag_name("line"))
            .expect("whisker");
        assert_eq!(whisker.attribute("y1"), Some(format!("{b:.2}").as_str()));
    }

    #[test]
    fn categories_slant_under_their_places_and_grow_the_image() {
        let f = |v: f64, _s: f64| format!("{v}");
        let chart = |cats: &[&str]| {
            Chart {
                title: String::new(),
                x_label: "variant".into(),
                y_label: String::new(),
                bounds: [[-0.5, 0.0], [1.5, 1.0]],
                series: vec![ChartSeries {
                    name: String::new(),
                    color: Color32::BLACK,
                    mark: Mark::Segments,
                    // A whole segment, one with a NaN end (left out), and a lone point (no pair).
                    points: vec![
                        [0.0, 0.2],
                        [0.0, 0.8],
                        [1.0, f64::NAN],
                        [1.0, 0.5],
                        [1.0, 0.1],
                    ],
                }],
                x_fmt: &f,
                y_fmt: &f,
                x_categories: cats.iter().map(|c| (*c).to_owned()).collect(),
            }
            .render()
        };
        let short = chart(&["a", "b"]);
        let long = chart(&["a", "direct-pointwise-epochs=10"]);
        assert!(short.contains(r#"height="440""#), "{short}");
        let height = |svg: &str| -> f64 {
            let at = svg.find("height=\"").expect("height") + 8;
            svg[at..at + svg[at..].find('"').expect("end")]
                .parse()
                .expect("number")
        };
        assert!(height(&long) > 440.0 + 50.0, "room for the long name");
        assert!(long.contains(">direct-pointwise-epochs=10</text>"));
        assert_eq!(
            long.matches("rotate(-35").count(),
            2,
            "one slanted label per category"
        );
        // Category 1 sits at x = 1 in data units: 3/4 of the plot's width from its left edge.
        let x1 = LEFT + 0.75 * (W - LEFT - RIGHT);
        assert!(
            long.contains(&format!(r#"<text x="{:.1}""#, x1 + 4.0)),
            "{long}"
        );
        let data = short.split("<g class=\"data\">").nth(1).expect("data");
        assert_eq!(data.matches("<line").count(), 1, "{data}");
    }
}
