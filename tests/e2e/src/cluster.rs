//! Cluster manifests for the scenarios (the objects a user applies) and the assertions every
//! scenario makes: Cluster Available, Machines with nodeRefs, Nodes Ready in the workload API
//! server, a working kubeconfig Secret, and the simulator's dqlite members.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_api::capi::{Machine, MachineExt};
use serde_json::{Value, json};

use crate::{Env, eventually};

/// Shape of a test cluster.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Cluster name.
    pub name: String,
    /// Control plane replicas.
    pub control_planes: i32,
    /// Worker replicas (one MachineDeployment).
    pub workers: i32,
    /// Kubernetes version, e.g. `v1.33.0`.
    pub version: String,
    /// `spec.upgradeStrategy` of the control plane ("" = absent).
    pub upgrade_strategy: String,
    /// Extra `controlPlaneConfig` (merged).
    pub control_plane_config: Value,
    /// Extra worker `MicroK8sConfigTemplate.spec.template.spec` (merged).
    pub worker_config: Value,
}

impl Shape {
    /// A cluster with `cp` control planes and `workers` workers at v1.33.0.
    pub fn new(name: &str, cp: i32, workers: i32) -> Shape {
        Shape {
            name: name.to_string(),
            control_planes: cp,
            workers,
            version: "v1.33.0".into(),
            upgrade_strategy: String::new(),
            control_plane_config: json!({}),
            worker_config: json!({}),
        }
    }

    /// The objects a user applies (v1beta2 CAPI objects).
    pub fn objects(&self) -> Vec<Value> {
        let n = &self.name;
        let mut cp = json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlane",
            "metadata": {"name": format!("{n}-control-plane")},
            "spec": {
                "replicas": self.control_planes,
                "version": self.version,
                "machineTemplate": {"infrastructureTemplate": {
                    "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SimMachineTemplate",
                    "name": format!("{n}-control-plane")}},
                "controlPlaneConfig": self.control_plane_config,
            }
        });
        if !self.upgrade_strategy.is_empty() {
            cp["spec"]["upgradeStrategy"] = json!(self.upgrade_strategy);
        }
        let mut objs = vec![
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SimCluster",
                   "metadata": {"name": n}, "spec": {}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": n},
                   "spec": {
                       "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "MicroK8sControlPlane",
                                           "name": format!("{n}-control-plane")},
                       "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimCluster", "name": n}}}),
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SimMachineTemplate",
                   "metadata": {"name": format!("{n}-control-plane")}, "spec": {"template": {"spec": {}}}}),
            cp,
        ];
        if self.workers >= 0 {
            objs.extend([
                json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SimMachineTemplate",
                       "metadata": {"name": format!("{n}-md-0")}, "spec": {"template": {"spec": {}}}}),
                json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfigTemplate",
                       "metadata": {"name": format!("{n}-md-0")},
                       "spec": {"template": {"spec": self.worker_config}}}),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                       "metadata": {"name": format!("{n}-md-0")},
                       "spec": {
                           "clusterName": n,
                           "replicas": self.workers,
                           "template": {"spec": {
                               "clusterName": n,
                               "version": self.version,
                               "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io",
                                   "kind": "MicroK8sConfigTemplate", "name": format!("{n}-md-0")}},
                               "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                   "kind": "SimMachineTemplate", "name": format!("{n}-md-0")}}}}}),
            ]);
        }
        objs
    }
}

fn ar(api_version: &str, kind: &str) -> ApiResource {
    let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind))
}

/// A namespaced dynamic API.
pub fn dynamic(client: &kube::Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ar(api_version, kind))
}

/// Applies objects in a namespace.
pub async fn apply(client: &kube::Client, ns: &str, objs: &[Value]) {
    for o in objs {
        crate::apply_value(client, o, Some(ns)).await;
    }
}

/// Merge-patches the spec of an object.
pub async fn patch_spec(client: &kube::Client, ns: &str, api_version: &str, kind: &str, name: &str, spec: Value) {
    dynamic(client, ns, api_version, kind)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
        .await
        .unwrap_or_else(|e| panic!("patch {kind} {name}: {e}"));
}

/// Sets the Kubernetes version of a cluster's control plane (`<name>-control-plane`) and of its
/// MachineDeployment (`<name>-md-0`), as a user upgrading both does.
pub async fn set_version(client: &kube::Client, ns: &str, name: &str, version: &str) {
    patch_spec(
        client,
        ns,
        "controlplane.cluster.x-k8s.io/v1beta1",
        "MicroK8sControlPlane",
        &format!("{name}-control-plane"),
        json!({ "version": version }),
    )
    .await;
    patch_spec(
        client,
        ns,
        "cluster.x-k8s.io/v1beta2",
        "MachineDeployment",
        &format!("{name}-md-0"),
        json!({"template": {"spec": { "version": version }}}),
    )
    .await;
}

/// The kubelet versions of a simulated cluster's Nodes, sorted (empty while it has no API).
pub async fn node_versions(env: &Env, ns: &str, name: &str) -> Vec<String> {
    node_versions_on(&env.sim, ns, name).await
}

/// [`node_versions`] with the simulator given.
pub async fn node_versions_on(sim: &mk8s_sim::SimHandle, ns: &str, name: &str) -> Vec<String> {
    let Some(wc) = sim.workload_client(ns, name).await else {
        return vec![];
    };
    let mut v: Vec<String> = Api::<Node>::all(wc)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.status.as_ref()?.node_info.as_ref().map(|i| i.kubelet_version.clone()))
        .collect();
    v.sort();
    v
}

/// Waits until the cluster has exactly `count` Nodes, every one on a version starting with
/// `prefix`.
pub async fn wait_all_nodes_on(env: &Env, ns: &str, name: &str, prefix: &str, count: usize, timeout: Duration) {
    wait_all_nodes_on_sim(&env.sim, ns, name, prefix, count, timeout).await;
}

/// [`wait_all_nodes_on`] with the simulator given.
pub async fn wait_all_nodes_on_sim(
    sim: &mk8s_sim::SimHandle,
    ns: &str,
    name: &str,
    prefix: &str,
    count: usize,
    timeout: Duration,
) {
    eventually(timeout, &format!("{count} nodes on {prefix}"), || async {
        let v = node_versions_on(sim, ns, name).await;
        if v.len() == count && v.iter().all(|x| x.starts_with(prefix)) {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
}

/// The Machines of a cluster (v1beta2).
pub async fn machines(client: &kube::Client, ns: &str, cluster: &str) -> Vec<Machine> {
    let api: Api<Machine> = Api::namespaced_with(client.clone(), ns, &ar("cluster.x-k8s.io/v1beta2", "Machine"));
    api.list(&kube::api::ListParams::default().labels(&format!("cluster.x-k8s.io/cluster-name={cluster}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn condition_status(obj: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    obj.data["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

/// What the scenarios expect of a converged cluster.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// Control plane machines.
    pub control_planes: usize,
    /// Worker machines.
    pub workers: usize,
}

/// Waits until the cluster converges to `expect` and checks everything a user would:
/// Cluster `Available`, every Machine with a nodeRef and Running, Nodes Ready in the workload
/// API server, the `<cluster>-kubeconfig` Secret working, dqlite members = control planes.
pub async fn wait_converged(env: &Env, client: &kube::Client, ns: &str, name: &str, expect: Expect, timeout: Duration) {
    wait_converged_on(&env.sim, client, ns, name, expect, timeout).await;
}

/// [`wait_converged`] with the simulator given (a management cluster other than the shared
/// environment's).
pub async fn wait_converged_on(
    sim: &mk8s_sim::SimHandle,
    client: &kube::Client,
    ns: &str,
    name: &str,
    expect: Expect,
    timeout: Duration,
) {
    let clusters = dynamic(client, ns, "cluster.x-k8s.io/v1beta2", "Cluster");
    eventually(
        timeout,
        &format!("cluster {ns}/{name} converged to {expect:?}"),
        || async {
            let c = clusters.get(name).await.map_err(|e| e.to_string())?;
            match condition_status(&c, "Available") {
                Some((s, _, _)) if s == "True" => {}
                other => return Err(format!("Cluster Available = {other:?}")),
            }
            let ms = machines(client, ns, name).await;
            let live: Vec<&Machine> = ms.iter().filter(|m| !m.is_deleting()).collect();
            let cps = live.iter().filter(|m| m.is_control_plane()).count();
            let workers = live.len() - cps;
            if (cps, workers) != (expect.control_planes, expect.workers) || live.len() != ms.len() {
                return Err(format!(
                    "machines: {cps} control planes, {workers} workers, {} deleting",
                    ms.len() - live.len()
                ));
            }
            for m in &live {
                let phase = m.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if m.node_name().is_none() || phase != "Running" {
                    return Err(format!(
                        "machine {} phase {phase}, nodeRef {:?}",
                        m.metadata.name.as_deref().unwrap_or_default(),
                        m.node_name()
                    ));
                }
            }
            // The workload cluster, through the kubeconfig Secret the control plane wrote.
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            let kc = secrets
                .get(&format!("{name}-kubeconfig"))
                .await
                .map_err(|e| format!("kubeconfig secret: {e}"))?;
            let yaml = String::from_utf8(
                kc.data
                    .unwrap_or_default()
                    .get("value")
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
            let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml)
                .await
                .map_err(|e| format!("kubeconfig: {e}"))?;
            let nodes: Vec<Node> = Api::<Node>::all(wc)
                .list(&Default::default())
                .await
                .map_err(|e| format!("workload nodes: {e}"))?
                .items;
            let ready = nodes
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            if ready < live.len() {
                return Err(format!("{ready} Ready nodes for {} machines", live.len()));
            }
            let snap = sim.cluster(ns, name).ok_or("no simulated cluster")?;
            let members = snap.member_addresses();
            if members.len() != expect.control_planes {
                return Err(format!(
                    "dqlite members {members:?}, expected {}",
                    expect.control_planes
                ));
            }
            Ok(())
        },
    )
    .await;
}

/// The dqlite members as the simulator sees them.
pub fn members(env: &Env, ns: &str, cluster: &str) -> Vec<String> {
    env.sim
        .cluster(ns, cluster)
        .map(|c| c.member_addresses())
        .unwrap_or_default()
}
