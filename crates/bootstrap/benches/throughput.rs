//! Bootstrap throughput on a real kube-apiserver (T1 environment): N worker MicroK8sConfigs
//! of one initialized cluster (with one running control plane Machine to join through), from
//! creation to every data Secret written. Prints wall time and reconcile count.
//!
//! `cargo bench -p mk8s-bootstrap --bench throughput -- [N]` (default 100).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_api::MicroK8sConfig;
use mk8s_api::capi::CoreVersion;
use mk8s_runtime::{ManagerFlags, Metrics, Runtime};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn ar(g: &str, v: &str, k: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, k))
}

async fn create(client: &kube::Client, ns: &str, ar: &ApiResource, obj: serde_json::Value) -> DynamicObject {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap()
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let Some(plane) = mk8s_testenv::shared().await else {
        eprintln!("throughput: no test binaries; run hack/build-testenv.sh");
        return;
    };
    plane.install_capi_crds().await.unwrap();
    let crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let ns = plane.namespace("bench").await.unwrap();
    let client = plane.client().await;
    let cluster = ar("cluster.x-k8s.io", "v1beta2", "Cluster");
    let machine = ar("cluster.x-k8s.io", "v1beta2", "Machine");
    let config = ar("bootstrap.cluster.x-k8s.io", "v1beta1", "MicroK8sConfig");

    create(
        &client,
        &ns,
        &cluster,
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c"}, "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}}}),
    )
    .await;
    let capi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cluster);
    capi.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"initialization":
        {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}})),
    )
    .await
    .unwrap();

    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let flags = ManagerFlags::from_args([format!("--namespace={ns}"), "--log-level=error".into()]).unwrap();
    let runtime = Runtime {
        client: client.clone(),
        metrics: metrics.clone(),
        shutdown: stop.clone(),
        flags,
        name: "microk8s-bootstrap",
        core_version: CoreVersion::V1Beta2,
    };
    let handle = tokio::spawn(async move { mk8s_bootstrap::controller::run(runtime).await.unwrap() });

    // One running control plane machine to join through (its bootstrap data exists already),
    // then N workers.
    let start = Instant::now();
    for i in 0..=n {
        let name = format!("m{i}");
        let cp = i == 0;
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": "c"});
        if cp {
            labels["cluster.x-k8s.io/control-plane"] = json!("");
        }
        let m = create(&client, &ns, &machine, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "labels": labels},
            "spec": {"clusterName": "c", "version": "v1.33.4", "providerID": format!("sim://{name}"),
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": name}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": name}}}))
        .await;
        if cp {
            let mapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &machine);
            mapi.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"bootstrap": {"dataSecretName": "provisioned"}}})),
            )
            .await
            .unwrap();
            let mapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &machine);
            mapi.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running",
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}})),
            )
            .await
            .unwrap();
            continue;
        }
        create(
            &client,
            &ns,
            &config,
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "name": name, "uid": m.metadata.uid.unwrap()}]}, "spec": {}}),
        )
        .await;
    }
    let created = start.elapsed();
    let configs: Api<MicroK8sConfig> = Api::namespaced(client.clone(), &ns);
    loop {
        let ready = configs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| c.status.as_ref().is_some_and(|s| s.ready))
            .count();
        if ready == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {ready}/{n} ready after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = start.elapsed();
    let text = metrics.encode();
    let reconciles: f64 = text
        .lines()
        .filter(|l| l.starts_with("mk8s_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("bootstrap throughput: {n} MicroK8sConfigs");
    println!("  objects created in       {:>8.2?}", created);
    println!("  all data Secrets within  {:>8.2?} of the first creation", total);
    println!("  configs per second       {:>8.1}", n as f64 / total.as_secs_f64());
    println!(
        "  reconciles               {:>8} ({:.2} per config)",
        reconciles,
        reconciles / n as f64
    );
    stop.cancel();
    let _ = handle.await;
}
