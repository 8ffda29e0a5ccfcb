//! The simulator's in-memory world: clusters (endpoint, workload apiserver, dqlite members
//! and their history) and nodes (snap, role, tokens, ports, recorded calls).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;

use crate::alloc::Allocator;
use crate::api::{self, MembershipEvent, SimCluster, SimMachine};
use crate::config::Config;
use crate::snap::Track;
use crate::workload::{WorkloadApi, WorkloadBackend};

/// Namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Key {
        Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Locks a mutex, recovering from poisoning (a panicking handler must not wedge the
/// simulator).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// RFC 3339 now.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// The whole simulator.
pub struct Sim {
    /// Settings.
    pub cfg: Config,
    /// Directory of the stub command symlinks (first in runcmd's `PATH`).
    pub stub_dir: PathBuf,
    /// The real kubectl.
    pub kubectl: Option<PathBuf>,
    /// Client of the management cluster this instance's controllers serve.
    pub mgmt: kube::Client,
    /// `cluster.x-k8s.io` version served by the management cluster.
    pub core: mk8s_api::capi::CoreVersion,
    /// Which management cluster this instance serves: 0 for the first, then 1, 2, … for
    /// those added with `SimHandle::serve` (they share everything below but `triggers`'
    /// own entry).
    pub plane: u64,
    /// Loopback addresses.
    pub alloc: Arc<Mutex<Allocator>>,
    /// Clusters by (namespace, CAPI cluster name).
    pub clusters: Arc<Mutex<BTreeMap<Key, Arc<ClusterRt>>>>,
    /// Nodes by SimMachine.
    pub nodes: Arc<Mutex<BTreeMap<Key, Arc<NodeRt>>>>,
    /// Starts workload apiservers.
    pub backend: Arc<dyn WorkloadBackend>,
    /// TLS client for joins.
    pub tls_client: Arc<rustls::ClientConfig>,
    /// Requeue channels of the controllers of every management cluster served: a change of
    /// a simulated cluster or node requeues its objects wherever they are (an object that a
    /// management cluster does not hold is skipped by its controller).
    pub triggers: Arc<Mutex<Vec<Triggers>>>,
    /// Ids of snapd changes.
    pub change_ids: Arc<AtomicU64>,
    /// Ids of nodes (for their socket names).
    pub node_ids: Arc<AtomicU64>,
    /// Short directory of the nodes' unix sockets.
    pub sock_dir: PathBuf,
    /// What this management cluster's watches show of CAPI Clusters and Machines, once the
    /// controllers started (see [`CapiStores`]).
    pub capi: std::sync::OnceLock<CapiStores>,
}

/// CAPI Clusters and Machines as the watches that trigger the controllers show them: each
/// store is updated before its change triggers a reconcile, so a reconcile sees at least the
/// change that caused it. Reads fall back to a GET for what a store has not shown.
pub struct CapiStores {
    /// Clusters.
    pub clusters: kube::runtime::reflector::Store<mk8s_api::capi::Cluster>,
    /// Machines.
    pub machines: kube::runtime::reflector::Store<mk8s_api::capi::Machine>,
}

impl Sim {
    /// The CAPI Cluster `ns/name`: from the watch, else read.
    pub async fn capi_cluster(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<mk8s_api::capi::Cluster>>, kube::Error> {
        let store = self.capi.get().map(|s| &s.clusters);
        seen_or_read(&self.mgmt, store, self.core.cluster(), ns, name).await
    }

    /// The CAPI Machine `ns/name`: from the watch, else read.
    pub async fn capi_machine(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<mk8s_api::capi::Machine>>, kube::Error> {
        let store = self.capi.get().map(|s| &s.machines);
        seen_or_read(&self.mgmt, store, self.core.machine(), ns, name).await
    }
}

/// The object `ns/name` of resource `ar`: from `store` when it shows it, else read.
async fn seen_or_read<K>(
    client: &kube::Client,
    store: Option<&kube::runtime::reflector::Store<K>>,
    ar: kube::core::ApiResource,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>, kube::Error>
where
    K: kube::Resource<DynamicType = kube::core::ApiResource, Scope = kube::core::DynamicResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(o) = store.and_then(|s| s.get(&ObjectRef::new_with(name, ar.clone()).within(ns))) {
        return Ok(Some(o));
    }
    let api: kube::Api<K> = kube::Api::namespaced_with(client.clone(), ns, &ar);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// Requeue channels of one management cluster's controllers.
pub struct Triggers {
    /// Which management cluster (`Sim::plane`).
    pub plane: u64,
    /// Requeues a SimCluster.
    pub clusters: UnboundedSender<ObjectRef<SimCluster>>,
    /// Requeues a SimMachine.
    pub machines: UnboundedSender<ObjectRef<SimMachine>>,
}

/// A simulated cluster.
pub struct ClusterRt {
    /// (namespace, CAPI cluster name).
    pub key: Key,
    /// The SimCluster's name (to requeue it).
    pub sim_cluster: Mutex<Option<String>>,
    /// Where its API server listens.
    pub endpoint: Mutex<Option<SocketAddrV4>>,
    /// Members, history, API server state.
    pub st: Mutex<ClusterState>,
    /// The workload API server; the async mutex serialises its start.
    pub api: tokio::sync::Mutex<Option<Arc<ApiServerRt>>>,
}

/// A running workload API server.
pub struct ApiServerRt {
    /// The server.
    pub server: Box<dyn WorkloadApi>,
    /// Its admin kubeconfig.
    pub admin_kubeconfig: String,
    /// The CA it serves with (PEM).
    pub ca_cert: String,
    /// The simulated kubelet of the cluster.
    pub kubelet: tokio::task::AbortHandle,
}

impl Drop for ApiServerRt {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

/// A dqlite member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// `<ip>:<port>`.
    pub address: String,
    /// Its SimMachine.
    pub machine: Key,
    /// Its node name.
    pub node: String,
}

/// Mutable state of a cluster.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// dqlite members, in order of joining.
    pub members: Vec<Member>,
    /// Every membership event (unbounded).
    pub history: Vec<MembershipEvent>,
    /// Live members are a majority (or there are none).
    pub quorum: bool,
    /// Transitions to "no quorum".
    pub quorum_lost_count: u32,
    /// `NotStarted`, `Starting`, `Running`, `Failed`, `Stopped`.
    pub api_phase: String,
    /// API server URL.
    pub api_url: Option<String>,
    /// The node that started it.
    pub started_by: Option<String>,
    /// Subject of its CA.
    pub ca_subject: Option<String>,
    /// Why it failed.
    pub api_message: Option<String>,
    /// Pids of its processes.
    pub api_pids: Vec<u32>,
    /// The cluster is being deleted.
    pub deleted: bool,
    /// Names of every Node the simulator registered in the cluster.
    pub known_nodes: std::collections::BTreeSet<String>,
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    /// Installed, neither the first node nor joined.
    Standalone,
    /// Runs the control plane (init or joined without `--worker`).
    ControlPlane,
    /// Joined with `--worker`.
    Worker,
}

impl Role {
    /// `Standalone`, `ControlPlane`, `Worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "Standalone",
            Role::ControlPlane => "ControlPlane",
            Role::Worker => "Worker",
        }
    }
}

/// The installed snap.
#[derive(Debug, Clone, Serialize)]
pub struct SnapInstall {
    /// Tracked channel, `<track>/<risk>`.
    pub channel: String,
    /// What the track carries.
    #[serde(skip)]
    pub track: Track,
    /// Revision (bumped on refresh).
    pub revision: u32,
    /// Installed with classic confinement.
    pub classic: bool,
    /// `snap refresh --hold` value.
    pub hold: Option<String>,
}

/// A snapd change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Id.
    pub id: u64,
    /// `install-snap`, `refresh-snap`, `restart`, `configure-snap`, `remove-snap`.
    pub kind: String,
    /// Summary.
    pub summary: String,
    /// `Doing`, `Done`, `Error`.
    pub status: String,
    /// Error message.
    pub err: Option<String>,
    /// Spawn time (RFC 3339).
    pub spawn_time: String,
}

/// Phases of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Waiting for the boot delay.
    Pending,
    /// The "VM" is starting.
    Booting,
    /// runcmd runs.
    Bootstrapping,
    /// The sentinel was written.
    Bootstrapped,
    /// runcmd failed (or the cloud-config was refused).
    BootstrapFailed,
    /// Stopped (deleted).
    Stopped,
}

impl Phase {
    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Booting => "Booting",
            Phase::Bootstrapping => "Bootstrapping",
            Phase::Bootstrapped => "Bootstrapped",
            Phase::BootstrapFailed => "BootstrapFailed",
            Phase::Stopped => "Stopped",
        }
    }
}

/// Mutable state of a node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// Phase.
    pub phase: Phase,
    /// The "VM" is up (namespace and sockets ready).
    pub vm_up: bool,
    /// Not stopped.
    pub running: bool,
    /// Host pid of the namespace's init.
    pub ns_pid: Option<u32>,
    /// The installed snap.
    pub snap: Option<SnapInstall>,
    /// Role in the cluster.
    pub role: Role,
    /// Join tokens registered with `add-node` and their expiry.
    #[serde(skip)]
    pub tokens: BTreeMap<String, SystemTime>,
    /// Port the agent listens on (None: not listening).
    pub agent_port: Option<u16>,
    /// Port of the node's dqlite address.
    pub dqlite_port: u16,
    /// snapd changes.
    pub changes: BTreeMap<u64, Change>,
    /// Every stub call: `[tool, args…]`.
    pub calls: Vec<Vec<String>>,
    /// iptables rules: `[table, chain, rule…]`.
    pub iptables: Vec<Vec<String>>,
    /// snap configuration (`<snap>.<key>` → value).
    pub conf: BTreeMap<String, String>,
    /// Enabled addons.
    pub addons: Vec<String>,
    /// The Node object was created.
    pub registered: bool,
    /// Why bootstrap failed (log tail or refusal).
    pub failure: Option<String>,
    /// Content of `/run/capi-microk8s/failed-step`.
    pub failed_step: Option<String>,
    /// runcmd exit status.
    pub exit_code: Option<i32>,
}

/// A simulated node (one SimMachine).
pub struct NodeRt {
    /// The SimMachine.
    pub key: Key,
    /// Its uid.
    pub uid: String,
    /// The management cluster (`Sim::plane`) and SimMachine uid the node belongs to now:
    /// `(plane, uid)` at boot, changed when `clusterctl move` carries the SimMachine to
    /// another management cluster served by the same simulator (the node is adopted).
    pub owner: Mutex<(u64, String)>,
    /// Its cluster.
    pub cluster: Key,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Host name.
    pub hostname: String,
    /// `<state>/machines/<ns>/<name>`.
    pub dir: PathBuf,
    /// The node's filesystem (`<dir>/root`).
    pub root: PathBuf,
    /// How long snap installs and refreshes take.
    pub install_delay: Duration,
    /// The failure domain.
    pub failure_domain: Option<String>,
    /// Mutable state.
    pub st: Mutex<NodeState>,
    /// Tasks to abort on stop (boot, sockets, changes).
    pub tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The agent's listener task.
    pub agent: Mutex<Option<tokio::task::AbortHandle>>,
    /// The namespace holder process.
    pub holder: Mutex<Option<std::process::Child>>,
    /// `<socket dir>/<id>`: prefix of the node's unix sockets on the host.
    pub sock_prefix: PathBuf,
}

/// The directories bind-mounted from a node's tree over the host's in its mount namespace.
pub const BOUND_DIRS: [&str; 7] = [
    "/var/snap",
    "/capi-scripts",
    "/capi",
    "/var/tmp",
    "/run",
    "/etc/systemd/system",
    "/var/lib/cloud",
];

impl NodeRt {
    /// The Node name: the host name in lower case.
    pub fn node_name(&self) -> String {
        self.hostname.to_lowercase()
    }

    /// `sim://<namespace>/<name>`.
    pub fn provider_id(&self) -> String {
        format!("{}{}/{}", api::PROVIDER_ID_PREFIX, self.key.namespace, self.key.name)
    }

    /// Where a path of the node's filesystem is on the host: under the tree for the bound
    /// directories, else the host's own path (as the node sees it).
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        let p = Path::new(node_path);
        for d in BOUND_DIRS {
            if p.starts_with(d) {
                return self.root.join(node_path.trim_start_matches('/'));
            }
        }
        p.to_path_buf()
    }

    /// Whether a node path is private to the node (under a bound directory).
    pub fn is_private(node_path: &str) -> bool {
        BOUND_DIRS.iter().any(|d| Path::new(node_path).starts_with(d))
    }

    /// Host path of one of the node's unix sockets: `snapd` (`/run/snapd.socket` in the
    /// node) or `sim` (`/run/mk8s-sim/sim.sock`).
    pub fn socket(&self, kind: &str) -> PathBuf {
        let mut p = self.sock_prefix.clone().into_os_string();
        p.push(format!(".{kind}"));
        PathBuf::from(p)
    }

    /// The cloud-init output log on the host.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("cloud-init-output.log")
    }

    /// Appends a line to the cloud-init output log.
    pub fn log(&self, line: &str) {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The dqlite address `<ip>:<port>`.
    pub fn dqlite_address(&self) -> String {
        format!("{}:{}", self.ip, lock(&self.st).dqlite_port)
    }

    /// Records a stub call.
    pub fn record(&self, tool: &str, args: &[String]) {
        let mut call = vec![tool.to_string()];
        call.extend(args.iter().cloned());
        lock(&self.st).calls.push(call);
    }

    /// The Kubernetes version the node's kubelet reports.
    pub fn kubelet_version(&self, patch: u32) -> Option<String> {
        lock(&self.st)
            .snap
            .as_ref()
            .map(|s| format!("v{}.{}.{patch}", s.track.major, s.track.minor))
    }

    /// Whether the node takes part in its cluster (created it or joined).
    pub fn in_cluster(&self) -> bool {
        lock(&self.st).role != Role::Standalone
    }
}

impl Sim {
    /// The cluster runtime, if any.
    pub fn cluster(&self, key: &Key) -> Option<Arc<ClusterRt>> {
        lock(&self.clusters).get(key).cloned()
    }

    /// The node runtime of a SimMachine, if any.
    pub fn node(&self, key: &Key) -> Option<Arc<NodeRt>> {
        lock(&self.nodes).get(key).cloned()
    }

    /// The running node with that address.
    pub fn node_by_ip(&self, ip: Ipv4Addr) -> Option<Arc<NodeRt>> {
        lock(&self.nodes)
            .values()
            .find(|n| n.ip == ip && lock(&n.st).running)
            .cloned()
    }

    /// The running nodes of a cluster.
    pub fn cluster_nodes(&self, cluster: &Key) -> Vec<Arc<NodeRt>> {
        lock(&self.nodes)
            .values()
            .filter(|n| &n.cluster == cluster)
            .cloned()
            .collect()
    }

    /// Requeues the SimCluster of a cluster (in every management cluster served).
    pub fn trigger_cluster(&self, cluster: &ClusterRt) {
        if let Some(name) = lock(&cluster.sim_cluster).clone() {
            let r = ObjectRef::new(&name).within(&cluster.key.namespace);
            lock(&self.triggers).retain(|t| t.clusters.unbounded_send(r.clone()).is_ok());
        }
    }

    /// Requeues a SimMachine (in every management cluster served).
    pub fn trigger_machine(&self, key: &Key) {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        lock(&self.triggers).retain(|t| t.machines.unbounded_send(r.clone()).is_ok());
    }

    /// A new snapd change id.
    pub fn next_change_id(&self) -> u64 {
        self.change_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn live(&self, m: &Member) -> bool {
        self.node(&m.machine).is_some_and(|n| lock(&n.st).running)
    }

    /// Records a membership event, recomputing quorum (and recording its loss or return).
    pub fn membership_event(
        &self,
        cluster: &ClusterRt,
        event: &str,
        member: Option<&str>,
        node: Option<&str>,
        message: String,
    ) {
        if event == "JoinRefused" {
            let st = lock(&cluster.st);
            let repeated = st
                .history
                .iter()
                .rev()
                .take(16)
                .any(|e| e.event == event && e.node.as_deref() == node && e.message == message);
            if repeated {
                return;
            }
        }
        let members = lock(&cluster.st).members.clone();
        let live = members.iter().filter(|m| self.live(m)).count();
        let quorum = members.is_empty() || live > members.len() / 2;
        let time = now_rfc3339();
        {
            let mut st = lock(&cluster.st);
            st.history.push(MembershipEvent {
                time: time.clone(),
                event: event.to_string(),
                member: member.map(str::to_string),
                node: node.map(str::to_string),
                members: members.len() as i32,
                live: live as i32,
                message,
            });
            if st.quorum && !quorum {
                st.quorum_lost_count += 1;
                st.history.push(MembershipEvent {
                    time,
                    event: "QuorumLost".into(),
                    member: None,
                    node: None,
                    members: members.len() as i32,
                    live: live as i32,
                    message: format!(
                        "{live} of {} members live, {} needed",
                        members.len(),
                        members.len() / 2 + 1
                    ),
                });
            } else if !st.quorum && quorum && !st.history.is_empty() {
                st.history.push(MembershipEvent {
                    time,
                    event: "QuorumRestored".into(),
                    member: None,
                    node: None,
                    members: members.len() as i32,
                    live: live as i32,
                    message: String::new(),
                });
            }
            st.quorum = quorum;
        }
        tracing::info!(cluster = %cluster.key, event, member, node, members = members.len(), live, "dqlite membership");
        self.trigger_cluster(cluster);
    }

    /// Adds a dqlite member.
    pub fn add_member(&self, cluster: &ClusterRt, node: &NodeRt, event: &str) {
        let address = node.dqlite_address();
        {
            let mut st = lock(&cluster.st);
            st.members.retain(|m| m.machine != node.key);
            st.members.push(Member {
                address: address.clone(),
                machine: node.key.clone(),
                node: node.node_name(),
            });
        }
        self.membership_event(cluster, event, Some(&address), Some(&node.node_name()), String::new());
    }

    /// Removes a dqlite member; false if there is none with that address.
    pub fn remove_member(&self, cluster: &ClusterRt, address: &str, by: &str) -> bool {
        let removed = {
            let mut st = lock(&cluster.st);
            let before = st.members.len();
            let node = st.members.iter().find(|m| m.address == address).map(|m| m.node.clone());
            st.members.retain(|m| m.address != address);
            (st.members.len() != before).then_some(node).flatten()
        };
        match removed {
            Some(node) => {
                self.membership_event(
                    cluster,
                    "Removed",
                    Some(address),
                    Some(&node),
                    format!("removed through the cluster agent of {by}"),
                );
                true
            }
            None => false,
        }
    }
}

/// A snapshot of a cluster for tests and the debug endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSnapshot {
    /// (namespace, CAPI cluster name).
    pub key: Key,
    /// The SimCluster.
    pub sim_cluster: Option<String>,
    /// The endpoint.
    pub endpoint: Option<String>,
    /// Members, full history, API server state.
    #[serde(flatten)]
    pub state: ClusterState,
    /// Nodes of the cluster.
    pub nodes: Vec<NodeSnapshot>,
}

impl ClusterSnapshot {
    /// Member addresses.
    pub fn member_addresses(&self) -> Vec<String> {
        self.state.members.iter().map(|m| m.address.clone()).collect()
    }

    /// Whether live members were a majority of the members after every membership event.
    pub fn quorum_never_lost(&self) -> bool {
        self.state.quorum_lost_count == 0
    }
}

/// A snapshot of a node for tests and the debug endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSnapshot {
    /// The SimMachine.
    pub machine: Key,
    /// Its cluster.
    pub cluster: Key,
    /// Address.
    pub ip: Ipv4Addr,
    /// Host name.
    pub hostname: String,
    /// Node name.
    pub node_name: String,
    /// The node's tree on the host.
    pub root: PathBuf,
    /// The cloud-init output log.
    pub log_path: PathBuf,
    /// State.
    #[serde(flatten)]
    pub state: NodeState,
}

impl NodeSnapshot {
    /// Calls of `tool` (each `[tool, args…]`).
    pub fn calls_of(&self, tool: &str) -> Vec<&Vec<String>> {
        self.state.calls.iter().filter(|c| c[0] == tool).collect()
    }
}

impl NodeRt {
    /// A snapshot.
    pub fn snapshot(&self) -> NodeSnapshot {
        NodeSnapshot {
            machine: self.key.clone(),
            cluster: self.cluster.clone(),
            ip: self.ip,
            hostname: self.hostname.clone(),
            node_name: self.node_name(),
            root: self.root.clone(),
            log_path: self.log_path(),
            state: lock(&self.st).clone(),
        }
    }
}

impl Sim {
    /// A snapshot of a cluster.
    pub fn cluster_snapshot(&self, cluster: &ClusterRt) -> ClusterSnapshot {
        ClusterSnapshot {
            key: cluster.key.clone(),
            sim_cluster: lock(&cluster.sim_cluster).clone(),
            endpoint: lock(&cluster.endpoint).map(|e| e.to_string()),
            state: lock(&cluster.st).clone(),
            nodes: self.cluster_nodes(&cluster.key).iter().map(|n| n.snapshot()).collect(),
        }
    }
}
