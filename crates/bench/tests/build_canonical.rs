//! `hack/build-canonical.sh` against a local Go module proxy (`GOPROXY=file://…`) serving two
//! stand-in provider modules laid out like Canonical's (main package at the module root, CRDs
//! under `config/crd/bases`, a stale JoinConfiguration CRD), and against a proxy that serves
//! nothing: the success path the real modules would take, and the exact failure record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mk8s-build-canonical-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a module proxy tree with `example.com/<name>@v0.6.11` for each name (zips by
/// Python's zipfile: the Go proxy protocol's files are .info, .mod, .zip and list).
fn fake_proxy(dir: &Path, names: &[&str]) {
    let script = r#"
import json, os, sys, zipfile
root, names = sys.argv[1], sys.argv[2:]
for name in names:
    mod, ver = "example.com/" + name, "v0.6.11"
    d = os.path.join(root, mod, "@v")
    os.makedirs(d, exist_ok=True)
    gomod = "module %s\n\ngo 1.21\n" % mod
    open(os.path.join(d, ver + ".mod"), "w").write(gomod)
    open(os.path.join(d, ver + ".info"), "w").write(json.dumps({"Version": ver, "Time": "2024-11-06T00:00:00Z"}))
    open(os.path.join(d, "list"), "w").write(ver + "\n")
    with zipfile.ZipFile(os.path.join(d, ver + ".zip"), "w") as z:
        p = "%s@%s/" % (mod, ver)
        z.writestr(p + "go.mod", gomod)
        z.writestr(p + "main.go", 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("%s") }\n' % name)
        z.writestr(p + "config/crd/bases/x_%s.yaml" % name, "kind: CustomResourceDefinition\n")
        z.writestr(p + "config/crd/bases/bootstrap.cluster.x-k8s.io_joinconfigurations.yaml", "stale: true\n")
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .args(names)
        .status()
        .expect("python3");
    assert!(st.success());
}

fn run_script(proxy: &Path, out: &Path, work: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("hack/build-canonical.sh"))
        .env("GOPROXY", format!("file://{}", proxy.display()))
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOMODCACHE", work.join("modcache"))
        .env("CANONICAL_BOOTSTRAP_MODULE", "example.com/fake-bootstrap")
        .env("CANONICAL_CONTROLPLANE_MODULE", "example.com/fake-controlplane")
        .env("CANONICAL_CACHE", out)
        .output()
        .expect("bash")
}

fn clean(work: &Path) {
    // The module cache is read-only by design.
    let _ = Command::new("chmod").arg("-R").arg("u+w").arg(work).status();
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn builds_both_managers_and_keeps_their_crds_but_not_the_stale_one() {
    if Command::new("go").arg("version").output().is_err() {
        panic!("go is required by this test (CI installs it; see .ci/run)");
    }
    let work = scratch("ok");
    let proxy = work.join("proxy");
    fake_proxy(&proxy, &["fake-bootstrap", "fake-controlplane"]);
    let out = work.join("cache/v0.6.11");
    let o = run_script(&proxy, &out, &work);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), out.display().to_string());
    for (bin, says) in [("bootstrap", "fake-bootstrap"), ("controlplane", "fake-controlplane")] {
        let r = Command::new(out.join("bin").join(bin)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), says);
    }
    let mut crds: Vec<String> = std::fs::read_dir(out.join("crd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    crds.sort();
    assert_eq!(crds, ["x_fake-bootstrap.yaml", "x_fake-controlplane.yaml"]);
    assert_eq!(std::fs::read_to_string(out.join("VERSION")).unwrap().trim(), "v0.6.11");
    // No temporary build directory is left beside the result.
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A second run trusts the cache.
    let o = run_script(&proxy, &out, &work);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cached"));
    clean(&work);
}

#[test]
fn a_refused_module_is_recorded_exactly_and_leaves_no_directory() {
    let work = scratch("refused");
    let proxy = work.join("proxy");
    // Only the control plane module is served.
    fake_proxy(&proxy, &["fake-controlplane"]);
    let out = work.join("cache/v0.6.11");
    let o = run_script(&proxy, &out, &work);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
    let failed = std::fs::read_to_string(work.join("cache/v0.6.11.failed")).unwrap();
    let first = failed.lines().next().unwrap_or_default();
    assert_eq!(first, "go get example.com/fake-bootstrap@v0.6.11");
    assert!(failed.contains("example.com/fake-bootstrap"), "{failed}");
    clean(&work);
}
