//! Building API clients: the management cluster (with a client-side rate limit, which kube
//! lacks) and workload clusters (with request timeouts, so an unreachable cluster never hangs
//! a reconcile).

use std::path::Path;
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use mk8s_api::capi::{CoreVersion, GROUP};
use tower::limit::RateLimitLayer;

/// Errors building clients or discovering APIs.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// No configuration could be inferred.
    #[error("cannot find a Kubernetes configuration (in-cluster or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("building the API client: {0}")]
    Build(#[source] kube::Error),
    /// API discovery failed.
    #[error("API discovery: {0}")]
    Discovery(#[source] kube::Error),
    /// CAPI core is not installed.
    #[error("Cluster API core is not installed: group {GROUP} serves none of v1beta2, v1beta1 (served: {0})")]
    NoCapi(String),
}

/// Rate limit of a client: sustained requests per second and burst.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub qps: f64,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateLimit {
    /// The window in which `burst` requests may be sent so that the average is `qps`.
    pub fn window(&self) -> Duration {
        let qps = if self.qps.is_finite() && self.qps > 0.0 {
            self.qps
        } else {
            1.0
        };
        Duration::from_secs_f64(f64::from(self.burst.max(1)) / qps)
    }
}

/// The management cluster's configuration, from a kubeconfig path or inferred.
pub async fn management_config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)?;
            Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
        }
        None => Ok(Config::infer().await?),
    }
}

/// A client with a fixed-window rate limit of `burst` requests per `burst/qps` seconds.
pub fn rate_limited_client(config: Config, limit: RateLimit) -> Result<Client, ClientError> {
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Build)?;
    let layer = RateLimitLayer::new(u64::from(limit.burst.max(1)), limit.window());
    Ok(builder.with_layer(&layer).build())
}

/// Timeouts of workload cluster clients.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadTimeouts {
    /// TCP/TLS connect timeout.
    pub connect: Duration,
    /// Response timeout (watches use their own server-side timeout below this).
    pub read: Duration,
}

impl Default for WorkloadTimeouts {
    fn default() -> Self {
        WorkloadTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(330),
        }
    }
}

/// A client for a workload cluster from its kubeconfig (the `<cluster>-kubeconfig` Secret).
pub async fn workload_client(kubeconfig_yaml: &str, timeouts: WorkloadTimeouts) -> Result<Client, ClientError> {
    let kc = Kubeconfig::from_yaml(kubeconfig_yaml)?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    config.write_timeout = Some(timeouts.connect);
    Client::try_from(config).map_err(ClientError::Build)
}

/// The version of `cluster.x-k8s.io` to use: v1beta2 where served, else v1beta1.
pub async fn detect_core_version(client: &Client) -> Result<CoreVersion, ClientError> {
    let group = kube::discovery::oneshot::group(client, GROUP)
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 404 => ClientError::NoCapi("nothing".into()),
            e => ClientError::Discovery(e),
        })?;
    let served: Vec<&str> = group.versions().collect();
    CoreVersion::pick(served.iter().copied()).ok_or_else(|| ClientError::NoCapi(served.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_matches_qps() {
        let l = RateLimit { qps: 100.0, burst: 200 };
        assert_eq!(l.window(), Duration::from_secs(2));
        let l = RateLimit { qps: 0.0, burst: 5 };
        assert_eq!(l.window(), Duration::from_secs(5));
    }
}
