//! The GUI's lowest floor: what the views show, and nothing drawn. The `ui-data` thread answers
//! queries against the database ([`backend`]); the UI keeps the answers in [`cache`]; the runs
//! table's filter language ([`filter`]); the NAS searches and studies started from the app
//! ([`searches`]).

pub mod backend;
pub mod cache;
pub mod filter;
pub mod opening;
pub mod searches;
