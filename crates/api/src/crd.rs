//! Generation of the CRD manifests committed under `config/crd/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{MicroK8sConfig, MicroK8sConfigTemplate, MicroK8sControlPlane, MicroK8sControlPlaneTemplate};

/// Every CRD of both providers, each with the file name it is committed under.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "bootstrap.cluster.x-k8s.io_microk8sconfigs.yaml",
            spec_optional(MicroK8sConfig::crd()),
        ),
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

/// Lets objects leave out `spec`, as Canonical's CRD did (`spec,omitempty`, every field of
/// a MicroK8sConfig optional): the API server fills in `spec: {}` (and with it the nested
/// defaults), so the objects the managers read always have one.
fn spec_optional(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for v in &mut crd.spec.versions {
        let Some(root) = v.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        if let Some(required) = root.required.as_mut() {
            required.retain(|r| r != "spec");
        }
        if root.required.as_ref().is_some_and(Vec::is_empty) {
            root.required = None;
        }
        if let Some(spec) = root.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.default =
                Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(serde_json::json!({})));
        }
    }
    crd
}

/// Renders a CRD as the YAML document we commit.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}
