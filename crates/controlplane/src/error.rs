//! The crate's error type.

/// Errors of the control plane controller. Conditions report what the user must act on; these
/// errors are the transient failures that make a reconcile retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the management cluster failed.
    #[error("management cluster API: {0}")]
    Kube(#[source] Box<kube::Error>),
    /// A call to a workload cluster failed.
    #[error("workload cluster {cluster}: {source}")]
    Workload {
        /// `<namespace>/<cluster>`.
        cluster: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// A certificate operation failed.
    #[error("certificates: {0}")]
    Pki(#[from] mk8s_pki::PkiError),
    /// A client could not be built.
    #[error("client: {0}")]
    Client(#[from] mk8s_runtime::client::ClientError),
    /// An object we read lacks something we need.
    #[error("{0}")]
    Invalid(String),
    /// A write raced with another writer; retry soon.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.is_conflict() => Error::Conflict(s.message.clone()),
            _ => Error::Kube(Box::new(e)),
        }
    }
}

impl Error {
    /// A short, bounded category for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api",
            Error::Workload { .. } => "workload",
            Error::Serde(_) => "serde",
            Error::Pki(_) => "pki",
            Error::Client(_) => "client",
            Error::Invalid(_) => "invalid",
            Error::Conflict(_) => "conflict",
        }
    }

    /// The workload cluster's answer when it refused a request for good — admission (Pod
    /// Security, a policy engine, a webhook) or an invalid object: 400, 403 or 422. Retrying at
    /// once cannot help, so node actions count it as a failed attempt instead of failing the
    /// reconcile.
    pub fn refused_by_workload(&self) -> Option<&str> {
        match self {
            Error::Workload { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Some(&s.message),
                _ => None,
            },
            _ => None,
        }
    }

    /// Wraps a workload cluster error.
    pub fn workload(cluster: &str, e: kube::Error) -> Self {
        Error::Workload {
            cluster: cluster.to_string(),
            source: Box::new(e),
        }
    }
}

/// Whether a kube error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is a 409 AlreadyExists.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
