//! Helpers for the packaging checks (`tests/packaging.rs`): the Helm chart
//! `charts/microk8s-capi` rendered with `helm template`, the cloud cluster templates
//! `templates/cluster-template-<cloud>.yaml` generated with `clusterctl generate yaml`, and
//! server-side dry-run applies of what they produce.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    mk8s_testenv::workspace_root().join("charts/microk8s-capi")
}

/// `helm`, built by `hack/build-testenv.sh --with-helm` into
/// `$TESTENV_CACHE/helm-v<HELM_VERSION>/helm` (or `TESTENV_BIN_HELM`). `None` when missing.
pub fn helm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TESTENV_BIN_HELM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let root = mk8s_testenv::workspace_root();
    let versions = std::fs::read_to_string(root.join("hack/testenv-versions.env")).ok()?;
    let version = mk8s_testenv::parse_env_file(&versions)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "HELM_VERSION")?
        .1;
    let cache = std::env::var("TESTENV_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/microk8s-capi-testenv")
    });
    Some(cache.join(format!("helm-v{version}/helm"))).filter(|p| p.is_file())
}

/// `clusterctl`, built by `hack/build-testenv.sh --with-capi`. `None` when missing.
pub fn clusterctl() -> Option<PathBuf> {
    let b = mk8s_testenv::Binaries::discover().ok()?;
    Some(b.clusterctl).filter(|p| p.is_file())
}

/// The Kubernetes version of the test plane (what `helm template --kube-version` assumes).
pub fn kube_version() -> String {
    mk8s_testenv::Binaries::discover()
        .map(|b| b.k8s_version)
        .unwrap_or_else(|_| "1.36.3".into())
}

/// A tool the checks need is missing: panics in CI (`CI=true`), else says so and returns
/// `true` so the test can return early.
pub fn skip_without(what: &str, tool: &Option<PathBuf>) -> bool {
    if tool.is_some() {
        return false;
    }
    let msg = format!("{what} is missing: run hack/build-testenv.sh --all");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("packaging: skipped ({msg})");
    true
}

/// Runs a command, panicking with its output unless it succeeds.
pub fn run(cmd: &mut std::process::Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every non-empty document of a multi-document YAML text.
pub fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Writes `values` (YAML) to a file in `dir` and returns its path.
pub fn values_file(dir: &Path, name: &str, values: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, values).unwrap();
    p
}

/// `helm template` of the chart with a values file: the rendered documents.
pub fn helm_template(helm: &Path, values: &Path) -> Vec<Value> {
    let out = run(std::process::Command::new(helm)
        .arg("template")
        .arg("microk8s-capi")
        .arg(chart_dir())
        .args(["--namespace", "default", "--kube-version", &kube_version()])
        .arg("--values")
        .arg(values));
    documents(&String::from_utf8_lossy(&out.stdout))
}

/// `helm lint --strict` of the chart with a values file.
pub fn helm_lint(helm: &Path, values: &Path) {
    run(std::process::Command::new(helm)
        .args(["lint", "--strict", "--kube-version", &kube_version()])
        .arg(chart_dir())
        .arg("--values")
        .arg(values));
}

/// `apiVersion` split into group and version.
pub fn group_version(doc: &Value) -> (&str, &str) {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// `kind/name` of a document, for messages.
pub fn id(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
    )
}

/// Applies one object by server-side apply, as a dry run unless `for_real`; the error as text.
pub async fn apply(client: &kube::Client, doc: &Value, default_ns: &str, for_real: bool) -> Result<(), String> {
    let (group, version) = group_version(doc);
    let kind = doc["kind"].as_str().ok_or("no kind")?;
    let name = doc["metadata"]["name"].as_str().ok_or("no metadata.name")?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = if cluster_scoped(kind) {
        Api::all_with(client.clone(), &ar)
    } else {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(default_ns);
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let mut params = PatchParams::apply("mk8s-packaging-test").force();
    if !for_real {
        params = params.dry_run();
    }
    api.patch(name, &params, &Patch::Apply(doc))
        .await
        .map(|_| ())
        .map_err(|e| format!("{kind} {name}: {e}"))
}

/// The variables a sample `.rc` file documents: `export NAME=…` lines, and commented
/// `# export NAME=…` lines (optional variables whose template default is shown).
pub fn rc_variables(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches('#').trim_start();
            let rest = l.strip_prefix("export ")?;
            let (name, _) = rest.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .then(|| name.to_string())
        })
        .collect()
}

/// `clusterctl generate yaml --from <template> --list-variables`.
pub fn list_variables(clusterctl: &Path, template: &Path, home: &Path) -> BTreeSet<String> {
    let out = run(std::process::Command::new(clusterctl)
        .args(["generate", "yaml", "--list-variables", "--from"])
        .arg(template)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ").map(|v| v.trim().to_string()))
        .collect()
}

/// `clusterctl generate yaml --from <template>` with the variables of `rc` as a user gets
/// them (`source` in bash, nothing else in the environment) and `CLUSTER_NAME`.
pub fn generate(clusterctl: &Path, template: &Path, rc: &Path, cluster_name: &str, home: &Path) -> String {
    let script = r#"set -e; set -a; . "$RC"; set +a; exec "$CLUSTERCTL" generate yaml --from "$TEMPLATE""#;
    let out = run(std::process::Command::new("bash")
        .args(["-c", script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
        .env("CLUSTER_NAME", cluster_name)
        .env("RC", rc)
        .env("CLUSTERCTL", clusterctl)
        .env("TEMPLATE", template));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An object reference found inside a document: `(group, version if given, kind, name, path)`.
pub type Reference = (String, Option<String>, String, String, String);

/// Every object reference inside `doc` (not the document itself): a mapping with `kind`,
/// `name` and `apiGroup` or `apiVersion`.
pub fn references(doc: &Value) -> Vec<Reference> {
    fn walk(v: &Value, path: String, top: bool, out: &mut Vec<Reference>) {
        match v {
            Value::Object(m) => {
                if !top
                    && let (Some(kind), Some(name)) = (
                        m.get("kind").and_then(Value::as_str),
                        m.get("name").and_then(Value::as_str),
                    )
                {
                    let group_version = m
                        .get("apiGroup")
                        .and_then(Value::as_str)
                        .map(|g| (g.to_string(), None))
                        .or_else(|| {
                            m.get("apiVersion").and_then(Value::as_str).map(|av| {
                                let (g, v) = av.split_once('/').unwrap_or(("", av));
                                (g.to_string(), Some(v.to_string()))
                            })
                        });
                    if let Some((group, version)) = group_version {
                        out.push((group, version, kind.to_string(), name.to_string(), path.clone()));
                    }
                }
                for (k, v) in m {
                    if top && (k == "apiVersion" || k == "kind" || k == "metadata") {
                        continue;
                    }
                    walk(v, format!("{path}.{k}"), false, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), false, out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![];
    walk(doc, String::new(), true, &mut out);
    out
}
