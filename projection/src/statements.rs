//! The statements that write a projection table's rows, for any SQL
//! store: the same text for SQLite and PostgreSQL but for how parameters
//! are written (`?1` or `$1`). Each store keeps its own built copies.

use crate::rows::Table;

/// A projection table's statements.
pub struct TableSql {
    // The table's name, columns and key, for [`TableSql::update`].
    name: &'static str,
    columns: &'static [&'static str],
    key: &'static [&'static str],
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
        TableSql {
            name,
            columns: table.columns,
            key: table.key,
            select: format!(
                "SELECT {cols} FROM {name} WHERE dossier_id = {}",
                parameter(1)
            ),
            upsert,
            delete: format!(
                "DELETE FROM {name} WHERE {}",
                key_condition(table.key, parameter, 1)
            ),
            key_positions: table.key_positions(),
        }
    }

    /// An update of only the columns at positions `changed` (in `columns`
    /// order) of the row with the key: their values first, then the
    /// key's. The upsert names every column, and SQLite rewrites the entry
    /// of every index over a column an UPDATE names, changed or not: a
    /// patient's new follow-up date would move its name index entry out
    /// and back (a page at a random place of a large store each).
    pub fn update(&self, changed: &[usize], parameter: fn(usize) -> String) -> String {
        let set = changed
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = {}", self.columns[i], parameter(n + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {} SET {set} WHERE {}",
            self.name,
            key_condition(self.key, parameter, changed.len() + 1)
        )
    }
}

/// `k1 = p AND k2 = p+1 …` for the key columns, parameters from `first`.
fn key_condition(key: &[&str], parameter: fn(usize) -> String, first: usize) -> String {
    key.iter()
        .enumerate()
        .map(|(n, k)| format!("{k} = {}", parameter(first + n)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
