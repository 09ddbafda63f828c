//! HTML pieces both web front ends share: a report section as a table (the
//! same cells as the CSV and the workbook), charts drawn as inline SVG on
//! the server, and the host check of a local web app. Pure: values in,
//! markup out.

use crate::sheets::{Cell, Sheet};
use maud::{Markup, html};
use std::net::SocketAddr;

/// One section of a report as a table.
pub fn sheet_table(sheet: &Sheet) -> Markup {
    html! {
        section.sheet {
            h2 { (sheet.title) }
            @if sheet.rows.is_empty() {
                p.empty { "无" }
            } @else {
                table {
                    thead { tr { @for h in &sheet.headers { th { (h) } } } }
                    tbody {
                        @for row in &sheet.rows {
                            tr { @for c in row { td class=[matches!(c, Cell::Text(_)).then_some("t")] { (c.text()) } } }
                        }
                    }
                }
            }
        }
    }
}

/// Host names a local web app answers to: loopback names and the address
/// it listens on (unless that is the unspecified address).
pub fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "[::1]".to_string(),
    ];
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    if !addr.ip().is_unspecified() && !hosts.contains(&ip) {
        hosts.push(ip);
    }
    hosts
}

/// Whether a `Host` header names one of `allowed` (any port). A page on
/// another site that rebinds its DNS name to this machine sends its own
/// name, and is refused.
pub fn host_allowed(host_header: &str, allowed: &[String]) -> bool {
    let name = match host_header.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host_header,
    };
    allowed.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Colours of chart series, told apart also in greyscale print.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A named series of counts, one per category.
pub struct Series {
    pub label: String,
    pub values: Vec<u64>,
}

/// Stacked columns: one column per category (a day), one colour per series
/// (an information source), the column's total above it.
pub fn stacked_columns(title: &str, categories: &[String], series: &[Series]) -> Markup {
    let (w, h, left, bottom, top) = (760.0, 280.0, 40.0, 40.0, 20.0);
    let totals: Vec<u64> = (0..categories.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let plot_h = h - bottom - top;
    let slot = (w - left - 10.0) / categories.len().max(1) as f64;
    let bar = (slot * 0.7).min(60.0);
    // Each column's segments, bottom up.
    let columns: Vec<Vec<(f64, f64, &str, String)>> = categories
        .iter()
        .enumerate()
        .map(|(i, cat)| {
            let mut y = h - bottom;
            series
                .iter()
                .enumerate()
                .filter_map(|(k, s)| {
                    let v = s.values.get(i).copied().unwrap_or(0);
                    (v > 0).then(|| {
                        let bh = v as f64 / max * plot_h;
                        y -= bh;
                        (
                            y,
                            bh,
                            PALETTE[k % PALETTE.len()],
                            format!("{cat} {}: {v}", s.label),
                        )
                    })
                })
                .collect()
        })
        .collect();
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (w) " " (h) } role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                line x1=(left) y1=(h - bottom) x2=(w - 10.0) y2=(h - bottom) stroke="#888" {}
                @for (i, cat) in categories.iter().enumerate() {
                    @let x = left + slot * i as f64 + (slot - bar) / 2.0;
                    @for (y, bh, colour, tip) in &columns[i] {
                        rect x=(fmt(x)) y=(fmt(*y)) width=(fmt(bar)) height=(fmt(*bh)) fill=(colour) {
                            title { (tip) }
                        }
                    }
                    text.total x=(fmt(x + bar / 2.0)) y=(fmt(h - bottom - totals[i] as f64 / max * plot_h - 4.0)) text-anchor="middle" font-size="12" { (totals[i]) }
                    text x=(fmt(x + bar / 2.0)) y=(fmt(h - bottom + 16.0)) text-anchor="middle" font-size="11" { (short_day(cat)) }
                }
            }
            ul.legend {
                @for (k, s) in series.iter().enumerate() {
                    li {
                        // A drawn square, not a style attribute: the pages'
                        // content security policy allows no inline styles.
                        svg.swatch viewBox="0 0 10 10" aria-hidden="true" { rect width="10" height="10" fill=(PALETTE[k % PALETTE.len()]) {} }
                        (s.label) " " (s.values.iter().sum::<u64>())
                    }
                }
            }
        }
    }
}

/// The conversion funnel: each step's count and its share of the first.
pub fn funnel(title: &str, steps: &[(&str, u64)]) -> Markup {
    let first = steps.first().map(|s| s.1).unwrap_or(0);
    let max = steps.iter().map(|s| s.1).max().unwrap_or(0).max(1) as f64;
    let (w, row) = (760.0, 34.0);
    let h = row * steps.len() as f64 + 10.0;
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (w) " " (fmt(h)) } role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                @for (i, (label, n)) in steps.iter().enumerate() {
                    @let bw = *n as f64 / max * (w - 300.0);
                    @let y = 5.0 + row * i as f64;
                    text x="0" y=(fmt(y + 20.0)) font-size="13" { (label) }
                    rect x="110" y=(fmt(y)) width=(fmt(bw.max(1.0))) height=(fmt(row - 8.0)) fill=(PALETTE[i % PALETTE.len()]) {}
                    text x=(fmt(116.0 + bw)) y=(fmt(y + 20.0)) font-size="13" {
                        (n) @if i > 0 { " (" (percent(*n, first)) ")" }
                    }
                }
            }
        }
    }
}

/// Horizontal bars of shares (part / whole) by row, e.g. by province.
pub fn share_bars(title: &str, rows: &[(String, u64, u64)]) -> Markup {
    let (w, row) = (760.0, 20.0);
    let h = row * rows.len() as f64 + 10.0;
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (w) " " (fmt(h)) } role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                @for (i, (label, part, whole)) in rows.iter().enumerate() {
                    @let y = 5.0 + row * i as f64;
                    @let share = if *whole > 0 { *part as f64 / *whole as f64 } else { 0.0 };
                    text x="0" y=(fmt(y + 14.0)) font-size="12" { (label) }
                    rect x="90" y=(fmt(y + 2.0)) width=(fmt(w - 300.0)) height=(fmt(row - 6.0)) fill="#eef1f5" {}
                    rect x="90" y=(fmt(y + 2.0)) width=(fmt(share * (w - 300.0))) height=(fmt(row - 6.0)) fill="#2f5688" {}
                    text x=(fmt(w - 200.0)) y=(fmt(y + 14.0)) font-size="12" {
                        (percent(*part, *whole)) "  " (part) "/" (whole)
                    }
                }
            }
        }
    }
}

/// Horizontal bars of amounts in fen by row (e.g. cost per buyer by
/// channel), shown in yuan; a row without an amount says "—" (no buyers,
/// or no spend).
pub fn yuan_bars(title: &str, rows: &[(String, Option<i64>)]) -> Markup {
    let (w, row) = (760.0, 20.0);
    let h = row * rows.len() as f64 + 10.0;
    let max = rows.iter().filter_map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (w) " " (fmt(h)) } role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                @for (i, (label, fen)) in rows.iter().enumerate() {
                    @let y = 5.0 + row * i as f64;
                    text x="0" y=(fmt(y + 14.0)) font-size="12" { (label) }
                    @if let Some(fen) = fen {
                        @let bw = *fen as f64 / max * (w - 300.0);
                        rect x="90" y=(fmt(y + 2.0)) width=(fmt(bw.max(1.0))) height=(fmt(row - 6.0)) fill=(PALETTE[i % PALETTE.len()]) {}
                        text x=(fmt(96.0 + bw)) y=(fmt(y + 14.0)) font-size="12" { (crate::records::fmt_yuan(*fen)) " 元" }
                    } @else {
                        text x="96" y=(fmt(y + 14.0)) font-size="12" { "—" }
                    }
                }
            }
        }
    }
}

/// `part / whole` as a percentage with one decimal, "-" when whole is 0:
/// the same rendering as the report tables.
pub fn percent(part: u64, whole: u64) -> String {
    Cell::Share((whole > 0).then(|| part as f64 / whole as f64)).text()
}

fn fmt(x: f64) -> String {
    format!("{x:.1}")
}

/// `2026-11-20` → `11-20` under a column.
fn short_day(d: &str) -> &str {
    d.get(5..).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_by_name_whatever_the_port() {
        let allowed = allowed_hosts("127.0.0.1:8080".parse().unwrap());
        assert!(host_allowed("127.0.0.1:8080", &allowed));
        assert!(host_allowed("localhost:9999", &allowed));
        assert!(host_allowed("[::1]:8080", &allowed));
        assert!(!host_allowed("evil.example:8080", &allowed));
        assert!(!host_allowed("", &allowed));
        let lan = allowed_hosts("192.168.1.5:8080".parse().unwrap());
        assert!(host_allowed("192.168.1.5:8080", &lan));
        let any = allowed_hosts("0.0.0.0:8080".parse().unwrap());
        assert!(!host_allowed("0.0.0.0:8080", &any));
    }

    #[test]
    fn charts_show_the_figures_they_draw() {
        let days = vec!["2026-11-20".to_string(), "2026-11-21".to_string()];
        let series = vec![
            Series {
                label: "电视".into(),
                values: vec![3, 0],
            },
            Series {
                label: "报纸".into(),
                values: vec![1, 2],
            },
        ];
        let svg = stacked_columns("来电", &days, &series).into_string();
        assert!(svg.contains(">4</text>"), "day total 4: {svg}");
        assert!(svg.contains(">2</text>"), "day total 2");
        assert!(svg.contains("电视 3"), "legend total");
        let f = funnel("转化", &[("来电患者", 10), ("到堂", 4), ("购药", 1)]).into_string();
        assert!(f.contains("4 (40.0%)") && f.contains("1 (10.0%)"), "{f}");
        let s = share_bars("复购", &[("广东".into(), 1, 4), ("北京".into(), 0, 0)]).into_string();
        assert!(s.contains("25.0%  1/4") && s.contains("-  0/0"), "{s}");
    }

    #[test]
    fn chart_labels_are_escaped() {
        let svg = funnel("<script>", &[("<b>", 1)]).into_string();
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
    }
}
