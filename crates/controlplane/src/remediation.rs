//! Remediation of unhealthy control plane Machines (CAPI's `OwnerRemediated` contract), with
//! KCP's semantics for `spec.remediation` and `status.lastRemediation`.
//!
//! A MachineHealthCheck marks a Machine `HealthCheckSucceeded=False` and, since the control
//! plane owns it, `OwnerRemediated=False`. This provider then deletes it (its member is
//! removed from dqlite by the pre-terminate hook) and the scale logic creates a replacement
//! that carries `remediation-for`, so that a replacement failing again soon counts as a retry.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{ControlPlane, MachineView};

/// KCP's remediation record (`remediation-in-progress` on the control plane,
/// `remediation-for` on the replacement Machine).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemediationData {
    /// The remediated Machine.
    pub machine: String,
    /// When it was remediated.
    pub timestamp: Timestamp,
    /// Remediations in a row of this machine's line of replacements.
    pub retry_count: i32,
}

/// What remediation wants.
#[derive(Clone, Debug, PartialEq)]
pub enum RemediationDecision {
    /// No machine needs remediation.
    None,
    /// A remediated machine is being deleted, or its replacement is awaited.
    InProgress(String),
    /// Delete this machine; record `data` on the control plane.
    Remediate {
        /// The machine.
        machine: String,
        /// The record.
        data: RemediationData,
    },
    /// Remediation is refused or deferred; the Machine's `OwnerRemediated` condition and the
    /// control plane's `Remediating` condition say why.
    Blocked {
        /// The machine.
        machine: String,
        /// Reason for the Machine's condition.
        reason: &'static str,
        /// Why.
        message: String,
        /// Look again after this long (a retry period).
        retry_after: Option<Duration>,
    },
}

/// Picks the machine to remediate: the `remediate-machine` annotation first, then machines
/// without a node, then machines whose node is not Ready, then the oldest.
fn pick<'a>(cp: &'a ControlPlane, unhealthy: &[&'a MachineView]) -> Option<&'a MachineView> {
    unhealthy.iter().copied().min_by_key(|m| {
        (
            !m.remediate_annotation,
            m.node_ref.is_some(),
            cp.node_ready(m),
            m.created,
        )
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Decides remediation (pure).
pub fn decide(cp: &ControlPlane) -> RemediationDecision {
    if let Some(ip) = &cp.remediation_in_progress {
        return RemediationDecision::InProgress(ip.machine.clone());
    }
    let unhealthy: Vec<&MachineView> = cp.machines.iter().filter(|m| m.needs_remediation()).collect();
    let Some(target) = pick(cp, &unhealthy) else {
        return RemediationDecision::None;
    };
    if target.deleting {
        return RemediationDecision::InProgress(target.name.clone());
    }
    let blocked = |reason: &'static str, message: String, retry_after: Option<Duration>| RemediationDecision::Blocked {
        machine: target.name.clone(),
        reason,
        message,
        retry_after,
    };
    let initialized = cp.initialized();
    let n = cp.active_count();
    if initialized && n <= 1 {
        return blocked(
            "CannotBeRemediated",
            format!(
                "machine {} is the only control plane machine: deleting it would destroy the cluster; raise spec.replicas to 3 so that a failed machine can be replaced",
                target.name
            ),
            None,
        );
    }
    if let Some(d) = cp.machines.iter().find(|m| m.deleting) {
        return blocked(
            "RemediationDeferred",
            format!("waiting for machine {} to finish deleting", d.name),
            None,
        );
    }
    if let Some(p) = cp
        .active()
        .find(|m| m.name != target.name && !m.needs_remediation() && m.node_ref.is_none())
    {
        return blocked(
            "RemediationDeferred",
            format!(
                "waiting for machine {} to get its node before remediating another",
                p.name
            ),
            None,
        );
    }
    if initialized {
        // dqlite quorum after the removal: the healthy survivors must be a majority of the
        // remaining members.
        let healthy = cp
            .active()
            .filter(|m| m.name != target.name && !m.needs_remediation() && cp.node_ready(m))
            .count();
        let remaining = usize::try_from(n - 1).unwrap_or(0);
        if healthy < remaining / 2 + 1 {
            return blocked(
                "CannotBeRemediated",
                format!(
                    "remediating machine {} would leave {healthy} healthy of {remaining} control plane nodes: dqlite would lose quorum; fix or remove the other unhealthy machines first",
                    target.name
                ),
                None,
            );
        }
    }
    // Retries: a replacement that fails within minHealthyPeriod continues the line.
    let limits = &cp.desired.remediation;
    let mut retry_count = 0;
    if let Some(prev) = &target.remediation_for
        && cp.now.as_second()
            < prev
                .timestamp
                .as_second()
                .saturating_add(secs(limits.min_healthy_period))
    {
        retry_count = prev.retry_count.saturating_add(1);
        if let Some(max) = limits.max_retry
            && retry_count > max
        {
            return blocked(
                "CannotBeRemediated",
                format!(
                    "machine {} replaces {}, remediated {} times in a row: spec.remediation.maxRetry ({max}) is reached; investigate, then delete the machine by hand",
                    target.name,
                    prev.machine,
                    prev.retry_count.saturating_add(1)
                ),
                None,
            );
        }
        let next = prev.timestamp.as_second().saturating_add(secs(limits.retry_period));
        if cp.now.as_second() < next {
            let wait = Duration::from_secs(u64::try_from(next - cp.now.as_second()).unwrap_or(0));
            return blocked(
                "RemediationDeferred",
                format!(
                    "waiting {}s (spec.remediation.retryPeriodSeconds) before remediating machine {} again",
                    wait.as_secs(),
                    target.name
                ),
                Some(wait),
            );
        }
    }
    RemediationDecision::Remediate {
        machine: target.name.clone(),
        data: RemediationData {
            machine: target.name.clone(),
            timestamp: cp.now,
            retry_count,
        },
    }
}

/// `status.lastRemediation`: the one in flight, else the newest `remediation-for` record.
pub fn last_remediation(cp: &ControlPlane) -> Option<RemediationData> {
    cp.remediation_in_progress.clone().or_else(|| {
        cp.machines
            .iter()
            .filter_map(|m| m.remediation_for.clone())
            .max_by_key(|d| d.timestamp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::*;

    fn unhealthy(mut m: MachineView) -> MachineView {
        m.health_check_failed = true;
        m.owner_remediation_requested = true;
        m
    }

    #[test]
    fn remediates_when_quorum_survives() {
        let cp = cp(
            3,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                unhealthy(healthy("b", 2, "v1.33.0")),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        let RemediationDecision::Remediate { machine, data } = decide(&cp) else {
            panic!("{:?}", decide(&cp))
        };
        assert_eq!(machine, "b");
        assert_eq!(data.retry_count, 0);
    }

    #[test]
    fn refuses_when_quorum_is_at_risk_or_single() {
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![
                healthy("a", 1, "v1.33.0"),
                unhealthy(healthy("b", 2, "v1.33.0")),
                healthy("c", 3, "v1.33.0"),
            ],
        );
        cp.nodes[2].ready = false; // c's node is down too
        let d = decide(&cp);
        assert!(
            matches!(&d, RemediationDecision::Blocked { reason: "CannotBeRemediated", message, .. } if message.contains("quorum")),
            "{d:?}"
        );
        let one = crate::model::fixtures::cp(1, "v1.33.0", vec![unhealthy(healthy("a", 1, "v1.33.0"))]);
        assert!(matches!(
            decide(&one),
            RemediationDecision::Blocked {
                reason: "CannotBeRemediated",
                ..
            }
        ));
        let mut pre_init = one.clone();
        pre_init.was_initialized = false;
        pre_init.nodes.clear();
        assert!(
            matches!(decide(&pre_init), RemediationDecision::Remediate { .. }),
            "the init machine may be replaced"
        );
    }

    #[test]
    fn defers_while_another_machine_is_busy() {
        let mut b = healthy("b", 2, "v1.33.0");
        b.deleting = true;
        let cp = cp(
            3,
            "v1.33.0",
            vec![unhealthy(healthy("a", 1, "v1.33.0")), b, healthy("c", 3, "v1.33.0")],
        );
        assert!(matches!(
            decide(&cp),
            RemediationDecision::Blocked {
                reason: "RemediationDeferred",
                ..
            }
        ));
        let mut p = healthy("p", 4, "v1.33.0");
        p.node_ref = None;
        let cp = crate::model::fixtures::cp(
            3,
            "v1.33.0",
            vec![
                unhealthy(healthy("a", 1, "v1.33.0")),
                healthy("c", 3, "v1.33.0"),
                healthy("d", 5, "v1.33.0"),
                p,
            ],
        );
        assert!(matches!(
            decide(&cp),
            RemediationDecision::Blocked {
                reason: "RemediationDeferred",
                ..
            }
        ));
    }

    #[test]
    fn retries_follow_max_retry_and_retry_period() {
        let mut b = unhealthy(healthy("b", 2, "v1.33.0"));
        b.remediation_for = Some(RemediationData {
            machine: "old".into(),
            timestamp: Timestamp::from_second(100_000 - 60).unwrap(),
            retry_count: 1,
        });
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), b, healthy("c", 3, "v1.33.0")],
        );
        let RemediationDecision::Remediate { data, .. } = decide(&cp) else {
            panic!()
        };
        assert_eq!(data.retry_count, 2);
        cp.desired.remediation.max_retry = Some(1);
        assert!(matches!(
            decide(&cp),
            RemediationDecision::Blocked {
                reason: "CannotBeRemediated",
                ..
            }
        ));
        cp.desired.remediation.max_retry = None;
        cp.desired.remediation.retry_period = Duration::from_secs(120);
        assert!(matches!(
            decide(&cp),
            RemediationDecision::Blocked { reason: "RemediationDeferred", retry_after: Some(d), .. } if d == Duration::from_secs(60)
        ));
        cp.desired.remediation.min_healthy_period = Duration::from_secs(30);
        let RemediationDecision::Remediate { data, .. } = decide(&cp) else {
            panic!()
        };
        assert_eq!(data.retry_count, 0, "healthy long enough: a new problem");
    }

    #[test]
    fn an_edited_retry_count_at_its_limit_still_blocks() {
        let mut b = unhealthy(healthy("b", 2, "v1.33.0"));
        b.remediation_for = Some(RemediationData {
            machine: "old".into(),
            timestamp: Timestamp::from_second(100_000 - 60).unwrap(),
            retry_count: i32::MAX,
        });
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), b, healthy("c", 3, "v1.33.0")],
        );
        cp.desired.remediation.max_retry = Some(5);
        assert!(matches!(
            decide(&cp),
            RemediationDecision::Blocked {
                reason: "CannotBeRemediated",
                ..
            }
        ));
    }

    #[test]
    fn picks_the_most_broken_machine() {
        let mut a = unhealthy(healthy("a", 1, "v1.33.0"));
        let mut b = unhealthy(healthy("b", 2, "v1.33.0"));
        b.node_ref = None;
        b.ips.clear();
        b.provider_id = None;
        let cp0 = cp(
            5,
            "v1.33.0",
            vec![
                a.clone(),
                b.clone(),
                healthy("c", 3, "v1.33.0"),
                healthy("d", 4, "v1.33.0"),
                healthy("e", 5, "v1.33.0"),
            ],
        );
        assert!(matches!(decide(&cp0), RemediationDecision::Remediate { machine, .. } if machine == "b"));
        a.remediate_annotation = true;
        let cp1 = cp(
            5,
            "v1.33.0",
            vec![
                a,
                b,
                healthy("c", 3, "v1.33.0"),
                healthy("d", 4, "v1.33.0"),
                healthy("e", 5, "v1.33.0"),
            ],
        );
        assert!(matches!(decide(&cp1), RemediationDecision::Remediate { machine, .. } if machine == "a"));
    }
}
