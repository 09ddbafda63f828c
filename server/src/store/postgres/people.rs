//! Headquarters' accounts, the offices' read audit and media spend in
//! PostgreSQL.

use super::log::insert_audit;
use crate::store::{HqUser, OfficeRead, Result, StoreError, StoredRead, UserChange};
use deadpool_postgres::GenericClient;
use keqing_shared::staff::HqRole;

/// The advisory lock a transaction appending reads holds until it ends:
/// positions are then taken in commit order (an identity column alone
/// would let a reader following positions skip a read that commits late).
const READS_LOCK: i64 = 0x6b65_7169_6e67_2d72;

const USER_COLUMNS: &str = "name, role, password_hash, created_at, disabled_at";

fn user_of(r: &tokio_postgres::Row) -> Result<HqUser> {
    let role: String = r.get(1);
    Ok(HqUser {
        name: r.get(0),
        role: HqRole::parse(&role).map_err(|e| StoreError::Postgres(e.to_string()))?,
        password_hash: r.get(2),
        created_at: r.get(3),
        disabled_at: r.get(4),
    })
}

pub(super) async fn add_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &HqUser,
    admin: &str,
) -> Result<()> {
    let added = tx
        .execute(
            "INSERT INTO hq_users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
            &[
                &user.name,
                &user.role.as_str(),
                &user.password_hash,
                &user.created_at,
            ],
        )
        .await?;
    if added == 0 {
        return Err(StoreError::Invalid(format!(
            "用户已存在 a user named {} exists (`user password` changes a password)",
            user.name
        )));
    }
    insert_audit(tx, admin, "user.add", &user.name, user.role.as_str()).await
}

pub(super) async fn change_user(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    change: &UserChange,
    admin: &str,
) -> Result<()> {
    let changed = match change {
        UserChange::Password(hash) => {
            tx.execute(
                "UPDATE hq_users SET password_hash = $2 WHERE name = $1",
                &[&name, hash],
            )
            .await?
        }
        UserChange::Role(role) => {
            tx.execute(
                "UPDATE hq_users SET role = $2 WHERE name = $1",
                &[&name, &role.as_str()],
            )
            .await?
        }
        UserChange::Disabled(closed) => {
            tx.execute(
                "UPDATE hq_users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, $3) END
                 WHERE name = $1",
                &[&name, closed, &keqing_host::now_cst_text()],
            )
            .await?
        }
    };
    if changed == 0 {
        return Err(StoreError::Invalid(format!(
            "没有此用户 no user named {name}"
        )));
    }
    let (action, detail) = change.audited();
    insert_audit(tx, admin, action, name, &detail).await
}

pub(super) async fn user(c: &impl GenericClient, name: &str) -> Result<Option<HqUser>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM hq_users WHERE name = $1"
        ))
        .await?;
    c.query_opt(&stmt, &[&name])
        .await?
        .as_ref()
        .map(user_of)
        .transpose()
}

pub(super) async fn users(c: &impl GenericClient) -> Result<Vec<HqUser>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM hq_users ORDER BY name"
        ))
        .await?;
    c.query(&stmt, &[]).await?.iter().map(user_of).collect()
}

pub(super) async fn store_reads(
    tx: &deadpool_postgres::Transaction<'_>,
    reads: &[OfficeRead],
) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&READS_LOCK])
        .await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO office_reads
             (office, device_id, device_name, device_seq, at, who, action, target)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (device_id, device_seq) DO NOTHING",
        )
        .await?;
    for r in reads {
        tx.execute(
            &insert,
            &[
                &r.office,
                &r.device_id,
                &r.device_name,
                &(r.device_seq.min(i64::MAX as u64) as i64),
                &r.at,
                &r.who,
                &r.action,
                &r.target,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn office_reads(
    c: &impl GenericClient,
    office: Option<&str>,
    after: u64,
    limit: u32,
) -> Result<Vec<StoredRead>> {
    let stmt = c
        .prepare_cached(
            "SELECT seq, office, device_id, device_name, device_seq, at, who, action, target
             FROM office_reads WHERE seq > $1 AND ($2::text IS NULL OR office = $2)
             ORDER BY seq LIMIT $3",
        )
        .await?;
    let rows = c
        .query(
            &stmt,
            &[
                &(after.min(i64::MAX as u64) as i64),
                &office,
                &i64::from(limit),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredRead {
            seq: r.get::<_, i64>(0) as u64,
            read: OfficeRead {
                office: r.get(1),
                device_id: r.get(2),
                device_name: r.get(3),
                device_seq: r.get::<_, i64>(4) as u64,
                at: r.get(5),
                who: r.get(6),
                action: r.get(7),
                target: r.get(8),
            },
        })
        .collect())
}

pub(super) async fn import_spend(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[keqing_shared::report::SpendFact],
    admin: &str,
) -> Result<u64> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO spend (day, office, source_code, amount_fen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (day, office, source_code) DO UPDATE SET amount_fen = excluded.amount_fen
             RETURNING (xmax = 0)",
        )
        .await?;
    let mut new = 0u64;
    for r in rows {
        let day = keqing_shared::when::fmt_date(r.day);
        let inserted: bool = tx
            .query_one(&upsert, &[&day, &r.office, &r.source_code, &r.amount_fen])
            .await?
            .get(0);
        new += u64::from(inserted);
    }
    let total: i64 = rows.iter().map(|r| r.amount_fen).sum();
    insert_audit(
        tx,
        admin,
        "spend.import",
        &format!("{} rows ({new} new)", rows.len()),
        &format!("{} yuan", keqing_shared::records::fmt_yuan(total)),
    )
    .await?;
    Ok(new)
}

pub(super) async fn spend(
    c: &impl GenericClient,
    office: Option<&str>,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<keqing_shared::report::SpendFact>> {
    let stmt = c
        .prepare_cached(
            "SELECT day, office, source_code, amount_fen FROM spend
             WHERE day >= $1 AND day <= $2 AND ($3::text IS NULL OR office = $3)",
        )
        .await?;
    let (from, to) = (
        keqing_shared::when::fmt_date(from),
        keqing_shared::when::fmt_date(to),
    );
    c.query(&stmt, &[&from, &to, &office])
        .await?
        .iter()
        .map(|r| {
            let day: String = r.get(0);
            Ok(keqing_shared::report::SpendFact {
                day: keqing_shared::when::parse_date(&day)
                    .map_err(|e| StoreError::Postgres(format!("spend day {day}: {e}")))?,
                office: r.get(1),
                source_code: r.get(2),
                amount_fen: r.get(3),
            })
        })
        .collect()
}
