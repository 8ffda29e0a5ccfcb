//! Names, labels and annotations this provider writes or reads, and name generation.
//!
//! Shared contract names (CAPI's, Canonical's) live in [`mk8s_api::consts`]; the ones here
//! are this provider's own.

use rand::RngExt;

/// Whether an owner reference points at a MicroK8sControlPlane (any version of its group).
pub fn is_control_plane_owner(o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    o.kind == KIND && o.api_version.strip_prefix(GROUP).is_some_and(|v| v.starts_with('/'))
}

/// Field manager of every write (server-side apply of status, creates, merge patches).
pub const FIELD_MANAGER: &str = "microk8s-controlplane";
/// Field manager of the server-side apply that propagates `machineTemplate.metadata` and the
/// Machine settings (deletion timeouts, readiness gates) in place. A manager of its own, used
/// only by that apply, so that keys removed from the template are removed from the objects.
pub const METADATA_FIELD_MANAGER: &str = "microk8s-controlplane-metadata";

/// Controller name (logs, metrics, Events).
pub const CONTROLLER: &str = "microk8scontrolplane";

/// API group of the control plane kinds.
pub const GROUP: &str = "controlplane.cluster.x-k8s.io";
/// Kind of the control plane.
pub const KIND: &str = "MicroK8sControlPlane";
/// API group of the bootstrap kinds.
pub const BOOTSTRAP_GROUP: &str = "bootstrap.cluster.x-k8s.io";
/// Kind of the bootstrap config.
pub const BOOTSTRAP_KIND: &str = "MicroK8sConfig";

/// Annotation marking the Machines (and their configs and infrastructure machines) this
/// provider created; its value is the control plane's name. Machines without it were made by
/// Canonical's provider (or adopted) and are judged up to date on their Kubernetes track only.
pub const ANNOTATION_CREATED_BY: &str = "microk8s.controlplane.cluster.x-k8s.io/created-by";
/// Annotation holding the state of a Machine's in-place upgrade (JSON, see
/// [`crate::upgrade::InPlaceState`]). Annotations survive `clusterctl move`; status does not.
pub const ANNOTATION_IN_PLACE: &str = "microk8s.controlplane.cluster.x-k8s.io/in-place-upgrade";
/// Annotation holding the state of a deleting Machine's dqlite member removal (JSON, see
/// [`crate::member::RemovalState`]).
pub const ANNOTATION_MEMBER_REMOVAL: &str = "microk8s.controlplane.cluster.x-k8s.io/member-removal";
/// The pre-terminate hook on control plane Machines: CAPI drains the node, then waits until
/// this provider has removed the node from dqlite and dropped the annotation, and only then
/// deletes the infrastructure machine.
pub const ANNOTATION_PRE_TERMINATE_HOOK: &str =
    "pre-terminate.delete.hook.machine.cluster.x-k8s.io/microk8s-member-removal";
/// Value of [`ANNOTATION_PRE_TERMINATE_HOOK`] (the hook's owner).
pub const PRE_TERMINATE_HOOK_OWNER: &str = "microk8s-controlplane";

/// Annotation on the control plane, set once it is initialized (value `true`). Annotations
/// survive `clusterctl move`; status does not, and once the first node is replaced no Node
/// carries the marker it set, so without this a moved control plane would wait for an init
/// that happened long ago.
pub const ANNOTATION_INITIALIZED: &str = "microk8s.controlplane.cluster.x-k8s.io/initialized";

/// KCP's annotation on the control plane while a remediation is in flight (JSON
/// [`crate::remediation::RemediationData`]).
pub const ANNOTATION_REMEDIATION_IN_PROGRESS: &str = "controlplane.cluster.x-k8s.io/remediation-in-progress";
/// KCP's annotation on the Machine that replaces a remediated one (JSON
/// [`crate::remediation::RemediationData`]).
pub const ANNOTATION_REMEDIATION_FOR: &str = "controlplane.cluster.x-k8s.io/remediation-for";
/// CAPI: users ask for the remediation of a Machine.
pub const ANNOTATION_REMEDIATE_MACHINE: &str = "cluster.x-k8s.io/remediate-machine";

/// Namespace of node action pods in the workload cluster.
pub const ACTION_NAMESPACE: &str = "microk8s-capi-system";
/// Secret (in [`ACTION_NAMESPACE`]) holding the cluster agent token for node actions.
pub const ACTION_TOKEN_SECRET: &str = "capi-auth-token";
/// Key of the token in [`ACTION_TOKEN_SECRET`].
pub const ACTION_TOKEN_KEY: &str = "token";
/// Label on node action pods: who manages them.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "microk8s-capi";
/// Label on node action pods: which action.
pub const LABEL_ACTION: &str = "microk8s.cluster.x-k8s.io/action";
/// Label on node action pods: the Machine they act for (informational; the Machine's
/// annotation is authoritative).
pub const LABEL_ACTION_MACHINE: &str = "microk8s.cluster.x-k8s.io/machine";
/// Node action: remove a dqlite member.
pub const ACTION_DQLITE_REMOVE: &str = "dqlite-remove";
/// Node action: refresh the MicroK8s snap.
pub const ACTION_SNAP_REFRESH: &str = "snap-refresh";

/// Finalizer CAPI's Machine controller puts on Machines (read to know a Machine is managed).
pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";

/// Alphabet of generated suffixes (the apiserver's and CAPI's `SimpleNameGenerator`).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Longest base kept before `-` and the suffix: names stay within 63 characters, a DNS label
/// (infrastructure providers use Machine names as hostnames) and a label value (node action
/// pods carry the Machine's name in one). CAPI's generator keeps 58 characters of a base that
/// already ends with the dash.
const MAX_BASE: usize = 57;

/// A random 5-character suffix.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `<base>-<suffix>` with the base cut to 57 characters: at most 63 in all, as CAPI's name
/// generator.
pub fn with_suffix(base: &str, suffix: &str) -> String {
    let mut base: String = base.chars().take(MAX_BASE).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{suffix}")
}

/// A node action pod name: `mk8s-<action>-<suffix>`, unique per attempt.
pub fn action_pod_name(action: &str) -> String {
    format!("mk8s-{action}-{}", random_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_owners_by_kind_and_group_in_any_version() {
        let owner = |api_version: &str, kind: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            ..Default::default()
        };
        assert!(is_control_plane_owner(&owner(
            "controlplane.cluster.x-k8s.io/v1beta1",
            KIND
        )));
        assert!(is_control_plane_owner(&owner(
            "controlplane.cluster.x-k8s.io/v1beta2",
            KIND
        )));
        assert!(!is_control_plane_owner(&owner(
            "controlplane.cluster.x-k8s.io.evil/v1",
            KIND
        )));
        assert!(!is_control_plane_owner(&owner("controlplane.cluster.x-k8s.io", KIND)));
        assert!(!is_control_plane_owner(&owner(
            "controlplane.cluster.x-k8s.io/v1beta1",
            "KubeadmControlPlane"
        )));
    }

    #[test]
    fn suffixes_use_the_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn long_bases_are_cut() {
        let long = "a".repeat(80);
        let n = with_suffix(&long, "bcdfg");
        assert_eq!(n.len(), 63, "a DNS label and a label value at most");
        assert_eq!(with_suffix("cp", "x2x2x"), "cp-x2x2x");
        assert_eq!(
            with_suffix(&format!("{}-b", "a".repeat(56)), "zzzzz"),
            format!("{}-zzzzz", "a".repeat(56))
        );
    }
}
