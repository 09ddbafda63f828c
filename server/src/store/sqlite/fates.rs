//! Transfers and erasures on the SQLite store: the `fates` table the
//! devices' notices come from, erasure requests, taking a dossier out and
//! scrubbing the file of it.

use super::conn::Conn;
use crate::store::{Erased, ErasureRequest, FATE_ERASE, Fate, NewFate, Result, StandIn, fate_kind};
use keqing_shared::lifecycle::NoticeAnswer;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

const FATE_COLUMNS: &str = "seq, doc_id, kind, from_office, to_office, at, reason, by";

fn fate_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Fate> {
    Ok(Fate {
        seq: r.get::<_, i64>(0)? as u64,
        doc_id: r.get(1)?,
        kind: fate_kind(&r.get::<_, String>(2)?),
        from_office: r.get(3)?,
        to_office: r.get(4)?,
        at: r.get(5)?,
        reason: r.get(6)?,
        by: r.get(7)?,
    })
}

fn request_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ErasureRequest> {
    Ok(ErasureRequest {
        doc_id: r.get(0)?,
        reason: r.get(1)?,
        by: r.get(2)?,
        at: r.get(3)?,
    })
}

impl Conn {
    pub fn fates_among(&self, ids: &[&str]) -> Result<HashMap<String, Vec<Fate>>> {
        let mut found: HashMap<String, Vec<Fate>> = HashMap::new();
        // Nearly always empty: one look spares a lookup per document.
        let any: bool = self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM fates)", [], |r| r.get(0))?;
        if !any {
            return Ok(found);
        }
        // One row per event (the lowest of its recipients' rows).
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FATE_COLUMNS} FROM fates WHERE doc_id = ?1
             AND seq IN (SELECT min(seq) FROM fates WHERE doc_id = ?1 GROUP BY kind, at, to_office)
             ORDER BY seq"
        ))?;
        for id in ids {
            let fates: Vec<Fate> = stmt
                .query_map([id], fate_of)?
                .collect::<rusqlite::Result<_>>()?;
            if !fates.is_empty() {
                found.insert(id.to_string(), fates);
            }
        }
        Ok(found)
    }

    pub fn record_fate(&self, fate: &NewFate<'_>) -> Result<()> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO fates (doc_id, office, kind, from_office, to_office, at, reason, by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for office in &fate.offices {
            insert.execute(params![
                fate.doc_id,
                office,
                fate.kind,
                fate.from_office,
                fate.to_office,
                fate.at,
                fate.reason,
                fate.by
            ])?;
        }
        Ok(())
    }

    pub fn move_document(&self, doc_id: &str, office: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE documents SET office = ?2 WHERE id = ?1",
            params![doc_id, office],
        )?;
        Ok(())
    }

    /// Inside the writer's transaction (see `LogWriter::erase_document`).
    pub fn erase_document(&self, doc_id: &str, stand_in: StandIn<'_>) -> Result<Erased> {
        let c = &self.conn;
        // Freed cells and pages are zeroed as they are freed; what older
        // writes left in free space goes with `scrub`.
        c.pragma_update(None, "secure_delete", "ON")?;
        let changes = c.execute("DELETE FROM changes WHERE doc_id = ?1", [doc_id])? as u64;
        let document = c.execute("DELETE FROM documents WHERE id = ?1", [doc_id])? > 0;
        c.execute(
            "DELETE FROM unreadable_documents WHERE doc_id = ?1",
            [doc_id],
        )?;
        c.execute("DELETE FROM erasure_requests WHERE doc_id = ?1", [doc_id])?;
        keqing_projection::remove_dossier(c, doc_id)?;
        if let Some((view, slots)) = stand_in {
            keqing_projection::project_dossier(c, view, slots)?;
        }
        c.pragma_update(None, "secure_delete", "OFF")?;
        Ok(Erased { changes, document })
    }

    pub fn notices(
        &self,
        office: Option<&str>,
        after: u64,
        ask: &[String],
        limit: u32,
    ) -> Result<NoticeAnswer> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let take = i64::from(limit) + 1;
        let mut fates: Vec<Fate> = match office {
            Some(o) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {FATE_COLUMNS} FROM fates WHERE office = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))?
                .query_map(params![o, after, take], fate_of)?
                .collect::<rusqlite::Result<_>>()?,
            None => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {FATE_COLUMNS} FROM fates WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))?
                .query_map(params![after, take], fate_of)?
                .collect::<rusqlite::Result<_>>()?,
        };
        let more = fates.len() > limit as usize;
        fates.truncate(limit as usize);
        let cursor = fates.last().map_or(after as u64, |f| f.seq);
        let mut latest = self.conn.prepare_cached(&format!(
            "SELECT {FATE_COLUMNS} FROM fates WHERE doc_id = ?1 AND (?2 IS NULL OR office = ?2)
             ORDER BY seq DESC LIMIT 1"
        ))?;
        for id in ask {
            if let Some(f) = latest.query_row(params![id, office], fate_of).optional()?
                && !fates.iter().any(|g| g.seq == f.seq)
            {
                fates.push(f);
            }
        }
        Ok(NoticeAnswer {
            notices: fates.iter().map(Fate::notice).collect(),
            cursor,
            more,
        })
    }

    pub fn tombstones(&self) -> Result<Vec<Fate>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {FATE_COLUMNS} FROM fates WHERE seq IN
                 (SELECT min(seq) FROM fates WHERE kind = ?1 GROUP BY doc_id) ORDER BY seq"
            ))?
            .query_map([FATE_ERASE], fate_of)?
            .collect::<rusqlite::Result<_>>()?)
    }

    pub fn request_erasure(&self, r: &ErasureRequest) -> Result<()> {
        self.conn.execute(
            "INSERT INTO erasure_requests (doc_id, reason, by, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (doc_id) DO UPDATE SET reason = excluded.reason, by = excluded.by,
             at = excluded.at",
            params![r.doc_id, r.reason, r.by, r.at],
        )?;
        Ok(())
    }

    pub fn erasure_request(&self, doc_id: &str) -> Result<Option<ErasureRequest>> {
        Ok(self
            .conn
            .query_row(
                "SELECT doc_id, reason, by, at FROM erasure_requests WHERE doc_id = ?1",
                [doc_id],
                request_of,
            )
            .optional()?)
    }

    pub fn erasure_requests(&self) -> Result<Vec<ErasureRequest>> {
        Ok(self
            .conn
            .prepare("SELECT doc_id, reason, by, at FROM erasure_requests ORDER BY at")?
            .query_map([], request_of)?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Rebuilds the file (no free page or stale cell left; its new copy
    /// built in a file beside the store, [`vacuum_beside`]), leaves room in
    /// the leaves of the tables a day inserts into at random places
    /// ([`super::leaves`]: VACUUM packs them full), and empties the WAL
    /// (its frames held the pages as they were). The checkpoint waits
    /// for readers (the busy timeout) and says if one kept it from ending.
    ///
    /// A running server's upkeep copies the WAL back twice a second, and
    /// SQLite answers a second checkpoint busy at once: `empty_wal` tries
    /// again for as long as the busy timeout would have waited.
    pub fn scrub(&self) -> Result<()> {
        vacuum_beside(&self.conn)?;
        super::leaves::leave_room(&self.conn)?;
        if keqing_host::wal::empty_wal(&self.conn, super::schema::BUSY_TIMEOUT)? {
            Ok(())
        } else {
            Err(crate::store::StoreError::Invalid(
                "清理未完成 a reader or another checkpoint kept the WAL from being emptied; run the command again"
                    .into(),
            ))
        }
    }
}

/// Serializes [`vacuum_beside`]: SQLite's temporary directory is one for
/// the whole process, and two stores' vacuums must not trade theirs.
static TEMP_DIRECTORY_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// VACUUM, with the new copy of the database built in a temporary file in
/// the store's own directory. VACUUM builds that copy as a temporary
/// database, then copies it back over the file; the bundled SQLite
/// (SQLCipher's build) keeps temporary databases in memory, so at 1M
/// dossiers `compact --vacuum` held the whole 6.9 GB copy resident
/// (7.2 GB at its peak, BENCHMARKS.md). In a file it takes the disk
/// instead, as much again as the vacuumed store, and the page cache.
/// The server's store is not encrypted (an office's replica is, and keeps
/// its VACUUM in memory: SQLCipher does not encrypt temporary files), so
/// the file holds nothing the store's own does not. SQLite deletes a
/// temporary file as soon as it opens it; in the store's
/// directory (0700) no other account can open it even in that instant,
/// where the system's temporary directory would be open to all. A store
/// whose path SQLite cannot give back (not UTF-8) is vacuumed in memory,
/// as before.
fn vacuum_beside(conn: &rusqlite::Connection) -> Result<()> {
    let dir = conn
        .path()
        .and_then(|p| std::path::Path::new(p).parent())
        .and_then(|d| d.to_str())
        .filter(|d| !d.is_empty());
    let Some(dir) = dir else {
        conn.execute_batch("VACUUM")?;
        return Ok(());
    };
    let _only = TEMP_DIRECTORY_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    conn.pragma_update(None, "temp_store_directory", dir)?;
    conn.pragma_update(None, "temp_store", "FILE")?;
    let vacuumed = conn.execute_batch("VACUUM");
    // Back to memory and the default directory whatever VACUUM said: the
    // directory may be a test's, gone once it is done.
    let to_memory = conn.pragma_update(None, "temp_store", "DEFAULT");
    let to_default = conn.pragma_update(None, "temp_store_directory", "");
    vacuumed?;
    to_memory?;
    to_default?;
    Ok(())
}
