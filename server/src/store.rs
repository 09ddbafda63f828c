//! The server's store: SQLite (WAL, synchronous=FULL). The only module of
//! the server that writes SQL.
//!
//! Tables:
//! - `devices`: enrolled devices, their office (NULL for headquarters), the
//!   SHA-256 of their token (never the token), their bound automerge actor.
//! - `changes`: the append-only change log; `seq` is the feed's cursor.
//! - `documents`: per document its office and a saved snapshot that
//!   includes every logged change (`complete = 0` while some change waits
//!   for a dependency that has not arrived).
//! - the projection tables of `keqing-projection`, `projector` (its cursor
//!   in the change log) and `unreadable_documents` (what it could not read),
//!   kept by [`crate::projector`].
//!
//! The sync logic reaches the store only through [`SyncStore`], so another
//! backend (PostgreSQL) can serve without touching it.

use keqing_shared::sync::{LoggedChange, Snapshot};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use std::path::{Path, PathBuf};
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
}

pub type Result<T> = std::result::Result<T, StoreError>;

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
];

/// After the projection tables were replaced: the projector starts over
/// from the start of the log, and nothing is known unreadable yet. Frozen.
const PROJECT_AGAIN: &str = r#"
UPDATE projector SET cursor = 0 WHERE id = 1;
DELETE FROM unreadable_documents;
"#;

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

fn insert_audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        keqing_host::now_cst_text(),
        actor,
        action,
        subject,
        detail
    ])?;
    Ok(())
}

/// `PRAGMA integrity_check` of a database: "ok", or what is damaged.
fn integrity_of(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}

/// How a device is named in the audit log.
pub fn audit_actor(d: &Device) -> String {
    format!("{} ({})", d.name, d.id)
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
    },
    NonPatient {
        log_id: String,
        office: String,
        calls: Vec<keqing_shared::records::NonPatientCall>,
    },
}

impl Projected {
    /// The id of the document this was read from.
    fn doc_id(&self) -> String {
        match self {
            Projected::Dossier { view, .. } => view.id.clone(),
            Projected::Roster { office, .. } => format!("roster-{office}"),
            Projected::NonPatient { log_id, .. } => log_id.clone(),
        }
    }
}

/// What the sync core needs from a store.
pub trait SyncStore: Send {
    fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>>;
    fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()>;
    fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>>;
    /// A document's office and snapshot.
    fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>>;
    fn has_change(&self, hash: &[u8; 32]) -> Result<bool>;
    /// Appends a batch and the new snapshots in one durable transaction;
    /// returns the last sequence number.
    fn append(
        &mut self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64>;
    fn max_seq(&self) -> Result<u64>;
    /// Changes after `after` in scope (`None`: every office), at most `limit`.
    fn changes_after(
        &self,
        office: Option<&str>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LoggedChange>>;
    /// Document snapshots in scope with ids after `after_id`, at most `limit`;
    /// the bool says whether the snapshot holds every logged change.
    fn snapshots_after(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(Snapshot, bool)>>;
    /// Every logged change of a document up to `upto` (for incomplete ones).
    fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>>;
}

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

/// A read transaction of [`SqliteStore::read_tx`], ended when dropped.
pub struct ReadTx<'c>(&'c Connection);

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        // A read transaction has nothing to keep: ending it is all.
        let _ = self.0.execute_batch("COMMIT");
    }
}

/// After a panic while the store was locked: any transaction left open on
/// its connection is rolled back (see [`keqing_host::lock`]).
impl keqing_host::Recover for SqliteStore {
    fn recover(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Reader connections shared by the requests that only read (every
/// request's authentication, each pull batch, repairs): a request takes one
/// for as long as it reads and gives it back, so a pull its device does
/// not read, or a flood of requests, holds no connection, file handle or
/// read transaction.
pub struct ReaderPool {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<SqliteStore>>,
}

/// Idle reader connections kept for the next request.
const IDLE_READERS: usize = 8;

impl ReaderPool {
    pub fn new(template: &SqliteStore) -> std::sync::Arc<ReaderPool> {
        std::sync::Arc::new(ReaderPool {
            path: template.path.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An idle reader, or a new connection.
    pub fn get(self: &std::sync::Arc<Self>) -> Result<PooledReader> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let store = match idle {
            Some(s) => s,
            None => SqliteStore {
                conn: open_connection(&self.path)?,
                path: self.path.clone(),
            },
        };
        Ok(PooledReader {
            store: Some(store),
            pool: self.clone(),
        })
    }
}

/// A reader connection of a [`ReaderPool`], given back when dropped (unless
/// it is inside a transaction, which a panic could leave: then it closes).
pub struct PooledReader {
    store: Option<SqliteStore>,
    pool: std::sync::Arc<ReaderPool>,
}

impl std::ops::Deref for PooledReader {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        self.store.as_ref().expect("present until dropped")
    }
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(store) = self.store.take()
            && store.conn.is_autocommit()
            && let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(store);
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

/// The WAL size (pages) at which a committing connection copies the WAL
/// back itself: a backstop. A running server's checkpointer does it long
/// before, off the push path ([`SqliteStore::checkpoint`]); left to SQLite
/// at its default (1000 pages), every fourth push of a thousand changes
/// paid a checkpoint and its fsync, up to a tenth of a second.
const BACKSTOP_CHECKPOINT_PAGES: i64 = 16_384;

fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(64);
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

fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        name: r.get(1)?,
        office: r.get(2)?,
        actor: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
        cert_sha256: r.get(6)?,
    })
}

const DEVICE_COLUMNS: &str = "id, name, office, actor, created_at, revoked_at, cert_sha256";

impl SqliteStore {
    /// Opens the store in the data directory, refusing to make one: for
    /// commands that read or change what a store holds, where a mistyped
    /// `--data` must be an error, not an empty store with empty answers.
    pub fn open_existing(dir: &Path) -> Result<SqliteStore> {
        if !dir.join(DB_FILE).is_file() {
            return Err(StoreError::NoStore(dir.display().to_string()));
        }
        SqliteStore::open(dir)
    }

    /// Opens (creating if needed) the store in the data directory. The
    /// directory is 0700 and the database (with its WAL and shared-memory
    /// files) 0600; ones more open are tightened, with a warning.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        let io = |e| StoreError::Io(dir.display().to_string(), e);
        keqing_host::files::private_dir(dir).map_err(io)?;
        let path = dir.join(DB_FILE);
        keqing_host::files::prepare_database(&path).map_err(io)?;
        Ok(SqliteStore {
            conn: open_connection(&path)?,
            path,
        })
    }

    /// The connection itself, for tests that put it in states no method
    /// of ours leaves it in.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// Copies what it can of the WAL back into the database file, without
    /// waiting for or blocking the writer or any reader (PASSIVE).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// Another connection to the same file, for readers.
    pub fn reopen(&self) -> Result<SqliteStore> {
        Ok(SqliteStore {
            conn: open_connection(&self.path)?,
            path: self.path.clone(),
        })
    }

    /// Adds a device; `admin` (who ran the command) goes to the audit log
    /// with it, in one transaction.
    pub fn add_device(
        &mut self,
        id: &str,
        name: &str,
        office: Option<&str>,
        token_sha256: &[u8],
        now: &str,
        admin: &str,
    ) -> Result<Device> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO devices (id, name, office, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, office, token_sha256, now],
        )?;
        insert_audit(
            &tx,
            admin,
            "device.add",
            &format!("{name} ({id})"),
            &format!("office {}", office.unwrap_or("hq")),
        )?;
        tx.commit()?;
        self.device(id)?
            .ok_or_else(|| StoreError::UnknownDevice(id.to_string()))
    }

    pub fn device(&self, id: &str) -> Result<Option<Device>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
            ))?
            .query_row([id], device_from_row)
            .optional()?)
    }

    pub fn devices(&self) -> Result<Vec<Device>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY office, name"
        ))?;
        let v = stmt
            .query_map([], device_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// The device with this id, or the one device with this name.
    pub fn device_named(&self, id_or_name: &str) -> Result<Device> {
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

    /// Binds the client certificate with this SHA-256 to a device: from now
    /// on its token works only together with that certificate (a new
    /// binding replaces the old one, which stops working).
    pub fn bind_certificate(
        &mut self,
        id_or_name: &str,
        cert_sha256: &[u8; 32],
        admin: &str,
    ) -> Result<Device> {
        let device = self.device_named(id_or_name)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE devices SET cert_sha256 = ?2 WHERE id = ?1",
            params![device.id, cert_sha256.as_slice()],
        )?;
        let hex: String = cert_sha256.iter().map(|b| format!("{b:02x}")).collect();
        insert_audit(
            &tx,
            admin,
            "device.cert",
            &audit_actor(&device),
            &format!("sha256 {hex}"),
        )?;
        tx.commit()?;
        self.device(&device.id)?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }

    /// Revokes a device by id or by name (a name must be unambiguous).
    pub fn revoke(&mut self, id_or_name: &str, now: &str, admin: &str) -> Result<Device> {
        let device = &self.device_named(id_or_name)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
            params![device.id, now],
        )?;
        insert_audit(&tx, admin, "device.revoke", &audit_actor(device), "")?;
        tx.commit()?;
        self.device(&device.id)?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }

    pub fn change_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM changes", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    pub fn document_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM documents", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Starts a read transaction, ended when the guard drops (on a panic
    /// too): every read meanwhile sees one consistent state of the log (WAL
    /// snapshot isolation), and a lookup inside it is not a transaction of
    /// its own.
    pub fn read_tx(&self) -> Result<ReadTx<'_>> {
        self.conn.execute_batch("BEGIN")?;
        Ok(ReadTx(&self.conn))
    }

    /// The projector's position in the change log.
    pub fn projector_cursor(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT cursor FROM projector WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// The distinct documents changed after `after`, reading at most
    /// `limit` log entries, and the sequence number read up to.
    pub fn documents_changed_after(&self, after: u64, limit: u32) -> Result<(Vec<String>, u64)> {
        // Limits are part of the SQL text: a bound LIMIT makes SQLite
        // re-prepare the statement on every run.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT seq, doc_id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT {limit}"
        ))?;
        let rows = stmt.query_map(params![i64::try_from(after).unwrap_or(i64::MAX)], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        let mut upto = after;
        let mut docs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let (seq, doc) = row?;
            upto = seq;
            if seen.insert(doc.clone()) {
                docs.push(doc);
            }
        }
        Ok((docs, upto))
    }

    /// Writes the projections of a batch the projector derived from the log
    /// after `from` up to `upto` and moves its cursor there, in one
    /// transaction (a crash leaves both or neither; replaying a batch gives
    /// the same rows) — only if the cursor is still at `from`
    /// (compare-and-set). Two projectors may run (the server's, and
    /// `report` or `project --rebuild` from the command line): a batch read
    /// before another one saved, or before a rebuild cleared the tables,
    /// could hold older states than the rows now there. Such a batch is
    /// refused (`false`), nothing written; the caller reads again.
    ///
    /// `unreadable` (document id, reason) are the batch's documents that
    /// could not be read: recorded in `unreadable_documents`, from which a
    /// document read now is removed.
    pub fn save_projections(
        &mut self,
        docs: &[Projected],
        unreadable: &[(String, String)],
        from: u64,
        upto: u64,
    ) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cursor = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let moved = tx.execute(
            "UPDATE projector SET cursor = ?2 WHERE id = 1 AND cursor = ?1",
            [cursor(from), cursor(upto)],
        )?;
        if moved == 0 {
            return Ok(false);
        }
        for d in docs {
            match d {
                Projected::Dossier { view, slots } => {
                    keqing_projection::project_dossier(&tx, view, slots)?
                }
                Projected::Roster { office, staff } => {
                    keqing_projection::project_staff(&tx, office, staff)?
                }
                Projected::NonPatient {
                    log_id,
                    office,
                    calls,
                } => keqing_projection::project_nonpatient(&tx, log_id, office, calls)?,
            }
        }
        // Nearly always empty: one look spares a delete per document.
        let any_recorded: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM unreadable_documents)",
            [],
            |r| r.get(0),
        )?;
        if any_recorded {
            let mut readable =
                tx.prepare_cached("DELETE FROM unreadable_documents WHERE doc_id = ?1")?;
            for d in docs {
                readable.execute([d.doc_id()])?;
            }
        }
        if !unreadable.is_empty() {
            let mut record = tx.prepare_cached(
                "INSERT INTO unreadable_documents (doc_id, office, reason, seq, since)
                 VALUES (?1,
                         coalesce((SELECT office FROM documents WHERE id = ?1),
                                  (SELECT office FROM changes WHERE doc_id = ?1 LIMIT 1), ''),
                         ?2, ?3, ?4)
                 ON CONFLICT (doc_id) DO UPDATE SET reason = excluded.reason, seq = excluded.seq",
            )?;
            let now = keqing_host::now_cst_text();
            for (doc_id, reason) in unreadable {
                record.execute(params![doc_id, reason, cursor(upto), now])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// The documents the projector could not read, of one office or all.
    pub fn unreadable_documents(&self, office: Option<&str>) -> Result<Vec<UnreadableDocument>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, office, reason, seq, since FROM unreadable_documents
             WHERE ?1 IS NULL OR office = ?1 ORDER BY office, doc_id",
        )?;
        let rows = stmt.query_map([office], |r| {
            Ok(UnreadableDocument {
                doc_id: r.get(0)?,
                office: r.get(1)?,
                reason: r.get(2)?,
                seq: r.get::<_, i64>(3)? as u64,
                since: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores the complete snapshots the projector built, each only if no
    /// push has touched its document since the projector read it (the row's
    /// `last_seq` is unchanged) and the stored one is still incomplete: a
    /// push that came in between has written a snapshot of its own. One
    /// transaction; returns how many were stored.
    pub fn settle_snapshots(&mut self, settled: &[SettledSnapshot]) -> Result<usize> {
        if settled.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut stored = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE documents SET snapshot = ?2, complete = 1
                 WHERE id = ?1 AND last_seq = ?3 AND complete = 0",
            )?;
            for s in settled {
                stored += update.execute(params![
                    s.doc_id,
                    s.snapshot,
                    i64::try_from(s.last_seq).unwrap_or(i64::MAX)
                ])?;
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Throws every projection away and rewinds the projector to the start
    /// of the log (the next catch-up rebuilds them).
    pub fn reset_projections(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        keqing_projection::clear(&tx)?;
        tx.execute("DELETE FROM unreadable_documents", [])?;
        tx.execute("UPDATE projector SET cursor = 0 WHERE id = 1", [])?;
        tx.commit()?;
        Ok(())
    }

    /// The rows of a report of the days `from..=to`.
    pub fn report_rows(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<keqing_shared::report::ReportRows> {
        Ok(keqing_projection::report_rows(
            &self.conn, office, from, to,
        )?)
    }

    /// Every projection row in canonical text (rebuild == incremental).
    pub fn projection_dump(&self) -> Result<String> {
        Ok(keqing_projection::dump(&self.conn)?)
    }

    /// The store's epoch (see the `store_meta` table).
    pub fn epoch(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT epoch FROM store_meta WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Copies the whole store to `out` (a new file) while it stays in use:
    /// SQLite's online backup, `progress(done_pages, total_pages)` between
    /// steps. The copy is checked (`PRAGMA integrity_check`) before it counts.
    pub fn backup_to(&self, out: &Path, mut progress: impl FnMut(u64, u64)) -> Result<()> {
        if out.exists() {
            return Err(StoreError::Io(
                out.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file exists"),
            ));
        }
        // Made 0600 before SQLite writes a page into it: a backup holds
        // every patient.
        keqing_host::files::create_private(out)
            .map_err(|e| StoreError::Io(out.display().to_string(), e))?;
        let mut copy = Connection::open(out)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
            loop {
                let step = backup.step(1024)?;
                let p = backup.progress();
                let total = p.pagecount.max(0) as u64;
                progress(total - p.remaining.max(0) as u64, total);
                match step {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        // One self-contained file, whatever the source's journal mode.
        copy.pragma_update(None, "journal_mode", "DELETE")?;
        let check = integrity_of(&copy)?;
        if check != "ok" {
            return Err(StoreError::Migration(format!(
                "the backup copy failed its integrity check: {check}"
            )));
        }
        Ok(())
    }

    /// Makes `dir` a store restored from the backup `from`: refuses a
    /// directory that already holds a store; the restored store gets a new
    /// epoch, so devices start over from it and re-push what it lacks.
    pub fn restore(dir: &Path, from: &Path, admin: &str) -> Result<SqliteStore> {
        let path = dir.join(DB_FILE);
        if path.exists() {
            return Err(StoreError::Io(
                path.display().to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "this data directory already holds a store; restore into a new one",
                ),
            ));
        }
        if !from.is_file() {
            return Err(StoreError::Io(
                from.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such backup file"),
            ));
        }
        let io = |e| StoreError::Io(dir.display().to_string(), e);
        keqing_host::files::private_dir(dir).map_err(io)?;
        keqing_host::files::prepare_database(&path).map_err(io)?;
        {
            let source = Connection::open_with_flags(
                from,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            let check = integrity_of(&source)?;
            if check != "ok" {
                return Err(StoreError::Migration(format!(
                    "the backup {} is damaged: {check}",
                    from.display()
                )));
            }
            let mut target = Connection::open(&path)?;
            rusqlite::backup::Backup::new(&source, &mut target)?.run_to_completion(
                1024,
                std::time::Duration::ZERO,
                None,
            )?;
        }
        let store = SqliteStore::open(dir)?;
        store.conn.execute(
            "UPDATE store_meta SET epoch = lower(hex(randomblob(16))) WHERE id = 1",
            [],
        )?;
        store.audit(
            admin,
            "store.restore",
            &from.display().to_string(),
            "new epoch",
        )?;
        Ok(store)
    }

    /// Appends one line to the audit log.
    pub fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        insert_audit(&self.conn, actor, action, subject, detail)
    }

    /// The newest `limit` lines of the audit log, oldest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT seq, at, actor, action, subject, detail FROM
             (SELECT * FROM audit ORDER BY seq DESC LIMIT {limit}) ORDER BY seq",
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Pairs of live dossiers across all offices that may be one patient.
    pub fn duplicate_candidates(
        &self,
    ) -> Result<Vec<keqing_projection::patients::DuplicateCandidate>> {
        Ok(keqing_projection::patients::duplicate_candidates(
            &self.conn,
        )?)
    }

    /// The last day with a call in the projections (of one office).
    pub fn last_call_day(&self, office: Option<&str>) -> Result<Option<chrono::NaiveDate>> {
        Ok(keqing_projection::last_call_day(&self.conn, office)?)
    }

    /// The device holding this token, if any (revoked devices included).
    pub fn device_with_token(&self, token: &str) -> Result<Option<Device>> {
        self.device_by_token_hash(&crate::hub::token_hash(token))
    }

    pub fn integrity_check(&self) -> Result<String> {
        integrity_of(&self.conn)
    }

    /// The next documents of a scope after `after_id` (at most `limit`):
    /// id, whether its snapshot holds every logged change, and the
    /// snapshot's length, without reading the snapshots themselves.
    pub fn document_page(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, bool, usize)>> {
        let sql = match office {
            Some(_) => format!(
                "SELECT id, complete, length(snapshot) FROM documents
                 WHERE office = ?1 AND id > ?2 ORDER BY id LIMIT {limit}"
            ),
            None => format!(
                "SELECT id, complete, length(snapshot) FROM documents
                 WHERE ?1 IS NULL AND id > ?2 ORDER BY id LIMIT {limit}"
            ),
        };
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![office, after_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as usize))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// One document's stored snapshot.
    pub fn snapshot_of(&self, doc_id: &str) -> Result<Vec<u8>> {
        Ok(self
            .conn
            .prepare_cached("SELECT snapshot FROM documents WHERE id = ?1")?
            .query_row([doc_id], |r| r.get(0))
            .optional()?
            .unwrap_or_default())
    }

    /// A document's logged changes after `after` up to `upto`, as many as
    /// `budget` lets through; `true` when some were left for later.
    pub fn changes_of_within(
        &self,
        doc_id: &str,
        after: u64,
        upto: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<LoggedChange>, bool)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, doc_id, bytes FROM changes WHERE doc_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![doc_id, seq_param(after), seq_param(upto)], logged)?;
        take_within(rows, budget)
    }

    /// The changes of a scope after `after`, as many as `budget` lets
    /// through; `true` when the budget ran out (more may follow).
    pub fn changes_after_within(
        &self,
        office: Option<&str>,
        after: u64,
        budget: &mut Budget,
    ) -> Result<(Vec<LoggedChange>, bool)> {
        // Rows are read one at a time and the read stops at the budget: a
        // page of big changes is never loaded whole. One more row than the
        // budget's count is asked for, to tell whether the feed goes on.
        let limit = budget.max_items + 1;
        let sql = match office {
            Some(_) => format!(
                "SELECT seq, doc_id, bytes FROM changes WHERE office = ?1 AND seq > ?2 ORDER BY seq LIMIT {limit}"
            ),
            None => format!(
                "SELECT seq, doc_id, bytes FROM changes WHERE ?1 IS NULL AND seq > ?2 ORDER BY seq LIMIT {limit}"
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![office, seq_param(after)], logged)?;
        take_within(rows, budget)
    }
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn logged(r: &rusqlite::Row<'_>) -> rusqlite::Result<LoggedChange> {
    Ok(LoggedChange {
        seq: r.get::<_, i64>(0)? as u64,
        doc_id: r.get(1)?,
        bytes: r.get(2)?,
    })
}

/// Takes rows while `budget` has room; `true` when a row was left.
fn take_within(
    rows: impl Iterator<Item = rusqlite::Result<LoggedChange>>,
    budget: &mut Budget,
) -> Result<(Vec<LoggedChange>, bool)> {
    let mut out = Vec::new();
    for row in rows {
        let c = row?;
        if !budget.fits(c.bytes.len()) {
            return Ok((out, true));
        }
        budget.take(c.bytes.len());
        out.push(c);
    }
    Ok((out, false))
}

impl SyncStore for SqliteStore {
    fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE token_sha256 = ?1"
            ))?
            .query_row([token_sha256], device_from_row)
            .optional()?)
    }

    fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()> {
        self.conn.execute(
            "UPDATE devices SET actor = ?2 WHERE id = ?1 AND actor IS NULL",
            params![device_id, actor],
        )?;
        Ok(())
    }

    fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE actor = ?1"
            ))?
            .query_row([actor], device_from_row)
            .optional()?)
    }

    fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT office, snapshot, complete, last_seq FROM documents WHERE id = ?1",
            )?
            .query_row([doc_id], |r| {
                Ok(StoredDocument {
                    office: r.get(0)?,
                    snapshot: r.get(1)?,
                    complete: r.get(2)?,
                    last_seq: r.get::<_, i64>(3)? as u64,
                })
            })
            .optional()?)
    }

    fn has_change(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM changes WHERE hash = ?1")?
            .query_row([&hash[..]], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn append(
        &mut self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO changes (hash, doc_id, office, device_id, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO NOTHING",
            )?;
            for e in entries {
                insert.execute(params![&e.hash[..], e.doc_id, e.office, device_id, e.bytes])?;
            }
            let last: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| {
                r.get(0)
            })?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO documents (id, office, snapshot, complete, last_seq) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot, complete = excluded.complete,
                 last_seq = excluded.last_seq",
            )?;
            for d in docs {
                upsert.execute(params![d.doc_id, d.office, d.snapshot, d.complete, last])?;
            }
            for d in docs {
                if let Some(into) = &d.merged_into {
                    let actor: String = tx
                        .query_row(
                            "SELECT name || ' (' || id || ')' FROM devices WHERE id = ?1",
                            [device_id],
                            |r| r.get(0),
                        )
                        .optional()?
                        .unwrap_or_else(|| device_id.to_string());
                    insert_audit(
                        &tx,
                        &actor,
                        "dossier.merge",
                        &d.doc_id,
                        &format!("office {} merged into {into}", d.office),
                    )?;
                }
            }
        }
        tx.commit()?;
        self.max_seq()
    }

    fn max_seq(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    fn changes_after(
        &self,
        office: Option<&str>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LoggedChange>> {
        let map = |r: &rusqlite::Row<'_>| {
            Ok(LoggedChange {
                seq: r.get::<_, i64>(0)? as u64,
                doc_id: r.get(1)?,
                bytes: r.get(2)?,
            })
        };
        let v = match office {
            Some(o) => self
                .conn
                .prepare_cached(&format!("SELECT seq, doc_id, bytes FROM changes WHERE office = ?1 AND seq > ?2 ORDER BY seq LIMIT {limit}"))?
                .query_map(params![o, i64::try_from(after).unwrap_or(i64::MAX)], map)?
                .collect::<rusqlite::Result<_>>()?,
            None => self
                .conn
                .prepare_cached(&format!("SELECT seq, doc_id, bytes FROM changes WHERE seq > ?1 ORDER BY seq LIMIT {limit}"))?
                .query_map(params![i64::try_from(after).unwrap_or(i64::MAX)], map)?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(v)
    }

    fn snapshots_after(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(Snapshot, bool)>> {
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                Snapshot {
                    doc_id: r.get(0)?,
                    document: r.get(1)?,
                },
                r.get(2)?,
            ))
        };
        let v = match office {
            Some(o) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT id, snapshot, complete FROM documents WHERE office = ?1 AND id > ?2 ORDER BY id LIMIT {limit}",
                ))?
                .query_map(params![o, after_id], map)?
                .collect::<rusqlite::Result<_>>()?,
            None => self
                .conn
                .prepare_cached(&format!("SELECT id, snapshot, complete FROM documents WHERE id > ?1 ORDER BY id LIMIT {limit}"))?
                .query_map(params![after_id], map)?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(v)
    }

    fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>> {
        let v = self
            .conn
            .prepare_cached("SELECT seq, doc_id, bytes FROM changes WHERE doc_id = ?1 AND seq <= ?2 ORDER BY seq")?
            .query_map(params![doc_id, i64::try_from(upto).unwrap_or(i64::MAX)], |r| {
                Ok(LoggedChange {
                    seq: r.get::<_, i64>(0)? as u64,
                    doc_id: r.get(1)?,
                    bytes: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }
}
