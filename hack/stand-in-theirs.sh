#!/usr/bin/env bash
# Lays out a "theirs" directory for `mk8s-bench --theirs` from OUR release binaries and CRDs,
# to check the side-by-side harness itself while Canonical's modules cannot be built: the
# bench then runs ours through the same path as theirs (their CRD labelling, out-of-cluster
# launch, skip-preflight annotation, alternation), and every ratio should be close to 1.
#
#   hack/stand-in-theirs.sh DIR      # then: mk8s-bench available --theirs DIR
#
# PROFILE=debug takes target/debug instead of target/release (the takeover test does).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:?usage: hack/stand-in-theirs.sh DIR}
profile=${PROFILE:-release}
bins=${CARGO_TARGET_DIR:-$root/target}/$profile
for b in mk8s-bootstrap mk8s-controlplane; do
  [ -x "$bins/$b" ] || { echo "stand-in-theirs: build $bins/$b first (cargo build --workspace --bins, --release unless PROFILE=debug)" >&2; exit 1; }
done
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/crd"
ln -s "$bins/mk8s-bootstrap" "$dir/bin/bootstrap"
ln -s "$bins/mk8s-controlplane" "$dir/bin/controlplane"
cp "$root"/config/crd/*.yaml "$dir/crd/"
echo "stand-in (ours, $(git -C "$root" rev-parse --short HEAD))" >"$dir/VERSION"
echo "$dir"
