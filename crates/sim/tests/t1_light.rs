//! T1: the simulator's light mode ([`mk8s_sim::light::LightBackend`]) against a real shared
//! kube-apiserver: each cluster's endpoint serves with its own CA, refuses other CAs' client
//! certificates, and shows only its own Nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use mk8s_sim::EtcdMode;
use mk8s_sim::light::{CLUSTER_LABEL, LightBackend};
use mk8s_sim::workload::WorkloadBackend as _;
use mk8s_testenv::{CaKeyFormat, generate_ca};

fn node(name: &str) -> Node {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {}})).unwrap()
}

fn free_endpoint(octet: u8) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(127, 231, octet, 1 + (std::process::id() % 200) as u8);
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddrV4::new(ip, port)
}

async fn names(api: &Api<Node>) -> Vec<String> {
    let mut v: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_share_one_apiserver_but_see_only_their_nodes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    let bins = plane.binaries();
    let backend = LightBackend::new(
        bins.kube_apiserver.clone(),
        bins.etcd.clone(),
        EtcdMode::Shared(Some(plane.etcd_url().to_string())),
    );
    let ca_a = generate_ca("10.152.183.1", CaKeyFormat::RsaPkcs1).unwrap();
    let ca_b = generate_ca("10.152.183.1", CaKeyFormat::RsaPkcs1).unwrap();
    let (ep_a, ep_b) = (free_endpoint(1), free_endpoint(2));
    let api_a = backend.start(ep_a, &ca_a.cert_pem, &ca_a.key_pem).await.unwrap();
    let api_b = backend.start(ep_b, &ca_b.cert_pem, &ca_b.key_pem).await.unwrap();
    assert_eq!(api_a.url(), format!("https://{ep_a}"));
    assert_eq!(
        backend.pids().len(),
        1,
        "one shared apiserver (the etcd is the plane's)"
    );
    let a = mk8s_testenv::client_from_kubeconfig_yaml(&api_a.admin_kubeconfig().unwrap())
        .await
        .unwrap();
    let b = mk8s_testenv::client_from_kubeconfig_yaml(&api_b.admin_kubeconfig().unwrap())
        .await
        .unwrap();
    let (nodes_a, nodes_b): (Api<Node>, Api<Node>) = (Api::all(a.clone()), Api::all(b.clone()));

    let created = nodes_a
        .create(&PostParams::default(), &node("light-a-0"))
        .await
        .unwrap();
    assert!(created.metadata.labels.unwrap().contains_key(CLUSTER_LABEL));
    nodes_b
        .create(&PostParams::default(), &node("light-b-0"))
        .await
        .unwrap();
    nodes_b
        .create(&PostParams::default(), &node("light-b-1"))
        .await
        .unwrap();
    let clash = nodes_b.create(&PostParams::default(), &node("light-a-0")).await;
    assert!(matches!(&clash, Err(kube::Error::Api(s)) if s.code == 409), "{clash:?}");

    assert_eq!(names(&nodes_a).await, ["light-a-0"]);
    assert_eq!(names(&nodes_b).await, ["light-b-0", "light-b-1"]);
    assert!(nodes_a.get_opt("light-b-0").await.unwrap().is_none());
    assert!(nodes_b.get_opt("light-a-0").await.unwrap().is_none());
    // A label selector of the caller's own is combined with the cluster's.
    let lp = ListParams::default().labels("kubernetes.io/hostname!=x");
    assert_eq!(nodes_a.list(&lp).await.unwrap().items.len(), 1);
    // Patches by name reach the cluster's own Node only.
    let patch = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
    nodes_a
        .patch("light-a-0", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(
        nodes_a
            .patch("light-b-0", &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .is_err()
    );

    // Health is public, the rest needs a certificate signed by the cluster CA.
    let anon = mk8s_testenv::client_from_kubeconfig_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{ep_a}\n    \
         insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
         current-context: c\nusers:\n- name: u\n  user: {{}}\n"
    ))
    .await
    .unwrap();
    let readyz = anon
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(readyz.trim(), "ok");
    let denied = Api::<Node>::all(anon).list(&ListParams::default()).await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 401),
        "{denied:?}"
    );
    let wrong_ca = mk8s_testenv::certs::kubeconfig_with_client_cert(
        &format!("https://{ep_a}"),
        &ca_a.cert_pem,
        &ca_b,
        "admin",
        &["system:masters"],
    )
    .unwrap();
    let wrong = mk8s_testenv::client_from_kubeconfig_yaml(&wrong_ca).await.unwrap();
    assert!(
        Api::<Node>::all(wrong).list(&ListParams::default()).await.is_err(),
        "a client certificate of another CA is refused"
    );

    // A watch sees its cluster's Nodes only.
    use futures::StreamExt as _;
    let mut events = kube::runtime::watcher(nodes_a.clone(), Default::default()).boxed();
    let mut seen = vec![];
    while let Some(Ok(ev)) = events.next().await {
        match ev {
            kube::runtime::watcher::Event::InitApply(n) => seen.push(n.metadata.name.unwrap_or_default()),
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["light-a-0"]);

    // Dropping a cluster's API stops its endpoint.
    drop(api_a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(ep_a).await.is_err());
    assert_eq!(names(&nodes_b).await, ["light-b-0", "light-b-1"]);
    drop(api_b);
    backend.stop().await;
}
