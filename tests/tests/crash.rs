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
    let desk = keqing::desk::Desk::open(&office.dir).unwrap();
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
