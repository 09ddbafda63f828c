//! # keqing: the office client
//!
//! An office's local replica and everything its staff do in a day, with no
//! network needed.
//!
//! Map of the modules:
//! - [`store`]: the SQLite replica (documents, outbox, projections); the
//!   only module that writes SQL.
//! - [`desk`]: the office operations (register a call, visits, purchases,
//!   follow-ups, the due list, the daily summary) over the replica.
//! - [`sync`]: enrolment, push/pull with `keqing-server`, repair.
//! - [`cli`]: the `keqing` command line: argument parsing and output.
//! - [`ui`]: `keqing ui`, the workstation in a browser over the same desk.
//! - [`demo`]: `keqing demo`, 27 offices and headquarters on one machine.
//! - [`error`]: the client's error type.

pub mod cli;
pub mod demo;
pub mod desk;
pub mod error;
pub mod store;
pub mod sync;
pub mod ui;

pub use error::ClientError;
