//! Files and output are safe: stores, replicas (with their WAL and
//! shared-memory files), backups, exports and keys are private (0600 in
//! 0700 directories, older ones tightened); an export never replaces a
//! file unasked, nor a store at all; text a device stored reaches no
//! terminal or log line as control characters; the audit log names the
//! operating-system account by its uid.

use automerge::ActorId;
use keqing_proto::SyncConnection;
use keqing_shared::dossier::Dossier;
use keqing_shared::records::Call;
use keqing_shared::sync::ChangeEnvelope;
use keqing_tests::{Office, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn private(paths: &[&Path]) {
    for p in paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} is {:o}", p.display(), mode(p));
    }
}

/// `keqing-server report national` of 2026-11-20 written to `out`.
fn national_export(server_dir: &Path, format: &str, out: &Path, force: bool) -> keqing_tests::Run {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "report",
        "national",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-20",
        "--format",
        format,
        "--out",
        out,
    ];
    if force {
        args.push("--force");
    }
    Server::admin(server_dir, &args)
}

#[test]
fn stores_replicas_backups_exports_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("server");
    let server = Server::start(&server_dir, "127.0.0.1:0");
    let office = Office::new(tmp.path().join("gd"));
    office.enroll_on(&server, Some("44"), "前台1");
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    office.call("13800138000", "张三", "李娜", "2026-11-20T09:00");
    office.ok(&["sync"]);
    // While the server runs, its WAL and shared memory are there too; so
    // are the replica's while its workstation runs.
    let ui = office.workstation();
    assert_eq!(
        keqing_tests::http::http(&ui.addr, "GET", "/", &[], b"").status,
        200
    );
    let db = server_dir.join("server.sqlite");
    let replica = office.dir.join("keqing.sqlite");
    let companion = |p: &Path, suffix: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    private(&[
        &server_dir,
        &db,
        &companion(&db, "-wal"),
        &companion(&db, "-shm"),
        &office.dir,
        &replica,
        &companion(&replica, "-wal"),
        &companion(&replica, "-shm"),
    ]);
    drop(ui);
    let backup = tmp.path().join("backup.sqlite");
    let r = Server::admin(&server_dir, &["backup", "--out", backup.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    let tls = Server::admin(&server_dir, &["tls", "init", "--name", "localhost"]);
    assert!(tls.ok, "{}", tls.stderr);
    let certs = tmp.path().join("certs");
    let cert = Server::admin(
        &server_dir,
        &["device", "cert", "前台1", "--out", certs.to_str().unwrap()],
    );
    assert!(cert.ok, "{}", cert.stderr);
    let export = tmp.path().join("week.csv");
    let args = [
        "report",
        "daily",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-20",
        "--format",
        "csv",
        "--out",
    ];
    office.ok(&[&args[..], &[export.to_str().unwrap()]].concat());
    let national = tmp.path().join("national.xlsx");
    let r = national_export(&server_dir, "xlsx", &national, false);
    assert!(r.ok, "{}", r.stderr);
    private(&[
        &backup,
        &server_dir.join("tls"),
        &server_dir.join("tls/ca-key.pem"),
        &server_dir.join("tls/server-key.pem"),
        &certs,
        &certs.join("前台1-key.pem"),
        &export,
        &national,
    ]);

    // A replica made more open (by an older keqing, or copied in by hand)
    // is tightened when next opened, with a warning.
    std::fs::set_permissions(&office.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&replica, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = office.ok(&["status"]);
    assert!(r.stderr.contains("permissions tightened"), "{}", r.stderr);
    private(&[&office.dir, &replica]);
    drop(server);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = Server::admin(&server_dir, &["device", "list"]);
    assert!(r.ok);
    private(&[&db]);
}

#[test]
fn an_export_replaces_a_file_only_when_asked_and_a_store_never() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("gd"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    let export = |out: &Path, force: bool| {
        let mut args = vec![
            "report",
            "daily",
            "--date",
            "2026-11-20",
            "--format",
            "csv",
            "--out",
        ];
        let out = out.to_str().unwrap().to_string();
        args.push(&out);
        if force {
            args.push("--force");
        }
        office.run(&args)
    };
    let out = tmp.path().join("day.csv");
    std::fs::write(&out, b"someone's file").unwrap();
    let r = export(&out, false);
    assert!(!r.ok && r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"someone's file");
    assert!(export(&out, true).ok);
    assert!(std::fs::read(&out).unwrap().starts_with(b"\xEF\xBB\xBF"));
    // The live replica, its WAL, any SQLite file: never, even forced.
    let replica = office.dir.join("keqing.sqlite");
    let before = std::fs::read(&replica).unwrap();
    let other_db = tmp.path().join("other.db");
    rusqlite::Connection::open(&other_db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    for target in [&replica, &other_db] {
        let r = export(target, true);
        assert!(!r.ok && r.stderr.contains("不能覆盖数据库"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read(&replica).unwrap(), before);
    office.ok(&["status"]);

    let server_dir = tmp.path().join("server");
    let r = Server::admin(&server_dir, &["device", "add", "--hq", "--name", "x"]);
    assert!(r.ok);
    let store = server_dir.join("server.sqlite");
    let r = national_export(&server_dir, "csv", &store, true);
    assert!(!r.ok && r.stderr.contains("不能覆盖数据库"), "{}", r.stderr);
    assert!(Server::admin(&server_dir, &["device", "list"]).ok);
}

#[test]
fn the_audit_log_names_the_account_by_uid_not_by_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let r = Server::admin_with_env(
        &dir,
        &["device", "add", "--office", "44", "--name", "前台1"],
        &[("USER", "mallory"), ("USERNAME", "mallory")],
    );
    assert!(r.ok, "{}", r.stderr);
    let audit = Server::admin(&dir, &["audit", "--json"]).json();
    let actor = audit[0]["actor"].as_str().unwrap();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc_getuid() };
    assert!(
        actor.starts_with("admin:") && actor.contains(&format!("uid {uid}")),
        "{actor}"
    );
    assert!(!actor.contains("mallory"), "{actor}");
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

#[test]
fn text_a_device_stored_reaches_no_terminal_or_log_as_control_characters() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let server = Server::start_logged(tmp.path().join("server"), "127.0.0.1:0", &log);
    let token = server.add_device(Some("44"), "广东1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let actor = ActorId::random();
    let id = "01a21111-0000-7000-8000-0000000000c1";
    rt.block_on(async {
        let mut c = SyncConnection::connect(&server.url(), &token, Duration::from_secs(5))
            .await
            .unwrap();
        c.enroll(actor.to_bytes().to_vec()).await.unwrap();
        // A device that is not keqing's desk stores what it likes.
        let at = keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap();
        let (mut d, created) = Dossier::create(id, "44", at, actor.clone(), 1).unwrap();
        let call = d
            .edit(2, |tx| {
                tx.update_patient(&keqing_shared::dossier::PatientUpdate {
                    name: Some("张三\u{1b}[2J\u{1b}]0;pwned\u{7}".into()),
                    ..Default::default()
                })?;
                tx.add(&Call {
                    id: "c1".into(),
                    at,
                    staff: "李娜\u{1b}[31m".into(),
                    caller_phone: "13800138000".into(),
                    relation: None,
                    source: "电视\n伪造的一行".into(),
                    disease: None,
                    condition: None,
                    treatment: None,
                    outcome: None,
                })
            })
            .unwrap()
            .unwrap();
        let env = |c: &keqing_shared::dossier::NewChange| ChangeEnvelope {
            doc_id: id.into(),
            bytes: c.bytes.clone(),
        };
        c.push(vec![env(&created), env(&call)]).await.unwrap();
        // A dossier whose id lies, with a forged log line in the lie.
        let liar = "01a21111-0000-7000-8000-0000000000c2";
        let (_, lie) = Dossier::create(
            "x\n2026-11-20T00:00:00Z  INFO keqing: forged line",
            "44",
            at,
            actor.clone(),
            3,
        )
        .unwrap();
        let e = c
            .push(vec![ChangeEnvelope {
                doc_id: liar.into(),
                bytes: lie.bytes.clone(),
            }])
            .await
            .unwrap_err();
        assert!(!e.message.contains('\n'), "{e:?}");
    });
    let r = Server::admin(
        &server.dir,
        &[
            "report",
            "national",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-20",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("李娜"), "{}", r.stdout);
    assert!(
        !r.stdout.contains('\u{1b}'),
        "no escape reaches the terminal"
    );
    assert!(!r.stdout.contains("\n伪造的一行"), "no line is forged");
    // An office device's command line shows the dossier the same way.
    let office = Office::new(tmp.path().join("gd"));
    office.enroll_on(&server, Some("44"), "广东2");
    office.ok(&["sync"]);
    let shown = office.ok(&["patient", id]).stdout;
    assert!(shown.contains("张三"), "{shown}");
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    let listed = office.ok(&["search", "张三"]).stdout;
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("push refused"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("forged line") && !l.contains("push refused")),
        "a forged line in the log: {log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
