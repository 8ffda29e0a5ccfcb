//! The committed CRD manifests (`config/sim/crd/`) are exactly what the code generates, and
//! carry the contract labels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn committed_crds_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stale = vec![];
    for (rel, content) in mk8s_sim::crd_files().unwrap() {
        if std::env::var("MK8S_SIM_WRITE_CRDS").is_ok_and(|v| v == "1") {
            std::fs::write(root.join(&rel), &content).unwrap();
        }
        let committed = std::fs::read_to_string(root.join(&rel)).unwrap_or_default();
        if committed != content {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "out of date, run `cargo run -p mk8s-sim -- crds` (or MK8S_SIM_WRITE_CRDS=1 cargo test -p mk8s-sim --test crds): {stale:?}"
    );
}

#[test]
fn crds_carry_the_v1beta2_contract_label_and_the_capi_names() {
    for (_, crd) in mk8s_sim::crds() {
        let labels = crd.metadata.labels.clone().unwrap();
        assert_eq!(labels["cluster.x-k8s.io/v1beta2"], "v1alpha1");
        // One contract label per API version: CAPI picks a contract for a version from an
        // unordered map, so a second label would make it random.
        assert!(!labels.contains_key("cluster.x-k8s.io/v1beta1"));
        assert_eq!(labels["cluster.x-k8s.io/provider"], "infrastructure-sim");
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(
            name,
            format!("{}.infrastructure.cluster.x-k8s.io", crd.spec.names.plural),
            "CRD name must be <plural>.<group>"
        );
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    }
}
