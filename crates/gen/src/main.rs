//! `mk8s-gen [--check] [ROOT]`: writes the generated manifests under ROOT (default: the
//! current directory), or with `--check` fails when the committed copies differ.
//!
//! `mk8s-gen release [--version V] [--templates DIR] [--repository] [OUT]`: writes the
//! clusterctl release manifests into OUT (default `out`); with `--repository`, as a clusterctl
//! local repository (`<provider>/<version>/<file>`) with a `clusterctl.yaml` pointing at it.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("release") {
        return release(std::env::args().skip(2).collect());
    }
    let mut check = false;
    let mut root = PathBuf::from(".");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: mk8s-gen [--check] [ROOT]");
                return ExitCode::SUCCESS;
            }
            other => root = PathBuf::from(other),
        }
    }
    let files = match mk8s_gen::generate() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mk8s-gen: rendering failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = vec![];
    for (rel, content) in files {
        let path = root.join(&rel);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            stale.push(rel);
            continue;
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("mk8s-gen: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::write(&path, content) {
            eprintln!("mk8s-gen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {rel}");
    }
    if !stale.is_empty() {
        eprintln!("mk8s-gen: out of date (run `make manifests`): {}", stale.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn release(args: Vec<String>) -> ExitCode {
    let mut version = mk8s_gen::release::version();
    let mut templates = PathBuf::from("templates");
    let mut repository = false;
    let mut out = PathBuf::from("out");
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--version" => version = it.next().unwrap_or_default(),
            "--templates" => templates = it.next().map(PathBuf::from).unwrap_or_default(),
            "--repository" => repository = true,
            "-h" | "--help" => {
                println!("usage: mk8s-gen release [--version V] [--templates DIR] [--repository] [OUT]");
                return ExitCode::SUCCESS;
            }
            other => out = PathBuf::from(other),
        }
    }
    if !version.starts_with('v') || version.split('.').count() != 3 {
        eprintln!("mk8s-gen release: --version must look like v0.1.0, not {version:?}");
        return ExitCode::FAILURE;
    }
    let mut sim_templates = vec![];
    for name in mk8s_gen::release::SIM_TEMPLATES {
        let path = templates.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => sim_templates.push((name.to_string(), text)),
            Err(e) => {
                eprintln!("mk8s-gen release: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let files = if repository {
        mk8s_gen::release::repository_files(&version, &sim_templates)
    } else {
        mk8s_gen::release::release_files(&version, &sim_templates)
    };
    let mut files = match files {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mk8s-gen release: rendering failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if repository {
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("mk8s-gen release: {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        let abs = std::fs::canonicalize(&out).unwrap_or_else(|_| out.clone());
        match mk8s_gen::release::clusterctl_config(&abs.display().to_string(), &version, &[], &Default::default()) {
            Ok(text) => files.push(("clusterctl.yaml".into(), text)),
            Err(e) => {
                eprintln!("mk8s-gen release: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    for (rel, content) in files {
        let path = out.join(&rel);
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("mk8s-gen release: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::write(&path, content) {
            eprintln!("mk8s-gen release: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
