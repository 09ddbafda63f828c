//! The domain error: every way user or network input can be rejected.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DomainError {
    #[error(
        "无效电话号码 invalid phone number `{0}`: expected an 11-digit mobile starting with 1, or a landline with its area code (e.g. 010-12345678)"
    )]
    InvalidPhone(String),
    #[error("无效日期 invalid date/time `{0}`: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM")]
    InvalidDate(String),
    #[error(
        "未知办事处 unknown office code `{0}`: expected a GB/T 2260 two-digit province code of one of the 27 offices (e.g. 44 = 广东)"
    )]
    UnknownOffice(String),
    #[error(
        "未知岗位 unknown role `{0}`: expected one of supervisor, consultant, followup, expert, guide, field (or 客情主管, 咨询人员, 回访人员, 坐诊专家, 导购员, 家访外送)"
    )]
    UnknownRole(String),
    #[error("无效值 invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("档案文档损坏 malformed dossier document: {0}")]
    Malformed(String),
    #[error("找不到记录 no record `{0}` in this dossier")]
    UnknownRecord(String),
    #[error("导出失败 export failed: {0}")]
    Export(String),
    /// An edit that would break a byte limit (see [`crate::limits`]).
    #[error(
        "超出上限 this edit would make the {what} {bytes} bytes; at most {max} bytes: nothing was saved (a dossier this large takes no more edits)"
    )]
    TooLarge {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
}

impl DomainError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<automerge::AutomergeError> for DomainError {
    fn from(e: automerge::AutomergeError) -> Self {
        DomainError::Malformed(e.to_string())
    }
}
