//! The reports service in domain terms: [`ReportsHandler`] for the server,
//! [`crate::SyncConnection::report`] for a client, and the conversion of
//! [`keqing_shared::report::Report`] to and from its wire form.

use crate::{caller, pb, to_status};
use chrono::NaiveDate;
use keqing_shared::report::{
    Count, DayLine, FollowUpFigures, Line, Report, Scope, SourceLine, StaffLine,
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
            .map(|s| same_fields!(s => pb::SourceLine { source, calls, callers, visited, bought }))
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
                same_fields!(s => pb::StaffLine {
                    office, staff, calls, callers, callers_visited, callers_bought, visits,
                    purchases, followups, followups_on_time, buyers, repeat_buyers
                })
            })
            .collect(),
        unreadable: r.unreadable,
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
            .map(|s| same_fields!(s => SourceLine { source, calls, callers, visited, bought }))
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
                same_fields!(s => StaffLine {
                    office, staff, calls, callers, callers_visited, callers_bought, visits,
                    purchases, followups, followups_on_time, buyers, repeat_buyers
                })
            })
            .collect(),
        unreadable: r.unreadable,
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
        let caller = caller(&req);
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
            ..Default::default()
        };
        for scope in [Scope::National, Scope::Office("44".into())] {
            let mut r = build(&scope, d, d, &rows);
            assert_eq!(r.total.calls, 1);
            r.unreadable = 2;
            assert_eq!(report_from(pb_report(r.clone())), r);
        }
    }
}
