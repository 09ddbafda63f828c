//! Killing the `keqing` process (SIGKILL) in the middle of edits loses no
//! edit whose command had returned, and leaves a sound database.
//!
//! Each kill waits for its victim to open a write transaction (the
//! processes mark them in a file: `keqing_host::write_marker`) and the
//! summaries count the kills that cut one (`interrupted`); a process that
//! ended before the signal is not counted as killed.

use keqing_host::write_marker::WRITE_MARKER_ENV;
use keqing_tests::{KillTally, Office, keqing_bin, kill_in_write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigkill_during_edits_keeps_every_committed_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("o"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let mut committed = Vec::new();
    let mut tally = KillTally::default();
    let mut i = 0u32;
    let start = Instant::now();
    let markers = tmp.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    // Alternate: let some calls finish, kill one in its write.
    while tally.killed < 8 && start.elapsed() < Duration::from_secs(60) {
        i += 1;
        let phone = format!("1390000{i:04}");
        let marker = markers.join(i.to_string());
        let mut child = Command::new(keqing_bin())
            .env(WRITE_MARKER_ENV, &marker)
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
            tally.add(kill_in_write(&mut child, &marker, Duration::from_secs(5)));
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
    assert_eq!(tally.killed, 8, "{tally:?}");
    println!(
        "crash (edits): {} kills, interrupted {}, finished before the kill {}",
        tally.killed, tally.interrupted, tally.finished_first
    );
    tally.check_most_interrupted();
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

/// Starts `bin` with `args`, output discarded, marking its open writes in
/// `marker`.
fn spawn_quiet(bin: &Path, args: &[&str], marker: &Path) -> Child {
    Command::new(bin)
        .args(args)
        .env(WRITE_MARKER_ENV, marker)
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
    let markers = tmp.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let mut marker_n = 0u32;
    let mut next_marker = || {
        marker_n += 1;
        markers.join(marker_n.to_string())
    };
    let mut server_marker = next_marker();
    let mut server = Server::start_marked(&server_dir, "127.0.0.1:0", &server_marker);
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
    let mut kills = [
        KillTally::default(),
        KillTally::default(),
        KillTally::default(),
    ]; // client, server, projector
    let mut seed = 7u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let patience = Duration::from_secs(5);
    while kills.iter().map(|k| k.killed).sum::<u32>() < kills_wanted {
        // New work on both devices, so every sync has something to carry.
        add_callers(&a.dir, made, 20, "李娜");
        add_callers(&b.dir, made + 20, 10, "王强");
        made += 30;
        let victim = next(3);
        let (marker_a, marker_b) = (next_marker(), next_marker());
        let mut sync_a = spawn_quiet(&keqing_bin(), &["--data", &a_dir, "sync"], &marker_a);
        let mut sync_b = spawn_quiet(&keqing_bin(), &["--data", &b_dir, "sync"], &marker_b);
        // A varying moment, then the victim's next write. A client's sync
        // of this much takes milliseconds in a release build: its moment
        // comes from a shorter range, or every sync ends before it.
        let moment = if victim == 0 { next(15) } else { next(150) };
        std::thread::sleep(Duration::from_millis(moment));
        match victim {
            0 => {
                for (c, m) in [(&mut sync_a, &marker_a), (&mut sync_b, &marker_b)] {
                    kills[0].add(kill_in_write(c, m, patience));
                }
            }
            1 => {
                kills[1].add(kill_in_write(server.process(), &server_marker, patience));
                drop(server);
                for mut c in [sync_a, sync_b] {
                    let _ = c.wait();
                }
                server_marker = next_marker();
                server = Server::start_marked(&server_dir, &addr, &server_marker);
            }
            _ => {
                for mut c in [sync_a, sync_b] {
                    let _ = c.wait();
                }
                // The projector rebuilding, killed half-way (the server
                // keeps serving; its own projector competes too).
                let marker = next_marker();
                let mut p = spawn_quiet(
                    &server_bin(),
                    &["--data", &server_s, "project", "--rebuild"],
                    &marker,
                );
                std::thread::sleep(Duration::from_millis(next(100)));
                kills[2].add(kill_in_write(&mut p, &marker, patience));
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
    let total = KillTally {
        killed: kills.iter().map(|k| k.killed).sum(),
        interrupted: kills.iter().map(|k| k.interrupted).sum(),
        finished_first: kills.iter().map(|k| k.finished_first).sum(),
    };
    println!(
        "crash: {} kills (client {} during sync, server {} during ingest, projector {}), \
         interrupted {} (client {}, server {}, projector {}), finished before the kill {}, \
         {made} dossiers",
        total.killed,
        kills[0].killed,
        kills[1].killed,
        kills[2].killed,
        total.interrupted,
        kills[0].interrupted,
        kills[1].interrupted,
        kills[2].interrupted,
        total.finished_first,
    );
    total.check_most_interrupted();
}
