//! Several keqing-server processes over one PostgreSQL store: devices list
//! every process's address and fail over; one process dies by SIGKILL
//! while devices push through it. And a process told to stop does not
//! wait for its projector to work off a backlog.

use chrono::NaiveDate;
use keqing_office::desk::{CallInput, Desk, FollowUpInput};
use keqing_office::sync::{Progress, enroll, sync_once, sync_once_with};
use keqing_server::store::{PgStore, Store};
use keqing_shared::staff::Role;
use keqing_tests::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts pushes acknowledged while a round is under way, for all devices.
struct Pushing(Arc<AtomicU64>);

impl Progress for Pushing {
    fn pushing(&mut self, done: u64, total: u64) {
        if done > 0 && done < total {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn pulling(&mut self, _: u64) {}
}

/// Records `calls` new patients with a follow-up each on `desk`; their
/// record ids.
fn office_work(desk: &mut Desk, office: &str, calls: u32) -> BTreeSet<String> {
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let staff = format!("员工{office}");
    desk.add_staff(&staff, Role::Consultant).unwrap();
    let mut made = BTreeSet::new();
    for n in 0..calls {
        let at = day.and_hms_opt(8 + n % 10, n % 60, 0).unwrap();
        let call = desk
            .register_call(&CallInput {
                phone: format!("139{office}{n:06}"),
                name: format!("患者{n}"),
                source: "电视".into(),
                staff: staff.clone(),
                at,
                force_new: true,
                ..Default::default()
            })
            .unwrap();
        let (_, followup) = desk
            .record_followup(
                &call.dossier_id,
                &FollowUpInput {
                    staff: staff.clone(),
                    at: at + chrono::Duration::hours(3),
                    kind: "电话回访".into(),
                    outcome: "服药正常".into(),
                    next_entry: None,
                },
            )
            .unwrap();
        made.insert(call.call_id);
        made.insert(followup.id);
    }
    made
}

/// Two server processes over one store; every device enrolled with both
/// addresses, the first one first. The first process is killed (SIGKILL)
/// while devices are pushing through it: their syncs go on with the
/// second in the same round, no change a device saw acknowledged is
/// missing, nothing is stored twice, and the second process takes over
/// the projector without being asked for a report.
#[test]
fn devices_fail_over_when_a_server_process_is_killed_mid_push() {
    const OFFICES: [&str; 6] = ["11", "31", "44", "51", "61", "63"];
    const CALLS: u32 = 80;
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    let first = Server::start_on(tmp.path().join("first"), "127.0.0.1:0", Some(&url));
    let second = Server::start_on(tmp.path().join("second"), "127.0.0.1:0", Some(&url));
    let servers = vec![first.url(), second.url()];
    let rt = keqing_tests::runtime();
    let mut made = BTreeSet::new();
    let mut changes_made = 0;
    let mut desks: Vec<Desk> = OFFICES
        .iter()
        .map(|office| {
            let token = first.add_device(Some(office), &format!("前台{office}"));
            let mut desk = rt
                .block_on(enroll(
                    &tmp.path().join(office),
                    &servers,
                    &token,
                    None,
                    &Default::default(),
                ))
                .unwrap();
            desk.replica().set_bulk_load(true).unwrap();
            made.extend(office_work(&mut desk, office, CALLS));
            changes_made += desk.replica().outbox_len().unwrap();
            desk
        })
        .collect();

    // Every device pushes in small batches, so its round takes a while;
    // the first process dies once several devices are half-way.
    let acked_mid_round = Arc::new(AtomicU64::new(0));
    let outcomes = std::thread::scope(|scope| {
        let syncing: Vec<_> = desks
            .iter_mut()
            .map(|desk| {
                let counter = acked_mid_round.clone();
                let rt = &rt;
                scope.spawn(move || {
                    rt.block_on(sync_once_with(desk.replica_mut(), &mut Pushing(counter), 4))
                })
            })
            .collect();
        let since = Instant::now();
        while acked_mid_round.load(Ordering::SeqCst) < 3 * OFFICES.len() as u64 {
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "devices never got going"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        first.kill();
        syncing
            .into_iter()
            .map(|s| s.join().unwrap())
            .collect::<Vec<_>>()
    });
    // Every round ended well, and those the kill cut off went on with the
    // second process: the kill hit pushes in flight.
    let mut failed_over = 0;
    for outcome in &outcomes {
        let summary = outcome.as_ref().expect("a sync that failed over");
        if summary.server == servers[1] {
            failed_over += 1;
        }
    }
    println!(
        "server processes: {failed_over} of {} rounds cut by the kill went on with the other process",
        OFFICES.len()
    );
    assert!(
        failed_over > 0,
        "no round was cut off by the kill: {outcomes:?}"
    );
    for desk in &desks {
        assert_eq!(
            desk.replica().outbox_len().unwrap(),
            0,
            "every change acknowledged"
        );
        let state = desk.replica().sync_state().unwrap().unwrap();
        if state.server == servers[1] {
            assert_eq!(state.servers, vec![servers[1].clone(), servers[0].clone()]);
        }
    }

    // Nothing lost, nothing doubled: the log holds each change once, and
    // a new headquarters device (through the survivor) holds every record
    // once, with the offices' heads.
    let store = PgStore::open_existing(&url).unwrap();
    // The roster's change per office (staff add) is in the outbox count.
    assert_eq!(store.counts().unwrap().changes, changes_made);
    let hq_token = second.add_device(None, "数据中心");
    let mut hq = rt
        .block_on(enroll(
            &tmp.path().join("hq"),
            &servers,
            &hq_token,
            None,
            &Default::default(),
        ))
        .unwrap();
    let summary = rt.block_on(sync_once(hq.replica_mut(), &mut keqing_office::sync::Quiet));
    assert_eq!(
        summary.unwrap().server,
        servers[1],
        "the dead one is passed over"
    );
    let hq_heads: BTreeMap<_, _> = hq.replica().document_heads().unwrap().into_iter().collect();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for desk in &desks {
        for (id, heads) in desk.replica().document_heads().unwrap() {
            assert_eq!(
                hq_heads.get(&id),
                Some(&heads),
                "headquarters differs on {id}"
            );
            if id.starts_with("roster-") {
                continue;
            }
            let (view, _) = hq.dossier(&id).unwrap();
            for id in view
                .calls
                .iter()
                .map(|c| &c.id)
                .chain(view.followups.iter().map(|f| &f.id))
            {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), made);
    assert!(seen.values().all(|n| *n == 1), "a record is there twice");

    // The survivor's projector catches up on its own (the first process
    // may have led it when it died).
    let since = Instant::now();
    loop {
        let projections = store.projections().unwrap();
        let (cursor, end) = (
            projections.projector_cursor().unwrap(),
            projections.max_seq().unwrap(),
        );
        drop(projections);
        if cursor == end {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the projector stopped at {cursor} of {end} after the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And its national report counts every call once.
    let report = second.run_admin(&[
        "report",
        "national",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-21",
        "--json",
    ]);
    assert!(report.ok, "{}", report.stderr);
    assert_eq!(
        report.json()["total"]["calls"].as_u64(),
        Some(u64::from(CALLS) * OFFICES.len() as u64)
    );
}

/// `keqing servers` keeps the replica's list of addresses: an address is
/// added after the others without starting the feed over; a bad address,
/// an unknown one, or removing the last is refused and changes nothing.
#[test]
fn a_replica_keeps_a_list_of_server_addresses() {
    use keqing_tests::Office;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let office = Office::new(tmp.path().join("gd"));
    office.ok(&["init", "--office", "44", "--device", "前台"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    office.call("13800138000", "患者", "李娜", "2026-11-20T09:00");
    office.enroll_on(&server, Some("44"), "前台");
    office.ok(&["sync"]);
    let cursor = office.ok(&["status", "--json"]).json()["sync"]["cursor"].clone();
    assert!(cursor.as_u64().unwrap() > 0);
    let list = || office.ok(&["servers", "list", "--json"]).json();
    assert_eq!(list(), serde_json::json!([server.url()]));

    office.ok(&["servers", "add", "http://127.0.0.1:1"]);
    assert_eq!(
        list(),
        serde_json::json!([server.url(), "http://127.0.0.1:1"])
    );
    assert_eq!(
        office.ok(&["status", "--json"]).json()["sync"]["cursor"],
        cursor,
        "another process of the same store: the cursor stays"
    );
    for (args, why) in [
        (vec!["servers", "add", "ftp://10.0.0.3"], "无效"),
        (vec!["servers", "add", "http://a b"], "无效"),
        (vec!["servers", "remove", "http://10.0.0.9:7600"], "not in"),
    ] {
        let r = office.run(&args);
        assert!(!r.ok, "{args:?} was taken");
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }
    office.ok(&["servers", "remove", &server.url()]);
    assert_eq!(list(), serde_json::json!(["http://127.0.0.1:1"]));
    let last = office.run(&["servers", "remove", "http://127.0.0.1:1"]);
    assert!(!last.ok && last.stderr.contains("last"), "{}", last.stderr);
    assert_eq!(list(), serde_json::json!(["http://127.0.0.1:1"]));
    // The first address does not answer (nothing listens there): the
    // round goes on with the next, tried first from then on.
    office.ok(&["servers", "add", &server.url()]);
    let r = office.ok(&["sync", "--json"]);
    assert_eq!(r.json()["server"], serde_json::json!(server.url()));
    assert_eq!(
        list(),
        serde_json::json!([server.url(), "http://127.0.0.1:1"]),
        "the one that answered is tried first"
    );
}

/// A stopping server does not wait for its projector to work off a long
/// backlog (a service manager's stop would time out and kill it): SIGTERM
/// ends the process cleanly with the log's tail still unprojected, and
/// the next catch-up goes on from where it stopped.
#[test]
fn a_stopping_server_breaks_off_a_long_projector_catch_up() {
    use crate::store_contract::{add_office_device, dossier_id, env, working_dossier};
    use keqing_proto::SyncHandler;
    use keqing_server::store::SqliteStore;
    const DOSSIERS: u32 = 1100;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // The backlog, pushed through the sync core with no projector running.
    let logged = {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir).unwrap());
        add_office_device(&*store, "dev-gd", "44", "gd");
        let hub = keqing_server::hub::Hub::new(store.clone(), Arc::new(tokio::sync::Notify::new()))
            .unwrap()
            .with_rate_limit(u32::MAX, u32::MAX);
        let rt = keqing_tests::runtime();
        let actor = automerge::ActorId::random();
        rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
            .unwrap();
        for first in (0..DOSSIERS).step_by(50) {
            let batch = (first..first + 50)
                .flat_map(|n| {
                    let id = dossier_id("44", n);
                    working_dossier(&id, "44", &actor, n)
                        .iter()
                        .map(|c| env(&id, c))
                        .collect::<Vec<_>>()
                })
                .collect();
            rt.block_on(hub.push("gd".into(), batch)).unwrap();
        }
        let session = store.projections().unwrap();
        assert_eq!(session.projector_cursor().unwrap(), 0);
        session.max_seq().unwrap()
    };
    assert_eq!(logged, u64::from(DOSSIERS) * 2);

    // Once its projector says it is catching up the backlog, stop it.
    let log = tmp.path().join("server.log");
    let server = keqing_tests::Server::start_logged(&dir, "127.0.0.1:0", &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("projector: catching up a backlog")
    {
        assert!(Instant::now() < deadline, "the projector never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = server.terminate();
    assert!(status.success(), "keqing-server exited with {status}");
    let store = SqliteStore::open(&dir).unwrap();
    let mut session = store.projections().unwrap();
    let cursor = session.projector_cursor().unwrap();
    assert!(
        cursor < logged,
        "the server projected the whole backlog ({logged} changes) before it stopped"
    );
    // Nothing is lost by breaking off: the next catch-up finishes the log.
    let done = keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
    assert_eq!(done.cursor, logged);
    assert_eq!(
        session
            .report_rows(
                Some("44"),
                NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
                NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
            )
            .unwrap()
            .calls
            .len(),
        DOSSIERS as usize
    );
}
