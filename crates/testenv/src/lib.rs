//! `mk8s-testenv`: a real Kubernetes control plane for integration tests (tier T1), run from
//! local binaries without Docker.
//!
//! The binaries (etcd, kube-apiserver, kube-controller-manager) and the CAPI core CRDs are
//! built by `hack/build-testenv.sh` into `$TESTENV_CACHE`; see [`Binaries`] for how they are
//! found. A test binary shares one [`Plane`]:
//!
//! ```no_run
//! # async fn example() {
//! let Some(plane) = mk8s_testenv::shared().await else { return };
//! plane.install_capi_crds().await.unwrap();
//! let ns = plane.namespace("my-test").await.unwrap();
//! let client = plane.client().await; // a fresh client for this test's runtime
//! # let _ = (ns, client);
//! # }
//! ```
//!
//! When the binaries are missing, [`shared`] prints a loud skip message and returns `None`,
//! unless `CI=true`, where it panics with the missing paths.
//!
//! Lifetimes: every child process is forked by one long-lived spawner thread with
//! `PR_SET_PDEATHSIG=SIGKILL`, so it dies with the test process; pid files and directories
//! live in `$TESTENV_RUN_DIR/s-<pid>-<start>` and are removed by a janitor process when the test
//! process exits (`hack/sweep-testenv.sh` cleans up whatever is left).
//!
//! Things real clusters do that tests meet here too:
//! * `OwnerReferencesPermissionEnforcement` is enabled: a user who sets
//!   `blockOwnerDeletion: true` needs `update` on the owner's `<resource>/finalizers`, and one
//!   who adds ownerRefs to an existing object needs `delete` on it.
//! * The garbage collector only knows resources discovered at its start or periodic resync
//!   (~30 s); [`Plane::apply_crds`] therefore restarts kube-controller-manager when it creates a
//!   new CRD, so dependents of custom resources are collected at once.
//! * No CAPI webhooks run: defaulting webhooks do not fill fields, so send complete objects.
//!
//! Environment variables: `TESTENV_CACHE`, `TESTENV_VERSIONS_FILE`, `TESTENV_{K8S,ETCD,CAPI}_VERSION`,
//! `TESTENV_BIN_{KUBE_APISERVER,KUBE_CONTROLLER_MANAGER,ETCD,CAPI_MANAGER,CLUSTERCTL}`,
//! `TESTENV_CAPI_CRDS_DIR` (see [`Binaries::discover_with`]), `TESTENV_RUN_DIR` (default
//! `/tmp/mk8s-testenv`), `TESTENV_START_TIMEOUT` (seconds per process, default 60),
//! `TESTENV_KEEP=1` (keep directories after the test process exits), `CI`, `HOME`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

mod binaries;
pub mod certs;
mod etcd;
mod kubeconfig;
mod plane;
mod process;
mod workload;

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use binaries::{Binaries, MissingBinaries, parse_env_file, workspace_root};
pub use certs::{CaKeyFormat, CertKeyPem, generate_ca};
pub use etcd::EtcdServer;
pub use kubeconfig::{client_from_kubeconfig_yaml, config_from_kubeconfig_yaml};
pub use plane::{FIELD_MANAGER, Plane, PlaneOptions, parse_crds, read_crd_file};
pub use process::{run_dir, spawn_with_pdeathsig};
pub use workload::{WorkloadApiServer, WorkloadApiServerOptions, start_workload_apiserver};

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are not built.
    #[error("{0}")]
    Missing(MissingBinaries),
    /// A process did not become ready.
    #[error(
        "{what} failed to start: {reason}\n--- last lines of {} ---\n{tail}\n--- (files in {}; \
         set TESTENV_KEEP=1 to keep them after the tests) ---",
        log.display(),
        dir.display()
    )]
    Start {
        /// Which process.
        what: String,
        /// Why (exit status or timeout).
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
        /// The plane's (or workload apiserver's) directory.
        dir: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A certificate or key could not be generated or parsed.
    #[error("certificate: {0}")]
    Cert(String),
    /// A kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Waiting timed out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The harness' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

enum SharedState {
    Ready(Box<Plane>),
    Skipped,
    Failed(String),
}

static SHARED: OnceLock<SharedState> = OnceLock::new();

/// Writes to the real stderr, bypassing libtest's output capture (which only sees
/// `eprint!`), so that skip and timing messages are always visible.
pub(crate) fn loud(msg: &str) {
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

fn shared_state() -> &'static SharedState {
    SHARED.get_or_init(|| {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match binaries::availability(&env) {
            binaries::Availability::Ready(b) => match Plane::start_with(*b) {
                Ok(p) => SharedState::Ready(Box::new(p)),
                Err(e) => SharedState::Failed(format!("mk8s-testenv: the shared plane failed: {e}")),
            },
            binaries::Availability::Fail(msg) => SharedState::Failed(msg),
            binaries::Availability::Skip(msg) => {
                let bar = "=".repeat(78);
                loud(&format!(
                    "\n{bar}\nmk8s-testenv: SKIPPING the tests that need a control plane.\n{msg}\n{bar}\n"
                ));
                SharedState::Skipped
            }
        }
    })
}

fn resolve(state: &'static SharedState) -> Option<&'static Plane> {
    match state {
        SharedState::Ready(p) => Some(p),
        SharedState::Skipped => {
            let test = std::thread::current().name().unwrap_or("<unnamed>").to_string();
            loud(&format!(
                "mk8s-testenv: skipped {test} (no test binaries; run hack/build-testenv.sh)\n"
            ));
            None
        }
        SharedState::Failed(msg) => panic!("{msg}"),
    }
}

/// The plane shared by all tests of this test binary, started by the first caller.
///
/// Returns `None` (after a loud message on stderr) when the binaries are missing, so tests
/// can `let Some(plane) = mk8s_testenv::shared().await else { return };`.
///
/// # Panics
/// When the binaries are missing and `CI=true` (naming the missing paths), or when the plane
/// fails to start (with the tail of the failing process' log).
///
/// The plane is started on its own thread and runtime, never on the caller's, and the call
/// does not block the caller's runtime.
pub async fn shared() -> Option<&'static Plane> {
    if let Some(state) = SHARED.get() {
        return resolve(state);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("mk8s-testenv-shared".into())
        .spawn(move || {
            let _ = tx.send(shared_state());
        });
    let state = match spawned {
        Ok(_) => rx
            .await
            .expect("the thread starting the shared mk8s-testenv plane vanished"),
        Err(_) => shared_state(),
    };
    resolve(state)
}

/// Blocking [`shared`], for synchronous tests (it may be called inside a runtime too, but
/// blocks that thread while the plane starts).
pub fn shared_blocking() -> Option<&'static Plane> {
    resolve(shared_state())
}

/// Polls `f` until it returns `true`: every 20 ms at first, backing off to 250 ms.
///
/// # Panics
/// After `timeout` (measured with `tokio::time::Instant`), with a message naming `what`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(timeout, what, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await;
}

/// Polls `f` until it returns `Some(value)`, and returns the value (same timing as
/// [`wait_for`]).
///
/// # Panics
/// After `timeout`, with a message naming `what`.
pub async fn wait_for_value<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_once_true() {
        let mut n = 0;
        wait_for(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            let done = n >= 3;
            async move { done }
        })
        .await;
        assert_eq!(n, 3);
        let v = wait_for_value(Duration::from_secs(5), "a value", || async { Some(7) }).await;
        assert_eq!(v, 7);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn wait_for_panics_with_what() {
        wait_for(Duration::from_millis(50), "the impossible", || async { false }).await;
    }

    #[test]
    fn plane_and_workload_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Plane>();
        check::<WorkloadApiServer>();
    }
}
