//! Unit tests of the follow-up rules against the seeds' cadence.

use super::*;
use crate::dossier::{DossierView, Patient};
use crate::records::*;

fn d(s: &str) -> NaiveDate {
    crate::when::parse_date(s).unwrap()
}
fn t(s: &str) -> NaiveDateTime {
    crate::when::parse_datetime(s).unwrap()
}

fn view() -> DossierView {
    DossierView {
        id: "x".into(),
        office: "44".into(),
        created_at: t("2026-11-01T09:00"),
        patient: Patient::default(),
        calls: vec![],
        visits: vec![],
        purchases: vec![],
        followups: vec![],
        hospital_stays: vec![],
        greetings: vec![],
        home_visits: vec![],
        deliveries: vec![],
        problems: vec![],
        plan: vec![],
        participations: vec![],
        transfers: vec![],
        typical: None,
        merged_into: None,
        conflicts: vec![],
        entered_by: Default::default(),
    }
}

fn call(at: &str) -> Call {
    Call {
        id: format!("c{at}"),
        at: t(at),
        staff: "李娜".into(),
        caller_phone: "13800138000".into(),
        relation: None,
        source: "电视".into(),
        disease: None,
        condition: None,
        treatment: None,
        outcome: None,
    }
}
fn visit(at: &str, purchased: bool) -> Visit {
    Visit {
        id: format!("v{at}"),
        at: t(at),
        staff: "王医生".into(),
        purchased,
        reason_not_bought: None,
        notes: None,
    }
}
fn purchase(at: &str, runout: Option<&str>) -> Purchase {
    Purchase {
        id: format!("p{at}"),
        at: t(at),
        staff: "王医生".into(),
        product: "心脑康".into(),
        quantity: 1,
        amount_fen: 100,
        invoice: None,
        runout: runout.map(d),
        gifts: None,
        gift_receipt: None,
    }
}
fn followup(at: &str) -> FollowUp {
    FollowUp {
        id: format!("f{at}"),
        at: t(at),
        staff: "李娜".into(),
        kind: "回访".into(),
        outcome: "好".into(),
        next_entry: None,
    }
}

fn of(slots: &[Slot], c: Cadence) -> Vec<&Slot> {
    slots.iter().filter(|s| s.cadence == c).collect()
}

#[test]
fn non_visitor_is_due_within_three_days_then_overdue() {
    let mut v = view();
    v.calls.push(call("2026-11-20T09:30"));
    let slots = schedule(&v);
    assert_eq!(slots.len(), 1);
    let s = &slots[0];
    assert_eq!(s.cadence, Cadence::NotVisited);
    assert_eq!((s.due_from, s.deadline), (d("2026-11-21"), d("2026-11-23")));
    assert_eq!(s.status_on(d("2026-11-20")), SlotStatus::NotYet);
    assert_eq!(s.status_on(d("2026-11-21")), SlotStatus::Due);
    assert_eq!(s.status_on(d("2026-11-23")), SlotStatus::Due);
    assert_eq!(s.status_on(d("2026-11-24")), SlotStatus::Overdue);
}

#[test]
fn non_visitor_followup_within_three_days_is_on_time_later_is_late() {
    let mut v = view();
    v.calls.push(call("2026-11-20T09:30"));
    v.followups.push(followup("2026-11-22T10:00"));
    let s = &schedule(&v)[0];
    assert_eq!(s.satisfied_at, Some(t("2026-11-22T10:00")));
    assert!(s.on_time());
    assert_eq!(
        s.status_on(d("2026-11-25")),
        SlotStatus::Done { on_time: true }
    );

    let mut v = view();
    v.calls.push(call("2026-11-20T09:30"));
    v.followups.push(followup("2026-11-25T10:00"));
    let s = &schedule(&v)[0];
    assert!(!s.on_time());
    assert_eq!(s.status_on(d("2026-11-24")), SlotStatus::Overdue);
    assert_eq!(
        s.status_on(d("2026-11-25")),
        SlotStatus::Done { on_time: false }
    );
}

#[test]
fn a_followup_before_the_call_does_not_count() {
    let mut v = view();
    v.followups.push(followup("2026-11-19T10:00"));
    v.calls.push(call("2026-11-20T09:30"));
    assert_eq!(schedule(&v)[0].satisfied_at, None);
}

#[test]
fn a_visit_ends_the_non_visitor_slot() {
    let mut v = view();
    v.calls.push(call("2026-11-20T09:30"));
    v.visits.push(visit("2026-11-22T10:00", false));
    let slots = schedule(&v);
    let nv = of(&slots, Cadence::NotVisited);
    assert_eq!(nv.len(), 1);
    assert_eq!(nv[0].status_on(d("2026-11-22")), SlotStatus::Closed);
    assert_eq!(nv[0].status_on(d("2026-11-21")), SlotStatus::Due);
    // The visitor who did not buy is called within 3 days of the visit.
    let nb = of(&slots, Cadence::NotBought);
    assert_eq!(
        (nb[0].due_from, nb[0].deadline),
        (d("2026-11-23"), d("2026-11-25"))
    );
    // Calls after the visit make no new non-visitor slot.
    v.calls.push(call("2026-11-26T09:00"));
    assert_eq!(of(&schedule(&v), Cadence::NotVisited).len(), 1);
}

#[test]
fn calls_on_one_day_make_one_slot_and_a_followup_covers_earlier_days() {
    let mut v = view();
    v.calls.push(call("2026-11-20T09:30"));
    v.calls.push(call("2026-11-20T15:30"));
    v.calls.push(call("2026-11-21T09:30"));
    v.followups.push(followup("2026-11-22T09:00"));
    let slots = schedule(&v);
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| s.on_time()));
}

#[test]
fn purchase_cadence_is_day_1_3_6_10_15_then_every_5_days() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-30")));
    let slots = schedule(&v);
    let days: Vec<i64> = of(&slots, Cadence::AfterPurchase)
        .iter()
        .map(|s| s.day.unwrap())
        .collect();
    // Run-out 11-30 is day 29; calls go on 30 days past it: through day 59.
    assert_eq!(days, [1, 3, 6, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]);
    for s in of(&slots, Cadence::AfterPurchase) {
        assert_eq!(s.deadline, d("2026-11-01") + Duration::days(s.day.unwrap()));
        assert_eq!(s.due_from, s.deadline);
    }
    let ro = of(&slots, Cadence::RunOut);
    assert_eq!(
        (ro[0].due_from, ro[0].deadline),
        (d("2026-11-27"), d("2026-11-30"))
    );
}

#[test]
fn without_a_runout_date_the_cadence_runs_sixty_days() {
    let mut v = view();
    v.purchases.push(purchase("2026-11-01T10:00", None));
    let slots = schedule(&v);
    let last = of(&slots, Cadence::AfterPurchase)
        .last()
        .unwrap()
        .day
        .unwrap();
    assert_eq!(last, 60);
    assert!(of(&slots, Cadence::RunOut).is_empty());
}

#[test]
fn a_followup_satisfies_its_slot_and_every_earlier_missed_one() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-30")));
    v.followups.push(followup("2026-11-05T10:00")); // day 4: in the day-3 slot
    let slots = schedule(&v);
    let ap = of(&slots, Cadence::AfterPurchase);
    assert_eq!(
        ap[0].satisfied_at,
        Some(t("2026-11-05T10:00")),
        "day 1, missed"
    );
    assert_eq!(
        ap[1].satisfied_at,
        Some(t("2026-11-05T10:00")),
        "day 3, its slot"
    );
    assert!(!ap[0].on_time() && !ap[1].on_time());
    assert_eq!(
        ap[2].satisfied_at, None,
        "day 6 is not done by a call on day 4"
    );
    assert_eq!(ap[2].status_on(d("2026-11-07")), SlotStatus::Due);
    assert_eq!(ap[2].status_on(d("2026-11-08")), SlotStatus::Overdue);
}

#[test]
fn followups_on_the_due_days_are_all_on_time() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-16")));
    for day in [2, 4, 7, 11, 16] {
        v.followups
            .push(followup(&format!("2026-11-{day:02}T10:00")));
    }
    let slots = schedule(&v);
    let ap = of(&slots, Cadence::AfterPurchase);
    assert!(ap[..5].iter().all(|s| s.on_time()), "{ap:#?}");
    assert!(
        of(&slots, Cadence::RunOut)[0].on_time(),
        "the day-15 call is within the run-out window"
    );
    assert_eq!(ap[5].status_on(d("2026-11-21")), SlotStatus::Due);
}

#[test]
fn a_followup_on_the_purchase_day_satisfies_nothing() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-30")));
    v.followups.push(followup("2026-11-01T16:00"));
    assert!(schedule(&v).iter().all(|s| s.satisfied_at.is_none()));
}

#[test]
fn a_new_purchase_starts_a_new_cadence_and_ends_the_old() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-30")));
    v.purchases
        .push(purchase("2026-11-08T10:00", Some("2026-12-08")));
    let slots = schedule(&v);
    let ap = of(&slots, Cadence::AfterPurchase);
    let first: Vec<i64> = ap
        .iter()
        .filter(|s| s.anchor == t("2026-11-01T10:00"))
        .map(|s| s.day.unwrap())
        .collect();
    assert_eq!(
        first,
        [1, 3, 6],
        "slots on or after the repurchase day are gone"
    );
    assert_eq!(ap[2].status_on(d("2026-11-08")), SlotStatus::Closed);
    assert_eq!(ap[2].status_on(d("2026-11-07")), SlotStatus::Due);
    assert_eq!(ap[0].status_on(d("2026-11-07")), SlotStatus::Overdue);
    assert_eq!(ap[0].status_on(d("2026-11-08")), SlotStatus::Closed);
    let second: Vec<NaiveDate> = ap
        .iter()
        .filter(|s| s.anchor == t("2026-11-08T10:00"))
        .take(3)
        .map(|s| s.deadline)
        .collect();
    assert_eq!(second, [d("2026-11-09"), d("2026-11-11"), d("2026-11-14")]);
    // The first run-out call (11-27) was ended by the repurchase on 11-08.
    assert_eq!(of(&slots, Cadence::RunOut).len(), 1);
}

#[test]
fn two_purchases_on_one_day_are_one_cadence() {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-11-20")));
    v.purchases
        .push(purchase("2026-11-01T11:00", Some("2026-11-30")));
    let slots = schedule(&v);
    assert_eq!(
        of(&slots, Cadence::AfterPurchase)
            .iter()
            .filter(|s| s.day == Some(1))
            .count(),
        1
    );
    assert_eq!(of(&slots, Cadence::RunOut)[0].deadline, d("2026-11-30"));
}

#[test]
fn hospital_stays_and_problems_are_called_back_at_once() {
    let mut v = view();
    v.hospital_stays.push(HospitalStay {
        id: "h".into(),
        at: t("2026-11-10T09:00"),
        staff: "李娜".into(),
        admitted: d("2026-11-09"),
        discharged: None,
        hospital: None,
        reason: None,
    });
    let s = &schedule(&v)[0];
    assert_eq!(
        (s.cadence, s.due_from, s.deadline),
        (Cadence::Special, d("2026-11-10"), d("2026-11-10"))
    );
    assert_eq!(s.status_on(d("2026-11-11")), SlotStatus::Overdue);
    v.followups.push(followup("2026-11-10T11:00"));
    assert!(schedule(&v)[0].on_time());
}

#[test]
fn stale_slots_leave_the_list() {
    let mut v = view();
    v.calls.push(call("2026-11-01T09:30"));
    let s = &schedule(&v)[0];
    assert_eq!(s.status_on(d("2026-12-04")), SlotStatus::Overdue);
    assert_eq!(s.status_on(d("2026-12-05")), SlotStatus::Closed);
}

#[test]
fn a_merged_dossier_has_no_schedule() {
    let mut v = view();
    v.calls.push(call("2026-11-01T09:30"));
    v.merged_into = Some("y".into());
    assert!(schedule(&v).is_empty());
}

#[test]
fn open_on_lists_most_urgent_first() {
    let mut v = view();
    v.calls.push(call("2026-11-01T09:30"));
    v.purchases
        .push(purchase("2026-11-02T10:00", Some("2026-11-30")));
    let slots = schedule(&v);
    let open = open_on(&slots, d("2026-11-05"));
    // The non-visitor slot ended with the purchase; day 1 and day 3 are missed.
    let days: Vec<Option<i64>> = open.iter().map(|s| s.day).collect();
    assert_eq!(days, [Some(1), Some(3)]);
}

fn plan(at: &str, action: PlanAction) -> PlanChange {
    PlanChange {
        id: format!("plan{at}"),
        at: t(at),
        staff: "李娜".into(),
        action,
        date: None,
        reason: None,
        assignee: None,
        notes: None,
    }
}

/// The purchase cadence of a purchase on 2026-11-01 with a run-out date.
fn buyer() -> DossierView {
    let mut v = view();
    v.purchases
        .push(purchase("2026-11-01T10:00", Some("2026-12-01")));
    v
}

#[test]
fn an_extra_call_is_a_slot_of_its_own_done_on_or_after_its_day() {
    let mut v = buyer();
    v.plan.push(PlanChange {
        date: Some(d("2026-11-08")),
        notes: Some("问复查结果".into()),
        ..plan("2026-11-05T09:00", PlanAction::Extra)
    });
    let slots = schedule(&v);
    let extra = of(&slots, Cadence::Planned);
    assert_eq!(extra.len(), 1);
    assert_eq!(
        (extra[0].due_from, extra[0].deadline),
        (d("2026-11-08"), d("2026-11-08"))
    );
    assert!(extra[0].reason.contains("问复查结果"));
    // A call the day before is another slot's; one on the day is this one.
    v.followups.push(followup("2026-11-07T10:00"));
    v.followups.push(followup("2026-11-08T10:00"));
    let slots = schedule(&v);
    let extra = of(&slots, Cadence::Planned)[0];
    assert_eq!(extra.satisfied_at, Some(t("2026-11-08T10:00")));
}

#[test]
fn a_postpone_moves_the_next_open_slot_to_its_day() {
    let mut v = buyer();
    // Day 1 was called; the next open one is day 3 (2026-11-04).
    v.followups.push(followup("2026-11-02T10:00"));
    v.plan.push(PlanChange {
        date: Some(d("2026-11-06")),
        ..plan("2026-11-03T09:00", PlanAction::Postpone)
    });
    let slots = schedule(&v);
    let day3 = slots.iter().find(|s| s.day == Some(3)).unwrap();
    assert_eq!(
        (day3.due_from, day3.deadline),
        (d("2026-11-06"), d("2026-11-06"))
    );
    assert!(day3.reason.contains("改期至2026-11-06"), "{}", day3.reason);
    assert_eq!(
        day3.status_on(d("2026-11-05")),
        SlotStatus::NotYet,
        "off the list until then"
    );
    assert_eq!(
        slots
            .iter()
            .find(|s| s.day == Some(1))
            .unwrap()
            .status_on(d("2026-11-05")),
        SlotStatus::Done { on_time: true }
    );
    // A call on 2026-11-05 is before the new day: not this slot's.
    v.followups.push(followup("2026-11-05T10:00"));
    let day3 = schedule(&v).into_iter().find(|s| s.day == Some(3)).unwrap();
    assert_eq!(day3.satisfied_at, None);
}

#[test]
fn a_stop_takes_the_patient_off_every_list_until_resumed() {
    let mut v = buyer();
    v.calls.push(call("2026-10-30T09:00"));
    v.plan.push(PlanChange {
        reason: Some(StopReason::Refuses),
        ..plan("2026-11-05T09:00", PlanAction::Stop)
    });
    let slots = schedule(&v);
    for day in ["2026-11-06", "2026-11-20", "2026-12-15"] {
        assert!(open_on(&slots, d(day)).is_empty(), "nothing due on {day}");
    }
    // What was due before the stop was not due on its deadline any more.
    assert_eq!(
        plan_state(&v).stopped.map(|s| s.0),
        Some(StopReason::Refuses)
    );
    // Resumed on 2026-11-20: the cadence goes on from then, not before.
    v.plan.push(plan("2026-11-20T09:00", PlanAction::Resume));
    let slots = schedule(&v);
    assert!(open_on(&slots, d("2026-11-15")).is_empty());
    let open = open_on(&slots, d("2026-11-21"));
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].due_from, d("2026-11-21"), "day 20 of the cadence");
    assert_eq!(plan_state(&v).stopped, None);
}

#[test]
fn the_plan_is_its_changes_in_the_order_they_were_made() {
    let mut v = view();
    v.plan.push(PlanChange {
        assignee: Some("王芳".into()),
        ..plan("2026-11-02T09:00", PlanAction::Assign)
    });
    v.plan.push(PlanChange {
        assignee: Some("赵敏".into()),
        ..plan("2026-11-01T09:00", PlanAction::Assign)
    });
    // As a dossier reads them: sorted by time, then id.
    v.plan
        .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    assert_eq!(plan_state(&v).assignee.as_deref(), Some("王芳"));
}
