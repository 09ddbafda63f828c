//! Killing the `keqing` process (SIGKILL) in the middle of edits loses no
//! edit whose command had returned, and leaves a sound database.

use keqing_tests::{Office, keqing_bin};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigkill_during_edits_keeps_every_committed_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("o"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let mut committed = Vec::new();
    let mut killed = 0;
    let mut i = 0u32;
    let start = Instant::now();
    // Alternate: let some calls finish, kill one at a varying moment.
    while killed < 8 && start.elapsed() < Duration::from_secs(60) {
        i += 1;
        let phone = format!("1390000{i:04}");
        let mut child = Command::new(keqing_bin())
            .arg("--data")
            .arg(&office.dir)
            .args([
                "call",
                "--phone",
                &phone,
                "--name",
                &format!("患者{i}"),
                "--source",
                "电视",
                "--staff",
                "李娜",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if i.is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(u64::from(i % 7) * 2));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            committed.push(phone);
        }
    }
    assert_eq!(killed, 8);
    let desk = keqing_office::desk::Desk::open(&office.dir).unwrap();
    assert_eq!(desk.replica().integrity_check().unwrap(), "ok");
    for phone in &committed {
        let r = office.ok(&["patient", phone, "--json"]).json();
        assert_eq!(
            r["dossier"]["calls"].as_array().unwrap().len(),
            1,
            "{phone}"
        );
    }
    // Whatever the killed ones left is whole: projections match the documents.
    let mut desk = desk;
    let dump = desk.replica().projection_dump().unwrap();
    desk.replica_mut().rebuild().unwrap();
    assert_eq!(desk.replica().projection_dump().unwrap(), dump);
}

/// Fills `dir`'s replica with `n` new callers (in process, quickly).
fn add_callers(dir: &std::path::Path, from: usize, n: usize, staff: &str) {
    let mut desk = keqing_office::desk::Desk::open(dir).unwrap();
    // Setting up work, not the subject of the test: no fsync per edit (the
    // process is not killed, so nothing of it can be lost).
    desk.replica().set_bulk_load(true).unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    for i in from..from + n {
        desk.register_call(&keqing_office::desk::CallInput {
            phone: format!("1370{:07}", i),
            name: format!("患者{i}"),
            source: "电视".into(),
            staff: staff.into(),
            at: day
                .and_hms_opt(9 + (i % 8) as u32, (i % 60) as u32, 0)
                .unwrap(),
            force_new: true,
            ..Default::default()
        })
        .unwrap();
    }
}

fn spawn_quiet(bin: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn integrity(db: &std::path::Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// SIGKILL the client while it pushes and applies, the server while it
/// ingests and projects, and `project --rebuild` half-way; restart each.
/// Afterwards every replica converges with the server (so no change the
/// server acknowledged was lost: a client forgets a change only after the
/// ack), every database passes `integrity_check`, and the projections equal
/// a rebuild. `KEQING_CRASH_KILLS` sets the number of kills (default 50).
#[test]
fn sigkill_of_client_and_server_during_sync_and_projection_loses_nothing() {
    use keqing_tests::{Server, server_bin};
    let kills_wanted: u32 = keqing_tests::env_number("KEQING_CRASH_KILLS", 50);
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let mut server = Server::start(&server_dir, "127.0.0.1:0");
    let addr = server.addr.clone();
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("44"), "前台1");
    b.enroll_on(&server, Some("44"), "前台2");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    b.ok(&["staff", "add", "--name", "王强", "--role", "consultant"]);
    let (a_dir, b_dir) = (
        a.dir.to_string_lossy().into_owned(),
        b.dir.to_string_lossy().into_owned(),
    );
    let server_s = server_dir.to_string_lossy().into_owned();
    let mut made = 0usize;
    let mut kills = [0u32; 3]; // client, server, projector
    let mut seed = 7u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    while kills.iter().sum::<u32>() < kills_wanted {
        // New work on both devices, so every sync has something to carry.
        add_callers(&a.dir, made, 20, "李娜");
        add_callers(&b.dir, made + 20, 10, "王强");
        made += 30;
        let victim = next(3);
        let sync_a = spawn_quiet(&keqing_bin(), &["--data", &a_dir, "sync"]);
        let sync_b = spawn_quiet(&keqing_bin(), &["--data", &b_dir, "sync"]);
        std::thread::sleep(Duration::from_millis(20 + next(250)));
        match victim {
            0 => {
                for mut c in [sync_a, sync_b] {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                kills[0] += 1;
            }
            1 => {
                server.kill();
                kills[1] += 1;
                for mut c in [sync_a, sync_b] {
                    let _ = c.wait();
                }
                server = Server::start(&server_dir, &addr);
            }
            _ => {
                for mut c in [sync_a, sync_b] {
                    let _ = c.wait();
                }
                // The projector rebuilding, killed half-way (the server
                // keeps serving; its own projector competes too).
                let mut p = spawn_quiet(
                    &server_bin(),
                    &["--data", &server_s, "project", "--rebuild"],
                );
                std::thread::sleep(Duration::from_millis(next(300)));
                let _ = p.kill();
                let _ = p.wait();
                kills[2] += 1;
            }
        }
    }
    // Everyone syncs: outboxes drain, and the feed brings each the other's work.
    for _ in 0..2 {
        a.ok(&["sync"]);
        b.ok(&["sync"]);
    }
    let hq = Office::new(tmp.path().join("hq"));
    hq.enroll_on(&server, None, "数据中心1");
    hq.ok(&["sync"]);
    let heads = |o: &Office| o.ok(&["heads", "--json"]).json();
    assert_eq!(heads(&a), heads(&b), "the two devices converge");
    assert_eq!(heads(&a), heads(&hq), "the server has every change");
    let status = a.ok(&["status", "--json"]).json();
    assert_eq!(status["outbox"], 0);
    assert_eq!(status["dossiers"].as_u64().unwrap() as usize, made);
    for db in [
        a.dir.join("keqing.sqlite"),
        b.dir.join("keqing.sqlite"),
        server_dir.join("server.sqlite"),
    ] {
        assert_eq!(integrity(&db), "ok", "{}", db.display());
    }
    // The projections, however often killed, equal a rebuild from the log.
    let report = |_: ()| {
        let r = Server::admin(
            &server_dir,
            &[
                "report",
                "national",
                "--from",
                "2026-11-20",
                "--to",
                "2026-11-20",
                "--json",
            ],
        );
        assert!(r.ok, "{}", r.stderr);
        r.json()
    };
    let incremental = report(());
    assert_eq!(
        incremental["total"]["calls"].as_u64().unwrap() as usize,
        made
    );
    let rebuilt = Server::admin(&server_dir, &["project", "--rebuild"]);
    assert!(rebuilt.ok, "{}", rebuilt.stderr);
    assert_eq!(report(()), incremental);
    println!(
        "crash: {} kills (client {} during sync, server {} during ingest, projector {}), {made} dossiers",
        kills.iter().sum::<u32>(),
        kills[0],
        kills[1],
        kills[2]
    );
}
