//! The reports service in domain terms: [`ReportsHandler`] for the server,
//! [`crate::SyncConnection::report`] for a client, and the conversion of
//! [`keqing_shared::report::Report`] to and from its wire form.

use crate::{caller, pb, to_status};
use chrono::NaiveDate;
use keqing_shared::report::{
    ActivityLine, Breakdown, Count, DayLine, FollowUpFigures, Line, OtherText, Report, Scope,
    ScoreItem, SourceLine, SourceText, StaffLine, StaffScore,
};
use keqing_shared::sync::{Caller, SyncError, SyncErrorKind};
use std::future::Future;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service name, for the health service.
pub const REPORTS_SERVICE_NAME: &str = "keqing.v1.Reports";

/// What the server does for a report request. `caller` is the calling
/// device's bearer token as sent, and its TLS client certificate.
pub trait ReportsHandler: Send + Sync + 'static {
    fn report(
        &self,
        caller: Caller,
        scope: Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> impl Future<Output = Result<Report, SyncError>> + Send;
}

/// Adapts a [`ReportsHandler`] to the generated tonic service.
pub struct ReportsService<H> {
    handler: Arc<H>,
}

pub fn reports_server<H: ReportsHandler>(
    handler: Arc<H>,
) -> pb::reports_server::ReportsServer<ReportsService<H>> {
    pb::reports_server::ReportsServer::new(ReportsService { handler })
}

/// Builds a struct from another with the same field names.
macro_rules! same_fields {
    ($src:expr => $ty:path { $($f:ident),* $(,)? } $(; $($extra:ident : $val:expr),*)?) => {{
        let s = $src;
        $ty { $($f: s.$f,)* $($($extra: $val,)*)? }
    }};
}

fn pb_figures(f: FollowUpFigures) -> pb::FollowUpFigures {
    same_fields!(f => pb::FollowUpFigures {
        done, due, due_done_on_time, overdue, not_visited_due, not_visited_on_time
    })
}

fn figures_from(f: pb::FollowUpFigures) -> FollowUpFigures {
    same_fields!(f => FollowUpFigures {
        done, due, due_done_on_time, overdue, not_visited_due, not_visited_on_time
    })
}

fn pb_line(l: Line) -> pb::Line {
    let followups = Some(pb_figures(l.followups.clone()));
    same_fields!(l => pb::Line {
        office, name, calls, callers, callers_visited, callers_bought, visits,
        visits_bought, purchases, amount_fen, buyers, new_buyers, repeat_buyers,
        refills, refills_on_time, typical, typical_new, problems_opened,
        problems_open, problems_resolved
    }; followups: followups)
}

fn line_from(l: pb::Line) -> Line {
    let followups = figures_from(l.followups.unwrap_or_default());
    same_fields!(l => Line {
        office, name, calls, callers, callers_visited, callers_bought, visits,
        visits_bought, purchases, amount_fen, buyers, new_buyers, repeat_buyers,
        refills, refills_on_time, typical, typical_new, problems_opened,
        problems_open, problems_resolved
    }; followups: followups)
}

fn pb_counts(counts: Vec<Count>) -> Vec<pb::Count> {
    counts
        .into_iter()
        .map(|c| same_fields!(c => pb::Count { label, count }))
        .collect()
}

fn counts_from(counts: Vec<pb::Count>) -> Vec<Count> {
    counts
        .into_iter()
        .map(|c| same_fields!(c => Count { label, count }))
        .collect()
}

fn pb_breakdowns(b: Vec<Breakdown>) -> Vec<pb::Breakdown> {
    b.into_iter()
        .map(|b| pb::Breakdown {
            office: b.office,
            name: b.name,
            counts: pb_counts(b.counts),
        })
        .collect()
}

fn breakdowns_from(b: Vec<pb::Breakdown>) -> Vec<Breakdown> {
    b.into_iter()
        .map(|b| Breakdown {
            office: b.office,
            name: b.name,
            counts: counts_from(b.counts),
        })
        .collect()
}

/// A report in its wire form.
pub fn pb_report(r: Report) -> pb::Report {
    pb::Report {
        office: r.scope.office().unwrap_or("").to_string(),
        from: r.from,
        to: r.to,
        lines: r.lines.into_iter().map(pb_line).collect(),
        total: Some(pb_line(r.total)),
        by_source: r
            .by_source
            .into_iter()
            .map(|s| {
                same_fields!(s => pb::SourceLine {
                    source, calls, callers, visited, bought, kind, spend_fen, sales_fen,
                    cost_per_call_fen, cost_per_visitor_fen, cost_per_buyer_fen, sales_per_yuan
                })
            })
            .collect(),
        source_texts: r
            .source_texts
            .into_iter()
            .map(|t| same_fields!(t => pb::SourceText { typed, counted_as, calls }))
            .collect(),
        by_disease: r
            .by_disease
            .into_iter()
            .map(|c| same_fields!(c => pb::Count { label, count }))
            .collect(),
        by_day: r
            .by_day
            .into_iter()
            .map(|d| pb::DayLine {
                date: d.date,
                calls: d.calls,
                visits: d.visits,
                purchases: d.purchases,
                followups: d.followups,
                sources: d
                    .sources
                    .into_iter()
                    .map(|c| same_fields!(c => pb::Count { label, count }))
                    .collect(),
            })
            .collect(),
        staff: r
            .staff
            .into_iter()
            .map(|s| {
                let reasons = pb_counts(s.not_bought_reasons.clone());
                same_fields!(s => pb::StaffLine {
                    office, staff, calls, callers, callers_visited, callers_bought, visits,
                    purchases, followups, followups_on_time, buyers, repeat_buyers, role,
                    home_visits, deliveries, typical_cases, problems_resolved
                }; not_bought_reasons: reasons)
            })
            .collect(),
        unreadable: r.unreadable,
        nonpatient_calls: pb_breakdowns(r.nonpatient_calls),
        not_bought_reasons: pb_breakdowns(r.not_bought_reasons),
        categories: pb_breakdowns(r.categories),
        staff_scores: r
            .staff_scores
            .into_iter()
            .map(|s| {
                let items = s
                    .items
                    .iter()
                    .cloned()
                    .map(
                        |i| same_fields!(i => pb::ScoreItem { item, label, count, weight, points }),
                    )
                    .collect();
                same_fields!(s => pb::StaffScore {
                    office, name, staff, role, score, rank_office, rank_national
                }; items: items)
            })
            .collect(),
        other_texts: r
            .other_texts
            .into_iter()
            .map(|t| same_fields!(t => pb::OtherText { list, typed, count }))
            .collect(),
        activities: r
            .activities
            .into_iter()
            .map(|a| {
                same_fields!(a => pb::ActivityLine {
                    id, name, kind, defined_by, starts, ends, participants, new_patients,
                    visitors, buyers, sales_fen, spend_fen, cost_per_buyer_fen
                })
            })
            .collect(),
    }
}

/// A report from its wire form.
pub fn report_from(r: pb::Report) -> Report {
    Report {
        scope: if r.office.is_empty() {
            Scope::National
        } else {
            Scope::Office(r.office)
        },
        from: r.from,
        to: r.to,
        lines: r.lines.into_iter().map(line_from).collect(),
        total: line_from(r.total.unwrap_or_default()),
        by_source: r
            .by_source
            .into_iter()
            .map(|s| {
                same_fields!(s => SourceLine {
                    source, calls, callers, visited, bought, kind, spend_fen, sales_fen,
                    cost_per_call_fen, cost_per_visitor_fen, cost_per_buyer_fen, sales_per_yuan
                })
            })
            .collect(),
        source_texts: r
            .source_texts
            .into_iter()
            .map(|t| same_fields!(t => SourceText { typed, counted_as, calls }))
            .collect(),
        by_disease: r
            .by_disease
            .into_iter()
            .map(|c| same_fields!(c => Count { label, count }))
            .collect(),
        by_day: r
            .by_day
            .into_iter()
            .map(|d| DayLine {
                date: d.date,
                calls: d.calls,
                visits: d.visits,
                purchases: d.purchases,
                followups: d.followups,
                sources: d
                    .sources
                    .into_iter()
                    .map(|c| same_fields!(c => Count { label, count }))
                    .collect(),
            })
            .collect(),
        staff: r
            .staff
            .into_iter()
            .map(|s| {
                let reasons = counts_from(s.not_bought_reasons.clone());
                same_fields!(s => StaffLine {
                    office, staff, calls, callers, callers_visited, callers_bought, visits,
                    purchases, followups, followups_on_time, buyers, repeat_buyers, role,
                    home_visits, deliveries, typical_cases, problems_resolved
                }; not_bought_reasons: reasons)
            })
            .collect(),
        unreadable: r.unreadable,
        nonpatient_calls: breakdowns_from(r.nonpatient_calls),
        not_bought_reasons: breakdowns_from(r.not_bought_reasons),
        categories: breakdowns_from(r.categories),
        staff_scores: r
            .staff_scores
            .into_iter()
            .map(|s| {
                let items = s
                    .items
                    .iter()
                    .cloned()
                    .map(|i| same_fields!(i => ScoreItem { item, label, count, weight, points }))
                    .collect();
                same_fields!(s => StaffScore {
                    office, name, staff, role, score, rank_office, rank_national
                }; items: items)
            })
            .collect(),
        other_texts: r
            .other_texts
            .into_iter()
            .map(|t| same_fields!(t => OtherText { list, typed, count }))
            .collect(),
        activities: r
            .activities
            .into_iter()
            .map(|a| {
                same_fields!(a => ActivityLine {
                    id, name, kind, defined_by, starts, ends, participants, new_patients,
                    visitors, buyers, sales_fen, spend_fen, cost_per_buyer_fen
                })
            })
            .collect(),
    }
}

fn date_arg(field: &str, s: &str) -> Result<NaiveDate, Status> {
    keqing_shared::when::parse_date(s).map_err(|e| {
        to_status(SyncError::new(
            SyncErrorKind::InvalidArgument,
            format!("{field}: {e}"),
        ))
    })
}

#[tonic::async_trait]
impl<H: ReportsHandler> pb::reports_server::Reports for ReportsService<H> {
    async fn get_report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let from = date_arg("from", &r.from)?;
        let to = date_arg("to", &r.to)?;
        let scope = if r.office.is_empty() {
            Scope::National
        } else {
            Scope::Office(r.office)
        };
        let report = self
            .handler
            .report(caller, scope, from, to)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb_report(report)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keqing_shared::report::{CallFact, ReportRows, build};

    #[test]
    fn a_report_round_trips_through_its_wire_form() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let at = d.and_hms_opt(9, 0, 0).unwrap();
        let rows = ReportRows {
            calls: vec![CallFact {
                office: "44".into(),
                dossier: "a".into(),
                at,
                staff: "李娜".into(),
                source: "电视".into(),
                disease: None,
            }],
            visits: vec![keqing_shared::report::VisitFact {
                office: "44".into(),
                dossier: "a".into(),
                at,
                staff: "王医生".into(),
                purchased: false,
                reason: Some("价格".into()),
            }],
            nonpatient: vec![keqing_shared::report::NonPatientFact {
                office: "44".into(),
                at,
                staff: "李娜".into(),
                kind: "推销".into(),
            }],
            categories: vec![keqing_shared::report::CategoryCounts {
                office: "44".into(),
                categories: [1, 2, 3, 4, 5, 6],
                typical: 1,
                problem: 2,
            }],
            events: vec![keqing_shared::report::StaffEvent {
                office: "44".into(),
                dossier: "a".into(),
                at,
                staff: "李娜".into(),
                kind: keqing_shared::report::StaffEventKind::Joined,
                activity: Some("clinic".into()),
                patient_since: Some(at),
            }],
            activities: vec![keqing_shared::activity::Activity {
                id: "clinic".into(),
                name: "义诊".into(),
                kind: keqing_shared::activity::ActivityKind::Clinic,
                starts: d,
                ends: d,
                offices: vec![],
                source: None,
                by_office: Some("44".into()),
            }],
            ..Default::default()
        };
        for scope in [Scope::National, Scope::Office("44".into())] {
            let mut r = build(&scope, d, d, &rows);
            assert_eq!(r.total.calls, 1);
            assert_eq!(r.activities[0].participants, 1);
            assert!(r.staff_scores[0].score > 0.0);
            r.unreadable = 2;
            assert_eq!(report_from(pb_report(r.clone())), r);
        }
    }
}
