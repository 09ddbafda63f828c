//! The statements that write a projection table's rows, for any SQL
//! store: the same text for SQLite and PostgreSQL but for how parameters
//! are written (`?1` or `$1`). Each store keeps its own built copies.

use crate::rows::Table;

/// A projection table's statements.
pub struct TableSql {
    /// Every column of a dossier's rows, in `columns` order.
    pub select: String,
    /// Insert, or update the row whose key exists; a row that already
    /// holds these values is not written again.
    pub upsert: String,
    /// Delete by key.
    pub delete: String,
    /// Positions of the key columns in `columns`.
    pub key_positions: Vec<usize>,
}

/// How a store keeps a table's rows when not as the table's own columns
/// under its name: in `table`, with the dossier's id (`dossier_id`) held
/// as a key of it in column `dossier_column`, which `key_of` gives from
/// the id's parameter (PostgreSQL's `slot_rows` and `followup_rows`).
pub struct KeyedStorage {
    pub table: &'static str,
    pub dossier_column: &'static str,
    pub key_of: fn(&str) -> String,
}

impl TableSql {
    /// The statements of `table`, parameter `i` (from 1) written by
    /// `parameter`.
    pub fn new(table: &Table, parameter: fn(usize) -> String) -> TableSql {
        Self::build(table, parameter, None)
    }

    /// The same for a table kept as `storage` says. Its dossier's rows are
    /// still read by `dossier_id` from `table.name` (a view, there), and
    /// every statement takes the same parameters, the id included.
    pub fn keyed(
        table: &Table,
        parameter: fn(usize) -> String,
        storage: &KeyedStorage,
    ) -> TableSql {
        Self::build(table, parameter, Some(storage))
    }

    fn build(
        table: &Table,
        parameter: fn(usize) -> String,
        storage: Option<&KeyedStorage>,
    ) -> TableSql {
        let name = storage.map_or(table.name, |s| s.table);
        let column = |c: &'static str| match storage {
            Some(s) if c == "dossier_id" => s.dossier_column,
            _ => c,
        };
        let value = |c: &str, i: usize| match storage {
            Some(s) if c == "dossier_id" => (s.key_of)(&parameter(i)),
            _ => parameter(i),
        };
        let cols = table
            .columns
            .iter()
            .map(|c| column(c))
            .collect::<Vec<_>>()
            .join(", ");
        let marks = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| value(c, i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let rest = table.non_key_columns();
        let upsert = if rest.is_empty() {
            format!("INSERT INTO {name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING")
        } else {
            let list = |prefix: &str| {
                rest.iter()
                    .map(|c| format!("{prefix}.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let set = rest
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {name} ({cols}) VALUES ({marks}) ON CONFLICT ({}) DO UPDATE SET {set}
                 WHERE ({}) IS DISTINCT FROM ({})",
                table
                    .key
                    .iter()
                    .map(|c| column(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                list(name),
                list("excluded")
            )
        };
        let cond = table
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} = {}", column(k), value(k, i + 1)))
            .collect::<Vec<_>>()
            .join(" AND ");
        TableSql {
            select: format!(
                "SELECT {} FROM {} WHERE dossier_id = {}",
                table.columns.join(", "),
                table.name,
                parameter(1)
            ),
            upsert,
            delete: format!("DELETE FROM {name} WHERE {cond}"),
            key_positions: table.key_positions(),
        }
    }
}
