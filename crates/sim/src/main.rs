//! `mk8s-sim`: the MicroK8s machine simulator (a CAPI infrastructure provider), and — when
//! called as `snap`, `microk8s`, `systemctl`, `iptables`, `curl` or `sleep` — the stub
//! commands of the simulated nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mk8s_sim::{Config, EtcdMode};

/// The MicroK8s machine simulator: a Cluster API infrastructure provider
/// (infrastructure.cluster.x-k8s.io/v1alpha1 SimCluster, SimMachine) that executes the
/// bootstrap cloud-config against simulated MicroK8s nodes.
#[derive(Parser, Debug)]
#[command(name = "mk8s-sim", version)]
struct Args {
    /// Kubeconfig of the management cluster (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Only reconcile objects in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Directory of the machines' trees, logs and sockets (default /tmp/mk8s-sim-<pid>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Default delay before a machine is up, in seconds (SimMachine spec.bootDelaySeconds overrides).
    #[arg(long, default_value_t = 0.0)]
    boot_delay: f64,
    /// Default duration of a snap install or refresh, in seconds (spec.installDelaySeconds overrides).
    #[arg(long, default_value_t = 0.0)]
    install_delay: f64,
    /// Patch number of the Kubernetes version nodes report (v<track>.<patch>).
    #[arg(long, default_value_t = 99)]
    kubelet_patch: u32,
    /// Factor applied to the node scripts' sleeps (simulated time; 1 = real time).
    #[arg(long, default_value_t = 1.0)]
    sleep_scale: f64,
    /// Seconds the simulated kubelet lets a pod run before failing it.
    #[arg(long, default_value_t = 120)]
    pod_timeout: u64,
    /// Default port of the clusters' control plane endpoints.
    #[arg(long, default_value_t = 6443)]
    endpoint_port: u16,
    /// Give each workload apiserver its own etcd instead of one shared etcd.
    #[arg(long)]
    etcd_per_cluster: bool,
    /// Use this etcd (URL) for the workload apiservers instead of starting one.
    #[arg(long)]
    etcd_url: Option<String>,
    /// The kube-apiserver binary (default: the test environment's).
    #[arg(long)]
    kube_apiserver: Option<PathBuf>,
    /// The etcd binary (default: the test environment's).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// The kubectl behind `microk8s kubectl` (default: from PATH).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Keep machines' trees after their deletion.
    #[arg(long)]
    keep_trees: bool,
    /// Address of the health and debug endpoint (/healthz, /readyz, /debug/clusters, /debug/nodes).
    #[arg(long, alias = "metrics-bind-address", alias = "health-addr")]
    debug_address: Option<SocketAddr>,
    /// Objects of each kind reconciled at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if mk8s_sim::stub::STUBS.contains(&name.as_str()) {
        return mk8s_sim::stub::run(&name, &argv[1..]);
    }
    if argv.get(1).map(String::as_str) == Some("stub") && argv.len() >= 3 {
        return mk8s_sim::stub::run(&argv[2], &argv[3..]);
    }
    if argv.get(1).map(String::as_str) == Some("crds") {
        return write_crds(&argv[2..]);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mk8s-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(daemon(args))
}

/// `mk8s-sim crds [--check] [ROOT]`: writes (or checks) `config/sim/crd/*.yaml` under ROOT.
fn write_crds(args: &[String]) -> ExitCode {
    let check = args.iter().any(|a| a == "--check");
    let root = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let files = match mk8s_sim::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mk8s-sim crds: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = vec![];
    for (rel, content) in files {
        let path = root.join(&rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            stale.push(rel);
            continue;
        }
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, content));
        if let Err(e) = written {
            eprintln!("mk8s-sim crds: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {rel}");
    }
    if !stale.is_empty() {
        eprintln!("mk8s-sim crds: out of date (run `mk8s-sim crds`): {}", stale.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn daemon(args: Args) -> ExitCode {
    let mut config = Config::new();
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    config.namespace = args.namespace;
    config.boot_delay = Duration::from_secs_f64(args.boot_delay.max(0.0));
    config.install_delay = Duration::from_secs_f64(args.install_delay.max(0.0));
    config.kubelet_patch = args.kubelet_patch;
    config.sleep_scale = args.sleep_scale.max(0.0);
    config.pod_timeout = Duration::from_secs(args.pod_timeout);
    config.endpoint_port = args.endpoint_port;
    config.etcd_mode = if args.etcd_per_cluster {
        EtcdMode::PerCluster
    } else {
        EtcdMode::Shared(args.etcd_url)
    };
    config.kube_apiserver = args.kube_apiserver;
    config.etcd = args.etcd;
    config.kubectl = args.kubectl;
    config.keep_trees = args.keep_trees;
    config.debug_address = args.debug_address;
    config.concurrency = args.concurrency;
    let client = match &args.kubeconfig {
        Some(path) => match kube::config::Kubeconfig::read_from(path) {
            Ok(kc) => match kube::Config::from_custom_kubeconfig(kc, &Default::default()).await {
                Ok(c) => kube::Client::try_from(c).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        },
        None => kube::Client::try_default().await.map_err(|e| e.to_string()),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mk8s-sim: cannot build a client for the management cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match mk8s_sim::run_with_client(config, client).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mk8s-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mk8s-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}
