//! The one error type of the renderer. Its messages end up in a Kubernetes condition of the
//! `MicroK8sConfig`, so they name the offending field and never contain a secret.

use mk8s_api::bootstrap::InvalidEnum;
use mk8s_api::version::{Track, VersionError};

/// Why a cloud-config cannot be rendered from the given input.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The join token does not have exactly 32 characters.
    #[error("the join token is invalid: it must be exactly 32 characters long, not {len}")]
    JoinTokenLength {
        /// Number of characters of the rejected token.
        len: usize,
    },

    /// The join token has characters that cannot be part of a join URL.
    #[error("the join token is invalid: only ASCII letters, digits, '-', '_', '.' and '~' are allowed")]
    JoinTokenCharacters,

    /// A control plane role was given an empty or multi-word cluster agent auth token.
    #[error("the cluster agent auth token is invalid: it must be one non-empty word without whitespace")]
    InvalidAuthToken,

    /// The init role was given an empty CA certificate or key.
    #[error("the cluster CA {what} is empty")]
    EmptyCa {
        /// `certificate` or `private key`.
        what: &'static str,
    },

    /// `initConfiguration.joinTokenTTLInSecs` is zero or negative.
    #[error("initConfiguration.joinTokenTTLInSecs must be a positive number of seconds, not {ttl}")]
    NonPositiveTokenTtl {
        /// The rejected TTL.
        ttl: i64,
    },

    /// The Machine's Kubernetes version is not a semantic version.
    #[error(transparent)]
    Version(#[from] VersionError),

    /// Strict confinement was asked for a MicroK8s track that has no strict snap.
    #[error("strict confinement needs MicroK8s 1.25 or newer, but the machine's version selects track {track}")]
    StrictConfinementUnsupported {
        /// The track the version selects.
        track: Track,
    },

    /// An enum field holds a value the schema forbids.
    #[error(transparent)]
    InvalidEnum(#[from] InvalidEnum),

    /// The cluster's control plane endpoint host is empty.
    #[error("the cluster's control plane endpoint host (spec.controlPlaneEndpoint.host) is empty")]
    EmptyEndpointHost,

    /// The cluster's control plane endpoint host is neither an IP address nor a DNS name.
    #[error("the cluster's control plane endpoint host {host:?} is neither an IP address nor a DNS name")]
    InvalidEndpointHost {
        /// The rejected host.
        host: String,
    },

    /// The cluster's control plane endpoint port is 0.
    #[error("the cluster's control plane endpoint port (spec.controlPlaneEndpoint.port) must be between 1 and 65535")]
    InvalidEndpointPort,

    /// A joining role was given no control plane address to join through.
    #[error("no control plane node address to join through: no running control plane machine reports an address")]
    NoJoinAddress,

    /// A control plane address to join through is neither an IP address nor a DNS name.
    #[error("the control plane node address {address:?} is neither an IP address nor a DNS name")]
    InvalidJoinAddress {
        /// The rejected address.
        address: String,
    },

    /// A spec field holds a value the node cannot use.
    #[error("{field}: {reason}")]
    InvalidField {
        /// JSON path of the field, e.g. `initConfiguration.addons[2]`.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The YAML serializer failed (a bug: every input is representable).
    #[error("internal error while writing the cloud-config: {0}")]
    Yaml(String),
}

impl RenderError {
    pub(crate) fn field(field: impl Into<String>, reason: &'static str) -> RenderError {
        RenderError::InvalidField {
            field: field.into(),
            reason,
        }
    }
}
