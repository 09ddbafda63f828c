//! TLS between offices and the server: certificates made by `keqing-server
//! tls init`, offices that verify the server against its CA, and refusals
//! of every connection that does not verify (nothing enrolled, nothing sent).

use keqing_tests::{Office, Server};

#[test]
fn offices_sync_over_tls_and_refuse_a_server_they_cannot_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let init = Server::admin(
        &data,
        &["tls", "init", "--name", "localhost", "--name", "127.0.0.1"],
    );
    assert!(init.ok, "{}", init.stderr);
    let ca = std::path::PathBuf::from(init.last_line());
    assert!(ca.is_file(), "the CA certificate's path on the last line");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("tls").join("server-key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
    }
    let again = Server::admin(&data, &["tls", "init", "--name", "localhost"]);
    assert!(!again.ok, "existing certificates are never overwritten");
    // Another CA, which did not sign this server.
    let other = tmp.path().join("other");
    let other_ca = Server::admin(&other, &["tls", "init", "--name", "localhost"]);
    assert!(other_ca.ok);
    let other_ca = other_ca.last_line().to_string();

    let server = Server::start_with(&data, "127.0.0.1:0", &["--tls"]);
    let https = format!("https://{}", server.addr);
    let ca_s = ca.to_string_lossy().into_owned();

    // Connections that do not verify: refused, and nothing is set up.
    let token = server.add_device(Some("44"), "广东前台1");
    for (name, args) in [
        (
            "system roots only",
            vec!["--server", https.as_str(), "--token", token.as_str()],
        ),
        (
            "the wrong CA",
            vec![
                "--server",
                https.as_str(),
                "--token",
                token.as_str(),
                "--ca",
                other_ca.as_str(),
            ],
        ),
        (
            "plain http to a TLS server",
            vec!["--server", &server.url(), "--token", token.as_str()],
        ),
    ] {
        let o = Office::new(tmp.path().join(format!("refused-{}", name.len())));
        let mut a = vec!["enroll"];
        a.extend(args);
        let r = o.run(&a);
        assert!(!r.ok, "{name}: enrolled anyway");
        assert!(
            !o.dir.join("keqing.sqlite").exists(),
            "{name}: a replica was made"
        );
    }

    // Verified: enrol, work, sync; headquarters reads its report over TLS.
    let gd = Office::new(tmp.path().join("gd"));
    gd.ok(&[
        "enroll", "--server", &https, "--token", &token, "--ca", &ca_s,
    ]);
    gd.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    gd.ok(&[
        "call",
        "--phone",
        "13800138000",
        "--name",
        "王芳",
        "--source",
        "电视",
        "--staff",
        "李敏",
        "--at",
        "2026-11-20T09:00",
    ]);
    let s = gd.ok(&["sync", "--json"]).json();
    assert!(s["pushed"].as_u64().unwrap() > 0);
    let hq = Office::new(tmp.path().join("hq"));
    let hq_token = server.add_device(None, "数据中心1");
    hq.ok(&[
        "enroll", "--server", &https, "--token", &hq_token, "--ca", &ca_s,
    ]);
    hq.ok(&["sync"]);
    let r = hq
        .ok(&[
            "report",
            "national",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-20",
            "--json",
        ])
        .json();
    assert_eq!(r["total"]["calls"], 1);
    let status = gd.ok(&["status", "--json"]).json();
    assert!(status.to_string().contains(&https));
    assert!(
        !status.to_string().contains(&token),
        "the token is not shown"
    );
}
