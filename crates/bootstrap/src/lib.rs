//! The MicroK8s bootstrap provider (CABPM): the `MicroK8sConfig` controller.
//!
//! For every Machine whose bootstrap configuration is a `MicroK8sConfig`, it decides the
//! node's role (initialise the cluster, join the control plane, join as a worker), ensures the
//! cluster's Secrets (join token, CA, cluster agent auth token), renders the cloud-init with
//! [`mk8s_cloudinit`] and stores it in the bootstrap data Secret CAPI hands to the
//! infrastructure provider.
//!
//! Modules: [`decide`] (pure decisions), [`status`] (pure status), [`secrets`] and [`lock`]
//! (the cluster's Secrets and the init lock), [`controller`] (watches and the reconcile
//! driver), [`render`] (the offline `render` command), [`rbac`] (the permissions it needs).

pub mod controller;
pub mod decide;
pub mod error;
pub mod lock;
pub mod rbac;
pub mod render;
pub mod secrets;
pub mod status;

pub use error::Error;

/// Defaults of the bootstrap manager's flags (ports as Canonical's, our own Lease name).
pub const DEFAULTS: mk8s_runtime::Defaults = mk8s_runtime::Defaults {
    name: "microk8s-bootstrap",
    metrics_bind_address: ":8080",
    health_probe_bind_address: ":8081",
    leader_election_id: "mk8s-bootstrap-manager-leader-election",
};
