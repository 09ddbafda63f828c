//! The server's audit log: device enrolment and revocation, merges and
//! headquarters' reads of personal details are recorded, by whom; the log
//! cannot be edited, and tokens appear nowhere in it.

use keqing_tests::{Office, Server};
use serde_json::Value;

fn audit(server: &Server) -> Vec<Value> {
    let r = Server::admin(&server.dir, &["audit", "--json"]);
    assert!(r.ok, "{}", r.stderr);
    r.json().as_array().expect("a list").clone()
}

fn actions(log: &[Value]) -> Vec<String> {
    log.iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_audit_log_records_who_did_what_and_cannot_be_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    let gd_token = server.add_device(Some("44"), "广东前台1");
    gd.ok(&["enroll", "--server", &server.url(), "--token", &gd_token]);
    gd.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    let call = |name: &str, new: bool| {
        let mut args = vec![
            "call",
            "--phone",
            "13800138000",
            "--name",
            name,
            "--age",
            "66",
            "--source",
            "电视",
            "--staff",
            "李敏",
            "--at",
            "2026-11-20T09:00",
        ];
        if new {
            args.push("--new");
        }
        gd.ok(&args).last_line().to_string()
    };
    let keep = call("王芳", false);
    let dup = call("王芳", true);
    gd.ok(&["merge", &keep, &dup]);
    gd.ok(&["sync"]);
    let hq = Office::new(tmp.path().join("hq"));
    let hq_token = server.add_device(None, "数据中心1");
    hq.ok(&["enroll", "--server", &server.url(), "--token", &hq_token]);
    hq.ok(&["sync"]);
    let revoked = Server::admin(&server.dir, &["device", "revoke", "广东前台1"]);
    assert!(revoked.ok, "{}", revoked.stderr);

    let log = audit(&server);
    let acts = actions(&log);
    for want in [
        "device.add",
        "device.enroll",
        "dossier.merge",
        "hq.pull",
        "device.revoke",
    ] {
        assert!(acts.iter().any(|a| a == want), "{want} in {acts:?}");
    }
    assert_eq!(acts.iter().filter(|a| *a == "device.add").count(), 2);
    let merge = log.iter().find(|e| e["action"] == "dossier.merge").unwrap();
    assert_eq!(
        merge["subject"],
        dup.as_str(),
        "the duplicate is the subject"
    );
    assert!(merge["detail"].as_str().unwrap().contains(&keep));
    assert!(merge["actor"].as_str().unwrap().contains("广东前台1"));
    let pull = log.iter().find(|e| e["action"] == "hq.pull").unwrap();
    assert!(pull["actor"].as_str().unwrap().contains("数据中心1"));
    // An office device's pulls are its own office's data: not audited as HQ reads.
    assert!(
        log.iter()
            .filter(|e| e["action"] == "hq.pull")
            .all(|e| !e["actor"].as_str().unwrap().contains("广东")),
    );
    assert!(
        log.iter().find(|e| e["action"] == "device.add").unwrap()["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        !text.contains(&gd_token) && !text.contains(&hq_token),
        "no token in the log"
    );

    // Append-only: the database itself refuses to change or delete a line.
    let db = rusqlite::Connection::open(server.dir.join("server.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    let update = db.execute("UPDATE audit SET actor = 'nobody'", []);
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = db.execute("DELETE FROM audit", []);
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    let after: i64 = db
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, after);

    // The table for people reads too.
    let table = Server::admin(&server.dir, &["audit"]);
    assert!(table.ok && table.stdout.contains("dossier.merge") && table.stdout.contains("操作者"));
}
