//! `infrastructure.cluster.x-k8s.io/v1alpha1`: `SimCluster`, `SimClusterTemplate`,
//! `SimMachine` and `SimMachineTemplate`.
//!
//! The CRDs carry the v1beta2 contract label (`cluster.x-k8s.io/v1beta2: v1alpha1`) only:
//! CAPI's lookup of "the contract of API version X" takes whichever label lists X first in
//! an unordered map, so a second label for the same version makes the contract (and the
//! field paths CAPI writes) random. The status still has the v1beta1 fields (`ready`) too.

// kube-derive takes several `printcolumn(...)` helper attributes, which clippy mistakes for
// duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use mk8s_api::conditions::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the simulator's objects.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// API version of the simulator's objects.
pub const VERSION: &str = "v1alpha1";
/// `cluster.x-k8s.io/provider` label value of the CRDs.
pub const PROVIDER: &str = "infrastructure-sim";
/// Finalizer on `SimCluster`s: the workload apiserver and every node of the cluster are
/// stopped before the object goes.
pub const CLUSTER_FINALIZER: &str = "simcluster.infrastructure.cluster.x-k8s.io";
/// Finalizer on `SimMachine`s: the node's processes, listeners and tree are gone before the
/// object goes.
pub const MACHINE_FINALIZER: &str = "simmachine.infrastructure.cluster.x-k8s.io";
/// Prefix of the provider IDs: `sim://<namespace>/<name>`.
pub const PROVIDER_ID_PREFIX: &str = "sim://";

/// Bound on the membership history kept in `SimCluster.status` (the in-memory history
/// behind [`crate::SimHandle::cluster`] and the debug endpoint is unbounded).
pub const STATUS_HISTORY_LIMIT: usize = 64;

/// Host and port of the cluster's API server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ApiEndpoint {
    /// IP address (the simulator allocates a loopback address `127.x.y.z`).
    #[serde(default)]
    pub host: String,
    /// Port (default 6443).
    #[serde(default)]
    pub port: i32,
}

/// A failure domain offered to the cluster's machines.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    /// Name of the failure domain.
    pub name: String,
    /// Whether control plane machines may be placed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<bool>,
    /// Free-form attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Desired state of a simulated cluster's infrastructure.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SimCluster",
    plural = "simclusters",
    singular = "simcluster",
    namespaced,
    status = "SimClusterStatus",
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "infrastructure-sim"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']",
        description = "Cluster this infrastructure belongs to"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.controlPlaneEndpoint.host",
        description = "Loopback address of the workload API server"
    ),
    printcolumn(
        name = "Provisioned",
        type_ = "boolean",
        json_path = ".status.initialization.provisioned"
    ),
    printcolumn(name = "API server", type_ = "string", json_path = ".status.apiServer.phase"),
    printcolumn(name = "Members", type_ = "string", json_path = ".status.dqlite.members"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "SimCluster is the infrastructure of a simulated MicroK8s cluster: a loopback control plane endpoint and, once the first node installs the cluster CA, one real workload kube-apiserver."
)]
#[serde(rename_all = "camelCase")]
pub struct SimClusterSpec {
    /// Where the workload API server listens. Set by the simulator (a free loopback address
    /// and port 6443 unless the port is given); a host set by the user must be a loopback
    /// IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// Failure domains reported in `status.failureDomains`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<FailureDomain>,
}

/// `status.initialization` (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Initialization {
    /// The infrastructure is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

/// Observed state of a simulated cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimClusterStatus {
    /// v1beta2 contract: initialization progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// v1beta1 contract: the infrastructure is ready.
    #[serde(default)]
    pub ready: bool,
    /// Failure domains (v1beta2 list shape), from `spec.failureDomains`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<FailureDomain>,
    /// Conditions (metav1 shape): `Ready`, `Paused`, `APIServerAvailable`, `DqliteQuorum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The workload kube-apiserver of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerStatus>,
    /// The cluster's simulated dqlite: members and membership history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dqlite: Option<DqliteStatus>,
    /// The simulated nodes of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSummary>,
}

/// The workload kube-apiserver of a simulated cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerStatus {
    /// `NotStarted`, `Starting`, `Running`, `Failed` or `Stopped`.
    pub phase: String,
    /// `https://<endpoint>:<port>` once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The node whose `microk8s refresh-certs` started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Subject of the cluster CA it serves with and trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_subject: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The simulated dqlite of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DqliteStatus {
    /// Member addresses (`<ip>:<port>`), in order of joining.
    #[serde(default)]
    pub members: Vec<String>,
    /// How many members run (their node is up).
    #[serde(default)]
    pub live_members: i32,
    /// Whether live members are a majority of the members.
    #[serde(default)]
    pub quorum: bool,
    /// How many times live members fell below a majority.
    #[serde(default)]
    pub quorum_lost_count: i32,
    /// The last membership events, oldest first (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<MembershipEvent>,
}

/// One membership event of a simulated dqlite.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipEvent {
    /// RFC 3339 time.
    pub time: String,
    /// `Init`, `Joined`, `WorkerJoined`, `Removed`, `AddressChanged`, `MemberStopped`,
    /// `MemberStarted`, `QuorumLost`, `QuorumRestored`, `JoinRefused`, `SecondInit`.
    pub event: String,
    /// The member address concerned (`<ip>:<port>`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The node (host name) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Members after the event.
    pub members: i32,
    /// Live members after the event.
    pub live: i32,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One simulated node, as its cluster sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// Host name (= Node name).
    pub name: String,
    /// The `SimMachine`.
    pub machine: String,
    /// Its loopback address.
    pub address: String,
    /// `Standalone` (not joined yet), `ControlPlane` or `Worker`.
    pub role: String,
    /// Installed snap channel, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Whether the node runs.
    pub running: bool,
}

/// The template of a `SimCluster` (for ClusterClass).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SimClusterTemplate",
    plural = "simclustertemplates",
    singular = "simclustertemplate",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "infrastructure-sim"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "SimClusterTemplate is a template of SimClusters, for ClusterClass."
)]
pub struct SimClusterTemplateSpec {
    /// The template.
    pub template: SimClusterTemplateResource,
}

/// `spec.template` of a `SimClusterTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SimClusterTemplateResource {
    /// Labels and annotations of the objects created from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,
    /// The spec of the objects created from the template.
    pub spec: SimClusterSpec,
}

/// Labels and annotations for objects created from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ObjectMetaTemplate {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Desired state of a simulated machine.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SimMachine",
    plural = "simmachines",
    singular = "simmachine",
    namespaced,
    status = "SimMachineStatus",
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "infrastructure-sim"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']",
        description = "Cluster this machine belongs to"
    ),
    printcolumn(name = "Provider ID", type_ = "string", json_path = ".spec.providerID"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.addresses[0].address"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.node.phase"),
    printcolumn(
        name = "Provisioned",
        type_ = "boolean",
        json_path = ".status.initialization.provisioned"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "SimMachine is a simulated MicroK8s machine: a private mount, PID and UTS namespace over its own tree and loopback address, booted with the Machine's bootstrap cloud-config."
)]
#[serde(rename_all = "camelCase")]
pub struct SimMachineSpec {
    /// `sim://<namespace>/<name>`, set by the simulator once the machine is up.
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Seconds between the bootstrap data being available and the machine being up
    /// (default: the simulator's `--boot-delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub boot_delay_seconds: Option<i32>,
    /// Seconds a `snap install` or refresh takes (default: the simulator's
    /// `--install-delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub install_delay_seconds: Option<i32>,
}

/// An address of a machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct MachineAddress {
    /// `InternalIP` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub address: String,
}

/// Observed state of a simulated machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimMachineStatus {
    /// v1beta2 contract: initialization progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// v1beta1 contract: the machine is provisioned.
    #[serde(default)]
    pub ready: bool,
    /// The machine's addresses: `InternalIP` (its loopback address) and `Hostname`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// The failure domain the machine runs in (the Machine's `spec.failureDomain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Conditions (metav1 shape): `Ready`, `Paused`, `BootstrapSucceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the simulated node is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeStatus>,
}

/// The simulated node of a machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// `Pending`, `Booting`, `Bootstrapping`, `Bootstrapped`, `BootstrapFailed`, `Stopped`.
    pub phase: String,
    /// Host name (the Node's name is its lower case).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `Standalone`, `ControlPlane` or `Worker`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// Installed snap channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Port the stub cluster agent listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<i32>,
    /// The node's dqlite address (`<ip>:<port>`), for control plane nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dqlite_address: Option<String>,
    /// The bootstrap step that failed, from `/run/capi-microk8s/failed-step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// The runcmd log on the simulator's host (cloud-init-output.log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// The machine's tree on the simulator's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// The template of a `SimMachine`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SimMachineTemplate",
    plural = "simmachinetemplates",
    singular = "simmachinetemplate",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "infrastructure-sim"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "SimMachineTemplate is a template of SimMachines."
)]
pub struct SimMachineTemplateSpec {
    /// The template.
    pub template: SimMachineTemplateResource,
}

/// `spec.template` of a `SimMachineTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SimMachineTemplateResource {
    /// Labels and annotations of the objects created from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,
    /// The spec of the objects created from the template.
    pub spec: SimMachineSpec,
}

/// Condition types and reasons the simulator sets.
pub mod conditions {
    /// Summary condition (mirrored by CAPI into `InfrastructureReady`).
    pub const READY: &str = "Ready";
    /// Reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// The machine's runcmd finished and wrote the sentinel (or failed).
    pub const BOOTSTRAP_SUCCEEDED: &str = "BootstrapSucceeded";
    /// The cluster's workload API server runs.
    pub const API_SERVER_AVAILABLE: &str = "APIServerAvailable";
    /// Live dqlite members are a majority.
    pub const DQLITE_QUORUM: &str = "DqliteQuorum";
}
