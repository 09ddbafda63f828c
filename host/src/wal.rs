//! Emptying a SQLite write-ahead log when other connections may be
//! checkpointing it: what both the office replica's and the server store's
//! scrub need after an erasure (the WAL would otherwise keep the erased
//! dossier's pages).

use std::time::{Duration, Instant};

/// How often a busy checkpoint is tried again.
const RETRY: Duration = Duration::from_millis(50);

/// Copies the WAL back into the file and truncates it to zero bytes.
/// Returns whether it did; `false` means a reader or another checkpoint
/// kept it from doing so for all of `patience`.
///
/// SQLite waits (through the busy handler) for readers, but not for
/// another checkpoint running at the same moment: that one it answers
/// busy at once. The replica's background checkpointer and the server's
/// upkeep copy the WAL back often, and right after a VACUUM that WAL
/// holds the whole file, so a single try would meet one of them. It is
/// tried again until `patience` has passed.
pub fn empty_wal(conn: &rusqlite::Connection, patience: Duration) -> rusqlite::Result<bool> {
    let deadline = Instant::now() + patience;
    loop {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(RETRY);
    }
}

/// Stand-ins for other processes, for tests.
#[cfg(all(any(test, feature = "testing"), target_os = "linux"))]
pub mod testing {
    use std::os::fd::AsRawFd;
    use std::path::Path;

    /// Another process's checkpoint, as SQLite sees one: a lock on the
    /// checkpoint byte of the WAL index (`-shm`; its locks start at byte
    /// 120, the checkpointer's is the second), held until the file is
    /// dropped. An open-file-description lock, so that SQLite's own locks
    /// in this process meet it.
    pub fn hold_checkpoint_lock(shm: &Path) -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm)?;
        // SAFETY: a plain `flock` record, all of it set below or zero.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as _;
        lock.l_whence = libc::SEEK_SET as _;
        lock.l_start = 121;
        lock.l_len = 1;
        // SAFETY: a valid descriptor and a valid `flock` for the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn wal_file(dir: &std::path::Path) -> (rusqlite::Connection, std::path::PathBuf) {
        let path = dir.join("db.sqlite");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        (conn, dir.join("db.sqlite-shm"))
    }

    #[test]
    fn the_wal_is_emptied_once_another_checkpoint_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (conn, shm) = wal_file(dir.path());
        let held = testing::hold_checkpoint_lock(&shm).expect("lock");
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(held);
        });
        assert!(empty_wal(&conn, Duration::from_secs(30)).expect("checkpoint"));
        released.join().expect("released");
        let wal = dir.path().join("db.sqlite-wal");
        assert_eq!(std::fs::metadata(wal).expect("wal").len(), 0);
    }

    #[test]
    fn a_checkpoint_held_past_the_patience_is_reported_not_hidden() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (conn, shm) = wal_file(dir.path());
        let _held = testing::hold_checkpoint_lock(&shm).expect("lock");
        let started = Instant::now();
        assert!(!empty_wal(&conn, Duration::from_millis(300)).expect("checkpoint"));
        assert!(started.elapsed() >= Duration::from_millis(300));
        let wal = dir.path().join("db.sqlite-wal");
        assert!(std::fs::metadata(wal).expect("wal").len() > 0);
    }
}
