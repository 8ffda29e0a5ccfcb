//! The cluster's Secrets: join token, CA and cluster agent auth token — names and keys as
//! Canonical's, created when absent, never overwritten. A user may create them by hand (with or
//! without labels): the manager's [`SecretCache`] watches every Secret's metadata, so it says
//! whether one exists without a request, and serves the data from a copy this manager read or
//! created while the watch shows that copy's version (else one GET).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use mk8s_api::capi::{self, Cluster, ClusterExt};
use mk8s_api::consts;
use mk8s_pki::{Ca, CaPem, KeyAlgorithm};
use mk8s_runtime::secret_cache::SecretCache;

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

/// What a copy keeps of a Secret: its name, namespace and `resourceVersion`, and only the
/// data keys this module reads (`tls.crt`/`tls.key` when both are there, else `crt`/`key`;
/// the tokens' keys), so a thousand clusters' copies stay small.
pub fn slim_copy(secret: Secret) -> Secret {
    let Secret { metadata, data, .. } = secret;
    let has = |k: &str| data.as_ref().is_some_and(|d| d.contains_key(k));
    let tls = has(consts::KEY_TLS_CRT) && has(consts::KEY_TLS_KEY);
    let wanted = |k: &str| match k {
        consts::KEY_TLS_CRT | consts::KEY_TLS_KEY => true,
        consts::KEY_CRT | consts::KEY_KEY => !tls,
        k => k == consts::KEY_JOIN_TOKEN || k == consts::KEY_AUTH_TOKEN,
    };
    Secret {
        metadata: ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            resource_version: metadata.resource_version,
            // Cluster owners only: they tell a leftover of a deleted Cluster ([`stale_owner`]).
            owner_references: metadata
                .owner_references
                .map(|o| o.into_iter().filter(capi::is_cluster_owner).collect::<Vec<_>>())
                .filter(|o| !o.is_empty()),
            ..Default::default()
        },
        data: data.map(|mut d| {
            d.retain(|k, _| wanted(k));
            d
        }),
        ..Default::default()
    }
}

/// The uid of the deleted Cluster of this name `secret` belongs to
/// ([`ClusterExt::stale_owner_in`]).
pub fn stale_owner(secret: &Secret, cluster: &Cluster) -> Option<String> {
    cluster.stale_owner_in(secret.metadata.owner_references.as_deref().unwrap_or_default())
}

/// One create at a time per cluster Secret. The configs of a cluster's workers, created
/// together, reconcile concurrently: without this they all find its join token absent and all
/// create it, every create but one answered 409 and read back (15 of 1 025 Secret creates in the
/// `throughput` bench), and racing control plane configs would each generate an RSA CA key.
#[derive(Default)]
pub struct Creating(Mutex<HashMap<Key, Turn>>);

/// Namespace and name.
type Key = (String, String);
/// The right to create one Secret.
type Turn = Arc<tokio::sync::Mutex<()>>;

impl Creating {
    fn slot(&self, key: &Key) -> Turn {
        match self.0.lock() {
            Ok(mut m) => m.entry(key.clone()).or_default().clone(),
            // A poisoned map only loses the coordination, never correctness (409 is handled).
            Err(_) => Arc::default(),
        }
    }

    /// Forgets the slot once nobody else holds or waits for it.
    fn release(&self, key: &Key, slot: Turn) {
        if let Ok(mut m) = self.0.lock()
            && Arc::strong_count(&slot) == 2
        {
            m.remove(key);
        }
    }

    /// Number of Secrets with a turn outstanding.
    #[cfg(test)]
    fn outstanding(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }
}

/// Where the cluster Secrets are looked up: the namespaced API (to create them), the
/// manager's Secret cache (listed before any reconcile runs; copies slimmed by [`slim_copy`])
/// and the creates in progress.
pub struct Source<'a> {
    /// The namespaced Secret API.
    pub api: &'a Api<Secret>,
    /// The cache.
    pub cache: &'a SecretCache,
    /// Creates in progress.
    pub creating: &'a Creating,
}

async fn get_or_create<F: Future<Output = Result<Secret, Error>>>(
    src: &Source<'_>,
    cluster: &Cluster,
    name: &str,
    build: impl FnOnce() -> F,
) -> Result<(Arc<Secret>, Origin), Error> {
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let not_stale = |s: Arc<Secret>| match stale_owner(&s, cluster) {
        Some(uid) => Err(Error::StaleClusterSecret {
            secret: format!("{ns}/{name}"),
            owner_uid: uid,
        }),
        None => Ok((s, Origin::Existing)),
    };
    if let Some(s) = src.cache.get(ns, name).await? {
        return not_stale(s);
    }
    let key = (ns.to_string(), name.to_string());
    let slot = src.creating.slot(&key);
    let result = {
        let _turn = slot.lock().await;
        // Another reconcile may have created it while this one waited: its copy is in the cache.
        match src.cache.get(ns, name).await {
            Ok(Some(s)) => Ok((s, Origin::Existing)),
            Ok(None) => create(src, name, build).await,
            Err(e) => Err(e.into()),
        }
    };
    src.creating.release(&key, slot);
    match result? {
        (s, Origin::Existing) => not_stale(s),
        created => Ok(created),
    }
}

async fn create<F: Future<Output = Result<Secret, Error>>>(
    src: &Source<'_>,
    name: &str,
    build: impl FnOnce() -> F,
) -> Result<(Arc<Secret>, Origin), Error> {
    match src.api.create(&PostParams::default(), &build().await?).await {
        Ok(s) => Ok((src.cache.wrote(s, None, false), Origin::Created)),
        // Created by someone else since the cache was written (a user, another manager): read
        // it back; the watch may not show it yet.
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let found = src.api.get(name).await?;
            Ok((src.cache.wrote(found, None, false), Origin::Existing))
        }
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
pub async fn auth_token(src: &Source<'_>, cluster: &Cluster) -> Result<Result<String, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::auth_token_secret(cname);
    let meta = cluster_secret_meta(cluster, name.clone());
    let (secret, _) = get_or_create(src, cluster, &name, || async {
        Ok(typed_secret(
            meta,
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
pub async fn join_token(src: &Source<'_>, cluster: &Cluster) -> Result<Result<String, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::join_token_secret(cname);
    let meta = cluster_secret_meta(cluster, name.clone());
    let (secret, _) = get_or_create(src, cluster, &name, || async {
        Ok(typed_secret(
            meta,
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
pub async fn ca(src: &Source<'_>, cluster: &Cluster) -> Result<Result<ClusterCa, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::ca_secret(cname);
    let meta = cluster_secret_meta(cluster, name.clone());
    let (secret, origin) = get_or_create(src, cluster, &name, || async {
        // RSA-2048 key generation takes tens of milliseconds of CPU (most of this manager's CPU
        // at a thousand clusters): off the async workers, which serve every other reconcile,
        // the watches and the leader lease.
        let ca = tokio::task::spawn_blocking(|| mk8s_pki::generate_ca(CA_COMMON_NAME, SystemTime::now())).await??;
        Ok(typed_secret(
            meta,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_create_at_a_time_per_secret_and_nothing_kept_after() {
        let creating = Creating::default();
        let key = |n: &str| ("ns".to_string(), n.to_string());
        let first = creating.slot(&key("c-jointoken"));
        let second = creating.slot(&key("c-jointoken"));
        let other = creating.slot(&key("c-ca"));
        assert!(Arc::ptr_eq(&first, &second), "the same Secret shares one turn");
        assert!(!Arc::ptr_eq(&first, &other));
        let held = first.lock().await;
        assert!(second.try_lock().is_err(), "the second waits for the first");
        assert!(other.try_lock().is_ok(), "another Secret does not wait");
        drop(held);
        // The first finishing while the second still waits keeps the turn for it...
        creating.release(&key("c-jointoken"), first);
        assert_eq!(creating.outstanding(), 2);
        // ...and the last one forgets it.
        creating.release(&key("c-jointoken"), second);
        creating.release(&key("c-ca"), other);
        assert_eq!(creating.outstanding(), 0);
    }

    #[test]
    fn a_secret_of_a_deleted_cluster_of_the_same_name_is_stale() {
        let cluster: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "new"}, "spec": {}}))
        .unwrap();
        let owner = |kind: &str, api_version: &str, uid: &str| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "c".into(),
            uid: uid.into(),
            ..Default::default()
        };
        let with = |owners: Vec<OwnerReference>| Secret {
            metadata: ObjectMeta {
                name: Some("c-ca".into()),
                owner_references: Some(owners),
                ..Default::default()
            },
            ..Default::default()
        };
        let old = owner("Cluster", "cluster.x-k8s.io/v1beta1", "old");
        let ours = owner("Cluster", "cluster.x-k8s.io/v1beta2", "new");
        let cp = owner("MicroK8sControlPlane", "controlplane.cluster.x-k8s.io/v1beta1", "cp");
        assert_eq!(stale_owner(&with(vec![old.clone()]), &cluster), Some("old".into()));
        assert_eq!(
            stale_owner(&with(vec![old.clone(), cp.clone()]), &cluster),
            Some("old".into())
        );
        assert_eq!(stale_owner(&with(vec![ours.clone()]), &cluster), None);
        assert_eq!(stale_owner(&with(vec![old.clone(), ours]), &cluster), None, "also ours");
        assert_eq!(stale_owner(&with(vec![cp.clone()]), &cluster), None, "no Cluster owner");
        assert_eq!(stale_owner(&with(vec![]), &cluster), None, "Canonical's: no owner");
        let other = OwnerReference {
            name: "b".into(),
            ..old.clone()
        };
        assert_eq!(
            stale_owner(&with(vec![other]), &cluster),
            None,
            "a copy owned by another (live) Cluster is the user's business"
        );
        // The cache keeps the Cluster owners, and only those.
        let slim = slim_copy(with(vec![cp, old]));
        assert_eq!(stale_owner(&slim, &cluster), Some("old".into()));
        assert_eq!(slim.metadata.owner_references.map(|o| o.len()), Some(1));
    }

    #[test]
    fn a_copy_keeps_what_is_read_and_nothing_else() {
        let secret = |keys: &[&str]| Secret {
            metadata: ObjectMeta {
                name: Some("c-ca".into()),
                namespace: Some("ns".into()),
                resource_version: Some("9".into()),
                labels: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
                ..Default::default()
            },
            type_: Some("cluster.x-k8s.io/secret".into()),
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(format!("<{k}>").into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let keys = |s: &Secret| s.data.as_ref().unwrap().keys().cloned().collect::<Vec<_>>();
        // Ours: both pairs written; tls.* is what is read.
        let ours = slim_copy(secret(&["tls.crt", "tls.key", "crt", "key", "extra"]));
        assert_eq!(keys(&ours), ["tls.crt", "tls.key"]);
        assert_eq!(ours.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(ours.metadata.name.as_deref(), Some("c-ca"));
        assert!(ours.metadata.labels.is_none());
        // Canonical's keys only, or an incomplete tls pair: the fallback pair stays.
        assert_eq!(keys(&slim_copy(secret(&["crt", "key"]))), ["crt", "key"]);
        assert_eq!(
            keys(&slim_copy(secret(&["tls.crt", "crt", "key"]))),
            ["crt", "key", "tls.crt"]
        );
        // The tokens.
        assert_eq!(keys(&slim_copy(secret(&["value", "other"]))), ["value"]);
        assert_eq!(keys(&slim_copy(secret(&["token"]))), ["token"]);
        // What the readers see is unchanged.
        let full = secret(&["tls.crt", "tls.key", "crt", "key"]);
        for k in ["tls.crt", "tls.key"] {
            assert_eq!(value(&slim_copy(full.clone()), k), value(&full, k));
        }
    }
}
