use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use keqing_server::hub::token_hash;
use keqing_server::store::{SqliteStore, Store};
use keqing_shared::report::Scope;
use keqing_shared::sheets;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "keqing-server",
    version,
    about = "客情 Keqing 服务器 — merges the 27 offices' dossiers and serves each device its office's scope"
)]
struct Cli {
    /// Settings file (配置文件, TOML): keys named like the flags (data,
    /// store, listen, http, tls-cert, …); a flag or its KEQING_… variable
    /// wins over the file. `config check` prints what is in force
    #[arg(long, env = "KEQING_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory of the server (数据目录): the SQLite store (unless
    /// --store), TLS certificates [default: keqing-server-data]
    #[arg(long, env = "KEQING_SERVER_DATA", global = true)]
    data: Option<PathBuf>,
    /// Keep the store in PostgreSQL instead of SQLite (数据库):
    /// postgres://USER:PASSWORD@HOST:PORT/DBNAME. Several servers may share
    /// one database.
    #[arg(long, env = "KEQING_STORE", value_name = "URL", global = true)]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The settings of `serve` (and `config check`): every one also a key of
/// the settings file and a KEQING_… variable (see `keqing_server::config`).
#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// gRPC sync address [default: 127.0.0.1:7600]
    #[arg(long, env = "KEQING_LISTEN")]
    listen: Option<String>,
    /// Also serve headquarters' dashboard and /metrics on this address (e.g. 127.0.0.1:8081)
    #[arg(long, env = "KEQING_HTTP")]
    http: Option<String>,
    /// Serve sync over TLS with the certificates of `tls init` (DIR/tls/)
    #[arg(long, env = "KEQING_TLS", num_args = 0..=1, default_missing_value = "true")]
    tls: Option<bool>,
    /// Serve sync over TLS with this certificate chain (PEM) instead
    #[arg(long, env = "KEQING_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "KEQING_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: devices must show a client certificate signed by the
    /// CA of `tls init` (or by --client-ca), the one bound to them with
    /// `device cert`
    #[arg(long, env = "KEQING_MTLS", num_args = 0..=1, default_missing_value = "true")]
    mtls: Option<bool>,
    /// The CA (PEM) device certificates are signed by (implies --mtls;
    /// default with --mtls: DIR/tls/ca.pem)
    #[arg(long, env = "KEQING_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Dashboard sessions end after this many minutes without a request [default: 15]
    #[arg(long, env = "KEQING_IDLE_MINUTES")]
    idle_minutes: Option<u64>,
    /// Log lines as text (default) or json (one object per line)
    #[arg(long, env = "KEQING_LOG_FORMAT")]
    log_format: Option<keqing_server::config::LogFormat>,
    /// Each device's average requests per second [default: 50]
    #[arg(long, env = "KEQING_REQUESTS_PER_SECOND")]
    requests_per_second: Option<u32>,
    /// Each device's requests at once [default: 200]
    #[arg(long, env = "KEQING_REQUEST_BURST")]
    request_burst: Option<u32>,
    /// Offices without a sync for this many days are marked silent [default: 2]
    #[arg(long, env = "KEQING_SILENT_DAYS")]
    silent_days: Option<u32>,
    /// Days of change log kept whole; older changes live on in their
    /// dossiers' snapshots [default: 30]
    #[arg(long, env = "KEQING_LOG_KEEP_DAYS")]
    log_keep_days: Option<u32>,
}

impl ServeArgs {
    /// What flags and variables said, with the global --data and --store.
    fn given(
        &self,
        cli_data: Option<PathBuf>,
        cli_store: Option<String>,
    ) -> keqing_server::config::Settings {
        keqing_server::config::Settings {
            data: cli_data,
            store: cli_store,
            listen: self.listen.clone(),
            http: self.http.clone(),
            tls: self.tls,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            mtls: self.mtls,
            client_ca: self.client_ca.clone(),
            idle_minutes: self.idle_minutes,
            log_format: self.log_format,
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            silent_days: self.silent_days,
            log_keep_days: self.log_keep_days,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// 运行 Serve gRPC sync until SIGTERM / Ctrl-C
    Serve(ServeArgs),
    /// 配置 The settings in force (file < KEQING_… variables < flags)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// 证书 TLS certificates for `serve --tls`
    #[command(subcommand)]
    Tls(TlsCommand),
    /// 看板 Headquarters' web dashboard alone (people sign in with their
    /// accounts of `user add`); works whether or not `serve` runs
    Dashboard {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Sessions end after this many minutes without a request
        #[arg(long, default_value = "15", value_parser = keqing_host::sign_in::parse_idle_minutes)]
        idle_minutes: std::time::Duration,
    },
    /// 设备 Devices (enrolment tokens); works whether or not the server runs
    #[command(subcommand)]
    Device(DeviceCommand),
    /// 变更包 Bundles of offices whose line is down for weeks
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// 设备状况 Fleet health by office: each device's version, last push,
    /// pull and sync, what it has waiting and set aside; offices silent
    /// longer than silent-days, and devices older than this server, marked
    /// (as the serving processes last wrote it, every few seconds)
    Devices {
        /// Mark offices without a sync for this many days [default: the
        /// settings' silent-days, 2]
        #[arg(long)]
        silent_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// 报表 Reports from the server's store (brings the projections up to
    /// date first); works whether or not the server runs
    Report {
        #[command(subcommand)]
        scope: ReportScope,
    },
    /// 转档 Move a patient's dossier to another office (the patient moved
    /// province): the new office's devices receive it at their next sync,
    /// the old office's drop it once what they typed before is delivered;
    /// past records stay the old office's in reports. Audited
    Transfer {
        /// The dossier's id (as `keqing show` / the dashboard print it)
        #[arg(long)]
        dossier: String,
        /// The office it moves to (code or name: 44, 广东)
        #[arg(long)]
        to: String,
        /// Why (kept in the dossier and the audit log)
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// 删除档案 Erase a patient's dossier on request, in two steps: `erase
    /// --dossier ID --reason TEXT` shows what will go (masked) and keeps the
    /// request; `erase --dossier ID --confirm` erases it from the store and
    /// every device's copy as they sync. Reports keep the figures of days
    /// already reported, without the person. Backups made before still
    /// hold it: `restore --erasures` takes it out again
    Erase {
        #[arg(long)]
        dossier: String,
        /// Why (step one; kept in the tombstone and the audit log)
        #[arg(long, required_unless_present = "confirm")]
        reason: Option<String>,
        /// Step two: erase it now
        #[arg(long)]
        confirm: bool,
        /// The erasure ledger to append to (default DATA/erasures.jsonl):
        /// keep a copy with your backups
        #[arg(long)]
        ledger: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// 删除记录 Erasures made (tombstones: dossier, office, when, why; no
    /// content) and those asked for and not yet confirmed
    Erasures {
        #[arg(long)]
        json: bool,
    },
    /// 备份 Copy the store to a new file while the server keeps running
    /// (SQLite online backup), checked before it counts. A backup holds
    /// every dossier as it was, erased ones included: after a restore,
    /// `--erasures` re-applies the erasures made since
    Backup {
        /// The backup file to write (must not exist)
        #[arg(long)]
        out: PathBuf,
    },
    /// 恢复 Make --data DIR (new, empty) a store restored from a backup; the
    /// restored store starts a new epoch: devices start over from it and push
    /// again what it lost
    Restore {
        /// The backup file written by `backup`
        #[arg(long)]
        from: PathBuf,
        /// The erasure ledger (erasures.jsonl of the lost store's data
        /// directory, or the copy kept with the backups): every erasure in
        /// it is made again on the restored store
        #[arg(long)]
        erasures: Option<PathBuf>,
    },
    /// 审计 The audit log: device enrolment and revocation, merges, every
    /// headquarters read of personal details (append-only)
    Audit {
        /// How many of the newest lines
        #[arg(long, default_value_t = 200)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// 无法读取 Documents the projector could not read: the reports lack
    /// them (or hold an older state) until they read again, after a repair
    /// or an upgrade and `project --rebuild`
    Unreadable {
        /// One office's only
        #[arg(long, alias = "office")]
        province: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// 日志压缩 Compact the change log now (a serving process does it
    /// hourly): changes older than the horizon whose dossier's snapshot
    /// holds them are left to it; a device offline longer starts over from
    /// the snapshots. Then packs the snapshots an older release stored
    /// unpacked (this command only: it reads every snapshot)
    Compact {
        /// Keep this many days of log whole (0: compact up to now)
        /// [default: the settings' log-keep-days, 30]
        #[arg(long)]
        keep_days: Option<u32>,
        /// 回收空间 Then rewrite the store and give the freed space back to
        /// the file system (SQLite: VACUUM, then room left in the leaves of
        /// the tables a day inserts into; PostgreSQL: VACUUM FULL of the
        /// dossier tables). Pushes wait while it runs, minutes for
        /// a national store (on SQLite a push kept waiting past 30 s is
        /// refused and its device retries later), so run it in a quiet hour.
        /// SQLite builds the new copy in a temporary file in the data
        /// directory and writes it through the WAL: it needs free disk of
        /// twice the vacuumed store
        #[arg(long)]
        vacuum: bool,
        #[arg(long)]
        json: bool,
    },
    /// 投影 Bring the report projections up to date (--rebuild: from scratch)
    Project {
        /// Throw the projections away and derive them again from the log
        #[arg(long)]
        rebuild: bool,
        #[arg(long)]
        json: bool,
    },
    /// 目录 The catalogue every office picks from: information sources
    /// (with their channel kind and other names), products, diseases
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// 投放 Media spend by day, office and source (reports give cost per
    /// call, visitor and buyer from it)
    #[command(subcommand)]
    Spend(SpendCommand),
    /// 总部用户 Headquarters' people who sign in to the dashboard (analyst:
    /// the reports; admin: also the duplicate review and the read audit);
    /// works whether or not the server runs
    #[command(subcommand)]
    User(UserCommand),
    /// 读取审计 Who opened which dossier, exported what, at which office
    /// device (the devices report it when they sync; append-only)
    Reads {
        /// One office's only (e.g. 44)
        #[arg(long, alias = "province")]
        office: Option<String>,
        /// Only reads after this position (the `seq` of a line printed before)
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many lines
        #[arg(long, default_value_t = 500)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// 报表账号 A read-only database login for BI tools: the projection
    /// tables of docs/reporting-schema.md and nothing else (PostgreSQL;
    /// run again to change its password)
    ReportingRole {
        /// The login's name (lowercase letters, digits, _)
        #[arg(long)]
        name: String,
        /// Read its password (12+ characters) from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Take a device's bundle (`keqing bundle export`) with the checks of a
    /// push, and write its answer: what the office's devices lack, and
    /// which of its changes are stored or refused. Importing twice stores
    /// nothing more; a changed or foreign bundle is refused whole
    Import {
        /// The bundle the office sent
        file: PathBuf,
        /// Where to write the answer (the office imports it with `keqing
        /// bundle import`) [default: FILE.answer]
        #[arg(long)]
        answer: Option<PathBuf>,
        /// Write over an existing answer file
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the settings file and print every setting in force (secrets
    /// masked); give serve's flags to see their effect
    Check {
        #[command(flatten)]
        serve: ServeArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make a private CA and a server certificate in DIR/tls/ (offices enrol
    /// with `keqing enroll --ca DIR/tls/ca.pem`)
    Init {
        /// Host names and IP addresses offices use to reach the server
        /// (repeat: --name hq.example --name 10.0.0.5)
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ReportScope {
    /// 全国 National: one line per province and the total
    National(ReportArgs),
    /// 省 One province's office (--province 44)
    Province {
        #[arg(long, alias = "office")]
        province: String,
        #[command(flatten)]
        args: ReportArgs,
    },
    /// 办事处 One office (same as province: each province has one office)
    Office {
        #[arg(long, alias = "office")]
        province: String,
        #[command(flatten)]
        args: ReportArgs,
    },
}

#[derive(clap::Args)]
struct ReportArgs {
    /// First day (YYYY-MM-DD)
    #[arg(long)]
    from: String,
    /// Last day (YYYY-MM-DD), inclusive
    #[arg(long)]
    to: String,
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

/// A progress bar on stderr drawn by `template` (hidden when stderr is not
/// a terminal); its length is set as the work learns it.
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A progress bar for projector catch-up.
fn catch_up_bar() -> indicatif::ProgressBar {
    progress_bar("投影 projecting {bar:30} {pos}/{len} {per_sec}")
}

/// Which store a command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Make one if there is none (`serve`, `device add`).
    Create,
    /// It must exist: a mistyped `--data` is an error, not an empty store
    /// with empty answers.
    Existing,
}

/// Where the store is: `--store URL` or the SQLite file in `--data DIR`.
struct StorePlace {
    data: PathBuf,
    url: Option<String>,
}

impl StorePlace {
    fn open(&self, opening: Opening) -> Result<Arc<dyn Store>> {
        use keqing_server::store::PgStore;
        Ok(match (&self.url, opening) {
            (Some(url), _) if !keqing_server::store::postgres::is_postgres_url(url) => bail!(
                "--store takes a PostgreSQL URL (postgres://USER@HOST/DB); the SQLite store is --data DIR"
            ),
            (Some(url), Opening::Create) => Arc::new(PgStore::open(url)?),
            (Some(url), Opening::Existing) => Arc::new(PgStore::open_existing(url)?),
            (None, Opening::Create) => Arc::new(SqliteStore::open(&self.data)?),
            (None, Opening::Existing) => Arc::new(SqliteStore::open_existing(&self.data)?),
        })
    }

    /// For messages: the database, or the data directory.
    fn shown(&self) -> String {
        match &self.url {
            Some(url) => keqing_server::store::postgres::shown_url(url),
            None => self.data.display().to_string(),
        }
    }
}

/// Brings the projections up to date, showing progress.
fn catch_up_showing(session: &mut dyn keqing_server::store::Projections) -> Result<()> {
    let bar = catch_up_bar();
    keqing_server::projector::catch_up(session, |at, target| {
        bar.set_length(target);
        bar.set_position(at);
    })?;
    bar.finish_and_clear();
    Ok(())
}

fn report(store: &dyn Store, scope: Scope, args: ReportArgs) -> Result<()> {
    let from = keqing_shared::when::parse_date(&args.from)?;
    let to = keqing_shared::when::parse_date(&args.to)?;
    keqing_server::reports::check_request(&scope, from, to).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut session = store.projections()?;
    catch_up_showing(&mut *session)?;
    let r = keqing_server::reports::build_report(&mut *session, &scope, from, to)?;
    // The text report carries it under its title; JSON and files carry it
    // too, but whoever runs the export should see it now.
    let json_or_file = args.json || args.out.is_some();
    if let (Some(caveat), true) = (sheets::caveat(&r), json_or_file) {
        eprintln!("{caveat}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if let (Some(format), Some(out)) = (&args.format, &args.out) {
        let bytes = sheets::file(&r, sheets::FileFormat::parse(format)?)?;
        keqing_host::files::write_output(out, &bytes, args.force, STORE_FILES)?;
        println!("已导出 {} ({} 字节)", out.display(), bytes.len());
        return Ok(());
    }
    print!("{}", sheets::text(&r));
    Ok(())
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// The catalogue in force
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Import FILE.toml as the next version: checked whole (a fault is
    /// refused with its line, nothing written), then written into every
    /// office's copy, which their devices pull at their next sync
    Import {
        /// The catalogue file (TOML: [[source]] code, name, kind, aliases;
        /// [[product]] code, name, unit_price, days_per_unit; diseases)
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpendCommand {
    /// Import FILE.csv: date,office,source,amount (the day, the office's
    /// code, the catalogue source's code, yuan); checked whole (a fault is
    /// refused with its line, nothing stored); an amount already imported
    /// for the same day, office and source is replaced
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a person; the password comes from the first line of stdin
    Add {
        #[arg(long)]
        name: String,
        /// analyst (数据分析员) or admin (管理员)
        #[arg(long)]
        role: String,
        /// Read the password (8–128 characters) from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a person's password (from the first line of stdin)
    Password {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a person's role
    Role {
        #[arg(long)]
        name: String,
        /// analyst or admin
        #[arg(long)]
        role: String,
    },
    /// Close an account: it no longer signs in, its sessions end
    Disable {
        #[arg(long)]
        name: String,
    },
    /// Open a closed account again
    Enable {
        #[arg(long)]
        name: String,
    },
    /// List the accounts (never their password hashes)
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Add a device; prints its one-time enrolment token alone on the last line
    Add {
        /// Office code (e.g. 44); or --hq
        #[arg(long, required_unless_present = "hq", conflicts_with = "hq")]
        office: Option<String>,
        /// A headquarters device: reads every office
        #[arg(long)]
        hq: bool,
        #[arg(long)]
        name: String,
    },
    /// List devices
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device (by id or name): its next call is refused
    Revoke { device: String },
    /// Bind a client certificate to a device (mutual TLS): issues one with
    /// the CA of `tls init` into --out DIR, or binds an existing one
    /// (--bind FILE). From then on the device's token works only together
    /// with that certificate; a new binding replaces the old one.
    Cert {
        /// Device id or name
        device: String,
        /// Directory to write DEVICE.pem and DEVICE-key.pem into (made if missing)
        #[arg(long, required_unless_present = "bind", conflicts_with = "bind")]
        out: Option<PathBuf>,
        /// A certificate (PEM) made by the organisation's own CA
        #[arg(long)]
        bind: Option<PathBuf>,
    },
}

fn now() -> String {
    keqing_host::now_cst_text()
}

fn new_token() -> String {
    // 256 random bits, hex: two v4 UUIDs (from the OS's random source).
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What an export never writes over, whatever --force says.
const STORE_FILES: &[&str] = &[keqing_server::store::DB_FILE, "keqing.sqlite"];

fn main() -> std::process::ExitCode {
    keqing_host::files::private_umask();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // An error may quote stored text or what a device sent.
            eprintln!(
                "错误 error: {}",
                keqing_shared::printable::printable(&keqing_shared::printable::error_chain(
                    "",
                    e.as_ref()
                ))
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<()> {
    let config_path = cli.config.clone();
    let file = match &cli.config {
        Some(path) => keqing_server::config::Settings::read(path)?,
        None => keqing_server::config::Settings::default(),
    };
    let serve_args = match &cli.command {
        Command::Serve(a) | Command::Config(ConfigCommand::Check { serve: a, .. }) => a.clone(),
        _ => ServeArgs::default(),
    };
    let settings = serve_args
        .given(cli.data.take(), cli.store.take())
        .over(file)?;
    let data = StorePlace {
        data: settings.data.clone(),
        url: settings.store.clone(),
    };
    // What the commands below read of the global flags.
    let cli = ResolvedCli {
        data: settings.data.clone(),
        command: cli.command,
    };
    match cli.command {
        Command::Config(ConfigCommand::Check { json, .. }) => {
            let lines = settings.lines();
            if json {
                let map: serde_json::Map<String, serde_json::Value> = lines
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            } else {
                println!(
                    "# 配置有效 settings in force (file < KEQING_… variables < flags){}",
                    match &config_path {
                        Some(f) => format!("; file {}", f.display()),
                        None => String::new(),
                    }
                );
                for ((k, v), key) in lines.into_iter().zip(keqing_server::config::KEYS) {
                    println!("{k} = {v:?}    # {} ({})", key.env, key.help);
                }
            }
            Ok(())
        }
        Command::Serve(_) => {
            let keqing_server::config::Effective {
                listen,
                http,
                tls,
                tls_cert,
                tls_key,
                mtls,
                client_ca,
                idle_minutes,
                log_format,
                requests_per_second,
                request_burst,
                ..
            } = settings.clone();
            let idle_minutes = std::time::Duration::from_secs(idle_minutes * 60);
            init_logging(log_format);
            let store = data.open(Opening::Create)?;
            let paths = keqing_server::tls::TlsPaths::in_data(&cli.data);
            let client_ca = match client_ca {
                Some(ca) => Some(ca),
                None if mtls => Some(paths.ca_cert.clone()),
                None => None,
            };
            let (cert_pem, key_pem) = match (&tls_cert, &tls_key) {
                (Some(c), Some(k)) => (c.clone(), k.clone()),
                _ => (paths.cert.clone(), paths.key.clone()),
            };
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(keqing_server::tls::server_config(
                    &cert,
                    &key,
                    client_ca.as_deref(),
                )?),
                _ if tls => Some(
                    keqing_server::tls::server_config(
                        &paths.cert,
                        &paths.key,
                        client_ca.as_deref(),
                    )
                    .context("no certificates: run `keqing-server tls init --name HOST` first")?,
                ),
                _ if client_ca.is_some() => {
                    bail!("mutual TLS needs TLS: add --tls (or --tls-cert and --tls-key)")
                }
                _ => None,
            };
            let access = keqing_server::hub::Access {
                require_certificates: tls.as_ref().is_some_and(|t| t.require_client_certificates),
            };
            let scheme = match &tls {
                Some(t) if t.require_client_certificates => "https, mutual TLS",
                Some(_) => "https",
                None => "http",
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                // Before anyone can know the server is up: from then on a
                // SIGTERM stops it cleanly.
                let signal = keqing_host::shutdown_signal();
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                tracing::info!(%addr, store = store.backend(), at = %data.shown(), "keqing-server serving");
                // For scripts and tests that listen on port 0.
                println!("keqing-server listening on {addr}");
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    signal.await;
                    let _ = stop.send(true);
                });
                let dashboard = match http {
                    Some(http) => {
                        // Under mutual TLS the dashboard wants a device's
                        // certificate too: it is served over TLS with the
                        // same client CA.
                        let tls = match (&client_ca, access.require_certificates) {
                            (Some(ca), true) => Some(keqing_server::tls::dashboard_config(
                                &cert_pem, &key_pem, ca,
                            )?),
                            _ => None,
                        };
                        let listener = bind_dashboard(&http, tls.is_some()).await?;
                        Some(tokio::spawn(keqing_server::dashboard::serve(
                            store.clone(),
                            listener,
                            keqing_server::dashboard::DashboardOptions {
                                access,
                                tls,
                                idle: Some(idle_minutes),
                                erasure_ledger: Some(
                                    cli.data.join(keqing_server::lifecycle::LEDGER_FILE),
                                ),
                                metrics: keqing_server::fleet::metrics_handle(),
                                silent_days: settings.silent_days,
                            },
                            until(stopped.clone()),
                        )))
                    }
                    None => None,
                };
                tracing::info!(scheme, "sync transport");
                keqing_server::run_configured(
                    listener,
                    store,
                    tls,
                    keqing_server::RunOptions {
                        requests_per_second,
                        request_burst,
                        log_keep_days: settings.log_keep_days,
                    },
                    until(stopped),
                )
                .await?;
                if let Some(d) = dashboard {
                    d.await??;
                }
                tracing::info!("keqing-server stopped");
                Ok(())
            })
        }
        Command::Dashboard {
            listen,
            idle_minutes,
        } => {
            init_logging(settings.log_format);
            let store = data.open(Opening::Existing)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let signal = keqing_host::shutdown_signal();
                let listener = bind_dashboard(&listen, false).await?;
                keqing_server::dashboard::serve(
                    store,
                    listener,
                    keqing_server::dashboard::DashboardOptions {
                        idle: Some(idle_minutes),
                        erasure_ledger: Some(cli.data.join(keqing_server::lifecycle::LEDGER_FILE)),
                        silent_days: settings.silent_days,
                        ..Default::default()
                    },
                    signal,
                )
                .await
            })
        }
        Command::Device(DeviceCommand::Add { office, hq, name }) => {
            let office = match (office, hq) {
                (Some(o), false) => Some(keqing_shared::office::office(&o)?.code.to_string()),
                _ => None,
            };
            let name = keqing_shared::staff::validate_name("name", &name)?;
            let store = data.open(Opening::Create)?;
            let token = new_token();
            let id = uuid::Uuid::now_v7().to_string();
            let d = store.add_device(
                &id,
                &name,
                office.as_deref(),
                &token_hash(&token),
                &now(),
                &local_admin(),
            )?;
            println!(
                "已添加设备 {} ({}) id {}",
                d.name,
                d.office
                    .as_deref()
                    .map(|o| format!("办事处 {o}"))
                    .unwrap_or_else(|| "总部".into()),
                d.id
            );
            println!("注册令牌只显示一次 the enrolment token is shown once:");
            println!("{token}");
            Ok(())
        }
        Command::Device(DeviceCommand::List { json }) => {
            let store = data.open(Opening::Existing)?;
            let devices = store.devices()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
                return Ok(());
            }
            println!(
                "{:<38} {:<12} {:<6} {:<6} {:<6} 状态",
                "设备ID", "名称", "办事处", "已注册", "证书"
            );
            for d in devices {
                println!(
                    "{:<38} {:<12} {:<6} {:<6} {:<6} {}",
                    d.id,
                    d.name,
                    d.office.as_deref().unwrap_or("总部"),
                    if d.actor.is_some() { "是" } else { "否" },
                    if d.cert_sha256.is_some() {
                        "已绑定"
                    } else {
                        "-"
                    },
                    d.revoked_at
                        .map(|t| format!("已吊销 {t}"))
                        .unwrap_or_else(|| "有效".into())
                );
            }
            Ok(())
        }
        Command::Report { scope } => {
            let store = data.open(Opening::Existing)?;
            match scope {
                ReportScope::National(args) => report(&*store, Scope::National, args),
                ReportScope::Province { province, args }
                | ReportScope::Office { province, args } => {
                    let code = keqing_shared::office::office(&province)?.code.to_string();
                    report(&*store, Scope::Office(code), args)
                }
            }
        }
        Command::Unreadable { province, json } => {
            let office = province
                .map(|p| keqing_shared::office::office(&p).map(|o| o.code.to_string()))
                .transpose()?;
            let store = data.open(Opening::Existing)?;
            let mut session = store.projections()?;
            catch_up_showing(&mut *session)?;
            let docs = session.unreadable_documents(office.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&docs)?);
                return Ok(());
            }
            if docs.is_empty() {
                println!("没有无法读取的档案 every document reads; the reports lack nothing");
                return Ok(());
            }
            let mut t =
                keqing_shared::table::Table::new(["文档", "办事处", "日志位置", "首次", "原因"]);
            for d in &docs {
                t.row([
                    d.doc_id.clone(),
                    d.office.clone(),
                    d.seq.to_string(),
                    d.since.clone(),
                    d.reason.clone(),
                ]);
            }
            print!("{}", t.render());
            println!(
                "{} 份无法读取 unreadable: the reports lack them",
                docs.len()
            );
            Ok(())
        }
        Command::ReportingRole {
            name,
            password_stdin,
        } => {
            if !password_stdin {
                bail!("give the login's password on stdin: --password-stdin");
            }
            let password = password_from_stdin()?;
            let store = data.open(Opening::Existing)?;
            store.grant_reporting_role(&name, &password, &local_admin())?;
            println!(
                "报表账号 {name} 可读取投影表 reads the projection tables of docs/reporting-schema.md, read-only, on {}",
                data.shown()
            );
            Ok(())
        }
        Command::Compact {
            keep_days,
            vacuum,
            json,
        } => {
            let store = data.open(Opening::Existing)?;
            let keep_days = keep_days.unwrap_or(settings.log_keep_days);
            let bar = progress_bar("压缩 compacting {bar:30} {pos}/{len}");
            let started = std::time::Instant::now();
            let done = keqing_server::compaction::compact(
                &*store,
                keqing_host::now_cst(),
                keep_days,
                &mut |at, target| {
                    bar.set_length(target);
                    bar.set_position(at);
                },
            )?;
            bar.finish_and_clear();
            let compacted_in = started.elapsed();
            let bar = progress_bar("重新打包快照 repacking {bar:30} {pos}/{len}");
            let repacked = keqing_server::compaction::repack(
                &*store,
                keqing_server::compaction::DOCUMENTS_PER_REPACK_STEP,
                &mut |at, total| {
                    bar.set_length(total);
                    bar.set_position(at);
                },
            )?;
            bar.finish_and_clear();
            let vacuumed = if vacuum {
                let spinner = indicatif::ProgressBar::new_spinner()
                    .with_message("回收空间 vacuuming (pushes wait)…");
                spinner.enable_steady_tick(std::time::Duration::from_millis(200));
                let vacuumed = keqing_server::compaction::vacuum(&*store);
                spinner.finish_and_clear();
                Some(vacuumed?)
            } else {
                None
            };
            if json {
                #[derive(serde::Serialize)]
                struct Answer {
                    #[serde(flatten)]
                    log: keqing_server::compaction::Compaction,
                    repacked: keqing_server::compaction::Repacking,
                    vacuumed: Option<keqing_server::compaction::Vacuumed>,
                }
                let answer = Answer {
                    log: done,
                    repacked,
                    vacuumed,
                };
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                println!(
                    "日志已压缩至位置 {} (保留 {keep_days} 天): {} 条变更留给档案快照, 共 {:.1} MB, 用时 {:.1}s",
                    done.floor,
                    done.changes,
                    done.bytes as f64 / 1e6,
                    compacted_in.as_secs_f64()
                );
                if repacked.documents > 0 {
                    println!(
                        "旧版存储的快照已压缩 repacked: {} 份, {:.1} MB → {:.1} MB",
                        repacked.documents,
                        repacked.bytes_before as f64 / 1e6,
                        repacked.bytes_after as f64 / 1e6
                    );
                }
                if let Some(v) = vacuumed {
                    println!(
                        "存储已重写 vacuumed: {:.1} MB → {:.1} MB, 用时 {:.1}s",
                        v.bytes_before as f64 / 1e6,
                        v.bytes_after as f64 / 1e6,
                        v.seconds
                    );
                }
            }
            Ok(())
        }
        Command::Project { rebuild, json } => {
            let store = data.open(Opening::Existing)?;
            let mut session = store.projections()?;
            let bar = catch_up_bar();
            let progress = |at, target| {
                bar.set_length(target);
                bar.set_position(at);
            };
            let started = std::time::Instant::now();
            let done = if rebuild {
                keqing_server::projector::rebuild(&mut *session, progress)?
            } else {
                keqing_server::projector::catch_up(&mut *session, progress)?
            };
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                println!(
                    "已投影 {} 个文档 (跳过 {}), 日志位置 {}, 用时 {:.1}s",
                    done.documents,
                    done.skipped,
                    done.cursor,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        Command::Backup { out } => {
            let store = data.open(Opening::Existing)?;
            let started = std::time::Instant::now();
            let bar = indicatif::ProgressBar::new(0);
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            store.backup_to(&out, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            store.audit(
                &local_admin(),
                "store.backup",
                &out.display().to_string(),
                "",
            )?;
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let counts = store.counts()?;
            eprintln!(
                "注意 note: the backup holds every dossier as it is now; erasures made later are in \
                 the erasure ledger ({}): restore with --erasures to make them again",
                cli.data
                    .join(keqing_server::lifecycle::LEDGER_FILE)
                    .display()
            );
            println!(
                "已备份 backed up {} changes, {} documents → {} ({:.1} MB, integrity ok, {:.1} s)",
                counts.changes,
                counts.documents,
                out.display(),
                bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Restore { from, erasures } => {
            if data.url.is_some() {
                bail!(
                    "restore works on the SQLite store; restore a PostgreSQL store with its own tools (pg_restore)"
                );
            }
            // Read first: a ledger that does not read leaves no store behind.
            let ledger = erasures
                .as_deref()
                .map(keqing_server::lifecycle::read_ledger)
                .transpose()?;
            let store = SqliteStore::restore(&cli.data, &from, &local_admin())?;
            match &ledger {
                Some(lines) => {
                    let n = keqing_server::lifecycle::reapply_erasures(&store, lines)?;
                    println!(
                        "已重做删除 {n} of the ledger's {} erasures were in the backup and are erased again",
                        lines.len()
                    );
                }
                None => eprintln!(
                    "注意 note: erasures made after this backup are in it again; restore with --erasures LEDGER to take them out"
                ),
            }
            let counts = store.counts()?;
            println!(
                "已恢复 restored {} changes, {} documents into {} (new epoch {}); start the server on it",
                counts.changes,
                counts.documents,
                cli.data.display(),
                store.epoch()?
            );
            Ok(())
        }
        Command::Tls(TlsCommand::Init { names }) => {
            let p = keqing_server::tls::init(&cli.data, &names)?;
            println!(
                "已生成证书 CA {} ; server certificate {} for {}",
                p.ca_cert.display(),
                p.cert.display(),
                names.join(", ")
            );
            println!(
                "  serve:  keqing-server --data {} serve --tls --listen 0.0.0.0:7600",
                cli.data.display()
            );
            println!(
                "  offices: keqing enroll --server https://{}:7600 --token TOKEN --ca ca.pem",
                names[0]
            );
            // The CA certificate's path alone on the last line, for scripts.
            println!("{}", p.ca_cert.display());
            Ok(())
        }
        Command::Audit { limit, json } => {
            let store = data.open(Opening::Existing)?;
            let log = store.audit_log(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
                return Ok(());
            }
            let mut t = keqing_shared::table::Table::new([
                "序号",
                "时间",
                "操作者",
                "操作",
                "对象",
                "详情",
            ]);
            for e in &log {
                t.row([
                    e.seq.to_string(),
                    e.at.clone(),
                    e.actor.clone(),
                    e.action.clone(),
                    e.subject.clone(),
                    e.detail.clone(),
                ]);
            }
            print!("{}", t.render());
            println!("共 {} 条", log.len());
            Ok(())
        }
        Command::Device(DeviceCommand::Cert { device, out, bind }) => {
            let store = data.open(Opening::Existing)?;
            let target = store.device_named(&device)?;
            let sha256 = match (out, bind) {
                (_, Some(file)) => keqing_server::tls::certificate_sha256(&file)?,
                (Some(dir), None) => {
                    let issued = keqing_server::tls::issue_device_certificate(
                        &cli.data,
                        &target.name,
                        &target.id,
                    )?;
                    keqing_host::files::private_dir(&dir)
                        .with_context(|| format!("cannot make {}", dir.display()))?;
                    let cert = dir.join(format!("{}.pem", target.name));
                    let key = dir.join(format!("{}-key.pem", target.name));
                    keqing_server::tls::write_new(&cert, &issued.cert_pem, false)?;
                    keqing_server::tls::write_new(&key, &issued.key_pem, true)?;
                    println!("证书 certificate: {}", cert.display());
                    println!("私钥 key:         {}", key.display());
                    println!(
                        "  on the device: keqing enroll --server https://… --token T --ca ca.pem --cert {} --key {}",
                        cert.display(),
                        key.display()
                    );
                    issued.sha256
                }
                (None, None) => bail!("give --out DIR or --bind FILE"),
            };
            let d = store.bind_certificate(&target.id, &sha256, &local_admin())?;
            let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
            println!("已绑定证书 device {} {} ← sha256 {hex}", d.name, d.id);
            Ok(())
        }
        Command::User(command) => user(&data, command),
        Command::Catalog(CatalogCommand::Import { file }) => {
            let text = read_text(&file)?;
            let store = data.open(Opening::Create)?;
            let c = keqing_server::catalog::import(&*store, &text, &local_admin())?;
            println!(
                "已导入目录第 {} 版 catalogue version {}: {} 个信息来源, {} 种产品, {} 种疾病, {} 个活动 ({}); 各办事处下次同步时收到",
                c.version,
                c.version,
                c.sources.len(),
                c.products.len(),
                c.diseases.len(),
                c.activities.len(),
                c.activities
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Spend(SpendCommand::Import { file }) => {
            let text = read_text(&file)?;
            let store = data.open(Opening::Existing)?;
            let done = keqing_server::catalog::import_spend(&*store, &text, &local_admin())
                .with_context(|| format!("{} refused, nothing stored", file.display()))?;
            println!(
                "已导入投放 {} 行 ({} 行新增, {} 行替换), 共 {} 元",
                done.rows,
                done.new,
                done.rows - done.new,
                keqing_shared::records::fmt_yuan(done.total_fen)
            );
            Ok(())
        }
        Command::Bundle(BundleCommand::Import {
            file,
            answer,
            force,
            json,
        }) => {
            let bytes = keqing_host::files::read_at_most(
                &file,
                keqing_shared::bundle::MAX_BUNDLE_BYTES as u64,
            )?;
            let store = data.open(Opening::Existing)?;
            let (done, answer_bytes) =
                keqing_server::bundle::import(&*store, &bytes, &local_admin())
                    .with_context(|| format!("{} refused", file.display()))?;
            let answer = answer.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".answer");
                PathBuf::from(name)
            });
            keqing_host::files::write_output(&answer, &answer_bytes, force, STORE_FILES)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "已导入变更包 device {} ({}), office {}: {} changes, {} new, {} already stored, {} refused; answer {} ({} snapshots, {} changes{})",
                    done.device_name,
                    done.device,
                    keqing_shared::office::label(&done.office),
                    done.changes,
                    done.new,
                    done.duplicates,
                    done.refused,
                    answer.display(),
                    done.answer_snapshots,
                    done.answer_changes,
                    if done.complete {
                        ""
                    } else {
                        "; more with the next bundle"
                    }
                );
            }
            Ok(())
        }
        Command::Devices { silent_days, json } => {
            let store = data.open(Opening::Existing)?;
            let report = keqing_server::fleet::report(
                &store.devices()?,
                &store.device_health()?,
                keqing_host::now_cst(),
                silent_days.unwrap_or(settings.silent_days),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            print_fleet(&report);
            Ok(())
        }
        Command::Transfer {
            dossier,
            to,
            reason,
            json,
        } => {
            let store = data.open(Opening::Existing)?;
            let t = keqing_server::lifecycle::transfer(
                &*store,
                &dossier,
                &to,
                &reason,
                &local_admin(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "已转档 dossier {} moved from {} to {} at {}; both offices' devices learn of it at their next sync",
                    t.dossier,
                    keqing_shared::office::label(&t.from),
                    keqing_shared::office::label(&t.to),
                    t.at
                );
            }
            Ok(())
        }
        Command::Erase {
            dossier,
            reason,
            confirm,
            ledger,
            json,
        } => {
            let store = data.open(Opening::Existing)?;
            if !confirm {
                let reason = reason.unwrap_or_default();
                let p = keqing_server::lifecycle::request_erasure(
                    &*store,
                    &dossier,
                    &reason,
                    &local_admin(),
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&p)?);
                } else {
                    println!(
                        "将删除 will erase dossier {} of {} (made {}; {} {}; {} records) because: {}\n确认 confirm with: keqing-server erase --dossier {} --confirm",
                        p.dossier,
                        keqing_shared::office::label(&p.office),
                        p.created_at,
                        p.name,
                        p.phones.join(" "),
                        p.records,
                        p.reason,
                        p.dossier
                    );
                    if !p.duplicates.is_empty() {
                        println!(
                            "合并到它的重复档案也将删除 merged into it, erased with it: {}",
                            p.duplicates.join(" ")
                        );
                    }
                }
                return Ok(());
            }
            let ledger =
                ledger.unwrap_or_else(|| cli.data.join(keqing_server::lifecycle::LEDGER_FILE));
            eprintln!("删除中 erasing and scrubbing the store (blocks pushes while it runs)…");
            let done = keqing_server::lifecycle::confirm_erasure(
                &*store,
                &dossier,
                &local_admin(),
                &ledger,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "已删除 erased dossier {} of {} at {} ({} changes); tombstone kept, ledger {}; devices drop it at their next sync",
                    done.dossier,
                    keqing_shared::office::label(&done.office),
                    done.at,
                    done.changes_removed,
                    ledger.display()
                );
                if !done.duplicates.is_empty() {
                    println!(
                        "连同合并的重复档案 with the duplicates merged into it: {}",
                        done.duplicates.join(" ")
                    );
                }
            }
            if let Some(e) = done.scrub_error {
                bail!(
                    "清理未完成 the erasure stands, but the store's files were not scrubbed: {e}"
                );
            }
            Ok(())
        }
        Command::Erasures { json } => {
            let store = data.open(Opening::Existing)?;
            let done = store.tombstones()?;
            let asked = store.erasure_requests()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "erased": done,
                        "requested": asked,
                    }))?
                );
                return Ok(());
            }
            println!("已删除 erased: {}", done.len());
            for t in &done {
                println!(
                    "  {}  {}  {}  {}  {}",
                    t.at,
                    t.doc_id,
                    keqing_shared::office::label(&t.from_office),
                    t.by,
                    t.reason
                );
            }
            println!("待确认 asked for, not confirmed: {}", asked.len());
            for r in &asked {
                println!("  {}  {}  {}  {}", r.at, r.doc_id, r.by, r.reason);
            }
            Ok(())
        }
        Command::Catalog(CatalogCommand::Show { json }) => {
            let store = data.open(Opening::Existing)?;
            let catalog = keqing_server::catalog::current(&*store.reader()?)?;
            print_catalog(catalog.as_ref(), json)
        }
        Command::Reads {
            office,
            after,
            limit,
            json,
        } => {
            let office = office
                .map(|o| keqing_shared::office::office(&o).map(|o| o.code.to_string()))
                .transpose()?;
            let store = data.open(Opening::Existing)?;
            let reads = store.office_reads(office.as_deref(), after, limit.min(100_000))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reads)?);
                return Ok(());
            }
            println!("序号\t时间\t办事处\t设备\t人员\t操作\t对象");
            for r in &reads {
                let r2 = &r.read;
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.seq, r2.at, r2.office, r2.device_name, r2.who, r2.action, r2.target
                );
            }
            if reads.is_empty() {
                println!("（无 none）");
            }
            Ok(())
        }
        Command::Device(DeviceCommand::Revoke { device }) => {
            let store = data.open(Opening::Existing)?;
            let d = store.revoke(&device, &now(), &local_admin())?;
            println!("已吊销设备 {} {}", d.name, d.id);
            Ok(())
        }
    }
}

/// A file an import reads: UTF-8 text, at most 32 MiB (the parsers bound
/// what they take; this bounds what is read first).
fn read_text(file: &std::path::Path) -> Result<String> {
    // An import takes at most this.
    const MOST: u64 = 32 << 20;
    let bytes = keqing_host::files::read_at_most(file, MOST)?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", file.display()))
}

fn print_catalog(catalog: Option<&keqing_shared::catalog::Catalog>, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    let Some(c) = catalog else {
        println!("还没有目录 no catalogue yet (keqing-server catalog import FILE.toml)");
        return Ok(());
    };
    print!("{}", keqing_shared::catalog::text(c));
    Ok(())
}

fn password_from_stdin() -> Result<String> {
    keqing_host::passwords::password_line(std::io::stdin().lock())
        .context("reading the password from stdin")?
        .context(
            "no password on stdin (e.g. `echo '…' | keqing-server user add … --password-stdin`)",
        )
}

/// `keqing-server user …`: headquarters' accounts.
fn user(data: &StorePlace, command: UserCommand) -> Result<()> {
    use keqing_server::store::{HqUser, UserChange};
    use keqing_shared::staff::{HqRole, validate_name};
    let store = data.open(Opening::Create)?;
    let changed = match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            let name = validate_name("name", &name)?;
            let role = HqRole::parse(&role)?;
            if !password_stdin {
                bail!("give the password on stdin: --password-stdin");
            }
            let password_hash = keqing_host::passwords::hash_password(&password_from_stdin()?)?;
            store.add_user(
                &HqUser {
                    name: name.clone(),
                    role,
                    password_hash,
                    created_at: now(),
                    disabled_at: None,
                },
                &local_admin(),
            )?;
            println!("已添加用户 {name} ({})", role.chinese());
            return Ok(());
        }
        UserCommand::Password {
            name,
            password_stdin,
        } => {
            if !password_stdin {
                bail!("give the password on stdin: --password-stdin");
            }
            let hash = keqing_host::passwords::hash_password(&password_from_stdin()?)?;
            store.change_user(name.trim(), &UserChange::Password(hash), &local_admin())?
        }
        UserCommand::Role { name, role } => store.change_user(
            name.trim(),
            &UserChange::Role(HqRole::parse(&role)?),
            &local_admin(),
        )?,
        UserCommand::Disable { name } => {
            store.change_user(name.trim(), &UserChange::Disabled(true), &local_admin())?
        }
        UserCommand::Enable { name } => {
            store.change_user(name.trim(), &UserChange::Disabled(false), &local_admin())?
        }
        UserCommand::List { json } => {
            let users = store.users()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(());
            }
            println!("姓名\t角色\t创建\t状态");
            for u in users {
                println!(
                    "{}\t{}\t{}\t{}",
                    u.name,
                    u.role.chinese(),
                    u.created_at,
                    u.disabled_at
                        .map(|t| format!("已停用 {t}"))
                        .unwrap_or_else(|| "有效".into())
                );
            }
            return Ok(());
        }
    };
    println!(
        "已更新用户 {} ({}{})",
        changed.name,
        changed.role.chinese(),
        if changed.disabled_at.is_some() {
            ", 已停用"
        } else {
            ""
        }
    );
    Ok(())
}

fn init_logging(format: keqing_server::config::LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        // One object per line: timestamp, level, target, fields.
        keqing_server::config::LogFormat::Json => builder.json().init(),
        keqing_server::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The command line once the settings are decided: the data directory in
/// force, and the command.
struct ResolvedCli {
    data: PathBuf,
    command: Command,
}

/// Binds the dashboard's address and prints its URL alone on a line.
async fn bind_dashboard(addr: &str, tls: bool) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, tls, "dashboard serving");
    let scheme = if tls { "https" } else { "http" };
    println!("keqing-server dashboard on {scheme}://{local}/");
    Ok(listener)
}

/// Completes when `stopped` turns true (or its sender is gone).
async fn until(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// The fleet report as a table, by office (`keqing-server devices`).
fn print_fleet(r: &keqing_server::fleet::FleetReport) {
    let silent = r.offices.iter().filter(|o| o.silent).count();
    println!(
        "设备状况 fleet at {} (server {}): {} offices, {} silent for more than {} days",
        r.at,
        r.server_version,
        r.offices.len(),
        silent,
        r.silent_days
    );
    let mut t = keqing_shared::table::Table::new([
        "办事处",
        "设备",
        "版本",
        "待推送",
        "搁置",
        "最近推送",
        "最近拉取",
        "最近同步",
        "标记",
    ]);
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let count = |v: Option<u64>| v.map_or_else(|| "—".into(), |n| n.to_string());
    for o in &r.offices {
        for (i, d) in o.devices.iter().enumerate() {
            let mut marks = Vec::new();
            if i == 0 && o.silent {
                marks.push(format!("办事处沉默 silent > {} d", r.silent_days));
            }
            if d.old_version {
                marks.push("旧版本 old version".into());
            }
            if d.revoked {
                marks.push("已吊销 revoked".into());
            }
            t.row([
                if i == 0 {
                    format!("{} {}", o.office, o.name)
                } else {
                    String::new()
                },
                keqing_shared::printable::printable(&d.name).into_owned(),
                or_dash(&d.version),
                count(d.outbox),
                count(d.quarantined),
                or_dash(&d.last_push),
                or_dash(&d.last_pull),
                or_dash(&d.last_sync),
                marks.join("; "),
            ]);
        }
    }
    print!("{}", t.render());
}

/// Who ran an administrative command on this machine, for the audit log:
/// the OS account from the process's uid (`$USER` can be set to anything).
fn local_admin() -> String {
    format!("admin:{}", keqing_host::os_account())
}
