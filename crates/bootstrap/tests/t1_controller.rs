//! T1: the bootstrap controller against a real kube-apiserver with the CAPI CRDs. The test
//! plays CAPI core: it creates Clusters and Machines, sets their status, and reads what the
//! controller writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_api::MicroK8sConfig;
use mk8s_api::capi::CoreVersion;
use mk8s_api::conditions;
use mk8s_runtime::{ManagerFlags, Metrics, Runtime};
use mk8s_testenv::{Plane, wait_for, wait_for_value};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Env {
    plane: &'static Plane,
    client: kube::Client,
    ns: String,
}

async fn env(prefix: &str) -> Option<Env> {
    let plane = mk8s_testenv::shared().await?;
    plane.install_capi_crds().await.unwrap();
    let crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let ns = plane.namespace(prefix).await.unwrap();
    Some(Env {
        plane,
        client: plane.client().await,
        ns,
    })
}

/// The controller running in-process, watching one namespace, until dropped or stopped.
struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("controller stops")
            .unwrap();
    }
}

fn start_with(client: kube::Client, ns: &str) -> Running {
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let flags = ManagerFlags::from_args([
        format!("--namespace={ns}"),
        "--log-format=text".into(),
        format!("--log-level={level}"),
    ])
    .unwrap();
    mk8s_runtime::init_tracing(&flags);
    let rt = Runtime {
        client,
        metrics: metrics.clone(),
        shutdown: stop.clone(),
        flags,
        name: "microk8s-bootstrap",
        core_version: CoreVersion::V1Beta2,
    };
    let handle = tokio::spawn(async move {
        mk8s_bootstrap::controller::run(rt).await.unwrap();
    });
    Running { stop, handle, metrics }
}

fn ar(kind: &str) -> ApiResource {
    let (g, v) = match kind {
        "Cluster" | "Machine" => ("cluster.x-k8s.io", "v1beta2"),
        _ => ("bootstrap.cluster.x-k8s.io", "v1beta1"),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind))
}

impl Env {
    fn dynamic(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &ar(kind))
    }

    async fn create(&self, obj: Value) -> DynamicObject {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let o: DynamicObject = serde_json::from_value(obj).unwrap();
        self.dynamic(&kind).create(&PostParams::default(), &o).await.unwrap()
    }

    async fn patch_status(&self, kind: &str, name: &str, status: Value) {
        self.dynamic(kind)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    async fn patch_spec(&self, kind: &str, name: &str, spec: Value) {
        self.dynamic(kind)
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await
            .unwrap();
    }

    /// A Cluster with its infrastructure ready and an endpoint.
    async fn cluster(&self, name: &str, ready: bool, endpoint: bool) {
        let mut spec = json!({"paused": false});
        if endpoint {
            spec["controlPlaneEndpoint"] = json!({"host": "10.0.0.100", "port": 6443});
        }
        self.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                           "metadata": {"name": name}, "spec": spec}))
            .await;
        if ready {
            self.patch_status(
                "Cluster",
                name,
                json!({"initialization": {"infrastructureProvisioned": true}}),
            )
            .await;
        }
    }

    async fn initialize(&self, cluster: &str) {
        self.patch_status(
            "Cluster",
            cluster,
            json!({"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true}}),
        )
        .await;
    }

    /// A Machine with its MicroK8sConfig (owned by the Machine, as CAPI sets it).
    async fn machine(&self, cluster: &str, name: &str, control_plane: bool, version: Option<&str>, spec: Value) {
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": cluster});
        if control_plane {
            labels["cluster.x-k8s.io/control-plane"] = json!("");
        }
        let mut mspec = json!({"clusterName": cluster,
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": name}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": name}});
        if let Some(v) = version {
            mspec["version"] = json!(v);
        }
        let m = self
            .create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                           "metadata": {"name": name, "labels": labels}, "spec": mspec}))
            .await;
        self.create(
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                                              "name": name, "uid": m.metadata.uid.unwrap()}]},
            "spec": spec}),
        )
        .await;
    }

    /// What CAPI and the infrastructure do once a machine runs: providerID, address, phase.
    async fn running(&self, name: &str, ip: &str) {
        self.in_phase(name, ip, "Running").await;
    }

    /// The infrastructure is up (providerID, address) in `phase`.
    async fn in_phase(&self, name: &str, ip: &str, phase: &str) {
        self.patch_spec("Machine", name, json!({"providerID": format!("sim://{name}")}))
            .await;
        self.patch_status(
            "Machine",
            name,
            json!({"phase": phase, "addresses": [{"type": "InternalIP", "address": ip}]}),
        )
        .await;
    }

    async fn config(&self, name: &str) -> MicroK8sConfig {
        Api::<MicroK8sConfig>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .unwrap()
    }

    async fn reason(&self, name: &str) -> Option<String> {
        self.config(name).await.status.and_then(|s| {
            conditions::find(&s.conditions, "DataSecretAvailable").map(|c| format!("{}/{}", c.status, c.reason))
        })
    }

    async fn wait_reason(&self, name: &str, want: &str) -> MicroK8sConfig {
        let what = format!("config {name} reaches {want}");
        wait_for(TIMEOUT, &what, || async {
            self.reason(name).await.as_deref() == Some(want)
        })
        .await;
        self.config(name).await
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn data(&self, name: &str) -> String {
        let s = wait_for_value(TIMEOUT, &format!("data secret {name}"), || async {
            self.secret(name).await
        })
        .await;
        String::from_utf8(s.data.unwrap()["value"].0.clone()).unwrap()
    }
}

fn value(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn role_of(user_data: &str) -> &'static str {
    if user_data.contains(r#"["/capi-scripts/30-refresh-certs.sh""#) {
        "init"
    } else if user_data.contains(r#"["/capi-scripts/40-join.sh", "--worker""#) {
        "worker"
    } else {
        "join-control-plane"
    }
}

#[tokio::test]
async fn gating_init_join_and_worker_wakeup() {
    let Some(env) = env("gating").await else { return };
    let ctrl = start_with(env.client.clone(), &env.ns);

    // No owner: waits. A Machine without a Cluster: waits.
    env.create(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
                      "metadata": {"name": "orphan"}, "spec": {}}),
    )
    .await;
    env.wait_reason("orphan", "False/WaitingForMachine").await;
    env.machine("c1", "early", true, Some("v1.33.4"), json!({})).await;
    env.wait_reason("early", "False/WaitingForCluster").await;

    // Cluster without infrastructure, then without endpoint.
    env.cluster("c1", false, false).await;
    env.wait_reason("early", "False/WaitingForClusterInfrastructure").await;
    env.patch_status(
        "Cluster",
        "c1",
        json!({"initialization": {"infrastructureProvisioned": true}}),
    )
    .await;
    env.wait_reason("early", "False/WaitingForControlPlaneEndpoint").await;

    // Worker created before the control plane is initialized waits.
    env.machine("c1", "w1", false, Some("v1.33.4"), json!({})).await;
    env.patch_spec(
        "Cluster",
        "c1",
        json!({"controlPlaneEndpoint": {"host": "10.0.0.100", "port": 6443}}),
    )
    .await;
    let cfg = env.wait_reason("early", "True/DataSecretCreated").await;
    let st = cfg.status.unwrap();
    assert!(st.ready);
    assert_eq!(st.data_secret_name.as_deref(), Some("early"));
    assert_eq!(st.initialization.unwrap().data_secret_created, Some(true));
    assert!(conditions::is_true(&st.conditions, "Ready"));
    assert_eq!(st.observed_generation, cfg.metadata.generation);
    assert_eq!(role_of(&env.data("early").await), "init");
    env.wait_reason("w1", "False/WaitingForControlPlaneAvailable").await;

    // The data Secret per contract.
    let s = env.secret("early").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
        "c1"
    );
    assert_eq!(value(&s, "format"), "cloud-config");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("MicroK8sConfig", Some(true)));

    // As soon as the initializing machine has a providerID and an address — before the
    // control plane is initialized, and while CAPI's phase is still Provisioned — the worker
    // wakes at once (Machine watch, no poll) and joins through it: its VM can boot and install
    // MicroK8s while the control plane initializes, and its node retries the join until the
    // initializing node accepts it.
    let t0 = Instant::now();
    env.in_phase("early", "10.1.0.1", "Provisioned").await;
    env.wait_reason("w1", "True/DataSecretCreated").await;
    let latency = t0.elapsed();
    eprintln!("worker wake-up after the init machine's address: {latency:?}");
    assert!(latency < Duration::from_secs(5), "worker woke after {latency:?}");
    let worker = env.data("w1").await;
    assert_eq!(role_of(&worker), "worker");
    assert!(
        worker.contains("10.1.0.1:30000/"),
        "join URL through the init node:\n{worker}"
    );

    // A further control plane machine does not join early: it waits for the init lock's
    // holder to initialize the cluster (dqlite members join one by one, into a cluster that
    // exists), and joins the control plane once CAPI reports the initialization.
    env.machine("c1", "cp2", true, Some("v1.33.4"), json!({})).await;
    env.wait_reason("cp2", "False/WaitingForInitLock").await;
    env.initialize("c1").await;
    env.wait_reason("cp2", "True/DataSecretCreated").await;
    assert_eq!(role_of(&env.data("cp2").await), "join-control-plane");
    assert!(env.data("cp2").await.contains("10.1.0.1:30000/"));

    // A joining machine is no join target before it runs (its node may not be a member yet);
    // once Running it is.
    env.in_phase("cp2", "10.1.0.2", "Provisioned").await;
    env.machine("c1", "w2", false, Some("v1.33.4"), json!({})).await;
    let w2 = env.data("w2").await;
    assert!(w2.contains("10.1.0.1:30000/") && !w2.contains("10.1.0.2"), "{w2}");
    env.running("cp2", "10.1.0.2").await;
    env.machine("c1", "w3", false, Some("v1.33.4"), json!({})).await;
    let w3 = env.data("w3").await;
    assert!(w3.contains("10.1.0.1:30000/") && w3.contains("10.1.0.2:30000/"), "{w3}");

    // A config that CAPI has not made its Machine's yet (no owner reference) is rendered for
    // the one Machine whose configRef names it, without waiting for the owner reference.
    env.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "w4", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "spec": {"clusterName": "c1", "version": "v1.33.4",
                 "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": "w4"}},
                 "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": "w4"}}}))
    .await;
    env.create(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
        "metadata": {"name": "w4"}, "spec": {}}),
    )
    .await;
    assert_eq!(role_of(&env.data("w4").await), "worker");
    assert!(env.config("w4").await.metadata.owner_references.is_none());

    // The init lock was released once initialized.
    let locks = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    wait_for(TIMEOUT, "init lock released", || async {
        locks.get_opt("c1-lock").await.unwrap().is_none()
    })
    .await;
    assert!(ctrl.metrics.encode().contains("mk8s_reconcile_total"));
    let registry = ctrl.metrics.clone();
    ctrl.stop().await;
    // Every reconcile counts once with what woke it: first the config itself.
    let metrics = registry.encode();
    assert!(
        metrics.contains("mk8s_reconcile_causes_total{controller=\"microk8sconfig\",cause=\"microk8sconfigs\"}"),
        "{metrics}"
    );
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("mk8s_reconcile_causes_total"),
        sum("mk8s_reconcile_total"),
        "{metrics}"
    );
}

/// `Ready` of a config as `status/reason`, and `JoinTargetsAvailable` likewise (or `-`).
async fn ready_and_join_targets(env: &Env, name: &str) -> (String, String) {
    let st = env.config(name).await.status.unwrap_or_default();
    let show =
        |t: &str| conditions::find(&st.conditions, t).map_or("-".to_string(), |c| format!("{}/{}", c.status, c.reason));
    (show("Ready"), show("JoinTargetsAvailable"))
}

#[tokio::test]
async fn a_worker_left_without_its_join_target_says_so_until_one_is_back() {
    let Some(env) = env("stranded").await else { return };
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.cluster("s", true, true).await;
    env.machine("s", "init", true, Some("v1.33.4"), json!({})).await;
    env.wait_reason("init", "True/DataSecretCreated").await;
    env.machine("s", "w", false, Some("v1.33.4"), json!({})).await;
    env.in_phase("init", "10.3.0.1", "Provisioned").await;
    env.wait_reason("w", "True/DataSecretCreated").await;
    let annotation = "bootstrap.cluster.x-k8s.io/microk8s-join-addresses";
    let recorded = |c: MicroK8sConfig| c.metadata.annotations.unwrap_or_default().get(annotation).cloned();
    assert_eq!(recorded(env.config("w").await).as_deref(), Some("10.3.0.1"));
    assert_eq!(recorded(env.config("init").await), None, "init data joins nothing");
    assert_eq!(
        ready_and_join_targets(&env, "w").await,
        ("True/DataSecretCreated".into(), "-".into()),
        "nothing written while nothing is wrong"
    );

    // The initializing machine is deleted before it initializes (and before the worker's node
    // could join through it): the worker's config says why its node will not come, at once.
    env.dynamic("Machine")
        .delete("init", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(TIMEOUT, "w reports its join target gone", || async {
        ready_and_join_targets(&env, "w").await == ("False/JoinTargetsGone".into(), "False/JoinTargetsGone".into())
    })
    .await;
    let st = env.config("w").await.status.unwrap();
    assert!(st.ready, "the data is still there for CAPI");
    assert!(conditions::is_true(&st.conditions, "DataSecretAvailable"));
    let ready = conditions::find(&st.conditions, "Ready").unwrap();
    assert!(
        ready.message.contains("joins through 10.3.0.1") && ready.message.contains("Delete this Machine"),
        "{}",
        ready.message
    );
    let events: Vec<Event> = Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let warned: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("JoinTargetsGone"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("w"))
        .collect();
    assert_eq!(warned.len(), 1, "one Warning Event: {events:?}");
    assert_eq!(warned[0].type_.as_deref(), Some("Warning"));

    // A replacement control plane machine at another address is no target of this data.
    env.machine("s", "init2", true, Some("v1.33.4"), json!({})).await;
    env.in_phase("init2", "10.3.0.2", "Provisioned").await;
    env.wait_reason("init2", "True/DataSecretCreated").await;
    assert_eq!(ready_and_join_targets(&env, "w").await.1, "False/JoinTargetsGone");
    // One at the recorded address is (a cloud reusing the address): the config recovers, woken
    // by that Machine, not by a poll.
    env.machine("s", "init3", true, Some("v1.33.4"), json!({})).await;
    env.in_phase("init3", "10.3.0.1", "Provisioned").await;
    wait_for(TIMEOUT, "w recovers", || async {
        ready_and_join_targets(&env, "w").await == ("True/DataSecretCreated".into(), "True/JoinTargetsAvailable".into())
    })
    .await;
    ctrl.stop().await;
}

#[tokio::test]
async fn racing_control_plane_machines_get_exactly_one_init() {
    let Some(env) = env("race").await else { return };
    env.cluster("c", true, true).await;
    for i in 0..4 {
        env.machine("c", &format!("cp{i}"), true, Some("v1.33.4"), json!({}))
            .await;
    }
    let ctrl = start_with(env.client.clone(), &env.ns);
    let mut init = vec![];
    for i in 0..4 {
        let name = format!("cp{i}");
        wait_for(TIMEOUT, &format!("{name} decided"), || async {
            matches!(
                env.reason(&name).await.as_deref(),
                Some("True/DataSecretCreated") | Some("False/WaitingForInitLock")
            )
        })
        .await;
        if env.reason(&name).await.as_deref() == Some("True/DataSecretCreated") {
            init.push(name);
        }
    }
    assert_eq!(init.len(), 1, "exactly one init: {init:?}");
    assert_eq!(role_of(&env.data(&init[0]).await), "init");
    let lock = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
        .get("c-lock")
        .await
        .unwrap();
    assert_eq!(
        lock.data.unwrap()["lock-information"],
        format!("{{\"machineName\":\"{}\"}}", init[0])
    );
    // After initialization every other control plane machine joins.
    env.running(&init[0], "10.2.0.1").await;
    env.initialize("c").await;
    for i in 0..4 {
        let name = format!("cp{i}");
        env.wait_reason(&name, "True/DataSecretCreated").await;
        if name != init[0] {
            assert_eq!(role_of(&env.data(&name).await), "join-control-plane");
        }
    }
    ctrl.stop().await;
}

#[tokio::test]
async fn stale_and_unparsable_locks_are_recovered() {
    let Some(env) = env("lock").await else { return };
    env.cluster("gone", true, true).await;
    env.cluster("junk", true, true).await;
    let cms = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    for (name, data) in [
        ("gone-lock", r#"{"machineName":"deleted-long-ago"}"#),
        ("junk-lock", "{not json"),
    ] {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("lock-information".to_string(), data.to_string())])),
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    env.machine("gone", "a", true, Some("v1.33.4"), json!({})).await;
    env.machine("junk", "b", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.wait_reason("a", "True/DataSecretCreated").await;
    env.wait_reason("b", "True/DataSecretCreated").await;
    assert_eq!(role_of(&env.data("a").await), "init");
    assert_eq!(role_of(&env.data("b").await), "init");
    ctrl.stop().await;
}

#[tokio::test]
async fn cluster_secrets_are_created_per_contract_and_user_secrets_kept() {
    let Some(env) = env("secrets").await else { return };
    env.cluster("gen", true, true).await;
    env.cluster("user", true, true).await;
    // A user-made join token without labels or owner.
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let token = "abcdefghijklmnopqrstuvwxyzABCDEF";
    let user = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("user-jointoken".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("value".to_string(), token.to_string())])),
        ..Default::default()
    };
    let created = secrets.create(&PostParams::default(), &user).await.unwrap();
    env.machine("gen", "g", true, Some("v1.33.4"), json!({})).await;
    env.machine("user", "u", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.wait_reason("g", "True/DataSecretCreated").await;
    env.wait_reason("u", "True/DataSecretCreated").await;

    let jt = env.secret("gen-jointoken").await.unwrap();
    let v = value(&jt, "value");
    assert_eq!(v.len(), 32);
    assert!(v.chars().all(|c| c.is_ascii_alphabetic()));
    assert_eq!(
        jt.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
        "gen"
    );
    assert_eq!(jt.metadata.owner_references.as_ref().unwrap()[0].kind, "Cluster");
    let ca = env.secret("gen-ca").await.unwrap();
    for key in ["tls.crt", "tls.key", "crt", "key"] {
        assert!(ca.data.as_ref().unwrap().contains_key(key), "{key}");
    }
    assert!(value(&ca, "tls.key").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let parsed = mk8s_pki::Ca::parse(&value(&ca, "tls.crt"), &value(&ca, "key")).unwrap();
    assert_eq!(parsed.algorithm(), mk8s_pki::KeyAlgorithm::Rsa);
    let auth = env.secret("gen-capi-auth-token").await.unwrap();
    assert_eq!(auth.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(value(&auth, "token").len(), 24);
    let init = env.data("g").await;
    assert!(init.contains(&v), "the init node registers the generated token");
    assert!(
        init.contains(value(&ca, "tls.crt").lines().nth(1).unwrap()),
        "the CA is delivered"
    );

    // The user's token is used and left untouched.
    assert!(env.data("u").await.contains(token));
    let after = env.secret("user-jointoken").await.unwrap();
    assert_eq!(after.metadata.resource_version, created.metadata.resource_version);
    assert!(after.metadata.labels.is_none());
    ctrl.stop().await;
}

/// A Cluster deleted and created again under its name before the garbage collector removed
/// its Secrets: the leftovers are waited out (a condition says so), never used, and the new
/// cluster gets Secrets of its own.
#[tokio::test]
async fn secrets_left_by_a_deleted_cluster_of_the_same_name_are_not_used() {
    let Some(env) = env("stale").await else { return };
    env.cluster("again", true, true).await;
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let stale_token = "STALEstaleSTALEstaleSTALEstaleST";
    // A finalizer keeps the leftover until the test lets it go, so the wait is seen.
    let leftover: Secret = serde_json::from_value(json!({
        "metadata": {"name": "again-jointoken", "finalizers": ["test.example/hold"],
                     "labels": {"cluster.x-k8s.io/cluster-name": "again"},
                     "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                                          "name": "again", "uid": "6c1a3a4e-0000-4000-8000-000000000000"}]},
        "stringData": {"value": stale_token}}))
    .unwrap();
    secrets.create(&PostParams::default(), &leftover).await.unwrap();
    env.machine("again", "w", false, Some("v1.33.4"), json!({})).await;
    env.machine("again", "c", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    let held = env.wait_reason("c", "False/WaitingForStaleClusterSecretRemoval").await;
    let message = conditions::find(&held.status.unwrap().conditions, "DataSecretAvailable")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("again-jointoken") && message.contains("deleted Cluster"),
        "{message}"
    );

    secrets
        .patch(
            "again-jointoken",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    // The collector deletes it (its owner is gone); the test helps when it is slow.
    let _ = secrets.delete("again-jointoken", &Default::default()).await;
    env.wait_reason("c", "True/DataSecretCreated").await;
    let token = env.secret("again-jointoken").await.unwrap();
    let v = value(&token, "value");
    assert_ne!(v, stale_token);
    let cluster_uid = env.dynamic("Cluster").get("again").await.unwrap().metadata.uid.unwrap();
    assert_eq!(token.metadata.owner_references.unwrap()[0].uid, cluster_uid);
    let init = env.data("c").await;
    assert!(init.contains(&v) && !init.contains(stale_token));
    ctrl.stop().await;
}

#[tokio::test]
async fn later_renders_use_the_cluster_secrets_as_they_are_now() {
    // The manager keeps copies of the cluster Secrets it created or read; a user's change or
    // deletion must reach the next render all the same.
    let Some(env) = env("current").await else { return };
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.cluster("c", true, true).await;
    env.machine("c", "init", true, Some("v1.33.4"), json!({})).await;
    env.wait_reason("init", "True/DataSecretCreated").await;
    env.in_phase("init", "10.4.0.1", "Provisioned").await;
    env.machine("c", "w1", false, Some("v1.33.4"), json!({})).await;
    env.wait_reason("w1", "True/DataSecretCreated").await;
    let first = value(&env.secret("c-jointoken").await.unwrap(), "value");
    assert!(env.data("w1").await.contains(&first));

    // The user rotates the token: the next worker joins with the new one.
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let rotated = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvu";
    secrets
        .patch(
            "c-jointoken",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"value": rotated}})),
        )
        .await
        .unwrap();
    // Like any controller, the manager learns of the change through its watch; give the watch
    // a moment to deliver it (a render racing a rotation may use either token).
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.machine("c", "w2", false, Some("v1.33.4"), json!({})).await;
    env.wait_reason("w2", "True/DataSecretCreated").await;
    let w2 = env.data("w2").await;
    assert!(
        w2.contains(rotated) && !w2.contains(&first),
        "w2 joins with the rotated token"
    );

    // The user deletes it: the next worker gets a freshly generated one, stored again.
    secrets.delete("c-jointoken", &DeleteParams::default()).await.unwrap();
    wait_for(TIMEOUT, "the token Secret is gone", || async {
        env.secret("c-jointoken").await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.machine("c", "w3", false, Some("v1.33.4"), json!({})).await;
    env.wait_reason("w3", "True/DataSecretCreated").await;
    let third = value(&env.secret("c-jointoken").await.unwrap(), "value");
    assert!(third != rotated && third != first && third.len() == 32);
    assert!(env.data("w3").await.contains(&third));
    ctrl.stop().await;
}

#[tokio::test]
async fn deleted_data_secret_is_rendered_again_only_before_the_node_joins() {
    let Some(env) = env("regen").await else { return };
    env.cluster("c", true, true).await;
    env.machine("c", "cp", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.wait_reason("cp", "True/DataSecretCreated").await;
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let first = env.secret("cp").await.unwrap();
    // The cluster is initialized meanwhile, but the machine has no nodeRef: same role again.
    env.initialize("c").await;
    secrets.delete("cp", &DeleteParams::default()).await.unwrap();
    wait_for(TIMEOUT, "data secret rendered again", || async {
        env.secret("cp")
            .await
            .is_some_and(|s| s.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_eq!(role_of(&env.data("cp").await), "init");

    // After the node joined, a deleted Secret is reported and not regenerated.
    env.patch_status("Machine", "cp", json!({"nodeRef": {"name": "cp"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    secrets.delete("cp", &DeleteParams::default()).await.unwrap();
    env.wait_reason("cp", "True/DataSecretDeletedAfterJoin").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.secret("cp").await.is_none());
    assert!(env.config("cp").await.status.unwrap().ready);
    ctrl.stop().await;
}

#[tokio::test]
async fn paused_clusters_are_left_alone() {
    let Some(env) = env("paused").await else { return };
    env.cluster("c", true, true).await;
    env.patch_spec("Cluster", "c", json!({"paused": true})).await;
    env.machine("c", "cp", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    wait_for(TIMEOUT, "Paused condition", || async {
        env.config("cp")
            .await
            .status
            .is_some_and(|s| conditions::is_true(&s.conditions, "Paused"))
    })
    .await;
    assert!(env.secret("cp").await.is_none());
    assert!(env.secret("c-jointoken").await.is_none());
    env.patch_spec("Cluster", "c", json!({"paused": false})).await;
    env.wait_reason("cp", "True/DataSecretCreated").await;
    assert!(!conditions::is_true(
        &env.config("cp").await.status.unwrap().conditions,
        "Paused"
    ));
    ctrl.stop().await;
}

#[tokio::test]
async fn bad_input_becomes_a_condition_never_a_panic() {
    let Some(env) = env("invalid").await else { return };
    env.cluster("c", true, true).await;
    env.machine("c", "noversion", true, None, json!({})).await;
    env.machine("c", "badversion", true, Some("v1.28"), json!({})).await;
    env.machine(
        "c",
        "strict124",
        true,
        Some("v1.24.17"),
        json!({"initConfiguration": {"confinement": "strict"}}),
    )
    .await;
    env.cluster("noendpoint", true, false).await;
    env.machine("noendpoint", "ne", true, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    let msg = |c: MicroK8sConfig| {
        conditions::find(&c.status.unwrap().conditions, "DataSecretAvailable")
            .unwrap()
            .message
            .clone()
    };
    let c = env.wait_reason("noversion", "False/InvalidConfiguration").await;
    assert!(msg(c).contains("has no spec.version"));
    let c = env.wait_reason("badversion", "False/InvalidConfiguration").await;
    assert!(msg(c).contains("\"v1.28\" is not a semantic version"));
    // One of the three takes the init lock; strict + 1.24 fails in rendering when it does.
    env.wait_reason("ne", "False/WaitingForControlPlaneEndpoint").await;
    // Fixing the Machine's version is picked up (Machine watch), no restart needed.
    env.patch_spec("Machine", "noversion", json!({"version": "v1.33.4"}))
        .await;
    wait_for(TIMEOUT, "noversion proceeds", || async {
        env.reason("noversion").await.as_deref() != Some("False/InvalidConfiguration")
    })
    .await;
    ctrl.stop().await;

    // A control plane machine with strict confinement on 1.24 and no init lock contention.
    let Some(env2) = env_for_strict().await else { return };
    let ctrl = start_with(env2.client.clone(), &env2.ns);
    let c = env2.wait_reason("s", "False/InvalidConfiguration").await;
    assert!(msg(c).contains("strict confinement needs MicroK8s 1.25"));
    ctrl.stop().await;
}

async fn env_for_strict() -> Option<Env> {
    let env = env("strict").await?;
    env.cluster("c", true, true).await;
    env.machine(
        "c",
        "s",
        true,
        Some("v1.24.17"),
        json!({"initConfiguration": {"confinement": "strict"}}),
    )
    .await;
    Some(env)
}

#[tokio::test]
async fn restart_mid_way_regenerates_nothing() {
    let Some(env) = env("restart").await else { return };
    env.cluster("c", true, true).await;
    env.machine("c", "cp", true, Some("v1.33.4"), json!({})).await;
    env.machine("c", "w", false, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.wait_reason("cp", "True/DataSecretCreated").await;
    env.wait_reason("w", "False/WaitingForControlPlaneAvailable").await;
    ctrl.stop().await;
    let before = env.secret("cp").await.unwrap();
    let token_before = env.secret("c-jointoken").await.unwrap();

    // While the controller is down, the control plane initializes.
    env.running("cp", "10.3.0.1").await;
    env.initialize("c").await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.wait_reason("w", "True/DataSecretCreated").await;
    let after = env.secret("cp").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "init data untouched"
    );
    assert_eq!(
        env.secret("c-jointoken").await.unwrap().metadata.resource_version,
        token_before.metadata.resource_version
    );
    ctrl.stop().await;
}

#[tokio::test]
async fn runs_with_the_generated_least_privilege_rbac() {
    let Some(env) = env("rbac").await else { return };
    // Apply config/rbac/bootstrap.yaml and run as its ServiceAccount.
    let sa_client = rbac_client(&env, false).await;
    least_privilege_flow(&env, sa_client).await;
}

/// The chart's `watchNamespace` mode: the manager's rules granted by a Role in the watched
/// namespace only (no cluster-wide grant to its ServiceAccount).
#[tokio::test]
async fn runs_with_the_generated_rules_as_a_role_in_the_watched_namespace() {
    let Some(env) = env("rbacrole").await else { return };
    let sa_client = rbac_client(&env, true).await;
    least_privilege_flow(&env, sa_client).await;
}

/// Applies config/rbac/bootstrap.yaml and returns a client of its ServiceAccount; with
/// `role_only`, another ServiceAccount gets the manager's rules as a Role and RoleBinding in
/// the test namespace instead, as the chart renders them with `watchNamespace`.
async fn rbac_client(env: &Env, role_only: bool) -> kube::Client {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/rbac/bootstrap.yaml")).unwrap();
    let admin = env.plane.client().await;
    let sa_ns = "capi-microk8s-bootstrap-system";
    let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa_ns}})).unwrap(),
        )
        .await;
    let apply = |doc: Value| {
        let admin = admin.clone();
        async move {
            let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), doc["apiVersion"].as_str().unwrap().to_string()),
            };
            let kind = doc["kind"].as_str().unwrap();
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, kind));
            let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
                None => Api::all_with(admin.clone(), &ar),
            };
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            api.patch(&name, &PatchParams::apply("t1").force(), &Patch::Apply(&doc))
                .await
                .unwrap();
        }
    };
    let docs = serde_saphyr::from_multiple::<Value>(&text).unwrap();
    if !role_only {
        for doc in docs {
            apply(doc).await;
        }
        return env
            .plane
            .client_for_service_account(sa_ns, "capi-microk8s-bootstrap-controller-manager")
            .await
            .unwrap();
    }
    let rules = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .map(|d| d["rules"].clone())
        .unwrap();
    let sa = "mk8s-bootstrap-role-only";
    apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": sa_ns}})).await;
    apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "mk8s-bootstrap-manager", "namespace": env.ns}, "rules": rules}))
    .await;
    apply(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "mk8s-bootstrap-manager", "namespace": env.ns},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mk8s-bootstrap-manager"},
                 "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]}),
    )
    .await;
    env.plane.client_for_service_account(sa_ns, sa).await.unwrap()
}

/// A control plane and a worker get their data under the client's privileges, with no
/// reconcile error.
async fn least_privilege_flow(env: &Env, sa_client: kube::Client) {
    env.cluster("c", true, true).await;
    env.machine("c", "cp", true, Some("v1.33.4"), json!({})).await;
    env.machine("c", "w", false, Some("v1.33.4"), json!({})).await;
    let ctrl = start_with(sa_client, &env.ns);
    env.wait_reason("cp", "True/DataSecretCreated").await;
    env.running("cp", "10.4.0.1").await;
    env.initialize("c").await;
    env.wait_reason("w", "True/DataSecretCreated").await;
    let errors = ctrl
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("mk8s_reconcile_errors_total"))
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "reconcile errors under least privilege: {errors:?}");
    ctrl.stop().await;
}

/// A control plane machine whose init data cannot be rendered (strict confinement on a
/// Kubernetes version older than 1.25) says why and holds no init lock (it is refused before
/// taking one; a render that fails later gives it back), so that another control plane
/// machine can initialize the cluster.
#[tokio::test]
async fn init_data_that_cannot_be_rendered_gives_the_lock_back() {
    let Some(env) = env("unrenderable").await else { return };
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.cluster("u", true, true).await;
    env.machine(
        "u",
        "strict-old",
        true,
        Some("v1.24.9"),
        json!({"initConfiguration": {"confinement": "strict"}}),
    )
    .await;
    let cfg = env.wait_reason("strict-old", "False/InvalidConfiguration").await;
    let message = conditions::find(&cfg.status.unwrap_or_default().conditions, "DataSecretAvailable")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("strict confinement"), "{message}");
    let locks = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns);
    wait_for(TIMEOUT, "no init lock held", || async {
        locks.get_opt("u-lock").await.unwrap().is_none()
    })
    .await;
    // Another control plane machine takes the lock and gets init data.
    env.machine("u", "classic", true, Some("v1.24.9"), json!({})).await;
    env.wait_reason("classic", "True/DataSecretCreated").await;
    assert_eq!(role_of(&env.data("classic").await), "init");
    ctrl.stop().await;
}

/// A worker template that leaves `portCompatibilityRemap` at its default joins a control plane
/// that turned it off on the control plane's cluster agent port; a file with Jinja markers is
/// written as is, with a Warning Event saying so.
#[tokio::test]
async fn workers_join_on_the_control_planes_port_scheme() {
    let Some(env) = env("ports").await else { return };
    env.cluster("p", true, true).await;
    let ctrl = start_with(env.client.clone(), &env.ns);
    env.machine(
        "p",
        "cp",
        true,
        Some("v1.33.4"),
        json!({"clusterConfiguration": {"portCompatibilityRemap": false}}),
    )
    .await;
    env.wait_reason("cp", "True/DataSecretCreated").await;
    env.in_phase("cp", "10.4.0.1", "Provisioned").await;
    env.machine(
        "p",
        "w",
        false,
        Some("v1.33.4"),
        json!({"initConfiguration": {"extraWriteFiles": [
            {"path": "/etc/motd", "content": "{{ ds.meta_data.local_hostname }}", "permissions": "0644", "owner": "root:root"}]}}),
    )
    .await;
    let worker = env.data("w").await;
    assert!(
        worker.contains("10.4.0.1:25000/"),
        "the control plane's agent port:\n{worker}"
    );
    assert!(!worker.contains("10.4.0.1:30000/"), "{worker}");
    let events = || async {
        Api::<Event>::namespaced(env.client.clone(), &env.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
    };
    wait_for(TIMEOUT, "the Jinja Warning Event", || async {
        events().await.iter().any(|e| {
            e.reason.as_deref() == Some("ExtraWriteFilesNotTemplated")
                && e.type_.as_deref() == Some("Warning")
                && e.note.as_deref().is_some_and(|n| n.contains("/etc/motd"))
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("w")
        })
    })
    .await;
    assert!(
        !events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("ExtraWriteFilesNotTemplated")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("cp")),
        "no warning for a config without markers"
    );
    ctrl.stop().await;
}

/// The API server's answer to our two writes carrying a stale resourceVersion (the status
/// apply on the status subresource and the role annotation patch) is the 409 the reconcile
/// recognises as "a newer copy is coming", not a failure to retry and warn about; with the
/// current version both writes go through.
#[tokio::test]
async fn writes_from_a_stale_copy_fail_with_the_conflict_the_reconcile_expects() {
    use kube::ResourceExt;
    use mk8s_bootstrap::controller::{role_patch, status_apply_params, status_patch};
    use mk8s_bootstrap::decide::Role;

    let Some(env) = env("stale-write").await else { return };
    env.cluster("c", true, true).await;
    env.machine("c", "w", false, Some("v1.33.4"), json!({})).await;
    let api = Api::<MicroK8sConfig>::namespaced(env.client.clone(), &env.ns);
    let read = env.config("w").await;
    let stale = read.metadata.resource_version.clone();
    let status = mk8s_api::MicroK8sConfigStatus {
        observed_generation: Some(42),
        ..Default::default()
    };
    // Someone else writes the config after the reconcile read it.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .unwrap();

    let err = api
        .patch_status("w", &status_apply_params(), &status_patch(stale.as_deref(), &status))
        .await
        .expect_err("a status apply from a stale copy is refused");
    let err = mk8s_bootstrap::Error::from(err);
    assert!(
        err.is_config_conflict("w"),
        "status subresource 409 recognised: {err:?}"
    );
    assert!(!err.is_config_conflict("other"));
    let err = api
        .patch(
            "w",
            &PatchParams::default(),
            &role_patch(stale.as_deref(), Role::Worker, None),
        )
        .await
        .expect_err("an annotation patch from a stale copy is refused");
    let err = mk8s_bootstrap::Error::from(err);
    assert!(err.is_config_conflict("w"), "metadata patch 409 recognised: {err:?}");
    assert!(!err.is_config_gone("w"));

    // From the current copy both go through, and nothing of the refused writes landed.
    let now = env.config("w").await;
    assert!(now.status.as_ref().and_then(|s| s.observed_generation).is_none());
    assert!(!now.annotations().contains_key(mk8s_bootstrap::decide::ROLE_ANNOTATION));
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &role_patch(now.metadata.resource_version.as_deref(), Role::Worker, Some("10.0.0.1")),
        )
        .await
        .unwrap();
    assert_eq!(
        patched
            .annotations()
            .get(mk8s_bootstrap::decide::ROLE_ANNOTATION)
            .map(String::as_str),
        Some(Role::Worker.as_str())
    );
    let applied = api
        .patch_status(
            "w",
            &status_apply_params(),
            &status_patch(patched.metadata.resource_version.as_deref(), &status),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.and_then(|s| s.observed_generation), Some(42));
}
