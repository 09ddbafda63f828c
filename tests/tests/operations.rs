//! Running the server for real: its settings (file < KEQING_… variables <
//! flags), the sample settings and unit in `deploy/`, JSON logs.

use keqing_tests::{Run, server_bin};
use std::process::Command;

/// `keqing-server ARGS config check --json` with `env` (and nothing of the
/// test's own environment that would change it).
fn check(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(server_bin());
    for key in keqing_server::config::KEYS {
        cmd.env_remove(key.env);
    }
    cmd.env_remove("KEQING_CONFIG");
    let out = cmd
        .args(args)
        .args(["config", "check", "--json"])
        .envs(env.iter().copied())
        .output()
        .expect("run keqing-server");
    Run::from(out)
}

/// Flags before the command, variables, a key, the value in force.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("server.toml");
    std::fs::write(
        &file,
        "data = \"/srv/from-file\"\nlisten = \"10.0.0.1:7600\"\nsilent-days = 5\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let table: &[Case<'_>] = &[
        (&[], &[], "listen", "127.0.0.1:7600"),
        (&["--config", f], &[], "listen", "10.0.0.1:7600"),
        (
            &["--config", f],
            &[("KEQING_LISTEN", "10.0.0.2:7600")],
            "listen",
            "10.0.0.2:7600",
        ),
        (
            &[],
            &[("KEQING_CONFIG", f), ("KEQING_LISTEN", "10.0.0.2:7600")],
            "listen",
            "10.0.0.2:7600",
        ),
        (&["--config", f], &[], "data", "/srv/from-file"),
        (
            &["--config", f, "--data", "/srv/flag"],
            &[("KEQING_SERVER_DATA", "/srv/env")],
            "data",
            "/srv/flag",
        ),
        (
            &["--config", f],
            &[("KEQING_SERVER_DATA", "/srv/env")],
            "data",
            "/srv/env",
        ),
        (&["--config", f], &[], "silent-days", "5"),
        (
            &["--config", f],
            &[("KEQING_SILENT_DAYS", "3")],
            "silent-days",
            "3",
        ),
        (&[], &[], "silent-days", "2"),
        (&[], &[("KEQING_TLS", "true")], "tls", "true"),
        (&[], &[("KEQING_LOG_FORMAT", "json")], "log-format", "json"),
    ];
    for (args, env, key, want) in table {
        let r = check(args, env);
        assert!(r.ok, "{args:?} {env:?}: {}", r.stderr);
        assert_eq!(r.json()[*key], *want, "{args:?} {env:?}: {}", r.stdout);
    }
    // Flags after `config check` too (serve's), over the variable.
    let mut cmd = Command::new(server_bin());
    for key in keqing_server::config::KEYS {
        cmd.env_remove(key.env);
    }
    let out = cmd
        .args([
            "--config",
            f,
            "config",
            "check",
            "--json",
            "--listen",
            "10.0.0.3:7600",
        ])
        .env("KEQING_LISTEN", "10.0.0.2:7600")
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.json()["listen"], "10.0.0.3:7600", "{}", r.stderr);
}

#[test]
fn a_bad_settings_file_is_refused_with_its_line_and_secrets_are_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("server.toml");
    std::fs::write(&file, "data = \"/srv\"\nlistne = \"0.0.0.0:7600\"\n").unwrap();
    let r = check(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        !r.ok && r.stderr.contains("第 2 行") && r.stderr.contains("listne"),
        "{}",
        r.stderr
    );
    let r = check(&["--config", "/no/such/file.toml"], &[]);
    assert!(
        !r.ok && r.stderr.contains("/no/such/file.toml"),
        "{}",
        r.stderr
    );
    let r = check(
        &[],
        &[(
            "KEQING_STORE",
            "postgres://keqing:hunter2-secret@db.hq:5432/keqing",
        )],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stdout.contains("hunter2"), "{}", r.stdout);
    assert!(r.json()["store"].as_str().unwrap().contains("db.hq:5432"));
}

#[test]
fn the_sample_settings_are_valid_and_a_file_of_data_listen_and_http_serves() {
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/keqing-server.toml");
    let r = check(&["--config", sample.to_str().unwrap()], &[]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        (&r.json()["data"], &r.json()["log-format"]),
        (&"/var/lib/keqing".into(), &"json".into())
    );
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/keqing-server.service"),
    )
    .unwrap();
    for line in [
        "ProtectSystem=strict",
        "StateDirectoryMode=0700",
        "--config /etc/keqing/keqing-server.toml serve",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }

    // Just data, listen and http: it serves, and logs JSON when told.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("server.toml");
    std::fs::write(
        &file,
        format!(
            "data = {:?}\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nlog-format = \"json\"\n",
            tmp.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(server_bin())
        .args(["--config", file.to_str().unwrap(), "serve"])
        .env_remove("KEQING_SERVER_DATA")
        .env_remove("KEQING_STORE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    for _ in 0..2 {
        out.read_line(&mut seen).unwrap();
    }
    assert!(
        seen.contains("listening on 127.0.0.1:") && seen.contains("dashboard on http://127.0.0.1:"),
        "{seen}"
    );
    terminate(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends it cleanly");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["fields"].is_object(),
            "{l}"
        );
    }
    assert!(
        err.contains("keqing-server serving") && tmp.path().join("data/server.sqlite").is_file()
    );
}

/// SIGTERM, as systemd stops the service.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// `keqing-server devices --json` on `server`'s store, with the clock at
/// `clock` (None: now).
fn fleet(server: &keqing_tests::Server, args: &[&str], clock: Option<&str>) -> serde_json::Value {
    let mut all = vec!["devices", "--json"];
    all.extend_from_slice(args);
    let env: Vec<(&str, &str)> = clock
        .map(|c| vec![(keqing_host::CLOCK_START_ENV, c)])
        .unwrap_or_default();
    let r = keqing_tests::Server::admin_with_env(&server.dir, &all, &env);
    assert!(r.ok, "{}", r.stderr);
    r.json()
}

fn office<'a>(fleet: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    fleet["offices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["office"] == code)
        .unwrap_or_else(|| panic!("no office {code} in {fleet}"))
}

#[test]
fn fleet_health_and_metrics_follow_the_devices() {
    use keqing_tests::{Office, Server};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        tmp.path().join("server"),
        "127.0.0.1:0",
        &["--http", "127.0.0.1:0"],
    );
    let gd = Office::new(tmp.path().join("gd"));
    gd.enroll_on(&server, Some("44"), "广东前台1");
    server.add_device(Some("11"), "北京前台1");
    gd.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    gd.call("13900000021", "王秀兰", "李娜", "2026-11-30T10:00");
    gd.ok(&["sync"]);
    let version = gd.ok(&["status", "--json"]).json()["version"].clone();
    assert!(version.is_string());

    // The serving process writes what it saw every few seconds.
    let started = std::time::Instant::now();
    let now = loop {
        let f = fleet(&server, &[], None);
        if office(&f, "44")["last_sync"].is_string() {
            break f;
        }
        assert!(started.elapsed().as_secs() < 20, "no health written: {f}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let gd_line = &office(&now, "44")["devices"][0];
    assert_eq!(gd_line["name"], "广东前台1");
    assert_eq!(gd_line["version"], version);
    assert_eq!(
        (&gd_line["outbox"], &gd_line["quarantined"]),
        (&0.into(), &0.into()),
        "{gd_line}"
    );
    assert!(gd_line["last_push"].is_string() && gd_line["last_pull"].is_string());
    assert_eq!(gd_line["old_version"], false);
    assert_eq!(office(&now, "44")["silent"], false);
    assert_eq!(
        office(&now, "11")["silent"],
        true,
        "Beijing's device never synced"
    );
    // Three days on, Guangdong is silent too; with five days allowed, not.
    let later = (chrono::Utc::now() + chrono::Duration::hours(8) + chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    assert_eq!(
        office(&fleet(&server, &[], Some(&later)), "44")["silent"],
        true
    );
    assert_eq!(
        office(&fleet(&server, &["--silent-days", "5"], Some(&later)), "44")["silent"],
        false
    );
    let text = keqing_tests::Server::admin(&server.dir, &["devices"]).stdout;
    assert!(
        text.contains("广东前台1") && text.contains("silent"),
        "{text}"
    );

    // /metrics: a wrong token's refusal counts too.
    let stranger = Office::new(tmp.path().join("stranger"));
    let r = stranger.run(&[
        "enroll",
        "--server",
        &server.url(),
        "--token",
        "not-a-token",
    ]);
    assert!(!r.ok);
    let addr = server
        .dashboard
        .as_deref()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let page = keqing_tests::http::http(
        &addr,
        "GET",
        "/metrics",
        &[("Host", "prometheus.hq.example")],
        b"",
    );
    assert_eq!(
        page.status, 200,
        "served whatever the Host, without a sign-in"
    );
    let body = page.text();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"));
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert!(value("keqing_pushes_total", None) >= 1.0, "{body}");
    assert!(value("keqing_pulls_total", None) >= 1.0);
    assert!(
        value("keqing_changes_in_total", None) >= 2.0,
        "the call and the roster"
    );
    assert!(value("keqing_bytes_in_total", None) > 0.0);
    assert!(value("keqing_changes_out_total", None) >= 0.0);
    assert!(
        value("keqing_refusals_total", Some(("code", "Unauthenticated"))) >= 1.0,
        "{body}"
    );
    assert!(value("keqing_store_bytes", None) > 0.0);
    assert!(value("keqing_office_seconds_since_sync", Some(("office", "44"))) >= 0.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "keqing_push_seconds_count" || s.metric == "keqing_push_seconds"),
        "the push latency histogram: {body}"
    );
    assert!(
        body.contains("keqing_projector_lag_positions") && body.contains("keqing_open_streams")
    );
    for secret in ["13900000021", "王秀兰", "李娜"] {
        assert!(!body.contains(secret), "{secret} in /metrics");
    }

    // The dashboard's 设备状况 page, for any signed-in person.
    Server::add_user_in(&server.dir, "钱分析", "analyst", "总部-2026-看板");
    let (status, page) =
        crate::web_guards::dashboard_get(&addr, "钱分析", "总部-2026-看板", "/devices");
    assert_eq!(status, 200);
    assert!(
        page.contains("广东前台1") && page.contains("北京前台1"),
        "{page}"
    );
    assert!(
        page.contains("未同步超过 2 天"),
        "Beijing is marked: {page}"
    );
}

fn national_calls(server: &keqing_tests::Server) -> u64 {
    keqing_tests::Server::reported_calls(&server.dir, &["national"], "2026-11-01", "2026-11-30")
}

#[test]
fn an_office_offline_for_weeks_reaches_headquarters_by_bundle_alone() {
    use keqing_tests::{Office, Server};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let gd = Office::new(tmp.path().join("gd"));
    let gd2 = Office::new(tmp.path().join("gd2"));
    gd.enroll_on(&server, Some("44"), "广东前台1");
    gd2.enroll_on(&server, Some("44"), "广东前台2");
    gd2.ok(&["staff", "add", "--name", "王芳", "--role", "consultant"]);
    gd2.call("13900000041", "陈桂英", "王芳", "2026-11-20T09:00");
    gd2.ok(&["sync"]);
    // From here on Guangdong's first device never reaches the server: its
    // work travels by bundle.
    gd.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    gd.call("13900000031", "王秀兰", "李娜", "2026-11-21T10:00");
    gd.call("13900000032", "张桂兰", "李娜", "2026-11-22T10:00");
    let outbox = gd.ok(&["status", "--json"]).json()["outbox"]
        .as_u64()
        .unwrap();
    assert!(outbox >= 3, "the roster and two calls: {outbox}");
    let bundle = tmp.path().join("gd-2026-11.keqing");
    let b = bundle.to_str().unwrap();
    let e = gd.ok(&["bundle", "export", "--out", b, "--json"]).json();
    assert_eq!(e["changes"], outbox);
    assert_eq!(national_calls(&server), 1);

    // A changed byte, or another device's bundle under this one's name, is
    // refused and nothing is stored.
    let bytes = std::fs::read(&bundle).unwrap();
    let tampered = tmp.path().join("tampered.keqing");
    let mut t = bytes.clone();
    let at = t.len() / 2;
    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&tampered, &t).unwrap();
    let r = Server::admin(
        &server.dir,
        &["bundle", "import", tampered.to_str().unwrap()],
    );
    assert!(
        !r.ok && (r.stderr.contains("签名不符") || r.stderr.contains("损坏")),
        "{}",
        r.stderr
    );
    let gd2_bundle = tmp.path().join("gd2.keqing");
    gd2.call("13900000042", "刘淑珍", "王芳", "2026-11-23T09:00");
    gd2.ok(&["bundle", "export", "--out", gd2_bundle.to_str().unwrap()]);
    let gd_id = gd.ok(&["status", "--json"]).json()["sync"]["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    let gd2_id = gd2.ok(&["status", "--json"]).json()["sync"]["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = std::fs::read_to_string(&gd2_bundle)
        .unwrap()
        .replace(&gd2_id, &gd_id);
    let forged_path = tmp.path().join("forged.keqing");
    std::fs::write(&forged_path, forged).unwrap();
    let r = Server::admin(
        &server.dir,
        &["bundle", "import", forged_path.to_str().unwrap()],
    );
    assert!(!r.ok && r.stderr.contains("签名不符"), "{}", r.stderr);
    assert_eq!(national_calls(&server), 1, "nothing stored");

    // Headquarters takes it: the office's calls are in the national report.
    let answer = tmp.path().join("gd-2026-11.answer");
    let a = answer.to_str().unwrap();
    let r = Server::admin(
        &server.dir,
        &["bundle", "import", b, "--answer", a, "--json"],
    );
    assert!(r.ok, "{}", r.stderr);
    let done = r.json();
    // (The roster's deterministic first change, the other device's too,
    // was there already.)
    assert_eq!(
        (
            done["new"].as_u64().unwrap() + done["duplicates"].as_u64().unwrap(),
            &done["refused"]
        ),
        (outbox, &0.into()),
        "{done}"
    );
    assert!(done["new"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(national_calls(&server), 3);
    // Again: nothing more.
    let again = tmp.path().join("again.answer");
    let r = Server::admin(
        &server.dir,
        &[
            "bundle",
            "import",
            b,
            "--answer",
            again.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        (&r.json()["new"], &r.json()["duplicates"]),
        (&0.into(), &outbox.into())
    );
    assert_eq!(national_calls(&server), 3);
    let audit = Server::admin(&server.dir, &["audit", "--json"]).stdout;
    assert!(audit.contains("bundle.import"), "audited");

    // The office applies the answer: the other device's patient arrives,
    // the outbox is empty; twice changes nothing.
    let applied = gd.ok(&["bundle", "import", a, "--json"]).json();
    assert_eq!(applied["stored"], outbox, "{applied}");
    let status = gd.ok(&["status", "--json"]).json();
    assert_eq!(status["outbox"], 0);
    let found = gd
        .ok(&["lookup", "--phone", "13900000041", "--json"])
        .json();
    assert!(found[0]["dossier_id"].is_string(), "{found}");
    let before = gd.ok(&["status", "--json"]).json()["dossiers"].clone();
    gd.ok(&["bundle", "import", a]);
    assert_eq!(gd.ok(&["status", "--json"]).json()["dossiers"], before);
    // Someone else's answer is refused.
    let r = gd2.run(&["bundle", "import", a]);
    assert!(!r.ok && r.stderr.contains("签名不符"), "{}", r.stderr);

    // A change headquarters will not take (a call after the patient was
    // transferred away) comes back refused and is set aside; the rest goes.
    let zhang = gd
        .ok(&["lookup", "--phone", "13900000032", "--json"])
        .json()[0]["dossier_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = Server::admin(
        &server.dir,
        &[
            "transfer",
            "--dossier",
            &zhang,
            "--to",
            "11",
            "--reason",
            "迁居",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    gd.call_into(&zhang, ("13900000032", "张桂兰"), "李娜", None);
    gd.call("13900000033", "赵玉兰", "李娜", "2026-11-24T10:00");
    let second = tmp.path().join("gd-2.keqing");
    gd.ok(&["bundle", "export", "--out", second.to_str().unwrap()]);
    let second_answer = tmp.path().join("gd-2.answer");
    let r = Server::admin(
        &server.dir,
        &[
            "bundle",
            "import",
            second.to_str().unwrap(),
            "--answer",
            second_answer.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let second_done = r.json();
    // The new patient's changes are stored; the call after the transfer is not.
    assert_eq!(second_done["refused"], 1, "{second_done}");
    let new = second_done["new"].as_u64().unwrap();
    assert_eq!(
        new + 1,
        second_done["changes"].as_u64().unwrap(),
        "{second_done}"
    );
    let applied = gd
        .ok(&[
            "bundle",
            "import",
            second_answer.to_str().unwrap(),
            "--json",
        ])
        .json();
    assert_eq!(
        (&applied["stored"], &applied["refused"]),
        (&new.into(), &1.into()),
        "{applied}"
    );
    let q = gd.ok(&["quarantine", "list", "--json"]).json();
    assert!(q.to_string().contains("档案已转出"), "{q}");
    assert_eq!(national_calls(&server), 4);

    // The line comes back: a live sync doubles nothing.
    let s = gd.ok(&["sync", "--json"]).json();
    assert_eq!(s["pushed"], 0, "{s}");
    assert_eq!(national_calls(&server), 4);
    let calls_of = |o: &Office, id: &str| {
        o.ok(&["patient", id, "--json"]).json()["dossier"]["calls"]
            .as_array()
            .unwrap()
            .len()
    };
    let wang = gd
        .ok(&["lookup", "--phone", "13900000031", "--json"])
        .json()[0]["dossier_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(calls_of(&gd, &wang), 1);
    gd2.ok(&["sync"]);
    assert_eq!(calls_of(&gd2, &wang), 1, "the other device has it once");
}
