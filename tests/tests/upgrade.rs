//! Upgrades are real: a server store and an office replica written by the
//! code of an earlier commit (f22d5a9, before the projection tables changed
//! shape; see `tests/fixtures/upgrade-f22d5a9/make.sh`) open with today's
//! binaries, keep every document, give the same reports the old binaries
//! gave, and the upgraded server serves a new device all of it.

use keqing_tests::{Office, Server};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/upgrade-f22d5a9");

fn fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// Every field the old report had holds the same value in the new one
/// (later releases may add fields; none may change or lose one).
fn same_figures(old: &serde_json::Value, new: &serde_json::Value, path: &str) {
    match (old, new) {
        (serde_json::Value::Object(o), serde_json::Value::Object(n)) => {
            for (k, v) in o {
                let Some(nv) = n.get(k) else {
                    panic!("{path}.{k} is gone after the upgrade");
                };
                same_figures(v, nv, &format!("{path}.{k}"));
            }
        }
        (serde_json::Value::Array(o), serde_json::Value::Array(n)) => {
            assert_eq!(
                o.len(),
                n.len(),
                "{path}: {} items, now {}",
                o.len(),
                n.len()
            );
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                same_figures(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(old, new, "{path}"),
    }
}

/// The office's own report of the fixture's week, as JSON.
fn week_report(office: &Office) -> serde_json::Value {
    office
        .ok(&[
            "report",
            "daily",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-22",
            "--json",
        ])
        .json()
}

#[test]
fn stores_made_by_an_earlier_release_upgrade_with_their_documents_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let office_dir = tmp.path().join("office");
    std::fs::create_dir_all(&server_dir).unwrap();
    std::fs::create_dir_all(&office_dir).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("server.sqlite"),
        server_dir.join("server.sqlite"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("office.sqlite"),
        office_dir.join("keqing.sqlite"),
    )
    .unwrap();

    // The office replica: the same documents, the same report.
    let office = Office::new(&office_dir);
    let heads = serde_json::to_value(office.heads()).unwrap();
    assert_eq!(heads, fixture("heads.json"), "every document as it was");
    let report = week_report(&office);
    same_figures(&fixture("office-report.json"), &report, "office report");
    assert_eq!(report["total"]["calls"], 4, "the fixture's four calls");
    // Its follow-up list works on the new tables.
    office.ok(&["due", "--date", "2026-11-20"]);

    // The server store: the same national report, and rebuilding the
    // projections from the log gives it again.
    let national = |extra: &[&str]| {
        let mut args = vec![
            "report",
            "national",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-22",
            "--json",
        ];
        args.extend(extra);
        let r = Server::admin(&server_dir, &args);
        assert!(r.ok, "{}", r.stderr);
        r.json()
    };
    let upgraded = national(&[]);
    same_figures(
        &fixture("national-report.json"),
        &upgraded,
        "national report",
    );
    let r = Server::admin(&server_dir, &["project", "--rebuild"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(national(&[]), upgraded, "rebuild == upgraded");
    // `compact` packs the snapshots this release stored raw (the log is
    // younger than its horizon: nothing of it goes); once is enough.
    let compact = || {
        let r = Server::admin(&server_dir, &["compact", "--keep-days", "30", "--json"]);
        assert!(r.ok, "{}", r.stderr);
        r.json()
    };
    let first = compact();
    let repacked = &first["repacked"];
    assert!(repacked["documents"].as_u64().unwrap() > 0, "{first}");
    assert!(
        repacked["bytes_after"].as_u64().unwrap() < repacked["bytes_before"].as_u64().unwrap(),
        "{first}"
    );
    assert_eq!(first["changes"], 0, "{first}");
    assert_eq!(compact()["repacked"]["documents"], 0);
    let r = Server::admin(&server_dir, &["project", "--rebuild"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(national(&[]), upgraded, "repacked and rebuilt == upgraded");

    // The upgraded server serves a new device of the office everything.
    let server = Server::start(&server_dir, "127.0.0.1:0");
    let fresh = Office::new(tmp.path().join("fresh"));
    fresh.enroll_on(&server, Some("44"), "前台2");
    fresh.ok(&["sync"]);
    assert_eq!(
        serde_json::to_value(fresh.heads()).unwrap(),
        fixture("heads.json"),
        "a new device gets every document"
    );
    same_figures(
        &fixture("office-report.json"),
        &week_report(&fresh),
        "new device",
    );
}
