//! Kubernetes version + confinement + risk level → MicroK8s snap channel.

use std::fmt;

use mk8s_api::bootstrap::{Confinement, InitConfiguration};
use mk8s_api::version::{KubeVersion, Track};

use crate::error::RenderError;

/// The oldest track that has a strictly confined snap.
pub const FIRST_STRICT_TRACK: Track = Track { major: 1, minor: 25 };

/// The snap channel a node installs (and the control plane provider refreshes to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Channel {
    /// `<major>.<minor>[-strict]/<risk>`, e.g. `1.33/stable` or `1.33-strict/candidate`.
    pub channel: String,
    /// Whether the snap needs `--classic` (everything but strict confinement).
    pub classic: bool,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.channel)?;
        if self.classic {
            f.write_str(" (classic)")?;
        }
        Ok(())
    }
}

/// The snap channel for a Machine's Kubernetes version (`v1.33.4` or `1.33.4`; pre-release
/// and build parts are ignored: a snap track always carries the newest patch) and the
/// node's `confinement` and `riskLevel` (absent or empty: classic, stable).
///
/// | confinement | risk        | channel                    | classic |
/// |-------------|-------------|----------------------------|---------|
/// | classic     | `<risk>`    | `<maj>.<min>/<risk>`        | yes     |
/// | strict      | `<risk>`    | `<maj>.<min>-strict/<risk>` | no      |
///
/// The risk is always spelled out (`1.33` and `1.33/stable` are the same channel to snapd;
/// the explicit form is what `snap info` reports, so the control plane provider can compare).
/// Strict confinement needs track 1.25 or newer.
pub fn install_channel(version: &str, init: &InitConfiguration) -> Result<Channel, RenderError> {
    let track = KubeVersion::parse(version)?.track();
    let risk = init.risk_level()?.as_str();
    match init.confinement()? {
        Confinement::Classic => Ok(Channel {
            channel: format!("{track}/{risk}"),
            classic: true,
        }),
        Confinement::Strict if track < FIRST_STRICT_TRACK => Err(RenderError::StrictConfinementUnsupported { track }),
        Confinement::Strict => Ok(Channel {
            channel: format!("{track}-strict/{risk}"),
            classic: false,
        }),
    }
}
