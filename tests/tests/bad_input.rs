//! Bad input: a clear message naming the refusal, the field and the value,
//! a non-zero exit status, and nothing changed.

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
        (
            call("12345", "2026-11-20T09:30", "李娜"),
            "无效电话号码 invalid phone number `12345`",
        ),
        (
            call("1380013800a", "2026-11-20T09:30", "李娜"),
            "无效电话号码 invalid phone number `1380013800a`",
        ),
        (
            call("13800138000", "2026-02-30T09:30", "李娜"),
            "无效日期 invalid date/time `2026-02-30T09:30`",
        ),
        (
            call("13800138000", "tomorrow", "李娜"),
            "无效日期 invalid date/time `tomorrow`",
        ),
        (
            call("13800138000", "2026-11-20T09:30", "无名"),
            "找不到员工 no staff member named `无名`",
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
            "找不到患者 no patient matches `13999999999`",
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
            "找不到患者 no patient matches `deadbeef-0000`",
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
            "invalid amount: `-5`",
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
            "无效日期 invalid date/time `2026-13-01`",
        ),
        (
            args(&["staff", "add", "--name", "李娜", "--role", "consultant"]),
            "员工已存在 a staff member named `李娜` already exists",
        ),
        (
            args(&["staff", "add", "--name", "钱七", "--role", "boss"]),
            "未知岗位 unknown role `boss`",
        ),
        (
            args(&["due", "--date", "2026-11-31"]),
            "无效日期 invalid date/time `2026-11-31`",
        ),
        // A year typed wrong: more than a day after this computer's clock.
        (call("13800138000", &next_year, "李娜"), "invalid at: "),
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
            "invalid at: ",
        ),
        (
            args(&[
                "visit",
                "--patient",
                &id,
                "--staff",
                "李娜",
                "--reason",
                "价格",
                "--reason-text",
                "太贵了",
            ]),
            // (A reason the list lacks is kept as 其他 with its text: the
            // steering test.)
            "invalid reason_text: only 其他 takes a text",
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
            "invalid reason_text: 其他 needs its text",
        ),
        (
            args(&[
                "nonpatient",
                "--phone",
                "13700000000",
                "--kind",
                " ",
                "--staff",
                "李娜",
            ]),
            // (A kind the list lacks is kept as 其他 with its text: the
            // steering test.)
            "invalid kind: must not be empty",
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
            "invalid at: ",
        ),
        (
            args(&["nonpatient", "--kind", "骚扰", "--staff", "无名"]),
            "找不到员工 no staff member named `无名`",
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
            "invalid reason: `出差`",
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
            "invalid to: `无名` is not active staff",
        ),
        (
            args(&["plan", "resume", "--patient", &id, "--staff", "李娜"]),
            "回访未停 follow-ups are not stopped",
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
            "无效日期 invalid date/time `2026-02-30`",
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
            "invalid quantity: -2",
        ),
        (
            args(&["deliver", "--patient", &id, "--staff", "李娜"]),
            "没有待送的外送 no pending delivery",
        ),
        (
            args(&["list", "--category", "大客户"]),
            "invalid category: `大客户`",
        ),
        (
            args(&["init", "--office", "44", "--device", "x"]),
            "already holds a replica",
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
        // The message names the refusal (in Chinese and English), the field
        // and the value at fault: not merely some failure.
        assert!(
            r.stderr.contains(why),
            "expected the refusal {why:?}, got: {}",
            r.stderr
        );
        if why.starts_with("invalid at") {
            assert!(
                r.stderr.contains("晚于本机时间一天以上"),
                "a date far ahead is named as such: {}",
                r.stderr
            );
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
