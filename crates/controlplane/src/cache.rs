//! Read-through caches that spare the management API server a GET per reconcile.
//!
//! - [`SecretCache`]: the Secrets a reconcile reads by name (the cluster CA, the kubeconfig,
//!   the auth token). A label-selected, metadata-only watch knows every labelled Secret's
//!   `resourceVersion`; a full copy read earlier is served while the watch shows the same
//!   version, and read again (one GET) when it changed or is unknown. Unlabelled Secrets (a
//!   user-made CA, Canonical's leftovers) are never in the watch and are always read live.
//! - [`InfraMeta`]: the metadata of control plane infrastructure machines, whose kinds are
//!   known only at runtime. The first read of a kind starts a metadata-only watch of that kind
//!   (label `cluster.x-k8s.io/control-plane`); a machine the watch has not shown yet is read
//!   live.
//!
//! Both only ever serve what a watch has seen: a copy can lag a write by the watch latency,
//! which every consumer tolerates (a stale `resourceVersion` makes a write conflict and the
//! reconcile retry; a stale label set makes an idempotent server-side apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tracing::warn;

use crate::error::Result;

/// Whether a remembered copy may be served: the watch shows the object at the copy's version.
/// An object the watch does not show (unlabelled, not listed yet, or just created) is read.
pub fn copy_is_current(watched: Option<&str>, copy: Option<&str>) -> bool {
    matches!((watched, copy), (Some(w), Some(c)) if w == c)
}

type Key = (String, String);

/// Secrets by name, served from copies the metadata watch vouches for.
pub struct SecretCache {
    client: Client,
    watched: Store<PartialObjectMeta<Secret>>,
    copies: Arc<Mutex<HashMap<Key, Arc<Secret>>>>,
}

/// The writing half of a [`SecretCache`], fed by the Secret watch.
pub struct SecretCacheFeed {
    writer: reflector::store::Writer<PartialObjectMeta<Secret>>,
    copies: Arc<Mutex<HashMap<Key, Arc<Secret>>>>,
}

/// A cache and its feed.
pub fn secret_cache(client: Client) -> (SecretCache, SecretCacheFeed) {
    let writer = reflector::store::Writer::<PartialObjectMeta<Secret>>::default();
    let copies = Arc::new(Mutex::new(HashMap::new()));
    (
        SecretCache {
            client,
            watched: writer.as_reader(),
            copies: copies.clone(),
        },
        SecretCacheFeed { writer, copies },
    )
}

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl SecretCacheFeed {
    /// Follows the metadata watch of the Secrets of `api` labelled with a cluster name until
    /// the task is aborted, calling `touched` with every Secret added, changed or deleted.
    pub async fn run(
        mut self,
        api: Api<PartialObjectMeta<Secret>>,
        mut touched: impl FnMut(&PartialObjectMeta<Secret>),
    ) {
        let cfg = watcher::Config::default()
            .labels(mk8s_api::consts::LABEL_CLUSTER_NAME)
            .any_semantic();
        let mut s = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    self.apply(&ev);
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) = &ev {
                        touched(o);
                    }
                }
                Err(e) => warn!(watch = "secrets", error = %e, "watch failed; retrying"),
            }
        }
    }

    /// Applies one watch event: the store follows it, and the copy of a Secret that is gone
    /// is dropped (deleted, or missing from a relist after the watch was interrupted).
    fn apply(&mut self, ev: &watcher::Event<PartialObjectMeta<Secret>>) {
        self.writer.apply_watcher_event(ev);
        let Ok(mut c) = self.copies.lock() else { return };
        match ev {
            watcher::Event::Delete(o) => {
                c.remove(&key_of(&o.metadata));
            }
            watcher::Event::InitDone => {
                let store = self.writer.as_reader();
                c.retain(|(ns, name), _| store.get(&ObjectRef::new(name).within(ns)).is_some());
            }
            _ => {}
        }
    }
}

impl SecretCache {
    /// The Secret `namespace/name`, or `None` when it does not exist.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>> {
        let key = (namespace.to_string(), name.to_string());
        let watched = self
            .watched
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone());
        if let Some(copy) = self.copies.lock().ok().and_then(|c| c.get(&key).cloned())
            && copy_is_current(watched.as_deref(), copy.metadata.resource_version.as_deref())
        {
            return Ok(Some(copy));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let live = api.get_opt(name).await?.map(Arc::new);
        if let Ok(mut c) = self.copies.lock() {
            match (&live, watched) {
                // Worth keeping only when the watch can vouch for it later.
                (Some(s), Some(_)) => {
                    c.insert(key, s.clone());
                }
                _ => {
                    c.remove(&key);
                }
            }
        }
        Ok(live)
    }

    /// Number of copies held (tests use it).
    pub fn copies(&self) -> usize {
        self.copies.lock().map(|c| c.len()).unwrap_or_default()
    }
}

/// The label every control plane infrastructure machine we clone carries.
const INFRA_SELECTOR: &str = mk8s_api::consts::LABEL_CONTROL_PLANE;

/// Metadata of control plane infrastructure machines, one metadata-only watch per kind.
pub struct InfraMeta {
    client: Client,
    namespace: String,
    stores: Mutex<HashMap<ApiResourceKey, Watched>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One kind's watch: its store, and whether its first list completed.
#[derive(Clone)]
struct Watched {
    store: Store<PartialObjectMeta<DynamicObject>>,
    listed: Arc<AtomicBool>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ApiResourceKey {
    api_version: String,
    kind: String,
}

impl ApiResourceKey {
    fn of(ar: &ApiResource) -> Self {
        Self {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        }
    }
}

impl InfraMeta {
    /// Watches within `namespace` (all namespaces when empty).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            stores: Mutex::new(HashMap::new()),
            tasks: Mutex::new(vec![]),
        }
    }

    fn watched(&self, ar: &ApiResource) -> Option<Watched> {
        let mut stores = self.stores.lock().ok()?;
        if let Some(s) = stores.get(&ApiResourceKey::of(ar)) {
            return Some(s.clone());
        }
        let writer = reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(ar.clone());
        let watched = Watched {
            store: writer.as_reader(),
            listed: Arc::new(AtomicBool::new(false)),
        };
        let listed = watched.listed.clone();
        let api: Api<PartialObjectMeta<DynamicObject>> = if self.namespace.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), &self.namespace, ar)
        };
        let kind = ar.kind.clone();
        let task = tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default().labels(INFRA_SELECTOR).any_semantic())
                .default_backoff()
                .reflect(writer)
                .boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => listed.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => warn!(watch = %kind, error = %e, "infrastructure machine watch failed; retrying"),
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.push(task);
        }
        stores.insert(ApiResourceKey::of(ar), watched.clone());
        Some(watched)
    }

    /// The metadata of infrastructure machine `namespace/name` of resource `ar`, or `None` when
    /// it does not exist.
    pub async fn get(&self, ar: &ApiResource, namespace: &str, name: &str) -> Result<Option<ObjectMeta>> {
        let seen = self.watched(ar).and_then(|w| {
            w.store
                .get(&ObjectRef::new_with(name, ar.clone()).within(namespace))
                .map(|o| o.metadata.clone())
        });
        if let Some(m) = seen {
            return Ok(Some(m));
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, ar);
        Ok(api.get_opt(name).await?.map(|o| o.meta().clone()))
    }

    /// The metadata of every control plane infrastructure machine of resource `ar` in
    /// `namespace` that `keep` accepts: from the watch once it has listed, else listed live.
    pub async fn list(
        &self,
        ar: &ApiResource,
        namespace: &str,
        keep: impl Fn(&ObjectMeta) -> bool,
    ) -> Result<Vec<ObjectMeta>> {
        if let Some(w) = self.watched(ar).filter(|w| w.listed.load(Ordering::Acquire)) {
            return Ok(w
                .store
                .state()
                .iter()
                .map(|o| &o.metadata)
                .filter(|m| m.namespace.as_deref() == Some(namespace) && keep(m))
                .cloned()
                .collect());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, ar);
        let lp = kube::api::ListParams::default().labels(INFRA_SELECTOR);
        Ok(api
            .list_metadata(&lp)
            .await?
            .items
            .into_iter()
            .map(|o| o.metadata)
            .filter(|m| keep(m))
            .collect())
    }

    /// Stops every watch.
    pub fn stop_all(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for task in t.drain(..) {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_is_current;

    #[test]
    fn a_copy_is_served_only_at_the_watched_version() {
        assert!(copy_is_current(Some("7"), Some("7")));
        assert!(!copy_is_current(Some("8"), Some("7")), "changed since the copy");
        assert!(
            !copy_is_current(None, Some("7")),
            "not watched: unlabelled or not listed yet"
        );
        assert!(!copy_is_current(Some("7"), None));
        assert!(!copy_is_current(None, None));
    }
}
