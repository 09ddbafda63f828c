//! The server's store: devices, the append-only change log, each
//! document's snapshot, the projections the reports read, and the audit
//! log. The only module of the server that writes SQL.
//!
//! Everything else reaches a store through [`Store`] and the sessions it
//! opens, so the sync core, the projector, the reports and the dashboard
//! do not know which backend holds the data:
//! - [`LogReader`]: one consistent view of the log and the documents, for
//!   one request or one pull batch;
//! - [`LogWriter`]: an exclusive turn at appending (a push's checks read in
//!   it and its append commits it; see the single-appender rule below);
//! - [`Projections`]: the projector's session and the reports' reads.
//!
//! Backends: [`sqlite`] (the default, embedded: one file in `--data DIR`)
//! and [`postgres`] (`--store postgres://…`: headquarters' database, shared
//! by several server processes).
//!
//! **The single-appender rule.** The log is appended by one transaction at
//! a time, and a sequence number is taken inside it: numbers therefore
//! become visible in order, so a reader that has seen up to N never misses
//! a row numbered below N that commits later (a pull's cursor, the
//! projector's cursor), and a push's changes are exactly the log between
//! where it ended before the push and after it (the ack's `log_before` and
//! `last_seq`, by which a device skips pulling its own changes back).
//! SQLite keeps it with one writer connection and `BEGIN IMMEDIATE`.

use keqing_shared::packed;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::{DB_FILE, SqliteStore};

use keqing_shared::sync::{LoggedChange, Snapshot};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("数据库错误 database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("数据库版本过新 `{0}` was written by a newer keqing-server")]
    NewerSchema(String),
    #[error("数据库迁移失败 migration failed: {0}")]
    Migration(String),
    #[error(
        "找不到服务器数据 no keqing-server store in `{0}`: check --data (`serve` and `device add` make one)"
    )]
    NoStore(String),
    #[error("找不到设备 no device `{0}`")]
    UnknownDevice(String),
    #[error("文件错误 `{0}`: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("此存储不支持 this store does not {0}")]
    Unsupported(&'static str),
    #[error("数据库错误 PostgreSQL: {0}")]
    Postgres(String),
    /// A value given to an administration command that it cannot take.
    #[error("输入无效 {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether another connection held the store's lock past the busy
    /// timeout: a moment's condition (maintenance), not a fault.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A document the projector could not read (see `unreadable_documents`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnreadableDocument {
    pub doc_id: String,
    pub office: String,
    pub reason: String,
    /// The log position the projector had read when it last failed.
    pub seq: u64,
    /// When it first failed (China Standard Time).
    pub since: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// China Standard Time, `YYYY-MM-DDTHH:MM:SS`.
    pub at: String,
    /// The device (`name (id)`) or the local administrator.
    pub actor: String,
    /// e.g. `device.add`, `device.revoke`, `device.cert`, `device.enroll`, `dossier.merge`,
    /// `hq.pull`, `hq.repair`, `dashboard.sign_in`, `dashboard.duplicates`,
    /// `dashboard.export`.
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// How a device is named in the audit log.
pub fn audit_actor(d: &Device) -> String {
    format!("{} ({})", d.name, d.id)
}

/// A person of headquarters who signs in to the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HqUser {
    pub name: String,
    pub role: keqing_shared::staff::HqRole,
    /// The Argon2id hash (PHC string); never printed.
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: String,
    /// When an administrator closed the account (it no longer signs in).
    pub disabled_at: Option<String>,
}

/// One change to a headquarters account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// A new password hash.
    Password(String),
    Role(keqing_shared::staff::HqRole),
    /// Closed (`true`, at the given time) or opened again.
    Disabled(bool),
}

impl UserChange {
    /// The audit line's action and detail: what changed, never the hash.
    pub fn audited(&self) -> (&'static str, String) {
        match self {
            UserChange::Password(_) => ("user.password", String::new()),
            UserChange::Role(r) => ("user.role", r.as_str().to_string()),
            UserChange::Disabled(true) => ("user.disable", String::new()),
            UserChange::Disabled(false) => ("user.enable", String::new()),
        }
    }
}

/// One read of patient data at an office device (who opened which dossier,
/// exported what), as the device reported it: the office and device come
/// from the device's enrolment, never from what it sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OfficeRead {
    pub office: String,
    pub device_id: String,
    pub device_name: String,
    /// The read's number at its device: a read sent twice is kept once.
    pub device_seq: u64,
    pub at: String,
    pub who: String,
    pub action: String,
    pub target: String,
}

/// An [`OfficeRead`] with its place in the server's read audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredRead {
    pub seq: u64,
    #[serde(flatten)]
    pub read: OfficeRead,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    /// `None`: a headquarters device, reading every office.
    pub office: Option<String>,
    #[serde(serialize_with = "hex_opt")]
    pub actor: Option<Vec<u8>>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// SHA-256 of the client certificate bound to this device (mutual TLS).
    #[serde(serialize_with = "hex_opt")]
    pub cert_sha256: Option<Vec<u8>>,
}

fn hex_opt<S: serde::Serializer>(
    v: &Option<Vec<u8>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        None => s.serialize_none(),
    }
}

/// A change checked by the sync core, ready to append.
#[derive(Debug, Clone)]
pub struct NewLogEntry {
    pub hash: [u8; 32],
    pub doc_id: String,
    pub office: String,
    pub bytes: Vec<u8>,
}

/// What a push's check goes by in the store besides the documents'
/// content: each stored document's office and `last_seq` (every append to
/// it moves it, a transfer changes the office, an erasure takes the row),
/// the fates recorded for the documents (rows and the latest), and which
/// of the push's changes are logged. Read on a view and again in the
/// writer's turn: when the two are equal, a check made on the view holds
/// in the turn (see `hub::ViewChecked`). The content can change under an equal
/// footing only into the same document (the projector settling a
/// snapshot, repacking, compaction leaving changes to a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushFooting {
    /// (id, office, last_seq) of the stored documents, by id.
    pub documents: Vec<(String, String, u64)>,
    /// How many fate rows name the documents, and the greatest of their
    /// sequence numbers.
    pub fates: (u64, u64),
    /// The push's changes already logged, sorted.
    pub logged: Vec<[u8; 32]>,
}

/// A document's new snapshot after a batch.
#[derive(Debug, Clone)]
pub struct DocumentState {
    pub doc_id: String,
    pub office: String,
    pub snapshot: Vec<u8>,
    pub complete: bool,
    /// Set when this batch folded the document into another (a merge of
    /// duplicates): audited in the same transaction.
    pub merged_into: Option<String>,
}

/// A document as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub office: String,
    /// Saved automerge document; empty for a new dossier logged without
    /// being built.
    pub snapshot: Vec<u8>,
    /// The snapshot holds every logged change of the document.
    pub complete: bool,
    /// The log's last sequence number when the push that last wrote this
    /// row committed: it changes with every push that touches the document.
    pub last_seq: u64,
}

/// A complete snapshot the projector built for a document whose stored one
/// was not (`last_seq`: the row's value when it read the document).
#[derive(Debug, Clone)]
pub struct SettledSnapshot {
    pub doc_id: String,
    pub snapshot: Vec<u8>,
    pub last_seq: u64,
}

/// A document as the projector derived it, ready to write.
#[derive(Debug, Clone)]
pub enum Projected {
    Dossier {
        view: Box<keqing_shared::dossier::DossierView>,
        slots: Vec<keqing_shared::followup::Slot>,
    },
    Roster {
        office: String,
        staff: Vec<keqing_shared::staff::Staff>,
        activities: Vec<keqing_shared::activity::Activity>,
    },
    NonPatient {
        log_id: String,
        office: String,
        calls: Vec<keqing_shared::records::NonPatientCall>,
    },
}

impl Projected {
    /// The id of the document this was read from.
    pub(crate) fn doc_id(&self) -> String {
        match self {
            Projected::Dossier { view, .. } => view.id.clone(),
            Projected::Roster { office, .. } => format!("roster-{office}"),
            Projected::NonPatient { log_id, .. } => log_id.clone(),
        }
    }
}

/// How much a batch being read may still take: at least one item, then
/// until `max` bytes (see `limits::PULL_BATCH_BYTES`) or `max_items`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub bytes: usize,
    pub items: usize,
    pub max_bytes: usize,
    pub max_items: usize,
}

impl Budget {
    pub fn new(max_bytes: usize, max_items: usize) -> Budget {
        Budget {
            bytes: 0,
            items: 0,
            max_bytes,
            max_items: max_items.max(1),
        }
    }

    /// Whether an item of `len` bytes still fits (the first always does).
    pub fn fits(&self, len: usize) -> bool {
        self.items == 0 || (self.items < self.max_items && self.bytes + len <= self.max_bytes)
    }

    pub fn take(&mut self, len: usize) {
        self.bytes += len;
        self.items += 1;
    }
}

/// What headquarters did to a dossier: a transfer between offices or an
/// erasure, as the store keeps it (table `fates`). Devices learn of it as
/// notices; an erasure's record is its tombstone: the dossier's id, its
/// office, when and why, and nothing of its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fate {
    pub seq: u64,
    pub doc_id: String,
    /// `transfer` or `erase`.
    pub kind: &'static str,
    /// The office it left (a transfer) or was erased at.
    pub from_office: String,
    /// A transfer's new office (empty for an erasure).
    pub to_office: String,
    pub at: String,
    pub reason: String,
    pub by: String,
}

impl Fate {
    /// The notice a device receives of it.
    pub fn notice(&self) -> keqing_shared::lifecycle::Notice {
        use keqing_shared::lifecycle::{Notice, NoticeKind};
        Notice {
            seq: self.seq,
            doc_id: self.doc_id.clone(),
            kind: match self.kind {
                FATE_TRANSFER => NoticeKind::Transferred {
                    from: self.from_office.clone(),
                    to: self.to_office.clone(),
                },
                _ => NoticeKind::Erased,
            },
            at: self.at.clone(),
        }
    }

    pub fn is_erasure(&self) -> bool {
        self.kind == FATE_ERASE
    }
}

pub const FATE_TRANSFER: &str = "transfer";
pub const FATE_ERASE: &str = "erase";

/// The kind of a stored fate row as this build names it.
pub(crate) fn fate_kind(stored: &str) -> &'static str {
    if stored == FATE_TRANSFER {
        FATE_TRANSFER
    } else {
        FATE_ERASE
    }
}

/// A fate to record, for the devices of each of `offices` (the offices
/// that hold or held the dossier) and headquarters'.
#[derive(Debug, Clone)]
pub struct NewFate<'a> {
    pub doc_id: &'a str,
    pub kind: &'static str,
    pub from_office: &'a str,
    pub to_office: &'a str,
    pub at: &'a str,
    pub reason: &'a str,
    pub by: &'a str,
    pub offices: Vec<String>,
}

/// An erasure asked for and not yet confirmed (`keqing-server erase`,
/// then `erase --confirm`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErasureRequest {
    pub doc_id: String,
    pub reason: String,
    pub by: String,
    pub at: String,
}

/// What an erased dossier leaves to the reports: its view without
/// identity and its slots (see `keqing_shared::lifecycle::without_identity`).
pub type StandIn<'a> = Option<(
    &'a keqing_shared::dossier::DossierView,
    &'a [keqing_shared::followup::Slot],
)>;

/// How much an erasure took out of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Logged changes removed.
    pub changes: u64,
    /// Whether the store held the document's snapshot.
    pub document: bool,
}

/// A device's health as the server last saw it (fleet health): what it
/// said of itself, and when it last pushed, pulled and finished a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceHealth {
    pub device_id: String,
    pub client_version: Option<String>,
    /// Changes waiting in its outbox, as it said.
    pub outbox: Option<u64>,
    /// Changes and data it set aside, as it said.
    pub quarantined: Option<u64>,
    pub last_push: Option<String>,
    pub last_pull: Option<String>,
    /// The last pull that reached the end of its feed: the device was
    /// then up to date.
    pub last_sync: Option<String>,
}

/// How much a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounts {
    /// Changes in the log.
    pub changes: u64,
    /// Documents (dossiers, rosters, non-patient logs).
    pub documents: u64,
}

/// One consistent view of the log and the documents: everything read
/// through one reader is of the same moment (a snapshot), for one request
/// or one pull batch. Dropping it ends the view.
pub trait LogReader {
    fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>>;
    fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>>;
    /// A document's office and snapshot.
    fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>>;
    /// The stored documents among `ids`: one look for a whole push.
    fn documents_among(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, StoredDocument>> {
        let mut found = std::collections::HashMap::new();
        for id in ids {
            if let Some(d) = self.document(id)? {
                found.insert(id.to_string(), d);
            }
        }
        Ok(found)
    }
    /// The footing of a push of changes `hashes` to documents `ids` (see
    /// [`PushFooting`]): light rows only, no snapshot (read twice a push);
    /// one look for a whole push (a store over the network answers in one
    /// round trip).
    fn push_footing(&self, ids: &[&str], hashes: &[[u8; 32]]) -> Result<PushFooting>;
    /// The last sequence number of the log (0: empty).
    fn max_seq(&self) -> Result<u64>;
    /// The store's epoch: sync cursors are positions in this store's log.
    fn epoch(&self) -> Result<String>;
    /// The log's compaction floor: a change at or below it may have been
    /// left to its document's snapshot (which holds it); a cursor below it
    /// cannot follow the log and starts over from the snapshots.
    fn log_floor(&self) -> Result<u64>;
    /// Every logged change of a document up to `upto` (for incomplete ones;
    /// compaction leaves those of complete ones to their snapshots).
    fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>>;
    /// A document's logged changes after `after` up to `upto`, as many as
    /// `budget` lets through; `true` when some were left for later.
    fn changes_of_within(
        &self,
        doc_id: &str,
        after: u64,
        upto: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<LoggedChange>, bool)>;
    /// The changes of a scope (`None`: every office) after `after`, as many
    /// as `budget` lets through; `true` when the budget ran out. Below the
    /// compaction floor the log has gaps: a feed keeps above it.
    fn changes_after_within(
        &self,
        office: Option<&str>,
        after: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<LoggedChange>, bool)>;
    /// The next documents of a scope after `after_id` (at most `limit`):
    /// id, whether its snapshot holds every logged change, and the
    /// snapshot's length, without reading the snapshots themselves.
    fn document_page(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, bool, usize)>>;
    /// One document's stored snapshot (empty: none).
    fn snapshot_of(&self, doc_id: &str) -> Result<Vec<u8>>;
    /// Document snapshots in scope with ids after `after_id`, at most
    /// `limit`; the bool says whether the snapshot holds every logged change.
    fn snapshots_after(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(Snapshot, bool)>>;
    /// The transfers and erasures of the documents among `ids` (one look
    /// for a whole push), oldest first.
    fn fates_among(&self, ids: &[&str]) -> Result<std::collections::HashMap<String, Vec<Fate>>>;
}

/// An exclusive turn at appending to the log (see the single-appender
/// rule): what is read through it is what the append builds on, and
/// nothing is appended by anyone else until it ends. Nothing it wrote
/// counts until [`LogWriter::commit`]; dropped without it, nothing does.
pub trait LogWriter: LogReader {
    /// Appends a batch and the new snapshots; returns the last sequence
    /// number. Merges of duplicates among `docs` are audited with it.
    fn append(
        &mut self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64>;
    /// Binds a device's automerge actor (once: a bound one stays).
    fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()>;
    fn audit(&mut self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()>;
    /// Records a transfer or an erasure for the devices to learn of.
    fn record_fate(&mut self, fate: &NewFate<'_>) -> Result<()>;
    /// Sets the server's record of a document's office (a transfer): what
    /// scopes its pulls, repairs and pushes from now on.
    fn move_document(&mut self, doc_id: &str, office: &str) -> Result<()>;
    /// Takes a dossier out of the store: every logged change, its
    /// snapshot, its projection rows and any pending erasure request; with
    /// `stand_in` (the dossier without its identity, see
    /// `keqing_shared::lifecycle::without_identity`), projects that in its
    /// place so reports keep their figures. Deleted content is overwritten
    /// where the backend can (SQLite's secure_delete); [`Store::scrub`]
    /// does the rest after the commit.
    fn erase_document(&mut self, doc_id: &str, stand_in: StandIn<'_>) -> Result<Erased>;
    /// Notes where the log ends at `now` (the marks compaction measures its
    /// horizon by) and returns where it ended at the latest mark at or
    /// before `cutoff` (0: none), forgetting the marks older than that one.
    fn mark_log(&mut self, now: &str, cutoff: &str) -> Result<u64>;
    /// Raises the compaction floor to `upto` (never lowers it): the changes
    /// above the old floor and at or below `upto` whose document's snapshot
    /// holds every logged change are deleted, but each document's latest
    /// (so the log still names every document, and its end never goes
    /// back). The snapshot only grows, so it goes on holding them.
    fn compact_log(&mut self, upto: u64) -> Result<Compacted>;
    /// Packs the snapshots stored as they were (by a release before
    /// snapshots were packed) among the next `limit` documents by id after
    /// `after_id`. A row is rewritten only if it still holds the bytes
    /// read: a snapshot written meanwhile (by the projector, another
    /// process) is packed already and stays.
    fn repack_snapshots(&mut self, after_id: &str, limit: u32) -> Result<Repacked>;
    /// Makes it durable: an acknowledged push survives a crash.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// What one step of log compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Changes taken from the log.
    pub changes: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What one step of repacking snapshots did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repacked {
    /// The last document id read (`None`: no document after `after_id`).
    pub last_id: Option<String>,
    /// Documents read.
    pub read: u64,
    /// Snapshots rewritten packed, their bytes before and after.
    pub documents: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A snapshot to rewrite packed: its document, the packed bytes, and the
/// stored ones the row must still hold.
pub(crate) type Repack = (String, Vec<u8>, Vec<u8>);

impl Repacked {
    /// A step over `rows` (id, stored bytes, in id order): what was read,
    /// and the raw snapshots among them that packing shrinks.
    pub(crate) fn plan(rows: Vec<(String, Vec<u8>)>) -> (Repacked, Vec<Repack>) {
        let done = Repacked {
            read: rows.len() as u64,
            last_id: rows.last().map(|(id, _)| id.clone()),
            ..Default::default()
        };
        let todo = rows
            .into_iter()
            .filter_map(|(id, stored)| packed::repack(&stored).map(|p| (id, p, stored)))
            .collect();
        (done, todo)
    }

    /// Counts one snapshot rewritten.
    pub(crate) fn count(&mut self, (_, packed, stored): &Repack) {
        self.documents += 1;
        self.bytes_before += stored.len() as u64;
        self.bytes_after += packed.len() as u64;
    }
}

/// The projector's session, and the reads of the reports it keeps.
pub trait Projections {
    fn max_seq(&self) -> Result<u64>;
    /// The projector's position in the change log.
    fn projector_cursor(&self) -> Result<u64>;
    /// The distinct documents changed after `after`, reading at most
    /// `limit` log entries, and the sequence number read up to.
    fn documents_changed_after(&self, after: u64, limit: u32) -> Result<(Vec<String>, u64)>;
    /// The stored documents among `ids`, and every logged change of those
    /// of them that are incomplete: one look for many documents (a store
    /// over the network answers in two round trips).
    fn documents_to_project(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, (StoredDocument, Vec<LoggedChange>)>>;
    /// Stores the complete snapshots the projector built, each only if no
    /// push has touched its document since it was read and the stored one
    /// is still incomplete; returns how many were stored.
    fn settle_snapshots(&mut self, settled: &[SettledSnapshot]) -> Result<usize>;
    /// Writes a batch's projections and moves the cursor from `from` to
    /// `upto` in one transaction, only if the cursor is still at `from`
    /// (compare-and-set; `false`: refused, nothing written). `unreadable`
    /// (document id, reason) are recorded; a document read now is removed
    /// from that list.
    fn save_projections(
        &mut self,
        docs: &[Projected],
        unreadable: &[(String, String)],
        from: u64,
        upto: u64,
    ) -> Result<bool>;
    /// Throws every projection away and rewinds the projector to the start
    /// of the log.
    fn reset_projections(&mut self) -> Result<()>;
    /// The rows of a report of the days `from..=to`.
    fn report_rows(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<keqing_shared::report::ReportRows>;
    /// The documents the projector could not read, of one office or all.
    fn unreadable_documents(&self, office: Option<&str>) -> Result<Vec<UnreadableDocument>>;
    /// The last day with a call in the projections (of one office).
    fn last_call_day(&self, office: Option<&str>) -> Result<Option<chrono::NaiveDate>>;
    /// Pairs of live dossiers across all offices that may be one patient.
    fn duplicate_candidates(&self) -> Result<Vec<keqing_projection::patients::DuplicateCandidate>>;
    /// The dossiers merged into `doc_id` (duplicates of one patient whose
    /// records were copied into it).
    fn merged_into(&self, doc_id: &str) -> Result<Vec<String>>;
    /// One document's stored snapshot (empty: none): the catalogue's copy
    /// a report counts sources by.
    fn snapshot(&self, doc_id: &str) -> Result<Vec<u8>>;
    /// Media spend of the days `from..=to`, of one office or all.
    fn spend(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<keqing_shared::report::SpendFact>>;
    /// Every projection row in canonical text (rebuild == incremental).
    fn projection_dump(&self) -> Result<String>;
}

/// A keqing-server store: the sessions above, and the administration of
/// devices and the audit log (each call its own short transaction).
pub trait Store: Send + Sync {
    /// The backend's name, for logs and `--help`.
    fn backend(&self) -> &'static str;
    fn reader(&self) -> Result<Box<dyn LogReader + '_>>;
    /// A view for a push's check (see `hub::ViewChecked`): a reader, from
    /// connections of its own where the backend keeps a cache per
    /// connection.
    fn push_view(&self) -> Result<Box<dyn LogReader + '_>> {
        self.reader()
    }
    fn log_writer(&self) -> Result<Box<dyn LogWriter + '_>>;
    /// A projector session. Sessions may run at once (the background
    /// projector, a report catching up before it reads, another server
    /// process): each batch's save is a compare-and-set on the cursor, so
    /// no batch is written twice and none is skipped.
    fn projections(&self) -> Result<Box<dyn Projections + '_>>;

    /// Adds a device; `admin` (who ran the command) is audited with it.
    fn add_device(
        &self,
        id: &str,
        name: &str,
        office: Option<&str>,
        token_sha256: &[u8],
        now: &str,
        admin: &str,
    ) -> Result<Device>;
    fn device(&self, id: &str) -> Result<Option<Device>>;
    /// The SHA-256 of a device's token: the key its bundles are signed
    /// with (see `keqing_shared::bundle`).
    fn device_key(&self, id: &str) -> Result<Option<Vec<u8>>>;
    fn devices(&self) -> Result<Vec<Device>>;
    /// Binds the client certificate with this SHA-256 to a device (a new
    /// binding replaces the old one).
    fn bind_certificate(
        &self,
        id_or_name: &str,
        cert_sha256: &[u8; 32],
        admin: &str,
    ) -> Result<Device>;
    /// Revokes a device by id or by name (a name must be unambiguous).
    fn revoke(&self, id_or_name: &str, now: &str, admin: &str) -> Result<Device>;
    /// Appends one line to the audit log.
    fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()>;
    /// The newest `limit` lines of the audit log, oldest first.
    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Adds a headquarters account (refused if the name is taken); audited
    /// without the hash.
    fn add_user(&self, user: &HqUser, admin: &str) -> Result<()>;
    /// Changes an account; audited (what changed, never the hash).
    fn change_user(&self, name: &str, change: &UserChange, admin: &str) -> Result<HqUser>;
    fn user(&self, name: &str) -> Result<Option<HqUser>>;
    fn users(&self) -> Result<Vec<HqUser>>;
    /// Stores media spend, one amount per day, office and source: an
    /// amount already there for the same key is replaced (importing a file
    /// twice changes nothing). Audited. Gives how many keys were new.
    fn import_spend(&self, rows: &[keqing_shared::report::SpendFact], admin: &str) -> Result<u64>;
    /// Appends office devices' reads to the read audit (append-only; a read
    /// already kept, by device and number, is skipped). Every read gets a
    /// position after every read committed before it, so a reader
    /// following positions misses none.
    fn store_reads(&self, reads: &[OfficeRead]) -> Result<()>;
    /// Reads after position `after`, of one office or all, oldest first,
    /// at most `limit`.
    fn office_reads(&self, office: Option<&str>, after: u64, limit: u32)
    -> Result<Vec<StoredRead>>;
    fn counts(&self) -> Result<StoreCounts>;
    /// The notices for the devices of `office` (`None`: headquarters',
    /// every one) after `after`, at most `limit`, and the latest fate of
    /// each dossier in `ask` within that scope, whatever the cursor.
    fn notices(
        &self,
        office: Option<&str>,
        after: u64,
        ask: &[String],
        limit: u32,
    ) -> Result<keqing_shared::lifecycle::NoticeAnswer>;
    /// Every erasure's tombstone, oldest first (one per dossier).
    fn tombstones(&self) -> Result<Vec<Fate>>;
    /// Keeps what the server saw of devices since its last flush: the
    /// newer of each time, the latest of what they said.
    fn record_health(&self, seen: &[DeviceHealth]) -> Result<()>;
    /// Every device's health row (devices never seen have none).
    fn device_health(&self) -> Result<Vec<DeviceHealth>>;
    /// The store's size on disk, in bytes (SQLite: its file and WAL;
    /// PostgreSQL: the database).
    fn size_bytes(&self) -> Result<u64>;
    /// Keeps an erasure request (replacing an earlier one of the dossier).
    fn request_erasure(&self, request: &ErasureRequest) -> Result<()>;
    fn erasure_request(&self, doc_id: &str) -> Result<Option<ErasureRequest>>;
    fn erasure_requests(&self) -> Result<Vec<ErasureRequest>>;
    /// Makes content deleted by erasures unrecoverable from the store's
    /// files, and gives the space deletes freed back to the file system
    /// (`compact --vacuum`): SQLite rebuilds its file (VACUUM: no free
    /// page, no stale cell is left), leaves room in the leaves of the
    /// tables a day inserts into at random places (VACUUM packs them
    /// full) and empties its WAL; PostgreSQL
    /// rewrites the tables that held it (VACUUM FULL). Blocks writers
    /// while it runs.
    fn scrub(&self) -> Result<()>;
    /// A check of the store's own consistency: "ok", or what is damaged.
    fn integrity_check(&self) -> Result<String>;
    /// Background upkeep a running server does every half second (SQLite:
    /// copy the WAL back without blocking anyone).
    fn upkeep(&self) -> Result<()> {
        Ok(())
    }
    /// Copies the whole store to a new file while it stays in use,
    /// `progress(done, total)` as it goes; checked before it counts.
    fn backup_to(&self, _out: &std::path::Path, _progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        Err(StoreError::Unsupported(
            "make backups itself (use the database's own tools)",
        ))
    }

    /// Whether this process runs the background projector now. A store
    /// several processes share lets one at a time (PostgreSQL: a session
    /// advisory lock on a connection of its own, which the database
    /// releases when that process or its connection dies, so another
    /// takes over at its next try); a store one process owns always
    /// says yes. Followers still serve every device and every report (a
    /// report catches up in a session of its own).
    fn lead_projector(&self) -> Result<bool> {
        Ok(true)
    }

    /// Takes one request from `device_id`'s token bucket (`per_second` on
    /// average, `burst` at once) kept in the store, so that every process
    /// serving it counts against one limit: `Some(taken)`, or `None` when
    /// the store keeps no buckets (one process: its own buckets count).
    fn take_request(
        &self,
        _device_id: &str,
        _per_second: f64,
        _burst: f64,
    ) -> Result<Option<bool>> {
        Ok(None)
    }

    /// Makes (or, for one made here before, updates) the database login
    /// `name` that BI tools use to read the projection tables and nothing
    /// else (docs/reporting-schema.md); audited.
    fn grant_reporting_role(&self, _name: &str, _password: &str, _admin: &str) -> Result<()> {
        Err(StoreError::Unsupported(
            "have database logins (BI tools read a copy made by `backup`, opened read-only)",
        ))
    }

    /// The device with this id, or the one device with this name.
    fn device_named(&self, id_or_name: &str) -> Result<Device> {
        let mut matches: Vec<Device> = self
            .devices()?
            .into_iter()
            .filter(|d| d.id == id_or_name || d.name == id_or_name)
            .collect();
        if matches.len() != 1 {
            return Err(StoreError::UnknownDevice(format!(
                "{id_or_name} ({} devices match; use the id)",
                matches.len()
            )));
        }
        Ok(matches.remove(0))
    }
    /// The device holding this token, if any (revoked devices included).
    fn device_with_token(&self, token: &str) -> Result<Option<Device>> {
        self.reader()?
            .device_by_token_hash(&crate::hub::token_hash(token))
    }
    fn epoch(&self) -> Result<String> {
        self.reader()?.epoch()
    }
}
