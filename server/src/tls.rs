//! TLS for the sync server (rustls through tonic).
//!
//! `keqing-server tls init --name hq.example` makes a small private CA and
//! a server certificate signed by it in `DIR/tls/`; offices enrol with the
//! CA certificate (`keqing enroll --ca ca.pem`) and verify the server with
//! it. A certificate from the organisation's own CA works the same way
//! (`serve --tls-cert FILE --tls-key FILE`).
//!
//! Mutual TLS (`serve --tls --mtls`): devices show a client certificate
//! signed by the CA, and each device's token works only with the one
//! certificate bound to it (`device cert` issues one with the CA of `tls
//! init` and binds it; `device cert --bind FILE` binds one made elsewhere).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
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
    #[error("不是证书 `{0}` holds no PEM certificate")]
    NotACertificate(String),
    #[error(
        "没有CA密钥 `{0}` is missing: device certificates are issued with the CA of `keqing-server tls init` (or bind one of your own CA with --bind FILE)"
    )]
    NoCa(String),
    #[error("TLS 设置无效 the TLS settings do not work: {0}")]
    Config(String),
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

/// Writes a new file, never over an existing one; a secret (a private key)
/// is readable by its owner only.
pub fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |e| TlsError::Io(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        keqing_host::files::private_dir(dir).map_err(io)?;
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
    let ca = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate()?)?;

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

    write_new(&paths.ca_cert, &ca.pem(), false)?;
    write_new(&paths.ca_key, &ca_key_pem(&ca), true)?;
    write_new(&paths.cert, &cert.pem(), false)?;
    write_new(&paths.key, &server_key.serialize_pem(), true)?;
    Ok(paths)
}

/// The CA of `tls init`. Issuing with it later rebuilds the same subject and
/// key usages; the authority key id comes from its key.
fn ca_params() -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Keqing 客情 CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca
}

fn ca_key_pem(ca: &CertifiedIssuer<'_, KeyPair>) -> String {
    ca.key().serialize_pem()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Io(path.display().to_string(), e))
}

/// A device's client certificate and key (PEM), issued by the CA of `tls
/// init` in `data`, with the SHA-256 of the certificate to bind.
pub struct DeviceCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    pub sha256: [u8; 32],
}

/// Issues a client certificate for the device named `device` (its name
/// and id in the subject, for people reading it; the binding is by hash).
pub fn issue_device_certificate(
    data: &Path,
    device_name: &str,
    device_id: &str,
) -> Result<DeviceCertificate, TlsError> {
    let paths = TlsPaths::in_data(data);
    if !paths.ca_key.is_file() {
        return Err(TlsError::NoCa(paths.ca_key.display().to_string()));
    }
    let ca_key_pem = String::from_utf8_lossy(&read(&paths.ca_key)?).into_owned();
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&ca_key_pem)?);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, device_name);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, device_id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(DeviceCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sha256: Sha256::digest(cert.der()).into(),
    })
}

/// The SHA-256 of the first certificate in a PEM file (what a device
/// presents as its leaf certificate).
pub fn certificate_sha256(path: &Path) -> Result<[u8; 32], TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = read(path)?;
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|_| TlsError::NotACertificate(path.display().to_string()))?;
    Ok(Sha256::digest(der.as_ref()).into())
}

/// How the server speaks TLS, and whether devices must show certificates.
pub struct ServerTls {
    pub config: tonic::transport::ServerTlsConfig,
    /// Mutual TLS: a client certificate not signed by the client CA fails
    /// the handshake, and every device needs a bound one. A connection
    /// showing none completes it and is refused by admission, with a
    /// message saying so (a failed handshake tells a device nothing).
    pub require_client_certificates: bool,
}

/// The server's TLS configuration from a certificate chain and its key
/// (PEM); with `client_ca`, mutual TLS with device certificates it signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTls, TlsError> {
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(true);
    }
    Ok(ServerTls {
        config,
        require_client_certificates: client_ca.is_some(),
    })
}

/// The dashboard's TLS when sync requires client certificates (`serve
/// --mtls --http`): the server's certificate, and clients verified against
/// the same CA, so a browser shows a headquarters device's certificate
/// with its token, as the device itself does over gRPC.
pub fn dashboard_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<std::sync::Arc<tokio_rustls::rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let bad = |what: &Path| {
        let what = what.display().to_string();
        move |e: rustls_pki_types::pem::Error| TlsError::Config(format!("{what}: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(bad(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(bad(key))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client_ca).map_err(bad(client_ca))? {
        roots
            .add(c.map_err(bad(client_ca))?)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
