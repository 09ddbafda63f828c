//! The office replica: one SQLite file. The only module of the client that
//! writes SQL.
//!
//! Tables:
//! - `replica`: who this replica is (office, device name, automerge actor).
//! - `documents`: the automerge bytes of every dossier and of the office
//!   roster. **These bytes are the truth**; everything below them is derived.
//! - `outbox`: changes made here that no server has acknowledged yet.
//! - projections (`patients`, `patient_phones`, `calls`, `visits`,
//!   `purchases`, `followups`, `contacts`, `problems`, `slots`, `staff`):
//!   rebuilt from the documents at any time by [`Replica::rebuild`].
//!
//! Every edit is one SQLite transaction covering document, outbox and
//! projections, begun `IMMEDIATE` so that two processes editing one replica
//! serialise instead of losing an update.

use crate::error::ClientError;
use automerge::ActorId;
use chrono::{NaiveDate, NaiveDateTime};
use keqing_host::Recover;
use keqing_projection::{slot_from_row, span_day};
use keqing_shared::dossier::{Dossier, DossierView, NewChange};
use keqing_shared::followup::{Slot, schedule};
use keqing_shared::nonpatient::NonPatientLog;
use keqing_shared::packed;
use keqing_shared::report::ReportRows;
use keqing_shared::roster::Roster;
use keqing_shared::staff::{Role, Staff};
use keqing_shared::sync::{ClientTls, ReadEntry, ReadsAnswer, ReadsExchange};
use keqing_shared::when::{fmt_date, fmt_datetime};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, ClientError>;

/// The file name of the replica inside the data directory.
pub const DB_FILE: &str = "keqing.sqlite";

/// The environment variable an encrypted replica's passphrase is read from.
pub const KEY_ENV: &str = "KEQING_DB_KEY";

/// The environment variable `keqing rekey` reads the new passphrase from.
pub const NEW_KEY_ENV: &str = "KEQING_NEW_DB_KEY";

/// The passphrase of an encrypted replica (SQLCipher: AES-256 pages, key
/// derived by PBKDF2-HMAC-SHA512). Wiped from memory when dropped.
#[derive(Clone)]
pub struct ReplicaKey(zeroize::Zeroizing<String>);

impl ReplicaKey {
    /// A passphrase: at least 8 characters, no NUL (SQLCipher stops there).
    pub fn new(passphrase: String) -> Result<ReplicaKey> {
        let key = ReplicaKey(zeroize::Zeroizing::new(passphrase));
        if key.0.chars().count() < 8 || key.0.contains('\0') {
            return Err(ClientError::BadKey);
        }
        Ok(key)
    }

    /// The key in [`KEY_ENV`], if that is set and not empty.
    pub fn from_env() -> Result<Option<ReplicaKey>> {
        ReplicaKey::from_var(KEY_ENV)
    }

    /// The key in the environment variable `var`, if set and not empty.
    pub fn from_var(var: &str) -> Result<Option<ReplicaKey>> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => ReplicaKey::new(v).map(Some),
            _ => Ok(None),
        }
    }
}

/// The key entered at a prompt, for every replica this process opens: one
/// office process works on one replica, and asking again for the sync
/// connection the workstation opens every minute would be absurd.
static ENTERED_KEY: std::sync::OnceLock<ReplicaKey> = std::sync::OnceLock::new();

/// Makes `key` the passphrase of every replica this process opens or creates
/// (the binary calls it after asking for the passphrase at a prompt).
pub fn use_key(key: ReplicaKey) {
    let _ = ENTERED_KEY.set(key);
}

/// The passphrase in force: the one entered, else [`KEY_ENV`]. New replicas
/// are encrypted exactly when there is one.
pub fn configured_key() -> Result<Option<ReplicaKey>> {
    match ENTERED_KEY.get() {
        Some(k) => Ok(Some(k.clone())),
        None => ReplicaKey::from_env(),
    }
}

/// Whether the replica in `dir` is encrypted: a plain SQLite file starts
/// with its magic string, an SQLCipher file with a random salt.
pub fn is_encrypted(dir: &Path) -> Result<bool> {
    use std::io::Read;
    let path = db_path(dir);
    let mut head = [0u8; 16];
    let read = match std::fs::File::open(&path) {
        Ok(mut f) => f
            .read(&mut head)
            .map_err(|e| ClientError::Io(path.display().to_string(), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ClientError::Io(path.display().to_string(), e)),
    };
    Ok(read > 0 && head[..read] != b"SQLite format 3\0"[..read])
}

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        r#"
CREATE TABLE replica (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    office TEXT NOT NULL,
    device TEXT NOT NULL,
    actor BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('dossier', 'roster')),
    office TEXT NOT NULL,
    bytes BLOB NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    bytes BLOB NOT NULL
);
CREATE TABLE staff (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    active INTEGER NOT NULL
);
CREATE TABLE patients (
    dossier_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    name TEXT NOT NULL,
    sex TEXT,
    age INTEGER,
    address TEXT,
    diseases TEXT NOT NULL,
    created_at TEXT NOT NULL,
    typical INTEGER NOT NULL,
    merged_into TEXT,
    conflicts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX patients_name ON patients(name);
CREATE TABLE patient_phones (
    phone TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    PRIMARY KEY (phone, dossier_id)
) WITHOUT ROWID;
CREATE INDEX patient_phones_dossier ON patient_phones(dossier_id);
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    caller_phone TEXT NOT NULL,
    source TEXT NOT NULL,
    disease TEXT
);
CREATE INDEX calls_at ON calls(at);
CREATE INDEX calls_dossier ON calls(dossier_id);
CREATE TABLE visits (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    purchased INTEGER NOT NULL
);
CREATE INDEX visits_at ON visits(at);
CREATE INDEX visits_dossier ON visits(dossier_id);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    product TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    runout TEXT
);
CREATE INDEX purchases_at ON purchases(at);
CREATE INDEX purchases_dossier ON purchases(dossier_id);
CREATE TABLE followups (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX followups_at ON followups(at);
CREATE INDEX followups_dossier ON followups(dossier_id);
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    staff TEXT NOT NULL
);
CREATE INDEX contacts_dossier ON contacts(dossier_id);
CREATE TABLE problems (
    id TEXT PRIMARY KEY,
    dossier_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX problems_dossier ON problems(dossier_id);
-- Follow-up slots derived from each dossier (never replicated).
-- settled_on: the day a slot leaves the list (satisfied or closed).
CREATE TABLE slots (
    dossier_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    day INTEGER,
    anchor TEXT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    satisfied_at TEXT,
    closed_at TEXT,
    settled_on TEXT,
    PRIMARY KEY (dossier_id, n)
) WITHOUT ROWID;
CREATE INDEX slots_settled ON slots(settled_on, due_from);
CREATE INDEX slots_deadline ON slots(deadline);
"#,
    ),
    M::up(
        r#"
-- Where this replica syncs, and how far it has read the server's feed.
CREATE TABLE sync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    token TEXT NOT NULL,
    device_id TEXT NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,
    last_sync TEXT,
    last_error TEXT
);
-- Remote changes whose dependencies have not arrived yet: kept, not lost.
CREATE TABLE pending_changes (
    hash TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX pending_changes_doc ON pending_changes(doc_id);
"#,
    ),
    M::up(
        r#"
-- The day's follow-up list is an interval stabbing query: the slots whose
-- span on the list [due_from, settled_on) contains the day. A B-tree index
-- on either end scans every future or every past slot; an R*Tree over the
-- spans finds them in O(log n + answer). Slots become a rowid table so the
-- R*Tree can point at them; triggers keep the two in step.
CREATE TABLE slots_new (
    dossier_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    cadence TEXT NOT NULL,
    reason TEXT NOT NULL,
    day INTEGER,
    anchor TEXT NOT NULL,
    due_from TEXT NOT NULL,
    deadline TEXT NOT NULL,
    satisfied_at TEXT,
    closed_at TEXT,
    settled_on TEXT,
    UNIQUE (dossier_id, n)
);
INSERT INTO slots_new SELECT * FROM slots;
DROP TABLE slots;
ALTER TABLE slots_new RENAME TO slots;
CREATE INDEX slots_deadline ON slots(deadline);
-- Days since 2000-01-01 (integers: exact in rtree_i32). A slot settled
-- before it was due is never on the list: an empty span [first, first).
CREATE VIRTUAL TABLE slot_spans USING rtree_i32(id, first_day, settled_day);
CREATE TRIGGER slot_spans_insert AFTER INSERT ON slots BEGIN
    INSERT INTO slot_spans VALUES (new.rowid,
        CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
            CAST(julianday(new.due_from) - 2451544.5 AS INTEGER)));
END;
CREATE TRIGGER slot_spans_update AFTER UPDATE OF due_from, settled_on ON slots BEGIN
    UPDATE slot_spans SET
        first_day = CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        settled_day = max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
                          CAST(julianday(new.due_from) - 2451544.5 AS INTEGER))
    WHERE id = new.rowid;
END;
CREATE TRIGGER slot_spans_delete AFTER DELETE ON slots BEGIN
    DELETE FROM slot_spans WHERE id = old.rowid;
END;
INSERT INTO slot_spans SELECT rowid,
    CAST(julianday(due_from) - 2451544.5 AS INTEGER),
    max(CAST(julianday(settled_on) - 2451544.5 AS INTEGER),
        CAST(julianday(due_from) - 2451544.5 AS INTEGER)) FROM slots;
"#,
    ),
    M::up(
        r#"
-- Same-name lookups on every call narrow by age too: a common name in a
-- big office has hundreds of dossiers.
DROP INDEX patients_name;
CREATE INDEX patients_name_age ON patients(name, age);
"#,
    ),
    M::up(
        r#"
-- The first phone number beside the name: lists show both, and one row
-- read is cheaper than a second index probe per listed patient.
ALTER TABLE patients ADD COLUMN phone TEXT;
UPDATE patients SET phone = (SELECT min(phone) FROM patient_phones ph WHERE ph.dossier_id = patients.dossier_id);
"#,
    ),
    M::up(
        r#"
-- Report facts derived per dossier (the same columns as the server's
-- projector keeps): a purchase's place in the patient's history, whether a
-- follow-up or slot was on time, whether a slot counts as due, when a
-- typical case was flagged and a problem resolved; the office on every
-- fact row (reports filter and group by it without a join); and the office
-- of each staff row (headquarters holds all 27 rosters). Covering report
-- indexes and the R*Tree with auxiliary columns replace the old ones.
-- Filled by the rebuild that follows this migration.
ALTER TABLE staff ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE patients ADD COLUMN typical_at TEXT;
CREATE INDEX patients_typical ON patients(typical_at) WHERE typical = 1;
ALTER TABLE calls ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE visits ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE purchases ADD COLUMN nth INTEGER NOT NULL DEFAULT 1;
ALTER TABLE purchases ADD COLUMN prev_runout TEXT;
ALTER TABLE purchases ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE followups ADD COLUMN on_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE followups ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE problems ADD COLUMN resolved_at TEXT;
ALTER TABLE problems ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE slots ADD COLUMN office TEXT NOT NULL DEFAULT '';
ALTER TABLE slots ADD COLUMN due_counted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN on_time INTEGER NOT NULL DEFAULT 0;
DROP INDEX calls_at;
DROP INDEX visits_at;
DROP INDEX purchases_at;
DROP INDEX followups_at;
DROP INDEX slots_deadline;
DROP TRIGGER slot_spans_insert;
DROP TRIGGER slot_spans_update;
DROP TRIGGER slot_spans_delete;
DROP TABLE slot_spans;

CREATE INDEX calls_at ON calls(at, office, dossier_id, staff, source, disease);
CREATE INDEX visits_at ON visits(at, office, dossier_id, staff, purchased);
CREATE INDEX purchases_at ON purchases(at, office, dossier_id, staff, amount_fen, nth, prev_runout);
CREATE INDEX followups_at ON followups(at, office, dossier_id, staff, on_time);
CREATE INDEX slots_deadline ON slots(deadline, office, due_counted, on_time, cadence);
CREATE VIRTUAL TABLE slot_spans USING rtree_i32(id, first_day, settled_day,
    deadline_day, deadline_day_, office_code, office_code_);
CREATE TRIGGER slot_spans_insert AFTER INSERT ON slots BEGIN
    INSERT INTO slot_spans VALUES (new.rowid,
        CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
            CAST(julianday(new.due_from) - 2451544.5 AS INTEGER)),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        CAST(new.office AS INTEGER), CAST(new.office AS INTEGER));
END;
CREATE TRIGGER slot_spans_update AFTER UPDATE OF due_from, settled_on, deadline, office ON slots BEGIN
    UPDATE slot_spans SET
        first_day = CAST(julianday(new.due_from) - 2451544.5 AS INTEGER),
        settled_day = max(CAST(julianday(new.settled_on) - 2451544.5 AS INTEGER),
                          CAST(julianday(new.due_from) - 2451544.5 AS INTEGER)),
        deadline_day = CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        deadline_day_ = CAST(julianday(new.deadline) - 2451544.5 AS INTEGER),
        office_code = CAST(new.office AS INTEGER),
        office_code_ = CAST(new.office AS INTEGER)
    WHERE id = new.rowid;
END;
CREATE TRIGGER slot_spans_delete AFTER DELETE ON slots BEGIN
    DELETE FROM slot_spans WHERE id = old.rowid;
END;

INSERT INTO slot_spans SELECT rowid,
    CAST(julianday(due_from) - 2451544.5 AS INTEGER),
    max(CAST(julianday(settled_on) - 2451544.5 AS INTEGER),
        CAST(julianday(due_from) - 2451544.5 AS INTEGER)),
    CAST(julianday(deadline) - 2451544.5 AS INTEGER),
    CAST(julianday(deadline) - 2451544.5 AS INTEGER),
    CAST(office AS INTEGER), CAST(office AS INTEGER) FROM slots;
"#,
    ),
    // The server epoch the cursor belongs to (a restored server has another).
    M::up("ALTER TABLE sync_state ADD COLUMN epoch TEXT;"),
    // The CA certificate (PEM) an https:// server is verified against.
    M::up("ALTER TABLE sync_state ADD COLUMN ca_pem TEXT;"),
    // The device's own certificate and key (PEM) for mutual TLS.
    M::up(
        "ALTER TABLE sync_state ADD COLUMN cert_pem TEXT;
         ALTER TABLE sync_state ADD COLUMN key_pem TEXT;",
    ),
    // Which projection tables a dossier's next projection may skip.
    M::up(keqing_projection::V1_DIGESTS),
    M::up(
        r#"
-- Pulled data a document could not be merged with (automerge another
-- device made that does not decode or apply): kept aside with the reason,
-- so one bad dossier does not stop the office's sync, and nothing is lost.
CREATE TABLE quarantine (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('snapshot', 'change')),
    bytes BLOB NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
"#,
    ),
    // Projection version 2: whatever shape this replica's projection
    // tables took from the migrations above when they ran (migration 6
    // once read its indexes and R*Tree from the projection crate, which
    // has changed since), they are replaced by today's, and rebuilt from
    // the documents on open (see `REBUILD_BELOW_VERSION`).
    M::up(keqing_projection::REPLACE_WITH_V2),
    M::up(
        r#"
-- Why the last sync failed: offline, refused or server_fault (the header
-- of the workstation and `keqing status` tell them apart).
ALTER TABLE sync_state ADD COLUMN last_error_kind TEXT;
-- This device's own changes the server refused for good (too large, not
-- this office's, ...), and the later changes of the same dossiers held
-- behind them: out of the outbox, so the rest of it syncs; kept, listed
-- and re-queued by `keqing quarantine retry`.
CREATE TABLE refused_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    bytes BLOB NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX refused_changes_doc ON refused_changes(doc_id);
"#,
    ),
    // Projection version 3 (the office's whole day), rebuilt on open.
    M::up(keqing_projection::REPLACE_WITH_V3),
    M::up(
        r#"
-- An office's non-patient calls of a month are a document of their own.
CREATE TABLE documents_new (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('dossier', 'roster', 'nonpatient')),
    office TEXT NOT NULL,
    bytes BLOB NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO documents_new SELECT id, kind, office, bytes, updated_at FROM documents;
DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;
"#,
    ),
    // Projection version 4 (the category tallies): added, filled from the
    // rows the replica has; nothing is projected again.
    M::up(keqing_projection::V4_ADDITIONS),
    // Projection version 5 (the day tallies of follow-ups and due slots),
    // the same way.
    M::up(keqing_projection::V5_ADDITIONS),
    // Projection version 6 (covering report indexes).
    M::up(keqing_projection::V6_CHANGES),
    M::up(
        r#"
-- Who read which dossier (or exported what) at this device, when: appended,
-- never changed; not a projection (no document holds it).
CREATE TABLE reads (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL
);
CREATE TRIGGER reads_never_change BEFORE UPDATE ON reads
BEGIN SELECT RAISE(ABORT, 'the read audit is append-only'); END;
CREATE TRIGGER reads_never_go BEFORE DELETE ON reads
BEGIN SELECT RAISE(ABORT, 'the read audit is append-only'); END;
"#,
    ),
    M::up(
        r#"
-- How far this device's reads have reached the server's read audit, and
-- how far it has fetched its office's other devices' reads (positions in
-- that audit, of the server epoch `reads_epoch`).
ALTER TABLE sync_state ADD COLUMN reads_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN office_reads_cursor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN reads_epoch TEXT;
-- The office's other devices' reads, as the server passed them on (a copy:
-- the server's read audit is the record; fetched again after a restore).
CREATE TABLE office_reads (
    seq INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL
);
CREATE INDEX office_reads_at ON office_reads(at);
"#,
    ),
    M::up(
        r#"
-- Headquarters' catalogue reaches each office as a document of its own
-- (`catalog-44`), read where it is used (no projection rows).
CREATE TABLE documents_new (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('dossier', 'roster', 'nonpatient', 'catalog')),
    office TEXT NOT NULL,
    bytes BLOB NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO documents_new SELECT id, kind, office, bytes, updated_at FROM documents;
DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;
"#,
    ),
    // Projection version 7 (staff events, the office's own activities):
    // created empty, filled by the rebuild on open.
    M::up(keqing_projection::V7_ADDITIONS),
    M::up(
        r#"
-- Retention (keqing retention set): dossiers inactive for longer than
-- `years` are dropped from this device; the server keeps them. Of a dropped
-- dossier this device keeps its id and its phone numbers, so that a call
-- from the patient finds it is at the server (and fetches it back online).
CREATE TABLE retention (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    years INTEGER NOT NULL
);
CREATE TABLE dropped_dossiers (
    id TEXT PRIMARY KEY,
    last_active TEXT NOT NULL,
    dropped_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE dropped_phones (
    phone TEXT NOT NULL,
    dossier_id TEXT NOT NULL,
    PRIMARY KEY (phone, dossier_id)
) WITHOUT ROWID;
CREATE INDEX dropped_phones_dossier ON dropped_phones(dossier_id);
"#,
    ),
    M::up(
        r#"
-- Headquarters' notices (transfers, erasures) read so far: a position in
-- the server's notices.
ALTER TABLE sync_state ADD COLUMN notices_cursor INTEGER NOT NULL DEFAULT 0;
-- Dossiers headquarters moved to another office: kept until nothing typed
-- here waits for the server, then dropped like retention's, remembering
-- where they went (a call from the patient is told so).
CREATE TABLE moved_away (
    id TEXT PRIMARY KEY,
    to_office TEXT NOT NULL,
    at TEXT NOT NULL
) WITHOUT ROWID;
ALTER TABLE dropped_dossiers ADD COLUMN moved_to TEXT;
-- Dossiers erased at headquarters: only their ids, so that nothing pulled
-- or fetched later brings one back.
CREATE TABLE erased_dossiers (
    id TEXT PRIMARY KEY,
    erased_at TEXT NOT NULL
) WITHOUT ROWID;
"#,
    ),
    // The projection indexes a first sync sets aside, until it builds them.
    M::up(keqing_projection::INDEXES_ASIDE),
    // Projection version 8 (two indexes gone, the R*Tree of non-empty
    // spans); a replica in the middle of a first sync forgets the two
    // indexes it had set aside, or its restore would make them again.
    M::up(keqing_projection::V8_CHANGES),
    M::up("DELETE FROM projection_indexes_aside WHERE name IN ('followups_at', 'slots_deadline');"),
    // Projection version 9 (a dossier's records keyed by dossier). It makes
    // the record tables' indexes and the follow-ups' triggers anew; a
    // replica in the middle of a first sync that had set them aside finds
    // them there when it restores (and makes the others, refilling every
    // tally: a bulk load sets all the triggers aside together).
    M::up(keqing_projection::V9_CHANGES),
    // Projection version 10 (the overdue tallies, filled from the slots;
    // a replica in the middle of a first sync refills them again when it
    // restores what it set aside).
    M::up(keqing_projection::V10_ADDITIONS),
    // An erasure's scrub owed until it has emptied the WAL: one that could
    // not (another checkpoint held it) is tried again at the next sync,
    // whose notices no longer name the dossier.
    M::up("ALTER TABLE erased_dossiers ADD COLUMN scrubbed INTEGER NOT NULL DEFAULT 1;"),
    // Projection version 11 (a dossier's table digests in its patient row,
    // copied over).
    M::up(keqing_projection::V11_CHANGES),
];

/// One read of patient data at this device: when, by whom (the signed-in
/// person at the workstation, the OS account at the command line), what
/// (one of [`keqing_shared::sync::READ_ACTIONS`]) and of what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Read {
    pub at: String,
    pub who: String,
    pub action: String,
    pub target: String,
}

/// One line of the office's read audit as this device knows it: its own
/// reads and those of the office's other devices the server passed on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadLine {
    /// The device the read was made at.
    pub device: String,
    #[serde(flatten)]
    pub read: Read,
}

/// Schema versions from which opening a replica rebuilds its projections:
/// a migration since replaced the projection tables (or added derived
/// columns that only Rust can fill).
const REBUILD_BELOW_VERSION: usize = 22;

/// Who this replica is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMeta {
    pub office: String,
    pub device: String,
    pub actor: ActorId,
    pub created_at: String,
}

pub use keqing_projection::patients::{
    DuplicateCandidate, ListFilter, ListedPatient, OpenDelivery, PatientRow,
};

/// An open slot with the patient it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSlot {
    pub dossier_id: String,
    pub name: String,
    pub phone: Option<String>,
    /// The entry point the latest follow-up left (下次切入点).
    pub next_entry: Option<String>,
    /// Who makes the patient's follow-up calls.
    pub assignee: Option<String>,
    pub slot: Slot,
}

/// The servers this replica syncs with, and its progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    /// The server tried first (the one that answered last).
    pub server: String,
    /// Every address of the store's server processes, in the order they
    /// are tried; they serve one store, so one cursor holds for all.
    pub servers: Vec<String>,
    #[serde(skip)]
    pub token: String,
    pub device_id: String,
    pub cursor: u64,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    /// Why the last round failed (`last_error` says what happened).
    pub last_error_kind: Option<crate::SyncFailure>,
    /// The server epoch `cursor` belongs to.
    pub epoch: Option<String>,
    /// How an https:// server is verified, and the device's certificate
    /// for mutual TLS.
    #[serde(skip)]
    pub tls: ClientTls,
}

/// How the `server` column holds a list of addresses (as typed:
/// `--server URL1,URL2`; an address never holds a comma).
const SERVER_SEPARATOR: &str = ",";

fn split_servers(text: &str) -> Vec<String> {
    text.split(SERVER_SEPARATOR)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// An outbox row: a local change not yet acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub doc_id: String,
    pub bytes: Vec<u8>,
}

pub struct Replica {
    /// Set by [`Replica::checkpoint_in_background`]. First, so that it is
    /// dropped (its thread ended) before the main connection closes.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    meta: ReplicaMeta,
    path: PathBuf,
    key: Option<ReplicaKey>,
    /// Inside [`Replica::begin_bulk`].
    bulk: bool,
}

/// Rolls back the write transaction (or savepoint) it was made for when
/// dropped armed: on an error, and on a panic while the edit runs, so a
/// panic never leaves the connection inside a transaction that would
/// swallow every later write.
struct Rollback<'c> {
    conn: &'c Connection,
    nested: bool,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error (or panic) that caused it is the one
            // to report.
            let _ = self.conn.execute_batch(if self.nested {
                "ROLLBACK TO edit; RELEASE edit"
            } else {
                "ROLLBACK"
            });
        }
    }
}

/// After a panic while the replica was locked: any transaction left open
/// is rolled back (see [`keqing_host::lock`]).
impl Recover for Replica {
    fn recover(&mut self) {
        self.bulk = false;
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A thread with its own connection that copies the WAL back into the
/// database file, so that no edit waits for a checkpoint.
///
/// Left to SQLite, the commit that crosses `wal_autocheckpoint` runs the
/// checkpoint itself: thousands of random page writes and an fsync of a
/// 1.5 GB file, ~0.1–2 s at 100k dossiers, inside the latency of one
/// registered call. Here the edit only tells the thread it committed.
struct Checkpointer {
    /// Dropping it ends the thread's loop.
    committed: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// A checkpoint waits until no edit has committed for this long (the
    /// desk pauses between calls)...
    const IDLE: std::time::Duration = std::time::Duration::from_millis(250);
    /// ...or, during a long burst (a big sync), this long after the first
    /// commit it has not copied: one checkpoint per burst, not per edit, so
    /// a page written by many edits is copied and synced once.
    const AT_MOST: std::time::Duration = std::time::Duration::from_secs(3);

    fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        use std::sync::mpsc::RecvTimeoutError;
        let (committed, edits) = std::sync::mpsc::channel::<()>();
        let checkpoint = move || {
            // PASSIVE: copies what it can without waiting for (or blocking)
            // the writer or any reader.
            if let Err(e) =
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            {
                tracing::warn!("background checkpoint: {e}");
            }
        };
        let thread = std::thread::Builder::new()
            .name("keqing-checkpoint".into())
            .spawn(move || {
                // The loop ends when the replica closes (the sender drops).
                while edits.recv().is_ok() {
                    let first = std::time::Instant::now();
                    loop {
                        match edits.recv_timeout(Self::IDLE) {
                            Ok(()) if first.elapsed() < Self::AT_MOST => continue,
                            Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    checkpoint();
                }
            })?;
        Ok(Checkpointer {
            committed: Some(committed),
            thread: Some(thread),
        })
    }

    fn committed(&self) {
        if let Some(tx) = &self.committed {
            // Fails only once the thread is gone; SQLite's backstop
            // checkpoint still bounds the WAL then.
            let _ = tx.send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.committed.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

/// SQLite checkpoints the WAL into the file when a commit leaves it this
/// long (pages of 4 KiB).
const AUTO_CHECKPOINT_PAGES: i64 = 4000;
/// The same, when a background thread checkpoints: only if it falls behind.
const BACKSTOP_CHECKPOINT_PAGES: i64 = 65_536;
/// The same while bulk loading (a first sync of a whole province or the
/// nation): a page written again before the WAL is copied back is copied
/// once, and the copy's fsync is paid every 256 MiB, not every 16.
const BULK_CHECKPOINT_PAGES: i64 = 65_536;
/// How long a connection waits for the file's locks (and a scrub for
/// another checkpoint) before it gives up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A connection's page cache, in KiB.
const CACHE_KIB: i64 = 65_536;
/// The page cache while bulk loading, in KiB: a first sync of 1M dossiers
/// writes indexes of several GB at random places.
const BULK_CACHE_KIB: i64 = 262_144;
/// The page cache of a connection that only reads beside the writer
/// ([`open_reader`]), in KiB.
const READER_CACHE_KIB: i64 = 16_384;

/// Gives an encrypted replica's connection its key, before anything reads
/// the file; a wrong key is told as such.
fn unlock(conn: &Connection, path: &Path, key: Option<&ReplicaKey>) -> Result<()> {
    if let Some(key) = key {
        // A wrong key is our error to report, not SQLCipher's to log.
        conn.pragma_update(None, "cipher_log_level", "NONE")?;
        // Must come before anything reads the file.
        conn.pragma_update(None, "key", key.0.as_str())?;
        // The first read tells a wrong key ("file is not a database").
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => {
                    ClientError::WrongKey(path.display().to_string())
                }
                _ => e.into(),
            });
        }
    }
    Ok(())
}

/// A second connection to the replica that only reads (no migration, no
/// recovery: the main connection did those when it opened), for work
/// beside the main connection's writes.
fn open_reader(path: &Path, key: Option<&ReplicaKey>) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    unlock(&conn, path, key)?;
    // Reads sort through SQLite's sorter, which spills to temporary files
    // past the cache; a larger cache sorted no faster.
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    Ok(conn)
}

/// Opens the replica file, migrating it; the bool says whether its
/// projections must be rebuilt (an older schema lacked derived columns).
fn open_connection(path: &Path, key: Option<&ReplicaKey>) -> Result<(Connection, bool)> {
    let mut conn = Connection::open(path)?;
    keqing_host::write_marker::watch_writes(&conn)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    unlock(&conn, path, key)?;
    // 64 MiB of page cache (the default is 2 MiB): the day's list and the
    // dossiers being worked on stay in memory in a long-running process.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Every statement of an edit is cached; the default 16 would evict them.
    conn.set_prepared_statement_cache_capacity(128);
    // WAL: readers never block the writer. FULL: an edit acknowledged to the
    // user survives a power cut, not only a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // An edit writes ~25 pages (document + projections); checkpointing every
    // 1000 pages (the default) puts a checkpoint in every ~40th edit. 4000
    // pages (16 MB of WAL) moves it to every ~160th.
    conn.pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)?;
    // A first sync that stopped (killed, or the machine lost power) before
    // it built the indexes it had set aside: built now, before a migration
    // could replace the tables they belong to.
    let aside_kept: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'projection_indexes_aside')",
        [],
        |r| r.get(0),
    )?;
    if aside_kept {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        keqing_projection::restore_indexes(&tx)?;
        tx.commit()?;
    }
    let migrations = Migrations::from_slice(MIGRATIONS);
    let before: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    migrations.to_latest(&mut conn).map_err(|e| match e {
        rusqlite_migration::Error::MigrationDefinition(
            rusqlite_migration::MigrationDefinitionError::DatabaseTooFarAhead,
        ) => ClientError::NewerSchema(path.display().to_string()),
        other => ClientError::Migration(other.to_string()),
    })?;
    Ok((conn, before > 0 && before < REBUILD_BELOW_VERSION))
}

/// Encrypts the plain replica in `dir` with `key`, in place, and returns its
/// number of dossiers (see [`rewrite_with_key`] for how).
pub fn encrypt_replica(dir: &Path, key: &ReplicaKey) -> Result<u64> {
    if !db_path(dir).is_file() {
        return Err(ClientError::NotInitialised(dir.display().to_string()));
    }
    if is_encrypted(dir)? {
        return Err(ClientError::AlreadyEncrypted(dir.display().to_string()));
    }
    rewrite_with_key(dir, None, key)
}

/// Changes the passphrase of the encrypted replica in `dir` from `old` to
/// `new`, in place, and returns its number of dossiers: when someone who
/// knew the passphrase leaves the office. The file is rewritten under a new
/// salt (see [`rewrite_with_key`]), so the old passphrase opens nothing, not
/// even the pages of the file it replaced, which are overwritten.
pub fn rekey_replica(dir: &Path, old: &ReplicaKey, new: &ReplicaKey) -> Result<u64> {
    require_encrypted(dir)?;
    if old.0 == new.0 {
        return Err(ClientError::SameKey);
    }
    rewrite_with_key(dir, Some(old), new)
}

/// Refuses a `dir` without a replica, or with a plain one: what
/// [`rekey_replica`] refuses first, and the command checks before it asks
/// for any passphrase.
pub fn require_encrypted(dir: &Path) -> Result<()> {
    if !db_path(dir).is_file() {
        return Err(ClientError::NotInitialised(dir.display().to_string()));
    }
    if !is_encrypted(dir)? {
        return Err(ClientError::NotEncrypted(dir.display().to_string()));
    }
    Ok(())
}

/// Rewrites the replica in `dir`, read with `from` (`None`: plain), into a
/// new SQLCipher file keyed with `to`. Every table is copied
/// (`sqlcipher_export`), the copy is checked (integrity, same documents) and
/// renamed over the old file, whose bytes are then overwritten with zeros.
/// The old file stays untouched until the checked copy replaces it, so a
/// crash at any point leaves one complete replica. No other process may have
/// the replica open meanwhile (refused as [`ClientError::InUse`]).
fn rewrite_with_key(dir: &Path, from: Option<&ReplicaKey>, to: &ReplicaKey) -> Result<u64> {
    let path = db_path(dir);
    // Migrates (and if need be rebuilds) an older file first, so the copy
    // has today's schema; a wrong `from` fails here, before anything is
    // written.
    let dossiers = Replica::open_with_key(dir, from.cloned())?.dossier_count()?;
    let conn = Connection::open(&path)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    if let Some(key) = from {
        conn.pragma_update(None, "cipher_log_level", "NONE")?;
        conn.pragma_update(None, "key", key.0.as_str())?;
    }
    // Leaving WAL needs every other connection gone; EXCLUSIVE then keeps
    // newcomers out until the swap is done.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    let in_use = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            ClientError::InUse(dir.display().to_string())
        }
        _ => e.into(),
    };
    conn.pragma_update(None, "journal_mode", "DELETE")
        .map_err(in_use)?;
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .map_err(in_use)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let copy = dir.join(format!("{DB_FILE}.encrypting"));
    for leftover in [
        copy.clone(),
        dir.join(format!("{DB_FILE}.encrypting-journal")),
    ] {
        match std::fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ClientError::Io(leftover.display().to_string(), e));
            }
            _ => {}
        }
    }
    // The copy is private before SQLite writes a page into it.
    keqing_host::files::create_private(&copy)
        .map_err(|e| ClientError::Io(copy.display().to_string(), e))?;
    conn.execute(
        "ATTACH DATABASE ?1 AS encrypted KEY ?2",
        params![copy.to_string_lossy(), to.0.as_str()],
    )?;
    conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
    conn.pragma_update(Some("encrypted"), "user_version", version)?;
    conn.execute_batch("DETACH DATABASE encrypted")?;
    {
        let (check, _) = open_connection(&copy, Some(to))?;
        let ok: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let copied: i64 = check.query_row(
            "SELECT count(*) FROM documents WHERE kind = 'dossier'",
            [],
            |r| r.get(0),
        )?;
        if ok != "ok" || copied as u64 != dossiers {
            return Err(ClientError::Corrupt(format!(
                "the encrypted copy did not check out ({ok}, {copied} of {dossiers} dossiers); the replica is unchanged"
            )));
        }
        // Closing the last connection folds its WAL back into the file.
    }
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| ClientError::Io(p, e)
    };
    let mut replaced = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    std::fs::rename(&copy, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    // The old pages still sit in the unlinked file: overwrite them (plain
    // ones are readable as they are; encrypted ones open with the old key).
    let len = replaced.metadata().map_err(io(&path))?.len();
    let zeros = vec![0u8; 1 << 16];
    let mut left = len;
    use std::io::Write;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        replaced.write_all(&zeros[..n]).map_err(io(&path))?;
        left -= n as u64;
    }
    replaced.sync_all().map_err(io(&path))?;
    drop(conn);
    Ok(dossiers)
}

impl Replica {
    /// Creates a new replica in `dir` (made if missing). Fails if one exists.
    pub fn create(dir: &Path, meta: ReplicaMeta) -> Result<Replica> {
        let path = db_path(dir);
        if path.exists() {
            return Err(ClientError::AlreadyInitialised(dir.display().to_string()));
        }
        let io = |e| ClientError::Io(dir.display().to_string(), e);
        keqing_host::files::private_dir(dir).map_err(io)?;
        keqing_host::files::prepare_database(&path).map_err(io)?;
        let key = configured_key()?;
        let (conn, _) = open_connection(&path, key.as_ref())?;
        conn.execute(
            "INSERT INTO replica (id, office, device, actor, created_at) VALUES (1, ?1, ?2, ?3, ?4)",
            params![meta.office, meta.device, meta.actor.to_bytes(), meta.created_at],
        )?;
        Ok(Replica {
            conn,
            meta,
            path,
            key,
            checkpointer: None,
            bulk: false,
        })
    }

    /// Opens the replica in `dir`; never creates one.
    pub fn open(dir: &Path) -> Result<Replica> {
        let key = if is_encrypted(dir)? {
            Some(
                configured_key()?
                    .ok_or_else(|| ClientError::KeyRequired(dir.display().to_string()))?,
            )
        } else {
            // A plain replica stays plain whatever key is configured: keying
            // it would make SQLCipher read its pages as ciphertext.
            None
        };
        Replica::open_with_key(dir, key)
    }

    /// Opens the replica in `dir` with `key` (`None`: a plain file).
    fn open_with_key(dir: &Path, key: Option<ReplicaKey>) -> Result<Replica> {
        let path = db_path(dir);
        if !path.is_file() {
            return Err(ClientError::NotInitialised(dir.display().to_string()));
        }
        // The replica holds patients, the device token and its TLS key:
        // made by an older keqing (or copied in) more open, it is
        // tightened, with a warning.
        let io = |e| ClientError::Io(dir.display().to_string(), e);
        keqing_host::files::private_dir(dir).map_err(io)?;
        keqing_host::files::tighten_database(&path).map_err(io)?;
        let (conn, stale) = open_connection(&path, key.as_ref())?;
        let meta = conn
            .query_row(
                "SELECT office, device, actor, created_at FROM replica WHERE id = 1",
                [],
                |r| {
                    Ok(ReplicaMeta {
                        office: r.get(0)?,
                        device: r.get(1)?,
                        actor: ActorId::from(r.get::<_, Vec<u8>>(2)?),
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| ClientError::NotInitialised(dir.display().to_string()))?;
        let mut replica = Replica {
            conn,
            meta,
            path,
            key,
            checkpointer: None,
            bulk: false,
        };
        if stale {
            replica.rebuild()?;
        }
        Ok(replica)
    }

    /// Bulk loading (syncs, imports, benchmarks): commits stop waiting for
    /// fsync, the page cache may grow to [`BULK_CACHE_KIB`] and the WAL to
    /// [`BULK_CHECKPOINT_PAGES`] before it is copied back. A crash may then
    /// lose the last commits, never corrupt the file; turn it off again
    /// before ordinary work (which gives the cache back).
    pub fn set_bulk_load(&self, on: bool) -> Result<()> {
        self.conn
            .pragma_update(None, "synchronous", if on { "NORMAL" } else { "FULL" })?;
        self.conn.pragma_update(
            None,
            "cache_size",
            -if on { BULK_CACHE_KIB } else { CACHE_KIB },
        )?;
        let checkpoint_at = match (on, self.checkpointer.is_some()) {
            (true, _) => BULK_CHECKPOINT_PAGES,
            (false, true) => BACKSTOP_CHECKPOINT_PAGES,
            (false, false) => AUTO_CHECKPOINT_PAGES,
        };
        self.conn
            .pragma_update(None, "wal_autocheckpoint", checkpoint_at)?;
        Ok(())
    }

    /// Before a first sync into an empty replica: sets aside the projection
    /// indexes only reads use (see [`keqing_projection::set_indexes_aside`]),
    /// to be built once the pull is in ([`Replica::restore_projection_indexes`];
    /// if the process dies first, the next open builds them). Returns how many.
    pub fn set_projection_indexes_aside(&mut self) -> Result<usize> {
        self.write(|w| Ok(keqing_projection::set_indexes_aside(w.tx)?))
    }

    /// Builds the indexes [`Replica::set_projection_indexes_aside`] set
    /// aside; returns how many (none: one read of an empty table).
    pub fn restore_projection_indexes(&mut self) -> Result<usize> {
        if !self.projection_indexes_aside()? {
            return Ok(0);
        }
        if self.bulk {
            // Inside a bulk transaction the rows written so far are not
            // committed: a second connection would not see them.
            return self.write(|w| Ok(keqing_projection::restore_indexes(w.tx)?));
        }
        let (path, key) = (self.path.clone(), self.key.clone());
        self.write(|w| {
            // The write lock is held (BEGIN IMMEDIATE) and no row changed:
            // the reader sees the rows this connection does.
            let open_reader = move || {
                open_reader(&path, key.as_ref())
                    .inspect_err(|e| {
                        tracing::warn!("tallies counted without a reader beside: {e}");
                    })
                    .ok()
            };
            Ok(keqing_projection::restore_indexes_beside(
                w.tx,
                open_reader,
            )?)
        })
    }

    /// Whether projection indexes are set aside, waiting to be built.
    pub fn projection_indexes_aside(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM projection_indexes_aside)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Moves WAL checkpoints off the edit path, onto a thread with its own
    /// connection: for long-running processes (`keqing ui`). SQLite's own
    /// automatic checkpoint stays as a backstop at a much larger WAL, in
    /// case the thread falls behind.
    pub fn checkpoint_in_background(&mut self) -> Result<()> {
        if self.checkpointer.is_some() {
            return Ok(());
        }
        let (conn, _) = open_connection(&self.path, self.key.as_ref())?;
        let checkpointer = Checkpointer::start(conn)
            .map_err(|e| ClientError::Io("checkpoint thread".into(), e))?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)?;
        self.checkpointer = Some(checkpointer);
        Ok(())
    }

    /// The size of the database file and its WAL, in bytes.
    pub fn file_bytes(&self) -> Result<u64> {
        self.conn
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages * size) as u64)
    }

    pub fn meta(&self) -> &ReplicaMeta {
        &self.meta
    }

    /// Runs `f` in one write transaction: all of it is committed, or none.
    /// Inside [`Replica::begin_bulk`] it is a savepoint of the bulk
    /// transaction instead, still all-or-nothing. An error or a panic in `f`
    /// rolls it back ([`Rollback`]): nothing of it stays, and the next write
    /// starts on a connection outside any transaction.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T>) -> Result<T> {
        if !self.bulk && !self.conn.is_autocommit() {
            // Only a bug could leave one open; writing on inside it would
            // commit nothing.
            tracing::warn!("a transaction was left open; rolled back");
            self.recover();
        }
        let nested = self.bulk;
        self.conn.execute_batch(if nested {
            "SAVEPOINT edit"
        } else {
            "BEGIN IMMEDIATE"
        })?;
        let mut pending = Rollback {
            conn: &self.conn,
            nested,
            armed: true,
        };
        let mut w = WriteTx {
            tx: &self.conn,
            actor: self.meta.actor.clone(),
        };
        let value = f(&mut w)?;
        self.conn
            .execute_batch(if nested { "RELEASE edit" } else { "COMMIT" })?;
        pending.armed = false;
        if !nested && let Some(c) = &self.checkpointer {
            c.committed();
        }
        Ok(value)
    }

    /// Starts a bulk transaction: edits until [`Replica::finish_bulk`] are
    /// committed together (imports, benchmarks), each still atomic on its own.
    pub fn begin_bulk(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.bulk = true;
        Ok(())
    }

    pub fn finish_bulk(&mut self, commit: bool) -> Result<()> {
        self.bulk = false;
        if commit {
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
            if let Some(c) = &self.checkpointer {
                c.committed();
            }
        } else {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    pub fn staff_named(&self, name: &str) -> Result<Option<Staff>> {
        staff_named(&self.conn, name)
    }

    pub fn staff(&self) -> Result<Vec<Staff>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, role, active FROM staff ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, active) = row?;
            let role = Role::parse(&role)?;
            out.push(Staff {
                id,
                name,
                role,
                active,
            });
        }
        Ok(out)
    }

    pub fn load_document(&self, id: &str) -> Result<Option<Vec<u8>>> {
        load_document(&self.conn, id)
    }

    /// Dossier ids whose id starts with `prefix`.
    pub fn dossiers_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM documents WHERE kind = 'dossier' AND id >= ?1 AND id < ?1 || x'ff' ORDER BY id LIMIT 10",
        )?;
        let ids = stmt
            .query_map([prefix], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    pub fn dossiers_with_phone(&self, phone: &str) -> Result<Vec<String>> {
        dossiers_with_phone(&self.conn, phone)
    }

    /// The patient row of one dossier.
    pub fn patient(&self, id: &str) -> Result<Option<PatientRow>> {
        patient_row(&self.conn, id)
    }

    /// Live patients with exactly this name, of age `age` ± `within` (or
    /// unknown) when given; at most [`SAME_NAME_LIMIT`].
    pub fn patients_named(
        &self,
        name: &str,
        age: Option<i64>,
        within: i64,
    ) -> Result<Vec<PatientRow>> {
        Ok(keqing_projection::patients::patients_named(
            &self.conn,
            name,
            age,
            within,
            SAME_NAME_LIMIT,
        )?)
    }

    /// Patients whose name, phone or disease contains `text`.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<PatientRow>> {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // A bound LIMIT makes SQLite re-prepare the statement on every run.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT dossier_id FROM patients WHERE name LIKE ?1 ESCAPE '\\' OR diseases LIKE ?1 ESCAPE '\\'
             UNION SELECT dossier_id FROM patient_phones WHERE phone LIKE ?1 ESCAPE '\\'
             LIMIT {limit}"
        ))?;
        let ids: Vec<String> = stmt
            .query_map(params![pattern], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = patient_row(&self.conn, &id)? {
                out.push(p);
            }
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.dossier_id.cmp(&b.dossier_id))
        });
        Ok(out)
    }

    /// Slots open on day `d` (due or overdue), with their patients; only
    /// the patients assigned to `assignee` when given.
    pub fn open_slots(&self, d: NaiveDate, assignee: Option<&str>) -> Result<Vec<OpenSlot>> {
        let day = fmt_date(d);
        // Open at the end of d: due_from <= d < settled_on, found through the
        // R*Tree of spans, then checked exactly on the row.
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.dossier_id, p.name,
                    p.phone, p.next_entry, p.assignee,
                    s.cadence, s.reason, s.day, s.anchor, s.due_from, s.deadline, s.satisfied_at, s.closed_at
             FROM (SELECT id FROM slot_spans WHERE first_day <= ?2 AND settled_day > ?2 ORDER BY id) r
             CROSS JOIN slots s ON s.rowid = r.id
             CROSS JOIN patients p ON p.dossier_id = s.dossier_id
             WHERE s.due_from <= ?1 AND s.settled_on > ?1 AND (?3 IS NULL OR p.assignee = ?3)",
        )?;
        let rows = stmt.query_map(params![&day, span_day(d), assignee], |r| {
            Ok(OpenSlot {
                dossier_id: r.get(0)?,
                name: r.get(1)?,
                phone: r.get(2)?,
                next_entry: r.get(3)?,
                assignee: r.get(4)?,
                slot: slot_from_row(r, 5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The live patients of a list on day `d`, most recently in touch
    /// first, at most `limit` (see [`keqing_projection::patients::list_patients`]).
    pub fn list_patients(
        &self,
        filter: ListFilter,
        d: NaiveDate,
        limit: usize,
    ) -> Result<Vec<ListedPatient>> {
        Ok(keqing_projection::patients::list_patients(
            &self.conn, None, filter, d, limit,
        )?)
    }

    /// How many live patients stand in each category on day `d`, per
    /// office (one office at an office device, all at headquarters).
    pub fn category_counts(
        &self,
        d: NaiveDate,
    ) -> Result<Vec<keqing_shared::report::CategoryCounts>> {
        Ok(keqing_projection::category_counts(&self.conn, None, d)?)
    }

    /// Every delivery still to make, overdue first.
    pub fn open_deliveries(&self) -> Result<Vec<OpenDelivery>> {
        Ok(keqing_projection::patients::open_deliveries(
            &self.conn, None,
        )?)
    }

    /// The rows behind a report of the days `from..=to` (every office this
    /// replica holds when `office` is `None`).
    pub fn report_rows(
        &self,
        office: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<ReportRows> {
        Ok(keqing_projection::report_rows(
            &self.conn, office, from, to,
        )?)
    }

    /// Pairs of dossiers that may be one patient: the same phone number
    /// (any offices), or the same name in the same office with ages at
    /// most one year apart. Merged dossiers are left out.
    pub fn duplicate_candidates(&self) -> Result<Vec<DuplicateCandidate>> {
        Ok(keqing_projection::patients::duplicate_candidates(
            &self.conn,
        )?)
    }

    /// Dossiers with a patient field holding concurrent values.
    pub fn conflicted_dossiers(&self) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare("SELECT dossier_id FROM patients WHERE conflicts > 0 ORDER BY dossier_id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    pub fn sync_state(&self) -> Result<Option<SyncState>> {
        Ok(self
            .conn
            .query_row(
                "SELECT server, token, device_id, cursor, last_sync, last_error, epoch, ca_pem, cert_pem, key_pem, last_error_kind FROM sync_state WHERE id = 1",
                [],
                |r| {
                    let servers = split_servers(&r.get::<_, String>(0)?);
                    Ok(SyncState {
                        server: servers.first().cloned().unwrap_or_default(),
                        servers,
                        token: r.get(1)?,
                        device_id: r.get(2)?,
                        cursor: r.get::<_, i64>(3)? as u64,
                        last_sync: r.get(4)?,
                        last_error: r.get(5)?,
                        last_error_kind: r
                            .get::<_, Option<String>>(10)?
                            .as_deref()
                            .and_then(crate::SyncFailure::parse),
                        epoch: r.get(6)?,
                        tls: ClientTls {
                            ca_pem: r.get(7)?,
                            cert_pem: r.get(8)?,
                            key_pem: r.get(9)?,
                        },
                    })
                },
            )
            .optional()?)
    }

    /// Records the servers and token this replica enrolled with. Servers
    /// none of which it synced with before start the feed from the
    /// beginning.
    pub fn set_sync_target(
        &mut self,
        servers: &[String],
        token: &str,
        device_id: &str,
        tls: &ClientTls,
    ) -> Result<()> {
        let same_store = self
            .sync_state()?
            .is_some_and(|old| old.servers.iter().any(|s| servers.contains(s)));
        self.conn.execute(
            "INSERT INTO sync_state (id, server, token, device_id, ca_pem, cert_pem, key_pem)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET server = excluded.server, token = excluded.token,
             ca_pem = excluded.ca_pem, cert_pem = excluded.cert_pem, key_pem = excluded.key_pem,
             device_id = excluded.device_id,
             cursor = CASE WHEN ?7 THEN sync_state.cursor ELSE 0 END,
             epoch = CASE WHEN ?7 THEN sync_state.epoch ELSE NULL END",
            params![
                servers.join(SERVER_SEPARATOR),
                token,
                device_id,
                tls.ca_pem,
                tls.cert_pem,
                tls.key_pem,
                same_store
            ],
        )?;
        Ok(())
    }

    /// Appends one read to the audit of this device's reads.
    pub fn record_read(&self, read: &Read) -> Result<()> {
        self.conn.execute(
            "INSERT INTO reads (at, who, action, target) VALUES (?1, ?2, ?3, ?4)",
            params![read.at, read.who, read.action, read.target],
        )?;
        Ok(())
    }

    /// Headquarters' catalogue as this device last pulled it (an office
    /// device holds its office's copy; a headquarters device holds them
    /// all, alike), `None` before one arrived.
    pub fn catalog(&self) -> Result<Option<keqing_shared::catalog::Catalog>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT bytes FROM documents WHERE kind = 'catalog' ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        bytes
            .map(|b| keqing_shared::catalog::read_saved(&packed::unpack(b)))
            .transpose()
            .map_err(ClientError::from)
    }

    /// The latest `limit` reads of the office, newest first: this device's
    /// and the other devices' the server passed on.
    pub fn reads(&self, limit: usize) -> Result<Vec<ReadLine>> {
        let mut stmt = self.conn.prepare_cached(
            // Newest first; within one second, this device's by their order.
            "SELECT ?2, at, who, action, target, 0 AS other, seq FROM reads
             UNION ALL SELECT device, at, who, action, target, 1, seq FROM office_reads
             ORDER BY 2 DESC, 6, 7 DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(
            params![i64::try_from(limit).unwrap_or(i64::MAX), self.meta.device],
            |r| {
                Ok(ReadLine {
                    device: r.get(0)?,
                    read: Read {
                        at: r.get(1)?,
                        who: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                    },
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// What this device sends in its next reads exchange: at most `limit`
    /// of its reads the server has not kept yet, and its place in the
    /// office's. After a server restore (another epoch than the one the
    /// reads were shared with) everything is sent and fetched again.
    pub fn reads_to_share(&mut self, limit: usize) -> Result<ReadsExchange> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state: Option<(i64, i64, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT reads_sent, office_reads_cursor, reads_epoch, epoch FROM sync_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((mut sent, mut cursor, reads_epoch, epoch)) = state else {
            return Ok(ReadsExchange::default());
        };
        if epoch.is_some() && reads_epoch != epoch {
            tx.execute("DELETE FROM office_reads", [])?;
            tx.execute(
                "UPDATE sync_state SET reads_sent = 0, office_reads_cursor = 0, reads_epoch = epoch WHERE id = 1",
                [],
            )?;
            (sent, cursor) = (0, 0);
        }
        let reads = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, at, who, action, target FROM reads WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            stmt.query_map(
                params![sent, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(ReadEntry {
                        seq: r.get::<_, i64>(0)? as u64,
                        device: String::new(),
                        at: r.get(1)?,
                        who: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(ReadsExchange {
            reads,
            office_cursor: cursor as u64,
        })
    }

    /// Takes the server's answer to a reads exchange: its reads kept up to
    /// `stored_through`, the office's other devices' reads copied, the
    /// place in them moved. One transaction.
    pub fn reads_shared(&mut self, answer: &ReadsAnswer) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE sync_state SET reads_sent = max(reads_sent, ?1),
                 office_reads_cursor = max(office_reads_cursor, ?2) WHERE id = 1",
            params![
                i64::try_from(answer.stored_through).unwrap_or(i64::MAX),
                i64::try_from(answer.office_cursor).unwrap_or(i64::MAX)
            ],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO office_reads (seq, device, at, who, action, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in &answer.office {
                insert.execute(params![
                    i64::try_from(r.seq).unwrap_or(i64::MAX),
                    r.device,
                    r.at,
                    r.who,
                    r.action,
                    r.target
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the TLS files kept for sync (the cursor stays).
    pub fn set_tls(&mut self, tls: &ClientTls) -> Result<()> {
        self.conn.execute(
            "UPDATE sync_state SET ca_pem = ?1, cert_pem = ?2, key_pem = ?3 WHERE id = 1",
            params![tls.ca_pem, tls.cert_pem, tls.key_pem],
        )?;
        Ok(())
    }

    /// Replaces the list of server addresses (processes of the same
    /// store: the cursor stays).
    pub fn set_servers(&mut self, servers: &[String]) -> Result<()> {
        self.conn.execute(
            "UPDATE sync_state SET server = ?1 WHERE id = 1",
            [servers.join(SERVER_SEPARATOR)],
        )?;
        Ok(())
    }

    /// Records a round's end: its time when it succeeded, else why not.
    pub fn record_sync(
        &mut self,
        at: &str,
        error: Option<(crate::SyncFailure, &str)>,
    ) -> Result<()> {
        match error {
            None => self.conn.execute(
                "UPDATE sync_state SET last_sync = ?1, last_error = NULL, last_error_kind = NULL WHERE id = 1",
                [at],
            )?,
            Some((kind, e)) => self.conn.execute(
                "UPDATE sync_state SET last_error = ?1, last_error_kind = ?2 WHERE id = 1",
                [e, kind.as_str()],
            )?,
        };
        Ok(())
    }

    /// Moves `doc_id`'s outbox rows from `from_seq` on (the refused change
    /// and the later changes of the dossier, which depend on it) out of the
    /// outbox into `refused_changes`, with the reason; returns how many.
    pub fn refuse_outbox(&mut self, doc_id: &str, from_seq: i64, reason: &str) -> Result<u64> {
        let at = keqing_host::now_cst_text();
        self.write(|w| {
            let moved = w.tx.execute(
                "INSERT INTO refused_changes (doc_id, hash, bytes, reason, at)
                 SELECT doc_id, hash, bytes, ?3, ?4 FROM outbox
                 WHERE doc_id = ?1 AND seq >= ?2 ORDER BY seq
                 ON CONFLICT (hash) DO NOTHING",
                params![doc_id, from_seq, reason, at],
            )?;
            w.tx.execute(
                "DELETE FROM outbox WHERE doc_id = ?1 AND seq >= ?2",
                params![doc_id, from_seq],
            )?;
            tracing::warn!(doc = doc_id, changes = moved, reason = %keqing_shared::printable::printable(reason), "own changes refused by the server, set aside");
            Ok(moved as u64)
        })
    }

    /// Moves the outbox rows of dossiers that have refused changes to
    /// `refused_changes` too: they depend on what the server refused, and
    /// would leave the server holding changes it cannot apply. Returns how
    /// many.
    pub fn hold_behind_refused(&mut self) -> Result<u64> {
        let at = keqing_host::now_cst_text();
        self.write(|w| {
            let moved = w.tx.execute(
                "INSERT INTO refused_changes (doc_id, hash, bytes, reason, at)
                 SELECT doc_id, hash, bytes, ?1, ?2 FROM outbox
                 WHERE doc_id IN (SELECT doc_id FROM refused_changes) ORDER BY seq
                 ON CONFLICT (hash) DO NOTHING",
                params![HELD_BEHIND_REFUSED, at],
            )?;
            w.tx.execute(
                "DELETE FROM outbox WHERE doc_id IN (SELECT doc_id FROM refused_changes)",
                [],
            )?;
            Ok(moved as u64)
        })
    }

    /// How many own changes were refused (or held behind one), and the
    /// latest few (newest first).
    pub fn refused(&self, latest: usize) -> Result<(u64, Vec<RefusedChange>)> {
        let count = self
            .conn
            .query_row("SELECT count(*) FROM refused_changes", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        let rows = self
            .conn
            .prepare(&format!(
                "SELECT doc_id, reason, at, length(bytes) FROM refused_changes ORDER BY seq DESC LIMIT {}",
                i64::try_from(latest).unwrap_or(i64::MAX)
            ))?
            .query_map([], |r| {
                Ok(RefusedChange {
                    doc_id: r.get(0)?,
                    reason: r.get(1)?,
                    at: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok((count, rows))
    }

    /// Puts every refused change back at the end of the outbox, in the
    /// order they were made (after an upgrade of the server, say); the
    /// next sync offers them again. Returns how many.
    pub fn requeue_refused(&mut self) -> Result<u64> {
        self.write(|w| {
            let moved = w.tx.execute(
                "INSERT INTO outbox (doc_id, hash, bytes)
                 SELECT doc_id, hash, bytes FROM refused_changes ORDER BY seq
                 ON CONFLICT (hash) DO NOTHING",
                [],
            )?;
            w.tx.execute("DELETE FROM refused_changes", [])?;
            Ok(moved as u64)
        })
    }

    /// The oldest `limit` outbox rows after `after_seq` (0: from the
    /// start). (The limit is in the SQL text: a bound LIMIT makes SQLite
    /// re-prepare the statement on every run.)
    pub fn outbox_batch(&self, after_seq: i64, limit: usize) -> Result<Vec<OutboxRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT seq, doc_id, bytes FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT {}",
            i64::try_from(limit).unwrap_or(i64::MAX)
        ))?;
        let rows = stmt
            .query_map([after_seq], |r| {
                Ok(OutboxRow {
                    seq: r.get(0)?,
                    doc_id: r.get(1)?,
                    bytes: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Forgets the outbox rows up to `upto_seq`, which the server
    /// acknowledged (durably stored), and moves the cursor over this
    /// replica's own pushes: `own` maps where the log ended before each push
    /// acknowledged in this round to where it ended after it (of server epoch
    /// `epoch`). Each such stretch of the log holds only that push's changes
    /// (one writer appends at a time), so while one starts at the cursor,
    /// the cursor moves to its end and nothing of it is pulled back.
    /// Pipelined pushes may land in either order: the map keeps stretches
    /// until the cursor reaches them. One transaction.
    pub fn ack_push(
        &mut self,
        upto_seq: i64,
        own: &std::collections::BTreeMap<u64, u64>,
        epoch: &str,
    ) -> Result<()> {
        self.write(|w| {
            w.tx.execute("DELETE FROM outbox WHERE seq <= ?1", [upto_seq])?;
            let state: Option<(i64, Option<String>)> =
                w.tx.query_row(
                    "SELECT cursor, epoch FROM sync_state WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((cursor, stored_epoch)) = state else {
                return Ok(());
            };
            // A fresh replica (cursor 0, no epoch yet) qualifies when the log
            // was empty before its first push: then the epoch is the acks'.
            let same_log = match stored_epoch.as_deref() {
                Some(e) => e == epoch,
                None => cursor == 0,
            };
            if epoch.is_empty() || !same_log {
                return Ok(());
            }
            let mut moved = u64::try_from(cursor).unwrap_or(0);
            while let Some(&end) = own.get(&moved).filter(|&&end| end > moved) {
                moved = end;
            }
            if moved != cursor as u64 {
                w.tx.execute(
                    "UPDATE sync_state SET cursor = ?1, epoch = ?2 WHERE id = 1",
                    params![i64::try_from(moved).unwrap_or(i64::MAX), epoch],
                )?;
            }
            Ok(())
        })
    }

    /// The outbox rows larger than `max` bytes: document, row, size.
    pub fn outbox_larger_than(&self, max: usize) -> Result<Vec<(String, i64, u64)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT doc_id, seq, length(bytes) FROM outbox WHERE length(bytes) > ?1 ORDER BY seq",
            )?
            .query_map([i64::try_from(max).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// One document's heads (none when it is not here).
    pub fn heads_of(&self, id: &str) -> Result<Vec<automerge::ChangeHash>> {
        let Some(bytes) = load_document(&self.conn, id)? else {
            return Ok(Vec::new());
        };
        let doc = automerge::Automerge::load(&bytes)
            .map_err(|e| ClientError::Corrupt(format!("document {id}: {e}")))?;
        let mut heads = doc.get_heads();
        heads.sort();
        Ok(heads)
    }

    /// Every document's heads, for the repair path.
    pub fn document_heads(&self) -> Result<Vec<(String, Vec<automerge::ChangeHash>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, bytes FROM documents ORDER BY id")?;
        let rows: Vec<(String, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, stored) in rows {
            let doc = automerge::Automerge::load(&packed::unpack(stored))
                .map_err(|e| ClientError::Corrupt(format!("document {id}: {e}")))?;
            out.push((id, doc.get_heads()));
        }
        Ok(out)
    }

    /// Applies one pull batch: merges every snapshot and change into the
    /// local documents, re-projects them, and stores the new cursor, all in
    /// one transaction. Data a document cannot be merged with is put aside
    /// ([`Replica::quarantined`]) and the rest of the batch applied, so one
    /// bad dossier does not stop every sync; returns how many documents of
    /// the batch were quarantined.
    pub fn apply_remote(&mut self, batch: &keqing_shared::sync::PullBatch) -> Result<usize> {
        use std::collections::BTreeMap;
        /// Per document: snapshots, then changes.
        type Incoming<'a> = (Vec<&'a [u8]>, Vec<Vec<u8>>);
        let mut by_doc: BTreeMap<&str, Incoming<'_>> = BTreeMap::new();
        for s in &batch.snapshots {
            by_doc.entry(&s.doc_id).or_default().0.push(&s.document);
        }
        for c in &batch.changes {
            by_doc.entry(&c.doc_id).or_default().1.push(c.bytes.clone());
        }
        // Nothing brings back a dossier headquarters erased.
        let any_erased: bool =
            self.conn
                .query_row("SELECT EXISTS (SELECT 1 FROM erased_dossiers)", [], |r| {
                    r.get(0)
                })?;
        if any_erased {
            let mut erased = Vec::new();
            for id in by_doc.keys() {
                if self.is_erased(id)? {
                    erased.push(*id);
                }
            }
            for id in erased {
                by_doc.remove(id);
            }
        }
        let cursor = batch.cursor;
        let epoch = Some(batch.epoch.as_str()).filter(|e| !e.is_empty());
        self.write(|w| {
            // Read what each document has here, then merge and derive them
            // on every core while writing the results as they come.
            let mut work = Vec::with_capacity(by_doc.len());
            for (doc_id, (snapshots, changes)) in by_doc {
                work.extend(w.remote_work(doc_id, snapshots, changes)?);
            }
            let actor = w.actor.clone();
            let mut quarantined = 0;
            merge_and_store(&work, &actor, |work, merged| match merged {
                Ok(merged) => w.store_merged(work.doc_id, merged),
                Err(why) => {
                    quarantined += 1;
                    w.quarantine(work, &why.to_string())
                }
            })?;
            if cursor > 0 {
                // Within one epoch the cursor only moves forward; a new
                // epoch (a restored server) has a log of its own.
                w.tx.execute(
                    "UPDATE sync_state SET
                       cursor = CASE WHEN ?2 IS NULL OR epoch IS ?2 THEN max(cursor, ?1) ELSE ?1 END,
                       epoch = coalesce(?2, epoch)
                     WHERE id = 1",
                    params![cursor as i64, epoch],
                )?;
            }
            Ok(quarantined)
        })
    }

    /// How many pieces of pulled data are quarantined, and the latest few
    /// (newest first): document, kind, reason, when.
    pub fn quarantined(&self, latest: usize) -> Result<(u64, Vec<QuarantinedData>)> {
        let count = self
            .conn
            .query_row("SELECT count(*) FROM quarantine", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        let rows = self
            .conn
            .prepare(&format!(
                "SELECT doc_id, kind, reason, at FROM quarantine ORDER BY seq DESC LIMIT {}",
                i64::try_from(latest).unwrap_or(i64::MAX)
            ))?
            .query_map([], |r| {
                Ok(QuarantinedData {
                    doc_id: r.get(0)?,
                    kind: r.get(1)?,
                    reason: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok((count, rows))
    }

    /// Merges quarantined data again (after an upgrade that fixes what
    /// refused it, say): each document's quarantined snapshots and changes
    /// go through the same merge as a pull. What merges now is stored and
    /// leaves the quarantine; what still does not stays there untouched,
    /// and nothing else changes.
    pub fn retry_quarantined(&mut self) -> Result<QuarantineRetry> {
        use std::collections::BTreeMap;
        type Quarantined = (Vec<Vec<u8>>, Vec<Vec<u8>>);
        self.write(|w| {
            // Read in the write transaction: what another process quarantines
            // meanwhile is not released unseen.
            let mut by_doc: BTreeMap<String, Quarantined> = BTreeMap::new();
            for row in w
                .tx
                .prepare("SELECT doc_id, kind, bytes FROM quarantine ORDER BY seq")?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?
            {
                let (doc_id, kind, bytes) = row?;
                let (snapshots, changes) = by_doc.entry(doc_id).or_default();
                if kind == "snapshot" {
                    snapshots.push(bytes);
                } else {
                    changes.push(bytes);
                }
            }
            let mut outcome = QuarantineRetry::default();
            let mut work = Vec::with_capacity(by_doc.len());
            for (doc_id, (snapshots, changes)) in &mut by_doc {
                let snapshots = snapshots.iter().map(Vec::as_slice).collect();
                match w.remote_work(doc_id, snapshots, std::mem::take(changes))? {
                    Some(one) => work.push(one),
                    // The document holds all of it already.
                    None => {
                        w.release_quarantined(doc_id)?;
                        outcome.merged += 1;
                    }
                }
            }
            let actor = w.actor.clone();
            merge_and_store(&work, &actor, |work, merged| match merged {
                Ok(merged) => {
                    w.store_merged(work.doc_id, merged)?;
                    w.release_quarantined(work.doc_id)?;
                    outcome.merged += 1;
                    Ok(())
                }
                Err(why) => {
                    tracing::warn!(doc = work.doc_id, reason = %keqing_shared::printable::printable(&why.to_string()), "quarantined data still does not merge");
                    outcome.still_quarantined += 1;
                    Ok(())
                }
            })?;
            Ok(outcome)
        })
    }

    /// Queues again every change this device made (its actor), in every
    /// document: after the server was restored from a backup, it may lack
    /// changes it had acknowledged. Pushing them again is harmless (the
    /// server keeps each change once). Returns how many were queued.
    pub fn requeue_own_changes(&mut self) -> Result<u64> {
        let actor = self.meta.actor.clone();
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM documents ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        self.write(|w| {
            let mut queued = 0u64;
            let mut insert = w.tx.prepare_cached(
                "INSERT INTO outbox (doc_id, hash, bytes) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING",
            )?;
            for id in &ids {
                let Some(bytes) = load_document(w.tx, id)? else {
                    continue;
                };
                let doc = automerge::Automerge::load(&bytes)
                    .map_err(|e| ClientError::Corrupt(format!("document {id}: {e}")))?;
                for c in doc.get_changes(&[]) {
                    if c.actor_id() == &actor {
                        queued += insert.execute(params![id, c.hash().to_string(), c.raw_bytes()])?
                            as u64;
                    }
                }
            }
            Ok(queued)
        })
    }

    pub fn pending_len(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM pending_changes", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// The retention this device keeps (years), if any.
    pub fn retention_years(&self) -> Result<Option<u32>> {
        Ok(self
            .conn
            .query_row("SELECT years FROM retention WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    /// Sets (or with `None` ends) the retention.
    pub fn set_retention(&mut self, years: Option<u32>) -> Result<()> {
        self.write(|w| {
            match years {
                Some(y) => w.tx.execute(
                    "INSERT INTO retention (id, years) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET years = excluded.years",
                    [y],
                )?,
                None => w.tx.execute("DELETE FROM retention", [])?,
            };
            Ok(())
        })
    }

    /// Drops from this device every dossier last active before `cutoff`
    /// (its last contact, or its creation): its document and its
    /// projection rows go, its id and phone numbers stay. A dossier with
    /// changes not yet acknowledged (outbox) or waiting for others
    /// (pending) is kept: nothing typed here is dropped before the server
    /// has it. Returns the ids dropped.
    pub fn drop_inactive(&mut self, cutoff: NaiveDate, now: &str) -> Result<Vec<String>> {
        let cutoff = format!("{cutoff}T00:00:00");
        self.write(|w| {
            let gone: Vec<(String, String)> = {
                let mut stmt = w.tx.prepare(
                    "SELECT p.dossier_id, coalesce(p.last_contact, p.created_at) AS active
                     FROM patients p JOIN documents d ON d.id = p.dossier_id
                     WHERE coalesce(p.last_contact, p.created_at) < ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.doc_id = p.dossier_id)
                       AND NOT EXISTS (SELECT 1 FROM pending_changes c WHERE c.doc_id = p.dossier_id)",
                )?;
                stmt.query_map([&cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for (id, active) in &gone {
                drop_here(w.tx, id, active, now, None)?;
            }
            Ok(gone.into_iter().map(|(id, _)| id).collect())
        })
    }

    /// The dropped dossier a phone number belongs to, if any, and the
    /// office it was transferred to (`None`: dropped by retention, still
    /// this office's at the server).
    pub fn dropped_by_phone(&self, phone: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT p.dossier_id, d.moved_to FROM dropped_phones p
                 LEFT JOIN dropped_dossiers d ON d.id = p.dossier_id
                 WHERE p.phone = ?1 ORDER BY d.moved_to IS NULL DESC, p.dossier_id LIMIT 1",
                [phone],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// How far this device has read headquarters' notices.
    pub fn notices_cursor(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row(
                "SELECT notices_cursor FROM sync_state WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0)
            .max(0) as u64)
    }

    pub fn set_notices_cursor(&mut self, cursor: u64) -> Result<()> {
        self.write(|w| {
            w.tx.execute(
                "UPDATE sync_state SET notices_cursor = ?1 WHERE id = 1",
                [i64::try_from(cursor).unwrap_or(i64::MAX)],
            )?;
            Ok(())
        })
    }

    /// Headquarters moved dossier `id` from this office to `to` at `at`:
    /// it goes from this device once nothing typed here waits for the
    /// server ([`Replica::drop_moved_away`]); until then it takes no edits.
    pub fn mark_moved_away(&mut self, id: &str, to: &str, at: &str) -> Result<()> {
        self.write(|w| {
            w.tx.execute(
                "INSERT INTO moved_away (id, to_office, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET to_office = excluded.to_office, at = excluded.at",
                params![id, to, at],
            )?;
            Ok(())
        })
    }

    /// Headquarters moved dossier `id` (back) to this office: it is no
    /// longer on its way out.
    pub fn unmark_moved_away(&mut self, id: &str) -> Result<()> {
        self.write(|w| {
            w.tx.execute("DELETE FROM moved_away WHERE id = ?1", [id])?;
            w.tx.execute(
                "UPDATE dropped_dossiers SET moved_to = NULL WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
    }

    /// The office a dossier was moved to, while it is still here.
    pub fn moved_to(&self, id: &str) -> Result<Option<String>> {
        moved_to(&self.conn, id)
    }

    /// Drops the dossiers moved to another office that have nothing of
    /// this device's waiting in the outbox: the document and projection
    /// rows go; the id, the phones and the office it went to stay (a call
    /// is told where the patient is now). Returns the ids dropped.
    pub fn drop_moved_away(&mut self, now: &str) -> Result<Vec<String>> {
        self.write(|w| {
            let gone: Vec<(String, String)> = {
                let mut stmt = w.tx.prepare(
                    "SELECT m.id, m.to_office FROM moved_away m
                     WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.doc_id = m.id)",
                )?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for (id, to) in &gone {
                let active: Option<String> = w
                    .tx
                    .query_row(
                        "SELECT coalesce(last_contact, created_at) FROM patients WHERE dossier_id = ?1",
                        [id],
                        |r| r.get(0),
                    )
                    .optional()?;
                drop_here(w.tx, id, active.as_deref().unwrap_or(now), now, Some(to))?;
                // What arrived for it waits for nothing now: it is another
                // office's.
                w.tx.execute("DELETE FROM pending_changes WHERE doc_id = ?1", [id])?;
                w.tx.execute("DELETE FROM moved_away WHERE id = ?1", [id])?;
            }
            Ok(gone.into_iter().map(|(id, _)| id).collect())
        })
    }

    /// Erases dossier `id` from this device (headquarters erased it): its
    /// document, projection rows, outbox, pending, refused and quarantined
    /// changes, and what retention or a transfer kept of it; its projection
    /// rows are replaced by a stand-in without identity (`pseudonym`, see
    /// `keqing_shared::lifecycle::without_identity`) so this office's
    /// reports of days past keep their figures. Deleted content is zeroed
    /// as it is freed; [`Replica::scrub`] does the rest. Returns whether
    /// the device held anything of it.
    pub fn erase_dossier(&mut self, id: &str, at: NaiveDateTime, pseudonym: &str) -> Result<bool> {
        self.conn.pragma_update(None, "secure_delete", "ON")?;
        let erased = self.write(|w| {
            let mut held = false;
            if let Some(bytes) = load_document(w.tx, id)? {
                held = true;
                let view = Dossier::load(&bytes, w.actor.clone())?.view()?;
                let stand_in = keqing_shared::lifecycle::without_identity(&view, pseudonym, at);
                let slots = schedule(&stand_in);
                keqing_projection::project_dossier(w.tx, &stand_in, &slots)?;
            }
            keqing_projection::remove_dossier(w.tx, id)?;
            for sql in [
                "DELETE FROM documents WHERE id = ?1",
                "DELETE FROM outbox WHERE doc_id = ?1",
                "DELETE FROM pending_changes WHERE doc_id = ?1",
                "DELETE FROM refused_changes WHERE doc_id = ?1",
                "DELETE FROM quarantine WHERE doc_id = ?1",
                "DELETE FROM dropped_phones WHERE dossier_id = ?1",
                "DELETE FROM dropped_dossiers WHERE id = ?1",
                "DELETE FROM moved_away WHERE id = ?1",
            ] {
                held |= w.tx.execute(sql, [id])? > 0;
            }
            // Unscrubbed (0) when something of it was here: the file then
            // owes a scrub, kept owed by a later notice of the same erasure.
            w.tx.execute(
                "INSERT INTO erased_dossiers (id, erased_at, scrubbed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET scrubbed = min(scrubbed, excluded.scrubbed)",
                params![id, keqing_shared::when::fmt_datetime(at), !held],
            )?;
            Ok(held)
        });
        self.conn.pragma_update(None, "secure_delete", "OFF")?;
        erased
    }

    /// Whether headquarters erased dossier `id` (as this device learnt).
    pub fn is_erased(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM erased_dossiers WHERE id = ?1", [id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Whether an erasure took something from this file that a scrub has
    /// not yet cleared away.
    pub fn scrub_owed(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM erased_dossiers WHERE scrubbed = 0)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Rebuilds the file (no free page or stale cell of an erased dossier
    /// left in it) and empties the WAL (its frames held the pages as they
    /// were). The background checkpointer may be copying the WAL back at
    /// that moment: the WAL is emptied once it is done, within the busy
    /// timeout, or the scrub fails and stays owed ([`Replica::scrub_owed`]).
    pub fn scrub(&mut self) -> Result<()> {
        // VACUUM's new copy of the file is a temporary database, which
        // SQLCipher's build keeps in memory (SQLITE_TEMP_STORE=2) and does
        // not encrypt: in a file it would put an encrypted replica's
        // dossiers on disk in the clear. So it stays in memory here (an
        // office's replica, not the national store the server vacuums in
        // a file beside it).
        self.conn.execute_batch("VACUUM")?;
        if !keqing_host::wal::empty_wal(&self.conn, BUSY_TIMEOUT)? {
            return Err(ClientError::ScrubUnfinished);
        }
        // Written after the WAL was emptied; the flag's page is all the
        // WAL then holds.
        self.conn.execute(
            "UPDATE erased_dossiers SET scrubbed = 1 WHERE scrubbed = 0",
            [],
        )?;
        Ok(())
    }

    /// Dossiers this device does not hold that changes have arrived for
    /// (waiting in pending_changes for their history): dropped here by
    /// retention and active again at another device, or transferred here
    /// by headquarters. To fetch back whole.
    pub fn dropped_with_changes(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT c.doc_id FROM pending_changes c
             WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = c.doc_id)
               AND NOT EXISTS (SELECT 1 FROM erased_dossiers e WHERE e.id = c.doc_id)
             ORDER BY c.doc_id",
        )?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// How many dossiers retention has dropped from this device.
    pub fn dropped_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM dropped_dossiers", [], |r| {
                r.get::<_, i64>(0)
            })?
            .max(0) as u64)
    }

    /// Forgets the outbox rows of these changes (hex hashes): headquarters
    /// holds them (a bundle's answer says so). Returns how many went.
    pub fn forget_outbox(&mut self, hashes: &[String]) -> Result<u64> {
        self.write(|w| {
            let mut delete = w.tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?;
            let mut n = 0;
            for h in hashes {
                n += delete.execute([h])? as u64;
            }
            Ok(n)
        })
    }

    /// The outbox row (document, position) of a change, by its hex hash.
    pub fn outbox_row_of(&self, hash: &str) -> Result<Option<(String, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT doc_id, seq FROM outbox WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub fn dossier_count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM documents WHERE kind = 'dossier'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Throws every projection away and derives it again from the documents.
    /// Returns the number of documents read.
    pub fn rebuild(&mut self) -> Result<u64> {
        self.write(|w| {
            // Every row is written again: the indexes only reads use are
            // built once at the end, inside this transaction.
            keqing_projection::set_indexes_aside(w.tx)?;
            keqing_projection::clear(w.tx)?;
            let docs: Vec<(String, String, String, Vec<u8>)> = {
                let mut stmt =
                    w.tx.prepare("SELECT id, kind, office, bytes FROM documents ORDER BY id")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let read = docs.len() as u64;
            for (id, kind, office, stored) in docs {
                let (id, office) = (&id, &office);
                let bytes = &packed::unpack(stored);
                if kind == "roster" {
                    let roster = Roster::load(bytes, w.actor.clone())?;
                    w.project_roster(office, &roster.staff()?, &roster.activities())?;
                } else if kind == "nonpatient" {
                    let log = NonPatientLog::load(bytes, w.actor.clone())?;
                    keqing_projection::project_nonpatient(w.tx, id, office, &log.calls()?)?;
                } else if kind == "catalog" {
                    // No projection rows.
                } else {
                    let dossier = Dossier::load(bytes, w.actor.clone())?;
                    let view = dossier.view()?;
                    if &view.id != id {
                        return Err(ClientError::Corrupt(format!(
                            "document {id} holds dossier {}",
                            view.id
                        )));
                    }
                    w.project_dossier(&view, &schedule(&view))?;
                }
            }
            keqing_projection::restore_indexes(w.tx)?;
            Ok(read)
        })
    }

    /// Every projection row in a canonical text form, to compare two
    /// replicas' projections (rebuild == incremental).
    pub fn projection_dump(&self) -> Result<String> {
        Ok(keqing_projection::dump(&self.conn)?)
    }

    /// `PRAGMA integrity_check`, "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Bytes of document storage and their count, for the benchmark.
    pub fn document_bytes(&self) -> Result<(u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(bytes)), 0) FROM documents WHERE kind = 'dossier'",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }
}

fn staff_named(conn: &Connection, name: &str) -> Result<Option<Staff>> {
    let row = conn
        .prepare_cached("SELECT id, role, active FROM staff WHERE name = ?1")?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .optional()?;
    match row {
        Some((id, role, active)) => Ok(Some(Staff {
            id,
            name: name.to_string(),
            role: Role::parse(&role)?,
            active,
        })),
        None => Ok(None),
    }
}

/// A document's saved bytes (stored packed: see [`store_document`]).
fn load_document(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached("SELECT bytes FROM documents WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .map(packed::unpack))
}

/// At most this many same-name patients are listed: a common name in a big
/// office has hundreds, and one lookup must not turn into thousands of reads.
const SAME_NAME_LIMIT: usize = 20;

fn patient_row(conn: &Connection, id: &str) -> Result<Option<PatientRow>> {
    Ok(keqing_projection::patients::patient_row(conn, id)?)
}

/// Drops dossier `id` from this device, keeping its id, its phones, when
/// it was last active and (a transfer) the office it went to: what
/// retention and a transfer leave of it.
fn drop_here(
    tx: &Connection,
    id: &str,
    last_active: &str,
    now: &str,
    moved_to: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO dropped_phones (phone, dossier_id)
         SELECT phone, dossier_id FROM patient_phones WHERE dossier_id = ?1",
        [id],
    )?;
    tx.execute(
        "INSERT INTO dropped_dossiers (id, last_active, dropped_at, moved_to) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET dropped_at = excluded.dropped_at,
           moved_to = coalesce(excluded.moved_to, moved_to)",
        params![id, last_active, now, moved_to],
    )?;
    keqing_projection::remove_dossier(tx, id)?;
    tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    Ok(())
}

fn moved_to(conn: &Connection, id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT to_office FROM moved_away WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

fn dossiers_with_phone(conn: &Connection, phone: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ph.dossier_id FROM patient_phones ph JOIN patients p ON p.dossier_id = ph.dossier_id
         WHERE ph.phone = ?1 AND p.merged_into IS NULL ORDER BY ph.dossier_id",
    )?;
    let ids = stmt
        .query_map([phone], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// The reason given to changes moved aside because an earlier change of
/// their dossier was refused.
pub const HELD_BEHIND_REFUSED: &str =
    "暂缓: 此档案较早的变更被服务器拒绝 held: an earlier change of this dossier was refused";

/// One of this device's changes the server refused for good (or held
/// behind such a change).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedChange {
    pub doc_id: String,
    pub reason: String,
    /// China Standard Time.
    pub at: String,
    pub bytes: u64,
}

/// Pulled data put aside because its document could not be merged with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuarantinedData {
    pub doc_id: String,
    /// `snapshot` or `change`.
    pub kind: String,
    pub reason: String,
    /// China Standard Time.
    pub at: String,
}

/// What [`Replica::retry_quarantined`] did, in documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QuarantineRetry {
    /// Documents whose quarantined data merged and left the quarantine.
    pub merged: usize,
    /// Documents whose data still does not merge (kept as it was).
    pub still_quarantined: usize,
}

/// One document of a pull batch, ready to merge off the database.
struct RemoteWork<'b> {
    doc_id: &'b str,
    /// Nothing of this document is stored here yet: no bytes, no waiting
    /// changes, hence no projection rows.
    fresh: bool,
    local: Option<Vec<u8>>,
    snapshots: Vec<&'b [u8]>,
    changes: Vec<Vec<u8>>,
}

/// What the projection tables hold for a merged document.
enum Derived {
    /// The rows derived on the merging thread, not the writing one.
    Dossier {
        office: String,
        rows: keqing_projection::rows::DossierRows,
    },
    Roster {
        office: String,
        staff: Vec<Staff>,
        activities: Vec<keqing_shared::activity::Activity>,
    },
    NonPatient {
        office: String,
        calls: Vec<keqing_shared::records::NonPatientCall>,
    },
    /// A copy of headquarters' catalogue (read where it is used).
    Catalog { office: String },
}

/// A merged document: changes still waiting for a dependency, and its
/// stored form (saved bytes, packed) with its projection (none while
/// nothing is applicable).
struct MergedDocument {
    /// See [`RemoteWork::fresh`].
    fresh: bool,
    waiting: Vec<(String, Vec<u8>)>,
    document: Option<(Vec<u8>, Derived)>,
}

/// Merges one document's incoming data into its local bytes and derives
/// its projection: automerge work only, no database.
fn merge_one(work: &RemoteWork<'_>, actor: &ActorId) -> Result<MergedDocument> {
    let doc_id = work.doc_id;
    let merged =
        keqing_shared::sync::merge_remote(work.local.as_deref(), &work.snapshots, &work.changes)
            .map_err(|e| ClientError::Remote(format!("{doc_id}: {}", e.message)))?;
    let Some((bytes, loaded)) = merged.document else {
        return Ok(MergedDocument {
            fresh: work.fresh,
            waiting: merged.waiting,
            document: None,
        });
    };
    let derived = if let Some(office) = keqing_shared::catalog::parse_catalog_id(doc_id) {
        // Checked now: a copy that does not read is quarantined, not kept.
        keqing_shared::catalog::read_copy(&loaded)?;
        Derived::Catalog {
            office: office.to_string(),
        }
    } else if let Some(office) = doc_id.strip_prefix("roster-") {
        let roster = Roster::load(&bytes, actor.clone())?;
        Derived::Roster {
            office: office.to_string(),
            staff: roster.staff()?,
            activities: roster.activities(),
        }
    } else if let Some((office, _)) = keqing_shared::nonpatient::parse_log_id(doc_id) {
        let log = NonPatientLog::load(&bytes, actor.clone())?;
        Derived::NonPatient {
            office: office.to_string(),
            calls: log.calls()?,
        }
    } else {
        let view = Dossier::view_of(&loaded)?;
        if view.id != doc_id {
            return Err(ClientError::Remote(format!(
                "document {doc_id} says its id is {}",
                view.id
            )));
        }
        let slots = schedule(&view);
        Derived::Dossier {
            rows: keqing_projection::rows::DossierRows::of(&view, &slots),
            office: view.office,
        }
    };
    Ok(MergedDocument {
        fresh: work.fresh,
        waiting: merged.waiting,
        // Packed here, on a worker thread, not by the thread writing.
        document: Some((packed::pack(&bytes), derived)),
    })
}

/// [`merge_one`] with a panic inside automerge (untrusted data) turned
/// into an error.
fn merge_one_guarded(work: &RemoteWork<'_>, actor: &ActorId) -> Result<MergedDocument> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merge_one(work, actor)))
        .unwrap_or_else(|_| {
            Err(ClientError::Remote(format!(
                "{}: reading the merged document failed",
                work.doc_id
            )))
        })
}

/// Below this many documents a batch is merged on the calling thread.
const PARALLEL_MERGE_MIN: usize = 64;

/// [`merge_one`] for every document of a batch on worker threads (one per
/// core; a fresh device's first pull is mostly this work) while the calling
/// thread hands each result to `store` as it comes (the SQL writes overlap
/// the merging). A document that does not merge is handed over with its
/// error (merging does no IO: the error is about the documents' bytes,
/// almost always the incoming ones); stops at the first error `store`
/// returns.
fn merge_and_store<'w, 'b>(
    work: &'w [RemoteWork<'b>],
    actor: &ActorId,
    mut store: impl FnMut(&'w RemoteWork<'b>, Result<MergedDocument>) -> Result<()>,
) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if threads < 2 || work.len() < PARALLEL_MERGE_MIN {
        for w in work {
            store(w, merge_one_guarded(w, actor))?;
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(256);
        for _ in 0..threads {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(w) = work.get(i) else { break };
                    let merged = merge_one_guarded(w, actor);
                    // The receiver is gone after an error: stop.
                    if tx.send((w, merged)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Leaving the loop early drops the receiver, which stops the workers.
        for (w, merged) in rx {
            store(w, merged)?;
        }
        Ok(())
    })
}

/// Refuses an edit whose change, or the document it leaves, is over the
/// limits of [`keqing_shared::limits`]: checked before anything is written,
/// so nothing over a limit enters the outbox (the server would refuse it).
fn check_limits(changes: &[&NewChange], document: &[u8]) -> Result<()> {
    let largest = changes.iter().map(|c| c.bytes.len()).max().unwrap_or(0);
    Ok(keqing_shared::limits::check_edit(largest, document.len())?)
}

/// One write transaction on the replica.
pub struct WriteTx<'c> {
    tx: &'c Connection,
    actor: ActorId,
}

impl WriteTx<'_> {
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    pub fn load_document(&self, id: &str) -> Result<Option<Vec<u8>>> {
        load_document(self.tx, id)
    }

    pub fn dossiers_with_phone(&self, phone: &str) -> Result<Vec<String>> {
        dossiers_with_phone(self.tx, phone)
    }

    /// The office a dossier was moved to, while it is still here.
    pub fn moved_to(&self, id: &str) -> Result<Option<String>> {
        moved_to(self.tx, id)
    }

    /// At most `limit` live patients of this name (see
    /// [`Replica::patients_named`]).
    pub fn patients_named(
        &self,
        name: &str,
        age: Option<i64>,
        within: i64,
        limit: usize,
    ) -> Result<Vec<PatientRow>> {
        Ok(keqing_projection::patients::patients_named(
            self.tx, name, age, within, limit,
        )?)
    }

    /// Up to `limit` live dossiers of this name with a known age within
    /// `within` years of `age`.
    pub fn dossiers_named_aged(
        &self,
        name: &str,
        age: i64,
        within: i64,
        limit: usize,
    ) -> Result<Vec<String>> {
        Ok(keqing_projection::patients::dossiers_named_aged(
            self.tx, name, age, within, limit,
        )?)
    }

    pub fn staff_named(&self, name: &str) -> Result<Option<Staff>> {
        staff_named(self.tx, name)
    }

    /// Stores a dossier after an edit: its bytes, the new change in the
    /// outbox, and its projection rows.
    pub fn save_dossier(
        &mut self,
        dossier: &Dossier,
        changes: &[&NewChange],
        now: NaiveDateTime,
    ) -> Result<DossierView> {
        let view = dossier.view()?;
        let bytes = dossier.save();
        check_limits(changes, &bytes)?;
        self.save_document(&view.id, "dossier", &view.office, &bytes, changes, now)?;
        self.project_dossier(&view, &schedule(&view))?;
        Ok(view)
    }

    pub fn save_roster(
        &mut self,
        office: &str,
        roster: &Roster,
        changes: &[&NewChange],
        now: NaiveDateTime,
    ) -> Result<()> {
        let id = keqing_shared::roster::roster_id(office);
        let bytes = roster.save();
        check_limits(changes, &bytes)?;
        self.save_document(&id, "roster", office, &bytes, changes, now)?;
        self.project_roster(office, &roster.staff()?, &roster.activities())
    }

    /// Stores an office's non-patient log after a call was added: its
    /// bytes, the change(s) in the outbox, its rows.
    pub fn save_nonpatient_log(
        &mut self,
        id: &str,
        office: &str,
        log: &NonPatientLog,
        changes: &[&NewChange],
        now: NaiveDateTime,
    ) -> Result<()> {
        let bytes = log.save();
        check_limits(changes, &bytes)?;
        self.save_document(id, "nonpatient", office, &bytes, changes, now)?;
        keqing_projection::project_nonpatient(self.tx, id, office, &log.calls()?)?;
        Ok(())
    }

    fn save_document(
        &mut self,
        id: &str,
        kind: &str,
        office: &str,
        bytes: &[u8],
        changes: &[&NewChange],
        now: NaiveDateTime,
    ) -> Result<()> {
        self.store_document(id, kind, office, &packed::pack(bytes), &fmt_datetime(now))?;
        let mut outbox = self
            .tx
            .prepare_cached("INSERT INTO outbox (doc_id, hash, bytes) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING")?;
        for change in changes {
            outbox.execute(params![id, change.hash.to_string(), change.bytes])?;
        }
        Ok(())
    }

    /// Merges remote data into one local document (no outbox: these
    /// changes are not ours to push) and re-projects it.
    /// What a document has locally for a merge: its changes that were
    /// waiting for a dependency (they get another chance, appended to
    /// `changes`) and its saved bytes. `None`: nothing to merge, the local
    /// document already holds everything incoming (typically this device's
    /// own work coming back).
    fn remote_work<'b>(
        &self,
        doc_id: &'b str,
        snapshots: Vec<&'b [u8]>,
        mut changes: Vec<Vec<u8>>,
    ) -> Result<Option<RemoteWork<'b>>> {
        let waiting: Vec<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT bytes FROM pending_changes WHERE doc_id = ?1")?
            .query_map([doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let none_waiting = waiting.is_empty();
        changes.extend(waiting);
        let local = load_document(self.tx, doc_id)?;
        if local
            .as_deref()
            .is_some_and(|l| keqing_shared::sync::already_has(l, &snapshots, &changes))
        {
            return Ok(None);
        }
        Ok(Some(RemoteWork {
            doc_id,
            fresh: none_waiting && local.is_none(),
            local,
            snapshots,
            changes,
        }))
    }

    /// Puts a document's pulled data aside (see [`Replica::quarantined`]):
    /// its snapshots and changes, changes that were waiting here for a
    /// dependency included — moved, not copied, so they are not offered
    /// (and quarantined) again with the document's next data.
    fn quarantine(&self, work: &RemoteWork<'_>, reason: &str) -> Result<()> {
        tracing::warn!(doc = work.doc_id, reason = %keqing_shared::printable::printable(reason), "pulled data quarantined");
        let at = keqing_shared::when::fmt_datetime(keqing_host::now_cst());
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO quarantine (doc_id, kind, bytes, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for s in &work.snapshots {
            insert.execute(params![work.doc_id, "snapshot", s, reason, at])?;
        }
        for c in &work.changes {
            insert.execute(params![work.doc_id, "change", c, reason, at])?;
        }
        self.tx
            .prepare_cached("DELETE FROM pending_changes WHERE doc_id = ?1")?
            .execute([work.doc_id])?;
        Ok(())
    }

    /// Takes a document's data out of the quarantine once it merged.
    fn release_quarantined(&self, doc_id: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM quarantine WHERE doc_id = ?1")?
            .execute([doc_id])?;
        Ok(())
    }

    /// Writes a merged document: its waiting changes, its bytes and its
    /// projection rows.
    fn store_merged(&mut self, doc_id: &str, merged: MergedDocument) -> Result<()> {
        if !merged.fresh {
            self.tx
                .prepare_cached("DELETE FROM pending_changes WHERE doc_id = ?1")?
                .execute([doc_id])?;
        }
        let mut keep = self.tx.prepare_cached(
            "INSERT INTO pending_changes (hash, doc_id, bytes) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?;
        for (hash, bytes) in &merged.waiting {
            keep.execute(params![hash, doc_id, bytes])?;
        }
        let Some((stored, derived)) = merged.document else {
            return Ok(());
        };
        let now = keqing_host::now_cst_text();
        match derived {
            Derived::Roster {
                office,
                staff,
                activities,
            } => {
                self.store_document(doc_id, "roster", &office, &stored, &now)?;
                self.project_roster(&office, &staff, &activities)?;
            }
            Derived::Catalog { office } => {
                self.store_document(doc_id, "catalog", &office, &stored, &now)?;
            }
            Derived::NonPatient { office, calls } => {
                self.store_document(doc_id, "nonpatient", &office, &stored, &now)?;
                keqing_projection::project_nonpatient(self.tx, doc_id, &office, &calls)?;
            }
            Derived::Dossier { office, rows } => {
                self.store_document(doc_id, "dossier", &office, &stored, &now)?;
                // Here again (fetched back, or changed at another device):
                // no longer dropped.
                self.tx
                    .prepare_cached("DELETE FROM dropped_phones WHERE dossier_id = ?1")?
                    .execute([doc_id])?;
                self.tx
                    .prepare_cached("DELETE FROM dropped_dossiers WHERE id = ?1")?
                    .execute([doc_id])?;
                if merged.fresh {
                    keqing_projection::write_new_dossier(self.tx, &rows)?;
                } else {
                    keqing_projection::write_dossier(self.tx, rows)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a document in its stored form (`packed::pack` of its saved
    /// bytes: a dossier's 2.5 KB takes ~0.9 KB on disk; a document an older
    /// release stored as it was reads as it is, and is packed when next
    /// written).
    fn store_document(
        &mut self,
        id: &str,
        kind: &str,
        office: &str,
        stored: &[u8],
        now: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO documents (id, kind, office, bytes, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, updated_at = excluded.updated_at",
            )?
            .execute(params![id, kind, office, stored, now])?;
        Ok(())
    }

    fn project_roster(
        &mut self,
        office: &str,
        staff: &[Staff],
        activities: &[keqing_shared::activity::Activity],
    ) -> Result<()> {
        Ok(keqing_projection::project_roster(
            self.tx, office, staff, activities,
        )?)
    }

    fn project_dossier(&mut self, view: &DossierView, slots: &[Slot]) -> Result<()> {
        Ok(keqing_projection::project_dossier(self.tx, view, slots)?)
    }
}
