//! `shiftadd-app`: the `shiftadd` binary — thin glue over `shiftadd-core`: the desktop app
//! ([`gui`]) and the command line (progress bars, exit codes, one-line errors).

pub mod chart;
mod cli;
pub mod gui;

pub use cli::main;
