//! A full patient journey through the real `keqing` binary, offline:
//! call → not visited → due within 3 days → visit → purchase → due on days
//! 1, 3, 6, 10, 15 → follow-ups recorded → daily report figures exact.

use keqing_tests::Office;
use serde_json::Value;

fn setup() -> (tempfile::TempDir, Office) {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("gd"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    office.ok(&["staff", "add", "--name", "王医生", "--role", "坐诊专家"]);
    office.ok(&["staff", "add", "--name", "赵敏", "--role", "followup"]);
    (tmp, office)
}

/// (name, reasons) of each entry on the due list of `date`.
fn due(office: &Office, date: &str) -> Vec<(String, Vec<String>, bool)> {
    let v = office.ok(&["due", "--date", date, "--json"]).json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let reasons = e["slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["reason"].as_str().unwrap().to_string())
                .collect();
            (
                e["name"].as_str().unwrap().to_string(),
                reasons,
                e["overdue"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn report(office: &Office, date: &str) -> Value {
    office
        .ok(&["report", "daily", "--date", date, "--json"])
        .json()["total"]
        .clone()
}

/// The whole report of a day (sections beyond the office's line).
fn full_report(office: &Office, date: &str) -> Value {
    office
        .ok(&["report", "daily", "--date", date, "--json"])
        .json()
}

fn followup(office: &Office, patient: &str, at: &str) {
    office.ok(&[
        "followup",
        "--patient",
        patient,
        "--staff",
        "赵敏",
        "--outcome",
        "服药正常",
        "--at",
        at,
    ]);
}

#[test]
fn full_patient_journey() {
    let (_tmp, office) = setup();
    let call = office.ok(&[
        "call",
        "--phone",
        "138-0013-8000",
        "--name",
        "张三",
        "--age",
        "62",
        "--disease",
        "冠心病",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--relation",
        "本人",
        "--knows",
        "是",
        "--at",
        "2026-10-09T09:30",
    ]);
    let zhang = call.last_line().to_string();
    assert_eq!(zhang.len(), 36, "a UUID on the last line: {}", call.stdout);
    office.ok(&[
        "call",
        "--phone",
        "13900139000",
        "--name",
        "李四",
        "--age",
        "70",
        "--disease",
        "高血压",
        "--source",
        "报纸",
        "--staff",
        "李娜",
        "--at",
        "2026-10-09T10:00",
    ]);
    // A second call from the same number (typed differently) finds the same dossier.
    let again = office.ok(&[
        "call",
        "--phone",
        "+86 13800138000",
        "--name",
        "张三",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-10-09T16:00",
    ]);
    assert_eq!(again.last_line(), zhang);

    // Not visited: due from the next day, within 3 days.
    assert!(due(&office, "2026-10-09").is_empty());
    let d21 = due(&office, "2026-10-10");
    assert_eq!(d21.len(), 2);
    assert!(
        d21.iter()
            .all(|(_, r, overdue)| r == &["未到堂三日内回访"] && !overdue)
    );

    followup(&office, &zhang, "2026-10-11T09:00");
    assert_eq!(
        due(&office, "2026-10-11"),
        [(
            "李四".to_string(),
            vec!["未到堂三日内回访".to_string()],
            false
        )]
    );
    // 李四 is never called back: overdue after the third day.
    assert_eq!(
        due(&office, "2026-10-13"),
        [(
            "李四".to_string(),
            vec!["未到堂三日内回访".to_string()],
            true
        )]
    );

    // Visit and purchase.
    office.ok(&[
        "visit",
        "--patient",
        "13800138000",
        "--staff",
        "王医生",
        "--bought",
        "--at",
        "2026-10-13T10:00",
    ]);
    office.ok(&[
        "purchase",
        "--patient",
        &zhang[..30],
        "--staff",
        "王医生",
        "--product",
        "金诃心脑康",
        "--quantity",
        "3",
        "--amount",
        "1280.50",
        "--runout",
        "2026-11-12",
        "--invoice",
        "No.0001",
        "--gifts",
        "血压计",
        "--gift-receipt",
        "LP-7",
        "--at",
        "2026-10-13T10:30",
    ]);

    // Days 1, 3, 6, 10, 15 after the purchase (10-13).
    for (day, date) in [
        (1, "2026-10-14"),
        (3, "2026-10-16"),
        (6, "2026-10-19"),
        (10, "2026-10-23"),
        (15, "2026-10-28"),
    ] {
        let list = due(&office, date);
        let zhang_entry: Vec<_> = list.iter().filter(|(n, _, _)| n == "张三").collect();
        assert_eq!(zhang_entry.len(), 1, "day {day}: {list:?}");
        assert_eq!(
            zhang_entry[0].1,
            [format!("购药后第{day}天回访")],
            "day {day}"
        );
        assert!(!zhang_entry[0].2, "day {day} is due, not overdue");
        followup(&office, &zhang, &format!("{date}T15:00"));
        assert!(
            due(&office, date).iter().all(|(n, _, _)| n != "张三"),
            "day {day} done"
        );
    }
    // Between the fixed days nothing is due for 张三.
    assert!(
        due(&office, "2026-10-20")
            .iter()
            .all(|(n, _, _)| n != "张三")
    );

    // Daily summaries, exact.
    let full20 = full_report(&office, "2026-10-09");
    let r20 = &full20["total"];
    assert_eq!(
        (r20["calls"].clone(), r20["callers"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(
        full20["by_source"],
        serde_json::json!([
            {"source": "电视", "calls": 2, "callers": 1, "visited": 0, "bought": 0, "kind": "", "spend_fen": 0, "sales_fen": 0, "cost_per_call_fen": null, "cost_per_visitor_fen": null, "cost_per_buyer_fen": null, "sales_per_yuan": null},
            {"source": "报纸", "calls": 1, "callers": 1, "visited": 0, "bought": 0, "kind": "", "spend_fen": 0, "sales_fen": 0, "cost_per_call_fen": null, "cost_per_visitor_fen": null, "cost_per_buyer_fen": null, "sales_per_yuan": null}
        ])
    );
    assert_eq!(
        full20["by_disease"],
        serde_json::json!([{"label": "冠心病", "count": 1}, {"label": "未填", "count": 1}, {"label": "高血压", "count": 1}])
    );
    let staff20 = &full20["staff"];
    assert_eq!(staff20.as_array().unwrap().len(), 1, "{staff20}");
    assert_eq!(
        (
            staff20[0]["staff"].clone(),
            staff20[0]["calls"].clone(),
            staff20[0]["callers"].clone()
        ),
        ("李娜".into(), 3.into(), 2.into())
    );

    let r23 = report(&office, "2026-10-12");
    // Both non-visitor slots end on 10-12; 张三's was done on 10-11.
    assert_eq!(
        r23["followups"],
        serde_json::json!({"done": 0, "due": 2, "due_done_on_time": 1, "overdue": 0,
                           "not_visited_due": 2, "not_visited_on_time": 1})
    );

    let r24 = report(&office, "2026-10-13");
    assert_eq!(
        (
            r24["visits"].clone(),
            r24["visits_bought"].clone(),
            r24["purchases"].clone()
        ),
        (1.into(), 1.into(), 1.into())
    );
    assert_eq!(r24["amount_fen"], 128050);
    assert_eq!(
        r24["followups"],
        serde_json::json!({"done": 0, "due": 0, "due_done_on_time": 0, "overdue": 1,
                           "not_visited_due": 0, "not_visited_on_time": 0})
    );

    let r25 = report(&office, "2026-10-14");
    assert_eq!(
        r25["followups"],
        serde_json::json!({"done": 1, "due": 1, "due_done_on_time": 1, "overdue": 1,
                           "not_visited_due": 0, "not_visited_on_time": 0})
    );
    let staff25 = &full_report(&office, "2026-10-14")["staff"];
    assert_eq!(staff25.as_array().unwrap().len(), 1, "{staff25}");
    assert_eq!(
        (
            staff25[0]["staff"].clone(),
            staff25[0]["followups"].clone(),
            staff25[0]["followups_on_time"].clone()
        ),
        ("赵敏".into(), 1.into(), 1.into())
    );
    // The purchase on 10-13 is 张三's first: a new buyer, not yet a repeat one.
    let r24 = report(&office, "2026-10-13");
    assert_eq!(
        (
            r24["buyers"].clone(),
            r24["new_buyers"].clone(),
            r24["repeat_buyers"].clone()
        ),
        (1.into(), 1.into(), 0.into())
    );

    // The dossier holds the whole history.
    let p = office.ok(&["patient", &zhang, "--json"]).json();
    let d = &p["dossier"];
    assert_eq!(d["patient"]["name"], "张三");
    assert_eq!(d["patient"]["phones"], serde_json::json!(["13800138000"]));
    assert_eq!(d["calls"].as_array().unwrap().len(), 2);
    assert_eq!(d["followups"].as_array().unwrap().len(), 6);
    assert_eq!(d["purchases"][0]["runout"], "2026-11-12");
    assert_eq!(d["purchases"][0]["gift_receipt"], "LP-7");
    let text = office.ok(&["patient", "13800138000"]).stdout;
    assert!(text.contains("用药到期【2026-11-12】"), "{text}");

    // Search by name, phone fragment, disease.
    for q in ["张三", "38000", "冠心病"] {
        let rows = office.ok(&["search", q, "--json"]).json();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{q}");
        assert_eq!(rows[0]["dossier_id"], zhang.as_str());
    }
}

#[test]
fn other_records_and_problem_lifecycle() {
    let (_tmp, office) = setup();
    let id = office
        .ok(&[
            "call",
            "--phone",
            "010-65529988",
            "--name",
            "王五",
            "--age",
            "58",
            "--source",
            "广播",
            "--staff",
            "李娜",
            "--at",
            "2026-10-09T09:00",
        ])
        .last_line()
        .to_string();
    office.ok(&[
        "hospital",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--admitted",
        "2026-10-10",
        "--hospital",
        "市人民医院",
        "--at",
        "2026-10-10T12:00",
    ]);
    office.ok(&[
        "greeting",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--notes",
        "春节问候",
        "--at",
        "2026-10-11T09:00",
    ]);
    office.ok(&[
        "homevisit",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--at",
        "2026-10-12T09:00",
    ]);
    office.ok(&[
        "delivery",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--product",
        "脑心通",
        "--quantity",
        "2",
        "--address",
        "广州市越秀区",
        "--due",
        "2026-10-13",
        "--at",
        "2026-10-12T15:00",
    ]);
    // Still to deliver, then delivered.
    let open = office.ok(&["deliveries", "--json"]).json();
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open[0]["due"], "2026-10-13");
    assert_eq!(open[0]["product"], "脑心通");
    office.ok(&[
        "deliver",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--at",
        "2026-10-13T11:00",
    ]);
    assert_eq!(
        office.ok(&["deliveries", "--json"]).json(),
        serde_json::json!([])
    );
    office.ok(&[
        "typical",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--notes",
        "血压稳定",
        "--at",
        "2026-10-13T09:00",
    ]);
    let problem = office
        .ok(&[
            "problem",
            "open",
            "--patient",
            &id,
            "--staff",
            "李娜",
            "--description",
            "投诉送货慢",
            "--at",
            "2026-10-13T10:00",
        ])
        .last_line()
        .to_string();
    // A problem is called back at once.
    let list = office.ok(&["due", "--date", "2026-10-13", "--json"]).json();
    assert!(
        list[0]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "问题患者立即回访")
    );
    office.ok(&[
        "problem",
        "handle",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--at",
        "2026-10-13T11:00",
    ]);
    office.ok(&[
        "problem",
        "resolve",
        "--patient",
        &id,
        "--staff",
        "李娜",
        "--problem",
        &problem,
        "--resolution",
        "已道歉补送",
        "--at",
        "2026-10-14T11:00",
    ]);
    let d = office.ok(&["patient", "01065529988", "--json"]).json();
    let d = &d["dossier"];
    assert_eq!(d["hospital_stays"][0]["hospital"], "市人民医院");
    assert_eq!(d["greetings"][0]["notes"], "春节问候");
    assert_eq!(d["home_visits"].as_array().unwrap().len(), 1);
    assert_eq!(d["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(d["deliveries"][0]["status"], "delivered");
    assert_eq!(d["deliveries"][0]["settled_by"], "李娜");
    assert_eq!(d["typical"]["flagged"], true);
    assert_eq!(d["problems"][0]["state"], "resolved");
    assert_eq!(d["problems"][0]["resolution"], "已道歉补送");
    assert_eq!(d["problems"][0]["handling_at"], "2026-10-13T11:00:00");
    // The home visit on 10-12 satisfied the hospital call-back (late).
    let slots = office.ok(&["patient", &id, "--json"]).json()["slots"].clone();
    let hosp = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["reason"] == "住院立即回访")
        .unwrap()
        .clone();
    assert_eq!(hosp["satisfied_at"], "2026-10-12T09:00:00");
}

#[test]
fn same_name_and_age_finds_the_dossier_and_similar_ones_are_reported() {
    let (_tmp, office) = setup();
    let a = office.ok(&[
        "call",
        "--phone",
        "13800000001",
        "--name",
        "陈红",
        "--age",
        "60",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-10-09T09:00",
    ]);
    // Same name, age within 1, another phone: the same patient, phone added.
    let b = office.ok(&[
        "call",
        "--phone",
        "13800000002",
        "--name",
        "陈红",
        "--age",
        "61",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-10-10T09:00",
    ]);
    assert_eq!(a.last_line(), b.last_line());
    let p = office.ok(&["patient", "13800000002", "--json"]).json();
    assert_eq!(
        p["dossier"]["patient"]["phones"],
        serde_json::json!(["13800000001", "13800000002"])
    );
    // A caller on a known number for another patient: --new, reported as a possible duplicate when similar.
    let c = office.ok(&[
        "call",
        "--phone",
        "13800000003",
        "--name",
        "陈红",
        "--age",
        "75",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-10-11T09:00",
    ]);
    assert_ne!(c.last_line(), a.last_line());
    assert!(
        !c.stdout.contains("可能重复"),
        "age 75 vs 61 is not similar: {}",
        c.stdout
    );
    let d = office.ok(&[
        "call",
        "--phone",
        "13800000004",
        "--name",
        "陈红",
        "--source",
        "电视",
        "--staff",
        "李娜",
        "--at",
        "2026-10-11T10:00",
        "--json",
    ]);
    let d = d.json();
    assert_eq!(d["matched_by"], "new");
    assert_eq!(
        d["possible_duplicates"].as_array().unwrap().len(),
        2,
        "no age given: both others are candidates"
    );
}
