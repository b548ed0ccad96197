//! Figures as PNG, drawn off screen: the SVG a view exports, rasterised at the width and scale
//! asked for — no buttons in it, whatever the window's size — with the fonts the app itself draws
//! with, so that the picture is the same on every machine and needs no system fonts.

use std::sync::{Arc, OnceLock};

use egui::ColorImage;
use resvg::{tiny_skia, usvg};

/// The size a figure is drawn at: `width` in points (the SVG's own units), `scale` pixels per
/// point (2 for print).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FigureSize {
    pub width: f32,
    pub scale: f32,
}

impl Default for FigureSize {
    fn default() -> Self {
        Self {
            width: 760.0,
            scale: 2.0,
        }
    }
}

impl FigureSize {
    pub const WIDTH: std::ops::RangeInclusive<f32> = 200.0..=4000.0;
    pub const SCALE: std::ops::RangeInclusive<f32> = 1.0..=4.0;
}

/// The fonts of the figures: egui's own, Ubuntu as the sans-serif every SVG here asks for.
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_font_data(epaint_default_fonts::UBUNTU_LIGHT.to_vec());
            db.load_font_data(epaint_default_fonts::HACK_REGULAR.to_vec());
            db.set_sans_serif_family("Ubuntu");
            db.set_monospace_family("Hack");
            Arc::new(db)
        })
        .clone()
}

/// `svg` drawn `size.width` points wide (its height in proportion) at `size.scale` pixels per
/// point.
pub fn rasterize(svg: &str, size: FigureSize) -> Result<ColorImage, String> {
    if !(FigureSize::WIDTH.contains(&size.width) && FigureSize::SCALE.contains(&size.scale)) {
        return Err(format!(
            "a figure is {}–{} points wide at {}–{}×: {} at {}× asked for",
            FigureSize::WIDTH.start(),
            FigureSize::WIDTH.end(),
            FigureSize::SCALE.start(),
            FigureSize::SCALE.end(),
            size.width,
            size.scale
        ));
    }
    let options = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("the figure's SVG: {e}"))?;
    let own = tree.size();
    let k = size.width * size.scale / own.width();
    let (w, h) = (
        (own.width() * k).round() as u32,
        (own.height() * k).round().max(1.0) as u32,
    );
    let mut pixmap =
        tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("cannot draw a {w}×{h} image"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(k, k),
        &mut pixmap.as_mut(),
    );
    Ok(ColorImage::from_rgba_premultiplied(
        [w as usize, h as usize],
        pixmap.data(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="440" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="760" height="440" fill="white"/>
<rect x="100" y="100" width="200" height="100" fill="#ff0000"/>
<text x="400" y="300" font-size="40">loss</text>
</svg>"##;

    #[test]
    fn a_figure_is_drawn_at_the_size_and_scale_asked_for_with_its_text() {
        let img = rasterize(
            SVG,
            FigureSize {
                width: 380.0,
                scale: 2.0,
            },
        )
        .expect("drawn");
        assert_eq!(
            img.size,
            [760, 440],
            "380 points at 2× keep the SVG's proportions"
        );
        let at = |x: usize, y: usize| img.pixels[y * img.size[0] + x];
        assert_eq!(
            at(150, 150),
            egui::Color32::from_rgb(255, 0, 0),
            "the red box"
        );
        assert_eq!(at(10, 10), egui::Color32::WHITE, "a white background");
        // The text is drawn with the bundled font: dark pixels where "loss" stands.
        let dark = (290..310)
            .flat_map(|y| (400..480).map(move |x| (x, y)))
            .filter(|&(x, y)| at(x, y).r() < 128)
            .count();
        assert!(dark > 50, "{dark} dark pixels: the text was not drawn");
        let big = rasterize(
            SVG,
            FigureSize {
                width: 760.0,
                scale: 3.0,
            },
        )
        .expect("drawn");
        assert_eq!(big.size, [2280, 1320]);
        assert!(
            rasterize(
                SVG,
                FigureSize {
                    width: 10.0,
                    scale: 1.0
                }
            )
            .is_err()
        );
        assert!(rasterize("not svg", FigureSize::default()).is_err());
    }
}
