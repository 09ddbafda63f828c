//! Roles (岗位) of a customer department, as the staff handbook lists them.

use crate::DomainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// 客情主管: plans, reports, the archive, typical cases, problem patients.
    Supervisor,
    /// 咨询人员: answers consultation calls.
    Consultant,
    /// 回访人员: follow-up calls to non-buyers and buyers.
    Followup,
    /// 坐诊专家/促销: receives visitors, registers purchases.
    Expert,
    /// 导购员: shopping guide in pharmacies.
    Guide,
    /// 家访与外送: home visits and deliveries.
    Field,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Supervisor,
        Role::Consultant,
        Role::Followup,
        Role::Expert,
        Role::Guide,
        Role::Field,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Consultant => "consultant",
            Role::Followup => "followup",
            Role::Expert => "expert",
            Role::Guide => "guide",
            Role::Field => "field",
        }
    }

    pub fn chinese(self) -> &'static str {
        match self {
            Role::Supervisor => "客情主管",
            Role::Consultant => "咨询人员",
            Role::Followup => "回访人员",
            Role::Expert => "坐诊专家",
            Role::Guide => "导购员",
            Role::Field => "家访外送",
        }
    }

    /// Accepts the English name or the Chinese one.
    pub fn parse(s: &str) -> Result<Role, DomainError> {
        let key = s.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(key) || r.chinese() == key)
            .or(match key {
                "促销" | "专家" => Some(Role::Expert),
                "家访" | "外送" => Some(Role::Field),
                "主管" => Some(Role::Supervisor),
                "咨询" => Some(Role::Consultant),
                "回访" => Some(Role::Followup),
                "导购" => Some(Role::Guide),
                _ => None,
            })
            .ok_or_else(|| DomainError::UnknownRole(key.to_string()))
    }
}

/// What a person does at the workstation, as the handbook gives duties to
/// roles ([`Role::may`]). Reading (the due lists, dossiers, search, lists,
/// the day's summary) is every role's: each record is made on a dossier
/// someone looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Duty {
    /// 咨询登记: consultation calls and the live lookup of a number.
    Register,
    /// 非正常咨询: calls that were not about a patient.
    NonPatient,
    /// 修改资料: a patient's details.
    PatientDetails,
    /// 回访 and 逢年过节问候.
    FollowUp,
    /// 回访计划: stop, resume, assign, add a planned call.
    PlanChange,
    /// 住院 / 出院.
    Hospital,
    /// 问题患者: open, handle, resolve.
    Problem,
    /// 到堂.
    Visit,
    /// 购药.
    Purchase,
    /// 家访.
    HomeVisit,
    /// 外送 and 送达.
    Delivery,
    /// 典型病例.
    Typical,
    /// 冲突: set a field two devices set differently.
    Conflicts,
    /// 员工: add, 离岗, 在岗.
    Staff,
    /// 读取审计: who read which dossier, list or report at the office.
    Audit,
    /// 参加活动: record that a patient took part in an activity (every
    /// role "參與活動組織與促銷").
    Activity,
}

impl Duty {
    pub const ALL: [Duty; 16] = [
        Duty::Register,
        Duty::NonPatient,
        Duty::PatientDetails,
        Duty::FollowUp,
        Duty::PlanChange,
        Duty::Hospital,
        Duty::Problem,
        Duty::Visit,
        Duty::Purchase,
        Duty::HomeVisit,
        Duty::Delivery,
        Duty::Typical,
        Duty::Conflicts,
        Duty::Staff,
        Duty::Audit,
        Duty::Activity,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            Duty::Register => "咨询登记",
            Duty::NonPatient => "非正常咨询",
            Duty::PatientDetails => "修改资料",
            Duty::FollowUp => "回访",
            Duty::PlanChange => "回访计划",
            Duty::Hospital => "住院出院",
            Duty::Problem => "问题患者",
            Duty::Visit => "到堂",
            Duty::Purchase => "购药",
            Duty::HomeVisit => "家访",
            Duty::Delivery => "外送",
            Duty::Typical => "典型病例",
            Duty::Conflicts => "冲突",
            Duty::Staff => "员工",
            Duty::Audit => "读取审计",
            Duty::Activity => "参加活动",
        }
    }
}

impl Role {
    /// Whether this role has `duty`: the one table of who may do what at
    /// the workstation (ARCHITECTURE.md shows it; a test holds the two
    /// equal). 客情主管 has every duty.
    pub fn may(self, duty: Duty) -> bool {
        use Duty::*;
        match self {
            Role::Supervisor => true,
            Role::Consultant => matches!(duty, Register | NonPatient | PatientDetails | Activity),
            Role::Followup => {
                matches!(duty, FollowUp | PlanChange | Hospital | Problem | Activity)
            }
            Role::Expert => matches!(duty, Visit | Purchase | Activity),
            Role::Guide => matches!(duty, Purchase | Activity),
            Role::Field => matches!(duty, HomeVisit | Delivery | Activity),
        }
    }
}

/// A member of an office's customer department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub active: bool,
}

/// A person of headquarters' data centre (数据管理中心) who signs in to the
/// dashboard. Analysts see the reports (aggregates: counts, amounts,
/// staff names and their figures); administrators also see what names
/// patients: the duplicate review and the offices' read audit, each view
/// of which is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HqRole {
    /// 数据分析员.
    Analyst,
    /// 管理员.
    Admin,
}

impl HqRole {
    pub const ALL: [HqRole; 2] = [HqRole::Analyst, HqRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            HqRole::Analyst => "analyst",
            HqRole::Admin => "admin",
        }
    }

    pub fn chinese(self) -> &'static str {
        match self {
            HqRole::Analyst => "数据分析员",
            HqRole::Admin => "管理员",
        }
    }

    /// Accepts the English name or the Chinese one.
    pub fn parse(s: &str) -> Result<HqRole, DomainError> {
        let key = s.trim();
        HqRole::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(key) || r.chinese() == key)
            .or(match key {
                "administrator" => Some(HqRole::Admin),
                "分析员" | "数据分析" => Some(HqRole::Analyst),
                _ => None,
            })
            .ok_or_else(|| DomainError::UnknownRole(key.to_string()))
    }

    /// Whether this role may see patients' names and phones (the duplicate
    /// review) and who read which dossier (the offices' read audit).
    pub fn sees_personal_details(self) -> bool {
        self == HqRole::Admin
    }
}

/// A name as typed (of a person, device, product, source ...): trimmed,
/// non-empty, at most 40 characters, no control characters.
pub fn validate_name(field: &'static str, name: &str) -> Result<String, DomainError> {
    validate_text(field, name, crate::limits::NAME_CHARS)
}

/// A free text as typed: trimmed, non-empty, at most `max` characters, no
/// control characters other than line breaks.
pub fn validate_text(field: &'static str, text: &str, max: usize) -> Result<String, DomainError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(text.to_string())
}

/// The shortest password a staff member may have (characters).
pub const PASSWORD_MIN_CHARS: usize = 8;
/// The longest (a bound on what a sign-in form makes the hasher do).
pub const PASSWORD_MAX_CHARS: usize = 128;

/// A password as chosen: 8 to 128 characters, no control characters. Kept
/// as typed (not trimmed): spaces may be part of it. Never stored: only its
/// Argon2id hash is.
pub fn validate_password(password: &str) -> Result<&str, DomainError> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err(DomainError::invalid(
            "password",
            format!("at least {PASSWORD_MIN_CHARS} characters (密码至少 {PASSWORD_MIN_CHARS} 位)"),
        ));
    }
    if n > PASSWORD_MAX_CHARS {
        return Err(DomainError::invalid(
            "password",
            format!("at most {PASSWORD_MAX_CHARS} characters"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "password",
            "contains control characters",
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_and_kept_as_typed() {
        assert_eq!(validate_password(" 心脑 通2026 ").unwrap(), " 心脑 通2026 ");
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(PASSWORD_MAX_CHARS + 1)).is_err());
        assert!(validate_password(&"x".repeat(PASSWORD_MAX_CHARS)).is_ok());
        assert!(validate_password("password\u{1b}[2J").is_err());
        assert!(validate_password("pass\nword").is_err());
    }

    #[test]
    fn headquarters_roles_parse_in_either_language_and_only_admins_see_patients() {
        for r in HqRole::ALL {
            assert_eq!(HqRole::parse(r.as_str()).unwrap(), r);
            assert_eq!(HqRole::parse(r.chinese()).unwrap(), r);
        }
        assert_eq!(HqRole::parse("administrator").unwrap(), HqRole::Admin);
        assert!(HqRole::parse("supervisor").is_err());
        assert!(HqRole::Admin.sees_personal_details());
        assert!(!HqRole::Analyst.sees_personal_details());
    }

    /// The table in ARCHITECTURE.md ("Who may do what") is the code's:
    /// every duty a row, every role a column, ✓ where [`Role::may`].
    #[test]
    fn the_role_table_in_architecture_is_the_code() {
        let doc = include_str!("../../ARCHITECTURE.md");
        let table: Vec<Vec<String>> = doc
            .split("<!-- duties -->")
            .nth(1)
            .expect("ARCHITECTURE.md has the duties table between <!-- duties --> marks")
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|-") && !l.starts_with("| -"))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect();
        let header: Vec<&str> = table[0][1..].iter().map(String::as_str).collect();
        let roles: Vec<&str> = Role::ALL.iter().map(|r| r.chinese()).collect();
        assert_eq!(header, roles, "one column per role, in order");
        let rows: Vec<&str> = table[1..].iter().map(|r| r[0].as_str()).collect();
        let duties: Vec<&str> = Duty::ALL.iter().map(|d| d.chinese()).collect();
        assert_eq!(rows, duties, "one row per duty, in order");
        for (row, duty) in table[1..].iter().zip(Duty::ALL) {
            for (cell, role) in row[1..].iter().zip(Role::ALL) {
                let marked = match cell.as_str() {
                    "✓" => true,
                    "" => false,
                    other => panic!("{}/{}: `{other}`", duty.chinese(), role.chinese()),
                };
                assert_eq!(
                    marked,
                    role.may(duty),
                    "{} may {}",
                    role.chinese(),
                    duty.chinese()
                );
            }
        }
    }

    #[test]
    fn roles_parse_in_both_languages() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
            assert_eq!(Role::parse(r.chinese()).unwrap(), r);
        }
        assert_eq!(Role::parse("Consultant").unwrap(), Role::Consultant);
        assert!(matches!(
            Role::parse("boss"),
            Err(DomainError::UnknownRole(_))
        ));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("name", " 李娜 ").unwrap(), "李娜");
        assert!(validate_name("name", "  ").is_err());
        assert!(validate_name("name", "a\u{7}b").is_err());
    }
}
