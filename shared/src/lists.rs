//! 客户档案的分类整理: every dossier's category, for the supervisor's lists
//! and headquarters' counts. Derived from the dossier (and the day), never
//! stored in it.
//!
//! The primary category, one per patient, first that applies:
//! - **停访**: follow-ups are stopped (the plan's last stop not resumed);
//! - **流失** (lapsed): bought, and the run-out date of the last purchase
//!   day (or 30 days after it, without one) passed by more than 30 days
//!   with no later purchase;
//! - **复购**: bought on two days or more; **已购**: on one;
//! - **到堂未购**: visited, never bought; **未到堂**: neither.
//!
//! Flags beside it: **典型** (a typical case) and **问题** (a problem not yet
//! resolved).

use crate::dossier::DossierView;
use crate::followup::{CADENCE_AFTER_RUNOUT_DAYS, DEFAULT_SUPPLY_DAYS, plan_state};
use crate::records::ProblemState;
use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde::Serialize;

/// A patient's primary category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    NotVisited,
    VisitedNotBought,
    Bought,
    Repeat,
    Lapsed,
    Stopped,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::NotVisited,
        Category::VisitedNotBought,
        Category::Bought,
        Category::Repeat,
        Category::Lapsed,
        Category::Stopped,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            Category::NotVisited => "未到堂",
            Category::VisitedNotBought => "到堂未购",
            Category::Bought => "已购",
            Category::Repeat => "复购",
            Category::Lapsed => "流失",
            Category::Stopped => "停访",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::NotVisited => "not_visited",
            Category::VisitedNotBought => "visited_not_bought",
            Category::Bought => "bought",
            Category::Repeat => "repeat",
            Category::Lapsed => "lapsed",
            Category::Stopped => "stopped",
        }
    }

    /// By its code or its Chinese name.
    pub fn parse(s: &str) -> Option<Category> {
        let s = s.trim();
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s || c.chinese() == s)
    }
}

/// What a dossier's category depends on besides the day: what the
/// projections store, so that a list of any day is one query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// The category while it has not lapsed (停访 when stopped).
    pub base: Category,
    /// The first day it counts as 流失 (only for buyers, not stopped).
    pub lapses_on: Option<NaiveDate>,
    pub typical: bool,
    /// Problems not yet resolved.
    pub open_problems: u32,
    /// Who makes its follow-up calls.
    pub assignee: Option<String>,
    /// The latest contact: a call, visit, purchase, follow-up or home visit.
    pub last_contact: Option<NaiveDateTime>,
    /// The entry point the latest follow-up left for the next (下次切入点).
    pub next_entry: Option<String>,
}

impl Standing {
    /// The primary category on day `d`.
    pub fn category_on(&self, d: NaiveDate) -> Category {
        match self.lapses_on {
            Some(l) if l <= d && self.base != Category::Stopped => Category::Lapsed,
            _ => self.base,
        }
    }
}

/// A dossier's standing (see the module).
pub fn standing(view: &DossierView) -> Standing {
    let plan = plan_state(view);
    let mut days: Vec<NaiveDate> = view.purchases.iter().map(|p| p.at.date()).collect();
    days.sort();
    days.dedup();
    let base = if plan.stopped.is_some() {
        Category::Stopped
    } else if days.len() >= 2 {
        Category::Repeat
    } else if days.len() == 1 {
        Category::Bought
    } else if !view.visits.is_empty() {
        Category::VisitedNotBought
    } else {
        Category::NotVisited
    };
    let lapses_on = days
        .last()
        .filter(|_| base != Category::Stopped)
        .map(|last| {
            let runout = view
                .purchases
                .iter()
                .filter(|p| p.at.date() == *last)
                .filter_map(|p| p.runout)
                .max()
                .unwrap_or(*last + Duration::days(DEFAULT_SUPPLY_DAYS));
            runout.max(*last) + Duration::days(CADENCE_AFTER_RUNOUT_DAYS + 1)
        });
    let last_contact = view
        .calls
        .iter()
        .map(|c| c.at)
        .chain(view.visits.iter().map(|v| v.at))
        .chain(view.purchases.iter().map(|p| p.at))
        .chain(view.followups.iter().map(|f| f.at))
        .chain(view.home_visits.iter().map(|h| h.0.at))
        .max();
    Standing {
        base,
        lapses_on,
        typical: view.typical.as_ref().is_some_and(|t| t.flagged),
        open_problems: view
            .problems
            .iter()
            .filter(|p| p.state != ProblemState::Resolved)
            .count() as u32,
        assignee: plan.assignee,
        last_contact,
        next_entry: view
            .followups
            .iter()
            .filter(|f| f.next_entry.is_some())
            .max_by_key(|f| (f.at, f.id.clone()))
            .and_then(|f| f.next_entry.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dossier::Patient;
    use crate::records::*;

    fn t(s: &str) -> NaiveDateTime {
        crate::when::parse_datetime(s).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        crate::when::parse_date(s).unwrap()
    }

    fn empty() -> DossierView {
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

    #[test]
    fn every_patient_has_one_category_first_that_applies() {
        let mut v = empty();
        assert_eq!(
            standing(&v).category_on(d("2026-11-20")),
            Category::NotVisited
        );
        v.visits.push(Visit {
            id: "v".into(),
            at: t("2026-11-02T10:00"),
            staff: "王医生".into(),
            purchased: false,
            reason_not_bought: Some("价格".into()),
            notes: None,
        });
        assert_eq!(standing(&v).base, Category::VisitedNotBought);
        v.purchases
            .push(purchase("2026-11-03T10:00", Some("2026-12-03")));
        let s = standing(&v);
        assert_eq!(s.base, Category::Bought);
        // The run-out date passed by 30 days: lapsed from the 31st.
        assert_eq!(s.lapses_on, Some(d("2027-01-03")));
        assert_eq!(s.category_on(d("2027-01-02")), Category::Bought);
        assert_eq!(s.category_on(d("2027-01-03")), Category::Lapsed);
        // A second purchase day: a repeat buyer, lapsing later.
        v.purchases.push(purchase("2026-12-01T10:00", None));
        let s = standing(&v);
        assert_eq!(s.base, Category::Repeat);
        assert_eq!(
            s.lapses_on,
            Some(d("2027-01-31")),
            "30 days' supply + 30 + 1"
        );
        // Stopped trumps everything, and never lapses.
        v.plan.push(PlanChange {
            id: "s".into(),
            at: t("2026-12-05T10:00"),
            staff: "李娜".into(),
            action: PlanAction::Stop,
            date: None,
            reason: Some(StopReason::Died),
            assignee: None,
            notes: None,
        });
        let s = standing(&v);
        assert_eq!(s.category_on(d("2028-01-01")), Category::Stopped);
    }

    #[test]
    fn flags_the_last_contact_and_the_next_entry_point() {
        let mut v = empty();
        v.typical = Some(TypicalCase {
            flagged: true,
            at: t("2026-11-05T10:00"),
            staff: "李娜".into(),
            notes: None,
        });
        for (id, state) in [("a", ProblemState::Open), ("b", ProblemState::Resolved)] {
            v.problems.push(Problem {
                id: id.into(),
                at: t("2026-11-05T10:00"),
                staff: "李娜".into(),
                description: "头晕".into(),
                state,
                handling_at: None,
                resolved_at: None,
                resolution: None,
                resolved_by: None,
            });
        }
        for (id, at, next) in [
            ("f1", "2026-11-06T10:00", Some("问血压")),
            ("f2", "2026-11-09T10:00", None),
        ] {
            v.followups.push(FollowUp {
                id: id.into(),
                at: t(at),
                staff: "赵敏".into(),
                kind: "回访".into(),
                outcome: "好".into(),
                next_entry: next.map(str::to_string),
            });
        }
        let s = standing(&v);
        assert!(s.typical);
        assert_eq!(s.open_problems, 1);
        assert_eq!(s.last_contact, Some(t("2026-11-09T10:00")));
        assert_eq!(s.next_entry.as_deref(), Some("问血压"));
        for c in Category::ALL {
            assert_eq!(Category::parse(c.chinese()), Some(c));
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
    }
}
