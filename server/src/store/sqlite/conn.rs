//! One connection to the SQLite store, and what it reads and writes of
//! devices and the audit log.

use crate::store::{AuditEntry, Device, Result, StoreCounts, StoreError, audit_actor};
use rusqlite::{Connection, OptionalExtension, params};

/// One connection to the store's file (its writer, its projector, or a
/// pooled reader). The `impl` blocks that use it are split by concern:
/// this module (devices, audit), `log` (the change log and documents),
/// `projections` and `backup`.
pub struct Conn {
    pub(super) conn: Connection,
}

impl Conn {
    /// Opens a connection to the store's file, migrating it first.
    pub(super) fn open(path: &std::path::Path) -> Result<Conn> {
        Ok(Conn {
            conn: super::schema::open_connection(path)?,
        })
    }
}

/// After a panic while a connection was locked: any transaction left open
/// on it is rolled back (see [`keqing_host::lock`]).
impl keqing_host::Recover for Conn {
    fn recover(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

pub(super) fn insert_audit(
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

impl Conn {
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

    /// Binds the client certificate with this SHA-256 to a device: from now
    /// on its token works only together with that certificate (a new
    /// binding replaces the old one, which stops working).
    pub fn bind_certificate(
        &mut self,
        device: &Device,
        cert_sha256: &[u8; 32],
        admin: &str,
    ) -> Result<Device> {
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
            &audit_actor(device),
            &format!("sha256 {hex}"),
        )?;
        tx.commit()?;
        self.device(&device.id)?
            .ok_or_else(|| StoreError::UnknownDevice(device.id.clone()))
    }

    /// Revokes a device.
    pub fn revoke(&mut self, device: &Device, now: &str, admin: &str) -> Result<Device> {
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

    pub fn device_by_token_hash(&self, token_sha256: &[u8]) -> Result<Option<Device>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE token_sha256 = ?1"
            ))?
            .query_row([token_sha256], device_from_row)
            .optional()?)
    }

    pub fn bind_actor(&mut self, device_id: &str, actor: &[u8]) -> Result<()> {
        self.conn.execute(
            "UPDATE devices SET actor = ?2 WHERE id = ?1 AND actor IS NULL",
            params![device_id, actor],
        )?;
        Ok(())
    }

    pub fn device_with_actor(&self, actor: &[u8]) -> Result<Option<Device>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE actor = ?1"
            ))?
            .query_row([actor], device_from_row)
            .optional()?)
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let count = |table: &str| -> Result<u64> {
            Ok(self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })?
                .max(0) as u64)
        };
        Ok(StoreCounts {
            changes: count("changes")?,
            documents: count("documents")?,
        })
    }
}
