//! T0: what each role renders, and every way an input is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::*;
use mk8s_api::bootstrap::{CloudInitWriteFile, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, RenderError, RenderInput, Role, check, cloud_config, paths, placeholder, render};

fn names(doc: &str) -> Vec<String> {
    runcmd(doc)
        .into_iter()
        .map(|argv| match argv[0].as_str() {
            "." => format!(". {}", argv[1].trim_start_matches("/capi-scripts/")),
            first => first.trim_start_matches("/capi-scripts/").to_string(),
        })
        .collect()
}

#[test]
fn runcmd_order_per_role() {
    let spec = rich_spec();
    let head = [
        "sh:echo pre > /tmp/pre",
        "00-snapd-proxy.sh",
        "00-snapstore-proxy.sh",
        "00-disable-host-services.sh",
        "10-install-microk8s.sh",
        "10-containerd-proxy.sh",
        "20-wait-apiserver.sh",
    ];
    let cp_network = [
        "30-calico-ipip.sh",
        "30-cluster-agent-port.sh",
        "30-dqlite-port.sh",
        "30-cert-san.sh",
    ];
    let tail = [". 99-bootstrap-complete.sh", "sh:echo post > /tmp/post"];
    let expected: Vec<(&str, Vec<&str>)> = vec![
        (
            "init",
            [
                &head[..5],
                &["10-containerd-proxy.sh", "10-kubelet-args.sh", "20-wait-apiserver.sh"],
                &["30-refresh-certs.sh"],
                &cp_network,
                &[
                    "50-apiserver-port.sh",
                    "60-add-node.sh",
                    "80-mark-accepts-joins.sh",
                    "60-enable-addons.sh",
                ],
                &tail,
            ]
            .concat(),
        ),
        (
            "join-control-plane",
            [
                &head[..],
                &cp_network,
                &[
                    "40-join.sh",
                    // `microk8s join` copies the control plane node's kubelet arguments.
                    "10-kubelet-args.sh",
                    "50-apiserver-port.sh",
                    "60-add-node.sh",
                    "60-enable-addons.sh",
                ],
                &tail,
            ]
            .concat(),
        ),
        (
            "worker",
            [
                &head[..],
                &[
                    "30-cluster-agent-port.sh",
                    "40-join.sh",
                    "10-kubelet-args.sh",
                    "70-apiserver-proxy.sh",
                ],
                &tail,
            ]
            .concat(),
        ),
    ];
    for ((name, role), (expected_name, expected)) in roles().into_iter().zip(expected) {
        assert_eq!(name, expected_name);
        let doc = render(&input(role, &spec)).unwrap();
        assert_eq!(names(&doc), expected, "{name}");
    }
}

#[test]
fn write_files_per_role() {
    let spec = rich_spec();
    for (name, role) in roles() {
        let config = cloud_config(&input(role.clone(), &spec)).unwrap();
        let paths: Vec<&str> = config.write_files.iter().map(|f| f.path.as_str()).collect();
        let scripts: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| p.starts_with("/capi-scripts/"))
            .collect();
        let rest: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| !p.starts_with("/capi-scripts/"))
            .collect();
        // Scripts first: the library, then each script the runcmd calls, once, in order of use.
        assert_eq!(scripts[0], "/capi-scripts/lib.sh");
        let mut called: Vec<String> = Vec::new();
        for e in &config.runcmd {
            if let Some(argv) = e.argv() {
                let script = if argv[0] == "." { &argv[1] } else { &argv[0] };
                if !called.contains(script) {
                    called.push(script.clone());
                }
            }
        }
        assert_eq!(
            scripts[1..],
            called.iter().map(String::as_str).collect::<Vec<_>>()[..],
            "{name}"
        );
        assert!(paths.len() == scripts.len() + rest.len() && paths[..scripts.len()] == scripts[..]);
        let expected_rest: &[&str] = match role {
            Role::Init { .. } => &[
                "/var/tmp/ca.crt",
                "/var/tmp/ca.key",
                "/capi/etc/token",
                "/etc/sysctl.d/99-capi.conf",
                "/var/tmp/extra-kubelet-args",
            ],
            Role::JoinControlPlane { .. } => &[
                "/capi/etc/token",
                "/etc/sysctl.d/99-capi.conf",
                "/var/tmp/extra-kubelet-args",
            ],
            Role::Worker { .. } => &["/etc/sysctl.d/99-capi.conf", "/var/tmp/extra-kubelet-args"],
        };
        assert_eq!(rest, expected_rest, "{name}");
        for f in &config.write_files {
            let expected = match f.path.as_str() {
                p if p.starts_with("/capi-scripts/") => "0700",
                "/var/tmp/extra-kubelet-args" => "0400",
                "/etc/sysctl.d/99-capi.conf" => "0644",
                _ => "0600",
            };
            assert_eq!(f.permissions, expected, "{}", f.path);
        }
    }
}

#[test]
fn bootcmd_is_left_out_when_empty() {
    for spec in [minimal_spec(), {
        let mut s = rich_spec();
        if let Some(ic) = s.init_configuration.as_mut() {
            ic.boot_commands = Some(vec![]);
        }
        s
    }] {
        for (name, role) in roles() {
            let doc = render(&input(role, &spec)).unwrap();
            assert!(!doc.contains("bootcmd"), "{name}");
            assert!(parse(&doc).get("bootcmd").is_none());
        }
    }
    let doc = render(&input(Role::Init { ca: ca() }, &rich_spec())).unwrap();
    assert!(
        doc.ends_with("bootcmd:\n- echo booting {{ ds.meta_data.local_hostname }}\n"),
        "{doc}"
    );
}

#[test]
fn document_shape() {
    for spec in [minimal_spec(), rich_spec()] {
        for (name, role) in roles() {
            let doc = render(&input(role, &spec)).unwrap();
            assert!(
                doc.starts_with("## template: jinja\n#cloud-config\nwrite_files:\n"),
                "{name}"
            );
            assert_eq!(check(&doc), Ok(()), "{name}");
            // Permissions always quoted, scripts as literal blocks.
            assert!(
                doc.lines()
                    .filter(|l| l.starts_with("  permissions:"))
                    .all(|l| l.ends_with('"'))
            );
            assert!(doc.contains("  content: |\n    #!/bin/bash\n"));
        }
    }
}

#[test]
fn implicit_dns_only_on_the_init_node() {
    for (addons, init, join) in [
        (None, vec!["dns"], None),
        (v(&["ingress"]), vec!["ingress", "dns"], Some(vec!["ingress"])),
        (
            v(&["dns:10.0.0.10", "ingress"]),
            vec!["dns:10.0.0.10", "ingress"],
            Some(vec!["dns:10.0.0.10", "ingress"]),
        ),
        (v(&["coredns"]), vec!["coredns"], Some(vec!["coredns"])),
    ] {
        let spec = MicroK8sConfigSpec {
            init_configuration: Some(InitConfiguration {
                addons,
                ..Default::default()
            }),
            ..Default::default()
        };
        for (name, role) in roles() {
            let doc = render(&input(role, &spec)).unwrap();
            let enable = runcmd(&doc)
                .into_iter()
                .find(|a| a[0].ends_with("60-enable-addons.sh"))
                .map(|a| a[1..].to_vec());
            let expected = match name {
                "init" => Some(init.clone()),
                "join-control-plane" => join.clone(),
                _ => None,
            };
            assert_eq!(
                enable,
                expected.map(|e| e.iter().map(|s| s.to_string()).collect()),
                "{name}"
            );
        }
    }
}

#[test]
fn ports_follow_the_remap_setting() {
    for (remap, agent, dqlite) in [
        (None, "30000", "2379"),
        (Some(true), "30000", "2379"),
        (Some(false), "25000", "19001"),
    ] {
        let spec = MicroK8sConfigSpec {
            cluster_configuration: Some(mk8s_api::bootstrap::ClusterConfiguration {
                port_compatibility_remap: remap,
                ..Default::default()
            }),
            ..Default::default()
        };
        for (name, role) in roles() {
            let steps = runcmd(&render(&input(role, &spec)).unwrap());
            let arg = |script: &str| steps.iter().find(|a| a[0].ends_with(script)).map(|a| a[1].clone());
            assert_eq!(arg("30-cluster-agent-port.sh").as_deref(), Some(agent), "{name}");
            let expected_dqlite = (name != "worker").then_some(dqlite);
            assert_eq!(arg("30-dqlite-port.sh").as_deref(), expected_dqlite, "{name}");
            if name != "init" {
                let join = steps.iter().find(|a| a[0].ends_with("40-join.sh")).unwrap();
                let first_url = join[1..].iter().find(|a| *a != "--worker").unwrap();
                assert_eq!(*first_url, format!("10.0.0.11:{agent}/{TOKEN}"), "{name}");
            }
        }
    }
}

#[test]
fn ipv6_is_bracketed_in_urls_and_endpoints_but_not_in_sans() {
    let spec = minimal_spec();
    let addresses = vec![
        "fd00::1".to_string(),
        "[fd00::2]".to_string(),
        "10.0.0.1".to_string(),
        "cp.example".to_string(),
    ];
    let urls: Vec<String> = ["[fd00::1]", "[fd00::2]", "10.0.0.1", "cp.example"]
        .iter()
        .map(|h| format!("{h}:30000/{TOKEN}"))
        .collect();
    let worker = RenderInput {
        endpoint_host: "fd00::10",
        ..input(
            Role::Worker {
                join_addresses: addresses.clone(),
            },
            &spec,
        )
    };
    let steps = runcmd(&render(&worker).unwrap());
    let join = steps.iter().find(|a| a[0].ends_with("40-join.sh")).unwrap();
    assert_eq!(join[2..], urls[..]);
    let proxy = steps.iter().find(|a| a[0].ends_with("70-apiserver-proxy.sh")).unwrap();
    assert_eq!(proxy[1], "[fd00::10]:6443");
    let cp = RenderInput {
        endpoint_host: "[fd00::10]",
        ..input(
            Role::JoinControlPlane {
                join_addresses: addresses,
            },
            &spec,
        )
    };
    let steps = runcmd(&render(&cp).unwrap());
    let san = steps.iter().find(|a| a[0].ends_with("30-cert-san.sh")).unwrap();
    assert_eq!(san[1..], ["IP", "fd00::10"]);
    let join = steps.iter().find(|a| a[0].ends_with("40-join.sh")).unwrap();
    assert_eq!(join[1..], urls[..]);
}

#[test]
fn generated_values_are_escaped_for_jinja_in_the_document() {
    let mut spec = minimal_spec();
    spec.init_configuration = Some(InitConfiguration {
        addons: v(&["{{ x }}", "{% endraw %}", "{# c #}"]),
        extra_write_files: Some(vec![CloudInitWriteFile {
            content: "a {{ b }}\n".into(),
            path: "/etc/x".into(),
            permissions: "0644".into(),
            owner: "root:root".into(),
        }]),
        ..Default::default()
    });
    let doc = render(&input(Role::Init { ca: ca() }, &spec)).unwrap();
    assert!(
        doc.contains(r#""{{ '{{' }} x }}", "{{ '{%' }} endraw %}", "{{ '{#' }} c #}", "dns"]"#),
        "{doc}"
    );
    assert!(doc.contains("  content: |\n    a {{ '{{' }} b }}\n"), "{doc}");
    // The model keeps the real values.
    let steps = runcmd(&doc);
    let enable = steps.iter().find(|a| a[0].ends_with("60-enable-addons.sh")).unwrap();
    assert_eq!(enable[1..], ["{{ x }}", "{% endraw %}", "{# c #}", "dns"]);
}

fn err(input: &RenderInput<'_>) -> RenderError {
    let e = render(input).unwrap_err();
    let message = e.to_string();
    assert!(!message.is_empty());
    assert!(
        !message.contains(TOKEN) && !message.contains(AUTH),
        "a secret in {message:?}"
    );
    e
}

#[test]
fn invalid_inputs_are_refused_with_clear_messages() {
    let spec = minimal_spec();
    let worker = || Role::Worker {
        join_addresses: addresses(),
    };
    let base = || input(worker(), &spec);

    let short = "a".repeat(31);
    let e = err(&RenderInput {
        join_token: &short,
        ..base()
    });
    assert_eq!(
        e.to_string(),
        "the join token is invalid: it must be exactly 32 characters long, not 31"
    );
    let slash = format!("{}/", "a".repeat(31));
    assert_eq!(
        err(&RenderInput {
            join_token: &slash,
            ..base()
        }),
        RenderError::JoinTokenCharacters
    );

    assert_eq!(
        err(&RenderInput {
            kubernetes_version: "v1.28",
            ..base()
        })
        .to_string(),
        "kubernetes version \"v1.28\" is not a semantic version (MAJOR.MINOR.PATCH, optional leading v): expected three dot-separated numbers"
    );
    assert_eq!(
        err(&RenderInput {
            endpoint_host: "",
            ..base()
        }),
        RenderError::EmptyEndpointHost
    );
    assert_eq!(
        err(&RenderInput {
            endpoint_host: "bad host",
            ..base()
        })
        .to_string(),
        "the cluster's control plane endpoint host \"bad host\" is neither an IP address nor a DNS name"
    );
    assert_eq!(
        err(&RenderInput {
            endpoint_port: 0,
            ..base()
        }),
        RenderError::InvalidEndpointPort
    );
    assert_eq!(
        err(&input(Role::Worker { join_addresses: vec![] }, &spec)),
        RenderError::NoJoinAddress
    );
    assert_eq!(
        err(&input(Role::JoinControlPlane { join_addresses: vec![] }, &spec)),
        RenderError::NoJoinAddress
    );
    assert_eq!(
        err(&input(
            Role::JoinControlPlane {
                join_addresses: vec!["10.0.0.1; rm -rf /".into()]
            },
            &spec
        ))
        .to_string(),
        "the control plane node address \"10.0.0.1; rm -rf /\" is neither an IP address nor a DNS name"
    );
    let cp = || Role::JoinControlPlane {
        join_addresses: addresses(),
    };
    assert_eq!(
        err(&RenderInput {
            auth_token: "",
            ..input(cp(), &spec)
        }),
        RenderError::InvalidAuthToken
    );
    // Workers ignore the auth token.
    assert!(
        render(&RenderInput {
            auth_token: "",
            ..base()
        })
        .is_ok()
    );
    let no_key = Role::Init {
        ca: CaFiles {
            cert_pem: "x".into(),
            key_pem: " \n".into(),
        },
    };
    assert_eq!(
        err(&input(no_key, &spec)).to_string(),
        "the cluster CA private key is empty"
    );
    let no_cert = Role::Init {
        ca: CaFiles {
            cert_pem: String::new(),
            key_pem: "k".into(),
        },
    };
    assert_eq!(
        err(&input(no_cert, &spec)).to_string(),
        "the cluster CA certificate is empty"
    );

    let field_cases: Vec<(InitConfiguration, &str)> = vec![
        (
            InitConfiguration {
                join_token_ttl_in_secs: Some(0),
                ..Default::default()
            },
            "initConfiguration.joinTokenTTLInSecs must be a positive number of seconds, not 0",
        ),
        (
            InitConfiguration {
                join_token_ttl_in_secs: Some(-5),
                ..Default::default()
            },
            "initConfiguration.joinTokenTTLInSecs must be a positive number of seconds, not -5",
        ),
        (
            InitConfiguration {
                confinement: s("strict"),
                ..Default::default()
            },
            "",
        ),
        (
            InitConfiguration {
                risk_level: s("nightly"),
                ..Default::default()
            },
            "initConfiguration.riskLevel: unsupported value \"nightly\", expected one of stable, candidate, beta, edge",
        ),
        (
            InitConfiguration {
                snapstore_proxy_scheme: s("ftp"),
                ..Default::default()
            },
            "initConfiguration.snapstoreProxyScheme: unsupported value \"ftp\", expected one of http, https",
        ),
        (
            InitConfiguration {
                snapstore_proxy_domain: s("http://store"),
                ..Default::default()
            },
            "initConfiguration.snapstoreProxyDomain: must be a host name or address, optionally with :port",
        ),
        (
            InitConfiguration {
                snapstore_proxy_id: s("a b"),
                ..Default::default()
            },
            "initConfiguration.snapstoreProxyId: must not contain whitespace or control characters",
        ),
        (
            InitConfiguration {
                http_proxy: s("http://a\nb"),
                ..Default::default()
            },
            "initConfiguration.httpProxy: must not contain line breaks or other control characters",
        ),
        (
            InitConfiguration {
                addons: v(&["ingress", ""]),
                ..Default::default()
            },
            "initConfiguration.addons[1]: must not be empty",
        ),
        (
            InitConfiguration {
                extra_kubelet_args: v(&["--a=1\n--b=2"]),
                ..Default::default()
            },
            "initConfiguration.extraKubeletArgs[0]: must not contain line breaks or other control characters",
        ),
        (
            InitConfiguration {
                snap_refresh_hold: s("10 days"),
                ..Default::default()
            },
            "initConfiguration.snapRefreshHold: must be \"forever\" or a duration such as \"720h\"",
        ),
        (
            InitConfiguration {
                extra_write_files: Some(vec![CloudInitWriteFile {
                    path: "etc/x".into(),
                    permissions: "0644".into(),
                    owner: "root".into(),
                    content: String::new(),
                }]),
                ..Default::default()
            },
            "initConfiguration.extraWriteFiles[0].path: must be the absolute path of a file",
        ),
        (
            InitConfiguration {
                extra_write_files: Some(vec![CloudInitWriteFile {
                    path: "/etc/x".into(),
                    permissions: "rw".into(),
                    owner: "root".into(),
                    content: String::new(),
                }]),
                ..Default::default()
            },
            "initConfiguration.extraWriteFiles[0].permissions: must be octal permissions such as \"0644\"",
        ),
        (
            InitConfiguration {
                extra_write_files: Some(vec![CloudInitWriteFile {
                    path: "/etc/x".into(),
                    permissions: "644".into(),
                    owner: String::new(),
                    content: String::new(),
                }]),
                ..Default::default()
            },
            "initConfiguration.extraWriteFiles[0].owner: must not be empty",
        ),
    ];
    for (init, message) in field_cases {
        let spec = MicroK8sConfigSpec {
            init_configuration: Some(init),
            ..Default::default()
        };
        let version = if message.is_empty() { "v1.24.0" } else { VERSION };
        let e = err(&RenderInput {
            kubernetes_version: version,
            ..input(Role::Init { ca: ca() }, &spec)
        });
        if message.is_empty() {
            assert!(matches!(e, RenderError::StrictConfinementUnsupported { .. }), "{e:?}");
        } else {
            assert_eq!(e.to_string(), message);
        }
    }
}

#[test]
fn empty_strings_mean_unset() {
    let spec = MicroK8sConfigSpec {
        init_configuration: Some(InitConfiguration {
            http_proxy: s(""),
            https_proxy: s(""),
            no_proxy: s(""),
            snapstore_proxy_scheme: s(""),
            snapstore_proxy_domain: s(""),
            snapstore_proxy_id: s(""),
            snapstore_http_proxy: s(""),
            snapstore_https_proxy: s(""),
            snap_refresh_hold: s(""),
            confinement: s(""),
            risk_level: s(""),
            ..Default::default()
        }),
        ..Default::default()
    };
    for (name, role) in roles() {
        let bare = render(&input(role.clone(), &minimal_spec())).unwrap();
        assert_eq!(render(&input(role, &spec)).unwrap(), bare, "{name}");
    }
}

#[test]
fn placeholders_render() {
    let spec = rich_spec();
    let role = Role::Init {
        ca: CaFiles {
            cert_pem: placeholder::CA_CERT.into(),
            key_pem: placeholder::CA_KEY.into(),
        },
    };
    let doc = render(&RenderInput {
        join_token: placeholder::JOIN_TOKEN,
        auth_token: placeholder::AUTH_TOKEN,
        ..input(role, &spec)
    })
    .unwrap();
    assert_eq!(check(&doc), Ok(()));
    assert!(doc.contains(placeholder::JOIN_TOKEN) && doc.contains(placeholder::AUTH_TOKEN));
}

#[test]
fn check_reports_broken_documents() {
    let good = render(&input(Role::Init { ca: ca() }, &rich_spec())).unwrap();
    assert_eq!(check(&good), Ok(()));
    let cases = [
        (good.replacen("## template: jinja\n", "", 1), "does not start with"),
        (
            good.replace("permissions: \"0700\"", "permissions: 0700"),
            "permissions is not a quoted string",
        ),
        (
            good.replace("- path: /var/tmp/ca.key", "- path: var/tmp/ca.key"),
            "path is not an absolute path",
        ),
        (
            good.replace(
                "bootcmd:\n- echo booting {{ ds.meta_data.local_hostname }}\n",
                "bootcmd: []\n",
            ),
            "bootcmd is present but not",
        ),
        (
            good.replace("- [\".\", \"/capi-scripts/99-bootstrap-complete.sh\"]\n", ""),
            "never reaches the bootstrap-complete step",
        ),
        (good.replace("runcmd:\n", "runcmd: [\n"), "does not parse as YAML"),
        (format!("{good}extra: 1\n"), "unexpected top-level key"),
        (
            good.replace("- echo pre > /tmp/pre\n", "- 42\n"),
            "runcmd[0] is neither",
        ),
    ];
    for (doc, expected) in cases {
        let problems = check(&doc).expect_err(expected);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[test]
fn script_registry_matches_the_scripts_directory() {
    let mut on_disk: Vec<String> = std::fs::read_dir(crate_dir().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = mk8s_cloudinit::scripts().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(embedded[0], "lib.sh");
    embedded.sort();
    assert_eq!(embedded, on_disk);
    for (name, content) in mk8s_cloudinit::scripts() {
        let expected = std::fs::read_to_string(crate_dir().join("scripts").join(name)).unwrap();
        assert_eq!(*content, expected, "{name}");
        if *name != "lib.sh" {
            let shebang = if *name == "99-bootstrap-complete.sh" {
                "#!/bin/sh\n"
            } else {
                "#!/bin/bash\n"
            };
            assert!(content.starts_with(shebang), "{name}");
        }
        if name.ends_with(".sh") && *name != "lib.sh" && *name != "99-bootstrap-complete.sh" {
            assert!(content.contains("\nset -euo pipefail\n"), "{name}");
        }
    }
}

#[test]
fn scripts_use_the_documented_paths() {
    let all: String = mk8s_cloudinit::scripts().iter().map(|(_, c)| *c).collect();
    for path in [
        paths::CA_CERT.trim_end_matches("/ca.crt"),
        paths::EXTRA_KUBELET_ARGS,
        paths::BOOTSTRAP_SENTINEL,
        paths::FAILED_STEP_MARKER,
        paths::SNAP_CURRENT,
        "/etc/systemd/system",
        "capi-microk8s-apiserver-redirect.service",
    ] {
        assert!(all.contains(path), "{path} not used by the scripts");
    }
    assert!(paths::APISERVER_REDIRECT_UNIT.ends_with("/capi-microk8s-apiserver-redirect.service"));
    // No package installation at boot: nodes may be air-gapped.
    assert!(!all.contains("apt-get") && !all.contains("snap install curl"));
}

#[test]
fn debug_output_holds_no_secret() {
    let spec = minimal_spec();
    let secret_key = "-----BEGIN RSA PRIVATE KEY-----\nSECRETKEYDATA\n";
    let role = Role::Init {
        ca: CaFiles {
            cert_pem: "cert".into(),
            key_pem: secret_key.into(),
        },
    };
    let printed = format!(
        "{:?}",
        RenderInput {
            auth_token: "AUTHSECRET",
            ..input(role, &spec)
        }
    );
    for secret in [TOKEN, "AUTHSECRET", "SECRETKEYDATA"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}
