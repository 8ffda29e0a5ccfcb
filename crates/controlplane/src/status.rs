//! The status of a control plane, computed from the [`ControlPlane`] and the [`Plan`] (pure,
//! table-tested).
//!
//! Counters count Machines (v1beta2 meaning): `readyReplicas` are Machines whose `Ready`
//! condition is true and `availableReplicas` those whose `Available` is; Canonical's provider
//! counted Ready workload Nodes instead. `version`/`versions` follow snap tracks: a node that
//! runs the spec's track reports the spec's version (the snap installs the newest patch of its
//! track, which may differ from the spec's patch), so CAPI sees the control plane as upgraded
//! once every machine runs the spec's track and releases the workers it holds back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mk8s_api::conditions::{self, Condition, DeprecatedStatus, Severity, V1Beta1DeprecatedStatus};
use mk8s_api::consts::{LABEL_CLUSTER_NAME, LABEL_CONTROL_PLANE};
use mk8s_api::controlplane::{ControlPlaneInitialization, LastRemediation, MicroK8sControlPlaneStatus, StatusVersion};
use mk8s_api::version::{self, KubeVersion};

use crate::model::{ControlPlane, MachineView, Reachability};
use crate::plan::{Plan, Step};
use crate::remediation::{self, RemediationDecision};
use crate::spec::SpecProblem;
use crate::upgrade;

/// Condition types.
pub mod types {
    /// Summary, for v1beta1 readers (mirrored into the Cluster's `ControlPlaneReady`).
    pub const READY: &str = "Ready";
    /// The control plane serves (v1beta2 contract: mirrored into `ControlPlaneAvailable`).
    pub const AVAILABLE: &str = "Available";
    /// Reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// The control plane is being deleted.
    pub const DELETING: &str = "Deleting";
    /// The first node accepts joins.
    pub const INITIALIZED: &str = "Initialized";
    /// The cluster CA is readable and the kubeconfig is current.
    pub const CERTIFICATES_AVAILABLE: &str = "CertificatesAvailable";
    /// The workload API server's Nodes are watched.
    pub const WORKLOAD_REACHABLE: &str = "WorkloadClusterReachable";
    /// Every Machine is Ready.
    pub const MACHINES_READY: &str = "MachinesReady";
    /// Every Machine matches the spec.
    pub const MACHINES_UP_TO_DATE: &str = "MachinesUpToDate";
    /// Outdated machines are being replaced or upgraded.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Machines are being added.
    pub const SCALING_UP: &str = "ScalingUp";
    /// Machines are being removed.
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// Unhealthy machines are being remediated (or why not).
    pub const REMEDIATING: &str = "Remediating";
    /// The spec can be acted on.
    pub const SPEC_VALID: &str = "SpecValid";
    /// `spec.replicas` is odd (advice).
    pub const REPLICA_COUNT_RECOMMENDED: &str = "ReplicaCountRecommended";
    /// v1beta1 only (Canonical's): replicas match the spec.
    pub const RESIZED: &str = "Resized";
    /// v1beta1 only (Canonical's): machine creation works.
    pub const MACHINES_CREATED: &str = "MachinesCreated";
    /// v1beta1 only (Canonical's): every machine has an InternalIP.
    pub const MACHINES_BOOTSTRAPPED: &str = "MachinesBootstrapped";
    /// On Machines: whether the Machine matches the spec.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// On Machines: the owner's remediation (CAPI's condition).
    pub const OWNER_REMEDIATED: &str = "OwnerRemediated";
}

use types::*;

/// The label selector of control plane Machines (Canonical's exact string).
pub fn selector(cluster: &str) -> String {
    format!("{LABEL_CLUSTER_NAME}={cluster},{LABEL_CONTROL_PLANE}=")
}

/// Facts the reconciler adds to the computation.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// `CertificatesAvailable` as the kubeconfig step found it.
    pub certificates: Option<Condition>,
    /// A machine creation failed: reason and message.
    pub creation_error: Option<(String, String)>,
    /// Messages of operations in flight (member removals, in-place upgrades).
    pub in_flight: Vec<String>,
}

/// Severity of false conditions in the v1beta1 view, by reason.
pub fn severity(c: &Condition) -> Severity {
    match c.reason.as_str() {
        r if r.starts_with("Invalid") => Severity::Error,
        "DowngradeNotSupported"
        | "MinorVersionSkipNotSupported"
        | "CannotBeRemediated"
        | "RemediationNotAllowed"
        | "InPlaceUpgradeFailed"
        | "InfrastructureTemplateCloningFailed"
        | "BootstrapTemplateCloningFailed"
        | "MachineGenerationFailed" => Severity::Error,
        "WorkloadClusterUnreachable"
        | "NoQuorum"
        | "ScalingUp"
        | "ScalingDown"
        | "NotReady"
        | "RollingOut"
        | "EvenReplicas" => Severity::Warning,
        _ => Severity::Info,
    }
}

/// The version a machine counts with: the spec's version when it runs the spec's track, else
/// its kubelet's version, else its `spec.version`.
fn effective_version(cp: &ControlPlane, m: &MachineView) -> Option<String> {
    let v = cp.kubelet_version(m).or_else(|| m.version.clone())?;
    let parsed = KubeVersion::parse(&v).ok()?;
    if parsed.track() == cp.desired.track() {
        Some(cp.desired.version_string.clone())
    } else {
        Some(v)
    }
}

/// `status.versions` (oldest first) and `status.version` (the oldest, once every machine
/// has one).
pub fn versions(cp: &ControlPlane) -> (Option<Vec<StatusVersion>>, Option<String>) {
    let all: Vec<Option<String>> = cp.machines.iter().map(|m| effective_version(cp, m)).collect();
    let mut known: Vec<(KubeVersion, String)> = all
        .iter()
        .flatten()
        .filter_map(|v| KubeVersion::parse(v).ok().map(|p| (p, v.clone())))
        .collect();
    if known.is_empty() {
        return (None, None);
    }
    known.sort_by(|a, b| version::compare(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
    let mut out: Vec<StatusVersion> = vec![];
    for (_, v) in &known {
        match out.last_mut() {
            Some(last) if &last.version == v => last.replicas = Some(last.replicas.unwrap_or(0) + 1),
            _ => out.push(StatusVersion {
                version: v.clone(),
                replicas: Some(1),
            }),
        }
    }
    let oldest = if all.iter().all(Option::is_some) {
        Some(known[0].1.clone())
    } else {
        None
    };
    (Some(out), oldest)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Out-of-date machines, deleting ones included: a rollout lasts until the machines it
/// deletes are gone (their drain and member removal are part of it), as with KCP.
fn outdated_machines(cp: &ControlPlane, plan: &Plan) -> usize {
    plan.outdated.len()
        + cp.machines
            .iter()
            .filter(|m| m.deleting && !upgrade::outdated(cp, m).is_empty())
            .count()
}

/// The primary activity a wait message belongs to, from the machines not being deleted
/// (`current`), all machines (`all`) and the out-of-date ones.
fn activity(desired: i32, current: i32, all: i32, outdated: usize) -> &'static str {
    if current < desired {
        SCALING_UP
    } else if all > desired {
        SCALING_DOWN
    } else if outdated > 0 {
        ROLLING_OUT
    } else {
        ""
    }
}

fn step_note(plan: &Plan) -> Option<String> {
    match &plan.step {
        Step::Wait(m) => Some(m.clone()),
        Step::Create { .. } => Some("creating a machine".into()),
        Step::Delete { machine, .. } => Some(format!("deleting machine {machine}")),
        Step::InPlace { machine, track } => Some(format!("upgrading machine {machine} in place to {track}")),
        Step::Idle | Step::ClearRemediation => None,
    }
}

fn with_note(base: String, note: Option<&String>) -> String {
    match note {
        Some(n) if !n.is_empty() => format!("{base}: {n}"),
        _ => base,
    }
}

/// The condition of this type in the previous status, if there was one.
fn previous(prev: &MicroK8sControlPlaneStatus, type_: &str) -> Option<Condition> {
    prev.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Computes the full status.
pub fn compute(
    cp: &ControlPlane,
    plan: &Plan,
    prev: &MicroK8sControlPlaneStatus,
    extra: &Extra,
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    // Canonical's own types are not carried over (after a takeover its last values would stay
    // forever, and show twice in the v1beta1 list): they live in the v1beta1 list only.
    let mut list: Vec<Condition> = prev.conditions.iter().filter(|c| !canonical_only(c)).cloned().collect();
    let mut set = |c: Condition| conditions::set(&mut list, c, generation, now);
    let initialized = cp.initialized();
    let desired = cp.desired.replicas;
    let current = plan.current;
    // Deleting machines count too: a scale-down lasts until they are gone, as with KCP.
    let all = count(cp.machines.len());
    let outdated = outdated_machines(cp, plan);
    let activity = activity(desired, current, all, outdated);
    let mut note = step_note(plan);
    // A creation that failed (a missing template, a refused clone) says so where a v1beta2
    // reader looks, not only in the v1beta1 `MachinesCreated`.
    if let Some((_, message)) = &extra.creation_error {
        note = Some(format!("creating a machine failed: {message}"));
    }
    if !extra.in_flight.is_empty() {
        let joined = extra.in_flight.join("; ");
        note = Some(match note {
            Some(n) if !extra.in_flight.iter().any(|f| f == &n) => format!("{joined}; {n}"),
            _ => joined,
        });
    }

    // Workload reachability and availability.
    let reach = match &cp.reachability {
        Reachability::Reachable => Condition::true_(WORKLOAD_REACHABLE, "Reachable", ""),
        Reachability::NoKubeconfig => Condition::false_(
            WORKLOAD_REACHABLE,
            "WaitingForKubeconfig",
            "waiting for the cluster's kubeconfig",
        ),
        Reachability::Connecting => {
            Condition::false_(WORKLOAD_REACHABLE, "Connecting", "listing the workload cluster's Nodes")
        }
        Reachability::Unreachable(e) => Condition::false_(WORKLOAD_REACHABLE, "WorkloadClusterUnreachable", e.clone()),
    };
    let members: Vec<&MachineView> = cp.active().filter(|m| cp.node_of(m).is_some()).collect();
    let ready_nodes = members.iter().filter(|m| cp.node_ready(m)).count();
    // Quorum over the members that are up: a node that has just joined reports NotReady until
    // its CNI runs, but its dqlite member votes (counting it as down made `Available` flap on
    // every join).
    let up = members
        .iter()
        .filter(|m| cp.node_of(m).is_some_and(|n| n.ready || n.reporting))
        .count();
    let available = if !initialized {
        Condition::false_(
            AVAILABLE,
            "NotInitialized",
            "waiting for the first control plane node to accept joins",
        )
    } else if !reach.is_true() {
        Condition::false_(AVAILABLE, "WorkloadClusterUnreachable", reach.message.clone())
    } else if ready_nodes == 0 || up * 2 <= members.len() {
        Condition::false_(
            AVAILABLE,
            "NoQuorum",
            format!(
                "{ready_nodes} of {} control plane nodes are Ready and {up} report at all: dqlite needs a majority up and one node Ready",
                members.len()
            ),
        )
    } else {
        Condition::true_(AVAILABLE, "Available", "")
    };
    // A manager that just started (or a workload client just rebuilt) is `Connecting` until
    // its Node cache has listed once; the sync itself triggers the next reconcile. What was
    // known before stands meanwhile, so a restart or a takeover never flaps `Available`.
    // (A status written by Canonical's provider has `Available` but no `WorkloadReachable`.)
    let (reach, available) = match (&cp.reachability, previous(prev, AVAILABLE)) {
        (Reachability::Connecting, Some(a)) if initialized => (previous(prev, WORKLOAD_REACHABLE).unwrap_or(reach), a),
        _ => (reach, available),
    };
    set(reach);
    set(available.clone());

    set(if initialized {
        Condition::true_(INITIALIZED, "Initialized", "")
    } else if cp.machines.is_empty() {
        Condition::false_(
            INITIALIZED,
            "WaitingForMachines",
            match &extra.creation_error {
                Some((_, message)) => format!("no control plane machine yet: creating one failed: {message}"),
                None => "no control plane machine yet".into(),
            },
        )
    } else {
        Condition::false_(
            INITIALIZED,
            "WaitingForJoinsAccepted",
            format!(
                "waiting for the first control plane node to register the join token and mark its Node {}=true",
                mk8s_api::consts::NODE_LABEL_JOINS_ACCEPTED
            ),
        )
    });

    // Machines.
    let not_ready: Vec<&str> = cp
        .machines
        .iter()
        .filter(|m| !m.ready)
        .map(|m| m.name.as_str())
        .collect();
    let machines_ready = if cp.machines.is_empty() {
        Condition::false_(MACHINES_READY, "NoMachines", "no control plane machines")
    } else if not_ready.is_empty() {
        Condition::true_(MACHINES_READY, "Ready", "")
    } else {
        Condition::false_(
            MACHINES_READY,
            "NotReady",
            format!("not Ready: {}", not_ready.join(", ")),
        )
    };
    set(machines_ready.clone());
    set(if plan.outdated.is_empty() {
        Condition::true_(MACHINES_UP_TO_DATE, "UpToDate", "")
    } else {
        Condition::false_(
            MACHINES_UP_TO_DATE,
            "NotUpToDate",
            plan.outdated
                .iter()
                .map(|(m, r)| {
                    format!(
                        "{m}: {}",
                        r.iter().map(upgrade::Outdated::describe).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    });

    // Operations.
    let rolling_out = if let Some(vp) = &plan.version_problem {
        Condition::false_(ROLLING_OUT, vp.reason(), vp.message())
    } else if outdated == 0 {
        Condition::false_(ROLLING_OUT, "NotRollingOut", "")
    } else {
        let how = if plan.rolling {
            "replacing"
        } else {
            "upgrading in place"
        };
        let base = format!("{how} {outdated} out-of-date machine(s)");
        Condition::true_(
            ROLLING_OUT,
            "RollingOut",
            with_note(base, note.as_ref().filter(|_| activity == ROLLING_OUT)),
        )
    };
    set(rolling_out.clone());
    let scaling_up = if current < desired {
        Condition::true_(
            SCALING_UP,
            "ScalingUp",
            with_note(
                format!("scaling up from {current} to {desired} replicas"),
                note.as_ref().filter(|_| activity == SCALING_UP),
            ),
        )
    } else {
        Condition::false_(SCALING_UP, "NotScalingUp", "")
    };
    set(scaling_up.clone());
    let scaling_down = if all > desired {
        Condition::true_(
            SCALING_DOWN,
            "ScalingDown",
            with_note(
                format!("scaling down from {all} to {desired} replicas"),
                note.as_ref().filter(|_| activity == SCALING_DOWN),
            ),
        )
    } else {
        Condition::false_(SCALING_DOWN, "NotScalingDown", "")
    };
    set(scaling_down.clone());
    set(match &plan.remediation {
        RemediationDecision::None => Condition::false_(REMEDIATING, "NotRemediating", ""),
        RemediationDecision::InProgress(m) => Condition::true_(
            REMEDIATING,
            "Remediating",
            with_note(format!("remediating machine {m}"), note.as_ref()),
        ),
        RemediationDecision::Remediate { machine, .. } => match &plan.step {
            Step::Wait(why) => Condition::true_(
                REMEDIATING,
                "RemediationDeferred",
                format!("machine {machine} needs remediation: {why}"),
            ),
            _ => Condition::true_(
                REMEDIATING,
                "Remediating",
                format!("deleting unhealthy machine {machine}"),
            ),
        },
        RemediationDecision::Blocked {
            machine,
            reason,
            message,
            ..
        } => Condition::true_(
            REMEDIATING,
            if *reason == "CannotBeRemediated" {
                "RemediationNotAllowed"
            } else {
                "RemediationDeferred"
            },
            format!("machine {machine} needs remediation: {message}"),
        ),
    });
    let spec_valid = match (&plan.version_problem, &cp.desired.config_problem) {
        (Some(vp), _) => Condition::false_(SPEC_VALID, vp.reason(), vp.message()),
        (None, Some(p)) => Condition::false_(SPEC_VALID, p.reason, p.message.clone()),
        (None, None) if cp.desired.replicas_defaulted => Condition::true_(
            SPEC_VALID,
            "ReplicasDefaulted",
            "spec.replicas is not set: using 1 (set it explicitly; 3 tolerates the loss of a node)",
        ),
        (None, None) => Condition::true_(SPEC_VALID, "Valid", ""),
    };
    set(spec_valid.clone());
    set(if desired % 2 == 0 {
        Condition::false_(
            REPLICA_COUNT_RECOMMENDED,
            "EvenReplicas",
            format!(
                "{desired} control plane machines tolerate no more node failures than {}: an odd number is recommended",
                desired - 1
            ),
        )
    } else {
        Condition::true_(REPLICA_COUNT_RECOMMENDED, "OddReplicas", "")
    });
    set(Condition::false_(PAUSED, "NotPaused", ""));
    set(Condition::false_(DELETING, "NotDeleting", ""));
    if let Some(c) = &extra.certificates {
        set(c.clone());
    }
    // The v1beta1 summary.
    let blockers = [&spec_valid, &available, &machines_ready];
    let ready = if let Some(b) = blockers.iter().find(|c| !c.is_true()) {
        Condition::false_(READY, &b.reason, b.message.clone())
    } else if let Some(b) = [&scaling_up, &scaling_down, &rolling_out]
        .into_iter()
        .find(|c| c.is_true())
    {
        Condition::false_(READY, &b.reason, b.message.clone())
    } else {
        Condition::true_(READY, "Ready", "")
    };
    set(ready);

    // Canonical's v1beta1 conditions, kept for v1beta1 readers.
    let mut v1 = v1beta1_extra(prev);
    let mut set1 = |c: Condition| conditions::set(&mut v1, c, generation, now);
    set1(if current == desired {
        Condition::true_(RESIZED, "Resized", "")
    } else if current < desired {
        Condition::false_(
            RESIZED,
            "ScalingUp",
            format!("Scaling up control plane to {desired} replicas (actual {current})"),
        )
    } else {
        Condition::false_(
            RESIZED,
            "ScalingDown",
            format!("Scaling down control plane to {desired} replicas (actual {current})"),
        )
    });
    set1(match &extra.creation_error {
        Some((reason, message)) => Condition::false_(MACHINES_CREATED, reason, message.clone()),
        None => Condition::true_(MACHINES_CREATED, "Created", ""),
    });
    let without_ip = cp.machines.iter().find(|m| m.ips.is_empty());
    set1(if cp.machines.is_empty() {
        Condition::false_(MACHINES_BOOTSTRAPPED, "WaitingForMachines", "")
    } else if let Some(m) = without_ip {
        Condition::false_(
            MACHINES_BOOTSTRAPPED,
            "WaitingForMicroK8sBoot",
            format!(
                "machine {:?} doesn't have an InternalIP (or ExternalIP) address yet",
                m.name
            ),
        )
    } else {
        Condition::true_(MACHINES_BOOTSTRAPPED, "Bootstrapped", "")
    });
    let mut v1beta1 = conditions::to_v1beta1(&list, severity);
    v1beta1.extend(conditions::to_v1beta1(&v1, severity));

    let (versions, version) = versions(cp);
    let ready_replicas = count(cp.machines.iter().filter(|m| m.ready).count());
    let replicas = all;
    let up_to_date = count(cp.active().filter(|m| upgrade::up_to_date(cp, m)).count());
    let all_have_ip = !cp.machines.is_empty() && without_ip.is_none();
    MicroK8sControlPlaneStatus {
        selector: Some(selector(&cp.cluster)),
        replicas: Some(replicas),
        ready_replicas: Some(ready_replicas),
        available_replicas: Some(count(cp.machines.iter().filter(|m| m.available).count())),
        up_to_date_replicas: Some(up_to_date),
        updated_replicas: Some(up_to_date),
        unavailable_replicas: Some((replicas - ready_replicas).max(0)),
        initialized,
        ready: initialized && cp.active().any(|m| cp.node_ready(m)),
        bootstrapped: if prev.bootstrapped == Some(true) || all_have_ip {
            Some(true)
        } else {
            prev.bootstrapped
        },
        version,
        versions,
        initialization: Some(ControlPlaneInitialization {
            control_plane_initialized: Some(initialized),
        }),
        observed_generation: generation,
        conditions: list,
        last_remediation: remediation::last_remediation(cp).map(|r| LastRemediation {
            machine: r.machine,
            time: Time(r.timestamp),
            retry_count: r.retry_count,
        }),
        deprecated: Some(DeprecatedStatus {
            v1beta1: Some(V1Beta1DeprecatedStatus { conditions: v1beta1 }),
        }),
    }
}

/// Canonical's v1beta1-only conditions from the previous status, as metav1 conditions (so
/// that their transition times carry over).
/// Condition types Canonical's provider writes into `status.conditions` and this one does not:
/// its v1beta1-only ones (kept in `deprecated.v1beta1.conditions`) and two it defines but
/// nobody reads.
const CANONICAL_ONLY: [&str; 5] = [
    RESIZED,
    MACHINES_CREATED,
    MACHINES_BOOTSTRAPPED,
    "ControlPlaneComponentsHealthy",
    "EtcdClusterHealthyCondition",
];

fn canonical_only(c: &Condition) -> bool {
    CANONICAL_ONLY.contains(&c.type_.as_str())
}

/// The previous v1beta1-only conditions: from our v1beta1 list, else (a status written by
/// Canonical's provider) from `status.conditions`, so their transition times carry over.
fn v1beta1_extra(prev: &MicroK8sControlPlaneStatus) -> Vec<Condition> {
    let ours = prev.deprecated.as_ref().and_then(|d| d.v1beta1.as_ref());
    if ours.is_none() {
        return prev
            .conditions
            .iter()
            .filter(|c| [RESIZED, MACHINES_CREATED, MACHINES_BOOTSTRAPPED].contains(&c.type_.as_str()))
            .cloned()
            .collect();
    }
    ours.map(|v| {
        v.conditions
            .iter()
            .filter(|c| [RESIZED, MACHINES_CREATED, MACHINES_BOOTSTRAPPED].contains(&c.type_.as_str()))
            .map(|c| Condition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                observed_generation: None,
                last_transition_time: c.last_transition_time.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Status of a control plane whose spec cannot be acted on: the previous status with
/// `SpecValid` false and the counters of what exists.
pub fn invalid(
    prev: &MicroK8sControlPlaneStatus,
    cluster: Option<&str>,
    machines: usize,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    let mut st = prev.clone();
    let reason = problems.first().map_or("Invalid", |p| p.reason);
    let message = problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    conditions::set(
        &mut st.conditions,
        Condition::false_(SPEC_VALID, reason, message.clone()),
        generation,
        now,
    );
    conditions::set(
        &mut st.conditions,
        Condition::false_(READY, reason, message),
        generation,
        now,
    );
    conditions::set(
        &mut st.conditions,
        Condition::false_(PAUSED, "NotPaused", ""),
        generation,
        now,
    );
    finish_partial(st, cluster, machines, generation)
}

/// Status of a control plane whose spec cannot be acted on while it goes on with what does
/// not need the spec ([`crate::spec::held`]): [`invalid`], plus whether the control plane is
/// initialized, which is known from its nodes whatever the spec says. A spec broken after
/// the first node came up then does not keep the Cluster (and every worker) uninitialized.
pub fn held(
    prev: &MicroK8sControlPlaneStatus,
    cp: &ControlPlane,
    problems: &[SpecProblem],
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    let mut st = invalid(prev, Some(&cp.cluster), cp.machines.len(), problems, generation, now);
    if cp.initialized() {
        st.initialized = true;
        st.initialization = Some(ControlPlaneInitialization {
            control_plane_initialized: Some(true),
        });
        conditions::set(
            &mut st.conditions,
            Condition::true_(INITIALIZED, "Initialized", ""),
            generation,
            now,
        );
    }
    st
}

/// Status while paused: `Paused` true, the rest untouched.
pub fn paused(
    prev: &MicroK8sControlPlaneStatus,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    let mut st = prev.clone();
    conditions::set(
        &mut st.conditions,
        Condition::true_(PAUSED, "Paused", message),
        generation,
        now,
    );
    st.deprecated = Some(DeprecatedStatus {
        v1beta1: Some(V1Beta1DeprecatedStatus {
            conditions: merge_v1beta1(prev, &st.conditions),
        }),
    });
    st.conditions.retain(|c| !canonical_only(c));
    st
}

/// Status while waiting before anything can be created (no Cluster, infrastructure not
/// ready, no endpoint): `reason`/`message` on `Available` and `Ready`.
pub fn waiting(
    prev: &MicroK8sControlPlaneStatus,
    cluster: Option<&str>,
    machines: usize,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    let mut st = prev.clone();
    for ty in [READY, AVAILABLE] {
        if !(ty == AVAILABLE && st.initialized) {
            conditions::set(
                &mut st.conditions,
                Condition::false_(ty, reason, message),
                generation,
                now,
            );
        }
    }
    conditions::set(
        &mut st.conditions,
        Condition::false_(PAUSED, "NotPaused", ""),
        generation,
        now,
    );
    finish_partial(st, cluster, machines, generation)
}

/// Status while deleting: `Deleting` true with the message.
pub fn deleting(
    prev: &MicroK8sControlPlaneStatus,
    cluster: Option<&str>,
    machines: usize,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sControlPlaneStatus {
    let mut st = prev.clone();
    conditions::set(
        &mut st.conditions,
        Condition::true_(DELETING, "Deleting", message),
        generation,
        now,
    );
    conditions::set(
        &mut st.conditions,
        Condition::false_(READY, "Deleting", message),
        generation,
        now,
    );
    finish_partial(st, cluster, machines, generation)
}

fn finish_partial(
    mut st: MicroK8sControlPlaneStatus,
    cluster: Option<&str>,
    machines: usize,
    generation: Option<i64>,
) -> MicroK8sControlPlaneStatus {
    if let Some(c) = cluster {
        st.selector = Some(selector(c));
    }
    st.replicas = Some(count(machines));
    let ready = st.ready_replicas.unwrap_or(0).min(count(machines));
    st.ready_replicas = Some(ready);
    st.unavailable_replicas = Some((count(machines) - ready).max(0));
    st.observed_generation = generation;
    st.deprecated = Some(DeprecatedStatus {
        v1beta1: Some(V1Beta1DeprecatedStatus {
            conditions: merge_v1beta1(&st, &st.conditions),
        }),
    });
    st.conditions.retain(|c| !canonical_only(c));
    st
}

/// The v1beta1 view of `list`, keeping Canonical's v1beta1-only conditions of `prev`.
fn merge_v1beta1(prev: &MicroK8sControlPlaneStatus, list: &[Condition]) -> Vec<conditions::V1Beta1Condition> {
    let ours: Vec<Condition> = list.iter().filter(|c| !canonical_only(c)).cloned().collect();
    let mut out = conditions::to_v1beta1(&ours, severity);
    out.extend(conditions::to_v1beta1(&v1beta1_extra(prev), severity));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::*;
    use crate::plan::plan;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(100_000).unwrap())
    }

    fn status_of(cp: &ControlPlane) -> MicroK8sControlPlaneStatus {
        let p = plan(cp, None, Some(true));
        compute(
            cp,
            &p,
            &MicroK8sControlPlaneStatus::default(),
            &Extra::default(),
            Some(3),
            &now(),
        )
    }

    fn cond<'a>(st: &'a MicroK8sControlPlaneStatus, ty: &str) -> &'a Condition {
        conditions::find(&st.conditions, ty).unwrap_or_else(|| panic!("no {ty} in {:?}", st.conditions))
    }

    #[test]
    fn selector_is_canonicals() {
        assert_eq!(
            selector("c1"),
            "cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/control-plane="
        );
    }

    /// A status written by Canonical's provider (taken over mid-scale): its own condition types
    /// leave `conditions`, and the v1beta1 list carries each type once, with current values.
    #[test]
    fn canonicals_conditions_do_not_linger_after_a_takeover() {
        let v1 = |ty: &str, status: &str, reason: &str| Condition {
            type_: ty.into(),
            status: status.into(),
            observed_generation: None,
            last_transition_time: Some(Time(Timestamp::from_second(50_000).unwrap())),
            reason: reason.into(),
            message: String::new(),
        };
        let prev = MicroK8sControlPlaneStatus {
            conditions: vec![
                v1(READY, "False", "ScalingUp"),
                v1(RESIZED, "False", "ScalingUp"),
                v1(MACHINES_CREATED, "True", ""),
                v1(MACHINES_BOOTSTRAPPED, "True", ""),
                v1("ControlPlaneComponentsHealthy", "True", ""),
                v1(AVAILABLE, "True", ""),
            ],
            ..Default::default()
        };
        let cp1 = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        let st = compute(
            &cp1,
            &plan(&cp1, None, Some(true)),
            &prev,
            &Extra::default(),
            Some(3),
            &now(),
        );
        for gone in CANONICAL_ONLY {
            assert!(
                conditions::find(&st.conditions, gone).is_none(),
                "{gone} left in {:?}",
                st.conditions
            );
        }
        let v1beta1 = &st.deprecated.unwrap().v1beta1.unwrap().conditions;
        let mut types: Vec<&str> = v1beta1.iter().map(|c| c.type_.as_str()).collect();
        types.sort_unstable();
        let n = types.len();
        types.dedup();
        assert_eq!(types.len(), n, "each type once: {v1beta1:?}");
        // The partial statuses (paused here) do the same.
        let p = paused(&prev, "paused", Some(3), &now());
        assert!(p.conditions.iter().all(|c| !canonical_only(c)), "{:?}", p.conditions);
        let v = p.deprecated.unwrap().v1beta1.unwrap().conditions;
        assert_eq!(v.iter().filter(|c| c.type_ == RESIZED).count(), 1, "{v:?}");
        let resized = v1beta1.iter().find(|c| c.type_ == RESIZED).unwrap();
        assert_eq!(resized.status, "True", "the scale-up Canonical reported is over");
        // Unchanged ones keep Canonical's transition time.
        let created = v1beta1.iter().find(|c| c.type_ == MACHINES_CREATED).unwrap();
        assert_eq!(
            created.last_transition_time,
            Some(Time(Timestamp::from_second(50_000).unwrap()))
        );
    }

    /// A second node that has just joined is NotReady until its CNI runs, but its kubelet
    /// reports and its dqlite member votes: the control plane stays Available. Nodes whose
    /// kubelet stopped reporting (`Unknown`) are down.
    #[test]
    fn a_joining_node_does_not_make_available_flap() {
        let mut cp2 = cp(
            2,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), healthy("b", 2, "v1.33.0")],
        );
        cp2.nodes[1].ready = false;
        let st = status_of(&cp2);
        assert_eq!(cond(&st, AVAILABLE).status, "True", "{:?}", cond(&st, AVAILABLE));
        // The joiner stops reporting: one of two members up is no majority.
        cp2.nodes[1].reporting = false;
        let st = status_of(&cp2);
        let a = cond(&st, AVAILABLE);
        assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", "NoQuorum"));
        assert!(
            a.message.contains("1 of 2") && a.message.contains("1 report"),
            "{}",
            a.message
        );
        // Reporting but none Ready: not Available (nothing can run the cluster's pods).
        let mut cp1 = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        cp1.nodes[0].ready = false;
        assert_eq!(cond(&status_of(&cp1), AVAILABLE).status, "False");
        // Three members, one down and one joining: two of three up.
        let mut cp3 = cp(
            3,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        cp3.nodes[1].ready = false;
        cp3.nodes[2].ready = false;
        cp3.nodes[2].reporting = false;
        assert_eq!(cond(&status_of(&cp3), AVAILABLE).status, "True");
    }

    #[test]
    fn counters_table() {
        // (machines ready flags, deleting flags) -> (replicas, ready, unavailable)
        type Case<'a> = (&'a [bool], &'a [bool], i32, i32, i32);
        let cases: &[Case] = &[
            (&[], &[], 0, 0, 0),
            (&[true], &[false], 1, 1, 0),
            (&[true, false, true], &[false, false, false], 3, 2, 1),
            (&[true, true, true, true], &[false, false, false, true], 4, 4, 0),
            (&[false, false], &[false, false], 2, 0, 2),
        ];
        for (ready, deleting, replicas, rr, un) in cases {
            let machines = ready
                .iter()
                .zip(deleting.iter())
                .enumerate()
                .map(|(i, (r, d))| {
                    let mut m = healthy(&format!("m{i}"), i64::try_from(i).unwrap() + 1, "v1.33.0");
                    m.ready = *r;
                    m.available = *r;
                    m.deleting = *d;
                    m
                })
                .collect();
            let cp = cp(3, "v1.33.0", machines);
            let st = status_of(&cp);
            assert_eq!(st.replicas, Some(*replicas), "{ready:?}");
            assert_eq!(st.ready_replicas, Some(*rr), "{ready:?}");
            assert_eq!(st.available_replicas, Some(*rr), "{ready:?}");
            assert_eq!(st.unavailable_replicas, Some(*un), "{ready:?}");
            assert!(st.unavailable_replicas.unwrap() >= 0);
        }
    }

    #[test]
    fn scaling_down_and_rolling_out_last_until_the_machines_are_gone() {
        // 3 -> 1: the second deletion is under way (its member being removed).
        let mut b = healthy("b", 2, "v1.33.0");
        b.deleting = true;
        let cp1 = cp(1, "v1.33.0", vec![b, healthy("c", 3, "v1.33.0")]);
        let st = status_of(&cp1);
        let down = cond(&st, SCALING_DOWN);
        assert_eq!(down.status, "True");
        assert!(down.message.contains("from 2 to 1"), "{}", down.message);
        assert_eq!(cond(&st, READY).status, "False");
        // A rollout's last outdated machine being deleted: still rolling out.
        let mut old = healthy("a", 1, "v1.32.0");
        old.deleting = true;
        let cp3 = cp(
            3,
            "v1.33.0",
            vec![
                old,
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
                healthy("d", 4, "v1.33.0"),
            ],
        );
        let st = status_of(&cp3);
        assert_eq!(cond(&st, ROLLING_OUT).status, "True");
        assert!(cond(&st, ROLLING_OUT).message.contains("1 out-of-date"));
        // Gone: neither.
        let done = cp(1, "v1.33.0", vec![healthy("c", 3, "v1.33.0")]);
        let st = status_of(&done);
        assert_eq!(cond(&st, SCALING_DOWN).status, "False");
        assert_eq!(cond(&st, ROLLING_OUT).status, "False");
    }

    #[test]
    fn versions_follow_tracks() {
        // Node runs v1.33.7 while spec says v1.33.4: reported as the spec's version.
        let mut a = healthy("a", 1, "v1.33.4");
        a.version = Some("v1.33.4".into());
        let mut cp1 = cp(1, "v1.33.4", vec![a.clone()]);
        cp1.nodes[0].kubelet_version = Some("v1.33.7".into());
        let st = status_of(&cp1);
        assert_eq!(st.version.as_deref(), Some("v1.33.4"));
        assert_eq!(
            st.versions,
            Some(vec![StatusVersion {
                version: "v1.33.4".into(),
                replicas: Some(1)
            }])
        );
        // Mid-upgrade: one node still on 1.32 holds status.version below spec.version.
        let b = healthy("b", 2, "v1.32.9");
        let mut cp2 = cp(2, "v1.33.4", vec![a, b]);
        cp2.nodes[0].kubelet_version = Some("v1.33.0".into());
        let st = status_of(&cp2);
        assert_eq!(st.version.as_deref(), Some("v1.32.9"));
        assert_eq!(st.versions.as_ref().unwrap().len(), 2);
        assert_eq!(st.versions.as_ref().unwrap()[0].version, "v1.32.9");
        // A machine with no version at all: versions listed, version withheld.
        let mut c = MachineView::new("c", 3);
        c.version = None;
        let cp3 = cp(2, "v1.33.4", vec![healthy("a", 1, "v1.33.4"), c]);
        let st = status_of(&cp3);
        assert_eq!(st.version, None);
        assert!(st.versions.is_some());
        assert_eq!(
            status_of(&crate::model::fixtures::cp(1, "v1.33.0", vec![])).versions,
            None
        );
    }

    #[test]
    fn conditions_explain_waits() {
        let mut first = healthy("a", 1, "v1.33.0");
        first.node_ref = None;
        first.ready = false;
        let mut cp1 = cp(3, "v1.33.0", vec![first]);
        cp1.was_initialized = false;
        cp1.nodes.clear();
        let st = status_of(&cp1);
        assert!(!st.initialized);
        assert_eq!(
            st.initialization.as_ref().unwrap().control_plane_initialized,
            Some(false)
        );
        assert_eq!(cond(&st, INITIALIZED).reason, "WaitingForJoinsAccepted");
        assert!(
            cond(&st, SCALING_UP).message.contains("accept joins"),
            "{:?}",
            cond(&st, SCALING_UP)
        );
        assert_eq!(cond(&st, AVAILABLE).reason, "NotInitialized");
        assert_eq!(cond(&st, READY).status, "False");
        assert_eq!(cond(&st, REPLICA_COUNT_RECOMMENDED).status, "True");

        let cp2 = cp(
            2,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), healthy("b", 2, "v1.33.0")],
        );
        let st = status_of(&cp2);
        assert!(st.initialized && st.ready);
        assert_eq!(cond(&st, AVAILABLE).status, "True");
        assert_eq!(cond(&st, REPLICA_COUNT_RECOMMENDED).reason, "EvenReplicas");
        assert_eq!(cond(&st, READY).status, "True");
        let v1 = &st.deprecated.as_ref().unwrap().v1beta1.as_ref().unwrap().conditions;
        assert!(v1.iter().any(|c| c.type_ == RESIZED && c.status == "True"));
        assert!(v1.iter().all(|c| c.type_ != PAUSED));
        let even = v1.iter().find(|c| c.type_ == REPLICA_COUNT_RECOMMENDED).unwrap();
        assert_eq!(even.severity, "Warning");

        let mut cp3 = cp2.clone();
        cp3.reachability = Reachability::Unreachable("connect timeout".into());
        let st = status_of(&cp3);
        assert_eq!(cond(&st, AVAILABLE).reason, "WorkloadClusterUnreachable");
        assert_eq!(cond(&st, WORKLOAD_REACHABLE).status, "False");

        let down = cp(1, "v1.32.0", vec![healthy("a", 1, "v1.33.0")]);
        let st = status_of(&down);
        assert_eq!(cond(&st, SPEC_VALID).reason, "DowngradeNotSupported");
        assert_eq!(cond(&st, ROLLING_OUT).reason, "DowngradeNotSupported");
    }

    #[test]
    fn a_failed_creation_is_shown_in_the_v1beta2_conditions() {
        let mut empty = cp(1, "v1.33.0", vec![]);
        empty.was_initialized = false;
        empty.nodes.clear();
        let extra = Extra {
            creation_error: Some((
                "InfrastructureTemplateCloningFailed".into(),
                "SimMachineTemplate \"tpl\" not found".into(),
            )),
            ..Default::default()
        };
        let st = compute(
            &empty,
            &plan(&empty, None, Some(true)),
            &MicroK8sControlPlaneStatus::default(),
            &extra,
            Some(3),
            &now(),
        );
        for ty in [SCALING_UP, INITIALIZED] {
            assert!(
                cond(&st, ty).message.contains("creating") && cond(&st, ty).message.contains("not found"),
                "{ty}: {:?}",
                cond(&st, ty)
            );
        }
    }

    #[test]
    fn connecting_keeps_what_was_known() {
        let healthy_cp = cp(
            3,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        let p = plan(&healthy_cp, None, Some(true));
        let before = compute(&healthy_cp, &p, &Default::default(), &Extra::default(), Some(1), &now());
        assert_eq!(cond(&before, AVAILABLE).status, "True");

        // A restarted manager: the Node cache has not listed yet.
        let mut restarted = healthy_cp.clone();
        restarted.reachability = Reachability::Connecting;
        restarted.nodes.clear();
        let p = plan(&restarted, None, Some(true));
        let later = Time(Timestamp::from_second(200_000).unwrap());
        let st = compute(&restarted, &p, &before, &Extra::default(), Some(2), &later);
        assert_eq!(cond(&st, AVAILABLE).status, "True", "no flap while connecting");
        assert_eq!(
            cond(&st, AVAILABLE).last_transition_time,
            cond(&before, AVAILABLE).last_transition_time
        );
        assert_eq!(cond(&st, AVAILABLE).observed_generation, Some(2));
        assert_eq!(cond(&st, WORKLOAD_REACHABLE).status, "True");

        // Known from a status without `WorkloadReachable` (Canonical's): `Available` stands.
        let mut canonical = before.clone();
        conditions::remove(&mut canonical.conditions, WORKLOAD_REACHABLE);
        let st = compute(&restarted, &p, &canonical, &Extra::default(), Some(2), &later);
        assert_eq!(cond(&st, AVAILABLE).status, "True");
        assert_eq!(cond(&st, WORKLOAD_REACHABLE).reason, "Connecting");

        // Nothing known before: connecting is said as it is.
        let st = compute(&restarted, &p, &Default::default(), &Extra::default(), Some(2), &later);
        assert_eq!(cond(&st, WORKLOAD_REACHABLE).reason, "Connecting");
        assert_eq!(cond(&st, AVAILABLE).status, "False");

        // A connection that fails is reported at once.
        let mut failing = restarted.clone();
        failing.reachability = Reachability::Unreachable("connect timeout".into());
        let st = compute(&failing, &p, &before, &Extra::default(), Some(2), &later);
        assert_eq!(cond(&st, AVAILABLE).reason, "WorkloadClusterUnreachable");
    }

    #[test]
    fn status_is_stable_across_recomputation() {
        let cp = cp(3, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        let p = plan(&cp, None, Some(true));
        let first = compute(&cp, &p, &Default::default(), &Extra::default(), Some(1), &now());
        let later = Time(Timestamp::from_second(200_000).unwrap());
        let second = compute(&cp, &p, &first, &Extra::default(), Some(1), &later);
        assert_eq!(first, second, "no needless writes");
    }

    #[test]
    fn partial_statuses() {
        let prev = MicroK8sControlPlaneStatus {
            ready_replicas: Some(5),
            ..Default::default()
        };
        let st = invalid(
            &prev,
            Some("c"),
            2,
            &[SpecProblem {
                reason: "InvalidVersion",
                message: "bad".into(),
            }],
            Some(2),
            &now(),
        );
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.unavailable_replicas, Some(0));
        assert_eq!(cond(&st, SPEC_VALID).reason, "InvalidVersion");
        let v1 = &st.deprecated.as_ref().unwrap().v1beta1.as_ref().unwrap().conditions;
        assert_eq!(v1.iter().find(|c| c.type_ == SPEC_VALID).unwrap().severity, "Error");
        let p = paused(&st, "Cluster spec.paused is true", Some(2), &now());
        assert_eq!(cond(&p, PAUSED).status, "True");
    }

    #[test]
    fn a_held_control_plane_still_reports_its_initialization() {
        let problems = [SpecProblem {
            reason: "InvalidVersion",
            message: "bad".into(),
        }];
        let mut up = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        up.was_initialized = false;
        up.nodes[0].accepts_joins = true;
        assert!(up.initialized(), "its node accepts joins");
        let st = held(&MicroK8sControlPlaneStatus::default(), &up, &problems, Some(2), &now());
        assert!(st.initialized);
        assert_eq!(
            st.initialization.as_ref().unwrap().control_plane_initialized,
            Some(true)
        );
        assert_eq!(cond(&st, INITIALIZED).status, "True");
        assert_eq!(cond(&st, SPEC_VALID).reason, "InvalidVersion");
        let mut first = healthy("a", 1, "v1.33.0");
        first.node_ref = None;
        let mut coming = cp(1, "v1.33.0", vec![first]);
        coming.was_initialized = false;
        coming.nodes.clear();
        let st = held(
            &MicroK8sControlPlaneStatus::default(),
            &coming,
            &problems,
            Some(2),
            &now(),
        );
        assert!(!st.initialized);
        assert_eq!(st.replicas, Some(1));
    }
}
