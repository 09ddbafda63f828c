//! Headquarters statistics end to end: offices work offline through the
//! real `keqing` binary, sync through a real `keqing-server`, and the
//! server's national report must agree with every office's own report, with
//! the events generated, and with itself after a projection rebuild.

use keqing_tests::{Office, Server, WebProcess, server_bin};
use serde_json::Value;
use std::collections::BTreeMap;

const FROM: &str = "2026-11-20";
const TO: &str = "2026-11-22";
const SOURCES: [&str; 4] = ["电视", "报纸", "网络", "朋友介绍"];

/// A small deterministic generator (LCG).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What was generated per office. `callers` is counted from the phones
/// that called (a set per office, [`ExpectedDay::calling`]), not from the
/// calls.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    calls: u64,
    callers: u64,
    visits: u64,
    purchases: u64,
    followups: u64,
    problems_opened: u64,
}

/// What was generated per office for the sections of the office's whole
/// day: non-patient calls and not-bought reasons by label, the patients
/// whose follow-ups were stopped.
#[derive(Debug, Default, Clone)]
struct ExpectedDay {
    nonpatient: BTreeMap<String, u64>,
    reasons: BTreeMap<String, u64>,
    stopped: std::collections::BTreeSet<String>,
    /// The phones that called in the range.
    calling: std::collections::BTreeSet<String>,
}

const NONPATIENT_KINDS: [&str; 6] = ["打错电话", "同行", "媒体", "骚扰", "推销", "其他"];
const REASONS: [&str; 6] = [
    "价格",
    "疗效疑虑",
    "家属意见",
    "在用其他药",
    "考虑中",
    "其他",
];

/// One device's day of work on `day` (20..=22): new callers and
/// non-patient calls, and visits (with reasons for not buying), purchases,
/// follow-ups, problems, plan stops and second calls (repeat callers) for
/// patients it registered before.
fn work(
    o: &Office,
    rng: &mut Rng,
    day: u32,
    prefix: u64,
    patients: &mut Vec<String>,
    e: &mut Expected,
    x: &mut ExpectedDay,
) {
    for _ in 0..rng.below(3) {
        let kind = NONPATIENT_KINDS[rng.below(6) as usize];
        let at = format!("2026-11-{day}T08:{:02}", rng.below(60));
        o.ok(&[
            "nonpatient",
            "--phone",
            "02088880000",
            "--kind",
            kind,
            "--staff",
            "咨询员",
            "--at",
            &at,
        ]);
        *x.nonpatient.entry(kind.to_string()).or_default() += 1;
    }
    for i in 0..4 {
        let phone = format!("139{prefix:04}{:04}", patients.len());
        let at = format!("2026-11-{day}T{:02}:{:02}", 9 + i, rng.below(60));
        let id = o
            .ok(&[
                "call",
                "--phone",
                &phone,
                "--name",
                &format!("患者{prefix}-{}", patients.len()),
                "--source",
                SOURCES[rng.below(4) as usize],
                "--disease",
                ["冠心病", "高血压", "脑梗"][rng.below(3) as usize],
                "--staff",
                "咨询员",
                "--at",
                &at,
            ])
            .last_line()
            .to_string();
        e.calls += 1;
        x.calling.insert(phone);
        e.callers = x.calling.len() as u64;
        patients.push(id);
    }
    // Earlier patients: some come, some buy, some are followed up.
    let earlier = patients.len() - 4;
    for (k, p) in patients[..earlier].iter().enumerate() {
        let at = |h: u32| format!("2026-11-{day}T{h:02}:30");
        // Some call again: one more call, no more callers.
        if rng.below(5) == 0 {
            let phone = format!("139{prefix:04}{k:04}");
            let again = o.call(&phone, "患者", "咨询员", &at(8));
            assert_eq!(&again, p, "the second call finds the dossier");
            e.calls += 1;
            x.calling.insert(phone);
            e.callers = x.calling.len() as u64;
        }
        match rng.below(4) {
            0 => {
                let reason = REASONS[rng.below(6) as usize];
                let typed = match reason {
                    "其他" => "其他：子女在外地".to_string(),
                    r => r.to_string(),
                };
                o.ok(&[
                    "visit",
                    "--patient",
                    p,
                    "--staff",
                    "专家",
                    "--reason",
                    &typed,
                    "--at",
                    &at(14),
                ]);
                e.visits += 1;
                *x.reasons.entry(reason.to_string()).or_default() += 1;
            }
            1 => {
                o.ok(&[
                    "visit",
                    "--patient",
                    p,
                    "--staff",
                    "专家",
                    "--bought",
                    "--at",
                    &at(14),
                ]);
                o.ok(&[
                    "purchase",
                    "--patient",
                    p,
                    "--staff",
                    "专家",
                    "--product",
                    "心脑通",
                    "--amount",
                    "1280",
                    "--runout",
                    "2026-12-20",
                    "--at",
                    &at(15),
                ]);
                e.visits += 1;
                e.purchases += 1;
            }
            2 => {
                o.ok(&[
                    "followup",
                    "--patient",
                    p,
                    "--staff",
                    "回访员",
                    "--outcome",
                    "已联系",
                    "--at",
                    &at(16),
                ]);
                e.followups += 1;
            }
            _ => {
                // Every office gets a problem by its last day: the figure
                // must be shown non-zero, not only zero = zero.
                let owed = day == 22 && e.problems_opened == 0;
                if owed || rng.below(3) == 0 {
                    o.ok(&[
                        "problem",
                        "open",
                        "--patient",
                        p,
                        "--staff",
                        "回访员",
                        "--description",
                        "投诉",
                        "--at",
                        &at(17),
                    ]);
                    e.problems_opened += 1;
                } else if rng.below(2) == 0 && !x.stopped.contains(p) {
                    o.ok(&[
                        "plan",
                        "stop",
                        "--patient",
                        p,
                        "--staff",
                        "回访员",
                        "--reason",
                        "迁出",
                        "--at",
                        &at(17),
                    ]);
                    x.stopped.insert(p.clone());
                }
            }
        }
    }
}

fn staff(o: &Office) {
    for (name, role) in [
        ("咨询员", "consultant"),
        ("专家", "expert"),
        ("回访员", "followup"),
    ] {
        o.ok(&["staff", "add", "--name", name, "--role", role]);
    }
}

/// Every number in `v`, by path, for sums over lines.
fn numbers(v: &Value, path: &str, out: &mut BTreeMap<String, i64>) {
    match v {
        Value::Number(n) => {
            out.insert(path.to_string(), n.as_i64().unwrap());
        }
        Value::Object(m) => {
            for (k, x) in m {
                numbers(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn server_report(dir: &std::path::Path, args: &[&str]) -> Value {
    server_report_on(dir, None, args)
}

/// `keqing-server report args…` on the store in `dir`, or in PostgreSQL.
fn server_report_on(dir: &std::path::Path, store: Option<&str>, args: &[&str]) -> Value {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let env: Vec<(&str, &str)> = store.map(|s| ("KEQING_STORE", s)).into_iter().collect();
    let r = Server::admin_with_env(dir, &all, &env);
    assert!(r.ok, "{}", r.stderr);
    r.json()
}

#[test]
fn national_report_agrees_with_offices_events_and_a_rebuild() {
    national_report_agrees_with_offices_events_and_a_rebuild_on(None);
}

/// The same offices' work through a server on PostgreSQL: the same
/// figures, and its projections rebuilt equal to its incremental ones.
#[test]
fn national_report_agrees_with_offices_events_and_a_rebuild_on_postgres() {
    let url = keqing_tests::postgres_database();
    national_report_agrees_with_offices_events_and_a_rebuild_on(Some(&url));
}

fn national_report_agrees_with_offices_events_and_a_rebuild_on(store: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(tmp.path().join("server"), "127.0.0.1:0", store);
    let gd1 = Office::new(tmp.path().join("gd1"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    let zj = Office::new(tmp.path().join("zj"));
    let hq = Office::new(tmp.path().join("hq"));
    gd1.enroll_on(&server, Some("44"), "前台1");
    staff(&gd1);
    gd1.ok(&["sync"]);
    gd2.enroll_on(&server, Some("44"), "前台2");
    gd2.ok(&["sync"]);
    zj.enroll_on(&server, Some("33"), "前台1");
    staff(&zj);
    hq.enroll_on(&server, None, "数据中心1");

    let mut rng = Rng(7);
    let mut expected: BTreeMap<&str, Expected> = BTreeMap::new();
    let mut expected_day: BTreeMap<&str, ExpectedDay> = BTreeMap::new();
    let devices: [(&Office, &str, u64); 3] = [(&gd1, "44", 1), (&gd2, "44", 2), (&zj, "33", 3)];
    let mut patients: Vec<Vec<String>> = vec![Vec::new(); 3];
    for day in 20..=22 {
        for (i, (o, office, prefix)) in devices.iter().enumerate() {
            let e = expected.entry(office).or_default();
            let x = expected_day.entry(office).or_default();
            work(o, &mut rng, day, *prefix, &mut patients[i], e, x);
        }
        // Everyone syncs at the end of the day: the projector follows the
        // log in several rounds, as it would in production.
        for (o, _, _) in devices {
            o.ok(&["sync"]);
        }
    }
    for (o, _, _) in devices {
        o.ok(&["sync"]);
    }
    hq.ok(&["sync"]);

    let national = server_report_on(
        &server.dir,
        store,
        &["national", "--from", FROM, "--to", TO, "--json"],
    );
    let lines = national["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 27, "one line per province");

    // The total is the sum of the province lines, field by field.
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for l in lines {
        let mut n = BTreeMap::new();
        numbers(l, "", &mut n);
        for (k, v) in n {
            *sums.entry(k).or_default() += v;
        }
    }
    let mut total = BTreeMap::new();
    numbers(&national["total"], "", &mut total);
    assert_eq!(sums, total);
    assert!(total[".calls"] > 0);

    for (code, e) in &expected {
        assert!(
            e.visits > 0
                && e.purchases > 0
                && e.followups > 0
                && e.problems_opened > 0
                && e.calls > e.callers,
            "the scenario exercises every kind of event, problems and repeat callers \
             included, in {code}: {e:?}"
        );
    }
    // Each office's line holds exactly the generated events.
    let line = |code: &str| lines.iter().find(|l| l["office"] == code).unwrap().clone();
    for (code, e) in &expected {
        let l = line(code);
        let got = Expected {
            calls: l["calls"].as_u64().unwrap(),
            callers: l["callers"].as_u64().unwrap(),
            visits: l["visits"].as_u64().unwrap(),
            purchases: l["purchases"].as_u64().unwrap(),
            followups: l["followups"]["done"].as_u64().unwrap(),
            problems_opened: l["problems_opened"].as_u64().unwrap(),
        };
        assert_eq!(&got, e, "office {code}");
        assert_eq!(
            l["amount_fen"].as_i64().unwrap(),
            e.purchases as i64 * 128_000
        );
    }
    assert_eq!(line("11")["calls"], 0);
    // Over the days the generated work makes due (its last slots' deadlines
    // fall after TO), the follow-up figures against the rules.
    let until = "2026-11-30";
    let later = server_report_on(
        &server.dir,
        store,
        &["national", "--from", FROM, "--to", until, "--json"],
    );
    followup_figures_follow_the_rules(&hq, &later, until);
    if let Some(url) = store {
        documented_national_query_agrees(&server, url, &national);
    }

    // The sections of the office's whole day: the total is the sum of the
    // offices' breakdowns, label by label, and each office's holds what was
    // generated there (non-patient calls are not consultation calls).
    let by_label = |b: &Value| -> BTreeMap<String, u64> {
        b["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["label"].as_str().unwrap().to_string(),
                    c["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let breakdown = |report: &Value, section: &str, office: &str| -> BTreeMap<String, u64> {
        let b = report[section].as_array().unwrap();
        by_label(
            b.iter()
                .find(|b| b["office"] == office)
                .unwrap_or_else(|| panic!("{section} has no breakdown for {office}: {report}")),
        )
    };
    let nonzero = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    };
    for section in ["nonpatient_calls", "not_bought_reasons", "categories"] {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let offices = national[section].as_array().unwrap();
        for b in offices.iter().filter(|b| b["office"] != "total") {
            for (label, n) in by_label(b) {
                *sums.entry(label).or_default() += n;
            }
        }
        assert_eq!(sums, breakdown(&national, section, "total"), "{section}");
        assert!(sums.values().sum::<u64>() > 0, "{section} is exercised");
    }
    for (code, x) in &expected_day {
        assert_eq!(
            nonzero(&breakdown(&national, "nonpatient_calls", code)),
            x.nonpatient,
            "office {code}"
        );
        assert_eq!(
            nonzero(&breakdown(&national, "not_bought_reasons", code)),
            x.reasons,
            "office {code}"
        );
        let categories = breakdown(&national, "categories", code);
        assert_eq!(categories["停访"], x.stopped.len() as u64, "office {code}");
        let primary: u64 = ["未到堂", "到堂未购", "已购", "复购", "流失", "停访"]
            .iter()
            .map(|c| categories[*c])
            .sum();
        assert_eq!(primary, expected[code].callers, "one category per dossier");
        assert_eq!(categories["问题"] > 0, expected[code].problems_opened > 0);
        // Per staff member, the reasons add up to the office's.
        let mut staff_sum: BTreeMap<String, u64> = BTreeMap::new();
        for s in national["staff"].as_array().unwrap() {
            if s["office"] == *code {
                for (label, n) in by_label(&serde_json::json!({"counts": s["not_bought_reasons"]}))
                {
                    *staff_sum.entry(label).or_default() += n;
                }
            }
        }
        assert_eq!(nonzero(&staff_sum), x.reasons, "staff of {code}");
    }

    // Each province line equals that office's own report of the same days,
    // computed offline on each of its devices.
    for (o, code, _) in devices {
        let own = o
            .ok(&["report", "daily", "--from", FROM, "--to", TO, "--json"])
            .json();
        assert_eq!(own["lines"].as_array().unwrap().len(), 1);
        assert_eq!(own["lines"][0], line(code), "office {code}'s own report");
        for section in ["nonpatient_calls", "not_bought_reasons", "categories"] {
            assert_eq!(
                breakdown(&own, section, code),
                breakdown(&national, section, code),
                "office {code}'s own {section}"
            );
        }
    }
    // Day by day, the office's daily summaries add up to the range.
    let mut calls_by_day = 0;
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        calls_by_day +=
            gd1.ok(&["report", "daily", "--date", day, "--json"]).json()["total"]["calls"]
                .as_u64()
                .unwrap();
    }
    assert_eq!(calls_by_day, expected["44"].calls);

    // Headquarters over gRPC reads the same report as the server's CLI, and
    // its offline copy agrees too.
    let over_grpc = hq
        .ok(&["report", "national", "--from", FROM, "--to", TO, "--json"])
        .json();
    assert_eq!(over_grpc, national);
    let hq_offline = hq
        .ok(&["report", "daily", "--from", FROM, "--to", TO, "--json"])
        .json();
    assert_eq!(hq_offline["lines"], national["lines"]);
    let province = server_report_on(
        &server.dir,
        store,
        &[
            "province",
            "--province",
            "33",
            "--from",
            FROM,
            "--to",
            TO,
            "--json",
        ],
    );
    assert_eq!(province["lines"][0], line("33"));
    // An office device may read its own province from the server...
    let own = zj
        .ok(&[
            "report",
            "province",
            "--province",
            "33",
            "--from",
            FROM,
            "--to",
            TO,
            "--json",
        ])
        .json();
    assert_eq!(own, province);
    // ...and no other.
    let other = zj.run(&[
        "report",
        "province",
        "--province",
        "44",
        "--from",
        FROM,
        "--to",
        TO,
    ]);
    assert!(!other.ok);
    assert!(other.stderr.contains("own office"), "{}", other.stderr);
    let national_from_office = zj.run(&["report", "national", "--from", FROM, "--to", TO]);
    assert!(!national_from_office.ok);

    // Exports: CSV with a BOM and Chinese headings, a real .xlsx.
    let export = |format: &str| {
        let out = tmp.path().join(format!("national.{format}"));
        let args = [
            "report", "national", "--from", FROM, "--to", TO, "--format", format, "--out",
        ];
        let mut args: Vec<&str> = args.to_vec();
        args.push(out.to_str().unwrap());
        let r = server.run_admin(&args);
        assert!(r.ok, "{}", r.stderr);
        std::fs::read(&out).unwrap()
    };
    let text = String::from_utf8(export("csv")).unwrap();
    assert!(text.starts_with('\u{feff}'));
    assert!(text.contains("代码,省份,来电,来电患者"), "{text}");
    assert!(text.contains(&format!("44,广东,{},", expected["44"].calls)));
    assert!(export("xlsx").starts_with(b"PK"));

    // Rebuilding the projections from the log gives the same rows as the
    // incremental maintenance did.
    server.kill();
    let dir = tmp.path().join("server");
    let opened: Box<dyn keqing_server::store::Store> = match store {
        Some(url) => Box::new(keqing_server::store::PgStore::open_existing(url).unwrap()),
        None => Box::new(keqing_server::store::SqliteStore::open_existing(&dir).unwrap()),
    };
    let mut session = opened.projections().unwrap();
    keqing_server::projector::catch_up(&mut *session, |_, _| {}).unwrap();
    let incremental = session.projection_dump().unwrap();
    assert!(incremental.contains("\ncalls|"));
    let rebuilt = keqing_server::projector::rebuild(&mut *session, |_, _| {}).unwrap();
    assert_eq!(rebuilt.skipped, 0);
    assert_eq!(session.projection_dump().unwrap(), incremental);
    drop(session);
    drop(opened);
    let after = server_report_on(
        &dir,
        store,
        &["national", "--from", FROM, "--to", TO, "--json"],
    );
    assert_eq!(after, national);
}

#[test]
fn report_requests_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let zj = Office::new(tmp.path().join("zj"));
    zj.enroll_on(&server, Some("33"), "前台1");
    let token = server.add_device(Some("33"), "前台2");
    let hq_token = server.add_device(None, "数据中心1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ask = |token: &str, office: &str, from: &str, to: &str| {
        rt.block_on(async {
            let mut c = keqing_proto::SyncConnection::connect(
                &server.url(),
                token,
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
            let scope = if office.is_empty() {
                keqing_shared::report::Scope::National
            } else {
                keqing_shared::report::Scope::Office(office.into())
            };
            let parse = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
            c.report(&scope, parse(from), parse(to)).await
        })
    };
    use keqing_shared::sync::SyncErrorKind as K;
    let kind = |r: Result<_, keqing_shared::sync::SyncError>| r.map(|_| ()).map_err(|e| e.kind);
    assert_eq!(kind(ask(&token, "33", FROM, TO)), Ok(()));
    assert_eq!(kind(ask(&token, "44", FROM, TO)), Err(K::PermissionDenied));
    assert_eq!(kind(ask(&token, "", FROM, TO)), Err(K::PermissionDenied));
    assert_eq!(kind(ask(&hq_token, "44", FROM, TO)), Ok(()));
    assert_eq!(kind(ask(&hq_token, "", FROM, TO)), Ok(()));
    assert_eq!(kind(ask("nonsense", "", FROM, TO)), Err(K::Unauthenticated));
    assert_eq!(kind(ask(&hq_token, "", TO, FROM)), Err(K::InvalidArgument));
    assert_eq!(
        kind(ask(&hq_token, "99", FROM, TO)),
        Err(K::InvalidArgument)
    );
    assert_eq!(
        kind(ask(&hq_token, "", "2020-01-01", "2026-01-01")),
        Err(K::InvalidArgument)
    );

    // Malformed dates on the wire: INVALID_ARGUMENT, not a panic.
    let status = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut req = tonic::Request::new(keqing_proto::pb::ReportRequest {
            office: String::new(),
            from: "2026-13-40".into(),
            to: "yesterday".into(),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {hq_token}").parse().unwrap(),
        );
        keqing_proto::pb::reports_client::ReportsClient::new(channel)
            .get_report(req)
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The server's CLI refuses bad arguments with a clear error.
    for args in [
        &[
            "report",
            "national",
            "--from",
            "2026-11-22",
            "--to",
            "2026-11-20",
        ][..],
        &[
            "report",
            "province",
            "--province",
            "99",
            "--from",
            FROM,
            "--to",
            TO,
        ],
        &["report", "national", "--from", "bad", "--to", TO],
        &[
            "report", "national", "--from", FROM, "--to", TO, "--format", "pdf", "--out", "x",
        ],
    ] {
        let r = Server::admin(&server.dir, args);
        assert!(!r.ok, "{args:?}");
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // A mistyped --data is an error, not an empty store answering with
    // empty figures; nothing is made there.
    let typo = tmp.path().join("sever");
    for args in [
        &["report", "national", "--from", FROM, "--to", TO][..],
        &["unreadable"],
        &["project"],
        &["audit"],
        &["device", "list"],
        &["device", "revoke", "前台2"],
    ] {
        let r = Server::admin(&typo, args);
        assert!(
            !r.ok && r.stderr.contains("no keqing-server store"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert!(!typo.exists(), "nothing made at a mistyped --data");
    drop(zj);
}

/// The replica reached its projection schema through its migration
/// history; a fresh server store creates it in one go. They must agree, or
/// the same code would write different rows at the two levels.
#[test]
fn replica_and_server_projection_schemas_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Office::new(tmp.path().join("o"));
    o.ok(&["init", "--office", "44", "--device", "前台1"]);
    let server_dir = tmp.path().join("server");
    // `device add` makes a fresh store.
    let r = Server::admin(
        &server_dir,
        &["device", "add", "--hq", "--name", "数据中心1"],
    );
    assert!(r.ok, "{}", r.stderr);
    let shape = |path: std::path::PathBuf| {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut out = Vec::new();
        for table in [
            "staff",
            "patients",
            "patient_phones",
            "calls",
            "visits",
            "purchases",
            "followups",
            "contacts",
            "problems",
            "slots",
            "overdue_tallies",
        ] {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name, type, pk FROM pragma_table_info('{table}')"
                ))
                .unwrap();
            let cols: Vec<(String, String, i64)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!cols.is_empty(), "{table}");
            out.push((table, cols));
        }
        let mut stmt = conn
            .prepare(
                "SELECT name, tbl_name, sql FROM sqlite_master
                 WHERE type IN ('index', 'trigger') AND sql IS NOT NULL
                   AND tbl_name IN ('staff', 'patients', 'patient_phones', 'calls', 'visits',
                                    'purchases', 'followups', 'contacts', 'problems', 'slots')
                 ORDER BY name",
            )
            .unwrap();
        let indexes: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (out, indexes)
    };
    let replica = shape(tmp.path().join("o").join("keqing.sqlite"));
    let server = shape(server_dir.join("server.sqlite"));
    assert_eq!(replica.0, server.0);
    // The server has every index and trigger of the replica but the
    // lists' ones, which it drops (it lists no patients): the list
    // indexes, and the triggers of the day list's R*Tree.
    let office_only = |name: &str| {
        keqing_projection::DROP_OFFICE_LIST_INDEXES
            .contains(&format!("DROP INDEX IF EXISTS {name};"))
            || keqing_projection::DROP_SLOT_SPANS
                .contains(&format!("DROP TRIGGER IF EXISTS {name};"))
    };
    let (listed, replica_rest): (Vec<_>, Vec<_>) = replica
        .1
        .into_iter()
        .partition(|(name, ..)| office_only(name));
    assert_eq!(
        listed.len(),
        8,
        "the replica keeps its list indexes and spans"
    );
    assert_eq!(replica_rest, server.1);
    let has_spans = |path: std::path::PathBuf| -> bool {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'slot_spans')",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(has_spans(tmp.path().join("o").join("keqing.sqlite")));
    assert!(!has_spans(server_dir.join("server.sqlite")));
}

/// Two projectors (the server's own, and `report` or `project --rebuild`
/// from the command line) race on one store: a batch read before the other
/// saved, or before a rebuild cleared the tables, must not be written over
/// what is there now (it could hold older states of its documents, and
/// once the cursor passed them they would stay wrong).
#[test]
fn a_projector_batch_read_before_another_save_is_refused() {
    use keqing_server::store::{Projected, SqliteStore};
    use keqing_shared::dossier::Dossier;
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(tmp.path()).unwrap();
    let mut store = keqing_server::store::Store::projections(&sqlite).unwrap();
    let batch = |name: &str| -> Vec<Projected> {
        let at = keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap();
        let (mut d, _) =
            Dossier::create("race-1", "44", at, automerge::ActorId::random(), 1).unwrap();
        d.edit(2, |tx| {
            tx.update_patient(&keqing_shared::dossier::PatientUpdate {
                name: Some(name.into()),
                ..Default::default()
            })
        })
        .unwrap();
        let view = d.view().unwrap();
        let slots = keqing_shared::followup::schedule(&view);
        vec![Projected::Dossier {
            view: Box::new(view),
            slots,
        }]
    };
    // Projector A read the log (cursor 0 → 5); B, later, saved newer states.
    assert!(store.save_projections(&batch("新"), &[], 0, 7).unwrap());
    let now = store.projection_dump().unwrap();
    assert!(now.contains("新"));
    assert!(
        !store.save_projections(&batch("旧"), &[], 0, 5).unwrap(),
        "stale batch written"
    );
    assert_eq!(store.projection_dump().unwrap(), now, "rows unchanged");
    assert_eq!(store.projector_cursor().unwrap(), 7);
    // A rebuild cleared everything: a batch read before it is refused too.
    store.reset_projections().unwrap();
    assert!(!store.save_projections(&batch("旧"), &[], 7, 9).unwrap());
    assert_eq!(store.projector_cursor().unwrap(), 0);
    assert!(!store.projection_dump().unwrap().contains("旧"));
}

/// A dossier the server cannot read is not silently left out of the
/// figures: it is listed (`keqing-server unreadable`), every report over its
/// office says how many documents it lacks, and once the dossier reads again
/// it is counted and the list is empty.
#[test]
fn a_dossier_the_server_cannot_read_is_listed_and_reports_say_they_lack_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let server = Server::start(&server_dir, "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    gd.enroll_on(&server, Some("44"), "前台1");
    staff(&gd);
    gd.call("13800138000", "张三丰", "咨询员", "2026-11-20T09:00");
    let damaged = gd.call("13900139000", "王秀英", "咨询员", "2026-11-20T10:00");
    gd.ok(&["sync"]);
    let addr = server.addr.clone();
    drop(server);

    let day = ["--from", "2026-11-20", "--to", "2026-11-20", "--json"];
    let national = |args: &[&str]| {
        let mut all = vec!["national"];
        all.extend_from_slice(args);
        server_report(&server_dir, &all)
    };
    let listed = || {
        let r = Server::admin(&server_dir, &["unreadable", "--json"]);
        assert!(r.ok, "{}", r.stderr);
        r.json()
    };
    assert_eq!(national(&day)["total"]["calls"], 2);
    assert_eq!(national(&day)["unreadable"], 0);
    assert_eq!(listed(), serde_json::json!([]));

    // The dossier's stored state is damaged (as a disk fault or a bug
    // would): its snapshot no longer loads.
    let db = rusqlite::Connection::open(server_dir.join("server.sqlite")).unwrap();
    let original: Vec<u8> = db
        .query_row(
            "SELECT snapshot FROM documents WHERE id = ?1",
            [&damaged],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE documents SET snapshot = x'856f4a83deadbeef', complete = 1 WHERE id = ?1",
        [&damaged],
    )
    .unwrap();
    let rebuilt = Server::admin(&server_dir, &["project", "--rebuild", "--json"]);
    assert!(rebuilt.ok, "{}", rebuilt.stderr);
    assert_eq!(rebuilt.json()["skipped"], 1);

    let list = listed();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["doc_id"], damaged.as_str());
    assert_eq!(list[0]["office"], "44");
    assert!(!list[0]["reason"].as_str().unwrap().is_empty());
    let lacking = national(&day);
    assert_eq!(lacking["unreadable"], 1);
    assert_eq!(lacking["total"]["calls"], 1, "only the readable dossier");
    let province = |code: &str| {
        server_report(
            &server_dir,
            &[
                "province",
                "--province",
                code,
                "--from",
                "2026-11-20",
                "--to",
                "2026-11-20",
                "--json",
            ],
        )
    };
    assert_eq!(province("44")["unreadable"], 1);
    assert_eq!(
        province("33")["unreadable"],
        0,
        "other offices lack nothing"
    );
    let text = Server::admin(
        &server_dir,
        &[
            "report",
            "national",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-20",
        ],
    );
    assert!(text.ok, "{}", text.stderr);
    let second = text.stdout.lines().nth(1).unwrap_or("");
    assert!(
        second.starts_with("注意: 1 份档案服务器无法读取"),
        "{}",
        text.stdout
    );
    let table = Server::admin(&server_dir, &["unreadable"]);
    assert!(
        table.ok && table.stdout.contains(&damaged),
        "{}",
        table.stdout
    );
    // Headquarters' dashboard says it too, nationally and for the province.
    Server::add_user_in(&server_dir, "钱分析", "analyst", "总部-2026-看板");
    let dir = server_dir.to_string_lossy().into_owned();
    let dash = WebProcess::start(
        &server_bin(),
        &["--data", &dir, "dashboard", "--listen", "127.0.0.1:0"],
    );
    for page in [
        "/?from=2026-11-20&to=2026-11-20",
        "/province/44?from=2026-11-20&to=2026-11-20",
    ] {
        let (status, html) =
            crate::web_guards::dashboard_get(&dash.addr, "钱分析", "总部-2026-看板", page);
        assert_eq!(status, 200, "{page}");
        assert!(
            html.contains("注意: 1 份档案服务器无法读取"),
            "{page}: {html}"
        );
        assert!(
            html.contains("href=\"/unreadable\""),
            "{page}: a link to the list"
        );
    }
    let (status, html) =
        crate::web_guards::dashboard_get(&dash.addr, "钱分析", "总部-2026-看板", "/unreadable");
    assert_eq!(status, 200);
    assert!(
        html.contains("无法读取的档案 1 份") && html.contains(&damaged),
        "{html}"
    );
    drop(dash);

    // Repaired (the good bytes back, as from a backup), the dossier reads
    // again with its next change: it is counted and leaves the list.
    db.execute(
        "UPDATE documents SET snapshot = ?2 WHERE id = ?1",
        rusqlite::params![damaged, original],
    )
    .unwrap();
    drop(db);
    let server = Server::start(&server_dir, &addr);
    gd.ok(&[
        "followup",
        "--patient",
        &damaged,
        "--staff",
        "回访员",
        "--outcome",
        "按时服药",
        "--at",
        "2026-11-21T10:00",
    ]);
    gd.ok(&["sync"]);
    drop(server);
    let whole = national(&day);
    assert_eq!(whole["unreadable"], 0);
    assert_eq!(whole["total"]["calls"], 2);
    assert_eq!(listed(), serde_json::json!([]));
}

/// The national query of docs/reporting-schema.md, run by psql as a login
/// made by `keqing-server reporting-role`, gives the national report's
/// figures, province by province; that login reads nothing else and
/// writes nothing.
fn documented_national_query_agrees(server: &Server, url: &str, national: &Value) {
    use std::io::Write;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/reporting-schema.md"
    ))
    .unwrap();
    let sql = doc
        .split("<!-- national-figures")
        .nth(1)
        .and_then(|s| s.split("```sql\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("the documented national query");
    // Runs `command` with `input` on its stdin.
    let with_stdin = |command: &mut std::process::Command, input: &[u8]| {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let reporting_role = |name: &str| {
        with_stdin(
            std::process::Command::new(server_bin())
                .arg("--data")
                .arg(&server.dir)
                .args(["reporting-role", "--name", name, "--password-stdin"])
                .env("KEQING_STORE", url),
            b"a long enough password\n",
        )
    };
    let made = reporting_role("bi_reader");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(
        reporting_role("bi_reader").status.success(),
        "run again: a new password"
    );
    let owner = url
        .split("://")
        .nth(1)
        .and_then(|s| s.split('@').next())
        .unwrap();
    let refused = reporting_role(owner);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("not made by"),
        "the store's owner is no reporting role: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let reader_url = url.replacen(
        &format!("://{owner}@"),
        "://bi_reader:a%20long%20enough%20password@",
        1,
    );
    let psql = |sql: &str, vars: &[&str]| {
        with_stdin(
            std::process::Command::new("psql")
                .args([
                    reader_url.as_str(),
                    "-X",
                    "-q",
                    "--csv",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .args(vars.iter().flat_map(|v| ["-v", v])),
            sql.as_bytes(),
        )
    };
    let out = psql(sql, &[&format!("from={FROM}"), &format!("to={TO}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("office,figure,n"));
    let mut from_sql: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in lines {
        let cells: Vec<&str> = row.split(',').collect();
        let [office, figure, n] = cells[..] else {
            panic!("row {row}")
        };
        from_sql.insert((office.into(), figure.into()), n.parse().unwrap());
    }
    let figures: std::collections::BTreeSet<String> =
        from_sql.keys().map(|(_, f)| f.clone()).collect();
    for f in [
        "calls",
        "callers",
        "visits",
        "purchases",
        "amount_fen",
        "buyers",
        "followups.done",
    ] {
        assert!(figures.contains(f), "the query gives {f}: {figures:?}");
    }
    // Every row is the report's figure; every figure the query gives is
    // there for each province the report counts it for.
    for l in national["lines"].as_array().unwrap() {
        let office = l["office"].as_str().unwrap();
        let mut report = BTreeMap::new();
        numbers(l, "", &mut report);
        for figure in &figures {
            let want = report[&format!(".{figure}")];
            let got = from_sql.get(&(office.to_string(), figure.clone())).copied();
            assert_eq!(got.unwrap_or(0), want, "office {office}, {figure}");
            assert!(got.is_some() || want == 0);
        }
    }
    assert!(from_sql.keys().all(|(o, _)| o.len() == 2));
    // The login reads the projections only, and writes nothing.
    for (sql, why) in [
        ("SELECT count(*) FROM changes", "permission denied"),
        ("SELECT count(*) FROM audit", "permission denied"),
        ("SELECT count(*) FROM devices", "permission denied"),
        ("DELETE FROM calls", "read-only transaction"),
    ] {
        let out = psql(sql, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{sql}: {err}");
    }
}

/// The follow-up figures of each office's line of a national report from
/// FROM to `until` (due, on time, overdue, and the non-visitors' share)
/// equal what the follow-up rules give for the
/// generated events: `schedule` applied to every dossier as headquarters
/// holds it, counted by the report's definitions. The report reads them from
/// tallies, covering indexes and an R*Tree kept by triggers; this is the
/// oracle for all of that.
fn followup_figures_follow_the_rules(hq: &Office, national: &Value, until: &str) {
    use keqing_shared::followup::{Cadence, SlotStatus, schedule};
    let (from, to) = (
        keqing_shared::when::parse_date(FROM).unwrap(),
        keqing_shared::when::parse_date(until).unwrap(),
    );
    let desk = keqing_office::desk::Desk::open(&hq.dir).unwrap();
    let mut expected: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for id in hq.heads().keys() {
        if id.starts_with("roster-") || keqing_shared::nonpatient::parse_log_id(id).is_some() {
            continue;
        }
        let (view, _) = desk.dossier(id).unwrap();
        let f = expected.entry(view.office.clone()).or_default();
        for s in schedule(&view) {
            let not_visited = s.cadence == Cadence::NotVisited;
            if s.deadline >= from && s.deadline <= to && keqing_shared::report::counts_as_due(&s) {
                f[0] += 1;
                f[1] += u64::from(s.on_time());
                f[3] += u64::from(not_visited);
                f[4] += u64::from(not_visited && s.on_time());
            }
            f[2] += u64::from(s.status_on(to) == SlotStatus::Overdue);
        }
    }
    let lines = national["lines"].as_array().unwrap();
    let mut exercised = [0u64; 5];
    for (office, f) in &expected {
        let l = lines.iter().find(|l| l["office"] == *office).unwrap();
        let got: Vec<u64> = [
            "due",
            "due_done_on_time",
            "overdue",
            "not_visited_due",
            "not_visited_on_time",
        ]
        .iter()
        .map(|k| l["followups"][k].as_u64().unwrap())
        .collect();
        assert_eq!(got, f.to_vec(), "office {office}: {}", l["followups"]);
        for (e, n) in exercised.iter_mut().zip(f) {
            *e += n;
        }
    }
    assert!(
        exercised.iter().all(|n| *n > 0),
        "the scenario makes slots due, on time, overdue, for non-visitors: {exercised:?}"
    );
}
