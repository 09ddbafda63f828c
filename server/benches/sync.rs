//! Sync benchmark: prints figures, never fails on time.
//!
//! A real `keqing-server` process on loopback, reached through a counting
//! TCP relay (so "bytes on the wire" are real bytes), and real replicas:
//! - first sync of N dossiers (KEQING_SYNC_BENCH_DOSSIERS, default 10 000):
//!   an office device pushes them, a second device of the office pulls them;
//!   against the in-process automerge limit measured in the same run
//!   (applying the same changes to empty documents in one process). Both
//!   are taken three times, each baseline pass right before its sync (on
//!   a fresh server, from a copy of the same replica), and compared at
//!   their best: the machine's speed drifts by a third between minutes;
//! - a pull by a device that joins once the server's projector has caught
//!   up: it bootstraps from the server's snapshots;
//! - incremental sync after one edit, and a round with nothing changed:
//!   time and bytes;
//! - the server's resident memory after ingesting N (read once its
//!   projector has caught up), 5N and 10N dossiers (the later ones pushed
//!   as synthetic changes by a third device);
//! - side by side, samod 0.16 (the Rust automerge-repo) on the same N
//!   documents over loopback TCP through the same kind of relay (which also
//!   counts its length-delimited frames): first sync of an office repo to a
//!   server repo, and a reconnect with nothing changed
//!   (KEQING_SYNC_BENCH_SAMOD=skip leaves this part out).

/// The devices here stand for `keqing` processes: the same allocator as
/// the `keqing` binary (and the baseline runs with it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use automerge::{ActorId, Automerge, Change};
use keqing_office::desk::{CallInput, Desk};
use keqing_office::sync::{Quiet, enroll, sync_once};
use keqing_proto::SyncConnection;
use keqing_server::store::{SqliteStore, Store};
use keqing_shared::dossier::{Dossier, PatientUpdate};
use keqing_shared::staff::Role;
use keqing_shared::sync::ChangeEnvelope;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Counts length-delimited frames (a 4-byte big-endian length, then the
/// payload: samod's TCP framing) in a byte stream fed piece by piece.
#[derive(Default)]
struct FrameCounter {
    header: Vec<u8>,
    remaining: u64,
}

impl FrameCounter {
    fn feed(&mut self, mut buf: &[u8]) -> u64 {
        let mut frames = 0;
        while !buf.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(buf.len() as u64)) as usize;
                self.remaining -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (4 - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if let Ok(len) = <[u8; 4]>::try_from(self.header.as_slice()) {
                self.remaining = u64::from(u32::from_be_bytes(len));
                self.header.clear();
                frames += 1;
            }
        }
        frames
    }
}

/// Copies one direction of a relayed connection, counting its bytes (and
/// frames), until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
    frames: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = FrameCounter::default();
    loop {
        let n = match tokio::io::AsyncReadExt::read(&mut from, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(f) = &frames {
            f.fetch_add(parser.feed(&buf[..n]), Ordering::Relaxed);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP relay to `target` that counts the bytes in both directions (and,
/// with `frames`, samod's length-delimited messages).
async fn counting_relay(
    target: String,
    counter: Arc<AtomicU64>,
    frames: Option<Arc<AtomicU64>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("relay bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let target = target.clone();
            let counter = counter.clone();
            let frames = frames.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                // As tonic does on its own sockets: without it, Nagle and
                // delayed ACKs add ~40 ms to small exchanges through the relay.
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::join!(
                    pump(ri, wo, counter.clone(), frames.clone()),
                    pump(ro, wi, counter, frames)
                );
            });
        }
    });
    addr
}

mod support;

fn rss_mb(pid: u32) -> f64 {
    support::status_mb(pid, "VmRSS:")
}

/// CPU seconds (user + system) a process has used: its clock ticks in
/// /proc/PID/stat (fields 14 and 15), at the usual 100 per second.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count after its ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn admin(dir: &std::path::Path, args: &[&str]) -> String {
    support::last_line_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_keqing-server"))
            .arg("--data")
            .arg(dir)
            .args(args),
    )
}

/// A document made from its changes, applied to an empty one.
fn built(changes: &[Vec<u8>]) -> Automerge {
    let mut doc = Automerge::new();
    doc.apply_changes(
        changes
            .iter()
            .map(|b| Change::from_bytes(b.clone()).expect("change")),
    )
    .expect("apply");
    doc
}

/// What samod did on the same documents.
struct SamodFigures {
    first_s: f64,
    first_bytes: u64,
    first_frames: u64,
    reconnect_s: f64,
    reconnect_bytes: u64,
    reconnect_frames: u64,
}

/// samod 0.16, the Rust automerge-repo, on the same documents: an office
/// repo holding them connects to a server repo over loopback TCP (through a
/// counting relay); first sync ends when the server has every document's
/// heads, the reconnect (nothing changed) when it has confirmed them all
/// again on a new connection. Both repos keep their documents in memory,
/// which favours samod (Keqing's server writes SQLite with fsync).
async fn samod_side_by_side(docs: &BTreeMap<String, Vec<Vec<u8>>>) -> SamodFigures {
    let server = samod::Repo::build_tokio()
        .with_peer_id("server".into())
        .load()
        .await;
    let acceptor = server
        .make_acceptor(url::Url::parse("tcp://server").expect("url"))
        .expect("acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let _ = io.set_nodelay(true);
            if acceptor
                .accept(samod::Transport::from_tokio_io(io))
                .is_err()
            {
                break;
            }
        }
    });
    let bytes = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let relay = counting_relay(addr, bytes.clone(), Some(frames.clone())).await;
    let (host, port) = relay.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("port");
    let office = samod::Repo::build_tokio()
        .with_peer_id("office".into())
        .load()
        .await;
    let mut handles = Vec::with_capacity(docs.len());
    for changes in docs.values() {
        handles.push(office.create(built(changes)).await.expect("create"));
    }
    // One connection: dial, then wait until the server has every
    // document's heads. Returns (seconds, bytes, messages).
    let round = || async {
        bytes.store(0, Ordering::Relaxed);
        frames.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let dialer = office
            .dial(
                samod::BackoffConfig::default(),
                Arc::new(samod::tokio_io::TcpDialer::new_host_port(
                    host.to_string(),
                    port,
                )),
            )
            .expect("dial");
        dialer.established().await.expect("connected");
        let conn = dialer.connection_id().expect("connection");
        for h in &handles {
            h.they_have_our_changes(conn).await;
        }
        let figures = (
            t.elapsed().as_secs_f64(),
            bytes.swap(0, Ordering::Relaxed),
            frames.swap(0, Ordering::Relaxed),
        );
        dialer.close();
        // Let the server notice the closed connection before the next round.
        tokio::time::sleep(Duration::from_millis(200)).await;
        figures
    };
    let (first_s, first_bytes, first_frames) = round().await;
    let (reconnect_s, reconnect_bytes, reconnect_frames) = round().await;
    let figures = SamodFigures {
        first_s,
        first_bytes,
        first_frames,
        reconnect_s,
        reconnect_bytes,
        reconnect_frames,
    };
    office.stop().await;
    server.stop().await;
    figures
}

/// A `keqing-server` process on a fresh data directory, with the bench's
/// office devices added (A pushes, B pulls, C pushes synthetic dossiers
/// for the memory figures, D joins once the server has built snapshots).
struct BenchServer {
    process: std::process::Child,
    dir: std::path::PathBuf,
    addr: String,
    token_a: String,
    token_b: String,
    token_c: String,
    token_d: String,
}

impl BenchServer {
    fn start(dir: &std::path::Path) -> BenchServer {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_keqing-server"))
            .arg("--data")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start keqing-server");
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .trim_start_matches("keqing-server listening on ")
            .to_string();
        let add = |name: &str| admin(dir, &["device", "add", "--office", "44", "--name", name]);
        BenchServer {
            process,
            dir: dir.to_path_buf(),
            addr,
            token_a: add("A"),
            token_b: add("B"),
            token_c: add("C"),
            token_d: add("D"),
        }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Copies a closed replica's directory (its files) to `to`.
fn copy_replica(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read replica dir") {
        let entry = entry.expect("entry");
        assert!(
            entry.file_type().expect("type").is_file(),
            "a flat replica directory"
        );
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy replica");
    }
}

/// Times one in-process pass of the baseline: every dossier's changes
/// applied to an empty document.
fn baseline_pass(by_doc: &BTreeMap<String, Vec<Vec<u8>>>) -> f64 {
    let t = Instant::now();
    for changes in by_doc.values() {
        std::hint::black_box(built(changes).get_heads());
    }
    t.elapsed().as_secs_f64()
}

fn enrolled(rt: &tokio::runtime::Runtime, dir: &std::path::Path, url: &str, token: &str) -> Desk {
    rt.block_on(enroll(
        dir,
        &[url.to_string()],
        token,
        None,
        &Default::default(),
    ))
    .expect("enroll")
}

/// What one timed sync round took.
#[derive(Clone, Copy)]
struct Round {
    secs: f64,
    /// CPU seconds of (this process: the devices and the relay, keqing-server).
    cpu: (f64, f64),
    /// Bytes on the wire, both ways.
    bytes: u64,
    pulled_snapshots: u64,
}

/// One timed sync round of `desk`.
fn timed(
    rt: &tokio::runtime::Runtime,
    desk: &mut Desk,
    server: &BenchServer,
    wire: &AtomicU64,
    phase: &str,
) -> Round {
    wire.store(0, Ordering::Relaxed);
    eprintln!("phase: {phase}, server pid {}", server.pid());
    let me = std::process::id();
    let cpu_before = (cpu_s(me), cpu_s(server.pid()));
    let t = Instant::now();
    let summary = rt
        .block_on(sync_once(desk.replica_mut(), &mut Quiet))
        .expect(phase);
    let secs = t.elapsed().as_secs_f64();
    Round {
        secs,
        cpu: (cpu_s(me) - cpu_before.0, cpu_s(server.pid()) - cpu_before.1),
        bytes: wire.swap(0, Ordering::Relaxed),
        pulled_snapshots: summary.pulled_snapshots,
    }
}

/// One first sync: a copy of the filled replica A pushes to a fresh
/// server, then a fresh device B pulls; with a baseline pass just before,
/// so each repetition compares the two at the same moment of the machine.
struct FirstSync {
    base_s: f64,
    push: Round,
    pull: Round,
}

impl FirstSync {
    fn total_s(&self) -> f64 {
        self.push.secs + self.pull.secs
    }
}

/// What a first-sync repetition leaves for the later figures: its server
/// and both devices.
struct Synced {
    server: BenchServer,
    url: String,
    a: Desk,
    b: Desk,
}

fn first_sync(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    filled: &std::path::Path,
    by_doc: &BTreeMap<String, Vec<Vec<u8>>>,
    wire: &Arc<AtomicU64>,
) -> (FirstSync, Synced) {
    let server = BenchServer::start(&dir.join("server"));
    let relay = rt.block_on(counting_relay(server.addr.clone(), wire.clone(), None));
    let url = format!("http://{relay}");
    copy_replica(filled, &dir.join("a"));
    let mut a = enrolled(rt, &dir.join("a"), &url, &server.token_a);
    let base_s = baseline_pass(by_doc);
    let push = timed(rt, &mut a, &server, wire, "first push");
    let mut b = enrolled(rt, &dir.join("b"), &url, &server.token_b);
    let pull = timed(rt, &mut b, &server, wire, "first pull");
    assert_eq!(
        b.replica().dossier_count().expect("count"),
        by_doc.keys().filter(|d| !d.starts_with("roster-")).count() as u64,
        "B holds every dossier"
    );
    (
        FirstSync { base_s, push, pull },
        Synced { server, url, a, b },
    )
}

/// First-sync repetitions: the machine's speed drifts by a third between
/// minutes, so both the sync and the baseline are taken at their best of
/// these, each repetition's baseline pass right before its sync.
const FIRST_SYNC_RUNS: usize = 3;

fn main() {
    let n: usize = std::env::var("KEQING_SYNC_BENCH_DOSSIERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let wire = Arc::new(AtomicU64::new(0));
    println!("keqing sync benchmark — {n} dossiers");

    // Office device A fills its replica offline.
    let fill = Instant::now();
    let filled = tmp.path().join("filled");
    let mut a = Desk::init(&filled, "44", "A").expect("init");
    a.add_staff("李娜", Role::Consultant).expect("staff");
    a.replica().set_bulk_load(true).expect("bulk");
    a.replica_mut().begin_bulk().expect("bulk");
    let day = keqing_shared::when::parse_datetime("2026-11-20T09:00").expect("time");
    for i in 0..n {
        a.register_call(&CallInput {
            phone: format!("13{:09}", i),
            name: format!("患者{i}"),
            age: Some(60),
            source: "电视".into(),
            disease: Some("冠心病".into()),
            staff: "李娜".into(),
            at: day,
            force_new: true,
            ..Default::default()
        })
        .expect("call");
        if (i + 1) % 1000 == 0 {
            a.replica_mut().finish_bulk(true).expect("commit");
            a.replica_mut().begin_bulk().expect("bulk");
        }
    }
    a.replica_mut().finish_bulk(true).expect("commit");
    a.replica().set_bulk_load(false).expect("durable");
    println!(
        "fill: {n} dossiers offline in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    // Baseline: the in-process automerge limit on the same changes.
    let outbox = a.replica().outbox_batch(0, usize::MAX).expect("outbox");
    drop(a);
    let changes_total = outbox.len();
    let mut by_doc: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for r in outbox {
        by_doc.entry(r.doc_id).or_default().push(r.bytes);
    }

    // First sync, repeated on fresh servers and replicas; the last
    // repetition's server and devices go on to the later figures.
    let mut runs = Vec::with_capacity(FIRST_SYNC_RUNS);
    let mut synced = None;
    for k in 0..FIRST_SYNC_RUNS {
        if let Some(Synced { server, .. }) = synced.take() {
            server.stop();
        }
        let (run, s) = first_sync(
            &rt,
            &tmp.path().join(format!("run{k}")),
            &filled,
            &by_doc,
            &wire,
        );
        println!(
            "first sync {}/{FIRST_SYNC_RUNS}: baseline {:.2} s, push {:.2} s, pull {:.2} s",
            k + 1,
            run.base_s,
            run.push.secs,
            run.pull.secs
        );
        runs.push(run);
        synced = Some(s);
    }
    let Synced {
        server,
        url,
        mut a,
        mut b,
    } = synced.expect("at least one run");

    // Device D joins once the server's projector has caught up (it builds
    // each dossier's snapshot as it projects it): it bootstraps from those
    // snapshots instead of applying every change.
    let wait = Instant::now();
    {
        let store = SqliteStore::open(&server.dir).expect("server store");
        let behind = || {
            let session = store.projections().expect("session");
            session.projector_cursor().expect("projector") < session.max_seq().expect("log")
        };
        while behind() {
            assert!(
                wait.elapsed() < Duration::from_secs(900),
                "the projector catches up"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let caught_up_s = wait.elapsed().as_secs_f64();
    let mut d = enrolled(&rt, &tmp.path().join("late-d"), &url, &server.token_d);
    let late = timed(&rt, &mut d, &server, &wire, "late pull");
    assert_eq!(d.replica().dossier_count().expect("count"), n as u64);
    drop(d);
    // After the projector's catch-up, so every figure includes what its
    // work leaves resident.
    let rss_n = rss_mb(server.pid());

    // Incremental: one edit on A, then A syncs and B syncs; median of 7.
    let id = a.resolve_patient("13000000007").expect("patient");
    let mut inc = Vec::new();
    let mut idle = Vec::new();
    for k in 0..7 {
        a.edit_patient(&id, |tx| {
            tx.update_patient(&PatientUpdate {
                address: Some(format!("广州{k}")),
                ..Default::default()
            })
        })
        .expect("edit");
        wire.store(0, Ordering::Relaxed);
        let t = Instant::now();
        rt.block_on(sync_once(a.replica_mut(), &mut Quiet))
            .expect("a");
        let got = rt
            .block_on(sync_once(b.replica_mut(), &mut Quiet))
            .expect("b");
        inc.push((t.elapsed().as_secs_f64(), wire.swap(0, Ordering::Relaxed)));
        assert_eq!(got.pulled_changes, 1);
        // Nothing changed: one round of B.
        let t = Instant::now();
        rt.block_on(sync_once(b.replica_mut(), &mut Quiet))
            .expect("idle");
        idle.push((t.elapsed().as_secs_f64(), wire.swap(0, Ordering::Relaxed)));
    }
    inc.sort_by(|x, y| x.0.total_cmp(&y.0));
    idle.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (inc_s, inc_bytes) = inc[inc.len() / 2];
    let (idle_s, idle_bytes) = idle[idle.len() / 2];

    // Server memory as the log grows: device C pushes synthetic dossiers.
    let mut rss = vec![(n, rss_n)];
    rt.block_on(async {
        let actor = ActorId::random();
        let mut c = SyncConnection::connect(&url, &server.token_c, Duration::from_secs(5))
            .await
            .expect("c");
        c.enroll(actor.to_bytes().to_vec()).await.expect("enroll c");
        let mut total = n;
        for target in [5 * n, 10 * n] {
            while total < target {
                let mut batch = Vec::new();
                for _ in 0..500 {
                    let id = uuid::Uuid::now_v7().to_string();
                    let (mut d, created) =
                        Dossier::create(&id, "44", day, actor.clone(), 1).expect("create");
                    let edit = d
                        .edit(2, |tx| {
                            tx.update_patient(&PatientUpdate {
                                name: Some("合成".into()),
                                age: Some(60),
                                ..Default::default()
                            })?;
                            tx.add_phone("13800138000")
                        })
                        .expect("edit")
                        .expect("change");
                    batch.push(ChangeEnvelope {
                        doc_id: id.clone(),
                        bytes: created.bytes,
                    });
                    batch.push(ChangeEnvelope {
                        doc_id: id,
                        bytes: edit.bytes,
                    });
                    total += 1;
                }
                c.push(batch).await.expect("push");
            }
            rss.push((total, rss_mb(server.pid())));
        }
    });
    server.stop();

    // Both sides at their best of the repetitions.
    let best = runs
        .iter()
        .min_by(|x, y| x.total_s().total_cmp(&y.total_s()))
        .expect("runs");
    let base_s = runs.iter().map(|r| r.base_s).fold(f64::INFINITY, f64::min);
    let (push, pull) = (best.push, best.pull);
    let (push_s, pull_s, first_s) = (push.secs, pull.secs, best.total_s());
    println!();
    println!(
        "first sync of {n} dossiers ({changes_total} changes), the best of {FIRST_SYNC_RUNS} runs:"
    );
    println!(
        "  push (device A)         {push_s:>8.2} s   {:>10.0} dossiers/s   {:>8.1} MB on the wire",
        n as f64 / push_s,
        push.bytes as f64 / 1e6
    );
    println!(
        "  pull (fresh device B)   {pull_s:>8.2} s   {:>10.0} dossiers/s   {:>8.1} MB on the wire ({} snapshots)",
        n as f64 / pull_s,
        pull.bytes as f64 / 1e6,
        pull.pulled_snapshots
    );
    println!(
        "  push + pull             {first_s:>8.2} s   {:>10.0} dossiers/s",
        n as f64 / first_s
    );
    println!(
        "  CPU seconds, devices' process (A or B, the relay) / keqing-server: push {:.2} / {:.2}, pull {:.2} / {:.2}",
        push.cpu.0, push.cpu.1, pull.cpu.0, pull.cpu.1
    );
    println!(
        "  baseline: automerge in one process, same changes into empty documents (best of {FIRST_SYNC_RUNS}): {base_s:.2} s ({:.0} dossiers/s)",
        n as f64 / base_s
    );
    let mut each: Vec<f64> = runs.iter().map(|r| r.base_s / r.total_s()).collect();
    each.sort_by(f64::total_cmp);
    println!(
        "  ratio (sync rate / in-process rate): {:.0}%   (target ≥ 50%); run by run, against the pass just before: {}",
        100.0 * base_s / first_s,
        each.iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  pull by a device joining once the server has projected (and built snapshots: {caught_up_s:.1} s after the runs): {:.2} s   {:>7.0} dossiers/s   {:.1} MB on the wire ({} snapshots); CPU device / server {:.2} / {:.2}",
        late.secs,
        n as f64 / late.secs,
        late.bytes as f64 / 1e6,
        late.pulled_snapshots,
        late.cpu.0,
        late.cpu.1
    );
    println!(
        "incremental sync after 1 edit ({n} dossiers in scope), median of 7: {:.1} ms, {} bytes on the wire   (targets < 50 ms, < 5 KB)",
        inc_s * 1e3,
        inc_bytes
    );
    println!(
        "sync round with nothing changed, median of 7: {:.1} ms, {} bytes on the wire",
        idle_s * 1e3,
        idle_bytes
    );
    println!("server RSS after ingesting:");
    for (docs, mb) in rss {
        println!("  {docs:>8} dossiers   {mb:>7.1} MB");
    }
    // samod at 10k documents takes the better part of an hour:
    // KEQING_SYNC_BENCH_SAMOD=skip leaves it out (profiling, quick runs).
    if std::env::var("KEQING_SYNC_BENCH_SAMOD").as_deref() == Ok("skip") {
        println!("side by side with samod 0.16: skipped (KEQING_SYNC_BENCH_SAMOD=skip)");
        return;
    }
    let samod = rt.block_on(samod_side_by_side(&by_doc));
    println!(
        "side by side with samod 0.16 (automerge-repo), the same {n} documents over loopback:"
    );
    println!(
        "  first sync      keqing push {:>7.2} s {:>8.1} MB   samod {:>7.2} s {:>8.1} MB {:>7} messages   keqing {:.1}× faster",
        push_s,
        push.bytes as f64 / 1e6,
        samod.first_s,
        samod.first_bytes as f64 / 1e6,
        samod.first_frames,
        samod.first_s / push_s
    );
    println!(
        "  reconnect, nothing changed   keqing {:>7.1} ms {:>6} B   samod {:>7.1} ms {:>8} B {:>7} messages   keqing {:.0}× faster, {:.0}× fewer bytes   (goal ≥ 10×)",
        idle_s * 1e3,
        idle_bytes,
        samod.reconnect_s * 1e3,
        samod.reconnect_bytes,
        samod.reconnect_frames,
        samod.reconnect_s / idle_s,
        samod.reconnect_bytes as f64 / idle_bytes.max(1) as f64
    );
}
