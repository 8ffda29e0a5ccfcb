//! MicroK8s CAPI control plane provider: the `MicroK8sControlPlane` controller.
//!
//! Pure decisions live in plain modules over plain data ([`model`], [`spec`], [`gate`],
//! [`scale`], [`upgrade`], [`member`], [`remediation`], [`plan`], [`status`],
//! [`node_action`]); the reconciler ([`reconcile`]) gathers the facts, asks them, applies one
//! step and writes status; [`controller`] wires the watches.

pub mod cache;
pub mod config;
pub mod controller;
mod deletion;
pub mod error;
pub mod events;
pub mod gate;
pub mod infra;
pub mod kubeconfig;
pub mod machines;
pub mod member;
pub mod metrics;
pub mod model;
pub mod names;
pub mod node_action;
pub mod plan;
pub mod rbac;
pub mod reconcile;
pub mod remediation;
pub mod scale;
pub mod spec;
pub mod status;
pub mod upgrade;
pub mod workload;

pub use config::{ControlPlaneFlags, ControllerConfig};
pub use controller::run_controller;
pub use error::Error;

/// The manager's defaults (Canonical's ports; our own Lease name).
pub const DEFAULTS: mk8s_runtime::Defaults = mk8s_runtime::Defaults {
    name: "microk8s-controlplane",
    metrics_bind_address: ":8082",
    health_probe_bind_address: ":8083",
    leader_election_id: "mk8s-controlplane-manager-leader-election",
};
