//! T1: the simulator against a real management kube-apiserver (mk8s-testenv), with real
//! workload kube-apiservers, real namespaces, `/bin/sh`, bash, curl and kubectl. The test
//! plays CAPI core: it creates `cluster.x-k8s.io/v1beta2` Clusters and Machines by hand and
//! the bootstrap data Secrets with `mk8s_cloudinit::render`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use mk8s_api::bootstrap::{ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_api::capi::CoreVersion;
use mk8s_cloudinit::{CaFiles, RenderInput, Role};
use mk8s_sim::api::{SimClusterSpec, SimMachineSpec};
use mk8s_sim::{Config, EtcdMode, SimCluster, SimHandle, SimMachine};
use mk8s_testenv::{CaKeyFormat, CertKeyPem, Plane, generate_ca, wait_for, wait_for_value};
use serde_json::json;

const TOKEN: &str = "abcdefghijklmnopqrstuvwxyz012345";
const AUTH: &str = "capi-auth-token-0123456789";
const TIMEOUT: Duration = Duration::from_secs(120);

struct Env {
    plane: &'static Plane,
    client: kube::Client,
    ns: String,
    sim: SimHandle,
    state_dir: PathBuf,
}

async fn env(test: &str, tweak: impl FnOnce(&mut Config)) -> Option<Env> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let plane = mk8s_testenv::shared().await?;
    let namespaces = std::process::Command::new("unshare")
        .args(["--mount", "--uts", "--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !namespaces {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the simulator needs root and `unshare` (mount, UTS and PID namespaces)"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPING {test}: `unshare` of mount/UTS/PID namespaces is not available (root needed) !!!!!!!!\n"
        );
        return None;
    }
    plane.install_capi_crds().await.unwrap();
    let crds: Vec<_> = mk8s_sim::crds().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let ns = plane.namespace(test).await.unwrap();
    let client = plane.client().await;
    let state_dir = std::env::temp_dir().join(format!("mk8s-sim-t1-{}-{ns}", std::process::id()));
    let mut config = Config::new();
    config.namespace = Some(ns.clone());
    config.state_dir = state_dir.clone();
    config.stub_binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_mk8s-sim")));
    config.sleep_scale = 0.02;
    config.pod_timeout = Duration::from_secs(60);
    config.etcd_mode = EtcdMode::Shared(Some(plane.etcd_url().to_string()));
    config.debug_address = Some("127.0.0.1:0".parse().unwrap());
    config.keep_trees = std::env::var("MK8S_SIM_KEEP").is_ok_and(|v| v == "1");
    tweak(&mut config);
    let sim = mk8s_sim::run_with_client(config, client.clone()).await.unwrap();
    Some(Env {
        plane,
        client,
        ns,
        sim,
        state_dir,
    })
}

fn capi(env: &Env, kind: &str) -> Api<DynamicObject> {
    let ar = match kind {
        "Cluster" => CoreVersion::V1Beta2.cluster(),
        _ => CoreVersion::V1Beta2.machine(),
    };
    Api::namespaced_with(env.client.clone(), &env.ns, &ar)
}

fn meta(name: &str, cluster: &str, owner: Option<(&str, &DynamicObject)>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([(
            "cluster.x-k8s.io/cluster-name".to_string(),
            cluster.to_string(),
        )])),
        owner_references: owner.map(|(kind, o)| {
            vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "cluster.x-k8s.io/v1beta2".into(),
                kind: kind.into(),
                name: o.metadata.name.clone().unwrap(),
                uid: o.metadata.uid.clone().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        }),
        ..Default::default()
    }
}

/// Creates a CAPI Cluster and its SimCluster; plays CAPI core once it is provisioned.
/// Returns the endpoint (host, port).
async fn cluster(env: &Env, name: &str) -> (String, u16) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name, "namespace": env.ns},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimCluster", "name": name}},
    }))
    .unwrap();
    let c = capi(env, "Cluster").create(&PostParams::default(), &obj).await.unwrap();
    let sc = SimCluster {
        metadata: meta(name, name, Some(("Cluster", &c))),
        spec: SimClusterSpec {
            failure_domains: vec![mk8s_sim::api::FailureDomain {
                name: "fd-a".into(),
                control_plane: Some(true),
                attributes: Default::default(),
            }],
            ..Default::default()
        },
        status: None,
    };
    let scs: Api<SimCluster> = Api::namespaced(env.client.clone(), &env.ns);
    scs.create(&PostParams::default(), &sc).await.unwrap();
    let ep = wait_for_value(TIMEOUT, "the SimCluster to be provisioned", || {
        let scs = scs.clone();
        async move {
            let sc = scs.get(name).await.ok()?;
            let st = sc.status?;
            (st.initialization?.provisioned == Some(true) && st.ready).then_some(())?;
            let ep = sc.spec.control_plane_endpoint?;
            Some((ep.host, ep.port as u16))
        }
    })
    .await;
    // CAPI core: the infrastructure is provisioned, the endpoint is the cluster's.
    capi(env, "Cluster")
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"initialization": {"infrastructureProvisioned": true}}})),
        )
        .await
        .unwrap();
    capi(env, "Cluster")
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"controlPlaneEndpoint": {"host": ep.0, "port": ep.1}}})),
        )
        .await
        .unwrap();
    ep
}

/// Renders the bootstrap data for `role`, creates its Secret, the Machine and the SimMachine.
async fn machine(env: &Env, cluster: &str, name: &str, role: Role, spec: &MicroK8sConfigSpec, ep: &(String, u16)) {
    machine_with(env, cluster, name, role, spec, ep, TOKEN, "v1.33.4").await;
}

#[allow(clippy::too_many_arguments)]
async fn machine_with(
    env: &Env,
    cluster: &str,
    name: &str,
    role: Role,
    spec: &MicroK8sConfigSpec,
    ep: &(String, u16),
    token: &str,
    version: &str,
) {
    let cp = role.is_control_plane();
    let data = mk8s_cloudinit::render(&RenderInput {
        role,
        spec,
        kubernetes_version: version,
        endpoint_host: &ep.0,
        endpoint_port: ep.1,
        join_token: token,
        auth_token: AUTH,
    })
    .unwrap();
    create_machine(env, cluster, name, cp, &data).await;
}

async fn create_machine(env: &Env, cluster: &str, name: &str, cp: bool, data: &str) {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret = Secret {
        metadata: meta(name, cluster, None),
        string_data: Some(BTreeMap::from([
            ("value".to_string(), data.to_string()),
            ("format".to_string(), "cloud-config".to_string()),
        ])),
        type_: Some("cluster.x-k8s.io/secret".into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let mut labels = json!({"cluster.x-k8s.io/cluster-name": cluster});
    if cp {
        labels["cluster.x-k8s.io/control-plane"] = json!("");
    }
    let m: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "namespace": env.ns, "labels": labels},
        "spec": {
            "clusterName": cluster, "version": "v1.33.4", "failureDomain": "fd-a",
            "bootstrap": {"dataSecretName": name},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachine", "name": name},
        },
    }))
    .unwrap();
    let m = capi(env, "Machine").create(&PostParams::default(), &m).await.unwrap();
    let sm = SimMachine {
        metadata: meta(name, cluster, Some(("Machine", &m))),
        spec: SimMachineSpec::default(),
        status: None,
    };
    Api::<SimMachine>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
}

fn condition(sm: &SimMachine, type_: &str) -> Option<mk8s_api::conditions::Condition> {
    sm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Waits until the machine's bootstrap finished; returns it and whether it succeeded.
async fn bootstrapped(env: &Env, name: &str) -> (SimMachine, bool) {
    let api: Api<SimMachine> = Api::namespaced(env.client.clone(), &env.ns);
    let sm = wait_for_value(
        Duration::from_secs(240),
        &format!("{name} to finish bootstrapping"),
        || {
            let api = api.clone();
            async move {
                let sm = api.get(name).await.ok()?;
                let c = condition(&sm, "BootstrapSucceeded")?;
                (c.status != "Unknown").then_some(sm)
            }
        },
    )
    .await;
    let ok = condition(&sm, "BootstrapSucceeded").unwrap().status == "True";
    (sm, ok)
}

fn log(env: &Env, name: &str) -> String {
    let n = env.sim.node(&env.ns, name).unwrap();
    std::fs::read_to_string(n.log_path).unwrap_or_default()
}

async fn expect_success(env: &Env, name: &str) -> SimMachine {
    let (sm, ok) = bootstrapped(env, name).await;
    assert!(
        ok,
        "{name} failed to bootstrap: {:?}\n--- log:\n{}",
        condition(&sm, "BootstrapSucceeded"),
        log(env, name)
    );
    sm
}

async fn expect_failure(env: &Env, name: &str, needle: &str) -> SimMachine {
    let (sm, ok) = bootstrapped(env, name).await;
    let c = condition(&sm, "BootstrapSucceeded").unwrap();
    assert!(!ok, "{name} bootstrapped although it should not have");
    assert_eq!(c.reason, "BootstrapFailed");
    assert!(
        c.message.contains(needle),
        "{name}: {needle:?} not in the condition message:\n{}",
        c.message
    );
    let ready = condition(&sm, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BootstrapFailed")
    );
    sm
}

fn ip_of(sm: &SimMachine) -> String {
    sm.status.as_ref().unwrap().addresses[0].address.clone()
}

fn remap(on: bool) -> MicroK8sConfigSpec {
    MicroK8sConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            port_compatibility_remap: Some(on),
            ..Default::default()
        }),
        init_configuration: Some(InitConfiguration {
            extra_kubelet_args: Some(vec!["--node-labels=tier=gold".into()]),
            ..Default::default()
        }),
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

const REMOVE_SCRIPT: &str = r#"curl -fsS -k -X POST -H "capi-auth-token: $CAPI_AUTH_TOKEN" -H "Content-Type: application/json" -d "{\"remove_endpoint\":\"$1\"}" "https://$2/cluster/api/v2.0/dqlite/remove""#;

const REFRESH_SCRIPT: &str = r#"set -eu
body=$(curl -fsS --unix-socket /run/snapd.socket -X POST -H "Content-Type: application/json" -d "{\"action\":\"refresh\",\"channel\":\"$1\"}" http://localhost/v2/snaps/microk8s)
change=$(printf '%s' "$body" | sed -n 's/.*"change":"\([0-9]*\)".*/\1/p')
[ -n "$change" ] || { echo "no change in $body" >&2; exit 1; }
i=0
while [ "$i" -lt 300 ]; do
  c=$(curl -fsS --unix-socket /run/snapd.socket "http://localhost/v2/changes/$change")
  case "$c" in
    *'"status":"Done"'*) echo "refreshed to $1"; exit 0 ;;
    *'"status":"Error"'*) echo "refresh failed: $c" >&2; exit 1 ;;
  esac
  i=$((i + 1))
  sleep 0.1
done
echo "refresh timed out" >&2
exit 1
"#;

/// A pod as the control plane provider creates it for a node action.
fn action_pod(name: &str, node: &str, script: &str, args: &[&str], snapd: bool) -> Pod {
    let mut command = vec!["/bin/sh".to_string(), "-c".into(), script.into(), "mk8s-action".into()];
    command.extend(args.iter().map(|a| a.to_string()));
    let mut spec = json!({
        "nodeName": node, "restartPolicy": "Never", "hostNetwork": true,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": "action", "image": "curlimages/curl:8.10.1", "command": command,
            "securityContext": {"privileged": true},
            "env": [{"name": "CAPI_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "capi-auth-token", "key": "token"}}}],
        }],
    });
    if snapd {
        spec["volumes"] = json!([{"name": "snapd", "hostPath": {"path": "/run/snapd.socket", "type": "Socket"}}]);
        spec["containers"][0]["volumeMounts"] = json!([{"name": "snapd", "mountPath": "/run/snapd.socket"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "microk8s-capi-system"},
        "spec": spec,
    }))
    .unwrap()
}

async fn run_pod(wl: &kube::Client, pod: Pod) -> Pod {
    let pods: Api<Pod> = Api::namespaced(wl.clone(), "microk8s-capi-system");
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for_value(TIMEOUT, &format!("pod {name} to finish"), || {
        let pods = pods.clone();
        let name = name.clone();
        async move {
            let p = pods.get(&name).await.ok()?;
            let phase = p.status.as_ref()?.phase.clone()?;
            (phase == "Succeeded" || phase == "Failed").then_some(p)
        }
    })
    .await
}

fn exit_code(p: &Pod) -> i32 {
    p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .exit_code
}

async fn node(wl: &kube::Client, name: &str) -> Node {
    let nodes: Api<Node> = Api::all(wl.clone());
    wait_for_value(TIMEOUT, &format!("Node {name}"), || {
        let nodes = nodes.clone();
        async move { nodes.get(name).await.ok() }
    })
    .await
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn kubelet_version(n: &Node) -> String {
    n.status
        .as_ref()
        .unwrap()
        .node_info
        .as_ref()
        .unwrap()
        .kubelet_version
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sim_cluster_is_provisioned_with_an_endpoint_and_honours_pause() {
    let Some(env) = env("sim-provision", |_| {}).await else {
        return;
    };
    let (host, port) = cluster(&env, "c1").await;
    let ip: std::net::Ipv4Addr = host.parse().unwrap();
    assert!(ip.is_loopback() && ip.octets()[1] != 0, "{host}");
    assert_eq!(port, 6443);
    let scs: Api<SimCluster> = Api::namespaced(env.client.clone(), &env.ns);
    let sc = scs.get("c1").await.unwrap();
    assert!(
        sc.metadata
            .finalizers
            .unwrap()
            .contains(&mk8s_sim::api::CLUSTER_FINALIZER.to_string())
    );
    let st = sc.status.unwrap();
    assert_eq!(st.failure_domains[0].name, "fd-a");
    assert_eq!(st.failure_domains[0].control_plane, Some(true));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(st.api_server.unwrap().phase, "NotStarted");

    capi(&env, "Cluster")
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    wait_for(TIMEOUT, "Paused=True", || {
        let scs = scs.clone();
        async move {
            scs.get("c1")
                .await
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Paused" && c.status == "True"))
        }
    })
    .await;

    // A machine that is not cloud-config is refused as cloud-init would refuse it.
    capi(&env, "Cluster")
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    create_machine(&env, "c1", "not-cloud-config", false, "#!/bin/bash\necho hi\n").await;
    let sm = expect_failure(&env, "not-cloud-config", "does not start with #cloud-config").await;
    // The "VM" came up anyway (as a cloud's would): providerID, addresses, provisioned.
    assert_eq!(
        sm.spec.provider_id.as_deref(),
        Some(format!("sim://{}/not-cloud-config", env.ns).as_str())
    );

    // A hand-written cloud-config exercising the stubs as snapd and the host would answer.
    let doc = r#"#cloud-config
write_files:
- path: /etc/motd.d/sim
  permissions: "0644"
  content: hello
runcmd:
- snap install microk8s --channel=1.33/stable && echo "classic without --classic installed" && exit 3
- snap install microk8s --channel=1.33/unstable --classic && exit 4
- snap install microk8s --channel=1.24-strict/stable && exit 5
- snap list microk8s && exit 6
- microk8s status && exit 7
- [snap, install, microk8s, --channel=1.34-strict/candidate]
- snap list microk8s | grep -q 1.34-strict/candidate || exit 8
- test "$(hostname)" = handwritten || exit 9
- microk8s kubectl get --raw /readyz | grep -qx ok || exit 10
- microk8s kubectl get nodes && exit 11
- iptables -t nat -C OUTPUT -p tcp --dport 1 -j ACCEPT && exit 12
- iptables -t nat -A OUTPUT -p tcp --dport 1 -j ACCEPT && iptables -t nat -C OUTPUT -p tcp --dport 1 -j ACCEPT || exit 13
- systemctl enable nothing.service && exit 14
- curl -fsS https://example.com/ && exit 15
- test -S /run/snapd.socket || exit 16
- echo "{{ v1.local_hostname }}" > /var/tmp/jinja
- mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"#;
    let doc = format!("## template: jinja\n{doc}");
    create_machine(&env, "c1", "handwritten", false, &doc).await;
    expect_success(&env, "handwritten").await;
    let n = env.sim.node(&env.ns, "handwritten").unwrap();
    assert_eq!(n.state.snap.as_ref().unwrap().channel, "1.34-strict/candidate");
    assert_eq!(
        std::fs::read_to_string(n.root.join("var/tmp/jinja")).unwrap(),
        "handwritten\n"
    );
    assert_eq!(std::fs::read_to_string(n.root.join("etc/motd.d/sim")).unwrap(), "hello");
    assert!(n.calls_of("curl").len() == 1 && n.calls_of("systemctl").len() == 1);
    let text = std::fs::read_to_string(&n.log_path).unwrap();
    assert!(text.contains("published using classic confinement"), "{text}");
    assert!(text.contains("invalid risk in channel name: 1.33/unstable"), "{text}");
    assert!(text.contains("not available"), "{text}");
    assert!(text.contains("Could not resolve host"), "{text}");
    // Nothing leaked to the host.
    assert!(
        std::fs::read_dir("/var/snap").unwrap().next().is_none(),
        "/var/snap of the host is not empty"
    );

    let pids = env.sim.process_ids();
    assert!(!pids.is_empty());
    env.sim.shutdown().await;
    // Exits are asynchronous (SIGKILL, then the kernel reaps): allow a few seconds on a
    // loaded machine before calling a process a survivor.
    for p in pids {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pid_alive(p) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!pid_alive(p), "process {p} survived the simulator's shutdown");
    }
    let _ = std::fs::remove_dir_all(&env.state_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machines_bootstrap_join_fail_honestly_and_run_node_actions() {
    let Some(env) = env("sim-lifecycle", |_| {}).await else {
        return;
    };
    let t0 = Instant::now();
    let ep = cluster(&env, "mk").await;
    let ca = generate_ca("10.152.183.1", CaKeyFormat::RsaPkcs1).unwrap();

    // 1. The init machine.
    let init_spec = remap(true);
    machine(
        &env,
        "mk",
        "mk-cp-0",
        Role::Init {
            ca: CaFiles {
                cert_pem: ca.cert_pem.clone(),
                key_pem: ca.key_pem.clone(),
            },
        },
        &init_spec,
        &ep,
    )
    .await;
    let init = expect_success(&env, "mk-cp-0").await;
    let init_boot = t0.elapsed();
    let init_ip = ip_of(&init);
    let st = init.status.as_ref().unwrap();
    assert_eq!(
        init.spec.provider_id.as_deref(),
        Some(format!("sim://{}/mk-cp-0", env.ns).as_str())
    );
    assert_eq!(st.initialization.as_ref().unwrap().provisioned, Some(true));
    assert!(st.ready);
    assert_eq!(st.addresses[0].type_, "InternalIP");
    assert_eq!(st.addresses[1].type_, "Hostname");
    assert_eq!(st.addresses[1].address, "mk-cp-0");
    assert_eq!(st.failure_domain.as_deref(), Some("fd-a"));
    let ns = st.node.as_ref().unwrap();
    assert_eq!(ns.agent_port, Some(30000));
    assert_eq!(ns.dqlite_address.as_deref(), Some(format!("{init_ip}:2379").as_str()));
    let snap = env.sim.node(&env.ns, "mk-cp-0").unwrap();
    assert!(snap.root.join("run/cluster-api/bootstrap-success.complete").exists());
    assert!(
        !snap.root.join("var/tmp/ca.key").exists(),
        "refresh-certs must remove the CA key"
    );
    assert!(
        snap.calls_of("snapd")
            .iter()
            .any(|c| c.iter().any(|a| a.contains("\"install\"")))
    );
    assert!(snap.state.iptables.iter().any(|r| r.contains(&"REDIRECT".to_string())));
    assert!(
        snap.root
            .join("etc/systemd/system/capi-microk8s-apiserver-redirect.service")
            .exists()
    );

    // The workload API server serves with the CA of the cloud-config, and trusts it.
    let server = format!("https://{}:{}", ep.0, ep.1);
    let good =
        mk8s_testenv::certs::kubeconfig_with_client_cert(&server, &ca.cert_pem, &ca, "admin", &["system:masters"])
            .unwrap();
    let wl = mk8s_testenv::client_from_kubeconfig_yaml(&good).await.unwrap();
    Api::<Namespace>::all(wl.clone())
        .list(&Default::default())
        .await
        .unwrap();
    let other: CertKeyPem = generate_ca("other", CaKeyFormat::EcdsaP256).unwrap();
    let bad =
        mk8s_testenv::certs::kubeconfig_with_client_cert(&server, &ca.cert_pem, &other, "admin", &["system:masters"])
            .unwrap();
    let bad = mk8s_testenv::client_from_kubeconfig_yaml(&bad).await.unwrap();
    assert!(
        Api::<Namespace>::all(bad).list(&Default::default()).await.is_err(),
        "a client certificate of another CA must not authenticate"
    );

    // Its Node: version of the track, MicroK8s labels, the accepts-joins mark, no providerID.
    let n = node(&wl, "mk-cp-0").await;
    assert_eq!(kubelet_version(&n), "v1.33.99");
    let labels = n.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["node.kubernetes.io/microk8s-controlplane"],
        "microk8s-controlplane"
    );
    assert_eq!(labels["microk8s.cluster.x-k8s.io/accepts-joins"], "true");
    assert_eq!(labels["tier"], "gold", "extraKubeletArgs' --node-labels reach the Node");
    assert!(n.spec.as_ref().and_then(|s| s.provider_id.clone()).is_none());
    let addr = &n.status.as_ref().unwrap().addresses.as_ref().unwrap()[0];
    assert_eq!(
        (addr.type_.as_str(), addr.address.as_str()),
        ("InternalIP", init_ip.as_str())
    );

    // 2. A control plane joiner, a worker, and three joins that must fail: a wrong token, a
    // wrong port (remap mismatch: the init node's agent is on 30000) and an address that is
    // no node. All boot at once.
    let join = |addrs: Vec<String>| Role::JoinControlPlane { join_addresses: addrs };
    let worker = |addrs: Vec<String>| Role::Worker { join_addresses: addrs };
    machine(&env, "mk", "mk-cp-1", join(vec![init_ip.clone()]), &remap(true), &ep).await;
    machine(
        &env,
        "mk",
        "mk-worker-0",
        worker(vec![init_ip.clone()]),
        &remap(true),
        &ep,
    )
    .await;
    machine_with(
        &env,
        "mk",
        "mk-bad-token",
        join(vec![init_ip.clone()]),
        &remap(true),
        &ep,
        "zyxwvutsrqponmlkjihgfedcba543210",
        "v1.33.4",
    )
    .await;
    machine(
        &env,
        "mk",
        "mk-bad-port",
        worker(vec![init_ip.clone()]),
        &remap(false),
        &ep,
    )
    .await;
    machine(
        &env,
        "mk",
        "mk-bad-addr",
        worker(vec!["127.0.0.9".into()]),
        &remap(true),
        &ep,
    )
    .await;

    let cp1 = expect_success(&env, "mk-cp-1").await;
    let cp1_ip = ip_of(&cp1);
    let w = expect_success(&env, "mk-worker-0").await;
    let bad_token = expect_failure(&env, "mk-bad-token", "40-join.sh").await;
    expect_failure(&env, "mk-bad-port", "40-join.sh").await;
    expect_failure(&env, "mk-bad-addr", "40-join.sh").await;
    assert!(
        log(&env, "mk-bad-token").contains("Invalid token"),
        "{}",
        log(&env, "mk-bad-token")
    );
    assert!(
        log(&env, "mk-bad-port").contains("Connection failed"),
        "{}",
        log(&env, "mk-bad-port")
    );
    assert!(
        log(&env, "mk-bad-addr").contains("Connection failed"),
        "{}",
        log(&env, "mk-bad-addr")
    );
    assert_eq!(
        bad_token
            .status
            .as_ref()
            .unwrap()
            .node
            .as_ref()
            .unwrap()
            .failed_step
            .as_deref()
            .map(|s| s.starts_with("40-join.sh")),
        Some(true)
    );

    let c = env.sim.cluster(&env.ns, "mk").unwrap();
    assert_eq!(
        c.member_addresses(),
        vec![format!("{init_ip}:2379"), format!("{cp1_ip}:2379")]
    );
    assert!(c.state.history.iter().any(|e| e.event == "WorkerJoined"));
    assert!(
        c.state
            .history
            .iter()
            .any(|e| e.event == "JoinRefused" && e.message.contains("Invalid token"))
    );
    let wn = node(&wl, "mk-worker-0").await;
    let wl_labels = wn.metadata.labels.clone().unwrap();
    assert_eq!(wl_labels["node.kubernetes.io/microk8s-worker"], "microk8s-worker");
    assert!(!wl_labels.contains_key("node.kubernetes.io/microk8s-controlplane"));
    let cn = node(&wl, "mk-cp-1").await;
    assert_eq!(
        cn.metadata.labels.unwrap()["node.kubernetes.io/microk8s-controlplane"],
        "microk8s-controlplane"
    );
    // The token is registered on each control plane node (the joiner ran add-node too).
    assert!(
        env.sim
            .node(&env.ns, "mk-cp-1")
            .unwrap()
            .calls_of("microk8s")
            .iter()
            .any(|c| c[1] == "add-node")
    );
    let _ = w;

    // 3. Node actions through the simulated kubelet.
    let sys: Api<Namespace> = Api::all(wl.clone());
    sys.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "microk8s-capi-system"}})).unwrap(),
    )
    .await
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "capi-auth-token", "namespace": "microk8s-capi-system"},
        "stringData": {"token": AUTH},
    }))
    .unwrap();
    Api::<Secret>::namespaced(wl.clone(), "microk8s-capi-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let agent = format!("{init_ip}:30000");
    // Wrong token: 401, curl -f fails, the pod fails.
    let wrong = action_pod(
        "remove-wrong",
        "mk-cp-0",
        &REMOVE_SCRIPT.replace("$CAPI_AUTH_TOKEN", "nope"),
        &[&format!("{cp1_ip}:2379"), &agent],
        false,
    );
    let p = run_pod(&wl, wrong).await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Failed"));
    assert_eq!(exit_code(&p), 22, "curl -f on a 401");
    assert_eq!(env.sim.cluster(&env.ns, "mk").unwrap().state.members.len(), 2);
    // Right token: the member goes.
    let right = action_pod(
        "remove-cp1",
        "mk-cp-0",
        REMOVE_SCRIPT,
        &[&format!("{cp1_ip}:2379"), &agent],
        false,
    );
    let p = run_pod(&wl, right).await;
    assert_eq!(
        p.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{:?}",
        p.status
    );
    assert_eq!(
        env.sim.cluster(&env.ns, "mk").unwrap().member_addresses(),
        vec![format!("{init_ip}:2379")]
    );
    // Not a member any more: the agent fails (500), as MicroK8s' does.
    let again = action_pod(
        "remove-again",
        "mk-cp-0",
        REMOVE_SCRIPT,
        &[&format!("{cp1_ip}:2379"), &agent],
        false,
    );
    assert_eq!(
        run_pod(&wl, again).await.status.unwrap().phase.as_deref(),
        Some("Failed")
    );

    // In-place refresh of the worker: the Node's version follows the track.
    let refresh = action_pod("refresh-w", "mk-worker-0", REFRESH_SCRIPT, &["1.34/stable"], true);
    let p = run_pod(&wl, refresh).await;
    assert_eq!(
        p.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{:?}",
        p.status
    );
    wait_for(TIMEOUT, "the worker's Node at v1.34.99", || {
        let wl = wl.clone();
        async move { kubelet_version(&node(&wl, "mk-worker-0").await) == "v1.34.99" }
    })
    .await;
    // A strict → classic switch without classic, an unknown risk: refused like snapd.
    let p = run_pod(
        &wl,
        action_pod("refresh-bad", "mk-worker-0", REFRESH_SCRIPT, &["1.34/unstable"], true),
    )
    .await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Failed"));

    // 4. Deleting the init machine leaves the cluster's API server up; its member is still
    // a member (nobody removed it), so the history shows it stopped — and quorum lost
    // (one member of one is down).
    Api::<SimMachine>::namespaced(env.client.clone(), &env.ns)
        .delete("mk-cp-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(TIMEOUT, "mk-cp-0 to be gone", || {
        let api: Api<SimMachine> = Api::namespaced(env.client.clone(), &env.ns);
        async move { api.get_opt("mk-cp-0").await.unwrap().is_none() }
    })
    .await;
    Api::<Namespace>::all(wl.clone())
        .list(&Default::default())
        .await
        .unwrap();
    let c = env.sim.cluster(&env.ns, "mk").unwrap();
    assert!(c.state.history.iter().any(|e| e.event == "MemberStopped"));
    assert!(!c.quorum_never_lost());
    let lost = node(&wl, "mk-cp-0").await;
    assert!(
        lost.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "Unknown")
    );
    // The status of the SimCluster carries members and history.
    let sc = Api::<SimCluster>::namespaced(env.client.clone(), &env.ns)
        .get("mk")
        .await
        .unwrap();
    let dq = sc.status.unwrap().dqlite.unwrap();
    assert_eq!(dq.members, vec![format!("{init_ip}:2379")]);
    assert!(dq.history.iter().any(|e| e.event == "Init"));

    // The debug endpoint serves the same.
    let debug = env.sim.debug_address().unwrap();
    let body = http_get(debug, &format!("/debug/clusters/{}/mk", env.ns)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["members"][0]["address"], format!("{init_ip}:2379"));
    assert!(v["history"].as_array().unwrap().len() >= 4);

    // 5. Deleting the SimCluster stops everything.
    let pids = env.sim.process_ids();
    assert!(pids.len() >= 3, "{pids:?}");
    Api::<SimCluster>::namespaced(env.client.clone(), &env.ns)
        .delete("mk", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(TIMEOUT, "every process of the cluster to be gone", || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !pid_alive(*p)) }
    })
    .await;
    wait_for(TIMEOUT, "the simulated cluster to be gone", || {
        let gone = env.sim.cluster(&env.ns, "mk").is_none();
        async move { gone }
    })
    .await;
    assert!(Api::<Namespace>::all(wl).list(&Default::default()).await.is_err());
    eprintln!(
        "init machine bootstrapped in {init_boot:?}; whole test {:?}",
        t0.elapsed()
    );
    env.sim.shutdown().await;
    let _ = env.plane;
    if std::env::var("MK8S_SIM_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&env.state_dir);
    }
}

fn rss_mib(pid: u32) -> f64 {
    mk8s_sim::workload::rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

/// Measures the memory of simulated clusters (one init node each) with a shared etcd and
/// with one etcd per cluster; prints the numbers documented in the crate docs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement: cargo test -p mk8s-sim --test t1_sim -- --ignored --nocapture memory_per_cluster"]
async fn memory_per_cluster() {
    const N: usize = 3;
    for (label, mode) in [
        ("shared etcd", EtcdMode::Shared(None)),
        ("etcd per cluster", EtcdMode::PerCluster),
    ] {
        let Some(env) = env("sim-memory", |c| c.etcd_mode = mode.clone()).await else {
            return;
        };
        let mut etcd_after_first = 0.0;
        let mut boots = vec![];
        for i in 0..N {
            let name = format!("mem-{i}");
            let ep = cluster(&env, &name).await;
            let ca = generate_ca("10.152.183.1", CaKeyFormat::RsaPkcs1).unwrap();
            let t = Instant::now();
            machine(
                &env,
                &name,
                &format!("{name}-cp"),
                Role::Init {
                    ca: CaFiles {
                        cert_pem: ca.cert_pem.clone(),
                        key_pem: ca.key_pem.clone(),
                    },
                },
                &remap(true),
                &ep,
            )
            .await;
            expect_success(&env, &format!("{name}-cp")).await;
            boots.push(t.elapsed());
            if i == 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                etcd_after_first = env.sim.shared_etcd_pid().map_or(0.0, rss_mib);
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut api = vec![];
        let mut own_etcd = vec![];
        for i in 0..N {
            let c = env.sim.cluster(&env.ns, &format!("mem-{i}")).unwrap();
            api.push(rss_mib(c.state.api_pids[0]));
            if let Some(p) = c.state.api_pids.get(1) {
                own_etcd.push(rss_mib(*p));
            }
        }
        let node = env.sim.node(&env.ns, "mem-0-cp").unwrap();
        let holder = node.state.ns_pid.map_or(0.0, rss_mib);
        let shared = env.sim.shared_etcd_pid().map_or(0.0, rss_mib);
        eprintln!(
            "MEMORY {label}: kube-apiserver RSS per cluster {api:.0?} MiB; own etcd per cluster {own_etcd:.0?} MiB; \
             shared etcd {shared:.0} MiB after {N} clusters ({etcd_after_first:.0} MiB after 1: +{:.1} MiB per cluster); \
             node namespace holder {holder:.1} MiB; init node bootstrap times {boots:.1?}",
            (shared - etcd_after_first) / (N as f64 - 1.0)
        );
        env.sim.shutdown().await;
        let _ = std::fs::remove_dir_all(&env.state_dir);
    }
}

/// The binary: runs as a process against a kubeconfig, serves /healthz, provisions a
/// SimCluster, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_runs_as_a_process_and_stops_on_sigterm() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    plane.install_capi_crds().await.unwrap();
    let crds: Vec<_> = mk8s_sim::crds().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let ns = plane.namespace("sim-binary").await.unwrap();
    let client = plane.client().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = std::env::temp_dir().join(format!("mk8s-sim-t1-bin-{}-{ns}", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mk8s-sim"))
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .args([
            "--namespace",
            &ns,
            "--etcd-url",
            plane.etcd_url(),
            "--sleep-scale",
            "0.02",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--debug-address")
        .arg(format!("127.0.0.1:{port}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(TIMEOUT, "mk8s-sim /healthz", || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => http_get(addr, "/healthz").await == "ok",
            Err(_) => false,
        }
    })
    .await;
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "px", "namespace": ns},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimCluster", "name": "px"}},
    }))
    .unwrap();
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &CoreVersion::V1Beta2.cluster());
    let c = clusters.create(&PostParams::default(), &obj).await.unwrap();
    let sc = SimCluster {
        metadata: meta("px", "px", Some(("Cluster", &c))),
        spec: SimClusterSpec::default(),
        status: None,
    };
    let scs: Api<SimCluster> = Api::namespaced(client.clone(), &ns);
    scs.create(&PostParams::default(), &sc).await.unwrap();
    wait_for(TIMEOUT, "the SimCluster to be provisioned by the binary", || {
        let scs = scs.clone();
        async move {
            scs.get("px")
                .await
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|s| s.ready && s.initialization.and_then(|i| i.provisioned) == Some(true))
        }
    })
    .await;
    let pid = child.id().unwrap() as i32;
    mk8s_sim::node::kill(pid, libc_sigterm());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("mk8s-sim did not stop within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&state);
}

fn libc_sigterm() -> i32 {
    15
}
