//! A dossier's life after its office: headquarters' transfers and
//! erasures as the devices learn of them (notices), and what an erasure
//! keeps for the reports (the records' counts, without the person).

use crate::dossier::DossierView;
use crate::records::{DeliveryStatus, PlanAction, PlanChange, StopReason};
use chrono::NaiveDateTime;

/// What happened to a dossier at headquarters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// Moved from office `from` to office `to` (转档).
    Transferred { from: String, to: String },
    /// Erased on request (删除): no copy may keep it.
    Erased,
}

/// One notice to the devices of an office (or headquarters').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Its position in the server's notices (a device's cursor).
    pub seq: u64,
    pub doc_id: String,
    pub kind: NoticeKind,
    /// When headquarters did it, `YYYY-MM-DDTHH:MM:SS` (China Standard Time).
    pub at: String,
}

/// What a device asks for: the notices of its scope after `cursor`, and
/// the latest notice (if any) of the dossiers in `ask` whatever the cursor
/// (those the server refused a change to as gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeRequest {
    pub cursor: u64,
    pub ask: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeAnswer {
    pub notices: Vec<Notice>,
    /// The cursor to ask from next time.
    pub cursor: u64,
    /// More notices wait after `cursor`.
    pub more: bool,
}

/// The prefix of an erased dossier's stand-in in the projections.
pub const ERASED_PREFIX: &str = "erased-";

/// Whether a projection row's dossier is an erased one's stand-in.
pub fn is_erased_stand_in(dossier_id: &str) -> bool {
    dossier_id.starts_with(ERASED_PREFIX)
}

/// The dossier as an erasure leaves it to the reports: the same records
/// (so the figures of days already reported stay what they were) under
/// the stand-in id `pseudonym` (`erased-…`, unrelated to the dossier's
/// id), with nothing that says who the patient was: no name, phone,
/// address, age, sex, notes or typical case, no caller's number, no
/// delivery address. Its follow-ups stop at `erased_at` and its deliveries
/// still to make go, so it is on no list of work to do (and the projection
/// keeps its patient row off every list of patients). Only for projecting:
/// it is never a document.
pub fn without_identity(v: &DossierView, pseudonym: &str, erased_at: NaiveDateTime) -> DossierView {
    let mut out = v.clone();
    out.id = pseudonym.to_string();
    out.patient = crate::dossier::Patient {
        name: "（已删除）".to_string(),
        ..Default::default()
    };
    for c in &mut out.calls {
        c.caller_phone = String::new();
        c.relation = None;
        c.condition = None;
        c.treatment = None;
        c.outcome = None;
    }
    // Nothing is still to deliver to no one.
    out.deliveries.retain(|d| {
        matches!(
            d.status,
            Some(DeliveryStatus::Delivered) | Some(DeliveryStatus::Failed)
        )
    });
    for d in &mut out.deliveries {
        d.address = None;
        d.notes = None;
        d.status_reason = None;
    }
    out.hospital_stays.clear();
    out.greetings.clear();
    out.home_visits.clear();
    out.typical = None;
    out.conflicts.clear();
    out.plan.push(PlanChange {
        id: format!("{pseudonym}-stop"),
        at: erased_at,
        staff: String::new(),
        action: PlanAction::Stop,
        date: None,
        reason: Some(StopReason::Other),
        assignee: None,
        notes: None,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dossier::Dossier;
    use crate::records::Call;
    use crate::when::parse_datetime;

    #[test]
    fn the_stand_in_keeps_the_records_and_nothing_of_the_person() {
        let at = parse_datetime("2026-11-02 09:00").unwrap();
        let (mut d, _) =
            Dossier::create("d1", "44", at, automerge::ActorId::from(vec![1u8; 16]), 0).unwrap();
        d.edit(0, |tx| {
            tx.update_patient(&crate::dossier::PatientUpdate {
                name: Some("王秀兰".into()),
                address: Some("广州市天河路1号".into()),
                ..Default::default()
            })?;
            tx.add_phone("13800000001")?;
            tx.add(&Call {
                id: "c1".into(),
                at,
                staff: "s1".into(),
                caller_phone: "13800000001".into(),
                relation: None,
                source: "报纸".into(),
                disease: Some("高血压".into()),
                condition: Some("头晕".into()),
                treatment: None,
                outcome: Some("王秀兰的女儿来电".into()),
            })
        })
        .unwrap();
        let v = d.view().unwrap();
        let erased_at = parse_datetime("2026-11-20 10:00").unwrap();
        let s = without_identity(&v, "erased-ab12", erased_at);
        assert_eq!(s.id, "erased-ab12");
        assert_eq!(s.calls.len(), 1);
        assert_eq!(s.calls[0].disease.as_deref(), Some("高血压"));
        let text = format!("{s:?}");
        for secret in ["王秀兰", "13800000001", "天河路", "头晕", "d1\""] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(
            s.plan
                .iter()
                .any(|p| p.action == PlanAction::Stop && p.at == erased_at)
        );
        assert!(crate::followup::schedule(&s).iter().all(|slot| {
            slot.satisfied_at.is_some() || slot.closed_at.is_some() || slot.anchor > erased_at
        }));
    }
}
