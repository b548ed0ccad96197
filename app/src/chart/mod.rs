//! The bottom floor of the app: plot and chart maths with no egui drawing, shared by the GUI and
//! the CLI — curves as data ([`series`]), formatting and the palette ([`format`]), a study's bands
//! ([`bands`]), SVG charts ([`svg`]), a study's figures ([`figures`], `study --figures`) and its
//! parallel coordinates with the keys' importance ([`parallel`]).
//! Nothing here imports `gui/` or `cli/` (the layering test holds it to that).

pub mod bands;
pub mod figures;
pub mod format;
pub mod parallel;
pub mod series;
pub mod svg;
