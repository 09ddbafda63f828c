//! What the browser posts, turned into desk inputs; and the errors that go
//! back next to the fields they concern.

use crate::desk::{CallInput, Desk, FollowUpInput, PurchaseInput, VisitInput};
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
            | ClientError::UnknownPatient(_)
            | ClientError::AmbiguousPatient { .. }
            | ClientError::Merged { .. }
            | ClientError::WrongOffice { .. }
            | ClientError::Headquarters(_)
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
    let sex = form.optional("sex").and_then(|v| {
        let s = Sex::parse(&v);
        if s.is_none() {
            errors.add("sex", format!("`{v}`: 请选择 男 或 女"));
        }
        s
    });
    let knows = match form.get("knows") {
        "是" => Some(true),
        "否" => Some(false),
        "" => None,
        other => {
            errors.add("knows", format!("`{other}`: 请选择 是 或 否"));
            None
        }
    };
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
}

pub fn lookup(desk: &Desk, phone_typed: &str, name: &str) -> Result<Lookup, ClientError> {
    let mut found = Lookup::default();
    if let Ok(p) = phone::normalise(phone_typed) {
        for id in desk.replica().dossiers_with_phone(&p)? {
            if let Some(row) = desk.replica().patient(&id)? {
                found.by_phone.push(row);
            }
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
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Visit,
            Action::Purchase,
            Action::Followup,
            Action::Resolve,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Visit => "visit",
            Action::Purchase => "purchase",
            Action::Followup => "followup",
            Action::Resolve => "resolve",
        }
    }
}

/// A validated edit of one dossier, ready for the desk.
pub enum Edit {
    Visit(VisitInput),
    Purchase(PurchaseInput),
    Followup(FollowUpInput),
    Resolve { field: String, value: String },
}

impl Edit {
    pub fn apply(self, desk: &mut Desk, dossier: &str) -> Result<(), ClientError> {
        match self {
            Edit::Visit(v) => desk.record_visit(dossier, &v).map(drop),
            Edit::Purchase(p) => desk.record_purchase(dossier, &p).map(drop),
            Edit::Followup(f) => desk.record_followup(dossier, &f).map(drop),
            Edit::Resolve { field, value } => desk.resolve_field(dossier, &field, &value).map(drop),
        }
    }
}

pub fn action_edit(action: Action, form: &FormData) -> Result<Edit, FormErrors> {
    let mut errors = FormErrors::default();
    let edit = match action {
        Action::Visit => {
            let staff = required(form, "staff", &mut errors, "接待人员");
            let at = datetime(form, "at", &mut errors);
            Edit::Visit(VisitInput {
                staff,
                at,
                purchased: form.ticked("purchased"),
                reason_not_bought: form.optional("reason"),
                reason_text: form.optional("reason_text"),
                notes: form.optional("notes"),
            })
        }
        Action::Purchase => {
            let staff = required(form, "staff", &mut errors, "经手人员");
            let at = datetime(form, "at", &mut errors);
            let product = required(form, "product", &mut errors, "药品");
            let quantity = integer(form, "quantity", &mut errors).unwrap_or(1);
            let amount = required(form, "amount", &mut errors, "金额");
            let runout = date(form, "runout", &mut errors);
            Edit::Purchase(PurchaseInput {
                staff,
                at,
                product,
                quantity,
                amount_yuan: amount,
                runout,
                invoice: form.optional("invoice"),
                gifts: form.optional("gifts"),
                gift_receipt: form.optional("gift_receipt"),
            })
        }
        Action::Followup => {
            let staff = required(form, "staff", &mut errors, "回访人员");
            let at = datetime(form, "at", &mut errors);
            let outcome = required(form, "outcome", &mut errors, "回访结果");
            Edit::Followup(FollowUpInput {
                staff,
                at,
                kind: form.optional("kind").unwrap_or_else(|| "电话回访".into()),
                outcome,
                next_entry: form.optional("next"),
            })
        }
        Action::Resolve => {
            let field = required(form, "field", &mut errors, "字段");
            let value = required(form, "value", &mut errors, "取值");
            Edit::Resolve { field, value }
        }
    };
    if errors.is_empty() {
        Ok(edit)
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
