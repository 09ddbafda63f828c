//! Report definitions, one set for every level.
//!
//! An office's daily summary (《电话咨询汇总表》), a province report and
//! headquarters' national report are all [`build`] over the same kind of
//! rows, so a figure means the same thing wherever it is read. Callers fetch
//! the rows (the office replica's and the server's SQL projections hold the
//! same tables) and pass them in; rows outside the date range are ignored,
//! so a superset is harmless.
//!
//! Definitions, for a scope and the days `from..=to`:
//! - **calls**: consultation calls made in the range. **callers**: distinct
//!   patients with a call in the range; of them **visited** / **bought**:
//!   those with a visit / a purchase at or after their first call in the
//!   range and by its end (the conversion funnel). A caller's source and
//!   staff are those of that first call.
//! - **buyers**: distinct patients with a purchase in the range. **new**:
//!   their first purchase ever is in the range. **repeat**: they have bought
//!   on at least two days up to the end of the range; the repurchase rate is
//!   repeat / buyers. A **refill** is a purchase on a later day than an
//!   earlier one; it is **on time** if made by the run-out date the earlier
//!   purchases gave.
//! - **follow-ups**: *done* = follow-up calls in the range; *due* = slots
//!   whose deadline falls in the range (unless a visit or purchase ended them
//!   first); *on time* = of those, satisfied by the deadline; *overdue* =
//!   slots past their deadline and still open at the end of the range. The
//!   non-visitor share is the same restricted to 未到堂 slots.
//! - **typical cases**: patients flagged by the end of the range, and flagged
//!   within it. **problems**: opened in the range, open at its end, resolved
//!   in it.
//! - **non-patient calls** (非正常咨询): by kind, in the range; they are not
//!   calls, callers or anything of the funnel.
//! - **not-bought reasons** (未购原因): the visits in the range that did not
//!   buy, by the reason given (per office, nationally, per staff member).
//! - **categories** (客户分类): live dossiers by primary category as they
//!   stand now, lapse judged at the end of the range, and the flags 典型 and
//!   问题 (see [`crate::lists`]).
//! - **staff scores** (客情岗位评定): per person, the counts of
//!   [`crate::score::ITEMS`] in the range (home visits and deliveries made,
//!   typical cases marked and problems resolved by them among the rest),
//!   weighted by the catalogue's weights (the defaults without one), ranked
//!   within each role at the office and across the report's offices.
//! - **activities** (活动): those running at an office of the scope whose
//!   days, or the [`crate::activity::ATTRIBUTION_DAYS`] after, meet the
//!   range. *participants*: patients who took part in the range (within the
//!   activity's days); *new*: of them, dossiers created on or after its first
//!   day; *visitors* / *buyers* / *sales*: participants' visits and
//!   purchases in the range from its first day to the end of attribution;
//!   *spend*: its source's media spend on its days at its offices.

use crate::followup::Slot;
use crate::lists::Category;
use crate::office::OFFICES;
use chrono::{NaiveDate, NaiveDateTime};
use serde::Serialize;
use std::collections::BTreeMap;
// Keyed by dossier ids, tens of thousands a national report: foldhash
// (randomly seeded per process) hashes them several times faster than
// the standard SipHash, which was a sixth of a 1M-dossier report.
use foldhash::HashMap;

/// A consultation call as reports see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFact {
    pub office: String,
    pub dossier: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub source: String,
    pub disease: Option<String>,
}

/// A visit (到堂).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitFact {
    pub office: String,
    pub dossier: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub purchased: bool,
    /// Why it did not buy, as stored (`None` when it did): a list's name,
    /// `其他：<text>`, or text typed before there was a list; counted under
    /// [`crate::records::NotBoughtReason::label_of_stored`].
    pub reason: Option<String>,
}

/// A non-patient call (非正常咨询).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonPatientFact {
    pub office: String,
    pub at: NaiveDateTime,
    pub staff: String,
    /// Its kind as stored: counted under
    /// [`crate::records::NonPatientKind::label_of`].
    pub kind: String,
}

/// How many live dossiers of an office stand in each category at the end
/// of the range, and carry each flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryCounts {
    pub office: String,
    /// In the order of [`Category::ALL`].
    pub categories: [u64; 6],
    pub typical: u64,
    /// With a problem not yet resolved.
    pub problem: u64,
}

/// A purchase, with its place in the patient's purchase history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseFact {
    pub office: String,
    pub dossier: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub amount_fen: i64,
    /// See [`PurchaseOrder`].
    pub order: PurchaseOrder,
}

/// Where a purchase stands in its patient's history; derived from the
/// dossier by [`purchase_orders`] and kept in the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurchaseOrder {
    /// 1 for the first purchase day, 2 for the second, ...
    pub nth: u32,
    /// The run-out date the purchases of earlier days gave (the latest).
    pub prev_runout: Option<NaiveDate>,
}

/// The follow-up calls (回访) one staff member of an office made on one
/// day: counted where the rows are (a month of a national store holds
/// hundreds of thousands of them, and the report only counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpTally {
    pub office: String,
    pub staff: String,
    pub day: NaiveDate,
    pub done: u64,
    /// Of them, those that satisfied a slot by that slot's deadline.
    pub on_time: u64,
}

/// The follow-up slot figures of one office, counted by the row source
/// (there are far more slots than anything else, so they are counted where
/// they are stored, not shipped row by row). What is counted is defined
/// here: [`counts_as_due`] and [`Slot::on_time`] per slot, fixed when the
/// slot is projected; and *overdue at the end of day `to`*, which is exactly
/// `status_on(to) == Overdue`: the slot is on the list that day
/// (`due_from <= to`, not settled by its end) and its deadline is before
/// `to`. The projection crate tests its SQL against these functions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub office: String,
    /// Slots with their deadline in the range that [`counts_as_due`].
    pub due: u64,
    /// Of those, [`Slot::on_time`].
    pub due_on_time: u64,
    /// The same two restricted to 未到堂 slots.
    pub not_visited_due: u64,
    pub not_visited_on_time: u64,
    /// Slots overdue at the end of the range.
    pub overdue: u64,
}

/// The typical-case and problem figures of one office for the days
/// `from..=to`, counted by the row source: a store holds every flag ever
/// set and every problem ever opened, more with each year, and the report
/// only counts them. What is counted is defined here, by
/// [`MarkCounts::count_typical`] and [`MarkCounts::count_problem`]; the
/// projection crate tests its SQL against them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkCounts {
    pub office: String,
    /// Patients flagged typical by the end of the range.
    pub typical: u64,
    /// Of them, flagged within it.
    pub typical_new: u64,
    /// Problems opened in the range.
    pub problems_opened: u64,
    /// Problems opened by its end and not resolved by then.
    pub problems_open: u64,
    /// Problems resolved in the range.
    pub problems_resolved: u64,
}

impl MarkCounts {
    /// Adds another count of the same office's.
    pub fn add(&mut self, o: &MarkCounts) {
        self.typical += o.typical;
        self.typical_new += o.typical_new;
        self.problems_opened += o.problems_opened;
        self.problems_open += o.problems_open;
        self.problems_resolved += o.problems_resolved;
    }

    /// Counts a patient flagged typical at `at` (still flagged).
    pub fn count_typical(&mut self, at: NaiveDateTime, from: NaiveDate, to: NaiveDate) {
        if at.date() <= to {
            self.typical += 1;
            self.typical_new += u64::from(at.date() >= from);
        }
    }

    /// Counts a problem opened at `opened_at`, resolved at `resolved_at`.
    pub fn count_problem(
        &mut self,
        opened_at: NaiveDateTime,
        resolved_at: Option<NaiveDateTime>,
        from: NaiveDate,
        to: NaiveDate,
    ) {
        let opened = opened_at.date();
        let resolved = resolved_at.map(|r| r.date());
        self.problems_opened += u64::from(opened >= from && opened <= to);
        self.problems_open += u64::from(opened <= to && resolved.is_none_or(|r| r > to));
        self.problems_resolved += u64::from(resolved.is_some_and(|r| r >= from && r <= to));
    }
}

/// Media spend (媒体投放) of one office on one source on one day, as
/// headquarters imported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendFact {
    pub office: String,
    pub day: NaiveDate,
    /// The catalogue source's code.
    pub source_code: String,
    pub amount_fen: i64,
}

/// What a [`StaffEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffEventKind {
    /// A home visit (家访) made.
    HomeVisit,
    /// A delivery (外送) handed over.
    Delivery,
    /// The patient marked a typical case (典型病例).
    Typical,
    /// A problem resolved.
    ProblemResolved,
    /// The patient took part in an activity.
    Joined,
}

impl StaffEventKind {
    pub const ALL: [StaffEventKind; 5] = [
        StaffEventKind::HomeVisit,
        StaffEventKind::Delivery,
        StaffEventKind::Typical,
        StaffEventKind::ProblemResolved,
        StaffEventKind::Joined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffEventKind::HomeVisit => "home_visit",
            StaffEventKind::Delivery => "delivery",
            StaffEventKind::Typical => "typical",
            StaffEventKind::ProblemResolved => "problem_resolved",
            StaffEventKind::Joined => "joined",
        }
    }

    pub fn parse(s: &str) -> Option<StaffEventKind> {
        StaffEventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A dated deed credited to one staff member (derived from a dossier and
/// kept in the projections): what the evaluation counts beyond calls,
/// visits, purchases and follow-ups, and the activity participations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffEvent {
    pub office: String,
    pub dossier: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub kind: StaffEventKind,
    /// The activity (participations only).
    pub activity: Option<String>,
    /// When the dossier was created (participations only: a new patient).
    pub patient_since: Option<NaiveDateTime>,
}

/// A staff member's role (岗位) as the office's roster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRole {
    pub office: String,
    pub staff: String,
    /// The role's Chinese name.
    pub role: String,
}

/// The rows a report is built from. A row source must include at least:
/// calls, visits, purchases and follow-ups made in the range; the slot and
/// mark counts of each office.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRows {
    pub calls: Vec<CallFact>,
    pub visits: Vec<VisitFact>,
    pub purchases: Vec<PurchaseFact>,
    pub followups: Vec<FollowUpTally>,
    pub slot_counts: Vec<SlotCounts>,
    pub marks: Vec<MarkCounts>,
    /// Non-patient calls made in the range.
    pub nonpatient: Vec<NonPatientFact>,
    /// Category counts per office.
    pub categories: Vec<CategoryCounts>,
    /// Headquarters' catalogue, when there is one: calls are counted
    /// under its sources (typed texts mapped by name, alias or code; the
    /// rest under 其他).
    pub catalog: Option<crate::catalog::Catalog>,
    /// Media spend of the range (headquarters' store; none at an office).
    pub spend: Vec<SpendFact>,
    /// Staff events in the range.
    pub events: Vec<StaffEvent>,
    /// The roles of the offices' staff.
    pub roles: Vec<StaffRole>,
    /// The offices' own activities (headquarters' are in the catalogue).
    pub activities: Vec<crate::activity::Activity>,
}

/// What a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "office")]
pub enum Scope {
    /// Every office: one line per province.
    National,
    /// One office (an office is a province).
    Office(String),
}

impl Scope {
    /// The office filter for row sources: `None` reads every office.
    pub fn office(&self) -> Option<&str> {
        match self {
            Scope::National => None,
            Scope::Office(o) => Some(o),
        }
    }
}

/// Follow-up figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FollowUpFigures {
    /// Follow-up calls made.
    pub done: u64,
    /// Slots whose deadline falls in the range.
    pub due: u64,
    /// Of those, satisfied by their deadline.
    pub due_done_on_time: u64,
    /// Slots past their deadline and still open at the end of the range.
    pub overdue: u64,
    /// 未到堂 slots due in the range.
    pub not_visited_due: u64,
    /// Of those, called within the 3 days.
    pub not_visited_on_time: u64,
}

/// One office's (or the total's) line of figures. Every field is a count,
/// so the total line is the sum of the office lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Office code, or "total".
    pub office: String,
    /// Province name (合计 for the total).
    pub name: String,
    pub calls: u64,
    pub callers: u64,
    pub callers_visited: u64,
    pub callers_bought: u64,
    pub visits: u64,
    pub visits_bought: u64,
    pub purchases: u64,
    pub amount_fen: i64,
    pub buyers: u64,
    pub new_buyers: u64,
    pub repeat_buyers: u64,
    pub refills: u64,
    pub refills_on_time: u64,
    pub followups: FollowUpFigures,
    pub typical: u64,
    pub typical_new: u64,
    pub problems_opened: u64,
    pub problems_open: u64,
    pub problems_resolved: u64,
}

impl Line {
    fn add(&mut self, o: &Line) {
        self.calls += o.calls;
        self.callers += o.callers;
        self.callers_visited += o.callers_visited;
        self.callers_bought += o.callers_bought;
        self.visits += o.visits;
        self.visits_bought += o.visits_bought;
        self.purchases += o.purchases;
        self.amount_fen += o.amount_fen;
        self.buyers += o.buyers;
        self.new_buyers += o.new_buyers;
        self.repeat_buyers += o.repeat_buyers;
        self.refills += o.refills;
        self.refills_on_time += o.refills_on_time;
        let (f, g) = (&mut self.followups, &o.followups);
        f.done += g.done;
        f.due += g.due;
        f.due_done_on_time += g.due_done_on_time;
        f.overdue += g.overdue;
        f.not_visited_due += g.not_visited_due;
        f.not_visited_on_time += g.not_visited_on_time;
        self.typical += o.typical;
        self.typical_new += o.typical_new;
        self.problems_opened += o.problems_opened;
        self.problems_open += o.problems_open;
        self.problems_resolved += o.problems_resolved;
    }
}

/// Calls, the conversion funnel and the money under one information
/// source. A caller counts under the source of their first call in the
/// range; `sales_fen` is what those callers bought after that call, by the
/// range's end; costs are spend divided by calls, visitors (`visited`) and
/// buyers (`bought`), rounded to the fen, `None` when there are none.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceLine {
    pub source: String,
    /// The catalogue's channel kind (电视, 报纸 …); empty without one.
    pub kind: String,
    pub calls: u64,
    pub callers: u64,
    pub visited: u64,
    pub bought: u64,
    pub spend_fen: i64,
    pub sales_fen: i64,
    pub cost_per_call_fen: Option<i64>,
    pub cost_per_visitor_fen: Option<i64>,
    pub cost_per_buyer_fen: Option<i64>,
    /// Sales per yuan spent (two decimals), `None` without spend.
    pub sales_per_yuan: Option<f64>,
}

impl SourceLine {
    /// Fills the cost figures from spend, calls, visitors, buyers, sales.
    fn cost_figures(&mut self) {
        let per = |n: u64| {
            (n > 0 && self.spend_fen > 0).then(|| (self.spend_fen as f64 / n as f64).round() as i64)
        };
        self.cost_per_call_fen = per(self.calls);
        self.cost_per_visitor_fen = per(self.visited);
        self.cost_per_buyer_fen = per(self.bought);
        self.sales_per_yuan = (self.spend_fen > 0)
            .then(|| (self.sales_fen as f64 / self.spend_fen as f64 * 100.0).round() / 100.0);
    }
}

/// A source as typed at the offices that is not a catalogue name, and
/// what the report counted it as: its source (by alias or code), or
/// 其他 (the catalogue does not know it; headquarters may add it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceText {
    pub typed: String,
    pub counted_as: String,
    pub calls: u64,
}

/// A reason or kind an office typed that its list lacks (kept as 其他 with
/// the text), and how often: what headquarters may add to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherText {
    /// 未购原因 or 非正常咨询.
    pub list: String,
    pub typed: String,
    pub count: u64,
}

/// A count under a label (a disease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub label: String,
    pub count: u64,
}

/// The activity of one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayLine {
    pub date: String,
    pub calls: u64,
    pub visits: u64,
    pub purchases: u64,
    pub followups: u64,
    /// The day's calls by information source (信息来源), by source name.
    pub sources: Vec<Count>,
}

/// 客情岗位评定: one staff member's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StaffLine {
    pub office: String,
    pub staff: String,
    /// Consultation calls taken.
    pub calls: u64,
    /// Callers whose first call in the range this person took.
    pub callers: u64,
    pub callers_visited: u64,
    pub callers_bought: u64,
    pub visits: u64,
    pub purchases: u64,
    pub followups: u64,
    pub followups_on_time: u64,
    /// Patients this person sold to in the range.
    pub buyers: u64,
    /// Of those, patients who have bought on two days or more.
    pub repeat_buyers: u64,
    /// The visits this person received that did not buy, by reason (every
    /// reason of the list, in its order).
    pub not_bought_reasons: Vec<Count>,
    /// The role on the office's roster (未登记 for a name it lacks).
    pub role: String,
    pub home_visits: u64,
    pub deliveries: u64,
    /// Patients this person marked typical cases.
    pub typical_cases: u64,
    pub problems_resolved: u64,
}

impl StaffLine {
    /// The counts of [`crate::score::ITEMS`], in their order.
    pub fn score_counts(&self) -> [u64; 9] {
        [
            self.calls,
            self.callers_visited,
            self.callers_bought,
            self.followups_on_time,
            self.repeat_buyers,
            self.home_visits,
            self.deliveries,
            self.typical_cases,
            self.problems_resolved,
        ]
    }
}

/// One item of a staff score: its count, weight and points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreItem {
    /// The item's key ([`crate::score::ITEMS`]).
    pub item: String,
    pub label: String,
    pub count: u64,
    pub weight: f64,
    pub points: f64,
}

/// 客情岗位评定: one person's score over the range and ranks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaffScore {
    pub office: String,
    /// Province name.
    pub name: String,
    pub staff: String,
    pub role: String,
    pub items: Vec<ScoreItem>,
    pub score: f64,
    /// Rank among the office's staff of the same role (1 = best; equal
    /// scores share a rank).
    pub rank_office: u32,
    /// Rank among the same role at every office of the report (the
    /// national ranking in a national report).
    pub rank_national: u32,
}

/// 活动: one activity's figures over the range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ActivityLine {
    pub id: String,
    pub name: String,
    /// Chinese kind (义诊 …).
    pub kind: String,
    /// 总部 or the province that defined it.
    pub defined_by: String,
    pub starts: String,
    pub ends: String,
    pub participants: u64,
    pub new_patients: u64,
    pub visitors: u64,
    pub buyers: u64,
    pub sales_fen: i64,
    pub spend_fen: i64,
    /// Spend / buyers, to the fen; `None` without either.
    pub cost_per_buyer_fen: Option<i64>,
}

/// Counts under fixed labels, for one office or the total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    /// Office code, or "total".
    pub office: String,
    /// Province name (合计 for the total).
    pub name: String,
    /// Every label of its list, in the list's order, zeros included.
    pub counts: Vec<Count>,
}

/// A report over a scope and a range of days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scope: Scope,
    pub from: String,
    pub to: String,
    /// One line per office (national: all 27 provinces, in code order).
    pub lines: Vec<Line>,
    /// The sum of `lines`.
    pub total: Line,
    pub by_source: Vec<SourceLine>,
    /// Typed sources that are not catalogue names, and where they were
    /// counted (empty without a catalogue).
    pub source_texts: Vec<SourceText>,
    pub by_disease: Vec<Count>,
    pub by_day: Vec<DayLine>,
    pub staff: Vec<StaffLine>,
    /// 非正常咨询 by kind: one breakdown per office, then the total.
    pub nonpatient_calls: Vec<Breakdown>,
    /// 未购原因: one breakdown per office, then the total.
    pub not_bought_reasons: Vec<Breakdown>,
    /// 客户分类 (categories, then 典型 and 问题): per office, then the total.
    pub categories: Vec<Breakdown>,
    /// 客情岗位评定: every person of `staff`, by office, role and rank.
    pub staff_scores: Vec<StaffScore>,
    /// 活动 of the scope meeting the range, by start.
    pub activities: Vec<ActivityLine>,
    /// Texts typed under 其他 (or before there was a list) for not-bought
    /// reasons and non-patient kinds, by list and text.
    pub other_texts: Vec<OtherText>,
    /// Documents in scope (dossiers, staff rosters) the figures lack or
    /// hold an older state of: the server could not read them (they are
    /// listed by `keqing-server unreadable`). Normally 0.
    pub unreadable: u64,
}

/// The purchase order of each of `purchases` (same order as given):
/// purchases on one day are one purchase day.
pub fn purchase_orders(purchases: &[crate::records::Purchase]) -> Vec<PurchaseOrder> {
    purchases
        .iter()
        .map(|p| {
            let day = p.at.date();
            let mut earlier_days: Vec<NaiveDate> = purchases
                .iter()
                .map(|q| q.at.date())
                .filter(|d| *d < day)
                .collect();
            earlier_days.sort();
            earlier_days.dedup();
            PurchaseOrder {
                nth: earlier_days.len() as u32 + 1,
                prev_runout: purchases
                    .iter()
                    .filter(|q| q.at.date() < day)
                    .filter_map(|q| q.runout)
                    .max(),
            }
        })
        .collect()
}

/// Whether each follow-up done at `times` satisfied a slot by its deadline.
pub fn followups_on_time(times: &[NaiveDateTime], slots: &[Slot]) -> Vec<bool> {
    times
        .iter()
        .map(|t| {
            slots
                .iter()
                .any(|s| s.satisfied_at == Some(*t) && s.on_time())
        })
        .collect()
}

/// Whether a slot counts as due on its deadline: a visit or purchase that
/// ended it first takes it off the books.
pub fn counts_as_due(s: &Slot) -> bool {
    s.satisfied_at.is_some() || s.closed_at.is_none_or(|c| c.date() > s.deadline)
}

/// The name a call typed as `typed` is counted under: its catalogue
/// source's, or 其他; the typed text itself without a catalogue.
fn counted_as<'r>(catalog: Option<&'r crate::catalog::Catalog>, typed: &'r str) -> &'r str {
    match catalog {
        Some(c) => c.source_name(typed),
        None => typed,
    }
}

/// Builds the report of `scope` for the days `from..=to`.
///
/// A national month at 1M dossiers is tens of thousands of rows of each
/// kind: they are tallied under keys borrowed from the rows (nothing
/// allocated per row, hashed rather than compared, each patient looked up
/// once a row), and only the report's own lines own their text, put in
/// the order of their keys at the end.
pub fn build<'r>(scope: &'r Scope, from: NaiveDate, to: NaiveDate, rows: &'r ReportRows) -> Report {
    let in_range = |t: &NaiveDateTime| t.date() >= from && t.date() <= to;
    let wanted = |office: &str| scope.office().is_none_or(|o| o == office);
    let mut lines: HashMap<&'r str, Line> = HashMap::default();
    match scope {
        Scope::National => {
            for o in OFFICES {
                lines.insert(o.code, Line::default());
            }
        }
        Scope::Office(o) => {
            lines.insert(o, Line::default());
        }
    }
    let mut staff: HashMap<(&'r str, &'r str), StaffLine> = HashMap::default();
    fn person<'a, 'r>(
        staff: &'a mut HashMap<(&'r str, &'r str), StaffLine>,
        office: &'r str,
        name: &'r str,
    ) -> &'a mut StaffLine {
        staff.entry((office, name)).or_insert_with(|| StaffLine {
            office: office.to_string(),
            staff: name.to_string(),
            ..Default::default()
        })
    }
    let mut days: BTreeMap<NaiveDate, DayLine> = BTreeMap::new();
    let mut by_disease: HashMap<&'r str, u64> = HashMap::default();
    let mut by_source: HashMap<&'r str, SourceLine> = HashMap::default();
    let mut day_sources: HashMap<(NaiveDate, &'r str), u64> = HashMap::default();
    let catalog = rows.catalog.as_ref();
    // Typed sources that are not catalogue names: (typed, counted as).
    let mut source_texts: BTreeMap<(&'r str, &'r str), u64> = BTreeMap::new();

    // What each patient did in the range: one entry a patient, so each
    // row looks its patient up once.
    let mut patients = Patients::for_rows(rows);
    // Calls, and each caller's first call in the range.
    for c in rows
        .calls
        .iter()
        .filter(|c| in_range(&c.at) && wanted(&c.office))
    {
        lines.entry(&c.office).or_default().calls += 1;
        person(&mut staff, &c.office, &c.staff).calls += 1;
        days.entry(c.at.date()).or_default().calls += 1;
        let source = counted_as(catalog, &c.source);
        if catalog.is_some() && source != c.source {
            *source_texts.entry((&c.source, source)).or_default() += 1;
        }
        *day_sources.entry((c.at.date(), source)).or_default() += 1;
        *by_disease
            .entry(c.disease.as_deref().unwrap_or("未填"))
            .or_default() += 1;
        by_source.entry(source).or_default().calls += 1;
        let first = patients.entry(&c.dossier).first_call.get_or_insert(c);
        if (c.at, &c.staff) < (first.at, &first.staff) {
            *first = c;
        }
    }
    // Counted under the catalogue's labels (the built-in ones without one);
    // a label the list lacks counts under 其他.
    let reasons = crate::catalog::not_bought_reasons(catalog);
    let kinds = crate::catalog::nonpatient_kinds(catalog);
    let mut other_texts: BTreeMap<(&'static str, &str), u64> = BTreeMap::new();
    let mut not_bought: HashMap<(&str, &str), u64> = HashMap::default();
    let mut staff_not_bought: HashMap<(&str, &str, &str), u64> = HashMap::default();
    for v in rows
        .visits
        .iter()
        .filter(|v| in_range(&v.at) && wanted(&v.office))
    {
        let l = lines.entry(&v.office).or_default();
        l.visits += 1;
        l.visits_bought += u64::from(v.purchased);
        person(&mut staff, &v.office, &v.staff).visits += 1;
        if let (false, Some(r)) = (v.purchased, &v.reason) {
            let label = crate::records::NotBoughtReason::label_of_stored(r);
            let r = listed(&mut other_texts, "未购原因", &reasons, label, r);
            *not_bought.entry((&v.office, r)).or_default() += 1;
            *staff_not_bought
                .entry((&v.office, &v.staff, r))
                .or_default() += 1;
        }
        days.entry(v.at.date()).or_default().visits += 1;
        patients.entry(&v.dossier).came.push(v.at);
    }
    for p in rows
        .purchases
        .iter()
        .filter(|p| in_range(&p.at) && wanted(&p.office))
    {
        let l = lines.entry(&p.office).or_default();
        l.purchases += 1;
        l.amount_fen += p.amount_fen;
        if p.order.nth >= 2 {
            l.refills += 1;
            if p.order.prev_runout.is_some_and(|r| p.at.date() <= r) {
                l.refills_on_time += 1;
            }
        }
        person(&mut staff, &p.office, &p.staff).purchases += 1;
        days.entry(p.at.date()).or_default().purchases += 1;
        patients.entry(&p.dossier).bought(p);
    }
    for patient in &patients.facts {
        // Buyers: the highest purchase day number seen per patient, at the
        // office of their first purchase in the rows.
        if let Some((office, max_nth, first_time)) = patient.buyer {
            let l = lines.entry(office).or_default();
            l.buyers += 1;
            l.new_buyers += u64::from(first_time);
            l.repeat_buyers += u64::from(max_nth >= 2);
        }
        for &(office, name, max_nth) in &patient.sold_by {
            let s = person(&mut staff, office, name);
            s.buyers += 1;
            s.repeat_buyers += u64::from(max_nth >= 2);
        }
        // Conversion of each caller by the end of the range.
        let Some(c) = patient.first_call else {
            continue;
        };
        let visited = patient.came.iter().any(|t| *t >= c.at);
        let purchased = patient.paid.iter().any(|(t, _)| *t >= c.at);
        let l = lines.entry(&c.office).or_default();
        l.callers += 1;
        l.callers_visited += u64::from(visited);
        l.callers_bought += u64::from(purchased);
        let s = person(&mut staff, &c.office, &c.staff);
        s.callers += 1;
        s.callers_visited += u64::from(visited);
        s.callers_bought += u64::from(purchased);
        let src = by_source.entry(counted_as(catalog, &c.source)).or_default();
        src.callers += 1;
        src.visited += u64::from(visited);
        src.bought += u64::from(purchased);
        src.sales_fen += patient
            .paid
            .iter()
            .filter(|(t, _)| *t >= c.at)
            .map(|(_, fen)| fen)
            .sum::<i64>();
    }
    for sp in rows
        .spend
        .iter()
        .filter(|sp| sp.day >= from && sp.day <= to && wanted(&sp.office))
    {
        let name = catalog
            .and_then(|c| c.sources.iter().find(|s| s.code == sp.source_code))
            .map_or(sp.source_code.as_str(), |s| s.name.as_str());
        by_source.entry(name).or_default().spend_fen += sp.amount_fen;
    }

    for f in rows
        .followups
        .iter()
        .filter(|f| f.day >= from && f.day <= to && wanted(&f.office))
    {
        lines.entry(&f.office).or_default().followups.done += f.done;
        let s = person(&mut staff, &f.office, &f.staff);
        s.followups += f.done;
        s.followups_on_time += f.on_time;
        days.entry(f.day).or_default().followups += f.done;
    }
    for c in rows.slot_counts.iter().filter(|c| wanted(&c.office)) {
        let f = &mut lines.entry(&c.office).or_default().followups;
        f.due += c.due;
        f.due_done_on_time += c.due_on_time;
        f.not_visited_due += c.not_visited_due;
        f.not_visited_on_time += c.not_visited_on_time;
        f.overdue += c.overdue;
    }
    for m in rows.marks.iter().filter(|m| wanted(&m.office)) {
        let l = lines.entry(&m.office).or_default();
        l.typical += m.typical;
        l.typical_new += m.typical_new;
        l.problems_opened += m.problems_opened;
        l.problems_open += m.problems_open;
        l.problems_resolved += m.problems_resolved;
    }

    // Deeds credited to staff, and activity participants.
    let mut joined: HashMap<&str, Vec<&StaffEvent>> = HashMap::default();
    for e in rows
        .events
        .iter()
        .filter(|e| in_range(&e.at) && wanted(&e.office))
    {
        let s = person(&mut staff, &e.office, &e.staff);
        match e.kind {
            StaffEventKind::HomeVisit => s.home_visits += 1,
            StaffEventKind::Delivery => s.deliveries += 1,
            StaffEventKind::Typical => s.typical_cases += 1,
            StaffEventKind::ProblemResolved => s.problems_resolved += 1,
            StaffEventKind::Joined => {
                if let Some(a) = &e.activity {
                    joined.entry(a).or_default().push(e);
                }
            }
        }
    }
    let activities = activity_lines(rows, (from, to), &wanted, &joined, &patients);

    let mut nonpatient: HashMap<(&str, &str), u64> = HashMap::default();
    for c in rows
        .nonpatient
        .iter()
        .filter(|c| in_range(&c.at) && wanted(&c.office))
    {
        let label = crate::records::NonPatientKind::label_of(&c.kind);
        let kind = listed(&mut other_texts, "非正常咨询", &kinds, label, &c.kind);
        *nonpatient.entry((&c.office, kind)).or_default() += 1;
    }
    let mut categories: HashMap<&str, CategoryCounts> = HashMap::default();
    for c in rows.categories.iter().filter(|c| wanted(&c.office)) {
        let e = categories.entry(&c.office).or_default();
        for (n, m) in e.categories.iter_mut().zip(c.categories) {
            *n += m;
        }
        e.typical += c.typical;
        e.problem += c.problem;
    }
    let mut lines: Vec<(&str, Line)> = lines.into_iter().collect();
    lines.sort_unstable_by_key(|(code, _)| *code);
    let offices: Vec<&str> = lines.iter().map(|(code, _)| *code).collect();
    let roles: HashMap<(&str, &str), &str> = rows
        .roles
        .iter()
        .map(|r| ((r.office.as_str(), r.staff.as_str()), r.role.as_str()))
        .collect();
    let mut staff: Vec<((&str, &str), StaffLine)> = staff.into_iter().collect();
    staff.sort_unstable_by_key(|(key, _)| *key);
    for ((office, name), s) in staff.iter_mut() {
        s.role = roles
            .get(&(*office, *name))
            .unwrap_or(&"未登记")
            .to_string();
        s.not_bought_reasons = reasons
            .iter()
            .map(|r| Count {
                label: r.clone(),
                count: staff_not_bought
                    .get(&(*office, *name, r.as_str()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
    }

    let mut total = Line {
        office: "total".into(),
        name: "合计".into(),
        ..Default::default()
    };
    let lines: Vec<Line> = lines
        .into_iter()
        .map(|(code, mut l)| {
            l.name = crate::office::office(code)
                .map(|o| o.name.to_string())
                .unwrap_or_else(|_| code.to_string());
            l.office = code.to_string();
            total.add(&l);
            l
        })
        .collect();
    let mut by_source: Vec<SourceLine> = by_source
        .into_iter()
        .map(|(source, mut s)| {
            s.kind = catalog
                .and_then(|c| c.sources.iter().find(|x| x.name == source))
                .map_or_else(String::new, |x| x.kind.clone());
            s.source = source.to_string();
            s.cost_figures();
            s
        })
        .collect();
    by_source.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.source.cmp(&b.source)));
    let mut by_disease: Vec<Count> = by_disease
        .into_iter()
        .map(|(label, count)| Count {
            label: label.to_string(),
            count,
        })
        .collect();
    by_disease.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    let mut day_sources: Vec<((NaiveDate, &str), u64)> = day_sources.into_iter().collect();
    day_sources.sort_unstable_by_key(|(key, _)| *key);
    let mut day_sources = day_sources.into_iter().peekable();
    Report {
        scope: scope.clone(),
        from: crate::when::fmt_date(from),
        to: crate::when::fmt_date(to),
        lines,
        total,
        by_source,
        source_texts: source_texts
            .into_iter()
            .map(|((typed, counted_as), calls)| SourceText {
                typed: typed.to_string(),
                counted_as: counted_as.to_string(),
                calls,
            })
            .collect(),
        by_disease,
        by_day: days
            .into_iter()
            .map(|(d, mut l)| {
                l.date = crate::when::fmt_date(d);
                // Each (day, source) count's day has a line (its calls
                // made one): both in day order, one pass takes them.
                while let Some(((day, source), n)) = day_sources.next_if(|((day, _), _)| *day <= d)
                {
                    if day == d {
                        l.sources.push(Count {
                            label: source.to_string(),
                            count: n,
                        });
                    }
                }
                l
            })
            .collect(),
        staff_scores: staff_scores(
            staff.iter().map(|(_, s)| s),
            &catalog.map(|c| c.weights).unwrap_or_default(),
        ),
        activities,
        other_texts: other_texts
            .into_iter()
            .map(|((list, typed), count)| OtherText {
                list: list.to_string(),
                typed: typed.to_string(),
                count,
            })
            .collect(),
        staff: staff.into_iter().map(|(_, s)| s).collect(),
        nonpatient_calls: breakdowns(&offices, |office| {
            kinds
                .iter()
                .map(|k| {
                    let n = nonpatient.get(&(office, k.as_str())).copied().unwrap_or(0);
                    (k.clone(), n)
                })
                .collect()
        }),
        not_bought_reasons: breakdowns(&offices, |office| {
            reasons
                .iter()
                .map(|r| {
                    let n = not_bought.get(&(office, r.as_str())).copied().unwrap_or(0);
                    (r.clone(), n)
                })
                .collect()
        }),
        categories: breakdowns(&offices, |office| {
            let c = categories.get(office).cloned().unwrap_or_default();
            Category::ALL
                .iter()
                .zip(c.categories)
                .map(|(cat, n)| (cat.chinese().to_string(), n))
                .chain([
                    ("典型".to_string(), c.typical),
                    ("问题".to_string(), c.problem),
                ])
                .collect()
        }),
        // The rows say nothing of what could not be read: the server, which
        // knows, sets it.
        unreadable: 0,
    }
}

/// The label a stored value counts under (`label`, as the list's
/// `label_of` reads it): `label` when `labels` lists it, else 其他, and
/// then the typed text is counted in `other_texts` under `list`.
fn listed<'l>(
    other_texts: &mut BTreeMap<(&'static str, &'l str), u64>,
    list: &'static str,
    labels: &'l [String],
    label: &'l str,
    stored: &'l str,
) -> &'l str {
    let other = crate::catalog::OTHER_SOURCE;
    if label != other
        && let Some(l) = labels.iter().find(|l| *l == label)
    {
        return l;
    }
    let typed = match crate::records::split_stored(stored) {
        (_, Some(t)) if label == other => t,
        _ => stored.trim(),
    };
    if !typed.is_empty() && typed != other {
        *other_texts.entry((list, typed)).or_default() += 1;
    }
    other
}

/// The scores of `staff`, ranked: by office, role, rank, name.
fn staff_scores<'a>(
    staff: impl Iterator<Item = &'a StaffLine>,
    weights: &crate::score::ScoreWeights,
) -> Vec<StaffScore> {
    let mut out: Vec<StaffScore> = staff
        .map(|s| {
            let counts = s.score_counts();
            StaffScore {
                office: s.office.clone(),
                name: crate::office::office(&s.office)
                    .map(|o| o.name.to_string())
                    .unwrap_or_else(|_| s.office.clone()),
                staff: s.staff.clone(),
                role: s.role.clone(),
                items: crate::score::ITEMS
                    .iter()
                    .zip(counts)
                    .zip(weights.0)
                    .map(|(((key, label), count), weight)| ScoreItem {
                        item: key.to_string(),
                        label: label.to_string(),
                        count,
                        weight,
                        points: (count as f64 * weight * 100.0).round() / 100.0,
                    })
                    .collect(),
                score: weights.score(&counts),
                rank_office: 0,
                rank_national: 0,
            }
        })
        .collect();
    let in_office = crate::score::ranks(
        &out.iter()
            .map(|s| ((s.office.clone(), s.role.clone()), s.score))
            .collect::<Vec<_>>(),
    );
    let national = crate::score::ranks(
        &out.iter()
            .map(|s| (s.role.clone(), s.score))
            .collect::<Vec<_>>(),
    );
    for ((s, o), n) in out.iter_mut().zip(in_office).zip(national) {
        s.rank_office = o;
        s.rank_national = n;
    }
    out.sort_by(|a, b| {
        (&a.office, &a.role, a.rank_office, &a.staff).cmp(&(
            &b.office,
            &b.role,
            b.rank_office,
            &b.staff,
        ))
    });
    out
}

/// Each patient's [`PatientFacts`], by dossier id. The facts lie in a
/// vector the map points into: a national month is tens of thousands of
/// patients, and a map holding the facts themselves spent a tenth of the
/// report moving them as it grew.
struct Patients<'r> {
    index: HashMap<&'r str, usize>,
    facts: Vec<PatientFacts<'r>>,
}

impl<'r> Patients<'r> {
    /// Room for every patient the rows can name (each row names at most
    /// one), so the index never grows.
    fn for_rows(rows: &ReportRows) -> Patients<'r> {
        let most = rows.calls.len() + rows.visits.len() + rows.purchases.len();
        Patients {
            index: HashMap::with_capacity_and_hasher(most, Default::default()),
            facts: Vec::new(),
        }
    }

    /// The facts of `dossier`, new and empty the first time.
    fn entry(&mut self, dossier: &'r str) -> &mut PatientFacts<'r> {
        let facts = &mut self.facts;
        let i = *self.index.entry(dossier).or_insert_with(|| {
            facts.push(PatientFacts::default());
            facts.len() - 1
        });
        &mut self.facts[i]
    }

    fn get(&self, dossier: &str) -> Option<&PatientFacts<'r>> {
        self.index.get(dossier).and_then(|&i| self.facts.get(i))
    }
}

/// What one patient did in the range (the rows in scope).
#[derive(Default)]
struct PatientFacts<'r> {
    /// Their first call (the funnel's start, its source and staff).
    first_call: Option<&'r CallFact>,
    /// Their visits' times.
    came: Vec<NaiveDateTime>,
    /// Their purchases: when, how much (fen).
    paid: Vec<(NaiveDateTime, i64)>,
    /// As a buyer: the office of their first purchase row, the highest
    /// purchase day number seen, and whether one was their first ever.
    buyer: Option<(&'r str, u32, bool)>,
    /// Who sold to them (office, staff) and the highest purchase day
    /// number each saw: a staff member's buyers and repeat buyers.
    sold_by: Vec<(&'r str, &'r str, u32)>,
}

impl<'r> PatientFacts<'r> {
    fn bought(&mut self, p: &'r PurchaseFact) {
        self.paid.push((p.at, p.amount_fen));
        let b = self.buyer.get_or_insert((&p.office, 0, false));
        b.1 = b.1.max(p.order.nth);
        b.2 |= p.order.nth == 1;
        match self
            .sold_by
            .iter_mut()
            .find(|(office, staff, _)| *office == p.office && *staff == p.staff)
        {
            Some(s) => s.2 = s.2.max(p.order.nth),
            None => self.sold_by.push((&p.office, &p.staff, p.order.nth)),
        }
    }
}

/// The figures of every activity of the scope meeting the range.
fn activity_lines(
    rows: &ReportRows,
    (from, to): (NaiveDate, NaiveDate),
    wanted: &dyn Fn(&str) -> bool,
    joined: &HashMap<&str, Vec<&StaffEvent>>,
    patients: &Patients<'_>,
) -> Vec<ActivityLine> {
    let hq = rows.catalog.iter().flat_map(|c| &c.activities);
    let mut out: Vec<(NaiveDate, ActivityLine)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for a in hq.chain(&rows.activities) {
        let runs_in_scope = crate::office::OFFICES
            .iter()
            .any(|o| wanted(o.code) && a.runs_at(o.code));
        let attribution_ends = a.attribution_ends();
        if !runs_in_scope || a.starts > to || attribution_ends < from || !seen.insert(&a.id) {
            continue;
        }
        let window = |t: &NaiveDateTime| t.date() >= a.starts && t.date() <= attribution_ends;
        let mut line = ActivityLine {
            id: a.id.clone(),
            name: a.name.clone(),
            kind: a.kind.chinese().into(),
            defined_by: a.defined_by(),
            starts: crate::when::fmt_date(a.starts),
            ends: crate::when::fmt_date(a.ends),
            ..Default::default()
        };
        let mut participants: BTreeMap<&str, bool> = BTreeMap::new();
        for e in joined.get(a.id.as_str()).into_iter().flatten() {
            if a.open_on(e.at.date()) && a.runs_at(&e.office) {
                let new = e.patient_since.is_some_and(|t| t.date() >= a.starts);
                *participants.entry(&e.dossier).or_default() |= new;
            }
        }
        for (dossier, new) in &participants {
            line.participants += 1;
            line.new_patients += u64::from(*new);
            let patient = patients.get(dossier);
            line.visitors += u64::from(patient.is_some_and(|p| p.came.iter().any(window)));
            let sales: Vec<i64> = patient
                .into_iter()
                .flat_map(|p| &p.paid)
                .filter(|(t, _)| window(t))
                .map(|(_, fen)| *fen)
                .collect();
            line.buyers += u64::from(!sales.is_empty());
            line.sales_fen += sales.iter().sum::<i64>();
        }
        if let Some(source) = &a.source {
            line.spend_fen = rows
                .spend
                .iter()
                .filter(|sp| {
                    &sp.source_code == source
                        && sp.day >= from.max(a.starts)
                        && sp.day <= to.min(a.ends)
                        && wanted(&sp.office)
                        && a.runs_at(&sp.office)
                })
                .map(|sp| sp.amount_fen)
                .sum();
        }
        line.cost_per_buyer_fen = (line.buyers > 0 && line.spend_fen > 0)
            .then(|| (line.spend_fen as f64 / line.buyers as f64).round() as i64);
        out.push((a.starts, line));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    out.into_iter().map(|(_, l)| l).collect()
}

/// One breakdown per office of `offices` (counts by `count_of`), then their
/// total.
fn breakdowns(offices: &[&str], count_of: impl Fn(&str) -> Vec<(String, u64)>) -> Vec<Breakdown> {
    let mut out: Vec<Breakdown> = offices
        .iter()
        .map(|code| Breakdown {
            office: code.to_string(),
            name: crate::office::office(code)
                .map(|o| o.name.to_string())
                .unwrap_or_else(|_| code.to_string()),
            counts: count_of(code)
                .into_iter()
                .map(|(label, count)| Count { label, count })
                .collect(),
        })
        .collect();
    let mut total = Breakdown {
        office: "total".into(),
        name: "合计".into(),
        counts: out.first().map_or_else(Vec::new, |b| {
            b.counts
                .iter()
                .map(|c| Count {
                    label: c.label.clone(),
                    count: 0,
                })
                .collect()
        }),
    };
    for b in &out {
        for (t, c) in total.counts.iter_mut().zip(&b.counts) {
            t.count += c.count;
        }
    }
    out.push(total);
    out
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
