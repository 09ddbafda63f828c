//! 非正常咨询: the calls of an office that were not about a patient, as
//! one automerge document per office and month (`nonpatient-44-2026-11`):
//! they belong to no dossier, yet sync like everything else and reach
//! headquarters. A month bounds the document (an office takes a few dozen
//! such calls a month, far under a document's limit).
//!
//! Every device of the office may be the first to record one in a month,
//! offline; like the roster ([`crate::roster`]), the document starts from a
//! deterministic genesis (a fixed actor and time, the same operations), so
//! all devices share one `calls` map and their copies merge.

use crate::DomainError;
use crate::dossier::{NewChange, read_map, write_map};
use crate::records::NonPatientCall;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc, Value};
use chrono::{Datelike, NaiveDate};

const CALLS: &str = "calls";
const PREFIX: &str = "nonpatient-";

/// The document id of an office's non-patient calls of the month of `day`.
pub fn log_id(office: &str, day: NaiveDate) -> String {
    format!("{PREFIX}{office}-{:04}-{:02}", day.year(), day.month())
}

/// The office and month (`YYYY-MM`) a non-patient log's id names, if it is
/// one: `nonpatient-<2 digits>-<4 digits>-<2 digits>`.
pub fn parse_log_id(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix(PREFIX)?;
    let (office, month) = rest.split_once('-')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (y, m) = month.split_once('-')?;
    let valid = office.len() == 2
        && digits(office)
        && y.len() == 4
        && digits(y)
        && m.len() == 2
        && digits(m)
        && ("01"..="12").contains(&m);
    valid.then_some((office, month))
}

/// An office's non-patient calls of one month.
pub struct NonPatientLog {
    doc: Automerge,
}

impl NonPatientLog {
    /// The genesis of the log `id`: identical on every device.
    pub fn genesis(id: &str) -> Result<(NonPatientLog, NewChange), DomainError> {
        let (office, month) = parse_log_id(id)
            .ok_or_else(|| DomainError::Malformed(format!("`{id}` is not a non-patient log")))?;
        let actor = ActorId::from(format!("keqing-{id}").into_bytes());
        let mut doc = Automerge::new().with_actor(actor);
        doc.transact_with(
            |_| CommitOptions::default().with_time(0),
            |tx| -> Result<(), DomainError> {
                tx.put(ROOT, "office", office)?;
                tx.put(ROOT, "month", month)?;
                tx.put_object(ROOT, CALLS, ObjType::Map)?;
                Ok(())
            },
        )
        .map_err(|f| f.error)?;
        let change = last_change(&doc)?;
        Ok((NonPatientLog { doc }, change))
    }

    pub fn load(bytes: &[u8], actor: ActorId) -> Result<NonPatientLog, DomainError> {
        let log = NonPatientLog {
            doc: Automerge::load(bytes)?.with_actor(actor),
        };
        log.calls_obj()?;
        Ok(log)
    }

    pub fn with_actor(mut self, actor: ActorId) -> NonPatientLog {
        self.doc.set_actor(actor);
        self
    }

    /// Stored without DEFLATE, like a dossier.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    fn calls_obj(&self) -> Result<ObjId, DomainError> {
        match self.doc.get(ROOT, CALLS)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(DomainError::Malformed(
                "non-patient log has no calls map".into(),
            )),
        }
    }

    /// Records a call under its own id.
    pub fn add(&mut self, call: &NonPatientCall, time_ms: i64) -> Result<NewChange, DomainError> {
        let calls = self.calls_obj()?;
        self.doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), DomainError> {
                    if tx.get(&calls, call.id.as_str())?.is_some() {
                        return Err(DomainError::invalid(
                            "id",
                            format!("record {} exists", call.id),
                        ));
                    }
                    let m = tx.put_object(&calls, call.id.as_str(), ObjType::Map)?;
                    write_map(tx, &m, call)
                },
            )
            .map_err(|f| f.error)?;
        last_change(&self.doc)
    }

    /// Every call recorded, in time order.
    pub fn calls(&self) -> Result<Vec<NonPatientCall>, DomainError> {
        let calls = self.calls_obj()?;
        let mut out = Vec::new();
        for item in self.doc.map_range(&calls, ..) {
            if let automerge::ValueRef::Object(ObjType::Map) = item.value {
                out.push(read_map::<NonPatientCall>(&self.doc, &item.id())?);
            }
        }
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }
}

fn last_change(doc: &Automerge) -> Result<NewChange, DomainError> {
    doc.get_last_local_change()
        .map(|c| NewChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
        .ok_or_else(|| DomainError::Malformed("no change".into()))
}

/// The office a shared office document belongs to and its deterministic
/// first change, by the document's id: a roster (`roster-44`) or a
/// non-patient log (`nonpatient-44-2026-11`). `None` for a dossier.
pub fn shared_document_genesis(doc_id: &str) -> Option<Result<(String, NewChange), DomainError>> {
    if let Some(office) = doc_id.strip_prefix("roster-") {
        return Some(
            crate::office::office(office)
                .and_then(|_| crate::roster::Roster::genesis(office))
                .map(|(_, g)| (office.to_string(), g)),
        );
    }
    if doc_id.starts_with(PREFIX) {
        return Some(match parse_log_id(doc_id) {
            Some((office, _)) => crate::office::office(office)
                .and_then(|_| NonPatientLog::genesis(doc_id))
                .map(|(_, g)| (office.to_string(), g)),
            None => Err(DomainError::Malformed(format!(
                "`{doc_id}` is not a non-patient log"
            ))),
        });
    }
    None
}

/// The office of a document that is not a dossier, by its id: an office's
/// shared documents (roster, non-patient logs) and its copy of
/// headquarters' catalogue. `None` for a dossier (whose office is in it).
pub fn non_dossier_office(doc_id: &str) -> Option<&str> {
    if let Some(office) = crate::catalog::parse_catalog_id(doc_id) {
        return Some(office);
    }
    if let Some(office) = doc_id.strip_prefix("roster-") {
        return Some(office);
    }
    parse_log_id(doc_id).map(|(office, _)| office)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::NonPatientKind;

    fn call(id: &str, kind: NonPatientKind) -> NonPatientCall {
        NonPatientCall {
            id: id.into(),
            at: crate::when::parse_datetime("2026-11-20T10:00").unwrap(),
            staff: "李娜".into(),
            kind: kind.as_str().to_string(),
            phone: Some("13800138000".into()),
            notes: None,
        }
    }

    #[test]
    fn two_devices_logging_one_month_offline_merge() {
        let day = crate::when::parse_date("2026-11-20").unwrap();
        let id = log_id("44", day);
        assert_eq!(id, "nonpatient-44-2026-11");
        assert_eq!(parse_log_id(&id), Some(("44", "2026-11")));
        for bad in [
            "nonpatient-4-2026-11",
            "nonpatient-44-2026-13",
            "nonpatient-44-26-11",
            "x",
        ] {
            assert_eq!(parse_log_id(bad), None, "{bad}");
        }
        let (a, ga) = NonPatientLog::genesis(&id).unwrap();
        let (b, gb) = NonPatientLog::genesis(&id).unwrap();
        assert_eq!(ga, gb, "the same genesis on every device");
        let mut a = a.with_actor(ActorId::from(b"device-a"));
        let mut b = b.with_actor(ActorId::from(b"device-b"));
        a.add(&call("1", NonPatientKind::WrongNumber), 1).unwrap();
        b.add(&call("2", NonPatientKind::Sales), 2).unwrap();
        a.doc.merge(&mut b.doc).unwrap();
        let kinds: Vec<String> = a.calls().unwrap().into_iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["wrong_number", "sales"]);
        let (office, g) = shared_document_genesis(&id).unwrap().unwrap();
        assert_eq!((office.as_str(), g), ("44", ga));
        assert!(
            shared_document_genesis("nonpatient-99-2026-11")
                .unwrap()
                .is_err()
        );
        assert!(shared_document_genesis("01a2-dossier").is_none());
        assert_eq!(non_dossier_office("roster-44"), Some("44"));
        assert_eq!(non_dossier_office("catalog-11"), Some("11"));
        assert_eq!(non_dossier_office("nonpatient-44-2026-11"), Some("44"));
        assert_eq!(non_dossier_office("01a2-dossier"), None);
    }
}
