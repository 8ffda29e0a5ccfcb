//! The management plane: etcd, kube-apiserver and kube-controller-manager.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::binaries::Binaries;
use crate::certs::{self, CertKeyPem, LeafSpec, SigningCa};
use crate::kubeconfig::{self, Credentials};
use crate::process::{self, ManagedProcess, io_err, session};
use crate::workload::{WorkloadApiServer, WorkloadApiServerOptions};
use crate::{Error, Result};

/// Field manager used for the harness' server-side applies.
pub const FIELD_MANAGER: &str = "mk8s-testenv";

/// Options of a private plane ([`Plane::start_with_options`]).
#[derive(Clone, Debug, Default)]
pub struct PlaneOptions {
    /// Extra flags of the management kube-apiserver, e.g. `--audit-policy-file=…` and
    /// `--audit-log-path=…` to count requests per identity.
    pub apiserver_args: Vec<String>,
}

/// A running management plane: etcd, kube-apiserver and kube-controller-manager on loopback,
/// with certificates generated for it and an admin kubeconfig.
///
/// Get the one shared by all tests of a test binary with [`crate::shared`]; [`Plane::start`]
/// starts a private one. Dropping a `Plane` stops its processes and removes its directories;
/// the shared plane lives in a static and is never dropped: its processes die with the test
/// process (`PR_SET_PDEATHSIG`) and its directories are removed by the session's janitor.
///
/// Every method that returns a `kube::Client` builds a fresh one for the calling tokio
/// runtime, so a plane can serve many `#[tokio::test]`s, each with its own runtime.
pub struct Plane {
    binaries: Binaries,
    dir: PathBuf,
    etcd_data_dir: PathBuf,
    etcd_url: String,
    api_port: u16,
    kcm_port: u16,
    kcm_args: Vec<String>,
    /// Serializes restarts of the controller manager.
    kcm_restart: tokio::sync::Mutex<()>,
    ca: CertKeyPem,
    sa_public_key_pem: String,
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
    startup: Duration,
    /// Stopped in reverse order on drop (KCM, apiserver, etcd).
    processes: Mutex<Vec<ManagedProcess>>,
    capi_crds: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane")
            .field("server", &self.server_url())
            .field("etcd", &self.etcd_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Runs `f` to completion on a fresh current-thread runtime in a new thread, so that nothing
/// it creates is bound to the caller's runtime (and so that it may be called from inside one).
pub(crate) fn block_on_isolated<T, F, Fut>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("building a tokio runtime".into()))?;
            rt.block_on(f())
        })
        .map_err(io_err(format!("starting thread {name}")))?
        .join()
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            Error::Other(format!("thread {name} panicked: {msg}"))
        })?
}

/// Like [`block_on_isolated`], awaited without blocking the caller's runtime.
pub(crate) async fn run_isolated<T, F, Fut>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(format!("{name}-waiter"))
        .spawn(move || {
            let _ = tx.send(block_on_isolated(&thread_name, f));
        })
        .map_err(io_err(format!("starting thread {name}")))?;
    rx.await.map_err(|_| Error::Other(format!("thread {name} vanished")))?
}

/// How long a process may take to become ready: `TESTENV_START_TIMEOUT` seconds, default 60.
pub(crate) fn start_timeout() -> Duration {
    std::env::var("TESTENV_START_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

pub(crate) enum WaitError {
    Died(String),
    Timeout,
}

/// Polls `check` until it returns true, the process exits, or `timeout` passes.
pub(crate) async fn wait_ready<F, Fut>(
    p: &mut ManagedProcess,
    timeout: Duration,
    mut check: F,
) -> std::result::Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.exited() {
            return Err(WaitError::Died(status.to_string()));
        }
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The error for a process that failed to become ready, with the tail of its log.
pub(crate) fn start_error(p: &ManagedProcess, dir: &Path, reason: String) -> Error {
    Error::Start {
        what: p.name.clone(),
        reason,
        log: p.log.clone(),
        tail: p.log_tail(40),
        dir: dir.to_path_buf(),
    }
}

/// GET `path` through `client`; true if the body is `ok`.
pub(crate) async fn probe_ok(client: &kube::Client, path: &str) -> bool {
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

pub(crate) async fn etcd_healthy(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&body).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// Files an apiserver needs, written into `dir`.
pub(crate) struct ApiServerFiles {
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) client_ca: PathBuf,
    pub(crate) sa_key: PathBuf,
    pub(crate) sa_pub: PathBuf,
    pub(crate) cert_dir: PathBuf,
}

/// Writes a file with mode 0600.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(io_err(format!("writing {}", path.display())))
}

impl ApiServerFiles {
    pub(crate) fn write(
        dir: &Path,
        serving: &CertKeyPem,
        client_ca_pem: &str,
        sa_key_pem: &str,
        sa_pub_pem: &str,
    ) -> Result<Self> {
        let f = ApiServerFiles {
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            client_ca: dir.join("client-ca.crt"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            cert_dir: dir.join("apiserver-cert-dir"),
        };
        write_private(&f.serving_cert, &serving.cert_pem)?;
        write_private(&f.serving_key, &serving.key_pem)?;
        write_private(&f.client_ca, client_ca_pem)?;
        write_private(&f.sa_key, sa_key_pem)?;
        write_private(&f.sa_pub, sa_pub_pem)?;
        std::fs::create_dir_all(&f.cert_dir).map_err(io_err(format!("creating {}", f.cert_dir.display())))?;
        Ok(f)
    }
}

/// The kube-apiserver command line (test-infra.md §2.5 plus the admission plugins real
/// clusters run).
pub(crate) fn apiserver_args(
    bind: IpAddr,
    port: u16,
    etcd_url: &str,
    etcd_prefix: &str,
    files: &ApiServerFiles,
) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-prefix={etcd_prefix}"),
        format!("--bind-address={bind}"),
        format!("--advertise-address={bind}"),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", p(&files.serving_cert)),
        format!("--tls-private-key-file={}", p(&files.serving_key)),
        format!("--client-ca-file={}", p(&files.client_ca)),
        format!("--cert-dir={}", p(&files.cert_dir)),
        "--authorization-mode=RBAC".into(),
        "--allow-privileged=true".into(),
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--service-account-issuer=https://{bind}:{port}/"),
        format!("--service-account-key-file={}", p(&files.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&files.sa_key)),
        // A loopback address cannot be a `kubernetes` Service endpoint: skip the reconciler
        // rather than log an error every few seconds.
        "--endpoint-reconciler-type=none".into(),
        // Less overhead on 2 cores (as kwokctl does); fairness is not what T1 tests look at.
        "--enable-priority-and-fairness=false".into(),
        "--profiling=false".into(),
    ]
}

/// Checks the apiserver's "Loaded N validating admission controller(s) ... in the following
/// order: ..." log line for `OwnerReferencesPermissionEnforcement` (skipped if the line is
/// missing, e.g. with another log format).
fn check_admission_plugins(log: &Path) -> std::result::Result<(), String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    match text.lines().find(|l| l.contains("validating admission controller(s)")) {
        Some(line) if !line.contains("OwnerReferencesPermissionEnforcement") => Err(format!(
            "OwnerReferencesPermissionEnforcement is not among the validating admission \
             plugins: {line}"
        )),
        _ => Ok(()),
    }
}

/// Where and how to start a kube-apiserver.
#[derive(Clone, Copy)]
pub(crate) struct ApiServerLaunch<'a> {
    pub(crate) name: &'a str,
    pub(crate) bin: &'a Path,
    pub(crate) bind: IpAddr,
    pub(crate) fixed_port: Option<u16>,
    pub(crate) dir: &'a Path,
    pub(crate) etcd_url: &'a str,
    pub(crate) etcd_prefix: &'a str,
    pub(crate) files: &'a ApiServerFiles,
    /// Appended to the command line (e.g. an audit policy).
    pub(crate) extra_args: &'a [String],
}

/// Starts a kube-apiserver and waits for `/readyz`, retrying on a port clash.
///
/// Returns the process, its port and the admin kubeconfig YAML (`admin_kubeconfig(port)`).
pub(crate) async fn start_apiserver<K>(
    launch: &ApiServerLaunch<'_>,
    admin_kubeconfig: K,
) -> Result<(ManagedProcess, u16, String)>
where
    K: Fn(u16) -> Result<String>,
{
    let ApiServerLaunch {
        name,
        bin,
        bind,
        fixed_port,
        dir,
        etcd_url,
        etcd_prefix,
        files,
        extra_args,
    } = *launch;
    let attempts = if fixed_port.is_some() { 1 } else { 3 };
    let mut last = None;
    for _ in 0..attempts {
        let port = match fixed_port {
            Some(p) => p,
            None => process::free_port(bind)?,
        };
        let kubeconfig = admin_kubeconfig(port)?;
        let client = kubeconfig::client_from_kubeconfig_yaml(&kubeconfig).await?;
        let mut args = apiserver_args(bind, port, etcd_url, etcd_prefix, files);
        args.extend(extra_args.iter().cloned());
        let log = dir.join(format!("{name}.log"));
        let mut p = ManagedProcess::spawn(name, bin, &args, &log)?;
        match wait_ready(&mut p, start_timeout(), || probe_ok(&client, "/readyz")).await {
            Ok(()) => {
                check_admission_plugins(&log).map_err(|reason| start_error(&p, dir, reason))?;
                return Ok((p, port, kubeconfig));
            }
            Err(WaitError::Died(status)) => {
                let clash = process::died_of_port_clash(&log);
                let err = start_error(&p, dir, format!("exited with {status}"));
                if !clash {
                    return Err(err);
                }
                last = Some(err);
            }
            Err(WaitError::Timeout) => {
                return Err(start_error(
                    &p,
                    dir,
                    format!("/readyz not ok after {:?}", start_timeout()),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Other(format!("{name}: no attempt made"))))
}

impl Plane {
    /// Starts a private plane from the binaries found by [`Binaries::discover`].
    ///
    /// Blocking (a few seconds); it may be called from inside a tokio runtime (the work runs on
    /// its own thread and runtime). Prefer [`crate::shared`], which starts one plane per test
    /// binary.
    pub fn start() -> Result<Plane> {
        let binaries = Binaries::discover().map_err(Error::Missing)?;
        Self::start_with(binaries)
    }

    /// Starts a private plane from the given binaries. Blocking, like [`Plane::start`].
    pub fn start_with(binaries: Binaries) -> Result<Plane> {
        Self::start_with_options(binaries, PlaneOptions::default())
    }

    /// Starts a private plane with options (e.g. extra kube-apiserver flags such as an audit
    /// policy). Blocking, like [`Plane::start`].
    pub fn start_with_options(binaries: Binaries, options: PlaneOptions) -> Result<Plane> {
        block_on_isolated("mk8s-testenv-start", move || start_plane(binaries, options))
    }

    /// Names and pids of the plane's processes (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`), e.g. to sample their memory and CPU in `/proc`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .lock()
            .map(|ps| ps.iter().map(|p| (p.name.clone(), p.pid())).collect())
            .unwrap_or_default()
    }

    /// A fresh admin (`system:masters`) client for the current tokio runtime.
    ///
    /// # Panics
    /// If the client cannot be built (it never talks to the server here).
    pub async fn client(&self) -> kube::Client {
        kubeconfig::client_from_kubeconfig_yaml(&self.kubeconfig_yaml)
            .await
            .expect("building an admin client for the mk8s-testenv plane")
    }

    /// The admin kubeconfig file (client certificate `CN=admin, O=system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The admin kubeconfig, as YAML.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml.clone()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The apiserver's port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The kube-controller-manager's secure port (`/healthz`).
    pub fn controller_manager_port(&self) -> u16 {
        self.kcm_port
    }

    /// etcd's client URL (`http://127.0.0.1:<port>`), shared by workload apiservers.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The plane's directory (certificates, logs, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The public key (PEM) that verifies the plane's service-account tokens.
    pub fn service_account_public_key_pem(&self) -> &str {
        &self.sa_public_key_pem
    }

    /// How long the plane took to start.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The binaries the plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The directory of the CAPI core CRDs (`*.yaml`).
    pub fn capi_crd_dir(&self) -> PathBuf {
        self.binaries.capi_crd_dir()
    }

    /// The log file of one of the plane's processes: `etcd`, `kube-apiserver` or
    /// `kube-controller-manager`.
    pub fn log_path(&self, process: &str) -> PathBuf {
        self.dir.join(format!("{process}.log"))
    }

    /// A kubeconfig (YAML) for `user` in `groups` (at most two), authenticating with a
    /// client certificate signed by the plane's CA.
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> Result<String> {
        let ca = SigningCa::from_pem(&self.ca.cert_pem, &self.ca.key_pem)?;
        let cert = ca.sign(&LeafSpec {
            common_name: user,
            organizations: groups,
            sans: &[],
            server: false,
            client: true,
        })?;
        Ok(kubeconfig::render(
            "mk8s-testenv",
            &self.server_url(),
            &self.ca.cert_pem,
            user,
            &Credentials::Cert(&cert),
        ))
    }

    /// A fresh client for `user` in `groups` (at most two; `system:authenticated` is added by
    /// the apiserver) with a client certificate signed by the plane's CA, for RBAC tests.
    ///
    /// # Panics
    /// If the certificate or client cannot be built (e.g. more than two groups).
    pub async fn client_for_user(&self, user: &str, groups: &[&str]) -> kube::Client {
        let yaml = self
            .kubeconfig_for_user(user, groups)
            .expect("building a user kubeconfig");
        kubeconfig::client_from_kubeconfig_yaml(&yaml)
            .await
            .expect("building a user client")
    }

    /// A kubeconfig (YAML) for a ServiceAccount, with a bound token (TokenRequest, 1 h),
    /// creating the ServiceAccount if needed — how the managers run in a real cluster.
    pub async fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> Result<String> {
        let client = self.client().await;
        let sas: Api<ServiceAccount> = Api::namespaced(client, namespace);
        if sas.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match sas.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let tr = k8s_openapi::api::authentication::v1::TokenRequest {
            spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let tr = sas.create_token_request(name, &PostParams::default(), &tr).await?;
        let token = tr.status.map(|s| s.token).unwrap_or_default();
        Ok(kubeconfig::render(
            "mk8s-testenv",
            &self.server_url(),
            &self.ca.cert_pem,
            &format!("system:serviceaccount:{namespace}:{name}"),
            &Credentials::Token(&token),
        ))
    }

    /// A fresh client authenticating as a ServiceAccount (see
    /// [`Plane::kubeconfig_for_service_account`]).
    pub async fn client_for_service_account(&self, namespace: &str, name: &str) -> Result<kube::Client> {
        let yaml = self.kubeconfig_for_service_account(namespace, name).await?;
        kubeconfig::client_from_kubeconfig_yaml(&yaml).await
    }

    /// Server-side applies CRDs (field manager [`FIELD_MANAGER`], forced) and waits until each
    /// is `Established`.
    ///
    /// When this creates a CRD that did not exist, the controller manager is restarted (see
    /// [`Plane::restart_controller_manager`]) so that its garbage collector knows the new
    /// resources at once: otherwise it discovers them only on its next periodic resync, and
    /// dependents of a deleted custom resource are collected after ~30–45 s instead of < 1 s.
    pub async fn apply_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        let created = apply_crds(&self.client().await, crds).await?;
        if created {
            self.restart_controller_manager().await?;
        }
        Ok(())
    }

    /// Restarts kube-controller-manager (same flags and port) and waits for its `/healthz`.
    ///
    /// Its garbage collector discovers resources at start and then only every 30 s; a restart
    /// makes it watch CRDs installed since. [`Plane::apply_crds`] calls this when needed.
    pub async fn restart_controller_manager(&self) -> Result<()> {
        let _serial = self.kcm_restart.lock().await;
        let log = self.log_path("kube-controller-manager");
        {
            let mut procs = self
                .processes
                .lock()
                .map_err(|_| Error::Other("plane process list poisoned".into()))?;
            if let Some(i) = procs.iter().position(|p| p.name == "kube-controller-manager") {
                let mut old = procs.remove(i);
                old.stop();
            }
            // Keep the previous log next to the new one.
            let _ = std::fs::rename(&log, self.dir.join("kube-controller-manager.previous.log"));
            let p = ManagedProcess::spawn(
                "kube-controller-manager",
                &self.binaries.kube_controller_manager,
                &self.kcm_args,
                &log,
            )?;
            procs.push(p);
        }
        let probe = kubeconfig::client_from_kubeconfig_yaml(&kubeconfig::render(
            "kcm",
            &format!("https://127.0.0.1:{}", self.kcm_port),
            &self.ca.cert_pem,
            "anonymous",
            &Credentials::None,
        ))
        .await?;
        let deadline = Instant::now() + start_timeout();
        loop {
            if probe_ok(&probe, "/healthz").await {
                return Ok(());
            }
            let died = self.processes.lock().ok().and_then(|mut procs| {
                procs
                    .iter_mut()
                    .find(|p| p.name == "kube-controller-manager")
                    .and_then(ManagedProcess::exited)
            });
            if died.is_some() || Instant::now() >= deadline {
                return Err(Error::Start {
                    what: "kube-controller-manager (restart)".into(),
                    reason: died.map_or_else(
                        || format!("/healthz not ok after {:?}", start_timeout()),
                        |s| format!("exited with {s}"),
                    ),
                    tail: process::log_tail(&log, 40),
                    log,
                    dir: self.dir.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Reads CRDs from YAML files (multi-document allowed) and applies them like
    /// [`Plane::apply_crds`].
    pub async fn apply_crd_files(&self, paths: &[PathBuf]) -> Result<()> {
        let mut crds = Vec::new();
        for path in paths {
            crds.extend(read_crd_file(path)?);
        }
        self.apply_crds(&crds).await
    }

    /// Installs all CAPI core CRDs from the cache. Idempotent and cheap after the first call:
    /// the CRDs are applied once per plane, whichever test asks first.
    pub async fn install_capi_crds(&self) -> Result<()> {
        self.capi_crds
            .get_or_try_init(|| async {
                let files = self
                    .binaries
                    .capi_crd_files()
                    .map_err(io_err(format!("listing {}", self.capi_crd_dir().display())))?;
                self.apply_crd_files(&files).await
            })
            .await
            .map(|_| ())
    }

    /// Creates a namespace named `<prefix>-<random suffix>` (the apiserver's `generateName`)
    /// and returns its name. `prefix` is lower-cased and cut to a valid name.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}-", sanitize_name(prefix))),
                labels: Some([("mk8s-testenv/test".to_string(), sanitize_label(prefix))].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        created
            .metadata
            .name
            .ok_or_else(|| Error::Other("created namespace has no name".into()))
    }

    /// Starts a workload kube-apiserver whose serving certificate is signed by the given CA
    /// and which trusts client certificates signed by it; blocking (a few seconds).
    ///
    /// The CA key may be RSA (PKCS#1 or PKCS#8) or ECDSA (SEC1 or PKCS#8) PEM. The server
    /// shares the plane's etcd under its own `--etcd-prefix` and listens on `127.0.0.1`.
    pub fn start_workload_apiserver(&self, ca_cert_pem: &str, ca_key_pem: &str) -> Result<WorkloadApiServer> {
        self.start_workload_apiserver_with(WorkloadApiServerOptions::new(ca_cert_pem, ca_key_pem))
    }

    /// [`Plane::start_workload_apiserver`] with options (address, port, extra SANs); blocking.
    pub fn start_workload_apiserver_with(&self, options: WorkloadApiServerOptions) -> Result<WorkloadApiServer> {
        let ctx = self.workload_context();
        block_on_isolated("mk8s-testenv-workload", move || crate::workload::start(ctx, options))
    }

    /// [`Plane::start_workload_apiserver_with`] without blocking the caller's runtime.
    pub async fn start_workload_apiserver_async(&self, options: WorkloadApiServerOptions) -> Result<WorkloadApiServer> {
        let ctx = self.workload_context();
        run_isolated("mk8s-testenv-workload", move || crate::workload::start(ctx, options)).await
    }

    fn workload_context(&self) -> crate::workload::Context {
        crate::workload::Context {
            apiserver: self.binaries.kube_apiserver.clone(),
            etcd_url: self.etcd_url.clone(),
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Ok(mut procs) = self.processes.lock() {
            while let Some(mut p) = procs.pop() {
                p.stop();
            }
        }
        process::remove_dir(&self.dir);
        process::remove_dir(&self.etcd_data_dir);
    }
}

fn sanitize_name(prefix: &str) -> String {
    let mut s: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(40);
    let s = s.trim_matches('-');
    if s.is_empty() {
        "test".to_string()
    } else {
        s.to_string()
    }
}

fn sanitize_label(prefix: &str) -> String {
    let mut s: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// Parses the CRDs of a YAML file (several documents allowed; empty ones skipped).
pub fn read_crd_file(path: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
    parse_crds(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Parses the CRDs of a YAML text (several documents allowed; empty ones skipped).
pub fn parse_crds(text: &str) -> std::result::Result<Vec<CustomResourceDefinition>, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| serde_json::from_value(d).map_err(|e| format!("not a CRD: {e}")))
        .collect()
}

/// Applies the CRDs (concurrently) and waits until they are Established; true if any of them
/// was new.
async fn apply_crds(client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<bool> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = futures::future::try_join_all(crds.iter().map(|crd| apply_crd(&api, crd))).await?;
    Ok(created.into_iter().any(|c| c))
}

async fn apply_crd(api: &Api<CustomResourceDefinition>, crd: &CustomResourceDefinition) -> Result<bool> {
    const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
    let name = crd
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Other("a CRD without metadata.name".into()))?;
    let is_new = api.get_opt(&name).await?.is_none();
    let mut body = crd.clone();
    body.metadata.managed_fields = None;
    body.metadata.resource_version = None;
    body.metadata.uid = None;
    body.metadata.creation_timestamp = None;
    body.status = None;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&body)).await?;
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        let crd = api.get(&name).await?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(is_new);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(
                ESTABLISH_TIMEOUT,
                format!("CRD {name} to be Established"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The kube-controller-manager command line: garbage collection, namespace deletion and
/// service accounts (controller names as `kube-controller-manager --help` lists them).
fn kcm_args(dir: &Path, kubeconfig: &Path, sa_key: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--controllers=garbage-collector-controller,namespace-controller,\
         serviceaccount-token-controller,serviceaccount-controller"
            .into(),
        format!("--service-account-private-key-file={}", sa_key.display()),
        format!("--root-ca-file={}", dir.join("ca.crt").display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", dir.join("kcm.crt").display()),
        format!("--tls-private-key-file={}", dir.join("kcm.key").display()),
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
        "--kube-api-qps=100".into(),
        "--kube-api-burst=200".into(),
        "--profiling=false".into(),
    ]
}

async fn start_plane(binaries: Binaries, options: PlaneOptions) -> Result<Plane> {
    let t0 = Instant::now();
    let session = session()?;
    let id = session.next_id();
    let dir = session.new_dir(&format!("plane-{id}"))?;
    let data = session.new_shm_dir(&format!("plane-{id}-etcd"))?;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut processes = Vec::new();
    let fail = |e: Error, procs: &mut Vec<ManagedProcess>| {
        while let Some(mut p) = procs.pop() {
            p.stop();
        }
        let _ = std::io::stderr().write_all(
            format!(
                "mk8s-testenv: the plane failed to start; its files are in {} \
                 (set TESTENV_KEEP=1 to keep them after the tests)\n",
                dir.display()
            )
            .as_bytes(),
        );
        e
    };

    // etcd first: it needs no certificate, and starts while we generate them.
    let spawn_etcd = || -> Result<(ManagedProcess, u16)> {
        let client_port = process::free_port(lo)?;
        let peer_port = process::free_port(lo)?;
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
        let c = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={c}"),
            format!("--advertise-client-urls={c}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            "--initial-cluster-state=new".into(),
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=4294967296".into(),
            "--log-level=warn".into(),
        ];
        let p = ManagedProcess::spawn("etcd", &binaries.etcd, &args, &dir.join("etcd.log"))?;
        Ok((p, client_port))
    };
    let (mut etcd, mut etcd_port) = spawn_etcd()?;

    // Certificates, while etcd starts.
    let certs = (|| -> Result<_> {
        let (signer, ca) = certs::new_signing_ca("mk8s-testenv-ca")?;
        let serving = signer.sign(&LeafSpec {
            common_name: "kube-apiserver",
            organizations: &[],
            sans: &["127.0.0.1".into(), "localhost".into()],
            server: true,
            client: false,
        })?;
        let admin = signer.sign(&LeafSpec {
            common_name: "admin",
            organizations: &["system:masters"],
            sans: &[],
            server: false,
            client: true,
        })?;
        // The controller manager acts with cluster-admin rights under its own name.
        let kcm_client = signer.sign(&LeafSpec {
            common_name: "system:kube-controller-manager",
            organizations: &["system:masters"],
            sans: &[],
            server: false,
            client: true,
        })?;
        let kcm_serving = signer.sign(&LeafSpec {
            common_name: "kube-controller-manager",
            organizations: &[],
            sans: &["127.0.0.1".into(), "localhost".into()],
            server: true,
            client: false,
        })?;
        let (sa_key, sa_pub) = certs::service_account_key()?;
        Ok((ca, serving, admin, kcm_client, kcm_serving, sa_key, sa_pub))
    })();
    let (ca, serving, admin, kcm_client, kcm_serving, sa_key, sa_pub) = match certs {
        Ok(c) => c,
        Err(e) => {
            processes.push(etcd);
            return Err(fail(e, &mut processes));
        }
    };
    write_private(&dir.join("ca.crt"), &ca.cert_pem)?;
    write_private(&dir.join("ca.key"), &ca.key_pem)?;
    let files = ApiServerFiles::write(&dir, &serving, &ca.cert_pem, &sa_key, &sa_pub)?;

    let mut attempt = 1;
    loop {
        match wait_ready(&mut etcd, start_timeout(), || etcd_healthy(etcd_port)).await {
            Ok(()) => break,
            // Another process took a port between our probe and etcd's bind: new ports.
            Err(WaitError::Died(_)) if attempt < 3 && process::died_of_port_clash(&dir.join("etcd.log")) => {
                attempt += 1;
                (etcd, etcd_port) = spawn_etcd()?;
            }
            Err(e) => {
                let reason = match e {
                    WaitError::Died(s) => format!("exited with {s}"),
                    WaitError::Timeout => format!("/health not true after {:?}", start_timeout()),
                };
                let err = start_error(&etcd, &dir, reason);
                processes.push(etcd);
                return Err(fail(err, &mut processes));
            }
        }
    }
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    processes.push(etcd);
    let t_etcd = t0.elapsed();

    let ca_pem = ca.cert_pem.clone();
    let admin_kc = |port: u16| {
        Ok(kubeconfig::render(
            "mk8s-testenv",
            &format!("https://127.0.0.1:{port}"),
            &ca_pem,
            "admin",
            &Credentials::Cert(&admin),
        ))
    };
    let (apiserver, api_port, kubeconfig_yaml) = match start_apiserver(
        &ApiServerLaunch {
            name: "kube-apiserver",
            bin: &binaries.kube_apiserver,
            bind: lo,
            fixed_port: None,
            dir: &dir,
            etcd_url: &etcd_url,
            etcd_prefix: "/registry-mgmt",
            files: &files,
            extra_args: &options.apiserver_args,
        },
        admin_kc,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return Err(fail(e, &mut processes)),
    };
    processes.push(apiserver);
    let t_api = t0.elapsed();
    let kubeconfig_path = dir.join("admin.kubeconfig");
    write_private(&kubeconfig_path, &kubeconfig_yaml)?;

    // kube-controller-manager: garbage collection, namespace deletion, service accounts.
    let kcm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
    write_private(
        &kcm_kubeconfig,
        &kubeconfig::render(
            "mk8s-testenv",
            &format!("https://127.0.0.1:{api_port}"),
            &ca.cert_pem,
            "system:kube-controller-manager",
            &Credentials::Cert(&kcm_client),
        ),
    )?;
    write_private(&dir.join("kcm.crt"), &kcm_serving.cert_pem)?;
    write_private(&dir.join("kcm.key"), &kcm_serving.key_pem)?;
    let mut kcm_result = None;
    for _ in 0..3 {
        let kcm_port = process::free_port(lo)?;
        let args = kcm_args(&dir, &kcm_kubeconfig, &files.sa_key, kcm_port);
        let log = dir.join("kube-controller-manager.log");
        let mut kcm = match ManagedProcess::spawn(
            "kube-controller-manager",
            &binaries.kube_controller_manager,
            &args,
            &log,
        ) {
            Ok(p) => p,
            Err(e) => return Err(fail(e, &mut processes)),
        };
        let probe_yaml = kubeconfig::render(
            "kcm",
            &format!("https://127.0.0.1:{kcm_port}"),
            &ca.cert_pem,
            "anonymous",
            &Credentials::None,
        );
        let probe = kubeconfig::client_from_kubeconfig_yaml(&probe_yaml).await?;
        match wait_ready(&mut kcm, start_timeout(), || probe_ok(&probe, "/healthz")).await {
            Ok(()) => {
                kcm_result = Some((kcm, kcm_port, args));
                break;
            }
            Err(WaitError::Died(_)) if process::died_of_port_clash(&log) => {}
            Err(e) => {
                let reason = match e {
                    WaitError::Died(s) => format!("exited with {s}"),
                    WaitError::Timeout => format!("/healthz not ok after {:?}", start_timeout()),
                };
                let err = start_error(&kcm, &dir, reason);
                processes.push(kcm);
                return Err(fail(err, &mut processes));
            }
        }
    }
    let Some((kcm, kcm_port, kcm_args)) = kcm_result else {
        return Err(fail(
            Error::Other("kube-controller-manager: port clash three times".into()),
            &mut processes,
        ));
    };
    processes.push(kcm);
    let startup = t0.elapsed();

    let _ = std::io::stderr().write_all(
        format!(
            "mk8s-testenv: plane started in {:.2}s (etcd ready at {:.2}s, kube-apiserver at \
             {:.2}s, kube-controller-manager at {:.2}s): {} (files in {})\n",
            startup.as_secs_f64(),
            t_etcd.as_secs_f64(),
            t_api.as_secs_f64(),
            startup.as_secs_f64(),
            format_args!("https://127.0.0.1:{api_port}"),
            dir.display()
        )
        .as_bytes(),
    );

    Ok(Plane {
        binaries,
        dir,
        etcd_data_dir: data,
        etcd_url,
        api_port,
        kcm_port,
        kcm_args,
        kcm_restart: tokio::sync::Mutex::new(()),
        ca,
        sa_public_key_pem: sa_pub,
        kubeconfig_path,
        kubeconfig_yaml,
        startup,
        processes: Mutex::new(processes),
        capi_crds: tokio::sync::OnceCell::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("My_Test::gc"), "my-test--gc");
        assert_eq!(sanitize_name("---"), "test");
        assert_eq!(sanitize_name(&"a".repeat(80)).len(), 40);
        assert_eq!(sanitize_label("tests::gc"), "tests__gc");
    }

    #[test]
    fn parses_multi_document_crds() {
        let text = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                    metadata:\n  name: foos.example.com\nspec:\n  group: example.com\n  names:\n    \
                    kind: Foo\n    plural: foos\n  scope: Namespaced\n  versions: []\n---\n";
        let crds = parse_crds(text).unwrap();
        assert_eq!(crds.len(), 1);
        assert_eq!(crds[0].metadata.name.as_deref(), Some("foos.example.com"));
    }
}
