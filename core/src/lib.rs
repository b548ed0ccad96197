//! `shiftadd-core`: the ShiftAddAug engine — configuration, data, elastic models, training, the
//! SQLite store and the run manager. It never depends on a GUI toolkit; the app and the CLI sit on
//! top of it.

pub mod config;
pub mod data;
pub mod export;
pub mod hw;
pub mod layers;
pub mod model;
pub mod nas;
pub mod ops;
pub mod rng;
pub mod run;
pub mod store;
pub mod train;

pub use config::Config;
pub use store::RunId;
