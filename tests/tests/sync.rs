//! Sync through a real `keqing-server` process and real `keqing` replicas.

use crate::replica::replica_indexes;
use keqing_tests::{Office, Server};

#[test]
fn two_devices_edit_one_dossier_offline_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let (t1, t2) = (
        server.add_device(Some("44"), "前台1"),
        server.add_device(Some("44"), "前台2"),
    );
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    // Device A started offline before the server existed for it.
    a.ok(&["init", "--office", "44", "--device", "前台1"]);
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = a
        .ok(&[
            "call",
            "--phone",
            "13800138000",
            "--name",
            "张三",
            "--age",
            "62",
            "--source",
            "电视",
            "--staff",
            "李娜",
            "--at",
            "2026-11-20T09:00",
        ])
        .last_line()
        .to_string();
    a.ok(&["enroll", "--server", &server.url(), "--token", &t1]);
    a.ok(&["sync"]);
    b.ok(&["enroll", "--server", &server.url(), "--token", &t2]);
    b.ok(&["sync"]);
    assert_eq!(
        a.heads(),
        b.heads(),
        "B bootstrapped A's dossier and roster"
    );
    // Both offline: each adds a follow-up and changes the address.
    a.ok(&[
        "followup",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--outcome",
        "A打的",
        "--at",
        "2026-11-21T10:00",
    ]);
    b.ok(&[
        "followup",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--outcome",
        "B打的",
        "--at",
        "2026-11-21T11:00",
    ]);
    a.ok(&["update", "--patient", &id, "--address", "广州市天河区"]);
    b.ok(&["update", "--patient", &id, "--address", "广州市越秀区"]);
    for o in [&a, &b, &a] {
        o.ok(&["sync"]);
    }
    assert_eq!(a.heads(), b.heads());
    let pa = a.ok(&["patient", &id, "--json"]).json();
    let pb = b.ok(&["patient", &id, "--json"]).json();
    assert_eq!(pa, pb);
    let outcomes: Vec<&str> = pa["dossier"]["followups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["A打的", "B打的"]);
    assert_eq!(
        pa["dossier"]["conflicts"],
        serde_json::json!([{"field": "address", "values": ["广州市天河区", "广州市越秀区"]}])
    );
    // Settling the conflict on one device settles it everywhere.
    a.ok(&["update", "--patient", &id, "--address", "广州市天河区"]);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    let pb = b.ok(&["patient", &id, "--json"]).json();
    assert_eq!(pb["dossier"]["conflicts"], serde_json::json!([]));
    assert_eq!(pb["dossier"]["patient"]["address"], "广州市天河区");
    // Status tells where the replica stands.
    let st = b.ok(&["status", "--json"]).json();
    assert_eq!(st["outbox"], 0);
    assert!(st["sync"]["cursor"].as_u64().unwrap() > 0);
    assert!(st["sync"]["last_sync"].is_string());
}

#[test]
fn office_work_goes_on_while_the_server_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let o = Office::new(tmp.path().join("o"));
    o.enroll_on(&server, Some("11"), "前台1");
    o.ok(&["sync"]);
    let url = server.url();
    server.kill();
    o.ok(&["staff", "add", "--name", "王芳", "--role", "consultant"]);
    o.ok(&[
        "call",
        "--phone",
        "13700137000",
        "--name",
        "赵六",
        "--source",
        "广播",
        "--staff",
        "王芳",
    ]);
    let r = o.run(&["sync"]);
    assert!(
        !r.ok && r.stderr.contains("cannot be reached"),
        "{}",
        r.stderr
    );
    let st = o.ok(&["status", "--json"]).json();
    assert_eq!(
        st["outbox"], 3,
        "staff + dossier creation + call wait in the outbox"
    );
    assert!(st["sync"]["last_error"].is_string());
    // The server comes back on the same address: everything goes through.
    let addr = url.trim_start_matches("http://");
    let server = Server::start(tmp.path().join("server"), addr);
    o.ok(&["sync"]);
    assert_eq!(o.ok(&["status", "--json"]).json()["outbox"], 0);
    drop(server);
}

/// A tiny deterministic generator for the random schedule.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn twenty_seven_offices_converge_through_random_syncs_some_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    twenty_seven_offices_converge(tmp.path(), &[&server]);
}

/// The same on PostgreSQL with two server processes: each office's first
/// device lists one process first, its second device the other, so both
/// serve every office.
#[test]
fn twenty_seven_offices_converge_over_two_server_processes_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let url = keqing_tests::postgres_database();
    let one = Server::start_on(tmp.path().join("one"), "127.0.0.1:0", Some(&url));
    let two = Server::start_on(tmp.path().join("two"), "127.0.0.1:0", Some(&url));
    twenty_seven_offices_converge(tmp.path(), &[&one, &two]);
}

/// Two devices per office work offline and sync at random, some syncs cut
/// off by SIGKILL; then everyone syncs: each office's devices hold the
/// same documents, headquarters the union, every record once.
fn twenty_seven_offices_converge(tmp: &std::path::Path, servers: &[&Server]) {
    let reversed: Vec<&Server> = servers.iter().rev().copied().collect();
    let hq = Office::new(tmp.join("hq"));
    hq.enroll_with(servers, None, "数据中心");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut devices: Vec<(String, Office)> = Vec::new();
    for o in keqing_shared::office::OFFICES {
        let a = Office::new(tmp.join(format!("{}-a", o.code)));
        let b = Office::new(tmp.join(format!("{}-b", o.code)));
        a.ok(&["init", "--office", o.code, "--device", "前台1"]);
        a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
        a.enroll_with(servers, Some(o.code), "前台1");
        a.ok(&["sync"]);
        b.enroll_with(&reversed, Some(o.code), "前台2");
        b.ok(&["sync"]);
        devices.push((o.code.to_string(), a));
        devices.push((o.code.to_string(), b));
    }
    let mut calls = 0;
    let mut followups = 0;
    let mut phone = 13_000_000_000u64;
    let mut kills = keqing_tests::KillTally::default();
    let mut markers = 0;
    for round in 0..3 {
        // Offline work on random devices.
        for (_, d) in &devices {
            for _ in 0..rng.below(3) {
                phone += 1;
                let r = d.ok(&[
                    "call",
                    "--phone",
                    &phone.to_string(),
                    "--name",
                    "患者",
                    "--source",
                    "电视",
                    "--staff",
                    "李娜",
                    "--at",
                    &format!("2026-11-2{round}T09:00"),
                ]);
                calls += 1;
                if rng.below(2) == 0 {
                    d.ok(&[
                        "followup",
                        "--patient",
                        r.last_line(),
                        "--staff",
                        "李娜",
                        "--outcome",
                        "好",
                        "--at",
                        &format!("2026-11-2{round}T15:00"),
                    ]);
                    followups += 1;
                }
            }
        }
        // Random devices sync; some syncs are cut off mid-way (SIGKILL in
        // one of the sync's write transactions).
        for (_, d) in &devices {
            match rng.below(4) {
                0 => {}
                1 => {
                    markers += 1;
                    let marker = tmp.join(format!("marker-{markers}"));
                    let mut child = d.spawn_marked(&["sync"], &marker);
                    std::thread::sleep(std::time::Duration::from_millis(rng.below(40)));
                    kills.add(keqing_tests::kill_in_write(
                        &mut child,
                        &marker,
                        std::time::Duration::from_secs(5),
                    ));
                }
                _ => {
                    d.ok(&["sync"]);
                }
            }
        }
    }
    // The line comes back for everyone: two rounds so every push is pulled.
    for _ in 0..2 {
        for (_, d) in &devices {
            d.ok(&["sync"]);
        }
    }
    hq.ok(&["sync"]);
    let hq_heads = hq.heads();
    let mut union = std::collections::BTreeMap::new();
    for pair in devices.chunks(2) {
        let (code, a) = &pair[0];
        let b = &pair[1].1;
        let ha = a.heads();
        assert_eq!(
            ha,
            b.heads(),
            "office {code}: both devices hold the same documents"
        );
        for (id, h) in ha {
            assert!(
                union.insert(id.clone(), h).is_none(),
                "document {id} reached two offices"
            );
        }
        assert_eq!(a.ok(&["status", "--json"]).json()["outbox"], 0);
    }
    assert_eq!(
        hq_heads, union,
        "headquarters holds exactly the union of the offices"
    );
    // Every record created exists exactly once.
    let mut hq_calls = 0;
    let mut hq_followups = 0;
    for round in 0..3 {
        let r = hq
            .ok(&[
                "report",
                "daily",
                "--date",
                &format!("2026-11-2{round}"),
                "--json",
            ])
            .json();
        hq_calls += r["total"]["calls"].as_u64().unwrap();
        hq_followups += r["total"]["followups"]["done"].as_u64().unwrap();
    }
    assert_eq!((hq_calls, hq_followups), (calls, followups));
    println!(
        "sync kills: {} syncs killed, interrupted {} (in a write), finished before the kill {}",
        kills.killed, kills.interrupted, kills.finished_first
    );
    kills.check_most_interrupted();
}

#[test]
fn a_replica_restored_from_an_old_backup_is_repaired_by_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let o = Office::new(tmp.path().join("o"));
    o.enroll_on(&server, Some("33"), "前台1");
    o.ok(&["staff", "add", "--name", "周敏", "--role", "consultant"]);
    let first = o
        .ok(&[
            "call",
            "--phone",
            "13600136000",
            "--name",
            "钱八",
            "--source",
            "电视",
            "--staff",
            "周敏",
            "--at",
            "2026-11-20T09:00",
        ])
        .last_line()
        .to_string();
    o.ok(&["sync"]);
    // The nightly backup (the office PC copies the replica file while idle).
    let db = o.dir.join("keqing.sqlite");
    let backup = tmp.path().join("backup.sqlite");
    std::fs::copy(&db, &backup).unwrap();
    // A day of work, synced, then the disk dies.
    o.ok(&[
        "followup",
        "--patient",
        &first,
        "--staff",
        "周敏",
        "--outcome",
        "好",
        "--at",
        "2026-11-21T10:00",
    ]);
    let second = o
        .ok(&[
            "call",
            "--phone",
            "13600136001",
            "--name",
            "孙九",
            "--source",
            "报纸",
            "--staff",
            "周敏",
            "--at",
            "2026-11-21T11:00",
        ])
        .last_line()
        .to_string();
    o.ok(&["sync"]);
    let before = o.heads();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(o.dir.join(format!("keqing.sqlite{suffix}")));
    }
    std::fs::copy(&backup, &db).unwrap();
    assert!(
        !o.run(&["patient", &second]).ok,
        "the restored replica lacks the day's work"
    );
    // Repair compares heads with the server; sync brings the rest.
    let r = o.ok(&["repair"]);
    assert!(
        r.stdout.contains("补回 1 条"),
        "the day's follow-up comes back: {}",
        r.stdout
    );
    o.ok(&["sync"]);
    assert_eq!(o.heads(), before, "nothing lost");
    let p = o.ok(&["patient", &first, "--json"]).json();
    assert_eq!(p["dossier"]["followups"].as_array().unwrap().len(), 1);
    o.ok(&["patient", &second]);
}

#[test]
fn sync_watch_keeps_a_device_up_to_date_and_rides_out_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let addr = server.addr.clone();
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("42"), "前台1");
    b.enroll_on(&server, Some("42"), "前台2");
    a.ok(&["staff", "add", "--name", "吴刚", "--role", "consultant"]);
    a.ok(&["sync"]);
    let mut watcher = b.spawn(&["sync", "--watch", "--interval", "1"]);
    let appears = |phone: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if b.run(&["patient", phone]).ok {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        false
    };
    a.ok(&[
        "call",
        "--phone",
        "13300133000",
        "--name",
        "郑一",
        "--source",
        "电视",
        "--staff",
        "吴刚",
    ]);
    a.ok(&["sync"]);
    assert!(appears("13300133000"), "the watcher pulled A's new dossier");
    // The server goes away and comes back on the same address.
    server.kill();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let server = Server::start(tmp.path().join("server"), &addr);
    a.ok(&[
        "call",
        "--phone",
        "13300133001",
        "--name",
        "郑二",
        "--source",
        "电视",
        "--staff",
        "吴刚",
    ]);
    a.ok(&["sync"]);
    assert!(
        appears("13300133001"),
        "the watcher resumed after the outage"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    drop(server);
}

/// A push of several batches goes out pipelined (the next batch is sent
/// before the server acknowledged the one before): here an outbox of 60
/// new dossiers and then edits to the last 15 of them, pushed 20 changes at
/// a time, so the batch after the last creations stops before those edits
/// and a later one carries them. A real server process must log everything
/// exactly once, and a second device must pull the same dossiers.
#[test]
fn a_pipelined_push_lands_every_change_once() {
    use keqing_office::desk::CallInput;
    use keqing_office::sync::{Quiet, enroll, sync_once, sync_once_with};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let (ta, tb) = (
        server.add_device(Some("44"), "前台1"),
        server.add_device(Some("44"), "前台2"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let enrolled = |dir: &str, token: &str| {
        rt.block_on(enroll(
            &tmp.path().join(dir),
            std::slice::from_ref(&server.url()),
            token,
            None,
            &Default::default(),
        ))
        .unwrap()
    };
    let mut a = enrolled("a", &ta);
    a.add_staff("李娜", keqing_shared::staff::Role::Consultant)
        .unwrap();
    let at = keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap();
    // One transaction without fsync for the fill (as a bulk import).
    a.replica().set_bulk_load(true).unwrap();
    a.replica_mut().begin_bulk().unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let call = a
            .register_call(&CallInput {
                phone: format!("13{:09}", i),
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
    for id in &ids[45..] {
        a.edit_patient(id, |tx| {
            tx.update_patient(&keqing_shared::dossier::PatientUpdate {
                address: Some("广州".into()),
                ..Default::default()
            })
        })
        .unwrap();
    }
    a.replica_mut().finish_bulk(true).unwrap();
    a.replica().set_bulk_load(false).unwrap();
    let outbox = a.replica().outbox_len().unwrap();
    assert!(outbox > 120, "many batches: {outbox}");
    let pushed = rt
        .block_on(sync_once_with(a.replica_mut(), &mut Quiet, 20))
        .unwrap();
    assert_eq!(pushed.pushed, outbox, "every change accepted once");
    assert_eq!(pushed.duplicates, 0);
    assert_eq!(a.replica().outbox_len().unwrap(), 0);
    // The log held nothing else: whichever order the batches landed in,
    // the cursor moved over all of them and nothing was pulled back.
    assert_eq!(
        (
            pushed.pulled_changes,
            pushed.pulled_snapshots,
            pushed.cursor
        ),
        (0, 0, outbox),
        "{pushed:?}"
    );
    // Nothing left to push; the server logged each change once.
    let again = rt.block_on(sync_once(a.replica_mut(), &mut Quiet)).unwrap();
    assert_eq!((again.pushed, again.duplicates), (0, 0));
    let logged: i64 = rusqlite::Connection::open(
        tmp.path()
            .join("server")
            .join(keqing_server::store::DB_FILE),
    )
    .unwrap()
    .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
    .unwrap();
    assert_eq!(logged as u64, outbox);
    let mut b = enrolled("b", &tb);
    rt.block_on(sync_once(b.replica_mut(), &mut Quiet)).unwrap();
    assert_eq!(b.replica().dossier_count().unwrap(), 60);
    assert_eq!(
        a.replica().document_heads().unwrap(),
        b.replica().document_heads().unwrap(),
        "B holds every dossier as A has it"
    );
    let (edited, _) = b.dossier(&ids[59]).unwrap();
    assert_eq!(edited.patient.address.as_deref(), Some("广州"));
}

#[test]
fn a_dossier_whose_data_does_not_merge_is_quarantined_and_sync_goes_on() {
    use keqing_server::store::{DocumentState, NewLogEntry, SqliteStore, Store};
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let server = Server::start(&server_dir, "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    a.enroll_on(&server, Some("44"), "前台1");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let good = a.call("13800138000", "张三", "李娜", "2026-11-20T09:00");
    a.ok(&["sync"]);
    server.kill();
    // What the server's checks exist to refuse, written to its store behind
    // its back (a bug, a damaged disk): a dossier of office 44 whose logged
    // change is not automerge at all.
    let bad = "01a20000-0000-7000-8000-00000000bad1";
    let store = SqliteStore::open(&server_dir).unwrap();
    let mut writer = store.log_writer().unwrap();
    writer
        .append(
            "fault-injection",
            &[NewLogEntry {
                hash: [7; 32],
                doc_id: bad.into(),
                office: "44".into(),
                bytes: b"not an automerge change".to_vec(),
            }],
            &[DocumentState {
                doc_id: bad.into(),
                office: "44".into(),
                snapshot: Vec::new(),
                complete: false,
                merged_into: None,
            }],
        )
        .unwrap();
    writer.commit().unwrap();
    drop(store);

    // A new device of the office bootstraps: the bad dossier is put aside,
    // everything else arrives, and the cursor moves on.
    let server = Server::start(&server_dir, "127.0.0.1:0");
    let b = Office::new(tmp.path().join("b"));
    b.enroll_on(&server, Some("44"), "前台2");
    let first = b.ok(&["sync"]);
    assert!(
        first.stdout.contains("1 份档案的远端数据无法合并"),
        "the office is told: {}",
        first.stdout
    );
    let p = b.ok(&["patient", &good, "--json"]).json();
    assert_eq!(p["dossier"]["patient"]["name"], "张三");
    let status = b.ok(&["status", "--json"]).json();
    assert_eq!(status["quarantined"], 1, "{status}");
    let latest = &status["quarantined_latest"][0];
    assert_eq!(latest["doc_id"], bad);
    assert_eq!(latest["kind"], "change");
    assert!(
        latest["reason"].as_str().unwrap().contains(bad),
        "the reason names the document: {latest}"
    );
    assert!(
        !b.run(&["patient", bad]).ok,
        "nothing of the bad dossier is projected"
    );
    // The next rounds go on from there: nothing pulled twice, nothing more
    // put aside, and the quarantined bytes are still kept.
    let again = b.ok(&["sync", "--json"]).json();
    assert_eq!(again["quarantined"], 0, "{again}");
    assert_eq!(again["pulled_changes"], 0, "{again}");
    assert_eq!(b.ok(&["status", "--json"]).json()["quarantined"], 1);
    // The office can list it, and retrying it (it still does not merge)
    // keeps it as it is and changes nothing else.
    let listed = b.ok(&["quarantine", "list", "--json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["doc_id"], bad);
    let heads = b.ok(&["heads", "--json"]).json();
    let retried = b.ok(&["quarantine", "retry", "--json"]).json();
    assert_eq!(retried["merged"], 0, "{retried}");
    assert_eq!(retried["still_quarantined"], 1, "{retried}");
    assert!(
        b.ok(&["quarantine", "retry"])
            .stdout
            .contains("仍无法合并 1 份")
    );
    assert_eq!(b.ok(&["heads", "--json"]).json(), heads);
    assert_eq!(b.ok(&["status", "--json"]).json()["quarantined"], 1);
    // The device that made the good dossier is unaffected too.
    let a_status = a.ok(&["status", "--json"]).json();
    assert_eq!(a_status["outbox"], 0);
}

#[test]
fn a_device_does_not_pull_back_what_it_just_pushed_but_gets_everything_else() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("44"), "前台1");
    b.enroll_on(&server, Some("44"), "前台2");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let first = a.call("13800138001", "张一", "李娜", "2026-11-20T09:00");
    a.call("13800138002", "张二", "李娜", "2026-11-20T09:00");
    // The log was empty: everything after A's cursor is what A pushed.
    let s = a.ok(&["sync", "--json"]).json();
    assert!(s["pushed"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(
        (s["pulled_changes"].as_u64(), s["pulled_snapshots"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    let a_cursor = s["cursor"].as_u64().unwrap();
    assert!(a_cursor > 0, "{s}");
    // B (its cursor behind the log) pushes and pulls everything, its own
    // work included.
    b.ok(&["sync"]);
    b.ok(&["update", "--patient", &first, "--address", "广州"]);
    let s = b.ok(&["sync", "--json"]).json();
    assert_eq!(s["pushed"], 1, "{s}");
    // A's cursor is behind B's edit: A's next push does not move it, and A
    // pulls B's edit and its own new change.
    a.ok(&["update", "--patient", &first, "--sex", "男"]);
    let s = a.ok(&["sync", "--json"]).json();
    assert_eq!(s["pushed"], 1, "{s}");
    assert_eq!(s["pulled_changes"], 2, "B's edit and A's own: {s}");
    let p = a.ok(&["patient", &first, "--json"]).json();
    assert_eq!(p["dossier"]["patient"]["address"], "广州");
    // Now A is at the end of the log: its next push is all it skips.
    a.ok(&["update", "--patient", &first, "--age", "70"]);
    let s = a.ok(&["sync", "--json"]).json();
    assert_eq!(
        (s["pushed"].as_u64(), s["pulled_changes"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    // Both hold the same documents as each other.
    b.ok(&["sync"]);
    assert_eq!(a.heads(), b.heads());
}

/// Two devices change one patient's follow-up plan offline: every change
/// of both is kept (the plan is the records, merged), the assignee set two
/// ways is a conflict `conflicts` lists, the stop made on one device
/// takes the patient off both devices' due lists (the extra call the other
/// added too), and the resume and the resolution made later put them back
/// on the right person's list.
#[test]
fn two_devices_change_one_plan_offline_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd1 = Office::new(tmp.path().join("gd1"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    gd1.enroll_on(&server, Some("44"), "前台1");
    for name in ["李娜", "王芳", "赵敏"] {
        gd1.ok(&["staff", "add", "--name", name, "--role", "consultant"]);
    }
    let id = gd1
        .ok(&[
            "call",
            "--phone",
            "13800138000",
            "--name",
            "张三",
            "--source",
            "电视",
            "--staff",
            "李娜",
            "--at",
            "2026-11-20T09:00",
        ])
        .last_line()
        .to_string();
    gd1.ok(&[
        "visit",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--bought",
        "--at",
        "2026-11-20T10:00",
    ]);
    gd1.ok(&[
        "purchase",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--product",
        "脑心通",
        "--amount",
        "300",
        "--at",
        "2026-11-20T10:05",
    ]);
    gd1.ok(&["sync"]);
    gd2.enroll_on(&server, Some("44"), "前台2");
    gd2.ok(&["sync"]);
    let plan = |o: &Office, args: &[&str]| {
        let mut all = vec!["plan", args[0], "--patient", &id, "--staff", "李娜"];
        all.extend_from_slice(&args[1..]);
        o.ok(&all);
    };
    // Offline, each device changes the plan.
    plan(
        &gd1,
        &["stop", "--reason", "拒访", "--at", "2026-11-21T09:00"],
    );
    plan(
        &gd1,
        &["assign", "--to", "王芳", "--at", "2026-11-21T09:05"],
    );
    plan(
        &gd2,
        &["add", "--date", "2026-11-25", "--at", "2026-11-21T10:00"],
    );
    plan(
        &gd2,
        &["assign", "--to", "赵敏", "--at", "2026-11-21T10:05"],
    );
    for o in [&gd1, &gd2, &gd1] {
        o.ok(&["sync"]);
    }
    assert_eq!(gd1.heads(), gd2.heads());
    let p1 = gd1.ok(&["patient", &id, "--json"]).json();
    assert_eq!(p1, gd2.ok(&["patient", &id, "--json"]).json());
    let mut actions: Vec<&str> = p1["dossier"]["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    actions.sort();
    assert_eq!(actions, ["assign", "assign", "extra", "stop"], "{p1}");
    let listed = gd2.ok(&["conflicts", "--json"]).json();
    assert_eq!(
        listed[0]["conflicts"],
        serde_json::json!([{"field": "assignee", "values": ["王芳", "赵敏"]}]),
        "{listed}"
    );
    assert_eq!(gd1.ok(&["conflicts", "--json"]).json(), listed);
    let due_ids = |o: &Office, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["due", "--date", "2026-11-25", "--json"];
        args.extend_from_slice(extra);
        o.ok(&args)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["dossier_id"].as_str().unwrap().to_string())
            .collect()
    };
    for o in [&gd1, &gd2] {
        assert!(due_ids(o, &[]).is_empty(), "stopped: on no due list");
        let stopped = o.ok(&["list", "--category", "停访", "--json"]).json();
        assert_eq!(stopped[0]["dossier_id"], id.as_str(), "{stopped}");
    }

    // One device resumes, the other settles who calls; both agree again.
    plan(&gd2, &["resume", "--at", "2026-11-22T09:00"]);
    gd1.ok(&["resolve", &id, "assignee", "王芳"]);
    for o in [&gd1, &gd2, &gd1] {
        o.ok(&["sync"]);
    }
    for o in [&gd1, &gd2] {
        assert_eq!(o.ok(&["conflicts", "--json"]).json(), serde_json::json!([]));
        assert_eq!(due_ids(o, &["--staff", "王芳"]), vec![id.clone()]);
        assert!(due_ids(o, &["--staff", "赵敏"]).is_empty());
        let due = o.ok(&["due", "--date", "2026-11-25", "--json"]).json();
        let cadences: Vec<&str> = due[0]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cadence"].as_str().unwrap())
            .collect();
        assert!(cadences.contains(&"planned"), "the extra call: {due}");
    }
}

/// A new device's first sync sets the projection's read-only indexes
/// aside while it fills the tables, and ends with every one built again:
/// its projection is the one a rebuild derives, and its figures are the
/// office's.
#[test]
fn a_first_sync_ends_with_every_index_built() {
    use keqing_office::sync::{Quiet, enroll, sync_once};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    a.enroll_on(&server, Some("44"), "前台1");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    for i in 0..12 {
        a.call(
            &format!("138001380{i:02}"),
            &format!("张{i}"),
            "李娜",
            "2026-11-20T09:00",
        );
    }
    a.ok(&["sync"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hq_dir = tmp.path().join("hq");
    let token = server.add_device(None, "数据中心");
    let mut hq = rt
        .block_on(enroll(
            &hq_dir,
            &[server.url()],
            &token,
            None,
            &Default::default(),
        ))
        .unwrap();
    rt.block_on(sync_once(hq.replica_mut(), &mut Quiet))
        .unwrap();
    assert!(!hq.replica().projection_indexes_aside().unwrap());
    assert_eq!(replica_indexes(&hq_dir), replica_indexes(&a.dir));
    let pulled = hq.replica().projection_dump().unwrap();
    assert!(pulled.contains("张11"), "the dossiers arrived");
    // Kept packed at rest, as the server keeps them.
    let firsts: Vec<u8> = rusqlite::Connection::open(hq_dir.join(keqing_office::store::DB_FILE))
        .unwrap()
        .prepare("SELECT substr(bytes, 1, 1) FROM documents WHERE kind = 'dossier'")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0).map(|b| b[0]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        firsts,
        vec![0x02; 12],
        "every pulled dossier is stored packed"
    );
    hq.replica_mut().rebuild().unwrap();
    assert_eq!(hq.replica().projection_dump().unwrap(), pulled);
    assert_eq!(replica_indexes(&hq_dir), replica_indexes(&a.dir));
    // Later syncs go the ordinary way.
    a.call("13800138099", "张末", "李娜", "2026-11-21T09:00");
    a.ok(&["sync"]);
    rt.block_on(sync_once(hq.replica_mut(), &mut Quiet))
        .unwrap();
    assert_eq!(replica_indexes(&hq_dir), replica_indexes(&a.dir));
    drop(hq);
    let report = |o: &Office| {
        o.ok(&["report", "daily", "--date", "2026-11-20", "--json"])
            .json()["total"]
            .clone()
    };
    let hq_office = Office::new(hq_dir);
    assert_eq!(report(&hq_office), report(&a));
}

/// A device offline longer than the log's horizon: headquarters compacts
/// the log (`keqing-server compact`, beside the running server, then
/// `compact --vacuum` to give the space back), the
/// device's next sync starts over from the snapshots of its office (it
/// says so: snapshots pulled) and merges them into what it holds, its own
/// offline work goes up, both devices end up with the same documents, and
/// the sync after that follows the log again.
#[test]
fn a_device_behind_the_compacted_log_starts_over_from_snapshots_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("44"), "前台1");
    b.enroll_on(&server, Some("44"), "前台2");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let first = a.call("13800138001", "张一", "李娜", "2026-11-20T09:00");
    a.call("13800138002", "张二", "李娜", "2026-11-20T09:30");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    // B goes offline and works; A goes on and syncs.
    let offline = b.call("13800138003", "张三", "李娜", "2026-11-21T10:00");
    b.ok(&["update", "--patient", &first, "--address", "佛山"]);
    a.ok(&["update", "--patient", &first, "--sex", "男"]);
    a.call("13800138004", "张四", "李娜", "2026-11-21T11:00");
    a.ok(&["sync"]);
    // Every snapshot built (the projector settles new dossiers'), then the
    // whole log compacted.
    assert!(server.run_admin(&["project"]).ok);
    let c = server.run_admin(&["compact", "--keep-days", "0", "--json"]);
    assert!(c.ok, "{}", c.stderr);
    let c = c.json();
    assert!(c["changes"].as_u64().unwrap() > 0, "{c}");
    let floor = c["floor"].as_u64().unwrap();
    assert!(c["vacuumed"].is_null(), "{c}");
    // The space it freed goes back to the file system (beside the running
    // server); nothing is left to compact.
    let v = server.run_admin(&["compact", "--keep-days", "0", "--vacuum", "--json"]);
    assert!(v.ok, "{}", v.stderr);
    let v = v.json();
    assert_eq!(
        (v["changes"].as_u64(), v["floor"].as_u64()),
        (Some(0), Some(floor)),
        "{v}"
    );
    let vacuumed = &v["vacuumed"];
    assert!(
        vacuumed["bytes_after"].as_u64().unwrap() < vacuumed["bytes_before"].as_u64().unwrap(),
        "{v}"
    );
    let s = b.ok(&["sync", "--json"]).json();
    assert!(s["pushed"].as_u64().unwrap() >= 2, "{s}");
    assert!(
        s["pulled_snapshots"].as_u64().unwrap() >= 4,
        "B started over from the snapshots: {s}"
    );
    assert!(s["cursor"].as_u64().unwrap() >= floor, "{s}");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(a.heads(), b.heads());
    let p = a.ok(&["patient", &first, "--json"]).json();
    assert_eq!(p["dossier"]["patient"]["address"], "佛山");
    assert_eq!(p["dossier"]["patient"]["sex"], "male");
    let p = a.ok(&["patient", &offline, "--json"]).json();
    assert_eq!(p["dossier"]["patient"]["name"], "张三");
    // From the floor on, B follows the log: A's next edit comes as a change.
    a.ok(&["update", "--patient", &first, "--age", "71"]);
    a.ok(&["sync"]);
    let s = b.ok(&["sync", "--json"]).json();
    assert_eq!(
        (s["pulled_changes"].as_u64(), s["pulled_snapshots"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
}
