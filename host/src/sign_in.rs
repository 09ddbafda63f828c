//! What a web front end needs to sign people in, alike for the office
//! workstation and headquarters' dashboard: sessions that end after a time
//! without use, a throttle on failed sign-ins, and the session cookie.
//!
//! Both take the moment as an argument (`*_at`) so their rules are tested
//! on an injected clock; the plain methods use now.

use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most sessions (or throttled keys) kept at once: anyone may ask for
/// the sign-in page, and what it costs must not grow for ever.
const MOST: usize = 10_000;

/// A random secret (256 bits, hex): session ids and form tokens.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The value of cookie `name` in a request's headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value for a session: sent back only to this site, never
/// readable by script, never from another site's page.
pub fn session_cookie(name: &str, sid: &str) -> String {
    format!("{name}={sid}; HttpOnly; SameSite=Strict; Path=/")
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn cleared_cookie(name: &str) -> String {
    format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Parses an idle time given in minutes (`--idle-minutes`): a decimal
/// number from 0.05 (3 seconds, for rehearsals and tests) to 1440 (a day).
pub fn parse_idle_minutes(text: &str) -> Result<Duration, String> {
    let minutes: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of minutes"))?;
    if !(0.05..=1440.0).contains(&minutes) {
        return Err(format!("{minutes} minutes: from 0.05 to 1440"));
    }
    Ok(Duration::from_secs_f64(minutes * 60.0))
}

/// One signed-in person's session: who (`T`), the secret their forms
/// carry, and when it was last used.
struct Session<T> {
    who: T,
    csrf: String,
    last_used: Instant,
}

/// Sessions that end after `idle` without a request.
pub struct Sessions<T> {
    idle: Duration,
    open: Mutex<HashMap<String, Session<T>>>,
}

impl<T: Clone> Sessions<T> {
    pub fn new(idle: Duration) -> Sessions<T> {
        Sessions {
            idle,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session for `who`: its id (the cookie) and its form secret.
    pub fn open(&self, who: T) -> (String, String) {
        self.open_at(who, Instant::now())
    }

    pub fn open_at(&self, who: T, now: Instant) -> (String, String) {
        let mut open = crate::lock(&self.open);
        open.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        if open.len() >= MOST {
            open.clear();
        }
        let (sid, csrf) = (random_secret(), random_secret());
        open.insert(
            sid.clone(),
            Session {
                who,
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        (sid, csrf)
    }

    /// Who session `sid` is and its form secret, if it is open and was used
    /// within the idle time; using it now restarts that time.
    pub fn use_session(&self, sid: &str) -> Option<(T, String)> {
        self.use_session_at(sid, Instant::now())
    }

    pub fn use_session_at(&self, sid: &str, now: Instant) -> Option<(T, String)> {
        let mut open = crate::lock(&self.open);
        let session = open.get_mut(sid)?;
        if now.duration_since(session.last_used) >= self.idle {
            open.remove(sid);
            return None;
        }
        session.last_used = now;
        Some((session.who.clone(), session.csrf.clone()))
    }

    /// Ends session `sid` (signing out).
    pub fn close(&self, sid: &str) {
        crate::lock(&self.open).remove(sid);
    }

    /// Ends every session of whoever `ended` names (e.g. a person who left).
    pub fn close_where(&self, ended: impl Fn(&T) -> bool) {
        crate::lock(&self.open).retain(|_, s| !ended(&s.who));
    }
}

/// Failed sign-ins by key (a client address, a name): after `limit` within
/// `window`, the key waits until the window has passed.
pub struct Throttle<K> {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    pub fn new(limit: u32, window: Duration) -> Throttle<K> {
        Throttle {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` must wait before trying again.
    pub fn blocked(&self, key: &K) -> bool {
        self.blocked_at(key, Instant::now())
    }

    pub fn blocked_at(&self, key: &K, now: Instant) -> bool {
        crate::lock(&self.failures)
            .get(key)
            .is_some_and(|(n, since)| *n >= self.limit && now.duration_since(*since) < self.window)
    }

    /// Counts a failed sign-in of `key`.
    pub fn fail(&self, key: &K) {
        self.fail_at(key, Instant::now())
    }

    pub fn fail_at(&self, key: &K, now: Instant) {
        let mut failures = crate::lock(&self.failures);
        failures.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        if failures.len() >= MOST {
            failures.clear();
        }
        failures.entry(key.clone()).or_insert((0, now)).0 += 1;
    }

    /// Forgets `key`'s failures (after a sign-in that succeeded).
    pub fn clear(&self, key: &K) {
        crate::lock(&self.failures).remove(key);
    }
}

/// The failed sign-ins a client, or a name, may have in
/// [`SIGN_IN_WINDOW`]; then it waits the window out.
pub const SIGN_IN_FAILURES: u32 = 5;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);

/// A sign-in as posted: the name (trimmed) and password, and whether any
/// account could have them. What no account can be is refused unhashed and
/// kept nowhere: its name is emptied, since the throttle keys on names and
/// a megabyte of name must not become one.
pub struct Attempt {
    pub name: String,
    pub password: String,
    pub possible: bool,
}

impl Attempt {
    pub fn new(name: &str, password: String) -> Attempt {
        let name = name.trim();
        let possible = name.chars().count() <= keqing_shared::limits::NAME_CHARS
            && password.chars().count() <= keqing_shared::staff::PASSWORD_MAX_CHARS;
        Attempt {
            name: if possible {
                name.to_string()
            } else {
                String::new()
            },
            password,
            possible,
        }
    }
}

/// A sign-in form's failures, per client address and per name
/// ([`SIGN_IN_FAILURES`] in [`SIGN_IN_WINDOW`]).
pub struct SignInThrottle {
    clients: Throttle<IpAddr>,
    names: Throttle<String>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            clients: Throttle::new(SIGN_IN_FAILURES, SIGN_IN_WINDOW),
            names: Throttle::new(SIGN_IN_FAILURES, SIGN_IN_WINDOW),
        }
    }
}

impl SignInThrottle {
    /// Whether `client`, or `name`, must wait before trying again.
    pub fn blocked(&self, client: IpAddr, name: &str) -> bool {
        self.clients.blocked(&client) || self.names.blocked(&name.to_string())
    }

    /// Counts a failed sign-in of `client` as `name`.
    pub fn fail(&self, client: IpAddr, name: &str) {
        self.clients.fail(&client);
        self.names.fail(&name.to_string());
    }

    /// Forgets `name`'s failures (it signed in).
    pub fn succeeded(&self, name: &str) {
        self.names.clear(&name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_no_account_can_be_keeps_no_name() {
        let a = Attempt::new("  李娜 ", "心脑通 2026".into());
        assert_eq!((a.name.as_str(), a.possible), ("李娜", true));
        let long_name = Attempt::new(&"名".repeat(100_000), "心脑通 2026".into());
        assert_eq!((long_name.name.as_str(), long_name.possible), ("", false));
        let long_password = Attempt::new("李娜", "x".repeat(10_000));
        assert_eq!(
            (long_password.name.as_str(), long_password.possible),
            ("", false)
        );
    }

    #[test]
    fn idle_minutes_parse_within_bounds() {
        assert_eq!(parse_idle_minutes("15"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_idle_minutes("0.05"), Ok(Duration::from_secs(3)));
        for bad in ["0", "0.01", "1441", "NaN", "inf", "十五", ""] {
            assert!(parse_idle_minutes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_session_ends_after_its_idle_time_and_each_use_restarts_it() {
        let sessions = Sessions::new(Duration::from_secs(900));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (sid, csrf) = sessions.open_at("李娜".to_string(), at(0));
        assert_eq!(
            sessions.use_session_at(&sid, at(899)),
            Some(("李娜".to_string(), csrf.clone()))
        );
        assert!(
            sessions.use_session_at(&sid, at(899 + 899)).is_some(),
            "used: restarted"
        );
        assert_eq!(
            sessions.use_session_at(&sid, at(899 + 899 + 900)),
            None,
            "idle"
        );
        assert_eq!(sessions.use_session_at(&sid, at(0)), None, "ended for good");
        assert_eq!(sessions.use_session_at("made-up", at(0)), None);
        let (a, _) = sessions.open_at("王芳".to_string(), at(0));
        let (b, _) = sessions.open_at("李娜".to_string(), at(0));
        sessions.close_where(|who| who == "李娜");
        assert!(sessions.use_session_at(&a, at(1)).is_some());
        assert!(
            sessions.use_session_at(&b, at(1)).is_none(),
            "her sessions ended"
        );
        sessions.close(&a);
        assert!(sessions.use_session_at(&a, at(1)).is_none(), "signed out");
    }

    #[test]
    fn a_key_waits_after_its_failures_until_the_window_passes() {
        let throttle = Throttle::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in 0..3 {
            assert!(!throttle.blocked_at(&"a", at(s)));
            throttle.fail_at(&"a", at(s));
        }
        assert!(throttle.blocked_at(&"a", at(3)));
        assert!(!throttle.blocked_at(&"b", at(3)), "per key");
        assert!(throttle.blocked_at(&"a", at(599)));
        assert!(!throttle.blocked_at(&"a", at(600)), "the window passed");
        throttle.clear(&"a");
        assert!(!throttle.blocked_at(&"a", at(3)));
    }

    #[test]
    fn cookies_are_read_by_name_and_set_strict_and_http_only() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; keqing_ui=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, "keqing_ui").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
        let set = session_cookie("keqing_ui", "abc");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
    }
}
