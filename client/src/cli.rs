//! The `keqing` command line: parses arguments, calls the [`Desk`], prints
//! Chinese tables by default and JSON with `--json`.

use anyhow::{Context, Result, bail};
use chrono::{NaiveDate, NaiveDateTime};
use clap::{Args, Parser, Subcommand};
use keqing_host::now_cst;
use keqing_office::desk::{
    CallInput, ContactInput, ContactKind, DeliveryInput, Desk, DueEntry, FollowUpInput,
    HospitalInput, MatchedBy, NonPatientInput, PatientChanges, PlanStep, ProblemStep,
    PurchaseInput, VisitInput,
};
use keqing_office::store;
use keqing_shared::DomainError;
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::{Slot, SlotStatus};
use keqing_shared::records::*;
use keqing_shared::report::{Report, Scope};
use keqing_shared::sheets;
use keqing_shared::staff::Role;
use keqing_shared::when::{fmt_date, parse_date, parse_datetime};
use keqing_shared::{office, phone};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use keqing_shared::table::Table;

#[derive(Parser, Debug)]
#[command(
    name = "keqing",
    version,
    about = "客情 Keqing — 咨询处客情部离线工作台 (office client: local replica, works offline)",
    long_about = "客情 Keqing — 咨询处客情部离线工作台.\n\nThe office client of Keqing. Every command works on the local replica in --data DIR, with no network: register consultation calls, visits, purchases and follow-ups, see today's follow-up list and the daily summary."
)]
pub struct Cli {
    /// Data directory of the office replica (数据目录)
    #[arg(
        long,
        global = true,
        env = "KEQING_DATA",
        default_value = "keqing-data"
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// 初始化 Set up an office replica offline
    Init {
        /// Office code, GB/T 2260 (e.g. 44 = 广东) or its name
        #[arg(long)]
        office: String,
        /// Name of this device (e.g. 前台1)
        #[arg(long)]
        device: String,
        /// Encrypt the replica file (SQLCipher); the passphrase comes from
        /// KEQING_DB_KEY or is asked for twice. A replica is also encrypted
        /// whenever KEQING_DB_KEY is set at init.
        #[arg(long)]
        encrypt: bool,
    },
    /// 员工 Staff of the office
    #[command(subcommand)]
    Staff(StaffCommand),
    /// 电话咨询 Register a consultation call (finds or creates the dossier)
    Call(CallArgs),
    /// 到堂 Register a visit to the office
    Visit(VisitArgs),
    /// 购药 Register a purchase
    Purchase(PurchaseArgs),
    /// 回访 Register a follow-up call
    Followup(FollowupArgs),
    /// 住院 Register a hospital stay
    Hospital(HospitalArgs),
    /// 出院 Write the discharge date of a stay registered before
    Discharge(DischargeArgs),
    /// 逢年过节问候 Register a holiday greeting
    Greeting(ContactArgs),
    /// 家访 Register a home visit
    Homevisit(ContactArgs),
    /// 外送 Register a delivery to make (待送; --delivered: already made)
    Delivery(DeliveryArgs),
    /// 送达 Mark a pending delivery delivered (--failed REASON: 未送达)
    Deliver(DeliverArgs),
    /// 待送清单 Deliveries still to make, overdue first
    Deliveries {
        #[arg(long)]
        json: bool,
    },
    /// 非正常咨询 Register a call that was not about a patient (wrong
    /// number, competitor, press, prank, sales call): no dossier, not a
    /// consultation call
    Nonpatient(NonPatientArgs),
    /// 回访计划 Change a patient's follow-up plan
    #[command(subcommand)]
    Plan(PlanCommand),
    /// 客户分类 Patients by category (未到堂 到堂未购 已购 复购 流失 停访) and
    /// flag (典型 问题): the counts, or one list
    List(ListArgs),
    /// 典型病例 Mark (or unmark) a typical case
    Typical(TypicalArgs),
    /// 保留期限 Keep only dossiers active in the last N years on this device
    /// (off by default): older ones are dropped here, the server keeps them,
    /// and a call from the patient fetches the dossier back
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// 变更包 When the line is down for weeks: write the outbox to a file
    /// for headquarters (`export`), apply headquarters' answer (`import`)
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// 查找 Where a phone number's dossier is: here, or at the server only
    /// (moved off this device by retention: fetched back when online)
    Lookup {
        #[arg(long)]
        phone: String,
        #[arg(long)]
        json: bool,
    },
    /// 活动 Activities and promotions (义诊 讲座 促销 节日活动): list
    /// headquarters' and the office's own, define the office's own (客情主管),
    /// record who took part
    #[command(subcommand)]
    Activity(ActivityCommand),
    /// 问题患者 Open, handle or resolve a problem
    #[command(subcommand)]
    Problem(ProblemCommand),
    /// 修改资料 Update the patient's details
    Update(UpdateArgs),
    /// 今日回访 The follow-up list of a day, overdue first
    Due {
        /// Day (YYYY-MM-DD); today by default
        #[arg(long)]
        date: Option<String>,
        /// Only the patients assigned to this staff member (plan assign)
        #[arg(long)]
        staff: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// 病历档案 Show one dossier with its whole history
    Patient {
        /// Dossier id, id prefix or phone number
        query: String,
        #[arg(long)]
        json: bool,
    },
    /// 查询 Find patients by name, phone fragment or disease
    Search {
        text: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// 报表 Reports
    #[command(subcommand)]
    Report(ReportCommand),
    /// 演示 The whole system on this machine: a real keqing-server on
    /// loopback, 27 offices × 2 devices working a week offline and syncing,
    /// headquarters' national report and an independent convergence check
    /// (exit status 1 if a check fails). Ignores --data.
    Demo {
        /// Offices (provinces), 1..=27
        #[arg(long, default_value_t = 27)]
        offices: usize,
        /// Days to play
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// First day played (YYYY-MM-DD); by default the days end yesterday.
        /// No day after today.
        #[arg(long)]
        start: Option<String>,
        /// New callers per office over the run
        #[arg(long, default_value_t = 30)]
        patients: usize,
        /// Seed of the generator: the same seed plays the same week
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Keep the server and office data in this (new) directory
        #[arg(long)]
        keep: Option<PathBuf>,
        /// The summary as one JSON object on the last line of stdout
        #[arg(long)]
        json: bool,
    },
    /// 重复档案 Pairs of dossiers that may be one patient (same phone; or
    /// same name, same province, age within a year)
    Duplicates {
        #[arg(long)]
        json: bool,
    },
    /// 合并档案 Fold DUPLICATE into KEEP: every record moves to KEEP, nothing
    /// is lost, and DUPLICATE points to KEEP (headquarters: across offices)
    Merge {
        /// The dossier to keep (id, prefix or phone)
        keep: String,
        /// The duplicate dossier (id or prefix)
        duplicate: String,
        #[arg(long)]
        json: bool,
    },
    /// 冲突 Patient fields that two devices set differently while offline
    Conflicts {
        #[arg(long)]
        json: bool,
    },
    /// 解决冲突 Set a patient field to one value (name, sex, age, birth_year,
    /// address, knows, notes)
    Resolve {
        /// Dossier id, prefix or phone
        dossier: String,
        field: String,
        value: String,
    },
    /// 注册 Enrol this replica with a keqing-server (a fresh directory is set up for the token's office)
    Enroll {
        /// Server address, e.g. http://127.0.0.1:7600; several processes of
        /// one store separated by commas (tried in order, failing over)
        #[arg(long)]
        server: String,
        /// The one-time token from `keqing-server device add`
        #[arg(long)]
        token: String,
        /// Device name for a fresh replica (default: the name given on the server)
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        tls: TlsFiles,
        /// Encrypt a fresh replica (as `init --encrypt`)
        #[arg(long)]
        encrypt: bool,
    },
    /// 同步 Push local changes and pull the office's new changes
    Sync {
        /// Keep syncing, with backoff while the server is unreachable (Ctrl-C stops)
        #[arg(long)]
        watch: bool,
        /// Seconds between rounds with --watch
        #[arg(long, default_value_t = 10)]
        interval: u64,
        #[arg(long)]
        json: bool,
    },
    /// 修复 Compare every dossier with the server and fetch what this replica lacks
    Repair,
    /// 版本 Every document's automerge heads (to compare replicas)
    Heads {
        #[arg(long)]
        json: bool,
    },
    /// 重建 Rebuild every projection table from the dossier documents
    Rebuild,
    /// 工作台 The office workstation in a browser: consultation register,
    /// dossiers, today's follow-ups, daily summary, sync (works offline)
    Ui {
        /// Address to serve on (loopback by default: only this PC can open it)
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seconds between background syncs when enrolled (0: only the button)
        #[arg(long, default_value_t = 60)]
        sync_every: u64,
        /// Minutes without a request after which a signed-in person is
        /// signed out (when the office's staff have passwords)
        #[arg(long, default_value = "15", value_parser = keqing_host::sign_in::parse_idle_minutes)]
        idle_minutes: Duration,
    },
    /// 加密 Encrypt this replica in place (SQLCipher, AES-256)
    ///
    /// The passphrase comes from KEQING_DB_KEY or is asked for twice; afterwards
    /// every command needs it (KEQING_DB_KEY, or asked at a terminal).
    /// Close `keqing ui` first.
    Encrypt,
    /// 更换密钥 Change the passphrase of this encrypted replica
    ///
    /// The current passphrase comes from KEQING_DB_KEY or is asked for; the
    /// new one from KEQING_NEW_DB_KEY or is asked for twice. The file is
    /// rewritten under the new passphrase and the old file overwritten, so
    /// the old passphrase opens nothing afterwards. Close `keqing ui` first.
    Rekey,
    /// 状态 What this replica is and holds
    Status {
        #[arg(long)]
        json: bool,
    },
    /// 隔离数据 Pulled data that could not be merged (kept aside so sync goes on)
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// 服务器 The server addresses this replica syncs with (processes of one
    /// store, tried in order; the one that answered last first)
    #[command(subcommand)]
    Servers(ServersCommand),
    /// 查阅记录 Who read which dossier, list or report at this office, when
    /// (the signed-in person at the workstation, the OS account here): this
    /// device's, and the office's other devices' as far as the last sync;
    /// newest first
    Reads {
        /// How many (the latest)
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// 目录 Headquarters' catalogue as this device last pulled it (sources,
    /// products, diseases: the pick lists)
    Catalog {
        #[arg(long)]
        json: bool,
    },
    /// 证书 Replace the TLS files kept in the replica: this device's new
    /// certificate and key for mutual TLS (after `keqing-server device cert`
    /// issued new ones, e.g. when the old ones leaked) and/or a new CA
    /// certificate; the cursor and the outbox stay
    #[command(group(clap::ArgGroup::new("replace").required(true).multiple(true).args(["ca", "cert"])))]
    Certificate {
        #[command(flatten)]
        tls: TlsFiles,
    },
}

/// The TLS files `enroll` keeps in the replica and `certificate` replaces.
#[derive(clap::Args, Debug)]
struct TlsFiles {
    /// The CA certificate (PEM) an https:// server must be signed by, e.g.
    /// the server's DIR/tls/ca.pem (default: the system's trusted roots)
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This device's certificate (PEM) for a server with mutual TLS (from
    /// `keqing-server device cert`); kept in the replica
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ServersCommand {
    /// 列出 The addresses, in the order they are tried
    List {
        #[arg(long)]
        json: bool,
    },
    /// 添加 Add the address of another process of the same store
    Add {
        /// e.g. http://hq2.example:7600 (several separated by commas)
        url: String,
    },
    /// 删除 Remove an address (never the last)
    Remove { url: String },
}

#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// 列出 Every quarantined piece: dossier, kind, reason, when (newest first)
    List {
        #[arg(long)]
        json: bool,
    },
    /// 重试 Merge the quarantined data again (e.g. after an upgrade); what
    /// merges leaves the quarantine, the rest stays as it is
    Retry {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum StaffCommand {
    /// Add a staff member
    Add {
        #[arg(long)]
        name: String,
        /// supervisor, consultant, followup, expert, guide, field (or 客情主管, 咨询人员, 回访人员, 坐诊专家, 导购员, 家访外送)
        #[arg(long)]
        role: String,
        /// Read the member's password (8 to 128 characters) from the first
        /// line of standard input; only its Argon2id hash is kept
        #[arg(long)]
        password_stdin: bool,
    },
    /// 设置密码 Set or change a staff member's password (read from the first
    /// line of standard input; only its Argon2id hash is kept, in the
    /// office roster, and syncs to the office's devices)
    Password {
        #[arg(long)]
        name: String,
        /// Read the password from standard input (the only way: never on
        /// the command line, where other users of the PC could see it)
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// 离岗 Mark a staff member as gone: kept with their history, gone
    /// from pick lists
    Leave {
        #[arg(long)]
        name: String,
    },
    /// 在岗 Mark a staff member back at work
    Return {
        #[arg(long)]
        name: String,
    },
    /// List the staff
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// 电话咨询汇总表 This replica's summary (its office; every office at
    /// headquarters) from local data, offline
    Daily {
        /// Day (YYYY-MM-DD); today by default
        #[arg(long, conflicts_with = "from")]
        date: Option<String>,
        /// First day of a range (with --to)
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Last day of a range (with --from)
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[command(flatten)]
        output: ReportOutput,
    },
    /// 全国报表 National report from the server (a headquarters device; needs
    /// the network)
    National {
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        output: ReportOutput,
    },
    /// 省报表 One province's report from the server (headquarters: any
    /// province; an office device: its own)
    Province {
        /// Province / office code (e.g. 44)
        #[arg(long, alias = "office")]
        province: String,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        output: ReportOutput,
    },
}

/// The days of a server report.
#[derive(Args, Debug)]
pub struct RangeArgs {
    /// First day (YYYY-MM-DD)
    #[arg(long)]
    from: String,
    /// Last day (YYYY-MM-DD), inclusive
    #[arg(long)]
    to: String,
}

/// How a report is shown or exported.
#[derive(Args, Debug)]
pub struct ReportOutput {
    /// Print the report as JSON
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Write a file instead: csv (UTF-8 with BOM, opens in Excel), xlsx
    /// (one sheet per section) or json
    #[arg(long, requires = "out", value_parser = ["csv", "xlsx", "json"])]
    format: Option<String>,
    /// The file to write (with --format); an existing file is refused
    /// unless --force, a store always
    #[arg(long, requires = "format")]
    out: Option<PathBuf>,
    /// Replace --out if it exists (never a store)
    #[arg(long, requires = "out")]
    force: bool,
}

/// Shows or exports a report as `output` asks.
/// Prints a report, or writes it to a file: a file leaves the replica's
/// protection, so its writing is audited (`report.export`).
fn emit_report(desk: &Desk, r: &Report, output: &ReportOutput) -> Result<()> {
    if output.json {
        return print_json(r);
    }
    if let (Some(format), Some(out)) = (&output.format, &output.out) {
        let bytes = sheets::file(r, sheets::FileFormat::parse(format)?)?;
        keqing_host::files::write_output(out, &bytes, output.force, &[store::DB_FILE])?;
        let scope = match &r.scope {
            Scope::National => "national".to_string(),
            Scope::Office(o) => o.clone(),
        };
        desk.audit_read(
            &keqing_host::os_account(),
            "report.export",
            &format!("{scope} {}..{} → {}", r.from, r.to, out.display()),
        )?;
        println!("已导出 {} ({} 字节)", out.display(), bytes.len());
        return Ok(());
    }
    print!("{}", sheets::text(r));
    Ok(())
}

#[derive(Args, Debug)]
struct Who {
    /// Dossier id, id prefix (8+ characters) or phone number
    #[arg(long)]
    patient: String,
    /// Staff member who did it
    #[arg(long)]
    staff: String,
    /// When (YYYY-MM-DDTHH:MM); now by default
    #[arg(long)]
    at: Option<String>,
}

#[derive(Args, Debug)]
struct CallArgs {
    /// Caller's phone number (asked first)
    #[arg(long)]
    phone: String,
    /// Patient's name
    #[arg(long)]
    name: String,
    #[arg(long)]
    age: Option<i64>,
    /// 男 / 女
    #[arg(long)]
    sex: Option<String>,
    /// Disease type (疾病类型)
    #[arg(long)]
    disease: Option<String>,
    /// Information source (信息来源): the ad channel
    #[arg(long)]
    source: String,
    /// Consultant who took the call
    #[arg(long)]
    staff: String,
    /// Caller's relation to the patient (本人, 子女, 配偶 ...)
    #[arg(long)]
    relation: Option<String>,
    #[arg(long)]
    address: Option<String>,
    /// Whether the patient knows the diagnosis (是 / 否)
    #[arg(long)]
    knows: Option<String>,
    /// Condition (病情)
    #[arg(long)]
    condition: Option<String>,
    /// Treatment so far (治疗情况)
    #[arg(long)]
    treatment: Option<String>,
    /// Outcome / next step
    #[arg(long)]
    outcome: Option<String>,
    /// When (YYYY-MM-DDTHH:MM); now by default
    #[arg(long)]
    at: Option<String>,
    /// Add to this dossier instead of matching by phone / name
    #[arg(long, conflicts_with = "new")]
    patient: Option<String>,
    /// Always create a new dossier (another patient on a known number)
    #[arg(long)]
    new: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VisitArgs {
    #[command(flatten)]
    who: Who,
    /// The visitor bought (购药 is registered separately with `purchase`)
    #[arg(long)]
    bought: bool,
    /// Reason for not buying (未购原因), of the catalogue's list (`keqing
    /// catalog`; without one: 价格, 疗效疑虑, 家属意见, 在用其他药, 考虑中,
    /// 其他); another is kept as 其他 with the text
    #[arg(long, conflicts_with = "bought")]
    reason: Option<String>,
    /// The text of 其他
    #[arg(long, requires = "reason")]
    reason_text: Option<String>,
    #[arg(long)]
    notes: Option<String>,
}

#[derive(Args, Debug)]
struct DeliveryArgs {
    #[command(flatten)]
    who: Who,
    /// The purchase it delivers (a purchase's id; its product and quantity
    /// are the default)
    #[arg(long)]
    purchase: Option<String>,
    #[arg(long)]
    product: Option<String>,
    /// Boxes (盒)
    #[arg(long)]
    quantity: Option<i64>,
    /// Where to (default: the patient's address)
    #[arg(long)]
    address: Option<String>,
    /// The day it is to be delivered by (YYYY-MM-DD)
    #[arg(long)]
    due: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    /// It was delivered already (已送)
    #[arg(long)]
    delivered: bool,
}

#[derive(Args, Debug)]
struct DischargeArgs {
    #[command(flatten)]
    who: Who,
    /// The day of discharge (YYYY-MM-DD)
    #[arg(long)]
    date: String,
    /// The stay's id; the patient's only stay without a discharge date by default
    #[arg(long)]
    stay: Option<String>,
}

#[derive(Args, Debug)]
struct DeliverArgs {
    #[command(flatten)]
    who: Who,
    /// The delivery's id; the patient's only pending one by default
    #[arg(long)]
    delivery: Option<String>,
    /// It did not reach the patient: why (未送达)
    #[arg(long)]
    failed: Option<String>,
}

#[derive(Args, Debug)]
struct NonPatientArgs {
    /// The number it came from (if known)
    #[arg(long)]
    phone: Option<String>,
    /// A kind of the catalogue's list (`keqing catalog`; without one: 打错电话,
    /// 同行, 媒体, 骚扰, 推销, 其他); another is kept as 其他 with the text
    #[arg(long)]
    kind: String,
    /// Who took it
    #[arg(long)]
    staff: String,
    #[arg(long)]
    notes: Option<String>,
    /// When (YYYY-MM-DDTHH:MM); now by default
    #[arg(long)]
    at: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum PlanCommand {
    /// 加访 An extra follow-up call on a day
    Add {
        #[command(flatten)]
        who: Who,
        /// The day (YYYY-MM-DD)
        #[arg(long)]
        date: String,
        #[arg(long)]
        notes: Option<String>,
    },
    /// 改期 The next open follow-up moves to a day
    Postpone {
        #[command(flatten)]
        who: Who,
        /// The new day (YYYY-MM-DD)
        #[arg(long)]
        to: String,
        #[arg(long)]
        notes: Option<String>,
    },
    /// 停访 Follow-ups stop (the patient leaves every due list)
    Stop {
        #[command(flatten)]
        who: Who,
        /// 去世, 拒访, 迁出, 停药, 其他 (or died, refuses, moved_away,
        /// stopped_medicine, other)
        #[arg(long)]
        reason: String,
        #[arg(long)]
        notes: Option<String>,
    },
    /// 恢复回访 Follow-ups go on again
    Resume {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        notes: Option<String>,
    },
    /// 指定回访人 This staff member makes the patient's follow-up calls
    Assign {
        #[command(flatten)]
        who: Who,
        /// The staff member
        #[arg(long)]
        to: String,
        #[arg(long)]
        notes: Option<String>,
    },
}

#[derive(Args, Debug)]
struct ListArgs {
    /// One category's list (分类): 未到堂, 到堂未购, 已购, 复购, 流失, 停访 (or their
    /// codes); without it, the counts
    #[arg(long, conflicts_with_all = ["typical", "problem"])]
    category: Option<String>,
    /// The typical cases (典型)
    #[arg(long, conflicts_with = "problem")]
    typical: bool,
    /// Patients with an open problem (问题)
    #[arg(long)]
    problem: bool,
    /// The day the categories are judged on (YYYY-MM-DD); today by default
    #[arg(long)]
    date: Option<String>,
    /// At most this many patients, most recently in touch first
    #[arg(long, default_value_t = 200)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PurchaseArgs {
    #[command(flatten)]
    who: Who,
    #[arg(long)]
    product: String,
    /// Boxes (盒)
    #[arg(long, default_value_t = 1)]
    quantity: i64,
    /// Amount paid in yuan (e.g. 1280.50)
    #[arg(long)]
    amount: String,
    /// Run-out date of the medication (用药到期时间)
    #[arg(long)]
    runout: Option<String>,
    #[arg(long)]
    invoice: Option<String>,
    #[arg(long)]
    gifts: Option<String>,
    /// Gift receipt number (礼品收据)
    #[arg(long)]
    gift_receipt: Option<String>,
}

#[derive(Args, Debug)]
struct FollowupArgs {
    #[command(flatten)]
    who: Who,
    /// Kind of call (回访, 关怀, 用药指导 ...)
    #[arg(long, default_value = "回访")]
    kind: String,
    /// What came of it
    #[arg(long)]
    outcome: String,
    /// Entry point for the next call (切入点)
    #[arg(long)]
    next: Option<String>,
}

#[derive(Args, Debug)]
struct HospitalArgs {
    #[command(flatten)]
    who: Who,
    #[arg(long)]
    admitted: String,
    #[arg(long)]
    discharged: Option<String>,
    #[arg(long)]
    hospital: Option<String>,
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args, Debug)]
struct ContactArgs {
    #[command(flatten)]
    who: Who,
    #[arg(long)]
    notes: Option<String>,
}

#[derive(Args, Debug)]
struct TypicalArgs {
    #[command(flatten)]
    who: Who,
    #[arg(long)]
    notes: Option<String>,
    /// Remove the typical-case mark
    #[arg(long)]
    clear: bool,
}

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Write this device's outbox (with its identity and cursor), signed
    /// with its credential, for `keqing-server bundle import`. The outbox
    /// stays until the answer says headquarters holds it
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Write over an existing file
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Apply headquarters' answer like a pull: what the office lacked
    /// arrives, what headquarters holds leaves the outbox, what it refused
    /// is set aside (`keqing quarantine list`)
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RetentionCommand {
    /// Keep dossiers active in the last N years; drop older ones now and
    /// after each sync
    Set {
        #[arg(long)]
        years: u32,
    },
    /// Keep every dossier again (those dropped come back as patients call)
    Off,
    /// The retention and how many dossiers it has dropped here
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ActivityCommand {
    /// 活动列表 The activities of this office: headquarters' (from the
    /// catalogue, as of the last sync) and the office's own
    List {
        #[arg(long)]
        json: bool,
    },
    /// 设立活动 Define one of the office's own activities (only its 客情主管)
    Add {
        /// Who defines it (the office's 客情主管)
        #[arg(long)]
        by: String,
        #[arg(long)]
        name: String,
        /// 义诊, 讲座, 促销 or 节日活动 (clinic, lecture, promotion, festival)
        #[arg(long)]
        kind: String,
        /// First day (YYYY-MM-DD)
        #[arg(long)]
        from: String,
        /// Last day (YYYY-MM-DD); the first by default
        #[arg(long)]
        to: Option<String>,
        /// The catalogue source (code) that advertises it: its spend in
        /// these days counts as the activity's
        #[arg(long)]
        source: Option<String>,
    },
    /// 参加活动 Record that a patient took part in an activity (on one of
    /// its days): the patient's purchases until 30 days after it ends are
    /// attributed to it
    Join {
        /// The activity's id (`keqing activity list`)
        #[arg(long)]
        activity: String,
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        notes: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ProblemCommand {
    /// Open a problem (complaint, risk)
    Open {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        description: String,
    },
    /// Mark a problem as being handled
    Handle {
        #[command(flatten)]
        who: Who,
        /// Problem id; the only unresolved one by default
        #[arg(long)]
        problem: Option<String>,
    },
    /// Resolve a problem
    Resolve {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        problem: Option<String>,
        #[arg(long)]
        resolution: String,
    },
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// Dossier id, id prefix or phone number
    #[arg(long)]
    patient: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    age: Option<i64>,
    #[arg(long)]
    birth_year: Option<i64>,
    #[arg(long)]
    sex: Option<String>,
    #[arg(long)]
    address: Option<String>,
    #[arg(long)]
    knows: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    /// Add a phone number
    #[arg(long)]
    phone: Option<String>,
    /// Add a disease
    #[arg(long)]
    disease: Option<String>,
}

pub fn main() -> ExitCode {
    // Like every Unix filter, a closed stdout (`| head`) ends the process
    // quietly. SIGPIPE itself stays ignored (Rust's default): a peer
    // resetting a sync connection must be an error, not a silent death.
    // println! then panics with a broken pipe, which ends quietly here.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    keqing_host::files::private_umask();
    // Warnings (a replica's permissions tightened, changes set aside) go to
    // stderr; RUST_LOG=info shows more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may carry a server's message or stored text.
            eprintln!(
                "错误 error: {}",
                safe(&keqing_shared::printable::error_chain("", e.as_ref()))
            );
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo and prints what it found; fails if a check failed.
fn demo(opts: &keqing_demo::DemoOptions, json: bool) -> Result<()> {
    if !json {
        println!(
            "客情 Keqing 演示: {} 个办事处 × 2 台设备 + 总部, {} 天, 每个办事处 {} 位新来电患者 (seed {})",
            opts.offices, opts.days, opts.patients, opts.seed
        );
    }
    let s = keqing_demo::run(opts)?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        if let Some(r) = &s.report {
            print!(
                "{}",
                sheets::text_of(r, |title| {
                    matches!(
                        title,
                        "咨询与转化"
                            | "复购与回访"
                            | "信息来源"
                            | "病种"
                            | "非正常咨询"
                            | "未购原因"
                            | "客户分类"
                            | "活动"
                    )
                })
            );
        }
        println!("\n【检查 checks】");
        for c in &s.checks {
            println!("{} {} — {}", if c.ok { "✓" } else { "✗" }, c.name, c.detail);
        }
        println!("\n【数字 figures】");
        println!(
            "设备 {}  档案 {}  记录 {}  编辑 {} ({:.0}/s)  合并重复 {}",
            s.devices, s.dossiers, s.records, s.edits, s.edits_per_second, s.merged_duplicates
        );
        println!(
            "同步 {} 次成功, {} 次因断网失败; 推送变更 {}; 全国报表 {:.1} ms; 用时 {:.1} s",
            s.syncs, s.syncs_offline, s.changes_pushed, s.national_report_ms, s.seconds
        );
        if let (Some(dir), Some(r)) = (&s.kept_in, &s.report) {
            let kept = office::OFFICES[..s.offices]
                .iter()
                .find(|o| o.code == "44")
                .unwrap_or(&office::OFFICES[0]);
            let device = format!("{dir}/{}/{}前台1", kept.code, kept.name);
            let (from, to) = (&r.from, &r.to);
            println!("\n数据保留在 {dir}:");
            println!("  keqing --data {device} due --date {to}");
            println!("  keqing --data {device} ui                     # 办事处工作台 office UI");
            println!(
                "    (登录: 任一员工姓名 (keqing --data {device} staff list), 密码 {} / sign in as any staff member)",
                keqing_demo::DEMO_PASSWORD
            );
            println!("  keqing-server --data {dir}/server report national --from {from} --to {to}");
            println!("  keqing-server --data {dir}/server dashboard   # 总部看板 HQ dashboard");
            let users: Vec<String> = keqing_demo::DEMO_HQ_USERS
                .iter()
                .map(|(name, role)| format!("{name} ({})", role.chinese()))
                .collect();
            println!(
                "    (登录: {}, 密码 {} / sign in as either)",
                users.join(" 或 "),
                keqing_demo::DEMO_PASSWORD
            );
        }
        println!(
            "{}",
            if s.converged {
                "全部检查通过 all checks passed"
            } else {
                "检查失败 some checks FAILED"
            }
        );
    }
    if !s.converged {
        bail!("the demo's checks failed");
    }
    Ok(())
}

fn when(at: &Option<String>) -> Result<NaiveDateTime> {
    Ok(match at {
        Some(s) => parse_datetime(s)?,
        None => now_cst(),
    })
}

fn day(date: &Option<String>) -> Result<NaiveDate> {
    Ok(match date {
        Some(s) => parse_date(s)?,
        None => now_cst().date(),
    })
}

fn yes_no(field: &'static str, s: &Option<String>) -> Result<Option<bool>> {
    s.as_deref()
        .map(|v| match v.trim() {
            "是" | "yes" | "y" | "true" | "知道" => Ok(true),
            "否" | "no" | "n" | "false" | "不知道" => Ok(false),
            other => {
                Err(DomainError::invalid(field, format!("`{other}`: expected 是 or 否")).into())
            }
        })
        .transpose()
}

fn sex(s: &Option<String>) -> Result<Option<Sex>> {
    s.as_deref()
        .map(|v| {
            Sex::parse(v).ok_or_else(|| {
                DomainError::invalid("sex", format!("`{v}`: expected 男 or 女")).into()
            })
        })
        .transpose()
}

/// Stored text as it may be printed: it may hold anything a device sent,
/// so control characters are shown, never acted on by the terminal.
fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    keqing_shared::printable::printable(s)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let data = cli.data;
    if let Command::Demo {
        offices,
        days,
        start,
        patients,
        seed,
        keep,
        json,
    } = &cli.command
    {
        return demo(
            &keqing_demo::DemoOptions {
                offices: *offices,
                days: *days,
                start: start.as_deref().map(parse_date).transpose()?,
                patients: *patients,
                seed: *seed,
                keep: keep.clone(),
                quiet: *json,
            },
            *json,
        );
    }
    if let Command::Enroll {
        server,
        token,
        device,
        tls,
        encrypt,
    } = &cli.command
    {
        if *encrypt && !data.join(store::DB_FILE).exists() {
            store::use_key(new_key()?);
        } else {
            ask_key_if_encrypted(&data)?;
        }
        let tls = read_tls_files(tls)?;
        let servers = keqing_office::sync::parse_servers(server)?;
        let rt = runtime()?;
        let desk = rt.block_on(keqing_office::sync::enroll(
            &data,
            &servers,
            token,
            device.as_deref(),
            &tls,
        ))?;
        println!(
            "已注册 办事处 {} 设备 {} → {}",
            desk.office(),
            desk.replica().meta().device,
            servers.join(", ")
        );
        return Ok(());
    }
    if let Command::Init {
        office,
        device,
        encrypt,
    } = &cli.command
    {
        if *encrypt {
            store::use_key(new_key()?);
        }
        let desk = Desk::init(&data, office, device)?;
        let o = office::office(desk.office())?;
        println!(
            "已初始化 办事处 {} {} 设备 {} → {}{}",
            o.code,
            o.name,
            desk.replica().meta().device,
            data.display(),
            if store::is_encrypted(&data)? {
                " (已加密 encrypted)"
            } else {
                ""
            }
        );
        return Ok(());
    }
    if let Command::Rekey = &cli.command {
        // Refusals that need no passphrase come before asking for one.
        store::require_encrypted(&data)?;
        ask_key_if_encrypted(&data)?;
        let old = store::configured_key()?
            .ok_or_else(|| keqing_office::ClientError::KeyRequired(data.display().to_string()))?;
        let new = replacement_key()?;
        let dossiers = store::rekey_replica(&data, &old, &new)?;
        println!(
            "已更换密钥 {} 份档案 → {} (旧密钥已失效; 请更新设置 KEQING_DB_KEY 的地方)",
            dossiers,
            data.display()
        );
        return Ok(());
    }
    if let Command::Encrypt = &cli.command {
        let key = new_key()?;
        let dossiers = store::encrypt_replica(&data, &key)?;
        println!(
            "已加密 {} 份档案 → {} (以后每个命令都需要密钥: KEQING_DB_KEY 或终端输入)",
            dossiers,
            data.display()
        );
        return Ok(());
    }
    ask_key_if_encrypted(&data)?;
    let mut desk = Desk::open(&data)?;
    match cli.command {
        Command::Init { .. }
        | Command::Enroll { .. }
        | Command::Demo { .. }
        | Command::Encrypt
        | Command::Rekey => {
            unreachable!("handled above")
        }
        Command::Sync {
            watch,
            interval,
            json,
        } => {
            let rt = runtime()?;
            if watch {
                return rt.block_on(watch_sync(
                    desk.replica_mut(),
                    Duration::from_secs(interval.max(1)),
                ));
            }
            let mut bar = Bar::new(json);
            let s = rt.block_on(keqing_office::sync::sync_once(desk.replica_mut(), &mut bar))?;
            bar.finish();
            if json {
                return print_json(&s);
            }
            println!(
                "同步完成 推送 {} 条 (重复 {}) 拉取 {} 条变更 {} 份快照 游标 {}",
                s.pushed, s.duplicates, s.pulled_changes, s.pulled_snapshots, s.cursor
            );
            if s.quarantined > 0 {
                println!(
                    "注意: {} 份档案的远端数据无法合并, 已隔离保存 (keqing quarantine list 查看) / quarantined",
                    s.quarantined
                );
            }
            if s.refused > 0 {
                println!(
                    "注意: 服务器拒绝了本机的 {} 条变更, 已移出待同步队列 (keqing quarantine list 查看原因) / refused, set aside; the rest synced",
                    s.refused
                );
            }
        }
        Command::Heads { json } => {
            let heads: std::collections::BTreeMap<String, Vec<String>> = desk
                .replica()
                .document_heads()?
                .into_iter()
                .map(|(id, h)| {
                    let mut h: Vec<String> = h.iter().map(ToString::to_string).collect();
                    h.sort();
                    (id, h)
                })
                .collect();
            if json {
                return print_json(&heads);
            }
            for (id, h) in heads {
                println!("{} {}", safe(&id), h.join(","));
            }
        }
        Command::Repair => {
            let rt = runtime()?;
            let n = rt.block_on(keqing_office::sync::repair(desk.replica_mut()))?;
            println!("修复完成 补回 {n} 条变更");
        }
        Command::Staff(StaffCommand::Add {
            name,
            role,
            password_stdin,
        }) => {
            let password = password_stdin.then(password_from_stdin).transpose()?;
            let s = desk.add_staff_account(&name, Role::parse(&role)?, password.as_deref())?;
            println!("已添加员工 {} ({})", safe(&s.name), s.role.chinese());
            if password.is_some() {
                println!("已设置密码 password set");
            }
        }
        Command::Staff(StaffCommand::Password { name, .. }) => {
            let password = password_from_stdin()?;
            let s = desk.set_password(&name, &password)?;
            println!("已设置密码 password set for {}", safe(&s.name));
        }
        Command::Staff(StaffCommand::Leave { name }) => {
            let s = desk.set_staff_active(&name, false)?;
            println!("已标记离岗 {} ({})", safe(&s.name), s.role.chinese());
        }
        Command::Staff(StaffCommand::Return { name }) => {
            let s = desk.set_staff_active(&name, true)?;
            println!("已标记在岗 {} ({})", safe(&s.name), s.role.chinese());
        }
        Command::Staff(StaffCommand::List { json }) => {
            let staff = desk.staff_accounts()?;
            if json {
                let listed: Vec<serde_json::Value> = staff
                    .iter()
                    .map(|(s, password)| {
                        serde_json::json!({
                            "id": s.id, "name": s.name, "role": s.role,
                            "active": s.active, "password": password,
                        })
                    })
                    .collect();
                return print_json(&listed);
            }
            let mut t = Table::new(["姓名", "岗位", "状态", "密码"]);
            for (s, password) in &staff {
                t.row([
                    s.name.clone(),
                    s.role.chinese().to_string(),
                    if s.active { "在岗" } else { "离岗" }.to_string(),
                    if *password { "已设" } else { "未设" }.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Command::Call(a) => {
            let input = CallInput {
                phone: a.phone,
                name: a.name,
                age: a.age,
                sex: sex(&a.sex)?,
                disease: a.disease,
                source: a.source,
                staff: a.staff,
                relation: a.relation,
                address: a.address,
                knows: yes_no("knows", &a.knows)?,
                condition: a.condition,
                treatment: a.treatment,
                outcome: a.outcome,
                at: when(&a.at)?,
                patient: a.patient,
                force_new: a.new,
            };
            let out = desk.register_call(&input)?;
            if a.json {
                return print_json(&out);
            }
            let how = match out.matched_by {
                MatchedBy::Given => "加入指定档案",
                MatchedBy::Phone => "按电话找到已有档案",
                MatchedBy::NameAndAge => "按姓名年龄找到已有档案",
                MatchedBy::New => "新建档案",
            };
            println!("已登记来电 ({how})");
            for d in &out.possible_duplicates {
                println!(
                    "注意 可能重复: {} {} 岁 电话 {} 档案 {}",
                    safe(&d.name),
                    d.age.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    safe(&d.phones.join(",")),
                    safe(&d.dossier_id)
                );
            }
            // The dossier id alone on the last line, for scripts.
            println!("{}", out.dossier_id);
        }
        Command::Visit(a) => {
            let input = VisitInput {
                staff: a.who.staff,
                at: when(&a.who.at)?,
                purchased: a.bought,
                reason_not_bought: a.reason,
                reason_text: a.reason_text,
                notes: a.notes,
            };
            let (v, visit) = desk.record_visit(&a.who.patient, &input)?;
            println!(
                "已登记到堂 {} {}",
                safe(&v.patient.name),
                if visit.purchased { "已购" } else { "未购" }
            );
            println!("{}", v.id);
        }
        Command::Purchase(a) => {
            let input = PurchaseInput {
                staff: a.who.staff,
                at: when(&a.who.at)?,
                product: a.product,
                quantity: a.quantity,
                amount_yuan: a.amount,
                runout: a.runout.as_deref().map(parse_date).transpose()?,
                invoice: a.invoice,
                gifts: a.gifts,
                gift_receipt: a.gift_receipt,
            };
            let (v, purchase) = desk.record_purchase(&a.who.patient, &input)?;
            println!(
                "已登记购药 {} {} {} 盒 ¥{} 用药到期 {}",
                safe(&v.patient.name),
                safe(&purchase.product),
                purchase.quantity,
                fmt_yuan(purchase.amount_fen),
                purchase
                    .runout
                    .map(fmt_date)
                    .unwrap_or_else(|| "未填".into())
            );
            println!("{}", v.id);
        }
        Command::Followup(a) => {
            let input = FollowUpInput {
                staff: a.who.staff,
                at: when(&a.who.at)?,
                kind: a.kind,
                outcome: a.outcome,
                next_entry: a.next,
            };
            let (v, _) = desk.record_followup(&a.who.patient, &input)?;
            println!("已登记回访 {}", safe(&v.patient.name));
            println!("{}", v.id);
        }
        Command::Hospital(a) => {
            let input = HospitalInput {
                staff: a.who.staff,
                at: when(&a.who.at)?,
                admitted: parse_date(&a.admitted)?,
                discharged: a.discharged.as_deref().map(parse_date).transpose()?,
                hospital: a.hospital,
                reason: a.reason,
            };
            let (v, stay) = desk.record_hospital_stay(&a.who.patient, &input)?;
            println!(
                "已登记住院 {} 入院 {}",
                safe(&v.patient.name),
                fmt_date(stay.admitted)
            );
            println!("{}", v.id);
        }
        Command::Discharge(a) => {
            let (v, stay) = desk.record_discharge(
                &a.who.patient,
                a.stay.as_deref(),
                parse_date(&a.date)?,
                &a.who.staff,
                when(&a.who.at)?,
            )?;
            println!(
                "已登记出院 {} 入院 {} 出院 {}",
                safe(&v.patient.name),
                fmt_date(stay.admitted),
                stay.discharged.map(fmt_date).unwrap_or_default()
            );
            println!("{}", v.id);
        }
        Command::Greeting(a) => contact(&mut desk, a, ContactKind::Greeting)?,
        Command::Homevisit(a) => contact(&mut desk, a, ContactKind::HomeVisit)?,
        Command::Delivery(a) => {
            let input = DeliveryInput {
                staff: a.who.staff,
                at: when(&a.who.at)?,
                purchase: a.purchase,
                product: a.product,
                quantity: a.quantity,
                address: a.address,
                due: a.due.as_deref().map(parse_date).transpose()?,
                notes: a.notes,
                delivered: a.delivered,
            };
            let (v, d) = desk.record_delivery(&a.who.patient, &input)?;
            println!(
                "已登记外送 {} {} {}{}",
                safe(&v.patient.name),
                d.state().chinese(),
                safe(d.product.as_deref().unwrap_or("")),
                d.due
                    .map(|due| format!(" 限 {}", fmt_date(due)))
                    .unwrap_or_default()
            );
            // The delivery's id alone on the last line, for scripts.
            println!("{}", d.id);
        }
        Command::Deliver(a) => {
            let (v, d) = desk.settle_delivery(
                &a.who.patient,
                a.delivery.as_deref(),
                &a.who.staff,
                when(&a.who.at)?,
                a.failed.as_deref(),
            )?;
            println!(
                "外送 {} {} → {}",
                safe(&v.patient.name),
                d.id,
                d.state().chinese()
            );
            println!("{}", d.id);
        }
        Command::Deliveries { json } => {
            let list = desk.open_deliveries()?;
            if json {
                return print_json(&list);
            }
            let today = fmt_date(now_cst().date());
            let mut t = Table::new(["期限", "患者", "电话", "药品", "数量", "地址", "外送"]);
            for d in &list {
                let due = match &d.due {
                    Some(due) if due.as_str() < today.as_str() => format!("{due} 逾期"),
                    Some(due) => due.clone(),
                    None => "-".into(),
                };
                t.row([
                    due,
                    d.name.clone(),
                    d.phone.clone().unwrap_or_default(),
                    d.product.clone().unwrap_or_default(),
                    d.quantity.map(|q| q.to_string()).unwrap_or_default(),
                    d.address.clone().unwrap_or_default(),
                    d.id.clone(),
                ]);
            }
            print!("{}", t.render());
            println!("待送 {} 件", list.len());
        }
        Command::Nonpatient(a) => {
            let call = desk.record_nonpatient(&NonPatientInput {
                phone: a.phone,
                kind: a.kind,
                staff: a.staff,
                notes: a.notes,
                at: when(&a.at)?,
            })?;
            if a.json {
                return print_json(&call);
            }
            println!(
                "已登记非正常咨询 {} {}",
                safe(keqing_shared::records::NonPatientKind::label_of(&call.kind)),
                safe(call.phone.as_deref().unwrap_or(""))
            );
            println!("{}", call.id);
        }
        Command::Plan(cmd) => plan(&mut desk, cmd)?,
        Command::List(a) => list(&desk, a)?,
        Command::Typical(a) => {
            let v = desk.mark_typical(
                &a.who.patient,
                &a.who.staff,
                when(&a.who.at)?,
                &a.notes,
                !a.clear,
            )?;
            println!(
                "{} {}",
                if a.clear {
                    "已取消典型病例"
                } else {
                    "已标记典型病例"
                },
                safe(&v.patient.name)
            );
            println!("{}", v.id);
        }
        Command::Problem(p) => problem(&mut desk, p)?,
        Command::Bundle(BundleCommand::Export { out, force, json }) => {
            let (bytes, done) = keqing_office::bundle::export(desk.replica())?;
            keqing_host::files::write_output(&out, &bytes, force, &[store::DB_FILE])?;
            if json {
                return print_json(&done);
            }
            println!(
                "已写出变更包 {} changes ({} bytes) → {}; 交总部导入 keqing-server bundle import {}",
                done.changes,
                done.bytes,
                out.display(),
                out.display()
            );
        }
        Command::Bundle(BundleCommand::Import { file, json }) => {
            let bytes = keqing_host::files::read_at_most(
                &file,
                keqing_shared::bundle::MAX_BUNDLE_BYTES as u64,
            )?;
            let done = keqing_office::bundle::import_answer(desk.replica_mut(), &bytes)
                .with_context(|| format!("{} refused, nothing changed", file.display()))?;
            if json {
                return print_json(&done);
            }
            println!(
                "已导入总部回复 {} snapshots, {} changes; outbox: {} stored at headquarters, {} refused (keqing quarantine list){}",
                done.snapshots,
                done.changes,
                done.stored,
                done.refused,
                if done.complete {
                    ""
                } else {
                    "; more with the next bundle"
                }
            );
        }
        Command::Retention(RetentionCommand::Set { years }) => {
            let dropped = desk.set_retention(Some(years))?;
            println!(
                "保留期限 {years} 年 retention {years} years: 本机移出 {} 份档案 (服务器保留) dropped here, kept at the server",
                dropped.len()
            );
        }
        Command::Retention(RetentionCommand::Off) => {
            desk.set_retention(None)?;
            println!("不再按期限移出档案 retention off: every dossier is kept");
        }
        Command::Retention(RetentionCommand::Show { json }) => {
            let years = desk.replica().retention_years()?;
            let dropped = desk.replica().dropped_count()?;
            if json {
                return print_json(&serde_json::json!({"years": years, "dropped": dropped}));
            }
            match years {
                Some(y) => println!(
                    "保留期限 {y} 年 retention {y} years; 已移出 {dropped} 份 dropped here"
                ),
                None => println!(
                    "未设保留期限 no retention (every dossier kept); 已移出 {dropped} 份 dropped here"
                ),
            }
        }
        Command::Lookup { phone, json } => {
            let found = match desk.lookup_phone(&phone)? {
                keqing_office::desk::PhoneLookup::AtServer(id) => {
                    // Online: fetched back whole, then read as any other.
                    let fetched = runtime()?
                        .block_on(keqing_office::sync::fetch_dossier(desk.replica_mut(), &id));
                    match fetched {
                        Ok(_) => desk.lookup_phone(&phone)?,
                        Err(e) => {
                            if json {
                                return print_json(&serde_json::json!({
                                    "at_server": id, "fetched": false, "why": e.to_string()
                                }));
                            }
                            println!(
                                "档案在服务器上 (按保留期限已移出本机), 联网后可取回 the dossier {} is at the server (dropped here by retention); could not fetch it now: {}",
                                safe(&id),
                                safe(&e.to_string())
                            );
                            return Ok(());
                        }
                    }
                }
                other => other,
            };
            match found {
                keqing_office::desk::PhoneLookup::Here(rows) => {
                    if json {
                        return print_json(
                            &rows
                                .iter()
                                .map(|p| serde_json::json!({"dossier_id": p.dossier_id, "name": p.name}))
                                .collect::<Vec<_>>(),
                        );
                    }
                    for p in rows {
                        println!("{} {}", safe(&p.name), p.dossier_id);
                    }
                }
                keqing_office::desk::PhoneLookup::AtServer(id) => {
                    bail!("取回后仍找不到 fetched {id} but it is still not here; try keqing repair")
                }
                keqing_office::desk::PhoneLookup::TransferredTo { id, office } => {
                    if json {
                        return print_json(
                            &serde_json::json!({"transferred_to": office, "dossier_id": id}),
                        );
                    }
                    println!(
                        "患者已转档到 {} transferred to that office (dossier {}); 不必新建档案",
                        keqing_shared::office::label(&office),
                        safe(&id)
                    );
                }
                keqing_office::desk::PhoneLookup::Nowhere => {
                    if json {
                        return print_json(&Vec::<serde_json::Value>::new());
                    }
                    println!("没有此号码的档案 no dossier with this phone");
                }
            }
        }
        Command::Activity(ActivityCommand::List { json }) => {
            let list = desk.activities()?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("没有活动 no activities");
            } else {
                print!("{}", keqing_shared::activity::table(&list).render());
            }
        }
        Command::Activity(ActivityCommand::Add {
            by,
            name,
            kind,
            from,
            to,
            source,
        }) => {
            let kind = keqing_shared::activity::ActivityKind::parse(&kind).ok_or_else(|| {
                keqing_office::ClientError::Invalid(format!(
                    "kind `{}`: 义诊, 讲座, 促销 or 节日活动",
                    safe(&kind)
                ))
            })?;
            let starts = parse_date(&from)?;
            let ends = to.as_deref().map(parse_date).transpose()?.unwrap_or(starts);
            let a = desk.add_activity(&by, &name, kind, (starts, ends), source.as_deref())?;
            println!("已设立活动 {} {} 至 {}", safe(&a.name), a.starts, a.ends);
            println!("{}", a.id);
        }
        Command::Activity(ActivityCommand::Join {
            activity,
            who,
            notes,
        }) => {
            let (v, p) =
                desk.join_activity(&who.patient, &who.staff, &activity, when(&who.at)?, &notes)?;
            println!("{} 已参加活动 {}", safe(&v.patient.name), safe(&p.activity));
            println!("{}", v.id);
        }
        Command::Update(a) => {
            let changes = PatientChanges {
                name: a.name,
                sex: sex(&a.sex)?,
                age: a.age,
                birth_year: a.birth_year,
                address: a.address,
                knows: yes_no("knows", &a.knows)?,
                notes: a.notes,
                phone: a.phone,
                disease: a.disease,
            };
            let v = desk.update_patient(&a.patient, &changes)?;
            println!("已更新资料 {}", safe(&v.patient.name));
            println!("{}", v.id);
        }
        Command::Due { date, staff, json } => {
            let d = day(&date)?;
            let list = desk.due(d, staff.as_deref())?;
            if json {
                return print_json(&list);
            }
            print_due(d, &list);
        }
        Command::Patient { query, json } => {
            let (view, slots) = desk.dossier(&query)?;
            // Whoever holds the replica file reads as their OS account.
            desk.audit_read(&keqing_host::os_account(), "dossier.open", &view.id)?;
            if json {
                return print_json(&serde_json::json!({ "dossier": view, "slots": slots }));
            }
            print_dossier(&view, &slots, now_cst().date());
        }
        Command::Search { text, limit, json } => {
            if text.trim().is_empty() {
                bail!("查询内容为空 empty search text");
            }
            let q = if phone::looks_like_digits(&text) {
                text.chars().filter(char::is_ascii_digit).collect()
            } else {
                text.trim().to_string()
            };
            let rows = desk.replica().search(&q, limit)?;
            if json {
                return print_json(&rows);
            }
            let mut t = Table::new(["姓名", "年龄", "电话", "疾病", "档案"]);
            for p in &rows {
                t.row([
                    p.name.clone()
                        + if p.merged_into.is_some() {
                            " (已合并)"
                        } else {
                            ""
                        },
                    p.age.map(|a| a.to_string()).unwrap_or_default(),
                    p.phones.join(","),
                    p.diseases.clone(),
                    p.dossier_id.clone(),
                ]);
            }
            print!("{}", t.render());
            println!("共 {} 条", rows.len());
        }
        Command::Report(ReportCommand::Daily {
            date,
            from,
            to,
            output,
        }) => {
            let (from, to) = match (from, to) {
                (Some(f), Some(t)) => (parse_date(&f)?, parse_date(&t)?),
                _ => {
                    let d = day(&date)?;
                    (d, d)
                }
            };
            if to < from {
                bail!("无效日期范围 --to {to} is before --from {from}");
            }
            emit_report(&desk, &desk.report(from, to)?, &output)?;
        }
        Command::Report(ReportCommand::National { range, output }) => {
            let (from, to) = (parse_date(&range.from)?, parse_date(&range.to)?);
            let r = runtime()?.block_on(keqing_office::sync::server_report(
                desk.replica(),
                &Scope::National,
                from,
                to,
            ))?;
            emit_report(&desk, &r, &output)?;
        }
        Command::Report(ReportCommand::Province {
            province,
            range,
            output,
        }) => {
            let scope = Scope::Office(office::office(&province)?.code.to_string());
            let (from, to) = (parse_date(&range.from)?, parse_date(&range.to)?);
            let r = runtime()?.block_on(keqing_office::sync::server_report(
                desk.replica(),
                &scope,
                from,
                to,
            ))?;
            emit_report(&desk, &r, &output)?;
        }
        Command::Duplicates { json } => {
            let pairs = desk.replica().duplicate_candidates()?;
            if json {
                return print_json(&pairs);
            }
            if pairs.is_empty() {
                println!("没有疑似重复的档案");
                return Ok(());
            }
            let mut t = Table::new(["原因", "患者A", "省", "档案A", "患者B", "省", "档案B"]);
            for p in &pairs {
                t.row([
                    p.reason.clone(),
                    p.a.name.clone(),
                    p.a.office.clone(),
                    p.a.dossier_id.clone(),
                    p.b.name.clone(),
                    p.b.office.clone(),
                    p.b.dossier_id.clone(),
                ]);
            }
            print!("{}", t.render());
            println!(
                "共 {} 对; 合并: keqing merge <保留档案> <重复档案>",
                pairs.len()
            );
        }
        Command::Merge {
            keep,
            duplicate,
            json,
        } => {
            let m = desk.merge(&keep, &duplicate)?;
            if json {
                return print_json(&m);
            }
            println!(
                "已合并 {} → {} (复制 {} 条记录)",
                m.merged, m.kept, m.records_copied
            );
        }
        Command::Conflicts { json } => {
            let list = desk.conflicts()?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("没有冲突");
                return Ok(());
            }
            let mut t = Table::new(["患者", "省", "字段", "并存的值", "档案"]);
            for e in &list {
                for c in &e.conflicts {
                    t.row([
                        e.name.clone(),
                        e.office.clone(),
                        c.field.clone(),
                        c.values.join(" | "),
                        e.dossier_id.clone(),
                    ]);
                }
            }
            print!("{}", t.render());
            println!("解决: keqing resolve <档案> <字段> <值>");
        }
        Command::Resolve {
            dossier,
            field,
            value,
        } => {
            let view = desk.resolve_field(&dossier, &field, &value)?;
            println!("已设定 {} 的 {}", safe(&view.patient.name), safe(&field));
            println!("{}", view.id);
        }
        Command::Rebuild => {
            let n = desk.replica_mut().rebuild()?;
            println!("已重建 {n} 个文档的投影表");
        }
        Command::Ui {
            listen,
            sync_every,
            idle_minutes,
        } => {
            drop(desk);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            return rt.block_on(async {
                let signal = keqing_host::shutdown_signal();
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                // The address alone on the last line, for scripts and tests.
                println!("客情工作台 office workstation (Ctrl-C stops):");
                println!("http://{addr}/");
                use std::io::Write;
                std::io::stdout().flush()?;
                keqing_office::ui::serve(
                    data,
                    listener,
                    keqing_office::ui::UiOptions {
                        sync_every: (sync_every > 0).then(|| Duration::from_secs(sync_every)),
                        idle_sign_out: idle_minutes,
                    },
                    signal,
                )
                .await?;
                Ok::<(), anyhow::Error>(())
            });
        }
        Command::Quarantine(QuarantineCommand::List { json }) => {
            let (count, all) = desk.replica().quarantined(usize::MAX)?;
            let (refused_count, refused) = desk.replica().refused(usize::MAX)?;
            if json {
                // One list, as before: own changes the server refused are
                // the items of kind `refused`.
                let mut items: Vec<serde_json::Value> = all
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<std::result::Result<_, _>>()?;
                for r in &refused {
                    items.push(serde_json::json!({
                        "doc_id": r.doc_id,
                        "kind": "refused",
                        "reason": r.reason,
                        "at": r.at,
                        "bytes": r.bytes,
                    }));
                }
                return print_json(&items);
            }
            if count + refused_count == 0 {
                println!("没有隔离的数据 (nothing quarantined)");
            }
            if count > 0 {
                println!("无法合并的远端数据 pulled data that does not merge ({count}):");
            }
            for q in &all {
                println!(
                    "  {} {} {} {}",
                    q.at,
                    safe(&q.doc_id),
                    q.kind,
                    safe(&q.reason)
                );
            }
            if refused_count > 0 {
                println!("服务器拒绝的本机变更 own changes the server refused ({refused_count}):");
            }
            for r in &refused {
                println!(
                    "  {} {} {} 字节 {}",
                    r.at,
                    safe(&r.doc_id),
                    r.bytes,
                    safe(&r.reason)
                );
            }
        }
        Command::Servers(ServersCommand::List { json }) => {
            let state = desk.replica().sync_state()?;
            let servers = state.map(|s| s.servers).unwrap_or_default();
            if json {
                return print_json(&servers);
            }
            if servers.is_empty() {
                println!("未注册同步 (keqing enroll --server URL --token T)");
            }
            for (i, s) in servers.iter().enumerate() {
                println!("{}. {}", i + 1, safe(s));
            }
        }
        Command::Reads { limit, json } => {
            let reads = desk.replica().reads(limit)?;
            if json {
                return print_json(&reads);
            }
            let mut t = Table::new(["时间", "设备", "谁", "操作", "对象"]);
            for line in &reads {
                let r = &line.read;
                t.row([
                    r.at.clone(),
                    safe(&line.device).to_string(),
                    safe(&r.who).to_string(),
                    r.action.clone(),
                    safe(&r.target).to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Command::Catalog { json } => {
            let catalog = desk.replica().catalog()?;
            if json {
                return print_json(&catalog);
            }
            match catalog {
                Some(c) => print!("{}", keqing_shared::catalog::text(&c)),
                None => println!(
                    "还没有总部目录 no catalogue yet: headquarters imports one, it arrives with the next sync"
                ),
            }
        }
        Command::Certificate { tls } => {
            let new = read_tls_files(&tls)?;
            keqing_office::sync::replace_tls(desk.replica_mut(), &new)?;
            if new.ca_pem.is_some() {
                println!("已更换 CA 证书 CA certificate replaced");
            }
            if new.cert_pem.is_some() {
                println!("已更换本设备证书 device certificate and key replaced");
            }
            println!("下次同步起生效 used from the next sync");
        }
        Command::Servers(ServersCommand::Add { url }) => {
            let servers = keqing_office::sync::add_server(desk.replica_mut(), &url)?;
            println!("服务器地址 server addresses: {}", safe(&servers.join(", ")));
        }
        Command::Servers(ServersCommand::Remove { url }) => {
            let servers = keqing_office::sync::remove_server(desk.replica_mut(), &url)?;
            println!("服务器地址 server addresses: {}", safe(&servers.join(", ")));
        }
        Command::Quarantine(QuarantineCommand::Retry { json }) => {
            let outcome = desk.replica_mut().retry_quarantined()?;
            let requeued = desk.replica_mut().requeue_refused()?;
            if json {
                return print_json(&serde_json::json!({
                    "merged": outcome.merged,
                    "still_quarantined": outcome.still_quarantined,
                    "requeued": requeued,
                }));
            }
            println!(
                "已重新合并 {} 份档案, 仍无法合并 {} 份 (merged {}, still quarantined {})",
                outcome.merged,
                outcome.still_quarantined,
                outcome.merged,
                outcome.still_quarantined
            );
            if requeued > 0 {
                println!(
                    "被拒的 {requeued} 条本机变更已放回待同步队列, 下次同步再试 (requeued for the next sync)"
                );
            }
        }
        Command::Status { json } => {
            let meta = desk.replica().meta().clone();
            let office_name = office::office(&meta.office)
                .map(|o| o.name)
                .unwrap_or("总部");
            let sync = desk.replica().sync_state()?;
            let (quarantined, quarantined_latest) = desk.replica().quarantined(10)?;
            let (refused, refused_latest) = desk.replica().refused(10)?;
            let status = serde_json::json!({
                "office": meta.office,
                "office_name": office_name,
                "device": meta.device,
                "version": env!("CARGO_PKG_VERSION"),
                "actor": meta.actor.to_hex_string(),
                "dossiers": desk.replica().dossier_count()?,
                "outbox": desk.replica().outbox_len()?,
                "waiting_for_dependencies": desk.replica().pending_len()?,
                "quarantined": quarantined,
                "quarantined_latest": quarantined_latest,
                "refused": refused,
                "refused_latest": refused_latest,
                "encrypted": store::is_encrypted(&data)?,
                "retention_years": desk.replica().retention_years()?,
                "dropped_by_retention": desk.replica().dropped_count()?,
                "sync": sync,
            });
            if json {
                return print_json(&status);
            }
            println!(
                "办事处 {} {}  设备 {}  版本 {}",
                meta.office,
                office_name,
                meta.device,
                env!("CARGO_PKG_VERSION")
            );
            println!(
                "档案 {} 份  待同步变更 {} 条  {}",
                status["dossiers"],
                status["outbox"],
                if status["encrypted"] == true {
                    "已加密 encrypted"
                } else {
                    "未加密 not encrypted"
                }
            );
            if let Some(years) = status["retention_years"].as_u64() {
                println!(
                    "保留期限 {years} 年: 已移出本机 {} 份 (服务器保留) retention, dropped here",
                    status["dropped_by_retention"]
                );
            }
            if refused > 0 {
                println!("被拒的本机变更 {refused} 条 (已移出待同步队列; refused by the server):");
                for r in &refused_latest {
                    println!("  {} {} {}", r.at, safe(&r.doc_id), safe(&r.reason));
                }
            }
            if quarantined > 0 {
                println!("隔离的远端数据 {quarantined} 条 (无法合并, 已保存; quarantined):");
                for q in &quarantined_latest {
                    println!(
                        "  {} {} {} {}",
                        q.at,
                        safe(&q.doc_id),
                        q.kind,
                        safe(&q.reason)
                    );
                }
            }
            match &sync {
                Some(s) => {
                    println!("服务器 {}  游标 {}", safe(&s.servers.join(", ")), s.cursor);
                    println!("上次同步 {}", s.last_sync.as_deref().unwrap_or("从未"));
                    if let Some(e) = &s.last_error {
                        let kind = s
                            .last_error_kind
                            .unwrap_or(keqing_office::SyncFailure::Offline);
                        println!("上次同步失败 ({}) {}", kind.chinese(), safe(e));
                    }
                }
                None => println!("未注册同步 (keqing enroll --server URL --token T)"),
            }
        }
    }
    Ok(())
}

/// The passphrase for a new encryption: KEQING_DB_KEY, else asked twice at
/// the terminal (never echoed).
fn new_key() -> Result<store::ReplicaKey> {
    match store::ReplicaKey::from_env()? {
        Some(key) => Ok(key),
        None => ask_new_key(store::KEY_ENV),
    }
}

/// The passphrase replacing the current one: KEQING_NEW_DB_KEY (KEQING_DB_KEY
/// holds the current one), else asked twice at the terminal.
fn replacement_key() -> Result<store::ReplicaKey> {
    match store::ReplicaKey::from_var(store::NEW_KEY_ENV)? {
        Some(key) => Ok(key),
        None => ask_new_key(store::NEW_KEY_ENV),
    }
}

/// A new passphrase typed twice (never echoed); `var` is named when there is
/// no terminal to ask at.
fn ask_new_key(var: &str) -> Result<store::ReplicaKey> {
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set {var} (there is no terminal to ask at)");
    }
    let first = zeroize::Zeroizing::new(rpassword::prompt_password(
        "新密钥 new passphrase (8+ characters): ",
    )?);
    let second = zeroize::Zeroizing::new(rpassword::prompt_password("再输一次 again: ")?);
    if *first != *second {
        return Err(keqing_office::ClientError::KeyMismatch.into());
    }
    Ok(store::ReplicaKey::new(first.to_string())?)
}

/// An encrypted replica with no KEQING_DB_KEY: ask for its passphrase when a
/// person is at the terminal; otherwise opening it says what is missing.
fn ask_key_if_encrypted(data: &std::path::Path) -> Result<()> {
    if store::is_encrypted(data)?
        && store::ReplicaKey::from_env()?.is_none()
        && std::io::stdin().is_terminal()
    {
        let entered = zeroize::Zeroizing::new(rpassword::prompt_password(
            "本机副本密钥 replica passphrase: ",
        )?);
        store::use_key(store::ReplicaKey::new(entered.to_string())?);
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
struct Bar {
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    fn new(quiet: bool) -> Bar {
        Bar {
            bar: (!quiet).then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template"),
                );
                b
            }),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl keqing_office::sync::Progress for Bar {
    fn pushing(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("推送 {done}/{total}"));
            b.tick();
        }
    }
    fn pulling(&mut self, items: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("拉取 {items}"));
            b.tick();
        }
    }
    fn indexing(&mut self) {
        if let Some(b) = &self.bar {
            b.set_message("建立索引 building the indexes of the first sync");
            b.tick();
        }
    }
}

/// Syncs every `interval`; while the server is unreachable, waits longer
/// each time (up to 5 minutes). Office work goes on meanwhile.
async fn watch_sync(replica: &mut keqing_office::store::Replica, interval: Duration) -> Result<()> {
    let mut backoff = interval;
    loop {
        match keqing_office::sync::sync_once(replica, &mut keqing_office::sync::Quiet).await {
            Ok(s) => {
                backoff = interval;
                if s.pushed + s.pulled_changes + s.pulled_snapshots > 0 {
                    println!(
                        "{} 同步 推送 {} 拉取 {} 游标 {}",
                        now_cst().format("%H:%M:%S"),
                        s.pushed,
                        s.pulled_changes + s.pulled_snapshots,
                        s.cursor
                    );
                }
                if s.quarantined > 0 {
                    println!(
                        "{} 注意: {} 份档案的远端数据无法合并, 已隔离 (keqing quarantine list)",
                        now_cst().format("%H:%M:%S"),
                        s.quarantined
                    );
                }
            }
            Err(e) => {
                eprintln!(
                    "{} 同步失败 {e}; {} 秒后重试",
                    now_cst().format("%H:%M:%S"),
                    backoff.as_secs()
                );
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn contact(desk: &mut Desk, a: ContactArgs, kind: ContactKind) -> Result<()> {
    let input = ContactInput {
        staff: a.who.staff,
        at: when(&a.who.at)?,
        notes: a.notes,
    };
    let (v, _) = desk.record_contact(&a.who.patient, kind, &input)?;
    println!("已登记{} {}", kind.chinese(), safe(&v.patient.name));
    println!("{}", v.id);
    Ok(())
}

fn plan(desk: &mut Desk, cmd: PlanCommand) -> Result<()> {
    let date = |s: &str| parse_date(s);
    let (who, step, notes) = match cmd {
        PlanCommand::Add {
            who,
            date: d,
            notes,
        } => (who, PlanStep::Extra { date: date(&d)? }, notes),
        PlanCommand::Postpone { who, to, notes } => {
            (who, PlanStep::Postpone { to: date(&to)? }, notes)
        }
        PlanCommand::Stop { who, reason, notes } => (who, PlanStep::Stop { reason }, notes),
        PlanCommand::Resume { who, notes } => (who, PlanStep::Resume, notes),
        PlanCommand::Assign { who, to, notes } => (who, PlanStep::Assign { to }, notes),
    };
    let (v, change) = desk.change_plan(&who.patient, &who.staff, when(&who.at)?, &step, &notes)?;
    println!(
        "回访计划 {} {}{}{}{}",
        safe(&v.patient.name),
        change.action.chinese(),
        change
            .date
            .map(|d| format!(" {}", fmt_date(d)))
            .unwrap_or_default(),
        change
            .reason
            .map(|r| format!(" {}", r.chinese()))
            .unwrap_or_default(),
        change
            .assignee
            .as_deref()
            .map(|a| format!(" → {}", safe(a)))
            .unwrap_or_default()
    );
    println!("{}", v.id);
    Ok(())
}

fn list(desk: &Desk, a: ListArgs) -> Result<()> {
    let d = day(&a.date)?;
    let filter = Desk::list_filter(a.category.as_deref(), a.typical, a.problem)?;
    let Some(filter) = filter else {
        let counts = desk.list_counts(d)?;
        if a.json {
            let map: serde_json::Map<String, serde_json::Value> = counts
                .iter()
                .map(|(k, n)| (k.clone(), serde_json::Value::from(*n)))
                .collect();
            return print_json(&map);
        }
        println!("客户分类 {}", fmt_date(d));
        let mut t = Table::new(["分类", "人数"]);
        for (label, n) in &counts {
            t.row([label.clone(), n.to_string()]);
        }
        print!("{}", t.render());
        return Ok(());
    };
    let rows = desk.list(&keqing_host::os_account(), filter, d, a.limit)?;
    if a.json {
        return print_json(&rows);
    }
    let mut t = Table::new([
        "姓名",
        "电话",
        "分类",
        "标记",
        "最近联系",
        "下次回访",
        "回访人",
        "档案",
    ]);
    for p in &rows {
        let mut flags = Vec::new();
        if p.typical {
            flags.push("典型");
        }
        if p.open_problems > 0 {
            flags.push("问题");
        }
        t.row([
            p.name.clone(),
            p.phone.clone().unwrap_or_default(),
            keqing_shared::lists::Category::parse(&p.category)
                .map(|c| c.chinese().to_string())
                .unwrap_or_else(|| p.category.clone()),
            flags.join(","),
            p.last_contact.clone().unwrap_or_default(),
            p.next_due.clone().unwrap_or_default(),
            p.assignee.clone().unwrap_or_default(),
            p.dossier_id.clone(),
        ]);
    }
    print!("{}", t.render());
    println!("共 {} 位", rows.len());
    Ok(())
}

fn problem(desk: &mut Desk, cmd: ProblemCommand) -> Result<()> {
    let (who, step) = match cmd {
        ProblemCommand::Open { who, description } => (who, ProblemStep::Open { description }),
        ProblemCommand::Handle { who, problem } => (who, ProblemStep::Handle { problem }),
        ProblemCommand::Resolve {
            who,
            problem,
            resolution,
        } => (
            who,
            ProblemStep::Resolve {
                problem,
                resolution,
            },
        ),
    };
    let opened = matches!(step, ProblemStep::Open { .. });
    let (v, p) = desk.problem(&who.patient, &who.staff, when(&who.at)?, &step)?;
    if opened {
        println!("已登记问题患者 {} 问题 {}", safe(&v.patient.name), p.id);
    } else {
        println!(
            "问题 {} {} → {}",
            safe(&v.patient.name),
            p.id,
            p.state.chinese()
        );
    }
    // The problem's id alone on the last line, for scripts.
    println!("{}", p.id);
    Ok(())
}

fn print_due(d: NaiveDate, list: &[DueEntry]) {
    println!("回访清单 {}", fmt_date(d));
    let mut t = Table::new([
        "状态",
        "患者",
        "电话",
        "原因",
        "应访日期",
        "下次切入点",
        "回访人",
        "档案",
    ]);
    for e in list {
        let s = &e.slots[0];
        let reasons: Vec<&str> = e.slots.iter().map(|s| s.reason.as_str()).collect();
        t.row([
            s.label_on(d),
            e.name.clone(),
            e.phone.clone().unwrap_or_default(),
            reasons.join("; "),
            fmt_date(s.deadline),
            e.next_entry.clone().unwrap_or_default(),
            e.assignee.clone().unwrap_or_default(),
            e.dossier_id.clone(),
        ]);
    }
    print!("{}", t.render());
    let overdue = list.iter().filter(|e| e.overdue).count();
    println!("共 {} 位患者 (逾期 {} 位)", list.len(), overdue);
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn print_dossier(v: &DossierView, slots: &[Slot], today: NaiveDate) {
    let p = &v.patient;
    // Every stored text through `safe`: another device may have written it.
    println!("病历档案 {}", safe(&v.id));
    if let Some(into) = &v.merged_into {
        println!("  已合并到 {}", safe(into));
    }
    println!(
        "  姓名 {}  性别 {}  年龄 {}  电话 {}",
        safe(&p.name),
        p.sex.map(|s| s.chinese()).unwrap_or("-"),
        p.age.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        safe(&p.phones.join(","))
    );
    println!(
        "  疾病 {}  是否知道 {}  地址 {}",
        safe(&p.diseases.join(",")),
        p.knows.map(|k| if k { "是" } else { "否" }).unwrap_or("-"),
        safe(p.address.as_deref().unwrap_or("-"))
    );
    if let Some(t) = v.typical.as_ref().filter(|t| t.flagged) {
        println!(
            "  典型病例 ({} {}) {}",
            safe(&t.staff),
            fmt_date(t.at.date()),
            safe(&opt(&t.notes))
        );
    }
    for c in &v.conflicts {
        println!("  冲突 {}: {}", safe(&c.field), safe(&c.values.join(" | ")));
    }
    let mut t = Table::new(["时间", "类别", "员工", "内容"]);
    let mut lines: Vec<(NaiveDateTime, [String; 4])> = Vec::new();
    let ts = |x: NaiveDateTime| x.format("%Y-%m-%d %H:%M").to_string();
    for c in &v.calls {
        lines.push((
            c.at,
            [
                ts(c.at),
                "电话咨询".into(),
                c.staff.clone(),
                format!(
                    "来源 {} 疾病 {} 来电 {} {} {} {}",
                    c.source,
                    opt(&c.disease),
                    c.caller_phone,
                    opt(&c.relation),
                    opt(&c.condition),
                    opt(&c.outcome)
                ),
            ],
        ));
    }
    for x in &v.visits {
        let what = if x.purchased {
            "已购".to_string()
        } else {
            format!("未购 {}", opt(&x.reason_not_bought))
        };
        lines.push((x.at, [ts(x.at), "到堂".into(), x.staff.clone(), what]));
    }
    for x in &v.purchases {
        lines.push((
            x.at,
            [
                ts(x.at),
                "购药".into(),
                x.staff.clone(),
                format!(
                    "{} {}盒 ¥{} 用药到期【{}】 发票 {} 礼品 {} {}",
                    x.product,
                    x.quantity,
                    fmt_yuan(x.amount_fen),
                    x.runout.map(fmt_date).unwrap_or_else(|| "未填".into()),
                    opt(&x.invoice),
                    opt(&x.gifts),
                    opt(&x.gift_receipt)
                ),
            ],
        ));
    }
    for x in &v.followups {
        lines.push((
            x.at,
            [
                ts(x.at),
                "回访".into(),
                x.staff.clone(),
                format!("{} {} 切入点 {}", x.kind, x.outcome, opt(&x.next_entry)),
            ],
        ));
    }
    for x in &v.hospital_stays {
        lines.push((
            x.at,
            [
                ts(x.at),
                "住院".into(),
                x.staff.clone(),
                format!(
                    "入院 {} 出院 {} {} {}",
                    fmt_date(x.admitted),
                    x.discharged.map(fmt_date).unwrap_or_else(|| "-".into()),
                    opt(&x.hospital),
                    opt(&x.reason)
                ),
            ],
        ));
    }
    for x in &v.deliveries {
        lines.push((
            x.at,
            [
                ts(x.at),
                "外送".into(),
                x.staff.clone(),
                format!(
                    "{} {} {} {} {} {}",
                    x.state().chinese(),
                    opt(&x.product),
                    x.quantity.map(|q| format!("{q}盒")).unwrap_or_default(),
                    opt(&x.address),
                    x.due
                        .map(|d| format!("限 {}", fmt_date(d)))
                        .unwrap_or_default(),
                    opt(&x.status_reason.clone().or(x.notes.clone()))
                ),
            ],
        ));
    }
    for c in &v.plan {
        lines.push((
            c.at,
            [
                ts(c.at),
                "回访计划".into(),
                c.staff.clone(),
                format!(
                    "{} {} {} {} {}",
                    c.action.chinese(),
                    c.date.map(fmt_date).unwrap_or_default(),
                    c.reason.map(|r| r.chinese()).unwrap_or_default(),
                    opt(&c.assignee),
                    opt(&c.notes)
                ),
            ],
        ));
    }
    for (label, list) in [
        ("问候", v.greetings.iter().map(|g| &g.0).collect::<Vec<_>>()),
        ("家访", v.home_visits.iter().map(|g| &g.0).collect()),
    ] {
        for x in list {
            lines.push((
                x.at,
                [ts(x.at), label.into(), x.staff.clone(), opt(&x.notes)],
            ));
        }
    }
    for x in &v.problems {
        lines.push((
            x.at,
            [
                ts(x.at),
                "问题患者".into(),
                x.staff.clone(),
                format!(
                    "{} [{}] {}",
                    x.description,
                    x.state.chinese(),
                    opt(&x.resolution)
                ),
            ],
        ));
    }
    lines.sort_by_key(|l| l.0);
    for (_, l) in lines {
        t.row(l);
    }
    print!("{}", t.render());
    let open: Vec<&Slot> = slots
        .iter()
        .filter(|s| {
            !matches!(
                s.status_on(today),
                SlotStatus::Done { .. } | SlotStatus::Closed
            )
        })
        .take(8)
        .collect();
    if !open.is_empty() {
        println!("回访安排");
        let mut t = Table::new(["应访日期", "原因", "状态"]);
        for s in open {
            t.row([fmt_date(s.deadline), s.reason.clone(), s.label_on(today)]);
        }
        print!("{}", t.render());
    }
}

/// A password from the first line of standard input (its line break
/// dropped, nothing else: spaces may be part of it).
fn password_from_stdin() -> Result<String> {
    keqing_host::passwords::password_line(std::io::stdin().lock())
        .context("cannot read the password from standard input")?
        .context(
            "no password on standard input (e.g. `echo '…' | keqing staff password --name N --password-stdin`)",
        )
}

/// Reads the TLS files given to `enroll` or `certificate`: each must be
/// readable and PEM of its kind.
fn read_tls_files(files: &TlsFiles) -> Result<keqing_shared::sync::ClientTls> {
    let TlsFiles { ca, cert, key } = files;
    let pem = |path: &Option<PathBuf>, what: &str, marker: &str| -> Result<Option<String>> {
        let Some(path) = path else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))?;
        if !text.contains(marker) {
            bail!("{} is not a PEM {what}", path.display());
        }
        Ok(Some(text))
    };
    Ok(keqing_shared::sync::ClientTls {
        ca_pem: pem(ca, "CA certificate", "-----BEGIN CERTIFICATE-----")?,
        cert_pem: pem(cert, "certificate", "-----BEGIN CERTIFICATE-----")?,
        key_pem: pem(key, "private key", "PRIVATE KEY-----")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
