//! Log compaction. The change log keeps every change a device pushed, so a
//! device can follow it from its cursor; a dossier's snapshot holds the
//! same changes once more (merged, and smaller). Once a change is older
//! than the horizon (`log-keep-days`) and its dossier's snapshot holds
//! every logged change, the log lets it go, but for each dossier's latest
//! (so a projection rebuilt from the log still finds every dossier, and
//! the log's end never goes back). A push of a change let go is known by
//! the snapshot, not logged again. The floor is how far the log is
//! compacted: a device whose cursor is below it (offline longer than the
//! horizon) starts over from the snapshots of its scope, merging them into
//! what it holds.

use crate::store::{Compacted, Repacked, Store, StoreError};
use keqing_shared::when::fmt_datetime;

/// Log positions compacted in one write transaction: a push waits for
/// the writer no longer than one of these takes (SQLite at 100k dossiers:
/// ~130 ms for 5 000, whose deletes touch three indexes at random places).
pub const CHANGES_PER_STEP: u64 = 1_000;

/// Documents read in one write transaction of [`repack`]: a push waits
/// for the writer no longer than one step (reading, packing and
/// rewriting at most this many snapshots) takes.
pub const DOCUMENTS_PER_REPACK_STEP: u32 = 500;

/// Days of log a store keeps whole unless its settings say otherwise.
pub const DEFAULT_KEEP_DAYS: u32 = 30;

/// How often a serving process compacts.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compaction {
    /// The floor now: a cursor below it starts over from the snapshots.
    pub floor: u64,
    /// Changes let go, and their bytes.
    pub changes: u64,
    pub bytes: u64,
}

/// Notes where the log ends at `now` and compacts what was logged before
/// the latest note at least `keep_days` old (0: everything logged until
/// now), in steps of [`CHANGES_PER_STEP`]; `progress(at, target)` after
/// each.
pub fn compact(
    store: &dyn Store,
    now: chrono::NaiveDateTime,
    keep_days: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Compaction, StoreError> {
    let cutoff = now - chrono::Duration::days(i64::from(keep_days));
    let target = {
        let mut writer = store.log_writer()?;
        let target = writer.mark_log(&fmt_datetime(now), &fmt_datetime(cutoff))?;
        writer.commit()?;
        target
    };
    let mut done = Compaction {
        floor: store.reader()?.log_floor()?,
        ..Default::default()
    };
    while done.floor < target {
        let upto = done.floor.saturating_add(CHANGES_PER_STEP).min(target);
        let mut writer = store.log_writer()?;
        let Compacted { changes, bytes } = writer.compact_log(upto)?;
        writer.commit()?;
        done.changes += changes;
        done.bytes += bytes;
        done.floor = upto;
        progress(done.floor, target);
    }
    Ok(done)
}

/// What [`vacuum`] gave back: the store's size on disk before and after
/// ([`Store::size_bytes`]), and how long the rewrite took.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Vacuumed {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
}

/// Rewrites the store and gives its free space back to the file system
/// ([`Store::scrub`]: SQLite `VACUUM` and room left in the leaves of the
/// tables a day inserts into, PostgreSQL `VACUUM FULL` of the dossier
/// tables). Compaction frees the log's pages and a store
/// reuses them for later writes, but the file does not shrink, and the
/// indexes the deletes thinned stay half empty. Writers wait while it
/// runs (minutes at national scale), so only `compact --vacuum` asks
/// for it, never the serving process's hourly compaction.
pub fn vacuum(store: &dyn Store) -> Result<Vacuumed, StoreError> {
    let bytes_before = store.size_bytes()?;
    let started = std::time::Instant::now();
    store.scrub()?;
    Ok(Vacuumed {
        bytes_before,
        bytes_after: store.size_bytes()?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a pass of [`repack`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repacking {
    /// Snapshots rewritten packed.
    pub documents: u64,
    /// Their stored bytes before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Packs every snapshot a release before packed snapshots stored as it
/// was (a store upgraded in place keeps them until their dossier is next
/// written), `per_step` documents read in each turn of the writer
/// ([`DOCUMENTS_PER_REPACK_STEP`] unless a test wants more steps);
/// `progress(read, documents)` after each. Run by the
/// `compact` command, not by a serving process's hourly compaction (it
/// reads every snapshot).
pub fn repack(
    store: &dyn Store,
    per_step: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Repacking, StoreError> {
    let total = store.counts()?.documents;
    let mut done = Repacking::default();
    let mut after = String::new();
    let mut read = 0;
    loop {
        let mut writer = store.log_writer()?;
        let step: Repacked = writer.repack_snapshots(&after, per_step)?;
        writer.commit()?;
        done.documents += step.documents;
        done.bytes_before += step.bytes_before;
        done.bytes_after += step.bytes_after;
        read += step.read;
        progress(read, total.max(read));
        match step.last_id {
            Some(id) if step.read == u64::from(per_step) => after = id,
            _ => return Ok(done),
        }
    }
}
