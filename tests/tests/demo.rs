//! `keqing demo` as a newcomer runs it: a real process that starts its own
//! server, plays offices offline and online, and checks itself; its JSON
//! summary must agree with what the kept data says afterwards.

use keqing_tests::{Office, Server, keqing_bin};
use std::process::Command;

#[test]
fn a_small_demo_converges_and_its_kept_data_agrees_with_its_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("demo");
    let out = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            "3",
            "--days",
            "4",
            "--patients",
            "10",
            "--seed",
            "7",
            "--start",
            "2026-11-16",
        ])
        .arg("--keep")
        .arg(&keep)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["converged"], true, "{summary:#}");
    assert_eq!(summary["offices"], 3);
    assert_eq!(summary["devices"], 7);
    for c in summary["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert!(summary["records"].as_u64().unwrap() > 30);
    assert!(
        summary["syncs_offline"].as_u64().unwrap() > 0,
        "some office was offline"
    );
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    let national = &summary["national"];
    assert!(national["calls"].as_u64().unwrap() >= 30);

    // The kept server store reports the same totals.
    let r = Server::admin(
        &keep.join("server"),
        &[
            "report",
            "national",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-19",
            "--json",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(&r.json()["total"], national);
    // The office's whole day is played, and the checks cover it.
    let total = |section: &str| -> u64 {
        let report = r.json();
        let b = report[section].as_array().unwrap();
        b.iter().find(|b| b["office"] == "total").unwrap()["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_u64().unwrap())
            .sum()
    };
    assert!(total("nonpatient_calls") > 0, "non-patient calls played");
    assert!(total("not_bought_reasons") > 0, "not-bought reasons played");
    let names: Vec<&str> = summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for covered in ["非正常咨询", "未购原因", "停访", "外送"] {
        assert!(
            names.iter().any(|n| n.contains(covered)),
            "the check covers {covered}: {names:?}"
        );
    }
    // A kept office device works as any replica does.
    let device = Office::new(keep.join("11").join("北京前台1"));
    let due = device.ok(&["due", "--date", "2026-11-19", "--json"]).json();
    assert!(due.is_array());
    let own = device
        .ok(&[
            "report",
            "daily",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-19",
            "--json",
        ])
        .json();
    assert_eq!(own["lines"][0], r.json()["lines"][0], "北京's line");

    // Same seed, same week: the generated events are deterministic.
    let again = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            "3",
            "--days",
            "4",
            "--patients",
            "10",
            "--seed",
            "7",
            "--start",
            "2026-11-16",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(again.status.success());
    let summary2: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary2["national"], summary["national"]);
    assert_eq!(summary2["records"], summary["records"]);

    // Bad options are refused with a clear error.
    let bad = Command::new(keqing_bin())
        .args(["demo", "--offices", "40"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--offices"));
    let reused = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            "1",
            "--days",
            "1",
            "--patients",
            "1",
            "--keep",
        ])
        .arg(&keep)
        .output()
        .unwrap();
    assert!(
        !reused.status.success(),
        "a non-empty --keep directory is refused"
    );
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("is not empty; give a new directory"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    // No day after today; by default the days end yesterday.
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let tomorrow = (today + chrono::Duration::days(1)).to_string();
    let ahead = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            "1",
            "--days",
            "1",
            "--start",
            &tomorrow,
        ])
        .output()
        .unwrap();
    assert!(!ahead.status.success());
    assert!(
        String::from_utf8_lossy(&ahead.stderr).contains("after today"),
        "{}",
        String::from_utf8_lossy(&ahead.stderr)
    );
    let recent = Command::new(keqing_bin())
        .args([
            "demo",
            "--offices",
            "1",
            "--days",
            "2",
            "--patients",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        recent.status.success(),
        "{}",
        String::from_utf8_lossy(&recent.stderr)
    );
    let recent: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&recent.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recent["converged"], true, "{recent:#}");
    assert_eq!(
        recent["to"],
        (today - chrono::Duration::days(1)).to_string()
    );
}
