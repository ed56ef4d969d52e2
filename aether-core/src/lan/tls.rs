//! The bus's own certificate authority, derived from its secret.
//!
//! Every link of a bus on a LAN is TLS: programs to nodes, and the routes
//! between nodes. Nothing has to be handed out for it: the authority's
//! key is an Ed25519 key whose seed is derived from the secret, and its
//! certificate is made the same way, so every holder of the secret has
//! the same authority, byte for byte. A node issues itself a certificate
//! from it at each start (a fresh key of its own, its addresses as names);
//! programs and other nodes accept only certificates the authority
//! signed. A host without the secret can neither read a link nor stand in
//! for a node, even with the node's address taken over.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SanType, SerialNumber,
};

use super::LanSecret;

/// The bus's certificate authority.
pub struct LanAuthority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    fingerprint: String,
}

impl std::fmt::Debug for LanAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LanAuthority(bus secret {})", self.fingerprint)
    }
}

/// A node's certificate and its private key, in PEM.
pub struct NodeCertificate {
    /// The certificate, issued by the bus's authority.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCertificate(..)")
    }
}

/// PKCS#8 (version 1) around an Ed25519 seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

impl LanSecret {
    /// The bus's certificate authority (the same for every holder of the
    /// secret).
    pub fn authority(&self) -> LanAuthority {
        let seed = self.derive("authority");
        let der = ed25519_pkcs8(&seed);
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_ED25519)
            .expect("an Ed25519 seed is a valid key");
        let fingerprint = self.fingerprint();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("aether bus {fingerprint}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&self.derive("serial")[..16]));
        let cert = params
            .self_signed(&key)
            .expect("the authority's fixed parameters are valid");
        LanAuthority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            fingerprint,
        }
    }
}

impl LanAuthority {
    /// Its certificate, in PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for the node `name` reached at `addresses` (and at
    /// `localhost`), good for both ends of a TLS link, with a new key.
    pub fn issue(&self, name: &str, addresses: &[IpAddr]) -> NodeCertificate {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut names = vec![SanType::DnsName(
            "localhost".try_into().expect("a valid DNS name"),
        )];
        let mut ips: Vec<IpAddr> = addresses.to_vec();
        ips.extend([
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]);
        ips.sort();
        ips.dedup();
        names.extend(ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = names;
        let key = KeyPair::generate().expect("a new key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a node's parameters are valid");
        NodeCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Its certificate written in `dir` (as `ca-<fingerprint>.pem`, made
    /// whole and in one step), for a NATS client's `ca_file`.
    pub fn write_in(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("ca-{}.pem", self.fingerprint));
        if std::fs::read(&path).is_ok_and(|held| held == self.pem.as_bytes()) {
            return Ok(path);
        }
        let partial = path.with_extension(format!("pem.{}", std::process::id()));
        std::fs::write(&partial, &self.pem)?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }
}

/// Every address of this machine's interfaces, loopback included: the
/// names a node's certificate carries (NATS may tell other nodes any of
/// them as this node's route).
pub fn machine_addresses() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_holder_of_the_secret_has_the_same_authority_and_others_another() {
        let one = LanSecret::from_bytes(b"the secret of the test bus").unwrap();
        let same = LanSecret::from_bytes(b"the secret of the test bus\n").unwrap();
        let other = LanSecret::from_bytes(b"the secret of another bus").unwrap();
        assert_eq!(one.authority().pem(), same.authority().pem());
        assert_ne!(one.authority().pem(), other.authority().pem());
        assert!(
            one.authority()
                .pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(!one.authority().pem().contains("PRIVATE"));
    }

    #[test]
    fn a_node_certificate_is_new_each_time_and_names_its_addresses() {
        let secret = LanSecret::from_bytes(b"the secret of the test bus").unwrap();
        let authority = secret.authority();
        let addresses = [IpAddr::from([10, 0, 0, 2])];
        let a = authority.issue("pc", &addresses);
        let b = authority.issue("pc", &addresses);
        assert_ne!(a.key_pem, b.key_pem);
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let path = authority.write_in(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), authority.pem());
        assert_eq!(authority.write_in(dir.path()).unwrap(), path);
    }
}
