//! The RBAC rules the control plane manager needs (rendered into `config/rbac/` by
//! `mk8s-gen`), each justified by the code that uses it.
//!
//! Nothing in a workload cluster needs management-cluster RBAC: the manager reaches workload
//! clusters with the kubeconfig it generates.

use k8s_openapi::api::rbac::v1::PolicyRule;
use mk8s_api::rbac::{READ, rule};

/// Cluster-wide rules.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        // The reconciled object: watched; finalizer and remediation annotation patched.
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes"],
            &["get", "list", "watch", "patch"],
        ),
        // Status by server-side apply.
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes/status"],
            &["patch"],
        ),
        // Owner references with blockOwnerDeletion to the control plane (Machines, their
        // MicroK8sConfigs, the kubeconfig Secret) under OwnerReferencesPermissionEnforcement.
        rule(
            "controlplane.cluster.x-k8s.io",
            &["microk8scontrolplanes/finalizers"],
            &["update"],
        ),
        // One MicroK8sConfig per Machine: watched (ports of each machine, out-of-date
        // detection), created, metadata applied, orphans deleted.
        rule(
            "bootstrap.cluster.x-k8s.io",
            &["microk8sconfigs"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // Infrastructure templates (read; Cluster owner reference added, which needs delete
        // under OwnerReferencesPermissionEnforcement) and their clones (created, watched by
        // label — metadata only —, metadata applied, deleted to clean up after half-failed
        // creations).
        rule(
            "infrastructure.cluster.x-k8s.io",
            &["*"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule("cluster.x-k8s.io", &["clusters"], READ),
        // Control plane Machines: created, labelled and annotated (hook, in-place state),
        // version set after in-place upgrades, deleted to scale down or remediate.
        rule(
            "cluster.x-k8s.io",
            &["machines"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // The Machines' `UpToDate` and `OwnerRemediated` conditions (CAPI's control plane
        // contract), by server-side apply of those conditions only.
        rule("cluster.x-k8s.io", &["machines/status"], &["patch"]),
        // Kubeconfig (created, rotated by patch, Canonical's replaced by delete + create),
        // cluster CA and auth token (read), provider-made Secrets deleted with the cluster.
        // Watched by label only (metadata).
        rule("", &["secrets"], &["get", "list", "watch", "create", "patch", "delete"]),
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
