#!/usr/bin/env bash
# Builds Canonical's Go MicroK8s providers (the "theirs" column of `make bench`) from their
# published Go modules into a cache keyed by version, the way hack/build-testenv.sh builds
# the test binaries.
#
#   hack/build-canonical.sh          # prints the provider directory last, or why it failed
#
# Layout ($CANONICAL_CACHE, default $HOME/.cache/mk8s-capi-canonical/v<ver>):
#   bin/bootstrap      the bootstrap manager (module github.com/canonical/cluster-api-bootstrap-provider-microk8s)
#   bin/controlplane   the control plane manager (…/cluster-api-control-plane-provider-microk8s)
#   crd/*.yaml         their CRDs, from each module's config/crd/bases (not the stale JoinConfiguration)
#   VERSION            the module version
# The directory is created atomically (built in a temp dir, then renamed). When the Go module
# proxy refuses a module or a build fails, nothing is created: the script writes the exact
# error to $CANONICAL_CACHE.failed and exits 3, and the bench reports that error.
set -euo pipefail

version=${CANONICAL_VERSION:-0.6.11}
# The module paths can be overridden only to exercise this script with modules the proxy serves.
bootstrap_mod=${CANONICAL_BOOTSTRAP_MODULE:-github.com/canonical/cluster-api-bootstrap-provider-microk8s}
controlplane_mod=${CANONICAL_CONTROLPLANE_MODULE:-github.com/canonical/cluster-api-control-plane-provider-microk8s}
out=${CANONICAL_CACHE:-$HOME/.cache/mk8s-capi-canonical/v$version}

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}

log() { printf 'build-canonical: %s\n' "$*" >&2; }

if [ -x "$out/bin/bootstrap" ] && [ -x "$out/bin/controlplane" ] && compgen -G "$out/crd/*.yaml" >/dev/null; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { log "go is not installed"; exit 1; }

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
failed="$out.failed"
rm -f "$failed"

fail() {
  # $1: what was attempted; $2: file with the tool's output.
  {
    echo "$1"
    cat "$2"
  } >"$failed"
  log "FAILED: $1"
  sed 's/^/  /' "$2" >&2
  log "(recorded in $failed)"
  exit 3
}

# A throw-away module per provider: each keeps its own dependency graph (the control plane
# module requires an older bootstrap module), and `go get` can lift old golang.org/x modules
# that no longer compile with a new Go.
mkdir -p "$work/out/bin" "$work/out/crd"

build() {
  # $1: module, $2: output name
  mkdir -p "$work/$2"
  cd "$work/$2"
  go mod init "mk8s-capi.local/canonical-$2" >/dev/null 2>&1
  if ! go get "$1@v$version" >"$work/get.log" 2>&1; then
    fail "go get $1@v$version" "$work/get.log"
  fi
  if go build -trimpath -ldflags '-s -w' -o "$work/out/bin/$2" "$1" >"$work/build.log" 2>&1; then
    return 0
  fi
  log "go build $1 failed; retrying with golang.org/x/sys and x/net at their latest versions"
  if go get golang.org/x/sys@latest golang.org/x/net@latest >>"$work/build.log" 2>&1 &&
    go build -trimpath -ldflags '-s -w' -o "$work/out/bin/$2" "$1" >>"$work/build.log" 2>&1; then
    return 0
  fi
  fail "go build $1 (v$version)" "$work/build.log"
}
build "$bootstrap_mod" bootstrap
build "$controlplane_mod" controlplane

for pair in "$bootstrap_mod:bootstrap" "$controlplane_mod:controlplane"; do
  m=${pair%%:*}
  src=$(cd "$work/${pair##*:}" && go list -m -f '{{.Dir}}' "$m")
  found=0
  for f in "$src"/config/crd/bases/*.yaml; do
    [ -e "$f" ] || continue
    case "$(basename "$f")" in
      *joinconfigurations*) continue ;;
    esac
    cp "$f" "$work/out/crd/"
    found=1
  done
  [ "$found" = 1 ] || { echo "no CRDs under $src/config/crd/bases" >"$work/crd.log"; fail "CRDs of $m" "$work/crd.log"; }
done
echo "v$version" >"$work/out/VERSION"

rm -rf "$out"
mv "$work/out" "$out"
log "built: $out"
echo "$out"
