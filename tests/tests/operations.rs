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
