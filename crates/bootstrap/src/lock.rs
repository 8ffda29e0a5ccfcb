//! The init lock: the `<cluster>-lock` ConfigMap (`lock-information: {"machineName": …}`,
//! compatible with Canonical's), so that exactly one control plane Machine gets init data.
//!
//! It is never wedged: a lock that cannot be parsed, or whose holder Machine is gone or
//! being deleted, is removed (with a resourceVersion precondition, so a concurrent winner is
//! never deleted) and taken. It is released once the cluster is initialised.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use mk8s_api::capi::{Cluster, Machine};
use mk8s_api::consts;
use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockInformation {
    machine_name: String,
}

/// The holder named in a lock's data, if it parses.
pub fn holder(cm: &ConfigMap) -> Option<String> {
    let raw = cm.data.as_ref()?.get(consts::KEY_LOCK)?;
    let info: LockInformation = serde_json::from_str(raw).ok()?;
    Some(info.machine_name).filter(|n| !n.is_empty())
}

/// Result of trying to take the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This machine holds the lock (newly or already).
    Acquired {
        /// Whether this call took it.
        new: bool,
    },
    /// Another machine holds it.
    HeldBy(String),
}

fn lock_object(cluster: &Cluster, machine: &str) -> Result<ConfigMap, Error> {
    let cname = cluster.metadata.name.clone().unwrap_or_default();
    let mut meta = crate::secrets::cluster_secret_meta(cluster, consts::init_lock_configmap(&cname));
    meta.labels = Some(BTreeMap::from([(consts::LABEL_CLUSTER_NAME.to_string(), cname)]));
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            consts::KEY_LOCK.to_string(),
            serde_json::to_string(&LockInformation {
                machine_name: machine.to_string(),
            })?,
        )])),
        ..Default::default()
    })
}

/// Tries to take the lock for `machine`. Whether another holder is still alive is read from
/// the API directly (the cache may lag behind a holder created a moment ago).
pub async fn acquire(
    api: &Api<ConfigMap>,
    machines: &Api<Machine>,
    cluster: &Cluster,
    machine: &str,
) -> Result<Outcome, Error> {
    let name = consts::init_lock_configmap(cluster.metadata.name.as_deref().unwrap_or_default());
    // Two attempts: the second follows the removal of a stale lock.
    for _ in 0..2 {
        match api
            .create(&PostParams::default(), &lock_object(cluster, machine)?)
            .await
        {
            Ok(_) => return Ok(Outcome::Acquired { new: true }),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let Some(cm) = api.get_opt(&name).await? else { continue };
        let stale = match holder(&cm) {
            Some(h) if h == machine => return Ok(Outcome::Acquired { new: false }),
            Some(h) => match machines.get_opt(&h).await? {
                Some(m) if m.metadata.deletion_timestamp.is_none() => return Ok(Outcome::HeldBy(h)),
                _ => true,
            },
            None => true,
        };
        if stale {
            tracing::info!(lock = %name, holder = ?holder(&cm), "removing a stale init lock");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: cm.metadata.resource_version.clone(),
                    uid: cm.metadata.uid.clone(),
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let current = api.get_opt(&name).await?.and_then(|cm| holder(&cm));
    Ok(Outcome::HeldBy(current.unwrap_or_else(|| "<unknown>".into())))
}

/// The init locks this manager has deleted, by `namespace/name`, with the uid of the object it
/// deleted — so that a lock cache still showing that same object (its delete event not yet
/// arrived) costs no second DELETE, while a lock created since (another uid) is still released.
///
/// A memo is needed only until the cache catches up; one whose cluster is deleted before a
/// reconcile saw the lock gone is dropped after [`Released::KEEP`] (a second DELETE of a lock
/// already gone is a harmless 404).
#[derive(Debug, Default)]
pub struct Released(Mutex<HashMap<String, (String, tokio::time::Instant)>>);

impl Released {
    /// How long a memo is kept at most.
    pub const KEEP: std::time::Duration = std::time::Duration::from_secs(600);

    /// Whether the lock `key` that the cache shows (`cached_uid`: `None` when the cache shows
    /// no lock) still has to be deleted. An absent lock forgets the memo of its key.
    pub fn needs_release(&self, key: &str, cached_uid: Option<&str>) -> bool {
        let Ok(mut memo) = self.0.lock() else {
            return cached_uid.is_some();
        };
        match cached_uid {
            None => {
                memo.remove(key);
                false
            }
            Some(uid) => memo.get(key).is_none_or(|(deleted, _)| deleted != uid),
        }
    }

    /// Records that the lock object `uid` of `key` was deleted (or found gone).
    pub fn record(&self, key: &str, uid: &str) {
        let now = tokio::time::Instant::now();
        if let Ok(mut memo) = self.0.lock() {
            if let Some(before) = now.checked_sub(Self::KEEP) {
                memo.retain(|_, (_, at)| *at >= before);
            }
            memo.insert(key.to_string(), (uid.to_string(), now));
        }
    }
}

/// Releases the lock of a cluster (once it is initialised). Missing is fine.
pub async fn release(api: &Api<ConfigMap>, cluster: &str) -> Result<bool, Error> {
    match api
        .delete(&consts::init_lock_configmap(cluster), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_lock_is_deleted_once_per_object() {
        let r = Released::default();
        // Nothing deleted yet: a cached lock must be released, an absent one need not.
        assert!(r.needs_release("ns/c-lock", Some("u1")));
        assert!(!r.needs_release("ns/c-lock", None));
        r.record("ns/c-lock", "u1");
        // The cache still shows the object we deleted: no second DELETE.
        assert!(!r.needs_release("ns/c-lock", Some("u1")));
        // Another cluster's lock is its own matter.
        assert!(r.needs_release("ns/d-lock", Some("u1")));
        // A lock created since (another uid) is released again.
        assert!(r.needs_release("ns/c-lock", Some("u2")));
        // Once the cache shows it gone, the memo is forgotten; a later lock with any uid is
        // released.
        assert!(!r.needs_release("ns/c-lock", None));
        assert!(r.0.lock().unwrap().is_empty());
        assert!(r.needs_release("ns/c-lock", Some("u1")));
    }

    #[tokio::test(start_paused = true)]
    async fn memos_of_locks_never_seen_gone_expire() {
        let r = Released::default();
        r.record("ns/deleted-cluster-lock", "u1");
        tokio::time::advance(Released::KEEP + std::time::Duration::from_secs(1)).await;
        r.record("ns/c-lock", "u2");
        let memo = r.0.lock().unwrap();
        assert_eq!(memo.keys().collect::<Vec<_>>(), ["ns/c-lock"]);
    }

    fn cm(data: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: data.map(|d| BTreeMap::from([(consts::KEY_LOCK.to_string(), d.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn reads_canonicals_lock_format() {
        assert_eq!(
            holder(&cm(Some(r#"{"machineName":"cp-abcde"}"#))),
            Some("cp-abcde".into())
        );
        assert_eq!(holder(&cm(Some("not json"))), None);
        assert_eq!(holder(&cm(Some(r#"{"machineName":""}"#))), None);
        assert_eq!(holder(&cm(None)), None);
    }

    #[test]
    fn writes_canonicals_lock_format() {
        let cluster: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u"}, "spec": {}}))
        .unwrap();
        let obj = lock_object(&cluster, "m1").unwrap();
        assert_eq!(obj.metadata.name.as_deref(), Some("c-lock"));
        assert_eq!(obj.data.unwrap()[consts::KEY_LOCK], r#"{"machineName":"m1"}"#);
        assert_eq!(obj.metadata.owner_references.unwrap()[0].kind, "Cluster");
    }
}
