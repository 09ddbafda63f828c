//! The SQLite store's schema: its migrations (frozen texts) and how a
//! connection is opened.

use crate::store::{Result, StoreError};
use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};
use std::path::Path;

pub const DB_FILE: &str = "server.sqlite";

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        r#"
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    office TEXT,
    token_sha256 BLOB NOT NULL UNIQUE,
    actor BLOB UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    office TEXT NOT NULL,
    device_id TEXT NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX changes_office_seq ON changes(office, seq);
CREATE INDEX changes_doc ON changes(doc_id, seq);
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    complete INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX documents_office ON documents(office, id);
"#,
    ),
    // The projections headquarters' reports read: the same tables as an
    // office replica's, maintained by the projector (version 1, frozen;
    // replaced by version 2 below).
    M::up(keqing_projection::V1_TABLES),
    M::up(
        r#"
-- How far the projector has read the change log.
CREATE TABLE projector (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cursor INTEGER NOT NULL
);
INSERT INTO projector (id, cursor) VALUES (1, 0);
"#,
    ),
    M::up(
        r#"
-- Who did what to whose data: enrolment and revocation of devices, merges
-- of dossiers, and every headquarters read of personal details. Rows are
-- only ever added; the triggers refuse to change or delete one.
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    ),
    M::up(
        r#"
-- The store's epoch: sync cursors are positions in this store's log. A
-- store restored from a backup gets a new epoch, so devices whose cursors
-- point past its log start over (and re-push what it lost).
CREATE TABLE store_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT NOT NULL
);
INSERT INTO store_meta (id, epoch) VALUES (1, lower(hex(randomblob(16))));
"#,
    ),
    M::up(
        r#"
-- Mutual TLS: the SHA-256 of the one client certificate a device must
-- present with its token (NULL: none bound).
ALTER TABLE devices ADD COLUMN cert_sha256 BLOB;
"#,
    ),
    // Which projection tables a dossier's next projection may skip.
    M::up(keqing_projection::V1_DIGESTS),
    M::up(
        r#"
-- Documents the projector could not read: their rows in the projection
-- tables are missing or older than their log, so reports lack them (and
-- say so). The next projection that reads one removes its row.
CREATE TABLE unreadable_documents (
    doc_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    reason TEXT NOT NULL,
    seq INTEGER NOT NULL,
    since TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX unreadable_documents_office ON unreadable_documents(office);
"#,
    ),
    // Projection version 2. Stores made before it hold whatever shape the
    // projection tables had when they were made (migration 2 once created
    // what the projection crate said that day): every store now gets
    // today's tables, empty...
    M::up(keqing_projection::REPLACE_WITH_V2),
    // ...and the projector derives them again from the start of the log.
    M::up(PROJECT_AGAIN),
    // Projection version 3 (the office's whole day), the same way.
    M::up(keqing_projection::REPLACE_WITH_V3),
    M::up(PROJECT_AGAIN),
    // Projection version 4 (the category tallies): added, filled from the
    // rows the store has; nothing is projected again.
    M::up(keqing_projection::V4_ADDITIONS),
    // Projection version 5 (the day tallies of follow-ups and due slots),
    // the same way.
    M::up(keqing_projection::V5_ADDITIONS),
    // Projection version 6 (covering report indexes).
    M::up(keqing_projection::V6_CHANGES),
    M::up(
        r#"
-- Headquarters' people who sign in to the dashboard: a password only as
-- its Argon2id hash.
CREATE TABLE hq_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled_at TEXT
);
-- Who read which dossier (or exported what) at which office device, as the
-- devices report it: appended, never changed. `seq` is the order of
-- commits (one writer), which devices follow to fetch their office's.
CREATE TABLE office_reads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    office TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    device_seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    UNIQUE (device_id, device_seq)
);
CREATE INDEX office_reads_office ON office_reads(office, seq);
CREATE TRIGGER office_reads_append_only_update BEFORE UPDATE ON office_reads
BEGIN SELECT RAISE(ABORT, 'the read audit is append-only'); END;
CREATE TRIGGER office_reads_append_only_delete BEFORE DELETE ON office_reads
BEGIN SELECT RAISE(ABORT, 'the read audit is append-only'); END;
"#,
    ),
    M::up(
        r#"
-- Media spend headquarters imports: one amount per day, office and
-- catalogue source (a re-import replaces it).
CREATE TABLE spend (
    day TEXT NOT NULL,
    office TEXT NOT NULL,
    source_code TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (day, office, source_code)
) WITHOUT ROWID;
"#,
    ),
    // Projection version 7 (staff events, the offices' own activities):
    // derived by Rust, so the projector derives every document again (the
    // stored digests spare the older tables' rows).
    M::up(keqing_projection::V7_ADDITIONS),
    M::up(PROJECT_AGAIN),
    M::up(
        r#"
-- Headquarters' transfers and erasures of dossiers (their fates): one row
-- per office whose devices must learn of it (a device fetches its
-- office's rows after a cursor; headquarters' devices every row). An
-- erasure's rows are its tombstone: the dossier's id and offices, when,
-- why and by whom; nothing of its content.
CREATE TABLE fates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    office TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'erase')),
    from_office TEXT NOT NULL,
    to_office TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    by TEXT NOT NULL
);
CREATE INDEX fates_doc ON fates(doc_id, seq);
CREATE INDEX fates_office ON fates(office, seq);
-- Erasures asked for and not yet confirmed (`erase`, then `erase --confirm`).
CREATE TABLE erasure_requests (
    doc_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL
) WITHOUT ROWID;
"#,
    ),
    M::up(
        r#"
-- Fleet health: what each device last said of itself (version, outbox,
-- set-aside changes) and when it last pushed, pulled and was up to date.
-- Written by the serving processes every few seconds, not per request.
CREATE TABLE device_health (
    device_id TEXT PRIMARY KEY,
    client_version TEXT,
    outbox INTEGER,
    quarantined INTEGER,
    last_push TEXT,
    last_pull TEXT,
    last_sync TEXT
) WITHOUT ROWID;
"#,
    ),
    M::up(LOG_COMPACTION),
    // Projection version 8: two indexes nothing reads any more, and an
    // R*Tree of the spans that are not empty (rows unchanged).
    M::up(keqing_projection::V8_CHANGES),
    M::up(DOCUMENTS_IN_ROWS),
    // Projection version 9: a dossier's records keyed by dossier, without
    // a rowid (rows copied as they are).
    M::up(keqing_projection::V9_CHANGES),
    // The office's list indexes: the server lists no patients.
    M::up(keqing_projection::DROP_OFFICE_LIST_INDEXES),
    // Projection version 10: the overdue count from day tallies, filled
    // from the slots; then the R*Tree of the office's day list goes.
    M::up(keqing_projection::V10_ADDITIONS),
    M::up(keqing_projection::DROP_SLOT_SPANS),
    // Projection version 11: a dossier's table digests in its patient row
    // (copied over).
    M::up(keqing_projection::V11_CHANGES),
];

/// The documents in a rowid table, with the size of each snapshot. A
/// `WITHOUT ROWID` table keeps at most ~1 000 bytes of a row in its B-tree
/// page (a quarter of a 4 KiB page) and the rest in an overflow page of
/// its own: a 2.5 KB snapshot took 4.6 KB, ~1.1 KB a dossier unused. A
/// rowid table keeps rows up to a page's size in the page, packed with
/// their neighbours (its key is an index of ~50 bytes a dossier). The
/// snapshots are stored deflated from now on (`keqing_shared::packed`), so `size`
/// keeps the unpacked length a pull's budget reads; the rows copied here
/// keep their snapshots as they were until a push or the projector next
/// writes them. Copied in log order, the order later appends keep. Frozen.
const DOCUMENTS_IN_ROWS: &str = r#"
CREATE TABLE documents_in_rows (
    id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    complete INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    size INTEGER NOT NULL
);
INSERT INTO documents_in_rows (id, office, snapshot, complete, last_seq, size)
    SELECT id, office, snapshot, complete, last_seq, length(snapshot) FROM documents
    ORDER BY last_seq, id;
DROP TABLE documents;
ALTER TABLE documents_in_rows RENAME TO documents;
CREATE INDEX documents_office ON documents(office, id);
"#;

/// Log compaction: compaction took the changes at or below `floor` whose
/// document's snapshot holds them (each document's latest stays).
/// `log_marks` says where the log ended when, the horizon compaction keeps
/// by. Frozen (the PostgreSQL store's migration 11 is its counterpart).
const LOG_COMPACTION: &str = r#"
CREATE TABLE log_compaction (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    floor INTEGER NOT NULL
);
INSERT INTO log_compaction (id, floor) VALUES (1, 0);
CREATE TABLE log_marks (
    at TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// After the projection tables were replaced: the projector starts over
/// from the start of the log, and nothing is known unreadable yet. Frozen.
const PROJECT_AGAIN: &str = r#"
UPDATE projector SET cursor = 0 WHERE id = 1;
DELETE FROM unreadable_documents;
"#;

/// The WAL size (pages) at which a committing connection copies the WAL
/// back itself: a backstop. A running server's checkpointer does it long
/// before, off the push path ([`SqliteStore::checkpoint`]); left to SQLite
/// at its default (1000 pages), every fourth push of a thousand changes
/// paid a checkpoint and its fsync, up to a tenth of a second.
pub(super) const BACKSTOP_CHECKPOINT_PAGES: i64 = 16_384;

/// How long a connection waits for a lock another holds before it
/// answers busy (and [`super::conn::Conn::scrub`] for another checkpoint).
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    keqing_host::write_marker::watch_writes(&conn)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)?;
    // The projector alone prepares three statements a projection table
    // and an update for each set of columns an edit changes.
    conn.set_prepared_statement_cache_capacity(128);
    // 64 MiB of page cache (the default is 2 MiB): reports read ranges of
    // the projection indexes, and the sync path its recent log pages.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // An acknowledged push must survive a power cut.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Migrations::from_slice(MIGRATIONS)
        .to_latest(&mut conn)
        .map_err(|e| match e {
            rusqlite_migration::Error::MigrationDefinition(
                rusqlite_migration::MigrationDefinitionError::DatabaseTooFarAhead,
            ) => StoreError::NewerSchema(path.display().to_string()),
            other => StoreError::Migration(other.to_string()),
        })?;
    Ok(conn)
}

/// `PRAGMA integrity_check` of a database: "ok", or what is damaged.
pub(super) fn integrity_of(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}
