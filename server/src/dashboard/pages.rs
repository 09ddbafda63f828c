//! The dashboard's pages (maud escapes every value). Headings in Chinese.

use super::Viewer;
use crate::store::{StoredRead, UnreadableDocument};
use axum::http::StatusCode;
use keqing_projection::patients::DuplicateCandidate;
use keqing_shared::html::{
    Series, funnel, percent, share_bars, sheet_table, stacked_columns, yuan_bars,
};
use keqing_shared::records::fmt_yuan;
use keqing_shared::report::{Line, Report, Scope};
use keqing_shared::sheets;
use maud::{DOCTYPE, Markup, html};
use std::collections::BTreeMap;

/// Sources drawn separately in the calls chart; the rest are summed as 其他.
const CHART_SOURCES: usize = 8;

fn layout(viewer: Option<&Viewer>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 客情 数据管理中心" }
                link rel="stylesheet" href="/assets/dashboard.css";
            }
            body {
                header.top {
                    strong { "客情 数据管理中心" }
                    @if let Some(v) = viewer {
                        nav {
                            a href="/" { "全国" }
                            a href="/catalog" { "目录与投放" }
                            a href="/devices" { "设备状况" }
                            @if v.role.sees_personal_details() {
                                a href="/duplicates" { "重复患者" }
                                a href="/reads" { "读取审计" }
                                a href="/lifecycle" { "转档与删除" }
                            }
                        }
                        span.who { (v.name) " · " (v.role.chinese()) }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "退出" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    layout(
        None,
        "出错了",
        html! {
            h1 { "出错了 " (status.as_u16()) }
            p.error role="alert" { (message) }
            p { a href="/" { "返回全国报表" } }
        },
    )
}

/// The sign-in form; `csrf` is the secret its post must carry (the same
/// as the sign-in cookie set with it).
pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        "登录",
        html! {
            h1 { "总部登录" }
            p { "用总部账号登录（由 " code { "keqing-server user add --name 姓名 --role analyst|admin --password-stdin" } " 创建）。" }
            form.login method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="name" { "姓名" }
                input type="text" id="name" name="name" autocomplete="username" autofocus required
                    aria-invalid=[error.map(|_| "true")];
                label for="password" { "密码" }
                input type="password" id="password" name="password" autocomplete="current-password" required
                    aria-invalid=[error.map(|_| "true")];
                @if let Some(e) = error { span.err role="alert" { (e) } }
                button type="submit" id="login" { "登录" }
            }
        },
    )
}

/// The date range form and the downloads of what is on screen.
fn range_bar(r: &Report, action: &str, scope: &str) -> Markup {
    let q = format!("scope={scope}&from={}&to={}", r.from, r.to);
    html! {
        form.range method="get" action=(action) {
            label for="from" { "从" }
            input type="date" id="from" name="from" value=(r.from);
            label for="to" { "到" }
            input type="date" id="to" name="to" value=(r.to);
            button type="submit" { "查看" }
            span.downloads {
                "下载: "
                a href={ "/export?" (q) "&format=csv" } download { "CSV" }
                " "
                a href={ "/export?" (q) "&format=xlsx" } download { "Excel" }
            }
        }
    }
}

fn tiles(total: &Line) -> Markup {
    let f = &total.followups;
    html! {
        div.tiles {
            div.tile { span { "来电" } strong id="total-calls" { (total.calls) } }
            div.tile { span { "到堂患者" } strong id="total-visited" { (total.callers_visited) } }
            div.tile { span { "购药笔数" } strong id="total-purchases" { (total.purchases) } }
            div.tile { span { "金额(元)" } strong { (fmt_yuan(total.amount_fen)) } }
            div.tile { span { "回访次数" } strong id="total-followups" { (f.done) } }
            div.tile { span { "复购率" } strong { (percent(total.repeat_buyers, total.buyers)) } }
            div.tile { span { "按时回访率" } strong { (percent(f.due_done_on_time, f.due)) } }
        }
    }
}

/// Calls by information source, day by day.
fn calls_chart(r: &Report) -> Markup {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &r.by_day {
        for c in &d.sources {
            *totals.entry(c.label.as_str()).or_default() += c.count;
        }
    }
    let mut order: Vec<(&str, u64)> = totals.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = order.iter().take(CHART_SOURCES).map(|s| s.0).collect();
    let days: Vec<String> = r.by_day.iter().map(|d| d.date.clone()).collect();
    let mut series: Vec<Series> = shown
        .iter()
        .map(|s| Series {
            label: s.to_string(),
            values: r
                .by_day
                .iter()
                .map(|d| {
                    d.sources
                        .iter()
                        .find(|c| c.label == *s)
                        .map_or(0, |c| c.count)
                })
                .collect(),
        })
        .collect();
    if order.len() > CHART_SOURCES {
        series.push(Series {
            label: "其他".into(),
            values: r
                .by_day
                .iter()
                .map(|d| {
                    d.sources
                        .iter()
                        .filter(|c| !shown.contains(&c.label.as_str()))
                        .map(|c| c.count)
                        .sum()
                })
                .collect(),
        });
    }
    stacked_columns("每日来电（按信息来源）", &days, &series)
}

/// 每购药患者成本 by channel: the sources with spend, cheapest first.
fn cost_chart(r: &Report) -> Markup {
    let mut rows: Vec<(String, Option<i64>)> = r
        .by_source
        .iter()
        .filter(|s| s.spend_fen > 0)
        .map(|s| (s.source.clone(), s.cost_per_buyer_fen))
        .collect();
    rows.sort_by_key(|(_, fen)| fen.unwrap_or(i64::MAX));
    html! {
        @if !rows.is_empty() {
            (yuan_bars("每购药患者成本（按信息来源）", &rows))
        }
    }
}

fn funnel_chart(total: &Line) -> Markup {
    funnel(
        "转化漏斗：来电患者 → 到堂 → 购药",
        &[
            ("来电患者", total.callers),
            ("到堂患者", total.callers_visited),
            ("购药患者", total.callers_bought),
        ],
    )
}

/// The report's caveat, if it lacks documents the server could not read.
fn caveat(r: &Report) -> Markup {
    html! {
        @if let Some(text) = sheets::caveat(r) {
            p.caveat id="caveat" role="alert" { (text) " " a href="/unreadable" { "查看 list them" } }
        }
    }
}

fn all_sheets(r: &Report) -> Markup {
    html! {
        details.sheets {
            summary { "完整报表（与 keqing-server report 相同）" }
            @for sheet in sheets::sheets(r) { (sheet_table(&sheet)) }
        }
    }
}

/// 全国: one row per province and the total, with drill-down links.
pub fn national(viewer: &Viewer, r: &Report) -> Markup {
    let by_province = |part: fn(&Line) -> (u64, u64)| -> Vec<(String, u64, u64)> {
        r.lines
            .iter()
            .map(|l| {
                let (p, w) = part(l);
                (l.name.clone(), p, w)
            })
            .collect()
    };
    let body = html! {
        h1 { "全国客情报表 " (r.from) " 至 " (r.to) }
        (caveat(r))
        (range_bar(r, "/", "national"))
        (tiles(&r.total))
        div.charts {
            (calls_chart(r))
            (funnel_chart(&r.total))
            (cost_chart(r))
            (share_bars("各省复购率（购药≥2次患者 / 购药患者）", &by_province(|l| (l.repeat_buyers, l.buyers))))
            (share_bars("各省按时回访率（按时完成 / 应回访）", &by_province(|l| (l.followups.due_done_on_time, l.followups.due))))
        }
        h2 { "各省汇总" }
        table id="provinces" {
            thead { tr {
                th { "代码" } th { "省份" } th { "来电" } th { "来电患者" } th { "到堂患者" } th { "购药患者" }
                th { "购药率" } th { "购药笔数" } th { "金额(元)" } th { "复购率" } th { "应回访" } th { "按时回访率" } th { "逾期" }
            } }
            tbody {
                @for l in r.lines.iter().chain([&r.total]) {
                    tr id={ "line-" (l.office) } class=[(l.office == "total").then_some("total")] {
                        td.t { (l.office) }
                        td.t {
                            @if l.office == "total" { (l.name) }
                            @else { a href={ "/province/" (l.office) "?from=" (r.from) "&to=" (r.to) } { (l.name) } }
                        }
                        td.calls { (l.calls) } td { (l.callers) } td { (l.callers_visited) } td { (l.callers_bought) }
                        td { (percent(l.callers_bought, l.callers)) } td { (l.purchases) } td { (fmt_yuan(l.amount_fen)) }
                        td { (percent(l.repeat_buyers, l.buyers)) } td { (l.followups.due) }
                        td { (percent(l.followups.due_done_on_time, l.followups.due)) } td { (l.followups.overdue) }
                    }
                }
            }
        }
        // The activities, and every person's score ranked within role
        // nationally.
        @for sheet in sheets::sheets(r).iter().filter(|s| matches!(s.title, "活动" | "岗位评分")) {
            (sheet_table(sheet))
        }
        (all_sheets(r))
    };
    layout(Some(viewer), "全国", body)
}

/// 省: one office, its charts and its staff evaluation.
pub fn province(viewer: &Viewer, r: &Report) -> Markup {
    let code = match &r.scope {
        Scope::Office(o) => o.clone(),
        Scope::National => String::new(),
    };
    let name = r.lines.first().map(|l| l.name.clone()).unwrap_or_default();
    let staff: Vec<(String, u64, u64)> = r
        .staff
        .iter()
        .filter(|s| s.followups > 0)
        .map(|s| (s.staff.clone(), s.followups_on_time, s.followups))
        .collect();
    let body = html! {
        p.crumbs { a href={ "/?from=" (r.from) "&to=" (r.to) } { "全国" } " › " (name) }
        h1 { (code) " " (name) "咨询处 " (r.from) " 至 " (r.to) }
        (caveat(r))
        (range_bar(r, &format!("/province/{code}"), &code))
        (tiles(&r.total))
        div.charts {
            (calls_chart(r))
            (funnel_chart(&r.total))
            (cost_chart(r))
            @if !staff.is_empty() {
                (share_bars("回访人员按时回访（按时 / 回访次数）", &staff))
            }
        }
        @for sheet in sheets::sheets(r).iter().filter(|s| matches!(s.title, "客情岗位评定" | "岗位评分" | "活动")) {
            (sheet_table(sheet))
        }
        (all_sheets(r))
    };
    layout(Some(viewer), &name, body)
}

/// 无法读取: the documents the server could not read, which the reports
/// lack.
pub fn unreadable(viewer: &Viewer, docs: &[UnreadableDocument]) -> Markup {
    let body = html! {
        h1 { "无法读取的档案 " (docs.len()) " 份" }
        p { "服务器无法读取这些档案，报表缺少其数据（或只有其旧数据）。修复后（下一次修改，或升级后 "
            code { "keqing-server project --rebuild" } "）即可读取并计入。" }
        @if docs.is_empty() {
            p.empty { "所有档案均可读取，报表没有缺漏。" }
        } @else {
            table id="unreadable" {
                thead { tr { th { "办事处" } th { "档案" } th { "日志位置" } th { "首次" } th { "原因" } } }
                tbody {
                    @for d in docs {
                        tr { td.t { (d.office) } td.t.id { (d.doc_id) } td { (d.seq) } td.t { (d.since) } td.t { (d.reason) } }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "无法读取", body)
}

/// 重复患者: dossiers across offices that may be one patient.
pub fn duplicates(viewer: &Viewer, pairs: &[DuplicateCandidate]) -> Markup {
    let body = html! {
        h1 { "疑似重复患者 " (pairs.len()) " 对" }
        p { "在总部副本上合并（保留第一份，合并第二份）: " code { "keqing --data 总部目录 merge 保留档案 重复档案" } }
        @if pairs.is_empty() {
            p.empty { "没有疑似重复的档案。" }
        } @else {
            table {
                thead { tr { th { "原因" } th { "办事处" } th { "患者" } th { "档案" } th { "办事处" } th { "患者" } th { "档案" } } }
                tbody {
                    @for p in pairs {
                        tr {
                            td.t { (p.reason) }
                            td.t { (p.a.office) } td.t { (p.a.name) " " (p.a.age.map(|a| format!("{a}岁")).unwrap_or_default()) " " (p.a.phones.join("，")) } td.t.id { (p.a.dossier_id) }
                            td.t { (p.b.office) } td.t { (p.b.name) " " (p.b.age.map(|a| format!("{a}岁")).unwrap_or_default()) " " (p.b.phones.join("，")) } td.t.id { (p.b.dossier_id) }
                        }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "重复患者", body)
}

/// 读取审计: the offices' reads of dossiers, as their devices reported
/// them; `page` lines at most, with a link to the next ones.
pub fn reads(viewer: &Viewer, office: Option<&str>, lines: &[StoredRead], page: u32) -> Markup {
    let scope = office
        .map(|o| format!("办事处 {o}"))
        .unwrap_or_else(|| "全部办事处".into());
    let next = lines
        .last()
        .filter(|_| lines.len() as u32 >= page)
        .map(|l| match office {
            Some(o) => format!("/reads?office={o}&after={}", l.seq),
            None => format!("/reads?after={}", l.seq),
        });
    let body = html! {
        h1 { "读取审计 · " (scope) }
        p { "谁在哪台设备上打开了哪份档案、导出了什么（设备同步时上报；只增不改）。本次查看已记入审计。" }
        form.range method="get" action="/reads" {
            label for="office" { "办事处代码" }
            input type="text" id="office" name="office" value=[office] size="4";
            button type="submit" { "查看" }
        }
        @if lines.is_empty() {
            p.empty { "没有读取记录。" }
        } @else {
            table id="reads" {
                thead { tr { th { "序号" } th { "时间" } th { "办事处" } th { "设备" } th { "人员" } th { "操作" } th { "对象" } } }
                tbody {
                    @for l in lines {
                        tr {
                            td { (l.seq) } td.t { (l.read.at) } td.t { (l.read.office) } td.t { (l.read.device_name) }
                            td.t { (l.read.who) } td.t { (l.read.action) } td.t.id { (l.read.target) }
                        }
                    }
                }
            }
            @if let Some(next) = next { p { a href=(next) { "下一页" } } }
        }
    };
    layout(Some(viewer), "读取审计", body)
}

/// 目录与投放: the catalogue in force, and (administrators) the spend form.
pub fn catalog(
    viewer: &Viewer,
    catalog: Option<&keqing_shared::catalog::Catalog>,
    imported: Option<&str>,
) -> Markup {
    let body = html! {
        @if let Some(n) = imported { p.saved role="status" { "已导入投放 " (n) " 行 imported" } }
        @match catalog {
            None => {
                h1 { "目录" }
                p.empty { "还没有目录：" code { "keqing-server catalog import FILE.toml" } }
            }
            Some(c) => {
                h1 { "目录 第 " (c.version) " 版" }
                p { "各办事处同步时收到，登记时从中选择；更新：" code { "keqing-server catalog import FILE.toml" } }
                h2 { "信息来源" }
                table id="catalog-sources" {
                    thead { tr { th { "代码" } th { "名称" } th { "类别" } th { "别名" } } }
                    tbody { @for s in &c.sources { tr { td.t { (s.code) } td.t { (s.name) } td.t { (s.kind) } td.t { (s.aliases.join("，")) } } } }
                }
                h2 { "产品" }
                table id="catalog-products" {
                    thead { tr { th { "代码" } th { "名称" } th { "单价(元)" } th { "每盒天数" } } }
                    tbody { @for p in &c.products { tr { td.t { (p.code) } td.t { (p.name) } td { (fmt_yuan(p.unit_price_fen)) } td { (p.days_per_unit) } } } }
                }
                h2 { "疾病" }
                p { (c.diseases.join("，")) }
                h2 { "活动" }
                @if c.activities.is_empty() { p.empty { "无（各办事处可自行设立：keqing activity add）" } }
                @else {
                    table id="catalog-activities" {
                        thead { tr { th { "编号" } th { "名称" } th { "类别" } th { "开始" } th { "结束" } th { "办事处" } th { "信息来源" } } }
                        tbody { @for a in &c.activities { tr {
                            td.t { (a.id) } td.t { (a.name) } td.t { (a.kind.chinese()) } td.t { (a.starts) } td.t { (a.ends) }
                            td.t { @if a.offices.is_empty() { "全部" } @else { (a.offices.join(",")) } }
                            td.t { (a.source.as_deref().unwrap_or("")) }
                        } } }
                    }
                }
                h2 { "岗位评定权重" }
                table id="catalog-weights" {
                    thead { tr { th { "项目" } th { "key" } th { "每项分值" } } }
                    tbody { @for ((key, label), w) in keqing_shared::score::ITEMS.iter().zip(c.weights.0) {
                        tr { td.t { (label) } td.t { (key) } td { (w) } }
                    } }
                }
                @if viewer.role.sees_personal_details() {
                    h2 { "导入投放" }
                    p { "每行：日期,办事处代码,信息来源代码,金额(元)；同一天、办事处、来源再次导入时替换。" }
                    form method="post" action="/spend" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        textarea name="csv" id="spend-csv" rows="8" cols="60" required
                            placeholder="2026-11-20,44,tv-gd,1200.00" {}
                        button type="submit" id="spend-import" { "导入" }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "目录与投放", body)
}

/// 转档与删除: the transfer form, the erasure request form, the erasures
/// asked for (with their confirm buttons) and those made.
pub fn lifecycle(
    viewer: &Viewer,
    erased: &[crate::store::Fate],
    asked: &[crate::store::ErasureRequest],
    can_confirm: bool,
    done: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "转档与删除" }
        @if let Some(d) = done { p.done role="status" id="lifecycle-done" { (d) } }
        h2 { "转档（患者迁居其他省份）" }
        p { "档案转到新的咨询处：新咨询处的设备下次同步时收到全部档案；原咨询处的设备把已录入的内容送达后移除档案。以往记录仍计入原咨询处的报表。" }
        form method="post" action="/transfer" id="transfer-form" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label { "档案编号 " input type="text" name="dossier" required; }
            label { "转到 " select name="to" required {
                @for o in keqing_shared::office::OFFICES.iter() { option value=(o.code) { (o.name) " (" (o.code) ")" } }
            } }
            label { "原因 " input type="text" name="reason" required maxlength="200"; }
            button type="submit" id="transfer-submit" { "转档" }
        }
        h2 { "删除档案（患者申请删除个人信息）" }
        p { "两步：先提交删除申请（显示将删除的档案，姓名与电话已遮盖），再确认删除。删除后服务器与各设备都不再保存该患者的任何内容；已出报表的数字保留（不含身份）。删除前的备份仍含该档案：恢复备份时须用删除记录（erasures.jsonl）重新删除。" }
        form method="post" action="/erase" id="erase-form" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label { "档案编号 " input type="text" name="dossier" required; }
            label { "原因 " input type="text" name="reason" required maxlength="200"; }
            button type="submit" id="erase-request" { "提交删除申请" }
        }
        h2 { "待确认的删除申请" }
        @if asked.is_empty() { p.empty { "无" } }
        @else {
            table id="erase-requests" {
                thead { tr { th { "档案" } th { "原因" } th { "申请人" } th { "时间" } th {} } }
                tbody { @for r in asked { tr {
                    td.t { (r.doc_id) } td.t { (r.reason) } td.t { (r.by) } td.t { (r.at) }
                    td { @if can_confirm { (confirm_button(viewer, &r.doc_id)) } }
                } } }
            }
        }
        h2 { "已删除" }
        @if erased.is_empty() { p.empty { "无" } }
        @else {
            table id="erased" {
                thead { tr { th { "档案" } th { "办事处" } th { "删除时间" } th { "原因" } th { "操作人" } } }
                tbody { @for t in erased { tr {
                    td.t { (t.doc_id) } td.t { (t.from_office) } td.t { (t.at) } td.t { (t.reason) } td.t { (t.by) }
                } } }
            }
        }
    };
    layout(Some(viewer), "转档与删除", body)
}

fn confirm_button(viewer: &Viewer, dossier: &str) -> Markup {
    html! {
        form method="post" action="/erase/confirm" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="dossier" value=(dossier);
            button type="submit" class="danger" { "确认删除" }
        }
    }
}

/// What step two of an erasure will erase, masked, with its confirm button.
pub fn erase_preview(
    viewer: &Viewer,
    p: &crate::lifecycle::ErasurePreview,
    can_confirm: bool,
) -> Markup {
    let body = html! {
        h1 { "删除申请已记录" }
        table id="erase-preview" {
            tbody {
                tr { th { "档案" } td.t { (p.dossier) } }
                tr { th { "办事处" } td.t { (p.office) } }
                tr { th { "建档时间" } td.t { (p.created_at) } }
                tr { th { "姓名" } td.t { (p.name) } }
                tr { th { "电话" } td.t { (p.phones.join(" ")) } }
                tr { th { "记录数" } td { (p.records) } }
                @if !p.duplicates.is_empty() {
                    tr { th { "合并的重复档案（一并删除）" } td.t { (p.duplicates.join(" ")) } }
                }
                tr { th { "原因" } td.t { (p.reason) } }
            }
        }
        @if can_confirm {
            p { "确认后不可恢复。" }
            (confirm_button(viewer, &p.dossier))
        } @else {
            p { "请在服务器上确认：keqing-server erase --dossier " (p.dossier) " --confirm" }
        }
        p { a href="/lifecycle" { "返回" } }
    };
    layout(Some(viewer), "删除申请", body)
}

/// 设备状况: each office's devices with their version, backlog and last
/// push, pull and sync; silent offices and old versions marked.
pub fn devices(viewer: &Viewer, r: &crate::fleet::FleetReport) -> Markup {
    let silent = r.offices.iter().filter(|o| o.silent).count();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let count = |v: Option<u64>| v.map_or_else(|| "—".into(), |n| n.to_string());
    let body = html! {
        h1 { "设备状况" }
        p {
            (r.at) " · 服务器版本 " (r.server_version) " · " (r.offices.len()) " 个办事处有设备，"
            strong { (silent) } " 个超过 " (r.silent_days) " 天未同步"
        }
        table id="fleet" {
            thead { tr {
                th { "办事处" } th { "设备" } th { "版本" } th { "待推送" } th { "搁置" }
                th { "最近推送" } th { "最近拉取" } th { "最近同步" } th { "标记" }
            } }
            tbody {
                @for o in &r.offices {
                    @for (i, d) in o.devices.iter().enumerate() {
                        tr class=[o.silent.then_some("silent")] data-office=(o.office) {
                            td.t { @if i == 0 { (o.name) " (" (o.office) ")" } }
                            td.t { (d.name) }
                            td.t { (dash(&d.version)) }
                            td { (count(d.outbox)) }
                            td { (count(d.quarantined)) }
                            td.t { (dash(&d.last_push)) }
                            td.t { (dash(&d.last_pull)) }
                            td.t { (dash(&d.last_sync)) }
                            td.t {
                                @if i == 0 && o.silent { span.mark-silent { "未同步超过 " (r.silent_days) " 天" } " " }
                                @if d.old_version { span.mark-old { "旧版本" } " " }
                                @if d.revoked { "已吊销" }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "设备状况", body)
}
