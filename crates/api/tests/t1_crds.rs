//! T1: our CRDs on a real kube-apiserver — defaults, validation messages, round trips of
//! objects written for Canonical's providers, the scale subresource, printer columns and
//! `kubectl explain`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mk8s_api::{MicroK8sConfig, MicroK8sConfigTemplate, MicroK8sControlPlane, MicroK8sControlPlaneTemplate};
use serde_json::{Value, json};

async fn setup(prefix: &str) -> Option<(kube::Client, String, &'static mk8s_testenv::Plane)> {
    let plane = mk8s_testenv::shared().await?;
    let crds: Vec<_> = mk8s_api::crd::all().into_iter().map(|(_, c)| c).collect();
    plane.apply_crds(&crds).await.unwrap();
    let ns = plane.namespace(prefix).await.unwrap();
    Some((plane.client().await, ns, plane))
}

fn api_for(client: &kube::Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn create(client: &kube::Client, ns: &str, obj: Value) -> Result<Value, kube::Error> {
    let api = api_for(
        client,
        ns,
        obj["apiVersion"].as_str().unwrap(),
        obj["kind"].as_str().unwrap(),
    );
    let o: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &o)
        .await
        .map(|o| serde_json::to_value(o).unwrap())
}

fn mcp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlane",
           "metadata": {"name": name}, "spec": spec})
}

fn cfg(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
           "metadata": {"name": name}, "spec": spec})
}

fn infra() -> Value {
    json!({"infrastructureTemplate": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "SimMachineTemplate", "name": "t"}})
}

#[tokio::test]
async fn defaults_are_filled_including_nested_ones() {
    let Some((client, ns, _)) = setup("defaults").await else {
        return;
    };

    let c = create(&client, &ns, cfg("bare", json!({}))).await.unwrap();
    assert_eq!(c["spec"]["clusterConfiguration"]["portCompatibilityRemap"], json!(true));
    assert_eq!(c["spec"]["initConfiguration"]["joinTokenTTLInSecs"], json!(315569260));
    assert_eq!(c["spec"]["initConfiguration"]["riskLevel"], json!("stable"));

    // No spec at all, as Canonical's CRD allowed: the same defaults.
    let c = create(
        &client,
        &ns,
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfig",
               "metadata": {"name": "no-spec"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        c["spec"]["clusterConfiguration"]["portCompatibilityRemap"],
        json!(true),
        "{c}"
    );
    assert_eq!(c["spec"]["initConfiguration"]["joinTokenTTLInSecs"], json!(315569260));

    let c = create(
        &client,
        &ns,
        cfg("partial", json!({"initConfiguration": {"addons": ["ingress"]}})),
    )
    .await
    .unwrap();
    assert_eq!(c["spec"]["initConfiguration"]["riskLevel"], json!("stable"));
    assert_eq!(c["spec"]["initConfiguration"]["addons"], json!(["ingress"]));

    let t = create(
        &client,
        &ns,
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfigTemplate",
               "metadata": {"name": "t"}, "spec": {"template": {}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        t["spec"]["template"]["spec"]["initConfiguration"]["joinTokenTTLInSecs"],
        json!(315569260)
    );

    let m = create(
        &client,
        &ns,
        mcp("m", json!({"version": "v1.33.0", "machineTemplate": infra()})),
    )
    .await
    .unwrap();
    let init = &m["spec"]["controlPlaneConfig"]["initConfiguration"];
    assert_eq!(init["riskLevel"], json!("stable"), "{m}");
    assert_eq!(
        m["spec"]["controlPlaneConfig"]["clusterConfiguration"]["portCompatibilityRemap"],
        json!(true)
    );

    let tpl = create(
        &client,
        &ns,
        json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlaneTemplate",
               "metadata": {"name": "cpt"}, "spec": {"template": {"spec": {}}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        tpl["spec"]["template"]["spec"]["controlPlaneConfig"]["initConfiguration"]["riskLevel"],
        json!("stable")
    );

    // The typed view reads every kind back.
    let typed: MicroK8sControlPlane = Api::<MicroK8sControlPlane>::namespaced(client.clone(), &ns)
        .get("m")
        .await
        .unwrap();
    assert_eq!(typed.spec.version, "v1.33.0");
    let _: MicroK8sConfig = Api::namespaced(client.clone(), &ns).get("bare").await.unwrap();
    let _: MicroK8sConfig = Api::namespaced(client.clone(), &ns).get("no-spec").await.unwrap();
    let _: MicroK8sConfigTemplate = Api::namespaced(client.clone(), &ns).get("t").await.unwrap();
    let _: MicroK8sControlPlaneTemplate = Api::namespaced(client.clone(), &ns).get("cpt").await.unwrap();
}

#[tokio::test]
async fn bad_objects_are_rejected_with_a_message_that_says_what_to_change() {
    let Some((client, ns, _)) = setup("invalid").await else {
        return;
    };
    let ok_mcp = |extra: Value| {
        let mut spec = json!({"version": "v1.33.0", "replicas": 1, "machineTemplate": infra()});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let init = |v: Value| json!({"initConfiguration": v});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "risk",
            cfg("x", init(json!({"riskLevel": "nightly"}))),
            "Unsupported value: \"nightly\"",
        ),
        (
            "confinement",
            cfg("x", init(json!({"confinement": "loose"}))),
            "Unsupported value: \"loose\"",
        ),
        (
            "ttl-zero",
            cfg("x", init(json!({"joinTokenTTLInSecs": 0}))),
            "should be greater than or equal to 1",
        ),
        (
            "ttl-type",
            cfg("x", init(json!({"joinTokenTTLInSecs": "ten"}))),
            "must be of type integer",
        ),
        (
            "ipinip-type",
            cfg("x", init(json!({"IPinIP": "yes"}))),
            "must be of type boolean",
        ),
        (
            "addons-type",
            cfg("x", init(json!({"addons": "dns"}))),
            "must be of type array",
        ),
        (
            "addon-empty",
            cfg("x", init(json!({"addons": [""]}))),
            "should be at least 1 chars long",
        ),
        (
            "scheme",
            cfg("x", init(json!({"snapstoreProxyScheme": "ftp"}))),
            "Unsupported value: \"ftp\"",
        ),
        (
            "hold",
            cfg("x", init(json!({"snapRefreshHold": "tomorrow"}))),
            "snapRefreshHold in body should match",
        ),
        (
            "file-missing-path",
            cfg(
                "x",
                init(json!({"extraWriteFiles": [{"content": "a", "permissions": "0644", "owner": "root:root"}]})),
            ),
            "spec.initConfiguration.extraWriteFiles[0].path: Required value",
        ),
        (
            "file-perm-int",
            cfg(
                "x",
                init(
                    json!({"extraWriteFiles": [{"content": "a", "path": "/a", "permissions": 644, "owner": "root:root"}]}),
                ),
            ),
            "must be of type string",
        ),
        (
            "file-perm-text",
            cfg(
                "x",
                init(
                    json!({"extraWriteFiles": [{"content": "a", "path": "/a", "permissions": "rw-r--r--", "owner": "root:root"}]}),
                ),
            ),
            "permissions in body should match",
        ),
        (
            "file-relative",
            cfg(
                "x",
                init(
                    json!({"extraWriteFiles": [{"content": "a", "path": "etc/a", "permissions": "0644", "owner": "root:root"}]}),
                ),
            ),
            "path in body should match '^/'",
        ),
        (
            "remap-type",
            cfg("x", json!({"clusterConfiguration": {"portCompatibilityRemap": "no"}})),
            "must be of type boolean",
        ),
        (
            "version-no-v",
            mcp("x", ok_mcp(json!({"version": "1.33.0"}))),
            "spec.version in body should match",
        ),
        (
            "version-short",
            mcp("x", ok_mcp(json!({"version": "v1.33"}))),
            "spec.version in body should match",
        ),
        (
            "version-missing",
            mcp("x", json!({"replicas": 1, "machineTemplate": infra()})),
            "spec.version: Required value",
        ),
        (
            "template-missing",
            mcp("x", json!({"version": "v1.33.0"})),
            "spec.machineTemplate: Required value",
        ),
        (
            "replicas-zero",
            mcp("x", ok_mcp(json!({"replicas": 0}))),
            "spec.replicas in body should be greater than or equal to 1",
        ),
        (
            "replicas-type",
            mcp("x", ok_mcp(json!({"replicas": "three"}))),
            "must be of type integer",
        ),
        (
            "strict-124",
            mcp(
                "x",
                ok_mcp(
                    json!({"version": "v1.24.17", "controlPlaneConfig": {"initConfiguration": {"confinement": "strict"}}}),
                ),
            ),
            mk8s_api::controlplane::STRICT_NEEDS_125_MSG,
        ),
        (
            "max-surge-zero-one-replica",
            mcp(
                "x",
                ok_mcp(json!({"rollout": {"strategy": {"rollingUpdate": {"maxSurge": 0}}}})),
            ),
            mk8s_api::controlplane::MAX_SURGE_ZERO_MSG,
        ),
        (
            "max-surge-two",
            mcp(
                "x",
                ok_mcp(json!({"replicas": 3, "rollout": {"strategy": {"rollingUpdate": {"maxSurge": 2}}}})),
            ),
            "maxSurge must be the integer 0 or 1",
        ),
        (
            "both-infra-refs",
            mcp(
                "x",
                ok_mcp(json!({"machineTemplate": {
                "infrastructureTemplate": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "SimMachineTemplate", "name": "t"},
                "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachineTemplate", "name": "t"}}}})),
            ),
            mk8s_api::controlplane::ONE_INFRA_REF_MSG,
        ),
        (
            "no-infra-ref",
            mcp(
                "x",
                ok_mcp(json!({"machineTemplate": {"metadata": {"labels": {"a": "b"}}}})),
            ),
            mk8s_api::controlplane::ONE_INFRA_REF_MSG,
        ),
        (
            "strategy",
            mcp("x", ok_mcp(json!({"upgradeStrategy": "Recreate"}))),
            "Unsupported value: \"Recreate\"",
        ),
        (
            "drain-negative",
            mcp(
                "x",
                ok_mcp(json!({"machineTemplate": {"spec": {
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachineTemplate", "name": "t"},
                "deletion": {"nodeDrainTimeoutSeconds": -1}}}})),
            ),
            "should be greater than or equal to 0",
        ),
        (
            "max-retry-negative",
            mcp("x", ok_mcp(json!({"remediation": {"maxRetry": -1}}))),
            "should be greater than or equal to 0",
        ),
        (
            "cp-risk",
            mcp(
                "x",
                ok_mcp(json!({"controlPlaneConfig": {"initConfiguration": {"riskLevel": "daily"}}})),
            ),
            "Unsupported value: \"daily\"",
        ),
        (
            "template-without-template",
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sConfigTemplate", "metadata": {"name": "x"}, "spec": {}}),
            "spec.template: Required value",
        ),
    ];
    assert!(cases.len() >= 20);
    let mut failures = vec![];
    for (name, obj, want) in cases {
        match create(&client, &ns, obj).await {
            Ok(_) => failures.push(format!("{name}: accepted, expected rejection with {want:?}")),
            Err(kube::Error::Api(s)) => {
                if !(s.code == 422 && s.message.contains(want)) {
                    failures.push(format!("{name}: HTTP {} {:?}, expected {want:?}", s.code, s.message));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The boundaries the rules allow are accepted.
    for (name, spec) in [
        (
            "strict-125",
            ok_mcp(
                json!({"version": "v1.25.0", "controlPlaneConfig": {"initConfiguration": {"confinement": "strict"}}}),
            ),
        ),
        (
            "strict-2x",
            ok_mcp(
                json!({"version": "v2.0.0", "controlPlaneConfig": {"initConfiguration": {"confinement": "strict"}}}),
            ),
        ),
        (
            "surge-zero-three",
            ok_mcp(json!({"replicas": 3, "rollout": {"strategy": {"rollingUpdate": {"maxSurge": 0}}}})),
        ),
        (
            "surge-one",
            ok_mcp(json!({"rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}})),
        ),
        ("empty-strategy", ok_mcp(json!({"upgradeStrategy": ""}))),
        (
            "clusterclass-ref",
            ok_mcp(
                json!({"machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SimMachineTemplate", "name": "t"}}}}),
            ),
        ),
    ] {
        create(&client, &ns, mcp(name, spec))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Every field of `sent` is in `got` with the same value (`got` may add defaults).
fn contains(sent: &Value, got: &Value, path: &str) -> Vec<String> {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => s
            .iter()
            .flat_map(|(k, v)| match g.get(k) {
                Some(gv) => contains(v, gv, &format!("{path}.{k}")),
                None => vec![format!("{path}.{k} missing")],
            })
            .collect(),
        (s, g) if s == g => vec![],
        (s, g) => vec![format!("{path}: sent {s}, read {g}")],
    }
}

#[tokio::test]
async fn objects_written_for_canonicals_providers_apply_unchanged_and_round_trip() {
    let Some((client, ns, _)) = setup("compat").await else {
        return;
    };
    let text = include_str!("fixtures/canonical-cluster.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap();
    assert_eq!(docs.len(), 4);
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let got = create(&client, &ns, doc.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = contains(&doc["spec"], &got["spec"], "spec");
        assert!(diff.is_empty(), "{name}: {diff:?}");
        // Our types lose nothing the API server stored.
        let kind = doc["kind"].as_str().unwrap();
        let typed_spec = match kind {
            "MicroK8sControlPlane" => serde_json::to_value(
                serde_json::from_value::<MicroK8sControlPlane>(got.clone())
                    .unwrap()
                    .spec,
            )
            .unwrap(),
            "MicroK8sConfigTemplate" => serde_json::to_value(
                serde_json::from_value::<MicroK8sConfigTemplate>(got.clone())
                    .unwrap()
                    .spec,
            )
            .unwrap(),
            "MicroK8sConfig" => {
                serde_json::to_value(serde_json::from_value::<MicroK8sConfig>(got.clone()).unwrap().spec).unwrap()
            }
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(typed_spec, got["spec"], "{name}: typed round trip differs");
    }
    // A long inline script and cloud-init's own permission notation, both fine for Canonical.
    let script = format!(
        "cat > /opt/setup.sh <<'EOF'\n{}\nEOF",
        "echo configuring\n".repeat(2000)
    );
    create(
        &client,
        &ns,
        cfg(
            "long-script",
            json!({"initConfiguration": {"postRunCommands": [script],
                   "extraWriteFiles": [{"content": "x", "path": "/etc/x", "permissions": "0o640", "owner": "root:root"}]}}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("a 36 KiB postRunCommand and 0o640: {e}"));

    // An update through SSA keeps the object valid (stored objects stay updatable).
    let api = api_for(
        &client,
        &ns,
        "controlplane.cluster.x-k8s.io/v1beta1",
        "MicroK8sControlPlane",
    );
    api.patch(
        "demo-control-plane",
        &PatchParams::apply("t1-test").force(),
        &Patch::Apply(
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "MicroK8sControlPlane",
                             "spec": {"replicas": 5}}),
        ),
    )
    .await
    .unwrap();
}

fn kubectl(plane: &mk8s_testenv::Plane, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .args(args)
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn scale_subresource_printer_columns_and_explain_work_with_kubectl() {
    let Some((client, ns, plane)) = setup("kubectl").await else {
        return;
    };
    create(
        &client,
        &ns,
        mcp(
            "cp",
            json!({"version": "v1.33.0", "replicas": 1, "machineTemplate": infra()}),
        ),
    )
    .await
    .unwrap();
    kubectl(plane, &["-n", &ns, "scale", "mcp/cp", "--replicas=3"]);
    let got: MicroK8sControlPlane = Api::namespaced(client.clone(), &ns).get("cp").await.unwrap();
    assert_eq!(got.spec.replicas, Some(3));

    let table = kubectl(plane, &["-n", &ns, "get", "mcp"]);
    let header = table.lines().next().unwrap();
    for col in [
        "READY",
        "INITIALIZED",
        "REPLICAS",
        "READY REPLICAS",
        "UNAVAILABLE REPLICAS",
        "UP-TO-DATE",
        "VERSION",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header:?}");
    }
    assert!(table.contains("v1.33.0"), "{table}");
    let cats = kubectl(plane, &["-n", &ns, "get", "cluster-api"]);
    assert!(cats.contains("microk8scontrolplane"), "{cats}");

    let explain = kubectl(plane, &["explain", "microk8scontrolplane.spec"]);
    for needle in ["machineTemplate", "upgradeStrategy", "Odd numbers keep dqlite"] {
        assert!(explain.contains(needle), "{needle} missing in explain:\n{explain}");
    }
    let explain = kubectl(
        plane,
        &["explain", "microk8sconfig.spec.initConfiguration.joinTokenTTLInSecs"],
    );
    assert!(explain.contains("microk8s add-node"), "{explain}");
}

/// Empty template variables and Helm values become explicit nulls; Canonical's schema
/// (fields not nullable) dropped them and applied the defaults. Ours must accept them too.
#[tokio::test]
async fn explicit_nulls_are_accepted() {
    let Some((client, ns, _)) = setup("nulls").await else {
        return;
    };
    let c = create(
        &client,
        &ns,
        cfg(
            "nulls",
            json!({"initConfiguration": {"riskLevel": null, "confinement": null, "snapstoreProxyScheme": null,
                                         "addons": null, "joinTokenTTLInSecs": null},
                   "clusterConfiguration": {"portCompatibilityRemap": null}}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("explicit nulls in a MicroK8sConfig: {e}"));
    let _: MicroK8sConfig = serde_json::from_value(c.clone()).unwrap();
    let init = &c["spec"]["initConfiguration"];
    assert_eq!(
        init["riskLevel"],
        json!("stable"),
        "the null dropped, the default applied: {c}"
    );
    assert!(init.get("confinement").is_none(), "{c}");
    let m = create(
        &client,
        &ns,
        mcp(
            "nulls",
            json!({"version": "v1.33.0", "machineTemplate": infra(), "upgradeStrategy": null,
                   "controlPlaneConfig": {"initConfiguration": {"riskLevel": null}}}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("explicit nulls in a MicroK8sControlPlane: {e}"));
    let _: MicroK8sControlPlane = serde_json::from_value(m.clone()).unwrap();
    assert!(m["spec"].get("upgradeStrategy").is_none(), "{m}");
    assert_eq!(
        m["spec"]["controlPlaneConfig"]["initConfiguration"]["riskLevel"],
        json!("stable")
    );
}
