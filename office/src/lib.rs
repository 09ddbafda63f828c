//! # keqing-office: the office library
//!
//! An office's local replica and everything its staff do in a day, with no
//! network needed. It never links the server: the `keqing` binary (CLI) and
//! the demo are built on top of it.
//!
//! Map of the modules:
//! - [`store`]: the SQLite replica (documents, outbox, projections); the
//!   only module that writes SQL.
//! - [`desk`]: the office operations (register a call, visits, purchases,
//!   follow-ups, the due list, the daily summary) over the replica, with
//!   every field's limit checked before anything is written.
//! - [`sync`]: enrolment, push/pull with `keqing-server`, repair.
//! - [`ui`]: `keqing ui`, the workstation in a browser over the same desk.
//! - [`error`]: the office library's error type.

pub mod bundle;
pub mod desk;
pub mod error;
pub mod store;
pub mod sync;
pub mod ui;

pub use error::{ClientError, SyncFailure};
