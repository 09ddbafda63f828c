//! 总部目录: the catalogue headquarters writes and every office reads:
//! information sources (信息来源, each with its channel kind and the other
//! names offices type for it), products (price, days of medicine per unit)
//! and diseases. Offices pick from it offline; reports count calls under
//! the catalogue's sources, typed texts mapped by name or alias, the rest
//! under 其他 with the texts listed so the catalogue can grow.
//!
//! It travels as one automerge document per office (`catalog-44`), written
//! only by `keqing-server catalog import` (the server refuses a push that
//! touches one): each office's devices pull their office's copy with their
//! normal sync, and headquarters' devices pull them all. The content is the
//! whole catalogue as one JSON value per version, set by a single writer,
//! so there is nothing to merge.

use crate::DomainError;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Automerge, ROOT, ReadDoc, ScalarValue, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The channel kinds a source belongs to (媒体类别).
pub const CHANNEL_KINDS: [&str; 8] = [
    "电视",
    "广播",
    "报纸",
    "网络",
    "讲座义诊",
    "朋友介绍",
    "药店",
    "其他",
];
/// Where a call whose typed source the catalogue does not know is counted.
pub const OTHER_SOURCE: &str = "其他";
/// The most entries of each list (a bound on what an import may make
/// every device hold).
pub const MAX_ENTRIES: usize = 500;
/// The most aliases one source may have.
pub const MAX_ALIASES: usize = 20;
/// The most bytes of a catalogue file.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// An information source (信息来源): the channel an ad ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Short stable code (`tv-gd`), what spend is imported against.
    pub code: String,
    /// The name offices pick and reports show (广东卫视).
    pub name: String,
    /// One of [`CHANNEL_KINDS`].
    pub kind: String,
    /// Other names typed for it before the catalogue (广东台, 卫视).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A product (产品) the offices sell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub code: String,
    pub name: String,
    /// Price of one unit (one box), in fen.
    pub unit_price_fen: i64,
    /// Days of medicine one unit lasts (for the run-out date).
    pub days_per_unit: u32,
}

/// The catalogue, one version of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// 1 for the first import, then one more for each.
    pub version: u32,
    pub sources: Vec<Source>,
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub diseases: Vec<String>,
    /// Headquarters' activities (活动), for some offices or all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<crate::activity::Activity>,
    /// The staff evaluation's weights (客情岗位评定).
    #[serde(default)]
    pub weights: crate::score::ScoreWeights,
    /// 未购原因 offices pick from (其他 last); empty: the built-in list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_bought_reasons: Vec<String>,
    /// 非正常咨询 kinds offices pick from (其他 last); empty: the built-in
    /// list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nonpatient_kinds: Vec<String>,
}

/// The not-bought reasons offices pick from and reports count under: the
/// catalogue's, or the built-in list; 其他 always last.
pub fn not_bought_reasons(catalog: Option<&Catalog>) -> Vec<String> {
    listed_or_built_in(
        catalog.map(|c| &c.not_bought_reasons),
        &crate::records::NotBoughtReason::ALL.map(|r| r.chinese()),
    )
}

/// The non-patient call kinds, like [`not_bought_reasons`].
pub fn nonpatient_kinds(catalog: Option<&Catalog>) -> Vec<String> {
    listed_or_built_in(
        catalog.map(|c| &c.nonpatient_kinds),
        &crate::records::NonPatientKind::ALL.map(|k| k.chinese()),
    )
}

/// A catalogue's pick list, or the built-in one when it has none.
fn listed_or_built_in(listed: Option<&Vec<String>>, built_in: &[&str]) -> Vec<String> {
    match listed.filter(|l| !l.is_empty()) {
        Some(l) => l.clone(),
        None => built_in.iter().map(|s| s.to_string()).collect(),
    }
}

/// Why a catalogue file was refused: the line at fault (1-based; 0 when
/// the whole file is) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("第 {line} 行 line {line}: {message}")]
pub struct CatalogError {
    pub line: usize,
    pub message: String,
}

/// The file's shape, with where each value stands (for the line at fault).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "source")]
    sources: Vec<toml::Spanned<FileSource>>,
    #[serde(default, rename = "product")]
    products: Vec<toml::Spanned<FileProduct>>,
    #[serde(default)]
    diseases: Vec<toml::Spanned<String>>,
    #[serde(default, rename = "activity")]
    activities: Vec<toml::Spanned<FileActivity>>,
    #[serde(default)]
    weights: std::collections::BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>,
    #[serde(default)]
    not_bought_reasons: Vec<toml::Spanned<String>>,
    #[serde(default)]
    nonpatient_kinds: Vec<toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileActivity {
    code: toml::Spanned<String>,
    name: toml::Spanned<String>,
    kind: toml::Spanned<String>,
    starts: toml::Spanned<String>,
    ends: toml::Spanned<String>,
    #[serde(default)]
    offices: Vec<toml::Spanned<String>>,
    #[serde(default)]
    source: Option<toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    code: toml::Spanned<String>,
    name: toml::Spanned<String>,
    kind: toml::Spanned<String>,
    #[serde(default)]
    aliases: Vec<toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProduct {
    code: toml::Spanned<String>,
    name: toml::Spanned<String>,
    /// Yuan, as text (`"128.00"`): money is never a float.
    unit_price: toml::Spanned<String>,
    days_per_unit: toml::Spanned<i64>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Catalog {
    /// Reads a catalogue file (TOML: `[[source]]` tables with `code`,
    /// `name`, `kind`, `aliases`; `[[product]]` tables with `code`, `name`,
    /// `unit_price` in yuan as text, `days_per_unit`; a `diseases` list),
    /// checking every value; the first fault found is refused with its line.
    pub fn parse_toml(text: &str, version: u32) -> Result<Catalog, CatalogError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(CatalogError {
                line: 0,
                message: format!("the file has more than {MAX_FILE_BYTES} bytes"),
            });
        }
        let file: File = toml::from_str(text).map_err(|e| CatalogError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let at = |span: std::ops::Range<usize>, message: String| CatalogError {
            line: line_of(text, span.start),
            message,
        };
        let name = |field: &'static str, v: &toml::Spanned<String>| {
            crate::staff::validate_name(field, v.get_ref()).map_err(|e| at(v.span(), e.to_string()))
        };
        let code = |v: &toml::Spanned<String>| {
            let c = v.get_ref().trim();
            if c.is_empty()
                || c.len() > 20
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(at(
                    v.span(),
                    format!("code `{c}`: 1 to 20 of a-z, 0-9, - and _"),
                ));
            }
            Ok(c.to_string())
        };
        let too_many = |what: &str, n: usize| {
            (n > MAX_ENTRIES).then(|| CatalogError {
                line: 0,
                message: format!("{n} {what}; at most {MAX_ENTRIES}"),
            })
        };
        for (what, n) in [
            ("sources", file.sources.len()),
            ("products", file.products.len()),
            ("diseases", file.diseases.len()),
            ("activities", file.activities.len()),
            ("not_bought_reasons", file.not_bought_reasons.len()),
            ("nonpatient_kinds", file.nonpatient_kinds.len()),
        ] {
            if let Some(e) = too_many(what, n) {
                return Err(e);
            }
        }
        if file.sources.is_empty() {
            return Err(CatalogError {
                line: 0,
                message: "no [[source]]: a catalogue lists at least one information source".into(),
            });
        }

        let mut codes = HashSet::new();
        // Every name and alias of every source: a typed text maps to one.
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for s in &file.sources {
            let s = s.get_ref();
            let source = Source {
                code: code(&s.code)?,
                name: name("name", &s.name)?,
                kind: s.kind.get_ref().trim().to_string(),
                aliases: Vec::new(),
            };
            if !CHANNEL_KINDS.contains(&source.kind.as_str()) {
                return Err(at(
                    s.kind.span(),
                    format!(
                        "kind `{}`: one of {}",
                        source.kind,
                        CHANNEL_KINDS.join(", ")
                    ),
                ));
            }
            if !codes.insert(source.code.clone()) {
                return Err(at(s.code.span(), format!("code `{}` twice", source.code)));
            }
            if source.name == OTHER_SOURCE {
                return Err(at(
                    s.name.span(),
                    format!(
                        "`{OTHER_SOURCE}` is where unknown sources are counted; not a source name"
                    ),
                ));
            }
            if !names.insert(source.name.clone()) {
                return Err(at(s.name.span(), format!("name `{}` twice", source.name)));
            }
            if s.aliases.len() > MAX_ALIASES {
                return Err(at(
                    s.name.span(),
                    format!("{} aliases; at most {MAX_ALIASES}", s.aliases.len()),
                ));
            }
            let mut source = source;
            for a in &s.aliases {
                let alias = name("alias", a)?;
                if !names.insert(alias.clone()) {
                    return Err(at(a.span(), format!("`{alias}` already names a source")));
                }
                source.aliases.push(alias);
            }
            sources.push(source);
        }

        let mut product_codes = HashSet::new();
        let mut product_names = HashSet::new();
        let mut products = Vec::new();
        for p in &file.products {
            let p = p.get_ref();
            let product = Product {
                code: code(&p.code)?,
                name: name("name", &p.name)?,
                unit_price_fen: crate::records::parse_yuan(p.unit_price.get_ref())
                    .map_err(|e| at(p.unit_price.span(), e.to_string()))?,
                days_per_unit: u32::try_from(*p.days_per_unit.get_ref())
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| {
                        at(
                            p.days_per_unit.span(),
                            "days_per_unit: 1 to 365".to_string(),
                        )
                    })?,
            };
            if !product_codes.insert(product.code.clone()) {
                return Err(at(p.code.span(), format!("code `{}` twice", product.code)));
            }
            if !product_names.insert(product.name.clone()) {
                return Err(at(p.name.span(), format!("name `{}` twice", product.name)));
            }
            products.push(product);
        }

        let mut diseases = Vec::new();
        let mut seen = HashSet::new();
        for d in &file.diseases {
            let disease = name("disease", d)?;
            if !seen.insert(disease.clone()) {
                return Err(at(d.span(), format!("disease `{disease}` twice")));
            }
            diseases.push(disease);
        }

        let mut activities = Vec::new();
        let mut activity_codes = HashSet::new();
        for a in &file.activities {
            let a = a.get_ref();
            let date = |v: &toml::Spanned<String>| {
                chrono::NaiveDate::parse_from_str(v.get_ref().trim(), "%Y-%m-%d")
                    .map_err(|_| at(v.span(), format!("`{}`: a date, 2026-11-20", v.get_ref())))
            };
            let mut offices = Vec::new();
            for o in &a.offices {
                let code = o.get_ref().trim().to_string();
                crate::office::office(&code).map_err(|e| at(o.span(), e.to_string()))?;
                if !offices.contains(&code) {
                    offices.push(code);
                }
            }
            let source = match &a.source {
                Some(s) => {
                    let c = s.get_ref().trim();
                    if !sources.iter().any(|x| x.code == c) {
                        return Err(at(
                            s.span(),
                            format!("source `{c}` is no source code above"),
                        ));
                    }
                    Some(c.to_string())
                }
                None => None,
            };
            let activity = crate::activity::Activity {
                id: code(&a.code)?,
                name: name("name", &a.name)?,
                kind: crate::activity::ActivityKind::parse(a.kind.get_ref()).ok_or_else(|| {
                    at(
                        a.kind.span(),
                        format!(
                            "kind `{}`: one of {}",
                            a.kind.get_ref(),
                            crate::activity::ActivityKind::ALL
                                .map(|k| k.chinese())
                                .join(", ")
                        ),
                    )
                })?,
                starts: date(&a.starts)?,
                ends: date(&a.ends)?,
                offices,
                source,
                by_office: None,
            };
            activity
                .check()
                .map_err(|e| at(a.ends.span(), e.to_string()))?;
            if !activity_codes.insert(activity.id.clone()) {
                return Err(at(a.code.span(), format!("code `{}` twice", activity.id)));
            }
            activities.push(activity);
        }

        let mut weights = crate::score::ScoreWeights::default();
        for (k, v) in &file.weights {
            let w = match v.get_ref() {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                _ => {
                    return Err(at(
                        v.span(),
                        format!("weight of `{}`: a number", k.get_ref()),
                    ));
                }
            };
            weights.set(k.get_ref(), w).map_err(|e| at(k.span(), e))?;
        }
        // A pick list: its names, once each, 其他 last (where what the list
        // lacks is counted, with the typed text kept).
        let pick_list = |field: &'static str, list: &[toml::Spanned<String>]| {
            let mut out: Vec<String> = Vec::new();
            for v in list {
                let label = name(field, v)?;
                if crate::records::split_stored(&label).1.is_some() {
                    return Err(at(
                        v.span(),
                        format!("`{label}`: no colon in a {field} name"),
                    ));
                }
                if out.contains(&label) {
                    return Err(at(v.span(), format!("`{label}` twice")));
                }
                out.push(label);
            }
            if !out.is_empty() {
                out.retain(|l| l != OTHER_SOURCE);
                out.push(OTHER_SOURCE.to_string());
            }
            Ok(out)
        };
        let not_bought_reasons = pick_list("not_bought_reasons", &file.not_bought_reasons)?;
        let nonpatient_kinds = pick_list("nonpatient_kinds", &file.nonpatient_kinds)?;
        Ok(Catalog {
            version,
            sources,
            products,
            diseases,
            activities,
            weights,
            not_bought_reasons,
            nonpatient_kinds,
        })
    }

    /// The source a typed text stands for: by name, alias or code
    /// (trimmed); `None` when the catalogue does not know it.
    pub fn source_for(&self, typed: &str) -> Option<&Source> {
        let t = typed.trim();
        self.sources
            .iter()
            .find(|s| s.name == t || s.code == t || s.aliases.iter().any(|a| a == t))
    }

    /// The name a call typed as `typed` is counted under: its source's
    /// name, or [`OTHER_SOURCE`].
    pub fn source_name(&self, typed: &str) -> &str {
        self.source_for(typed)
            .map_or(OTHER_SOURCE, |s| s.name.as_str())
    }

    /// The run-out date (用药到期时间) of `quantity` units of `product`
    /// bought on `day`, by the catalogue's days per unit; `None` for a
    /// product it does not list.
    pub fn runout_for(
        &self,
        product: &str,
        quantity: i64,
        day: chrono::NaiveDate,
    ) -> Option<chrono::NaiveDate> {
        let days = i64::from(self.product(product)?.days_per_unit).checked_mul(quantity)?;
        day.checked_add_days(chrono::Days::new(u64::try_from(days).ok()?))
    }

    /// The product of this code or name.
    pub fn product(&self, code_or_name: &str) -> Option<&Product> {
        let t = code_or_name.trim();
        self.products.iter().find(|p| p.code == t || p.name == t)
    }
}

/// The catalogue as text tables (Chinese headings), for both command lines.
pub fn text(c: &Catalog) -> String {
    use crate::printable::printable;
    let mut out = format!(
        "目录第 {} 版 catalogue version {}\n\n信息来源 sources\n",
        c.version, c.version
    );
    let mut t = crate::table::Table::new(["代码", "名称", "类别", "别名"]);
    for s in &c.sources {
        t.row([
            printable(&s.code).to_string(),
            printable(&s.name).to_string(),
            s.kind.clone(),
            printable(&s.aliases.join("，")).to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str("\n产品 products\n");
    let mut t = crate::table::Table::new(["代码", "名称", "单价(元)", "每盒天数"]);
    for p in &c.products {
        t.row([
            printable(&p.code).to_string(),
            printable(&p.name).to_string(),
            crate::records::fmt_yuan(p.unit_price_fen),
            p.days_per_unit.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "\n疾病 diseases: {}\n",
        printable(&c.diseases.join("，"))
    ));
    out.push_str(&format!(
        "未购原因 not-bought reasons: {}\n非正常咨询 non-patient kinds: {}\n",
        printable(&not_bought_reasons(Some(c)).join("，")),
        printable(&nonpatient_kinds(Some(c)).join("，"))
    ));
    if !c.activities.is_empty() {
        out.push_str("\n活动 activities\n");
        out.push_str(&crate::activity::table(&c.activities).render());
    }
    out.push_str("\n评定权重 score weights\n");
    let mut t = crate::table::Table::new(["项目", "key", "每项分值"]);
    for ((key, label), w) in crate::score::ITEMS.iter().zip(c.weights.0) {
        t.row([label.to_string(), key.to_string(), w.to_string()]);
    }
    out.push_str(&t.render());
    out
}

/// The most lines of a spend file.
pub const MAX_SPEND_LINES: usize = 200_000;

/// Reads a media spend file (CSV, UTF-8, a BOM and a header line allowed:
/// `date,office,source,amount` — the day, the office's code, the
/// catalogue source's code, the amount in yuan). Every line is checked
/// against the catalogue; the first fault is refused with its line. A key
/// (day, office, source) given twice in one file is a fault too.
pub fn parse_spend_csv(
    text: &str,
    catalog: &Catalog,
) -> Result<Vec<crate::report::SpendFact>, CatalogError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fault = |message: String| CatalogError { line, message };
        if line > MAX_SPEND_LINES {
            return Err(fault(format!("more than {MAX_SPEND_LINES} lines")));
        }
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
        if line == 1
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("date") || *f == "日期")
        {
            continue;
        }
        let [day, office, source, amount] = fields[..] else {
            return Err(fault(format!(
                "{} fields; date,office,source,amount",
                fields.len()
            )));
        };
        let day = crate::when::parse_date(day).map_err(|e| fault(e.to_string()))?;
        let office = crate::office::office(office).map_err(|e| fault(e.to_string()))?;
        if !catalog.sources.iter().any(|s| s.code == source) {
            return Err(fault(format!(
                "source `{}` is not a code of the catalogue (keqing-server catalog show)",
                crate::printable::printable(source)
            )));
        }
        let amount_fen = crate::records::parse_yuan(amount).map_err(|e| fault(e.to_string()))?;
        if !keys.insert((day, office.code, source.to_string())) {
            return Err(fault(format!(
                "{day} {} {source} is given twice in this file",
                office.code
            )));
        }
        out.push(crate::report::SpendFact {
            office: office.code.to_string(),
            day,
            source_code: source.to_string(),
            amount_fen,
        });
    }
    Ok(out)
}

/// The id of office `office`'s copy of the catalogue.
pub fn catalog_id(office: &str) -> String {
    format!("catalog-{office}")
}

/// The office of a catalogue copy's id; `None` for any other document.
pub fn parse_catalog_id(doc_id: &str) -> Option<&str> {
    doc_id
        .strip_prefix("catalog-")
        .filter(|o| crate::office::office(o).is_ok())
}

/// The actor of every catalogue change (only `keqing-server catalog import`
/// writes them, one import at a time).
fn writer_actor() -> ActorId {
    ActorId::from(&b"keqing-hq-catalog"[..])
}

const CATALOG_KEY: &str = "catalog";

/// The next version of office copy `doc_id`: the document (saved,
/// uncompressed) and the one change that made it from `previous` (the
/// copy as stored, `None` for the first). The copy names its own id, so
/// the 27 copies' changes differ.
pub fn write_copy(
    doc_id: &str,
    previous: Option<&[u8]>,
    catalog: &Catalog,
    time_ms: i64,
) -> Result<(Vec<u8>, crate::dossier::NewChange), DomainError> {
    let json = serde_json::to_string(catalog).map_err(|e| DomainError::Malformed(e.to_string()))?;
    let mut doc = match previous {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => AutoCommit::new(),
    }
    .with_actor(writer_actor());
    doc.put(ROOT, "id", doc_id)?;
    doc.put(
        ROOT,
        "version",
        ScalarValue::Uint(u64::from(catalog.version)),
    )?;
    doc.put(ROOT, CATALOG_KEY, json)?;
    doc.commit_with(CommitOptions::default().with_time(time_ms));
    let bytes = doc.save_nocompress();
    let change = doc
        .get_last_local_change()
        .map(|c| crate::dossier::NewChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
        .ok_or_else(|| DomainError::Malformed("the catalogue made no change".into()))?;
    Ok((bytes, change))
}

/// The catalogue a copy holds.
pub fn read_copy(doc: &Automerge) -> Result<Catalog, DomainError> {
    match doc.get(ROOT, CATALOG_KEY)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(json) => serde_json::from_str(json)
                .map_err(|e| DomainError::Malformed(format!("catalogue: {e}"))),
            _ => Err(DomainError::Malformed("catalogue: not text".into())),
        },
        _ => Err(DomainError::Malformed("catalogue: empty".into())),
    }
}

/// [`read_copy`] of saved bytes.
pub fn read_saved(bytes: &[u8]) -> Result<Catalog, DomainError> {
    read_copy(&Automerge::load(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
diseases = ["高血压", "冠心病"]

[[source]]
code = "tv-gd"
name = "广东卫视"
kind = "电视"
aliases = ["广东台", "卫视"]

[[source]]
code = "paper"
name = "羊城晚报"
kind = "报纸"

[[product]]
code = "xnk"
name = "金诃心脑康"
unit_price = "128.00"
days_per_unit = 30
"#;

    #[test]
    fn a_file_reads_into_a_catalogue_that_maps_typed_sources() {
        let c = Catalog::parse_toml(FILE, 1).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.products[0].unit_price_fen, 12800);
        assert_eq!(c.source_name("广东台"), "广东卫视");
        assert_eq!(c.source_name(" 羊城晚报 "), "羊城晚报");
        assert_eq!(c.source_name("tv-gd"), "广东卫视");
        assert_eq!(c.source_name("朋友说的"), OTHER_SOURCE);
        assert_eq!(c.product("金诃心脑康").unwrap().days_per_unit, 30);
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(
            c.runout_for("xnk", 3, day),
            chrono::NaiveDate::from_ymd_opt(2027, 2, 18)
        );
        assert_eq!(c.runout_for("别的药", 3, day), None);
    }

    #[test]
    fn a_bad_file_is_refused_with_the_line_at_fault() {
        let cases = [
            (
                FILE.replace("kind = \"报纸\"", "kind = \"杂志\""),
                13,
                "kind",
            ),
            (
                FILE.replace("code = \"paper\"", "code = \"tv-gd\""),
                11,
                "twice",
            ),
            (FILE.replace("\"卫视\"", "\"羊城晚报\""), 12, "twice"),
            (FILE.replace("\"卫视\"", "\"广东台\""), 8, "already"),
            (FILE.replace("\"128.00\"", "\"12.345\""), 18, "yuan"),
            (
                FILE.replace("days_per_unit = 30", "days_per_unit = 0"),
                19,
                "1 to 365",
            ),
            (
                FILE.replace("name = \"羊城晚报\"", "name = \"其他\""),
                12,
                "其他",
            ),
            (
                FILE.replace("kind = \"电视\"", "kinds = \"电视\""),
                7,
                "kinds",
            ),
            (FILE.replace("[[product]]", "[[product]"), 15, ""),
        ];
        for (text, line, says) in cases {
            let e = Catalog::parse_toml(&text, 1).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let e = Catalog::parse_toml("diseases = []", 1).unwrap_err();
        assert!(e.message.contains("at least one"), "{e}");
    }

    #[test]
    fn the_example_catalogue_of_the_docs_imports() {
        let c = Catalog::parse_toml(include_str!("../../docs/catalog-example.toml"), 1).unwrap();
        assert_eq!(c.source_name("老患者介绍"), "朋友介绍");
        assert_eq!(c.source_name("广播"), "电台");
    }

    #[test]
    fn spend_lines_are_checked_against_the_catalogue() {
        let c = Catalog::parse_toml(FILE, 1).unwrap();
        let ok = "\u{feff}date,office,source,amount\n2026-11-20,44,tv-gd,1200.50\n\n2026-11-20,11,paper,80\n";
        let rows = parse_spend_csv(ok, &c).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].amount_fen, 120050);
        for (text, line, says) in [
            ("2026-11-20,44,tv,10", 1, "not a code"),
            (
                "2026-11-20,44,tv-gd,10\n2026-11-31,44,tv-gd,10",
                2,
                "2026-11-31",
            ),
            ("2026-11-20,99,tv-gd,10", 1, "99"),
            ("2026-11-20,44,tv-gd,-10", 1, "yuan"),
            ("2026-11-20,44,tv-gd", 1, "3 fields"),
            ("2026-11-20,44,tv-gd,10\n2026-11-20,44,tv-gd,20", 2, "twice"),
        ] {
            let e = parse_spend_csv(text, &c).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn copies_differ_by_office_and_read_back() {
        let c = Catalog::parse_toml(FILE, 1).unwrap();
        let (gd, gd_change) = write_copy(&catalog_id("44"), None, &c, 0).unwrap();
        let (_, bj_change) = write_copy(&catalog_id("11"), None, &c, 0).unwrap();
        assert_ne!(gd_change.hash, bj_change.hash, "27 copies, 27 changes");
        assert_eq!(read_saved(&gd).unwrap(), c);
        let next = Catalog { version: 2, ..c };
        let (again, change) = write_copy(&catalog_id("44"), Some(&gd), &next, 1).unwrap();
        assert_eq!(read_saved(&again).unwrap().version, 2);
        assert!(!change.bytes.is_empty());
        assert_eq!(parse_catalog_id("catalog-44"), Some("44"));
        assert_eq!(parse_catalog_id("catalog-99"), None);
        assert_eq!(parse_catalog_id("roster-44"), None);
    }

    #[test]
    fn pick_lists_of_reasons_and_kinds_are_checked_and_end_with_other() {
        let head = "[[source]]\ncode = \"tv\"\nname = \"电视\"\nkind = \"电视\"\n";
        let c = Catalog::parse_toml(
            &format!("not_bought_reasons = [\"其他\", \"路途远\"]\n{head}"),
            1,
        )
        .unwrap();
        assert_eq!(c.not_bought_reasons, ["路途远", "其他"]);
        assert_eq!(not_bought_reasons(Some(&c)), ["路途远", "其他"]);
        assert_eq!(nonpatient_kinds(Some(&c)).len(), 6, "the built-in list");
        assert_eq!(not_bought_reasons(None)[0], "价格");
        for (text, line) in [
            ("not_bought_reasons = [\"价格\", \"价格\"]\n", 1),
            ("\nnonpatient_kinds = [\"保险：推销\"]\n", 2),
        ] {
            let e = Catalog::parse_toml(&format!("{text}{head}"), 1).unwrap_err();
            assert_eq!(e.line, line, "{e}");
        }
    }
}
