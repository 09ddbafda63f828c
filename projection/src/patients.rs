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

/// The patient row of one dossier.
pub fn patient_row(conn: &Connection, id: &str) -> Result<Option<PatientRow>> {
    let row = conn
        .prepare_cached(
            "SELECT name, age, diseases, merged_into, office FROM patients WHERE dossier_id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((name, age, diseases, merged_into, office)) = row else {
        return Ok(None);
    };
    let phones = conn
        .prepare_cached("SELECT phone FROM patient_phones WHERE dossier_id = ?1 ORDER BY phone")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(PatientRow {
        dossier_id: id.to_string(),
        office,
        name,
        age,
        phones,
        diseases,
        merged_into,
    }))
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
