//! The cluster's Secrets: join token, CA and cluster agent auth token — names and keys as
//! Canonical's, created when absent, never overwritten. A user may create them by hand (with or
//! without labels): the manager's metadata watch covers every Secret, so its cache says
//! whether one exists and at which `resourceVersion`; the data comes from a copy this manager
//! read or created when the cache vouches for it (same `resourceVersion`), else from a GET.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
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

/// How long a Secret this manager created (or read) but its watch has not shown yet is served
/// from the copy while the cache still lacks it. Longer than any watch lag; short enough that a
/// create the watch never showed (deleted again before a relist) is not trusted for long.
pub const IN_FLIGHT: Duration = Duration::from_secs(60);

/// What to do about one cluster Secret, from the watch cache and the copy held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the copy. `seen`: the cache shows the copy's version (no longer in flight).
    UseCopy {
        /// Whether the cache now shows this version.
        seen: bool,
    },
    /// The Secret does not exist: create it (and drop any copy).
    Absent,
    /// It exists in a version the copy does not hold: read it (and drop any copy).
    Read,
}

/// A copy's facts for [`judge`].
#[derive(Clone, Copy, Debug)]
pub struct CopyFacts<'a> {
    /// The copy's `resourceVersion`.
    pub resource_version: Option<&'a str>,
    /// Whether the cache has shown this version.
    pub seen: bool,
    /// Time since it was stored.
    pub age: Duration,
}

/// Decides from the (listed) watch cache — `None`: no such Secret; `Some(rv)`: it exists at
/// `rv` — and the copy held, if any, whether a Secret must be created, read, or served from
/// the copy.
pub fn judge(cached: Option<Option<&str>>, copy: Option<CopyFacts<'_>>) -> Verdict {
    match (cached, copy) {
        (Some(rv), Some(c)) if rv.is_some() && rv == c.resource_version => Verdict::UseCopy { seen: true },
        (Some(_), _) => Verdict::Read,
        // Our own create or read the watch has not delivered yet.
        (None, Some(c)) if !c.seen && c.age < IN_FLIGHT => Verdict::UseCopy { seen: false },
        // Deleted since (or never shown and too old to trust).
        (None, _) => Verdict::Absent,
    }
}

struct Copy {
    secret: Secret,
    seen: bool,
    at: Instant,
}

/// Copies of the cluster Secrets this manager created or read, keyed by namespace/name. Kept
/// only for the three cluster Secret kinds (a few KiB per cluster), dropped when the cache
/// shows the Secret gone or changed.
#[derive(Default)]
pub struct Copies(Mutex<HashMap<String, Copy>>);

/// What a copy keeps of a Secret: its name, namespace and `resourceVersion`, and only the
/// data keys this module reads (`tls.crt`/`tls.key` when both are there, else `crt`/`key`;
/// the tokens' keys), so a thousand clusters' copies stay small.
pub fn slim_copy(secret: &Secret) -> Secret {
    let data = secret.data.as_ref();
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let tls = has(consts::KEY_TLS_CRT) && has(consts::KEY_TLS_KEY);
    let wanted = |k: &str| match k {
        consts::KEY_TLS_CRT | consts::KEY_TLS_KEY => true,
        consts::KEY_CRT | consts::KEY_KEY => !tls,
        k => k == consts::KEY_JOIN_TOKEN || k == consts::KEY_AUTH_TOKEN,
    };
    Secret {
        metadata: ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: secret.metadata.namespace.clone(),
            resource_version: secret.metadata.resource_version.clone(),
            ..Default::default()
        },
        data: data.map(|d| {
            d.iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ..Default::default()
    }
}

impl Copies {
    /// Stores a copy. `in_flight`: the cache did not show the Secret when it was obtained (this
    /// manager just created it, or someone did an instant before), so the cache's silence about
    /// it does not yet mean it is gone.
    fn remember(&self, secret: &Secret, in_flight: bool) {
        let key = format!(
            "{}/{}",
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default()
        );
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                key,
                Copy {
                    secret: slim_copy(secret),
                    seen: !in_flight,
                    at: Instant::now(),
                },
            );
        }
    }

    /// The verdict for `ns/name`, updating the copy's bookkeeping.
    fn verdict(&self, cache: &Store<PartialObjectMeta<Secret>>, ns: &str, name: &str) -> (Verdict, Option<Secret>) {
        let cached = cache.get(&ObjectRef::new(name).within(ns));
        let cached_rv = cached.as_ref().map(|m| m.metadata.resource_version.as_deref());
        let key = format!("{ns}/{name}");
        let Ok(mut m) = self.0.lock() else {
            return (
                if cached.is_some() {
                    Verdict::Read
                } else {
                    Verdict::Absent
                },
                None,
            );
        };
        let facts = m.get(&key).map(|c| CopyFacts {
            resource_version: c.secret.metadata.resource_version.as_deref(),
            seen: c.seen,
            age: c.at.elapsed(),
        });
        let verdict = judge(cached_rv, facts);
        match verdict {
            Verdict::UseCopy { seen } => {
                let c = m.get_mut(&key).map(|c| {
                    c.seen |= seen;
                    c.secret.clone()
                });
                (verdict, c)
            }
            Verdict::Absent | Verdict::Read => {
                m.remove(&key);
                (verdict, None)
            }
        }
    }
}

/// Where the cluster Secrets are looked up: the API, the manager's metadata cache of every
/// Secret (listed before any reconcile runs), and the copies.
pub struct Source<'a> {
    /// The namespaced Secret API.
    pub api: &'a Api<Secret>,
    /// The metadata cache.
    pub cache: &'a Store<PartialObjectMeta<Secret>>,
    /// The copies.
    pub copies: &'a Copies,
}

async fn get_or_create(
    src: &Source<'_>,
    cluster: &Cluster,
    name: &str,
    build: impl FnOnce() -> Result<Secret, Error>,
) -> Result<(Secret, Origin), Error> {
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let (verdict, copy) = src.copies.verdict(src.cache, ns, name);
    let api = src.api;
    let found = match (verdict, copy) {
        (Verdict::UseCopy { .. }, Some(s)) => return Ok((s, Origin::Existing)),
        (Verdict::Absent, _) => None,
        _ => api.get_opt(name).await?,
    };
    // Read while the cache shows it: the cache's later silence about it means it was deleted.
    let in_flight = found.is_none();
    let (secret, origin) = match found {
        Some(s) => (s, Origin::Existing),
        None => match api.create(&PostParams::default(), &build()?).await {
            Ok(s) => (s, Origin::Created),
            // Created by someone else since the cache was written.
            Err(kube::Error::Api(s)) if s.is_already_exists() => (api.get(name).await?, Origin::Existing),
            Err(e) => return Err(e.into()),
        },
    };
    src.copies.remember(&secret, in_flight);
    Ok((secret, origin))
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
    let (secret, _) = get_or_create(src, cluster, &name, || {
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
pub async fn join_token(src: &Source<'_>, cluster: &Cluster) -> Result<Result<String, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::join_token_secret(cname);
    let (secret, _) = get_or_create(src, cluster, &name, || {
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
pub async fn ca(src: &Source<'_>, cluster: &Cluster) -> Result<Result<ClusterCa, Unusable>, Error> {
    let cname = cluster.metadata.name.as_deref().unwrap_or_default();
    let name = consts::ca_secret(cname);
    let (secret, origin) = get_or_create(src, cluster, &name, || {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(rv: &str, seen: bool, age_s: u64) -> CopyFacts<'_> {
        CopyFacts {
            resource_version: Some(rv),
            seen,
            age: Duration::from_secs(age_s),
        }
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
        let ours = slim_copy(&secret(&["tls.crt", "tls.key", "crt", "key", "extra"]));
        assert_eq!(keys(&ours), ["tls.crt", "tls.key"]);
        assert_eq!(ours.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(ours.metadata.name.as_deref(), Some("c-ca"));
        assert!(ours.metadata.labels.is_none());
        // Canonical's keys only, or an incomplete tls pair: the fallback pair stays.
        assert_eq!(keys(&slim_copy(&secret(&["crt", "key"]))), ["crt", "key"]);
        assert_eq!(
            keys(&slim_copy(&secret(&["tls.crt", "crt", "key"]))),
            ["crt", "key", "tls.crt"]
        );
        // The tokens.
        assert_eq!(keys(&slim_copy(&secret(&["value", "other"]))), ["value"]);
        assert_eq!(keys(&slim_copy(&secret(&["token"]))), ["token"]);
        // What the readers see is unchanged.
        let full = secret(&["tls.crt", "tls.key", "crt", "key"]);
        for k in ["tls.crt", "tls.key"] {
            assert_eq!(value(&slim_copy(&full), k), value(&full, k));
        }
    }

    #[test]
    fn the_cache_vouches_for_a_copy_of_the_same_version() {
        assert_eq!(
            judge(Some(Some("7")), Some(copy("7", false, 0))),
            Verdict::UseCopy { seen: true }
        );
        assert_eq!(
            judge(Some(Some("7")), Some(copy("7", true, 3600))),
            Verdict::UseCopy { seen: true }
        );
    }

    #[test]
    fn a_secret_in_another_version_or_without_a_copy_is_read() {
        // Changed by a user (or the cache lags a change): read, never serve the old copy.
        assert_eq!(judge(Some(Some("8")), Some(copy("7", true, 1))), Verdict::Read);
        assert_eq!(judge(Some(Some("7")), Some(copy("8", false, 1))), Verdict::Read);
        assert_eq!(judge(Some(Some("7")), None), Verdict::Read);
        // A cache entry without a version vouches for nothing.
        assert_eq!(
            judge(
                Some(None),
                Some(CopyFacts {
                    resource_version: None,
                    seen: true,
                    age: Duration::ZERO
                })
            ),
            Verdict::Read
        );
    }

    #[test]
    fn our_own_create_is_served_until_the_watch_shows_it_but_not_after_a_delete() {
        // Created (or read) a moment ago, the watch has not delivered it: the copy stands.
        assert_eq!(judge(None, Some(copy("7", false, 2))), Verdict::UseCopy { seen: false });
        // The watch showed it and now shows it gone: deleted, create it again.
        assert_eq!(judge(None, Some(copy("7", true, 2))), Verdict::Absent);
        // Never shown for longer than any watch lag: not trusted.
        assert_eq!(
            judge(None, Some(copy("7", false, IN_FLIGHT.as_secs()))),
            Verdict::Absent
        );
        // Nothing anywhere: create.
        assert_eq!(judge(None, None), Verdict::Absent);
    }
}
