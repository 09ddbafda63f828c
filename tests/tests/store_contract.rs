//! The storage seam's contract, held by every backend: each scenario runs
//! on a SQLite store and on a PostgreSQL one (a database of its own in the
//! throwaway cluster of `scripts/test`), through the same sync core and
//! projector the server runs.

use automerge::ActorId;
use keqing_proto::SyncHandler;
use keqing_server::store::{PgStore, SqliteStore, Store};
use keqing_shared::dossier::{Dossier, NewChange};
use keqing_shared::sync::ChangeEnvelope;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A store of each backend (the temp dir holds the SQLite one).
fn each_store(tmp: &std::path::Path) -> Vec<Arc<dyn Store>> {
    each_store_in(tmp, &keqing_tests::postgres_database())
}

/// Each store, PostgreSQL's in the database at `url` (for tests that also
/// look into it with psql).
fn each_store_in(tmp: &std::path::Path, url: &str) -> Vec<Arc<dyn Store>> {
    vec![
        Arc::new(SqliteStore::open(tmp).unwrap()),
        Arc::new(PgStore::open(url).unwrap()),
    ]
}

fn t(s: &str) -> chrono::NaiveDateTime {
    keqing_shared::when::parse_datetime(s).unwrap()
}

pub(crate) fn env(id: &str, c: &NewChange) -> ChangeEnvelope {
    ChangeEnvelope {
        doc_id: id.into(),
        bytes: c.bytes.clone(),
    }
}

pub(crate) fn add_office_device(store: &dyn Store, id: &str, office: &str, token: &str) {
    store
        .add_device(
            id,
            id,
            Some(office),
            &keqing_server::hub::token_hash(token),
            "2026-11-20T00:00:00",
            "contract test",
        )
        .unwrap();
}

/// A dossier with a call, a visit with a purchase and a follow-up, as an
/// office records them: its two changes.
pub(crate) fn working_dossier(id: &str, office: &str, actor: &ActorId, n: u32) -> Vec<NewChange> {
    use keqing_shared::dossier::PatientUpdate;
    use keqing_shared::records::{Call, FollowUp, Purchase, Visit};
    let at = t(&format!("2026-11-{:02}T{:02}:00", 20 + n % 5, 9 + n % 8));
    let (mut d, first) = Dossier::create(id, office, at, actor.clone(), 1).unwrap();
    let phone = format!("1380013{n:04}");
    let second = d
        .edit(2, |tx| {
            tx.update_patient(&PatientUpdate {
                name: Some(format!("患者{n}")),
                age: Some(60 + i64::from(n % 20)),
                ..Default::default()
            })?;
            tx.add_phone(&phone)?;
            tx.add(&Call {
                id: format!("call-{id}"),
                at,
                staff: "李娜".into(),
                caller_phone: phone.clone(),
                relation: None,
                source: "电视".into(),
                disease: Some("高血压".into()),
                condition: None,
                treatment: None,
                outcome: None,
            })?;
            let visit_at = at + chrono::Duration::days(1);
            tx.add(&Visit {
                id: format!("visit-{id}"),
                at: visit_at,
                staff: "坐诊专家".into(),
                purchased: true,
                reason_not_bought: None,
                notes: None,
            })?;
            tx.add(&Purchase {
                id: format!("purchase-{id}"),
                at: visit_at,
                staff: "坐诊专家".into(),
                product: "心脑通".into(),
                quantity: 2,
                amount_fen: 128_000,
                invoice: None,
                runout: Some(visit_at.date() + chrono::Duration::days(30)),
                gifts: None,
                gift_receipt: None,
            })?;
            tx.add(&FollowUp {
                id: format!("followup-{id}"),
                at: visit_at + chrono::Duration::days(1),
                staff: "回访1".into(),
                kind: "回访".into(),
                outcome: "服药正常".into(),
                next_entry: None,
            })
        })
        .unwrap()
        .unwrap();
    vec![first, second]
}

/// For some `n` (not the two the contract merges), a typical case flagged
/// and a problem opened, before the contract's report range (November) and
/// in it; some problems resolved before, in and after it: the change.
fn marked(d: &mut Dossier, n: u32) -> Option<NewChange> {
    use keqing_shared::records::{Problem, ProblemState, TypicalCase};
    let day = |m: u32, d: u32| t(&format!("2026-{m:02}-{d:02}T10:00"));
    let problem = match n {
        4 => Some((day(11, 1), None)),
        5 => Some((day(10, 20), Some(day(12, 2)))),
        8 => Some((day(10, 20), Some(day(11, 10)))),
        10 => Some((day(10, 20), None)),
        11 => Some((day(10, 20), Some(day(10, 25)))),
        _ => None,
    };
    d.edit(3, |tx| {
        if n.is_multiple_of(3) && n > 0 {
            tx.set_typical(&TypicalCase {
                flagged: true,
                at: if n.is_multiple_of(2) {
                    day(10, 5)
                } else {
                    day(11, 3)
                },
                staff: "李娜".into(),
                notes: None,
            })?;
        }
        if let Some((at, resolved_at)) = problem {
            tx.add(&Problem {
                id: format!("problem-{n}"),
                at,
                staff: "李娜".into(),
                description: "头晕".into(),
                state: if resolved_at.is_some() {
                    ProblemState::Resolved
                } else {
                    ProblemState::Open
                },
                handling_at: None,
                resolved_at,
                resolution: resolved_at.map(|_| "调整".into()),
                resolved_by: resolved_at.map(|_| "李娜".into()),
            })?;
        }
        Ok(())
    })
    .unwrap()
}

/// The dossier `changes` make, as the device that made them holds it.
fn dossier_from(changes: &[NewChange], actor: &ActorId) -> Dossier {
    let mut doc = automerge::Automerge::new();
    for c in changes {
        doc.apply_changes([automerge::Change::from_bytes(c.bytes.clone()).unwrap()])
            .unwrap();
    }
    Dossier::from_document(doc, actor.clone()).unwrap()
}

pub(crate) fn dossier_id(office: &str, n: u32) -> String {
    format!("01a30000-0000-7000-8000-{office}{n:010}")
}

/// Pushes through the sync core acknowledge the log positions they take
/// (`log_before`, `last_seq`), a pull from 0 returns every change in log
/// order, and a change pushed twice is stored once.
#[test]
fn pushes_are_logged_in_order_and_acknowledged_with_their_positions() {
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        add_office_device(&*store, "dev-gd", "44", "gd");
        let hub = unlimited_hub(&store);
        let rt = keqing_tests::runtime();
        let actor = ActorId::random();
        rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
            .unwrap();
        let mut before = 0;
        for n in 0..5 {
            let id = dossier_id("44", n);
            let changes = working_dossier(&id, "44", &actor, n);
            let ack = rt
                .block_on(hub.push("gd".into(), changes.iter().map(|c| env(&id, c)).collect()))
                .unwrap();
            assert_eq!(ack.accepted, 2, "{backend}");
            assert_eq!(ack.log_before, before, "{backend}");
            assert_eq!(ack.last_seq, before + 2, "{backend}");
            before = ack.last_seq;
            // The same changes again: nothing new.
            let again = rt
                .block_on(hub.push("gd".into(), changes.iter().map(|c| env(&id, c)).collect()))
                .unwrap();
            assert_eq!(again.accepted, 0, "{backend}");
        }
        assert_eq!(store.counts().unwrap().changes, 10, "{backend}");
        assert_eq!(store.counts().unwrap().documents, 5, "{backend}");
        let seqs: Vec<u64> = rt.block_on(async {
            let mut rx = hub.pull("gd".into(), 0, String::new(), 1000).await.unwrap();
            let mut seqs = Vec::new();
            while let Some(b) = rx.recv().await {
                let b = b.unwrap();
                seqs.extend(b.changes.iter().map(|c| c.seq));
                if b.done {
                    break;
                }
            }
            seqs
        });
        // A fresh device gets the unbuilt dossiers' changes in log order
        // (or their snapshots): never a position twice, never out of order.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{backend}: {seqs:?}");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
    }
}

/// Many appenders at once (as several server processes would be): the log
/// is numbered 1..=N without a gap or a double, and a reader following
/// the log by its cursor while they append sees every change exactly once.
#[test]
fn concurrent_appenders_never_let_a_cursor_reader_miss_a_change() {
    use keqing_server::store::Budget;
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        const WRITERS: usize = 6;
        const BATCHES: usize = 25;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let follower = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut cursor = 0;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let reader = store.reader().unwrap();
                    let mut budget = Budget::new(usize::MAX, 1000);
                    let (changes, _) = reader
                        .changes_after_within(None, cursor, &mut budget)
                        .unwrap();
                    drop(reader);
                    if let Some(last) = changes.last() {
                        cursor = last.seq;
                    }
                    let empty = changes.is_empty();
                    seen.extend(changes.into_iter().map(|c| c.seq));
                    if finished && empty {
                        return seen;
                    }
                }
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for b in 0..BATCHES {
                        let changes: Vec<([u8; 32], Vec<u8>)> = (0..3u8)
                            .map(|k| {
                                let mut hash = [0u8; 32];
                                hash[0] = w as u8;
                                hash[1] = b as u8;
                                hash[2] = k;
                                (hash, vec![k; 10])
                            })
                            .collect();
                        append_raw(
                            &*store,
                            &format!("doc-{w}-{b}"),
                            &changes,
                            (Vec::new(), false),
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = follower.join().unwrap();
        let n = (WRITERS * BATCHES * 3) as u64;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{backend}");
        assert_eq!(store.reader().unwrap().max_seq().unwrap(), n, "{backend}");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
    }
}

/// A push is checked on a view before it takes the writer's turn. What
/// moves in between is seen in the turn, and the push checked again there:
/// the change its own depends on appended meanwhile (the view alone would
/// refuse it), the same changes pushed twice at once (logged once, the
/// second push told they are duplicates), a dossier erased meanwhile
/// (refused as gone, nothing of it logged again).
#[test]
fn a_push_checked_on_a_view_appends_only_what_its_turn_allows() {
    use keqing_server::hub::ViewChecked;
    use keqing_shared::sync::SyncErrorKind;
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    for store in each_store_in(tmp.path(), &url) {
        let backend = store.backend();
        let (_hub, _rt, actor) = two_enrolled_devices(&store);
        let device = store.device("dev-gd").unwrap().unwrap();
        let checked = |id: &str, changes: &[NewChange]| {
            ViewChecked::of_push(
                &*store,
                &device,
                changes.iter().map(|c| env(id, c)).collect(),
            )
            .unwrap()
        };

        // A dossier's second change, checked before its first is logged.
        let a = dossier_id("44", 1);
        let a_changes = working_dossier(&a, "44", &actor, 1);
        let early = checked(&a, &a_changes[1..]);
        let alone = checked(&a, &a_changes[1..]).append(&*store).unwrap_err();
        assert_eq!(
            alone.kind,
            SyncErrorKind::InvalidArgument,
            "{backend}: {alone}"
        );
        let first = checked(&a, &a_changes[..1]).append(&*store).unwrap();
        assert_eq!(first.accepted, 1, "{backend}");
        let ack = early.append(&*store).unwrap();
        assert_eq!(
            (ack.accepted, ack.log_before),
            (1, first.last_seq),
            "{backend}"
        );

        // The same changes in two pushes checked at once.
        let b = dossier_id("44", 2);
        let b_changes = working_dossier(&b, "44", &actor, 2);
        let (one, other) = (checked(&b, &b_changes), checked(&b, &b_changes));
        assert_eq!(one.append(&*store).unwrap().accepted, 2, "{backend}");
        let ack = other.append(&*store).unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (0, 2), "{backend}");
        assert_eq!(store.counts().unwrap().changes, 4, "{backend}");

        // A follow-up to a dossier checked before headquarters erases it.
        let mut dossier = dossier_from(&a_changes, &actor);
        let late = dossier
            .edit(3, |tx| tx.add(&followup(&a, 1)))
            .unwrap()
            .unwrap();
        let pending = checked(&a, std::slice::from_ref(&late));
        keqing_server::lifecycle::request_erasure(&*store, &a, "申请删除", "admin:test").unwrap();
        let ledger = tmp.path().join(format!("{backend}-view-erasures.jsonl"));
        keqing_server::lifecycle::confirm_erasure(&*store, &a, "admin:test", &ledger).unwrap();
        let gone = pending.append(&*store).unwrap_err();
        assert_eq!(gone.kind, SyncErrorKind::Gone, "{backend}: {gone}");
        let reader = store.reader().unwrap();
        assert!(reader.document(&a).unwrap().is_none(), "{backend}");
        assert!(
            reader.changes_of(&a, u64::MAX).unwrap().is_empty(),
            "{backend}"
        );
        drop(reader);
        assert_eq!(store.counts().unwrap().changes, 2, "{backend}");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
    }
}

/// The same dossiers give the same projection rows on every backend, a
/// rebuild gives the rows incremental projection kept, and two projector
/// sessions at once never write a batch twice.
#[test]
fn every_backend_projects_the_same_rows_and_rebuilds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let actor = ActorId::random();
    let mut dumps = Vec::new();
    let mut reports = Vec::new();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        add_office_device(&*store, "dev-gd", "44", "gd");
        add_office_device(&*store, "dev-zj", "33", "zj");
        let hub = unlimited_hub(&store);
        let rt = keqing_tests::runtime();
        let zj_actor = ActorId::random();
        rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
            .unwrap();
        rt.block_on(hub.enroll("zj".into(), zj_actor.to_bytes().to_vec()))
            .unwrap();
        for (token, office, actor) in [("gd", "44", &actor), ("zj", "33", &zj_actor)] {
            for n in 0..12 {
                let id = dossier_id(office, n);
                let mut changes = working_dossier(&id, office, actor, n);
                changes.extend(marked(&mut dossier_from(&changes, actor), n));
                rt.block_on(hub.push(token.into(), changes.iter().map(|c| env(&id, c)).collect()))
                    .unwrap();
                // Two projector sessions race over the log as it grows.
                if n % 4 == 3 {
                    let (a, b) = (store.clone(), store.clone());
                    let one = std::thread::spawn(move || {
                        keqing_server::projector::catch_up(
                            &mut *a.projections().unwrap(),
                            |_, _| {},
                        )
                        .unwrap()
                    });
                    let two = std::thread::spawn(move || {
                        keqing_server::projector::catch_up(
                            &mut *b.projections().unwrap(),
                            |_, _| {},
                        )
                        .unwrap()
                    });
                    one.join().unwrap();
                    two.join().unwrap();
                }
            }
        }
        // A duplicate merged into another dossier, in one push: its records
        // move to the kept dossier within one projector batch.
        let (keep_id, dup_id) = (dossier_id("44", 1), dossier_id("44", 0));
        let dossier =
            |id: &str, n: u32| dossier_from(&working_dossier(id, "44", &actor, n), &actor);
        let (mut kept, mut dup) = (dossier(&keep_id, 1), dossier(&dup_id, 0));
        let (keep_view, dup_view) = (kept.view().unwrap(), dup.view().unwrap());
        let absorbed = kept
            .edit(3, |tx| tx.absorb(&keep_view, &dup_view).map(|_| ()))
            .unwrap()
            .unwrap();
        let folded = dup
            .edit(3, |tx| tx.set_merged_into(&keep_id))
            .unwrap()
            .unwrap();
        rt.block_on(hub.push(
            "gd".into(),
            vec![env(&keep_id, &absorbed), env(&dup_id, &folded)],
        ))
        .unwrap();
        let mut session = store.projections().unwrap();
        keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
        assert_eq!(
            session.projector_cursor().unwrap(),
            session.max_seq().unwrap(),
            "{backend}"
        );
        let dump = session.projection_dump().unwrap();
        let moved: Vec<&str> = dump
            .lines()
            .filter(|l| l.starts_with("calls|") && l.contains(&format!("call-{dup_id}")))
            .collect();
        assert_eq!(moved.len(), 1, "{backend}: {moved:?}");
        assert!(
            moved[0].contains(&format!("|Text(\"{keep_id}\")")),
            "{backend}: the duplicate's call is the kept dossier's now: {}",
            moved[0]
        );
        let incremental = session.projection_dump().unwrap();
        assert_eq!(
            incremental
                .lines()
                .filter(|l| l.starts_with("calls|"))
                .count(),
            24,
            "{backend}"
        );
        let rebuilt = keqing_server::projector::rebuild(&mut *session, |_, _| {}).unwrap();
        assert_eq!(rebuilt.skipped, 0, "{backend}");
        assert_eq!(session.projection_dump().unwrap(), incremental, "{backend}");
        let from = keqing_shared::when::parse_date("2026-11-01").unwrap();
        let to = keqing_shared::when::parse_date("2026-11-30").unwrap();
        let report = keqing_server::reports::build_report(
            &mut *session,
            &keqing_shared::report::Scope::National,
            from,
            to,
        )
        .unwrap();
        assert_eq!(report.total.calls, 24, "{backend}");
        assert_eq!(report.total.purchases, 24, "{backend}");
        // The marks counted where they are stored: typical cases flagged
        // before and in the range, problems open and resolved.
        let t = &report.total;
        assert_eq!(
            (
                t.typical,
                t.typical_new,
                t.problems_opened,
                t.problems_open,
                t.problems_resolved
            ),
            (6, 4, 2, 6, 2),
            "{backend}"
        );
        dumps.push(incremental);
        reports.push(serde_json::to_value(&report).unwrap());
    }
    assert_eq!(
        dumps[0], dumps[1],
        "SQLite and PostgreSQL hold the same rows"
    );
    assert_eq!(reports[0], reports[1], "and give the same national report");
}

/// Device administration and the audit log: every change audited, the log
/// append-only, a revoked device refused.
#[test]
fn devices_and_the_audit_log_behave_alike() {
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        add_office_device(&*store, "dev-gd", "44", "gd");
        store
            .add_device(
                "dev-hq",
                "数据中心",
                None,
                &keqing_server::hub::token_hash("hq"),
                "2026-11-20T00:00:00",
                "admin:test",
            )
            .unwrap();
        let devices = store.devices().unwrap();
        assert_eq!(devices.len(), 2, "{backend}");
        assert_eq!(
            store.device_named("数据中心").unwrap().office,
            None,
            "{backend}"
        );
        let revoked = store
            .revoke("dev-gd", "2026-11-21T00:00:00", "admin:test")
            .unwrap();
        assert_eq!(
            revoked.revoked_at.as_deref(),
            Some("2026-11-21T00:00:00"),
            "{backend}"
        );
        store
            .bind_certificate("dev-hq", &[7; 32], "admin:test")
            .unwrap();
        assert_eq!(
            store.device("dev-hq").unwrap().unwrap().cert_sha256,
            Some(vec![7; 32]),
            "{backend}"
        );
        let hub = keqing_server::hub::Hub::new(store.clone(), Arc::new(tokio::sync::Notify::new()))
            .unwrap();
        let refused = keqing_tests::runtime()
            .block_on(hub.enroll("gd".into(), ActorId::random().to_bytes().to_vec()));
        let refused = refused.expect_err("a revoked device is refused");
        assert_eq!(
            refused.kind,
            keqing_shared::sync::SyncErrorKind::Unauthenticated,
            "{backend}: {refused}"
        );
        assert!(refused.message.contains("revoked"), "{backend}: {refused}");
        let actions: BTreeSet<String> = store
            .audit_log(100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        for a in ["device.add", "device.revoke", "device.cert"] {
            assert!(actions.contains(a), "{backend}: {a} audited ({actions:?})");
        }
        let log = store.audit_log(2).unwrap();
        assert_eq!(log.len(), 2, "{backend}");
        assert!(log[0].seq < log[1].seq, "{backend}: oldest first");
        assert_eq!(store.epoch().unwrap().len(), 32, "{backend}");
    }
}

/// A PostgreSQL store must exist for the commands that read one, the
/// audit log refuses changes there as in SQLite, and a backup is the
/// database's own tools' job.
#[test]
fn a_postgres_store_is_made_once_and_its_audit_log_is_append_only() {
    let url = keqing_tests::postgres_database();
    let missing = PgStore::open_existing(&url);
    assert!(
        matches!(missing, Err(keqing_server::store::StoreError::NoStore(_))),
        "an empty database holds no store"
    );
    // Two processes opening a new database at once migrate it once.
    let (a, b) = (url.clone(), url.clone());
    let one = std::thread::spawn(move || PgStore::open(&a).map(|_| ()));
    let two = std::thread::spawn(move || PgStore::open(&b).map(|_| ()));
    one.join().unwrap().unwrap();
    two.join().unwrap().unwrap();
    let store = PgStore::open_existing(&url).unwrap();
    store.audit("admin:test", "test", "subject", "").unwrap();
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap()
    };
    for sql in [
        "UPDATE audit SET detail = 'x'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let out = psql(sql);
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("append-only"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(store.audit_log(10).unwrap().len(), 1);
    let backup = store.backup_to(&std::env::temp_dir().join("never"), &mut |_, _| {});
    assert!(matches!(
        backup,
        Err(keqing_server::store::StoreError::Unsupported(_))
    ));
}

/// A report on PostgreSQL reads one snapshot (SQLite's is held by the
/// projection crate's test): a visit another connection commits after the
/// report has read its calls is not in the report, whose queries go out
/// together. The other connection holds the visits table locked until the
/// report's visits query waits on it, so the commit lands between that
/// report's first query and its visits query every time.
#[test]
fn a_postgres_report_reads_one_snapshot() {
    use std::io::Write;
    let url = keqing_tests::postgres_database();
    let store = PgStore::open(&url).unwrap();
    let session = store.projections().unwrap();
    let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
    let (from, to) = (day(1), day(10));
    // Prepares the report's statements on the session's connection.
    assert!(
        session
            .report_rows(None, from, to)
            .unwrap()
            .visits
            .is_empty()
    );
    let mut locker = std::process::Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut sql = locker.stdin.take().unwrap();
    sql.write_all(
        "BEGIN; LOCK TABLE visits IN ACCESS EXCLUSIVE MODE;
          INSERT INTO visits (id, dossier_id, at, staff, purchased, office, reason)
          VALUES ('v1', 'd1', '2026-10-02 10:00:00', '王医生', 1, '44', NULL);\n"
            .as_bytes(),
    )
    .unwrap();
    let locks = |granted: bool| {
        psql_ok(
            &url,
            &["-tA"],
            &format!(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND c.relname = 'visits' AND l.granted = {granted}"
            ),
        )
        .trim()
        .parse::<u32>()
        .unwrap()
    };
    let wait_for = |what: &str, holds: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !holds() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_for("the visits table locked", &|| locks(true) > 0);
    let report = std::thread::scope(|s| {
        let committer = s.spawn(|| {
            wait_for("the report waiting for the visits table", &|| {
                locks(false) > 0
            });
            sql.write_all(b"COMMIT;\n").unwrap();
            drop(sql);
            assert!(locker.wait().unwrap().success());
        });
        let report = session.report_rows(None, from, to).unwrap();
        committer.join().unwrap();
        report
    });
    assert!(
        report.visits.is_empty(),
        "a visit committed after the report began is not in it: {:?}",
        report.visits
    );
    assert_eq!(
        session.report_rows(None, from, to).unwrap().visits.len(),
        1,
        "the next report has it"
    );
}

/// Two processes over one PostgreSQL store: one leads the projector at a
/// time, and when the leader's connections end (its process died) the
/// other takes over at its next try.
#[test]
fn one_process_at_a_time_leads_the_projector_and_another_takes_over() {
    let url = keqing_tests::postgres_database();
    let first = PgStore::open(&url).unwrap();
    let second = PgStore::open(&url).unwrap();
    assert!(first.lead_projector().unwrap(), "the first to ask leads");
    assert!(!second.lead_projector().unwrap(), "one leader at a time");
    assert!(first.lead_projector().unwrap(), "the leader keeps the lead");
    assert!(!second.lead_projector().unwrap());
    // The leader's process goes: its connections close with it.
    drop(first);
    let since = std::time::Instant::now();
    while !second.lead_projector().unwrap() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "nobody took over the projector"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let third = PgStore::open(&url).unwrap();
    assert!(!third.lead_projector().unwrap(), "the new leader keeps it");
}

/// A device's rate limit holds across processes: requests spread over two
/// server processes (two hubs on two stores of one database) take from
/// one bucket, so together they are admitted no more than one process
/// would admit.
#[test]
fn a_rate_limit_holds_across_processes_sharing_a_postgres_store() {
    let url = keqing_tests::postgres_database();
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(PgStore::open(&url).unwrap()),
        Arc::new(PgStore::open(&url).unwrap()),
    ];
    add_office_device(&*stores[0], "dev-gd", "44", "gd");
    const BURST: u32 = 10;
    let hubs: Vec<_> = stores
        .iter()
        .map(|s| {
            keqing_server::hub::Hub::new(s.clone(), Arc::new(tokio::sync::Notify::new()))
                .unwrap()
                .with_rate_limit(1, BURST)
        })
        .collect();
    let rt = keqing_tests::runtime();
    let actor = ActorId::random();
    let mut admitted = 0;
    let mut exhausted = 0;
    for n in 0..40 {
        let hub = &hubs[n % 2];
        match rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec())) {
            Ok(_) => admitted += 1,
            Err(e) => {
                assert_eq!(
                    e.kind,
                    keqing_shared::sync::SyncErrorKind::ResourceExhausted,
                    "{e}"
                );
                exhausted += 1;
            }
        }
    }
    // Each process alone would admit BURST (and a second's refill);
    // a bucket per process would admit twice that.
    assert!(
        (BURST..=BURST + 3).contains(&admitted),
        "admitted {admitted} of 40 over two processes with a burst of {BURST}"
    );
    assert_eq!(admitted + exhausted, 40);
}

fn read(office: &str, device: &str, n: u64) -> keqing_server::store::OfficeRead {
    keqing_server::store::OfficeRead {
        office: office.into(),
        device_id: device.into(),
        device_name: format!("{device} 前台"),
        device_seq: n,
        at: "2026-11-20T09:00:00".into(),
        who: "李敏".into(),
        action: "dossier.open".into(),
        target: format!("dossier-{n}"),
    }
}

/// Headquarters' accounts and the offices' read audit: a name taken once,
/// changes audited without the hash, reads kept once per device and
/// number, one office's apart, and a reader following positions misses
/// no read while several appenders commit at once.
#[test]
fn headquarters_accounts_and_the_read_audit_behave_alike() {
    use keqing_server::store::{HqUser, UserChange};
    use keqing_shared::staff::HqRole;
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        let user = HqUser {
            name: "周主任".into(),
            role: HqRole::Analyst,
            password_hash: "$argon2id$not-a-real-hash".into(),
            created_at: "2026-11-20T00:00:00".into(),
            disabled_at: None,
        };
        store.add_user(&user, "admin:test").unwrap();
        let again = store.add_user(&user, "admin:test");
        assert!(again.is_err(), "{backend}: a name is taken once");
        assert_eq!(
            store.user("周主任").unwrap().as_ref(),
            Some(&user),
            "{backend}"
        );
        let changed = store
            .change_user("周主任", &UserChange::Role(HqRole::Admin), "admin:test")
            .unwrap();
        assert_eq!(changed.role, HqRole::Admin, "{backend}");
        let changed = store
            .change_user(
                "周主任",
                &UserChange::Password("$argon2id$new".into()),
                "admin:test",
            )
            .unwrap();
        assert_eq!(changed.password_hash, "$argon2id$new", "{backend}");
        let closed = store
            .change_user("周主任", &UserChange::Disabled(true), "admin:test")
            .unwrap();
        assert!(closed.disabled_at.is_some(), "{backend}");
        let opened = store
            .change_user("周主任", &UserChange::Disabled(false), "admin:test")
            .unwrap();
        assert_eq!(opened.disabled_at, None, "{backend}");
        assert!(
            store
                .change_user("没有此人", &UserChange::Disabled(true), "admin:test")
                .is_err(),
            "{backend}"
        );
        assert_eq!(store.users().unwrap().len(), 1, "{backend}");
        let audit = store.audit_log(100).unwrap();
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        for a in [
            "user.add",
            "user.role",
            "user.password",
            "user.disable",
            "user.enable",
        ] {
            assert!(actions.contains(&a), "{backend}: {a} audited ({actions:?})");
        }
        assert!(
            audit.iter().all(|e| !e.detail.contains("argon2")),
            "{backend}: no hash in the audit"
        );

        // Reads: kept once per device and number, oldest first.
        store
            .store_reads(&[read("44", "dev-gd", 1), read("44", "dev-gd", 2)])
            .unwrap();
        store
            .store_reads(&[read("44", "dev-gd", 2), read("11", "dev-bj", 1)])
            .unwrap();
        let all = store.office_reads(None, 0, 100).unwrap();
        assert_eq!(all.len(), 3, "{backend}: a read sent twice is kept once");
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "{backend}");
        let gd = store.office_reads(Some("44"), 0, 100).unwrap();
        assert_eq!(gd.len(), 2, "{backend}");
        assert!(gd.iter().all(|r| r.read.office == "44"), "{backend}");
        let after = store.office_reads(None, all[0].seq, 1).unwrap();
        assert_eq!(after.len(), 1, "{backend}: a limit");
        assert_eq!(after[0].seq, all[1].seq, "{backend}");

        // Four appenders at once, a reader following positions: it ends
        // with every read, none twice.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for batch in 0..25u64 {
                        let reads: Vec<_> = (0..4)
                            .map(|i| read("45", &format!("dev-{w}"), 10 + batch * 4 + i))
                            .collect();
                        store.store_reads(&reads).unwrap();
                    }
                })
            })
            .collect();
        let mut cursor = all.last().unwrap().seq;
        let mut seen = Vec::new();
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            for r in store.office_reads(Some("45"), cursor, 7).unwrap() {
                cursor = r.seq;
                seen.push((r.read.device_id, r.read.device_seq));
            }
            if done
                && store
                    .office_reads(Some("45"), cursor, 1)
                    .unwrap()
                    .is_empty()
            {
                break;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        let distinct: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(distinct.len(), seen.len(), "{backend}: none twice");
        assert_eq!(seen.len(), 400, "{backend}: every read reached the reader");
    }
}

/// The catalogue's import (a version into every office's copy, in one
/// append) and media spend (one amount per day, office and source) work
/// alike on every backend, and a report counts the spend under the
/// catalogue's source.
#[test]
fn the_catalogue_and_spend_reach_reports_alike() {
    use keqing_shared::report::{Scope, SpendFact};
    let tmp = tempfile::tempdir().unwrap();
    let file = include_str!("../../docs/catalog-example.toml");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        for version in [1, 2] {
            let c = keqing_server::catalog::import(&*store, file, "admin:test").unwrap();
            assert_eq!(c.version, version, "{backend}");
        }
        let reader = store.reader().unwrap();
        for office in keqing_shared::office::OFFICES.iter() {
            let copy = reader
                .snapshot_of(&keqing_shared::catalog::catalog_id(office.code))
                .unwrap();
            let c = keqing_shared::catalog::read_saved(&copy).unwrap();
            assert_eq!(c.version, 2, "{backend} {}", office.code);
        }
        drop(reader);
        let spend = |fen: i64| SpendFact {
            office: "44".into(),
            day,
            source_code: "tv".into(),
            amount_fen: fen,
        };
        assert_eq!(store.import_spend(&[spend(1000)], "admin:test").unwrap(), 1);
        assert_eq!(store.import_spend(&[spend(2500)], "admin:test").unwrap(), 0);
        let report = keqing_server::reports::build_report(
            &mut *store.projections().unwrap(),
            &Scope::National,
            day,
            day,
        )
        .unwrap();
        let tv = report.by_source.iter().find(|s| s.source == "电视");
        assert_eq!(
            tv.map(|s| (s.spend_fen, s.kind.as_str())),
            Some((2500, "电视")),
            "{backend}"
        );
        let other_day = keqing_server::reports::build_report(
            &mut *store.projections().unwrap(),
            &Scope::Office("11".into()),
            day,
            day,
        )
        .unwrap();
        assert!(
            other_day.by_source.iter().all(|s| s.spend_fen == 0),
            "{backend}: 44's spend"
        );
    }
}

/// Transfers and erasures, alike on every backend: the server's record of
/// the office moves with a transfer and both offices' devices are told;
/// the new office's device gets the whole dossier by repair, the old
/// office's nothing (and no refusal); a former office's change with
/// records before the transfer is taken, one after it refused as gone. An
/// erasure leaves a tombstone and no change, snapshot or identifying row;
/// pushes to it are refused as gone; the report's figures stay, even after
/// a rebuild.
#[test]
fn transfers_and_erasures_behave_alike() {
    use keqing_shared::lifecycle::{NoticeKind, NoticeRequest};
    use keqing_shared::sync::{DocHeads, SyncErrorKind};
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    let mut noticed = Vec::new();
    for store in each_store_in(tmp.path(), &url) {
        let backend = store.backend();
        add_office_device(&*store, "dev-gd", "44", "gd");
        add_office_device(&*store, "dev-bj", "11", "bj");
        add_office_device(&*store, "dev-zj", "33", "zj");
        let hub = unlimited_hub(&store);
        let rt = keqing_tests::runtime();
        let gd = ActorId::random();
        rt.block_on(hub.enroll("gd".into(), gd.to_bytes().to_vec()))
            .unwrap();
        rt.block_on(hub.enroll("bj".into(), ActorId::random().to_bytes().to_vec()))
            .unwrap();
        let mut docs = Vec::new();
        for n in 0..3 {
            let id = dossier_id("44", n);
            let changes = working_dossier(&id, "44", &gd, n);
            rt.block_on(hub.push("gd".into(), changes.iter().map(|c| env(&id, c)).collect()))
                .unwrap();
            docs.push((id, dossier_from(&changes, &gd)));
        }
        let calls = |store: &Arc<dyn Store>| {
            let mut session = store.projections().unwrap();
            keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
            keqing_server::reports::build_report(
                &mut *session,
                &keqing_shared::report::Scope::National,
                keqing_shared::when::parse_date("2026-11-01").unwrap(),
                keqing_shared::when::parse_date("2026-11-30").unwrap(),
            )
            .unwrap()
            .total
            .calls
        };
        assert_eq!(calls(&store), 3, "{backend}");

        // Transfer the first to Beijing.
        let moved = docs[0].0.clone();
        keqing_server::lifecycle::transfer(&*store, &moved, "11", "迁居", "admin:test").unwrap();
        assert_eq!(
            store
                .reader()
                .unwrap()
                .document(&moved)
                .unwrap()
                .unwrap()
                .office,
            "11",
            "{backend}"
        );
        let notices = |token: &str| {
            rt.block_on(hub.notices(token.into(), NoticeRequest::default()))
                .unwrap()
        };
        for token in ["gd", "bj"] {
            let n = notices(token);
            assert_eq!(n.notices.len(), 1, "{backend} {token}");
            assert_eq!(
                n.notices[0].kind,
                NoticeKind::Transferred {
                    from: "44".into(),
                    to: "11".into()
                },
                "{backend}"
            );
        }
        // Another office is told nothing, even asking by id; a request
        // past the limits is refused.
        let elsewhere = rt
            .block_on(hub.notices(
                "zj".into(),
                NoticeRequest {
                    cursor: 0,
                    ask: vec![moved.clone()],
                },
            ))
            .unwrap();
        assert!(elsewhere.notices.is_empty(), "{backend}: {elsewhere:?}");
        let flood = rt
            .block_on(hub.notices(
                "zj".into(),
                NoticeRequest {
                    cursor: 0,
                    ask: vec![moved.clone(); keqing_shared::sync::limits::NOTICES_PER_ANSWER + 1],
                },
            ))
            .unwrap_err();
        assert_eq!(flood.kind, SyncErrorKind::ResourceExhausted, "{backend}");
        let bad = rt
            .block_on(hub.notices(
                "zj".into(),
                NoticeRequest {
                    cursor: 0,
                    ask: vec!["no such; DROP TABLE".into()],
                },
            ))
            .unwrap_err();
        assert_eq!(bad.kind, SyncErrorKind::InvalidArgument, "{backend}");
        let heads = |id: &str| {
            vec![DocHeads {
                doc_id: id.to_string(),
                heads: Vec::new(),
            }]
        };
        let got = rt.block_on(hub.repair("bj".into(), heads(&moved))).unwrap();
        assert_eq!(
            got.missing.len(),
            3,
            "{backend}: the whole dossier, transfer included"
        );
        let got = rt.block_on(hub.repair("gd".into(), heads(&moved))).unwrap();
        assert!(got.missing.is_empty(), "{backend}");
        // Guangdong's device, offline, typed a follow-up before the transfer
        // (taken) and one after it (Beijing's to make: refused as gone).
        let follow = |d: &mut Dossier, id: &str, at: &str| {
            d.edit(3, |tx| {
                tx.add(&keqing_shared::records::FollowUp {
                    id: id.into(),
                    at: t(at),
                    staff: "回访1".into(),
                    kind: "回访".into(),
                    outcome: "服药正常".into(),
                    next_entry: None,
                })
            })
            .unwrap()
            .unwrap()
        };
        let before = follow(&mut docs[0].1, "late-but-before", "2026-11-29T09:00");
        let ack = rt
            .block_on(hub.push("gd".into(), vec![env(&moved, &before)]))
            .unwrap();
        assert_eq!(ack.accepted, 1, "{backend}");
        let after_at =
            keqing_shared::when::fmt_datetime(keqing_host::now_cst() + chrono::Duration::hours(1));
        let after = follow(&mut docs[0].1, "after", &after_at);
        let refused = rt
            .block_on(hub.push("gd".into(), vec![env(&moved, &after)]))
            .unwrap_err();
        assert_eq!(refused.kind, SyncErrorKind::Gone, "{backend}: {refused}");

        // Erase the second.
        let erased = docs[1].0.clone();
        let ledger = tmp.path().join(format!("{backend}-erasures.jsonl"));
        let no_request =
            keqing_server::lifecycle::confirm_erasure(&*store, &erased, "admin:test", &ledger);
        assert!(no_request.is_err(), "{backend}");
        keqing_server::lifecycle::request_erasure(&*store, &erased, "申请删除", "admin:test")
            .unwrap();
        let done =
            keqing_server::lifecycle::confirm_erasure(&*store, &erased, "admin:test", &ledger)
                .unwrap();
        assert_eq!(done.changes_removed, 2, "{backend}");
        assert!(done.scrubbed, "{backend}: {:?}", done.scrub_error);
        assert!(store.reader().unwrap().document(&erased).unwrap().is_none());
        assert!(
            store
                .reader()
                .unwrap()
                .changes_of(&erased, u64::MAX)
                .unwrap()
                .is_empty(),
            "{backend}"
        );
        assert_eq!(store.tombstones().unwrap()[0].doc_id, erased, "{backend}");
        let again = follow(&mut docs[1].1, "to-erased", "2026-11-29T10:00");
        let refused = rt
            .block_on(hub.push("gd".into(), vec![env(&erased, &again)]))
            .unwrap_err();
        assert_eq!(refused.kind, SyncErrorKind::Gone, "{backend}: {refused}");
        let told = rt
            .block_on(hub.notices(
                "gd".into(),
                NoticeRequest {
                    cursor: notices("gd").cursor,
                    ask: vec![erased.clone()],
                },
            ))
            .unwrap();
        assert!(
            told.notices
                .iter()
                .any(|n| n.doc_id == erased && n.kind == NoticeKind::Erased),
            "{backend}: {told:?}"
        );
        assert_eq!(calls(&store), 3, "{backend}: figures stay");
        if backend == "postgres" {
            // The integer key its follow-ups and slots were stored under
            // goes with them; the stand-in has one of its own.
            let keys = psql_ok(
                &url,
                &["-tA"],
                &format!(
                    "SELECT count(*) FILTER (WHERE dossier_id = '{erased}'),
                            count(*) FILTER (WHERE dossier_id LIKE 'erased-%')
                     FROM dossier_keys"
                ),
            );
            assert_eq!(keys.trim(), "0|1", "{backend}");
        }
        {
            let mut session = store.projections().unwrap();
            let dump = session.projection_dump().unwrap();
            assert!(
                !dump.contains("13800130001"),
                "{backend}: her phone in {dump}"
            );
            assert!(!dump.contains("患者1"), "{backend}: her name");
            keqing_server::projector::rebuild(&mut *session, |_, _| {}).unwrap();
            let rebuilt = session.projection_dump().unwrap();
            assert_eq!(rebuilt, dump, "{backend}: a rebuild keeps the stand-in");
        }
        assert_eq!(calls(&store), 3, "{backend}: figures stay after a rebuild");
        noticed.push(notices("gd").notices.len());
    }
    assert_eq!(noticed, vec![2, 2], "a transfer and an erasure, told alike");
}

/// Fleet health alike on every backend: the newer of each time, the
/// latest of what a device said; the signing key of a device's bundles;
/// the store's size.
#[test]
fn fleet_health_and_device_keys_behave_alike() {
    use keqing_server::store::DeviceHealth;
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        add_office_device(&*store, "dev-health", "44", "health-token");
        let seen = |push: &str, sync: Option<&str>, outbox: Option<u64>| DeviceHealth {
            device_id: "dev-health".into(),
            client_version: outbox.map(|_| "0.1.0".into()),
            outbox,
            quarantined: outbox.map(|_| 0),
            last_push: Some(push.into()),
            last_pull: None,
            last_sync: sync.map(str::to_string),
        };
        store
            .record_health(&[seen(
                "2026-12-01T10:00:00",
                Some("2026-12-01T10:00:05"),
                Some(4),
            )])
            .unwrap();
        // An older observation from another process changes no time; one
        // that says nothing of the device keeps what it said.
        store
            .record_health(&[seen("2026-11-30T09:00:00", None, None)])
            .unwrap();
        let h = store.device_health().unwrap();
        assert_eq!(h.len(), 1, "{backend}");
        assert_eq!(
            (
                h[0].last_push.as_deref(),
                h[0].last_sync.as_deref(),
                h[0].outbox,
                h[0].client_version.as_deref()
            ),
            (
                Some("2026-12-01T10:00:00"),
                Some("2026-12-01T10:00:05"),
                Some(4),
                Some("0.1.0")
            ),
            "{backend}"
        );
        assert_eq!(
            store.device_key("dev-health").unwrap().as_deref(),
            Some(&keqing_shared::bundle::key_of_token("health-token")[..]),
            "{backend}"
        );
        assert!(store.device_key("nobody").unwrap().is_none(), "{backend}");
        assert!(store.size_bytes().unwrap() > 0, "{backend}");
    }
}

/// What a pull brought: the snapshots, and the changes (document, bytes).
type Pulled = (Vec<keqing_shared::sync::Snapshot>, Vec<(String, Vec<u8>)>);

/// What a pull from `cursor` brings `token`'s device, all batches, and the
/// cursor it ends at.
fn pull_all(
    rt: &tokio::runtime::Runtime,
    (hub, epoch): (&keqing_server::hub::Hub, &str),
    token: &str,
    cursor: u64,
) -> (Pulled, u64) {
    rt.block_on(async {
        let epoch = epoch.to_string();
        let mut rx = hub.pull(token.into(), cursor, epoch, 3).await.unwrap();
        let (mut snapshots, mut changes, mut cursor) = (Vec::new(), Vec::new(), cursor);
        while let Some(b) = rx.recv().await {
            let b = b.unwrap();
            assert!(
                b.changes.iter().all(|c| !c.bytes.is_empty()),
                "a pull never sends a change without its bytes"
            );
            snapshots.extend(b.snapshots);
            changes.extend(b.changes.into_iter().map(|c| (c.doc_id, c.bytes)));
            cursor = cursor.max(b.cursor);
            if b.done {
                break;
            }
        }
        ((snapshots, changes), cursor)
    })
}

/// Merges pulled data into a device's documents, as a replica does.
fn merge_pulled(
    held: &mut std::collections::BTreeMap<String, automerge::Automerge>,
    (snapshots, changes): Pulled,
) {
    for s in snapshots {
        let doc = held.entry(s.doc_id).or_default();
        doc.merge(&mut automerge::Automerge::load(&s.document).unwrap())
            .unwrap();
    }
    for (id, bytes) in changes {
        held.entry(id)
            .or_default()
            .apply_changes([automerge::Change::from_bytes(bytes).unwrap()])
            .unwrap();
    }
}

/// The sync core over `store`, without rate limits (a test pushes and
/// pulls as fast as it can).
fn unlimited_hub(store: &Arc<dyn Store>) -> keqing_server::hub::Hub {
    keqing_server::hub::Hub::new(store.clone(), Arc::new(tokio::sync::Notify::new()))
        .unwrap()
        .with_rate_limit(u32::MAX, u32::MAX)
}

/// Runs `sql` with psql on the database at `url` (`flags` before `-c`);
/// its output, once it succeeded.
fn psql_ok(url: &str, flags: &[&str], sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1"])
        .args(flags)
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// PostgreSQL keeps follow-ups and slots under an integer key of their
/// dossier (schema migration 17), behind views: BI tools read `followups`
/// and `slots` with the documented columns and types, the rows the
/// projector wrote, and a rebuild gives them again.
#[test]
fn postgres_shows_keyed_followups_and_slots_with_their_documented_columns() {
    use keqing_projection::rows::{FOLLOWUPS, SLOTS};
    let url = keqing_tests::postgres_database();
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&url).unwrap());
    let columns = psql_ok(
        &url,
        &["-tA"],
        "SELECT table_name, column_name, data_type FROM information_schema.columns
         WHERE table_name IN ('followups', 'slots') ORDER BY table_name, ordinal_position",
    );
    let integers = ["n", "day", "due_counted", "on_time"];
    let documented: String = [&FOLLOWUPS, &SLOTS]
        .iter()
        .flat_map(|t| {
            t.columns.iter().map(|c| {
                let ty = if integers.contains(c) {
                    "bigint"
                } else {
                    "text"
                };
                format!("{}|{c}|{ty}\n", t.name)
            })
        })
        .collect();
    assert_eq!(columns, documented);
    let (hub, rt, gd) = two_enrolled_devices(&store);
    for n in 0..2 {
        let id = dossier_id("44", n);
        let changes = working_dossier(&id, "44", &gd, n);
        rt.block_on(hub.push("gd".into(), changes.iter().map(|c| env(&id, c)).collect()))
            .unwrap();
    }
    let mut session = store.projections().unwrap();
    keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
    let read = |sql: &str| psql_ok(&url, &["-tA"], sql);
    let followups = read("SELECT dossier_id, id, on_time FROM followups ORDER BY 1, 2");
    assert_eq!(followups.lines().count(), 2, "{followups}");
    for n in 0..2 {
        assert!(followups.contains(&dossier_id("44", n)), "{followups}");
    }
    let slots = read("SELECT count(*), count(DISTINCT dossier_id) FROM slots");
    assert!(
        slots.trim().ends_with("|2") && !slots.starts_with("0|"),
        "{slots}"
    );
    let dump = session.projection_dump().unwrap();
    let keys = read("SELECT dossier_id, key FROM dossier_keys ORDER BY 1");
    assert_eq!(keys.lines().count(), 2, "{keys}");
    keqing_server::projector::rebuild(&mut *session, |_, _| {}).unwrap();
    assert_eq!(session.projection_dump().unwrap(), dump);
    assert_eq!(
        read("SELECT dossier_id, id, on_time FROM followups ORDER BY 1, 2"),
        followups
    );
    // A rebuild takes no new keys from the sequence (which a 4-byte key
    // could run out of, rebuild after rebuild).
    assert_eq!(
        read("SELECT dossier_id, key FROM dossier_keys ORDER BY 1"),
        keys
    );
}

/// A hostile device's dossier whose times no database holds (a call and a
/// visit in 5001 BC: PostgreSQL's `timestamp` starts in 4713 BC) is
/// projected on every backend with the dossier beside it: no store refuses
/// the projector's batch, and the reports count the rest.
#[test]
fn a_dossier_with_times_no_database_holds_does_not_stop_the_projector() {
    use keqing_shared::records::{Call, Visit};
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    for store in each_store_in(tmp.path(), &url) {
        let backend = store.backend();
        let (hub, rt, gd) = two_enrolled_devices(&store);
        let ancient = chrono::NaiveDate::from_ymd_opt(-5000, 3, 1)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        let odd = dossier_id("44", 7);
        // Opened today (a dossier's own opening time is checked when read).
        let (mut d, first) =
            Dossier::create(&odd, "44", t("2026-11-20T09:00"), gd.clone(), 1).unwrap();
        let second = d
            .edit(2, |tx| {
                tx.add(&Call {
                    id: "call-ancient".into(),
                    at: ancient,
                    staff: "李娜".into(),
                    caller_phone: "13800138000".into(),
                    relation: None,
                    source: "电视".into(),
                    disease: None,
                    condition: None,
                    treatment: None,
                    outcome: None,
                })?;
                tx.add(&Visit {
                    id: "visit-ancient".into(),
                    at: ancient + chrono::Duration::days(5),
                    staff: "坐诊专家".into(),
                    purchased: false,
                    reason_not_bought: None,
                    notes: None,
                })
            })
            .unwrap()
            .unwrap();
        let normal = dossier_id("44", 8);
        let mut changes = vec![env(&odd, &first), env(&odd, &second)];
        changes.extend(
            working_dossier(&normal, "44", &gd, 8)
                .iter()
                .map(|c| env(&normal, c)),
        );
        rt.block_on(hub.push("gd".into(), changes)).unwrap();
        let mut session = store.projections().unwrap();
        keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
        let dump = session.projection_dump().unwrap();
        for id in [&odd, &normal] {
            assert!(
                dump.lines()
                    .any(|l| l.starts_with("slots|") && l.contains(id.as_str())),
                "{backend}: {id}'s slots in {dump}"
            );
        }
        let report = keqing_server::reports::build_report(
            &mut *session,
            &keqing_shared::report::Scope::National,
            keqing_shared::when::parse_date("2026-11-01").unwrap(),
            keqing_shared::when::parse_date("2026-11-30").unwrap(),
        )
        .unwrap();
        assert_eq!(report.total.calls, 1, "{backend}");
        if backend == "postgres" {
            // Held as -infinity, shown as null.
            let anchors = psql_ok(
                &url,
                &["-tA"],
                &format!(
                    "SELECT count(*) FROM slots WHERE dossier_id = '{odd}' AND anchor IS NULL"
                ),
            );
            assert_ne!(anchors.trim(), "0", "{backend}");
        }
    }
}

/// A hub over `store` with two enrolled devices of office 44 (tokens `gd`
/// and `gd2`), a runtime to drive it, and the first device's actor.
fn two_enrolled_devices(
    store: &Arc<dyn Store>,
) -> (keqing_server::hub::Hub, tokio::runtime::Runtime, ActorId) {
    add_office_device(&**store, "dev-gd", "44", "gd");
    add_office_device(&**store, "dev-gd2", "44", "gd2");
    let hub = unlimited_hub(store);
    let rt = keqing_tests::runtime();
    let actor = ActorId::random();
    rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
        .unwrap();
    rt.block_on(hub.enroll("gd2".into(), ActorId::random().to_bytes().to_vec()))
        .unwrap();
    (hub, rt, actor)
}

/// A later follow-up of a working dossier.
fn followup(id: &str, k: u32) -> keqing_shared::records::FollowUp {
    keqing_shared::records::FollowUp {
        id: format!("followup-{id}-{k}"),
        at: t(&format!("2026-11-{:02}T10:00", 26 + k)),
        staff: "回访1".into(),
        kind: "回访".into(),
        outcome: "血压平稳".into(),
        next_entry: None,
    }
}

/// Log compaction: once the changes before the horizon are left to their
/// dossiers' snapshots (each dossier's latest stays), a device whose cursor
/// is below the floor
/// starts over from the snapshots and ends up holding everything; a device
/// at the floor follows the log as before; a compacted change pushed again
/// is known; the projection rebuilt from the compacted log is the same;
/// a vacuum gives the freed space back and changes nothing a reader sees.
#[test]
fn a_compacted_log_still_brings_every_device_everything() {
    use keqing_server::store::Budget;
    use keqing_shared::dossier::Dossier;
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    for store in each_store_in(tmp.path(), &url) {
        let backend = store.backend();
        let (hub, rt, actor) = two_enrolled_devices(&store);
        let push = |id: &str, changes: &[keqing_shared::dossier::NewChange]| {
            rt.block_on(hub.push("gd".into(), changes.iter().map(|c| env(id, c)).collect()))
                .unwrap()
        };
        let project = || {
            keqing_server::projector::catch_up(&mut *store.projections().unwrap(), |_, _| {})
                .unwrap()
        };
        let mut first_changes = Vec::new();
        for n in 0..6 {
            let id = dossier_id("44", n);
            let changes = working_dossier(&id, "44", &actor, n);
            push(&id, &changes);
            first_changes.push((id, changes));
        }
        project();
        // The second device follows the log to here.
        let epoch = store.epoch().unwrap();
        let mut held = std::collections::BTreeMap::new();
        let (pulled, behind) = pull_all(&rt, (&hub, &epoch), "gd2", 0);
        merge_pulled(&mut held, pulled);
        // More work: new dossiers, and an edit to an old one.
        for n in 6..9 {
            let id = dossier_id("44", n);
            push(&id, &working_dossier(&id, "44", &actor, n));
        }
        let (id0, _) = &first_changes[0];
        let stored = store.reader().unwrap().document(id0).unwrap().unwrap();
        let mut d0 = Dossier::load(&stored.snapshot, actor.clone()).unwrap();
        let edit = d0.edit(3, |tx| tx.add(&followup(id0, 1))).unwrap().unwrap();
        assert_eq!(push(id0, std::slice::from_ref(&edit)).accepted, 1);
        project();
        let dump = store.projections().unwrap().projection_dump().unwrap();
        let before = store.counts().unwrap();
        // Everything up to now.
        let done =
            keqing_server::compaction::compact(&*store, keqing_host::now_cst(), 0, &mut |_, _| {})
                .unwrap();
        let end = store.reader().unwrap().max_seq().unwrap();
        assert_eq!(done.floor, end, "{backend}");
        assert!(done.changes > 0 && done.bytes > 0, "{backend}: {done:?}");
        assert_eq!(
            store.reader().unwrap().log_floor().unwrap(),
            end,
            "{backend}"
        );
        // Each dossier keeps its latest change (every one was complete).
        let mut budget = Budget::new(usize::MAX, 10_000);
        let (rows, _) = store
            .reader()
            .unwrap()
            .changes_after_within(None, 0, &mut budget)
            .unwrap();
        assert_eq!(rows.len(), 9, "{backend}");
        assert_eq!(done.changes, before.changes - 9, "{backend}");
        assert_eq!(
            rows.last().unwrap().seq,
            end,
            "{backend}: the log's end stays"
        );
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
        // Again: nothing more to do.
        let again =
            keqing_server::compaction::compact(&*store, keqing_host::now_cst(), 0, &mut |_, _| {})
                .unwrap();
        assert_eq!((again.changes, again.floor), (0, end), "{backend}");
        // The space the compaction freed goes back to the file system;
        // nothing a reader sees changes.
        let vacuumed = keqing_server::compaction::vacuum(&*store).unwrap();
        assert_eq!(
            vacuumed.bytes_after,
            store.size_bytes().unwrap(),
            "{backend}"
        );
        if backend == "sqlite" {
            // Its file and WAL: the freed pages and the WAL go.
            assert!(
                vacuumed.bytes_after < vacuumed.bytes_before,
                "{backend}: {vacuumed:?}"
            );
        }
        // (PostgreSQL's database can grow by a few pages here: tables this
        // small hold no free page to give back, and each table rewritten
        // gets new files and maps. The national benchmark measures what it
        // gives back at scale.)
        if backend == "postgres" {
            // The rewritten tables' pages are marked all-visible, so the
            // reports' index-only scans need not read them.
            let maps = psql_ok(
                &url,
                &["-tA"],
                "SELECT relname, relpages, relallvisible FROM pg_class
                 WHERE relname IN ('calls', 'followup_rows', 'slot_rows', 'patients', 'dossier_keys')
                 ORDER BY relname",
            );
            for line in maps.lines() {
                let [_, pages, visible] = line.split('|').collect::<Vec<_>>()[..] else {
                    panic!("{maps}")
                };
                assert!(pages != "0" && visible == pages, "{maps}");
            }
        }
        assert_eq!(
            store.projections().unwrap().projection_dump().unwrap(),
            dump,
            "{backend}"
        );
        assert_eq!(store.counts().unwrap().changes, 9, "{backend}");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
        // The device behind the floor starts over from the snapshots and
        // holds every document as the server does.
        assert!(behind > 0 && behind < end, "{backend}");
        let (pulled, cursor) = pull_all(&rt, (&hub, &epoch), "gd2", behind);
        assert_eq!(pulled.0.len(), 9, "{backend}: one snapshot per dossier");
        assert_eq!(cursor, end, "{backend}");
        merge_pulled(&mut held, pulled);
        assert_eq!(held.len(), 9, "{backend}");
        for (id, doc) in held.iter_mut() {
            let server = store.reader().unwrap().document(id).unwrap().unwrap();
            let server = automerge::Automerge::load(&server.snapshot).unwrap();
            assert_eq!(doc.get_heads(), server.get_heads(), "{backend}: {id}");
        }
        // A device at the floor follows the log: nothing more.
        let ((snapshots, changes), _) = pull_all(&rt, (&hub, &epoch), "gd2", end);
        assert!(snapshots.is_empty() && changes.is_empty(), "{backend}");
        // A compacted change pushed again is known.
        let (id1, changes1) = &first_changes[1];
        assert_eq!(push(id1, changes1).accepted, 0, "{backend}");
        // A new edit after compaction is followed as before.
        let edit = d0.edit(4, |tx| tx.add(&followup(id0, 2))).unwrap().unwrap();
        assert_eq!(push(id0, std::slice::from_ref(&edit)).accepted, 1);
        let ((snapshots, changes), _) = pull_all(&rt, (&hub, &epoch), "gd2", end);
        assert_eq!((snapshots.len(), changes.len()), (0, 1), "{backend}");
        // The projection derived again from the compacted log is the one
        // kept before compaction (with the last edit).
        project();
        let kept = store.projections().unwrap().projection_dump().unwrap();
        keqing_server::projector::rebuild(&mut *store.projections().unwrap(), |_, _| {}).unwrap();
        assert_eq!(
            store.projections().unwrap().projection_dump().unwrap(),
            kept,
            "{backend}"
        );
        assert_ne!(kept, dump, "{backend}: the last edit is projected");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
    }
}

/// The horizon: compaction takes only what was logged before its latest
/// note of the log's end at least `keep_days` old, so a store compacted
/// hourly keeps that many days of log whole; a document whose snapshot
/// lacks logged changes keeps them in the log.
#[test]
fn compaction_keeps_the_days_it_is_told_to_and_incomplete_documents_whole() {
    let tmp = tempfile::tempdir().unwrap();
    for store in each_store(tmp.path()) {
        let backend = store.backend();
        let append = |doc: &str, k: u8, complete: bool| {
            let mut hash = [0u8; 32];
            hash[..doc.len().min(30)].copy_from_slice(&doc.as_bytes()[..doc.len().min(30)]);
            hash[31] = k;
            append_raw(
                &*store,
                doc,
                &[(hash, vec![k; 100])],
                (vec![1; 10], complete),
            );
        };
        let compact = |at: &str| {
            keqing_server::compaction::compact(&*store, t(at), 30, &mut |_, _| {}).unwrap()
        };
        append("doc-a", 1, true);
        append("doc-b", 1, false);
        // The first note: nothing is 30 days old yet.
        assert_eq!(compact("2026-10-01T00:00").changes, 0, "{backend}");
        append("doc-a", 2, true);
        append("doc-a", 3, true);
        assert_eq!(compact("2026-10-20T00:00").changes, 0, "{backend}");
        // 31 days after the first note: what was logged before it (doc-a's
        // first change; doc-b's snapshot lacks its change, which stays).
        let c = compact("2026-11-01T00:00");
        assert_eq!((c.floor, c.changes, c.bytes), (2, 1, 100), "{backend}");
        // 31 days after the second: the rest of doc-a but its latest.
        let c = compact("2026-11-20T00:00");
        assert_eq!((c.floor, c.changes), (4, 1), "{backend}");
        assert_eq!(
            (seqs_of(&*store, "doc-a"), seqs_of(&*store, "doc-b")),
            (vec![4], vec![2]),
            "{backend}"
        );
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
        // An erasure of the dossier holding the log's last change: the
        // numbers go on after it all the same (a device's cursor may be
        // there already).
        let mut writer = store.log_writer().unwrap();
        writer.erase_document("doc-a", None).unwrap();
        writer.commit().unwrap();
        assert_eq!(store.reader().unwrap().max_seq().unwrap(), 4, "{backend}");
        append("doc-c", 1, true);
        assert_eq!(seqs_of(&*store, "doc-c"), vec![5], "{backend}");
        assert_eq!(store.integrity_check().unwrap(), "ok", "{backend}");
    }
}

fn seqs_of(store: &dyn Store, doc: &str) -> Vec<u64> {
    store
        .reader()
        .unwrap()
        .changes_of(doc, u64::MAX)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect()
}

/// Appends changes (hash, bytes) of one document of office 44 and its
/// state (snapshot, complete) in one writer turn, as the sync core would.
fn append_raw(
    store: &dyn Store,
    doc: &str,
    changes: &[([u8; 32], Vec<u8>)],
    state: (Vec<u8>, bool),
) {
    use keqing_server::store::{DocumentState, NewLogEntry};
    let entries: Vec<NewLogEntry> = changes
        .iter()
        .map(|(hash, bytes)| NewLogEntry {
            hash: *hash,
            doc_id: doc.into(),
            office: "44".into(),
            bytes: bytes.clone(),
        })
        .collect();
    let mut writer = store.log_writer().unwrap();
    writer
        .append(
            "contract",
            &entries,
            &[DocumentState {
                doc_id: doc.into(),
                office: "44".into(),
                snapshot: state.0,
                complete: state.1,
                merged_into: None,
            }],
        )
        .unwrap();
    writer.commit().unwrap();
}

/// Snapshots are stored deflated, beside their unpacked size, and come
/// back as they were: through a document read, a pull's budget and the
/// snapshots it sends; and a snapshot stored as it was (by a release
/// before packing) reads as it is.
#[test]
fn snapshots_are_stored_deflated_and_read_back_as_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    let stores = each_store_in(tmp.path(), &url);
    // The stored rows as the database has them: (id, stored length, size,
    // first byte), and a statement run on the database.
    let sqlite_file = tmp.path().join(keqing_server::store::DB_FILE);
    let stored = |backend: &str| -> Vec<(String, i64, Option<i64>, i64)> {
        match backend {
            "sqlite" => rusqlite::Connection::open(&sqlite_file)
                .unwrap()
                .prepare(
                    "SELECT id, length(snapshot), size, unicode(CAST(substr(snapshot, 1, 1) AS TEXT))
                     FROM documents ORDER BY id",
                )
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap(),
            _ => {
                psql_ok(
                    &url,
                    &["-tAF,"],
                    "SELECT id, length(snapshot), coalesce(size::text, ''), get_byte(snapshot, 0)
                     FROM documents ORDER BY id",
                )
                .lines()
                    .map(|l| {
                        let f: Vec<&str> = l.split(',').collect();
                        (
                            f[0].to_string(),
                            f[1].parse().unwrap(),
                            f[2].parse().ok(),
                            f[3].parse().unwrap(),
                        )
                    })
                    .collect()
            }
        }
    };
    for store in stores {
        let backend = store.backend();
        let (hub, rt, actor) = two_enrolled_devices(&store);
        let push = |id: &str, changes: &[keqing_shared::dossier::NewChange]| {
            let pushed = rt
                .block_on(hub.push("gd".into(), changes.iter().map(|c| env(id, c)).collect()))
                .unwrap();
            assert_eq!(pushed.accepted as usize, changes.len(), "{backend}");
        };
        let project = || {
            keqing_server::projector::catch_up(&mut *store.projections().unwrap(), |_, _| {})
                .unwrap()
        };
        let ids: Vec<String> = (0..5).map(|n| dossier_id("44", n)).collect();
        for (n, id) in ids.iter().enumerate() {
            push(id, &working_dossier(id, "44", &actor, n as u32));
        }
        project();
        // A few follow-ups more, as a dossier gathers them.
        for id in &ids {
            let stored = store.reader().unwrap().document(id).unwrap().unwrap();
            let mut d = Dossier::load(&stored.snapshot, actor.clone()).unwrap();
            let more: Vec<_> = (0..4)
                .filter_map(|k: u32| {
                    d.edit(3 + i64::from(k), |tx| tx.add(&followup(id, k)))
                        .unwrap()
                })
                .collect();
            push(id, &more);
        }
        project();
        let rows = stored(backend);
        assert_eq!(rows.len(), ids.len(), "{backend}");
        let reader = store.reader().unwrap();
        for (id, length, size, first) in &rows {
            let doc = reader.document(id).unwrap().unwrap();
            assert!(
                automerge::Automerge::load(&doc.snapshot).is_ok(),
                "{backend}"
            );
            assert_eq!(*size, Some(doc.snapshot.len() as i64), "{backend}: {id}");
            assert_eq!(
                *first, 2,
                "{backend}: {id} is stored packed (from the dictionary)"
            );
            assert!(
                *length < doc.snapshot.len() as i64 * 3 / 4,
                "{backend}: {id} stored in {length} bytes of {}",
                doc.snapshot.len()
            );
            assert_eq!(reader.snapshot_of(id).unwrap(), doc.snapshot, "{backend}");
        }
        let page = reader.document_page(Some("44"), "", 100).unwrap();
        let sizes: Vec<usize> = rows.iter().map(|r| r.2.unwrap() as usize).collect();
        assert_eq!(
            page.iter().map(|p| p.2).collect::<Vec<_>>(),
            sizes,
            "{backend}: the budget reads the unpacked sizes"
        );
        drop(reader);
        // A new device's first sync gets the documents as the server has them.
        let epoch = store.epoch().unwrap();
        let (pulled, _) = pull_all(&rt, (&hub, &epoch), "gd2", 0);
        let mut held = std::collections::BTreeMap::new();
        merge_pulled(&mut held, pulled);
        for id in &ids {
            let server = store.reader().unwrap().document(id).unwrap().unwrap();
            let server = automerge::Automerge::load(&server.snapshot).unwrap();
            assert_eq!(held[id].get_heads(), server.get_heads(), "{backend}: {id}");
        }
        // Rows as an older release stored them: the automerge bytes, no size.
        let store_raw = |id: &str| -> Vec<u8> {
            let raw = store
                .reader()
                .unwrap()
                .document(id)
                .unwrap()
                .unwrap()
                .snapshot;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            match backend {
                "sqlite" => {
                    rusqlite::Connection::open(&sqlite_file)
                        .unwrap()
                        .execute(
                            "UPDATE documents SET snapshot = ?2, size = length(?2) WHERE id = ?1",
                            rusqlite::params![id, raw],
                        )
                        .unwrap();
                }
                _ => {
                    psql_ok(
                        &url,
                        &["-q"],
                        &format!(
                            "UPDATE documents SET snapshot = '\\x{hex}', size = NULL WHERE id = '{id}'"
                        ),
                    );
                }
            }
            raw
        };
        let raw = store_raw(&ids[0]);
        let reader = store.reader().unwrap();
        assert_eq!(
            reader.document(&ids[0]).unwrap().unwrap().snapshot,
            raw,
            "{backend}"
        );
        let page = reader.document_page(Some("44"), "", 1).unwrap();
        assert_eq!(page[0].2, raw.len(), "{backend}");
        drop(reader);
        // Repacking (the `compact` command's last part), two documents a
        // step: it packs exactly the raw rows, and they read back the same.
        let last_raw = store_raw(&ids[4]);
        let mut steps = Vec::new();
        let repacked =
            keqing_server::compaction::repack(&*store, 2, &mut |at, of| steps.push((at, of)))
                .unwrap();
        assert_eq!(steps, [(2, 5), (4, 5), (5, 5)], "{backend}");
        assert_eq!(repacked.documents, 2, "{backend}");
        assert_eq!(
            repacked.bytes_before,
            (raw.len() + last_raw.len()) as u64,
            "{backend}"
        );
        let after = stored(backend);
        let reader = store.reader().unwrap();
        for (id, length, size, first) in &after {
            let doc = reader.document(id).unwrap().unwrap().snapshot;
            assert_eq!(*first, 2, "{backend}: {id} is packed again");
            assert_eq!(*size, Some(doc.len() as i64), "{backend}: {id}");
            let was = rows.iter().find(|r| &r.0 == id).unwrap();
            assert_eq!(*length, was.1, "{backend}: {id} packed as a write packs it");
        }
        assert_eq!(reader.document(&ids[0]).unwrap().unwrap().snapshot, raw);
        assert_eq!(
            reader.document(&ids[4]).unwrap().unwrap().snapshot,
            last_raw
        );
        let length_of = |id: &str| after.iter().find(|r| r.0 == id).unwrap().1 as u64;
        assert_eq!(
            repacked.bytes_after,
            length_of(&ids[0]) + length_of(&ids[4]),
            "{backend}"
        );
        drop(reader);
        let again = keqing_server::compaction::repack(&*store, 2, &mut |_, _| {}).unwrap();
        assert_eq!(again.documents, 0, "{backend}: nothing left to repack");
    }
}
