//! Fleet health on the SQLite store: what each device last said of itself
//! and when it last pushed, pulled and was up to date.

use super::conn::Conn;
use crate::store::{DeviceHealth, Result};
use rusqlite::params;

const UPSERT: &str = "INSERT INTO device_health
    (device_id, client_version, outbox, quarantined, last_push, last_pull, last_sync)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (device_id) DO UPDATE SET
      client_version = coalesce(excluded.client_version, client_version),
      outbox = coalesce(excluded.outbox, outbox),
      quarantined = coalesce(excluded.quarantined, quarantined),
      last_push = max(coalesce(excluded.last_push, ''), coalesce(last_push, '')),
      last_pull = max(coalesce(excluded.last_pull, ''), coalesce(last_pull, '')),
      last_sync = max(coalesce(excluded.last_sync, ''), coalesce(last_sync, ''))";

impl Conn {
    pub fn record_health(&mut self, seen: &[DeviceHealth]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(UPSERT)?;
            let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
            for h in seen {
                upsert.execute(params![
                    h.device_id,
                    h.client_version,
                    n(h.outbox),
                    n(h.quarantined),
                    h.last_push,
                    h.last_pull,
                    h.last_sync
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn device_health(&self) -> Result<Vec<DeviceHealth>> {
        let when = |v: Option<String>| v.filter(|t| !t.is_empty());
        Ok(self
            .conn
            .prepare(
                "SELECT device_id, client_version, outbox, quarantined, last_push, last_pull, last_sync
                 FROM device_health ORDER BY device_id",
            )?
            .query_map([], |r| {
                Ok(DeviceHealth {
                    device_id: r.get(0)?,
                    client_version: r.get(1)?,
                    outbox: r.get::<_, Option<i64>>(2)?.map(|v| v.max(0) as u64),
                    quarantined: r.get::<_, Option<i64>>(3)?.map(|v| v.max(0) as u64),
                    last_push: when(r.get(4)?),
                    last_pull: when(r.get(5)?),
                    last_sync: when(r.get(6)?),
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// The file's pages and the WAL beside it.
    pub fn size_bytes(&self, path: &std::path::Path) -> Result<u64> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let wal = std::fs::metadata(path.with_extension("sqlite-wal")).map_or(0, |m| m.len());
        Ok((pages.max(0) * size.max(0)) as u64 + wal)
    }
}
