//! The T1 harness: one shared plane, one namespace and one workload kube-apiserver (whose
//! client CA is the cluster CA) per test; the test plays CAPI core, the infrastructure
//! provider and the kubelet ([`Fake`]); the controller runs in-process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use mk8s_api::MicroK8sControlPlane;
use mk8s_api::capi::CoreVersion;
use mk8s_controlplane::ControllerConfig;
use mk8s_runtime::{ManagerFlags, Metrics, Runtime, RuntimeError};
use mk8s_testenv::{Plane, WorkloadApiServer, WorkloadApiServerOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(90);
pub const INFRA_GROUP: &str = "infrastructure.cluster.x-k8s.io";
pub const HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/microk8s-member-removal";

pub fn machine_ar() -> ApiResource {
    CoreVersion::V1Beta2.machine()
}

pub fn cluster_ar() -> ApiResource {
    CoreVersion::V1Beta2.cluster()
}

pub fn infra_ar(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(INFRA_GROUP, "v1beta1", kind))
}

fn test_crd(kind: &str) -> CustomResourceDefinition {
    let plural = format!("{}s", kind.to_lowercase());
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{INFRA_GROUP}")},
        "spec": {
            "group": INFRA_GROUP,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "scope": "Namespaced",
            "versions": [{"name": "v1beta1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap()
}

/// The shared plane with every CRD the tests need.
pub async fn plane() -> Option<&'static Plane> {
    let plane = mk8s_testenv::shared().await?;
    plane.install_capi_crds().await.unwrap();
    let mut crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    crds.push(test_crd("TestMachineTemplate"));
    crds.push(test_crd("TestMachine"));
    plane.apply_crds(&crds).await.unwrap();
    Some(plane)
}

/// A client of the manager's ServiceAccount bound to the generated RBAC
/// (`config/rbac/control-plane.yaml`).
pub async fn service_account_client(plane: &Plane) -> Client {
    let admin = plane.client().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac/control-plane.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let ns = "capi-microk8s-control-plane-system";
    let nss: Api<Namespace> = Api::all(admin.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await;
    let ssa = PatchParams::apply("t1").force();
    for doc in text.split("\n---\n").map(|d| d.trim_start_matches("---\n")) {
        let Ok(v) = serde_saphyr::from_str::<Value>(doc) else {
            continue;
        };
        let Some(kind) = v["kind"].as_str() else { continue };
        let (group, version) = match v["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, ver)) => (g.to_string(), ver.to_string()),
            None => (String::new(), v["apiVersion"].as_str().unwrap().to_string()),
        };
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, kind));
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = match v["metadata"]["namespace"].as_str() {
            Some(n) => Api::namespaced_with(admin.clone(), n, &ar),
            None => Api::all_with(admin.clone(), &ar),
        };
        api.patch(&name, &ssa, &Patch::Apply(v.clone())).await.unwrap();
    }
    plane
        .client_for_service_account(ns, "capi-microk8s-control-plane-controller-manager")
        .await
        .unwrap()
}

/// A client of a ServiceAccount granted the generated manager rules
/// (`config/rbac/control-plane.yaml`'s ClusterRole) by a Role and RoleBinding in `ns` only, as
/// the chart renders them with `watchNamespace`.
pub async fn role_only_client(plane: &Plane, ns: &str) -> Client {
    let admin = plane.client().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac/control-plane.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let rules = text
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .find(|v| v["kind"] == "ClusterRole")
        .map(|v| v["rules"].clone())
        .unwrap();
    let sa_ns = "capi-microk8s-control-plane-system";
    let sa = "mk8s-control-plane-role-only";
    let nss: Api<Namespace> = Api::all(admin.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa_ns}})).unwrap(),
        )
        .await;
    let ssa = PatchParams::apply("t1").force();
    let rbac = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
    let sa_ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ServiceAccount"));
    for (ar, obj_ns, body) in [
        (
            sa_ar,
            sa_ns,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": sa_ns}}),
        ),
        (
            rbac("Role"),
            ns,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "mk8s-control-plane-manager", "namespace": ns}, "rules": rules}),
        ),
        (
            rbac("RoleBinding"),
            ns,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "mk8s-control-plane-manager", "namespace": ns},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mk8s-control-plane-manager"},
                   "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]}),
        ),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), obj_ns, &ar);
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(&name, &ssa, &Patch::Apply(body)).await.unwrap();
    }
    plane.client_for_service_account(sa_ns, sa).await.unwrap()
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    flags: ManagerFlags,
}

/// A controller running in-process, restricted to one namespace.
pub struct Running {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), RuntimeError>>,
    pub metrics: Arc<Metrics>,
}

impl Running {
    /// Stops it gracefully.
    pub async fn stop(self) {
        self.token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "controller did not stop cleanly: {r:?}");
    }
}

/// Test settings: no periodic requeue at all, so that every step must come from a watch.
pub fn test_config() -> ControllerConfig {
    ControllerConfig {
        provisioning_requeue: Duration::from_secs(3600),
        node_action_timeout: Duration::from_secs(60),
        kubelet_report_timeout: Duration::from_secs(60),
        ..ControllerConfig::default()
    }
}

pub async fn start_controller(client: Client, ns: &str, cfg: ControllerConfig) -> Running {
    let flags = Flags::try_parse_from(["t1", &format!("--namespace={ns}"), "--log-format=text"])
        .unwrap()
        .flags;
    mk8s_runtime::init_tracing(&flags);
    let core_version = mk8s_runtime::client::detect_core_version(&client).await.unwrap();
    assert_eq!(core_version, CoreVersion::V1Beta2);
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let rt = Runtime {
        client,
        metrics: metrics.clone(),
        shutdown: token.clone(),
        flags,
        name: "microk8s-controlplane",
        core_version,
    };
    let handle = tokio::spawn(mk8s_controlplane::run_controller(rt, cfg));
    Running { token, handle, metrics }
}

/// A test cluster: namespace, CA, workload apiserver, Cluster, template and secrets.
pub struct Env {
    #[allow(dead_code)]
    pub plane: &'static Plane,
    pub admin: Client,
    pub ns: String,
    pub cluster: String,
    pub ca: mk8s_pki::CaPem,
    workload: Option<WorkloadApiServer>,
    pub workload_port: u16,
    pub wclient: Client,
}

impl Env {
    pub async fn new(plane: &'static Plane, prefix: &str) -> Env {
        let ns = plane.namespace(prefix).await.unwrap();
        let admin = plane.client().await;
        let ca = mk8s_pki::generate_ca("10.152.183.1", SystemTime::now()).unwrap();
        let workload = plane
            .start_workload_apiserver_async(WorkloadApiServerOptions::new(&ca.cert_pem, &ca.key_pem))
            .await
            .unwrap();
        let wclient = workload.client().await;
        let env = Env {
            plane,
            admin,
            ns,
            cluster: "c1".into(),
            ca,
            workload_port: workload.port(),
            workload: Some(workload),
            wclient,
        };
        env.create_template("tpl", json!({"flavor": "small"})).await;
        env
    }

    /// Kills the workload apiserver.
    pub fn stop_workload(&mut self) {
        if let Some(w) = self.workload.take() {
            w.stop();
        }
    }

    pub fn api(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.admin.clone(), &self.ns, ar)
    }

    pub fn mcps(&self) -> Api<MicroK8sControlPlane> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub async fn create(&self, ar: &ApiResource, v: Value) -> DynamicObject {
        let o: DynamicObject = serde_json::from_value(v).unwrap();
        self.api(ar).create(&PostParams::default(), &o).await.unwrap()
    }

    /// The worker Machine `worker-1` of cluster `c1` (CAPI's MachineSet would make it), on
    /// the infrastructure machine `w1`.
    pub async fn create_worker(&self) -> DynamicObject {
        self.create(
            &machine_ar(),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                   "metadata": {"name": "worker-1", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
                   "spec": {"clusterName": "c1", "version": "v1.33.0", "bootstrap": {"dataSecretName": "x"},
                            "infrastructureRef": {"apiGroup": INFRA_GROUP, "kind": "TestMachine", "name": "w1"}}}),
        )
        .await
    }

    pub async fn create_template(&self, name: &str, spec: Value) {
        self.create(
            &infra_ar("TestMachineTemplate"),
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "TestMachineTemplate",
                   "metadata": {"name": name}, "spec": {"template": {"metadata": {"labels": {"from-template": "yes"}}, "spec": spec}}}),
        )
        .await;
    }

    /// The cluster CA (`tls.crt`/`tls.key`), the auth token and, when `owned`, the owner
    /// reference to the Cluster the bootstrap provider sets.
    pub async fn create_cluster_secrets(&self, cluster_uid: Option<&str>) {
        let owners = cluster_uid.map(|uid| {
            json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": self.cluster, "uid": uid}])
        });
        for (name, data) in [
            (
                format!("{}-ca", self.cluster),
                json!({"tls.crt": self.ca.cert_pem, "tls.key": self.ca.key_pem}),
            ),
            (
                format!("{}-capi-auth-token", self.cluster),
                json!({"token": "s3cr3t-t0ken"}),
            ),
            (
                format!("{}-jointoken", self.cluster),
                json!({"value": "abcdefghijklmnopqrstuvwxyzabcdef"}),
            ),
        ] {
            let mut meta = json!({"name": name, "labels": {"cluster.x-k8s.io/cluster-name": self.cluster}});
            if let Some(o) = &owners {
                meta["ownerReferences"] = o.clone();
            }
            let s: Secret = serde_json::from_value(json!({"metadata": meta, "stringData": data})).unwrap();
            self.secrets().create(&PostParams::default(), &s).await.unwrap();
        }
    }

    /// Creates the Cluster (v1beta2), provisioned, with the workload apiserver as endpoint.
    pub async fn create_cluster(&self, failure_domains: &[&str]) -> String {
        let c = self
            .create(
                &cluster_ar(),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                       "metadata": {"name": self.cluster},
                       "spec": {
                           "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "MicroK8sControlPlane", "name": "cp"},
                           "infrastructureRef": {"apiGroup": INFRA_GROUP, "kind": "TestCluster", "name": "c1"},
                           "controlPlaneEndpoint": {"host": "127.0.0.1", "port": self.workload_port}}}),
            )
            .await;
        let fds: Vec<Value> = failure_domains
            .iter()
            .map(|f| json!({"name": f, "controlPlane": true}))
            .collect();
        let mut status = json!({"initialization": {"infrastructureProvisioned": true}});
        if !fds.is_empty() {
            status["failureDomains"] = json!(fds);
        }
        self.api(&cluster_ar())
            .patch_status(
                &self.cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
        c.uid().unwrap()
    }

    /// Creates the control plane `cp`, owned by the Cluster.
    pub async fn create_mcp(&self, cluster_uid: &str, spec: Value) {
        let mcp: MicroK8sControlPlane = serde_json::from_value(json!({
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlane",
            "metadata": {"name": "cp", "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                          "name": self.cluster, "uid": cluster_uid}]},
            "spec": spec,
        }))
        .unwrap();
        self.mcps().create(&PostParams::default(), &mcp).await.unwrap();
    }

    pub async fn mcp(&self) -> MicroK8sControlPlane {
        self.mcps().get("cp").await.unwrap()
    }

    pub async fn patch_mcp(&self, patch: Value) {
        self.mcps()
            .patch("cp", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Control plane Machines, sorted by name.
    pub async fn cp_machines(&self) -> Vec<DynamicObject> {
        let lp = ListParams::default().labels(&format!(
            "cluster.x-k8s.io/cluster-name={},cluster.x-k8s.io/control-plane",
            self.cluster
        ));
        let mut v = self.api(&machine_ar()).list(&lp).await.unwrap().items;
        v.sort_by_key(|m| m.name_any());
        v
    }

    pub async fn condition(&self, type_: &str) -> Option<mk8s_api::conditions::Condition> {
        let m = self.mcp().await;
        m.status
            .and_then(|s| mk8s_api::conditions::find(&s.conditions, type_).cloned())
    }

    pub async fn wait_condition(
        &self,
        type_: &str,
        pred: impl Fn(&mk8s_api::conditions::Condition) -> bool,
        what: &str,
    ) {
        self.wait(what, || async { self.condition(type_).await.is_some_and(|c| pred(&c)) })
            .await;
    }

    /// Prints the state of the control plane (for failures).
    pub async fn dump(&self) {
        match self.mcps().get_opt("cp").await {
            Ok(Some(m)) => eprintln!(
                "=== control plane status: {}",
                serde_json::to_string_pretty(&m.status).unwrap_or_default()
            ),
            other => eprintln!("=== control plane: {other:?}"),
        }
        for m in self.cp_machines().await {
            eprintln!(
                "=== machine {} deleting={} version={} nodeRef={} annotations={:?} conditions={}",
                m.name_any(),
                m.metadata.deletion_timestamp.is_some(),
                m.data["spec"]["version"],
                m.data.pointer("/status/nodeRef/name").unwrap_or(&Value::Null),
                m.metadata.annotations,
                m.data.pointer("/status/conditions").unwrap_or(&Value::Null),
            );
        }
        for n in self.nodes().await {
            let v = crate::harness::node_summary(&n);
            eprintln!("=== node {v}");
        }
    }

    /// Waits for `f`, dumping the state on timeout.
    pub async fn wait<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = tokio::time::Instant::now();
        loop {
            if f().await {
                return;
            }
            if start.elapsed() > TIMEOUT {
                self.dump().await;
                panic!("timed out after {TIMEOUT:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reports a workload node Ready or NotReady (as its kubelet would), keeping its address
    /// and a v1.33.7 kubelet.
    pub async fn set_node_ready(&self, node: &str, ready: bool) {
        let nodes: Api<Node> = Api::all(self.wclient.clone());
        let ip = nodes.get(node).await.unwrap().status.unwrap().addresses.unwrap()[0]
            .address
            .clone();
        nodes
            .patch_status(
                node,
                &PatchParams::default(),
                &Patch::Merge(node_status(&ip, "v1.33.7", ready)),
            )
            .await
            .unwrap();
    }

    pub async fn nodes(&self) -> Vec<Node> {
        let api: Api<Node> = Api::all(self.wclient.clone());
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// The control plane's machines (names) once they are `n`, all with a Ready node and no
    /// deletion in flight, and the status agreeing.
    pub async fn wait_settled(&self, n: usize) {
        self.wait(&format!("{n} settled control plane machines"), || async {
            let ms = self.cp_machines().await;
            let st = self.mcp().await.status.unwrap_or_default();
            ms.len() == n
                && ms.iter().all(|m| {
                    m.metadata.deletion_timestamp.is_none() && m.data.pointer("/status/nodeRef/name").is_some()
                })
                && st.replicas == Some(i32::try_from(n).unwrap())
                && st.ready_replicas == Some(i32::try_from(n).unwrap())
                && st.up_to_date_replicas == Some(i32::try_from(n).unwrap())
        })
        .await;
    }
}

/// A control plane of `replicas` machines at v1.33.0 in a fresh namespace, settled: the
/// fake plays CAPI, the infrastructure and the kubelets with its defaults, and the controller
/// runs with the test configuration as admin.
pub async fn settled_control_plane(plane: &'static Plane, prefix: &str, replicas: i32) -> (Env, Fake, Running) {
    settled_control_plane_with(plane, prefix, replicas, test_config()).await
}

/// [`settled_control_plane`] with the controller on `cfg`.
pub async fn settled_control_plane_with(
    plane: &'static Plane,
    prefix: &str,
    replicas: i32,
    cfg: ControllerConfig,
) -> (Env, Fake, Running) {
    let env = Env::new(plane, prefix).await;
    let uid = env.create_cluster(&[]).await;
    env.create_cluster_secrets(Some(&uid)).await;
    env.create_mcp(&uid, mcp_spec(replicas, "v1.33.0")).await;
    let fake = Fake::start(&env, FakeOpts::default()).await;
    let ctl = start_controller(env.admin.clone(), &env.ns, cfg).await;
    env.wait_settled(usize::try_from(replicas).unwrap()).await;
    (env, fake, ctl)
}

/// What the fake saw.
#[derive(Default, Debug)]
pub struct FakeLog {
    /// Every Machine name ever seen.
    pub machines_seen: BTreeSet<String>,
    /// Node action pods: (action, node, args after `$0`, token secret).
    pub actions: Vec<(String, String, Vec<String>, Option<String>)>,
    /// Machines deleted after their hook was released (they carried it when deleting).
    pub deleted_with_hook: Vec<String>,
    /// Machines deleted without a hook.
    pub deleted_without_hook: Vec<String>,
    /// Most control plane Machines at once.
    pub max_machines: usize,
    /// Most deleting Machines at once.
    pub max_deleting: usize,
}

/// What the fake does.
#[derive(Clone, Debug)]
pub struct FakeOpts {
    /// Infrastructure "boots" machines: their Node appears.
    pub boot: bool,
    /// The init node marks that it accepts joins.
    pub mark_init: bool,
    /// Node action pods succeed.
    pub pods_succeed: bool,
    /// Node action pods stay Running forever (a kubelet that never finishes them).
    pub pods_hang: bool,
    /// Node action pods on these nodes stay Running forever.
    pub pods_hang_on: Vec<String>,
    /// Patch version of kubelets (the snap's newest patch of a track).
    pub kubelet_patch: u32,
}

impl Default for FakeOpts {
    fn default() -> Self {
        FakeOpts {
            boot: true,
            mark_init: true,
            pods_succeed: true,
            pods_hang: false,
            pods_hang_on: Vec::new(),
            kubelet_patch: 7,
        }
    }
}

/// CAPI core + infrastructure + kubelet, played by polling.
pub struct Fake {
    pub opts: Arc<Mutex<FakeOpts>>,
    pub log: Arc<Mutex<FakeLog>>,
    stop: CancellationToken,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_str() -> String {
    Timestamp::now().to_string()
}

fn track_of(version: &str) -> (u64, u64) {
    let v = mk8s_api::version::KubeVersion::parse(version).unwrap();
    (v.major, v.minor)
}

impl Fake {
    pub async fn start(env: &Env, opts: FakeOpts) -> Fake {
        // The workload cluster's action namespace and its default ServiceAccount (no
        // controller-manager runs there to create it).
        let nss: Api<Namespace> = Api::all(env.wclient.clone());
        let _ = nss
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "microk8s-capi-system"}})).unwrap(),
            )
            .await;
        let sas: Api<ServiceAccount> = Api::namespaced(env.wclient.clone(), "microk8s-capi-system");
        let _ = sas
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
            )
            .await;
        let fake = Fake {
            opts: Arc::new(Mutex::new(opts)),
            log: Arc::new(Mutex::new(FakeLog::default())),
            stop: CancellationToken::new(),
        };
        let (mgmt, wl, ns, cluster) = (
            env.admin.clone(),
            env.wclient.clone(),
            env.ns.clone(),
            env.cluster.clone(),
        );
        let (opts, log, stop) = (fake.opts.clone(), fake.log.clone(), fake.stop.clone());
        tokio::spawn(async move {
            let mut ips: BTreeMap<String, usize> = BTreeMap::new();
            let mut hooked: BTreeSet<String> = BTreeSet::new();
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let o = opts.lock().unwrap().clone();
                if let Err(e) = tick(&mgmt, &wl, &ns, &cluster, &o, &log, &mut ips, &mut hooked).await {
                    eprintln!("fake: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        fake
    }

    pub fn set(&self, f: impl FnOnce(&mut FakeOpts)) {
        f(&mut self.opts.lock().unwrap());
    }

    pub fn log<T>(&self, f: impl FnOnce(&FakeLog) -> T) -> T {
        f(&self.log.lock().unwrap())
    }
}

fn ip_of(ips: &mut BTreeMap<String, usize>, name: &str) -> String {
    let next = ips.len() + 1;
    let i = *ips.entry(name.to_string()).or_insert(next);
    format!("10.10.0.{i}")
}

#[allow(clippy::too_many_arguments)]
async fn tick(
    mgmt: &Client,
    wl: &Client,
    ns: &str,
    cluster: &str,
    o: &FakeOpts,
    log: &Mutex<FakeLog>,
    ips: &mut BTreeMap<String, usize>,
    hooked: &mut BTreeSet<String>,
) -> Result<(), kube::Error> {
    let machines: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), ns, &machine_ar());
    let nodes: Api<Node> = Api::all(wl.clone());
    let list = machines
        .list(&ListParams::default().labels(&format!("cluster.x-k8s.io/cluster-name={cluster}")))
        .await?
        .items;
    let node_list = nodes.list(&ListParams::default()).await?.items;
    let is_cp = |m: &DynamicObject| m.labels().contains_key("cluster.x-k8s.io/control-plane");
    {
        let mut l = log.lock().unwrap();
        for m in &list {
            l.machines_seen.insert(m.name_any());
        }
        let cps = list.iter().filter(|m| is_cp(m)).count();
        l.max_machines = l.max_machines.max(cps);
        let del = list
            .iter()
            .filter(|m| is_cp(m) && m.metadata.deletion_timestamp.is_some())
            .count();
        l.max_deleting = l.max_deleting.max(del);
    }
    for m in &list {
        let name = m.name_any();
        let ip = ip_of(ips, &name);
        let pid = format!("test://{name}");
        if m.metadata.deletion_timestamp.is_some() {
            let hooks: Vec<&String> = m
                .annotations()
                .keys()
                .filter(|k| k.starts_with("pre-terminate.delete.hook.machine.cluster.x-k8s.io/"))
                .collect();
            if !hooks.is_empty() {
                hooked.insert(name.clone());
                let waiting = m
                    .data
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Deleting"));
                if !waiting {
                    let body = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "metadata": {"name": name},
                        "status": {"conditions": [{"type": "Deleting", "status": "True", "reason": "WaitingForPreTerminateHook",
                                                   "message": "drained", "lastTransitionTime": now_str()}]}});
                    machines
                        .patch_status(&name, &PatchParams::apply("fake-capi").force(), &Patch::Apply(body))
                        .await?;
                }
                continue;
            }
            let _ = nodes.delete(&name, &DeleteParams::default()).await;
            machines
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await?;
            let mut l = log.lock().unwrap();
            if hooked.contains(&name) {
                l.deleted_with_hook.push(name.clone());
            } else {
                l.deleted_without_hook.push(name.clone());
            }
            continue;
        }
        if m.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
            machines
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": ["machine.cluster.x-k8s.io"]}})),
                )
                .await?;
        }
        if m.data.pointer("/spec/providerID").is_none() {
            machines
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"providerID": pid}})),
                )
                .await?;
            machines
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}],
                                                    "initialization": {"infrastructureProvisioned": true, "bootstrapDataSecretCreated": true}}})),
                )
                .await?;
            continue;
        }
        let node = node_list.iter().find(|n| n.name_any() == name);
        match node {
            None if o.boot => {
                let version = m
                    .data
                    .pointer("/spec/version")
                    .and_then(Value::as_str)
                    .unwrap_or("v1.33.0");
                let (ma, mi) = track_of(version);
                let mut labels = json!({"kubernetes.io/hostname": name});
                if is_cp(m) {
                    labels["node.kubernetes.io/microk8s-controlplane"] = json!("microk8s-controlplane");
                }
                let n: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
                nodes.create(&PostParams::default(), &n).await?;
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(node_status(&ip, &format!("v{ma}.{mi}.{}", o.kubelet_patch), true)),
                    )
                    .await?;
            }
            None => {}
            Some(n) => {
                let node_pid = n.spec.as_ref().and_then(|s| s.provider_id.clone());
                if node_pid.as_deref() == Some(pid.as_str()) && m.data.pointer("/status/nodeRef").is_none() {
                    let t = now_str();
                    machines
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"nodeRef": {"name": name}, "phase": "Running", "conditions": [
                                {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": t},
                                {"type": "Available", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": t},
                            ]}})),
                        )
                        .await?;
                }
            }
        }
    }
    // The init marker: the oldest control plane node accepts joins.
    if o.mark_init
        && !node_list
            .iter()
            .any(|n| n.labels().contains_key("microk8s.cluster.x-k8s.io/accepts-joins"))
    {
        let oldest = list
            .iter()
            .filter(|m| is_cp(m) && m.metadata.deletion_timestamp.is_none())
            .min_by_key(|m| (m.metadata.creation_timestamp.clone().map(|t| t.0), m.name_any()));
        if let Some(m) = oldest
            && node_list.iter().any(|n| n.name_any() == m.name_any())
        {
            nodes
                .patch(
                    &m.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"microk8s.cluster.x-k8s.io/accepts-joins": "true"}}})),
                )
                .await?;
        }
    }
    // The kubelet of node action pods.
    let pods: Api<Pod> = Api::namespaced(wl.clone(), "microk8s-capi-system");
    for p in pods.list(&ListParams::default()).await?.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let spec = p.spec.clone().unwrap_or_default();
        let node = spec.node_name.clone().unwrap_or_default();
        let c = &spec.containers[0];
        let cmd = c.command.clone().unwrap_or_default();
        let args: Vec<String> = cmd.iter().skip(4).cloned().collect();
        let secret = c
            .env
            .iter()
            .flatten()
            .find_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| r.name.clone()));
        let action = p
            .labels()
            .get("microk8s.cluster.x-k8s.io/action")
            .cloned()
            .unwrap_or_default();
        let hung = o.pods_hang || o.pods_hang_on.contains(&node);
        if hung && phase.as_deref() == Some("Running") {
            continue;
        }
        log.lock()
            .unwrap()
            .actions
            .push((action.clone(), node.clone(), args.clone(), secret));
        if hung {
            pods.patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running"}})),
            )
            .await?;
            continue;
        }
        let ok = o.pods_succeed;
        if ok && action == "snap-refresh" {
            let channel = &args[0];
            let track = channel.split('/').next().unwrap().trim_end_matches("-strict");
            let ip = node_list
                .iter()
                .find(|n| n.name_any() == node)
                .and_then(|n| {
                    n.status
                        .as_ref()?
                        .addresses
                        .as_ref()?
                        .first()
                        .map(|a| a.address.clone())
                })
                .unwrap_or_default();
            nodes
                .patch_status(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(node_status(&ip, &format!("v{track}.{}", o.kubelet_patch), true)),
                )
                .await?;
        }
        pods.patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": if ok { "Succeeded" } else { "Failed" }}})),
        )
        .await?;
    }
    Ok(())
}

pub fn node_summary(n: &Node) -> String {
    let st = n.status.clone().unwrap_or_default();
    format!(
        "{} providerID={:?} labels={:?} kubelet={:?} ready={:?}",
        n.name_any(),
        n.spec.as_ref().and_then(|s| s.provider_id.clone()),
        n.metadata.labels,
        st.node_info.map(|i| i.kubelet_version),
        st.conditions
            .map(|c| c.iter().map(|c| c.status.clone()).collect::<Vec<_>>()),
    )
}

pub fn node_status(ip: &str, kubelet: &str, ready: bool) -> Value {
    json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady",
                        "message": "", "lastHeartbeatTime": now_str(), "lastTransitionTime": now_str()}],
        "nodeInfo": {"kubeletVersion": kubelet, "kubeProxyVersion": "", "machineID": "m", "systemUUID": "s", "bootID": "b",
                     "kernelVersion": "6", "osImage": "Ubuntu", "containerRuntimeVersion": "containerd://1", "operatingSystem": "linux",
                     "architecture": "amd64"}
    }})
}

/// The standard control plane spec.
pub fn mcp_spec(replicas: i32, version: &str) -> Value {
    json!({
        "replicas": replicas,
        "version": version,
        "machineTemplate": {"infrastructureTemplate": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "TestMachineTemplate", "name": "tpl"}},
    })
}
