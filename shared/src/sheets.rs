//! A [`Report`] as sheets with Chinese headings, and their three renderings:
//! terminal text, CSV (UTF-8 with a BOM, so Excel reads the Chinese) and a
//! real .xlsx workbook with one sheet per section. Everything here returns
//! bytes or strings; writing them somewhere is the caller's business.

use crate::DomainError;
use crate::lists::Category;
use crate::report::{Line, Report, Scope};
use crate::table::Table;

/// A cell: numbers stay numbers in the workbook.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// Amount in fen, shown in yuan.
    Yuan(i64),
    /// A share; `None` when its base is zero.
    Share(Option<f64>),
    /// A score, shown to the hundredth.
    Number(f64),
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Yuan(f) => format!("{}.{:02}", f / 100, (f % 100).abs()),
            Cell::Share(Some(x)) => format!("{:.1}%", x * 100.0),
            Cell::Share(None) => "-".into(),
            Cell::Number(x) => format!("{x:.2}"),
        }
    }
}

/// One section of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Sheet {
    pub title: &'static str,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

fn heads(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

fn int(n: u64) -> Cell {
    Cell::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn share(part: u64, whole: u64) -> Cell {
    Cell::Share((whole > 0).then(|| part as f64 / whole as f64))
}

/// The report's title line, e.g. `客情报表 全国 2026-11-20 至 2026-11-26`.
pub fn title(r: &Report) -> String {
    let scope = match &r.scope {
        Scope::National => "全国".to_string(),
        Scope::Office(o) => crate::office::office(o)
            .map(|x| format!("{} {}", x.code, x.name))
            .unwrap_or_else(|_| o.clone()),
    };
    let days = if r.from == r.to {
        r.from.clone()
    } else {
        format!("{} 至 {}", r.from, r.to)
    };
    format!("客情报表 {scope} {days}")
}

/// The line under the title when the figures lack documents the server
/// could not read: a report must not look complete when it is not.
pub fn caveat(r: &Report) -> Option<String> {
    (r.unreadable > 0).then(|| {
        format!(
            "注意: {} 份档案服务器无法读取，本报表缺少其数据 (the figures lack {} unreadable documents; `keqing-server unreadable` lists them)",
            r.unreadable, r.unreadable
        )
    })
}

/// The summary lines shown: every province and the total nationally, the
/// one office line otherwise.
fn summary_lines(r: &Report) -> Vec<&Line> {
    match r.scope {
        Scope::National => r.lines.iter().chain([&r.total]).collect(),
        Scope::Office(_) => r.lines.iter().collect(),
    }
}

/// The sections of a report, in reading order.
pub fn sheets(r: &Report) -> Vec<Sheet> {
    let lines = summary_lines(r);
    let conversion = Sheet {
        title: "咨询与转化",
        headers: heads(&[
            "代码",
            "省份",
            "来电",
            "来电患者",
            "到堂患者",
            "购药患者",
            "到堂率",
            "购药率",
            "到堂人次",
            "当场购药",
            "购药笔数",
            "金额(元)",
        ]),
        rows: lines
            .iter()
            .map(|l| {
                vec![
                    Cell::Text(l.office.clone()),
                    Cell::Text(l.name.clone()),
                    int(l.calls),
                    int(l.callers),
                    int(l.callers_visited),
                    int(l.callers_bought),
                    share(l.callers_visited, l.callers),
                    share(l.callers_bought, l.callers),
                    int(l.visits),
                    int(l.visits_bought),
                    int(l.purchases),
                    Cell::Yuan(l.amount_fen),
                ]
            })
            .collect(),
    };
    let care = Sheet {
        title: "复购与回访",
        headers: heads(&[
            "代码",
            "省份",
            "购药患者",
            "新购",
            "复购",
            "复购率",
            "续购",
            "按时续购",
            "回访",
            "应访",
            "按时",
            "按时率",
            "逾期",
            "未到堂三日内",
            "典型病例",
            "新增典型",
            "问题新增",
            "问题未结",
            "问题已结",
        ]),
        rows: lines
            .iter()
            .map(|l| {
                let f = &l.followups;
                vec![
                    Cell::Text(l.office.clone()),
                    Cell::Text(l.name.clone()),
                    int(l.buyers),
                    int(l.new_buyers),
                    int(l.repeat_buyers),
                    share(l.repeat_buyers, l.buyers),
                    int(l.refills),
                    int(l.refills_on_time),
                    int(f.done),
                    int(f.due),
                    int(f.due_done_on_time),
                    share(f.due_done_on_time, f.due),
                    int(f.overdue),
                    share(f.not_visited_on_time, f.not_visited_due),
                    int(l.typical),
                    int(l.typical_new),
                    int(l.problems_opened),
                    int(l.problems_open),
                    int(l.problems_resolved),
                ]
            })
            .collect(),
    };
    let sources = Sheet {
        title: "信息来源",
        headers: heads(&[
            "信息来源",
            "类别",
            "来电",
            "来电患者",
            "到堂患者",
            "购药患者",
            "到堂率",
            "购药率",
            "投放(元)",
            "销售额(元)",
            "每来电成本",
            "每到堂成本",
            "每购药患者成本",
            "每元投放销售额",
        ]),
        rows: r
            .by_source
            .iter()
            .map(|s| {
                let cost =
                    |fen: Option<i64>| fen.map_or_else(|| Cell::Text("—".into()), Cell::Yuan);
                vec![
                    Cell::Text(s.source.clone()),
                    Cell::Text(s.kind.clone()),
                    int(s.calls),
                    int(s.callers),
                    int(s.visited),
                    int(s.bought),
                    share(s.visited, s.callers),
                    share(s.bought, s.callers),
                    Cell::Yuan(s.spend_fen),
                    Cell::Yuan(s.sales_fen),
                    cost(s.cost_per_call_fen),
                    cost(s.cost_per_visitor_fen),
                    cost(s.cost_per_buyer_fen),
                    Cell::Text(
                        s.sales_per_yuan
                            .map_or_else(|| "—".into(), |x| format!("{x:.2}")),
                    ),
                ]
            })
            .collect(),
    };
    let source_texts = Sheet {
        title: "信息来源对照",
        headers: heads(&["登记的来源", "计入", "来电"]),
        rows: r
            .source_texts
            .iter()
            .map(|t| {
                vec![
                    Cell::Text(t.typed.clone()),
                    Cell::Text(t.counted_as.clone()),
                    int(t.calls),
                ]
            })
            .collect(),
    };
    let diseases = Sheet {
        title: "病种",
        headers: heads(&["疾病", "来电"]),
        rows: r
            .by_disease
            .iter()
            .map(|c| vec![Cell::Text(c.label.clone()), int(c.count)])
            .collect(),
    };
    let days = Sheet {
        title: "每日",
        headers: heads(&["日期", "来电", "到堂", "购药", "回访"]),
        rows: r
            .by_day
            .iter()
            .map(|d| {
                vec![
                    Cell::Text(d.date.clone()),
                    int(d.calls),
                    int(d.visits),
                    int(d.purchases),
                    int(d.followups),
                ]
            })
            .collect(),
    };
    let staff = Sheet {
        title: "客情岗位评定",
        headers: heads(&[
            "办事处",
            "员工",
            "岗位",
            "来电",
            "来电患者",
            "到堂患者",
            "购药患者",
            "转化率",
            "到堂接待",
            "售药",
            "回访",
            "按时回访",
            "购药患者(售)",
            "复购患者",
            "复购率",
            "家访",
            "外送",
            "典型病例",
            "问题解决",
        ]),
        rows: r
            .staff
            .iter()
            .map(|s| {
                vec![
                    Cell::Text(s.office.clone()),
                    Cell::Text(s.staff.clone()),
                    Cell::Text(s.role.clone()),
                    int(s.calls),
                    int(s.callers),
                    int(s.callers_visited),
                    int(s.callers_bought),
                    share(s.callers_bought, s.callers),
                    int(s.visits),
                    int(s.purchases),
                    int(s.followups),
                    int(s.followups_on_time),
                    int(s.buyers),
                    int(s.repeat_buyers),
                    share(s.repeat_buyers, s.buyers),
                    int(s.home_visits),
                    int(s.deliveries),
                    int(s.typical_cases),
                    int(s.problems_resolved),
                ]
            })
            .collect(),
    };
    let scores = Sheet {
        title: "岗位评分",
        headers: heads(&[
            "代码",
            "省份",
            "员工",
            "岗位",
            "得分",
            "本处排名",
            if matches!(r.scope, Scope::National) {
                "全国排名"
            } else {
                "本报表排名"
            },
        ]),
        rows: r
            .staff_scores
            .iter()
            .map(|s| {
                vec![
                    Cell::Text(s.office.clone()),
                    Cell::Text(s.name.clone()),
                    Cell::Text(s.staff.clone()),
                    Cell::Text(s.role.clone()),
                    Cell::Number(s.score),
                    int(u64::from(s.rank_office)),
                    int(u64::from(s.rank_national)),
                ]
            })
            .collect(),
    };
    let activities = Sheet {
        title: "活动",
        headers: heads(&[
            "编号",
            "名称",
            "类别",
            "发起",
            "开始",
            "结束",
            "参与患者",
            "新患者",
            "到堂患者",
            "购药患者",
            "销售额(元)",
            "投放(元)",
            "每购药患者成本",
        ]),
        rows: r
            .activities
            .iter()
            .map(|a| {
                vec![
                    Cell::Text(a.id.clone()),
                    Cell::Text(a.name.clone()),
                    Cell::Text(a.kind.clone()),
                    Cell::Text(a.defined_by.clone()),
                    Cell::Text(a.starts.clone()),
                    Cell::Text(a.ends.clone()),
                    int(a.participants),
                    int(a.new_patients),
                    int(a.visitors),
                    int(a.buyers),
                    Cell::Yuan(a.sales_fen),
                    Cell::Yuan(a.spend_fen),
                    a.cost_per_buyer_fen
                        .map_or_else(|| Cell::Text("—".into()), Cell::Yuan),
                ]
            })
            .collect(),
    };
    let breakdown_rows = |list: &[crate::report::Breakdown]| -> Vec<Vec<Cell>> {
        list.iter()
            .filter(|b| matches!(r.scope, Scope::National) || b.office != "total")
            .map(|b| {
                let mut row = vec![Cell::Text(b.office.clone()), Cell::Text(b.name.clone())];
                row.extend(b.counts.iter().map(|c| int(c.count)));
                row
            })
            .collect()
    };
    // The labels of a breakdown list (the catalogue's, for reasons and
    // kinds): those of its first line, every line having them all.
    let labels_of = |list: &[crate::report::Breakdown]| -> Vec<String> {
        list.first()
            .map(|b| b.counts.iter().map(|c| c.label.clone()).collect())
            .unwrap_or_default()
    };
    let with_place = |labels: Vec<String>| -> Vec<String> {
        let mut h = heads(&["代码", "省份"]);
        h.extend(labels);
        h
    };
    let nonpatient = Sheet {
        title: "非正常咨询",
        headers: with_place(labels_of(&r.nonpatient_calls)),
        rows: breakdown_rows(&r.nonpatient_calls),
    };
    let not_bought = Sheet {
        title: "未购原因",
        headers: with_place(labels_of(&r.not_bought_reasons)),
        rows: breakdown_rows(&r.not_bought_reasons),
    };
    let categories = Sheet {
        title: "客户分类",
        headers: with_place(
            Category::ALL
                .iter()
                .map(|c| c.chinese().to_string())
                .chain(["典型".to_string(), "问题".to_string()])
                .collect(),
        ),
        rows: breakdown_rows(&r.categories),
    };
    let other_texts = Sheet {
        title: "其他原因与类别",
        headers: heads(&["清单", "填写内容", "次数"]),
        rows: r
            .other_texts
            .iter()
            .map(|t| {
                vec![
                    Cell::Text(t.list.clone()),
                    Cell::Text(t.typed.clone()),
                    int(t.count),
                ]
            })
            .collect(),
    };
    let staff_not_bought = Sheet {
        title: "员工未购原因",
        headers: {
            let mut h = heads(&["代码", "员工"]);
            h.extend(labels_of(&r.not_bought_reasons));
            h
        },
        rows: r
            .staff
            .iter()
            .filter(|s| s.not_bought_reasons.iter().any(|c| c.count > 0))
            .map(|s| {
                let mut row = vec![Cell::Text(s.office.clone()), Cell::Text(s.staff.clone())];
                row.extend(s.not_bought_reasons.iter().map(|c| int(c.count)));
                row
            })
            .collect(),
    };
    vec![
        conversion,
        care,
        sources,
        source_texts,
        diseases,
        days,
        staff,
        scores,
        activities,
        nonpatient,
        not_bought,
        staff_not_bought,
        other_texts,
        categories,
    ]
}

/// The report as terminal text: the title, then each section as a table.
pub fn text(r: &Report) -> String {
    text_of(r, |_| true)
}

/// The title and the sections whose title `keep` accepts.
pub fn text_of(r: &Report, keep: impl Fn(&str) -> bool) -> String {
    let mut out = title(r);
    out.push('\n');
    if let Some(caveat) = caveat(r) {
        out.push_str(&caveat);
        out.push('\n');
    }
    for sheet in sheets(r).into_iter().filter(|s| keep(s.title)) {
        out.push('\n');
        out.push_str(&format!("【{}】\n", sheet.title));
        if sheet.rows.is_empty() {
            out.push_str("无\n");
            continue;
        }
        let mut t = Table::new(sheet.headers.iter().cloned());
        for row in &sheet.rows {
            t.row(row.iter().map(Cell::text));
        }
        out.push_str(&t.render());
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as one CSV file: a BOM, the title, then each section as a
/// title row, a header row and its rows, sections separated by a blank line.
pub fn csv(r: &Report) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    out.push_str(&csv_field(&title(r)));
    out.push_str("\r\n");
    if let Some(caveat) = caveat(r) {
        out.push_str(&csv_field(&caveat));
        out.push_str("\r\n");
    }
    for sheet in sheets(r) {
        out.push_str("\r\n");
        out.push_str(&csv_field(sheet.title));
        out.push_str("\r\n");
        let header: Vec<String> = sheet.headers.iter().map(|h| csv_field(h)).collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for row in &sheet.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| match c {
                    // Text typed by people (staff names, sources, diseases)
                    // must not run as a spreadsheet formula when opened
                    // (OWASP's list: a formula may also start after a tab
                    // or a line break).
                    Cell::Text(t) if t.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) => {
                        csv_field(&format!("'{t}"))
                    }
                    other => csv_field(&other.text()),
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
    }
    out.into_bytes()
}

/// The report as an .xlsx workbook: one sheet per section, numbers as
/// numbers (shares formatted as percentages, amounts in yuan).
pub fn xlsx(r: &Report) -> Result<Vec<u8>, DomainError> {
    use rust_xlsxwriter::{Format, Workbook};
    let err = |e: rust_xlsxwriter::XlsxError| DomainError::Export(format!("xlsx: {e}"));
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let percent = Format::new().set_num_format("0.0%");
    let yuan = Format::new().set_num_format("#,##0.00");
    for sheet in sheets(r) {
        let ws = book.add_worksheet();
        ws.set_name(sheet.title).map_err(err)?;
        ws.write_string_with_format(0, 0, title(r), &bold)
            .map_err(err)?;
        if let Some(caveat) = caveat(r) {
            ws.write_string(1, 0, caveat).map_err(err)?;
        }
        for (c, h) in sheet.headers.iter().enumerate() {
            ws.write_string_with_format(2, c as u16, h, &bold)
                .map_err(err)?;
        }
        for (i, row) in sheet.rows.iter().enumerate() {
            let y = 3 + i as u32;
            for (c, cell) in row.iter().enumerate() {
                let x = c as u16;
                match cell {
                    Cell::Text(s) => ws.write_string(y, x, s).map(|_| ()),
                    Cell::Int(n) => ws.write_number(y, x, *n as f64).map(|_| ()),
                    Cell::Yuan(f) => ws
                        .write_number_with_format(y, x, *f as f64 / 100.0, &yuan)
                        .map(|_| ()),
                    Cell::Share(Some(s)) => {
                        ws.write_number_with_format(y, x, *s, &percent).map(|_| ())
                    }
                    Cell::Share(None) => ws.write_string(y, x, "-").map(|_| ()),
                    Cell::Number(n) => ws.write_number(y, x, *n).map(|_| ()),
                }
                .map_err(err)?;
            }
        }
    }
    book.save_to_buffer().map_err(err)
}

/// The export formats of a report file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Xlsx,
    Json,
}

impl FileFormat {
    pub fn parse(s: &str) -> Result<FileFormat, DomainError> {
        match s {
            "csv" => Ok(FileFormat::Csv),
            "xlsx" => Ok(FileFormat::Xlsx),
            "json" => Ok(FileFormat::Json),
            other => Err(DomainError::invalid(
                "format",
                format!("`{other}`: expected csv, xlsx or json"),
            )),
        }
    }
}

/// The report as the bytes of a file in `format`.
pub fn file(r: &Report, format: FileFormat) -> Result<Vec<u8>, DomainError> {
    match format {
        FileFormat::Csv => Ok(csv(r)),
        FileFormat::Xlsx => xlsx(r),
        FileFormat::Json => {
            serde_json::to_vec_pretty(r).map_err(|e| DomainError::Export(format!("json: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportRows, build};
    use chrono::NaiveDate;

    fn report() -> Report {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        build(&Scope::National, d, d, &ReportRows::default())
    }

    #[test]
    fn national_text_has_every_province_and_the_total() {
        let t = text(&report());
        assert!(t.starts_with("客情报表 全国 2026-11-20\n"), "{t}");
        for name in ["北京", "广东", "甘肃", "合计"] {
            assert!(t.contains(name), "{name}");
        }
        assert!(t.contains("【客情岗位评定】\n无"));
        assert!(!t.contains("注意"), "a complete report has no caveat: {t}");
    }

    #[test]
    fn a_report_lacking_documents_says_so_under_its_title() {
        let mut r = report();
        r.unreadable = 3;
        let t = text(&r);
        let second = t.lines().nth(1).unwrap();
        assert!(second.starts_with("注意: 3 份档案服务器无法读取，"), "{t}");
        let csv = String::from_utf8(csv(&r)).unwrap();
        assert_eq!(csv.lines().nth(1), Some(second), "{csv}");
    }

    #[test]
    fn csv_starts_with_a_bom_and_quotes_commas() {
        let bytes = csv(&report());
        assert!(bytes.starts_with("\u{feff}".as_bytes()));
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.contains("\r\n咨询与转化\r\n代码,省份,来电,"));
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        // A formula typed as a staff name stays text in Excel.
        let mut r = report();
        r.staff.push(crate::report::StaffLine {
            office: "44".into(),
            staff: "=HYPERLINK(1)".into(),
            ..Default::default()
        });
        let s = String::from_utf8(csv(&r)).unwrap();
        assert!(s.contains("\r\n44,'=HYPERLINK(1),"), "{s}");
        for lead in ["\t", "\r", "\n", "+", "-", "@"] {
            let mut r = report();
            r.staff.push(crate::report::StaffLine {
                office: "44".into(),
                staff: format!("{lead}=cmd|' /C calc'!A0"),
                ..Default::default()
            });
            let s = String::from_utf8(csv(&r)).unwrap();
            assert!(
                s.contains(&format!("\"'{lead}=cmd|")) || s.contains(&format!(",'{lead}=cmd|")),
                "{lead:?}: {s}"
            );
        }
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let bytes = xlsx(&report()).unwrap();
        // An .xlsx file is a zip archive.
        assert_eq!(&bytes[..2], b"PK");
        assert!(bytes.len() > 2000);
    }

    #[test]
    fn cells_render() {
        assert_eq!(Cell::Yuan(128050).text(), "1280.50");
        assert_eq!(Cell::Yuan(5).text(), "0.05");
        assert_eq!(share(1, 3).text(), "33.3%");
        assert_eq!(share(1, 0).text(), "-");
    }
}
