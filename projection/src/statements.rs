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

/// A column a store keeps in place of some of a table's columns (`from`):
/// a key of their values in a table of its own, the expression `key_of`
/// gives from their parameters (PostgreSQL's dossier and slot-kind keys).
pub struct KeyColumn {
    pub name: &'static str,
    pub from: &'static [&'static str],
    pub key_of: fn(&[String]) -> String,
}

/// How a store keeps a table's rows when not as the table's own columns
/// under its name: in `table`, some columns replaced by `keys`.
pub struct KeyedStorage {
    pub table: &'static str,
    pub keys: &'static [KeyColumn],
}

impl KeyedStorage {
    /// The key column that stands for `column`, if one does.
    pub fn key_for(&self, column: &str) -> Option<&KeyColumn> {
        self.keys.iter().find(|k| k.from.contains(&column))
    }
}

impl TableSql {
    /// The statements of `table`, parameter `i` (from 1) written by
    /// `parameter`.
    pub fn new(table: &Table, parameter: fn(usize) -> String) -> TableSql {
        Self::build(table, parameter, None)
    }

    /// The same for a table kept as `storage` says. Its dossier's rows are
    /// still read by `dossier_id` from `table.name` (a view, there), and
    /// every statement takes the same parameters as [`TableSql::new`]'s.
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
        // The stored columns standing for `cols` (their parameters in
        // that order), each with the value it takes.
        let stored = |cols: &[&'static str]| -> Vec<(&'static str, String)> {
            let param = |c: &str| {
                let at = cols.iter().position(|x| *x == c);
                at.map_or_else(|| "NULL".to_string(), |i| parameter(i + 1))
            };
            let mut out = Vec::new();
            for c in cols {
                match storage.and_then(|s| s.key_for(c)) {
                    Some(k) if k.from.first() == Some(c) => {
                        let params: Vec<String> = k.from.iter().map(|f| param(f)).collect();
                        out.push((k.name, (k.key_of)(&params)));
                    }
                    Some(_) => {}
                    None => out.push((*c, param(c))),
                }
            }
            out
        };
        let names =
            |cols: &[(&str, String)]| cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let all = stored(table.columns);
        let key = stored(table.key);
        let rest: Vec<&str> = stored(&table.non_key_columns())
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let marks = all
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let upsert = if rest.is_empty() {
            format!(
                "INSERT INTO {name} ({}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                names(&all)
            )
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
                "INSERT INTO {name} ({}) VALUES ({marks}) ON CONFLICT ({}) DO UPDATE SET {set}
                 WHERE ({}) IS DISTINCT FROM ({})",
                names(&all),
                names(&key),
                list(name),
                list("excluded")
            )
        };
        let cond = key
            .iter()
            .map(|(c, v)| format!("{c} = {v}"))
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
