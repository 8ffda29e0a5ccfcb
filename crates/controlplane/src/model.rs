//! The computed picture of one control plane: its Machines, their Nodes and what the spec
//! asks for, as plain data. Every decision module reads a [`ControlPlane`]; none talks to an
//! API server.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mk8s_api::bootstrap::MicroK8sConfigSpec;
use mk8s_api::controlplane::UpgradeStrategy;
use mk8s_api::version::{KubeVersion, Track};

use crate::member::RemovalState;
use crate::remediation::RemediationData;
use crate::upgrade::InPlaceState;

/// The addresses a machine or Node is reached at, from its `(type, address)` list: its
/// `InternalIP`s, or its `ExternalIP`s when it has none (clouds that give machines public
/// addresses only). The bootstrap provider picks join addresses the same way, and it is the
/// address MicroK8s binds dqlite and the cluster agent to on such machines.
pub fn node_ips<'a>(addresses: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let all: Vec<(&str, &str)> = addresses.into_iter().filter(|(_, a)| !a.is_empty()).collect();
    let of = |kind: &str| -> Vec<String> {
        all.iter()
            .filter(|(t, _)| *t == kind)
            .map(|(_, a)| (*a).to_string())
            .collect()
    };
    let internal = of("InternalIP");
    if internal.is_empty() {
        of("ExternalIP")
    } else {
        internal
    }
}

/// A workload cluster Node, reduced to what decisions use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Addresses, by [`node_ips`].
    pub ips: Vec<String>,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `Ready` condition is true.
    pub ready: bool,
    /// Its kubelet reports: the `Ready` condition is `True` or `False`, not `Unknown` (the node
    /// controller's verdict on a node that stopped reporting) nor missing. On MicroK8s the
    /// kubelet runs in one process with the API server that writes through the node's dqlite
    /// member, so a reporting node is taken as a live member (a node that has just joined is
    /// `False` until its CNI is up).
    pub reporting: bool,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: Option<String>,
    /// Carries the init node's marker: joins are accepted.
    pub accepts_joins: bool,
    /// Carries MicroK8s' control plane label (Canonical's initialisation signal).
    pub microk8s_control_plane: bool,
}

/// Where a Machine's infrastructure machine was cloned from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClonedFrom {
    /// Template name.
    pub name: String,
    /// `<Kind>.<group>` of the template.
    pub group_kind: String,
}

/// A Machine of the cluster, reduced to what decisions use.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineView {
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: Timestamp,
    /// Being deleted.
    pub deleting: bool,
    /// Created by this provider (not by Canonical's, not adopted).
    pub ours: bool,
    /// `spec.version`.
    pub version: Option<String>,
    /// `spec.failureDomain`.
    pub failure_domain: Option<String>,
    /// `status.nodeRef.name`.
    pub node_ref: Option<String>,
    /// Addresses, by [`node_ips`].
    pub ips: Vec<String>,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `status.nodeInfo.kubeletVersion` (CAPI's copy from the Node).
    pub node_info_kubelet: Option<String>,
    /// The Machine's `Ready` condition is true.
    pub ready: bool,
    /// The Machine's `Available` condition is true.
    pub available: bool,
    /// A MachineHealthCheck found it unhealthy (`HealthCheckSucceeded` false).
    pub health_check_failed: bool,
    /// A MachineHealthCheck asks its owner to remediate it (`OwnerRemediated` false).
    pub owner_remediation_requested: bool,
    /// Carries `cluster.x-k8s.io/delete-machine`.
    pub delete_annotation: bool,
    /// Carries `cluster.x-k8s.io/remediate-machine`.
    pub remediate_annotation: bool,
    /// It replaces a remediated machine.
    pub remediation_for: Option<RemediationData>,
    /// Spec of its MicroK8sConfig (`None`: not found).
    pub config: Option<MicroK8sConfigSpec>,
    /// Where its infrastructure machine was cloned from (`None`: unknown).
    pub cloned_from: Option<ClonedFrom>,
    /// In-place upgrade in progress.
    pub in_place: Option<InPlaceState>,
    /// dqlite member removal in progress.
    pub removal: Option<RemovalState>,
    /// Carries our pre-terminate hook.
    pub has_hook: bool,
    /// CAPI has drained it and waits for pre-terminate hooks.
    pub waiting_for_hook: bool,
}

impl MachineView {
    /// A minimal view, for tests and builders.
    pub fn new(name: &str, created_secs: i64) -> Self {
        MachineView {
            name: name.to_string(),
            created: Timestamp::from_second(created_secs).unwrap_or(Timestamp::UNIX_EPOCH),
            deleting: false,
            ours: true,
            version: None,
            failure_domain: None,
            node_ref: None,
            ips: vec![],
            provider_id: None,
            node_info_kubelet: None,
            ready: false,
            available: false,
            health_check_failed: false,
            owner_remediation_requested: false,
            delete_annotation: false,
            remediate_annotation: false,
            remediation_for: None,
            config: None,
            cloned_from: None,
            in_place: None,
            removal: None,
            has_hook: true,
            waiting_for_hook: false,
        }
    }

    /// The snap track of `spec.version`.
    pub fn track(&self) -> Option<Track> {
        self.version
            .as_deref()
            .and_then(|v| KubeVersion::parse(v).ok())
            .map(|v| v.track())
    }

    /// Unhealthy and handed to us for remediation by a MachineHealthCheck.
    pub fn needs_remediation(&self) -> bool {
        self.health_check_failed && self.owner_remediation_requested
    }
}

/// How the workload cluster's API server can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// No kubeconfig yet.
    NoKubeconfig,
    /// The first list of Nodes has not completed yet.
    Connecting,
    /// Watching Nodes works.
    Reachable,
    /// The watch fails; the message says why.
    Unreachable(String),
}

/// The infrastructure template machines are cloned from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    /// API group.
    pub group: String,
    /// Kind, e.g. `AWSMachineTemplate`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// `apiVersion` when the reference carries one (Canonical's field).
    pub api_version: Option<String>,
}

impl TemplateRef {
    /// `<Kind>.<group>`, as in the cloned-from annotation.
    pub fn group_kind(&self) -> String {
        format!("{}.{}", self.kind, self.group)
    }
}

/// KCP's remediation limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemediationSpec {
    /// Replacements in a row before giving up (`None`: no limit).
    pub max_retry: Option<i32>,
    /// Minimum time between two remediations of a machine's replacements.
    pub retry_period: Duration,
    /// How long a replacement must stay healthy for a new failure to count as new.
    pub min_healthy_period: Duration,
}

/// What the spec asks for, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Replicas (`spec.replicas`, 1 when absent).
    pub replicas: i32,
    /// `spec.replicas` was absent.
    pub replicas_defaulted: bool,
    /// `spec.version`, as written.
    pub version_string: String,
    /// `spec.version`, parsed.
    pub version: KubeVersion,
    /// Upgrade strategy.
    pub strategy: UpgradeStrategy,
    /// `maxSurge` (0 or 1).
    pub max_surge: i32,
    /// `controlPlaneConfig`, normalised.
    pub config: MicroK8sConfigSpec,
    /// Infrastructure template.
    pub template: TemplateRef,
    /// `spec.rollout.after`.
    pub rollout_after: Option<Timestamp>,
    /// `spec.remediation`.
    pub remediation: RemediationSpec,
    /// What rendering a new machine's bootstrap data would refuse in `controlPlaneConfig`:
    /// no machine is created or replaced meanwhile, while work in flight goes on.
    pub config_problem: Option<crate::spec::SpecProblem>,
}

impl Desired {
    /// The snap track of the spec's version.
    pub fn track(&self) -> Track {
        self.version.track()
    }
}

/// The computed control plane.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// Control plane name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Validated spec.
    pub desired: Desired,
    /// Control plane Machines, oldest first (ties by name).
    pub machines: Vec<MachineView>,
    /// Other Machines of the cluster (workers).
    pub workers: Vec<MachineView>,
    /// Failure domains eligible for control plane machines, sorted.
    pub failure_domains: Vec<String>,
    /// Nodes of the workload cluster (last known).
    pub nodes: Vec<NodeView>,
    /// Workload cluster reachability.
    pub reachability: Reachability,
    /// `status.initialized` was already true.
    pub was_initialized: bool,
    /// The remediation in flight (`remediation-in-progress` annotation).
    pub remediation_in_progress: Option<RemediationData>,
    /// Now.
    pub now: Timestamp,
}

impl ControlPlane {
    /// Sorts machines oldest first, ties by name (stable and deterministic).
    pub fn sort(&mut self) {
        self.machines
            .sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        self.workers.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Control plane Machines not being deleted.
    pub fn active(&self) -> impl Iterator<Item = &MachineView> {
        self.machines.iter().filter(|m| !m.deleting)
    }

    /// Number of control plane Machines not being deleted.
    pub fn active_count(&self) -> i32 {
        i32::try_from(self.active().count()).unwrap_or(i32::MAX)
    }

    /// A machine by name.
    pub fn machine(&self, name: &str) -> Option<&MachineView> {
        self.machines.iter().find(|m| m.name == name)
    }

    /// The workload Node of a Machine: by `nodeRef`, else by providerID, else by a shared
    /// address ([`node_ips`]; only when exactly one Node has it).
    pub fn node_of(&self, m: &MachineView) -> Option<&NodeView> {
        if let Some(n) = &m.node_ref {
            return self.nodes.iter().find(|x| &x.name == n);
        }
        if let Some(pid) = &m.provider_id
            && let Some(n) = self.nodes.iter().find(|x| x.provider_id.as_ref() == Some(pid))
        {
            return Some(n);
        }
        let mut by_ip = self.nodes.iter().filter(|n| n.ips.iter().any(|ip| m.ips.contains(ip)));
        match (by_ip.next(), by_ip.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    /// The Machine's Node exists and is Ready.
    pub fn node_ready(&self, m: &MachineView) -> bool {
        self.node_of(m).is_some_and(|n| n.ready)
    }

    /// The kubelet version a Machine runs: its Node's, else CAPI's copy.
    pub fn kubelet_version(&self, m: &MachineView) -> Option<String> {
        self.node_of(m)
            .and_then(|n| n.kubelet_version.clone())
            .or_else(|| m.node_info_kubelet.clone())
    }

    /// The snap track a Machine's node runs (kubelet), if known.
    pub fn running_track(&self, m: &MachineView) -> Option<Track> {
        self.kubelet_version(m)
            .and_then(|v| KubeVersion::parse(&v).ok())
            .map(|v| v.track())
    }

    /// Whether the control plane is initialised: it already was, or the init node has marked
    /// that it accepts joins, or (for Machines Canonical's provider bootstrapped, which set no
    /// marker) a Node of such a Machine carries MicroK8s' control plane label.
    pub fn initialized(&self) -> bool {
        if self.was_initialized || self.nodes.iter().any(|n| n.accepts_joins) {
            return true;
        }
        self.machines
            .iter()
            .filter(|m| !m.ours)
            .any(|m| self.node_of(m).is_some_and(|n| n.microk8s_control_plane))
    }

    /// The workload cluster's Nodes are being watched successfully.
    pub fn reachable(&self) -> bool {
        self.reachability == Reachability::Reachable
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for table tests.
    use super::*;

    pub fn desired(replicas: i32, version: &str) -> Desired {
        Desired {
            replicas,
            replicas_defaulted: false,
            version_string: version.to_string(),
            version: KubeVersion::parse(version).unwrap(),
            strategy: UpgradeStrategy::Smart,
            max_surge: 1,
            config: MicroK8sConfigSpec::default().normalized(),
            config_problem: None,
            template: TemplateRef {
                group: "infrastructure.cluster.x-k8s.io".into(),
                kind: "SimMachineTemplate".into(),
                name: "tpl".into(),
                api_version: None,
            },
            rollout_after: None,
            remediation: RemediationSpec {
                max_retry: None,
                retry_period: Duration::ZERO,
                min_healthy_period: Duration::from_secs(3600),
            },
        }
    }

    /// A healthy machine `name` at `version` with a Ready node of the same name.
    pub fn healthy(name: &str, created: i64, version: &str) -> MachineView {
        let mut m = MachineView::new(name, created);
        m.version = Some(version.to_string());
        m.node_ref = Some(name.to_string());
        m.ips = vec![format!("10.0.0.{created}")];
        m.provider_id = Some(format!("sim://{name}"));
        m.ready = true;
        m.available = true;
        m.config = Some(MicroK8sConfigSpec::default().normalized());
        m.cloned_from = Some(ClonedFrom {
            name: "tpl".into(),
            group_kind: "SimMachineTemplate.infrastructure.cluster.x-k8s.io".into(),
        });
        m
    }

    pub fn node_for(m: &MachineView, kubelet: &str) -> NodeView {
        NodeView {
            name: m.node_ref.clone().unwrap_or_else(|| m.name.clone()),
            ips: m.ips.clone(),
            provider_id: m.provider_id.clone(),
            ready: true,
            reporting: true,
            kubelet_version: Some(kubelet.to_string()),
            accepts_joins: false,
            microk8s_control_plane: true,
        }
    }

    /// A control plane of healthy machines (all at `version`, Ready nodes), initialised and
    /// reachable.
    pub fn cp(replicas: i32, version: &str, machines: Vec<MachineView>) -> ControlPlane {
        let nodes = machines
            .iter()
            .filter(|m| m.node_ref.is_some())
            .map(|m| node_for(m, m.version.as_deref().unwrap_or(version)))
            .collect();
        let mut cp = ControlPlane {
            name: "cp".into(),
            cluster: "c".into(),
            desired: desired(replicas, version),
            machines,
            workers: vec![],
            failure_domains: vec![],
            nodes,
            reachability: Reachability::Reachable,
            was_initialized: true,
            remediation_in_progress: None,
            now: Timestamp::from_second(100_000).unwrap(),
        };
        cp.sort();
        cp
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;

    #[test]
    fn addresses_are_internal_ips_else_external_ones() {
        use super::node_ips;
        let both = [
            ("Hostname", "h"),
            ("ExternalIP", "203.0.113.5"),
            ("InternalIP", "10.0.0.5"),
            ("InternalIP", ""),
            ("InternalIP", "fd00::5"),
        ];
        assert_eq!(node_ips(both), ["10.0.0.5", "fd00::5"]);
        let public_only = [
            ("ExternalIP", "203.0.113.5"),
            ("Hostname", "h"),
            ("ExternalDNS", "x.example"),
        ];
        assert_eq!(node_ips(public_only), ["203.0.113.5"]);
        assert!(node_ips([("Hostname", "h"), ("InternalIP", "")]).is_empty());
    }

    #[test]
    fn nodes_are_found_by_ref_provider_id_or_unique_ip() {
        let mut a = healthy("a", 1, "v1.33.0");
        let mut cp = cp(1, "v1.33.0", vec![a.clone()]);
        assert_eq!(cp.node_of(&a).map(|n| n.name.as_str()), Some("a"));
        a.node_ref = None;
        assert_eq!(cp.node_of(&a).map(|n| n.name.as_str()), Some("a"));
        a.provider_id = None;
        assert_eq!(cp.node_of(&a).map(|n| n.name.as_str()), Some("a"));
        let mut twin = cp.nodes[0].clone();
        twin.name = "twin".into();
        cp.nodes.push(twin);
        assert!(cp.node_of(&a).is_none(), "an IP shared by two nodes matches neither");
    }

    #[test]
    fn initialised_by_marker_or_canonical_label_or_history() {
        let a = healthy("a", 1, "v1.33.0");
        let mut cp = cp(1, "v1.33.0", vec![a]);
        cp.was_initialized = false;
        assert!(!cp.initialized(), "our machine's control plane label is not the marker");
        cp.nodes[0].accepts_joins = true;
        assert!(cp.initialized());
        cp.nodes[0].accepts_joins = false;
        cp.machines[0].ours = false;
        assert!(cp.initialized(), "Canonical's machine: its control plane label counts");
        cp.machines[0].ours = true;
        cp.was_initialized = true;
        assert!(cp.initialized(), "never cleared");
    }
}
