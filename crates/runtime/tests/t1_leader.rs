//! T1: leader election of the manager runtime on a real API server — one leader at a time,
//! hand-over on graceful shutdown, and fail-stop when another holder takes the Lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use mk8s_runtime::{Defaults, ManagerFlags, RuntimeError};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

const DEFAULTS: Defaults = Defaults {
    name: "leader-test",
    metrics_bind_address: "0",
    health_probe_bind_address: "0",
    leader_election_id: "leader-test",
};

struct Instance {
    leading: Arc<AtomicUsize>,
    token: Arc<Mutex<Option<CancellationToken>>>,
    handle: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

fn start(kubeconfig: &std::path::Path, ns: &str) -> Instance {
    let flags = ManagerFlags::from_args([
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect".into(),
        format!("--leader-election-namespace={ns}"),
        "--leader-election-lease-duration=3".into(),
        "--log-level=warn".into(),
    ])
    .unwrap();
    let leading = Arc::new(AtomicUsize::new(0));
    let token: Arc<Mutex<Option<CancellationToken>>> = Arc::new(Mutex::new(None));
    let (l, t) = (leading.clone(), token.clone());
    let handle = tokio::spawn(async move {
        mk8s_runtime::run(flags, DEFAULTS, |rt| async move {
            *t.lock().await = Some(rt.shutdown.clone());
            l.fetch_add(1, Ordering::SeqCst);
            rt.shutdown.cancelled().await;
            Ok(())
        })
        .await
    });
    Instance { leading, token, handle }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_hand_over_and_fail_stop() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    plane.install_capi_crds().await.unwrap();
    let ns = plane.namespace("leader").await.unwrap();
    let kc = plane.kubeconfig_path();

    let a = start(kc, &ns);
    eventually("the first instance leads", || a.leading.load(Ordering::SeqCst) == 1).await;
    let b = start(kc, &ns);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        b.leading.load(Ordering::SeqCst),
        0,
        "a second instance must not lead while the first holds the Lease"
    );

    // Graceful shutdown releases the Lease: the standby takes over.
    a.token.lock().await.as_ref().unwrap().cancel();
    a.handle.await.unwrap().unwrap();
    eventually("the standby takes over", || b.leading.load(Ordering::SeqCst) == 1).await;

    // Someone else takes the Lease (e.g. a partitioned leader's successor): the leader stops.
    let leases: Api<Lease> = Api::namespaced(plane.client().await, &ns);
    let far_future = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3600))
            .unwrap(),
    ))
    .unwrap();
    leases
        .patch(
            "leader-test",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600,
                         "renewTime": far_future, "acquireTime": far_future}})),
        )
        .await
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), b.handle)
        .await
        .expect("the leader stops")
        .unwrap();
    assert!(matches!(res, Err(RuntimeError::LostLeadership(_))), "{res:?}");
}
