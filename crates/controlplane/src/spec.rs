//! Validation of a `MicroK8sControlPlane` spec into [`Desired`]. Objects can bypass the
//! schema (stored before it, or written by old clients); every problem becomes a condition,
//! never a panic.

use std::time::Duration;

use mk8s_api::MicroK8sControlPlaneSpec;
use mk8s_api::capi::ObjRef;
use mk8s_api::controlplane::UpgradeStrategy;
use mk8s_api::version::KubeVersion;

use crate::model::{Desired, RemediationSpec, TemplateRef};

/// A problem with the spec: condition reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn problem(reason: &'static str, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        reason,
        message: message.into(),
    }
}

/// The infrastructure template reference: `machineTemplate.spec.infrastructureRef` (v1beta2
/// layout, ClusterClass) or `machineTemplate.infrastructureTemplate` (Canonical's).
pub fn template_ref(spec: &MicroK8sControlPlaneSpec) -> Result<TemplateRef, SpecProblem> {
    let mt = &spec.machine_template;
    if let Some(r) = mt.spec.as_ref().and_then(|s| s.infrastructure_ref.as_ref()) {
        if r.api_group.is_empty() || r.kind.is_empty() || r.name.is_empty() {
            return Err(problem(
                "InvalidInfrastructureReference",
                "spec.machineTemplate.spec.infrastructureRef needs apiGroup, kind and name",
            ));
        }
        return Ok(TemplateRef {
            group: r.api_group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            api_version: None,
        });
    }
    if let Some(r) = &mt.infrastructure_template {
        let api_version = r.api_version.clone().unwrap_or_default();
        let kind = r.kind.clone().unwrap_or_default();
        let name = r.name.clone().unwrap_or_default();
        let obj = ObjRef {
            api_version: Some(api_version.clone()),
            kind: kind.clone(),
            name: name.clone(),
            ..Default::default()
        };
        let group = obj.group().to_string();
        if group.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(problem(
                "InvalidInfrastructureReference",
                "spec.machineTemplate.infrastructureTemplate needs apiVersion (group/version), kind and name",
            ));
        }
        return Ok(TemplateRef {
            group,
            kind,
            name,
            api_version: Some(api_version),
        });
    }
    Err(problem(
        "InvalidInfrastructureReference",
        "set spec.machineTemplate.infrastructureTemplate or spec.machineTemplate.spec.infrastructureRef",
    ))
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most `max` characters.
fn is_label_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lower-case DNS label without a length bound: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS subdomain: dot-separated lower-case labels of at most 63 characters, at most 253 in
/// all.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| l.len() <= 63 && is_dns_label(l))
}

/// A label or annotation key (`[prefix/]name`), as the API server checks it.
fn is_qualified_name(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name, 63),
        None => is_label_name(key, 63),
    }
}

/// A Machine readiness gate's condition type, as CAPI's schema checks it: `[prefix/]name`
/// with a lower-case DNS prefix and a name of `[A-Za-z0-9][-A-Za-z0-9_.]*` ending
/// alphanumeric, at most 316 characters in all (no per-part limits).
fn is_condition_type(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    s.len() <= 316 && prefix.is_none_or(|p| p.split('.').all(is_dns_label)) && is_label_name(name, usize::MAX)
}

/// What the API server would refuse in `machineTemplate.metadata` and readiness gates: the
/// Machines' metadata apply failed on every reconcile, unseen.
pub(crate) fn machine_template_problem(spec: &MicroK8sControlPlaneSpec) -> Option<SpecProblem> {
    let meta = spec.machine_template.metadata.clone().unwrap_or_default();
    let bad = |what: String| {
        Some(problem(
            "InvalidMachineTemplate",
            format!("spec.machineTemplate.{what}; no control plane machine is created until it is fixed"),
        ))
    };
    for (k, v) in &meta.labels {
        if !is_qualified_name(k) {
            return bad(format!(
                "metadata.labels: {k:?} is not a valid label key ([prefix/]name, name at most 63 characters of [A-Za-z0-9-_.])"
            ));
        }
        if !v.is_empty() && !is_label_name(v, 63) {
            return bad(format!(
                "metadata.labels[{k:?}]: {v:?} is not a valid label value (at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric)"
            ));
        }
    }
    // The API server checks annotation keys lower-cased (`Example.com/owner` is valid).
    if let Some(k) = meta.annotations.keys().find(|k| !is_qualified_name(&k.to_lowercase())) {
        return bad(format!("metadata.annotations: {k:?} is not a valid annotation key"));
    }
    let size: usize = meta.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 256 * 1024 {
        return bad(format!(
            "metadata.annotations: {size} bytes, more than the 256 KiB the API server allows"
        ));
    }
    let gates = spec
        .machine_template
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default();
    if let Some(g) = gates.iter().find(|g| !is_condition_type(&g.condition_type)) {
        return bad(format!(
            "spec.readinessGates: {:?} is not a valid condition type ([prefix/]name)",
            g.condition_type
        ));
    }
    None
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    v.and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::from_secs(default), Duration::from_secs)
}

/// Validates the spec. Problems that make the spec unusable are errors; the rest (a
/// defaulted `replicas`) are reported by the caller from [`Desired::replicas_defaulted`].
pub fn validate(spec: &MicroK8sControlPlaneSpec) -> Result<Desired, Vec<SpecProblem>> {
    let mut problems = vec![];
    let version = KubeVersion::parse(&spec.version)
        .map_err(|e| problems.push(problem("InvalidVersion", format!("spec.version: {e}; e.g. v1.33.4"))))
        .ok();
    let strategy = spec
        .upgrade_strategy()
        .map_err(|e| problems.push(problem("InvalidUpgradeStrategy", e.to_string())))
        .ok();
    let template = template_ref(spec).map_err(|p| problems.push(p)).ok();
    let replicas = match spec.replicas {
        Some(r) if r < 1 => {
            problems.push(problem(
                "InvalidReplicas",
                format!("spec.replicas is {r}: a control plane needs at least one machine"),
            ));
            None
        }
        r => Some(r.unwrap_or(1)),
    };
    let config = spec.control_plane_config();
    let init = config.init();
    if let Err(e) = init.risk_level() {
        problems.push(problem(
            "InvalidControlPlaneConfig",
            format!("spec.controlPlaneConfig.{e}"),
        ));
    }
    if let Err(e) = init.confinement() {
        problems.push(problem(
            "InvalidControlPlaneConfig",
            format!("spec.controlPlaneConfig.{e}"),
        ));
    }
    // What rendering the machines' bootstrap data would refuse: said before a machine exists
    // (a first machine that cannot render never initializes the cluster). Not fatal: only new
    // machines need the config, so removals, upgrades in place and the kubeconfig go on.
    let config_problem = version
        .as_ref()
        .filter(|_| init.risk_level().is_ok() && init.confinement().is_ok())
        .and_then(|v| mk8s_cloudinit::validate_spec(&config.normalized(), &v.to_string()).err())
        .map(|e| {
            let message = match e {
                mk8s_cloudinit::RenderError::StrictConfinementUnsupported { .. }
                | mk8s_cloudinit::RenderError::Version(_) => e.to_string(),
                e => format!("spec.controlPlaneConfig.{e}"),
            };
            problem(
                "InvalidControlPlaneConfig",
                format!("{message}; no control plane machine is created until it is fixed"),
            )
        });
    let config_problem = config_problem.or_else(|| machine_template_problem(spec));
    match (version, strategy, template, replicas) {
        (Some(version), Some(strategy), Some(template), Some(replicas)) if problems.is_empty() => {
            Ok(assemble(spec, version, strategy, template, replicas, config_problem))
        }
        _ => Err(problems),
    }
}

/// The [`Desired`] of a spec [`validate`] refused, for what a control plane keeps doing while
/// it waits for a fix: renewing its kubeconfig, copying providerIDs onto Nodes and removing
/// the members of machines being deleted. What failed takes an inert value (version
/// `v0.0.0`, the smart strategy, an empty template reference, one replica): nothing that
/// creates, deletes, upgrades or reports on machines may read it.
pub fn held(spec: &MicroK8sControlPlaneSpec) -> Desired {
    let inert_template = TemplateRef {
        group: String::new(),
        kind: String::new(),
        name: String::new(),
        api_version: None,
    };
    assemble(
        spec,
        KubeVersion::parse(&spec.version).unwrap_or(KubeVersion {
            major: 0,
            minor: 0,
            patch: 0,
            pre: String::new(),
            build: String::new(),
        }),
        spec.upgrade_strategy().unwrap_or(UpgradeStrategy::Smart),
        template_ref(spec).unwrap_or(inert_template),
        spec.replicas.filter(|r| *r >= 1).unwrap_or(1),
        None,
    )
}

fn assemble(
    spec: &MicroK8sControlPlaneSpec,
    version: KubeVersion,
    strategy: UpgradeStrategy,
    template: TemplateRef,
    replicas: i32,
    config_problem: Option<SpecProblem>,
) -> Desired {
    let rem = spec.remediation.clone().unwrap_or_default();
    Desired {
        replicas,
        replicas_defaulted: spec.replicas.is_none(),
        version_string: spec.version.clone(),
        version,
        strategy,
        max_surge: spec.max_surge(),
        config: spec.control_plane_config().normalized(),
        template,
        rollout_after: spec.rollout.as_ref().and_then(|r| r.after.as_ref()).map(|t| t.0),
        remediation: RemediationSpec {
            max_retry: rem.max_retry,
            retry_period: secs(rem.retry_period_seconds, 0),
            min_healthy_period: secs(rem.min_healthy_period_seconds, 3600),
        },
        config_problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use mk8s_api::bootstrap::{InitConfiguration, MicroK8sConfigSpec};
    use mk8s_api::controlplane::{ContractVersionedObjectReference, MachineTemplate, MachineTemplateSpec};

    fn spec() -> MicroK8sControlPlaneSpec {
        MicroK8sControlPlaneSpec {
            replicas: Some(3),
            version: "v1.33.1".into(),
            machine_template: MachineTemplate {
                infrastructure_template: Some(ObjectReference {
                    api_version: Some("infrastructure.cluster.x-k8s.io/v1beta1".into()),
                    kind: Some("AWSMachineTemplate".into()),
                    name: Some("t".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn accepts_both_template_fields() {
        let d = validate(&spec()).unwrap();
        assert_eq!(d.template.group, "infrastructure.cluster.x-k8s.io");
        assert_eq!(
            d.template.group_kind(),
            "AWSMachineTemplate.infrastructure.cluster.x-k8s.io"
        );
        let mut s = spec();
        s.machine_template.infrastructure_template = None;
        s.machine_template.spec = Some(MachineTemplateSpec {
            infrastructure_ref: Some(ContractVersionedObjectReference {
                api_group: "infrastructure.cluster.x-k8s.io".into(),
                kind: "SimMachineTemplate".into(),
                name: "x".into(),
            }),
            ..Default::default()
        });
        assert_eq!(validate(&s).unwrap().template.kind, "SimMachineTemplate");
    }

    #[test]
    fn a_held_spec_keeps_what_parsed_and_makes_the_rest_inert() {
        // Valid: the same as validate's.
        assert_eq!(held(&spec()), validate(&spec()).unwrap());
        let mut s = spec();
        s.version = "v1.34.0.1".into();
        s.upgrade_strategy = Some("Sideways".into());
        s.replicas = Some(0);
        s.machine_template.infrastructure_template = None;
        assert!(validate(&s).is_err());
        let d = held(&s);
        assert_eq!(d.version.to_string(), "v0.0.0");
        assert_eq!(d.version_string, "v1.34.0.1");
        assert_eq!(d.strategy, UpgradeStrategy::Smart);
        assert_eq!(d.replicas, 1);
        assert!(d.template.name.is_empty() && d.template.kind.is_empty());
        assert!(d.config_problem.is_none());
        // What parsed stays.
        let mut s = spec();
        s.version = "bad".into();
        s.upgrade_strategy = Some("RollingUpgrade".into());
        let d = held(&s);
        assert_eq!(
            (d.strategy, d.replicas, d.template.name.as_str()),
            (UpgradeStrategy::Rolling, 3, "t")
        );
    }

    #[test]
    fn bad_inputs_are_problems_not_panics() {
        let mut s = spec();
        s.replicas = None;
        let d = validate(&s).unwrap();
        assert_eq!(d.replicas, 1);
        assert!(d.replicas_defaulted);

        let mut s = spec();
        s.version = "1.33".into();
        s.upgrade_strategy = Some("Sideways".into());
        s.machine_template.infrastructure_template = None;
        s.replicas = Some(0);
        let p = validate(&s).unwrap_err();
        let reasons: Vec<_> = p.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            [
                "InvalidVersion",
                "InvalidUpgradeStrategy",
                "InvalidInfrastructureReference",
                "InvalidReplicas"
            ]
        );

        let mut s = spec();
        s.version = "v1.24.0".into();
        s.control_plane_config = Some(MicroK8sConfigSpec {
            init_configuration: Some(InitConfiguration {
                confinement: Some("strict".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let problem = validate(&s).unwrap().config_problem.unwrap();
        assert_eq!(problem.reason, "InvalidControlPlaneConfig");
        assert!(problem.message.contains("strict confinement"), "{}", problem.message);
    }

    #[test]
    fn machine_metadata_the_api_server_would_refuse_is_a_spec_problem() {
        use mk8s_api::bootstrap::ObjectMetaTemplate;
        use mk8s_api::controlplane::MachineReadinessGate;
        let with = |labels: &[(&str, &str)], annotations: &[&str], gate: Option<&str>| {
            let mut s = spec();
            s.machine_template.metadata = Some(ObjectMetaTemplate {
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                annotations: annotations.iter().map(|k| (k.to_string(), "x".to_string())).collect(),
            });
            if let Some(g) = gate {
                s.machine_template.spec = Some(MachineTemplateSpec {
                    readiness_gates: Some(vec![MachineReadinessGate {
                        condition_type: g.into(),
                        polarity: None,
                    }]),
                    ..Default::default()
                });
            }
            validate(&s).unwrap().config_problem.map(|p| (p.reason, p.message))
        };
        let long = "v".repeat(64);
        for (labels, annotations, gate) in [
            (vec![("team name", "x")], vec![], None),
            (vec![("Example.com/team", "x")], vec![], None),
            (vec![("team", long.as_str())], vec![], None),
            (vec![("team", "-x")], vec![], None),
            (vec![], vec!["a b"], None),
            (vec![], vec![], Some("my gate")),
        ] {
            let p = with(&labels, &annotations, gate);
            assert!(
                p.as_ref().is_some_and(|(r, _)| *r == "InvalidMachineTemplate"),
                "{labels:?} {annotations:?} {gate:?}: {p:?}"
            );
        }
        assert_eq!(
            with(
                &[("example.com/team", "a.b-c_d"), ("tier", "")],
                &["example.com/owner", "note", "Example.com/Owner"],
                Some("example.com/Ready")
            ),
            None
        );
        let long_gate = format!("example.com/{}", "G".repeat(100));
        assert_eq!(with(&[], &[], Some(&long_gate)), None, "no 63-character limit on gates");
    }

    #[test]
    fn what_rendering_would_refuse_is_a_spec_problem_before_any_machine_but_not_fatal() {
        let with = |init: InitConfiguration| {
            let mut s = spec();
            s.control_plane_config = Some(MicroK8sConfigSpec {
                init_configuration: Some(init),
                ..Default::default()
            });
            validate(&s)
        };
        let bad = [
            InitConfiguration {
                snapstore_proxy_domain: Some("https://snap.example".into()),
                snapstore_proxy_id: Some("id".into()),
                ..Default::default()
            },
            InitConfiguration {
                http_proxy: Some("http://proxy:3128\nrm -rf /".into()),
                ..Default::default()
            },
            InitConfiguration {
                extra_write_files: Some(vec![mk8s_api::bootstrap::CloudInitWriteFile {
                    path: "/etc/dir/".into(),
                    content: String::new(),
                    owner: "root:root".into(),
                    permissions: "0644".into(),
                }]),
                ..Default::default()
            },
        ];
        for init in bad {
            let p = with(init.clone()).unwrap().config_problem.unwrap();
            assert_eq!(p.reason, "InvalidControlPlaneConfig");
            assert!(
                p.message.starts_with("spec.controlPlaneConfig.initConfiguration."),
                "{}",
                p.message
            );
        }
        assert!(
            with(InitConfiguration {
                snapstore_proxy_domain: Some("snap.example:8443".into()),
                snapstore_proxy_id: Some("id".into()),
                http_proxy: Some("http://proxy:3128".into()),
                ..Default::default()
            })
            .unwrap()
            .config_problem
            .is_none()
        );
    }
}
