//! The simulator's settings ([`Config`]), shared by the binary's flags and the library API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the workload apiservers keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdMode {
    /// One etcd for every simulated cluster, each apiserver under its own `--etcd-prefix`:
    /// the etcd at this URL (e.g. a test plane's), or, with `None`, one the simulator starts.
    Shared(Option<String>),
    /// One etcd per simulated cluster, started with its apiserver.
    PerCluster,
}

/// Settings of a simulator instance. [`Config::new`] gives the defaults of the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// Only reconcile objects in this namespace (default: all namespaces).
    pub namespace: Option<String>,
    /// Directory of the machines' trees, logs and sockets.
    pub state_dir: PathBuf,
    /// Default delay between a machine's bootstrap data being available and its "VM" being
    /// up (`SimMachine.spec.bootDelaySeconds` overrides it).
    pub boot_delay: Duration,
    /// Default duration of a snap install or refresh
    /// (`SimMachine.spec.installDelaySeconds` overrides it).
    pub install_delay: Duration,
    /// Patch number of the Kubernetes version a node reports (`v<track>.<patch>`).
    pub kubelet_patch: u32,
    /// The Kubernetes minor the snap's `latest` track carries (`1.<minor>`).
    pub latest_minor: u32,
    /// Factor applied to the `sleep`s of the node scripts (`0.02` turns the scripts' 5 s
    /// retry pauses into 100 ms). Simulated time; `1.0` is real time.
    pub sleep_scale: f64,
    /// How long the simulated kubelet lets a pod run before failing it.
    pub pod_timeout: Duration,
    /// Default port of the clusters' control plane endpoints.
    pub endpoint_port: u16,
    /// The binary the stub commands (`snap`, `microk8s`, …) are symlinks to: `mk8s-sim`.
    /// Default: the running executable.
    pub stub_binary: Option<PathBuf>,
    /// The real `kubectl` behind `microk8s kubectl` (default: found in `PATH`).
    pub kubectl: Option<PathBuf>,
    /// The `kube-apiserver` binary (default: `mk8s_testenv::Binaries::discover`).
    pub kube_apiserver: Option<PathBuf>,
    /// The `etcd` binary (default: `mk8s_testenv::Binaries::discover`).
    pub etcd: Option<PathBuf>,
    /// How workload apiservers store their data.
    pub etcd_mode: EtcdMode,
    /// Keep the machines' trees after their deletion (for debugging).
    pub keep_trees: bool,
    /// Address of the debug/health HTTP endpoint (`/healthz`, `/debug/clusters`, …).
    pub debug_address: Option<SocketAddr>,
    /// Second octets of the loopback addresses to allocate (`127.<lo..=hi>.x.y`).
    pub address_octets: (u8, u8),
    /// How many objects of each kind are reconciled at once.
    pub concurrency: u16,
    /// Light mode: one shared apiserver for every cluster, behind a proxy per cluster
    /// ([`crate::light`]), for benchmarks with many clusters. Default: off (one real
    /// apiserver per cluster).
    pub light: bool,
}

impl Config {
    /// The defaults: state under `/tmp/mk8s-sim-<pid>`, no delays, real-time sleeps,
    /// Kubernetes patch 99, a shared etcd started by the simulator.
    pub fn new() -> Config {
        Config {
            namespace: None,
            state_dir: std::env::temp_dir().join(format!("mk8s-sim-{}", std::process::id())),
            boot_delay: Duration::ZERO,
            install_delay: Duration::ZERO,
            kubelet_patch: 99,
            latest_minor: 36,
            sleep_scale: 1.0,
            pod_timeout: Duration::from_secs(120),
            endpoint_port: 6443,
            stub_binary: None,
            kubectl: None,
            kube_apiserver: None,
            etcd: None,
            etcd_mode: EtcdMode::Shared(None),
            keep_trees: false,
            debug_address: None,
            address_octets: (100, 199),
            concurrency: 16,
            light: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}
