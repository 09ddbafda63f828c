//! One patient dossier (病历档案) as one automerge document.
//!
//! Layout of the document (every key below the root is created in the
//! dossier's first change, by the one device that created it, so no two
//! devices ever race to create the same container):
//!
//! ```text
//! ROOT
//! ├ schema: 1            id: "<uuid v7>"      office: "44"     created_at
//! ├ patient: { name, sex, age, birth_year, address, knows, notes,
//! │            phones: { "<normalised>": true },            (a set)
//! │            diseases: { "冠心病": true } }                (a set)
//! ├ calls | visits | purchases | followups | hospital_stays |
//! │ greetings | home_visits | deliveries | problems:
//! │            { "<record id>": { field: scalar, ... } }
//! ├ typical: { flagged, at, staff, notes }
//! ├ plan/<record id>: { at, staff, action, date, reason, assignee, notes }
//! ├ joined/<record id>: { at, staff, activity, notes }   (took part in an activity)
//! ├ transfer/<record id>: { at, from, to, reason, by }    (moved office; with `office`)
//! └ merged_into: "<uuid>"  (only on a duplicate folded into another dossier)
//! ```
//!
//! A change to the follow-up plan is a map at the root under its own key
//! (`plan/<id>`), not an entry of a `plan` collection: dossiers made before
//! plans existed have no such container, and two devices creating one
//! offline would make two, one hiding the other. Keys of their own never
//! collide. The patient's `assignee` and `followup_stop` fields are written
//! with each plan change of their kind, so two devices changing them offline
//! leave a conflict that [`DossierView::conflicts`] lists; the plan itself is
//! derived from the records, in the order they were made.
//!
//! Scalar fields that two devices set differently while offline stay as an
//! automerge conflict; [`DossierView::conflicts`] lists them so staff can
//! choose, instead of one value silently winning.

use crate::DomainError;
use crate::records::*;
use automerge::iter::{DocItem, DocObjItem};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef,
    Value, ValueRef,
};
use chrono::NaiveDateTime;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Version of the document layout above.
pub const SCHEMA_VERSION: i64 = 1;

const PATIENT: &str = "patient";
const PHONES: &str = "phones";
const DISEASES: &str = "diseases";
const TYPICAL: &str = "typical";
const MERGED_INTO: &str = "merged_into";
/// Root keys `entered/<record id>`: who typed a record in for the staff
/// member it is credited to (a 主管 at the workstation), when that is
/// someone else. One scalar per record at the root, like the plan changes,
/// so two devices never race to create a shared map.
const ENTERED_PREFIX: &str = "entered/";

/// Every collection of records a dossier has.
pub const COLLECTIONS: [&str; 9] = [
    Call::COLLECTION,
    Visit::COLLECTION,
    Purchase::COLLECTION,
    FollowUp::COLLECTION,
    HospitalStay::COLLECTION,
    Greeting::COLLECTION,
    HomeVisit::COLLECTION,
    Delivery::COLLECTION,
    Problem::COLLECTION,
];

/// The patient's own fields, as read from the document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Patient {
    pub name: String,
    pub phones: Vec<String>,
    pub diseases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_year: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// 是否知道: whether the patient knows the diagnosis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knows: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Fields to set on the patient; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientUpdate {
    pub name: Option<String>,
    pub sex: Option<Sex>,
    pub age: Option<i64>,
    pub birth_year: Option<i64>,
    pub address: Option<String>,
    pub knows: Option<bool>,
    pub notes: Option<String>,
}

/// The patient fields staff may set (and so resolve) by name. The last two
/// are the follow-up plan's state, set by plan changes (see the module).
pub const PATIENT_FIELDS: [&str; 9] = [
    "name",
    "sex",
    "age",
    "birth_year",
    "address",
    "knows",
    "notes",
    ASSIGNEE,
    FOLLOWUP_STOP,
];

/// The patient field naming who makes the follow-up calls.
pub const ASSIGNEE: &str = "assignee";
/// The patient field holding why follow-ups stopped (empty: they go on).
pub const FOLLOWUP_STOP: &str = "followup_stop";
/// The root key prefix of plan changes.
const PLAN_PREFIX: &str = "plan/";
/// Root keys `joined/<record id>`: the activities the patient took part in
/// (maps of their own, for the reason plan changes are).
const JOINED_PREFIX: &str = "joined/";
/// Root keys `transfer/<record id>`: the dossier's moves between offices.
const TRANSFER_PREFIX: &str = "transfer/";

/// Parses a value typed for patient field `field` into what the document
/// stores, with the same checks as everywhere else.
pub fn patient_field_value(field: &str, text: &str) -> Result<ScalarValue, DomainError> {
    let t = text.trim();
    let number = |field: &'static str, lo: i64, hi: i64| -> Result<ScalarValue, DomainError> {
        match t.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(ScalarValue::Int(n)),
            _ => Err(DomainError::invalid(
                field,
                format!("`{t}`: expected a whole number from {lo} to {hi}"),
            )),
        }
    };
    match field {
        "name" => Ok(crate::staff::validate_name("name", t)?.into()),
        "sex" => Sex::parse(t)
            .map(|s| s.chinese().into())
            .ok_or_else(|| DomainError::invalid("sex", format!("`{t}`: expected 男 or 女"))),
        "age" => number("age", 0, 130),
        "birth_year" => number("birth_year", 1900, 2100),
        "address" => Ok(crate::limits::field("address", t)?.into()),
        "notes" => Ok(crate::limits::field("notes", t)?.into()),
        ASSIGNEE => Ok(crate::staff::validate_name("assignee", t)?.into()),
        FOLLOWUP_STOP => match t {
            "" | "恢复" | "resume" => Ok("".into()),
            _ => crate::records::StopReason::parse(t)
                .map(|r| r.as_str().into())
                .ok_or_else(|| {
                    DomainError::invalid(
                        "followup_stop",
                        format!("`{t}`: expected 去世, 拒访, 迁出, 停药, 其他 or 恢复"),
                    )
                }),
        },
        "knows" => match t {
            "是" | "yes" | "知道" | "true" => Ok(ScalarValue::Boolean(true)),
            "否" | "no" | "不知道" | "false" => Ok(ScalarValue::Boolean(false)),
            _ => Err(DomainError::invalid(
                "knows",
                format!("`{t}`: expected 是 or 否"),
            )),
        },
        other => Err(DomainError::invalid(
            "field",
            format!("`{other}`: expected one of {}", PATIENT_FIELDS.join(", ")),
        )),
    }
}

/// A patient field with more than one concurrent value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub field: String,
    pub values: Vec<String>,
}

/// Everything in a dossier, read out of the document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DossierView {
    pub id: String,
    pub office: String,
    pub created_at: NaiveDateTime,
    pub patient: Patient,
    pub calls: Vec<Call>,
    pub visits: Vec<Visit>,
    pub purchases: Vec<Purchase>,
    pub followups: Vec<FollowUp>,
    pub hospital_stays: Vec<HospitalStay>,
    pub greetings: Vec<Greeting>,
    pub home_visits: Vec<HomeVisit>,
    pub deliveries: Vec<Delivery>,
    pub problems: Vec<Problem>,
    /// Changes to the follow-up plan, in the order they were made.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub plan: Vec<PlanChange>,
    /// The activities the patient took part in (活动), by time.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub participations: Vec<Participation>,
    /// Moves between offices, by time.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub transfers: Vec<Transfer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typical: Option<TypicalCase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    pub conflicts: Vec<Conflict>,
    /// Record id → who entered it, for records typed in by someone else
    /// than the staff member they are credited to.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub entered_by: BTreeMap<String, String>,
}

impl DossierView {
    /// The office the dossier belonged to at `t`: before its first
    /// transfer, that transfer's `from`; then each transfer's `to` from its
    /// time on; without transfers, its office. Reports count an event at
    /// the office where it happened.
    pub fn office_at(&self, t: NaiveDateTime) -> &str {
        let Some(first) = self.transfers.first() else {
            return &self.office;
        };
        let mut office = first.from.as_str();
        for tr in self.transfers.iter().take_while(|tr| tr.at <= t) {
            office = &tr.to;
        }
        office
    }

    /// Number of records of every kind, for totals and checks.
    pub fn record_count(&self) -> usize {
        self.calls.len()
            + self.visits.len()
            + self.purchases.len()
            + self.followups.len()
            + self.hospital_stays.len()
            + self.greetings.len()
            + self.home_visits.len()
            + self.deliveries.len()
            + self.problems.len()
    }
}

/// The dossier a raw dossier document was merged into, if any (for code
/// that holds the document without a [`Dossier`], e.g. the server's ingest).
pub fn merged_into_of(doc: &Automerge) -> Result<Option<String>, DomainError> {
    Ok(doc
        .get(ROOT, MERGED_INTO)?
        .and_then(|(v, _)| v.as_str().map(str::to_string)))
}

/// What the changes that bring a dossier into being say at its root, read
/// from their operations without building the document (the server checks
/// a new dossier's id and office this way, at a fraction of the cost of
/// applying its changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creation {
    /// The root `id` and `office` as the last put of each leaves them
    /// (`None`: never put, deleted, or not text).
    pub id: Option<String>,
    pub office: Option<String>,
    /// Some change folds the dossier into another one (`merged_into`).
    pub merges: bool,
    /// Some change puts or deletes the root `id` or `office`: who a
    /// dossier is and whose it is are set once, by its creation (the
    /// server refuses such a change to a dossier it holds).
    pub rewrites_identity: bool,
    /// Some change writes a transfer (`transfer/<id>`): headquarters' alone
    /// (the server refuses one from any device), since reports count a
    /// record at the office its transfers say.
    pub moves: bool,
}

/// Reads [`Creation`] from changes given in causal order (one device's own
/// changes, as it pushes them). Automerge has already checked, when it
/// parsed them, that their operations decode.
///
/// Decoding a change's operations costs as much as parsing it, so a change
/// that cannot touch these keys is skipped: a change's columns are never
/// compressed (automerge refuses such a change; a compressed chunk is
/// another chunk type), and a map key it writes appears in its key column
/// as its length (LEB128, one byte here) and its UTF-8 bytes. A change
/// without any of those byte strings puts none of these keys.
pub fn creation_of(changes: &[automerge::Change]) -> Creation {
    use automerge::legacy::{Key, ObjectId, OpType};
    const KEYS: [&[u8]; 3] = [b"\x02id", b"\x06office", b"\x0bmerged_into"];
    let mentions = |bytes: &[u8], key: &[u8]| bytes.windows(key.len()).any(|w| w == key);
    let mut creation = Creation {
        id: None,
        office: None,
        merges: false,
        rewrites_identity: false,
        moves: false,
    };
    for change in changes {
        let raw = change.raw_bytes();
        if !KEYS.iter().any(|k| mentions(raw, k)) && !mentions(raw, TRANSFER_PREFIX.as_bytes()) {
            continue;
        }
        for op in change.decode().operations {
            let (ObjectId::Root, Key::Map(key)) = (&op.obj, &op.key) else {
                continue;
            };
            let text = match &op.action {
                OpType::Put(ScalarValue::Str(s)) => Some(s.to_string()),
                _ => None,
            };
            match key.as_str() {
                "id" => {
                    creation.id = text;
                    creation.rewrites_identity = true;
                }
                "office" => {
                    creation.office = text;
                    creation.rewrites_identity = true;
                }
                MERGED_INTO => creation.merges = true,
                k if k.starts_with(TRANSFER_PREFIX) => creation.moves = true,
                _ => {}
            }
        }
    }
    creation
}

/// The latest record time (a record's `at`, a delivery's `settled_at`) a
/// change writes, if any: what
/// a server receiving the change holds against its own clock
/// ([`crate::when::check_not_ahead`]).
pub fn latest_record_time(change: &automerge::Change) -> Option<chrono::NaiveDateTime> {
    use automerge::legacy::{Key, OpType};
    // Keys are stored as length-prefixed strings: most changes (a patient
    // field, a merge) write no `at` and are not decoded.
    let raw = change.raw_bytes();
    let mentions = |key: &[u8]| raw.windows(key.len()).any(|w| w == key);
    if !mentions(b"\x02at") && !mentions(b"\x0asettled_at") {
        return None;
    }
    change
        .decode()
        .operations
        .iter()
        .filter_map(|op| match (&op.key, &op.action) {
            (Key::Map(key), OpType::Put(ScalarValue::Str(s)))
                if matches!(key.as_str(), "at" | "settled_at") =>
            {
                crate::when::read_stored_datetime(s)
            }
            _ => None,
        })
        .max()
}

/// A dossier document with the actor of the device editing it.
pub struct Dossier {
    doc: Automerge,
}

/// An automerge change produced by one edit, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    pub hash: ChangeHash,
    pub bytes: Vec<u8>,
}

impl Dossier {
    /// Creates a dossier with its whole layout in one first change.
    /// `time_ms` is the wall clock of the device, stored in the change.
    pub fn create(
        id: &str,
        office: &str,
        created_at: NaiveDateTime,
        actor: ActorId,
        time_ms: i64,
    ) -> Result<(Dossier, NewChange), DomainError> {
        let mut doc = Automerge::new().with_actor(actor);
        let mut d = Dossier {
            doc: Automerge::new(),
        };
        let result = doc.transact_with(
            |_| CommitOptions::default().with_time(time_ms),
            |tx| -> Result<(), DomainError> {
                tx.put(ROOT, "schema", SCHEMA_VERSION)?;
                tx.put(ROOT, "id", id)?;
                tx.put(ROOT, "office", office)?;
                tx.put(ROOT, "created_at", crate::when::fmt_datetime(created_at))?;
                let patient = tx.put_object(ROOT, PATIENT, ObjType::Map)?;
                tx.put_object(&patient, PHONES, ObjType::Map)?;
                tx.put_object(&patient, DISEASES, ObjType::Map)?;
                tx.put_object(ROOT, TYPICAL, ObjType::Map)?;
                for c in COLLECTIONS {
                    tx.put_object(ROOT, c, ObjType::Map)?;
                }
                Ok(())
            },
        );
        result.map_err(|f| f.error)?;
        d.doc = doc;
        let change = d
            .last_change()
            .ok_or_else(|| DomainError::Malformed("no change".into()))?;
        Ok((d, change))
    }

    /// Loads a saved document. Bytes from the network go through here too,
    /// so any malformation is an error, never a panic of ours.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Dossier, DomainError> {
        Dossier::from_document(Automerge::load(bytes)?, actor)
    }

    /// A document already loaded (e.g. by a merge), checked like [`load`].
    ///
    /// [`load`]: Dossier::load
    pub fn from_document(doc: Automerge, actor: ActorId) -> Result<Dossier, DomainError> {
        let d = Dossier {
            doc: doc.with_actor(actor),
        };
        d.id()?;
        Ok(d)
    }

    /// The whole document, as a replica stores it: without DEFLATE. A
    /// dossier is read and rewritten on every edit, and an uncompressed
    /// dossier saves ~5× and loads ~2× faster (measured on 2 000 dossiers of
    /// the replica benchmark: save 60 → 12 µs, load 272 → 123 µs) for ~1.5 KB
    /// more per dossier, a tenth of what its projection rows take.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    pub fn id(&self) -> Result<String, DomainError> {
        root_str(&self.doc, "id")
    }

    pub fn office(&self) -> Result<String, DomainError> {
        root_str(&self.doc, "office")
    }

    /// The dossier this one was merged into, if it is a duplicate.
    pub fn merged_into(&self) -> Result<Option<String>, DomainError> {
        merged_into_of(&self.doc)
    }

    fn last_change(&self) -> Option<NewChange> {
        self.doc.get_last_local_change().map(|c| NewChange {
            hash: c.hash(),
            bytes: c.raw_bytes().to_vec(),
        })
    }

    /// Applies one edit as one automerge change. Returns `None` when the
    /// edit changed nothing (e.g. setting a field to the value it has).
    pub fn edit<F>(&mut self, time_ms: i64, f: F) -> Result<Option<NewChange>, DomainError>
    where
        F: FnOnce(&mut DossierTx<'_, '_>) -> Result<(), DomainError>,
    {
        let patient = obj(&self.doc, &ROOT, PATIENT)?;
        let phones = obj(&self.doc, &patient, PHONES)?;
        let diseases = obj(&self.doc, &patient, DISEASES)?;
        let typical = obj(&self.doc, &ROOT, TYPICAL)?;
        let outcome = self.doc.transact_with(
            |_| CommitOptions::default().with_time(time_ms),
            |tx| {
                let mut dtx = DossierTx {
                    tx,
                    patient,
                    phones,
                    diseases,
                    typical,
                    enterer: None,
                };
                f(&mut dtx)
            },
        );
        match outcome {
            Ok(success) => Ok(success.hash.and_then(|_| self.last_change())),
            Err(failure) => Err(failure.error),
        }
    }

    /// Reads the whole dossier in one walk over the document.
    ///
    /// Asking automerge for each key and each record separately costs a
    /// seek per question; on a patient with two years of history that was
    /// as much as loading the document. `ReadDoc::iter` visits every live
    /// object once, parents before children, so each item is placed by the
    /// object it belongs to. Only a patient field that automerge marks as
    /// conflicted is asked for again, to list all its values.
    pub fn view(&self) -> Result<DossierView, DomainError> {
        Dossier::view_of(&self.doc)
    }

    /// [`view`] of a dossier document that is only read, not edited (a
    /// merged or built document): no actor to set, and no separate check
    /// that it is a dossier, since the walk fails on anything else (looking
    /// its id up first cost about a fifth as much as the walk itself).
    ///
    /// [`view`]: Dossier::view
    pub fn view_of(doc: &Automerge) -> Result<DossierView, DomainError> {
        let mut walk = Walk::default();
        let mut places: HashMap<ObjId, Place> = HashMap::new();
        let mut current: Option<(Arc<ObjId>, Option<Place>)> = None;
        for DocObjItem { obj, item } in doc.iter() {
            let DocItem::Map(item) = item else { continue };
            let place = match &current {
                Some((last, place)) if Arc::ptr_eq(last, &obj) => *place,
                _ => {
                    let place = if *obj == ROOT {
                        Some(Place::Root)
                    } else {
                        places.get(&*obj).copied()
                    };
                    current = Some((obj, place));
                    place
                }
            };
            if let Some(place) = place {
                walk.visit(place, &item, &mut places);
            }
        }
        walk.finish(doc)
    }
}

/// Which part of the dossier layout an object is.
#[derive(Debug, Clone, Copy)]
enum Place {
    Root,
    Patient,
    Phones,
    Diseases,
    Typical,
    /// Index into [`COLLECTIONS`].
    Collection(usize),
    /// A record: its collection's index and its index among that
    /// collection's records.
    Record(usize, usize),
    /// A plan change: its index among them.
    Plan(usize),
    /// A participation: its index among them.
    Joined(usize),
    /// A transfer: its index among them.
    Transfer(usize),
}

/// The patient's scalar fields, in the order conflicts are listed.
const PATIENT_SCALARS: [&str; 9] = PATIENT_FIELDS;

/// One scalar field of a record or the typical case, as found.
type Field<'a> = (Cow<'a, str>, ScalarValueRef<'a>);

/// What [`Dossier::view`] has gathered so far (borrowing from the document).
#[derive(Default)]
struct Walk<'a> {
    id: Option<Value<'static>>,
    office: Option<Value<'static>>,
    created_at: Option<Value<'static>>,
    merged_into: Option<String>,
    patient: Option<ObjId>,
    phones: Option<Vec<String>>,
    diseases: Option<Vec<String>>,
    patient_scalars: [Option<ScalarValue>; 9],
    conflicted: [bool; 9],
    /// Plan changes (root `plan/<id>` maps), their fields as found.
    plan: Vec<Vec<Field<'a>>>,
    /// Participations (root `joined/<id>` maps), their fields as found.
    joined: Vec<Vec<Field<'a>>>,
    /// Transfers (root `transfer/<id>` maps), their fields as found.
    transfers: Vec<Vec<Field<'a>>>,
    typical: Option<Vec<Field<'a>>>,
    /// Keys in the typical-case map, values of any kind (as `length`).
    typical_len: usize,
    collections: [Option<Vec<Vec<Field<'a>>>>; 9],
    entered_by: BTreeMap<String, String>,
}

impl<'a> Walk<'a> {
    fn visit(
        &mut self,
        place: Place,
        item: &automerge::iter::MapRangeItem<'a>,
        places: &mut HashMap<ObjId, Place>,
    ) {
        let key: &str = &item.key;
        let is_map = matches!(item.value, ValueRef::Object(ObjType::Map));
        let mut child = |place: Place| {
            places.insert(item.id(), place);
        };
        match place {
            Place::Root => match key {
                PATIENT if is_map => {
                    self.patient = Some(item.id());
                    child(Place::Patient);
                }
                TYPICAL if is_map => {
                    self.typical = Some(Vec::new());
                    child(Place::Typical);
                }
                "id" => self.id = Some(item.value.clone().into()),
                "office" => self.office = Some(item.value.clone().into()),
                "created_at" => self.created_at = Some(item.value.clone().into()),
                MERGED_INTO => {
                    let v: Value<'static> = item.value.clone().into();
                    self.merged_into = v.as_str().map(str::to_string);
                }
                _ if is_map && key.starts_with(PLAN_PREFIX) => {
                    self.plan.push(Vec::new());
                    child(Place::Plan(self.plan.len() - 1));
                }
                _ if is_map && key.starts_with(JOINED_PREFIX) => {
                    self.joined.push(Vec::new());
                    child(Place::Joined(self.joined.len() - 1));
                }
                _ if is_map && key.starts_with(TRANSFER_PREFIX) => {
                    self.transfers.push(Vec::new());
                    child(Place::Transfer(self.transfers.len() - 1));
                }
                _ if key.starts_with(ENTERED_PREFIX) => {
                    if let ValueRef::Scalar(ScalarValueRef::Str(by)) = &item.value {
                        self.entered_by
                            .insert(key[ENTERED_PREFIX.len()..].to_string(), by.to_string());
                    }
                }
                _ => {
                    if let Some(i) = COLLECTIONS.iter().position(|c| *c == key)
                        && is_map
                    {
                        self.collections[i] = Some(Vec::new());
                        child(Place::Collection(i));
                    }
                }
            },
            Place::Patient => match key {
                PHONES if is_map => {
                    self.phones = Some(Vec::new());
                    child(Place::Phones);
                }
                DISEASES if is_map => {
                    self.diseases = Some(Vec::new());
                    child(Place::Diseases);
                }
                _ => {
                    if let Some(i) = PATIENT_SCALARS.iter().position(|k| *k == key) {
                        self.conflicted[i] = item.conflict;
                        if let ValueRef::Scalar(s) = &item.value {
                            self.patient_scalars[i] = Some(s.clone().into());
                        }
                    }
                }
            },
            Place::Phones => self.phones.get_or_insert_default().push(key.to_string()),
            Place::Diseases => self.diseases.get_or_insert_default().push(key.to_string()),
            Place::Typical => {
                self.typical_len += 1;
                if let (Some(fields), Some(v)) = (self.typical.as_mut(), record_scalar(&item.value))
                {
                    fields.push((item.key.clone(), v));
                }
            }
            Place::Collection(c) => {
                if is_map && let Some(records) = self.collections[c].as_mut() {
                    records.push(Vec::new());
                    let at = records.len() - 1;
                    child(Place::Record(c, at));
                }
            }
            Place::Plan(i) => {
                if let (Some(record), Some(v)) = (self.plan.get_mut(i), record_scalar(&item.value))
                {
                    record.push((item.key.clone(), v));
                }
            }
            Place::Joined(i) => {
                if let (Some(record), Some(v)) =
                    (self.joined.get_mut(i), record_scalar(&item.value))
                {
                    record.push((item.key.clone(), v));
                }
            }
            Place::Transfer(i) => {
                if let (Some(record), Some(v)) =
                    (self.transfers.get_mut(i), record_scalar(&item.value))
                {
                    record.push((item.key.clone(), v));
                }
            }
            Place::Record(c, r) => {
                if let (Some(record), Some(v)) = (
                    self.collections[c].as_mut().and_then(|rs| rs.get_mut(r)),
                    record_scalar(&item.value),
                ) {
                    record.push((item.key.clone(), v));
                }
            }
        }
    }

    fn finish(mut self, doc: &Automerge) -> Result<DossierView, DomainError> {
        let not_a_map = |key: &str| DomainError::Malformed(format!("`{key}` is not a map"));
        let patient_obj = self.patient.take().ok_or_else(|| not_a_map(PATIENT))?;
        let phones = self.phones.take().ok_or_else(|| not_a_map(PHONES))?;
        let diseases = self.diseases.take().ok_or_else(|| not_a_map(DISEASES))?;
        let typical_fields = self.typical.take().ok_or_else(|| not_a_map(TYPICAL))?;
        let text = |key: &str, v: Option<Value<'static>>| -> Result<String, DomainError> {
            match v {
                Some(v) => v
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| DomainError::Malformed(format!("root `{key}` is not text"))),
                None => Err(DomainError::Malformed(format!("no `{key}` at the root"))),
            }
        };
        let id = text("id", self.id.take())?;
        let office = text("office", self.office.take())?;
        let created_at = text("created_at", self.created_at.take())?;
        let mut conflicts = Vec::new();
        for (i, key) in PATIENT_SCALARS.iter().enumerate() {
            if !self.conflicted[i] {
                continue;
            }
            let mut values: Vec<String> = doc
                .get_all(&patient_obj, *key)?
                .iter()
                .map(|(v, _)| scalar_text(v))
                .collect();
            values.sort();
            // Two devices typing the same value concurrently (or merging the
            // same pair) is agreement, not a conflict to review.
            values.dedup();
            if values.len() > 1 {
                conflicts.push(Conflict {
                    field: key.to_string(),
                    values,
                });
            }
        }
        let [name, sex, age, birth_year, address, knows, notes, _, _] =
            std::mem::take(&mut self.patient_scalars);
        let str_of = |v: Option<ScalarValue>| v.and_then(|s| s.as_str().map(str::to_string));
        let patient = Patient {
            name: str_of(name).unwrap_or_default(),
            phones,
            diseases,
            sex: str_of(sex).and_then(|s| Sex::parse(&s)),
            age: age.and_then(|s| s.as_i64()),
            birth_year: birth_year.and_then(|s| s.as_i64()),
            address: str_of(address),
            knows: knows.and_then(|s| s.as_bool()),
            notes: str_of(notes),
        };
        let typical = if self.typical_len == 0 {
            None
        } else {
            Some(from_fields(&typical_fields)?)
        };
        let mut records = |i: usize| {
            self.collections[i]
                .take()
                .ok_or_else(|| not_a_map(COLLECTIONS[i]))
        };
        Ok(DossierView {
            id,
            office,
            created_at: crate::when::parse_datetime(&created_at)
                .map_err(|_| DomainError::Malformed(format!("created_at `{created_at}`")))?,
            patient,
            calls: sorted_records(records(0)?)?,
            visits: sorted_records(records(1)?)?,
            purchases: sorted_records(records(2)?)?,
            followups: sorted_records(records(3)?)?,
            hospital_stays: sorted_records(records(4)?)?,
            greetings: sorted_records(records(5)?)?,
            home_visits: sorted_records(records(6)?)?,
            deliveries: sorted_records(records(7)?)?,
            problems: sorted_records(records(8)?)?,
            plan: sorted_plan(&self.plan)?,
            participations: sorted_participations(&self.joined)?,
            transfers: sorted_transfers(&self.transfers)?,
            typical,
            merged_into: self.merged_into,
            conflicts,
            entered_by: self.entered_by,
        })
    }
}

/// Plan changes in the order they were made (then by id: the order every
/// device derives the plan in).
fn sorted_plan(records: &[Vec<Field<'_>>]) -> Result<Vec<PlanChange>, DomainError> {
    let mut out = records
        .iter()
        .map(|fields| from_fields(fields))
        .collect::<Result<Vec<PlanChange>, _>>()?;
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Transfers by time (then id).
fn sorted_transfers(records: &[Vec<Field<'_>>]) -> Result<Vec<Transfer>, DomainError> {
    let mut out = records
        .iter()
        .map(|fields| from_fields(fields))
        .collect::<Result<Vec<Transfer>, _>>()?;
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Participations by time (then id).
fn sorted_participations(records: &[Vec<Field<'_>>]) -> Result<Vec<Participation>, DomainError> {
    let mut out = records
        .iter()
        .map(|fields| from_fields(fields))
        .collect::<Result<Vec<Participation>, _>>()?;
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The edit operations on a dossier, inside one automerge transaction.
pub struct DossierTx<'a, 'd> {
    tx: &'a mut Transaction<'d>,
    patient: ObjId,
    phones: ObjId,
    diseases: ObjId,
    typical: ObjId,
    /// Who is typing this edit's records in ([`DossierTx::enter_as`]).
    enterer: Option<String>,
}

impl DossierTx<'_, '_> {
    /// Sets the given patient fields, skipping those already equal, so that
    /// re-typing the same age on two devices makes no conflict.
    pub fn update_patient(&mut self, u: &PatientUpdate) -> Result<(), DomainError> {
        let mut set = |key: &str, v: Option<ScalarValue>| -> Result<(), DomainError> {
            let Some(v) = v else { return Ok(()) };
            let current = self.tx.get_all(&self.patient, key)?;
            let same =
                current.len() == 1 && matches!(&current[0].0, Value::Scalar(s) if s.as_ref() == &v);
            if !same {
                self.tx.put(&self.patient, key, v)?;
            }
            Ok(())
        };
        set("name", u.name.clone().map(|s| ScalarValue::Str(s.into())))?;
        set("sex", u.sex.map(|s| ScalarValue::Str(s.chinese().into())))?;
        set("age", u.age.map(ScalarValue::Int))?;
        set("birth_year", u.birth_year.map(ScalarValue::Int))?;
        set(
            "address",
            u.address.clone().map(|s| ScalarValue::Str(s.into())),
        )?;
        set("knows", u.knows.map(ScalarValue::Boolean))?;
        set("notes", u.notes.clone().map(|s| ScalarValue::Str(s.into())))?;
        Ok(())
    }

    /// Resolves a conflicted (or any) patient field to one value.
    pub fn set_patient_field(&mut self, key: &str, value: ScalarValue) -> Result<(), DomainError> {
        self.tx.put(&self.patient, key, value)?;
        Ok(())
    }

    /// Adds a normalised phone number to the patient's set of numbers.
    pub fn add_phone(&mut self, phone: &str) -> Result<(), DomainError> {
        if self.tx.get(&self.phones, phone)?.is_none() {
            self.tx.put(&self.phones, phone, true)?;
        }
        Ok(())
    }

    pub fn add_disease(&mut self, disease: &str) -> Result<(), DomainError> {
        if self.tx.get(&self.diseases, disease)?.is_none() {
            self.tx.put(&self.diseases, disease, true)?;
        }
        Ok(())
    }

    /// Adds a record under its own id in its collection.
    pub fn add<R: Record>(&mut self, record: &R) -> Result<(), DomainError> {
        let coll = obj(&*self.tx, &ROOT, R::COLLECTION)?;
        if self.tx.get(&coll, record.id())?.is_some() {
            return Err(DomainError::invalid(
                "id",
                format!("record {} exists", record.id()),
            ));
        }
        let map = self.tx.put_object(&coll, record.id(), ObjType::Map)?;
        write_map(self.tx, &map, record)?;
        if let Some(by) = self.enterer.as_deref().filter(|by| *by != record.staff()) {
            self.tx
                .put(&ROOT, format!("{ENTERED_PREFIX}{}", record.id()), by)?;
        }
        Ok(())
    }

    /// Records added from now on in this edit were typed in by `who`: a
    /// record credited to someone else says so (`DossierView::entered_by`).
    pub fn enter_as(&mut self, who: Option<&str>) {
        self.enterer = who.map(str::to_string);
    }

    /// Overwrites the given fields of an existing record.
    pub fn update<R: Record>(&mut self, record: &R) -> Result<(), DomainError> {
        let coll = obj(&*self.tx, &ROOT, R::COLLECTION)?;
        let map = match self.tx.get(&coll, record.id())? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => return Err(DomainError::UnknownRecord(record.id().to_string())),
        };
        let before: R = read_map(&*self.tx, &map)?;
        let old = to_fields(&before)?;
        for (k, v) in to_fields(record)? {
            if old.iter().all(|(ok, ov)| ok != &k || ov != &v) {
                self.tx.put(&map, k, v)?;
            }
        }
        Ok(())
    }

    pub fn get<R: Record>(&self, id: &str) -> Result<R, DomainError> {
        let coll = obj(&*self.tx, &ROOT, R::COLLECTION)?;
        match self.tx.get(&coll, id)? {
            Some((Value::Object(ObjType::Map), map)) => read_map(&*self.tx, &map),
            _ => Err(DomainError::UnknownRecord(id.to_string())),
        }
    }

    pub fn set_typical(&mut self, t: &TypicalCase) -> Result<(), DomainError> {
        let typical = self.typical.clone();
        write_map(self.tx, &typical, t)
    }

    /// Adds a change to the follow-up plan under its own root key, and
    /// writes the patient field of its kind (stop, resume, assign): see the
    /// module on why both.
    pub fn add_plan_change(&mut self, change: &PlanChange) -> Result<(), DomainError> {
        let key = format!("{PLAN_PREFIX}{}", change.id);
        if self.tx.get(ROOT, key.as_str())?.is_some() {
            return Err(DomainError::invalid(
                "id",
                format!("record {} exists", change.id),
            ));
        }
        let map = self.tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
        write_map(self.tx, &map, change)?;
        match change.action {
            PlanAction::Stop => {
                let reason = change.reason.unwrap_or(StopReason::Other);
                self.tx.put(&self.patient, FOLLOWUP_STOP, reason.as_str())?;
            }
            PlanAction::Resume => self.tx.put(&self.patient, FOLLOWUP_STOP, "")?,
            PlanAction::Assign => {
                let who = change.assignee.clone().unwrap_or_default();
                self.tx.put(&self.patient, ASSIGNEE, who)?;
            }
            PlanAction::Extra | PlanAction::Postpone => {}
        }
        Ok(())
    }

    /// Moves the dossier to another office (headquarters' edit): the
    /// transfer under its own root key, and the root `office`.
    pub fn add_transfer(&mut self, t: &Transfer) -> Result<(), DomainError> {
        let key = format!("{TRANSFER_PREFIX}{}", t.id);
        if self.tx.get(ROOT, key.as_str())?.is_some() {
            return Err(DomainError::invalid(
                "id",
                format!("record {} exists", t.id),
            ));
        }
        let map = self.tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
        write_map(self.tx, &map, t)?;
        self.tx.put(ROOT, "office", t.to.as_str())?;
        Ok(())
    }

    /// Records that the patient took part in an activity, under its own
    /// root key; credited like a record ([`DossierTx::enter_as`]).
    pub fn add_participation(&mut self, p: &Participation) -> Result<(), DomainError> {
        let key = format!("{JOINED_PREFIX}{}", p.id);
        if self.tx.get(ROOT, key.as_str())?.is_some() {
            return Err(DomainError::invalid(
                "id",
                format!("record {} exists", p.id),
            ));
        }
        let map = self.tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
        write_map(self.tx, &map, p)?;
        if let Some(by) = self.enterer.as_deref().filter(|by| *by != p.staff) {
            self.tx
                .put(&ROOT, format!("{ENTERED_PREFIX}{}", p.id), by)?;
        }
        Ok(())
    }

    pub fn set_merged_into(&mut self, keep: &str) -> Result<(), DomainError> {
        self.tx.put(ROOT, MERGED_INTO, keep)?;
        Ok(())
    }

    /// Adds a record unless one with its id is already there.
    fn add_if_absent<R: Record>(&mut self, record: &R) -> Result<bool, DomainError> {
        let coll = obj(&*self.tx, &ROOT, R::COLLECTION)?;
        if self.tx.get(&coll, record.id())?.is_some() {
            return Ok(false);
        }
        self.add(record)?;
        Ok(true)
    }

    /// Folds a duplicate dossier into this one (the kept dossier `keep`):
    /// every record of the duplicate is copied under its own id, its phones
    /// and diseases join the sets, patient fields the kept dossier lacks are
    /// taken from it, and its typical-case mark if this one has none.
    /// Returns the number of records copied.
    ///
    /// Copying under the records' own ids makes a merge idempotent, and two
    /// devices merging the same pair concurrently write the same keys with
    /// the same contents: after sync they hold one result, each record once.
    pub fn absorb(&mut self, keep: &DossierView, dup: &DossierView) -> Result<u64, DomainError> {
        let mut copied = 0u64;
        macro_rules! copy_all {
            ($($list:expr),*) => {$(
                for r in &$list {
                    copied += u64::from(self.add_if_absent(r)?);
                }
            )*};
        }
        copy_all!(
            dup.calls,
            dup.visits,
            dup.purchases,
            dup.followups,
            dup.hospital_stays,
            dup.greetings,
            dup.home_visits,
            dup.deliveries,
            dup.problems
        );
        for change in &dup.plan {
            let key = format!("{PLAN_PREFIX}{}", change.id);
            if self.tx.get(ROOT, key.as_str())?.is_none() {
                let map = self.tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
                write_map(self.tx, &map, change)?;
                copied += 1;
            }
        }
        for p in &dup.participations {
            let key = format!("{JOINED_PREFIX}{}", p.id);
            if self.tx.get(ROOT, key.as_str())?.is_none() {
                let map = self.tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
                write_map(self.tx, &map, p)?;
                copied += 1;
            }
        }
        for p in &dup.patient.phones {
            self.add_phone(p)?;
        }
        for d in &dup.patient.diseases {
            self.add_disease(d)?;
        }
        let (k, d) = (&keep.patient, &dup.patient);
        fn missing<T: Clone>(mine: &Option<T>, theirs: &Option<T>) -> Option<T> {
            if mine.is_none() { theirs.clone() } else { None }
        }
        self.update_patient(&PatientUpdate {
            name: None,
            sex: missing(&k.sex, &d.sex),
            age: missing(&k.age, &d.age),
            birth_year: missing(&k.birth_year, &d.birth_year),
            address: missing(&k.address, &d.address),
            knows: missing(&k.knows, &d.knows),
            notes: missing(&k.notes, &d.notes),
        })?;
        let keep_flagged = keep.typical.as_ref().is_some_and(|t| t.flagged);
        if let Some(t) = dup.typical.as_ref().filter(|t| t.flagged && !keep_flagged) {
            self.set_typical(t)?;
        }
        Ok(copied)
    }
}

fn root_str(doc: &impl ReadDoc, key: &str) -> Result<String, DomainError> {
    match doc.get(ROOT, key)? {
        Some((v, _)) => v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DomainError::Malformed(format!("root `{key}` is not text"))),
        None => Err(DomainError::Malformed(format!("no `{key}` at the root"))),
    }
}

fn obj(doc: &impl ReadDoc, parent: &ObjId, key: &str) -> Result<ObjId, DomainError> {
    match doc.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(DomainError::Malformed(format!("`{key}` is not a map"))),
    }
}

fn scalar_text(v: &Value<'_>) -> String {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            other => other.to_string(),
        },
        Value::Object(t) => format!("<{t}>"),
    }
}

fn to_fields<T: Serialize>(value: &T) -> Result<Vec<(String, ScalarValue)>, DomainError> {
    let json = serde_json::to_value(value).map_err(|e| DomainError::Malformed(e.to_string()))?;
    let serde_json::Value::Object(map) = json else {
        return Err(DomainError::Malformed("record is not a struct".into()));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let s = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(b) => ScalarValue::Boolean(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => ScalarValue::Int(i),
                None => {
                    return Err(DomainError::invalid(
                        "number",
                        format!("{n} is not an integer"),
                    ));
                }
            },
            serde_json::Value::String(s) => ScalarValue::Str(s.into()),
            _ => {
                return Err(DomainError::Malformed(format!(
                    "field `{k}` is not a scalar"
                )));
            }
        };
        out.push((k, s));
    }
    Ok(out)
}

pub(crate) fn write_map<T: Serialize>(
    tx: &mut Transaction<'_>,
    map: &ObjId,
    value: &T,
) -> Result<(), DomainError> {
    for (k, v) in to_fields(value)? {
        tx.put(map, k, v)?;
    }
    Ok(())
}

pub(crate) fn read_map<R: serde::de::DeserializeOwned>(
    doc: &impl ReadDoc,
    map: &ObjId,
) -> Result<R, DomainError> {
    let fields: Vec<Field<'_>> = doc
        .map_range(map, ..)
        .filter_map(|item| record_scalar(&item.value).map(|v| (item.key, v)))
        .collect();
    from_fields(&fields)
}

/// A record field's value; `None` for what records never hold (objects,
/// counters, timestamps, bytes), which reading skips.
fn record_scalar<'a>(value: &ValueRef<'a>) -> Option<ScalarValueRef<'a>> {
    match value {
        ValueRef::Scalar(
            s @ (ScalarValueRef::Str(_)
            | ScalarValueRef::Int(_)
            | ScalarValueRef::Uint(_)
            | ScalarValueRef::Boolean(_)),
        ) => Some(s.clone()),
        _ => None,
    }
}

/// Deserialises a record straight from its fields. (Going through a
/// `serde_json::Value` allocated a map and a string per field; on a patient
/// with two years of follow-ups that was half of reading the dossier.)
fn from_fields<R: serde::de::DeserializeOwned>(fields: &[Field<'_>]) -> Result<R, DomainError> {
    R::deserialize(Fields(fields)).map_err(|e| DomainError::Malformed(e.to_string()))
}

/// A record's fields as a serde map.
struct Fields<'f, 'a>(&'f [Field<'a>]);

impl<'de> serde::Deserializer<'de> for Fields<'_, '_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::de::value::MapDeserializer::new(
            self.0.iter().map(|(k, v)| (k.as_ref(), FieldValue(v))),
        )
        .deserialize_any(visitor)
    }

    /// Greetings, home visits and deliveries wrap a `Contact`: their fields
    /// are the contact's, as JSON would read them.
    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// One field's scalar as a serde deserializer.
struct FieldValue<'v, 'a>(&'v ScalarValueRef<'a>);

impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for FieldValue<'_, '_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> serde::Deserializer<'de> for FieldValue<'_, '_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ScalarValueRef::Str(s) => visitor.visit_str(s),
            ScalarValueRef::Int(i) => visitor.visit_i64(*i),
            ScalarValueRef::Uint(u) => visitor.visit_u64(*u),
            ScalarValueRef::Boolean(b) => visitor.visit_bool(*b),
            // `record_scalar` keeps no other kind.
            _ => visitor.visit_unit(),
        }
    }

    /// A stored field is present: optional fields that are absent are not
    /// in the map at all (serde's `default`).
    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    /// Unit enums (a problem's state, sex) are stored as their name.
    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            ScalarValueRef::Str(s) => {
                serde::de::IntoDeserializer::<Self::Error>::into_deserializer(s.as_ref())
                    .deserialize_enum(name, variants, visitor)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// A collection's records in timeline order.
fn sorted_records<R: Record>(records: Vec<Vec<Field<'_>>>) -> Result<Vec<R>, DomainError> {
    let mut out = records
        .iter()
        .map(|fields| from_fields(fields))
        .collect::<Result<Vec<R>, _>>()?;
    out.sort_by(|a, b| a.at().cmp(&b.at()).then_with(|| a.id().cmp(b.id())));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::when::parse_datetime;

    fn t(s: &str) -> NaiveDateTime {
        parse_datetime(s).unwrap()
    }

    fn followup(id: &str, at: &str, staff: &str) -> FollowUp {
        FollowUp {
            id: id.into(),
            at: t(at),
            staff: staff.into(),
            kind: "回访".into(),
            outcome: "服药正常".into(),
            next_entry: Some("问血压".into()),
        }
    }

    fn new_dossier() -> (Dossier, Vec<u8>) {
        let (mut d, _) = Dossier::create(
            "01a2-x",
            "44",
            t("2026-11-20T09:30"),
            ActorId::from(b"aaaa"),
            1,
        )
        .unwrap();
        d.edit(2, |tx| {
            tx.update_patient(&PatientUpdate {
                name: Some("张三".into()),
                age: Some(62),
                ..Default::default()
            })?;
            tx.add_phone("13800138000")
        })
        .unwrap();
        let bytes = d.save();
        (d, bytes)
    }

    /// The dossier read key by key and record by record, as `view` did
    /// before it walked the document once: the walk must read the same.
    fn view_key_by_key(doc: &Automerge) -> Result<DossierView, DomainError> {
        // Records through JSON, as they were read before.
        fn read_map<R: serde::de::DeserializeOwned>(
            doc: &Automerge,
            map: &ObjId,
        ) -> Result<R, DomainError> {
            let mut json = serde_json::Map::new();
            for item in doc.map_range(map, ..) {
                let v = match item.value {
                    ValueRef::Scalar(ScalarValueRef::Str(s)) => serde_json::Value::from(s.as_ref()),
                    ValueRef::Scalar(ScalarValueRef::Int(i)) => serde_json::Value::from(i),
                    ValueRef::Scalar(ScalarValueRef::Uint(u)) => serde_json::Value::from(u),
                    ValueRef::Scalar(ScalarValueRef::Boolean(b)) => serde_json::Value::Bool(b),
                    _ => continue,
                };
                json.insert(item.key.to_string(), v);
            }
            serde_json::from_value(serde_json::Value::Object(json))
                .map_err(|e| DomainError::Malformed(e.to_string()))
        }
        fn collection<R: Record>(doc: &Automerge) -> Result<Vec<R>, DomainError> {
            let coll = obj(doc, &ROOT, R::COLLECTION)?;
            let mut out = Vec::new();
            for item in doc.map_range(&coll, ..) {
                if let ValueRef::Object(ObjType::Map) = item.value {
                    out.push(read_map::<R>(doc, &item.id())?);
                }
            }
            out.sort_by(|a, b| a.at().cmp(&b.at()).then_with(|| a.id().cmp(b.id())));
            Ok(out)
        }
        let patient_obj = obj(doc, &ROOT, PATIENT)?;
        let mut conflicts = Vec::new();
        let mut scalar = |key: &str| -> Option<ScalarValue> {
            let all = doc.get_all(&patient_obj, key).ok()?;
            let mut values: Vec<String> = all.iter().map(|(v, _)| scalar_text(v)).collect();
            values.sort();
            values.dedup();
            if values.len() > 1 {
                conflicts.push(Conflict {
                    field: key.to_string(),
                    values,
                });
            }
            match doc.get(&patient_obj, key).ok()?? {
                (Value::Scalar(s), _) => Some(s.into_owned()),
                _ => None,
            }
        };
        let str_of = |v: Option<ScalarValue>| v.and_then(|s| s.as_str().map(str::to_string));
        let name = str_of(scalar("name")).unwrap_or_default();
        let sex = str_of(scalar("sex")).and_then(|s| Sex::parse(&s));
        let age = scalar("age").and_then(|s| s.as_i64());
        let birth_year = scalar("birth_year").and_then(|s| s.as_i64());
        let address = str_of(scalar("address"));
        let knows = scalar("knows").and_then(|s| s.as_bool());
        let notes = str_of(scalar("notes"));
        scalar(ASSIGNEE);
        scalar(FOLLOWUP_STOP);
        let patient = Patient {
            name,
            phones: doc.keys(obj(doc, &patient_obj, PHONES)?).collect(),
            diseases: doc.keys(obj(doc, &patient_obj, DISEASES)?).collect(),
            sex,
            age,
            birth_year,
            address,
            knows,
            notes,
        };
        let typical_obj = obj(doc, &ROOT, TYPICAL)?;
        let typical = if doc.length(&typical_obj) == 0 {
            None
        } else {
            Some(read_map(doc, &typical_obj)?)
        };
        let created_at = root_str(doc, "created_at")?;
        let mut plan = Vec::new();
        let mut participations = Vec::new();
        let mut transfers = Vec::new();
        let mut entered_by = BTreeMap::new();
        for item in doc.map_range(ROOT, ..) {
            if item.key.starts_with(PLAN_PREFIX)
                && let ValueRef::Object(ObjType::Map) = item.value
            {
                plan.push(read_map::<PlanChange>(doc, &item.id())?);
            }
            if item.key.starts_with(JOINED_PREFIX)
                && let ValueRef::Object(ObjType::Map) = item.value
            {
                participations.push(read_map::<Participation>(doc, &item.id())?);
            }
            if item.key.starts_with(TRANSFER_PREFIX)
                && let ValueRef::Object(ObjType::Map) = item.value
            {
                transfers.push(read_map::<Transfer>(doc, &item.id())?);
            }
            if let Some(id) = item.key.strip_prefix(ENTERED_PREFIX)
                && let ValueRef::Scalar(ScalarValueRef::Str(by)) = &item.value
            {
                entered_by.insert(id.to_string(), by.to_string());
            }
        }
        plan.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        participations.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        transfers.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(DossierView {
            id: root_str(doc, "id")?,
            office: root_str(doc, "office")?,
            created_at: parse_datetime(&created_at).unwrap(),
            patient,
            calls: collection(doc)?,
            visits: collection(doc)?,
            purchases: collection(doc)?,
            followups: collection(doc)?,
            hospital_stays: collection(doc)?,
            greetings: collection(doc)?,
            home_visits: collection(doc)?,
            deliveries: collection(doc)?,
            problems: collection(doc)?,
            plan,
            participations,
            transfers,
            typical,
            merged_into: merged_into_of(doc)?,
            conflicts,
            entered_by,
        })
    }

    /// One offline edit of the property test below.
    #[derive(Debug, Clone)]
    enum Step {
        Patient(u8, u8),
        Phone(u8),
        Disease(u8),
        FollowUp(u8, u8),
        Purchase(u8, u8),
        EditFollowUp(u8, u8),
        Greeting(u8, u8),
        Problem(u8, u8),
        Typical(u8),
        MergedInto(u8),
        Plan(u8, u8),
        Joined(u8, u8),
        Transfer(u8),
        /// The other device's changes arrive.
        Sync,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = (bool, Step)> {
        use proptest::prelude::*;
        let s = prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Patient(k, v)),
            any::<u8>().prop_map(Step::Phone),
            any::<u8>().prop_map(Step::Disease),
            (any::<u8>(), any::<u8>()).prop_map(|(i, d)| Step::FollowUp(i, d)),
            (any::<u8>(), any::<u8>()).prop_map(|(i, q)| Step::Purchase(i, q)),
            (any::<u8>(), any::<u8>()).prop_map(|(i, o)| Step::EditFollowUp(i, o)),
            (any::<u8>(), any::<u8>()).prop_map(|(i, d)| Step::Greeting(i, d)),
            (any::<u8>(), any::<u8>()).prop_map(|(i, s)| Step::Problem(i, s)),
            any::<u8>().prop_map(Step::Typical),
            any::<u8>().prop_map(Step::MergedInto),
            (any::<u8>(), any::<u8>()).prop_map(|(i, a)| Step::Plan(i, a)),
            (any::<u8>(), any::<u8>()).prop_map(|(i, a)| Step::Joined(i, a)),
            any::<u8>().prop_map(Step::Transfer),
            Just(Step::Sync),
        ];
        (any::<bool>(), s)
    }

    fn apply_step(d: &mut Dossier, seq: i64, step: &Step) {
        let at = |day: u8| {
            t(&format!(
                "2026-{:02}-{:02}T10:00",
                1 + day % 12,
                1 + day % 28
            ))
        };
        d.edit(seq, |tx| match step {
            Step::Patient(k, v) => {
                let (key, value) = match k % 7 {
                    0 => ("name", ScalarValue::Str(format!("患者{}", v % 3).into())),
                    1 => (
                        "sex",
                        ScalarValue::Str(["男", "女"][usize::from(v % 2)].into()),
                    ),
                    2 => ("age", ScalarValue::Int(i64::from(60 + v % 3))),
                    3 => ("birth_year", ScalarValue::Int(1950 + i64::from(v % 3))),
                    4 => ("address", ScalarValue::Str(format!("广州{}", v % 3).into())),
                    5 => ("knows", ScalarValue::Boolean(v % 2 == 0)),
                    _ => ("notes", ScalarValue::Str(format!("备注{}", v % 3).into())),
                };
                tx.set_patient_field(key, value)
            }
            Step::Phone(n) => tx.add_phone(&format!("1380013{:04}", n % 5)),
            Step::Disease(n) => tx.add_disease(["冠心病", "高血压", "脑梗"][usize::from(n % 3)]),
            // The same record id added on both devices before they sync
            // makes two objects race for one key: the walk must pick
            // automerge's winner too.
            Step::FollowUp(i, _) if tx.get::<FollowUp>(&format!("f{}", i % 8)).is_ok() => Ok(()),
            Step::FollowUp(i, day) => {
                let f = followup(&format!("f{}", i % 8), "2026-01-01T10:00", "李娜");
                tx.add(&FollowUp { at: at(*day), ..f })
            }
            Step::Plan(i, a) => {
                let id = format!("plan{i}-{a}");
                if tx
                    .tx
                    .get(ROOT, format!("{PLAN_PREFIX}{id}").as_str())?
                    .is_some()
                {
                    return Ok(());
                }
                let action = [
                    PlanAction::Extra,
                    PlanAction::Postpone,
                    PlanAction::Stop,
                    PlanAction::Resume,
                    PlanAction::Assign,
                ][usize::from(a % 5)];
                tx.add_plan_change(&PlanChange {
                    id,
                    at: at(*i),
                    staff: "李娜".into(),
                    action,
                    date: Some(at(a.wrapping_add(3)).date()),
                    reason: (action == PlanAction::Stop).then_some(StopReason::Refuses),
                    assignee: (action == PlanAction::Assign).then(|| format!("员工{}", a % 3)),
                    notes: None,
                })
            }
            Step::Transfer(i) => {
                let id = format!("tr{}", i % 3);
                if tx
                    .tx
                    .get(ROOT, format!("{TRANSFER_PREFIX}{id}").as_str())?
                    .is_some()
                {
                    return Ok(());
                }
                tx.add_transfer(&Transfer {
                    id,
                    at: at(*i),
                    from: "44".into(),
                    to: ["11", "31", "44"][usize::from(i % 3)].into(),
                    reason: "搬家".into(),
                    by: "周主任".into(),
                })
            }
            Step::Joined(i, a) => {
                let id = format!("joined{}", i % 6);
                if tx
                    .tx
                    .get(ROOT, format!("{JOINED_PREFIX}{id}").as_str())?
                    .is_some()
                {
                    return Ok(());
                }
                tx.add_participation(&Participation {
                    id,
                    at: at(*i),
                    staff: "李娜".into(),
                    activity: format!("act-{}", a % 3),
                    notes: None,
                })
            }
            Step::Purchase(i, _) if tx.get::<Purchase>(&format!("p{}", i % 4)).is_ok() => Ok(()),
            Step::Purchase(i, q) => tx.add(&Purchase {
                id: format!("p{}", i % 4),
                at: at(*q),
                staff: "王医生".into(),
                product: "心脑康".into(),
                quantity: i64::from(1 + q % 5),
                amount_fen: 100 * i64::from(*q),
                invoice: (q % 2 == 0).then(|| format!("No.{q}")),
                runout: None,
                gifts: None,
                gift_receipt: None,
            }),
            Step::EditFollowUp(i, o) => {
                let id = format!("f{}", i % 8);
                match tx.get::<FollowUp>(&id) {
                    Ok(f) => tx.update(&FollowUp {
                        outcome: format!("结果{}", o % 3),
                        ..f
                    }),
                    Err(_) => Ok(()),
                }
            }
            Step::Greeting(i, _) if tx.get::<Greeting>(&format!("g{}", i % 4)).is_ok() => Ok(()),
            Step::Greeting(i, day) => tx.add(&Greeting(Contact {
                id: format!("g{}", i % 4),
                at: at(*day),
                staff: "李娜".into(),
                notes: (day % 2 == 0).then(|| "春节问候".into()),
            })),
            Step::Problem(i, _) if tx.get::<Problem>(&format!("q{}", i % 3)).is_ok() => Ok(()),
            Step::Problem(i, state) => tx.add(&Problem {
                id: format!("q{}", i % 3),
                at: at(*state),
                staff: "李娜".into(),
                description: "投诉".into(),
                state: [
                    ProblemState::Open,
                    ProblemState::Handling,
                    ProblemState::Resolved,
                ][usize::from(state % 3)],
                handling_at: (state % 3 > 0).then(|| at(*state)),
                resolved_at: None,
                resolution: None,
                resolved_by: None,
            }),
            Step::Typical(n) => tx.set_typical(&TypicalCase {
                flagged: n % 2 == 0,
                at: at(*n),
                staff: "李娜".into(),
                notes: (n % 3 == 0).then(|| "典型".into()),
            }),
            Step::MergedInto(n) => tx.set_merged_into(&format!("keep-{}", n % 2)),
            Step::Sync => Ok(()),
        })
        .unwrap();
    }

    /// How many walks the property runs: `PROPTEST_CASES`, default 256.
    fn walks() -> u32 {
        match std::env::var("PROPTEST_CASES") {
            Ok(n) => n
                .parse()
                .unwrap_or_else(|_| panic!("PROPTEST_CASES={n:?} is not a number")),
            Err(_) => 256,
        }
    }

    proptest::proptest! {
        // 256 walks by default; PROPTEST_CASES=N sets another number (a bad
        // one stops the test, naming it).
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(walks()))]

        /// Two devices edit one dossier offline and exchange changes now
        /// and then (so patient fields end up in real conflicts): the walk
        /// reads exactly what reading key by key reads, on both devices.
        #[test]
        fn one_walk_reads_what_key_by_key_reads(steps in proptest::collection::vec(step(), 0..40)) {
            let (a, bytes) = new_dossier();
            let mut devices = [a, Dossier::load(&bytes, ActorId::from(b"bbbb")).unwrap()];
            for (i, (on_b, step)) in steps.iter().enumerate() {
                let seq = i64::try_from(i).unwrap() + 10;
                if let Step::Sync = step {
                    let [a, b] = &mut devices;
                    a.doc.merge(&mut b.doc).unwrap();
                    b.doc.merge(&mut a.doc).unwrap();
                } else {
                    apply_step(&mut devices[usize::from(*on_b)], seq, step);
                }
            }
            let [a, b] = &mut devices;
            let apart = [a.view().unwrap(), b.view().unwrap()];
            proptest::prop_assert_eq!(&apart[0], &view_key_by_key(&a.doc).unwrap());
            proptest::prop_assert_eq!(&apart[1], &view_key_by_key(&b.doc).unwrap());
            a.doc.merge(&mut b.doc).unwrap();
            let merged = a.view().unwrap();
            proptest::prop_assert_eq!(&merged, &view_key_by_key(&a.doc).unwrap());
        }
    }

    #[test]
    fn creation_is_read_from_the_operations() {
        let t = crate::when::parse_datetime("2026-11-20T09:00").unwrap();
        let (mut d, created) = Dossier::create("01a2-x", "44", t, ActorId::random(), 1).unwrap();
        let phone = d
            .edit(2, |tx| tx.add_phone("13800138000"))
            .unwrap()
            .unwrap();
        let change = |c: &NewChange| automerge::Change::from_bytes(c.bytes.clone()).unwrap();
        let made = creation_of(&[change(&created), change(&phone)]);
        assert_eq!(
            made,
            Creation {
                id: Some("01a2-x".into()),
                office: Some("44".into()),
                merges: false,
                rewrites_identity: true,
                moves: false,
            }
        );
        // Only the edit: nothing created, nothing of who it is touched.
        let edit = creation_of(&[change(&phone)]);
        assert_eq!(edit.office, None);
        assert!(!edit.rewrites_identity);
        // A later put wins, as in the document; a merge is noticed.
        let moved = d
            .edit(3, |tx| {
                tx.tx.put(ROOT, "office", "11")?;
                tx.set_merged_into("01a2-y")
            })
            .unwrap()
            .unwrap();
        let made = creation_of(&[change(&created), change(&phone), change(&moved)]);
        assert_eq!(made.office.as_deref(), Some("11"));
        assert!(made.merges);
        assert!(creation_of(&[change(&moved)]).rewrites_identity);
        // Changes it skips unread put none of the keys: the phone's does
        // not mention them; a deletion of the id is read.
        assert!(
            ![b"\x02id".as_slice(), b"\x06office", b"\x0bmerged_into"]
                .iter()
                .any(|k| phone.bytes.windows(k.len()).any(|w| w == *k))
        );
        let unset = d
            .edit(4, |tx| Ok(tx.tx.delete(ROOT, "id")?))
            .unwrap()
            .unwrap();
        let made = creation_of(&[change(&created), change(&phone), change(&unset)]);
        assert_eq!(made.id, None);
        assert_eq!(made.office.as_deref(), Some("44"));
        assert!(creation_of(&[change(&unset)]).rewrites_identity);
    }

    #[test]
    fn a_transfer_moves_the_office_from_its_time_on() {
        let (mut d, _) = new_dossier();
        let before = t("2026-11-01T10:00");
        assert_eq!(d.view().unwrap().office_at(before), "44");
        let moved = |id: &str, at: &str, from: &str, to: &str| Transfer {
            id: id.into(),
            at: t(at),
            from: from.into(),
            to: to.into(),
            reason: "搬家".into(),
            by: "周主任".into(),
        };
        d.edit(2, |tx| {
            tx.add_transfer(&moved("t1", "2026-11-10T09:00", "44", "11"))
        })
        .unwrap();
        d.edit(3, |tx| {
            tx.add_transfer(&moved("t2", "2026-11-20T09:00", "11", "31"))
        })
        .unwrap();
        let v = d.view().unwrap();
        assert_eq!(v.office, "31");
        assert_eq!(v.transfers.len(), 2);
        assert_eq!(v.office_at(before), "44");
        assert_eq!(v.office_at(t("2026-11-10T09:00")), "11", "from its time on");
        assert_eq!(v.office_at(t("2026-11-15T09:00")), "11");
        assert_eq!(v.office_at(t("2026-12-01T09:00")), "31");
        assert_eq!(&v, &view_key_by_key(&d.doc).unwrap());
    }

    #[test]
    fn records_round_trip_through_the_document() {
        let (mut d, _) = new_dossier();
        let p = Purchase {
            id: "p1".into(),
            at: t("2026-11-22T10:30"),
            staff: "王医生".into(),
            product: "心脑康".into(),
            quantity: 3,
            amount_fen: 128050,
            invoice: Some("No.1".into()),
            runout: Some(crate::when::parse_date("2026-12-22").unwrap()),
            gifts: Some("血压计".into()),
            gift_receipt: Some("R-9".into()),
        };
        d.edit(3, |tx| tx.add(&p)).unwrap().expect("a change");
        let reloaded = Dossier::load(&d.save(), ActorId::from(b"bbbb")).unwrap();
        let v = reloaded.view().unwrap();
        assert_eq!(v.purchases, vec![p]);
        assert_eq!(v.patient.name, "张三");
        assert_eq!(v.patient.phones, vec!["13800138000"]);
        assert_eq!(v.office, "44");
    }

    #[test]
    fn concurrent_merges_of_the_same_pair_end_in_one_result() {
        let (_, keep_bytes) = new_dossier();
        let (mut dup, _) = Dossier::create(
            "01a2-dup",
            "44",
            t("2026-11-20T10:00"),
            ActorId::from(b"cccc"),
            1,
        )
        .unwrap();
        dup.edit(2, |tx| {
            tx.update_patient(&PatientUpdate {
                name: Some("张三".into()),
                address: Some("广州".into()),
                ..Default::default()
            })?;
            tx.add_phone("13900139000")?;
            tx.add_disease("冠心病")?;
            tx.add(&followup("f-dup", "2026-11-21T10:00", "李娜"))
        })
        .unwrap();
        let dup_view = dup.view().unwrap();
        // Two devices merge the same pair, each offline.
        let merge = |actor: &[u8]| {
            let mut keep = Dossier::load(&keep_bytes, ActorId::from(actor)).unwrap();
            let keep_view = keep.view().unwrap();
            let mut copied = 0;
            let change = keep
                .edit(10, |tx| {
                    copied = tx.absorb(&keep_view, &dup_view)?;
                    Ok(())
                })
                .unwrap()
                .unwrap();
            assert_eq!(copied, 1);
            // A second merge of the same pair copies nothing.
            let again = keep.view().unwrap();
            keep.edit(11, |tx| {
                assert_eq!(tx.absorb(&again, &dup_view)?, 0);
                Ok(())
            })
            .unwrap();
            (keep, change)
        };
        let (mut a, ca) = merge(b"dev-a");
        let (mut b, cb) = merge(b"dev-b");
        a.doc
            .apply_changes([automerge::Change::from_bytes(cb.bytes).unwrap()])
            .unwrap();
        b.doc
            .apply_changes([automerge::Change::from_bytes(ca.bytes).unwrap()])
            .unwrap();
        let (va, vb) = (a.view().unwrap(), b.view().unwrap());
        assert_eq!(va, vb, "one result on both devices");
        assert_eq!(va.followups.len(), 1, "the copied record exists once");
        assert_eq!(va.followups[0].id, "f-dup");
        assert_eq!(va.patient.phones, ["13800138000", "13900139000"]);
        assert_eq!(va.patient.diseases, ["冠心病"]);
        assert_eq!(va.patient.address.as_deref(), Some("广州"));
        assert_eq!(va.patient.age, Some(62), "the kept dossier's fields stay");
        assert!(va.conflicts.is_empty(), "{:?}", va.conflicts);
    }

    #[test]
    fn concurrent_appends_from_two_devices_both_survive() {
        let (_, bytes) = new_dossier();
        let mut a = Dossier::load(&bytes, ActorId::from(b"dev-a")).unwrap();
        let mut b = Dossier::load(&bytes, ActorId::from(b"dev-b")).unwrap();
        let ca = a
            .edit(10, |tx| tx.add(&followup("fa", "2026-11-21T10:00", "李娜")))
            .unwrap()
            .unwrap();
        let cb = b
            .edit(11, |tx| tx.add(&followup("fb", "2026-11-21T10:05", "王芳")))
            .unwrap()
            .unwrap();
        // Exchange the raw change bytes, as sync does.
        a.doc
            .apply_changes([automerge::Change::from_bytes(cb.bytes).unwrap()])
            .unwrap();
        b.doc
            .apply_changes([automerge::Change::from_bytes(ca.bytes).unwrap()])
            .unwrap();
        let (va, vb) = (a.view().unwrap(), b.view().unwrap());
        assert_eq!(va, vb);
        let ids: Vec<&str> = va.followups.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["fa", "fb"]);
        assert_eq!(a.heads(), b.heads());
    }

    #[test]
    fn concurrent_different_values_are_shown_as_conflicts() {
        let (_, bytes) = new_dossier();
        let mut a = Dossier::load(&bytes, ActorId::from(b"dev-a")).unwrap();
        let mut b = Dossier::load(&bytes, ActorId::from(b"dev-b")).unwrap();
        let age = |n| PatientUpdate {
            age: Some(n),
            ..Default::default()
        };
        a.edit(10, |tx| tx.update_patient(&age(63))).unwrap();
        b.edit(11, |tx| tx.update_patient(&age(64))).unwrap();
        a.doc.merge(&mut b.doc).unwrap();
        let v = a.view().unwrap();
        assert_eq!(
            v.conflicts,
            vec![Conflict {
                field: "age".into(),
                values: vec!["63".into(), "64".into()]
            }]
        );
        // Settling it clears the conflict.
        a.edit(12, |tx| tx.set_patient_field("age", ScalarValue::Int(63)))
            .unwrap();
        assert!(a.view().unwrap().conflicts.is_empty());
        assert_eq!(a.view().unwrap().patient.age, Some(63));
    }

    #[test]
    fn setting_a_field_to_its_value_makes_no_change() {
        let (mut d, _) = new_dossier();
        let same = PatientUpdate {
            name: Some("张三".into()),
            age: Some(62),
            ..Default::default()
        };
        assert_eq!(d.edit(5, |tx| tx.update_patient(&same)).unwrap(), None);
        assert_eq!(d.edit(5, |tx| tx.add_phone("13800138000")).unwrap(), None);
    }

    #[test]
    fn a_failed_edit_leaves_the_document_untouched() {
        let (mut d, _) = new_dossier();
        let heads = d.heads();
        let err = d
            .edit(5, |tx| {
                tx.add(&followup("f1", "2026-11-21T10:00", "李娜"))?;
                tx.add(&followup("f1", "2026-11-21T10:00", "李娜"))
            })
            .unwrap_err();
        assert!(matches!(err, DomainError::InvalidField { field: "id", .. }));
        assert_eq!(d.heads(), heads);
        assert!(d.view().unwrap().followups.is_empty());
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let (_, bytes) = new_dossier();
        for bad in [&b""[..], b"garbage", &bytes[..bytes.len() / 2]] {
            assert!(Dossier::load(bad, ActorId::random()).is_err());
        }
        // A valid automerge document that is not a dossier.
        let other = Automerge::new().save();
        assert!(matches!(
            Dossier::load(&other, ActorId::random()),
            Err(DomainError::Malformed(_))
        ));
    }

    #[test]
    fn update_changes_only_given_fields_of_a_record() {
        let (mut d, _) = new_dossier();
        let p = Problem {
            id: "q1".into(),
            at: t("2026-11-21T10:00"),
            staff: "李娜".into(),
            description: "投诉疗效".into(),
            state: ProblemState::Open,
            handling_at: None,
            resolved_at: None,
            resolution: None,
            resolved_by: None,
        };
        d.edit(5, |tx| tx.add(&p)).unwrap();
        d.edit(6, |tx| {
            let mut p: Problem = tx.get("q1")?;
            p.state = ProblemState::Resolved;
            p.resolution = Some("已退换".into());
            tx.update(&p)
        })
        .unwrap();
        let v = d.view().unwrap();
        assert_eq!(v.problems[0].state, ProblemState::Resolved);
        assert_eq!(v.problems[0].description, "投诉疗效");
        assert!(matches!(
            d.edit(7, |tx| tx.get::<Problem>("nope").map(|_| ())),
            Err(DomainError::UnknownRecord(_))
        ));
    }
}
