//! The projector's cursor and batches, and the reports' reads, on one
//! SQLite connection (the projection tables themselves are written by
//! `keqing-projection`).

use super::conn::Conn;
use crate::store::{Projected, Result, SettledSnapshot, UnreadableDocument};
use rusqlite::params;

impl Conn {
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
        // A dossier erased after this batch was read is not written back
        // (the erasure and this save both take the write lock).
        let any_erased: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM fates WHERE kind = 'erase')",
            [],
            |r| r.get(0),
        )?;
        let mut erased = std::collections::HashSet::new();
        if any_erased {
            let mut stmt = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM fates WHERE kind = 'erase' AND doc_id = ?1)",
            )?;
            for d in docs {
                let id = d.doc_id();
                if stmt.query_row([&id], |r| r.get::<_, bool>(0))? {
                    erased.insert(id);
                }
            }
        }
        for d in docs {
            match d {
                Projected::Dossier { view, .. } if erased.contains(&view.id) => {}
                Projected::Dossier { view, slots } => {
                    keqing_projection::project_dossier(&tx, view, slots)?
                }
                Projected::Roster {
                    office,
                    staff,
                    activities,
                } => keqing_projection::project_roster(&tx, office, staff, activities)?,
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
                "UPDATE documents SET snapshot = ?2, complete = 1, size = ?4
                 WHERE id = ?1 AND last_seq = ?3 AND complete = 0",
            )?;
            for s in settled {
                stored += update.execute(params![
                    s.doc_id,
                    keqing_shared::packed::pack(&s.snapshot),
                    i64::try_from(s.last_seq).unwrap_or(i64::MAX),
                    s.snapshot.len() as i64
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
}
