//! Change bundles at headquarters (see `keqing_shared::bundle`):
//! `keqing-server bundle import FILE --answer OUT` takes a device's bundle
//! with exactly the checks of a push, and writes the answer: what that
//! device's office lacks, and which of its changes are stored or refused.

use crate::store::{DeviceHealth, Store, StoreError};
use keqing_shared::bundle::{self, BundleBody, BundledLogged, BundledSnapshot, RefusedInBundle};
use keqing_shared::sync::{ChangeEnvelope, SyncError};
use std::collections::HashSet;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BundleImportError {
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("不认识的设备 the bundle names device `{0}`, which this server does not know")]
    UnknownDevice(String),
    #[error("设备已吊销 device `{0}` was revoked: its bundles are refused")]
    Revoked(String),
    #[error("输入无效 {0}")]
    Invalid(String),
    #[error("服务器拒绝 {0}")]
    Refused(String),
}

impl From<SyncError> for BundleImportError {
    fn from(e: SyncError) -> Self {
        BundleImportError::Refused(e.to_string())
    }
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub device: String,
    pub device_name: String,
    pub office: String,
    pub changes: u64,
    /// Stored now (not there before).
    pub new: u64,
    /// Already stored (a bundle imported twice, or synced live since).
    pub duplicates: u64,
    pub refused: u64,
    pub answer_snapshots: u64,
    pub answer_changes: u64,
    /// The answer holds all the office's devices lacked.
    pub complete: bool,
}

/// Most bytes of changes and snapshots one answer carries (the rest comes
/// with the office's next bundle).
const ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Changes per push-sized piece of a bundle.
const PIECE: usize = 500;

/// Reads, verifies and takes a device's bundle (audited as `admin`'s) and
/// returns its answer's bytes. A bundle that is not a device's, was
/// changed, or names a device that is unknown, revoked or of another
/// office is refused before anything is stored. Each change goes through
/// the checks of a push; one refused is listed in the answer with the
/// later changes of its dossier (the device sets them aside), the rest is
/// stored. Importing a bundle again stores nothing more.
pub fn import(
    store: &dyn Store,
    bytes: &[u8],
    admin: &str,
) -> Result<(Imported, Vec<u8>), BundleImportError> {
    let unverified = bundle::read(bytes)?;
    let device_id = unverified.body.device_id().to_string();
    let device = store
        .device(&device_id)?
        .ok_or_else(|| BundleImportError::UnknownDevice(device_id.clone()))?;
    if device.revoked_at.is_some() {
        return Err(BundleImportError::Revoked(device.name));
    }
    let key = store
        .device_key(&device_id)?
        .ok_or_else(|| BundleImportError::UnknownDevice(device_id.clone()))?;
    let BundleBody::Changes {
        office,
        cursor,
        epoch,
        changes,
        ..
    } = unverified.verify(&key)?
    else {
        return Err(BundleImportError::Invalid(
            "这是总部的回复包 this is headquarters' answer: the device imports it (keqing bundle import)".into(),
        ));
    };
    if device.office.as_deref().unwrap_or("") != office {
        return Err(BundleImportError::Invalid(format!(
            "the bundle says office {office}, its device is {}'s",
            device.office.as_deref().unwrap_or("headquarters")
        )));
    }
    // Each change's hash, as the device's outbox names it.
    let mut hashed = Vec::with_capacity(changes.len());
    for (i, c) in changes.into_iter().enumerate() {
        let hash = automerge::Change::from_bytes(c.bytes.clone())
            .map(|ch| ch.hash().to_string())
            .map_err(|e| BundleImportError::Invalid(format!("change {i} of the bundle: {e}")))?;
        hashed.push((hash, c));
    }
    let total = hashed.len() as u64;
    let all_hashes: Vec<String> = hashed.iter().map(|(h, _)| h.clone()).collect();
    let (mut new, mut duplicates) = (0u64, 0u64);
    let mut refused: Vec<RefusedInBundle> = Vec::new();
    let mut held: HashSet<String> = HashSet::new();
    let mut pending: Vec<(String, ChangeEnvelope)> = Vec::new();
    let mut rest = hashed.into_iter().peekable();
    loop {
        // The next piece: what is not held behind a refused change.
        while pending.len() < PIECE {
            let Some((hash, c)) = rest.next() else { break };
            if held.contains(&c.doc_id) {
                refused.push(RefusedInBundle {
                    doc_id: c.doc_id,
                    hash,
                    reason: "held behind a refused change of its dossier".into(),
                });
                continue;
            }
            pending.push((
                hash,
                ChangeEnvelope {
                    doc_id: c.doc_id,
                    bytes: c.bytes,
                },
            ));
        }
        if pending.is_empty() {
            break;
        }
        let envelopes: Vec<ChangeEnvelope> = pending.iter().map(|(_, c)| c.clone()).collect();
        match crate::hub::push_at_once(store, &device, envelopes) {
            Ok(ack) => {
                new += u64::from(ack.accepted);
                duplicates += u64::from(ack.duplicates);
                pending.clear();
            }
            Err(e) => {
                let Some(i) = e.change.map(|i| i as usize).filter(|i| *i < pending.len()) else {
                    return Err(e.into());
                };
                // That change and the later ones of its dossier are set
                // aside; the rest of the piece goes again.
                let doc = pending[i].1.doc_id.clone();
                held.insert(doc.clone());
                let reason = format!("{} ({:?})", e.message, e.kind);
                let mut kept = Vec::new();
                for (k, (hash, c)) in pending.drain(..).enumerate() {
                    if c.doc_id == doc && k >= i {
                        refused.push(RefusedInBundle {
                            doc_id: c.doc_id,
                            hash,
                            reason: if k == i {
                                reason.clone()
                            } else {
                                "held behind a refused change of its dossier".into()
                            },
                        });
                    } else {
                        kept.push((hash, c));
                    }
                }
                pending = kept;
            }
        }
    }
    let refused_hashes: HashSet<&str> = refused.iter().map(|r| r.hash.as_str()).collect();
    // Every change of the bundle not refused is stored now (new or not).
    let stored: Vec<String> = all_hashes
        .into_iter()
        .filter(|h| !refused_hashes.contains(h.as_str()))
        .collect();
    let (server_epoch, batches, complete) =
        crate::hub::pull_at_once(store, &device, cursor, &epoch, ANSWER_BYTES)?;
    let answer_cursor = batches.last().map_or(cursor, |b| b.cursor);
    let snapshots: Vec<BundledSnapshot> = batches
        .iter()
        .flat_map(|b| b.snapshots.iter().map(BundledSnapshot::from))
        .collect();
    let logged: Vec<BundledLogged> = batches
        .iter()
        .flat_map(|b| b.changes.iter().map(BundledLogged::from))
        .collect();
    let imported = Imported {
        device: device.id.clone(),
        device_name: device.name.clone(),
        office,
        changes: total,
        new,
        duplicates,
        refused: refused.len() as u64,
        answer_snapshots: snapshots.len() as u64,
        answer_changes: logged.len() as u64,
        complete,
    };
    let answer = BundleBody::Answer {
        device_id: device.id.clone(),
        made_at: keqing_host::now_cst_text(),
        epoch: server_epoch,
        cursor: answer_cursor,
        complete,
        snapshots,
        changes: logged,
        stored,
        refused,
    };
    store.audit(
        admin,
        "bundle.import",
        &format!("{} ({})", device.name, device.id),
        &format!(
            "{} changes: {} new, {} already stored, {} refused; answer {} snapshots, {} changes",
            imported.changes,
            imported.new,
            imported.duplicates,
            imported.refused,
            imported.answer_snapshots,
            imported.answer_changes
        ),
    )?;
    // Fleet health: the device was heard from, and is up to date once it
    // applies the answer.
    let now = keqing_host::now_cst_text();
    store.record_health(&[DeviceHealth {
        device_id: device.id.clone(),
        last_push: Some(now.clone()),
        last_sync: complete.then_some(now),
        ..Default::default()
    }])?;
    Ok((imported, bundle::write(&answer, &key)))
}
