//! One device cannot starve the others. A device with real credentials
//! opens many pull streams and never reads them, asks again and again for
//! a repair naming one big dossier thousands of times, and floods the
//! server with requests — all at once. The server's memory grows by a
//! bounded amount, and another office's sync and headquarters' report are
//! still served, promptly. The figures are printed (BENCHMARKS.md keeps
//! them): `scripts/test hostile_device -- --nocapture`.

use automerge::ActorId;
use keqing_proto::SyncConnection;
use keqing_shared::dossier::Dossier;
use keqing_shared::report::Scope;
use keqing_shared::sync::{ChangeEnvelope, DocHeads, SyncErrorKind};
use keqing_tests::{Office, Server, big_followup};
use std::time::{Duration, Instant};

/// The server's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A dossier of `edits` changes of ~0.9 MB each, as the device's pushes.
fn big_dossier(id: &str, actor: &ActorId, edits: usize) -> Vec<ChangeEnvelope> {
    let at = keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap();
    let (mut d, created) = Dossier::create(id, "44", at, actor.clone(), 1).unwrap();
    let mut changes = vec![created];
    for e in 0..edits {
        let c = d
            .edit(2 + e as i64, |tx| {
                for i in 0..55 {
                    tx.add(&big_followup(e * 55 + i))?;
                }
                Ok(())
            })
            .unwrap()
            .unwrap();
        changes.push(c);
    }
    changes
        .into_iter()
        .map(|c| ChangeEnvelope {
            doc_id: id.into(),
            bytes: c.bytes,
        })
        .collect()
}

/// The shortest of three timed runs of `f` (the machine runs other tests
/// beside this one).
fn best_of_three(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn a_hostile_device_cannot_starve_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let url = server.url();
    let hostile_token = server.add_device(Some("44"), "广东-失控");
    let hq_token = server.add_device(None, "数据中心");
    let other = Office::new(tmp.path().join("bj"));
    other.enroll_on(&server, Some("11"), "北京前台1");
    other.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    other.call("13900000001", "王芳", "李敏", "2026-11-20T09:00");
    other.ok(&["sync"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |token: &str| {
        let (url, token) = (url.clone(), token.to_string());
        async move {
            SyncConnection::connect(&url, &token, Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    // The office's feed: ten dossiers of a change of ~0.9 MB, and one
    // near the 4 MiB limit (~13 MB in all: every full pull batch is big).
    let actor = ActorId::random();
    let big = "01a21111-0000-7000-8000-00000000b000";
    rt.block_on(async {
        let mut c = connect(&hostile_token).await;
        c.enroll(actor.to_bytes().to_vec()).await.unwrap();
        for i in 0..10 {
            let id = format!("01a21111-0000-7000-8000-00000000a{i:03}");
            c.push(big_dossier(&id, &actor, 1)).await.unwrap();
        }
        for change in big_dossier(big, &actor, 4) {
            c.push(vec![change]).await.unwrap();
        }
    });
    let hq_report = || {
        rt.block_on(async {
            let mut hq = connect(&hq_token).await;
            let day = keqing_shared::when::parse_date("2026-11-20").unwrap();
            hq.report(&Scope::National, day, day).await.unwrap()
        })
    };
    let mut serial = 0;
    let mut other_sync = || {
        serial += 1;
        other.call(
            &format!("1380000{serial:04}"),
            "来电",
            "李敏",
            "2026-11-20T10:00",
        );
        other.ok(&["sync"]);
    };
    // Warm: the projector has caught up, connections are pooled.
    hq_report();
    other_sync();
    let calm_sync = best_of_three(&mut other_sync);
    let calm_report = best_of_three(|| {
        hq_report();
    });
    let rss_before = rss_mib(server.pid());

    // The attack, all of it at once, held while the others are timed.
    let peak = std::sync::Arc::new(std::sync::Mutex::new(rss_before));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), server.pid());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = rss_mib(pid);
                let mut p = peak.lock().unwrap();
                *p = p.max(now);
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (unread, pulls_refused, repairs, flood) = rt.block_on(async {
        // Forty pulls of the whole office, each on its own connection,
        // none ever read.
        let mut unread = Vec::new();
        let mut pulls_refused = 0;
        for _ in 0..40 {
            let mut c = connect(&hostile_token).await;
            match c.pull(0, "", 2000).await {
                Ok(stream) => unread.push((c, stream)),
                Err(e) => {
                    assert_eq!(e.kind, SyncErrorKind::ResourceExhausted, "{e:?}");
                    pulls_refused += 1;
                }
            }
        }
        // Twenty repairs at once, each naming the big dossier 5 000 times.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let connect = connect(&hostile_token);
                tokio::spawn(async move {
                    let mut c = connect.await;
                    let docs = vec![
                        DocHeads {
                            doc_id: big.into(),
                            heads: vec![],
                        };
                        5000
                    ];
                    c.repair(docs).await
                })
            })
            .collect();
        let mut repairs = (0, 0, 0usize);
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => {
                    repairs.0 += 1;
                    repairs.2 = repairs.2.max(a.missing.iter().map(|c| c.bytes.len()).sum());
                    assert!(
                        a.missing.len() <= 5,
                        "each change once: {}",
                        a.missing.len()
                    );
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind,
                            SyncErrorKind::ResourceExhausted | SyncErrorKind::Unavailable
                        ),
                        "{e:?}"
                    );
                    repairs.1 += 1;
                }
            }
        }
        // A thousand requests as fast as one connection sends them.
        let c = connect(&hostile_token).await;
        let flood: Vec<_> = (0..1000)
            .map(|_| {
                let mut c = c.clone();
                tokio::spawn(async move { c.push(vec![]).await })
            })
            .collect();
        // Refused by the device's rate (RESOURCE_EXHAUSTED), or, past the
        // streams one connection may open at once, by the transport itself
        // (a refused stream: UNAVAILABLE).
        let mut refused = 0;
        for f in flood {
            if let Err(e) = f.await.unwrap() {
                assert!(
                    matches!(
                        e.kind,
                        SyncErrorKind::ResourceExhausted | SyncErrorKind::Unavailable
                    ),
                    "{e:?}"
                );
                refused += 1;
            }
        }
        (unread, pulls_refused, repairs, refused)
    });
    // The pulls are still open and unread while the others are served.
    let busy_sync = best_of_three(&mut other_sync);
    let busy_report = best_of_three(|| {
        hq_report();
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = *peak.lock().unwrap();
    let rss_after = rss_mib(server.pid());
    drop(unread);

    println!(
        "hostile device: {pulls_refused}/40 pulls refused, repairs {} answered / {} refused (largest answer {:.1} MB), {flood}/1000 flooded requests refused",
        repairs.0,
        repairs.1,
        repairs.2 as f64 / 1e6
    );
    println!(
        "server RSS: {rss_before:.0} MiB before, {peak:.0} MiB at the peak of the attack (+{:.0}), {rss_after:.0} MiB after",
        peak - rss_before
    );
    println!(
        "another office's sync: {:.0} ms calm, {:.0} ms under attack ({:.2}×); HQ's national report: {:.0} ms calm, {:.0} ms under attack ({:.2}×)",
        calm_sync.as_secs_f64() * 1e3,
        busy_sync.as_secs_f64() * 1e3,
        busy_sync.as_secs_f64() / calm_sync.as_secs_f64(),
        calm_report.as_secs_f64() * 1e3,
        busy_report.as_secs_f64() * 1e3,
        busy_report.as_secs_f64() / calm_report.as_secs_f64()
    );
    assert_eq!(pulls_refused, 38, "two pulls at once per device");
    assert!(repairs.0 >= 1, "a repair is answered");
    assert!(
        repairs.2 <= 9 << 20,
        "a repair's answer is bounded: {}",
        repairs.2
    );
    assert!(
        flood >= 700,
        "the flood is cut by the device's rate: {flood}"
    );
    assert!(
        peak - rss_before < 256.0,
        "memory growth is bounded: {rss_before:.0} → {peak:.0} MiB"
    );
    assert!(
        busy_sync < Duration::from_secs(1) && busy_report < Duration::from_secs(1),
        "the others are served within a second: sync {busy_sync:?}, report {busy_report:?}"
    );
    let report = hq_report();
    let line = report.lines.iter().find(|l| l.office == "11").unwrap();
    assert_eq!(
        line.calls as usize,
        1 + 1 + 3 + 3,
        "every call of the other office"
    );
}
