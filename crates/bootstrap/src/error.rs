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
        }
    }
}
