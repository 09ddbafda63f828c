//! The change log, documents, devices and the audit log in PostgreSQL:
//! the statements, on a pooled connection or inside a transaction.

use crate::store::{
    AuditEntry, Budget, Compacted, Device, DocumentState, NewLogEntry, PushFooting, Repacked,
    Result, StoreCounts, StoredDocument,
};
use deadpool_postgres::GenericClient;
use futures_util::{StreamExt, pin_mut};
use keqing_shared::packed::{pack, unpack};
use keqing_shared::sync::{LoggedChange, Snapshot};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;

const DEVICE_COLUMNS: &str = "id, name, office, actor, created_at, revoked_at, cert_sha256";

/// A sequence number as PostgreSQL's bigint (a device's cursor past the
/// bigint range is simply past the end of the log).
pub(super) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored sequence number (never negative).
pub(super) fn seq_of(v: i64) -> u64 {
    v.max(0) as u64
}

fn device_of(r: &tokio_postgres::Row) -> Device {
    Device {
        id: r.get(0),
        name: r.get(1),
        office: r.get(2),
        actor: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
        cert_sha256: r.get(6),
    }
}

/// The device whose `column` (id, token_sha256 or actor) is `value`.
pub(super) async fn device_where<T>(
    c: &impl GenericClient,
    column: &str,
    value: T,
) -> Result<Option<Device>>
where
    T: tokio_postgres::types::ToSql + Sync + Send,
{
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE {column} = $1"
        ))
        .await?;
    Ok(c.query_opt(&stmt, &[&value]).await?.as_ref().map(device_of))
}

pub(super) async fn devices(c: &impl GenericClient) -> Result<Vec<Device>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY office NULLS FIRST, name"
        ))
        .await?;
    Ok(c.query(&stmt, &[]).await?.iter().map(device_of).collect())
}

pub(super) async fn insert_audit(
    c: &impl GenericClient,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &keqing_host::now_cst_text(),
            &actor,
            &action,
            &subject,
            &detail,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn audit_log(c: &impl GenericClient, limit: u32) -> Result<Vec<AuditEntry>> {
    let rows = c
        .query(
            "SELECT seq, at, actor, action, subject, detail FROM
             (SELECT * FROM audit ORDER BY seq DESC LIMIT $1) newest ORDER BY seq",
            &[&i64::from(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            subject: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

pub(super) async fn counts(c: &impl GenericClient) -> Result<StoreCounts> {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM documents)",
            &[],
        )
        .await?;
    Ok(StoreCounts {
        changes: seq_of(r.get(0)),
        documents: seq_of(r.get(1)),
    })
}

/// What can be checked of the store's own consistency: the log numbered
/// 1..=N without gaps but those of what compaction and erasures took, no
/// document written past the log's end, the projector not ahead of it.
pub(super) async fn integrity_check(c: &impl GenericClient) -> Result<String> {
    let r = c
        .query_one(
            "WITH log AS (SELECT coalesce(max(seq), 0) AS max, count(*) AS n FROM changes)
             SELECT greatest(log.max, c.high_water), log.n + c.removed,
                    (SELECT count(*) FROM documents WHERE last_seq > greatest(log.max, c.high_water)),
                    (SELECT cursor FROM projector WHERE id = 1)
             FROM log, log_compaction c WHERE c.id = 1",
            &[],
        )
        .await?;
    let (max, n, ahead, cursor): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    let mut problems = Vec::new();
    if max != n {
        problems.push(format!(
            "the log has {n} changes (with those taken out) numbered up to {max}"
        ));
    }
    if ahead > 0 {
        problems.push(format!("{ahead} documents written past the log's end"));
    }
    if cursor > max {
        problems.push(format!(
            "the projector is at {cursor}, past the log's end {max}"
        ));
    }
    Ok(if problems.is_empty() {
        "ok".to_string()
    } else {
        problems.join("; ")
    })
}

pub(super) async fn document(
    c: &impl GenericClient,
    doc_id: &str,
) -> Result<Option<StoredDocument>> {
    let stmt = c
        .prepare_cached("SELECT office, snapshot, complete, last_seq FROM documents WHERE id = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&doc_id])
        .await?
        .map(|r| StoredDocument {
            office: r.get(0),
            snapshot: unpack(r.get(1)),
            complete: r.get(2),
            last_seq: seq_of(r.get(3)),
        }))
}

/// A push's footing (see [`PushFooting`]): three statements sent at once,
/// one round trip.
pub(super) async fn push_footing(
    c: &impl GenericClient,
    ids: &[&str],
    hashes: &[[u8; 32]],
) -> Result<PushFooting> {
    let (rows, fates, logged) = tokio::try_join!(
        c.prepare_cached("SELECT id, office, last_seq FROM documents WHERE id = ANY($1)"),
        c.prepare_cached(
            "SELECT count(*), coalesce(max(seq), 0) FROM fates WHERE doc_id = ANY($1)"
        ),
        c.prepare_cached("SELECT hash FROM changes WHERE hash = ANY($1)"),
    )?;
    let wanted: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
    let (by_id, by_hash): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
        ([&ids], [&wanted]);
    let (rows, fates, logged) = tokio::try_join!(
        c.query(&rows, &by_id),
        c.query_one(&fates, &by_id),
        c.query(&logged, &by_hash),
    )?;
    let mut footing = PushFooting {
        documents: rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, seq_of(r.try_get(2)?))))
            .collect::<Result<_>>()?,
        fates: (
            fates.try_get::<_, i64>(0)? as u64,
            seq_of(fates.try_get(1)?),
        ),
        logged: Vec::new(),
    };
    for r in &logged {
        if let Ok(h) = <[u8; 32]>::try_from(r.try_get::<_, &[u8]>(0)?) {
            footing.logged.push(h);
        }
    }
    footing.documents.sort_unstable();
    footing.logged.sort_unstable();
    Ok(footing)
}

pub(super) async fn documents_among(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<HashMap<String, StoredDocument>> {
    let stmt = c
        .prepare_cached(
            "SELECT id, office, snapshot, complete, last_seq FROM documents WHERE id = ANY($1)",
        )
        .await?;
    let mut found = HashMap::new();
    for r in c.query(&stmt, &[&ids]).await? {
        found.insert(
            r.try_get(0)?,
            StoredDocument {
                office: r.try_get(1)?,
                snapshot: unpack(r.try_get(2)?),
                complete: r.try_get(3)?,
                last_seq: seq_of(r.try_get(4)?),
            },
        );
    }
    Ok(found)
}

pub(super) async fn max_seq(c: &impl GenericClient) -> Result<u64> {
    let stmt = c
        .prepare_cached(
            "SELECT greatest(coalesce(max(seq), 0),
                             (SELECT high_water FROM log_compaction WHERE id = 1))
             FROM changes",
        )
        .await?;
    Ok(seq_of(c.query_one(&stmt, &[]).await?.get(0)))
}

pub(super) async fn epoch(c: &impl GenericClient) -> Result<String> {
    Ok(
        c.query_one("SELECT epoch FROM store_meta WHERE id = 1", &[])
            .await?
            .get(0),
    )
}

/// See `LogReader::log_floor`.
pub(super) async fn log_floor(c: &impl GenericClient) -> Result<u64> {
    let stmt = c
        .prepare_cached("SELECT floor FROM log_compaction WHERE id = 1")
        .await?;
    Ok(seq_of(c.query_one(&stmt, &[]).await?.get(0)))
}

/// See `LogWriter::mark_log`.
pub(super) async fn mark_log(c: &impl GenericClient, now: &str, cutoff: &str) -> Result<u64> {
    let end = seq_param(max_seq(c).await?);
    c.execute(
        "INSERT INTO log_marks (at, seq) VALUES ($1, $2)
         ON CONFLICT (at) DO UPDATE SET seq = greatest(log_marks.seq, excluded.seq)",
        &[&now, &end],
    )
    .await?;
    let Some(row) = c
        .query_opt(
            "SELECT at, seq FROM log_marks WHERE at <= $1 ORDER BY at DESC LIMIT 1",
            &[&cutoff],
        )
        .await?
    else {
        return Ok(0);
    };
    let at: String = row.get(0);
    c.execute("DELETE FROM log_marks WHERE at < $1", &[&at])
        .await?;
    Ok(seq_of(row.get(1)))
}

/// See `LogWriter::repack_snapshots`.
pub(super) async fn repack_snapshots(
    c: &impl GenericClient,
    after_id: &str,
    limit: u32,
) -> Result<Repacked> {
    let rows: Vec<(String, Vec<u8>)> = c
        .query(
            "SELECT id, snapshot FROM documents WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after_id, &i64::from(limit)],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let update = c
        .prepare_cached(
            "UPDATE documents SET snapshot = $2, size = octet_length(snapshot)
             WHERE id = $1 AND snapshot = $3",
        )
        .await?;
    // A row written meanwhile (its bytes no longer those read) stays.
    let (mut done, todo) = Repacked::plan(rows);
    for r in &todo {
        if c.execute(&update, &[&r.0, &r.1, &r.2]).await? == 1 {
            done.count(r);
        }
    }
    Ok(done)
}

/// See `LogWriter::compact_log`.
pub(super) async fn compact_log(c: &impl GenericClient, upto: u64) -> Result<Compacted> {
    let floor = log_floor(c).await?;
    if upto <= floor {
        return Ok(Compacted::default());
    }
    let (floor, upto) = (seq_param(floor), seq_param(upto));
    let row = c
        .query_one(
            "WITH gone AS (
                 DELETE FROM changes
                 WHERE seq > $1 AND seq <= $2
                   AND EXISTS (SELECT 1 FROM documents d
                               WHERE d.id = changes.doc_id AND d.complete)
                   AND seq < (SELECT max(l.seq) FROM changes l WHERE l.doc_id = changes.doc_id)
                 RETURNING octet_length(bytes) AS len
             )
             SELECT count(*), coalesce(sum(len), 0)::bigint FROM gone",
            &[&floor, &upto],
        )
        .await?;
    c.execute(
        "UPDATE log_compaction SET floor = $1, removed = removed + $2 WHERE id = 1",
        &[&upto, &row.get::<_, i64>(0)],
    )
    .await?;
    Ok(Compacted {
        changes: seq_of(row.get(0)),
        bytes: seq_of(row.get(1)),
    })
}

/// Appends a batch and its documents' snapshots inside the writer's
/// transaction, which holds the log's advisory lock: numbers are the log's
/// maximum + 1, + 2, … (the entries are changes the log lacks: a logged
/// one is refused by the log's key, and the turn rolled back). Returns the
/// last sequence number.
pub(super) async fn append(
    c: &impl GenericClient,
    device_id: &str,
    entries: &[NewLogEntry],
    docs: &[DocumentState],
) -> Result<u64> {
    // The push's checks ran in this turn and left only changes the log
    // lacks, so the batch takes the numbers after the maximum, in order,
    // as one statement (a round trip per change would be most of a push).
    let before = seq_param(max_seq(c).await?);
    let insert = c
        .prepare_cached(
            "INSERT INTO changes (seq, hash, doc_id, office, device_id, bytes)
             SELECT $1 + n, hash, doc_id, office, $2, bytes
             FROM unnest($3::bytea[], $4::text[], $5::text[], $6::bytea[])
                 WITH ORDINALITY AS t(hash, doc_id, office, bytes, n)",
        )
        .await?;
    let hashes: Vec<&[u8]> = entries.iter().map(|e| &e.hash[..]).collect();
    let doc_ids: Vec<&str> = entries.iter().map(|e| e.doc_id.as_str()).collect();
    let offices: Vec<&str> = entries.iter().map(|e| e.office.as_str()).collect();
    let bytes: Vec<&[u8]> = entries.iter().map(|e| e.bytes.as_slice()).collect();
    let inserted = c
        .execute(
            &insert,
            &[&before, &device_id, &hashes, &doc_ids, &offices, &bytes],
        )
        .await?;
    let last = before + inserted as i64;
    let upsert = c
        .prepare_cached(
            "INSERT INTO documents (id, office, snapshot, complete, last_seq, size)
             SELECT id, office, snapshot, complete, $5, size
             FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bool[], $6::bigint[])
                 AS t(id, office, snapshot, complete, size)
             ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot,
                 complete = excluded.complete, last_seq = excluded.last_seq, size = excluded.size",
        )
        .await?;
    let ids: Vec<&str> = docs.iter().map(|d| d.doc_id.as_str()).collect();
    let offices: Vec<&str> = docs.iter().map(|d| d.office.as_str()).collect();
    let snapshots: Vec<Vec<u8>> = docs.iter().map(|d| pack(&d.snapshot)).collect();
    let complete: Vec<bool> = docs.iter().map(|d| d.complete).collect();
    let sizes: Vec<i64> = docs.iter().map(|d| d.snapshot.len() as i64).collect();
    c.execute(
        &upsert,
        &[&ids, &offices, &snapshots, &complete, &last, &sizes],
    )
    .await?;
    for d in docs {
        if let Some(into) = &d.merged_into {
            let actor = device_where(c, "id", device_id)
                .await?
                .map(|d| crate::store::audit_actor(&d))
                .unwrap_or_else(|| device_id.to_string());
            insert_audit(
                c,
                &actor,
                "dossier.merge",
                &d.doc_id,
                &format!("office {} merged into {into}", d.office),
            )
            .await?;
        }
    }
    Ok(seq_of(last))
}

fn logged_of(r: &tokio_postgres::Row) -> LoggedChange {
    LoggedChange {
        seq: seq_of(r.get(0)),
        doc_id: r.get(1),
        bytes: r.get(2),
    }
}

/// The stored documents among `ids`, with every logged change of the
/// incomplete ones (see `Projections::documents_to_project`).
pub(super) async fn documents_to_project(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<HashMap<String, (StoredDocument, Vec<LoggedChange>)>> {
    let found = documents_among(c, ids).await?;
    let incomplete: Vec<&str> = found
        .iter()
        .filter(|(_, d)| !d.complete)
        .map(|(id, _)| id.as_str())
        .collect();
    let mut logged: HashMap<String, Vec<LoggedChange>> = HashMap::new();
    if !incomplete.is_empty() {
        let stmt = c
            .prepare_cached(
                "SELECT seq, doc_id, bytes FROM changes WHERE doc_id = ANY($1) ORDER BY seq",
            )
            .await?;
        for r in c.query(&stmt, &[&incomplete]).await? {
            let change = logged_of(&r);
            logged
                .entry(change.doc_id.clone())
                .or_default()
                .push(change);
        }
    }
    Ok(found
        .into_iter()
        .map(|(id, d)| {
            let changes = logged.remove(&id).unwrap_or_default();
            (id, (d, changes))
        })
        .collect())
}

pub(super) async fn changes_of(
    c: &impl GenericClient,
    doc_id: &str,
    upto: u64,
) -> Result<Vec<LoggedChange>> {
    let stmt = c
        .prepare_cached(
            "SELECT seq, doc_id, bytes FROM changes WHERE doc_id = $1 AND seq <= $2 ORDER BY seq",
        )
        .await?;
    Ok(c.query(&stmt, &[&doc_id, &seq_param(upto)])
        .await?
        .iter()
        .map(logged_of)
        .collect())
}

/// Takes rows as they arrive while `budget` has room; `true` when a row
/// was left (the rest of the answer is not read).
async fn take_within(
    rows: tokio_postgres::RowStream,
    budget: &mut Budget,
) -> Result<(Vec<LoggedChange>, bool)> {
    pin_mut!(rows);
    let mut out = Vec::new();
    while let Some(row) = rows.next().await {
        let c = logged_of(&row?);
        if !budget.fits(c.bytes.len()) {
            return Ok((out, true));
        }
        budget.take(c.bytes.len());
        out.push(c);
    }
    Ok((out, false))
}

pub(super) async fn changes_of_within(
    c: &impl GenericClient,
    doc_id: &str,
    after: u64,
    upto: u64,
    budget: &mut Budget,
) -> Result<(Vec<LoggedChange>, bool)> {
    let stmt = c
        .prepare_cached(
            "SELECT seq, doc_id, bytes FROM changes
             WHERE doc_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&doc_id, &seq_param(after), &seq_param(upto)];
    let rows = c.query_raw(&stmt, params).await?;
    take_within(rows, budget).await
}

pub(super) async fn changes_after_within(
    c: &impl GenericClient,
    office: Option<&str>,
    after: u64,
    budget: &mut Budget,
) -> Result<(Vec<LoggedChange>, bool)> {
    // One more row than the budget's count is asked for, to tell whether
    // the feed goes on; rows are read as they come and the read stops at
    // the budget.
    let limit = (budget.max_items + 1) as i64;
    let stmt = c
        .prepare_cached(match office {
            Some(_) => {
                "SELECT seq, doc_id, bytes FROM changes
                 WHERE office = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            }
            None => {
                "SELECT seq, doc_id, bytes FROM changes
                 WHERE $1::text IS NULL AND seq > $2 ORDER BY seq LIMIT $3"
            }
        })
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&office, &seq_param(after), &limit];
    let rows = c.query_raw(&stmt, params).await?;
    take_within(rows, budget).await
}

pub(super) async fn document_page(
    c: &impl GenericClient,
    office: Option<&str>,
    after_id: &str,
    limit: u32,
) -> Result<Vec<(String, bool, usize)>> {
    let stmt = c
        .prepare_cached(match office {
            Some(_) => {
                "SELECT id, complete, coalesce(size, length(snapshot)) FROM documents
                 WHERE office = $1 AND id > $2 ORDER BY id LIMIT $3"
            }
            None => {
                "SELECT id, complete, coalesce(size, length(snapshot)) FROM documents
                 WHERE $1::text IS NULL AND id > $2 ORDER BY id LIMIT $3"
            }
        })
        .await?;
    Ok(c.query(&stmt, &[&office, &after_id, &i64::from(limit)])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2).max(0) as usize))
        .collect())
}

pub(super) async fn snapshot_of(c: &impl GenericClient, doc_id: &str) -> Result<Vec<u8>> {
    let stmt = c
        .prepare_cached("SELECT snapshot FROM documents WHERE id = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&doc_id])
        .await?
        .map(|r| unpack(r.get(0)))
        .unwrap_or_default())
}

pub(super) async fn snapshots_after(
    c: &impl GenericClient,
    office: Option<&str>,
    after_id: &str,
    limit: u32,
) -> Result<Vec<(Snapshot, bool)>> {
    let stmt = c
        .prepare_cached(match office {
            Some(_) => {
                "SELECT id, snapshot, complete FROM documents
                 WHERE office = $1 AND id > $2 ORDER BY id LIMIT $3"
            }
            None => {
                "SELECT id, snapshot, complete FROM documents
                 WHERE $1::text IS NULL AND id > $2 ORDER BY id LIMIT $3"
            }
        })
        .await?;
    Ok(c.query(&stmt, &[&office, &after_id, &i64::from(limit)])
        .await?
        .iter()
        .map(|r| {
            (
                Snapshot {
                    doc_id: r.get(0),
                    document: unpack(r.get(1)),
                },
                r.get(2),
            )
        })
        .collect())
}
