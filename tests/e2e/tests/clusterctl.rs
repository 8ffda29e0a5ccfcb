//! clusterctl against the local management plane (issue 6 §1): `clusterctl init` of our
//! providers and the simulator from a local repository, `generate cluster` with the `sim`
//! and `sim-clusterclass` flavors, `get kubeconfig`, `describe cluster`, and `move` to a
//! second management cluster, where the clusters stay Available with the same machines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use mk8s_api::capi::MachineExt;
use mk8s_e2e::cluster::{self, Expect};
use mk8s_e2e::clusterctl::{Clusterctl, InventoryEntry, LocalRepository, Management, inventory, offline_dir};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(300);
const CP: &str = "controlplane.cluster.x-k8s.io/v1beta1";
const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io/v1beta1";
const CAPI: &str = "cluster.x-k8s.io/v1beta2";

/// The test binaries, or `None` (skip) outside CI when they are missing.
fn prerequisites() -> Option<(mk8s_testenv::Binaries, std::path::PathBuf)> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let missing = |what: String| {
        assert!(!ci, "{what}");
        eprintln!("skipped: {what}");
        None
    };
    let binaries = match mk8s_testenv::Binaries::discover() {
        Ok(b) => b,
        Err(e) => return missing(e.to_string()),
    };
    if !binaries.has_capi_binaries() {
        return missing("capi-manager/clusterctl are missing: run hack/build-testenv.sh --with-capi".into());
    }
    let Some(offline) = offline_dir(&binaries) else {
        return missing(
            "CAPI core components / cert-manager CRDs are missing: run hack/build-testenv.sh --with-capi".into(),
        );
    };
    Some((binaries, offline))
}

fn expected_inventory(repo: &LocalRepository) -> Vec<InventoryEntry> {
    let e = |name: &str, ns: &str, provider: &str, type_: &str, version: &str| InventoryEntry {
        name: name.into(),
        namespace: ns.into(),
        provider: provider.into(),
        type_: type_.into(),
        version: version.into(),
    };
    let v = &repo.version;
    vec![
        e(
            "bootstrap-microk8s",
            "capi-microk8s-bootstrap-system",
            "microk8s",
            "BootstrapProvider",
            v,
        ),
        e(
            "cluster-api",
            "capi-system",
            "cluster-api",
            "CoreProvider",
            &repo.core_version,
        ),
        e(
            "control-plane-microk8s",
            "capi-microk8s-control-plane-system",
            "microk8s",
            "ControlPlaneProvider",
            v,
        ),
        e(
            "infrastructure-sim",
            "capi-sim-system",
            "sim",
            "InfrastructureProvider",
            v,
        ),
    ]
}

/// What `clusterctl init` installed: our Deployments (container `manager`, variables
/// substituted), ServiceAccounts, CRDs with clusterctl's labels.
async fn assert_installed(client: &kube::Client, repo: &LocalRepository, bootstrap_concurrency: &str) {
    for (ns, name, provider, concurrency) in [
        (
            "capi-microk8s-bootstrap-system",
            "capi-microk8s-bootstrap-controller-manager",
            "bootstrap-microk8s",
            bootstrap_concurrency,
        ),
        (
            "capi-microk8s-control-plane-system",
            "capi-microk8s-control-plane-controller-manager",
            "control-plane-microk8s",
            "10",
        ),
    ] {
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .unwrap();
        let labels = d.metadata.labels.clone().unwrap_or_default();
        assert!(labels.contains_key("clusterctl.cluster.x-k8s.io"), "{name}: {labels:?}");
        assert_eq!(
            labels.get("cluster.x-k8s.io/provider").map(String::as_str),
            Some(provider)
        );
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some(name));
        let c = &pod.containers[0];
        assert_eq!(c.name, "manager");
        assert_eq!(
            c.image.as_deref(),
            Some(format!("{}:{}", mk8s_gen::release::IMAGE_REPOSITORY, repo.version).as_str())
        );
        let args = c.args.clone().unwrap_or_default();
        assert!(args.contains(&"--leader-elect=true".to_string()), "{args:?}");
        assert!(args.contains(&format!("--concurrency={concurrency}")), "{args:?}");
        assert!(
            args.iter().all(|a| !a.contains("${")),
            "unsubstituted variable in {args:?}"
        );
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .unwrap();
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, provider) in [
        ("microk8sconfigs.bootstrap.cluster.x-k8s.io", "bootstrap-microk8s"),
        (
            "microk8scontrolplanes.controlplane.cluster.x-k8s.io",
            "control-plane-microk8s",
        ),
        ("simmachines.infrastructure.cluster.x-k8s.io", "infrastructure-sim"),
    ] {
        let labels = crds.get(crd).await.unwrap().metadata.labels.unwrap_or_default();
        assert!(labels.contains_key("clusterctl.cluster.x-k8s.io"), "{crd}: {labels:?}");
        assert_eq!(
            labels.get("cluster.x-k8s.io/provider").map(String::as_str),
            Some(provider)
        );
        assert!(labels.contains_key("cluster.x-k8s.io/v1beta2"), "{crd}: contract label");
    }
}

/// What must not change when a cluster moves.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    /// Machine name → (providerID, Node name).
    machines: BTreeMap<String, (String, String)>,
    /// Bootstrap data Secret name → value.
    data: BTreeMap<String, Vec<u8>>,
    /// SimMachine → pid of its node's namespace (the same "VM" keeps running).
    node_pids: BTreeMap<String, Option<u32>>,
    /// `snap install` calls per node (cloud-init ran once).
    installs: BTreeMap<String, usize>,
    /// dqlite `Init` events.
    inits: usize,
}

async fn facts(sim: &mk8s_sim::SimHandle, client: &kube::Client, ns: &str, name: &str) -> Facts {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut machines = BTreeMap::new();
    let mut data = BTreeMap::new();
    for m in cluster::machines(client, ns, name).await {
        let mname = m.metadata.name.clone().unwrap();
        machines.insert(
            mname,
            (
                m.spec.provider_id.clone().unwrap_or_default(),
                m.node_name().unwrap_or_default().to_string(),
            ),
        );
        let secret = m.spec.bootstrap.data_secret_name.clone().expect("dataSecretName");
        let value = secrets.get(&secret).await.unwrap().data.unwrap()["value"].0.clone();
        data.insert(secret, value);
    }
    let snap = sim.cluster(ns, name).expect("simulated cluster");
    let node_pids = snap
        .nodes
        .iter()
        .map(|n| (n.machine.name.clone(), n.state.ns_pid))
        .collect();
    let installs = snap
        .nodes
        .iter()
        .map(|n| {
            let count = n
                .calls_of("snap")
                .iter()
                .filter(|c| c.get(1).is_some_and(|a| a == "install"))
                .count();
            (n.machine.name.clone(), count)
        })
        .collect();
    let history: Vec<String> = snap
        .state
        .history
        .iter()
        .map(|e| format!("{} {:?}", e.event, e.node))
        .collect();
    assert!(
        !snap
            .state
            .history
            .iter()
            .any(|e| e.event == "SecondInit" || e.event == "MemberStopped"),
        "{name}: {history:#?}"
    );
    assert!(snap.quorum_never_lost(), "{name}: {history:#?}");
    let inits = snap.state.history.iter().filter(|e| e.event == "Init").count();
    Facts {
        machines,
        data,
        node_pids,
        installs,
        inits,
    }
}

/// `clusterctl get kubeconfig` gives a kubeconfig that lists the workload Nodes.
async fn assert_kubeconfig(ctl: &Clusterctl, kubeconfig: &std::path::Path, ns: &str, name: &str, f: &Facts) {
    let yaml = ctl
        .run(kubeconfig, &["get", "kubeconfig", name, "-n", ns])
        .await
        .unwrap();
    let wc = mk8s_testenv::client_from_kubeconfig_yaml(&yaml)
        .await
        .expect("kubeconfig");
    let mut nodes: Vec<String> = Api::<Node>::all(wc)
        .list(&Default::default())
        .await
        .expect("workload Nodes through clusterctl's kubeconfig")
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap_or_default())
        .collect();
    nodes.sort();
    let mut want: Vec<String> = f.machines.values().map(|(_, n)| n.clone()).collect();
    want.sort();
    assert_eq!(nodes, want, "{name}: workload Nodes");
}

/// `clusterctl describe cluster` shows the control plane, the workers and every machine.
async fn assert_describe(ctl: &Clusterctl, kubeconfig: &std::path::Path, ns: &str, name: &str, f: &Facts) {
    let out = ctl
        .run(kubeconfig, &["describe", "cluster", name, "-n", ns, "--grouping=false"])
        .await
        .unwrap();
    eprintln!("clusterctl describe cluster {name}:\n{out}");
    for want in [
        format!("Cluster {ns}/{name}"),
        format!("SimCluster {ns}/"),
        format!("MicroK8sControlPlane {ns}/"),
        format!("MachineDeployment {ns}/"),
    ] {
        assert!(out.contains(&want), "{want} in:\n{out}");
    }
    for m in f.machines.keys() {
        assert!(out.contains(&format!("Machine {ns}/{m}")), "Machine {m} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusterctl_init_generate_describe_move() {
    let Some((binaries, offline)) = prerequisites() else {
        return;
    };
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("clusterctl e2e: [{:6.1?}] {what}", t0.elapsed());
    let dir = std::env::temp_dir().join(format!("mk8s-clusterctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("clusterctl e2e: logs in {} (kept with E2E_KEEP_LOGS=1)", dir.display());

    // Two fresh management clusters with cert-manager's CRDs; the local repository.
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    let (mut a, mut b) = tokio::join!(Management::start(&dir_a, &offline), Management::start(&dir_b, &offline));
    let repo = LocalRepository::write(&dir, &binaries, &offline);
    let ctl = Clusterctl::new(&binaries, &repo, &dir);
    step("planes started");

    // clusterctl init on both (the second with a variable set, to see it substituted).
    let init = [
        "init",
        "--bootstrap",
        "microk8s",
        "--control-plane",
        "microk8s",
        "--infrastructure",
        "sim",
    ];
    let (ra, rb) = tokio::join!(
        ctl.run(a.kubeconfig(), &init),
        ctl.run_with_env(b.kubeconfig(), &init, &[("MICROK8S_BOOTSTRAP_CONCURRENCY", "4")])
    );
    ra.unwrap_or_else(|e| panic!("{e}"));
    rb.unwrap_or_else(|e| panic!("{e}"));
    step("clusterctl init done on both");
    let (client_a, client_b) = (a.plane.client().await, b.plane.client().await);
    assert_eq!(inventory(&client_a).await, expected_inventory(&repo));
    assert_eq!(inventory(&client_b).await, expected_inventory(&repo));
    assert_installed(&client_a, &repo, "10").await;
    assert_installed(&client_b, &repo, "4").await;

    // The controllers as processes: CAPI core, our managers, the simulator (under its
    // ServiceAccount, with the RBAC clusterctl installed) serving both planes.
    // One after the other: each takes free loopback ports by binding and releasing them.
    a.run_controllers().await;
    b.run_controllers().await;
    let mut cfg = mk8s_sim::Config::new();
    cfg.state_dir = dir.join("sim");
    cfg.stub_binary = Some(mk8s_e2e::binary("mk8s-sim"));
    cfg.sleep_scale = 0.02;
    cfg.address_octets = (200, 219);
    let (sa, sa_name) = ("capi-sim-system", "capi-sim-controller-manager");
    let sim_a = a.plane.client_for_service_account(sa, sa_name).await.unwrap();
    let sim_b = b.plane.client_for_service_account(sa, sa_name).await.unwrap();
    let mut sim = mk8s_sim::run_with_client(cfg, sim_a).await.expect("simulator starts");
    sim.serve(sim_b).await.expect("simulator serves the second plane");
    step("controllers running on both planes");

    // A user-made Secret (no owner, no `<cluster>-ca`-like name) moves only with clusterctl's
    // move label (a label, `clusterctl.cluster.x-k8s.io/move`): bring our own join token for c1.
    let ns = a.plane.namespace("clusterctl").await.unwrap();
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "c1-jointoken", "labels": {"clusterctl.cluster.x-k8s.io/move": ""}},
        "stringData": {"value": "abcdefghijklmnopqrstuvwxyzabcdef"}}))
    .unwrap();
    Api::<Secret>::namespaced(client_a.clone(), &ns)
        .create(&PostParams::default(), &token)
        .await
        .unwrap();

    // clusterctl generate cluster, both flavors, applied.
    let generate = |name: &'static str, flavor: &'static str, version: &'static str| {
        let (ctl, ns, kc) = (&ctl, ns.clone(), a.kubeconfig().to_path_buf());
        async move {
            ctl.run(
                &kc,
                &[
                    "generate",
                    "cluster",
                    name,
                    "--flavor",
                    flavor,
                    "--kubernetes-version",
                    version,
                    "--control-plane-machine-count",
                    "1",
                    "--worker-machine-count",
                    "1",
                    "--target-namespace",
                    &ns,
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let c1 = generate("c1", "sim", "1.33.0").await;
    let c2 = generate("c2", "sim-clusterclass", "v1.33.99").await;
    assert!(
        c2.contains("kind: ClusterClass"),
        "clusterctl adds the missing ClusterClass:\n{c2}"
    );
    std::fs::write(dir.join("c1.yaml"), &c1).unwrap();
    std::fs::write(dir.join("c2.yaml"), &c2).unwrap();
    mk8s_e2e::apply_yaml(&client_a, &c1, Some(&ns)).await;
    mk8s_e2e::apply_yaml(&client_a, &c2, Some(&ns)).await;
    step("c1 (flavor sim) and c2 (flavor sim-clusterclass) applied");
    let expect = Expect {
        control_planes: 1,
        workers: 1,
    };
    let wait = |client: kube::Client, name: &'static str| {
        let (sim, ns) = (&sim, ns.clone());
        async move { cluster::wait_converged_on(sim, &client, &ns, name, expect, CONVERGE).await }
    };
    let converge = tokio::time::timeout(CONVERGE + Duration::from_secs(10), async {
        tokio::join!(wait(client_a.clone(), "c1"), wait(client_a.clone(), "c2"))
    })
    .await;
    assert!(
        converge.is_ok(),
        "not converged on the first plane:\n{}",
        a.log_tails(30)
    );
    step("both clusters Available on the first plane");

    let mut before = BTreeMap::new();
    for name in ["c1", "c2"] {
        let f = facts(&sim, &client_a, &ns, name).await;
        assert_eq!(f.inits, 1, "{name}: one init");
        assert_kubeconfig(&ctl, a.kubeconfig(), &ns, name, &f).await;
        assert_describe(&ctl, a.kubeconfig(), &ns, name, &f).await;
        before.insert(name, f);
    }
    let user_token = Api::<Secret>::namespaced(client_a.clone(), &ns)
        .get("c1-jointoken")
        .await
        .unwrap()
        .data
        .unwrap();
    step("get kubeconfig and describe on the first plane");

    // clusterctl move to the second plane.
    let t_move = Instant::now();
    let out = ctl
        .run(
            a.kubeconfig(),
            &[
                "move",
                "-n",
                &ns,
                "--to-kubeconfig",
                &b.kubeconfig().display().to_string(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("clusterctl move ({:.1?}):\n{out}", t_move.elapsed());
    step("clusterctl move done");

    // The source holds nothing of the clusters any more; the simulated clusters run on.
    let clusters_a = cluster::dynamic(&client_a, &ns, CAPI, "Cluster");
    assert!(clusters_a.list(&Default::default()).await.unwrap().items.is_empty());
    assert!(
        Api::<Secret>::namespaced(client_a.clone(), &ns)
            .get_opt("c1-jointoken")
            .await
            .unwrap()
            .is_none()
    );
    // The user-made token moved with its label.
    assert_eq!(
        Api::<Secret>::namespaced(client_b.clone(), &ns)
            .get("c1-jointoken")
            .await
            .unwrap()
            .data
            .unwrap(),
        user_token
    );

    let converge = tokio::time::timeout(CONVERGE + Duration::from_secs(10), async {
        tokio::join!(wait(client_b.clone(), "c1"), wait(client_b.clone(), "c2"))
    })
    .await;
    assert!(
        converge.is_ok(),
        "not converged on the second plane:\n{}",
        b.log_tails(30)
    );
    step("both clusters Available on the second plane");

    // The simulator serving the second plane adopted the running machines and reports them.
    let sim_machines = cluster::dynamic(&client_b, &ns, "infrastructure.cluster.x-k8s.io/v1alpha1", "SimMachine");
    for m in sim_machines.list(&Default::default()).await.unwrap().items {
        let s = &m.data["status"];
        assert_eq!(s["initialization"]["provisioned"], true, "{:?}: {s}", m.metadata.name);
        assert_eq!(s["node"]["phase"], "Bootstrapped", "{:?}: {s}", m.metadata.name);
    }
    let sim_clusters = cluster::dynamic(&client_b, &ns, "infrastructure.cluster.x-k8s.io/v1alpha1", "SimCluster");
    for c in sim_clusters.list(&Default::default()).await.unwrap().items {
        assert_eq!(
            c.data["status"]["apiServer"]["phase"], "Running",
            "{:?}",
            c.metadata.name
        );
    }
    for name in ["c1", "c2"] {
        // Same machines, same nodes, same bootstrap data, no new boot, one init.
        let after = facts(&sim, &client_b, &ns, name).await;
        assert_eq!(after, before[name], "{name}: moved cluster unchanged");
        assert_kubeconfig(&ctl, b.kubeconfig(), &ns, name, &after).await;
        assert_describe(&ctl, b.kubeconfig(), &ns, name, &after).await;
    }
    // Status is rebuilt on the target: the bootstrap provider from the Machines'
    // dataSecretName, the control plane provider from the workload cluster.
    let configs = cluster::dynamic(&client_b, &ns, BOOTSTRAP, "MicroK8sConfig");
    mk8s_e2e::eventually(CONVERGE, "MicroK8sConfig status rebuilt on the target", || async {
        let list = configs.list(&Default::default()).await.map_err(|e| e.to_string())?;
        if list.items.len() != 4 {
            return Err(format!("{} MicroK8sConfigs", list.items.len()));
        }
        for c in &list.items {
            let s = &c.data["status"];
            if s["initialization"]["dataSecretCreated"] != true
                || s["dataSecretName"].as_str() != c.metadata.name.as_deref()
            {
                return Err(format!("{:?}: {s}", c.metadata.name));
            }
        }
        Ok(())
    })
    .await;
    let mcps = cluster::dynamic(&client_b, &ns, CP, "MicroK8sControlPlane");
    for m in mcps.list(&Default::default()).await.unwrap().items {
        let s = &m.data["status"];
        assert_eq!(s["initialization"]["controlPlaneInitialized"], true, "{s}");
        assert_eq!(s["readyReplicas"], 1, "{s}");
    }
    step("status rebuilt on the second plane");

    sim.shutdown().await;
    drop((a, b));
    if std::env::var_os("E2E_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    step("done");
}
