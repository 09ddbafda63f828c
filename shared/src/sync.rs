//! The sync protocol in domain terms: what crosses the wire between an
//! office device and the server, without any wire format. The proto crate
//! maps these to and from gRPC messages.
//!
//! Sync is a change feed, not a per-document conversation: a device pushes
//! the automerge changes of its outbox in batches, and pulls "every change in
//! my scope after cursor N" in batches. A fresh device (cursor 0) receives
//! whole-document snapshots first, then the changes after them.

use thiserror::Error;

/// One automerge change of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEnvelope {
    pub doc_id: String,
    pub bytes: Vec<u8>,
}

/// A change as the server's log holds it, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub seq: u64,
    pub doc_id: String,
    pub bytes: Vec<u8>,
}

/// A whole saved document, for bootstrapping a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub doc_id: String,
    pub document: Vec<u8>,
}

/// One batch of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullBatch {
    pub snapshots: Vec<Snapshot>,
    pub changes: Vec<LoggedChange>,
    /// The cursor to store once this batch is applied.
    pub cursor: u64,
    /// No more batches after this one for now.
    pub done: bool,
}

/// The server's acknowledgement of a push, sent after its commit is durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushAck {
    pub accepted: u32,
    /// Changes the server already had (pushing twice is harmless).
    pub duplicates: u32,
    pub last_seq: u64,
}

/// Who a device is, as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    /// The office code; `None` for a headquarters device.
    pub office: Option<String>,
}

/// A document id and its heads, for the repair path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocHeads {
    pub doc_id: String,
    pub heads: Vec<[u8; 32]>,
}

/// Limits the server enforces, shared so clients batch within them.
pub mod limits {
    /// Largest single automerge change accepted.
    pub const MAX_CHANGE_BYTES: usize = 1 << 20;
    /// Most changes in one push.
    pub const MAX_CHANGES_PER_PUSH: usize = 5_000;
    /// Largest gRPC message either side decodes.
    pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
    /// Most changes a client pushes in one batch.
    pub const PUSH_BATCH: usize = 1_000;
    /// Most changes (or snapshots) in one pull batch.
    pub const PULL_BATCH: u32 = 2_000;
}

/// Why a sync request was refused. Each kind maps to one gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncErrorKind {
    /// No token, an unknown token, or a revoked device.
    Unauthenticated,
    /// Another office's dossier, or an actor that is not the device's.
    PermissionDenied,
    /// Malformed bytes, unknown document, inconsistent ids.
    InvalidArgument,
    /// Too large, too many.
    ResourceExhausted,
    /// The replica and the server disagree about who the device is.
    FailedPrecondition,
    /// The server could not be reached or is shutting down.
    Unavailable,
    /// A fault on the server; nothing was stored.
    Internal,
}

impl SyncErrorKind {
    pub const ALL: [SyncErrorKind; 7] = [
        SyncErrorKind::Unauthenticated,
        SyncErrorKind::PermissionDenied,
        SyncErrorKind::InvalidArgument,
        SyncErrorKind::ResourceExhausted,
        SyncErrorKind::FailedPrecondition,
        SyncErrorKind::Unavailable,
        SyncErrorKind::Internal,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind:?}: {message}")]
pub struct SyncError {
    pub kind: SyncErrorKind,
    pub message: String,
}

impl SyncError {
    pub fn new(kind: SyncErrorKind, message: impl Into<String>) -> SyncError {
        SyncError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> SyncError {
        SyncError::new(SyncErrorKind::InvalidArgument, message)
    }
    pub fn denied(message: impl Into<String>) -> SyncError {
        SyncError::new(SyncErrorKind::PermissionDenied, message)
    }
    pub fn internal(message: impl Into<String>) -> SyncError {
        SyncError::new(SyncErrorKind::Internal, message)
    }
}
