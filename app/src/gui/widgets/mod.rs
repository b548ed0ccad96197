//! Widgets any view may use, importing no view: the series and band plots with their legends,
//! ticks and hover (`plot`), the Save dialog and the files it writes (`export`), run notes as
//! Markdown (`markdown`), and the small shared controls (`common`: the cost-model toggle).

pub mod common;
pub mod export;
pub mod markdown;
pub mod plot;
