//! Change bundles: what travels on a USB stick or by e-mail when an
//! office's line is down for weeks. A device's bundle carries its outbox
//! (its identity and cursor with it); headquarters' answer carries what
//! the office's devices lack and which of the device's changes are now
//! stored. Both are signed with the device's credential (HMAC-SHA256 keyed
//! by the SHA-256 of its token, which the server keeps and the device can
//! compute), so a bundle changed on the way, or made for another device,
//! is refused whole.
//!
//! The file: a first line `KEQING-BUNDLE 1`, one line of JSON, and a last
//! line `SIG <hex>` over the JSON line's bytes.

use crate::sync::{LoggedChange, Snapshot};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

const MAGIC: &str = "KEQING-BUNDLE 1";

/// The largest bundle read or written: an office's weeks of work and
/// their answer fit many times over.
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("不是变更包 not a keqing bundle (no `{MAGIC}` line)")]
    NotABundle,
    #[error("变更包过大 the bundle has {0} bytes; at most {MAX_BUNDLE_BYTES}")]
    TooLarge(usize),
    #[error("变更包损坏 the bundle is damaged: {0}")]
    Damaged(String),
    #[error(
        "签名不符 the bundle's signature does not match: it was changed after it was made, or it is not this device's"
    )]
    BadSignature,
}

/// A change in a bundle: its document and bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundledChange {
    pub doc_id: String,
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

/// A change headquarters would not take, and why (the device sets it
/// aside, as a live push's refusal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedInBundle {
    pub doc_id: String,
    /// The change's hash (hex), as the device's outbox names it.
    pub hash: String,
    pub reason: String,
}

/// What a bundle says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BundleBody {
    /// A device's outbox, for headquarters.
    Changes {
        device_id: String,
        office: String,
        made_at: String,
        /// Where the device's pulls got to (and in which server epoch):
        /// the answer brings what comes after.
        cursor: u64,
        epoch: String,
        changes: Vec<BundledChange>,
    },
    /// Headquarters' answer to one device's bundle.
    Answer {
        device_id: String,
        made_at: String,
        epoch: String,
        /// The device's cursor once it has applied this.
        cursor: u64,
        /// Whether it holds all there was (else the next bundle's answer
        /// brings the rest).
        complete: bool,
        snapshots: Vec<BundledSnapshot>,
        changes: Vec<BundledLogged>,
        /// Hashes (hex) of the bundle's changes headquarters now holds:
        /// the device forgets them from its outbox.
        stored: Vec<String>,
        refused: Vec<RefusedInBundle>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundledSnapshot {
    pub doc_id: String,
    #[serde(with = "b64")]
    pub document: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundledLogged {
    pub seq: u64,
    pub doc_id: String,
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

impl From<&Snapshot> for BundledSnapshot {
    fn from(s: &Snapshot) -> Self {
        BundledSnapshot {
            doc_id: s.doc_id.clone(),
            document: s.document.clone(),
        }
    }
}

impl From<&LoggedChange> for BundledLogged {
    fn from(c: &LoggedChange) -> Self {
        BundledLogged {
            seq: c.seq,
            doc_id: c.doc_id.clone(),
            bytes: c.bytes.clone(),
        }
    }
}

impl BundleBody {
    /// The device the bundle is of (and signed for).
    pub fn device_id(&self) -> &str {
        match self {
            BundleBody::Changes { device_id, .. } | BundleBody::Answer { device_id, .. } => {
                device_id
            }
        }
    }
}

mod b64 {
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: &str = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The signing key of a device: the SHA-256 of its token (what the server
/// stores of it).
pub fn key_of_token(token: &str) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(token.as_bytes()).into()
}

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body);
    m
}

/// The bundle file's bytes, signed with `key`.
pub fn write(body: &BundleBody, key: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(body).expect("a bundle serialises");
    let sig = mac(key, &json).finalize().into_bytes();
    let mut out = Vec::with_capacity(json.len() + 120);
    out.extend_from_slice(MAGIC.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\nSIG ");
    out.extend_from_slice(hex(&sig).as_bytes());
    out.push(b'\n');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A bundle read but not yet verified: its body (to find whose key
/// verifies it) and what the signature covers.
pub struct Unverified {
    pub body: BundleBody,
    json: Vec<u8>,
    sig: Vec<u8>,
}

/// Reads a bundle file (nothing trusted yet: [`Unverified::verify`]).
pub fn read(bytes: &[u8]) -> Result<Unverified, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    let rest = bytes
        .strip_prefix(MAGIC.as_bytes())
        .and_then(|r| r.strip_prefix(b"\n"))
        .ok_or(BundleError::NotABundle)?;
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let split = rest
        .windows(5)
        .rposition(|w| w == b"\nSIG ")
        .ok_or_else(|| BundleError::Damaged("no signature line".into()))?;
    let (json, sig) = (&rest[..split], &rest[split + 5..]);
    let sig = std::str::from_utf8(sig)
        .ok()
        .and_then(unhex)
        .filter(|s| s.len() == 32)
        .ok_or_else(|| BundleError::Damaged("the signature line is not 64 hex digits".into()))?;
    let body: BundleBody =
        serde_json::from_slice(json).map_err(|e| BundleError::Damaged(e.to_string()))?;
    Ok(Unverified {
        body,
        json: json.to_vec(),
        sig,
    })
}

impl Unverified {
    /// The body, if `key` signed it (a constant-time comparison).
    pub fn verify(self, key: &[u8]) -> Result<BundleBody, BundleError> {
        mac(key, &self.json)
            .verify_slice(&self.sig)
            .map_err(|_| BundleError::BadSignature)?;
        Ok(self.body)
    }
}

/// A change's hash as the outbox and the answer name it.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

/// Base64 of bytes (for messages naming a change).
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> BundleBody {
        BundleBody::Changes {
            device_id: "dev-1".into(),
            office: "44".into(),
            made_at: "2026-12-03T10:00:00".into(),
            cursor: 7,
            epoch: "e1".into(),
            changes: vec![BundledChange {
                doc_id: "d1".into(),
                bytes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
            }],
        }
    }

    #[test]
    fn a_bundle_reads_back_with_its_key_and_with_no_other() {
        let key = key_of_token("token-a");
        let bytes = write(&body(), &key);
        assert_eq!(read(&bytes).unwrap().verify(&key).unwrap(), body());
        assert_eq!(
            read(&bytes)
                .unwrap()
                .verify(&key_of_token("token-b"))
                .unwrap_err(),
            BundleError::BadSignature
        );
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = key_of_token("token-a");
        let bytes = write(&body(), &key);
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            let verified = read(&tampered).and_then(|u| u.verify(&key));
            // The signature covers every byte of the body.
            assert!(verified.is_err(), "byte {i} changed and still verified");
        }
        assert_eq!(read(b"hello").err(), Some(BundleError::NotABundle));
    }
}
