//! The pure part of the bootstrap controller: given what the reconciler gathered about a
//! `MicroK8sConfig`, its Machine and its Cluster, decide the one next step. No I/O here; every
//! gating row is a table test below.

use std::borrow::Cow;

use mk8s_api::MicroK8sConfig;
use mk8s_api::bootstrap::MicroK8sConfigSpec;
use mk8s_api::capi::{ApiEndpoint, Cluster, ClusterExt, Machine, MachineExt};
use mk8s_api::consts;

/// Condition reasons of `DataSecretAvailable` (and `Ready`), one per wait or problem.
pub mod reason {
    /// The config has no owner Machine yet.
    pub const WAITING_FOR_MACHINE: &str = "WaitingForMachine";
    /// The owner Machine is not (yet) visible.
    pub const WAITING_FOR_MACHINE_OBJECT: &str = "WaitingForMachineObject";
    /// MachinePools are not supported.
    pub const MACHINE_POOL_NOT_SUPPORTED: &str = "MachinePoolNotSupported";
    /// The Machine names no cluster, or the Cluster does not exist.
    pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";
    /// The infrastructure is not ready (Canonical's reason).
    pub const WAITING_FOR_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructure";
    /// The Cluster has no control plane endpoint yet.
    pub const WAITING_FOR_ENDPOINT: &str = "WaitingForControlPlaneEndpoint";
    /// Another control plane machine holds the init lock.
    pub const WAITING_FOR_INIT_LOCK: &str = "WaitingForInitLock";
    /// Before the control plane is initialised, a worker waits for the machine that
    /// initialises it to have a providerID and an address to join through (Canonical's reason
    /// name: its provider waited for the initialisation itself).
    pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlaneAvailable";
    /// Once the control plane is initialised: no control plane machine to join through
    /// (Running, or the cluster's initializer) reports an address.
    pub const WAITING_FOR_JOIN_ADDRESSES: &str = "WaitingForControlPlaneAddresses";
    /// A cluster Secret still belongs to a deleted Cluster of the same name; the garbage
    /// collector is about to delete it.
    pub const WAITING_FOR_STALE_CLUSTER_SECRET: &str = "WaitingForStaleClusterSecretRemoval";
    /// The user must fix the spec or the Machine.
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// A cluster Secret (CA, join token, auth token) is unusable.
    pub const INVALID_CLUSTER_SECRET: &str = "InvalidClusterSecret";
    /// A Secret with the data Secret's name exists and is not ours.
    pub const DATA_SECRET_CONFLICT: &str = "DataSecretConflict";
    /// The bootstrap data exists.
    pub const DATA_SECRET_CREATED: &str = "DataSecretCreated";
    /// Status recovered from the Machine (after a move or a restore).
    pub const RECOVERED: &str = "DataSecretRecoveredFromMachine";
    /// The data Secret was deleted after the node joined; it is not regenerated.
    pub const DELETED_AFTER_JOIN: &str = "DataSecretDeletedAfterJoin";
    /// `JoinTargetsAvailable` (and `Ready`) false: the machine's node has not joined and no
    /// control plane machine has any of the addresses its bootstrap data joins through.
    pub const JOIN_TARGETS_GONE: &str = "JoinTargetsGone";
    /// `JoinTargetsAvailable` true again: a join target is back, or the node joined.
    pub const JOIN_TARGETS_AVAILABLE: &str = "JoinTargetsAvailable";
}

/// The role a machine's bootstrap data gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The first control plane node: creates the cluster.
    Init,
    /// A further control plane node: joins as a dqlite member.
    JoinControlPlane,
    /// A worker.
    Worker,
}

impl Role {
    /// Name used in annotations, logs and the `render` command.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::JoinControlPlane => "join-control-plane",
            Role::Worker => "worker",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "init" => Some(Role::Init),
            "join-control-plane" => Some(Role::JoinControlPlane),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// The owner of a config, as found.
#[derive(Debug)]
pub enum Owner<'a> {
    /// No Machine owner reference yet.
    None,
    /// A Machine owner reference whose Machine is not in the cache (yet).
    Missing(String),
    /// A MachinePool owner.
    MachinePool(String),
    /// The owner Machine.
    Machine(&'a Machine),
}

/// Whether the data Secret (named like the config) exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSecret {
    /// No such Secret.
    Absent,
    /// It exists and this config is its controller.
    Ours,
    /// It exists and belongs to something else.
    Foreign,
}

/// What the reconciler knows.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The config.
    pub config: &'a MicroK8sConfig,
    /// Its owner.
    pub owner: Owner<'a>,
    /// The Cluster, when found.
    pub cluster: Option<&'a Cluster>,
    /// The data Secret.
    pub data_secret: DataSecret,
}

/// The one next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The Cluster or the config is paused: touch nothing but the `Paused` condition.
    Paused(String),
    /// Wait for something that a watch event will announce.
    Wait {
        /// Condition reason.
        reason: &'static str,
        /// What we wait for.
        message: String,
    },
    /// The user must change something; back off until then.
    Invalid {
        /// Condition reason.
        reason: &'static str,
        /// What to change.
        message: String,
    },
    /// The Machine already names its data Secret (moved or restored): adopt that name.
    Recover(String),
    /// The Secret is there and ours but status does not say so (restart mid-way): mark ready.
    Adopt,
    /// Ready, nothing to do.
    Ready,
    /// Ready, but the Secret was deleted after the node joined: report, do not regenerate.
    DeletedAfterJoin,
    /// Render and store bootstrap data for this role.
    Generate(Generate),
}

/// Inputs of generation that the decision already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generate {
    /// The role.
    pub role: Role,
    /// The Machine's Kubernetes version.
    pub version: String,
    /// The Cluster's control plane endpoint.
    pub endpoint: ApiEndpoint,
    /// Name of the Cluster.
    pub cluster: String,
    /// Name of the Machine.
    pub machine: String,
    /// The role comes from an earlier rendering (the data Secret was deleted before the node
    /// joined), not from a fresh decision.
    pub again: bool,
}

/// Annotation recording the role a config's data was rendered for, so that a data Secret
/// deleted before its node joined is rendered again for the same role.
pub const ROLE_ANNOTATION: &str = "bootstrap.cluster.x-k8s.io/microk8s-role";

/// Annotation recording, comma-separated, the addresses a joining config's data joins
/// through, so that a machine left with none of them is reported ([`join_targets_gone`]).
pub const JOIN_ADDRESSES_ANNOTATION: &str = "bootstrap.cluster.x-k8s.io/microk8s-join-addresses";

fn is_paused(facts: &Facts<'_>, cluster: &Cluster) -> Option<String> {
    let annotated = facts
        .config
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(consts::ANNOTATION_PAUSED));
    match (cluster.paused(), annotated) {
        (true, true) => Some(format!(
            "Cluster spec.paused is true and the MicroK8sConfig has the {} annotation",
            consts::ANNOTATION_PAUSED
        )),
        (true, false) => Some("Cluster spec.paused is true".to_string()),
        (false, true) => Some(format!(
            "the MicroK8sConfig has the {} annotation",
            consts::ANNOTATION_PAUSED
        )),
        (false, false) => None,
    }
}

/// Decides the next step (the gating order of Canonical's provider, §2.2 of the reference,
/// with the waits made explicit).
pub fn decide(facts: &Facts<'_>) -> Plan {
    let machine = match &facts.owner {
        Owner::None => {
            return Plan::Wait {
                reason: reason::WAITING_FOR_MACHINE,
                message: "waiting for a Machine to own this MicroK8sConfig".into(),
            };
        }
        Owner::Missing(name) => {
            return Plan::Wait {
                reason: reason::WAITING_FOR_MACHINE_OBJECT,
                message: format!("waiting for owner Machine {name:?} to be visible"),
            };
        }
        Owner::MachinePool(name) => {
            return Plan::Invalid {
                reason: reason::MACHINE_POOL_NOT_SUPPORTED,
                message: format!(
                    "owned by MachinePool {name:?}: MicroK8s bootstrap data is rendered per Machine; use a MachineDeployment"
                ),
            };
        }
        Owner::Machine(m) => *m,
    };
    let Some(cluster) = facts.cluster else {
        let msg = if machine.spec.cluster_name.is_empty() {
            "the owner Machine has no spec.clusterName".to_string()
        } else {
            format!("waiting for Cluster {:?}", machine.spec.cluster_name)
        };
        return Plan::Wait {
            reason: reason::WAITING_FOR_CLUSTER,
            message: msg,
        };
    };
    if let Some(why) = is_paused(facts, cluster) {
        return Plan::Paused(why);
    }
    if !cluster.infrastructure_ready() {
        return Plan::Wait {
            reason: reason::WAITING_FOR_INFRASTRUCTURE,
            message: format!(
                "waiting for the infrastructure of Cluster {:?} to be ready",
                cluster.metadata.name.as_deref().unwrap_or_default()
            ),
        };
    }

    let status = facts.config.status.as_ref();
    let ready_name = status.filter(|s| s.ready).and_then(|s| s.data_secret_name.clone());
    if let Some(name) = machine.spec.bootstrap.data_secret_name.as_ref()
        && ready_name.is_none()
    {
        // The Machine already names bootstrap data (clusterctl move, restore, or a user-supplied
        // dataSecretName): never regenerate.
        return Plan::Recover(name.clone());
    }
    if ready_name.is_some() {
        return match facts.data_secret {
            DataSecret::Ours | DataSecret::Foreign => Plan::Ready,
            DataSecret::Absent if machine.node_name().is_some() => Plan::DeletedAfterJoin,
            DataSecret::Absent => regenerate_or_decide(facts, machine, cluster),
        };
    }
    match facts.data_secret {
        DataSecret::Ours => return Plan::Adopt,
        DataSecret::Foreign => {
            return Plan::Invalid {
                reason: reason::DATA_SECRET_CONFLICT,
                message: format!(
                    "a Secret named {:?} exists and is not controlled by this MicroK8sConfig; delete or rename it",
                    facts_name(facts)
                ),
            };
        }
        DataSecret::Absent => {}
    }
    regenerate_or_decide(facts, machine, cluster)
}

fn facts_name<'a>(facts: &'a Facts<'_>) -> &'a str {
    facts.config.metadata.name.as_deref().unwrap_or_default()
}

fn regenerate_or_decide(facts: &Facts<'_>, machine: &Machine, cluster: &Cluster) -> Plan {
    let Some(endpoint) = cluster.endpoint() else {
        return Plan::Wait {
            reason: reason::WAITING_FOR_ENDPOINT,
            message: "waiting for the Cluster's spec.controlPlaneEndpoint (set by the infrastructure provider)".into(),
        };
    };
    let version = match machine.spec.version.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => {
            return Plan::Invalid {
                reason: reason::INVALID_CONFIGURATION,
                message: format!(
                    "Machine {:?} has no spec.version: set the Kubernetes version (e.g. v1.33.4) on the Machine, its MachineDeployment or its control plane",
                    machine.metadata.name.as_deref().unwrap_or_default()
                ),
            };
        }
    };
    if let Err(e) = mk8s_api::version::KubeVersion::parse(&version) {
        return Plan::Invalid {
            reason: reason::INVALID_CONFIGURATION,
            message: format!("{e}: fix spec.version of the Machine (or of its MachineDeployment / control plane)"),
        };
    }
    // What rendering would refuse, said now rather than after the waits for the control plane.
    if let Err(e) = mk8s_cloudinit::validate_spec(&facts.config.spec, &version) {
        return Plan::Invalid {
            reason: reason::INVALID_CONFIGURATION,
            message: e.to_string(),
        };
    }
    let recorded = facts
        .config
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLE_ANNOTATION))
        .and_then(|r| Role::parse(r));
    let control_plane = machine.is_control_plane();
    let initialized = cluster.control_plane_initialized();
    let again = recorded.is_some_and(|r| (r == Role::Worker) != control_plane);
    let role = match recorded {
        // Rendered before for this role (the data Secret was deleted before the node joined).
        Some(r) if again => r,
        _ if control_plane && !initialized => Role::Init,
        _ if control_plane => Role::JoinControlPlane,
        // Workers do not wait for the initialization: they join through the initializing
        // machine as soon as it has an address (the caller's join addresses), and their node
        // retries the join until that machine accepts it — so a worker's VM boots and installs
        // MicroK8s while the control plane initializes, instead of after.
        _ => Role::Worker,
    };
    Plan::Generate(Generate {
        role,
        version,
        endpoint: endpoint.clone(),
        cluster: cluster.metadata.name.clone().unwrap_or_default(),
        machine: machine.metadata.name.clone().unwrap_or_default(),
        again,
    })
}

/// Addresses to join through: of the cluster's control plane machines (other than `exclude`)
/// that have a providerID and a node to join — phase `Running` (CAPI saw the node: Canonical's
/// rule), or named in `initialized_by`, the machines whose data initializes the cluster: their
/// node accepts joins once it has initialized the cluster, without waiting for CAPI's nodeRef
/// (CAPI connects to a new workload cluster on a 30 s retry, so the first machine's nodeRef
/// can lag its initialization by that much, and every join with it), and before that a
/// joining node retries until it does — the IPv4 InternalIPs, else the IPv4 ExternalIPs, else
/// all InternalIPs, else all ExternalIPs (Canonical's preference of kinds; `microk8s join`
/// takes IPv4 only), in a stable order.
pub fn join_addresses<'a>(
    machines: impl IntoIterator<Item = &'a Machine>,
    cluster: &str,
    exclude: &str,
    initialized_by: &[String],
) -> Vec<String> {
    let mut candidates: Vec<&Machine> = machines
        .into_iter()
        .filter(|m| m.spec.cluster_name == cluster)
        .filter(|m| m.is_control_plane() && !m.is_deleting())
        .filter(|m| m.metadata.name.as_deref() != Some(exclude))
        .filter(|m| m.spec.provider_id.as_deref().is_some_and(|p| !p.is_empty()))
        .filter(|m| {
            m.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                || m.metadata.name.as_ref().is_some_and(|n| initialized_by.contains(n))
        })
        .collect();
    candidates.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), &b.metadata.name))
    });
    let of_kind = |kind: &str| {
        let mut out: Vec<String> = vec![];
        for m in &candidates {
            for a in m.addresses_of(kind) {
                if !out.iter().any(|x| x == a) {
                    out.push(a.to_string());
                }
            }
        }
        out
    };
    let (internal, external) = (of_kind("InternalIP"), of_kind("ExternalIP"));
    // `microk8s join` takes `IPv4:port/token` only (it splits the address at `:`): IPv4
    // addresses of either kind come first, IPv6 ones only when there is nothing else.
    let v4 = |list: &[String]| -> Vec<String> {
        list.iter()
            .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
            .cloned()
            .collect()
    };
    [v4(&internal), v4(&external), internal, external]
        .into_iter()
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// The port scheme (`clusterConfiguration.portCompatibilityRemap`) of the control plane a
/// machine joins: the value the configs of the cluster's control plane machines (other than
/// `exclude`, not being deleted) agree on, `remap_of` reading a machine's config (`None`: not
/// found). `None` when no config is known or they disagree.
pub fn cluster_port_remap<'a>(
    machines: impl IntoIterator<Item = &'a Machine>,
    remap_of: impl Fn(&Machine) -> Option<bool>,
    cluster: &str,
    exclude: &str,
) -> Option<bool> {
    let mut seen = machines
        .into_iter()
        .filter(|m| m.spec.cluster_name == cluster && m.is_control_plane() && !m.is_deleting())
        .filter(|m| m.metadata.name.as_deref() != Some(exclude))
        .filter_map(remap_of);
    let first = seen.next()?;
    seen.all(|v| v == first).then_some(first)
}

/// The spec a joining machine's data is rendered from: its own, with the port scheme of the
/// control plane it joins when that is known and differs. The scheme decides the cluster
/// agent port in the join URLs, so a worker template that leaves `portCompatibilityRemap` at
/// its default while the control plane sets it to false (Canonical's provider then joins
/// on the wrong port until the node gives up) joins all the same, and its own agent listens
/// where the control plane's do.
pub fn with_cluster_ports(spec: &MicroK8sConfigSpec, cluster_remap: Option<bool>) -> Cow<'_, MicroK8sConfigSpec> {
    match cluster_remap {
        Some(v) if v != spec.port_compatibility_remap() => {
            let mut s = spec.clone();
            s.cluster_configuration
                .get_or_insert_with(Default::default)
                .port_compatibility_remap = Some(v);
            Cow::Owned(s)
        }
        _ => Cow::Borrowed(spec),
    }
}

/// The paths of `extraWriteFiles` whose content has Jinja markers (`{{`, `{%`, `{#`). We write
/// files as they are (Canonical's provider had cloud-init render them as Jinja, which failed
/// the whole bootstrap on content such as a Go or Helm template); a user migrating a template
/// that relied on instance data in a file is told so rather than finding the braces on disk.
pub fn jinja_marked_files(spec: &MicroK8sConfigSpec) -> Vec<String> {
    spec.init_configuration
        .iter()
        .flat_map(|i| i.extra_write_files.iter().flatten())
        .filter(|f| ["{{", "{%", "{#"].iter().any(|m| f.content.contains(m)))
        .map(|f| f.path.clone())
        .collect()
}

/// The addresses a joining machine's data joins through when none of them is left: its
/// Machine has no node yet, and no control plane machine of its cluster (other than itself,
/// and not being deleted) has any of `recorded` (the [`JOIN_ADDRESSES_ANNOTATION`]) among its
/// addresses. Its node retries the join against addresses nothing answers on until it gives
/// up; only replacing the Machine helps. This happens to a worker rendered while the control
/// plane initializes when the initializing machine is deleted before it initializes. `None`
/// when the node joined, a target is left, or nothing was recorded (init data; data rendered
/// by another provider).
pub fn join_targets_gone<'a>(
    recorded: Option<&str>,
    machine: &Machine,
    machines: impl IntoIterator<Item = &'a Machine>,
) -> Option<Vec<String>> {
    let recorded: Vec<String> = recorded?
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if recorded.is_empty() || machine.node_name().is_some() {
        return None;
    }
    let left = machines
        .into_iter()
        .filter(|m| m.metadata.namespace == machine.metadata.namespace)
        .filter(|m| m.spec.cluster_name == machine.spec.cluster_name)
        .filter(|m| m.is_control_plane() && !m.is_deleting())
        .filter(|m| m.metadata.name != machine.metadata.name)
        .any(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.addresses.iter().any(|a| recorded.contains(&a.address)))
        });
    (!left).then_some(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: serde_json::Value) -> MicroK8sConfig {
        let mut v = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
                           "metadata": {"name": "cfg", "namespace": "ns"}, "spec": {}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn machine(cp: bool, extra: serde_json::Value) -> Machine {
        let labels = if cp {
            json!({"cluster.x-k8s.io/control-plane": "", "cluster.x-k8s.io/cluster-name": "c"})
        } else {
            json!({"cluster.x-k8s.io/cluster-name": "c"})
        };
        let mut v = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "labels": labels},
            "spec": {"clusterName": "c", "version": "v1.33.4",
                     "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": "cfg"}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn cluster(extra: serde_json::Value) -> Cluster {
        let mut v = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}},
            "status": {"initialization": {"infrastructureProvisioned": true}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn initialized() -> serde_json::Value {
        json!({"status": {"initialization": {"controlPlaneInitialized": true}}})
    }

    fn plan(cfg: &MicroK8sConfig, owner: Owner<'_>, cl: Option<&Cluster>, ds: DataSecret) -> Plan {
        decide(&Facts {
            config: cfg,
            owner,
            cluster: cl,
            data_secret: ds,
        })
    }

    fn reason_of(p: &Plan) -> &'static str {
        match p {
            Plan::Wait { reason, .. } | Plan::Invalid { reason, .. } => reason,
            other => panic!("not a wait: {other:?}"),
        }
    }

    #[test]
    fn gating_rows_in_order() {
        let cfg = config(json!({}));
        let cp = machine(true, json!({}));
        let w = machine(false, json!({}));
        let c = cluster(json!({}));
        let ci = cluster(initialized());
        let absent = DataSecret::Absent;

        assert_eq!(
            reason_of(&plan(&cfg, Owner::None, None, absent)),
            reason::WAITING_FOR_MACHINE
        );
        assert_eq!(
            reason_of(&plan(&cfg, Owner::Missing("m".into()), None, absent)),
            reason::WAITING_FOR_MACHINE_OBJECT
        );
        assert_eq!(
            reason_of(&plan(&cfg, Owner::MachinePool("p".into()), None, absent)),
            reason::MACHINE_POOL_NOT_SUPPORTED
        );
        assert_eq!(
            reason_of(&plan(&cfg, Owner::Machine(&cp), None, absent)),
            reason::WAITING_FOR_CLUSTER
        );

        let paused = cluster(json!({"spec": {"paused": true}}));
        assert!(matches!(
            plan(&cfg, Owner::Machine(&cp), Some(&paused), absent),
            Plan::Paused(_)
        ));
        let annotated = config(json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": ""}}}));
        assert!(matches!(
            plan(&annotated, Owner::Machine(&cp), Some(&c), absent),
            Plan::Paused(_)
        ));

        let no_infra = cluster(json!({"status": {"initialization": {"infrastructureProvisioned": false}}}));
        assert_eq!(
            reason_of(&plan(&cfg, Owner::Machine(&cp), Some(&no_infra), absent)),
            reason::WAITING_FOR_INFRASTRUCTURE
        );
        let v1beta1_infra: Cluster = serde_json::from_value(json!({"apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster", "metadata": {"name": "c"}, "spec": {"controlPlaneEndpoint": {"host": "h", "port": 6443}},
            "status": {"infrastructureReady": true}}))
        .unwrap();
        assert!(matches!(
            plan(&cfg, Owner::Machine(&cp), Some(&v1beta1_infra), absent),
            Plan::Generate(Generate { role: Role::Init, .. })
        ));

        let no_endpoint = cluster(json!({"spec": {"controlPlaneEndpoint": {"host": "", "port": 0}}}));
        assert_eq!(
            reason_of(&plan(&cfg, Owner::Machine(&cp), Some(&no_endpoint), absent)),
            reason::WAITING_FOR_ENDPOINT
        );

        match plan(&cfg, Owner::Machine(&cp), Some(&c), absent) {
            Plan::Generate(g) => {
                assert_eq!(g.role, Role::Init);
                assert_eq!(g.version, "v1.33.4");
                assert_eq!(g.endpoint.port, 6443);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan(&cfg, Owner::Machine(&cp), Some(&ci), absent),
            Plan::Generate(Generate {
                role: Role::JoinControlPlane,
                ..
            })
        ));
        // A worker is a worker before and after the initialization (before it, the caller
        // finds the initializing machine to join through, or waits for its address).
        for cl in [&c, &ci] {
            assert!(matches!(
                plan(&cfg, Owner::Machine(&w), Some(cl), absent),
                Plan::Generate(Generate { role: Role::Worker, .. })
            ));
        }
    }

    #[test]
    fn v1beta1_initialized_condition_counts() {
        let cfg = config(json!({}));
        let cp = machine(true, json!({}));
        let c = cluster(json!({"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True"}]}}));
        assert!(matches!(
            plan(&cfg, Owner::Machine(&cp), Some(&c), DataSecret::Absent),
            Plan::Generate(Generate {
                role: Role::JoinControlPlane,
                ..
            })
        ));
    }

    #[test]
    fn ready_configs_are_never_regenerated() {
        let ready = config(json!({"status": {"ready": true, "dataSecretName": "cfg"}}));
        let cp = machine(true, json!({"spec": {"bootstrap": {"dataSecretName": "cfg"}}}));
        let c = cluster(json!({}));
        assert_eq!(
            plan(&ready, Owner::Machine(&cp), Some(&c), DataSecret::Ours),
            Plan::Ready
        );
        // Deleted before the node joined: rendered again.
        assert!(matches!(
            plan(&ready, Owner::Machine(&cp), Some(&c), DataSecret::Absent),
            Plan::Generate(_)
        ));
        // Deleted after: reported, not regenerated.
        let joined = machine(true, json!({"status": {"nodeRef": {"name": "n"}}}));
        assert_eq!(
            plan(&ready, Owner::Machine(&joined), Some(&c), DataSecret::Absent),
            Plan::DeletedAfterJoin
        );
    }

    #[test]
    fn recorded_role_survives_regeneration() {
        let ready = config(json!({"metadata": {"annotations": {ROLE_ANNOTATION: "init"}},
                                   "status": {"ready": true, "dataSecretName": "cfg"}}));
        let cp = machine(true, json!({}));
        // The cluster got initialized (by this very node) before its nodeRef was set.
        let ci = cluster(initialized());
        assert!(matches!(
            plan(&ready, Owner::Machine(&cp), Some(&ci), DataSecret::Absent),
            Plan::Generate(Generate { role: Role::Init, .. })
        ));
        // A recorded role that contradicts the machine (worker annotation on a CP machine) is ignored.
        let odd = config(json!({"metadata": {"annotations": {ROLE_ANNOTATION: "worker"}}}));
        assert!(matches!(
            plan(&odd, Owner::Machine(&cp), Some(&ci), DataSecret::Absent),
            Plan::Generate(Generate {
                role: Role::JoinControlPlane,
                ..
            })
        ));
    }

    #[test]
    fn recovery_adoption_and_conflicts() {
        let cfg = config(json!({}));
        let c = cluster(json!({}));
        let moved = machine(true, json!({"spec": {"bootstrap": {"dataSecretName": "cfg"}}}));
        assert_eq!(
            plan(&cfg, Owner::Machine(&moved), Some(&c), DataSecret::Ours),
            Plan::Recover("cfg".into())
        );
        let user = machine(false, json!({"spec": {"bootstrap": {"dataSecretName": "my-own-data"}}}));
        assert_eq!(
            plan(&cfg, Owner::Machine(&user), Some(&c), DataSecret::Absent),
            Plan::Recover("my-own-data".into())
        );
        let cp = machine(true, json!({}));
        assert_eq!(plan(&cfg, Owner::Machine(&cp), Some(&c), DataSecret::Ours), Plan::Adopt);
        assert_eq!(
            reason_of(&plan(&cfg, Owner::Machine(&cp), Some(&c), DataSecret::Foreign)),
            reason::DATA_SECRET_CONFLICT
        );
    }

    #[test]
    fn bad_machine_versions_are_invalid_not_panics() {
        let cfg = config(json!({}));
        let c = cluster(json!({}));
        for v in [json!(null), json!(""), json!("v1.28"), json!("latest")] {
            let m = machine(true, json!({"spec": {"version": v}}));
            let p = plan(&cfg, Owner::Machine(&m), Some(&c), DataSecret::Absent);
            assert_eq!(reason_of(&p), reason::INVALID_CONFIGURATION, "{v}: {p:?}");
        }
    }

    #[test]
    fn a_spec_rendering_would_refuse_is_invalid_before_any_wait() {
        let c = cluster(json!({}));
        let worker = machine(false, json!({}));
        let good = config(
            json!({"spec": {"initConfiguration": {"snapstoreProxyDomain": "snap.example:8443", "snapstoreProxyId": "x"}}}),
        );
        let p = plan(&good, Owner::Machine(&worker), Some(&c), DataSecret::Absent);
        assert!(!matches!(p, Plan::Invalid { .. }), "{p:?}");
        for bad in [
            json!({"snapstoreProxyDomain": "https://snap.example", "snapstoreProxyId": "x"}),
            json!({"extraWriteFiles": [{"path": "/etc/dir/", "content": "", "owner": "root:root", "permissions": "0644"}]}),
            json!({"addons": ["dns", ""]}),
        ] {
            let cfg = config(json!({"spec": {"initConfiguration": bad.clone()}}));
            let p = plan(&cfg, Owner::Machine(&worker), Some(&c), DataSecret::Absent);
            assert_eq!(reason_of(&p), reason::INVALID_CONFIGURATION, "{bad}: {p:?}");
        }
    }

    #[test]
    fn join_addresses_prefer_internal_ips_of_running_cp_machines() {
        let mk = |name: &str, cp: bool, phase: &str, pid: bool, addrs: serde_json::Value, created: &str| {
            machine(
                cp,
                json!({"metadata": {"name": name, "creationTimestamp": created},
                       "spec": {"providerID": if pid { json!(format!("sim://{name}")) } else { json!(null) }},
                       "status": {"phase": phase, "addresses": addrs}}),
            )
        };
        let internal =
            |ip: &str| json!([{"type": "InternalIP", "address": ip}, {"type": "ExternalIP", "address": "1.1.1.1"}]);
        let machines = vec![
            mk("b", true, "Running", true, internal("10.0.0.2"), "2026-01-01T00:00:02Z"),
            mk("a", true, "Running", true, internal("10.0.0.1"), "2026-01-01T00:00:01Z"),
            mk(
                "prov",
                true,
                "Provisioned",
                true,
                internal("10.0.0.3"),
                "2026-01-01T00:00:03Z",
            ),
            mk(
                "nopid",
                true,
                "Running",
                false,
                internal("10.0.0.4"),
                "2026-01-01T00:00:04Z",
            ),
            mk(
                "worker",
                false,
                "Running",
                true,
                internal("10.0.0.5"),
                "2026-01-01T00:00:05Z",
            ),
            mk(
                "self",
                true,
                "Running",
                true,
                internal("10.0.0.6"),
                "2026-01-01T00:00:06Z",
            ),
        ];
        assert_eq!(join_addresses(&machines, "c", "self", &[]), ["10.0.0.1", "10.0.0.2"]);
        assert!(join_addresses(&machines, "other", "self", &[]).is_empty());
        // The machine that initialized the cluster counts before CAPI's nodeRef makes it
        // Running; still only with a providerID, never the machine itself or a worker.
        let init = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            join_addresses(&machines, "c", "self", &init(&["prov"])),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(
            join_addresses(&machines, "c", "self", &init(&["nopid", "worker", "self"])),
            ["10.0.0.1", "10.0.0.2"]
        );
        let first = vec![mk(
            "first",
            true,
            "Provisioned",
            true,
            internal("10.0.0.9"),
            "2026-01-01T00:00:01Z",
        )];
        assert!(join_addresses(&first, "c", "self", &[]).is_empty(), "not Running yet");
        assert_eq!(join_addresses(&first, "c", "self", &init(&["first"])), ["10.0.0.9"]);
        let external_only = vec![mk(
            "x",
            true,
            "Running",
            true,
            json!([{"type": "ExternalIP", "address": "203.0.113.1"}, {"type": "Hostname", "address": "x"}]),
            "2026-01-01T00:00:01Z",
        )];
        assert_eq!(join_addresses(&external_only, "c", "self", &[]), ["203.0.113.1"]);
        // One running control plane machine with these addresses: the join addresses.
        let cases = [
            // Dual stack: IPv4 only (microk8s join cannot parse an IPv6 URL).
            (
                json!([{"type": "InternalIP", "address": "fd00::5"}, {"type": "InternalIP", "address": "10.0.0.5"}]),
                "10.0.0.5",
            ),
            // IPv6-only stays.
            (json!([{"type": "InternalIP", "address": "fd00::5"}]), "fd00::5"),
            // IPv6 InternalIPs, IPv4 ExternalIPs: the IPv4 ones.
            (
                json!([{"type": "InternalIP", "address": "fd00::6"}, {"type": "ExternalIP", "address": "203.0.113.6"}]),
                "203.0.113.6",
            ),
        ];
        for (addrs, want) in cases {
            let one = [mk("m", true, "Running", true, addrs, "2024-01-01T00:00:00Z")];
            assert_eq!(join_addresses(&one, "c", "self", &[]), [want]);
        }
    }

    #[test]
    fn files_with_jinja_markers_are_named() {
        let file = |path: &str, content: &str| mk8s_api::bootstrap::CloudInitWriteFile {
            content: content.into(),
            path: path.into(),
            permissions: "0644".into(),
            owner: "root:root".into(),
        };
        let spec = MicroK8sConfigSpec {
            init_configuration: Some(mk8s_api::bootstrap::InitConfiguration {
                extra_write_files: Some(vec![
                    file("/a", "host={{ ds.meta_data.local_hostname }}"),
                    file("/b", "plain { braces }"),
                    file("/c", "{% if x %}y{% endif %}"),
                    file("/d", "{# note #}"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(jinja_marked_files(&spec), ["/a", "/c", "/d"]);
        assert!(jinja_marked_files(&MicroK8sConfigSpec::default()).is_empty());
    }

    #[test]
    fn joining_machines_take_the_control_planes_port_scheme() {
        let mk = |name: &str, cp: bool, deleting: bool| {
            let mut meta = json!({"name": name});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            machine(cp, json!({"metadata": meta, "spec": {}}))
        };
        let machines = vec![
            mk("a", true, false),
            mk("b", true, false),
            mk("gone", true, true),
            mk("w", false, false),
            mk("self", true, false),
        ];
        let remap = |table: &'static [(&'static str, bool)]| {
            move |m: &Machine| {
                table
                    .iter()
                    .find(|(n, _)| m.metadata.name.as_deref() == Some(n))
                    .map(|(_, v)| *v)
            }
        };
        let agree = remap(&[("a", false), ("b", false), ("gone", true), ("w", true), ("self", true)]);
        assert_eq!(cluster_port_remap(&machines, agree, "c", "self"), Some(false));
        assert_eq!(
            cluster_port_remap(&machines, remap(&[("a", false)]), "c", "self"),
            Some(false),
            "unknown configs do not count"
        );
        assert_eq!(
            cluster_port_remap(&machines, remap(&[("a", false), ("b", true)]), "c", "self"),
            None,
            "disagreement"
        );
        assert_eq!(cluster_port_remap(&machines, remap(&[]), "c", "self"), None);
        assert_eq!(
            cluster_port_remap(&machines, remap(&[("a", false)]), "other", "self"),
            None
        );

        let default = MicroK8sConfigSpec::default();
        assert!(matches!(with_cluster_ports(&default, None), Cow::Borrowed(_)));
        assert!(matches!(with_cluster_ports(&default, Some(true)), Cow::Borrowed(_)));
        let aligned = with_cluster_ports(&default, Some(false));
        assert!(!aligned.port_compatibility_remap());
        let off = MicroK8sConfigSpec {
            cluster_configuration: Some(mk8s_api::bootstrap::ClusterConfiguration {
                port_compatibility_remap: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(with_cluster_ports(&off, Some(true)).port_compatibility_remap());
    }

    #[test]
    fn a_joining_machine_is_stranded_only_when_every_recorded_target_is_gone_before_it_joins() {
        let cp = |name: &str, ip: &str, extra: serde_json::Value| {
            let mut m = machine(
                true,
                json!({"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
            );
            let mut v = serde_json::to_value(&m).unwrap();
            merge(&mut v, extra);
            m = serde_json::from_value(v).unwrap();
            m
        };
        let worker = machine(false, json!({"metadata": {"name": "w"}}));
        let joined = machine(
            false,
            json!({"metadata": {"name": "w"}, "status": {"nodeRef": {"name": "w"}}}),
        );
        let init = cp("init", "10.0.0.1", json!({}));
        let other = cp("other", "10.0.0.2", json!({}));
        let deleting = cp(
            "init",
            "10.0.0.1",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"]}}),
        );
        let elsewhere = {
            let mut m = cp("init", "10.0.0.1", json!({}));
            m.spec.cluster_name = "d".into();
            m
        };
        let gone =
            |recorded: Option<&str>, m: &Machine, ms: &[&Machine]| join_targets_gone(recorded, m, ms.iter().copied());

        // A target is left: nothing to report.
        assert_eq!(gone(Some("10.0.0.1"), &worker, &[&init]), None);
        assert_eq!(gone(Some("10.0.0.1,10.0.0.2"), &worker, &[&other]), None);
        // Every target deleted, being deleted, or only in another cluster: stranded.
        assert_eq!(gone(Some("10.0.0.1"), &worker, &[]), Some(vec!["10.0.0.1".to_string()]));
        assert_eq!(
            gone(Some("10.0.0.1, 10.0.0.3"), &worker, &[&deleting, &other]),
            Some(vec!["10.0.0.1".to_string(), "10.0.0.3".to_string()])
        );
        assert_eq!(
            gone(Some("10.0.0.1"), &worker, &[&elsewhere]),
            Some(vec!["10.0.0.1".to_string()])
        );
        // A machine is no target of itself; a worker with the address is no target.
        let self_cp = cp("w", "10.0.0.1", json!({}));
        assert!(gone(Some("10.0.0.1"), &self_cp, &[&self_cp]).is_some());
        let worker_with_ip = machine(
            false,
            json!({"metadata": {"name": "x"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        );
        assert!(gone(Some("10.0.0.1"), &worker, &[&worker_with_ip]).is_some());
        // The node joined, nothing recorded, or an empty record: nothing to report.
        assert_eq!(gone(Some("10.0.0.1"), &joined, &[]), None);
        assert_eq!(gone(None, &worker, &[]), None);
        assert_eq!(gone(Some(" , "), &worker, &[]), None);
    }
}
