//! Scenario 2: bootstrap throughput. 10 initialized clusters, each with one running control
//! plane Machine to join through, and 100 worker Machines each (created beforehand); then
//! 1000 worker MicroK8sConfigs are created and timed until every data Secret is written. The
//! bench plays CAPI core (no CAPI manager, no simulator); our bootstrap manager runs as a
//! process under its ServiceAccount.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt as _, watcher};
use mk8s_e2e::ManagerKind;
use serde::Serialize;
use serde_json::json;

use crate::env::{BenchEnv, EnvOptions, metric_sum};
use crate::{audit, procstat};

/// Result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Configs.
    pub configs: usize,
    /// Seconds to create them all (the bench's own pace).
    pub created_s: f64,
    /// Seconds from the first creation until every data Secret exists.
    pub all_secrets_s: f64,
    /// Seconds until every config reports its data Secret in status.
    pub all_ready_s: f64,
    /// Configs per second (data Secrets).
    pub per_second: f64,
    /// Reconciles of the bootstrap manager per config.
    pub reconciles_per_config: f64,
    /// API requests of the bootstrap manager per config (audit log).
    pub requests_per_config: f64,
    /// The bootstrap manager's requests by verb and resource.
    pub requests: audit::Counts,
    /// CPU seconds of the bootstrap manager in the window.
    pub cpu_s: f64,
    /// Peak RSS of the bootstrap manager (MiB).
    pub peak_rss_mib: f64,
}

fn ar(g: &str, v: &str, k: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, k))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

async fn create(api: &Api<DynamicObject>, obj: serde_json::Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(obj).expect("object");
    for attempt in 0..5 {
        match api.create(&PostParams::default(), &obj).await {
            Ok(o) => return o,
            Err(e) if attempt < 4 => {
                eprintln!("bench: create: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create: {e}"),
        }
    }
    unreachable!()
}

/// One run with `clusters` clusters of `per_cluster` workers each.
pub async fn run_once(clusters: usize, per_cluster: usize, label: &str, manager_args: &[String]) -> Run {
    let env = BenchEnv::start(&EnvOptions {
        name: label.to_string(),
        audit: true,
        capi: false,
        capi_args: vec![],
        sim: None,
        provider: crate::theirs::Provider::Ours,
        managers: vec![ManagerKind::Bootstrap],
        manager_args: manager_args.to_vec(),
    })
    .await;
    let client = env.client.clone();
    let ns = env.plane().namespace("throughput").await.expect("namespace");
    let cluster_ar = ar("cluster.x-k8s.io", "v1beta2", "Cluster");
    let machine_ar = ar("cluster.x-k8s.io", "v1beta2", "Machine");
    let config_ar = ar("bootstrap.cluster.x-k8s.io", "v1beta1", "MicroK8sConfig");
    let capi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cluster_ar);
    let machines: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &machine_ar);
    let configs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &config_ar);

    // Clusters, initialized, each with a running control plane machine; the worker Machines.
    let mut workers = vec![];
    for c in 0..clusters {
        let name = format!("t{c}");
        create(
            &capi,
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "metadata": {"name": name},
                "spec": {"controlPlaneEndpoint": {"host": format!("10.0.{c}.1"), "port": 6443}}}),
        )
        .await;
        capi.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization":
                {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}})),
        )
        .await
        .expect("cluster status");
        let cp = format!("{name}-cp");
        create(
            &machines,
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": cp, "labels": {"cluster.x-k8s.io/cluster-name": name,
                    "cluster.x-k8s.io/control-plane": ""}},
                "spec": {"clusterName": name, "version": "v1.33.4", "providerID": format!("sim://{cp}"),
                    "bootstrap": {"dataSecretName": "provisioned"},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": cp}}}),
        )
        .await;
        machines
            .patch_status(
                &cp,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running",
                    "addresses": [{"type": "InternalIP", "address": format!("10.0.{c}.2")}]}})),
            )
            .await
            .expect("machine status");
        let batch: Vec<(String, String)> = futures::stream::iter(0..per_cluster)
            .map(|w| {
                let machines = machines.clone();
                let name = name.clone();
                async move {
                    let m = format!("{name}-w{w}");
                    let o = create(
                        &machines,
                        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                            "metadata": {"name": m, "labels": {"cluster.x-k8s.io/cluster-name": name}},
                            "spec": {"clusterName": name, "version": "v1.33.4",
                                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": m}},
                                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": m}}}),
                    )
                    .await;
                    (m, o.metadata.uid.unwrap_or_default())
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        workers.extend(batch);
    }
    let n = workers.len();
    // Let the manager's caches take in the Machines before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = env.manager_pid(ManagerKind::Bootstrap).expect("bootstrap manager");
    let cpu0 = procstat::cpu_seconds(pid).unwrap_or(0.0);
    let reconciles0 = metric_sum(&env.metrics(ManagerKind::Bootstrap).await, "mk8s_reconcile_total");

    // Watch the data Secrets and the configs' status from before the first creation.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let want: HashSet<String> = workers.iter().map(|(m, _)| m.clone()).collect();
    let t0 = Instant::now();
    let unix0 = unix_now();
    let secret_done = {
        let want = want.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut s = watcher(secrets, watcher::Config::default()).applied_objects().boxed();
            while let Ok(Some(sec)) = s.try_next().await {
                if let Some(name) = sec.metadata.name
                    && want.contains(&name)
                {
                    seen.insert(name);
                    if seen.len() == want.len() {
                        return Some(t0.elapsed().as_secs_f64());
                    }
                }
            }
            None
        })
    };
    let ready_done = {
        let want = want.clone();
        let configs = configs.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut s = watcher(configs, watcher::Config::default()).applied_objects().boxed();
            while let Ok(Some(c)) = s.try_next().await {
                if c.data["status"]["dataSecretName"].is_string()
                    && let Some(name) = c.metadata.name
                    && want.contains(&name)
                {
                    seen.insert(name);
                    if seen.len() == want.len() {
                        return Some(t0.elapsed().as_secs_f64());
                    }
                }
            }
            None
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_create = Instant::now();
    let sampler = procstat::Sampler::start(vec![("bootstrap".into(), pid)], Duration::from_millis(250));
    futures::stream::iter(workers.iter().cloned())
        .map(|(m, uid)| {
            let configs = configs.clone();
            async move {
                create(
                    &configs,
                    json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
                        "metadata": {"name": m, "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2",
                            "kind": "Machine", "name": m, "uid": uid}]},
                        "spec": {}}),
                )
                .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let offset = t_create.duration_since(t0).as_secs_f64();
    let created_s = t_create.elapsed().as_secs_f64();
    let limit = Duration::from_secs(900);
    let all_secrets = tokio::time::timeout(limit, secret_done)
        .await
        .ok()
        .and_then(|r| r.ok().flatten())
        .expect("every data Secret written in time")
        - offset;
    let all_ready = tokio::time::timeout(limit, ready_done)
        .await
        .ok()
        .and_then(|r| r.ok().flatten())
        .expect("every config ready in time")
        - offset;
    let unix1 = unix_now();
    let _ = sampler.finish();
    let cpu_s = procstat::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let peak = procstat::hwm_mib(pid).unwrap_or(0.0);
    let reconciles = metric_sum(&env.metrics(ManagerKind::Bootstrap).await, "mk8s_reconcile_total") - reconciles0;
    // The audit log is written as requests complete: give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = env
        .audit_log
        .as_ref()
        .map(|l| audit::count(l, unix0, unix1 + 1.0))
        .unwrap_or_default();
    let mine = counts.get("mk8s-bootstrap").cloned().unwrap_or_default();
    env.stop().await;
    Run {
        configs: n,
        created_s,
        all_secrets_s: all_secrets,
        all_ready_s: all_ready,
        per_second: n as f64 / all_secrets,
        reconciles_per_config: reconciles / n as f64,
        requests_per_config: mine.total as f64 / n as f64,
        requests: mine,
        cpu_s,
        peak_rss_mib: peak,
    }
}
