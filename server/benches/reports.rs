//! Projector and report benchmark: prints figures, never fails on time.
//!
//! Builds a server store of 27 offices × N dossiers (the sizes in
//! KEQING_REPORT_BENCH_PER_OFFICE, default "1000,10000"; first calls spread
//! over KEQING_REPORT_BENCH_DAYS, default 365, before 2026-11-25), each dossier the
//! changes an office device would push (a call; for some a visit, a
//! purchase and follow-ups), appended through the store as the sync core
//! does. Then, at each size:
//! - the projector rebuilding every projection from the log, in dossier
//!   changes/s, against the in-process automerge limit measured in the same
//!   run (applying the same changes to empty documents, nothing stored);
//! - the national report (27 provinces and the total) over the last 7 and
//!   30 days, warm and after reopening the store, and one province's.

use automerge::{ActorId, Automerge, Change};
use keqing_server::store::{DocumentState, NewLogEntry, SqliteStore, Store};
use keqing_shared::dossier::{Dossier, PatientUpdate};
use keqing_shared::office::OFFICES;
use keqing_shared::records::{Call, FollowUp, Purchase, Visit};
use keqing_shared::report::Scope;
use std::time::Instant;

const SOURCES: [&str; 5] = ["电视", "报纸", "网络", "朋友介绍", "讲座"];
const DISEASES: [&str; 4] = ["冠心病", "高血压", "脑梗", "心肌缺血"];
/// The last day of the generated history.
const LAST_DAY: (i32, u32, u32) = (2026, 11, 25);

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

fn last_day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(LAST_DAY.0, LAST_DAY.1, LAST_DAY.2).expect("date")
}

/// One dossier's changes, as its office device would push them.
fn dossier_changes(
    rng: &mut Rng,
    office: &str,
    n: u64,
    history_days: u64,
) -> (String, Vec<Vec<u8>>, Vec<u8>) {
    let id = uuid::Uuid::now_v7().to_string();
    let day = last_day() - chrono::Duration::days(rng.below(history_days) as i64);
    let at = day
        .and_hms_opt(9 + rng.below(8) as u32, rng.below(60) as u32, 0)
        .expect("time");
    let actor = ActorId::from(format!("bench-{office}").as_bytes());
    let (mut d, first) = Dossier::create(&id, office, at, actor, 1).expect("create");
    let mut changes = vec![first.bytes];
    let staff = format!("咨询{}", rng.below(6));
    let call = Call {
        id: uuid::Uuid::now_v7().to_string(),
        at,
        staff: staff.clone(),
        caller_phone: format!("139{:08}", n),
        relation: None,
        source: SOURCES[rng.below(5) as usize].into(),
        disease: Some(DISEASES[rng.below(4) as usize].into()),
        condition: None,
        treatment: None,
        outcome: None,
    };
    let outcome = rng.below(10);
    let c = d
        .edit(2, |tx| {
            tx.update_patient(&PatientUpdate {
                name: Some(format!("患者{n}")),
                age: Some(50 + rng.below(35) as i64),
                ..Default::default()
            })?;
            tx.add_phone(&call.caller_phone)?;
            tx.add(&call)?;
            if outcome < 5 {
                let visit_at = at + chrono::Duration::days(1 + rng.below(3) as i64);
                tx.add(&Visit {
                    id: uuid::Uuid::now_v7().to_string(),
                    at: visit_at,
                    staff: "坐诊专家".into(),
                    purchased: outcome < 3,
                    reason_not_bought: None,
                    notes: None,
                })?;
                if outcome < 3 {
                    tx.add(&Purchase {
                        id: uuid::Uuid::now_v7().to_string(),
                        at: visit_at,
                        staff: "坐诊专家".into(),
                        product: "心脑通".into(),
                        quantity: 2,
                        amount_fen: 128_000,
                        invoice: None,
                        runout: Some(visit_at.date() + chrono::Duration::days(30)),
                        gifts: None,
                        gift_receipt: None,
                    })?;
                    for k in [1, 3, 6] {
                        tx.add(&FollowUp {
                            id: uuid::Uuid::now_v7().to_string(),
                            at: visit_at + chrono::Duration::days(k),
                            staff: format!("回访{}", rng.below(3)),
                            kind: "回访".into(),
                            outcome: "服药正常".into(),
                            next_entry: None,
                        })?;
                    }
                }
            }
            Ok(())
        })
        .expect("edit")
        .expect("a change");
    changes.push(c.bytes);
    (id, changes, d.save())
}

/// Appends `per_office` more dossiers to every office.
fn grow(
    store: &dyn Store,
    rng: &mut Rng,
    per_office: u64,
    start: u64,
    history_days: u64,
) -> (u64, Vec<Vec<u8>>) {
    let mut all_changes = Vec::new();
    let mut entries = Vec::new();
    let mut docs = Vec::new();
    let mut count = 0;
    for office in OFFICES {
        for i in 0..per_office {
            let (id, changes, snapshot) =
                dossier_changes(rng, office.code, start + i, history_days);
            for bytes in changes {
                let hash = Change::from_bytes(bytes.clone()).expect("change").hash();
                entries.push(NewLogEntry {
                    hash: hash.0,
                    doc_id: id.clone(),
                    office: office.code.to_string(),
                    bytes: bytes.clone(),
                });
                all_changes.push(bytes);
                count += 1;
            }
            docs.push(DocumentState {
                doc_id: id,
                office: office.code.to_string(),
                snapshot,
                complete: true,
                merged_into: None,
            });
            if entries.len() >= 4000 {
                append(store, &entries, &docs);
                entries.clear();
                docs.clear();
            }
        }
    }
    if !entries.is_empty() {
        append(store, &entries, &docs);
    }
    (count, all_changes)
}

fn append(store: &dyn Store, entries: &[NewLogEntry], docs: &[DocumentState]) {
    let mut writer = store.log_writer().expect("writer");
    writer.append("bench", entries, docs).expect("append");
    writer.commit().expect("commit");
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let sizes: Vec<u64> = std::env::var("KEQING_REPORT_BENCH_PER_OFFICE")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    // KEQING_BENCH_KEEP=DIR keeps the store there, to inspect afterwards.
    let dir = std::env::var_os("KEQING_BENCH_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let store = SqliteStore::open(&dir).expect("store");
    // The first calls of the dossiers spread over this many days before
    // the last (default a year: 10k dossiers an office is a year's callers).
    let history_days: u64 = std::env::var("KEQING_REPORT_BENCH_DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(365)
        .max(1);
    let mut rng = Rng(2026);
    let mut have = 0;
    let mut log: Vec<Vec<u8>> = Vec::new();
    println!("# projector and report benchmark (27 offices, histories of {history_days} days)");
    for per_office in sizes {
        if per_office <= have {
            continue;
        }
        let t = Instant::now();
        let (_, mut more) = grow(&store, &mut rng, per_office - have, have, history_days);
        log.append(&mut more);
        println!(
            "\n## {per_office} dossiers per office ({} in all, {} changes logged); generated in {:.1} s",
            per_office * 27,
            log.len(),
            t.elapsed().as_secs_f64()
        );
        have = per_office;

        // Baseline: the same changes applied to documents in memory.
        let t = Instant::now();
        let mut docs: std::collections::HashMap<Vec<u8>, Automerge> = Default::default();
        for bytes in &log {
            let change = Change::from_bytes(bytes.clone()).expect("change");
            let key = change
                .deps()
                .first()
                .map_or_else(|| change.hash().0.to_vec(), |d| d.0.to_vec());
            // Each dossier here is a chain of two changes: key by the first.
            docs.entry(key)
                .or_default()
                .apply_changes([change])
                .expect("apply");
        }
        let apply_s = t.elapsed().as_secs_f64();
        drop(docs);
        let t = Instant::now();
        let done = keqing_server::projector::rebuild(
            &mut *store.projections().expect("session"),
            |_, _| {},
        )
        .expect("rebuild");
        let project_s = t.elapsed().as_secs_f64();
        assert_eq!(done.skipped, 0);
        let apply_rate = log.len() as f64 / apply_s;
        let project_rate = log.len() as f64 / project_s;
        println!(
            "projector rebuild: {:.0} changes/s ({} documents in {:.1} s); in-process automerge apply: {:.0} changes/s; ratio {:.1}%",
            project_rate,
            done.documents,
            project_s,
            apply_rate,
            100.0 * project_rate / apply_rate
        );

        let to = last_day();
        for days in [7, 30] {
            let from = to - chrono::Duration::days(days - 1);
            // First: the first read of these days (the OS page cache stays warm).
            let reader = store.projections().expect("session");
            let t = Instant::now();
            let rows = reader.report_rows(None, from, to).expect("rows");
            let r = keqing_shared::report::build(&Scope::National, from, to, &rows);
            let cold = ms(t);
            let mut warm = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let rows = reader.report_rows(None, from, to).expect("rows");
                let again = keqing_shared::report::build(&Scope::National, from, to, &rows);
                warm.push(ms(t));
                assert_eq!(again, r);
            }
            warm.sort_by(|a, b| a.total_cmp(b));
            let t = Instant::now();
            let rows = reader.report_rows(Some("44"), from, to).expect("rows");
            let one = keqing_shared::report::build(&Scope::Office("44".into()), from, to, &rows);
            let province = ms(t);
            println!(
                "national report, last {days} days ({} calls, {} purchases): first {:.1} ms, warm median {:.1} ms; province 44: {:.1} ms ({} calls)",
                r.total.calls,
                r.total.purchases,
                cold,
                warm[warm.len() / 2],
                province,
                one.total.calls
            );
        }
    }
    let size = std::fs::metadata(dir.join(keqing_server::store::DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("\nserver store on disk: {:.0} MB", size as f64 / 1e6);
}
