//! The projector: follows the change log with its own durable cursor,
//! materialises each changed document and keeps the projection tables the
//! reports read. It also builds the snapshots of new dossiers that pushes
//! logged without building them, so pulls can send whole documents.
//!
//! It runs beside sync, never in its path: a push is acknowledged once its
//! changes are in the log, and the projector catches up afterwards (woken by
//! the push, or by its timer). A report first brings it up to date, so a
//! report reflects every push acknowledged before it was asked for.
//!
//! Restartable and idempotent: a batch's projections and the cursor move in
//! one transaction, and projecting a document twice writes the same rows.
//! A full rebuild ([`rebuild`]) rewinds the cursor and gives the same rows
//! as incremental maintenance.

use crate::store::{Projected, Projections, SettledSnapshot, StoreError, StoredDocument};
use automerge::{ActorId, Automerge, ReadDoc};
use keqing_shared::dossier::Dossier;
use keqing_shared::followup::schedule;
use keqing_shared::nonpatient::NonPatientLog;
use keqing_shared::roster::Roster;
use keqing_shared::sync::LoggedChange;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Log entries read per transaction.
const BATCH: u32 = 2000;

/// Documents read from the store at a time.
const READ_AHEAD: usize = 200;

/// Built snapshots held before they are stored.
const SETTLE_BYTES: usize = 16 << 20;

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CatchUp {
    /// Documents projected (a document changed in two batches counts twice).
    pub documents: u64,
    /// Documents that could not be read, left unprojected (logged, and
    /// kept in the store's list of unreadable documents until one reads).
    pub skipped: u64,
    /// The projector's cursor at the end.
    pub cursor: u64,
    /// Batches thrown away because another projector moved the cursor
    /// first (their documents were read again).
    pub raced: u64,
}

/// The projector reads documents, never writes them: any actor will do.
fn reader_actor() -> ActorId {
    ActorId::from(&b"keqing-projector"[..])
}

/// A document as the projector reads it.
enum Source {
    /// Its stored snapshot, complete.
    Saved(Vec<u8>),
    /// Built from its snapshot and its logged changes (boxed: a document
    /// is a few kilobytes of bookkeeping).
    Built(Box<Automerge>),
}

/// The current state of a document: its snapshot, or, when that is
/// incomplete (a new dossier logged without being built, or a change
/// waiting for a dependency), the document built from it and the logged
/// changes — with the snapshot to store when that made it complete.
fn current_document(
    doc_id: &str,
    found: Option<(StoredDocument, Vec<LoggedChange>)>,
) -> Option<(Source, String, Option<SettledSnapshot>)> {
    let (stored, logged) = found?;
    if stored.complete {
        return Some((Source::Saved(stored.snapshot), stored.office, None));
    }
    let Ok(doc) = crate::hub::replayed(&stored.snapshot, logged) else {
        return None;
    };
    let settled = catch_unwind(AssertUnwindSafe(|| {
        doc.get_missing_deps(&[])
            .is_empty()
            .then(|| SettledSnapshot {
                doc_id: doc_id.to_string(),
                snapshot: doc.save_nocompress(),
                last_seq: stored.last_seq,
            })
    }));
    let Ok(settled) = settled else {
        return None;
    };
    Some((Source::Built(Box::new(doc)), stored.office, settled))
}

/// Derives what the projection tables hold for one document. Its office
/// is the server's record of it (`office`), whatever the document says:
/// reports count a dossier where the server says it belongs.
fn derive(doc_id: &str, office: &str, source: Source) -> Result<Projected, String> {
    let actor = reader_actor();
    let result = catch_unwind(AssertUnwindSafe(|| {
        if let Some((office, _)) = keqing_shared::nonpatient::parse_log_id(doc_id) {
            let log = match source {
                Source::Saved(bytes) => NonPatientLog::load(&bytes, actor),
                Source::Built(doc) => NonPatientLog::load(&doc.save_nocompress(), actor),
            }
            .map_err(|e| e.to_string())?;
            Ok(Projected::NonPatient {
                log_id: doc_id.to_string(),
                office: office.to_string(),
                calls: log.calls().map_err(|e| e.to_string())?,
            })
        } else if let Some(office) = doc_id.strip_prefix("roster-") {
            let roster = match source {
                Source::Saved(bytes) => Roster::load(&bytes, actor),
                Source::Built(doc) => Roster::load(&doc.save_nocompress(), actor),
            }
            .map_err(|e| e.to_string())?;
            Ok(Projected::Roster {
                office: office.to_string(),
                staff: roster.staff().map_err(|e| e.to_string())?,
                activities: roster.activities(),
            })
        } else {
            let view = match source {
                Source::Saved(bytes) => Dossier::load(&bytes, actor).and_then(|d| d.view()),
                // Already loaded: loading its saved bytes again would cost
                // as much as reading it.
                Source::Built(doc) => Dossier::view_of(&doc),
            }
            .map_err(|e| e.to_string())?;
            if view.id != doc_id {
                return Err(format!("document says its id is {}", view.id));
            }
            if view.office != office {
                tracing::warn!(doc = %doc_id, says = %keqing_shared::printable::printable(&view.office), office, "a dossier names another office than the server's record; counted under the record's");
            }
            let mut view = view;
            view.office = office.to_string();
            let slots = schedule(&view);
            Ok(Projected::Dossier {
                view: Box::new(view),
                slots,
            })
        }
    }));
    result.unwrap_or_else(|_| Err("automerge panicked reading it".into()))
}

/// Projects everything logged up to now. `progress(cursor, target)` is
/// called after each batch.
pub fn catch_up(
    store: &mut dyn Projections,
    progress: impl FnMut(u64, u64),
) -> Result<CatchUp, StoreError> {
    catch_up_paced(store, progress, || ControlFlow::Continue(()))
}

/// [`catch_up`], calling `pace` before each document it builds (the
/// server's background projector waits there while devices sync). When
/// `pace` breaks (the server is stopping), it returns at once: the batch
/// in hand is dropped unsaved, every batch before it stays saved, and the
/// next catch-up goes on from there.
pub fn catch_up_paced(
    store: &mut dyn Projections,
    mut progress: impl FnMut(u64, u64),
    mut pace: impl FnMut() -> ControlFlow<()>,
) -> Result<CatchUp, StoreError> {
    let target = store.max_seq()?;
    let mut done = CatchUp {
        cursor: store.projector_cursor()?,
        ..Default::default()
    };
    if target.saturating_sub(done.cursor) > u64::from(BATCH) {
        // After a restart or a bulk import: worth a line in the log.
        tracing::info!(
            cursor = done.cursor,
            target,
            "projector: catching up a backlog"
        );
    }
    while done.cursor < target {
        let (docs, upto) = store.documents_changed_after(done.cursor, BATCH)?;
        if upto <= done.cursor {
            break;
        }
        let mut projected = Vec::with_capacity(docs.len());
        let mut unreadable = Vec::new();
        let mut settled = Vec::new();
        let mut settled_bytes = 0;
        let mut read: std::collections::HashMap<String, _> = Default::default();
        for (k, doc_id) in docs.iter().enumerate() {
            if k % READ_AHEAD == 0 {
                let ids: Vec<&str> = docs[k..(k + READ_AHEAD).min(docs.len())]
                    .iter()
                    .map(String::as_str)
                    .collect();
                read = store.documents_to_project(&ids)?;
            }
            if pace().is_break() {
                return Ok(done);
            }
            // The catalogue's copies are read where they are used; they
            // have no projection rows.
            if keqing_shared::catalog::parse_catalog_id(doc_id).is_some() {
                continue;
            }
            let Some((source, office, settle)) = current_document(doc_id, read.remove(doc_id))
            else {
                done.skipped += 1;
                tracing::warn!(doc = %doc_id, "projector: document unreadable, skipped");
                unreadable.push((
                    doc_id.clone(),
                    "its snapshot and logged changes do not load".to_string(),
                ));
                continue;
            };
            if let Some(snapshot) = settle {
                settled_bytes += snapshot.snapshot.len();
                settled.push(snapshot);
                // Bounded memory: large documents are stored as they come.
                if settled_bytes > SETTLE_BYTES {
                    store.settle_snapshots(&settled)?;
                    settled.clear();
                    settled_bytes = 0;
                }
            }
            match derive(doc_id, &office, source) {
                Ok(p) => projected.push(p),
                Err(e) => {
                    done.skipped += 1;
                    tracing::warn!(doc = %doc_id, error = %keqing_shared::printable::printable(&e), "projector: document skipped");
                    unreadable.push((doc_id.clone(), e));
                }
            }
        }
        // Snapshots first: they are right whatever happens to the batch's
        // projections (each is stored only if its document is unchanged).
        store.settle_snapshots(&settled)?;
        if store.save_projections(&projected, &unreadable, done.cursor, upto)? {
            done.documents += projected.len() as u64;
            done.cursor = upto;
        } else {
            // Another projector saved (or a rebuild reset the tables) since
            // this batch was read: go on from where it left the cursor.
            done.cursor = store.projector_cursor()?;
            done.raced += 1;
        }
        progress(done.cursor, target);
    }
    Ok(done)
}

/// Throws the projections away and derives them again from the log.
pub fn rebuild(
    store: &mut dyn Projections,
    progress: impl FnMut(u64, u64),
) -> Result<CatchUp, StoreError> {
    store.reset_projections()?;
    catch_up(store, progress)
}
