//! Command-line flags both managers share, compatible with Canonical's managers (which take
//! controller-runtime's flags).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines expect).
    Json,
    /// Human-readable text.
    Text,
}

/// Flags of every manager.
#[derive(Args, Debug, Clone)]
pub struct ManagerFlags {
    /// Address of the Prometheus `/metrics` endpoint, e.g. `:8080` (all interfaces) or
    /// `127.0.0.1:8080`; `0` disables it. Default: 8080 for the bootstrap manager, 8082 for
    /// the control plane manager (as Canonical's).
    #[arg(long = "metrics-bind-address", value_name = "ADDR")]
    pub metrics_bind_address: Option<String>,

    /// Address of the `/healthz` and `/readyz` probes; `0` disables them. Default: 8081 for the
    /// bootstrap manager, 8083 for the control plane manager (as Canonical's).
    #[arg(long = "health-probe-bind-address", value_name = "ADDR")]
    pub health_probe_bind_address: Option<String>,

    /// Elect a leader among replicas with a Lease, so that only one reconciles.
    #[arg(long = "leader-elect", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", value_name = "BOOL")]
    pub leader_elect: bool,

    /// Name of the leader election Lease. The defaults differ from Canonical's lease names on
    /// purpose: delete Canonical's managers before starting ours (README, "Moving from
    /// Canonical's providers").
    #[arg(long = "leader-election-id", value_name = "NAME")]
    pub leader_election_id: Option<String>,

    /// Namespace of the leader election Lease. Default: the pod's namespace (`POD_NAMESPACE`),
    /// else `default`.
    #[arg(long = "leader-election-namespace", env = "POD_NAMESPACE", value_name = "NS")]
    pub leader_election_namespace: Option<String>,

    /// Lease duration in seconds: how long a dead leader blocks a standby from taking over.
    #[arg(
        long = "leader-election-lease-duration",
        default_value_t = 15,
        value_name = "SECONDS"
    )]
    pub leader_election_lease_duration: u64,

    /// Reconcile objects of this namespace only. Empty: all namespaces.
    #[arg(long = "namespace", default_value = "", value_name = "NS")]
    pub namespace: String,

    /// Reconcile only objects labelled `cluster.x-k8s.io/watch-filter=<value>` (with the same
    /// label on their Cluster). Empty: no filter.
    #[arg(long = "watch-filter", default_value = "", value_name = "VALUE")]
    pub watch_filter: String,

    /// How many objects are reconciled at once.
    #[arg(long = "concurrency", default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Maximum sustained requests per second to the management cluster's API server.
    #[arg(long = "kube-api-qps", default_value_t = 100.0, value_name = "QPS")]
    pub kube_api_qps: f64,

    /// Maximum burst of requests to the management cluster's API server.
    #[arg(long = "kube-api-burst", default_value_t = 200, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,

    /// Kubeconfig of the management cluster (one file). Default: `$KUBECONFIG`, else
    /// `~/.kube/config`, else the in-cluster configuration.
    #[arg(long = "kubeconfig", env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Log format.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,mk8s_bootstrap=debug`.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    pub log_level: String,

    /// Accepted for compatibility with Canonical's Deployments (controller-runtime's zap
    /// flag): `debug`, `info` or `error` sets the log filter.
    #[arg(long = "zap-log-level", hide = true, value_name = "LEVEL")]
    pub zap_log_level: Option<String>,

    /// Accepted for compatibility (zap): `console` selects text logs, `json` JSON logs.
    #[arg(long = "zap-encoder", hide = true, value_name = "ENC")]
    pub zap_encoder: Option<String>,

    /// Accepted for compatibility (zap development mode): selects text logs.
    #[arg(long = "zap-devel", hide = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub zap_devel: Option<bool>,

    /// Accepted for compatibility (zap); ignored.
    #[arg(long = "zap-stacktrace-level", hide = true)]
    pub zap_stacktrace_level: Option<String>,

    /// Accepted for compatibility (zap); ignored.
    #[arg(long = "zap-time-encoding", hide = true)]
    pub zap_time_encoding: Option<String>,
}

impl ManagerFlags {
    /// The flags as parsed from `args` (without the program name), e.g. for in-process runs.
    pub fn from_args<I, T>(args: I) -> Result<ManagerFlags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            flags: ManagerFlags,
        }
        let argv = std::iter::once(std::ffi::OsString::from("manager")).chain(args.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.flags)
    }
}

/// Per-manager defaults for the flags that have none.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Name used in logs, metrics, Events and the field manager.
    pub name: &'static str,
    /// Default metrics address.
    pub metrics_bind_address: &'static str,
    /// Default probe address.
    pub health_probe_bind_address: &'static str,
    /// Default Lease name.
    pub leader_election_id: &'static str,
}

/// Why a bind address could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid bind address {0:?}: expected HOST:PORT, :PORT or 0")]
pub struct BadAddress(pub String);

/// Parses a controller-runtime style bind address: `:8080` binds all interfaces, IPv6 and
/// IPv4 (`[::]:8080`, served dual-stack by [`crate::server`], as Go's `:8080` listens), `0`
/// disables.
pub fn parse_bind_address(addr: &str) -> Result<Option<SocketAddr>, BadAddress> {
    let addr = addr.trim();
    if addr == "0" || addr.is_empty() {
        return Ok(None);
    }
    let full = if let Some(port) = addr.strip_prefix(':') {
        format!("[::]:{port}")
    } else {
        addr.to_string()
    };
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| BadAddress(addr.to_string()))
}

impl ManagerFlags {
    /// The log filter, honouring `--zap-log-level` when given.
    pub fn effective_log_filter(&self) -> String {
        match self.zap_log_level.as_deref() {
            Some("debug") => "debug".into(),
            Some("error") => "error".into(),
            Some("info") => "info".into(),
            _ => self.log_level.clone(),
        }
    }

    /// The log format, honouring `--zap-encoder` and `--zap-devel` when given.
    pub fn effective_log_format(&self) -> LogFormat {
        match (self.zap_encoder.as_deref(), self.zap_devel) {
            (Some("console"), _) => LogFormat::Text,
            (Some("json"), _) => LogFormat::Json,
            (_, Some(true)) => LogFormat::Text,
            _ => self.log_format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        flags: ManagerFlags,
    }

    #[test]
    fn accepts_canonicals_deployment_args() {
        let cli = Cli::try_parse_from([
            "manager",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=127.0.0.1:8080",
            "--leader-elect",
            "--zap-devel=true",
            "--zap-log-level=debug",
        ])
        .unwrap();
        assert!(cli.flags.leader_elect);
        assert_eq!(cli.flags.health_probe_bind_address.as_deref(), Some(":8081"));
        assert_eq!(cli.flags.effective_log_format(), LogFormat::Text);
        assert_eq!(cli.flags.effective_log_filter(), "debug");
    }

    #[test]
    fn leader_elect_takes_an_explicit_value() {
        let cli = Cli::try_parse_from(["manager", "--leader-elect=false"]).unwrap();
        assert!(!cli.flags.leader_elect);
        let cli = Cli::try_parse_from(["manager"]).unwrap();
        assert!(!cli.flags.leader_elect);
        assert_eq!(cli.flags.concurrency, 10);
    }

    #[test]
    fn rejects_zero_concurrency() {
        assert!(Cli::try_parse_from(["manager", "--concurrency=0"]).is_err());
    }

    #[test]
    fn parses_bind_addresses() {
        assert_eq!(parse_bind_address(":8080").unwrap(), Some("[::]:8080".parse().unwrap()));
        assert_eq!(
            parse_bind_address("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_bind_address("0").unwrap(), None);
        assert!(parse_bind_address("localhost").is_err());
    }
}
