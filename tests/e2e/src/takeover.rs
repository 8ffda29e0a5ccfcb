//! The takeover checks (the drop-in promise), shared by `tests/takeover.rs` — a synthetic
//! Canonical v0.6.11 state — and `mk8s-bench takeover` — a cluster provisioned by Canonical's
//! running managers: the README's cut-over, then what must hold after it.
//!
//! Cut-over: Canonical's managers gone, [`install_our_crds`], ours started. Then
//! [`wait_taken_over`]; [`Snapshot`]s before and after must be equal (no new Machines, no
//! regenerated bootstrap data, the cluster Secrets untouched, one init, no node joined again);
//! [`AvailabilityWatch`] must have seen the Cluster `Available` throughout;
//! [`check_kubeconfig`] finds a compliant kubeconfig; [`scale_up_and_upgrade`] succeeds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use mk8s_api::capi::MachineExt;
use mk8s_sim::SimHandle;
use mk8s_testenv::Plane;
use serde_json::json;

use crate::cluster::{self, Expect};

const CP: &str = "controlplane.cluster.x-k8s.io/v1beta1";
const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io/v1beta1";
const CAPI: &str = "cluster.x-k8s.io/v1beta2";

/// What the takeover must leave unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Machine name → uid.
    pub machines: BTreeMap<String, String>,
    /// Bootstrap data Secret name → resourceVersion.
    pub data_secrets: BTreeMap<String, String>,
    /// The cluster CA, join token and auth token Secrets: name → resourceVersion.
    pub cluster_secrets: BTreeMap<String, String>,
    /// `Init` events in the simulator's history.
    pub inits: usize,
    /// Control plane and worker joins in the simulator's history.
    pub joins: usize,
}

/// The state of cluster `name` that the takeover must not change. Panics on a second init.
pub async fn snapshot(sim: &SimHandle, client: &kube::Client, ns: &str, name: &str) -> Snapshot {
    let ms = cluster::machines(client, ns, name).await;
    let machines = ms
        .iter()
        .map(|m| (m.metadata.name.clone().unwrap(), m.metadata.uid.clone().unwrap()))
        .collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let version = |s: Secret| s.metadata.resource_version.unwrap_or_default();
    let mut data_secrets = BTreeMap::new();
    for m in &ms {
        let data = m.spec.bootstrap.data_secret_name.clone().unwrap();
        let s = secrets.get(&data).await.unwrap();
        data_secrets.insert(data, version(s));
    }
    let mut cluster_secrets = BTreeMap::new();
    for suffix in ["ca", "jointoken", "capi-auth-token"] {
        let s = format!("{name}-{suffix}");
        let got = secrets.get(&s).await.unwrap_or_else(|e| panic!("Secret {s}: {e}"));
        cluster_secrets.insert(s, version(got));
    }
    let snap = sim.cluster(ns, name).unwrap();
    let count = |e: &str| snap.state.history.iter().filter(|h| h.event == e).count();
    assert_eq!(count("SecondInit"), 0, "no second init: {:?}", snap.state.history);
    Snapshot {
        machines,
        data_secrets,
        cluster_secrets,
        inits: count("Init"),
        joins: count("Joined") + count("WorkerJoined"),
    }
}

/// Asserts that the takeover changed none of `before`.
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot) {
    assert_eq!(before.machines, after.machines, "no new (or replaced) Machines");
    assert_eq!(
        before.data_secrets, after.data_secrets,
        "no regenerated bootstrap data (data Secret resourceVersions unchanged)"
    );
    assert_eq!(
        before.cluster_secrets, after.cluster_secrets,
        "the cluster CA, join token and auth token Secrets are used as they are"
    );
    assert_eq!(after.inits, 1, "one init in the simulator's history");
    assert_eq!(before.joins, after.joins, "no node joined again");
}

/// Installs our CRDs as the README's cut-over does: `kubectl apply -f config/crd` and the
/// removal of Canonical's contract label (kept by a plain apply; with both labels CAPI picks a
/// contract at random).
pub async fn install_our_crds(plane: &Plane, client: &kube::Client) {
    let crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in &crds {
        api.patch(
            c.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"cluster.x-k8s.io/v1beta1": null}}})),
        )
        .await
        .unwrap();
    }
}

/// Records every observation of a Cluster's `Available` condition that is not `True`.
pub struct AvailabilityWatch {
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AvailabilityWatch {
    /// Starts polling Cluster `name` every 200 ms.
    pub fn start(client: kube::Client, ns: &str, name: &str) -> AvailabilityWatch {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = seen.clone();
        let (ns, name) = (ns.to_string(), name.to_string());
        let task = tokio::spawn(async move {
            let clusters = cluster::dynamic(&client, &ns, CAPI, "Cluster");
            let start = Instant::now();
            loop {
                if let Ok(c) = clusters.get(&name).await {
                    let cond = c.data["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available").cloned());
                    if cond.as_ref().is_none_or(|c| c["status"] != "True") {
                        out.lock().unwrap().push(format!("{:.1?}: {cond:?}", start.elapsed()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        AvailabilityWatch { seen, task }
    }

    /// The observations so far (and forgets them).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Stops watching; the observations not taken yet.
    pub fn stop(self) -> Vec<String> {
        self.task.abort();
        self.take()
    }
}

/// Waits until our managers have taken over cluster `name`: the control plane's status
/// carries our fields, every config's status was written by ours, the kubeconfig is of
/// CAPI's Secret type, the init lock is released.
pub async fn wait_taken_over(client: &kube::Client, ns: &str, name: &str, timeout: Duration) {
    let mcps = cluster::dynamic(client, ns, CP, "MicroK8sControlPlane");
    let configs = cluster::dynamic(client, ns, BOOTSTRAP, "MicroK8sConfig");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    crate::eventually(timeout, "our managers to take over", || async {
        let mcp = mcps
            .get(&format!("{name}-control-plane"))
            .await
            .map_err(|e| e.to_string())?;
        let st = &mcp.data["status"];
        if st["initialization"]["controlPlaneInitialized"] != true || !st["versions"].is_array() {
            return Err(format!("control plane status not ours yet: {st}"));
        }
        for c in configs.list(&Default::default()).await.map_err(|e| e.to_string())? {
            if c.data["status"]["initialization"]["dataSecretCreated"] != true {
                return Err(format!("config {:?} status not ours yet", c.metadata.name));
            }
        }
        let kc = secrets
            .get(&format!("{name}-kubeconfig"))
            .await
            .map_err(|e| e.to_string())?;
        if kc.type_.as_deref() != Some("cluster.x-k8s.io/secret") {
            return Err("the kubeconfig is still Canonical's".into());
        }
        if cms
            .get_opt(&format!("{name}-lock"))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("the init lock is still there".into());
        }
        Ok(())
    })
    .await;
}

fn secret_text(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// Asserts that `<name>-kubeconfig` is compliant (the ownership rule): controlled by the
/// control plane, labelled with the cluster name, one user `admin` with a short-lived
/// certificate signed by the cluster CA, and that it reaches the workload cluster's `nodes`
/// Nodes.
pub async fn check_kubeconfig(client: &kube::Client, ns: &str, name: &str, nodes: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let kc = secrets.get(&format!("{name}-kubeconfig")).await.unwrap();
    let owner = kc.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner.iter().any(|o| o.kind == "MicroK8sControlPlane"
            && o.name == format!("{name}-control-plane")
            && o.controller == Some(true)),
        "owned by the control plane: {owner:?}"
    );
    assert_eq!(
        kc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("cluster.x-k8s.io/cluster-name"))
            .map(String::as_str),
        Some(name)
    );
    let yaml = secret_text(&kc, "value");
    let facts = mk8s_pki::kubeconfig_facts(&yaml).expect("a kubeconfig");
    let [(user, cert)] = facts.users.as_slice() else {
        panic!("one user: {:?}", facts.users.len())
    };
    assert_eq!(user, "admin");
    let ca = secrets.get(&format!("{name}-ca")).await.unwrap();
    assert!(
        mk8s_pki::is_signed_by(cert, &secret_text(&ca, "crt")),
        "signed by the cluster CA"
    );
    let info = mk8s_pki::cert_info(cert).unwrap();
    let life = info.not_after.duration_since(info.not_before).unwrap();
    assert!(life <= Duration::from_secs(366 * 24 * 3600), "short-lived: {life:?}");
    let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.unwrap();
    let got = Api::<Node>::all(wc).list(&Default::default()).await.unwrap();
    assert_eq!(got.items.len(), nodes, "the kubeconfig works");
}

/// How long the steps after the takeover took.
#[derive(Debug, Clone, Copy)]
pub struct AfterTakeover {
    /// 3 + 2 → 5 + 3, until converged.
    pub scale_up: Duration,
    /// Every machine on v1.34 with 5 control planes and 3 workers converged.
    pub upgrade: Duration,
}

/// Scales the 3 + 2 cluster `name` to 5 + 3, then rolls it out to v1.34.0; asserts that every
/// control plane machine was replaced and dqlite never lost quorum.
pub async fn scale_up_and_upgrade(
    sim: &SimHandle,
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> AfterTakeover {
    let expect = Expect {
        control_planes: 5,
        workers: 3,
    };
    let t = Instant::now();
    let mcp = format!("{name}-control-plane");
    cluster::patch_spec(client, ns, CP, "MicroK8sControlPlane", &mcp, json!({"replicas": 5})).await;
    let md = format!("{name}-md-0");
    cluster::patch_spec(client, ns, CAPI, "MachineDeployment", &md, json!({"replicas": 3})).await;
    cluster::wait_converged_on(sim, client, ns, name, expect, timeout).await;
    let scale_up = t.elapsed();

    let control_planes = |ms: Vec<mk8s_api::capi::Machine>| -> Vec<String> {
        ms.iter()
            .filter(|m| m.is_control_plane())
            .filter_map(|m| m.metadata.name.clone())
            .collect()
    };
    let old_cps = control_planes(cluster::machines(client, ns, name).await);
    let t = Instant::now();
    cluster::set_version(client, ns, name, "v1.34.0").await;
    cluster::wait_all_nodes_on_sim(sim, ns, name, "v1.34.", 8, timeout).await;
    cluster::wait_converged_on(sim, client, ns, name, expect, timeout).await;
    let upgrade = t.elapsed();
    let new_cps = control_planes(cluster::machines(client, ns, name).await);
    assert!(
        old_cps.iter().all(|o| !new_cps.contains(o)),
        "every control plane machine (Canonical's included) replaced: {old_cps:?} -> {new_cps:?}"
    );
    let snap = sim.cluster(ns, name).unwrap();
    assert!(snap.quorum_never_lost(), "dqlite quorum kept: {:?}", snap.state.history);
    let members = snap.member_addresses();
    assert_eq!(members.len(), 5, "dqlite members are the 5 control planes: {members:?}");
    AfterTakeover { scale_up, upgrade }
}
