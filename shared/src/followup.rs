//! The follow-up cadence (回访节奏), derived from a dossier and a date.
//!
//! Nothing here is stored in the replicated document: a schedule replicated
//! as tasks would be duplicated when two offices' copies merge. Every device
//! computes the same slots from the same dossier, so they agree after sync.
//!
//! The rules, from the seeds:
//! - **未到堂** (not visited): a caller who has not come to the office is
//!   called back within 3 days of the call. One slot per day with calls;
//!   a visit or purchase ends it.
//! - **未购** (visited, did not buy): called back within 3 days of the visit,
//!   to find the entry point (切入点) for the sale; a purchase ends it.
//! - **购药后** (after a purchase): calls on day 1, 3, 6, 10 and 15 after
//!   the purchase, then every 5 days ("然后平均每五天回访一次"). A new
//!   purchase starts a new cadence and ends the old one.
//! - **用药到期** (run-out): a call in the 3 days before the medication runs
//!   out, the ground for repurchase; a repurchase ends it.
//! - **特殊情况** (hospital stay, problem patient): "立即回访", due the day it
//!   is registered.
//!
//! A follow-up call (or a home visit) done at time `t` satisfies every open
//! slot it can: the slot it falls in and any earlier missed slot of the same
//! cadence. A slot is *on time* if satisfied by its deadline, *overdue* once
//! its deadline has passed unsatisfied.
//!
//! Where a cadence stops: the after-purchase calls continue until 30 days
//! past the run-out date (or 60 days after the purchase when no run-out date
//! was given); an unsatisfied slot of any other kind is closed 30 days after
//! its deadline. Past that a patient is the supervisor's decision, not a
//! line on every day's list.
//!
//! The plan can be changed case by case ("視具體情況而定"), each change a
//! record of the dossier ([`crate::records::PlanChange`]), applied in the
//! order they were made: an **extra** call on a day is a slot of its own
//! (计划回访); a **postpone** moves the next open slot (the earliest
//! deadline not yet done or closed when it was made) to the day given; a
//! **stop** closes every slot still open when it was made that falls due
//! before a **resume** (or at all, without one), so the patient leaves every
//! list; **assign** names who makes the calls ([`plan_state`]).

use crate::dossier::DossierView;
use crate::records::{PlanAction, PlanChange, Record, StopReason};
use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde::Serialize;

/// Days after a purchase with a fixed follow-up call.
pub const AFTER_PURCHASE_DAYS: [i64; 5] = [1, 3, 6, 10, 15];
/// Then one call every this many days.
pub const THEN_EVERY_DAYS: i64 = 5;
/// Non-visitors and non-buyers are called within this many days.
pub const CONVERSION_WINDOW_DAYS: i64 = 3;
/// The run-out call falls in this many days before the run-out date.
pub const RUNOUT_LEAD_DAYS: i64 = 3;
/// After-purchase calls go on this long past the run-out date.
pub const CADENCE_AFTER_RUNOUT_DAYS: i64 = 30;
/// Supply assumed when a purchase has no run-out date.
pub const DEFAULT_SUPPLY_DAYS: i64 = 30;
/// An unsatisfied one-off slot leaves the list this long after its deadline.
pub const STALE_AFTER_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    NotVisited,
    NotBought,
    AfterPurchase,
    RunOut,
    Special,
    /// An extra call staff planned (计划回访).
    Planned,
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::NotVisited => "not_visited",
            Cadence::NotBought => "not_bought",
            Cadence::AfterPurchase => "after_purchase",
            Cadence::RunOut => "run_out",
            Cadence::Special => "special",
            Cadence::Planned => "planned",
        }
    }

    pub fn parse(s: &str) -> Option<Cadence> {
        [
            Cadence::NotVisited,
            Cadence::NotBought,
            Cadence::AfterPurchase,
            Cadence::RunOut,
            Cadence::Special,
            Cadence::Planned,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether an unsatisfied slot of this kind is closed
    /// [`STALE_AFTER_DAYS`] after its deadline (the cadences end with their
    /// purchase's episode instead).
    fn goes_stale(self) -> bool {
        !matches!(self, Cadence::AfterPurchase | Cadence::RunOut)
    }
}

/// One follow-up call the rules ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub cadence: Cadence,
    /// Why the call is due, as staff read it (e.g. 购药后第3天回访).
    pub reason: String,
    /// For after-purchase slots, the day number after the purchase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<i64>,
    /// The event (call, visit, purchase, ...) that gave rise to the slot.
    pub anchor: NaiveDateTime,
    /// First day the slot is on the list.
    pub due_from: NaiveDate,
    /// Last day the call is on time.
    pub deadline: NaiveDate,
    /// The follow-up that satisfied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satisfied_at: Option<NaiveDateTime>,
    /// When it ended without a follow-up: a visit, a new purchase, or staleness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    NotYet,
    Due,
    Overdue,
    Done { on_time: bool },
    Closed,
}

impl Slot {
    /// Where the slot stands at the end of day `d`.
    pub fn status_on(&self, d: NaiveDate) -> SlotStatus {
        if let Some(s) = self.satisfied_at.filter(|s| s.date() <= d) {
            return SlotStatus::Done {
                on_time: s.date() <= self.deadline,
            };
        }
        if self.closed_at.is_some_and(|c| c.date() <= d) {
            return SlotStatus::Closed;
        }
        if d < self.due_from {
            SlotStatus::NotYet
        } else if d <= self.deadline {
            SlotStatus::Due
        } else {
            SlotStatus::Overdue
        }
    }

    /// Where the slot stands at the end of day `d`, as staff read it.
    pub fn label_on(&self, d: NaiveDate) -> String {
        match self.status_on(d) {
            SlotStatus::NotYet => "未到".into(),
            SlotStatus::Due => "应访".into(),
            SlotStatus::Overdue => format!("逾期{}天", (d - self.deadline).num_days()),
            SlotStatus::Done { on_time: true } => "按时完成".into(),
            SlotStatus::Done { on_time: false } => "逾期完成".into(),
            SlotStatus::Closed => "已结束".into(),
        }
    }

    pub fn on_time(&self) -> bool {
        self.satisfied_at.is_some_and(|s| s.date() <= self.deadline)
    }

    /// Whether a contact at `t` can satisfy this slot.
    fn accepts(&self, t: NaiveDateTime) -> bool {
        let after_anchor = t > self.anchor;
        let in_window = match self.cadence {
            // "Within N days of the event": any contact after it counts.
            Cadence::NotVisited | Cadence::NotBought | Cadence::Special => true,
            // A cadence call made before its day belongs to an earlier slot;
            // a planned call is made on its day or after.
            Cadence::AfterPurchase | Cadence::RunOut | Cadence::Planned => {
                t.date() >= self.due_from
            }
        };
        after_anchor && in_window && self.closed_at.is_none_or(|c| t < c)
    }
}

fn at_start(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

/// Every follow-up slot of a dossier, derived from its records alone.
pub fn schedule(view: &DossierView) -> Vec<Slot> {
    if view.merged_into.is_some() {
        return Vec::new();
    }
    let mut slots = Vec::new();
    // Events that end the conversion slots: a visit or purchase.
    let mut came: Vec<NaiveDateTime> = view.visits.iter().map(|v| v.at).collect();
    came.extend(view.purchases.iter().map(|p| p.at));
    came.sort();
    let first_purchase = view.purchases.iter().map(|p| p.at).min();
    let first_came = came.first().copied();

    // 未到堂: calls before the patient ever came; one slot per day of calls.
    let mut last_day = None;
    for call in &view.calls {
        if first_came.is_some_and(|c| c <= call.at) || last_day == Some(call.at.date()) {
            continue;
        }
        last_day = Some(call.at.date());
        let deadline = call.at.date() + Duration::days(CONVERSION_WINDOW_DAYS);
        slots.push(Slot {
            cadence: Cadence::NotVisited,
            reason: "未到堂三日内回访".into(),
            day: None,
            anchor: call.at,
            due_from: call.at.date() + Duration::days(1),
            deadline,
            satisfied_at: None,
            closed_at: first_came.or(Some(at_start(
                deadline + Duration::days(STALE_AFTER_DAYS + 1),
            ))),
        });
    }

    // 未购: visits without a purchase, before the patient ever bought.
    for visit in &view.visits {
        let bought_by_then = first_purchase.is_some_and(|p| p <= visit.at);
        if visit.purchased || bought_by_then {
            continue;
        }
        let deadline = visit.at.date() + Duration::days(CONVERSION_WINDOW_DAYS);
        slots.push(Slot {
            cadence: Cadence::NotBought,
            reason: "到堂未购三日内回访".into(),
            day: None,
            anchor: visit.at,
            due_from: visit.at.date() + Duration::days(1),
            deadline,
            satisfied_at: None,
            closed_at: first_purchase.filter(|p| *p > visit.at).or(Some(at_start(
                deadline + Duration::days(STALE_AFTER_DAYS + 1),
            ))),
        });
    }

    // 购药后 and 用药到期: one cadence per purchase day; a later purchase ends it.
    let mut episodes: Vec<(NaiveDateTime, Option<NaiveDate>)> = Vec::new();
    for p in &view.purchases {
        match episodes.last_mut() {
            Some((at, runout)) if at.date() == p.at.date() => {
                *at = (*at).max(p.at);
                *runout = (*runout).max(p.runout);
            }
            _ => episodes.push((p.at, p.runout)),
        }
    }
    for (i, &(bought, runout)) in episodes.iter().enumerate() {
        let next = episodes.get(i + 1).map(|e| e.0);
        let day0 = bought.date();
        let end = match runout {
            Some(r) => r.max(day0) + Duration::days(CADENCE_AFTER_RUNOUT_DAYS),
            None => day0 + Duration::days(DEFAULT_SUPPLY_DAYS + CADENCE_AFTER_RUNOUT_DAYS),
        };
        let ends_at = next.unwrap_or(at_start(end + Duration::days(1)));
        let mut days: Vec<i64> = AFTER_PURCHASE_DAYS.to_vec();
        let mut n = *AFTER_PURCHASE_DAYS.last().expect("non-empty") + THEN_EVERY_DAYS;
        while day0 + Duration::days(n) <= end {
            days.push(n);
            n += THEN_EVERY_DAYS;
        }
        for n in days {
            let due = day0 + Duration::days(n);
            if at_start(due) >= ends_at {
                break;
            }
            slots.push(Slot {
                cadence: Cadence::AfterPurchase,
                reason: format!("购药后第{n}天回访"),
                day: Some(n),
                anchor: bought,
                due_from: due,
                deadline: due,
                satisfied_at: None,
                closed_at: Some(ends_at),
            });
        }
        if let Some(r) = runout.filter(|r| *r > day0) {
            let due_from = (r - Duration::days(RUNOUT_LEAD_DAYS)).max(day0 + Duration::days(1));
            if at_start(due_from) < ends_at {
                slots.push(Slot {
                    cadence: Cadence::RunOut,
                    reason: format!("用药到期({})前回访", crate::when::fmt_date(r)),
                    day: None,
                    anchor: bought,
                    due_from,
                    deadline: r,
                    satisfied_at: None,
                    closed_at: Some(ends_at),
                });
            }
        }
    }

    // 特殊情况: hospital stays and problems are called back at once.
    let special = view
        .hospital_stays
        .iter()
        .map(|h| (h.at, "住院立即回访"))
        .chain(view.problems.iter().map(|p| (p.at, "问题患者立即回访")));
    for (at, reason) in special {
        let deadline = at.date();
        slots.push(Slot {
            cadence: Cadence::Special,
            reason: reason.into(),
            day: None,
            anchor: at,
            due_from: deadline,
            deadline,
            satisfied_at: None,
            closed_at: Some(at_start(deadline + Duration::days(STALE_AFTER_DAYS + 1))),
        });
    }

    // 计划回访: the extra calls staff planned.
    for change in view.plan.iter().filter(|c| c.action == PlanAction::Extra) {
        let Some(day) = change.date else { continue };
        slots.push(Slot {
            cadence: Cadence::Planned,
            reason: match &change.notes {
                Some(n) => format!("计划回访: {n}"),
                None => "计划回访".into(),
            },
            day: None,
            anchor: change.at,
            due_from: day,
            deadline: day,
            satisfied_at: None,
            closed_at: Some(stale_after(day)),
        });
    }

    // Each slot is satisfied by the first contact it accepts. Since a cadence's
    // windows only open later, this is the slot the contact falls in plus
    // every earlier missed one.
    let mut contacts: Vec<NaiveDateTime> = view.followups.iter().map(|f| f.at).collect();
    contacts.extend(view.home_visits.iter().map(|h| h.at()));
    contacts.sort();
    satisfy(&mut slots, &contacts);
    // The plan's changes, in the order they were made, on the slots as
    // they stood; then the contacts again, on the slots as the plan left
    // them (a moved slot is done by a call on or after its new day; a
    // stopped one by none).
    if view
        .plan
        .iter()
        .any(|c| matches!(c.action, PlanAction::Postpone | PlanAction::Stop))
    {
        apply_plan(&mut slots, &view.plan);
        for slot in &mut slots {
            slot.satisfied_at = None;
        }
        satisfy(&mut slots, &contacts);
    }
    slots.sort_by(|a, b| a.due_from.cmp(&b.due_from).then(a.cadence.cmp(&b.cadence)));
    slots
}

/// When an unsatisfied one-off slot due by `deadline` leaves the list.
fn stale_after(deadline: NaiveDate) -> NaiveDateTime {
    at_start(deadline + Duration::days(STALE_AFTER_DAYS + 1))
}

/// Gives each slot the first contact it accepts.
fn satisfy(slots: &mut [Slot], contacts: &[NaiveDateTime]) {
    for slot in slots {
        slot.satisfied_at = contacts.iter().copied().find(|&t| slot.accepts(t));
        if slot.satisfied_at.is_some() {
            slot.closed_at = None;
        }
    }
}

/// Whether a slot is still to do at time `t`: not done, not closed.
fn open_at(slot: &Slot, t: NaiveDateTime) -> bool {
    slot.satisfied_at.is_none_or(|s| s > t) && slot.closed_at.is_none_or(|c| c > t)
}

/// Applies the postpones and stops of `plan` (in order) to `slots`.
fn apply_plan(slots: &mut [Slot], plan: &[PlanChange]) {
    // When each stop ends: the first resume after it.
    let resumes: Vec<NaiveDateTime> = plan
        .iter()
        .filter(|c| c.action == PlanAction::Resume)
        .map(|c| c.at)
        .collect();
    for change in plan {
        match change.action {
            PlanAction::Postpone => {
                let Some(day) = change.date else { continue };
                let next = slots
                    .iter_mut()
                    .filter(|s| open_at(s, change.at))
                    .min_by_key(|s| (s.deadline, s.due_from, s.cadence));
                if let Some(slot) = next {
                    let stale = slot.cadence.goes_stale()
                        && slot.closed_at == Some(stale_after(slot.deadline));
                    slot.due_from = day;
                    slot.deadline = day;
                    if stale {
                        slot.closed_at = Some(stale_after(day));
                    }
                    slot.reason =
                        format!("{}（改期至{}）", slot.reason, crate::when::fmt_date(day));
                }
            }
            PlanAction::Stop => {
                let resumed = resumes.iter().copied().find(|r| *r > change.at);
                for slot in slots.iter_mut() {
                    let falls_due_before_resume = resumed.is_none_or(|r| slot.due_from < r.date());
                    if open_at(slot, change.at) && falls_due_before_resume {
                        slot.closed_at =
                            Some(slot.closed_at.map_or(change.at, |c| c.min(change.at)));
                    }
                }
            }
            PlanAction::Extra | PlanAction::Resume | PlanAction::Assign => {}
        }
    }
}

/// The follow-up plan's state after all its changes: who makes the calls,
/// and whether (why, since when) they are stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<(StopReason, NaiveDateTime)>,
}

/// The plan's state, from its changes in the order they were made.
pub fn plan_state(view: &DossierView) -> PlanState {
    let mut state = PlanState::default();
    for change in &view.plan {
        match change.action {
            PlanAction::Assign => state.assignee = change.assignee.clone(),
            PlanAction::Stop => {
                state.stopped = Some((change.reason.unwrap_or(StopReason::Other), change.at))
            }
            PlanAction::Resume => state.stopped = None,
            PlanAction::Extra | PlanAction::Postpone => {}
        }
    }
    state
}

/// The open slots of one dossier on day `d`, most urgent first.
pub fn open_on(slots: &[Slot], d: NaiveDate) -> Vec<&Slot> {
    let mut open: Vec<&Slot> = slots
        .iter()
        .filter(|s| matches!(s.status_on(d), SlotStatus::Due | SlotStatus::Overdue))
        .collect();
    open.sort_by_key(|s| (s.deadline, s.cadence));
    open
}

#[cfg(test)]
#[path = "followup_tests.rs"]
mod tests;
