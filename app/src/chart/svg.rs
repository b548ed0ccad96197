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

    fn xy(&self, p: &[f64; 2]) -> String {
        format!("{:.2},{:.2}", self.sx(p[0]), self.sy(p[1]))
    }
}

impl Chart<'_> {
    /// The SVG document: title, grid, tick labels, axis labels, the data clipped to the plot
    /// area, and the legend right of it.
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
        let _ = writeln!(
            s,
            r#"<clipPath id="plot-area"><rect x="{LEFT}" y="{TOP}" width="{}" height="{}"/></clipPath>"#,
            f.pw, f.ph
        );
        let _ = writeln!(s, r#"<g clip-path="url(#plot-area)">"#);
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

/// One series' marks (points that are not finite are left out).
fn series(s: &mut String, f: &Frame, c: &ChartSeries) {
    let color = hex(c.color);
    let finite = c
        .points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite());
    let path = || {
        finite
            .clone()
            .map(|p| f.xy(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match c.mark {
        Mark::Line => {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
                path(),
                escape(&c.name)
            );
        }
        Mark::Band => {
            let _ = writeln!(
                s,
                r#"<polygon fill="{color}" fill-opacity="0.2" stroke="none" points="{}"/>"#,
                path()
            );
        }
        Mark::Points(r) => {
            for p in finite {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.2}" cy="{:.2}" r="{r}" fill="{color}"/>"#,
                    f.sx(p[0]),
                    f.sy(p[1])
                );
            }
        }
        Mark::Dashed => {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.2" stroke-dasharray="6 4" points="{}"><title>{}</title></polyline>"#,
                path(),
                escape(&c.name)
            );
        }
        Mark::Segments => {
            let whole = |pair: &&[[f64; 2]]| pair.iter().flatten().all(|v| v.is_finite());
            for pair in c.points.chunks_exact(2).filter(whole) {
                let _ = writeln!(
                    s,
                    r#"<line x1="{:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{color}" stroke-width="1.5"/>"#,
                    f.sx(pair[0][0]),
                    f.sy(pair[0][1]),
                    f.sx(pair[1][0]),
                    f.sy(pair[1][1])
                );
            }
        }
        Mark::Bars(w) => {
            for p in finite {
                let (a, b) = (f.sx(p[0] - w / 2.0), f.sx(p[0] + w / 2.0));
                let (top, base) = (f.sy(p[1].max(0.0)), f.sy(p[1].min(0.0)));
                let _ = writeln!(
                    s,
                    r#"<rect x="{a:.2}" y="{top:.2}" width="{:.2}" height="{:.2}" fill="{color}"/>"#,
                    (b - a).max(0.5),
                    (base - top).max(0.0)
                );
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
        let data = short
            .split("clip-path=\"url(#plot-area)\">")
            .nth(1)
            .expect("data");
        assert_eq!(data.matches("<line").count(), 1, "{data}");
    }
}
