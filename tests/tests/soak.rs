//! The soak run (not in CI: `scripts/soak.sh`): 27 offices × 2 devices
//! work and sync at a steady rate against a real `keqing-server` process for
//! `KEQING_SOAK_SECONDS` (default 600). Prints sync latency percentiles and
//! the server's memory over time; fails on any sync error, if an office's
//! devices and headquarters do not end with the same heads, or if any record
//! made (by its id) is not at headquarters exactly once.

use chrono::NaiveDate;
use keqing_office::desk::{CallInput, Desk, FollowUpInput};
use keqing_office::sync::{Quiet, enroll, sync_once};
use keqing_shared::office::OFFICES;
use keqing_shared::staff::Role;
use keqing_tests::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Device {
    desk: Desk,
    staff: String,
    patients: Vec<String>,
}

#[test]
#[ignore = "a 10-minute soak run: scripts/soak.sh"]
fn soak_27_offices_syncing_at_a_steady_rate() {
    let seconds: u64 = keqing_tests::env_number("KEQING_SOAK_SECONDS", 600);
    // Syncs per second across all devices.
    let rate: f64 = keqing_tests::env_number("KEQING_SOAK_RATE", 20.0);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut devices = Vec::new();
    for o in OFFICES.iter() {
        for n in 1..=2 {
            let name = format!("{}前台{n}", o.name);
            let token = server.add_device(Some(o.code), &name);
            let mut desk = rt
                .block_on(enroll(
                    &tmp.path().join(&name),
                    std::slice::from_ref(&url),
                    &token,
                    Some(&name),
                    &Default::default(),
                ))
                .unwrap();
            let staff = format!("员工{}{n}", o.code);
            desk.add_staff(&staff, Role::Consultant).unwrap();
            devices.push(Mutex::new(Device {
                desk,
                staff,
                patients: Vec::new(),
            }));
        }
    }
    let devices = Arc::new(devices);
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (errors, edits, next) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // The id of every record made (calls and follow-ups): the oracle.
    let made = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let rss_start = rss_mb(server.pid());
    let mut rss_samples = vec![(0u64, rss_start)];
    // Two workers take devices in turn, each at half the rate.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (devices, latencies, errors, edits, next, made) = (
                devices.clone(),
                latencies.clone(),
                errors.clone(),
                edits.clone(),
                next.clone(),
                made.clone(),
            );
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let period = Duration::from_secs_f64(2.0 / rate);
                let mut tick = Instant::now();
                let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
                while Instant::now() < end {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let mut d = devices[(k as usize) % devices.len()].lock().unwrap();
                    let at = day
                        .and_hms_opt(9 + (k % 9) as u32, (k % 60) as u32, w)
                        .unwrap();
                    let staff = d.staff.clone();
                    if d.patients.len() < 5 || k % 3 == 0 {
                        let out = d
                            .desk
                            .register_call(&CallInput {
                                phone: format!("13{:09}", k),
                                name: format!("患者{k}"),
                                source: "电视".into(),
                                staff,
                                at,
                                force_new: true,
                                ..Default::default()
                            })
                            .unwrap();
                        made.lock().unwrap().insert(out.call_id);
                        d.patients.push(out.dossier_id);
                    } else {
                        let p = d.patients[(k as usize) % d.patients.len()].clone();
                        let (_, f) = d
                            .desk
                            .record_followup(
                                &p,
                                &FollowUpInput {
                                    staff,
                                    at,
                                    kind: "电话回访".into(),
                                    outcome: "服药正常".into(),
                                    next_entry: None,
                                },
                            )
                            .unwrap();
                        made.lock().unwrap().insert(f.id);
                    }
                    edits.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    match handle.block_on(sync_once(d.desk.replica_mut(), &mut Quiet)) {
                        Ok(_) => latencies
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_secs_f64() * 1e3),
                        Err(e) => {
                            eprintln!("sync error: {e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(d);
                    tick += period;
                    if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(10).min(end - Instant::now()));
        let s = started.elapsed().as_secs();
        let rss = rss_mb(server.pid());
        rss_samples.push((s, rss));
        let n = latencies.lock().unwrap().len();
        println!("soak: {s:>4} s  {n} syncs  server RSS {rss:.1} MB");
    }
    for w in workers {
        w.join().unwrap();
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
    let rss_max = rss_samples.iter().map(|s| s.1).fold(0.0, f64::max);
    println!(
        "soak: {} s, {} devices, {} edits, {} syncs ({:.1}/s), {} errors; sync latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS {:.1} MB at start, {:.1} MB max, {:.1} MB at end",
        seconds,
        devices.len(),
        edits.load(Ordering::Relaxed),
        l.len(),
        l.len() as f64 / seconds as f64,
        errors.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        l.last().copied().unwrap_or(0.0),
        rss_start,
        rss_max,
        rss_samples.last().map_or(0.0, |s| s.1)
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no sync may fail");
    // Headquarters ends up with every dossier.
    let hq_token = server.add_device(None, "数据中心1");
    let mut hq = rt
        .block_on(enroll(
            &tmp.path().join("hq"),
            std::slice::from_ref(&url),
            &hq_token,
            Some("hq"),
            &Default::default(),
        ))
        .unwrap();
    // Every device syncs twice (the second round brings each the other's
    // last pushes), then headquarters.
    for _ in 0..2 {
        for d in devices.iter() {
            let mut d = d.lock().unwrap();
            rt.block_on(sync_once(d.desk.replica_mut(), &mut Quiet))
                .unwrap();
        }
    }
    rt.block_on(sync_once(hq.replica_mut(), &mut Quiet))
        .unwrap();
    type Heads = BTreeMap<String, Vec<automerge::ChangeHash>>;
    let heads = |desk: &Desk| -> Heads {
        desk.replica()
            .document_heads()
            .unwrap()
            .into_iter()
            .collect()
    };
    let hq_heads = heads(&hq);
    let mut union = Heads::new();
    for pair in devices.chunks(2) {
        let (a, b) = (pair[0].lock().unwrap(), pair[1].lock().unwrap());
        let ha = heads(&a.desk);
        assert_eq!(
            ha,
            heads(&b.desk),
            "{}: an office's devices differ",
            a.staff
        );
        assert_eq!(a.desk.replica().outbox_len().unwrap(), 0, "{}", a.staff);
        assert_eq!(b.desk.replica().outbox_len().unwrap(), 0, "{}", b.staff);
        union.extend(ha);
    }
    assert_eq!(
        hq_heads, union,
        "headquarters holds exactly the offices' documents"
    );
    // Nothing lost, nothing doubled, nothing invented.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for id in hq_heads.keys().filter(|id| !id.starts_with("roster-")) {
        let (view, _) = hq.dossier(id).unwrap();
        for r in view
            .calls
            .iter()
            .map(|c| &c.id)
            .chain(view.followups.iter().map(|f| &f.id))
        {
            *seen.entry(r.clone()).or_default() += 1;
        }
    }
    let made = made.lock().unwrap();
    assert_eq!(seen.len(), made.len(), "records at headquarters vs made");
    assert!(
        seen.keys().eq(made.iter()),
        "the records at headquarters are the records made"
    );
    assert!(seen.values().all(|n| *n == 1), "a record is there twice");
    println!(
        "soak: {} records made, every one at headquarters once; heads agree",
        made.len()
    );
}
