//! # keqing-host: what both sides need from the machine they run on
//!
//! The domain (`keqing-shared`) does no IO; the office library and the
//! server each do theirs. What both do alike lives here, once:
//! - [`now_cst`]: the wall clock in China Standard Time, the one zone of
//!   all 27 offices;
//! - [`files`]: files holding patient data or secrets, created 0600 in
//!   0700 directories (existing ones tightened);
//! - [`shutdown_signal`]: Ctrl-C or SIGTERM, what a service waits for;
//! - [`os_account`]: who runs a command, for audit lines;
//! - [`lock`]: one policy for a lock whose holder panicked;
//! - [`passwords`]: Argon2id hashes of the passwords people sign in with;
//! - [`sign_in`]: sessions with an idle end, a throttle on failed
//!   sign-ins and the session cookie, for both web front ends;
//! - [`wal`]: emptying a SQLite WAL that other connections may be
//!   checkpointing (the scrub after an erasure);
//! - [`web`]: what both web front ends (the office workstation and
//!   headquarters' dashboard) put around their routes;
//! - [`write_marker`]: open SQLite write transactions, marked in a file
//!   for the crash tests when asked to.

pub mod files;
pub mod locks;
pub mod passwords;
pub mod sign_in;
pub mod wal;
pub mod web;
pub mod write_marker;

pub use locks::{Recover, lock};

/// Wall-clock time in China Standard Time (every office's zone): the times
/// offices record, the server's timestamps (devices, audit) and every
/// "today".
///
/// With `KEQING_CLOCK_START=YYYY-MM-DDTHH:MM[:SS]` in its environment a
/// process's clock starts there and runs at the real pace: the one clock
/// tests give every process they start (a test near Beijing midnight would
/// otherwise see "today" change under it), and a way to rehearse a given
/// day. A value that does not parse is said on stderr and ignored.
pub fn now_cst() -> chrono::NaiveDateTime {
    match clock_start() {
        Some((start, at)) => {
            start + chrono::Duration::from_std(at.elapsed()).unwrap_or(chrono::Duration::zero())
        }
        None => (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc(),
    }
}

/// The environment variable that sets where [`now_cst`] starts.
pub const CLOCK_START_ENV: &str = "KEQING_CLOCK_START";

/// `KEQING_CLOCK_START`, read once, with the moment it was read.
fn clock_start() -> Option<(chrono::NaiveDateTime, std::time::Instant)> {
    static START: std::sync::OnceLock<Option<(chrono::NaiveDateTime, std::time::Instant)>> =
        std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let text = std::env::var(CLOCK_START_ENV).ok()?;
        match keqing_shared::when::parse_datetime(&text) {
            Ok(start) => Some((start, std::time::Instant::now())),
            Err(e) => {
                eprintln!("{CLOCK_START_ENV} ignored: {e}");
                None
            }
        }
    })
}

/// [`now_cst`] as stored text, `YYYY-MM-DDTHH:MM:SS`.
pub fn now_cst_text() -> String {
    keqing_shared::when::fmt_datetime(now_cst())
}

/// Completes on Ctrl-C or SIGTERM: what a service waits for to shut down.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // Registered now, not when first polled: a SIGTERM that comes while
    // the server is still starting (a service manager stopping it at
    // once) ends it cleanly instead of killing it.
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

/// Gives the C allocator's free memory back to the system. glibc keeps
/// what a burst of work freed in its per-thread arenas, fragmented: a
/// server that had taken 27 offices' pushes at once at 1M dossiers held
/// ~165 MB of freed memory beside 150 MB in use (SQLite's share of it
/// 72 MB). Other allocators give memory back themselves.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and locks each arena itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The operating-system account running this process, by its uid (not
/// `$USER`, which whoever starts the process can set to anything): how
/// audit lines name a local administrator.
pub fn os_account() -> String {
    #[cfg(unix)]
    {
        // SAFETY: getuid cannot fail; getpwuid_r writes only into the
        // buffers given, and the name is read before they go.
        let uid = unsafe { libc::getuid() };
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
            let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
            return format!("{} (uid {uid})", name.to_string_lossy());
        }
        format!("uid {uid}")
    }
    #[cfg(not(unix))]
    {
        "?".to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_os_account_is_named_by_uid_whatever_user_says() {
        let before = super::os_account();
        // SAFETY: tests of this crate do not read USER concurrently.
        unsafe { std::env::set_var("USER", "someone-else") };
        let after = super::os_account();
        assert_eq!(before, after);
        assert!(!after.contains("someone-else"));
        #[cfg(unix)]
        assert!(
            after.contains(&format!("uid {}", unsafe { libc::getuid() })),
            "{after}"
        );
    }
}
