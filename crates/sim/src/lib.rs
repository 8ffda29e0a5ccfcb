//! `mk8s-sim`: a Cluster API **infrastructure provider** that simulates MicroK8s machines
//! honestly enough that the bootstrap and control plane providers can be tested end to end
//! without VMs: it *executes* the cloud-config the bootstrap provider renders, so a wrong
//! token, channel, CA, port or join address makes a test fail.
//!
//! (Documentation of the whole contract: see the sections below and the module docs of
//! [`api`], [`snapd`], [`agent`], [`control`], [`stub`], [`kubelet`], [`node`],
//! [`workload`].)
//!
//! # Objects (`infrastructure.cluster.x-k8s.io/v1alpha1`)
//!
//! CRD label `cluster.x-k8s.io/v1beta2: v1alpha1` (v1beta2 contract),
//! `cluster.x-k8s.io/provider: infrastructure-sim`; manifests in `config/sim/crd/` (generated
//! by [`crds`], a test keeps them current).
//!
//! * `SimCluster` — `spec.controlPlaneEndpoint{host,port}` (set by the simulator: a free
//!   loopback address `127.x.y.z` and port 6443, or the flag's), `spec.failureDomains[]`;
//!   `status.initialization.provisioned`, `status.ready`, `status.failureDomains` (v1beta2
//!   list), `status.conditions` (`Ready`, `Paused`, `APIServerAvailable`, `DqliteQuorum`),
//!   `status.apiServer`, `status.dqlite{members, liveMembers, quorum, quorumLostCount,
//!   history}` (last 64 events), `status.nodes`.
//! * `SimMachine` — `spec.providerID` (`sim://<namespace>/<name>`, set when the "VM" is up),
//!   `spec.bootDelaySeconds`, `spec.installDelaySeconds`; `status.initialization.provisioned`,
//!   `status.ready`, `status.addresses` (`InternalIP` = its own `127.a.b.c`, `Hostname`),
//!   `status.failureDomain` (the Machine's), `status.conditions` (`Ready`, `Paused`,
//!   `BootstrapSucceeded`: false with the tail of the runcmd log when a step fails),
//!   `status.node{phase, hostname, role, channel, agentPort, dqliteAddress, failedStep,
//!   logPath, root}`.
//! * `SimClusterTemplate`, `SimMachineTemplate` — `spec.template.{metadata,spec}`.
//!
//! Both honour pausing (`Cluster.spec.paused`, the `cluster.x-k8s.io/paused` annotation) and
//! carry finalizers: deleting a SimMachine stops its node; deleting a SimCluster stops the
//! cluster's nodes and its API server (no process is left).
//!
//! # A machine's life
//!
//! 1. The SimMachine waits for its owner Machine (read as `cluster.x-k8s.io/v1beta2` where
//!    served), the Cluster's infrastructure, and `Machine.spec.bootstrap.dataSecretName`.
//! 2. After the boot delay the "VM" comes up: a tree `<state>/machines/<ns>/<name>/root`,
//!    a private mount + PID + UTS namespace (host name = the SimMachine's name) in which the
//!    tree's directories are bind-mounted over `/var/snap`, `/capi-scripts`, `/capi`,
//!    `/var/tmp`, `/run`, `/etc/systemd/system`, `/var/lib/cloud`, its own loopback address,
//!    its stub snapd at `/run/snapd.socket` and the simulator's socket at
//!    `/run/mk8s-sim/sim.sock`. providerID, addresses and `provisioned` are reported now,
//!    before bootstrap finishes, as a cloud would.
//! 3. cloud-init: the user-data is rendered (Jinja subset) and checked as cloud-init would
//!    ([`cloudconfig`]); `bootcmd` runs, `write_files` are written into the tree, and
//!    `runcmd` becomes a `/bin/sh` script (cloud-init's `shellify`) run in the namespace with
//!    the stub commands first in `PATH`. The production paths are used (no `CAPI_ROOT`).
//!    Output goes to `<state>/machines/<ns>/<name>/cloud-init-output.log`
//!    (`status.node.logPath`).
//! 4. Success is the sentinel `/run/cluster-api/bootstrap-success.complete`; a failure
//!    (`/run/capi-microk8s/failed-step`, or no sentinel) turns `BootstrapSucceeded` and
//!    `Ready` false with the log tail.
//!
//! # MicroK8s, as simulated
//!
//! * `snap install microk8s --channel=C [--classic]` (through the node's snapd, taking the
//!   install delay) validates the channel like snapd (risk, track existence, classic needs
//!   `--classic`) and writes the MicroK8s tree the scripts edit. The node's stub cluster
//!   agent starts on `<ip>:25000` (the port of `--bind` in `args/cluster-agent`, re-read on
//!   `snap restart microk8s.daemon-cluster-agent`: 30000 after the remap step).
//! * `hostname` is not a stub: each node has its own UTS namespace, whose host name is the
//!   SimMachine's name, so the scripts' `hostname` (and anything else) sees it.
//! * `microk8s refresh-certs /var/tmp` on the first node checks `ca.crt`/`ca.key` and starts
//!   the cluster's **one** workload kube-apiserver on the endpoint, serving with a
//!   certificate signed by that CA (SANs: endpoint IP, 127.0.0.1, localhost) and that CA as
//!   `--client-ca-file`; the node becomes the first dqlite member. The apiserver belongs to
//!   the cluster, not the machine: it survives the deletion of any machine.
//! * `microk8s add-node --token T --token-ttl N` registers T on *that node's* agent only.
//!   `microk8s join ADDR:PORT/T [--worker]` calls `https://ADDR:PORT/cluster/api/v2.0/join`
//!   from the node's own address; a wrong address, port or token fails the join (exit 1,
//!   message on stderr, `JoinRefused` in the history). Control plane joiners become dqlite
//!   members (`<ip>:<dqlite port>`, 19001, or 2379 after the remap step), workers do not.
//! * Each node in the cluster registers its Node: name = lower-case host name, InternalIP,
//!   `kubeletVersion` `v<track>.<--kubelet-patch>`, labels from `args/kubelet`
//!   (`node.kubernetes.io/microk8s-controlplane` or `…-worker`, plus `extraKubeletArgs`'
//!   `--node-labels`), Ready, no providerID. `microk8s kubectl` runs the real kubectl
//!   against the cluster's API server, so `label node …` really lands.
//! * The kubelet runs pods bound to simulated nodes ([`kubelet`]); the agent serves the dqlite
//!   removal with the `capi-auth-token` check ([`agent`]); snapd serves in-place refreshes
//!   ([`snapd`]).
//! * Membership events (`Init`, `Joined`, `WorkerJoined`, `Removed`, `AddressChanged`,
//!   `MemberStopped`, `QuorumLost`, `QuorumRestored`, `JoinRefused`, `SecondInit`) are kept
//!   per cluster with timestamps and the member/live counts after each event. A machine
//!   deleted while a member stays a member (only a dqlite removal takes it out), so deleting
//!   members before removing them shows up as `MemberStopped`/`QuorumLost`. Tests read
//!   [`SimHandle::cluster`] (full history), `SimCluster.status.dqlite` (bounded) or the debug
//!   endpoint `GET /debug/clusters/<namespace>/<cluster>`.
//!
//! # Memory per simulated cluster (measured, 2 cores, kube-apiserver v1.36.3, etcd v3.6.16)
//!
//! Three clusters of one bootstrapped init node each, RSS 10 s after the last bootstrap:
//!
//! | what | RSS |
//! |---|---|
//! | workload kube-apiserver (idle, one node) | 257–267 MiB per cluster |
//! | own etcd per cluster (`EtcdMode::PerCluster`, `--etcd-per-cluster`) | + 42 MiB per cluster |
//! | shared etcd (`EtcdMode::Shared`, `--etcd-prefix` per cluster; the default) | 39 MiB after the first cluster, + ≈ 7 MiB per further cluster |
//! | a node: its namespace's PID 1 (`sh`) | ≈ 1.7 MiB (+ `unshare` and `sleep`, ≈ 1 MiB each) |
//!
//! So a simulated cluster costs ≈ 270 MiB with the shared etcd (the default: 6× less etcd
//! memory per cluster, and the prefix isolates clusters well enough for tests) and ≈ 305 MiB
//! with its own etcd; the apiserver dominates, so about 50 clusters fit in 16 GiB. An init
//! node bootstraps in ≈ 4.5–5 s with zero delays (≈ 3.5 s of it starting the apiserver), a
//! joining node in ≈ 1 s. `tests/t1_sim.rs`'s `memory_per_cluster` (`--ignored
//! --nocapture`) prints these numbers. A "light mode" for 1000-cluster benchmarks would
//! implement [`workload::WorkloadBackend`] with one shared apiserver for many clusters (or
//! none).
//!
//! # Library API
//!
//! [`run`] (or [`run_with_client`]) starts the controllers and returns a [`SimHandle`]:
//! snapshots of clusters and nodes, workload clients, process ids, and a graceful
//! [`SimHandle::shutdown`]. The binary `mk8s-sim` is the same with flags; it is also the stub
//! command (dispatching on `argv[0]`), so in-process users set [`Config::stub_binary`] to the
//! built `mk8s-sim`.
//! [`SimHandle::serve`] adds another management cluster served by the same simulator, so
//! that `clusterctl move` carries a cluster between them with its machines running
//! ([`planes`]).

pub mod agent;
pub mod alloc;
pub mod api;
pub mod cloudconfig;
pub mod cluster;
pub mod config;
pub mod control;
pub mod controller;
pub mod httpx;
pub mod kubelet;
pub mod light;
pub mod node;
pub mod planes;
pub mod snap;
pub mod snapd;
pub mod state;
pub mod stub;
pub mod tls;
pub mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use mk8s_api::capi::CoreVersion;

pub use api::{SimCluster, SimClusterTemplate, SimMachine, SimMachineTemplate};
pub use config::{Config, EtcdMode};
pub use state::{ClusterSnapshot, Key, NodeSnapshot};

use crate::state::{Sim, lock};

/// Every CRD of the simulator with the file name it is committed under (`config/sim/crd/`).
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("infrastructure.cluster.x-k8s.io_simclusters.yaml", SimCluster::crd()),
        (
            "infrastructure.cluster.x-k8s.io_simclustertemplates.yaml",
            SimClusterTemplate::crd(),
        ),
        ("infrastructure.cluster.x-k8s.io_simmachines.yaml", SimMachine::crd()),
        (
            "infrastructure.cluster.x-k8s.io_simmachinetemplates.yaml",
            SimMachineTemplate::crd(),
        ),
    ]
}

/// A CRD as the YAML committed under `config/sim/crd/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, String> {
    serde_saphyr::to_string(crd).map_err(|e| e.to_string())
}

/// The committed CRD manifests: `(path relative to the repository root, content)`. Written
/// by `mk8s-sim crds [ROOT]`; a test fails when the committed copies differ.
pub fn crd_files() -> Result<Vec<(String, String)>, String> {
    let header = "# Generated by `mk8s-sim crds` (crates/sim) from the Rust types. Do not edit.\n";
    crds()
        .iter()
        .map(|(name, crd)| Ok((format!("config/sim/crd/{name}"), format!("{header}{}", crd_yaml(crd)?))))
        .collect()
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A running simulator.
pub struct SimHandle {
    sim: Arc<Sim>,
    backend: Arc<workload::ProcessBackend>,
    light: Option<Arc<light::LightBackend>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    debug_address: Option<SocketAddr>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("state_dir", &self.sim.cfg.state_dir)
            .field("debug_address", &self.debug_address)
            .finish_non_exhaustive()
    }
}

/// Starts the simulator with a client from `KUBECONFIG` (or in-cluster config).
pub async fn run(config: Config) -> Result<SimHandle, Error> {
    let client = kube::Client::try_default().await?;
    run_with_client(config, client).await
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

/// The running executable when it is `mk8s-sim`, else an `mk8s-sim` next to it or one
/// directory up (a test binary in `target/<profile>/deps`).
fn find_stub_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("locating the running executable: {e}")))?;
    if exe.file_name().is_some_and(|n| n == "mk8s-sim") {
        return Ok(exe);
    }
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    [dir.join("mk8s-sim"), dir.join("../mk8s-sim")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Other(format!(
                "no mk8s-sim binary next to {}: set Config::stub_binary (the stub commands of the nodes are mk8s-sim)",
                exe.display()
            ))
        })
}

async fn core_version(client: &kube::Client) -> CoreVersion {
    match kube::discovery::group(client, mk8s_api::capi::GROUP).await {
        Ok(g) => CoreVersion::pick(g.versions()).unwrap_or(CoreVersion::V1Beta2),
        Err(e) => {
            tracing::warn!("cannot discover {}: {e}; assuming v1beta2", mk8s_api::capi::GROUP);
            CoreVersion::V1Beta2
        }
    }
}

/// Starts the simulator's controllers against the management cluster of `client`.
pub async fn run_with_client(config: Config, client: kube::Client) -> Result<SimHandle, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    node::ensure_mountpoints().map_err(Error::Other)?;
    for d in state::BOUND_DIRS {
        if config.state_dir.starts_with(d) {
            return Err(Error::Other(format!(
                "the state directory {} must not be under {d}, which nodes mount over",
                config.state_dir.display()
            )));
        }
    }
    static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let sock_dir = std::env::temp_dir().join(format!(
        "mk8s-sim-s{}.{}",
        std::process::id(),
        INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&sock_dir);
    std::fs::create_dir_all(&sock_dir).map_err(|e| Error::Other(format!("{}: {e}", sock_dir.display())))?;
    let stub_dir = config.state_dir.join("bin");
    std::fs::create_dir_all(&stub_dir).map_err(|e| Error::Other(format!("{}: {e}", stub_dir.display())))?;
    let stub_binary = match &config.stub_binary {
        Some(p) => p.clone(),
        None => find_stub_binary()?,
    };
    for name in stub::STUBS {
        let link = stub_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&stub_binary, &link)
            .map_err(|e| Error::Other(format!("{}: {e}", link.display())))?;
    }
    let binaries = || mk8s_testenv::Binaries::discover().map_err(|e| Error::Other(e.to_string()));
    let (apiserver, etcd) = match (&config.kube_apiserver, &config.etcd) {
        (Some(a), Some(e)) => (a.clone(), e.clone()),
        (a, e) => {
            let b = binaries()?;
            (a.clone().unwrap_or(b.kube_apiserver), e.clone().unwrap_or(b.etcd))
        }
    };
    let light = config.light.then(|| {
        Arc::new(light::LightBackend::new(
            apiserver.clone(),
            etcd.clone(),
            config.etcd_mode.clone(),
        ))
    });
    let backend = Arc::new(workload::ProcessBackend::new(apiserver, etcd, config.etcd_mode.clone()));
    let kubectl = config.kubectl.clone().or_else(|| find_in_path("kubectl"));
    let core = core_version(&client).await;
    let tls_client = tls::insecure_client().map_err(Error::Other)?;
    let alloc = alloc::Allocator::new(
        config.address_octets.0,
        config.address_octets.1,
        vec![
            mk8s_api::consts::CLUSTER_AGENT_PORT_DEFAULT,
            mk8s_api::consts::CLUSTER_AGENT_PORT_REMAPPED,
            config.endpoint_port,
        ],
    );
    let sim = Arc::new(Sim {
        cfg: config.clone(),
        stub_dir,
        kubectl,
        mgmt: client.clone(),
        core,
        plane: 0,
        alloc: Arc::new(std::sync::Mutex::new(alloc)),
        clusters: Default::default(),
        nodes: Default::default(),
        backend: match &light {
            Some(l) => l.clone() as Arc<dyn workload::WorkloadBackend>,
            None => backend.clone(),
        },
        tls_client,
        triggers: Default::default(),
        change_ids: Default::default(),
        node_ids: Default::default(),
        sock_dir,
        capi: Default::default(),
    });
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (cluster_rx, machine_rx) = planes::new_triggers(&sim.triggers, 0);
    let mut tasks = planes::start_controllers(&sim, cluster_rx, machine_rx, shutdown.subscribe());
    let debug_address = match config.debug_address {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Other(format!("debug address {addr}: {e}")))?;
            let local = listener.local_addr().ok();
            let router = debug_router(sim.clone());
            let stop = stopped();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, router).with_graceful_shutdown(stop).await;
            }));
            local
        }
        None => None,
    };
    tracing::info!(state_dir = %config.state_dir.display(), core = core.as_str(), "mk8s-sim started");
    Ok(SimHandle {
        sim,
        backend,
        light,
        shutdown,
        tasks,
        debug_address,
    })
}

fn debug_router(sim: Arc<Sim>) -> axum::Router {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/debug/clusters",
            get(|State(sim): State<Arc<Sim>>| async move {
                let clusters: Vec<_> = lock(&sim.clusters).values().cloned().collect();
                axum::Json(clusters.iter().map(|c| sim.cluster_snapshot(c)).collect::<Vec<_>>())
            }),
        )
        .route(
            "/debug/clusters/{ns}/{name}",
            get(
                |State(sim): State<Arc<Sim>>, UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                    match sim.cluster(&Key::new(&ns, &name)) {
                        Some(c) => axum::Json(serde_json::json!(sim.cluster_snapshot(&c))),
                        None => axum::Json(serde_json::Value::Null),
                    }
                },
            ),
        )
        .route(
            "/debug/nodes",
            get(|State(sim): State<Arc<Sim>>| async move {
                let nodes: Vec<_> = lock(&sim.nodes).values().cloned().collect();
                axum::Json(nodes.iter().map(|n| n.snapshot()).collect::<Vec<_>>())
            }),
        )
        .with_state(sim)
}

impl SimHandle {
    /// A snapshot of the simulated cluster behind CAPI Cluster `namespace/name`.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<ClusterSnapshot> {
        self.sim
            .cluster(&Key::new(namespace, name))
            .map(|c| self.sim.cluster_snapshot(&c))
    }

    /// Snapshots of every simulated cluster.
    pub fn clusters(&self) -> Vec<ClusterSnapshot> {
        let clusters: Vec<_> = lock(&self.sim.clusters).values().cloned().collect();
        clusters.iter().map(|c| self.sim.cluster_snapshot(c)).collect()
    }

    /// A snapshot of the node of SimMachine `namespace/name`.
    pub fn node(&self, namespace: &str, name: &str) -> Option<NodeSnapshot> {
        self.sim.node(&Key::new(namespace, name)).map(|n| n.snapshot())
    }

    /// The admin kubeconfig of a cluster's workload API server, once it runs.
    pub async fn admin_kubeconfig(&self, namespace: &str, cluster: &str) -> Option<String> {
        let c = self.sim.cluster(&Key::new(namespace, cluster))?;
        cluster::admin_kubeconfig(&c).await
    }

    /// An admin client of a cluster's workload API server (for the caller's runtime).
    pub async fn workload_client(&self, namespace: &str, cluster: &str) -> Option<kube::Client> {
        let yaml = self.admin_kubeconfig(namespace, cluster).await?;
        mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.ok()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.sim.cfg.state_dir
    }

    /// The debug endpoint's address, if enabled.
    pub fn debug_address(&self) -> Option<SocketAddr> {
        self.debug_address
    }

    /// Process ids of what the simulator runs: workload apiservers (and their own etcds),
    /// the shared etcd it started, the namespace holders of the nodes.
    pub fn process_ids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = lock(&self.sim.clusters)
            .values()
            .flat_map(|c| lock(&c.st).api_pids.clone())
            .collect();
        pids.extend(self.backend.shared_etcd_pid());
        pids.extend(self.light.iter().flat_map(|l| l.pids()));
        pids.extend(lock(&self.sim.nodes).values().filter_map(|n| lock(&n.st).ns_pid));
        pids
    }

    /// Light mode: the processes of the shared workload apiserver (and of the etcd it
    /// started), once the first cluster's API server started; empty in the normal mode.
    pub fn light_pids(&self) -> Vec<u32> {
        self.light.as_ref().map(|l| l.pids()).unwrap_or_default()
    }

    /// The pid of the shared etcd the simulator started (`EtcdMode::Shared(None)`), once
    /// the first cluster's API server started.
    pub fn shared_etcd_pid(&self) -> Option<u32> {
        self.backend.shared_etcd_pid()
    }

    /// Stops the controllers, every node and every workload API server.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
        let keys: Vec<Key> = lock(&self.sim.clusters).keys().cloned().collect();
        for k in keys {
            cluster::delete_cluster(&self.sim, &k).await;
        }
        let nodes: Vec<Key> = lock(&self.sim.nodes).keys().cloned().collect();
        for k in nodes {
            cluster::stop_node(&self.sim, &k).await;
        }
        self.backend.stop().await;
        if let Some(l) = &self.light {
            l.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.sim.sock_dir);
        tracing::info!("mk8s-sim stopped");
    }
}
