//! Headquarters' dashboard (数据管理中心看板): the national table, charts,
//! drill-down to a province and its staff, duplicate review, downloads.
//!
//! Every figure comes from [`crate::reports::build_report`], the very
//! function behind `keqing-server report` and the reports RPC, so the
//! dashboard cannot disagree with them. Login is with a headquarters
//! device's token (the identity every other HQ tool uses; revoking the
//! device ends its dashboard sessions at the next request). Sessions live
//! in memory: a restart asks for the token again.

mod pages;

use crate::reports::{build_report, check_request};
use crate::store::{Device, SqliteStore};
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use keqing_shared::report::{Report, Scope};
use keqing_shared::sheets::{self, FileFormat};
use keqing_shared::when::parse_date;
use maud::Markup;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COOKIE: &str = "keqing_hq";
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Days a page shows when no range is asked for.
const DEFAULT_DAYS: i64 = 7;

struct Session {
    device_id: String,
    device_name: String,
    actor: String,
    csrf: String,
    expires: Instant,
}

struct Inner {
    /// The dashboard's own connection; reports bring the projections up to
    /// date on it first, as `keqing-server report` does.
    store: Mutex<SqliteStore>,
    sessions: Mutex<HashMap<String, Session>>,
    hosts: Vec<String>,
}

#[derive(Clone)]
struct Dashboard(Arc<Inner>);

/// The signed-in headquarters device of a request.
#[derive(Clone)]
struct Viewer {
    device_name: String,
    /// How the audit log names the device.
    actor: String,
    csrf: String,
}

#[derive(Debug)]
enum DashError {
    BadRequest(String),
    NotFound(String),
    Csrf,
    BadHost,
    Internal(String),
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            DashError::BadRequest(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            DashError::NotFound(m) => (StatusCode::NOT_FOUND, m),
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

impl From<crate::store::StoreError> for DashError {
    fn from(e: crate::store::StoreError) -> Self {
        DashError::Internal(e.to_string())
    }
}

impl Dashboard {
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, DashError> + Send + 'static,
    ) -> Result<T, DashError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = inner.store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| DashError::Internal(format!("task failed: {e}")))?
    }

    /// The session of a request, if it is live and its device not revoked.
    async fn viewer(&self, headers: &HeaderMap) -> Result<Option<Viewer>, DashError> {
        let Some(sid) = session_cookie(headers) else {
            return Ok(None);
        };
        let (device_id, viewer) = {
            let mut sessions = self.0.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            match sessions.get(&sid) {
                Some(s) => (
                    s.device_id.clone(),
                    Viewer {
                        device_name: s.device_name.clone(),
                        actor: s.actor.clone(),
                        csrf: s.csrf.clone(),
                    },
                ),
                None => return Ok(None),
            }
        };
        let id = device_id.clone();
        let device = self.with_store(move |s| Ok(s.device(&id)?)).await?;
        if device.is_some_and(|d| d.revoked_at.is_none() && d.office.is_none()) {
            Ok(Some(viewer))
        } else {
            self.0
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&sid);
            Ok(None)
        }
    }

    fn sign_in(&self, device: &Device) -> String {
        let sid = random_secret();
        self.0
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                sid.clone(),
                Session {
                    device_id: device.id.clone(),
                    device_name: device.name.clone(),
                    actor: crate::store::audit_actor(device),
                    csrf: random_secret(),
                    expires: Instant::now() + SESSION_LIFETIME,
                },
            );
        sid
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
            let (from, to) = match asked {
                (Some(f), Some(t)) => (f, t),
                (f, t) => {
                    let last = match t {
                        Some(t) => t,
                        None => store
                            .last_call_day(scope.office())?
                            .unwrap_or_else(|| keqing_host::now_cst().date()),
                    };
                    (f.unwrap_or(last - chrono::Duration::days(DEFAULT_DAYS - 1)), last)
                }
            };
            check_request(&scope, from, to).map_err(|e| DashError::BadRequest(e.message))?;
            let started = Instant::now();
            let r = build_report(store, &scope, from, to)?;
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

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn serve(
    store: SqliteStore,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = Dashboard(Arc::new(Inner {
        store: Mutex::new(store),
        sessions: Mutex::new(HashMap::new()),
        hosts: keqing_shared::html::allowed_hosts(addr),
    }));
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn router(app: Dashboard) -> Router {
    let signed_in = Router::new()
        .route("/", get(national))
        .route("/province/{code}", get(province))
        .route("/duplicates", get(duplicates))
        .route("/unreadable", get(unreadable))
        .route("/export", get(export))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(app.clone(), require_viewer));
    let routes = Router::new()
        .merge(signed_in)
        .route("/login", get(login_form).post(login))
        .route("/assets/dashboard.css", get(css))
        .with_state(app.clone());
    let guarded = keqing_host::web::guard_hosts(routes, app.0.hosts.clone(), || {
        DashError::BadHost.into_response()
    });
    keqing_host::web::secure_headers(guarded)
}

/// Sends anyone without a live session to the login page.
async fn require_viewer(State(app): State<Dashboard>, mut req: Request, next: Next) -> Response {
    match app.viewer(req.headers()).await {
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

async fn login_form() -> Markup {
    pages::login(None)
}

async fn login(
    State(app): State<Dashboard>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, DashError> {
    let token = fields
        .get("token")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let device = if token.is_empty() {
        None
    } else {
        app.with_store(move |s| Ok(s.device_with_token(&token)?))
            .await?
    };
    let refused = match &device {
        None => Some("令牌无效 (unknown token)"),
        Some(d) if d.revoked_at.is_some() => Some("该设备已被吊销 (this device was revoked)"),
        Some(d) if d.office.is_some() => {
            Some("只有总部设备可以登录看板 (only headquarters devices may sign in)")
        }
        Some(_) => None,
    };
    if let Some(why) = refused {
        // Slows down guessing; tokens are long random secrets anyway.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return Ok((StatusCode::UNAUTHORIZED, pages::login(Some(why))).into_response());
    }
    let device = device.expect("checked above");
    let actor = crate::store::audit_actor(&device);
    app.with_store(move |s| Ok(s.audit(&actor, "dashboard.sign_in", "dashboard", "")?))
        .await?;
    let sid = app.sign_in(&device);
    tracing::info!(device = %device.name, "dashboard sign-in");
    let cookie = format!(
        "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| DashError::Internal(e.to_string()))?,
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
        app.0
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sid);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("keqing_hq=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
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
    let actor = viewer.actor.clone();
    let pairs = app
        .with_store(move |s| {
            crate::projector::catch_up(s, |_, _| {})?;
            let pairs = s.duplicate_candidates()?;
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
            crate::projector::catch_up(s, |_, _| {})?;
            Ok(s.unreadable_documents(None)?)
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
        viewer.actor.clone(),
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
