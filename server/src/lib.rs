//! # keqing-server
//!
//! Merges the dossiers of all 27 offices and serves each device its scope.
//!
//! Map of the modules:
//! - [`store`]: the storage seam ([`store::Store`] and its sessions) and
//!   its backends; the only module that writes SQL.
//! - [`config`]: the settings (file < KEQING_… variables < flags).
//! - [`bundle`]: change bundles of offices offline for weeks.
//! - [`dashboard`]: headquarters' web dashboard over the same reports.
//! - [`fleet`]: fleet health (devices' last syncs, backlogs, versions)
//!   and the Prometheus metrics.
//! - [`hub`]: the sync core: authentication, checks on every pushed change,
//!   durable appends, the change feed.
//! - [`lifecycle`]: transfers of dossiers between offices and erasures.
//! - [`projector`]: follows the log and keeps the projection tables.
//! - [`reports`]: the reports service (scope checks, shared definitions).
//! - [`tls`]: certificates (`tls init`) and the server's TLS configuration.
//! - [`run`]: a real tonic server on a given listener, with the standard
//!   gRPC health service and server reflection; tests call it on port 0.

pub mod bundle;
pub mod catalog;
pub mod compaction;
pub mod config;
pub mod dashboard;
pub mod fleet;
pub mod hub;
pub mod lifecycle;
pub mod projector;
pub mod reports;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

/// tonic refuses a message over the decoding limit with OUT_OF_RANGE; for a
/// client it means "too big", which gRPC spells RESOURCE_EXHAUSTED. No handler
/// of ours answers OUT_OF_RANGE, so the mapping is unambiguous.
fn oversized_is_resource_exhausted<B>(
    mut res: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if res
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
    {
        let code = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = code.parse() {
            res.headers_mut().insert("grpc-status", v);
        }
    }
    res
}

/// Serves Keqing sync on `listener` until `shutdown` completes, then stops
/// gracefully (in-flight calls finish).
pub async fn run(
    listener: tokio::net::TcpListener,
    store: Arc<dyn store::Store>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_tls(listener, store, None, shutdown).await
}

/// Requests one connection may have going at once.
const STREAMS_PER_CONNECTION: u32 = 16;

/// How often the server does its store's upkeep (SQLite: copies its WAL
/// back into the database file).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How many upkeep ticks between two returns of freed memory (5 s).
const TRIM_EVERY_TICKS: u64 = 10;

/// How long the background projector waits for a push before it looks at
/// the log anyway (another process's pushes do not wake it), and how soon
/// a process takes over the projector from one that died.
const PROJECTOR_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// While a push or pull is being served, the background projector rests
/// this many times as long as it worked on each document (its batches'
/// writes included): it then takes a tenth of one core, whatever a
/// document costs it, and devices have the rest.
const PROJECTOR_REST_PER_WORK: u32 = 9;

/// The longest rest before one document (a slow write must not stall the
/// projector for long).
const PROJECTOR_MAX_REST: std::time::Duration = std::time::Duration::from_millis(50);

/// What a server's settings may change of how it serves.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Each device's average requests per second, and at once.
    pub requests_per_second: u32,
    pub request_burst: u32,
    /// Days of change log kept whole (see [`compaction`]).
    pub log_keep_days: u32,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            requests_per_second: keqing_shared::sync::limits::REQUESTS_PER_SECOND,
            request_burst: keqing_shared::sync::limits::REQUEST_BURST,
            log_keep_days: compaction::DEFAULT_KEEP_DAYS,
        }
    }
}

/// [`run`], with TLS when `tls` is given (see [`tls`]).
pub async fn run_with_tls(
    listener: tokio::net::TcpListener,
    store: Arc<dyn store::Store>,
    tls: Option<tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_configured(listener, store, tls, RunOptions::default(), shutdown).await
}

/// [`run_with_tls`] with the settings' limits.
pub async fn run_configured(
    listener: tokio::net::TcpListener,
    store: Arc<dyn store::Store>,
    tls: Option<tls::ServerTls>,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let access = hub::Access {
        require_certificates: tls.as_ref().is_some_and(|t| t.require_client_certificates),
    };
    let appended = Arc::new(tokio::sync::Notify::new());
    // One admission for both services: a device's syncs and reports count
    // against the same limits.
    let admission =
        hub::Admission::with_rate_limit(access, options.requests_per_second, options.request_burst);
    let hub = Arc::new(hub::Hub::with_admission(
        store.clone(),
        appended.clone(),
        admission.clone(),
    )?);
    let in_flight = hub.in_flight();
    let fleet = hub.fleet();
    // When the projector last reached the end of the log (its lag in
    // seconds, for /metrics).
    let caught_up_at = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let projector_caught_up = caught_up_at.clone();
    // Reports catch up in sessions of their own: a report never waits for
    // the background projector (their saves are compare-and-set).
    let desk = Arc::new(reports::ReportDesk::new(store.clone(), admission));
    // The projector runs beside sync: woken by pushes (or every few
    // seconds), never in a push's path, and while devices are being
    // served it pauses before each document so they have the cores.
    // Stopped with the server.
    // With several processes over one store, one of them leads the
    // projector at a time; the others ask again at every wake-up.
    // A catch-up runs on a blocking thread, which aborting the task does
    // not stop: when serving ends, `stopping` breaks it off before its next
    // document (a long backlog must not hold a stopping server).
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Upkeep's first pass, before any projector or report session opens:
    // it copies back what an earlier process left in the WAL, and from
    // here on this process copies the WAL back on its own, so those
    // sessions keep the short backstop (SQLite; see `store::sqlite`'s
    // PROJECTOR_CHECKPOINT_PAGES).
    if let Err(e) = store.upkeep() {
        tracing::warn!(error = %e, "first upkeep failed; the task below tries again");
    }
    let projector_store = store.clone();
    let projector_stopping = stopping.clone();
    let projecting = tokio::spawn(async move {
        let mut leading = false;
        loop {
            let _ = tokio::time::timeout(PROJECTOR_IDLE, appended.notified()).await;
            let store = projector_store.clone();
            let in_flight = in_flight.clone();
            let stopping = projector_stopping.clone();
            let result = tokio::task::spawn_blocking(move || {
                if !store.lead_projector()? {
                    return Ok::<_, anyhow::Error>(None);
                }
                let mut session = store.projections()?;
                let mut working_since = std::time::Instant::now();
                let pace = || {
                    if in_flight.busy() {
                        let rest = working_since.elapsed() * PROJECTOR_REST_PER_WORK;
                        std::thread::sleep(rest.min(PROJECTOR_MAX_REST));
                    }
                    working_since = std::time::Instant::now();
                    if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                };
                Ok(Some(projector::catch_up_paced(
                    &mut *session,
                    |_, _| {},
                    pace,
                )?))
            })
            .await;
            if let Ok(Ok(Some(_))) = &result {
                *projector_caught_up
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
            }
            if let Ok(Ok(caught_up)) = &result
                && caught_up.is_some() != leading
            {
                leading = caught_up.is_some();
                match leading {
                    true => tracing::info!("this process runs the projector"),
                    false => tracing::info!("another process runs the projector"),
                }
            }
            match result {
                Ok(Ok(Some(c))) if c.documents > 0 => {
                    tracing::debug!(documents = c.documents, cursor = c.cursor, "projected")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "projector failed; retrying"),
                Err(e) => tracing::error!(error = %e, "projector task failed; retrying"),
            }
        }
    });
    // Upkeep runs on a task of its own (SQLite: the WAL is copied back
    // twice a second here, so pushes never do; see
    // `store::sqlite::schema::BACKSTOP_CHECKPOINT_PAGES`).
    let upkeep_store = store.clone();
    let upkeep_fleet = fleet.clone();
    let checkpointing = tokio::spawn(async move {
        // Its first pass ran before the projector started (above).
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + UPKEEP_EVERY, UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            every.tick().await;
            ticks += 1;
            let store = upkeep_store.clone();
            let fleet = upkeep_fleet.clone();
            let caught_up_at = caught_up_at.clone();
            let done = tokio::task::spawn_blocking(move || {
                // Every few seconds, the memory bursts of pushes freed
                // goes back to the system (resident size follows load),
                // what was seen of devices is written down, and the
                // gauges of /metrics read.
                if ticks.is_multiple_of(TRIM_EVERY_TICKS) {
                    keqing_host::release_free_memory();
                    // Neither keeps the WAL from being copied back below.
                    if let Err(e) = fleet.flush(&*store) {
                        tracing::warn!(error = %e, "fleet health not written; kept for the next try");
                    }
                    let at = *caught_up_at.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = fleet::update_gauges(&*store, Some(at)) {
                        tracing::warn!(error = %e, "metrics gauges not read");
                    }
                }
                store.upkeep()
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "store upkeep failed; retrying"),
                Err(e) => tracing::warn!(error = %e, "store upkeep task failed; retrying"),
            }
        }
    });
    // The log is compacted hourly, the first time a minute after start
    // (every process may: each step is one turn of the writer, and a floor
    // another process raised is not compacted again).
    let compact_store = store.clone();
    let compacting = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let mut every = tokio::time::interval(compaction::EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let store = compact_store.clone();
            let done = tokio::task::spawn_blocking(move || {
                compaction::compact(
                    &*store,
                    keqing_host::now_cst(),
                    options.log_keep_days,
                    &mut |_, _| {},
                )
            })
            .await;
            match done {
                Ok(Ok(c)) if c.changes > 0 => {
                    tracing::info!(
                        floor = c.floor,
                        changes = c.changes,
                        bytes = c.bytes,
                        "change log compacted"
                    )
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "log compaction failed; retrying within the hour")
                }
                Err(e) => tracing::warn!(error = %e, "log compaction task failed"),
            }
        }
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(
            keqing_proto::SYNC_SERVICE_NAME,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status(
            keqing_proto::REPORTS_SERVICE_NAME,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keqing_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // Accepted sockets are ours to configure: without TCP_NODELAY, small
    // responses wait on Nagle and the peer's delayed ACK (~40 ms a round).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    // HTTP/2 pings find a device that vanished without closing (an office
    // line that dropped): its connection, and any pull it held, end within
    // a minute instead of at TCP's retransmission timeout.
    // A device needs three streams at once (two pushes and a pull, or a
    // report); the cap bounds what one connection can make the server
    // decode at the same time, whoever it claims to be.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(STREAMS_PER_CONNECTION as usize);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.config)?;
    }
    let served = builder
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_resource_exhausted,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(keqing_proto::sync_server(hub))
        .add_service(keqing_proto::reports_server(desk))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    projecting.abort();
    checkpointing.abort();
    compacting.abort();
    // What was seen since the last flush is not lost with the process.
    let last_store = store.clone();
    match tokio::task::spawn_blocking(move || fleet.flush(&*last_store)).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "fleet health not written at shutdown"),
        Err(e) => tracing::warn!(error = %e, "fleet health task failed at shutdown"),
        Ok(Ok(())) => {}
    }
    served?;
    Ok(())
}
