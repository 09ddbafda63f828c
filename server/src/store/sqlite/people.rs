//! Headquarters' accounts, the offices' read audit and media spend in the
//! SQLite store.

use super::conn::{Conn, insert_audit};
use crate::store::{HqUser, OfficeRead, Result, StoreError, StoredRead, UserChange};
use keqing_shared::staff::HqRole;
use rusqlite::{OptionalExtension, params};

const USER_COLUMNS: &str = "name, role, password_hash, created_at, disabled_at";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HqUser> {
    let role: String = r.get(1)?;
    Ok(HqUser {
        name: r.get(0)?,
        // Written by `add_user` from an `HqRole`; anything else was put
        // there by hand and opens nothing.
        role: HqRole::parse(&role).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        password_hash: r.get(2)?,
        created_at: r.get(3)?,
        disabled_at: r.get(4)?,
    })
}

fn read_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRead> {
    Ok(StoredRead {
        seq: r.get::<_, i64>(0)? as u64,
        read: OfficeRead {
            office: r.get(1)?,
            device_id: r.get(2)?,
            device_name: r.get(3)?,
            device_seq: r.get::<_, i64>(4)? as u64,
            at: r.get(5)?,
            who: r.get(6)?,
            action: r.get(7)?,
            target: r.get(8)?,
        },
    })
}

impl Conn {
    pub fn add_user(&mut self, user: &HqUser, admin: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        let added = tx.execute(
            "INSERT INTO hq_users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![
                user.name,
                user.role.as_str(),
                user.password_hash,
                user.created_at
            ],
        )?;
        if added == 0 {
            return Err(StoreError::Invalid(format!(
                "用户已存在 a user named {} exists (`user password` changes a password)",
                user.name
            )));
        }
        insert_audit(&tx, admin, "user.add", &user.name, user.role.as_str())?;
        tx.commit()?;
        Ok(())
    }

    pub fn change_user(&mut self, name: &str, change: &UserChange, admin: &str) -> Result<HqUser> {
        let tx = self.conn.transaction()?;
        let changed = match change {
            UserChange::Password(hash) => tx.execute(
                "UPDATE hq_users SET password_hash = ?2 WHERE name = ?1",
                params![name, hash],
            )?,
            UserChange::Role(role) => tx.execute(
                "UPDATE hq_users SET role = ?2 WHERE name = ?1",
                params![name, role.as_str()],
            )?,
            UserChange::Disabled(closed) => tx.execute(
                "UPDATE hq_users SET disabled_at = CASE WHEN ?2 THEN coalesce(disabled_at, ?3) END
                 WHERE name = ?1",
                params![name, closed, keqing_host::now_cst_text()],
            )?,
        };
        if changed == 0 {
            return Err(StoreError::Invalid(format!(
                "没有此用户 no user named {name}"
            )));
        }
        let (action, detail) = change.audited();
        insert_audit(&tx, admin, action, name, &detail)?;
        tx.commit()?;
        self.user(name)?
            .ok_or_else(|| StoreError::Invalid(format!("没有此用户 no user named {name}")))
    }

    pub fn user(&self, name: &str) -> Result<Option<HqUser>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM hq_users WHERE name = ?1"
            ))?
            .query_row([name], user_from_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<HqUser>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM hq_users ORDER BY name"
        ))?;
        let v = stmt
            .query_map([], user_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// One transaction: SQLite has one writer at a time, so positions are
    /// given in commit order.
    pub fn store_reads(&mut self, reads: &[OfficeRead]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO office_reads
                 (office, device_id, device_name, device_seq, at, who, action, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (device_id, device_seq) DO NOTHING",
            )?;
            for r in reads {
                insert.execute(params![
                    r.office,
                    r.device_id,
                    r.device_name,
                    r.device_seq as i64,
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

    pub fn office_reads(
        &self,
        office: Option<&str>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredRead>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, office, device_id, device_name, device_seq, at, who, action, target
             FROM office_reads WHERE seq > ?1 AND (?2 IS NULL OR office = ?2)
             ORDER BY seq LIMIT ?3",
        )?;
        let v = stmt
            .query_map(
                params![after.min(i64::MAX as u64) as i64, office, limit],
                read_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    pub fn import_spend(
        &mut self,
        rows: &[keqing_shared::report::SpendFact],
        admin: &str,
    ) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut new = 0u64;
        {
            let mut exists = tx.prepare_cached(
                "SELECT 1 FROM spend WHERE day = ?1 AND office = ?2 AND source_code = ?3",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO spend (day, office, source_code, amount_fen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, office, source_code) DO UPDATE SET amount_fen = excluded.amount_fen",
            )?;
            for r in rows {
                let day = keqing_shared::when::fmt_date(r.day);
                new += u64::from(!exists.exists(params![day, r.office, r.source_code])?);
                upsert.execute(params![day, r.office, r.source_code, r.amount_fen])?;
            }
        }
        let total: i64 = rows.iter().map(|r| r.amount_fen).sum();
        insert_audit(
            &tx,
            admin,
            "spend.import",
            &format!("{} rows ({new} new)", rows.len()),
            &format!("{} yuan", keqing_shared::records::fmt_yuan(total)),
        )?;
        tx.commit()?;
        Ok(new)
    }

    pub fn spend(
        &self,
        office: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<keqing_shared::report::SpendFact>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT day, office, source_code, amount_fen FROM spend
             WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR office = ?3)",
        )?;
        let rows = stmt.query_map(
            params![
                keqing_shared::when::fmt_date(from),
                keqing_shared::when::fmt_date(to),
                office
            ],
            |r| {
                let day: String = r.get(0)?;
                Ok((day, r.get(1)?, r.get(2)?, r.get(3)?))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (day, office, source_code, amount_fen): (String, String, String, i64) = row?;
            out.push(keqing_shared::report::SpendFact {
                day: keqing_shared::when::parse_date(&day)
                    .map_err(|e| StoreError::Invalid(format!("spend day {day}: {e}")))?,
                office,
                source_code,
                amount_fen,
            });
        }
        Ok(out)
    }
}
