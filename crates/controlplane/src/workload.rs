//! Workload clusters: one cached client per cluster (with request timeouts), a watch of its
//! Nodes and of this provider's node action pods, and the triggers that wake the control
//! plane when something relevant changes — a Node appearing reconciles its control plane at
//! once, without polling. An unreachable workload cluster shows in [`WatchState`] and
//! becomes a condition; no reconcile ever waits on it beyond a request timeout.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mk8s_api::MicroK8sControlPlane;
use mk8s_runtime::backoff::WatchBackoff;
use mk8s_runtime::client::{WorkloadTimeouts, workload_client};
use mk8s_runtime::wakes::Triggers;
use tracing::{debug, info, warn};

use crate::error::{Error, Result, is_already_exists, is_not_found};
use crate::model::{NodeView, Reachability};
use crate::names;

/// Watch progress and errors of one workload cluster.
#[derive(Clone, Debug, Default)]
pub struct WatchState {
    /// The first list of Nodes completed.
    pub nodes_synced: bool,
    /// The first list of pods completed.
    pub pods_synced: bool,
    /// The Node watch's last error, cleared by its next successful event or once no error
    /// has recurred for a while (a re-watch that succeeds yields no event).
    pub node_error: Option<String>,
    /// The pod watch's last error, likewise.
    pub pod_error: Option<String>,
}

impl WatchState {
    /// The error of either watch, if one fails.
    pub fn error(&self) -> Option<&String> {
        self.node_error.as_ref().or(self.pod_error.as_ref())
    }

    /// Reachability as conditions and gates see it.
    pub fn reachability(&self) -> Reachability {
        match (self.error(), self.nodes_synced) {
            (Some(e), _) => Reachability::Unreachable(e.clone()),
            (None, false) => Reachability::Connecting,
            (None, true) => Reachability::Reachable,
        }
    }
}

/// Whether a change of reachability wakes the control plane, and as what: when the watches
/// start failing, and when they work again after failing. A recovery before the first Node
/// list completes (`Connecting`) does not — the list's end wakes it — nor does a new error
/// message, nor one watch recovering while the other still fails.
pub fn reachability_wake(before: &Reachability, after: &Reachability) -> Option<&'static str> {
    use Reachability::{Reachable, Unreachable};
    match (before, after) {
        (Unreachable(_), Unreachable(_)) => None,
        (_, Unreachable(_)) => Some("workload_failed"),
        (Unreachable(_), Reachable) => Some("workload_recovered"),
        _ => None,
    }
}

/// A workload cluster's client and caches.
#[derive(Clone)]
pub struct Workload {
    /// `<namespace>/<cluster>`.
    pub key: String,
    /// Client with request timeouts.
    pub client: Client,
    /// Nodes (pruned of images and managed fields).
    pub nodes: Store<Node>,
    /// Node action pods in [`names::ACTION_NAMESPACE`].
    pub pods: Store<Pod>,
    state: Arc<Mutex<WatchState>>,
}

impl Workload {
    /// Watch state now.
    pub fn state(&self) -> WatchState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Nodes, reduced.
    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes.state().iter().map(|n| node_view(n)).collect()
    }

    /// A node action pod by name.
    pub fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(names::ACTION_NAMESPACE))
    }

    /// `GET /readyz` of the workload API server (bounded by the client's timeouts).
    pub async fn api_ready(&self) -> bool {
        let req = match http::Request::get("/readyz").body(Vec::new()) {
            Ok(r) => r,
            Err(_) => return false,
        };
        match self.client.request_text(req).await {
            Ok(body) => body.trim() == "ok",
            Err(e) => {
                debug!(cluster = %self.key, error = %e, "workload /readyz failed");
                false
            }
        }
    }

    fn err(&self, e: kube::Error) -> Error {
        Error::workload(&self.key, e)
    }

    /// Sets `spec.providerID` on a Node.
    pub async fn set_provider_id(&self, node: &str, provider_id: &str) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"providerID": provider_id}})),
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Ensures the action namespace (privileged Pod Security level: the pods need the host
    /// network, the snapd socket and privileges) and the cluster agent token Secret.
    pub async fn ensure_action_prerequisites(&self, token: Option<&str>) -> Result<()> {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let labels = serde_json::json!({
            "pod-security.kubernetes.io/enforce": "privileged",
            names::LABEL_MANAGED_BY: names::MANAGED_BY,
        });
        match nss.get_opt(names::ACTION_NAMESPACE).await.map_err(|e| self.err(e))? {
            None => {
                let ns: Namespace = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": names::ACTION_NAMESPACE, "labels": labels}
                }))?;
                match nss.create(&post_params(), &ns).await {
                    Ok(_) => info!(cluster = %self.key, "created namespace {}", names::ACTION_NAMESPACE),
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(self.err(e)),
                }
            }
            Some(ns)
                if ns
                    .labels()
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str)
                    != Some("privileged") =>
            {
                nss.patch(
                    names::ACTION_NAMESPACE,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
                )
                .await
                .map_err(|e| self.err(e))?;
            }
            Some(_) => {}
        }
        let Some(token) = token else { return Ok(()) };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), names::ACTION_NAMESPACE);
        let current = secrets
            .get_opt(names::ACTION_TOKEN_SECRET)
            .await
            .map_err(|e| self.err(e))?;
        let same = current
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(names::ACTION_TOKEN_KEY))
            .is_some_and(|v| v.0 == token.as_bytes());
        if same {
            return Ok(());
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(names::ACTION_TOKEN_SECRET.into()),
                namespace: Some(names::ACTION_NAMESPACE.into()),
                labels: Some([(names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string())].into()),
                ..Default::default()
            },
            string_data: Some([(names::ACTION_TOKEN_KEY.to_string(), token.to_string())].into()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        if current.is_some() {
            secrets
                .replace(names::ACTION_TOKEN_SECRET, &post_params(), &secret)
                .await
                .map_err(|e| self.err(e))?;
        } else {
            match secrets.create(&post_params(), &secret).await {
                Ok(_) => {}
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Creates a node action pod; an existing pod of that name counts as created.
    pub async fn create_pod(&self, pod: &Pod) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), names::ACTION_NAMESPACE);
        match api.create(&post_params(), pod).await {
            Ok(_) => Ok(()),
            Err(e) if is_already_exists(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Deletes a node action pod (absent is fine). On a node that is not Ready no kubelet
    /// confirms the deletion, and the pod would stay terminating for as long as the node is
    /// down: it is deleted at once (a kubelet that comes back stops its container).
    pub async fn delete_pod(&self, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), names::ACTION_NAMESPACE);
        let node_down = self
            .pod(name)
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
            .is_some_and(|n| {
                self.nodes
                    .get(&ObjectRef::new(&n))
                    .is_none_or(|node| !node_view(&node).ready)
            });
        let dp = if node_down {
            DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::background()
            }
        } else {
            DeleteParams::background()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// The status of a Node's `Ready` condition.
fn ready_status(n: &Node) -> Option<&str> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// Reduces a Node to what decisions use.
pub fn node_view(n: &Node) -> NodeView {
    let labels = n.labels();
    let status = n.status.as_ref();
    NodeView {
        name: n.name_any(),
        ips: status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| crate::model::node_ips(a.iter().map(|a| (a.type_.as_str(), a.address.as_str()))))
            .unwrap_or_default(),
        provider_id: n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .filter(|p| !p.is_empty()),
        ready: ready_status(n) == Some("True"),
        reporting: matches!(ready_status(n), Some("True" | "False")),
        kubelet_version: status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .filter(|v| !v.is_empty()),
        accepts_joins: labels
            .get(mk8s_api::consts::NODE_LABEL_JOINS_ACCEPTED)
            .map(String::as_str)
            == Some("true"),
        microk8s_control_plane: labels.contains_key(mk8s_api::consts::NODE_LABEL_MICROK8S_CONTROL_PLANE),
    }
}

/// Most addresses of a Node kept.
const MAX_NODE_ADDRESSES: usize = 16;

/// Keeps of a Node only what [`node_view`] reads. A workload cluster's admin controls its
/// Nodes — how many, and how large (annotations, labels, images, capacity) — and one manager
/// serves every cluster: what it caches per Node must not grow with what they put there.
fn slim_node(n: &mut Node) {
    let keep = [
        mk8s_api::consts::NODE_LABEL_JOINS_ACCEPTED,
        mk8s_api::consts::NODE_LABEL_MICROK8S_CONTROL_PLANE,
    ];
    let meta = std::mem::take(&mut n.metadata);
    n.metadata = ObjectMeta {
        name: meta.name,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels.map(|mut l| {
            l.retain(|k, _| keep.contains(&k.as_str()));
            l
        }),
        ..Default::default()
    };
    n.spec = n.spec.take().map(|s| NodeSpec {
        provider_id: s.provider_id,
        ..Default::default()
    });
    n.status = n.status.take().map(|s| NodeStatus {
        // Only the kinds `node_ips` reads, internal ones first, so the cap drops none it uses.
        addresses: s.addresses.map(|a| {
            let (mut kept, external): (Vec<_>, Vec<_>) = a
                .into_iter()
                .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
                .partition(|a| a.type_ == "InternalIP");
            kept.extend(external);
            kept.truncate(MAX_NODE_ADDRESSES);
            kept
        }),
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == "Ready")
                .take(1)
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..Default::default()
                })
                .collect()
        }),
        node_info: s.node_info.map(|i| NodeSystemInfo {
            kubelet_version: i.kubelet_version,
            ..Default::default()
        }),
        ..Default::default()
    });
}

fn fingerprint<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn node_fingerprint(n: &Node) -> u64 {
    let v = node_view(n);
    fingerprint(&(
        v.ips,
        v.provider_id,
        v.ready,
        v.reporting,
        v.kubelet_version,
        v.accepts_joins,
        v.microk8s_control_plane,
    ))
}

fn pod_fingerprint(p: &Pod) -> u64 {
    fingerprint(&(
        p.status.as_ref().and_then(|s| s.phase.clone()),
        p.metadata.deletion_timestamp.is_some(),
    ))
}

struct Entry {
    fingerprint: u64,
    /// The control plane the watch wakes.
    owner: ObjectRef<MicroK8sControlPlane>,
    workload: Workload,
    task: tokio::task::JoinHandle<()>,
}

/// The workload clusters this manager watches, by `<namespace>/<cluster>`.
pub struct Workloads {
    entries: Mutex<HashMap<String, Entry>>,
    triggers: Triggers<MicroK8sControlPlane>,
    timeouts: WorkloadTimeouts,
}

impl Workloads {
    /// An empty set; watch events of every cluster are sent to `triggers`.
    pub fn new(triggers: Triggers<MicroK8sControlPlane>, timeouts: WorkloadTimeouts) -> Self {
        Workloads {
            entries: Mutex::new(HashMap::new()),
            triggers,
            timeouts,
        }
    }

    /// The workload of a cluster, started (or restarted when its kubeconfig changed).
    pub async fn ensure(&self, key: &str, mcp: ObjectRef<MicroK8sControlPlane>, kubeconfig: &str) -> Result<Workload> {
        let fp = fingerprint(&kubeconfig);
        if let Ok(entries) = self.entries.lock()
            && let Some(e) = entries.get(key)
            && e.fingerprint == fp
            && e.owner == mcp
            && !e.task.is_finished()
        {
            return Ok(e.workload.clone());
        }
        let client = workload_client(kubeconfig, self.timeouts).await?;
        let (nodes, node_writer) = reflector::store::<Node>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let workload = Workload {
            key: key.to_string(),
            client: client.clone(),
            nodes,
            pods,
            state: Arc::new(Mutex::new(WatchState::default())),
        };
        // The server ends each watch before the client's read timeout, so an idle watch is
        // renewed rather than failed.
        let watch_secs = u32::try_from(self.timeouts.read.as_secs().saturating_sub(5).max(5)).unwrap_or(25);
        let task = tokio::spawn(watch(
            workload.clone(),
            node_writer,
            pod_writer,
            watch_secs,
            mcp.clone(),
            self.triggers.clone(),
        ));
        info!(cluster = %key, "watching the workload cluster");
        if let Ok(mut entries) = self.entries.lock()
            && let Some(old) = entries.insert(
                key.to_string(),
                Entry {
                    fingerprint: fp,
                    owner: mcp,
                    workload: workload.clone(),
                    task,
                },
            )
        {
            old.task.abort();
        }
        Ok(workload)
    }

    /// The workload of a cluster, if watched.
    pub fn get(&self, key: &str) -> Option<Workload> {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(key).map(|e| e.workload.clone()))
    }

    /// Stops watching the clusters of a control plane that is gone.
    pub fn remove_owned_by(&self, mcp: &ObjectRef<MicroK8sControlPlane>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|key, e| {
                let keep = &e.owner != mcp;
                if !keep {
                    e.task.abort();
                    info!(cluster = %key, "stopped watching the workload cluster");
                }
                keep
            });
        }
    }

    /// The control planes whose workload clusters are watched.
    pub fn owners(&self) -> Vec<ObjectRef<MicroK8sControlPlane>> {
        self.entries
            .lock()
            .map(|e| e.values().map(|e| e.owner.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops every watch.
    pub fn stop_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            for (_, e) in entries.drain() {
                e.task.abort();
            }
        }
    }
}

/// Applies `f` to the state.
fn update(state: &Mutex<WatchState>, f: impl FnOnce(&mut WatchState)) {
    if let Ok(mut s) = state.lock() {
        f(&mut s);
    }
}

enum Ev {
    Node(Box<Result<watcher::Event<Node>, watcher::Error>>),
    Pod(Box<Result<watcher::Event<Pod>, watcher::Error>>),
}

#[allow(clippy::large_enum_variant)]
enum EvU {
    Node(Result<watcher::Event<Node>, watcher::Error>),
    Pod(Result<watcher::Event<Pod>, watcher::Error>),
}

/// Retries of a workload cluster's watches: its API server is down for minutes while the
/// first machine boots and installs MicroK8s, and once up it should be seen soon — 0.8 s
/// doubling to 5 s (kube-runtime's default would retry about every second throughout, see
/// [`WatchBackoff`]; client-go's reflector doubles to 30 s).
fn workload_backoff() -> WatchBackoff {
    WatchBackoff::new(
        Duration::from_millis(800),
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
}

/// Drops the fingerprints under `prefix` of objects a relist no longer shows: a Node or pod
/// deleted while the watch was down has no Delete event, and its entry would stay for the
/// life of the workload watch.
fn forget_unlisted(seen: &mut HashMap<String, u64>, prefix: &str, listed: impl Iterator<Item = String>) {
    let listed: std::collections::HashSet<String> = listed.collect();
    seen.retain(|key, _| key.strip_prefix(prefix).is_none_or(|name| listed.contains(name)));
}

async fn watch(
    w: Workload,
    mut node_writer: reflector::store::Writer<Node>,
    mut pod_writer: reflector::store::Writer<Pod>,
    watch_secs: u32,
    mcp: ObjectRef<MicroK8sControlPlane>,
    triggers: Triggers<MicroK8sControlPlane>,
) {
    let node_cfg = watcher::Config::default().timeout(watch_secs);
    let pod_cfg = watcher::Config::default().timeout(watch_secs).labels(&format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY
    ));
    let nodes = watcher(Api::<Node>::all(w.client.clone()), node_cfg)
        .backoff(workload_backoff())
        .modify(slim_node)
        .map(|e| Ev::Node(Box::new(e)));
    let pods = watcher(
        Api::<Pod>::namespaced(w.client.clone(), names::ACTION_NAMESPACE),
        pod_cfg,
    )
    .backoff(workload_backoff())
    .modify(|p: &mut Pod| p.managed_fields_mut().clear())
    .map(|e| Ev::Pod(Box::new(e)));
    let mut events = futures::stream::select(nodes.boxed(), pods.boxed());
    let mut seen: HashMap<String, u64> = HashMap::new();
    let wake = |source| triggers.send(mcp.clone(), source);
    // A watch that fails again is retried within the backoff's cap (5 s plus jitter), and a
    // re-watch that succeeds yields no event: an error not repeated for this long is over.
    const ERROR_OVER_AFTER: Duration = Duration::from_secs(15);
    let mut error_over_at: Option<tokio::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => ev,
                None => break,
            },
            () = tokio::time::sleep_until(error_over_at.unwrap_or_else(tokio::time::Instant::now)), if error_over_at.is_some() => {
                error_over_at = None;
                let before = w.state().reachability();
                update(&w.state, |s| {
                    s.node_error = None;
                    s.pod_error = None;
                });
                if let Some(source) = reachability_wake(&before, &w.state().reachability()) {
                    wake(source);
                }
                continue;
            }
        };
        // What wakes the control plane, if anything: the first reason found.
        let mut wake_now: Option<&'static str> = None;
        let before = w.state().reachability();
        let ev = match ev {
            Ev::Node(b) => EvU::Node(*b),
            Ev::Pod(b) => EvU::Pod(*b),
        };
        match ev {
            EvU::Node(Ok(e)) => {
                node_writer.apply_watcher_event(&e);
                update(&w.state, |s| s.node_error = None);
                match &e {
                    watcher::Event::InitDone => {
                        update(&w.state, |s| s.nodes_synced = true);
                        let live = node_writer.as_reader().state();
                        forget_unlisted(&mut seen, "node/", live.iter().map(|n| n.name_any()));
                        wake_now.get_or_insert("workload_nodes_listed");
                    }
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        let key = format!("node/{}", n.name_any());
                        let fp = node_fingerprint(n);
                        if seen.insert(key, fp) != Some(fp) && matches!(e, watcher::Event::Apply(_)) {
                            wake_now.get_or_insert("workload_nodes");
                        }
                    }
                    watcher::Event::Delete(n) => {
                        seen.remove(&format!("node/{}", n.name_any()));
                        wake_now.get_or_insert("workload_nodes");
                    }
                    watcher::Event::Init => {}
                }
            }
            EvU::Pod(Ok(e)) => {
                pod_writer.apply_watcher_event(&e);
                update(&w.state, |s| s.pod_error = None);
                match &e {
                    watcher::Event::InitDone => {
                        update(&w.state, |s| s.pods_synced = true);
                        let live = pod_writer.as_reader().state();
                        forget_unlisted(&mut seen, "pod/", live.iter().map(|p| p.name_any()));
                        wake_now.get_or_insert("workload_pods_listed");
                    }
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let key = format!("pod/{}", p.name_any());
                        let fp = pod_fingerprint(p);
                        if seen.insert(key, fp) != Some(fp) && matches!(e, watcher::Event::Apply(_)) {
                            wake_now.get_or_insert("workload_pods");
                        }
                    }
                    watcher::Event::Delete(p) => {
                        seen.remove(&format!("pod/{}", p.name_any()));
                        wake_now.get_or_insert("workload_pods");
                    }
                    watcher::Event::Init => {}
                }
            }
            EvU::Node(Err(e)) => {
                let msg = e.to_string();
                warn!(cluster = %w.key, watch = "nodes", error = %msg, "workload cluster watch failed");
                update(&w.state, |s| s.node_error = Some(msg));
                error_over_at = Some(tokio::time::Instant::now() + ERROR_OVER_AFTER);
            }
            EvU::Pod(Err(e)) => {
                let msg = e.to_string();
                warn!(cluster = %w.key, watch = "pods", error = %msg, "workload cluster watch failed");
                update(&w.state, |s| s.pod_error = Some(msg));
                error_over_at = Some(tokio::time::Instant::now() + ERROR_OVER_AFTER);
            }
        }
        // A change of reachability goes first: it is what the reconcile reports.
        if let Some(source) = reachability_wake(&before, &w.state().reachability()) {
            wake_now = Some(source);
        }
        if let Some(source) = wake_now {
            wake(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_wakes_on_failing_and_on_working_again_only() {
        let st = |node: Option<&str>, pod: Option<&str>, synced: bool| WatchState {
            nodes_synced: synced,
            pods_synced: synced,
            node_error: node.map(String::from),
            pod_error: pod.map(String::from),
        };
        let r = |s: WatchState| s.reachability();
        let wake = |a: WatchState, b: WatchState| reachability_wake(&r(a), &r(b));
        // Before the VM is up: the first failure wakes, later ones (other messages) do not.
        assert_eq!(
            wake(st(None, None, false), st(Some("refused"), None, false)),
            Some("workload_failed")
        );
        assert_eq!(
            wake(
                st(Some("refused"), None, false),
                st(Some("reset"), Some("refused"), false)
            ),
            None
        );
        // The Node watch works again while the pod watch still fails: nothing changed.
        assert_eq!(
            wake(
                st(Some("refused"), Some("refused"), false),
                st(None, Some("refused"), false)
            ),
            None
        );
        assert!(matches!(
            r(st(None, Some("refused"), true)),
            Reachability::Unreachable(_)
        ));
        // Both work, the Node list still running: its end wakes, not the recovery.
        assert_eq!(wake(st(None, Some("refused"), false), st(None, None, false)), None);
        assert_eq!(r(st(None, None, false)), Reachability::Connecting);
        // A listed workload cluster failing, then working again (a re-watch), wakes twice.
        assert_eq!(
            wake(st(None, None, true), st(None, Some("x"), true)),
            Some("workload_failed")
        );
        assert_eq!(
            wake(st(None, Some("x"), true), st(None, None, true)),
            Some("workload_recovered")
        );
        assert_eq!(wake(st(None, None, true), st(None, None, true)), None);
    }

    #[test]
    fn a_relist_forgets_fingerprints_of_objects_it_no_longer_shows() {
        let mut seen: HashMap<String, u64> = [("node/a", 1), ("node/b", 2), ("pod/b", 3), ("pod/c", 4)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // The Node relist shows only `a`: `node/b` goes, the pods are the pod relist's business.
        forget_unlisted(&mut seen, "node/", ["a".to_string()].into_iter());
        let mut keys: Vec<_> = seen.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["node/a", "pod/b", "pod/c"]);
        forget_unlisted(&mut seen, "pod/", std::iter::empty());
        assert_eq!(seen.into_keys().collect::<Vec<_>>(), ["node/a"]);
    }

    #[test]
    fn a_slimmed_node_keeps_what_decisions_read_and_nothing_else() {
        let big = "x".repeat(100_000);
        let addresses: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250)}))
            .collect();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u", "resourceVersion": "7",
                         "annotations": {"bloat": big},
                         "labels": {"microk8s.io/cluster": "true", "node.kubernetes.io/microk8s-controlplane": "microk8s-controlplane",
                                    "bloat": "y", mk8s_api::consts::NODE_LABEL_JOINS_ACCEPTED: "true"}},
            "spec": {"providerID": "sim://n1", "taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDR": "10.1.0.0/24"},
            "status": {"addresses": addresses,
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": big}],
                       "nodeInfo": {"kubeletVersion": "v1.33.4", "machineID": "m", "systemUUID": "s", "bootID": "b",
                                    "kernelVersion": "k", "osImage": "o", "containerRuntimeVersion": "c",
                                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                       "capacity": {"cpu": "2"},
                       "images": [{"names": [big.clone()], "sizeBytes": 1}]}
        }))
        .unwrap();
        let mut slim = node.clone();
        slim_node(&mut slim);
        let mut want = node_view(&node);
        want.ips.truncate(MAX_NODE_ADDRESSES);
        let got = node_view(&slim);
        assert_eq!(
            (
                &got.name,
                &got.provider_id,
                got.ready,
                got.reporting,
                &got.kubelet_version
            ),
            (
                &want.name,
                &want.provider_id,
                want.ready,
                want.reporting,
                &want.kubelet_version
            )
        );
        assert_eq!(
            (got.accepts_joins, got.microk8s_control_plane),
            (want.accepts_joins, want.microk8s_control_plane)
        );
        assert_eq!(got.ips, want.ips);
        assert_eq!(node_fingerprint(&slim), {
            let mut n = node.clone();
            if let Some(a) = n.status.as_mut().and_then(|s| s.addresses.as_mut()) {
                a.truncate(MAX_NODE_ADDRESSES);
            }
            node_fingerprint(&n)
        });
        let size = serde_json::to_vec(&slim).unwrap().len();
        assert!(size < 2_000, "{size} bytes kept");
        assert!(slim.metadata.annotations.is_none());
        assert_eq!(slim.metadata.labels.as_ref().map(|l| l.len()), Some(2));
    }
}
