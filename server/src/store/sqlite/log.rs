//! The change log and the documents' snapshots on one SQLite connection.

use super::conn::{Conn, insert_audit};
use crate::store::{
    Budget, Compacted, DocumentState, NewLogEntry, PushFooting, Repacked, Result, StoredDocument,
};
use keqing_shared::packed::{pack, unpack};
use keqing_shared::sync::{LoggedChange, Snapshot};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

impl Conn {
    pub fn document(&self, doc_id: &str) -> Result<Option<StoredDocument>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT office, snapshot, complete, last_seq FROM documents WHERE id = ?1",
            )?
            .query_row([doc_id], |r| {
                Ok(StoredDocument {
                    office: r.get(0)?,
                    snapshot: unpack(r.get(1)?),
                    complete: r.get(2)?,
                    last_seq: r.get::<_, i64>(3)? as u64,
                })
            })
            .optional()?)
    }

    /// A push's footing (see [`PushFooting`]): a lookup each, the file is
    /// local.
    pub fn push_footing(&self, ids: &[&str], hashes: &[[u8; 32]]) -> Result<PushFooting> {
        let mut footing = PushFooting::default();
        let mut logged = self
            .conn
            .prepare_cached("SELECT 1 FROM changes WHERE hash = ?1")?;
        for h in hashes {
            if logged.query_row([&h[..]], |_| Ok(())).optional()?.is_some() {
                footing.logged.push(*h);
            }
        }
        footing.logged.sort_unstable();
        let mut row = self
            .conn
            .prepare_cached("SELECT office, last_seq FROM documents WHERE id = ?1")?;
        let mut fates = self.conn.prepare_cached(
            "SELECT count(*), coalesce(max(seq), 0) FROM fates WHERE doc_id = ?1",
        )?;
        for id in ids {
            if let Some((office, last_seq)) = row
                .query_row([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                .optional()?
            {
                footing.documents.push((id.to_string(), office, last_seq));
            }
            let (rows, latest) =
                fates.query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            footing.fates.0 += rows as u64;
            footing.fates.1 = footing.fates.1.max(latest as u64);
        }
        footing.documents.sort_unstable();
        Ok(footing)
    }

    /// The stored documents among `ids`, with every logged change of the
    /// incomplete ones.
    pub fn documents_to_project(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, (StoredDocument, Vec<LoggedChange>)>> {
        let mut found = HashMap::new();
        for id in ids {
            if let Some(d) = self.document(id)? {
                let logged = match d.complete {
                    true => Vec::new(),
                    false => self.changes_of(id, u64::MAX)?,
                };
                found.insert(id.to_string(), (d, logged));
            }
        }
        Ok(found)
    }

    /// Appends a batch and its documents' snapshots inside the writer's
    /// open transaction (see `super::SqliteWriter`); returns the last
    /// sequence number.
    pub fn append(
        &self,
        device_id: &str,
        entries: &[NewLogEntry],
        docs: &[DocumentState],
    ) -> Result<u64> {
        let tx = &self.conn;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO changes (hash, doc_id, office, device_id, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO NOTHING",
            )?;
            for e in entries {
                insert.execute(params![&e.hash[..], e.doc_id, e.office, device_id, e.bytes])?;
            }
            let last = self.max_seq()?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO documents (id, office, snapshot, complete, last_seq, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot, complete = excluded.complete,
                 last_seq = excluded.last_seq, size = excluded.size",
            )?;
            for d in docs {
                upsert.execute(params![
                    d.doc_id,
                    d.office,
                    pack(&d.snapshot),
                    d.complete,
                    last as i64,
                    d.snapshot.len() as i64
                ])?;
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
                        tx,
                        &actor,
                        "dossier.merge",
                        &d.doc_id,
                        &format!("office {} merged into {into}", d.office),
                    )?;
                }
            }
            Ok(last)
        }
    }

    pub fn max_seq(&self) -> Result<u64> {
        // AUTOINCREMENT's counter: the largest number the log ever gave,
        // which an erasure of the dossier holding the last ones does not
        // take back (a device's cursor may be there already).
        Ok(self.conn.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn snapshots_after(
        &self,
        office: Option<&str>,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(Snapshot, bool)>> {
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                Snapshot {
                    doc_id: r.get(0)?,
                    document: unpack(r.get(1)?),
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

    pub fn changes_of(&self, doc_id: &str, upto: u64) -> Result<Vec<LoggedChange>> {
        let v = self
            .conn
            .prepare_cached("SELECT seq, doc_id, bytes FROM changes WHERE doc_id = ?1 AND seq <= ?2 ORDER BY seq")?
            .query_map(
                params![doc_id, i64::try_from(upto).unwrap_or(i64::MAX)],
                |r| {
                    Ok(LoggedChange {
                        seq: r.get::<_, i64>(0)? as u64,
                        doc_id: r.get(1)?,
                        bytes: r.get(2)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// See [`crate::store::LogReader::log_floor`].
    pub fn log_floor(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT floor FROM log_compaction WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// See [`crate::store::LogWriter::mark_log`].
    pub fn mark_log(&self, now: &str, cutoff: &str) -> Result<u64> {
        let end = self.max_seq()?;
        self.conn.execute(
            "INSERT INTO log_marks (at, seq) VALUES (?1, ?2)
             ON CONFLICT (at) DO UPDATE SET seq = max(seq, excluded.seq)",
            params![now, end as i64],
        )?;
        let Some((at, seq)) = self
            .conn
            .query_row(
                "SELECT at, seq FROM log_marks WHERE at <= ?1 ORDER BY at DESC LIMIT 1",
                [cutoff],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?
        else {
            return Ok(0);
        };
        self.conn
            .execute("DELETE FROM log_marks WHERE at < ?1", [&at])?;
        Ok(seq as u64)
    }

    /// See [`crate::store::LogWriter::compact_log`].
    pub fn compact_log(&self, upto: u64) -> Result<Compacted> {
        let floor = self.log_floor()?;
        if upto <= floor {
            return Ok(Compacted::default());
        }
        // Each document's latest change stays (a rebuilt projection finds
        // every document in the log, and the log's end never goes back).
        let lengths: Vec<u64> = self
            .conn
            .prepare_cached(
                "DELETE FROM changes
                 WHERE seq > ?1 AND seq <= ?2
                   AND EXISTS (SELECT 1 FROM documents d WHERE d.id = changes.doc_id AND d.complete = 1)
                   AND seq < (SELECT max(l.seq) FROM changes l WHERE l.doc_id = changes.doc_id)
                 RETURNING length(bytes)",
            )?
            .query_map(params![floor as i64, upto as i64], |r| r.get::<_, i64>(0).map(|n| n as u64))?
            .collect::<rusqlite::Result<_>>()?;
        self.conn.execute(
            "UPDATE log_compaction SET floor = ?1 WHERE id = 1",
            [upto as i64],
        )?;
        Ok(Compacted {
            changes: lengths.len() as u64,
            bytes: lengths.iter().sum(),
        })
    }

    /// See [`crate::store::LogWriter::repack_snapshots`].
    pub fn repack_snapshots(&self, after_id: &str, limit: u32) -> Result<Repacked> {
        let rows: Vec<(String, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT id, snapshot FROM documents WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after_id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // `size` keeps the unpacked length: the raw row's own.
        let mut update = self.conn.prepare_cached(
            "UPDATE documents SET snapshot = ?2, size = length(snapshot)
             WHERE id = ?1 AND snapshot = ?3",
        )?;
        let (mut done, todo) = Repacked::plan(rows);
        for r in &todo {
            if update.execute(params![r.0, r.1, r.2])? == 1 {
                done.count(r);
            }
        }
        Ok(done)
    }

    /// The store's epoch (see the `store_meta` table).
    pub fn epoch(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT epoch FROM store_meta WHERE id = 1", [], |r| {
                r.get(0)
            })?)
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
                "SELECT id, complete, size FROM documents
                 WHERE office = ?1 AND id > ?2 ORDER BY id LIMIT {limit}"
            ),
            None => format!(
                "SELECT id, complete, size FROM documents
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
            .map(unpack)
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
