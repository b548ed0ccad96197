//! The SQLite store: the schema (its one owner), migrations, the single writer thread and
//! read-only queries.
//!
//! * WAL mode; every connection waits up to [`BUSY_TIMEOUT`] for a lock, writers take it up front
//!   (`BEGIN IMMEDIATE`), so several processes can record runs into one database.
//! * One [`Writer`] thread per process owns the read-write connection; everything else sends it
//!   [`WriteOp`]s and it commits them in batched transactions, in order. It also beats the
//!   heartbeat of the runs this process owns.
//! * The schema version is `PRAGMA user_version`; a database from a newer version is refused.
//!
//! Layout: [`schema`] (ids, status, errors, migrations, opening connections), [`rows`] (what is
//! written and read), [`writer`] (the writer thread), [`reader`] (queries), [`check`] (integrity and
//! every row against the schema), [`keys`] (the metric keys every layer writes and reads). This folder imports nothing else from the crate.

mod check;
pub mod compact;
mod files;
pub mod import;
pub mod keys;
pub mod manage;
mod reader;
mod rows;
mod schema;
pub mod snapshot;
mod writer;

pub use check::{CheckReport, DAMAGE_LIMIT, Damage, check};
pub use reader::Reader;
pub use rows::*;
pub use schema::*;
pub use writer::{WriteOp, Writer};

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod manage_tests;
#[cfg(test)]
mod tests;
