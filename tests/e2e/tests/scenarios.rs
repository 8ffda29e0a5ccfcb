//! The end-to-end scenarios (issue 5 §2) on the local management plane: the real CAPI core
//! manager v1.14, the MicroK8s machine simulator, and both providers as processes under their
//! own ServiceAccounts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mk8s_e2e::cluster::{self, Expect, Shape};

const CONVERGE: Duration = Duration::from_secs(300);

async fn setup(prefix: &str) -> Option<(&'static mk8s_e2e::Env, kube::Client, String)> {
    let env = tokio::task::spawn_blocking(mk8s_e2e::env).await.unwrap()?;
    let ns = env.plane.namespace(prefix).await.unwrap();
    Some((env, env.plane.client().await, ns))
}

/// 1. Quick start: 1 control plane + 1 worker.
#[tokio::test]
async fn s1_quick_start() {
    let Some((env, client, ns)) = setup("s1").await else {
        return;
    };
    let shape = Shape::new("quick", 1, 1);
    cluster::apply(&client, &ns, &shape.objects()).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "quick",
        Expect {
            control_planes: 1,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
}

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use mk8s_api::capi::MachineExt;
use serde_json::json;

const CP: &str = "controlplane.cluster.x-k8s.io/v1beta1";
const CAPI: &str = "cluster.x-k8s.io/v1beta2";

async fn scale_control_plane(client: &kube::Client, ns: &str, name: &str, replicas: i32) {
    cluster::patch_spec(
        client,
        ns,
        CP,
        "MicroK8sControlPlane",
        &format!("{name}-control-plane"),
        json!({"replicas": replicas}),
    )
    .await;
}

async fn scale_workers(client: &kube::Client, ns: &str, name: &str, replicas: i32) {
    cluster::patch_spec(
        client,
        ns,
        CAPI,
        "MachineDeployment",
        &format!("{name}-md-0"),
        json!({"replicas": replicas}),
    )
    .await;
}

/// The dqlite members are exactly the control plane machines' InternalIPs.
async fn assert_members_are_control_planes(env: &mk8s_e2e::Env, client: &kube::Client, ns: &str, name: &str) {
    let mut ips: Vec<String> = cluster::machines(client, ns, name)
        .await
        .iter()
        .filter(|m| m.is_control_plane())
        .flat_map(|m| {
            m.addresses_of("InternalIP")
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    ips.sort();
    let mut members: Vec<String> = cluster::members(env, ns, name)
        .iter()
        .map(|a| a.rsplit_once(':').map(|(ip, _)| ip.to_string()).unwrap_or_default())
        .collect();
    members.sort();
    assert_eq!(members, ips, "dqlite members vs control plane machines");
}

fn assert_quorum_kept(env: &mk8s_e2e::Env, ns: &str, name: &str) {
    let snap = env.sim.cluster(ns, name).expect("simulated cluster");
    let events: Vec<String> = snap
        .state
        .history
        .iter()
        .map(|e| format!("{} {:?} {}/{}", e.event, e.member, e.live, e.members))
        .collect();
    assert!(snap.quorum_never_lost(), "dqlite quorum was lost: {events:#?}");
    assert_eq!(
        snap.state.history.iter().filter(|e| e.event == "Init").count(),
        1,
        "init exactly once: {events:#?}"
    );
    assert!(
        !snap.state.history.iter().any(|e| e.event == "SecondInit"),
        "a second init: {events:#?}"
    );
}

/// 2. HA: 3 control planes + 2 workers; scale the control plane 3→5→3→1 and workers 2→4→1.
#[tokio::test]
async fn s2_ha_scaling() {
    let Some((env, client, ns)) = setup("s2").await else {
        return;
    };
    cluster::apply(&client, &ns, &Shape::new("ha", 3, 2).objects()).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "ha",
        Expect {
            control_planes: 3,
            workers: 2,
        },
        CONVERGE,
    )
    .await;
    assert_members_are_control_planes(env, &client, &ns, "ha").await;
    for (cp, workers) in [(5, 4), (3, 4), (1, 1)] {
        scale_control_plane(&client, &ns, "ha", cp).await;
        scale_workers(&client, &ns, "ha", workers).await;
        cluster::wait_converged(
            env,
            &client,
            &ns,
            "ha",
            Expect {
                control_planes: cp as usize,
                workers: workers as usize,
            },
            CONVERGE,
        )
        .await;
        assert_members_are_control_planes(env, &client, &ns, "ha").await;
    }
    assert_quorum_kept(env, &ns, "ha");
}

/// 3. Rolling upgrade of an HA cluster by one minor version.
#[tokio::test]
async fn s3_rolling_upgrade() {
    let Some((env, client, ns)) = setup("s3").await else {
        return;
    };
    let mut shape = Shape::new("roll", 3, 2);
    shape.upgrade_strategy = "RollingUpgrade".into();
    cluster::apply(&client, &ns, &shape.objects()).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "roll",
        Expect {
            control_planes: 3,
            workers: 2,
        },
        CONVERGE,
    )
    .await;
    let before: Vec<String> = cluster::machines(&client, &ns, "roll")
        .await
        .iter()
        .filter(|m| m.is_control_plane())
        .filter_map(|m| m.metadata.name.clone())
        .collect();

    cluster::set_version(&client, &ns, "roll", "v1.34.0").await;
    // Machines are replaced one at a time: never more than replicas + 1 control planes.
    let watcher = {
        let client = client.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            let mut max = 0;
            for _ in 0..2400 {
                let n = cluster::machines(&client, &ns, "roll")
                    .await
                    .iter()
                    .filter(|m| m.is_control_plane())
                    .count();
                max = max.max(n);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            max
        })
    };
    cluster::wait_all_nodes_on(env, &ns, "roll", "v1.34.", 5, CONVERGE).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "roll",
        Expect {
            control_planes: 3,
            workers: 2,
        },
        CONVERGE,
    )
    .await;
    watcher.abort();
    let after: Vec<String> = cluster::machines(&client, &ns, "roll")
        .await
        .iter()
        .filter(|m| m.is_control_plane())
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert!(
        before.iter().all(|b| !after.contains(b)),
        "every control plane machine replaced: {before:?} -> {after:?}"
    );
    assert_members_are_control_planes(env, &client, &ns, "roll").await;
    assert_quorum_kept(env, &ns, "roll");
    // Workers are not held by ControlPlaneIsStable afterwards: scale them up.
    scale_workers(&client, &ns, "roll", 3).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "roll",
        Expect {
            control_planes: 3,
            workers: 3,
        },
        CONVERGE,
    )
    .await;
}

/// 4. In-place upgrades: SmartUpgrade on one control plane, InPlaceUpgrade on three.
#[tokio::test]
async fn s4_in_place_upgrades() {
    let Some((env, client, ns)) = setup("s4").await else {
        return;
    };
    let mut single = Shape::new("smart", 1, 0);
    single.upgrade_strategy = "SmartUpgrade".into();
    let mut triple = Shape::new("inplace", 3, 0);
    triple.upgrade_strategy = "InPlaceUpgrade".into();
    cluster::apply(&client, &ns, &single.objects()).await;
    cluster::apply(&client, &ns, &triple.objects()).await;
    for (name, cp) in [("smart", 1), ("inplace", 3)] {
        cluster::wait_converged(
            env,
            &client,
            &ns,
            name,
            Expect {
                control_planes: cp,
                workers: 0,
            },
            CONVERGE,
        )
        .await;
    }
    for (name, cp) in [("smart", 1usize), ("inplace", 3)] {
        let before: Vec<String> = cluster::machines(&client, &ns, name)
            .await
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        cluster::patch_spec(
            &client,
            &ns,
            CP,
            "MicroK8sControlPlane",
            &format!("{name}-control-plane"),
            json!({"version": "v1.34.0"}),
        )
        .await;
        cluster::wait_all_nodes_on(env, &ns, name, "v1.34.", cp, CONVERGE).await;
        cluster::wait_converged(
            env,
            &client,
            &ns,
            name,
            Expect {
                control_planes: cp,
                workers: 0,
            },
            CONVERGE,
        )
        .await;
        let after: Vec<String> = cluster::machines(&client, &ns, name)
            .await
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        assert_eq!(before, after, "{name}: machines upgraded in place, not replaced");
        // The Machine's spec.version follows once its node reports the new kubelet version.
        mk8s_e2e::eventually(CONVERGE, &format!("{name}: Machine versions follow"), || async {
            let versions: Vec<Option<String>> = cluster::machines(&client, &ns, name)
                .await
                .iter()
                .map(|m| m.spec.version.clone())
                .collect();
            if versions.iter().all(|v| v.as_deref() == Some("v1.34.0")) {
                Ok(())
            } else {
                Err(format!("{versions:?}"))
            }
        })
        .await;
        assert_quorum_kept(env, &ns, name);
    }
}

/// 7. Deletion: the Cluster and everything below it go; nothing is orphaned.
#[tokio::test]
async fn s7_deletion() {
    let Some((env, client, ns)) = setup("s7").await else {
        return;
    };
    cluster::apply(&client, &ns, &Shape::new("del", 1, 1).objects()).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "del",
        Expect {
            control_planes: 1,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
    cluster::dynamic(&client, &ns, CAPI, "Cluster")
        .delete("del", &Default::default())
        .await
        .unwrap();
    mk8s_e2e::eventually(CONVERGE, "everything deleted", || async {
        let mut left = vec![];
        for (av, kind) in [
            (CAPI, "Cluster"),
            (CAPI, "Machine"),
            (CAPI, "MachineDeployment"),
            (CAPI, "MachineSet"),
            (CP, "MicroK8sControlPlane"),
            ("bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig"),
            ("infrastructure.cluster.x-k8s.io/v1alpha1", "SimCluster"),
            ("infrastructure.cluster.x-k8s.io/v1alpha1", "SimMachine"),
            ("v1", "Secret"),
            ("v1", "ConfigMap"),
        ] {
            let list = cluster::dynamic(&client, &ns, av, kind)
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            for o in list.items {
                let name = o.metadata.name.clone().unwrap_or_default();
                // Namespaces keep their service account token and root CA ConfigMap.
                if kind == "ConfigMap" && name == "kube-root-ca.crt" {
                    continue;
                }
                left.push(format!("{kind}/{name}"));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await;
    assert!(
        env.sim.cluster(&ns, "del").is_none_or(|c| c.state.deleted),
        "simulated cluster stopped"
    );
}

/// 8. Compatibility: Cluster YAML as Canonical's docs and e2e write it, with
///    `cluster.x-k8s.io/v1beta1` objects, applied unchanged.
#[tokio::test]
async fn s8_canonical_style_yaml() {
    let Some((env, client, ns)) = setup("s8").await else {
        return;
    };
    let text = include_str!("../fixtures/canonical-style.yaml");
    mk8s_e2e::apply_yaml(&client, text, Some(&ns)).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "compat",
        Expect {
            control_planes: 1,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
    // The configured options reached the nodes.
    let cp = cluster::machines(&client, &ns, "compat")
        .await
        .into_iter()
        .find(|m| m.is_control_plane())
        .unwrap();
    let infra = cp.spec.infrastructure_ref.clone().unwrap().name;
    let node = env.sim.node(&ns, &infra).expect("sim node");
    let env_file =
        std::fs::read_to_string(node.root.join("var/snap/microk8s/current/args/containerd-env")).unwrap_or_default();
    assert!(
        env_file.contains("http://proxy.internal:3128"),
        "containerd proxy: {env_file}"
    );
    let enabled: Vec<_> = node
        .calls_of("microk8s")
        .into_iter()
        .filter(|c| c.get(1).map(String::as_str) == Some("enable"))
        .collect();
    assert!(
        enabled.iter().any(|c| c.iter().any(|a| a == "ingress")),
        "addons: {enabled:?}"
    );
}

/// 9. Resilience: our managers are killed and restarted at random points while an HA
///    cluster comes up and scales; the end state is the same, with no duplicate machines and
///    exactly one init.
#[tokio::test]
async fn s9_resilience() {
    use rand::RngExt;
    let Some((env, client, ns)) = setup("s9").await else {
        return;
    };
    let seed: u64 = std::env::var("E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("s9_resilience: seed {seed} (rerun with E2E_SEED={seed})");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    cluster::apply(&client, &ns, &Shape::new("res", 3, 2).objects()).await;
    let chaos = async {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..4000))).await;
            let kind = if rng.random_bool(0.5) {
                mk8s_e2e::ManagerKind::Bootstrap
            } else {
                mk8s_e2e::ManagerKind::ControlPlane
            };
            let graceful = rng.random_bool(0.5);
            eprintln!("s9_resilience: restart {i}: {kind:?} graceful={graceful}");
            env.restart(kind, graceful).await;
            if i == 5 {
                scale_control_plane(&client, &ns, "res", 5).await;
            }
        }
    };
    chaos.await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "res",
        Expect {
            control_planes: 5,
            workers: 2,
        },
        CONVERGE,
    )
    .await;
    assert_members_are_control_planes(env, &client, &ns, "res").await;
    assert_quorum_kept(env, &ns, "res");
    let names: Vec<String> = cluster::machines(&client, &ns, "res")
        .await
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 7, "no duplicate machines: {names:?}");
}

async fn set_node_unhealthy(env: &mk8s_e2e::Env, ns: &str, cluster_name: &str, node: &str) {
    let wc = env
        .sim
        .workload_client(ns, cluster_name)
        .await
        .expect("workload cluster");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Api::<Node>::all(wc)
        .patch_status(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "reason": "E2EBroken", "message": "made unhealthy by the test", "lastHeartbeatTime": now,
                "lastTransitionTime": now}]}})),
        )
        .await
        .unwrap();
}

fn mhc(cluster_name: &str) -> serde_json::Value {
    json!({"apiVersion": CAPI, "kind": "MachineHealthCheck", "metadata": {"name": format!("{cluster_name}-cp")},
        "spec": {"clusterName": cluster_name,
                 "selector": {"matchLabels": {"cluster.x-k8s.io/control-plane": ""}},
                 "checks": {"unhealthyNodeConditions": [
                     {"type": "Ready", "status": "False", "timeoutSeconds": 2},
                     {"type": "Ready", "status": "Unknown", "timeoutSeconds": 2}]}}})
}

async fn mcp_condition(client: &kube::Client, ns: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
    let cp = cluster::dynamic(client, ns, CP, "MicroK8sControlPlane")
        .get(name)
        .await
        .ok()?;
    cp.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// 5. Remediation: an unhealthy control plane machine is replaced; with quorum at risk the
///    control plane refuses and says why.
#[tokio::test]
async fn s5_remediation() {
    let Some((env, client, ns)) = setup("s5").await else {
        return;
    };
    cluster::apply(&client, &ns, &Shape::new("rem", 3, 0).objects()).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "rem",
        Expect {
            control_planes: 3,
            workers: 0,
        },
        CONVERGE,
    )
    .await;
    cluster::apply(&client, &ns, &[mhc("rem")]).await;
    let victim = cluster::machines(&client, &ns, "rem")
        .await
        .into_iter()
        .find(|m| m.is_control_plane())
        .unwrap();
    let victim_name = victim.metadata.name.clone().unwrap();
    set_node_unhealthy(env, &ns, "rem", victim.node_name().unwrap()).await;
    mk8s_e2e::eventually(CONVERGE, "the unhealthy machine is replaced", || async {
        let names: Vec<String> = cluster::machines(&client, &ns, "rem")
            .await
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        if names.contains(&victim_name) {
            Err(format!("still there: {names:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "rem",
        Expect {
            control_planes: 3,
            workers: 0,
        },
        CONVERGE,
    )
    .await;
    assert_members_are_control_planes(env, &client, &ns, "rem").await;
    assert_quorum_kept(env, &ns, "rem");
    let cp = cluster::dynamic(&client, &ns, CP, "MicroK8sControlPlane")
        .get("rem-control-plane")
        .await
        .unwrap();
    assert_eq!(
        cp.data["status"]["lastRemediation"]["machine"],
        json!(victim_name),
        "status.lastRemediation"
    );

    // Two of three unhealthy: remediating either would lose quorum.
    let ms = cluster::machines(&client, &ns, "rem").await;
    let two: Vec<_> = ms.iter().filter(|m| m.is_control_plane()).take(2).collect();
    for m in &two {
        set_node_unhealthy(env, &ns, "rem", m.node_name().unwrap()).await;
    }
    mk8s_e2e::eventually(CONVERGE, "remediation refused with a condition", || async {
        match mcp_condition(&client, &ns, "rem-control-plane", "Remediating").await {
            Some((_, reason, msg)) if reason == "RemediationNotAllowed" && msg.contains("quorum") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let after: Vec<String> = cluster::machines(&client, &ns, "rem")
        .await
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    for m in &two {
        assert!(
            after.contains(m.metadata.name.as_ref().unwrap()),
            "no machine removed while quorum is at risk"
        );
    }
    assert_quorum_kept(env, &ns, "rem");
}

/// 6. ClusterClass: a topology Cluster from a ClusterClass built on MicroK8sControlPlaneTemplate
///    and MicroK8sConfigTemplate becomes Available; bumping topology.version upgrades it.
#[tokio::test]
async fn s6_cluster_class() {
    let Some((env, client, ns)) = setup("s6").await else {
        return;
    };
    let infra = "infrastructure.cluster.x-k8s.io/v1alpha1";
    let objs = vec![
        json!({"apiVersion": infra, "kind": "SimClusterTemplate", "metadata": {"name": "sim"}, "spec": {"template": {"spec": {}}}}),
        json!({"apiVersion": infra, "kind": "SimMachineTemplate", "metadata": {"name": "sim-cp"}, "spec": {"template": {"spec": {}}}}),
        json!({"apiVersion": infra, "kind": "SimMachineTemplate", "metadata": {"name": "sim-worker"}, "spec": {"template": {"spec": {}}}}),
        json!({"apiVersion": CP, "kind": "MicroK8sControlPlaneTemplate", "metadata": {"name": "mk8s"},
               "spec": {"template": {"spec": {"upgradeStrategy": "RollingUpgrade",
                   "controlPlaneConfig": {"initConfiguration": {"addons": ["dns"]}}}}}}),
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfigTemplate", "metadata": {"name": "mk8s-worker"},
               "spec": {"template": {"spec": {}}}}),
        json!({"apiVersion": CAPI, "kind": "ClusterClass", "metadata": {"name": "microk8s-sim"},
               "spec": {
                   "controlPlane": {
                       "templateRef": {"apiVersion": CP, "kind": "MicroK8sControlPlaneTemplate", "name": "mk8s"},
                       "machineInfrastructure": {"templateRef": {"apiVersion": infra, "kind": "SimMachineTemplate", "name": "sim-cp"}}},
                   "infrastructure": {"templateRef": {"apiVersion": infra, "kind": "SimClusterTemplate", "name": "sim"}},
                   "workers": {"machineDeployments": [{"class": "default-worker",
                       "bootstrap": {"templateRef": {"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfigTemplate", "name": "mk8s-worker"}},
                       "infrastructure": {"templateRef": {"apiVersion": infra, "kind": "SimMachineTemplate", "name": "sim-worker"}}}]}}}),
    ];
    cluster::apply(&client, &ns, &objs).await;
    let topo = json!({"apiVersion": CAPI, "kind": "Cluster", "metadata": {"name": "topo"},
        // CAPI refuses topology.version bumps while any worker's kubelet version differs from
        // its MachineDeployment's version string; MicroK8s installs the newest patch of the track
        // (v1.33.99 on the simulator), so ClusterClass users name the exact patch the channel ships.
        "spec": {"topology": {"classRef": {"name": "microk8s-sim"}, "version": "v1.33.99",
            "controlPlane": {"replicas": 3},
            "workers": {"machineDeployments": [{"class": "default-worker", "name": "md-0", "replicas": 1}]}}}});
    cluster::apply(&client, &ns, &[topo]).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "topo",
        Expect {
            control_planes: 3,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
    // CAPI refuses a version bump while a MachineDeployment still settles; retry as a user would.
    let clusters = cluster::dynamic(&client, &ns, CAPI, "Cluster");
    mk8s_e2e::eventually(CONVERGE, "topology.version bump accepted", || async {
        clusters
            .patch(
                "topo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"topology": {"version": "v1.34.99"}}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    cluster::wait_all_nodes_on(env, &ns, "topo", "v1.34.", 4, CONVERGE).await;
    cluster::wait_converged(
        env,
        &client,
        &ns,
        "topo",
        Expect {
            control_planes: 3,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
    assert_quorum_kept(env, &ns, "topo");
}

/// A condition of a worker's (or any) MicroK8sConfig as (status, reason, message).
async fn config_condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let cfg = cluster::dynamic(client, ns, "bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig")
        .get(name)
        .await
        .ok()?;
    cfg.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The InternalIP of a Machine, once its infrastructure reported one.
fn internal_ip(m: &mk8s_api::capi::Machine) -> Option<String> {
    m.status
        .as_ref()?
        .addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

/// 10. A stranded worker: the initializing control plane machine is deleted before it
///     initializes, after a worker's bootstrap data was rendered to join through it. The
///     worker's config says so (`JoinTargetsAvailable=False`, reason `JoinTargetsGone`, one
///     Warning Event) and keeps saying so while the control plane initializes on a new
///     machine at another address; deleting the worker Machine, as the message tells the
///     user, brings the cluster to Available with a worker that joined the new control plane.
#[tokio::test]
async fn s10_stranded_worker() {
    let Some((env, client, ns)) = setup("s10").await else {
        return;
    };
    const NAME: &str = "strand";
    let infra = "infrastructure.cluster.x-k8s.io/v1alpha1";
    let mut objs = Shape::new(NAME, 1, 1).objects();
    // The control plane machine gets its address at once but installs MicroK8s for ten
    // minutes (it never initializes within the test); the worker's VM boots only after ten
    // minutes, so its node never tries the join it was rendered for.
    for o in objs.iter_mut().filter(|o| o["kind"] == "SimMachineTemplate") {
        let delay = if o["metadata"]["name"] == json!(format!("{NAME}-control-plane")) {
            "installDelaySeconds"
        } else {
            "bootDelaySeconds"
        };
        o["spec"]["template"]["spec"][delay] = json!(600);
    }
    cluster::apply(&client, &ns, &objs).await;

    let (first_cp, cp_ip, worker, worker_cfg) = mk8s_e2e::eventually(
        CONVERGE,
        "a worker's data rendered to join the first control plane",
        || async {
            let ms = cluster::machines(&client, &ns, NAME).await;
            let cp = ms
                .iter()
                .find(|m| m.is_control_plane())
                .ok_or("no control plane machine")?;
            let ip = internal_ip(cp).ok_or("control plane machine has no address yet")?;
            let w = ms.iter().find(|m| !m.is_control_plane()).ok_or("no worker machine")?;
            let bootstrap = &w.spec.bootstrap;
            bootstrap
                .data_secret_name
                .as_ref()
                .ok_or("worker data not written yet")?;
            let cfg = bootstrap
                .config_ref
                .as_ref()
                .map(|r| r.name.clone())
                .ok_or("worker has no config")?;
            Ok::<_, String>((
                cp.metadata.name.clone().unwrap(),
                ip,
                w.metadata.name.clone().unwrap(),
                cfg,
            ))
        },
    )
    .await;
    let recorded = cluster::dynamic(&client, &ns, "bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig")
        .get(&worker_cfg)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get("bootstrap.cluster.x-k8s.io/microk8s-join-addresses")
        .cloned();
    assert_eq!(
        recorded.as_deref(),
        Some(cp_ip.as_str()),
        "the worker joins through the first control plane"
    );
    assert_eq!(
        config_condition(&client, &ns, &worker_cfg, "JoinTargetsAvailable").await,
        None,
        "nothing said while nothing is wrong"
    );

    // The replacement installs at once (the template is read when a machine is created).
    cluster::dynamic(&client, &ns, infra, "SimMachineTemplate")
        .patch(
            &format!("{NAME}-control-plane"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {"spec": {"installDelaySeconds": null}}}})),
        )
        .await
        .unwrap();
    cluster::dynamic(&client, &ns, CAPI, "Machine")
        .delete(&first_cp, &Default::default())
        .await
        .unwrap();

    mk8s_e2e::eventually(CONVERGE, "the worker's config says its join target is gone", || async {
        match config_condition(&client, &ns, &worker_cfg, "JoinTargetsAvailable").await {
            Some((s, r, m)) if s == "False" && r == "JoinTargetsGone" && m.contains(&cp_ip) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (_, _, ready_message) = config_condition(&client, &ns, &worker_cfg, "Ready").await.unwrap();
    assert!(ready_message.contains("Delete this Machine"), "{ready_message}");

    // The control plane initializes again on a new machine, at another address; the worker's
    // data still joins through the old one, so it stays stranded (nothing re-renders it).
    let new_ip = mk8s_e2e::eventually(CONVERGE, "a new control plane machine initialized", || async {
        let ms = cluster::machines(&client, &ns, NAME).await;
        let cp = ms
            .iter()
            .find(|m| m.is_control_plane() && m.metadata.name.as_deref() != Some(first_cp.as_str()))
            .ok_or("no replacement yet")?;
        cp.node_name().ok_or("replacement has no node yet")?;
        internal_ip(cp).ok_or_else(|| "replacement has no address".to_string())
    })
    .await;
    assert_ne!(new_ip, cp_ip);
    let (s, r, _) = config_condition(&client, &ns, &worker_cfg, "JoinTargetsAvailable")
        .await
        .unwrap();
    assert_eq!((s.as_str(), r.as_str()), ("False", "JoinTargetsGone"));
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let warned: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("JoinTargetsGone"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(worker_cfg.as_str()))
        .collect();
    assert_eq!(warned.len(), 1, "one Warning Event for the stranded worker: {warned:?}");
    assert_eq!(warned[0].type_.as_deref(), Some("Warning"));

    // As the message says: delete the worker Machine. Its replacement (booting at once)
    // joins the new control plane.
    cluster::dynamic(&client, &ns, infra, "SimMachineTemplate")
        .patch(
            &format!("{NAME}-md-0"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {"spec": {"bootDelaySeconds": null}}}})),
        )
        .await
        .unwrap();
    cluster::dynamic(&client, &ns, CAPI, "Machine")
        .delete(&worker, &Default::default())
        .await
        .unwrap();
    cluster::wait_converged(
        env,
        &client,
        &ns,
        NAME,
        Expect {
            control_planes: 1,
            workers: 1,
        },
        CONVERGE,
    )
    .await;
    let members = cluster::members(env, &ns, NAME);
    assert!(
        members.len() == 1 && members[0].starts_with(&format!("{new_ip}:")),
        "the one dqlite member is the new control plane: {members:?}"
    );
}
