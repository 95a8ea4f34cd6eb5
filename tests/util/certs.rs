//! Test certificates made on the spot with `rcgen`: a private CA that signs
//! server and client certificates, written as PEM files in a temporary
//! directory that lives as long as the [`Pki`].
//!
//! Server certificates name `localhost` and `127.0.0.1`; client
//! certificates carry the client-auth usage. Nothing here is trusted by the
//! system: a test trusts a CA by passing its file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    pub fn cert(&self) -> &str {
        self.cert.to_str().expect("UTF-8 path")
    }

    pub fn key(&self) -> &str {
        self.key.to_str().expect("UTF-8 path")
    }
}

/// A private certificate authority and the files it issued.
pub struct Pki {
    dir: TempDir,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl Pki {
    /// A new CA called `name`, its certificate in `<dir>/<name>-ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("timewheel-pki-")
            .tempdir()
            .expect("create a temporary directory for certificates");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir,
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// The CA certificate's PEM file.
    pub fn ca(&self) -> &str {
        self.ca.to_str().expect("UTF-8 path")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self, file: &str) -> Identity {
        self.issue(file, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A client certificate.
    pub fn client(&self, file: &str) -> Identity {
        self.issue(file, ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// A client certificate that expired in 2001.
    pub fn expired_client(&self, file: &str) -> Identity {
        self.issue(file, ExtendedKeyUsagePurpose::ClientAuth, true)
    }

    fn issue(&self, file: &str, usage: ExtendedKeyUsagePurpose, expired: bool) -> Identity {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} {file}", self.name));
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let identity = Identity {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&identity.cert, cert.pem()).unwrap();
        std::fs::write(&identity.key, key.serialize_pem()).unwrap();
        // As a deployment keeps it (the server warns about a readable key).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&identity.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        identity
    }

    /// A rustls client configuration trusting this CA, presenting `identity`.
    pub fn client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let config = timewheel::tls::client_config(
            Some(Path::new(self.ca())),
            identity.map(|i| (i.cert.as_path(), i.key.as_path())),
        )
        .expect("client configuration from test certificates");
        Arc::new(config)
    }
}
