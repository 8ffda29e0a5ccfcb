//! The committed manifests are exactly what the code generates.

#[test]
fn committed_manifests_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stale = vec![];
    for (rel, content) in mk8s_gen::generate().unwrap() {
        let committed = std::fs::read_to_string(root.join(&rel)).unwrap_or_default();
        if committed != content {
            stale.push(rel);
        }
    }
    assert!(stale.is_empty(), "out of date, run `make manifests`: {stale:?}");
}
