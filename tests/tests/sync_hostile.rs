//! Hostile and wrong input to a real server: the right status code,
//! nothing stored, and the server keeps serving.

use automerge::ActorId;
use keqing_proto::SyncConnection;
use keqing_shared::dossier::{Dossier, NewChange};
use keqing_shared::sync::{ChangeEnvelope, DocHeads, SyncErrorKind};
use keqing_tests::Server;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn t(s: &str) -> chrono::NaiveDateTime {
    keqing_shared::when::parse_datetime(s).unwrap()
}

fn new_dossier(id: &str, office: &str, actor: &ActorId) -> (Dossier, NewChange) {
    Dossier::create(id, office, t("2026-11-20T09:00"), actor.clone(), 1).unwrap()
}

fn env(id: &str, c: &NewChange) -> ChangeEnvelope {
    ChangeEnvelope {
        doc_id: id.into(),
        bytes: c.bytes.clone(),
    }
}

/// A server store in `dir` with one device of office 44, token `gd`.
fn store_with_office_device(
    dir: &std::path::Path,
) -> std::sync::Arc<dyn keqing_server::store::Store> {
    let store: std::sync::Arc<dyn keqing_server::store::Store> =
        std::sync::Arc::new(keqing_server::store::SqliteStore::open(dir).unwrap());
    store
        .add_device(
            "dev-gd",
            "广东1",
            Some("44"),
            &keqing_server::hub::token_hash("gd"),
            "2026-11-20T00:00:00",
            "test",
        )
        .unwrap();
    store
}

/// The sync core over `store`, in this process, without a rate limit.
fn in_process_hub(
    store: std::sync::Arc<dyn keqing_server::store::Store>,
) -> keqing_server::hub::Hub {
    keqing_server::hub::Hub::new(store, std::sync::Arc::new(tokio::sync::Notify::new()))
        .unwrap()
        .with_rate_limit(u32::MAX, u32::MAX)
}

/// The length of the server's log, as the feed's final cursor tells an HQ
/// device (sequence numbers have no gaps: a refused push consumes none).
async fn log_size(url: &str, hq_token: &str) -> u64 {
    let mut hq = SyncConnection::connect(url, hq_token, Duration::from_secs(5))
        .await
        .unwrap();
    let mut pull = hq.pull(0, "", 1000).await.unwrap();
    let mut cursor = 0;
    while let Some(b) = pull.next().await {
        let b = b.unwrap();
        cursor = b.cursor;
        if b.done {
            break;
        }
    }
    cursor
}

#[test]
fn wrong_office_forged_actor_malformed_and_oversized_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let url = server.url();
    let gd1 = server.add_device(Some("44"), "广东1");
    let gd2 = server.add_device(Some("44"), "广东2");
    let bj = server.add_device(Some("11"), "北京1");
    let hq = server.add_device(None, "数据中心");
    rt().block_on(async {
        let connect = |tok: String| {
            let url = url.clone();
            async move {
                SyncConnection::connect(&url, &tok, Duration::from_secs(5))
                    .await
                    .unwrap()
            }
        };
        let (actor_gd1, actor_gd2, actor_bj) =
            (ActorId::random(), ActorId::random(), ActorId::random());
        let mut c_gd1 = connect(gd1.clone()).await;
        let mut c_gd2 = connect(gd2).await;
        let mut c_bj = connect(bj).await;
        let mut c_hq = connect(hq.clone()).await;
        // Before enrolment a device may not push.
        let early = c_gd1.push(vec![]).await.unwrap_err();
        assert_eq!(early.kind, SyncErrorKind::FailedPrecondition);
        assert_eq!(
            c_gd1
                .enroll(actor_gd1.to_bytes().to_vec())
                .await
                .unwrap()
                .office
                .as_deref(),
            Some("44")
        );
        c_gd2.enroll(actor_gd2.to_bytes().to_vec()).await.unwrap();
        c_bj.enroll(actor_bj.to_bytes().to_vec()).await.unwrap();
        c_hq.enroll(ActorId::random().to_bytes().to_vec())
            .await
            .unwrap();
        // One token, one replica.
        let rebind = c_gd1
            .enroll(ActorId::random().to_bytes().to_vec())
            .await
            .unwrap_err();
        assert_eq!(rebind.kind, SyncErrorKind::FailedPrecondition);

        let id = "01a21111-0000-7000-8000-000000000001";
        let (mut doc, created) = new_dossier(id, "44", &actor_gd1);
        let ack = c_gd1.push(vec![env(id, &created)]).await.unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (1, 0));
        // Pushing the same change again is harmless.
        let again = c_gd1
            .push(vec![env(id, &created), env(id, &created)])
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 2));
        let stored = log_size(&url, &hq).await;
        assert_eq!(stored, 1);

        // Another office writing to this dossier: PERMISSION_DENIED.
        let mut theirs = Dossier::load(&doc.save(), actor_bj.clone()).unwrap();
        let edit = theirs
            .edit(2, |tx| tx.add_phone("13900000000"))
            .unwrap()
            .unwrap();
        let denied = c_bj.push(vec![env(id, &edit)]).await.unwrap_err();
        assert_eq!(denied.kind, SyncErrorKind::PermissionDenied, "{denied:?}");
        // ... or creating a dossier for another office.
        let (_, foreign) = new_dossier("01a21111-0000-7000-8000-000000000002", "44", &actor_bj);
        let denied = c_bj
            .push(vec![env("01a21111-0000-7000-8000-000000000002", &foreign)])
            .await
            .unwrap_err();
        assert_eq!(denied.kind, SyncErrorKind::PermissionDenied);
        // ... or asking for it.
        let asked = c_bj
            .repair(vec![DocHeads {
                doc_id: id.into(),
                heads: vec![],
            }])
            .await
            .unwrap_err();
        assert_eq!(asked.kind, SyncErrorKind::PermissionDenied);
        // Its feed holds nothing of office 44.
        let mut pull = c_bj.pull(0, "", 100).await.unwrap();
        while let Some(b) = pull.next().await {
            let b = b.unwrap();
            assert!(
                b.snapshots.is_empty() && b.changes.is_empty(),
                "office 11 sees nothing of 44"
            );
            if b.done {
                break;
            }
        }

        // A change signed with another device's actor: PERMISSION_DENIED.
        let forged = doc
            .edit(3, |tx| tx.add_phone("13900000001"))
            .unwrap()
            .unwrap();
        let denied = c_gd2.push(vec![env(id, &forged)]).await.unwrap_err();
        assert_eq!(denied.kind, SyncErrorKind::PermissionDenied);

        // Malformed bytes, a bad id, a document whose id lies: INVALID_ARGUMENT.
        for (doc_id, bytes) in [
            (id.to_string(), b"not an automerge change".to_vec()),
            (id.to_string(), {
                let mut b = forged.bytes.clone();
                let n = b.len();
                b[n - 3] ^= 0xff;
                b
            }),
            ("../etc/passwd".to_string(), forged.bytes.clone()),
        ] {
            let e = c_gd1
                .push(vec![ChangeEnvelope { doc_id, bytes }])
                .await
                .unwrap_err();
            assert_eq!(e.kind, SyncErrorKind::InvalidArgument, "{e:?}");
        }
        let (_, liar) = new_dossier("01a21111-0000-7000-8000-00000000000a", "44", &actor_gd1);
        let e = c_gd1
            .push(vec![env("01a21111-0000-7000-8000-00000000000b", &liar)])
            .await
            .unwrap_err();
        assert_eq!(e.kind, SyncErrorKind::InvalidArgument);

        // A valid change and a bad one in one push: nothing of it is stored.
        let mut mine = Dossier::load(&doc.save(), actor_gd1.clone()).unwrap();
        let valid = mine
            .edit(5, |tx| tx.add_phone("13900000003"))
            .unwrap()
            .unwrap();
        let e = c_gd1
            .push(vec![
                env(id, &valid),
                ChangeEnvelope {
                    doc_id: id.into(),
                    bytes: vec![1, 2, 3],
                },
            ])
            .await
            .unwrap_err();
        assert_eq!(e.kind, SyncErrorKind::InvalidArgument);
        assert_eq!(
            log_size(&url, &hq).await,
            1,
            "nothing of a refused push is stored"
        );

        // An oversized message: RESOURCE_EXHAUSTED before decoding. The
        // generated client is used with no limit of its own, as a hostile
        // client would be.
        let mut raw = c_gd1.raw_client().max_encoding_message_size(usize::MAX);
        let mut req = tonic::Request::new(keqing_proto::pb::PushRequest {
            changes: vec![keqing_proto::pb::Change {
                doc_id: id.into(),
                bytes: vec![0u8; 17 << 20],
            }],
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {gd1}").parse().unwrap());
        let status = raw.push(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        // Too many changes in one push.
        let many = vec![env(id, &valid); 5_001];
        let e = c_gd1.push(many).await.unwrap_err();
        assert_eq!(e.kind, SyncErrorKind::ResourceExhausted);

        // No token, a wrong token: UNAUTHENTICATED.
        for tok in ["", "0123"] {
            let mut c = connect(tok.to_string()).await;
            let e = c.push(vec![]).await.unwrap_err();
            assert_eq!(e.kind, SyncErrorKind::Unauthenticated);
        }

        // The server still serves: the valid change goes through.
        let ack = c_gd1.push(vec![env(id, &valid)]).await.unwrap();
        assert_eq!(ack.accepted, 1);
        assert_eq!(log_size(&url, &hq).await, 2);
    });
    // Revoking takes effect at the device's next call.
    let r = Server::admin(&server.dir, &["device", "revoke", "广东1"]);
    assert!(r.ok, "{}", r.stderr);
    rt().block_on(async {
        let mut c = SyncConnection::connect(&url, &gd1, Duration::from_secs(5))
            .await
            .unwrap();
        let e = c.push(vec![]).await.unwrap_err();
        assert_eq!(e.kind, SyncErrorKind::Unauthenticated);
        assert!(e.message.contains("revoked"));
    });
}

#[test]
fn server_killed_during_pushes_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = |cycle: u64| tmp.path().join(format!("marker-{cycle}"));
    let mut server = Server::start_marked(tmp.path().join("server"), "127.0.0.1:0", &marker(0));
    let addr = server.addr.clone();
    let mut kills = keqing_tests::KillTally::default();
    let hq = keqing_tests::Office::new(tmp.path().join("hq"));
    hq.enroll_on(&server, None, "数据中心");
    let o = keqing_tests::Office::new(tmp.path().join("o"));
    o.enroll_on(&server, Some("44"), "前台1");
    o.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let mut calls = 0;
    for cycle in 0..4u64 {
        for k in 0..15u64 {
            o.ok(&[
                "call",
                "--phone",
                &format!("1380000{cycle}{k:03}"),
                "--name",
                "患者",
                "--source",
                "电视",
                "--staff",
                "李娜",
                "--at",
                "2026-11-20T09:00",
            ]);
            calls += 1;
        }
        // A sync under way when the server dies, in one of its writes.
        let mut child = o.spawn(&["sync"]);
        kills.add(keqing_tests::kill_in_write(
            server.process(),
            &marker(cycle),
            Duration::from_secs(10),
        ));
        drop(server);
        let _ = child.wait();
        server = Server::start_marked(tmp.path().join("server"), &addr, &marker(cycle + 1));
    }
    assert_eq!(kills.killed, 4, "{kills:?}");
    kills.check_most_interrupted();
    o.ok(&["sync"]);
    assert_eq!(
        o.ok(&["status", "--json"]).json()["outbox"],
        0,
        "everything re-pushed"
    );
    hq.ok(&["sync"]);
    let r = hq
        .ok(&["report", "daily", "--date", "2026-11-20", "--json"])
        .json();
    assert_eq!(r["total"]["calls"], calls, "every call exactly once");
    assert_eq!(
        hq.ok(&["heads", "--json"]).json(),
        o.ok(&["heads", "--json"]).json(),
        "the office and headquarters converge"
    );
    drop(server);
}

#[test]
fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    rt().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel.clone());
        let r = health
            .check(HealthCheckRequest {
                service: keqing_proto::SYNC_SERVICE_NAME.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32);
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"keqing.v1.Sync".to_string()), "{names:?}");
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    });
}

#[test]
fn changes_whose_dependencies_have_not_arrived_are_kept_not_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let url = server.url();
    let token = server.add_device(Some("44"), "广东1");
    let hq_token = server.add_device(None, "数据中心");
    let office = keqing_tests::Office::new(tmp.path().join("fresh"));
    office.ok(&[
        "enroll",
        "--server",
        &url,
        "--token",
        &server.add_device(Some("44"), "广东2"),
    ]);
    rt().block_on(async {
        let actor = ActorId::random();
        let mut c = SyncConnection::connect(&url, &token, Duration::from_secs(5))
            .await
            .unwrap();
        c.enroll(actor.to_bytes().to_vec()).await.unwrap();
        let id = "01a21111-0000-7000-8000-0000000000d1";
        let (mut doc, created) = new_dossier(id, "44", &actor);
        let first = doc
            .edit(2, |tx| tx.add_phone("13500000001"))
            .unwrap()
            .unwrap();
        let second = doc
            .edit(3, |tx| tx.add_phone("13500000002"))
            .unwrap()
            .unwrap();
        // The second edit arrives before the first (e.g. a reordered retry).
        c.push(vec![env(id, &created), env(id, &second)])
            .await
            .unwrap();
        // Another push to the same dossier while the gap is open.
        let third = doc
            .edit(4, |tx| tx.add_phone("13500000003"))
            .unwrap()
            .unwrap();
        c.push(vec![env(id, &first)]).await.unwrap();
        c.push(vec![env(id, &third)]).await.unwrap();
        assert_eq!(log_size(&url, &hq_token).await, 4);
    });
    // A fresh device of the office gets the whole dossier.
    office.ok(&["sync"]);
    let p = office.ok(&["patient", "13500000002", "--json"]).json();
    assert_eq!(
        p["dossier"]["patient"]["phones"],
        serde_json::json!(["13500000001", "13500000002", "13500000003"])
    );
}

/// A new dossier is logged without being built: pulls get its changes
/// until the projector has built and stored its snapshot; a change to it in
/// the meantime, and a new dossier whose changes come out of order, go the
/// long way (applied at push). A snapshot built from a state a push has
/// since changed is not stored.
#[test]
fn a_new_dossier_is_logged_unbuilt_until_the_projector_builds_it() {
    use keqing_proto::SyncHandler;
    use keqing_server::store::SettledSnapshot;
    use std::collections::BTreeMap;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_office_device(tmp.path());
    let check = store.clone();
    let hub = in_process_hub(store);
    let rt = rt();
    let actor = ActorId::random();
    rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
        .unwrap();
    // What a pull from cursor 0 sends per document: (snapshots, changes).
    let pull_all = || {
        rt.block_on(async {
            let mut rx = hub.pull("gd".into(), 0, String::new(), 1000).await.unwrap();
            let mut got: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            while let Some(b) = rx.recv().await {
                let b = b.unwrap();
                for s in &b.snapshots {
                    got.entry(s.doc_id.clone()).or_default().0 += 1;
                }
                for c in &b.changes {
                    got.entry(c.doc_id.clone()).or_default().1 += 1;
                }
                if b.done {
                    break;
                }
            }
            got
        })
    };
    let unbuilt = "01a21111-0000-7000-8000-0000000000e1";
    let (mut doc, created) = new_dossier(unbuilt, "44", &actor);
    let phone = doc
        .edit(2, |tx| tx.add_phone("13500000011"))
        .unwrap()
        .unwrap();
    let reversed = "01a21111-0000-7000-8000-0000000000e2";
    let (mut other, other_created) = new_dossier(reversed, "44", &actor);
    let other_phone = other
        .edit(2, |tx| tx.add_phone("13500000012"))
        .unwrap()
        .unwrap();
    let ack = rt
        .block_on(hub.push(
            "gd".into(),
            vec![
                env(unbuilt, &created),
                env(unbuilt, &phone),
                env(reversed, &other_phone),
                env(reversed, &other_created),
            ],
        ))
        .unwrap();
    assert_eq!(ack.accepted, 4);
    let stored = check.reader().unwrap().document(unbuilt).unwrap().unwrap();
    assert!(
        stored.snapshot.is_empty() && !stored.complete,
        "logged unbuilt"
    );
    let stored = check.reader().unwrap().document(reversed).unwrap().unwrap();
    assert!(stored.complete, "out of order: built at push");
    let got = pull_all();
    assert_eq!(got[unbuilt], (0, 2), "its logged changes");
    assert_eq!(got[reversed], (1, 0), "its snapshot");

    // A snapshot read before a push changed the document is not stored.
    let mut early = automerge::Automerge::new();
    for c in [&created, &phone] {
        early
            .apply_changes([automerge::Change::from_bytes(c.bytes.clone()).unwrap()])
            .unwrap();
    }
    let stale = SettledSnapshot {
        doc_id: unbuilt.into(),
        snapshot: early.save_nocompress(),
        last_seq: check
            .reader()
            .unwrap()
            .document(unbuilt)
            .unwrap()
            .unwrap()
            .last_seq,
    };
    let more = doc
        .edit(3, |tx| tx.add_phone("13500000013"))
        .unwrap()
        .unwrap();
    rt.block_on(hub.push("gd".into(), vec![env(unbuilt, &more)]))
        .unwrap();
    assert_eq!(
        check
            .projections()
            .unwrap()
            .settle_snapshots(&[stale])
            .unwrap(),
        0
    );

    // The change to the unbuilt dossier replayed its log: built now, with
    // all three changes.
    let stored = check.reader().unwrap().document(unbuilt).unwrap().unwrap();
    assert!(stored.complete);
    let built = automerge::Automerge::load(&stored.snapshot).unwrap();
    assert_eq!(built.get_heads(), vec![more.hash]);

    // Another unbuilt dossier: the projector builds and stores it.
    let third = "01a21111-0000-7000-8000-0000000000e3";
    let (_, third_created) = new_dossier(third, "44", &actor);
    rt.block_on(hub.push("gd".into(), vec![env(third, &third_created)]))
        .unwrap();
    assert!(
        !check
            .reader()
            .unwrap()
            .document(third)
            .unwrap()
            .unwrap()
            .complete
    );
    assert_eq!(pull_all()[third], (0, 1));
    keqing_server::projector::catch_up(&mut *check.projections().unwrap(), |_, _| {}).unwrap();
    let stored = check.reader().unwrap().document(third).unwrap().unwrap();
    assert!(
        stored.complete,
        "the projector stored the snapshot it built"
    );
    assert_eq!(
        automerge::Automerge::load(&stored.snapshot)
            .unwrap()
            .get_heads(),
        vec![third_created.hash]
    );
    let got = pull_all();
    assert_eq!(got[third], (1, 0));
    assert_eq!(got[unbuilt], (1, 0));
}

/// A pull reads each batch in a short read transaction of its own, on a
/// pooled connection it gives back before handing the batch over: a device
/// that stops reading mid-pull (asleep, stuck or hostile) holds no read
/// transaction, so the WAL is checkpointed and reset while it waits (before,
/// the whole pull was one read transaction and pinned the WAL). Once it has
/// taken no batch for the stall limit the pull ends; the device has what it
/// took, never a `done` it did not reach.
#[test]
fn a_pull_its_device_stops_reading_holds_nothing_and_ends() {
    use keqing_proto::SyncHandler;
    let tmp = tempfile::tempdir().unwrap();
    // Long enough that the checks below run while the pull is alive (each
    // is shown to have: the feed is still open after it), short enough to
    // wait out.
    let stall = Duration::from_secs(3);
    let hub = in_process_hub(store_with_office_device(tmp.path())).with_pull_stall(stall);
    // The pull waits on the runtime's timer from its own thread: a
    // multi-threaded runtime drives it while this thread sleeps.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let actor = ActorId::random();
    rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
        .unwrap();
    let ids: Vec<String> = (0..8)
        .map(|i| format!("01a21111-0000-7000-8000-0000000001{i:02}"))
        .collect();
    let changes = ids
        .iter()
        .map(|id| env(id, &new_dossier(id, "44", &actor).1))
        .collect();
    assert_eq!(
        rt.block_on(hub.push("gd".into(), changes))
            .unwrap()
            .accepted,
        8
    );

    let wal = rusqlite::Connection::open(tmp.path().join("server.sqlite")).unwrap();
    wal.busy_timeout(Duration::ZERO).unwrap();
    // 1 while some reader still needs the WAL.
    let busy = || {
        wal.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    assert_eq!(busy(), 0, "nothing reads before the pull");
    // One document per batch, and nobody reads them.
    let mut feed = rt
        .block_on(hub.pull("gd".into(), 0, String::new(), 1))
        .unwrap();
    // Waits for `what` of the feed, up to `limit`.
    let wait_for = |what: &dyn Fn() -> bool, limit: Duration, why: &str| {
        let deadline = std::time::Instant::now() + limit;
        while !what() {
            assert!(std::time::Instant::now() < deadline, "{why}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(
        &|| !feed.batches.is_empty(),
        Duration::from_secs(20),
        "the pull queued its first batch",
    );
    // Offices go on pushing meanwhile: the WAL grows, and is copied back
    // and reset although the pull has not finished.
    let late = "01a21111-0000-7000-8000-000000000199";
    let more = vec![env(late, &new_dossier(late, "44", &actor).1)];
    assert_eq!(
        rt.block_on(hub.push("gd".into(), more)).unwrap().accepted,
        1
    );
    assert_eq!(busy(), 0, "the unread pull holds no read transaction");
    assert!(
        !feed.batches.is_closed(),
        "the pull was still going when the WAL was reset (else the check proved nothing)"
    );
    // It ends by itself once its device has taken nothing for the stall.
    wait_for(
        &|| feed.batches.is_closed(),
        stall * 10,
        "the stalled pull ended",
    );

    let mut taken = 0;
    rt.block_on(async {
        while let Some(b) = feed.batches.recv().await {
            let b = b.unwrap();
            assert!(!b.done, "the feed never says done when it was cut off");
            taken += b.changes.len() + b.snapshots.len();
        }
    });
    assert!(
        (1..ids.len()).contains(&taken),
        "what was queued before the device stopped: {taken}"
    );

    // A device that reads gets everything.
    let mut feed = rt
        .block_on(hub.pull("gd".into(), 0, String::new(), 1))
        .unwrap();
    let mut all = 0;
    let done = rt.block_on(async {
        while let Some(b) = feed.batches.recv().await {
            let b = b.unwrap();
            all += b.changes.len() + b.snapshots.len();
            if b.done {
                return true;
            }
        }
        false
    });
    assert!(done, "a reading device reaches the end");
    assert_eq!(all, ids.len() + 1);
}

/// The server owns who a dossier belongs to: a change of an office device
/// (or of headquarters) that rewrites a dossier's office, to another
/// province or to one that does not exist, or its id, is refused, naming
/// the change, and nothing of the push is stored; reports count the
/// dossier where the server's record says, even if a document that got in
/// before this rule says otherwise.
#[test]
fn a_change_rewriting_whose_dossier_it_is_is_refused() {
    use automerge::transaction::Transactable;
    use keqing_proto::SyncHandler;
    use keqing_server::store::{DocumentState, NewLogEntry};
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_office_device(tmp.path());
    store
        .add_device(
            "dev-hq",
            "数据中心",
            None,
            &keqing_server::hub::token_hash("hq"),
            "2026-11-20T00:00:00",
            "test",
        )
        .unwrap();
    let check = store.clone();
    let hub = in_process_hub(store);
    let rt = rt();
    let (actor, hq_actor) = (ActorId::random(), ActorId::random());
    rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
        .unwrap();
    rt.block_on(hub.enroll("hq".into(), hq_actor.to_bytes().to_vec()))
        .unwrap();
    let id = "01a21111-0000-7000-8000-0000000000f1";
    let (mut dossier, created) = new_dossier(id, "44", &actor);
    let call = dossier
        .edit(2, |tx| tx.add_phone("13500000021"))
        .unwrap()
        .unwrap();
    rt.block_on(hub.push("gd".into(), vec![env(id, &created), env(id, &call)]))
        .unwrap();
    let log = check.reader().unwrap().max_seq().unwrap();
    let before_honest = dossier.save();
    let honest = dossier
        .edit(3, |tx| tx.add_phone("13500000022"))
        .unwrap()
        .unwrap();
    let rewrite = |actor: &ActorId, key: &str, value: &str| {
        let mut doc = automerge::Automerge::load(&before_honest)
            .unwrap()
            .with_actor(actor.clone());
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, key, value)?;
            Ok(())
        })
        .unwrap();
        let c = doc.get_last_local_change().unwrap();
        ChangeEnvelope {
            doc_id: id.into(),
            bytes: c.raw_bytes().to_vec(),
        }
    };
    for (token, who, key, value) in [
        ("gd", &actor, "office", "11"),
        ("gd", &actor, "office", "99"),
        ("gd", &actor, "id", "01a21111-0000-7000-8000-0000000000f9"),
        ("hq", &hq_actor, "office", "11"),
        // A transfer is headquarters' own edit, written by the server: a
        // device's would count the office's records at another.
        ("gd", &actor, "transfer/forged", "11"),
        ("hq", &hq_actor, "transfer/forged", "11"),
    ] {
        // The honest change first, the rewrite second: the refusal names
        // the second, and nothing of the push is stored.
        let e = rt
            .block_on(hub.push(
                token.into(),
                vec![env(id, &honest), rewrite(who, key, value)],
            ))
            .unwrap_err();
        assert_eq!(
            e.kind,
            SyncErrorKind::PermissionDenied,
            "{token} {key}={value}: {e:?}"
        );
        assert_eq!(e.change, Some(1), "the refusal names the change");
        assert_eq!(
            check.reader().unwrap().max_seq().unwrap(),
            log,
            "nothing stored"
        );
    }
    let ack = rt
        .block_on(hub.push("gd".into(), vec![env(id, &honest)]))
        .unwrap();
    assert_eq!(ack.accepted, 1);

    // A dossier whose document names another office than the server's
    // record (as one that got in before the rule might): the projections
    // and the reports go by the record.
    let other = "01a21111-0000-7000-8000-0000000000f2";
    let (mut d, first) = new_dossier(other, "44", &actor);
    let mut doc = automerge::Automerge::load(&d.save()).unwrap();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, "office", "11")?;
        Ok(())
    })
    .unwrap();
    let moved = doc.get_last_local_change().unwrap().clone();
    let phone = d
        .edit(2, |tx| tx.add_phone("13500000023"))
        .unwrap()
        .unwrap();
    let mut entries = Vec::new();
    for bytes in [&first.bytes, moved.raw_bytes(), &phone.bytes] {
        let c = automerge::Change::from_bytes(bytes.to_vec()).unwrap();
        entries.push(NewLogEntry {
            hash: c.hash().0,
            doc_id: other.into(),
            office: "44".into(),
            bytes: bytes.to_vec(),
        });
    }
    doc.apply_changes([automerge::Change::from_bytes(phone.bytes.clone()).unwrap()])
        .unwrap();
    let mut writer = check.log_writer().unwrap();
    writer
        .append(
            "dev-gd",
            &entries,
            &[DocumentState {
                doc_id: other.into(),
                office: "44".into(),
                snapshot: doc.save_nocompress(),
                complete: true,
                merged_into: None,
            }],
        )
        .unwrap();
    writer.commit().unwrap();
    let mut session = check.projections().unwrap();
    keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
    let day = keqing_shared::when::parse_date("2026-11-20").unwrap();
    let rows = |office: &str| session.report_rows(Some(office), day, day).unwrap();
    assert!(rows("11").calls.is_empty() && rows("11").visits.is_empty());
    let dump = session.projection_dump().unwrap();
    assert!(
        dump.lines()
            .filter(|l| l.starts_with("patients|") && l.contains(other))
            .all(|l| l.contains("|Text(\"44\")|")),
        "{dump}"
    );
}

/// A record dated more than a day after HQ's clock (a device with a wrong
/// clock, or a typo past the device's own check) is refused at the hub by
/// the change that writes it, with a reason naming the time; a record of
/// today from the same device goes in.
#[test]
fn a_record_dated_past_tomorrow_is_refused_by_the_hub() {
    use keqing_proto::SyncHandler;
    use keqing_shared::records::{PlanAction, PlanChange};
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_office_device(tmp.path());
    let check = store.clone();
    let hub = in_process_hub(store);
    let rt = rt();
    let actor = ActorId::random();
    rt.block_on(hub.enroll("gd".into(), actor.to_bytes().to_vec()))
        .unwrap();
    let id = "01a21111-0000-7000-8000-0000000000e1";
    let (mut dossier, created) = new_dossier(id, "44", &actor);
    let plan = |n: u64, at: chrono::NaiveDateTime| PlanChange {
        id: format!("plan-{n}"),
        at,
        staff: "赵敏".into(),
        action: PlanAction::Extra,
        date: Some(at.date()),
        reason: None,
        assignee: None,
        notes: None,
    };
    let now = keqing_host::now_cst();
    let today = dossier
        .edit(2, |tx| tx.add_plan_change(&plan(1, now)))
        .unwrap()
        .unwrap();
    let wrong_year = now + chrono::Duration::days(366);
    let ahead = dossier
        .edit(3, |tx| tx.add_plan_change(&plan(2, wrong_year)))
        .unwrap()
        .unwrap();
    let e = rt
        .block_on(hub.push(
            "gd".into(),
            vec![env(id, &created), env(id, &today), env(id, &ahead)],
        ))
        .unwrap_err();
    assert_eq!(e.kind, SyncErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(e.change, Some(2), "the refusal names the change: {e:?}");
    let shown = keqing_shared::when::fmt_datetime(wrong_year);
    assert!(
        e.message.contains(&shown) && e.message.contains("晚于"),
        "{e:?}"
    );
    assert_eq!(
        check.reader().unwrap().max_seq().unwrap(),
        0,
        "nothing stored"
    );
    let ack = rt
        .block_on(hub.push("gd".into(), vec![env(id, &created), env(id, &today)]))
        .unwrap();
    assert_eq!(ack.accepted, 2);
    // Less than a day ahead (tomorrow morning's appointment entered
    // tonight) is fine.
    let tomorrow = dossier
        .edit(4, |tx| {
            tx.add_plan_change(&plan(3, now + chrono::Duration::hours(23)))
        })
        .unwrap()
        .unwrap();
    let ack = rt
        .block_on(hub.push("gd".into(), vec![env(id, &tomorrow)]))
        .unwrap();
    assert_eq!(ack.accepted, 1);
}
