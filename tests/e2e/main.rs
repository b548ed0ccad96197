//! End-to-end tests of the `shiftadd` binary and its database: one integration-test binary, so
//! libtorch is linked once.

mod bad_input;
mod cli;
mod concurrency;
mod fuzz;
mod gpu_check;
mod gui;
mod hardware;
mod layering;
mod lifecycle;
mod link;
mod models;
mod nas;
mod segmentation;
mod shiftaddaug;
mod slurm;
mod study;
mod support;
mod tree;
