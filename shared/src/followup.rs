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

use crate::dossier::DossierView;
use crate::records::Record;
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
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::NotVisited => "not_visited",
            Cadence::NotBought => "not_bought",
            Cadence::AfterPurchase => "after_purchase",
            Cadence::RunOut => "run_out",
            Cadence::Special => "special",
        }
    }

    pub fn parse(s: &str) -> Option<Cadence> {
        [
            Cadence::NotVisited,
            Cadence::NotBought,
            Cadence::AfterPurchase,
            Cadence::RunOut,
            Cadence::Special,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
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
            // A cadence call made before its day belongs to an earlier slot.
            Cadence::AfterPurchase | Cadence::RunOut => t.date() >= self.due_from,
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

    // Each slot is satisfied by the first contact it accepts. Since a cadence's
    // windows only open later, this is the slot the contact falls in plus
    // every earlier missed one.
    let mut contacts: Vec<NaiveDateTime> = view.followups.iter().map(|f| f.at).collect();
    contacts.extend(view.home_visits.iter().map(|h| h.at()));
    contacts.sort();
    for slot in &mut slots {
        slot.satisfied_at = contacts.iter().copied().find(|&t| slot.accepts(t));
        if slot.satisfied_at.is_some() {
            slot.closed_at = None;
        }
    }
    slots.sort_by(|a, b| a.due_from.cmp(&b.due_from).then(a.cadence.cmp(&b.cadence)));
    slots
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
