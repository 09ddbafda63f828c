//! The reports service: authenticates the device, checks its scope, brings
//! the projector up to date and builds the report from the projections with
//! the shared definitions.

use crate::hub::Admission;
use crate::projector;
use crate::store::{Projections, Store};
use chrono::NaiveDate;
use keqing_shared::report::{self, Report, Scope};
use keqing_shared::sync::{Caller, SyncError, SyncErrorKind};
use std::sync::Arc;

/// The longest range one report may cover.
pub const MAX_REPORT_DAYS: i64 = 3 * 366;

/// Checks a report request's arguments (not who asks).
pub fn check_request(scope: &Scope, from: NaiveDate, to: NaiveDate) -> Result<(), SyncError> {
    if to < from {
        return Err(SyncError::invalid(format!(
            "the range ends ({to}) before it starts ({from})"
        )));
    }
    if (to - from).num_days() >= MAX_REPORT_DAYS {
        return Err(SyncError::invalid(format!(
            "a report covers at most {MAX_REPORT_DAYS} days"
        )));
    }
    if let Scope::Office(o) = scope {
        keqing_shared::office::office(o).map_err(|e| SyncError::invalid(e.to_string()))?;
    }
    Ok(())
}

/// Brings the projections up to date, then builds the report (saying how
/// many documents in scope it lacks because they could not be read).
pub fn build_report(
    store: &mut dyn Projections,
    scope: &Scope,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Report, crate::store::StoreError> {
    projector::catch_up(store, |_, _| {})?;
    let mut rows = store.report_rows(scope.office(), from, to)?;
    // A damaged copy of the catalogue must not stop every report: the
    // sources are then counted as typed, and the log says why.
    rows.catalog = crate::catalog::from_snapshot(&store.snapshot(&crate::catalog::in_force_id())?)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "report: the catalogue does not load; sources counted as typed");
            None
        });
    rows.spend = store.spend(scope.office(), from, to)?;
    let mut report = report::build(scope, from, to, &rows);
    report.unreadable = store.unreadable_documents(scope.office())?.len() as u64;
    Ok(report)
}

pub struct ReportDesk {
    /// The store: a request is authenticated on a reader (admitted or
    /// refused before it waits for anything), then the report catches the
    /// projections up in a session of its own and reads them (the
    /// background projector's saves and its are compare-and-set).
    store: Arc<dyn Store>,
    /// Who may ask, how often (shared with the sync service).
    admission: Arc<Admission>,
}

impl ReportDesk {
    pub fn new(store: Arc<dyn Store>, admission: Arc<Admission>) -> ReportDesk {
        ReportDesk { store, admission }
    }
}

impl keqing_proto::ReportsHandler for ReportDesk {
    async fn report(
        &self,
        caller: Caller,
        scope: Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Report, SyncError> {
        check_request(&scope, from, to)?;
        let (device, _call) = self
            .admission
            .enter(&self.store, caller, crate::hub::CallKind::Plain)
            .await?;
        if let Some(own) = &device.office
            && scope.office() != Some(own.as_str())
        {
            return Err(SyncError::new(
                SyncErrorKind::PermissionDenied,
                format!("an office device reads only its own office's report ({own})"),
            ));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut session = store.projections()?;
            let started = std::time::Instant::now();
            let r = build_report(&mut *session, &scope, from, to)?;
            tracing::info!(device = %device.id, scope = ?scope, %from, %to,
                ms = started.elapsed().as_millis() as u64, "report");
            Ok(r)
        })
        .await
        .map_err(|e| SyncError::internal(format!("task failed: {e}")))?
    }
}
