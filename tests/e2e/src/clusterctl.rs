//! clusterctl against the local management plane: a local provider repository built from
//! the release manifests (`mk8s_gen::release`), a `clusterctl.yaml` overriding the built-in
//! `microk8s` providers (and declaring the simulator as the infrastructure provider `sim`),
//! cert-manager's CRDs (clusterctl's cert-manager check only creates a test Issuer and
//! Certificate), and a management cluster whose controllers run as processes: no Deployment
//! that `clusterctl init` installs ever runs a pod here.
//!
//! What `hack/build-testenv.sh --with-capi` prepares offline, in
//! `<cache>/clusterctl-v<capi>-cm<cert-manager>/`: CAPI core's `core-components.yaml`
//! (kustomized from the CAPI module's `core/config/default`) and `metadata.yaml`, and
//! cert-manager's CRDs (`deploy/crds` of its Go module).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_testenv::{Binaries, Plane};

use crate::capi::CapiCore;
use crate::managers::{Manager, ManagerKind};

/// The offline clusterctl artefacts of the test binaries' cache, if built.
pub fn offline_dir(binaries: &Binaries) -> Option<PathBuf> {
    let versions = std::fs::read_to_string(mk8s_testenv::workspace_root().join("hack/testenv-versions.env")).ok()?;
    let cm = mk8s_testenv::parse_env_file(&versions)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "CERT_MANAGER_VERSION")?
        .1;
    let dir = binaries
        .cache_dir
        .join(format!("clusterctl-v{}-cm{cm}", binaries.capi_version));
    dir.join(".complete").is_file().then_some(dir)
}

/// A clusterctl local repository and the `clusterctl.yaml` pointing at it.
pub struct LocalRepository {
    /// `{base}/{provider-label}/{version}/…`.
    pub base: PathBuf,
    /// The clusterctl configuration file.
    pub config: PathBuf,
    /// Our release version (`v0.1.0`).
    pub version: String,
    /// CAPI core's version (`v1.14.2`).
    pub core_version: String,
}

impl LocalRepository {
    /// Writes the repository under `dir`: our three providers from `mk8s_gen::release` (the
    /// simulator's templates from `templates/`), CAPI core from `offline`, and
    /// `dir/clusterctl.yaml`.
    pub fn write(dir: &Path, binaries: &Binaries, offline: &Path) -> LocalRepository {
        let base = dir.join("repository");
        let version = mk8s_gen::release::version();
        let templates: Vec<(String, String)> = mk8s_gen::release::SIM_TEMPLATES
            .iter()
            .map(|n| {
                let p = mk8s_testenv::workspace_root().join("templates").join(n);
                (
                    n.to_string(),
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
                )
            })
            .collect();
        let mut files = mk8s_gen::release::repository_files(&version, &templates).expect("release manifests");
        let core_version = format!("v{}", binaries.capi_version);
        for f in ["core-components.yaml", "metadata.yaml"] {
            files.push((
                format!("cluster-api/{core_version}/{f}"),
                std::fs::read_to_string(offline.join(f)).unwrap(),
            ));
        }
        for (rel, text) in files {
            let p = base.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        let core_url = format!(
            "file://{}/cluster-api/{core_version}/core-components.yaml",
            base.display()
        );
        let config = mk8s_gen::release::clusterctl_config(
            &base.display().to_string(),
            &version,
            &[("cluster-api".into(), "CoreProvider".into(), core_url)],
            &Default::default(),
        )
        .unwrap();
        let config_path = dir.join("clusterctl.yaml");
        std::fs::write(&config_path, config).unwrap();
        LocalRepository {
            base,
            config: config_path,
            version,
            core_version,
        }
    }
}

/// The `clusterctl` binary with our configuration, isolated from the user's (its own
/// `HOME`), offline (no version check, no Go proxy).
pub struct Clusterctl {
    bin: PathBuf,
    config: PathBuf,
    home: PathBuf,
    /// Where each run's output is appended.
    pub log: PathBuf,
}

impl Clusterctl {
    /// clusterctl from the test binaries, configured with `repo`.
    pub fn new(binaries: &Binaries, repo: &LocalRepository, dir: &Path) -> Clusterctl {
        let home = dir.join("home");
        std::fs::create_dir_all(home.join(".config")).unwrap();
        Clusterctl {
            bin: binaries.clusterctl.clone(),
            config: repo.config.clone(),
            home,
            log: dir.join("clusterctl.log"),
        }
    }

    /// Runs `clusterctl ARGS --config … --kubeconfig KUBECONFIG`; stdout on success, else
    /// an error with both outputs.
    pub async fn run(&self, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
        self.run_with_env(kubeconfig, args, &[]).await
    }

    /// [`Clusterctl::run`] with environment variables (clusterctl variables, e.g.
    /// `MICROK8S_BOOTSTRAP_CONCURRENCY`).
    pub async fn run_with_env(&self, kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
            .env("GOPROXY", "off")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let started = std::time::Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
            .await
            .map_err(|_| format!("clusterctl {args:?} timed out"))?
            .map_err(|e| format!("clusterctl {args:?}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            use std::io::Write as _;
            let _ = writeln!(
                f,
                "=== clusterctl {} ({:.1?}, {})\n{stderr}\n{stdout}",
                args.join(" "),
                started.elapsed(),
                out.status
            );
        }
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "clusterctl {} failed ({}):\n{stderr}\n{stdout}",
                args.join(" "),
                out.status
            ))
        }
    }
}

/// Installs cert-manager's CRDs (only the CRDs: nothing runs them).
pub async fn install_cert_manager_crds(plane: &Plane, offline: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(offline.join("cert-manager-crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    plane.apply_crd_files(&files).await.expect("cert-manager CRDs");
}

/// One provider of clusterctl's inventory (`providers.clusterctl.cluster.x-k8s.io`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InventoryEntry {
    /// Object name, e.g. `bootstrap-microk8s`.
    pub name: String,
    /// Its namespace (the provider's).
    pub namespace: String,
    /// `providerName`.
    pub provider: String,
    /// `type`, e.g. `BootstrapProvider`.
    pub type_: String,
    /// `version`.
    pub version: String,
}

/// clusterctl's provider inventory of a management cluster, sorted.
pub async fn inventory(client: &kube::Client) -> Vec<InventoryEntry> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "clusterctl.cluster.x-k8s.io",
        "v1alpha3",
        "Provider",
    ));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut out: Vec<InventoryEntry> = api
        .list(&Default::default())
        .await
        .expect("provider inventory")
        .items
        .into_iter()
        .map(|p| InventoryEntry {
            name: p.metadata.name.clone().unwrap_or_default(),
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            provider: p.data["providerName"].as_str().unwrap_or_default().to_string(),
            type_: p.data["type"].as_str().unwrap_or_default().to_string(),
            version: p.data["version"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    out.sort();
    out
}

/// A management cluster for clusterctl: a private plane, CAPI core with its webhooks on
/// loopback, and our two managers under their ServiceAccounts (installed by
/// `clusterctl init`).
pub struct Management {
    // Fields drop in this order: the controllers before their plane.
    /// Our managers (once started).
    pub managers: Vec<Manager>,
    /// CAPI core (once started).
    pub capi: Option<CapiCore>,
    /// The plane.
    pub plane: Plane,
    /// Its directory for logs.
    pub dir: PathBuf,
}

impl Management {
    /// A fresh private plane with cert-manager's CRDs.
    pub async fn start(dir: &Path, offline: &Path) -> Management {
        std::fs::create_dir_all(dir).unwrap();
        let plane = tokio::task::spawn_blocking(Plane::start)
            .await
            .unwrap()
            .expect("private plane");
        install_cert_manager_crds(&plane, offline).await;
        Management {
            plane,
            dir: dir.to_path_buf(),
            capi: None,
            managers: vec![],
        }
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        self.plane.kubeconfig_path()
    }

    /// Runs the controllers as processes once `clusterctl init` installed the providers:
    /// CAPI core (its CRDs' conversion and its webhooks rewired to it) and our managers.
    pub async fn run_controllers(&mut self) {
        self.capi = Some(CapiCore::start(&self.plane, &self.dir.join("capi")).await);
        for kind in [ManagerKind::Bootstrap, ManagerKind::ControlPlane] {
            self.managers.push(Manager::start(&self.plane, kind, &self.dir).await);
        }
    }

    /// The tails of the controllers' logs (for failure messages).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.managers {
            out.push_str(&format!("--- {:?}\n{}\n", m.kind, m.log_tail(lines)));
        }
        if let Some(c) = &self.capi {
            out.push_str(&format!("--- capi\n{}\n", crate::capi::tail(&c.log, lines)));
        }
        out
    }
}
