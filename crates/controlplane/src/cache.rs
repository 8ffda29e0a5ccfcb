//! Read-through caches that spare the management API server a GET per reconcile.
//!
//! - The Secrets a reconcile reads by name (the cluster CA, the kubeconfig, the auth token) come
//!   from [`mk8s_runtime::secret_cache::SecretCache`], shared with the bootstrap manager.
//! - [`InfraMeta`]: the metadata of control plane infrastructure machines, whose kinds are
//!   known only at runtime. The first read of a kind starts a metadata-only watch of that kind
//!   (label `cluster.x-k8s.io/control-plane`); a machine the watch has not shown yet is read
//!   live.
//!
//! Both only ever serve what a watch has seen or what this process wrote: an answer can lag
//! someone else's write by the watch latency, which every consumer tolerates (a stale
//! `resourceVersion` makes a write conflict and the reconcile retry; a stale label set makes
//! an idempotent server-side apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use mk8s_runtime::backoff::WatchBackoff;
use tracing::warn;

use crate::error::Result;

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
                .backoff(WatchBackoff::management())
                .modify(|o| crate::machines::slim_metadata(&mut o.metadata))
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
