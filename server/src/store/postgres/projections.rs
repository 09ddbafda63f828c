//! The projector's cursor and batches, the projection rows, and the
//! reports' reads in PostgreSQL. The rows are `keqing_projection::rows`,
//! derived by the same code as SQLite's; the report arithmetic is the
//! projection crate's too (`fold_category_counts`, `fold_slot_counts`),
//! so only the SQL here is PostgreSQL's.

use super::log::{seq_of, seq_param};
use crate::store::{Projected, Result, SettledSnapshot, StoreError, UnreadableDocument};
use chrono::{NaiveDate, NaiveDateTime};
use deadpool_postgres::{GenericClient, Object};
use keqing_projection::rows::{self, Cell, Row, Table};
use keqing_projection::{CategoryTally, TableSql, fold_category_counts, fold_slot_counts};
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::Slot;
use keqing_shared::report::{
    CallFact, FollowUpTally, MarkCounts, NonPatientFact, PurchaseFact, PurchaseOrder, ReportRows,
    SlotCounts, VisitFact,
};
use keqing_shared::when::{fmt_date, fmt_datetime, read_stored_date, read_stored_datetime};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A [`Cell`] as a statement parameter (the projection's columns are text
/// and bigint).
#[derive(Debug)]
struct PgCell<'a>(Cow<'a, Cell>);

impl<'a> PgCell<'a> {
    fn of(cell: &'a Cell) -> PgCell<'a> {
        PgCell(Cow::Borrowed(cell))
    }
}

impl ToSql for PgCell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (&*self.0, ty) {
            (Cell::Null, _) => Ok(IsNull::Yes),
            (Cell::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            // The keyed tables' counters and flags (a slot's number and
            // day, 0 or 1): narrower than the numbers they could be.
            (Cell::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Cell::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Cell::Text(t), &Type::TEXT) => t.as_str().to_sql(ty, out),
            // A slot's times (`slot_rows`).
            (Cell::Text(t), &Type::TIMESTAMP) => {
                bytes::BufMut::put_i64(out, timestamp_micros(t));
                Ok(IsNull::No)
            }
            (v, ty) => Err(format!("{v:?} into a column of type {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::INT2 | Type::TEXT | Type::TIMESTAMP
        )
    }

    to_sql_checked!();
}

/// A stored time as PostgreSQL's `timestamp` takes it: microseconds from
/// 2000-01-01. One it cannot hold (before 4713 BC: only a hostile device
/// writes such a time; or not a stored time at all) is -infinity
/// (`i64::MIN`), which the views show as null: a value PostgreSQL refused
/// would fail the projector's whole batch, every office's dossiers with it.
fn timestamp_micros(t: &str) -> i64 {
    use chrono::Datelike;
    const NEGATIVE_INFINITY: i64 = i64::MIN;
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .map(|d| d.and_time(chrono::NaiveTime::MIN))
        .unwrap_or_default();
    match read_stored_datetime(t) {
        Some(at) if at.year() > -4713 => {
            (at - epoch).num_microseconds().unwrap_or(NEGATIVE_INFINITY)
        }
        _ => NEGATIVE_INFINITY,
    }
}

/// Column `i` of a projection row as a [`Cell`].
fn cell_at(r: &tokio_postgres::Row, i: usize) -> Result<Cell> {
    Ok(match *r.columns()[i].type_() {
        Type::INT8 => r
            .try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Integer),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |v| Cell::Integer(v.into())),
        _ => r
            .try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text),
    })
}

/// Each table's statements in PostgreSQL, written once.
static TABLE_SQL: [OnceLock<TableSql>; rows::TABLE_COUNT] =
    [const { OnceLock::new() }; rows::TABLE_COUNT];

fn table_sql(table: &Table) -> &'static TableSql {
    TABLE_SQL[table.index].get_or_init(|| {
        let parameter = |i| format!("${i}");
        let mut sql = TableSql::new(table, parameter);
        // Read through the view, written to the stored table.
        if let Some(stored) = stored_table(table) {
            let written = TableSql::new(&stored.table, parameter);
            sql.upsert = written.upsert;
            sql.delete = written.delete;
        }
        sql
    })
}

/// A stored column of a keyed table: a column of the projection's row as
/// it is, or the integer key standing for some of them.
enum Stored {
    Same(&'static str),
    /// The dossier's key in `dossier_keys`, for `dossier_id`.
    DossierKey,
    /// The key in `slot_kinds` of a slot's `cadence` and `reason`.
    SlotKind,
}

/// How PostgreSQL keeps one of the two tables with most rows a dossier:
/// under another name, the dossier as an integer key of `dossier_keys`
/// (schema migration 17), a slot's cadence and reason as a key of
/// `slot_kinds` (19). The documented name is a view of the rows with the
/// documented columns; the writer resolves the keys of a batch in two
/// queries and writes integers.
struct StoredTable {
    /// The stored table's name, columns and key (for its statements).
    table: Table,
    /// What each of `table.columns` holds.
    cells: &'static [Stored],
    /// What each of `table.key` holds.
    key_cells: &'static [Stored],
}

static SLOT_ROWS: StoredTable = StoredTable {
    table: Table {
        index: usize::MAX,
        name: "slot_rows",
        columns: &[
            "dossier",
            "n",
            "kind",
            "day",
            "anchor",
            "due_from",
            "deadline",
            "satisfied_at",
            "closed_at",
            "settled_on",
            "office",
            "due_counted",
            "on_time",
        ],
        key: &["dossier", "n"],
    },
    cells: &[
        Stored::DossierKey,
        Stored::Same("n"),
        Stored::SlotKind,
        Stored::Same("day"),
        Stored::Same("anchor"),
        Stored::Same("due_from"),
        Stored::Same("deadline"),
        Stored::Same("satisfied_at"),
        Stored::Same("closed_at"),
        Stored::Same("settled_on"),
        Stored::Same("office"),
        Stored::Same("due_counted"),
        Stored::Same("on_time"),
    ],
    key_cells: &[Stored::DossierKey, Stored::Same("n")],
};

static FOLLOWUP_ROWS: StoredTable = StoredTable {
    table: Table {
        index: usize::MAX,
        name: "followup_rows",
        columns: &["id", "dossier", "at", "staff", "kind", "on_time", "office"],
        key: &["dossier", "id"],
    },
    cells: &[
        Stored::Same("id"),
        Stored::DossierKey,
        Stored::Same("at"),
        Stored::Same("staff"),
        Stored::Same("kind"),
        Stored::Same("on_time"),
        Stored::Same("office"),
    ],
    key_cells: &[Stored::DossierKey, Stored::Same("id")],
};

fn stored_table(table: &Table) -> Option<&'static StoredTable> {
    if table.name == rows::SLOTS.name {
        Some(&SLOT_ROWS)
    } else if table.name == rows::FOLLOWUPS.name {
        Some(&FOLLOWUP_ROWS)
    } else {
        None
    }
}

/// The table that holds `table`'s rows (what TRUNCATE and VACUUM name).
pub(super) fn stored_name(table: &Table) -> &'static str {
    stored_table(table).map_or(table.name, |s| s.table.name)
}

/// The stored column holding the dossier's key.
fn dossier_column(stored: &StoredTable) -> &'static str {
    stored
        .cells
        .iter()
        .position(|c| matches!(c, Stored::DossierKey))
        .map_or("dossier", |i| stored.table.columns[i])
}

/// The keys a batch's rows are written with.
struct Keys {
    dossiers: HashMap<String, i32>,
    /// By cadence, then reason (looked up without copying either).
    slot_kinds: HashMap<String, HashMap<String, i32>>,
}

impl Keys {
    /// The parameters of `table`'s statements for one of its rows (or,
    /// `key_only`, the key of one): the row's cells, or for a keyed table
    /// its stored columns' values.
    fn params<'r>(
        &self,
        table: &Table,
        key_only: bool,
        row: &'r [Cell],
    ) -> Result<Vec<PgCell<'r>>> {
        match stored_table(table) {
            Some(s) if key_only => self.cells(s.key_cells, table.key, row),
            Some(s) => self.cells(s.cells, table.columns, row),
            None => Ok(row.iter().map(PgCell::of).collect()),
        }
    }

    /// The values of a keyed table's stored columns (`stored`), from a
    /// row of the projection's `columns`.
    fn cells<'r>(
        &self,
        stored: &[Stored],
        columns: &[&str],
        row: &'r [Cell],
    ) -> Result<Vec<PgCell<'r>>> {
        let source = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| row.get(i))
                .ok_or_else(|| StoreError::Postgres(format!("a row without {name}")))
        };
        let text = |name: &str| match source(name)? {
            Cell::Text(t) => Ok(t.as_str()),
            other => Err(StoreError::Postgres(format!("{name} is {other:?}"))),
        };
        stored
            .iter()
            .map(|s| {
                Ok(match s {
                    Stored::Same(name) => PgCell(Cow::Borrowed(source(name)?)),
                    Stored::DossierKey => {
                        let id = text("dossier_id")?;
                        let key = self.dossiers.get(id).ok_or_else(|| {
                            StoreError::Postgres(format!("no key for dossier {id}"))
                        })?;
                        PgCell(Cow::Owned(Cell::Integer(i64::from(*key))))
                    }
                    Stored::SlotKind => {
                        let (cadence, reason) = (text("cadence")?, text("reason")?);
                        let key = self
                            .slot_kinds
                            .get(cadence)
                            .and_then(|reasons| reasons.get(reason))
                            .ok_or_else(|| {
                                StoreError::Postgres(format!(
                                    "no key for slot kind {cadence} {reason}"
                                ))
                            })?;
                        PgCell(Cow::Owned(Cell::Integer(i64::from(*key))))
                    }
                })
            })
            .collect()
    }
}

/// Deletes every row of a dossier's tables, and its key and digests.
pub(super) async fn delete_dossier_rows(c: &impl GenericClient, id: &str) -> Result<()> {
    for table in rows::DOSSIER_TABLES {
        let sql = match stored_table(table) {
            Some(stored) => format!(
                "DELETE FROM {} WHERE {} = (SELECT key FROM dossier_keys WHERE dossier_id = $1)",
                stored.table.name,
                dossier_column(stored)
            ),
            None => format!("DELETE FROM {} WHERE dossier_id = $1", table.name),
        };
        c.execute(&sql, &[&id]).await?;
    }
    c.execute("DELETE FROM dossier_keys WHERE dossier_id = $1", &[&id])
        .await?;
    Ok(())
}

/// The keys of a batch's dossiers, each given one if it has none, and
/// the table digests of those that have them, read at once. A key is never
/// taken from the identity's sequence for a dossier that has one.
async fn dossier_keys_and_digests(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<(HashMap<String, i32>, HashMap<String, Vec<u8>>)> {
    let add = c
        .prepare_cached(
            "INSERT INTO dossier_keys (dossier_id)
             SELECT DISTINCT id FROM unnest($1::text[]) AS t(id)
             WHERE NOT EXISTS (SELECT 1 FROM dossier_keys k WHERE k.dossier_id = t.id)
             ON CONFLICT (dossier_id) DO NOTHING",
        )
        .await?;
    c.execute(&add, &[&ids]).await?;
    let read = c
        .prepare_cached(
            "SELECT dossier_id, key, digests FROM dossier_keys WHERE dossier_id = ANY($1)",
        )
        .await?;
    let (mut keys, mut digests) = (HashMap::new(), HashMap::new());
    for r in c.query(&read, &[&ids]).await? {
        let id: String = r.try_get(0)?;
        if let Some(d) = r.try_get::<_, Option<Vec<u8>>>(2)? {
            digests.insert(id.clone(), d);
        }
        keys.insert(id, r.try_get(1)?);
    }
    Ok((keys, digests))
}

/// The keys of the kinds (cadence and reason) of the slots a batch
/// writes, each given one if it has none.
async fn slot_kinds(
    c: &impl GenericClient,
    plans: &[DossierPlan<'_>],
) -> Result<HashMap<String, HashMap<String, i32>>> {
    let mut keys: HashMap<String, HashMap<String, i32>> = HashMap::new();
    let at = |column: &str| rows::SLOTS.columns.iter().position(|c| *c == column);
    let (Some(cadence), Some(reason)) = (at("cadence"), at("reason")) else {
        return Ok(keys);
    };
    let mut kinds: HashSet<(&str, &str)> = HashSet::new();
    for (_, tables, digests, _) in plans {
        for (k, (table, rows)) in tables.iter().enumerate() {
            if table.name != rows::SLOTS.name || !digests.changed[k] {
                continue;
            }
            for row in rows {
                if let (Cell::Text(c), Cell::Text(r)) = (&row[cadence], &row[reason]) {
                    kinds.insert((c, r));
                }
            }
        }
    }
    if kinds.is_empty() {
        return Ok(keys);
    }
    let (cadences, reasons): (Vec<&str>, Vec<&str>) = kinds.into_iter().unzip();
    let add = c
        .prepare_cached(
            "INSERT INTO slot_kinds (cadence, reason)
             SELECT t.cadence, t.reason FROM unnest($1::text[], $2::text[]) AS t(cadence, reason)
             WHERE NOT EXISTS (SELECT 1 FROM slot_kinds k
                               WHERE k.cadence = t.cadence AND k.reason = t.reason)
             ON CONFLICT (cadence, reason) DO NOTHING",
        )
        .await?;
    c.execute(&add, &[&cadences, &reasons]).await?;
    let read = c
        .prepare_cached(
            "SELECT k.cadence, k.reason, k.kind FROM slot_kinds k
             JOIN unnest($1::text[], $2::text[]) AS t(cadence, reason)
               ON k.cadence = t.cadence AND k.reason = t.reason",
        )
        .await?;
    for r in c.query(&read, &[&cadences, &reasons]).await? {
        keys.entry(r.try_get(0)?)
            .or_default()
            .insert(r.try_get(1)?, r.try_get(2)?);
    }
    Ok(keys)
}

/// Runs `stmt` once per row of parameters, pipelined on the connection
/// (the statements are sent without waiting for each answer).
async fn execute_each(
    c: &impl GenericClient,
    sql: &str,
    params: impl IntoIterator<Item = Vec<&Cell>>,
) -> Result<()> {
    let stmt = c.prepare_cached(sql).await?;
    let calls = params.into_iter().map(|row| {
        let stmt = &stmt;
        async move {
            let cells: Vec<PgCell<'_>> = row.into_iter().map(PgCell::of).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            c.execute(stmt, &refs).await
        }
    });
    futures_util::future::try_join_all(calls).await?;
    Ok(())
}

/// What must be written to make a dossier's stored rows of a table
/// (`stored`; none for a dossier without rows) exactly `rows`: the rows
/// to upsert, and the keys of stored rows to delete.
fn row_changes<'r>(
    sql: &TableSql,
    table: &Table,
    rows: &'r [Row],
    stored: Option<&[tokio_postgres::Row]>,
) -> Result<(Vec<&'r Row>, Vec<Row>)> {
    let mut stored_as_is = vec![false; rows.len()];
    let mut unwanted: Vec<Row> = Vec::new();
    for r in stored.unwrap_or_default() {
        let stored: Row = (0..table.columns.len())
            .map(|i| cell_at(r, i))
            .collect::<Result<_>>()?;
        let wanted = rows
            .iter()
            .position(|row| sql.key_positions.iter().all(|&i| row[i] == stored[i]));
        match wanted {
            Some(k) => stored_as_is[k] = rows[k] == stored,
            None => unwanted.push(
                sql.key_positions
                    .iter()
                    .map(|&i| stored[i].clone())
                    .collect(),
            ),
        }
    }
    let upserts = rows
        .iter()
        .zip(&stored_as_is)
        .filter(|(_, same)| !**same)
        .map(|(row, _)| row)
        .collect();
    Ok((upserts, unwanted))
}

/// Brings the projection rows of a batch's dossiers in line with their
/// views, writing only the tables whose digests changed and, in them, only
/// the rows that differ. The statements are pipelined on the connection,
/// a few round trips for the whole batch (one per dossier and table would
/// be most of the projector's time). Every key holds its dossier's id, so
/// dossiers never write each other's rows.
pub(super) async fn project_dossiers(
    c: &impl GenericClient,
    dossiers: &[(&DossierView, &[Slot])],
) -> Result<()> {
    if dossiers.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = dossiers.iter().map(|(v, _)| v.id.as_str()).collect();
    let (dossier_keys, stored_digests) = dossier_keys_and_digests(c, &ids).await?;
    let mut statements = Vec::with_capacity(rows::TABLE_COUNT);
    for table in rows::DOSSIER_TABLES {
        let sql = table_sql(table);
        statements.push((
            c.prepare_cached(&sql.select).await?,
            c.prepare_cached(&sql.upsert).await?,
            c.prepare_cached(&sql.delete).await?,
        ));
    }
    // Every dossier of the batch has its row of keys by now.
    let digest_upsert = c
        .prepare_cached("UPDATE dossier_keys SET digests = $2 WHERE dossier_id = $1")
        .await?;
    // Each dossier's tables and digests, and which tables it must write.
    let plans: Vec<DossierPlan<'_>> = dossiers
        .iter()
        .map(|(v, slots)| {
            let tables = rows::dossier_rows(v, slots);
            let stored = stored_digests.get(&v.id).map(Vec::as_slice);
            let digests = rows::Digests::of(&tables, stored);
            (v.id.as_str(), tables, digests, stored.is_none())
        })
        .collect();
    let keys = Keys {
        dossiers: dossier_keys,
        slot_kinds: slot_kinds(c, &plans).await?,
    };
    // Every key of a dossier's tables holds its dossier id (projection
    // version 9), so no two dossiers write one row: a group of distinct
    // dossiers is written at once. A dossier that comes again starts a new
    // group, so its later rows are compared with what the earlier wrote.
    let mut start = 0;
    let mut ids: HashSet<&str> = HashSet::new();
    for (i, (id, ..)) in plans.iter().enumerate() {
        if !ids.insert(id) {
            write_group(c, &statements, &digest_upsert, &keys, &plans[start..i]).await?;
            start = i;
            ids.clear();
            ids.insert(id);
        }
    }
    write_group(c, &statements, &digest_upsert, &keys, &plans[start..]).await
}

/// One dossier's projection rows by table, their digests, and whether it
/// has no rows stored yet.
type DossierPlan<'v> = (
    &'v str,
    Vec<(&'static Table, Vec<Row>)>,
    rows::Digests,
    bool,
);

/// Writes a group of distinct dossiers' changed tables, pipelined: their
/// stored rows read at once, then every upsert, then every delete, then
/// the digests.
async fn write_group(
    c: &impl GenericClient,
    statements: &[(
        tokio_postgres::Statement,
        tokio_postgres::Statement,
        tokio_postgres::Statement,
    )],
    digest_upsert: &tokio_postgres::Statement,
    keys: &Keys,
    plans: &[DossierPlan<'_>],
) -> Result<()> {
    let reads: Vec<_> = plans
        .iter()
        .flat_map(|(id, tables, digests, fresh)| {
            (0..tables.len())
                .filter(move |&k| digests.changed[k] && !fresh)
                .map(move |k| (*id, k))
        })
        .collect();
    let read_rows = futures_util::future::try_join_all(reads.iter().map(|(id, k)| {
        let stmt = &statements[*k].0;
        async move { c.query(stmt, &[id]).await }
    }))
    .await?;
    let mut stored_rows: HashMap<(&str, usize), Vec<tokio_postgres::Row>> =
        reads.into_iter().zip(read_rows).collect();
    let mut upserts: Vec<(&tokio_postgres::Statement, Vec<PgCell<'_>>)> = Vec::new();
    let mut unwanted_keys: Vec<(&Table, usize, Vec<Row>)> = Vec::new();
    let mut deletes: Vec<(&tokio_postgres::Statement, Vec<PgCell<'_>>)> = Vec::new();
    for (id, tables, digests, _) in plans {
        for (k, (table, rows)) in tables.iter().enumerate() {
            if !digests.changed[k] {
                continue;
            }
            let stored = stored_rows.remove(&(*id, k));
            let (changed, unwanted) =
                row_changes(table_sql(table), table, rows, stored.as_deref())?;
            for row in changed {
                upserts.push((&statements[k].1, keys.params(table, false, row)?));
            }
            unwanted_keys.push((table, k, unwanted));
        }
    }
    for (table, k, unwanted) in &unwanted_keys {
        for key in unwanted {
            deletes.push((&statements[*k].2, keys.params(table, true, key)?));
        }
    }
    execute_pipelined(c, &upserts).await?;
    execute_pipelined(c, &deletes).await?;
    let digest_rows: Vec<(&str, &[u8])> = plans
        .iter()
        .filter(|(_, _, d, _)| d.replace_stored)
        .map(|(id, _, d, _)| (*id, d.bytes.as_slice()))
        .collect();
    futures_util::future::try_join_all(
        digest_rows
            .iter()
            .map(|(id, bytes)| async move { c.execute(digest_upsert, &[id, bytes]).await }),
    )
    .await?;
    Ok(())
}

/// Runs each statement with its row of parameters, pipelined on the
/// connection (sent in order without waiting for each answer).
async fn execute_pipelined(
    c: &impl GenericClient,
    ops: &[(&tokio_postgres::Statement, Vec<PgCell<'_>>)],
) -> Result<()> {
    futures_util::future::try_join_all(ops.iter().map(|(stmt, cells)| async move {
        let refs: Vec<&(dyn ToSql + Sync)> =
            cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        c.execute(*stmt, &refs).await
    }))
    .await?;
    Ok(())
}

/// Makes the rows of `table` whose `column` is `value` exactly `rows`.
async fn replace_rows(
    c: &impl GenericClient,
    table: &Table,
    column: &str,
    value: &str,
    rows: &[Row],
) -> Result<()> {
    c.execute(
        &format!("DELETE FROM {} WHERE {column} = $1", table.name),
        &[&value],
    )
    .await?;
    execute_each(
        c,
        &table_sql(table).upsert,
        rows.iter().map(|r| r.iter().collect()),
    )
    .await
}

pub(super) async fn cursor(c: &impl GenericClient) -> Result<u64> {
    Ok(seq_of(
        c.query_one("SELECT cursor FROM projector WHERE id = 1", &[])
            .await?
            .get(0),
    ))
}

pub(super) async fn documents_changed_after(
    c: &impl GenericClient,
    after: u64,
    limit: u32,
) -> Result<(Vec<String>, u64)> {
    let stmt = c
        .prepare_cached("SELECT seq, doc_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
        .await?;
    let mut upto = after;
    let mut docs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in c
        .query(&stmt, &[&seq_param(after), &i64::from(limit)])
        .await?
    {
        upto = seq_of(r.get(0));
        let doc: String = r.get(1);
        if seen.insert(doc.clone()) {
            docs.push(doc);
        }
    }
    Ok((docs, upto))
}

pub(super) async fn settle_snapshots(
    client: &mut Object,
    settled: &[SettledSnapshot],
) -> Result<usize> {
    if settled.is_empty() {
        return Ok(0);
    }
    let update = client
        .prepare_cached(
            "UPDATE documents d SET snapshot = t.snapshot, complete = TRUE, size = t.size
             FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bigint[])
                 AS t(id, snapshot, last_seq, size)
             WHERE d.id = t.id AND d.last_seq = t.last_seq AND NOT d.complete",
        )
        .await?;
    let ids: Vec<&str> = settled.iter().map(|s| s.doc_id.as_str()).collect();
    let snapshots: Vec<Vec<u8>> = settled
        .iter()
        .map(|s| keqing_shared::packed::pack(&s.snapshot))
        .collect();
    let seqs: Vec<i64> = settled.iter().map(|s| seq_param(s.last_seq)).collect();
    let sizes: Vec<i64> = settled.iter().map(|s| s.snapshot.len() as i64).collect();
    Ok(client
        .execute(&update, &[&ids, &snapshots, &seqs, &sizes])
        .await? as usize)
}

/// Writes a batch's projections and moves the cursor from `from` to
/// `upto`, in one transaction, only if the cursor is still at `from`: the
/// compare-and-set that keeps projectors of several processes apart (the
/// second's UPDATE waits for the first's row lock, then finds the cursor
/// moved and writes nothing).
pub(super) async fn save(
    client: &mut Object,
    docs: &[Projected],
    unreadable: &[(String, String)],
    from: u64,
    upto: u64,
) -> Result<bool> {
    let tx = client.transaction().await?;
    let moved = tx
        .execute(
            "UPDATE projector SET cursor = $2 WHERE id = 1 AND cursor = $1",
            &[&seq_param(from), &seq_param(upto)],
        )
        .await?;
    if moved == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    // A dossier erased after this batch was read is not written back
    // (the erasure locked the projector's row, so this sees its tombstone).
    let ids: Vec<String> = docs.iter().map(Projected::doc_id).collect();
    let erased: HashSet<String> = tx
        .query(
            "SELECT DISTINCT doc_id FROM fates WHERE kind = 'erase' AND doc_id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    let dossiers: Vec<(&DossierView, &[Slot])> = docs
        .iter()
        .filter_map(|d| match d {
            Projected::Dossier { view, slots } if !erased.contains(&view.id) => {
                Some((&**view, slots.as_slice()))
            }
            _ => None,
        })
        .collect();
    project_dossiers(&tx, &dossiers).await?;
    for d in docs {
        match d {
            Projected::Dossier { .. } => {}
            Projected::Roster {
                office,
                staff,
                activities,
            } => {
                replace_rows(
                    &tx,
                    &rows::STAFF,
                    "office",
                    office,
                    &rows::staff_rows(office, staff),
                )
                .await?;
                replace_rows(
                    &tx,
                    &rows::ACTIVITIES,
                    "office",
                    office,
                    &rows::activity_rows(office, activities),
                )
                .await?
            }
            Projected::NonPatient {
                log_id,
                office,
                calls,
            } => {
                replace_rows(
                    &tx,
                    &rows::NONPATIENT_CALLS,
                    "log_id",
                    log_id,
                    &rows::nonpatient_rows(log_id, office, calls),
                )
                .await?
            }
        }
    }
    let any_recorded: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM unreadable_documents)", &[])
        .await?
        .get(0);
    if any_recorded {
        let ids: Vec<String> = docs.iter().map(Projected::doc_id).collect();
        tx.execute(
            "DELETE FROM unreadable_documents WHERE doc_id = ANY($1)",
            &[&ids],
        )
        .await?;
    }
    if !unreadable.is_empty() {
        let record = tx
            .prepare_cached(
                "INSERT INTO unreadable_documents (doc_id, office, reason, seq, since)
                 VALUES ($1,
                         coalesce((SELECT office FROM documents WHERE id = $1),
                                  (SELECT office FROM changes WHERE doc_id = $1 LIMIT 1), ''),
                         $2, $3, $4)
                 ON CONFLICT (doc_id) DO UPDATE SET reason = EXCLUDED.reason, seq = EXCLUDED.seq",
            )
            .await?;
        let now = keqing_host::now_cst_text();
        for (doc_id, reason) in unreadable {
            tx.execute(&record, &[doc_id, reason, &seq_param(upto), &now])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn reset(client: &mut Object) -> Result<()> {
    let tx = client.transaction().await?;
    // The stand-ins of erased dossiers stay (no document derives them
    // again; see `keqing_projection::clear`): set aside, then put back,
    // which counts them in the tallies again by the insert triggers.
    let stand_in = format!("'{}%'", keqing_shared::lifecycle::ERASED_PREFIX);
    let kept = |t: &Table| match stored_table(t) {
        Some(s) => format!(
            "SELECT r.* FROM {} r
             WHERE r.{} IN (SELECT key FROM dossier_keys WHERE dossier_id LIKE {stand_in})",
            s.table.name,
            dossier_column(s)
        ),
        None => format!("SELECT * FROM {} WHERE dossier_id LIKE {stand_in}", t.name),
    };
    let mut keep = rows::DOSSIER_TABLES
        .iter()
        .map(|t| (stored_name(t), kept(t)))
        .map(|(t, select)| format!("CREATE TEMP TABLE keep_{t} ON COMMIT DROP AS {select};"))
        .collect::<String>();
    let put_back = rows::DOSSIER_TABLES
        .iter()
        .map(|t| stored_name(t))
        .map(|t| format!("INSERT INTO {t} SELECT * FROM keep_{t};"))
        .collect::<String>();
    // TRUNCATE fires no row triggers: the derived tables go with the rest.
    // Every dossier keeps its key (a rebuild takes none from the
    // sequence); all but the stand-ins lose their digests, so the
    // projector writes their rows again.
    let tables: Vec<&str> = rows::dumped_tables().map(stored_name).collect();
    keep.push_str(&format!(
        "TRUNCATE {};
         UPDATE dossier_keys SET digests = NULL
             WHERE digests IS NOT NULL AND dossier_id NOT LIKE {stand_in};
         DELETE FROM unreadable_documents;
         UPDATE projector SET cursor = 0 WHERE id = 1;",
        tables.join(", ")
    ));
    keep.push_str(&put_back);
    tx.batch_execute(&keep).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn dump(c: &impl GenericClient) -> Result<String> {
    let mut out = String::new();
    for table in rows::dumped_tables() {
        let stored = c
            .query(
                &format!("SELECT {} FROM {}", table.columns.join(", "), table.name),
                &[],
            )
            .await?;
        let rows: Vec<Row> = stored
            .iter()
            .map(|r| (0..table.columns.len()).map(|i| cell_at(r, i)).collect())
            .collect::<Result<_>>()?;
        for line in rows::dump_lines(table, rows) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    Ok(out)
}

pub(super) async fn unreadable_documents(
    c: &impl GenericClient,
    office: Option<&str>,
) -> Result<Vec<UnreadableDocument>> {
    let rows = c
        .query(
            "SELECT doc_id, office, reason, seq, since FROM unreadable_documents
             WHERE $1::text IS NULL OR office = $1 ORDER BY office, doc_id",
            &[&office],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| UnreadableDocument {
            doc_id: r.get(0),
            office: r.get(1),
            reason: r.get(2),
            seq: seq_of(r.get(3)),
            since: r.get(4),
        })
        .collect())
}

pub(super) async fn last_call_day(
    c: &impl GenericClient,
    office: Option<&str>,
) -> Result<Option<NaiveDate>> {
    let at: Option<String> = c
        .query_one(
            "SELECT max(at) FROM calls WHERE $1::text IS NULL OR office = $1",
            &[&office],
        )
        .await?
        .get(0);
    Ok(at.and_then(|t| read_stored_date(t.get(..10)?)))
}

// The time columns are read borrowed from the row (a report reads tens of
// thousands of them).

/// A stored time that must read (a projection row holds only what the
/// projector wrote).
fn time(r: &tokio_postgres::Row, i: usize) -> Result<NaiveDateTime> {
    let s: &str = r.try_get(i)?;
    read_stored_datetime(s).ok_or_else(|| StoreError::Postgres(format!("not a stored time: {s}")))
}

fn opt_time(r: &tokio_postgres::Row, i: usize) -> Result<Option<NaiveDateTime>> {
    r.try_get::<_, Option<&str>>(i)?
        .map(|s| {
            read_stored_datetime(s)
                .ok_or_else(|| StoreError::Postgres(format!("not a stored time: {s}")))
        })
        .transpose()
}

fn opt_date(r: &tokio_postgres::Row, i: usize) -> Result<Option<NaiveDate>> {
    r.try_get::<_, Option<&str>>(i)?
        .map(|s| {
            read_stored_date(s)
                .ok_or_else(|| StoreError::Postgres(format!("not a stored date: {s}")))
        })
        .transpose()
}

fn count(r: &tokio_postgres::Row, i: usize) -> Result<u64> {
    Ok(r.try_get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
}

/// The rows of a report of the days `from..=to` (see
/// `keqing_projection::report_rows`, the same facts from SQLite), read in
/// one `REPEATABLE READ` snapshot so that a projector saving a batch
/// meanwhile cannot make the facts and the tallies disagree.
///
/// The dozen queries go out at once (tokio-postgres pipelines the queries
/// a connection is given concurrently): the server works through the next
/// while this side decodes the rows of the last, instead of a round trip
/// and an idle server between each.
pub(super) async fn report_rows(
    c: &impl GenericClient,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ReportRows> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let read = report_rows_in_snapshot(c, office, from, to).await;
    // Ended either way (a failed query aborts it: rolled back), so the
    // pooled connection goes back outside a transaction.
    let end = c
        .batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await;
    let rows = read?;
    end?;
    Ok(rows)
}

async fn report_rows_in_snapshot(
    c: &impl GenericClient,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ReportRows> {
    let midnight = |d: NaiveDate| fmt_datetime(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    let start = midnight(from);
    let end = midnight(to + chrono::Duration::days(1));
    let last_day = fmt_date(to);
    let range: [&(dyn ToSql + Sync); 3] = [&start, &end, &office];
    let on_last_day: [&(dyn ToSql + Sync); 2] = [&last_day, &office];
    let in_office: [&(dyn ToSql + Sync); 1] = [&office];
    let calls = selected(
        c,
        "SELECT office, dossier_id, at, staff, source, disease FROM calls
         WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(CallFact {
                office: r.try_get(0)?,
                dossier: r.try_get(1)?,
                at: time(r, 2)?,
                staff: r.try_get(3)?,
                source: r.try_get(4)?,
                disease: r.try_get(5)?,
            })
        },
    );
    let visits = selected(
        c,
        "SELECT office, dossier_id, at, staff, purchased, reason FROM visits
         WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(VisitFact {
                office: r.try_get(0)?,
                dossier: r.try_get(1)?,
                at: time(r, 2)?,
                staff: r.try_get(3)?,
                purchased: r.try_get::<_, i64>(4)? != 0,
                reason: r.try_get(5)?,
            })
        },
    );
    let purchases = selected(
        c,
        "SELECT office, dossier_id, at, staff, amount_fen, nth, prev_runout FROM purchases
         WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(PurchaseFact {
                office: r.try_get(0)?,
                dossier: r.try_get(1)?,
                at: time(r, 2)?,
                staff: r.try_get(3)?,
                amount_fen: r.try_get(4)?,
                order: PurchaseOrder {
                    nth: u32::try_from(r.try_get::<_, i64>(5)?).unwrap_or(u32::MAX),
                    prev_runout: opt_date(r, 6)?,
                },
            })
        },
    );
    // Read from the day tallies: the report only counts follow-ups, by
    // office, staff and day.
    let followups = selected(
        c,
        "SELECT office, staff, day, done, on_time FROM followup_tallies
         WHERE day >= left($1, 10) AND day < left($2, 10) AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(FollowUpTally {
                office: r.try_get(0)?,
                staff: r.try_get(1)?,
                day: opt_date(r, 2)?.ok_or_else(|| {
                    StoreError::Postgres("a follow-up tally without a day".into())
                })?,
                done: count(r, 3)?,
                on_time: count(r, 4)?,
            })
        },
    );
    let nonpatient = selected(
        c,
        "SELECT office, at, staff, kind FROM nonpatient_calls
         WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(NonPatientFact {
                office: r.try_get(0)?,
                at: time(r, 1)?,
                staff: r.try_get(2)?,
                kind: r.try_get(3)?,
            })
        },
    );
    // Counted here (`keqing_projection::report_sql`'s counts, the same
    // definitions): every flag and problem ever, more each year.
    let problems = selected(
        c,
        "SELECT office, count(*) FILTER (WHERE at >= $1),
                count(*) FILTER (WHERE resolved_at IS NULL OR resolved_at >= $2),
                count(*) FILTER (WHERE resolved_at < $2)
         FROM problems
         WHERE at < $2 AND (resolved_at IS NULL OR resolved_at >= $1)
           AND ($3::text IS NULL OR office = $3)
         GROUP BY office",
        &range,
        |r| {
            Ok(MarkCounts {
                office: r.try_get(0)?,
                problems_opened: count(r, 1)?,
                problems_open: count(r, 2)?,
                problems_resolved: count(r, 3)?,
                ..Default::default()
            })
        },
    );
    let typical = selected(
        c,
        "SELECT office, count(*), count(*) FILTER (WHERE typical_at >= $1) FROM patients
         WHERE typical = 1 AND typical_at < $2 AND ($3::text IS NULL OR office = $3)
         GROUP BY office",
        &range,
        |r| {
            Ok(MarkCounts {
                office: r.try_get(0)?,
                typical: count(r, 1)?,
                typical_new: count(r, 2)?,
                ..Default::default()
            })
        },
    );
    let categories = selected(
        c,
        "SELECT office, category, sum(patients)::bigint,
                coalesce(sum(patients) FILTER (WHERE category <> 'stopped'
                    AND lapses_on <> '' AND lapses_on <= $1), 0)::bigint,
                sum(typical)::bigint, sum(problem)::bigint
         FROM category_tallies
         WHERE ($2::text IS NULL OR office = $2)
         GROUP BY office, category",
        &on_last_day,
        |r| {
            Ok(CategoryTally {
                office: r.try_get(0)?,
                category: r.try_get(1)?,
                count: count(r, 2)?,
                lapsed: count(r, 3)?,
                typical: count(r, 4)?,
                problem: count(r, 5)?,
            })
        },
    );
    let events = selected(
        c,
        "SELECT office, dossier_id, at, staff, kind, activity, patient_since FROM staff_events
         WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR office = $3)",
        &range,
        |r| {
            Ok(keqing_projection::staff_event_from(
                r.try_get(0)?,
                r.try_get(1)?,
                time(r, 2)?,
                r.try_get(3)?,
                &r.try_get::<_, String>(4)?,
                r.try_get(5)?,
                opt_time(r, 6)?,
            ))
        },
    );
    let roles = selected(
        c,
        "SELECT office, name, role FROM staff WHERE ($1::text IS NULL OR office = $1)",
        &in_office,
        |r| {
            Ok(keqing_projection::role_from(
                r.try_get(0)?,
                r.try_get(1)?,
                &r.try_get::<_, String>(2)?,
            ))
        },
    );
    let activities = selected(
        c,
        "SELECT id, office, name, kind, starts, ends, source FROM activities
         WHERE ($1::text IS NULL OR office = $1)",
        &in_office,
        |r| {
            Ok(keqing_projection::activity_from(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                &r.try_get::<_, String>(3)?,
                (&r.try_get::<_, String>(4)?, &r.try_get::<_, String>(5)?),
                r.try_get(6)?,
            ))
        },
    );
    let (
        (calls, visits, purchases, followups, nonpatient, problems),
        (typical, slot_counts, categories, events, roles, activities),
    ) = futures_util::try_join!(
        async {
            futures_util::try_join!(calls, visits, purchases, followups, nonpatient, problems)
        },
        async {
            futures_util::try_join!(
                typical,
                slot_counts(c, office, from, to),
                categories,
                events,
                roles,
                activities
            )
        },
    )?;
    Ok(ReportRows {
        calls,
        visits,
        purchases,
        followups,
        nonpatient,
        marks: keqing_projection::fold_mark_counts(typical, problems),
        slot_counts,
        categories: fold_category_counts(categories),
        // Rows `staff_event_from` and `activity_from` cannot read (a kind
        // this build does not know) are left out, as on SQLite.
        events: events.into_iter().flatten().collect(),
        roles,
        activities: activities.into_iter().flatten().collect(),
        ..ReportRows::default()
    })
}

/// The rows `sql` selects with `params` (its statement prepared once per
/// connection), each read by `row`. Started together, such reads go out
/// pipelined on the one connection.
async fn selected<T>(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    row: impl Fn(&tokio_postgres::Row) -> Result<T>,
) -> Result<Vec<T>> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await?.iter().map(row).collect()
}

/// Due and on-time counts of the range from the flags fixed at projection;
/// overdue at the end of `to`: slots whose open span `(deadline,
/// settled_on)` holds it, read from the spans' GiST index.
async fn slot_counts(
    c: &impl GenericClient,
    office: Option<&str>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<SlotCounts>> {
    let (from, to) = (fmt_date(from), fmt_date(to));
    let range: [&(dyn ToSql + Sync); 3] = [&from, &to, &office];
    let on_last_day: [&(dyn ToSql + Sync); 2] = [&to, &office];
    let due = selected(
        c,
        "SELECT office, sum(due)::bigint, sum(due_on_time)::bigint,
                sum(not_visited_due)::bigint, sum(not_visited_on_time)::bigint
         FROM slot_tallies
         WHERE deadline >= $1 AND deadline <= $2 AND ($3::text IS NULL OR office = $3)
         GROUP BY office",
        &range,
        |r| {
            Ok(SlotCounts {
                office: r.try_get(0)?,
                due: count(r, 1)?,
                due_on_time: count(r, 2)?,
                not_visited_due: count(r, 3)?,
                not_visited_on_time: count(r, 4)?,
                overdue: 0,
            })
        },
    );
    // `deadline < day < settled_on` (schema migration 16).
    let overdue = selected(
        c,
        "SELECT office, count(*) FROM slots
         WHERE keqing_day_span(deadline, settled_on, '()') @> $1::text
           AND settled_on COLLATE \"C\" > deadline COLLATE \"C\"
           AND due_from <= $1 AND ($2::text IS NULL OR office = $2)
         GROUP BY office",
        &on_last_day,
        |r| Ok((r.try_get::<_, String>(0)?, count(r, 1)?)),
    );
    let (due, overdue) = futures_util::try_join!(due, overdue)?;
    Ok(fold_slot_counts(due, overdue))
}

/// A patient as duplicate lists show one.
async fn patient_row(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<keqing_projection::patients::PatientRow>> {
    let stmt = c
        .prepare_cached(
            "SELECT p.dossier_id, p.office, p.name, p.age,
                    (SELECT string_agg(ph.phone, ' ' ORDER BY ph.phone) FROM patient_phones ph
                     WHERE ph.dossier_id = p.dossier_id),
                    p.diseases, p.merged_into
             FROM patients p WHERE p.dossier_id = $1",
        )
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let phones: Option<String> = r.try_get(4)?;
    Ok(Some(keqing_projection::patients::PatientRow {
        dossier_id: r.try_get(0)?,
        office: r.try_get(1)?,
        name: r.try_get(2)?,
        age: r.try_get(3)?,
        phones: phones
            .map(|p| p.split(' ').map(str::to_string).collect())
            .unwrap_or_default(),
        diseases: r.try_get(5)?,
        merged_into: r.try_get(6)?,
    }))
}

/// Pairs of live dossiers that may be one patient (the rule of
/// `keqing_projection::patients::duplicate_candidates`).
pub(super) async fn duplicate_candidates(
    c: &impl GenericClient,
) -> Result<Vec<keqing_projection::patients::DuplicateCandidate>> {
    let mut pairs: Vec<(String, String, String)> = c
        .query(
            "SELECT a.dossier_id, b.dossier_id, a.phone
             FROM patient_phones a
             JOIN patient_phones b ON b.phone = a.phone AND b.dossier_id > a.dossier_id
             JOIN patients pa ON pa.dossier_id = a.dossier_id
             JOIN patients pb ON pb.dossier_id = b.dossier_id
             WHERE pa.merged_into IS NULL AND pb.merged_into IS NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                format!("同一电话 {}", r.get::<_, String>(2)),
            )
        })
        .collect();
    let by_name = c
        .query(
            "SELECT a.dossier_id, b.dossier_id
             FROM patients a
             JOIN patients b ON b.name = a.name AND b.age BETWEEN a.age - 1 AND a.age + 1
                  AND b.office = a.office AND b.dossier_id > a.dossier_id
             WHERE a.merged_into IS NULL AND b.merged_into IS NULL",
            &[],
        )
        .await?;
    for r in by_name {
        let p: (String, String) = (r.get(0), r.get(1));
        if !pairs.iter().any(|q| q.0 == p.0 && q.1 == p.1) {
            pairs.push((p.0, p.1, "同名同省 年龄相近".to_string()));
        }
    }
    let mut out = Vec::new();
    for (a, b, reason) in pairs {
        if let (Some(a), Some(b)) = (patient_row(c, &a).await?, patient_row(c, &b).await?) {
            out.push(keqing_projection::patients::DuplicateCandidate { a, b, reason });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::timestamp_micros;

    #[test]
    fn stored_times_become_postgres_timestamps_and_impossible_ones_negative_infinity() {
        assert_eq!(timestamp_micros("2000-01-01T00:00:00"), 0);
        assert_eq!(timestamp_micros("2000-01-02T00:00:01"), 86_401_000_000);
        assert_eq!(timestamp_micros("1999-12-31T23:59:59"), -1_000_000);
        // The earliest year PostgreSQL holds whole (4713 BC) and the one before it.
        assert!(timestamp_micros("-4712-01-01T00:00:00") > i64::MIN);
        assert_eq!(timestamp_micros("-5000-01-01T00:00:00"), i64::MIN);
        assert_eq!(timestamp_micros("not a time"), i64::MIN);
    }
}
