//! Sync with `keqing-server`: enrol the replica, push the outbox, pull the
//! feed of the office's scope.
//!
//! Office work never waits for this: every command works on the replica
//! alone, and sync moves what has accumulated whenever the server can be
//! reached. A push deletes outbox rows only after the server acknowledged
//! them (its commit is durable), and each pulled batch is applied together
//! with its cursor in one transaction, so a sync cut off at any point
//! resumes without loss or duplication.

use crate::desk::Desk;
use crate::error::{ClientError, SyncFailure};
use crate::store::Replica;
use keqing_host::now_cst;
use keqing_proto::SyncConnection;
use keqing_shared::sync::{
    ChangeEnvelope, ClientTls, DocHeads, PushAck, SyncError, SyncErrorKind, limits,
};
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
        SyncErrorKind::Unauthenticated => {
            " (the token or certificate is wrong, or the device was revoked)"
        }
        _ => "",
    };
    ClientError::Sync {
        failure: SyncFailure::of(e.kind),
        message: format!("{}{hint}", e.message),
    }
}

/// A sync error of this device's own making (not enrolled, a task that
/// failed): nothing the server said.
fn local_failure(message: impl Into<String>) -> ClientError {
    ClientError::Sync {
        failure: SyncFailure::Refused,
        message: message.into(),
    }
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
    /// Pulled documents whose data did not merge, put aside this round
    /// (`keqing quarantine list` lists them).
    pub quarantined: u64,
    /// This device's own changes the server refused for good, set aside
    /// this round with the changes of their dossiers held behind them
    /// (`keqing quarantine list` lists them): the rest of the outbox
    /// synced.
    pub refused: u64,
    /// The server that answered the round (of the replica's list).
    pub server: String,
    /// This device's reads of patient data now in the server's read audit.
    pub reads_sent: u64,
    /// Reads of the office's other devices fetched for the office's audit.
    pub office_reads: u64,
    /// Dossiers retention had dropped here, fetched back because they
    /// changed at another device.
    pub fetched_back: u64,
    /// Dossiers this round's retention dropped from this device.
    pub dropped: u64,
    /// Dossiers headquarters transferred here, fetched whole.
    pub transferred_in: u64,
    /// Dossiers headquarters transferred to another office, dropped from
    /// this device (after what was typed here reached the server).
    pub transferred_out: u64,
    /// Dossiers headquarters erased, erased from this device.
    pub erased: u64,
}

/// Something to tell the person at the terminal while a sync runs.
pub trait Progress {
    fn pushing(&mut self, done: u64, total: u64);
    fn pulling(&mut self, items: u64);
    /// After a first sync's pull: the indexes set aside are being built
    /// (~4 s for 100k dossiers; longer with the nation's).
    fn indexing(&mut self) {}
}

/// No progress output (tests, `--json`).
pub struct Quiet;
impl Progress for Quiet {
    fn pushing(&mut self, _: u64, _: u64) {}
    fn pulling(&mut self, _: u64) {}
}

/// Server addresses a replica keeps at most.
pub const MAX_SERVERS: usize = 16;

/// Parses a list of server addresses as typed (`URL1,URL2`): each an
/// http:// or https:// address, none twice, at least one.
pub fn parse_servers(text: &str) -> Result<Vec<String>> {
    let mut servers: Vec<String> = Vec::new();
    for s in text.split(',').map(str::trim) {
        let scheme_ok = s.starts_with("http://") || s.starts_with("https://");
        if !scheme_ok || s.chars().any(char::is_whitespace) {
            return Err(ClientError::Invalid(format!(
                "服务器地址 {} 无效: an address is http://HOST:PORT or https://HOST:PORT, several separated by commas",
                keqing_shared::printable::printable(s)
            )));
        }
        if !servers.iter().any(|known| known == s) {
            servers.push(s.to_string());
        }
    }
    if servers.len() > MAX_SERVERS {
        return Err(ClientError::Invalid(format!(
            "{} server addresses; at most {MAX_SERVERS}",
            servers.len()
        )));
    }
    Ok(servers)
}

/// Connects to the first of `servers` that answers, in order; the error
/// of the last one when none does.
async fn connect_any(
    servers: &[String],
    token: &str,
    tls: &ClientTls,
) -> Result<(SyncConnection, usize)> {
    let mut failed = local_failure("no server address is configured (keqing servers add URL)");
    for (i, server) in servers.iter().enumerate() {
        match SyncConnection::connect_with(server, token, CONNECT_TIMEOUT, tls).await {
            Ok(conn) => return Ok((conn, i)),
            Err(e) => failed = sync_err(e),
        }
    }
    Err(failed)
}

/// Enrols `dir` with the server (the first of `servers` that answers;
/// they are processes of one store): a fresh directory becomes a replica
/// of the token's office; an existing one keeps its data and must be of
/// that office.
pub async fn enroll(
    dir: &Path,
    servers: &[String],
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
    let (mut conn, _) = connect_any(servers, token, tls).await?;
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
                return Err(local_failure(format!(
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
        .set_sync_target(servers, token, &info.device_id, tls)?;
    Ok(desk)
}

/// Adds a server address (another process of the same store) to the
/// replica's list, tried after the others; the cursor stays.
pub fn add_server(replica: &mut Replica, url: &str) -> Result<Vec<String>> {
    let mut servers = enrolled(replica)?.servers;
    for s in parse_servers(url)? {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    if servers.len() > MAX_SERVERS {
        return Err(ClientError::Invalid(format!(
            "at most {MAX_SERVERS} server addresses"
        )));
    }
    replica.set_servers(&servers)?;
    Ok(servers)
}

/// Replaces the TLS files kept in an enrolled replica: the CA certificate
/// if `new` has one, the device's certificate and key (together) if it has
/// them. The cursor, the outbox and the token stay. Returns what is kept.
pub fn replace_tls(replica: &mut Replica, new: &ClientTls) -> Result<ClientTls> {
    let mut tls = enrolled(replica)?.tls;
    if new.cert_pem.is_some() != new.key_pem.is_some() {
        return Err(ClientError::Invalid(
            "a certificate needs its private key, and a key its certificate".into(),
        ));
    }
    if let Some(ca) = &new.ca_pem {
        tls.ca_pem = Some(ca.clone());
    }
    if new.cert_pem.is_some() {
        tls.cert_pem = new.cert_pem.clone();
        tls.key_pem = new.key_pem.clone();
    }
    replica.set_tls(&tls)?;
    Ok(tls)
}

/// Removes a server address from the replica's list (never the last).
pub fn remove_server(replica: &mut Replica, url: &str) -> Result<Vec<String>> {
    let mut servers = enrolled(replica)?.servers;
    let before = servers.len();
    servers.retain(|s| s != url.trim());
    if servers.len() == before {
        return Err(ClientError::Invalid(format!(
            "{} is not in this replica's server list",
            keqing_shared::printable::printable(url)
        )));
    }
    if servers.is_empty() {
        return Err(ClientError::Invalid(
            "the last server address cannot be removed (add another first)".into(),
        ));
    }
    replica.set_servers(&servers)?;
    Ok(servers)
}

fn enrolled(replica: &Replica) -> Result<crate::store::SyncState> {
    replica.sync_state()?.ok_or_else(|| {
        local_failure("this replica is not enrolled: run `keqing enroll --server URL --token T`")
    })
}

/// One round: push the whole outbox, then pull everything new.
pub async fn sync_once(
    replica: &mut Replica,
    progress: &mut (dyn Progress + Send),
) -> Result<SyncSummary> {
    sync_once_with(replica, progress, limits::PUSH_BATCH).await
}

/// [`sync_once`] pushing at most `push_batch` changes per request (tests
/// use small batches to push many of them).
pub async fn sync_once_with(
    replica: &mut Replica,
    progress: &mut (dyn Progress + Send),
    push_batch: usize,
) -> Result<SyncSummary> {
    let push_batch = push_batch.clamp(1, limits::PUSH_BATCH);
    let state = enrolled(replica)?;
    // A first sync into an empty replica fills every projection table from
    // nothing (a whole province, or the nation at headquarters): the
    // indexes only reads use are set aside and built once the pull is in.
    if state.cursor == 0 && replica.dossier_count()? == 0 {
        replica.set_projection_indexes_aside()?;
    }
    // Everything a sync writes can be had again from the server: a lost ack
    // means a harmless re-push, a lost batch is pulled again with its cursor.
    // So these commits need not wait for fsync; only office edits, which
    // exist nowhere else, do (other connections keep synchronous=FULL).
    replica.set_bulk_load(true)?;
    // Failover: the servers serve one store, so a round cut off (or never
    // begun) at one goes on at the next; what the first had acknowledged
    // is answered as duplicates, and the pull resumes from the cursor.
    let mut from = 0;
    let outcome = loop {
        let (mut conn, k) =
            match connect_any(&state.servers[from..], &state.token, &state.tls).await {
                Ok(connected) => connected,
                Err(e) => break Err(e),
            };
        let at = from + k;
        match round(replica, &mut conn, progress, push_batch).await {
            Err(ClientError::Sync {
                failure: SyncFailure::Offline,
                ..
            }) if at + 1 < state.servers.len() => from = at + 1,
            Ok(mut summary) => {
                summary.server = state.servers[at].clone();
                break Ok((summary, at));
            }
            other => break other.map(|summary| (summary, at)),
        }
    };
    // Built here too when the round failed before its pull ended; a no-op
    // when it built them or set none aside.
    let indexed = replica.restore_projection_indexes();
    let now = fmt_datetime(now_cst());
    let recorded = match &outcome {
        Ok(_) => replica.record_sync(&now, None),
        Err(ClientError::Sync { failure, message }) => {
            replica.record_sync(&now, Some((*failure, message)))
        }
        // A fault of this replica (its disk, say): the server is not to
        // blame, but the round did not happen.
        Err(e) => replica.record_sync(&now, Some((SyncFailure::Refused, &e.to_string()))),
    };
    replica.set_bulk_load(false)?;
    indexed?;
    recorded?;
    let (summary, answered) = outcome?;
    if answered > 0 {
        // The one that answered is tried first next time.
        let mut servers = state.servers;
        let first = servers.remove(answered);
        servers.insert(0, first);
        replica.set_servers(&servers)?;
    }
    Ok(summary)
}

async fn round(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    progress: &mut (dyn Progress + Send),
    push_batch: usize,
) -> Result<SyncSummary> {
    let mut summary = SyncSummary::default();
    let mut gone = Vec::new();
    // Each call says what the device has waiting (fleet health at
    // headquarters): before the push, and again before the pull.
    conn.set_client_state(&client_state(replica)?);
    push_outbox(replica, conn, progress, &mut summary, push_batch, &mut gone).await?;
    conn.set_client_state(&client_state(replica)?);
    let state = replica.sync_state()?;
    let cursor = state.as_ref().map(|s| s.cursor).unwrap_or(0);
    let epoch = state.and_then(|s| s.epoch).unwrap_or_default();
    let mut batches = conn
        .pull(cursor, &epoch, limits::PULL_BATCH)
        .await
        .map_err(sync_err)?;
    let mut restored = false;
    let mut reached_end = false;
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
        summary.quarantined += replica.apply_remote(&batch)? as u64;
        progress.pulling(summary.pulled_changes + summary.pulled_snapshots);
        if batch.done {
            reached_end = true;
            break;
        }
    }
    if !reached_end {
        // The server ended the feed early (it was shutting down, or this
        // device took too long over a batch): what arrived is applied and
        // the cursor moved, but the round did not bring the replica up to
        // date, and must not say it did.
        return Err(ClientError::Sync {
            failure: SyncFailure::Offline,
            message: "拉取未完成 the server ended the pull before its end; what arrived is kept, sync again for the rest"
                .into(),
        });
    }
    // Before anything reads the projection (notices, retention).
    if replica.projection_indexes_aside()? {
        progress.indexing();
        replica.restore_projection_indexes()?;
    }
    if restored {
        replica.set_notices_cursor(0)?;
        push_outbox(replica, conn, progress, &mut summary, push_batch, &mut gone).await?;
    }
    share_reads(replica, conn, &mut summary).await?;
    let transferred_in = apply_notices(replica, conn, &mut summary, gone).await?;
    if !transferred_in.is_empty() {
        summary.transferred_in = transferred_in.len() as u64;
        summary.repaired += repair_documents(replica, conn, &transferred_in).await?;
    }
    // Dossiers this device does not hold that changes arrived for (retention
    // dropped them and they changed at another device, or they came here
    // by a transfer) are fetched back whole (their changes waited for it).
    let back: Vec<String> = replica
        .dropped_with_changes()?
        .into_iter()
        .filter(|id| !transferred_in.contains(id))
        .collect();
    if !back.is_empty() {
        summary.fetched_back = back.len() as u64;
        summary.repaired += repair_documents(replica, conn, &back).await?;
    }
    summary.transferred_out = replica.drop_moved_away(&fmt_datetime(now_cst()))?.len() as u64;
    summary.dropped = apply_retention(replica)?.len() as u64;
    summary.cursor = replica.sync_state()?.map(|s| s.cursor).unwrap_or(0);
    Ok(summary)
}

/// What this device says of itself with each call: its version, its
/// outbox, and what it set aside (refused changes, quarantined data).
pub fn client_state(replica: &Replica) -> Result<keqing_shared::sync::ClientState> {
    Ok(keqing_shared::sync::ClientState {
        version: env!("CARGO_PKG_VERSION").to_string(),
        outbox: replica.outbox_len()?,
        quarantined: replica.refused(0)?.0 + replica.quarantined(0)?.0,
    })
}

/// Drops the dossiers older than this device's retention (if it keeps
/// one), by today's date: what a completed sync round and `keqing
/// retention set` do.
pub fn apply_retention(replica: &mut Replica) -> Result<Vec<String>> {
    let Some(years) = replica.retention_years()? else {
        return Ok(Vec::new());
    };
    let today = now_cst().date();
    let cutoff = today
        .checked_sub_months(chrono::Months::new(years.saturating_mul(12)))
        .unwrap_or(today);
    replica.drop_inactive(cutoff, &fmt_datetime(now_cst()))
}

/// Most notice answers read in one round (each up to
/// `limits::NOTICES_PER_ANSWER`): the rest come in the next rounds.
const NOTICE_ANSWERS_PER_ROUND: usize = 20;

/// Reads headquarters' notices after this device's cursor (and asks about
/// the dossiers in `gone`, which the server refused a change to as gone)
/// and acts on them: an erased dossier is erased here at once (and the
/// file scrubbed); one moved away from this office is marked, to be
/// dropped once nothing typed here waits for the server; the ids of those
/// moved to this office that this device lacks are returned, to fetch.
/// A headquarters device holds every office's: it only erases.
async fn apply_notices(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    summary: &mut SyncSummary,
    gone: Vec<String>,
) -> Result<Vec<String>> {
    use keqing_shared::lifecycle::{NoticeKind, NoticeRequest};
    let office = replica.meta().office.clone();
    let headquarters = office == crate::desk::HQ_OFFICE;
    let mut fetch = Vec::new();
    let mut ask: Vec<String> = gone;
    ask.sort();
    ask.dedup();
    ask.truncate(limits::NOTICES_PER_ANSWER);
    for _ in 0..NOTICE_ANSWERS_PER_ROUND {
        let cursor = replica.notices_cursor()?;
        let answer = conn
            .notices(NoticeRequest {
                cursor,
                ask: std::mem::take(&mut ask),
            })
            .await
            .map_err(sync_err)?;
        for n in &answer.notices {
            match &n.kind {
                NoticeKind::Erased => {
                    let at =
                        keqing_shared::when::read_stored_datetime(&n.at).unwrap_or_else(now_cst);
                    let pseudonym = format!(
                        "{}{}",
                        keqing_shared::lifecycle::ERASED_PREFIX,
                        uuid::Uuid::new_v4().simple()
                    );
                    if replica.erase_dossier(&n.doc_id, at, &pseudonym)? {
                        summary.erased += 1;
                    }
                }
                NoticeKind::Transferred { .. } if headquarters => {}
                NoticeKind::Transferred { to, .. } if *to == office => {
                    replica.unmark_moved_away(&n.doc_id)?;
                    if replica.heads_of(&n.doc_id)?.is_empty() && !replica.is_erased(&n.doc_id)? {
                        fetch.push(n.doc_id.clone());
                    }
                }
                NoticeKind::Transferred { from, to } if *from == office => {
                    replica.mark_moved_away(&n.doc_id, to, &n.at)?;
                }
                NoticeKind::Transferred { .. } => {}
            }
        }
        if answer.cursor > cursor {
            replica.set_notices_cursor(answer.cursor)?;
        }
        if !answer.more {
            break;
        }
    }
    // Owed by these erasures, or by an earlier sync's whose scrub did not
    // finish.
    if replica.scrub_owed()? {
        replica.scrub()?;
    }
    fetch.sort();
    fetch.dedup();
    Ok(fetch)
}

/// Most reads exchanges in one round: a device that comes back after a
/// long time sends the rest in the next rounds.
const READS_EXCHANGES_PER_ROUND: usize = 40;

/// Sends this device's reads the server lacks (the office's audit of who
/// read what) and fetches the office's other devices' reads, one bounded
/// exchange at a time.
async fn share_reads(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    summary: &mut SyncSummary,
) -> Result<()> {
    for _ in 0..READS_EXCHANGES_PER_ROUND {
        let exchange = replica.reads_to_share(limits::READS_PER_EXCHANGE)?;
        let sent = exchange.reads.len();
        let answer = conn.share_reads(exchange).await.map_err(sync_err)?;
        replica.reads_shared(&answer)?;
        summary.reads_sent += sent as u64;
        summary.office_reads += answer.office.len() as u64;
        if sent < limits::READS_PER_EXCHANGE && !answer.more {
            break;
        }
    }
    Ok(())
}

/// Push batches in flight at once: the next batch is read, sent and
/// decoded by the server while the server appends the one before.
const PUSHES_IN_FLIGHT: usize = 2;

/// A push running on the runtime, cancelled if dropped (a failed round
/// does not leave pushes behind it).
struct PushTask(tokio::task::JoinHandle<std::result::Result<PushAck, SyncError>>);

impl Drop for PushTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One push batch on its way.
struct InFlight {
    task: PushTask,
    /// Its last outbox row.
    last: i64,
    /// Each change's document and outbox row, in push order (a refusal
    /// names a change by its index).
    rows: Vec<(String, i64)>,
    docs: std::collections::HashSet<String>,
}

/// The next outbox rows to push after `after`, given the documents of the
/// batches in flight: at most `limit` rows and `limits::PUSH_BATCH_BYTES`
/// bytes (at least one row), well under what the server takes in one
/// message. Pipelined pushes may reach the server's writer in either
/// order, so a batch touches no document an earlier batch in flight
/// touches (a change depends only on earlier changes of its document: each
/// batch is then complete on its own, whichever lands first); it stops
/// before the first row that would, and is empty when that is its first.
/// It also does not end inside a run of one document's rows when it can
/// help it, so a dossier's changes (its creation and first edits) travel
/// together and the next batch need not wait for this one.
fn next_push_batch(
    replica: &Replica,
    after: i64,
    limit: usize,
    in_flight: impl Fn(&str) -> bool,
) -> Result<Vec<crate::store::OutboxRow>> {
    let mut batch = replica.outbox_batch(after, limit + 1)?;
    let mut bytes = 0usize;
    let by_bytes = batch.iter().position(|r| {
        bytes += r.bytes.len();
        bytes > limits::PUSH_BATCH_BYTES
    });
    let end = match by_bytes {
        Some(0) => 1,
        Some(i) => i.min(limit),
        None => limit,
    };
    if batch.len() > end {
        let cut = &batch[end].doc_id;
        let keep = batch[..end]
            .iter()
            .rposition(|r| &r.doc_id != cut)
            .map_or(end, |i| i + 1);
        batch.truncate(keep);
    }
    if let Some(clash) = batch.iter().position(|r| in_flight(&r.doc_id)) {
        batch.truncate(clash);
    }
    Ok(batch)
}

/// Pushes the whole outbox in batches, a few in flight; each acknowledged
/// batch (durable on the server) is deleted from it, in order. A batch
/// acknowledged after an earlier one failed stays in the outbox and is
/// pushed again next time, which the server counts as duplicates.
///
/// A change the server refuses for good (its refusal names it) does not
/// stop the rest: it and the later changes of its dossier (which depend on
/// it) leave the outbox for `refused_changes` with the server's reason
/// (`keqing quarantine list`), and the rest is pushed again. So is a change
/// larger than any server takes, before it is even sent.
async fn push_outbox(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    progress: &mut (dyn Progress + Send),
    summary: &mut SyncSummary,
    push_batch: usize,
    gone: &mut Vec<String>,
) -> Result<()> {
    summary.refused += replica.hold_behind_refused()?;
    for (doc_id, seq, len) in replica.outbox_larger_than(limits::MAX_CHANGE_BYTES)? {
        let reason = format!(
            "超出上限 a change of {len} bytes; a server takes at most {} (made by an older keqing?)",
            limits::MAX_CHANGE_BYTES
        );
        summary.refused += replica.refuse_outbox(&doc_id, seq, &reason)?;
    }
    let total = replica.outbox_len()?;
    let (pushed_before, duplicates_before) = (summary.pushed, summary.duplicates);
    let mut sent_upto = 0;
    let mut in_flight = std::collections::VecDeque::new();
    // The stretches of the log this round's pushes filled (see
    // `Replica::ack_push`), and the server epoch they belong to.
    let mut own = std::collections::BTreeMap::new();
    let mut own_epoch = String::new();
    loop {
        while in_flight.len() < PUSHES_IN_FLIGHT {
            let batch = next_push_batch(replica, sent_upto, push_batch, |doc| {
                in_flight.iter().any(|f: &InFlight| f.docs.contains(doc))
            })?;
            let Some(last) = batch.last().map(|r| r.seq) else {
                break;
            };
            sent_upto = last;
            let docs = batch.iter().map(|r| r.doc_id.clone()).collect();
            let rows = batch.iter().map(|r| (r.doc_id.clone(), r.seq)).collect();
            let changes = batch
                .into_iter()
                .map(|r| ChangeEnvelope {
                    doc_id: r.doc_id,
                    bytes: r.bytes,
                })
                .collect::<Vec<_>>();
            let mut conn = conn.clone();
            in_flight.push_back(InFlight {
                task: PushTask(tokio::spawn(async move { conn.push(changes).await })),
                last,
                rows,
                docs,
            });
        }
        let Some(mut head) = in_flight.pop_front() else {
            break;
        };
        let pushed = (&mut head.task.0)
            .await
            .map_err(|e| local_failure(format!("push task failed: {e}")))?;
        let ack = match pushed {
            Ok(ack) => ack,
            Err(e) => {
                // A refusal about one change: set it aside with what follows
                // it in its dossier, and push what is left from the start
                // (anything already in flight again: duplicates are harmless).
                let Some((doc_id, seq)) = e.change.and_then(|i| head.rows.get(i as usize)).cloned()
                else {
                    return Err(sync_err(e));
                };
                let reason = format!("{} ({:?})", e.message, e.kind);
                if e.kind == keqing_shared::sync::SyncErrorKind::Gone {
                    // Erased or transferred away: the notices of this round
                    // say which, and the dossier goes from here.
                    gone.push(doc_id.clone());
                }
                summary.refused += replica.refuse_outbox(&doc_id, seq, &reason)?;
                in_flight.clear();
                sent_upto = 0;
                continue;
            }
        };
        // The server's commit is durable: these rows are safe to forget.
        if ack.epoch != own_epoch {
            own.clear();
            own_epoch = ack.epoch.clone();
        }
        if ack.last_seq > ack.log_before {
            own.insert(ack.log_before, ack.last_seq);
        }
        replica.ack_push(head.last, &own, &own_epoch)?;
        summary.pushed += u64::from(ack.accepted);
        summary.duplicates += u64::from(ack.duplicates);
        let done = summary.pushed - pushed_before + summary.duplicates - duplicates_before;
        progress.pushing(done.min(total), total.max(head.rows.len() as u64));
    }
    Ok(())
}

/// Repair: compares every document's heads with the server and applies the
/// changes this replica lacks (e.g. after restoring an old backup).
/// Connects to the server this replica is enrolled with.
async fn connect(replica: &Replica) -> Result<SyncConnection> {
    let state = enrolled(replica)?;
    Ok(connect_any(&state.servers, &state.token, &state.tls)
        .await?
        .0)
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
    let ids: Vec<String> = replica
        .document_heads()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    repair_documents(replica, &mut conn, &ids).await
}

/// Fetches back a dossier retention dropped from this device (the patient
/// called again): the whole of it, from the server. Offline, the error
/// says the server could not be reached.
pub async fn fetch_dossier(replica: &mut Replica, id: &str) -> Result<u64> {
    // (The state is read first: no borrow of the replica is held across
    // the connection, so the workstation can await this on any thread.)
    let state = enrolled(replica)?;
    let (mut conn, _) = connect_any(&state.servers, &state.token, &state.tls).await?;
    repair_documents(replica, &mut conn, &[id.to_string()]).await
}

/// Brings the documents `ids` up to the server's (all of a document this
/// device lacks), a bounded answer at a time.
async fn repair_documents(
    replica: &mut Replica,
    conn: &mut SyncConnection,
    ids: &[String],
) -> Result<u64> {
    let mut applied = 0;
    for chunk in ids.chunks(1000) {
        // The server answers at most `limits::REPAIR_BYTES` at a time, a
        // causally complete prefix of what is missing: ask again with the
        // heads that moved until it says it is complete.
        loop {
            let mut docs = Vec::with_capacity(chunk.len());
            for id in chunk {
                docs.push(DocHeads {
                    doc_id: id.clone(),
                    heads: replica.heads_of(id)?.iter().map(|h| h.0).collect(),
                });
            }
            let answer = conn.repair(docs.clone()).await.map_err(sync_err)?;
            applied += answer.missing.len() as u64;
            let batch = keqing_shared::sync::PullBatch {
                changes: answer
                    .missing
                    .into_iter()
                    .map(|c| keqing_shared::sync::LoggedChange {
                        seq: 0,
                        doc_id: c.doc_id,
                        bytes: c.bytes,
                    })
                    .collect(),
                ..Default::default()
            };
            let nothing = batch.changes.is_empty();
            replica.apply_remote(&batch)?;
            if answer.complete {
                break;
            }
            let moved = chunk
                .iter()
                .zip(&docs)
                .map(|(id, before)| {
                    Ok(replica.heads_of(id)?.len() != before.heads.len()
                        || replica
                            .heads_of(id)?
                            .iter()
                            .map(|h| h.0)
                            .collect::<Vec<_>>()
                            != before.heads)
                })
                .collect::<Result<Vec<bool>>>()?;
            if nothing || !moved.contains(&true) {
                return Err(ClientError::Sync {
                    failure: SyncFailure::ServerFault,
                    message: "the server's repair answer did not move any document; stopped".into(),
                });
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::CallInput;
    use keqing_shared::staff::Role;

    /// Each outbox row's document, as pushed batches would carry them.
    fn docs(rows: &[crate::store::OutboxRow]) -> Vec<&str> {
        rows.iter().map(|r| r.doc_id.as_str()).collect()
    }

    #[test]
    fn a_push_batch_keeps_runs_whole_and_avoids_documents_in_flight() {
        let tmp = tempfile::tempdir().unwrap();
        let mut desk = Desk::init(tmp.path(), "44", "前台1").unwrap();
        desk.add_staff("李娜", Role::Consultant).unwrap();
        let at = keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let call = desk
                .register_call(&CallInput {
                    phone: format!("1380013800{i}"),
                    name: format!("患者{i}"),
                    source: "电视".into(),
                    staff: "李娜".into(),
                    at,
                    force_new: true,
                    ..Default::default()
                })
                .unwrap();
            ids.push(call.dossier_id);
        }
        // The first patient again, after the others.
        desk.edit_patient(&ids[0], |tx| {
            tx.update_patient(&keqing_shared::dossier::PatientUpdate {
                address: Some("广州".into()),
                ..Default::default()
            })
        })
        .unwrap();
        let replica = desk.replica();
        let all = replica.outbox_batch(0, usize::MAX).unwrap();
        let order = docs(&all);
        // The roster's changes, then each dossier's run of changes, then
        // the edit.
        let roster = order
            .iter()
            .take_while(|d| d.starts_with("roster-"))
            .count();
        assert!(roster >= 1);
        let runs: Vec<&str> = order[roster..]
            .iter()
            .copied()
            .fold(Vec::new(), |mut v, d| {
                if v.last() != Some(&d) {
                    v.push(d);
                }
                v
            });
        assert_eq!(
            runs,
            [&ids[0], &ids[1], &ids[2], &ids[0]].map(String::as_str)
        );
        let run = order.iter().filter(|d| **d == ids[1]).count();
        assert!(run >= 2, "a dossier's creation and its call are a run");
        let nobody = |_: &str| false;
        // A limit that ends inside the second dossier's run stops before it.
        let first_run_end = roster + order[roster..].iter().take_while(|d| **d == ids[0]).count();
        let batch = next_push_batch(replica, 0, first_run_end + 1, nobody).unwrap();
        assert_eq!(batch.len(), first_run_end);
        // A run longer than the limit is split: nothing else can be sent.
        let batch = next_push_batch(replica, all[roster - 1].seq, 1, nobody).unwrap();
        assert_eq!(docs(&batch), [ids[0].as_str()]);
        // Everything fits: everything goes.
        let batch = next_push_batch(replica, 0, all.len(), nobody).unwrap();
        assert_eq!(batch, all);
        // The first dossier is in flight: the batch after it stops before
        // its later edit.
        let after_first = all[first_run_end - 1].seq;
        let busy = |d: &str| d == ids[0];
        let batch = next_push_batch(replica, after_first, 1000, busy).unwrap();
        assert_eq!(
            docs(&batch).last().copied(),
            Some(ids[2].as_str()),
            "the second and third dossiers go, the edit of the first waits"
        );
        assert!(!docs(&batch).contains(&ids[0].as_str()));
        // When the first row is the one in flight, nothing goes.
        let last_other = all.iter().rposition(|r| r.doc_id != ids[0]).unwrap();
        let batch = next_push_batch(replica, all[last_other].seq, 1000, busy).unwrap();
        assert!(batch.is_empty());
    }
}
