//! `shiftadd-core`: the ShiftAddAug engine — configuration, data, elastic models, training, the
//! SQLite store and the run manager. It never depends on a GUI toolkit; the app and the CLI sit on
//! top of it.

pub mod alloc;
pub mod data;
pub mod deploy;
pub mod export;
pub mod host;
pub mod hw;
pub mod model;
pub mod nas;
pub mod ops;
pub mod protocol;
pub mod prune;
pub mod rng;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod study;
pub mod train;

pub use spec::config::Config;
pub use store::RunId;
