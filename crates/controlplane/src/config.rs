//! Flags of the control plane manager beyond the shared ones, and the controller's settings.

use std::time::Duration;

use clap::Args;
use mk8s_runtime::client::WorkloadTimeouts;

/// Default image of node action pods (dqlite member removal, snap refresh).
pub const DEFAULT_NODE_ACTION_IMAGE: &str = "curlimages/curl:8.11.1";

/// Control-plane-specific flags.
#[derive(Args, Debug, Clone)]
pub struct ControlPlaneFlags {
    /// Image of the short-lived pods that act on workload nodes (dqlite member removal, snap
    /// refresh). It needs `/bin/sh`, `curl`, `grep` and `sed`; point it at a mirror in
    /// air-gapped installations.
    #[arg(long = "node-action-image", default_value = DEFAULT_NODE_ACTION_IMAGE, value_name = "IMAGE")]
    pub node_action_image: String,

    /// Timeout of TCP/TLS connections to workload API servers, in seconds.
    #[arg(long = "workload-connect-timeout", default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub workload_connect_timeout: u64,

    /// Timeout of one request to a workload API server, in seconds (watches use a shorter
    /// server-side timeout).
    #[arg(long = "workload-request-timeout", default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(5..))]
    pub workload_request_timeout: u64,

    /// Validity of the client certificate in generated kubeconfigs, in hours (default one
    /// year). Certificates are renewed once less than half of it remains, and whenever the
    /// cluster CA or the control plane endpoint changes.
    #[arg(long = "kubeconfig-validity", default_value_t = 8760, value_name = "HOURS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub kubeconfig_validity_hours: u64,

    /// How long a node action pod (member removal, snap refresh) may run before it is
    /// considered failed, in seconds.
    #[arg(long = "node-action-timeout", default_value_t = 1200, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(30..))]
    pub node_action_timeout: u64,

    /// How often a control plane is re-examined while a Machine still waits for its node
    /// (nodeRef), in seconds. Watches drive everything else.
    #[arg(long = "provisioning-requeue", default_value_t = 20, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub provisioning_requeue: u64,
}

/// Settings of the controller (from flags in the manager; built directly in tests).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Image of node action pods.
    pub node_action_image: String,
    /// Timeouts of workload cluster clients.
    pub workload: WorkloadTimeouts,
    /// Validity of kubeconfig client certificates.
    pub kubeconfig_validity: Duration,
    /// Node action pods older than this are considered failed.
    pub node_action_timeout: Duration,
    /// Requeue while a Machine waits for its node.
    pub provisioning_requeue: Duration,
    /// How long a node may take to report the new kubelet version after a successful snap
    /// refresh before the step counts as failed.
    pub kubelet_report_timeout: Duration,
    /// Failed node actions are retried this many times before the provider stops and asks
    /// for help in a condition.
    pub node_action_attempts: u32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_action_image: DEFAULT_NODE_ACTION_IMAGE.to_string(),
            workload: WorkloadTimeouts {
                connect: Duration::from_secs(5),
                read: Duration::from_secs(30),
            },
            kubeconfig_validity: Duration::from_secs(365 * 24 * 3600),
            node_action_timeout: Duration::from_secs(1200),
            provisioning_requeue: Duration::from_secs(20),
            kubelet_report_timeout: Duration::from_secs(600),
            node_action_attempts: 3,
        }
    }
}

impl From<&ControlPlaneFlags> for ControllerConfig {
    fn from(f: &ControlPlaneFlags) -> Self {
        ControllerConfig {
            node_action_image: f.node_action_image.clone(),
            workload: WorkloadTimeouts {
                connect: Duration::from_secs(f.workload_connect_timeout),
                read: Duration::from_secs(f.workload_request_timeout),
            },
            kubeconfig_validity: Duration::from_secs(f.kubeconfig_validity_hours * 3600),
            node_action_timeout: Duration::from_secs(f.node_action_timeout),
            provisioning_requeue: Duration::from_secs(f.provisioning_requeue),
            ..ControllerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cp: ControlPlaneFlags,
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Cli::try_parse_from(["m"]).unwrap();
        let cfg = ControllerConfig::from(&c.cp);
        assert_eq!(cfg.node_action_image, DEFAULT_NODE_ACTION_IMAGE);
        assert_eq!(cfg.kubeconfig_validity, Duration::from_secs(365 * 86400));
        let c = Cli::try_parse_from(["m", "--node-action-image=reg.local/curl:1", "--kubeconfig-validity=24"]).unwrap();
        let cfg = ControllerConfig::from(&c.cp);
        assert_eq!(cfg.node_action_image, "reg.local/curl:1");
        assert_eq!(cfg.kubeconfig_validity, Duration::from_secs(86400));
        assert!(Cli::try_parse_from(["m", "--workload-request-timeout=1"]).is_err());
    }
}
