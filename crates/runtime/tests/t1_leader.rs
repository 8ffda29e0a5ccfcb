//! T1: leader election of the manager runtime on a real API server — one leader at a time,
//! hand-over on graceful shutdown, fail-stop when another holder takes the Lease, and
//! fail-stop before a standby can take over when the leader loses the API server.

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
    /// When the controllers started (leadership won).
    led: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// When the controllers saw the shutdown.
    stopped: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    token: Arc<Mutex<Option<CancellationToken>>>,
    handle: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

fn leader_flags(kubeconfig: &std::path::Path, ns: &str, lease_secs: u64) -> ManagerFlags {
    ManagerFlags::from_args([
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect".into(),
        format!("--leader-election-namespace={ns}"),
        format!("--leader-election-lease-duration={lease_secs}"),
        "--log-level=warn".into(),
    ])
    .unwrap()
}

/// Someone else takes the Lease for an hour (e.g. a partitioned leader's successor).
async fn take_the_lease(plane: &mk8s_testenv::Plane, ns: &str) {
    let leases: Api<Lease> = Api::namespaced(plane.client().await, ns);
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
}

/// Records when it is dropped.
struct StopClock(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Drop for StopClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(std::time::Instant::now());
    }
}

fn start(kubeconfig: &std::path::Path, ns: &str) -> Instance {
    start_with(kubeconfig, ns, 3)
}

fn start_with(kubeconfig: &std::path::Path, ns: &str, lease_secs: u64) -> Instance {
    let flags = leader_flags(kubeconfig, ns, lease_secs);
    let leading = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(std::sync::Mutex::new(None));
    let led = Arc::new(std::sync::Mutex::new(None));
    let token: Arc<Mutex<Option<CancellationToken>>> = Arc::new(Mutex::new(None));
    let (l, t, st, ld) = (leading.clone(), token.clone(), stopped.clone(), led.clone());
    let handle = tokio::spawn(async move {
        mk8s_runtime::run(flags, DEFAULTS, |rt| async move {
            *ld.lock().unwrap() = Some(std::time::Instant::now());
            // Stopped when the controllers return or are dropped (on a lost Lease).
            let _clock = StopClock(st);
            *t.lock().await = Some(rt.shutdown.clone());
            l.fetch_add(1, Ordering::SeqCst);
            rt.shutdown.cancelled().await;
            Ok(())
        })
        .await
    });
    Instance {
        leading,
        led,
        stopped,
        token,
        handle,
    }
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
    take_the_lease(plane, &ns).await;
    let res = tokio::time::timeout(Duration::from_secs(30), b.handle)
        .await
        .expect("the leader stops")
        .unwrap();
    assert!(matches!(res, Err(RuntimeError::LostLeadership(_))), "{res:?}");
}

/// A TCP proxy to the API server that can be cut: connections through it are dropped and new
/// ones refused, as when a leader's node loses the network.
struct Proxy {
    url: String,
    cut: CancellationToken,
}

async fn proxy(upstream: u16) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let cut = CancellationToken::new();
    let c = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut down, _) = tokio::select! {
                r = listener.accept() => r.unwrap(),
                _ = c.cancelled() => return,
            };
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    _ = c.cancelled() => {}
                }
            });
        }
    });
    Proxy { url, cut }
}

/// The leader loses the API server: it stops leading before its Lease expires, so the
/// standby that then takes the Lease never leads alongside it. (Without a renew deadline
/// the leader retried its renewal quietly and went on reconciling.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_before_its_lease_expires() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    plane.install_capi_crds().await.unwrap();
    let ns = plane.namespace("cutoff").await.unwrap();
    let p = proxy(plane.api_port()).await;
    let dir = std::env::temp_dir().join(format!("mk8s-leader-cutoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let via_proxy = dir.join("kubeconfig");
    std::fs::write(&via_proxy, plane.kubeconfig_yaml().replace(&plane.server_url(), &p.url)).unwrap();

    let a = start_with(&via_proxy, &ns, 6);
    eventually("the first instance leads", || a.leading.load(Ordering::SeqCst) == 1).await;
    let b = start_with(plane.kubeconfig_path(), &ns, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.leading.load(Ordering::SeqCst), 0, "one leader");

    p.cut.cancel();
    let res = tokio::time::timeout(Duration::from_secs(30), a.handle)
        .await
        .expect("the cut-off leader stops")
        .unwrap();
    assert!(matches!(res, Err(RuntimeError::LostLeadership(_))), "{res:?}");
    eventually("the standby takes over", || b.leading.load(Ordering::SeqCst) == 1).await;
    let a_stopped = a.stopped.lock().unwrap().expect("a's controllers stopped");
    let b_led = b.led.lock().unwrap().expect("b leads");
    assert!(
        a_stopped < b_led,
        "the cut-off leader stopped {:?} after the standby took over",
        a_stopped - b_led
    );
    b.token.lock().await.as_ref().unwrap().cancel();
    b.handle.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A leader that loses its Lease does not wait for its reconciles in flight (they would write
/// beside the successor): its controllers are dropped at once, even ones that never look at
/// the shutdown token, and `run` reports the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_abandons_reconciles_in_flight() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    plane.install_capi_crds().await.unwrap();
    let ns = plane.namespace("abandon").await.unwrap();
    let flags = leader_flags(plane.kubeconfig_path(), &ns, 3);
    // A controller forever inside a reconcile: it never returns, whatever the shutdown says.
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let handle = tokio::spawn(async move {
        mk8s_runtime::run(flags, DEFAULTS, |_rt| async move {
            loop {
                t.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    });
    eventually("the instance leads", || ticks.load(Ordering::SeqCst) > 0).await;

    take_the_lease(plane, &ns).await;
    let res = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the leader stops without waiting for its reconcile")
        .unwrap();
    assert!(matches!(res, Err(RuntimeError::LostLeadership(_))), "{res:?}");
    let after = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after,
        "the reconcile in flight was dropped"
    );
}
