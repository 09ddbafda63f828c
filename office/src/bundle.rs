//! Change bundles at the office (see `keqing_shared::bundle`): when the
//! line is down for weeks, `keqing bundle export` writes the outbox to a
//! file that travels by hand to headquarters, and `keqing bundle import`
//! applies headquarters' answer as a pull would.

use crate::error::ClientError;
use crate::store::Replica;
use keqing_shared::bundle::{self, BundleBody, BundledChange};
use keqing_shared::sync::{LoggedChange, PullBatch, Snapshot};

type Result<T> = std::result::Result<T, ClientError>;

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub changes: u64,
    pub bytes: u64,
}

/// The bundle of this device's outbox, signed with its credential. The
/// outbox stays as it is until an answer says headquarters holds it.
pub fn export(replica: &Replica) -> Result<(Vec<u8>, Exported)> {
    let state = replica.sync_state()?.ok_or_else(|| {
        ClientError::Invalid(
            "未注册 a bundle is a device's: enrol this replica with headquarters first (keqing enroll)".into(),
        )
    })?;
    let mut changes = Vec::new();
    let mut after = 0;
    let mut size = 0usize;
    loop {
        let rows = replica.outbox_batch(after, 1000)?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            break;
        };
        after = last;
        for r in rows {
            size += r.bytes.len();
            changes.push(BundledChange {
                doc_id: r.doc_id,
                bytes: r.bytes,
            });
        }
        // Base64 makes 4 of every 3 bytes.
        if size / 3 * 4 > bundle::MAX_BUNDLE_BYTES - 1024 * 1024 {
            return Err(ClientError::Invalid(format!(
                "变更包过大 the outbox holds {size} bytes: more than one bundle carries; sync when the line is back"
            )));
        }
    }
    let body = BundleBody::Changes {
        device_id: state.device_id.clone(),
        office: replica.meta().office.clone(),
        made_at: keqing_host::now_cst_text(),
        cursor: state.cursor,
        epoch: state.epoch.clone().unwrap_or_default(),
        changes,
    };
    let n = match &body {
        BundleBody::Changes { changes, .. } => changes.len() as u64,
        BundleBody::Answer { .. } => 0,
    };
    let bytes = bundle::write(&body, &bundle::key_of_token(&state.token));
    let len = bytes.len() as u64;
    Ok((
        bytes,
        Exported {
            changes: n,
            bytes: len,
        },
    ))
}

/// What importing an answer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AnswerApplied {
    pub snapshots: u64,
    pub changes: u64,
    /// Outbox changes headquarters holds now, forgotten here.
    pub stored: u64,
    /// Outbox changes headquarters refused, set aside (`keqing quarantine list`).
    pub refused: u64,
    pub quarantined: u64,
    /// Whether the answer held all there was.
    pub complete: bool,
    pub cursor: u64,
}

/// Applies headquarters' answer to this device's bundle, as a pull: the
/// snapshots and changes, the cursor; forgets the outbox changes it says
/// are stored, sets aside those it refused. A file that is not an answer
/// for this device, or was changed, is refused and nothing changes.
/// Applying it twice changes nothing more.
pub fn import_answer(replica: &mut Replica, bytes: &[u8]) -> Result<AnswerApplied> {
    let state = replica
        .sync_state()?
        .ok_or_else(|| ClientError::Invalid("未注册 this replica is not enrolled".into()))?;
    let bad = |e: bundle::BundleError| ClientError::Invalid(e.to_string());
    let body = bundle::read(bytes)
        .map_err(bad)?
        .verify(&bundle::key_of_token(&state.token))
        .map_err(bad)?;
    let BundleBody::Answer {
        device_id,
        epoch,
        cursor,
        complete,
        snapshots,
        changes,
        stored,
        refused,
        ..
    } = body
    else {
        return Err(ClientError::Invalid(
            "这是设备的变更包 this is a device's bundle, for keqing-server bundle import".into(),
        ));
    };
    if device_id != state.device_id {
        return Err(ClientError::Invalid(format!(
            "不是本设备的回复 this answer is for device {device_id}"
        )));
    }
    let mut done = AnswerApplied {
        complete,
        cursor,
        ..Default::default()
    };
    // Set aside first: what follows a refused change in its dossier
    // depends on it (as a live push's refusal).
    for r in &refused {
        if let Some((doc_id, seq)) = replica.outbox_row_of(&r.hash)? {
            done.refused += replica.refuse_outbox(&doc_id, seq, &r.reason)?;
        }
    }
    done.stored = replica.forget_outbox(&stored)?;
    // Applied in pieces of a pull batch's size; the cursor moves with the
    // last (an answer cut short by a crash is applied again whole).
    let snapshots: Vec<Snapshot> = snapshots
        .into_iter()
        .map(|s| Snapshot {
            doc_id: s.doc_id,
            document: s.document,
        })
        .collect();
    let changes: Vec<LoggedChange> = changes
        .into_iter()
        .map(|c| LoggedChange {
            seq: c.seq,
            doc_id: c.doc_id,
            bytes: c.bytes,
        })
        .collect();
    done.snapshots = snapshots.len() as u64;
    done.changes = changes.len() as u64;
    let piece = keqing_shared::sync::limits::PULL_BATCH as usize;
    for s in snapshots.chunks(piece) {
        done.quarantined += replica.apply_remote(&PullBatch {
            snapshots: s.to_vec(),
            epoch: epoch.clone(),
            ..Default::default()
        })? as u64;
    }
    for c in changes.chunks(piece) {
        done.quarantined += replica.apply_remote(&PullBatch {
            changes: c.to_vec(),
            epoch: epoch.clone(),
            ..Default::default()
        })? as u64;
    }
    replica.apply_remote(&PullBatch {
        cursor,
        epoch,
        done: complete,
        ..Default::default()
    })?;
    Ok(done)
}
