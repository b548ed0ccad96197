//! What a run *is*, as plain data: its configuration ([`config`]), the NAS search space
//! ([`space`]), the architecture specs every model and cost is built from ([`arch`]), and the
//! layer list of a sub-model ([`layers`]). No tensors, no threads: this folder never imports
//! `model/`, `ops/` or tch, so the cost model, the NAS space and the app's forms can use it alone.

pub mod arch;
pub mod config;
pub mod layers;
pub mod space;
pub mod study;
