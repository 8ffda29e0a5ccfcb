//! Scenario 1: time from applying a cluster to its Cluster `Available`, on a fresh plane per
//! run, with the simulator in its normal mode (one real workload apiserver per cluster).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use mk8s_e2e::ManagerKind;
use mk8s_e2e::cluster::{self, Shape};
use serde::Serialize;

use crate::env::{BenchEnv, EnvOptions, SimOptions};
use crate::theirs::Provider;

/// The MachineDeployment annotation that lets CAPI create workers for a control plane that
/// reports no `status.version` (Canonical's): otherwise the MachineSet preflight check
/// `ControlPlaneIsStable` holds their workers forever.
pub const SKIP_PREFLIGHT: (&str, &str) = (
    "machineset.cluster.x-k8s.io/skip-preflight-checks",
    "ControlPlaneIsStable",
);

/// The objects of a cluster as the given provider needs them: theirs get [`SKIP_PREFLIGHT`]
/// on their MachineDeployment.
pub fn objects_for(shape: &Shape, provider: &Provider) -> Vec<serde_json::Value> {
    let mut objs = shape.objects();
    if matches!(provider, Provider::Theirs(_)) {
        for o in objs.iter_mut().filter(|o| o["kind"] == "MachineDeployment") {
            o["metadata"]["annotations"][SKIP_PREFLIGHT.0] = serde_json::json!(SKIP_PREFLIGHT.1);
        }
    }
    objs
}

/// Delays of the simulated machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Delays {
    /// No boot or install delay.
    Zero,
    /// 30 s VM boot, 60 s snap install (real time).
    Realistic,
}

impl Delays {
    /// (boot, install).
    pub fn durations(self) -> (Duration, Duration) {
        match self {
            Delays::Zero => (Duration::ZERO, Duration::ZERO),
            Delays::Realistic => (Duration::from_secs(30), Duration::from_secs(60)),
        }
    }

    /// Label in tables.
    pub fn label(self) -> &'static str {
        match self {
            Delays::Zero => "zero delays",
            Delays::Realistic => "30 s boot + 60 s install",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Seconds from the first apply to Cluster `Available` (None: timed out).
    pub available_s: Option<f64>,
    /// Seconds to the control plane's `status.initialized`.
    pub initialized_s: Option<f64>,
    /// Seconds until every Machine had a nodeRef.
    pub all_nodes_s: Option<f64>,
    /// When each step was first seen (polled every 100 ms), seconds after the apply: the
    /// timeline of the first control plane machine and of the first worker (keys from
    /// [`TIMELINE`], numbered in order).
    pub timeline: BTreeMap<&'static str, f64>,
}

/// The timeline's steps in order: who acts, and what is seen.
pub const TIMELINE: [&str; 20] = [
    "01 Cluster infrastructure provisioned (simulator; CAPI copies it)",
    "02 Cluster controlPlaneEndpoint set (simulator; CAPI copies it)",
    "03 control plane Machine created (ours: control plane)",
    "04 its MicroK8sConfig owned by the Machine (CAPI)",
    "05 its MicroK8sConfig's data Secret written (ours: bootstrap)",
    "06 its Machine has the data Secret's name (CAPI)",
    "07 its VM up (simulator)",
    "08 its node bootstrapped (node scripts)",
    "09 control plane initialized (ours: control plane)",
    "10 Cluster ControlPlaneInitialized (CAPI)",
    "11 its nodeRef (ours: providerID; CAPI)",
    "12 worker Machine created (CAPI MachineSet)",
    "13 its MicroK8sConfig owned by the Machine (CAPI)",
    "14 its MicroK8sConfig's data Secret written (ours: bootstrap)",
    "15 its Machine has the data Secret's name (CAPI)",
    "16 its VM up (simulator)",
    "17 its node bootstrapped (node scripts)",
    "18 its nodeRef (CAPI)",
    "19 every Machine's nodeRef",
    "20 Cluster Available (CAPI)",
];

const INFRA: usize = 0;
const ENDPOINT: usize = 1;
const INITIALIZED: usize = 8;
const CLUSTER_INITIALIZED: usize = 9;
const EVERY_NODE_REF: usize = 18;
const AVAILABLE: usize = 19;

/// A machine's own steps, as offsets from its role's first step.
const CREATED: usize = 0;
const OWNED: usize = 1;
const CONFIG_DATA: usize = 2;
const MACHINE_DATA: usize = 3;
const VM_UP: usize = 4;
const BOOTED: usize = 5;

/// The step of a machine of a role: control plane machines from step 2 (their nodeRef is
/// step 10), workers from step 11 (nodeRef 17).
fn step(control_plane: bool, offset: usize) -> usize {
    if control_plane { 2 + offset } else { 11 + offset }
}

fn node_ref_step(control_plane: bool) -> usize {
    if control_plane { 10 } else { 17 }
}

fn seen(t: &mut BTreeMap<&'static str, f64>, step: usize, now: f64) {
    if let Some(k) = TIMELINE.get(step) {
        t.entry(k).or_insert(now);
    }
}

fn is_control_plane(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.is_some_and(|l| l.contains_key("cluster.x-k8s.io/control-plane"))
}

fn cond_true(o: &DynamicObject, type_: &str) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

/// Runs one cluster of `cp` control planes and `workers` workers to Available.
pub async fn run_once(cp: i32, workers: i32, delays: Delays, label: &str, provider: &Provider) -> Run {
    let (boot, install) = delays.durations();
    let mut env = BenchEnv::start(&EnvOptions {
        name: label.to_string(),
        audit: false,
        capi: true,
        capi_args: vec![],
        sim: Some(SimOptions {
            light: false,
            boot_delay: boot,
            install_delay: install,
            concurrency: 16,
        }),
        provider: provider.clone(),
        managers: vec![ManagerKind::Bootstrap, ManagerKind::ControlPlane],
        manager_args: vec![],
    })
    .await;
    let client = env.client.clone();
    let ns = env.plane().namespace("bench").await.expect("namespace");
    let shape = Shape::new("c", cp, workers);
    let clusters = cluster::dynamic(&client, &ns, "cluster.x-k8s.io/v1beta2", "Cluster");
    let mcps = cluster::dynamic(
        &client,
        &ns,
        "controlplane.cluster.x-k8s.io/v1beta1",
        "MicroK8sControlPlane",
    );
    let timeout = match delays {
        Delays::Zero => Duration::from_secs(600),
        Delays::Realistic => Duration::from_secs(1500),
    };
    let t0 = Instant::now();
    cluster::apply(&client, &ns, &objects_for(&shape, provider)).await;
    let mut run = Run {
        available_s: None,
        initialized_s: None,
        all_nodes_s: None,
        timeline: BTreeMap::new(),
    };
    let configs = cluster::dynamic(&client, &ns, "bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig");
    let sim_machines = cluster::dynamic(&client, &ns, "infrastructure.cluster.x-k8s.io/v1alpha1", "SimMachine");
    let want = usize::try_from(cp + workers).unwrap_or(0);
    while t0.elapsed() < timeout {
        let now = t0.elapsed().as_secs_f64();
        let tl = &mut run.timeline;
        if run.initialized_s.is_none()
            && let Ok(m) = mcps.get("c-control-plane").await
            && m.data["status"]["initialized"] == true
        {
            run.initialized_s = Some(now);
            seen(tl, INITIALIZED, now);
        }
        let ms = cluster::machines(&client, &ns, "c").await;
        for m in &ms {
            let cp = is_control_plane(m.metadata.labels.as_ref());
            seen(tl, step(cp, CREATED), now);
            if m.spec.bootstrap.data_secret_name.is_some() {
                seen(tl, step(cp, MACHINE_DATA), now);
            }
            if m.status.as_ref().is_some_and(|s| s.node_ref.is_some()) {
                seen(tl, node_ref_step(cp), now);
            }
        }
        // A config's role is its Machine's (the control plane's configs are not labelled).
        let cp_configs: Vec<&str> = ms
            .iter()
            .filter(|m| is_control_plane(m.metadata.labels.as_ref()))
            .filter_map(|m| m.spec.bootstrap.config_ref.as_ref().map(|r| r.name.as_str()))
            .collect();
        if let Ok(cfgs) = configs.list(&Default::default()).await {
            for c in cfgs.items {
                let cp = c.metadata.name.as_deref().is_some_and(|n| cp_configs.contains(&n));
                if c.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Machine")
                {
                    seen(tl, step(cp, OWNED), now);
                }
                if c.data["status"]["dataSecretName"].is_string() {
                    seen(tl, step(cp, CONFIG_DATA), now);
                }
            }
        }
        if let Ok(sms) = sim_machines.list(&Default::default()).await {
            for sm in sms.items {
                let cp = is_control_plane(sm.metadata.labels.as_ref());
                if sm.data["status"]["initialization"]["provisioned"] == true {
                    seen(tl, step(cp, VM_UP), now);
                }
                if cond_true(&sm, "BootstrapSucceeded") {
                    seen(tl, step(cp, BOOTED), now);
                }
            }
        }
        if run.all_nodes_s.is_none()
            && ms.len() == want
            && ms
                .iter()
                .all(|m| m.status.as_ref().is_some_and(|s| s.node_ref.is_some()))
        {
            run.all_nodes_s = Some(now);
            seen(tl, EVERY_NODE_REF, now);
        }
        if let Ok(c) = clusters.get("c").await {
            if c.data["status"]["initialization"]["infrastructureProvisioned"] == true {
                seen(tl, INFRA, now);
            }
            if c.data["spec"]["controlPlaneEndpoint"]["host"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
            {
                seen(tl, ENDPOINT, now);
            }
            if cond_true(&c, "ControlPlaneInitialized") {
                seen(tl, CLUSTER_INITIALIZED, now);
            }
            if run.available_s.is_none() && cond_true(&c, "Available") {
                run.available_s = Some(now);
                seen(tl, AVAILABLE, now);
            }
        }
        if run.available_s.is_some() && run.all_nodes_s.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if run.available_s.is_none() {
        let conditions = clusters
            .get("c")
            .await
            .map(|c| c.data["status"]["conditions"].to_string())
            .unwrap_or_default();
        eprintln!("bench: {label}: Cluster not Available after {timeout:?}; its conditions: {conditions}");
        eprintln!("bench: {label}: its logs are kept in {}", env.dir.display());
        env.keep = true;
    }
    env.stop().await;
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_their_machine_deployments_skip_the_control_plane_stability_preflight() {
        let shape = Shape::new("c", 1, 1);
        let annotated = |p: &Provider| {
            objects_for(&shape, p)
                .iter()
                .filter(|o| o["metadata"]["annotations"][SKIP_PREFLIGHT.0] == SKIP_PREFLIGHT.1)
                .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        assert!(annotated(&Provider::Ours).is_empty());
        let theirs = Provider::Theirs(crate::theirs::Theirs {
            dir: "/nonexistent".into(),
            version: "v0.6.11".into(),
        });
        assert_eq!(annotated(&theirs), ["MachineDeployment"]);
    }
}
