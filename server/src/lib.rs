//! # keqing-server
//!
//! Merges the dossiers of all 27 offices and serves each device its scope.
//!
//! Map of the modules:
//! - [`store`]: the SQLite store (devices, change log, snapshots) behind the
//!   [`store::SyncStore`] trait; the only module that writes SQL.
//! - [`hub`]: the sync core: authentication, checks on every pushed change,
//!   durable appends, the change feed.
//! - [`run`]: a real tonic server on a given listener, with the standard
//!   gRPC health service and server reflection; tests call it on port 0.

pub mod hub;
pub mod store;

use std::future::Future;
use std::sync::Arc;

/// Serves Keqing sync on `listener` until `shutdown` completes, then stops
/// gracefully (in-flight calls finish).
pub async fn run(
    listener: tokio::net::TcpListener,
    store: store::SqliteStore,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let hub = Arc::new(hub::Hub::new(store)?);
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keqing_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(keqing_proto::sync_server(hub))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}
