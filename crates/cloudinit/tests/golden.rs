//! T0: the full document of every role, for a spec with every field set and for an empty
//! spec, compared byte for byte with `tests/golden/*.yaml`. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mk8s-cloudinit --test golden`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::*;
use mk8s_cloudinit::render;

#[test]
fn documents_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (spec_name, spec) in [("rich", rich_spec()), ("minimal", minimal_spec())] {
        for (role_name, role) in roles() {
            let doc = render(&input(role, &spec)).expect("render");
            mk8s_cloudinit::check(&doc).unwrap_or_else(|p| panic!("{role_name}-{spec_name}: {p:?}"));
            let path = crate_dir()
                .join("tests/golden")
                .join(format!("{role_name}-{spec_name}.yaml"));
            if update {
                write(&path, &doc);
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == doc => {}
                Ok(golden) => {
                    let line = golden.lines().zip(doc.lines()).position(|(a, b)| a != b);
                    mismatches.push(format!(
                        "{} differs (first at line {:?})",
                        path.display(),
                        line.map(|l| l + 1)
                    ));
                }
                Err(e) => mismatches.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nregenerate with UPDATE_GOLDEN=1 and review the diff",
        mismatches.join("\n")
    );
}
