//! `mk8s-bench takeover` end to end, with our own binaries standing in for Canonical's
//! (`hack/stand-in-theirs.sh`, debug build): the live-takeover path `make takeover` takes the
//! day Canonical's modules are built — their CRDs relabelled for the v1beta1 contract, their
//! managers out of cluster bound to cluster-admin, a 3 + 2 cluster provisioned by them, the
//! cut-over (managers stopped, bindings removed, our CRDs, our managers under
//! `config/rbac/`), every takeover check, then a scale-up and a rolling upgrade. With the
//! stand-in the starting state is ours already, so this proves the harness and the cut-over
//! from a v1beta1-contract installation, not compatibility with Canonical's state (the
//! synthetic `takeover` e2e test covers that).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn takeover_from_stand_in_managers() {
    if let Err(e) = mk8s_testenv::Binaries::discover() {
        assert!(std::env::var_os("CI").is_none(), "CI needs the test binaries: {e}");
        eprintln!("skipped: {e}");
        return;
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_mk8s-bench"));
    let bins = bench.parent().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scratch = std::env::temp_dir().join(format!("mk8s-takeover-stand-in-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let theirs = scratch.join("theirs");
    let st = Command::new("bash")
        .arg(root.join("hack/stand-in-theirs.sh"))
        .arg(&theirs)
        .env("CARGO_TARGET_DIR", bins.parent().unwrap())
        .env("PROFILE", bins.file_name().unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "hack/stand-in-theirs.sh");

    let out = scratch.join("results.json");
    let st = Command::new(&bench)
        .args(["takeover", "--theirs"])
        .arg(&theirs)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "mk8s-bench takeover failed (its output is above)");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let t = &r["takeover"];
    assert_eq!(t["ran"], true, "{t}");
    assert!(t["theirs"].as_str().unwrap().starts_with("stand-in"), "{t}");
    assert_eq!(t["available_throughout"], true, "{t}");
    assert_eq!(t["kubeconfig_compliant"], true, "{t}");
    assert_eq!(
        t["unchanged"],
        serde_json::json!({"machines": 5, "bootstrap_data_secrets": 5, "cluster_secrets": 3, "inits": 1}),
        "{t}"
    );
    for key in [
        "provisioned_by_theirs_s",
        "taken_over_s",
        "scale_up_to_5cp_3w_s",
        "rolling_upgrade_to_v1_34_s",
    ] {
        assert!(t[key].as_f64().is_some_and(|s| s > 0.0), "{key}: {t}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
