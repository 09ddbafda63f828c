//! The server's settings: a TOML file (`--config FILE`), environment
//! variables and flags, in that order of precedence (a flag wins over its
//! environment variable, which wins over the file, which wins over the
//! built-in default). Every key has all three; [`KEYS`] is the one table
//! of them (`keqing-server config check` prints it with the effective
//! values, secrets masked).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("配置文件 `{0}`: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("配置文件 `{path}` 第 {line} 行 line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("配置无效 {0}")]
    Setting(String),
}

/// How the server writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, colours on a terminal.
    #[default]
    Text,
    /// For collectors: one JSON object per line (`timestamp`, `level`,
    /// `target`, `fields.message` and the event's fields).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}`: text or json")),
        }
    }
}

/// Every setting, each optional: what a file says, or what flags and
/// environment variables said (clap merges those two, the flag first).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub data: Option<PathBuf>,
    pub store: Option<String>,
    pub listen: Option<String>,
    pub http: Option<String>,
    pub tls: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mtls: Option<bool>,
    pub client_ca: Option<PathBuf>,
    pub idle_minutes: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub requests_per_second: Option<u32>,
    pub request_burst: Option<u32>,
    pub silent_days: Option<u32>,
    pub log_keep_days: Option<u32>,
}

/// One key: its name in the file, its flag, its environment variable, its
/// default (as text), whether it is a secret, and what it is.
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    pub secret: bool,
    pub help: &'static str,
}

/// Every key, in the order `config check` prints them. The flag of each
/// is `--` and its name.
pub const KEYS: &[Key] = &[
    Key {
        name: "data",
        env: "KEQING_SERVER_DATA",
        default: "keqing-server-data",
        secret: false,
        help: "data directory: the SQLite store (unless store), TLS files, the erasure ledger",
    },
    Key {
        name: "store",
        env: "KEQING_STORE",
        default: "",
        secret: true,
        help: "postgres://USER:PASSWORD@HOST:PORT/DB instead of SQLite",
    },
    Key {
        name: "listen",
        env: "KEQING_LISTEN",
        default: "127.0.0.1:7600",
        secret: false,
        help: "gRPC sync address",
    },
    Key {
        name: "http",
        env: "KEQING_HTTP",
        default: "",
        secret: false,
        help: "dashboard and /metrics address (none: not served)",
    },
    Key {
        name: "tls",
        env: "KEQING_TLS",
        default: "false",
        secret: false,
        help: "serve sync over TLS with DATA/tls/ (tls init)",
    },
    Key {
        name: "tls-cert",
        env: "KEQING_TLS_CERT",
        default: "",
        secret: false,
        help: "certificate chain (PEM) instead of DATA/tls/",
    },
    Key {
        name: "tls-key",
        env: "KEQING_TLS_KEY",
        default: "",
        secret: false,
        help: "its private key (PEM)",
    },
    Key {
        name: "mtls",
        env: "KEQING_MTLS",
        default: "false",
        secret: false,
        help: "devices must show their bound client certificate",
    },
    Key {
        name: "client-ca",
        env: "KEQING_CLIENT_CA",
        default: "",
        secret: false,
        help: "CA of device certificates (implies mtls)",
    },
    Key {
        name: "idle-minutes",
        env: "KEQING_IDLE_MINUTES",
        default: "15",
        secret: false,
        help: "dashboard sessions end after this idle time",
    },
    Key {
        name: "log-format",
        env: "KEQING_LOG_FORMAT",
        default: "text",
        secret: false,
        help: "text, or json (one object per line)",
    },
    Key {
        name: "requests-per-second",
        env: "KEQING_REQUESTS_PER_SECOND",
        default: "50",
        secret: false,
        help: "each device's average request rate",
    },
    Key {
        name: "request-burst",
        env: "KEQING_REQUEST_BURST",
        default: "200",
        secret: false,
        help: "each device's requests at once",
    },
    Key {
        name: "silent-days",
        env: "KEQING_SILENT_DAYS",
        default: "2",
        secret: false,
        help: "an office is marked silent after this many days without a sync",
    },
    Key {
        name: "log-keep-days",
        env: "KEQING_LOG_KEEP_DAYS",
        default: "30",
        secret: false,
        help: "change log kept whole this long; older changes live on in their dossiers' snapshots (a device offline longer starts over from them)",
    },
];

/// The settings in force, every key decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Effective {
    pub data: PathBuf,
    pub store: Option<String>,
    pub listen: String,
    pub http: Option<String>,
    pub tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mtls: bool,
    pub client_ca: Option<PathBuf>,
    pub idle_minutes: u64,
    pub log_format: LogFormat,
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub silent_days: u32,
    pub log_keep_days: u32,
}

impl Settings {
    /// Reads a settings file; a key it does not know, or a value of the
    /// wrong type, is refused with its line.
    pub fn read(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Settings::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_string(),
            line: e.span().map_or(1, |s| {
                text.get(..s.start)
                    .map_or(1, |before| before.matches('\n').count() + 1)
            }),
            message: e.message().to_string(),
        })
    }

    /// `self` (flags and environment) over `file` over the defaults.
    pub fn over(self, file: Settings) -> Result<Effective, ConfigError> {
        let e = Effective {
            data: self
                .data
                .or(file.data)
                .unwrap_or_else(|| KEYS[0].default.into()),
            store: self.store.or(file.store),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:7600".into()),
            http: self.http.or(file.http),
            tls: self.tls.or(file.tls).unwrap_or(false),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            mtls: self.mtls.or(file.mtls).unwrap_or(false),
            client_ca: self.client_ca.or(file.client_ca),
            idle_minutes: self.idle_minutes.or(file.idle_minutes).unwrap_or(15),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            requests_per_second: self
                .requests_per_second
                .or(file.requests_per_second)
                .unwrap_or(keqing_shared::sync::limits::REQUESTS_PER_SECOND),
            request_burst: self
                .request_burst
                .or(file.request_burst)
                .unwrap_or(keqing_shared::sync::limits::REQUEST_BURST),
            silent_days: self.silent_days.or(file.silent_days).unwrap_or(2),
            log_keep_days: self
                .log_keep_days
                .or(file.log_keep_days)
                .unwrap_or(crate::compaction::DEFAULT_KEEP_DAYS),
        };
        e.check()?;
        Ok(e)
    }
}

impl Effective {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Setting(m));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls-cert and tls-key go together".into());
        }
        if !(1..=24 * 60).contains(&self.idle_minutes) {
            return bad(format!("idle-minutes {}: 1 to 1440", self.idle_minutes));
        }
        if self.requests_per_second == 0 || self.request_burst == 0 {
            return bad("requests-per-second and request-burst must be at least 1".into());
        }
        if !(1..=365).contains(&self.silent_days) {
            return bad(format!("silent-days {}: 1 to 365", self.silent_days));
        }
        if !(1..=3650).contains(&self.log_keep_days) {
            return bad(format!("log-keep-days {}: 1 to 3650", self.log_keep_days));
        }
        Ok(())
    }

    /// Each key with its value as `config check` prints it: secrets
    /// masked (a store URL's password), unset ones empty.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let values = [
            self.data.display().to_string(),
            self.store
                .as_deref()
                .map(crate::store::postgres::shown_url)
                .unwrap_or_default(),
            self.listen.clone(),
            self.http.clone().unwrap_or_default(),
            self.tls.to_string(),
            path(&self.tls_cert),
            path(&self.tls_key),
            self.mtls.to_string(),
            path(&self.client_ca),
            self.idle_minutes.to_string(),
            match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            self.requests_per_second.to_string(),
            self.request_burst.to_string(),
            self.silent_days.to_string(),
            self.log_keep_days.to_string(),
        ];
        KEYS.iter().map(|k| k.name).zip(values).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_or_variable_wins_over_the_file_which_wins_over_the_default() {
        let file = Settings::parse(
            "data = \"/srv/keqing\"\nlisten = \"0.0.0.0:7600\"\nhttp = \"0.0.0.0:8081\"\nsilent-days = 5\n",
            "f",
        )
        .unwrap();
        // (what flags and variables said, what is in force)
        let table: [(Settings, &str, &str, u32); 3] = [
            (Settings::default(), "0.0.0.0:7600", "/srv/keqing", 5),
            (
                Settings {
                    listen: Some("127.0.0.1:9000".into()),
                    ..Default::default()
                },
                "127.0.0.1:9000",
                "/srv/keqing",
                5,
            ),
            (
                Settings {
                    data: Some("/tmp/d".into()),
                    silent_days: Some(3),
                    ..Default::default()
                },
                "0.0.0.0:7600",
                "/tmp/d",
                3,
            ),
        ];
        for (given, listen, data, silent) in table {
            let e = given.over(file.clone()).unwrap();
            assert_eq!(
                (e.listen.as_str(), e.data.to_str().unwrap(), e.silent_days),
                (listen, data, silent)
            );
        }
        let none = Settings::default().over(Settings::default()).unwrap();
        assert_eq!(
            (none.listen.as_str(), none.http, none.idle_minutes),
            ("127.0.0.1:7600", None, 15)
        );
    }

    #[test]
    fn a_file_with_an_unknown_key_or_a_bad_value_is_refused_with_its_line() {
        let e = Settings::parse("data = \"/srv\"\nlistne = \"x\"\n", "k.toml").unwrap_err();
        assert!(
            e.to_string().contains("第 2 行") && e.to_string().contains("listne"),
            "{e}"
        );
        let e = Settings::parse("silent-days = \"two\"\n", "k.toml").unwrap_err();
        assert!(e.to_string().contains("第 1 行"), "{e}");
        let e = Settings {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        }
        .over(Settings::default())
        .unwrap_err();
        assert!(e.to_string().contains("tls-key"), "{e}");
        // Compaction keeps at least a day of log whole, and by default 30.
        let e = Settings::parse("log-keep-days = 0\n", "k.toml")
            .unwrap()
            .over(Settings::default())
            .unwrap_err();
        assert!(e.to_string().contains("log-keep-days 0"), "{e}");
        let none = Settings::default().over(Settings::default()).unwrap();
        assert_eq!(none.log_keep_days, 30);
    }

    #[test]
    fn every_key_has_one_line_and_a_store_password_is_masked() {
        let e = Settings {
            store: Some("postgres://keqing:s3cret@db:5432/keqing".into()),
            ..Default::default()
        }
        .over(Settings::default())
        .unwrap();
        let lines = e.lines();
        assert_eq!(lines.len(), KEYS.len());
        let text = format!("{lines:?}");
        assert!(
            !text.contains("s3cret") && text.contains("db:5432"),
            "{text}"
        );
    }
}
