//! What both managers share: flags, logging, API clients, leader election, probes and
//! metrics, per-object backoff, the Secret cache and graceful shutdown.
//!
//! A manager's `main` parses its flags, then calls [`run`] with a closure that starts its
//! controllers on the [`Runtime`] it is given.

pub mod backoff;
pub mod changed;
pub mod client;
pub mod flags;
pub mod leader;
pub mod metrics;
pub mod secret_cache;
pub mod server;
pub mod slim;
pub mod wakes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use mk8s_api::capi::CoreVersion;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use backoff::Backoff;
pub use flags::{Defaults, LogFormat, ManagerFlags};
pub use metrics::Metrics;
pub use server::Readiness;

/// Errors that stop a manager.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A flag value is invalid.
    #[error(transparent)]
    Flag(#[from] flags::BadAddress),
    /// The API client could not be built.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// A server could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica took the Lease: this process stops so that two never reconcile at once.
    #[error("lost leadership of Lease {0}; exiting so that only the new leader reconciles")]
    LostLeadership(String),
    /// A controller failed.
    #[error("controller failed: {0}")]
    Controller(String),
}

/// Everything a manager's controllers need.
#[derive(Clone)]
pub struct Runtime {
    /// Client of the management cluster (rate limited).
    pub client: Client,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM/SIGINT or lost leadership; controllers shut down gracefully.
    pub shutdown: CancellationToken,
    /// The flags.
    pub flags: ManagerFlags,
    /// The manager's name (logs, Events, field manager).
    pub name: &'static str,
    /// The served version of `cluster.x-k8s.io` we use.
    pub core_version: CoreVersion,
}

impl Runtime {
    /// An `Api` over the watched namespace (`--namespace`) or all namespaces.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        if self.flags.namespace.is_empty() {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), &self.flags.namespace)
        }
    }

    /// An `Api` over a dynamically typed kind, in the watched namespace or all namespaces.
    pub fn api_with<K>(&self, ar: &kube::core::ApiResource) -> Api<K>
    where
        K: Resource<DynamicType = kube::core::ApiResource, Scope = kube::core::DynamicResourceScope>,
    {
        if self.flags.namespace.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), &self.flags.namespace, ar)
        }
    }

    /// Watch configuration honouring `--watch-filter`.
    pub fn watcher_config(&self) -> watcher::Config {
        let cfg = watcher::Config::default().any_semantic();
        if self.flags.watch_filter.is_empty() {
            cfg
        } else {
            cfg.labels(&format!(
                "{}={}",
                mk8s_api::consts::LABEL_WATCH_FILTER,
                self.flags.watch_filter
            ))
        }
    }

    /// Whether an object passes `--watch-filter`.
    pub fn passes_watch_filter(&self, meta: &kube::core::ObjectMeta) -> bool {
        self.flags.watch_filter.is_empty()
            || meta
                .labels
                .as_ref()
                .and_then(|l| l.get(mk8s_api::consts::LABEL_WATCH_FILTER))
                .is_some_and(|v| *v == self.flags.watch_filter)
    }

    /// The Events reporter of this manager.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            controller: self.name.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        }
    }
}

/// Initialises logging from the flags (JSON by default).
pub fn init_tracing(flags: &ManagerFlags) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(flags.effective_log_filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // A second initialisation (e.g. in tests) is harmless: keep the first subscriber.
    let _ = match flags.effective_log_format() {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => info!("SIGTERM received, shutting down"),
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => info!("SIGINT received, shutting down"),
                Err(e) => { warn!(error = %e, "cannot listen for SIGINT"); std::future::pending::<()>().await }
            },
            _ = token.cancelled() => {}
        }
        token.cancel();
    });
}

async fn wait_for_core(client: &Client, shutdown: &CancellationToken) -> Result<Option<CoreVersion>, RuntimeError> {
    let mut delay = Duration::from_secs(1);
    loop {
        match client::detect_core_version(client).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "waiting for Cluster API core");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Runs a manager: logging, client, probes, metrics, CAPI version detection, leader election,
/// then `controllers`, until SIGTERM/SIGINT (graceful) or lost leadership (error).
pub async fn run<F, Fut>(flags: ManagerFlags, defaults: Defaults, controllers: F) -> Result<(), RuntimeError>
where
    F: FnOnce(Runtime) -> Fut,
    Fut: Future<Output = Result<(), RuntimeError>>,
{
    init_tracing(&flags);
    let metrics_addr = flags::parse_bind_address(
        flags
            .metrics_bind_address
            .as_deref()
            .unwrap_or(defaults.metrics_bind_address),
    )?;
    let probe_addr = flags::parse_bind_address(
        flags
            .health_probe_bind_address
            .as_deref()
            .unwrap_or(defaults.health_probe_bind_address),
    )?;

    let config = client::management_config(flags.kubeconfig.as_deref()).await?;
    // Leader election has a client of its own: renewals must not queue behind the
    // controllers' requests under the rate limit.
    let lease_client = Client::try_from(config.clone()).map_err(client::ClientError::Build)?;
    let client = client::rate_limited_client(
        config,
        client::RateLimit {
            qps: flags.kube_api_qps,
            burst: flags.kube_api_burst,
        },
    )?;

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let mut servers = vec![];
    if let Some(addr) = probe_addr {
        let (bound, h) = server::serve_probes(addr, readiness.clone(), shutdown.clone())
            .await
            .map_err(|source| RuntimeError::Bind { addr, source })?;
        info!(%bound, "serving /healthz and /readyz");
        servers.push(h);
    }
    if let Some(addr) = metrics_addr {
        let (bound, h) = server::serve_metrics(addr, metrics.clone(), shutdown.clone())
            .await
            .map_err(|source| RuntimeError::Bind { addr, source })?;
        info!(%bound, "serving /metrics");
        servers.push(h);
    }

    let Some(core_version) = wait_for_core(&client, &shutdown).await? else {
        return Ok(());
    };
    info!(version = core_version.as_str(), "using cluster.x-k8s.io");
    readiness.set_ready();

    let lost = Arc::new(AtomicBool::new(false));
    // Cancelled when leadership is lost: the controllers are then dropped at once rather than
    // drained, so no reconcile still in flight writes after a successor may have started.
    let lost_now = CancellationToken::new();
    let lease_name = flags
        .leader_election_id
        .clone()
        .unwrap_or_else(|| defaults.leader_election_id.to_string());
    let mut lease_guard = None;
    if flags.leader_elect {
        let ns = flags
            .leader_election_namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        // The pod's name in a cluster; elsewhere a name unique per process *and* per run, so
        // that two managers never share an identity (and so the Lease).
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                use rand::RngExt;
                let suffix: String = rand::rng()
                    .sample_iter(&rand::distr::Alphanumeric)
                    .take(6)
                    .map(char::from)
                    .collect();
                format!("{}-{}-{}", defaults.name, std::process::id(), suffix.to_lowercase())
            });
        let duration = flags.leader_election_lease_duration.max(2);
        // Renew a third of the duration after each renewal (two thirds before expiry), so the
        // renew deadline (`grace / 2` before expiry: two thirds of the duration after the last
        // renewal, controller-runtime's 10 s of 15) leaves room for a slow or failed attempt
        // and its retry. Renewing a third before expiry left 2.5 s of 15: under a busy API
        // server a single slow renewal made the leader step down.
        let grace = (duration * 2 / 3).clamp(1, duration - 1);
        let manager = LeaseManagerBuilder::new(lease_client.clone(), &lease_name)
            .with_namespace(&ns)
            .with_identity(&identity)
            .with_duration(duration)
            .with_grace(grace)
            .with_field_manager(format!("{}-lease", defaults.name))
            .build()
            .await?;
        let (mut rx, handle) = manager.watch().await;
        info!(lease = %lease_name, namespace = %ns, %identity, "waiting to become leader");
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(RuntimeError::LostLeadership(lease_name));
                },
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        info!(lease = %lease_name, "became leader");
        let token = shutdown.clone();
        let lost_flag = lost.clone();
        let lost_signal = lost_now.clone();
        let mut watch_rx = rx.clone();
        let terms = leader::LeaseTerms {
            namespace: ns.clone(),
            name: lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        };
        let guard = leader::guard(lease_client.clone(), terms, std::time::SystemTime::now(), token.clone());
        tokio::spawn(async move {
            // The lease manager reports a loss it has seen; the guard one it cannot see (no
            // renewal before the deadline) and a takeover seen first by the watch.
            let lost_it = async {
                loop {
                    if watch_rx.changed().await.is_err() || !*watch_rx.borrow() {
                        error!("lost the leader election Lease");
                        return;
                    }
                }
            };
            tokio::select! {
                () = lost_it => {}
                ended = guard => if ended == leader::Ended::Shutdown {
                    return;
                },
                _ = token.cancelled() => return,
            }
            lost_flag.store(true, Ordering::SeqCst);
            lost_signal.cancel();
            token.cancel();
        });
        lease_guard = Some((rx, handle));
    }

    let rt = Runtime {
        client,
        metrics,
        shutdown: shutdown.clone(),
        flags,
        name: defaults.name,
        core_version,
    };
    // A graceful shutdown (SIGTERM) lets in-flight reconciles finish; a lost Lease does not:
    // the successor may lead already, and a reconcile halfway through (an infrastructure clone
    // made, its Machine not yet created) would write beside it. Dropping the controllers
    // cancels their reconciles at their next await.
    let result = tokio::select! {
        r = controllers(rt) => r,
        () = lost_now.cancelled() => {
            error!(lease = %lease_name, "stopping the controllers at once: reconciles in flight are abandoned");
            Ok(())
        }
    };
    shutdown.cancel();
    for h in servers {
        let _ = h.await;
    }
    if let Some((rx, handle)) = lease_guard {
        // Closing the channel makes the lease task release the Lease.
        drop(rx);
        match tokio::time::timeout(Duration::from_secs(5), handle).await {
            Ok(Ok(Ok(_))) => info!(lease = %lease_name, "released the Lease"),
            Ok(Ok(Err(e))) => warn!(error = %e, "releasing the Lease"),
            _ => warn!("the Lease task did not stop in time"),
        }
    }
    if lost.load(Ordering::SeqCst) {
        return Err(RuntimeError::LostLeadership(lease_name));
    }
    result
}
