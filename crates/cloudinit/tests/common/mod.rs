//! Inputs and helpers shared by the integration tests.
#![allow(dead_code)]
// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod node;
pub mod rng;

use std::path::{Path, PathBuf};
use std::process::Command;

use mk8s_api::bootstrap::{CloudInitWriteFile, ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, RenderInput, Role};
use serde_json::Value;

pub const TOKEN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const AUTH: &str = "capi-auth-token";
pub const VERSION: &str = "v1.33.4";
pub const HOST: &str = "k8s.example.com";
pub const PORT: u16 = 6443;

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

pub fn v(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// A spec that sets every field.
pub fn rich_spec() -> MicroK8sConfigSpec {
    MicroK8sConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            port_compatibility_remap: Some(true),
            ..Default::default()
        }),
        init_configuration: Some(InitConfiguration {
            api_version: None,
            kind: None,
            join_token_ttl_in_secs: Some(900_000),
            https_proxy: s("http://proxy.example:3128"),
            http_proxy: s("http://proxy.example:3128"),
            no_proxy: s("10.0.0.0/8,.svc,localhost"),
            addons: v(&["ingress", "metrics-server"]),
            ip_in_ip: Some(true),
            confinement: s("classic"),
            risk_level: s("candidate"),
            disable_default_cni: Some(true),
            snapstore_proxy_scheme: s("https"),
            snapstore_proxy_domain: s("snapstore.example.com"),
            snapstore_proxy_id: s("ID123456789"),
            snapstore_http_proxy: s("http://snap-proxy.example:3128"),
            snapstore_https_proxy: s("http://snap-proxy.example:3129"),
            extra_write_files: Some(vec![CloudInitWriteFile {
                content: "net.ipv4.ip_forward = 1\n".into(),
                path: "/etc/sysctl.d/99-capi.conf".into(),
                permissions: "0644".into(),
                owner: "root:root".into(),
            }]),
            extra_kubelet_args: v(&["--max-pods=200", "--node-labels=tier=gold"]),
            boot_commands: v(&["echo booting {{ ds.meta_data.local_hostname }}"]),
            pre_run_commands: v(&["echo pre > /tmp/pre"]),
            post_run_commands: v(&["echo post > /tmp/post"]),
            snap_refresh_hold: s("forever"),
        }),
    }
}

pub fn minimal_spec() -> MicroK8sConfigSpec {
    MicroK8sConfigSpec::default()
}

pub fn ca() -> CaFiles {
    CaFiles {
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIBCERT\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN RSA PRIVATE KEY-----\nMIIBKEY\n-----END RSA PRIVATE KEY-----\n".into(),
    }
}

pub fn addresses() -> Vec<String> {
    vec!["10.0.0.11".into(), "10.0.0.12".into()]
}

pub fn roles() -> Vec<(&'static str, Role)> {
    vec![
        ("init", Role::Init { ca: ca() }),
        (
            "join-control-plane",
            Role::JoinControlPlane {
                join_addresses: addresses(),
            },
        ),
        (
            "worker",
            Role::Worker {
                join_addresses: addresses(),
            },
        ),
    ]
}

pub fn input<'a>(role: Role, spec: &'a MicroK8sConfigSpec) -> RenderInput<'a> {
    RenderInput {
        role,
        spec,
        kubernetes_version: VERSION,
        endpoint_host: HOST,
        endpoint_port: PORT,
        join_token: TOKEN,
        auth_token: AUTH,
    }
}

/// Parses a rendered document (YAML comments make the header harmless).
pub fn parse(doc: &str) -> Value {
    serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

/// The runcmd of a parsed document with our Jinja escapes undone: argv lists as
/// `Vec<String>`, user commands as one-element vectors prefixed with "sh:".
pub fn runcmd(doc: &str) -> Vec<Vec<String>> {
    let doc = mk8s_cloudinit::jinja::unescape(doc);
    parse(&doc)["runcmd"]
        .as_array()
        .expect("runcmd")
        .iter()
        .map(|e| match e {
            Value::String(s) => vec![format!("sh:{s}")],
            Value::Array(a) => a.iter().map(|x| x.as_str().expect("string").to_string()).collect(),
            other => panic!("unexpected runcmd entry {other}"),
        })
        .collect()
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether an external tool is usable. Without it the test is skipped loudly, unless
/// `CI=true`, where a missing tool is a failure.
pub fn require(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required when CI=true but is not usable");
        }
        // Straight to stderr: the test harness captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPING: {tool} is not installed or not usable; this test did NOT run !!!!!!!!\n"
        );
    }
    ok
}

/// The Python interpreter cloud-init runs with (its Jinja and YAML libraries).
pub const CLOUD_INIT_PYTHON: &str = "/usr/bin/python3";

pub fn has_cloud_init_python() -> bool {
    require(
        CLOUD_INIT_PYTHON,
        &["-c", "import cloudinit.handlers.jinja_template, yaml, jinja2"],
    )
}

/// Renders documents the way cloud-init does (its own Jinja handler, with instance data)
/// and parses the result with cloud-init's YAML loader. Returns, per document, the rendered
/// text and the parsed value.
pub fn cloud_init_render(docs: &[String]) -> Vec<(String, Value)> {
    let script = r#"
import json, sys
from cloudinit.handlers.jinja_template import render_jinja_payload
from cloudinit import safeyaml
docs = json.load(sys.stdin)
instance = {"v1": {"local-hostname": "node-1", "instance-id": "i-123"},
            "ds": {"meta_data": {"local-hostname": "node-1"}}}
out = []
for d in docs:
    rendered = render_jinja_payload(d, "user-data", instance)
    if rendered is None:
        raise SystemExit("cloud-init refused to render a document")
    out.append({"rendered": rendered, "parsed": safeyaml.load(rendered)})
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(CLOUD_INIT_PYTHON)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(docs).expect("json").as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "cloud-init rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = serde_json::from_slice(&out.stdout).expect("python output");
    values
        .into_iter()
        .map(|v| {
            (
                v["rendered"].as_str().expect("rendered").to_string(),
                v["parsed"].clone(),
            )
        })
        .collect()
}

pub fn write(path: &Path, content: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

/// The cloud-config model in the shape a YAML parser gives back for the document after
/// Jinja rendering (users' commands assumed free of Jinja).
pub fn model_value(config: &mk8s_cloudinit::CloudConfig) -> Value {
    use serde_json::json;
    let mut v = json!({
        "write_files": config.write_files.iter().map(|f| json!({
            "path": f.path, "permissions": f.permissions, "owner": f.owner, "content": f.content,
        })).collect::<Vec<_>>(),
        "runcmd": config.runcmd.iter().map(|e| match e {
            mk8s_cloudinit::RunCmd::Argv(argv) => json!(argv),
            mk8s_cloudinit::RunCmd::Shell(s) => json!(s),
        }).collect::<Vec<_>>(),
    });
    if !config.bootcmd.is_empty() {
        v["bootcmd"] = json!(config.bootcmd);
    }
    v
}
