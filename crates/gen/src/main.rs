//! `mk8s-gen [--check] [ROOT]`: writes the generated manifests under ROOT (default: the
//! current directory), or with `--check` fails when the committed copies differ.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
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
