//! The clusterctl release manifests (`make release-manifests`) are well-formed, keep every
//! namespaced object in the provider's one Namespace, carry exactly the CRDs and RBAC of
//! `config/`, and use only the clusterctl variables they declare.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mk8s_gen::release;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn templates() -> Vec<(String, String)> {
    release::SIM_TEMPLATES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read_to_string(root().join("templates").join(n)).unwrap(),
            )
        })
        .collect()
}

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The `${…}` expressions of a text: `(name, operator and argument)`.
fn variables(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let end = tail.find('}').expect("unterminated ${");
        let expr = &tail[..end];
        let name_end = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        out.push((expr[..name_end].to_string(), expr[name_end..].to_string()));
        rest = &tail[end..];
    }
    out
}

/// Substitutes `${NAME:=default}` with the default (or `vals`), `${NAME#v}` with the
/// value without the prefix, `${NAME}` with `vals`.
fn substitute(text: &str, vals: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('}').unwrap();
        let expr = &tail[..end];
        let (name, op) = expr.split_at(
            expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len()),
        );
        let given = vals.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let value = match (op.strip_prefix(":="), op.strip_prefix('#')) {
            (Some(default), _) => given.unwrap_or_else(|| default.to_string()),
            (_, Some(prefix)) => {
                let v = given.unwrap_or_else(|| panic!("{name} needs a value"));
                v.strip_prefix(prefix).unwrap_or(&v).to_string()
            }
            _ => given.unwrap_or_else(|| panic!("{name} needs a value")),
        };
        out.push_str(&value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

fn committed_docs(rel: &str) -> Vec<Value> {
    docs(&std::fs::read_to_string(root().join(rel)).unwrap())
}

fn committed_crds(dir: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| docs(&std::fs::read_to_string(f).unwrap()))
        .collect()
}

fn name_of(d: &Value) -> String {
    format!(
        "{} {}",
        d["kind"].as_str().unwrap_or_default(),
        d["metadata"]["name"].as_str().unwrap_or_default()
    )
}

const CLUSTER_SCOPED: [&str; 4] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Checks one components file; returns its objects (defaults substituted).
fn check_components(
    text: &str,
    namespace: &str,
    provider: &str,
    crds: &[Value],
    rbac: &[Value],
    declared: &[(String, String)],
) -> Vec<Value> {
    // Variables: only the declared ones, each with a non-empty default (clusterctl treats an
    // empty default as a missing value).
    let used: BTreeSet<(String, String)> = variables(text)
        .into_iter()
        .map(|(n, op)| {
            assert!(op.starts_with(":="), "${{{n}{op}}}: use ${{{n}:=default}}");
            assert!(
                op.len() > 2,
                "${{{n}{op}}}: an empty default makes the variable required"
            );
            (n, op[2..].to_string())
        })
        .collect();
    let declared: BTreeSet<(String, String)> = declared.iter().cloned().collect();
    assert_eq!(used, declared, "variables of {provider}");
    // A `$` not starting a variable must not look like one to envsubst (`$NAME`).
    for (i, _) in text.match_indices('$') {
        let next = text[i + 1..].chars().next().unwrap_or('\n');
        assert!(
            next == '{' || !(next.is_ascii_alphabetic() || next == '_'),
            "bare ${}… in {provider}",
            &text[i + 1..(i + 12).min(text.len())]
        );
    }

    let raw = docs(text);
    let objs = docs(&substitute(text, &[]));
    assert_eq!(raw.len(), objs.len());
    let namespaces: Vec<&Value> = objs.iter().filter(|d| d["kind"] == "Namespace").collect();
    assert_eq!(namespaces.len(), 1, "{provider}: exactly one Namespace");
    assert_eq!(namespaces[0]["metadata"]["name"], namespace);
    for d in &objs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string() && d["metadata"]["name"].is_string());
        assert_eq!(
            d["metadata"]["labels"]["cluster.x-k8s.io/provider"],
            provider,
            "{} carries the provider label",
            name_of(d)
        );
        let kind = d["kind"].as_str().unwrap();
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(d["metadata"]["namespace"].is_null(), "{} is cluster-scoped", name_of(d));
        } else {
            assert_eq!(d["metadata"]["namespace"], namespace, "{} in {namespace}", name_of(d));
        }
    }
    let got_crds: Vec<Value> = objs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .cloned()
        .collect();
    assert_eq!(got_crds, crds, "{provider}: CRDs equal the committed ones");
    for r in rbac {
        assert!(objs.contains(r), "{provider}: {} as in config/", name_of(r));
    }
    let rbac_kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let got_rbac = objs
        .iter()
        .filter(|d| rbac_kinds.contains(&d["kind"].as_str().unwrap()))
        .count();
    assert_eq!(got_rbac, rbac.len(), "{provider}: no RBAC beyond config/");
    objs
}

fn check_deployment(objs: &[Value], name: &str, command: &str, sa: &str) {
    let d = objs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    assert_eq!(d["metadata"]["name"], name);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let cs = pod["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 1);
    let c = &cs[0];
    assert_eq!(
        c["name"], "manager",
        "clusterctl requires the container to be named manager"
    );
    assert_eq!(
        c["image"],
        format!("{}:{}", release::IMAGE_REPOSITORY, release::version())
    );
    assert_eq!(c["command"], serde_json::json!([command]));
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--leader-elect=true",
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--concurrency=10",
    ] {
        assert!(args.contains(&want), "{name}: {want} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "clusterctl installs watching all namespaces"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(env.contains(&("POD_NAME".into(), "metadata.name".into())));
    assert!(env.contains(&("POD_NAMESPACE".into(), "metadata.namespace".into())));
    let svc = objs.iter().find(|d| d["kind"] == "Service").expect("a metrics Service");
    assert_eq!(svc["metadata"]["name"], format!("{name}-metrics-service"));
    assert_eq!(svc["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        d["spec"]["selector"]["matchLabels"]
    );
}

fn check_metadata(text: &str) {
    let m = &docs(text)[0];
    assert_eq!(m["apiVersion"], "clusterctl.cluster.x-k8s.io/v1alpha3");
    assert_eq!(m["kind"], "Metadata");
    let series = m["releaseSeries"].as_array().unwrap();
    let listed: Vec<(String, String, String)> = series
        .iter()
        .map(|s| {
            (
                s["major"].to_string(),
                s["minor"].to_string(),
                s["contract"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Every series ever published, for clusterctl upgrades from them.
    for (major, minor, contract) in release::RELEASE_SERIES {
        assert!(
            listed.contains(&(major.to_string(), minor.to_string(), contract.to_string())),
            "{major}.{minor} missing from {listed:?}"
        );
    }
    // And the current one, exactly once.
    let v = release::version();
    let mut parts = v.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    let current: Vec<_> = listed.iter().filter(|(a, b, _)| a == major && b == minor).collect();
    assert_eq!(current.len(), 1, "{listed:?}");
    assert_eq!(current[0].2, "v1beta2");
}

#[test]
fn metadata_keeps_older_series_and_adds_a_new_one() {
    let text = release::metadata_yaml("v7.3.0");
    let m = &docs(&text)[0];
    let series = m["releaseSeries"].as_array().unwrap();
    assert_eq!(series.len(), release::RELEASE_SERIES.len() + 1, "{text}");
    assert_eq!(series.last().unwrap()["major"], 7);
    assert_eq!(series.last().unwrap()["minor"], 3);
    assert_eq!(series[0]["major"], release::RELEASE_SERIES[0].0);
}

#[test]
fn release_manifests_are_well_formed_and_match_config() {
    let version = release::version();
    let files = release::release_files(&version, &templates()).unwrap();
    let get = |rel: &str| {
        files
            .iter()
            .find(|(p, _)| p == rel)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("{rel} missing"))
    };
    let bootstrap_crds: Vec<Value> = committed_crds("config/crd")
        .into_iter()
        .filter(|c| c["spec"]["group"] == "bootstrap.cluster.x-k8s.io")
        .collect();
    let cp_crds: Vec<Value> = committed_crds("config/crd")
        .into_iter()
        .filter(|c| c["spec"]["group"] == "controlplane.cluster.x-k8s.io")
        .collect();
    assert_eq!(bootstrap_crds.len(), 2);
    assert_eq!(cp_crds.len(), 2);

    let objs = check_components(
        &get("bootstrap-components.yaml"),
        "capi-microk8s-bootstrap-system",
        "bootstrap-microk8s",
        &bootstrap_crds,
        &committed_docs("config/rbac/bootstrap.yaml"),
        &release::bootstrap_manager().variables(&version),
    );
    check_deployment(
        &objs,
        "capi-microk8s-bootstrap-controller-manager",
        "/mk8s-bootstrap",
        "capi-microk8s-bootstrap-controller-manager",
    );
    let objs = check_components(
        &get("control-plane-components.yaml"),
        "capi-microk8s-control-plane-system",
        "control-plane-microk8s",
        &cp_crds,
        &committed_docs("config/rbac/control-plane.yaml"),
        &release::control_plane_manager().variables(&version),
    );
    check_deployment(
        &objs,
        "capi-microk8s-control-plane-controller-manager",
        "/mk8s-controlplane",
        "capi-microk8s-control-plane-controller-manager",
    );
    check_metadata(&get("metadata.yaml"));

    // The simulator: its CRDs as committed, a ServiceAccount and cluster RBAC, no Deployment.
    let sim = get("infrastructure-sim/infrastructure-components.yaml");
    let sim_objs = docs(&sim);
    let sim_rbac: Vec<Value> = sim_objs
        .iter()
        .filter(|d| ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"].contains(&d["kind"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(sim_rbac.len(), 3);
    let objs = check_components(
        &sim,
        "capi-sim-system",
        "infrastructure-sim",
        &committed_crds("config/sim/crd"),
        &sim_rbac,
        &[],
    );
    assert!(!objs.iter().any(|d| d["kind"] == "Deployment"));
    check_metadata(&get("infrastructure-sim/metadata.yaml"));
    for name in release::SIM_TEMPLATES {
        assert!(files.iter().any(|(p, _)| *p == format!("infrastructure-sim/{name}")));
    }
}

#[test]
fn repository_layout() {
    let version = release::version();
    let files = release::repository_files(&version, &templates()).unwrap();
    let paths: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    for p in [
        format!("bootstrap-microk8s/{version}/bootstrap-components.yaml"),
        format!("bootstrap-microk8s/{version}/metadata.yaml"),
        format!("control-plane-microk8s/{version}/control-plane-components.yaml"),
        format!("control-plane-microk8s/{version}/metadata.yaml"),
        format!("infrastructure-sim/{version}/infrastructure-components.yaml"),
        format!("infrastructure-sim/{version}/metadata.yaml"),
        format!("infrastructure-sim/{version}/cluster-template-sim.yaml"),
        format!("infrastructure-sim/{version}/cluster-template-sim-clusterclass.yaml"),
        format!("infrastructure-sim/{version}/clusterclass-sim.yaml"),
    ] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    let cfg = release::clusterctl_config("/repo", &version, &[], &Default::default()).unwrap();
    let cfg: Value = serde_saphyr::from_str(&cfg).unwrap();
    let providers = cfg["providers"].as_array().unwrap();
    assert!(providers.iter().any(|p| p["name"] == "microk8s"
        && p["type"] == "BootstrapProvider"
        && p["url"] == format!("file:///repo/bootstrap-microk8s/{version}/bootstrap-components.yaml")));
    assert!(
        providers
            .iter()
            .any(|p| p["name"] == "microk8s" && p["type"] == "ControlPlaneProvider")
    );
    assert!(
        providers
            .iter()
            .any(|p| p["name"] == "sim" && p["type"] == "InfrastructureProvider")
    );
}

/// The simulator's templates use Canonical's variable names only, render with them, and the
/// ClusterClass file holds no clusterctl variable (clusterctl's rule).
#[test]
fn sim_templates_use_canonical_variables() {
    let allowed = [
        "CLUSTER_NAME",
        "KUBERNETES_VERSION",
        "CONTROL_PLANE_MACHINE_COUNT",
        "WORKER_MACHINE_COUNT",
        "SNAP_RISKLEVEL",
        "SNAP_CONFINEMENT",
        "UPGRADE_STRATEGY",
    ];
    for (name, text) in templates() {
        let vars = variables(&text);
        if name.starts_with("clusterclass-") {
            assert!(
                vars.is_empty(),
                "{name}: no clusterctl variables in a ClusterClass file"
            );
        }
        for (v, op) in &vars {
            assert!(allowed.contains(&v.as_str()), "{name}: unexpected variable {v}");
            assert!(op != ":=", "{name}: ${{{v}:=}} would make clusterctl require {v}");
        }
        // The first use of CLUSTER_NAME and KUBERNETES_VERSION is plain, so clusterctl
        // reports them as required.
        for required in ["CLUSTER_NAME", "KUBERNETES_VERSION"] {
            if let Some((_, op)) = vars.iter().find(|(v, _)| v == required) {
                assert_eq!(op, "", "{name}: the first ${{{required}}} must be plain");
            }
        }
        for version in ["1.33.0", "v1.33.0"] {
            let out = substitute(&text, &[("CLUSTER_NAME", "c1"), ("KUBERNETES_VERSION", version)]);
            for d in docs(&out) {
                assert!(d["kind"].is_string(), "{name}");
                for path in [
                    &d["spec"]["version"],
                    &d["spec"]["template"]["spec"]["version"],
                    &d["spec"]["topology"]["version"],
                ] {
                    if let Some(v) = path.as_str() {
                        assert_eq!(v, "v1.33.0", "{name}");
                    }
                }
                if let Some(r) = d["spec"]["replicas"].as_i64() {
                    assert_eq!(r, 1, "{name}: default replicas");
                }
            }
        }
    }
}
