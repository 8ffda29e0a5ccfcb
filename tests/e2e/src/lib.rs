//! The local management plane for end-to-end scenarios: the testenv control plane (etcd,
//! kube-apiserver, kube-controller-manager), the real CAPI core manager with its webhooks and
//! conversion served on loopback, the MicroK8s machine simulator, and both providers running
//! as processes under their own ServiceAccounts with the RBAC of `config/rbac/`.
//!
//! One [`Env`] is shared by the scenarios of a test binary; each scenario works in its own
//! namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod capi;
pub mod cluster;
pub mod clusterctl;
pub mod managers;
pub mod packaging;
pub mod takeover;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_testenv::Plane;
use serde_json::Value;

pub use managers::{Manager, ManagerKind};

/// The directory of the workspace's built binaries (`target/<profile>`), found from the
/// running executable (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`), or
/// `MK8S_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("MK8S_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).expect("target/<profile>")
    } else {
        dir.to_path_buf()
    }
}

/// A built binary of the workspace; panics with the command to build it when missing.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the managers first (`cargo build --bins`, which `make e2e` does)",
        p.display()
    );
    p
}

/// Applies every document of a multi-document YAML file by server-side apply.
pub async fn apply_yaml(client: &kube::Client, text: &str, default_ns: Option<&str>) {
    for doc in serde_saphyr::from_multiple::<Value>(text).expect("YAML") {
        if doc.is_null() {
            continue;
        }
        apply_value(client, &doc, default_ns).await;
    }
}

/// Applies one object by server-side apply (namespace from the object, else `default_ns`).
pub async fn apply_value(client: &kube::Client, doc: &Value, default_ns: Option<&str>) {
    let api_version = doc["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = doc["kind"].as_str().expect("kind");
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let name = doc["metadata"]["name"].as_str().expect("name");
    let namespaced = !matches!(
        kind,
        "ClusterRole"
            | "ClusterRoleBinding"
            | "Namespace"
            | "CustomResourceDefinition"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
    );
    let api: Api<DynamicObject> = match (namespaced, doc["metadata"]["namespace"].as_str().or(default_ns)) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, &PatchParams::apply("mk8s-e2e").force(), &Patch::Apply(doc))
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// Everything the scenarios share.
pub struct Env {
    /// The management plane.
    pub plane: &'static Plane,
    /// The CAPI core manager.
    pub capi: capi::CapiCore,
    /// The simulator (runs on the environment's own runtime).
    pub sim: mk8s_sim::SimHandle,
    /// Our managers.
    pub managers: Mutex<Vec<Manager>>,
    /// Log directory.
    pub dir: PathBuf,
}

static ENV: OnceLock<Option<&'static Env>> = OnceLock::new();

/// The shared environment, started by the first scenario of the test binary. `None` when the
/// test binaries are missing outside CI (testenv prints why).
pub fn env() -> Option<&'static Env> {
    *ENV.get_or_init(|| {
        // Long-lived async parts (the simulator) need a runtime that outlives every test's.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("e2e-env".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let env = rt.block_on(start());
                tx.send(env).expect("send env");
                // Keep the runtime (and with it the simulator) alive for the whole process.
                rt.block_on(std::future::pending::<()>());
            })
            .expect("spawn env thread");
        rx.recv().expect("env started")
    })
}

async fn start() -> Option<&'static Env> {
    let t0 = std::time::Instant::now();
    let plane = mk8s_testenv::shared().await?;
    let dir = plane.dir().join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    plane.install_capi_crds().await.unwrap();
    let mut crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    crds.extend(mk8s_sim::crds().into_iter().map(|(_, c)| c));
    plane.apply_crds(&crds).await.unwrap();

    let capi = capi::CapiCore::start(plane, &dir.join("capi")).await;
    eprintln!("e2e: CAPI core ready after {:.1?}", t0.elapsed());

    let mut cfg = mk8s_sim::Config::new();
    cfg.state_dir = dir.join("sim");
    cfg.stub_binary = Some(binary("mk8s-sim"));
    cfg.sleep_scale = 0.02;
    let sim = mk8s_sim::run_with_client(cfg, plane.client().await)
        .await
        .expect("simulator starts");

    let admin = plane.client().await;
    let root = mk8s_testenv::workspace_root();
    for file in ["config/rbac/bootstrap.yaml", "config/rbac/control-plane.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for ns in [managers::BOOTSTRAP_NS, managers::CONTROL_PLANE_NS] {
            managers::ensure_namespace(&admin, ns).await;
        }
        apply_yaml(&admin, &text, None).await;
    }
    let mut ms = vec![];
    for kind in [ManagerKind::Bootstrap, ManagerKind::ControlPlane] {
        ms.push(Manager::start(plane, kind, &dir).await);
    }
    eprintln!(
        "e2e: environment ready after {:.1?} (logs in {})",
        t0.elapsed(),
        dir.display()
    );
    Some(Box::leak(Box::new(Env {
        plane,
        capi,
        sim,
        managers: Mutex::new(ms),
        dir,
    })))
}

impl Env {
    /// Kills (SIGKILL or SIGTERM) and restarts one of our managers.
    pub async fn restart(&self, kind: ManagerKind, graceful: bool) {
        let old = {
            let mut ms = self.managers.lock().unwrap();
            let i = ms.iter().position(|m| m.kind == kind).expect("manager");
            ms.remove(i)
        };
        old.stop(graceful);
        let new = Manager::start(self.plane, kind, &self.dir).await;
        self.managers.lock().unwrap().push(new);
    }

    /// The tail of a manager's log (for failure messages).
    pub fn manager_log_tail(&self, kind: ManagerKind, lines: usize) -> String {
        let ms = self.managers.lock().unwrap();
        ms.iter()
            .find(|m| m.kind == kind)
            .map(|m| m.log_tail(lines))
            .unwrap_or_default()
    }
}

/// Polls `f` every 250 ms until it returns `Some`, or panics after `timeout` with `what` and
/// the last observation.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(why) => why,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
