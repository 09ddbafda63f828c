//! Online backups of the SQLite store and restoring one.

use super::conn::Conn;
use super::schema::{DB_FILE, integrity_of};
use crate::store::{Result, StoreError};
use rusqlite::Connection;
use std::path::Path;

impl Conn {
    /// Copies the whole store to `out` (a new file) while it stays in use:
    /// SQLite's online backup, `progress(done_pages, total_pages)` between
    /// steps. The copy is checked (`PRAGMA integrity_check`) before it counts.
    pub fn backup_to(&self, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        if out.exists() {
            return Err(StoreError::Io(
                out.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file exists"),
            ));
        }
        // Made 0600 before SQLite writes a page into it: a backup holds
        // every patient.
        keqing_host::files::create_private(out)
            .map_err(|e| StoreError::Io(out.display().to_string(), e))?;
        let mut copy = Connection::open(out)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy)?;
            loop {
                let step = backup.step(1024)?;
                let p = backup.progress();
                let total = p.pagecount.max(0) as u64;
                progress(total - p.remaining.max(0) as u64, total);
                match step {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        // One self-contained file, whatever the source's journal mode.
        copy.pragma_update(None, "journal_mode", "DELETE")?;
        let check = integrity_of(&copy)?;
        if check != "ok" {
            return Err(StoreError::Migration(format!(
                "the backup copy failed its integrity check: {check}"
            )));
        }
        Ok(())
    }
}

/// Copies the backup `from` into a new store file in `dir`, refusing a
/// directory that already holds a store or a damaged backup (see
/// [`super::SqliteStore::restore`], which gives the copy a new epoch).
pub(super) fn copy_backup(dir: &Path, from: &Path) -> Result<()> {
    let path = dir.join(DB_FILE);
    if path.exists() {
        return Err(StoreError::Io(
            path.display().to_string(),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "this data directory already holds a store; restore into a new one",
            ),
        ));
    }
    if !from.is_file() {
        return Err(StoreError::Io(
            from.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such backup file"),
        ));
    }
    let io = |e| StoreError::Io(dir.display().to_string(), e);
    keqing_host::files::private_dir(dir).map_err(io)?;
    keqing_host::files::prepare_database(&path).map_err(io)?;
    {
        let source = Connection::open_with_flags(
            from,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let check = integrity_of(&source)?;
        if check != "ok" {
            return Err(StoreError::Migration(format!(
                "the backup {} is damaged: {check}",
                from.display()
            )));
        }
        let mut target = Connection::open(&path)?;
        rusqlite::backup::Backup::new(&source, &mut target)?.run_to_completion(
            1024,
            std::time::Duration::ZERO,
            None,
        )?;
    }
    Ok(())
}

impl Conn {
    /// Gives the store a new epoch (a restored store: devices start over).
    pub(super) fn new_epoch(&self) -> Result<()> {
        self.conn.execute(
            "UPDATE store_meta SET epoch = lower(hex(randomblob(16))) WHERE id = 1",
            [],
        )?;
        Ok(())
    }
}
