//! Paths of the node-side contract. The scripts in `scripts/` use the same literals (a test
//! checks it); every path is prefixed with `$CAPI_ROOT` by the scripts, which is unset on
//! real nodes.

/// Directory of the bootstrap scripts (Canonical's, so existing nodes line up).
pub const SCRIPTS_DIR: &str = "/capi-scripts";
/// The cluster agent's auth token (control plane roles); MicroK8s' cluster agent reads it to
/// authenticate the control plane provider's `dqlite/remove` calls.
pub const AUTH_TOKEN: &str = "/capi/etc/token";
/// Cluster CA certificate (init role), removed after `microk8s refresh-certs`.
pub const CA_CERT: &str = "/var/tmp/ca.crt";
/// Cluster CA private key (init role), removed after `microk8s refresh-certs`.
pub const CA_KEY: &str = "/var/tmp/ca.key";
/// Extra kubelet arguments, one per line.
pub const EXTRA_KUBELET_ARGS: &str = "/var/tmp/extra-kubelet-args";
/// Cluster API's bootstrap success sentinel, written by the last step.
pub const BOOTSTRAP_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";
/// Written by the first step that fails (its name and exit status); while it exists every
/// later step refuses to run.
pub const FAILED_STEP_MARKER: &str = "/run/capi-microk8s/failed-step";
/// MicroK8s' data directory (`$SNAP_DATA`).
pub const SNAP_CURRENT: &str = "/var/snap/microk8s/current";
/// The systemd unit that restores the 16443 → 6443 redirect at boot (control plane).
pub const APISERVER_REDIRECT_UNIT: &str = "/etc/systemd/system/capi-microk8s-apiserver-redirect.service";
/// Environment variable that prefixes every path the scripts use. Never set on real nodes;
/// tests and the machine simulator point it at a scratch directory.
pub const ROOT_ENV: &str = "CAPI_ROOT";

/// Absolute path of the script `name` on the node.
pub fn script(name: &str) -> String {
    format!("{SCRIPTS_DIR}/{name}")
}
