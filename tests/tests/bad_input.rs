//! Bad input: a clear message, a non-zero exit status, and nothing changed.

use keqing_tests::Office;

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("o"));
    office.ok(&["init", "--office", "44", "--device", "前台1"]);
    office.ok(&["staff", "add", "--name", "李娜", "--role", "consultant"]);
    let id = office
        .ok(&[
            "call",
            "--phone",
            "13800138000",
            "--name",
            "张三",
            "--age",
            "62",
            "--source",
            "电视",
            "--staff",
            "李娜",
            "--at",
            "2026-11-20T09:30",
        ])
        .last_line()
        .to_string();
    let snapshot = || {
        (
            office.ok(&["status", "--json"]).stdout,
            office.ok(&["patient", &id, "--json"]).stdout,
            office.ok(&["staff", "list", "--json"]).stdout,
        )
    };
    let before = snapshot();
    let call = |phone: &str, at: &str, staff: &str| {
        vec![
            "call", "--phone", phone, "--name", "张三", "--source", "电视", "--staff", staff,
            "--at", at,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (call("12345", "2026-11-20T09:30", "李娜"), "invalid phone"),
        (
            call("1380013800a", "2026-11-20T09:30", "李娜"),
            "invalid phone",
        ),
        (
            call("13800138000", "2026-02-30T09:30", "李娜"),
            "invalid date",
        ),
        (call("13800138000", "tomorrow", "李娜"), "invalid date"),
        (
            call("13800138000", "2026-11-20T09:30", "无名"),
            "unknown staff",
        ),
        (
            vec![
                "followup".into(),
                "--patient".into(),
                "13999999999".into(),
                "--staff".into(),
                "李娜".into(),
                "--outcome".into(),
                "x".into(),
            ],
            "no patient",
        ),
        (
            vec![
                "followup".into(),
                "--patient".into(),
                "deadbeef-0000".into(),
                "--staff".into(),
                "李娜".into(),
                "--outcome".into(),
                "x".into(),
            ],
            "no patient",
        ),
        (
            vec![
                "purchase".into(),
                "--patient".into(),
                id.clone(),
                "--staff".into(),
                "李娜".into(),
                "--product".into(),
                "药".into(),
                "--amount=-5".into(),
            ],
            "invalid amount",
        ),
        (
            vec![
                "purchase".into(),
                "--patient".into(),
                id.clone(),
                "--staff".into(),
                "李娜".into(),
                "--product".into(),
                "药".into(),
                "--amount".into(),
                "5".into(),
                "--runout".into(),
                "2026-13-01".into(),
            ],
            "invalid date",
        ),
        (
            vec![
                "staff".into(),
                "add".into(),
                "--name".into(),
                "李娜".into(),
                "--role".into(),
                "consultant".into(),
            ],
            "already exists",
        ),
        (
            vec![
                "staff".into(),
                "add".into(),
                "--name".into(),
                "钱七".into(),
                "--role".into(),
                "boss".into(),
            ],
            "unknown role",
        ),
        (
            vec!["due".into(), "--date".into(), "2026-11-31".into()],
            "invalid date",
        ),
        (
            vec![
                "init".into(),
                "--office".into(),
                "44".into(),
                "--device".into(),
                "x".into(),
            ],
            "already holds",
        ),
    ];
    for (args, why) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = office.run(&args);
        assert!(!r.ok, "{why}: {args:?} succeeded: {}", r.stdout);
        assert!(
            r.stderr.contains("错误 error:"),
            "{why}: a message on stderr: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{why}: {}", r.stderr);
        assert_eq!(snapshot(), before, "{why}: {args:?} changed the replica");
    }
}

#[test]
fn unknown_office_and_uninitialised_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let office = Office::new(tmp.path().join("x"));
    let r = office.run(&["init", "--office", "99", "--device", "前台1"]);
    assert!(
        !r.ok && r.stderr.contains("unknown office code `99`"),
        "{}",
        r.stderr
    );
    assert!(
        !tmp.path().join("x").join("keqing.sqlite").exists(),
        "nothing created"
    );
    let r = office.run(&["due"]);
    assert!(
        !r.ok && r.stderr.contains("not an initialised replica"),
        "{}",
        r.stderr
    );
    assert!(
        !tmp.path().join("x").exists(),
        "reading an uninitialised dir creates nothing"
    );
}
