//! Keys, certificates, kubeconfigs and tokens of the MicroK8s CAPI providers. Pure
//! functions over PEM text; no Kubernetes client.
//!
//! - The cluster CA ([`generate_ca`]) is RSA-2048 with its key written as PKCS#1
//!   (`RSA PRIVATE KEY`), as Canonical's providers write and read it, with a random serial.
//! - User-supplied CAs ([`Ca::parse`]) may use RSA (PKCS#1 or PKCS#8), ECDSA (SEC1 or PKCS#8) or
//!   Ed25519 keys; the key must match the certificate.
//! - Client certificates ([`Ca::sign_client`]) get a fresh ECDSA P-256 key (cheap to generate)
//!   and a random serial.
//! - Tokens come from the operating system's CSPRNG.

use std::time::{Duration, SystemTime};

use base64::Engine;
use rand::RngExt;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Errors of this crate. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The certificate PEM could not be parsed.
    #[error("the CA certificate is not a PEM-encoded X.509 certificate: {0}")]
    BadCertificate(String),
    /// The key PEM could not be parsed.
    #[error("the CA private key is not a PEM-encoded PKCS#1, PKCS#8 or SEC1 key: {0}")]
    BadKey(String),
    /// Key and certificate do not belong together.
    #[error("the CA private key does not match the CA certificate's public key")]
    KeyMismatch,
    /// The certificate is not a CA.
    #[error("the certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa,
    /// Generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// Serialization failed.
    #[error("serialization failed: {0}")]
    Serialize(String),
}

/// Key algorithm of a CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA.
    Rsa,
    /// ECDSA.
    Ecdsa,
    /// Ed25519.
    Ed25519,
}

/// A CA certificate and key as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// `CERTIFICATE` PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Validity of the generated cluster CA (ten years, as Canonical's).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes[..]);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, always 16 bytes
    SerialNumber::from_slice(&bytes)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Generates the cluster CA: RSA-2048, key as PKCS#1 `RSA PRIVATE KEY`, random serial,
/// valid for [`CA_VALIDITY`] from `now` (backdated an hour for clock skew).
pub fn generate_ca(common_name: &str, now: SystemTime) -> Result<CaPem, PkiError> {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| PkiError::Generate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = to_offset(now - Duration::from_secs(3600));
    params.not_after = to_offset(now + CA_VALIDITY);
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: pkcs1_pem(&key)?,
    })
}

/// Re-encodes an RSA key pair as a PKCS#1 `RSA PRIVATE KEY` PEM.
fn pkcs1_pem(key: &KeyPair) -> Result<String, PkiError> {
    let der = key.serialize_der();
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| PkiError::Serialize(e.to_string()))?;
    Ok(pem::encode(&pem::Pem::new(
        "RSA PRIVATE KEY",
        info.private_key.to_vec(),
    )))
}

/// A parsed CA able to sign certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    algorithm: KeyAlgorithm,
    not_after: SystemTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("algorithm", &self.algorithm)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Facts about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations.
    pub organizations: Vec<String>,
    /// Whether it is a CA.
    pub is_ca: bool,
}

fn asn1_to_system(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn parse_cert_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(pem_text.trim()).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::BadCertificate(format!(
            "PEM block is {:?}, expected CERTIFICATE",
            block.tag()
        )));
    }
    Ok(block.contents().to_vec())
}

/// Reads validity, subject and CA flag of a PEM certificate.
pub fn cert_info(cert_pem: &str) -> Result<CertInfo, PkiError> {
    let der = parse_cert_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(info_of(&cert))
}

fn info_of(cert: &X509Certificate<'_>) -> CertInfo {
    let subject = cert.subject();
    CertInfo {
        not_before: asn1_to_system(cert.validity().not_before),
        not_after: asn1_to_system(cert.validity().not_after),
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        is_ca: cert.is_ca(),
    }
}

/// Whether `cert_pem` was signed by the CA certificate `ca_cert_pem`.
pub fn is_signed_by(cert_pem: &str, ca_cert_pem: &str) -> bool {
    let (Ok(der), Ok(ca_der)) = (parse_cert_der(cert_pem), parse_cert_der(ca_cert_pem)) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (X509Certificate::from_der(&der), X509Certificate::from_der(&ca_der)) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

impl Ca {
    /// Parses a CA certificate and its private key (RSA PKCS#1/PKCS#8, ECDSA SEC1/PKCS#8,
    /// Ed25519 PKCS#8) and checks that they belong together.
    pub fn parse(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let der = parse_cert_der(cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if !cert.is_ca() {
            return Err(PkiError::NotCa);
        }
        let key = KeyPair::from_pem(key_pem.trim()).map_err(|e| PkiError::BadKey(e.to_string()))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(PkiError::KeyMismatch);
        }
        let algorithm = match cert.public_key().algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.1" => KeyAlgorithm::Rsa,
            "1.2.840.10045.2.1" => KeyAlgorithm::Ecdsa,
            _ => KeyAlgorithm::Ed25519,
        };
        let info = info_of(&cert);
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem.trim(), key).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
            algorithm,
            not_after: info.not_after,
        })
    }

    /// The CA certificate PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs a client certificate (`CN=common_name`, `O=organizations`) valid from `now`
    /// (backdated five minutes) for `validity`, never past the CA's own expiry. Returns the
    /// certificate and a fresh ECDSA P-256 key (PKCS#8) as PEM.
    pub fn sign_client(
        &self,
        common_name: &str,
        organizations: &[&str],
        now: SystemTime,
        validity: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Generate(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| PkiError::Generate(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        // rcgen keeps one value per attribute type: the second organization is written under
        // the same OID spelled as a custom type (Kubernetes reads every O attribute).
        match organizations {
            [] => {}
            [one] => dn.push(DnType::OrganizationName, *one),
            [first, second] => {
                dn.push(DnType::OrganizationName, *first);
                dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *second);
            }
            _ => return Err(PkiError::Generate("at most two organizations are supported".into())),
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(now - Duration::from_secs(300));
        params.not_after = to_offset((now + validity).min(self.not_after));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::Generate(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl Ca {
    /// Signs a TLS serving certificate for `names` (DNS names or IP addresses), valid from
    /// `now` for `validity` (capped by the CA's expiry). Returns certificate and a fresh ECDSA
    /// P-256 key (PKCS#8) as PEM.
    pub fn sign_server(
        &self,
        common_name: &str,
        names: &[&str],
        now: SystemTime,
        validity: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Generate(e.to_string()))?;
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(|e| PkiError::Generate(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(now - Duration::from_secs(300));
        params.not_after = to_offset((now + validity).min(self.not_after));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::Generate(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A join token: 32 letters from the CSPRNG (the alphabet Canonical's provider uses, so
/// tokens stay interchangeable).
pub fn join_token() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphabetic)
        .take(32)
        .map(char::from)
        .collect()
}

/// A cluster agent auth token: 16 random bytes, base64 (as Canonical's).
pub fn auth_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes[..]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Base64 of bytes (kubeconfig data fields).
fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A kubeconfig with one cluster, one user (client certificate) and one context, in the
/// layout of Canonical's (`microk8s-cluster`, user `admin`, context `microk8s`).
pub fn kubeconfig(server: &str, ca_cert_pem: &str, user: &str, client_cert_pem: &str, client_key_pem: &str) -> String {
    // Every value is a quoted scalar: base64 and URLs contain nothing YAML would reinterpret,
    // but quoting keeps that true for any server string.
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: microk8s-cluster\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: microk8s\n  context:\n    cluster: microk8s-cluster\n    user: {user}\ncurrent-context: microk8s\npreferences: {{}}\n",
        ca = b64(ca_cert_pem),
        server = yaml_quote(server),
        user = yaml_quote(user),
        cert = b64(client_cert_pem),
        key = b64(client_key_pem),
    )
}

fn yaml_quote(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The parts of a kubeconfig the providers inspect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigFacts {
    /// Server URL of the current context's cluster.
    pub server: String,
    /// CA certificate PEM of that cluster.
    pub ca_cert_pem: String,
    /// Users: name and client certificate PEM (empty when the user has none).
    pub users: Vec<(String, String)>,
}

/// Reads server, CA and users of a kubeconfig. `None` when it is not a kubeconfig we can read.
pub fn kubeconfig_facts(yaml: &str) -> Option<KubeconfigFacts> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Kc {
        #[serde(default)]
        clusters: Vec<Named<ClusterEntry>>,
        #[serde(default)]
        users: Vec<Named<UserEntry>>,
        #[serde(default)]
        contexts: Vec<Named<ContextEntry>>,
        #[serde(default)]
        current_context: String,
    }
    #[derive(serde::Deserialize)]
    struct Named<T> {
        name: String,
        #[serde(alias = "cluster", alias = "user", alias = "context")]
        value: T,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct ClusterEntry {
        #[serde(default)]
        server: String,
        #[serde(default)]
        certificate_authority_data: String,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct UserEntry {
        #[serde(default)]
        client_certificate_data: String,
    }
    #[derive(serde::Deserialize, Default)]
    struct ContextEntry {
        #[serde(default)]
        cluster: String,
    }
    let kc: Kc = serde_saphyr::from_str(yaml).ok()?;
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    };
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == kc.current_context)
        .or(kc.contexts.first())
        .map(|c| c.value.cluster.clone());
    let cluster = match cluster_name {
        Some(n) => kc.clusters.iter().find(|c| c.name == n),
        None => kc.clusters.first(),
    }?;
    Some(KubeconfigFacts {
        server: cluster.value.server.clone(),
        ca_cert_pem: decode(&cluster.value.certificate_authority_data),
        users: kc
            .users
            .iter()
            .map(|u| (u.name.clone(), decode(&u.value.client_certificate_data)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn generated_ca_is_rsa_pkcs1_and_signs_clients() {
        let ca = generate_ca("10.152.183.1", now()).unwrap();
        assert!(
            ca.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "{}",
            &ca.key_pem[..40]
        );
        let info = cert_info(&ca.cert_pem).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.common_name, "10.152.183.1");
        let parsed = Ca::parse(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(parsed.algorithm(), KeyAlgorithm::Rsa);
        let (cert, key) = parsed
            .sign_client("admin", &["admin", "system:masters"], now(), Duration::from_secs(86400))
            .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let ci = cert_info(&cert).unwrap();
        assert_eq!(ci.common_name, "admin");
        assert_eq!(ci.organizations, ["admin", "system:masters"]);
        assert!(!ci.is_ca);
        assert!(is_signed_by(&cert, &ca.cert_pem));
        let other = generate_ca("other", now()).unwrap();
        assert!(!is_signed_by(&cert, &other.cert_pem));
    }

    #[test]
    fn serials_differ() {
        let a = generate_ca("a", now()).unwrap();
        let ca = Ca::parse(&a.cert_pem, &a.key_pem).unwrap();
        let (c1, _) = ca.sign_client("x", &[], now(), Duration::from_secs(60)).unwrap();
        let (c2, _) = ca.sign_client("x", &[], now(), Duration::from_secs(60)).unwrap();
        let serial = |p: &str| {
            let der = parse_cert_der(p).unwrap();
            let (_, c) = X509Certificate::from_der(&der).unwrap();
            c.raw_serial().to_vec()
        };
        assert_ne!(serial(&c1), serial(&c2));
    }

    #[test]
    fn accepts_pkcs8_and_ecdsa_cas_and_rejects_mismatches() {
        // PKCS#8 RSA and ECDSA (SEC1 and PKCS#8) CAs made with rcgen.
        for key in [
            KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap(),
            KeyPair::generate().unwrap(),
        ] {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let cert = params.self_signed(&key).unwrap();
            let ca = Ca::parse(&cert.pem(), &key.serialize_pem()).unwrap();
            let (client, _) = ca.sign_client("u", &[], now(), Duration::from_secs(60)).unwrap();
            assert!(is_signed_by(&client, &cert.pem()));
        }
        // An ECDSA CA whose key is written as SEC1 (`EC PRIVATE KEY`).
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let der = key.serialize_der();
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        let sec1 = pem::encode(&pem::Pem::new("EC PRIVATE KEY", info.private_key.to_vec()));
        let ca = Ca::parse(&cert.pem(), &sec1).unwrap();
        assert_eq!(ca.algorithm(), KeyAlgorithm::Ecdsa);
        let a = generate_ca("a", now()).unwrap();
        let b = generate_ca("b", now()).unwrap();
        assert!(matches!(Ca::parse(&a.cert_pem, &b.key_pem), Err(PkiError::KeyMismatch)));
        assert!(matches!(
            Ca::parse("junk", &a.key_pem),
            Err(PkiError::BadCertificate(_))
        ));
        assert!(matches!(Ca::parse(&a.cert_pem, "junk"), Err(PkiError::BadKey(_))));
        let ca = Ca::parse(&a.cert_pem, &a.key_pem).unwrap();
        let (leaf, leaf_key) = ca.sign_client("x", &[], now(), Duration::from_secs(60)).unwrap();
        assert!(matches!(Ca::parse(&leaf, &leaf_key), Err(PkiError::NotCa)));
    }

    #[test]
    fn client_validity_is_capped_by_the_ca() {
        let a = generate_ca("a", now()).unwrap();
        let ca = Ca::parse(&a.cert_pem, &a.key_pem).unwrap();
        let (c, _) = ca
            .sign_client("x", &[], now(), Duration::from_secs(100 * 365 * 86400))
            .unwrap();
        assert!(cert_info(&c).unwrap().not_after <= ca.not_after());
    }

    #[test]
    fn signs_serving_certificates_with_ip_and_dns_names() {
        let a = generate_ca("a", now()).unwrap();
        let ca = Ca::parse(&a.cert_pem, &a.key_pem).unwrap();
        let (cert, _) = ca
            .sign_server("webhook", &["127.0.0.1", "localhost"], now(), Duration::from_secs(3600))
            .unwrap();
        assert!(is_signed_by(&cert, &a.cert_pem));
        let der = parse_cert_der(&cert).unwrap();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let sans = c.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(sans, 2);
    }

    #[test]
    fn tokens_have_the_expected_shape() {
        let t = join_token();
        assert_eq!(t.len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(t, join_token());
        let a = auth_token();
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="));
    }

    #[test]
    fn kubeconfig_round_trips_its_facts() {
        let a = generate_ca("a", now()).unwrap();
        let ca = Ca::parse(&a.cert_pem, &a.key_pem).unwrap();
        let (cert, key) = ca
            .sign_client("admin", &["system:masters"], now(), Duration::from_secs(60))
            .unwrap();
        let kc = kubeconfig("https://10.0.0.1:6443", &a.cert_pem, "admin", &cert, &key);
        let facts = kubeconfig_facts(&kc).unwrap();
        assert_eq!(facts.server, "https://10.0.0.1:6443");
        assert_eq!(facts.ca_cert_pem, a.cert_pem);
        assert_eq!(facts.users, vec![("admin".to_string(), cert)]);
        assert!(kubeconfig_facts("not: [a kubeconfig").is_none());
    }
}
