//! The web front ends refuse what they must, over plain HTTP against real
//! processes: forms without their secret, requests for another host name,
//! bad dates and numbers, unknown dossiers, oversized bodies; the dashboard
//! lets only headquarters' people with open accounts in, shows patients'
//! names to administrators only, and its downloads are the real files.
//! Nothing refused is saved.

use keqing_tests::http::{FORM, csrf_of, form, http};
use keqing_tests::{Office, Server};

/// Tries to sign in to the dashboard at `addr` as `name` with `password`,
/// as a browser does: the form first (its secret and the sign-in cookie),
/// then the post.
fn dashboard_login(addr: &str, name: &str, password: &str) -> keqing_tests::http::Response {
    let page = http(addr, "GET", "/login", &[], b"");
    assert_eq!(page.status, 200);
    let login_cookie = page
        .header("set-cookie")
        .expect("a sign-in cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    http(
        addr,
        "POST",
        "/login",
        &[FORM, ("Cookie", &login_cookie)],
        &form(&[
            ("csrf", &csrf_of(&page.text())),
            ("name", name),
            ("password", password),
        ]),
    )
}

/// Signs in to the dashboard at `addr`: the session's whole Set-Cookie
/// header.
pub(crate) fn dashboard_sign_in(addr: &str, name: &str, password: &str) -> String {
    let r = dashboard_login(addr, name, password);
    assert_eq!(r.status, 303, "sign-in: {}", r.text());
    r.header("set-cookie")
        .expect("a session cookie")
        .to_string()
}

/// Signs in to the dashboard at `addr` and GETs `path`: its status and text
/// (for other modules' checks of a page).
pub(crate) fn dashboard_get(addr: &str, name: &str, password: &str, path: &str) -> (u16, String) {
    let set_cookie = dashboard_sign_in(addr, name, password);
    let cookie = set_cookie.split(';').next().unwrap();
    let page = http(addr, "GET", path, &[("Cookie", cookie)], b"");
    (page.status, page.text())
}

fn dossiers(office: &Office) -> usize {
    office.ok(&["status", "--json"]).json()["dossiers"]
        .as_u64()
        .unwrap() as usize
}

#[test]
fn the_workstation_refuses_forged_misaddressed_and_bad_posts() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("gd"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    let ui = office.workstation();
    let page = http(&ui.addr, "GET", "/call", &[], b"");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.text());
    let call = |extra: &[(&str, &str)]| {
        // The first value of a name wins: the extras override the defaults.
        let mut f = extra.to_vec();
        f.extend_from_slice(&[
            ("phone", "13800138000"),
            ("name", "王芳"),
            ("source", "报纸"),
            ("staff", "李敏"),
        ]);
        form(&f)
    };
    let before = dossiers(&office);

    // No secret, or a stale one: refused.
    let r = http(&ui.addr, "POST", "/call", &[FORM], &call(&[]));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM],
        &call(&[("csrf", "stale")]),
    );
    assert_eq!(r.status, 403);
    // Another host name (DNS rebinding): refused before anything runs.
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM, ("Host", "evil.example")],
        &call(&[("csrf", &csrf)]),
    );
    assert_eq!(r.status, 421);
    // Bad fields: the form comes back with the error next to the field.
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM],
        &call(&[("csrf", &csrf), ("age", "七十"), ("at", "2026-13-45T99:00")]),
    );
    assert_eq!(r.status, 422);
    let body = r.text();
    assert!(
        body.contains("id=\"age-err\"") && body.contains("id=\"at-err\""),
        "{body}"
    );
    assert!(body.contains("value=\"王芳\""), "what was typed is kept");
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM],
        &call(&[("csrf", &csrf), ("staff", "不在岗的人")]),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains("id=\"staff-err\""));
    // An oversized body is refused whole.
    let huge = call(&[("csrf", &csrf), ("condition", &"病".repeat(1_000_000))]);
    let r = http(&ui.addr, "POST", "/call", &[FORM], &huge);
    assert_eq!(r.status, 413);
    assert_eq!(dossiers(&office), before, "nothing refused was saved");

    // The good call is saved; then its dossier page's forms check too.
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM],
        &call(&[("csrf", &csrf)]),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("redirect").to_string();
    assert!(location.starts_with("/patient/"));
    assert_eq!(dossiers(&office), before + 1);
    let id = location
        .trim_start_matches("/patient/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let records = |office: &Office| {
        office.ok(&["patient", &id, "--json"]).json()["dossier"]["purchases"]
            .as_array()
            .unwrap()
            .len()
    };
    let r = http(
        &ui.addr,
        "POST",
        &format!("/patient/{id}/purchase"),
        &[FORM],
        &form(&[
            ("csrf", &csrf),
            ("staff", "李敏"),
            ("product", "金诃心脑康"),
            ("quantity", "2"),
            ("amount", "12.345"),
            ("runout", "2026-01-01"),
            ("at", "2026-11-20T10:00"),
        ]),
    );
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("id=\"purchase-amount-err\""),
        "{}",
        r.text()
    );
    assert_eq!(records(&office), 0);
    let r = http(
        &ui.addr,
        "POST",
        &format!("/patient/{id}/purchase"),
        &[FORM],
        &form(&[
            ("csrf", &csrf),
            ("staff", "李敏"),
            ("product", "金诃心脑康"),
            ("quantity", "2"),
            ("amount", "856"),
            ("runout", "2026-01-01"),
            ("at", "2026-11-20T10:00"),
        ]),
    );
    assert_eq!(r.status, 422, "a run-out date before the purchase");
    assert!(r.text().contains("id=\"purchase-runout-err\""));
    assert_eq!(records(&office), 0);
    let r = http(
        &ui.addr,
        "POST",
        &format!("/patient/{id}/teleport"),
        &[FORM],
        &form(&[("csrf", &csrf)]),
    );
    assert_eq!(r.status, 422);
    // Putting someone not on the roster on leave, or a forged staff form:
    // refused as input (422), the roster unchanged.
    let roster = office.ok(&["staff", "list", "--json"]).json();
    for fields in [
        &[("name", "无名"), ("active", "0")][..],
        &[("name", "李敏"), ("role", "boss")][..],
    ] {
        let path = if fields[1].0 == "active" {
            "/staff/active"
        } else {
            "/staff"
        };
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let r = http(&ui.addr, "POST", path, &[FORM], &form(&all));
        assert_eq!(r.status, 422, "{path} {fields:?}: {}", r.text());
    }
    assert_eq!(office.ok(&["staff", "list", "--json"]).json(), roster);
    let r = http(&ui.addr, "GET", "/patient/0000000000000000", &[], b"");
    assert_eq!(r.status, 404);
    let r = http(&ui.addr, "GET", "/?date=2026-02-30", &[], b"");
    assert_eq!(r.status, 422);
    // A redirect target of another site is ignored.
    let r = http(
        &ui.addr,
        "POST",
        &format!("/patient/{id}/followup"),
        &[FORM],
        &form(&[
            ("csrf", &csrf),
            ("staff", "李敏"),
            ("outcome", "服药正常"),
            ("back", "//evil.example/"),
        ]),
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("/patient/{id}"))
    );
}

/// The password every account of these tests has.
const HQ_PASSWORD: &str = "总部-2026-看板";

#[test]
fn the_dashboard_lets_in_headquarters_people_only_and_downloads_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    // Two offices register the same caller: a duplicate for review.
    for (dir, code, name) in [("gd", "44", "广东前台1"), ("bj", "11", "北京前台1")] {
        let o = Office::new(tmp.path().join(dir));
        o.enroll_on(&server, Some(code), name);
        o.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
        o.ok(&[
            "call",
            "--phone",
            "13800138000",
            "--name",
            "王芳",
            "--age",
            "66",
            "--source",
            "电视",
            "--staff",
            "李敏",
            "--at",
            "2026-11-20T09:00",
        ]);
        o.ok(&["sync"]);
    }
    let hq_token = server.add_device(None, "看板");
    for (name, role) in [
        ("周主任", "admin"),
        ("钱分析", "数据分析员"),
        ("孙离职", "analyst"),
    ] {
        Server::add_user_in(&server.dir, name, role, HQ_PASSWORD);
    }
    assert!(Server::admin(&server.dir, &["user", "disable", "--name", "孙离职"]).ok);
    let dash = server.dashboard();

    let r = http(&dash.addr, "GET", "/", &[], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let r = http(&dash.addr, "GET", "/export?format=csv", &[], b"");
    assert_eq!(r.status, 303, "downloads need a session too");
    let r = http(&dash.addr, "GET", "/unreadable", &[], b"");
    assert_eq!(r.status, 303, "so does the list of unreadable documents");
    // Every refusal reads the same: no hint whether the name is unknown,
    // the password wrong or the account closed. A device token opens
    // nothing any more. (Four: a fifth failure from this client would make
    // it wait.)
    let mut refusals = Vec::new();
    for (name, password) in [
        ("周主任", "总部-2026-看扳"),
        ("没有此人", HQ_PASSWORD),
        ("孙离职", HQ_PASSWORD),
        ("周主任", hq_token.as_str()),
    ] {
        let r = dashboard_login(&dash.addr, name, password);
        assert_eq!(r.status, 401, "{name}");
        assert!(
            !r.header("set-cookie").unwrap_or("").contains("keqing_hq"),
            "no session"
        );
        let body = r.text();
        let i = body.find("role=\"alert\"").expect("an error");
        refusals.push(body[i..i + body[i..].find("</span>").unwrap()].to_string());
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:?}");
    // A sign-in without the form's secret (another site's page posting
    // here) is refused before the token is looked at.
    let r = http(
        &dash.addr,
        "POST",
        "/login",
        &[FORM],
        &form(&[("name", "周主任"), ("password", HQ_PASSWORD)]),
    );
    assert_eq!(r.status, 403);
    let set_cookie = dashboard_sign_in(&dash.addr, "周主任", HQ_PASSWORD);
    assert!(set_cookie.contains("HttpOnly"));
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let get = |path: &str| http(&dash.addr, "GET", path, &[("Cookie", &cookie)], b"");

    let page = get("/?from=2026-11-20&to=2026-11-20");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("<td class=\"calls\">2</td>"),
        "two calls nationally"
    );
    assert!(
        !page.text().contains("id=\"caveat\""),
        "nothing unreadable, no caveat"
    );
    let csv = get("/export?scope=national&from=2026-11-20&to=2026-11-20&format=csv");
    assert_eq!(csv.status, 200);
    assert!(csv.body.starts_with(b"\xEF\xBB\xBF"), "a BOM for Excel");
    assert!(csv.text().contains("合计"));
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    let xlsx = get("/export?scope=44&from=2026-11-20&to=2026-11-20&format=xlsx");
    assert_eq!(xlsx.status, 200);
    assert!(xlsx.body.starts_with(b"PK"), "a real .xlsx (a zip)");
    assert_eq!(get("/export?format=pdf").status, 422);
    assert_eq!(get("/export?scope=99&format=csv").status, 422);
    assert_eq!(get("/province/99").status, 404);
    assert_eq!(get("/?from=2026-11-31").status, 422);
    assert_eq!(get("/?from=2026-11-22&to=2026-11-20").status, 422);
    let dups = get("/duplicates");
    assert_eq!(dups.status, 200);
    assert!(
        dups.text().contains("同一电话 13800138000"),
        "{}",
        dups.text()
    );
    assert!(page.text().contains("周主任 · 管理员"), "who is signed in");

    // An analyst sees the figures, not the pages that name patients.
    let analyst = dashboard_sign_in(&dash.addr, "钱分析", HQ_PASSWORD);
    let analyst = analyst.split(';').next().unwrap().to_string();
    let as_analyst = |path: &str| http(&dash.addr, "GET", path, &[("Cookie", &analyst)], b"");
    let national = as_analyst("/?from=2026-11-20&to=2026-11-20");
    assert_eq!(national.status, 200);
    assert!(national.text().contains("<td class=\"calls\">2</td>"));
    assert!(
        !national.text().contains("href=\"/duplicates\""),
        "not offered"
    );
    for path in ["/duplicates", "/reads", "/reads?office=44"] {
        let r = as_analyst(path);
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.text().contains("13800138000"), "{path}");
    }

    // Sign-in, the duplicates (names and phones) and the downloads are audited.
    let audit = Server::admin(&server.dir, &["audit", "--json"]).json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().unwrap() == "user:周主任")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "dashboard.sign_in",
        "dashboard.duplicates",
        "dashboard.export",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }

    // Logging out needs the page's secret; closing the account ends the session.
    let r = http(
        &dash.addr,
        "POST",
        "/logout",
        &[FORM, ("Cookie", &cookie)],
        &form(&[("csrf", "x")]),
    );
    assert_eq!(r.status, 403);
    let closed = Server::admin(&server.dir, &["user", "disable", "--name", "周主任"]);
    assert!(closed.ok, "{}", closed.stderr);
    let r = get("/");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
}

/// Both front ends send a content security policy that allows nothing
/// inline, refuse to be framed, send no referrer, and keep pages with
/// patient data out of the browser's cache; the dashboard's sign-in is
/// throttled per client and per name (even a right password waits), and
/// logged.
#[test]
fn both_front_ends_send_security_headers_and_sign_in_is_throttled() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    Server::add_user_in(&server.dir, "周主任", "admin", HQ_PASSWORD);
    Server::add_user_in(&server.dir, "吴分析", "analyst", HQ_PASSWORD);
    let office = Office::new(tmp.path().join("gd"));
    office.enroll_on(&server, Some("44"), "前台1");
    office.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    let id = office.call("13800138000", "王芳", "李敏", "2026-11-20T09:00");
    let ui = office.workstation();
    let dash = server.dashboard();
    let session = dashboard_sign_in(&dash.addr, "周主任", HQ_PASSWORD);
    let cookie = session.split(';').next().unwrap().to_string();
    let pages = [
        http(&ui.addr, "GET", "/", &[], b""),
        http(&ui.addr, "GET", &format!("/patient/{id}"), &[], b""),
        http(&ui.addr, "GET", "/patient/nobody", &[], b""),
        http(&dash.addr, "GET", "/login", &[], b""),
        http(
            &dash.addr,
            "GET",
            "/duplicates",
            &[("Cookie", &cookie)],
            b"",
        ),
        http(
            &dash.addr,
            "GET",
            "/export?format=csv",
            &[("Cookie", &cookie)],
            b"",
        ),
    ];
    for (i, page) in pages.iter().enumerate() {
        let csp = page.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline"),
            "page {i}: {csp}"
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "page {i}");
        assert_eq!(
            page.header("referrer-policy"),
            Some("no-referrer"),
            "page {i}"
        );
        assert_eq!(page.header("cache-control"), Some("no-store"), "page {i}");
        assert!(
            !page.text().contains(" style=\"") && !page.text().contains("<script>"),
            "page {i} has inline style or script, which the policy blocks"
        );
    }
    let css = http(&ui.addr, "GET", "/assets/app.css", &[], b"");
    assert_eq!(css.status, 200);
    assert_ne!(
        css.header("cache-control"),
        Some("no-store"),
        "assets may be cached"
    );

    // Five wrong passwords from this client (one of them under a name no
    // account can have: 100 000 characters, refused like any), then even
    // the right one waits, for another name too.
    let huge = "名".repeat(100_000);
    for name in [huge.as_str(), "周主任", "周主任", "周主任", "周主任"] {
        assert_eq!(dashboard_login(&dash.addr, name, "guess-guess").status, 401);
    }
    let r = dashboard_login(&dash.addr, "吴分析", HQ_PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(!r.header("set-cookie").unwrap_or("").contains("keqing_hq"));
    // A session made before goes on working.
    assert_eq!(
        http(&dash.addr, "GET", "/", &[("Cookie", &cookie)], b"").status,
        200
    );
}
