//! The records a patient dossier (病历档案) holds.
//!
//! Each record is a flat struct with its own id. In the automerge document a
//! record is a map of scalars stored under its id in its collection (a map of
//! id → record), never a list element: two devices that append records to the
//! same dossier while offline create different keys, so both survive the
//! merge, and no ordering of list insertions can interleave them. Display
//! order comes from each record's time.
//!
//! The mapping between a struct and its automerge map goes through serde:
//! every field is a string, integer or boolean, `None` is left out.

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A kind of record stored in the dossier under its own collection key.
pub trait Record: Serialize + DeserializeOwned {
    /// The key of the map (id → record) in the dossier document's root.
    const COLLECTION: &'static str;
    fn id(&self) -> &str;
    /// When it happened, for the dossier's timeline.
    fn at(&self) -> NaiveDateTime;
    /// Who it is credited to (经手人员).
    fn staff(&self) -> &str;
}

macro_rules! record {
    ($ty:ty, $collection:literal, $at:ident) => {
        impl Record for $ty {
            const COLLECTION: &'static str = $collection;
            fn id(&self) -> &str {
                &self.id
            }
            fn at(&self) -> NaiveDateTime {
                self.$at
            }
            fn staff(&self) -> &str {
                &self.staff
            }
        }
    };
}

/// 电话咨询: one line of the consultation register (《电话咨询登记表》).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    /// The number the caller rang from, normalised.
    pub caller_phone: String,
    /// The caller's relation to the patient (本人, 子女, 配偶 ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub relation: Option<String>,
    /// 信息来源: the ad channel that brought the call (电视, 报纸, 广播 ...).
    pub source: String,
    /// The disease discussed on this call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub disease: Option<String>,
    /// 病情: the patient's condition as told.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub condition: Option<String>,
    /// 治疗情况: treatment so far.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub treatment: Option<String>,
    /// Outcome / next step agreed on the call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<String>,
}
record!(Call, "calls", at);

/// 到堂: a visit to the office, received by an expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub purchased: bool,
    /// 未购原因: why the visitor did not buy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason_not_bought: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}
record!(Visit, "visits", at);

/// 未购原因: why a visitor did not buy, from the handbook's list ("要及時分析
/// 原因"). Stored in the visit as its Chinese name, 其他 with the text typed
/// (`其他：…`); older visits' free text reads as 其他.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotBoughtReason {
    Price,
    Doubts,
    Family,
    OtherMedicine,
    Considering,
    Other,
}

impl NotBoughtReason {
    pub const ALL: [NotBoughtReason; 6] = [
        NotBoughtReason::Price,
        NotBoughtReason::Doubts,
        NotBoughtReason::Family,
        NotBoughtReason::OtherMedicine,
        NotBoughtReason::Considering,
        NotBoughtReason::Other,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            NotBoughtReason::Price => "价格",
            NotBoughtReason::Doubts => "疗效疑虑",
            NotBoughtReason::Family => "家属意见",
            NotBoughtReason::OtherMedicine => "在用其他药",
            NotBoughtReason::Considering => "考虑中",
            NotBoughtReason::Other => "其他",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotBoughtReason::Price => "price",
            NotBoughtReason::Doubts => "doubts",
            NotBoughtReason::Family => "family",
            NotBoughtReason::OtherMedicine => "other_medicine",
            NotBoughtReason::Considering => "considering",
            NotBoughtReason::Other => "other",
        }
    }

    /// By its code or its Chinese name.
    pub fn parse(s: &str) -> Option<NotBoughtReason> {
        let s = s.trim();
        NotBoughtReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.chinese() == s)
    }

    /// The label a stored reason counts under in reports: the list name
    /// before `：` (a built-in code read as its Chinese name); text typed
    /// before there was a list is its own label (a report counts a label
    /// its list lacks under 其他).
    pub fn label_of_stored(text: &str) -> &str {
        let (head, _) = split_stored(text);
        NotBoughtReason::parse(head).map_or(head, |r| r.chinese())
    }
}

/// A stored not-bought reason or non-patient kind, `label：text` (a full-
/// width or an ASCII colon), as its label and its text, trimmed:
/// `其他：下雨` → (`其他`, `下雨`); a value without a colon is all label.
pub fn split_stored(stored: &str) -> (&str, Option<&str>) {
    match stored.split_once(['：', ':']) {
        Some((label, text)) => (label.trim(), Some(text.trim())),
        None => (stored.trim(), None),
    }
}

/// 购药: a purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub product: String,
    /// Boxes (盒).
    pub quantity: i64,
    /// Amount paid, in fen (分), so money is never a float.
    pub amount_fen: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub invoice: Option<String>,
    /// 用药到期时间: when this supply runs out (red on the paper register).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runout: Option<NaiveDate>,
    /// Gifts handed over with the purchase.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gifts: Option<String>,
    /// 礼品收据 number.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gift_receipt: Option<String>,
}
record!(Purchase, "purchases", at);

/// 回访: a follow-up call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    /// What kind of call it was (回访, 关怀, 用药指导, 促到堂 ...): free text.
    pub kind: String,
    pub outcome: String,
    /// 切入点: the entry point for the next call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_entry: Option<String>,
}
record!(FollowUp, "followups", at);

/// 住院: a hospital stay, registered so follow-up calls fit around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HospitalStay {
    pub id: String,
    /// When it was registered.
    pub at: NaiveDateTime,
    pub staff: String,
    pub admitted: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub discharged: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hospital: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}
record!(HospitalStay, "hospital_stays", at);

/// A contact in person or by occasion: 逢年过节打招呼, 家访, 外送.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}

/// 逢年过节打招呼: a holiday greeting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Greeting(pub Contact);
/// 家访: a home visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomeVisit(pub Contact);

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// 待送: still to deliver.
    Pending,
    /// 已送: delivered.
    Delivered,
    /// 未送达: it did not reach the patient (the reason says why).
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "待送",
            DeliveryStatus::Delivered => "已送",
            DeliveryStatus::Failed => "未送达",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// By its code or its Chinese name.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        let s = s.trim();
        DeliveryStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s || k.chinese() == s)
    }
}

/// 外送: a delivery of goods to the patient, with guidance on taking them.
/// Deliveries registered before they carried their goods have only the
/// contact's fields (`at`, `staff`, `notes`): they were done, and read as
/// delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    /// When it was registered.
    pub at: NaiveDateTime,
    pub staff: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
    /// The purchase it delivers (a purchase record's id).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub purchase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub product: Option<String>,
    /// Boxes (盒).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<String>,
    /// The day it is to be delivered by.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due: Option<NaiveDate>,
    /// `None`: an older delivery, which was done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<DeliveryStatus>,
    /// Why it did not reach the patient.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status_reason: Option<String>,
    /// When it was delivered (or found undeliverable).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub settled_at: Option<NaiveDateTime>,
    /// Who recorded that.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub settled_by: Option<String>,
}

impl Delivery {
    /// Where it stands (an older delivery, without a status, was done).
    pub fn state(&self) -> DeliveryStatus {
        self.status.unwrap_or(DeliveryStatus::Delivered)
    }
}
record!(Delivery, "deliveries", at);

macro_rules! contact_record {
    ($ty:ty, $collection:literal) => {
        impl Record for $ty {
            const COLLECTION: &'static str = $collection;
            fn id(&self) -> &str {
                &self.0.id
            }
            fn at(&self) -> NaiveDateTime {
                self.0.at
            }
            fn staff(&self) -> &str {
                &self.0.staff
            }
        }
    };
}
contact_record!(Greeting, "greetings");
contact_record!(HomeVisit, "home_visits");

/// 问题患者: state of a problem (complaint, risk) until it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemState {
    Open,
    Handling,
    Resolved,
}

impl ProblemState {
    pub fn chinese(self) -> &'static str {
        match self {
            ProblemState::Open => "待处理",
            ProblemState::Handling => "处理中",
            ProblemState::Resolved => "已解决",
        }
    }
}

/// 问题患者: one problem raised about a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    /// When it was opened.
    pub at: NaiveDateTime,
    pub staff: String,
    pub description: String,
    pub state: ProblemState,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub handling_at: Option<NaiveDateTime>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_at: Option<NaiveDateTime>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolution: Option<String>,
    /// Who resolved it (problems resolved before this was kept: the one
    /// who opened it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_by: Option<String>,
}
record!(Problem, "problems", at);

impl Problem {
    /// Who is credited with resolving it.
    pub fn resolver(&self) -> &str {
        self.resolved_by.as_deref().unwrap_or(&self.staff)
    }
}

/// 典型病例: a patient with a good, documented outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypicalCase {
    pub flagged: bool,
    pub at: NaiveDateTime,
    pub staff: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}

/// Sex as recorded on the dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    pub fn parse(s: &str) -> Option<Sex> {
        match s.trim() {
            "男" | "m" | "M" | "male" => Some(Sex::Male),
            "女" | "f" | "F" | "female" => Some(Sex::Female),
            _ => None,
        }
    }
    pub fn chinese(self) -> &'static str {
        match self {
            Sex::Male => "男",
            Sex::Female => "女",
        }
    }
}

/// Yuan as typed (`1280`, `1280.5`, `1280.50`) to fen, without floats.
pub fn parse_yuan(s: &str) -> Result<i64, crate::DomainError> {
    let bad =
        || crate::DomainError::invalid("amount", format!("`{s}`: expected yuan like 1280.50"));
    let t = s.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// Fen as yuan with two decimals, e.g. `1280.50`.
pub fn fmt_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", (fen / 100).abs(), (fen % 100).abs())
}

#[cfg(test)]
mod money_tests {
    use super::*;

    #[test]
    fn yuan_parsing() {
        assert_eq!(parse_yuan("1280").unwrap(), 128000);
        assert_eq!(parse_yuan("1280.5").unwrap(), 128050);
        assert_eq!(parse_yuan("0.05").unwrap(), 5);
        for bad in [
            "",
            "-1",
            "1.234",
            "1,000",
            "abc",
            ".5",
            "99999999999999999999",
        ] {
            assert!(parse_yuan(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_yuan(128050), "1280.50");
        assert_eq!(fmt_yuan(5), "0.05");
        assert_eq!(fmt_yuan(-150), "-1.50");
    }
}

/// 非正常咨询: what a call that is not a patient's was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonPatientKind {
    WrongNumber,
    Competitor,
    Press,
    Prank,
    Sales,
    Other,
}

impl NonPatientKind {
    pub const ALL: [NonPatientKind; 6] = [
        NonPatientKind::WrongNumber,
        NonPatientKind::Competitor,
        NonPatientKind::Press,
        NonPatientKind::Prank,
        NonPatientKind::Sales,
        NonPatientKind::Other,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            NonPatientKind::WrongNumber => "打错电话",
            NonPatientKind::Competitor => "同行",
            NonPatientKind::Press => "媒体",
            NonPatientKind::Prank => "骚扰",
            NonPatientKind::Sales => "推销",
            NonPatientKind::Other => "其他",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NonPatientKind::WrongNumber => "wrong_number",
            NonPatientKind::Competitor => "competitor",
            NonPatientKind::Press => "press",
            NonPatientKind::Prank => "prank",
            NonPatientKind::Sales => "sales",
            NonPatientKind::Other => "other",
        }
    }

    /// By its code or its Chinese name.
    pub fn parse(s: &str) -> Option<NonPatientKind> {
        let s = s.trim();
        NonPatientKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s || k.chinese() == s)
    }

    /// The label a stored kind counts under (see [`NonPatientCall::kind`]).
    pub fn label_of(stored: &str) -> &str {
        let (head, _) = split_stored(stored);
        NonPatientKind::parse(head).map_or(head, |k| k.chinese())
    }
}

/// 非正常咨询: a call that was not about a patient (a wrong number, a
/// competitor, the press, a prank, a sales call). It belongs to no dossier
/// and never counts as a consultation call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonPatientCall {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    /// A built-in kind's code (`wrong_number` …), or a catalogue kind's
    /// name, or `其他：<typed>` for a kind neither lists (read with
    /// [`NonPatientKind::label_of`]).
    pub kind: String,
    /// The number it came from, normalised, when it could be told.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}

/// Why a patient's follow-ups stop (回访终止).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Died,
    Refuses,
    MovedAway,
    StoppedMedicine,
    Other,
}

impl StopReason {
    pub const ALL: [StopReason; 5] = [
        StopReason::Died,
        StopReason::Refuses,
        StopReason::MovedAway,
        StopReason::StoppedMedicine,
        StopReason::Other,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            StopReason::Died => "去世",
            StopReason::Refuses => "拒访",
            StopReason::MovedAway => "迁出",
            StopReason::StoppedMedicine => "停药",
            StopReason::Other => "其他",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Died => "died",
            StopReason::Refuses => "refuses",
            StopReason::MovedAway => "moved_away",
            StopReason::StoppedMedicine => "stopped_medicine",
            StopReason::Other => "other",
        }
    }

    /// By its code or its Chinese name.
    pub fn parse(s: &str) -> Option<StopReason> {
        let s = s.trim();
        StopReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.chinese() == s)
    }
}

/// What a change to the follow-up plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// An extra follow-up call on `date`.
    Extra,
    /// The next open follow-up moves to `date`.
    Postpone,
    /// Follow-ups stop (`reason`) until resumed.
    Stop,
    Resume,
    /// `assignee` makes the patient's follow-up calls.
    Assign,
}

impl PlanAction {
    pub fn chinese(self) -> &'static str {
        match self {
            PlanAction::Extra => "加访",
            PlanAction::Postpone => "改期",
            PlanAction::Stop => "停访",
            PlanAction::Resume => "恢复回访",
            PlanAction::Assign => "指定回访人",
        }
    }
}

/// A change to a patient's follow-up plan ("視具體情況而定"). The plan stays
/// derived: the schedule is computed from the dossier's records, these
/// included, in the order they were made; nothing of it is replicated as
/// items to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanChange {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    pub action: PlanAction,
    /// The day of an extra call, or the day a postponed one moves to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date: Option<NaiveDate>,
    /// Why follow-ups stop.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<StopReason>,
    /// Who makes the calls from now on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub assignee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}

/// 参加活动: the patient took part in an activity (活动: 义诊, 讲座, 促销 …)
/// of headquarters or of the office; purchases in the activity's window are
/// attributed to it (see [`crate::activity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participation {
    pub id: String,
    pub at: NaiveDateTime,
    pub staff: String,
    /// The activity's id (a catalogue code, or an office activity's id).
    pub activity: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notes: Option<String>,
}

/// 转档: the dossier moved from one office to another (a patient who moved
/// province), written by headquarters. Records made before it stay the old
/// office's in reports; what comes after is the new office's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub at: NaiveDateTime,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Who ordered it at headquarters.
    pub by: String,
}
