//! Read-through caches that spare the management API server a GET per reconcile.
//!
//! - [`SecretCache`]: the Secrets a reconcile reads by name (the cluster CA, the kubeconfig,
//!   the auth token). A metadata-only watch of every Secret in scope knows each one's
//!   `resourceVersion` (and, once listed, which ones do not exist). A full copy read or
//!   written earlier is served while the watch shows the version it stands for; a changed
//!   or unknown Secret is read again (one GET); a Secret the listed watch does not show is
//!   absent, answered without a request.
//! - [`InfraMeta`]: the metadata of control plane infrastructure machines, whose kinds are
//!   known only at runtime. The first read of a kind starts a metadata-only watch of that kind
//!   (label `cluster.x-k8s.io/control-plane`); a machine the watch has not shown yet is read
//!   live.
//!
//! Both only ever serve what a watch has seen or what this process wrote: an answer can lag
//! someone else's write by the watch latency, which every consumer tolerates (a stale
//! `resourceVersion` makes a write conflict and the reconcile retry; a Secret that appears
//! after an "absent" answer reaches the controller as a watch event and triggers a new
//! reconcile; a stale label set makes an idempotent server-side apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A full Secret this process read or wrote, and the watched states at which it is current.
#[derive(Clone, Debug)]
pub struct SecretCopy {
    /// The Secret as read, or as the server returned it from our write.
    pub secret: Arc<Secret>,
    /// Watched states at which `secret` is known to be current: its own version, plus for our
    /// writes the states the watch shows until it catches up with the write (the version we
    /// wrote over, or absence for a create).
    pub stands_for: Vec<Option<String>>,
}

/// How a cache answers one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Serve the copy: the watch shows a state it stands for.
    Copy,
    /// The Secret does not exist: the watch has listed and does not show it.
    Absent,
    /// Read it from the API server.
    Read,
}

/// Decides how to answer a read of one Secret from what the watch shows of it (its
/// `resourceVersion`, `None` when it does not show it), whether the watch has completed its
/// first list, and the copy held.
pub fn answer(watched: Option<&str>, listed: bool, copy: Option<&SecretCopy>) -> Answer {
    let want = watched.map(str::to_string);
    match copy {
        Some(c) if c.stands_for.contains(&want) => Answer::Copy,
        _ if watched.is_none() && listed => Answer::Absent,
        _ => Answer::Read,
    }
}

type Key = (String, String);

#[derive(Default)]
struct Shared {
    copies: Mutex<HashMap<Key, SecretCopy>>,
    listed: AtomicBool,
    reads: AtomicU64,
}

/// Secrets by name, served from copies the metadata watch vouches for.
pub struct SecretCache {
    client: Client,
    watched: Store<PartialObjectMeta<Secret>>,
    shared: Arc<Shared>,
}

/// The writing half of a [`SecretCache`], fed by the Secret watch.
pub struct SecretCacheFeed {
    writer: reflector::store::Writer<PartialObjectMeta<Secret>>,
    shared: Arc<Shared>,
}

/// A cache and its feed.
pub fn secret_cache(client: Client) -> (SecretCache, SecretCacheFeed) {
    let writer = reflector::store::Writer::<PartialObjectMeta<Secret>>::default();
    let shared = Arc::new(Shared::default());
    (
        SecretCache {
            client,
            watched: writer.as_reader(),
            shared: shared.clone(),
        },
        SecretCacheFeed { writer, shared },
    )
}

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Keeps only what the cache and the event mapping read (name, namespace, version, labels,
/// owners): managed fields and annotations can dwarf the rest.
fn slim(o: &mut PartialObjectMeta<Secret>) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
}

impl SecretCacheFeed {
    /// Follows the metadata watch of every Secret of `api` until the task is aborted, calling
    /// `touched` with every Secret added, changed or deleted.
    pub async fn run(
        mut self,
        api: Api<PartialObjectMeta<Secret>>,
        mut touched: impl FnMut(&PartialObjectMeta<Secret>),
    ) {
        let cfg = watcher::Config::default().any_semantic();
        let mut s = watcher(api, cfg).default_backoff().modify(slim).boxed();
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
        if matches!(ev, watcher::Event::InitDone) {
            self.shared.listed.store(true, Ordering::Release);
        }
        let Ok(mut c) = self.shared.copies.lock() else { return };
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
        let watched = self.version(namespace, name);
        let listed = self.shared.listed.load(Ordering::Acquire);
        if let Ok(mut copies) = self.shared.copies.lock() {
            match answer(watched.as_deref(), listed, copies.get(&key)) {
                Answer::Copy => return Ok(copies.get(&key).map(|c| c.secret.clone())),
                Answer::Absent => {
                    // A copy read just before its deletion was seen is stale for good.
                    copies.remove(&key);
                    return Ok(None);
                }
                Answer::Read => {}
            }
        }
        self.shared.reads.fetch_add(1, Ordering::Relaxed);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let live = api.get_opt(name).await?.map(Arc::new);
        if let Ok(mut c) = self.shared.copies.lock() {
            match &live {
                Some(s) => {
                    let rv = s.metadata.resource_version.clone();
                    c.insert(
                        key,
                        SecretCopy {
                            secret: s.clone(),
                            stands_for: vec![rv],
                        },
                    );
                }
                None => {
                    c.remove(&key);
                }
            }
        }
        Ok(live)
    }

    /// Records a Secret as the API server returned it from this process's write, made over
    /// the version `over` (`None`: created). Until the watch catches up, reads of it are
    /// answered with this copy instead of a stale version or "absent". `also_absent` says the
    /// watch may also show the Secret missing meanwhile (deleted and created again).
    pub fn wrote(&self, secret: Secret, over: Option<String>, also_absent: bool) {
        let key = key_of(&secret.metadata);
        let mut stands_for = vec![secret.metadata.resource_version.clone(), over];
        if also_absent {
            stands_for.push(None);
        }
        if let Ok(mut c) = self.shared.copies.lock() {
            c.insert(
                key,
                SecretCopy {
                    secret: Arc::new(secret),
                    stands_for,
                },
            );
        }
    }

    fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.watched
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone())
    }

    /// Number of copies held (tests use it).
    pub fn copies(&self) -> usize {
        self.shared.copies.lock().map(|c| c.len()).unwrap_or_default()
    }

    /// Number of reads that went to the API server so far (tests use it).
    pub fn live_reads(&self) -> u64 {
        self.shared.reads.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(rv: &str, stands_for: &[Option<&str>]) -> SecretCopy {
        let mut s = Secret::default();
        s.metadata.resource_version = Some(rv.into());
        SecretCopy {
            secret: Arc::new(s),
            stands_for: stands_for.iter().map(|v| v.map(str::to_string)).collect(),
        }
    }

    #[test]
    fn a_copy_is_served_only_at_a_version_it_stands_for() {
        let read = copy("7", &[Some("7")]);
        assert_eq!(answer(Some("7"), true, Some(&read)), Answer::Copy);
        assert_eq!(answer(Some("7"), false, Some(&read)), Answer::Copy);
        assert_eq!(
            answer(Some("8"), true, Some(&read)),
            Answer::Read,
            "changed since the copy"
        );
        assert_eq!(answer(None, true, Some(&read)), Answer::Absent, "deleted since");
        assert_eq!(answer(None, false, Some(&read)), Answer::Read, "not listed yet");
    }

    #[test]
    fn our_writes_are_served_until_the_watch_catches_up() {
        let created = copy("9", &[Some("9"), None]);
        assert_eq!(answer(None, true, Some(&created)), Answer::Copy, "create not seen yet");
        assert_eq!(answer(Some("9"), true, Some(&created)), Answer::Copy);
        assert_eq!(
            answer(Some("10"), true, Some(&created)),
            Answer::Read,
            "someone else wrote after us"
        );
        let patched = copy("9", &[Some("9"), Some("7")]);
        assert_eq!(
            answer(Some("7"), true, Some(&patched)),
            Answer::Copy,
            "patch not seen yet"
        );
        assert_eq!(
            answer(None, true, Some(&patched)),
            Answer::Absent,
            "deleted after our patch"
        );
        assert_eq!(answer(Some("8"), true, Some(&patched)), Answer::Read);
    }

    #[test]
    fn without_a_copy_the_listed_watch_decides_existence() {
        assert_eq!(answer(None, true, None), Answer::Absent);
        assert_eq!(answer(None, false, None), Answer::Read, "not listed: cannot tell");
        assert_eq!(answer(Some("3"), true, None), Answer::Read);
        assert_eq!(answer(Some("3"), false, None), Answer::Read);
    }
}
