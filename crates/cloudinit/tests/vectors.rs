//! T0: the conformance vectors of Canonical's provider (reference/cabpm.md §4), adapted to
//! our argv form: same channels, tokens, TTLs, join URLs, worker endpoint and addons; steps
//! with nothing to do (empty proxies, no kubelet args) are left out instead of being called
//! with empty arguments, a risk level is always spelled out (`1.25` ≡ `1.25/stable`), and the
//! init node registers the token and accepts joins before it enables the addons.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::*;
use mk8s_api::bootstrap::{CloudInitWriteFile, ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, CloudConfig, RenderInput, Role, RunCmd, WriteFile, cloud_config, render};

const LABEL: &str = "microk8s.cluster.x-k8s.io/accepts-joins=true";

/// runcmd with `/capi-scripts/` dropped from script paths; user commands as `sh:<cmd>`.
fn steps(config: &CloudConfig) -> Vec<Vec<String>> {
    config
        .runcmd
        .iter()
        .map(|e| match e {
            RunCmd::Argv(argv) => argv
                .iter()
                .map(|a| a.trim_start_matches("/capi-scripts/").to_string())
                .collect(),
            RunCmd::Shell(s) => vec![format!("sh:{s}")],
        })
        .collect()
}

fn owned(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect()
}

fn has_file(config: &CloudConfig, content: &str, path: &str, permissions: &str) -> bool {
    config.write_files.iter().any(|f| {
        (
            f.path.as_str(),
            f.permissions.as_str(),
            f.owner.as_str(),
            f.content.as_str(),
        ) == (path, permissions, "root:root", content)
    })
}

fn vector_spec(addons: &[&str]) -> MicroK8sConfigSpec {
    MicroK8sConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            port_compatibility_remap: Some(true),
            ..Default::default()
        }),
        init_configuration: Some(InitConfiguration {
            ip_in_ip: Some(true),
            join_token_ttl_in_secs: Some(10000),
            disable_default_cni: Some(true),
            confinement: s("classic"),
            addons: (!addons.is_empty()).then(|| addons.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        }),
    }
}

fn vector_input<'a>(
    role: Role,
    spec: &'a MicroK8sConfigSpec,
    version: &'static str,
    host: &'static str,
) -> RenderInput<'a> {
    RenderInput {
        role,
        spec,
        kubernetes_version: version,
        endpoint_host: host,
        endpoint_port: 6443,
        join_token: TOKEN,
        auth_token: "capi-auth-token",
    }
}

#[test]
fn rendering_vector() {
    // §4.1: the document of a small cloud-config, byte for byte (our key order and styles).
    let config = CloudConfig {
        write_files: vec![WriteFile {
            path: "/run/a.tmp".into(),
            permissions: "0600".into(),
            owner: "root:root".into(),
            content: "test file".into(),
            template: false,
        }],
        runcmd: vec![RunCmd::Shell("foo".into()), RunCmd::Shell("bar: test".into())],
        bootcmd: vec!["baz".into()],
    };
    assert_eq!(
        config.to_document().unwrap(),
        "## template: jinja\n#cloud-config\nwrite_files:\n- path: /run/a.tmp\n  permissions: \"0600\"\n  owner: root:root\n  content: test file\nruncmd:\n- foo\n- \"bar: test\"\nbootcmd:\n- baz\n"
    );
}

#[test]
fn cp_init_1() {
    let spec = vector_spec(&[]);
    let ca = CaFiles {
        cert_pem: "CA CERT DATA".into(),
        key_pem: "CA KEY DATA".into(),
    };
    let input = vector_input(Role::Init { ca }, &spec, "v1.25.2", "k8s.my-domain.com");
    let config = cloud_config(&input).unwrap();
    assert_eq!(
        steps(&config),
        owned(&[
            &["00-disable-host-services.sh"],
            &[
                "10-install-microk8s.sh",
                "--channel",
                "1.25/stable",
                "--classic",
                "--disable-cni"
            ],
            &["20-wait-apiserver.sh"],
            &["30-refresh-certs.sh"],
            &["30-calico-ipip.sh"],
            &["30-cluster-agent-port.sh", "30000"],
            &["30-dqlite-port.sh", "2379"],
            &["30-cert-san.sh", "DNS", "k8s.my-domain.com"],
            &["50-apiserver-port.sh"],
            &["60-add-node.sh", TOKEN, "10000"],
            &["80-mark-accepts-joins.sh", LABEL],
            &["60-enable-addons.sh", "dns"],
            &[".", "99-bootstrap-complete.sh"],
        ])
    );
    assert!(has_file(&config, "CA KEY DATA", "/var/tmp/ca.key", "0600"));
    assert!(has_file(&config, "CA CERT DATA", "/var/tmp/ca.crt", "0600"));
    assert!(has_file(&config, "capi-auth-token", "/capi/etc/token", "0600"));
    render(&input).unwrap();
}

fn join_rows(extra: &[&[&str]]) -> Vec<Vec<String>> {
    let urls: Vec<String> = ["10.0.3.39", "10.0.3.40", "10.0.3.41"]
        .iter()
        .map(|ip| format!("{ip}:30000/{TOKEN}"))
        .collect();
    let mut join = vec!["40-join.sh".to_string()];
    join.extend(urls);
    let mut rows = owned(&[
        &["00-disable-host-services.sh"],
        &[
            "10-install-microk8s.sh",
            "--channel",
            "1.25/stable",
            "--classic",
            "--disable-cni",
        ],
        &["20-wait-apiserver.sh"],
        &["30-calico-ipip.sh"],
        &["30-cluster-agent-port.sh", "30000"],
        &["30-dqlite-port.sh", "2379"],
        &["30-cert-san.sh", "DNS", "k8s.my-domain.com"],
    ]);
    rows.push(join);
    rows.extend(owned(&[&["50-apiserver-port.sh"], &["60-add-node.sh", TOKEN, "10000"]]));
    rows.extend(owned(extra));
    rows.extend(owned(&[&[".", "99-bootstrap-complete.sh"]]));
    rows
}

#[test]
fn cp_join_1_and_2() {
    let addresses: Vec<String> = vec!["10.0.3.39".into(), "10.0.3.40".into(), "10.0.3.41".into()];
    for (addons, extra) in [
        (&[][..], &[][..]),
        (
            &["cis-hardening"][..],
            &[&["60-enable-addons.sh", "cis-hardening"][..]][..],
        ),
    ] {
        let spec = vector_spec(addons);
        let role = Role::JoinControlPlane {
            join_addresses: addresses.clone(),
        };
        let input = vector_input(role, &spec, "v1.25.2", "k8s.my-domain.com");
        let config = cloud_config(&input).unwrap();
        assert_eq!(steps(&config), join_rows(extra));
        assert!(has_file(&config, "capi-auth-token", "/capi/etc/token", "0600"));
        assert!(!config.write_files.iter().any(|f| f.path.starts_with("/var/tmp/ca.")));
        render(&input).unwrap();
    }
}

#[test]
fn worker_1() {
    let host = "capi-aws-apiserver-1647391446.us-east-1.elb.amazonaws.com";
    let spec = MicroK8sConfigSpec::default();
    for (version, track, refresh) in [("v1.24.3", "1.24", false), ("v1.25.0", "1.25", true)] {
        let role = Role::Worker {
            join_addresses: vec!["10.0.3.194".into(), "10.0.3.195".into()],
        };
        let input = vector_input(role, &spec, version, host);
        let config = cloud_config(&input).unwrap();
        let url = |ip: &str| format!("{ip}:30000/{TOKEN}");
        let endpoint = format!("{host}:6443");
        let mut proxy = vec!["70-apiserver-proxy.sh".to_string(), endpoint];
        if refresh {
            proxy.push("--no-refresh".into());
        }
        let channel = format!("{track}/stable");
        let mut expected = owned(&[
            &["00-disable-host-services.sh"],
            &["10-install-microk8s.sh", "--channel", &channel, "--classic"],
            &["20-wait-apiserver.sh"],
            &["30-cluster-agent-port.sh", "30000"],
            &["40-join.sh", "--worker", &url("10.0.3.194"), &url("10.0.3.195")],
        ]);
        expected.push(proxy);
        expected.extend(owned(&[&[".", "99-bootstrap-complete.sh"]]));
        assert_eq!(steps(&config), expected, "{version}");
        assert!(
            !config.write_files.iter().any(|f| f.path == "/capi/etc/token"),
            "no auth token on workers"
        );
    }
}

fn all_roles() -> Vec<Role> {
    vec![
        Role::Init { ca: ca() },
        Role::JoinControlPlane {
            join_addresses: addresses(),
        },
        Role::Worker {
            join_addresses: addresses(),
        },
    ]
}

fn common_input(role: Role, spec: &MicroK8sConfigSpec) -> RenderInput<'_> {
    RenderInput {
        kubernetes_version: "v1.25.0",
        ..input(role, spec)
    }
}

fn with(init: InitConfiguration) -> MicroK8sConfigSpec {
    MicroK8sConfigSpec {
        init_configuration: Some(InitConfiguration {
            join_token_ttl_in_secs: Some(100),
            ..init
        }),
        ..Default::default()
    }
}

fn install_step(config: &CloudConfig) -> Vec<String> {
    steps(config)
        .into_iter()
        .find(|s| s[0] == "10-install-microk8s.sh")
        .expect("install step")
}

#[test]
fn common_channel_and_risk_level() {
    for confinement in ["strict", "classic"] {
        for risk in ["stable", "candidate", "beta", "edge"] {
            let spec = with(InitConfiguration {
                confinement: s(confinement),
                risk_level: s(risk),
                ..Default::default()
            });
            for role in all_roles() {
                let config = cloud_config(&common_input(role, &spec)).unwrap();
                let expected: Vec<String> = if confinement == "strict" {
                    vec![
                        "10-install-microk8s.sh".into(),
                        "--channel".into(),
                        format!("1.25-strict/{risk}"),
                    ]
                } else {
                    vec![
                        "10-install-microk8s.sh".into(),
                        "--channel".into(),
                        format!("1.25/{risk}"),
                        "--classic".into(),
                    ]
                };
                assert_eq!(install_step(&config), expected);
            }
        }
    }
}

#[test]
fn common_disable_default_cni() {
    let spec = with(InitConfiguration {
        disable_default_cni: Some(true),
        ..Default::default()
    });
    for role in all_roles() {
        let worker = !role.is_control_plane();
        let config = cloud_config(&common_input(role, &spec)).unwrap();
        let step = install_step(&config);
        assert_eq!(step.contains(&"--disable-cni".to_string()), !worker, "{step:?}");
    }
}

#[test]
fn common_extra_files_and_kubelet_args() {
    let file = CloudInitWriteFile {
        content: "contents".into(),
        path: "/tmp/path".into(),
        permissions: "0644".into(),
        owner: "root:root".into(),
    };
    let spec = with(InitConfiguration {
        extra_write_files: Some(vec![file]),
        extra_kubelet_args: v(&["--arg=value", "--arg2=value2"]),
        ..Default::default()
    });
    let bare = with(InitConfiguration::default());
    for role in all_roles() {
        let config = cloud_config(&common_input(role.clone(), &spec)).unwrap();
        assert!(has_file(&config, "contents", "/tmp/path", "0644"));
        assert!(has_file(
            &config,
            "--arg=value\n--arg2=value2\n",
            "/var/tmp/extra-kubelet-args",
            "0400"
        ));
        assert!(steps(&config).iter().any(|s| s[0] == "10-kubelet-args.sh"));
        let config = cloud_config(&common_input(role, &bare)).unwrap();
        assert!(
            !config
                .write_files
                .iter()
                .any(|f| f.path == "/var/tmp/extra-kubelet-args")
        );
        assert!(!steps(&config).iter().any(|s| s[0] == "10-kubelet-args.sh"));
    }
}

#[test]
fn common_snapstore_proxies() {
    for (scheme, expected) in [("", "http"), ("http", "http"), ("https", "https")] {
        let spec = with(InitConfiguration {
            snapstore_proxy_scheme: s(scheme),
            snapstore_proxy_domain: s("snapstore.domain.com"),
            snapstore_proxy_id: s("ID123456789"),
            snapstore_http_proxy: s("http://http.proxy:3128"),
            snapstore_https_proxy: s("http://https.proxy:3128"),
            ..Default::default()
        });
        for role in all_roles() {
            let config = cloud_config(&common_input(role, &spec)).unwrap();
            let steps = steps(&config);
            assert!(
                steps.contains(
                    &owned(&[&["00-snapstore-proxy.sh", expected, "snapstore.domain.com", "ID123456789"]])[0]
                )
            );
            assert!(
                steps.contains(
                    &owned(&[&["00-snapd-proxy.sh", "http://http.proxy:3128", "http://https.proxy:3128"]])[0]
                )
            );
        }
    }
    // Domain without ID (or the reverse): no store proxy.
    let spec = with(InitConfiguration {
        snapstore_proxy_domain: s("snapstore.domain.com"),
        ..Default::default()
    });
    let config = cloud_config(&common_input(
        Role::Worker {
            join_addresses: addresses(),
        },
        &spec,
    ))
    .unwrap();
    assert!(!steps(&config).iter().any(|s| s[0] == "00-snapstore-proxy.sh"));
}

#[test]
fn common_custom_commands() {
    let spec = with(InitConfiguration {
        boot_commands: v(&["cmd1"]),
        pre_run_commands: v(&["cmd2"]),
        post_run_commands: v(&["cmd3"]),
        addons: v(&["ingress"]),
        ..Default::default()
    });
    for role in all_roles() {
        let config = cloud_config(&common_input(role, &spec)).unwrap();
        assert_eq!(config.bootcmd, ["cmd1"]);
        let steps = steps(&config);
        assert_eq!(steps.first().map(|s| s[0].as_str()), Some("sh:cmd2"));
        assert_eq!(steps.last().map(|s| s[0].as_str()), Some("sh:cmd3"));
        // The sentinel step comes right before the post commands (join CP: after addons).
        assert_eq!(steps[steps.len() - 2], [".", "99-bootstrap-complete.sh"]);
    }
}

#[test]
fn derived_vectors() {
    // §4.10
    let addons_of = |addons: &[&str]| {
        let spec = with(InitConfiguration {
            addons: Some(addons.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        });
        let config = cloud_config(&common_input(Role::Init { ca: ca() }, &spec)).unwrap();
        steps(&config)
            .into_iter()
            .find(|s| s[0] == "60-enable-addons.sh")
            .expect("addons")[1..]
            .to_vec()
    };
    assert_eq!(addons_of(&["dns:1.1.1.1", "ingress"]), ["dns:1.1.1.1", "ingress"]);
    assert_eq!(addons_of(&["ingress"]), ["ingress", "dns"]);
    assert_eq!(addons_of(&[]), ["dns"]);
    assert_eq!(addons_of(&["coredns"]), ["coredns"]);

    let spec = with(InitConfiguration::default());
    let input = RenderInput {
        endpoint_host: "10.0.0.10",
        ..common_input(Role::Init { ca: ca() }, &spec)
    };
    let config = cloud_config(&input).unwrap();
    assert!(steps(&config).contains(&owned(&[&["30-cert-san.sh", "IP", "10.0.0.10"]])[0]));

    let mut spec = with(InitConfiguration::default());
    spec.cluster_configuration = Some(ClusterConfiguration {
        port_compatibility_remap: Some(false),
        ..Default::default()
    });
    let config = cloud_config(&common_input(
        Role::JoinControlPlane {
            join_addresses: addresses(),
        },
        &spec,
    ))
    .unwrap();
    let steps = steps(&config);
    assert!(steps.contains(&owned(&[&["30-cluster-agent-port.sh", "25000"]])[0]));
    assert!(steps.contains(&owned(&[&["30-dqlite-port.sh", "19001"]])[0]));
    let join = steps.iter().find(|s| s[0] == "40-join.sh").expect("join");
    assert_eq!(join[1], format!("10.0.0.11:25000/{TOKEN}"));
}
