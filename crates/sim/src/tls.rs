//! TLS for the stub cluster agents (self-signed, like MicroK8s' own), the client side of
//! `microk8s join` (no verification, as MicroK8s joins without a fingerprint), and checks
//! of the cluster CA a node installs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration with a fresh self-signed certificate for `sans`.
pub fn self_signed_server(sans: &[String]) -> Result<Arc<rustls::ServerConfig>, String> {
    let ck = rcgen::generate_simple_self_signed(sans.to_vec()).map_err(|e| format!("self-signed certificate: {e}"))?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS server configuration: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS client configuration that accepts any server certificate (signatures are still
/// checked), as `microk8s join` without a fingerprint and `curl -k` do.
pub fn insecure_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What `microk8s refresh-certs` learns from a CA certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// The certificate's subject, e.g. `CN=10.152.183.1`.
    pub subject: String,
}

/// Checks that `cert_pem` is a CA certificate and `key_pem` its private key, as MicroK8s'
/// `refresh-certs` needs them.
pub fn check_ca(cert_pem: &str, key_pem: &str) -> Result<CaInfo, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("ca.crt is not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("ca.crt is not an X.509 certificate: {e}"))?;
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("ca.crt is not a CA certificate (no basicConstraints CA:TRUE)".into());
    }
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("ca.key is not a private key: {e}"))?;
    use rcgen::PublicKeyData as _;
    if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
        return Err("ca.key does not belong to ca.crt".into());
    }
    rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| format!("ca.crt cannot sign: {e}"))?;
    Ok(CaInfo {
        subject: cert.subject().to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mk8s_testenv::{CaKeyFormat, generate_ca};

    #[test]
    fn accepts_a_ca_and_its_key_only() {
        let a = generate_ca("a", CaKeyFormat::RsaPkcs1).unwrap();
        let b = generate_ca("b", CaKeyFormat::EcdsaP256).unwrap();
        assert_eq!(check_ca(&a.cert_pem, &a.key_pem).unwrap().subject, "CN=a");
        check_ca(&b.cert_pem, &b.key_pem).unwrap();
        assert!(
            check_ca(&a.cert_pem, &b.key_pem)
                .unwrap_err()
                .contains("does not belong")
        );
        assert!(check_ca("junk", &a.key_pem).is_err());
        assert!(check_ca(&a.cert_pem, "junk").is_err());
    }

    #[test]
    fn builds_tls_configs() {
        self_signed_server(&["127.100.0.1".into()]).unwrap();
        insecure_client().unwrap();
    }
}
