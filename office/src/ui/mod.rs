//! `keqing ui`: the office workstation in a browser.
//!
//! The same replica and the same [`Desk`] operations as the command line,
//! so everything works offline and validates the same way. Pages are
//! rendered on the server ([`pages`]); every asset is compiled into the
//! binary and the pages work without script (a small script only adds the
//! live lookup of the caller's number while it is typed).
//!
//! Safety of a local web app: it binds to loopback by default; every form
//! carries a secret made when the process starts (a page of another site
//! cannot read it, so it cannot post a form here: CSRF), and a request must
//! name this machine in its `Host` header (a DNS-rebinding page cannot).

mod forms;
mod pages;

use crate::desk::Desk;
use crate::error::ClientError;
use crate::store::Replica;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use forms::{FormData, FormErrors};
use keqing_host::now_cst;
use keqing_shared::staff::Duty;
use keqing_shared::when::parse_date;
use maud::Markup;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the workstation runs.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// Sync in the background this often (when the replica is enrolled).
    pub sync_every: Option<Duration>,
    /// Sign a person out after this long without a request.
    pub idle_sign_out: Duration,
}

/// The session cookie of the workstation.
const SESSION_COOKIE: &str = "keqing_ui";

tokio::task_local! {
    /// The staff member signed in for the request being served, as the gate
    /// looked them up (set by [`sign_in_gate`] around the handler), if the
    /// office has accounts.
    static SIGNED_IN: Option<keqing_shared::staff::Staff>;
}

/// Who is signed in for this request (none without accounts).
fn signed_in() -> Option<keqing_shared::staff::Staff> {
    SIGNED_IN.try_with(Clone::clone).ok().flatten()
}

/// Refuses (403, nothing done) a duty the signed-in person's role does
/// not have ([`keqing_shared::staff::Role::may`]). Without accounts
/// nobody is signed in and the workstation works as before.
fn require(duty: Duty) -> Result<(), UiError> {
    match signed_in() {
        Some(m) if !m.role.may(duty) => Err(UiError::Forbidden { role: m.role, duty }),
        _ => Ok(()),
    }
}

/// Work done by the signed-in person is recorded as theirs, whatever
/// the form says: only a 主管 records for someone else. Gives who is typing
/// it in, for the record to say so when it is credited to someone else
/// ([`Desk::entered_by`]).
fn own_work(form: &mut FormData) -> Option<String> {
    let m = signed_in()?;
    if m.role != keqing_shared::staff::Role::Supervisor {
        form.set("staff", &m.name);
    }
    Some(m.name)
}

struct Inner {
    dir: PathBuf,
    desk: Mutex<Desk>,
    csrf: String,
    /// Host names a request may use (loopback names and the listen address).
    hosts: Vec<String>,
    /// One sync at a time, whether from the button or the background.
    sync_lock: tokio::sync::Mutex<()>,
    /// The staff member who last saved something here: the forms' default.
    last_staff: Mutex<Option<String>>,
    /// Who is signed in, by session.
    sessions: keqing_host::sign_in::Sessions<String>,
    /// Failed sign-ins by client address and by name.
    failed: keqing_host::sign_in::SignInThrottle,
}

#[derive(Clone)]
struct App(Arc<Inner>);

impl App {
    /// Runs `f` on the desk off the async threads (SQLite waits on the disk).
    async fn desk<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Desk) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, UiError> {
        let app = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut desk = keqing_host::lock(&app.desk);
            f(&mut desk)
        })
        .await
        .map_err(|e| UiError::Internal(format!("task failed: {e}")))?
        .map_err(UiError::from)
    }

    fn check_csrf(&self, form: &FormData) -> Result<(), UiError> {
        if form.get("csrf") == self.0.csrf {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }

    fn remember_staff(&self, name: &str) {
        *keqing_host::lock(&self.0.last_staff) = Some(name.to_string());
    }

    fn last_staff(&self) -> Option<String> {
        keqing_host::lock(&self.0.last_staff).clone()
    }

    /// What every page shows around its content.
    async fn frame(&self) -> Result<pages::Frame, UiError> {
        let csrf = self.0.csrf.clone();
        let me = signed_in();
        // The signed-in person is the forms' default.
        let last_staff = me
            .as_ref()
            .map(|m| m.name.clone())
            .or_else(|| self.last_staff());
        self.desk(move |desk| {
            let r = desk.replica();
            let meta = r.meta();
            let staff = r.staff()?.into_iter().filter(|s| s.active).collect();
            let catalog = r.catalog()?;
            let activities = desk.activities_with(catalog.as_ref())?;
            Ok(pages::Frame {
                role: me.as_ref().map(|m| m.role),
                signed_in: me.map(|m| m.name),
                office: meta.office.clone(),
                device: meta.device.clone(),
                csrf,
                staff,
                last_staff,
                today: now_cst().date(),
                sync: pages::SyncIndicator {
                    state: r.sync_state()?,
                    waiting: r.outbox_len()?,
                    refused: r.refused(0)?.0,
                },
                catalog,
                activities,
            })
        })
        .await
    }
}

/// Why a request failed, as the browser is told.
#[derive(Debug)]
enum UiError {
    /// Not found, a wrong office, bad input outside a form: shown on a page.
    Client(ClientError),
    Csrf,
    BadHost,
    /// The signed-in person's role does not have this duty.
    Forbidden {
        role: keqing_shared::staff::Role,
        duty: Duty,
    },
    Internal(String),
}

impl From<ClientError> for UiError {
    fn from(e: ClientError) -> Self {
        UiError::Client(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            UiError::Client(
                e @ (ClientError::UnknownPatient(_) | ClientError::AmbiguousPatient { .. }),
            ) => (StatusCode::NOT_FOUND, e.to_string()),
            UiError::Client(e @ ClientError::WrongOffice { .. }) => {
                (StatusCode::FORBIDDEN, e.to_string())
            }
            UiError::Client(
                e @ (ClientError::Domain(_)
                | ClientError::Merged { .. }
                | ClientError::UnknownStaff(_)
                | ClientError::DuplicateStaff(_)
                | ClientError::Headquarters(_)
                | ClientError::Invalid(_)),
            ) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            UiError::Client(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "表单已过期，请刷新页面后重试 (the form's security token is missing or stale: reload the page)".into(),
            ),
            UiError::Forbidden { role, duty } => (
                StatusCode::FORBIDDEN,
                format!(
                    "你的岗位（{}）没有此职责：{} (your role may not do this; nothing was saved; a 客情主管 can)",
                    role.chinese(),
                    duty.chinese()
                ),
            ),
            UiError::BadHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "请用本机地址访问 (this workstation answers only requests addressed to this machine)".into(),
            ),
            UiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
        };
        (status, pages::error_page(status, &message)).into_response()
    }
}

/// Serves the workstation on `listener` until `shutdown` completes.
pub async fn serve(
    dir: PathBuf,
    listener: tokio::net::TcpListener,
    options: UiOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ClientError> {
    let mut desk = Desk::open(&dir)?;
    // A long-running workstation: no registered call waits for a checkpoint.
    desk.replica_mut().checkpoint_in_background()?;
    let addr = listener
        .local_addr()
        .map_err(|e| ClientError::Io("listener".into(), e))?;
    let app = App(Arc::new(Inner {
        dir,
        desk: Mutex::new(desk),
        csrf: format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        hosts: keqing_shared::html::allowed_hosts(addr),
        sync_lock: tokio::sync::Mutex::new(()),
        last_staff: Mutex::new(None),
        sessions: keqing_host::sign_in::Sessions::new(options.idle_sign_out),
        failed: Default::default(),
    }));
    if let Some(every) = options.sync_every {
        tokio::spawn(background_sync(app.clone(), every));
    }
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|e| ClientError::Io("workstation".into(), e))
}

fn router(app: App) -> Router {
    let routes = Router::new()
        .route("/", get(today))
        .route("/call", get(call_form).post(call_submit))
        .route("/lookup", get(lookup))
        .route("/search", get(search))
        .route("/summary", get(summary))
        .route("/lists", get(lists))
        .route("/deliveries", get(deliveries))
        .route("/staff", get(staff_page).post(staff_add))
        .route("/staff/active", post(staff_active))
        .route("/audit", get(audit))
        .route("/patient/{id}", get(patient))
        .route("/patient/{id}/{action}", post(patient_action))
        .route("/sync", post(sync_now))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            sign_in_gate,
        ))
        .with_state(app.clone());
    let guarded = keqing_host::web::guard_hosts(routes, app.0.hosts.clone(), || {
        UiError::BadHost.into_response()
    });
    keqing_host::web::secure_headers(guarded)
}

/// Once the office's staff have passwords, every page but the sign-in page
/// and the assets wants a signed-in person: a session used within the idle
/// time, of a member still 在岗 (one marked 离岗, here or at another device
/// and synced, has every session ended). Without accounts, the workstation
/// works as before, signed in as nobody.
async fn sign_in_gate(
    State(app): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open = matches!(
        req.uri().path(),
        "/login" | "/assets/app.css" | "/assets/app.js"
    );
    let sid = keqing_host::sign_in::cookie(req.headers(), SESSION_COOKIE);
    let session = sid
        .as_deref()
        .and_then(|sid| app.0.sessions.use_session(sid));
    let checked = app
        .desk(move |d| {
            let accounts = d.has_accounts()?;
            let member = match &session {
                Some((name, _)) => d.replica().staff_named(name)?,
                None => None,
            };
            Ok((accounts, member))
        })
        .await;
    let (accounts, member) = match checked {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let who = match member {
        Some(m) if m.active => Some(m),
        Some(m) => {
            app.0.sessions.close_where(|n| *n == m.name);
            None
        }
        None => None,
    };
    if accounts && who.is_none() && !open {
        return Redirect::to("/login").into_response();
    }
    SIGNED_IN
        .scope(who.filter(|_| accounts), next.run(req))
        .await
}

async fn login_form(State(app): State<App>) -> Result<Markup, UiError> {
    let frame = app.frame().await?;
    Ok(pages::login(&frame, None))
}

/// Signs a staff member in (name and password, checked offline against
/// the roster this device holds). Failures are counted per client and per
/// name, logged, and after [`keqing_host::sign_in::SIGN_IN_FAILURES`] the
/// client or the name waits.
async fn login(
    State(app): State<App>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    if field("csrf") != app.0.csrf {
        return Err(UiError::Csrf);
    }
    let keqing_host::sign_in::Attempt {
        name,
        password,
        possible,
    } = keqing_host::sign_in::Attempt::new(&field("name"), field("password"));
    let client = peer.ip();
    let frame = app.frame().await?;
    if app.0.failed.blocked(client, &name) {
        tracing::warn!(%client, name = %keqing_shared::printable::printable(&name), "workstation sign-in throttled");
        let page = pages::login(
            &frame,
            Some("尝试次数过多，请十分钟后再试 (too many failed sign-ins; try again later)"),
        );
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    let who = name.clone();
    let signed = if possible {
        app.desk(move |d| d.sign_in(&who, &password)).await
    } else {
        Err(UiError::Client(ClientError::SignInRefused))
    };
    match signed {
        Ok(member) => {
            app.0.failed.succeeded(&member.name);
            let (sid, _) = app.0.sessions.open(member.name.clone());
            tracing::info!(%client, staff = %keqing_shared::printable::printable(&member.name), "workstation sign-in");
            let mut res = Redirect::to("/").into_response();
            let cookie = keqing_host::sign_in::session_cookie(SESSION_COOKIE, &sid);
            if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(axum::http::header::SET_COOKIE, v);
            }
            Ok(res)
        }
        Err(UiError::Client(e @ (ClientError::SignInRefused | ClientError::AccountClosed(_)))) => {
            app.0.failed.fail(client, &name);
            tracing::warn!(%client, name = %keqing_shared::printable::printable(&name), reason = %e, "workstation sign-in refused");
            let status = match e {
                ClientError::AccountClosed(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            Ok((status, pages::login(&frame, Some(&e.to_string()))).into_response())
        }
        Err(e) => Err(e),
    }
}

async fn logout(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    axum::Form(fields): axum::Form<HashMap<String, String>>,
) -> Result<Response, UiError> {
    if fields.get("csrf") != Some(&app.0.csrf) {
        return Err(UiError::Csrf);
    }
    if let Some(sid) = keqing_host::sign_in::cookie(&headers, SESSION_COOKIE) {
        app.0.sessions.close(&sid);
    }
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&keqing_host::sign_in::cleared_cookie(SESSION_COOKIE))
    {
        res.headers_mut().insert(axum::http::header::SET_COOKIE, v);
    }
    Ok(res)
}

async fn css() -> Response {
    keqing_host::web::asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    keqing_host::web::asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

/// 今日回访: the day's follow-up list, overdue first (one person's with
/// `?staff=`).
async fn today(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    let frame = app.frame().await?;
    let day = match q.get("date").filter(|d| !d.is_empty()) {
        Some(d) => parse_date(d).map_err(ClientError::from)?,
        None => frame.today,
    };
    let assignee = q.get("staff").filter(|s| !s.is_empty()).cloned();
    let who = assignee.clone();
    let list = app.desk(move |d| d.due(day, who.as_deref())).await?;
    Ok(pages::today(
        &frame,
        day,
        assignee.as_deref(),
        &list,
        q.get("saved").map(String::as_str),
        None,
    ))
}

/// The page a form's `back` path names, to show a failed form on again.
enum BackPage {
    /// A follow-up list: its day and person.
    Due {
        day: chrono::NaiveDate,
        staff: Option<String>,
    },
    Deliveries,
    Dossier,
}

impl BackPage {
    fn of(path: &str, today: chrono::NaiveDate) -> BackPage {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let value = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty())
        };
        match route {
            "/" => BackPage::Due {
                day: value("date")
                    .and_then(|d| parse_date(&d).ok())
                    .unwrap_or(today),
                staff: value("staff"),
            },
            "/deliveries" => BackPage::Deliveries,
            _ => BackPage::Dossier,
        }
    }
}

async fn call_form(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    require(Duty::Register)?;
    let frame = app.frame().await?;
    let mut form = FormData::default();
    form.set("at", &pages::datetime_value(now_cst()));
    Ok(pages::call_form(
        &frame,
        &form,
        &FormErrors::default(),
        q.get("saved").map(String::as_str),
    ))
}

/// Registers a call; on invalid input the form comes back with the error
/// next to its field and nothing is saved.
async fn call_submit(
    State(app): State<App>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let mut form = FormData::from(fields);
    app.check_csrf(&form)?;
    let enterer = own_work(&mut form);
    if !form.get("kind").is_empty() {
        require(Duty::NonPatient)?;
        return nonpatient_submit(&app, form).await;
    }
    require(Duty::Register)?;
    let input = match forms::call_input(&form) {
        Ok(i) => i,
        Err(errors) => return form_again(&app, &form, errors).await,
    };
    let staff = input.staff.clone();
    match app
        .desk(move |d| d.entered_by(enterer.as_deref(), |d| d.register_call(&input)))
        .await
    {
        Ok(out) => {
            app.remember_staff(&staff);
            Ok(Redirect::to(&format!("/patient/{}?saved=call", out.dossier_id)).into_response())
        }
        Err(UiError::Client(e)) if forms::is_input_error(&e) => {
            form_again(&app, &form, FormErrors::from_error(&e)).await
        }
        Err(e) => Err(e),
    }
}

/// A non-patient call from the register form: no dossier; back to an
/// empty form.
async fn nonpatient_submit(app: &App, form: FormData) -> Result<Response, UiError> {
    let input = match forms::nonpatient_input(&form) {
        Ok(i) => i,
        Err(errors) => return form_again(app, &form, errors).await,
    };
    let staff = input.staff.clone();
    match app.desk(move |d| d.record_nonpatient(&input)).await {
        Ok(_) => {
            app.remember_staff(&staff);
            Ok(Redirect::to("/call?saved=nonpatient").into_response())
        }
        Err(UiError::Client(e)) if forms::is_input_error(&e) => {
            form_again(app, &form, FormErrors::from_error(&e)).await
        }
        Err(e) => Err(e),
    }
}

async fn form_again(app: &App, form: &FormData, errors: FormErrors) -> Result<Response, UiError> {
    let frame = app.frame().await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        pages::call_form(&frame, form, &errors, None),
    )
        .into_response())
}

/// The dossiers a number being typed belongs to, and same-name patients:
/// a fragment the register form shows under the phone field.
async fn lookup(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    require(Duty::Register)?;
    let phone = q.get("phone").cloned().unwrap_or_default();
    let name = q.get("name").cloned().unwrap_or_default();
    let (p, n) = (phone.clone(), name.clone());
    let mut found = app.desk(move |d| forms::lookup(d, &p, &n)).await?;
    if let Some(id) = found.at_server.clone() {
        // Moved off this device by retention: fetched back from the server
        // (on a connection of its own), then looked up again; offline, the
        // page says where it is.
        if fetch_back(&app, &id).await.is_ok() {
            found = app.desk(move |d| forms::lookup(d, &phone, &name)).await?;
        }
    }
    Ok(pages::lookup(&found))
}

async fn search(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    let frame = app.frame().await?;
    let text = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    let query = if keqing_shared::phone::looks_like_digits(&text) {
        text.chars().filter(char::is_ascii_digit).collect()
    } else {
        text.clone()
    };
    let rows = if query.is_empty() {
        Vec::new()
    } else {
        app.desk(move |d| d.replica().search(&query, 50)).await?
    };
    Ok(pages::search(&frame, &text, &rows))
}

/// 汇总: the office's daily summary, the same report as `keqing report daily`.
async fn summary(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let frame = app.frame().await?;
    let day = match q.get("date").filter(|d| !d.is_empty()) {
        Some(d) => match parse_date(d) {
            Ok(d) => d,
            Err(e) => {
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    pages::summary(&frame, frame.today, None, Some(&e.to_string())),
                )
                    .into_response());
            }
        },
        None => frame.today,
    };
    let report = app.desk(move |d| d.report(day, day)).await?;
    Ok(pages::summary(&frame, day, Some(&report), None).into_response())
}

async fn patient(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    let frame = app.frame().await?;
    let who = reader(&frame);
    let (view, slots) = app
        .desk(move |d| {
            let (view, slots) = d.dossier(&id)?;
            d.audit_read(&who, "dossier.open", &view.id)?;
            Ok((view, slots))
        })
        .await?;
    Ok(pages::patient(
        &frame,
        &view,
        &slots,
        q.get("saved").map(String::as_str),
        None,
    ))
}

/// Visit, purchase, follow-up or conflict resolution on one dossier.
async fn patient_action(
    State(app): State<App>,
    Path((id, action)): Path<(String, String)>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let mut form = FormData::from(fields);
    app.check_csrf(&form)?;
    let action = forms::Action::parse(&action).ok_or_else(|| {
        UiError::Client(ClientError::Domain(keqing_shared::DomainError::invalid(
            "action",
            format!("`{action}` is not something a dossier page does"),
        )))
    })?;
    require(action.duty())?;
    let enterer = own_work(&mut form);
    let back = forms::back_path(&form, &format!("/patient/{id}"));
    let staff = form.get("staff").to_string();
    let target = id.clone();
    let outcome = match forms::action_edit(action, &form) {
        Ok(edit) => {
            app.desk(move |d| d.entered_by(enterer.as_deref(), |d| edit.apply(d, &target)))
                .await
        }
        Err(errors) => return action_again(&app, &id, action, &form, errors, &back).await,
    };
    match outcome {
        Ok(()) => {
            if !staff.is_empty() {
                app.remember_staff(&staff);
            }
            let sep = if back.contains('?') { '&' } else { '?' };
            Ok(Redirect::to(&format!("{back}{sep}saved={}", action.as_str())).into_response())
        }
        Err(UiError::Client(e)) if forms::is_input_error(&e) => {
            action_again(&app, &id, action, &form, FormErrors::from_error(&e), &back).await
        }
        Err(e) => Err(e),
    }
}

/// Shows the page the form was on again, with the errors next to the fields.
async fn action_again(
    app: &App,
    id: &str,
    action: forms::Action,
    form: &FormData,
    errors: FormErrors,
    back: &str,
) -> Result<Response, UiError> {
    let frame = app.frame().await?;
    let failed = pages::Failed {
        action,
        dossier: id.to_string(),
        form,
        errors: &errors,
    };
    let page = match BackPage::of(back, frame.today) {
        BackPage::Due { day, staff } => {
            let who = staff.clone();
            let list = app.desk(move |d| d.due(day, who.as_deref())).await?;
            pages::today(&frame, day, staff.as_deref(), &list, None, Some(&failed))
        }
        BackPage::Deliveries => {
            let list = app.desk(|d| d.open_deliveries()).await?;
            pages::deliveries(&frame, &list, None, Some(&failed))
        }
        BackPage::Dossier => {
            let target = id.to_string();
            let (view, slots) = app.desk(move |d| d.dossier(&target)).await?;
            pages::patient(&frame, &view, &slots, None, Some(&failed))
        }
    };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// 客户分类: the counts, and the list of a category (`?category=`) or a
/// flag (`?flag=typical|problem`) on a day (`?date=`, today by default).
async fn lists(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let frame = app.frame().await?;
    let asked = (|| {
        let day = match q.get("date").filter(|d| !d.is_empty()) {
            Some(d) => parse_date(d)?,
            None => frame.today,
        };
        let flag = q.get("flag").map(String::as_str).unwrap_or("");
        let filter = Desk::list_filter(
            q.get("category").map(String::as_str),
            flag == "typical",
            flag == "problem",
        )?;
        Ok::<_, ClientError>((day, filter))
    })();
    let (day, filter) = match asked {
        Ok(a) => a,
        Err(e) => {
            let today = frame.today;
            let counts = app.desk(move |d| d.list_counts(today)).await?;
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::lists(&frame, today, &counts, None, Some(&e.to_string())),
            )
                .into_response());
        }
    };
    let who = reader(&frame);
    let (counts, rows) = app
        .desk(move |d| {
            let counts = d.list_counts(day)?;
            let rows = match filter {
                Some(f) => Some((f, d.list(&who, f, day, LIST_LIMIT)?)),
                None => None,
            };
            Ok((counts, rows))
        })
        .await?;
    let chosen = rows.as_ref().map(|(f, rows)| (f.label(), rows.as_slice()));
    Ok(pages::lists(&frame, day, &counts, chosen, None).into_response())
}

/// How many patients a list page shows (most recently in touch first).
const LIST_LIMIT: usize = 500;

/// Who the read audit names for a read at the workstation: the signed-in
/// person, or the workstation itself when the office has no accounts.
fn reader(frame: &pages::Frame) -> String {
    frame
        .signed_in
        .clone()
        .unwrap_or_else(|| "工作台（未登录） workstation, nobody signed in".to_string())
}

/// 外送: what is still to deliver.
async fn deliveries(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    let frame = app.frame().await?;
    let list = app.desk(|d| d.open_deliveries()).await?;
    Ok(pages::deliveries(
        &frame,
        &list,
        q.get("saved").map(String::as_str),
        None,
    ))
}

/// 员工: the whole roster, on leave included.
/// How many lines of the read audit the page shows.
const AUDIT_LINES: usize = 500;

/// 读取审计: the office's reads of patient data (the 主管's page).
async fn audit(State(app): State<App>) -> Result<Markup, UiError> {
    require(Duty::Audit)?;
    let frame = app.frame().await?;
    let lines = app.desk(|d| d.replica().reads(AUDIT_LINES)).await?;
    Ok(pages::audit(&frame, &lines, AUDIT_LINES))
}

async fn staff_page(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Markup, UiError> {
    require(Duty::Staff)?;
    let frame = app.frame().await?;
    let all = app.desk(|d| d.replica().staff()).await?;
    Ok(pages::staff(
        &frame,
        &all,
        &FormData::default(),
        &FormErrors::default(),
        q.get("saved").map(String::as_str),
    ))
}

async fn staff_add(
    State(app): State<App>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form = FormData::from(fields);
    app.check_csrf(&form)?;
    require(Duty::Staff)?;
    let (name, role) = (form.get("name").to_string(), form.get("role").to_string());
    let added = app
        .desk(move |d| {
            let role = keqing_shared::staff::Role::parse(&role)?;
            d.add_staff(&name, role)
        })
        .await;
    match added {
        Ok(_) => Ok(Redirect::to("/staff?saved=staff").into_response()),
        Err(UiError::Client(e)) if forms::is_input_error(&e) => {
            let frame = app.frame().await?;
            let all = app.desk(|d| d.replica().staff()).await?;
            let errors = FormErrors::from_error(&e);
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::staff(&frame, &all, &form, &errors, None),
            )
                .into_response())
        }
        Err(e) => Err(e),
    }
}

/// 离岗 / 返岗.
async fn staff_active(
    State(app): State<App>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form = FormData::from(fields);
    app.check_csrf(&form)?;
    require(Duty::Staff)?;
    let name = form.get("name").to_string();
    let active = form.get("active") == "1";
    app.desk(move |d| d.set_staff_active(&name, active)).await?;
    Ok(Redirect::to("/staff?saved=staff").into_response())
}

/// The sync button: one round now, then back to the page it was pressed on.
async fn sync_now(
    State(app): State<App>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form = FormData::from(fields);
    app.check_csrf(&form)?;
    let back = forms::back_path(&form, "/");
    let result = sync_round(&app).await;
    let sep = if back.contains('?') { '&' } else { '?' };
    let flag = match result {
        Ok(_) => "synced",
        Err(ClientError::Sync {
            failure: crate::SyncFailure::Offline,
            ..
        }) => "offline",
        Err(_) => "refused",
    };
    Ok(Redirect::to(&format!("{back}{sep}saved={flag}")).into_response())
}

/// Fetches back a dossier retention moved off this device, on a connection
/// of its own (like a sync round).
async fn fetch_back(app: &App, id: &str) -> Result<u64, ClientError> {
    let _one_at_a_time = app.0.sync_lock.lock().await;
    let mut replica = Replica::open(&app.0.dir)?;
    crate::sync::fetch_dossier(&mut replica, id).await
}

/// One sync round on a connection of its own, so the desk stays usable
/// while it runs; the result is recorded in the replica for the indicator.
async fn sync_round(app: &App) -> Result<crate::sync::SyncSummary, ClientError> {
    let _one_at_a_time = app.0.sync_lock.lock().await;
    let mut replica = Replica::open(&app.0.dir)?;
    if replica.sync_state()?.is_none() {
        return Err(ClientError::Sync {
            failure: crate::SyncFailure::Refused,
            message: "this replica is not enrolled".into(),
        });
    }
    crate::sync::sync_once(&mut replica, &mut crate::sync::Quiet).await
}

async fn background_sync(app: App, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sync_round(&app).await {
            Ok(s) if s.pushed + s.pulled_changes + s.pulled_snapshots > 0 => {
                tracing::info!(
                    pushed = s.pushed,
                    pulled = s.pulled_changes + s.pulled_snapshots,
                    "background sync"
                );
            }
            Ok(_) => {}
            // Offline is the normal state of an office for hours: the
            // indicator shows it; nothing to shout about here.
            Err(e) => {
                tracing::debug!(error = %keqing_shared::printable::printable(&e.to_string()), "background sync failed")
            }
        }
    }
}
