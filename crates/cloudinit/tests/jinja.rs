//! Quoting and Jinja: any value arrives intact at the scripts, through cloud-init's own
//! Jinja rendering and YAML parsing, cloud-init's runcmd quoting, dash and bash.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::node::{Machine, have_shells};
use common::rng::{NASTY, Rng};
use common::*;
use mk8s_api::bootstrap::{CloudInitWriteFile, MicroK8sConfigSpec};
use mk8s_cloudinit::{Role, cloud_config, render};

/// Values that must survive everything, one line each (the API's single-line fields).
fn nasty_values() -> Vec<String> {
    let mut values: Vec<String> = NASTY
        .iter()
        .filter(|s| !s.contains('\t'))
        .map(|s| s.to_string())
        .collect();
    values.extend([
        "a {% endraw %} b {{ '{%' }} c".to_string(),
        "$(touch \"$CAPI_ROOT/pwned\") `id` ${HOME} \"q\" 'q' \\ {{ x }} {% y %} {# z #}".to_string(),
        " leading and trailing ".to_string(),
    ]);
    values
}

fn nasty_spec() -> MicroK8sConfigSpec {
    let mut spec = rich_spec();
    let values = nasty_values();
    let joined = values.join("|");
    if let Some(ic) = spec.init_configuration.as_mut() {
        ic.addons = Some(values.clone());
        ic.http_proxy = Some(format!("http://{joined}"));
        ic.https_proxy = Some(joined.clone());
        ic.no_proxy = Some("{{ no }},$NO,'x'".into());
        ic.snapstore_http_proxy = Some(joined.clone());
        // Kubelet arguments are the user's Jinja templates (instance data allowed): the nasty
        // values without delimiters, and one using instance data.
        let mut args: Vec<String> = values
            .iter()
            .filter(|v| !mk8s_cloudinit::jinja::has_delimiter(v))
            .map(|v| format!("--node-labels={v}"))
            .collect();
        args.push("--node-labels=host={{ ds.meta_data.local_hostname }}".into());
        ic.extra_kubelet_args = Some(args);
        ic.extra_write_files = Some(vec![CloudInitWriteFile {
            content: format!(
                "{}\n{{% endraw %}}\n  indented {{{{ still }}}}\n\ttab\n",
                values.join("\n")
            ),
            path: "/etc/{{ literal }}/file $x".into(),
            permissions: "0640".into(),
            owner: "root:root".into(),
        }]);
        ic.pre_run_commands = v(&["echo \"{{ ds.meta_data.local_hostname }}\" > \"$CAPI_ROOT/jinja-host\""]);
        ic.post_run_commands = v(&["printf '%s\\n' \"{{ v1.local_hostname }}\" 'a\\b' > \"$CAPI_ROOT/post\""]);
    }
    spec
}

#[test]
fn nasty_values_arrive_intact_at_the_scripts() {
    if !have_shells() {
        return;
    }
    let spec = nasty_spec();
    let doc = render(&input(Role::Init { ca: ca() }, &spec)).expect("render");
    let m = Machine::new("nasty");
    let run = m.boot(&doc, None);
    assert_eq!(run.status, 0, "{}\n{}", run.output, run.dump());
    assert!(!m.exists("/pwned"), "a value was executed");

    // Addons: each exactly one argument, in order, then the implicit dns (no entry has it).
    let enabled: Vec<String> = run
        .calls_of("microk8s", &["enable"])
        .iter()
        .map(|c| c[2..].join("\u{1}"))
        .filter(|a| a != "community")
        .collect();
    let mut expected = nasty_values();
    expected.push("dns".into());
    assert_eq!(enabled, expected);

    let ic = spec.init_configuration.clone().unwrap_or_default();
    let snapd = format!("proxy.http={}", ic.snapstore_http_proxy.unwrap_or_default());
    run.assert_called(&["snap", "set", "system", &snapd]);

    // containerd-env is sourced by MicroK8s as shell: the values must come back exactly.
    let env = m.path("/var/snap/microk8s/current/args/containerd-env");
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("set -a; . \"$1\"; printf '%s\\0' \"$http_proxy\" \"$HTTP_PROXY\" \"$https_proxy\" \"$no_proxy\" \"$NO_PROXY\"")
        .arg("sh")
        .arg(&env)
        .env("CAPI_ROOT", &m.root)
        .output()
        .expect("sh");
    assert!(out.status.success());
    let sourced: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .map(str::to_string)
        .collect();
    let http = ic.http_proxy.unwrap_or_default();
    let no = ic.no_proxy.unwrap_or_default();
    assert_eq!(
        sourced[..5],
        [http.clone(), http, ic.https_proxy.unwrap_or_default(), no.clone(), no]
    );
    assert!(!m.exists("/pwned"), "sourcing containerd-env executed a value");

    let kubelet = m.read("/var/snap/microk8s/current/args/kubelet");
    let args = ic
        .extra_kubelet_args
        .unwrap_or_default()
        .join("\n")
        .replace("{{ ds.meta_data.local_hostname }}", "node-1");
    assert!(
        kubelet.ends_with(&format!("\n{args}\n# End of the extra arguments from Cluster API\n")),
        "{kubelet}"
    );

    let file = &ic.extra_write_files.unwrap_or_default()[0];
    assert_eq!(m.read(&file.path), file.content);

    // Users' commands are Jinja templates: instance data was substituted.
    assert_eq!(m.read("/jinja-host").trim_end(), "node-1", "with cloud-init's Jinja");
    assert_eq!(m.read("/post"), "node-1\na\\b\n");
}

#[test]
fn generated_values_survive_cloud_init_jinja_and_yaml_exactly() {
    if !has_cloud_init_python() {
        return;
    }
    // Property: for random valid inputs, what cloud-init parses equals the model.
    let mut rng = Rng::new(0x5EED_0001);
    let mut docs = Vec::new();
    let mut models = Vec::new();
    while docs.len() < 300 {
        let spec = rng.valid_spec();
        let role = rng.valid_role();
        let version = rng
            .pick(&["v1.33.4", "1.25.0", "v1.34.0-rc.1+b.2", "v1.28.3"])
            .to_string();
        let auth = rng.word();
        let host = rng
            .pick(&["k8s.example.com", "10.0.0.10", "fd00::10", "[fd00::10]", "lb"])
            .to_string();
        let input = mk8s_cloudinit::RenderInput {
            role,
            spec: &spec,
            kubernetes_version: &version,
            endpoint_host: &host,
            endpoint_port: 1 + rng.below(65535) as u16,
            join_token: TOKEN,
            auth_token: &auth,
        };
        let config = cloud_config(&input).unwrap_or_else(|e| panic!("valid input rejected: {e}"));
        docs.push(render(&input).expect("render"));
        models.push(model_value(&config));
    }
    let rendered = cloud_init_render(&docs);
    for (i, ((doc, model), (text, parsed))) in docs.iter().zip(&models).zip(&rendered).enumerate() {
        assert_eq!(
            parsed, model,
            "document {i} changed through cloud-init:\n{doc}\n--- rendered:\n{text}"
        );
        assert!(text.starts_with("#cloud-config\n"), "document {i}");
    }
}

#[test]
fn jinja_escapes_match_real_jinja() {
    if !has_cloud_init_python() {
        return;
    }
    // escape() as a whole template, through cloud-init's Jinja: renders to the input.
    let mut rng = Rng::new(7);
    let mut samples: Vec<String> = NASTY.iter().map(|s| s.to_string()).collect();
    samples.extend((0..200).map(|_| rng.text(true)));
    let docs: Vec<String> = samples
        .iter()
        .map(|s| {
            let quoted = serde_json::to_string(&mk8s_cloudinit::jinja::escape(s)).expect("json");
            format!("## template: jinja\n#cloud-config\nruncmd:\n- [{quoted}]\n")
        })
        .collect();
    for (sample, (_, parsed)) in samples.iter().zip(cloud_init_render(&docs)) {
        assert_eq!(parsed["runcmd"][0][0].as_str(), Some(sample.as_str()));
    }
}

#[test]
fn user_commands_stay_jinja_templates() {
    let mut spec = minimal_spec();
    spec.init_configuration = Some(mk8s_api::bootstrap::InitConfiguration {
        boot_commands: v(&["echo {{ v1.local_hostname }}"]),
        pre_run_commands: v(&["echo \"{{ ds.meta_data.local_hostname }}\" 'x'"]),
        post_run_commands: v(&[
            "echo {% if true %}yes{% endif %}",
            "echo a {# comment #}",
            "{% if true %}\necho multi\n{% endif %}\n",
            "echo \"quoted\" {% if true %}z{% endif %}",
        ]),
        addons: v(&["{{ not-a-template }}"]),
        extra_kubelet_args: v(&[
            "--node-ip={{ ds.meta_data.local_hostname }}",
            "--max-pods=110 {% if true %}{# c #}{% endif %}",
        ]),
        ..Default::default()
    });
    let doc = render(&input(Role::Init { ca: ca() }, &spec)).expect("render");
    // Raw in the document...
    assert!(doc.contains("- echo {{ v1.local_hostname }}\n"), "{doc}");
    assert!(
        doc.contains("\"{{ '{{' }} not-a-template }}\""),
        "ours are escaped: {doc}"
    );
    if !has_cloud_init_python() {
        return;
    }
    // ...rendered by cloud-init.
    let (text, parsed) = cloud_init_render(&[doc]).pop().expect("one");
    assert_eq!(parsed["bootcmd"][0], "echo node-1", "{text}");
    assert_eq!(parsed["runcmd"][0], "echo \"node-1\" 'x'");
    let runcmd = parsed["runcmd"].as_array().cloned().unwrap_or_default();
    let tail: Vec<&str> = runcmd[runcmd.len() - 4..].iter().filter_map(|e| e.as_str()).collect();
    assert_eq!(tail, ["echo yes", "echo a ", "echo multi\n", "echo \"quoted\" z"]);
    let addons = parsed["runcmd"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e[0] == "/capi-scripts/60-enable-addons.sh"))
        .cloned();
    assert_eq!(addons.map(|a| a[1].clone()), Some("{{ not-a-template }}".into()));
    // Kubelet arguments are templates too, line by line (a line ending in a tag keeps its
    // line break).
    let kubelet_args = parsed["write_files"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["path"] == "/var/tmp/extra-kubelet-args"))
        .map(|f| f["content"].clone());
    assert_eq!(
        kubelet_args,
        Some("--node-ip=node-1\n--max-pods=110 \n".into()),
        "{text}"
    );
}

#[test]
fn scripts_have_no_jinja_delimiters() {
    // So that they appear verbatim in the document (escaping would still be correct).
    for (name, content) in mk8s_cloudinit::scripts() {
        assert!(!mk8s_cloudinit::jinja::has_delimiter(content), "{name}");
    }
}
