//! The other side of the comparison: Canonical's Go providers, built by
//! `hack/build-canonical.sh` into a directory of their own, run out of cluster beside CAPI on
//! a plane that carries **their** CRDs (labelled for the v1beta1 contract only), never ours.
//!
//! Directory layout: `bin/bootstrap`, `bin/controlplane`, `crd/*.yaml`, `VERSION`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use mk8s_e2e::ManagerKind;

/// The CRD label of the contract CAPI v1.14 reads from a v1beta1-contract provider.
pub const CONTRACT_LABEL: (&str, &str) = ("cluster.x-k8s.io/v1beta1", "v1beta1");

/// Canonical's providers, ready to run.
#[derive(Clone, Debug)]
pub struct Theirs {
    /// The provider directory.
    pub dir: PathBuf,
    /// Their version (`VERSION`), e.g. `v0.6.11`.
    pub version: String,
}

impl Theirs {
    /// Checks a provider directory; the reason when it is incomplete.
    pub fn load(dir: &Path) -> Result<Theirs, String> {
        for bin in ["bin/bootstrap", "bin/controlplane"] {
            if !dir.join(bin).is_file() {
                return Err(format!("{} is missing", dir.join(bin).display()));
            }
        }
        if Self::crd_files(dir).is_empty() {
            return Err(format!("no CRDs in {}", dir.join("crd").display()));
        }
        let version = std::fs::read_to_string(dir.join("VERSION"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown version".into());
        Ok(Theirs {
            dir: dir.to_path_buf(),
            version,
        })
    }

    fn crd_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("crd"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Their CRDs, labelled for the v1beta1 contract only.
    pub fn crds(&self) -> Vec<CustomResourceDefinition> {
        let mut out = vec![];
        for f in Self::crd_files(&self.dir) {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for doc in docs.into_iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
                let mut crd: CustomResourceDefinition =
                    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                label_v1beta1_contract(&mut crd);
                out.push(crd);
            }
        }
        out
    }

    fn binary(&self, kind: ManagerKind) -> PathBuf {
        self.dir.join(match kind {
            ManagerKind::Bootstrap => "bin/bootstrap",
            ManagerKind::ControlPlane => "bin/controlplane",
        })
    }
}

/// Sets the v1beta1 contract label and drops any other contract label.
pub fn label_v1beta1_contract(crd: &mut CustomResourceDefinition) {
    let labels = crd.metadata.labels.get_or_insert_with(Default::default);
    labels.retain(|k, _| !k.starts_with("cluster.x-k8s.io/v1"));
    labels.insert(CONTRACT_LABEL.0.into(), CONTRACT_LABEL.1.into());
}

/// Binds a manager's ServiceAccount to `cluster-admin`: their managers come with RBAC of
/// their own (not installed here), and requests stay attributed to the same identity as ours.
pub async fn grant_admin(client: &kube::Client, namespace: &str, service_account: &str) {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let name = format!("bench-theirs-{service_account}");
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }))
    .expect("binding");
    api.patch(&name, &PatchParams::apply("mk8s-bench").force(), &Patch::Apply(&crb))
        .await
        .unwrap_or_else(|e| panic!("binding {name}: {e}"));
}

/// Removes the binding of [`grant_admin`] (at the cut-over, so that ours run with the rights
/// of `config/rbac/` only).
pub async fn revoke_admin(client: &kube::Client, service_account: &str) {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let name = format!("bench-theirs-{service_account}");
    match api.delete(&name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("removing binding {name}: {e}"),
    }
}

/// One of their managers, running as a process.
pub struct TheirManager {
    /// Which one.
    pub kind: ManagerKind,
    child: Child,
}

impl TheirManager {
    /// Starts it with the given kubeconfig, metrics on `metrics_port`, and waits for `/readyz`.
    ///
    /// The control plane manager always serves webhooks on :9443 from controller-runtime's
    /// default certificate directory under `$TMPDIR`: it gets a private `TMPDIR` with a
    /// certificate there.
    pub async fn start(
        theirs: &Theirs,
        kind: ManagerKind,
        dir: &Path,
        kubeconfig: &Path,
        metrics_port: u16,
    ) -> TheirManager {
        let name = match kind {
            ManagerKind::Bootstrap => "theirs-bootstrap",
            ManagerKind::ControlPlane => "theirs-controlplane",
        };
        let tmp = dir.join(format!("{name}-tmp"));
        let certs = tmp.join("k8s-webhook-server").join("serving-certs");
        std::fs::create_dir_all(&certs).expect("cert dir");
        let now = SystemTime::now();
        let ca = mk8s_pki::generate_ca("bench-webhook-ca", now).expect("CA");
        let (cert, key) = mk8s_pki::Ca::parse(&ca.cert_pem, &ca.key_pem)
            .expect("CA")
            .sign_server("webhook", &["127.0.0.1", "localhost"], now, Duration::from_secs(86400))
            .expect("serving certificate");
        std::fs::write(certs.join("tls.crt"), cert).expect("certificate");
        std::fs::write(certs.join("tls.key"), key).expect("key");

        let health_port = mk8s_e2e::capi::free_port();
        let log = dir.join(format!("{name}.log"));
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let _ = writeln!(out, "=== starting {name} ===");
        let mut cmd = Command::new(theirs.binary(kind));
        cmd.arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-probe-bind-address=127.0.0.1:{health_port}"))
            .env("KUBECONFIG", kubeconfig)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        let child = mk8s_testenv::spawn_with_pdeathsig(cmd).expect("start their manager");
        let mut m = TheirManager { kind, child };
        mk8s_e2e::managers::wait_ready(&mut m.child, health_port, name, &log, Duration::from_secs(60)).await;
        m
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, up to 10 s, then SIGKILL.
    pub fn stop(mut self) {
        mk8s_e2e::managers::stop_process(&mut self.child, true);
    }
}

/// Whether a plane runs ours or theirs.
#[derive(Clone, Debug, Default)]
pub enum Provider {
    /// Our managers, our CRDs.
    #[default]
    Ours,
    /// Canonical's managers, their CRDs.
    Theirs(Theirs),
}

impl Provider {
    /// `ours` / `theirs`.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::Ours => "ours",
            Provider::Theirs(_) => "theirs",
        }
    }

    /// Name of the manager's reconcile counter in `/metrics`.
    pub fn reconcile_metric(&self) -> &'static str {
        match self {
            Provider::Ours => "mk8s_reconcile_total",
            Provider::Theirs(_) => "controller_runtime_reconcile_total",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_dir(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mk8s-bench-theirs-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&dir);
        for (p, text) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: microk8sconfigs.bootstrap.cluster.x-k8s.io
  labels:
    cluster.x-k8s.io/v1beta2: v1beta1
    other: kept
spec:
  group: bootstrap.cluster.x-k8s.io
  names: {kind: MicroK8sConfig, plural: microk8sconfigs}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object}}
";

    #[test]
    fn a_complete_directory_loads_and_its_crds_carry_the_v1beta1_contract_only() {
        let dir = fixture_dir(&[
            ("bin/bootstrap", "x"),
            ("bin/controlplane", "x"),
            ("crd/a.yaml", CRD),
            ("VERSION", "v0.6.11\n"),
        ]);
        let t = Theirs::load(&dir).unwrap();
        assert_eq!(t.version, "v0.6.11");
        let crds = t.crds();
        assert_eq!(crds.len(), 1);
        let labels = crds[0].metadata.labels.clone().unwrap();
        assert_eq!(
            labels.get("cluster.x-k8s.io/v1beta1").map(String::as_str),
            Some("v1beta1")
        );
        assert!(!labels.contains_key("cluster.x-k8s.io/v1beta2"));
        assert_eq!(labels.get("other").map(String::as_str), Some("kept"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_incomplete_directory_says_what_is_missing() {
        let dir = fixture_dir(&[("bin/bootstrap", "x")]);
        let e = Theirs::load(&dir).unwrap_err();
        assert!(e.contains("bin/controlplane is missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
