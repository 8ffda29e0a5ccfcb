//! T0: version × confinement × risk → snap channel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

use mk8s_api::bootstrap::InitConfiguration;
use mk8s_cloudinit::{Channel, RenderError, install_channel};

fn init(confinement: Option<&str>, risk: Option<&str>) -> InitConfiguration {
    InitConfiguration {
        confinement: confinement.map(str::to_string),
        risk_level: risk.map(str::to_string),
        ..Default::default()
    }
}

fn channel(version: &str, confinement: Option<&str>, risk: Option<&str>) -> Result<Channel, RenderError> {
    install_channel(version, &init(confinement, risk))
}

#[test]
fn channel_table() {
    let classic = [None, Some(""), Some("classic")];
    let risks = [
        (None, "stable"),
        (Some(""), "stable"),
        (Some("stable"), "stable"),
        (Some("candidate"), "candidate"),
        (Some("beta"), "beta"),
        (Some("edge"), "edge"),
    ];
    let versions = [
        ("v1.33.4", "1.33"),
        ("1.33.4", "1.33"),
        ("v1.25.0", "1.25"),
        ("v1.24.17", "1.24"),
        ("v1.23.0", "1.23"),
        ("v1.34.0-rc.1", "1.34"),
        ("v1.34.0-alpha.2+build.7", "1.34"),
        ("1.30.0+abc", "1.30"),
        ("v2.0.0", "2.0"),
    ];
    let mut cases = 0;
    for (version, track) in versions {
        for (risk, risk_name) in risks {
            for c in classic {
                assert_eq!(
                    channel(version, c, risk),
                    Ok(Channel {
                        channel: format!("{track}/{risk_name}"),
                        classic: true
                    }),
                    "{version} {c:?} {risk:?}"
                );
                cases += 1;
            }
            let strict = channel(version, Some("strict"), risk);
            if track == "1.24" || track == "1.23" {
                assert!(
                    matches!(strict, Err(RenderError::StrictConfinementUnsupported { .. })),
                    "{version}: {strict:?}"
                );
            } else {
                assert_eq!(
                    strict,
                    Ok(Channel {
                        channel: format!("{track}-strict/{risk_name}"),
                        classic: false
                    }),
                    "{version} strict {risk:?}"
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 9 * 6 * 4);
}

#[test]
fn strict_below_1_25_is_rejected_with_a_clear_message() {
    let err = channel("v1.24.3", Some("strict"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "strict confinement needs MicroK8s 1.25 or newer, but the machine's version selects track 1.24"
    );
}

#[test]
fn bad_versions_and_enums_are_errors() {
    for version in ["v1.28", "", "latest", "v1.28.x", "1.2.3.4", " v1.28.0"] {
        let err = channel(version, None, None).unwrap_err();
        assert!(matches!(err, RenderError::Version(_)), "{version:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{version:?}")), "{err}");
    }
    let err = channel("v1.28.0", Some("devmode"), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "initConfiguration.confinement: unsupported value \"devmode\", expected one of classic, strict"
    );
    let err = channel("v1.28.0", None, Some("nightly")).unwrap_err();
    assert!(matches!(err, RenderError::InvalidEnum(_)), "{err:?}");
}

#[test]
fn display() {
    let c = channel("v1.28.3", None, Some("stable")).unwrap();
    assert_eq!(c.to_string(), "1.28/stable (classic)");
    assert_eq!(
        channel("v1.28.3", Some("strict"), None).unwrap().to_string(),
        "1.28-strict/stable"
    );
}
