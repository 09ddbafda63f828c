//! Fleet health and metrics: what the serving process saw of each device
//! (kept in memory, flushed to the store every few seconds and at
//! shutdown, so a request never waits for it), the fleet report of
//! `keqing-server devices` and the dashboard, and the Prometheus metrics
//! served on `/metrics` (counts and times only: never a patient's data).

use crate::store::{Device, DeviceHealth, Store};
use keqing_shared::sync::ClientState;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

/// What the serving process saw of devices since its last flush.
#[derive(Default)]
pub struct Fleet {
    seen: Mutex<HashMap<String, DeviceHealth>>,
}

impl Fleet {
    fn note(
        &self,
        device_id: &str,
        client: Option<&ClientState>,
        f: impl FnOnce(&mut DeviceHealth, String),
    ) {
        let now = keqing_host::now_cst_text();
        let mut seen = keqing_host::lock(&self.seen);
        let h = seen
            .entry(device_id.to_string())
            .or_insert_with(|| DeviceHealth {
                device_id: device_id.to_string(),
                ..Default::default()
            });
        if let Some(c) = client {
            h.client_version = Some(c.version.clone());
            h.outbox = Some(c.outbox);
            h.quarantined = Some(c.quarantined);
        }
        f(h, now);
    }

    /// A push was served (whatever its answer).
    pub fn pushed(&self, device_id: &str, client: Option<&ClientState>) {
        self.note(device_id, client, |h, now| h.last_push = Some(now));
    }

    /// A pull began.
    pub fn pulled(&self, device_id: &str, client: Option<&ClientState>) {
        self.note(device_id, client, |h, now| h.last_pull = Some(now));
    }

    /// A pull reached the end of its feed: the device is up to date.
    pub fn synced(&self, device_id: &str) {
        self.note(device_id, None, |h, now| h.last_sync = Some(now));
    }

    /// Writes what was seen to the store. What a failed write held is
    /// kept for the next flush.
    pub fn flush(&self, store: &dyn Store) -> crate::store::Result<()> {
        let seen: Vec<DeviceHealth> = keqing_host::lock(&self.seen)
            .drain()
            .map(|(_, h)| h)
            .collect();
        // Nothing seen (no device called): no write at all.
        if seen.is_empty() {
            return Ok(());
        }
        if let Err(e) = store.record_health(&seen) {
            let mut kept = keqing_host::lock(&self.seen);
            for h in seen {
                kept.entry(h.device_id.clone()).or_insert(h);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// One device in the fleet report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceLine {
    pub id: String,
    pub name: String,
    pub revoked: bool,
    pub version: Option<String>,
    /// Older than this server's version.
    pub old_version: bool,
    pub outbox: Option<u64>,
    pub quarantined: Option<u64>,
    pub last_push: Option<String>,
    pub last_pull: Option<String>,
    pub last_sync: Option<String>,
}

/// One office (or headquarters, `hq`) in the fleet report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfficeLine {
    pub office: String,
    pub name: String,
    /// The latest sync of any of its devices.
    pub last_sync: Option<String>,
    /// No device of the office synced within the silent days.
    pub silent: bool,
    pub devices: Vec<DeviceLine>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetReport {
    pub at: String,
    pub server_version: String,
    pub silent_days: u32,
    pub offices: Vec<OfficeLine>,
}

/// A version as numbers (`0.1.0` → [0, 1, 0]); what does not read is 0.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The fleet by office: every office with a device (and headquarters'
/// devices last), its devices' health, silent offices and old versions
/// marked, as of `now`. Revoked devices are listed but do not keep an
/// office from being silent... nor make it so.
pub fn report(
    devices: &[Device],
    health: &[DeviceHealth],
    now: chrono::NaiveDateTime,
    silent_days: u32,
) -> FleetReport {
    let server_version = env!("CARGO_PKG_VERSION");
    let health: HashMap<&str, &DeviceHealth> =
        health.iter().map(|h| (h.device_id.as_str(), h)).collect();
    let cutoff =
        keqing_shared::when::fmt_datetime(now - chrono::Duration::days(i64::from(silent_days)));
    let mut offices: BTreeMap<String, Vec<DeviceLine>> = BTreeMap::new();
    for d in devices {
        let h = health.get(d.id.as_str());
        let version = h.and_then(|h| h.client_version.clone());
        offices
            .entry(d.office.clone().unwrap_or_else(|| "hq".into()))
            .or_default()
            .push(DeviceLine {
                id: d.id.clone(),
                name: d.name.clone(),
                revoked: d.revoked_at.is_some(),
                old_version: version
                    .as_deref()
                    .is_some_and(|v| version_key(v) < version_key(server_version)),
                version,
                outbox: h.and_then(|h| h.outbox),
                quarantined: h.and_then(|h| h.quarantined),
                last_push: h.and_then(|h| h.last_push.clone()),
                last_pull: h.and_then(|h| h.last_pull.clone()),
                last_sync: h.and_then(|h| h.last_sync.clone()),
            });
    }
    let mut lines: Vec<OfficeLine> = offices
        .into_iter()
        .map(|(office, mut devices)| {
            devices.sort_by(|a, b| a.name.cmp(&b.name));
            let last_sync = devices
                .iter()
                .filter(|d| !d.revoked)
                .filter_map(|d| d.last_sync.clone())
                .max();
            let name = match keqing_shared::office::office(&office) {
                Ok(o) => o.name.to_string(),
                Err(_) => "总部".to_string(),
            };
            OfficeLine {
                silent: devices.iter().any(|d| !d.revoked)
                    && last_sync.as_ref().is_none_or(|t| *t < cutoff),
                office,
                name,
                last_sync,
                devices,
            }
        })
        .collect();
    // Offices by code, headquarters last.
    lines.sort_by_key(|o| (o.office == "hq", o.office.clone()));
    FleetReport {
        at: keqing_shared::when::fmt_datetime(now),
        server_version: server_version.to_string(),
        silent_days,
        offices: lines,
    }
}

/// The process's Prometheus recorder, installed once (the first server a
/// process runs; tests run many in one process).
pub fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("keqing_push_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("keqing_pushes_total", "Pushes served (accepted or refused)");
    describe_counter!("keqing_pulls_total", "Pulls begun");
    describe_counter!(
        "keqing_changes_in_total",
        "Changes stored from pushes (not duplicates)"
    );
    describe_counter!("keqing_bytes_in_total", "Bytes of the changes pushed");
    describe_counter!(
        "keqing_push_rechecks_total",
        "Pushes checked again in the writer's turn: what their check read moved after it"
    );
    describe_counter!("keqing_changes_out_total", "Changes sent by pulls");
    describe_counter!(
        "keqing_bytes_out_total",
        "Bytes of the changes and snapshots pulls sent"
    );
    describe_counter!("keqing_refusals_total", "Requests refused, by gRPC code");
    describe_histogram!("keqing_push_seconds", "Time to serve a push");
    describe_gauge!("keqing_open_streams", "Pull streams being served");
    describe_gauge!(
        "keqing_projector_lag_positions",
        "Log positions the projector has not read"
    );
    describe_gauge!(
        "keqing_projector_lag_seconds",
        "Seconds since the projector was last caught up (0: caught up)"
    );
    describe_gauge!(
        "keqing_office_seconds_since_sync",
        "Seconds since the office's latest device sync"
    );
    describe_gauge!("keqing_store_bytes", "The store's size on disk");
    // Present from the first scrape, at 0, not only after the first event.
    for counter in [
        "keqing_pushes_total",
        "keqing_pulls_total",
        "keqing_changes_in_total",
        "keqing_bytes_in_total",
        "keqing_push_rechecks_total",
        "keqing_changes_out_total",
        "keqing_bytes_out_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!("keqing_open_streams").set(0.0);
}

/// A refused request, counted by its gRPC code's name.
pub fn refused(kind: keqing_shared::sync::SyncErrorKind) {
    let code = format!("{:?}", keqing_proto::code_of(kind));
    metrics::counter!("keqing_refusals_total", "code" => code).increment(1);
}

/// The gauges read from the store: projector lag, each office's seconds
/// since its latest sync, the store's size. Set every few seconds by the
/// serving process (with the health flush).
pub fn update_gauges(
    store: &dyn Store,
    caught_up_at: Option<std::time::Instant>,
) -> crate::store::Result<()> {
    let session = store.projections()?;
    let lag = session
        .max_seq()?
        .saturating_sub(session.projector_cursor()?);
    drop(session);
    metrics::gauge!("keqing_projector_lag_positions").set(lag as f64);
    let lag_seconds = match (lag, caught_up_at) {
        (0, _) => 0.0,
        (_, Some(at)) => at.elapsed().as_secs_f64(),
        (_, None) => 0.0,
    };
    metrics::gauge!("keqing_projector_lag_seconds").set(lag_seconds);
    let now = keqing_host::now_cst();
    let fleet = report(&store.devices()?, &store.device_health()?, now, 1);
    for o in &fleet.offices {
        if let Some(t) = o
            .last_sync
            .as_deref()
            .and_then(keqing_shared::when::read_stored_datetime)
        {
            metrics::gauge!("keqing_office_seconds_since_sync", "office" => o.office.clone())
                .set((now - t).num_seconds().max(0) as f64);
        }
    }
    metrics::gauge!("keqing_store_bytes").set(store.size_bytes()? as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, office: Option<&str>) -> Device {
        Device {
            id: id.into(),
            name: id.into(),
            office: office.map(str::to_string),
            actor: None,
            created_at: "2026-11-01T00:00:00".into(),
            revoked_at: None,
            cert_sha256: None,
        }
    }

    #[test]
    fn an_office_is_silent_when_no_device_synced_within_the_days_and_old_versions_are_marked() {
        let now = keqing_shared::when::parse_datetime("2026-12-03 12:00").unwrap();
        let devices = [
            device("gd1", Some("44")),
            device("gd2", Some("44")),
            device("bj1", Some("11")),
            device("zj1", Some("33")),
            device("hq1", None),
        ];
        let seen = |id: &str, at: &str, v: &str| DeviceHealth {
            device_id: id.into(),
            client_version: Some(v.into()),
            outbox: Some(3),
            quarantined: Some(0),
            last_sync: Some(at.into()),
            ..Default::default()
        };
        let health = [
            seen("gd1", "2026-11-28T09:00:00", "0.0.1"),
            seen("gd2", "2026-12-02T09:00:00", env!("CARGO_PKG_VERSION")),
            seen("bj1", "2026-11-30T11:59:00", env!("CARGO_PKG_VERSION")),
        ];
        let r = report(&devices, &health, now, 2);
        let by: HashMap<&str, &OfficeLine> =
            r.offices.iter().map(|o| (o.office.as_str(), o)).collect();
        assert!(!by["44"].silent, "one of its devices synced yesterday");
        assert!(by["11"].silent, "three days and a minute");
        assert!(by["33"].silent, "never synced");
        assert_eq!(r.offices.last().unwrap().office, "hq");
        let gd1 = by["44"].devices.iter().find(|d| d.id == "gd1").unwrap();
        assert!(gd1.old_version && gd1.outbox == Some(3));
        assert!(
            !by["44"]
                .devices
                .iter()
                .find(|d| d.id == "gd2")
                .unwrap()
                .old_version
        );
        assert_eq!(by["44"].last_sync.as_deref(), Some("2026-12-02T09:00:00"));
    }
}
