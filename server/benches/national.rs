//! National-scale benchmark: prints figures, never fails on time.
//!
//! 27 offices' dossiers shaped like real ones (the replica benchmark's two
//! years of office work: a call; for half a visit, for a third purchases
//! and repurchases at each run-out, follow-ups on the handbook's cadence, a
//! few stopped, typical or problem patients; one change per event, as an
//! office device makes them), pushed by 27 office devices at once through a
//! real `keqing-server` process on each store (SQLite in a directory, and
//! PostgreSQL when KEQING_BENCH_POSTGRES or KEQING_TEST_POSTGRES names a
//! cluster to make databases in; `scripts/throwaway-postgres` sets the
//! latter). At each size of KEQING_NATIONAL_BENCH_PER_OFFICE (default
//! "370,37000": 10k and 1M dossiers), with the first size as the step:
//! - ingest: dossiers and changes per second through the server;
//! - the projector's catch-up rate over the step's last chunk (the same
//!   number of dossiers at every size, so the ratio says whether its cost
//!   grows with the store), run unpaced on the store after the server stops
//!   (`keqing-server project`: the server's binary, allocator and all), a
//!   SQLite store's file read into the page cache first (how much of it
//!   the cache held before is printed); timed to the process's exit, and
//!   to its answer (every batch committed: the projections current), before
//!   the store's close copies SQLite's WAL back, which a running server's
//!   checkpointer does on a thread of its own beside the projector;
//!   at the largest size also against the first step's store projected
//!   again, on copies kept unprojected, right before and after it;
//! - the national report of the last 30 days: first and warm median (and
//!   of the median, the time reading the rows and building the report);
//! - the server process's resident memory (now and at its peak);
//! - bytes on disk per dossier, against the saved automerge document,
//!   before and after the log is compacted (`keqing-server compact
//!   --keep-days 0`: what a store reaches once its log is older than
//!   log-keep-days), and after `compact --vacuum` gives the freed space
//!   back (the report is measured again on the vacuumed store, and the new
//!   headquarters device below reads it);
//! - a new headquarters device bootstrapping every dossier (first sync);
//! - a day of office work on the store as it then stands (follow-ups on
//!   dossiers picked at random across it, a visit or a purchase on some,
//!   new patients' first calls, all dated that day: what a real day adds,
//!   where the step above brings two years of history a dossier at once),
//!   the same at every size, and the projector's catch-up over it; at the
//!   largest size also against the first size's day projected again on
//!   copies, right before and after it.
//!
//! Then 27 offices pushing at once to SQLite's one server process and, on
//! PostgreSQL, to one and to two over one database (KEQING_NATIONAL_BENCH_PUSH dossiers per
//! office, default 300; 0 leaves it out), with the cores the machine, the
//! server processes and the devices kept busy meanwhile
//! (KEQING_NATIONAL_BENCH_SERVER_CPUS=C holds each server process to C
//! cores by a cgroup of its own: a machine of its own, on this one).
//!
//! Generated dossiers are kept in KEQING_BENCH_CACHE (default
//! target/national-bench-cache) and reused by later runs of the same
//! generator version (a cache of another is generated again).
//! KEQING_NATIONAL_BENCH_REUSE=DIR (or =postgres://…) measures only the
//! report of a SQLite store (or PostgreSQL database) a run kept with
//! KEQING_BENCH_KEEP (after this build migrates it), with
//! KEQING_NATIONAL_BENCH_BOOTSTRAP=1 a new device's first sync, and with
//! KEQING_NATIONAL_BENCH_DAY=N the projector's catch-up over another day
//! of office work.

/// The devices pushing and the headquarters device bootstrapping run in
/// this process and stand for `keqing` processes: the same allocator as
/// the `keqing` binary. The server's side of every figure runs in
/// `keqing-server` processes (the projector too), with the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use automerge::ActorId;
use chrono::{Duration, NaiveDate, NaiveDateTime};
use keqing_office::sync::{enroll, sync_once};
use keqing_proto::SyncConnection;
use keqing_server::store::{PgStore, SqliteStore, Store};
use keqing_shared::dossier::{Dossier, NewChange, PatientUpdate};
use keqing_shared::office::OFFICES;
use keqing_shared::records::{
    Call, FollowUp, PlanAction, PlanChange, Problem, ProblemState, Purchase, StopReason,
    TypicalCase, Visit,
};
use keqing_shared::report::Scope;
use keqing_shared::sync::{ChangeEnvelope, SyncErrorKind, limits};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod support;

const SOURCES: [&str; 5] = ["电视", "报纸", "网络", "朋友介绍", "讲座"];
const DISEASES: [&str; 4] = ["冠心病", "高血压", "脑梗", "心肌缺血"];
const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "强", "磊", "军"];

/// The last day of the generated history.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).expect("date")
}

/// xorshift64*: deterministic synthetic data.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// One generated dossier: its id, its changes in order, and the size of
/// its saved automerge document.
struct Generated {
    id: String,
    changes: Vec<Vec<u8>>,
    saved: u32,
}

fn office_actor(office: &str) -> ActorId {
    ActorId::from(format!("bench-office-{office}").as_bytes())
}

/// A dossier's id as an office mints it: a UUIDv7, whose time is the
/// moment the dossier was created. The 27 offices push side by side, each
/// in order of `n`, so the ids sort the way the dossiers arrive (the `n`th
/// of every office before the `n + 1`th of any), as real ones do: minted
/// when a dossier is created, pushed soon after. Minted at generation time
/// instead, each office's ids sorted after all of the office generated
/// before it: the 1M step's dossiers then went into the middle of every
/// table kept in dossier order, at 27 places, where the first step's were
/// appended at the end. Pages split in the middle are left half full, and
/// that step wrote about twice the pages of those tables a dossier
/// (BENCHMARKS.md).
fn dossier_id(office_index: usize, n: u64, rng: &mut Rng) -> String {
    const MINTED_FROM_MS: u64 = 1_700_000_000_000;
    let millis = MINTED_FROM_MS + n * OFFICES.len() as u64 + office_index as u64;
    let mut random = [0u8; 10];
    for b in &mut random {
        *b = rng.below(256) as u8;
    }
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// The `n`th dossier of `office` (the `office_index`th office): two years
/// of office work, one change per event.
fn generate(office_index: usize, n: u64, rng: &mut Rng) -> Generated {
    let office = OFFICES[office_index].code;
    let at = |days_ago: i64, minute: u64| -> NaiveDateTime {
        (today() - Duration::days(days_ago))
            .and_hms_opt(9, 0, 0)
            .expect("time")
            + Duration::minutes(minute as i64)
    };
    let ms = |t: NaiveDateTime| t.and_utc().timestamp_millis();
    let id = dossier_id(office_index, n, rng);
    let day = rng.below(730) as i64;
    let called = at(day, rng.below(480));
    let (mut d, first) =
        Dossier::create(&id, office, called, office_actor(office), ms(called)).expect("create");
    let mut events: Vec<(NaiveDateTime, Event)> = Vec::new();
    let phone = format!("1{:02}{:08}", office.parse::<u64>().unwrap_or(0), n);
    events.push((called, Event::Call(first_call(called, &phone, rng))));
    let mut followup_days: Vec<i64> = Vec::new();
    let mut call_on = |rng: &mut Rng, days_ago: i64| {
        if days_ago >= 0 && rng.below(100) < 92 {
            followup_days.push(days_ago);
        }
    };
    let roll = rng.below(100);
    if roll < 50 && day >= 2 {
        let visit_day = day - 1 - rng.below(2) as i64;
        let bought = roll < 35;
        if visit_day < day - 1 {
            call_on(rng, day - 1);
        }
        events.push((
            at(visit_day, 60),
            Event::Visit(Visit {
                id: uuid::Uuid::now_v7().to_string(),
                at: at(visit_day, 60),
                staff: "王医生".into(),
                purchased: bought,
                reason_not_bought: (!bought).then(|| "价格".to_string()),
                notes: None,
            }),
        ));
        if bought {
            let mut bought_day = visit_day;
            loop {
                let supply = 30 * (1 + rng.below(3) as i64);
                events.push((
                    at(bought_day, 90),
                    Event::Purchase(Purchase {
                        id: uuid::Uuid::now_v7().to_string(),
                        at: at(bought_day, 90),
                        staff: "王医生".into(),
                        product: "金诃心脑康".into(),
                        quantity: supply / 10,
                        amount_fen: 42_800 * supply / 30,
                        invoice: None,
                        runout: Some(today() - Duration::days(bought_day) + Duration::days(supply)),
                        gifts: None,
                        gift_receipt: None,
                    }),
                ));
                let next = bought_day - supply;
                let repurchase = next >= 0 && rng.below(100) < 55;
                let cadence_end = if repurchase { supply } else { supply + 30 };
                for k in keqing_shared::followup::AFTER_PURCHASE_DAYS
                    .into_iter()
                    .chain((20..).step_by(5))
                {
                    if k >= cadence_end {
                        break;
                    }
                    call_on(rng, bought_day - k);
                }
                if !repurchase {
                    break;
                }
                bought_day = next;
            }
        } else {
            call_on(rng, visit_day - 2);
        }
    } else {
        call_on(rng, day - 2);
    }
    for days_ago in followup_days {
        events.push((
            at(days_ago, 300),
            Event::FollowUp(FollowUp {
                id: uuid::Uuid::now_v7().to_string(),
                at: at(days_ago, 300),
                staff: "赵敏".into(),
                kind: "回访".into(),
                outcome: "服药正常".into(),
                next_entry: None,
            }),
        ));
    }
    let flags = rng.below(100);
    let flagged_at = at(day / 2, 30);
    if flags < 1 {
        events.push((
            flagged_at,
            Event::Stop(PlanChange {
                id: uuid::Uuid::now_v7().to_string(),
                at: flagged_at,
                staff: "赵敏".into(),
                action: PlanAction::Stop,
                date: None,
                reason: Some(StopReason::MovedAway),
                assignee: None,
                notes: None,
            }),
        ));
    } else if flags < 3 {
        events.push((
            flagged_at,
            Event::Typical(TypicalCase {
                flagged: true,
                at: flagged_at,
                staff: "王医生".into(),
                notes: None,
            }),
        ));
    } else if flags == 3 {
        events.push((
            flagged_at,
            Event::Problem(Problem {
                id: uuid::Uuid::now_v7().to_string(),
                at: flagged_at,
                staff: "赵敏".into(),
                description: "投诉".into(),
                state: ProblemState::Open,
                handling_at: None,
                resolved_at: None,
                resolution: None,
                resolved_by: None,
            }),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    let mut changes = vec![first.bytes];
    let name = format!("{}{}", rng.pick(&SURNAMES), rng.pick(&GIVEN));
    let age = 45 + rng.below(40) as i64;
    for (i, (t, event)) in events.iter().enumerate() {
        let change: Option<NewChange> = d
            .edit(ms(*t), |tx| {
                if i == 0 {
                    tx.update_patient(&PatientUpdate {
                        name: Some(name.clone()),
                        age: Some(age),
                        ..Default::default()
                    })?;
                    tx.add_phone(&phone)?;
                }
                match event {
                    Event::Call(x) => tx.add(x),
                    Event::Visit(x) => tx.add(x),
                    Event::Purchase(x) => tx.add(x),
                    Event::FollowUp(x) => tx.add(x),
                    Event::Problem(x) => tx.add(x),
                    Event::Stop(x) => tx.add_plan_change(x),
                    Event::Typical(x) => tx.set_typical(x),
                }
            })
            .expect("edit");
        changes.extend(change.map(|c| c.bytes));
    }
    Generated {
        id,
        changes,
        saved: d.save().len() as u32,
    }
}

/// A new patient's first call.
fn first_call(at: NaiveDateTime, phone: &str, rng: &mut Rng) -> Call {
    Call {
        id: uuid::Uuid::now_v7().to_string(),
        at,
        staff: "李娜".into(),
        caller_phone: phone.into(),
        relation: None,
        source: rng.pick(&SOURCES).into(),
        disease: Some(rng.pick(&DISEASES).into()),
        condition: None,
        treatment: None,
        outcome: None,
    }
}

/// Dossiers of each office a day of work edits, and new patients it
/// calls: the same at every size, so the projector's catch-up over a
/// day says whether its cost grows with the store. The generated history
/// averages about 50 new patients and 590 events a day an office; the
/// edits are fewer because the first size holds only 370 dossiers an
/// office to pick from.
const DAY_EDITS: u64 = 300;
const DAY_NEW: u64 = 40;

/// The dossiers of each office a day edits on a store of `size` dossiers
/// an office: [`DAY_EDITS`], or all of them on a smaller store.
fn day_edits(size: u64) -> u64 {
    DAY_EDITS.min(size)
}

/// The replica a day of an office's work is made on: a device of its
/// own (a new change must carry its pushing device's actor), one for
/// each day measured and each run (no two runs share an actor). A day
/// already pushed to a store is refused if given again: its new
/// patients' dossiers exist there, created by another actor.
fn day_actor(office: &str, day: i64) -> ActorId {
    ActorId::from(format!("bench-day-{office}-{day}-{}", std::process::id()).as_bytes())
}

/// The `day`th day after the generated history of the `office_index`th
/// office, on a store holding its first `size` dossiers: what the
/// office's desk records that day, one change per event, as its device
/// pushes it. Follow-ups ([`DAY_EDITS`]) on dossiers picked at random
/// across the office's store (a patient due today may have called
/// first at any time), with a visit or a repurchase on some, and
/// [`DAY_NEW`] new patients' first calls. Unlike the generated history,
/// every record is dated that day (today instead, while that day is
/// still to come): its entries in the time indexes go at their end, as a
/// real day's do.
fn day_of_work(cache: &Path, office_index: usize, size: u64, day: i64) -> Vec<Generated> {
    let office = OFFICES[office_index].code;
    let actor = day_actor(office, day);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ ((office_index as u64 + 1) << 20) ^ day as u64);
    // The server refuses records more than a day ahead of its clock.
    let date = (today() + Duration::days(day)).min(chrono::Utc::now().date_naive());
    let at = |rng: &mut Rng| {
        date.and_hms_opt(9, 0, 0).expect("time") + Duration::minutes(rng.below(480) as i64)
    };
    let ms = |t: NaiveDateTime| t.and_utc().timestamp_millis();
    let mut picked = std::collections::BTreeSet::new();
    while (picked.len() as u64) < day_edits(size) {
        picked.insert(rng.below(size));
    }
    let mut reader = CacheReader::open(cache, office, 0);
    let mut out = Vec::new();
    let mut n = 0;
    for &pick in &picked {
        while n < pick {
            reader.next();
            n += 1;
        }
        let g = reader.next();
        n += 1;
        let mut d = Dossier::load(&g.changes.concat(), actor.clone()).expect("load");
        let t = at(&mut rng);
        let roll = rng.below(100);
        let change = d
            .edit(ms(t), |tx| {
                tx.add(&FollowUp {
                    id: uuid::Uuid::now_v7().to_string(),
                    at: t,
                    staff: "赵敏".into(),
                    kind: "回访".into(),
                    outcome: "服药正常".into(),
                    next_entry: None,
                })?;
                if roll < 5 {
                    tx.add(&Visit {
                        id: uuid::Uuid::now_v7().to_string(),
                        at: t,
                        staff: "王医生".into(),
                        purchased: false,
                        reason_not_bought: Some("价格".into()),
                        notes: None,
                    })?;
                } else if roll < 20 {
                    tx.add(&Purchase {
                        id: uuid::Uuid::now_v7().to_string(),
                        at: t,
                        staff: "王医生".into(),
                        product: "金诃心脑康".into(),
                        quantity: 3,
                        amount_fen: 42_800,
                        invoice: None,
                        runout: Some(date + Duration::days(30)),
                        gifts: None,
                        gift_receipt: None,
                    })?;
                }
                Ok(())
            })
            .expect("edit")
            .expect("a change");
        out.push(Generated {
            id: g.id,
            changes: vec![change.bytes],
            saved: 0,
        });
    }
    for k in 0..DAY_NEW {
        // Minted after every generated dossier, as today's are.
        let id = dossier_id(office_index, 1_000_000 * day as u64 + k, &mut rng);
        let called = at(&mut rng);
        let (mut d, first) =
            Dossier::create(&id, office, called, actor.clone(), ms(called)).expect("create");
        let phone = format!(
            "2{:02}{:03}{:05}",
            office.parse::<u64>().unwrap_or(0),
            day,
            k
        );
        let call = first_call(called, &phone, &mut rng);
        let name = format!("{}{}", rng.pick(&SURNAMES), rng.pick(&GIVEN));
        let age = 45 + rng.below(40) as i64;
        let change = d
            .edit(ms(called), |tx| {
                tx.update_patient(&PatientUpdate {
                    name: Some(name),
                    age: Some(age),
                    ..Default::default()
                })?;
                tx.add_phone(&phone)?;
                tx.add(&call)
            })
            .expect("edit")
            .expect("a change");
        out.push(Generated {
            id,
            changes: vec![first.bytes, change.bytes],
            saved: 0,
        });
    }
    out
}

/// A day of office work pushed, left for the projector.
struct DayPushed {
    /// Dossiers each office followed up.
    edits: u64,
    pushed: Pushed,
    made_in: f64,
    dirty_mb: f64,
    flushed_in: f64,
}

impl std::fmt::Display for DayPushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.pushed;
        write!(
            f,
            "a day of office work ({} dossiers followed up, a visit or a purchase on some, and {DAY_NEW} new patients an office; made in {:.0} s; {:.0} MB of dirty pages written back before, {:.1} s): pushed {} dossiers, {} changes in {:.1} s",
            self.edits,
            self.made_in,
            self.dirty_mb,
            self.flushed_in,
            p.dossiers,
            p.changes,
            p.seconds
        )
    }
}

/// Pushes the `day`th day of office work ([`day_of_work`]) on a store of
/// `size` dossiers an office, through a server process of its own
/// (stopped after), by a new device an office.
fn push_day(
    rt: &tokio::runtime::Runtime,
    cache: &Path,
    place: &Place,
    dir: &Path,
    size: u64,
    day: i64,
) -> DayPushed {
    let made = Instant::now();
    let mut work = days_of_work(cache, size, day);
    let made_in = made.elapsed().as_secs_f64();
    let tokens = office_tokens(place, dir, &format!("-day{day}"));
    let (dirty_mb, flushed_in) = write_back_dirty_pages();
    let server = ServerProcess::start(place, dir);
    let actors = OFFICES.iter().map(|o| day_actor(o.code, day)).collect();
    let pushed = push_offices(
        rt,
        std::slice::from_ref(&server.url),
        &tokens,
        actors,
        |i| std::mem::take(&mut work[i]).into_iter(),
    );
    server.stop();
    DayPushed {
        edits: day_edits(size),
        pushed,
        made_in,
        dirty_mb,
        flushed_in,
    }
}

/// [`day_of_work`] of every office, made on two threads.
fn days_of_work(cache: &Path, size: u64, day: i64) -> Vec<Vec<Generated>> {
    let mut made: Vec<(usize, Vec<Generated>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                scope.spawn(move || {
                    (t..OFFICES.len())
                        .step_by(2)
                        .map(|i| (i, day_of_work(cache, i, size, day)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("day of work"))
            .collect()
    });
    made.sort_by_key(|(i, _)| *i);
    made.into_iter().map(|(_, w)| w).collect()
}

enum Event {
    Call(Call),
    Visit(Visit),
    Purchase(Purchase),
    FollowUp(FollowUp),
    Problem(Problem),
    Stop(PlanChange),
    Typical(TypicalCase),
}

/// An office's generated dossiers on disk: each one its id, its changes
/// and its saved size, length-prefixed.
fn cache_file(cache: &Path, office: &str) -> PathBuf {
    cache.join(format!("office-{office}.bin"))
}

fn write_u32(w: &mut impl Write, n: u32) {
    w.write_all(&n.to_le_bytes()).expect("write");
}

fn read_u32(r: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn read_bytes(r: &mut impl Read) -> Vec<u8> {
    let len = read_u32(r).expect("length") as usize;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v).expect("bytes");
    v
}

/// What the generator makes, written beside the cache: a cache of another
/// version is generated again (version 2: [`dossier_id`]'s ids).
const CACHE_VERSION: &str = "2";

/// Makes sure every office's cache holds at least `per_office` dossiers
/// of this generator's version (else generates that many afresh, on two
/// threads).
fn ensure_generated(cache: &Path, per_office: u64) {
    std::fs::create_dir_all(cache).expect("cache dir");
    let count_file = cache.join("count");
    let version_file = cache.join("version");
    let same_version =
        std::fs::read_to_string(&version_file).is_ok_and(|v| v.trim() == CACHE_VERSION);
    let have: u64 = std::fs::read_to_string(&count_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|_| same_version)
        .unwrap_or(0);
    if have >= per_office {
        return;
    }
    // Rewritten from here on: a run stopped midway must not leave a count
    // that vouches for half-written files.
    let _ = std::fs::remove_file(&count_file);
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(office) = OFFICES.get(i) else { return };
                    let file =
                        std::fs::File::create(cache_file(cache, office.code)).expect("cache file");
                    let mut w = BufWriter::new(file);
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                    for n in 0..per_office {
                        let g = generate(i, n, &mut rng);
                        write_u32(&mut w, g.id.len() as u32);
                        w.write_all(g.id.as_bytes()).expect("write");
                        write_u32(&mut w, g.changes.len() as u32);
                        for c in &g.changes {
                            write_u32(&mut w, c.len() as u32);
                            w.write_all(c).expect("write");
                        }
                        write_u32(&mut w, g.saved);
                    }
                    w.flush().expect("flush");
                }
            });
        }
    });
    std::fs::write(&count_file, per_office.to_string()).expect("count");
    std::fs::write(&version_file, CACHE_VERSION).expect("version");
    println!(
        "generated {per_office} dossiers per office in {:.0} s (cached in {})",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
}

/// Reads an office's cached dossiers from the `skip`th on.
struct CacheReader {
    r: BufReader<std::fs::File>,
}

impl CacheReader {
    fn open(cache: &Path, office: &str, skip: u64) -> CacheReader {
        let mut c = CacheReader {
            r: BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(cache_file(cache, office)).expect("cache"),
            ),
        };
        for _ in 0..skip {
            c.next();
        }
        c
    }

    fn next(&mut self) -> Generated {
        let id = String::from_utf8(read_bytes(&mut self.r)).expect("id");
        let n = read_u32(&mut self.r).expect("count");
        let changes = (0..n).map(|_| read_bytes(&mut self.r)).collect();
        let saved = read_u32(&mut self.r).expect("saved");
        Generated { id, changes, saved }
    }
}

/// Where a server keeps its store.
#[derive(Clone)]
enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Place {
    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "SQLite",
            Place::Postgres(_) => "PostgreSQL",
        }
    }

    fn command(&self, dir: &Path) -> std::process::Command {
        // KEQING_BENCH_SERVER: a copy of the binary, so a long run is not
        // changed by a build in the middle of it.
        let bin = std::env::var_os("KEQING_BENCH_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_keqing-server").into());
        let mut c = std::process::Command::new(bin);
        match self {
            Place::Sqlite(data) => c.arg("--data").arg(data),
            Place::Postgres(url) => c.arg("--data").arg(dir).env("KEQING_STORE", url),
        };
        c
    }

    fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(data) => Arc::new(SqliteStore::open(data).expect("store")),
            Place::Postgres(url) => Arc::new(PgStore::open_existing(url).expect("store")),
        }
    }

    /// A SQLite store: reads its file into the page cache and says how
    /// many MB of it the cache held before, and its size (PostgreSQL's
    /// files are its cluster's).
    fn read_into_page_cache(&self) -> Option<(f64, f64)> {
        let Place::Sqlite(data) = self else {
            return None;
        };
        let path = data.join(keqing_server::store::DB_FILE);
        let cached = page_cache_bytes(&path).expect("mincore of the store's file");
        let mut file = std::fs::File::open(&path).expect("the store's file");
        let size = std::io::copy(&mut file, &mut std::io::sink()).expect("read the store's file");
        Some((cached as f64 / 1e6, size as f64 / 1e6))
    }

    /// The bytes the store's data takes, free space left out: SQLite's
    /// pages less its free list (reused by later writes), PostgreSQL's
    /// database after `VACUUM FULL` of the change log (what autovacuum's
    /// reuse of the space converges to).
    fn bytes_in_use(&self) -> u64 {
        match self {
            Place::Sqlite(data) => {
                let conn = rusqlite::Connection::open(data.join(keqing_server::store::DB_FILE))
                    .expect("open");
                let pragma = |name: &str| -> u64 {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                        .expect("pragma") as u64
                };
                (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
            }
            Place::Postgres(url) => {
                psql(url, "VACUUM FULL changes");
                self.bytes_on_disk()
            }
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        match self {
            Place::Sqlite(data) => std::fs::read_dir(data)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains(".sqlite"))
                        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0),
            Place::Postgres(url) => psql(url, "SELECT pg_database_size(current_database())")
                .trim()
                .parse()
                .unwrap_or(0),
        }
    }

    /// A copy of the store as it stands (no server running on it), for the
    /// projector to be measured on again later: SQLite's files copied to
    /// `beside/name`, PostgreSQL's database made from it as a template.
    fn copy_as(&self, beside: &Path, name: &str, admin: Option<&str>) -> Place {
        match self {
            Place::Sqlite(data) => {
                let copy = beside.join(name);
                std::fs::create_dir_all(&copy).expect("dir");
                for file in std::fs::read_dir(data).expect("store dir").flatten() {
                    if file.file_type().is_ok_and(|t| t.is_file()) {
                        std::fs::copy(file.path(), copy.join(file.file_name())).expect("copy");
                    }
                }
                Place::Sqlite(copy)
            }
            Place::Postgres(url) => {
                let admin = admin.expect("the cluster's admin URL");
                Place::Postgres(new_database(admin, name, Some(database_name(url))))
            }
        }
    }

    /// Deletes a copy [`Place::copy_as`] made.
    fn remove_copy(self, admin: Option<&str>) {
        match self {
            Place::Sqlite(copy) => {
                let _ = std::fs::remove_dir_all(copy);
            }
            Place::Postgres(url) => {
                drop_database(admin.expect("the cluster's admin URL"), database_name(&url));
            }
        }
    }
}

fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|stderr| panic!("{stderr}"))
}

/// `psql`'s output, or what it said on stderr when it failed.
fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([url, "-X", "-Atqc", sql])
        .output()
        .expect("psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// The database a URL ending in /DBNAME names.
fn database_name(url: &str) -> &str {
    url.rsplit_once('/').expect("a URL ending in /DBNAME").1
}

/// A new database in the cluster at `admin` (a URL ending in /DBNAME),
/// empty or a copy of `template`: its URL.
fn new_database(admin: &str, name: &str, template: Option<&str>) -> String {
    drop_database(admin, name);
    match template {
        None => {
            psql(admin, &format!("CREATE DATABASE {name}"));
        }
        Some(template) => {
            // A template must have no sessions: the bench's own pool of
            // the step before may still be closing its connections.
            let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
            let mut tries = 1;
            while let Err(stderr) = try_psql(admin, &sql) {
                assert!(tries < 20, "could not copy {template} to {name}: {stderr}");
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
    let (base, _) = admin.rsplit_once('/').expect("a URL ending in /DBNAME");
    format!("{base}/{name}")
}

fn drop_database(admin: &str, name: &str) {
    psql(admin, &format!("DROP DATABASE IF EXISTS {name}"));
}

/// A keqing-server process.
struct ServerProcess {
    child: std::process::Child,
    url: String,
    /// The cgroup holding it to a share of the CPU, removed once it exits.
    cap: Option<CpuCap>,
}

impl ServerProcess {
    fn start(place: &Place, dir: &Path) -> ServerProcess {
        let mut child = place
            .command(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start keqing-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .trim_start_matches("keqing-server listening on ")
            .to_string();
        ServerProcess {
            child,
            url: format!("http://{addr}"),
            cap: None,
        }
    }

    /// Holds it (every thread, and those it starts later) to `cores` of
    /// the CPU from now on.
    fn hold_to(&mut self, cores: f64) {
        self.cap = Some(CpuCap::hold(self.child.id(), cores));
    }

    /// (resident now, resident at its peak) in MB.
    fn memory_mb(&self) -> (f64, f64) {
        let pid = self.child.id();
        (
            support::status_mb(pid, "VmRSS:"),
            support::status_mb(pid, "VmHWM:"),
        )
    }

    /// Stops it as an operator would (SIGTERM: in-flight calls finish).
    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        drop(self.cap.take());
    }
}

/// A server process left behind by a panic would go on projecting into
/// the next measurement's store.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A cgroup of one process holding it to a share of the CPU: the
/// process's own machine, on this one (root only; cgroup v2's `cpu.max`,
/// or v1's cpu controller where that is where it is mounted).
struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    const PERIOD_US: u64 = 100_000;

    fn hold(pid: u32, cores: f64) -> CpuCap {
        let quota = (cores * Self::PERIOD_US as f64).round() as u64;
        let write = |path: PathBuf, value: String| {
            std::fs::write(&path, &value)
                .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()))
        };
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_has_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
        let name = format!("keqing-bench-{pid}");
        let dir = if v2_has_cpu {
            v2.join(&name)
        } else {
            Path::new("/sys/fs/cgroup/cpu").join(&name)
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "KEQING_NATIONAL_BENCH_SERVER_CPUS needs a cgroup of its own (root, cgroup v2's cpu controller or v1's at /sys/fs/cgroup/cpu): {}: {e}",
                dir.display()
            )
        });
        let cap = CpuCap { dir };
        if v2_has_cpu {
            write(v2.join("cgroup.subtree_control"), "+cpu".into());
            write(
                cap.dir.join("cpu.max"),
                format!("{quota} {}", Self::PERIOD_US),
            );
        } else {
            write(
                cap.dir.join("cpu.cfs_period_us"),
                Self::PERIOD_US.to_string(),
            );
            write(cap.dir.join("cpu.cfs_quota_us"), quota.to_string());
        }
        // cgroup.procs moves the whole process, every thread of it.
        write(cap.dir.join("cgroup.procs"), pid.to_string());
        cap
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // A cgroup can be removed once its process has exited and been
        // reaped, which the kernel may see a moment later.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

/// Writes the machine's dirty pages back (`sync`): (how many there were,
/// in MB; seconds it took). A measured step then pays for its own writes,
/// not for those the stage before it left in the OS's page cache (the
/// bulk projector's commits do not wait for fsync). On SQLite there were
/// none left at either step (its checkpoints sync the file): the slow
/// ingest and projector of some 1M steps are not the bulk's writeback.
fn write_back_dirty_pages() -> (f64, f64) {
    let dirty_mb = support::proc_file_mb("/proc/meminfo", "Dirty:")
        + support::proc_file_mb("/proc/meminfo", "Writeback:");
    let started = Instant::now();
    let synced = std::process::Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
    (dirty_mb, started.elapsed().as_secs_f64())
}

/// Bytes of a file the page cache holds: mincore(2) over a read-only
/// map of it.
fn page_cache_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared map of an open file, unmapped
    // below; mincore writes one byte for each page of it into `pages`,
    // which has room for them all.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        let answer = libc::mincore(map, len, pages.as_mut_ptr());
        let error = std::io::Error::last_os_error();
        libc::munmap(map, len);
        if answer != 0 {
            return Err(error);
        }
        let resident = pages.iter().filter(|p| **p & 1 == 1).count();
        Ok((resident * page).min(len) as u64)
    }
}

/// CPU time so far from /proc/stat, in clock ticks: the machine's busy
/// time, its total (busy and idle, summed over every CPU) and its number
/// of CPUs. A process's ticks over a span, divided by the total's and
/// multiplied by the CPUs, are the cores it kept busy.
pub fn machine_cpu_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    let all: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user); idle and iowait are the idle part.
    let total: u64 = all.iter().take(8).sum();
    let idle = all.get(3).copied().unwrap_or(0) + all.get(4).copied().unwrap_or(0);
    (total - idle, total, cpus)
}

/// The CPU time (user and system, in clock ticks) process `pid` has used;
/// 0 if it is gone.
pub fn process_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: state is the
    // first, utime the 12th, stime the 13th.
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn add_device(place: &Place, dir: &Path, office: Option<&str>, name: &str) -> String {
    let mut c = place.command(dir);
    c.args(["device", "add", "--name", name]);
    match office {
        Some(o) => c.args(["--office", o]),
        None => c.arg("--hq"),
    };
    support::last_line_of(&mut c)
}

/// What a push phase did.
#[derive(Default, Clone, Copy)]
struct Pushed {
    dossiers: u64,
    changes: u64,
    saved_bytes: u64,
    seconds: f64,
}

/// Every office pushes its cached dossiers `from..to` at once, each
/// through the server of `urls` its index picks, in batches as a device
/// does (at most `limits::PUSH_BATCH` changes and 3 MB).
fn push_all(
    rt: &tokio::runtime::Runtime,
    cache: &Path,
    urls: &[String],
    tokens: &[String],
    from: u64,
    to: u64,
) -> Pushed {
    let cache = cache.to_path_buf();
    let actors = OFFICES.iter().map(|o| office_actor(o.code)).collect();
    push_offices(rt, urls, tokens, actors, move |i| {
        let office = OFFICES[i].code;
        // Opened (and skipped to `from`) by the first `next`, in the
        // office's task, as the pushes go.
        let cache = cache.clone();
        std::iter::once(()).flat_map(move |()| {
            let mut reader = CacheReader::open(&cache, office, from);
            (from..to).map(move |_| reader.next())
        })
    })
}

/// Every office at once pushes the dossiers `dossiers` gives it (lazily:
/// a million do not sit in memory), as the device of its token whose
/// replica is its actor in `actors`.
fn push_offices<I>(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
    tokens: &[String],
    actors: Vec<ActorId>,
    mut dossiers: impl FnMut(usize) -> I,
) -> Pushed
where
    I: Iterator<Item = Generated> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = actors
        .into_iter()
        .enumerate()
        .map(|(i, actor)| {
            let (url, token) = (urls[i % urls.len()].clone(), tokens[i].clone());
            let mut dossiers = dossiers(i).peekable();
            rt.spawn(async move {
                let mut conn = SyncConnection::connect_with(
                    &url,
                    &token,
                    std::time::Duration::from_secs(10),
                    &Default::default(),
                )
                .await
                .expect("connect");
                conn.enroll(actor.to_bytes().to_vec())
                    .await
                    .expect("enroll");
                let mut pushed = Pushed::default();
                let mut batch: Vec<ChangeEnvelope> = Vec::new();
                let mut bytes = 0;
                while let Some(g) = dossiers.next() {
                    pushed.dossiers += 1;
                    pushed.saved_bytes += u64::from(g.saved);
                    for c in g.changes {
                        bytes += c.len();
                        batch.push(ChangeEnvelope {
                            doc_id: g.id.clone(),
                            bytes: c,
                        });
                    }
                    let full = batch.len() >= limits::PUSH_BATCH - 40 || bytes >= 3 << 20;
                    if full || dossiers.peek().is_none() {
                        pushed.changes += batch.len() as u64;
                        push_with_retry(&mut conn, std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                }
                pushed
            })
        })
        .collect();
    let mut total = Pushed::default();
    for t in tasks {
        let p = rt.block_on(t).expect("pusher");
        total.dossiers += p.dossiers;
        total.changes += p.changes;
        total.saved_bytes += p.saved_bytes;
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

async fn push_with_retry(conn: &mut SyncConnection, batch: Vec<ChangeEnvelope>) {
    loop {
        match conn.push(batch.clone()).await {
            Ok(ack) => {
                assert_eq!(ack.accepted + ack.duplicates, batch.len() as u32);
                return;
            }
            Err(e)
                if matches!(
                    e.kind,
                    SyncErrorKind::ResourceExhausted | SyncErrorKind::Unavailable
                ) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("push refused: {e}"),
        }
    }
}

/// What a projector's catch-up did, and in how long.
#[derive(Clone, Copy)]
struct CaughtUp {
    documents: u64,
    changes: u64,
    /// To the process's exit: the catch-up, then the store's close, which
    /// copies SQLite's WAL back into the file (a running server's
    /// checkpointer does that on a thread of its own, beside the projector).
    seconds: f64,
    /// To the process's answer: every batch committed, the projections
    /// current for every reader.
    answered: f64,
    /// A SQLite store's file: MB of it the page cache held before it was
    /// read in, and its size.
    cached_before: Option<(f64, f64)>,
}

impl CaughtUp {
    /// Documents a second, to the exit.
    fn rate(&self) -> f64 {
        self.documents as f64 / self.seconds
    }

    /// Documents a second, to the answer.
    fn answered_rate(&self) -> f64 {
        self.documents as f64 / self.answered
    }
}

impl std::fmt::Display for CaughtUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} changes/s, {:.0} documents/s ({} documents in {:.1} s; {:.0} documents/s to its answer at {:.1} s, before the store's close)",
            self.changes as f64 / self.seconds,
            self.rate(),
            self.documents,
            self.seconds,
            self.answered_rate(),
            self.answered
        )?;
        if let Some((cached, size)) = self.cached_before {
            write!(
                f,
                "; the store's file {cached:.0} of {size:.0} MB in the page cache, read in before"
            )?;
        }
        Ok(())
    }
}

/// Brings the projections up to date on the store itself (the server
/// stopped). A SQLite store's file is read into the page cache first, as
/// a running server's stays on a machine with the memory for it: the
/// stores compared must start alike, and the 10k copies are always held
/// whole (just written), while the large store's pages may have been
/// pushed out by what the bench did before (the headquarters device's
/// replica of every dossier, which stands on another machine in truth).
/// How much the cache held before is printed.
fn catch_up(place: &Place, dir: &Path) -> CaughtUp {
    let before = {
        let store = place.open();
        let session = store.projections().expect("session");
        session.projector_cursor().expect("cursor")
    };
    let cached_before = place.read_into_page_cache();
    let started = Instant::now();
    let mut child = place
        .command(dir)
        .args(["project", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keqing-server project");
    // Its one line of JSON comes once every batch is committed, before
    // the store closes.
    let mut answer = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut answer,
    )
    .expect("project --json");
    let answered = started.elapsed().as_secs_f64();
    // (Its errors go to the bench's own stderr.)
    let status = child.wait().expect("keqing-server project");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "keqing-server project: {status}");
    let done: serde_json::Value = serde_json::from_str(&answer).expect("project --json");
    assert_eq!(done["skipped"], 0, "{done}");
    let count = |k: &str| done[k].as_u64().expect("a count");
    CaughtUp {
        documents: count("documents"),
        changes: count("cursor") - before,
        seconds,
        answered,
        cached_before,
    }
}

/// A catch-up measured at every size and, at the largest, against the
/// first size's: its rate then, and its store (kept unprojected at the
/// same point, twice) projected again right before and right after, a
/// baseline measured beside it (why: in `main`).
struct AgainstFirstSize {
    /// What is caught up, naming the copies.
    what: &'static str,
    rate: f64,
    copies: Vec<Place>,
}

impl AgainstFirstSize {
    fn new(what: &'static str) -> Self {
        AgainstFirstSize {
            what,
            rate: f64::NAN,
            copies: Vec::new(),
        }
    }

    /// [`catch_up`] of the store; at the first size (`first`) the store
    /// is copied twice before, at the largest (`last`) the copies are
    /// projected beside it and the comparison comes back too.
    fn catch_up(
        &mut self,
        place: &Place,
        dir: &Path,
        admin: &Option<String>,
        first: bool,
        last: bool,
    ) -> (CaughtUp, Option<String>) {
        if first && last {
            // One size only: nothing to compare with.
            return (catch_up(place, dir), None);
        }
        if first {
            self.copies = ["again_before", "again_after"]
                .map(|name| place.copy_as(dir, &format!("{}_{name}", self.what), admin.as_deref()))
                .into();
        }
        let project_again = |k: usize| {
            self.copies
                .get(k)
                .filter(|_| last)
                .map(|copy| catch_up(copy, dir))
        };
        let before = project_again(0);
        let caught_up = catch_up(place, dir);
        let after = project_again(1);
        let rate = caught_up.rate();
        if first {
            self.rate = rate;
        }
        let against = before.zip(after).map(|(before, after)| {
            // To the exit, and to the answer: the store's close copies the
            // WAL back, which a running server does beside the projector.
            let beside = |r: fn(&CaughtUp) -> f64| {
                let (b, a) = (r(&before), r(&after));
                format!(
                    "{:.1} % ({b:.0} and {a:.0} documents/s)",
                    r(&caught_up) / ((b + a) / 2.0) * 100.0
                )
            };
            format!(
                "{:.1} % of its {:.0} documents/s then; {} of it projected again on copies kept unprojected, right before and after this one; to the answers {}",
                rate / self.rate * 100.0,
                self.rate,
                beside(CaughtUp::rate),
                beside(CaughtUp::answered_rate),
            )
        });
        (caught_up, against)
    }

    /// Removes the copies.
    fn remove_copies(self, admin: &Option<String>) {
        for copy in self.copies {
            copy.remove_copy(admin.as_deref());
        }
    }
}

/// `keqing-server compact --keep-days 0 [more]` on the store: its JSON
/// answer and how long it took.
fn compact(place: &Place, dir: &Path, more: &[&str]) -> (serde_json::Value, f64) {
    let started = Instant::now();
    let out = place
        .command(dir)
        .args(["compact", "--keep-days", "0", "--json"])
        .args(more)
        .output()
        .expect("keqing-server compact");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = serde_json::from_slice(&out.stdout).expect("compact --json");
    (answer, started.elapsed().as_secs_f64())
}

/// What [`national_report`] measured.
struct ReportTimes {
    /// The first run, ms.
    first: f64,
    /// The median of five warm runs, ms.
    warm: f64,
    /// Of that median run, the ms reading the rows.
    read: f64,
    /// The report's calls.
    calls: u64,
}

impl std::fmt::Display for ReportTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "first {:.0} ms, warm median {:.0} ms (reading the rows {:.0}, building the report {:.0})",
            self.first,
            self.warm,
            self.read,
            self.warm - self.read
        )
    }
}

/// The national report of the last 30 days.
fn national_report(place: &Place) -> ReportTimes {
    let store = place.open();
    let reader = store.projections().expect("session");
    let to = today();
    let from = to - Duration::days(29);
    let run = || {
        let t = Instant::now();
        let rows = reader.report_rows(None, from, to).expect("rows");
        let read = t.elapsed().as_secs_f64() * 1000.0;
        let r = keqing_shared::report::build(&Scope::National, from, to, &rows);
        (t.elapsed().as_secs_f64() * 1000.0, read, r.total.calls)
    };
    let (first, _, calls) = run();
    let mut warm: Vec<(f64, f64)> = (0..5).map(|_| run()).map(|(t, r, _)| (t, r)).collect();
    warm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (warm, read) = warm[2];
    ReportTimes {
        first,
        warm,
        read,
        calls,
    }
}

/// A first sync's progress, kept for when its pull ended and the device
/// began building the indexes it had set aside.
struct IndexingFrom(Option<Instant>);
impl keqing_office::sync::Progress for IndexingFrom {
    fn pushing(&mut self, _: u64, _: u64) {}
    fn pulling(&mut self, _: u64) {}
    fn indexing(&mut self) {
        self.0 = Some(Instant::now());
    }
}

/// What a new headquarters device's first sync took.
struct Bootstrap {
    seconds: f64,
    /// Of which the pull (the rest: building the indexes set aside).
    pull_seconds: f64,
    /// Documents the device holds after it.
    held: usize,
    /// Server memory after it (now, peak), MB.
    rss: f64,
    peak: f64,
}

impl std::fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new headquarters device, first sync of {} documents: {:.1} s ({:.0} a second; pull {:.1} s, then its indexes {:.1} s); server after it {:.0} MB (peak {:.0})",
            self.held,
            self.seconds,
            self.held as f64 / self.seconds,
            self.pull_seconds,
            self.seconds - self.pull_seconds,
            self.rss,
            self.peak
        )
    }
}

/// A new headquarters device's first sync.
fn bootstrap(rt: &tokio::runtime::Runtime, place: &Place, dir: &Path, name: &str) -> Bootstrap {
    let server = ServerProcess::start(place, dir);
    let token = add_device(place, dir, None, name);
    let replica = dir.join(format!("replica-{name}"));
    let started = Instant::now();
    let mut desk = rt
        .block_on(enroll(
            &replica,
            std::slice::from_ref(&server.url),
            &token,
            None,
            &Default::default(),
        ))
        .expect("enroll");
    let mut progress = IndexingFrom(None);
    rt.block_on(sync_once(desk.replica_mut(), &mut progress))
        .expect("first sync");
    let seconds = started.elapsed().as_secs_f64();
    let pull_seconds = progress
        .0
        .map_or(seconds, |at| (at - started).as_secs_f64());
    let held = desk.replica().document_heads().expect("heads").len();
    let (rss, peak) = server.memory_mb();
    drop(desk);
    server.stop();
    // KEQING_NATIONAL_BENCH_KEEP_REPLICA=1 keeps the replica to inspect.
    if std::env::var("KEQING_NATIONAL_BENCH_KEEP_REPLICA").is_ok_and(|v| v == "1") {
        println!("kept the replica: {}", replica.display());
    } else {
        let _ = std::fs::remove_dir_all(&replica);
    }
    Bootstrap {
        seconds,
        pull_seconds,
        held,
        rss,
        peak,
    }
}

fn office_tokens(place: &Place, dir: &Path, suffix: &str) -> Vec<String> {
    OFFICES
        .iter()
        .map(|o| add_device(place, dir, Some(o.code), &format!("前台{}{suffix}", o.code)))
        .collect()
}

fn main() {
    let sizes: Vec<u64> = std::env::var("KEQING_NATIONAL_BENCH_PER_OFFICE")
        .unwrap_or_else(|_| "370,37000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    assert!(
        !sizes.is_empty() && sizes.windows(2).all(|w| w[0] < w[1]),
        "KEQING_NATIONAL_BENCH_PER_OFFICE: sizes in increasing order, e.g. 370,37000"
    );
    let step = sizes[0];
    let largest = *sizes.last().expect("a size");
    let cache = std::env::var_os("KEQING_BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/national-bench-cache")
        });
    let postgres = std::env::var("KEQING_BENCH_POSTGRES")
        .or_else(|_| std::env::var("KEQING_TEST_POSTGRES"))
        .ok();
    let stores =
        std::env::var("KEQING_NATIONAL_BENCH_STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "# national benchmark: 27 offices × {sizes:?} dossiers (step {step} per office = {} dossiers)",
        step * 27
    );
    // KEQING_NATIONAL_BENCH_REUSE=DIR: a SQLite store a run kept
    // (KEQING_BENCH_KEEP=K leaves it in K/sqlite/store), or =postgres://…
    // the PostgreSQL database it kept, opened (so migrated) by this build:
    // its report and size only, no ingest.
    if let Ok(reused) = std::env::var("KEQING_NATIONAL_BENCH_REUSE") {
        // A reused PostgreSQL database's server processes keep their
        // `--data` (key, certificate) in a temp dir, gone at the end.
        let beside_database = tempfile::tempdir().expect("tempdir");
        let (place, kept) = if reused.starts_with("postgres://") {
            (
                Place::Postgres(reused),
                beside_database.path().join("store"),
            )
        } else {
            (
                Place::Sqlite(PathBuf::from(&reused)),
                PathBuf::from(&reused),
            )
        };
        let started = Instant::now();
        drop(place.open());
        println!(
            "opened (and migrated) the kept store in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let behind = catch_up(&place, &kept);
        println!(
            "projector: {} documents, {} changes behind ({:.1} s)",
            behind.documents, behind.changes, behind.seconds
        );
        let report = national_report(&place);
        println!(
            "national report, last 30 days ({} calls): {report}",
            report.calls
        );
        println!("on disk {:.0} MB", place.bytes_on_disk() as f64 / 1e6);
        // KEQING_NATIONAL_BENCH_BOOTSTRAP=1: and a new headquarters device's
        // first sync of it (the replica goes beside the store, then away).
        if std::env::var("KEQING_NATIONAL_BENCH_BOOTSTRAP").is_ok_and(|v| v == "1") {
            let beside = kept.parent().unwrap_or(Path::new("."));
            println!("{}", bootstrap(&rt, &place, beside, "hq-reuse"));
        }
        // KEQING_NATIONAL_BENCH_DAY=N: and the Nth day of office work on
        // it (the store holding the largest size's dossiers; a day not
        // pushed to it before: a run pushes day k at its kth size, so 2
        // to a run's 1M store), caught up by the projector, unless
        // KEQING_NATIONAL_BENCH_DAY_UNPROJECTED=1 leaves it to inspect
        // what the projector then writes.
        if let Ok(day) = std::env::var("KEQING_NATIONAL_BENCH_DAY") {
            let day: i64 = day
                .parse()
                .ok()
                .filter(|d| *d > 0)
                .expect("KEQING_NATIONAL_BENCH_DAY: a day after the history, 1 or more");
            println!("{}", push_day(&rt, &cache, &place, &kept, largest, day));
            if !std::env::var("KEQING_NATIONAL_BENCH_DAY_UNPROJECTED").is_ok_and(|v| v == "1") {
                println!("  projector catch-up over it: {}", catch_up(&place, &kept));
            }
        }
        return;
    }
    ensure_generated(&cache, largest);
    // KEQING_BENCH_KEEP=DIR keeps the stores to inspect: SQLite's there,
    // PostgreSQL's database in its cluster.
    let kept = std::env::var_os("KEQING_BENCH_KEEP").map(PathBuf::from);
    let tmp = tempfile::tempdir().expect("tempdir");

    // KEQING_NATIONAL_BENCH_STORES= (empty) only generates the cache.
    for store_name in stores.split(',').filter(|s| !s.is_empty()) {
        let dir = kept.as_deref().unwrap_or(tmp.path()).join(store_name);
        std::fs::create_dir_all(&dir).expect("dir");
        let place = match store_name {
            "sqlite" => Place::Sqlite(dir.join("store")),
            "postgres" => match &postgres {
                Some(admin) => Place::Postgres(new_database(admin, "keqing_national_bench", None)),
                None => {
                    println!(
                        "\n## PostgreSQL: skipped (set KEQING_BENCH_POSTGRES, or run under scripts/throwaway-postgres)"
                    );
                    continue;
                }
            },
            other => panic!("unknown store {other}"),
        };
        println!("\n## {}", place.name());
        let server = ServerProcess::start(&place, &dir);
        let tokens = office_tokens(&place, &dir, "");
        server.stop();
        let mut have = 0;
        let mut saved_total = 0u64;
        let mut step_catch_up = AgainstFirstSize::new("first_step");
        let mut day_catch_up = AgainstFirstSize::new("first_day");
        for &size in &sizes {
            // The bulk up to one step below the size, then the measured step.
            let bulk_to = size - step;
            // Each stage through a server process of its own, stopped
            // before the projector is measured on the store.
            let push_stage = |from: u64, to: u64| {
                let server = ServerProcess::start(&place, &dir);
                let url = std::slice::from_ref(&server.url);
                let p = push_all(&rt, &cache, url, &tokens, from, to);
                let memory = server.memory_mb();
                server.stop();
                (p, memory)
            };
            if bulk_to > have {
                let (p, (rss, peak)) = push_stage(have, bulk_to);
                saved_total += p.saved_bytes;
                let CaughtUp {
                    documents: docs,
                    changes,
                    seconds: s,
                    ..
                } = catch_up(&place, &dir);
                println!(
                    "bulk to {} dossiers: ingest {:.0} dossiers/s ({:.0} changes/s); server {rss:.0} MB (peak {peak:.0}); projector {:.0} changes/s ({docs} documents, {changes} changes, {s:.0} s)",
                    bulk_to * 27,
                    p.dossiers as f64 / p.seconds,
                    p.changes as f64 / p.seconds,
                    changes as f64 / s,
                );
                have = bulk_to;
            }
            let (dirty_mb, flushed_in) = write_back_dirty_pages();
            let (p, (rss, peak)) = push_stage(have, size);
            saved_total += p.saved_bytes;
            have = size;
            // The projector's rate at the largest size is read against
            // its rate at the first step. Measured once each, 5-7 s half
            // an hour apart, the ratio also carries how fast the machine
            // was at each moment (the 10k rate spread 1 700-2 300
            // documents/s over a day's runs). So the first step's store is
            // also kept unprojected, twice, and projected again right
            // before and right after the largest size's catch-up: a
            // baseline measured beside it.
            let (first, last) = (size == step, size == largest);
            let (caught_up, against) = step_catch_up.catch_up(&place, &dir, &postgres, first, last);
            let report = national_report(&place);
            let dossiers = size * 27;
            let disk = place.bytes_on_disk();
            let saved_mean = saved_total as f64 / dossiers as f64;
            println!(
                "at {dossiers} dossiers ({dirty_mb:.0} MB of dirty pages written back before the step, {flushed_in:.1} s): ingest of the last {} {:.0} dossiers/s ({:.0} changes/s, {:.1} changes a dossier); server {rss:.0} MB (peak {peak:.0})",
                p.dossiers,
                p.dossiers as f64 / p.seconds,
                p.changes as f64 / p.seconds,
                p.changes as f64 / p.dossiers as f64,
            );
            println!("  projector catch-up over them: {caught_up}");
            if let Some(against) = against {
                println!("  against the first step's: {against}");
            }
            println!(
                "  national report, last 30 days ({} calls): {report}",
                report.calls
            );
            println!(
                "  on disk {:.0} MB: {:.1} KB a dossier, {:.2}× its saved document ({:.1} KB)",
                disk as f64 / 1e6,
                disk as f64 / dossiers as f64 / 1e3,
                disk as f64 / dossiers as f64 / saved_mean,
                saved_mean / 1e3
            );
            let (compacted, seconds) = compact(&place, &dir, &[]);
            let in_use = place.bytes_in_use();
            println!(
                "  log compacted: {} changes ({:.0} MB) left to their snapshots in {seconds:.1} s; in use then {:.0} MB: {:.1} KB a dossier, {:.2}× its saved document (file {:.0} MB)",
                compacted["changes"],
                compacted["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
                in_use as f64 / 1e6,
                in_use as f64 / dossiers as f64 / 1e3,
                in_use as f64 / dossiers as f64 / saved_mean,
                place.bytes_on_disk() as f64 / 1e6,
            );
            let (vacuumed, _) = compact(&place, &dir, &["--vacuum"]);
            let vacuumed = &vacuumed["vacuumed"];
            let (before, after) = (
                vacuumed["bytes_before"].as_u64().unwrap_or(0) as f64,
                vacuumed["bytes_after"].as_u64().unwrap_or(0) as f64,
            );
            println!(
                "  vacuumed (compact --vacuum): on disk {:.0} → {:.0} MB in {:.1} s: {:.1} KB a dossier, {:.2}× its saved document",
                before / 1e6,
                after / 1e6,
                vacuumed["seconds"].as_f64().unwrap_or(0.0),
                after / dossiers as f64 / 1e3,
                after / dossiers as f64 / saved_mean,
            );
            // The vacuum rewrote the tables: the report must be as fast
            // from them (PostgreSQL's visibility map, see Store::scrub).
            println!(
                "  national report after the vacuum: {}",
                national_report(&place)
            );
            println!("  {}", bootstrap(&rt, &place, &dir, &format!("hq{size}")));
            // A day of office work on the store as it now stands, caught up
            // by the projector; at the largest size against the first
            // size's day projected again beside it, as above.
            let day = sizes.iter().position(|&s| s == size).unwrap_or(0) as i64 + 1;
            let pushed = push_day(&rt, &cache, &place, &dir, size, day);
            let (caught_up, against) = day_catch_up.catch_up(&place, &dir, &postgres, first, last);
            println!("  {pushed}");
            println!("    projector catch-up over it: {caught_up}");
            if let Some(against) = against {
                println!("    against the first size's day: {against}");
            }
        }
        step_catch_up.remove_copies(&postgres);
        day_catch_up.remove_copies(&postgres);
        if let (Place::Postgres(url), Some(admin)) = (&place, &postgres) {
            if kept.is_some() {
                println!("kept the PostgreSQL database: {url}");
            } else {
                drop_database(admin, "keqing_national_bench");
            }
        }
        if kept.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    // 27 offices pushing at once: to SQLite's one server process, then to
    // one and to two over one PostgreSQL database.
    let per_office: u64 = std::env::var("KEQING_NATIONAL_BENCH_PUSH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
        .min(largest);
    // KEQING_NATIONAL_BENCH_PUSH=0 leaves this stage out.
    if per_office == 0 {
        return;
    }
    // KEQING_NATIONAL_BENCH_SERVER_CPUS=C: each server process held to C
    // cores, as if each ran on a machine of its own whose CPU it uses
    // up. On a small machine one process, with PostgreSQL and the devices
    // beside it, already keeps every core busy, and a second can only
    // share them; held to a share each, the servers' CPU is the bound,
    // and the figure says whether what the processes share (the
    // database, the writer's turn) lets a second one add its own.
    let server_cpus: Option<f64> =
        std::env::var("KEQING_NATIONAL_BENCH_SERVER_CPUS")
            .ok()
            .map(|s| {
                s.parse()
                    .ok()
                    .filter(|c: &f64| *c > 0.0)
                    .expect("KEQING_NATIONAL_BENCH_SERVER_CPUS: cores a server process, e.g. 0.4")
            });
    let mut runs = vec![(None, 1)];
    if let Some(admin) = &postgres {
        runs.extend([(Some(admin.as_str()), 1), (Some(admin.as_str()), 2)]);
    }
    let mut rates = Vec::new();
    for (admin, processes) in runs {
        let dir = tmp
            .path()
            .join(format!("push-{}-{processes}", admin.is_some()));
        std::fs::create_dir_all(&dir).expect("dir");
        let place = match admin {
            Some(admin) => Place::Postgres(new_database(admin, "keqing_processes_bench", None)),
            None => Place::Sqlite(dir.join("store")),
        };
        if processes == 1 {
            println!(
                "\n## 27 offices pushing {per_office} dossiers each at once, {}{}",
                place.name(),
                server_cpus
                    .map(|c| format!(", each server process held to {c} cores"))
                    .unwrap_or_default()
            );
        }
        let servers: Vec<ServerProcess> = (0..processes)
            .map(|_| {
                let mut server = ServerProcess::start(&place, &dir);
                if let Some(cores) = server_cpus {
                    server.hold_to(cores);
                }
                server
            })
            .collect();
        let tokens = office_tokens(&place, &dir, "");
        let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
        // Where the machine's CPU went while they pushed: whether there
        // was a core left for a second process to use.
        let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
        let servers_ticks = || pids.iter().map(|&p| process_cpu_ticks(p)).sum::<u64>();
        let (busy0, total0, cpus) = machine_cpu_ticks();
        let (servers0, devices0) = (servers_ticks(), process_cpu_ticks(std::process::id()));
        let p = push_all(&rt, &cache, &urls, &tokens, 0, per_office);
        let (busy1, total1, _) = machine_cpu_ticks();
        let cores = |ticks: u64| ticks as f64 / (total1 - total0).max(1) as f64 * cpus as f64;
        let (busy, servers_cores, devices) = (
            cores(busy1 - busy0),
            cores(servers_ticks() - servers0),
            cores(process_cpu_ticks(std::process::id()) - devices0),
        );
        let peaks: Vec<String> = servers
            .iter()
            .map(|s| format!("{:.0}", s.memory_mb().1))
            .collect();
        for s in servers {
            s.stop();
        }
        if let Some(admin) = admin {
            drop_database(admin, "keqing_processes_bench");
            rates.push(p.changes as f64 / p.seconds);
        }
        println!(
            "{processes} server process{}: {:.0} dossiers/s, {:.0} changes/s ({:.1} s); peak {} MB",
            if processes > 1 { "es" } else { "" },
            p.dossiers as f64 / p.seconds,
            p.changes as f64 / p.seconds,
            p.seconds,
            peaks.join(" and ")
        );
        println!(
            "  cores busy {busy:.2} of {cpus}: server process{} {servers_cores:.2}, the 27 devices (this process) {devices:.2}, {} {:.2}",
            if processes > 1 { "es" } else { "" },
            if admin.is_some() {
                "PostgreSQL and the rest"
            } else {
                "the rest"
            },
            (busy - servers_cores - devices).max(0.0),
        );
    }
    if let [one, two] = rates[..] {
        println!("two processes against one: {:.2}×", two / one);
    }
}
