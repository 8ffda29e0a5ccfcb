//! The CAPI core objects the providers read, as partial structs tolerant of both the
//! `cluster.x-k8s.io/v1beta1` and `v1beta2` shapes.
//!
//! Only the fields we use are modelled; unknown fields are ignored. These objects are never
//! written back whole (that would drop what we do not model): providers only create objects
//! they own or patch individual fields.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::{ApiResource, Object};
use serde::{Deserialize, Deserializer, Serialize};

use crate::conditions::{self, Condition};

/// API group of the CAPI core objects.
pub const GROUP: &str = "cluster.x-k8s.io";

/// Which version of `cluster.x-k8s.io` the management cluster serves and we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreVersion {
    /// CAPI v1.11 and newer.
    V1Beta2,
    /// CAPI up to v1.10 (best effort).
    V1Beta1,
}

impl CoreVersion {
    /// `v1beta2` or `v1beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreVersion::V1Beta2 => "v1beta2",
            CoreVersion::V1Beta1 => "v1beta1",
        }
    }

    /// Picks the newest version we support among those served.
    pub fn pick<'a>(served: impl IntoIterator<Item = &'a str>) -> Option<CoreVersion> {
        let served: Vec<&str> = served.into_iter().collect();
        if served.contains(&"v1beta2") {
            Some(CoreVersion::V1Beta2)
        } else if served.contains(&"v1beta1") {
            Some(CoreVersion::V1Beta1)
        } else {
            None
        }
    }

    fn resource(self, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: GROUP.to_string(),
            version: self.as_str().to_string(),
            api_version: format!("{GROUP}/{}", self.as_str()),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `Cluster`.
    pub fn cluster(self) -> ApiResource {
        self.resource("Cluster", "clusters")
    }

    /// `Machine`.
    pub fn machine(self) -> ApiResource {
        self.resource("Machine", "machines")
    }

    /// `apiVersion` string of core objects.
    pub fn api_version(self) -> String {
        format!("{GROUP}/{}", self.as_str())
    }
}

/// A CAPI `Cluster` (partial).
pub type Cluster = Object<ClusterSpec, ClusterStatus>;
/// A CAPI `Machine` (partial).
pub type Machine = Object<MachineSpec, MachineStatus>;

/// A reference in either shape: v1beta1 `ObjectReference` (`apiVersion`, `namespace`) or
/// v1beta2 `ContractVersionedObjectReference` (`apiGroup`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjRef {
    /// v1beta1 shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// v1beta2 shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (v1beta1 shape only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjRef {
    /// The API group, from whichever shape is present.
    pub fn group(&self) -> &str {
        if let Some(g) = self.api_group.as_deref() {
            return g;
        }
        match self.api_version.as_deref() {
            Some(av) => av.rsplit_once('/').map(|(g, _)| g).unwrap_or(""),
            None => "",
        }
    }

    /// Whether it refers to that group and kind (versions are ignored on purpose).
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group() == group && self.kind == kind
    }
}

/// `Cluster.spec` (partial).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Reconciliation of the cluster's objects is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Where the workload API server is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// The control plane object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_ref: Option<ObjRef>,
    /// The infrastructure cluster object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ObjRef>,
}

/// Host and port of an API server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiEndpoint {
    /// Host name or IP address.
    #[serde(default)]
    pub host: String,
    /// Port.
    #[serde(default)]
    pub port: i32,
}

impl ApiEndpoint {
    /// Set: a host and a port in range.
    pub fn is_valid(&self) -> bool {
        !self.host.is_empty() && (1..=65535).contains(&self.port)
    }
}

/// `Cluster.status` (partial).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// v1beta1: the infrastructure is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ready: Option<bool>,
    /// v1beta1: the control plane is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_ready: Option<bool>,
    /// v1beta2: initialization progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitialization>,
    /// Conditions (v1beta2 shape on v1beta2, v1beta1 shape on v1beta1).
    #[serde(default, deserialize_with = "null_as_default")]
    pub conditions: Vec<Condition>,
    /// v1beta2: the old conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<CoreDeprecated>,
    /// Failure domains, from the v1beta2 list or the v1beta1 map.
    #[serde(default, deserialize_with = "failure_domains")]
    pub failure_domains: Vec<FailureDomain>,
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// `Cluster.status.initialization` (v1beta2).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInitialization {
    /// The infrastructure is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// The control plane is initialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

/// `status.deprecated` of a v1beta2 core object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CoreDeprecated {
    /// The v1beta1 view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1beta1: Option<CoreDeprecatedV1Beta1>,
}

/// The v1beta1 view of a v1beta2 core object's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CoreDeprecatedV1Beta1 {
    /// v1beta1 conditions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub conditions: Vec<Condition>,
}

/// A failure domain of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Suitable for control plane machines.
    #[serde(default)]
    pub control_plane: bool,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn failure_domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FailureDomain>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        List(Vec<FailureDomain>),
        Map(BTreeMap<String, MapEntry>),
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MapEntry {
        #[serde(default)]
        control_plane: bool,
    }
    Ok(match Option::<Shape>::deserialize(d)? {
        None => vec![],
        Some(Shape::List(list)) => list,
        Some(Shape::Map(map)) => map
            .into_iter()
            .map(|(name, e)| FailureDomain {
                name,
                control_plane: e.control_plane,
            })
            .collect(),
    })
}

impl ClusterStatus {
    fn any_condition_true(&self, type_: &str) -> bool {
        conditions::is_true(&self.conditions, type_)
            || self
                .deprecated
                .as_ref()
                .and_then(|d| d.v1beta1.as_ref())
                .is_some_and(|v| conditions::is_true(&v.conditions, type_))
    }
}

/// Convenience accessors over both contract shapes.
pub trait ClusterExt {
    /// `spec.paused`.
    fn paused(&self) -> bool;
    /// The infrastructure is ready (v1beta1 `status.infrastructureReady` or v1beta2
    /// `status.initialization.infrastructureProvisioned`).
    fn infrastructure_ready(&self) -> bool;
    /// CAPI reports the control plane initialized (field or `ControlPlaneInitialized`).
    fn control_plane_initialized(&self) -> bool;
    /// A valid control plane endpoint, if set.
    fn endpoint(&self) -> Option<&ApiEndpoint>;
    /// Failure domains suitable for control plane machines.
    fn control_plane_failure_domains(&self) -> Vec<String>;
    /// The uid of the deleted Cluster an object with these owner references belongs to,
    /// when its Cluster owners of this Cluster's name are all another Cluster (uid) than this
    /// one: a Cluster deleted and created again under its name (GitOps, CI) before the garbage
    /// collector removed its Secrets. Using them would give the new cluster the old CA and
    /// tokens, and then lose them to the collector. Owners of another name are not counted: a
    /// copy owned by another live Cluster is its user's business.
    fn stale_owner_in(&self, owners: &[OwnerReference]) -> Option<String>;
}

/// A hash of what the providers read from a Cluster, for watches that wake reconciles only
/// when it changes: the whole object but its conditions (CAPI rewrites them many times while
/// a cluster comes up, and the providers decide nothing from them but whether the control
/// plane is initialized, which stays in), its phase and `controlPlaneReady` (read by
/// neither provider; CAPI moves the phase three times) and its bookkeeping metadata
/// (`resourceVersion`, managed fields).
pub fn cluster_fingerprint(c: &Cluster) -> Option<u64> {
    let initialized = c.control_plane_initialized();
    let mut c = c.clone();
    c.metadata.resource_version = None;
    c.metadata.managed_fields = None;
    if let Some(st) = c.status.as_mut() {
        st.conditions.clear();
        st.deprecated = None;
        st.phase = None;
        st.control_plane_ready = None;
    }
    hash_json(&(c, initialized))
}

/// A hash of what the bootstrap provider reads from a Machine, for its Machine watch: the
/// whole object but its conditions and its bookkeeping metadata. CAPI rewrites a Machine's
/// conditions a dozen times while it comes up (bootstrap, infrastructure, node health), and
/// each woke its config and, for a control plane Machine, every config of its cluster; a
/// config reads the Machine's spec, metadata, phase, addresses and node, which stay in.
pub fn machine_fingerprint(m: &Machine) -> Option<u64> {
    let mut m = m.clone();
    m.metadata.resource_version = None;
    m.metadata.managed_fields = None;
    if let Some(st) = m.status.as_mut() {
        st.conditions.clear();
        st.deprecated = None;
    }
    hash_json(&m)
}

/// A hash of an object's JSON form.
pub fn hash_json<T: Serialize>(v: &T) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = serde_json::to_vec(v).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Whether an owner reference points at a CAPI Cluster (any version of the core group).
pub fn is_cluster_owner(o: &OwnerReference) -> bool {
    o.kind == "Cluster" && o.api_version.strip_prefix(GROUP).is_some_and(|v| v.starts_with('/'))
}

impl ClusterExt for Cluster {
    fn paused(&self) -> bool {
        self.spec.paused.unwrap_or(false)
    }

    fn infrastructure_ready(&self) -> bool {
        let Some(st) = &self.status else { return false };
        st.infrastructure_ready == Some(true)
            || st
                .initialization
                .as_ref()
                .and_then(|i| i.infrastructure_provisioned)
                .unwrap_or(false)
    }

    fn control_plane_initialized(&self) -> bool {
        let Some(st) = &self.status else { return false };
        st.initialization
            .as_ref()
            .and_then(|i| i.control_plane_initialized)
            .unwrap_or(false)
            || st.any_condition_true("ControlPlaneInitialized")
    }

    fn endpoint(&self) -> Option<&ApiEndpoint> {
        self.spec.control_plane_endpoint.as_ref().filter(|e| e.is_valid())
    }

    fn control_plane_failure_domains(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .status
            .as_ref()
            .map(|s| {
                s.failure_domains
                    .iter()
                    .filter(|f| f.control_plane && !f.name.is_empty())
                    .map(|f| f.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    fn stale_owner_in(&self, owners: &[OwnerReference]) -> Option<String> {
        let name = self.metadata.name.as_deref()?;
        let uid = self.metadata.uid.as_deref()?;
        let mut named = owners
            .iter()
            .filter(|o| is_cluster_owner(o) && o.name == name)
            .peekable();
        let first = named.peek().map(|o| o.uid.clone())?;
        named.all(|o| o.uid != uid).then_some(first)
    }
}

/// `Machine.spec` (partial).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    /// Name of the Cluster.
    #[serde(default)]
    pub cluster_name: String,
    /// Bootstrap configuration.
    #[serde(default)]
    pub bootstrap: MachineBootstrap,
    /// Infrastructure machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ObjRef>,
    /// Kubernetes version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provider ID of the machine (copied from the infrastructure machine by CAPI).
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
}

/// `Machine.spec.bootstrap`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineBootstrap {
    /// The bootstrap config object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ObjRef>,
    /// Name of the bootstrap data Secret, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// `Machine.status` (partial).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// The workload Node of the machine, once CAPI has matched it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<NodeRef>,
    /// Node information copied from the workload Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeInfo>,
    /// Addresses of the machine.
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<MachineAddress>,
    /// Phase (`Pending`, `Provisioning`, `Provisioned`, `Running`, `Deleting`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub conditions: Vec<Condition>,
    /// v1beta2: the old conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<CoreDeprecated>,
}

/// `Machine.status.nodeRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRef {
    /// Node name.
    #[serde(default)]
    pub name: String,
}

/// `Machine.status.nodeInfo` (partial).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Kubelet version, e.g. `v1.33.4`.
    #[serde(default)]
    pub kubelet_version: String,
}

/// A machine address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, …
    #[serde(rename = "type", default)]
    pub type_: String,
    /// The address.
    #[serde(default)]
    pub address: String,
}

/// Convenience accessors over both contract shapes.
pub trait MachineExt {
    /// Labelled as a control plane machine.
    fn is_control_plane(&self) -> bool;
    /// The condition of that type (v1beta2 list first, then the v1beta1 list).
    fn condition(&self, type_: &str) -> Option<&Condition>;
    /// Being deleted.
    fn is_deleting(&self) -> bool;
    /// The node name, once CAPI has set `status.nodeRef`.
    fn node_name(&self) -> Option<&str>;
    /// Addresses of one type, in order.
    fn addresses_of(&self, type_: &str) -> Vec<&str>;
}

impl MachineExt for Machine {
    fn is_control_plane(&self) -> bool {
        self.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(crate::consts::LABEL_CONTROL_PLANE))
    }

    fn condition(&self, type_: &str) -> Option<&Condition> {
        let st = self.status.as_ref()?;
        conditions::find(&st.conditions, type_).or_else(|| {
            st.deprecated
                .as_ref()
                .and_then(|d| d.v1beta1.as_ref())
                .and_then(|v| conditions::find(&v.conditions, type_))
        })
    }

    fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn node_name(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.node_ref.as_ref())
            .map(|n| n.name.as_str())
            .filter(|n| !n.is_empty())
    }

    fn addresses_of(&self, type_: &str) -> Vec<&str> {
        self.status
            .as_ref()
            .map(|s| {
                s.addresses
                    .iter()
                    .filter(|a| a.type_ == type_ && !a.address.is_empty())
                    .map(|a| a.address.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_v1beta2_cluster() {
        let c: Cluster = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443},
                     "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "MicroK8sControlPlane", "name": "cp"}},
            "status": {"initialization": {"infrastructureProvisioned": true},
                       "failureDomains": [{"name": "b", "controlPlane": true}, {"name": "a", "controlPlane": true}, {"name": "w"}],
                       "conditions": [{"type": "ControlPlaneInitialized", "status": "True", "reason": "x", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        assert!(c.infrastructure_ready());
        assert!(c.control_plane_initialized());
        assert_eq!(c.control_plane_failure_domains(), ["a", "b"]);
        assert!(
            c.spec
                .control_plane_ref
                .unwrap()
                .is("controlplane.cluster.x-k8s.io", "MicroK8sControlPlane")
        );
    }

    #[test]
    fn cluster_fingerprints_ignore_conditions_but_not_what_providers_read() {
        let c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}},
            "status": {"initialization": {"infrastructureProvisioned": true},
                       "conditions": [{"type": "Available", "status": "False", "reason": "A", "message": "m1",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let fp = cluster_fingerprint(&c);
        assert!(fp.is_some());
        let mut noise = c.clone();
        noise.metadata.resource_version = Some("2".into());
        noise.status.as_mut().unwrap().conditions[0].message = "m2".into();
        noise.status.as_mut().unwrap().phase = Some("Provisioned".into());
        noise.status.as_mut().unwrap().control_plane_ready = Some(true);
        assert_eq!(cluster_fingerprint(&noise), fp);
        let edits: [fn(&mut Cluster); 4] = [
            |c| c.spec.paused = Some(true),
            |c| {
                c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            },
            |c| c.status.as_mut().unwrap().initialization = None,
            // v1beta1 reports the initialization as a condition.
            |c| {
                c.status.as_mut().unwrap().conditions[0].type_ = "ControlPlaneInitialized".into();
                c.status.as_mut().unwrap().conditions[0].status = "True".into();
            },
        ];
        for edit in edits {
            let mut changed = c.clone();
            edit(&mut changed);
            assert_ne!(cluster_fingerprint(&changed), fp, "{changed:?}");
        }
    }

    #[test]
    fn machine_fingerprints_ignore_conditions_but_not_what_configs_read() {
        let m: Machine = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "resourceVersion": "1",
                         "labels": {"cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": "c", "version": "v1.32.0", "bootstrap": {"configRef": {"name": "cfg"}}},
            "status": {"phase": "Provisioning",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "A", "message": "m1",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let fp = machine_fingerprint(&m);
        assert!(fp.is_some());
        let mut noise = m.clone();
        noise.metadata.resource_version = Some("2".into());
        noise.status.as_mut().unwrap().conditions[0].message = "m2".into();
        let extra = noise.status.as_ref().unwrap().conditions[0].clone();
        noise.status.as_mut().unwrap().conditions.push(extra);
        assert_eq!(machine_fingerprint(&noise), fp);
        let edits: [fn(&mut Machine); 6] = [
            |m| m.status.as_mut().unwrap().phase = Some("Running".into()),
            |m| {
                m.status.as_mut().unwrap().addresses = vec![MachineAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }]
            },
            |m| m.status.as_mut().unwrap().node_ref = Some(NodeRef { name: "n".into() }),
            |m| m.spec.provider_id = Some("sim://m".into()),
            |m| {
                m.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            },
            |m| {
                m.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .remove(crate::consts::LABEL_CONTROL_PLANE);
            },
        ];
        for edit in edits {
            let mut changed = m.clone();
            edit(&mut changed);
            assert_ne!(machine_fingerprint(&changed), fp, "{changed:?}");
        }
    }

    #[test]
    fn reads_v1beta1_cluster() {
        let c: Cluster = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": "c"},
            "spec": {"controlPlaneRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlane", "name": "cp", "namespace": "ns"}},
            "status": {"infrastructureReady": true,
                       "failureDomains": {"z1": {"controlPlane": true}, "z2": {"controlPlane": false}},
                       "conditions": [{"type": "ControlPlaneInitialized", "status": "False", "severity": "Info"}]}
        }))
        .unwrap();
        assert!(c.infrastructure_ready());
        assert!(!c.control_plane_initialized());
        assert_eq!(c.control_plane_failure_domains(), ["z1"]);
        assert!(c.endpoint().is_none());
        assert!(
            c.spec
                .control_plane_ref
                .unwrap()
                .is("controlplane.cluster.x-k8s.io", "MicroK8sControlPlane")
        );
    }

    #[test]
    fn reads_machine_with_nulls_and_unknown_fields() {
        let m: Machine = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "labels": {"cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": "c", "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": "m"}},
                     "version": "v1.33.1", "providerID": "sim://m", "somethingNew": 1},
            "status": {"addresses": null, "conditions": null, "nodeRef": {"name": "n"}}
        }))
        .unwrap();
        assert!(m.is_control_plane());
        assert_eq!(m.node_name(), Some("n"));
        assert_eq!(m.spec.provider_id.as_deref(), Some("sim://m"));
        assert!(m.addresses_of("InternalIP").is_empty());
    }

    #[test]
    fn picks_newest_served_version() {
        assert_eq!(CoreVersion::pick(["v1beta1", "v1beta2"]), Some(CoreVersion::V1Beta2));
        assert_eq!(CoreVersion::pick(["v1beta1"]), Some(CoreVersion::V1Beta1));
        assert_eq!(CoreVersion::pick(["v1alpha4"]), None);
    }
}
