//! The client's error type. Every variant is a message a person can act on.

use keqing_shared::DomainError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(
        "数据目录未初始化 `{0}` is not an initialised replica: run `keqing --data {0} init --office CODE --device NAME` first"
    )]
    NotInitialised(String),
    #[error("数据目录已初始化 `{0}` already holds a replica")]
    AlreadyInitialised(String),
    #[error("数据库版本过新 `{0}` was written by a newer keqing; upgrade keqing before opening it")]
    NewerSchema(String),
    #[error("数据库迁移失败 migration failed: {0}")]
    Migration(String),
    #[error(
        "找不到患者 no patient matches `{0}` (use a dossier id, an id prefix of 8+ characters, or a phone number)"
    )]
    UnknownPatient(String),
    #[error("患者不唯一 `{query}` matches several dossiers: {candidates}; use the dossier id")]
    AmbiguousPatient { query: String, candidates: String },
    #[error(
        "找不到员工 no staff member named `{0}` in this office: add them with `keqing staff add --name {0} --role ROLE`"
    )]
    UnknownStaff(String),
    #[error("员工已存在 a staff member named `{0}` already exists")]
    DuplicateStaff(String),
    #[error("档案属于其他办事处 dossier {id} belongs to office {office}")]
    WrongOffice { id: String, office: String },
    #[error("档案已合并 dossier {id} was merged into {into}; use that one")]
    Merged { id: String, into: String },
    #[error("服务器数据无法合并 data from the server could not be merged: {0}")]
    Remote(String),
    #[error("总部副本没有此功能 a headquarters replica cannot {0}")]
    Headquarters(&'static str),
    #[error("同步失败 sync failed: {0}")]
    Sync(String),
    #[error("数据损坏 corrupt replica: {0}")]
    Corrupt(String),
    #[error("数据库错误 database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("文件错误 `{0}`: {1}")]
    Io(String, #[source] std::io::Error),
}
