//! Control plane Machines: reading them (both CAPI versions), building the objects this
//! provider creates (Machine, MicroK8sConfig; the infrastructure clone is in [`crate::infra`]),
//! and the in-place propagation of `machineTemplate.metadata` and Machine settings.
//!
//! Writes follow CAPI's rules: the Machine gets a controller reference to the control plane;
//! its MicroK8sConfig and infrastructure machine get non-controller references (CAPI's Machine
//! controller makes itself their controller). Machines are written in the shape of the
//! `cluster.x-k8s.io` version the management cluster serves.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::core::Object;
use mk8s_api::bootstrap::{MicroK8sConfigSpec, ObjectMetaTemplate};
use mk8s_api::capi::{CoreDeprecated, CoreVersion, MachineSpec, MachineStatus};
use mk8s_api::conditions::{self, Condition};
use mk8s_api::consts;
use mk8s_api::controlplane::{MachineDeletionSpec, MachineReadinessGate, MicroK8sControlPlaneSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::member::RemovalState;
use crate::model::MachineView;
use crate::names;
use crate::remediation::RemediationData;
use crate::upgrade::InPlaceState;

/// A JSON object.
pub type JsonMap = serde_json::Map<String, Value>;

/// `Machine.spec` with the fields this provider propagates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpMachineSpec {
    /// The shared partial spec.
    #[serde(flatten)]
    pub base: MachineSpec,
    /// v1beta2 deletion timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Value>,
    /// Readiness gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<Value>,
    /// v1beta1 drain timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_drain_timeout: Option<Value>,
    /// v1beta1 volume detach timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_volume_detach_timeout: Option<Value>,
    /// v1beta1 node deletion timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_deletion_timeout: Option<Value>,
}

/// The v1beta2 conditions of a v1beta1 Machine (`status.v1beta2`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct V1Beta2Conditions {
    /// Conditions.
    #[serde(default)]
    pub conditions: Option<Vec<Condition>>,
}

/// `Machine.status` with the v1beta1 Machine's v1beta2 conditions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpMachineStatus {
    /// The shared partial status.
    #[serde(flatten)]
    pub base: MachineStatus,
    /// v1beta1 Machines: their v1beta2 conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1beta2: Option<V1Beta2Conditions>,
}

/// A Machine as this provider reads it.
pub type CpMachine = Object<CpMachineSpec, CpMachineStatus>;

/// A condition of a Machine in either version: v1beta2 conditions first, then v1beta1 ones.
pub fn condition<'a>(m: &'a CpMachine, type_: &str) -> Option<&'a Condition> {
    let st = m.status.as_ref()?;
    st.v1beta2
        .as_ref()
        .and_then(|v| v.conditions.as_ref())
        .and_then(|c| conditions::find(c, type_))
        .or_else(|| conditions::find(&st.base.conditions, type_))
        .or_else(|| {
            st.base
                .deprecated
                .as_ref()
                .and_then(|d: &CoreDeprecated| d.v1beta1.as_ref())
                .and_then(|v| conditions::find(&v.conditions, type_))
        })
}

/// The Machine's v1beta2 conditions (where this provider writes its own).
pub fn v1beta2_conditions(m: &CpMachine, core: CoreVersion) -> Vec<Condition> {
    let Some(st) = m.status.as_ref() else { return vec![] };
    match core {
        CoreVersion::V1Beta2 => st.base.conditions.clone(),
        CoreVersion::V1Beta1 => st
            .v1beta2
            .as_ref()
            .and_then(|v| v.conditions.clone())
            .unwrap_or_default(),
    }
}

fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    m.annotations.as_ref().and_then(|a| a.get(key))
}

fn label<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    m.labels.as_ref().and_then(|a| a.get(key))
}

/// A JSON annotation, parsed (`None` when absent or unreadable).
pub fn parse_annotation<T: serde::de::DeserializeOwned>(meta: &ObjectMeta, key: &str) -> Option<T> {
    annotation(meta, key).and_then(|v| serde_json::from_str(v).ok())
}

/// Whether a Machine is a control plane Machine of `cluster`.
pub fn is_control_plane_of(m: &CpMachine, cluster: &str) -> bool {
    label(&m.metadata, consts::LABEL_CLUSTER_NAME).map(String::as_str) == Some(cluster)
        && label(&m.metadata, consts::LABEL_CONTROL_PLANE).is_some()
}

/// Whether a Machine belongs to `cluster` (any role).
pub fn is_of_cluster(m: &CpMachine, cluster: &str) -> bool {
    label(&m.metadata, consts::LABEL_CLUSTER_NAME).map(String::as_str) == Some(cluster)
        || m.spec.base.cluster_name == cluster
}

/// The Machine condition types a control plane reads ([`view`]; its own `UpToDate` it only
/// writes). Of these it reads the status, and of [`REASON_READ`] the reason too.
pub const READ_CONDITIONS: [&str; 6] = [
    "Ready",
    "Available",
    "HealthCheckSucceeded",
    "OwnerRemediated",
    "Deleting",
    "PreTerminateDeleteHookSucceeded",
];

/// The Machine condition types whose reason a control plane reads ([`waiting_for_pre_terminate`]).
pub const REASON_READ: [&str; 1] = ["Deleting"];

/// A hash of what a control plane reads from a Machine, for its Machine watch (a changed
/// hash wakes the control plane). A control plane Machine (labelled as one, or controlled by
/// a MicroK8sControlPlane) counts with all of it but its `resourceVersion`, its phase and its
/// conditions but the statuses (and [`REASON_READ`] reasons) of [`READ_CONDITIONS`]: CAPI
/// rewrites a Machine's conditions (reasons and messages of a dozen types; its `Ready`
/// summary quotes the others) and phase some fifteen times while it comes up, each of which
/// woke the control plane to find nothing to do. Any other Machine of a cluster (a worker)
/// is read only for its existence, deletion, role, cluster, `providerID` and addresses
/// (copying providerIDs onto Nodes, waiting for workers on deletion), so none of CAPI's
/// condition and phase rewrites of workers wakes their control plane.
pub fn fingerprint(m: &CpMachine) -> Option<u64> {
    let controlled = m
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && names::is_control_plane_owner(o));
    if controlled || label(&m.metadata, consts::LABEL_CONTROL_PLANE).is_some() {
        let mut m = m.clone();
        m.metadata.resource_version = None;
        m.metadata.managed_fields = None;
        if let Some(st) = m.status.as_mut() {
            st.base.phase = None;
            let lists = [
                Some(&mut st.base.conditions),
                st.base
                    .deprecated
                    .as_mut()
                    .and_then(|d| d.v1beta1.as_mut())
                    .map(|v| &mut v.conditions),
                st.v1beta2.as_mut().and_then(|v| v.conditions.as_mut()),
            ];
            for list in lists.into_iter().flatten() {
                list.retain(|c| READ_CONDITIONS.contains(&c.type_.as_str()));
                for c in list.iter_mut() {
                    c.message.clear();
                    c.last_transition_time = None;
                    c.observed_generation = None;
                    if !REASON_READ.contains(&c.type_.as_str()) {
                        c.reason.clear();
                    }
                }
            }
        }
        return mk8s_api::capi::hash_json(&m);
    }
    let meta = &m.metadata;
    mk8s_api::capi::hash_json(&(
        (&meta.name, &meta.namespace, &meta.uid, &meta.labels),
        (&meta.owner_references, &meta.deletion_timestamp),
        (&m.spec.base.cluster_name, &m.spec.base.provider_id),
        m.status.as_ref().map(|s| &s.base.addresses),
    ))
}

/// CAPI has drained the Machine and waits for pre-terminate hooks (v1beta2 `Deleting`
/// reason `WaitingForPreTerminateHook`; v1beta1 `PreTerminateDeleteHookSucceeded` false).
pub fn waiting_for_pre_terminate(m: &CpMachine) -> bool {
    condition(m, "Deleting").is_some_and(|c| c.reason == "WaitingForPreTerminateHook")
        || condition(m, "PreTerminateDeleteHookSucceeded").is_some_and(|c| c.status == conditions::FALSE)
}

/// Reduces a Machine to a [`MachineView`]; `config` and `cloned_from` are looked up by the
/// caller.
pub fn view(
    m: &CpMachine,
    config: Option<MicroK8sConfigSpec>,
    cloned_from: Option<crate::model::ClonedFrom>,
) -> MachineView {
    let meta = &m.metadata;
    let st = m.status.as_ref();
    let cond_true = |t: &str| condition(m, t).is_some_and(Condition::is_true);
    let cond_false = |t: &str| condition(m, t).is_some_and(|c| c.status == conditions::FALSE);
    MachineView {
        name: meta.name.clone().unwrap_or_default(),
        created: meta.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
        deleting: meta.deletion_timestamp.is_some(),
        ours: annotation(meta, names::ANNOTATION_CREATED_BY).is_some(),
        version: m.spec.base.version.clone(),
        failure_domain: m.spec.base.failure_domain.clone().filter(|f| !f.is_empty()),
        node_ref: st
            .and_then(|s| s.base.node_ref.as_ref())
            .map(|n| n.name.clone())
            .filter(|n| !n.is_empty()),
        ips: st
            .map(|s| crate::model::node_ips(s.base.addresses.iter().map(|a| (a.type_.as_str(), a.address.as_str()))))
            .unwrap_or_default(),
        provider_id: m.spec.base.provider_id.clone().filter(|p| !p.is_empty()),
        node_info_kubelet: st
            .and_then(|s| s.base.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .filter(|v| !v.is_empty()),
        ready: cond_true("Ready"),
        available: cond_true("Available"),
        health_check_failed: cond_false("HealthCheckSucceeded"),
        owner_remediation_requested: cond_false("OwnerRemediated"),
        delete_annotation: annotation(meta, consts::ANNOTATION_DELETE_MACHINE).is_some(),
        remediate_annotation: annotation(meta, names::ANNOTATION_REMEDIATE_MACHINE).is_some(),
        remediation_for: parse_annotation(meta, names::ANNOTATION_REMEDIATION_FOR),
        config,
        cloned_from,
        in_place: parse_annotation::<InPlaceState>(meta, names::ANNOTATION_IN_PLACE),
        removal: parse_annotation::<RemovalState>(meta, names::ANNOTATION_MEMBER_REMOVAL),
        has_hook: annotation(meta, names::ANNOTATION_PRE_TERMINATE_HOOK).is_some(),
        waiting_for_hook: waiting_for_pre_terminate(m),
    }
}

/// Owner reference to the control plane.
pub fn control_plane_owner(name: &str, uid: &str, controller: bool, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/v1beta1", names::GROUP),
        kind: names::KIND.into(),
        name: name.into(),
        uid: uid.into(),
        controller: controller.then_some(true),
        block_owner_deletion: block.then_some(true),
    }
}

/// Labels this provider sets on every control plane Machine (never from the template).
pub fn required_labels(cluster: &str, mcp: &str) -> BTreeMap<String, String> {
    [
        (consts::LABEL_CLUSTER_NAME.to_string(), cluster.to_string()),
        (consts::LABEL_CONTROL_PLANE.to_string(), String::new()),
        (consts::LABEL_CONTROL_PLANE_NAME.to_string(), mcp.to_string()),
    ]
    .into()
}

const RESERVED_ANNOTATIONS: &[&str] = &[
    names::ANNOTATION_CREATED_BY,
    names::ANNOTATION_IN_PLACE,
    names::ANNOTATION_MEMBER_REMOVAL,
    names::ANNOTATION_PRE_TERMINATE_HOOK,
    names::ANNOTATION_REMEDIATION_FOR,
    consts::ANNOTATION_CLONED_FROM_NAME,
    consts::ANNOTATION_CLONED_FROM_GROUPKIND,
];

/// The template's labels and annotations, without the keys this provider reserves.
pub fn template_metadata(spec: &MicroK8sControlPlaneSpec) -> ObjectMetaTemplate {
    let mut t = spec.machine_template.metadata.clone().unwrap_or_default();
    t.labels.retain(|k, _| {
        ![
            consts::LABEL_CLUSTER_NAME,
            consts::LABEL_CONTROL_PLANE,
            consts::LABEL_CONTROL_PLANE_NAME,
        ]
        .contains(&k.as_str())
    });
    t.annotations.retain(|k, _| !RESERVED_ANNOTATIONS.contains(&k.as_str()));
    t
}

/// Machine settings propagated in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineSettings {
    /// Deletion timeouts.
    pub deletion: Option<MachineDeletionSpec>,
    /// Readiness gates.
    pub readiness_gates: Option<Vec<MachineReadinessGate>>,
}

/// The settings from the spec.
pub fn machine_settings(spec: &MicroK8sControlPlaneSpec) -> MachineSettings {
    let s = spec.machine_template.spec.clone().unwrap_or_default();
    MachineSettings {
        deletion: s.deletion.filter(|d| *d != MachineDeletionSpec::default()),
        readiness_gates: s.readiness_gates.filter(|g| !g.is_empty()),
    }
}

/// A whole number of seconds as Go's `time.Duration` prints it (`5m0s`, `1h0m30s`), the form
/// a v1beta1 Machine's durations come back in: written as `300s`, a duration never compared
/// equal to what was stored, and every reconcile patched it again.
fn duration(secs: i32) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let t = secs.unsigned_abs();
    let (h, m, s) = (t / 3600, t % 3600 / 60, t % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// The settings in the Machine spec's shape of a core version.
pub fn settings_json(core: CoreVersion, s: &MachineSettings) -> serde_json::Map<String, Value> {
    let mut spec = serde_json::Map::new();
    if let Some(d) = &s.deletion {
        match core {
            CoreVersion::V1Beta2 => {
                spec.insert("deletion".into(), serde_json::to_value(d).unwrap_or(Value::Null));
            }
            CoreVersion::V1Beta1 => {
                for (k, v) in [
                    ("nodeDrainTimeout", d.node_drain_timeout_seconds),
                    ("nodeVolumeDetachTimeout", d.node_volume_detach_timeout_seconds),
                    ("nodeDeletionTimeout", d.node_deletion_timeout_seconds),
                ] {
                    if let Some(v) = v {
                        spec.insert(k.into(), json!(duration(v)));
                    }
                }
            }
        }
    }
    if let Some(g) = &s.readiness_gates {
        spec.insert("readinessGates".into(), serde_json::to_value(g).unwrap_or(Value::Null));
    }
    spec
}

fn current_settings_json(core: CoreVersion, m: &CpMachine) -> serde_json::Map<String, Value> {
    let mut spec = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<Value>| {
        if let Some(v) = v
            && !v.is_null()
        {
            spec.insert(k.to_string(), v.clone());
        }
    };
    match core {
        CoreVersion::V1Beta2 => put("deletion", &m.spec.deletion),
        CoreVersion::V1Beta1 => {
            put("nodeDrainTimeout", &m.spec.node_drain_timeout);
            put("nodeVolumeDetachTimeout", &m.spec.node_volume_detach_timeout);
            put("nodeDeletionTimeout", &m.spec.node_deletion_timeout);
        }
    }
    put("readinessGates", &m.spec.readiness_gates);
    spec
}

/// What this provider's metadata manager owns on an object (from `managedFields`): label
/// keys, annotation keys, and top-level spec fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    /// Label keys.
    pub labels: BTreeSet<String>,
    /// Annotation keys.
    pub annotations: BTreeSet<String>,
    /// Spec fields.
    pub spec: BTreeSet<String>,
}

fn is_metadata_manager_apply(e: &ManagedFieldsEntry) -> bool {
    e.manager.as_deref() == Some(names::METADATA_FIELD_MANAGER) && e.operation.as_deref() == Some("Apply")
}

/// Drops from an object's metadata, before it enters a watch store, what no reconcile reads
/// (see [`mk8s_runtime::slim`]) but our metadata manager's apply entries, which
/// [`owned_by_metadata_manager`] reads.
pub fn slim_metadata(meta: &mut ObjectMeta) {
    mk8s_runtime::slim::slim_metadata(meta, is_metadata_manager_apply);
}

/// Reads what [`names::METADATA_FIELD_MANAGER`] owns.
pub fn owned_by_metadata_manager(fields: Option<&Vec<ManagedFieldsEntry>>) -> Owned {
    let mut out = Owned::default();
    for e in fields.into_iter().flatten() {
        if !is_metadata_manager_apply(e) {
            continue;
        }
        let Some(f) = e.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        let keys = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_object)
                .map(|o| {
                    o.keys()
                        .filter_map(|k| k.strip_prefix("f:"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        out.labels.extend(keys(f.pointer("/f:metadata/f:labels")));
        out.annotations.extend(keys(f.pointer("/f:metadata/f:annotations")));
        out.spec.extend(keys(f.get("f:spec")));
    }
    out
}

fn map_matches(
    current: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<String, String>,
    owned: &BTreeSet<String>,
) -> bool {
    let empty = BTreeMap::new();
    let current = current.unwrap_or(&empty);
    desired.iter().all(|(k, v)| current.get(k) == Some(v)) && owned.iter().all(|k| desired.contains_key(k))
}

/// Whether an object's propagated metadata (and, for Machines, settings) differ from the
/// desired ones, including keys our metadata manager set earlier and the template dropped.
pub fn needs_metadata_apply(
    meta: &ObjectMeta,
    desired: &ObjectMetaTemplate,
    settings: Option<(&JsonMap, &JsonMap)>,
) -> bool {
    let owned = owned_by_metadata_manager(meta.managed_fields.as_ref());
    if !map_matches(meta.labels.as_ref(), &desired.labels, &owned.labels)
        || !map_matches(meta.annotations.as_ref(), &desired.annotations, &owned.annotations)
    {
        return true;
    }
    match settings {
        Some((current, wanted)) => {
            wanted.iter().any(|(k, v)| current.get(k) != Some(v)) || owned.spec.iter().any(|k| !wanted.contains_key(k))
        }
        None => false,
    }
}

/// The server-side apply body of the metadata manager.
pub fn metadata_apply(
    api_version: &str,
    kind: &str,
    name: &str,
    desired: &ObjectMetaTemplate,
    settings: Option<&serde_json::Map<String, Value>>,
) -> Value {
    let mut v = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "labels": desired.labels, "annotations": desired.annotations},
    });
    if let Some(s) = settings
        && !s.is_empty()
    {
        v["spec"] = Value::Object(s.clone());
    }
    v
}

/// Whether a Machine needs its current settings re-applied.
pub fn machine_needs_metadata_apply(
    core: CoreVersion,
    m: &CpMachine,
    desired: &ObjectMetaTemplate,
    settings: &MachineSettings,
) -> bool {
    let wanted = settings_json(core, settings);
    let current = current_settings_json(core, m);
    needs_metadata_apply(&m.metadata, desired, Some((&current, &wanted)))
}

/// What a new Machine needs.
pub struct NewMachine<'a> {
    /// Name (also its MicroK8sConfig's).
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// Control plane name and uid.
    pub mcp: (&'a str, &'a str),
    /// `spec.version`.
    pub version: &'a str,
    /// Failure domain.
    pub failure_domain: Option<&'a str>,
    /// Infrastructure machine: (group, apiVersion, kind, name).
    pub infra: (&'a str, &'a str, &'a str, &'a str),
    /// The remediation this machine replaces.
    pub remediation_for: Option<&'a RemediationData>,
}

/// The Machine object, in the shape of the core version.
pub fn machine_object(core: CoreVersion, n: &NewMachine<'_>) -> Value {
    let (ig, iav, ik, iname) = n.infra;
    let (config_ref, infra_ref) = match core {
        CoreVersion::V1Beta2 => (
            json!({"apiGroup": names::BOOTSTRAP_GROUP, "kind": names::BOOTSTRAP_KIND, "name": n.name}),
            json!({"apiGroup": ig, "kind": ik, "name": iname}),
        ),
        CoreVersion::V1Beta1 => (
            json!({"apiVersion": format!("{}/v1beta1", names::BOOTSTRAP_GROUP), "kind": names::BOOTSTRAP_KIND,
                   "name": n.name, "namespace": n.namespace}),
            json!({"apiVersion": iav, "kind": ik, "name": iname, "namespace": n.namespace}),
        ),
    };
    let mut annotations: BTreeMap<String, String> = [
        (names::ANNOTATION_CREATED_BY.to_string(), n.mcp.0.to_string()),
        (
            names::ANNOTATION_PRE_TERMINATE_HOOK.to_string(),
            names::PRE_TERMINATE_HOOK_OWNER.to_string(),
        ),
    ]
    .into();
    if let Some(r) = n.remediation_for
        && let Ok(s) = serde_json::to_string(r)
    {
        annotations.insert(names::ANNOTATION_REMEDIATION_FOR.into(), s);
    }
    let mut spec = json!({
        "clusterName": n.cluster,
        "version": n.version,
        "bootstrap": {"configRef": config_ref},
        "infrastructureRef": infra_ref,
    });
    if let Some(fd) = n.failure_domain {
        spec["failureDomain"] = json!(fd);
    }
    json!({
        "apiVersion": core.api_version(),
        "kind": "Machine",
        "metadata": {
            "name": n.name,
            "namespace": n.namespace,
            "labels": required_labels(n.cluster, n.mcp.0),
            "annotations": annotations,
            "ownerReferences": [control_plane_owner(n.mcp.0, n.mcp.1, true, true)],
        },
        "spec": spec,
    })
}

/// The MicroK8sConfig of a new Machine: the normalised `controlPlaneConfig`, with
/// `portCompatibilityRemap` written out even when false.
pub fn config_object(n: &NewMachine<'_>, spec: &MicroK8sConfigSpec) -> Value {
    json!({
        "apiVersion": format!("{}/v1beta1", names::BOOTSTRAP_GROUP),
        "kind": names::BOOTSTRAP_KIND,
        "metadata": {
            "name": n.name,
            "namespace": n.namespace,
            "labels": {consts::LABEL_CLUSTER_NAME: n.cluster},
            "annotations": {names::ANNOTATION_CREATED_BY: n.mcp.0},
            "ownerReferences": [control_plane_owner(n.mcp.0, n.mcp.1, false, true)],
        },
        "spec": spec.normalized(),
    })
}

/// A merge patch setting (or, with `None`, removing) one annotation.
pub fn annotation_patch(key: &str, value: Option<String>) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}

/// The server-side apply body for this provider's conditions on a Machine's status.
pub fn conditions_apply(core: CoreVersion, name: &str, conds: &[Condition]) -> Value {
    // CAPI's Machine schema requires `message` (metav1.Condition), even when empty.
    let conds: Vec<Value> = conds
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.entry("message").or_insert_with(|| json!(""));
            }
            v
        })
        .collect();
    let status = match core {
        CoreVersion::V1Beta2 => json!({"conditions": conds}),
        CoreVersion::V1Beta1 => json!({"v1beta2": {"conditions": conds}}),
    };
    json!({"apiVersion": core.api_version(), "kind": "Machine", "metadata": {"name": name}, "status": status})
}

/// This provider's conditions for a Machine, with transition times carried over from its
/// current ones; `None` when nothing changed.
pub fn machine_conditions(
    current: &[Condition],
    wanted: Vec<Condition>,
    generation: Option<i64>,
    now: &Time,
) -> Option<Vec<Condition>> {
    let mut list = current.to_vec();
    let mut changed = false;
    for w in &wanted {
        let same = conditions::find(current, &w.type_)
            .is_some_and(|c| c.status == w.status && c.reason == w.reason && c.message == w.message);
        changed |= !same;
    }
    if !changed {
        return None;
    }
    for w in wanted.iter().cloned() {
        conditions::set(&mut list, w, generation, now);
    }
    Some(
        list.into_iter()
            .filter(|c| wanted.iter().any(|w| w.type_ == c.type_))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    #[test]
    fn worker_fingerprints_keep_only_what_the_control_plane_reads() {
        let m: CpMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u", "resourceVersion": "1",
                         "labels": {"cluster.x-k8s.io/cluster-name": "c"}},
            "spec": {"clusterName": "c", "version": "v1.32.0"},
            "status": {"phase": "Provisioning",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "A",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let fp = fingerprint(&m);
        assert!(fp.is_some());
        let noise: [fn(&mut CpMachine); 3] = [
            |m| m.metadata.resource_version = Some("2".into()),
            |m| m.status.as_mut().unwrap().base.phase = Some("Running".into()),
            |m| m.status.as_mut().unwrap().base.conditions[0].status = "True".into(),
        ];
        for edit in noise {
            let mut w = m.clone();
            edit(&mut w);
            assert_eq!(fingerprint(&w), fp, "{w:?}");
        }
        let read: [fn(&mut CpMachine); 5] = [
            |m| m.spec.base.provider_id = Some("sim://w".into()),
            |m| {
                m.status.as_mut().unwrap().base.addresses = vec![mk8s_api::capi::MachineAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }]
            },
            |m| m.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH)),
            |m| {
                m.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert(consts::LABEL_CONTROL_PLANE.into(), String::new());
            },
            |m| m.spec.base.cluster_name = "d".into(),
        ];
        for edit in read {
            let mut w = m.clone();
            edit(&mut w);
            assert_ne!(fingerprint(&w), fp, "{w:?}");
        }
        // A control plane Machine counts with its conditions' statuses and reasons, its
        // node, annotations and spec; not with its phase or its conditions' messages and times.
        let mut cp = m.clone();
        cp.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(consts::LABEL_CONTROL_PLANE.into(), String::new());
        cp.status.as_mut().unwrap().v1beta2 = Some(V1Beta2Conditions {
            conditions: Some(vec![Condition::false_("Deleting", "A", "m")]),
        });
        let cp_fp = fingerprint(&cp);
        let read: [fn(&mut CpMachine); 6] = [
            |m| m.status.as_mut().unwrap().base.conditions[0].status = "True".into(),
            |m| {
                m.status.as_mut().unwrap().base.conditions.push(Condition::false_(
                    "HealthCheckSucceeded",
                    "NodeNotFound",
                    "",
                ))
            },
            |m| first_v1beta2(m).reason = "WaitingForPreTerminateHook".into(),
            |m| m.status.as_mut().unwrap().base.node_ref = Some(mk8s_api::capi::NodeRef { name: "n".into() }),
            |m| {
                m.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(names::ANNOTATION_IN_PLACE.into(), "{}".into());
            },
            |m| m.spec.base.version = Some("v1.33.0".into()),
        ];
        for edit in read {
            let mut c = cp.clone();
            edit(&mut c);
            assert_ne!(fingerprint(&c), cp_fp, "{c:?}");
        }
        let noise: [fn(&mut CpMachine); 7] = [
            |m| m.metadata.resource_version = Some("9".into()),
            |m| m.status.as_mut().unwrap().base.conditions[0].reason = "B".into(),
            |m| {
                m.status.as_mut().unwrap().base.conditions.push(Condition::false_(
                    "InfrastructureReady",
                    "NotProvisioned",
                    "",
                ))
            },
            |m| m.status.as_mut().unwrap().base.phase = Some("Running".into()),
            |m| m.status.as_mut().unwrap().base.conditions[0].message = "* Infrastructure: waiting".into(),
            |m| m.status.as_mut().unwrap().base.conditions[0].last_transition_time = None,
            |m| first_v1beta2(m).message = "other".into(),
        ];
        for edit in noise {
            let mut c = cp.clone();
            edit(&mut c);
            assert_eq!(fingerprint(&c), cp_fp, "{c:?}");
        }
        // So does a Machine the control plane controls, labelled or not.
        let mut owned = m.clone();
        owned.metadata.owner_references = Some(vec![control_plane_owner("cp", "uid", true, true)]);
        let owned_fp = fingerprint(&owned);
        owned.status.as_mut().unwrap().base.conditions[0].status = "True".into();
        assert_ne!(fingerprint(&owned), owned_fp);
    }

    /// The first of a test Machine's `status.v1beta2.conditions`.
    fn first_v1beta2(m: &mut CpMachine) -> &mut Condition {
        &mut m
            .status
            .as_mut()
            .unwrap()
            .v1beta2
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
    }

    #[test]
    fn a_control_plane_reads_no_condition_outside_its_list() {
        let base: CpMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "labels": {"cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": "c"},
            "status": {}
        }))
        .unwrap();
        let with = |ty: &str, status: &str, reason: &str| {
            let mut m = base.clone();
            let c = Condition {
                status: status.into(),
                ..Condition::false_(ty, reason, "")
            };
            m.status.as_mut().unwrap().base.conditions = vec![c.clone()];
            m.status.as_mut().unwrap().v1beta2 = Some(V1Beta2Conditions {
                conditions: Some(vec![c]),
            });
            m
        };
        let seen = |m: &CpMachine| (view(m, None, None), waiting_for_pre_terminate(m));
        for ty in READ_CONDITIONS.iter().chain(&[
            "InfrastructureReady",
            "BootstrapConfigReady",
            "NodeReady",
            "NodeHealthy",
            "UpToDate",
            "Paused",
            "Deleted",
            "DrainingSucceeded",
        ]) {
            let read = READ_CONDITIONS.contains(ty);
            for (a, b) in [
                (("True", "A"), ("False", "A")),
                (("False", "A"), ("False", "WaitingForPreTerminateHook")),
            ] {
                let (x, y) = (with(ty, a.0, a.1), with(ty, b.0, b.1));
                if !read {
                    assert_eq!(seen(&x), seen(&y), "{ty} is read but not in READ_CONDITIONS");
                    assert_eq!(fingerprint(&x), fingerprint(&y), "{ty}");
                } else if seen(&x) != seen(&y) {
                    assert_ne!(fingerprint(&x), fingerprint(&y), "{ty} {a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        for (secs, go) in [
            (0, "0s"),
            (42, "42s"),
            (60, "1m0s"),
            (90, "1m30s"),
            (300, "5m0s"),
            (3600, "1h0m0s"),
            (3661, "1h1m1s"),
            (86400, "24h0m0s"),
            (-90, "-1m30s"),
        ] {
            assert_eq!(duration(secs), go, "{secs}");
        }
    }

    #[test]
    fn machines_take_the_shape_of_the_core_version() {
        let n = NewMachine {
            name: "cp-abcde",
            namespace: "ns",
            cluster: "c",
            mcp: ("cp", "uid-1"),
            version: "v1.33.1",
            failure_domain: Some("z1"),
            infra: (
                "infrastructure.cluster.x-k8s.io",
                "infrastructure.cluster.x-k8s.io/v1beta2",
                "SimMachine",
                "tpl-abcde",
            ),
            remediation_for: None,
        };
        let v2 = machine_object(CoreVersion::V1Beta2, &n);
        assert_eq!(v2["apiVersion"], "cluster.x-k8s.io/v1beta2");
        assert_eq!(
            v2["spec"]["bootstrap"]["configRef"],
            json!({"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "MicroK8sConfig", "name": "cp-abcde"})
        );
        assert_eq!(
            v2["spec"]["infrastructureRef"]["apiGroup"],
            "infrastructure.cluster.x-k8s.io"
        );
        assert_eq!(v2["spec"]["failureDomain"], "z1");
        assert_eq!(v2["metadata"]["labels"]["cluster.x-k8s.io/control-plane"], "");
        assert_eq!(v2["metadata"]["labels"]["cluster.x-k8s.io/control-plane-name"], "cp");
        let owner = &v2["metadata"]["ownerReferences"][0];
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(owner["apiVersion"], "controlplane.cluster.x-k8s.io/v1beta1");
        assert!(v2["metadata"]["annotations"][names::ANNOTATION_PRE_TERMINATE_HOOK].is_string());
        let v1 = machine_object(CoreVersion::V1Beta1, &n);
        assert_eq!(
            v1["spec"]["infrastructureRef"]["apiVersion"],
            "infrastructure.cluster.x-k8s.io/v1beta2"
        );
        assert_eq!(v1["spec"]["bootstrap"]["configRef"]["namespace"], "ns");
        let cfg = config_object(
            &n,
            &MicroK8sConfigSpec {
                cluster_configuration: Some(mk8s_api::bootstrap::ClusterConfiguration {
                    port_compatibility_remap: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(cfg["spec"]["clusterConfiguration"]["portCompatibilityRemap"], false);
        assert!(cfg["metadata"]["ownerReferences"][0].get("controller").is_none());
        assert_eq!(cfg["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
    }

    #[test]
    fn settings_in_both_shapes() {
        let s = MachineSettings {
            deletion: Some(MachineDeletionSpec {
                node_drain_timeout_seconds: Some(30),
                ..Default::default()
            }),
            readiness_gates: None,
        };
        assert_eq!(
            Value::Object(settings_json(CoreVersion::V1Beta2, &s)),
            json!({"deletion": {"nodeDrainTimeoutSeconds": 30}})
        );
        assert_eq!(
            Value::Object(settings_json(CoreVersion::V1Beta1, &s)),
            json!({"nodeDrainTimeout": "30s"})
        );
    }

    #[test]
    fn slimming_keeps_what_the_metadata_check_reads() {
        let entry = |manager: &str, op: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
            )),
            ..Default::default()
        };
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry("capi-manager", "Update"),
                entry(names::METADATA_FIELD_MANAGER, "Apply"),
                entry(names::METADATA_FIELD_MANAGER, "Update"),
                entry("kubectl", "Apply"),
            ]),
            annotations: Some(
                [
                    (
                        mk8s_runtime::slim::ANNOTATION_LAST_APPLIED.to_string(),
                        "{...}".to_string(),
                    ),
                    ("keep".to_string(), "me".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let before = owned_by_metadata_manager(meta.managed_fields.as_ref());
        slim_metadata(&mut meta);
        assert_eq!(meta.managed_fields.as_ref().map(Vec::len), Some(1));
        assert_eq!(owned_by_metadata_manager(meta.managed_fields.as_ref()), before);
        assert_eq!(before.labels, ["team".to_string()].into());
        assert_eq!(meta.annotations, Some([("keep".to_string(), "me".to_string())].into()));

        let mut other = ObjectMeta {
            managed_fields: Some(vec![entry("capi-manager", "Update")]),
            ..Default::default()
        };
        slim_metadata(&mut other);
        assert_eq!(other.managed_fields, None);
    }

    #[test]
    fn removed_template_keys_are_detected_through_managed_fields() {
        let mut meta = ObjectMeta {
            labels: Some([("team".to_string(), "a".to_string())].into()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some(names::METADATA_FIELD_MANAGER.into()),
                operation: Some("Apply".into()),
                fields_v1: Some(FieldsV1(json!({"f:metadata": {"f:labels": {"f:team": {}}}}))),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut desired = ObjectMetaTemplate::default();
        assert!(
            needs_metadata_apply(&meta, &desired, None),
            "team was dropped from the template"
        );
        desired.labels.insert("team".into(), "a".into());
        assert!(!needs_metadata_apply(&meta, &desired, None));
        desired.labels.insert("team".into(), "b".into());
        assert!(needs_metadata_apply(&meta, &desired, None));
        meta.managed_fields = None;
        desired.labels.clear();
        assert!(
            !needs_metadata_apply(&meta, &desired, None),
            "a label someone else set is not ours"
        );
    }

    #[test]
    fn machine_conditions_keep_transition_times() {
        let t1 = Time(Timestamp::from_second(10).unwrap());
        let t2 = Time(Timestamp::from_second(20).unwrap());
        let first = machine_conditions(&[], vec![Condition::true_("UpToDate", "UpToDate", "")], Some(1), &t1).unwrap();
        assert_eq!(first[0].last_transition_time, Some(t1.clone()));
        assert!(machine_conditions(&first, vec![Condition::true_("UpToDate", "UpToDate", "")], Some(1), &t2).is_none());
        let again = machine_conditions(
            &first,
            vec![Condition::true_("UpToDate", "UpToDate", "x")],
            Some(1),
            &t2,
        )
        .unwrap();
        assert_eq!(again[0].last_transition_time, Some(t1));
    }

    #[test]
    fn template_metadata_skips_reserved_keys() {
        let mut spec = MicroK8sControlPlaneSpec::default();
        spec.machine_template.metadata = Some(ObjectMetaTemplate {
            labels: [
                ("cluster.x-k8s.io/cluster-name".to_string(), "evil".to_string()),
                ("team".to_string(), "a".to_string()),
            ]
            .into(),
            annotations: [(names::ANNOTATION_PRE_TERMINATE_HOOK.to_string(), "x".to_string())].into(),
        });
        let t = template_metadata(&spec);
        assert_eq!(t.labels.len(), 1);
        assert!(t.annotations.is_empty());
    }
}
