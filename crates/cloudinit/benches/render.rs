//! Rendering speed per role (`cargo bench -p mk8s-cloudinit`). Measured here, never asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mk8s_api::bootstrap::{CloudInitWriteFile, ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, RenderInput, Role, render};

fn spec() -> MicroK8sConfigSpec {
    let s = |v: &str| Some(v.to_string());
    MicroK8sConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            port_compatibility_remap: Some(true),
            ..Default::default()
        }),
        init_configuration: Some(InitConfiguration {
            join_token_ttl_in_secs: Some(900_000),
            http_proxy: s("http://proxy.example:3128"),
            https_proxy: s("http://proxy.example:3128"),
            no_proxy: s("10.0.0.0/8,.svc"),
            addons: Some(vec!["ingress".into(), "dns:10.0.0.10".into()]),
            ip_in_ip: Some(true),
            risk_level: s("stable"),
            snapstore_http_proxy: s("http://snap-proxy:3128"),
            extra_write_files: Some(vec![CloudInitWriteFile {
                content: "line\n".repeat(50),
                path: "/etc/example.conf".into(),
                permissions: "0644".into(),
                owner: "root:root".into(),
            }]),
            extra_kubelet_args: Some(vec!["--max-pods=200".into()]),
            pre_run_commands: Some(vec!["echo {{ v1.local_hostname }}".into()]),
            post_run_commands: Some(vec!["echo done".into()]),
            ..Default::default()
        }),
    }
}

fn measure(name: &str, input: &RenderInput<'_>) {
    // Warm up, then run for about a second.
    for _ in 0..100 {
        black_box(render(black_box(input)).ok());
    }
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            black_box(render(black_box(input)).ok());
        }
        iterations += 100;
    }
    let per = start.elapsed().as_nanos() / u128::from(iterations);
    let size = render(input).map(|d| d.len()).unwrap_or(0);
    println!("{name:<20} {per:>9} ns/document  ({size} bytes, {iterations} iterations)");
}

fn main() {
    let spec = spec();
    let addresses = vec![
        "10.0.0.11".to_string(),
        "10.0.0.12".to_string(),
        "10.0.0.13".to_string(),
    ];
    let pem =
        "-----BEGIN CERTIFICATE-----\n".to_string() + &"A".repeat(64).repeat(20) + "\n-----END CERTIFICATE-----\n";
    for (name, role) in [
        (
            "init",
            Role::Init {
                ca: CaFiles {
                    cert_pem: pem.clone(),
                    key_pem: pem.clone(),
                },
            },
        ),
        (
            "join-control-plane",
            Role::JoinControlPlane {
                join_addresses: addresses.clone(),
            },
        ),
        (
            "worker",
            Role::Worker {
                join_addresses: addresses.clone(),
            },
        ),
    ] {
        let input = RenderInput {
            role,
            spec: &spec,
            kubernetes_version: "v1.33.4",
            endpoint_host: "k8s.example.com",
            endpoint_port: 6443,
            join_token: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            auth_token: "capi-auth-token",
        };
        measure(name, &input);
    }
}
