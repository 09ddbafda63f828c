//! Staff accounts in the office roster: a password set at one device (only
//! its Argon2id hash kept) signs its owner in at another device of the
//! office, offline, after a sync; a wrong password, an unknown name and a
//! member without a password are refused alike; a member marked 离岗 at one
//! device can no longer sign in at the other.

use keqing_office::ClientError;
use keqing_office::desk::Desk;
use keqing_tests::{Office, Server};

const PASSWORD: &str = "心脑通 2026-春";

#[test]
fn a_password_set_at_one_device_signs_in_at_another_until_the_member_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    a.enroll_on(&server, Some("44"), "前台1");
    b.enroll_on(&server, Some("44"), "前台2");

    // The supervisor with a password from the start; a consultant without.
    let r = a.run_with_stdin(
        &[
            "staff",
            "add",
            "--name",
            "李娜",
            "--role",
            "supervisor",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(r.ok, "{}", r.stderr);
    a.ok(&["staff", "add", "--name", "王芳", "--role", "consultant"]);
    let listed = a.ok(&["staff", "list", "--json"]).json();
    let has_password = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["password"].clone())
    };
    assert_eq!(has_password("李娜"), Some(true.into()), "{listed}");
    assert_eq!(has_password("王芳"), Some(false.into()), "{listed}");
    assert!(!listed.to_string().contains("argon2"), "no hash is listed");

    // Refused: a short password, an unknown member, no password given.
    for (args, input, why) in [
        (
            vec!["staff", "password", "--name", "王芳", "--password-stdin"],
            "short\n",
            "at least 8 characters",
        ),
        (
            vec!["staff", "password", "--name", "无名", "--password-stdin"],
            "long enough 123\n",
            "找不到员工 no staff member named `无名`",
        ),
        (
            vec!["staff", "password", "--name", "王芳", "--password-stdin"],
            "",
            "no password on standard input",
        ),
    ] {
        let r = a.run_with_stdin(&args, input);
        assert!(!r.ok && r.stderr.contains(why), "{why}: {}", r.stderr);
    }
    assert_eq!(
        a.ok(&["staff", "list", "--json"]).json(),
        listed,
        "nothing changed"
    );

    // Only the hash is kept: the password is in no file of the replica.
    for file in std::fs::read_dir(&a.dir).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password itself was stored"
        );
    }

    // At this device, and after a sync at the other, offline.
    let sign_in = |o: &Office, name: &str, password: &str| {
        Desk::open(&o.dir).unwrap().sign_in(name, password)
    };
    assert_eq!(sign_in(&a, "李娜", PASSWORD).unwrap().name, "李娜");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    drop(server);
    assert_eq!(sign_in(&b, "李娜", PASSWORD).unwrap().name, "李娜");
    // Refused alike: a wrong password, an unknown name, no password set.
    for (name, password) in [("李娜", "心脑通 2026-夏"), ("无名", PASSWORD), ("王芳", "")]
    {
        match sign_in(&b, name, password) {
            Err(e @ ClientError::SignInRefused) => {
                assert_eq!(e.to_string(), "姓名或密码不对 wrong name or password")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // A password changed at the second device replaces the first there.
    let r = b.run_with_stdin(
        &["staff", "password", "--name", "李娜", "--password-stdin"],
        "新的密码 2026-夏\r\n",
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        sign_in(&b, "李娜", "新的密码 2026-夏").is_ok(),
        "CRLF dropped"
    );
    assert!(sign_in(&b, "李娜", PASSWORD).is_err());

    // 离岗 at the first device: refused at the second once it has synced.
    let server = Server::start(tmp.path().join("server"), &server_addr(&a));
    a.ok(&["staff", "leave", "--name", "李娜"]);
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    match sign_in(&b, "李娜", "新的密码 2026-夏") {
        Err(e @ ClientError::AccountClosed(_)) => {
            assert!(e.to_string().contains("离岗"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    drop(server);
}

/// The address the replica syncs with (to restart its server there).
fn server_addr(o: &Office) -> String {
    let servers = o.ok(&["servers", "list", "--json"]).json();
    servers[0]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string()
}

/// The workstation of an office with accounts: every page wants a signed-in
/// person; a wrong password or an unknown name is refused alike; the session
/// cookie is HttpOnly and SameSite=Strict; the page says who is signed in;
/// signing out ends the session; a member marked 离岗 (here by the command
/// line) loses her session at her next request and cannot sign in again;
/// five failures from one client make it wait.
#[test]
fn the_workstation_signs_staff_in_and_out() {
    use keqing_tests::http::{FORM, csrf_of, form, http};
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("gd"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    for (name, role) in [
        ("李娜", "supervisor"),
        ("王芳", "consultant"),
        ("赵敏", "followup"),
    ] {
        office.add_staff_with_password(name, role, PASSWORD);
    }
    let patient = office.call("13800138000", "张三", "王芳", "2026-11-20T09:00");
    let followups = || {
        office.ok(&["patient", &patient, "--json"]).json()["dossier"]["followups"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let ui = office.workstation();
    let addr = ui.addr.as_str();

    let r = http(addr, "GET", "/", &[], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let page = http(addr, "GET", "/login", &[], b"");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.text());
    let login = |name: &str, password: &str| {
        http(
            addr,
            "POST",
            "/login",
            &[FORM],
            &form(&[("csrf", &csrf), ("name", name), ("password", password)]),
        )
    };
    for (name, password) in [("李娜", "心脑通 2026-夏"), ("无名", PASSWORD)] {
        let r = login(name, password);
        assert_eq!(r.status, 401, "{name}");
        assert!(r.text().contains("姓名或密码不对"), "{}", r.text());
        assert!(r.header("set-cookie").is_none(), "no session for {name}");
    }
    let session = |r: &keqing_tests::http::Response| {
        assert_eq!(r.status, 303, "{}", r.text());
        let set = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().unwrap().to_string()
    };
    let li_na = session(&login("李娜", PASSWORD));
    let home = http(addr, "GET", "/", &[("Cookie", &li_na)], b"");
    assert_eq!(home.status, 200);
    assert!(
        home.text().contains("id=\"signed-in\">李娜"),
        "who is signed in"
    );
    let out = http(
        addr,
        "POST",
        "/logout",
        &[FORM, ("Cookie", &li_na)],
        &form(&[("csrf", &csrf)]),
    );
    assert_eq!((out.status, out.header("location")), (303, Some("/login")));
    let after = http(addr, "GET", "/", &[("Cookie", &li_na)], b"");
    assert_eq!(after.status, 303, "signed out");

    // Roles: a 回访人员 follows up but is offered neither the register nor
    // the staff page, and is refused them (403, nothing saved); a 咨询人员
    // may not record a follow-up; the 主管 may do everything.
    let zhao_min = session(&login("赵敏", PASSWORD));
    let get = |cookie: &str, path: &str| http(addr, "GET", path, &[("Cookie", cookie)], b"");
    let post = |cookie: &str, path: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        http(addr, "POST", path, &[FORM, ("Cookie", cookie)], &form(&all))
    };
    let home = get(&zhao_min, "/").text();
    assert!(
        !home.contains("href=\"/staff\"") && !home.contains("href=\"/call\""),
        "not offered"
    );
    for path in ["/staff", "/call"] {
        let r = get(&zhao_min, path);
        assert_eq!(r.status, 403, "{path}");
        assert!(
            r.text().contains("你的岗位（回访人员）没有此职责"),
            "{}",
            r.text()
        );
    }
    let r = post(
        &zhao_min,
        "/staff",
        &[("name", "新人"), ("role", "consultant")],
    );
    assert_eq!(r.status, 403);
    let followup = [
        ("staff", "赵敏"),
        ("outcome", "服药正常"),
        ("kind", "电话回访"),
    ];
    let path = format!("/patient/{patient}/followup");
    let wang_fang = session(&login("王芳", PASSWORD));
    let r = post(&wang_fang, &path, &followup);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("没有此职责：回访"), "{}", r.text());
    assert_eq!(followups(), 0, "nothing saved");
    // Her own work is recorded as hers, whatever the form says.
    let as_someone_else = [
        ("staff", "李娜"),
        ("outcome", "服药正常"),
        ("kind", "电话回访"),
    ];
    let r = post(&zhao_min, &path, &as_someone_else);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(followups(), 1);
    let saved = office.ok(&["patient", &patient, "--json"]).json();
    assert_eq!(saved["dossier"]["followups"][0]["staff"], "赵敏", "{saved}");
    let page = get(&zhao_min, &format!("/patient/{patient}")).text();
    assert!(
        !page.contains("name=\"staff\" required") && page.contains("class=\"me\""),
        "no pick list of staff for her own work, her name instead"
    );
    // Her look at the dossier is in the device's audit of reads, by name;
    // a read at the command line by the OS account; the audit refuses edits.
    let reads = office.ok(&["reads", "--json"]).json();
    assert_eq!(
        (
            reads[0]["who"].clone(),
            reads[0]["action"].clone(),
            reads[0]["target"].clone()
        ),
        ("赵敏".into(), "dossier.open".into(), patient.clone().into()),
        "{reads}"
    );
    office.ok(&["patient", &patient]);
    let reads = office.ok(&["reads", "--json"]).json();
    assert!(
        reads[0]["who"].as_str().unwrap().contains("uid "),
        "the OS account: {reads}"
    );
    let db = rusqlite::Connection::open(office.dir.join("keqing.sqlite")).unwrap();
    let edit = db.execute("UPDATE reads SET who = '别人'", []).unwrap_err();
    assert!(edit.to_string().contains("append-only"), "{edit}");
    let gone = db.execute("DELETE FROM reads", []).unwrap_err();
    assert!(gone.to_string().contains("append-only"), "{gone}");
    drop(db);
    // Her dossier page offers her duties' forms only.
    assert!(page.contains(&format!("action=\"/patient/{patient}/followup\"")));
    for not_hers in ["visit", "purchase", "typical", "details", "delivery"] {
        assert!(
            !page.contains(&format!("action=\"/patient/{patient}/{not_hers}\"")),
            "{not_hers} offered to a 回访人员"
        );
    }
    assert!(!office.ok(&["staff", "list"]).stdout.contains("新人"));
    let li_na = session(&login("李娜", PASSWORD));
    assert_eq!(get(&li_na, "/staff").status, 200);
    assert!(get(&li_na, "/").text().contains("href=\"/staff\""));
    // The 主管 records a follow-up for 赵敏: credited to 赵敏, and the
    // dossier says 李娜 typed it in; 赵敏's own record says nothing more.
    let for_her = [
        ("staff", "赵敏"),
        ("outcome", "主管代录的回访"),
        ("kind", "电话回访"),
    ];
    let r = post(&li_na, &path, &for_her);
    assert_eq!(r.status, 303, "{}", r.text());
    let saved = office.ok(&["patient", &patient, "--json"]).json();
    let dossier = &saved["dossier"];
    let by_outcome = |outcome: &str| {
        dossier["followups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["outcome"] == outcome)
            .unwrap_or_else(|| panic!("{outcome}: {saved}"))
            .clone()
    };
    let entered = by_outcome("主管代录的回访");
    assert_eq!(entered["staff"], "赵敏");
    let id = entered["id"].as_str().unwrap();
    assert_eq!(dossier["entered_by"][id], "李娜", "{saved}");
    let own = by_outcome("服药正常");
    assert!(
        dossier["entered_by"]
            .get(own["id"].as_str().unwrap())
            .is_none(),
        "{saved}"
    );
    assert!(
        get(&li_na, &format!("/patient/{patient}"))
            .text()
            .contains("李娜 代录"),
        "the dossier page says who typed it in"
    );

    // 王芳 leaves while signed in: her next request goes to the sign-in
    // page, and she cannot sign in again.
    assert_eq!(
        http(addr, "GET", "/", &[("Cookie", &wang_fang)], b"").status,
        200
    );
    office.ok(&["staff", "leave", "--name", "王芳"]);
    let r = http(addr, "GET", "/", &[("Cookie", &wang_fang)], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let r = login("王芳", PASSWORD);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("离岗"), "{}", r.text());

    // Failures from this client (three so far, 王芳's counted): at five it
    // waits, even with the right password.
    assert_eq!(login("李娜", "心脑通 2026-夏").status, 401);
    // A name no account can have (100 000 characters) is refused like any.
    let r = login(&"名".repeat(100_000), PASSWORD);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("姓名或密码不对"));
    let r = login("李娜", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("尝试次数过多"), "{}", r.text());
}

/// Signs `name` in at the workstation at `addr`: the session cookie and the
/// page's form secret.
fn workstation_sign_in(addr: &str, name: &str, password: &str) -> String {
    use keqing_tests::http::{FORM, csrf_of, form, http};
    let page = http(addr, "GET", "/login", &[], b"");
    let r = http(
        addr,
        "POST",
        "/login",
        &[FORM],
        &form(&[
            ("csrf", &csrf_of(&page.text())),
            ("name", name),
            ("password", password),
        ]),
    );
    assert_eq!(r.status, 303, "{name}: {}", r.text());
    r.header("set-cookie")
        .expect("a session")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Every read of patient data (a dossier opened at the command line or the
/// workstation, a list shown, a report written to a file) reaches the
/// server's read audit at the next sync, under the device's enrolled
/// office and name, once however often it is sent; the office's other
/// devices fetch it, and the 主管 (only) sees the office's reads in the
/// workstation; headquarters' administrator sees them on the dashboard.
/// Forged reads are refused whole.
#[test]
fn reads_reach_the_server_and_the_offices_other_devices() {
    use keqing_shared::sync::{ReadEntry, ReadsExchange, SyncErrorKind};
    use keqing_tests::http::http;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    let b = Office::new(tmp.path().join("b"));
    let bj = Office::new(tmp.path().join("bj"));
    a.enroll_on(&server, Some("44"), "前台1");
    b.enroll_on(&server, Some("44"), "前台2");
    bj.enroll_on(&server, Some("11"), "北京前台1");
    for (name, role) in [("李娜", "supervisor"), ("赵敏", "followup")] {
        a.add_staff_with_password(name, role, PASSWORD);
    }
    let patient = a.call("13800138000", "张三", "李娜", "2026-11-20T09:00");
    a.ok(&["patient", &patient]);
    a.ok(&["list", "--category", "未到堂", "--date", "2026-11-20"]);
    let file = tmp.path().join("日报.csv");
    a.ok(&[
        "report",
        "daily",
        "--date",
        "2026-11-20",
        "--format",
        "csv",
        "--out",
        &file.to_string_lossy(),
    ]);
    bj.ok(&["staff", "add", "--name", "钱七", "--role", "consultant"]);
    let other = bj.call("13900139000", "李四", "钱七", "2026-11-20T09:00");
    bj.ok(&["patient", &other]);
    let synced = a.ok(&["sync", "--json"]).json();
    assert_eq!(synced["reads_sent"], 3, "{synced}");
    bj.ok(&["sync"]);
    let synced = b.ok(&["sync", "--json"]).json();
    assert_eq!(synced["office_reads"], 3, "a's reads came: {synced}");

    // At the other device, 李娜 opens the dossier in the workstation.
    let ui = b.workstation();
    let li_na = workstation_sign_in(&ui.addr, "李娜", PASSWORD);
    let page = http(
        &ui.addr,
        "GET",
        &format!("/patient/{patient}"),
        &[("Cookie", &li_na)],
        b"",
    );
    assert_eq!(page.status, 200);
    let synced = b.ok(&["sync", "--json"]).json();
    assert_eq!(synced["reads_sent"], 1, "{synced}");
    assert_eq!(
        synced["office_reads"], 0,
        "its own read is not fetched back"
    );
    // A sync with nothing new sends nothing again.
    let again = b.ok(&["sync", "--json"]).json();
    assert_eq!(again["reads_sent"], 0, "{again}");

    // The server's read audit, per office, under the enrolled names.
    let gd = Server::admin(&server.dir, &["reads", "--office", "44", "--json"]).json();
    let lines: Vec<(String, String, String)> = gd
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["device_name"].as_str().unwrap().to_string(),
                l["who"].as_str().unwrap().to_string(),
                l["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert_eq!(
        actions,
        ["dossier.open", "list.read", "report.export", "dossier.open"],
        "{gd}"
    );
    assert!(lines[..3].iter().all(|l| l.0 == "前台1"), "{gd}");
    assert_eq!(
        (lines[3].0.as_str(), lines[3].1.as_str()),
        ("前台2", "李娜")
    );
    assert!(gd.to_string().contains(&patient));
    assert!(!gd.to_string().contains(&other), "another office's read");
    let bj_lines = Server::admin(&server.dir, &["reads", "--office", "11", "--json"]).json();
    assert_eq!(bj_lines.as_array().unwrap().len(), 1, "{bj_lines}");

    // The first device fetches the second's read; its 主管 sees the
    // office's reads in the workstation, its 回访人员 does not.
    let synced = a.ok(&["sync", "--json"]).json();
    assert_eq!(synced["office_reads"], 1, "{synced}");
    let office_reads = a.ok(&["reads", "--json"]).json();
    assert!(
        office_reads
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["device"] == "前台2" && l["who"] == "李娜"),
        "{office_reads}"
    );
    assert!(!office_reads.to_string().contains("钱七"), "{office_reads}");
    drop(ui);
    let ui = a.workstation();
    let li_na = workstation_sign_in(&ui.addr, "李娜", PASSWORD);
    let audit = http(&ui.addr, "GET", "/audit", &[("Cookie", &li_na)], b"");
    assert_eq!(audit.status, 200);
    let text = audit.text();
    assert!(text.contains("前台2") && text.contains("打开档案") && text.contains("查看名单"));
    let zhao_min = workstation_sign_in(&ui.addr, "赵敏", PASSWORD);
    let refused = http(&ui.addr, "GET", "/audit", &[("Cookie", &zhao_min)], b"");
    assert_eq!(refused.status, 403);
    assert!(!refused.text().contains("前台2"));

    // Headquarters' administrator sees them on the dashboard.
    Server::add_user_in(&server.dir, "周主任", "admin", PASSWORD);
    let dash = server.dashboard();
    let (status, html) =
        crate::web_guards::dashboard_get(&dash.addr, "周主任", PASSWORD, "/reads?office=44");
    assert_eq!(status, 200);
    assert!(html.contains("李娜") && html.contains(&patient), "{html}");

    // A forged read refuses its whole exchange; so do too many at once.
    let token = server.add_device(Some("44"), "前台3");
    let stored = || {
        Server::admin(&server.dir, &["reads", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let before = stored();
    let read = |seq: u64, action: &str| ReadEntry {
        seq,
        device: String::new(),
        at: "2026-11-20T10:00:00".into(),
        who: "李娜".into(),
        action: action.into(),
        target: patient.clone(),
    };
    keqing_tests::runtime().block_on(async {
        let mut c = keqing_proto::SyncConnection::connect(
            &server.url(),
            &token,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        let forged = c
            .share_reads(ReadsExchange {
                reads: vec![read(1, "dossier.open"), read(2, "dossier.delete")],
                office_cursor: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(forged.kind, SyncErrorKind::InvalidArgument, "{forged}");
        assert!(forged.message.contains("read 1"), "{forged}");
        let flood = c
            .share_reads(ReadsExchange {
                reads: (1..=501).map(|n| read(n, "dossier.open")).collect(),
                office_cursor: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(flood.kind, SyncErrorKind::ResourceExhausted, "{flood}");
        // A right one is kept once, however often it comes.
        for _ in 0..2 {
            let answer = c
                .share_reads(ReadsExchange {
                    reads: vec![read(1, "dossier.open")],
                    office_cursor: 0,
                })
                .await
                .unwrap();
            assert_eq!(answer.stored_through, 1);
            assert_eq!(answer.office.len(), 4, "the office's other devices' reads");
        }
    });
    assert_eq!(stored(), before + 1, "nothing of the refused exchanges");
}
