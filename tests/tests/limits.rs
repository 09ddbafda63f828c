//! Bounded sizes, end to end: every typed field is refused over its limit
//! by the desk (the command line and the workstation alike, the field
//! named), nothing over a limit enters an outbox, dossiers of the maximum
//! size still reach every device and headquarters, and a change the server
//! refuses (made by an older keqing, say) is set aside without holding the
//! rest of the outbox back; refusals are told apart from being offline.

use keqing_office::desk::{CallInput, Desk};
use keqing_shared::records::FollowUp;
use keqing_shared::staff::Role;
use keqing_tests::big_followup;
use keqing_tests::http::{FORM, csrf_of, form, http};
use keqing_tests::{Office, Server};

fn outbox(office: &Office) -> u64 {
    office.ok(&["status", "--json"]).json()["outbox"]
        .as_u64()
        .unwrap()
}

#[test]
fn every_typed_field_is_refused_over_its_limit_by_name_in_cli_and_workstation() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("o"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = office.call("13800138000", "张三", "李娜", "2026-11-20T09:30");
    let before = (
        outbox(&office),
        office.ok(&["patient", &id, "--json"]).stdout,
    );
    let long = |n: usize| "病".repeat(n);
    let who = ["--patient", id.as_str(), "--staff", "李娜"];
    let with = |args: &[&str], extra: &[&str]| -> Vec<String> {
        args.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let call = |field: &str, value: &str| {
        with(
            &[
                "call",
                "--phone",
                "13800138001",
                "--name",
                "李四",
                "--source",
                "电视",
                "--staff",
                "李娜",
            ],
            &[field, value],
        )
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (call("--condition", &long(2001)), "condition"),
        (call("--treatment", &long(2001)), "treatment"),
        (call("--outcome", &long(2001)), "outcome"),
        (call("--address", &long(201)), "address"),
        (call("--relation", &long(41)), "relation"),
        (call("--disease", &long(41)), "disease"),
        (
            with(
                &["followup"],
                &[&who[..], &["--outcome", &long(2001)]].concat(),
            ),
            "outcome",
        ),
        (
            with(
                &["followup"],
                &[&who[..], &["--outcome", "好", "--next", &long(2001)]].concat(),
            ),
            "next",
        ),
        (
            with(
                &["hospital"],
                &[
                    &who[..],
                    &["--admitted", "2026-11-19", "--reason", &long(2001)],
                ]
                .concat(),
            ),
            "reason",
        ),
        (
            with(
                &["hospital"],
                &[
                    &who[..],
                    &["--admitted", "2026-11-19", "--hospital", &long(101)],
                ]
                .concat(),
            ),
            "hospital",
        ),
        (
            with(
                &["delivery"],
                &[
                    &who[..],
                    &[
                        "--product",
                        "脑心通",
                        "--address",
                        "广州",
                        "--notes",
                        &long(2001),
                    ],
                ]
                .concat(),
            ),
            "notes",
        ),
        (
            with(
                &["typical"],
                &[&who[..], &["--notes", &long(2001)]].concat(),
            ),
            "notes",
        ),
        (
            with(
                &["problem", "open"],
                &[&who[..], &["--description", &long(2001)]].concat(),
            ),
            "description",
        ),
        (
            with(&["update", "--patient", &id], &["--notes", &long(2001)]),
            "notes",
        ),
        (
            with(&["update", "--patient", &id], &["--address", &long(201)]),
            "address",
        ),
    ];
    for (args, field) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = office.run(&args);
        assert!(!r.ok, "{} was accepted", args[0]);
        assert!(
            r.stderr.contains(&format!("invalid {field}")) && r.stderr.contains("longer than"),
            "{} {field}: {}",
            args[0],
            r.stderr
        );
    }
    // Within the limits, the same fields are taken (the address of the
    // command line once allowed only 40 characters).
    office.ok(
        &with(&["update", "--patient", &id], &["--address", &long(200)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    office.ok(&["update", "--patient", &id, "--address", "广州"]);
    assert_eq!(outbox(&office), before.0 + 2, "only the two good edits");

    // The workstation: a 600 kB paste into the register's condition is
    // refused next to the field, and nothing is saved.
    let ui = office.workstation();
    let page = http(&ui.addr, "GET", "/call", &[], b"");
    let csrf = csrf_of(&page.text());
    let pasted = "x".repeat(600_000);
    let r = http(
        &ui.addr,
        "POST",
        "/call",
        &[FORM],
        &form(&[
            ("csrf", &csrf),
            ("phone", "13800138002"),
            ("name", "王五"),
            ("source", "报纸"),
            ("staff", "李娜"),
            ("condition", &pasted),
        ]),
    );
    assert_eq!(r.status, 422, "{}", r.status);
    let body = r.text();
    assert!(
        body.contains("id=\"condition-err\"") && body.contains("2000"),
        "the error sits next to the field"
    );
    drop(ui);
    assert_eq!(outbox(&office), before.0 + 2, "nothing of the paste");
    assert!(
        office
            .run(&["patient", "13800138002"])
            .stderr
            .contains("找不到患者")
    );
}

/// Grows dossier `id` by edits of ~0.9 MB (each under the change limit)
/// until the next would pass the dossier limit: that one is refused with
/// nothing saved. Returns the dossier's saved size.
fn grow_to_the_limit(desk: &mut Desk, id: &str, records: &mut usize) -> usize {
    loop {
        let outbox = desk.replica().outbox_len().unwrap();
        let heads = desk.replica().heads_of(id).unwrap();
        let batch: Vec<FollowUp> = (0..55).map(|i| big_followup(*records + i)).collect();
        match desk.edit_patient(id, |tx| {
            for f in &batch {
                tx.add(f)?;
            }
            Ok(())
        }) {
            Ok(_) => *records += batch.len(),
            Err(keqing_office::ClientError::Domain(keqing_shared::DomainError::TooLarge {
                what: "dossier",
                ..
            })) => {
                assert_eq!(
                    desk.replica().outbox_len().unwrap(),
                    outbox,
                    "nothing queued"
                );
                assert_eq!(desk.replica().heads_of(id).unwrap(), heads, "nothing saved");
                return desk.replica().load_document(id).unwrap().unwrap().len();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn dossiers_of_the_maximum_size_reach_a_new_device_and_headquarters() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let a = Office::new(tmp.path().join("a"));
    a.enroll_on(&server, Some("44"), "前台1");
    a.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    // A device of the office that synced before the dossiers grew reads
    // them from the log; the ones that join later, from snapshots.
    let b = Office::new(tmp.path().join("b"));
    b.enroll_on(&server, Some("44"), "前台2");
    a.ok(&["sync"]);
    b.ok(&["sync"]);

    let mut desk = Desk::open(&a.dir).unwrap();
    assert_eq!(desk.staff_member("李娜").unwrap().role, Role::Consultant);
    let mut records = 0;
    let mut sizes = Vec::new();
    for i in 0..5 {
        let id = desk
            .register_call(&CallInput {
                phone: format!("1390000000{i}"),
                name: format!("患者{i}"),
                source: "电视".into(),
                staff: "李娜".into(),
                at: keqing_shared::when::parse_datetime("2026-11-20T09:00").unwrap(),
                ..Default::default()
            })
            .unwrap()
            .dossier_id;
        sizes.push(grow_to_the_limit(&mut desk, &id, &mut records));
    }
    drop(desk);
    let total: usize = sizes.iter().sum();
    assert!(
        sizes.iter().all(|s| *s > 3 << 20 && *s <= 4 << 20),
        "each near the 4 MiB limit: {sizes:?}"
    );
    assert!(total > 16 << 20, "together more than one message may carry");

    a.ok(&["sync"]);
    assert_eq!(outbox(&a), 0, "everything pushed, batch by batch");
    b.ok(&["sync"]);
    let c = Office::new(tmp.path().join("c"));
    c.enroll_on(&server, Some("44"), "前台3");
    c.ok(&["sync"]);
    let hq = Office::new(tmp.path().join("hq"));
    hq.enroll_on(&server, None, "数据中心");
    hq.ok(&["sync"]);
    let heads = a.heads();
    assert_eq!(b.heads(), heads, "the log, batch by batch");
    assert_eq!(c.heads(), heads, "the snapshots, batch by batch");
    assert_eq!(hq.heads(), heads, "headquarters has them all");
    let r = hq
        .ok(&[
            "report",
            "daily",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-30",
            "--json",
        ])
        .json();
    assert_eq!(r["total"]["calls"], 5);
    assert_eq!(r["total"]["followups"]["done"], records);
}

/// The replica's own SQLite file, for what an older keqing left in it.
fn replica_file(office: &Office) -> rusqlite::Connection {
    rusqlite::Connection::open(office.dir.join("keqing.sqlite")).unwrap()
}

/// Puts a change into the replica as an older (or altered) keqing would
/// have: saved into the document and queued in the outbox.
fn queue_as_an_old_keqing_would(
    office: &Office,
    id: &str,
    edit: impl FnOnce(&mut automerge::Automerge),
) {
    let db = replica_file(office);
    let actor: Vec<u8> = db
        .query_row("SELECT actor FROM replica", [], |r| r.get(0))
        .unwrap();
    let stored: Vec<u8> = db
        .query_row("SELECT bytes FROM documents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    // This release keeps it packed; the older one writes it back as saved.
    let bytes = keqing_shared::packed::unpack(stored);
    let mut doc = automerge::Automerge::load(&bytes)
        .unwrap()
        .with_actor(automerge::ActorId::from(actor));
    edit(&mut doc);
    let change = doc.get_last_local_change().unwrap().clone();
    db.execute(
        "UPDATE documents SET bytes = ?2 WHERE id = ?1",
        rusqlite::params![id, doc.save_nocompress()],
    )
    .unwrap();
    db.execute(
        "INSERT INTO outbox (doc_id, hash, bytes) VALUES (?1, ?2, ?3)",
        rusqlite::params![id, change.hash().to_string(), change.raw_bytes()],
    )
    .unwrap();
}

#[test]
fn a_change_the_server_refuses_is_set_aside_and_the_rest_of_the_outbox_syncs() {
    use automerge::transaction::Transactable;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let office = Office::new(tmp.path().join("o"));
    office.enroll_on(&server, Some("44"), "前台1");
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let x = office.call("13800138000", "张三", "李娜", "2026-11-20T09:00");
    let y = office.call("13800138001", "李四", "李娜", "2026-11-20T10:00");
    office.ok(&["sync"]);

    // A 1.9 MB note an older workstation let through, then unrelated work.
    queue_as_an_old_keqing_would(&office, &x, |doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let (_, patient) = automerge::ReadDoc::get(tx, automerge::ROOT, "patient")?.unwrap();
            tx.put(&patient, "notes", "x".repeat(1_900_000))?;
            Ok(())
        })
        .unwrap();
    });
    office.ok(&[
        "followup",
        "--patient",
        &x,
        "--staff",
        "李娜",
        "--outcome",
        "之后的回访",
    ]);
    office.ok(&[
        "followup",
        "--patient",
        &y,
        "--staff",
        "李娜",
        "--outcome",
        "不相干的回访",
    ]);
    let r = office.ok(&["sync"]);
    assert!(
        r.stdout.contains("服务器拒绝了本机的 2 条变更"),
        "{}",
        r.stdout
    );
    let status = office.ok(&["status", "--json"]).json();
    assert_eq!(status["outbox"], 0, "the rest synced");
    assert_eq!(
        status["refused"], 2,
        "the note and the follow-up held behind it"
    );
    assert!(
        status["sync"]["last_error"].is_null(),
        "the round itself succeeded"
    );
    let listed = office.ok(&["quarantine", "list", "--json"]).json();
    let refused: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["kind"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|q| q["doc_id"] == x.as_str()));
    assert!(
        refused
            .iter()
            .any(|q| q["reason"].as_str().unwrap().contains("1048576")),
        "{refused:?}"
    );

    // A change the server alone can judge: it rewrites whose dossier it is.
    queue_as_an_old_keqing_would(&office, &y, |doc| {
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(automerge::ROOT, "office", "11")?;
            Ok(())
        })
        .unwrap();
    });
    let z = office.call("13800138002", "王五", "李娜", "2026-11-21T09:00");
    let r = office.ok(&["sync"]);
    assert!(
        r.stdout.contains("服务器拒绝了本机的 1 条变更"),
        "{}",
        r.stdout
    );
    let listed = office.ok(&["quarantine", "list", "--json"]).json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["doc_id"] == y.as_str()
                && q["reason"].as_str().unwrap().contains("PermissionDenied")),
        "{listed}"
    );

    // Headquarters has the work that was not refused, and nothing refused.
    let hq = Office::new(tmp.path().join("hq"));
    hq.enroll_on(&server, None, "数据中心");
    hq.ok(&["sync"]);
    hq.ok(&["patient", &z]);
    let y_at_hq = hq.ok(&["patient", &y, "--json"]).json();
    assert_eq!(y_at_hq["dossier"]["office"], "44");
    assert_eq!(
        y_at_hq["dossier"]["followups"].as_array().unwrap().len(),
        1,
        "the unrelated follow-up arrived"
    );
    let x_at_hq = hq.ok(&["patient", &x, "--json"]).json();
    assert!(x_at_hq["dossier"]["patient"]["notes"].is_null());
    let national = Server::admin(
        &server.dir,
        &[
            "report",
            "national",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
            "--json",
        ],
    )
    .json();
    let line = |code: &str| {
        national["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["office"] == code)
            .map(|l| l["calls"].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!((line("44"), line("11")), (3, 0));

    // Requeued (after an upgrade, say), they are refused again, and set
    // aside again: the outbox is never stuck behind them.
    let r = office.ok(&["quarantine", "retry"]);
    assert!(r.stdout.contains("3 条本机变更已放回"), "{}", r.stdout);
    office.ok(&["sync"]);
    assert_eq!(office.ok(&["status", "--json"]).json()["refused"], 3);
}

#[test]
fn refused_and_offline_are_told_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path().join("server"), "127.0.0.1:0");
    let office = Office::new(tmp.path().join("o"));
    office.enroll_on(&server, Some("44"), "前台1");
    office.ok(&["sync"]);
    let header = |office: &Office| {
        let ui = office.workstation();
        http(&ui.addr, "GET", "/", &[], b"").text()
    };

    let dir = server.dir.clone();
    server.kill();
    assert!(!office.run(&["sync"]).ok);
    let status = office.ok(&["status", "--json"]).json();
    assert_eq!(status["sync"]["last_error_kind"], "offline");
    let page = header(&office);
    assert!(page.contains("data-state=\"offline\"") && page.contains("离线"));
    assert!(
        office
            .ok(&["status"])
            .stdout
            .contains("上次同步失败 (离线)")
    );

    let server2 = Server::start(&dir, "127.0.0.1:0");
    let revoked = Server::admin(&dir, &["device", "revoke", "前台1"]);
    assert!(revoked.ok);
    // The replica still knows the old address: enrol it at the new one.
    let db = replica_file(&office);
    db.execute(
        "UPDATE sync_state SET server = ?1",
        [format!("http://{}", server2.addr)],
    )
    .unwrap();
    drop(db);
    let r = office.run(&["sync"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("被拒") && r.stderr.contains("revoked"),
        "{}",
        r.stderr
    );
    let status = office.ok(&["status", "--json"]).json();
    assert_eq!(status["sync"]["last_error_kind"], "refused");
    let page = header(&office);
    assert!(
        page.contains("data-state=\"refused\"") && page.contains("被拒"),
        "the header says refused, not offline"
    );
    assert!(page.contains("revoked"), "and why");
}
