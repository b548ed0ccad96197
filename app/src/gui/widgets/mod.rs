//! Widgets any view may use, importing no view: the series and band plots with their legends,
//! ticks and hover (`plot`), the Save dialog and the files it writes (`export`), run notes as
//! Markdown (`markdown`), figures drawn off screen as PNG (`figure`), parallel coordinates
//! (`parallel`), the small shared controls (`common`: the cost-model toggle), and a search's or study's progress
//! line with its Stop button (`job`).

pub mod common;
pub mod export;
pub mod figure;
pub mod job;
pub mod markdown;
pub mod parallel;
pub mod plot;
