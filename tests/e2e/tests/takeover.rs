//! Takeover (`make takeover`): a running 3 + 2 cluster left by Canonical's v0.6.11 providers
//! is taken over by ours — the drop-in promise.
//!
//! **The starting state is synthetic.** Canonical's providers cannot be built here (the Go
//! module proxy refuses `github.com/canonical/cluster-api-{bootstrap,control-plane}-provider-microk8s`,
//! 403 for every version), and we do not imitate their controllers. Instead the cluster is
//! provisioned with ours, our managers are stopped, and every object is rewritten into exactly
//! what Canonical's providers leave (`../shared/reference/cacpm.md` §2.5, §2.10–2.12,
//! `cabpm.md` §1.3, §2.7–2.8): Machines, MicroK8sConfigs and infrastructure machines without
//! our annotations and labels; Canonical's status shapes; the cluster Secrets without labels,
//! owners or type (`-capi-auth-token` typed but unlabelled); a `<cluster>-kubeconfig` as
//! Canonical writes it (Opaque, no owner, cluster-name label, one user `admin`, a 10-year RSA
//! certificate with serial 2019 signed by the cluster CA); the init lock Canonical leaves
//! behind; Canonical's leader-election Leases; the CRDs with Canonical's contract label
//! (`cluster.x-k8s.io/v1beta1: v1beta1`) and the MachineDeployment annotation CAPI v1.14 needs
//! with Canonical's control plane. Managed fields are reset to one `manager` (controller-runtime's
//! default field manager) as Canonical's writes leave them.
//!
//! Cut-over, as the README documents: Canonical's managers deleted (here: ours
//! stopped), our CRDs installed (their contract label replaces Canonical's), our managers
//! started. Asserted (`mk8s_e2e::takeover`, shared with `mk8s-bench takeover`, which starts
//! from Canonical's running managers): no new Machines, no regenerated bootstrap data (data
//! Secret resourceVersions unchanged), the cluster CA, join token and auth token Secrets
//! unchanged, no second init (simulator history), the kubeconfig replaced by a compliant one
//! under the ownership rule, the Cluster `Available` throughout; then a scale-up and a rolling
//! upgrade with ours succeed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use mk8s_api::capi::MachineExt;
use mk8s_e2e::cluster::{self, Expect, Shape};
use mk8s_e2e::takeover::{self, AvailabilityWatch};
use mk8s_e2e::{Manager, ManagerKind};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(420);
const NAME: &str = "tk";
const CP: &str = "controlplane.cluster.x-k8s.io/v1beta1";
const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io/v1beta1";
const CAPI: &str = "cluster.x-k8s.io/v1beta2";
const SIM: &str = "infrastructure.cluster.x-k8s.io/v1alpha1";
/// controller-runtime's default field manager (the binary name, `/manager` in their image).
const CANONICAL_MANAGER: &str = "manager";

// Our annotations and labels, which Canonical's providers never write.
const CREATED_BY: &str = "microk8s.controlplane.cluster.x-k8s.io/created-by";
const IN_PLACE: &str = "microk8s.controlplane.cluster.x-k8s.io/in-place-upgrade";
const MEMBER_REMOVAL: &str = "microk8s.controlplane.cluster.x-k8s.io/member-removal";
const HOOK: &str = "pre-terminate.delete.hook.machine.cluster.x-k8s.io/microk8s-member-removal";
const ROLE: &str = "bootstrap.cluster.x-k8s.io/microk8s-role";
const JOIN_ADDRESSES: &str = "bootstrap.cluster.x-k8s.io/microk8s-join-addresses";
const CONTROL_PLANE_NAME: &str = "cluster.x-k8s.io/control-plane-name";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn pp() -> PatchParams {
    PatchParams {
        field_manager: Some(CANONICAL_MANAGER.into()),
        ..Default::default()
    }
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(CANONICAL_MANAGER.into()),
        ..Default::default()
    }
}

/// Clears an object's managed fields (the next write's manager then owns what it writes).
async fn clear_managed_fields(api: &Api<DynamicObject>, name: &str) {
    api.patch(name, &pp(), &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})))
        .await
        .unwrap_or_else(|e| panic!("clearing managedFields of {name}: {e}"));
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (DER): its last element, an
/// OCTET STRING.
fn pkcs8_to_pkcs1(der: &[u8]) -> Vec<u8> {
    fn header(d: &[u8]) -> (usize, usize) {
        // (header length, content length)
        let l = d[1];
        if l < 0x80 {
            (2, l as usize)
        } else {
            let n = (l & 0x7f) as usize;
            let mut len = 0usize;
            for b in &d[2..2 + n] {
                len = (len << 8) | *b as usize;
            }
            (2 + n, len)
        }
    }
    let (h, _) = header(der);
    let mut rest = &der[h..];
    // version INTEGER, algorithm SEQUENCE
    for _ in 0..2 {
        let (h, l) = header(rest);
        rest = &rest[h + l..];
    }
    assert_eq!(rest[0], 0x04, "OCTET STRING");
    let (h, l) = header(rest);
    rest[h..h + l].to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The kubeconfig Canonical's CACPM writes (`kubeconfigForCluster`): a new RSA-2048 key, a
/// certificate with serial 2019, `O=[admin, system:masters], C=GB, ST="", L=Canonical,
/// STREET=Canonical, CN=admin`, SubjectKeyId {1,2,3,4,6}, client+server auth, valid ten
/// years, signed by the cluster CA; its YAML template.
fn canonical_kubeconfig(ca_cert: &str, ca_key: &str, server: &str) -> String {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod, KeyPair,
        KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize, SerialNumber, date_time_ymd,
    };
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key).unwrap()).unwrap();
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "GB");
    dn.push(DnType::StateOrProvinceName, "");
    dn.push(DnType::LocalityName, "Canonical");
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 9]), "Canonical");
    dn.push(DnType::OrganizationName, "admin");
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), "system:masters");
    dn.push(DnType::CommonName, "admin");
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from_slice(&[0x07, 0xe3]));
    p.key_identifier_method = KeyIdMethod::PreSpecified(vec![1, 2, 3, 4, 6]);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    let today = k8s_openapi::jiff::Timestamp::now()
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .date();
    let (y, m, d) = (
        i32::from(today.year()),
        u8::try_from(today.month()).unwrap(),
        u8::try_from(today.day()).unwrap().min(28),
    );
    p.not_before = date_time_ymd(y, m, d);
    p.not_after = date_time_ymd(y + 10, m, d);
    let cert = p.signed_by(&key, &issuer).unwrap();
    let key_pem = pem("RSA PRIVATE KEY", &pkcs8_to_pkcs1(key.serialized_der()));
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \
         microk8s-cluster\ncontexts:\n- context:\n    cluster: microk8s-cluster\n    user: admin\n  name: \
         microk8s\ncurrent-context: microk8s\nkind: Config\npreferences: {{}}\nusers:\n- name: admin\n  user:\n    \
         client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_cert.as_bytes()),
        b64(cert.pem().as_bytes()),
        b64(key_pem.as_bytes())
    )
}

fn v1beta1_condition(type_: &str, now: &str) -> Value {
    // Canonical's conditions are CAPI v1beta1 conditions: a True one has no reason or
    // message (its `severity` is not in our schema and would be pruned, so it is left out).
    json!({"type": type_, "status": "True", "lastTransitionTime": now})
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap_or_default()))
        .collect()
}

/// Replaces a Secret by one in Canonical's shape (the type of a Secret cannot change in place).
async fn recreate_secret(secrets: &Api<Secret>, name: &str, type_: Option<&str>, labels: Option<Value>) {
    let old = secrets.get(name).await.unwrap();
    secrets.delete(name, &DeleteParams::default()).await.unwrap();
    mk8s_e2e::eventually(Duration::from_secs(30), &format!("Secret {name} gone"), || async {
        match secrets.get_opt(name).await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    let mut s = json!({"metadata": {"name": name}, "data": old.data});
    if let Some(t) = type_ {
        s["type"] = json!(t);
    }
    if let Some(l) = labels {
        s["metadata"]["labels"] = l;
    }
    secrets
        .create(&post(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
}

/// Rewrites the running cluster into what Canonical's v0.6.11 providers leave.
async fn make_canonical(client: &kube::Client, ns: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    // CRDs: Canonical's labels (the v1beta1 contract), so CAPI reads the v1beta1 fields.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, provider) in [
        ("microk8sconfigs.bootstrap.cluster.x-k8s.io", "bootstrap-microk8s"),
        (
            "microk8sconfigtemplates.bootstrap.cluster.x-k8s.io",
            "bootstrap-microk8s",
        ),
        (
            "microk8scontrolplanes.controlplane.cluster.x-k8s.io",
            "control-plane-microk8s",
        ),
    ] {
        crds.patch(
            crd,
            &pp(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "cluster.x-k8s.io/v1beta2": null,
                "cluster.x-k8s.io/v1beta1": "v1beta1",
                "cluster.x-k8s.io/provider": provider}}})),
        )
        .await
        .unwrap();
    }

    let mcps = cluster::dynamic(client, ns, CP, "MicroK8sControlPlane");
    let mcp_name = format!("{NAME}-control-plane");
    let mcp = mcps.get(&mcp_name).await.unwrap();
    let cp_config = mcp.data["spec"]["controlPlaneConfig"].clone();
    let machines = cluster::dynamic(client, ns, CAPI, "Machine");
    let configs = cluster::dynamic(client, ns, BOOTSTRAP, "MicroK8sConfig");
    let sim_machines = cluster::dynamic(client, ns, SIM, "SimMachine");
    let all = cluster::machines(client, ns, NAME).await;
    let mut last_worker = String::new();
    for m in &all {
        let name = m.metadata.name.clone().unwrap();
        let cp = m.is_control_plane();
        if cp {
            clear_managed_fields(&machines, &name).await;
            machines
                .patch(
                    &name,
                    &pp(),
                    &Patch::Merge(json!({"metadata": {
                        "annotations": {CREATED_BY: null, IN_PLACE: null, MEMBER_REMOVAL: null, HOOK: null},
                        "labels": {CONTROL_PLANE_NAME: null}}})),
                )
                .await
                .unwrap();
            if let Some(r) = m.spec.infrastructure_ref.as_ref() {
                clear_managed_fields(&sim_machines, &r.name).await;
                sim_machines
                    .patch(
                        &r.name,
                        &pp(),
                        &Patch::Merge(json!({"metadata": {"annotations": {CREATED_BY: null},
                            "labels": {CONTROL_PLANE_NAME: null}}})),
                    )
                    .await
                    .unwrap();
            }
        } else {
            last_worker = name.clone();
        }
        // The config: no annotations of ours; a control plane config's spec is the control
        // plane's controlPlaneConfig verbatim and it has only the label CAPI adds.
        let config_name = m.spec.bootstrap.config_ref.as_ref().unwrap().name.clone();
        clear_managed_fields(&configs, &config_name).await;
        let mut c = configs.get(&config_name).await.unwrap();
        if let Some(a) = c.metadata.annotations.as_mut() {
            a.remove(ROLE);
            a.remove(JOIN_ADDRESSES);
            a.remove(CREATED_BY);
        }
        if cp {
            c.metadata.labels = Some(BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".to_string(),
                NAME.to_string(),
            )]));
            c.data["spec"] = cp_config.clone();
        }
        c.metadata.managed_fields = None;
        let c = configs.replace(&config_name, &post(), &c).await.unwrap();
        // Canonical's status: v1beta1 contract fields only.
        let mut c = c;
        c.data["status"] = json!({
            "ready": true,
            "dataSecretName": config_name,
            "observedGeneration": c.metadata.generation,
            "conditions": [v1beta1_condition("DataSecretAvailable", &now), v1beta1_condition("Ready", &now)],
        });
        configs.replace_status(&config_name, &post(), &c).await.unwrap();
        // The data Secret: Canonical's controller reference has no blockOwnerDeletion.
        let secrets = cluster::dynamic(client, ns, "v1", "Secret");
        let data = m.spec.bootstrap.data_secret_name.clone().unwrap();
        let uid = c.metadata.uid.clone().unwrap();
        clear_managed_fields(&secrets, &data).await;
        secrets
            .patch(
                &data,
                &pp(),
                &Patch::Merge(json!({"metadata": {"ownerReferences": [{"apiVersion": BOOTSTRAP,
                    "kind": "MicroK8sConfig", "name": config_name, "uid": uid, "controller": true}]}})),
            )
            .await
            .unwrap();
    }

    // The control plane: Canonical's status (no v1beta2 fields, no version).
    clear_managed_fields(&mcps, &mcp_name).await;
    let mut mcp = mcps.get(&mcp_name).await.unwrap();
    let cps = all.iter().filter(|m| m.is_control_plane()).count();
    let conditions: Vec<Value> = [
        "Available",
        "ControlPlaneComponentsHealthy",
        "MachinesBootstrapped",
        "MachinesCreated",
        "MachinesReady",
        "Ready",
        "Resized",
    ]
    .iter()
    .map(|t| v1beta1_condition(t, &now))
    .collect();
    mcp.data["status"] = json!({
        "selector": format!("cluster.x-k8s.io/cluster-name={NAME},cluster.x-k8s.io/control-plane="),
        "replicas": cps,
        "readyReplicas": cps,
        "unavailableReplicas": 0,
        "initialized": true,
        "ready": true,
        "bootstrapped": true,
        "observedGeneration": mcp.metadata.generation,
        "conditions": conditions,
    });
    mcps.replace_status(&mcp_name, &post(), &mcp).await.unwrap();

    // Workers: CAPI v1.14 holds Canonical's workers without this annotation (no status.version).
    let mds = cluster::dynamic(client, ns, CAPI, "MachineDeployment");
    mds.patch(
        &format!("{NAME}-md-0"),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            "machineset.cluster.x-k8s.io/skip-preflight-checks": "ControlPlaneIsStable"}}})),
    )
    .await
    .unwrap();

    // Cluster Secrets.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    recreate_secret(&secrets, &format!("{NAME}-ca"), None, None).await;
    recreate_secret(&secrets, &format!("{NAME}-jointoken"), None, None).await;
    let auth = format!("{NAME}-capi-auth-token");
    clear_managed_fields(&cluster::dynamic(client, ns, "v1", "Secret"), &auth).await;
    secrets
        .patch(
            &auth,
            &pp(),
            &Patch::Merge(json!({"metadata": {"labels": null, "ownerReferences": null}})),
        )
        .await
        .unwrap();
    let ca = secret_data(&secrets.get(&format!("{NAME}-ca")).await.unwrap());
    let capi_cluster = cluster::dynamic(client, ns, CAPI, "Cluster").get(NAME).await.unwrap();
    let ep = &capi_cluster.data["spec"]["controlPlaneEndpoint"];
    let server = format!("https://{}:{}", ep["host"].as_str().unwrap(), ep["port"]);
    let kc = format!("{NAME}-kubeconfig");
    secrets.delete(&kc, &DeleteParams::default()).await.unwrap();
    mk8s_e2e::eventually(Duration::from_secs(30), "our kubeconfig Secret gone", || async {
        match secrets.get_opt(&kc).await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    let value = canonical_kubeconfig(&ca["crt"], &ca["key"], &server);
    secrets
        .create(
            &post(),
            &serde_json::from_value(json!({"metadata": {"name": kc,
                "labels": {"cluster.x-k8s.io/cluster-name": NAME}},
                "data": {"value": b64(value.as_bytes())}}))
            .unwrap(),
        )
        .await
        .unwrap();

    // The init lock CABPM leaves: held by the last machine it generated data for.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &post(),
        &serde_json::from_value(json!({"metadata": {"name": format!("{NAME}-lock"),
            "labels": {"cluster.x-k8s.io/cluster-name": NAME},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "name": NAME,
                "uid": capi_cluster.metadata.uid.clone().unwrap()}]},
            "data": {"lock-information": json!({"machineName": last_worker}).to_string()}}))
        .unwrap(),
    )
    .await
    .unwrap();

    // Leader election: Canonical's Leases (held when their managers were scaled to zero);
    // ours never existed.
    for (lns, ours, theirs) in [
        (
            mk8s_e2e::managers::BOOTSTRAP_NS,
            "mk8s-bootstrap-manager-leader-election",
            "microk8s-bootstrap-manager-leader-election-capi",
        ),
        (
            mk8s_e2e::managers::CONTROL_PLANE_NS,
            "mk8s-controlplane-manager-leader-election",
            "microk8s-control-plane-manager-leader-election-capi",
        ),
    ] {
        let leases: Api<Lease> = Api::namespaced(client.clone(), lns);
        let _ = leases.delete(ours, &DeleteParams::default()).await;
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": theirs}, "spec": {
            "holderIdentity": format!("{theirs}-7d9c5b-x2k4q_0b6f3d52-9f8e-4c1a-b2f7-5d1e9a0c3b7e"),
            "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}))
        .unwrap();
        let _ = leases.create(&post(), &lease).await;
    }
}

async fn start_managers(env: &mk8s_e2e::Env) {
    for kind in [ManagerKind::Bootstrap, ManagerKind::ControlPlane] {
        let m = Manager::start(env.plane, kind, &env.dir).await;
        env.managers.lock().unwrap().push(m);
    }
}

fn stop_managers(env: &mk8s_e2e::Env) {
    let ms: Vec<Manager> = env.managers.lock().unwrap().drain(..).collect();
    for m in ms {
        m.stop(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_from_canonical_providers() {
    let Some(env) = tokio::task::spawn_blocking(mk8s_e2e::env).await.unwrap() else {
        return;
    };
    let ns = env.plane.namespace("takeover").await.unwrap();
    let client = env.plane.client().await;
    let expect = Expect {
        control_planes: 3,
        workers: 2,
    };

    // A running 3 + 2 cluster (provisioned by ours: Canonical's cannot be built here).
    cluster::apply(&client, &ns, &Shape::new(NAME, 3, 2).objects()).await;
    cluster::wait_converged(env, &client, &ns, NAME, expect, CONVERGE).await;

    // Canonical's managers stop (ours played their part), the state becomes theirs.
    stop_managers(env);
    let available = AvailabilityWatch::start(client.clone(), &ns, NAME);
    make_canonical(&client, &ns).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let canonical_phase = available.take();
    let before = takeover::snapshot(&env.sim, &client, &ns, NAME).await;
    eprintln!("takeover: Canonical's state in place: {before:?}; Available not True meanwhile: {canonical_phase:?}");
    assert!(
        canonical_phase.is_empty(),
        "CAPI keeps the Cluster Available in Canonical's state: {canonical_phase:?}"
    );

    // Cut-over: our CRDs, then our managers.
    let t_cut = Instant::now();
    takeover::install_our_crds(env.plane, &client).await;
    start_managers(env).await;
    takeover::wait_taken_over(&client, &ns, NAME, CONVERGE).await;
    let took = t_cut.elapsed();
    cluster::wait_converged(env, &client, &ns, NAME, expect, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = takeover::snapshot(&env.sim, &client, &ns, NAME).await;
    let flaps = available.stop();
    eprintln!("takeover: ours took over in {took:.1?}; Available not True meanwhile: {flaps:?}");
    assert!(
        flaps.is_empty(),
        "the Cluster stays Available throughout the cut-over: {flaps:?}"
    );
    takeover::assert_unchanged(&before, &after);

    // The kubeconfig: replaced by a compliant one (ownership rule: Canonical's fingerprint).
    takeover::check_kubeconfig(&client, &ns, NAME, 5).await;
    // The cluster Secrets Canonical's provider made are used as they are (never relabelled or
    // re-owned).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for s in [format!("{NAME}-ca"), format!("{NAME}-jointoken")] {
        let s = secrets.get(&s).await.unwrap();
        assert!(
            s.metadata.owner_references.is_none() && s.metadata.labels.is_none(),
            "{s:?} untouched"
        );
    }

    // Then ours scale up and roll out an upgrade.
    let t = takeover::scale_up_and_upgrade(&env.sim, &client, &ns, NAME, CONVERGE).await;
    eprintln!(
        "takeover: then scaled up in {:.1?}, upgraded in {:.1?}",
        t.scale_up, t.upgrade
    );
}
