//! What both web front ends (the office workstation and headquarters'
//! dashboard) put around their routes alike.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
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

/// The content security policy of both front ends: everything from this
/// origin, nothing inline (no script, no style attribute), no frames, forms
/// posted only here. An injected `<script>` or `style` would not run even
/// if some text escaped escaping.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the security headers to every response: the content security
/// policy, no framing (clickjacking), no referrer (a dossier's URL holds
/// its id), no content sniffing, and, except for the compiled-in assets
/// under `/assets/`, `Cache-Control: no-store`: pages show patient data,
/// which must not stay in the browser's cache on a shared office PC.
pub fn secure_headers(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |req: Request, next: Next| async move {
            let asset = req.uri().path().starts_with("/assets/");
            let mut res = next.run(req).await;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            if !asset {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            res
        },
    ))
}

/// An asset compiled into the binary.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
