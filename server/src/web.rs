//! What both web front ends (the office workstation in the `keqing` crate,
//! headquarters' dashboard here) need from axum alike.

use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Refuses every request whose `Host` header does not name one of `hosts`
/// (see [`keqing_shared::html::host_allowed`]) with `refused()`: a page of
/// another site that rebinds its DNS name to this machine gets nothing.
pub fn guard_hosts(router: Router, hosts: Vec<String>, refused: fn() -> Response) -> Router {
    let hosts = Arc::new(hosts);
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let hosts = hosts.clone();
            async move {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                if keqing_shared::html::host_allowed(host, &hosts) {
                    next.run(req).await
                } else {
                    refused()
                }
            }
        },
    ))
}

/// An asset compiled into the binary.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
