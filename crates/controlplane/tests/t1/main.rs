//! T1: the control plane controller against a real management kube-apiserver (CAPI CRDs, no
//! CAPI manager — the test plays CAPI core, the infrastructure and the kubelet) and, per test,
//! a second real kube-apiserver as the workload cluster, whose client CA is the cluster CA —
//! so the kubeconfig the controller writes is proven to authenticate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use harness::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn label<'a>(o: &'a kube::api::DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn annotation<'a>(o: &'a kube::api::DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

/// Init handshake, objects as CAPI requires them, the kubeconfig, and watches (no polling:
/// the test configuration never requeues on a timer).
#[tokio::test]
async fn init_waits_for_the_marker_and_nodes_wake_the_controller() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "init").await;
    let uid = env.create_cluster(&["fd-a", "fd-b"]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    let mut spec = mcp_spec(1, "v1.33.4");
    spec["controlPlaneConfig"] = json!({"clusterConfiguration": {"portCompatibilityRemap": false},
                                         "initConfiguration": {"addons": ["dns", "ingress"]}});
    spec["machineTemplate"]["metadata"] = json!({"labels": {"team": "blue"}, "annotations": {"note": "x"}});
    spec["machineTemplate"]["spec"] = json!({"deletion": {"nodeDrainTimeoutSeconds": 42}});
    env.create_mcp(&uid, spec).await;
    let fake = Fake::start(
        &env,
        FakeOpts {
            mark_init: false,
            ..Default::default()
        },
    )
    .await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;

    // One machine, with its config and infrastructure clone.
    let m = wait_for_value(
        || async { env.cp_machines().await.into_iter().next() },
        "the first machine",
    )
    .await;
    let name = m.name_any();
    assert!(name.starts_with("cp-") && name.len() == 8, "{name}");
    assert_eq!(label(&m, "cluster.x-k8s.io/cluster-name"), Some("c1"));
    assert_eq!(label(&m, "cluster.x-k8s.io/control-plane"), Some(""));
    assert_eq!(label(&m, "cluster.x-k8s.io/control-plane-name"), Some("cp"));
    assert_eq!(annotation(&m, HOOK), Some("microk8s-controlplane"));
    let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("MicroK8sControlPlane", Some(true))
    );
    assert_eq!(m.data["spec"]["version"], "v1.33.4");
    assert_eq!(m.data["spec"]["failureDomain"], "fd-a");
    assert_eq!(
        m.data["spec"]["bootstrap"]["configRef"],
        json!({"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": name})
    );
    let infra_name = m.data["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(m.data["spec"]["infrastructureRef"]["kind"], "TestMachine");
    assert!(infra_name.starts_with("tpl-"));
    // Template metadata and deletion timeout, propagated.
    env.wait("template metadata on the machine", || async {
        let m = env.api(&machine_ar()).get(&name).await.unwrap();
        label(&m, "team") == Some("blue")
            && annotation(&m, "note") == Some("x")
            && m.data["spec"]["deletion"]["nodeDrainTimeoutSeconds"] == 42
    })
    .await;
    let cfg = env
        .api(&kube::api::ApiResource::erase::<mk8s_api::MicroK8sConfig>(&()))
        .get(&name)
        .await
        .unwrap();
    assert_eq!(
        cfg.data["spec"]["clusterConfiguration"]["portCompatibilityRemap"], false,
        "false written explicitly"
    );
    assert_eq!(
        cfg.data["spec"]["initConfiguration"]["addons"],
        json!(["dns", "ingress"])
    );
    let cfg_owner = &cfg.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (cfg_owner.controller, cfg_owner.block_owner_deletion),
        (None, Some(true))
    );
    let infra = env.api(&infra_ar("TestMachine")).get(&infra_name).await.unwrap();
    assert_eq!(annotation(&infra, "cluster.x-k8s.io/cloned-from-name"), Some("tpl"));
    assert_eq!(
        annotation(&infra, "cluster.x-k8s.io/cloned-from-groupkind"),
        Some("TestMachineTemplate.infrastructure.cluster.x-k8s.io")
    );
    assert_eq!(label(&infra, "from-template"), Some("yes"));
    assert_eq!(infra.data["spec"]["flavor"], "small");
    assert_eq!(infra.metadata.owner_references.as_ref().unwrap()[0].controller, None);
    let tpl = env.api(&infra_ar("TestMachineTemplate")).get("tpl").await.unwrap();
    env.wait("the template's Cluster owner reference", || async {
        let t = env.api(&infra_ar("TestMachineTemplate")).get("tpl").await.unwrap();
        t.owner_references().iter().any(|o| o.kind == "Cluster")
    })
    .await;
    let _ = tpl;

    // The kubeconfig: type, label, owner, and it authenticates against the workload apiserver.
    let kc = wait_for_value(
        || async { env.secrets().get_opt("c1-kubeconfig").await.unwrap() },
        "the kubeconfig",
    )
    .await;
    assert_eq!(kc.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        kc.labels().get("cluster.x-k8s.io/cluster-name").map(String::as_str),
        Some("c1")
    );
    assert_eq!(kc.owner_references()[0].kind, "MicroK8sControlPlane");
    let yaml = String::from_utf8(kc.data.unwrap()["value"].0.clone()).unwrap();
    let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.unwrap();
    Api::<Node>::all(wc).list(&ListParams::default()).await.unwrap();

    // The node appears without providerID: the watch wakes the controller, which sets it;
    // the fake CAPI then sets the nodeRef. No init yet: the marker is missing.
    env.wait("the node's providerID", || async {
        env.nodes()
            .await
            .iter()
            .any(|n| n.spec.as_ref().and_then(|s| s.provider_id.clone()) == Some(format!("test://{name}")))
    })
    .await;
    env.wait("the nodeRef", || async {
        env.cp_machines().await[0].data.pointer("/status/nodeRef").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = env.mcp().await.status.unwrap();
    assert!(!st.initialized, "initialised before the marker");
    assert_eq!(st.initialization.unwrap().control_plane_initialized, Some(false));
    assert_eq!(
        env.condition("Initialized").await.unwrap().reason,
        "WaitingForJoinsAccepted"
    );

    // The marker: the Node event alone must flip initialized (no timer requeue configured).
    let nodes: Api<Node> = Api::all(env.wclient.clone());
    nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"microk8s.cluster.x-k8s.io/accepts-joins": "true"}}})),
        )
        .await
        .unwrap();
    env.wait("initialized after the marker", || async {
        let st = env.mcp().await.status.unwrap_or_default();
        st.initialized && st.ready
    })
    .await;
    let st = env.mcp().await.status.unwrap();
    assert_eq!(
        st.selector.as_deref(),
        Some("cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/control-plane=")
    );
    assert_eq!(
        st.version.as_deref(),
        Some("v1.33.4"),
        "track-based: the node runs v1.33.7"
    );
    assert_eq!(st.replicas, Some(1));
    env.wait_condition("Available", |c| c.status == "True", "Available")
        .await;
    env.wait_condition("CertificatesAvailable", |c| c.status == "True", "CertificatesAvailable")
        .await;
    env.wait("the machine's UpToDate condition", || async {
        env.cp_machines().await[0]
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "UpToDate" && c["status"] == "True"))
    })
    .await;
    // Metadata propagation in place: change the template metadata, no new machine.
    env.patch_mcp(json!({"spec": {"machineTemplate": {"metadata": {"labels": {"team": "red"}, "annotations": null}}}}))
        .await;
    env.wait("the new label, the old annotation gone", || async {
        let m = env.api(&machine_ar()).get(&name).await.unwrap();
        label(&m, "team") == Some("red") && annotation(&m, "note").is_none()
    })
    .await;
    assert_eq!(env.cp_machines().await.len(), 1);
    assert_eq!(fake.log(|l| l.machines_seen.len()), 1);
    // The endpoint changes: the kubeconfig is reissued for it, and still authenticates.
    env.api(&cluster_ar())
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"controlPlaneEndpoint": {"host": "localhost", "port": env.workload_port}}})),
        )
        .await
        .unwrap();
    let yaml = wait_for_value(
        || async {
            let s = env.secrets().get("c1-kubeconfig").await.unwrap();
            let v = String::from_utf8(s.data.unwrap()["value"].0.clone()).unwrap();
            v.contains("https://localhost:").then_some(v)
        },
        "the kubeconfig for the new endpoint",
    )
    .await;
    let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.unwrap();
    Api::<Node>::all(wc).list(&ListParams::default()).await.unwrap();
    env.wait_condition("WorkloadClusterReachable", |c| c.status == "True", "reachable again")
        .await;
    let metrics = ctl.metrics.encode();
    assert!(metrics.contains("mk8s_controlplane_workload_reachable"), "{metrics}");
    let registry = ctl.metrics.clone();
    ctl.stop().await;
    // Every reconcile counts once with what woke it; the first one's cause is the control
    // plane itself.
    let metrics = registry.encode();
    assert!(
        metrics.contains("mk8s_reconcile_causes_total{controller=\"microk8scontrolplane\",cause=\"controlplane\"}"),
        "{metrics}"
    );
    assert_eq!(
        counter_sum(&metrics, "mk8s_reconcile_causes_total"),
        counter_sum(&metrics, "mk8s_reconcile_total"),
        "{metrics}"
    );
}

/// A counter summed over its series.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for_value<T, F, Fut>(f: F, what: &str) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    mk8s_testenv::wait_for_value(TIMEOUT, what, f).await
}

/// Scale 1→3→5→3→1 under the manager's ServiceAccount and the generated RBAC: one machine at
/// a time, members removed from dqlite through the survivors' cluster agents, pre-terminate
/// hooks released only after removal.
#[tokio::test]
async fn scales_one_three_five_three_one_under_generated_rbac() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "scale").await;
    let uid = env.create_cluster(&[]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    env.create_mcp(&uid, mcp_spec(1, "v1.33.0")).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let sa = service_account_client(plane).await;
    let ctl = start_controller(sa, &env.ns, test_config()).await;
    env.wait_settled(1).await;
    for n in [3, 5] {
        env.patch_mcp(json!({"spec": {"replicas": n}})).await;
        env.wait_settled(n).await;
    }
    assert_eq!(fake.log(|l| l.max_machines), 5);
    env.wait_condition("ReplicaCountRecommended", |c| c.status == "True", "odd")
        .await;
    for n in [3, 1] {
        env.patch_mcp(json!({"spec": {"replicas": n}})).await;
        env.wait_settled(n).await;
    }
    let (with_hook, without, max_deleting, actions) = fake.log(|l| {
        (
            l.deleted_with_hook.clone(),
            l.deleted_without_hook.clone(),
            l.max_deleting,
            l.actions.clone(),
        )
    });
    assert_eq!(
        with_hook.len(),
        4,
        "every scale-down went through the hook: {with_hook:?}"
    );
    assert!(without.is_empty(), "{without:?}");
    assert_eq!(max_deleting, 1, "one at a time");
    let removals: Vec<_> = actions.iter().filter(|a| a.0 == "dqlite-remove").collect();
    assert_eq!(removals.len(), 4, "{actions:?}");
    for (_, node, args, secret) in &removals {
        assert_eq!(secret.as_deref(), Some("capi-auth-token"));
        assert!(
            args[0].starts_with("10.10.0.") && args[0].ends_with(":2379"),
            "{args:?}"
        );
        assert!(args[1].ends_with(":30000"), "{args:?}");
        let (victim, agent) = (args[0].split(':').next().unwrap(), args[1].split(':').next().unwrap());
        assert_ne!(victim, agent, "the agent of a survivor removes the member");
        assert!(!node.is_empty());
    }
    // The oldest go first: the survivor is the newest machine.
    let survivors = env.cp_machines().await;
    assert_eq!(survivors.len(), 1);
    // Writes that only log on failure went through under the generated RBAC: Events and the
    // Machines' own conditions.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.admin.clone(), &env.ns);
    env.wait("Events of the decisions", || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        [
            "MachineCreated",
            "ScalingDown",
            "RemovingMember",
            "MemberRemoved",
            "KubeconfigCreated",
        ]
        .iter()
        .all(|r| reasons.iter().any(|x| x == r))
    })
    .await;
    env.wait("the UpToDate condition on the machine", || async {
        env.cp_machines().await[0]
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "UpToDate"))
    })
    .await;
    // The token reached the workload cluster in a Secret.
    let ws: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.wclient.clone(), "microk8s-capi-system");
    let tok = ws.get("capi-auth-token").await.unwrap();
    assert_eq!(tok.data.unwrap()["token"].0, b"s3cr3t-t0ken");
    // Finished pods are cleaned up.
    env.wait("action pods deleted", || async {
        let pods: Api<Pod> = Api::namespaced(env.wclient.clone(), "microk8s-capi-system");
        pods.list(&ListParams::default()).await.unwrap().items.is_empty()
    })
    .await;
    ctl.stop().await;
}

/// Rolling upgrade of three machines: surge one, replace the oldest, never more than four.
#[tokio::test]
async fn rolling_upgrade_replaces_one_machine_at_a_time() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "rolling").await;
    let uid = env.create_cluster(&["z1", "z2", "z3"]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    // The layout ClusterClass's topology controller writes: machineTemplate.spec.infrastructureRef.
    let mut spec = mcp_spec(3, "v1.33.0");
    spec["machineTemplate"] = json!({"spec": {"infrastructureRef": {
        "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "TestMachineTemplate", "name": "tpl"}}});
    env.create_mcp(&uid, spec).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_settled(3).await;
    let fds: std::collections::BTreeSet<String> = env
        .cp_machines()
        .await
        .iter()
        .map(|m| m.data["spec"]["failureDomain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fds.len(), 3, "spread over the failure domains: {fds:?}");
    let before: Vec<String> = env.cp_machines().await.iter().map(|m| m.name_any()).collect();
    // A skip of two minors is refused for rolling upgrades.
    env.patch_mcp(json!({"spec": {"version": "v1.35.0"}})).await;
    env.wait_condition(
        "SpecValid",
        |c| c.reason == "MinorVersionSkipNotSupported",
        "skip refused",
    )
    .await;
    env.patch_mcp(json!({"spec": {"version": "v1.34.1"}})).await;
    env.wait("all machines replaced", || async {
        let ms = env.cp_machines().await;
        ms.len() == 3
            && ms
                .iter()
                .all(|m| !before.contains(&m.name_any()) && m.data["spec"]["version"] == "v1.34.1")
    })
    .await;
    env.wait_settled(3).await;
    let fds: std::collections::BTreeSet<String> = env
        .cp_machines()
        .await
        .iter()
        .map(|m| m.data["spec"]["failureDomain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fds.len(), 3, "still spread after the rollout: {fds:?}");
    assert_eq!(fake.log(|l| l.max_machines), 4, "surge of one");
    assert_eq!(fake.log(|l| l.max_deleting), 1);
    let st = env.mcp().await.status.unwrap();
    assert_eq!(st.version.as_deref(), Some("v1.34.1"));
    assert_eq!(st.versions.unwrap().len(), 1);
    env.wait_condition("RollingOut", |c| c.status == "False", "rollout done")
        .await;
    // A config change rolls out too (machines created by us compare their config).
    env.patch_mcp(json!({"spec": {"controlPlaneConfig": {"initConfiguration": {"addons": ["ingress"]}}}}))
        .await;
    env.wait_condition("MachinesUpToDate", |c| c.status == "False", "config drift seen")
        .await;
    ctl.stop().await;
}

/// In-place upgrade of a single node (SmartUpgrade below 3): the machine is kept, a snap
/// refresh runs on its node with the right channel, its version follows the kubelet; a
/// downgrade is refused with a condition.
#[tokio::test]
async fn in_place_upgrade_keeps_the_machine_and_refuses_downgrades() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "inplace").await;
    let uid = env.create_cluster(&[]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    let mut spec = mcp_spec(1, "v1.33.0");
    spec["controlPlaneConfig"] = json!({"initConfiguration": {"confinement": "strict", "riskLevel": "candidate"}});
    env.create_mcp(&uid, spec).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_settled(1).await;
    let name = env.cp_machines().await[0].name_any();
    env.patch_mcp(json!({"spec": {"version": "v1.35.2"}})).await;
    env.wait("upgraded in place through 1.34 to 1.35", || async {
        let ms = env.cp_machines().await;
        ms.len() == 1 && ms[0].name_any() == name && ms[0].data["spec"]["version"] == "v1.35.2"
    })
    .await;
    let refreshes: Vec<_> = fake.log(|l| l.actions.iter().filter(|a| a.0 == "snap-refresh").cloned().collect());
    let channels: Vec<&str> = refreshes.iter().map(|a| a.2[0].as_str()).collect();
    assert_eq!(
        channels,
        ["1.34-strict/candidate", "1.35-strict/candidate"],
        "one minor at a time"
    );
    assert!(
        refreshes.iter().all(|a| a.1 == name && a.2[1] == "false"),
        "{refreshes:?}"
    );
    assert_eq!(fake.log(|l| l.machines_seen.len()), 1, "nothing replaced");
    env.wait_settled(1).await;
    assert_eq!(env.mcp().await.status.unwrap().version.as_deref(), Some("v1.35.2"));
    // Downgrade: refused, nothing happens.
    env.patch_mcp(json!({"spec": {"version": "v1.34.0"}})).await;
    env.wait_condition(
        "SpecValid",
        |c| c.reason == "DowngradeNotSupported",
        "downgrade refused",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.log(|l| l.actions.len()),
        2,
        "{:?}",
        fake.log(|l| l.actions.clone())
    );
    assert_eq!(env.cp_machines().await[0].data["spec"]["version"], "v1.35.2");
    ctl.stop().await;
}

async fn mark_unhealthy(env: &Env, name: &str) {
    let body = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "metadata": {"name": name},
    "status": {"conditions": [
        {"type": "HealthCheckSucceeded", "status": "False", "reason": "UnhealthyNode", "message": "node down", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "OwnerRemediated", "status": "False", "reason": "WaitingForRemediation", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}});
    env.api(&machine_ar())
        .patch_status(name, &PatchParams::apply("fake-mhc").force(), &Patch::Apply(body))
        .await
        .unwrap();
}

/// Remediation: refused for a lone machine (with conditions on both objects), done for one of
/// three (replacement carries remediation-for; lastRemediation set).
#[tokio::test]
async fn remediation_refusals_and_replacement() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "remediation", 1).await;
    let lone = env.cp_machines().await[0].name_any();
    mark_unhealthy(&env, &lone).await;
    env.wait_condition("Remediating", |c| c.reason == "RemediationNotAllowed", "refused")
        .await;
    env.wait("OwnerRemediated explains the refusal", || async {
        let m = env.api(&machine_ar()).get(&lone).await.unwrap();
        m.data["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "OwnerRemediated" && c["reason"] == "CannotBeRemediated")
        })
    })
    .await;
    assert_eq!(env.cp_machines().await.len(), 1);
    // Three machines: the unhealthy one is replaced.
    env.patch_mcp(json!({"spec": {"replicas": 3}})).await;
    env.wait("three machines with nodes, lone remediated", || async {
        let ms = env.cp_machines().await;
        ms.len() == 3
            && !ms.iter().any(|m| m.name_any() == lone)
            && ms.iter().all(|m| m.data.pointer("/status/nodeRef").is_some())
    })
    .await;
    let ms = env.cp_machines().await;
    let replacement = ms
        .iter()
        .find(|m| annotation(m, "controlplane.cluster.x-k8s.io/remediation-for").is_some())
        .expect("a replacement with remediation-for");
    let data: Value =
        serde_json::from_str(annotation(replacement, "controlplane.cluster.x-k8s.io/remediation-for").unwrap())
            .unwrap();
    assert_eq!(data["machine"], lone);
    let st = env.mcp().await.status.unwrap();
    assert_eq!(st.last_remediation.unwrap().machine, lone);
    assert!(
        fake.log(|l| l.deleted_with_hook.contains(&lone)),
        "removed through the hook"
    );
    assert!(
        !env.mcp()
            .await
            .annotations()
            .contains_key("controlplane.cluster.x-k8s.io/remediation-in-progress")
    );
    ctl.stop().await;
}

/// Pause stops everything; bad inputs become conditions; a Canonical kubeconfig is adopted.
#[tokio::test]
async fn pause_bad_inputs_and_canonical_kubeconfig() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "pause").await;
    let uid = env.create_cluster(&[]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    // Canonical's kubeconfig: Opaque, labelled, no owner, admin signed by the cluster CA.
    let ca = mk8s_pki::Ca::parse(&env.ca.cert_pem, &env.ca.key_pem).unwrap();
    let (cert, key) = ca
        .sign_client(
            "admin",
            &["admin", "system:masters"],
            std::time::SystemTime::now(),
            Duration::from_secs(86400),
        )
        .unwrap();
    let old = mk8s_pki::kubeconfig(
        &format!("https://127.0.0.1:{}", env.workload_port),
        &env.ca.cert_pem,
        "admin",
        &cert,
        &key,
    );
    let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "c1-kubeconfig", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "stringData": {"value": old}}))
    .unwrap();
    env.secrets().create(&PostParams::default(), &s).await.unwrap();
    // Paused: nothing happens but the Paused condition.
    env.api(&cluster_ar())
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let mut spec = mcp_spec(1, "v1.33.0");
    spec.as_object_mut().unwrap().remove("replicas");
    spec["machineTemplate"]["infrastructureTemplate"]["name"] = json!("missing");
    env.create_mcp(&uid, spec).await;
    let _fake = Fake::start(&env, FakeOpts::default()).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_condition("Paused", |c| c.status == "True", "paused").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.cp_machines().await.is_empty());
    assert!(env.secrets().get("c1-kubeconfig").await.unwrap().type_.as_deref() != Some("cluster.x-k8s.io/secret"));
    let finalizer = mk8s_api::consts::CONTROL_PLANE_FINALIZER;
    assert!(
        !env.mcp().await.finalizers().iter().any(|f| f == finalizer),
        "no finalizer while paused (clusterctl move removes them)"
    );
    // Unpaused: replicas defaulted (a condition says so), the missing template is a condition.
    env.api(&cluster_ar())
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    env.wait_condition("Paused", |c| c.status == "False", "unpaused").await;
    assert!(env.mcp().await.finalizers().iter().any(|f| f == finalizer));
    env.wait_condition("SpecValid", |c| c.reason == "ReplicasDefaulted", "replicas defaulted")
        .await;
    env.wait("MachinesCreated false in the v1beta1 view", || async {
        env.mcp()
            .await
            .status
            .and_then(|s| s.deprecated)
            .and_then(|d| d.v1beta1)
            .is_some_and(|v| {
                v.conditions.iter().any(|c| {
                    c.type_ == "MachinesCreated"
                        && c.reason == "InfrastructureTemplateCloningFailed"
                        && c.severity == "Error"
                })
            })
    })
    .await;
    assert!(env.cp_machines().await.is_empty());
    // ...and in the v1beta2 conditions a user reads.
    env.wait_condition(
        "ScalingUp",
        |c| c.message.contains("creating a machine failed") && c.message.contains("missing"),
        "the failed creation in ScalingUp",
    )
    .await;
    // Canonical's kubeconfig was replaced by a compliant one.
    env.wait("the kubeconfig adopted", || async {
        let s = env.secrets().get("c1-kubeconfig").await.unwrap();
        s.type_.as_deref() == Some("cluster.x-k8s.io/secret") && !s.owner_references().is_empty()
    })
    .await;
    // Fix the template but give a config no machine could render with: SpecValid says so
    // and no machine is created.
    env.patch_mcp(json!({"spec": {
        "machineTemplate": {"infrastructureTemplate": {"name": "tpl"}},
        "controlPlaneConfig": {"initConfiguration": {"snapstoreProxyDomain": "https://snap.example", "snapstoreProxyId": "x"}}}}))
    .await;
    env.wait_condition(
        "SpecValid",
        |c| c.reason == "InvalidControlPlaneConfig" && c.message.contains("snapstoreProxyDomain"),
        "the config refused before any machine",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.cp_machines().await.is_empty());
    // Fix the config: a machine appears, no orphaned infrastructure machines.
    env.patch_mcp(json!({"spec": {"controlPlaneConfig": {"initConfiguration": {"snapstoreProxyDomain": null, "snapstoreProxyId": null}}}}))
        .await;
    env.wait_settled(1).await;
    let infra = env
        .api(&infra_ar("TestMachine"))
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(infra.len(), 1);
    ctl.stop().await;
}

/// Deletion: waits for worker Machines, deletes control plane Machines without member
/// removal, deletes provider-made Secrets, keeps a user-supplied CA, drops the finalizer.
#[tokio::test]
async fn deletion_waits_for_workers_and_keeps_user_secrets() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "deletion").await;
    let uid = env.create_cluster(&[]).await;
    // A user-supplied CA (no owner); the other secrets owned by the Cluster.
    env.create_cluster_secrets(None).await;
    for s in ["c1-capi-auth-token", "c1-jointoken"] {
        env.secrets()
            .patch(
                s,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"ownerReferences": [
                    {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": uid}]}})),
            )
            .await
            .unwrap();
    }
    env.create_mcp(&uid, mcp_spec(2, "v1.33.0")).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_settled(2).await;
    // A worker Machine; its Node gets a providerID too.
    env.create_worker().await;
    env.wait("the worker's node has a providerID", || async {
        env.nodes().await.iter().any(|n| {
            n.name_any() == "worker-1"
                && n.spec.as_ref().and_then(|s| s.provider_id.clone()).as_deref() == Some("test://worker-1")
        })
    })
    .await;
    env.mcps().delete("cp", &DeleteParams::default()).await.unwrap();
    env.wait_condition("Deleting", |c| c.message.contains("worker-1"), "waiting for workers")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.cp_machines()
            .await
            .iter()
            .all(|m| m.metadata.deletion_timestamp.is_none())
    );
    env.api(&machine_ar())
        .delete("worker-1", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("the control plane gone", || async {
        env.mcps().get_opt("cp").await.unwrap().is_none()
    })
    .await;
    assert!(env.cp_machines().await.is_empty());
    assert_eq!(
        fake.log(|l| l.deleted_with_hook.len()),
        0,
        "no member removal at cluster deletion"
    );
    assert!(env.secrets().get_opt("c1-kubeconfig").await.unwrap().is_none());
    assert!(env.secrets().get_opt("c1-capi-auth-token").await.unwrap().is_none());
    assert!(env.secrets().get_opt("c1-jointoken").await.unwrap().is_none());
    assert!(
        env.secrets().get_opt("c1-ca").await.unwrap().is_some(),
        "user-supplied CA kept"
    );
    ctl.stop().await;
}

/// A control plane deleted on its own waits for the workers (and says who must delete them),
/// and lets go as soon as its Cluster is gone.
#[tokio::test]
async fn a_control_plane_deleted_alone_lets_go_when_its_cluster_goes() {
    let Some(plane) = plane().await else { return };
    let (env, _fake, ctl) = settled_control_plane(plane, "cpalone", 1).await;
    env.create_worker().await;
    env.mcps().delete("cp", &DeleteParams::default()).await.unwrap();
    env.wait_condition(
        "Deleting",
        |c| c.message.contains("worker-1") && c.message.contains("is not being deleted"),
        "waiting for the workers, saying who deletes them",
    )
    .await;
    // The Cluster goes at once (no finalizer here, as after a user removed CAPI's).
    env.api(&cluster_ar())
        .delete("c1", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("the control plane gone", || async {
        env.mcps().get_opt("cp").await.unwrap().is_none()
    })
    .await;
    ctl.stop().await;
}

/// The chart's `watchNamespace` mode: with the manager's rules granted by a Role in the
/// watched namespace only, the control plane scales up and down (member removal included)
/// without a reconcile error.
#[tokio::test]
async fn scales_with_the_generated_rules_as_a_role_in_the_watched_namespace() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "roleonly").await;
    let uid = env.create_cluster(&[]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    env.create_mcp(&uid, mcp_spec(1, "v1.33.0")).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let client = role_only_client(plane, &env.ns).await;
    let ctl = start_controller(client, &env.ns, test_config()).await;
    env.wait_settled(1).await;
    env.patch_mcp(json!({"spec": {"replicas": 3}})).await;
    env.wait_settled(3).await;
    env.patch_mcp(json!({"spec": {"replicas": 1}})).await;
    env.wait_settled(1).await;
    assert_eq!(fake.log(|l| l.deleted_with_hook.len()), 2, "members removed");
    let errors: Vec<String> = ctl
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("mk8s_reconcile_errors_total"))
        .map(str::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "reconcile errors under a namespaced Role: {errors:?}"
    );
    ctl.stop().await;
}

/// The controller restarted in the middle of a scale-up creates no duplicate machines.
#[tokio::test]
async fn restart_mid_scale_creates_no_duplicates() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "restart", 1).await;
    // Slow boots: the second machine waits for its node while the controller restarts.
    fake.set(|o| o.boot = false);
    env.patch_mcp(json!({"spec": {"replicas": 3}})).await;
    env.wait("a second machine", || async { env.cp_machines().await.len() == 2 })
        .await;
    ctl.stop().await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.cp_machines().await.len(), 2, "waits for the second machine's node");
    ctl.stop().await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    fake.set(|o| o.boot = true);
    env.wait_settled(3).await;
    assert_eq!(fake.log(|l| l.machines_seen.len()), 3, "no duplicate machines");
    ctl.stop().await;
}

/// An unreachable workload cluster becomes a condition; reconciles keep running.
#[tokio::test]
async fn unreachable_workload_is_a_condition_not_a_hang() {
    let Some(plane) = plane().await else { return };
    let (mut env, fake, ctl) = settled_control_plane(plane, "unreachable", 1).await;
    drop(fake);
    env.stop_workload();
    env.wait_condition(
        "WorkloadClusterReachable",
        |c| c.reason == "WorkloadClusterUnreachable",
        "the workload cluster reported unreachable",
    )
    .await;
    env.wait_condition("Available", |c| c.status == "False", "not Available")
        .await;
    env.patch_mcp(json!({"spec": {"replicas": 3}})).await;
    env.wait_condition(
        "ScalingUp",
        |c| c.status == "True" && c.message.contains("unreachable"),
        "the scale-up waits, explaining why",
    )
    .await;
    assert_eq!(env.cp_machines().await.len(), 1);
    ctl.stop().await;
}

/// Infrastructure machines' metadata comes from their kind's watch once it has listed,
/// unlabelled ones are read live, and a listing filters. (The Secret cache it shares with the
/// bootstrap manager is tested in `mk8s-runtime`.)
#[tokio::test]
async fn infrastructure_metadata_comes_from_the_watch() {
    use mk8s_controlplane::cache::InfraMeta;

    let Some(plane) = plane().await else { return };
    let admin = plane.client().await;
    let ns = plane.namespace("cache").await.unwrap();
    let pp = PostParams::default();

    // Infrastructure machines: labelled ones from the watch, others live; list filters.
    let ar = infra_ar("TestMachine");
    let machines: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ar);
    let machine = |name: &str, labelled: bool| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "TestMachine",
            "metadata": {"name": name, "labels": if labelled { json!({"cluster.x-k8s.io/control-plane": ""}) } else { json!({}) },
                         "annotations": {"note": name}},
            "spec": {},
        }))
        .unwrap()
    };
    machines.create(&pp, &machine("cp-1", true)).await.unwrap();
    machines.create(&pp, &machine("other", false)).await.unwrap();
    let infra = InfraMeta::new(admin.clone(), &ns);
    let meta = infra.get(&ar, &ns, "cp-1").await.unwrap().unwrap();
    assert_eq!(meta.annotations.unwrap()["note"], "cp-1");
    let other = infra.get(&ar, &ns, "other").await.unwrap().unwrap();
    assert_eq!(other.annotations.unwrap()["note"], "other", "unlabelled: read live");
    assert!(infra.get(&ar, &ns, "absent").await.unwrap().is_none());
    let listed = infra.list(&ar, &ns, |_| true).await.unwrap();
    assert_eq!(
        listed.iter().filter_map(|m| m.name.clone()).collect::<Vec<_>>(),
        vec!["cp-1".to_string()],
        "only control plane machines"
    );
    machines
        .patch(
            "cp-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "changed"}}})),
        )
        .await
        .unwrap();
    wait_for_value(
        || async {
            let m = infra.get(&ar, &ns, "cp-1").await.unwrap()?;
            (m.annotations?.get("note")? == "changed").then_some(())
        },
        "the watch shows the changed metadata",
    )
    .await;
    infra.stop_all();
}

/// Reconciles counted so far by this controller (every result).
fn reconciles(ctl: &Running) -> u64 {
    ctl.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("mk8s_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A cluster CA that appears after the control plane without any label or owner (as
/// Canonical's bootstrap provider wrote it, with its `crt`/`key` keys) reaches the control
/// plane through the Secret watch by its name alone: the controller is idle (no timer, no
/// other change), the Secret is created, and the kubeconfig follows.
#[tokio::test]
async fn an_unlabelled_ca_created_later_wakes_the_control_plane() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "lateca").await;
    let uid = env.create_cluster(&[]).await;
    env.create_mcp(&uid, mcp_spec(1, "v1.33.4")).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_condition(
        "CertificatesAvailable",
        |c| c.reason == "WaitingForClusterCA" && c.message.contains("c1-ca"),
        "the wait for the cluster CA explained",
    )
    .await;
    // Idle: no reconcile for two seconds in a row (no CAPI core, no infrastructure, no timer).
    let mut last = reconciles(&ctl);
    let mut quiet_since = tokio::time::Instant::now();
    env.wait("the controller idle", || {
        let now = reconciles(&ctl);
        if now != last {
            last = now;
            quiet_since = tokio::time::Instant::now();
        }
        let quiet = quiet_since.elapsed() >= Duration::from_secs(2);
        async move { quiet }
    })
    .await;
    assert!(env.secrets().get_opt("c1-kubeconfig").await.unwrap().is_none());
    let before = reconciles(&ctl);
    assert!(before > 0, "the reconcile counter counts");

    let ca: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "c1-ca"},
        "stringData": {"crt": env.ca.cert_pem, "key": env.ca.key_pem}}))
    .unwrap();
    env.secrets().create(&PostParams::default(), &ca).await.unwrap();
    let kc = wait_for_value(
        || async { env.secrets().get_opt("c1-kubeconfig").await.unwrap() },
        "the kubeconfig after the CA appeared",
    )
    .await;
    // The reconcile that wrote it is counted when it ends.
    env.wait("the waking reconcile counted", || async { reconciles(&ctl) > before })
        .await;
    let yaml = String::from_utf8(kc.data.unwrap()["value"].0.clone()).unwrap();
    let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.unwrap();
    Api::<Node>::all(wc).list(&ListParams::default()).await.unwrap();
    env.wait_condition("CertificatesAvailable", |c| c.status == "True", "CertificatesAvailable")
        .await;
    ctl.stop().await;
}

/// A cluster CA left by a deleted Cluster of the same name (the garbage collector has not
/// caught up yet) is never used to sign the kubeconfig: the control plane waits with the
/// bootstrap provider's reason, naming the Secret, and signs with this cluster's CA once the
/// leftover is gone and the new one exists.
#[tokio::test]
async fn a_ca_left_by_a_deleted_cluster_of_the_same_name_is_not_used() {
    let Some(plane) = plane().await else { return };
    let env = Env::new(plane, "staleca").await;
    let uid = env.create_cluster(&[]).await;
    // The leftover: owned by the old Cluster (another uid), held by a finalizer.
    let old = mk8s_pki::generate_ca("old", std::time::SystemTime::now()).unwrap();
    let leftover: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "c1-ca", "finalizers": ["test.example/hold"],
                     "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
                                          "name": "c1", "uid": "0ld-c1"}]},
        "stringData": {"tls.crt": old.cert_pem, "tls.key": old.key_pem}}))
    .unwrap();
    env.secrets().create(&PostParams::default(), &leftover).await.unwrap();
    env.create_mcp(&uid, mcp_spec(1, "v1.33.4")).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_condition(
        "CertificatesAvailable",
        |c| {
            c.status == "False"
                && c.reason == "WaitingForStaleClusterSecretRemoval"
                && c.message.contains("c1-ca")
                && c.message.contains("0ld-c1")
        },
        "the wait for the leftover CA explained",
    )
    .await;
    assert!(env.secrets().get_opt("c1-kubeconfig").await.unwrap().is_none());

    // The collector removes the leftover; the bootstrap provider creates this cluster's CA.
    env.secrets().delete("c1-ca", &Default::default()).await.unwrap();
    env.secrets()
        .patch(
            "c1-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    env.wait("the leftover gone", || async {
        env.secrets().get_opt("c1-ca").await.unwrap().is_none()
    })
    .await;
    env.create_cluster_secrets(Some(&uid)).await;
    let kc = wait_for_value(
        || async { env.secrets().get_opt("c1-kubeconfig").await.unwrap() },
        "the kubeconfig signed by this cluster's CA",
    )
    .await;
    let yaml = String::from_utf8(kc.data.unwrap()["value"].0.clone()).unwrap();
    let facts = mk8s_pki::kubeconfig_facts(&yaml).unwrap();
    assert_eq!(facts.ca_cert_pem.trim(), env.ca.cert_pem.trim());
    assert!(mk8s_pki::is_signed_by(&facts.users[0].1, &env.ca.cert_pem));
    env.wait_condition("CertificatesAvailable", |c| c.status == "True", "CertificatesAvailable")
        .await;
    ctl.stop().await;
}

/// A control plane that lost its status (`clusterctl move` does not carry status) after its
/// first node was replaced — so no Node carries the init marker any more — still knows that
/// it is initialized, from the annotation it set, and scales instead of waiting for an init
/// that happened long ago.
#[tokio::test]
async fn initialized_survives_a_lost_status_and_a_replaced_first_node() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "moved", 1).await;
    let initialized = "microk8s.controlplane.cluster.x-k8s.io/initialized";
    env.wait("the initialized annotation", || async {
        env.mcp().await.annotations().get(initialized).map(String::as_str) == Some("true")
    })
    .await;
    ctl.stop().await;

    // As after a move of a control plane whose first node was replaced: no status, and no
    // Node with the marker.
    fake.set(|o| o.mark_init = false);
    let marker = "microk8s.cluster.x-k8s.io/accepts-joins";
    let nodes: Api<Node> = Api::all(env.wclient.clone());
    for n in env.nodes().await {
        nodes
            .patch(
                &n.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {marker: null}}})),
            )
            .await
            .unwrap();
    }
    env.mcps()
        .patch_status("cp", &PatchParams::default(), &Patch::Merge(json!({"status": null})))
        .await
        .unwrap();
    assert!(env.mcp().await.status.is_none_or(|s| !s.initialized));
    assert!(env.nodes().await.iter().all(|n| !n.labels().contains_key(marker)));

    let ctl = start_controller(env.admin.clone(), &env.ns, test_config()).await;
    env.wait_condition(
        "Initialized",
        |c| c.status == "True",
        "initialized again, from the annotation",
    )
    .await;
    env.patch_mcp(json!({"spec": {"replicas": 3}})).await;
    env.wait_settled(3).await;
    ctl.stop().await;
}

/// A Machine deleted by someone else (a user, a MachineHealthCheck's owner…) while another
/// member's node is not Ready keeps its member until a majority survives the removal.
#[tokio::test]
async fn a_removal_that_would_cost_the_majority_waits_for_a_ready_node() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "quorum", 3).await;
    let names: Vec<String> = env.cp_machines().await.iter().map(ResourceExt::name_any).collect();
    let (victim, laggard) = (names[0].clone(), names[1].clone());
    let nodes: Api<Node> = Api::all(env.wclient.clone());
    let victim_ip = nodes.get(&victim).await.unwrap().status.unwrap().addresses.unwrap()[0]
        .address
        .clone();
    env.set_node_ready(&laggard, false).await;
    // Two of three Ready: still Available, but removing a Ready member would leave one of two.
    env.api(&machine_ar())
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let holding =
        |c: &mk8s_api::conditions::Condition| c.message.contains("no majority") && c.message.contains(&victim);
    env.wait("the removal held, saying why", || async {
        let st = env.mcp().await.status.unwrap_or_default();
        st.conditions.iter().any(&holding)
    })
    .await;
    // Held across the reconciles the fake's ticks cause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let removals = fake.log(|l| l.actions.iter().filter(|a| a.0 == "dqlite-remove").count());
    assert_eq!(removals, 0, "no member removed while it would cost the majority");
    let m = env.api(&machine_ar()).get(&victim).await.unwrap();
    assert!(annotation(&m, HOOK).is_some(), "the hook holds the machine");
    assert_eq!(
        env.cp_machines().await.len(),
        3,
        "no replacement while a removal is pending"
    );

    // The node recovers: the member goes, through a survivor, and a replacement follows.
    env.set_node_ready(&laggard, true).await;
    env.wait("the victim deleted through its hook", || async {
        fake.log(|l| l.deleted_with_hook.contains(&victim))
    })
    .await;
    let actions = fake.log(|l| l.actions.clone());
    let removal = actions.iter().find(|a| a.0 == "dqlite-remove").expect("a removal");
    assert!(removal.2[0].starts_with(&format!("{victim_ip}:")), "{removal:?}");
    assert!(!removal.2[1].starts_with(&format!("{victim_ip}:")), "{removal:?}");
    env.wait_settled(3).await;
    ctl.stop().await;
}

/// A spec no reconcile can use (a version no parser reads, which the CRD's pattern lets
/// through) holds new machines, but not the member removal of a machine a user deletes
/// meanwhile: its hook is released and no replacement appears until the spec is fixed.
#[tokio::test]
async fn an_unusable_spec_holds_new_machines_but_not_member_removals() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "held", 3).await;
    let version = env.mcp().await.spec.version;
    env.patch_mcp(json!({"spec": {"version": "v1.34.0.1"}})).await;
    env.wait_condition(
        "SpecValid",
        |c| c.reason == "InvalidVersion" && c.message.contains("member removals of deleting machines go on"),
        "the unusable version and what goes on",
    )
    .await;
    let victim = env.cp_machines().await[0].name_any();
    env.api(&machine_ar())
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    env.wait(
        "the victim's member removed and the machine deleted through its hook",
        || async { fake.log(|l| l.deleted_with_hook.contains(&victim)) },
    )
    .await;
    assert_eq!(
        fake.log(|l| l.actions.iter().filter(|a| a.0 == "dqlite-remove").count()),
        1,
        "one member removal"
    );
    // Held across the reconciles the deletion and the fake's ticks cause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.cp_machines().await.len(),
        2,
        "no replacement while the spec is unusable"
    );
    let held = env.condition("SpecValid").await.unwrap();
    assert_eq!(held.reason, "InvalidVersion", "{held:?}");

    // Fixed: the replacement follows.
    env.patch_mcp(json!({"spec": {"version": version}})).await;
    env.wait_settled(3).await;
    ctl.stop().await;
}

/// A removal whose survivor goes down under it: the attempt times out, its pod (which no
/// kubelet will ever finish) is deleted at once rather than left terminating, and the retry
/// runs in a pod of its own on another Ready survivor.
#[tokio::test]
async fn a_removal_stranded_on_a_node_that_went_down_retries_elsewhere() {
    let Some(plane) = plane().await else { return };
    let cfg = mk8s_controlplane::ControllerConfig {
        node_action_timeout: Duration::from_secs(8),
        ..test_config()
    };
    let (env, fake, ctl) = settled_control_plane_with(plane, "stranded", 5, cfg).await;
    let victim = env.cp_machines().await[0].name_any();
    fake.set(|o| o.pods_hang = true);
    env.api(&machine_ar())
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.wclient.clone(), "microk8s-capi-system");
    let removal_pods = || async {
        pods.list(&ListParams::default().labels("microk8s.cluster.x-k8s.io/action=dqlite-remove"))
            .await
            .unwrap()
            .items
    };
    let first = wait_for_value(
        || async {
            removal_pods()
                .await
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        },
        "the first removal pod running",
    )
    .await;
    let survivor = first.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert_ne!(survivor, victim);
    // The survivor's node goes down with the pod on it; pods elsewhere finish again.
    fake.set(|o| {
        o.pods_hang = false;
        o.pods_hang_on = vec![survivor.clone()];
    });
    env.set_node_ready(&survivor, false).await;

    env.wait("the victim deleted through its hook", || async {
        fake.log(|l| l.deleted_with_hook.contains(&victim))
    })
    .await;
    assert!(
        pods.get_opt(&first.name_any()).await.unwrap().is_none(),
        "the stranded pod was deleted outright, not left terminating"
    );
    let removals: Vec<_> = fake.log(|l| l.actions.iter().filter(|a| a.0 == "dqlite-remove").cloned().collect());
    assert_eq!(removals.len(), 2, "one attempt, one retry: {removals:?}");
    assert_eq!(removals[0].1, survivor);
    assert_ne!(removals[1].1, survivor, "the retry runs on a Ready survivor");
    assert_eq!(removals[0].2[0], removals[1].2[0], "the same member removed");
    ctl.stop().await;
}

/// Has the workload cluster of `env` refuse every pod in the node action namespace (a
/// ValidatingAdmissionPolicy, in force when this returns); deleting the binding named
/// `no-action-pods` lifts it.
async fn deny_action_pods(env: &Env) -> Api<kube::api::DynamicObject> {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.wclient.clone());
    if nss.get_opt("microk8s-capi-system").await.unwrap().is_none() {
        let ns = serde_json::from_value(json!({"metadata": {"name": "microk8s-capi-system"}})).unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
    }
    // A ValidatingAdmissionPolicy denying every pod in the node action namespace.
    let gvk = |kind: &str| {
        kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies: Api<kube::api::DynamicObject> = Api::all_with(env.wclient.clone(), &gvk("ValidatingAdmissionPolicy"));
    let bindings: Api<kube::api::DynamicObject> =
        Api::all_with(env.wclient.clone(), &gvk("ValidatingAdmissionPolicyBinding"));
    let policy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "no-action-pods"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {
                     "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "microk8s-capi-system"}}},
                 "validations": [{"expression": "false", "message": "pods are not allowed in this namespace by site policy"}]}}))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let binding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "no-action-pods"},
        "spec": {"policyName": "no-action-pods", "validationActions": ["Deny"]}}))
    .unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    env.wait("the policy in force", || async { !admits_action_pods(env).await })
        .await;
    bindings
}

/// Lifts the policy of [`deny_action_pods`] and waits until it is no longer in force.
async fn allow_action_pods(env: &Env, bindings: &Api<kube::api::DynamicObject>) {
    bindings
        .delete("no-action-pods", &DeleteParams::default())
        .await
        .unwrap();
    env.wait("the policy lifted", || admits_action_pods(env)).await;
}

/// Whether the workload cluster admits a pod in the node action namespace (a probe pod,
/// deleted again when created).
async fn admits_action_pods(env: &Env) -> bool {
    let pods: Api<Pod> = Api::namespaced(env.wclient.clone(), "microk8s-capi-system");
    let probe: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}))
    .unwrap();
    if pods.create(&PostParams::default(), &probe).await.is_err() {
        return false;
    }
    pods.delete("probe", &DeleteParams::default()).await.unwrap();
    true
}

/// A removal pod the workload cluster refuses (here an admission policy; in real clusters
/// also Pod Security or a policy engine's webhook) is a failed attempt, explained on the Machine and in a
/// Warning Event, and retried after a pause — not a reconcile error repeated in silence. Once
/// the workload cluster admits the pod, the removal goes through.
#[tokio::test]
async fn a_removal_pod_the_workload_cluster_refuses_is_explained_and_retried() {
    let Some(plane) = plane().await else { return };
    let (env, fake, ctl) = settled_control_plane(plane, "refused", 3).await;
    let bindings = deny_action_pods(&env).await;
    let victim = env.cp_machines().await[0].name_any();
    env.api(&machine_ar())
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let removal = "microk8s.controlplane.cluster.x-k8s.io/member-removal";
    let state = wait_for_value(
        || async {
            let m = env.api(&machine_ar()).get_opt(&victim).await.unwrap()?;
            let st: Value = serde_json::from_str(annotation(&m, removal)?).ok()?;
            (st["failures"].as_u64() >= Some(1)).then_some(st)
        },
        "the refused attempt recorded on the machine",
    )
    .await;
    let message = state["message"].as_str().unwrap();
    assert!(message.contains("refused"), "{message}");
    assert!(
        message.contains("site policy"),
        "the workload cluster's reason: {message}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.admin.clone(), &env.ns);
    env.wait("a Warning Event explaining the refusal", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("MemberRemovalFailed")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("refused"))
            })
    })
    .await;
    // (The fake may have run a probe created before the policy was in force.)
    assert!(
        fake.log(|l| l.actions.iter().all(|a| a.0 != "dqlite-remove")),
        "no removal pod ran"
    );

    // The workload cluster admits the pod again: the retry removes the member.
    allow_action_pods(&env, &bindings).await;
    env.wait("the victim deleted through its hook", || async {
        fake.log(|l| l.deleted_with_hook.contains(&victim))
    })
    .await;
    let removals: Vec<_> = fake.log(|l| l.actions.iter().filter(|a| a.0 == "dqlite-remove").cloned().collect());
    assert_eq!(removals.len(), 1, "{removals:?}");
    ctl.stop().await;
}

/// An in-place upgrade whose snap refresh pod the workload cluster refuses: each refusal is
/// a failed attempt explained on the Machine and in an Event; after the last one the upgrade
/// waits for its user, and removing the annotation (once the policy is lifted) upgrades.
#[tokio::test]
async fn an_in_place_refresh_the_workload_cluster_refuses_is_explained_then_given_up() {
    let Some(plane) = plane().await else { return };
    let cfg = mk8s_controlplane::ControllerConfig {
        node_action_attempts: 2,
        ..test_config()
    };
    let (env, fake, ctl) = settled_control_plane_with(plane, "refusedup", 1, cfg).await;
    let bindings = deny_action_pods(&env).await;
    let name = env.cp_machines().await[0].name_any();
    env.patch_mcp(json!({"spec": {"version": "v1.34.0"}})).await;
    let key = "microk8s.controlplane.cluster.x-k8s.io/in-place-upgrade";
    let state = || async {
        let m = env.api(&machine_ar()).get(&name).await.unwrap();
        annotation(&m, key).and_then(|v| serde_json::from_str::<Value>(v).ok())
    };
    let first = wait_for_value(
        || async { state().await.filter(|s| s["failures"].as_u64() >= Some(1)) },
        "the refused attempt recorded on the machine",
    )
    .await;
    let message = first["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused") && message.contains("site policy"),
        "the workload cluster's reason: {first}"
    );
    let last = wait_for_value(
        || async { state().await.filter(|s| s["phase"] == "Failed") },
        "the upgrade given up after its attempts",
    )
    .await;
    assert_eq!(last["failures"], 2, "{last}");
    let at = |s: &Value| {
        s["since"]
            .as_str()
            .unwrap()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
    };
    assert!(
        at(&last).duration_since(at(&first)).as_secs() >= 15,
        "the second attempt waited for the pause: {first} {last}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.admin.clone(), &env.ns);
    let reasons = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.note.as_deref().is_some_and(|n| n.contains("refused")))
        .filter_map(|e| e.reason)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        reasons.contains("InPlaceUpgradeRetrying") && reasons.contains("InPlaceUpgradeFailed"),
        "{reasons:?}"
    );
    assert!(
        fake.log(|l| l.actions.iter().all(|a| a.0 != "snap-refresh")),
        "no refresh pod ran"
    );
    // The user lifts the policy and asks for a retry: the upgrade goes through.
    allow_action_pods(&env, &bindings).await;
    env.api(&machine_ar())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: null}}})),
        )
        .await
        .unwrap();
    env.wait("upgraded in place", || async {
        let ms = env.cp_machines().await;
        ms.len() == 1 && ms[0].name_any() == name && ms[0].data["spec"]["version"] == "v1.34.0"
    })
    .await;
    let refreshes: Vec<_> = fake.log(|l| l.actions.iter().filter(|a| a.0 == "snap-refresh").cloned().collect());
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    ctl.stop().await;
}

/// A manager that starts while an in-place refresh is past its timeout counts the attempt as
/// failed and retries it (the node is Ready): the upgrade is not given up for a node that
/// only looked not Ready because the new manager's Node store was still empty.
#[tokio::test]
async fn a_restart_past_an_upgrade_timeout_retries_instead_of_giving_up() {
    let Some(plane) = plane().await else { return };
    let cfg = mk8s_controlplane::ControllerConfig {
        node_action_timeout: Duration::from_secs(4),
        ..test_config()
    };
    let (env, fake, ctl) = settled_control_plane_with(plane, "restartup", 1, cfg.clone()).await;
    let name = env.cp_machines().await[0].name_any();
    fake.set(|o| o.pods_hang = true);
    env.patch_mcp(json!({"spec": {"version": "v1.34.0"}})).await;
    let key = "microk8s.controlplane.cluster.x-k8s.io/in-place-upgrade";
    let state = || async {
        let m = env.api(&machine_ar()).get(&name).await.unwrap();
        annotation(&m, key).and_then(|v| serde_json::from_str::<Value>(v).ok())
    };
    env.wait("the refresh under way", || async {
        state().await.is_some_and(|s| s["phase"] == "Refreshing")
    })
    .await;
    ctl.stop().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, cfg).await;
    let after = wait_for_value(
        || async { state().await.filter(|s| s["failures"].as_u64() >= Some(1)) },
        "the overdue attempt counted",
    )
    .await;
    assert_eq!(after["phase"], "Refreshing", "retried, not given up: {after}");
    assert!(
        !after["message"].as_str().unwrap_or_default().contains("not Ready"),
        "{after}"
    );
    ctl.stop().await;
}

/// The source copy of a moved control plane (paused, annotated by clusterctl and deleted) is
/// let go at once: its Machines and the cluster's Secrets stay for the target's copy.
#[tokio::test]
async fn a_control_plane_deleted_for_a_move_keeps_its_machines_and_secrets() {
    let Some(plane) = plane().await else { return };
    let (env, _fake, ctl) = settled_control_plane(plane, "moved-away", 1).await;
    let machine = env.cp_machines().await[0].name_any();
    let series = || {
        let ns = format!("namespace=\"{}\"", env.ns);
        ctl.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("mk8s_controlplane_") && l.contains(&ns))
            .count()
    };
    assert!(
        series() > 0,
        "the control plane has metric series:\n{}",
        ctl.metrics.encode()
    );
    env.api(&cluster_ar())
        .patch(
            &env.cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    env.wait_condition("Paused", |c| c.status == "True", "paused").await;
    env.mcps()
        .patch(
            "cp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""}}})),
        )
        .await
        .unwrap();
    // Orphaning dependents: what is deleted then is what the provider deleted (clusterctl
    // deletes every source object itself).
    env.mcps().delete("cp", &DeleteParams::orphan()).await.unwrap();
    env.wait("the control plane gone", || async {
        env.mcps().get_opt("cp").await.unwrap().is_none()
    })
    .await;
    let machines = env.cp_machines().await;
    assert_eq!(machines.len(), 1, "the Machine stays");
    assert_eq!(machines[0].name_any(), machine);
    assert!(machines[0].metadata.deletion_timestamp.is_none());
    let kubeconfig = format!("{}-kubeconfig", env.cluster);
    assert!(
        env.secrets().get_opt(&kubeconfig).await.unwrap().is_some(),
        "Secrets stay"
    );
    // This manager forgot it: no metric series left behind for a control plane it no longer
    // runs (the target's manager reports it now).
    env.wait("the moved control plane's metric series dropped", || async {
        series() == 0
    })
    .await;
    ctl.stop().await;
}
