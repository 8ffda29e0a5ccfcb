//! The clusterctl release manifests (`make release-manifests`): each provider's components
//! YAML and `metadata.yaml`, built from the same CRDs and RBAC as `config/`.
//!
//! * `bootstrap-components.yaml` / `control-plane-components.yaml`: exactly one Namespace
//!   (Canonical's), the CRDs, the ServiceAccount and RBAC (Canonical's names), a metrics
//!   Service and the Deployment (Canonical's name, container `manager`), with clusterctl
//!   variables (`${VAR:=default}`) for the image and the manager options.
//! * `metadata.yaml`: release series `0.1` → contract `v1beta2`.
//! * `infrastructure-sim/`: the MicroK8s machine simulator as an infrastructure provider
//!   (CRDs, ServiceAccount and RBAC; no Deployment: the simulator runs on the host, it
//!   needs mount namespaces and loopback addresses) and its cluster templates.
//!
//! [`repository_files`] lays the same files out as a clusterctl local repository
//! (`<provider-label>/<version>/<file>`).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;
use mk8s_api::rbac::{READ, rule};
use serde_json::{Value, json};

use crate::{BOOTSTRAP, CONTROL_PLANE, ManagerNames, rbac_documents, yaml_documents};

/// The image holding both managers (`/mk8s-bootstrap`, `/mk8s-controlplane`).
pub const IMAGE_REPOSITORY: &str = "ghcr.io/microk8s-capi-rs/mk8s-capi";

/// The simulator's names (an infrastructure provider for tests and the local demo).
pub const SIM: ManagerNames = ManagerNames {
    provider: "infrastructure-sim",
    namespace: "capi-sim-system",
    prefix: "capi-sim",
};

/// The cluster templates of the simulator, copied next to its components (file names
/// under `templates/`).
pub const SIM_TEMPLATES: [&str; 3] = [
    "cluster-template-sim.yaml",
    "cluster-template-sim-clusterclass.yaml",
    "clusterclass-sim.yaml",
];

/// The release version of this build, `v<workspace version>`.
pub fn version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// One manager's Deployment settings.
pub struct Manager {
    names: &'static ManagerNames,
    /// Binary in the image.
    command: &'static str,
    /// Prefix of its clusterctl variables.
    var: &'static str,
    /// Options set from variables: `(flag, variable, default)`.
    options: Vec<(&'static str, String, &'static str)>,
}

impl Manager {
    fn new(
        names: &'static ManagerNames,
        command: &'static str,
        var: &'static str,
        extra: &[(&'static str, &'static str, &'static str)],
    ) -> Manager {
        let options = [
            ("--leader-elect", "LEADER_ELECT", "true"),
            ("--metrics-bind-address", "METRICS_BIND_ADDRESS", ":8080"),
            ("--concurrency", "CONCURRENCY", "10"),
            ("--kube-api-qps", "KUBE_API_QPS", "100"),
            ("--kube-api-burst", "KUBE_API_BURST", "200"),
            ("--log-format", "LOG_FORMAT", "json"),
            ("--log-level", "LOG_LEVEL", "info"),
        ]
        .iter()
        .chain(extra)
        .map(|(flag, suffix, default)| (*flag, format!("{var}_{suffix}"), *default))
        .collect();
        Manager {
            names,
            command,
            var,
            options,
        }
    }

    /// The clusterctl variables of the components and their defaults (the image first).
    pub fn variables(&self, version: &str) -> Vec<(String, String)> {
        let mut v = vec![(format!("{}_IMAGE", self.var), format!("{IMAGE_REPOSITORY}:{version}"))];
        v.extend(self.options.iter().map(|(_, var, d)| (var.clone(), d.to_string())));
        v
    }
}

/// The bootstrap manager's Deployment settings.
pub fn bootstrap_manager() -> Manager {
    Manager::new(&BOOTSTRAP, "/mk8s-bootstrap", "MICROK8S_BOOTSTRAP", &[])
}

/// The control plane manager's Deployment settings.
pub fn control_plane_manager() -> Manager {
    Manager::new(
        &CONTROL_PLANE,
        "/mk8s-controlplane",
        "MICROK8S_CONTROL_PLANE",
        &[("--node-action-image", "NODE_ACTION_IMAGE", "curlimages/curl:8.11.1")],
    )
}

fn labels(n: &ManagerNames) -> Value {
    json!({"cluster.x-k8s.io/provider": n.provider, "control-plane": "controller-manager"})
}

fn namespace(n: &ManagerNames) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": n.namespace, "labels": labels(n)},
    })
}

fn metrics_service(n: &ManagerNames) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": format!("{}-controller-manager-metrics-service", n.prefix),
            "namespace": n.namespace,
            "labels": labels(n),
        },
        "spec": {
            "selector": labels(n),
            "ports": [{"name": "metrics", "port": 8080, "protocol": "TCP", "targetPort": "metrics"}],
        },
    })
}

fn deployment(m: &Manager, version: &str) -> Value {
    let n = m.names;
    let v = m.var;
    let mut args: Vec<String> = m
        .options
        .iter()
        .map(|(flag, var, default)| format!("{flag}=${{{var}:={default}}}"))
        .collect();
    // The probes' port is fixed (the probes below name it).
    args.insert(2, "--health-probe-bind-address=:8081".to_string());
    let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": n.service_account(), "namespace": n.namespace, "labels": labels(n)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels(n)},
            "template": {
                "metadata": {
                    "labels": labels(n),
                    "annotations": {"kubectl.kubernetes.io/default-container": "manager"},
                },
                "spec": {
                    "serviceAccountName": n.service_account(),
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                    ],
                    "containers": [{
                        "name": "manager",
                        "image": format!("${{{v}_IMAGE:={IMAGE_REPOSITORY}:{version}}}"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": [m.command],
                        "args": args,
                        "env": [
                            field_env("POD_NAME", "metadata.name"),
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                        ],
                        "ports": [
                            {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "healthz", "containerPort": 8081, "protocol": "TCP"},
                        ],
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "healthz"},
                            "initialDelaySeconds": 15, "periodSeconds": 20,
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "healthz"},
                            "initialDelaySeconds": 5, "periodSeconds": 10,
                        },
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "256Mi"},
                            "requests": {"cpu": "10m", "memory": "64Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "privileged": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                },
            },
        },
    })
}

fn crd_values(group: &str) -> Result<Vec<Value>, Error> {
    mk8s_api::crd::all()
        .into_iter()
        .filter(|(_, c)| c.spec.group == group)
        .map(|(_, c)| serde_json::to_value(c).map_err(|e| Error(e.to_string())))
        .collect()
}

/// A rendering error.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<serde_saphyr::ser::Error> for Error {
    fn from(e: serde_saphyr::ser::Error) -> Self {
        Error(e.to_string())
    }
}

fn manager_components(
    m: &Manager,
    group: &str,
    rules: Vec<PolicyRule>,
    ns_rules: Vec<PolicyRule>,
    version: &str,
) -> Result<Vec<Value>, Error> {
    let mut docs = vec![namespace(m.names)];
    docs.extend(crd_values(group)?);
    docs.extend(rbac_documents(m.names, rules, ns_rules));
    docs.push(metrics_service(m.names));
    docs.push(deployment(m, version));
    Ok(docs)
}

/// The objects of `bootstrap-components.yaml`.
pub fn bootstrap_components(version: &str) -> Result<Vec<Value>, Error> {
    manager_components(
        &bootstrap_manager(),
        "bootstrap.cluster.x-k8s.io",
        mk8s_bootstrap::rbac::cluster_rules(),
        mk8s_bootstrap::rbac::namespace_rules(),
        version,
    )
}

/// The objects of `control-plane-components.yaml`.
pub fn control_plane_components(version: &str) -> Result<Vec<Value>, Error> {
    manager_components(
        &control_plane_manager(),
        "controlplane.cluster.x-k8s.io",
        mk8s_controlplane::rbac::cluster_rules(),
        mk8s_controlplane::rbac::namespace_rules(),
        version,
    )
}

/// What the simulator reads and writes in the management cluster.
pub fn sim_cluster_rules() -> Vec<PolicyRule> {
    let infra = "infrastructure.cluster.x-k8s.io";
    vec![
        rule(
            infra,
            &["simclusters", "simmachines"],
            &["get", "list", "watch", "patch", "update"],
        ),
        rule(
            infra,
            &["simclusters/status", "simmachines/status"],
            &["get", "patch", "update"],
        ),
        rule(infra, &["simclustertemplates", "simmachinetemplates"], READ),
        rule("cluster.x-k8s.io", &["clusters", "machines"], READ),
        rule("", &["secrets"], &["get"]),
    ]
}

/// The objects of the simulator's `infrastructure-components.yaml`: Namespace, CRDs,
/// ServiceAccount, ClusterRole and binding (the simulator runs as a process on the host).
pub fn sim_components() -> Result<Vec<Value>, Error> {
    let mut docs = vec![namespace(&SIM)];
    for (_, crd) in mk8s_sim::crds() {
        docs.push(serde_json::to_value(crd).map_err(|e| Error(e.to_string()))?);
    }
    let rbac = rbac_documents(&SIM, sim_cluster_rules(), vec![]);
    // No leader election: the ServiceAccount, ClusterRole and its binding only.
    docs.extend(
        rbac.into_iter()
            .filter(|d| !matches!(d["kind"].as_str(), Some("Role" | "RoleBinding"))),
    );
    Ok(docs)
}

/// Every release series published, oldest first, with the CAPI contract it implements.
/// clusterctl maps an installed version to its contract through the **newest** release's
/// `metadata.yaml`, so every series stays listed for good: add one when a minor version is
/// cut, never remove one (`clusterctl upgrade` from it fails otherwise).
pub const RELEASE_SERIES: &[(u32, u32, &str)] = &[(0, 1, "v1beta2")];

/// clusterctl's `metadata.yaml`: [`RELEASE_SERIES`], and the series of `version` (with the
/// current contract) if it is not listed yet.
pub fn metadata_yaml(version: &str) -> String {
    let mut parts = version.trim_start_matches('v').split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let current = (number(), number());
    let mut series: Vec<(u32, u32, &str)> = RELEASE_SERIES.to_vec();
    if !series.iter().any(|(ma, mi, _)| (*ma, *mi) == current) {
        series.push((current.0, current.1, "v1beta2"));
    }
    let mut out = String::from(
        "# clusterctl provider metadata: release series to Cluster API contract.\n\
         apiVersion: clusterctl.cluster.x-k8s.io/v1alpha3\n\
         kind: Metadata\n\
         releaseSeries:\n",
    );
    for (major, minor, contract) in series {
        out.push_str(&format!(
            "  - major: {major}\n    minor: {minor}\n    contract: {contract}\n"
        ));
    }
    out
}

fn components_file(docs: &[Value], what: &str) -> Result<String, Error> {
    Ok(format!(
        "# {what}, generated by `make release-manifests` (crates/gen). Do not edit.\n\
         # clusterctl substitutes its variables (with their defaults) at install time.\n{}",
        yaml_documents(docs)?
    ))
}

/// One provider of the release: its clusterctl label, components file name and content.
pub struct ProviderRelease {
    /// `bootstrap-microk8s`, `control-plane-microk8s`, `infrastructure-sim`.
    pub label: &'static str,
    /// clusterctl provider type, e.g. `BootstrapProvider`.
    pub provider_type: &'static str,
    /// clusterctl provider name (`microk8s`, `sim`).
    pub name: &'static str,
    /// `bootstrap-components.yaml`, …
    pub components_name: &'static str,
    /// The components YAML.
    pub components: String,
}

/// The three providers' components at `version`.
pub fn providers(version: &str) -> Result<Vec<ProviderRelease>, Error> {
    Ok(vec![
        ProviderRelease {
            label: "bootstrap-microk8s",
            provider_type: "BootstrapProvider",
            name: "microk8s",
            components_name: "bootstrap-components.yaml",
            components: components_file(&bootstrap_components(version)?, "MicroK8s bootstrap provider")?,
        },
        ProviderRelease {
            label: "control-plane-microk8s",
            provider_type: "ControlPlaneProvider",
            name: "microk8s",
            components_name: "control-plane-components.yaml",
            components: components_file(&control_plane_components(version)?, "MicroK8s control plane provider")?,
        },
        ProviderRelease {
            label: "infrastructure-sim",
            provider_type: "InfrastructureProvider",
            name: "sim",
            components_name: "infrastructure-components.yaml",
            components: components_file(
                &sim_components()?,
                "MicroK8s machine simulator (infrastructure provider)",
            )?,
        },
    ])
}

/// The files of `out/` (paths relative to it): the two providers' components and their
/// `metadata.yaml`, and `infrastructure-sim/` with the simulator's components, metadata and
/// the given templates (`(file name, content)`).
pub fn release_files(version: &str, templates: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
    let mut files = vec![];
    for p in providers(version)? {
        if p.label == SIM.provider {
            files.push((format!("{}/{}", p.label, p.components_name), p.components));
            files.push((format!("{}/metadata.yaml", p.label), metadata_yaml(version)));
            for (name, text) in templates {
                files.push((format!("{}/{name}", p.label), text.clone()));
            }
        } else {
            files.push((p.components_name.to_string(), p.components));
        }
    }
    files.push(("metadata.yaml".into(), metadata_yaml(version)));
    Ok(files)
}

/// The same files as a clusterctl local repository: `<label>/<version>/<file>`.
pub fn repository_files(version: &str, templates: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
    let mut files = vec![];
    for p in providers(version)? {
        let dir = format!("{}/{version}", p.label);
        files.push((format!("{dir}/{}", p.components_name), p.components));
        files.push((format!("{dir}/metadata.yaml"), metadata_yaml(version)));
        if p.label == SIM.provider {
            for (name, text) in templates {
                files.push((format!("{dir}/{name}"), text.clone()));
            }
        }
    }
    Ok(files)
}

/// A `clusterctl.yaml` overriding the built-in `microk8s` providers (and declaring `sim`)
/// with a local repository at the absolute path `repository`, plus `extra` providers
/// (`(name, type, url)`) and variables.
pub fn clusterctl_config(
    repository: &str,
    version: &str,
    extra: &[(String, String, String)],
    variables: &BTreeMap<String, String>,
) -> Result<String, Error> {
    let mut providers: Vec<Value> = providers(version)?
        .iter()
        .map(|p| {
            json!({"name": p.name, "type": p.provider_type,
                   "url": format!("file://{repository}/{}/{version}/{}", p.label, p.components_name)})
        })
        .collect();
    providers.extend(
        extra
            .iter()
            .map(|(name, type_, url)| json!({"name": name, "type": type_, "url": url})),
    );
    let mut doc = json!({"providers": providers});
    for (k, v) in variables {
        doc[k] = json!(v);
    }
    Ok(serde_saphyr::to_string(&doc)?)
}
