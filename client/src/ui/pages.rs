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
        Some(st) if st.last_error.is_some() => {
            ("offline", "离线", st.last_error.clone().unwrap_or_default())
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

/// A labelled field with its error (if any) right after the input.
fn field(label: &str, name: &str, errors: &FormErrors, input: Markup) -> Markup {
    let err = errors.field(name);
    html! {
        div class={ "field" @if err.is_some() { " invalid" } } {
            label for=(name) { (label) }
            (input)
            @if let Some(e) = err {
                span.err id={ (name) "-err" } role="alert" { (e) }
            }
        }
    }
}

fn text_input(
    label: &str,
    name: &str,
    form: &FormData,
    errors: &FormErrors,
    kind: &str,
    required: bool,
) -> Markup {
    let input = html! {
        input type=(kind) id=(name) name=(name) value=(form.get(name)) required[required]
            aria-invalid=[errors.field(name).map(|_| "true")]
            aria-describedby=[errors.field(name).map(|_| format!("{name}-err"))];
    };
    field(label, name, errors, input)
}

fn choice(
    label: &str,
    name: &str,
    options: &[(&str, &str)],
    form: &FormData,
    errors: &FormErrors,
) -> Markup {
    let current = form.get(name);
    let input = html! {
        select id=(name) name=(name) {
            @for (value, text) in options {
                option value=(value) selected[*value == current] { (text) }
            }
        }
    };
    field(label, name, errors, input)
}

fn staff_select(frame: &Frame, form: &FormData, errors: &FormErrors, label: &str) -> Markup {
    let chosen = Some(form.get("staff"))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| frame.last_staff.clone())
        .unwrap_or_default();
    let input = html! {
        select id="staff" name="staff" required {
            option value="" { "请选择" }
            @for s in &frame.staff {
                option value=(s.name) selected[s.name == chosen] { (s.name) " (" (s.role.chinese()) ")" }
            }
        }
    };
    field(label, "staff", errors, input)
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
                (staff_select(frame, &form, &errors, "回访人员"))
                (text_input("回访结果", "outcome", &form, &errors, "text", true))
                (text_input("下次切入点", "next", &form, &errors, "text", false))
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
    let body = html! {
        h1 { "电话咨询登记表" }
        (general_errors(errors))
        form.register method="post" action="/call" novalidate {
            (hidden_csrf(frame))
            input type="hidden" name="patient" id="patient" value=(form.get("patient"));
            fieldset {
                legend { "来电" }
                (text_input("来电号码", "phone", form, errors, "tel", true))
                div id="lookup" aria-live="polite" {}
                (text_input("来电时间", "at", form, errors, "datetime-local", false))
                (field("与患者关系", "relation", errors, html! {
                    input id="relation" name="relation" list="relations" value=(form.get("relation"));
                    datalist id="relations" { @for r in RELATIONS { option value=(r) {} } }
                }))
                (field("信息来源", "source", errors, html! {
                    input id="source" name="source" list="sources" required value=(form.get("source"));
                    datalist id="sources" { @for s in SOURCES { option value=(s) {} } }
                }))
                (staff_select(frame, form, errors, "接待人员"))
            }
            fieldset {
                legend { "患者" }
                (text_input("患者姓名", "name", form, errors, "text", true))
                (choice("性别", "sex", &[("", "未填"), ("男", "男"), ("女", "女")], form, errors))
                (text_input("年龄", "age", form, errors, "number", false))
                (text_input("病种", "disease", form, errors, "text", false))
                (choice("是否知道病情", "knows", &[("", "未填"), ("是", "是"), ("否", "否")], form, errors))
                (text_input("地址", "address", form, errors, "text", false))
                div.field.check {
                    input type="checkbox" id="force_new" name="force_new" checked[form.ticked("force_new")];
                    label for="force_new" { "另一位患者（同一号码也新建档案）" }
                }
            }
            fieldset {
                legend { "咨询内容" }
                (field("病情", "condition", errors, html! { textarea id="condition" name="condition" rows="3" { (form.get("condition")) } }))
                (field("治疗经过", "treatment", errors, html! { textarea id="treatment" name="treatment" rows="2" { (form.get("treatment")) } }))
                (field("处理结果 / 下一步", "outcome", errors, html! { textarea id="outcome" name="outcome" rows="2" { (form.get("outcome")) } }))
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

/// The fragment under the phone field.
pub fn lookup(found: &Lookup) -> Markup {
    html! {
        @if let Some(p) = &found.normalised {
            @if found.by_phone.is_empty() {
                p.lookup-new { "号码 " (p) " 尚无档案：登记后新建档案。" }
            } @else {
                div.lookup-found {
                    p { "号码 " (p) " 已有档案，来电将加入该档案：" }
                    ul { @for r in &found.by_phone { li data-dossier=(r.dossier_id) { (patient_line(r)) } } }
                }
            }
        }
        @if !found.by_name.is_empty() {
            div.lookup-dup {
                p { "同名患者（可能重复）：" }
                ul { @for r in &found.by_name { li { (patient_line(r)) } } }
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
    for (kind, contacts) in [
        ("问候", v.greetings.iter().map(|g| &g.0).collect::<Vec<_>>()),
        ("家访", v.home_visits.iter().map(|g| &g.0).collect()),
        ("外送", v.deliveries.iter().map(|g| &g.0).collect()),
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
                        (field(&c.field, "value", &errors, html! {
                            select id="value" name="value" {
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
    fields: impl FnOnce(&FormData, &FormErrors) -> Markup,
) -> Markup {
    let restored = Failed::of(failed, action, &v.id);
    let open = restored.is_some();
    let (mut form, errors) = restored.unwrap_or_default();
    if form.get("at").is_empty() {
        form.set("at", &datetime_value(crate::desk::now_cst()));
    }
    html! {
        details id={ (action.as_str()) "-form" } open[open || action == Action::Followup] {
            summary { (title) }
            form method="post" action={ "/patient/" (v.id) "/" (action.as_str()) } {
                (hidden_csrf(frame))
                (general_errors(&errors))
                (staff_select(frame, &form, &errors, "经手人员"))
                (text_input("时间", "at", &form, &errors, "datetime-local", false))
                (fields(&form, &errors))
                button type="submit" { (title) }
            }
        }
    }
}

fn followup_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(
        frame,
        v,
        failed,
        Action::Followup,
        "登记回访",
        |form, errors| {
            html! {
                (field("回访方式", "kind", errors, html! {
                    input id="kind" name="kind" list="kinds" value=(if form.get("kind").is_empty() { "电话回访" } else { form.get("kind") });
                    datalist id="kinds" { @for k in ["电话回访", "用药指导", "到期提醒", "未购跟进", "节日问候"] { option value=(k) {} } }
                }))
                (text_input("回访结果", "outcome", form, errors, "text", true))
                (text_input("下次切入点", "next", form, errors, "text", false))
            }
        },
    )
}

fn visit_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(
        frame,
        v,
        failed,
        Action::Visit,
        "登记到堂",
        |form, errors| {
            html! {
                div.field.check {
                    input type="checkbox" id="purchased" name="purchased" checked[form.ticked("purchased")];
                    label for="purchased" { "已购药" }
                }
                (text_input("未购原因", "reason", form, errors, "text", false))
                (text_input("备注", "notes", form, errors, "text", false))
            }
        },
    )
}

fn purchase_form(frame: &Frame, v: &DossierView, failed: Option<&Failed>) -> Markup {
    action_form(
        frame,
        v,
        failed,
        Action::Purchase,
        "登记购药",
        |form, errors| {
            let mut form = form.clone();
            if form.get("quantity").is_empty() {
                form.set("quantity", "1");
            }
            html! {
                (text_input("药品", "product", &form, errors, "text", true))
                (text_input("数量（盒）", "quantity", &form, errors, "number", true))
                (text_input("金额（元）", "amount", &form, errors, "text", true))
                (text_input("用药到期时间", "runout", &form, errors, "date", false))
                (text_input("发票号", "invoice", &form, errors, "text", false))
                (text_input("礼品", "gifts", &form, errors, "text", false))
                (text_input("礼品收据号", "gift_receipt", &form, errors, "text", false))
            }
        },
    )
}
