//! A patient's life in the system: retention at the offices. A device that
//! keeps only recent dossiers drops the older ones (the server keeps them),
//! refuses to register such a patient again, fetches the dossier back when
//! the patient calls (online) or says it is at the server (offline), and
//! takes one back whole when another device changes it.

use keqing_tests::{Office, Server};

fn call(o: &Office, phone: &str, name: &str, at: &str) -> String {
    o.ok(&[
        "call", "--phone", phone, "--name", name, "--source", "电视", "--staff", "李娜", "--at", at,
    ])
    .last_line()
    .to_string()
}

fn calls_in(o: &Office, patient: &str) -> usize {
    o.ok(&["patient", patient, "--json"]).json()["dossier"]["calls"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn retention_drops_old_dossiers_here_and_brings_them_back_when_the_patient_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("44"), "广东前台1");
    b.enroll_on(&server, Some("44"), "广东前台2");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    // Three patients last seen years ago, one this month.
    let old1 = call(&a, "13800000001", "老王", "2023-06-01T10:00");
    let old2 = call(&a, "13800000002", "老李", "2023-06-02T10:00");
    let old3 = call(&a, "13800000003", "老赵", "2023-06-03T10:00");
    let old4 = call(&a, "13800000005", "老孙", "2023-06-04T10:00");
    let recent_at = (chrono::Utc::now() - chrono::Duration::days(3))
        .format("%Y-%m-%dT10:00")
        .to_string();
    let recent = call(&a, "13800000004", "小张", &recent_at);
    // Not before the server has them: retention needs a device that syncs,
    // and it never drops what is still to be sent.
    let unsent = a.ok(&["retention", "set", "--years", "2"]);
    assert!(unsent.stdout.contains("移出 0 份"), "{}", unsent.stdout);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    let r = a.ok(&["sync"]);
    assert!(r.stdout.contains("同步完成"), "{}", r.stdout);
    let shown = a.ok(&["retention", "show", "--json"]).json();
    assert_eq!(shown["years"], 2);
    assert_eq!(shown["dropped"], 4, "the sync round applied it: {shown}");
    let status = a.ok(&["status", "--json"]).json();
    assert_eq!(
        (
            &status["retention_years"],
            &status["dropped_by_retention"],
            &status["dossiers"]
        ),
        (&2.into(), &4.into(), &1.into()),
        "{status}"
    );
    for gone in [&old1, &old2, &old3, &old4] {
        assert!(!a.run(&["patient", gone]).ok, "{gone} is no longer here");
    }
    assert_eq!(calls_in(&a, &recent), 1);
    assert_eq!(calls_in(&b, &old1), 1, "another device keeps its own");

    // The old patient calls again: not registered as a new patient...
    let again = a.run(&[
        "call",
        "--phone",
        "13800000001",
        "--name",
        "老王",
        "--source",
        "电视",
        "--staff",
        "李娜",
    ]);
    assert!(
        !again.ok && again.stderr.contains("keqing lookup --phone 13800000001"),
        "{}",
        again.stderr
    );
    // ...but looked up, fetched back whole from the server, and then found.
    let found = a.ok(&["lookup", "--phone", "13800000001", "--json"]).json();
    assert_eq!(found[0]["dossier_id"], old1.as_str(), "{found}");
    assert_eq!(calls_in(&a, &old1), 1);
    let now_call = call(&a, "13800000001", "老王", &recent_at);
    assert_eq!(now_call, old1, "the call joins the dossier fetched back");
    assert_eq!(calls_in(&a, &old1), 2);

    // Another device adds to a dossier dropped here: the next sync takes it
    // back whole (active again, so retention keeps it).
    b.ok(&[
        "call",
        "--patient",
        &old2,
        "--phone",
        "13800000002",
        "--name",
        "老李",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        &recent_at,
    ]);
    b.ok(&["sync"]);
    let s = a.ok(&["sync", "--json"]).json();
    assert_eq!(s["fetched_back"], 1, "{s}");
    assert_eq!(calls_in(&a, &old2), 2);
    assert_eq!(a.ok(&["retention", "show", "--json"]).json()["dropped"], 2);

    // The workstation's live lookup of the number typed on the register
    // form fetches it back too.
    let lookup = |ui: &keqing_tests::WebProcess, phone: &str| {
        keqing_tests::http::http(&ui.addr, "GET", &format!("/lookup?phone={phone}"), &[], b"")
            .text()
    };
    let ui = a.workstation();
    let page = lookup(&ui, "13800000003");
    assert!(page.contains("已有档案") && page.contains(&old3), "{page}");
    assert_eq!(calls_in(&a, &old3), 1);

    // Offline: the lookups say the dossier is at the server.
    server.kill();
    let page = lookup(&ui, "13800000005");
    assert!(page.contains("档案在服务器上"), "{page}");
    drop(ui);
    let r = a.ok(&["lookup", "--phone", "13800000005"]);
    assert!(r.stdout.contains("档案在服务器上"), "{}", r.stdout);
    assert!(!a.run(&["patient", &old4]).ok);
    // Off again: nothing more is dropped.
    a.ok(&["retention", "off"]);
    assert!(a.ok(&["retention", "show", "--json"]).json()["years"].is_null());
}
