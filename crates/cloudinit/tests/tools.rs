//! T0b: the artefacts through the real tools — `cloud-init schema` for every rendered
//! document (after cloud-init's own Jinja rendering, which also drops the header the
//! validator rejects) and `shellcheck` for every script.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use std::process::Command;

use common::rng::Rng;
use common::*;
use mk8s_cloudinit::{RenderInput, render};

fn documents() -> Vec<(String, String)> {
    let mut docs = Vec::new();
    for (spec_name, spec) in [("rich", rich_spec()), ("minimal", minimal_spec())] {
        for (role_name, role) in roles() {
            docs.push((
                format!("{role_name}-{spec_name}"),
                render(&input(role, &spec)).expect("render"),
            ));
        }
    }
    let mut rng = Rng::new(42);
    while docs.len() < 16 {
        let spec = rng.valid_spec();
        let role = rng.valid_role();
        let auth = rng.word();
        let doc = render(&RenderInput {
            kubernetes_version: "v1.30.1",
            auth_token: &auth,
            ..input(role, &spec)
        })
        .expect("valid input");
        docs.push((format!("random-{}", docs.len()), doc));
    }
    docs
}

#[test]
fn every_document_passes_cloud_init_schema() {
    if !require("cloud-init", &["--version"]) {
        return;
    }
    let docs = documents();
    let rendered: Vec<String> = if has_cloud_init_python() {
        let texts: Vec<String> = docs.iter().map(|(_, d)| d.clone()).collect();
        cloud_init_render(&texts).into_iter().map(|(text, _)| text).collect()
    } else {
        docs.iter()
            .map(|(_, d)| {
                mk8s_cloudinit::jinja::unescape(d.strip_prefix("## template: jinja\n").unwrap_or(d)).into_owned()
            })
            .collect()
    };
    let dir = std::env::temp_dir().join(format!("mk8s-cloudinit-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut failures = Vec::new();
    for ((name, _), text) in docs.iter().zip(&rendered) {
        assert!(text.starts_with("#cloud-config\n"), "{name}");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write");
        let out = Command::new("cloud-init")
            .arg("schema")
            .arg("--config-file")
            .arg(&path)
            .output()
            .expect("cloud-init");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("Valid cloud-config") {
            failures.push(format!("{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_script_passes_shellcheck() {
    if !require("shellcheck", &["--version"]) {
        return;
    }
    let scripts_dir = crate_dir().join("scripts");
    let mut failures = Vec::new();
    for (name, _) in mk8s_cloudinit::scripts() {
        let mut shells = vec!["bash"];
        if *name == "99-bootstrap-complete.sh" {
            // Sourced by runcmd's /bin/sh (dash).
            shells.push("sh");
            shells.push("dash");
        }
        for shell in shells {
            let out = Command::new("shellcheck")
                .args(["--severity=style", "--external-sources", "-s", shell])
                .arg(name)
                .current_dir(&scripts_dir)
                .output()
                .expect("shellcheck");
            if !out.status.success() || !out.stdout.is_empty() {
                failures.push(format!("{name} ({shell}):\n{}", String::from_utf8_lossy(&out.stdout)));
            }
        }
    }
    let stub = crate_dir().join("tests/common/stub.sh");
    let out = Command::new("shellcheck")
        .args(["-s", "bash"])
        .arg(&stub)
        .output()
        .expect("shellcheck");
    if !out.status.success() {
        failures.push(format!("test stub:\n{}", String::from_utf8_lossy(&out.stdout)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
