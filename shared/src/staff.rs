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

/// A member of an office's customer department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub active: bool,
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
