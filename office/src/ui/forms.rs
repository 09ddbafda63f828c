//! What the browser posts, turned into desk inputs; and the errors that go
//! back next to the fields they concern.

use crate::desk::{
    CallInput, ContactInput, ContactKind, DeliveryInput, Desk, FollowUpInput, HospitalInput,
    NonPatientInput, PatientChanges, PhoneLookup, PlanStep, ProblemStep, PurchaseInput, VisitInput,
};
use crate::error::ClientError;
use crate::store::PatientRow;
use chrono::{NaiveDate, NaiveDateTime};
use keqing_host::now_cst;
use keqing_shared::DomainError;
use keqing_shared::phone;
use keqing_shared::records::Sex;
use keqing_shared::when::{parse_date, parse_datetime};
use std::collections::HashMap;

/// The fields of a posted form (the first value of a repeated name wins).
#[derive(Debug, Clone, Default)]
pub struct FormData(HashMap<String, String>);

impl From<Vec<(String, String)>> for FormData {
    fn from(fields: Vec<(String, String)>) -> Self {
        let mut map = HashMap::new();
        for (k, v) in fields {
            map.entry(k).or_insert(v);
        }
        FormData(map)
    }
}

impl FormData {
    /// The value as typed, "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// The trimmed value, `None` when empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name).trim().to_string()).filter(|v| !v.is_empty())
    }

    /// A checkbox: present (and not "off") means ticked.
    pub fn ticked(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| v != "off")
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_string(), value.to_string());
    }
}

/// Errors to show: each next to its field, or above the form.
#[derive(Debug, Clone, Default)]
pub struct FormErrors {
    fields: HashMap<String, String>,
    general: Vec<String>,
}

impl FormErrors {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub fn general(&self) -> &[String] {
        &self.general
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_empty()
    }

    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.fields
            .entry(field.to_string())
            .or_insert_with(|| message.into());
    }

    /// Places an error of the desk next to the field it is about.
    pub fn from_error(e: &ClientError) -> FormErrors {
        let mut errors = FormErrors::default();
        let field = match e {
            ClientError::Domain(DomainError::InvalidField { field, .. }) => Some(*field),
            ClientError::Domain(DomainError::InvalidPhone(_)) => Some("phone"),
            ClientError::UnknownStaff(_) => Some("staff"),
            ClientError::DuplicateStaff(_) => Some("name"),
            ClientError::Domain(DomainError::UnknownRole(_)) => Some("role"),
            _ => None,
        };
        match field {
            Some(f) => errors.add(f, e.to_string()),
            None => errors.general.push(e.to_string()),
        }
        errors
    }
}

/// Errors a person can fix by changing what they typed (everything else is
/// a fault of the machine and gets an error page).
pub fn is_input_error(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Domain(_)
            | ClientError::UnknownStaff(_)
            | ClientError::DuplicateStaff(_)
            | ClientError::UnknownPatient(_)
            | ClientError::AmbiguousPatient { .. }
            | ClientError::Merged { .. }
            | ClientError::WrongOffice { .. }
            | ClientError::Headquarters(_)
            | ClientError::Invalid(_)
    )
}

fn required(form: &FormData, name: &str, errors: &mut FormErrors, what: &str) -> String {
    let v = form.get(name).trim().to_string();
    if v.is_empty() {
        errors.add(name, format!("请填写{what} ({name} is required)"));
    }
    v
}

fn datetime(form: &FormData, name: &str, errors: &mut FormErrors) -> NaiveDateTime {
    match form.optional(name) {
        None => now_cst(),
        Some(v) => parse_datetime(&v).unwrap_or_else(|e| {
            errors.add(name, e.to_string());
            now_cst()
        }),
    }
}

fn date(form: &FormData, name: &str, errors: &mut FormErrors) -> Option<NaiveDate> {
    form.optional(name).and_then(|v| match parse_date(&v) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.add(name, e.to_string());
            None
        }
    })
}

fn integer(form: &FormData, name: &str, errors: &mut FormErrors) -> Option<i64> {
    form.optional(name).and_then(|v| match v.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.add(name, format!("请填写数字 (`{v}` is not a whole number)"));
            None
        }
    })
}

/// The consultation register form (电话咨询登记表) as a call to register.
pub fn call_input(form: &FormData) -> Result<CallInput, FormErrors> {
    let mut errors = FormErrors::default();
    let phone = required(form, "phone", &mut errors, "来电号码");
    if !phone.is_empty()
        && let Err(e) = phone::normalise(&phone)
    {
        errors.add("phone", e.to_string());
    }
    let name = required(form, "name", &mut errors, "患者姓名");
    let source = required(form, "source", &mut errors, "信息来源");
    let staff = required(form, "staff", &mut errors, "接待人员");
    let age = integer(form, "age", &mut errors);
    let sex = sex(form, &mut errors);
    let knows = yes_no(form, "knows", &mut errors);
    let at = datetime(form, "at", &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CallInput {
        phone,
        name,
        age,
        sex,
        disease: form.optional("disease"),
        source,
        staff,
        relation: form.optional("relation"),
        address: form.optional("address"),
        knows,
        condition: form.optional("condition"),
        treatment: form.optional("treatment"),
        outcome: form.optional("outcome"),
        at,
        patient: form.optional("patient"),
        force_new: form.ticked("force_new"),
    })
}

/// What the register form shows while a number is typed.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The number as it will be stored, once it is a valid number.
    pub normalised: Option<String>,
    /// Dossiers holding that number.
    pub by_phone: Vec<PatientRow>,
    /// Other live dossiers with the name typed (possible duplicates).
    pub by_name: Vec<PatientRow>,
    /// The number's dossier is at the server only (moved off this device
    /// by retention) and could not be fetched back now (offline).
    pub at_server: Option<String>,
    /// Headquarters transferred the number's dossier to another office:
    /// its id and that office (as staff read it).
    pub transferred: Option<(String, String)>,
}

pub fn lookup(desk: &Desk, phone_typed: &str, name: &str) -> Result<Lookup, ClientError> {
    let mut found = Lookup::default();
    if let Ok(p) = phone::normalise(phone_typed) {
        match desk.lookup_phone(&p)? {
            PhoneLookup::Here(rows) => found.by_phone = rows,
            PhoneLookup::AtServer(id) => found.at_server = Some(id),
            PhoneLookup::TransferredTo { id, office } => {
                found.transferred = Some((id, keqing_shared::office::label(&office)))
            }
            PhoneLookup::Nowhere => {}
        }
        found.normalised = Some(p);
    }
    let name = name.trim();
    if !name.is_empty() && name.chars().count() <= 40 {
        found.by_name = desk
            .replica()
            .patients_named(name, None, 0)?
            .into_iter()
            .filter(|r| !found.by_phone.iter().any(|p| p.dossier_id == r.dossier_id))
            .collect();
    }
    Ok(found)
}

/// What a dossier page's forms do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Visit,
    Purchase,
    Followup,
    Resolve,
    Hospital,
    Discharge,
    Problem,
    Typical,
    Greeting,
    HomeVisit,
    Delivery,
    Deliver,
    Plan,
    Details,
    /// 参加活动.
    Join,
}

impl Action {
    const ALL: [Action; 15] = [
        Action::Visit,
        Action::Purchase,
        Action::Followup,
        Action::Resolve,
        Action::Hospital,
        Action::Discharge,
        Action::Problem,
        Action::Typical,
        Action::Greeting,
        Action::HomeVisit,
        Action::Delivery,
        Action::Deliver,
        Action::Plan,
        Action::Details,
        Action::Join,
    ];

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Visit => "visit",
            Action::Purchase => "purchase",
            Action::Followup => "followup",
            Action::Resolve => "resolve",
            Action::Hospital => "hospital",
            Action::Discharge => "discharge",
            Action::Problem => "problem",
            Action::Typical => "typical",
            Action::Greeting => "greeting",
            Action::HomeVisit => "homevisit",
            Action::Delivery => "delivery",
            Action::Deliver => "deliver",
            Action::Plan => "plan",
            Action::Details => "details",
            Action::Join => "join",
        }
    }

    /// The duty a form of this action records.
    pub fn duty(self) -> keqing_shared::staff::Duty {
        use keqing_shared::staff::Duty;
        match self {
            Action::Visit => Duty::Visit,
            Action::Purchase => Duty::Purchase,
            Action::Followup | Action::Greeting => Duty::FollowUp,
            Action::Resolve => Duty::Conflicts,
            Action::Hospital | Action::Discharge => Duty::Hospital,
            Action::Problem => Duty::Problem,
            Action::Typical => Duty::Typical,
            Action::HomeVisit => Duty::HomeVisit,
            Action::Delivery | Action::Deliver => Duty::Delivery,
            Action::Plan => Duty::PlanChange,
            Action::Details => Duty::PatientDetails,
            Action::Join => Duty::Activity,
        }
    }

    /// The record a form of this action is about, when a page has one
    /// such form per record (a pending delivery, an open problem, a stay):
    /// the errors of a failed form go back to that form only.
    pub fn record_field(self) -> Option<&'static str> {
        match self {
            Action::Deliver => Some("delivery"),
            Action::Discharge => Some("stay"),
            Action::Resolve => Some("field"),
            Action::Problem => Some("problem"),
            _ => None,
        }
    }
}

/// A validated edit of one dossier, ready for the desk.
pub enum Edit {
    Visit(VisitInput),
    Purchase(PurchaseInput),
    Followup(FollowUpInput),
    Resolve {
        field: String,
        value: String,
    },
    Hospital(HospitalInput),
    Discharge {
        stay: Option<String>,
        date: NaiveDate,
        staff: String,
        at: NaiveDateTime,
    },
    Problem {
        staff: String,
        at: NaiveDateTime,
        step: ProblemStep,
    },
    Join {
        staff: String,
        at: NaiveDateTime,
        activity: String,
        notes: Option<String>,
    },
    Typical {
        staff: String,
        at: NaiveDateTime,
        notes: Option<String>,
        flagged: bool,
    },
    Contact(ContactKind, ContactInput),
    Delivery(DeliveryInput),
    Deliver {
        delivery: Option<String>,
        staff: String,
        at: NaiveDateTime,
        failed: Option<String>,
    },
    Plan {
        staff: String,
        at: NaiveDateTime,
        step: PlanStep,
        notes: Option<String>,
    },
    Details(PatientChanges),
}

impl Edit {
    pub fn apply(self, desk: &mut Desk, dossier: &str) -> Result<(), ClientError> {
        match self {
            Edit::Visit(v) => desk.record_visit(dossier, &v).map(drop),
            Edit::Purchase(p) => desk.record_purchase(dossier, &p).map(drop),
            Edit::Followup(f) => desk.record_followup(dossier, &f).map(drop),
            Edit::Resolve { field, value } => desk.resolve_field(dossier, &field, &value).map(drop),
            Edit::Hospital(h) => desk.record_hospital_stay(dossier, &h).map(drop),
            Edit::Discharge {
                stay,
                date,
                staff,
                at,
            } => desk
                .record_discharge(dossier, stay.as_deref(), date, &staff, at)
                .map(drop),
            Edit::Problem { staff, at, step } => desk.problem(dossier, &staff, at, &step).map(drop),
            Edit::Join {
                staff,
                at,
                activity,
                notes,
            } => desk
                .join_activity(dossier, &staff, &activity, at, &notes)
                .map(drop),
            Edit::Typical {
                staff,
                at,
                notes,
                flagged,
            } => desk
                .mark_typical(dossier, &staff, at, &notes, flagged)
                .map(drop),
            Edit::Contact(kind, c) => desk.record_contact(dossier, kind, &c).map(drop),
            Edit::Delivery(d) => desk.record_delivery(dossier, &d).map(drop),
            Edit::Deliver {
                delivery,
                staff,
                at,
                failed,
            } => desk
                .settle_delivery(dossier, delivery.as_deref(), &staff, at, failed.as_deref())
                .map(drop),
            Edit::Plan {
                staff,
                at,
                step,
                notes,
            } => desk
                .change_plan(dossier, &staff, at, &step, &notes)
                .map(drop),
            Edit::Details(c) => desk.update_patient(dossier, &c).map(drop),
        }
    }
}

/// A required date field.
fn required_date(form: &FormData, name: &str, errors: &mut FormErrors, what: &str) -> NaiveDate {
    if form.get(name).trim().is_empty() {
        errors.add(name, format!("请填写{what} ({name} is required)"));
        return NaiveDate::MIN;
    }
    date(form, name, errors).unwrap_or(NaiveDate::MIN)
}

/// 男 / 女 / nothing.
fn sex(form: &FormData, errors: &mut FormErrors) -> Option<Sex> {
    form.optional("sex").and_then(|v| {
        let s = Sex::parse(&v);
        if s.is_none() {
            errors.add("sex", format!("`{v}`: 请选择 男 或 女"));
        }
        s
    })
}

/// 是 / 否 / nothing.
fn yes_no(form: &FormData, name: &str, errors: &mut FormErrors) -> Option<bool> {
    match form.get(name) {
        "是" => Some(true),
        "否" => Some(false),
        "" => None,
        other => {
            errors.add(name, format!("`{other}`: 请选择 是 或 否"));
            None
        }
    }
}

/// A patient detail as changed on the form: `None` when it is what the
/// page showed (`was-NAME`), so saving the form writes only what was
/// edited (and never settles a conflict nobody looked at).
fn edited(form: &FormData, name: &str) -> Option<String> {
    let typed = form.get(name).trim();
    if typed == form.get(&format!("was-{name}")).trim() {
        None
    } else {
        Some(typed.to_string())
    }
}

pub fn action_edit(action: Action, form: &FormData) -> Result<Edit, FormErrors> {
    let mut errors = FormErrors::default();
    let e = &mut errors;
    let edit = match action {
        Action::Visit => Edit::Visit(VisitInput {
            staff: required(form, "staff", e, "接待人员"),
            at: datetime(form, "at", e),
            purchased: form.ticked("purchased"),
            reason_not_bought: form.optional("reason"),
            reason_text: form.optional("reason_text"),
            notes: form.optional("notes"),
        }),
        Action::Purchase => Edit::Purchase(PurchaseInput {
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
            product: required(form, "product", e, "药品"),
            quantity: integer(form, "quantity", e).unwrap_or(1),
            amount_yuan: required(form, "amount", e, "金额"),
            runout: date(form, "runout", e),
            invoice: form.optional("invoice"),
            gifts: form.optional("gifts"),
            gift_receipt: form.optional("gift_receipt"),
        }),
        Action::Followup => Edit::Followup(FollowUpInput {
            staff: required(form, "staff", e, "回访人员"),
            at: datetime(form, "at", e),
            kind: form.optional("kind").unwrap_or_else(|| "电话回访".into()),
            outcome: required(form, "outcome", e, "回访结果"),
            next_entry: form.optional("next"),
        }),
        Action::Resolve => Edit::Resolve {
            field: required(form, "field", e, "字段"),
            value: required(form, "value", e, "取值"),
        },
        Action::Hospital => Edit::Hospital(HospitalInput {
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
            admitted: required_date(form, "admitted", e, "入院日期"),
            discharged: date(form, "discharged", e),
            hospital: form.optional("hospital"),
            reason: form.optional("reason"),
        }),
        Action::Discharge => Edit::Discharge {
            stay: form.optional("stay"),
            date: required_date(form, "discharged", e, "出院日期"),
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
        },
        Action::Problem => {
            let staff = required(form, "staff", e, "经手人员");
            let at = datetime(form, "at", e);
            let step = match form.get("step") {
                "open" => ProblemStep::Open {
                    description: required(form, "description", e, "问题"),
                },
                "handle" => ProblemStep::Handle {
                    problem: form.optional("problem"),
                },
                "resolve" => ProblemStep::Resolve {
                    problem: form.optional("problem"),
                    resolution: required(form, "resolution", e, "处理结果"),
                },
                other => {
                    e.add("step", format!("`{other}`: 请选择 登记、处理中 或 已解决"));
                    ProblemStep::Handle { problem: None }
                }
            };
            Edit::Problem { staff, at, step }
        }
        Action::Join => Edit::Join {
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
            activity: required(form, "activity", e, "活动"),
            notes: form.optional("notes"),
        },
        Action::Typical => Edit::Typical {
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
            notes: form.optional("notes"),
            flagged: form.ticked("flagged"),
        },
        Action::Greeting | Action::HomeVisit => Edit::Contact(
            if action == Action::Greeting {
                ContactKind::Greeting
            } else {
                ContactKind::HomeVisit
            },
            ContactInput {
                staff: required(form, "staff", e, "经手人员"),
                at: datetime(form, "at", e),
                notes: form.optional("notes"),
            },
        ),
        Action::Delivery => Edit::Delivery(DeliveryInput {
            staff: required(form, "staff", e, "经手人员"),
            at: datetime(form, "at", e),
            purchase: form.optional("purchase"),
            product: form.optional("product"),
            quantity: integer(form, "quantity", e),
            address: form.optional("address"),
            due: date(form, "due", e),
            notes: form.optional("notes"),
            delivered: form.ticked("delivered"),
        }),
        Action::Deliver => {
            let failed = match form.get("result") {
                "delivered" | "" => None,
                "failed" => Some(required(form, "failed", e, "未送达原因")),
                other => {
                    e.add("result", format!("`{other}`: 请选择 已送 或 未送达"));
                    None
                }
            };
            Edit::Deliver {
                delivery: form.optional("delivery"),
                staff: required(form, "staff", e, "经手人员"),
                at: datetime(form, "at", e),
                failed,
            }
        }
        Action::Plan => {
            let staff = required(form, "staff", e, "经手人员");
            let at = datetime(form, "at", e);
            let step = match form.get("step") {
                "add" => PlanStep::Extra {
                    date: required_date(form, "date", e, "加访日期"),
                },
                "postpone" => PlanStep::Postpone {
                    to: required_date(form, "date", e, "推迟到的日期"),
                },
                "stop" => PlanStep::Stop {
                    reason: required(form, "reason", e, "停访原因"),
                },
                "resume" => PlanStep::Resume,
                "assign" => PlanStep::Assign {
                    to: required(form, "to", e, "回访人"),
                },
                other => {
                    e.add(
                        "step",
                        format!("`{other}`: 请选择 加访、推迟、停访、恢复 或 指定回访人"),
                    );
                    PlanStep::Resume
                }
            };
            Edit::Plan {
                staff,
                at,
                step,
                notes: form.optional("notes"),
            }
        }
        Action::Details => {
            let age = edited(form, "age").and_then(|_| integer(form, "age", e));
            let sex = edited(form, "sex").and_then(|_| sex(form, e));
            let knows = edited(form, "knows").and_then(|_| yes_no(form, "knows", e));
            Edit::Details(PatientChanges {
                name: edited(form, "name"),
                sex,
                age,
                birth_year: None,
                address: edited(form, "address"),
                knows,
                notes: edited(form, "notes"),
                phone: form.optional("phone"),
                disease: form.optional("disease"),
            })
        }
    };
    if errors.is_empty() {
        Ok(edit)
    } else {
        Err(errors)
    }
}

/// 非正常咨询 as typed on the register form: no dossier, its own log.
pub fn nonpatient_input(form: &FormData) -> Result<NonPatientInput, FormErrors> {
    let mut errors = FormErrors::default();
    let input = NonPatientInput {
        phone: form.optional("phone"),
        kind: form.get("kind").to_string(),
        staff: required(form, "staff", &mut errors, "接待人员"),
        notes: form.optional("outcome"),
        at: datetime(form, "at", &mut errors),
    };
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

/// Where to go after a form: a path of this site only (never another host).
pub fn back_path(form: &FormData, default: &str) -> String {
    let b = form.get("back");
    let safe = b.starts_with('/')
        && !b.starts_with("//")
        && !b.contains('\\')
        && !b.chars().any(char::is_control);
    if safe {
        b.to_string()
    } else {
        default.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> FormData {
        FormData::from(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_bad_phone_is_reported_on_the_phone_field() {
        let f = form(&[
            ("phone", "12345"),
            ("name", "张三"),
            ("source", "报纸"),
            ("staff", "李四"),
        ]);
        let errors = call_input(&f).unwrap_err();
        assert!(errors.field("phone").unwrap().contains("12345"));
        assert!(errors.field("name").is_none());
    }

    #[test]
    fn missing_required_fields_are_each_reported() {
        let errors = call_input(&form(&[("age", "七十")])).unwrap_err();
        for f in ["phone", "name", "source", "staff", "age"] {
            assert!(errors.field(f).is_some(), "{f}");
        }
    }

    #[test]
    fn a_complete_call_form_becomes_a_call() {
        let f = form(&[
            ("phone", "138-0013-8000"),
            ("name", "张三"),
            ("age", "68"),
            ("sex", "男"),
            ("knows", "否"),
            ("source", "报纸"),
            ("staff", "李四"),
            ("at", "2026-11-20T09:30"),
            ("force_new", "on"),
        ]);
        let c = call_input(&f).unwrap();
        assert_eq!(c.age, Some(68));
        assert_eq!(c.sex, Some(Sex::Male));
        assert_eq!(c.knows, Some(false));
        assert!(c.force_new);
        assert_eq!(c.at.to_string(), "2026-11-20 09:30:00");
    }

    #[test]
    fn back_paths_stay_on_this_site() {
        for (b, want) in [
            ("/patient/x", "/patient/x"),
            ("//evil.example/", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil", "/"),
            ("", "/"),
        ] {
            assert_eq!(back_path(&form(&[("back", b)]), "/"), want, "{b}");
        }
    }
}
