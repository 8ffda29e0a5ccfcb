//! Generation of the CRD manifests committed under `config/crd/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{MicroK8sConfig, MicroK8sConfigTemplate, MicroK8sControlPlane, MicroK8sControlPlaneTemplate};

/// Every CRD of both providers, each with the file name it is committed under.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("bootstrap.cluster.x-k8s.io_microk8sconfigs.yaml", MicroK8sConfig::crd()),
        (
            "bootstrap.cluster.x-k8s.io_microk8sconfigtemplates.yaml",
            MicroK8sConfigTemplate::crd(),
        ),
        (
            "controlplane.cluster.x-k8s.io_microk8scontrolplanes.yaml",
            MicroK8sControlPlane::crd(),
        ),
        (
            "controlplane.cluster.x-k8s.io_microk8scontrolplanetemplates.yaml",
            MicroK8sControlPlaneTemplate::crd(),
        ),
    ]
}

/// Renders a CRD as the YAML document we commit.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}
