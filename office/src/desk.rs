//! The office desk: every operation of an office day, offline.
//!
//! Each operation validates its input first (phone, dates, staff, patient,
//! and every typed field against its limit in [`keqing_shared::limits`]),
//! then makes exactly one automerge change and commits it with its outbox row
//! and projections in one SQLite transaction; a change or a dossier over its
//! byte limit is refused before the commit. Input that fails validation
//! changes nothing. The command line and the workstation only parse and
//! print: every rule is here, once.

use crate::error::ClientError;
use crate::store::{OpenSlot, PatientRow, Replica, ReplicaMeta, WriteTx};
use automerge::ActorId;
use chrono::{NaiveDate, NaiveDateTime};
use keqing_host::now_cst;
use keqing_host::passwords::hash_password;
use keqing_shared::dossier::{Dossier, DossierTx, DossierView, PatientUpdate};
use keqing_shared::followup::{Slot, SlotStatus, schedule};
use keqing_shared::limits;
use keqing_shared::nonpatient::NonPatientLog;
use keqing_shared::records::*;
use keqing_shared::report::{self, Report, Scope};
use keqing_shared::roster::{Roster, roster_id};
use keqing_shared::staff::{Role, Staff, validate_name};
use keqing_shared::{office, phone};
use serde::Serialize;
use std::path::Path;

type Result<T> = std::result::Result<T, ClientError>;

/// The office code of a headquarters replica, which reads every office.
pub const HQ_OFFICE: &str = "hq";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new record id: UUIDv7, made offline, sortable by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Everything typed on the consultation register for one call.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    pub phone: String,
    pub name: String,
    pub age: Option<i64>,
    pub sex: Option<Sex>,
    pub disease: Option<String>,
    pub source: String,
    pub staff: String,
    pub relation: Option<String>,
    pub address: Option<String>,
    pub knows: Option<bool>,
    pub condition: Option<String>,
    pub treatment: Option<String>,
    pub outcome: Option<String>,
    pub at: NaiveDateTime,
    /// Add the call to this dossier (id, prefix or phone) instead of matching.
    pub patient: Option<String>,
    /// Create a new dossier even if the phone is known (another patient
    /// calling from the same number).
    pub force_new: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    Given,
    Phone,
    NameAndAge,
    New,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallOutcome {
    pub dossier_id: String,
    pub call_id: String,
    pub matched_by: MatchedBy,
    /// Other dossiers that may be the same patient (same name, similar
    /// age): the first few (see `DUPLICATES_REPORTED`).
    pub possible_duplicates: Vec<PatientRow>,
}

/// A visit (到堂) as entered at the desk.
#[derive(Debug, Clone, Default)]
pub struct VisitInput {
    pub staff: String,
    pub at: NaiveDateTime,
    pub purchased: bool,
    /// 未购原因: one of the list (its name or code), optionally `其他：text`.
    pub reason_not_bought: Option<String>,
    /// The text of 其他.
    pub reason_text: Option<String>,
    pub notes: Option<String>,
}

/// A purchase (购药) as entered: the amount in yuan as typed.
#[derive(Debug, Clone, Default)]
pub struct PurchaseInput {
    pub staff: String,
    pub at: NaiveDateTime,
    pub product: String,
    pub quantity: i64,
    pub amount_yuan: String,
    pub runout: Option<NaiveDate>,
    pub invoice: Option<String>,
    pub gifts: Option<String>,
    pub gift_receipt: Option<String>,
}

/// A follow-up call (回访) as entered.
#[derive(Debug, Clone, Default)]
pub struct FollowUpInput {
    pub staff: String,
    pub at: NaiveDateTime,
    pub kind: String,
    pub outcome: String,
    pub next_entry: Option<String>,
}

/// An optional typed field, checked against its limit (blank is `None`).
fn optional_text(field: &'static str, s: &Option<String>) -> Result<Option<String>> {
    Ok(limits::optional(field, s.as_deref())?)
}

/// A hospital stay (住院) as entered.
#[derive(Debug, Clone, Default)]
pub struct HospitalInput {
    pub staff: String,
    pub at: NaiveDateTime,
    pub admitted: NaiveDate,
    pub discharged: Option<NaiveDate>,
    pub hospital: Option<String>,
    pub reason: Option<String>,
}

/// Which kind of contact a [`ContactInput`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    /// 逢年过节打招呼
    Greeting,
    /// 家访
    HomeVisit,
}

impl ContactKind {
    pub fn chinese(self) -> &'static str {
        match self {
            ContactKind::Greeting => "问候",
            ContactKind::HomeVisit => "家访",
        }
    }
}

/// A delivery (外送) to register.
#[derive(Debug, Clone, Default)]
pub struct DeliveryInput {
    pub staff: String,
    pub at: NaiveDateTime,
    /// The purchase it delivers (its record id); its product and quantity
    /// are the default.
    pub purchase: Option<String>,
    pub product: Option<String>,
    pub quantity: Option<i64>,
    /// Where to (default: the patient's address).
    pub address: Option<String>,
    /// The day it is to be delivered by.
    pub due: Option<NaiveDate>,
    pub notes: Option<String>,
    /// Registered as already delivered.
    pub delivered: bool,
}

/// A non-patient call (非正常咨询) as entered.
#[derive(Debug, Clone, Default)]
pub struct NonPatientInput {
    pub phone: Option<String>,
    /// 打错电话, 同行, 媒体, 骚扰, 推销, 其他 (or their codes).
    pub kind: String,
    pub staff: String,
    pub notes: Option<String>,
    pub at: NaiveDateTime,
}

/// A change to a patient's follow-up plan, as asked for.
#[derive(Debug, Clone)]
pub enum PlanStep {
    /// An extra follow-up on a day.
    Extra {
        date: NaiveDate,
    },
    /// The next open follow-up moves to a day.
    Postpone {
        to: NaiveDate,
    },
    /// Follow-ups stop: 去世, 拒访, 迁出, 停药, 其他 (or their codes).
    Stop {
        reason: String,
    },
    Resume,
    /// This staff member makes the calls.
    Assign {
        to: String,
    },
}

/// Refuses a record time more than a day after this device's clock (the
/// domain's rule, [`keqing_shared::when::check_not_ahead`]).
fn check_time(field: &'static str, at: NaiveDateTime) -> Result<()> {
    Ok(keqing_shared::when::check_not_ahead(field, at, now_cst())?)
}

/// A visit's reason for not buying as stored: one of `list` (the
/// catalogue's, or the built-in one; a built-in code is read as its name),
/// 其他 with its text (given apart, or as `其他：text`); a reason the list
/// lacks is kept as 其他 with what was typed.
fn not_bought_reason(
    reason: &Option<String>,
    text: &Option<String>,
    list: &[String],
) -> Result<Option<String>> {
    let Some(typed) = reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let (head, inline) = split_stored(typed);
    let inline = inline.map(str::to_string);
    let head = NotBoughtReason::label_of_stored(head).to_string();
    let text = optional_text("reason_text", &inline.or_else(|| text.clone()))?;
    let other = NotBoughtReason::Other.chinese();
    if !list.contains(&head) {
        // Not a reason of the list: 其他, with the typed text (and the text
        // given apart, if any).
        let typed = match &text {
            Some(t) => format!("{head} {t}"),
            None => head,
        };
        let kept = optional_text("reason_text", &Some(typed))?;
        return Ok(kept.map(|t| format!("{other}：{t}")));
    }
    if text.is_some() && head != other {
        return Err(keqing_shared::DomainError::invalid(
            "reason_text",
            "only 其他 takes a text (say more in the visit's notes)",
        )
        .into());
    }
    match text {
        Some(t) => Ok(Some(format!("{other}：{t}"))),
        None if head == other => Err(keqing_shared::DomainError::invalid(
            "reason_text",
            "其他 needs its text: what the reason was (请写明原因)",
        )
        .into()),
        None => Ok(Some(head)),
    }
}

/// A greeting, home visit or delivery as entered.
#[derive(Debug, Clone, Default)]
pub struct ContactInput {
    pub staff: String,
    pub at: NaiveDateTime,
    pub notes: Option<String>,
}

/// Changes to a patient's details as entered; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PatientChanges {
    pub name: Option<String>,
    pub sex: Option<Sex>,
    pub age: Option<i64>,
    pub birth_year: Option<i64>,
    pub address: Option<String>,
    pub knows: Option<bool>,
    pub notes: Option<String>,
    /// A phone number to add.
    pub phone: Option<String>,
    /// A disease to add.
    pub disease: Option<String>,
}

/// What to do with a problem (问题患者).
#[derive(Debug, Clone)]
pub enum ProblemStep {
    Open {
        description: String,
    },
    /// Being handled; `problem` is its id, or the only unresolved one.
    Handle {
        problem: Option<String>,
    },
    Resolve {
        problem: Option<String>,
        resolution: String,
    },
}

fn check_age(age: Option<i64>) -> Result<()> {
    match age {
        Some(a) if !(0..=130).contains(&a) => {
            Err(keqing_shared::DomainError::invalid("age", format!("{a} is not an age")).into())
        }
        _ => Ok(()),
    }
}

/// An entry of the day's follow-up list: one patient, most urgent slot first.
#[derive(Debug, Clone, Serialize)]
pub struct DueEntry {
    pub dossier_id: String,
    pub name: String,
    pub phone: Option<String>,
    /// The entry point the latest follow-up left for this call (下次切入点).
    pub next_entry: Option<String>,
    /// Who makes the patient's follow-up calls.
    pub assignee: Option<String>,
    pub overdue: bool,
    /// Days past the earliest missed deadline (0 when due, not overdue).
    pub days_overdue: i64,
    pub slots: Vec<Slot>,
}

/// Where a phone number's dossier is ([`Desk::lookup_phone`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneLookup {
    Here(Vec<PatientRow>),
    /// Moved off this device by retention: the server has it (its id).
    AtServer(String),
    /// Headquarters transferred it to another office (its code).
    TransferredTo {
        id: String,
        office: String,
    },
    Nowhere,
}

pub struct Desk {
    replica: Replica,
    /// Who is typing records in, when a front end says so
    /// ([`Desk::entered_by`]).
    enterer: Option<String>,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeOutcome {
    pub kept: String,
    pub merged: String,
    pub records_copied: u64,
}

/// A dossier's conflicting patient fields.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictEntry {
    pub dossier_id: String,
    pub office: String,
    pub name: String,
    pub conflicts: Vec<keqing_shared::dossier::Conflict>,
}

impl Desk {
    /// Sets up a new office replica in `dir`, offline.
    pub fn init(dir: &Path, office_code: &str, device: &str) -> Result<Desk> {
        let office = office::office(office_code)?;
        let actor = ActorId::from(uuid::Uuid::new_v4().as_bytes().as_slice());
        Desk::init_with_actor(dir, office.code, device, actor)
    }

    /// Sets up a replica with a given automerge actor: an office's (with
    /// its roster) or, for [`HQ_OFFICE`], headquarters' read-all replica.
    pub fn init_with_actor(
        dir: &Path,
        office_code: &str,
        device: &str,
        actor: ActorId,
    ) -> Result<Desk> {
        let office = if office_code == HQ_OFFICE {
            None
        } else {
            Some(office::office(office_code)?)
        };
        let device = validate_name("device", device)?;
        let mut replica = Replica::create(
            dir,
            ReplicaMeta {
                office: office.map_or(HQ_OFFICE, |o| o.code).to_string(),
                device,
                actor,
                created_at: keqing_shared::when::fmt_datetime(now_cst()),
            },
        )?;
        if let Some(office) = office {
            let (roster, genesis) = Roster::genesis(office.code)?;
            replica.write(|w| w.save_roster(office.code, &roster, &[&genesis], now_cst()))?;
        }
        Ok(Desk {
            replica,
            enterer: None,
        })
    }

    pub fn open(dir: &Path) -> Result<Desk> {
        Ok(Desk {
            replica: Replica::open(dir)?,
            enterer: None,
        })
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Runs `f` with `who` typing the records in: a record `f` adds that is
    /// credited to someone else says who entered it (the dossier's
    /// `entered_by`). The workstation runs a signed-in 主管's records for
    /// others this way.
    pub fn entered_by<T>(
        &mut self,
        who: Option<&str>,
        f: impl FnOnce(&mut Desk) -> Result<T>,
    ) -> Result<T> {
        let before = std::mem::replace(&mut self.enterer, who.map(str::to_string));
        let out = f(self);
        self.enterer = before;
        out
    }

    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    pub fn office(&self) -> &str {
        &self.replica.meta().office
    }

    pub fn add_staff(&mut self, name: &str, role: Role) -> Result<Staff> {
        self.add_staff_account(name, role, None)
    }

    /// Adds a staff member, with a password to sign in with if one is
    /// given (kept as its Argon2id hash in the roster; the member and the
    /// password are one change).
    pub fn add_staff_account(
        &mut self,
        name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<Staff> {
        let name = validate_name("name", name)?;
        let office = self.office().to_string();
        if office == HQ_OFFICE {
            return Err(ClientError::Headquarters("have office staff"));
        }
        // Hashed before the write: it takes tens of milliseconds.
        let hash = password.map(hash_password).transpose()?;
        self.replica.write(|w| {
            if w.staff_named(&name)?.is_some() {
                return Err(ClientError::DuplicateStaff(name.clone()));
            }
            let mut roster = office_roster(w, &office)?;
            let staff = Staff {
                id: new_id(),
                name: name.clone(),
                role,
                active: true,
            };
            let mut changes = vec![roster.add(&staff, now_ms())?];
            if let Some(hash) = &hash {
                changes.push(roster.set_password(&staff.id, hash, now_ms())?);
            }
            let changes: Vec<&keqing_shared::dossier::NewChange> = changes.iter().collect();
            w.save_roster(&office, &roster, &changes, now_cst())?;
            Ok(staff)
        })
    }

    /// Sets or changes a staff member's password (its Argon2id hash goes
    /// into the roster and syncs to the office's other devices).
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<Staff> {
        let office = self.office().to_string();
        if office == HQ_OFFICE {
            return Err(ClientError::Headquarters("have office staff"));
        }
        let hash = hash_password(password)?;
        self.replica.write(|w| {
            let member = w
                .staff_named(name.trim())?
                .ok_or_else(|| ClientError::UnknownStaff(name.trim().to_string()))?;
            let mut roster = office_roster(w, &office)?;
            let change = roster.set_password(&member.id, &hash, now_ms())?;
            w.save_roster(&office, &roster, &[&change], now_cst())?;
            Ok(member)
        })
    }

    /// Signs a staff member in with their password, offline, against the
    /// roster this device holds. An unknown name, a member without a
    /// password and a wrong password are refused alike; a member 离岗 is
    /// told so (only once the password was right).
    pub fn sign_in(&self, name: &str, password: &str) -> Result<Staff> {
        let member = self.replica.staff_named(name.trim())?;
        let hash = match &member {
            Some(m) => self.roster()?.password_of(&m.id)?,
            None => None,
        };
        // No such member, or no password: verified against a decoy all the
        // same, so the clock does not tell a guesser which names exist.
        let right = keqing_host::passwords::verify_or_decoy(hash.as_deref(), password);
        let Some(member) = member.filter(|_| right) else {
            return Err(ClientError::SignInRefused);
        };
        if !member.active {
            return Err(ClientError::AccountClosed(member.name));
        }
        Ok(member)
    }

    /// Records that `who` did `action` (`dossier.open`, `report.export`,
    /// `list.export`) on `target` at this device, now: the office's audit of
    /// who read what.
    pub fn audit_read(&self, who: &str, action: &str, target: &str) -> Result<()> {
        self.replica.record_read(&crate::store::Read {
            at: keqing_shared::when::fmt_datetime(now_cst()),
            who: who.to_string(),
            action: action.to_string(),
            target: target.to_string(),
        })
    }

    /// Whether any of the office's staff has a password: then the
    /// workstation wants people to sign in.
    pub fn has_accounts(&self) -> Result<bool> {
        if self.office() == HQ_OFFICE {
            return Ok(false);
        }
        Ok(self.staff_accounts()?.iter().any(|(_, has)| *has))
    }

    /// The office's staff, each with whether they have a password.
    pub fn staff_accounts(&self) -> Result<Vec<(Staff, bool)>> {
        let staff = self.replica.staff()?;
        if self.office() == HQ_OFFICE {
            return Ok(staff.into_iter().map(|s| (s, false)).collect());
        }
        let roster = self.roster()?;
        staff
            .into_iter()
            .map(|s| {
                let has = roster.password_of(&s.id)?.is_some();
                Ok((s, has))
            })
            .collect()
    }

    /// This office's roster as this device holds it.
    fn roster(&self) -> Result<Roster> {
        let bytes = self
            .replica
            .load_document(&roster_id(self.office()))?
            .ok_or_else(|| ClientError::Corrupt("the office roster is missing".into()))?;
        Ok(Roster::load(&bytes, self.replica.meta().actor.clone())?)
    }

    /// The active staff member with this name. Office work is recorded by
    /// an office's own staff: a headquarters replica holds every office's
    /// roster but records no calls, visits or follow-ups (it merges
    /// duplicates and resolves conflicts).
    pub fn staff_member(&self, name: &str) -> Result<Staff> {
        if self.office() == HQ_OFFICE {
            return Err(ClientError::Headquarters("record office work"));
        }
        match self.replica.staff_named(name.trim())? {
            Some(s) if s.active => Ok(s),
            _ => Err(ClientError::UnknownStaff(name.trim().to_string())),
        }
    }

    /// Finds one dossier by id, id prefix (8+ characters) or phone number.
    pub fn resolve_patient(&self, query: &str) -> Result<String> {
        let q = query.trim();
        // A dossier id is hex with dashes and never a valid phone number, so
        // the two readings cannot collide.
        if let Ok(p) = phone::normalise(q) {
            return self.one_of(q, self.replica.dossiers_with_phone(&p)?);
        }
        if q.len() >= 8 && q.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return self.one_of(
                q,
                self.replica.dossiers_with_prefix(&q.to_ascii_lowercase())?,
            );
        }
        Err(ClientError::UnknownPatient(q.to_string()))
    }

    fn one_of(&self, q: &str, ids: Vec<String>) -> Result<String> {
        match ids.len() {
            0 => Err(ClientError::UnknownPatient(q.to_string())),
            1 => Ok(ids.into_iter().next().expect("one id")),
            _ => Err(ClientError::AmbiguousPatient {
                query: q.to_string(),
                candidates: ids.join(", "),
            }),
        }
    }

    /// Registers a consultation call (电话咨询): finds or creates the dossier.
    pub fn register_call(&mut self, input: &CallInput) -> Result<CallOutcome> {
        let caller_phone = phone::normalise(&input.phone)?;
        let name = limits::field("name", &input.name)?;
        let source = limits::field("source", &input.source)?;
        let disease = optional_text("disease", &input.disease)?;
        let relation = optional_text("relation", &input.relation)?;
        let address = optional_text("address", &input.address)?;
        let condition = optional_text("condition", &input.condition)?;
        let treatment = optional_text("treatment", &input.treatment)?;
        let outcome = optional_text("outcome", &input.outcome)?;
        check_age(input.age)?;
        check_time("at", input.at)?;
        let staff = self.staff_member(&input.staff)?;
        // A patient whose dossier retention moved off this device is
        // fetched back, not registered again.
        if input.patient.is_none()
            && !input.force_new
            && let Some((id, moved_to)) = self.replica.dropped_by_phone(&caller_phone)?
        {
            return Err(match moved_to {
                Some(office) => ClientError::TransferredAway {
                    id,
                    phone: caller_phone,
                    office: keqing_shared::office::label(&office),
                },
                None => ClientError::AtServer {
                    id,
                    phone: caller_phone,
                },
            });
        }
        let enterer = self.enterer.clone();
        let given = input
            .patient
            .as_deref()
            .map(|p| self.resolve_patient(p))
            .transpose()?;
        let office = self.office().to_string();
        let call = Call {
            id: new_id(),
            at: input.at,
            staff: staff.name.clone(),
            caller_phone: caller_phone.clone(),
            relation,
            source,
            disease: disease.clone(),
            condition,
            treatment,
            outcome,
        };
        let update = PatientUpdate {
            name: None,
            sex: input.sex,
            age: input.age,
            birth_year: None,
            address,
            knows: input.knows,
            notes: None,
        };
        self.replica.write(|w| {
            let (target, matched_by) = match given {
                Some(id) => (Some(id), MatchedBy::Given),
                None if input.force_new => (None, MatchedBy::New),
                None => {
                    let by_phone = w.dossiers_with_phone(&caller_phone)?;
                    match by_phone.len() {
                        1 => (by_phone.into_iter().next(), MatchedBy::Phone),
                        0 => {
                            // Same name and a known age within a year: the same
                            // patient, when exactly one dossier fits.
                            let same = match input.age {
                                Some(age) => w.dossiers_named_aged(&name, age, 1, 2)?,
                                None => Vec::new(),
                            };
                            match <[String; 1]>::try_from(same) {
                                Ok([id]) => (Some(id), MatchedBy::NameAndAge),
                                Err(_) => (None, MatchedBy::New),
                            }
                        }
                        _ => {
                            return Err(ClientError::AmbiguousPatient {
                                query: caller_phone.clone(),
                                candidates: by_phone.join(", "),
                            });
                        }
                    }
                }
            };
            let (mut dossier, created_change) = match &target {
                Some(id) => (load_dossier(w, id, &office)?, None),
                None => {
                    let (d, change) =
                        Dossier::create(&new_id(), &office, input.at, w.actor().clone(), now_ms())?;
                    (d, Some(change))
                }
            };
            let is_new = created_change.is_some();
            let change = dossier
                .edit(now_ms(), |tx| {
                    tx.enter_as(enterer.as_deref());
                    if is_new {
                        tx.update_patient(&PatientUpdate {
                            name: Some(name.clone()),
                            ..update.clone()
                        })?;
                    } else {
                        tx.update_patient(&update)?;
                    }
                    tx.add_phone(&caller_phone)?;
                    if let Some(d) = &disease {
                        tx.add_disease(d)?;
                    }
                    tx.add(&call)
                })?
                .ok_or_else(|| ClientError::Corrupt("a call made no change".into()))?;
            let changes: Vec<&_> = created_change.iter().chain([&change]).collect();
            let view = w.save_dossier(&dossier, &changes, now_cst())?;
            // One more than reported: this dossier itself may be among them.
            let mut possible_duplicates =
                w.patients_named(&name, input.age, 2, DUPLICATES_REPORTED + 1)?;
            possible_duplicates.retain(|p| p.dossier_id != view.id);
            possible_duplicates.truncate(DUPLICATES_REPORTED);
            Ok(CallOutcome {
                dossier_id: view.id,
                call_id: call.id.clone(),
                matched_by,
                possible_duplicates,
            })
        })
    }

    /// Applies one edit to an existing dossier of this office.
    pub fn edit_patient<T>(
        &mut self,
        patient: &str,
        f: impl FnOnce(&mut DossierTx<'_, '_>) -> std::result::Result<T, keqing_shared::DomainError>,
    ) -> Result<(DossierView, T)> {
        let id = self.resolve_patient(patient)?;
        let office = self.office().to_string();
        let enterer = self.enterer.clone();
        self.replica.write(|w| {
            let mut dossier = load_dossier(w, &id, &office)?;
            if let Some(into) = dossier.merged_into()? {
                return Err(ClientError::Merged { id, into });
            }
            let mut out = None;
            let change = dossier.edit(now_ms(), |tx| {
                tx.enter_as(enterer.as_deref());
                out = Some(f(tx)?);
                Ok(())
            })?;
            let out = out.expect("edit ran");
            let view = match change {
                Some(change) => w.save_dossier(&dossier, &[&change], now_cst())?,
                None => dossier.view()?,
            };
            Ok((view, out))
        })
    }

    /// Records a visit (到堂) of the patient.
    pub fn record_visit(
        &mut self,
        patient: &str,
        input: &VisitInput,
    ) -> Result<(DossierView, Visit)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        let reasons = keqing_shared::catalog::not_bought_reasons(self.replica.catalog()?.as_ref());
        let reason_not_bought =
            not_bought_reason(&input.reason_not_bought, &input.reason_text, &reasons)?;
        if input.purchased && reason_not_bought.is_some() {
            return Err(keqing_shared::DomainError::invalid(
                "reason",
                "a visit that bought has no reason for not buying",
            )
            .into());
        }
        let visit = Visit {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            purchased: input.purchased,
            reason_not_bought,
            notes: optional_text("notes", &input.notes)?,
        };
        let (view, ()) = self.edit_patient(patient, |tx| tx.add(&visit))?;
        Ok((view, visit))
    }

    /// Records a purchase (购药) with its run-out date (用药到期时间).
    pub fn record_purchase(
        &mut self,
        patient: &str,
        input: &PurchaseInput,
    ) -> Result<(DossierView, Purchase)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        let product = limits::field("product", &input.product)?;
        if !(1..=10_000).contains(&input.quantity) {
            return Err(keqing_shared::DomainError::invalid(
                "quantity",
                format!("{}: expected 1 to 10000 boxes", input.quantity),
            )
            .into());
        }
        let amount_fen = parse_yuan(&input.amount_yuan)?;
        // Not given: the catalogue's days of medicine per unit say it, for
        // a product it lists.
        let runout = match input.runout {
            Some(r) => Some(r),
            None => self
                .replica
                .catalog()?
                .and_then(|c| c.runout_for(&product, input.quantity, input.at.date())),
        };
        if let Some(r) = runout
            && r < input.at.date()
        {
            return Err(keqing_shared::DomainError::invalid(
                "runout",
                "the run-out date is before the purchase",
            )
            .into());
        }
        let purchase = Purchase {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            product,
            quantity: input.quantity,
            amount_fen,
            invoice: optional_text("invoice", &input.invoice)?,
            runout,
            gifts: optional_text("gifts", &input.gifts)?,
            gift_receipt: optional_text("gift_receipt", &input.gift_receipt)?,
        };
        let (view, ()) = self.edit_patient(patient, |tx| tx.add(&purchase))?;
        Ok((view, purchase))
    }

    /// Records a follow-up call (回访) and the entry point for the next one.
    pub fn record_followup(
        &mut self,
        patient: &str,
        input: &FollowUpInput,
    ) -> Result<(DossierView, FollowUp)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        let followup = FollowUp {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            kind: limits::field("kind", &input.kind)?,
            outcome: limits::field("outcome", &input.outcome)?,
            next_entry: optional_text("next", &input.next_entry)?,
        };
        let (view, ()) = self.edit_patient(patient, |tx| tx.add(&followup))?;
        Ok((view, followup))
    }

    /// Registers a hospital stay (住院), so follow-up calls fit around it.
    pub fn record_hospital_stay(
        &mut self,
        patient: &str,
        input: &HospitalInput,
    ) -> Result<(DossierView, HospitalStay)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        if input.discharged.is_some_and(|d| d < input.admitted) {
            return Err(keqing_shared::DomainError::invalid(
                "discharged",
                "the discharge is before the admission",
            )
            .into());
        }
        let stay = HospitalStay {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            admitted: input.admitted,
            discharged: input.discharged,
            hospital: optional_text("hospital", &input.hospital)?,
            reason: optional_text("reason", &input.reason)?,
        };
        let (view, ()) = self.edit_patient(patient, |tx| tx.add(&stay))?;
        Ok((view, stay))
    }

    /// Writes the discharge date of a hospital stay registered before (the
    /// patient's only stay without one, or the stay named), which starts
    /// the call-back after discharge.
    pub fn record_discharge(
        &mut self,
        patient: &str,
        stay: Option<&str>,
        discharged: NaiveDate,
        staff: &str,
        at: NaiveDateTime,
    ) -> Result<(DossierView, HospitalStay)> {
        self.staff_member(staff)?;
        check_time("at", at)?;
        check_time("discharged", discharged.and_time(chrono::NaiveTime::MIN))?;
        let (view, _) = self.dossier(patient)?;
        let invalid = |why: String| -> ClientError {
            keqing_shared::DomainError::invalid("stay", why).into()
        };
        let open: Vec<&HospitalStay> = view
            .hospital_stays
            .iter()
            .filter(|h| h.discharged.is_none())
            .collect();
        let target = match stay.map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => view
                .hospital_stays
                .iter()
                .find(|h| h.id == id)
                .ok_or_else(|| invalid(format!("没有这次住院 no hospital stay {id}")))?,
            None => match open.as_slice() {
                [one] => *one,
                [] => {
                    return Err(invalid(format!(
                        "{} 没有未出院的住院 has no stay without a discharge date",
                        view.patient.name
                    )));
                }
                _ => {
                    return Err(invalid(
                        "有多次未出院的住院 several stays have no discharge date: name one by its id"
                            .into(),
                    ));
                }
            },
        };
        if discharged < target.admitted {
            return Err(keqing_shared::DomainError::invalid(
                "discharged",
                format!(
                    "出院早于入院 the discharge is before the admission ({})",
                    keqing_shared::when::fmt_date(target.admitted)
                ),
            )
            .into());
        }
        let mut stay = target.clone();
        stay.discharged = Some(discharged);
        let (view, ()) = self.edit_patient(&view.id, |tx| tx.update(&stay))?;
        Ok((view, stay))
    }

    /// Registers a holiday greeting or a home visit.
    pub fn record_contact(
        &mut self,
        patient: &str,
        kind: ContactKind,
        input: &ContactInput,
    ) -> Result<(DossierView, Contact)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        let contact = Contact {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            notes: optional_text("notes", &input.notes)?,
        };
        let record = contact.clone();
        let (view, ()) = self.edit_patient(patient, move |tx| match kind {
            ContactKind::Greeting => tx.add(&Greeting(record)),
            ContactKind::HomeVisit => tx.add(&HomeVisit(record)),
        })?;
        Ok((view, contact))
    }

    /// Keeps only dossiers active in the last `years` on this device (`None`:
    /// every dossier, the default); applies it now. The server keeps every
    /// dossier, so only a device that syncs may: it never drops what the
    /// server lacks. Returns the dossiers dropped now.
    pub fn set_retention(&mut self, years: Option<u32>) -> Result<Vec<String>> {
        if let Some(y) = years {
            if !(1..=50).contains(&y) {
                return Err(ClientError::Invalid(format!("years: 1 to 50, not {y}")));
            }
            if self.replica.sync_state()?.is_none() {
                return Err(ClientError::Invalid(
                    "保留期限只用于同步的设备 retention needs a device enrolled with a server (keqing enroll): the server keeps what is dropped here".into(),
                ));
            }
        }
        self.replica.set_retention(years)?;
        crate::sync::apply_retention(&mut self.replica)
    }

    /// Where a phone number's dossier is: here (the dossiers), at the
    /// server only (moved off this device by retention), or nowhere known.
    pub fn lookup_phone(&self, phone: &str) -> Result<PhoneLookup> {
        let phone = phone::normalise(phone)?;
        let mut here: Vec<PatientRow> = Vec::new();
        for id in self.replica.dossiers_with_phone(&phone)? {
            here.extend(self.replica.patient(&id)?);
        }
        if !here.is_empty() {
            return Ok(PhoneLookup::Here(here));
        }
        Ok(match self.replica.dropped_by_phone(&phone)? {
            Some((id, Some(office))) => PhoneLookup::TransferredTo { id, office },
            Some((id, None)) => PhoneLookup::AtServer(id),
            None => PhoneLookup::Nowhere,
        })
    }

    /// The activities (活动) this office takes part in: headquarters' (from
    /// the catalogue this device holds) that run here, then the office's
    /// own, by start. Offline: what arrived by the last sync.
    pub fn activities(&self) -> Result<Vec<keqing_shared::activity::Activity>> {
        self.activities_with(self.replica.catalog()?.as_ref())
    }

    /// [`Desk::activities`] with the catalogue already read.
    pub fn activities_with(
        &self,
        catalog: Option<&keqing_shared::catalog::Catalog>,
    ) -> Result<Vec<keqing_shared::activity::Activity>> {
        let office = self.office().to_string();
        let mut out: Vec<_> = catalog
            .map(|c| c.activities.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| office == HQ_OFFICE || a.runs_at(&office))
            .collect();
        if office != HQ_OFFICE {
            out.extend(self.roster()?.activities());
        }
        out.sort_by(|a, b| a.starts.cmp(&b.starts).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Defines one of the office's own activities; only its 客情主管 may
    /// (`by`). Its days, name and source are checked; the source, when
    /// given, must be a code of the catalogue.
    pub fn add_activity(
        &mut self,
        by: &str,
        name: &str,
        kind: keqing_shared::activity::ActivityKind,
        (starts, ends): (NaiveDate, NaiveDate),
        source: Option<&str>,
    ) -> Result<keqing_shared::activity::Activity> {
        let by = self.staff_member(by)?;
        if by.role != Role::Supervisor {
            return Err(keqing_shared::DomainError::invalid(
                "by",
                format!(
                    "只有客情主管可以设立活动 only the 客情主管 defines the office's activities ({} is {})",
                    by.name,
                    by.role.chinese()
                ),
            )
            .into());
        }
        let source = match source.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(code) => {
                let known = self
                    .replica
                    .catalog()?
                    .is_some_and(|c| c.sources.iter().any(|s| s.code == code));
                if !known {
                    return Err(keqing_shared::DomainError::invalid(
                        "source",
                        format!(
                            "`{code}` 不是目录中的信息来源代码 is no source code of the catalogue"
                        ),
                    )
                    .into());
                }
                Some(code.to_string())
            }
        };
        let office = self.office().to_string();
        let activity = keqing_shared::activity::Activity {
            id: format!("{office}-{}", new_id()),
            name: validate_name("name", name)?,
            kind,
            starts,
            ends,
            offices: Vec::new(),
            source,
            by_office: Some(office.clone()),
        };
        activity.check()?;
        self.replica.write(|w| {
            let mut roster = office_roster(w, &office)?;
            let change = roster.add_activity(&activity, now_ms())?;
            w.save_roster(&office, &roster, &[&change], now_cst())?;
            Ok(())
        })?;
        Ok(activity)
    }

    /// Records that the patient took part in activity `activity` (its id)
    /// on `at`: an activity of this office, on one of its days, once per
    /// patient.
    pub fn join_activity(
        &mut self,
        patient: &str,
        staff: &str,
        activity: &str,
        at: NaiveDateTime,
        notes: &Option<String>,
    ) -> Result<(DossierView, Participation)> {
        let staff = self.staff_member(staff)?;
        check_time("at", at)?;
        let activities = self.activities()?;
        let Some(a) = activities.iter().find(|a| a.id == activity.trim()) else {
            return Err(keqing_shared::DomainError::invalid(
                "activity",
                format!(
                    "本处没有活动 `{}` no activity of this office has that id (keqing activity list)",
                    keqing_shared::printable::printable(activity.trim())
                ),
            )
            .into());
        };
        if !a.open_on(at.date()) {
            return Err(keqing_shared::DomainError::invalid(
                "at",
                format!(
                    "活动 {} 在 {} 至 {} 举行 the activity runs {} to {}",
                    a.name, a.starts, a.ends, a.starts, a.ends
                ),
            )
            .into());
        }
        let (before, _) = self.dossier(patient)?;
        if before.participations.iter().any(|p| p.activity == a.id) {
            return Err(keqing_shared::DomainError::invalid(
                "activity",
                format!(
                    "{} 已参加 {} already took part",
                    before.patient.name, a.name
                ),
            )
            .into());
        }
        let p = Participation {
            id: new_id(),
            at,
            staff: staff.name,
            activity: a.id.clone(),
            notes: optional_text("notes", notes)?,
        };
        let (view, ()) = self.edit_patient(&before.id, |tx| tx.add_participation(&p))?;
        Ok((view, p))
    }

    /// Marks the patient as a typical case (典型病例), or clears the mark.
    pub fn mark_typical(
        &mut self,
        patient: &str,
        staff: &str,
        at: NaiveDateTime,
        notes: &Option<String>,
        flagged: bool,
    ) -> Result<DossierView> {
        let staff = self.staff_member(staff)?;
        check_time("at", at)?;
        let mark = TypicalCase {
            flagged,
            at,
            staff: staff.name,
            notes: optional_text("notes", notes)?,
        };
        let (view, ()) = self.edit_patient(patient, |tx| tx.set_typical(&mark))?;
        Ok(view)
    }

    /// Opens, handles or resolves a problem (问题患者); returns the problem
    /// as it now stands.
    pub fn problem(
        &mut self,
        patient: &str,
        staff: &str,
        at: NaiveDateTime,
        step: &ProblemStep,
    ) -> Result<(DossierView, Problem)> {
        let staff = self.staff_member(staff)?;
        check_time("at", at)?;
        let (problem_id, resolution) = match step {
            ProblemStep::Open { description } => {
                let p = Problem {
                    id: new_id(),
                    at,
                    staff: staff.name,
                    description: limits::field("description", description)?,
                    state: ProblemState::Open,
                    handling_at: None,
                    resolved_at: None,
                    resolution: None,
                    resolved_by: None,
                };
                let (view, ()) = self.edit_patient(patient, |tx| tx.add(&p))?;
                return Ok((view, p));
            }
            ProblemStep::Handle { problem } => (problem.clone(), None),
            ProblemStep::Resolve {
                problem,
                resolution,
            } => (
                problem.clone(),
                Some(limits::field("resolution", resolution)?),
            ),
        };
        let (view, _) = self.dossier(patient)?;
        let problem_id = match problem_id {
            Some(id) => id,
            None => {
                let open: Vec<&Problem> = view
                    .problems
                    .iter()
                    .filter(|p| p.state != ProblemState::Resolved)
                    .collect();
                match open.as_slice() {
                    [one] => one.id.clone(),
                    [] => {
                        return Err(keqing_shared::DomainError::invalid(
                            "problem",
                            format!(
                                "没有未解决的问题 {} has no unresolved problem",
                                view.patient.name
                            ),
                        )
                        .into());
                    }
                    _ => {
                        return Err(keqing_shared::DomainError::invalid(
                            "problem",
                            "有多个未解决的问题 several unresolved problems: name one by its id",
                        )
                        .into());
                    }
                }
            }
        };
        self.edit_patient(&view.id, |tx| {
            let mut p: Problem = tx.get(&problem_id)?;
            match &resolution {
                None => {
                    p.state = ProblemState::Handling;
                    p.handling_at = Some(at);
                }
                Some(r) => {
                    p.state = ProblemState::Resolved;
                    p.resolved_at = Some(at);
                    p.resolution = Some(r.clone());
                    p.resolved_by = Some(staff.name.clone());
                }
            }
            tx.update(&p)?;
            Ok(p)
        })
    }

    /// Updates the patient's details (修改资料): the fields given, a phone
    /// number or a disease to add.
    pub fn update_patient(&mut self, patient: &str, c: &PatientChanges) -> Result<DossierView> {
        check_age(c.age)?;
        if let Some(y) = c.birth_year
            && !(1900..=2100).contains(&y)
        {
            return Err(keqing_shared::DomainError::invalid(
                "birth_year",
                format!("{y} is not a year of birth"),
            )
            .into());
        }
        let update = PatientUpdate {
            name: optional_text("name", &c.name)?,
            sex: c.sex,
            age: c.age,
            birth_year: c.birth_year,
            address: optional_text("address", &c.address)?,
            knows: c.knows,
            notes: optional_text("notes", &c.notes)?,
        };
        let phone = c.phone.as_deref().map(phone::normalise).transpose()?;
        let disease = optional_text("disease", &c.disease)?;
        let (view, ()) = self.edit_patient(patient, |tx| {
            tx.update_patient(&update)?;
            if let Some(p) = &phone {
                tx.add_phone(p)?;
            }
            if let Some(d) = &disease {
                tx.add_disease(d)?;
            }
            Ok(())
        })?;
        Ok(view)
    }

    /// Registers a delivery (外送) of goods to the patient: 待送, or 已送
    /// when `delivered`.
    pub fn record_delivery(
        &mut self,
        patient: &str,
        input: &DeliveryInput,
    ) -> Result<(DossierView, Delivery)> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        let (view, _) = self.dossier(patient)?;
        let bought = match &input.purchase {
            Some(id) => Some(
                view.purchases
                    .iter()
                    .find(|p| p.id == id.trim())
                    .ok_or_else(|| {
                        keqing_shared::DomainError::invalid(
                            "purchase",
                            format!("{} has no purchase `{}`", view.patient.name, id.trim()),
                        )
                    })?
                    .clone(),
            ),
            None => None,
        };
        let product = match optional_text("product", &input.product)? {
            Some(p) => Some(p),
            None => bought.as_ref().map(|p| p.product.clone()),
        };
        let Some(product) = product else {
            return Err(keqing_shared::DomainError::invalid(
                "product",
                "外送什么药？选择对应的购药或填写药品 (name the purchase it delivers, or the product)",
            )
            .into());
        };
        let Some(address) =
            optional_text("address", &input.address)?.or(view.patient.address.clone())
        else {
            return Err(keqing_shared::DomainError::invalid(
                "address",
                "送到哪里？患者档案没有地址，请填写 (the patient has no address on file: give one)",
            )
            .into());
        };
        let quantity = input.quantity.or(bought.as_ref().map(|p| p.quantity));
        if let Some(q) = quantity.filter(|q| !(1..=10_000).contains(q)) {
            return Err(keqing_shared::DomainError::invalid(
                "quantity",
                format!("{q}: expected 1 to 10000 boxes"),
            )
            .into());
        }
        let delivery = Delivery {
            id: new_id(),
            at: input.at,
            staff: staff.name.clone(),
            notes: optional_text("notes", &input.notes)?,
            purchase: bought.map(|p| p.id),
            product: Some(product),
            quantity,
            address: Some(address),
            due: input.due,
            status: Some(if input.delivered {
                DeliveryStatus::Delivered
            } else {
                DeliveryStatus::Pending
            }),
            status_reason: None,
            settled_at: input.delivered.then_some(input.at),
            settled_by: input.delivered.then_some(staff.name),
        };
        let (view, ()) = self.edit_patient(&view.id, |tx| tx.add(&delivery))?;
        Ok((view, delivery))
    }

    /// Settles a delivery still to make: 已送, or 未送达 with `failed`'s
    /// reason. `delivery` is its id, or the patient's only pending one.
    pub fn settle_delivery(
        &mut self,
        patient: &str,
        delivery: Option<&str>,
        staff: &str,
        at: NaiveDateTime,
        failed: Option<&str>,
    ) -> Result<(DossierView, Delivery)> {
        let staff = self.staff_member(staff)?;
        check_time("at", at)?;
        let reason = failed.map(|r| limits::field("reason", r)).transpose()?;
        let (view, _) = self.dossier(patient)?;
        let pending: Vec<&Delivery> = view
            .deliveries
            .iter()
            .filter(|d| d.state() == DeliveryStatus::Pending)
            .collect();
        let target = match delivery {
            Some(id) => pending.iter().find(|d| d.id == id.trim()).copied(),
            None if pending.len() == 1 => Some(pending[0]),
            None if pending.is_empty() => None,
            None => {
                return Err(keqing_shared::DomainError::invalid(
                    "delivery",
                    "有多个待送 several deliveries are pending: name one by its id",
                )
                .into());
            }
        }
        .ok_or_else(|| {
            keqing_shared::DomainError::invalid(
                "delivery",
                format!(
                    "没有待送的外送 no pending delivery for {}",
                    view.patient.name
                ),
            )
        })?;
        let mut settled = target.clone();
        settled.status = Some(if reason.is_some() {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Delivered
        });
        settled.status_reason = reason;
        settled.settled_at = Some(at);
        settled.settled_by = Some(staff.name);
        let (view, ()) = self.edit_patient(&view.id, |tx| tx.update(&settled))?;
        Ok((view, settled))
    }

    /// Every delivery still to make, overdue first.
    pub fn open_deliveries(&self) -> Result<Vec<crate::store::OpenDelivery>> {
        self.replica.open_deliveries()
    }

    /// Registers a call that was not about a patient (非正常咨询): no
    /// dossier, not a consultation call; kept in the office's log of the
    /// month, which syncs like a dossier.
    pub fn record_nonpatient(&mut self, input: &NonPatientInput) -> Result<NonPatientCall> {
        let staff = self.staff_member(&input.staff)?;
        check_time("at", input.at)?;
        // A kind of the list (the catalogue's, or the built-in one: stored
        // as its code); one the list lacks is kept as 其他 with the text.
        let kinds = keqing_shared::catalog::nonpatient_kinds(self.replica.catalog()?.as_ref());
        let typed = limits::field("kind", &input.kind)?;
        let label = NonPatientKind::label_of(&typed).to_string();
        let kind = if !kinds.contains(&label) {
            format!("{}：{typed}", NonPatientKind::Other.chinese())
        } else {
            match NonPatientKind::parse(&label) {
                Some(k) if split_stored(&typed).1.is_none() => k.as_str().to_string(),
                _ => typed,
            }
        };
        let phone = input
            .phone
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(phone::normalise)
            .transpose()?;
        let call = NonPatientCall {
            id: new_id(),
            at: input.at,
            staff: staff.name,
            kind,
            phone,
            notes: optional_text("notes", &input.notes)?,
        };
        let office = self.office().to_string();
        let id = keqing_shared::nonpatient::log_id(&office, input.at.date());
        self.replica.write(|w| {
            let (mut log, genesis) = match w.load_document(&id)? {
                Some(bytes) => (NonPatientLog::load(&bytes, w.actor().clone())?, None),
                None => {
                    let (log, genesis) = NonPatientLog::genesis(&id)?;
                    (log.with_actor(w.actor().clone()), Some(genesis))
                }
            };
            let change = log.add(&call, now_ms())?;
            let changes: Vec<&_> = genesis.iter().chain([&change]).collect();
            w.save_nonpatient_log(&id, &office, &log, &changes, now_cst())?;
            Ok(())
        })?;
        Ok(call)
    }

    /// Changes a patient's follow-up plan; the change is a record of the
    /// dossier, and the schedule follows from it.
    pub fn change_plan(
        &mut self,
        patient: &str,
        staff: &str,
        at: NaiveDateTime,
        step: &PlanStep,
        notes: &Option<String>,
    ) -> Result<(DossierView, PlanChange)> {
        let staff = self.staff_member(staff)?;
        check_time("at", at)?;
        let (view, slots) = self.dossier(patient)?;
        let state = keqing_shared::followup::plan_state(&view);
        let invalid = |field: &'static str, why: String| -> ClientError {
            keqing_shared::DomainError::invalid(field, why).into()
        };
        let mut change = PlanChange {
            id: new_id(),
            at,
            staff: staff.name.clone(),
            action: PlanAction::Extra,
            date: None,
            reason: None,
            assignee: None,
            notes: optional_text("notes", notes)?,
        };
        match step {
            PlanStep::Extra { date } | PlanStep::Postpone { to: date } if *date < at.date() => {
                return Err(invalid("date", format!("{date} is before {}", at.date())));
            }
            PlanStep::Extra { date } => change.date = Some(*date),
            PlanStep::Postpone { to } => {
                let open = slots.iter().any(|s| {
                    !matches!(
                        s.status_on(at.date()),
                        SlotStatus::Done { .. } | SlotStatus::Closed
                    )
                });
                if !open {
                    return Err(invalid(
                        "date",
                        format!(
                            "{} 没有待做的回访 has no open follow-up to move",
                            view.patient.name
                        ),
                    ));
                }
                change.action = PlanAction::Postpone;
                change.date = Some(*to);
            }
            PlanStep::Stop { reason } => {
                let r = StopReason::parse(reason).ok_or_else(|| {
                    invalid(
                        "reason",
                        format!(
                            "`{}`: expected one of {}",
                            reason.trim(),
                            StopReason::ALL.map(|r| r.chinese()).join(", ")
                        ),
                    )
                })?;
                if let Some((was, since)) = state.stopped {
                    return Err(invalid(
                        "reason",
                        format!(
                            "已停访 follow-ups are already stopped ({}, since {})",
                            was.chinese(),
                            keqing_shared::when::fmt_datetime(since)
                        ),
                    ));
                }
                change.action = PlanAction::Stop;
                change.reason = Some(r);
            }
            PlanStep::Resume => {
                if state.stopped.is_none() {
                    return Err(invalid(
                        "action",
                        "回访未停 follow-ups are not stopped".into(),
                    ));
                }
                change.action = PlanAction::Resume;
            }
            PlanStep::Assign { to } => {
                let who = self.staff_member(to).map_err(|_| {
                    invalid(
                        "to",
                        format!("`{}` is not active staff of this office", to.trim()),
                    )
                })?;
                change.action = PlanAction::Assign;
                change.assignee = Some(who.name);
            }
        }
        let (view, ()) = self.edit_patient(&view.id, |tx| tx.add_plan_change(&change))?;
        Ok((view, change))
    }

    /// The live patients of a list on day `d`, most recently in touch
    /// first, at most `limit`.
    /// The list asked for by a category (by name or code) or a flag;
    /// `None`: the counts.
    pub fn list_filter(
        category: Option<&str>,
        typical: bool,
        problem: bool,
    ) -> Result<Option<crate::store::ListFilter>> {
        use crate::store::ListFilter;
        use keqing_shared::lists::Category;
        let category = category.map(str::trim).filter(|c| !c.is_empty());
        Ok(match (category, typical, problem) {
            (Some(c), _, _) => Some(ListFilter::Category(Category::parse(c).ok_or_else(
                || {
                    keqing_shared::DomainError::invalid(
                        "category",
                        format!(
                            "`{c}`: expected one of {}",
                            Category::ALL.map(|c| c.chinese()).join(", ")
                        ),
                    )
                },
            )?)),
            (None, true, _) => Some(ListFilter::Typical),
            (None, false, true) => Some(ListFilter::Problem),
            (None, false, false) => None,
        })
    }

    /// One list of patients (names and phones), read by `who`: the read is
    /// audited (`list.read`).
    pub fn list(
        &self,
        who: &str,
        filter: crate::store::ListFilter,
        d: NaiveDate,
        limit: usize,
    ) -> Result<Vec<crate::store::ListedPatient>> {
        let rows = self.replica.list_patients(filter, d, limit)?;
        self.audit_read(
            who,
            "list.read",
            &format!(
                "{} {} ({} 人)",
                filter.label(),
                keqing_shared::when::fmt_date(d),
                rows.len()
            ),
        )?;
        Ok(rows)
    }

    /// How many patients stand in each category and carry each flag on
    /// day `d`, all offices of this replica together: (label, count).
    pub fn list_counts(&self, d: NaiveDate) -> Result<Vec<(String, u64)>> {
        let mut categories = [0u64; 6];
        let (mut typical, mut problem) = (0, 0);
        for c in self.replica.category_counts(d)? {
            for (n, m) in categories.iter_mut().zip(c.categories) {
                *n += m;
            }
            typical += c.typical;
            problem += c.problem;
        }
        Ok(keqing_shared::lists::Category::ALL
            .iter()
            .zip(categories)
            .map(|(c, n)| (c.chinese().to_string(), n))
            .chain([("典型".to_string(), typical), ("问题".to_string(), problem)])
            .collect())
    }

    /// Marks a staff member 在岗 (`active`) or 离岗: kept with their
    /// history, gone from pick lists while 离岗.
    pub fn set_staff_active(&mut self, name: &str, active: bool) -> Result<Staff> {
        let office = self.office().to_string();
        if office == HQ_OFFICE {
            return Err(ClientError::Headquarters("have office staff"));
        }
        self.replica.write(|w| {
            let member = w
                .staff_named(name.trim())?
                .ok_or_else(|| ClientError::UnknownStaff(name.trim().to_string()))?;
            let mut roster = office_roster(w, &office)?;
            if let Some(change) = roster.set_active(&member.id, active, now_ms())? {
                w.save_roster(&office, &roster, &[&change], now_cst())?;
            }
            Ok(Staff { active, ..member })
        })
    }

    /// Folds dossier `duplicate` into `keep`: every record moves (copied
    /// under its own id) into the kept dossier and the duplicate becomes a
    /// pointer to it, in one local transaction. Both must be this office's;
    /// headquarters may merge across offices. Merging again is harmless.
    pub fn merge(&mut self, keep: &str, duplicate: &str) -> Result<MergeOutcome> {
        let keep_id = self.resolve_patient(keep)?;
        let dup_id = self.resolve_any(duplicate)?;
        if keep_id == dup_id {
            return Err(keqing_shared::DomainError::invalid(
                "duplicate",
                "a dossier cannot be merged into itself",
            )
            .into());
        }
        let office = self.office().to_string();
        self.replica.write(|w| {
            let mut kept = load_dossier(w, &keep_id, &office)?;
            let mut dup = load_dossier(w, &dup_id, &office)?;
            match dup.merged_into()? {
                Some(into) if into != keep_id => {
                    return Err(ClientError::Merged {
                        id: dup_id.clone(),
                        into,
                    });
                }
                _ => {}
            }
            let (keep_view, dup_view) = (kept.view()?, dup.view()?);
            let mut copied = 0;
            let keep_change = kept.edit(now_ms(), |tx| {
                copied = tx.absorb(&keep_view, &dup_view)?;
                Ok(())
            })?;
            let dup_change = if dup_view.merged_into.is_none() {
                dup.edit(now_ms(), |tx| tx.set_merged_into(&keep_id))?
            } else {
                None
            };
            if let Some(c) = keep_change {
                w.save_dossier(&kept, &[&c], now_cst())?;
            }
            if let Some(c) = dup_change {
                w.save_dossier(&dup, &[&c], now_cst())?;
            }
            Ok(MergeOutcome {
                kept: keep_id.clone(),
                merged: dup_id.clone(),
                records_copied: copied,
            })
        })
    }

    /// Resolves a patient even if the dossier was merged (by id or prefix).
    fn resolve_any(&self, query: &str) -> Result<String> {
        let q = query.trim();
        if q.len() >= 8 && q.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return self.one_of(
                q,
                self.replica.dossiers_with_prefix(&q.to_ascii_lowercase())?,
            );
        }
        self.resolve_patient(q)
    }

    /// Dossiers with patient fields holding concurrent values, and those values.
    pub fn conflicts(&self) -> Result<Vec<ConflictEntry>> {
        let mut out = Vec::new();
        for id in self.replica.conflicted_dossiers()? {
            let (view, _) = self.dossier(&id)?;
            out.push(ConflictEntry {
                dossier_id: id,
                office: view.office,
                name: view.patient.name,
                conflicts: view.conflicts,
            });
        }
        Ok(out)
    }

    /// Settles one patient field to `value` (for a conflict, or any field).
    pub fn resolve_field(
        &mut self,
        patient: &str,
        field: &str,
        value: &str,
    ) -> Result<DossierView> {
        let v = keqing_shared::dossier::patient_field_value(field, value)?;
        // The plan's fields are settled by a plan change, so the plan (which
        // follows its records) and the field agree again.
        if field == keqing_shared::dossier::ASSIGNEE
            || field == keqing_shared::dossier::FOLLOWUP_STOP
        {
            let (view, _) = self.dossier(patient)?;
            let staff = view.plan.last().map(|c| c.staff.clone()).ok_or_else(|| {
                keqing_shared::DomainError::invalid("field", "this dossier has no plan changes")
            })?;
            let text = v.as_str().unwrap_or("").to_string();
            let step = match (field, text.as_str()) {
                (keqing_shared::dossier::ASSIGNEE, who) => PlanStep::Assign {
                    to: who.to_string(),
                },
                (_, "") => PlanStep::Resume,
                (_, reason) => PlanStep::Stop {
                    reason: reason.to_string(),
                },
            };
            // A stop while stopped (one side of the conflict) is settled by
            // resuming first.
            let state = keqing_shared::followup::plan_state(&view);
            if matches!(step, PlanStep::Stop { .. }) && state.stopped.is_some() {
                self.change_plan(&view.id, &staff, now_cst(), &PlanStep::Resume, &None)?;
            }
            if matches!(step, PlanStep::Resume) && state.stopped.is_none() {
                let (view, ()) =
                    self.edit_patient(&view.id, |tx| tx.set_patient_field(field, v))?;
                return Ok(view);
            }
            return Ok(self
                .change_plan(&view.id, &staff, now_cst(), &step, &None)?
                .0);
        }
        let (view, ()) = self.edit_patient(patient, |tx| tx.set_patient_field(field, v))?;
        Ok(view)
    }

    /// The whole dossier with its follow-up slots.
    pub fn dossier(&self, patient: &str) -> Result<(DossierView, Vec<Slot>)> {
        let id = self.resolve_patient(patient)?;
        let bytes = self
            .replica
            .load_document(&id)?
            .ok_or_else(|| ClientError::UnknownPatient(patient.to_string()))?;
        let view = Dossier::load(&bytes, self.replica.meta().actor.clone())?.view()?;
        let slots = schedule(&view);
        Ok((view, slots))
    }

    /// The follow-up list of day `d` (only `assignee`'s patients when given):
    /// overdue first, then due; one entry per patient.
    pub fn due(&self, d: NaiveDate, assignee: Option<&str>) -> Result<Vec<DueEntry>> {
        let mut by_patient: std::collections::BTreeMap<String, DueEntry> = Default::default();
        for OpenSlot {
            dossier_id,
            name,
            phone,
            next_entry,
            assignee,
            slot,
        } in self.replica.open_slots(d, assignee)?
        {
            let e = by_patient
                .entry(dossier_id.clone())
                .or_insert_with(|| DueEntry {
                    dossier_id,
                    name,
                    phone,
                    next_entry,
                    assignee,
                    overdue: false,
                    days_overdue: 0,
                    slots: Vec::new(),
                });
            if slot.status_on(d) == SlotStatus::Overdue {
                e.overdue = true;
                e.days_overdue = e.days_overdue.max((d - slot.deadline).num_days());
            }
            e.slots.push(slot);
        }
        let mut list: Vec<DueEntry> = by_patient.into_values().collect();
        for e in &mut list {
            e.slots.sort_by_key(|s| (s.deadline, s.cadence));
        }
        list.sort_by(|a, b| {
            b.overdue
                .cmp(&a.overdue)
                .then(b.days_overdue.cmp(&a.days_overdue))
                .then_with(|| a.slots[0].deadline.cmp(&b.slots[0].deadline))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.dossier_id.cmp(&b.dossier_id))
        });
        Ok(list)
    }

    /// 电话咨询汇总表 of day `d`.
    /// The report of this replica's own scope (its office; every office
    /// for a headquarters replica) over the days `from..=to`, from the
    /// local projections: it works offline, on what has synced so far.
    pub fn report(&self, from: NaiveDate, to: NaiveDate) -> Result<Report> {
        let scope = if self.office() == HQ_OFFICE {
            Scope::National
        } else {
            Scope::Office(self.office().to_string())
        };
        let mut rows = self.replica.report_rows(scope.office(), from, to)?;
        rows.catalog = self.replica.catalog()?;
        Ok(report::build(&scope, from, to, &rows))
    }
}

/// The workstation keeps its desk behind a lock: after a panic while it
/// was held, the replica's open transaction is rolled back.
impl keqing_host::Recover for Desk {
    fn recover(&mut self) {
        self.replica.recover();
    }
}

/// A registered call reports at most this many possible duplicates: enough
/// to check by hand; a common name in a big office has hundreds, and
/// reading each costs the call's latency.
const DUPLICATES_REPORTED: usize = 5;

/// Loads a dossier of this office (any office at headquarters) for editing.
fn load_dossier(w: &WriteTx<'_>, id: &str, office: &str) -> Result<Dossier> {
    let bytes = w
        .load_document(id)?
        .ok_or_else(|| ClientError::UnknownPatient(id.to_string()))?;
    if let Some(to) = w.moved_to(id)? {
        return Err(ClientError::MovedAway {
            id: id.to_string(),
            office: keqing_shared::office::label(&to),
        });
    }
    let dossier = Dossier::load(&bytes, w.actor().clone())?;
    let theirs = dossier.office()?;
    if theirs != office && office != HQ_OFFICE {
        return Err(ClientError::WrongOffice {
            id: id.to_string(),
            office: theirs,
        });
    }
    Ok(dossier)
}

/// The office's roster, in a write.
fn office_roster(w: &WriteTx<'_>, office: &str) -> Result<Roster> {
    let bytes = w
        .load_document(&roster_id(office))?
        .ok_or_else(|| ClientError::Corrupt("the office roster is missing".into()))?;
    Ok(Roster::load(&bytes, w.actor().clone())?)
}
