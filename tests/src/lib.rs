//! Test support shared by the end-to-end tests and the `fuzz` binary.

pub mod fuzz;
