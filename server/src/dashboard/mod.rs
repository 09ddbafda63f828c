//! Headquarters' dashboard (数据管理中心看板): the national table, charts,
//! drill-down to a province and its staff, duplicate review, downloads.
//!
//! Every figure comes from [`crate::reports::build_report`], the very
//! function behind `keqing-server report` and the reports RPC, so the
//! dashboard cannot disagree with them. People sign in as themselves: a
//! headquarters account (name, password checked against its Argon2id hash
//! in the store, role: analyst or administrator; `keqing-server user
//! add`). Under mutual TLS the browser must also show the certificate of a
//! live headquarters device (the dashboard is then served over TLS with
//! the same client CA). Sessions end after an idle time, at sign-out, and
//! at the next request once the account is closed or the certificate's
//! device revoked. Sign-in carries its own form secret, failures are
//! throttled per client and per name, and every refusal reads the same.
//! Only administrators see what names patients (the duplicate review, the
//! offices' read audit), and every such view is audited. Sessions live in
//! memory: a restart asks everyone to sign in again.

mod pages;

use crate::hub::Access;
use crate::reports::{build_report, check_request};
use crate::store::Store;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use keqing_host::sign_in::{
    Attempt, Sessions, SignInThrottle, cleared_cookie, cookie, random_secret,
};
use keqing_shared::report::{Report, Scope};
use keqing_shared::sheets::{self, FileFormat};
use keqing_shared::staff::HqRole;
use keqing_shared::when::parse_date;
use maud::Markup;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COOKIE: &str = "keqing_hq";
/// How long a session lasts without a request, unless the server is told
/// otherwise (`--idle-minutes`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);
/// The cookie carrying the sign-in form's secret (login CSRF: a page of
/// another site cannot sign this browser in with a token of its choosing).
const LOGIN_COOKIE: &str = "keqing_login";
const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(600);
/// What every refused sign-in reads: no hint whether the name is unknown,
/// the password wrong, the account closed or the certificate missing (the
/// server's log says).
const REFUSED: &str = "无法登录：姓名或密码不对 (wrong name or password)";
/// Days a page shows when no range is asked for.
const DEFAULT_DAYS: i64 = 7;

struct Inner {
    /// The store; reports bring the projections up to date in a session of
    /// their own first, as `keqing-server report` does.
    store: Arc<dyn Store>,
    /// Open sessions, by the signed-in person's name.
    sessions: Sessions<String>,
    hosts: Vec<String>,
    /// The server's access rule (certificates required or not).
    access: Access,
    /// Sign-in form secrets issued and not used yet, with their expiry.
    login_forms: Mutex<HashMap<String, Instant>>,
    failed: SignInThrottle,
    erasure_ledger: Option<std::path::PathBuf>,
    silent_days: u32,
}

/// The SHA-256 of the client certificate a TLS connection verified (the
/// dashboard served over mutual TLS puts it on each request).
#[derive(Clone, Copy, Debug)]
pub struct PeerCertificate(pub [u8; 32]);

/// How the dashboard admits people.
#[derive(Clone, Default)]
pub struct DashboardOptions {
    /// The server's access rule (`serve --mtls`: certificates required).
    pub access: Access,
    /// Serve over TLS with client certificates (`serve --mtls --http`):
    /// the certificate each connection verified goes with its requests.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    /// A session's idle end ([`DEFAULT_IDLE`] when not given).
    pub idle: Option<Duration>,
    /// The erasure ledger confirmed erasures are appended to (`None`: the
    /// dashboard takes erasure requests, and `keqing-server erase
    /// --confirm` confirms them).
    pub erasure_ledger: Option<std::path::PathBuf>,
    /// Serve `/metrics` (Prometheus text format) from this recorder: the
    /// serving process's counts, no patient data, no sign-in (a scraper
    /// has none), whatever the `Host` (a scraper names the machine as it
    /// knows it).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Offices without a sync for this many days are marked silent on
    /// the devices page (the settings' silent-days; 0: 2 days).
    pub silent_days: u32,
}

#[derive(Clone)]
struct Dashboard(Arc<Inner>);

/// The signed-in person of a request.
#[derive(Clone)]
struct Viewer {
    name: String,
    role: HqRole,
    csrf: String,
}

impl Viewer {
    /// How the audit log names the person.
    fn actor(&self) -> String {
        format!("user:{}", self.name)
    }
}

#[derive(Debug)]
enum DashError {
    BadRequest(String),
    NotFound(String),
    /// The page is an administrator's.
    Forbidden,
    Csrf,
    BadHost,
    Internal(String),
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            DashError::BadRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            DashError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            DashError::Forbidden => (
                StatusCode::FORBIDDEN,
                "此页面仅限管理员 (only headquarters administrators see this page: it names patients)"
                    .into(),
            ),
            DashError::Csrf => (
                StatusCode::FORBIDDEN,
                "表单已过期，请刷新页面 (the form's security token is missing or stale)".into(),
            ),
            DashError::BadHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "请用本机地址访问 (this dashboard answers only requests addressed to this machine)"
                    .into(),
            ),
            DashError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, pages::error_page(status, &message)).into_response()
    }
}

impl From<crate::catalog::CatalogImportError> for DashError {
    fn from(e: crate::catalog::CatalogImportError) -> Self {
        use crate::catalog::CatalogImportError as E;
        match e {
            E::File(_) | E::NoCatalog => {
                DashError::BadRequest(format!("{e}（未导入 nothing stored）"))
            }
            E::Store(_) | E::Damaged(_) => DashError::Internal(e.to_string()),
        }
    }
}

impl From<crate::lifecycle::LifecycleError> for DashError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as E;
        match e {
            E::NoDossier(_)
            | E::Erased(_)
            | E::NotADossier(_)
            | E::Invalid(_)
            | E::NotRequested(_) => DashError::BadRequest(format!("{e}（未执行 nothing changed）")),
            E::Store(_) | E::Damaged(..) | E::Ledger(..) => DashError::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for DashError {
    fn from(e: crate::store::StoreError) -> Self {
        DashError::Internal(e.to_string())
    }
}

impl Dashboard {
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, DashError> + Send + 'static,
    ) -> Result<T, DashError> {
        let store = self.0.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| DashError::Internal(format!("task failed: {e}")))?
    }

    /// The person of a request's session, if it is open (used within the
    /// idle time), their account still open, and, where the access rule
    /// wants certificates, the browser showing a live headquarters
    /// device's. A session that fails any of these is ended.
    async fn viewer(
        &self,
        headers: &HeaderMap,
        certificate: Option<[u8; 32]>,
    ) -> Result<Option<Viewer>, DashError> {
        let Some(sid) = session_cookie(headers) else {
            return Ok(None);
        };
        let Some((name, csrf)) = self.0.sessions.use_session(&sid) else {
            return Ok(None);
        };
        let access = self.0.access;
        let user = self
            .with_store(move |s| {
                let admitted = hq_certificate_admits(s, access, certificate)?;
                Ok(s.user(&name)?
                    .filter(|u| admitted && u.disabled_at.is_none()))
            })
            .await?;
        match user {
            Some(u) => Ok(Some(Viewer {
                name: u.name,
                role: u.role,
                csrf,
            })),
            None => {
                self.0.sessions.close(&sid);
                Ok(None)
            }
        }
    }

    /// A new sign-in form secret (valid for [`LOGIN_FORM_LIFETIME`], once).
    fn login_secret(&self) -> String {
        let secret = random_secret();
        let mut forms = keqing_host::lock(&self.0.login_forms);
        let now = Instant::now();
        forms.retain(|_, expires| *expires > now);
        // Anyone may ask for the form: its secrets must not grow for ever.
        if forms.len() >= 10_000 {
            forms.clear();
        }
        forms.insert(secret.clone(), now + LOGIN_FORM_LIFETIME);
        secret
    }

    /// Whether `secret` was issued here, is fresh and unused.
    fn login_secret_live(&self, secret: &str) -> bool {
        keqing_host::lock(&self.0.login_forms)
            .get(secret)
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Whether `secret` was issued here, is fresh, and unused (it is now).
    fn take_login_secret(&self, secret: &str) -> bool {
        let mut forms = keqing_host::lock(&self.0.login_forms);
        forms
            .remove(secret)
            .is_some_and(|expires| expires > Instant::now())
    }

    /// The report of `scope` over the asked range (default: the last
    /// [`DEFAULT_DAYS`] days with calls).
    async fn report(
        &self,
        scope: Scope,
        range: &HashMap<String, String>,
    ) -> Result<Report, DashError> {
        let asked = (day_param(range, "from")?, day_param(range, "to")?);
        self.with_store(move |store| {
            let mut session = store.projections()?;
            let (from, to) = match asked {
                (Some(f), Some(t)) => (f, t),
                (f, t) => {
                    let last = match t {
                        Some(t) => t,
                        None => session
                            .last_call_day(scope.office())?
                            .unwrap_or_else(|| keqing_host::now_cst().date()),
                    };
                    (f.unwrap_or(last - chrono::Duration::days(DEFAULT_DAYS - 1)), last)
                }
            };
            check_request(&scope, from, to).map_err(|e| DashError::BadRequest(e.message))?;
            let started = Instant::now();
            let r = build_report(&mut *session, &scope, from, to)?;
            tracing::info!(scope = ?scope, %from, %to, ms = started.elapsed().as_millis() as u64, "dashboard report");
            Ok(r)
        })
        .await
    }
}

fn day_param(q: &HashMap<String, String>, name: &str) -> Result<Option<NaiveDate>, DashError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_date(s)
            .map(Some)
            .map_err(|e| DashError::BadRequest(e.to_string())),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// Whether `shown` (the SHA-256 of the certificate the browser's TLS
/// connection verified) may open the dashboard: any, or none, unless the
/// access rule wants certificates; then that of a headquarters device not
/// revoked.
fn hq_certificate_admits(
    store: &dyn Store,
    access: Access,
    shown: Option<[u8; 32]>,
) -> Result<bool, DashError> {
    if !access.require_certificates {
        return Ok(true);
    }
    let Some(shown) = shown else {
        return Ok(false);
    };
    Ok(store.devices()?.iter().any(|d| {
        d.office.is_none()
            && d.revoked_at.is_none()
            && d.cert_sha256.as_deref() == Some(shown.as_slice())
    }))
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn serve(
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
    options: DashboardOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = Dashboard(Arc::new(Inner {
        store,
        sessions: Sessions::new(options.idle.unwrap_or(DEFAULT_IDLE)),
        hosts: keqing_shared::html::allowed_hosts(addr),
        access: options.access,
        login_forms: Mutex::new(HashMap::new()),
        failed: SignInThrottle::default(),
        erasure_ledger: options.erasure_ledger,
        silent_days: if options.silent_days == 0 {
            2
        } else {
            options.silent_days
        },
    }));
    let metrics = options.metrics;
    match options.tls {
        Some(tls) => serve_tls(router(app, metrics), listener, tls, shutdown).await,
        None => {
            axum::serve(
                listener,
                router(app, metrics).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?;
            Ok(())
        }
    }
}

/// Serves `app` over TLS with client certificates: each connection's
/// verified certificate (its SHA-256) and address go with its requests.
async fn serve_tls(
    app: Router,
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that never finishes its handshake is dropped.
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| PeerCertificate(sha2::Sha256::digest(leaf).into()));
            let service = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(c) = certificate {
                        req.extensions_mut().insert(c);
                    }
                    req
                },
            );
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(service),
                    )
                    .await;
        });
    }
}

fn router(
    app: Dashboard,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    let signed_in = Router::new()
        .route("/", get(national))
        .route("/province/{code}", get(province))
        .route("/duplicates", get(duplicates))
        .route("/reads", get(reads))
        .route("/catalog", get(catalog))
        .route("/spend", post(spend))
        .route("/lifecycle", get(lifecycle))
        .route("/devices", get(devices))
        .route("/transfer", post(transfer))
        .route("/erase", post(erase_request))
        .route("/erase/confirm", post(erase_confirm))
        .route("/unreadable", get(unreadable))
        .route("/export", get(export))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_viewer));
    let routes = Router::new()
        .merge(signed_in)
        .route("/login", get(login_form).post(login))
        .route("/assets/dashboard.css", get(css))
        .with_state(app.clone());
    let mut guarded = keqing_host::web::guard_hosts(routes, app.0.hosts.clone(), || {
        DashError::BadHost.into_response()
    });
    if let Some(handle) = metrics {
        guarded = guarded.route(
            "/metrics",
            get(move || {
                let text = handle.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    }
    keqing_host::web::secure_headers(guarded)
}

/// The certificate the connection of a request showed, if any.
fn peer_certificate(req: &Request) -> Option<[u8; 32]> {
    req.extensions().get::<PeerCertificate>().map(|c| c.0)
}

/// Sends anyone without a live session to the login page.
async fn require_viewer(State(app): State<Dashboard>, mut req: Request, next: Next) -> Response {
    let certificate = peer_certificate(&req);
    match app.viewer(req.headers(), certificate).await {
        Ok(Some(v)) => {
            req.extensions_mut().insert(v);
            next.run(req).await
        }
        Ok(None) => Redirect::to("/login").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn css() -> Response {
    keqing_host::web::asset("text/css; charset=utf-8", include_str!("dashboard.css"))
}

/// The sign-in page: its form secret, and the same in a cookie of this
/// browser's (a post must carry both). A browser that already holds a live
/// one keeps it (it may load the page twice; the form it shows must match
/// its cookie).
fn login_page(
    app: &Dashboard,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let held = cookie(headers, LOGIN_COOKIE).filter(|s| app.login_secret_live(s));
    let secret = held.unwrap_or_else(|| app.login_secret());
    let cookie = format!(
        "{LOGIN_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/login; Max-Age={}",
        LOGIN_FORM_LIFETIME.as_secs()
    );
    let mut res = (status, pages::login(&secret, error)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn login_form(State(app): State<Dashboard>, headers: HeaderMap) -> Response {
    login_page(&app, &headers, StatusCode::OK, None)
}

async fn login(
    State(app): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, DashError> {
    let certificate = peer_certificate(&req);
    let headers = req.headers().clone();
    let axum::Form(fields): axum::Form<HashMap<String, String>> =
        axum::Form::from_request(req, &())
            .await
            .map_err(|e| DashError::BadRequest(e.body_text()))?;
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let Attempt {
        name,
        password,
        possible,
    } = Attempt::new(&field("name"), field("password"));
    let client = peer.ip();
    if app.0.failed.blocked(client, &name) {
        tracing::warn!(%client, name = %keqing_shared::printable::printable(&name), "dashboard sign-in throttled");
        return Ok(login_page(
            &app,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some("尝试次数过多，请十分钟后再试 (too many failed sign-ins; try again later)"),
        ));
    }
    // The form's secret must be one issued here, unused, and the one in
    // this browser's sign-in cookie: another site's page cannot have both.
    let posted = field("csrf");
    if posted.is_empty()
        || cookie(&headers, LOGIN_COOKIE).as_deref() != Some(posted.as_str())
        || !app.take_login_secret(&posted)
    {
        return Err(DashError::Csrf);
    }
    let access = app.0.access;
    let who = name.clone();
    let admitted = app
        .with_store(move |s| {
            let user = if possible { s.user(&who)? } else { None };
            // No such person: checked against a decoy all the same, so the
            // clock does not tell which names exist. What no account can
            // be is not hashed at all.
            let right = possible
                && keqing_host::passwords::verify_or_decoy(
                    user.as_ref().map(|u| u.password_hash.as_str()),
                    &password,
                );
            Ok(match user.filter(|_| right) {
                None => Err("wrong name or password"),
                Some(u) if u.disabled_at.is_some() => Err("account closed"),
                Some(_) if !hq_certificate_admits(s, access, certificate)? => {
                    Err("no certificate of a live headquarters device")
                }
                Some(u) => Ok(u),
            })
        })
        .await?;
    let user = match admitted {
        Ok(u) => u,
        Err(why) => {
            app.0.failed.fail(client, &name);
            tracing::warn!(%client, name = %keqing_shared::printable::printable(&name), reason = why, "dashboard sign-in refused");
            return Ok(login_page(
                &app,
                &HeaderMap::new(),
                StatusCode::UNAUTHORIZED,
                Some(REFUSED),
            ));
        }
    };
    app.0.failed.succeeded(&user.name);
    let actor = format!("user:{}", user.name);
    let role = user.role.as_str();
    app.with_store(move |s| Ok(s.audit(&actor, "dashboard.sign_in", "dashboard", role)?))
        .await?;
    let (sid, _) = app.0.sessions.open(user.name.clone());
    tracing::info!(%client, user = %keqing_shared::printable::printable(&user.name), "dashboard sign-in");
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&keqing_host::sign_in::session_cookie(COOKIE, &sid))
            .map_err(|e| DashError::Internal(e.to_string()))?,
    );
    Ok(res)
}

async fn logout(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    headers: HeaderMap,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, DashError> {
    if fields.get("csrf") != Some(&viewer.csrf) {
        return Err(DashError::Csrf);
    }
    if let Some(sid) = session_cookie(&headers) {
        app.0.sessions.close(&sid);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cleared_cookie(COOKIE))
            .map_err(|e| DashError::Internal(e.to_string()))?,
    );
    Ok(res)
}

async fn national(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    let report = app.report(Scope::National, &q).await?;
    Ok(pages::national(&viewer, &report))
}

async fn province(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    let office =
        keqing_shared::office::office(&code).map_err(|e| DashError::NotFound(e.to_string()))?;
    let report = app
        .report(Scope::Office(office.code.to_string()), &q)
        .await?;
    Ok(pages::province(&viewer, &report))
}

async fn duplicates(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Result<Markup, DashError> {
    if !viewer.role.sees_personal_details() {
        return Err(DashError::Forbidden);
    }
    let actor = viewer.actor();
    let pairs = app
        .with_store(move |s| {
            let mut session = s.projections()?;
            crate::projector::catch_up(&mut *session, |_, _| {})?;
            let pairs = session.duplicate_candidates()?;
            // Names and phones of every office: a read of personal details.
            s.audit(
                &actor,
                "dashboard.duplicates",
                "all offices",
                &format!("{} pairs shown", pairs.len()),
            )?;
            Ok(pairs)
        })
        .await?;
    Ok(pages::duplicates(&viewer, &pairs))
}

/// The documents the reports lack (ids, offices and reasons: no personal
/// details, so no audit line).
async fn unreadable(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Result<Markup, DashError> {
    let docs = app
        .with_store(|s| {
            let mut session = s.projections()?;
            crate::projector::catch_up(&mut *session, |_, _| {})?;
            Ok(session.unreadable_documents(None)?)
        })
        .await?;
    Ok(pages::unreadable(&viewer, &docs))
}

/// What is on screen, as a file: `?scope=national|CODE&from&to&format=csv|xlsx`.
async fn export(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, DashError> {
    let scope = match q.get("scope").map(String::as_str) {
        None | Some("national") => Scope::National,
        Some(code) => Scope::Office(
            keqing_shared::office::office(code)
                .map_err(|e| DashError::BadRequest(e.to_string()))?
                .code
                .to_string(),
        ),
    };
    let format = FileFormat::parse(q.get("format").map(String::as_str).unwrap_or("csv"))
        .map_err(|e| DashError::BadRequest(e.to_string()))?;
    let report = app.report(scope, &q).await?;
    let bytes = sheets::file(&report, format).map_err(|e| DashError::Internal(e.to_string()))?;
    let (mime, ext) = match format {
        FileFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        FileFormat::Xlsx => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        FileFormat::Json => ("application/json", "json"),
    };
    let scope_name = match &report.scope {
        Scope::National => "national".to_string(),
        Scope::Office(o) => o.clone(),
    };
    let (actor, subject, detail) = (
        viewer.actor(),
        scope_name.clone(),
        format!("{} {} to {}", ext, report.from, report.to),
    );
    app.with_store(move |s| Ok(s.audit(&actor, "dashboard.export", &subject, &detail)?))
        .await?;
    let disposition = format!(
        "attachment; filename=\"keqing-{scope_name}-{}-{}.{ext}\"",
        report.from, report.to
    );
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// The most lines the read audit page shows at once.
const READS_PAGE: u32 = 500;

/// 读取审计: who opened which dossier, exported what, at the offices
/// (`?office=44` for one, `?after=SEQ` for the next page). An
/// administrator's page, and each view of it is audited.
async fn reads(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    if !viewer.role.sees_personal_details() {
        return Err(DashError::Forbidden);
    }
    let office = match q.get("office").map(|o| o.trim()).filter(|o| !o.is_empty()) {
        Some(code) => Some(
            keqing_shared::office::office(code)
                .map_err(|e| DashError::BadRequest(e.to_string()))?
                .code
                .to_string(),
        ),
        None => None,
    };
    let after = match q.get("after").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| DashError::BadRequest(format!("after: not a position: {a}")))?,
        None => 0,
    };
    let actor = viewer.actor();
    let asked = office.clone();
    let lines = app
        .with_store(move |s| {
            let lines = s.office_reads(asked.as_deref(), after, READS_PAGE)?;
            s.audit(
                &actor,
                "dashboard.reads",
                asked.as_deref().unwrap_or("all offices"),
                &format!("{} lines after {after}", lines.len()),
            )?;
            Ok(lines)
        })
        .await?;
    Ok(pages::reads(&viewer, office.as_deref(), &lines, READS_PAGE))
}

/// 目录与投放: the catalogue in force; administrators also import media
/// spend here (the same check as `keqing-server spend import`).
async fn catalog(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    let catalog = app
        .with_store(|s| Ok(crate::catalog::current(&*s.reader()?)?))
        .await?;
    Ok(pages::catalog(
        &viewer,
        catalog.as_ref(),
        q.get("imported").map(String::as_str),
    ))
}

/// Imports the media spend pasted into the catalogue page's form (CSV:
/// date,office,source,amount): checked whole, refused with the line at
/// fault, nothing stored then. Administrators only; audited as theirs.
async fn spend(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, DashError> {
    if fields.get("csrf") != Some(&viewer.csrf) {
        return Err(DashError::Csrf);
    }
    if !viewer.role.sees_personal_details() {
        return Err(DashError::Forbidden);
    }
    let text = fields.get("csv").cloned().unwrap_or_default();
    let actor = viewer.actor();
    let imported = app
        .with_store(move |s| Ok(crate::catalog::import_spend(s, &text, &actor)?.rows))
        .await?;
    Ok(Redirect::to(&format!("/catalog?imported={imported}")).into_response())
}

/// 转档与删除: transfers between offices and erasures on request, and the
/// erasures made and asked for. Administrators only.
async fn lifecycle(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    if !viewer.role.sees_personal_details() {
        return Err(DashError::Forbidden);
    }
    let (erased, asked) = app
        .with_store(|s| Ok((s.tombstones()?, s.erasure_requests()?)))
        .await?;
    Ok(pages::lifecycle(
        &viewer,
        &erased,
        &asked,
        app.0.erasure_ledger.is_some(),
        q.get("done").map(String::as_str),
    ))
}

/// The checks every lifecycle form passes: its security token, an
/// administrator.
fn admin_form(viewer: &Viewer, fields: &HashMap<String, String>) -> Result<(), DashError> {
    if fields.get("csrf") != Some(&viewer.csrf) {
        return Err(DashError::Csrf);
    }
    if !viewer.role.sees_personal_details() {
        return Err(DashError::Forbidden);
    }
    Ok(())
}

fn field(fields: &HashMap<String, String>, name: &str) -> String {
    fields
        .get(name)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The same transfer as `keqing-server transfer`, audited as the person's.
async fn transfer(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, DashError> {
    admin_form(&viewer, &fields)?;
    let (dossier, to, reason) = (
        field(&fields, "dossier"),
        field(&fields, "to"),
        field(&fields, "reason"),
    );
    let actor = viewer.actor();
    let t = app
        .with_store(move |s| {
            Ok(crate::lifecycle::transfer(
                s, &dossier, &to, &reason, &actor,
            )?)
        })
        .await?;
    Ok(Redirect::to(&format!(
        "/lifecycle?done={}",
        urlencoding_lite(&format!("已转档 {} → {}", t.dossier, t.to))
    ))
    .into_response())
}

/// Step one of an erasure: keeps the request and shows what step two
/// will erase (masked).
async fn erase_request(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Markup, DashError> {
    admin_form(&viewer, &fields)?;
    let (dossier, reason) = (field(&fields, "dossier"), field(&fields, "reason"));
    let actor = viewer.actor();
    let preview = app
        .with_store(move |s| {
            Ok(crate::lifecycle::request_erasure(
                s, &dossier, &reason, &actor,
            )?)
        })
        .await?;
    Ok(pages::erase_preview(
        &viewer,
        &preview,
        app.0.erasure_ledger.is_some(),
    ))
}

/// Step two: erases a dossier whose erasure was asked for.
async fn erase_confirm(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, DashError> {
    admin_form(&viewer, &fields)?;
    let Some(ledger) = app.0.erasure_ledger.clone() else {
        return Err(DashError::BadRequest(
            "此看板不能确认删除 confirm with `keqing-server erase --dossier ID --confirm`".into(),
        ));
    };
    let dossier = field(&fields, "dossier");
    let actor = viewer.actor();
    let done = app
        .with_store(move |s| {
            Ok(crate::lifecycle::confirm_erasure(
                s, &dossier, &actor, &ledger,
            )?)
        })
        .await?;
    let mut message = format!("已删除 {}", done.dossier);
    if let Some(e) = &done.scrub_error {
        message.push_str(&format!("（存储清理未完成 scrub failed: {e}）"));
    }
    Ok(Redirect::to(&format!("/lifecycle?done={}", urlencoding_lite(&message))).into_response())
}

/// Percent-encodes a query value (UTF-8 bytes outside the unreserved set).
fn urlencoding_lite(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// 设备状况: fleet health by office (no patient data: every signed-in
/// person sees it).
async fn devices(
    State(app): State<Dashboard>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Result<Markup, DashError> {
    let silent_days = app.0.silent_days;
    let report = app
        .with_store(move |s| {
            Ok(crate::fleet::report(
                &s.devices()?,
                &s.device_health()?,
                keqing_host::now_cst(),
                silent_days,
            ))
        })
        .await?;
    Ok(pages::devices(&viewer, &report))
}
