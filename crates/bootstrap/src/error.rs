//! The bootstrap crate's error type.

/// Errors that end a reconcile early (the object is retried with backoff). Problems the user
/// must fix are not errors: they become conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Generating the cluster CA failed.
    #[error("cluster CA: {0}")]
    Pki(#[from] mk8s_pki::PkiError),
    /// Serializing an object failed.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// Work moved off the async workers (key generation) panicked or was cancelled.
    #[error("background task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A cluster Secret still belongs to a deleted Cluster of the same name.
    #[error(
        "Secret {secret} belongs to a deleted Cluster of this name (owner uid {owner_uid}); waiting for the garbage collector to delete it before creating this cluster's own"
    )]
    StaleClusterSecret {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The uid of the Cluster it belongs to.
        owner_uid: String,
    },
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.is_conflict() => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Pki(_) => "pki",
            Error::Json(_) => "serialization",
            Error::Task(_) => "task",
            Error::StaleClusterSecret { .. } => "stale_cluster_secret",
        }
    }

    /// Whether the API server answered 404 for the MicroK8sConfig `name` itself: the config
    /// was deleted while its reconcile ran (e.g. its status patch raced the deletion). There
    /// is nothing left to do for it, and no retry would succeed.
    pub fn is_config_gone(&self, name: &str) -> bool {
        self.is_config_status(name, |s| s.is_not_found())
    }

    /// Whether the API server answered 409 for the MicroK8sConfig `name` itself: a write
    /// carried the resourceVersion the reconcile read, and a newer version exists. Its watch
    /// event reconciles again; nothing to retry or warn about.
    pub fn is_config_conflict(&self, name: &str) -> bool {
        self.is_config_status(name, |s| s.is_conflict())
    }

    fn is_config_status(&self, name: &str, what: impl Fn(&kube::core::Status) -> bool) -> bool {
        let Error::Kube(kube::Error::Api(s)) = self else {
            return false;
        };
        let group = <mk8s_api::MicroK8sConfig as kube::Resource>::group(&());
        what(s)
            && s.details
                .as_ref()
                .is_some_and(|d| d.name == name && d.group == group && d.kind == "microk8sconfigs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    /// A 404 as the API server sends it (the body of a failed PATCH).
    fn not_found(group: &str, kind: &str, name: &str) -> Error {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{kind}.{group} \"{name}\" not found"), "reason": "NotFound",
            "details": {"name": name, "group": group, "kind": kind}, "code": 404,
        });
        Error::Kube(kube::Error::Api(Box::new(serde_json::from_value(body).unwrap())))
    }

    #[test]
    fn only_a_404_for_the_config_itself_means_the_config_is_gone() {
        let group = "bootstrap.cluster.x-k8s.io";
        assert!(not_found(group, "microk8sconfigs", "w-1").is_config_gone("w-1"));
        // Another config, another kind, another group: a real failure of this reconcile.
        assert!(!not_found(group, "microk8sconfigs", "w-2").is_config_gone("w-1"));
        assert!(!not_found("", "secrets", "w-1").is_config_gone("w-1"));
        assert!(!not_found("cluster.x-k8s.io", "machines", "w-1").is_config_gone("w-1"));
        // A 404 without details, a conflict, an error that is not the API's.
        let bare = Status::failure("not found", "NotFound").with_code(404);
        assert!(!Error::Kube(kube::Error::Api(Box::new(bare))).is_config_gone("w-1"));
        let conflict = Status::failure("conflict", "Conflict").with_code(409);
        assert!(!Error::Kube(kube::Error::Api(Box::new(conflict))).is_config_gone("w-1"));
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(!Error::Json(json).is_config_gone("w-1"));
    }
}
