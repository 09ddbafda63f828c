//! A dossier's life at headquarters: transfers between offices and
//! erasures on request. The one path of `keqing-server transfer` / `erase`
//! and of the dashboard's forms.
//!
//! A transfer is the server's own automerge change to the dossier (the
//! record `transfer/<id>` and the root `office`), logged under the new
//! office, with the server's record of the document's office moved and a
//! notice for the devices of both offices: the new office's fetch the
//! whole dossier, the old office's drop it once what they typed before is
//! delivered (the hub still takes that, see `hub::fate_for`).
//!
//! An erasure takes every logged change and the snapshot out of the store,
//! replaces the dossier's projection rows by a stand-in without identity
//! (so the figures of days already reported stay), keeps a tombstone (id,
//! offices, when, why, by whom) that the devices learn of as a notice,
//! appends it to the erasure ledger (for `restore`), and scrubs the store's
//! files.

use crate::store::{
    DocumentState, ErasureRequest, FATE_ERASE, FATE_TRANSFER, Fate, LogWriter, NewFate,
    NewLogEntry, Store, StoreError,
};
use keqing_shared::dossier::{Dossier, DossierView};
use keqing_shared::records::Transfer;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("找不到档案 no dossier `{0}` at the server")]
    NoDossier(String),
    #[error("档案已删除 dossier `{0}` was erased")]
    Erased(String),
    #[error("不是病历档案 `{0}` is not a patient dossier")]
    NotADossier(String),
    #[error("输入无效 {0}")]
    Invalid(String),
    #[error(
        "还没有删除申请 no erasure of `{0}` was asked for: run `keqing-server erase --dossier {0} --reason …` first, then `--confirm`"
    )]
    NotRequested(String),
    #[error("档案无法读取 dossier `{0}` does not load: {1}")]
    Damaged(String, String),
    #[error("删除记录文件 `{0}`: {1}")]
    Ledger(String, #[source] std::io::Error),
}

type Result<T> = std::result::Result<T, LifecycleError>;

/// What the change log names as the writer of transfers.
pub const TRANSFER_WRITER: &str = "keqing-server transfer";

/// The automerge actor of the server's transfer changes (no device's: the
/// hub refuses a device change that writes a transfer).
fn transfer_actor() -> automerge::ActorId {
    automerge::ActorId::from(&b"keqing-hq-transfer"[..])
}

/// Most characters of a transfer's or an erasure's reason.
const REASON_CHARS: usize = 200;

fn check_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(LifecycleError::Invalid(
            "原因不能为空 --reason is required".into(),
        ));
    }
    if reason.chars().count() > REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(LifecycleError::Invalid(format!(
            "原因 --reason: at most {REASON_CHARS} characters, on one line"
        )));
    }
    Ok(reason.to_string())
}

/// A dossier as the store holds it, read in the writer's turn.
struct Held {
    office: String,
    dossier: Dossier,
    complete: bool,
}

fn held(writer: &dyn LogWriter, doc_id: &str) -> Result<Held> {
    if keqing_shared::nonpatient::shared_document_genesis(doc_id).is_some()
        || keqing_shared::catalog::parse_catalog_id(doc_id).is_some()
    {
        return Err(LifecycleError::NotADossier(doc_id.to_string()));
    }
    if writer
        .fates_among(&[doc_id])?
        .get(doc_id)
        .is_some_and(|f| f.iter().any(Fate::is_erasure))
    {
        return Err(LifecycleError::Erased(doc_id.to_string()));
    }
    let stored = writer
        .document(doc_id)?
        .ok_or_else(|| LifecycleError::NoDossier(doc_id.to_string()))?;
    let logged = if stored.complete {
        Vec::new()
    } else {
        writer.changes_of(doc_id, u64::MAX)?
    };
    let damaged = |e: String| LifecycleError::Damaged(doc_id.to_string(), e);
    let doc = crate::hub::replayed(&stored.snapshot, logged).map_err(|e| damaged(e.message))?;
    let complete = automerge::ReadDoc::get_missing_deps(&doc, &[]).is_empty();
    let dossier =
        Dossier::from_document(doc, transfer_actor()).map_err(|e| damaged(e.to_string()))?;
    Ok(Held {
        office: stored.office,
        dossier,
        complete,
    })
}

/// What a transfer did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transferred {
    pub dossier: String,
    pub from: String,
    pub to: String,
    pub at: String,
}

/// Moves dossier `doc_id` to office `to` (see the module's comment),
/// audited as `admin`'s. Nothing changes when it is refused.
pub fn transfer(
    store: &dyn Store,
    doc_id: &str,
    to: &str,
    reason: &str,
    admin: &str,
) -> Result<Transferred> {
    let to = keqing_shared::office::office(to)
        .map_err(|e| LifecycleError::Invalid(e.to_string()))?
        .code
        .to_string();
    let reason = check_reason(reason)?;
    let mut writer = store.log_writer()?;
    let Held {
        office: from,
        mut dossier,
        complete,
    } = held(&*writer, doc_id)?;
    if from == to {
        return Err(LifecycleError::Invalid(format!(
            "档案已在该咨询处 dossier {doc_id} is already office {to}'s"
        )));
    }
    if dossier.merged_into().ok().flatten().is_some() {
        return Err(LifecycleError::Invalid(format!(
            "档案已合并 dossier {doc_id} was merged into another: transfer the one it was merged into"
        )));
    }
    let now = keqing_host::now_cst();
    let record = Transfer {
        id: uuid::Uuid::new_v4().to_string(),
        at: now,
        from: from.clone(),
        to: to.clone(),
        reason: reason.clone(),
        by: admin.to_string(),
    };
    let change = dossier
        .edit(now.and_utc().timestamp_millis(), |tx| {
            tx.add_transfer(&record)
        })
        .map_err(|e| LifecycleError::Invalid(e.to_string()))?
        .ok_or_else(|| LifecycleError::Invalid("the transfer changed nothing".into()))?;
    let at = keqing_shared::when::fmt_datetime(now);
    writer.append(
        TRANSFER_WRITER,
        &[NewLogEntry {
            hash: change.hash.0,
            doc_id: doc_id.to_string(),
            office: to.clone(),
            bytes: change.bytes,
        }],
        &[DocumentState {
            doc_id: doc_id.to_string(),
            office: to.clone(),
            snapshot: dossier.save(),
            complete,
            merged_into: None,
        }],
    )?;
    writer.move_document(doc_id, &to)?;
    writer.record_fate(&NewFate {
        doc_id,
        kind: FATE_TRANSFER,
        from_office: &from,
        to_office: &to,
        at: &at,
        reason: &reason,
        by: admin,
        offices: vec![from.clone(), to.clone()],
    })?;
    writer.audit(
        admin,
        "dossier.transfer",
        doc_id,
        &format!("office {from} → {to}: {reason}"),
    )?;
    writer.commit()?;
    Ok(Transferred {
        dossier: doc_id.to_string(),
        from,
        to,
        at,
    })
}

/// What an erasure request shows the administrator before they confirm:
/// enough to know it is the right patient, masked (the full details are
/// at the office).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErasurePreview {
    pub dossier: String,
    pub office: String,
    pub created_at: String,
    /// The name with all but its first character masked (王**).
    pub name: String,
    /// The phones with all but their last four digits masked.
    pub phones: Vec<String>,
    pub records: usize,
    pub reason: String,
    /// Dossiers merged into it (duplicates of the patient): erased with it.
    pub duplicates: Vec<String>,
}

fn masked_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

fn masked_phone(phone: &str) -> String {
    let n = phone.chars().count();
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

/// Step one of an erasure: keeps the request (who, when, why) and shows
/// what `--confirm` will erase. Audited.
pub fn request_erasure(
    store: &dyn Store,
    doc_id: &str,
    reason: &str,
    admin: &str,
) -> Result<ErasurePreview> {
    let reason = check_reason(reason)?;
    let (office, view) = {
        let writer = store.log_writer()?;
        let h = held(&*writer, doc_id)?;
        let view = h
            .dossier
            .view()
            .map_err(|e| LifecycleError::Damaged(doc_id.to_string(), e.to_string()))?;
        (h.office, view)
    };
    // A duplicate's records were copied into the dossier it was merged
    // into: erasing it alone would leave the patient there.
    if let Some(into) = &view.merged_into {
        return Err(LifecycleError::Invalid(format!(
            "档案已合并 dossier {doc_id} was merged into {into}, which holds its records: erase {into} (its duplicates go with it)"
        )));
    }
    let duplicates = duplicates_of(store, doc_id)?;
    store.request_erasure(&ErasureRequest {
        doc_id: doc_id.to_string(),
        reason: reason.clone(),
        by: admin.to_string(),
        at: keqing_host::now_cst_text(),
    })?;
    store.audit(admin, "dossier.erase_request", doc_id, &reason)?;
    Ok(ErasurePreview {
        dossier: doc_id.to_string(),
        office,
        created_at: keqing_shared::when::fmt_datetime(view.created_at),
        name: masked_name(&view.patient.name),
        phones: view
            .patient
            .phones
            .iter()
            .map(|p| masked_phone(p))
            .collect(),
        records: view.record_count(),
        reason,
        duplicates,
    })
}

/// The dossiers merged into `doc_id`, from the projections brought up to
/// date first.
fn duplicates_of(store: &dyn Store, doc_id: &str) -> Result<Vec<String>> {
    let mut session = store.projections()?;
    crate::projector::catch_up(&mut *session, |_, _| {}).map_err(|e| {
        LifecycleError::Invalid(format!(
            "the projections could not be brought up to date: {e}"
        ))
    })?;
    Ok(session.merged_into(doc_id)?)
}

/// What an erasure did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErasureDone {
    pub dossier: String,
    pub office: String,
    pub at: String,
    pub changes_removed: u64,
    /// Dossiers merged into it, erased with it.
    pub duplicates: Vec<String>,
    /// Whether the store's files were scrubbed after it (see
    /// [`Store::scrub`]); `false` with `scrub_error` when that failed (the
    /// erasure itself stands; run `keqing-server scrub` again).
    pub scrubbed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub_error: Option<String>,
}

/// One line of the erasure ledger (`erasures.jsonl`): what `restore`
/// re-applies to a store restored from an older backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerLine {
    pub dossier: String,
    pub office: String,
    pub at: String,
    pub reason: String,
    pub by: String,
}

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "erasures.jsonl";

/// Step two: erases dossier `doc_id` (asked for by [`request_erasure`]),
/// appends its tombstone to `ledger` and scrubs the store. Audited as
/// `admin`'s.
pub fn confirm_erasure(
    store: &dyn Store,
    doc_id: &str,
    admin: &str,
    ledger: &Path,
) -> Result<ErasureDone> {
    let request = store
        .erasure_request(doc_id)?
        .ok_or_else(|| LifecycleError::NotRequested(doc_id.to_string()))?;
    let at = keqing_host::now_cst_text();
    let line = LedgerLine {
        dossier: doc_id.to_string(),
        office: String::new(),
        at: at.clone(),
        reason: request.reason.clone(),
        by: admin.to_string(),
    };
    let duplicates = duplicates_of(store, doc_id)?;
    let (office, mut changes) = erase_in_store(store, &line, "dossier.erase")?;
    append_ledger(
        ledger,
        &LedgerLine {
            office: office.clone(),
            ..line.clone()
        },
    )?;
    for dup in &duplicates {
        let dup_line = LedgerLine {
            dossier: dup.clone(),
            ..line.clone()
        };
        let (dup_office, n) = erase_in_store(store, &dup_line, "dossier.erase")?;
        changes += n;
        append_ledger(
            ledger,
            &LedgerLine {
                office: dup_office,
                ..dup_line
            },
        )?;
    }
    let scrub = store.scrub();
    Ok(ErasureDone {
        dossier: doc_id.to_string(),
        office,
        at,
        changes_removed: changes,
        duplicates,
        scrubbed: scrub.is_ok(),
        scrub_error: scrub.err().map(|e| e.to_string()),
    })
}

/// Erases what `line` names in one writer turn; returns the dossier's
/// office and how many logged changes went.
fn erase_in_store(store: &dyn Store, line: &LedgerLine, action: &str) -> Result<(String, u64)> {
    let mut writer = store.log_writer()?;
    let h = held(&*writer, &line.dossier)?;
    let view: DossierView = h
        .dossier
        .view()
        .map_err(|e| LifecycleError::Damaged(line.dossier.clone(), e.to_string()))?;
    let at = keqing_shared::when::read_stored_datetime(&line.at)
        .ok_or_else(|| LifecycleError::Invalid(format!("a bad time `{}`", line.at)))?;
    let pseudonym = format!(
        "{}{}",
        keqing_shared::lifecycle::ERASED_PREFIX,
        uuid::Uuid::new_v4().simple()
    );
    let stand_in = keqing_shared::lifecycle::without_identity(&view, &pseudonym, at);
    let slots = keqing_shared::followup::schedule(&stand_in);
    let erased = writer.erase_document(&line.dossier, Some((&stand_in, &slots)))?;
    // Every office that held it: the devices of each must drop it.
    let mut offices: Vec<String> = view.transfers.iter().map(|t| t.from.clone()).collect();
    offices.push(h.office.clone());
    offices.sort();
    offices.dedup();
    writer.record_fate(&NewFate {
        doc_id: &line.dossier,
        kind: FATE_ERASE,
        from_office: &h.office,
        to_office: "",
        at: &line.at,
        reason: &line.reason,
        by: &line.by,
        offices,
    })?;
    // That it happened, why and by whom; nothing of what was erased.
    writer.audit(
        &line.by,
        action,
        &line.dossier,
        &format!("office {}; {}", h.office, line.reason),
    )?;
    writer.commit()?;
    Ok((h.office, erased.changes))
}

fn append_ledger(ledger: &Path, line: &LedgerLine) -> Result<()> {
    use std::io::Write;
    let err = |e| LifecycleError::Ledger(ledger.display().to_string(), e);
    let mut text = serde_json::to_string(line).map_err(|e| err(e.into()))?;
    text.push('\n');
    if !ledger.exists() {
        keqing_host::files::create_private(ledger).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ledger)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Reads an erasure ledger.
pub fn read_ledger(ledger: &Path) -> Result<Vec<LedgerLine>> {
    let err = |e| LifecycleError::Ledger(ledger.display().to_string(), e);
    let text = std::fs::read_to_string(ledger).map_err(err)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                LifecycleError::Invalid(format!("{} line {}: {e}", ledger.display(), i + 1))
            })
        })
        .collect()
}

/// Re-applies the ledger's erasures to a store restored from a backup made
/// before some of them: each dossier the store still holds is erased again
/// (same time, reason and administrator), then the store is scrubbed.
/// Returns how many were erased again.
pub fn reapply_erasures(store: &dyn Store, lines: &[LedgerLine]) -> Result<u64> {
    let done: std::collections::HashSet<String> =
        store.tombstones()?.into_iter().map(|t| t.doc_id).collect();
    let mut n = 0;
    for line in lines {
        if done.contains(&line.dossier) {
            continue;
        }
        match erase_in_store(store, line, "dossier.erase.reapplied") {
            Ok(_) => n += 1,
            // Made after the backup, or erased by an earlier line: nothing
            // of it is in this store.
            Err(LifecycleError::NoDossier(_)) | Err(LifecycleError::Erased(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if n > 0 {
        store.scrub()?;
    }
    Ok(n)
}
