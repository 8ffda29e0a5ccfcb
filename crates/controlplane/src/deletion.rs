//! Deleting a control plane: wait until Cluster API has deleted the worker Machines (this
//! provider never deletes them), delete the control plane Machines without member removal
//! (the cluster is going away and may be unreachable), delete the Secrets this provider or the
//! bootstrap provider created, then drop the finalizer. A missing Cluster never wedges it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use mk8s_api::capi::ClusterExt;
use mk8s_api::consts;
use serde_json::json;
use tracing::info;

use crate::controller::Expect;
use crate::error::{Result, is_not_found};
use crate::kubeconfig::{self, Ownership};
use crate::machines::{self, CpMachine};
use crate::names;
use crate::reconcile::Rec;
use crate::status;

/// Whether a Secret was created by this provider or the bootstrap provider for `cluster`:
/// owned by the Cluster or by this control plane.
pub fn created_by_providers(s: &Secret, cluster: &str, mcp: &str) -> bool {
    let owners = s.metadata.owner_references.as_ref();
    kubeconfig::owned_by_control_plane(owners, mcp)
        || owners.is_some_and(|o| {
            o.iter()
                .any(|r| r.kind == "Cluster" && r.api_version.starts_with("cluster.x-k8s.io/") && r.name == cluster)
        })
}

/// The control plane's name from a controller owner reference of a Machine.
fn controlled_by(m: &CpMachine, mcp: &str) -> bool {
    m.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && names::is_control_plane_owner(o) && o.name == mcp)
}

pub(crate) async fn reconcile(r: &Rec<'_>) -> Result<Action> {
    if !r.mcp.finalizers().iter().any(|f| f == consts::CONTROL_PLANE_FINALIZER) {
        return Ok(Action::await_change());
    }
    if r.mcp.annotations().contains_key(DELETE_FOR_MOVE) {
        // clusterctl move deletes the source copy of a moved control plane: its Machines and
        // Secrets live on in the target management cluster and must not be cleaned up.
        drop_finalizer(r).await?;
        return Ok(Action::await_change());
    }
    let cluster = r.ctx.cluster_of(r.mcp);
    if cluster.as_ref().is_some_and(|c| c.paused()) || r.mcp.annotations().contains_key(consts::ANNOTATION_PAUSED) {
        r.patch_status(status::paused(&r.prev(), "deletion is paused", r.generation, &r.tnow))
            .await?;
        return Ok(Action::await_change());
    }
    // The cluster name: from the Cluster, else the owner reference, else the Machines.
    let cluster_name = cluster.as_ref().map(|c| c.name_any()).or_else(|| {
        r.mcp
            .owner_references()
            .iter()
            .find(|o| o.kind == "Cluster" && o.api_version.starts_with("cluster.x-k8s.io/"))
            .map(|o| o.name.clone())
    });
    let all: Vec<Arc<CpMachine>> = r
        .ctx
        .machines
        .state()
        .into_iter()
        .filter(|m| m.metadata.namespace.as_deref() == Some(r.ns.as_str()))
        .collect();
    let control_plane: Vec<&Arc<CpMachine>> = all
        .iter()
        .filter(|m| {
            controlled_by(m, &r.name)
                || cluster_name
                    .as_deref()
                    .is_some_and(|c| machines::is_control_plane_of(m, c))
        })
        .collect();
    let prev = r.prev();

    // Workers first, by Cluster API (only while the Cluster exists: without it nothing will
    // delete them, and they must not wedge this).
    if let (Some(cl), Some(c)) = (&cluster, &cluster_name) {
        let workers: Vec<String> = all
            .iter()
            .filter(|m| machines::is_of_cluster(m, c) && !machines::is_control_plane_of(m, c))
            .map(|m| m.name_any())
            .collect();
        if !workers.is_empty() {
            let msg = if cl.metadata.deletion_timestamp.is_some() {
                format!(
                    "waiting for Cluster API to delete {} worker machine(s): {}",
                    workers.len(),
                    workers.join(", ")
                )
            } else {
                // Only the control plane is being deleted: nothing deletes the workers for it.
                format!(
                    "waiting for {} worker machine(s) to be deleted: {}; Cluster {c} is not being deleted, so delete its MachineDeployments (or the Cluster)",
                    workers.len(),
                    workers.join(", ")
                )
            };
            r.patch_status(status::deleting(
                &prev,
                Some(c),
                control_plane.len(),
                &msg,
                r.generation,
                &r.tnow,
            ))
            .await?;
            return Ok(Action::await_change());
        }
    }

    if !control_plane.is_empty() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(r.ctx.rt.client.clone(), &r.ns, &r.ctx.rt.core_version.machine());
        for m in &control_plane {
            let name = m.name_any();
            let has_hook = m
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(names::ANNOTATION_PRE_TERMINATE_HOOK));
            if has_hook {
                let patch = json!({"metadata": {"annotations": {
                    names::ANNOTATION_PRE_TERMINATE_HOOK: null,
                    names::ANNOTATION_MEMBER_REMOVAL: null,
                }}});
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if m.metadata.deletion_timestamp.is_none() {
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                r.ctx.expect(&r.key, Expect::Gone(name));
            }
        }
        let msg = format!(
            "deleting {} control plane machine(s) (without dqlite member removal: the cluster goes away)",
            control_plane.len()
        );
        r.patch_status(status::deleting(
            &prev,
            cluster_name.as_deref(),
            control_plane.len(),
            &msg,
            r.generation,
            &r.tnow,
        ))
        .await?;
        return Ok(Action::await_change());
    }

    if let Some(c) = &cluster_name {
        delete_secrets(r, c).await?;
    }
    drop_finalizer(r).await?;
    info!(control_plane = %r.key, "deleted");
    Ok(Action::await_change())
}

/// The annotation clusterctl move sets on the source objects it deletes.
const DELETE_FOR_MOVE: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";

/// Removes our finalizer and forgets what this manager kept about the control plane (its
/// workload cluster connection, caches, metric series).
async fn drop_finalizer(r: &Rec<'_>) -> Result<()> {
    let finalizers: Vec<String> = r
        .mcp
        .finalizers()
        .iter()
        .filter(|f| *f != consts::CONTROL_PLANE_FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": r.mcp.resource_version()}});
    r.api
        .patch(&r.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    r.ctx.gone(r.mcp);
    Ok(())
}

async fn delete_secrets(r: &Rec<'_>, cluster: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(r.ctx.rt.client.clone(), &r.ns);
    let ca = secrets
        .get_opt(&consts::ca_secret(cluster))
        .await?
        .and_then(|s| kubeconfig::read_ca(&s).ok())
        .map(|c| c.cert_pem().to_string());
    let mut deleted = vec![];
    for name in [
        consts::kubeconfig_secret(cluster),
        consts::ca_secret(cluster),
        consts::join_token_secret(cluster),
        consts::auth_token_secret(cluster),
    ] {
        let Some(s) = secrets.get_opt(&name).await? else {
            continue;
        };
        let ours = if name == consts::kubeconfig_secret(cluster) {
            matches!(
                kubeconfig::ownership(Some(&s), &r.name, ca.as_deref()),
                Ownership::Ours | Ownership::Canonical
            )
        } else {
            created_by_providers(&s, cluster, &r.name)
        };
        if !ours {
            info!(secret = %name, "keeping a user-supplied Secret");
            continue;
        }
        match secrets.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !deleted.is_empty() {
        r.ctx
            .events
            .normal(
                r.mcp,
                "SecretsDeleted",
                format!("deleted Secrets {}", deleted.join(", ")),
            )
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    #[test]
    fn only_provider_made_secrets_go() {
        let s = |owners: Vec<OwnerReference>| Secret {
            metadata: ObjectMeta {
                owner_references: Some(owners),
                ..Default::default()
            },
            ..Default::default()
        };
        let cluster_owner = OwnerReference {
            api_version: "cluster.x-k8s.io/v1beta2".into(),
            kind: "Cluster".into(),
            name: "c".into(),
            uid: "u".into(),
            ..Default::default()
        };
        assert!(created_by_providers(&s(vec![cluster_owner.clone()]), "c", "cp"));
        assert!(!created_by_providers(&s(vec![cluster_owner]), "other", "cp"));
        assert!(!created_by_providers(&s(vec![]), "c", "cp"), "user-supplied");
        assert!(created_by_providers(
            &s(vec![machines::control_plane_owner("cp", "u", true, true)]),
            "c",
            "cp"
        ));
    }
}
