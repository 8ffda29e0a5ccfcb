//! Kubeconfig files and `kube::Client`s built from them.

use crate::certs::{CertKeyPem, b64};
use crate::{Error, Result};

/// How a kubeconfig user authenticates.
pub(crate) enum Credentials<'a> {
    /// A client certificate and key (PEM).
    Cert(&'a CertKeyPem),
    /// A bearer token.
    Token(&'a str),
    /// Nothing (anonymous; for health endpoints).
    None,
}

fn q(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

/// Renders a single-context kubeconfig.
pub(crate) fn render(cluster: &str, server: &str, ca_pem: &str, user: &str, creds: &Credentials<'_>) -> String {
    let user_body = match creds {
        Credentials::Cert(c) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        Credentials::Token(t) => format!("    token: {}\n", q(t)),
        Credentials::None => "    {}\n".to_string(),
    };
    let user_body = if matches!(creds, Credentials::None) {
        format!("  user: {}", user_body.trim_start())
    } else {
        format!("  user:\n{user_body}")
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: {s}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: {c}\n  context:\n    cluster: {c}\n    \
         user: {u}\ncurrent-context: {c}\nusers:\n- name: {u}\n{user_body}",
        c = q(cluster),
        s = q(server),
        ca = b64(ca_pem),
        u = q(user),
    )
}

/// Builds a `kube::Client` from kubeconfig YAML (its current context), for the current tokio
/// runtime.
///
/// A `kube::Client` spawns its connection machinery on the runtime it is created in, so build
/// one per runtime (per `#[tokio::test]`), never share one across tests.
pub async fn client_from_kubeconfig_yaml(yaml: &str) -> Result<kube::Client> {
    let config = config_from_kubeconfig_yaml(yaml).await?;
    kube::Client::try_from(config).map_err(Error::Kube)
}

/// Builds a `kube::Config` from kubeconfig YAML (its current context).
pub async fn config_from_kubeconfig_yaml(yaml: &str) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn rendered_kubeconfigs_parse() {
        let pem = CertKeyPem {
            cert_pem: "C".into(),
            key_pem: "K".into(),
        };
        for creds in [Credentials::Cert(&pem), Credentials::Token("tok"), Credentials::None] {
            let y = render("c", "https://127.0.0.1:1", "CA", "system:admin", &creds);
            let kc = kube::config::Kubeconfig::from_yaml(&y).unwrap();
            assert_eq!(kc.current_context.as_deref(), Some("c"));
            let user = kc.auth_infos[0].auth_info.clone().unwrap_or_default();
            match creds {
                Credentials::Cert(_) => assert!(user.client_certificate_data.is_some()),
                Credentials::Token(_) => assert!(user.token.is_some()),
                Credentials::None => assert!(user.token.is_none()),
            }
            assert_eq!(kc.auth_infos[0].name, "system:admin");
        }
    }
}
