//! The workstation's pages, rendered on the server (maud escapes every
//! value). Labels are Chinese, as on the paper registers.

use super::forms::{Action, FormData, FormErrors, Lookup};
use crate::desk::DueEntry;
use crate::store::{PatientRow, SyncState};
use axum::http::StatusCode;
use chrono::{NaiveDate, NaiveDateTime};
use keqing_shared::dossier::DossierView;
use keqing_shared::followup::{Slot, SlotStatus};
use keqing_shared::records::fmt_yuan;
use keqing_shared::report::Report;
use keqing_shared::sheets;
use keqing_shared::staff::Staff;
use keqing_shared::when::{fmt_date, fmt_datetime};
use maud::{DOCTYPE, Markup, html};

/// What surrounds every page: who is working here and the sync indicator.
pub struct Frame {
    pub office: String,
    pub device: String,
    pub csrf: String,
    pub staff: Vec<Staff>,
    pub last_staff: Option<String>,
    pub today: NaiveDate,
    pub sync: SyncIndicator,
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
        "synced" => "同步完成",
        "offline" => "无法连接服务器：继续离线工作，稍后再同步",
        "refused" => "服务器拒绝了同步：见页首的原因",
        _ => return None,
    })
}

fn layout(frame: &Frame, title: &str, nav: &str, saved: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 客情" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    div.brand {
                        strong { "客情" }
                        span { (office_title(&frame.office)) " · " (frame.device) }
                    }
                    nav {
                        @for (href, label, key) in [("/", "今日回访", "today"), ("/call", "电话登记", "call"), ("/search", "查找患者", "search"), ("/summary", "每日汇总", "summary")] {
                            a href=(href) class=[(key == nav).then_some("current")] { (label) }
                        }
                    }
                    (sync_indicator(frame))
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
    list: &[DueEntry],
    saved: Option<&str>,
    failed: Option<&Failed>,
) -> Markup {
    let overdue = list.iter().filter(|e| e.overdue).count();
    let back = if day == frame.today {
        "/".to_string()
    } else {
        format!("/?date={}", fmt_date(day))
    };
    let body = html! {
        h1 {
            @if day == frame.today { "今日回访 " } @else { "回访清单 " }
            (fmt_date(day))
        }
        form.search method="get" action="/" {
            label for="date" { "日期" }
            input id="date" name="date" type="date" value=(fmt_date(day));
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

/// 电话咨询登记表: the phone number first; what it matches appears under it.
pub fn call_form(frame: &Frame, form: &FormData, errors: &FormErrors) -> Markup {
    let f = Fields::new("", form, errors);
    let body = html! {
        h1 { "电话咨询登记表" }
        (general_errors(errors))
        form.register method="post" action="/call" novalidate {
            (hidden_csrf(frame))
            fieldset {
                legend { "来电" }
                (f.text("来电号码", "phone", "tel", true))
                div id="lookup" aria-live="polite" {}
                (f.text("来电时间", "at", "datetime-local", false))
                (f.field("与患者关系", "relation", html! {
                    input id=(f.id("relation")) name="relation" list="relations" value=(form.get("relation"));
                    datalist id="relations" { @for r in RELATIONS { option value=(r) {} } }
                }))
                (f.field("信息来源", "source", html! {
                    input id=(f.id("source")) name="source" list="sources" required value=(form.get("source"));
                    datalist id="sources" { @for s in SOURCES { option value=(s) {} } }
                }))
                (f.staff(frame, "接待人员"))
            }
            fieldset {
                legend { "患者" }
                (f.text("患者姓名", "name", "text", true))
                (f.choice("性别", "sex", &[("", "未填"), ("男", "男"), ("女", "女")]))
                (f.text("年龄", "age", "number", false))
                (f.text("病种", "disease", "text", false))
                (f.choice("是否知道病情", "knows", &[("", "未填"), ("是", "是"), ("否", "否")]))
                (f.text("地址", "address", "text", false))
                (f.check("另一位患者（同一号码也新建档案）", "force_new"))
            }
            fieldset {
                legend { "咨询内容" }
                (f.field("病情", "condition", html! { textarea id="condition" name="condition" rows="3" { (form.get("condition")) } }))
                (f.field("治疗经过", "treatment", html! { textarea id="treatment" name="treatment" rows="2" { (form.get("treatment")) } }))
                (f.field("处理结果 / 下一步", "outcome", html! { textarea id="outcome" name="outcome" rows="2" { (form.get("outcome")) } }))
            }
            button type="submit" id="save-call" { "登记来电" }
        }
    };
    layout(frame, "电话登记", "call", None, body)
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
            @match found.by_phone.len() {
                0 => { p.lookup-new { "号码 " (p) " 尚无档案：登记后新建档案。" } }
                1 => {
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
    at: NaiveDateTime,
    kind: &'static str,
    body: Markup,
}

fn timeline(v: &DossierView) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    for c in &v.calls {
        out.push(TimelineEntry {
            at: c.at,
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
            kind: "外送",
            body: html! {
                (d.staff) " · " strong { (d.state().chinese()) }
                @if let Some(p) = &d.product { " " (p) }
                @if let Some(q) = d.quantity { " " (q) "盒" }
                @if let Some(a) = &d.address { " 送至 " (a) }
                @if let Some(due) = d.due { " 限 " (fmt_date(due)) }
                @if let Some(r) = &d.status_reason { " （" (r) "）" }
                @if let Some(n) = &d.notes { " · " (n) }
            },
        });
    }
    for c in &v.plan {
        out.push(TimelineEntry {
            at: c.at,
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
    for (kind, contacts) in [
        ("问候", v.greetings.iter().map(|g| &g.0).collect::<Vec<_>>()),
        ("家访", v.home_visits.iter().map(|g| &g.0).collect()),
    ] {
        for c in contacts {
            out.push(TimelineEntry {
                at: c.at,
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
        @if !v.conflicts.is_empty() {
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
        @if v.merged_into.is_none() {
            section.forms {
                (followup_form(frame, v, failed))
                (visit_form(frame, v, failed))
                (purchase_form(frame, v, failed))
            }
        }
        section.timeline {
            h2 { "记录" }
            ol {
                @for e in timeline(v) {
                    li { span.when { (fmt_datetime(e.at)) } span.kind { (e.kind) } div.body { (e.body) } }
                }
            }
        }
    };
    layout(frame, &p.name, "", saved, body)
}

fn action_form(
    frame: &Frame,
    v: &DossierView,
    failed: Option<&Failed>,
    action: Action,
    title: &str,
    fields: impl FnOnce(&Fields) -> Markup,
) -> Markup {
    let restored = Failed::of(failed, action, &v.id);
    let open = restored.is_some();
    let (mut form, errors) = restored.unwrap_or_default();
    if form.get("at").is_empty() {
        form.set("at", &datetime_value(keqing_host::now_cst()));
    }
    if action == Action::Purchase && form.get("quantity").is_empty() {
        form.set("quantity", "1");
    }
    let f = Fields::new(format!("{}-", action.as_str()), &form, &errors);
    html! {
        details id={ (action.as_str()) "-form" } open[open || action == Action::Followup] {
            summary { (title) }
            form method="post" action={ "/patient/" (v.id) "/" (action.as_str()) } {
                (hidden_csrf(frame))
                (general_errors(&errors))
                (f.staff(frame, "经手人员"))
                (f.text("时间", "at", "datetime-local", false))
                (fields(&f))
                button type="submit" { (title) }
            }
        }
    }
}

fn followup_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(frame, v, failed, Action::Followup, "登记回访", |f| {
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
    action_form(frame, v, failed, Action::Visit, "登记到堂", |f| {
        html! {
            (f.check("已购药", "purchased"))
            (f.text("未购原因", "reason", "text", false))
            (f.text("备注", "notes", "text", false))
        }
    })
}

fn purchase_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(frame, v, failed, Action::Purchase, "登记购药", |f| {
        html! {
            (f.text("药品", "product", "text", true))
            (f.text("数量（盒）", "quantity", "number", true))
            (f.text("金额（元）", "amount", "text", true))
            (f.text("用药到期时间", "runout", "date", false))
            (f.text("发票号", "invoice", "text", false))
            (f.text("礼品", "gifts", "text", false))
            (f.text("礼品收据号", "gift_receipt", "text", false))
        }
    })
}
