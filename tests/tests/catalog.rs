//! Headquarters' catalogue and media spend: the catalogue reaches every
//! office with its normal sync and no device can change it; calls count
//! under its sources (old typed texts mapped by name or alias, the rest
//! under 其他 and listed); spend imports refuse bad lines whole and a
//! re-import changes nothing; cost figures follow, national = Σ provinces.

use keqing_shared::sync::SyncErrorKind;
use keqing_tests::{Office, Server};

const DAY: &str = "2026-11-20";

/// The example of the docs (`docs/catalog-example.toml`).
const CATALOG: &str = include_str!("../../docs/catalog-example.toml");

fn call(o: &Office, phone: &str, name: &str, source: &str, at: &str) -> String {
    o.ok(&[
        "call", "--phone", phone, "--name", name, "--source", source, "--staff", "李敏", "--at", at,
    ])
    .last_line()
    .to_string()
}

fn report(server: &Server, scope: &[&str]) -> serde_json::Value {
    let mut args = vec!["report"];
    args.extend_from_slice(scope);
    args.extend_from_slice(&["--from", DAY, "--to", DAY, "--json"]);
    let r = server.run_admin(&args);
    assert!(r.ok, "{}", r.stderr);
    r.json()
}

/// The `by_source` line of `source` in a report.
fn source_line(report: &serde_json::Value, source: &str) -> serde_json::Value {
    report["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == source)
        .unwrap_or_else(|| panic!("{source} in {}", report["by_source"]))
        .clone()
}

#[test]
fn the_catalogue_reaches_every_office_and_reports_count_its_sources_and_spend() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    let bj = Office::new(tmp.path().join("bj"));
    gd.enroll_on(&server, Some("44"), "广东前台1");
    bj.enroll_on(&server, Some("11"), "北京前台1");
    for o in [&gd, &bj] {
        o.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    }
    // Typed before any catalogue: an alias, a name, something unknown.
    let buyer = call(&gd, "13800138000", "王芳", "电视台", "2026-11-20T09:00");
    call(&gd, "13800138001", "张三", "朋友说的", "2026-11-20T09:30");
    call(&bj, "13900139000", "李四", "报纸", "2026-11-20T10:00");
    gd.ok(&[
        "purchase",
        "--patient",
        &buyer,
        "--staff",
        "李敏",
        "--product",
        "金诃心脑康",
        "--quantity",
        "2",
        "--amount",
        "256",
        "--at",
        "2026-11-20T15:00",
    ]);
    gd.ok(&["sync"]);
    bj.ok(&["sync"]);

    // A bad file is refused with its line, and nothing is stored.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, CATALOG.replace("kind = \"报纸\"", "kind = \"杂志\"")).unwrap();
    let r = server.run_admin(&["catalog", "import", &bad.to_string_lossy()]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("第 25 行") && r.stderr.contains("杂志"),
        "{}",
        r.stderr
    );
    assert_eq!(
        server.run_admin(&["catalog", "show", "--json"]).json(),
        serde_json::Value::Null
    );
    let file = tmp.path().join("catalog.toml");
    std::fs::write(&file, CATALOG).unwrap();
    let r = server.run_admin(&["catalog", "import", &file.to_string_lossy()]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("第 1 版"), "{}", r.stdout);

    // Every office gets it with its sync; the workstation picks from it.
    for o in [&gd, &bj] {
        assert!(
            o.run(&["catalog", "--json"]).json().is_null(),
            "not before a sync"
        );
        o.ok(&["sync"]);
        let c = o.ok(&["catalog", "--json"]).json();
        assert_eq!(c["version"], 1, "{c}");
        assert_eq!(c["sources"][0]["name"], "电视");
    }
    // A purchase without a run-out date gets one from the catalogue's days
    // per box (the one typed before the catalogue arrived has none).
    let other = gd.ok(&["search", "张三", "--json"]).json()[0]["dossier_id"]
        .as_str()
        .unwrap()
        .to_string();
    gd.ok(&[
        "purchase",
        "--patient",
        &other,
        "--staff",
        "李敏",
        "--product",
        "金诃心脑康",
        "--quantity",
        "3",
        "--amount",
        "384",
        "--at",
        "2026-11-20T16:00",
    ]);
    let runouts: Vec<serde_json::Value> = [&buyer, &other]
        .iter()
        .map(|p| {
            gd.ok(&["patient", p, "--json"]).json()["dossier"]["purchases"][0]["runout"].clone()
        })
        .collect();
    assert_eq!(runouts, [serde_json::Value::Null, "2027-02-18".into()]);
    let ui = gd.workstation();
    let call_form = keqing_tests::http::http(&ui.addr, "GET", "/call", &[], b"").text();
    assert!(call_form.contains("<option value=\"电视\">"), "{call_form}");
    drop(ui);

    // No device may change it: a push touching a copy is refused.
    let token = server.add_device(Some("44"), "广东前台2");
    let catalog = keqing_shared::catalog::Catalog::parse_toml(CATALOG, 9).unwrap();
    let (_, change) = keqing_shared::catalog::write_copy("catalog-44", None, &catalog, 0).unwrap();
    keqing_tests::runtime().block_on(async {
        let mut c = keqing_proto::SyncConnection::connect(
            &server.url(),
            &token,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        c.enroll(automerge::ActorId::random().to_bytes().to_vec())
            .await
            .unwrap();
        let refused = c
            .push(vec![keqing_shared::sync::ChangeEnvelope {
                doc_id: "catalog-44".into(),
                bytes: change.bytes,
            }])
            .await
            .unwrap_err();
        assert_eq!(refused.kind, SyncErrorKind::PermissionDenied, "{refused}");
        assert!(refused.message.contains("headquarters"), "{refused}");
    });
    gd.ok(&["sync"]);
    assert_eq!(gd.ok(&["catalog", "--json"]).json()["version"], 1);

    // Reports count the typed sources under the catalogue's, and list
    // what they mapped.
    let national = report(&server, &["national"]);
    assert_eq!(source_line(&national, "电视")["calls"], 1);
    assert_eq!(source_line(&national, "电视")["kind"], "电视");
    assert_eq!(source_line(&national, "其他")["calls"], 1);
    assert_eq!(source_line(&national, "报纸")["calls"], 1);
    let texts = &national["source_texts"];
    assert!(
        texts
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["typed"] == "电视台" && t["counted_as"] == "电视")
            && texts
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["typed"] == "朋友说的" && t["counted_as"] == "其他"),
        "{texts}"
    );
    // The office's own report maps them the same way, offline.
    let own = gd.ok(&["report", "daily", "--date", DAY, "--json"]).json();
    assert_eq!(source_line(&own, "电视")["calls"], 1, "{own}");

    // Spend: a bad line refuses the file, nothing stored.
    let spend = tmp.path().join("spend.csv");
    std::fs::write(
        &spend,
        "date,office,source,amount\n2026-11-20,44,tv,1000\n2026-11-20,44,cable,50\n",
    )
    .unwrap();
    let r = server.run_admin(&["spend", "import", &spend.to_string_lossy()]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("第 3 行") && r.stderr.contains("cable"),
        "{}",
        r.stderr
    );
    assert_eq!(
        source_line(&report(&server, &["national"]), "电视")["spend_fen"],
        0
    );
    std::fs::write(
        &spend,
        "date,office,source,amount\n2026-11-20,44,tv,1000\n2026-11-20,11,paper,300.50\n2026-11-20,11,tv,200\n",
    )
    .unwrap();
    for (round, new) in [(1, "3 行新增"), (2, "0 行新增")] {
        let r = server.run_admin(&["spend", "import", &spend.to_string_lossy()]);
        assert!(
            r.ok && r.stdout.contains(new),
            "round {round}: {}{}",
            r.stdout,
            r.stderr
        );
    }
    let national = report(&server, &["national"]);
    let tv = source_line(&national, "电视");
    assert_eq!(
        tv["spend_fen"], 120000,
        "imported twice, counted once: {tv}"
    );
    assert_eq!(tv["sales_fen"], 25600, "{tv}");
    assert_eq!(tv["cost_per_call_fen"], 120000, "one call: {tv}");
    assert_eq!(tv["cost_per_buyer_fen"], 120000, "{tv}");
    assert_eq!(tv["sales_per_yuan"], 0.21, "{tv}");
    assert!(source_line(&national, "其他")["cost_per_call_fen"].is_null());
    // National = Σ provinces, for every figure of every source.
    let provinces = [
        report(&server, &["province", "--province", "44"]),
        report(&server, &["province", "--province", "11"]),
    ];
    for line in national["by_source"].as_array().unwrap() {
        let source = line["source"].as_str().unwrap();
        for figure in [
            "calls",
            "callers",
            "visited",
            "bought",
            "spend_fen",
            "sales_fen",
        ] {
            let sum: i64 = provinces
                .iter()
                .filter_map(|p| {
                    p["by_source"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|l| l["source"] == source)
                        .map(|l| l[figure].as_i64().unwrap())
                })
                .sum();
            assert_eq!(line[figure].as_i64().unwrap(), sum, "{source} {figure}");
        }
    }
    let audit = server.run_admin(&["audit", "--json"]).json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"catalog.import") && actions.contains(&"spend.import"));

    // The dashboard's national page shows the money by source.
    keqing_tests::Server::add_user_in(&server.dir, "钱分析", "analyst", "总部-2026-看板");
    let dash = server.dashboard();
    let (status, html) = crate::web_guards::dashboard_get(
        &dash.addr,
        "钱分析",
        "总部-2026-看板",
        &format!("/?from={DAY}&to={DAY}"),
    );
    assert_eq!(status, 200);
    assert!(
        html.contains("每购药患者成本") && html.contains("1200.00"),
        "{html}"
    );
    assert!(html.contains("每购药患者成本（按信息来源）"), "the chart");
    // The catalogue page: everyone reads it; only administrators import
    // spend there, with the same checks.
    let (status, html) =
        crate::web_guards::dashboard_get(&dash.addr, "钱分析", "总部-2026-看板", "/catalog");
    assert_eq!(status, 200);
    assert!(
        html.contains("电视") && html.contains("金诃心脑康"),
        "{html}"
    );
    assert!(
        !html.contains("spend-import"),
        "no spend form for an analyst"
    );
    keqing_tests::Server::add_user_in(&server.dir, "周主任", "admin", "总部-2026-看板");
    let session = crate::web_guards::dashboard_sign_in(&dash.addr, "周主任", "总部-2026-看板");
    let cookie = session.split(';').next().unwrap().to_string();
    use keqing_tests::http::{FORM, csrf_of, form, http};
    let page = http(&dash.addr, "GET", "/catalog", &[("Cookie", &cookie)], b"").text();
    assert!(page.contains("spend-import"));
    let post = |csv: &str| {
        http(
            &dash.addr,
            "POST",
            "/spend",
            &[FORM, ("Cookie", &cookie)],
            &form(&[("csrf", csrf_of(&page).as_str()), ("csv", csv)]),
        )
    };
    let refused = post("2026-11-20,44,tv,100\n2026-11-20,44,nope,1");
    assert_eq!(refused.status, 422);
    assert!(refused.text().contains("第 2 行"), "{}", refused.text());
    assert_eq!(
        source_line(&report(&server, &["national"]), "电视")["spend_fen"],
        120000,
        "nothing stored"
    );
    let r = post("2026-11-20,44,tv,1500");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        source_line(&report(&server, &["national"]), "电视")["spend_fen"],
        170000,
        "replaced 1000 by 1500 for 44"
    );
}
