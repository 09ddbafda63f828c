//! The SQLite backend: one file (`server.sqlite` in `--data DIR`, WAL,
//! synchronous=FULL), the embedded default.
//!
//! Connections: one writer (every push's turn at the log is a `BEGIN
//! IMMEDIATE` transaction on it, under a mutex: the single-appender rule)
//! and a pool for the rest: requests that only read (each takes one for as
//! long as it reads, in one read transaction: a pull its device does not
//! read, or a flood of requests, holds no connection, file handle or read
//! transaction), projector sessions and administration.
//!
//! Tables:
//! - `devices`: enrolled devices, their office (NULL for headquarters), the
//!   SHA-256 of their token (never the token), their bound automerge actor.
//! - `changes`: the append-only change log; `seq` is the feed's cursor.
//! - `documents`: per document its office and a saved snapshot that
//!   includes every logged change (`complete = 0` while some change waits
//!   for a dependency that has not arrived, or a new dossier was logged
//!   without being built), stored deflated (`keqing_shared::packed`) beside its
//!   unpacked `size`.
//! - the projection tables of `keqing-projection`, `projector` (its cursor
//!   in the change log) and `unreadable_documents` (what it could not read).
//! - `audit` (append-only), `store_meta` (the epoch).

mod backup;
mod conn;
mod fates;
mod health;
mod leaves;
mod log;
mod people;
mod projections;
mod schema;

pub use schema::DB_FILE;

use crate::store::{
    AuditEntry, Budget, Compacted, Device, DeviceHealth, DocumentState, Erased, ErasureRequest,
    Fate, HqUser, LogReader, LogWriter, NewFate, NewLogEntry, OfficeRead, Projected, Projections,
    PushFooting, Repacked, Result, SettledSnapshot, StandIn, Store, StoreCounts, StoreError,
    StoredDocument, StoredRead, UnreadableDocument, UserChange,
};
use conn::Conn;
use keqing_shared::sync::{LoggedChange, Snapshot};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The SQLite store of one data directory.
pub struct SqliteStore {
    path: PathBuf,
    /// The one connection that appends to the log.
    writer: Mutex<Conn>,
    /// Connections for requests that only read and administration.
    readers: ReaderPool,
    /// Connections for projector sessions and the reports' reads.
    sessions: ReaderPool,
    /// Connections for pushes' checks (see [`Store::push_view`]).
    checkers: ReaderPool,
    /// Whether this process copies the WAL back on its own ([`Store::upkeep`]
    /// has run: a running server, from before its first session); until
    /// then a projector session lets the WAL grow long
    /// ([`PROJECTOR_CHECKPOINT_PAGES`]).
    upkept: std::sync::atomic::AtomicBool,
}

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
        // The writer's connection runs the migrations before the others open.
        let writer = Conn::open(&path)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers: ReaderPool::new(&path, READER_CACHE_KIB, IDLE_READERS),
            sessions: ReaderPool::new(&path, SESSION_CACHE_KIB, IDLE_SESSIONS),
            checkers: ReaderPool::new(&path, CHECKER_CACHE_KIB, IDLE_CHECKERS),
            path,
            upkept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Makes `dir` a store restored from the backup `from`: refuses a
    /// directory that already holds a store; the restored store gets a new
    /// epoch, so devices start over from it and re-push what it lacks.
    pub fn restore(dir: &Path, from: &Path, admin: &str) -> Result<SqliteStore> {
        backup::copy_backup(dir, from)?;
        let store = SqliteStore::open(dir)?;
        store.admin()?.new_epoch()?;
        store.audit(
            admin,
            "store.restore",
            &from.display().to_string(),
            "new epoch",
        )?;
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pooled connection for one administrative call.
    fn admin(&self) -> Result<Pooled<'_>> {
        self.readers.get()
    }

    /// A pooled connection for one projector session: what it writes can
    /// be had again from the log, so its commits need not wait for fsync
    /// (see [`SqliteProjections`]).
    fn projector_session(&self) -> Result<SqliteProjections<'_>> {
        let conn = self.sessions.get()?;
        conn.conn.pragma_update(None, "synchronous", "NORMAL")?;
        if !self.upkept.load(std::sync::atomic::Ordering::Relaxed) {
            conn.conn
                .pragma_update(None, "wal_autocheckpoint", PROJECTOR_CHECKPOINT_PAGES)?;
        }
        Ok(SqliteProjections { conn })
    }

    /// The writer's connection itself, for tests that put it in states no
    /// method of ours leaves it in.
    #[cfg(test)]
    pub(crate) fn with_writer_conn_for_tests<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> T,
    ) -> T {
        f(&keqing_host::lock(&self.writer).conn)
    }
}

/// Reader connections kept for the next request.
const IDLE_READERS: usize = 8;

/// A reader's page cache, in KiB (the writer's is 64 MiB): the pool's
/// caches fill up on a large store, and eight readers of 64 MiB each
/// would hold half a gigabyte of memory that the OS page cache already
/// holds. A pull reads its pages once each: with 16 MiB, a headquarters
/// device's first sync of 1M dossiers peaked the server at 305–321 MB,
/// with 4 MiB at 214–239 MB, in about the same time (181–204 s against
/// 193 s; BENCHMARKS.md).
const READER_CACHE_KIB: i64 = 4_096;

/// A projector session's (and the reports') page cache, in KiB: they
/// come back to the same index pages batch after batch.
const SESSION_CACHE_KIB: i64 = 16_384;

/// Session connections kept for the next projector batch or report.
const IDLE_SESSIONS: usize = 2;

/// A checker's page cache, in KiB (SQLite's default). A push's check
/// probes the log's hash index once for each of its changes: pages all
/// over an index as large as the log, read once each. On connections of
/// their own, with small caches, those probes do not push out what the
/// other pools' caches hold for pulls, the projector and reports, and add at
/// most `IDLE_CHECKERS` × 2 MiB. (Not measured apart: the server's peak
/// while 27 offices push was the same with and without them; what a
/// checked push held until its turn was what raised it, BENCHMARKS.md.)
const CHECKER_CACHE_KIB: i64 = 2_048;

/// Checker connections kept for the next push (the hub checks a few at
/// once).
const IDLE_CHECKERS: usize = 4;

/// Connections that only read, kept for the next request.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
    /// Each connection's page cache, in KiB.
    cache_kib: i64,
    /// Connections kept idle at most.
    max_idle: usize,
}

impl ReaderPool {
    fn new(path: &Path, cache_kib: i64, max_idle: usize) -> ReaderPool {
        ReaderPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            cache_kib,
            max_idle,
        }
    }

    /// A connection of the pool in a read transaction.
    fn view(&self) -> Result<SqliteReader<'_>> {
        let conn = self.get()?;
        conn.conn.execute_batch("BEGIN")?;
        Ok(SqliteReader { conn })
    }

    /// An idle reader, or a new connection.
    fn get(&self) -> Result<Pooled<'_>> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = Conn::open(&self.path)?;
                c.conn.pragma_update(None, "cache_size", -self.cache_kib)?;
                c
            }
        };
        Ok(Pooled {
            slot: Some(conn),
            pool: self,
        })
    }
}

/// A reader connection of the pool, given back when dropped (unless it is
/// inside a transaction, which a panic could leave: then it closes).
struct Pooled<'p> {
    slot: Option<Conn>,
    pool: &'p ReaderPool,
}

impl Pooled<'_> {
    /// Closes the connection instead of giving it back.
    fn discard(&mut self) {
        self.slot = None;
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.slot.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.slot.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.slot.take()
            && conn.conn.is_autocommit()
            && let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < self.pool.max_idle
        {
            idle.push(conn);
        }
    }
}

/// A pooled connection in a read transaction: every read through it sees
/// one state of the store (WAL snapshot isolation), and a lookup inside it
/// is not a transaction of its own.
struct SqliteReader<'p> {
    conn: Pooled<'p>,
}

impl Drop for SqliteReader<'_> {
    fn drop(&mut self) {
        // A read transaction has nothing to keep: ending it is all.
        let _ = self.conn.conn.execute_batch("COMMIT");
    }
}

/// The writer in a `BEGIN IMMEDIATE` transaction: rolled back when dropped
/// without a commit.
struct SqliteWriter<'w> {
    conn: MutexGuard<'w, Conn>,
    open: bool,
}

impl Drop for SqliteWriter<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Forwards the reads of [`LogReader`] to the session's connection.
macro_rules! forward_log_reader {
    ($ty:ty) => {
        impl LogReader for $ty {
            fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>> {
                self.conn.device_by_token_hash(token_sha256)
            }
            fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>> {
                self.conn.device_with_actor(actor)
            }
            fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>> {
                self.conn.document(doc_id)
            }
            fn push_footing(&self, ids: &[&str], hashes: &[[u8; 32]]) -> Result<PushFooting> {
                self.conn.push_footing(ids, hashes)
            }
            fn max_seq(&self) -> Result<u64> {
                self.conn.max_seq()
            }
            fn epoch(&self) -> Result<String> {
                self.conn.epoch()
            }
            fn log_floor(&self) -> Result<u64> {
                self.conn.log_floor()
            }
            fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>> {
                self.conn.changes_of(doc_id, upto)
            }
            fn changes_of_within(
                &self,
                doc_id: &str,
                after: u64,
                upto: u64,
                budget: &mut Budget,
            ) -> Result<(Vec<LoggedChange>, bool)> {
                self.conn.changes_of_within(doc_id, after, upto, budget)
            }
            fn changes_after_within(
                &self,
                office: Option<&str>,
                after: u64,
                budget: &mut Budget,
            ) -> Result<(Vec<LoggedChange>, bool)> {
                self.conn.changes_after_within(office, after, budget)
            }
            fn document_page(
                &self,
                office: Option<&str>,
                after_id: &str,
                limit: u32,
            ) -> Result<Vec<(String, bool, usize)>> {
                self.conn.document_page(office, after_id, limit)
            }
            fn snapshot_of(&self, doc_id: &str) -> Result<Vec<u8>> {
                self.conn.snapshot_of(doc_id)
            }
            fn snapshots_after(
                &self,
                office: Option<&str>,
                after_id: &str,
                limit: u32,
            ) -> Result<Vec<(Snapshot, bool)>> {
                self.conn.snapshots_after(office, after_id, limit)
            }
            fn fates_among(
                &self,
                ids: &[&str],
            ) -> Result<std::collections::HashMap<String, Vec<Fate>>> {
                self.conn.fates_among(ids)
            }
        }
    };
}

forward_log_reader!(SqliteReader<'_>);
forward_log_reader!(SqliteWriter<'_>);

impl LogWriter for SqliteWriter<'_> {
    fn append(
        &mut self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64> {
        self.conn.append(device_id, entries, docs)
    }

    fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()> {
        self.conn.bind_actor(device_id, actor)
    }

    fn audit(&mut self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        self.conn.audit(actor, action, subject, detail)
    }

    fn record_fate(&mut self, fate: &NewFate<'_>) -> Result<()> {
        self.conn.record_fate(fate)
    }

    fn move_document(&mut self, doc_id: &str, office: &str) -> Result<()> {
        self.conn.move_document(doc_id, office)
    }

    fn erase_document(&mut self, doc_id: &str, stand_in: StandIn<'_>) -> Result<Erased> {
        self.conn.erase_document(doc_id, stand_in)
    }

    fn mark_log(&mut self, now: &str, cutoff: &str) -> Result<u64> {
        self.conn.mark_log(now, cutoff)
    }

    fn compact_log(&mut self, upto: u64) -> Result<Compacted> {
        self.conn.compact_log(upto)
    }

    fn repack_snapshots(&mut self, after_id: &str, limit: u32) -> Result<Repacked> {
        self.conn.repack_snapshots(after_id, limit)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

/// A pooled connection, held for one projector session, with
/// `synchronous=NORMAL`: its commits (projection rows with the projector's
/// cursor, snapshots settled from changes the log still holds) do not wait
/// for fsync. A power cut may roll the last of them back, never tear one
/// (WAL), and what they wrote is derived again from the log. An
/// acknowledged push stays durable: the writer's commit syncs the WAL, and
/// with it every frame before its own. A projector commit at national
/// scale writes thousands of pages; waiting for them to reach the disk
/// made the projector 6–9 % slower (BENCHMARKS.md).
struct SqliteProjections<'p> {
    conn: Pooled<'p>,
}

/// The WAL size (pages, 1 GiB) at which a projector session's commit
/// copies the WAL back itself in a process with no upkeep (`keqing-server
/// project`, or `report` catching up first), against
/// [`schema::BACKSTOP_CHECKPOINT_PAGES`] (64 MiB) for every other
/// connection. At national scale a projected dossier's rows and index
/// entries land on ~10 pages scattered over a file of many GB; one
/// copy-back writes each page once however many commits touched it, in
/// file order, with one fsync (BENCHMARKS.md: "SQLite's projector lets
/// the WAL grow"). A running server copies the WAL back twice a second
/// from its start ([`Store::upkeep`]) and keeps the backstop on its
/// projector's commits: with a longer one, the WAL a large batch left
/// would be copied back inside the next push's commit instead.
const PROJECTOR_CHECKPOINT_PAGES: i64 = 262_144;

impl Drop for SqliteProjections<'_> {
    /// The connection goes back to the pool as every other: fsync on
    /// commit (or, if that cannot be set, not back at all).
    fn drop(&mut self) {
        let conn = &self.conn.conn;
        if conn.pragma_update(None, "synchronous", "FULL").is_err()
            || conn
                .pragma_update(
                    None,
                    "wal_autocheckpoint",
                    schema::BACKSTOP_CHECKPOINT_PAGES,
                )
                .is_err()
        {
            self.conn.discard();
        }
    }
}

impl Projections for SqliteProjections<'_> {
    fn max_seq(&self) -> Result<u64> {
        self.conn.max_seq()
    }
    fn projector_cursor(&self) -> Result<u64> {
        self.conn.projector_cursor()
    }
    fn documents_changed_after(&self, after: u64, limit: u32) -> Result<(Vec<String>, u64)> {
        self.conn.documents_changed_after(after, limit)
    }
    fn documents_to_project(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, (StoredDocument, Vec<LoggedChange>)>> {
        self.conn.documents_to_project(ids)
    }
    fn settle_snapshots(&mut self, settled: &[SettledSnapshot]) -> Result<usize> {
        self.conn.settle_snapshots(settled)
    }
    fn save_projections(
        &mut self,
        docs: &[Projected],
        unreadable: &[(String, String)],
        from: u64,
        upto: u64,
    ) -> Result<bool> {
        self.conn.save_projections(docs, unreadable, from, upto)
    }
    fn reset_projections(&mut self) -> Result<()> {
        self.conn.reset_projections()
    }
    fn report_rows(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<keqing_shared::report::ReportRows> {
        self.conn.report_rows(office, from, to)
    }
    fn unreadable_documents(&self, office: Option<&str>) -> Result<Vec<UnreadableDocument>> {
        self.conn.unreadable_documents(office)
    }
    fn last_call_day(&self, office: Option<&str>) -> Result<Option<chrono::NaiveDate>> {
        self.conn.last_call_day(office)
    }
    fn merged_into(&self, doc_id: &str) -> Result<Vec<String>> {
        Ok(self
            .conn
            .conn
            .prepare_cached(
                "SELECT dossier_id FROM patients WHERE merged_into = ?1 ORDER BY dossier_id",
            )?
            .query_map([doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }
    fn duplicate_candidates(&self) -> Result<Vec<keqing_projection::patients::DuplicateCandidate>> {
        self.conn.duplicate_candidates()
    }
    fn projection_dump(&self) -> Result<String> {
        self.conn.projection_dump()
    }
    fn snapshot(&self, doc_id: &str) -> Result<Vec<u8>> {
        self.conn.snapshot_of(doc_id)
    }
    fn spend(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<keqing_shared::report::SpendFact>> {
        self.conn.spend(office, from, to)
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn reader(&self) -> Result<Box<dyn LogReader + '_>> {
        Ok(Box::new(self.readers.view()?))
    }

    fn push_view(&self) -> Result<Box<dyn LogReader + '_>> {
        Ok(Box::new(self.checkers.view()?))
    }

    fn log_writer(&self) -> Result<Box<dyn LogWriter + '_>> {
        let conn = keqing_host::lock(&self.writer);
        conn.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteWriter { conn, open: true }))
    }

    fn projections(&self) -> Result<Box<dyn Projections + '_>> {
        Ok(Box::new(self.projector_session()?))
    }

    fn add_device(
        &self,
        id: &str,
        name: &str,
        office: Option<&str>,
        token_sha256: &[u8],
        now: &str,
        admin: &str,
    ) -> Result<Device> {
        self.admin()?
            .add_device(id, name, office, token_sha256, now, admin)
    }

    fn device(&self, id: &str) -> Result<Option<Device>> {
        self.admin()?.device(id)
    }

    fn device_key(&self, id: &str) -> Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .admin()?
            .conn
            .query_row(
                "SELECT token_sha256 FROM devices WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn devices(&self) -> Result<Vec<Device>> {
        self.admin()?.devices()
    }

    fn bind_certificate(
        &self,
        id_or_name: &str,
        cert_sha256: &[u8; 32],
        admin: &str,
    ) -> Result<Device> {
        let device = self.device_named(id_or_name)?;
        self.admin()?.bind_certificate(&device, cert_sha256, admin)
    }

    fn revoke(&self, id_or_name: &str, now: &str, admin: &str) -> Result<Device> {
        let device = self.device_named(id_or_name)?;
        self.admin()?.revoke(&device, now, admin)
    }

    fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        self.admin()?.audit(actor, action, subject, detail)
    }

    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        self.admin()?.audit_log(limit)
    }

    fn counts(&self) -> Result<StoreCounts> {
        self.admin()?.counts()
    }

    fn add_user(&self, user: &HqUser, admin: &str) -> Result<()> {
        self.admin()?.add_user(user, admin)
    }

    fn change_user(&self, name: &str, change: &UserChange, admin: &str) -> Result<HqUser> {
        self.admin()?.change_user(name, change, admin)
    }

    fn user(&self, name: &str) -> Result<Option<HqUser>> {
        self.admin()?.user(name)
    }

    fn users(&self) -> Result<Vec<HqUser>> {
        self.admin()?.users()
    }

    fn store_reads(&self, reads: &[OfficeRead]) -> Result<()> {
        self.admin()?.store_reads(reads)
    }

    fn import_spend(&self, rows: &[keqing_shared::report::SpendFact], admin: &str) -> Result<u64> {
        self.admin()?.import_spend(rows, admin)
    }

    fn office_reads(
        &self,
        office: Option<&str>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredRead>> {
        self.admin()?.office_reads(office, after, limit)
    }

    fn integrity_check(&self) -> Result<String> {
        schema::integrity_of(&self.admin()?.conn)
    }

    fn notices(
        &self,
        office: Option<&str>,
        after: u64,
        ask: &[String],
        limit: u32,
    ) -> Result<keqing_shared::lifecycle::NoticeAnswer> {
        let conn = self.admin()?;
        conn.conn.execute_batch("BEGIN")?;
        let answer = conn.notices(office, after, ask, limit);
        conn.conn.execute_batch("COMMIT")?;
        answer
    }

    fn tombstones(&self) -> Result<Vec<Fate>> {
        self.admin()?.tombstones()
    }

    fn record_health(&self, seen: &[DeviceHealth]) -> Result<()> {
        self.admin()?.record_health(seen)
    }

    fn device_health(&self) -> Result<Vec<DeviceHealth>> {
        self.admin()?.device_health()
    }

    fn size_bytes(&self) -> Result<u64> {
        self.admin()?.size_bytes(&self.path)
    }

    fn request_erasure(&self, request: &ErasureRequest) -> Result<()> {
        self.admin()?.request_erasure(request)
    }

    fn erasure_request(&self, doc_id: &str) -> Result<Option<ErasureRequest>> {
        self.admin()?.erasure_request(doc_id)
    }

    fn erasure_requests(&self) -> Result<Vec<ErasureRequest>> {
        self.admin()?.erasure_requests()
    }

    /// On the writer's connection: no push appends while the file is
    /// rebuilt.
    fn scrub(&self) -> Result<()> {
        keqing_host::lock(&self.writer).scrub()
    }

    /// Copies what it can of the WAL back into the database file, without
    /// waiting for or blocking the writer or any reader (PASSIVE).
    fn upkeep(&self) -> Result<()> {
        self.upkept
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.admin()?
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    fn backup_to(&self, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        self.admin()?.backup_to(out, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(conn: &Conn) -> i64 {
        conn.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous")
    }

    fn checkpoint_pages(conn: &Conn) -> i64 {
        conn.conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .expect("wal_autocheckpoint")
    }

    /// A projector session commits without fsync and lets the WAL grow
    /// long, and its connection goes back to the pool syncing every
    /// commit again: the next borrower may write an audit row or a
    /// device, which must survive a power cut, and must not leave the
    /// next push a long WAL to copy back.
    #[test]
    fn a_projector_session_alone_skips_fsync_and_lets_the_wal_grow() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("store")).expect("store");
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        assert_eq!(synchronous(&store.admin().expect("admin")), FULL);
        let session = store.projector_session().expect("session");
        assert_eq!(synchronous(&session.conn), NORMAL);
        assert_eq!(checkpoint_pages(&session.conn), PROJECTOR_CHECKPOINT_PAGES);
        drop(session);
        let pooled = store.admin().expect("admin");
        assert_eq!(
            store.readers.idle.lock().expect("pool").len(),
            0,
            "the session's connection is the one lent out again"
        );
        assert_eq!(synchronous(&pooled), FULL);
        assert_eq!(checkpoint_pages(&pooled), schema::BACKSTOP_CHECKPOINT_PAGES);
        drop(pooled);
        // Once this process copies the WAL back itself (a running server),
        // a projector's large batch must not leave a long WAL for the next
        // push's commit to copy back.
        store.upkeep().expect("upkeep");
        let session = store.projector_session().expect("session");
        assert_eq!(
            checkpoint_pages(&session.conn),
            schema::BACKSTOP_CHECKPOINT_PAGES
        );
    }

    /// `compact --vacuum` (and an erasure's scrub) beside a running
    /// server: the server's upkeep may be copying the WAL back at that
    /// moment, and SQLite answers a second checkpoint busy at once instead
    /// of waiting. The scrub tries again and ends once the other is done.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_scrub_waits_out_another_processs_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("store")).expect("store");
        let shm = store.path().with_extension("sqlite-shm");
        let held = keqing_host::wal::testing::hold_checkpoint_lock(&shm).expect("lock");
        let truncate = |conn: &Conn| -> i64 {
            conn.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .expect("checkpoint")
        };
        assert_eq!(
            truncate(&store.admin().expect("admin")),
            1,
            "the lock stands for a checkpoint in progress"
        );
        let released = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            drop(held);
        });
        store
            .scrub()
            .expect("the scrub waits the other checkpoint out");
        released.join().expect("released");
        assert_eq!(truncate(&store.admin().expect("admin")), 0);
    }

    /// The store's scrub (`compact --vacuum`) builds VACUUM's new copy of
    /// the file in a temporary file, not in memory: what SQLite holds
    /// while it runs stays far under the store's size (the bundled SQLite
    /// keeps temporary databases in memory unless told otherwise; at 1M
    /// dossiers that was the whole 6.9 GB copy). SQLite's allocations are
    /// counted process-wide, other tests' too: the store is made large
    /// enough (48 MB) that their noise stays far under the margin.
    #[test]
    fn a_scrub_builds_the_new_copy_of_the_file_on_disk_not_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("store")).expect("store");
        // The writer's page cache made small, so that what it holds of
        // the store's own pages does not count for much either way.
        store.with_writer_conn_for_tests(|conn| {
            conn.execute_batch(
                "PRAGMA cache_size = -1024;
                 CREATE TABLE ballast (b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000)
                 INSERT INTO ballast SELECT randomblob(4000) FROM n;",
            )
            .expect("ballast");
        });
        // The ballast's bytes, which VACUUM copies whole.
        let ballast = 12_000 * 4_000;
        // SAFETY: both read (and the first resets) SQLite's own memory
        // counters, which it keeps under its own mutex.
        let (used, _) = unsafe {
            (
                rusqlite::ffi::sqlite3_memory_used(),
                rusqlite::ffi::sqlite3_memory_highwater(1),
            )
        };
        store.scrub().expect("scrub");
        // SAFETY: as above.
        let peak = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) } - used;
        assert!(
            peak < ballast / 2,
            "SQLite held {peak} bytes more while vacuuming {ballast} bytes of rows"
        );
        store.with_writer_conn_for_tests(|conn| {
            let rows: i64 = conn
                .query_row("SELECT count(*) FROM ballast", [], |r| r.get(0))
                .expect("count");
            assert_eq!(rows, 12_000);
            let store_in: i64 = conn
                .query_row("PRAGMA temp_store", [], |r| r.get(0))
                .expect("temp_store");
            assert_eq!(
                store_in, 0,
                "the connection's temporary store back to its default"
            );
        });
    }

    /// The store's own scrub (`compact --vacuum`) leaves room in the
    /// leaves of the tables a day inserts into, on the real schema: the
    /// follow-ups' rows and day tallies as they were, and every trigger
    /// of the tables rewritten back as it was.
    #[test]
    fn a_scrub_leaves_room_in_the_follow_ups_leaves() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("store")).expect("store");
        let schema = "SELECT type, name, sql FROM sqlite_master ORDER BY type, name";
        let rows = "SELECT * FROM followups ORDER BY dossier_id, id";
        let tallies = "SELECT * FROM followup_tallies ORDER BY day, office, staff";
        use super::leaves::tests::{dump, leaf_fill};
        let before = store.with_writer_conn_for_tests(|conn| {
            let tx = conn.unchecked_transaction().expect("tx");
            for n in 0u64..20_000 {
                let scrambled = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                tx.execute(
                    "INSERT INTO followups (id, dossier_id, at, staff, kind, on_time, office)
                     VALUES (?1, ?2, ?3, '赵敏', '回访', ?4, '11')",
                    rusqlite::params![
                        format!("{scrambled:016x}"),
                        format!("{:012}", scrambled % 4_000),
                        format!("2026-11-{:02}T09:00:00", 1 + n % 28),
                        (n % 2) as i64
                    ],
                )
                .expect("follow-up");
            }
            tx.commit().expect("commit");
            (dump(conn, schema), dump(conn, rows), dump(conn, tallies))
        });
        store.scrub().expect("scrub");
        store.with_writer_conn_for_tests(|conn| {
            let roomy = leaf_fill(conn, "followups");
            assert!(roomy < 0.93, "follow-ups' leaves left room: {roomy}");
            assert_eq!(dump(conn, schema), before.0, "tables, indexes, triggers");
            assert_eq!(dump(conn, rows), before.1);
            assert_eq!(dump(conn, tallies), before.2);
        });
    }
}
