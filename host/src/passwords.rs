//! Passwords of people who sign in: kept only as Argon2id hashes. The
//! office keeps its staff's in the office roster (a document every device
//! of the office holds, so any of them signs its staff in offline);
//! headquarters keeps its people's in the server store.
//!
//! A hash read from a roster came from another device, maybe a hostile
//! one: its parameters are bounded before it is verified, or a forged
//! `m=4194304` would make every sign-in allocate 4 GiB.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use keqing_shared::staff::validate_password;

/// Argon2id with OWASP's first recommended setting: 19 MiB of memory, two
/// passes, one lane (16 ms a sign-in on the 2-core machine of
/// BENCHMARKS.md, `--bench sign_in`).
pub const MEMORY_KIB: u32 = 19_456;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

/// The most a stored hash may ask of a sign-in: 64 MiB, 8 passes, 4 lanes.
const MAX_MEMORY_KIB: u32 = 65_536;
const MAX_PASSES: u32 = 8;
const MAX_LANES: u32 = 4;

/// A valid Argon2id hash of no one's password (salt and digest made up),
/// with our parameters: what the sign-in of a member without a password is
/// checked against, so the clock does not tell them apart either.
pub const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$ZGVjb3lkZWNveWRlY295ZGVjb3lkZWNveWRlY295ZGU";

/// Why a password was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password breaks the rule ([`validate_password`]).
    #[error(transparent)]
    Rule(#[from] keqing_shared::DomainError),
    #[error("password hash: {0}")]
    Hash(String),
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| PasswordError::Hash(format!("Argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The Argon2id hash (PHC form, random salt) of a password that meets the
/// rule ([`validate_password`]).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let password = validate_password(password)?;
    let salt = SaltString::generate(&mut rand_core::OsRng);
    hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` is the one `phc` was made from, checked against
/// [`DECOY_HASH`] when there is no hash (no account, or no password): the
/// clock then does not tell which names exist.
pub fn verify_or_decoy(phc: Option<&str>, password: &str) -> bool {
    let hash = phc.unwrap_or(DECOY_HASH);
    verify_password(hash, password) && hash != DECOY_HASH
}

/// Whether `password` is the one `phc` was made from. A hash that is not
/// Argon2id, or asks for more than the bounds, verifies nothing.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm.as_str() != "argon2id" {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_PASSES
        || params.p_cost() > MAX_LANES
    {
        return false;
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// The password on the first line of `input` (a script's
/// `--password-stdin`), without its line break (LF or CRLF); `None` when
/// the line is empty. Never echoed, never in the process's arguments.
pub fn password_line(mut input: impl std::io::BufRead) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok((!password.is_empty()).then(|| password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_never_holds_it() {
        let h = hash_password("心脑通-2026").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("心脑通"));
        assert!(verify_password(&h, "心脑通-2026"));
        assert!(!verify_password(&h, "心脑通-2025"));
        assert_ne!(
            hash_password("心脑通-2026").unwrap(),
            h,
            "a salt of its own"
        );
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn a_hash_asking_too_much_or_of_another_kind_verifies_nothing() {
        let h = hash_password("心脑通-2026").unwrap();
        let greedy = h.replace("m=19456", "m=4194304");
        assert!(!verify_password(&greedy, "心脑通-2026"));
        let slow = h.replace("t=2", "t=1000");
        assert!(!verify_password(&slow, "心脑通-2026"));
        let argon2i = h.replace("$argon2id$", "$argon2i$");
        assert!(!verify_password(&argon2i, "心脑通-2026"));
        assert!(!verify_password("not a hash", "心脑通-2026"));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn a_password_line_loses_its_line_break_only() {
        let read = |s: &str| password_line(s.as_bytes()).unwrap();
        assert_eq!(read("心脑通 2026\r\n").as_deref(), Some("心脑通 2026"));
        assert_eq!(
            read(" pass word \nsecond line").as_deref(),
            Some(" pass word ")
        );
        assert_eq!(read("\n"), None);
        assert_eq!(read(""), None);
    }

    #[test]
    fn the_decoy_is_a_hash_with_our_parameters() {
        let decoy = PasswordHash::new(DECOY_HASH).unwrap();
        let params = Params::try_from(&decoy).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (MEMORY_KIB, PASSES, LANES)
        );
        assert!(!verify_password(DECOY_HASH, ""));
    }
}
