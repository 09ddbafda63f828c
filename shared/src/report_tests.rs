use super::*;

use crate::when::{parse_date, parse_datetime};

fn t(s: &str) -> NaiveDateTime {
    parse_datetime(s).unwrap()
}

fn d(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

fn call(office: &str, dossier: &str, at: &str, staff: &str, source: &str) -> CallFact {
    CallFact {
        office: office.into(),
        dossier: dossier.into(),
        at: t(at),
        staff: staff.into(),
        source: source.into(),
        disease: Some("冠心病".into()),
    }
}

fn visit(office: &str, dossier: &str, at: &str, purchased: bool) -> VisitFact {
    VisitFact {
        office: office.into(),
        dossier: dossier.into(),
        at: t(at),
        staff: "王医生".into(),
        purchased,
        reason: (!purchased).then(|| "价格".to_string()),
    }
}

fn purchase(office: &str, dossier: &str, at: &str, nth: u32, prev: Option<&str>) -> PurchaseFact {
    PurchaseFact {
        office: office.into(),
        dossier: dossier.into(),
        at: t(at),
        staff: "王医生".into(),
        amount_fen: 10_000,
        order: PurchaseOrder {
            nth,
            prev_runout: prev.map(d),
        },
    }
}

#[test]
fn funnel_follows_each_caller_from_the_first_call_in_the_range() {
    let rows = ReportRows {
        calls: vec![
            call("44", "a", "2026-11-20T09:00", "李娜", "电视"),
            call("44", "a", "2026-11-21T09:00", "赵敏", "报纸"),
            call("44", "b", "2026-11-20T10:00", "李娜", "报纸"),
            call("44", "c", "2026-11-22T10:00", "赵敏", "电视"),
            // Before the range: not counted, and not c's first call.
            call("44", "c", "2026-11-01T10:00", "赵敏", "电视"),
        ],
        visits: vec![
            visit("44", "a", "2026-11-21T15:00", true),
            // A visit before c's call in the range does not convert it.
            visit("44", "c", "2026-11-20T08:00", false),
        ],
        purchases: vec![purchase("44", "a", "2026-11-21T15:10", 1, None)],
        ..Default::default()
    };
    let r = build(
        &Scope::Office("44".into()),
        d("2026-11-20"),
        d("2026-11-22"),
        &rows,
    );
    assert_eq!(r.lines.len(), 1);
    let l = &r.total;
    assert_eq!(
        (l.calls, l.callers, l.callers_visited, l.callers_bought),
        (4, 3, 1, 1)
    );
    assert_eq!((l.visits, l.visits_bought, l.purchases), (2, 1, 1));
    let tv = r.by_source.iter().find(|s| s.source == "电视").unwrap();
    // a's first call in the range came through TV; c's too.
    assert_eq!((tv.calls, tv.callers, tv.visited, tv.bought), (2, 2, 1, 1));
    let lina = r.staff.iter().find(|s| s.staff == "李娜").unwrap();
    assert_eq!((lina.calls, lina.callers, lina.callers_bought), (2, 2, 1));
    let zhao = r.staff.iter().find(|s| s.staff == "赵敏").unwrap();
    assert_eq!((zhao.calls, zhao.callers), (2, 1));
    assert_eq!(r.by_day.len(), 3);
    assert_eq!(r.by_day[0].date, "2026-11-20");
    assert_eq!(r.by_day[0].calls, 2);
    for d in &r.by_day {
        let by_source: u64 = d.sources.iter().map(|c| c.count).sum();
        assert_eq!(by_source, d.calls, "{}", d.date);
    }
}

#[test]
fn repurchase_and_on_time_refills() {
    let rows = ReportRows {
        purchases: vec![
            purchase("44", "a", "2026-11-20T10:00", 2, Some("2026-11-25")),
            purchase("44", "b", "2026-11-20T10:00", 3, Some("2026-11-18")),
            purchase("44", "c", "2026-11-20T10:00", 1, None),
            purchase("44", "c", "2026-11-20T11:00", 1, None),
        ],
        ..Default::default()
    };
    let r = build(
        &Scope::Office("44".into()),
        d("2026-11-20"),
        d("2026-11-20"),
        &rows,
    );
    let l = &r.total;
    assert_eq!(
        (l.purchases, l.buyers, l.new_buyers, l.repeat_buyers),
        (4, 3, 1, 2)
    );
    assert_eq!((l.refills, l.refills_on_time), (2, 1));
    assert_eq!(l.amount_fen, 40_000);
    let doctor = &r.staff[0];
    assert_eq!((doctor.buyers, doctor.repeat_buyers), (3, 2));
}

#[test]
fn purchase_days_are_counted_not_purchase_records() {
    use crate::records::Purchase;
    let p = |at: &str, runout: Option<&str>| Purchase {
        id: at.into(),
        at: t(at),
        staff: "王医生".into(),
        product: "心脑通".into(),
        quantity: 1,
        amount_fen: 1,
        invoice: None,
        runout: runout.map(d),
        gifts: None,
        gift_receipt: None,
    };
    let orders = purchase_orders(&[
        p("2026-11-01T10:00", Some("2026-11-30")),
        p("2026-11-01T11:00", Some("2026-12-10")),
        p("2026-12-05T10:00", None),
    ]);
    assert_eq!(orders[0].nth, 1);
    assert_eq!(orders[1].nth, 1);
    assert_eq!(orders[1].prev_runout, None);
    assert_eq!(orders[2].nth, 2);
    assert_eq!(orders[2].prev_runout, Some(d("2026-12-10")));
}

#[test]
fn slot_counts_add_up_per_office() {
    let counts = |office: &str, due, overdue| SlotCounts {
        office: office.into(),
        due,
        due_on_time: due / 2,
        not_visited_due: 1,
        not_visited_on_time: 0,
        overdue,
    };
    let rows = ReportRows {
        slot_counts: vec![counts("44", 4, 3), counts("33", 2, 1)],
        followups: vec![FollowUpTally {
            office: "44".into(),
            staff: "赵敏".into(),
            day: d("2026-11-21"),
            done: 1,
            on_time: 0,
        }],
        ..Default::default()
    };
    let r = build(&Scope::National, d("2026-11-20"), d("2026-11-22"), &rows);
    assert_eq!(
        r.total.followups,
        FollowUpFigures {
            done: 1,
            due: 6,
            due_done_on_time: 3,
            overdue: 4,
            not_visited_due: 2,
            not_visited_on_time: 0,
        }
    );
    let gd = build(
        &Scope::Office("44".into()),
        d("2026-11-20"),
        d("2026-11-22"),
        &rows,
    );
    assert_eq!((gd.total.followups.due, gd.total.followups.overdue), (4, 3));
}

#[test]
fn marks_count_flags_by_the_ranges_end_and_problems_where_the_range_meets_them() {
    let (from, to) = (d("2026-11-20"), d("2026-11-22"));
    let mut m = MarkCounts::default();
    // Flagged before the range, on its first and last days, after it.
    for at in [
        "2026-10-01T09:00",
        "2026-11-20T00:00",
        "2026-11-22T23:59",
        "2026-11-23T00:00",
    ] {
        m.count_typical(t(at), from, to);
    }
    assert_eq!((m.typical, m.typical_new), (3, 2));
    let mut m = MarkCounts::default();
    let problems = [
        // Opened before, resolved on the last day: resolved.
        ("2026-11-01T09:00", Some("2026-11-22T23:00")),
        // Opened on the first day, never resolved: opened and open.
        ("2026-11-20T00:00", None),
        // Opened before, resolved after the range: open at its end.
        ("2026-11-01T09:00", Some("2026-11-23T00:00")),
        // Resolved before the range, opened after it: neither.
        ("2026-11-01T09:00", Some("2026-11-19T23:59")),
        ("2026-11-23T08:00", None),
        // Opened and resolved within it.
        ("2026-11-21T08:00", Some("2026-11-21T09:00")),
    ];
    for (opened, resolved) in problems {
        m.count_problem(t(opened), resolved.map(t), from, to);
    }
    assert_eq!(
        (m.problems_opened, m.problems_open, m.problems_resolved),
        (2, 2, 2)
    );
}

#[test]
fn national_has_every_province_and_the_total_is_their_sum() {
    let rows = ReportRows {
        calls: vec![
            call("44", "a", "2026-11-20T09:00", "李娜", "电视"),
            call("33", "b", "2026-11-20T09:00", "周敏", "电视"),
            call("33", "c", "2026-11-20T09:30", "周敏", "网络"),
        ],
        marks: vec![
            MarkCounts {
                office: "33".into(),
                problems_opened: 0,
                problems_open: 0,
                problems_resolved: 1,
                ..Default::default()
            },
            MarkCounts {
                office: "44".into(),
                typical: 1,
                typical_new: 0,
                problems_opened: 1,
                problems_open: 1,
                problems_resolved: 0,
            },
        ],
        ..Default::default()
    };
    let r = build(&Scope::National, d("2026-11-20"), d("2026-11-20"), &rows);
    assert_eq!(r.lines.len(), 27);
    let line = |code: &str| r.lines.iter().find(|l| l.office == code).unwrap();
    assert_eq!(line("33").calls, 2);
    assert_eq!(line("33").name, "浙江");
    assert_eq!(line("44").calls, 1);
    assert_eq!(line("11").calls, 0);
    assert_eq!(r.total.calls, 3);
    assert_eq!(r.total.name, "合计");
    assert_eq!(
        (
            r.total.problems_opened,
            r.total.problems_open,
            r.total.problems_resolved
        ),
        (1, 1, 1)
    );
    assert_eq!((r.total.typical, r.total.typical_new), (1, 0));

    // An office scope sees only its own rows.
    let zj = build(
        &Scope::Office("33".into()),
        d("2026-11-20"),
        d("2026-11-20"),
        &rows,
    );
    assert_eq!(zj.lines.len(), 1);
    assert_eq!(zj.total.calls, 2);
    assert_eq!(zj.lines[0], *line("33"));
}

#[test]
fn non_patient_calls_reasons_and_categories_count_per_office_and_sum_nationally() {
    let rows = ReportRows {
        calls: vec![call("44", "a", "2026-11-20T09:00", "李娜", "电视")],
        visits: vec![
            visit("44", "a", "2026-11-20T10:00", false),
            VisitFact {
                reason: Some("家属意见".to_string()),
                ..visit("11", "b", "2026-11-21T10:00", false)
            },
            visit("11", "c", "2026-11-21T11:00", true),
        ],
        nonpatient: vec![
            NonPatientFact {
                office: "44".into(),
                at: t("2026-11-20T11:00"),
                staff: "李娜".into(),
                kind: "打错电话".to_string(),
            },
            NonPatientFact {
                office: "11".into(),
                at: t("2026-11-21T11:00"),
                staff: "王芳".into(),
                kind: "媒体".to_string(),
            },
            // Outside the range: not counted.
            NonPatientFact {
                office: "11".into(),
                at: t("2026-11-25T11:00"),
                staff: "王芳".into(),
                kind: "媒体".to_string(),
            },
        ],
        categories: vec![
            CategoryCounts {
                office: "44".into(),
                categories: [3, 1, 0, 0, 0, 0],
                typical: 1,
                problem: 0,
            },
            CategoryCounts {
                office: "11".into(),
                categories: [0, 1, 2, 0, 1, 1],
                typical: 0,
                problem: 2,
            },
        ],
        ..Default::default()
    };
    let national = build(&Scope::National, d("2026-11-20"), d("2026-11-21"), &rows);
    // Non-patient calls are not calls.
    assert_eq!(national.total.calls, 1);
    let of = |list: &[Breakdown], office: &str, label: &str| {
        list.iter()
            .find(|b| b.office == office)
            .and_then(|b| b.counts.iter().find(|c| c.label == label))
            .map_or(0, |c| c.count)
    };
    assert_eq!(of(&national.nonpatient_calls, "44", "打错电话"), 1);
    assert_eq!(of(&national.nonpatient_calls, "11", "媒体"), 1);
    assert_eq!(of(&national.nonpatient_calls, "total", "媒体"), 1);
    assert_eq!(of(&national.not_bought_reasons, "total", "价格"), 1);
    assert_eq!(of(&national.not_bought_reasons, "total", "家属意见"), 1);
    assert_eq!(of(&national.categories, "total", "未到堂"), 3);
    assert_eq!(of(&national.categories, "total", "到堂未购"), 2);
    assert_eq!(of(&national.categories, "total", "问题"), 2);
    // Every breakdown: 27 provinces and the total, the total their sum.
    for list in [
        &national.nonpatient_calls,
        &national.not_bought_reasons,
        &national.categories,
    ] {
        assert_eq!(list.len(), 28);
        let total = list.last().unwrap();
        assert_eq!(total.office, "total");
        for (i, c) in total.counts.iter().enumerate() {
            let sum: u64 = list[..27].iter().map(|b| b.counts[i].count).sum();
            assert_eq!(c.count, sum, "{}", c.label);
        }
    }
    // An office's own report has the same line as the national one.
    let gd = build(
        &Scope::Office("44".into()),
        d("2026-11-20"),
        d("2026-11-21"),
        &rows,
    );
    assert_eq!(
        gd.nonpatient_calls[0],
        national.nonpatient_calls[national
            .nonpatient_calls
            .iter()
            .position(|b| b.office == "44")
            .unwrap()]
    );
    let person = national
        .staff
        .iter()
        .find(|s| s.staff == "王医生" && s.office == "11")
        .unwrap();
    assert_eq!(
        person
            .not_bought_reasons
            .iter()
            .find(|c| c.label == "家属意见")
            .unwrap()
            .count,
        1
    );
    let text = crate::sheets::text(&national);
    for title in [
        "【非正常咨询】",
        "【未购原因】",
        "【客户分类】",
        "【员工未购原因】",
    ] {
        assert!(text.contains(title), "{title}");
    }
}

fn event(office: &str, dossier: &str, at: &str, staff: &str, kind: StaffEventKind) -> StaffEvent {
    StaffEvent {
        office: office.into(),
        dossier: dossier.into(),
        at: t(at),
        staff: staff.into(),
        kind,
        activity: None,
        patient_since: None,
    }
}

#[test]
fn a_staff_score_is_the_weighted_sum_of_its_items_ranked_within_role() {
    let mut c = crate::catalog::Catalog::parse_toml(
        "[[source]]\ncode = \"tv\"\nname = \"电视\"\nkind = \"电视\"\n\
         [weights]\ncalls = 2\ntypical_cases = 7.5\n",
        1,
    )
    .unwrap();
    c.version = 1;
    let rows = ReportRows {
        calls: vec![
            call("44", "a", "2026-11-20T09:00", "李娜", "电视"),
            call("44", "b", "2026-11-20T10:00", "李娜", "电视"),
            call("44", "c", "2026-11-20T11:00", "赵敏", "电视"),
            call("11", "x", "2026-11-20T11:00", "周强", "电视"),
        ],
        visits: vec![visit("44", "a", "2026-11-20T15:00", true)],
        purchases: vec![purchase("44", "a", "2026-11-20T15:10", 1, None)],
        followups: vec![FollowUpTally {
            office: "44".into(),
            staff: "赵敏".into(),
            day: d("2026-11-21"),
            done: 3,
            on_time: 2,
        }],
        events: vec![
            event(
                "44",
                "a",
                "2026-11-21T10:00",
                "李娜",
                StaffEventKind::HomeVisit,
            ),
            event(
                "44",
                "a",
                "2026-11-21T11:00",
                "王刚",
                StaffEventKind::Delivery,
            ),
            event(
                "44",
                "b",
                "2026-11-21T12:00",
                "李娜",
                StaffEventKind::Typical,
            ),
            event(
                "44",
                "c",
                "2026-11-21T13:00",
                "赵敏",
                StaffEventKind::ProblemResolved,
            ),
            // Outside the range: not counted.
            event(
                "44",
                "c",
                "2026-11-25T13:00",
                "赵敏",
                StaffEventKind::ProblemResolved,
            ),
        ],
        roles: vec![
            StaffRole {
                office: "44".into(),
                staff: "李娜".into(),
                role: "咨询人员".into(),
            },
            StaffRole {
                office: "44".into(),
                staff: "赵敏".into(),
                role: "咨询人员".into(),
            },
            StaffRole {
                office: "11".into(),
                staff: "周强".into(),
                role: "咨询人员".into(),
            },
        ],
        catalog: Some(c),
        ..Default::default()
    };
    let r = build(&Scope::National, d("2026-11-20"), d("2026-11-22"), &rows);
    let score = |name: &str| r.staff_scores.iter().find(|s| s.staff == name).unwrap();
    // By hand, weights calls 2 (set), visit 2, bought 5, on time 1,
    // repeat 5, home visit 3, delivery 2, typical 7.5 (set), resolved 5:
    // 李娜: 2 calls (4) + a visited (2) + a bought (5) + 1 home visit (3)
    //       + 1 typical (7.5) = 21.5.
    assert_eq!(score("李娜").score, 21.5);
    // 赵敏: 1 call (2) + 2 on time (2) + 1 resolved (5) = 9.
    assert_eq!(score("赵敏").score, 9.0);
    // 王刚 (not on the roster): 1 delivery = 2.
    assert_eq!(score("王刚").score, 2.0);
    assert_eq!(score("王刚").role, "未登记");
    // 周强 at 11: 1 call = 2.
    assert_eq!(score("周强").score, 2.0);
    let items = &score("李娜").items;
    assert_eq!(items.len(), 9);
    assert_eq!(
        items.iter().map(|i| i.points).sum::<f64>(),
        score("李娜").score,
        "the items add up to the score"
    );
    let typical = items.iter().find(|i| i.item == "typical_cases").unwrap();
    assert_eq!(
        (typical.count, typical.weight, typical.points),
        (1, 7.5, 7.5)
    );
    // Ranks within the role: at 44 李娜 1, 赵敏 2; nationally 周强 3.
    assert_eq!(
        (score("李娜").rank_office, score("李娜").rank_national),
        (1, 1)
    );
    assert_eq!(
        (score("赵敏").rank_office, score("赵敏").rank_national),
        (2, 2)
    );
    assert_eq!(
        (score("周强").rank_office, score("周强").rank_national),
        (1, 3)
    );
    assert_eq!(score("王刚").rank_office, 1, "alone in his role");
    let li = r.staff.iter().find(|s| s.staff == "李娜").unwrap();
    assert_eq!((li.home_visits, li.typical_cases), (1, 1));
}

#[test]
fn an_activity_counts_participants_and_their_purchases_in_its_window() {
    use crate::activity::{Activity, ActivityKind};
    let activity = Activity {
        id: "clinic".into(),
        name: "冬季义诊".into(),
        kind: ActivityKind::Clinic,
        starts: d("2026-11-01"),
        ends: d("2026-11-03"),
        offices: vec![],
        source: Some("lecture".into()),
        by_office: Some("44".into()),
    };
    let joined = |dossier: &str, at: &str, since: &str| StaffEvent {
        activity: Some("clinic".into()),
        patient_since: Some(t(since)),
        ..event("44", dossier, at, "李娜", StaffEventKind::Joined)
    };
    let spend = |day: &str, source: &str, fen: i64| SpendFact {
        office: "44".into(),
        day: d(day),
        source_code: source.into(),
        amount_fen: fen,
    };
    let rows = ReportRows {
        events: vec![
            // a: an old patient; b: new; c joined after the activity ended
            // (not a participant); a joins twice (counted once).
            joined("a", "2026-11-01T09:00", "2025-01-01T00:00"),
            joined("a", "2026-11-02T09:00", "2025-01-01T00:00"),
            joined("b", "2026-11-02T09:00", "2026-11-02T08:00"),
            joined("c", "2026-11-04T09:00", "2026-11-02T08:00"),
        ],
        visits: vec![visit("44", "b", "2026-11-02T10:00", true)],
        purchases: vec![
            // b buys on day 2 and on the 30th day after the end: both count.
            purchase("44", "b", "2026-11-02T10:10", 1, None),
            purchase("44", "b", "2026-12-03T10:10", 2, None),
            // a buys on the 31st day after: not attributed.
            purchase("44", "a", "2026-12-04T10:10", 2, None),
            // c bought, but is no participant.
            purchase("44", "c", "2026-11-05T10:10", 1, None),
        ],
        spend: vec![
            spend("2026-11-01", "lecture", 30_000),
            spend("2026-11-03", "lecture", 10_000),
            // After the activity, and another source: not its spend.
            spend("2026-11-04", "lecture", 99_900),
            spend("2026-11-02", "tv", 99_900),
        ],
        activities: vec![activity],
        ..Default::default()
    };
    let r = build(
        &Scope::Office("44".into()),
        d("2026-11-01"),
        d("2026-12-31"),
        &rows,
    );
    let [a] = &r.activities[..] else {
        panic!("{:?}", r.activities)
    };
    assert_eq!(
        (a.participants, a.new_patients, a.visitors, a.buyers),
        (2, 1, 1, 1)
    );
    assert_eq!(a.sales_fen, 20_000);
    assert_eq!(a.spend_fen, 40_000);
    assert_eq!(a.cost_per_buyer_fen, Some(40_000));
    assert_eq!(a.defined_by, "广东");
    // Another office's report does not list it; a range after its window
    // neither.
    let other = build(
        &Scope::Office("11".into()),
        d("2026-11-01"),
        d("2026-12-31"),
        &rows,
    );
    assert!(other.activities.is_empty());
    let late = build(
        &Scope::Office("44".into()),
        d("2026-12-04"),
        d("2026-12-31"),
        &rows,
    );
    assert!(late.activities.is_empty());
    // National = the office's.
    let national = build(&Scope::National, d("2026-11-01"), d("2026-12-31"), &rows);
    assert_eq!(national.activities, r.activities);
}

#[test]
fn reasons_and_kinds_count_under_the_catalogues_labels_and_the_rest_under_other() {
    let c = crate::catalog::Catalog::parse_toml(
        "not_bought_reasons = [\"路途远\", \"价格\"]\n\
         nonpatient_kinds = [\"保险推销\"]\n\
         [[source]]\ncode = \"tv\"\nname = \"电视\"\nkind = \"电视\"\n",
        1,
    )
    .unwrap();
    let not_bought = |reason: &str| VisitFact {
        reason: Some(reason.to_string()),
        ..visit("44", "a", "2026-11-20T10:00", false)
    };
    let np = |kind: &str| NonPatientFact {
        office: "44".into(),
        at: t("2026-11-20T11:00"),
        staff: "李娜".into(),
        kind: kind.into(),
    };
    let rows = ReportRows {
        visits: vec![
            not_bought("路途远"),
            not_bought("家属意见"),
            not_bought("其他：下雨"),
        ],
        nonpatient: vec![np("保险推销"), np("打错电话")],
        catalog: Some(c),
        ..Default::default()
    };
    let r = build(
        &Scope::Office("44".into()),
        d("2026-11-20"),
        d("2026-11-20"),
        &rows,
    );
    let counts = |b: &Breakdown| -> Vec<(String, u64)> {
        b.counts
            .iter()
            .map(|c| (c.label.clone(), c.count))
            .collect()
    };
    assert_eq!(
        counts(&r.not_bought_reasons[0]),
        [("路途远".into(), 1), ("价格".into(), 0), ("其他".into(), 2)]
    );
    assert_eq!(
        counts(&r.nonpatient_calls[0]),
        [("保险推销".into(), 1), ("其他".into(), 1)]
    );
    assert_eq!(r.staff[0].not_bought_reasons.len(), 3);
    // What was typed under 其他 is listed, so the catalogue can grow.
    let typed: Vec<(&str, &str, u64)> = r
        .other_texts
        .iter()
        .map(|t| (t.list.as_str(), t.typed.as_str(), t.count))
        .collect();
    assert_eq!(
        typed,
        [
            ("未购原因", "下雨", 1),
            ("未购原因", "家属意见", 1),
            ("非正常咨询", "打错电话", 1)
        ]
    );
}
