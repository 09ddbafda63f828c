//! Encryption at rest of an office replica (SQLCipher): nothing readable in
//! the files, no way in without the passphrase, a wrong one changes
//! nothing, a plain replica encrypted in place keeps every dossier, a
//! changed passphrase shuts the old one out, and an encrypted replica syncs
//! like any other.

use keqing_tests::{Office, Server};
use std::path::Path;

const KEY: &str = "正确的口令-2026";

fn call(o: &Office, phone: &str, name: &str) -> String {
    o.ok(&[
        "call",
        "--phone",
        phone,
        "--name",
        name,
        "--age",
        "63",
        "--disease",
        "冠心病",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-11-20T09:30",
    ])
    .last_line()
    .to_string()
}

/// Every file of the data directory (the replica, and any WAL or journal
/// beside it), read raw.
fn raw_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

fn holds(files: &[(String, Vec<u8>)], needle: &str) -> bool {
    files
        .iter()
        .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[test]
fn an_encrypted_replica_reveals_nothing_and_opens_only_with_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gd");
    let desk = Office::with_key(&dir, KEY);
    let init = desk.ok(&["init", "--office", "44", "--device", "前台1", "--encrypt"]);
    assert!(init.stdout.contains("已加密"), "{}", init.stdout);
    desk.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = call(&desk, "13800138000", "张三丰");
    call(&desk, "13900139000", "王秀英");

    // While a process holds the replica open its WAL is on disk too.
    let ui = desk.workstation();
    // Once it has the replica open, a call registered meanwhile stays in
    // the WAL (the workstation's connection keeps it from being folded in).
    let shm = dir.join("keqing.sqlite-shm");
    for _ in 0..100 {
        if shm.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    call(&desk, "13600136000", "李秀兰");
    let files = raw_files(&dir);
    drop(ui);
    let wal = files
        .iter()
        .find(|(name, _)| name.ends_with("-wal"))
        .expect("the WAL is on disk");
    assert!(!wal.1.is_empty(), "the new call is in the WAL");
    for secret in [
        "13600136000",
        "李秀兰",
        "13800138000",
        "张三丰",
        "王秀英",
        "冠心病",
        "SQLite format 3",
    ] {
        assert!(
            !holds(&files, secret),
            "`{secret}` is readable in the files"
        );
    }

    // No passphrase (and no terminal to ask at): a clear refusal.
    let bare = Office::new(&dir).run(&["due", "--date", "2026-11-21"]);
    assert!(!bare.ok);
    assert!(bare.stderr.contains("KEQING_DB_KEY"), "{}", bare.stderr);
    assert!(!bare.stderr.contains("ERROR CORE"), "{}", bare.stderr);

    // A wrong one: refused, and every document is as it was. (Its closing
    // connection may fold the WAL the workstation left into the file: those
    // pages move as ciphertext, unchanged.)
    let before = desk.heads();
    let wrong = Office::with_key(&dir, "错误的口令-2026").run(&[
        "call",
        "--phone",
        "13700137000",
        "--name",
        "赵六",
        "--source",
        "电视",
        "--staff",
        "李娜",
    ]);
    assert!(!wrong.ok);
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stderr.contains("ERROR CORE"), "{}", wrong.stderr);
    assert_eq!(desk.heads(), before);

    // Too short a passphrase is refused before anything is made.
    let short = Office::with_key(tmp.path().join("short"), "1234567");
    let r = short.run(&["init", "--office", "44", "--device", "前台2", "--encrypt"]);
    assert!(!r.ok && r.stderr.contains("at least 8"), "{}", r.stderr);
    assert!(!tmp.path().join("short").join("keqing.sqlite").exists());

    // The right one: everything is there.
    let status = desk.ok(&["status", "--json"]).json();
    assert_eq!(status["encrypted"], true);
    assert_eq!(status["dossiers"], 3);
    let shown = desk.ok(&["patient", &id]).stdout;
    assert!(shown.contains("张三丰"), "{shown}");
}

#[test]
fn a_plain_replica_encrypted_in_place_keeps_every_dossier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zj");
    let plain = Office::new(&dir);
    plain.ok(&["init", "--office", "33", "--device", "前台1"]);
    plain.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    for i in 0..5 {
        call(&plain, &format!("1360013600{i}"), &format!("钱{i}号"));
    }
    let before = plain.heads();
    let outbox = plain.ok(&["status", "--json"]).json()["outbox"].clone();
    assert!(holds(&raw_files(&dir), "13600136003"), "plain before");

    // While the workstation has it open, encrypting is refused and the
    // replica stays as it was.
    let ui = plain.workstation();
    let busy = Office::with_key(&dir, KEY).run(&["encrypt"]);
    assert!(
        !busy.ok && busy.stderr.contains("close it first"),
        "{}",
        busy.stderr
    );
    drop(ui);
    assert_eq!(plain.ok(&["status", "--json"]).json()["encrypted"], false);

    let locked = Office::with_key(&dir, KEY);
    let r = locked.ok(&["encrypt"]);
    assert!(r.stdout.contains("已加密 5 份档案"), "{}", r.stdout);
    let files = raw_files(&dir);
    assert_eq!(files.len(), 1, "only the replica is left: {files:?}");
    assert!(!holds(&files, "13600136003") && !holds(&files, "钱3号"));
    assert_eq!(locked.heads(), before, "every document as it was");
    let status = locked.ok(&["status", "--json"]).json();
    assert_eq!(status["encrypted"], true);
    assert_eq!(status["outbox"], outbox, "unsent changes are kept");
    assert!(
        !Office::new(&dir).run(&["status"]).ok,
        "the plain way in is gone"
    );
    let again = locked.run(&["encrypt"]);
    assert!(
        !again.ok && again.stderr.contains("already encrypted"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_changed_passphrase_opens_everything_and_the_old_one_nothing() {
    const NEW: &str = "新的口令-2026-冬";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hn");
    let old = Office::with_key(&dir, KEY);
    old.ok(&["init", "--office", "43", "--device", "前台1", "--encrypt"]);
    old.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    for i in 0..4 {
        call(&old, &format!("1370013700{i}"), &format!("孙{i}号"));
    }
    let before = old.heads();
    let outbox = old.ok(&["status", "--json"]).json()["outbox"].clone();
    let old_bytes = std::fs::read(dir.join("keqing.sqlite")).unwrap();

    // Refusals change nothing: a plain replica has no passphrase to change,
    // a wrong current one opens nothing, the same one again is no change,
    // a short new one is no passphrase, and an open workstation holds the
    // file.
    let plain = Office::new(tmp.path().join("plain"));
    plain.ok(&["init", "--office", "43", "--device", "前台2"]);
    let r = plain.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", NEW)]);
    assert!(!r.ok && r.stderr.contains("not encrypted"), "{}", r.stderr);
    let none = Office::with_key(tmp.path().join("none"), KEY);
    let r = none.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", NEW)]);
    assert!(
        !r.ok && r.stderr.contains("not an initialised"),
        "{}",
        r.stderr
    );
    let r = Office::with_key(&dir, "错误的口令-2026")
        .run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", NEW)]);
    assert!(
        !r.ok && r.stderr.contains("wrong passphrase"),
        "{}",
        r.stderr
    );
    let r = old.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", KEY)]);
    assert!(
        !r.ok && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    let r = old.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", "short")]);
    assert!(!r.ok && r.stderr.contains("at least 8"), "{}", r.stderr);
    let r = old.run(&["rekey"]);
    assert!(
        !r.ok && r.stderr.contains("KEQING_NEW_DB_KEY"),
        "no new passphrase and no terminal: {}",
        r.stderr
    );
    let ui = old.workstation();
    let r = old.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", NEW)]);
    assert!(!r.ok && r.stderr.contains("close it first"), "{}", r.stderr);
    drop(ui);
    assert_eq!(old.heads(), before, "refused rekeys changed nothing");

    let r = old.run_with_env(&["rekey"], &[("KEQING_NEW_DB_KEY", NEW)]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("已更换密钥 4 份档案"), "{}", r.stdout);

    // The new passphrase opens every document and the unsent changes; the
    // old one opens nothing, and the file is a new one (new salt, no page
    // in common with the old file).
    let new = Office::with_key(&dir, NEW);
    assert_eq!(new.heads(), before);
    let status = new.ok(&["status", "--json"]).json();
    assert_eq!(status["encrypted"], true);
    assert_eq!(status["outbox"], outbox, "unsent changes are kept");
    let shut = old.run(&["status"]);
    assert!(
        !shut.ok && shut.stderr.contains("wrong passphrase"),
        "{}",
        shut.stderr
    );
    let files = raw_files(&dir);
    assert_eq!(files.len(), 1, "only the replica is left: {files:?}");
    let new_bytes = &files[0].1;
    assert_ne!(new_bytes[..16], old_bytes[..16], "a new salt");
    let pages_in_common = old_bytes
        .chunks(4096)
        .filter(|p| new_bytes.chunks(4096).any(|q| q == *p))
        .count();
    assert_eq!(pages_in_common, 0);
    assert!(!holds(&files, "13700137002") && !holds(&files, "孙2号"));
    // And work goes on under the new one.
    call(&new, "13700137009", "孙9号");
    assert_eq!(new.ok(&["status", "--json"]).json()["dossiers"], 5);
}

#[test]
fn an_encrypted_replica_syncs_like_any_other() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let first = Office::with_key(tmp.path().join("first"), KEY);
    let token = server.add_device(Some("44"), "前台1");
    first.ok(&[
        "enroll",
        "--server",
        &server.url(),
        "--token",
        &token,
        "--encrypt",
    ]);
    assert_eq!(first.ok(&["status", "--json"]).json()["encrypted"], true);
    first.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = call(&first, "13800138000", "张三丰");
    first.ok(&["sync"]);

    // A second device of the office, plain, gets the same dossier; and the
    // encrypted one gets what the plain one adds.
    let second = Office::new(tmp.path().join("second"));
    second.enroll_on(&server, Some("44"), "前台2");
    second.ok(&["sync"]);
    second.ok(&[
        "followup",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--outcome",
        "按时服药",
        "--at",
        "2026-11-21T10:00",
    ]);
    second.ok(&["sync"]);
    first.ok(&["sync"]);
    assert_eq!(first.heads(), second.heads());
    assert!(!holds(&raw_files(&first.dir), "13800138000"));
}
