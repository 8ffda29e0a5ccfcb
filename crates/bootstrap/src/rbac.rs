//! The RBAC rules the bootstrap manager needs (rendered into `config/rbac/` by `mk8s-gen`).
//!
//! Least privilege: it reads Clusters and Machines, and writes only its own objects: the
//! status of MicroK8sConfigs, the Secrets and the init lock ConfigMap of each cluster, Events.

use k8s_openapi::api::rbac::v1::PolicyRule;
use mk8s_api::rbac::{READ, rule};

// Reads by name: `get` on Secrets is needed for user-made cluster Secrets without labels.

/// Cluster-wide rules.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        // `patch`: the annotation recording the role a config's data was rendered for.
        rule(
            "bootstrap.cluster.x-k8s.io",
            &["microk8sconfigs"],
            &["get", "list", "watch", "patch"],
        ),
        rule(
            "bootstrap.cluster.x-k8s.io",
            &["microk8sconfigs/status"],
            &["get", "patch", "update"],
        ),
        // Setting blockOwnerDeletion on the data Secret's ownerRef to its MicroK8sConfig
        // (OwnerReferencesPermissionEnforcement).
        rule(
            "bootstrap.cluster.x-k8s.io",
            &["microk8sconfigs/finalizers"],
            &["update"],
        ),
        rule("cluster.x-k8s.io", &["clusters", "machines"], READ),
        rule("", &["secrets"], &["get", "list", "watch", "create", "patch", "update"]),
        rule("", &["configmaps"], &["get", "list", "watch", "create", "delete"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// Rules in the manager's own namespace (leader election).
pub fn namespace_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "list", "watch", "create", "update", "patch"],
    )]
}
