//! Files that hold patient data or secrets: stores, replicas (with the
//! device token and the mutual-TLS key), their WAL and shared-memory files,
//! backups, exports and keys.
//!
//! They are created 0600 in 0700 directories, whatever the umask says;
//! ones found more open (made by an older release, or copied in by hand)
//! are tightened when opened, with a warning. SQLite creates a database's
//! `-wal` and `-shm` files with the permissions of the database file, so
//! a database file made here keeps its companions private too.
//!
//! An output file (`--out`) never silently replaces another file: it is
//! refused when it exists unless the caller forces it, and never written
//! over a store, forced or not.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an output file was not written. Nothing was changed.
#[derive(Debug, Error)]
pub enum OutputError {
    #[error("文件已存在 `{0}` exists; choose another name, or add --force to replace it")]
    Exists(PathBuf),
    #[error("不能覆盖数据库 `{0}` is a Keqing store or database: an export never replaces one")]
    IsStore(PathBuf),
    #[error("文件错误 `{0}`: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// Reads a file given on the command line, refusing one over `most`
/// bytes without reading more than that (the file may grow meanwhile).
pub fn read_at_most(path: &Path, most: u64) -> Result<Vec<u8>, OutputError> {
    use std::io::Read;
    let io = |e| OutputError::Io(path.to_path_buf(), e);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(most + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > most {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("过大 more than {most} bytes; at most that many are taken"),
        )));
    }
    Ok(bytes)
}

/// Directory permissions for data: the owner alone.
pub const DIR_MODE: u32 = 0o700;
/// File permissions for data: the owner alone.
pub const FILE_MODE: u32 = 0o600;

/// Makes everything this process creates private unless it says otherwise
/// (umask 077): what SQLite and the libraries create beside the files made
/// here. The binaries call it first thing.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Makes `dir` (and missing parents) with the leaf 0700; an existing
/// directory open to others is tightened to 0700, with a warning.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
        }
        tighten(dir, DIR_MODE)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Tightens an existing file to 0600 (with a warning when it was open to
/// others); nothing when it does not exist.
pub fn tighten_file(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => tighten(path, FILE_MODE),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tightens a database file and the companions SQLite keeps beside it
/// (`-wal`, `-shm`, `-journal`).
pub fn tighten_database(path: &Path) -> std::io::Result<()> {
    tighten_file(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        tighten_file(Path::new(&companion))?;
    }
    Ok(())
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    let current = meta.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            was = format!("{current:o}"),
            now = format!("{mode:o}"),
            "permissions tightened: patient data and secrets are for the owner alone"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// Creates a new file 0600 (fails if it exists).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path)
}

/// Makes sure a database file about to be opened (or created) by SQLite is
/// private: a missing one is created empty 0600 (SQLite then gives its
/// `-wal` and `-shm` the same permissions), an existing one tightened.
pub fn prepare_database(path: &Path) -> std::io::Result<()> {
    match create_private(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten_database(path),
        Err(e) => Err(e),
    }
}

/// The first bytes of every plain SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` is a store: a SQLite database (plain), or a file named
/// like a Keqing store or one of SQLite's companions (an encrypted replica
/// starts with random bytes, so its name is what tells).
pub fn is_store(path: &Path, store_names: &[&str]) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let companion = ["-wal", "-shm", "-journal"]
        .iter()
        .any(|s| name.ends_with(s));
    if store_names.iter().any(|s| name == *s) || companion {
        return true;
    }
    let mut head = [0u8; 16];
    match File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)) {
        Ok(()) => &head == SQLITE_MAGIC,
        Err(_) => false,
    }
}

/// Writes an output file (an export, a report): refused when `path` exists
/// unless `force`, and never over a store (a SQLite database or a file
/// named as one of `store_names`), forced or not. The bytes go to a new
/// 0600 file beside it that is synced and renamed over `path`, so a reader
/// never sees half a file and a failure leaves `path` as it was.
pub fn write_output(
    path: &Path,
    bytes: &[u8],
    force: bool,
    store_names: &[&str],
) -> Result<(), OutputError> {
    let io = |e| OutputError::Io(path.to_path_buf(), e);
    if path.is_dir() {
        return Err(OutputError::Io(
            path.to_path_buf(),
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        ));
    }
    if path.exists() || path.is_symlink() {
        if is_store(path, store_names) {
            return Err(OutputError::IsStore(path.to_path_buf()));
        }
        if !force {
            return Err(OutputError::Exists(path.to_path_buf()));
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    // A name of our own beside the target: never one the caller chose.
    let tmp = dir.join(format!(
        ".{name}.{}.{}.partial",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_over_the_bound_is_refused_and_one_at_it_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("in.bin");
        std::fs::write(&path, vec![7u8; 11]).unwrap();
        assert_eq!(read_at_most(&path, 11).unwrap().len(), 11);
        let e = read_at_most(&path, 10).unwrap_err();
        assert!(e.to_string().contains("more than 10 bytes"), "{e}");
        assert!(read_at_most(&tmp.path().join("none"), 10).is_err());
    }

    #[test]
    #[cfg(unix)]
    fn directories_and_files_are_private_and_open_ones_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("x.sqlite");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let wal = dir.join("x.sqlite-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
        private_dir(&dir).unwrap();
        prepare_database(&db).unwrap();
        assert_eq!((mode(&dir), mode(&db), mode(&wal)), (0o700, 0o600, 0o600));
    }

    #[test]
    fn an_output_never_replaces_a_file_unasked_nor_a_store_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("r.csv");
        write_output(&out, b"one", false, &[]).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&out), 0o600);
        assert!(matches!(
            write_output(&out, b"two", false, &[]),
            Err(OutputError::Exists(_))
        ));
        assert_eq!(std::fs::read(&out).unwrap(), b"one");
        write_output(&out, b"two", true, &[]).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"two");
        // A SQLite file, a file named as a store, a WAL: never, even forced.
        let db = tmp.path().join("data.bin");
        let mut bytes = SQLITE_MAGIC.to_vec();
        bytes.extend([0u8; 100]);
        std::fs::write(&db, &bytes).unwrap();
        let named = tmp.path().join("keqing.sqlite");
        std::fs::write(&named, b"random salt bytes").unwrap();
        let wal = tmp.path().join("other.db-wal");
        std::fs::write(&wal, b"").unwrap();
        for target in [&db, &named, &wal] {
            assert!(
                matches!(
                    write_output(target, b"x", true, &["keqing.sqlite"]),
                    Err(OutputError::IsStore(_))
                ),
                "{}",
                target.display()
            );
        }
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
        // Nothing left behind beside them.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
}
