//! Patients as lists and lookups show them, and duplicate candidates:
//! the same queries at an office and at headquarters.

use crate::Result;
use rusqlite::{Connection, OptionalExtension};

/// A patient as listed by search and lookups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PatientRow {
    pub dossier_id: String,
    pub office: String,
    pub name: String,
    pub age: Option<i64>,
    pub phones: Vec<String>,
    pub diseases: String,
    pub merged_into: Option<String>,
}

/// Two dossiers that may be the same patient, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DuplicateCandidate {
    pub a: PatientRow,
    pub b: PatientRow,
    pub reason: String,
}

/// The columns of a [`PatientRow`], phones joined by spaces, for
/// [`patient_from_row`]: one statement reads a whole list.
const PATIENT_COLUMNS: &str = "p.dossier_id, p.office, p.name, p.age,
    (SELECT group_concat(ph.phone, ' ') FROM patient_phones ph WHERE ph.dossier_id = p.dossier_id),
    p.diseases, p.merged_into";

fn patient_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRow> {
    let phones: Option<String> = r.get(4)?;
    // Sorted here: an ORDER BY inside group_concat costs a sorter per row.
    let mut phones: Vec<String> = phones
        .map(|p| p.split(' ').map(str::to_string).collect())
        .unwrap_or_default();
    phones.sort();
    Ok(PatientRow {
        dossier_id: r.get(0)?,
        office: r.get(1)?,
        name: r.get(2)?,
        age: r.get(3)?,
        phones,
        diseases: r.get(5)?,
        merged_into: r.get(6)?,
    })
}

/// Live patients with exactly this name, at most `limit`: when `age` is
/// given, those of age `age` ± `within` and those of unknown age.
pub fn patients_named(
    conn: &Connection,
    name: &str,
    age: Option<i64>,
    within: i64,
    limit: usize,
) -> Result<Vec<PatientRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The limit is written into the SQL (see `dossiers_named_aged`). Two
    // index ranges of (name, age): the ages within the window, and the
    // unknown ages.
    let rows = match age {
        Some(age) => conn
            .prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM patients p
                 WHERE p.name = ?1 AND p.age BETWEEN ?2 AND ?3 AND p.merged_into IS NULL
                 UNION ALL
                 SELECT {PATIENT_COLUMNS} FROM patients p
                 WHERE p.name = ?1 AND p.age IS NULL AND p.merged_into IS NULL
                 LIMIT {limit}"
            ))?
            .query_map(
                rusqlite::params![name, age - within, age + within],
                patient_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM patients p
                 WHERE p.name = ?1 AND p.merged_into IS NULL LIMIT {limit}"
            ))?
            .query_map(rusqlite::params![name], patient_from_row)?
            .collect::<rusqlite::Result<_>>()?,
    };
    Ok(rows)
}

/// Live dossiers of patients with exactly this name and a known age of
/// `age` ± `within`, at most `limit` (ids only: finding a caller's dossier).
pub fn dossiers_named_aged(
    conn: &Connection,
    name: &str,
    age: i64,
    within: i64,
    limit: usize,
) -> Result<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The limit is part of the SQL text, not a bound parameter: SQLite
    // plans with the LIMIT's value, so a bound LIMIT makes it re-prepare
    // the statement on every run (measured: most of this query's time).
    conn.prepare_cached(&format!(
        "SELECT dossier_id FROM patients
         WHERE name = ?1 AND age BETWEEN ?2 AND ?3 AND merged_into IS NULL LIMIT {limit}"
    ))?
    .query_map(rusqlite::params![name, age - within, age + within], |r| {
        r.get(0)
    })?
    .collect()
}

/// The patient row of one dossier.
pub fn patient_row(conn: &Connection, id: &str) -> Result<Option<PatientRow>> {
    conn.prepare_cached(&format!(
        "SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.dossier_id = ?1"
    ))?
    .query_row([id], patient_from_row)
    .optional()
}

/// Pairs of live dossiers that may be one patient: the same normalised
/// phone, or the same name and province with ages within a year.
pub fn duplicate_candidates(conn: &Connection) -> Result<Vec<DuplicateCandidate>> {
    let mut pairs: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT a.dossier_id, b.dossier_id, a.phone
             FROM patient_phones a
             JOIN patient_phones b ON b.phone = a.phone AND b.dossier_id > a.dossier_id
             JOIN patients pa ON pa.dossier_id = a.dossier_id
             JOIN patients pb ON pb.dossier_id = b.dossier_id
             WHERE pa.merged_into IS NULL AND pb.merged_into IS NULL",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                format!("同一电话 {}", r.get::<_, String>(2)?),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let by_name: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT a.dossier_id, b.dossier_id, a.name
             FROM patients a
             JOIN patients b ON b.name = a.name AND b.age BETWEEN a.age - 1 AND a.age + 1
                  AND b.office = a.office AND b.dossier_id > a.dossier_id
             WHERE a.merged_into IS NULL AND b.merged_into IS NULL",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, "同名同省 年龄相近".to_string()))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for p in by_name {
        if !pairs.iter().any(|q| q.0 == p.0 && q.1 == p.1) {
            pairs.push(p);
        }
    }
    let mut out = Vec::new();
    for (a, b, reason) in pairs {
        if let (Some(a), Some(b)) = (patient_row(conn, &a)?, patient_row(conn, &b)?) {
            out.push(DuplicateCandidate { a, b, reason });
        }
    }
    Ok(out)
}

/// Which patients a list shows: a primary category, or a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    Category(keqing_shared::lists::Category),
    /// 典型: flagged typical cases.
    Typical,
    /// 问题: with a problem not yet resolved.
    Problem,
}

impl ListFilter {
    /// The list's name as the office says it.
    pub fn label(self) -> &'static str {
        match self {
            ListFilter::Category(c) => c.chinese(),
            ListFilter::Typical => "典型",
            ListFilter::Problem => "问题",
        }
    }
}

/// A patient as the supervisor's lists show one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedPatient {
    pub dossier_id: String,
    pub office: String,
    pub name: String,
    pub phone: Option<String>,
    /// The primary category on the list's day (its code).
    pub category: String,
    pub typical: bool,
    pub open_problems: u32,
    /// The latest call, visit, purchase, follow-up or home visit.
    pub last_contact: Option<String>,
    /// The earliest deadline of a follow-up still open on the list's day.
    pub next_due: Option<String>,
    pub assignee: Option<String>,
}

/// The live patients of a list on `day` (of one office, or all), most
/// recently in touch first, at most `limit`.
pub fn list_patients(
    conn: &Connection,
    office: Option<&str>,
    filter: ListFilter,
    day: chrono::NaiveDate,
    limit: usize,
) -> Result<Vec<ListedPatient>> {
    use keqing_shared::lists::Category;
    // Each branch walks one list index backwards in contact order, filtered
    // on the index's own columns, and stops at the limit; 流失 merges two
    // (lapsed buyers and lapsed repeat buyers). Lapse is judged on the day:
    // a buyer whose lapse date has come is 流失, not 已购 / 复购.
    let live = "merged_into IS NULL AND (?1 IS NULL OR office = ?1)";
    let branches: Vec<(&str, String)> = match filter {
        ListFilter::Category(Category::Lapsed) => ["bought", "repeat"]
            .iter()
            .map(|c| {
                (
                    "patients_list",
                    format!("category = '{c}' AND lapses_on <= ?2"),
                )
            })
            .collect(),
        ListFilter::Category(c @ (Category::Bought | Category::Repeat)) => vec![(
            "patients_list",
            format!(
                "category = '{}' AND (lapses_on IS NULL OR lapses_on > ?2)",
                c.as_str()
            ),
        )],
        ListFilter::Category(c) => {
            vec![("patients_list", format!("category = '{}'", c.as_str()))]
        }
        ListFilter::Typical => vec![("patients_list_typical", "typical = 1".to_string())],
        ListFilter::Problem => vec![("patients_list_problem", "open_problems > 0".to_string())],
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let page = branches
        .iter()
        .map(|(index, condition)| {
            format!(
                "SELECT * FROM (SELECT dossier_id, last_contact FROM patients INDEXED BY {index}
                 WHERE {live} AND {condition}
                 ORDER BY last_contact DESC, dossier_id DESC LIMIT {limit})"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    // Only the page's rows are read, and only theirs get a next due day.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT p.dossier_id, p.office, p.name, p.phone,
                CASE WHEN p.category <> 'stopped' AND p.lapses_on <= ?2 THEN 'lapsed' ELSE p.category END,
                p.typical, p.open_problems, p.last_contact,
                (SELECT min(s.deadline) FROM slots s
                  WHERE s.dossier_id = p.dossier_id AND s.settled_on > ?2 AND s.due_from <= '9999'),
                p.assignee
         FROM (SELECT dossier_id FROM ({page})
               ORDER BY last_contact DESC, dossier_id DESC LIMIT {limit}) page
         CROSS JOIN patients p ON p.dossier_id = page.dossier_id
         ORDER BY p.last_contact DESC, p.dossier_id DESC"
    ))?;
    let rows = stmt
        .query_map(
            rusqlite::params![office, keqing_shared::when::fmt_date(day)],
            |r| {
                Ok(ListedPatient {
                    dossier_id: r.get(0)?,
                    office: r.get(1)?,
                    name: r.get(2)?,
                    phone: r.get(3)?,
                    category: r.get(4)?,
                    typical: r.get(5)?,
                    open_problems: r.get::<_, i64>(6)?.max(0) as u32,
                    last_contact: r.get(7)?,
                    next_due: r.get(8)?,
                    assignee: r.get(9)?,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A delivery still to make, with its patient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpenDelivery {
    pub id: String,
    pub dossier_id: String,
    pub office: String,
    pub name: String,
    pub phone: Option<String>,
    pub product: Option<String>,
    pub quantity: Option<i64>,
    pub address: Option<String>,
    pub due: Option<String>,
    /// Registered when, by whom.
    pub at: String,
    pub staff: String,
}

/// Every delivery still to make (待送), overdue first: by due day (those
/// without one last), then by when they were registered.
pub fn open_deliveries(conn: &Connection, office: Option<&str>) -> Result<Vec<OpenDelivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.dossier_id, d.office, p.name, p.phone, d.product, d.quantity, d.address,
                d.due, d.at, d.staff
         FROM deliveries d JOIN patients p ON p.dossier_id = d.dossier_id
         WHERE d.status = 'pending' AND (?1 IS NULL OR d.office = ?1)
         ORDER BY d.due IS NULL, d.due, d.at",
    )?;
    let rows = stmt
        .query_map([office], |r| {
            Ok(OpenDelivery {
                id: r.get(0)?,
                dossier_id: r.get(1)?,
                office: r.get(2)?,
                name: r.get(3)?,
                phone: r.get(4)?,
                product: r.get(5)?,
                quantity: r.get(6)?,
                address: r.get(7)?,
                due: r.get(8)?,
                at: r.get(9)?,
                staff: r.get(10)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}
