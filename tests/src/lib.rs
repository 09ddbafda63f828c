//! Helpers shared by the end-to-end tests: the real binaries, run as
//! processes on real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory holding the workspace's binaries, built fresh once per
/// test run with the same profile as the tests (a test crate cannot depend
/// on another package's binaries, so it asks cargo to build them).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test-binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "keqing",
            "-p",
            "keqing-server",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    })
}

pub fn keqing_bin() -> PathBuf {
    bin_dir().join("keqing")
}

/// One office replica driven through the real `keqing` binary.
pub struct Office {
    pub dir: PathBuf,
    /// The passphrase given as KEQING_DB_KEY (`None`: the variable unset).
    pub key: Option<String>,
    /// Where its processes' clock starts (KEQING_CLOCK_START; `None`: the
    /// real clock).
    pub clock: Option<String>,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The last line of stdout (where commands print the id they made).
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Office {
    pub fn new(dir: impl Into<PathBuf>) -> Office {
        Office {
            dir: dir.into(),
            key: None,
            clock: None,
        }
    }

    /// This office with its processes' clock starting at `start`
    /// (`YYYY-MM-DDTHH:MM`): "today" is the same for every process of the
    /// test, whenever it runs.
    pub fn with_clock(mut self, start: &str) -> Office {
        self.clock = Some(start.to_string());
        self
    }

    /// An office whose commands get `key` in KEQING_DB_KEY.
    pub fn with_key(dir: impl Into<PathBuf>, key: &str) -> Office {
        Office {
            dir: dir.into(),
            key: Some(key.to_string()),
            clock: None,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(keqing_bin());
        cmd.arg("--data").arg(&self.dir).env_remove("KEQING_DATA");
        match &self.key {
            Some(k) => cmd.env("KEQING_DB_KEY", k),
            None => cmd.env_remove("KEQING_DB_KEY"),
        };
        match &self.clock {
            Some(c) => cmd.env(keqing_host::CLOCK_START_ENV, c),
            None => cmd.env_remove(keqing_host::CLOCK_START_ENV),
        };
        cmd
    }

    /// Runs `keqing --data DIR args…`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// Runs `keqing --data DIR args…` with more environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = self
            .command()
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run keqing");
        Run::from(out)
    }

    /// Runs `keqing --data DIR args…` with `input` on its standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        run_with_input(cmd, input)
    }

    /// Adds a staff member with a password (`staff add … --password-stdin`).
    pub fn add_staff_with_password(&self, name: &str, role: &str, password: &str) {
        let r = self.run_with_stdin(
            &[
                "staff",
                "add",
                "--name",
                name,
                "--role",
                role,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        );
        assert!(r.ok, "staff add {name}: {}", r.stderr);
    }

    /// Starts `keqing --data DIR args…` in the background, output discarded
    /// (for tests that kill it mid-way).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start keqing")
    }

    /// [`Office::spawn`] marking the process's open write transactions in
    /// `marker` (see [`kill_in_write`]).
    pub fn spawn_marked(&self, args: &[&str], marker: &Path) -> std::process::Child {
        self.command()
            .args(args)
            .env(keqing_host::write_marker::WRITE_MARKER_ENV, marker)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start keqing")
    }

    /// Adds a device for `office` (`None`: headquarters) on `server` and
    /// enrolls this replica with its token.
    pub fn enroll_on(&self, server: &Server, office: Option<&str>, name: &str) -> Run {
        self.enroll_with(&[server], office, name)
    }

    /// [`Office::enroll_on`] with the addresses of several processes of
    /// one store, tried in this order.
    pub fn enroll_with(&self, servers: &[&Server], office: Option<&str>, name: &str) -> Run {
        let token = servers[0].add_device(office, name);
        let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
        self.ok(&["enroll", "--server", &urls.join(","), "--token", &token])
    }

    /// Starts the office workstation (`keqing ui`) on a free loopback port,
    /// no background sync, with this office's passphrase if it has one.
    pub fn workstation(&self) -> WebProcess {
        self.workstation_with(&[])
    }

    /// [`Office::workstation`] with more options of `keqing ui`.
    pub fn workstation_with(&self, options: &[&str]) -> WebProcess {
        let dir = self.dir.to_string_lossy();
        let mut args = vec![
            "--data",
            dir.as_ref(),
            "ui",
            "--listen",
            "127.0.0.1:0",
            "--sync-every",
            "0",
        ];
        args.extend_from_slice(options);
        let mut env = Vec::new();
        if let Some(k) = &self.key {
            env.push(("KEQING_DB_KEY", k.as_str()));
        }
        if let Some(c) = &self.clock {
            env.push((keqing_host::CLOCK_START_ENV, c.as_str()));
        }
        WebProcess::start_with_env(&keqing_bin(), &args, &env)
    }

    /// Every document's automerge heads (`keqing heads --json`), to compare
    /// replicas.
    pub fn heads(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        serde_json::from_value(self.ok(&["heads", "--json"]).json()).expect("heads by document")
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(r.ok, "keqing {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r
    }

    /// Registers a TV viewer's call (`keqing call`) taken by `staff` at
    /// `at`; returns the dossier id (the last line).
    /// A call from `phone` added to dossier `patient` (`keqing call
    /// --patient`), at `at` or now; returns the dossier's id.
    pub fn call_into(
        &self,
        patient: &str,
        (phone, name): (&str, &str),
        staff: &str,
        at: Option<&str>,
    ) -> String {
        let mut args = vec![
            "call",
            "--patient",
            patient,
            "--phone",
            phone,
            "--name",
            name,
            "--source",
            "电视",
            "--staff",
            staff,
        ];
        args.extend(at.map(|at| ["--at", at]).into_iter().flatten());
        self.ok(&args).last_line().to_string()
    }

    pub fn call(&self, phone: &str, name: &str, staff: &str, at: &str) -> String {
        self.ok(&[
            "call", "--phone", phone, "--name", name, "--source", "电视", "--staff", staff, "--at",
            at,
        ])
        .last_line()
        .to_string()
    }
}

/// Runs `cmd` to its end with `input` on its standard input.
fn run_with_input(mut cmd: Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    Run::from(child.wait_with_output().expect("run the command"))
}

pub fn server_bin() -> PathBuf {
    bin_dir().join("keqing-server")
}

/// A real `keqing-server` process on loopback, killed when dropped.
pub struct Server {
    pub dir: PathBuf,
    pub addr: String,
    /// The dashboard's URL, when it was started with `--http`.
    pub dashboard: Option<String>,
    /// The PostgreSQL store it serves (`--store`), if not SQLite in `dir`.
    pub store: Option<String>,
    child: std::process::Child,
}

/// How [`Server::spawn`] starts a server, beyond its directory and address.
#[derive(Default)]
struct Launch<'a> {
    /// More `serve` options (e.g. `--tls`).
    options: &'a [&'a str],
    /// Log at `info` into this file.
    log: Option<&'a Path>,
    /// A PostgreSQL store instead of SQLite in the directory.
    store: Option<&'a str>,
    /// Mark open write transactions in this file.
    marker: Option<&'a Path>,
}

impl Server {
    /// Starts a server on `listen` (e.g. `127.0.0.1:0`) over `dir`.
    pub fn start(dir: impl Into<PathBuf>, listen: &str) -> Server {
        Server::start_with(dir, listen, &[])
    }

    /// [`Server::start`] with more `serve` options (e.g. `--tls`).
    pub fn start_with(dir: impl Into<PathBuf>, listen: &str, options: &[&str]) -> Server {
        Server::spawn(
            dir.into(),
            listen,
            Launch {
                options,
                ..Launch::default()
            },
        )
    }

    /// [`Server::start`] on a PostgreSQL store (`Some(url)`) or SQLite in
    /// `dir` (`None`).
    pub fn start_on(dir: impl Into<PathBuf>, listen: &str, store: Option<&str>) -> Server {
        Server::spawn(
            dir.into(),
            listen,
            Launch {
                store,
                ..Launch::default()
            },
        )
    }

    /// [`Server::start`] logging at `info` into the file `log`.
    pub fn start_logged(dir: impl Into<PathBuf>, listen: &str, log: &Path) -> Server {
        Server::spawn(
            dir.into(),
            listen,
            Launch {
                log: Some(log),
                ..Launch::default()
            },
        )
    }

    /// [`Server::start`] marking its open write transactions in the file
    /// `marker` (see `keqing_host::write_marker`).
    pub fn start_marked(dir: impl Into<PathBuf>, listen: &str, marker: &Path) -> Server {
        Server::spawn(
            dir.into(),
            listen,
            Launch {
                marker: Some(marker),
                ..Launch::default()
            },
        )
    }

    /// The server's process (to see whether it still runs, or to signal it).
    pub fn process(&mut self) -> &mut std::process::Child {
        &mut self.child
    }

    fn spawn(dir: PathBuf, listen: &str, launch: Launch) -> Server {
        let Launch {
            options,
            log,
            store,
            marker,
        } = launch;
        use std::io::BufRead;
        let (level, stderr) = match log {
            Some(path) => (
                "info",
                std::process::Stdio::from(std::fs::File::create(path).expect("log file")),
            ),
            None => ("warn", std::process::Stdio::inherit()),
        };
        let mut child = Command::new(server_bin())
            .arg("--data")
            .arg(&dir)
            .args(["serve", "--listen", listen])
            .args(options)
            .envs(store.map(|s| ("KEQING_STORE", s)))
            .envs(marker.map(|m| (keqing_host::write_marker::WRITE_MARKER_ENV, m)))
            .env("RUST_LOG", level)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start keqing-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("keqing-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let dashboard = options.contains(&"--http").then(|| {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("read the dashboard line");
            line.trim()
                .strip_prefix("keqing-server dashboard on ")
                .unwrap_or_else(|| panic!("unexpected second line: {line:?}"))
                .trim_end_matches('/')
                .to_string()
        });
        Server {
            dir,
            addr,
            dashboard,
            store: store.map(str::to_string),
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id (to read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `keqing-server --data DIR args…` (device management).
    pub fn admin(dir: &Path, args: &[&str]) -> Run {
        Server::admin_with_env(dir, args, &[])
    }

    /// [`Server::admin`] with more environment variables.
    pub fn admin_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(server_bin())
            .arg("--data")
            .arg(dir)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run keqing-server");
        Run::from(out)
    }

    /// [`Server::admin`] with `input` on its standard input.
    pub fn admin_with_stdin(dir: &Path, args: &[&str], input: &str) -> Run {
        let mut cmd = Command::new(server_bin());
        cmd.arg("--data").arg(dir).args(args);
        run_with_input(cmd, input)
    }

    /// Adds a headquarters account to the SQLite store in `dir`
    /// (`keqing-server user add`, the password on stdin).
    pub fn add_user_in(dir: &Path, name: &str, role: &str, password: &str) {
        let r = Server::admin_with_stdin(
            dir,
            &[
                "user",
                "add",
                "--name",
                name,
                "--role",
                role,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        );
        assert!(r.ok, "user add: {}", r.stderr);
    }

    /// Headquarters' dashboard on this server's store, on a free port.
    pub fn dashboard(&self) -> WebProcess {
        WebProcess::start(
            &server_bin(),
            &[
                "--data",
                &self.dir.to_string_lossy(),
                "dashboard",
                "--listen",
                "127.0.0.1:0",
            ],
        )
    }

    /// The calls a server-side report counts (`total.calls`): `scope` is
    /// `["national"]` or `["office", "--province", "44"]`, over the days
    /// `from..=to`, on the store in `dir`.
    pub fn reported_calls(dir: &Path, scope: &[&str], from: &str, to: &str) -> u64 {
        let mut args = vec!["report"];
        args.extend_from_slice(scope);
        args.extend(["--from", from, "--to", to, "--json"]);
        let r = Server::admin(dir, &args);
        assert!(r.ok, "{}", r.stderr);
        r.json()["total"]["calls"].as_u64().expect("total.calls")
    }

    /// Runs `keqing-server args…` on this server's store.
    pub fn run_admin(&self, args: &[&str]) -> Run {
        match &self.store {
            Some(store) => Server::admin_with_env(&self.dir, args, &[("KEQING_STORE", store)]),
            None => Server::admin(&self.dir, args),
        }
    }

    /// Adds a device and returns its token.
    pub fn add_device(&self, office: Option<&str>, name: &str) -> String {
        let r = match office {
            Some(o) => self.run_admin(&["device", "add", "--office", o, "--name", name]),
            None => self.run_admin(&["device", "add", "--hq", "--name", name]),
        };
        assert!(r.ok, "{}", r.stderr);
        r.last_line().to_string()
    }

    /// SIGTERM, as a service manager stops it; waits for the process to
    /// end and gives its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait for keqing-server")
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A web front end (`keqing ui`, `keqing-server dashboard`) as a process on
/// loopback, killed when dropped.
pub struct WebProcess {
    child: std::process::Child,
    /// `host:port`.
    pub addr: String,
}

impl WebProcess {
    /// Starts `bin args…` and waits for the `http://…` line it prints.
    pub fn start(bin: &Path, args: &[&str]) -> WebProcess {
        WebProcess::start_with_env(bin, args, &[])
    }

    /// [`WebProcess::start`] with more environment variables.
    pub fn start_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> WebProcess {
        use std::io::BufRead;
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{} ended before printing its address", bin.display()))
                .expect("read stdout");
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.trim_end_matches('/').to_string();
            }
        };
        WebProcess { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A follow-up of 16 kB: two 2 000-character texts (the most the desk
/// takes) of 4-byte characters. 55 of them make a change just under the
/// 1 MiB limit; a few such changes, a dossier near its 4 MiB limit.
pub fn big_followup(n: usize) -> keqing_shared::records::FollowUp {
    let text: String = std::iter::repeat_n('𠀀', 2000).collect();
    keqing_shared::records::FollowUp {
        id: uuid::Uuid::now_v7().to_string(),
        at: keqing_shared::when::parse_datetime("2026-11-21T10:00").unwrap()
            + chrono::Duration::minutes(n as i64),
        staff: "李娜".into(),
        kind: "回访".into(),
        outcome: text.clone(),
        next_entry: Some(text),
    }
}

/// A scratch directory in memory where the machine has one (/dev/shm), for
/// tests about the network or input, not the disk: they make many stores.
pub fn scratch_dir() -> tempfile::TempDir {
    match Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    }
    .expect("a scratch directory")
}

/// Plain HTTP/1.1 against the web front ends, as a browser (or an
/// attacker) would send it: no client library in between.
pub mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub struct Response {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// One HTTP/1.1 request (Connection: close) and its whole response.
    pub fn http(
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let s = TcpStream::connect(addr).expect("connect");
        exchange(s, addr, method, path, headers, body)
    }

    /// [`http`] over a stream of the caller's (a TLS session, say).
    pub fn exchange(
        mut s: impl Read + Write,
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req += &format!("Host: {addr}\r\n");
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += &format!("Content-Length: {}\r\n\r\n", body.len());
        s.write_all(req.as_bytes()).unwrap();
        // A refused oversized body may be answered before it is all sent.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .expect("a status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
            b = &b[eol + 2 + size + 2..];
        }
        out
    }

    pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        fn enc(s: &str) -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    }

    pub const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

    /// The form secret a page carries.
    pub fn csrf_of(page: &str) -> String {
        let i = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        page[i..i + page[i..].find('"').unwrap()].to_string()
    }
}

/// A new, empty database in the throwaway PostgreSQL cluster that
/// `scripts/test` runs the tests beside (`KEQING_TEST_POSTGRES`): its URL.
pub fn postgres_database() -> String {
    let admin = std::env::var("KEQING_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "KEQING_TEST_POSTGRES is not set: run the tests with scripts/test, which starts a \
             throwaway PostgreSQL cluster (or `scripts/throwaway-postgres cargo test …`)"
        )
    });
    let name = format!("keqing_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .arg(&admin)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("KEQING_TEST_POSTGRES is not a URL ending in /DBNAME: {admin}"),
    }
}

/// A two-thread tokio runtime for tests that drive async code from a
/// plain test thread (the CI machines have 2 cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A number a test reads from the environment (`KEQING_FAULT_SEEDS`…):
/// `default` when unset; a value that is set but not a number stops the
/// test with its name, never silently becomes the default (a mistyped
/// `KEQING_FAULT_SEEDS=2OOO` ran the default 200 seeds and looked like a
/// pass of 2 000).
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    let raw = match std::env::var(name) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            panic!("{name} is set to {v:?}, which is not a number")
        }
    };
    parse_setting(name, raw.as_deref(), default).unwrap_or_else(|e| panic!("{e}"))
}

/// [`env_number`] on a given value: `Ok(default)` when unset, the number
/// when it parses, an error naming the setting otherwise.
pub fn parse_setting<T: std::str::FromStr>(
    name: &str,
    raw: Option<&str>,
    default: T,
) -> Result<T, String> {
    match raw {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} is set to {v:?}, which is not a number")),
    }
}

#[cfg(test)]
mod settings_tests {
    use super::parse_setting;

    #[test]
    fn a_setting_is_its_default_unset_and_an_error_when_not_a_number() {
        assert_eq!(parse_setting("KEQING_FAULT_SEEDS", None, 200u64), Ok(200));
        assert_eq!(
            parse_setting("KEQING_FAULT_SEEDS", Some("2000"), 200u64),
            Ok(2000)
        );
        assert_eq!(
            parse_setting("KEQING_SOAK_RATE", Some(" 7.5 "), 20.0f64),
            Ok(7.5)
        );
        for bad in ["2OOO", "", "-3", "1e3"] {
            let e = parse_setting("KEQING_FAULT_SEEDS", Some(bad), 200u64).unwrap_err();
            assert!(e.contains("KEQING_FAULT_SEEDS") && e.contains(bad), "{e}");
        }
    }
}

/// What became of one process a test meant to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// It ended by itself before the signal: not a kill.
    Finished,
    /// Killed; `interrupted`: with a write transaction open.
    Killed { interrupted: bool },
}

/// SIGKILLs `child` as soon as its marker file shows an open write
/// transaction, or once `patience` has passed without one. Whether the kill
/// cut a write is read from the marker afterwards: the file stops where the
/// process died.
pub fn kill_in_write(
    child: &mut std::process::Child,
    marker: &Path,
    patience: std::time::Duration,
) -> Kill {
    use keqing_host::write_marker::open_writes;
    use std::os::unix::process::ExitStatusExt;
    let read = || std::fs::read_to_string(marker).unwrap_or_default();
    let deadline = std::time::Instant::now() + patience;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Kill::Finished;
        }
        if !open_writes(&read()).is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.signal() != Some(9) {
        return Kill::Finished; // it exited between the last look and the signal
    }
    Kill::Killed {
        interrupted: !open_writes(&read()).is_empty(),
    }
}

/// Kills, and how many of them cut a write (the processes mark their open
/// writes: `keqing_host::write_marker`).
#[derive(Debug, Default)]
pub struct KillTally {
    pub killed: u32,
    pub interrupted: u32,
    pub finished_first: u32,
}

impl KillTally {
    pub fn add(&mut self, k: Kill) {
        match k {
            Kill::Finished => self.finished_first += 1,
            Kill::Killed { interrupted } => {
                self.killed += 1;
                self.interrupted += u32::from(interrupted);
            }
        }
    }

    /// Most kills must have cut a write, or the test proved little.
    pub fn check_most_interrupted(&self) {
        assert!(
            self.interrupted * 2 > self.killed,
            "only {} of {} kills cut an open write",
            self.interrupted,
            self.killed
        );
    }
}
