//! The cluster's Secrets: join token, CA and cluster agent auth token — names and keys as
//! Canonical's, read by name with a direct GET (a user may create them by hand, without
//! labels), created when absent, never overwritten.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use mk8s_api::capi::Cluster;
use mk8s_api::consts;
use mk8s_pki::{Ca, CaPem, KeyAlgorithm};

use crate::error::Error;

/// A cluster Secret exists but cannot be used; the message says what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable(pub String);

/// Where a Secret came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This call created it.
    Created,
    /// It existed.
    Existing,
}

/// Common name of the CA we generate (MicroK8s' own CA uses the service IP).
pub const CA_COMMON_NAME: &str = "10.152.183.1";

/// Labels and owner of the Secrets we create for a cluster.
pub fn cluster_secret_meta(cluster: &Cluster, name: String) -> ObjectMeta {
    let cluster_name = cluster.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(BTreeMap::from([(
            consts::LABEL_CLUSTER_NAME.to_string(),
            cluster_name.clone(),
        )])),
        owner_references: Some(vec![OwnerReference {
            api_version: cluster
                .types
                .as_ref()
                .map(|t| t.api_version.clone())
                .unwrap_or_else(|| format!("{}/v1beta2", mk8s_api::capi::GROUP)),
            kind: "Cluster".into(),
            name: cluster_name,
            uid: cluster.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        }]),
        ..Default::default()
    }
}

async fn get_or_create(
    api: &Api<Secret>,
    name: &str,
    build: impl FnOnce() -> Result<Secret, Error>,
) -> Result<(Secret, Origin), Error> {
    if let Some(s) = api.get_opt(name).await? {
        return Ok((s, Origin::Existing));
    }
    match api.create(&PostParams::default(), &build()?).await {
        Ok(s) => Ok((s, Origin::Created)),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok((api.get(name).await?, Origin::Existing)),
        Err(e) => Err(e.into()),
    }
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
}

fn typed_secret(meta: ObjectMeta, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta,
        type_: Some(consts::SECRET_TYPE_CLUSTER.to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// Ensures `<cluster>-capi-auth-token` and returns its token.
pub async fn auth_token(api: &Api<Secret>, cluster: &Cluster) -> Result<Result<String, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::auth_token_secret(cname);
    let (secret, _) = get_or_create(api, &name, || {
        Ok(typed_secret(
            cluster_secret_meta(cluster, name.clone()),
            BTreeMap::from([(consts::KEY_AUTH_TOKEN.to_string(), mk8s_pki::auth_token())]),
        ))
    })
    .await?;
    Ok(
        match value(&secret, consts::KEY_AUTH_TOKEN).map(|t| t.trim().to_string()) {
            Some(t) if !t.is_empty() && !t.contains(char::is_whitespace) => Ok(t),
            _ => Err(Unusable(format!(
                "Secret {name} has no usable key {:?} (one word without whitespace): fix or delete it",
                consts::KEY_AUTH_TOKEN
            ))),
        },
    )
}

/// Ensures `<cluster>-jointoken` and returns its token (32 characters).
pub async fn join_token(api: &Api<Secret>, cluster: &Cluster) -> Result<Result<String, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::join_token_secret(cname);
    let (secret, _) = get_or_create(api, &name, || {
        Ok(typed_secret(
            cluster_secret_meta(cluster, name.clone()),
            BTreeMap::from([(consts::KEY_JOIN_TOKEN.to_string(), mk8s_pki::join_token())]),
        ))
    })
    .await?;
    Ok(
        match value(&secret, consts::KEY_JOIN_TOKEN).map(|t| t.trim().to_string()) {
            Some(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) => Ok(t),
            _ => Err(Unusable(format!(
                "Secret {name} key {:?} must hold exactly 32 characters (letters, digits, '-', '_', '.', '~'): fix or delete it",
                consts::KEY_JOIN_TOKEN
            ))),
        },
    )
}

/// The cluster CA as found or created.
#[derive(Debug)]
pub struct ClusterCa {
    /// Certificate and key PEM.
    pub pem: CaPem,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Whether this call generated it.
    pub origin: Origin,
}

/// Ensures `<cluster>-ca` (RSA-2048, PKCS#1, when generated) and returns it. Reads `tls.crt`/
/// `tls.key`, else Canonical's `crt`/`key`.
pub async fn ca(api: &Api<Secret>, cluster: &Cluster) -> Result<Result<ClusterCa, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::ca_secret(cname);
    let (secret, origin) = get_or_create(api, &name, || {
        let ca = mk8s_pki::generate_ca(CA_COMMON_NAME, SystemTime::now())?;
        Ok(typed_secret(
            cluster_secret_meta(cluster, name.clone()),
            BTreeMap::from([
                (consts::KEY_TLS_CRT.to_string(), ca.cert_pem.clone()),
                (consts::KEY_TLS_KEY.to_string(), ca.key_pem.clone()),
                (consts::KEY_CRT.to_string(), ca.cert_pem),
                (consts::KEY_KEY.to_string(), ca.key_pem),
            ]),
        ))
    })
    .await?;
    let cert = value(&secret, consts::KEY_TLS_CRT).or_else(|| value(&secret, consts::KEY_CRT));
    let key = value(&secret, consts::KEY_TLS_KEY).or_else(|| value(&secret, consts::KEY_KEY));
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(Err(Unusable(format!(
            "Secret {name} must hold the CA certificate and key under tls.crt/tls.key (or crt/key)"
        ))));
    };
    Ok(match Ca::parse(&cert, &key) {
        Ok(parsed) => Ok(ClusterCa {
            algorithm: parsed.algorithm(),
            pem: CaPem {
                cert_pem: cert,
                key_pem: key,
            },
            origin,
        }),
        Err(e) => Err(Unusable(format!("Secret {name}: {e}"))),
    })
}
