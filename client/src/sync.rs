//! Sync with `keqing-server`: enrol the replica, push the outbox, pull the
//! feed of the office's scope.
//!
//! Office work never waits for this: every command works on the replica
//! alone, and sync moves what has accumulated whenever the server can be
//! reached. A push deletes outbox rows only after the server acknowledged
//! them (its commit is durable), and each pulled batch is applied together
//! with its cursor in one transaction, so a sync cut off at any point
//! resumes without loss or duplication.

use crate::desk::{Desk, now_cst};
use crate::error::ClientError;
use crate::store::Replica;
use keqing_proto::SyncConnection;
use keqing_shared::sync::{ChangeEnvelope, ClientTls, DocHeads, SyncError, SyncErrorKind, limits};
use keqing_shared::when::fmt_datetime;
use std::path::Path;
use std::time::Duration;

type Result<T> = std::result::Result<T, ClientError>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn sync_err(e: SyncError) -> ClientError {
    let hint = match e.kind {
        SyncErrorKind::Unavailable => {
            " (the server cannot be reached; office work goes on offline)"
        }
        SyncErrorKind::Unauthenticated => " (the token is wrong or the device was revoked)",
        _ => "",
    };
    ClientError::Sync(format!("{}{hint}", e.message))
}

/// What one sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncSummary {
    pub pushed: u64,
    pub duplicates: u64,
    pub pulled_changes: u64,
    pub pulled_snapshots: u64,
    pub cursor: u64,
    pub repaired: u64,
    /// Own changes queued again because the server was restored from a
    /// backup (a new epoch) and may have lost them.
    pub requeued: u64,
}

/// Something to tell the person at the terminal while a sync runs.
pub trait Progress {
    fn pushing(&mut self, done: u64, total: u64);
    fn pulling(&mut self, items: u64);
}

/// No progress output (tests, `--json`).
pub struct Quiet;
impl Progress for Quiet {
    fn pushing(&mut self, _: u64, _: u64) {}
    fn pulling(&mut self, _: u64) {}
}

/// Enrols `dir` with the server: a fresh directory becomes a replica of the
/// token's office; an existing one keeps its data and must be of that office.
pub async fn enroll(
    dir: &Path,
    server: &str,
    token: &str,
    device_name: Option<&str>,
    tls: &ClientTls,
) -> Result<Desk> {
    let existing = match Desk::open(dir) {
        Ok(desk) => Some(desk),
        Err(ClientError::NotInitialised(_)) => None,
        Err(e) => return Err(e),
    };
    let actor = match &existing {
        Some(d) => d.replica().meta().actor.clone(),
        None => automerge::ActorId::from(uuid::Uuid::new_v4().as_bytes().as_slice()),
    };
    let mut conn = SyncConnection::connect_with(server, token, CONNECT_TIMEOUT, tls)
        .await
        .map_err(sync_err)?;
    let info = conn
        .enroll(actor.to_bytes().to_vec())
        .await
        .map_err(sync_err)?;
    let office = info
        .office
        .clone()
        .unwrap_or_else(|| crate::desk::HQ_OFFICE.to_string());
    let mut desk = match existing {
        Some(desk) => {
            if desk.office() != office {
                return Err(ClientError::Sync(format!(
                    "this replica is office {} but the token is for {}; nothing changed",
                    desk.office(),
                    office
                )));
            }
            desk
        }
        None => {
            let name = device_name.unwrap_or(&info.name);
            Desk::init_with_actor(dir, &office, name, actor)?
        }
    };
    desk.replica_mut()
        .set_sync_target(server, token, &info.device_id, tls)?;
    Ok(desk)
}

/// One round: push the whole outbox, then pull everything new.
pub async fn sync_once(
    replica: &mut Replica,
    progress: &mut (dyn Progress + Send),
) -> Result<SyncSummary> {
    let state = replica.sync_state()?.ok_or_else(|| {
        ClientError::Sync(
            "this replica is not enrolled: run `keqing enroll --server URL --token T`".into(),
        )
    })?;
    // Everything a sync writes can be had again from the server: a lost ack
    // means a harmless re-push, a lost batch is pulled again with its cursor.
    // So these commits need not wait for fsync; only office edits, which
    // exist nowhere else, do (other connections keep synchronous=FULL).
    replica.set_bulk_load(true)?;
    let outcome = match SyncConnection::connect_with(
        &state.server,
        &state.token,
        CONNECT_TIMEOUT,
        &state.tls,
    )
    .await
    {
        Ok(mut conn) => round(replica, &mut conn, progress).await,
        Err(e) => Err(sync_err(e)),
    };
    let now = fmt_datetime(now_cst());
    let recorded = match &outcome {
        Ok(_) => replica.record_sync(&now, None),
        Err(e) => replica.record_sync(&now, Some(&e.to_string())),
    };
    replica.set_bulk_load(false)?;
    recorded?;
    outcome
}

async fn round(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    progress: &mut (dyn Progress + Send),
) -> Result<SyncSummary> {
    let mut summary = SyncSummary::default();
    push_outbox(replica, conn, progress, &mut summary).await?;
    let state = replica.sync_state()?;
    let cursor = state.as_ref().map(|s| s.cursor).unwrap_or(0);
    let epoch = state.and_then(|s| s.epoch).unwrap_or_default();
    let mut batches = conn
        .pull(cursor, &epoch, limits::PULL_BATCH)
        .await
        .map_err(sync_err)?;
    let mut restored = false;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(sync_err)?;
        if !restored && !epoch.is_empty() && batch.epoch != epoch {
            // The server was restored from a backup: it starts us over from
            // its snapshots, and may lack changes it once acknowledged.
            restored = true;
            summary.requeued = replica.requeue_own_changes()?;
        }
        summary.pulled_changes += batch.changes.len() as u64;
        summary.pulled_snapshots += batch.snapshots.len() as u64;
        replica.apply_remote(&batch)?;
        progress.pulling(summary.pulled_changes + summary.pulled_snapshots);
        if batch.done {
            break;
        }
    }
    if restored {
        push_outbox(replica, conn, progress, &mut summary).await?;
    }
    summary.cursor = replica.sync_state()?.map(|s| s.cursor).unwrap_or(0);
    Ok(summary)
}

/// Pushes the whole outbox in batches; each acknowledged batch (durable on
/// the server) is deleted from it.
async fn push_outbox(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    progress: &mut (dyn Progress + Send),
    summary: &mut SyncSummary,
) -> Result<()> {
    let total = replica.outbox_len()?;
    let (pushed_before, duplicates_before) = (summary.pushed, summary.duplicates);
    loop {
        let batch = replica.outbox_batch(limits::PUSH_BATCH)?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            break;
        };
        let changes = batch
            .into_iter()
            .map(|r| ChangeEnvelope {
                doc_id: r.doc_id,
                bytes: r.bytes,
            })
            .collect::<Vec<_>>();
        let n = changes.len() as u64;
        let ack = conn.push(changes).await.map_err(sync_err)?;
        // The server's commit is durable: these rows are safe to forget.
        replica.ack_outbox(last)?;
        summary.pushed += u64::from(ack.accepted);
        summary.duplicates += u64::from(ack.duplicates);
        let done = summary.pushed - pushed_before + summary.duplicates - duplicates_before;
        progress.pushing(done.min(total), total.max(n));
    }
    Ok(())
}

/// Repair: compares every document's heads with the server and applies the
/// changes this replica lacks (e.g. after restoring an old backup).
/// Connects to the server this replica is enrolled with.
async fn connect(replica: &Replica) -> Result<SyncConnection> {
    let state = replica
        .sync_state()?
        .ok_or_else(|| ClientError::Sync("this replica is not enrolled".into()))?;
    SyncConnection::connect_with(&state.server, &state.token, CONNECT_TIMEOUT, &state.tls)
        .await
        .map_err(sync_err)
}

/// A report computed by the server from the merged dossiers of every
/// office (headquarters devices; an office device may ask for its own).
pub async fn server_report(
    replica: &Replica,
    scope: &keqing_shared::report::Scope,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<keqing_shared::report::Report> {
    let mut conn = connect(replica).await?;
    conn.report(scope, from, to).await.map_err(sync_err)
}

pub async fn repair(replica: &mut Replica) -> Result<u64> {
    let mut conn = connect(replica).await?;
    let heads = replica.document_heads()?;
    let mut applied = 0;
    for chunk in heads.chunks(1000) {
        let docs = chunk
            .iter()
            .map(|(id, h)| DocHeads {
                doc_id: id.clone(),
                heads: h.iter().map(|h| h.0).collect(),
            })
            .collect();
        let missing = conn.repair(docs).await.map_err(sync_err)?;
        applied += missing.len() as u64;
        let batch = keqing_shared::sync::PullBatch {
            changes: missing
                .into_iter()
                .map(|c| keqing_shared::sync::LoggedChange {
                    seq: 0,
                    doc_id: c.doc_id,
                    bytes: c.bytes,
                })
                .collect(),
            ..Default::default()
        };
        replica.apply_remote(&batch)?;
    }
    Ok(applied)
}
