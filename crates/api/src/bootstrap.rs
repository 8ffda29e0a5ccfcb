//! `bootstrap.cluster.x-k8s.io/v1beta1`: `MicroK8sConfig` and `MicroK8sConfigTemplate`.
//!
//! Wire-compatible with Canonical's v0.6.11 API: every field keeps its JSON name, type,
//! default, enum and minimum. Additions are optional and documented as such.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::{Condition, DeprecatedStatus};

/// Default TTL of the join token, in seconds (about ten years), as in Canonical's provider.
pub const DEFAULT_JOIN_TOKEN_TTL_SECS: i64 = 315_569_260;

/// Desired configuration of one MicroK8s node's bootstrap.
///
/// `MicroK8sConfigSpec` is shared by `MicroK8sConfig`, `MicroK8sConfigTemplate` and the
/// control plane's `spec.controlPlaneConfig`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bootstrap.cluster.x-k8s.io",
    version = "v1beta1",
    kind = "MicroK8sConfig",
    plural = "microk8sconfigs",
    singular = "microk8sconfig",
    namespaced,
    status = "MicroK8sConfigStatus",
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "bootstrap-microk8s"),
    label("cluster.x-k8s.io/v1beta2", "v1beta1"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']",
        description = "Cluster this configuration belongs to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "boolean",
        json_path = ".status.ready",
        description = "Bootstrap data has been generated"
    ),
    printcolumn(
        name = "Data Secret",
        type_ = "string",
        json_path = ".status.dataSecretName",
        description = "Name of the Secret holding the bootstrap data"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "MicroK8sConfig is the bootstrap configuration of one MicroK8s machine. The bootstrap provider renders it into cloud-init that installs MicroK8s and initialises the cluster, joins it as a control plane node or joins it as a worker."
)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sConfigSpec {
    /// Settings that must be the same on every node of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub cluster_configuration: Option<ClusterConfiguration>,

    /// Per-node bootstrap settings. Despite its name it applies to every role: the first
    /// control plane node, joining control plane nodes and workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {}))]
    pub init_configuration: Option<InitConfiguration>,
}

/// Cluster-wide settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    /// Kept for compatibility with objects written for Canonical's provider; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,

    /// Kept for compatibility with objects written for Canonical's provider; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,

    /// Moves the MicroK8s cluster agent from port 25000 to 30000 and dqlite from 19001 to
    /// 2379, ports that security groups written for kubeadm clusters usually open. It must be
    /// the same on every node of a cluster: control plane nodes and workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub port_compatibility_remap: Option<bool>,
}

/// Per-node bootstrap settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitConfiguration {
    /// Kept for compatibility with objects written for Canonical's provider; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,

    /// Kept for compatibility with objects written for Canonical's provider; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,

    /// Lifetime in seconds of the join token that control plane nodes register with
    /// `microk8s add-node`. Unused on workers.
    #[serde(rename = "joinTokenTTLInSecs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = DEFAULT_JOIN_TOKEN_TTL_SECS), range(min = 1))]
    pub join_token_ttl_in_secs: Option<i64>,

    /// HTTPS proxy for containerd (written as `https_proxy`/`HTTPS_PROXY` to
    /// containerd's environment) and for `microk8s enable` while addons are enabled, e.g.
    /// `http://proxy.example:3128`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub https_proxy: Option<String>,

    /// HTTP proxy for containerd (written as `http_proxy`/`HTTP_PROXY`) and for
    /// `microk8s enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub http_proxy: Option<String>,

    /// Hosts, domains and CIDRs containerd (and `microk8s enable`) reach without a proxy
    /// (`no_proxy`/`NO_PROXY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub no_proxy: Option<String>,

    /// MicroK8s addons to enable with `microk8s enable`, e.g. `ingress` or
    /// `dns:10.0.0.10`. The first control plane node also enables `dns` unless an entry
    /// names it; joining control plane nodes enable exactly this list after joining; workers
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 1024)))]
    pub addons: Option<Vec<String>>,

    /// Switches Calico from VXLAN to IP-in-IP encapsulation (control plane nodes).
    #[serde(rename = "IPinIP", default, skip_serializing_if = "Option::is_none")]
    pub ip_in_ip: Option<bool>,

    /// Snap confinement of MicroK8s: `classic` (default) or `strict` (MicroK8s 1.25 or
    /// newer). An empty string means the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "classic", "strict"]))]
    pub confinement: Option<String>,

    /// Risk level of the snap channel: `stable` (default), `candidate`, `beta` or `edge`.
    /// An empty string means the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "stable", "candidate", "beta", "edge"], "default" = "stable"))]
    pub risk_level: Option<String>,

    /// Deploys no CNI (Calico's manifest is moved away) so that you can install your own,
    /// e.g. from `postRunCommands`. Honoured on control plane nodes.
    #[serde(rename = "disableDefaultCNI", default, skip_serializing_if = "Option::is_none")]
    pub disable_default_cni: Option<bool>,

    /// Scheme of the snap store proxy: `http` (default) or `https`, without `://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "http", "https"]))]
    pub snapstore_proxy_scheme: Option<String>,

    /// Domain of the snap store proxy, e.g. `snapstore.example.com`. With
    /// `snapstoreProxyId` it makes snapd use the proxy instead of the public store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub snapstore_proxy_domain: Option<String>,

    /// Store ID of the snap store proxy (`snap set core proxy.store=<id>`).
    #[serde(rename = "snapstoreProxyId", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub snapstore_proxy_id: Option<String>,

    /// HTTP proxy for snapd (`snap set system proxy.http=`).
    #[serde(rename = "snapstoreHTTPProxy", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub snapstore_http_proxy: Option<String>,

    /// HTTPS proxy for snapd (`snap set system proxy.https=`).
    #[serde(rename = "snapstoreHTTPSProxy", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub snapstore_https_proxy: Option<String>,

    /// Extra files written by cloud-init before any command runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub extra_write_files: Option<Vec<CloudInitWriteFile>>,

    /// Extra kubelet arguments appended to `/var/snap/microk8s/current/args/kubelet`,
    /// e.g. `--max-pods=200`. Like the commands, they are Jinja templates rendered by
    /// cloud-init, so they may use instance data, e.g.
    /// `--node-ip={{ ds.meta_data.local_ipv4 }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub extra_kubelet_args: Option<Vec<String>>,

    /// Commands cloud-init runs early on every boot (`bootcmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub boot_commands: Option<Vec<String>>,

    /// Commands run (as `runcmd` entries, by `/bin/sh`) before MicroK8s is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub pre_run_commands: Option<Vec<String>>,

    /// Commands run (as `runcmd` entries, by `/bin/sh`) after the node has been set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub post_run_commands: Option<Vec<String>>,

    /// Holds automatic snap refreshes of `microk8s` on the node so that its Kubernetes
    /// version changes only through Cluster API (upgrades by the control plane provider
    /// still refresh it explicitly). `forever`, or a duration such as `720h`. Empty or absent:
    /// no hold, snapd refreshes within the installed track as it sees fit (Canonical's
    /// behaviour). Needs snapd 2.58 or newer on the image. Added by this implementation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^(|forever|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$"),
        length(max = 64)
    )]
    pub snap_refresh_hold: Option<String>,
}

/// A file cloud-init writes on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitWriteFile {
    /// Content of the file, written verbatim.
    #[schemars(length(max = 1048576))]
    pub content: String,

    /// Absolute path of the file on the node.
    #[schemars(regex(pattern = r"^/"), length(min = 2, max = 4096))]
    pub path: String,

    /// Octal permissions of the file, as a string, e.g. `"0644"` (or cloud-init's `"0o644"`).
    #[schemars(regex(pattern = r"^(0o|0)?[0-7]{3,4}$"))]
    pub permissions: String,

    /// Owner of the file as `user:group`, e.g. `root:root`.
    #[schemars(length(min = 1, max = 256))]
    pub owner: String,
}

/// Observed state of a `MicroK8sConfig`, for both CAPI contracts.
///
/// Conditions: `status.conditions` holds conditions in the metav1 shape the v1beta2
/// contract reads (`Ready`, `DataSecretAvailable`, `Paused`); `status.deprecated.v1beta1.
/// conditions` holds the same conditions in the v1beta1 shape (with `severity`) for cores and
/// tools that still read the v1beta1 contract — the layout the kubeadm providers use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sConfigStatus {
    /// True once the bootstrap data Secret exists (v1beta1 contract).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,

    /// Name of the Secret that holds the bootstrap data (the config's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,

    /// Initialization progress (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<BootstrapInitialization>,

    /// Kept for compatibility with the v1beta1 contract; this provider reports failures
    /// through conditions instead and never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,

    /// Kept for compatibility with the v1beta1 contract; never set (see conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,

    /// Generation of the spec the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions in the metav1 shape (v1beta2 contract).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Fields kept for readers of the v1beta1 contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<DeprecatedStatus>,
}

/// Bootstrap initialization progress (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapInitialization {
    /// True once the bootstrap data Secret has been created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_created: Option<bool>,
}

/// A template from which CAPI's MachineSets create one `MicroK8sConfig` per worker Machine.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bootstrap.cluster.x-k8s.io",
    version = "v1beta1",
    kind = "MicroK8sConfigTemplate",
    plural = "microk8sconfigtemplates",
    singular = "microk8sconfigtemplate",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/provider", "bootstrap-microk8s"),
    label("cluster.x-k8s.io/v1beta2", "v1beta1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "MicroK8sConfigTemplate is the template of the MicroK8sConfig that Cluster API creates for each Machine of a MachineDeployment or MachineSet."
)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sConfigTemplateSpec {
    /// The template of each MicroK8sConfig.
    pub template: MicroK8sConfigTemplateResource,
}

/// The object a `MicroK8sConfigTemplate` stamps out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroK8sConfigTemplateResource {
    /// Labels and annotations given to each MicroK8sConfig (set by ClusterClass; added by
    /// this implementation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetaTemplate>,

    /// The spec of each MicroK8sConfig.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub spec: MicroK8sConfigSpec,
}

/// Labels and annotations propagated to created objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetaTemplate {
    /// Labels to set on created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations to set on created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Snap confinement of MicroK8s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confinement {
    /// Classic confinement (the default).
    Classic,
    /// Strict confinement (MicroK8s 1.25 or newer).
    Strict,
}

/// Risk level of the snap channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskLevel {
    /// `stable`, the default.
    Stable,
    /// `candidate`.
    Candidate,
    /// `beta`.
    Beta,
    /// `edge`.
    Edge,
}

impl RiskLevel {
    /// The channel suffix, e.g. `stable`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Stable => "stable",
            RiskLevel::Candidate => "candidate",
            RiskLevel::Beta => "beta",
            RiskLevel::Edge => "edge",
        }
    }
}

/// A field holds a value the schema forbids (only possible for objects stored before the
/// schema or written by clients that bypass validation).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: unsupported value {value:?}, expected one of {expected}")]
pub struct InvalidEnum {
    /// JSON path of the field.
    pub field: &'static str,
    /// The stored value.
    pub value: String,
    /// The supported values.
    pub expected: &'static str,
}

impl InitConfiguration {
    /// Snap confinement; an absent or empty value means classic.
    pub fn confinement(&self) -> Result<Confinement, InvalidEnum> {
        match self.confinement.as_deref().unwrap_or("") {
            "" | "classic" => Ok(Confinement::Classic),
            "strict" => Ok(Confinement::Strict),
            other => Err(InvalidEnum {
                field: "initConfiguration.confinement",
                value: other.to_string(),
                expected: "classic, strict",
            }),
        }
    }

    /// Risk level; an absent or empty value means stable.
    pub fn risk_level(&self) -> Result<RiskLevel, InvalidEnum> {
        match self.risk_level.as_deref().unwrap_or("") {
            "" | "stable" => Ok(RiskLevel::Stable),
            "candidate" => Ok(RiskLevel::Candidate),
            "beta" => Ok(RiskLevel::Beta),
            "edge" => Ok(RiskLevel::Edge),
            other => Err(InvalidEnum {
                field: "initConfiguration.riskLevel",
                value: other.to_string(),
                expected: "stable, candidate, beta, edge",
            }),
        }
    }

    /// Join token TTL in seconds; absent or non-positive values mean the default.
    pub fn join_token_ttl(&self) -> i64 {
        match self.join_token_ttl_in_secs {
            Some(ttl) if ttl > 0 => ttl,
            _ => DEFAULT_JOIN_TOKEN_TTL_SECS,
        }
    }

    /// Scheme of the snap store proxy; absent or empty means `http`.
    pub fn snapstore_proxy_scheme(&self) -> &str {
        match self.snapstore_proxy_scheme.as_deref() {
            None | Some("") => "http",
            Some(s) => s,
        }
    }
}

impl MicroK8sConfigSpec {
    /// Whether the cluster agent and dqlite ports are remapped (30000/2379). As in Canonical's
    /// bootstrap provider, an absent `clusterConfiguration` or field means true.
    pub fn port_compatibility_remap(&self) -> bool {
        self.cluster_configuration
            .as_ref()
            .and_then(|c| c.port_compatibility_remap)
            .unwrap_or(true)
    }

    /// The per-node settings, or empty settings when absent.
    pub fn init(&self) -> InitConfiguration {
        self.init_configuration.clone().unwrap_or_default()
    }

    /// The spec with every API-server default applied, so that specs written with and
    /// without defaults compare equal (used to decide whether a machine is up to date).
    pub fn normalized(&self) -> MicroK8sConfigSpec {
        let mut out = self.clone();
        let cc = out.cluster_configuration.get_or_insert_with(Default::default);
        cc.api_version = None;
        cc.kind = None;
        cc.port_compatibility_remap = Some(cc.port_compatibility_remap.unwrap_or(true));
        let ic = out.init_configuration.get_or_insert_with(Default::default);
        ic.api_version = None;
        ic.kind = None;
        ic.join_token_ttl_in_secs = Some(ic.join_token_ttl());
        if ic.risk_level.as_deref().unwrap_or("").is_empty() {
            ic.risk_level = Some("stable".into());
        }
        if ic.confinement.as_deref().unwrap_or("").is_empty() {
            ic.confinement = Some("classic".into());
        }
        if ic.snapstore_proxy_scheme.as_deref().unwrap_or("").is_empty() {
            ic.snapstore_proxy_scheme = Some("http".into());
        }
        for field in [
            &mut ic.addons,
            &mut ic.extra_kubelet_args,
            &mut ic.boot_commands,
            &mut ic.pre_run_commands,
            &mut ic.post_run_commands,
        ] {
            if field.as_ref().is_some_and(Vec::is_empty) {
                *field = None;
            }
        }
        if ic.extra_write_files.as_ref().is_some_and(Vec::is_empty) {
            ic.extra_write_files = None;
        }
        for field in [
            &mut ic.https_proxy,
            &mut ic.http_proxy,
            &mut ic.no_proxy,
            &mut ic.snapstore_proxy_domain,
            &mut ic.snapstore_proxy_id,
            &mut ic.snapstore_http_proxy,
            &mut ic.snapstore_https_proxy,
            &mut ic.snap_refresh_hold,
        ] {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
        for field in [&mut ic.ip_in_ip, &mut ic.disable_default_cni] {
            if *field == Some(false) {
                *field = None;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acronym_fields_keep_go_names() {
        let ic = InitConfiguration {
            join_token_ttl_in_secs: Some(5),
            ip_in_ip: Some(true),
            disable_default_cni: Some(true),
            snapstore_proxy_id: Some("id".into()),
            snapstore_http_proxy: Some("h".into()),
            snapstore_https_proxy: Some("s".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&ic).unwrap();
        for key in [
            "joinTokenTTLInSecs",
            "IPinIP",
            "disableDefaultCNI",
            "snapstoreProxyId",
            "snapstoreHTTPProxy",
            "snapstoreHTTPSProxy",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
    }

    #[test]
    fn empty_enums_mean_defaults() {
        let ic = InitConfiguration {
            confinement: Some(String::new()),
            risk_level: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(ic.confinement(), Ok(Confinement::Classic));
        assert_eq!(ic.risk_level(), Ok(RiskLevel::Stable));
        let bad = InitConfiguration {
            risk_level: Some("nightly".into()),
            ..Default::default()
        };
        assert!(bad.risk_level().is_err());
    }

    #[test]
    fn remap_defaults_to_true() {
        assert!(MicroK8sConfigSpec::default().port_compatibility_remap());
        let off = MicroK8sConfigSpec {
            cluster_configuration: Some(ClusterConfiguration {
                port_compatibility_remap: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!off.port_compatibility_remap());
    }

    #[test]
    fn normalized_specs_compare_equal_with_and_without_defaults() {
        let bare = MicroK8sConfigSpec::default();
        let defaulted = MicroK8sConfigSpec {
            cluster_configuration: Some(ClusterConfiguration {
                port_compatibility_remap: Some(true),
                ..Default::default()
            }),
            init_configuration: Some(InitConfiguration {
                join_token_ttl_in_secs: Some(DEFAULT_JOIN_TOKEN_TTL_SECS),
                risk_level: Some("stable".into()),
                addons: Some(vec![]),
                ip_in_ip: Some(false),
                ..Default::default()
            }),
        };
        assert_eq!(bare.normalized(), defaulted.normalized());
        let changed = MicroK8sConfigSpec {
            init_configuration: Some(InitConfiguration {
                addons: Some(vec!["ingress".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_ne!(bare.normalized(), changed.normalized());
    }
}
