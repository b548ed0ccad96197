//! The app's views, one file (or folder) each, importing no other view: what two views share
//! lives in [`super::widgets`], [`super::ctx`] or [`super::data`]. The runs list ([`runs`]) is
//! always at hand; the others are tabs.

pub mod compare;
pub mod hardware;
pub mod launch;
pub mod monitor;
pub mod nas;
pub mod runs;
pub mod study;
pub mod weights;
