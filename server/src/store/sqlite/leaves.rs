//! Room left in the leaves of the tables a day inserts into, after the
//! file is rebuilt.
//!
//! SQLite has no fill factor: VACUUM writes every B-tree with its leaves
//! full (99 %), where inserts at random places leave them 88-90 %
//! full. A day of office work adds a follow-up (now and then a visit or
//! a purchase) to dossiers picked across the whole store, each into its
//! dossier's key range, and grows their patient rows. Into a full leaf,
//! every such insert splits it: the leaf, its two neighbours, a new page
//! and their parent written where one page would do. At 1M dossiers the
//! day right after a vacuum wrote 67 122 pages for 8 840 documents,
//! against 35 537 with room left in these tables' leaves (BENCHMARKS.md,
//! "A vacuum leaves every leaf full"). PostgreSQL leaves its B-tree
//! leaves a tenth empty by itself (fillfactor 90).
//!
//! So after VACUUM those tables are written again in place, a range of
//! rows at a time: read, deleted, inserted again in key order (not the
//! bulk path VACUUM takes), which leaves the leaves about 90 % full and
//! takes back the pages the range freed: the file grows by the room
//! left (a tenth of these tables), not by a second copy of them. Their
//! rows, keys and tallies are as they were.

use crate::store::Result;
use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, TransactionBehavior, params_from_iter};

/// The projection tables a day inserts into (or grows the rows of) at
/// random places of their key: each keyed by its dossier first, without
/// a rowid.
const TABLES: [&str; 4] = ["followups", "purchases", "visits", "patients"];

/// Rows rewritten at a time: the pages their deletion frees are the ones
/// their insertion takes again, and the memory is bounded.
const ROWS_AT_A_TIME: usize = 2_000;

/// Rewrites each of [`TABLES`] in key order, one transaction a table.
pub(super) fn leave_room(conn: &Connection) -> Result<()> {
    for table in TABLES {
        rewrite_in_key_order(conn, table, ROWS_AT_A_TIME)?;
    }
    Ok(())
}

fn rewrite_in_key_order(conn: &Connection, table: &str, rows_at_a_time: usize) -> Result<()> {
    // The columns in order, each with its place in the primary key (0: none).
    let described: Vec<(String, i64)> = conn
        .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let columns: Vec<String> = described.iter().map(|(name, _)| name.clone()).collect();
    // The key columns' positions among the columns, in key order.
    let mut key_at: Vec<usize> = (0..described.len())
        .filter(|&i| described[i].1 > 0)
        .collect();
    key_at.sort_by_key(|&i| described[i].1);
    if key_at.is_empty() {
        return Ok(());
    }
    let key: Vec<String> = key_at.iter().map(|&i| columns[i].clone()).collect();
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let params = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (key_list, column_list, k) = (quoted(&key), quoted(&columns), key.len());
    let first =
        format!("SELECT {column_list} FROM \"{table}\" ORDER BY {key_list} LIMIT {rows_at_a_time}");
    let next = format!(
        "SELECT {column_list} FROM \"{table}\" WHERE ({key_list}) > ({}) \
         ORDER BY {key_list} LIMIT {rows_at_a_time}",
        params(1, k)
    );
    let delete = format!(
        "DELETE FROM \"{table}\" WHERE ({key_list}) BETWEEN ({}) AND ({})",
        params(1, k),
        params(k + 1, k)
    );
    let insert = format!(
        "INSERT INTO \"{table}\" ({column_list}) VALUES ({})",
        params(1, columns.len())
    );
    let key_of = |row: &[Value]| key_at.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();

    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // The table's triggers keep tallies of its rows: deleted and inserted
    // again, each row would be counted out and back in. They are taken
    // off for the rewrite and put back as they were, in its transaction.
    let triggers: Vec<(String, String)> = tx
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER \"{name}\""))?;
    }
    let mut after: Option<Vec<Value>> = None;
    loop {
        let rows: Vec<Vec<Value>> = {
            let mut read = tx.prepare_cached(if after.is_some() { &next } else { &first })?;
            let mut rows = read.query(params_from_iter(after.iter().flatten()))?;
            let mut out = Vec::with_capacity(rows_at_a_time);
            while let Some(row) = rows.next()? {
                out.push(
                    (0..columns.len())
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<rusqlite::Result<_>>()?,
                );
            }
            out
        };
        let (Some(low), Some(high)) = (rows.first(), rows.last()) else {
            break;
        };
        let (low, high) = (key_of(low), key_of(high));
        tx.prepare_cached(&delete)?
            .execute(params_from_iter(low.iter().chain(high.iter())))?;
        let mut put = tx.prepare_cached(&insert)?;
        for row in &rows {
            put.execute(params_from_iter(row.iter()))?;
        }
        after = Some(high);
    }
    for (_, sql) in &triggers {
        tx.execute_batch(sql)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The share of the leaf pages' bytes in use, from `dbstat`.
    pub(in crate::store::sqlite) fn leaf_fill(conn: &Connection, table: &str) -> f64 {
        conn.query_row(
            "SELECT sum(pgsize - unused) * 1.0 / sum(pgsize) FROM dbstat
             WHERE name = ?1 AND pagetype = 'leaf'",
            [table],
            |r| r.get(0),
        )
        .expect("dbstat")
    }

    /// Every row a query answers, each as its columns' values.
    pub(in crate::store::sqlite) fn dump(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
        let mut s = conn.prepare(sql).expect("prepare");
        let n = s.column_count();
        s.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    /// A store-shaped table with a trigger keeping a tally, filled with
    /// rows at random places of its key, then packed by VACUUM: after
    /// the rewrite its leaves have room (as inserts left them), its rows
    /// and the tally are unchanged, the trigger is back, and the file
    /// grew by the room, not by a second copy of the table.
    #[test]
    fn a_rewrite_in_key_order_leaves_room_and_changes_no_row() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = Connection::open(dir.path().join("t.sqlite")).expect("open");
        conn.execute_batch(
            "CREATE TABLE followups (id TEXT NOT NULL, dossier_id TEXT NOT NULL,
                 at TEXT NOT NULL, staff TEXT NOT NULL, on_time INTEGER NOT NULL,
                 PRIMARY KEY (dossier_id, id)) WITHOUT ROWID;
             CREATE TABLE tallies (staff TEXT PRIMARY KEY, done INTEGER NOT NULL);
             CREATE TRIGGER tally AFTER INSERT ON followups BEGIN
                 INSERT INTO tallies VALUES (new.staff, 1)
                 ON CONFLICT DO UPDATE SET done = done + 1;
             END;
             CREATE TRIGGER untally AFTER DELETE ON followups BEGIN
                 UPDATE tallies SET done = done - 1 WHERE staff = old.staff;
             END;",
        )
        .expect("schema");
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tx = conn.unchecked_transaction().expect("tx");
        for n in 0..20_000 {
            tx.execute(
                "INSERT INTO followups VALUES (?1, ?2, '2026-12-01T09:00:00', ?3, ?4)",
                rusqlite::params![
                    format!("{:016x}", next()),
                    format!("dossier-{:012}", next() % 5_000),
                    ["赵敏", "王医生", "李芳"][n % 3],
                    (n % 2) as i64
                ],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        conn.execute_batch("VACUUM").expect("vacuum");
        let rows = "SELECT * FROM followups ORDER BY dossier_id, id";
        let tallies = "SELECT * FROM tallies ORDER BY staff";
        let (rows_before, tallies_before) = (dump(&conn, rows), dump(&conn, tallies));
        let pages = |c: &Connection| -> i64 {
            c.query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("page_count")
        };
        let (packed, pages_before) = (leaf_fill(&conn, "followups"), pages(&conn));
        assert!(packed > 0.97, "VACUUM packs the leaves: {packed}");

        rewrite_in_key_order(&conn, "followups", 500).expect("rewrite");

        let roomy = leaf_fill(&conn, "followups");
        assert!(roomy < 0.93, "leaves left room: {roomy} (packed {packed})");
        assert_eq!(dump(&conn, rows), rows_before);
        assert_eq!(dump(&conn, tallies), tallies_before);
        let grown = pages(&conn) - pages_before;
        assert!(
            grown * 5 < pages_before,
            "the file grew by {grown} of {pages_before} pages"
        );
        conn.execute(
            "INSERT INTO followups VALUES ('x', 'dossier-x', '2026-12-02T09:00:00', '李芳', 1)",
            [],
        )
        .expect("insert");
        let done: i64 = conn
            .query_row("SELECT done FROM tallies WHERE staff = '李芳'", [], |r| {
                r.get(0)
            })
            .expect("tally");
        let before: i64 = tallies_before
            .iter()
            .find(|r| r[0] == Value::Text("李芳".into()))
            .map(|r| match r[1] {
                Value::Integer(n) => n,
                _ => 0,
            })
            .expect("a tally");
        assert_eq!(done, before + 1, "the trigger is back");
    }
}
