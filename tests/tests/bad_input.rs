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
    let next_year =
        keqing_shared::when::fmt_datetime(keqing_host::now_cst() + chrono::Duration::days(365));
    let call = |phone: &str, at: &str, staff: &str| {
        vec![
            "call", "--phone", phone, "--name", "张三", "--source", "电视", "--staff", staff,
            "--at", at,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let args = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
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
            args(&[
                "followup",
                "--patient",
                "13999999999",
                "--staff",
                "李娜",
                "--outcome",
                "x",
            ]),
            "no patient",
        ),
        (
            args(&[
                "followup",
                "--patient",
                "deadbeef-0000",
                "--staff",
                "李娜",
                "--outcome",
                "x",
            ]),
            "no patient",
        ),
        (
            args(&[
                "purchase",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--product",
                "药",
                "--amount=-5",
            ]),
            "invalid amount",
        ),
        (
            args(&[
                "purchase",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--product",
                "药",
                "--amount",
                "5",
                "--runout",
                "2026-13-01",
            ]),
            "invalid date",
        ),
        (
            args(&["staff", "add", "--name", "李娜", "--role", "consultant"]),
            "already exists",
        ),
        (
            args(&["staff", "add", "--name", "钱七", "--role", "boss"]),
            "unknown role",
        ),
        (args(&["due", "--date", "2026-11-31"]), "invalid date"),
        // A year typed wrong: more than a day after this computer's clock.
        (
            call("13800138000", &next_year, "李娜"),
            "晚于本机时间一天以上",
        ),
        (
            args(&[
                "visit",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--at",
                &next_year,
            ]),
            "晚于本机时间一天以上",
        ),
        (
            args(&[
                "visit",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--reason",
                "太贵了",
            ]),
            "reason",
        ),
        (
            args(&[
                "visit",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--reason",
                "其他",
            ]),
            "reason",
        ),
        (
            args(&[
                "nonpatient",
                "--phone",
                "13700000000",
                "--kind",
                "推销员",
                "--staff",
                "李娜",
            ]),
            "kind",
        ),
        (
            args(&[
                "nonpatient",
                "--kind",
                "骚扰",
                "--staff",
                "李娜",
                "--at",
                &next_year,
            ]),
            "晚于本机时间一天以上",
        ),
        (
            args(&["nonpatient", "--kind", "骚扰", "--staff", "无名"]),
            "unknown staff",
        ),
        (
            args(&[
                "plan",
                "stop",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--reason",
                "出差",
            ]),
            "reason",
        ),
        (
            args(&[
                "plan",
                "assign",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--to",
                "无名",
            ]),
            "unknown staff",
        ),
        (
            args(&["plan", "resume", "--patient", &id, "--staff", "李娜"]),
            "not stopped",
        ),
        (
            args(&[
                "plan",
                "add",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--date",
                "2026-02-30",
            ]),
            "invalid date",
        ),
        (
            args(&[
                "delivery",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--product",
                "药",
                "--address",
                "广州",
                "--quantity=-2",
            ]),
            "quantity",
        ),
        (
            args(&["deliver", "--patient", &id, "--staff", "李娜"]),
            "no pending delivery",
        ),
        (args(&["list", "--category", "大客户"]), "category"),
        (
            args(&["init", "--office", "44", "--device", "x"]),
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
        if !why.contains(' ') {
            // A one-word reason is what the message must name (the field,
            // or the Chinese of the refusal).
            assert!(r.stderr.contains(why), "{why}: {}", r.stderr);
        }
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
