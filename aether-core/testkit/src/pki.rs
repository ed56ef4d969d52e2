use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::Error;

/// A throw-away PKI for TLS tests, with every PEM written into its own temporary directory.
///
/// * a CA (`ca.pem`),
/// * a server certificate for `127.0.0.1` and `localhost` (IP and DNS SANs) signed by the CA,
/// * a client certificate (`CN=aether-test-client`) signed by the CA,
/// * a second, unrelated CA (`other-ca.pem`) and a client certificate signed by it, so tests
///   can show verification failing.
///
/// Cloning is cheap and shares the directory, which lives as long as any clone (a
/// [`NatsServer`](crate::NatsServer) configured with it keeps a clone).
#[derive(Clone, Debug)]
pub struct TestPki {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: TempDir,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    other_ca_pem: String,
    other_client_cert_pem: String,
    other_client_key_pem: String,
}

fn pki_err(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

fn new_ca(common_name: &str) -> Result<(String, Issuer<'static, KeyPair>), Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Aether testkit");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().map_err(pki_err)?;
    let cert = params.self_signed(&key).map_err(pki_err)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn new_leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    sans: Vec<String>,
    usage: &[ExtendedKeyUsagePurpose],
) -> Result<(String, String), Error> {
    let mut params = CertificateParams::new(sans).map_err(pki_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usage.to_vec();
    let key = KeyPair::generate().map_err(pki_err)?;
    let cert = params.signed_by(&key, issuer).map_err(pki_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TestPki {
    /// Generates the CA, server and client certificates and writes them as PEM files.
    pub fn generate() -> Result<TestPki, Error> {
        let (ca_pem, ca) = new_ca("Aether Test CA")?;
        let (server_cert_pem, server_key_pem) = new_leaf(
            &ca,
            "aether-test-server",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        let (node_cert_pem, node_key_pem) = new_leaf(
            &ca,
            "aether-test-node",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let (client_cert_pem, client_key_pem) = new_leaf(
            &ca,
            "aether-test-client",
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let (other_ca_pem, other_ca) = new_ca("Unrelated Test CA")?;
        let (other_client_cert_pem, other_client_key_pem) = new_leaf(
            &other_ca,
            "aether-rogue-client",
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;

        let dir = tempfile::Builder::new()
            .prefix("aether-testkit-pki-")
            .tempdir()
            .map_err(|e| Error::io("creating the PKI temp dir", e))?;
        for (name, pem) in [
            ("ca.pem", &ca_pem),
            ("server-cert.pem", &server_cert_pem),
            ("server-key.pem", &server_key_pem),
            ("node-cert.pem", &node_cert_pem),
            ("node-key.pem", &node_key_pem),
            ("client-cert.pem", &client_cert_pem),
            ("client-key.pem", &client_key_pem),
            ("other-ca.pem", &other_ca_pem),
            ("other-client-cert.pem", &other_client_cert_pem),
            ("other-client-key.pem", &other_client_key_pem),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(TestPki {
            inner: Arc::new(Inner {
                dir,
                ca_pem,
                server_cert_pem,
                server_key_pem,
                client_cert_pem,
                client_key_pem,
                other_ca_pem,
                other_client_cert_pem,
                other_client_key_pem,
            }),
        })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// Path of the CA certificate (PEM).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// Path of the server certificate (PEM; SANs `127.0.0.1`, `localhost`).
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir().join("server-cert.pem")
    }

    /// Path of the server private key (PKCS#8 PEM).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir().join("server-key.pem")
    }

    /// A cluster node's certificate (PEM), valid for `127.0.0.1` and
    /// `localhost` as a server and as a client, signed by the CA: what a
    /// node presents to clients and, on routes, to the other nodes.
    pub fn node_cert_path(&self) -> PathBuf {
        self.inner.dir.path().join("node-cert.pem")
    }

    /// The key of [`TestPki::node_cert_path`].
    pub fn node_key_path(&self) -> PathBuf {
        self.inner.dir.path().join("node-key.pem")
    }

    /// Path of the client certificate signed by the CA (PEM).
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir().join("client-cert.pem")
    }

    /// Path of the client private key (PKCS#8 PEM).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir().join("client-key.pem")
    }

    /// Path of an unrelated CA certificate: trusting only it must make server verification fail.
    pub fn other_ca_pem_path(&self) -> PathBuf {
        self.dir().join("other-ca.pem")
    }

    /// Path of a client certificate signed by the unrelated CA: a server with client
    /// verification must reject it.
    pub fn other_client_cert_path(&self) -> PathBuf {
        self.dir().join("other-client-cert.pem")
    }

    /// Path of the private key of [`other_client_cert_path`](Self::other_client_cert_path).
    pub fn other_client_key_path(&self) -> PathBuf {
        self.dir().join("other-client-key.pem")
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        &self.inner.ca_pem
    }

    /// The server certificate PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.inner.server_cert_pem
    }

    /// The server private key PEM.
    pub fn server_key_pem(&self) -> &str {
        &self.inner.server_key_pem
    }

    /// The client certificate PEM.
    pub fn client_cert_pem(&self) -> &str {
        &self.inner.client_cert_pem
    }

    /// The client private key PEM.
    pub fn client_key_pem(&self) -> &str {
        &self.inner.client_key_pem
    }

    /// The unrelated CA certificate PEM.
    pub fn other_ca_pem(&self) -> &str {
        &self.inner.other_ca_pem
    }

    /// The PEM of the client certificate signed by the unrelated CA.
    pub fn other_client_cert_pem(&self) -> &str {
        &self.inner.other_client_cert_pem
    }

    /// The private key PEM of the client certificate signed by the unrelated CA.
    pub fn other_client_key_pem(&self) -> &str {
        &self.inner.other_client_key_pem
    }
}
