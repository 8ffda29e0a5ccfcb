//! Workload kube-apiservers: a second apiserver per simulated cluster, serving with a
//! certificate signed by that cluster's CA.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Result;
use crate::certs::{self, LeafSpec, SigningCa};
use crate::kubeconfig::{self, Credentials};
use crate::plane::{ApiServerFiles, ApiServerLaunch, start_apiserver};
use crate::process::{self, ManagedProcess, session};

/// What [`crate::Plane::start_workload_apiserver_with`] needs from the plane.
pub(crate) struct Context {
    pub(crate) apiserver: PathBuf,
    pub(crate) etcd_url: String,
}

/// Options of a workload apiserver.
#[derive(Clone)]
pub struct WorkloadApiServerOptions {
    /// The cluster CA certificate (PEM): signs the serving certificate and is the
    /// `--client-ca-file`.
    pub ca_cert_pem: String,
    /// The cluster CA key (PEM): RSA PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8, or ECDSA SEC1
    /// (`EC PRIVATE KEY`) or PKCS#8.
    pub ca_key_pem: String,
    /// Address to listen on; any `127.0.0.0/8` address works on Linux. Default `127.0.0.1`.
    pub bind_address: IpAddr,
    /// Port; default a free one.
    pub port: Option<u16>,
    /// SANs added to `127.0.0.1`, `localhost` and the bind address.
    pub extra_sans: Vec<String>,
}

impl std::fmt::Debug for WorkloadApiServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApiServerOptions")
            .field("bind_address", &self.bind_address)
            .field("port", &self.port)
            .field("extra_sans", &self.extra_sans)
            .finish_non_exhaustive()
    }
}

impl WorkloadApiServerOptions {
    /// Defaults (127.0.0.1, a free port) for the given CA.
    pub fn new(ca_cert_pem: &str, ca_key_pem: &str) -> Self {
        Self {
            ca_cert_pem: ca_cert_pem.to_string(),
            ca_key_pem: ca_key_pem.to_string(),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            extra_sans: Vec::new(),
        }
    }
}

/// A running workload kube-apiserver. Dropping it kills its process (SIGKILL, then waits) and
/// removes its directory. Its objects stay in etcd under [`WorkloadApiServer::etcd_prefix`].
pub struct WorkloadApiServer {
    /// The port it listens on.
    pub port: u16,
    /// `https://<bind address>:<port>`.
    pub url: String,
    /// Its directory (certificates, log).
    pub dir: PathBuf,
    etcd_prefix: String,
    ca_cert_pem: String,
    ca_key_pem: String,
    startup: Duration,
    process: ManagedProcess,
}

impl std::fmt::Debug for WorkloadApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApiServer")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .field("etcd_prefix", &self.etcd_prefix)
            .finish_non_exhaustive()
    }
}

impl WorkloadApiServer {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://<bind address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its directory (certificates, `kube-apiserver.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.process.log
    }

    /// Its `--etcd-prefix` (unique per workload apiserver).
    pub fn etcd_prefix(&self) -> &str {
        &self.etcd_prefix
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How long it took to become ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The cluster CA certificate (PEM) it serves with and trusts.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// A kubeconfig (YAML) for `user` in `groups` (at most two) with a client certificate
    /// signed by the cluster CA.
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> Result<String> {
        let ca = SigningCa::from_pem(&self.ca_cert_pem, &self.ca_key_pem)?;
        let cert = ca.sign(&LeafSpec {
            common_name: user,
            organizations: groups,
            sans: &[],
            server: false,
            client: true,
        })?;
        Ok(kubeconfig::render(
            "workload",
            &self.url,
            &self.ca_cert_pem,
            user,
            &Credentials::Cert(&cert),
        ))
    }

    /// An admin kubeconfig (`CN=admin, O=system:masters`, signed by the cluster CA).
    pub fn admin_kubeconfig_yaml(&self) -> Result<String> {
        self.kubeconfig_for_user("admin", &["system:masters"])
    }

    /// A fresh admin client for the current tokio runtime.
    ///
    /// # Panics
    /// If the client cannot be built.
    pub async fn client(&self) -> kube::Client {
        let yaml = self
            .admin_kubeconfig_yaml()
            .expect("building a workload admin kubeconfig");
        kubeconfig::client_from_kubeconfig_yaml(&yaml)
            .await
            .expect("building a workload admin client")
    }

    /// A fresh client for `user` in `groups` (at most two), certificate signed by the
    /// cluster CA.
    pub async fn client_for_user(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        let yaml = self.kubeconfig_for_user(user, groups)?;
        kubeconfig::client_from_kubeconfig_yaml(&yaml).await
    }

    /// Stops it now (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.process.stop();
        process::remove_dir(&self.dir);
    }
}

/// Starts a workload kube-apiserver outside a [`crate::Plane`]: the `kube-apiserver` binary
/// at `apiserver`, storing under a fresh `--etcd-prefix` in the etcd at `etcd_url` (for
/// example an [`crate::EtcdServer`], or a plane's [`crate::Plane::etcd_url`]). Like
/// [`crate::Plane::start_workload_apiserver_async`], the work runs on its own thread and
/// runtime, so the returned value is not bound to the caller's runtime.
pub async fn start_workload_apiserver(
    apiserver: &Path,
    etcd_url: &str,
    options: WorkloadApiServerOptions,
) -> Result<WorkloadApiServer> {
    let ctx = Context {
        apiserver: apiserver.to_path_buf(),
        etcd_url: etcd_url.to_string(),
    };
    crate::plane::run_isolated("mk8s-testenv-workload", move || start(ctx, options)).await
}

pub(crate) async fn start(ctx: Context, o: WorkloadApiServerOptions) -> Result<WorkloadApiServer> {
    let t0 = Instant::now();
    let session = session()?;
    let id = session.next_id();
    let dir = session.new_dir(&format!("workload-{id}"))?;
    let result = start_in(&ctx, &o, &dir, id, t0).await;
    if result.is_err() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "mk8s-testenv: a workload apiserver failed to start; its files are in {}\n",
                dir.display()
            )
            .as_bytes(),
        );
    }
    result
}

async fn start_in(
    ctx: &Context,
    o: &WorkloadApiServerOptions,
    dir: &Path,
    id: u64,
    t0: Instant,
) -> Result<WorkloadApiServer> {
    let ca = SigningCa::from_pem(&o.ca_cert_pem, &o.ca_key_pem)?;
    let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    sans.push(o.bind_address.to_string());
    sans.extend(o.extra_sans.iter().cloned());
    sans.dedup();
    let serving = ca.sign(&LeafSpec {
        common_name: "kube-apiserver",
        organizations: &[],
        sans: &sans,
        server: true,
        client: false,
    })?;
    let admin = ca.sign(&LeafSpec {
        common_name: "admin",
        organizations: &["system:masters"],
        sans: &[],
        server: false,
        client: true,
    })?;
    let (sa_key, sa_pub) = certs::service_account_key()?;
    let files = ApiServerFiles::write(dir, &serving, &o.ca_cert_pem, &sa_key, &sa_pub)?;
    let pid = std::process::id();
    let etcd_prefix = format!("/registry-workload-{pid}-{id}");
    let bind = o.bind_address;
    let ca_pem = o.ca_cert_pem.clone();
    let (process, port, _) = start_apiserver(
        &ApiServerLaunch {
            name: "kube-apiserver",
            bin: &ctx.apiserver,
            bind,
            fixed_port: o.port,
            dir,
            etcd_url: &ctx.etcd_url,
            etcd_prefix: &etcd_prefix,
            files: &files,
            extra_args: &[],
        },
        |port| {
            Ok(kubeconfig::render(
                "workload",
                &format!("https://{}", std::net::SocketAddr::new(bind, port)),
                &ca_pem,
                "admin",
                &Credentials::Cert(&admin),
            ))
        },
    )
    .await?;
    Ok(WorkloadApiServer {
        port,
        url: format!("https://{}", std::net::SocketAddr::new(bind, port)),
        dir: dir.to_path_buf(),
        etcd_prefix,
        ca_cert_pem: o.ca_cert_pem.clone(),
        ca_key_pem: o.ca_key_pem.clone(),
        startup: t0.elapsed(),
        process,
    })
}

impl From<crate::certs::CertKeyPem> for WorkloadApiServerOptions {
    fn from(ca: crate::certs::CertKeyPem) -> Self {
        Self::new(&ca.cert_pem, &ca.key_pem)
    }
}
