//! Backup and restore of the server: an online backup taken while offices
//! sync, a server restored from it after losing its disk, and offices that
//! bring it back to everything they had — nothing acknowledged is lost.

use keqing_tests::{Office, Server};

fn call(o: &Office, phone: &str, name: &str, at: &str) -> String {
    o.ok(&[
        "call", "--phone", phone, "--name", name, "--source", "电视", "--staff", "周敏", "--at", at,
    ])
    .last_line()
    .to_string()
}

fn national_calls(server_dir: &std::path::Path) -> u64 {
    Server::reported_calls(server_dir, &["national"], "2026-11-20", "2026-11-22")
}

#[test]
fn a_server_restored_from_its_backup_gets_back_what_offices_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let addr = server.addr.clone();
    let zj1 = Office::new(tmp.path().join("zj1"));
    let zj2 = Office::new(tmp.path().join("zj2"));
    zj1.enroll_on(&server, Some("33"), "前台1");
    zj2.enroll_on(&server, Some("33"), "前台2");
    zj1.ok(&["staff", "add", "--name", "周敏", "--role", "consultant"]);
    call(&zj1, "13600136000", "钱八", "2026-11-20T09:00");
    call(&zj1, "13600136001", "孙九", "2026-11-20T10:00");
    zj1.ok(&["sync"]);
    zj2.ok(&["sync"]);

    // The nightly backup, taken while the server runs.
    let backup = tmp.path().join("nightly.sqlite");
    let b = Server::admin(&server.dir, &["backup", "--out", &backup.to_string_lossy()]);
    assert!(b.ok, "{}", b.stderr);
    assert!(b.stdout.contains("integrity ok"), "{}", b.stdout);
    let again = Server::admin(&server.dir, &["backup", "--out", &backup.to_string_lossy()]);
    assert!(!again.ok, "an existing backup is never overwritten");
    assert!(
        again.stderr.contains("the file exists") && !again.stderr.contains("exists: the file"),
        "said once: {}",
        again.stderr
    );

    // A day of work after the backup, acknowledged by the server.
    call(&zj1, "13600136002", "李十", "2026-11-21T09:00");
    zj2.ok(&["staff", "add", "--name", "吴芳", "--role", "followup"]);
    zj2.ok(&["sync"]);
    let first = call(&zj2, "13600136003", "王一", "2026-11-21T11:00");
    zj2.ok(&[
        "followup",
        "--patient",
        &first,
        "--staff",
        "吴芳",
        "--outcome",
        "好",
        "--at",
        "2026-11-22T09:00",
    ]);
    zj1.ok(&["sync"]);
    zj2.ok(&["sync"]);
    zj1.ok(&["sync"]);
    assert_eq!(national_calls(&server.dir), 4);

    // The server's disk dies; a new one is restored from the backup and
    // started at the same address.
    let old_dir = server.dir.clone();
    server.kill();
    std::fs::remove_dir_all(&old_dir).unwrap();
    let restored_dir = tmp.path().join("restored");
    let r = Server::admin(
        &restored_dir,
        &["restore", "--from", &backup.to_string_lossy()],
    );
    assert!(r.ok, "{}", r.stderr);
    let twice = Server::admin(
        &restored_dir,
        &["restore", "--from", &backup.to_string_lossy()],
    );
    assert!(!twice.ok, "a restore never overwrites a store");
    assert!(
        twice
            .stderr
            .contains("this data directory already holds a store; restore into a new one"),
        "{}",
        twice.stderr
    );
    assert_eq!(national_calls(&restored_dir), 2, "the backup's state");
    let restored = Server::start(&restored_dir, &addr);

    // Each device notices the new epoch, starts over from the restored
    // server and pushes again its own changes: nothing is lost.
    let s1 = zj1.ok(&["sync", "--json"]).json();
    assert!(s1["requeued"].as_u64().unwrap() > 0, "{s1}");
    let s2 = zj2.ok(&["sync", "--json"]).json();
    assert!(s2["requeued"].as_u64().unwrap() > 0, "{s2}");
    zj1.ok(&["sync"]);
    assert_eq!(national_calls(&restored.dir), 4, "every call is back");
    assert_eq!(zj1.heads(), zj2.heads(), "the devices converge");
    let p = zj1.ok(&["patient", &first, "--json"]).json();
    assert_eq!(p["dossier"]["followups"].as_array().unwrap().len(), 1);
    // A later sync finds nothing more to send.
    let s = zj1.ok(&["sync", "--json"]).json();
    assert_eq!(
        (s["requeued"].as_u64(), s["pushed"].as_u64()),
        (Some(0), Some(0))
    );
    let audit = Server::admin(&restored.dir, &["audit", "--json"]).json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "store.restore")
    );
}
