//! Headquarters steering the offices with activities and the staff score:
//! an activity of headquarters' catalogue and one an office defines for
//! itself reach the reports with their participants, new patients,
//! visitors, buyers, sales and spend inside the attribution window; the
//! staff score equals the weighted sum computed here by hand with the
//! catalogue's weights, ranked within role; national = Σ provinces.

use keqing_tests::{Office, Server};

const CATALOG: &str = include_str!("../../docs/catalog-example.toml");

fn report(server: &Server, scope: &[&str], from: &str, to: &str) -> serde_json::Value {
    let mut args = vec!["report"];
    args.extend_from_slice(scope);
    args.extend_from_slice(&["--from", from, "--to", to, "--json"]);
    let r = server.run_admin(&args);
    assert!(r.ok, "{}", r.stderr);
    r.json()
}

fn activity<'r>(report: &'r serde_json::Value, id: &str) -> &'r serde_json::Value {
    report["activities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {}", report["activities"]))
}

fn score<'r>(report: &'r serde_json::Value, office: &str, staff: &str) -> &'r serde_json::Value {
    report["staff_scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["office"] == office && s["staff"] == staff)
        .unwrap_or_else(|| panic!("{staff} in {}", report["staff_scores"]))
}

fn call(o: &Office, phone: &str, name: &str, staff: &str, at: &str) -> String {
    o.ok(&[
        "call", "--phone", phone, "--name", name, "--source", "义诊", "--staff", staff, "--at", at,
    ])
    .last_line()
    .to_string()
}

fn buy(o: &Office, patient: &str, staff: &str, amount: &str, at: &str) {
    o.ok(&[
        "purchase",
        "--patient",
        patient,
        "--staff",
        staff,
        "--product",
        "金诃心脑康",
        "--quantity",
        "1",
        "--amount",
        amount,
        "--at",
        at,
    ]);
}

#[test]
fn activities_and_staff_scores_reach_every_report_by_the_catalogues_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    let bj = Office::new(tmp.path().join("bj"));
    gd.enroll_on(&server, Some("44"), "广东前台1");
    bj.enroll_on(&server, Some("11"), "北京前台1");
    for (name, role) in [
        ("李敏", "consultant"),
        ("赵强", "consultant"),
        ("周主管", "supervisor"),
        ("刘外送", "field"),
    ] {
        gd.ok(&["staff", "add", "--name", name, "--role", role]);
    }
    bj.ok(&["staff", "add", "--name", "王北", "--role", "consultant"]);
    // Headquarters' catalogue, the typical case worth 20 here.
    let file = tmp.path().join("catalog.toml");
    std::fs::write(
        &file,
        CATALOG.replace("typical_cases = 10", "typical_cases = 20"),
    )
    .unwrap();
    let r = server.run_admin(&["catalog", "import", &file.to_string_lossy()]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("winter-clinic"), "{}", r.stdout);
    for o in [&gd, &bj] {
        o.ok(&["sync"]);
        let list = o.ok(&["activity", "list", "--json"]).json();
        assert_eq!(list[0]["id"], "winter-clinic", "{list}");
    }

    // An office defines its own activity: only its 客情主管.
    let refused = gd.run(&[
        "activity",
        "add",
        "--by",
        "李敏",
        "--name",
        "社区讲座",
        "--kind",
        "讲座",
        "--from",
        "2026-10-01",
    ]);
    assert!(
        !refused.ok && refused.stderr.contains("客情主管"),
        "{}",
        refused.stderr
    );
    let bad_kind = gd.run(&[
        "activity",
        "add",
        "--by",
        "周主管",
        "--name",
        "庙会",
        "--kind",
        "庙会",
        "--from",
        "2026-10-01",
    ]);
    assert!(
        !bad_kind.ok && bad_kind.stderr.contains("义诊"),
        "{}",
        bad_kind.stderr
    );
    let lecture = gd
        .ok(&[
            "activity",
            "add",
            "--by",
            "周主管",
            "--name",
            "社区讲座",
            "--kind",
            "讲座",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-02",
        ])
        .last_line()
        .to_string();
    assert!(lecture.starts_with("44-"), "{lecture}");

    // The office's lecture: 王芳 (an old patient) and 张三 (new) take part.
    let wang = call(&gd, "13800138000", "王芳", "李敏", "2026-09-01T09:00");
    let zhang = call(&gd, "13800138001", "张三", "赵强", "2026-10-01T09:00");
    for p in [&wang, &zhang] {
        gd.ok(&[
            "activity",
            "join",
            "--activity",
            &lecture,
            "--patient",
            p,
            "--staff",
            "李敏",
            "--at",
            "2026-10-01T10:00",
        ]);
    }
    // Twice, or outside its days: refused, saying why.
    for (at, why) in [
        ("2026-10-02T10:00", "已参加"),
        ("2026-10-03T10:00", "2026-10-02"),
    ] {
        let r = gd.run(&[
            "activity",
            "join",
            "--activity",
            &lecture,
            "--patient",
            &wang,
            "--staff",
            "李敏",
            "--at",
            at,
        ]);
        assert!(!r.ok && r.stderr.contains(why), "{}", r.stderr);
    }
    // 张三 buys on the 30th day after the lecture ends (attributed), 王芳 on
    // the 31st (not).
    buy(&gd, &zhang, "李敏", "128", "2026-11-01T15:00");
    buy(&gd, &wang, "李敏", "256", "2026-11-02T15:00");

    // Headquarters' clinic, at 44 and 11, advertised under 讲座义诊.
    let chen = call(&gd, "13800138002", "陈一", "李敏", "2026-11-20T09:00");
    let beijing = call(&bj, "13900139000", "刘二", "王北", "2026-11-20T09:00");
    for (o, p, staff) in [(&gd, &chen, "李敏"), (&bj, &beijing, "王北")] {
        o.ok(&[
            "activity",
            "join",
            "--activity",
            "winter-clinic",
            "--patient",
            p,
            "--staff",
            staff,
            "--at",
            "2026-11-21T10:00",
        ]);
    }
    gd.ok(&[
        "visit",
        "--patient",
        &chen,
        "--staff",
        "李敏",
        "--at",
        "2026-11-21T11:00",
        "--bought",
    ]);
    buy(&gd, &chen, "李敏", "384", "2026-11-21T11:10");
    let spend = tmp.path().join("spend.csv");
    std::fs::write(
        &spend,
        "date,office,source,amount\n2026-11-20,44,lecture,300\n2026-11-21,11,lecture,100\n\
         2026-11-25,44,lecture,999\n",
    )
    .unwrap();
    let r = server.run_admin(&["spend", "import", &spend.to_string_lossy()]);
    assert!(r.ok, "{}", r.stderr);

    // What the score counts beyond calls: a home visit, a delivery handed
    // over, a typical case, a problem opened by 李敏 and resolved by 周主管.
    gd.ok(&[
        "homevisit",
        "--patient",
        &chen,
        "--staff",
        "刘外送",
        "--at",
        "2026-11-22T10:00",
    ]);
    gd.ok(&[
        "delivery",
        "--patient",
        &chen,
        "--staff",
        "刘外送",
        "--product",
        "金诃心脑康",
        "--quantity",
        "1",
        "--address",
        "广州",
        "--delivered",
        "--at",
        "2026-11-22T11:00",
    ]);
    gd.ok(&[
        "typical",
        "--patient",
        &chen,
        "--staff",
        "李敏",
        "--at",
        "2026-11-22T12:00",
    ]);
    gd.ok(&[
        "problem",
        "open",
        "--patient",
        &chen,
        "--staff",
        "李敏",
        "--description",
        "服药后头晕",
        "--at",
        "2026-11-22T13:00",
    ]);
    gd.ok(&[
        "problem",
        "resolve",
        "--patient",
        &chen,
        "--staff",
        "周主管",
        "--resolution",
        "调整服法",
        "--at",
        "2026-11-22T14:00",
    ]);
    gd.ok(&["sync"]);
    bj.ok(&["sync"]);

    // The lecture over its window.
    let r = report(
        &server,
        &["office", "--province", "44"],
        "2026-10-01",
        "2026-11-30",
    );
    let l = activity(&r, &lecture);
    assert_eq!(
        (
            &l["participants"],
            &l["new_patients"],
            &l["buyers"],
            &l["sales_fen"]
        ),
        (&2.into(), &1.into(), &1.into(), &12800.into()),
        "{l}"
    );
    assert_eq!(l["defined_by"], "广东");
    // The clinic: 44's spend on its days only (the 25th is after it).
    let national = report(&server, &["national"], "2026-11-20", "2026-11-30");
    let clinic = activity(&national, "winter-clinic");
    assert_eq!(
        (
            &clinic["participants"],
            &clinic["visitors"],
            &clinic["buyers"]
        ),
        (&2.into(), &1.into(), &1.into()),
        "{clinic}"
    );
    assert_eq!(
        (&clinic["sales_fen"], &clinic["spend_fen"]),
        (&38400.into(), &40000.into())
    );
    assert_eq!(clinic["cost_per_buyer_fen"], 40000);
    // National = Σ provinces, figure by figure.
    let provinces: Vec<serde_json::Value> = ["44", "11"]
        .iter()
        .map(|o| {
            report(
                &server,
                &["office", "--province", o],
                "2026-11-20",
                "2026-11-30",
            )
        })
        .collect();
    for key in [
        "participants",
        "new_patients",
        "visitors",
        "buyers",
        "sales_fen",
        "spend_fen",
    ] {
        let sum: i64 = provinces
            .iter()
            .map(|p| activity(p, "winter-clinic")[key].as_i64().unwrap())
            .sum();
        assert_eq!(clinic[key].as_i64(), Some(sum), "{key}");
    }

    // 李敏's score over 11-20..30, by hand with the catalogue's weights
    // (typical case 20, the rest the defaults): 1 call (1) + 陈一 brought
    // to visit (2) and to buy (5) + 1 typical case (20) = 28.
    let li = score(&national, "44", "李敏");
    assert_eq!(li["score"], 28.0, "{li}");
    assert_eq!(li["role"], "咨询人员");
    let points: f64 = li["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["points"].as_f64().unwrap())
        .sum();
    assert_eq!(points, 28.0);
    // 刘外送: a home visit (3) and a delivery (2); 周主管: a problem
    // resolved (5); 王北 at 11: a call (1).
    assert_eq!(score(&national, "44", "刘外送")["score"], 5.0);
    assert_eq!(score(&national, "44", "周主管")["score"], 5.0);
    assert_eq!(score(&national, "11", "王北")["score"], 1.0);
    // Ranked within role: 李敏 first of the consultants at 44 and nationally,
    // 王北 first at 11 and second nationally.
    assert_eq!(
        (&li["rank_office"], &li["rank_national"]),
        (&1.into(), &1.into())
    );
    let wb = score(&national, "11", "王北");
    assert_eq!(
        (&wb["rank_office"], &wb["rank_national"]),
        (&1.into(), &2.into())
    );
    // The province's report gives each person the same score.
    assert_eq!(score(&provinces[0], "44", "李敏")["score"], 28.0);
    // The staff lines carry the new counts.
    let staff_line = |name: &str| {
        national["staff"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["staff"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(staff_line("刘外送")["home_visits"], 1);
    assert_eq!(staff_line("刘外送")["deliveries"], 1);
    assert_eq!(staff_line("周主管")["problems_resolved"], 1);

    // The office's own report (offline, from its replica) scores alike.
    let own = gd
        .ok(&[
            "report",
            "daily",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-30",
            "--json",
        ])
        .json();
    assert_eq!(
        score(&own, "44", "李敏")["score"],
        28.0,
        "{}",
        own["staff_scores"]
    );
    assert_eq!(activity(&own, "winter-clinic")["buyers"], 1);
    // The text report has both sections.
    let text = server.run_admin(&[
        "report",
        "national",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-30",
    ]);
    assert!(text.stdout.contains("【岗位评分】") && text.stdout.contains("【活动】"));
    assert!(text.stdout.contains("冬季心脑健康义诊"), "{}", text.stdout);

    // The catalogue's pick lists: its own reason (路途远) counts under it; a
    // reason or a non-patient kind the list lacks is kept as 其他 with what
    // was typed.
    for reason in ["路途远", "下雨"] {
        gd.ok(&[
            "visit",
            "--patient",
            &wang,
            "--staff",
            "李敏",
            "--at",
            "2026-11-23T10:00",
            "--reason",
            reason,
        ]);
    }
    let wang_visits = gd.ok(&["patient", &wang, "--json"]).json()["dossier"]["visits"].clone();
    let stored: Vec<&str> = wang_visits
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["reason_not_bought"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ["路途远", "其他：下雨"], "{wang_visits}");
    gd.ok(&[
        "nonpatient",
        "--kind",
        "保险推销",
        "--staff",
        "李敏",
        "--at",
        "2026-11-23T11:00",
    ]);
    gd.ok(&["sync"]);
    let r = report(
        &server,
        &["office", "--province", "44"],
        "2026-11-23",
        "2026-11-23",
    );
    let count = |section: &str, label: &str| {
        r[section][0]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["label"] == label)
            .unwrap_or_else(|| panic!("{label} in {}", r[section]))["count"]
            .clone()
    };
    assert_eq!(count("not_bought_reasons", "路途远"), 1);
    assert_eq!(count("not_bought_reasons", "其他"), 1);
    assert_eq!(count("nonpatient_calls", "其他"), 1);
    // ...and what was typed is listed, so the catalogue can grow.
    let typed: Vec<(String, String, u64)> = r["other_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["list"].as_str().unwrap().to_string(),
                t["typed"].as_str().unwrap().to_string(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        typed,
        [
            ("未购原因".to_string(), "下雨".to_string(), 1),
            ("非正常咨询".to_string(), "保险推销".to_string(), 1)
        ]
    );

    // The workstation offers the activities running today to a patient
    // who has not joined them, and shows a participation in the timeline.
    // (Around the real date: the workstation's today.)
    let now = chrono::Utc::now().date_naive();
    let (from, to) = (
        (now - chrono::Duration::days(2)).to_string(),
        (now + chrono::Duration::days(30)).to_string(),
    );
    let today = gd
        .ok(&[
            "activity",
            "add",
            "--by",
            "周主管",
            "--name",
            "年末促销",
            "--kind",
            "促销",
            "--from",
            &from,
            "--to",
            &to,
        ])
        .last_line()
        .to_string();
    let ui = gd.workstation();
    let page = |id: &str| {
        keqing_tests::http::http(&ui.addr, "GET", &format!("/patient/{id}"), &[], b"").text()
    };
    let wang_page = page(&wang);
    assert!(
        wang_page.contains(&format!("<option value=\"{today}\""))
            && !wang_page.contains("winter-clinic\""),
        "{wang_page}"
    );
    assert!(page(&chen).contains("参加活动"));
    drop(ui);

    // The dashboard: the province page shows its scores and activities,
    // the catalogue page the weights and headquarters' activities.
    keqing_tests::Server::add_user_in(&server.dir, "钱分析", "analyst", "总部-2026-看板");
    let dash = server.dashboard();
    let (status, html) = crate::web_guards::dashboard_get(
        &dash.addr,
        "钱分析",
        "总部-2026-看板",
        "/province/44?from=2026-11-20&to=2026-11-30",
    );
    assert_eq!(status, 200);
    assert!(
        html.contains("岗位评分") && html.contains("28.00") && html.contains("冬季心脑健康义诊"),
        "{html}"
    );
    let (status, html) =
        crate::web_guards::dashboard_get(&dash.addr, "钱分析", "总部-2026-看板", "/catalog");
    assert_eq!(status, 200);
    assert!(
        html.contains("岗位评定权重") && html.contains("winter-clinic"),
        "{html}"
    );
}
