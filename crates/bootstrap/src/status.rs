//! Status of a `MicroK8sConfig` for both CAPI contracts, computed as a pure function of the
//! current status and the reconcile's outcome.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mk8s_api::bootstrap::{BootstrapInitialization, MicroK8sConfigStatus};
use mk8s_api::conditions::{self, Condition, DeprecatedStatus, Severity, V1Beta1DeprecatedStatus};

use crate::decide::reason;

/// Condition types.
pub mod types {
    /// The bootstrap data Secret exists (or why not).
    pub const DATA_SECRET_AVAILABLE: &str = "DataSecretAvailable";
    /// The cluster CA is usable (or why not).
    pub const CERTIFICATES_AVAILABLE: &str = "CertificatesAvailable";
    /// Summary.
    pub const READY: &str = "Ready";
    /// Reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// A joining machine's node can reach what its data joins through; set only once it
    /// could not (its absence means nothing was ever wrong).
    pub const JOIN_TARGETS_AVAILABLE: &str = "JoinTargetsAvailable";
}

/// What a reconcile found of a rendered joining machine's join targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinTargets {
    /// None is left (the message says which and what to do).
    Gone(String),
    /// A target is left, or the node joined (or nothing was recorded).
    Fine,
}

/// What a reconcile concluded, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Paused: only the `Paused` condition changes.
    Paused(String),
    /// Bootstrap data is available under this name.
    Available {
        /// Data Secret name.
        secret: String,
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
    },
    /// Not available (yet).
    NotAvailable {
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
    },
}

/// A CA condition to report, when the CA was looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCondition {
    /// `True` or `False`.
    pub ok: bool,
    /// Reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// Whether a reason means the user must act (as opposed to an expected wait).
pub fn is_problem(reason: &str) -> bool {
    matches!(
        reason,
        reason::INVALID_CONFIGURATION
            | reason::JOIN_TARGETS_GONE
            | reason::INVALID_CLUSTER_SECRET
            | reason::DATA_SECRET_CONFLICT
            | reason::MACHINE_POOL_NOT_SUPPORTED
    )
}

/// Severity of a false condition in the v1beta1 view.
pub fn severity(c: &Condition) -> Severity {
    if is_problem(&c.reason) {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// The desired status.
pub fn desired(
    current: Option<&MicroK8sConfigStatus>,
    outcome: &Outcome,
    ca: Option<&CaCondition>,
    join: Option<&JoinTargets>,
    generation: Option<i64>,
    now: &Time,
) -> MicroK8sConfigStatus {
    let mut st = current.cloned().unwrap_or_default();
    let conds = &mut st.conditions;
    match outcome {
        Outcome::Paused(why) => {
            conditions::set(
                conds,
                Condition::true_(types::PAUSED, "Paused", why.clone()),
                generation,
                now,
            );
            st.deprecated = derived(&st.conditions);
            return st;
        }
        Outcome::Available {
            secret,
            reason,
            message,
        } => {
            st.ready = true;
            st.data_secret_name = Some(secret.clone());
            st.initialization = Some(BootstrapInitialization {
                data_secret_created: Some(true),
            });
            conditions::set(
                conds,
                Condition::true_(types::DATA_SECRET_AVAILABLE, reason, message.clone()),
                generation,
                now,
            );
        }
        Outcome::NotAvailable { reason, message } => {
            conditions::set(
                conds,
                Condition::false_(types::DATA_SECRET_AVAILABLE, reason, message.clone()),
                generation,
                now,
            );
        }
    }
    conditions::set(
        conds,
        Condition::false_(types::PAUSED, "NotPaused", ""),
        generation,
        now,
    );
    if let Some(ca) = ca {
        let c = if ca.ok {
            Condition::true_(types::CERTIFICATES_AVAILABLE, ca.reason, ca.message.clone())
        } else {
            Condition::false_(types::CERTIFICATES_AVAILABLE, ca.reason, ca.message.clone())
        };
        conditions::set(conds, c, generation, now);
    }
    match join {
        Some(JoinTargets::Gone(message)) => conditions::set(
            conds,
            Condition::false_(
                types::JOIN_TARGETS_AVAILABLE,
                reason::JOIN_TARGETS_GONE,
                message.clone(),
            ),
            generation,
            now,
        ),
        // Written only to clear a problem reported before: no extra write for every machine.
        Some(JoinTargets::Fine) if conditions::find(conds, types::JOIN_TARGETS_AVAILABLE).is_some() => {
            conditions::set(
                conds,
                Condition::true_(types::JOIN_TARGETS_AVAILABLE, reason::JOIN_TARGETS_AVAILABLE, ""),
                generation,
                now,
            );
        }
        _ => {}
    }
    let stranded = conditions::find(conds, types::JOIN_TARGETS_AVAILABLE)
        .filter(|c| !c.is_true())
        .cloned();
    // Ready summarises data availability (a ready config stays Ready once its data exists),
    // unless its node can no longer join.
    let ready = match (conditions::find(conds, types::DATA_SECRET_AVAILABLE), stranded) {
        (Some(d), Some(j)) if d.is_true() => Condition::false_(types::READY, &j.reason, j.message),
        (Some(d), _) if d.is_true() => Condition::true_(types::READY, &d.reason, d.message.clone()),
        (Some(d), _) => Condition::false_(types::READY, &d.reason, d.message.clone()),
        (None, _) => Condition::unknown(types::READY, "Unknown", ""),
    };
    conditions::set(conds, ready, generation, now);
    st.observed_generation = generation;
    st.deprecated = derived(&st.conditions);
    st
}

fn derived(conds: &[Condition]) -> Option<DeprecatedStatus> {
    Some(DeprecatedStatus {
        v1beta1: Some(V1Beta1DeprecatedStatus {
            conditions: conditions::to_v1beta1(conds, severity),
        }),
    })
}

/// The reason of the `DataSecretAvailable` condition, if any (to detect transitions).
pub fn data_reason(st: Option<&MicroK8sConfigStatus>) -> Option<String> {
    st.and_then(|s| conditions::find(&s.conditions, types::DATA_SECRET_AVAILABLE))
        .map(|c| c.reason.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn waits_then_becomes_available_for_both_contracts() {
        let waiting = desired(
            None,
            &Outcome::NotAvailable {
                reason: reason::WAITING_FOR_INFRASTRUCTURE,
                message: "m".into(),
            },
            None,
            None,
            Some(1),
            &t(1),
        );
        assert!(!waiting.ready);
        assert_eq!(waiting.data_secret_name, None);
        assert!(!conditions::is_true(&waiting.conditions, types::READY));
        let v1 = &waiting
            .deprecated
            .as_ref()
            .unwrap()
            .v1beta1
            .as_ref()
            .unwrap()
            .conditions;
        assert!(v1.iter().all(|c| c.status != "False" || c.severity == "Info"));

        let ready = desired(
            Some(&waiting),
            &Outcome::Available {
                secret: "cfg".into(),
                reason: reason::DATA_SECRET_CREATED,
                message: String::new(),
            },
            None,
            None,
            Some(2),
            &t(2),
        );
        assert!(ready.ready);
        assert_eq!(ready.data_secret_name.as_deref(), Some("cfg"));
        assert_eq!(ready.initialization.as_ref().unwrap().data_secret_created, Some(true));
        assert!(conditions::is_true(&ready.conditions, types::READY));
        assert_eq!(ready.observed_generation, Some(2));
        // Idempotent: the same outcome again changes nothing.
        let again = desired(
            Some(&ready),
            &Outcome::Available {
                secret: "cfg".into(),
                reason: reason::DATA_SECRET_CREATED,
                message: String::new(),
            },
            None,
            None,
            Some(2),
            &t(99),
        );
        assert_eq!(again, ready);
    }

    #[test]
    fn paused_only_touches_the_paused_condition() {
        let before = desired(
            None,
            &Outcome::NotAvailable {
                reason: reason::WAITING_FOR_CONTROL_PLANE,
                message: "m".into(),
            },
            None,
            None,
            Some(1),
            &t(1),
        );
        let paused = desired(
            Some(&before),
            &Outcome::Paused("why".into()),
            None,
            None,
            Some(5),
            &t(2),
        );
        assert!(conditions::is_true(&paused.conditions, types::PAUSED));
        assert_eq!(paused.observed_generation, Some(1));
        assert_eq!(
            conditions::find(&paused.conditions, types::DATA_SECRET_AVAILABLE),
            conditions::find(&before.conditions, types::DATA_SECRET_AVAILABLE)
        );
    }

    #[test]
    fn invalid_input_is_a_warning_in_v1beta1() {
        let st = desired(
            None,
            &Outcome::NotAvailable {
                reason: reason::INVALID_CONFIGURATION,
                message: "set spec.version".into(),
            },
            Some(&CaCondition {
                ok: true,
                reason: "CAAvailable",
                message: String::new(),
            }),
            None,
            Some(1),
            &t(1),
        );
        let v1 = &st.deprecated.unwrap().v1beta1.unwrap().conditions;
        let d = v1.iter().find(|c| c.type_ == types::DATA_SECRET_AVAILABLE).unwrap();
        assert_eq!(d.severity, "Warning");
        assert!(
            v1.iter()
                .any(|c| c.type_ == types::CERTIFICATES_AVAILABLE && c.status == "True")
        );
    }

    #[test]
    fn a_stranded_joining_machine_is_not_ready_until_a_target_is_back() {
        let available = Outcome::Available {
            secret: "cfg".into(),
            reason: reason::DATA_SECRET_CREATED,
            message: "worker bootstrap data".into(),
        };
        let fine = desired(None, &available, None, Some(&JoinTargets::Fine), Some(1), &t(1));
        assert!(
            conditions::find(&fine.conditions, types::JOIN_TARGETS_AVAILABLE).is_none(),
            "never written while nothing is wrong"
        );
        assert!(conditions::is_true(&fine.conditions, types::READY));

        let gone = JoinTargets::Gone("joins through 10.0.0.1, deleted".into());
        let stranded = desired(Some(&fine), &available, None, Some(&gone), Some(1), &t(2));
        // The data exists (CAPI's contract fields stay), but the summary says why no node comes.
        assert!(stranded.ready);
        assert!(conditions::is_true(&stranded.conditions, types::DATA_SECRET_AVAILABLE));
        let j = conditions::find(&stranded.conditions, types::JOIN_TARGETS_AVAILABLE).unwrap();
        assert_eq!(
            (j.status.as_str(), j.reason.as_str()),
            ("False", reason::JOIN_TARGETS_GONE)
        );
        let r = conditions::find(&stranded.conditions, types::READY).unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", reason::JOIN_TARGETS_GONE, "joins through 10.0.0.1, deleted")
        );
        let v1 = &stranded
            .deprecated
            .as_ref()
            .unwrap()
            .v1beta1
            .as_ref()
            .unwrap()
            .conditions;
        let v1_ready = v1.iter().find(|c| c.type_ == types::READY).unwrap();
        assert_eq!(v1_ready.severity, "Warning");
        // Reconciled again with no news: nothing changes; a later reconcile that did not look
        // (None) keeps the finding.
        assert_eq!(
            desired(Some(&stranded), &available, None, Some(&gone), Some(1), &t(3)),
            stranded
        );
        assert_eq!(
            desired(Some(&stranded), &available, None, None, Some(1), &t(3)),
            stranded
        );

        let back = desired(
            Some(&stranded),
            &available,
            None,
            Some(&JoinTargets::Fine),
            Some(1),
            &t(4),
        );
        let j = conditions::find(&back.conditions, types::JOIN_TARGETS_AVAILABLE).unwrap();
        assert_eq!(
            (j.status.as_str(), j.reason.as_str()),
            ("True", reason::JOIN_TARGETS_AVAILABLE)
        );
        let r = conditions::find(&back.conditions, types::READY).unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", reason::DATA_SECRET_CREATED)
        );
    }
}
