//! Duplicate patients and conflicting fields, end to end: the same patient
//! registered by two offices and by two devices offline, found, merged
//! (concurrently, and across offices by headquarters) without losing or
//! double-counting a record; a field set two ways offline, listed and
//! settled.

use keqing_tests::{Office, Server};
use serde_json::Value;

const DAY: &str = "2026-11-20";

fn call(o: &Office, phone: &str, name: &str, age: &str, staff: &str, at: &str) -> String {
    o.ok(&[
        "call", "--phone", phone, "--name", name, "--age", age, "--source", "电视", "--staff",
        staff, "--at", at, "--new",
    ])
    .last_line()
    .to_string()
}

fn national_calls(server: &Server) -> Value {
    let r = Server::admin(
        &server.dir,
        &["report", "national", "--from", DAY, "--to", DAY, "--json"],
    );
    assert!(r.ok, "{}", r.stderr);
    r.json()
}

fn line_calls(report: &Value, office: &str) -> u64 {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["office"] == office)
        .unwrap()["calls"]
        .as_u64()
        .unwrap()
}

/// The pairs `duplicates --json` lists, as (a, b, reason) with a < b.
fn pairs(o: &Office) -> Vec<(String, String, String)> {
    o.ok(&["duplicates", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"]["dossier_id"].as_str().unwrap().to_string(),
                p["b"]["dossier_id"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ordered(x: &str, y: &str) -> (String, String) {
    if x < y {
        (x.to_string(), y.to_string())
    } else {
        (y.to_string(), x.to_string())
    }
}

#[test]
fn duplicates_are_found_merged_once_and_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd1 = Office::new(tmp.path().join("gd1"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    let zj = Office::new(tmp.path().join("zj"));
    let hq = Office::new(tmp.path().join("hq"));
    gd1.enroll_on(&server, Some("44"), "前台1");
    gd1.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    gd1.ok(&["sync"]);
    gd2.enroll_on(&server, Some("44"), "前台2");
    gd2.ok(&["sync"]);
    zj.enroll_on(&server, Some("33"), "前台1");
    zj.ok(&["staff", "add", "--name", "周敏", "--role", "consultant"]);
    hq.enroll_on(&server, None, "数据中心1");

    // 张三 calls the Guangdong and the Zhejiang office from the same phone.
    let a = call(
        &gd1,
        "13800138000",
        "张三",
        "62",
        "李娜",
        "2026-11-20T09:00",
    );
    let b = call(
        &zj,
        "138 0013 8000",
        "张三",
        "62",
        "周敏",
        "2026-11-20T10:00",
    );
    // 李四 is registered twice in Guangdong, by two devices offline.
    let c = call(
        &gd1,
        "13900139000",
        "李四",
        "70",
        "李娜",
        "2026-11-20T11:00",
    );
    let d = call(
        &gd2,
        "13700137000",
        "李四",
        "71",
        "李娜",
        "2026-11-20T11:30",
    );
    for o in [&gd1, &gd2, &zj, &gd1, &hq] {
        o.ok(&["sync"]);
    }
    let before = national_calls(&server);
    assert_eq!(before["total"]["calls"], 4);

    // Candidates: the same name in one office on its devices; the same
    // phone across offices at headquarters.
    let (c1, d1) = ordered(&c, &d);
    assert!(pairs(&gd1).contains(&(c1.clone(), d1.clone(), "同名同省 年龄相近".into())));
    let (a1, b1) = ordered(&a, &b);
    assert!(
        pairs(&hq).contains(&(a1, b1, "同一电话 13800138000".into())),
        "{:?}",
        pairs(&hq)
    );
    // An office device cannot touch another office's dossier.
    let refused = zj.run(&["merge", &b, &a]);
    assert!(!refused.ok);
    // It does not hold Guangdong's: to it, there is no such patient.
    assert!(
        refused
            .stderr
            .contains(&format!("找不到患者 no patient matches `{a}`")),
        "{}",
        refused.stderr
    );

    // Both Guangdong devices merge 李四's pair while offline.
    let m1 = gd1.ok(&["merge", &c, &d, "--json"]).json();
    assert_eq!(m1["records_copied"], 1);
    let m2 = gd2.ok(&["merge", &c, &d, "--json"]).json();
    assert_eq!(m2["records_copied"], 1);
    // Merging again is harmless.
    assert_eq!(
        gd1.ok(&["merge", &c, &d, "--json"]).json()["records_copied"],
        0
    );
    // Headquarters folds 张三's Zhejiang dossier into the Guangdong one.
    hq.ok(&["merge", &a, &b]);
    for o in [&gd1, &gd2, &zj, &hq, &gd1, &gd2, &zj] {
        o.ok(&["sync"]);
    }

    // One result everywhere: the kept dossiers hold every call once.
    let calls_of = |o: &Office, id: &str| -> Vec<String> {
        o.ok(&["patient", id, "--json"]).json()["dossier"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let li = calls_of(&gd1, &c);
    assert_eq!(li.len(), 2, "both 李四 calls, once each");
    assert_eq!(calls_of(&gd2, &c), li);
    assert_eq!(calls_of(&hq, &c), li);
    assert_eq!(
        gd1.ok(&["heads", "--json"]).json(),
        gd2.ok(&["heads", "--json"]).json(),
        "the two devices converged"
    );
    let zhang = calls_of(&hq, &a);
    assert_eq!(
        zhang.len(),
        2,
        "the Zhejiang call moved into the kept dossier"
    );
    assert_eq!(calls_of(&gd1, &a), zhang);
    let dup = hq.ok(&["patient", &b, "--json"]).json();
    assert_eq!(dup["dossier"]["merged_into"], a.as_str());
    // The duplicate no longer answers its phone number: the kept one does.
    assert_eq!(
        gd1.ok(&["patient", "13800138000", "--json"]).json()["dossier"]["id"],
        a.as_str()
    );
    // Nothing left to merge, and no edits on a merged dossier.
    assert!(pairs(&gd1).is_empty(), "{:?}", pairs(&gd1));
    assert!(pairs(&hq).is_empty(), "{:?}", pairs(&hq));
    let edit_dup = gd1.run(&[
        "followup",
        "--patient",
        &d,
        "--staff",
        "李娜",
        "--outcome",
        "x",
    ]);
    assert!(!edit_dup.ok);
    assert!(
        edit_dup
            .stderr
            .contains(&format!("档案已合并 dossier {d} was merged into {c}")),
        "{}",
        edit_dup.stderr
    );

    // Headquarters merges and resolves, but records no office work.
    let hq_followup = hq.run(&[
        "followup",
        "--patient",
        &a,
        "--staff",
        "李娜",
        "--outcome",
        "x",
    ]);
    assert!(!hq_followup.ok);
    assert!(
        hq_followup.stderr.contains("headquarters"),
        "{}",
        hq_followup.stderr
    );

    // Counted once in every report: the same total, now under Guangdong.
    let after = national_calls(&server);
    assert_eq!(after["total"]["calls"], 4);
    assert_eq!(line_calls(&after, "44"), 4);
    assert_eq!(line_calls(&after, "33"), 0);
    let gd_own = gd1.ok(&["report", "daily", "--date", DAY, "--json"]).json();
    assert_eq!(gd_own["total"]["calls"], 4);
    let zj_own = zj.ok(&["report", "daily", "--date", DAY, "--json"]).json();
    assert_eq!(zj_own["total"]["calls"], 0);
}

#[test]
fn a_field_set_two_ways_offline_is_listed_and_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd1 = Office::new(tmp.path().join("gd1"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    gd1.enroll_on(&server, Some("44"), "前台1");
    gd1.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = call(
        &gd1,
        "13800138000",
        "张三",
        "62",
        "李娜",
        "2026-11-20T09:00",
    );
    gd1.ok(&["sync"]);
    gd2.enroll_on(&server, Some("44"), "前台2");
    gd2.ok(&["sync"]);
    assert_eq!(
        gd1.ok(&["conflicts", "--json"]).json(),
        serde_json::json!([])
    );

    gd1.ok(&["update", "--patient", &id, "--address", "广州市越秀区"]);
    gd2.ok(&["update", "--patient", &id, "--address", "广州市天河区"]);
    // The same value typed on both is agreement, not a conflict.
    gd1.ok(&["update", "--patient", &id, "--sex", "男"]);
    gd2.ok(&["update", "--patient", &id, "--sex", "男"]);
    for o in [&gd1, &gd2, &gd1] {
        o.ok(&["sync"]);
    }
    let listed = gd2.ok(&["conflicts", "--json"]).json();
    assert_eq!(
        listed,
        serde_json::json!([{
            "dossier_id": id,
            "office": "44",
            "name": "张三",
            "conflicts": [{"field": "address", "values": ["广州市天河区", "广州市越秀区"]}]
        }])
    );
    assert_eq!(gd1.ok(&["conflicts", "--json"]).json(), listed);

    // Bad resolutions change nothing.
    for (field, value, why) in [
        ("address", "", "invalid address: must not be empty"),
        (
            "age",
            "200",
            "invalid age: `200`: expected a whole number from 0 to 130",
        ),
        ("colour", "red", "invalid field: `colour`: expected one of"),
        ("sex", "x", "invalid sex: `x`: expected 男 or 女"),
    ] {
        let r = gd1.run(&["resolve", &id, field, value]);
        assert!(!r.ok, "{field}={value}");
        assert!(r.stderr.contains(why), "{field}={value}: {}", r.stderr);
    }
    assert_eq!(gd1.ok(&["conflicts", "--json"]).json(), listed);

    gd1.ok(&["resolve", &id, "address", "广州市越秀区"]);
    for o in [&gd1, &gd2] {
        o.ok(&["sync"]);
    }
    for o in [&gd1, &gd2] {
        assert_eq!(o.ok(&["conflicts", "--json"]).json(), serde_json::json!([]));
        let p = o.ok(&["patient", &id, "--json"]).json();
        assert_eq!(p["dossier"]["patient"]["address"], "广州市越秀区");
    }
}
