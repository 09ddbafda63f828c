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

impl TableSql {
    /// The statements of `table`, parameter `i` (from 1) written by
    /// `parameter`.
    pub fn new(table: &Table, parameter: fn(usize) -> String) -> TableSql {
        let name = table.name;
        let cols = table.columns.join(", ");
        let marks = (1..=table.columns.len())
            .map(parameter)
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
                table.key.join(", "),
                list(name),
                list("excluded")
            )
        };
        let cond = table
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = {}", parameter(i + 1)))
            .collect::<Vec<_>>()
            .join(" AND ");
        TableSql {
            select: format!(
                "SELECT {cols} FROM {name} WHERE dossier_id = {}",
                parameter(1)
            ),
            upsert,
            delete: format!("DELETE FROM {name} WHERE {cond}"),
            key_positions: table.key_positions(),
        }
    }
}
