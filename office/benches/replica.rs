//! Office replica benchmark: prints figures, never fails on time.
//!
//! Fills a replica with synthetic dossiers (100 000 by default; set
//! KEQING_BENCH_DOSSIERS), then measures, with ordinary durability
//! (synchronous=FULL):
//! - registering a call (find-or-create dossier, one transaction): p50/p99,
//!   as the workstation runs it (WAL checkpoints on a background thread)
//!   and with SQLite checkpointing inside the commit that fills the WAL;
//! - the day's follow-up list (`due`): repeated, first after other work,
//!   and from a fresh connection (a one-shot `keqing due`);
//! - the supervisor's lists (`list --category C`, `--typical`, `--problem`:
//!   the 200 most recently in touch) and their counts (`list`), repeated
//!   and from a fresh connection;
//! - a patient lookup by phone (resolve, load the document, read it);
//! - packing a saved dossier and unpacking it (documents are kept
//!   deflated at rest), against the register call;
//! - bytes per dossier on disk.
//!
//! KEQING_BENCH_KEEP=DIR keeps a copy of the filled replica and
//! KEQING_BENCH_REUSE=DIR measures a copy of it instead of filling again.
//!
//! Baselines measured in the same run, so ratios travel between machines:
//! - register: a bare SQLite insert of a same-sized blob in its own
//!   FULL-sync transaction (the fsync floor of any durable edit);
//! - due list: the same list computed the naive way, by loading every
//!   document and deriving its schedule (what the projection saves);
//! - lists: the category counts computed the same naive way (in the same
//!   pass over the documents).

/// The allocator of the `keqing` binary, so the figures are those of what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use keqing_office::desk::{CallInput, Desk, new_id};
use keqing_office::store::ListFilter;
use keqing_shared::dossier::Dossier;
use keqing_shared::followup::{open_on, schedule};
use keqing_shared::lists::Category;
use keqing_shared::records::{
    FollowUp, PlanAction, PlanChange, Problem, ProblemState, Purchase, StopReason, TypicalCase,
    Visit,
};
use keqing_shared::staff::Role;
use std::time::Instant;

/// xorshift64*: deterministic synthetic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
    "秀英", "桂兰", "建国", "玉梅",
];
const DISEASES: &[&str] = &[
    "冠心病",
    "高血压",
    "脑梗塞",
    "心绞痛",
    "高血脂",
    "脑供血不足",
    "心律失常",
];
const SOURCES: &[&str] = &[
    "电视",
    "报纸",
    "广播",
    "户外广告",
    "朋友介绍",
    "网络",
    "药店",
];

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let (p50, p99) = (pct(&xs, 0.5), pct(&xs, 0.99));
    println!(
        "  {name:<40} p50 {p50:>8.3} ms   p99 {p99:>8.3} ms   (n={})",
        xs.len()
    );
    (p50, p99)
}

fn phone_of(i: u64) -> String {
    format!("13{:09}", i)
}

fn main() {
    let n: u64 = std::env::var("KEQING_BENCH_DOSSIERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("office");
    let today = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
    let at = |day_offset: i64, minute: u64| -> NaiveDateTime {
        (today - Duration::days(day_offset))
            .and_hms_opt(9, 0, 0)
            .expect("time")
            + Duration::minutes(minute as i64)
    };
    println!("keqing replica benchmark — {n} synthetic dossiers over two years of office work");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // KEQING_BENCH_REUSE=DIR measures a copy of a replica an earlier run
    // kept (KEQING_BENCH_KEEP with the same KEQING_BENCH_DOSSIERS) instead
    // of filling one again: the fill of 100 000 dossiers takes ~10 minutes.
    let file = keqing_office::store::DB_FILE;
    let mut desk = match std::env::var_os("KEQING_BENCH_REUSE") {
        Some(kept) => {
            std::fs::create_dir_all(&dir).expect("replica dir");
            std::fs::copy(std::path::Path::new(&kept).join(file), dir.join(file))
                .expect("copy the kept replica");
            println!("fill: reused a copy of {}", kept.display());
            Desk::open(&dir).expect("open the kept replica")
        }
        None => fill(&dir, n, today, &mut rng),
    };
    // KEQING_BENCH_KEEP=DIR keeps a copy of the filled replica (before any
    // measurement touches it) for inspection or for KEQING_BENCH_REUSE.
    if let Some(keep) = std::env::var_os("KEQING_BENCH_KEEP") {
        std::fs::create_dir_all(&keep).expect("keep dir");
        // file_bytes() checkpoints the WAL (TRUNCATE): the file alone is the replica.
        desk.replica().file_bytes().expect("checkpoint");
        std::fs::copy(dir.join(file), std::path::Path::new(&keep).join(file))
            .expect("keep the filled replica");
    }
    // Register a call: new callers and known callers, full durability.
    // First with SQLite checkpointing the WAL inside the commit that fills
    // it (a one-shot `keqing call`), then as the workstation runs (`keqing
    // ui`: checkpoints on a background thread).
    let mut register = |desk: &mut Desk, ks: std::ops::Range<u64>| -> Vec<f64> {
        let mut times = Vec::new();
        for k in ks {
            let known = k % 2 == 0;
            let phone = if known {
                phone_of(rng.below(n))
            } else {
                // Past every phone the fill or an earlier run's kept replica used.
                phone_of(n + 1_000 + k)
            };
            let input = CallInput {
                phone,
                name: format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN)),
                age: Some(60),
                disease: Some(rng.pick(DISEASES).into()),
                source: rng.pick(SOURCES).into(),
                staff: "李娜".into(),
                at: at(0, rng.below(480)),
                ..Default::default()
            };
            let t = Instant::now();
            desk.register_call(&input).expect("call");
            times.push(ms(t.elapsed()));
        }
        times
    };
    let reg_inline = register(&mut desk, 0..1000);
    desk.replica_mut()
        .checkpoint_in_background()
        .expect("background checkpoints");
    let reg = register(&mut desk, 1000..2000);

    // Baseline: a bare durable insert of a same-sized blob.
    let blob_len = desk.replica().document_bytes().expect("bytes");
    let avg_doc = (blob_len.1 / blob_len.0.max(1)) as usize;
    let base = {
        let conn =
            rusqlite::Connection::open(tmp.path().join("baseline.sqlite")).expect("baseline db");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.pragma_update(None, "synchronous", "FULL")
            .expect("full");
        conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, bytes BLOB)")
            .expect("table");
        let blob = vec![7u8; avg_doc];
        let mut xs = Vec::new();
        for k in 0..1000 {
            let t = Instant::now();
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                rusqlite::params![format!("k{k}"), blob],
            )
            .expect("insert");
            xs.push(ms(t.elapsed()));
        }
        xs
    };

    // The due list: the first one after the registrations (its pages are
    // not in SQLite's cache), then repeated as a workstation shows it, and
    // from a fresh connection each time, as a one-shot `keqing due` reads it
    // (opening included; the OS file cache is warm).
    let t = Instant::now();
    let mut due_len = desk.due(today, None).expect("due").len();
    let due_first = ms(t.elapsed());
    let mut due = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        due_len = desk.due(today, None).expect("due").len();
        due.push(ms(t.elapsed()));
    }
    let mut due_fresh = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let fresh = Desk::open(&dir).expect("open");
        std::hint::black_box(fresh.due(today, None).expect("due").len());
        due_fresh.push(ms(t.elapsed()));
    }

    // The lists: every category and flag (the 200 most recently in
    // touch, as `keqing list --category` prints), their counts, and a
    // one-shot `keqing list --category 流失` from a fresh connection.
    let filters: Vec<ListFilter> = Category::ALL
        .into_iter()
        .map(ListFilter::Category)
        .chain([ListFilter::Typical, ListFilter::Problem])
        .collect();
    let mut lists = Vec::new();
    for _ in 0..25 {
        for f in &filters {
            let t = Instant::now();
            // The query alone (the desk's `list` also audits the read).
            std::hint::black_box(
                desk.replica()
                    .list_patients(*f, today, 200)
                    .expect("list")
                    .len(),
            );
            lists.push(ms(t.elapsed()));
        }
    }
    let mut counts_t = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        counts = desk.list_counts(today).expect("counts");
        counts_t.push(ms(t.elapsed()));
    }
    let mut list_fresh = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let fresh = Desk::open(&dir).expect("open");
        std::hint::black_box(
            fresh
                .replica()
                .list_patients(ListFilter::Category(Category::Lapsed), today, 200)
                .expect("list")
                .len(),
        );
        list_fresh.push(ms(t.elapsed()));
    }

    // Baseline: derive the same list and counts by loading every document.
    let naive_t = Instant::now();
    let mut naive_len = 0;
    let mut naive_counts = std::collections::BTreeMap::<&str, u64>::new();
    let mut seen = std::collections::HashSet::new();
    {
        // The fill's dossiers, and the new callers registered above.
        let new_callers = (1000..2000).chain(0..1000).filter(|k| k % 2 == 1);
        for phone in (0..n)
            .chain(new_callers.map(|k| n + 1_000 + k))
            .map(phone_of)
        {
            let id = desk.resolve_patient(&phone).expect("resolve");
            // A new caller whose name and age matched a dossier joined it.
            if !seen.insert(id.clone()) {
                continue;
            }
            let bytes = desk
                .replica()
                .load_document(&id)
                .expect("load")
                .expect("doc");
            let view = Dossier::load(&bytes, automerge::ActorId::random())
                .expect("dossier")
                .view()
                .expect("view");
            if !open_on(&schedule(&view), today).is_empty() {
                naive_len += 1;
            }
            let standing = keqing_shared::lists::standing(&view);
            *naive_counts
                .entry(standing.category_on(today).chinese())
                .or_default() += 1;
            if standing.typical {
                *naive_counts.entry("典型").or_default() += 1;
            }
            if standing.open_problems > 0 {
                *naive_counts.entry("问题").or_default() += 1;
            }
        }
    }
    let naive_ms = ms(naive_t.elapsed());

    // A patient lookup by phone: resolve, load, read the whole dossier.
    let mut look = Vec::new();
    for _ in 0..1000 {
        let phone = phone_of(rng.below(n));
        let t = Instant::now();
        let (view, _) = desk.dossier(&phone).expect("dossier");
        std::hint::black_box(view);
        look.push(ms(t.elapsed()));
    }

    // What keeping documents packed at rest costs an edit (one pack of the
    // saved dossier) and a read (one unpack), on the dossiers looked up.
    let (mut packing, mut unpacking, mut saved_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..1000 {
        let id = desk.resolve_patient(&phone_of(rng.below(n))).expect("id");
        let saved = desk
            .replica()
            .load_document(&id)
            .expect("load")
            .expect("doc");
        saved_bytes += saved.len();
        let t = Instant::now();
        let stored = keqing_shared::packed::pack(&saved);
        packing.push(ms(t.elapsed()));
        let t = Instant::now();
        std::hint::black_box(keqing_shared::packed::unpack(stored));
        unpacking.push(ms(t.elapsed()));
    }

    let (docs, doc_bytes) = desk.replica().document_bytes().expect("bytes");
    let file = desk.replica().file_bytes().expect("file");

    println!();
    println!("results ({docs} dossiers, synchronous=FULL):");
    let (_, reg_p99) = summary("register call (find or create)", reg.clone());
    summary("register call, checkpoints inline", reg_inline);
    let (base_p50, _) = summary("baseline: bare durable blob insert", base);
    let (due_p50, due_p99) = summary(&format!("due list ({due_len} patients)"), due);
    println!(
        "  {:<40} {due_first:>8.3} ms once",
        "due list, first after the registrations"
    );
    summary("due list, fresh connection (keqing due)", due_fresh);
    println!(
        "  {:<40} {naive_ms:>8.1} ms once ({naive_len} patients)",
        "baseline: due list from documents"
    );
    let (list_p50, list_p99) = summary("list by category or flag (200)", lists);
    summary("list counts (keqing list)", counts_t);
    summary("list, fresh connection (keqing list)", list_fresh);
    summary("patient lookup by phone", look);
    let (pack_p50, _) = summary("pack a saved dossier (an edit's share)", packing);
    summary("unpack it (a read's share)", unpacking);
    println!(
        "  saved document bytes per dossier          {:>8.0} B (of 1000 looked up)",
        saved_bytes as f64 / 1000.0
    );
    println!(
        "  document bytes per dossier (stored)       {:>8.0} B",
        doc_bytes as f64 / docs as f64
    );
    println!(
        "  file bytes per dossier (with projections) {:>8.0} B",
        file as f64 / docs as f64
    );
    println!();
    let reg_p50 = {
        let mut r = reg;
        r.sort_by(f64::total_cmp);
        pct(&r, 0.5)
    };
    println!("ratios:");
    println!(
        "  register p50 / durable-insert p50          {:>8.2}×",
        reg_p50 / base_p50
    );
    println!(
        "  pack p50 / register p50                    {:>8.4}×",
        pack_p50 / reg_p50
    );
    println!(
        "  due-from-documents / due list p50          {:>8.0}×",
        naive_ms / due_p50
    );
    println!(
        "  documents pass / list p50                  {:>8.0}×",
        naive_ms / list_p50
    );
    println!(
        "targets: register p99 < 5 ms → {reg_p99:.3} ms; due list < 20 ms → p50 {due_p50:.3} ms, p99 {due_p99:.3} ms; list --category p99 < 50 ms → p50 {list_p50:.3} ms, p99 {list_p99:.3} ms"
    );
    let counted: std::collections::BTreeMap<&str, u64> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    // The registrations above added callers the naive pass also read.
    assert_eq!(
        counted, naive_counts,
        "the projection and the documents agree on the lists' counts"
    );
    assert_eq!(
        due_len, naive_len,
        "the projection and the documents agree on the due list"
    );
}

/// Creates a replica in `dir` holding `n` dossiers with two years of
/// history each (bulk durability: one commit per 1000 dossiers).
fn fill(dir: &std::path::Path, n: u64, today: NaiveDate, rng: &mut Rng) -> Desk {
    let mut desk = Desk::init(dir, "44", "前台1").expect("init");
    for (name, role) in [
        ("李娜", Role::Consultant),
        ("王医生", Role::Expert),
        ("赵敏", Role::Followup),
    ] {
        desk.add_staff(name, role).expect("staff");
    }
    let at = |day_offset: i64, minute: u64| -> NaiveDateTime {
        (today - Duration::days(day_offset))
            .and_hms_opt(9, 0, 0)
            .expect("time")
            + Duration::minutes(minute as i64)
    };
    let started = Instant::now();
    desk.replica().set_bulk_load(true).expect("bulk");
    desk.replica_mut().begin_bulk().expect("bulk");
    for i in 0..n {
        let name = format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN));
        // First call some day in the last two years.
        let day = rng.below(730) as i64;
        let input = CallInput {
            phone: phone_of(i),
            name,
            age: Some(45 + rng.below(40) as i64),
            disease: Some(rng.pick(DISEASES).into()),
            source: rng.pick(SOURCES).into(),
            staff: "李娜".into(),
            at: at(day, rng.below(480)),
            force_new: true,
            ..Default::default()
        };
        let out = desk.register_call(&input).expect("call");
        // A diligent office: most scheduled calls are made on their day.
        let mut followup_days: Vec<i64> = Vec::new();
        let call_on = |rng: &mut Rng, days_ago: i64, days: &mut Vec<i64>| {
            if days_ago >= 0 && rng.below(100) < 92 {
                days.push(days_ago);
            }
        };
        let roll = rng.below(100);
        let mut visit = None;
        let mut purchases = Vec::new();
        if roll < 50 && day >= 2 {
            let visit_day = day - 1 - rng.below(2) as i64;
            let bought = roll < 35;
            if visit_day < day - 1 {
                call_on(rng, day - 1, &mut followup_days); // within 3 days of the call
            }
            visit = Some(Visit {
                id: new_id(),
                at: at(visit_day, 60),
                staff: "王医生".into(),
                purchased: bought,
                reason_not_bought: (!bought).then(|| "价格".to_string()),
                notes: None,
            });
            if bought {
                // A first purchase and, for some, repurchases at each run-out.
                let mut bought_day = visit_day;
                loop {
                    let supply = 30 * (1 + rng.below(3) as i64);
                    purchases.push(Purchase {
                        id: new_id(),
                        at: at(bought_day, 90),
                        staff: "王医生".into(),
                        product: "金诃心脑康".into(),
                        quantity: supply / 10,
                        amount_fen: 42_800 * supply / 30,
                        invoice: None,
                        runout: Some(today - Duration::days(bought_day) + Duration::days(supply)),
                        gifts: None,
                        gift_receipt: None,
                    });
                    let next = bought_day - supply;
                    let repurchase = next >= 0 && rng.below(100) < 55;
                    let cadence_end = if repurchase { supply } else { supply + 30 };
                    for d in keqing_shared::followup::AFTER_PURCHASE_DAYS
                        .into_iter()
                        .chain((20..).step_by(5))
                    {
                        if d >= cadence_end {
                            break;
                        }
                        call_on(rng, bought_day - d, &mut followup_days);
                    }
                    if !repurchase {
                        break;
                    }
                    bought_day = next;
                }
            } else {
                call_on(rng, visit_day - 2, &mut followup_days);
            }
        } else {
            call_on(rng, day - 2, &mut followup_days);
        }
        // A few patients stop being called, are typical cases, or have a
        // problem open.
        let flags = rng.below(100);
        let stopped = (flags < 1).then(|| PlanChange {
            id: new_id(),
            at: at(day / 2, 30),
            staff: "赵敏".into(),
            action: PlanAction::Stop,
            date: None,
            reason: Some(StopReason::MovedAway),
            assignee: None,
            notes: None,
        });
        let typical = (1..3).contains(&flags).then(|| TypicalCase {
            flagged: true,
            at: at(day / 2, 40),
            staff: "王医生".into(),
            notes: None,
        });
        let problem = (flags == 3).then(|| Problem {
            id: new_id(),
            at: at(day / 2, 50),
            staff: "赵敏".into(),
            description: "投诉".into(),
            state: ProblemState::Open,
            handling_at: None,
            resolved_at: None,
            resolution: None,
            resolved_by: None,
        });
        if stopped.is_some() || typical.is_some() || problem.is_some() {
            desk.edit_patient(&out.dossier_id, |tx| {
                if let Some(c) = &stopped {
                    tx.add_plan_change(c)?;
                }
                if let Some(t) = &typical {
                    tx.set_typical(t)?;
                }
                if let Some(p) = &problem {
                    tx.add(p)?;
                }
                Ok(())
            })
            .expect("flags");
        }
        if visit.is_some() || !followup_days.is_empty() {
            let followups: Vec<FollowUp> = followup_days
                .iter()
                .map(|&d| FollowUp {
                    id: new_id(),
                    at: at(d, 300),
                    staff: "赵敏".into(),
                    kind: "回访".into(),
                    outcome: "服药正常".into(),
                    next_entry: None,
                })
                .collect();
            desk.edit_patient(&out.dossier_id, |tx| {
                if let Some(v) = &visit {
                    tx.add(v)?;
                }
                for p in &purchases {
                    tx.add(p)?;
                }
                for f in &followups {
                    tx.add(f)?;
                }
                Ok(())
            })
            .expect("history");
        }
        if (i + 1) % 1_000 == 0 {
            desk.replica_mut().finish_bulk(true).expect("commit");
            desk.replica_mut().begin_bulk().expect("bulk");
        }
        if (i + 1) % 10_000 == 0 {
            println!(
                "  filled {:>7} dossiers  {:>6.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    desk.replica_mut().finish_bulk(true).expect("commit");
    desk.replica().set_bulk_load(false).expect("durable");
    let fill_s = started.elapsed().as_secs_f64();
    println!(
        "fill: {n} dossiers in {fill_s:.1} s ({:.0} dossiers/s, bulk durability)",
        n as f64 / fill_s
    );

    desk
}
