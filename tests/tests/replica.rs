//! The replica on real SQLite files: atomic edits, rebuild == incremental,
//! schema versions.

use chrono::NaiveDateTime;
use keqing_office::desk::{CallInput, Desk};
use keqing_office::{ClientError, store::DB_FILE};
use keqing_shared::records::{FollowUp, Purchase, Visit};
use keqing_shared::staff::Role;
use keqing_shared::when::parse_datetime;

fn t(s: &str) -> NaiveDateTime {
    parse_datetime(s).unwrap()
}

fn call(phone: &str, name: &str, at: &str) -> CallInput {
    CallInput {
        phone: phone.into(),
        name: name.into(),
        age: Some(60),
        source: "电视".into(),
        disease: Some("冠心病".into()),
        staff: "李娜".into(),
        at: t(at),
        ..Default::default()
    }
}

fn followup(at: &str) -> FollowUp {
    FollowUp {
        id: keqing_office::desk::new_id(),
        at: t(at),
        staff: "李娜".into(),
        kind: "回访".into(),
        outcome: "好".into(),
        next_entry: None,
    }
}

/// A replica with some history: calls, visits, purchases, follow-ups.
fn busy_desk(dir: &std::path::Path) -> Desk {
    let mut desk = Desk::init(dir, "44", "前台1").unwrap();
    desk.add_staff("李娜", Role::Consultant).unwrap();
    for i in 0..20 {
        let phone = format!("1380000{i:04}");
        let out = desk
            .register_call(&call(&phone, &format!("患者{i}"), "2026-11-01T09:00"))
            .unwrap();
        if i % 2 == 0 {
            let v = Visit {
                id: keqing_office::desk::new_id(),
                at: t("2026-11-02T10:00"),
                staff: "李娜".into(),
                purchased: true,
                reason_not_bought: None,
                notes: None,
            };
            let p = Purchase {
                id: keqing_office::desk::new_id(),
                at: t("2026-11-02T10:30"),
                staff: "李娜".into(),
                product: "心脑康".into(),
                quantity: 2,
                amount_fen: 50000,
                invoice: None,
                runout: Some(keqing_shared::when::parse_date("2026-12-02").unwrap()),
                gifts: None,
                gift_receipt: None,
            };
            desk.edit_patient(&out.dossier_id, |tx| {
                tx.add(&v)?;
                tx.add(&p)
            })
            .unwrap();
        }
        if i % 3 == 0 {
            desk.edit_patient(&out.dossier_id, |tx| tx.add(&followup("2026-11-04T10:00")))
                .unwrap();
        }
    }
    desk
}

#[test]
fn rebuild_gives_exactly_the_incremental_projections() {
    let tmp = tempfile::tempdir().unwrap();
    let mut desk = busy_desk(tmp.path());
    let incremental = desk.replica().projection_dump().unwrap();
    assert!(
        incremental
            .lines()
            .filter(|l| l.starts_with("slots|"))
            .count()
            > 100
    );
    let spans = replica_spans(tmp.path());
    assert!(!spans.is_empty());
    let n = desk.replica_mut().rebuild().unwrap();
    assert_eq!(n, 21, "20 dossiers and the roster");
    assert_eq!(desk.replica().projection_dump().unwrap(), incremental);
    // The R*Tree the triggers kept, filled again from the slots.
    assert_eq!(replica_spans(tmp.path()), spans);
}

#[test]
fn a_failure_in_the_middle_of_an_edit_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut desk = busy_desk(tmp.path());
    let id = desk.resolve_patient("13800000001").unwrap();
    let doc_before = desk.replica().load_document(&id).unwrap();
    let outbox_before = desk.replica().outbox_len().unwrap();
    let dump_before = desk.replica().projection_dump().unwrap();
    // Make the projection step fail after the document and outbox rows of
    // the same transaction were written.
    let conn = rusqlite::Connection::open(tmp.path().join(DB_FILE)).unwrap();
    conn.execute_batch("CREATE TRIGGER fail_followups BEFORE INSERT ON followups BEGIN SELECT RAISE(ABORT, 'injected failure'); END;")
        .unwrap();
    let err = desk
        .edit_patient(&id, |tx| tx.add(&followup("2026-11-05T10:00")))
        .unwrap_err();
    assert!(matches!(err, ClientError::Sql(_)), "{err}");
    assert!(err.to_string().contains("injected failure"));
    assert_eq!(desk.replica().load_document(&id).unwrap(), doc_before);
    assert_eq!(desk.replica().outbox_len().unwrap(), outbox_before);
    assert_eq!(desk.replica().projection_dump().unwrap(), dump_before);
    // Once the fault is gone the same edit goes through.
    conn.execute_batch("DROP TRIGGER fail_followups").unwrap();
    desk.edit_patient(&id, |tx| tx.add(&followup("2026-11-05T10:00")))
        .unwrap();
    assert_eq!(desk.replica().outbox_len().unwrap(), outbox_before + 1);
}

#[test]
fn every_edit_lands_in_the_outbox_once() {
    let tmp = tempfile::tempdir().unwrap();
    let desk = busy_desk(tmp.path());
    // init: roster genesis; 1 staff; 20 × (create + call); 10 × visit+purchase; 7 follow-ups.
    assert_eq!(desk.replica().outbox_len().unwrap(), 1 + 1 + 40 + 10 + 7);
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Desk::init(tmp.path(), "44", "前台1").unwrap());
    let conn = rusqlite::Connection::open(tmp.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match Desk::open(tmp.path()) {
        Err(ClientError::NewerSchema(_)) => {}
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn reopening_keeps_every_committed_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = {
        let desk = busy_desk(tmp.path());
        desk.replica().projection_dump().unwrap()
    };
    let desk = Desk::open(tmp.path()).unwrap();
    assert_eq!(desk.replica().projection_dump().unwrap(), dump);
    assert_eq!(desk.replica().dossier_count().unwrap(), 20);
    assert_eq!(desk.replica().integrity_check().unwrap(), "ok");
}

#[test]
fn the_due_list_query_agrees_with_the_rules_on_every_day() {
    use keqing_shared::dossier::Dossier;
    use keqing_shared::followup::{open_on, schedule};
    let tmp = tempfile::tempdir().unwrap();
    let desk = busy_desk(tmp.path());
    let ids: Vec<String> = (0..20)
        .map(|i| desk.resolve_patient(&format!("1380000{i:04}")).unwrap())
        .collect();
    let views: Vec<_> = ids
        .iter()
        .map(|id| {
            let bytes = desk.replica().load_document(id).unwrap().unwrap();
            Dossier::load(&bytes, automerge::ActorId::random())
                .unwrap()
                .view()
                .unwrap()
        })
        .collect();
    let mut listed_somewhere = 0;
    let start = keqing_shared::when::parse_date("2026-10-30").unwrap();
    for k in 0..75 {
        let d = start + chrono::Duration::days(k);
        let mut from_query: Vec<(String, usize)> = desk
            .due(d, None)
            .unwrap()
            .into_iter()
            .map(|e| (e.dossier_id, e.slots.len()))
            .collect();
        from_query.sort();
        let mut from_rules: Vec<(String, usize)> = views
            .iter()
            .map(|v| (v.id.clone(), open_on(&schedule(v), d).len()))
            .filter(|(_, n)| *n > 0)
            .collect();
        from_rules.sort();
        assert_eq!(from_query, from_rules, "{d}");
        listed_somewhere += from_query.len();
    }
    assert!(
        listed_somewhere > 50,
        "the scenario puts patients on many lists"
    );
}

/// The dossier of `phone` as the database file alone holds it (a copy of
/// the file without its WAL): `Ok(None)` if the file does not hold it, an
/// error if the copy does not open or read (not the same thing).
fn in_file_alone(
    dir: &std::path::Path,
    copy: &std::path::Path,
    phone: &str,
) -> Result<Option<String>, String> {
    let _ = std::fs::remove_dir_all(copy);
    std::fs::create_dir_all(copy).unwrap();
    std::fs::copy(dir.join(DB_FILE), copy.join(DB_FILE)).unwrap();
    let desk = Desk::open(copy).map_err(|e| format!("the copy does not open: {e}"))?;
    match desk.resolve_patient(phone) {
        Ok(id) => Ok(Some(id)),
        Err(keqing_office::ClientError::UnknownPatient(_)) => Ok(None),
        Err(e) => Err(format!("the copy does not read: {e}")),
    }
}

#[test]
fn background_checkpoints_carry_edits_into_the_database_file() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        let mut desk = Desk::init(&dir, "44", "前台1").unwrap();
        desk.add_staff("李娜", Role::Consultant).unwrap();
        // Closed, the last connection folds the WAL into the file: the
        // file alone is a replica (which a copy of it must open as).
        drop(desk);
        (dir.clone(), Desk::open(&dir).unwrap())
    };
    // SQLite alone checkpoints once the WAL holds thousands of pages: one
    // call stays in the WAL, and the file alone does not have it.
    let (dir, mut desk) = start("inline");
    desk.register_call(&call("13800000001", "张三", "2026-11-01T09:00"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(in_file_alone(&dir, &copy, "13800000001"), Ok(None));
    drop(desk);

    // With the thread, the file holds it shortly after the commit.
    let (dir, mut desk) = start("background");
    desk.replica_mut().checkpoint_in_background().unwrap();
    let out = desk
        .register_call(&call("13800000002", "李四", "2026-11-01T09:00"))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // A copy taken while a checkpoint writes may be torn (Err): look again.
    while in_file_alone(&dir, &copy, "13800000002") != Ok(Some(out.dossier_id.clone())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the background checkpoint never reached the database file"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Closing ends the thread; everything is still there on reopening.
    drop(desk);
    let desk = Desk::open(&dir).unwrap();
    assert_eq!(desk.resolve_patient("13800000002").unwrap(), out.dossier_id);
    assert_eq!(desk.replica().integrity_check().unwrap(), "ok");
}

#[test]
fn a_pulled_document_that_does_not_merge_is_quarantined_and_the_rest_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Desk::init(&tmp.path().join("a"), "44", "前台1").unwrap();
    a.add_staff("李娜", Role::Consultant).unwrap();
    // Enough dossiers that the batch is merged on worker threads.
    for i in 0..80 {
        a.register_call(&CallInput {
            force_new: true,
            ..call(
                &format!("138{i:08}"),
                &format!("患者{i}"),
                "2026-11-20T09:00",
            )
        })
        .unwrap();
    }
    let mut changes: Vec<keqing_shared::sync::LoggedChange> = a
        .replica()
        .outbox_batch(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| keqing_shared::sync::LoggedChange {
            seq: r.seq as u64,
            doc_id: r.doc_id,
            bytes: r.bytes,
        })
        .collect();
    // One dossier's first change is not automerge: its document cannot be
    // merged; the other 79 can.
    let victim = changes
        .iter()
        .position(|c| !c.doc_id.starts_with("roster-"))
        .unwrap();
    let victim_id = changes[victim].doc_id.clone();
    let original = std::mem::replace(&mut changes[victim].bytes, b"damaged on the way".to_vec());
    let changes_of_victim = changes.iter().filter(|c| c.doc_id == victim_id).count() as u64;
    let batch = keqing_shared::sync::PullBatch {
        changes,
        cursor: 1,
        ..Default::default()
    };
    let mut b = Desk::init(&tmp.path().join("b"), "44", "前台2").unwrap();
    let quarantined = b.replica_mut().apply_remote(&batch).unwrap();
    assert_eq!(quarantined, 1);
    assert_eq!(b.replica().dossier_count().unwrap(), 79);
    assert!(b.replica().patient(&victim_id).unwrap().is_none());
    let (count, latest) = b.replica().quarantined(10).unwrap();
    let victims = changes_of_victim;
    assert_eq!(count, victims, "every change of it is kept");
    assert!(latest.iter().all(|q| q.doc_id == victim_id), "{latest:?}");
    // The rest is a sound replica: projections are what a rebuild derives.
    let before = b.replica().projection_dump().unwrap();
    b.replica_mut().rebuild().unwrap();
    assert_eq!(b.replica().projection_dump().unwrap(), before);

    // Retrying what still does not merge changes nothing.
    let heads = b.replica().document_heads().unwrap();
    let retry = b.replica_mut().retry_quarantined().unwrap();
    assert_eq!((retry.merged, retry.still_quarantined), (0, 1));
    assert_eq!(b.replica().quarantined(10).unwrap().0, victims);
    assert_eq!(b.replica().document_heads().unwrap(), heads);
    assert_eq!(b.replica().projection_dump().unwrap(), before);

    // Data that merges now (as after an upgrade that fixes what refused
    // it; here the damaged change is put right in the quarantine behind
    // the replica's back) is merged, projected, and leaves the quarantine.
    let file = rusqlite::Connection::open(tmp.path().join("b").join("keqing.sqlite")).unwrap();
    let fixed = file
        .execute(
            "UPDATE quarantine SET bytes = ?1 WHERE bytes = ?2",
            rusqlite::params![original, b"damaged on the way".to_vec()],
        )
        .unwrap();
    assert_eq!(fixed, 1);
    drop(file);
    let retry = b.replica_mut().retry_quarantined().unwrap();
    assert_eq!((retry.merged, retry.still_quarantined), (1, 0));
    assert_eq!(b.replica().quarantined(10).unwrap().0, 0);
    assert_eq!(b.replica().dossier_count().unwrap(), 80);
    assert_eq!(
        b.replica().patient(&victim_id).unwrap(),
        a.replica().patient(&victim_id).unwrap()
    );
    assert!(b.replica().patient(&victim_id).unwrap().is_some());
    let after = b.replica().projection_dump().unwrap();
    b.replica_mut().rebuild().unwrap();
    assert_eq!(b.replica().projection_dump().unwrap(), after);
    // Nothing is left to retry.
    let retry = b.replica_mut().retry_quarantined().unwrap();
    assert_eq!((retry.merged, retry.still_quarantined), (0, 0));
}

/// A panic in the middle of an edit, after its rows were written, while
/// the desk is locked (as in the workstation): nothing of it stays, the
/// lock is recovered, and the next edit commits for real (other
/// connections see it). Before, the panicked transaction stayed open and
/// every later edit went into it, never to be committed.
#[test]
fn a_panic_inside_a_write_leaves_nothing_and_the_next_edit_commits() {
    use keqing_shared::dossier::Dossier;
    let tmp = tempfile::tempdir().unwrap();
    let mut desk = Desk::init(tmp.path(), "44", "前台1").unwrap();
    desk.add_staff("李娜", Role::Consultant).unwrap();
    let id = desk
        .register_call(&call("13800000001", "张三", "2026-11-20T09:00"))
        .unwrap()
        .dossier_id;
    let outbox = desk.replica().outbox_len().unwrap();
    let shared = std::sync::Mutex::new(desk);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut desk = keqing_host::lock(&shared);
        let _: Result<(), ClientError> = desk.replica_mut().write(|w| {
            let bytes = w.load_document(&id)?.unwrap();
            let mut d = Dossier::load(&bytes, w.actor().clone())?;
            let change = d.edit(1, |tx| tx.add_phone("13900000009"))?.unwrap();
            w.save_dossier(&d, &[&change], t("2026-11-20T10:00"))?;
            if change.bytes.is_empty() {
                return Ok(());
            }
            panic!("injected after the edit's rows were written");
        });
    }));
    assert!(panicked.is_err());
    assert!(shared.is_poisoned());
    let second = {
        let mut desk = keqing_host::lock(&shared);
        desk.register_call(&call("13800000002", "李四", "2026-11-20T11:00"))
            .unwrap()
            .dossier_id
    };
    // Another connection to the file: the second call is there, nothing
    // of the panicked edit is.
    let other = Desk::open(tmp.path()).unwrap();
    assert_eq!(other.resolve_patient("13800000002").unwrap(), second);
    let missing = other.resolve_patient("13900000009").unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("no patient matches `13900000009`"),
        "{missing}"
    );
    let (view, _) = other.dossier(&id).unwrap();
    assert_eq!(view.patient.phones, ["13800000001"]);
    assert!(
        other.replica().outbox_len().unwrap() > outbox,
        "the second call is queued"
    );
    let rows_of_first = other
        .replica()
        .outbox_batch(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.doc_id == id)
        .count();
    assert_eq!(rows_of_first, 2, "the first call's creation and call only");
}

/// A replica keeps its documents deflated at rest, and reads them back as
/// saved. A row an older release stored as it was (the saved bytes) reads
/// as it is, rebuilds the same projection, and is packed when next written.
#[test]
fn documents_are_stored_packed_and_rows_stored_raw_still_read() {
    use keqing_shared::packed::unpack;
    let tmp = tempfile::tempdir().unwrap();
    let mut desk = busy_desk(tmp.path());
    let db = rusqlite::Connection::open(tmp.path().join(DB_FILE)).unwrap();
    let stored_row = |id: &str| -> Vec<u8> {
        db.query_row("SELECT bytes FROM documents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let ids: Vec<String> = db
        .prepare("SELECT id FROM documents WHERE kind = 'dossier' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), 20);
    let (mut stored_total, mut saved_total) = (0, 0);
    for id in &ids {
        let stored = stored_row(id);
        let saved = desk.replica().load_document(id).unwrap().unwrap();
        assert_eq!(
            stored[0], 0x02,
            "{id} is stored packed (from the dictionary)"
        );
        assert_eq!(unpack(stored.clone()), saved, "{id} reads back as saved");
        automerge::Automerge::load(&saved).unwrap();
        stored_total += stored.len();
        saved_total += saved.len();
    }
    // These dossiers are young (~0.9 KB saved); two years of history
    // repeat more, and deflate to ~40 % (the national benchmark's).
    assert!(
        stored_total * 10 < saved_total * 9,
        "{stored_total} bytes stored for {saved_total} saved"
    );

    // One row as an older release left it.
    let raw_id = &ids[0];
    let saved = unpack(stored_row(raw_id));
    db.execute(
        "UPDATE documents SET bytes = ?2 WHERE id = ?1",
        rusqlite::params![raw_id, saved],
    )
    .unwrap();
    assert_eq!(stored_row(raw_id), saved);
    let incremental = desk.replica().projection_dump().unwrap();
    let (view, _) = desk.dossier(raw_id).unwrap();
    assert_eq!(view.calls.len(), 1);
    desk.replica_mut().rebuild().unwrap();
    assert_eq!(desk.replica().projection_dump().unwrap(), incremental);

    desk.edit_patient(raw_id, |tx| tx.add(&followup("2026-11-06T10:00")))
        .unwrap();
    let stored = stored_row(raw_id);
    assert_eq!(stored[0], 0x02, "packed once written again");
    let (view, _) = desk.dossier(raw_id).unwrap();
    assert_eq!(view.followups.len(), 2);
    assert_eq!(
        unpack(stored),
        desk.replica().load_document(raw_id).unwrap().unwrap()
    );
}

/// Indexes and triggers a first sync set aside come back when the replica
/// next opens if the process died before it restored them (killed, or the
/// power cut), and the tallies and spans the triggers keep count what was
/// written meanwhile: nothing is left slow, or miscounted, for good.
#[test]
fn indexes_set_aside_by_a_sync_that_died_are_built_on_the_next_open() {
    indexes_set_aside_come_back_counting_what_was_written(false);
}

/// A first sync's own restore (no process died) counts the tallies on a
/// second connection beside the index builds, and they count alike.
#[test]
fn indexes_set_aside_come_back_with_the_tallies_counted_beside() {
    indexes_set_aside_come_back_counting_what_was_written(true);
}

/// Sets a busy replica's projection indexes and triggers aside, writes a
/// patient and a follow-up, then brings them back: by the replica's own
/// restore (`restore_now`, as a first sync ends) or by reopening it (the
/// process died first). The indexes and triggers are those there were,
/// and the tallies and spans what a rebuild from the documents gives.
fn indexes_set_aside_come_back_counting_what_was_written(restore_now: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let indexes = || replica_indexes(tmp.path());
    let triggers = || replica_schema(tmp.path(), "trigger");
    let overdue = || replica_rows(tmp.path(), "SELECT * FROM overdue_tallies ORDER BY 1, 2");
    let mut desk = busy_desk(tmp.path());
    let (all, all_triggers) = (indexes(), triggers());
    assert!(all_triggers.iter().any(|t| t == "slot_tallies_insert"));
    let aside = desk.replica_mut().set_projection_indexes_aside().unwrap();
    assert_eq!(
        indexes().len() + triggers().len(),
        all.len() + all_triggers.len() - aside
    );
    // The projection's triggers are away; the replica's own stay.
    let left = triggers();
    assert!(
        left.iter()
            .all(|t| !t.contains("_tallies_") && !t.contains("_spans_"))
    );
    assert!(left.iter().any(|t| t == "reads_never_change"));
    assert!(desk.replica().projection_indexes_aside().unwrap());
    // Written with the triggers away: a new patient, and a follow-up for it.
    let out = desk
        .register_call(&call("13900001111", "新患者", "2026-11-05T09:00"))
        .unwrap();
    desk.edit_patient(&out.dossier_id, |tx| tx.add(&followup("2026-11-06T10:00")))
        .unwrap();
    if restore_now {
        assert_eq!(
            desk.replica_mut().restore_projection_indexes().unwrap(),
            aside
        );
    } else {
        // The process dies here, before the pull is in.
        drop(desk);
        desk = Desk::open(tmp.path()).unwrap();
    }
    assert!(!desk.replica().projection_indexes_aside().unwrap());
    assert_eq!(indexes(), all);
    assert_eq!(triggers(), all_triggers);
    let (restored, spans, overdue_then) = (
        desk.replica().projection_dump().unwrap(),
        replica_spans(tmp.path()),
        overdue(),
    );
    assert!(restored.contains("followup_tallies|Text(\"2026-11-06\")"));
    assert!(restored.contains("slot_tallies|"));
    assert!(!overdue_then.is_empty());
    desk.replica_mut().rebuild().unwrap();
    assert_eq!(desk.replica().projection_dump().unwrap(), restored);
    assert_eq!(replica_spans(tmp.path()), spans);
    assert_eq!(overdue(), overdue_then);
}

/// The names of a replica's schema objects of one kind (`trigger`, say).
fn replica_schema(dir: &std::path::Path, kind: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.prepare("SELECT name FROM sqlite_master WHERE type = ?1 ORDER BY name")
        .unwrap()
        .query_map([kind], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The spans of the due list's R*Tree, each by the slot it is of (rowids
/// change when the rows are written again).
fn replica_spans(dir: &std::path::Path) -> Vec<String> {
    replica_rows(
        dir,
        "SELECT s.dossier_id, s.n, sp.first_day, sp.settled_day, sp.deadline_day, sp.office_code
         FROM slot_spans sp JOIN slots s ON s.rowid = sp.id ORDER BY 1, 2",
    )
}

/// Rows of a query on the replica file, each as one line.
fn replica_rows(dir: &std::path::Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
            .collect::<Vec<_>>()
            .join("|"))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// The names of the indexes a replica's schema declares (not the keys'
/// automatic ones), read from its file.
pub(crate) fn replica_indexes(dir: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}
