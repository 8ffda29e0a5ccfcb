//! The next step of a control plane, decided from the computed [`ControlPlane`] (pure).
//!
//! One step per reconcile, in this order: refuse an unsupported version change; wait for a
//! deletion or an in-place upgrade in flight; remediate; scale up; scale down; roll out
//! (surge a new machine, or remove an outdated one with `maxSurge: 0`, or refresh a node in
//! place). Each wait is explained in the condition it belongs to.

use mk8s_api::controlplane::UpgradeStrategy;
use mk8s_api::version::Track;

use crate::gate;
use crate::model::ControlPlane;
use crate::remediation::{self, RemediationData, RemediationDecision};
use crate::scale;
use crate::upgrade::{self, InPlacePhase, VersionProblem};

/// Why a machine is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateWhy {
    /// Fewer machines than replicas.
    ScaleUp,
    /// Surge during a rolling upgrade.
    Rollout,
}

/// Why a machine is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteWhy {
    /// More machines than replicas.
    ScaleDown,
    /// An outdated machine goes (`maxSurge: 0`).
    Rollout,
    /// Remediation of an unhealthy machine.
    Remediation(RemediationData),
}

/// The one step to take now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Something must happen first (the message says what).
    Wait(String),
    /// Create a control plane machine.
    Create {
        /// Its `spec.version` ([`upgrade::creation_version`]).
        version: String,
        /// Its failure domain.
        failure_domain: Option<String>,
        /// Why.
        why: CreateWhy,
    },
    /// Delete a control plane machine.
    Delete {
        /// The machine.
        machine: String,
        /// Why.
        why: DeleteWhy,
    },
    /// Start refreshing a node's snap to the next track.
    InPlace {
        /// The machine.
        machine: String,
        /// The track.
        track: Track,
    },
    /// The remediated machine is gone and no replacement is needed: forget the record.
    ClearRemediation,
}

impl Step {
    /// Steps that disrupt a member and therefore need the workload API's `/readyz`.
    pub fn needs_api_check(&self) -> bool {
        matches!(self, Step::Delete { .. } | Step::InPlace { .. })
    }
}

/// The decision and the explanations for the conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The step.
    pub step: Step,
    /// Control plane machines not being deleted.
    pub current: i32,
    /// Why the version change is refused.
    pub version_problem: Option<VersionProblem>,
    /// Remediation's view.
    pub remediation: RemediationDecision,
    /// Machines out of date with their reasons.
    pub outdated: Vec<(String, Vec<upgrade::Outdated>)>,
    /// Whether outdated machines are replaced (else refreshed in place).
    pub rolling: bool,
    /// The `/readyz` result this plan was made with (`None`: not checked).
    pub api_ready: Option<bool>,
}

/// Whether version upgrades of this control plane replace machines.
pub fn rolling_strategy(cp: &ControlPlane) -> bool {
    match cp.desired.strategy {
        UpgradeStrategy::Rolling => true,
        UpgradeStrategy::InPlace => false,
        UpgradeStrategy::Smart => cp.desired.replicas >= 3,
    }
}

/// Decides the next step. `busy` explains an operation in flight that blocks new steps (a
/// deletion or an in-place upgrade); `api_ready` is the workload `/readyz` once checked.
pub fn plan(cp: &ControlPlane, busy: Option<String>, api_ready: Option<bool>) -> Plan {
    let current = cp.active_count();
    let desired = cp.desired.replicas;
    let outdated: Vec<(String, Vec<upgrade::Outdated>)> = cp
        .active()
        .map(|m| (m.name.clone(), upgrade::outdated(cp, m)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    // Rolling when the strategy says so, or when something other than the version changed
    // (a config or template change only takes effect on new machines).
    let rolling = rolling_strategy(cp) || outdated.iter().any(|(_, r)| !upgrade::only_version(r));
    let version_problem = upgrade::version_problem(cp, rolling);
    let remediation = remediation::decide(cp);
    let mut p = Plan {
        step: Step::Idle,
        current,
        version_problem: version_problem.clone(),
        remediation: remediation.clone(),
        outdated,
        rolling,
        api_ready,
    };
    p.step = if let Some(vp) = version_problem {
        Step::Wait(vp.message())
    } else if let Some(b) = busy.filter(|_| !remediates_failed_in_place(cp, &remediation)) {
        Step::Wait(b)
    } else if let Some(d) = cp.machines.iter().find(|m| m.deleting) {
        Step::Wait(format!("waiting for machine {} to be deleted", d.name))
    } else if let RemediationDecision::Remediate { machine, data } = &remediation {
        // The safety gate of any member removal, once there is a cluster to protect (the init
        // machine may be replaced before: nothing answers /readyz then).
        let gate = if cp.initialized() {
            gate::can_disrupt(cp, machine, api_ready)
        } else {
            Ok(())
        };
        match gate {
            Ok(()) => Step::Delete {
                machine: machine.clone(),
                why: DeleteWhy::Remediation(data.clone()),
            },
            Err(e) => Step::Wait(format!("before remediating machine {machine}: {e}")),
        }
    } else if current < desired {
        match gate::can_add(cp) {
            Ok(()) => Step::Create {
                version: upgrade::creation_version(cp, rolling),
                failure_domain: scale::failure_domain_for_new(cp),
                why: CreateWhy::ScaleUp,
            },
            Err(e) => Step::Wait(e),
        }
    } else if cp
        .remediation_in_progress
        .as_ref()
        .is_some_and(|r| cp.machine(&r.machine).is_none())
        && (!rolling || p.outdated.is_empty())
    {
        // No replacement is coming: the record would otherwise go with the next machine
        // created, as it does during a rolling upgrade (so that a new template failing again
        // and again counts against spec.remediation.maxRetry).
        Step::ClearRemediation
    } else if current > desired {
        match scale::victim(cp) {
            Some(v) => match gate::can_disrupt(cp, &v.name, api_ready) {
                Ok(()) => Step::Delete {
                    machine: v.name.clone(),
                    why: DeleteWhy::ScaleDown,
                },
                Err(e) => Step::Wait(format!("before removing machine {}: {e}", v.name)),
            },
            None => Step::Idle,
        }
    } else if !p.outdated.is_empty() {
        rollout_step(cp, rolling, api_ready, &p.outdated)
    } else {
        Step::Idle
    };
    // A spec no new machine could be made from holds the steps that need one (a creation, or
    // a removal that a replacement follows); a scale-down, an in-place upgrade and the rest go on.
    if let Some(problem) = &cp.desired.config_problem
        && needs_new_machine(&p.step)
    {
        p.step = Step::Wait(problem.message.clone());
    }
    p
}

/// Whether a step creates a machine, or removes one that a new machine replaces.
fn needs_new_machine(step: &Step) -> bool {
    matches!(
        step,
        Step::Create { .. }
            | Step::Delete {
                why: DeleteWhy::Rollout | DeleteWhy::Remediation(_),
                ..
            }
    )
}

/// The machine to remediate is one whose in-place upgrade failed: that failure, which
/// otherwise holds every other step until a user looks, does not hold its remediation.
fn remediates_failed_in_place(cp: &ControlPlane, remediation: &RemediationDecision) -> bool {
    let RemediationDecision::Remediate { machine, .. } = remediation else {
        return false;
    };
    cp.machine(machine)
        .and_then(|m| m.in_place.as_ref())
        .is_some_and(|s| s.phase == InPlacePhase::Failed)
}

fn rollout_step(
    cp: &ControlPlane,
    rolling: bool,
    api_ready: Option<bool>,
    outdated: &[(String, Vec<upgrade::Outdated>)],
) -> Step {
    if rolling && !cp.initialized() {
        // A replacement joins through an initialized node: none exists. Say how out of it
        // (a first machine whose template or config was fixed after it failed to boot).
        let outdated: Vec<&str> = outdated.iter().map(|(name, _)| name.as_str()).collect();
        return Step::Wait(format!(
            "machine(s) {} out of date, but machines are replaced only once the control plane is initialized: if it will not initialize, delete Machine {} (or let a MachineHealthCheck remediate it) and its replacement takes the current spec",
            outdated.join(", "),
            outdated.first().copied().unwrap_or_default()
        ));
    }
    if rolling {
        // maxSurge 0 removes first; the schema only allows it from 3 replicas.
        if cp.desired.max_surge == 0 && cp.desired.replicas >= 3 {
            return match scale::victim(cp) {
                Some(v) => match gate::can_disrupt(cp, &v.name, api_ready) {
                    Ok(()) => Step::Delete {
                        machine: v.name.clone(),
                        why: DeleteWhy::Rollout,
                    },
                    Err(e) => Step::Wait(format!("before replacing machine {}: {e}", v.name)),
                },
                None => Step::Idle,
            };
        }
        return match gate::can_add(cp) {
            Ok(()) => Step::Create {
                version: upgrade::creation_version(cp, rolling),
                failure_domain: scale::failure_domain_for_new(cp),
                why: CreateWhy::Rollout,
            },
            Err(e) => Step::Wait(e),
        };
    }
    let Some(track) = upgrade::next_step(cp) else {
        return Step::Idle;
    };
    let Some(m) = upgrade::next_in_place_machine(cp, track) else {
        return Step::Wait(format!("no machine is ready for an in-place upgrade to {track}"));
    };
    match gate::can_refresh(cp, &m.name, api_ready) {
        Ok(()) => Step::InPlace {
            machine: m.name.clone(),
            track,
        },
        Err(e) => Step::Wait(format!("before upgrading machine {} in place: {e}", m.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::*;

    #[test]
    fn scale_up_one_at_a_time_from_zero() {
        let mut cp0 = cp(3, "v1.33.0", vec![]);
        cp0.was_initialized = false;
        assert!(matches!(
            plan(&cp0, None, None).step,
            Step::Create {
                why: CreateWhy::ScaleUp,
                ..
            }
        ));
        let mut first = healthy("a", 1, "v1.33.0");
        first.node_ref = None;
        let mut cp1 = cp(3, "v1.33.0", vec![first]);
        cp1.was_initialized = false;
        assert!(matches!(plan(&cp1, None, None).step, Step::Wait(m) if m.contains("accept joins")));
        let cp2 = cp(3, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        assert!(matches!(plan(&cp2, None, None).step, Step::Create { .. }));
    }

    #[test]
    fn scale_down_needs_readyz() {
        let cp = cp(
            1,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        let p = plan(&cp, None, None);
        assert!(matches!(&p.step, Step::Wait(m) if m.contains("readyz")));
        let p = plan(&cp, None, Some(true));
        assert_eq!(
            p.step,
            Step::Delete {
                machine: "a".into(),
                why: DeleteWhy::ScaleDown
            }
        );
    }

    #[test]
    fn rolling_surges_then_removes_outdated() {
        let old = vec![
            healthy("a", 1, "v1.32.0"),
            healthy("b", 2, "v1.32.0"),
            healthy("c", 3, "v1.32.0"),
        ];
        let cp3 = cp(3, "v1.33.0", old.clone());
        let p = plan(&cp3, None, Some(true));
        assert!(p.rolling);
        assert!(matches!(
            p.step,
            Step::Create {
                why: CreateWhy::Rollout,
                ..
            }
        ));
        let mut surged = old.clone();
        surged.push(healthy("d", 4, "v1.33.0"));
        let cp4 = cp(3, "v1.33.0", surged);
        assert_eq!(
            plan(&cp4, None, Some(true)).step,
            Step::Delete {
                machine: "a".into(),
                why: DeleteWhy::ScaleDown
            }
        );
        let mut zero = cp3.clone();
        zero.desired.max_surge = 0;
        assert_eq!(
            plan(&zero, None, Some(true)).step,
            Step::Delete {
                machine: "a".into(),
                why: DeleteWhy::Rollout
            }
        );
    }

    #[test]
    fn smart_upgrades_in_place_below_three() {
        let cp1 = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.32.0")]);
        let p = plan(&cp1, None, Some(true));
        assert!(!p.rolling);
        assert!(matches!(p.step, Step::InPlace { ref machine, .. } if machine == "a"));
        // A config change on a small control plane still replaces machines.
        let mut changed = healthy("a", 1, "v1.33.0");
        changed.config = Some(mk8s_api::bootstrap::MicroK8sConfigSpec {
            init_configuration: Some(mk8s_api::bootstrap::InitConfiguration {
                addons: Some(vec!["ingress".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let cp2 = cp(1, "v1.33.0", vec![changed]);
        assert!(matches!(
            plan(&cp2, None, Some(true)).step,
            Step::Create {
                why: CreateWhy::Rollout,
                ..
            }
        ));
    }

    #[test]
    fn an_out_of_date_machine_that_never_initialized_says_how_to_replace_it() {
        let mut first = healthy("a", 1, "v1.33.0");
        first.node_ref = None;
        first.ready = false;
        first.config = Some(mk8s_api::bootstrap::MicroK8sConfigSpec {
            init_configuration: Some(mk8s_api::bootstrap::InitConfiguration {
                addons: Some(vec!["ingress".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut c = cp(1, "v1.33.0", vec![first]);
        c.was_initialized = false;
        c.nodes.clear();
        assert!(matches!(
            plan(&c, None, Some(true)).step,
            Step::Wait(m) if m.contains("delete Machine a")
        ));
    }

    #[test]
    fn refusals_and_waits() {
        let down = cp(1, "v1.32.0", vec![healthy("a", 1, "v1.33.0")]);
        let p = plan(&down, None, Some(true));
        assert!(matches!(p.version_problem, Some(VersionProblem::Downgrade { .. })));
        assert!(matches!(p.step, Step::Wait(_)));
        let busy = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0")]);
        assert!(matches!(plan(&busy, Some("x".into()), None).step, Step::Wait(m) if m == "x"));
        // A config no new machine could render with: nothing is created (not even the first),
        // while a scale-down goes on.
        let problem = Some(crate::spec::SpecProblem {
            reason: "InvalidControlPlaneConfig",
            message: "spec.controlPlaneConfig.initConfiguration.httpProxy: bad".into(),
        });
        let mut bad = cp(3, "v1.33.0", vec![]);
        bad.desired.config_problem = problem.clone();
        assert!(matches!(plan(&bad, None, Some(true)).step, Step::Wait(m) if m.contains("httpProxy")));
        let mut smaller = cp(
            1,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        smaller.desired.config_problem = problem;
        assert!(matches!(
            plan(&smaller, None, Some(true)).step,
            Step::Delete {
                why: DeleteWhy::ScaleDown,
                ..
            }
        ));
        let mut del = healthy("b", 2, "v1.33.0");
        del.deleting = true;
        let d = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), del]);
        assert!(matches!(plan(&d, None, Some(true)).step, Step::Wait(m) if m.contains("b to be deleted")));
    }

    #[test]
    fn in_place_for_ha_goes_one_node_at_a_time() {
        let mut cp3 = cp(
            3,
            "v1.34.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.33.0"),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        cp3.desired.strategy = UpgradeStrategy::InPlace;
        let p = plan(&cp3, None, Some(true));
        assert!(!p.rolling);
        assert_eq!(
            p.step,
            Step::InPlace {
                machine: "a".into(),
                track: Track { major: 1, minor: 34 }
            }
        );
        // While one upgrades (reported as busy), nothing else starts.
        assert!(matches!(
            plan(&cp3, Some("upgrading a".into()), Some(true)).step,
            Step::Wait(_)
        ));
        // Another node down: no in-place step.
        cp3.nodes[1].ready = false;
        assert!(matches!(plan(&cp3, None, Some(true)).step, Step::Wait(m) if m.contains("b's node")));
        // Rolling strategy with 1 replica surges rather than deadlocking (Canonical's bug).
        let mut one = cp(1, "v1.34.0", vec![healthy("a", 1, "v1.33.0")]);
        one.desired.strategy = UpgradeStrategy::Rolling;
        assert!(matches!(
            plan(&one, None, Some(true)).step,
            Step::Create {
                why: CreateWhy::Rollout,
                ..
            }
        ));
        let mut two = one.clone();
        two.machines.push(healthy("b", 2, "v1.34.0"));
        two.nodes
            .push(crate::model::fixtures::node_for(&two.machines[1], "v1.34.0"));
        assert_eq!(
            plan(&two, None, Some(true)).step,
            Step::Delete {
                machine: "a".into(),
                why: DeleteWhy::ScaleDown
            }
        );
    }

    #[test]
    fn remediation_passes_the_safety_gate() {
        let mut bad = healthy("b", 2, "v1.33.0");
        bad.health_check_failed = true;
        bad.owner_remediation_requested = true;
        let mut cp5 = cp(
            5,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                bad,
                healthy("c", 3, "v1.33.0"),
                healthy("d", 4, "v1.33.0"),
                healthy("e", 5, "v1.33.0"),
            ],
        );
        assert!(matches!(
            plan(&cp5, None, Some(true)).step,
            Step::Delete { ref machine, why: DeleteWhy::Remediation(_) } if machine == "b"
        ));
        // The victim's own node may be down, and another one too while a majority of the
        // others is Ready (KCP's rule: one failure does not hold the remediation of another).
        cp5.nodes[1].ready = false;
        assert!(matches!(plan(&cp5, None, Some(true)).step, Step::Delete { .. }));
        cp5.nodes[3].ready = false;
        assert!(matches!(plan(&cp5, None, Some(true)).step, Step::Delete { ref machine, .. } if machine == "b"));
        assert!(matches!(plan(&cp5, None, None).step, Step::Wait(m) if m.contains("before remediating")));
        cp5.nodes[2].ready = false;
        assert!(matches!(
            plan(&cp5, None, Some(true)).remediation,
            RemediationDecision::Blocked {
                reason: "CannotBeRemediated",
                ..
            }
        ));
    }

    #[test]
    fn a_remediation_record_goes_with_the_next_rollout_machine() {
        let mut cp3 = cp(
            3,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.32.0"),
                healthy("b", 2, "v1.32.0"),
                healthy("c", 3, "v1.32.0"),
            ],
        );
        // The surge machine "d" was remediated; the rollout still needs a new machine.
        cp3.remediation_in_progress = Some(RemediationData {
            machine: "d".into(),
            timestamp: cp3.now,
            retry_count: 0,
        });
        assert!(matches!(
            plan(&cp3, None, Some(true)).step,
            Step::Create {
                why: CreateWhy::Rollout,
                ..
            }
        ));
        // Nothing to roll out: no machine is coming, the record goes.
        let mut done = cp3.clone();
        for m in &mut done.machines {
            m.version = Some("v1.33.0".into());
        }
        assert_eq!(plan(&done, None, Some(true)).step, Step::ClearRemediation);
        // In place: no machine is created either.
        let mut in_place = cp3.clone();
        in_place.desired.strategy = UpgradeStrategy::InPlace;
        assert_eq!(plan(&in_place, None, Some(true)).step, Step::ClearRemediation);
    }

    #[test]
    fn a_failed_in_place_upgrade_does_not_hold_its_machines_remediation() {
        let mut cp3 = cp(
            3,
            "v1.34.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                healthy("b", 2, "v1.34.0"),
                healthy("c", 3, "v1.34.0"),
            ],
        );
        cp3.desired.strategy = UpgradeStrategy::InPlace;
        let failed = crate::upgrade::InPlaceState {
            track: "1.34".into(),
            channel: "1.34/stable".into(),
            classic: true,
            phase: InPlacePhase::Failed,
            pod: "p".into(),
            node: "a".into(),
            since: cp3.now,
            failures: 3,
            message: Some("refresh failed".into()),
        };
        cp3.machines[0].in_place = Some(failed);
        let busy = || Some("in-place upgrade failed 3 times".to_string());
        assert!(matches!(plan(&cp3, busy(), Some(true)).step, Step::Wait(m) if m.contains("failed 3 times")));
        cp3.machines[0].health_check_failed = true;
        cp3.machines[0].owner_remediation_requested = true;
        assert!(matches!(
            plan(&cp3, busy(), Some(true)).step,
            Step::Delete { ref machine, why: DeleteWhy::Remediation(_) } if machine == "a"
        ));
        // Another machine's remediation still waits for it.
        cp3.machines[0].health_check_failed = false;
        cp3.machines[0].owner_remediation_requested = false;
        cp3.machines[1].health_check_failed = true;
        cp3.machines[1].owner_remediation_requested = true;
        assert!(matches!(plan(&cp3, busy(), Some(true)).step, Step::Wait(m) if m.contains("failed 3 times")));
    }

    #[test]
    fn machines_created_during_an_in_place_upgrade_join_at_its_current_step() {
        let mut cp3 = cp(
            3,
            "v1.34.2",
            vec![healthy("a", 1, "v1.32.4"), healthy("b", 2, "v1.33.5")],
        );
        cp3.desired.strategy = UpgradeStrategy::InPlace;
        assert!(matches!(
            plan(&cp3, None, Some(true)).step,
            Step::Create { ref version, why: CreateWhy::ScaleUp, .. } if version == "v1.33.5"
        ));
        cp3.machines.remove(1);
        cp3.nodes.remove(1);
        assert!(matches!(
            plan(&cp3, None, Some(true)).step,
            Step::Create { ref version, .. } if version == "v1.33.0"
        ));
        // The last step is the spec's version; rolling upgrades refuse skips instead.
        cp3.machines[0].version = Some("v1.33.5".into());
        assert!(matches!(
            plan(&cp3, None, Some(true)).step,
            Step::Create { ref version, .. } if version == "v1.34.2"
        ));
        cp3.machines[0].version = Some("v1.32.4".into());
        cp3.desired.strategy = UpgradeStrategy::Rolling;
        assert!(matches!(plan(&cp3, None, Some(true)).step, Step::Wait(_)));
    }

    #[test]
    fn no_in_place_step_on_a_node_that_is_down() {
        let mut cp1 = cp(1, "v1.34.0", vec![healthy("a", 1, "v1.33.0")]);
        cp1.nodes[0].ready = false;
        assert!(matches!(plan(&cp1, None, Some(true)).step, Step::Wait(m) if m.contains("a's node is not Ready")));
    }
}
