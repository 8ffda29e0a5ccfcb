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
    /// A workload kubeconfig asks for something other than inline credentials.
    #[error("the workload cluster's kubeconfig may only carry inline credentials and certificates: {0}")]
    NotInline(String),
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

/// What in a workload kubeconfig would make this manager run a program or read its own
/// files: the Secret is writable by more people than the manager's service account (whose
/// token a `tokenFile` pointing at it would send to the kubeconfig's server).
fn not_inline(kc: &Kubeconfig) -> Vec<String> {
    let mut found = vec![];
    for a in &kc.auth_infos {
        let Some(i) = &a.auth_info else { continue };
        let user = &a.name;
        let fields = [
            ("exec", i.exec.is_some()),
            ("auth-provider", i.auth_provider.is_some()),
            ("tokenFile", i.token_file.is_some()),
            ("client-certificate", i.client_certificate.is_some()),
            ("client-key", i.client_key.is_some()),
        ];
        found.extend(
            fields
                .iter()
                .filter(|(_, set)| *set)
                .map(|(f, _)| format!("user {user}: {f}")),
        );
    }
    for c in &kc.clusters {
        if c.cluster.as_ref().is_some_and(|c| c.certificate_authority.is_some()) {
            found.push(format!("cluster {}: certificate-authority", c.name));
        }
    }
    found
}

/// A client for a workload cluster from its kubeconfig (the `<cluster>-kubeconfig` Secret).
/// Only inline credentials are accepted (see [`not_inline`]).
pub async fn workload_client(kubeconfig_yaml: &str, timeouts: WorkloadTimeouts) -> Result<Client, ClientError> {
    let kc = Kubeconfig::from_yaml(kubeconfig_yaml)?;
    let refused = not_inline(&kc);
    if !refused.is_empty() {
        return Err(ClientError::NotInline(refused.join(", ")));
    }
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
    fn workload_kubeconfigs_carry_inline_credentials_only() {
        let kc = |user: &str, cluster: &str| {
            Kubeconfig::from_yaml(&format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n{cluster}users:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ))
            .unwrap()
        };
        let inline = kc(
            "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\n    token: t\n",
            "    certificate-authority-data: Y2E=\n",
        );
        assert!(not_inline(&inline).is_empty());
        let files = kc(
            "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n    client-key: /etc/key\n",
            "    certificate-authority: /etc/ca.crt\n",
        );
        assert_eq!(
            not_inline(&files),
            [
                "user u: tokenFile",
                "user u: client-key",
                "cluster c: certificate-authority"
            ]
        );
        let exec = kc(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      interactiveMode: Never\n",
            "",
        );
        assert_eq!(not_inline(&exec), ["user u: exec"]);
    }

    #[test]
    fn window_matches_qps() {
        let l = RateLimit { qps: 100.0, burst: 200 };
        assert_eq!(l.window(), Duration::from_secs(2));
        let l = RateLimit { qps: 0.0, burst: 5 };
        assert_eq!(l.window(), Duration::from_secs(5));
    }
}
