//! The RBAC rules the control plane manager needs (rendered into `config/rbac/` by
//! `mk8s-gen`).
//!
//! It owns Machines, their MicroK8sConfigs and infrastructure clones, the kubeconfig Secret
//! and the cluster's Secrets at deletion; it reads Clusters and infrastructure templates.

use k8s_openapi::api::rbac::v1::PolicyRule;
use mk8s_api::rbac::{READ, rule};

/// Cluster-wide rules.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes"],
            &["get", "list", "watch", "patch", "update"],
        ),
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes/status"],
            &["get", "patch", "update"],
        ),
        // Owner references with blockOwnerDeletion to the control plane
        // (OwnerReferencesPermissionEnforcement).
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes/finalizers"],
            &["update"],
        ),
        rule(
            "bootstrap.cluster.x-k8s.io",
            &["microk8sconfigs"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            "infrastructure.cluster.x-k8s.io",
            &["*"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule("cluster.x-k8s.io", &["clusters"], READ),
        rule(
            "cluster.x-k8s.io",
            &["machines"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "patch", "update", "delete"],
        ),
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
