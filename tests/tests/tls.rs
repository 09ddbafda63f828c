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
    // (case, what the refusal must say)
    let unverified = "服务器证书无法验证 the server's certificate does not verify";
    for ((name, args), why) in [
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
    ]
    .into_iter()
    .zip([
        [unverified, "invalid peer certificate: UnknownIssuer"],
        [unverified, "invalid peer certificate"],
        // It does not speak plain HTTP/2: to this client, no server there.
        ["sync failed (离线)", "the server cannot be reached"],
    ]) {
        let o = Office::new(tmp.path().join(format!("refused-{}", name.len())));
        let mut a = vec!["enroll"];
        a.extend(args);
        let r = o.run(&a);
        assert!(!r.ok, "{name}: enrolled anyway");
        for part in why {
            assert!(r.stderr.contains(part), "{name}: {part:?} in {}", r.stderr);
        }
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

/// Mutual TLS: each device shows the certificate bound to it. A token
/// without its certificate, with another device's certificate, or with a
/// certificate replaced since is refused, saying why; the replacement,
/// installed with `keqing certificate`, works; revoking works at the next
/// call; the bindings are audited.
#[test]
fn with_mutual_tls_a_token_works_only_with_its_own_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let init = Server::admin(&data, &["tls", "init", "--name", "127.0.0.1"]);
    assert!(init.ok, "{}", init.stderr);
    let ca = init.last_line().to_string();
    let server = Server::start_with(&data, "127.0.0.1:0", &["--tls", "--mtls"]);
    let https = format!("https://{}", server.addr);
    let certs = tmp.path().join("certs");
    let certs_s = certs.to_string_lossy().into_owned();
    let pem = |name: &str| certs.join(name).to_string_lossy().into_owned();
    // `enroll` over mutual TLS with the certificate made for `device`.
    let enroll = |office: &Office, token: &str, device: &str| {
        office.run(&[
            "enroll",
            "--server",
            &https,
            "--token",
            token,
            "--ca",
            &ca,
            "--cert",
            &pem(&format!("{device}.pem")),
            "--key",
            &pem(&format!("{device}-key.pem")),
        ])
    };

    let gd1_token = server.add_device(Some("44"), "广东前台1");
    let gd2_token = server.add_device(Some("44"), "广东前台2");
    for device in ["广东前台1", "广东前台2"] {
        let r = Server::admin(&data, &["device", "cert", device, "--out", &certs_s]);
        assert!(r.ok, "{}", r.stderr);
        assert!(r.last_line().contains("sha256"), "{}", r.stdout);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("广东前台1-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "a device key is readable by its owner only"
        );
    }
    let unknown = Server::admin(&data, &["device", "cert", "没有这台", "--out", &certs_s]);
    assert!(
        !unknown.ok && unknown.stderr.contains("没有这台"),
        "{}",
        unknown.stderr
    );

    // No certificate: the handshake fails and nothing is set up.
    let bare = Office::new(tmp.path().join("bare"));
    let r = bare.run(&[
        "enroll", "--server", &https, "--token", &gd1_token, "--ca", &ca,
    ]);
    assert!(!r.ok, "enrolled without a certificate");
    let own_only = "this device's token works only with its own certificate";
    assert!(r.stderr.contains(own_only), "{}", r.stderr);
    assert!(!bare.dir.join("keqing.sqlite").exists());

    // Another device's certificate with this token: refused.
    let swapped = Office::new(tmp.path().join("swapped"));
    let r = enroll(&swapped, &gd1_token, "广东前台2");
    assert!(!r.ok, "enrolled with another device's certificate");
    assert!(r.stderr.contains(own_only), "{}", r.stderr);
    assert!(!swapped.dir.join("keqing.sqlite").exists());

    // Its own certificate: enrol, work, sync; the other device too.
    let gd1 = Office::new(tmp.path().join("gd1"));
    let r = enroll(&gd1, &gd1_token, "广东前台1");
    assert!(r.ok, "{}", r.stderr);
    gd1.ok(&["staff", "add", "--name", "李敏", "--role", "consultant"]);
    gd1.ok(&[
        "call",
        "--phone",
        "13800138000",
        "--name",
        "张三",
        "--source",
        "电视",
        "--staff",
        "李敏",
    ]);
    gd1.ok(&["sync"]);
    let gd2 = Office::new(tmp.path().join("gd2"));
    let r = enroll(&gd2, &gd2_token, "广东前台2");
    assert!(r.ok, "{}", r.stderr);
    gd2.ok(&["sync"]);
    assert_eq!(gd2.ok(&["status", "--json"]).json()["dossiers"], 1);

    // A new certificate for 广东前台2 (say its PC was lost): the old one,
    // still in gd2's replica, stops working at the next call.
    let again = tmp.path().join("again");
    let r = Server::admin(
        &data,
        &[
            "device",
            "cert",
            "广东前台2",
            "--out",
            &again.to_string_lossy(),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let refused = gd2.run(&["sync"]);
    assert!(!refused.ok, "the replaced certificate still worked");
    assert!(refused.stderr.contains(own_only), "{}", refused.stderr);
    // Installed in the replica, the new one works; nothing was lost.
    gd1.call("13800138001", "李四", "李敏", "2026-11-20T09:00");
    gd1.ok(&["sync"]);
    let installed = gd2.run(&[
        "certificate",
        "--cert",
        &again.join("广东前台2.pem").to_string_lossy(),
        "--key",
        &again.join("广东前台2-key.pem").to_string_lossy(),
    ]);
    assert!(installed.ok, "{}", installed.stderr);
    let synced = gd2.ok(&["sync", "--json"]).json();
    assert_eq!(
        synced["pulled_changes"].as_u64().map(|n| n > 0),
        Some(true),
        "{synced}"
    );
    assert_eq!(gd2.ok(&["status", "--json"]).json()["dossiers"], 2);
    let half = gd2.run(&[
        "certificate",
        "--cert",
        &again.join("广东前台2.pem").to_string_lossy(),
    ]);
    assert!(!half.ok && half.stderr.contains("--key"), "{}", half.stderr);
    // Binding a certificate made elsewhere (here: the new one) by file.
    let bind = Server::admin(
        &data,
        &[
            "device",
            "cert",
            "广东前台1",
            "--bind",
            &again.join("广东前台2.pem").to_string_lossy(),
        ],
    );
    assert!(bind.ok, "{}", bind.stderr);
    let unbound = gd1.run(&["sync"]);
    assert!(!unbound.ok, "广东前台1's old certificate was unbound");
    assert!(unbound.stderr.contains(own_only), "{}", unbound.stderr);

    // Revoked (its PC stolen, say): refused at its next call, whatever
    // certificate it shows.
    let r = Server::admin(&data, &["device", "revoke", "广东前台2"]);
    assert!(r.ok, "{}", r.stderr);
    let revoked = gd2.run(&["sync"]);
    assert!(!revoked.ok, "a revoked device synced");
    assert!(revoked.stderr.contains("revoked"), "{}", revoked.stderr);

    let audit = Server::admin(&data, &["audit", "--json"]);
    assert!(audit.ok, "{}", audit.stderr);
    let certs_bound = audit
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.cert")
        .count();
    assert_eq!(certs_bound, 4, "every binding is audited");
}

/// A TLS session to `addr` (the server named 127.0.0.1) trusting `ca`,
/// showing `client` (certificate and key PEM files) if given.
fn tls_to(
    addr: &str,
    ca: &str,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, std::net::TcpStream>
{
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr).unwrap())
}

/// Under mutual TLS the dashboard is served over TLS with the same client
/// CA: a person's password opens it only from a browser showing a live
/// headquarters device's certificate; with an office device's
/// certificate, or none, it does not, and a session does not travel to
/// another certificate. A device token is no password.
#[test]
fn under_mutual_tls_the_dashboard_wants_a_headquarters_certificate_with_the_password() {
    use keqing_tests::http::{FORM, Response, csrf_of, exchange, form, http};
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let init = Server::admin(&data, &["tls", "init", "--name", "127.0.0.1"]);
    assert!(init.ok, "{}", init.stderr);
    let ca = init.last_line().to_string();
    let server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &["--tls", "--mtls", "--http", "127.0.0.1:0"],
    );
    let dashboard = server.dashboard.clone().expect("a dashboard");
    assert!(dashboard.starts_with("https://"), "{dashboard}");
    let addr = dashboard.trim_start_matches("https://").to_string();
    let hq_token = server.add_device(None, "看板");
    server.add_device(Some("44"), "广东前台1");
    let password = "总部-2026-看板";
    Server::add_user_in(&data, "周主任", "admin", password);
    let certs = tmp.path().join("certs");
    for device in ["看板", "广东前台1"] {
        let r = Server::admin(
            &data,
            &["device", "cert", device, "--out", &certs.to_string_lossy()],
        );
        assert!(r.ok, "{}", r.stderr);
    }
    let identity = |device: &str| {
        (
            certs.join(format!("{device}.pem")),
            certs.join(format!("{device}-key.pem")),
        )
    };
    // Signs in over TLS showing `device`'s certificate.
    let sign_in = |device: &str, password: &str| -> Response {
        let (cert, key) = identity(device);
        let page = exchange(
            tls_to(&addr, &ca, Some((&cert, &key))),
            &addr,
            "GET",
            "/login",
            &[],
            b"",
        );
        assert_eq!(page.status, 200, "{}", page.text());
        let cookie = page
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        exchange(
            tls_to(&addr, &ca, Some((&cert, &key))),
            &addr,
            "POST",
            "/login",
            &[FORM, ("Cookie", &cookie)],
            &form(&[
                ("csrf", &csrf_of(&page.text())),
                ("name", "周主任"),
                ("password", password),
            ]),
        )
    };
    assert_eq!(
        sign_in("看板", &hq_token).status,
        401,
        "a token is no password"
    );
    let r = sign_in("看板", password);
    assert_eq!(r.status, 303, "its own certificate: {}", r.text());
    let session = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (cert, key) = identity("看板");
    let national = exchange(
        tls_to(&addr, &ca, Some((&cert, &key))),
        &addr,
        "GET",
        "/",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(national.status, 200);
    // An office device's certificate does not carry the session.
    let (cert2, key2) = identity("广东前台1");
    let stolen = exchange(
        tls_to(&addr, &ca, Some((&cert2, &key2))),
        &addr,
        "GET",
        "/",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(stolen.status, 303, "back to sign-in");
    assert_eq!(
        sign_in("广东前台1", password).status,
        401,
        "an office device's certificate"
    );
    // Revoking the headquarters device ends the sessions it carried.
    assert!(Server::admin(&data, &["device", "revoke", "看板"]).ok);
    let after = exchange(
        tls_to(&addr, &ca, Some((&cert, &key))),
        &addr,
        "GET",
        "/",
        &[("Cookie", &session)],
        b"",
    );
    assert_eq!(after.status, 303, "revoked: back to sign-in");
    // No certificate: no TLS session at all.
    let mut bare = tls_to(&addr, &ca, None);
    let answered = bare
        .write_all(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .and_then(|()| {
            let mut buf = Vec::new();
            bare.read_to_end(&mut buf).map(|_| buf)
        });
    assert!(
        answered.map_or(true, |b| !b.starts_with(b"HTTP/1.1")),
        "answered without a certificate"
    );
    // The dashboard on its own, over plain HTTP, has no certificates to
    // ask for (it listens on the loopback unless told otherwise): the
    // person's password alone opens it, a device token does not.
    let plain = keqing_tests::WebProcess::start(
        &keqing_tests::server_bin(),
        &[
            "--data",
            &data.to_string_lossy(),
            "dashboard",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let page = http(&plain.addr, "GET", "/login", &[], b"");
    let cookie = page
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = csrf_of(&page.text());
    let post = |name: &str, password: &str| {
        http(
            &plain.addr,
            "POST",
            "/login",
            &[FORM, ("Cookie", &cookie)],
            &form(&[("csrf", &csrf), ("name", name), ("password", password)]),
        )
    };
    let r = post("看板", &hq_token);
    assert_eq!(r.status, 401, "a token: {}", r.text());
}
