//! `keqing demo`: the whole system on one machine.
//!
//! A real `keqing-server` (the library's tonic server on a loopback socket,
//! its store in `DIR/server`) and real office replicas (SQLite files in
//! `DIR/<office>/<device>`): 27 offices with two devices each and a
//! headquarters device play a week of the seeds' workflow with seeded,
//! deterministic data. Each office reaches the server through its own gate
//! (a TCP relay); a closed gate is an office whose line is down: its syncs
//! fail and it keeps working offline. At the end every gate opens, everyone
//! syncs, headquarters folds the duplicates it finds (a patient who called
//! two offices, or was registered twice by two offline devices), and an
//! independent check compares every replica with the server, every record
//! generated with the merged dossiers, and the national report with the
//! events generated.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use keqing_office::desk::{
    CallInput, DeliveryInput, Desk, NonPatientInput, PlanStep, VisitInput, new_id,
};
use keqing_office::sync::{Quiet, SyncSummary, enroll, server_report, sync_once};
use keqing_shared::dossier::{Dossier, PatientUpdate};
use keqing_shared::office::OFFICES;
use keqing_shared::records::*;
use keqing_shared::report::{Line, Report, Scope};
use keqing_shared::staff::Role;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use thiserror::Error;

const SOURCES: [&str; 6] = ["电视", "报纸", "电台", "网络", "朋友介绍", "讲座义诊"];
/// The demo's catalogue: a code, a channel kind and a day's spend range
/// (yuan) for each of [`SOURCES`] (word of mouth costs nothing).
const CATALOG_SOURCES: [(&str, &str, &str, u64, u64); 6] = [
    ("电视", "tv", "电视", 800, 3000),
    ("报纸", "paper", "报纸", 200, 800),
    ("电台", "radio", "广播", 100, 500),
    ("网络", "web", "网络", 100, 600),
    ("朋友介绍", "friend", "朋友介绍", 0, 0),
    ("讲座义诊", "lecture", "讲座义诊", 300, 1500),
];
const DISEASES: [&str; 6] = [
    "冠心病",
    "高血压",
    "脑梗塞",
    "心绞痛",
    "脑动脉硬化",
    "心肌缺血",
];
const RELATIONS: [&str; 4] = ["本人", "子女", "配偶", "亲戚"];
const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤";
const GIVEN: &str = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍建国志强淑珍凤英红梅海燕春梅国华德明振华文华永刚";
const PRODUCT: &str = "金诃心脑康";
/// The password of every staff member of the demo's offices (a demo's, in
/// the open: the workstation of a kept demo asks for it).
pub const DEMO_PASSWORD: &str = "keqing-demo";
/// Headquarters' people of the demo (dashboard accounts, password
/// [`DEMO_PASSWORD`]): an administrator and an analyst.
pub const DEMO_HQ_USERS: [(&str, keqing_shared::staff::HqRole); 2] = [
    ("周主任", keqing_shared::staff::HqRole::Admin),
    ("钱分析", keqing_shared::staff::HqRole::Analyst),
];
const STREETS: [&str; 5] = ["人民", "解放", "中山", "建设", "和平"];

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub offices: usize,
    pub days: u32,
    /// The first day played; by default the period ends yesterday (no
    /// event is ever after the day the demo runs).
    pub start: Option<NaiveDate>,
    /// New callers per office over the whole run.
    pub patients: usize,
    pub seed: u64,
    /// Keep the server's and the offices' data here (else a temporary directory).
    pub keep: Option<PathBuf>,
    /// No progress bars (for `--json`).
    pub quiet: bool,
}

/// One check of the final verification.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What the demo did and found.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub offices: usize,
    /// Office devices plus the headquarters device.
    pub devices: usize,
    /// Dossiers on the server (merged duplicates included, as pointers).
    pub dossiers: usize,
    /// Records generated (calls, visits, purchases, follow-ups, ...).
    pub records: usize,
    /// Office edits made (each one automerge change, one transaction).
    pub edits: u64,
    pub merged_duplicates: usize,
    pub syncs: u64,
    /// Sync attempts refused because the office's line was down.
    pub syncs_offline: u64,
    pub changes_pushed: u64,
    pub converged: bool,
    pub checks: Vec<Check>,
    /// The demo's first and last day (what `report --from --to` takes).
    pub from: String,
    pub to: String,
    /// The national report's total line over the demo's days.
    pub national: Line,
    pub national_report_ms: f64,
    pub edits_per_second: f64,
    pub seconds: f64,
    /// Where the data was kept (`--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_in: Option<String>,
    #[serde(skip)]
    pub report: Option<Report>,
}

/// Headquarters' activity of the demo (in its catalogue): a clinic week
/// from the demo's second day to its fourth, at every office.
const DEMO_ACTIVITY: &str = "demo-clinic";

/// The days of [`DEMO_ACTIVITY`], from the demo's first day.
fn demo_activity_days(first: NaiveDate) -> (NaiveDate, NaiveDate) {
    (first + Duration::days(1), first + Duration::days(3))
}

/// The demo's catalogue file (TOML, as headquarters would write it).
fn demo_catalog(first: NaiveDate) -> String {
    let mut toml = format!(
        "diseases = [{}]\n",
        DISEASES
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, code, kind, _, _) in CATALOG_SOURCES {
        toml.push_str(&format!(
            "\n[[source]]\ncode = \"{code}\"\nname = \"{name}\"\nkind = \"{kind}\"\n"
        ));
        if name == "电视" {
            toml.push_str("aliases = [\"电视台\", \"TV\"]\n");
        }
    }
    toml.push_str(&format!(
        "\n[[product]]\ncode = \"xnk\"\nname = \"{PRODUCT}\"\nunit_price = \"128.00\"\ndays_per_unit = 30\n"
    ));
    let (starts, ends) = demo_activity_days(first);
    toml.push_str(&format!(
        "\n[[activity]]\ncode = \"{DEMO_ACTIVITY}\"\nname = \"心脑健康义诊周\"\nkind = \"义诊\"\n\
         starts = \"{starts}\"\nends = \"{ends}\"\nsource = \"lecture\"\n"
    ));
    toml
}

/// A day's spend per office and paid source over the demo's days.
fn demo_spend(opts: &DemoOptions, first: NaiveDate) -> Vec<keqing_shared::report::SpendFact> {
    let mut rng = Rng(opts.seed ^ 0x5ee0_5ee0);
    let mut out = Vec::new();
    for day in 0..opts.days {
        let day = first + Duration::days(i64::from(day));
        for office in OFFICES.iter().take(opts.offices) {
            for (_, code, _, low, high) in CATALOG_SOURCES {
                if high == 0 {
                    continue;
                }
                let yuan = low + rng.below(high - low + 1);
                out.push(keqing_shared::report::SpendFact {
                    office: office.code.to_string(),
                    day,
                    source_code: code.to_string(),
                    amount_fen: (yuan * 100) as i64,
                });
            }
        }
    }
    out
}

/// A small deterministic generator (SplitMix64): the same seed plays the
/// same week. Tests that generate work use it too.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn char_of(&mut self, s: &str) -> char {
        let chars: Vec<char> = s.chars().collect();
        *self.pick(&chars)
    }
}

/// Every record the demo made, by id: what the check expects to find once.
#[derive(Default)]
struct Ledger {
    records: BTreeMap<String, &'static str>,
    calls: u64,
    visits: u64,
    purchases: u64,
    followups: u64,
    amount_fen: i64,
    edits: u64,
    /// Non-patient calls by office and kind.
    nonpatient: BTreeMap<(String, &'static str), u64>,
    /// Visits that did not buy, by reason.
    reasons: BTreeMap<&'static str, u64>,
    /// Dossiers whose follow-ups were stopped.
    stopped: Vec<String>,
    /// Every delivery and where it stands.
    deliveries: BTreeMap<String, DeliveryStatus>,
    /// Dossiers that took part in the demo's activity.
    joined: Vec<String>,
}

impl Ledger {
    fn add(&mut self, id: String, kind: &'static str) {
        self.edits += 1;
        match kind {
            "call" => self.calls += 1,
            "visit" => self.visits += 1,
            "purchase" => self.purchases += 1,
            "followup" => self.followups += 1,
            _ => {}
        }
        self.records.insert(id, kind);
    }
}

/// Where a patient stands in the workflow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Called,
    VisitedNotBought,
    Bought,
}

struct Patient {
    dossier: String,
    phone: String,
    name: String,
    age: i64,
    stage: Stage,
    /// The device that created the dossier (the other has it after syncs).
    device: usize,
    problem: Option<String>,
    stopped: bool,
}

struct Device {
    desk: Desk,
}

struct OfficeSim {
    code: String,
    devices: Vec<Device>,
    gate: Arc<AtomicBool>,
    consultants: Vec<String>,
    followup: Vec<String>,
    expert: String,
    supervisor: String,
    field: String,
    patients: Vec<Patient>,
    /// Deliveries still to make: the patient, the delivery, the day it was
    /// registered.
    pending: Vec<(usize, String, NaiveDate)>,
}

/// Why the demo could not run (a failed check is not an error: the
/// summary says which failed).
#[derive(Debug, Error)]
pub enum DemoError {
    #[error("演示参数无效 {0}")]
    Options(String),
    #[error(transparent)]
    Office(#[from] keqing_office::ClientError),
    #[error(transparent)]
    Store(#[from] keqing_server::store::StoreError),
    #[error(transparent)]
    Domain(#[from] keqing_shared::DomainError),
    #[error(transparent)]
    Password(#[from] keqing_host::passwords::PasswordError),
    #[error(transparent)]
    Catalog(#[from] keqing_server::catalog::CatalogImportError),
    #[error("演示文件或网络错误 {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} 失败: {1}")]
    Step(String, #[source] Box<DemoError>),
}

type Result<T> = std::result::Result<T, DemoError>;

/// A TCP relay to `target` that passes connections only while `up`.
async fn gate(target: String, up: Arc<AtomicBool>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !up.load(Ordering::SeqCst) {
                // The line is down: the connection dies at once.
                drop(inbound);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(format!("http://{addr}"))
}

fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn person_name(rng: &mut Rng) -> String {
    let mut s = String::new();
    s.push(rng.char_of(SURNAMES));
    s.push(rng.char_of(GIVEN));
    if rng.chance(0.7) {
        s.push(rng.char_of(GIVEN));
    }
    s
}

fn at(d: NaiveDate, hour: u32, rng: &mut Rng) -> NaiveDateTime {
    d.and_hms_opt(hour, rng.below(60) as u32, 0)
        .expect("valid time")
}

/// The days played: `--days` ending yesterday, or from `--start`; never a
/// day after today (a record dated ahead of the clock is refused anyway).
fn period(opts: &DemoOptions) -> Result<(NaiveDate, NaiveDate)> {
    let today = keqing_host::now_cst().date();
    let days = i64::from(opts.days);
    let first = opts.start.unwrap_or(today - Duration::days(days));
    let last = first + Duration::days(days - 1);
    if last > today {
        return Err(DemoError::Options(format!(
            "--start {first} --days {}: the period would end on {last}, after today ({today}); the demo plays only days that have come",
            opts.days
        )));
    }
    Ok((first, last))
}

/// Runs the demo; the summary says whether every check held.
pub fn run(opts: &DemoOptions) -> Result<DemoSummary> {
    let refuse = |why: String| Err(DemoError::Options(why));
    if opts.offices == 0 || opts.offices > OFFICES.len() {
        return refuse(format!("--offices must be 1..={}", OFFICES.len()));
    }
    if opts.days == 0 || opts.days > 366 {
        return refuse("--days must be 1..=366".into());
    }
    if opts.patients == 0 || opts.patients > 100_000 {
        return refuse("--patients must be 1..=100000".into());
    }
    period(opts)?;
    let started = Instant::now();
    let temp;
    let root: PathBuf = match &opts.keep {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                return refuse(format!(
                    "--keep {} is not empty; give a new directory",
                    dir.display()
                ));
            }
            keqing_host::files::private_dir(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut rng = Rng(opts.seed);

    // The server: its store, its devices, a real socket.
    let server_dir = root.join("server");
    let store: std::sync::Arc<dyn keqing_server::store::Store> =
        std::sync::Arc::new(keqing_server::store::SqliteStore::open(&server_dir)?);
    let now = keqing_shared::when::fmt_datetime(keqing_host::now_cst());
    let mut tokens: Vec<(String, Option<String>, String)> = Vec::new();
    for office in OFFICES.iter().take(opts.offices) {
        for n in 1..=2 {
            let token = new_token();
            let name = format!("{}前台{n}", office.name);
            store.add_device(
                &uuid::Uuid::now_v7().to_string(),
                &name,
                Some(office.code),
                &keqing_server::hub::token_hash(&token),
                &now,
                "keqing demo",
            )?;
            tokens.push((name, Some(office.code.to_string()), token));
        }
    }
    let hq_token = new_token();
    store.add_device(
        &uuid::Uuid::now_v7().to_string(),
        "数据中心1",
        None,
        &keqing_server::hub::token_hash(&hq_token),
        &now,
        "keqing demo",
    )?;
    let password_hash = keqing_host::passwords::hash_password(DEMO_PASSWORD)?;
    for (name, role) in DEMO_HQ_USERS {
        store.add_user(
            &keqing_server::store::HqUser {
                name: name.to_string(),
                role,
                password_hash: password_hash.clone(),
                created_at: now.clone(),
                disabled_at: None,
            },
            "keqing demo",
        )?;
    }
    // Headquarters' catalogue (the offices' devices pull it with their
    // first sync) and the week's media spend, from a generator of their
    // own: the week's events stay those of the seed.
    keqing_server::catalog::import(&*store, &demo_catalog(period(opts)?.0), "keqing demo")?;
    let spend = demo_spend(opts, period(opts)?.0);
    store.import_spend(&spend, "keqing demo")?;
    let spend_fen: i64 = spend.iter().map(|s| s.amount_fen).sum();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = keqing_server::run(listener, store, shutdown).await {
                eprintln!("keqing-server: {e:#}");
            }
        });
        Ok::<_, DemoError>(addr)
    })?;
    let server_url = format!("http://{server_addr}");

    // Offices: a gate each, two enrolled devices, a roster.
    let bars = Bars::new(opts.quiet, (opts.offices * opts.days as usize) as u64);
    let mut offices: Vec<OfficeSim> = Vec::new();
    for office in OFFICES.iter().take(opts.offices) {
        let up = Arc::new(AtomicBool::new(true));
        let url = rt.block_on(gate(server_addr.clone(), up.clone()))?;
        let mut devices = Vec::new();
        for (name, _, token) in tokens
            .iter()
            .filter(|(_, o, _)| o.as_deref() == Some(office.code))
        {
            let dir = root.join(office.code).join(name);
            let desk = rt
                .block_on(enroll(
                    &dir,
                    std::slice::from_ref(&url),
                    token,
                    Some(name),
                    &Default::default(),
                ))
                .map_err(|e| DemoError::Step(format!("enrolling {name}"), Box::new(e.into())))?;
            devices.push(Device { desk });
        }
        let mut sim = OfficeSim {
            code: office.code.to_string(),
            devices,
            gate: up,
            consultants: Vec::new(),
            followup: Vec::new(),
            expert: String::new(),
            supervisor: String::new(),
            field: String::new(),
            patients: Vec::new(),
            pending: Vec::new(),
        };
        let mut names = BTreeSet::new();
        let mut staff = |role: Role, desk: &mut Desk, rng: &mut Rng| -> Result<String> {
            let name = loop {
                let n = person_name(rng);
                if names.insert(n.clone()) {
                    break n;
                }
            };
            desk.add_staff_account(&name, role, Some(DEMO_PASSWORD))?;
            Ok(name)
        };
        let desk = &mut sim.devices[0].desk;
        sim.supervisor = staff(Role::Supervisor, desk, &mut rng)?;
        for _ in 0..2 {
            let c = staff(Role::Consultant, desk, &mut rng)?;
            sim.consultants.push(c);
            let f = staff(Role::Followup, desk, &mut rng)?;
            sim.followup.push(f);
        }
        sim.expert = staff(Role::Expert, desk, &mut rng)?;
        sim.field = staff(Role::Field, desk, &mut rng)?;
        staff(Role::Guide, desk, &mut rng)?;
        // Both devices know the staff before the week starts.
        for i in [0, 1, 0] {
            rt.block_on(sync_once(sim.devices[i].desk.replica_mut(), &mut Quiet))?;
        }
        offices.push(sim);
    }
    let hq_dir = root.join("hq").join("数据中心1");
    let mut hq = rt.block_on(enroll(
        &hq_dir,
        std::slice::from_ref(&server_url),
        &hq_token,
        Some("数据中心1"),
        &Default::default(),
    ))?;

    // The week.
    let (first, last) = period(opts)?;
    let mut ledger = Ledger::default();
    let mut stats = SyncStats::default();
    let mut phone_counter = 0u64;
    // Callers who will also call another office (same phone, same person).
    let mut travellers: Vec<(String, String, i64)> = Vec::new();
    for day in 0..opts.days {
        let date = first + Duration::days(i64::from(day));
        for o in offices.iter_mut() {
            // Some offices lose their line for the day.
            o.gate
                .store(day == 0 || !rng.chance(0.25), Ordering::SeqCst);
        }
        for o in offices.iter_mut() {
            let share = opts.patients / opts.days as usize
                + usize::from((day as usize) < opts.patients % opts.days as usize);
            office_day(
                o,
                date,
                share,
                &mut rng,
                &mut ledger,
                &mut phone_counter,
                &mut travellers,
            )?;
            for d in 0..o.devices.len() {
                if rng.chance(0.7) {
                    stats.sync(&rt, &mut o.devices[d].desk, &o.gate);
                }
            }
            bars.tick(&format!("第{}天 {date}", day + 1));
        }
        stats.sync(&rt, &mut hq, &Arc::new(AtomicBool::new(true)));
    }
    bars.finish();

    // The line comes back everywhere; everyone syncs until nothing moves.
    for o in offices.iter() {
        o.gate.store(true, Ordering::SeqCst);
    }
    settle(&rt, &mut offices, &mut hq, &mut stats)?;
    // Headquarters folds the duplicates it can see (same phone).
    let mut merged = 0;
    for pair in hq.replica().duplicate_candidates()? {
        if !pair.reason.starts_with("同一电话") {
            continue;
        }
        // The older dossier (UUIDv7 ids sort by creation) is kept.
        let (keep, dup) = (&pair.a.dossier_id, &pair.b.dossier_id);
        if hq.merge(keep, dup).is_ok() {
            merged += 1;
        }
    }
    settle(&rt, &mut offices, &mut hq, &mut stats)?;

    // The independent check.
    let reader = keqing_server::store::SqliteStore::open(&server_dir)?;
    let server_heads = server_heads(&reader)?;
    let mut checks = Vec::new();
    let mut diverged = Vec::new();
    for o in &offices {
        let want: BTreeMap<&String, &Vec<String>> = server_heads
            .iter()
            .filter(|(_, (office, _))| office == &o.code)
            .map(|(id, (_, h))| (id, h))
            .collect();
        for (i, d) in o.devices.iter().enumerate() {
            let have = replica_heads(&d.desk)?;
            let have: BTreeMap<&String, &Vec<String>> = have.iter().collect();
            if have != want {
                diverged.push(format!("{} device {}", o.code, i + 1));
            }
        }
    }
    checks.push(Check {
        name: "每台办事处设备与服务器一致 every office device equals the server for its office"
            .into(),
        ok: diverged.is_empty(),
        detail: if diverged.is_empty() {
            format!("{} devices", offices.len() * 2)
        } else {
            format!("diverged: {}", diverged.join(", "))
        },
    });
    let hq_heads = replica_heads(&hq)?;
    let all: BTreeMap<String, Vec<String>> = server_heads
        .iter()
        .map(|(id, (_, h))| (id.clone(), h.clone()))
        .collect();
    checks.push(Check {
        name: "总部副本是所有办事处的并集 headquarters holds the union of the offices".into(),
        ok: hq_heads == all,
        detail: format!(
            "{} documents at headquarters, {} on the server",
            hq_heads.len(),
            all.len()
        ),
    });
    let found = records_in(&hq)?;
    let dossiers = found.dossiers;
    let mut missing = 0;
    let mut doubled = 0;
    for id in ledger.records.keys() {
        match found.records.get(id) {
            None => missing += 1,
            Some(n) if *n > 1 => doubled += 1,
            _ => {}
        }
    }
    let unexpected = found
        .records
        .keys()
        .filter(|id| !ledger.records.contains_key(*id))
        .count();
    checks.push(Check {
        name: "每条记录恰好一次 every generated record present exactly once".into(),
        ok: missing == 0 && doubled == 0 && unexpected == 0,
        detail: format!(
            "{} records; missing {missing}, twice {doubled}, unexpected {unexpected}",
            ledger.records.len()
        ),
    });
    let t = Instant::now();
    let report = rt.block_on(server_report(hq.replica(), &Scope::National, first, last))?;
    let national_report_ms = t.elapsed().as_secs_f64() * 1000.0;
    let n = &report.total;
    let totals_ok = n.calls == ledger.calls
        && n.visits == ledger.visits
        && n.purchases == ledger.purchases
        && n.followups.done == ledger.followups
        && n.amount_fen == ledger.amount_fen;
    let reported_spend: i64 = report.by_source.iter().map(|s| s.spend_fen).sum();
    let costs_ok = report.by_source.iter().all(|s| {
        s.cost_per_buyer_fen
            == (s.bought > 0 && s.spend_fen > 0)
                .then(|| (s.spend_fen as f64 / s.bought as f64).round() as i64)
    });
    checks.push(Check {
        name: "投放合计等于导入的, 每购药患者成本按来源 spend equals what was imported, cost per buyer by source".into(),
        ok: reported_spend == spend_fen && costs_ok,
        detail: format!(
            "{} yuan imported, {} reported; {}",
            keqing_shared::records::fmt_yuan(spend_fen),
            keqing_shared::records::fmt_yuan(reported_spend),
            report
                .by_source
                .iter()
                .map(|s| format!(
                    "{} {}",
                    s.source,
                    s.cost_per_buyer_fen
                        .map_or_else(|| "—".to_string(), keqing_shared::records::fmt_yuan)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    checks.push(Check {
        name: "全国报表合计等于生成的事件 national totals equal the generated events".into(),
        ok: totals_ok,
        detail: format!(
            "calls {}/{} visits {}/{} purchases {}/{} follow-ups {}/{} amount {}/{}",
            n.calls,
            ledger.calls,
            n.visits,
            ledger.visits,
            n.purchases,
            ledger.purchases,
            n.followups.done,
            ledger.followups,
            n.amount_fen,
            ledger.amount_fen
        ),
    });
    let mut disagree = Vec::new();
    for o in &offices {
        let own = o.devices[0].desk.report(first, last)?;
        let line = report.lines.iter().find(|l| l.office == o.code);
        if own.lines.first() != line {
            disagree.push(o.code.clone());
        }
    }
    checks.push(Check {
        name: "各省报表与办事处自己的报表一致 each province line equals the office's own report"
            .into(),
        ok: disagree.is_empty(),
        detail: if disagree.is_empty() {
            format!("{} offices", offices.len())
        } else {
            format!("differ: {}", disagree.join(", "))
        },
    });

    // The office's whole day: non-patient calls by office and kind,
    // not-bought reasons, stopped follow-ups, deliveries.
    let mut nonpatient_got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for b in report
        .nonpatient_calls
        .iter()
        .filter(|b| b.office != "total")
    {
        for (label, n) in counts_of(b) {
            nonpatient_got.insert((b.office.clone(), label), n);
        }
    }
    let nonpatient_want: BTreeMap<(String, String), u64> = ledger
        .nonpatient
        .iter()
        .map(|((office, kind), n)| ((office.clone(), kind.to_string()), *n))
        .collect();
    checks.push(Check {
        name: "非正常咨询按办事处和类别等于生成的 non-patient calls by office and kind equal the generated ones".into(),
        ok: nonpatient_got == nonpatient_want,
        detail: format!(
            "{} generated, {} reported",
            nonpatient_want.values().sum::<u64>(),
            nonpatient_got.values().sum::<u64>()
        ),
    });
    let breakdown_total = |list: &[keqing_shared::report::Breakdown]| {
        list.iter()
            .find(|b| b.office == "total")
            .map(counts_of)
            .unwrap_or_default()
    };
    let reasons_got = breakdown_total(&report.not_bought_reasons);
    let reasons_want: BTreeMap<String, u64> = ledger
        .reasons
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    checks.push(Check {
        name: "未购原因等于生成的 not-bought reasons equal the generated ones".into(),
        ok: reasons_got == reasons_want,
        detail: format!("generated {reasons_want:?}, reported {reasons_got:?}"),
    });
    // Participants are patients: a duplicate merged into a dossier that
    // took part too is one of them.
    let mut joined_live = BTreeSet::new();
    for id in &ledger.joined {
        joined_live.insert(live_dossier(&hq, id)?.0);
    }
    let joined_want = joined_live.len() as u64;
    let clinic = report.activities.iter().find(|a| a.id == DEMO_ACTIVITY);
    checks.push(Check {
        name: "活动参与患者等于登记的 the activity's participants equal those recorded, its cost per buyer its spend / buyers".into(),
        ok: clinic.is_some_and(|a| {
            a.participants == joined_want
                && a.cost_per_buyer_fen
                    == (a.buyers > 0 && a.spend_fen > 0)
                        .then(|| (a.spend_fen as f64 / a.buyers as f64).round() as i64)
        }),
        detail: clinic.map_or_else(
            || "not in the report".to_string(),
            |a| {
                format!(
                    "{} participations recorded, {joined_want} patients; reported {} participants, {} buyers",
                    ledger.joined.len(),
                    a.participants,
                    a.buyers
                )
            },
        ),
    });
    let mut stopped_want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in &ledger.stopped {
        let (live, office) = live_dossier(&hq, id)?;
        stopped_want.entry(office).or_default().insert(live);
    }
    let stopped_of = |b: &keqing_shared::report::Breakdown| {
        b.counts
            .iter()
            .find(|c| c.label == keqing_shared::lists::Category::Stopped.chinese())
            .map_or(0, |c| c.count)
    };
    let stopped_differ: Vec<String> = report
        .categories
        .iter()
        .filter(|b| b.office != "total")
        .filter(|b| stopped_of(b) != stopped_want.get(&b.office).map_or(0, |s| s.len() as u64))
        .map(|b| b.office.clone())
        .collect();
    checks.push(Check {
        name: "停访患者按办事处等于生成的 stopped follow-ups by office equal the generated ones"
            .into(),
        ok: stopped_differ.is_empty(),
        detail: format!(
            "{} stopped{}",
            ledger.stopped.len(),
            if stopped_differ.is_empty() {
                String::new()
            } else {
                format!("; differ: {}", stopped_differ.join(", "))
            }
        ),
    });
    let mut open_got: Vec<String> = hq.open_deliveries()?.into_iter().map(|d| d.id).collect();
    open_got.sort();
    let open_want: Vec<String> = ledger
        .deliveries
        .iter()
        .filter(|(_, s)| **s == DeliveryStatus::Pending)
        .map(|(id, _)| id.clone())
        .collect();
    checks.push(Check {
        name: "外送状态与待送清单等于生成的 deliveries' status and the list still to deliver equal the generated ones".into(),
        ok: found.deliveries == ledger.deliveries && open_got == open_want,
        detail: format!(
            "{} deliveries, {} still to deliver ({} listed)",
            ledger.deliveries.len(),
            open_want.len(),
            open_got.len()
        ),
    });

    let _ = stop.send(());
    drop(rt);
    let seconds = started.elapsed().as_secs_f64();
    Ok(DemoSummary {
        offices: offices.len(),
        devices: offices.len() * 2 + 1,
        dossiers,
        records: ledger.records.len(),
        edits: ledger.edits,
        merged_duplicates: merged,
        syncs: stats.ok,
        syncs_offline: stats.refused,
        changes_pushed: stats.pushed,
        converged: all_passed(&checks),
        checks,
        from: report.from.clone(),
        to: report.to.clone(),
        national: report.total.clone(),
        national_report_ms,
        edits_per_second: ledger.edits as f64 / seconds,
        seconds,
        kept_in: opts.keep.as_ref().map(|p| p.display().to_string()),
        report: Some(report),
    })
}

#[derive(Default)]
struct SyncStats {
    ok: u64,
    refused: u64,
    pushed: u64,
}

impl SyncStats {
    /// One sync attempt; a refused one (line down) is counted, not fatal.
    fn sync(&mut self, rt: &tokio::runtime::Runtime, desk: &mut Desk, gate: &AtomicBool) {
        match rt.block_on(sync_once(desk.replica_mut(), &mut Quiet)) {
            Ok(SyncSummary { pushed, .. }) => {
                self.ok += 1;
                self.pushed += pushed;
            }
            Err(_) if !gate.load(Ordering::SeqCst) => self.refused += 1,
            Err(e) => {
                // Not expected with the line up; the next round retries.
                eprintln!("sync failed with the line up: {e}");
                self.refused += 1;
            }
        }
    }
}

/// Syncs every device (twice round, so each pulls what the others pushed).
fn settle(
    rt: &tokio::runtime::Runtime,
    offices: &mut [OfficeSim],
    hq: &mut Desk,
    stats: &mut SyncStats,
) -> Result<()> {
    let up = AtomicBool::new(true);
    for _ in 0..2 {
        for o in offices.iter_mut() {
            for d in o.devices.iter_mut() {
                stats.sync(rt, &mut d.desk, &up);
            }
        }
        stats.sync(rt, hq, &up);
    }
    Ok(())
}

/// Every document on the server: its office and heads (hex, sorted).
fn server_heads(
    store: &dyn keqing_server::store::Store,
) -> Result<BTreeMap<String, (String, Vec<String>)>> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let reader = store.reader()?;
        let page = reader.snapshots_after(None, &after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.0.doc_id.clone();
        for (snap, complete) in page {
            let unreadable = |e: String| {
                DemoError::Domain(keqing_shared::DomainError::Malformed(format!(
                    "server document {}: {e}",
                    snap.doc_id
                )))
            };
            let mut doc = automerge::Automerge::load(&snap.document)
                .map_err(|e| unreadable(e.to_string()))?;
            if !complete {
                // Not built yet (a new dossier logged as it came) or waiting
                // for a dependency: its logged changes complete it.
                let logged = reader.changes_of(&snap.doc_id, u64::MAX)?;
                doc.apply_changes(
                    logged
                        .into_iter()
                        .map(|c| automerge::Change::from_bytes(c.bytes))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| unreadable(e.to_string()))?,
                )
                .map_err(|e| unreadable(e.to_string()))?;
            }
            let snap = keqing_shared::sync::Snapshot {
                document: doc.save_nocompress(),
                ..snap
            };
            let mut heads: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
            heads.sort();
            // An office's shared documents (roster, non-patient logs, its
            // copy of the catalogue) say their office in their id; a
            // dossier in its document.
            let office = match keqing_shared::nonpatient::non_dossier_office(&snap.doc_id) {
                Some(office) => office.to_string(),
                None => Dossier::load(&snap.document, automerge::ActorId::random())
                    .and_then(|d| d.office())?,
            };
            out.insert(snap.doc_id, (office, heads));
        }
    }
    Ok(out)
}

/// A replica's documents and their heads (hex, sorted).
fn replica_heads(desk: &Desk) -> Result<BTreeMap<String, Vec<String>>> {
    Ok(desk
        .replica()
        .document_heads()?
        .into_iter()
        .map(|(id, heads)| {
            let mut h: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
            h.sort();
            (id, h)
        })
        .collect())
}

/// What headquarters' replica holds, read back dossier by dossier.
struct Found {
    /// How many times each record id appears among the dossiers that are
    /// not merged away.
    records: BTreeMap<String, u32>,
    /// Dossiers (merged ones included).
    dossiers: usize,
    /// Each delivery's status in the live dossiers.
    deliveries: BTreeMap<String, DeliveryStatus>,
}

fn records_in(desk: &Desk) -> Result<Found> {
    let mut found = Found {
        records: BTreeMap::new(),
        dossiers: 0,
        deliveries: BTreeMap::new(),
    };
    for (id, _) in desk.replica().document_heads()? {
        if keqing_shared::nonpatient::non_dossier_office(&id).is_some() {
            continue;
        }
        found.dossiers += 1;
        let (v, _) = desk.dossier(&id)?;
        if v.merged_into.is_some() {
            continue;
        }
        let ids = v
            .calls
            .iter()
            .map(|r| &r.id)
            .chain(v.visits.iter().map(|r| &r.id))
            .chain(v.purchases.iter().map(|r| &r.id))
            .chain(v.followups.iter().map(|r| &r.id))
            .chain(v.hospital_stays.iter().map(|r| &r.id))
            .chain(v.greetings.iter().map(|r| &r.0.id))
            .chain(v.home_visits.iter().map(|r| &r.0.id))
            .chain(v.deliveries.iter().map(|r| &r.id))
            .chain(v.problems.iter().map(|r| &r.id));
        for rid in ids {
            *found.records.entry(rid.clone()).or_default() += 1;
        }
        for d in &v.deliveries {
            found.deliveries.insert(d.id.clone(), d.state());
        }
    }
    Ok(found)
}

/// The dossier a dossier's records live in now: itself, or the one it was
/// merged into (followed to the end), with that one's office.
fn live_dossier(desk: &Desk, id: &str) -> Result<(String, String)> {
    let mut id = id.to_string();
    for _ in 0..16 {
        let (v, _) = desk.dossier(&id)?;
        match v.merged_into {
            Some(into) => id = into,
            None => return Ok((id, v.office)),
        }
    }
    Err(DemoError::Options(format!(
        "{id}: a chain of merges too long"
    )))
}

/// The non-zero counts of one breakdown by label.
fn counts_of(b: &keqing_shared::report::Breakdown) -> BTreeMap<String, u64> {
    b.counts
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (c.label.clone(), c.count))
        .collect()
}

/// Runs `f` on the patient's own device, or the other one if that one does
/// not have the dossier yet (it was created offline on the other device).
fn on_some_device<T>(
    o: &mut OfficeSim,
    p: usize,
    prefer: usize,
    mut f: impl FnMut(&mut Desk, &str) -> std::result::Result<T, keqing_office::ClientError>,
) -> Option<T> {
    let dossier = o.patients[p].dossier.clone();
    for d in [prefer, 1 - prefer] {
        match f(&mut o.devices[d].desk, &dossier) {
            Ok(v) => return Some(v),
            Err(keqing_office::ClientError::UnknownPatient(_)) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// One office's day: new callers, the workflow of earlier ones, the
/// follow-up list, the occasional hospital stay, typical case, problem.
#[allow(clippy::too_many_arguments)]
fn office_day(
    o: &mut OfficeSim,
    date: NaiveDate,
    new_callers: usize,
    rng: &mut Rng,
    ledger: &mut Ledger,
    phone_counter: &mut u64,
    travellers: &mut Vec<(String, String, i64)>,
) -> Result<()> {
    let office_num: u64 = o.code.parse().unwrap_or(0);
    // Calls that are not about a patient: a wrong number, a sales call...
    for _ in 0..rng.below(3) {
        let kind = *rng.pick(&NonPatientKind::ALL);
        let device = rng.below(2) as usize;
        let input = NonPatientInput {
            phone: Some(format!("0{office_num:02}{:08}", rng.below(100_000_000))),
            kind: kind.chinese().to_string(),
            staff: rng.pick(&o.consultants).clone(),
            notes: None,
            at: at(date, 9 + rng.below(8) as u32, rng),
        };
        o.devices[device].desk.record_nonpatient(&input)?;
        ledger.edits += 1;
        *ledger
            .nonpatient
            .entry((o.code.clone(), kind.chinese()))
            .or_default() += 1;
    }
    // Deliveries registered before today are made (or fail) today.
    settle_deliveries(o, date, rng, ledger);
    // New callers.
    for _ in 0..new_callers {
        let device = rng.below(2) as usize;
        let (phone, name, age) = if !travellers.is_empty() && rng.chance(0.05) {
            // Someone who already called another office calls this one.
            travellers.swap_remove(rng.below(travellers.len() as u64) as usize)
        } else {
            *phone_counter += 1;
            let phone = format!(
                "1{}{:02}{:07}",
                rng.pick(&[3, 5, 8, 9]),
                office_num,
                *phone_counter
            );
            (phone, person_name(rng), 45 + rng.below(40) as i64)
        };
        let input = CallInput {
            phone: phone.clone(),
            name: name.clone(),
            age: Some(age),
            sex: Some(if rng.chance(0.5) {
                Sex::Male
            } else {
                Sex::Female
            }),
            disease: Some(rng.pick(&DISEASES).to_string()),
            source: rng.pick(&SOURCES).to_string(),
            staff: rng.pick(&o.consultants).clone(),
            relation: Some(rng.pick(&RELATIONS).to_string()),
            knows: Some(rng.chance(0.7)),
            condition: Some("胸闷气短".into()),
            at: at(date, 9 + rng.below(8) as u32, rng),
            force_new: true,
            ..Default::default()
        };
        let out = o.devices[device].desk.register_call(&input)?;
        ledger.add(out.call_id, "call");
        // On the activity's days, some new callers came through it (a
        // generator of its own: the week's other events stay the seed's).
        // A device that has not yet pulled the catalogue does not know the
        // activity: that participation is not made.
        let mut joins = Rng(*phone_counter ^ 0x0ac7_1717);
        if joins.chance(0.3) {
            let staff = o.consultants[0].clone();
            if o.devices[device]
                .desk
                .join_activity(&out.dossier_id, &staff, DEMO_ACTIVITY, input.at, &None)
                .is_ok()
            {
                ledger.edits += 1;
                ledger.joined.push(out.dossier_id.clone());
            }
        }
        if rng.chance(0.08) {
            travellers.push((phone.clone(), name.clone(), age));
        }
        o.patients.push(Patient {
            dossier: out.dossier_id,
            phone,
            name,
            age,
            stage: Stage::Called,
            device,
            problem: None,
            stopped: false,
        });
    }
    // Earlier callers move on.
    let earlier = o.patients.len().saturating_sub(new_callers);
    for p in 0..earlier {
        let prefer = o.patients[p].device;
        let stage = o.patients[p].stage;
        let r = rng.below(100);
        match stage {
            Stage::Called if r < 22 => {
                let bought = rng.chance(0.6);
                let t = at(date, 10 + rng.below(5) as u32, rng);
                let reason = (!bought).then(|| *rng.pick(&NotBoughtReason::ALL));
                let input = VisitInput {
                    staff: o.expert.clone(),
                    at: t,
                    purchased: bought,
                    reason_not_bought: reason.map(|r| r.chinese().to_string()),
                    reason_text: (reason == Some(NotBoughtReason::Other))
                        .then(|| "想先问问子女".to_string()),
                    notes: None,
                };
                if let Some((_, visit)) =
                    on_some_device(o, p, prefer, |d, id| d.record_visit(id, &input))
                {
                    ledger.add(visit.id.clone(), "visit");
                    if let Some(r) = reason {
                        *ledger.reasons.entry(r.chinese()).or_default() += 1;
                    }
                    o.patients[p].stage = Stage::VisitedNotBought;
                    if bought {
                        purchase(o, p, prefer, t, date, rng, ledger);
                    }
                }
            }
            Stage::Called if r < 30 => {
                // A second call about the same patient.
                let input = CallInput {
                    phone: o.patients[p].phone.clone(),
                    name: o.patients[p].name.clone(),
                    age: Some(o.patients[p].age),
                    source: rng.pick(&SOURCES).to_string(),
                    staff: rng.pick(&o.consultants).clone(),
                    at: at(date, 9 + rng.below(8) as u32, rng),
                    ..Default::default()
                };
                let d = prefer;
                if let Ok(out) = o.devices[d].desk.register_call(&input) {
                    ledger.add(out.call_id, "call");
                }
            }
            Stage::VisitedNotBought if r < 15 => {
                let t = at(date, 11, rng);
                purchase(o, p, prefer, t, date, rng, ledger);
            }
            // Follow-ups stop for a few: moved away, refuse calls, ...
            _ if r >= 99 && !o.patients[p].stopped => {
                let reason = *rng.pick(&StopReason::ALL);
                let step = PlanStep::Stop {
                    reason: reason.chinese().to_string(),
                };
                let staff = o.followup[0].clone();
                let t = at(date, 12, rng);
                if on_some_device(o, p, prefer, |d, id| {
                    d.change_plan(id, &staff, t, &step, &None)
                })
                .is_some()
                {
                    ledger.edits += 1;
                    ledger.stopped.push(o.patients[p].dossier.clone());
                    o.patients[p].stopped = true;
                }
            }
            Stage::Bought if r < 2 => {
                let admitted = date - Duration::days(rng.below(3) as i64);
                let h = HospitalStay {
                    id: new_id(),
                    at: at(date, 9, rng),
                    staff: o.followup[0].clone(),
                    admitted,
                    discharged: None,
                    hospital: Some("市人民医院".into()),
                    reason: Some("心绞痛发作".into()),
                };
                if on_some_device(o, p, prefer, |d, id| d.edit_patient(id, |tx| tx.add(&h)))
                    .is_some()
                {
                    ledger.add(h.id.clone(), "hospital");
                }
            }
            Stage::Bought if r < 4 => {
                let c = Contact {
                    id: new_id(),
                    at: at(date, 15, rng),
                    staff: o.field.clone(),
                    notes: Some("家访, 血压平稳".into()),
                };
                if on_some_device(o, p, prefer, |d, id| {
                    d.edit_patient(id, |tx| tx.add(&HomeVisit(c.clone())))
                })
                .is_some()
                {
                    ledger.add(c.id.clone(), "homevisit");
                }
            }
            Stage::Bought if r < 5 => {
                let t = TypicalCase {
                    flagged: true,
                    at: at(date, 16, rng),
                    staff: o.supervisor.clone(),
                    notes: Some("服药三周胸闷明显减轻".into()),
                };
                if on_some_device(o, p, prefer, |d, id| {
                    d.edit_patient(id, |tx| tx.set_typical(&t))
                })
                .is_some()
                {
                    ledger.edits += 1;
                }
            }
            Stage::Bought if r < 6 && o.patients[p].problem.is_none() => {
                let pr = Problem {
                    id: new_id(),
                    at: at(date, 10, rng),
                    staff: o.supervisor.clone(),
                    description: "投诉送药晚了".into(),
                    state: ProblemState::Open,
                    handling_at: None,
                    resolved_at: None,
                    resolution: None,
                    resolved_by: None,
                };
                if on_some_device(o, p, prefer, |d, id| d.edit_patient(id, |tx| tx.add(&pr)))
                    .is_some()
                {
                    ledger.add(pr.id.clone(), "problem");
                    o.patients[p].problem = Some(pr.id.clone());
                }
            }
            Stage::Bought if r < 12 => {
                // Two devices edit one dossier the same day: both changes
                // survive the merge.
                let address = format!("{}号", 1 + rng.below(200));
                on_some_device(o, p, 1 - prefer, |d, id| {
                    d.edit_patient(id, |tx| {
                        tx.update_patient(&PatientUpdate {
                            address: Some(address.clone()),
                            ..Default::default()
                        })
                    })
                });
                ledger.edits += 1;
            }
            _ => {}
        }
        // Problems are settled a few days later.
        if let Some(problem) = o.patients[p].problem.clone()
            && rng.chance(0.3)
        {
            let resolved_at = at(date, 17, rng);
            let done = on_some_device(o, p, prefer, |d, id| {
                d.edit_patient(id, |tx| {
                    let mut pr: Problem = tx.get(&problem)?;
                    if pr.state == ProblemState::Resolved || pr.at >= resolved_at {
                        return Ok(false);
                    }
                    pr.state = ProblemState::Resolved;
                    pr.resolved_at = Some(resolved_at);
                    pr.resolution = Some("道歉并补送".into());
                    tx.update(&pr)?;
                    Ok(true)
                })
            });
            if let Some((_, true)) = done {
                ledger.edits += 1;
                o.patients[p].problem = None;
            }
        }
    }
    // The follow-up list of the day, worked by each device on what it has.
    for d in 0..o.devices.len() {
        let due = o.devices[d].desk.due(date, None)?;
        for entry in due {
            if !rng.chance(0.45) {
                continue;
            }
            let f = FollowUp {
                id: new_id(),
                at: at(date, 14 + rng.below(4) as u32, rng),
                staff: o.followup[d % o.followup.len()].clone(),
                kind: "回访".into(),
                outcome: "服药正常, 血压平稳".into(),
                next_entry: Some("问饮食".into()),
            };
            match o.devices[d]
                .desk
                .edit_patient(&entry.dossier_id, |tx| tx.add(&f))
            {
                Ok(_) => ledger.add(f.id.clone(), "followup"),
                Err(keqing_office::ClientError::Merged { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A purchase at a visit; a third of them are delivered to the patient's
/// home (registered now, made on a later day).
fn purchase(
    o: &mut OfficeSim,
    p: usize,
    prefer: usize,
    t: NaiveDateTime,
    date: NaiveDate,
    rng: &mut Rng,
    ledger: &mut Ledger,
) {
    let boxes = 1 + rng.below(3) as i64;
    let b = Purchase {
        id: new_id(),
        at: t + Duration::minutes(10),
        staff: o.expert.clone(),
        product: PRODUCT.into(),
        quantity: boxes,
        amount_fen: boxes * 42_800,
        invoice: Some(format!("FP{}", rng.below(1_000_000))),
        runout: Some(t.date() + Duration::days(10 * boxes)),
        gifts: rng.chance(0.3).then(|| "血压计".to_string()),
        gift_receipt: None,
    };
    if on_some_device(o, p, prefer, |d, id| d.edit_patient(id, |tx| tx.add(&b))).is_none() {
        return;
    }
    ledger.add(b.id.clone(), "purchase");
    ledger.amount_fen += b.amount_fen;
    o.patients[p].stage = Stage::Bought;
    if !rng.chance(0.3) {
        return;
    }
    let input = DeliveryInput {
        staff: o.field.clone(),
        at: t + Duration::minutes(30),
        purchase: Some(b.id.clone()),
        address: Some(format!("{}路{}号", rng.pick(&STREETS), 1 + rng.below(300))),
        due: Some(date + Duration::days(1 + rng.below(2) as i64)),
        notes: Some("送药上门".into()),
        ..Default::default()
    };
    if let Some((_, d)) = on_some_device(o, p, prefer, |desk, id| desk.record_delivery(id, &input))
    {
        ledger.add(d.id.clone(), "delivery");
        ledger
            .deliveries
            .insert(d.id.clone(), DeliveryStatus::Pending);
        o.pending.push((p, d.id, date));
    }
}

/// The deliveries registered on an earlier day: most are made on the day,
/// a few do not reach the patient; some wait another day.
fn settle_deliveries(o: &mut OfficeSim, date: NaiveDate, rng: &mut Rng, ledger: &mut Ledger) {
    let pending = std::mem::take(&mut o.pending);
    for (p, delivery, registered) in pending {
        if registered >= date || !rng.chance(0.8) {
            o.pending.push((p, delivery, registered));
            continue;
        }
        let failed = rng.chance(0.1).then_some("家中无人，改日再送");
        let staff = o.field.clone();
        let t = at(date, 15, rng);
        let prefer = o.patients[p].device;
        let settled = on_some_device(o, p, prefer, |d, id| {
            d.settle_delivery(id, Some(&delivery), &staff, t, failed)
        });
        match settled {
            Some((_, d)) => {
                ledger.edits += 1;
                ledger.deliveries.insert(delivery, d.state());
            }
            // Not on this office's devices yet (made offline on the other).
            None => o.pending.push((p, delivery, registered)),
        }
    }
}

/// Progress on stderr while the week plays (hidden with `--json` or when
/// stderr is not a terminal).
struct Bars(Option<indicatif::ProgressBar>);

impl Bars {
    fn new(quiet: bool, total: u64) -> Bars {
        if quiet {
            return Bars(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:16} {bar:40} {pos}/{len} 办事处·天 {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bars(Some(bar))
    }
    fn tick(&self, msg: &str) {
        if let Some(b) = &self.0 {
            b.set_message(msg.to_string());
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Whether the demo's checks passed: every one, and at least one ran (a
/// run that checked nothing proves nothing).
fn all_passed(checks: &[Check]) -> bool {
    !checks.is_empty() && checks.iter().all(|c| c.ok)
}

#[cfg(test)]
mod check_tests {
    use super::{Check, all_passed};

    fn check(ok: bool) -> Check {
        Check {
            name: "c".into(),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn the_demo_passes_only_when_it_checked_something_and_all_of_it_held() {
        assert!(!all_passed(&[]), "no check ran");
        assert!(all_passed(&[check(true), check(true)]));
        assert!(!all_passed(&[check(true), check(false)]));
    }
}
