//! Property test (seeded, no external crate): random — also invalid — inputs never panic;
//! every rendered document parses, passes `check`, has the expected top-level keys, and
//! gives back exactly the model's values once our Jinja escapes are undone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::rng::Rng;
use common::*;
use mk8s_api::bootstrap::{CloudInitWriteFile, ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, RenderInput, Role, check, cloud_config, jinja, render};

/// Anything at all, valid or not.
fn wild_spec(rng: &mut Rng) -> MicroK8sConfigSpec {
    let t = |rng: &mut Rng| -> Option<String> {
        match rng.below(4) {
            0 => None,
            1 => Some(String::new()),
            2 => Some(rng.text(true)),
            _ => Some(rng.text(false)),
        }
    };
    let list = |rng: &mut Rng| -> Option<Vec<String>> {
        rng.chance(70).then(|| {
            (0..rng.below(4))
                .map(|_| {
                    let newlines = rng.chance(30);
                    rng.text(newlines)
                })
                .collect()
        })
    };
    MicroK8sConfigSpec {
        cluster_configuration: rng.chance(50).then(|| ClusterConfiguration {
            api_version: t(rng),
            kind: t(rng),
            port_compatibility_remap: rng.chance(50).then(|| rng.chance(50)),
        }),
        init_configuration: rng.chance(90).then(|| InitConfiguration {
            api_version: t(rng),
            kind: t(rng),
            join_token_ttl_in_secs: rng.chance(50).then(|| rng.next() as i64),
            https_proxy: t(rng),
            http_proxy: t(rng),
            no_proxy: t(rng),
            addons: list(rng),
            ip_in_ip: rng.chance(50).then(|| rng.chance(50)),
            confinement: if rng.chance(50) {
                Some(rng.pick(&["", "classic", "strict"]).to_string())
            } else {
                t(rng)
            },
            risk_level: if rng.chance(50) {
                Some(rng.pick(&["", "stable", "edge"]).to_string())
            } else {
                t(rng)
            },
            disable_default_cni: rng.chance(50).then(|| rng.chance(50)),
            snapstore_proxy_scheme: if rng.chance(50) {
                Some(rng.pick(&["", "http", "https"]).to_string())
            } else {
                t(rng)
            },
            snapstore_proxy_domain: t(rng),
            snapstore_proxy_id: t(rng),
            snapstore_http_proxy: t(rng),
            snapstore_https_proxy: t(rng),
            extra_write_files: rng.chance(50).then(|| {
                (0..rng.below(3))
                    .map(|_| CloudInitWriteFile {
                        content: rng.text(true),
                        path: if rng.chance(70) {
                            format!("/x{}", rng.text(false))
                        } else {
                            rng.text(true)
                        },
                        permissions: rng.pick(&["0644", "0999", "", "rw", "755"]).to_string(),
                        owner: {
                            let newlines = rng.chance(20);
                            rng.text(newlines)
                        },
                    })
                    .collect()
            }),
            extra_kubelet_args: list(rng),
            boot_commands: list(rng),
            pre_run_commands: list(rng),
            post_run_commands: list(rng),
            snap_refresh_hold: if rng.chance(50) {
                Some(rng.pick(&["forever", "72h", "1d"]).to_string())
            } else {
                t(rng)
            },
        }),
    }
}

fn wild_role(rng: &mut Rng) -> Role {
    let addresses = |rng: &mut Rng| {
        (0..rng.below(3))
            .map(|_| {
                if rng.chance(70) {
                    rng.pick(&["10.0.0.1", "fd00::1", "cp.example", "[::1]"]).to_string()
                } else {
                    rng.text(true)
                }
            })
            .collect()
    };
    match rng.below(3) {
        0 => Role::Init {
            ca: CaFiles {
                cert_pem: rng.text(true),
                key_pem: rng.text(true),
            },
        },
        1 => Role::JoinControlPlane {
            join_addresses: addresses(rng),
        },
        _ => Role::Worker {
            join_addresses: addresses(rng),
        },
    }
}

#[test]
fn random_inputs_never_panic_and_always_render_valid_documents() {
    let mut rng = Rng::new(0xC10D_1217);
    let (mut rendered, mut refused) = (0, 0);
    for case in 0..1000 {
        // Half the cases are valid throughout, the others mix in anything at all.
        let wild = rng.chance(50);
        let wild_here = |rng: &mut Rng, percent: u64| wild && rng.chance(percent);
        let spec = if wild_here(&mut rng, 50) {
            wild_spec(&mut rng)
        } else {
            rng.valid_spec()
        };
        let role = if wild_here(&mut rng, 50) {
            wild_role(&mut rng)
        } else {
            rng.valid_role()
        };
        let version = if wild_here(&mut rng, 20) {
            rng.text(false)
        } else {
            rng.pick(&["v1.33.4", "1.25.0", "v1.34.0-rc.1", "v2.0.0"]).to_string()
        };
        let token = if wild_here(&mut rng, 15) {
            rng.text(false)
        } else {
            TOKEN.to_string()
        };
        let auth = if wild_here(&mut rng, 15) {
            rng.text(true)
        } else {
            rng.word()
        };
        let host = if wild_here(&mut rng, 20) {
            rng.text(false)
        } else {
            rng.pick(&["k8s.example.com", "10.0.0.10", "fd00::10", "lb"])
                .to_string()
        };
        let port = if wild_here(&mut rng, 10) {
            0
        } else {
            1 + rng.below(65_535) as u16
        };
        let input = RenderInput {
            role,
            spec: &spec,
            kubernetes_version: &version,
            endpoint_host: &host,
            endpoint_port: port,
            join_token: &token,
            auth_token: &auth,
        };
        match render(&input) {
            Err(e) => {
                refused += 1;
                let message = e.to_string();
                assert!(!message.is_empty());
                assert!(!message.contains(TOKEN), "case {case}: token in {message:?}");
                assert!(cloud_config(&input).is_err());
            }
            Ok(doc) => {
                rendered += 1;
                assert_eq!(check(&doc), Ok(()), "case {case}:\n{doc}");
                let value = parse(&doc);
                let keys: Vec<&String> = value.as_object().expect("mapping").keys().collect();
                assert!(keys.len() == 2 || keys.len() == 3, "case {case}: {keys:?}");
                // Our escapes undone, the document holds exactly the model's values (users'
                // commands, which Jinja would render, are left as they are by unescape only
                // when they hold no escape form themselves — the generator's do not).
                let config = cloud_config(&input).expect("rendered once already");
                let commands = config.runcmd.iter().filter_map(|e| match e {
                    mk8s_cloudinit::RunCmd::Shell(s) => Some(s),
                    mk8s_cloudinit::RunCmd::Argv(_) => None,
                });
                // The kubelet arguments file is the user's template too.
                let templates: Vec<String> = config
                    .write_files
                    .iter()
                    .filter(|f| f.template)
                    .flat_map(|f| f.content.lines().map(str::to_string))
                    .collect();
                let user_has_form = commands.chain(&config.bootcmd).chain(&templates).any(|s| {
                    let end = s.trim_end_matches('\n');
                    s.contains("{{ '") || end.ends_with("%}") || end.ends_with("#}")
                });
                if !user_has_form {
                    assert_eq!(
                        parse(&jinja::unescape(&doc)),
                        model_value(&config),
                        "case {case}:\n{doc}"
                    );
                }
            }
        }
    }
    eprintln!("{rendered} documents rendered, {refused} inputs refused");
    assert!(
        rendered > 400 && refused > 150,
        "{rendered} rendered, {refused} refused: generator too one-sided"
    );
}
