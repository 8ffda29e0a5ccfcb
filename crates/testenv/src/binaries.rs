//! Finding the Kubernetes binaries and CAPI manifests that `hack/build-testenv.sh` builds.
//!
//! The versions come from `hack/testenv-versions.env` (parsed at run time, never hard-coded
//! here), the binaries from `$TESTENV_CACHE` (default `$HOME/.cache/microk8s-capi-testenv`):
//!
//! ```text
//! $TESTENV_CACHE/k8s-v<K8S_VERSION>/{kube-apiserver,kube-controller-manager}
//! $TESTENV_CACHE/etcd-v<ETCD_VERSION>/etcd
//! $TESTENV_CACHE/capi-crds-v<CAPI_VERSION>/{crd/*.yaml,webhook/manifests.yaml}
//! $TESTENV_CACHE/capi-v<CAPI_VERSION>/{capi-manager,clusterctl}     (only with --with-capi)
//! ```
//!
//! Every path can be overridden through `TESTENV_*` environment variables (see
//! [`Binaries::discover`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the test binaries and manifests of one plane come from.
///
/// Built by [`Binaries::discover`]; all paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The cache directory (`$TESTENV_CACHE`).
    pub cache_dir: PathBuf,
    /// Kubernetes version (e.g. `1.36.3`), from the versions file or `TESTENV_K8S_VERSION`.
    pub k8s_version: String,
    /// etcd version, from the versions file or `TESTENV_ETCD_VERSION`.
    pub etcd_version: String,
    /// Cluster API version, from the versions file or `TESTENV_CAPI_VERSION`.
    pub capi_version: String,
    /// `kube-apiserver` (required).
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager` (required).
    pub kube_controller_manager: PathBuf,
    /// `etcd` (required).
    pub etcd: PathBuf,
    /// Directory holding `crd/*.yaml` and `webhook/manifests.yaml` of CAPI core (required).
    pub capi_crds_dir: PathBuf,
    /// The CAPI core manager binary. Optional: only built by `hack/build-testenv.sh --with-capi`;
    /// check [`Binaries::has_capi_binaries`].
    pub capi_manager: PathBuf,
    /// `clusterctl`. Optional, like [`Binaries::capi_manager`].
    pub clusterctl: PathBuf,
}

/// The binaries or manifests a plane needs but that are not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingBinaries {
    /// Paths that do not exist (or are not executable files / non-empty directories).
    pub missing: Vec<PathBuf>,
    /// Other problems (e.g. an unreadable versions file).
    pub problems: Vec<String>,
}

impl fmt::Display for MissingBinaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mk8s-testenv: the T1 test binaries are missing:")?;
        for p in &self.missing {
            writeln!(f, "  missing: {}", p.display())?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        write!(
            f,
            "run hack/build-testenv.sh (needs Go >= 1.26; set TESTENV_CACHE to use another cache)"
        )
    }
}

impl std::error::Error for MissingBinaries {}

/// The workspace root, derived from this crate's `CARGO_MANIFEST_DIR` (`<root>/crates/testenv`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// Parses a shell-style `KEY=VALUE` env file (comments, blank lines, `export ` and simple
/// quotes are handled; no expansion).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let mut value = value.trim();
            // Drop a trailing comment on unquoted values.
            if !value.starts_with(['"', '\''])
                && let Some((v, _)) = value.split_once(" #")
            {
                value = v.trim_end();
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn has_yaml(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| rd.flatten().any(|e| e.path().extension().is_some_and(|x| x == "yaml")))
}

impl Binaries {
    /// Finds the binaries using the process environment. See [`Binaries::discover_with`].
    pub fn discover() -> Result<Binaries, MissingBinaries> {
        Self::discover_with(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Finds the binaries, reading environment variables through `env` (injectable for tests).
    ///
    /// Variables read:
    /// * `TESTENV_CACHE` — cache directory (default `$HOME/.cache/microk8s-capi-testenv`);
    /// * `TESTENV_VERSIONS_FILE` — versions file (default `<workspace>/hack/testenv-versions.env`);
    /// * `TESTENV_K8S_VERSION`, `TESTENV_ETCD_VERSION`, `TESTENV_CAPI_VERSION` — override a version
    ///   of the versions file (`K8S_VERSION`, `ETCD_VERSION`, `CAPI_VERSION`);
    /// * `TESTENV_BIN_KUBE_APISERVER`, `TESTENV_BIN_KUBE_CONTROLLER_MANAGER`, `TESTENV_BIN_ETCD`,
    ///   `TESTENV_BIN_CAPI_MANAGER`, `TESTENV_BIN_CLUSTERCTL` — override one binary's path;
    /// * `TESTENV_CAPI_CRDS_DIR` — override the directory holding `crd/` and `webhook/`.
    ///
    /// When every path is overridden, the versions file is not needed.
    pub fn discover_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Binaries, MissingBinaries> {
        let mut missing = Vec::new();
        let mut problems = Vec::new();

        let cache_dir = env("TESTENV_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let home = env("HOME").unwrap_or_else(|| "/root".to_string());
            Path::new(&home).join(".cache/microk8s-capi-testenv")
        });

        let versions_file = env("TESTENV_VERSIONS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("hack/testenv-versions.env"));
        let (file_vars, file_err) = match std::fs::read_to_string(&versions_file) {
            Ok(text) => (parse_env_file(&text), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let version = |key: &str| -> Option<String> {
            env(&format!("TESTENV_{key}"))
                .or_else(|| file_vars.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        };
        let mut need_version = |key: &str, overridden: bool| -> String {
            match version(key) {
                Some(v) => v,
                None => {
                    if !overridden {
                        problems.push(match &file_err {
                            Some(e) => format!(
                                "cannot read versions file {} ({e}), needed for {key} \
                                 (or set TESTENV_{key})",
                                versions_file.display()
                            ),
                            None => format!("{key} is not set in {} (nor TESTENV_{key})", versions_file.display()),
                        });
                    }
                    String::from("unknown")
                }
            }
        };

        let apiserver_o = env("TESTENV_BIN_KUBE_APISERVER");
        let kcm_o = env("TESTENV_BIN_KUBE_CONTROLLER_MANAGER");
        let etcd_o = env("TESTENV_BIN_ETCD");
        let crds_o = env("TESTENV_CAPI_CRDS_DIR");
        let mgr_o = env("TESTENV_BIN_CAPI_MANAGER");
        let ctl_o = env("TESTENV_BIN_CLUSTERCTL");

        let k8s_version = need_version("K8S_VERSION", apiserver_o.is_some() && kcm_o.is_some());
        let etcd_version = need_version("ETCD_VERSION", etcd_o.is_some());
        let capi_version = need_version("CAPI_VERSION", crds_o.is_some());

        let k8s_dir = cache_dir.join(format!("k8s-v{k8s_version}"));
        let capi_bin_dir = cache_dir.join(format!("capi-v{capi_version}"));
        let b = Binaries {
            kube_apiserver: apiserver_o
                .map(PathBuf::from)
                .unwrap_or_else(|| k8s_dir.join("kube-apiserver")),
            kube_controller_manager: kcm_o
                .map(PathBuf::from)
                .unwrap_or_else(|| k8s_dir.join("kube-controller-manager")),
            etcd: etcd_o
                .map(PathBuf::from)
                .unwrap_or_else(|| cache_dir.join(format!("etcd-v{etcd_version}")).join("etcd")),
            capi_crds_dir: crds_o
                .map(PathBuf::from)
                .unwrap_or_else(|| cache_dir.join(format!("capi-crds-v{capi_version}"))),
            capi_manager: mgr_o
                .map(PathBuf::from)
                .unwrap_or_else(|| capi_bin_dir.join("capi-manager")),
            clusterctl: ctl_o
                .map(PathBuf::from)
                .unwrap_or_else(|| capi_bin_dir.join("clusterctl")),
            cache_dir,
            k8s_version,
            etcd_version,
            capi_version,
        };

        for p in [&b.kube_apiserver, &b.kube_controller_manager, &b.etcd] {
            if !is_executable(p) {
                missing.push(p.clone());
            }
        }
        let crd_dir = b.capi_crd_dir();
        if !has_yaml(&crd_dir) {
            missing.push(crd_dir);
        }
        if missing.is_empty() && problems.is_empty() {
            Ok(b)
        } else {
            Err(MissingBinaries { missing, problems })
        }
    }

    /// `<capi_crds_dir>/crd`: the CAPI core CRDs (`*.yaml`).
    pub fn capi_crd_dir(&self) -> PathBuf {
        self.capi_crds_dir.join("crd")
    }

    /// `<capi_crds_dir>/webhook/manifests.yaml`: CAPI core's webhook configurations.
    pub fn capi_webhook_manifests(&self) -> PathBuf {
        self.capi_crds_dir.join("webhook/manifests.yaml")
    }

    /// Whether the optional CAPI binaries (`capi-manager`, `clusterctl`) are present.
    pub fn has_capi_binaries(&self) -> bool {
        is_executable(&self.capi_manager) && is_executable(&self.clusterctl)
    }

    /// The CAPI core CRD files, sorted by name.
    pub fn capi_crd_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.capi_crd_dir())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }
}

/// What [`crate::shared`] does, decided from the environment.
#[derive(Debug)]
pub(crate) enum Availability {
    /// Everything is there: start the plane.
    Ready(Box<Binaries>),
    /// Binaries missing outside CI: skip the test with this message.
    Skip(String),
    /// Binaries missing in CI (`CI=true`): fail the test with this message.
    Fail(String),
}

/// Decides between starting, skipping and failing (see [`Availability`]).
pub(crate) fn availability(env: &dyn Fn(&str) -> Option<String>) -> Availability {
    match Binaries::discover_with(env) {
        Ok(b) => Availability::Ready(Box::new(b)),
        Err(missing) => {
            if env("CI").as_deref() == Some("true") {
                Availability::Fail(format!("{missing}\n(CI=true: T1 tests must not be skipped)"))
            } else {
                Availability::Skip(missing.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env_from(map: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
        move |k| map.get(k).cloned()
    }

    #[test]
    fn parses_env_file() {
        let vars = parse_env_file(
            "# c\nK8S_VERSION=1.36.3\nexport ETCD_VERSION=\"3.6.16\"\n\nX='a b' \nY=1 # note\nbad line\n",
        );
        assert_eq!(
            vars,
            vec![
                ("K8S_VERSION".into(), "1.36.3".into()),
                ("ETCD_VERSION".into(), "3.6.16".into()),
                ("X".into(), "a b".into()),
                ("Y".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn the_repository_versions_file_names_all_three_versions() {
        let text = std::fs::read_to_string(workspace_root().join("hack/testenv-versions.env")).unwrap();
        let vars = parse_env_file(&text);
        for key in ["K8S_VERSION", "ETCD_VERSION", "CAPI_VERSION"] {
            assert!(vars.iter().any(|(k, _)| k == key), "{key} missing");
        }
    }

    fn empty_cache() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mk8s-testenv-unit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_binaries_skip_locally_and_fail_in_ci() {
        let cache = empty_cache();
        let base = HashMap::from([("TESTENV_CACHE", cache.display().to_string())]);

        // Locally: skip, naming every missing path.
        let Availability::Skip(msg) = availability(&env_from(base.clone())) else {
            panic!("expected a skip");
        };
        assert!(msg.contains("run hack/build-testenv.sh"), "{msg}");
        let text = std::fs::read_to_string(workspace_root().join("hack/testenv-versions.env")).unwrap();
        let vars = parse_env_file(&text);
        let k8s = &vars.iter().find(|(k, _)| k == "K8S_VERSION").unwrap().1;
        let apiserver = cache.join(format!("k8s-v{k8s}/kube-apiserver"));
        assert!(msg.contains(&apiserver.display().to_string()), "{msg}");
        assert!(msg.contains("/etcd"), "{msg}");
        assert!(msg.contains("/crd"), "{msg}");

        // In CI: fail with the same paths.
        let mut ci = base.clone();
        ci.insert("CI", "true".into());
        let Availability::Fail(msg) = availability(&env_from(ci)) else {
            panic!("expected a failure in CI");
        };
        assert!(msg.contains(&apiserver.display().to_string()), "{msg}");
        assert!(msg.contains("run hack/build-testenv.sh"), "{msg}");

        // CI=false is not CI.
        let mut not_ci = base;
        not_ci.insert("CI", "false".into());
        assert!(matches!(availability(&env_from(not_ci)), Availability::Skip(_)));
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn version_overrides_change_the_directories() {
        let cache = empty_cache();
        let env = env_from(HashMap::from([
            ("TESTENV_CACHE", cache.display().to_string()),
            ("TESTENV_K8S_VERSION", "9.9.9".to_string()),
            ("TESTENV_VERSIONS_FILE", "/nonexistent/versions.env".to_string()),
            ("TESTENV_ETCD_VERSION", "8.8.8".to_string()),
            ("TESTENV_CAPI_VERSION", "7.7.7".to_string()),
        ]));
        let err = Binaries::discover_with(&env).unwrap_err();
        assert!(err.missing.contains(&cache.join("k8s-v9.9.9/kube-apiserver")));
        assert!(err.missing.contains(&cache.join("etcd-v8.8.8/etcd")));
        assert!(err.missing.contains(&cache.join("capi-crds-v7.7.7/crd")));
        assert!(err.problems.is_empty(), "{err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn path_overrides_are_used_verbatim() {
        let cache = empty_cache();
        let bin = cache.join("fake-bin");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(cache.join("crds/crd")).unwrap();
        std::fs::write(cache.join("crds/crd/x.yaml"), "").unwrap();
        let b = bin.display().to_string();
        let env = env_from(HashMap::from([
            ("TESTENV_VERSIONS_FILE", "/nonexistent".to_string()),
            ("TESTENV_BIN_KUBE_APISERVER", b.clone()),
            ("TESTENV_BIN_KUBE_CONTROLLER_MANAGER", b.clone()),
            ("TESTENV_BIN_ETCD", b.clone()),
            ("TESTENV_CAPI_CRDS_DIR", cache.join("crds").display().to_string()),
        ]));
        // Every path is overridden: the (unreadable) versions file is not needed.
        let found = Binaries::discover_with(&env).unwrap();
        assert_eq!(found.kube_apiserver, bin);
        assert_eq!(found.capi_crd_dir(), cache.join("crds/crd"));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
