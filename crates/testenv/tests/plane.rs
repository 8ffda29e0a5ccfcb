//! T1 tests of the harness itself, against the real control plane it starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use mk8s_testenv::{CaKeyFormat, generate_ca, shared, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

fn cm(name: &str, owner: Option<OwnerReference>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn owner_ref(owner: &ConfigMap, block: Option<bool>) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        block_owner_deletion: block,
        controller: None,
    }
}

fn api_error(r: Result<ConfigMap, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The server URL seen by the first of the two "shares" tests.
static SEEN_URL: Mutex<Option<String>> = Mutex::new(None);

fn check_same_plane(url: String) {
    let mut seen = SEEN_URL.lock().unwrap();
    match &*seen {
        Some(first) => assert_eq!(first, &url, "two tests got different planes"),
        None => *seen = Some(url),
    }
}

#[tokio::test]
async fn two_tests_share_one_plane_a() {
    let Some(plane) = shared().await else { return };
    check_same_plane(plane.server_url());
}

#[tokio::test]
async fn two_tests_share_one_plane_b() {
    let Some(plane) = shared().await else { return };
    check_same_plane(plane.server_url());
    // Also from a different runtime on a different thread, and the blocking entry point.
    let other = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let p = shared().await.unwrap();
                // A client made in this runtime works in this runtime.
                let v = p.client().await.apiserver_version().await.unwrap();
                (p as *const _ as usize, v.git_version)
            })
    })
    .join()
    .unwrap();
    assert_eq!(other.0, plane as *const _ as usize);
    assert!(other.1.starts_with('v'), "{}", other.1);
    let blocking = tokio::task::spawn_blocking(mk8s_testenv::shared_blocking)
        .await
        .unwrap()
        .unwrap();
    assert!(std::ptr::eq(blocking, plane));
}

#[tokio::test]
async fn plane_starts_and_namespaces_come_and_go() {
    let Some(plane) = shared().await else { return };
    assert!(plane.kubeconfig_path().is_file());
    assert!(plane.kubeconfig_yaml().contains(&plane.server_url()));
    let client = plane.client().await;
    let ns1 = plane.namespace("Plane_Starts").await.unwrap();
    let ns2 = plane.namespace("Plane_Starts").await.unwrap();
    assert_ne!(ns1, ns2);
    assert!(ns1.starts_with("plane-starts-"), "{ns1}");

    // serviceaccount-controller: every namespace gets its `default` ServiceAccount.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns1);
    let t = std::time::Instant::now();
    wait_for(TIMEOUT, "the default ServiceAccount", || async {
        sas.get_opt("default").await.unwrap().is_some()
    })
    .await;

    // namespace-controller: a deleted namespace is emptied and goes away.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns2);
    cms.create(&PostParams::default(), &cm("x", None)).await.unwrap();
    eprintln!("default ServiceAccount after {:?}", t.elapsed());
    let nss: Api<Namespace> = Api::all(client.clone());
    let t = std::time::Instant::now();
    nss.delete(&ns2, &DeleteParams::default()).await.unwrap();
    wait_for(TIMEOUT, "the namespace to be deleted", || async {
        nss.get_opt(&ns2).await.unwrap().is_none()
    })
    .await;
    eprintln!("namespace deleted after {:?}", t.elapsed());
}

#[tokio::test]
async fn capi_crds_install_and_a_v1beta2_cluster_round_trips() {
    let Some(plane) = shared().await else { return };
    // Twice, concurrently: installed once.
    let (a, b) = tokio::join!(plane.install_capi_crds(), plane.install_capi_crds());
    a.unwrap();
    b.unwrap();
    plane.install_capi_crds().await.unwrap();

    let ns = plane.namespace("capi").await.unwrap();
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster");
    let ar = ApiResource::from_gvk(&gvk);
    let clusters: Api<DynamicObject> = Api::namespaced_with(plane.client().await, &ns, &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": ns},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["10.1.0.0/16"]}},
            "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 6443}
        }
    }))
    .unwrap();
    clusters.create(&PostParams::default(), &obj).await.unwrap();
    let got = clusters.get("c1").await.unwrap();
    assert_eq!(
        got.data["spec"]["controlPlaneEndpoint"]["port"],
        serde_json::json!(6443)
    );
    assert_eq!(
        got.data["spec"]["clusterNetwork"]["pods"]["cidrBlocks"][0],
        "10.1.0.0/16"
    );
    // The big CRD (clusterclasses, > 256 KiB) was applied server-side and is served too.
    let cc = ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "ClusterClass"));
    let ccs: Api<DynamicObject> = Api::namespaced_with(plane.client().await, &ns, &cc);
    assert!(ccs.list(&Default::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn garbage_collector_deletes_an_owned_configmap() {
    let Some(plane) = shared().await else { return };
    let ns = plane.namespace("gc").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(plane.client().await, &ns);
    let owner = cms.create(&PostParams::default(), &cm("owner", None)).await.unwrap();
    cms.create(
        &PostParams::default(),
        &cm("dependent", Some(owner_ref(&owner, Some(true)))),
    )
    .await
    .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for(TIMEOUT, "the garbage collector to delete `dependent`", || async {
        cms.get_opt("dependent").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn owner_references_permission_enforcement_is_active() {
    let Some(plane) = shared().await else { return };
    let ns = plane.namespace("orpe").await.unwrap();
    let admin = plane.client().await;
    let owner = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &cm("owner", None))
        .await
        .unwrap();

    // `alice` may create and delete ConfigMaps, but not update `configmaps/finalizers`.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("cm-writer".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into(), "create".into(), "delete".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = |name: &str, user: &str| RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "cm-writer".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    };
    let rbs = Api::<RoleBinding>::namespaced(admin.clone(), &ns);
    rbs.create(&PostParams::default(), &binding("alice", "alice"))
        .await
        .unwrap();

    let alice = plane.client_for_user("alice", &["testers"]).await;
    let as_alice = Api::<ConfigMap>::namespaced(alice, &ns);
    // RBAC bindings are seen by the authorizer's informer shortly after creation.
    wait_for(TIMEOUT, "alice's Role to be effective", || async {
        as_alice.list(&Default::default()).await.is_ok()
    })
    .await;

    // blockOwnerDeletion needs `update` on the owner's finalizers: rejected by the plugin.
    let (code, message) = api_error(
        as_alice
            .create(
                &PostParams::default(),
                &cm("blocking", Some(owner_ref(&owner, Some(true)))),
            )
            .await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("cannot set blockOwnerDeletion"), "{message}");
    // Without it, the same user may set the ownerRef (RBAC allows the create).
    as_alice
        .create(&PostParams::default(), &cm("plain", Some(owner_ref(&owner, None))))
        .await
        .unwrap();
    // And the admin (system:masters) may set blockOwnerDeletion.
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &cm("by-admin", Some(owner_ref(&owner, Some(true)))),
        )
        .await
        .unwrap();

    // A user who may update but not delete an object cannot add ownerRefs to it (creating
    // with ownerRefs is allowed: whoever creates could also have not created).
    let create_only = Role {
        metadata: ObjectMeta {
            name: Some("cm-creator".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into(), "create".into(), "update".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &create_only)
        .await
        .unwrap();
    let mut b = binding("bob", "bob");
    b.role_ref.name = "cm-creator".into();
    rbs.create(&PostParams::default(), &b).await.unwrap();
    let as_bob = Api::<ConfigMap>::namespaced(plane.client_for_user("bob", &[]).await, &ns);
    wait_for(TIMEOUT, "bob's Role to be effective", || async {
        as_bob.list(&Default::default()).await.is_ok()
    })
    .await;
    as_bob.create(&PostParams::default(), &cm("bobs", None)).await.unwrap();
    let mut bobs = as_bob.get("bobs").await.unwrap();
    bobs.metadata.owner_references = Some(vec![owner_ref(&owner, None)]);
    let (code, message) = api_error(as_bob.replace("bobs", &PostParams::default(), &bobs).await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("cannot set an ownerRef on a resource you can't delete"),
        "{message}"
    );
}

#[tokio::test]
async fn service_account_clients_use_bound_tokens() {
    let Some(plane) = shared().await else { return };
    let ns = plane.namespace("sa").await.unwrap();
    let client = plane.client_for_service_account(&ns, "manager").await.unwrap();
    // Authenticated (as the ServiceAccount) but not authorized.
    let err = Api::<ConfigMap>::namespaced(client, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message.contains(&format!("system:serviceaccount:{ns}:manager")),
                "{s:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn workload_apiserver_trusts_only_its_own_rsa_ca() {
    let Some(plane) = shared().await else { return };
    let ca = generate_ca("workload-ca", CaKeyFormat::RsaPkcs1).unwrap();
    assert!(ca.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let t = std::time::Instant::now();
    let wl = plane.start_workload_apiserver(&ca.cert_pem, &ca.key_pem).unwrap();
    eprintln!(
        "workload apiserver ready in {:.2}s at {}",
        t.elapsed().as_secs_f64(),
        wl.url
    );
    assert_ne!(wl.url, plane.server_url());

    // Admin cert signed by the workload CA; the server cert verifies against that CA.
    let client = wl.client().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    // Its own store: namespaces of the management plane are not there.
    let mgmt_ns = plane.namespace("not-in-workload").await.unwrap();
    assert!(nss.get_opt(&mgmt_ns).await.unwrap().is_none());

    // A client certificate signed by another CA is rejected (401).
    let other = generate_ca("other-ca", CaKeyFormat::EcdsaP256).unwrap();
    let foreign =
        mk8s_testenv::certs::kubeconfig_with_client_cert(&wl.url, &ca.cert_pem, &other, "admin", &["system:masters"])
            .unwrap();
    let foreign = mk8s_testenv::client_from_kubeconfig_yaml(&foreign).await.unwrap();
    match Api::<Namespace>::all(foreign).list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }

    // The plane's own admin certificate is not trusted either.
    let mgmt_admin_on_wl = plane.kubeconfig_yaml().replace(&plane.server_url(), &wl.url);
    // (the plane CA does not verify the workload's serving cert, so swap in the workload CA)
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mgmt_admin_on_wl = mgmt_admin_on_wl.replace(&b64(plane.ca_cert_pem()), &b64(&ca.cert_pem));
    let c = mk8s_testenv::client_from_kubeconfig_yaml(&mgmt_admin_on_wl)
        .await
        .unwrap();
    match Api::<Namespace>::all(c).list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }

    // Dropping it stops the process.
    let pid = wl.pid();
    let port = wl.port;
    drop(wl);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty(), "process {pid} still there: {state}");
}

#[tokio::test]
async fn workload_apiservers_start_without_blocking_and_on_other_loopback_addresses() {
    let Some(plane) = shared().await else { return };
    let ca = generate_ca("wl2", CaKeyFormat::EcdsaP256).unwrap();
    let mut opts = mk8s_testenv::WorkloadApiServerOptions::new(&ca.cert_pem, &ca.key_pem);
    opts.bind_address = "127.0.0.7".parse().unwrap();
    let wl = plane.start_workload_apiserver_async(opts).await.unwrap();
    assert!(wl.url.starts_with("https://127.0.0.7:"), "{}", wl.url);
    let v = wl.client().await.apiserver_version().await.unwrap();
    assert!(v.git_version.starts_with('v'));
}

#[tokio::test]
async fn garbage_collector_handles_owners_of_freshly_installed_crds() {
    let Some(plane) = shared().await else { return };
    plane.install_capi_crds().await.unwrap();
    let ns = plane.namespace("gc-crd").await.unwrap();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"));
    let clusters: Api<DynamicObject> = Api::namespaced_with(plane.client().await, &ns, &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": ns},
        "spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": 6443}}
    }))
    .unwrap();
    let c = clusters.create(&PostParams::default(), &obj).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(plane.client().await, &ns);
    let owner = OwnerReference {
        api_version: "cluster.x-k8s.io/v1beta2".into(),
        kind: "Cluster".into(),
        name: "c1".into(),
        uid: c.metadata.uid.clone().unwrap(),
        block_owner_deletion: Some(true),
        controller: Some(true),
    };
    cms.create(&PostParams::default(), &cm("c1-kubeconfig", Some(owner)))
        .await
        .unwrap();
    let t = std::time::Instant::now();
    clusters.delete("c1", &DeleteParams::default()).await.unwrap();
    wait_for(
        TIMEOUT,
        "the ConfigMap owned by the Cluster to be collected",
        || async { cms.get_opt("c1-kubeconfig").await.unwrap().is_none() },
    )
    .await;
    eprintln!("collected after {:.2}s", t.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_private_plane_is_torn_down_on_drop() {
    if shared().await.is_none() {
        return;
    }
    let plane = tokio::task::spawn_blocking(mk8s_testenv::Plane::start)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(plane.server_url(), shared().await.unwrap().server_url());
    let ns = plane.namespace("private").await.unwrap();
    assert!(ns.starts_with("private-"));
    let dir = plane.dir().to_path_buf();
    let port = plane.api_port();
    assert!(dir.join("admin.kubeconfig").is_file());
    drop(plane);
    assert!(!dir.exists() || std::env::var("TESTENV_KEEP").is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
