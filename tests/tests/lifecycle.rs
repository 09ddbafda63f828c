//! A patient's life in the system: retention at the offices. A device that
//! keeps only recent dossiers drops the older ones (the server keeps them),
//! refuses to register such a patient again, fetches the dossier back when
//! the patient calls (online) or says it is at the server (offline), and
//! takes one back whole when another device changes it.

use keqing_tests::{Office, Server};

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
    let old1 = a.call("13800000001", "老王", "李娜", "2023-06-01T10:00");
    let old2 = a.call("13800000002", "老李", "李娜", "2023-06-02T10:00");
    let old3 = a.call("13800000003", "老赵", "李娜", "2023-06-03T10:00");
    let old4 = a.call("13800000005", "老孙", "李娜", "2023-06-04T10:00");
    let recent_at = (chrono::Utc::now() - chrono::Duration::days(3))
        .format("%Y-%m-%dT10:00")
        .to_string();
    let recent = a.call("13800000004", "小张", "李娜", &recent_at);
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
    let now_call = a.call("13800000001", "老王", "李娜", &recent_at);
    assert_eq!(now_call, old1, "the call joins the dossier fetched back");
    assert_eq!(calls_in(&a, &old1), 2);

    // Another device adds to a dossier dropped here: the next sync takes it
    // back whole (active again, so retention keeps it).
    b.call_into(&old2, ("13800000002", "老李"), "李娜", Some(&recent_at));
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

/// Today in China Standard Time (what the devices and the server go by),
/// and a time on a day `days` before it.
fn cst_day(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8) - chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

fn office_calls(server_dir: &std::path::Path, office: &str, from: &str, to: &str) -> u64 {
    Server::reported_calls(server_dir, &["office", "--province", office], from, to)
}

#[test]
fn a_transfer_moves_the_dossier_and_loses_nothing_typed_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd1 = Office::new(tmp.path().join("gd1"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    let bj = Office::new(tmp.path().join("bj"));
    gd1.enroll_on(&server, Some("44"), "广东前台1");
    gd2.enroll_on(&server, Some("44"), "广东前台2");
    bj.enroll_on(&server, Some("11"), "北京前台");
    gd1.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    bj.ok(&["staff", "add", "--name", "赵敏", "--role", "consultant"]);
    let (first_day, yesterday, today) = (cst_day(10), cst_day(1), cst_day(0));
    let p = gd1.call(
        "13900000001",
        "王秀兰",
        "李娜",
        &format!("{first_day}T10:00"),
    );
    let stays = gd1.call(
        "13900000002",
        "陈桂英",
        "李娜",
        &format!("{first_day}T11:00"),
    );
    gd1.ok(&["sync"]);
    gd2.ok(&["sync"]);
    bj.ok(&["sync"]);
    // The second device works offline: a call typed before the transfer...
    gd2.call_into(
        &p,
        ("13900000001", "王秀兰"),
        "李娜",
        Some(&format!("{yesterday}T09:00")),
    );

    // Headquarters moves the patient to Beijing.
    let transfer = |dossier: &str, to: &str, reason: &str| {
        Server::admin(
            &server.dir,
            &[
                "transfer",
                "--dossier",
                dossier,
                "--to",
                to,
                "--reason",
                reason,
                "--json",
            ],
        )
    };
    let bad = transfer(&p, "44", "搬家");
    assert!(bad.stderr.contains("已在该咨询处"), "{}", bad.stderr);
    let none = transfer("no-such", "11", "搬家");
    assert!(none.stderr.contains("找不到档案"), "{}", none.stderr);
    assert!(!bad.ok && !none.ok);
    let t = transfer(&p, "北京", "患者随子女迁居北京");
    assert!(t.ok, "{}", t.stderr);
    assert_eq!(
        (&t.json()["from"], &t.json()["to"]),
        (&"44".into(), &"11".into())
    );

    // ...and one typed after it, still not knowing: the first is delivered,
    // the second (a record after the transfer) is Beijing's to make.
    gd2.call_into(&p, ("13900000001", "王秀兰"), "李娜", None);

    // Beijing receives the whole dossier and works on it.
    let s = bj.ok(&["sync", "--json"]).json();
    assert_eq!(s["transferred_in"], 1, "{s}");
    assert_eq!(calls_in(&bj, &p), 1);
    bj.call_into(&p, ("13900000001", "王秀兰"), "赵敏", None);
    bj.ok(&["sync"]);

    // The first Guangdong device drops it; the patient calling there is
    // told where the dossier went instead of being registered again.
    let s = gd1.ok(&["sync", "--json"]).json();
    assert_eq!(s["transferred_out"], 1, "{s}");
    assert!(!gd1.run(&["patient", &p]).ok);
    assert_eq!(
        calls_in(&gd1, &stays),
        1,
        "the office's other patients stay"
    );
    let found = gd1
        .ok(&["lookup", "--phone", "13900000001", "--json"])
        .json();
    assert_eq!(found["transferred_to"], "11", "{found}");
    let again = gd1.run(&[
        "call",
        "--phone",
        "13900000001",
        "--name",
        "王秀兰",
        "--source",
        "电视",
        "--staff",
        "李娜",
    ]);
    assert!(
        !again.ok && again.stderr.contains("北京"),
        "{}",
        again.stderr
    );
    // So does the register form's live lookup at the workstation.
    let ui = gd1.workstation();
    let page =
        keqing_tests::http::http(&ui.addr, "GET", "/lookup?phone=13900000001", &[], b"").text();
    assert!(page.contains("已转档到 北京"), "{page}");
    drop(ui);

    // The offline device: what it typed before the transfer reaches the
    // server, the later record is set aside with the reason, the dossier
    // leaves the device.
    let s = gd2.ok(&["sync", "--json"]).json();
    assert_eq!((&s["pushed"], &s["refused"]), (&1.into(), &1.into()), "{s}");
    assert_eq!(s["transferred_out"], 1, "{s}");
    assert!(!gd2.run(&["patient", &p]).ok);
    let q = gd2.ok(&["quarantine", "list", "--json"]).json();
    assert!(q.to_string().contains("档案已转出"), "{q}");
    bj.ok(&["sync"]);
    assert_eq!(
        calls_in(&bj, &p),
        3,
        "the first call, Guangdong's late one, Beijing's"
    );

    // Reports count each call where it happened.
    assert_eq!(office_calls(&server.dir, "44", &first_day, &today), 3);
    assert_eq!(office_calls(&server.dir, "11", &first_day, &today), 1);

    // Audited: who, when, why.
    let audit = Server::admin(&server.dir, &["audit", "--json"]);
    let line = audit
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["action"] == "dossier.transfer")
        .cloned()
        .expect("a transfer line");
    assert_eq!(line["subject"], p.as_str());
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("患者随子女迁居北京"),
        "{line}"
    );
}

/// Patients in the office's lists by category (客户分类), all categories.
fn patients_listed(o: &Office) -> u64 {
    let counts = o.ok(&["list", "--json"]).json();
    ["未到堂", "到堂未购", "已购", "复购", "流失", "停访"]
        .iter()
        .map(|k| {
            counts[*k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} in {counts}"))
        })
        .sum()
}

/// Whether any file in `dir` (recursively: main files, WAL, shared
/// memory) holds `needle`'s bytes.
fn any_file_holds(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(entry);
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_erasure_reaches_every_copy_and_leaves_no_trace_in_any_file() {
    const PHONE: &str = "13912345678";
    const NAME: &str = "欧阳娜娜";
    const DUP_PHONE: &str = "13987654321";
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    let hq = Office::new(tmp.path().join("hq"));
    a.enroll_on(&server, Some("44"), "广东前台1");
    b.enroll_on(&server, Some("44"), "广东前台2");
    hq.enroll_on(&server, None, "总部");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let (first_day, today) = (cst_day(5), cst_day(0));
    let p = a.call(PHONE, NAME, "李娜", &format!("{first_day}T10:00"));
    let q = a.call(
        "13900000009",
        "陈桂英",
        "李娜",
        &format!("{first_day}T11:00"),
    );
    // She was registered twice (another number), and headquarters merged
    // the duplicate into her dossier: erasing her takes it too.
    let dup = a
        .ok(&[
            "call",
            "--phone",
            DUP_PHONE,
            "--name",
            NAME,
            "--source",
            "电视",
            "--staff",
            "李娜",
            "--at",
            &format!("{first_day}T12:00"),
            "--new",
        ])
        .last_line()
        .to_string();
    a.ok(&["sync"]);
    hq.ok(&["sync"]);
    hq.ok(&["merge", &p, &dup]);
    for o in [&hq, &a, &b] {
        o.ok(&["sync"]);
    }
    // The scan finds the patient where she is (so its silence later means
    // something).
    for dir in [&server.dir, &a.dir, &b.dir, &hq.dir] {
        assert!(
            !any_file_holds(dir, PHONE).is_empty(),
            "{} should hold the phone before",
            dir.display()
        );
    }
    let calls_before = office_calls(&server.dir, "44", &first_day, &today);
    assert_eq!(calls_before, 3);
    assert_eq!(patients_listed(&a), 2);
    let backup = tmp.path().join("before.sqlite");
    let r = Server::admin(&server.dir, &["backup", "--out", backup.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    // The second device is offline and adds to her dossier.
    b.call_into(&p, (PHONE, NAME), "李娜", None);

    // Step two without step one is refused; step one shows her masked.
    let early = Server::admin(&server.dir, &["erase", "--dossier", &q, "--confirm"]);
    assert!(
        !early.ok && early.stderr.contains("还没有删除申请"),
        "{}",
        early.stderr
    );
    let asked = Server::admin(
        &server.dir,
        &["erase", "--dossier", &p, "--reason", "患者本人申请删除"],
    );
    assert!(asked.ok, "{}", asked.stderr);
    assert!(
        asked.stdout.contains("欧***") && asked.stdout.contains("*******5678"),
        "{}",
        asked.stdout
    );
    assert!(!asked.stdout.contains(NAME) && !asked.stdout.contains(PHONE));
    assert!(
        asked.stdout.contains(&dup),
        "its duplicate is named: {}",
        asked.stdout
    );
    let only_dup = Server::admin(
        &server.dir,
        &["erase", "--dossier", &dup, "--reason", "患者本人申请删除"],
    );
    assert!(
        !only_dup.ok && only_dup.stderr.contains("档案已合并"),
        "{}",
        only_dup.stderr
    );
    let done = Server::admin(
        &server.dir,
        &["erase", "--dossier", &p, "--confirm", "--json"],
    );
    assert!(done.ok, "{}", done.stderr);
    assert_eq!(done.json()["scrubbed"], true, "{}", done.stdout);
    assert_eq!(
        done.json()["duplicates"][0],
        dup.as_str(),
        "{}",
        done.stdout
    );
    let again = Server::admin(&server.dir, &["erase", "--dossier", &p, "--confirm"]);
    assert!(!again.ok, "once is all");

    // Reports keep the figures of the days reported, without her, even
    // after the report tables are derived again from the log.
    assert_eq!(
        office_calls(&server.dir, "44", &first_day, &today),
        calls_before
    );
    let r = Server::admin(&server.dir, &["project", "--rebuild"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        office_calls(&server.dir, "44", &first_day, &today),
        calls_before
    );

    // Every device drops her as it syncs; the offline one's change to her
    // is refused (gone) and dropped with her.
    for o in [&a, &hq] {
        let s = o.ok(&["sync", "--json"]).json();
        assert_eq!(s["erased"], 2, "her dossier and its duplicate: {s}");
        assert!(!o.run(&["patient", &p]).ok);
    }
    let s = b.ok(&["sync", "--json"]).json();
    assert_eq!((&s["refused"], &s["erased"]), (&1.into(), &2.into()), "{s}");
    let status = b.ok(&["status", "--json"]).json();
    assert_eq!(status["outbox"], 0, "{status}");
    let q_list = b.ok(&["quarantine", "list", "--json"]).json();
    assert!(!q_list.to_string().contains(&p), "{q_list}");
    assert_eq!(calls_in(&a, &q), 1, "the other patient stays");
    // Her stand-in in the reports is on no list of patients.
    assert_eq!(patients_listed(&a), 1);
    let stopped = a.ok(&["list", "--category", "停访", "--json"]).stdout;
    assert!(!stopped.contains("已删除"), "{stopped}");
    // The office's own report of those days keeps the count too.
    let local = a
        .ok(&[
            "report", "daily", "--from", &first_day, "--to", &today, "--json",
        ])
        .json();
    assert_eq!(local["total"]["calls"], 3, "{local}");

    // No file of the server or of any device holds her phone or her name.
    for dir in [&server.dir, &a.dir, &b.dir, &hq.dir] {
        for needle in [PHONE, DUP_PHONE, NAME] {
            let found = any_file_holds(dir, needle);
            assert!(found.is_empty(), "{needle} still in {found:?}");
        }
    }
    // The audit keeps that it happened and why, not what.
    let audit = Server::admin(&server.dir, &["audit", "--json"]).stdout;
    assert!(audit.contains("dossier.erase") && audit.contains("患者本人申请删除"));
    assert!(!audit.contains(NAME) && !audit.contains(PHONE));
    let tombs = Server::admin(&server.dir, &["erasures", "--json"]).json();
    assert_eq!(tombs["erased"][0]["doc_id"], p.as_str(), "{tombs}");

    // The backup made before still holds her: a restore without the ledger
    // brings her back, one with it takes her out again.
    let plain = tmp.path().join("restored-plain");
    let r = Server::admin(&plain, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(r.ok && r.stderr.contains("--erasures"), "{}", r.stderr);
    assert!(!any_file_holds(&plain, PHONE).is_empty());
    let restored = tmp.path().join("restored");
    let ledger = server.dir.join("erasures.jsonl");
    let r = Server::admin(
        &restored,
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--erasures",
            ledger.to_str().unwrap(),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("2 of the ledger's 2"), "{}", r.stdout);
    for needle in [PHONE, DUP_PHONE, NAME] {
        let found = any_file_holds(&restored, needle);
        assert!(found.is_empty(), "{needle} still in {found:?}");
    }
    assert_eq!(
        office_calls(&restored, "44", &first_day, &today),
        calls_before
    );
}

/// An erasure's scrub at a device meets the replica's own background
/// checkpointer now and then (SQLite answers a second checkpoint busy at
/// once), in a process that stays open (the workstation syncs in the
/// background). Before, the scrub said nothing and left the WAL holding the
/// erased dossier's pages. Now it waits the checkpoint out; held past the
/// busy timeout, the sync says so and the scrub stays owed to the next
/// sync, whose notices no longer name the dossier.
#[cfg(target_os = "linux")]
#[test]
fn an_erasures_scrub_at_a_device_waits_out_a_checkpoint_and_is_owed_to_the_next_sync() {
    use keqing_office::sync::{Quiet, sync_once};
    use keqing_office::{ClientError, desk::Desk, store::DB_FILE};
    const PHONE: &str = "13911112222";
    const NAME: &str = "司马青青";
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    a.enroll_on(&server, Some("44"), "广东前台1");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let p = a.call(PHONE, NAME, "李娜", "2026-11-02T09:00");
    a.call("13900000042", "张伟", "李娜", "2026-11-02T10:00");
    a.ok(&["sync"]);
    for step in [&["--reason", "患者本人申请删除"][..], &["--confirm"]] {
        let r = Server::admin(
            &server.dir,
            &[&["erase", "--dossier", &p][..], step].concat(),
        );
        assert!(r.ok, "{}", r.stderr);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut desk = Desk::open(&a.dir).unwrap();
    let shm = a.dir.join(format!("{DB_FILE}-shm"));
    let hold = || keqing_host::wal::testing::hold_checkpoint_lock(&shm).unwrap();
    let held = hold();
    let refused = rt.block_on(sync_once(desk.replica_mut(), &mut Quiet));
    assert!(
        matches!(refused, Err(ClientError::ScrubUnfinished)),
        "{refused:?}"
    );
    assert!(desk.replica().is_erased(&p).unwrap());
    assert!(desk.replica().scrub_owed().unwrap(), "still owed");
    drop(held);

    let held = hold();
    let released = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(held);
    });
    let done = rt
        .block_on(sync_once(desk.replica_mut(), &mut Quiet))
        .expect("the scrub waits the checkpoint out");
    released.join().unwrap();
    assert_eq!(done.erased, 0, "erased by the sync before");
    assert!(!desk.replica().scrub_owed().unwrap());
    for needle in [PHONE, NAME] {
        let found = any_file_holds(&a.dir, needle);
        assert!(found.is_empty(), "{needle} still in {found:?}");
    }
    assert!(
        !any_file_holds(&a.dir, "张伟").is_empty(),
        "the other patient stays"
    );
}

#[test]
fn the_dashboard_transfers_and_erases_for_administrators_only() {
    use keqing_tests::http::{FORM, csrf_of, form, http};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    gd.enroll_on(&server, Some("44"), "广东前台1");
    gd.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let day = cst_day(2);
    let moving = gd.call("13900000011", "张桂兰", "李娜", &format!("{day}T10:00"));
    let leaving = gd.call("13900000012", "刘淑珍", "李娜", &format!("{day}T11:00"));
    gd.ok(&["sync"]);
    let dash = server.dashboard();
    Server::add_user_in(&server.dir, "钱分析", "analyst", "总部-2026-看板");
    let (status, _) =
        crate::web_guards::dashboard_get(&dash.addr, "钱分析", "总部-2026-看板", "/lifecycle");
    assert_eq!(status, 403, "an analyst does not transfer or erase");
    Server::add_user_in(&server.dir, "周主任", "admin", "总部-2026-看板");
    let session = crate::web_guards::dashboard_sign_in(&dash.addr, "周主任", "总部-2026-看板");
    let cookie = session.split(';').next().unwrap().to_string();
    let page = http(&dash.addr, "GET", "/lifecycle", &[("Cookie", &cookie)], b"").text();
    assert!(
        page.contains("transfer-form") && page.contains("erase-form"),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let post = |path: &str, fields: &[(&str, &str)]| {
        http(
            &dash.addr,
            "POST",
            path,
            &[FORM, ("Cookie", &cookie)],
            &form(fields),
        )
    };
    let stale = post(
        "/transfer",
        &[("dossier", &moving), ("to", "11"), ("reason", "迁居")],
    );
    assert_eq!(stale.status, 403, "no form token, nothing done");
    let bad = post(
        "/transfer",
        &[
            ("csrf", &csrf),
            ("dossier", &moving),
            ("to", "99"),
            ("reason", "迁居"),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    let done = post(
        "/transfer",
        &[
            ("csrf", &csrf),
            ("dossier", &moving),
            ("to", "11"),
            ("reason", "随子女迁居北京"),
        ],
    );
    assert_eq!(done.status, 303, "{}", done.text());
    let audit = Server::admin(&server.dir, &["audit", "--json"]).stdout;
    assert!(
        audit.contains("dossier.transfer") && audit.contains("user:周主任"),
        "{audit}"
    );

    let preview = post(
        "/erase",
        &[
            ("csrf", &csrf),
            ("dossier", &leaving),
            ("reason", "患者本人申请删除"),
        ],
    );
    assert_eq!(preview.status, 200, "{}", preview.text());
    let shown = preview.text();
    assert!(
        shown.contains("刘**") && !shown.contains("刘淑珍"),
        "{shown}"
    );
    let erased = post("/erase/confirm", &[("csrf", &csrf), ("dossier", &leaving)]);
    assert_eq!(erased.status, 303, "{}", erased.text());
    let listed = http(&dash.addr, "GET", "/lifecycle", &[("Cookie", &cookie)], b"").text();
    assert!(listed.contains(&leaving), "{listed}");
    let s = gd.ok(&["sync", "--json"]).json();
    assert_eq!(
        (&s["erased"], &s["transferred_out"]),
        (&1.into(), &1.into()),
        "{s}"
    );
}
