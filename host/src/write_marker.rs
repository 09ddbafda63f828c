//! A marker of open write transactions, for the crash tests (and anyone
//! asking what a killed process was doing).
//!
//! With `KEQING_WRITE_MARKER=FILE` in its environment, every SQLite
//! connection the process opens appends `begin N` to FILE when a
//! transaction makes its first change and `end N` when it commits or rolls
//! back (N numbers the process's connections). A process killed while the
//! file's last line for one of its connections is `begin` died holding an
//! uncommitted write. Unset (the default), no hook is installed and
//! nothing costs. SQLite does not report changes to `WITHOUT ROWID` tables
//! or a `DELETE` of a whole table to the hook, so a transaction doing only
//! those goes unmarked: the marker can under-count open writes, never
//! invent one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The environment variable naming the marker file.
pub const WRITE_MARKER_ENV: &str = "KEQING_WRITE_MARKER";

/// Installs the marker's hooks on `conn` when [`WRITE_MARKER_ENV`] is set.
pub fn watch_writes(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    static FILE: OnceLock<Option<std::fs::File>> = OnceLock::new();
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let Some(file) = FILE
        .get_or_init(|| {
            let path = std::env::var_os(WRITE_MARKER_ENV)?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .as_ref()
    else {
        return Ok(());
    };
    let id = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    // One write(2) per line with O_APPEND: lines of several connections
    // never interleave, and each is in the file the moment it is written.
    let mark = move |what: &str| {
        let _ = (&*file).write_all(format!("{what} {id}\n").as_bytes());
    };
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    conn.update_hook(Some(
        move |_: rusqlite::hooks::Action, _: &str, _: &str, _: i64| {
            if !o.swap(true, Ordering::Relaxed) {
                mark("begin");
            }
        },
    ))?;
    let o = open.clone();
    conn.commit_hook(Some(move || {
        if o.swap(false, Ordering::Relaxed) {
            mark("end");
        }
        false // let the commit go on
    }))?;
    conn.rollback_hook(Some(move || {
        if open.swap(false, Ordering::Relaxed) {
            mark("end");
        }
    }))?;
    Ok(())
}

/// Reads a marker file: the connections whose last line is `begin`, i.e.
/// that held an uncommitted write when the file was read (or the process
/// was killed).
pub fn open_writes(marker: &str) -> Vec<u64> {
    let mut open = std::collections::BTreeMap::new();
    for line in marker.lines() {
        if let Some((what, id)) = line.split_once(' ')
            && let Ok(id) = id.parse::<u64>()
        {
            open.insert(id, what == "begin");
        }
    }
    open.into_iter()
        .filter(|(_, o)| *o)
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_marked_open_from_its_first_change_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marker");
        // SAFETY: the only test of this crate that reads this variable.
        unsafe { std::env::set_var(WRITE_MARKER_ENV, &path) };
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        watch_writes(&conn).unwrap();
        let marker = || std::fs::read_to_string(&path).unwrap_or_default();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        conn.execute_batch("BEGIN").unwrap();
        assert_eq!(
            open_writes(&marker()),
            Vec::<u64>::new(),
            "nothing changed yet"
        );
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(open_writes(&marker()), vec![0], "a write is open");
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(open_writes(&marker()), Vec::<u64>::new());
        conn.execute_batch("BEGIN; DELETE FROM t WHERE x = 1;")
            .unwrap();
        assert_eq!(open_writes(&marker()), vec![0]);
        conn.execute_batch("ROLLBACK").unwrap();
        assert_eq!(open_writes(&marker()), Vec::<u64>::new());
        assert_eq!(
            marker(),
            "begin 0\nend 0\nbegin 0\nend 0\n",
            "one line per transition, none per row"
        );
    }
}
