//! Wiring: the stores and watches, the shared [`Context`], and [`run_controller`].
//!
//! Triggers: the control planes themselves; Clusters (through `spec.controlPlaneRef`, by group
//! and kind, never version); Machines (controller reference to a control plane, else their
//! Cluster's control plane — workers matter for providerIDs and deletion); MicroK8sConfigs
//! (owner reference); Secrets (metadata only, all of them, also feeding the [`SecretCache`];
//! only those it owns and each cluster's `<cluster>-ca|-kubeconfig|-capi-auth-token` wake it,
//! through an owner reference, the cluster-name label, else the name); and each workload
//! cluster's Nodes and node action pods. Watches with a fingerprint wake only when what the
//! control plane reads of an object changes. Control plane
//! infrastructure machines are watched (metadata only) by [`InfraMeta`] without triggering.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::unbounded;
use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::Api;
use kube::core::ApiResource;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use mk8s_api::capi::{Cluster, ObjRef};
use mk8s_api::consts::LABEL_CLUSTER_NAME;
use mk8s_api::{MicroK8sConfig, MicroK8sControlPlane, MicroK8sControlPlaneStatus};
use mk8s_runtime::backoff::WatchBackoff;
use mk8s_runtime::wakes::{Triggers, Wakes};
use mk8s_runtime::{Backoff, Runtime, RuntimeError};
use tracing::{debug, info, warn};

use crate::cache::InfraMeta;
use crate::config::ControllerConfig;
use crate::error::Error;
use crate::events::Events;
use crate::infra::Kinds;
use crate::machines::CpMachine;
use crate::metrics::CpMetrics;
use crate::names;
use crate::workload::Workloads;
use mk8s_runtime::secret_cache::{SecretCache, secret_cache};

/// What a reconcile expects to see in the Machine store before it decides again (the store
/// lags the writes that made it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A created Machine.
    Created(String),
    /// A deleted Machine (gone or deleting).
    Gone(String),
    /// A Machine patched with this JSON merge patch (the store shows its values).
    Patched(String, serde_json::Value),
}

struct Pending {
    expects: Vec<Expect>,
    since: Instant,
}

/// The status this manager last wrote for a control plane, and the versions of the object it
/// supersedes.
#[derive(Clone, Debug)]
pub struct Written {
    /// Versions whose status this write supersedes: the one it was computed from and, while our
    /// writes follow each other faster than the watch delivers them, the versions our earlier
    /// writes in the chain were computed from or produced (most recent first, at most
    /// [`Written::KEPT`]).
    pub superseded: Vec<String>,
    /// The version the write produced.
    pub produced: Option<String>,
    /// The status written.
    pub status: MicroK8sControlPlaneStatus,
    /// Versions that are only our own echo: the one this write produced if it differs from
    /// the one it was computed from in its status only (same generation and metadata; a
    /// status apply the server finds unchanged answers with the current version, which may
    /// carry someone else's change this manager has not seen yet), and, while our writes
    /// follow each other faster than the watch delivers them, those the earlier status-only
    /// writes of the chain produced (at most [`Written::KEPT`]).
    pub echoes: Vec<String>,
}

impl Written {
    /// How many superseded versions are remembered: more than our writes in any burst.
    pub const KEPT: usize = 8;

    /// The record of a write of `status` computed from version `from` that produced version
    /// `produced` (differing from `from` in its status only, if `status_only`), after the
    /// previous record `prev`. When `from` is a version `prev` superseded
    /// or produced, the watch is behind our writes, so the earlier ones' versions are
    /// superseded too: seeing the version our previous write produced (its status older than
    /// this one's) must not make a reconcile write this status again.
    pub fn next(
        prev: Option<&Written>,
        from: String,
        produced: Option<String>,
        status_only: bool,
        status: MicroK8sControlPlaneStatus,
    ) -> Written {
        let chained = prev.filter(|p| p.superseded.contains(&from) || p.produced.as_ref() == Some(&from));
        let mut superseded = vec![from];
        let mut echoes: Vec<String> = produced.iter().filter(|_| status_only).cloned().collect();
        if let Some(p) = chained {
            push_new(&mut superseded, p.produced.iter().chain(&p.superseded));
            push_new(&mut echoes, &p.echoes);
        }
        superseded.truncate(Self::KEPT);
        echoes.truncate(Self::KEPT);
        Written {
            superseded,
            produced,
            status,
            echoes,
        }
    }

    /// Records that this write also supersedes `version` (one our own metadata patch
    /// produced in the same reconcile, before the status write): it still shows the old
    /// status.
    pub fn also_supersedes(&mut self, version: String) {
        if !self.superseded.contains(&version) {
            self.superseded.insert(1.min(self.superseded.len()), version);
            self.superseded.truncate(Self::KEPT);
        }
    }

    /// Whether the watch event of `version` is only our own echo: a version this write (or
    /// an earlier one of its chain) produced, differing from what it was computed from in its
    /// status alone. With several writes faster than the watch, each one's event is an
    /// echo: the last one's status supersedes the earlier ones'.
    pub fn echo(&self, version: &str) -> bool {
        self.echoes.iter().any(|v| v == version)
    }
}

/// Appends the versions of `more` that `list` does not hold yet, in order.
fn push_new<'a>(list: &mut Vec<String>, more: impl IntoIterator<Item = &'a String>) {
    for v in more {
        if !list.contains(v) {
            list.push(v.clone());
        }
    }
}

/// Whether a status write's answer (`after`) shows the control plane as the reconcile read it
/// (`before`) but for its status: the same generation (spec) and the same metadata a
/// reconcile reads. The last-applied annotation and managed fields, which the manager's copies
/// drop, are not compared.
pub fn same_but_status(before: &kube::core::ObjectMeta, after: &kube::core::ObjectMeta) -> bool {
    let annotations = |m: &kube::core::ObjectMeta| {
        let mut a = m.annotations.clone().unwrap_or_default();
        a.remove(mk8s_runtime::slim::ANNOTATION_LAST_APPLIED);
        a
    };
    before.generation == after.generation
        && before.deletion_timestamp == after.deletion_timestamp
        && before.labels.clone().unwrap_or_default() == after.labels.clone().unwrap_or_default()
        && annotations(before) == annotations(after)
        && before.finalizers.as_deref().unwrap_or_default() == after.finalizers.as_deref().unwrap_or_default()
        && before.owner_references.as_deref().unwrap_or_default()
            == after.owner_references.as_deref().unwrap_or_default()
}

/// The status a reconcile starts from. The control plane handed to a reconcile comes from the
/// watch cache, which can lag this manager's own status writes by seconds on a busy API server;
/// while it still shows a version our last write superseded, that write is the truth (else a
/// second reconcile would report `Initialized` twice, undo and redo a condition, or write the
/// same status again). Any other version — the write arrived, or someone else wrote — is taken
/// as is.
pub fn effective_status(
    resource_version: Option<&str>,
    stored: Option<&MicroK8sControlPlaneStatus>,
    written: Option<&Written>,
) -> Option<MicroK8sControlPlaneStatus> {
    match (written, resource_version) {
        (Some(w), Some(rv)) if w.superseded.iter().any(|v| v == rv) => Some(w.status.clone()),
        _ => stored.cloned(),
    }
}

/// How long an unmet expectation holds decisions back before the API server is asked whether
/// the write still stands ([`StoreWait::Overdue`]).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether decisions may be taken from the Machine store.
#[derive(Debug, PartialEq)]
pub enum StoreWait {
    /// It shows every write of this control plane.
    CaughtUp,
    /// It does not show them all yet. The Machine watch event that shows a write wakes the
    /// control plane (a creation, deletion or patch of one of its Machines passes its
    /// fingerprint filter); the duration is what is left of [`EXPECTATION_TIMEOUT`], the
    /// time to look again if no such event comes.
    Waiting(Duration),
    /// It has not shown these for [`EXPECTATION_TIMEOUT`]: either someone undid them, or the
    /// Machine watch is stalled (e.g. backing off after API server restarts) — the API server
    /// tells which. Deciding on a stalled store would create a second Machine.
    Overdue(Vec<Expect>),
}

/// Adds an expectation. A later patch of the same Machine supersedes an earlier one: a store
/// that shows it shows the earlier write too (or what the later one changed of it), while
/// waiting for the earlier one's values could wait forever — e.g. a removal state recorded,
/// then replaced by the failure of its pod in the same reconcile.
pub fn push_expectation(list: &mut Vec<Expect>, e: Expect) {
    if let Expect::Patched(name, _) = &e {
        list.retain(|x| !matches!(x, Expect::Patched(n, _) if n == name));
    }
    list.push(e);
}

/// Whether the API server's copy of a Machine (`None`: absent) shows what `e` expects of it.
pub fn shows(e: &Expect, live: Option<&serde_json::Value>) -> bool {
    let deleting = |m: &serde_json::Value| !m["metadata"]["deletionTimestamp"].is_null();
    match e {
        Expect::Created(_) => live.is_some(),
        Expect::Gone(_) => live.is_none_or(deleting),
        Expect::Patched(_, patch) => live.is_some_and(|m| contains(m, patch)),
    }
}

/// How long a template seen carrying its Cluster's owner reference is trusted without a look.
pub const TEMPLATE_OWNER_TTL: Duration = Duration::from_secs(600);

/// Whether `key` was recorded less than `ttl` before `now`.
pub fn still_fresh(seen: &HashMap<String, Instant>, key: &str, now: Instant, ttl: Duration) -> bool {
    seen.get(key).is_some_and(|at| now.saturating_duration_since(*at) < ttl)
}

/// Records `key` at `now`, dropping entries older than `ttl`.
pub fn record_fresh(seen: &mut HashMap<String, Instant>, key: String, now: Instant, ttl: Duration) {
    seen.retain(|_, at| now.saturating_duration_since(*at) < ttl);
    seen.insert(key, now);
}

/// Shared state of the reconciles.
pub struct Context {
    /// The manager runtime.
    pub rt: Runtime,
    /// Settings.
    pub cfg: ControllerConfig,
    /// Clusters (`cluster.x-k8s.io/<core version>`).
    pub clusters: Store<Cluster>,
    cluster_ar: ApiResource,
    machine_ar: ApiResource,
    /// Machines (`cluster.x-k8s.io/<core version>`).
    pub machines: Store<CpMachine>,
    /// MicroK8sConfigs.
    pub configs: Store<MicroK8sConfig>,
    /// Workload clusters.
    pub workloads: Workloads,
    /// Events.
    pub events: Events,
    /// Per-object backoff of failed reconciles.
    pub backoff: Backoff,
    /// Served versions of infrastructure kinds.
    pub kinds: Kinds,
    /// Secrets read by name (CA, kubeconfig, auth token).
    pub secrets: SecretCache,
    /// Control plane infrastructure machines' metadata.
    pub infra: InfraMeta,
    /// Metrics.
    pub metrics: CpMetrics,
    /// What woke each control plane's next reconcile.
    pub wakes: Arc<Wakes>,
    expectations: Mutex<HashMap<String, Pending>>,
    /// Last orphan sweep per control plane.
    pub sweeps: Mutex<HashMap<String, Instant>>,
    /// The status last written per control plane (see [`effective_status`]).
    pub written: Mutex<HashMap<String, Written>>,
    /// Infrastructure templates seen carrying their Cluster's owner reference, and when: an entry
    /// is trusted for [`TEMPLATE_OWNER_TTL`], so a template deleted and recreated under the same
    /// name gets its owner back, and entries of deleted Clusters expire.
    pub owned_templates: Mutex<HashMap<String, Instant>>,
    /// Control plane annotations this manager set, and when: for [`ANNOTATION_MEMO_TTL`] a
    /// cached copy without the annotation is taken as lagging behind that write rather than
    /// patched again (under load the watch lags our own writes by seconds, and every reconcile
    /// in between repeated the patch).
    pub annotated: Mutex<HashMap<String, Instant>>,
}

/// How long an annotation this manager set is trusted over a cached copy that lacks it.
pub const ANNOTATION_MEMO_TTL: Duration = Duration::from_secs(60);

impl Context {
    /// A Machine from the store.
    pub fn machine(&self, namespace: &str, name: &str) -> Option<Arc<CpMachine>> {
        self.machines
            .get(&ObjectRef::new_with(name, self.machine_ar.clone()).within(namespace))
    }

    /// A Cluster from the store.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters
            .get(&ObjectRef::new_with(name, self.cluster_ar.clone()).within(namespace))
    }

    /// Records what the next reconcile of `key` must see first.
    pub fn expect(&self, key: &str, e: Expect) {
        if let Ok(mut m) = self.expectations.lock() {
            let p = m.entry(key.to_string()).or_insert_with(|| Pending {
                expects: vec![],
                since: Instant::now(),
            });
            push_expectation(&mut p.expects, e);
            p.since = Instant::now();
        }
    }

    /// Whether the Machine store has caught up with this control plane's writes.
    pub fn store_wait(&self, key: &str, namespace: &str) -> StoreWait {
        let Ok(mut m) = self.expectations.lock() else {
            return StoreWait::CaughtUp;
        };
        let Some(p) = m.get_mut(key) else {
            return StoreWait::CaughtUp;
        };
        let get = |name: &str| self.machine(namespace, name);
        p.expects.retain(|e| match e {
            Expect::Created(n) => get(n).is_none(),
            Expect::Gone(n) => get(n).is_some_and(|m| m.metadata.deletion_timestamp.is_none()),
            Expect::Patched(n, patch) => {
                get(n).is_some_and(|m| serde_json::to_value(&*m).is_ok_and(|v| !contains(&v, patch)))
            }
        });
        if p.expects.is_empty() {
            m.remove(key);
            return StoreWait::CaughtUp;
        }
        let elapsed = p.since.elapsed();
        if elapsed > EXPECTATION_TIMEOUT {
            return m
                .remove(key)
                .map_or(StoreWait::CaughtUp, |p| StoreWait::Overdue(p.expects));
        }
        StoreWait::Waiting(EXPECTATION_TIMEOUT - elapsed + Duration::from_millis(100))
    }

    /// Waits again for expectations the API server shows but the store does not yet.
    pub fn rearm(&self, key: &str, expects: Vec<Expect>) {
        for e in expects {
            self.expect(key, e);
        }
    }

    /// Forgets a control plane.
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.expectations.lock() {
            m.remove(key);
        }
        if let Ok(mut m) = self.sweeps.lock() {
            m.remove(key);
        }
        if let Ok(mut m) = self.written.lock() {
            m.remove(key);
        }
        self.wakes.forget(key);
        self.backoff.reset(key);
    }

    /// Forgets a control plane that is gone — through our deletion, or removed without it
    /// (clusterctl move deletes the source copy after removing its finalizers): its state,
    /// metric series and workload cluster watches.
    pub fn gone(&self, mcp: &MicroK8sControlPlane) {
        let ns = mcp.metadata.namespace.as_deref().unwrap_or_default();
        let name = mcp.metadata.name.as_deref().unwrap_or_default();
        self.forget(&format!("{ns}/{name}"));
        self.metrics.forget(ns, name);
        self.workloads.remove_owned_by(&ObjectRef::new(name).within(ns));
    }

    /// Whether `mcp` is exactly the version this manager's last status write produced. Its
    /// watch event would only wake a reconcile to find the status it has just written (each
    /// control plane writes its status some nine times while it comes up); any other change —
    /// spec, metadata, or someone else's status write — has another version and passes.
    pub fn own_status_echo(&self, mcp: &MicroK8sControlPlane) -> bool {
        let (Some(ns), Some(name), Some(rv)) = (
            mcp.metadata.namespace.as_deref(),
            mcp.metadata.name.as_deref(),
            mcp.metadata.resource_version.as_deref(),
        ) else {
            return false;
        };
        self.written
            .lock()
            .is_ok_and(|w| w.get(&format!("{ns}/{name}")).is_some_and(|x| x.echo(rv)))
    }

    /// Forgets every control plane that a relist no longer shows (`listed`: `namespace/name`).
    /// One deleted while the watch was down has no Delete event; without a finalizer (deleted
    /// before we added ours, or the source copy of a `clusterctl move`) nothing else would stop
    /// its workload cluster watches or drop its state and metric series until a restart.
    pub fn gone_unlisted(&self, listed: &std::collections::HashSet<String>) {
        let mut known: std::collections::BTreeSet<String> = self
            .workloads
            .owners()
            .iter()
            .map(|o| format!("{}/{}", o.namespace.as_deref().unwrap_or_default(), o.name))
            .collect();
        if let Ok(m) = self.expectations.lock() {
            known.extend(m.keys().cloned());
        }
        if let Ok(m) = self.sweeps.lock() {
            known.extend(m.keys().cloned());
        }
        if let Ok(m) = self.written.lock() {
            known.extend(m.keys().cloned());
        }
        // Triggers noted for control planes the relist does not show (gone, or named by a
        // Cluster before they exist) are dropped silently.
        for key in self.wakes.keys().into_iter().filter(|k| !listed.contains(k)) {
            self.wakes.forget(&key);
        }
        for (ns, name) in unlisted(&known, listed) {
            let key = format!("{ns}/{name}");
            info!(control_plane = %key, "control plane gone while the watch was down; forgetting it");
            self.forget(&key);
            self.metrics.forget(ns, name);
            self.workloads.remove_owned_by(&ObjectRef::new(name).within(ns));
        }
    }

    /// The Cluster of a control plane: its owner, else a Cluster whose `controlPlaneRef` names it.
    pub fn cluster_of(&self, mcp: &MicroK8sControlPlane) -> Option<Arc<Cluster>> {
        let ns = mcp.metadata.namespace.as_deref().unwrap_or_default();
        let name = mcp.metadata.name.as_deref().unwrap_or_default();
        let owner = mcp
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Cluster" && o.api_version.starts_with("cluster.x-k8s.io/"));
        if let Some(o) = owner
            && let Some(c) = self.cluster(ns, &o.name)
        {
            return Some(c);
        }
        self.clusters.find(|c| {
            c.metadata.namespace.as_deref() == Some(ns)
                && c.spec
                    .control_plane_ref
                    .as_ref()
                    .is_some_and(|r| refers_to_control_plane(r) && r.name == name)
        })
    }
}

/// The `(namespace, name)` of the control planes `known` (by `namespace/name`) that are not
/// `listed`.
fn unlisted<'k>(
    known: &'k std::collections::BTreeSet<String>,
    listed: &std::collections::HashSet<String>,
) -> Vec<(&'k str, &'k str)> {
    known
        .iter()
        .filter(|k| !listed.contains(*k))
        .filter_map(|k| k.split_once('/'))
        .collect()
}

/// Whether `obj` shows every value of the merge patch `patch` (`null`: absent).
pub fn contains(obj: &serde_json::Value, patch: &serde_json::Value) -> bool {
    match patch {
        serde_json::Value::Object(p) => p.iter().all(|(k, v)| {
            if v.is_null() {
                obj.get(k).is_none_or(serde_json::Value::is_null)
            } else {
                obj.get(k).is_some_and(|o| contains(o, v))
            }
        }),
        _ => obj == patch,
    }
}

/// A hash of what a control plane reads from its Cluster, for the Cluster watch: its identity
/// (owner references name it), whether it is being deleted, its spec (control plane
/// reference, endpoint, pause), whether its infrastructure is provisioned and its failure
/// domains. CAPI writes a Cluster some
/// twenty times while it comes up (conditions, phase, replica counters, its finalizer, the
/// initialization this control plane reported itself); none of the rest changes a decision.
pub fn cluster_fingerprint(c: &Cluster) -> Option<u64> {
    use mk8s_api::capi::ClusterExt;
    let meta = &c.metadata;
    mk8s_api::capi::hash_json(&(
        (&meta.name, &meta.namespace, &meta.uid, &c.types),
        // A deleting control plane's waiting message says whether its Cluster is deleting.
        &meta.deletion_timestamp,
        &c.spec,
        c.infrastructure_ready(),
        c.status.as_ref().map(|s| &s.failure_domains),
    ))
}

/// Whether a control plane reads a Secret (`by_name`: the cluster it is the CA, kubeconfig or
/// auth token Secret of, by its name), so that its changes wake the control plane: those
/// three, and any it owns. The bootstrap data and join token Secrets carry the cluster-name
/// label too, and woke the control plane for nothing.
pub fn secret_read_by_control_plane(meta: &kube::core::ObjectMeta, by_name: Option<&str>) -> bool {
    by_name.is_some()
        || meta
            .owner_references
            .iter()
            .flatten()
            .any(names::is_control_plane_owner)
}

/// A hash of what a control plane reads from a MicroK8sConfig, for the config watch: its
/// metadata (ownership, labels and annotations it propagates, deletion) and spec (whether the
/// machine is up to date), not its status, which the bootstrap provider writes two or three
/// times per machine.
pub fn config_fingerprint(c: &MicroK8sConfig) -> Option<u64> {
    let mut meta = c.metadata.clone();
    meta.resource_version = None;
    meta.managed_fields = None;
    mk8s_api::capi::hash_json(&(meta, &c.spec))
}

fn refers_to_control_plane(r: &ObjRef) -> bool {
    r.is(names::GROUP, names::KIND)
}

fn mcp_ref(name: &str, ns: &str) -> ObjectRef<MicroK8sControlPlane> {
    ObjectRef::new(name).within(ns)
}

/// The control plane of a Cluster.
fn cluster_to_mcp(c: &Cluster) -> Option<ObjectRef<MicroK8sControlPlane>> {
    let r = c
        .spec
        .control_plane_ref
        .as_ref()
        .filter(|r| refers_to_control_plane(r))?;
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| c.metadata.namespace.clone())?;
    Some(mcp_ref(&r.name, &ns))
}

/// The control plane an object belongs to: its owner reference to one, else the control plane
/// of its Cluster — named by its cluster-name label, else by `cluster`.
fn owner_or_cluster(
    meta: &kube::core::ObjectMeta,
    cluster: Option<&str>,
    clusters: &Store<Cluster>,
    cluster_ar: &ApiResource,
) -> Option<ObjectRef<MicroK8sControlPlane>> {
    let ns = meta.namespace.as_deref()?;
    if let Some(o) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| names::is_control_plane_owner(o))
    {
        return Some(mcp_ref(&o.name, ns));
    }
    let cluster = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER_NAME))
        .map(String::as_str)
        .or(cluster)?;
    clusters
        .get(&ObjectRef::new_with(cluster, cluster_ar.clone()).within(ns))
        .and_then(|c| cluster_to_mcp(&c))
}

/// Watches `api` into `writer` and sends the control plane `map` gives for each object
/// changed, as a trigger from `name`; with `fingerprint`, only when the object's fingerprint
/// changed.
fn spawn_reflector<K, F>(
    name: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
    map: F,
    fingerprint: Option<fn(&K) -> Option<u64>>,
    tx: Triggers<MicroK8sControlPlane>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    F: Fn(&K) -> Option<ObjectRef<MicroK8sControlPlane>> + Send + 'static,
{
    tokio::spawn(async move {
        let events = watcher(api, cfg)
            .backoff(WatchBackoff::management())
            .modify(|o: &mut K| crate::machines::slim_metadata(o.meta_mut()))
            .reflect(writer);
        let mut s = match fingerprint {
            Some(f) => mk8s_runtime::changed::changed_objects(events, f).boxed(),
            None => events.touched_objects().boxed(),
        };
        while let Some(ev) = s.next().await {
            match ev {
                Ok(obj) => {
                    if let Some(r) = map(&obj) {
                        tx.send(r, name);
                    }
                }
                Err(e) => warn!(watch = name, error = %e, "watch failed; retrying"),
            }
        }
    })
}

async fn wait_ready<K>(store: &Store<K>, what: &str, rt: &Runtime) -> Result<bool, RuntimeError>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tokio::select! {
        r = store.wait_until_ready() => r.map(|_| true).map_err(|e| RuntimeError::Controller(format!("{what} store: {e}"))),
        _ = rt.shutdown.cancelled() => Ok(false),
    }
}

/// Runs the control plane controller until `rt.shutdown` is cancelled (graceful: reconciles in
/// flight finish).
pub async fn run_controller(rt: Runtime, cfg: ControllerConfig) -> Result<(), RuntimeError> {
    let (tx, rx) = unbounded::<ObjectRef<MicroK8sControlPlane>>();
    let wakes = Arc::new(Wakes::default());
    let tx = Triggers::new(tx, wakes.clone());
    let client = rt.client.clone();
    let core = rt.core_version;

    let cluster_ar = core.cluster();
    let cluster_writer = reflector::store::Writer::<Cluster>::new(cluster_ar.clone());
    let clusters = cluster_writer.as_reader();
    let machine_ar = core.machine();
    let machine_writer = reflector::store::Writer::<CpMachine>::new(machine_ar.clone());
    let machines = machine_writer.as_reader();
    let config_writer = reflector::store::Writer::<MicroK8sConfig>::default();
    let configs = config_writer.as_reader();

    let mut tasks = vec![];
    tasks.push(spawn_reflector(
        "clusters",
        rt.api_with::<Cluster>(&cluster_ar),
        rt.watcher_config(),
        cluster_writer,
        cluster_to_mcp,
        Some(cluster_fingerprint),
        tx.clone(),
    ));
    {
        let clusters = clusters.clone();
        let cluster_ar = cluster_ar.clone();
        tasks.push(spawn_reflector(
            "machines",
            rt.api_with::<CpMachine>(&machine_ar),
            watcher::Config::default().any_semantic(),
            machine_writer,
            move |m: &CpMachine| {
                owner_or_cluster(
                    &m.metadata,
                    Some(m.spec.base.cluster_name.as_str()),
                    &clusters,
                    &cluster_ar,
                )
            },
            // Workers' condition and phase rewrites change nothing a control plane decides.
            Some(crate::machines::fingerprint),
            tx.clone(),
        ));
    }
    tasks.push(spawn_reflector(
        "microk8sconfigs",
        rt.api::<MicroK8sConfig>(),
        watcher::Config::default().any_semantic(),
        config_writer,
        |c: &MicroK8sConfig| {
            let ns = c.metadata.namespace.as_deref()?;
            c.metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| names::is_control_plane_owner(o))
                .map(|o| mcp_ref(&o.name, ns))
        },
        // The bootstrap provider's status writes change nothing a control plane reads.
        Some(config_fingerprint),
        tx.clone(),
    ));
    // Secrets: metadata only, all of them (the cache must know which do not exist); feeds the
    // Secret cache. Unlabelled ones reach their control plane by name (a user-made CA).
    let (secrets, secret_feed) = secret_cache(client.clone());
    {
        let clusters = clusters.clone();
        let cluster_ar = cluster_ar.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(secret_feed.run(rt.api(), move |obj| {
            let by_name = obj
                .metadata
                .name
                .as_deref()
                .and_then(mk8s_api::consts::cluster_of_named_secret);
            if !secret_read_by_control_plane(&obj.metadata, by_name) {
                return;
            }
            if let Some(r) = owner_or_cluster(&obj.metadata, by_name, &clusters, &cluster_ar) {
                tx.send(r, "secrets");
            }
        })));
    }

    let stop = |tasks: Vec<tokio::task::JoinHandle<()>>| {
        for t in tasks {
            t.abort();
        }
    };
    for (ready, what) in [
        (wait_ready(&clusters, "Cluster", &rt).await, "clusters"),
        (wait_ready(&machines, "Machine", &rt).await, "machines"),
        (wait_ready(&configs, "MicroK8sConfig", &rt).await, "configs"),
    ] {
        match ready {
            Ok(true) => debug!(store = what, "synced"),
            Ok(false) => {
                stop(tasks);
                return Ok(());
            }
            Err(e) => {
                stop(tasks);
                return Err(e);
            }
        }
    }
    info!(
        core = core.as_str(),
        "caches synced; starting the MicroK8sControlPlane controller"
    );

    let metrics = CpMetrics::register(&rt.metrics);
    let ctx = Arc::new(Context {
        events: Events::new(Recorder::new(client.clone(), rt.reporter())),
        workloads: Workloads::new(tx.clone(), cfg.workload),
        cfg,
        clusters,
        cluster_ar: cluster_ar.clone(),
        machine_ar: machine_ar.clone(),
        machines,
        configs,
        backoff: Backoff::default(),
        kinds: Kinds::default(),
        secrets,
        infra: InfraMeta::new(client.clone(), &rt.flags.namespace),
        metrics,
        wakes: wakes.clone(),
        expectations: Mutex::new(HashMap::new()),
        sweeps: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        owned_templates: Mutex::new(Default::default()),
        annotated: Mutex::new(Default::default()),
        rt: rt.clone(),
    });

    let shutdown = rt.shutdown.clone();
    let mcp_api: Api<MicroK8sControlPlane> = rt.api();
    let mcp_writer = reflector::store::Writer::<MicroK8sControlPlane>::default();
    let mcp_store = mcp_writer.as_reader();
    let mcp_stream = watcher(mcp_api, rt.watcher_config())
        .backoff(WatchBackoff::management())
        .modify(|o: &mut MicroK8sControlPlane| crate::machines::slim_metadata(o.meta_mut()))
        .reflect(mcp_writer)
        .inspect_ok({
            let ctx = ctx.clone();
            let store = mcp_store.clone();
            move |ev| match ev {
                watcher::Event::Delete(mcp) => ctx.gone(mcp),
                // The store holds the complete relist by now (it is reflected first).
                watcher::Event::InitDone => ctx.gone_unlisted(
                    &store
                        .state()
                        .iter()
                        .map(|m| {
                            format!(
                                "{}/{}",
                                m.metadata.namespace.as_deref().unwrap_or_default(),
                                m.metadata.name.as_deref().unwrap_or_default()
                            )
                        })
                        .collect(),
                ),
                _ => {}
            }
        })
        // Our own status write's echo wakes nothing; a relist's objects all pass (a relist
        // merges versions: the one our write produced may carry changes we never saw).
        .try_filter({
            let ctx = ctx.clone();
            move |ev| std::future::ready(!matches!(ev, watcher::Event::Apply(mcp) if ctx.own_status_echo(mcp)))
        })
        .inspect_ok(move |ev| {
            if let watcher::Event::Apply(mcp) | watcher::Event::InitApply(mcp) = ev {
                wakes.trigger(&mk8s_runtime::wakes::key_of(&ObjectRef::from_obj(mcp)), "controlplane");
            }
        })
        .applied_objects();
    Controller::for_stream(mcp_stream, mcp_store)
        .with_config(controller::Config::default().concurrency(rt.flags.concurrency))
        .reconcile_on(rx)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(crate::reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    controller::Error::ObjectNotFound(_) => {}
                    e => debug!(error = %e, "controller event"),
                }
            }
        })
        .await;
    ctx.workloads.stop_all();
    ctx.infra.stop_all();
    stop(tasks);
    info!("MicroK8sControlPlane controller stopped");
    Ok(())
}

/// Requeue after a failed reconcile: soon after a write conflict, else with per-object
/// exponential backoff.
pub fn error_policy(mcp: Arc<MicroK8sControlPlane>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        mcp.meta().namespace.as_deref().unwrap_or_default(),
        mcp.meta().name.as_deref().unwrap_or_default()
    );
    match err {
        Error::Conflict(_) => {
            ctx.wakes.timer(&key, "timer_conflict_retry");
            debug!(control_plane = %key, error = %err, "write conflict; retrying soon");
            Action::requeue(Duration::from_secs(1))
        }
        _ => {
            ctx.wakes.timer(&key, "timer_error_retry");
            let wait = ctx.backoff.fail(&key);
            warn!(control_plane = %key, error = %err, retry_in = ?wait, "reconcile failed");
            Action::requeue(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Expect, Written, contains, effective_status, push_expectation, record_fresh, shows, still_fresh, unlisted,
    };

    #[test]
    fn cluster_fingerprints_keep_only_what_a_control_plane_reads() {
        let c: mk8s_api::capi::Cluster = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
            "spec": {"controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                         "kind": "MicroK8sControlPlane", "name": "cp"}},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let fp = super::cluster_fingerprint(&c);
        assert!(fp.is_some());
        type Edit = fn(&mut mk8s_api::capi::Cluster);
        let noise: [Edit; 5] = [
            |c| c.metadata.resource_version = Some("2".into()),
            |c| c.metadata.finalizers = Some(vec!["cluster.cluster.x-k8s.io".into()]),
            |c| c.status.as_mut().unwrap().phase = Some("Provisioned".into()),
            |c| {
                c.status.as_mut().unwrap().initialization = Some(mk8s_api::capi::ClusterInitialization {
                    control_plane_initialized: Some(true),
                    ..Default::default()
                })
            },
            |c| c.status.as_mut().unwrap().control_plane_ready = Some(true),
        ];
        for edit in noise {
            let mut x = c.clone();
            edit(&mut x);
            assert_eq!(super::cluster_fingerprint(&x), fp, "{x:?}");
        }
        let read: [Edit; 5] = [
            |c| c.spec.paused = Some(true),
            |c| {
                c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            },
            |c| {
                c.spec.control_plane_endpoint = Some(mk8s_api::capi::ApiEndpoint {
                    host: "10.0.0.1".into(),
                    port: 6443,
                })
            },
            |c| {
                c.status.as_mut().unwrap().initialization = Some(mk8s_api::capi::ClusterInitialization {
                    infrastructure_provisioned: Some(true),
                    ..Default::default()
                })
            },
            |c| c.status.as_mut().unwrap().infrastructure_ready = Some(true),
        ];
        for edit in read {
            let mut x = c.clone();
            edit(&mut x);
            assert_ne!(super::cluster_fingerprint(&x), fp, "{x:?}");
        }
    }

    #[test]
    fn only_the_secrets_a_control_plane_reads_wake_it() {
        use mk8s_api::consts::cluster_of_named_secret as by_name;
        let labelled: kube::core::ObjectMeta = serde_json::from_value(json!({
            "labels": {"cluster.x-k8s.io/cluster-name": "c1"}
        }))
        .unwrap();
        for read in ["c1-ca", "c1-kubeconfig", "c1-capi-auth-token"] {
            assert!(super::secret_read_by_control_plane(&labelled, by_name(read)), "{read}");
        }
        for unread in ["c1-md-0-abcde", "c1-control-plane-xyz12", "c1-jointoken"] {
            assert!(
                !super::secret_read_by_control_plane(&labelled, by_name(unread)),
                "{unread}"
            );
        }
        let owned = kube::core::ObjectMeta {
            owner_references: Some(vec![crate::machines::control_plane_owner("cp", "u", true, true)]),
            ..Default::default()
        };
        assert!(super::secret_read_by_control_plane(&owned, None));
    }

    #[test]
    fn config_fingerprints_ignore_the_status() {
        let c: mk8s_api::MicroK8sConfig = serde_json::from_value(json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
            "spec": {"initConfiguration": {"joinTokenTTLInSecs": 900}}
        }))
        .unwrap();
        let fp = super::config_fingerprint(&c);
        assert!(fp.is_some());
        let mut noise = c.clone();
        noise.metadata.resource_version = Some("2".into());
        noise.status = Some(mk8s_api::MicroK8sConfigStatus {
            ready: true,
            ..Default::default()
        });
        assert_eq!(super::config_fingerprint(&noise), fp);
        type Edit = fn(&mut mk8s_api::MicroK8sConfig);
        let read: [Edit; 3] = [
            |c| {
                c.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert("a".into(), "b".into());
            },
            |c| {
                c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            },
            |c| c.spec.init_configuration = None,
        ];
        for edit in read {
            let mut x = c.clone();
            edit(&mut x);
            assert_ne!(super::config_fingerprint(&x), fp, "{x:?}");
        }
    }

    #[test]
    fn a_relist_without_a_known_control_plane_names_it_gone() {
        let known = ["a/cp", "a/other", "b/cp"].map(String::from).into_iter().collect();
        let listed = ["a/cp", "c/new"].map(String::from).into_iter().collect();
        assert_eq!(unlisted(&known, &listed), [("a", "other"), ("b", "cp")]);
        assert!(unlisted(&known, &known.iter().cloned().collect()).is_empty());
    }
    use mk8s_api::MicroK8sControlPlaneStatus;
    use serde_json::json;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    #[test]
    fn a_later_patch_of_a_machine_supersedes_the_earlier_one() {
        let mut list = vec![];
        push_expectation(&mut list, Expect::Created("m1".into()));
        push_expectation(&mut list, Expect::Patched("m2".into(), json!({"a": 1})));
        push_expectation(&mut list, Expect::Patched("m1".into(), json!({"b": 1})));
        push_expectation(&mut list, Expect::Patched("m2".into(), json!({"a": 2})));
        assert_eq!(
            list,
            [
                Expect::Created("m1".into()),
                Expect::Patched("m1".into(), json!({"b": 1})),
                Expect::Patched("m2".into(), json!({"a": 2})),
            ]
        );
    }

    #[test]
    fn the_api_servers_copy_tells_a_stalled_store_from_an_undone_write() {
        let m = json!({"metadata": {"name": "m", "annotations": {"x": "1"}}});
        let deleting = json!({"metadata": {"name": "m", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert!(shows(&Expect::Created("m".into()), Some(&m)));
        assert!(!shows(&Expect::Created("m".into()), None));
        assert!(shows(&Expect::Gone("m".into()), None));
        assert!(shows(&Expect::Gone("m".into()), Some(&deleting)));
        assert!(!shows(&Expect::Gone("m".into()), Some(&m)));
        let patched =
            |v: serde_json::Value| Expect::Patched("m".into(), json!({"metadata": {"annotations": {"x": v}}}));
        assert!(shows(&patched(json!("1")), Some(&m)));
        assert!(!shows(&patched(json!("2")), Some(&m)), "undone by someone else");
        assert!(!shows(&patched(json!("1")), None));
    }

    #[test]
    fn a_template_owner_record_expires_and_old_records_are_dropped() {
        let ttl = Duration::from_secs(600);
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        assert!(!still_fresh(&seen, "a", t0, ttl), "never seen");
        record_fresh(&mut seen, "a".into(), t0, ttl);
        assert!(still_fresh(&seen, "a", t0 + Duration::from_secs(599), ttl));
        assert!(
            !still_fresh(&seen, "a", t0 + ttl, ttl),
            "looked at again once the record is old"
        );
        record_fresh(&mut seen, "b".into(), t0 + ttl, ttl);
        assert_eq!(seen.len(), 1, "the expired record of a went with the next write");
        assert!(still_fresh(&seen, "b", t0 + ttl, ttl));
    }

    #[test]
    fn our_last_write_stands_while_the_cache_shows_what_it_was_computed_from() {
        let stored = MicroK8sControlPlaneStatus::default();
        let ours = MicroK8sControlPlaneStatus {
            initialized: true,
            ..Default::default()
        };
        let w = Written::next(None, "10".into(), Some("11".into()), true, ours.clone());
        assert_eq!(
            effective_status(Some("10"), Some(&stored), Some(&w)),
            Some(ours),
            "cache lags our write"
        );
        assert_eq!(
            effective_status(Some("11"), Some(&stored), Some(&w)),
            Some(stored.clone()),
            "a newer version (ours arrived, or another writer's) is taken as is"
        );
        assert_eq!(effective_status(Some("10"), Some(&stored), None), Some(stored.clone()));
        assert_eq!(effective_status(None, None, Some(&w)), None);
        // Only the version our write produced is its echo (no wake); the one it was computed
        // from and any later one (someone else's write, a spec change) are not.
        assert!(w.echo("11"));
        assert!(!w.echo("10"));
        assert!(!w.echo("12"));
        assert!(!Written::next(None, "10".into(), None, true, MicroK8sControlPlaneStatus::default()).echo(""));
        // A write whose answer shows more than our status change is no echo.
        assert!(
            !Written::next(
                None,
                "10".into(),
                Some("11".into()),
                false,
                MicroK8sControlPlaneStatus::default()
            )
            .echo("11")
        );
    }

    #[test]
    fn only_a_status_change_makes_an_echo() {
        let before: kube::core::ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "cp", "generation": 2, "resourceVersion": "10",
            "labels": {"a": "b"}, "annotations": {"x": "y"}, "finalizers": ["f"]
        }))
        .unwrap();
        let mut after = before.clone();
        after.resource_version = Some("11".into());
        after
            .annotations
            .as_mut()
            .unwrap()
            .insert(mk8s_runtime::slim::ANNOTATION_LAST_APPLIED.into(), "{}".into());
        assert!(super::same_but_status(&before, &after));
        let changes: [fn(&mut kube::core::ObjectMeta); 5] = [
            |m| m.generation = Some(3),
            |m| {
                m.annotations.as_mut().unwrap().insert("paused".into(), String::new());
            },
            |m| m.labels = None,
            |m| m.finalizers = None,
            |m| {
                m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            },
        ];
        for change in changes {
            let mut other = after.clone();
            change(&mut other);
            assert!(!super::same_but_status(&before, &other), "{other:?}");
        }
    }

    #[test]
    fn a_status_write_after_our_own_metadata_patch_supersedes_its_version() {
        let ours = MicroK8sControlPlaneStatus {
            initialized: true,
            ..Default::default()
        };
        // Read at 10; our annotation patch produced 11; the status write 12.
        let mut w = Written::next(None, "10".into(), Some("12".into()), true, ours.clone());
        w.also_supersedes("11".into());
        w.also_supersedes("11".into());
        assert_eq!(w.superseded, ["10", "11"]);
        let stale = MicroK8sControlPlaneStatus::default();
        assert_eq!(
            effective_status(Some("11"), Some(&stale), Some(&w)),
            Some(ours.clone()),
            "the annotation's watch event still shows the old status"
        );
        assert!(w.echo("12"));
    }

    #[test]
    fn writes_faster_than_the_watch_supersede_each_other() {
        let status = |replicas: i32| MicroK8sControlPlaneStatus {
            replicas: Some(replicas),
            ..Default::default()
        };
        // Two writes computed from version 10 (the watch had not shown the first): 10 -> 11 -> 12.
        let first = Written::next(None, "10".into(), Some("11".into()), true, status(1));
        let second = Written::next(Some(&first), "10".into(), Some("12".into()), true, status(2));
        // The watch now shows 11, the first write's result: the second write is still the truth.
        assert_eq!(
            effective_status(Some("11"), Some(&status(1)), Some(&second)),
            Some(status(2))
        );
        assert_eq!(
            effective_status(Some("10"), Some(&status(0)), Some(&second)),
            Some(status(2))
        );
        assert_eq!(
            effective_status(Some("12"), Some(&status(2)), Some(&second)),
            Some(status(2))
        );
        // Computed from our previous write's result: the chain goes on.
        let third = Written::next(Some(&second), "12".into(), Some("13".into()), true, status(3));
        assert_eq!(third.superseded, ["12", "10", "11"]);
        // Every version the chain's status-only writes produced is our echo.
        assert!(third.echo("13") && third.echo("12") && third.echo("11"));
        assert!(!third.echo("10"), "what the chain was computed from is someone else's");
        assert_eq!(
            effective_status(Some("11"), Some(&status(1)), Some(&third)),
            Some(status(3))
        );
        // Computed from someone else's version: the chain starts again.
        let foreign = Written::next(Some(&third), "20".into(), Some("21".into()), true, status(4));
        assert_eq!(foreign.superseded, ["20"]);
        assert!(foreign.echo("21") && !foreign.echo("13"));
        // A write that changed more than the status is no echo, nor are the versions after it.
        let mixed = Written::next(Some(&foreign), "21".into(), Some("22".into()), false, status(5));
        assert!(!mixed.echo("22") && mixed.echo("21"));
        assert_eq!(
            effective_status(Some("13"), Some(&status(3)), Some(&foreign)),
            Some(status(3))
        );
        // Bounded.
        let mut w = Written::next(None, "0".into(), Some("1".into()), true, status(0));
        for i in 1..50 {
            w = Written::next(Some(&w), i.to_string(), Some((i + 1).to_string()), true, status(i));
        }
        assert_eq!(w.superseded.len(), Written::KEPT);
        assert_eq!(w.superseded[0], "49");
    }

    #[test]
    fn merge_patch_containment() {
        let obj = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"version": "v1"}});
        assert!(contains(
            &obj,
            &json!({"metadata": {"annotations": {"a": "1", "c": null}}})
        ));
        assert!(!contains(&obj, &json!({"metadata": {"annotations": {"b": null}}})));
        assert!(!contains(&obj, &json!({"spec": {"version": "v2"}})));
        assert!(contains(&obj, &json!({"spec": {"version": "v1"}})));
    }
}
