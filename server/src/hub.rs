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
//!
//! No device can starve the others ([`Admission`]): every request is
//! authenticated first (nothing is kept for a token that is not a
//! device's), then counted against its device's rate and its calls in
//! progress. Requests that only read take a reader for as long as they
//! read ([`Store::reader`]): a pull reads one bounded batch at a time
//! and holds nothing while its device has not taken the last one; a
//! repair's answer is bounded too, and only pushes take the writer.

use crate::store::{
    Budget, Device, DocumentState, LogReader, NewLogEntry, OfficeRead, PushFooting, Store,
    StoreError, StoredDocument, audit_actor,
};
use automerge::{Automerge, Change, ROOT, ReadDoc};
use keqing_proto::PullFeed;
use keqing_shared::dossier::{creation_of, merged_into_of};
use keqing_shared::lifecycle::{NoticeAnswer, NoticeRequest};
use keqing_shared::nonpatient::shared_document_genesis;
use keqing_shared::printable::printable;
use keqing_shared::sync::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
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
        if e.is_busy() {
            // Another process holds the store's write lock past the busy
            // timeout (`compact --vacuum`, an erasure's scrub): a moment's
            // condition, not a fault; the device retries.
            tracing::warn!(error = %e, "store busy");
            return SyncError::new(
                SyncErrorKind::Unavailable,
                "the server's store is busy with maintenance; nothing was stored, retry shortly",
            );
        }
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
        self.busy_at(self.now_ms())
    }

    /// [`InFlight::busy`] at `now_ms` (milliseconds on this counter's clock).
    fn busy_at(&self, now_ms: u64) -> bool {
        if self.serving.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = self.last_end_ms.load(Ordering::Relaxed);
        last > 0 && now_ms.saturating_sub(last) < AFTER_SYNC.as_millis() as u64
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
/// ends. A pull holds no connection or transaction between batches, but it
/// holds the batch it waits to hand over, and its device's pull slot; a
/// device that stopped reading (asleep, stuck, or hostile) gives both back.
/// An honest device slow to apply a batch takes seconds; one cut off
/// carries on from its cursor next round.
const PULL_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// Pulls served at once, all devices together: each holds at most a
/// couple of batches (`limits::PULL_BATCH_BYTES` each) until its device
/// reads them. 27 offices × 2 devices and headquarters fit.
const PULLS_AT_ONCE: usize = 96;

/// Pushes checked or appended at once, all devices together. A check
/// holds a view (a connection) and a core for a moment, and what it made,
/// the push's documents merged and its log entries, until the push's turn
/// at the writer: a push checked long before its turn only holds memory.
/// A few at once keep the cores busy while one appends; the others wait,
/// undecoded.
const PUSHES_AT_ONCE: usize = 4;

/// Repairs served at once, all devices together: each builds documents
/// from their logs, a core's work for a moment (a device repairs rarely:
/// after restoring a backup).
const REPAIRS_AT_ONCE: usize = 4;

pub struct Hub {
    /// Who may call, how often, how much at once.
    admission: Arc<Admission>,
    /// See [`PULL_STALL`].
    pull_stall: std::time::Duration,
    /// The store: pushes are checked on a reader and take turns at its log
    /// writer; requests that only read take a reader each.
    store: Arc<dyn Store>,
    /// See [`PUSHES_AT_ONCE`].
    pushes: Arc<tokio::sync::Semaphore>,
    /// Tells the projector that the log grew.
    appended: Arc<tokio::sync::Notify>,
    in_flight: Arc<InFlight>,
    /// What it saw of each device (fleet health), flushed by `run`.
    fleet: Arc<crate::fleet::Fleet>,
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
    pub fn authenticate(
        &self,
        store: &dyn LogReader,
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
        self.certificate_admits(&device, caller.certificate.as_ref())
            .map_err(|why| SyncError::new(SyncErrorKind::Unauthenticated, why))?;
        Ok(device)
    }

    /// Whether `shown` (the SHA-256 of the client certificate the TLS layer
    /// verified, if any) admits `device`: the one bound to it, if one is;
    /// any, or none, if none is and certificates are not required. The
    /// reason otherwise.
    pub fn certificate_admits(
        &self,
        device: &Device,
        shown: Option<&[u8; 32]>,
    ) -> Result<(), &'static str> {
        match (&device.cert_sha256, shown) {
            (Some(bound), Some(shown)) if bound.as_slice() == shown.as_slice() => Ok(()),
            (Some(_), _) => Err(
                "this device's token works only with its own certificate (keqing certificate --cert FILE --key FILE installs it)",
            ),
            (None, _) if self.require_certificates => Err(
                "no certificate is bound to this device: keqing-server device cert DEVICE --out DIR",
            ),
            (None, _) => Ok(()),
        }
    }
}

fn in_scope(device: &Device, office: &str) -> bool {
    device.office.as_deref().is_none_or(|o| o == office)
}

/// What every request passes before any work is done for it: the device
/// is authenticated ([`Access`]), then its rate ([`RateLimiter`], by device:
/// a made-up token gets nothing kept for it) and its calls in progress are
/// checked. Shared by the sync and the reports services.
pub struct Admission {
    pub access: Access,
    rate: RateLimiter,
    calls: Mutex<HashMap<String, DeviceCalls>>,
    pulls: Arc<tokio::sync::Semaphore>,
    repairs: Arc<tokio::sync::Semaphore>,
}

/// What kind of call asks to be admitted: streams and repairs hold
/// memory or a core for a while, and have limits of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Plain,
    Pull,
    Repair,
}

#[derive(Default)]
struct DeviceCalls {
    calls: usize,
    pulls: usize,
    repairs: usize,
}

/// A call in progress, counted against its device until dropped.
pub struct Call {
    admission: Arc<Admission>,
    device: String,
    kind: CallKind,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut calls = keqing_host::lock(&self.admission.calls);
        if let Some(c) = calls.get_mut(&self.device) {
            c.calls = c.calls.saturating_sub(1);
            match self.kind {
                CallKind::Pull => c.pulls = c.pulls.saturating_sub(1),
                CallKind::Repair => c.repairs = c.repairs.saturating_sub(1),
                CallKind::Plain => {}
            }
            if c.calls == 0 {
                calls.remove(&self.device);
            }
        }
    }
}

impl Admission {
    pub fn new(access: Access) -> Arc<Admission> {
        Arc::new(Admission {
            access,
            rate: RateLimiter::new(limits::REQUESTS_PER_SECOND, limits::REQUEST_BURST),
            calls: Mutex::new(HashMap::new()),
            pulls: Arc::new(tokio::sync::Semaphore::new(PULLS_AT_ONCE)),
            repairs: Arc::new(tokio::sync::Semaphore::new(REPAIRS_AT_ONCE)),
        })
    }

    /// With a per-device request limit of its own (the settings'; tests
    /// that fire many requests).
    pub fn with_rate_limit(access: Access, per_second: u32, burst: u32) -> Arc<Admission> {
        let mut a = Admission::new(access);
        if let Some(a) = Arc::get_mut(&mut a) {
            a.rate = RateLimiter::new(per_second, burst);
        }
        a
    }

    /// Admits one call of an authenticated device: RESOURCE_EXHAUSTED,
    /// saying which limit, when the device asks too often or has too many
    /// calls (pulls, repairs) going; UNAVAILABLE when the whole server
    /// serves as many pulls or repairs as it takes.
    /// (The device's rate was checked by [`Admission::enter`].)
    fn admit(self: &Arc<Self>, device: &Device, kind: CallKind) -> Result<Call, SyncError> {
        let mut calls = keqing_host::lock(&self.calls);
        let c = calls.entry(device.id.clone()).or_default();
        if c.calls >= limits::CALLS_PER_DEVICE {
            return Err(SyncError::exhausted(format!(
                "this device has {} calls in progress; at most {} at once: retry when they end",
                c.calls,
                limits::CALLS_PER_DEVICE
            )));
        }
        let (held, most, what, pool, at_once) = match kind {
            CallKind::Plain => (0, usize::MAX, "", None, 0),
            CallKind::Pull => (
                c.pulls,
                limits::PULLS_PER_DEVICE,
                "pulls",
                Some(&self.pulls),
                PULLS_AT_ONCE,
            ),
            CallKind::Repair => (
                c.repairs,
                limits::REPAIRS_PER_DEVICE,
                "repairs",
                Some(&self.repairs),
                REPAIRS_AT_ONCE,
            ),
        };
        if held >= most {
            return Err(SyncError::exhausted(format!(
                "this device has {held} {what} going; at most {most} at once"
            )));
        }
        let permit = match pool {
            Some(pool) => Some(pool.clone().try_acquire_owned().map_err(|_| {
                SyncError::new(
                    SyncErrorKind::Unavailable,
                    format!("the server is serving {at_once} {what} at once; retry shortly"),
                )
            })?),
            None => None,
        };
        c.calls += 1;
        match kind {
            CallKind::Pull => c.pulls += 1,
            CallKind::Repair => c.repairs += 1,
            CallKind::Plain => {}
        }
        Ok(Call {
            admission: self.clone(),
            device: device.id.clone(),
            kind,
            _permit: permit,
        })
    }

    /// Authenticates `caller` on a reader of `store` (off the async
    /// threads), then admits the call.
    pub async fn enter(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        caller: Caller,
        kind: CallKind,
    ) -> Result<(Device, Call), SyncError> {
        let (access, store) = (self.access, store.clone());
        let (per_second, burst) = (self.rate.per_second, self.rate.burst);
        let (device, shared_bucket) = tokio::task::spawn_blocking(move || {
            let device = access
                .authenticate(&*store.reader()?, &caller)
                .inspect_err(|e| crate::fleet::refused(e.kind))?;
            // A store several processes share keeps the buckets, so the
            // limit holds whichever process a device reaches.
            let taken = store.take_request(&device.id, per_second, burst)?;
            Ok::<_, SyncError>((device, taken))
        })
        .await
        .map_err(|e| SyncError::internal(format!("task failed: {e}")))??;
        let admitted = match shared_bucket {
            Some(true) => Ok(()),
            Some(false) => Err(self.rate.refusal()),
            None => self.rate.check(&device.id),
        }
        .and_then(|()| self.admit(&device, kind));
        let call = admitted.inspect_err(|e| crate::fleet::refused(e.kind))?;
        Ok((device, call))
    }
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
/// another (a merge is audited from the built document), together they
/// are no larger than a dossier may be, and they put a text id and office
/// at the root. Returns that id and office; `None` sends the dossier the
/// long way ([`new_dossier`]), which applies the changes, reports what is
/// wrong with them and measures the document.
fn deferrable_new_dossier(changes: &[Change]) -> Option<(String, String)> {
    let mut before = HashSet::new();
    let mut seqs = HashSet::new();
    let mut bytes = 0usize;
    for c in changes {
        // Keqing's devices never set a change's author (automerge refuses a
        // second author for one actor): one that does goes the long way.
        if !c.deps().iter().all(|d| before.contains(d))
            || !seqs.insert((c.actor_id().clone(), c.seq()))
            || c.author().is_some()
        {
            return None;
        }
        bytes += c.raw_bytes().len();
        before.insert(c.hash());
    }
    if bytes > limits::MAX_DOSSIER_BYTES {
        return None;
    }
    let creation = guarded("new dossier", || Ok(creation_of(changes))).ok()?;
    if creation.merges {
        return None;
    }
    Some((creation.id?, creation.office?))
}

impl Hub {
    pub fn new(
        store: Arc<dyn Store>,
        appended: Arc<tokio::sync::Notify>,
    ) -> Result<Hub, StoreError> {
        Hub::with_admission(store, appended, Admission::new(Access::default()))
    }

    /// A hub admitting calls through `admission` (shared with the reports
    /// service, so a device's calls of both count together).
    pub fn with_admission(
        store: Arc<dyn Store>,
        appended: Arc<tokio::sync::Notify>,
        admission: Arc<Admission>,
    ) -> Result<Hub, StoreError> {
        Ok(Hub {
            admission,
            pull_stall: PULL_STALL,
            store,
            pushes: Arc::new(tokio::sync::Semaphore::new(PUSHES_AT_ONCE)),
            appended,
            in_flight: Arc::new(InFlight::default()),
            fleet: Arc::new(crate::fleet::Fleet::default()),
        })
    }

    /// What this hub saw of the devices, for `run` to flush.
    pub fn fleet(&self) -> Arc<crate::fleet::Fleet> {
        self.fleet.clone()
    }

    /// The pushes and pulls being served, for the projector to make way.
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// With a per-device request limit of its own (the settings'; tests
    /// that fire many requests).
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> Hub {
        self.admission = Admission::with_rate_limit(self.admission.access, per_second, burst);
        self
    }

    /// How long a pull waits for its device to take a batch (see
    /// [`PULL_STALL`], the default).
    pub fn with_pull_stall(mut self, stall: std::time::Duration) -> Hub {
        self.pull_stall = stall;
        self
    }

    /// Runs `f` on the store, off the async threads. A panic in `f` fails
    /// this request only: a session it held ends with its work undone, and
    /// the next request gets the connection back ([`keqing_host::lock`]).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, SyncError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| SyncError::internal(format!("task failed: {e}")))?
    }
}

/// A token bucket per device: `per_second` requests on average, `burst` at
/// once. Over it, RESOURCE_EXHAUSTED; nothing else is done. Buckets exist
/// only for authenticated devices, so made-up tokens cannot grow it.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `device`'s bucket.
    pub fn check(&self, device: &str) -> Result<(), SyncError> {
        self.check_at(device, std::time::Instant::now())
    }

    /// [`RateLimiter::check`] at `now`.
    fn check_at(&self, device: &str, now: std::time::Instant) -> Result<(), SyncError> {
        let mut buckets = keqing_host::lock(&self.buckets);
        let (tokens, at) = buckets
            .entry(device.to_string())
            .or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(self.refusal());
        }
        *tokens -= 1.0;
        Ok(())
    }

    /// What a device over its rate is told.
    fn refusal(&self) -> SyncError {
        SyncError::exhausted(format!(
            "too many requests from this device (at most {} per second); retry shortly",
            self.per_second
        ))
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

/// A push checked on a view of the store, before it takes the writer's
/// turn, and its footing there (see [`PushFooting`]). Checking is most of
/// a push's work in the store (reading its documents, merging its changes
/// into them): done on a view, it runs beside other pushes' checks and
/// appends, in this process and in any other over the same database; the
/// turn only reads the footing again and appends. Only when the footing
/// moved in between (another push to the same documents, the same changes
/// pushed again, a transfer, an erasure) is the push checked again in the
/// turn, where nothing moves. Either way the outcome is the one a check in
/// the turn gives: refusals too wait for the turn.
pub struct ViewChecked {
    device: Device,
    /// Kept to check again in the turn.
    decoded: DecodedPush,
    footing: PushFooting,
    outcome: Result<Checked, SyncError>,
}

impl ViewChecked {
    /// Decodes a push of `changes` from `device` and checks it on a view
    /// of `store`, to append with [`ViewChecked::append`]; stores nothing,
    /// and refuses here only what needs no store (see [`decode_push`]).
    pub fn of_push(
        store: &dyn Store,
        device: &Device,
        changes: Vec<ChangeEnvelope>,
    ) -> Result<ViewChecked, SyncError> {
        let decoded = decode_push(device, changes)?;
        let view = store.push_view()?;
        let (ids, hashes) = decoded.footprint();
        let footing = view.push_footing(&ids, &hashes)?;
        let outcome = check_push(&*view, device, decoded.clone(), &footing);
        Ok(ViewChecked {
            device: device.clone(),
            decoded,
            footing,
            outcome,
        })
    }

    /// Takes the writer's turn and appends the push if the check still
    /// holds there, checking it again if its footing moved. Everything or
    /// nothing is stored.
    pub fn append(self, store: &dyn Store) -> Result<PushAck, SyncError> {
        let mut writer = store.log_writer()?;
        let (ids, hashes) = self.decoded.footprint();
        let footing = writer.push_footing(&ids, &hashes)?;
        let checked = if footing == self.footing {
            self.outcome?
        } else {
            metrics::counter!("keqing_push_rechecks_total").increment(1);
            check_push(&*writer, &self.device, self.decoded, &footing)?
        };
        let Checked {
            entries,
            docs,
            duplicates,
        } = checked;
        let accepted = entries.len() as u32;
        // Read in the writer's turn: no other push appends in between, so
        // the push's changes are exactly those after `log_before`.
        let log_before = writer.max_seq()?;
        let last_seq = if entries.is_empty() {
            log_before
        } else {
            writer.append(&self.device.id, &entries, &docs)?
        };
        let epoch = writer.epoch()?;
        writer.commit()?;
        Ok(PushAck {
            accepted,
            duplicates,
            last_seq,
            log_before,
            epoch,
        })
    }
}

/// A push that passed every check, ready to append.
#[derive(Debug)]
struct Checked {
    entries: Vec<NewLogEntry>,
    docs: Vec<DocumentState>,
    duplicates: u32,
}

/// A push decoded and checked as far as that needs no store: sizes,
/// document ids, each change's bytes and checksum, duplicates within it.
/// Done before the push reads the store, so the pushes of several devices
/// (or one device's pipelined batches) decode side by side.
#[derive(Clone)]
pub(crate) struct DecodedPush {
    /// The device's own actor (a change the server has not seen must carry it).
    actor: Vec<u8>,
    /// The changes grouped by document, in push order.
    docs: Vec<DocChanges>,
    /// Changes sent twice within the push.
    duplicates: u32,
}

/// One document's changes in a push.
#[derive(Clone)]
struct DocChanges {
    doc_id: String,
    /// Each change with its index in the push (a refusal names it).
    changes: Vec<(usize, Change)>,
    /// What [`deferrable_new_dossier`] says of these changes, if they may
    /// start a new dossier (the first depends on nothing): worked out here
    /// so the writer need not.
    creation: Option<Option<(String, String)>>,
}

impl DecodedPush {
    /// The documents and the changes of the push: what its footing is of.
    fn footprint(&self) -> (Vec<&str>, Vec<[u8; 32]>) {
        let ids = self.docs.iter().map(|d| d.doc_id.as_str()).collect();
        let hashes = self
            .docs
            .iter()
            .flat_map(|d| d.changes.iter().map(|(_, c)| c.hash().0))
            .collect();
        (ids, hashes)
    }
}

/// A document id as the server takes it: 1 to 64 ASCII letters, digits
/// and dashes (UUIDs, `roster-44`); anything else is refused before it is
/// used in a message, a log line or a query.
fn valid_doc_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
        return Err(SyncError::exhausted(format!(
            "{} changes in one push; at most {}",
            changes.len(),
            limits::MAX_CHANGES_PER_PUSH
        )));
    }
    // Decode and drop duplicates, keeping push order per document.
    let mut seen = HashSet::new();
    let mut duplicates = 0u32;
    let mut by_doc: BTreeMap<String, Vec<(usize, Change)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, c) in changes.into_iter().enumerate() {
        if c.bytes.len() > limits::MAX_CHANGE_BYTES {
            return Err(SyncError::exhausted(format!(
                "change {i} has {} bytes; at most {}",
                c.bytes.len(),
                limits::MAX_CHANGE_BYTES
            ))
            .at_change(i));
        }
        if !valid_doc_id(&c.doc_id) {
            return Err(SyncError::invalid(format!("change {i}: bad document id")).at_change(i));
        }
        if keqing_shared::catalog::parse_catalog_id(&c.doc_id).is_some() {
            return Err(SyncError::denied(format!(
                "change {i}: the catalogue is written at headquarters (keqing-server catalog import), not by devices"
            ))
            .at_change(i));
        }
        // A compressed change would be inflated while parsed: 1 MiB of
        // deflate can stand for a gigabyte. Clients send changes uncompressed
        // (after the magic and the checksum, chunk type 1, not 2).
        if c.bytes.starts_with(&AUTOMERGE_MAGIC) && c.bytes.get(8) == Some(&2) {
            return Err(SyncError::exhausted(format!(
                "change {i} is compressed; send changes uncompressed"
            ))
            .at_change(i));
        }
        let change = guarded(&format!("change {i}"), || {
            Change::from_bytes(c.bytes).map_err(|e| SyncError::invalid(format!("change {i}: {e}")))
        })
        .map_err(|e| e.at_change(i))?;
        if !checksum_matches(&change) {
            return Err(SyncError::invalid(format!(
                "change {i}: damaged (its checksum does not match its contents)"
            ))
            .at_change(i));
        }
        if !seen.insert(change.hash()) {
            duplicates += 1;
            continue;
        }
        if !by_doc.contains_key(&c.doc_id) {
            order.push(c.doc_id.clone());
        }
        by_doc.entry(c.doc_id).or_default().push((i, change));
    }
    let docs = order
        .into_iter()
        .map(|doc_id| {
            let changes = by_doc.remove(&doc_id).unwrap_or_default();
            let creation = (shared_document_genesis(&doc_id).is_none()
                && changes.first().is_some_and(|(_, c)| c.deps().is_empty()))
            .then(|| {
                let plain: Vec<Change> = changes.iter().map(|(_, c)| c.clone()).collect();
                deferrable_new_dossier(&plain)
            });
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
/// the documents' offices, actors, who a known document is and belongs to,
/// the size a document grows to) and builds the snapshots of the documents
/// it applies changes to; stores nothing. A refusal names the change it is
/// about (the first of its document's, for what is about the document).
fn check_push(
    store: &dyn LogReader,
    device: &Device,
    decoded: DecodedPush,
    footing: &PushFooting,
) -> Result<Checked, SyncError> {
    let DecodedPush {
        actor,
        docs: decoded,
        mut duplicates,
    } = decoded;
    let mut entries = Vec::new();
    let mut docs = Vec::new();
    // Which changes are logged comes with the footing, read on the same
    // view; one look at the documents for the whole push.
    let logged = |hash: &[u8; 32]| footing.logged.binary_search(hash).is_ok();
    let ids: Vec<&str> = decoded.iter().map(|d| d.doc_id.as_str()).collect();
    let mut stored = store.documents_among(&ids)?;
    let mut fates = store.fates_among(&ids)?;
    for DocChanges {
        doc_id,
        changes: pushed,
        mut creation,
    } in decoded
    {
        let mut indexed = Vec::with_capacity(pushed.len());
        for (i, c) in pushed {
            if logged(&c.hash().0) {
                duplicates += 1;
                // `creation` was worked out on other changes than those left.
                creation = None;
            } else {
                indexed.push((i, c));
            }
        }
        let Some(&(first, _)) = indexed.first() else {
            continue;
        };
        let (indices, changes): (Vec<usize>, Vec<Change>) = indexed.into_iter().unzip();
        let existing = stored.remove(&doc_id);
        let fate = fate_for(device, &doc_id, &fates.remove(&doc_id).unwrap_or_default())
            .map_err(|e| e.at_change(first))?;
        let checked = check_document(
            store,
            (device, &actor),
            &doc_id,
            existing,
            changes,
            creation,
            fate,
        )
        .map_err(|(e, at)| e.at_change(at.map_or(first, |k| indices[k])))?;
        let (new_entries, state) = checked;
        duplicates += (indices.len() - new_entries.len()) as u32;
        entries.extend(new_entries);
        docs.push(state);
    }
    Ok(Checked {
        entries,
        docs,
        duplicates,
    })
}

/// A refusal about one document of a push, with the position (among its
/// changes) of the change at fault, when it is one.
type DocRefusal = (SyncError, Option<usize>);

/// How many days after a transfer the office a dossier left may still
/// deliver what it typed before it: a device that was offline when the
/// transfer was made (offices work for days without the network) pushes
/// it late; past this, nothing of that office is taken.
pub const TRANSFER_GRACE_DAYS: i64 = 30;

/// What a push from `device` may do to a dossier, given its transfers and
/// erasure: `Err(Gone)` if it was erased, or if it left the device's office
/// more than [`TRANSFER_GRACE_DAYS`] ago; `Some(at)` if it left the
/// device's office at `at` (its changes are taken only for records before
/// then); `None`: nothing moved it away from the device.
fn fate_for(
    device: &Device,
    doc_id: &str,
    fates: &[crate::store::Fate],
) -> Result<Option<chrono::NaiveDateTime>, SyncError> {
    if let Some(erased) = fates.iter().find(|f| f.is_erasure()) {
        return Err(SyncError::new(
            SyncErrorKind::Gone,
            format!(
                "档案已删除 dossier {doc_id} was erased at headquarters ({}); this device drops it",
                erased.at
            ),
        ));
    }
    let Some(office) = device.office.as_deref() else {
        return Ok(None);
    };
    // The latest move, if it took the dossier away from this office.
    let Some(moved) = fates.iter().rev().find(|f| !f.is_erasure()) else {
        return Ok(None);
    };
    if moved.to_office == office || !fates.iter().any(|f| f.from_office == office) {
        return Ok(None);
    }
    let at = keqing_shared::when::read_stored_datetime(&moved.at)
        .ok_or_else(|| SyncError::internal(format!("transfer of {doc_id}: a bad time")))?;
    if keqing_host::now_cst().signed_duration_since(at)
        > chrono::Duration::days(TRANSFER_GRACE_DAYS)
    {
        return Err(SyncError::new(
            SyncErrorKind::Gone,
            format!(
                "档案已转出 dossier {doc_id} moved to office {} at {}; this office's changes are no longer taken",
                moved.to_office, moved.at
            ),
        ));
    }
    Ok(Some(at))
}

/// A stored document as it is: its snapshot, with the logged changes an
/// incomplete one lacks (the snapshot holds those compaction took).
fn stored_document(
    store: &dyn LogReader,
    doc_id: &str,
    snapshot: &[u8],
    complete: bool,
) -> Result<Automerge, SyncError> {
    let logged = if complete {
        Vec::new()
    } else {
        store.changes_of(doc_id, u64::MAX)?
    };
    replayed(snapshot, logged)
}

/// Checks a push's changes to one document (see [`check_not_held`]),
/// leaving out those the stored document holds already: compaction took
/// them from the log (whose hashes no longer know them), the snapshot
/// still has them, and they are not logged again.
fn check_document(
    store: &dyn LogReader,
    (device, actor): (&Device, &[u8]),
    doc_id: &str,
    existing: Option<StoredDocument>,
    changes: Vec<Change>,
    creation: Option<Option<(String, String)>>,
    moved_away_at: Option<chrono::NaiveDateTime>,
) -> Result<(Vec<NewLogEntry>, DocumentState), DocRefusal> {
    // Only a document the device may write to is read (one outside its
    // scope is refused without).
    let stored = match existing {
        Some(stored) if moved_away_at.is_some() || in_scope(device, &stored.office) => stored,
        other => {
            return check_not_held(
                store,
                (device, actor),
                doc_id,
                (other, None),
                changes,
                creation,
                moved_away_at,
            );
        }
    };
    let doc =
        stored_document(store, doc_id, &stored.snapshot, stored.complete).map_err(|e| (e, None))?;
    let pushed = changes.len();
    let (positions, unheld): (Vec<usize>, Vec<Change>) = changes
        .into_iter()
        .enumerate()
        .filter(|(_, c)| doc.get_change_by_hash(&c.hash()).is_none())
        .unzip();
    if unheld.is_empty() {
        return Ok((
            Vec::new(),
            DocumentState {
                doc_id: doc_id.to_string(),
                office: stored.office,
                snapshot: stored.snapshot,
                complete: stored.complete,
                merged_into: None,
            },
        ));
    }
    // `creation` was worked out on all the changes.
    let creation = if unheld.len() == pushed {
        creation
    } else {
        None
    };
    check_not_held(
        store,
        (device, actor),
        doc_id,
        (Some(stored), Some(doc)),
        unheld,
        creation,
        moved_away_at,
    )
    .map_err(|(e, at)| (e, at.map(|k| positions.get(k).copied().unwrap_or(k))))
}

/// Checks one document's new changes (see [`check_push`]) and returns its
/// log entries and state (`loaded`: the stored document, if read already).
fn check_not_held(
    store: &dyn LogReader,
    (device, actor): (&Device, &[u8]),
    doc_id: &str,
    (existing, loaded): (Option<StoredDocument>, Option<Automerge>),
    changes: Vec<Change>,
    creation: Option<Option<(String, String)>>,
    moved_away_at: Option<chrono::NaiveDateTime>,
) -> Result<(Vec<NewLogEntry>, DocumentState), DocRefusal> {
    let whole = |e: SyncError| (e, None);
    // `applied`: the changes are already in `doc`; no `doc`: a new
    // dossier logged without being built.
    // What each change writes of who a dossier is and where it belongs
    // (read once: both rules below go by it).
    let creations: Vec<_> = changes
        .iter()
        .map(|c| creation_of(std::slice::from_ref(c)))
        .collect();
    // Where a dossier's records count moves only by headquarters' transfer,
    // which the server writes: no device's change may write one (a forged
    // one would count an office's records at another).
    if let Some(k) = creations.iter().position(|c| c.moves) {
        return Err((
            SyncError::denied(format!(
                "a change may not move dossier {doc_id} to another office (transfers are headquarters')"
            )),
            Some(k),
        ));
    }
    let (office, doc, applied) = match existing {
        Some(StoredDocument {
            office,
            snapshot,
            complete,
            ..
        }) => {
            // A dossier transferred away from the device's office takes
            // what that office typed before the transfer (it never saw the
            // transfer); each record is still counted where it happened.
            if let Some(at) = moved_away_at {
                if let Some(k) = changes.iter().position(|c| {
                    keqing_shared::dossier::latest_record_time(c).is_some_and(|t| t > at)
                }) {
                    return Err((
                        SyncError::new(
                            SyncErrorKind::Gone,
                            format!(
                                "档案已转出 dossier {doc_id} moved to office {office}; a record after the transfer is that office's to make"
                            ),
                        ),
                        Some(k),
                    ));
                }
            } else if !in_scope(device, &office) {
                return Err(whole(SyncError::denied(format!(
                    "document {doc_id} is outside this device's office"
                ))));
            }
            // Who a dossier is and whose it is were set when it was made;
            // the server's record of its office is what scopes and
            // reports go by, and no change may say otherwise.
            if let Some(k) = creations.iter().position(|c| c.rewrites_identity) {
                return Err((
                    SyncError::denied(format!(
                        "a change may not rewrite the id or the office of dossier {doc_id} (office {office})"
                    )),
                    Some(k),
                ));
            }
            let doc = match loaded {
                Some(doc) => doc,
                None => stored_document(store, doc_id, &snapshot, complete).map_err(whole)?,
            };
            (office, Some(doc), false)
        }
        None => {
            // An office's shared documents (its roster, its non-patient
            // logs) start from their deterministic genesis.
            let (office, doc, applied) = if let Some(genesis) = shared_document_genesis(doc_id) {
                let (office, genesis) =
                    genesis.map_err(|e| whole(SyncError::invalid(e.to_string())))?;
                if changes[0].hash() != genesis.hash {
                    return Err(whole(SyncError::invalid(format!(
                        "{doc_id} must start with its genesis"
                    ))));
                }
                (office, Some(Automerge::new()), false)
            } else {
                let deferrable = creation.unwrap_or_else(|| deferrable_new_dossier(&changes));
                let (doc, id, office) = match deferrable {
                    Some((id, office)) => (None, id, office),
                    None => {
                        let (doc, id, office) = new_dossier(&changes).map_err(whole)?;
                        (Some(doc), id, office)
                    }
                };
                if id != doc_id {
                    return Err(whole(SyncError::invalid(format!(
                        "document {doc_id} says its id is {}",
                        printable(&id)
                    ))));
                }
                keqing_shared::office::office(&office)
                    .map_err(|e| whole(SyncError::invalid(e.to_string())))?;
                let applied = doc.is_some();
                (office, doc, applied)
            };
            if !in_scope(device, &office) {
                return Err(whole(SyncError::denied(format!(
                    "document {doc_id} is outside this device's office"
                ))));
            }
            (office, doc, applied)
        }
    };
    // Only a shared document's deterministic genesis may carry a foreign
    // actor.
    let genesis_hash = shared_document_genesis(doc_id)
        .and_then(Result::ok)
        .map(|(_, g)| g.hash);
    for (k, c) in changes.iter().enumerate() {
        if c.actor_id().to_bytes() != actor && Some(c.hash()) != genesis_hash {
            return Err((
                SyncError::denied(format!(
                    "a new change to {doc_id} carries actor {} which is not this device's",
                    c.actor_id()
                )),
                Some(k),
            ));
        }
    }
    // A record dated more than a day after HQ's clock was typed wrong or
    // made on a device whose clock is wrong: it would sit in every report
    // of a day to come. The device's own check uses its own clock.
    let now = keqing_host::now_cst();
    for (k, c) in changes.iter().enumerate() {
        if let Some(at) = keqing_shared::dossier::latest_record_time(c) {
            keqing_shared::when::check_not_ahead("at", at, now).map_err(|e| {
                (
                    SyncError::invalid(format!("{doc_id}: a record's time: {e}")),
                    Some(k),
                )
            })?;
        }
    }
    let entries = changes
        .iter()
        .map(|c| NewLogEntry {
            hash: c.hash().0,
            doc_id: doc_id.to_string(),
            office: office.clone(),
            bytes: c.raw_bytes().to_vec(),
        })
        .collect();
    let Some(mut doc) = doc else {
        // Logged unbuilt: no snapshot yet (`complete = false` makes
        // pulls and later pushes read the logged changes) until the
        // projector builds one.
        return Ok((
            entries,
            DocumentState {
                doc_id: doc_id.to_string(),
                office,
                snapshot: Vec::new(),
                complete: false,
                merged_into: None,
            },
        ));
    };
    // A merge of duplicates is the moment a dossier gets `merged_into`:
    // the audit log records it with the batch.
    let was_merged = if applied {
        None
    } else {
        merged_into_of(&doc).ok().flatten()
    };
    let snapshot = guarded(doc_id, || {
        if !applied {
            doc.apply_changes(changes)
                .map_err(|e| SyncError::invalid(format!("{doc_id}: {e}")))?;
        }
        Ok(doc.save_nocompress())
    })
    .map_err(whole)?;
    // The server's own limit, whatever the device's: a document that grew
    // past it would be more than a pull batch may carry.
    if snapshot.len() > limits::MAX_DOSSIER_BYTES {
        return Err(whole(SyncError::exhausted(format!(
            "document {doc_id} would grow to {} bytes; at most {} (a dossier this large takes no more edits)",
            snapshot.len(),
            limits::MAX_DOSSIER_BYTES
        ))));
    }
    let complete = doc.get_missing_deps(&[]).is_empty();
    let merged_into = match (was_merged, merged_into_of(&doc).ok().flatten()) {
        (None, Some(into)) => Some(into),
        _ => None,
    };
    Ok((
        entries,
        DocumentState {
            doc_id: doc_id.to_string(),
            office,
            snapshot,
            complete,
            merged_into,
        },
    ))
}

/// Where a pull is in its feed.
enum PullPhase {
    /// Whole documents as of `upto`, in id order (those after `after_id`
    /// still to come; `partial`: a document whose logged changes did not
    /// all fit the last batch, and the last of them sent), then the log
    /// after `upto`.
    Bootstrap {
        upto: u64,
        after_id: String,
        partial: Option<(String, u64)>,
    },
    /// The log after `cursor`.
    Feed {
        cursor: u64,
    },
    Done,
}

impl PullPhase {
    /// Whole documents as the log stands now.
    fn bootstrap(store: &dyn LogReader) -> Result<PullPhase, SyncError> {
        Ok(PullPhase::Bootstrap {
            upto: store.max_seq()?,
            after_id: String::new(),
            partial: None,
        })
    }
}

/// Where a pull from `cursor` (of server epoch `client_epoch`) begins, and
/// the store's epoch.
fn pull_start(
    store: &dyn LogReader,
    cursor: u64,
    client_epoch: &str,
) -> Result<(String, PullPhase), SyncError> {
    let epoch = store.epoch()?;
    // A cursor of another epoch (this store was restored from a backup)
    // points into a different log: start over from the snapshots. (So does
    // one below the compaction floor: see `next_batch`.)
    let phase = if cursor > 0 && (client_epoch.is_empty() || client_epoch == epoch) {
        PullPhase::Feed { cursor }
    } else {
        PullPhase::bootstrap(store)?
    };
    Ok((epoch, phase))
}

/// A whole pull at once, for a bundle's answer: the batches a pull from
/// `cursor` would send to `device`, until its end or until they hold
/// `max_bytes` (then `false`: the rest comes with the next bundle).
pub(crate) fn pull_at_once(
    store: &dyn Store,
    device: &Device,
    cursor: u64,
    client_epoch: &str,
    max_bytes: usize,
) -> Result<(String, Vec<PullBatch>, bool), SyncError> {
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    let (epoch, mut phase) = pull_start(&*store.reader()?, cursor, client_epoch)?;
    loop {
        let batch = next_batch(
            &*store.reader()?,
            device.office.as_deref(),
            &epoch,
            &mut phase,
            limits::PULL_BATCH,
        )?;
        bytes += batch.changes.iter().map(|c| c.bytes.len()).sum::<usize>()
            + batch
                .snapshots
                .iter()
                .map(|s| s.document.len())
                .sum::<usize>();
        let done = batch.done;
        batches.push(batch);
        if done {
            return Ok((epoch, batches, true));
        }
        if bytes >= max_bytes {
            return Ok((epoch, batches, false));
        }
    }
}

/// Decodes, checks and appends one push's worth of changes (every check;
/// nothing of it stored on a refusal): a live push's, and a bundle's.
pub(crate) fn push_at_once(
    store: &dyn Store,
    device: &Device,
    changes: Vec<ChangeEnvelope>,
) -> Result<PushAck, SyncError> {
    ViewChecked::of_push(store, device, changes)?.append(store)
}

/// Reads the next batch of a pull from `store`, in one short read
/// transaction, within the batch limits (count and bytes), and moves
/// `phase` past it. Between batches the pull holds nothing of the store:
/// snapshots read in a later batch may hold more than `upto` (harmless:
/// the changes after it are sent again and merge as duplicates), and the
/// log is read by sequence number, which commits in order (one writer).
fn next_batch(
    store: &dyn LogReader,
    scope: Option<&str>,
    epoch: &str,
    phase: &mut PullPhase,
    max_items: u32,
) -> Result<PullBatch, SyncError> {
    let mut budget = Budget::new(limits::PULL_BATCH_BYTES, max_items as usize);
    let mut batch = PullBatch {
        epoch: epoch.to_string(),
        ..Default::default()
    };
    // A cursor below the compaction floor (a device offline longer than
    // the horizon, or a feed compaction passed since its last batch: the
    // floor and the changes it took went in one transaction, and this batch
    // reads in one) cannot follow the log: what the log no longer holds,
    // the snapshots do, so the feed starts over from them (the device
    // merges what it holds already).
    if let PullPhase::Feed { cursor } = phase
        && *cursor < store.log_floor()?
    {
        *phase = PullPhase::bootstrap(store)?;
    }
    match phase {
        PullPhase::Bootstrap {
            upto,
            after_id,
            partial,
        } => {
            let upto = *upto;
            if let Some((doc_id, after)) = partial.take() {
                // The document as it is now: its snapshot goes again (it
                // may have become complete, or compaction may have taken
                // changes of the rest from the log into it since), then
                // the rest of its changes while it is incomplete.
                if let Some(held) = store.document(&doc_id)? {
                    let len = held.snapshot.len();
                    if !add_snapshot(&mut batch, &mut budget, &doc_id, len, || Ok(held.snapshot))? {
                        *partial = Some((doc_id, after));
                        return Ok(batch);
                    }
                    if !held.complete {
                        let (changes, more) =
                            store.changes_of_within(&doc_id, after, upto, &mut budget)?;
                        let last = changes.last().map_or(after, |c| c.seq);
                        batch.changes.extend(changes);
                        if more {
                            *partial = Some((doc_id, last));
                            return Ok(batch);
                        }
                    }
                }
            }
            let page = store.document_page(scope, after_id, max_items)?;
            let last_page = (page.len() as u32) < max_items;
            // Read ahead, in one look, the snapshots that will fit: a
            // networked store answers a look per document slower than
            // the device merges them.
            let (mut read_ahead, mut ahead_to) = (HashMap::new(), 0);
            for (at, (doc_id, complete, len)) in page.iter().enumerate() {
                if at >= ahead_to {
                    let (run, covered) = snapshots_that_fit(&page[at..], budget);
                    ahead_to = at + covered.max(1);
                    read_ahead = if run.is_empty() {
                        HashMap::new()
                    } else {
                        store.documents_among(&run)?
                    };
                }
                // A complete snapshot holds every logged change; an
                // incomplete one (or none) goes with the changes the log
                // still has (those compaction took are in the snapshot).
                // Every snapshot `add_snapshot` reads is in the run read
                // ahead (the same budget, the same view); one gone is none.
                if !add_snapshot(&mut batch, &mut budget, doc_id, *len, || {
                    Ok(read_ahead
                        .remove(doc_id)
                        .map(|held| held.snapshot)
                        .unwrap_or_default())
                })? {
                    return Ok(batch);
                }
                *after_id = doc_id.clone();
                if !complete {
                    let (changes, more) = store.changes_of_within(doc_id, 0, upto, &mut budget)?;
                    let last = changes.last().map(|c| c.seq);
                    batch.changes.extend(changes);
                    if more {
                        *partial = Some((doc_id.clone(), last.unwrap_or(0)));
                        return Ok(batch);
                    }
                }
            }
            if last_page {
                batch.cursor = upto;
                *phase = PullPhase::Feed { cursor: upto };
            }
            Ok(batch)
        }
        PullPhase::Feed { cursor } => {
            let (changes, more) = store.changes_after_within(scope, *cursor, &mut budget)?;
            if let Some(last) = changes.last() {
                *cursor = last.seq;
            }
            batch.cursor = *cursor;
            batch.changes = changes;
            batch.done = !more;
            if batch.done {
                *phase = PullPhase::Done;
            }
            Ok(batch)
        }
        PullPhase::Done => Ok(batch),
    }
}

/// The ids of the documents from the start of `page` whose snapshots
/// `add_snapshot` will take with `budget` as it stands, and how many of the
/// page's documents that covers: up to one that does not fit, or up to and
/// including an incomplete one (its logged changes take from the budget
/// too). A document without a snapshot takes nothing.
fn snapshots_that_fit(page: &[(String, bool, usize)], mut budget: Budget) -> (Vec<&str>, usize) {
    let mut run = Vec::new();
    let mut covered = 0;
    for (doc_id, complete, len) in page {
        if *len > 0 {
            if !budget.fits(*len) {
                break;
            }
            budget.take(*len);
            run.push(doc_id.as_str());
        }
        covered += 1;
        if !complete {
            break;
        }
    }
    (run, covered)
}

/// Adds a document's snapshot of `len` bytes (none: nothing to add) to a
/// pull batch, read by `read` only once it fits; `false` when the batch is
/// full.
fn add_snapshot(
    batch: &mut PullBatch,
    budget: &mut Budget,
    doc_id: &str,
    len: usize,
    read: impl FnOnce() -> Result<Vec<u8>, SyncError>,
) -> Result<bool, SyncError> {
    if len == 0 {
        return Ok(true);
    }
    if !budget.fits(len) {
        return Ok(false);
    }
    budget.take(len);
    batch.snapshots.push(Snapshot {
        doc_id: doc_id.to_string(),
        document: read()?,
    });
    Ok(true)
}

/// Feeds a pull's batches to `tx` until the end of the feed, an error (sent
/// as the pull's last item), the device gone, or the device taking nothing
/// for `stall`. Each batch is read on a pooled reader off the async
/// threads; waiting for the device holds no thread, connection or
/// transaction.
async fn feed_pull(
    store: Arc<dyn Store>,
    device: Device,
    (cursor, client_epoch, max_batch): (u64, String, u32),
    tx: mpsc::Sender<Result<PullBatch, SyncError>>,
    stall: std::time::Duration,
    fleet: Arc<crate::fleet::Fleet>,
) {
    /// Counts the pull among the open streams while it is fed.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            metrics::gauge!("keqing_open_streams").decrement(1.0);
        }
    }
    metrics::gauge!("keqing_open_streams").increment(1.0);
    let _open = Open;
    let max_items = max_batch.clamp(1, limits::PULL_BATCH);
    let scope = device.office.clone();
    let mut state: Option<(String, PullPhase)> = None;
    loop {
        let store = store.clone();
        let scope = scope.clone();
        let client_epoch = client_epoch.clone();
        let mut taken = state.take();
        let step = tokio::task::spawn_blocking(move || {
            let store = store.reader()?;
            let (epoch, mut phase) = match taken.take() {
                Some(s) => s,
                None => pull_start(&*store, cursor, &client_epoch)?,
            };
            let batch = next_batch(&*store, scope.as_deref(), &epoch, &mut phase, max_items)?;
            Ok::<_, SyncError>((batch, (epoch, phase)))
        })
        .await
        .unwrap_or_else(|e| Err(SyncError::internal(format!("task failed: {e}"))));
        let (batch, next) = match step {
            Ok(b) => b,
            Err(e) => {
                crate::fleet::refused(e.kind);
                let _ = tokio::time::timeout(stall, tx.send(Err(e))).await;
                return;
            }
        };
        let done = batch.done;
        metrics::counter!("keqing_changes_out_total").increment(batch.changes.len() as u64);
        metrics::counter!("keqing_bytes_out_total").increment(
            (batch.changes.iter().map(|c| c.bytes.len()).sum::<usize>()
                + batch
                    .snapshots
                    .iter()
                    .map(|s| s.document.len())
                    .sum::<usize>()) as u64,
        );
        match tokio::time::timeout(stall, tx.send(Ok(batch))).await {
            Ok(Ok(())) => {}
            // The device is gone.
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    device = %device.id,
                    stall_secs = stall.as_secs(),
                    "pull ended: the device took no batch"
                );
                return;
            }
        }
        if done {
            fleet.synced(&device.id);
            return;
        }
        state = Some(next);
    }
}

/// The changes of each asked document the device lacks, deduplicated by
/// document, in causal order per document, as many as
/// `limits::REPAIR_BYTES` allows: a prefix of each document's missing
/// history, so what is answered always applies.
fn repair_answer(
    store: &dyn LogReader,
    device: &Device,
    docs: Vec<DocHeads>,
) -> Result<RepairAnswer, SyncError> {
    let mut budget = Budget::new(limits::REPAIR_BYTES, usize::MAX);
    let mut answer = RepairAnswer {
        missing: Vec::new(),
        complete: true,
    };
    for d in docs {
        let Some(stored) = store.document(&d.doc_id)? else {
            continue;
        };
        if !in_scope(device, &stored.office) {
            // One the office held and headquarters moved: nothing to send
            // (the device drops it once its notice arrives).
            let moved_from_here = store
                .fates_among(&[d.doc_id.as_str()])?
                .remove(&d.doc_id)
                .unwrap_or_default()
                .iter()
                .any(|f| Some(f.from_office.as_str()) == device.office.as_deref());
            if moved_from_here {
                continue;
            }
            return Err(SyncError::denied(format!(
                "document {} is outside this device's office",
                d.doc_id
            )));
        }
        // A complete snapshot holds every logged change: one load, not a
        // replay of the log.
        let doc = stored_document(store, &d.doc_id, &stored.snapshot, stored.complete)?;
        // Heads the server does not know (unpushed local work) are ignored.
        let have: Vec<automerge::ChangeHash> = d
            .heads
            .iter()
            .map(|h| automerge::ChangeHash(*h))
            .filter(|h| doc.get_change_by_hash(h).is_some())
            .collect();
        for c in doc.get_changes(&have) {
            let bytes = c.raw_bytes();
            if !budget.fits(bytes.len()) {
                answer.complete = false;
                return Ok(answer);
            }
            budget.take(bytes.len());
            answer.missing.push(ChangeEnvelope {
                doc_id: d.doc_id.clone(),
                bytes: bytes.to_vec(),
            });
        }
    }
    Ok(answer)
}

impl keqing_proto::SyncHandler for Hub {
    async fn enroll(&self, caller: Caller, actor: Vec<u8>) -> Result<DeviceInfo, SyncError> {
        if actor.is_empty() || actor.len() > 64 {
            return Err(SyncError::invalid("an automerge actor id is 1 to 64 bytes"));
        }
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, CallKind::Plain)
            .await?;
        self.with_store(move |store| {
            let mut writer = store.log_writer()?;
            match &device.actor {
                Some(a) if a != &actor => {
                    return Err(SyncError::new(
                        SyncErrorKind::FailedPrecondition,
                        "this token is already bound to another replica; add a new device for this one",
                    ));
                }
                Some(_) => {}
                None => {
                    if writer.device_with_actor(&actor)?.is_some() {
                        return Err(SyncError::new(
                            SyncErrorKind::FailedPrecondition,
                            "this replica is already enrolled as another device",
                        ));
                    }
                    writer.bind_actor(&device.id, &actor)?;
                    writer.audit(&audit_actor(&device), "device.enroll", &device.id, "replica bound")?;
                    writer.commit()?;
                    tracing::info!(device = %device.id, name = %printable(&device.name), "device enrolled its replica");
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
        let n = changes.len();
        let started = std::time::Instant::now();
        let bytes: usize = changes.iter().map(|c| c.bytes.len()).sum();
        let client = caller.client.clone();
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, CallKind::Plain)
            .await?;
        self.fleet.pushed(&device.id, client.as_ref());
        let device_id = device.id.clone();
        let _serving = self.in_flight.enter();
        let ack = async {
            let _pushing = self.pushes.acquire().await.map_err(|_| {
                SyncError::new(SyncErrorKind::Unavailable, "the server is shutting down")
            })?;
            // Decoded and checked outside the writer's turn: pushes check
            // side by side and take turns only to append.
            self.with_store(move |store| push_at_once(store, &device, changes))
                .await
        }
        .await;
        metrics::counter!("keqing_pushes_total").increment(1);
        metrics::histogram!("keqing_push_seconds").record(started.elapsed().as_secs_f64());
        match &ack {
            Ok(a) => {
                metrics::counter!("keqing_changes_in_total").increment(u64::from(a.accepted));
                metrics::counter!("keqing_bytes_in_total").increment(bytes as u64);
                if a.accepted > 0 {
                    self.appended.notify_one();
                }
                tracing::debug!(
                    device = %device_id,
                    changes = n,
                    accepted = a.accepted,
                    duplicates = a.duplicates,
                    "push"
                )
            }
            // The message may quote what the device sent: escaped.
            Err(e) => {
                crate::fleet::refused(e.kind);
                tracing::info!(
                device = %device_id,
                changes = n,
                change = ?e.change,
                error = %printable(&e.message),
                "push refused"
                )
            }
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
        let client = caller.client.clone();
        let (device, call) = self
            .admission
            .enter(&self.store, caller, CallKind::Pull)
            .await?;
        self.fleet.pulled(&device.id, client.as_ref());
        metrics::counter!("keqing_pulls_total").increment(1);
        if device.office.is_none() {
            // Headquarters receives every office's dossiers, names and phones.
            let (store, actor) = (self.store.clone(), audit_actor(&device));
            tokio::task::spawn_blocking(move || {
                store.audit(
                    &actor,
                    "hq.pull",
                    "all offices",
                    &format!("from cursor {cursor}"),
                )
            })
            .await
            .map_err(|e| SyncError::internal(format!("task failed: {e}")))??;
        }
        // One batch waits here while the next is read: the device's window
        // holds the rest, and nothing grows while it does not read.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(feed_pull(
            self.store.clone(),
            device,
            (cursor, epoch, max_batch),
            tx,
            self.pull_stall,
            self.fleet.clone(),
        ));
        // Served until the stream is sent: the batches queued here run
        // ahead of what the device has applied. The call counts against
        // its device until then too.
        Ok(PullFeed {
            batches: rx,
            keep_alive: Box::new((self.in_flight.enter(), call)),
        })
    }

    async fn repair(&self, caller: Caller, docs: Vec<DocHeads>) -> Result<RepairAnswer, SyncError> {
        if docs.len() > limits::MAX_CHANGES_PER_PUSH {
            return Err(SyncError::exhausted(format!(
                "{} documents in one repair; at most {}",
                docs.len(),
                limits::MAX_CHANGES_PER_PUSH
            )));
        }
        if let Some(bad) = docs.iter().position(|d| !valid_doc_id(&d.doc_id)) {
            return Err(SyncError::invalid(format!(
                "document {bad} of the repair: bad document id"
            )));
        }
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, CallKind::Repair)
            .await?;
        // Each document once, whatever the request says.
        let mut seen = HashSet::new();
        let docs: Vec<DocHeads> = docs
            .into_iter()
            .filter(|d| seen.insert(d.doc_id.clone()))
            .collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            if device.office.is_none() {
                store.audit(
                    &audit_actor(&device),
                    "hq.repair",
                    "all offices",
                    &format!("{} dossiers compared", docs.len()),
                )?;
            }
            repair_answer(&*store.reader()?, &device, docs)
        })
        .await
        .map_err(|e| SyncError::internal(format!("task failed: {e}")))?
    }

    async fn share_reads(
        &self,
        caller: Caller,
        exchange: ReadsExchange,
    ) -> Result<ReadsAnswer, SyncError> {
        if exchange.reads.len() > limits::READS_PER_EXCHANGE {
            return Err(SyncError::exhausted(format!(
                "{} reads in one exchange; at most {}",
                exchange.reads.len(),
                limits::READS_PER_EXCHANGE
            )));
        }
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, CallKind::Plain)
            .await?;
        for (i, r) in exchange.reads.iter().enumerate() {
            r.check()
                .map_err(|why| SyncError::invalid(format!("read {i} of the exchange: {why}")))?;
        }
        let _serving = self.in_flight.enter();
        self.with_store(move |store| share_reads(store, &device, exchange))
            .await
    }

    async fn notices(
        &self,
        caller: Caller,
        request: NoticeRequest,
    ) -> Result<NoticeAnswer, SyncError> {
        if request.ask.len() > limits::NOTICES_PER_ANSWER {
            return Err(SyncError::exhausted(format!(
                "{} dossiers asked about; at most {}",
                request.ask.len(),
                limits::NOTICES_PER_ANSWER
            )));
        }
        if let Some(bad) = request.ask.iter().position(|id| !valid_doc_id(id)) {
            return Err(SyncError::invalid(format!(
                "dossier {bad} asked about: bad document id"
            )));
        }
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, CallKind::Plain)
            .await?;
        // A sync round waits for it: the projector makes way, as for a
        // push or a pull.
        let _serving = self.in_flight.enter();
        self.with_store(move |store| {
            Ok(store.notices(
                device.office.as_deref(),
                request.cursor,
                &request.ask,
                limits::NOTICES_PER_ANSWER as u32,
            )?)
        })
        .await
    }
}

/// How the read audit names headquarters' own devices' reads.
pub const HQ_READS_OFFICE: &str = "hq";

/// Keeps `device`'s reads (checked) under its enrolled office and name, and
/// answers with its office's other devices' reads after the cursor (none
/// for a headquarters device: it reads every office's at the server).
fn share_reads(
    store: &dyn Store,
    device: &Device,
    exchange: ReadsExchange,
) -> Result<ReadsAnswer, SyncError> {
    let office = device.office.as_deref().unwrap_or(HQ_READS_OFFICE);
    let stored_through = exchange.reads.iter().map(|r| r.seq).max().unwrap_or(0);
    let rows: Vec<OfficeRead> = exchange
        .reads
        .into_iter()
        .map(|r| OfficeRead {
            office: office.to_string(),
            device_id: device.id.clone(),
            device_name: device.name.clone(),
            device_seq: r.seq,
            at: r.at,
            who: r.who,
            action: r.action,
            target: r.target,
        })
        .collect();
    if !rows.is_empty() {
        store.store_reads(&rows)?;
    }
    let mut answer = ReadsAnswer {
        stored_through,
        office_cursor: exchange.office_cursor,
        ..ReadsAnswer::default()
    };
    let Some(office) = device.office.as_deref() else {
        return Ok(answer);
    };
    let page = store.office_reads(
        Some(office),
        exchange.office_cursor,
        limits::READS_PER_EXCHANGE as u32,
    )?;
    answer.more = page.len() == limits::READS_PER_EXCHANGE;
    if let Some(last) = page.last() {
        answer.office_cursor = last.seq;
    }
    answer.office = page
        .into_iter()
        .filter(|r| r.read.device_id != device.id)
        .map(|r| ReadEntry {
            seq: r.seq,
            device: r.read.device_name,
            at: r.read.at,
            who: r.read.who,
            action: r.read.action,
            target: r.read.target,
        })
        .collect();
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_a_moment_to_wait_and_other_store_errors_are_faults() {
        let busy = StoreError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        ));
        let e = SyncError::from(busy);
        assert_eq!(e.kind, SyncErrorKind::Unavailable, "{e}");
        assert!(e.message.contains("busy"), "{e}");
        let full = StoreError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert_eq!(SyncError::from(full).kind, SyncErrorKind::Internal);
    }

    #[test]
    fn a_device_gets_its_burst_then_its_rate_and_other_devices_their_own() {
        let limiter = RateLimiter::new(2, 3);
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        for _ in 0..3 {
            limiter.check_at("a", at(0)).unwrap();
        }
        let e = limiter.check_at("a", at(0)).unwrap_err();
        assert_eq!(e.kind, SyncErrorKind::ResourceExhausted);
        assert!(e.message.contains("at most 2 per second"), "{e}");
        limiter
            .check_at("b", at(0))
            .expect("another device's bucket is full");
        // Two per second: one more after half a second, not before.
        assert!(limiter.check_at("a", at(499)).is_err());
        limiter.check_at("a", at(500)).unwrap();
        assert!(limiter.check_at("a", at(500)).is_err());
        // A long pause refills the burst, no more.
        for _ in 0..3 {
            limiter.check_at("a", at(60_000)).unwrap();
        }
        assert!(limiter.check_at("a", at(60_000)).is_err());
    }

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
        // Times on the counter's clock, not a stopwatch: the last end, then
        // just before and at AFTER_SYNC past it.
        let ended = in_flight.last_end_ms.load(Ordering::Relaxed);
        let after = AFTER_SYNC.as_millis() as u64;
        assert!(ended > 0);
        assert!(
            in_flight.busy_at(ended + after - 1),
            "devices still apply what they pulled"
        );
        assert!(!in_flight.busy_at(ended + after));
        // Serving again is busy whatever the clock says.
        let _push = in_flight.enter();
        assert!(in_flight.busy_at(ended + 10 * after));
    }

    #[test]
    fn the_snapshots_read_ahead_are_those_add_snapshot_will_take() {
        let page = |docs: &[(bool, usize)]| -> Vec<(String, bool, usize)> {
            docs.iter()
                .enumerate()
                .map(|(n, (complete, len))| (format!("d{n}"), *complete, *len))
                .collect()
        };
        let budget = Budget::new(100, 10);
        // Up to the one that does not fit.
        let p = page(&[(true, 40), (true, 50), (true, 20)]);
        assert_eq!(snapshots_that_fit(&p, budget), (vec!["d0", "d1"], 2));
        // Up to and including an incomplete one; one without a snapshot
        // takes nothing but is covered.
        let p = page(&[(true, 0), (true, 10), (false, 10), (true, 10)]);
        assert_eq!(snapshots_that_fit(&p, budget), (vec!["d1", "d2"], 3));
        let p = page(&[(false, 0), (true, 10)]);
        assert_eq!(snapshots_that_fit(&p, budget), (vec![], 1));
        // The first item of a batch always fits; later ones within the
        // budget as it stands, items counted too.
        let p = page(&[(true, 500), (true, 1)]);
        assert_eq!(snapshots_that_fit(&p, budget), (vec!["d0"], 1));
        let mut taken = Budget::new(100, 3);
        taken.take(10);
        let p = page(&[(true, 1), (true, 1), (true, 1)]);
        assert_eq!(snapshots_that_fit(&p, taken), (vec!["d0", "d1"], 2));
    }

    /// A SQLite store in a temp dir with one device of office 44 (token
    /// "gd") enrolled with `actor`, and a hub over it.
    struct OneDevice {
        dir: tempfile::TempDir,
        store: Arc<crate::store::SqliteStore>,
        hub: Hub,
        rt: tokio::runtime::Runtime,
        actor: automerge::ActorId,
    }

    impl OneDevice {
        fn new() -> OneDevice {
            use keqing_proto::SyncHandler;
            let tmp = tempfile::tempdir().unwrap();
            let store = Arc::new(crate::store::SqliteStore::open(tmp.path()).unwrap());
            store
                .add_device(
                    "d",
                    "广东1",
                    Some("44"),
                    &token_hash("gd"),
                    "2026-11-20T00:00:00",
                    "t",
                )
                .unwrap();
            let hub = Hub::new(store.clone(), Arc::new(tokio::sync::Notify::new())).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let actor = automerge::ActorId::random();
            rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
                .unwrap();
            OneDevice {
                dir: tmp,
                store,
                hub,
                rt,
                actor,
            }
        }

        /// Pushes a new dossier `id` of office 44.
        fn create(&self, id: &str) -> Result<PushAck, SyncError> {
            use keqing_proto::SyncHandler;
            let (_, created) = keqing_shared::dossier::Dossier::create(
                id,
                "44",
                keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap(),
                self.actor.clone(),
                1,
            )
            .unwrap();
            let envelope = ChangeEnvelope {
                doc_id: id.into(),
                bytes: created.bytes,
            };
            self.rt.block_on(self.hub.push("gd".into(), vec![envelope]))
        }
    }

    /// A reader that counts the looks that read snapshots.
    struct CountingReader<'a> {
        inner: &'a dyn LogReader,
        single: std::cell::Cell<usize>,
        batched: std::cell::Cell<usize>,
    }

    impl LogReader for CountingReader<'_> {
        fn device_by_token_hash(&self, token: &[u8]) -> crate::store::Result<Option<Device>> {
            self.inner.device_by_token_hash(token)
        }
        fn device_with_actor(&self, actor: &[u8]) -> crate::store::Result<Option<Device>> {
            self.inner.device_with_actor(actor)
        }
        fn document(&self, doc_id: &str) -> crate::store::Result<Option<StoredDocument>> {
            self.single.set(self.single.get() + 1);
            self.inner.document(doc_id)
        }
        fn documents_among(
            &self,
            ids: &[&str],
        ) -> crate::store::Result<HashMap<String, StoredDocument>> {
            self.batched.set(self.batched.get() + 1);
            self.inner.documents_among(ids)
        }
        fn push_footing(
            &self,
            ids: &[&str],
            hashes: &[[u8; 32]],
        ) -> crate::store::Result<PushFooting> {
            self.inner.push_footing(ids, hashes)
        }
        fn max_seq(&self) -> crate::store::Result<u64> {
            self.inner.max_seq()
        }
        fn epoch(&self) -> crate::store::Result<String> {
            self.inner.epoch()
        }
        fn log_floor(&self) -> crate::store::Result<u64> {
            self.inner.log_floor()
        }
        fn changes_of(&self, doc_id: &str, upto: u64) -> crate::store::Result<Vec<LoggedChange>> {
            self.inner.changes_of(doc_id, upto)
        }
        fn changes_of_within(
            &self,
            doc_id: &str,
            after: u64,
            upto: u64,
            budget: &mut Budget,
        ) -> crate::store::Result<(Vec<LoggedChange>, bool)> {
            self.inner.changes_of_within(doc_id, after, upto, budget)
        }
        fn changes_after_within(
            &self,
            office: Option<&str>,
            after: u64,
            budget: &mut Budget,
        ) -> crate::store::Result<(Vec<LoggedChange>, bool)> {
            self.inner.changes_after_within(office, after, budget)
        }
        fn document_page(
            &self,
            office: Option<&str>,
            after_id: &str,
            limit: u32,
        ) -> crate::store::Result<Vec<(String, bool, usize)>> {
            self.inner.document_page(office, after_id, limit)
        }
        fn snapshot_of(&self, doc_id: &str) -> crate::store::Result<Vec<u8>> {
            self.single.set(self.single.get() + 1);
            self.inner.snapshot_of(doc_id)
        }
        fn snapshots_after(
            &self,
            office: Option<&str>,
            after_id: &str,
            limit: u32,
        ) -> crate::store::Result<Vec<(Snapshot, bool)>> {
            self.inner.snapshots_after(office, after_id, limit)
        }
        fn fates_among(
            &self,
            ids: &[&str],
        ) -> crate::store::Result<HashMap<String, Vec<crate::store::Fate>>> {
            self.inner.fates_among(ids)
        }
    }

    /// A bootstrap's batch reads the snapshots that fit in one look, not
    /// one a document (a networked store pays a round trip a look), and
    /// still sends each as stored, with an unbuilt one's logged changes.
    #[test]
    fn a_bootstrap_batch_reads_its_snapshots_in_one_look_per_run() {
        let one = OneDevice::new();
        let id = |n: usize| format!("01a21111-0000-7000-8000-{n:012}");
        let create = |n: usize| {
            one.create(&id(n)).unwrap();
        };
        // 30 dossiers built into snapshots, then two logged after them
        // (no snapshot yet: their changes go instead), among them by id.
        for n in (0..32).filter(|n| *n != 10 && *n != 20) {
            create(n);
        }
        crate::projector::catch_up(&mut *one.store.projections().unwrap(), |_, _| {}).unwrap();
        create(10);
        create(20);
        let inner = one.store.reader().unwrap();
        let reader = CountingReader {
            inner: &*inner,
            single: Default::default(),
            batched: Default::default(),
        };
        let epoch = reader.epoch().unwrap();
        let mut phase = PullPhase::bootstrap(&reader).unwrap();
        let batch = next_batch(&reader, Some("44"), &epoch, &mut phase, 100).unwrap();
        assert_eq!(reader.single.get(), 0, "no look for a single snapshot");
        assert_eq!(
            reader.batched.get(),
            3,
            "one look each for the runs before, between and after the unbuilt two"
        );
        let sent: Vec<&str> = batch.snapshots.iter().map(|s| s.doc_id.as_str()).collect();
        let built: Vec<String> = (0..32).filter(|n| *n != 10 && *n != 20).map(id).collect();
        assert_eq!(sent, built, "every built snapshot, in id order");
        for snapshot in &batch.snapshots {
            assert_eq!(
                snapshot.document,
                inner.snapshot_of(&snapshot.doc_id).unwrap()
            );
        }
        let logged: Vec<&str> = batch.changes.iter().map(|c| c.doc_id.as_str()).collect();
        assert_eq!(logged, [id(10), id(20)], "the unbuilt two's changes");
        // A smaller batch: its run ends at what fits, and the next batch
        // goes on from there.
        let mut phase = PullPhase::bootstrap(&reader).unwrap();
        let first = next_batch(&reader, Some("44"), &epoch, &mut phase, 4).unwrap();
        let ids: Vec<&str> = first.snapshots.iter().map(|s| s.doc_id.as_str()).collect();
        assert_eq!(ids, built[..4]);
        let second = next_batch(&reader, Some("44"), &epoch, &mut phase, 4).unwrap();
        let ids: Vec<&str> = second.snapshots.iter().map(|s| s.doc_id.as_str()).collect();
        assert_eq!(ids, built[4..8]);
        assert_eq!(reader.single.get(), 0);
    }

    /// A panic while the log writer's connection is locked, inside a write
    /// transaction no guard of ours will end: the next push is appended and
    /// durable (not swallowed by the transaction the panic left open).
    #[test]
    fn a_panic_inside_a_write_fails_that_request_and_the_next_push_commits() {
        let one = OneDevice::new();
        let poisoned = one.store.clone();
        let failed = std::thread::spawn(move || {
            poisoned.with_writer_conn_for_tests(|c| {
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                panic!("injected inside a write");
            })
        })
        .join();
        assert!(failed.is_err(), "the injected panic");
        let id = "01a21111-0000-7000-8000-00000000f001";
        let ack = one.create(id).unwrap();
        assert_eq!(ack.accepted, 1);
        let other = crate::store::SqliteStore::open(one.dir.path()).unwrap();
        assert!(
            other.reader().unwrap().document(id).unwrap().is_some(),
            "committed: another connection sees it"
        );
    }
}
