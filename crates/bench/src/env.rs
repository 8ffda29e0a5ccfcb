//! A benchmark environment: a private management plane (so that every run starts from a
//! fresh etcd), optionally with an audit log, the real CAPI core manager, the simulator
//! (in-process, normal or light mode) and the managers as processes under their
//! ServiceAccounts — ours with our CRDs, or Canonical's with theirs ([`Provider`]) — the e2e
//! plane, owned by one run and torn down after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mk8s_e2e::capi::CapiCore;
use mk8s_e2e::managers::{self, Manager, ManagerKind};
use mk8s_testenv::{Binaries, Plane, PlaneOptions};

use crate::theirs::{Provider, TheirManager};

/// What a run needs.
#[derive(Clone, Debug)]
pub struct EnvOptions {
    /// Directory name of the run.
    pub name: String,
    /// Write an audit log of every request (Metadata level).
    pub audit: bool,
    /// Run the CAPI core manager.
    pub capi: bool,
    /// Extra flags of the CAPI core manager.
    pub capi_args: Vec<String>,
    /// Run the simulator.
    pub sim: Option<SimOptions>,
    /// Whose managers (and CRDs) run.
    pub provider: Provider,
    /// The managers to run.
    pub managers: Vec<ManagerKind>,
    /// Extra flags of our managers (not passed to theirs).
    pub manager_args: Vec<String>,
}

/// A running manager, ours or theirs.
enum Running {
    Ours(Manager),
    Theirs(TheirManager),
}

impl Running {
    fn kind(&self) -> ManagerKind {
        match self {
            Running::Ours(m) => m.kind,
            Running::Theirs(m) => m.kind,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::Ours(m) => m.pid(),
            Running::Theirs(m) => m.pid(),
        }
    }

    fn stop(self) {
        match self {
            Running::Ours(m) => m.stop(true),
            Running::Theirs(m) => m.stop(),
        }
    }
}

/// Simulator settings of a run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Light mode (one shared workload apiserver).
    pub light: bool,
    /// Real-time delay before a machine's "VM" is up.
    pub boot_delay: Duration,
    /// Real-time duration of a snap install.
    pub install_delay: Duration,
    /// Objects of each kind the simulator reconciles at once.
    pub concurrency: u16,
}

/// A running environment.
pub struct BenchEnv {
    plane: Option<Plane>,
    capi: Option<CapiCore>,
    /// The simulator.
    pub sim: Option<mk8s_sim::SimHandle>,
    managers: Vec<(Running, u16)>,
    /// Directory of the run (logs, audit log, simulator state).
    pub dir: PathBuf,
    /// The audit log, when enabled.
    pub audit_log: Option<PathBuf>,
    /// Admin client of the management plane.
    pub client: kube::Client,
    /// Keep the run directory (its logs) after [`BenchEnv::stop`].
    pub keep: bool,
}

/// The audit policy: every request at Metadata level (status writes of our kinds with their
/// bodies, to count repeated ones), once (when complete), except the
/// plane's own components.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: None
  users: ["system:kube-controller-manager", "system:apiserver"]
- level: None
  userGroups: ["system:nodes"]
- level: Request
  verbs: ["patch", "update"]
  resources:
  - group: controlplane.cluster.x-k8s.io
    resources: ["microk8scontrolplanes/status"]
  - group: bootstrap.cluster.x-k8s.io
    resources: ["microk8sconfigs/status"]
- level: Metadata
"#;

fn free_port() -> u16 {
    mk8s_e2e::capi::free_port()
}

/// The root of the runs' directories (removed by [`BenchEnv::stop`] unless `BENCH_KEEP=1`).
pub fn work_root() -> PathBuf {
    std::env::temp_dir().join(format!("mk8s-bench-{}", std::process::id()))
}

impl BenchEnv {
    /// Starts everything the options ask for.
    pub async fn start(o: &EnvOptions) -> BenchEnv {
        let dir = work_root().join(&o.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("run directory");
        let mut popts = PlaneOptions::default();
        let audit_log = o.audit.then(|| dir.join("audit.log"));
        if let Some(log) = &audit_log {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).expect("audit policy");
            popts.apiserver_args = vec![
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", log.display()),
                "--audit-log-format=json".into(),
                "--audit-log-maxsize=0".into(),
                "--audit-log-maxbackup=0".into(),
            ];
        }
        let plane = tokio::task::spawn_blocking(move || {
            let b = Binaries::discover().unwrap_or_else(|e| panic!("test binaries: {e}"));
            Plane::start_with_options(b, popts)
        })
        .await
        .expect("plane thread")
        .unwrap_or_else(|e| panic!("management plane: {e}"));
        plane.install_capi_crds().await.expect("CAPI CRDs");
        let mut crds: Vec<_> = match &o.provider {
            Provider::Ours => mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect(),
            Provider::Theirs(t) => t.crds(),
        };
        crds.extend(mk8s_sim::crds().into_iter().map(|(_, c)| c));
        plane.apply_crds(&crds).await.expect("CRDs");
        let client = plane.client().await;

        let capi = if o.capi {
            Some(CapiCore::start_with(&plane, &dir.join("capi"), &o.capi_args).await)
        } else {
            None
        };
        let sim = match &o.sim {
            Some(s) => {
                let mut cfg = mk8s_sim::Config::new();
                cfg.state_dir = dir.join("sim");
                cfg.stub_binary = Some(mk8s_e2e::binary("mk8s-sim"));
                cfg.sleep_scale = 0.02;
                cfg.light = s.light;
                cfg.boot_delay = s.boot_delay;
                cfg.install_delay = s.install_delay;
                cfg.concurrency = s.concurrency;
                Some(
                    mk8s_sim::run_with_client(cfg, plane.client().await)
                        .await
                        .expect("simulator starts"),
                )
            }
            None => None,
        };
        let root = mk8s_testenv::workspace_root();
        for ns in [managers::BOOTSTRAP_NS, managers::CONTROL_PLANE_NS] {
            managers::ensure_namespace(&client, ns).await;
        }
        for file in ["config/rbac/bootstrap.yaml", "config/rbac/control-plane.yaml"] {
            let text = std::fs::read_to_string(root.join(file)).expect("RBAC manifests");
            mk8s_e2e::apply_yaml(&client, &text, None).await;
        }
        let mut env = BenchEnv {
            plane: Some(plane),
            capi,
            sim,
            managers: vec![],
            dir,
            audit_log,
            client,
            keep: false,
        };
        env.start_managers(&o.provider, &o.managers, &o.manager_args).await;
        env
    }

    /// Starts managers of `provider` (ours get `manager_args`, theirs none) under our
    /// ServiceAccounts, each with its metrics on a port of its own.
    pub async fn start_managers(&mut self, provider: &Provider, kinds: &[ManagerKind], manager_args: &[String]) {
        let plane = self.plane.as_ref().expect("plane");
        for kind in kinds {
            let port = free_port();
            let running = match provider {
                Provider::Ours => {
                    // The production default lease duration (the e2e harness shortens it to 4 s).
                    let mut args = vec![
                        format!("--metrics-bind-address=127.0.0.1:{port}"),
                        "--leader-election-lease-duration=15".to_string(),
                    ];
                    args.extend(manager_args.iter().cloned());
                    Running::Ours(Manager::start_with(plane, *kind, &self.dir, &args).await)
                }
                Provider::Theirs(t) => {
                    // The same ServiceAccount identity as ours (so the audit log splits
                    // requests the same way), with the rights their own RBAC would give.
                    let (ns, sa) = (kind.namespace(), kind.service_account());
                    crate::theirs::grant_admin(&self.client, ns, sa).await;
                    let kubeconfig = self.dir.join(format!("theirs-{kind:?}.kubeconfig").to_lowercase());
                    let yaml = plane
                        .kubeconfig_for_service_account(ns, sa)
                        .await
                        .expect("service account kubeconfig");
                    std::fs::write(&kubeconfig, yaml).expect("kubeconfig");
                    Running::Theirs(TheirManager::start(t, *kind, &self.dir, &kubeconfig, port).await)
                }
            };
            self.managers.push((running, port));
        }
    }

    /// Stops every manager (SIGTERM, then SIGKILL after 10 s), as scaling their Deployments
    /// to zero would.
    pub fn stop_managers(&mut self) {
        for (m, _) in self.managers.drain(..) {
            m.stop();
        }
    }

    /// The plane.
    pub fn plane(&self) -> &Plane {
        self.plane.as_ref().expect("plane")
    }

    /// Pid of one of the managers.
    pub fn manager_pid(&self, kind: ManagerKind) -> Option<u32> {
        self.managers
            .iter()
            .find(|(m, _)| m.kind() == kind)
            .map(|(m, _)| m.pid())
    }

    /// Pid of the CAPI core manager.
    pub fn capi_pid(&self) -> Option<u32> {
        self.capi.as_ref().and_then(CapiCore::pid)
    }

    /// A process of the plane by name (`kube-apiserver`, `etcd`, …).
    pub fn plane_pid(&self, name: &str) -> Option<u32> {
        self.plane().pids().into_iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// `/metrics` of one of the managers.
    pub async fn metrics(&self, kind: ManagerKind) -> String {
        let Some(port) = self.managers.iter().find(|(m, _)| m.kind() == kind).map(|(_, p)| *p) else {
            return String::new();
        };
        tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
            .await
            .unwrap_or_default()
    }

    /// Tears everything down, managers first; removes the run directory unless `BENCH_KEEP=1`.
    pub async fn stop(mut self) {
        self.stop_managers();
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        let capi = self.capi.take();
        let plane = self.plane.take();
        let _ = tokio::task::spawn_blocking(move || {
            drop(capi);
            drop(plane);
        })
        .await;
        if !self.keep && std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
            remove_dir(&self.dir);
        }
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// A plain HTTP GET on loopback; the body (empty on failure).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A Prometheus counter summed by the value of one of its labels (`label`), over the series
/// whose labels include `filter` (e.g. `controller="bootstrap"`).
pub fn metric_by_label(text: &str, name: &str, filter: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let prefix = format!("{label}=\"");
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|x| x == filter) {
            continue;
        }
        let Some(v) = labels
            .split(',')
            .find_map(|x| x.strip_prefix(&prefix)?.strip_suffix('"'))
        else {
            continue;
        };
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(v.to_string()).or_insert(0.0) += n;
        }
    }
    out
}

/// Sum of a Prometheus counter over all its label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod metric_tests {
    use super::{metric_by_label, metric_sum};

    #[test]
    fn counters_are_summed_by_a_label_within_a_filter() {
        let text = "# HELP mk8s_reconcile_causes Reconciles\n\
mk8s_reconcile_causes_total{controller=\"controlplane\",cause=\"machines\"} 7\n\
mk8s_reconcile_causes_total{controller=\"controlplane\",cause=\"timer_provisioning\"} 2\n\
mk8s_reconcile_causes_total{controller=\"bootstrap\",cause=\"machines\"} 5\n\
mk8s_reconcile_causes_totalx{controller=\"controlplane\",cause=\"machines\"} 100\n";
        let m = metric_by_label(
            text,
            "mk8s_reconcile_causes_total",
            "controller=\"controlplane\"",
            "cause",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["machines"], 7.0);
        assert_eq!(m["timer_provisioning"], 2.0);
        assert_eq!(metric_sum(text, "mk8s_reconcile_causes_total"), 14.0);
    }
}
