//! Infrastructure templates and machines, whose kinds are known only at runtime: version
//! discovery (cached), cloning a template into a machine, and reading a clone's cloned-from
//! annotations.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result, is_not_found};
use crate::model::{ClonedFrom, TemplateRef};
use crate::names;

/// Caches the served version of infrastructure kinds (discovery is a few requests).
#[derive(Default)]
pub struct Kinds {
    cache: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Kinds {
    /// The resource of `group`/`kind` in its preferred served version.
    pub async fn resolve(&self, client: &Client, group: &str, kind: &str) -> Result<ApiResource> {
        let key = (group.to_string(), kind.to_string());
        if let Some(ar) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(ar);
        }
        let g = kube::discovery::oneshot::group(client, group).await.map_err(|e| {
            if is_not_found(&e) {
                Error::Invalid(format!(
                    "API group {group} is not served (is the infrastructure provider installed?)"
                ))
            } else {
                e.into()
            }
        })?;
        let (ar, _) = g
            .recommended_kind(kind)
            .ok_or_else(|| Error::Invalid(format!("kind {kind} is not served in API group {group}")))?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, ar.clone());
        }
        Ok(ar)
    }

    /// Forgets a kind (after a 404, in case the served versions changed).
    pub fn forget(&self, group: &str, kind: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(&(group.to_string(), kind.to_string()));
        }
    }
}

/// The infrastructure machine kind of a template kind (`FooMachineTemplate` → `FooMachine`).
pub fn machine_kind(template_kind: &str) -> String {
    template_kind
        .strip_suffix("Template")
        .unwrap_or(template_kind)
        .to_string()
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Reads the template.
pub async fn get_template(kinds: &Kinds, client: &Client, ns: &str, t: &TemplateRef) -> Result<DynamicObject> {
    let ar = kinds.resolve(client, &t.group, &t.kind).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    match api.get_opt(&t.name).await? {
        Some(o) => Ok(o),
        None => Err(Error::Invalid(format!(
            "infrastructure template {} {} not found in namespace {ns}",
            t.kind, t.name
        ))),
    }
}

/// Gives the template a (non-controller) owner reference to the Cluster, as Canonical's
/// provider and KCP do, so that `clusterctl move` carries it.
pub async fn ensure_template_owner(
    client: &Client,
    ns: &str,
    ar: &ApiResource,
    template: &DynamicObject,
    cluster: &OwnerReference,
) -> Result<bool> {
    let mut owners = template.owner_references().to_vec();
    if owners
        .iter()
        .any(|o| o.kind == cluster.kind && o.name == cluster.name && o.api_version.starts_with("cluster.x-k8s.io/"))
    {
        return Ok(false);
    }
    owners.push(cluster.clone());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let patch = json!({"metadata": {"ownerReferences": owners, "resourceVersion": template.resource_version()}});
    api.patch(&template.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(true)
}

/// What a clone needs.
pub struct CloneSpec<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name of the clone.
    pub name: &'a str,
    /// Labels added to the template's.
    pub labels: &'a serde_json::Map<String, serde_json::Value>,
    /// Annotations added to the template's.
    pub annotations: &'a serde_json::Map<String, serde_json::Value>,
    /// Owner reference (the control plane, not controller).
    pub owner: &'a OwnerReference,
}

/// Clones the template into an infrastructure machine; returns its resource (for the
/// Machine's reference).
pub async fn clone_template(
    kinds: &Kinds,
    client: &Client,
    t: &TemplateRef,
    template: &DynamicObject,
    c: &CloneSpec<'_>,
) -> Result<ApiResource> {
    let tar = kinds.resolve(client, &t.group, &t.kind).await?;
    let kind = machine_kind(&t.kind);
    let ar = kinds.resolve(client, &t.group, &kind).await?;
    let inner = template.data.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = inner
        .pointer("/metadata/labels")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    labels.extend(c.labels.clone());
    let mut annotations = inner
        .pointer("/metadata/annotations")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    annotations.extend(c.annotations.clone());
    annotations.insert(mk8s_api::consts::ANNOTATION_CLONED_FROM_NAME.into(), json!(t.name));
    annotations.insert(
        mk8s_api::consts::ANNOTATION_CLONED_FROM_GROUPKIND.into(),
        json!(format!("{}.{}", tar.kind, tar.group)),
    );
    let obj = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {
            "name": c.name,
            "namespace": c.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [c.owner],
        },
        "spec": inner.get("spec").cloned().unwrap_or(json!({})),
    });
    let obj: DynamicObject = serde_json::from_value(obj)?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), c.namespace, &ar);
    api.create(&pp(), &obj).await?;
    Ok(ar)
}

/// Deletes an infrastructure machine (absent is fine).
pub async fn delete(client: &Client, ns: &str, ar: &ApiResource, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The cloned-from annotations of an infrastructure machine.
pub fn cloned_from(meta: &ObjectMeta) -> Option<ClonedFrom> {
    let a = meta.annotations.as_ref()?;
    Some(ClonedFrom {
        name: a.get(mk8s_api::consts::ANNOTATION_CLONED_FROM_NAME)?.clone(),
        group_kind: a.get(mk8s_api::consts::ANNOTATION_CLONED_FROM_GROUPKIND)?.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_kinds() {
        assert_eq!(machine_kind("AWSMachineTemplate"), "AWSMachine");
        assert_eq!(machine_kind("Odd"), "Odd");
    }
}
