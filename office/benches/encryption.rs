//! The cost of encryption at rest: prints figures, never fails on time.
//!
//! Two replicas of the same office in one process, one plain and one
//! encrypted with SQLCipher, get the same work in alternation (so both see
//! the same machine at the same moment): a fill of existing dossiers, then
//! durable edits one by one (synchronous=FULL, as at the office desk), the
//! day's follow-up list, opening the replica, and the bytes on disk. The
//! plain replica is the baseline; the figures that matter are the ratios.
//!
//! KEQING_BENCH_DOSSIERS (default 5 000) dossiers are filled first,
//! KEQING_BENCH_EDITS (default 1 000) edits measured on each replica.

/// The allocator of the `keqing` binary, so the figures are those of what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use keqing_office::desk::{CallInput, Desk};
use keqing_office::store::{ReplicaKey, use_key};
use keqing_shared::staff::Role;
use std::path::Path;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// p50 and p99 of `xs`, in milliseconds.
fn p50_p99(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (pct(&xs, 0.5), pct(&xs, 0.99))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

const SURNAMES: &[&str] = &["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "秀英", "桂兰", "建国", "玉梅",
];
const DISEASES: &[&str] = &["冠心病", "高血压", "脑梗塞", "心绞痛", "高血脂"];
const SOURCES: &[&str] = &["电视", "报纸", "广播", "朋友介绍", "网络"];

/// The i-th synthetic call: a new patient for i < `fill`, afterwards a
/// second call of an earlier patient every other time (find, then append).
fn call(i: u64, fill: u64, today: NaiveDate) -> CallInput {
    let k = i as usize;
    let patient = if i >= fill && i.is_multiple_of(2) {
        i % fill
    } else {
        i
    };
    let at: NaiveDateTime = (today - Duration::days((patient % 60) as i64))
        .and_hms_opt(9, 0, 0)
        .expect("time")
        + Duration::minutes((i % 480) as i64);
    CallInput {
        phone: format!("13{:09}", patient),
        name: format!(
            "{}{}",
            SURNAMES[patient as usize % SURNAMES.len()],
            GIVEN[(patient as usize / 7) % GIVEN.len()]
        ),
        age: Some(45 + (patient % 40) as i64),
        disease: Some(DISEASES[k % DISEASES.len()].into()),
        source: SOURCES[k % SOURCES.len()].into(),
        staff: "李娜".into(),
        at,
        ..Default::default()
    }
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

struct Figures {
    fill_per_s: f64,
    edit: (f64, f64),
    edits_per_s: f64,
    due: (f64, f64),
    open: (f64, f64),
    bytes: u64,
}

fn main() {
    let fill = env_or("KEQING_BENCH_DOSSIERS", 5_000).max(1);
    let edits = env_or("KEQING_BENCH_EDITS", 1_000).max(1);
    let today = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
    let tmp = tempfile::tempdir().expect("temp dir");
    let plain_dir = tmp.path().join("plain");
    let encrypted_dir = tmp.path().join("encrypted");
    println!(
        "keqing encryption-at-rest benchmark — {fill} dossiers filled, {edits} durable edits per replica"
    );

    // The plain replica is made before a key is in force; every replica
    // made after it is encrypted (a plain one stays plain when reopened).
    let mut plain = Desk::init(&plain_dir, "44", "前台1").expect("init plain");
    use_key(ReplicaKey::new("bench-口令-2026".into()).expect("key"));
    let mut encrypted = Desk::init(&encrypted_dir, "44", "前台2").expect("init encrypted");
    assert!(keqing_office::store::is_encrypted(&encrypted_dir).expect("probe"));
    assert!(!keqing_office::store::is_encrypted(&plain_dir).expect("probe"));
    for desk in [&mut plain, &mut encrypted] {
        desk.add_staff("李娜", Role::Consultant).expect("staff");
    }

    // Fill, in alternating slices of 500 so both meet the same machine.
    let mut fill_ms = [0.0f64; 2];
    let mut done = 0;
    while done < fill {
        let upto = (done + 500).min(fill);
        for (side, desk) in [&mut plain, &mut encrypted].into_iter().enumerate() {
            let t = Instant::now();
            desk.replica().set_bulk_load(true).expect("bulk");
            desk.replica_mut().begin_bulk().expect("bulk");
            for i in done..upto {
                desk.register_call(&call(i, fill, today)).expect("fill");
            }
            desk.replica_mut().finish_bulk(true).expect("commit");
            desk.replica().set_bulk_load(false).expect("bulk off");
            fill_ms[side] += ms(t);
        }
        done = upto;
    }

    // Durable edits, one transaction each, alternating replicas.
    let mut edit_ms = [Vec::new(), Vec::new()];
    for i in fill..fill + edits {
        for (side, desk) in [&mut plain, &mut encrypted].into_iter().enumerate() {
            let input = call(i, fill, today);
            let t = Instant::now();
            desk.register_call(&input).expect("edit");
            edit_ms[side].push(ms(t));
        }
    }

    // Reads: the day's follow-up list.
    let mut due_ms = [Vec::new(), Vec::new()];
    let mut due_len = [0usize; 2];
    for round in 0..30 {
        for (side, desk) in [&plain, &encrypted].into_iter().enumerate() {
            let t = Instant::now();
            let list = desk
                .due(today - Duration::days(round % 7), None)
                .expect("due");
            due_ms[side].push(ms(t));
            due_len[side] += list.len();
        }
    }
    assert_eq!(due_len[0], due_len[1], "both replicas hold the same work");
    drop((plain, encrypted));

    // Opening (the encrypted one derives its key: PBKDF2, 256 000 rounds).
    let mut open_ms = [Vec::new(), Vec::new()];
    for _ in 0..10 {
        for (side, dir) in [&plain_dir, &encrypted_dir].into_iter().enumerate() {
            let t = Instant::now();
            let desk = Desk::open(dir).expect("open");
            open_ms[side].push(ms(t));
            drop(desk);
        }
    }

    let figures: Vec<Figures> = (0..2)
        .map(|side| {
            let total: f64 = edit_ms[side].iter().sum();
            Figures {
                fill_per_s: fill as f64 / (fill_ms[side] / 1000.0),
                edit: p50_p99(edit_ms[side].clone()),
                edits_per_s: edits as f64 / (total / 1000.0),
                due: p50_p99(due_ms[side].clone()),
                open: p50_p99(open_ms[side].clone()),
                bytes: file_bytes([&plain_dir, &encrypted_dir][side]),
            }
        })
        .collect();
    let (p, e) = (&figures[0], &figures[1]);
    println!(
        "  {:<34} {:>14} {:>14} {:>9}",
        "", "plain 明文", "SQLCipher 加密", "ratio"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "  {name:<34} {a:>11.3} {unit:<2} {b:>11.3} {unit:<2} {:>8.2}×",
            b / a
        );
    };
    row("fill (bulk), dossiers/s", p.fill_per_s, e.fill_per_s, "");
    row("durable edit p50", p.edit.0, e.edit.0, "ms");
    row("durable edit p99", p.edit.1, e.edit.1, "ms");
    row("durable edits/s", p.edits_per_s, e.edits_per_s, "");
    row("due list p50", p.due.0, e.due.0, "ms");
    row("due list p99", p.due.1, e.due.1, "ms");
    row("open replica p50", p.open.0, e.open.0, "ms");
    row(
        "bytes on disk (MB)",
        p.bytes as f64 / 1e6,
        e.bytes as f64 / 1e6,
        "",
    );
    println!(
        "  write cost of encryption: edit p50 {:+.1} %, p99 {:+.1} %, bulk fill {:+.1} % time",
        (e.edit.0 / p.edit.0 - 1.0) * 100.0,
        (e.edit.1 / p.edit.1 - 1.0) * 100.0,
        (p.fill_per_s / e.fill_per_s - 1.0) * 100.0
    );
}
