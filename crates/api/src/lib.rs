//! CRD types of the MicroK8s Cluster API providers, the CAPI core objects they read, and the
//! generation of the CRD manifests.
//!
//! Everything here is plain data and pure functions; no module talks to an API server.

// kube-derive takes several `printcolumn(...)` helper attributes, which clippy mistakes for
// duplicates.
#![allow(clippy::duplicated_attributes)]
// kube-derive takes several `printcolumn(...)` helper attributes, which clippy mistakes for
// duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod bootstrap;
pub mod capi;
pub mod conditions;
pub mod consts;
pub mod controlplane;
pub mod crd;
pub mod rbac;
pub mod version;

pub use bootstrap::{MicroK8sConfig, MicroK8sConfigSpec, MicroK8sConfigStatus, MicroK8sConfigTemplate};
pub use controlplane::{
    MicroK8sControlPlane, MicroK8sControlPlaneSpec, MicroK8sControlPlaneStatus, MicroK8sControlPlaneTemplate,
};
