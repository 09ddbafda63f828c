//! The PostgreSQL backend (`--store postgres://…`): headquarters' own
//! database, which several keqing-server processes share.
//!
//! The store's methods are blocking, like SQLite's: callers run them on
//! blocking threads (`spawn_blocking`, or a command's main thread). The
//! store drives its connections (tokio-postgres, pooled by
//! deadpool-postgres) on a small runtime of its own, and each method waits
//! for its answer there, so it does not matter which runtime, if any, the
//! caller has.
//!
//! The single-appender rule holds across processes: a turn at the log is
//! a transaction holding the log's advisory lock
//! (`pg_advisory_xact_lock`), in which sequence numbers are taken as the
//! log's maximum + 1; a reader's view is one `REPEATABLE READ`
//! transaction. The lock is released only after the commit is visible, so
//! a reader that sees number N sees every number below it.

mod fates;
mod health;
mod log;
mod people;
mod projections;
mod schema;

pub use schema::PROJECTION_VERSION;

use crate::store::{
    AuditEntry, Budget, Compacted, Device, DeviceHealth, DocumentState, Erased, ErasureRequest,
    Fate, HqUser, LogReader, LogWriter, NewFate, NewLogEntry, OfficeRead, Projected, Projections,
    PushFooting, Repacked, Result, SettledSnapshot, StandIn, Store, StoreCounts, StoreError,
    StoredDocument, StoredRead, UnreadableDocument, UserChange,
};
use deadpool_postgres::Object;
use keqing_shared::sync::{LoggedChange, Snapshot};
use std::future::Future;

/// Connections a process keeps to the database at most.
const POOL_SIZE: usize = 24;

/// How long a caller waits for a free connection before it is told the
/// database is busy.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The advisory lock key of the log ("keqing-l"): held by the one
/// transaction appending to it.
const LOG_LOCK: i64 = 0x6b65_7169_6e67_2d6c;

/// How a role made by `reporting-role` is marked (only such a role may be
/// changed by it).
const REPORTING_ROLE_COMMENT: &str = "keqing read-only reporting role";

/// The advisory lock key of the projector's lead ("keqing-p"): held for
/// as long as its connection lives by the one process that runs the
/// background projector.
const PROJECTOR_LOCK: i64 = 0x6b65_7169_6e67_2d70;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Postgres(format!("connection pool: {other}")),
        }
    }
}

/// Whether `store` names a PostgreSQL database (`postgres://` or
/// `postgresql://`).
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// The store in a PostgreSQL database.
pub struct PgStore {
    /// Drives the connections; shut down without waiting when the store
    /// goes (it may be dropped on an async task).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    /// The connection on which this process asks for (and, once it has
    /// it, holds) the projector's lead; outside the pool, since the lock
    /// belongs to the connection's session.
    lead: std::sync::Mutex<Option<Lead>>,
    /// The database's address without its password, for messages.
    shown: String,
}

/// The projector lead's connection, and whether it holds the lock.
struct Lead {
    client: tokio_postgres::Client,
    held: bool,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Opens the store in the database at `url`, making it (and migrating
    /// it) as needed.
    pub fn open(url: &str) -> Result<PgStore> {
        let store = PgStore::connect(url)?;
        store.block(async {
            let mut client = store.pool.get().await?;
            schema::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Opens the store in the database at `url`, refusing to make one (a
    /// mistyped URL must be an error, not an empty store); migrates it.
    pub fn open_existing(url: &str) -> Result<PgStore> {
        let store = PgStore::connect(url)?;
        let exists = store.block(async {
            let client = store.pool.get().await?;
            schema::has_store(&client).await
        })?;
        if !exists {
            return Err(StoreError::NoStore(store.shown.clone()));
        }
        PgStore::open(url)
    }

    fn connect(url: &str) -> Result<PgStore> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Postgres(format!("bad database URL: {e}")))?;
        let shown = shown_config(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keqing-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io("runtime".into(), e))?;
        let handle = runtime.handle().clone();
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))?;
        Ok(PgStore {
            runtime: Some(runtime),
            handle,
            pool,
            config,
            lead: std::sync::Mutex::new(None),
            shown,
        })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// A pooled connection.
    fn client(&self) -> Result<Object> {
        Ok(self.block(self.pool.get())?)
    }

    /// Where the store is, without the password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A database URL as messages show it: `postgres://user@host:port/dbname`,
/// never the password.
pub fn shown_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => shown_config(&config),
        Err(_) => "postgres://…".to_string(),
    }
}

fn shown_config(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// A pooled connection held by a session; given back when the session
/// ends cleanly, closed otherwise (never handed on inside a transaction).
struct Held<'s> {
    client: Option<Object>,
    store: &'s PgStore,
}

impl Held<'_> {
    fn c(&self) -> &Object {
        self.client.as_ref().expect("present until dropped")
    }

    fn c_mut(&mut self) -> &mut Object {
        self.client.as_mut().expect("present until dropped")
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.store.block(f)
    }

    /// Ends the session's transaction with `sql` (COMMIT or ROLLBACK); a
    /// connection that cannot is not given back to the pool.
    fn end(&mut self, sql: &str) -> Result<()> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        match self.block(client.batch_execute(sql)) {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(Object::take(client));
                Err(e.into())
            }
        }
    }
}

/// A `REPEATABLE READ` read-only transaction: one view of the store.
struct PgReader<'s> {
    held: Held<'s>,
}

impl Drop for PgReader<'_> {
    fn drop(&mut self) {
        let _ = self.held.end("COMMIT");
    }
}

/// A transaction holding the log's advisory lock.
struct PgWriter<'s> {
    held: Held<'s>,
}

impl Drop for PgWriter<'_> {
    fn drop(&mut self) {
        let _ = self.held.end("ROLLBACK");
    }
}

/// Forwards the reads of [`LogReader`] to `log`, on the session's
/// connection.
macro_rules! forward_log_reader {
    ($ty:ty) => {
        impl LogReader for $ty {
            fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>> {
                self.held.block(log::device_where(
                    self.held.c(),
                    "token_sha256",
                    token_sha256,
                ))
            }
            fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>> {
                self.held
                    .block(log::device_where(self.held.c(), "actor", actor))
            }
            fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>> {
                self.held.block(log::document(self.held.c(), doc_id))
            }
            fn documents_among(
                &self,
                ids: &[&str],
            ) -> Result<std::collections::HashMap<String, StoredDocument>> {
                self.held.block(log::documents_among(self.held.c(), ids))
            }
            fn push_footing(&self, ids: &[&str], hashes: &[[u8; 32]]) -> Result<PushFooting> {
                self.held
                    .block(log::push_footing(self.held.c(), ids, hashes))
            }
            fn max_seq(&self) -> Result<u64> {
                self.held.block(log::max_seq(self.held.c()))
            }
            fn epoch(&self) -> Result<String> {
                self.held.block(log::epoch(self.held.c()))
            }
            fn log_floor(&self) -> Result<u64> {
                self.held.block(log::log_floor(self.held.c()))
            }
            fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>> {
                self.held
                    .block(log::changes_of(self.held.c(), doc_id, upto))
            }
            fn changes_of_within(
                &self,
                doc_id: &str,
                after: u64,
                upto: u64,
                budget: &mut Budget,
            ) -> Result<(Vec<LoggedChange>, bool)> {
                self.held.block(log::changes_of_within(
                    self.held.c(),
                    doc_id,
                    after,
                    upto,
                    budget,
                ))
            }
            fn changes_after_within(
                &self,
                office: Option<&str>,
                after: u64,
                budget: &mut Budget,
            ) -> Result<(Vec<LoggedChange>, bool)> {
                self.held.block(log::changes_after_within(
                    self.held.c(),
                    office,
                    after,
                    budget,
                ))
            }
            fn document_page(
                &self,
                office: Option<&str>,
                after_id: &str,
                limit: u32,
            ) -> Result<Vec<(String, bool, usize)>> {
                self.held
                    .block(log::document_page(self.held.c(), office, after_id, limit))
            }
            fn snapshot_of(&self, doc_id: &str) -> Result<Vec<u8>> {
                self.held.block(log::snapshot_of(self.held.c(), doc_id))
            }
            fn snapshots_after(
                &self,
                office: Option<&str>,
                after_id: &str,
                limit: u32,
            ) -> Result<Vec<(Snapshot, bool)>> {
                self.held
                    .block(log::snapshots_after(self.held.c(), office, after_id, limit))
            }
            fn fates_among(
                &self,
                ids: &[&str],
            ) -> Result<std::collections::HashMap<String, Vec<Fate>>> {
                self.held.block(fates::fates_among(self.held.c(), ids))
            }
        }
    };
}

forward_log_reader!(PgReader<'_>);
forward_log_reader!(PgWriter<'_>);

impl LogWriter for PgWriter<'_> {
    fn append(
        &mut self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64> {
        self.held
            .block(log::append(self.held.c(), device_id, entries, docs))
    }

    fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()> {
        self.held.block(async {
            self.held
                .c()
                .execute(
                    "UPDATE devices SET actor = $2 WHERE id = $1 AND actor IS NULL",
                    &[&device_id, &actor],
                )
                .await?;
            Ok(())
        })
    }

    fn audit(&mut self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        self.held.block(log::insert_audit(
            self.held.c(),
            actor,
            action,
            subject,
            detail,
        ))
    }

    fn record_fate(&mut self, fate: &NewFate<'_>) -> Result<()> {
        self.held.block(fates::record_fate(self.held.c(), fate))
    }

    fn move_document(&mut self, doc_id: &str, office: &str) -> Result<()> {
        self.held
            .block(fates::move_document(self.held.c(), doc_id, office))
    }

    fn mark_log(&mut self, now: &str, cutoff: &str) -> Result<u64> {
        self.held.block(log::mark_log(self.held.c(), now, cutoff))
    }

    fn compact_log(&mut self, upto: u64) -> Result<Compacted> {
        self.held.block(log::compact_log(self.held.c(), upto))
    }

    fn repack_snapshots(&mut self, after_id: &str, limit: u32) -> Result<Repacked> {
        self.held
            .block(log::repack_snapshots(self.held.c(), after_id, limit))
    }

    fn erase_document(&mut self, doc_id: &str, stand_in: StandIn<'_>) -> Result<Erased> {
        self.held
            .block(fates::erase_document(self.held.c(), doc_id, stand_in))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.held.end("COMMIT")
    }
}

/// A projector session: a connection of its own (each batch's save is one
/// transaction on it).
struct PgProjections<'s> {
    held: Held<'s>,
}

impl Projections for PgProjections<'_> {
    fn max_seq(&self) -> Result<u64> {
        self.held.block(log::max_seq(self.held.c()))
    }
    fn projector_cursor(&self) -> Result<u64> {
        self.held.block(projections::cursor(self.held.c()))
    }
    fn documents_changed_after(&self, after: u64, limit: u32) -> Result<(Vec<String>, u64)> {
        self.held.block(projections::documents_changed_after(
            self.held.c(),
            after,
            limit,
        ))
    }
    fn documents_to_project(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, (StoredDocument, Vec<LoggedChange>)>> {
        self.held
            .block(log::documents_to_project(self.held.c(), ids))
    }
    fn settle_snapshots(&mut self, settled: &[SettledSnapshot]) -> Result<usize> {
        let store = self.held.store;
        store.block(projections::settle_snapshots(self.held.c_mut(), settled))
    }
    fn save_projections(
        &mut self,
        docs: &[Projected],
        unreadable: &[(String, String)],
        from: u64,
        upto: u64,
    ) -> Result<bool> {
        let store = self.held.store;
        store.block(projections::save(
            self.held.c_mut(),
            docs,
            unreadable,
            from,
            upto,
        ))
    }
    fn reset_projections(&mut self) -> Result<()> {
        let store = self.held.store;
        store.block(projections::reset(self.held.c_mut()))
    }
    fn report_rows(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<keqing_shared::report::ReportRows> {
        self.held
            .block(projections::report_rows(self.held.c(), office, from, to))
    }
    fn unreadable_documents(&self, office: Option<&str>) -> Result<Vec<UnreadableDocument>> {
        self.held
            .block(projections::unreadable_documents(self.held.c(), office))
    }
    fn last_call_day(&self, office: Option<&str>) -> Result<Option<chrono::NaiveDate>> {
        self.held
            .block(projections::last_call_day(self.held.c(), office))
    }
    fn merged_into(&self, doc_id: &str) -> Result<Vec<String>> {
        self.held.block(async {
            let rows = self
                .held
                .c()
                .query(
                    "SELECT dossier_id FROM patients WHERE merged_into = $1 ORDER BY dossier_id",
                    &[&doc_id],
                )
                .await?;
            rows.iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect::<Result<Vec<String>>>()
        })
    }

    fn duplicate_candidates(&self) -> Result<Vec<keqing_projection::patients::DuplicateCandidate>> {
        self.held
            .block(projections::duplicate_candidates(self.held.c()))
    }
    fn projection_dump(&self) -> Result<String> {
        self.held.block(projections::dump(self.held.c()))
    }
    fn snapshot(&self, doc_id: &str) -> Result<Vec<u8>> {
        self.held.block(log::snapshot_of(self.held.c(), doc_id))
    }
    fn spend(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<keqing_shared::report::SpendFact>> {
        self.held
            .block(people::spend(self.held.c(), office, from, to))
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn reader(&self) -> Result<Box<dyn LogReader + '_>> {
        let client = self.client()?;
        self.block(client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))?;
        Ok(Box::new(PgReader {
            held: Held {
                client: Some(client),
                store: self,
            },
        }))
    }

    fn log_writer(&self) -> Result<Box<dyn LogWriter + '_>> {
        let client = self.client()?;
        let held = Held {
            client: Some(client),
            store: self,
        };
        // Dropped on an error: rolled back.
        let writer = PgWriter { held };
        writer.held.block(async {
            writer.held.c().batch_execute("BEGIN").await?;
            writer
                .held
                .c()
                .execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
                .await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(Box::new(writer))
    }

    fn projections(&self) -> Result<Box<dyn Projections + '_>> {
        Ok(Box::new(PgProjections {
            held: Held {
                client: Some(self.client()?),
                store: self,
            },
        }))
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
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO devices (id, name, office, token_sha256, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &name, &office, &token_sha256, &now],
            )
            .await?;
            log::insert_audit(
                &tx,
                admin,
                "device.add",
                &format!("{name} ({id})"),
                &format!("office {}", office.unwrap_or("hq")),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.device(id)?
            .ok_or_else(|| StoreError::UnknownDevice(id.to_string()))
    }

    fn device(&self, id: &str) -> Result<Option<Device>> {
        let client = self.client()?;
        self.block(log::device_where(&client, "id", id))
    }

    fn device_key(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let client = self.client()?;
        self.block(async {
            Ok(client
                .query_opt("SELECT token_sha256 FROM devices WHERE id = $1", &[&id])
                .await?
                .map(|r| r.get(0)))
        })
    }

    fn devices(&self) -> Result<Vec<Device>> {
        let client = self.client()?;
        self.block(log::devices(&client))
    }

    fn bind_certificate(
        &self,
        id_or_name: &str,
        cert_sha256: &[u8; 32],
        admin: &str,
    ) -> Result<Device> {
        let device = self.device_named(id_or_name)?;
        let hex: String = cert_sha256.iter().map(|b| format!("{b:02x}")).collect();
        self.change_device(
            &device,
            "UPDATE devices SET cert_sha256 = $2 WHERE id = $1",
            &cert_sha256.as_slice(),
            admin,
            "device.cert",
            &format!("sha256 {hex}"),
        )
    }

    fn revoke(&self, id_or_name: &str, now: &str, admin: &str) -> Result<Device> {
        let device = self.device_named(id_or_name)?;
        self.change_device(
            &device,
            "UPDATE devices SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1",
            &now,
            admin,
            "device.revoke",
            "",
        )
    }

    fn audit(&self, actor: &str, action: &str, subject: &str, detail: &str) -> Result<()> {
        let client = self.client()?;
        self.block(log::insert_audit(&client, actor, action, subject, detail))
    }

    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let client = self.client()?;
        self.block(log::audit_log(&client, limit))
    }

    fn counts(&self) -> Result<StoreCounts> {
        let client = self.client()?;
        self.block(log::counts(&client))
    }

    fn add_user(&self, user: &HqUser, admin: &str) -> Result<()> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            people::add_user(&tx, user, admin).await?;
            Ok(tx.commit().await?)
        })
    }

    fn change_user(&self, name: &str, change: &UserChange, admin: &str) -> Result<HqUser> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            people::change_user(&tx, name, change, admin).await?;
            tx.commit().await?;
            people::user(&client, name)
                .await?
                .ok_or_else(|| StoreError::Invalid(format!("没有此用户 no user named {name}")))
        })
    }

    fn user(&self, name: &str) -> Result<Option<HqUser>> {
        let client = self.client()?;
        self.block(people::user(&client, name))
    }

    fn users(&self) -> Result<Vec<HqUser>> {
        let client = self.client()?;
        self.block(people::users(&client))
    }

    fn store_reads(&self, reads: &[OfficeRead]) -> Result<()> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            people::store_reads(&tx, reads).await?;
            Ok(tx.commit().await?)
        })
    }

    fn import_spend(&self, rows: &[keqing_shared::report::SpendFact], admin: &str) -> Result<u64> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            let new = people::import_spend(&tx, rows, admin).await?;
            tx.commit().await?;
            Ok(new)
        })
    }

    fn office_reads(
        &self,
        office: Option<&str>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredRead>> {
        let client = self.client()?;
        self.block(people::office_reads(&client, office, after, limit))
    }

    fn integrity_check(&self) -> Result<String> {
        let client = self.client()?;
        self.block(log::integrity_check(&client))
    }

    fn notices(
        &self,
        office: Option<&str>,
        after: u64,
        ask: &[String],
        limit: u32,
    ) -> Result<keqing_shared::lifecycle::NoticeAnswer> {
        let client = self.client()?;
        self.block(fates::notices(&client, office, after, ask, limit))
    }

    fn tombstones(&self) -> Result<Vec<Fate>> {
        let client = self.client()?;
        self.block(fates::tombstones(&client))
    }

    fn record_health(&self, seen: &[DeviceHealth]) -> Result<()> {
        let client = self.client()?;
        self.block(health::record_health(&client, seen))
    }

    fn device_health(&self) -> Result<Vec<DeviceHealth>> {
        let client = self.client()?;
        self.block(health::device_health(&client))
    }

    fn size_bytes(&self) -> Result<u64> {
        let client = self.client()?;
        self.block(health::size_bytes(&client))
    }

    fn request_erasure(&self, request: &ErasureRequest) -> Result<()> {
        let client = self.client()?;
        self.block(fates::request_erasure(&client, request))
    }

    fn erasure_request(&self, doc_id: &str) -> Result<Option<ErasureRequest>> {
        let client = self.client()?;
        Ok(self
            .block(fates::erasure_requests(&client, Some(doc_id)))?
            .pop())
    }

    fn erasure_requests(&self) -> Result<Vec<ErasureRequest>> {
        let client = self.client()?;
        self.block(fates::erasure_requests(&client, None))
    }

    fn scrub(&self) -> Result<()> {
        let client = self.client()?;
        self.block(fates::scrub(&client))
    }

    fn epoch(&self) -> Result<String> {
        let client = self.client()?;
        self.block(log::epoch(&client))
    }

    fn lead_projector(&self) -> Result<bool> {
        let mut lead = keqing_host::lock(&self.lead);
        let asked = self.block(async {
            if lead.as_ref().is_some_and(|l| l.client.is_closed()) {
                *lead = None;
            }
            if lead.is_none() {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                self.handle.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "the projector lead's connection ended");
                    }
                });
                *lead = Some(Lead {
                    client,
                    held: false,
                });
            }
            let Some(l) = lead.as_mut() else {
                return Ok(false);
            };
            if l.held {
                // The lock lasts as long as the session: it is still ours
                // if the connection still answers.
                l.client.simple_query("SELECT 1").await?;
                return Ok(true);
            }
            l.held = l
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&PROJECTOR_LOCK])
                .await?
                .get(0);
            Ok::<_, StoreError>(l.held)
        });
        if asked.is_err() {
            // Asked again on a new connection next time.
            *lead = None;
        }
        asked
    }

    fn grant_reporting_role(&self, name: &str, password: &str, admin: &str) -> Result<()> {
        let simple = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !simple {
            return Err(StoreError::Invalid(format!(
                "role name {}: lowercase letters, digits and _ (at most 63, a letter first)",
                keqing_shared::printable::printable(name)
            )));
        }
        if password.chars().count() < 12 || password.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "a reporting role's password has at least 12 characters and no control characters"
                    .into(),
            ));
        }
        let tables: Vec<&str> = keqing_projection::rows::dumped_tables()
            .map(|t| t.name)
            .collect();
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            // Only a role this command made may be changed by it: never
            // the store's owner or another account of the database.
            let existing: Option<Option<String>> = tx
                .query_opt(
                    "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                    &[&name],
                )
                .await?
                .map(|r| r.get(0));
            let verb = match existing {
                None => "CREATE",
                Some(Some(comment)) if comment == REPORTING_ROLE_COMMENT => "ALTER",
                Some(_) => {
                    return Err(StoreError::Invalid(format!(
                        "a database role {name} exists and was not made by `reporting-role`: choose another name"
                    )));
                }
            };
            let database: String = tx
                .query_one("SELECT current_database()", &[])
                .await?
                .get(0);
            let grants = format!("GRANT SELECT ON {} TO %I", tables.join(", "));
            let create = format!(
                "{verb} ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            );
            let statements: [(&str, Vec<&str>); 6] = [
                (&create, vec![name, password]),
                ("COMMENT ON ROLE %I IS %L", vec![name, REPORTING_ROLE_COMMENT]),
                ("ALTER ROLE %I SET default_transaction_read_only = on", vec![name]),
                ("GRANT CONNECT ON DATABASE %I TO %I", vec![&database, name]),
                ("GRANT USAGE ON SCHEMA public TO %I", vec![name]),
                (&grants, vec![name]),
            ];
            for (template, args) in statements {
                // Names and literals quoted by the server itself.
                let sql: String = tx
                    .query_one("SELECT format($1, VARIADIC $2::text[])", &[&template, &args])
                    .await?
                    .get(0);
                tx.batch_execute(&sql).await?;
            }
            log::insert_audit(
                &tx,
                admin,
                "reporting.role",
                name,
                &format!("SELECT on {}", tables.join(" ")),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn take_request(&self, device_id: &str, per_second: f64, burst: f64) -> Result<Option<bool>> {
        let client = self.client()?;
        let taken: bool = self
            .block(client.query_one(
                "SELECT keqing_take_request($1, $2, $3)",
                &[&device_id, &per_second, &burst],
            ))?
            .get(0);
        Ok(Some(taken))
    }
}

impl PgStore {
    /// One change to a device's row and its audit line, in one transaction.
    fn change_device(
        &self,
        device: &Device,
        update: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
        admin: &str,
        action: &str,
        detail: &str,
    ) -> Result<Device> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await?;
            tx.execute(update, &[&device.id, value]).await?;
            log::insert_audit(
                &tx,
                admin,
                action,
                &crate::store::audit_actor(device),
                detail,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.device(&device.id)?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }
}
