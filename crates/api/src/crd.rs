//! Generation of the CRD manifests committed under `config/crd/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{MicroK8sConfig, MicroK8sConfigTemplate, MicroK8sControlPlane, MicroK8sControlPlaneTemplate};

/// Every CRD of both providers, each with the file name it is committed under.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    let all = vec![
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
    ];
    all.into_iter().map(|(f, c)| (f, enums_not_nullable(c))).collect()
}

/// Enum fields are not nullable: an explicit `null` (an empty template variable, an unset
/// Helm value) is then dropped by the API server and the default applies, as with
/// Canonical's schema. Nullable (kube's rendering of `Option`), the enum refused the null.
fn enums_not_nullable(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(s: &mut JSONSchemaProps) {
        if s.enum_.as_ref().is_some_and(|e| !e.iter().any(|v| v.0.is_null())) && s.nullable == Some(true) {
            s.nullable = None;
        }
        for p in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
            walk(p);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = s.items.as_mut() {
            walk(items);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(extra)) = s.additional_properties.as_mut() {
            walk(extra);
        }
        for group in [&mut s.all_of, &mut s.any_of, &mut s.one_of].into_iter().flatten() {
            group.iter_mut().for_each(walk);
        }
    }
    schema_roots(&mut crd).for_each(walk);
    crd
}

/// The root schema of every version of a CRD.
fn schema_roots(crd: &mut CustomResourceDefinition) -> impl Iterator<Item = &mut JSONSchemaProps> {
    crd.spec
        .versions
        .iter_mut()
        .filter_map(|v| v.schema.as_mut()?.open_api_v3_schema.as_mut())
}

/// Lets objects leave out `spec`, as Canonical's CRD did (`spec,omitempty`, every field of
/// a MicroK8sConfig optional): the API server fills in `spec: {}` (and with it the nested
/// defaults), so the objects the managers read always have one.
fn spec_optional(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for root in schema_roots(&mut crd) {
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
