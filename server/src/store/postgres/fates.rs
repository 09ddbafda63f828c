//! Transfers and erasures in PostgreSQL: the `fates` table the devices'
//! notices come from, erasure requests, taking a dossier out and
//! rewriting the tables that held it.

use super::log::{seq_of, seq_param};
use crate::store::{Erased, ErasureRequest, FATE_ERASE, Fate, NewFate, Result, StandIn, fate_kind};
use deadpool_postgres::GenericClient;
use keqing_projection::rows;
use keqing_shared::lifecycle::NoticeAnswer;
use std::collections::HashMap;

const FATE_COLUMNS: &str = "seq, doc_id, kind, from_office, to_office, at, reason, by";

fn fate_of(r: &tokio_postgres::Row) -> Result<Fate> {
    Ok(Fate {
        seq: seq_of(r.try_get(0)?),
        doc_id: r.try_get(1)?,
        kind: fate_kind(r.try_get::<_, &str>(2)?),
        from_office: r.try_get(3)?,
        to_office: r.try_get(4)?,
        at: r.try_get(5)?,
        reason: r.try_get(6)?,
        by: r.try_get(7)?,
    })
}

fn request_of(r: &tokio_postgres::Row) -> Result<ErasureRequest> {
    Ok(ErasureRequest {
        doc_id: r.try_get(0)?,
        reason: r.try_get(1)?,
        by: r.try_get(2)?,
        at: r.try_get(3)?,
    })
}

/// One row per event (the lowest of its recipients' rows), oldest first.
pub(super) async fn fates_among(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<HashMap<String, Vec<Fate>>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {FATE_COLUMNS} FROM fates WHERE seq IN
             (SELECT min(seq) FROM fates WHERE doc_id = ANY($1) GROUP BY doc_id, kind, at, to_office)
             ORDER BY seq"
        ))
        .await?;
    let mut found: HashMap<String, Vec<Fate>> = HashMap::new();
    for r in c.query(&stmt, &[&ids]).await? {
        let f = fate_of(&r)?;
        found.entry(f.doc_id.clone()).or_default().push(f);
    }
    Ok(found)
}

pub(super) async fn record_fate(c: &impl GenericClient, fate: &NewFate<'_>) -> Result<()> {
    let insert = c
        .prepare_cached(
            "INSERT INTO fates (doc_id, office, kind, from_office, to_office, at, reason, by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    for office in &fate.offices {
        c.execute(
            &insert,
            &[
                &fate.doc_id,
                office,
                &fate.kind,
                &fate.from_office,
                &fate.to_office,
                &fate.at,
                &fate.reason,
                &fate.by,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn move_document(
    c: &impl GenericClient,
    doc_id: &str,
    office: &str,
) -> Result<()> {
    c.execute(
        "UPDATE documents SET office = $2 WHERE id = $1",
        &[&doc_id, &office],
    )
    .await?;
    Ok(())
}

/// Inside the writer's transaction. The projector's row is locked first:
/// a projector batch read before the erasure waits for it and then finds
/// the tombstone (see `projections::save`), so it cannot write the
/// dossier's rows back.
pub(super) async fn erase_document(
    c: &impl GenericClient,
    doc_id: &str,
    stand_in: StandIn<'_>,
) -> Result<Erased> {
    c.execute("SELECT cursor FROM projector WHERE id = 1 FOR UPDATE", &[])
        .await?;
    // The log's numbers never go back, even if these were its last; the
    // integrity check counts what goes.
    c.execute(
        "UPDATE log_compaction SET
             high_water = greatest(high_water, (SELECT coalesce(max(seq), 0) FROM changes)),
             removed = removed + (SELECT count(*) FROM changes WHERE doc_id = $1)
         WHERE id = 1",
        &[&doc_id],
    )
    .await?;
    let changes = c
        .execute("DELETE FROM changes WHERE doc_id = $1", &[&doc_id])
        .await?;
    let document = c
        .execute("DELETE FROM documents WHERE id = $1", &[&doc_id])
        .await?
        > 0;
    for sql in [
        "DELETE FROM unreadable_documents WHERE doc_id = $1",
        "DELETE FROM erasure_requests WHERE doc_id = $1",
    ] {
        c.execute(sql, &[&doc_id]).await?;
    }
    super::projections::delete_dossier_rows(c, doc_id).await?;
    if let Some(stand_in) = stand_in {
        super::projections::project_dossiers(c, &[stand_in]).await?;
    }
    Ok(Erased { changes, document })
}

pub(super) async fn notices(
    c: &impl GenericClient,
    office: Option<&str>,
    after: u64,
    ask: &[String],
    limit: u32,
) -> Result<NoticeAnswer> {
    let take = i64::from(limit) + 1;
    let rows = c
        .query(
            &format!(
                "SELECT {FATE_COLUMNS} FROM fates WHERE ($1::TEXT IS NULL OR office = $1)
                 AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            &[&office, &seq_param(after), &take],
        )
        .await?;
    let mut fates = rows.iter().map(fate_of).collect::<Result<Vec<_>>>()?;
    let more = fates.len() > limit as usize;
    fates.truncate(limit as usize);
    let cursor = fates.last().map_or(after, |f| f.seq);
    if !ask.is_empty() {
        let latest = c
            .query(
                &format!(
                    "SELECT DISTINCT ON (doc_id) {FATE_COLUMNS} FROM fates
                     WHERE doc_id = ANY($1) AND ($2::TEXT IS NULL OR office = $2)
                     ORDER BY doc_id, seq DESC"
                ),
                &[&ask, &office],
            )
            .await?;
        for r in &latest {
            let f = fate_of(r)?;
            if !fates.iter().any(|g| g.seq == f.seq) {
                fates.push(f);
            }
        }
    }
    Ok(NoticeAnswer {
        notices: fates.iter().map(Fate::notice).collect(),
        cursor,
        more,
    })
}

pub(super) async fn tombstones(c: &impl GenericClient) -> Result<Vec<Fate>> {
    let rows = c
        .query(
            &format!(
                "SELECT {FATE_COLUMNS} FROM fates WHERE seq IN
                 (SELECT min(seq) FROM fates WHERE kind = $1 GROUP BY doc_id) ORDER BY seq"
            ),
            &[&FATE_ERASE],
        )
        .await?;
    rows.iter().map(fate_of).collect()
}

pub(super) async fn request_erasure(c: &impl GenericClient, r: &ErasureRequest) -> Result<()> {
    c.execute(
        "INSERT INTO erasure_requests (doc_id, reason, by, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (doc_id) DO UPDATE SET reason = EXCLUDED.reason, by = EXCLUDED.by,
         at = EXCLUDED.at",
        &[&r.doc_id, &r.reason, &r.by, &r.at],
    )
    .await?;
    Ok(())
}

pub(super) async fn erasure_requests(
    c: &impl GenericClient,
    doc_id: Option<&str>,
) -> Result<Vec<ErasureRequest>> {
    let rows = c
        .query(
            "SELECT doc_id, reason, by, at FROM erasure_requests
             WHERE ($1::TEXT IS NULL OR doc_id = $1) ORDER BY at",
            &[&doc_id],
        )
        .await?;
    rows.iter().map(request_of).collect()
}

/// Rewrites every table an erased dossier's content was in: a deleted
/// row stays in its table's pages (and an updated one's old versions)
/// until VACUUM FULL writes the table anew. Not in a transaction (VACUUM
/// cannot be); each table is locked while it is rewritten.
///
/// A rewritten table starts with an empty visibility map, and autovacuum
/// has no reason to visit a table without dead rows: the reports' index-only
/// scans would read every row's page from the table instead (at 1M
/// dossiers the 30-day national report went from 0.3 to 1.3 s). A plain
/// VACUUM afterwards marks the new pages all-visible, and ANALYZE gives
/// the planner the tables' new sizes.
pub(super) async fn scrub(c: &impl GenericClient) -> Result<()> {
    let mut tables = vec!["changes", "documents", "dossier_keys"];
    tables.extend(
        rows::DOSSIER_TABLES
            .iter()
            .map(|t| super::projections::stored_name(t)),
    );
    let tables = tables.join(", ");
    c.batch_execute(&format!("VACUUM (FULL) {tables}")).await?;
    c.batch_execute(&format!("VACUUM (ANALYZE) {tables}"))
        .await?;
    Ok(())
}
