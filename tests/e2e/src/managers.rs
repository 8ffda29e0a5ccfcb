//! Our two managers, run as processes the way they run in a cluster: with their own
//! ServiceAccount's token and the generated RBAC, leader election on, JSON logs to a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use mk8s_testenv::Plane;

/// Namespace of the bootstrap manager (Canonical's).
pub const BOOTSTRAP_NS: &str = "capi-microk8s-bootstrap-system";
/// Namespace of the control plane manager (Canonical's).
pub const CONTROL_PLANE_NS: &str = "capi-microk8s-control-plane-system";

/// Which manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagerKind {
    /// `mk8s-bootstrap`.
    Bootstrap,
    /// `mk8s-controlplane`.
    ControlPlane,
}

impl ManagerKind {
    fn binary(self) -> &'static str {
        match self {
            ManagerKind::Bootstrap => "mk8s-bootstrap",
            ManagerKind::ControlPlane => "mk8s-controlplane",
        }
    }

    /// The namespace it runs in (Canonical's name).
    pub fn namespace(self) -> &'static str {
        match self {
            ManagerKind::Bootstrap => BOOTSTRAP_NS,
            ManagerKind::ControlPlane => CONTROL_PLANE_NS,
        }
    }

    /// The ServiceAccount it runs as (Canonical's name).
    pub fn service_account(self) -> &'static str {
        match self {
            ManagerKind::Bootstrap => "capi-microk8s-bootstrap-controller-manager",
            ManagerKind::ControlPlane => "capi-microk8s-control-plane-controller-manager",
        }
    }
}

/// Creates a namespace if missing.
pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }
}

/// A running manager process.
pub struct Manager {
    /// Which one.
    pub kind: ManagerKind,
    child: Child,
    log: PathBuf,
    /// Its probe port.
    pub health_port: u16,
}

impl Manager {
    /// Starts a manager under its ServiceAccount and waits until it is ready.
    pub async fn start(plane: &Plane, kind: ManagerKind, dir: &Path) -> Manager {
        Self::start_with(plane, kind, dir, &[]).await
    }

    /// [`Manager::start`] with extra flags (e.g. `--concurrency`, `--metrics-bind-address`);
    /// a flag given here replaces the default of the same name.
    pub async fn start_with(plane: &Plane, kind: ManagerKind, dir: &Path, extra_args: &[String]) -> Manager {
        let kubeconfig = dir.join(format!("{}.kubeconfig", kind.binary()));
        if !kubeconfig.exists() {
            let yaml = plane
                .kubeconfig_for_service_account(kind.namespace(), kind.service_account())
                .await
                .expect("service account kubeconfig");
            std::fs::write(&kubeconfig, yaml).unwrap();
        }
        let health_port = crate::capi::free_port();
        let log = dir.join(format!("{}.log", kind.binary()));
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let _ = writeln!(out, "=== starting {} ===", kind.binary());
        let defaults = [
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--health-probe-bind-address=127.0.0.1:{health_port}"),
            "--metrics-bind-address=127.0.0.1:0".to_string(),
            "--leader-elect".to_string(),
            format!("--leader-election-namespace={}", kind.namespace()),
            "--leader-election-lease-duration=4".to_string(),
            "--log-format=json".to_string(),
        ];
        let flag = |a: &str| a.split('=').next().unwrap_or_default().to_string();
        let mut cmd = Command::new(crate::binary(kind.binary()));
        cmd.args(
            defaults
                .iter()
                .filter(|d| !extra_args.iter().any(|e| flag(e) == flag(d))),
        )
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("E2E_MANAGER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("POD_NAME", format!("{}-{}", kind.binary(), std::process::id()))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        let child = mk8s_testenv::spawn_with_pdeathsig(cmd).expect("start manager");
        let mut m = Manager {
            kind,
            child,
            log,
            health_port,
        };
        m.wait_ready(Duration::from_secs(60)).await;
        m
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        wait_ready(
            &mut self.child,
            self.health_port,
            self.kind.binary(),
            &self.log,
            timeout,
        )
        .await;
    }

    /// Stops the process: SIGTERM and a grace period when `graceful`, SIGKILL otherwise.
    pub fn stop(mut self, graceful: bool) {
        stop_process(&mut self.child, graceful);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::capi::tail(&self.log, lines)
    }
}

/// Waits until a manager process answers `/readyz` on `health_port`; panics with the tail of
/// its log if it exits or is not ready within `timeout`.
pub async fn wait_ready(child: &mut Child, health_port: u16, name: &str, log: &Path, timeout: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited ({status}):\n{}", crate::capi::tail(log, 40));
        }
        if tokio::task::spawn_blocking(move || crate::capi::http_ok(health_port, "/readyz"))
            .await
            .unwrap_or(false)
        {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{name} not ready after {timeout:?}:\n{}",
            crate::capi::tail(log, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops a child process: SIGTERM and up to 10 s of grace when `graceful`, then SIGKILL.
pub fn stop_process(child: &mut Child, graceful: bool) {
    let pid = i32::try_from(child.id()).unwrap_or(0);
    if graceful && pid > 0 {
        #[allow(unsafe_code)]
        // SAFETY: sending a signal to our own child process by pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
