//! The client's error type. Every variant is a message a person can act on.

use keqing_shared::DomainError;
use keqing_shared::sync::SyncErrorKind;
use thiserror::Error;

/// Why a sync round failed, as the office sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncFailure {
    /// The server could not be reached, or the connection was cut: office
    /// work goes on, and the next round catches up.
    Offline,
    /// The server refused (a revoked device, a limit, a change it will not
    /// take): waiting alone does not help; the message says what does.
    Refused,
    /// The server failed; nothing of the round was stored there.
    ServerFault,
}

impl SyncFailure {
    /// The failure a server's error kind means.
    pub fn of(kind: SyncErrorKind) -> SyncFailure {
        match kind {
            SyncErrorKind::Unavailable => SyncFailure::Offline,
            SyncErrorKind::Internal => SyncFailure::ServerFault,
            SyncErrorKind::Unauthenticated
            | SyncErrorKind::PermissionDenied
            | SyncErrorKind::InvalidArgument
            | SyncErrorKind::ResourceExhausted
            | SyncErrorKind::FailedPrecondition
            | SyncErrorKind::Gone => SyncFailure::Refused,
        }
    }

    /// As stored in the replica and in `keqing status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncFailure::Offline => "offline",
            SyncFailure::Refused => "refused",
            SyncFailure::ServerFault => "server_fault",
        }
    }

    pub fn parse(s: &str) -> Option<SyncFailure> {
        [
            SyncFailure::Offline,
            SyncFailure::Refused,
            SyncFailure::ServerFault,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    /// What the office staff read: 离线, 被拒, 服务器故障.
    pub fn chinese(self) -> &'static str {
        match self {
            SyncFailure::Offline => "离线",
            SyncFailure::Refused => "被拒",
            SyncFailure::ServerFault => "服务器故障",
        }
    }
}

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
    #[error(
        "本机副本已加密 the replica in `{0}` is encrypted: set KEQING_DB_KEY to its passphrase, or run the command in a terminal to be asked for it"
    )]
    KeyRequired(String),
    #[error(
        "密钥错误 wrong passphrase for `{0}` (or the file is not a keqing replica); nothing was changed"
    )]
    WrongKey(String),
    #[error("密钥无效 a replica passphrase must have at least 8 characters and no NUL")]
    BadKey,
    #[error("密钥不一致 the two passphrases differ; nothing was changed")]
    KeyMismatch,
    #[error("本机副本已加密 the replica in `{0}` is already encrypted")]
    AlreadyEncrypted(String),
    #[error(
        "本机副本未加密 the replica in `{0}` is not encrypted: `keqing encrypt` gives it a passphrase"
    )]
    NotEncrypted(String),
    #[error("新旧密钥相同 the new passphrase is the current one; nothing was changed")]
    SameKey,
    #[error(
        "本机副本正在使用 the replica in `{0}` is open in another keqing process (e.g. `keqing ui`); close it first"
    )]
    InUse(String),
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
    /// Said alike for an unknown name, a member without a password and a
    /// wrong password: a sign-in form tells a guesser nothing.
    #[error("姓名或密码不对 wrong name or password")]
    SignInRefused,
    #[error("已离岗 `{0}` has left (离岗) and can no longer sign in")]
    AccountClosed(String),
    #[error(
        "档案在服务器上 the dossier {id} of {phone} was moved off this device by retention; `keqing lookup --phone {phone}` fetches it back (online)"
    )]
    AtServer { id: String, phone: String },
    #[error(
        "患者已转档 the patient of {phone} was transferred to {office} (dossier {id}); that office keeps the dossier now"
    )]
    TransferredAway {
        id: String,
        phone: String,
        office: String,
    },
    #[error(
        "档案已转出 dossier {id} was transferred to {office}: it takes no more edits here and leaves this device at the next sync"
    )]
    MovedAway { id: String, office: String },
    #[error("档案属于其他办事处 dossier {id} belongs to office {office}")]
    WrongOffice { id: String, office: String },
    #[error("档案已合并 dossier {id} was merged into {into}; use that one")]
    Merged { id: String, into: String },
    #[error("服务器数据无法合并 data from the server could not be merged: {0}")]
    Remote(String),
    /// An erasure's scrub could not empty the WAL within the busy timeout
    /// (another checkpoint held it); it stays owed to the next sync.
    #[error(
        "清理未完成 another checkpoint kept the replica's WAL from being emptied after an erasure; the next sync tries again"
    )]
    ScrubUnfinished,
    /// A value given to a command that it cannot take (says which and why).
    #[error("输入无效 {0}")]
    Invalid(String),
    #[error("总部副本没有此功能 a headquarters replica cannot {0}")]
    Headquarters(&'static str),
    /// Sync did not happen: the server could not be reached (离线), said
    /// no (被拒), or failed (服务器故障) — kept apart, since only the first
    /// goes away by waiting.
    #[error("同步失败 sync failed ({}): {message}", failure.chinese())]
    Sync {
        failure: SyncFailure,
        message: String,
    },
    #[error("数据损坏 corrupt replica: {0}")]
    Corrupt(String),
    #[error("数据库错误 database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("文件错误 `{0}`: {1}")]
    Io(String, #[source] std::io::Error),
}

impl From<keqing_host::passwords::PasswordError> for ClientError {
    fn from(e: keqing_host::passwords::PasswordError) -> Self {
        match e {
            keqing_host::passwords::PasswordError::Rule(e) => ClientError::from(e),
            other => ClientError::Invalid(other.to_string()),
        }
    }
}
