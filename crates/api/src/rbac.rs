//! Helpers to declare the RBAC rules each manager needs, next to the code that needs them.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// A rule over resources of one API group.
pub fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Read-only verbs for cached objects.
pub const READ: &[&str] = &["get", "list", "watch"];
