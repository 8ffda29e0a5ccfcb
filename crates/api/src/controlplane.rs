//! `controlplane.cluster.x-k8s.io/v1beta1`: `MicroK8sControlPlane` and the new
//! `MicroK8sControlPlaneTemplate`.
//!
//! Wire-compatible with Canonical's v0.6.11 API, plus the optional fields of the CAPI v1beta2
//! control plane contract under KCP's v1beta2 names.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{MicroK8sConfigSpec, ObjectMetaTemplate};
use crate::conditions::{Condition, DeprecatedStatus};

/// Pattern of `spec.version` (Canonical's, kept so that existing objects stay valid).
pub const VERSION_PATTERN: &str = r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-0-9a-zA-Z_\.+]*)?$";

/// Desired state of a MicroK8s control plane.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "controlplane.cluster.x-k8s.io",
    version = "v1beta1",
    kind = "MicroK8sControlPlane",
    plural = "microk8scontrolplanes",
    singular = "microk8scontrolplane",
    shortname = "mcp",
    category = "cluster-api",
    namespaced,
    status = "MicroK8sControlPlaneStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    label("cluster.x-k8s.io/provider", "control-plane-microk8s"),
    label("cluster.x-k8s.io/v1beta2", "v1beta1"),
    printcolumn(
        name = "Ready",
        type_ = "boolean",
        json_path = ".status.ready",
        description = "MicroK8sControlPlane API Server is ready to receive requests"
    ),
    printcolumn(
        name = "Initialized",
        type_ = "boolean",
        json_path = ".status.initialized",
        description = "The first control plane node accepts joins"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Total number of non-terminated machines targeted by this control plane"
    ),
    printcolumn(
        name = "Ready Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Total number of fully running and ready control plane machines"
    ),
    printcolumn(
        name = "Unavailable Replicas",
        type_ = "integer",
        json_path = ".status.unavailableReplicas",
        description = "Total number of unavailable machines targeted by this control plane"
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.upToDateReplicas",
        description = "Machines that match the desired spec"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "Desired Kubernetes version"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "MicroK8sControlPlane manages the control plane Machines of a MicroK8s cluster: it creates them, keeps the cluster's kubeconfig, scales, upgrades and remediates them without losing dqlite quorum."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": STRICT_NEEDS_125_RULE, "message": STRICT_NEEDS_125_MSG},
    {"rule": MAX_SURGE_ZERO_RULE, "message": MAX_SURGE_ZERO_MSG},
]))]
pub struct MicroK8sControlPlaneSpec {
    /// Number of control plane machines. Odd numbers keep dqlite's quorum most tolerant
    /// (3 tolerates one lost node, 5 two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,

    /// Kubernetes version of the control plane, e.g. `v1.33.4`. MicroK8s installs the newest
    /// patch of the `<major>.<minor>` snap track, so only major and minor select the channel.
    #[schemars(
        regex(pattern = r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-0-9a-zA-Z_\.+]*)?$"),
        length(min = 2, max = 256)
    )]
    pub version: String,

    /// How control plane machines are created: the infrastructure template to clone and the
    /// metadata and settings given to each Machine.
    pub machine_template: MachineTemplate,

    /// How version upgrades are done: `RollingUpgrade` (replace machines one by one),
    /// `InPlaceUpgrade` (refresh the snap on each node, one at a time) or `SmartUpgrade`
    /// (in place below 3 replicas, rolling from 3). Empty or absent means `SmartUpgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "InPlaceUpgrade", "RollingUpgrade", "SmartUpgrade"]))]
    pub upgrade_strategy: Option<String>,

    /// The bootstrap configuration given to every control plane machine's MicroK8sConfig.
    /// Changing it rolls the control plane out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub control_plane_config: Option<MicroK8sConfigSpec>,

    /// Rollout settings (v1beta2 contract; added by this implementation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,

    /// Limits on the remediation of unhealthy control plane machines reported by a
    /// MachineHealthCheck (added by this implementation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
}

/// CEL: strict confinement needs MicroK8s 1.25 or newer.
pub const STRICT_NEEDS_125_RULE: &str = "!has(self.controlPlaneConfig) || !has(self.controlPlaneConfig.initConfiguration) || !has(self.controlPlaneConfig.initConfiguration.confinement) || self.controlPlaneConfig.initConfiguration.confinement != 'strict' || self.version.matches('^v(1\\\\.(2[5-9]|[3-9][0-9]|[1-9][0-9][0-9]+)|[2-9]|[1-9][0-9]+)\\\\.')";
/// Message of [`STRICT_NEEDS_125_RULE`].
pub const STRICT_NEEDS_125_MSG: &str = "strict confinement needs MicroK8s 1.25 or newer: set spec.version to v1.25.0 or later, or set spec.controlPlaneConfig.initConfiguration.confinement to classic";
/// CEL: `maxSurge: 0` removes a machine before its replacement exists, which only keeps
/// quorum with three or more replicas.
pub const MAX_SURGE_ZERO_RULE: &str = "!has(self.rollout) || !has(self.rollout.strategy) || !has(self.rollout.strategy.rollingUpdate) || !has(self.rollout.strategy.rollingUpdate.maxSurge) || self.rollout.strategy.rollingUpdate.maxSurge != 0 || (has(self.replicas) && self.replicas >= 3)";
/// Message of [`MAX_SURGE_ZERO_RULE`].
pub const MAX_SURGE_ZERO_MSG: &str = "spec.rollout.strategy.rollingUpdate.maxSurge: 0 needs spec.replicas of 3 or more (with fewer machines, removing one before its replacement exists loses dqlite quorum): set maxSurge to 1 or raise spec.replicas";
/// CEL on `machineTemplate`: exactly one infrastructure reference.
pub const ONE_INFRA_REF_RULE: &str =
    "has(self.infrastructureTemplate) != (has(self.spec) && has(self.spec.infrastructureRef))";
/// Message of [`ONE_INFRA_REF_RULE`].
pub const ONE_INFRA_REF_MSG: &str = "set exactly one of spec.machineTemplate.infrastructureTemplate (as Canonical's provider) and spec.machineTemplate.spec.infrastructureRef (as ClusterClass writes it)";

/// How each control plane Machine is made.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": ONE_INFRA_REF_RULE, "message": ONE_INFRA_REF_MSG}]))]
pub struct MachineTemplate {
    /// Labels and annotations given to each control plane Machine, its MicroK8sConfig and its
    /// infrastructure machine. Changes are applied in place, without a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,

    /// The infrastructure machine template to clone for each machine (the field Canonical's
    /// provider uses). Looked up in the control plane's namespace. Set this or
    /// `spec.infrastructureRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub infrastructure_template: Option<ObjectReference>,

    /// Machine settings in the layout of the CAPI v1beta2 contract (what ClusterClass writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<MachineTemplateSpec>,
}

/// Machine settings in the v1beta2 contract's layout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineTemplateSpec {
    /// The infrastructure machine template to clone for each machine (the field ClusterClass
    /// writes). Set this or `machineTemplate.infrastructureTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,

    /// Timeouts CAPI applies when it deletes a control plane Machine. Changes are applied to
    /// existing Machines in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<MachineDeletionSpec>,

    /// Extra conditions a Machine must satisfy to count as Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub readiness_gates: Option<Vec<MachineReadinessGate>>,
}

/// A reference to an object by API group, kind and name (CAPI v1beta2).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContractVersionedObjectReference {
    /// API group of the referenced object, e.g. `infrastructure.cluster.x-k8s.io`.
    #[schemars(length(min = 1, max = 253))]
    pub api_group: String,
    /// Kind of the referenced object.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Deletion timeouts of a Machine (seconds).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineDeletionSpec {
    /// How long CAPI may drain the node; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub node_drain_timeout_seconds: Option<i32>,
    /// How long CAPI waits for volumes to detach; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub node_volume_detach_timeout_seconds: Option<i32>,
    /// How long CAPI tries to delete the Node once the machine is gone; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub node_deletion_timeout_seconds: Option<i32>,
}

/// A condition a Machine must satisfy to count as Ready.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineReadinessGate {
    /// The condition type, on the Machine, that must be true (or false with `Negative`).
    #[schemars(length(min = 1, max = 316))]
    pub condition_type: String,
    /// `Positive` (default) or `Negative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Positive", "Negative"]))]
    pub polarity: Option<String>,
}

/// Rollout settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Machines created before this time are replaced (once the time has passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Time>,

    /// How machines are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
}

/// How machines are replaced during a rolling upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// The strategy type; only `RollingUpdate`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["RollingUpdate"]))]
    pub type_: Option<String>,

    /// Settings of `RollingUpdate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Settings of the `RollingUpdate` strategy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Machines created above `replicas` while replacing one: 1 (default) creates the
    /// replacement first; 0 removes the old machine first (only with 3 or more replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 0 || self == 1", "message": "maxSurge must be the integer 0 or 1"}]))]
    pub max_surge: Option<IntOrString>,
}

/// Limits on remediation (the semantics of KCP's `spec.remediation`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// How many times in a row a machine may be replaced by remediation before the provider
    /// stops and waits for the user. Absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_retry: Option<i32>,

    /// Minimum seconds between two remediations of the same machine's replacements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retry_period_seconds: Option<i32>,

    /// Seconds a replacement must stay healthy before a new failure counts as a new problem
    /// rather than a retry (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_healthy_period_seconds: Option<i32>,
}

/// Observed state of a MicroK8s control plane, for both CAPI contracts.
///
/// Replica counters count Machines (v1beta2 meaning): `readyReplicas` are Machines whose
/// `Ready` condition is true, `availableReplicas` those whose `Available` is true. Canonical's
/// provider counted Ready workload Nodes instead. Conditions follow the layout described in
/// [`crate::conditions`]: metav1 shape in `conditions`, v1beta1 shape under `deprecated`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sControlPlaneStatus {
    /// Label selector of the control plane Machines, for the scale subresource:
    /// `cluster.x-k8s.io/cluster-name=<cluster>,cluster.x-k8s.io/control-plane=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Control plane Machines (including ones being deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Machines whose `Ready` condition is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Machines whose `Available` condition is true (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,

    /// Machines that match the desired spec (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date_replicas: Option<i32>,

    /// Machines that match the desired spec (v1beta1 contract name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,

    /// `replicas - readyReplicas`, never negative (v1beta1 contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_replicas: Option<i32>,

    /// The first control plane node accepts joins (v1beta1 contract).
    #[serde(default)]
    pub initialized: bool,

    /// The control plane's API server is reachable and at least one control plane machine is
    /// ready.
    #[serde(default)]
    pub ready: bool,

    /// Every control plane machine has an address (kept from Canonical's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrapped: Option<bool>,

    /// The oldest Kubernetes version among the control plane machines, once every machine
    /// reports one (v1beta1 contract; deprecated by `versions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Kubernetes versions of the control plane machines with their counts, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["version"]))]
    pub versions: Option<Vec<StatusVersion>>,

    /// Initialization progress (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ControlPlaneInitialization>,

    /// Generation of the spec the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions in the metav1 shape (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The last remediation of a control plane machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_remediation: Option<LastRemediation>,

    /// Fields kept for readers of the v1beta1 contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<DeprecatedStatus>,
}

/// A Kubernetes version and how many control plane machines run it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusVersion {
    /// The version, e.g. `v1.33.4`.
    #[schemars(length(min = 1, max = 256))]
    pub version: String,
    /// Machines that run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Control plane initialization progress (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneInitialization {
    /// True once the first control plane node accepts joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

/// The last remediation of a control plane machine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRemediation {
    /// Name of the remediated Machine.
    #[schemars(length(min = 1, max = 253))]
    pub machine: String,
    /// When it was remediated.
    pub time: Time,
    /// How many remediations in a row the replacements of that machine have needed.
    pub retry_count: i32,
}

/// A template of a `MicroK8sControlPlane`, for ClusterClass.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "controlplane.cluster.x-k8s.io",
    version = "v1beta1",
    kind = "MicroK8sControlPlaneTemplate",
    plural = "microk8scontrolplanetemplates",
    singular = "microk8scontrolplanetemplate",
    category = "cluster-api",
    namespaced,
    label("cluster.x-k8s.io/provider", "control-plane-microk8s"),
    label("cluster.x-k8s.io/v1beta2", "v1beta1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "MicroK8sControlPlaneTemplate is the template of a MicroK8sControlPlane for ClusterClass. The topology controller adds spec.version, spec.replicas and spec.machineTemplate.spec.infrastructureRef."
)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sControlPlaneTemplateSpec {
    /// The template of the control plane.
    pub template: MicroK8sControlPlaneTemplateResource,
}

/// What a `MicroK8sControlPlaneTemplate` stamps out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sControlPlaneTemplateResource {
    /// Labels and annotations of the control plane object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,

    /// The control plane's spec, without `replicas`, `version` and the infrastructure
    /// reference (the Cluster's topology provides them).
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub spec: MicroK8sControlPlaneTemplateResourceSpec,
}

/// The templated part of a `MicroK8sControlPlane` spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sControlPlaneTemplateResourceSpec {
    /// Metadata and Machine settings of each control plane machine (the infrastructure
    /// reference comes from the ClusterClass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_template: Option<TemplateMachineTemplate>,

    /// See `MicroK8sControlPlane.spec.upgradeStrategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "InPlaceUpgrade", "RollingUpgrade", "SmartUpgrade"]))]
    pub upgrade_strategy: Option<String>,

    /// See `MicroK8sControlPlane.spec.controlPlaneConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub control_plane_config: Option<MicroK8sConfigSpec>,

    /// See `MicroK8sControlPlane.spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,

    /// See `MicroK8sControlPlane.spec.remediation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
}

/// `machineTemplate` of a control plane template: no infrastructure reference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMachineTemplate {
    /// Labels and annotations given to each control plane Machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,

    /// Machine settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<TemplateMachineTemplateSpec>,
}

/// Machine settings of a control plane template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMachineTemplateSpec {
    /// See `MicroK8sControlPlane.spec.machineTemplate.spec.deletion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<MachineDeletionSpec>,

    /// See `MicroK8sControlPlane.spec.machineTemplate.spec.readinessGates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub readiness_gates: Option<Vec<MachineReadinessGate>>,
}

/// How the control plane is upgraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeStrategy {
    /// Replace machines one by one.
    Rolling,
    /// Refresh the snap on each node, one at a time.
    InPlace,
    /// In place below 3 replicas, rolling from 3.
    Smart,
}

impl MicroK8sControlPlaneSpec {
    /// The upgrade strategy; empty or absent means `SmartUpgrade`. Unknown values (possible
    /// only for objects that bypassed validation) are reported as errors.
    pub fn upgrade_strategy(&self) -> Result<UpgradeStrategy, crate::bootstrap::InvalidEnum> {
        match self.upgrade_strategy.as_deref().unwrap_or("") {
            "" | "SmartUpgrade" => Ok(UpgradeStrategy::Smart),
            "RollingUpgrade" => Ok(UpgradeStrategy::Rolling),
            "InPlaceUpgrade" => Ok(UpgradeStrategy::InPlace),
            other => Err(crate::bootstrap::InvalidEnum {
                field: "spec.upgradeStrategy",
                value: other.to_string(),
                expected: "InPlaceUpgrade, RollingUpgrade, SmartUpgrade",
            }),
        }
    }

    /// The bootstrap spec of control plane machines (empty when absent).
    pub fn control_plane_config(&self) -> MicroK8sConfigSpec {
        self.control_plane_config.clone().unwrap_or_default()
    }

    /// `maxSurge`: 1 unless set to 0.
    pub fn max_surge(&self) -> i32 {
        match self
            .rollout
            .as_ref()
            .and_then(|r| r.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_surge.as_ref())
        {
            Some(IntOrString::Int(0)) => 0,
            Some(IntOrString::String(s)) if s == "0" => 0,
            _ => 1,
        }
    }
}
