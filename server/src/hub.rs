//! The sync core of the server: authenticates devices, checks every pushed
//! change, appends batches to the log, and serves the change feed.
//!
//! Ingest does as little automerge work as its checks allow. A new dossier
//! (the bulk of a first sync) is checked from its changes' operations —
//! its id, its office, its history complete and one device's — and logged
//! without being built; the projector builds its snapshot afterwards. A
//! change to a known document (or anything unusual: a merge, a missing
//! dependency) is applied to the document's snapshot, which is saved with
//! it, one document at a time, so memory stays bounded by the largest
//! document rather than by the number of dossiers. Pull does no automerge
//! work: it streams stored bytes.

use crate::store::{
    Device, DocumentState, NewLogEntry, SqliteStore, StoreError, StoredDocument, SyncStore,
    audit_actor,
};
use automerge::{Automerge, Change, ROOT, ReadDoc};
use keqing_proto::PullFeed;
use keqing_shared::dossier::{creation_of, merged_into_of};
use keqing_shared::roster::{Roster, roster_id};
use keqing_shared::sync::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// SHA-256 of a token: the store never holds tokens themselves.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> SyncError {
        tracing::error!(error = %e, "store error");
        SyncError::internal("the server's store failed; nothing was stored")
    }
}

/// How many pushes and pulls are being served right now, and when the last
/// one ended. The background projector makes way for them: statistics can
/// wait a few seconds, a device syncing should not.
#[derive(Debug)]
pub struct InFlight {
    serving: AtomicUsize,
    since: std::time::Instant,
    /// Milliseconds from `since` to the end of the last push or pull.
    last_end_ms: AtomicU64,
}

/// How long after the last push or pull the projector still makes way: a
/// device goes on applying the last batches of a pull after the server has
/// sent them (the transport's window holds a few megabytes, seconds of a
/// device's applying on two cores).
const AFTER_SYNC: std::time::Duration = std::time::Duration::from_secs(3);

/// One push or pull being served (counted until dropped).
struct Serving(Arc<InFlight>);

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight {
            serving: AtomicUsize::new(0),
            since: std::time::Instant::now(),
            last_end_ms: AtomicU64::new(0),
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a push or a pull is being served, or one ended moments ago.
    pub fn busy(&self) -> bool {
        if self.serving.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = self.last_end_ms.load(Ordering::Relaxed);
        last > 0 && self.now_ms().saturating_sub(last) < AFTER_SYNC.as_millis() as u64
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let ended = self.0.now_ms().max(1);
        self.0.last_end_ms.store(ended, Ordering::Relaxed);
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a pull waits for its device to take the next batch before it
/// ends. A pull holds a read transaction open while it streams, and the
/// WAL cannot be reused past it; a device that stopped reading (asleep,
/// stuck, or hostile) must not keep it open. An honest device slow to apply
/// a batch takes seconds; one cut off carries on from its cursor next round.
const PULL_STALL: std::time::Duration = std::time::Duration::from_secs(120);

pub struct Hub {
    /// Requests per token: a client in a loop (or an attacker) cannot
    /// starve the others.
    rate: RateLimiter,
    /// See [`PULL_STALL`].
    pull_stall: std::time::Duration,
    writer: Arc<Mutex<SqliteStore>>,
    /// Template for opening reader connections, and the connection pushes
    /// authenticate on.
    reader: Arc<Mutex<SqliteStore>>,
    /// Tells the projector that the log grew.
    appended: Arc<tokio::sync::Notify>,
    in_flight: Arc<InFlight>,
    access: Access,
}

/// Runs automerge on untrusted bytes: a panic inside it becomes an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, SyncError>) -> Result<T, SyncError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(SyncError::invalid(format!(
            "{what}: malformed automerge data"
        ))),
    }
}

/// Who may call: every RPC authenticates its caller through this.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access {
    /// Mutual TLS: every device must have a certificate bound to it and
    /// present it (`serve --mtls`). Without it, a device that has one bound
    /// must still present it.
    pub require_certificates: bool,
}

impl Access {
    /// The device calling, if its token is valid, not revoked, and shown
    /// with the certificate bound to it.
    pub(crate) fn authenticate(
        &self,
        store: &SqliteStore,
        caller: &Caller,
    ) -> Result<Device, SyncError> {
        let refuse = |why: &str| Err(SyncError::new(SyncErrorKind::Unauthenticated, why));
        if caller.token.is_empty() {
            return refuse("no device token");
        }
        let device = match store.device_by_token_hash(&token_hash(&caller.token))? {
            Some(d) if d.revoked_at.is_none() => d,
            Some(_) => return refuse("this device was revoked"),
            None => return refuse("unknown device token"),
        };
        match (&device.cert_sha256, &caller.certificate) {
            (Some(bound), Some(shown)) if bound.as_slice() == shown.as_slice() => Ok(device),
            (Some(_), _) => refuse(
                "this device's token works only with its own certificate (keqing enroll --cert --key)",
            ),
            (None, _) if self.require_certificates => refuse(
                "no certificate is bound to this device: keqing-server device cert DEVICE --out DIR",
            ),
            (None, _) => Ok(device),
        }
    }
}

fn in_scope(device: &Device, office: &str) -> bool {
    device.office.as_deref().is_none_or(|o| o == office)
}

/// A stored document: its snapshot (empty: none) with logged changes
/// applied on top (the changes an incomplete snapshot lacks, or a whole
/// log). Stored bytes are not trusted further than any others: automerge
/// runs behind [`guarded`].
pub(crate) fn replayed(snapshot: &[u8], logged: Vec<LoggedChange>) -> Result<Automerge, SyncError> {
    guarded("stored document", || {
        let mut doc = Automerge::load(snapshot)
            .map_err(|e| SyncError::internal(format!("stored snapshot: {e}")))?;
        doc.apply_changes(
            logged
                .into_iter()
                .filter_map(|c| Change::from_bytes(c.bytes).ok()),
        )
        .map_err(|e| SyncError::internal(format!("stored changes: {e}")))?;
        Ok(doc)
    })
}

/// Builds a new dossier from its first changes and reads its id and office.
fn new_dossier(changes: &[Change]) -> Result<(Automerge, String, String), SyncError> {
    guarded("new dossier", || {
        let mut doc = Automerge::new();
        doc.apply_changes(changes.iter().cloned())
            .map_err(|e| SyncError::invalid(format!("new dossier: {e}")))?;
        let text = |k: &str| -> Option<String> {
            doc.get(ROOT, k)
                .ok()
                .flatten()
                .and_then(|(v, _)| v.as_str().map(str::to_string))
        };
        match (text("id"), text("office")) {
            (Some(id), Some(office)) => Ok((doc, id, office)),
            _ => Err(SyncError::invalid(
                "the first change of an unknown document must create it (id and office)",
            )),
        }
    })
}

/// A new dossier that can be logged without applying its changes: they
/// come in causal order (each change's dependencies before it, none
/// outside the push), no two share an actor and sequence number (automerge
/// would refuse them), none names an author, none folds the dossier into
/// another (a merge is audited from the built document), and they put a
/// text id and office at the root. Returns that id and office; `None`
/// sends the dossier the long way ([`new_dossier`]), which applies the
/// changes and reports what is wrong with them.
fn deferrable_new_dossier(changes: &[Change]) -> Option<(String, String)> {
    let mut before = HashSet::new();
    let mut seqs = HashSet::new();
    for c in changes {
        // Keqing's devices never set a change's author (automerge refuses a
        // second author for one actor): one that does goes the long way.
        if !c.deps().iter().all(|d| before.contains(d))
            || !seqs.insert((c.actor_id().clone(), c.seq()))
            || c.author().is_some()
        {
            return None;
        }
        before.insert(c.hash());
    }
    let creation = guarded("new dossier", || Ok(creation_of(changes))).ok()?;
    if creation.merges {
        return None;
    }
    Some((creation.id?, creation.office?))
}

impl Hub {
    pub fn new(store: SqliteStore, appended: Arc<tokio::sync::Notify>) -> Result<Hub, StoreError> {
        let reader = store.reopen()?;
        Ok(Hub {
            rate: RateLimiter::new(limits::REQUESTS_PER_SECOND, limits::REQUEST_BURST),
            pull_stall: PULL_STALL,
            writer: Arc::new(Mutex::new(store)),
            reader: Arc::new(Mutex::new(reader)),
            appended,
            in_flight: Arc::new(InFlight::default()),
            access: Access::default(),
        })
    }

    /// The pushes and pulls being served, for the projector to make way.
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// Sets who may call (e.g. mutual TLS required).
    pub fn with_access(mut self, access: Access) -> Hub {
        self.access = access;
        self
    }

    /// Replaces the per-token request limit (tests that fire many requests).
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> Hub {
        self.rate = RateLimiter::new(per_second, burst);
        self
    }

    /// How long a pull waits for its device to take a batch (see
    /// [`PULL_STALL`], the default).
    pub fn with_pull_stall(mut self, stall: std::time::Duration) -> Hub {
        self.pull_stall = stall;
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, SyncError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = writer
                .lock()
                .map_err(|_| SyncError::internal("store lock poisoned"))?;
            f(&mut store)
        })
        .await
        .map_err(|e| SyncError::internal(format!("task failed: {e}")))?
    }
}

/// A token bucket per token (hashed): `per_second` requests on average,
/// `burst` at once. Over it, RESOURCE_EXHAUSTED; nothing else is done.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<std::collections::HashMap<[u8; 32], (f64, std::time::Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(Default::default()),
        }
    }

    pub fn check(&self, token: &str) -> Result<(), SyncError> {
        let now = std::time::Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| SyncError::internal("rate limiter lock poisoned"))?;
        if buckets.len() > 100_000 {
            // Made-up tokens must not grow this without end.
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 60);
        }
        let (tokens, at) = buckets
            .entry(token_hash(token))
            .or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(SyncError::new(
                SyncErrorKind::ResourceExhausted,
                format!(
                    "too many requests from this device (at most {} per second); retry shortly",
                    self.per_second
                ),
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// Automerge does not check a change's checksum when it parses one, so a
/// change damaged on the way would pass for another, valid change. The
/// checksum (after the 4 magic bytes) is the first 4 bytes of the change's
/// hash, which is computed from the bytes received.
fn checksum_matches(change: &Change) -> bool {
    let raw = change.raw_bytes();
    raw.len() >= 8 && raw[4..8] == change.hash().0[..4]
}

/// Checks and appends one push that [`decode_push`] accepted. Everything
/// or nothing is stored.
fn ingest(
    store: &mut SqliteStore,
    device: Device,
    decoded: DecodedPush,
) -> Result<PushAck, SyncError> {
    // The checks read in one read transaction: a lookup outside one is a
    // transaction of its own, with its own locking of the WAL index, two
    // or three per dossier. Only pushes, which hold the writer, add
    // changes and documents, so nothing they read changes before the append.
    store.begin_read()?;
    let checked = check_push(store, &device, decoded);
    store.end_read()?;
    let Checked {
        entries,
        docs,
        duplicates,
    } = checked?;
    let accepted = entries.len() as u32;
    // Read under the writer: no other push appends in between, so the
    // push's changes are exactly those after `log_before`.
    let log_before = store.max_seq()?;
    let last_seq = if entries.is_empty() {
        log_before
    } else {
        store.append(&device.id, &entries, &docs)?
    };
    Ok(PushAck {
        accepted,
        duplicates,
        last_seq,
        log_before,
        epoch: store.epoch()?,
    })
}

/// A push that passed every check, ready to append.
struct Checked {
    entries: Vec<NewLogEntry>,
    docs: Vec<DocumentState>,
    duplicates: u32,
}

/// A push decoded and checked as far as that needs no store: sizes,
/// document ids, each change's bytes and checksum, duplicates within it.
/// This is most of a push's work, done before the push takes the writer,
/// so the pushes of several devices (or one device's pipelined batches)
/// decode side by side.
pub(crate) struct DecodedPush {
    /// The device's own actor (a change the server has not seen must carry it).
    actor: Vec<u8>,
    /// The changes grouped by document, in push order.
    docs: Vec<DocChanges>,
    /// Changes sent twice within the push.
    duplicates: u32,
}

/// One document's changes in a push.
struct DocChanges {
    doc_id: String,
    changes: Vec<Change>,
    /// What [`deferrable_new_dossier`] says of these changes, if they may
    /// start a new dossier (the first depends on nothing): worked out here
    /// so the writer need not.
    creation: Option<Option<(String, String)>>,
}

/// Decodes a push (see [`DecodedPush`]); reads no store.
fn decode_push(device: &Device, changes: Vec<ChangeEnvelope>) -> Result<DecodedPush, SyncError> {
    let Some(actor) = device.actor.clone() else {
        return Err(SyncError::new(
            SyncErrorKind::FailedPrecondition,
            "this device has not enrolled its replica yet",
        ));
    };
    if changes.len() > limits::MAX_CHANGES_PER_PUSH {
        return Err(SyncError::new(
            SyncErrorKind::ResourceExhausted,
            format!(
                "{} changes in one push; at most {}",
                changes.len(),
                limits::MAX_CHANGES_PER_PUSH
            ),
        ));
    }
    // Decode and drop duplicates, keeping push order per document.
    let mut seen = HashSet::new();
    let mut duplicates = 0u32;
    let mut by_doc: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, c) in changes.into_iter().enumerate() {
        if c.bytes.len() > limits::MAX_CHANGE_BYTES {
            return Err(SyncError::new(
                SyncErrorKind::ResourceExhausted,
                format!(
                    "change {i} has {} bytes; at most {}",
                    c.bytes.len(),
                    limits::MAX_CHANGE_BYTES
                ),
            ));
        }
        if c.doc_id.is_empty()
            || c.doc_id.len() > 64
            || !c
                .doc_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(SyncError::invalid(format!("change {i}: bad document id")));
        }
        // A compressed change would be inflated while parsed: 1 MiB of
        // deflate can stand for a gigabyte. Clients send changes uncompressed
        // (after the magic and the checksum, chunk type 1, not 2).
        if c.bytes.starts_with(&AUTOMERGE_MAGIC) && c.bytes.get(8) == Some(&2) {
            return Err(SyncError::new(
                SyncErrorKind::ResourceExhausted,
                format!("change {i} is compressed; send changes uncompressed"),
            ));
        }
        let change = guarded(&format!("change {i}"), || {
            Change::from_bytes(c.bytes).map_err(|e| SyncError::invalid(format!("change {i}: {e}")))
        })?;
        if !checksum_matches(&change) {
            return Err(SyncError::invalid(format!(
                "change {i}: damaged (its checksum does not match its contents)"
            )));
        }
        if !seen.insert(change.hash()) {
            duplicates += 1;
            continue;
        }
        if !by_doc.contains_key(&c.doc_id) {
            order.push(c.doc_id.clone());
        }
        by_doc.entry(c.doc_id).or_default().push(change);
    }
    let docs = order
        .into_iter()
        .map(|doc_id| {
            let changes = by_doc.remove(&doc_id).unwrap_or_default();
            let creation = (!doc_id.starts_with("roster-")
                && changes.first().is_some_and(|c| c.deps().is_empty()))
            .then(|| deferrable_new_dossier(&changes));
            DocChanges {
                doc_id,
                changes,
                creation,
            }
        })
        .collect();
    Ok(DecodedPush {
        actor,
        docs,
        duplicates,
    })
}

/// Checks a decoded push against the store (duplicates of logged changes,
/// the documents' offices, actors) and builds the snapshots of the
/// documents it applies changes to; stores nothing.
fn check_push(
    store: &SqliteStore,
    device: &Device,
    decoded: DecodedPush,
) -> Result<Checked, SyncError> {
    let DecodedPush {
        actor,
        docs: decoded,
        mut duplicates,
    } = decoded;
    let mut entries = Vec::new();
    let mut docs = Vec::new();
    for DocChanges {
        doc_id,
        changes: pushed,
        mut creation,
    } in decoded
    {
        let mut changes = Vec::with_capacity(pushed.len());
        for c in pushed {
            if store.has_change(&c.hash().0)? {
                duplicates += 1;
                // `creation` was worked out on other changes than those left.
                creation = None;
            } else {
                changes.push(c);
            }
        }
        if changes.is_empty() {
            continue;
        }
        let existing = store.document(&doc_id)?;
        // `applied`: the changes are already in `doc`; no `doc`: a new
        // dossier logged without being built.
        let (office, doc, applied) = match existing {
            Some(StoredDocument {
                office,
                snapshot,
                complete,
                ..
            }) => {
                if !in_scope(device, &office) {
                    return Err(SyncError::denied(format!(
                        "document {doc_id} is outside this device's office"
                    )));
                }
                // What an incomplete snapshot lacks is in the log.
                let logged = if complete {
                    Vec::new()
                } else {
                    store.changes_of(&doc_id, u64::MAX)?
                };
                (office, Some(replayed(&snapshot, logged)?), false)
            }
            None => {
                let (office, doc, applied) = if let Some(code) = doc_id.strip_prefix("roster-") {
                    keqing_shared::office::office(code)
                        .map_err(|e| SyncError::invalid(e.to_string()))?;
                    let (_, genesis) =
                        Roster::genesis(code).map_err(|e| SyncError::internal(e.to_string()))?;
                    if changes[0].hash() != genesis.hash {
                        return Err(SyncError::invalid(format!(
                            "{doc_id} must start with the office's roster genesis"
                        )));
                    }
                    (code.to_string(), Some(Automerge::new()), false)
                } else {
                    let deferrable = creation.unwrap_or_else(|| deferrable_new_dossier(&changes));
                    let (doc, id, office) = match deferrable {
                        Some((id, office)) => (None, id, office),
                        None => {
                            let (doc, id, office) = new_dossier(&changes)?;
                            (Some(doc), id, office)
                        }
                    };
                    if id != doc_id {
                        return Err(SyncError::invalid(format!(
                            "document {doc_id} says its id is {id}"
                        )));
                    }
                    keqing_shared::office::office(&office)
                        .map_err(|e| SyncError::invalid(e.to_string()))?;
                    let applied = doc.is_some();
                    (office, doc, applied)
                };
                if !in_scope(device, &office) {
                    return Err(SyncError::denied(format!(
                        "document {doc_id} is outside this device's office"
                    )));
                }
                (office, doc, applied)
            }
        };
        // Only a roster's deterministic genesis may carry a foreign actor.
        let genesis_hash = if doc_id == roster_id(&office) {
            Roster::genesis(&office).ok().map(|(_, g)| g.hash)
        } else {
            None
        };
        for c in &changes {
            if c.actor_id().to_bytes() != actor.as_slice() && Some(c.hash()) != genesis_hash {
                return Err(SyncError::denied(format!(
                    "a new change to {doc_id} carries actor {} which is not this device's",
                    c.actor_id()
                )));
            }
        }
        for c in &changes {
            entries.push(NewLogEntry {
                hash: c.hash().0,
                doc_id: doc_id.clone(),
                office: office.clone(),
                bytes: c.raw_bytes().to_vec(),
            });
        }
        let Some(mut doc) = doc else {
            // Logged unbuilt: no snapshot yet (`complete = false` makes
            // pulls and later pushes read the logged changes) until the
            // projector builds one.
            docs.push(DocumentState {
                doc_id,
                office,
                snapshot: Vec::new(),
                complete: false,
                merged_into: None,
            });
            continue;
        };
        // A merge of duplicates is the moment a dossier gets `merged_into`:
        // the audit log records it with the batch.
        let was_merged = if applied {
            None
        } else {
            merged_into_of(&doc).ok().flatten()
        };
        let snapshot = guarded(&doc_id, || {
            if !applied {
                doc.apply_changes(changes)
                    .map_err(|e| SyncError::invalid(format!("{doc_id}: {e}")))?;
            }
            Ok(doc.save_nocompress())
        })?;
        let complete = doc.get_missing_deps(&[]).is_empty();
        let merged_into = match (was_merged, merged_into_of(&doc).ok().flatten()) {
            (None, Some(into)) => Some(into),
            _ => None,
        };
        docs.push(DocumentState {
            doc_id,
            office,
            snapshot,
            complete,
            merged_into,
        });
    }
    Ok(Checked {
        entries,
        docs,
        duplicates,
    })
}

/// Where a pull's batches go: the stream to the device.
struct PullOutlet<'a> {
    tx: &'a mpsc::Sender<Result<PullBatch, SyncError>>,
    runtime: tokio::runtime::Handle,
    stall: std::time::Duration,
}

impl PullOutlet<'_> {
    /// Hands a batch (or the error ending the pull) to the stream: false
    /// when the pull should end, because the device is gone or has taken
    /// nothing for `stall` (see [`PULL_STALL`]).
    fn send(&self, item: Result<PullBatch, SyncError>) -> bool {
        match self
            .runtime
            .block_on(self.tx.send_timeout(item, self.stall))
        {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(
                    stall_secs = self.stall.as_secs(),
                    "pull ended: the device took no batch"
                );
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }
}

/// Streams the feed of a device's scope after `cursor` into `out`.
fn serve_pull(
    store: &SqliteStore,
    device: &Device,
    cursor: u64,
    client_epoch: &str,
    max_batch: u32,
    out: &PullOutlet<'_>,
) -> Result<(), SyncError> {
    let scope = device.office.as_deref();
    let limit = max_batch.clamp(1, limits::PULL_BATCH);
    let epoch = store.epoch()?;
    store.begin_read()?;
    let result = (|| -> Result<(), SyncError> {
        // A cursor of another epoch (this store was restored from a backup)
        // points into a different log: start over from the snapshots.
        let mut cursor = if client_epoch.is_empty() || client_epoch == epoch {
            cursor
        } else {
            0
        };
        if cursor == 0 {
            // Bootstrap: whole documents as of `upto`, then the log after it.
            let upto = store.max_seq()?;
            let mut after = String::new();
            loop {
                let page = store.snapshots_after(scope, &after, limit)?;
                let last_page = (page.len() as u32) < limit;
                let mut batch = PullBatch {
                    epoch: epoch.clone(),
                    ..Default::default()
                };
                for (snap, complete) in page {
                    after = snap.doc_id.clone();
                    if complete {
                        batch.snapshots.push(snap);
                    } else {
                        batch.changes.extend(store.changes_of(&snap.doc_id, upto)?);
                    }
                }
                batch.cursor = if last_page { upto } else { 0 };
                if !out.send(Ok(batch)) {
                    return Ok(());
                }
                if last_page {
                    break;
                }
            }
            cursor = upto;
        }
        loop {
            let changes = store.changes_after(scope, cursor, limit)?;
            let done = (changes.len() as u32) < limit;
            if let Some(last) = changes.last() {
                cursor = last.seq;
            }
            let batch = PullBatch {
                snapshots: Vec::new(),
                changes,
                cursor,
                done,
                epoch: epoch.clone(),
            };
            if !out.send(Ok(batch)) || done {
                return Ok(());
            }
        }
    })();
    store.end_read()?;
    result
}

impl keqing_proto::SyncHandler for Hub {
    async fn enroll(&self, caller: Caller, actor: Vec<u8>) -> Result<DeviceInfo, SyncError> {
        self.rate.check(&caller.token)?;
        let access = self.access;
        if actor.is_empty() || actor.len() > 64 {
            return Err(SyncError::invalid("an automerge actor id is 1 to 64 bytes"));
        }
        self.blocking(move |store| {
            let device = access.authenticate(store, &caller)?;
            match &device.actor {
                Some(a) if a != &actor => {
                    return Err(SyncError::new(
                        SyncErrorKind::FailedPrecondition,
                        "this token is already bound to another replica; add a new device for this one",
                    ));
                }
                Some(_) => {}
                None => {
                    if store.device_with_actor(&actor)?.is_some() {
                        return Err(SyncError::new(
                            SyncErrorKind::FailedPrecondition,
                            "this replica is already enrolled as another device",
                        ));
                    }
                    store.bind_actor(&device.id, &actor)?;
                    store.audit(&audit_actor(&device), "device.enroll", &device.id, "replica bound")?;
                    tracing::info!(device = %device.id, name = %device.name, "device enrolled its replica");
                }
            }
            Ok(DeviceInfo {
                device_id: device.id,
                name: device.name,
                office: device.office,
            })
        })
        .await
    }

    async fn push(
        &self,
        caller: Caller,
        changes: Vec<ChangeEnvelope>,
    ) -> Result<PushAck, SyncError> {
        self.rate.check(&caller.token)?;
        let n = changes.len();
        let access = self.access;
        let _serving = self.in_flight.enter();
        let (writer, reader) = (self.writer.clone(), self.reader.clone());
        let ack = tokio::task::spawn_blocking(move || {
            let poisoned = |_| SyncError::internal("store lock poisoned");
            // Authenticated on the readers' connection and decoded without
            // the writer: a device's next push decodes while the one before
            // is appended, and pushes take turns only to check against the
            // store and append.
            let device = access.authenticate(&*reader.lock().map_err(poisoned)?, &caller)?;
            let decoded = decode_push(&device, changes)?;
            ingest(&mut *writer.lock().map_err(poisoned)?, device, decoded)
        })
        .await
        .map_err(|e| SyncError::internal(format!("task failed: {e}")))
        .and_then(|r| r);
        match &ack {
            Ok(a) if a.accepted > 0 => {
                self.appended.notify_one();
                tracing::debug!(
                    changes = n,
                    accepted = a.accepted,
                    duplicates = a.duplicates,
                    "push"
                )
            }
            Ok(a) => tracing::debug!(
                changes = n,
                accepted = a.accepted,
                duplicates = a.duplicates,
                "push"
            ),
            Err(e) => tracing::info!(changes = n, error = %e, "push refused"),
        }
        ack
    }

    async fn pull(
        &self,
        caller: Caller,
        cursor: u64,
        epoch: String,
        max_batch: u32,
    ) -> Result<PullFeed, SyncError> {
        self.rate.check(&caller.token)?;
        let reader = {
            let template = self
                .reader
                .lock()
                .map_err(|_| SyncError::internal("store lock poisoned"))?;
            template.reopen()?
        };
        let device = self.access.authenticate(&reader, &caller)?;
        if device.office.is_none() {
            // Headquarters receives every office's dossiers, names and phones.
            reader.audit(
                &audit_actor(&device),
                "hq.pull",
                "all offices",
                &format!("from cursor {cursor}"),
            )?;
        }
        let (tx, rx) = mpsc::channel(2);
        let runtime = tokio::runtime::Handle::current();
        let stall = self.pull_stall;
        tokio::task::spawn_blocking(move || {
            let out = PullOutlet {
                tx: &tx,
                runtime,
                stall,
            };
            if let Err(e) = serve_pull(&reader, &device, cursor, &epoch, max_batch, &out) {
                out.send(Err(e));
            }
        });
        // Served until the stream is sent: the batches queued here run
        // several ahead of what the device has applied.
        Ok(PullFeed {
            batches: rx,
            keep_alive: Box::new(self.in_flight.enter()),
        })
    }

    async fn repair(
        &self,
        caller: Caller,
        docs: Vec<DocHeads>,
    ) -> Result<Vec<ChangeEnvelope>, SyncError> {
        self.rate.check(&caller.token)?;
        let access = self.access;
        if docs.len() > limits::MAX_CHANGES_PER_PUSH {
            return Err(SyncError::new(
                SyncErrorKind::ResourceExhausted,
                "too many documents in one repair",
            ));
        }
        self.blocking(move |store| {
            let device = access.authenticate(store, &caller)?;
            if device.office.is_none() {
                store.audit(
                    &audit_actor(&device),
                    "hq.repair",
                    "all offices",
                    &format!("{} dossiers compared", docs.len()),
                )?;
            }
            let mut missing = Vec::new();
            for d in docs {
                let Some(StoredDocument { office, .. }) = store.document(&d.doc_id)? else {
                    continue;
                };
                if !in_scope(&device, &office) {
                    return Err(SyncError::denied(format!(
                        "document {} is outside this device's office",
                        d.doc_id
                    )));
                }
                let doc = replayed(&[], store.changes_of(&d.doc_id, u64::MAX)?)?;
                // Heads the server does not know (unpushed local work) are ignored.
                let have: Vec<automerge::ChangeHash> = d
                    .heads
                    .iter()
                    .map(|h| automerge::ChangeHash(*h))
                    .filter(|h| doc.get_change_by_hash(h).is_some())
                    .collect();
                for c in doc.get_changes(&have) {
                    missing.push(ChangeEnvelope {
                        doc_id: d.doc_id.clone(),
                        bytes: c.raw_bytes().to_vec(),
                    });
                }
            }
            Ok(missing)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_busy_while_serving_and_a_moment_after() {
        let in_flight = Arc::new(InFlight::default());
        assert!(!in_flight.busy(), "nothing served yet");
        let push = in_flight.enter();
        let pull = in_flight.enter();
        assert!(in_flight.busy());
        drop(push);
        assert!(in_flight.busy(), "the pull is still served");
        drop(pull);
        assert!(in_flight.busy(), "devices still apply what they pulled");
        std::thread::sleep(AFTER_SYNC + std::time::Duration::from_millis(50));
        assert!(!in_flight.busy());
    }
}
