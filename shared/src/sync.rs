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
    /// The server's epoch: a cursor is a position in one epoch's log. A
    /// server restored from a backup starts a new epoch (and a lower log).
    pub epoch: String,
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
/// Who is calling the server: the device's bearer token, and the SHA-256
/// of the certificate it presented over mutual TLS, if any. (No `Debug`:
/// tokens are never logged.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub token: String,
    pub certificate: Option<[u8; 32]>,
}

/// A caller known by its token alone (no client certificate).
impl From<&str> for Caller {
    fn from(token: &str) -> Caller {
        Caller {
            token: token.to_string(),
            certificate: None,
        }
    }
}

impl From<String> for Caller {
    fn from(token: String) -> Caller {
        Caller {
            token,
            certificate: None,
        }
    }
}

/// How a device reaches an `https://` server: the CA its certificate must
/// be signed by (`None`: the system's trusted roots), and the device's own
/// certificate and key (PEM) for a server that asks for one (mutual TLS).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
}

/// Says which parts are there; never prints the private key.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.is_some())
            .field("cert", &self.cert_pem.is_some())
            .field("key", &self.key_pem.as_ref().map(|_| "…"))
            .finish()
    }
}

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
    /// Requests one device token may make per second on average...
    pub const REQUESTS_PER_SECOND: u32 = 50;
    /// ...and at once (a sync is two or three; a big push, one per batch).
    pub const REQUEST_BURST: u32 = 200;
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

/// The result of merging remote data into a local document.
#[derive(Debug)]
pub struct Merged {
    /// The saved document and the same document loaded (so the caller reads
    /// it without loading the bytes again: a second load was a third of a
    /// fresh device's pull), or `None` when nothing of it is known yet (only
    /// changes still waiting for their dependencies).
    pub document: Option<(Vec<u8>, automerge::Automerge)>,
    /// Changes that could not be applied yet: their dependencies are
    /// missing. Kept by the caller and offered again with the next merge.
    pub waiting: Vec<(String, Vec<u8>)>,
}

/// A merged document's stored form (without DEFLATE, like every local save:
/// see `Dossier::save`) with the document itself; `None` while it is empty.
fn saved(doc: automerge::Automerge) -> Option<(Vec<u8>, automerge::Automerge)> {
    (!doc.get_heads().is_empty()).then(|| (doc.save_nocompress(), doc))
}

/// Merges snapshots and raw changes from the server into a local document.
/// Untrusted bytes: any malformation (even a panic inside automerge) is an
/// error, and the local document is left as it was.
pub fn merge_remote(
    local: Option<&[u8]>,
    snapshots: &[&[u8]],
    changes: &[Vec<u8>],
) -> Result<Merged, SyncError> {
    use automerge::{Automerge, Change, ReadDoc};
    let run = || -> Result<Merged, SyncError> {
        // A fresh device receiving one whole document: no changes to apply,
        // only the (compressed) wire form to turn into the stored one.
        if let ([snapshot], None, []) = (snapshots, local, changes) {
            let doc = Automerge::load(snapshot)
                .map_err(|e| SyncError::invalid(format!("snapshot: {e}")))?;
            return Ok(Merged {
                document: saved(doc),
                waiting: Vec::new(),
            });
        }
        let mut doc = match local {
            Some(b) => Automerge::load(b)
                .map_err(|e| SyncError::internal(format!("local document: {e}")))?,
            None => Automerge::new(),
        };
        for s in snapshots {
            doc.load_incremental(s)
                .map_err(|e| SyncError::invalid(format!("snapshot: {e}")))?;
        }
        let decoded = changes
            .iter()
            .map(|b| {
                Change::from_bytes(b.clone())
                    .map_err(|e| SyncError::invalid(format!("change: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hashes: Vec<_> = decoded
            .iter()
            .map(|c| (c.hash(), c.raw_bytes().to_vec()))
            .collect();
        doc.apply_changes(decoded)
            .map_err(|e| SyncError::invalid(format!("change: {e}")))?;
        let waiting = hashes
            .into_iter()
            .filter(|(h, _)| doc.get_change_by_hash(h).is_none())
            .map(|(h, b)| (h.to_string(), b))
            .collect();
        Ok(Merged {
            document: saved(doc),
            waiting,
        })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(SyncError::invalid("malformed automerge data")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn change(doc: &mut automerge::Automerge, key: &str) -> Vec<u8> {
        doc.transact(|tx| tx.put(automerge::ROOT, key, 1)).unwrap();
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    #[test]
    fn changes_out_of_order_wait_and_then_apply() {
        let mut source = automerge::Automerge::new();
        let first = change(&mut source, "a");
        let second = change(&mut source, "b");
        let m = merge_remote(None, &[], std::slice::from_ref(&second)).unwrap();
        assert!(m.document.is_none(), "nothing applicable yet");
        assert_eq!(m.waiting.len(), 1);
        let m = merge_remote(None, &[], &[first, second]).unwrap();
        assert!(m.waiting.is_empty());
        let doc = automerge::Automerge::load(&m.document.unwrap().0).unwrap();
        assert_eq!(doc.get_heads(), source.get_heads());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(merge_remote(None, &[b"garbage"], &[]).is_err());
        assert!(merge_remote(None, &[], &[b"\x85\x6f\x4a\x83garbage".to_vec()]).is_err());
        assert!(merge_remote(Some(b"junk"), &[], &[]).is_err());
    }
}
