//! TLS material shared by every hop: PEM files in, rustls configurations out.
//!
//! ```text
//!  clients ──TLS──► server (server::tls: ServerConfig, reloaded on SIGHUP)
//!  /metrics scraper ──TLS──► metrics thread (the same ServerConfig)
//!  journal ──TLS──► Redis (rediss://, journal::tls_certificates / client_config)
//!  webhook ──TLS──► close-order endpoint (sink::webhook, https://)
//! ```
//!
//! Ground rules:
//! - One crypto provider for the whole process: rustls' `ring` provider,
//!   named explicitly here rather than picked up from crate features, so a
//!   dependency that enables another provider cannot change what we run.
//! - Only TLS 1.2 and 1.3 with rustls' safe defaults; nothing here turns
//!   certificate verification off.
//! - Every error names the file it came from ([`TlsError`]), so a typo in
//!   a path stops the start with one clear line instead of a handshake
//!   failure later.
//! - Private keys are read, handed to rustls and never logged or kept
//!   elsewhere.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why TLS material could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file holds no PEM certificate (`-----BEGIN CERTIFICATE-----`).
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The file parses but rustls refuses it (a key that does not match
    /// the certificate, a CA certificate it cannot use, ...).
    Invalid {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::NoCertificate { path } => {
                write!(f, "{}: no PEM certificate found", path.display())
            }
            TlsError::NoKey { path } => write!(f, "{}: no PEM private key found", path.display()),
            TlsError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for TlsError {}

/// The process's crypto provider (see the ground rules).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bytes of `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in the PEM file `path`, in file order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`. Warns if other users may
/// read the file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    if readable_by_others(path) {
        tracing::warn!(
            key = %path.display(),
            "private key file is readable by other users; chmod 600 it"
        );
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        },
    })
}

/// Whether users other than the owner (group or world) may read `path`.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// The host of `url` if it uses the plain-text `scheme` (`http`, `redis`)
/// and names a host other than this machine (anything but `localhost` and
/// loopback addresses): a hop that crosses the network unencrypted.
pub fn plaintext_to_another_host(url: &str, scheme: &str) -> Option<String> {
    let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!local && !host.is_empty()).then(|| host.to_owned())
}

/// A trust store holding every certificate of the PEM file `path`.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The operating system's CA certificates (`/etc/ssl/certs` on Debian;
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` override it). Unreadable entries are
/// skipped with a warning: one bad file must not leave us with no roots.
pub fn system_root_certs() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "skipping an unreadable system CA certificate");
    }
    if found.certs.is_empty() {
        tracing::warn!("no system CA certificates found; TLS servers cannot be verified");
    }
    found.certs
}

/// [`system_root_certs`] as a trust store.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(system_root_certs());
    if ignored > 0 {
        tracing::warn!(ignored, "some system CA certificates were not usable");
    }
    roots
}

/// Where a server's certificate, key and (for mutual TLS) client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, every client must present a
    /// certificate signed by one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A server configuration from `files`, read now.
pub fn server_config(files: &ServerFiles) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Invalid {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            path: files.key.clone(),
            reason: format!("does not go with {}: {e}", files.cert.display()),
        })
}

/// A client configuration trusting `ca` (or the system's roots), presenting
/// `identity` (certificate file, key file) when given.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => load_roots(ca)?,
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            path: ca.map(Path::to_owned).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Invalid {
                path: key.to_owned(),
                reason: format!("does not go with {}: {e}", cert.display()),
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_hops_to_other_hosts_are_found() {
        let remote = |url| plaintext_to_another_host(url, "redis");
        assert_eq!(
            remote("redis://10.0.0.5:6379/0").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            remote("redis://:pw@redis.internal/0").as_deref(),
            Some("redis.internal")
        );
        assert_eq!(remote("redis://[fd00::5]:6379").as_deref(), Some("fd00::5"));
        for local in [
            "redis://127.0.0.1:6379/0",
            "redis://127.0.0.2/0",
            "redis://localhost/0",
            "redis://user:p@ss@[::1]:6379/0",
            "rediss://redis.internal:6380/0",
            "unix:///tmp/redis.sock",
        ] {
            assert_eq!(remote(local), None, "{local}");
        }
        let http = |url| plaintext_to_another_host(url, "http");
        assert_eq!(
            http("http://shop.internal:8080/close").as_deref(),
            Some("shop.internal")
        );
        assert_eq!(http("https://shop.internal/close"), None);
        assert_eq!(http("http://127.0.0.1:8080/close"), None);
    }

    #[test]
    fn group_or_world_readable_keys_are_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable_by_others(&key));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&key));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(readable_by_others(&key));
    }

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let error = load_certs(&missing).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("nope.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        assert!(matches!(
            load_certs(&empty),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(load_key(&empty), Err(TlsError::NoKey { .. })));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, one.cert.pem()).unwrap();
        std::fs::write(&key, two.signing_key.serialize_pem()).unwrap();
        let files = ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        };
        let error = server_config(&files).unwrap_err();
        assert!(matches!(error, TlsError::Invalid { .. }), "{error:?}");
        std::fs::write(&key, one.signing_key.serialize_pem()).unwrap();
        server_config(&files).unwrap();
        // The certificate as a client CA, and as a client's trust root.
        server_config(&ServerFiles {
            client_ca: Some(cert.clone()),
            ..files
        })
        .unwrap();
        client_config(Some(&cert), Some((&cert, &key))).unwrap();
    }
}
