//! MicroK8s CAPI bootstrap provider: the MicroK8sConfig controller

pub mod rbac;
