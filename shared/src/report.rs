//! Report definitions, one set for every level.
//!
//! An office's daily summary (《电话咨询汇总表》) and headquarters' figures
//! are computed by these functions from the same rows, so a figure means the
//! same thing wherever it is read. Callers fetch the rows (from SQL
//! projections, or straight from dossiers) and pass them in.

use crate::followup::{Slot, SlotStatus};
use chrono::{NaiveDate, NaiveDateTime};
use serde::Serialize;
use std::collections::BTreeMap;

/// A consultation call as reports see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    pub at: NaiveDateTime,
    pub staff: String,
    pub source: String,
    pub disease: Option<String>,
}

/// A visit, a purchase or a follow-up as reports see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    pub at: NaiveDateTime,
    pub staff: String,
    /// Visits: whether the visitor bought. Purchases: always true.
    pub purchased: bool,
    /// Purchases: the amount in fen; 0 otherwise.
    pub amount_fen: i64,
}

/// A count under a label (an information source, a disease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub label: String,
    pub count: u64,
}

/// One staff member's line in the daily summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StaffLine {
    pub staff: String,
    pub calls: u64,
    pub visits: u64,
    pub purchases: u64,
    pub followups: u64,
}

/// The follow-up figures of a day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FollowUpFigures {
    /// Follow-up calls made that day.
    pub done: u64,
    /// Slots whose deadline is that day (not ended by a visit/purchase first).
    pub due: u64,
    /// Of those, satisfied by their deadline.
    pub due_done_on_time: u64,
    /// Slots past their deadline and still open at the end of the day.
    pub overdue: u64,
}

/// 电话咨询汇总表: an office's figures for one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyReport {
    pub date: NaiveDate,
    pub calls: u64,
    pub calls_by_source: Vec<Count>,
    pub calls_by_disease: Vec<Count>,
    pub visits: u64,
    pub visits_bought: u64,
    pub purchases: u64,
    pub amount_fen: i64,
    pub followups: FollowUpFigures,
    pub by_staff: Vec<StaffLine>,
}

fn counts(map: BTreeMap<String, u64>) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(label, count)| Count { label, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    v
}

/// Follow-up figures of day `d` over a set of slots.
pub fn followup_figures(d: NaiveDate, slots: &[Slot], followups_done: u64) -> FollowUpFigures {
    let mut f = FollowUpFigures {
        done: followups_done,
        ..Default::default()
    };
    for s in slots {
        let ended_before =
            s.satisfied_at.is_none() && s.closed_at.is_some_and(|c| c.date() <= s.deadline);
        if s.deadline == d && !ended_before {
            f.due += 1;
            if s.on_time() {
                f.due_done_on_time += 1;
            }
        }
        if s.status_on(d) == SlotStatus::Overdue {
            f.overdue += 1;
        }
    }
    f
}

/// Builds the daily summary of day `d`. Rows of other days are ignored, so
/// callers may pass a superset.
pub fn daily(
    d: NaiveDate,
    calls: &[CallRow],
    visits: &[ActivityRow],
    purchases: &[ActivityRow],
    followups: &[ActivityRow],
    slots: &[Slot],
) -> DailyReport {
    let on_day = |t: &NaiveDateTime| t.date() == d;
    let mut by_source = BTreeMap::new();
    let mut by_disease = BTreeMap::new();
    let mut staff: BTreeMap<String, StaffLine> = BTreeMap::new();
    fn line<'a>(staff: &'a mut BTreeMap<String, StaffLine>, name: &str) -> &'a mut StaffLine {
        staff.entry(name.to_string()).or_insert_with(|| StaffLine {
            staff: name.to_string(),
            ..Default::default()
        })
    }
    let mut report = DailyReport {
        date: d,
        calls: 0,
        calls_by_source: Vec::new(),
        calls_by_disease: Vec::new(),
        visits: 0,
        visits_bought: 0,
        purchases: 0,
        amount_fen: 0,
        followups: FollowUpFigures::default(),
        by_staff: Vec::new(),
    };
    for c in calls.iter().filter(|c| on_day(&c.at)) {
        report.calls += 1;
        *by_source.entry(c.source.clone()).or_insert(0) += 1;
        let disease = c.disease.clone().unwrap_or_else(|| "未填".to_string());
        *by_disease.entry(disease).or_insert(0) += 1;
        line(&mut staff, &c.staff).calls += 1;
    }
    for v in visits.iter().filter(|v| on_day(&v.at)) {
        report.visits += 1;
        report.visits_bought += u64::from(v.purchased);
        line(&mut staff, &v.staff).visits += 1;
    }
    for p in purchases.iter().filter(|p| on_day(&p.at)) {
        report.purchases += 1;
        report.amount_fen += p.amount_fen;
        line(&mut staff, &p.staff).purchases += 1;
    }
    let mut done = 0;
    for f in followups.iter().filter(|f| on_day(&f.at)) {
        done += 1;
        line(&mut staff, &f.staff).followups += 1;
    }
    report.followups = followup_figures(d, slots, done);
    report.calls_by_source = counts(by_source);
    report.calls_by_disease = counts(by_disease);
    report.by_staff = staff.into_values().collect();
    report
}
