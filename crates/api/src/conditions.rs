//! Conditions in both CAPI shapes, and pure helpers to maintain them.
//!
//! Decision (both controllers): `status.conditions` is the v1beta2-contract list in the metav1
//! shape (`type`, `status`, `reason`, `message`, `lastTransitionTime`, `observedGeneration`).
//! `status.deprecated.v1beta1.conditions` carries the same conditions in the v1beta1 shape
//! (`severity` added, `Ready` first) for CAPI cores and tools that still read the v1beta1
//! contract. This is the layout the kubeadm providers adopted; the v1beta1 list is always
//! derived from the v1beta2 one, never maintained separately.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `status` value of a true condition.
pub const TRUE: &str = "True";
/// `status` value of a false condition.
pub const FALSE: &str = "False";
/// `status` value of an unknown condition.
pub const UNKNOWN: &str = "Unknown";

/// A condition in the metav1 shape (v1beta2 contract).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition in CamelCase, e.g. `Ready`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,

    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,

    /// The `.metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the condition last changed from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// A CamelCase reason for the condition's last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub reason: String,

    /// A human readable message: what is happening, and what to change if the user must act.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32768))]
    pub message: String,
}

/// A condition in the CAPI v1beta1 shape.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Beta1Condition {
    /// Type of the condition in CamelCase.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 256))]
    pub type_: String,

    /// `True`, `False` or `Unknown`.
    pub status: String,

    /// `Error`, `Warning` or `Info` for false conditions; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity: String,

    /// When the condition last changed from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// A CamelCase reason for the condition's last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,

    /// A human readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Status fields kept for readers of the v1beta1 contract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeprecatedStatus {
    /// The v1beta1-contract view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1beta1: Option<V1Beta1DeprecatedStatus>,
}

/// The v1beta1-contract view of the status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Beta1DeprecatedStatus {
    /// Conditions in the v1beta1 shape, derived from `status.conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub conditions: Vec<V1Beta1Condition>,
}

/// How serious a false condition is, for the v1beta1 shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something is broken and needs the user.
    Error,
    /// Something is not as it should be, but may recover.
    Warning,
    /// An expected wait.
    Info,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        }
    }
}

impl Condition {
    /// A true condition.
    pub fn true_(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, TRUE, reason, message)
    }

    /// A false condition.
    pub fn false_(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, FALSE, reason, message)
    }

    /// An unknown condition.
    pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, UNKNOWN, reason, message)
    }

    fn new(type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            observed_generation: None,
            last_transition_time: None,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// Whether the condition is `True`.
    pub fn is_true(&self) -> bool {
        self.status == TRUE
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of that type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(Condition::is_true)
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change (so that
/// repeated reconciles produce identical status and no needless writes).
///
/// `generation` is recorded as `observedGeneration`; `now` is used only on transitions.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition, generation: Option<i64>, now: &Time) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time = if existing.status == new.status && existing.last_transition_time.is_some() {
                existing.last_transition_time.clone()
            } else {
                Some(now.clone())
            };
            *existing = new;
        }
        None => {
            new.last_transition_time = Some(now.clone());
            conditions.push(new);
        }
    }
    conditions.sort_by_key(|c| order_key(&c.type_));
}

/// Removes a condition by type.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// `Ready`, `Available` and `Paused` first, the rest alphabetically: a stable order keeps
/// status patches deterministic.
fn order_key(type_: &str) -> (u8, String) {
    let rank = match type_ {
        "Ready" => 0,
        "Available" => 1,
        "Paused" => 2,
        _ => 3,
    };
    (rank, type_.to_string())
}

/// Derives the v1beta1-shaped list from the v1beta2 conditions; `severity` decides the
/// severity of each false condition (by type and reason).
pub fn to_v1beta1(conditions: &[Condition], severity: impl Fn(&Condition) -> Severity) -> Vec<V1Beta1Condition> {
    conditions
        .iter()
        // `Paused` is a v1beta2-only condition; v1beta1 readers know pausing from the Cluster.
        .filter(|c| c.type_ != "Paused")
        .map(|c| V1Beta1Condition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            severity: if c.status == FALSE {
                severity(c).as_str().to_string()
            } else {
                String::new()
            },
            last_transition_time: c.last_transition_time.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut list = vec![];
        set(&mut list, Condition::false_("Ready", "Waiting", "a"), Some(1), &t(10));
        assert_eq!(list[0].last_transition_time, Some(t(10)));
        set(
            &mut list,
            Condition::false_("Ready", "StillWaiting", "b"),
            Some(2),
            &t(20),
        );
        assert_eq!(list[0].last_transition_time, Some(t(10)));
        assert_eq!(list[0].reason, "StillWaiting");
        assert_eq!(list[0].observed_generation, Some(2));
        set(&mut list, Condition::true_("Ready", "Done", ""), Some(2), &t(30));
        assert_eq!(list[0].last_transition_time, Some(t(30)));
    }

    #[test]
    fn order_is_stable() {
        let mut list = vec![];
        for ty in ["Zeta", "Paused", "Alpha", "Ready", "Available"] {
            set(&mut list, Condition::true_(ty, "R", ""), None, &t(1));
        }
        let types: Vec<_> = list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Available", "Paused", "Alpha", "Zeta"]);
    }

    #[test]
    fn v1beta1_view_has_severity_for_false_only() {
        let list = vec![
            Condition::true_("Ready", "Done", ""),
            Condition::false_("DataSecretAvailable", "WaitingForClusterInfrastructure", "x"),
            Condition::true_("Paused", "NotPaused", ""),
        ];
        let v1 = to_v1beta1(&list, |_| Severity::Info);
        assert_eq!(v1.len(), 2);
        assert_eq!(v1[0].severity, "");
        assert_eq!(v1[1].severity, "Info");
    }
}
