//! The workload API server of a simulated cluster, behind a small trait so that a "light
//! mode" (one shared apiserver for many clusters, or none) can be added for benchmarks
//! without touching the rest of the simulator.
//!
//! [`ProcessBackend`] runs one real `kube-apiserver` per cluster (through
//! `mk8s_testenv::start_workload_apiserver`), serving on the cluster endpoint with a
//! certificate signed by the cluster CA and that CA as `--client-ca-file`, storing in a
//! shared etcd under its own `--etcd-prefix` or in an etcd of its own.

use std::future::Future;
use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use mk8s_testenv::{EtcdServer, WorkloadApiServer, WorkloadApiServerOptions};

use crate::config::EtcdMode;

/// A boxed future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a simulated cluster's API server must offer.
pub trait WorkloadApi: Send + Sync {
    /// `https://<endpoint>:<port>`.
    fn url(&self) -> &str;
    /// An admin kubeconfig (client certificate signed by the cluster CA).
    fn admin_kubeconfig(&self) -> Result<String, String>;
    /// The processes behind it (for memory accounting).
    fn pids(&self) -> Vec<u32>;
}

/// Starts workload API servers.
pub trait WorkloadBackend: Send + Sync {
    /// Starts the API server of a cluster on `endpoint`, serving with a certificate signed by
    /// the CA (`ca_cert`, `ca_key` PEM) and trusting client certificates it signed.
    fn start<'a>(
        &'a self,
        endpoint: SocketAddrV4,
        ca_cert: &'a str,
        ca_key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn WorkloadApi>, String>>;
}

/// One real kube-apiserver per cluster.
pub struct ProcessBackend {
    kube_apiserver: PathBuf,
    etcd_bin: PathBuf,
    mode: EtcdMode,
    shared: tokio::sync::Mutex<Option<Arc<SharedEtcd>>>,
    shared_pid: std::sync::Mutex<Option<u32>>,
}

enum SharedEtcd {
    External(String),
    Own(EtcdServer),
}

impl SharedEtcd {
    fn url(&self) -> &str {
        match self {
            SharedEtcd::External(u) => u,
            SharedEtcd::Own(e) => e.url(),
        }
    }
}

impl ProcessBackend {
    /// A backend running `kube_apiserver` (and `etcd_bin` when it starts etcds itself).
    pub fn new(kube_apiserver: PathBuf, etcd_bin: PathBuf, mode: EtcdMode) -> ProcessBackend {
        ProcessBackend {
            kube_apiserver,
            etcd_bin,
            mode,
            shared: tokio::sync::Mutex::new(None),
            shared_pid: std::sync::Mutex::new(None),
        }
    }

    /// The pid of the shared etcd the simulator started, if any.
    pub fn shared_etcd_pid(&self) -> Option<u32> {
        *self
            .shared_pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the shared etcd the simulator started (after every apiserver).
    pub async fn stop(&self) {
        let etcd = self.shared.lock().await.take();
        *self
            .shared_pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        if let Some(etcd) = etcd {
            let _ = tokio::task::spawn_blocking(move || drop(etcd)).await;
        }
    }

    async fn shared_url(&self, external: Option<&str>) -> Result<String, String> {
        let mut shared = self.shared.lock().await;
        if let Some(s) = shared.as_ref() {
            return Ok(s.url().to_string());
        }
        let etcd = match external {
            Some(url) => SharedEtcd::External(url.to_string()),
            None => {
                let e = EtcdServer::start(&self.etcd_bin)
                    .await
                    .map_err(|e| format!("starting the shared etcd: {e}"))?;
                *self
                    .shared_pid
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.pid());
                SharedEtcd::Own(e)
            }
        };
        let url = etcd.url().to_string();
        *shared = Some(Arc::new(etcd));
        Ok(url)
    }
}

/// Fields drop in declaration order: the apiserver first, then its own etcd.
struct ProcessApi {
    server: WorkloadApiServer,
    /// An etcd of its own (per-cluster mode).
    etcd: Option<EtcdServer>,
}

impl WorkloadApi for ProcessApi {
    fn url(&self) -> &str {
        self.server.url()
    }

    fn admin_kubeconfig(&self) -> Result<String, String> {
        self.server.admin_kubeconfig_yaml().map_err(|e| e.to_string())
    }

    fn pids(&self) -> Vec<u32> {
        let mut p = vec![self.server.pid()];
        p.extend(self.etcd.as_ref().map(EtcdServer::pid));
        p
    }
}

impl WorkloadBackend for ProcessBackend {
    fn start<'a>(
        &'a self,
        endpoint: SocketAddrV4,
        ca_cert: &'a str,
        ca_key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn WorkloadApi>, String>> {
        Box::pin(async move {
            let (url, etcd) = match &self.mode {
                EtcdMode::Shared(external) => (self.shared_url(external.as_deref()).await?, None),
                EtcdMode::PerCluster => {
                    let e = EtcdServer::start(&self.etcd_bin)
                        .await
                        .map_err(|e| format!("starting the cluster's etcd: {e}"))?;
                    (e.url().to_string(), Some(e))
                }
            };
            let mut options = WorkloadApiServerOptions::new(ca_cert, ca_key);
            options.bind_address = IpAddr::V4(*endpoint.ip());
            options.port = Some(endpoint.port());
            let server = mk8s_testenv::start_workload_apiserver(&self.kube_apiserver, &url, options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(ProcessApi { server, etcd }) as Box<dyn WorkloadApi>)
        })
    }
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
