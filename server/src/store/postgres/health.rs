//! Fleet health in PostgreSQL (see the SQLite store's `health`).

use crate::store::{DeviceHealth, Result};
use deadpool_postgres::GenericClient;

pub(super) async fn record_health(c: &impl GenericClient, seen: &[DeviceHealth]) -> Result<()> {
    let upsert = c
        .prepare_cached(
            "INSERT INTO device_health
               (device_id, client_version, outbox, quarantined, last_push, last_pull, last_sync)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (device_id) DO UPDATE SET
               client_version = coalesce(EXCLUDED.client_version, device_health.client_version),
               outbox = coalesce(EXCLUDED.outbox, device_health.outbox),
               quarantined = coalesce(EXCLUDED.quarantined, device_health.quarantined),
               last_push = greatest(EXCLUDED.last_push, device_health.last_push),
               last_pull = greatest(EXCLUDED.last_pull, device_health.last_pull),
               last_sync = greatest(EXCLUDED.last_sync, device_health.last_sync)",
        )
        .await?;
    let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    for h in seen {
        c.execute(
            &upsert,
            &[
                &h.device_id,
                &h.client_version,
                &n(h.outbox),
                &n(h.quarantined),
                &h.last_push,
                &h.last_pull,
                &h.last_sync,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn device_health(c: &impl GenericClient) -> Result<Vec<DeviceHealth>> {
    let rows = c
        .query(
            "SELECT device_id, client_version, outbox, quarantined, last_push, last_pull, last_sync
             FROM device_health ORDER BY device_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceHealth {
                device_id: r.try_get(0)?,
                client_version: r.try_get(1)?,
                outbox: r.try_get::<_, Option<i64>>(2)?.map(|v| v.max(0) as u64),
                quarantined: r.try_get::<_, Option<i64>>(3)?.map(|v| v.max(0) as u64),
                last_push: r.try_get(4)?,
                last_pull: r.try_get(5)?,
                last_sync: r.try_get(6)?,
            })
        })
        .collect()
}

pub(super) async fn size_bytes(c: &impl GenericClient) -> Result<u64> {
    let size: i64 = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .try_get(0)?;
    Ok(size.max(0) as u64)
}
