//! TLS for the sync server (rustls through tonic).
//!
//! `keqing-server tls init --name hq.example` makes a small private CA and
//! a server certificate signed by it in `DIR/tls/`; offices enrol with the
//! CA certificate (`keqing enroll --ca ca.pem`) and verify the server with
//! it. A certificate from the organisation's own CA works the same way
//! (`serve --tls-cert FILE --tls-key FILE`).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("证书文件已存在 `{0}` exists: remove it first to make new certificates")]
    Exists(String),
    #[error("证书名称无效 `{0}` is neither a host name nor an IP address")]
    BadName(String),
    #[error("生成证书失败 making the certificates failed: {0}")]
    Make(#[from] rcgen::Error),
    #[error("证书文件错误 `{0}`: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Where `tls init` writes, and `serve --tls` reads, in the data directory.
pub struct TlsPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    pub fn in_data(data: &Path) -> TlsPaths {
        let dir = data.join("tls");
        TlsPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |e| TlsError::Io(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)
}

/// Makes a CA and a server certificate for `names` (host names and IP
/// addresses the offices use to reach the server). rcgen's default validity
/// is very long; replacing the certificates is `rm DIR/tls/*` and `tls init`.
pub fn init(data: &Path, names: &[String]) -> Result<TlsPaths, TlsError> {
    let paths = TlsPaths::in_data(data);
    for p in [&paths.ca_cert, &paths.ca_key, &paths.cert, &paths.key] {
        if p.exists() {
            return Err(TlsError::Exists(p.display().to_string()));
        }
    }
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Keqing 客情 CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut server = CertificateParams::default();
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("keqing-server"),
    );
    server.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| TlsError::BadName(n.clone())),
        })
        .collect::<Result<_, _>>()?;
    let server_key = KeyPair::generate()?;
    let cert = server.signed_by(&server_key, &ca)?;

    write(&paths.ca_cert, &ca.pem(), false)?;
    write(&paths.ca_key, &ca_key_pem(&ca), true)?;
    write(&paths.cert, &cert.pem(), false)?;
    write(&paths.key, &server_key.serialize_pem(), true)?;
    Ok(paths)
}

fn ca_key_pem(ca: &CertifiedIssuer<'_, KeyPair>) -> String {
    ca.key().serialize_pem()
}

/// The server's TLS configuration from a certificate chain and its key (PEM).
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Io(p.display().to_string(), e));
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}
