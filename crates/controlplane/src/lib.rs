//! MicroK8s CAPI control plane provider: the MicroK8sControlPlane controller

pub mod rbac;
