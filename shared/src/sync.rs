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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushAck {
    pub accepted: u32,
    /// Changes the server already had (pushing twice is harmless).
    pub duplicates: u32,
    /// The end of the log once the push was appended...
    pub last_seq: u64,
    /// ...and just before: the push's changes are everything in between.
    /// A device whose cursor was `log_before` holds everything up to
    /// `last_seq` and need not pull back what it pushed.
    pub log_before: u64,
    /// The server epoch these positions belong to.
    pub epoch: String,
}

/// What a read of patient data was: opening a dossier, showing a list of
/// patients, writing a report to a file.
pub const READ_ACTIONS: [&str; 3] = ["dossier.open", "list.read", "report.export"];
/// The longest `who` of a read (a staff name, or `os:` and an OS account).
pub const READ_WHO_CHARS: usize = 64;
/// The longest `target` of a read (a dossier id, a list or report and its
/// file).
pub const READ_TARGET_CHARS: usize = 300;

/// One read of patient data at an office device: who opened which
/// dossier, showed which list, exported which report, when. It travels
/// from the device to the server's read audit, and from there to the
/// office's other devices (where the 主管 sees the office's audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The read's number at its device (sent), or its position in the
    /// server's read audit (received).
    pub seq: u64,
    /// The device's name; empty when sent (the server knows who sends).
    pub device: String,
    pub at: String,
    pub who: String,
    pub action: String,
    pub target: String,
}

impl ReadEntry {
    /// The rule on a read a device sends (each refused read refuses the
    /// whole exchange): numbered, a real time, one of [`READ_ACTIONS`],
    /// bounded printable texts. The reason otherwise. Only a device that
    /// forges its reads breaks it; a time ahead of the server's clock is
    /// kept as the device said it (a device whose clock was wrong must not
    /// hold its audit back for ever).
    pub fn check(&self) -> Result<(), String> {
        let printable = |field: &str, text: &str, max: usize| {
            let n = text.chars().count();
            if n == 0 || n > max || text.chars().any(char::is_control) {
                Err(format!("a read's {field}: 1 to {max} printable characters"))
            } else {
                Ok(())
            }
        };
        if self.seq == 0 || self.seq > i64::MAX as u64 {
            return Err("a read's number is from 1 to 2^63 - 1".into());
        }
        crate::when::parse_datetime(&self.at).map_err(|e| format!("a read's time: {e}"))?;
        printable("who", &self.who, READ_WHO_CHARS)?;
        if !READ_ACTIONS.contains(&self.action.as_str()) {
            return Err(format!(
                "a read's action is one of {}",
                READ_ACTIONS.join(", ")
            ));
        }
        printable("target", &self.target, READ_TARGET_CHARS)
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn a_read_is_checked_field_by_field() {
        let good = ReadEntry {
            seq: 1,
            device: String::new(),
            at: "2026-11-20T10:00:00".into(),
            who: "李娜".into(),
            action: "dossier.open".into(),
            target: "01a2".into(),
        };
        assert_eq!(good.check(), Ok(()));
        let bad = |f: fn(&mut ReadEntry)| {
            let mut r = good.clone();
            f(&mut r);
            r.check().unwrap_err()
        };
        assert!(bad(|r| r.seq = 0).contains("number"));
        assert!(bad(|r| r.seq = u64::MAX).contains("number"));
        assert!(bad(|r| r.at = "yesterday".into()).contains("time"));
        assert!(bad(|r| r.who = "x".repeat(READ_WHO_CHARS + 1)).contains("who"));
        assert!(bad(|r| r.who = "李\u{1b}[2J".into()).contains("who"));
        assert!(bad(|r| r.action = "dossier.delete".into()).contains("action"));
        assert!(bad(|r| r.target = String::new()).contains("target"));
    }
}

/// A device's reads for the server, and where it is in its office's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadsExchange {
    pub reads: Vec<ReadEntry>,
    pub office_cursor: u64,
}

/// The server's answer: the sent reads are kept up to `stored_through`;
/// the office's other devices' reads after the cursor, and the new cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadsAnswer {
    pub stored_through: u64,
    pub office: Vec<ReadEntry>,
    pub office_cursor: u64,
    pub more: bool,
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

/// The server's answer to a repair: the changes the device lacks, as a
/// causally complete prefix when the answer reached its size limit
/// (`complete` false: apply these, then ask again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairAnswer {
    pub missing: Vec<ChangeEnvelope>,
    pub complete: bool,
}

/// Who is calling the server: the device's bearer token, and the SHA-256
/// of the certificate it presented over mutual TLS, if any. (No `Debug`:
/// tokens are never logged.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub token: String,
    pub certificate: Option<[u8; 32]>,
    /// What the device said of itself (`keqing-client` metadata), if it did.
    pub client: Option<ClientState>,
}

/// What a device says of itself with each call (fleet health): its
/// version and what it has waiting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientState {
    pub version: String,
    /// Changes in its outbox, not yet acknowledged.
    pub outbox: u64,
    /// Changes and pulled data it set aside (refused, quarantined).
    pub quarantined: u64,
}

impl ClientState {
    /// The `keqing-client` metadata value: `version=0.1.0 outbox=12 quarantined=0`.
    pub fn to_header(&self) -> String {
        format!(
            "version={} outbox={} quarantined={}",
            self.version, self.outbox, self.quarantined
        )
    }

    /// Reads a `keqing-client` value; refuses anything else than
    /// [`ClientState::to_header`] writes (at most 200 bytes, a version of
    /// 1 to 32 letters, digits, `.`, `-`, `+`).
    pub fn parse_header(v: &str) -> Result<ClientState, String> {
        if v.len() > 200 {
            return Err("keqing-client metadata over 200 bytes".into());
        }
        let (mut version, mut outbox, mut quarantined) = (None, None, None);
        for part in v.split(' ') {
            let (k, val) = part
                .split_once('=')
                .ok_or_else(|| format!("keqing-client metadata: `{part}` is not key=value"))?;
            let number = || {
                val.parse::<u64>()
                    .map_err(|_| format!("keqing-client metadata: {k} is not a count"))
            };
            match k {
                "version"
                    if (1..=32).contains(&val.len())
                        && val
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b)) =>
                {
                    version = Some(val.to_string())
                }
                "outbox" => outbox = Some(number()?),
                "quarantined" => quarantined = Some(number()?),
                _ => return Err(format!("keqing-client metadata: bad `{k}`")),
            }
        }
        match (version, outbox, quarantined) {
            (Some(version), Some(outbox), Some(quarantined)) => Ok(ClientState {
                version,
                outbox,
                quarantined,
            }),
            _ => Err("keqing-client metadata: version, outbox and quarantined are needed".into()),
        }
    }
}

/// A caller known by its token alone (no client certificate).
impl From<&str> for Caller {
    fn from(token: &str) -> Caller {
        Caller {
            token: token.to_string(),
            ..Default::default()
        }
    }
}

impl From<String> for Caller {
    fn from(token: String) -> Caller {
        Caller {
            token,
            ..Default::default()
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

/// Limits the server enforces, shared so clients batch within them.
pub mod limits {
    /// Largest single automerge change accepted.
    pub const MAX_CHANGE_BYTES: usize = 1 << 20;
    /// Largest saved dossier (uncompressed automerge document) a push may
    /// grow a document to (see [`crate::limits`]).
    pub const MAX_DOSSIER_BYTES: usize = 4 << 20;
    /// Most changes in one push.
    pub const MAX_CHANGES_PER_PUSH: usize = 5_000;
    /// Largest gRPC message either side decodes.
    pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
    /// Most changes a client pushes in one batch...
    pub const PUSH_BATCH: usize = 1_000;
    /// ...and most bytes of changes (a batch of one bigger change is sent
    /// alone): well under the message limit.
    pub const PUSH_BATCH_BYTES: usize = 4 << 20;
    /// Most changes (or snapshots) in one pull batch...
    pub const PULL_BATCH: u32 = 2_000;
    /// ...and most bytes, well under the message limit: a batch ends once
    /// it holds this much (it always holds at least one item, and no item
    /// is larger than a dossier may be).
    pub const PULL_BATCH_BYTES: usize = 4 << 20;
    /// Most bytes of changes one repair answers (the device asks again
    /// for the rest).
    pub const REPAIR_BYTES: usize = 8 << 20;
    /// Calls one device may have in progress at once (pushes, pulls,
    /// repairs, reports): a sync needs three.
    pub const CALLS_PER_DEVICE: usize = 8;
    /// Pulls one device may have open at once (a pull holds a few batches
    /// of memory until the device reads them).
    pub const PULLS_PER_DEVICE: usize = 2;
    /// Repairs one device may have going at once.
    pub const REPAIRS_PER_DEVICE: usize = 1;
    /// Most reads one exchange sends, or brings back.
    pub const READS_PER_EXCHANGE: usize = 500;
    /// Most notices (transfers, erasures) one answer brings, and most
    /// dossiers a device may ask about at once.
    pub const NOTICES_PER_ANSWER: usize = 500;
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
    /// The dossier a change is for was erased, or transferred to another
    /// office after the change's records: the device drops its copy.
    Gone,
}

impl SyncErrorKind {
    pub const ALL: [SyncErrorKind; 8] = [
        SyncErrorKind::Unauthenticated,
        SyncErrorKind::PermissionDenied,
        SyncErrorKind::InvalidArgument,
        SyncErrorKind::ResourceExhausted,
        SyncErrorKind::FailedPrecondition,
        SyncErrorKind::Unavailable,
        SyncErrorKind::Internal,
        SyncErrorKind::Gone,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind:?}: {message}")]
pub struct SyncError {
    pub kind: SyncErrorKind,
    pub message: String,
    /// The change a push was refused for: its index in the push. A refusal
    /// with one is about that change's bytes and will not change on retry
    /// (the device puts the change aside and pushes the rest); one without
    /// is about the request or the moment (a limit of requests, a fault).
    pub change: Option<u32>,
}

impl SyncError {
    pub fn new(kind: SyncErrorKind, message: impl Into<String>) -> SyncError {
        SyncError {
            kind,
            message: message.into(),
            change: None,
        }
    }
    /// The same refusal, about the change at `index` in the push.
    pub fn at_change(mut self, index: usize) -> SyncError {
        self.change = u32::try_from(index).ok();
        self
    }
    /// Too large or too many: RESOURCE_EXHAUSTED.
    pub fn exhausted(message: impl Into<String>) -> SyncError {
        SyncError::new(SyncErrorKind::ResourceExhausted, message)
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

/// The first bytes of every automerge chunk (a document or a change); the
/// chunk type is the byte after the 4-byte checksum that follows them.
pub const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Reads an unsigned LEB128 number (automerge's integer encoding).
fn leb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The heads a saved document records in its header, read without loading
/// it (sorted). `None` unless the bytes are exactly one document chunk: a
/// document followed by loose changes has more than its header says.
///
/// The layout is automerge's binary format: magic (4 bytes), checksum (4),
/// chunk type (1; 0 is a document), the chunk's length (LEB128), then the
/// actors (a count, each a length and its bytes) and the heads (a count,
/// 32 bytes each).
pub fn saved_heads(bytes: &[u8]) -> Option<Vec<[u8; 32]>> {
    let mut at = chunk_contents(bytes, 0)?;
    for _ in 0..leb128(bytes, &mut at)? {
        let actor = usize::try_from(leb128(bytes, &mut at)?).ok()?;
        at = at.checked_add(actor)?;
    }
    let mut heads = hashes(bytes, &mut at)?;
    heads.sort_unstable();
    Some(heads)
}

/// Where the contents of the one chunk `bytes` holds start, if it is a
/// chunk of type `chunk_type` (0 a document, 1 an uncompressed change)
/// that ends exactly where `bytes` ends.
fn chunk_contents(bytes: &[u8], chunk_type: u8) -> Option<usize> {
    if bytes.get(..4)? != AUTOMERGE_MAGIC || *bytes.get(8)? != chunk_type {
        return None;
    }
    let mut at = 9;
    let len = usize::try_from(leb128(bytes, &mut at)?).ok()?;
    (at.checked_add(len)? == bytes.len()).then_some(at)
}

/// A count (LEB128) and that many 32-byte hashes, read at `at`.
fn hashes(bytes: &[u8], at: &mut usize) -> Option<Vec<[u8; 32]>> {
    let count = leb128(bytes, at)?;
    let mut hashes = Vec::new();
    for _ in 0..count {
        hashes.push(<[u8; 32]>::try_from(bytes.get(*at..at.checked_add(32)?)?).ok()?);
        *at += 32;
    }
    Some(hashes)
}

/// A change's hash and the hashes it depends on, read from its header
/// without decoding its operations. `None` unless the bytes are exactly one
/// uncompressed change chunk whose checksum holds.
///
/// A change chunk is magic (4 bytes), checksum (4), chunk type (1; 1 is an
/// uncompressed change), the chunk's length (LEB128), then its contents,
/// which start with the dependencies (a count, 32 bytes each). The hash is
/// SHA-256 of everything after the checksum, and the checksum is its first
/// four bytes.
pub fn change_header(bytes: &[u8]) -> Option<([u8; 32], Vec<[u8; 32]>)> {
    use sha2::Digest;
    let mut at = chunk_contents(bytes, 1)?;
    let hash: [u8; 32] = sha2::Sha256::digest(&bytes[8..]).into();
    if hash[..4] != bytes[4..8] {
        return None;
    }
    Some((hash, hashes(bytes, &mut at)?))
}

/// Whether a local document (saved bytes) already holds everything in
/// `snapshots` and `changes`, judged from headers alone: every head of each
/// snapshot, and every change that no other incoming change depends on, is
/// one of the local heads (the rest are their ancestors). A device pulling
/// documents it made itself — an office that worked offline and then
/// enrolled, or any device after a push, pulls back all it pushed — skips
/// them without loading or decoding anything. `false` whenever in doubt.
///
/// Safe with untrusted bytes: a change counts as held only when its own
/// hash is a local head, i.e. the local document applied these very bytes.
pub fn already_has(local: &[u8], snapshots: &[&[u8]], changes: &[Vec<u8>]) -> bool {
    let Some(local) = saved_heads(local) else {
        return false;
    };
    let known = |h: &[u8; 32]| local.binary_search(h).is_ok();
    for s in snapshots {
        match saved_heads(s) {
            Some(heads) if heads.iter().all(known) => {}
            _ => return false,
        }
    }
    let Some(headers) = changes
        .iter()
        .map(|b| change_header(b))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let depended: std::collections::HashSet<&[u8; 32]> =
        headers.iter().flat_map(|(_, deps)| deps).collect();
    headers
        .iter()
        .map(|(hash, _)| hash)
        .filter(|h| !depended.contains(h))
        .all(known)
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
        // A fresh device receiving one whole document: no changes to apply.
        if let ([snapshot], None, []) = (snapshots, local, changes) {
            let doc = Automerge::load(snapshot)
                .map_err(|e| SyncError::invalid(format!("snapshot: {e}")))?;
            // One document chunk (what servers send) is stored as it came:
            // saving it again would give the same bytes at some cost.
            let document = match saved_heads(snapshot) {
                Some(_) if !doc.get_heads().is_empty() => Some((snapshot.to_vec(), doc)),
                _ => saved(doc),
            };
            return Ok(Merged {
                document,
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
        let hashes: Vec<_> = decoded.iter().map(|c| c.hash()).collect();
        doc.apply_changes(decoded)
            .map_err(|e| SyncError::invalid(format!("change: {e}")))?;
        // Nothing missing means nothing queued: every change applied. The
        // lookup by hash rebuilds each change, a sixth of a fresh device's
        // merging, so it is kept for the rare batch with a gap.
        let waiting = if doc.get_missing_deps(&[]).is_empty() {
            Vec::new()
        } else {
            hashes
                .iter()
                .zip(changes)
                .filter(|(h, _)| doc.get_change_by_hash(h).is_none())
                .map(|(h, b)| (h.to_string(), b.clone()))
                .collect()
        };
        // A document new here, made of incoming changes that all applied:
        // those changes one after the other are already a saved form that
        // automerge loads (what `save_incremental` writes). Saving the
        // document whole costs a tenth of a fresh device's merging; its
        // next local edit saves it whole.
        let fresh = local.is_none() && snapshots.is_empty() && waiting.is_empty();
        let document = if fresh && !doc.get_heads().is_empty() {
            let mut seen = std::collections::HashSet::new();
            let bytes = hashes
                .iter()
                .zip(changes)
                .filter(|(h, _)| seen.insert(**h))
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            Some((bytes, doc))
        } else {
            saved(doc)
        };
        Ok(Merged { document, waiting })
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
    fn a_document_new_here_is_stored_as_its_changes() {
        let mut source = automerge::Automerge::new();
        let first = change(&mut source, "a");
        let second = change(&mut source, "b");
        // Out of order and one twice: stored once each, and loadable.
        let m = merge_remote(None, &[], &[second.clone(), first.clone(), second.clone()]).unwrap();
        let (bytes, doc) = m.document.unwrap();
        assert_eq!(bytes, [second.clone(), first.clone()].concat());
        assert_eq!(doc.get_heads(), source.get_heads());
        let loaded = automerge::Automerge::load(&bytes).unwrap();
        assert_eq!(loaded.get_heads(), source.get_heads());
        assert_eq!(saved_heads(&bytes), None, "not one document chunk");
        // Merged into a local document, it is saved whole.
        let local = merge_remote(None, &[], std::slice::from_ref(&first)).unwrap();
        let (local_bytes, _) = local.document.unwrap();
        let m = merge_remote(Some(&local_bytes), &[], std::slice::from_ref(&second)).unwrap();
        let (bytes, _) = m.document.unwrap();
        assert!(saved_heads(&bytes).is_some());
        assert_eq!(
            automerge::Automerge::load(&bytes).unwrap().get_heads(),
            source.get_heads()
        );
    }

    #[test]
    fn saved_heads_reads_the_header_of_one_document_chunk() {
        let mut doc = automerge::Automerge::new();
        change(&mut doc, "a");
        let mut other = doc.fork();
        change(&mut other, "b");
        change(&mut doc, "c");
        doc.merge(&mut other).unwrap();
        let mut heads: Vec<[u8; 32]> = doc.get_heads().iter().map(|h| h.0).collect();
        heads.sort_unstable();
        assert_eq!(heads.len(), 2);
        assert_eq!(saved_heads(&doc.save_nocompress()), Some(heads.clone()));
        assert_eq!(saved_heads(&doc.save()), Some(heads));
        assert_eq!(
            saved_heads(&automerge::Automerge::new().save()),
            Some(vec![])
        );
        // A document with a loose change after it, a change, garbage, and
        // every prefix of a document: not one document chunk.
        let mut longer = doc.save_nocompress();
        let loose = change(&mut doc, "d");
        longer.extend(&loose);
        assert_eq!(saved_heads(&longer), None);
        assert_eq!(saved_heads(&loose), None);
        assert_eq!(saved_heads(b"garbage"), None);
        let bytes = doc.save_nocompress();
        for n in 0..bytes.len() {
            assert_eq!(saved_heads(&bytes[..n]), None, "prefix of {n} bytes");
        }
    }

    #[test]
    fn change_header_gives_what_automerge_decodes() {
        let mut doc = automerge::Automerge::new();
        let first = change(&mut doc, "a");
        let second = change(&mut doc, "b");
        for bytes in [&first, &second] {
            let decoded = automerge::Change::from_bytes(bytes.clone()).unwrap();
            let (hash, deps) = change_header(bytes).unwrap();
            assert_eq!(hash, decoded.hash().0);
            assert_eq!(deps, decoded.deps().iter().map(|h| h.0).collect::<Vec<_>>());
        }
        assert_eq!(
            change_header(&second).unwrap().1,
            vec![change_header(&first).unwrap().0]
        );
        // A flipped bit fails the checksum; a document, garbage and every
        // prefix are not one change chunk.
        let mut flipped = second.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(change_header(&flipped), None);
        assert_eq!(change_header(&doc.save_nocompress()), None);
        assert_eq!(change_header(b"garbage"), None);
        for n in 0..second.len() {
            assert_eq!(change_header(&second[..n]), None, "prefix of {n} bytes");
        }
    }

    #[test]
    fn already_has_only_what_the_local_heads_cover() {
        let mut source = automerge::Automerge::new();
        let first = change(&mut source, "a");
        let second = change(&mut source, "b");
        let local = source.save_nocompress();
        let snapshot = source.save_nocompress();
        assert!(already_has(&local, &[&snapshot], &[]));
        assert!(already_has(&local, &[], &[first.clone(), second.clone()]));
        assert!(already_has(&local, &[], std::slice::from_ref(&second)));
        // An ancestor alone is known too, but cannot be told from headers:
        // in doubt, merge.
        assert!(!already_has(&local, &[], std::slice::from_ref(&first)));
        // Something the local document lacks.
        let mut ahead = source.fork();
        let third = change(&mut ahead, "c");
        assert!(!already_has(&local, &[&ahead.save_nocompress()], &[]));
        assert!(!already_has(&local, &[], &[second.clone(), third]));
        // A local document behind the snapshot.
        let mut behind = automerge::Automerge::new();
        behind
            .apply_changes([automerge::Change::from_bytes(first).unwrap()])
            .unwrap();
        assert!(!already_has(&behind.save_nocompress(), &[&snapshot], &[]));
        // Garbage anywhere: in doubt.
        assert!(!already_has(b"junk", &[&snapshot], &[]));
        assert!(!already_has(&local, &[b"junk"], &[]));
        assert!(!already_has(&local, &[], &[b"junk".to_vec()]));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(merge_remote(None, &[b"garbage"], &[]).is_err());
        assert!(merge_remote(None, &[], &[b"\x85\x6f\x4a\x83garbage".to_vec()]).is_err());
        assert!(merge_remote(Some(b"junk"), &[], &[]).is_err());
    }
}
