//! The workstation's pages, rendered on the server (maud escapes every
//! value). Labels are Chinese, as on the paper registers.

use super::forms::{Action, FormData, FormErrors, Lookup};
use crate::desk::DueEntry;
use crate::store::{ListedPatient, OpenDelivery, PatientRow, SyncState};
use axum::http::StatusCode;
use chrono::{NaiveDate, NaiveDateTime};
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::{Slot, SlotStatus};
use keqing_shared::records::{DeliveryStatus, ProblemState, StopReason, fmt_yuan};
use keqing_shared::report::Report;
use keqing_shared::sheets;
use keqing_shared::staff::{Role, Staff};
use keqing_shared::when::fmt_date;
use maud::{DOCTYPE, Markup, html};

/// What surrounds every page: who is working here and the sync indicator.
pub struct Frame {
    /// The staff member signed in, when the office has accounts, and their
    /// role (what the pages offer).
    pub signed_in: Option<String>,
    pub role: Option<keqing_shared::staff::Role>,
    pub office: String,
    pub device: String,
    pub csrf: String,
    pub staff: Vec<Staff>,
    pub last_staff: Option<String>,
    pub today: NaiveDate,
    pub sync: SyncIndicator,
    /// Headquarters' catalogue as this device last pulled it: the pick
    /// lists of sources, products and diseases.
    pub catalog: Option<keqing_shared::catalog::Catalog>,
    /// The activities of the office (headquarters' and its own).
    pub activities: Vec<keqing_shared::activity::Activity>,
}

impl Frame {
    /// The information sources to pick from: the catalogue's, or, before
    /// one arrived, the usual ones.
    fn sources(&self) -> Vec<String> {
        match &self.catalog {
            Some(c) => c.sources.iter().map(|s| s.name.clone()).collect(),
            None => SOURCES.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn products(&self) -> Vec<String> {
        self.catalog
            .iter()
            .flat_map(|c| c.products.iter().map(|p| p.name.clone()))
            .collect()
    }

    fn diseases(&self) -> Vec<String> {
        self.catalog
            .iter()
            .flat_map(|c| c.diseases.iter().cloned())
            .collect()
    }
}

pub struct SyncIndicator {
    pub state: Option<SyncState>,
    /// Local changes the server has not acknowledged yet.
    pub waiting: u64,
    /// Own changes the server refused for good, set aside
    /// (`keqing quarantine list`).
    pub refused: u64,
}

/// A form that failed, to show again with its errors.
pub struct Failed<'a> {
    pub action: Action,
    pub dossier: String,
    pub form: &'a FormData,
    pub errors: &'a FormErrors,
}

impl Failed<'_> {
    fn of(failed: Option<&Self>, action: Action, dossier: &str) -> Option<(FormData, FormErrors)> {
        failed
            .filter(|f| f.action == action && f.dossier == dossier)
            .map(|f| (f.form.clone(), f.errors.clone()))
    }

    /// The failed form of `action` about one record of the dossier (one
    /// pending delivery, one open problem): each such form has its own.
    fn of_record(
        failed: Option<&Self>,
        action: Action,
        dossier: &str,
        record: &str,
    ) -> Option<(FormData, FormErrors)> {
        let field = action.record_field().unwrap_or("");
        Failed::of(failed, action, dossier).filter(|(f, _)| f.get(field) == record)
    }
}

/// A time as staff read it: `2026-11-20 09:30`.
fn shown_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A stored time (`2026-11-20T09:30:00`) as staff read it.
fn shown_text(t: &str) -> String {
    match keqing_shared::when::read_stored_datetime(t) {
        Some(t) => shown_time(t),
        None => t.to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM`, the value of a datetime-local input.
pub fn datetime_value(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

fn office_title(code: &str) -> String {
    match keqing_shared::office::office(code) {
        Ok(o) => format!("{} {}咨询处", o.code, o.name),
        Err(_) => "总部 数据管理中心".into(),
    }
}

fn flash(saved: Option<&str>) -> Option<&'static str> {
    Some(match saved? {
        "call" => "已登记来电",
        "visit" => "已登记到堂",
        "purchase" => "已登记购药",
        "followup" => "已登记回访",
        "resolve" => "已确定取值",
        "nonpatient" => "已登记非正常咨询（不建档案）",
        "hospital" => "已登记住院",
        "discharge" => "已登记出院",
        "problem" => "已更新问题记录",
        "typical" => "已更新典型病例",
        "join" => "已登记参加活动",
        "greeting" => "已登记问候",
        "homevisit" => "已登记家访",
        "delivery" => "已登记外送",
        "deliver" => "已登记送达结果",
        "plan" => "已修改回访计划",
        "details" => "已更新资料",
        "staff" => "已更新员工名单",
        "synced" => "同步完成",
        "offline" => "无法连接服务器：继续离线工作，稍后再同步",
        "refused" => "服务器拒绝了同步：见页首的原因",
        _ => return None,
    })
}

const NAV: [(&str, &str, &str); 8] = [
    ("/", "今日回访", "today"),
    ("/call", "电话登记", "call"),
    ("/search", "查找患者", "search"),
    ("/lists", "客户分类", "lists"),
    ("/deliveries", "外送", "deliveries"),
    ("/staff", "员工", "staff"),
    ("/summary", "每日汇总", "summary"),
    ("/audit", "读取审计", "audit"),
];

/// A page's `head`: its title, the stylesheet, and the script when the page
/// uses it.
fn head(title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · 客情" }
            link rel="stylesheet" href="/assets/app.css";
            @if script {
                script src="/assets/app.js" defer {}
            }
        }
    }
}

fn layout(frame: &Frame, title: &str, nav: &str, saved: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            (head(title, true))
            body {
                header.top {
                    div.brand {
                        strong { "客情" }
                        span { (office_title(&frame.office)) " · " (frame.device) }
                    }
                    nav {
                        @for (href, label, key) in NAV.iter().filter(|(href, _, _)| offered(frame, href)) {
                            a href=(href) class=[(*key == nav).then_some("current")] { (label) }
                        }
                    }
                    (sync_indicator(frame))
                    @if let Some(who) = &frame.signed_in {
                        form.who method="post" action="/logout" {
                            span id="signed-in" { (who) }
                            input type="hidden" name="csrf" value=(frame.csrf);
                            button type="submit" id="logout" { "退出" }
                        }
                    }
                }
                main {
                    @if let Some(m) = flash(saved) {
                        p.flash role="status" { (m) }
                    }
                    (body)
                }
            }
        }
    }
}

/// Whether the forms of `action` are offered to who is signed in (all of
/// them when nobody is: an office without accounts). The server refuses
/// the rest anyway.
fn may(frame: &Frame, action: Action) -> bool {
    frame.role.is_none_or(|r| r.may(action.duty()))
}

/// Whether the page at `href` is offered to who is signed in (everything,
/// when nobody is: an office without accounts).
fn offered(frame: &Frame, href: &str) -> bool {
    use keqing_shared::staff::Duty;
    let duty = match href {
        "/call" => Duty::Register,
        "/staff" => Duty::Staff,
        "/audit" => Duty::Audit,
        _ => return true,
    };
    frame.role.is_none_or(|r| r.may(duty))
}

fn sync_indicator(frame: &Frame) -> Markup {
    let s = &frame.sync;
    let (class, state, detail) = match &s.state {
        None => ("local", "仅本机", "未注册同步服务器".to_string()),
        // Offline goes away by itself; a refusal or a fault of the server
        // needs someone to act, and says why.
        Some(st) if st.last_error.is_some() => {
            let why = st.last_error.clone().unwrap_or_default();
            match st.last_error_kind.unwrap_or(crate::SyncFailure::Offline) {
                crate::SyncFailure::Offline => ("offline", "离线", why),
                crate::SyncFailure::Refused => ("refused", "被拒", why),
                crate::SyncFailure::ServerFault => ("fault", "服务器故障", why),
            }
        }
        Some(st) if st.last_sync.is_some() => (
            "online",
            "在线",
            format!("上次同步 {}", st.last_sync.clone().unwrap_or_default()),
        ),
        Some(_) => ("offline", "未同步", "尚未与服务器同步".to_string()),
    };
    html! {
        div.sync id="sync" data-state=(class) {
            span.dot {}
            span.state { (state) }
            span.waiting { "待同步 " span id="waiting" { (s.waiting) } " 条" }
            span.detail title=(detail) {
                @match &s.state {
                    Some(st) => { "上次同步 " (st.last_sync.as_deref().unwrap_or("从未")) }
                    None => { "未注册" }
                }
            }
            @if matches!(class, "refused" | "fault") {
                span.why id="sync-why" { (detail) }
            }
            @if s.refused > 0 {
                span.refused id="refused" { "被拒变更 " (s.refused) " 条" }
            }
            @if s.state.is_some() {
                form method="post" action="/sync" {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    input type="hidden" name="back" value="/";
                    button type="submit" id="sync-now" { "立即同步" }
                }
            }
        }
    }
}

/// 登录: the sign-in page (name and password), with why the last try was
/// refused.
pub fn login(frame: &Frame, refused: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            (head("登录", false))
            body {
                main.login {
                    h1 { "客情工作台登录" }
                    p { (office_title(&frame.office)) " · " (frame.device) }
                    @if let Some(why) = refused {
                        p.error role="alert" id="login-error" { (why) }
                    }
                    form method="post" action="/login" {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        label for="name" { "姓名" }
                        input id="name" name="name" required autocomplete="username";
                        label for="password" { "密码" }
                        input id="password" name="password" type="password" required autocomplete="current-password";
                        button type="submit" id="login" { "登录" }
                    }
                }
            }
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                title { "出错了 · 客情" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                main {
                    h1 { "出错了 " (status.as_u16()) }
                    p.error role="alert" { (message) }
                    p { a href="/" { "返回今日回访" } }
                }
            }
        }
    }
}

fn hidden_csrf(frame: &Frame) -> Markup {
    html! { input type="hidden" name="csrf" value=(frame.csrf); }
}

/// The fields of one form on a page: ids carry the form's prefix, so two
/// forms on a page (or one per list entry) never share an id.
struct Fields<'a> {
    prefix: String,
    form: &'a FormData,
    errors: &'a FormErrors,
}

impl<'a> Fields<'a> {
    fn new(prefix: impl Into<String>, form: &'a FormData, errors: &'a FormErrors) -> Self {
        Fields {
            prefix: prefix.into(),
            form,
            errors,
        }
    }

    fn id(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A labelled field with its error (if any) right after the input.
    fn field(&self, label: &str, name: &str, input: Markup) -> Markup {
        let err = self.errors.field(name);
        html! {
            div class={ "field" @if err.is_some() { " invalid" } } {
                label for=(self.id(name)) { (label) }
                (input)
                @if let Some(e) = err {
                    span.err id={ (self.id(name)) "-err" } role="alert" { (e) }
                }
            }
        }
    }

    fn text(&self, label: &str, name: &str, kind: &str, required: bool) -> Markup {
        let err = self.errors.field(name);
        let input = html! {
            input type=(kind) id=(self.id(name)) name=(name) value=(self.form.get(name)) required[required]
                aria-invalid=[err.map(|_| "true")]
                aria-describedby=[err.map(|_| format!("{}-err", self.id(name)))];
        };
        self.field(label, name, input)
    }

    /// A text field offering `options` as it is typed (a datalist): a
    /// value not among them is still taken.
    fn picked(&self, label: &str, name: &str, required: bool, options: &[String]) -> Markup {
        let err = self.errors.field(name);
        let list = format!("{}-list", self.id(name));
        let input = html! {
            input type="text" id=(self.id(name)) name=(name) value=(self.form.get(name)) required[required]
                list=(list)
                aria-invalid=[err.map(|_| "true")]
                aria-describedby=[err.map(|_| format!("{}-err", self.id(name)))];
            datalist id=(list) { @for o in options { option value=(o) {} } }
        };
        self.field(label, name, input)
    }

    fn choice(&self, label: &str, name: &str, options: &[(&str, &str)]) -> Markup {
        let current = self.form.get(name);
        let input = html! {
            select id=(self.id(name)) name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[*value == current] { (text) }
                }
            }
        };
        self.field(label, name, input)
    }

    fn staff(&self, frame: &Frame, label: &str) -> Markup {
        // Signed in, one records one's own work (a 主管 may pick anyone).
        if let Some(me) = &frame.signed_in
            && frame.role != Some(keqing_shared::staff::Role::Supervisor)
        {
            let input = html! {
                input type="hidden" name="staff" value=(me);
                span.me id=(self.id("staff")) { (me) }
            };
            return self.field(label, "staff", input);
        }
        let chosen = Some(self.form.get("staff"))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| frame.last_staff.clone())
            .unwrap_or_default();
        let input = html! {
            select id=(self.id("staff")) name="staff" required {
                option value="" { "请选择" }
                @for s in &frame.staff {
                    option value=(s.name) selected[s.name == chosen] { (s.name) " (" (s.role.chinese()) ")" }
                }
            }
        };
        self.field(label, "staff", input)
    }

    fn check(&self, label: &str, name: &str) -> Markup {
        html! {
            div.field.check {
                input type="checkbox" id=(self.id(name)) name=(name) checked[self.form.ticked(name)];
                label for=(self.id(name)) { (label) }
            }
        }
    }
}

fn general_errors(errors: &FormErrors) -> Markup {
    html! {
        @for e in errors.general() {
            p.error role="alert" { (e) }
        }
    }
}

/// 今日回访: overdue first, each with its reason and a one-step record form.
pub fn today(
    frame: &Frame,
    day: NaiveDate,
    assignee: Option<&str>,
    list: &[DueEntry],
    saved: Option<&str>,
    failed: Option<&Failed>,
) -> Markup {
    let overdue = list.iter().filter(|e| e.overdue).count();
    let mut query = Vec::new();
    if day != frame.today {
        query.push(format!("date={}", fmt_date(day)));
    }
    if let Some(a) = assignee {
        query.push(format!("staff={}", query_value(a)));
    }
    let back = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", query.join("&"))
    };
    let body = html! {
        h1 {
            @if day == frame.today { "今日回访 " } @else { "回访清单 " }
            (fmt_date(day))
        }
        form.search method="get" action="/" {
            label for="date" { "日期" }
            input id="date" name="date" type="date" value=(fmt_date(day));
            label for="due-staff" { "回访人" }
            select id="due-staff" name="staff" {
                option value="" { "全部" }
                @for s in &frame.staff {
                    option value=(s.name) selected[Some(s.name.as_str()) == assignee] { (s.name) }
                }
            }
            button type="submit" { "查看" }
        }
        p.summary { "共 " strong id="due-count" { (list.len()) } " 位患者，其中逾期 " strong.overdue { (overdue) } " 位" }
        @if list.is_empty() {
            p.empty { "这一天没有需要回访的患者。" }
        }
        ol.due {
            @for e in list {
                (due_entry(frame, day, &back, e, failed))
            }
        }
    };
    layout(frame, "今日回访", "today", saved, body)
}

fn due_entry(
    frame: &Frame,
    day: NaiveDate,
    back: &str,
    e: &DueEntry,
    failed: Option<&Failed>,
) -> Markup {
    let first = &e.slots[0];
    let (form, errors) = Failed::of(failed, Action::Followup, &e.dossier_id).unwrap_or_default();
    let form_id = format!("f-{}", e.dossier_id);
    let f = Fields::new(format!("{}-", e.dossier_id), &form, &errors);
    html! {
        li class={ "entry" @if e.overdue { " overdue" } } id={ "due-" (e.dossier_id) } {
            div.who {
                span.state { (first.label_on(day)) }
                a href={ "/patient/" (e.dossier_id) } { (e.name) }
                span.phone { (e.phone.as_deref().unwrap_or("")) }
            }
            ul.reasons {
                @for s in &e.slots {
                    li { (s.reason) " · 应访日期 " (fmt_date(s.deadline)) }
                }
            }
            @if e.next_entry.is_some() || e.assignee.is_some() {
                p.plan {
                    @if let Some(n) = &e.next_entry { "下次切入点：" span.next { (n) } " " }
                    @if let Some(a) = &e.assignee { "回访人：" span.assignee { (a) } }
                }
            }
            @if may(frame, Action::Followup) {
                form.oneline method="post" action={ "/patient/" (e.dossier_id) "/followup" } id=(form_id) {
                    (hidden_csrf(frame))
                    input type="hidden" name="back" value=(back);
                    input type="hidden" name="kind" value="电话回访";
                    (general_errors(&errors))
                    (f.staff(frame, "回访人员"))
                    (f.text("回访结果", "outcome", "text", true))
                    (f.text("下次切入点", "next", "text", false))
                    button type="submit" { "记录回访" }
                }
            }
        }
    }
}

const SOURCES: [&str; 8] = [
    "报纸",
    "电视",
    "广播",
    "网络",
    "老患者介绍",
    "义诊",
    "宣传单",
    "其他",
];
const RELATIONS: [&str; 6] = ["本人", "子女", "配偶", "亲属", "朋友", "其他"];

/// The register form's first choice: a patient's consultation (the
/// default), or one of the non-patient calls, which makes no dossier.
fn call_kinds(frame: &Frame) -> Vec<(String, String)> {
    let mut kinds = vec![(String::new(), "患者咨询（建档案）".to_string())];
    kinds.extend(
        keqing_shared::catalog::nonpatient_kinds(frame.catalog.as_ref())
            .into_iter()
            .map(|k| (k.clone(), k)),
    );
    kinds
}

/// Owned choices as the `(value, text)` pairs a form's choice takes.
fn pairs(options: &[(String, String)]) -> Vec<(&str, &str)> {
    options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A value in a page's query string (`&`, `=`, `#`, spaces and the rest
/// escaped).
pub fn query_value(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// 电话咨询登记表: the phone number first; what it matches appears under it.
pub fn call_form(
    frame: &Frame,
    form: &FormData,
    errors: &FormErrors,
    saved: Option<&str>,
) -> Markup {
    let f = Fields::new("", form, errors);
    let body = html! {
        h1 { "电话咨询登记表" }
        (general_errors(errors))
        form.register method="post" action="/call" novalidate {
            (hidden_csrf(frame))
            fieldset {
                legend { "来电" }
                (f.choice("来电类型", "kind", &pairs(&call_kinds(frame))))
                (f.text("来电号码", "phone", "tel", true))
                div id="lookup" aria-live="polite" {}
                (f.text("来电时间", "at", "datetime-local", false))
                (f.field("与患者关系", "relation", html! {
                    input id=(f.id("relation")) name="relation" list="relations" value=(form.get("relation"));
                    datalist id="relations" { @for r in RELATIONS { option value=(r) {} } }
                }))
                (f.picked("信息来源", "source", true, &frame.sources()))
                (f.staff(frame, "接待人员"))
            }
            fieldset id="patient-fields" {
                legend { "患者" }
                (f.text("患者姓名", "name", "text", true))
                (f.choice("性别", "sex", &[("", "未填"), ("男", "男"), ("女", "女")]))
                (f.text("年龄", "age", "number", false))
                (f.picked("病种", "disease", false, &frame.diseases()))
                (f.choice("是否知道病情", "knows", &[("", "未填"), ("是", "是"), ("否", "否")]))
                (f.text("地址", "address", "text", false))
                (f.check("另一位患者（同一号码也新建档案）", "force_new"))
            }
            fieldset {
                legend { "咨询内容" }
                (f.field("病情", "condition", html! { textarea id="condition" name="condition" rows="3" { (form.get("condition")) } }))
                (f.field("治疗经过", "treatment", html! { textarea id="treatment" name="treatment" rows="2" { (form.get("treatment")) } }))
                (f.field("处理结果 / 下一步（非正常咨询：备注）", "outcome", html! { textarea id="outcome" name="outcome" rows="2" { (form.get("outcome")) } }))
            }
            button type="submit" id="save-call" { "登记来电" }
        }
    };
    layout(frame, "电话登记", "call", saved, body)
}

fn patient_line(p: &PatientRow) -> Markup {
    html! {
        a href={ "/patient/" (p.dossier_id) } { (p.name) }
        " "
        (p.age.map(|a| format!("{a}岁")).unwrap_or_default())
        " " span.phone { (p.phones.join("，")) }
        " " (p.diseases)
        @if let Some(into) = &p.merged_into {
            " " span.muted { "(已合并到 " a href={ "/patient/" (into) } { (&into[..8.min(into.len())]) } ")" }
        }
    }
}

/// The fragment under the phone field (inside the register form): the
/// dossiers the number belongs to, or same-name patients, to pick from.
pub fn lookup(found: &Lookup) -> Markup {
    let pick = |r: &PatientRow, checked: bool| {
        html! {
            li data-dossier=(r.dossier_id) {
                input type="radio" name="patient" id={ "pick-" (r.dossier_id) } value=(r.dossier_id) checked[checked];
                label for={ "pick-" (r.dossier_id) } { "加入此档案 " }
                (patient_line(r))
            }
        }
    };
    html! {
        @if let Some(p) = &found.normalised {
            @match (found.by_phone.len(), &found.at_server) {
                (0, Some(id)) => {
                    p.lookup-at-server role="alert" {
                        "号码 " (p) " 的档案在服务器上（按保留期限已移出本机），暂时无法取回：联网后再查找即可取回，不必新建档案。"
                        " (" (id) ")"
                    }
                }
                (0, None) if found.transferred.is_some() => {
                    @if let Some((id, office)) = &found.transferred {
                        p.lookup-transferred role="alert" {
                            "号码 " (p) " 的患者已转档到 " (office) "，档案由该咨询处保管，不必新建档案。"
                            " (" (id) ")"
                        }
                    }
                }
                (0, None) => { p.lookup-new { "号码 " (p) " 尚无档案：登记后新建档案。" } }
                (1, _) => {
                    div.lookup-found {
                        p { "号码 " (p) " 已有档案，来电将加入该档案：" }
                        ul { @for r in &found.by_phone { li data-dossier=(r.dossier_id) { (patient_line(r)) } } }
                    }
                }
                _ => {
                    div.lookup-found {
                        p { "号码 " (p) " 有多份档案，请选择来电患者（或勾选「另一位患者」新建档案）：" }
                        ul { @for r in &found.by_phone { (pick(r, false)) } }
                    }
                }
            }
        }
        @if found.by_phone.is_empty() && !found.by_name.is_empty() {
            div.lookup-dup {
                p { "同名患者（可能是同一人）：" }
                ul {
                    li {
                        input type="radio" name="patient" id="pick-new" value="" checked;
                        label for="pick-new" { "新患者，新建档案" }
                    }
                    @for r in &found.by_name { (pick(r, false)) }
                }
            }
        }
    }
}

pub fn search(frame: &Frame, text: &str, rows: &[PatientRow]) -> Markup {
    let body = html! {
        h1 { "查找患者" }
        form.search method="get" action="/search" {
            label for="q" { "姓名、电话或病种" }
            input id="q" name="q" type="search" value=(text) autofocus;
            button type="submit" { "查找" }
        }
        @if !text.is_empty() {
            p { "找到 " (rows.len()) " 位患者" }
            ul.results { @for r in rows { li { (patient_line(r)) } } }
        }
    };
    layout(frame, "查找患者", "search", None, body)
}

/// 每日汇总: the day's sections of the report, as on the paper summary.
pub fn summary(
    frame: &Frame,
    day: NaiveDate,
    report: Option<&Report>,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "每日汇总 " (fmt_date(day)) }
        form.search method="get" action="/summary" {
            label for="date" { "日期" }
            input id="date" name="date" type="date" value=(fmt_date(day));
            button type="submit" { "查看" }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some(r) = report {
            @for sheet in sheets::sheets(r) {
                (keqing_shared::html::sheet_table(&sheet))
            }
        }
    };
    layout(frame, "每日汇总", "summary", None, body)
}

struct TimelineEntry {
    /// The record's id (who entered it, when not its staff member, is
    /// kept by id).
    id: String,
    at: NaiveDateTime,
    kind: &'static str,
    body: Markup,
}

fn timeline(v: &DossierView) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    for c in &v.calls {
        out.push(TimelineEntry {
            at: c.at,
            id: c.id.clone(),
            kind: "来电",
            body: html! {
                (c.staff) " 接听 " (c.caller_phone)
                @if let Some(r) = &c.relation { "（" (r) "）" }
                " 来源 " (c.source)
                @if let Some(d) = &c.disease { " 病种 " (d) }
                @if let Some(x) = &c.condition { br; "病情：" (x) }
                @if let Some(x) = &c.treatment { br; "治疗经过：" (x) }
                @if let Some(x) = &c.outcome { br; "处理结果：" (x) }
            },
        });
    }
    for x in &v.visits {
        out.push(TimelineEntry {
            at: x.at,
            id: x.id.clone(),
            kind: "到堂",
            body: html! {
                (x.staff) " 接待 · " (if x.purchased { "已购药" } else { "未购" })
                @if let Some(r) = &x.reason_not_bought { " 未购原因：" (r) }
                @if let Some(n) = &x.notes { br; (n) }
            },
        });
    }
    for p in &v.purchases {
        out.push(TimelineEntry {
            at: p.at,
            id: p.id.clone(),
            kind: "购药",
            body: html! {
                (p.product) " " (p.quantity) " 盒 ¥" (fmt_yuan(p.amount_fen)) " · " (p.staff)
                @if let Some(i) = &p.invoice { " 发票 " (i) }
                " 用药到期 " span.runout { (p.runout.map(fmt_date).unwrap_or_else(|| "未填".into())) }
                @if let Some(g) = &p.gifts { br; "礼品：" (g) @if let Some(r) = &p.gift_receipt { "（收据 " (r) "）" } }
            },
        });
    }
    for f in &v.followups {
        out.push(TimelineEntry {
            at: f.at,
            id: f.id.clone(),
            kind: "回访",
            body: html! {
                (f.staff) " · " (f.kind) "：" (f.outcome)
                @if let Some(n) = &f.next_entry { br; "下次切入点：" (n) }
            },
        });
    }
    for h in &v.hospital_stays {
        out.push(TimelineEntry {
            at: h.at,
            id: h.id.clone(),
            kind: "住院",
            body: html! {
                "入院 " (fmt_date(h.admitted))
                @if let Some(d) = h.discharged { " 出院 " (fmt_date(d)) }
                @if let Some(x) = &h.hospital { " " (x) }
                @if let Some(x) = &h.reason { " " (x) }
            },
        });
    }
    for d in &v.deliveries {
        out.push(TimelineEntry {
            at: d.at,
            id: d.id.clone(),
            kind: "外送",
            body: html! {
                (d.staff) " · " strong { (d.state().chinese()) }
                @if let Some(p) = &d.product { " " (p) }
                @if let Some(q) = d.quantity { " " (q) "盒" }
                @if let Some(a) = &d.address { " 送至 " (a) }
                @if let Some(due) = d.due { " 限 " (fmt_date(due)) }
                @if let Some(r) = &d.status_reason { " （" (r) "）" }
                @if let (Some(by), Some(on)) = (&d.settled_by, d.settled_at) { " · " (by) " " (shown_time(on)) " 登记结果" }
                @if let Some(n) = &d.notes { " · " (n) }
            },
        });
    }
    for c in &v.plan {
        out.push(TimelineEntry {
            at: c.at,
            id: c.id.clone(),
            kind: "回访计划",
            body: html! {
                (c.staff) " · " (c.action.chinese())
                @if let Some(d) = c.date { " " (fmt_date(d)) }
                @if let Some(r) = c.reason { " " (r.chinese()) }
                @if let Some(a) = &c.assignee { " → " (a) }
                @if let Some(n) = &c.notes { " · " (n) }
            },
        });
    }
    for p in &v.participations {
        out.push(TimelineEntry {
            at: p.at,
            id: p.id.clone(),
            kind: "参加活动",
            body: html! {
                (p.staff) " · " (p.activity)
                @if let Some(n) = &p.notes { " · " (n) }
            },
        });
    }
    for x in &v.problems {
        out.push(TimelineEntry {
            at: x.at,
            id: x.id.clone(),
            kind: "问题",
            body: html! {
                (x.staff) " · " strong { (x.state.chinese()) } "：" (x.description)
                @if let Some(r) = &x.resolution { br; "处理结果：" (r) }
            },
        });
    }
    for (kind, contacts) in [
        ("问候", v.greetings.iter().map(|g| &g.0).collect::<Vec<_>>()),
        ("家访", v.home_visits.iter().map(|g| &g.0).collect()),
    ] {
        for c in contacts {
            out.push(TimelineEntry {
                at: c.at,
                id: c.id.clone(),
                kind,
                body: html! { (c.staff) @if let Some(n) = &c.notes { " · " (n) } },
            });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.at));
    out
}

fn slot_class(s: &Slot, today: NaiveDate) -> &'static str {
    match s.status_on(today) {
        SlotStatus::Overdue => "overdue",
        SlotStatus::Due => "due",
        SlotStatus::Done { on_time: true } => "done",
        SlotStatus::Done { on_time: false } => "late",
        SlotStatus::Closed | SlotStatus::NotYet => "muted",
    }
}

/// 病历档案: identity, what is due, conflicts, the forms, the timeline.
pub fn patient(
    frame: &Frame,
    v: &DossierView,
    slots: &[Slot],
    saved: Option<&str>,
    failed: Option<&Failed>,
) -> Markup {
    let p = &v.patient;
    let today = frame.today;
    let mut shown: Vec<&Slot> = slots
        .iter()
        .filter(|s| {
            matches!(
                s.status_on(today),
                SlotStatus::Due | SlotStatus::Overdue | SlotStatus::NotYet
            )
        })
        .collect();
    shown.sort_by_key(|s| s.deadline);
    let done = slots
        .iter()
        .filter(|s| matches!(s.status_on(today), SlotStatus::Done { .. }))
        .count();
    let open_problems: Vec<_> = v
        .problems
        .iter()
        .filter(|x| x.state != keqing_shared::records::ProblemState::Resolved)
        .collect();
    let body = html! {
        h1 { "病历档案 " (p.name) }
        @if let Some(into) = &v.merged_into {
            p.error { "此档案已合并到 " a href={ "/patient/" (into) } { (into) } "，请在该档案登记。" }
        }
        dl.identity {
            dt { "性别" } dd { (p.sex.map(|s| s.chinese()).unwrap_or("-")) }
            dt { "年龄" } dd { (p.age.map(|a| a.to_string()).unwrap_or_else(|| "-".into())) }
            dt { "电话" } dd.phone { (p.phones.join("，")) }
            dt { "病种" } dd { (p.diseases.join("，")) }
            dt { "是否知道" } dd { (p.knows.map(|k| if k { "是" } else { "否" }).unwrap_or("-")) }
            dt { "地址" } dd { (p.address.as_deref().unwrap_or("-")) }
            dt { "办事处" } dd { (office_title(&v.office)) }
            dt { "档案号" } dd.id { (v.id) }
        }
        @if let Some(t) = v.typical.as_ref().filter(|t| t.flagged) {
            p.badge.typical { "典型病例" @if let Some(n) = &t.notes { "：" (n) } }
        }
        @for x in &open_problems {
            p.badge.problem { "问题患者（" (x.state.chinese()) "）：" (x.description) }
        }
        // Resolving is the 主管's duty: the others are not offered it.
        @if !v.conflicts.is_empty() && may(frame, Action::Resolve) {
            section.conflicts {
                h2 { "待确认的资料（两台设备同时修改）" }
                @for c in &v.conflicts {
                    @let (form, errors) = Failed::of(failed, Action::Resolve, &v.id).filter(|(f, _)| f.get("field") == c.field).unwrap_or_default();
                    form.oneline method="post" action={ "/patient/" (v.id) "/resolve" } {
                        (hidden_csrf(frame))
                        input type="hidden" name="field" value=(c.field);
                        (general_errors(&errors))
                        @let f = Fields::new(format!("{}-", c.field), &form, &errors);
                        (f.field(&c.field, "value", html! {
                            select id=(f.id("value")) name="value" {
                                @for val in &c.values { option value=(val) selected[form.get("value") == val] { (val) } }
                            }
                        }))
                        button type="submit" { "确定" }
                    }
                }
            }
        }
        section.slots {
            h2 { "回访安排" }
            p.muted { "已完成 " (done) " 次" }
            @if shown.is_empty() {
                p.empty { "没有待回访的安排。" }
            } @else {
                table {
                    thead { tr { th { "原因" } th { "开始" } th { "应访日期" } th { "状态" } } }
                    tbody {
                        @for s in &shown {
                            tr class=(slot_class(s, today)) {
                                td.t { (s.reason) } td { (fmt_date(s.due_from)) } td { (fmt_date(s.deadline)) } td.t { (s.label_on(today)) }
                            }
                        }
                    }
                }
            }
        }
        (plan_section(v))
        @if v.merged_into.is_none() {
            section.forms {
                h2 { "登记" }
                (followup_form(frame, v, failed))
                (visit_form(frame, v, failed))
                (purchase_form(frame, v, failed))
                (plan_form(frame, v, failed))
                (hospital_forms(frame, v, failed))
                (problem_forms(frame, v, failed))
                (delivery_forms(frame, v, failed))
                (typical_form(frame, v, failed))
                (join_form(frame, v, failed))
                (contact_form(frame, v, failed, Action::Greeting, "登记问候（逢年过节）"))
                (contact_form(frame, v, failed, Action::HomeVisit, "登记家访"))
                (details_form(frame, v, failed))
            }
        }
        section.timeline {
            h2 { "记录" }
            ol {
                @for e in timeline(v) {
                    li {
                        span.when { (shown_time(e.at)) } span.kind { (e.kind) }
                        div.body {
                            (e.body)
                            @if let Some(by) = v.entered_by.get(&e.id) { span.entered { "（" (by) " 代录）" } }
                        }
                    }
                }
            }
        }
    };
    layout(frame, &p.name, "", saved, body)
}

/// One form of a dossier page: who and when, then its own fields.
struct FormSpec<'a> {
    action: Action,
    /// The record it is about ("" when none): one form per record.
    record: &'a str,
    title: &'a str,
    /// Hidden fields besides the secret (the record's id, where to go back).
    hidden: Vec<(&'static str, String)>,
    /// Open even when nothing failed.
    open: bool,
}

impl<'a> FormSpec<'a> {
    fn new(action: Action, title: &'a str) -> Self {
        FormSpec {
            action,
            record: "",
            title,
            hidden: Vec::new(),
            open: false,
        }
    }

    fn about(mut self, record: &'a str) -> Self {
        self.record = record;
        if let Some(field) = self.action.record_field() {
            self.hidden.push((field, record.to_string()));
        }
        self
    }

    fn back(mut self, path: &str) -> Self {
        self.hidden.push(("back", path.to_string()));
        self
    }

    /// The prefix of its fields' ids: `hospital-`, `deliver-<id>-`.
    fn prefix(&self) -> String {
        if self.record.is_empty() {
            format!("{}-", self.action.as_str())
        } else {
            format!("{}-{}-", self.action.as_str(), self.record)
        }
    }
}

fn action_form(
    frame: &Frame,
    dossier: &str,
    failed: Option<&Failed>,
    spec: FormSpec,
    fields: impl FnOnce(&Fields) -> Markup,
) -> Markup {
    if !may(frame, spec.action) {
        return html! {};
    }
    let restored = if spec.action.record_field().is_some() {
        Failed::of_record(failed, spec.action, dossier, spec.record)
    } else {
        Failed::of(failed, spec.action, dossier)
    };
    let open = restored.is_some() || spec.open;
    let (mut form, errors) = restored.unwrap_or_default();
    if form.get("at").is_empty() {
        form.set("at", &datetime_value(keqing_host::now_cst()));
    }
    let prefix = spec.prefix();
    let f = Fields::new(prefix.clone(), &form, &errors);
    html! {
        details id={ (prefix) "form" } open[open] {
            summary { (spec.title) }
            // The server checks every field and answers next to it, in
            // Chinese, the same as the command line.
            form method="post" action={ "/patient/" (dossier) "/" (spec.action.as_str()) } novalidate {
                (hidden_csrf(frame))
                @for (name, value) in &spec.hidden {
                    input type="hidden" name=(name) value=(value);
                }
                (general_errors(&errors))
                (f.staff(frame, "经手人员"))
                (f.text("时间", "at", "datetime-local", false))
                (fields(&f))
                button type="submit" id={ (prefix) "save" } { (spec.title) }
            }
        }
    }
}

fn followup_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let spec = FormSpec {
        open: true,
        ..FormSpec::new(Action::Followup, "登记回访")
    };
    action_form(frame, &v.id, failed, spec, |f| {
        html! {
            (f.field("回访方式", "kind", html! {
                input id=(f.id("kind")) name="kind" list="kinds" value=(if f.form.get("kind").is_empty() { "电话回访" } else { f.form.get("kind") });
                datalist id="kinds" { @for k in ["电话回访", "用药指导", "到期提醒", "未购跟进", "节日问候"] { option value=(k) {} } }
            }))
            (f.text("回访结果", "outcome", "text", true))
            (f.text("下次切入点", "next", "text", false))
        }
    })
}

fn visit_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let mut reasons = vec![(String::new(), "（已购或未填）".to_string())];
    reasons.extend(
        keqing_shared::catalog::not_bought_reasons(frame.catalog.as_ref())
            .into_iter()
            .map(|r| (r.clone(), r)),
    );
    let reasons = pairs(&reasons);
    action_form(
        frame,
        &v.id,
        failed,
        FormSpec::new(Action::Visit, "登记到堂"),
        |f| {
            html! {
                (f.check("已购药", "purchased"))
                (f.choice("未购原因", "reason", &reasons))
                (f.text("其他原因（选「其他」时填写）", "reason_text", "text", false))
                (f.text("备注", "notes", "text", false))
            }
        },
    )
}

fn purchase_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(
        frame,
        &v.id,
        failed,
        FormSpec::new(Action::Purchase, "登记购药"),
        |f| {
            html! {
                (f.picked("药品", "product", true, &frame.products()))
                (f.text("数量（盒）", "quantity", "number", true))
                (f.text("金额（元）", "amount", "text", true))
                (f.text("用药到期时间", "runout", "date", false))
                (f.text("发票号", "invoice", "text", false))
                (f.text("礼品", "gifts", "text", false))
                (f.text("礼品收据号", "gift_receipt", "text", false))
            }
        },
    )
}

/// 回访计划: whether follow-ups are stopped, who makes them, the changes.
fn plan_section(v: &DossierView) -> Markup {
    let state = keqing_shared::followup::plan_state(v);
    html! {
        section.plan id="plan" {
            h2 { "回访计划" }
            p {
                @match state.stopped {
                    Some((reason, since)) => { span.badge.stopped id="plan-stopped" { "已停访：" (reason.chinese()) "（" (shown_time(since)) " 起）" } }
                    None => { span id="plan-active" { "按规定回访" } }
                }
                " 回访人："
                span id="plan-assignee" { (state.assignee.as_deref().unwrap_or("未指定")) }
            }
            @if !v.plan.is_empty() {
                table {
                    thead { tr { th { "时间" } th { "修改" } th { "内容" } th { "经手" } th { "备注" } } }
                    tbody {
                        @for c in &v.plan {
                            tr {
                                td { (shown_time(c.at)) }
                                td.t { (c.action.chinese()) }
                                td.t {
                                    @if let Some(d) = c.date { (fmt_date(d)) }
                                    @if let Some(r) = c.reason { (r.chinese()) }
                                    @if let Some(a) = &c.assignee { (a) }
                                }
                                td.t { (c.staff) }
                                td.t { (c.notes.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn plan_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let steps = [
        ("add", "加访（指定日期加一次回访）"),
        ("postpone", "推迟下一次回访"),
        ("stop", "停访"),
        ("resume", "恢复回访"),
        ("assign", "指定回访人"),
    ];
    let mut reasons = vec![("", "（停访时选择）")];
    reasons.extend(StopReason::ALL.iter().map(|r| (r.chinese(), r.chinese())));
    action_form(
        frame,
        &v.id,
        failed,
        FormSpec::new(Action::Plan, "修改回访计划"),
        |f| {
            let to = f.form.get("to");
            html! {
                (f.choice("修改", "step", &steps))
                (f.text("日期（加访、推迟）", "date", "date", false))
                (f.choice("停访原因", "reason", &reasons))
                (f.field("回访人（指定时）", "to", html! {
                    select id=(f.id("to")) name="to" {
                        option value="" { "请选择" }
                        @for s in &frame.staff {
                            option value=(s.name) selected[s.name == to] { (s.name) }
                        }
                    }
                }))
                (f.text("备注", "notes", "text", false))
            }
        },
    )
}

fn hospital_forms(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    html! {
        (action_form(frame, &v.id, failed, FormSpec::new(Action::Hospital, "登记住院"), |f| html! {
            (f.text("入院日期", "admitted", "date", true))
            (f.text("出院日期", "discharged", "date", false))
            (f.text("医院", "hospital", "text", false))
            (f.text("原因", "reason", "text", false))
        }))
        @for h in v.hospital_stays.iter().filter(|h| h.discharged.is_none()) {
            @let title = format!("登记出院（{} 入院）", fmt_date(h.admitted));
            (action_form(frame, &v.id, failed, FormSpec::new(Action::Discharge, &title).about(&h.id), |f| html! {
                (f.text("出院日期", "discharged", "date", true))
            }))
        }
    }
}

fn problem_forms(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let open_spec = FormSpec {
        hidden: vec![("step", "open".to_string())],
        ..FormSpec::new(Action::Problem, "登记问题（问题患者）")
    };
    html! {
        (action_form(frame, &v.id, failed, open_spec, |f| html! {
            (f.text("问题", "description", "text", true))
        }))
        @for x in v.problems.iter().filter(|x| x.state != ProblemState::Resolved) {
            @let title = format!("处理问题：{}", x.description);
            (action_form(frame, &v.id, failed, FormSpec::new(Action::Problem, &title).about(&x.id), |f| html! {
                (f.choice("进展", "step", &[("handle", "处理中"), ("resolve", "已解决")]))
                (f.text("处理结果（解决时填写）", "resolution", "text", false))
            }))
        }
    }
}

fn delivery_forms(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let mut purchases = vec![(String::new(), "（不对应购药记录）".to_string())];
    purchases.extend(v.purchases.iter().rev().map(|p| {
        (
            p.id.clone(),
            format!("{} {} {}盒", fmt_date(p.at.date()), p.product, p.quantity),
        )
    }));
    html! {
        (action_form(frame, &v.id, failed, FormSpec::new(Action::Delivery, "登记外送"), |f| html! {
            (f.field("对应购药", "purchase", html! {
                select id=(f.id("purchase")) name="purchase" {
                    @for (id, label) in &purchases {
                        option value=(id) selected[f.form.get("purchase") == id] { (label) }
                    }
                }
            }))
            (f.text("药品（不对应购药时）", "product", "text", false))
            (f.text("数量（盒）", "quantity", "number", false))
            (f.text("地址（默认患者地址）", "address", "text", false))
            (f.text("送达期限", "due", "date", false))
            (f.text("备注", "notes", "text", false))
            (f.check("已送达", "delivered"))
        }))
        @for d in v.deliveries.iter().filter(|d| d.state() == DeliveryStatus::Pending) {
            @let title = format!(
                "送达结果：{}{}",
                d.product.as_deref().unwrap_or("外送"),
                d.due.map(|x| format!("（限 {}）", fmt_date(x))).unwrap_or_default()
            );
            (deliver_form(frame, &v.id, &d.id, &title, None, failed))
        }
    }
}

/// The form settling one pending delivery (on its dossier's page, or on
/// the deliveries list with `back`).
fn deliver_form(
    frame: &Frame,
    dossier: &str,
    delivery: &str,
    title: &str,
    back: Option<&str>,
    failed: Option<&Failed>,
) -> Markup {
    let mut spec = FormSpec::new(Action::Deliver, title).about(delivery);
    if let Some(b) = back {
        spec = spec.back(b);
        spec.open = true;
    }
    action_form(frame, dossier, failed, spec, |f| {
        html! {
            (f.choice("结果", "result", &[("delivered", "已送"), ("failed", "未送达")]))
            (f.text("未送达原因", "failed", "text", false))
        }
    })
}

/// Days after an activity's end in which the workstation still offers it
/// (a participation typed in late, with its time).
const JOIN_LATE_DAYS: u64 = 7;

/// 参加活动: the activities running today (or ended in the last
/// [`JOIN_LATE_DAYS`]) that the patient has not joined.
fn join_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let open: Vec<&keqing_shared::activity::Activity> = frame
        .activities
        .iter()
        .filter(|a| {
            a.starts <= frame.today
                && a.ends
                    .checked_add_days(chrono::Days::new(JOIN_LATE_DAYS))
                    .is_some_and(|late| late >= frame.today)
        })
        .filter(|a| !v.participations.iter().any(|p| p.activity == a.id))
        .collect();
    if open.is_empty() {
        return html! {};
    }
    let options: Vec<(String, String)> = open
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                format!(
                    "{}（{} {} 至 {}）",
                    a.name,
                    a.kind.chinese(),
                    a.starts,
                    a.ends
                ),
            )
        })
        .collect();
    let options = pairs(&options);
    action_form(
        frame,
        &v.id,
        failed,
        FormSpec::new(Action::Join, "参加活动"),
        |f| {
            html! {
                (f.choice("活动", "activity", &options))
                (f.text("说明", "notes", "text", false))
            }
        },
    )
}

fn typical_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let flagged = v.typical.as_ref().is_some_and(|t| t.flagged);
    let restored = Failed::of(failed, Action::Typical, &v.id).is_some();
    action_form(
        frame,
        &v.id,
        failed,
        FormSpec::new(Action::Typical, "典型病例"),
        |f| {
            let ticked = if restored {
                f.form.ticked("flagged")
            } else {
                flagged
            };
            html! {
                div.field.check {
                    input type="checkbox" id=(f.id("flagged")) name="flagged" checked[ticked];
                    label for=(f.id("flagged")) { "列为典型病例（取消勾选即撤销）" }
                }
                (f.text("说明", "notes", "text", false))
            }
        },
    )
}

fn contact_form(
    frame: &Frame,
    v: &DossierView,
    failed: Option<&Failed>,
    action: Action,
    title: &str,
) -> Markup {
    action_form(frame, &v.id, failed, FormSpec::new(action, title), |f| {
        html! { (f.text("内容", "notes", "text", false)) }
    })
}

/// 资料: the patient's details as they are; only what is changed is saved.
fn details_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    let p = &v.patient;
    let shown = [
        ("name", p.name.clone()),
        (
            "sex",
            p.sex.map(|s| s.chinese().to_string()).unwrap_or_default(),
        ),
        ("age", p.age.map(|a| a.to_string()).unwrap_or_default()),
        ("address", p.address.clone().unwrap_or_default()),
        (
            "knows",
            p.knows
                .map(|k| if k { "是" } else { "否" }.to_string())
                .unwrap_or_default(),
        ),
        ("notes", p.notes.clone().unwrap_or_default()),
    ];
    let restored = Failed::of(failed, Action::Details, &v.id).is_some();
    let spec = FormSpec {
        hidden: shown
            .iter()
            .map(|(k, was)| (was_name(k), was.clone()))
            .collect(),
        ..FormSpec::new(Action::Details, "修改资料")
    };
    // The form shows the details as they are, unless it comes back with
    // what was typed.
    let mut form = failed
        .filter(|f| f.action == Action::Details && f.dossier == v.id)
        .map(|f| f.form.clone())
        .unwrap_or_default();
    if !restored {
        for (k, was) in &shown {
            form.set(k, was);
        }
    }
    action_form(frame, &v.id, failed, spec, |f| {
        let f = Fields::new(f.prefix.clone(), &form, f.errors);
        html! {
            (f.text("姓名", "name", "text", false))
            (f.choice("性别", "sex", &[("", "未填"), ("男", "男"), ("女", "女")]))
            (f.text("年龄", "age", "number", false))
            (f.text("地址", "address", "text", false))
            (f.choice("是否知道病情", "knows", &[("", "未填"), ("是", "是"), ("否", "否")]))
            (f.text("备注", "notes", "text", false))
            (f.text("添加电话", "phone", "tel", false))
            (f.text("添加病种", "disease", "text", false))
        }
    })
}

/// The hidden field holding what a detail was when the page was drawn.
fn was_name(field: &str) -> &'static str {
    match field {
        "name" => "was-name",
        "sex" => "was-sex",
        "age" => "was-age",
        "address" => "was-address",
        "knows" => "was-knows",
        _ => "was-notes",
    }
}

/// 客户分类: the count per category and flag; one list below when chosen.
pub fn lists(
    frame: &Frame,
    day: NaiveDate,
    counts: &[(String, u64)],
    chosen: Option<(&str, &[ListedPatient])>,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "客户分类 " (fmt_date(day)) }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        table.counts id="list-counts" {
            thead { tr { th { "分类" } th { "人数" } } }
            tbody {
                @for (label, n) in counts {
                    @let href = match label.as_str() {
                        "典型" => format!("/lists?flag=typical&date={}", fmt_date(day)),
                        "问题" => format!("/lists?flag=problem&date={}", fmt_date(day)),
                        c => format!("/lists?category={}&date={}", query_value(c), fmt_date(day)),
                    };
                    tr class=[chosen.filter(|(l, _)| *l == label.as_str()).map(|_| "current")] {
                        td.t { a href=(href) { (label) } }
                        td.n id={ "count-" (label) } { (n) }
                    }
                }
            }
        }
        @if let Some((label, rows)) = chosen {
            h2 { (label) " · " (rows.len()) " 位" }
            @if rows.is_empty() {
                p.empty { "没有这一类的患者。" }
            } @else {
                table.list id="list-rows" {
                    thead { tr { th { "姓名" } th { "电话" } th { "分类" } th { "标记" } th { "最近联系" } th { "下次回访" } th { "回访人" } } }
                    tbody {
                        @for r in rows {
                            tr id={ "listed-" (r.dossier_id) } {
                                td.t { a href={ "/patient/" (r.dossier_id) } { (r.name) } }
                                td.phone { (r.phone.as_deref().unwrap_or("")) }
                                td.t { (keqing_shared::lists::Category::parse(&r.category).map(|c| c.chinese()).unwrap_or("")) }
                                td.t {
                                    @if r.typical { span.badge.typical { "典型" } }
                                    @if r.open_problems > 0 { span.badge.problem { "问题" } }
                                }
                                td { (r.last_contact.as_deref().map(shown_text).unwrap_or_default()) }
                                td { (r.next_due.as_deref().unwrap_or("")) }
                                td.t { (r.assignee.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(frame, "客户分类", "lists", None, body)
}

/// 外送: what is still to deliver, overdue first, each with its result form.
pub fn deliveries(
    frame: &Frame,
    list: &[OpenDelivery],
    saved: Option<&str>,
    failed: Option<&Failed>,
) -> Markup {
    let today = fmt_date(frame.today);
    let body = html! {
        h1 { "待送外送" }
        p.summary { "共 " strong id="delivery-count" { (list.len()) } " 件" }
        @if list.is_empty() {
            p.empty { "没有待送的外送。" }
        }
        ol.due {
            @for d in list {
                @let overdue = d.due.as_deref().is_some_and(|due| due < today.as_str());
                li class={ "entry" @if overdue { " overdue" } } id={ "delivery-" (d.id) } {
                    div.who {
                        span.state { @if overdue { "逾期" } @else { "待送" } }
                        a href={ "/patient/" (d.dossier_id) } { (d.name) }
                        span.phone { (d.phone.as_deref().unwrap_or("")) }
                    }
                    p {
                        (d.product.as_deref().unwrap_or("（未填药品）"))
                        @if let Some(q) = d.quantity { " " (q) "盒" }
                        " · 送至 " (d.address.as_deref().unwrap_or("（未填地址）"))
                        " · 期限 " (d.due.as_deref().unwrap_or("未定"))
                        " · 登记 " (d.staff)
                    }
                    (deliver_form(frame, &d.dossier_id, &d.id, "登记送达结果", Some("/deliveries"), failed))
                }
            }
        }
    };
    layout(frame, "外送", "deliveries", saved, body)
}

/// 读取审计: who read which dossier, list or report at this office, newest
/// first: this device's reads, and the other devices' as far as the last
/// sync brought them.
pub fn audit(frame: &Frame, lines: &[crate::store::ReadLine], limit: usize) -> Markup {
    let body = html! {
        h1 { "读取审计" }
        p { "谁在哪台设备上打开了哪份档案、查看了哪份名单、导出了哪份报表。本机的记录即时可见，其他设备的记录在同步后可见；记录只增不改，并同步到总部。" }
        @if lines.is_empty() {
            p.empty { "还没有读取记录。" }
        } @else {
            table.list id="audit" {
                thead { tr { th { "时间" } th { "设备" } th { "人员" } th { "操作" } th { "对象" } } }
                tbody {
                    @for l in lines {
                        tr {
                            td.t { (l.read.at) } td.t { (l.device) } td.t { (l.read.who) }
                            td.t { (read_action(&l.read.action)) } td.t { (l.read.target) }
                        }
                    }
                }
            }
            @if lines.len() >= limit { p { "只显示最近 " (limit) " 条（" code { "keqing reads --limit N" } " 可看更多）。" } }
        }
    };
    layout(frame, "读取审计", "audit", None, body)
}

/// A read's action as the office says it.
fn read_action(action: &str) -> &str {
    match action {
        "dossier.open" => "打开档案",
        "list.read" => "查看名单",
        "report.export" => "导出报表",
        other => other,
    }
}

/// 员工: everyone of the office, who is on leave (kept in history, gone
/// from the pick lists), and the form adding one.
pub fn staff(
    frame: &Frame,
    all: &[Staff],
    form: &FormData,
    errors: &FormErrors,
    saved: Option<&str>,
) -> Markup {
    let f = Fields::new("staff-", form, errors);
    let roles: Vec<(&str, &str)> = Role::ALL
        .iter()
        .map(|r| (r.as_str(), r.chinese()))
        .collect();
    let body = html! {
        h1 { "员工" }
        table.list id="staff-list" {
            thead { tr { th { "姓名" } th { "岗位" } th { "状态" } th {} } }
            tbody {
                @for s in all {
                    tr id={ "staff-" (s.id) } class=[(!s.active).then_some("muted")] {
                        td.t { (s.name) }
                        td.t { (s.role.chinese()) }
                        td.t { @if s.active { "在岗" } @else { "离岗" } }
                        td {
                            form.inline method="post" action="/staff/active" {
                                (hidden_csrf(frame))
                                input type="hidden" name="name" value=(s.name);
                                input type="hidden" name="active" value=(if s.active { "0" } else { "1" });
                                button type="submit" { @if s.active { "离岗" } @else { "返岗" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "添加员工" }
        (general_errors(errors))
        form.register method="post" action="/staff" novalidate {
            (hidden_csrf(frame))
            fieldset {
                (f.text("姓名", "name", "text", true))
                (f.choice("岗位", "role", &roles))
            }
            button type="submit" id="staff-add" { "添加" }
        }
    };
    layout(frame, "员工", "staff", saved, body)
}
