//! Names shared by both providers and the objects they write. Every one of these is part of
//! the compatibility contract with Canonical's providers or with CAPI; changing one breaks a
//! running management cluster.

/// Label carrying the cluster name on every object of a cluster.
pub const LABEL_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
/// Label marking control plane Machines (empty value).
pub const LABEL_CONTROL_PLANE: &str = "cluster.x-k8s.io/control-plane";
/// Label naming the control plane object of a Machine (v1beta2 contract).
pub const LABEL_CONTROL_PLANE_NAME: &str = "cluster.x-k8s.io/control-plane-name";
/// Label with which `--watch-filter` selects the objects a manager reconciles.
pub const LABEL_WATCH_FILTER: &str = "cluster.x-k8s.io/watch-filter";
/// Annotation pausing reconciliation of one object.
pub const ANNOTATION_PAUSED: &str = "cluster.x-k8s.io/paused";
/// Annotation naming the template an infrastructure machine was cloned from.
pub const ANNOTATION_CLONED_FROM_NAME: &str = "cluster.x-k8s.io/cloned-from-name";
/// Annotation with `<Kind>.<group>` of the template an infrastructure machine was cloned from.
pub const ANNOTATION_CLONED_FROM_GROUPKIND: &str = "cluster.x-k8s.io/cloned-from-groupkind";
/// Annotation marking a Machine to delete first on scale-down.
pub const ANNOTATION_DELETE_MACHINE: &str = "cluster.x-k8s.io/delete-machine";
/// Annotation CAPI puts on workload Nodes naming their Machine.
pub const ANNOTATION_NODE_MACHINE: &str = "cluster.x-k8s.io/machine";
/// Annotation with which clusterctl moves objects that have no owner.
pub const ANNOTATION_CLUSTERCTL_MOVE: &str = "clusterctl.cluster.x-k8s.io/move";

/// Type of the Secrets CAPI reads.
pub const SECRET_TYPE_CLUSTER: &str = "cluster.x-k8s.io/secret";

/// Finalizer of the control plane provider (Canonical's name).
pub const CONTROL_PLANE_FINALIZER: &str = "microk8s.controlplane.cluster.x-k8s.io";

/// Label Canonical's MicroK8s puts on control plane Nodes (through kubelet args).
pub const NODE_LABEL_MICROK8S_CONTROL_PLANE: &str = "node.kubernetes.io/microk8s-controlplane";
/// Label the init node puts on its own Node once `add-node` has registered the join token:
/// from then on the cluster accepts joins. Value: `true`.
pub const NODE_LABEL_JOINS_ACCEPTED: &str = "microk8s.cluster.x-k8s.io/accepts-joins";

/// Name of the join token Secret of a cluster (key [`KEY_JOIN_TOKEN`]).
pub fn join_token_secret(cluster: &str) -> String {
    format!("{cluster}-jointoken")
}
/// Key of the join token.
pub const KEY_JOIN_TOKEN: &str = "value";

/// Name of the cluster CA Secret.
pub fn ca_secret(cluster: &str) -> String {
    format!("{cluster}-ca")
}
/// CA certificate key (CAPI's).
pub const KEY_TLS_CRT: &str = "tls.crt";
/// CA private key key (CAPI's).
pub const KEY_TLS_KEY: &str = "tls.key";
/// CA certificate key (Canonical's legacy).
pub const KEY_CRT: &str = "crt";
/// CA private key key (Canonical's legacy).
pub const KEY_KEY: &str = "key";

/// Name of the cluster agent auth token Secret (key [`KEY_AUTH_TOKEN`]).
pub fn auth_token_secret(cluster: &str) -> String {
    format!("{cluster}-capi-auth-token")
}
/// Key of the cluster agent auth token.
pub const KEY_AUTH_TOKEN: &str = "token";

/// Name of the kubeconfig Secret (key [`KEY_KUBECONFIG`]).
pub fn kubeconfig_secret(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}
/// Key of the kubeconfig.
pub const KEY_KUBECONFIG: &str = "value";

/// The cluster whose CA, kubeconfig or auth token Secret `name` would be, by name alone
/// (for Secrets that carry no cluster-name label).
pub fn cluster_of_named_secret(name: &str) -> Option<&str> {
    ["-ca", "-kubeconfig", "-capi-auth-token"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|c| !c.is_empty())
}

/// Name of the init lock ConfigMap (key [`KEY_LOCK`]).
pub fn init_lock_configmap(cluster: &str) -> String {
    format!("{cluster}-lock")
}
/// Key of the init lock's holder (`{"machineName": …}`).
pub const KEY_LOCK: &str = "lock-information";

/// Keys of the bootstrap data Secret.
pub const KEY_BOOTSTRAP_VALUE: &str = "value";
/// Key of the bootstrap data format.
pub const KEY_BOOTSTRAP_FORMAT: &str = "format";
/// The only format we render.
pub const BOOTSTRAP_FORMAT_CLOUD_CONFIG: &str = "cloud-config";

/// Cluster agent port when ports are remapped (`portCompatibilityRemap`).
pub const CLUSTER_AGENT_PORT_REMAPPED: u16 = 30000;
/// Cluster agent port of a stock MicroK8s.
pub const CLUSTER_AGENT_PORT_DEFAULT: u16 = 25000;
/// dqlite port when ports are remapped.
pub const DQLITE_PORT_REMAPPED: u16 = 2379;
/// dqlite port of a stock MicroK8s.
pub const DQLITE_PORT_DEFAULT: u16 = 19001;

/// Cluster agent and dqlite ports for a remap setting.
pub fn node_ports(remap: bool) -> (u16, u16) {
    if remap {
        (CLUSTER_AGENT_PORT_REMAPPED, DQLITE_PORT_REMAPPED)
    } else {
        (CLUSTER_AGENT_PORT_DEFAULT, DQLITE_PORT_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_secrets_lead_back_to_their_cluster() {
        for c in ["c1", "my-ca", "a-kubeconfig"] {
            assert_eq!(cluster_of_named_secret(&ca_secret(c)), Some(c));
            assert_eq!(cluster_of_named_secret(&kubeconfig_secret(c)), Some(c));
            assert_eq!(cluster_of_named_secret(&auth_token_secret(c)), Some(c));
        }
        assert_eq!(cluster_of_named_secret("c1-jointoken"), None);
        assert_eq!(cluster_of_named_secret("-ca"), None);
        assert_eq!(cluster_of_named_secret("unrelated"), None);
    }
}
