//! Numbers, durations and names as the app and the CLI's figures write them, and the palette of
//! curve colours. No drawing (egui's `Color32` is a colour value here).

use egui::Color32;

/// `v` with as many decimals as tick spacing `step` needs.
pub fn format_num(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s == "-0" { "0".into() } else { s }
}

/// A count in few characters: 950, 12k, 1.5M.
pub fn format_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        format!("{v:.0}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

/// A log axis' tick: the value whose log10 is `v`.
pub fn format_log(v: f64) -> String {
    let x = 10f64.powf(v);
    if (v - v.round()).abs() < 1e-9 && !(-3.0..=4.0).contains(&v) {
        format!("1e{}", v.round())
    } else if x >= 1.0 {
        trim(x).replace(".0", "")
    } else {
        format!("{:.*}", (-x.log10().floor()).clamp(0.0, 8.0) as usize, x)
    }
}

/// Whether metric `key` is an accuracy (a fraction the app shows as %).
pub fn is_accuracy(key: &str) -> bool {
    shiftadd_core::study::report::is_accuracy(key)
}

/// Quote a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A palette of distinguishable colours for runs and curves: ten hues, then six darker shades
/// of them, so that a study of up to 16 variants (`add-aug-factors` has 11) gives no two the
/// same colour; beyond that it repeats.
pub fn color(i: usize) -> Color32 {
    const P: [Color32; 16] = [
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
        Color32::from_rgb(0x22, 0x5e, 0xa8),
        Color32::from_rgb(0xb0, 0x5a, 0x10),
        Color32::from_rgb(0x2e, 0x8b, 0x3e),
        Color32::from_rgb(0x9a, 0x20, 0x30),
        Color32::from_rgb(0x6a, 0x48, 0xa8),
        Color32::from_rgb(0x1c, 0x8c, 0x8c),
    ];
    P[i % P.len()]
}

/// `h:mm:ss` or `m:ss`.
pub fn format_secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_curves_get_sixteen_colours() {
        for i in 0..16 {
            for j in 0..i {
                assert_ne!(color(i), color(j), "curves {j} and {i} share a colour");
            }
        }
        assert_eq!(color(16), color(0));
    }
}
