#!/usr/bin/env bash
# Builds the real Kubernetes binaries our T1/T2 tests run against, from published Go
# modules only (no release downloads, no containers), into a cache keyed by version.
#
#   hack/build-testenv.sh [--with-capi] [--with-helm]   # prints the cache directory last
#
# Layout of the cache ($TESTENV_CACHE, default $HOME/.cache/microk8s-capi-testenv):
#   k8s-v<ver>/{kube-apiserver,kube-controller-manager}
#   etcd-v<ver>/etcd
#   capi-v<ver>/{crd/*.yaml,webhook/manifests.yaml,capi-manager,clusterctl}
#   clusterctl-v<capi>-cm<cert-manager>/{core-components.yaml,metadata.yaml,cert-manager-crds/*.yaml}
#   helm-v<ver>/helm
# Each directory is created atomically (built in a temp dir, then renamed), so an
# interrupted build never leaves a half-filled cache that a later run trusts.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/testenv-versions.env
. "$here/testenv-versions.env"

with_capi=0
with_helm=0
for arg in "$@"; do
  case "$arg" in
    --with-capi) with_capi=1 ;;
    --with-helm) with_helm=1 ;;
    --all) with_capi=1; with_helm=1 ;;
    *) echo "build-testenv: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

cache=${TESTENV_CACHE:-$HOME/.cache/microk8s-capi-testenv}
mkdir -p "$cache"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
export GONOSUMDB=${GONOSUMDB:-} GOSUMDB=${GOSUMDB:-sum.golang.org}

log() { printf 'build-testenv: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_go() {
  command -v go >/dev/null || die "go is not installed (Go >= 1.26 is needed to build the test binaries)"
  local v
  v=$(go env GOVERSION)
  case "$v" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) die "Go $v is too old; Go >= 1.26 is needed" ;;
  esac
}

check_disk() {
  # A cold build fills the module and build caches with several GiB.
  local need_gib=$1 free_gib
  free_gib=$(df -BG --output=avail "$cache" | tail -n 1 | tr -dc '0-9')
  if [ "$free_gib" -lt "$need_gib" ]; then
    die "only ${free_gib}G free under $cache; a cold build needs about ${need_gib}G"
  fi
}

# new_wrapper DIR: an empty throw-away main module to build published modules from.
new_wrapper() {
  local dir=$1
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init local/testenv-build >/dev/null 2>&1 && go mod edit -go=1.26.0)
}

# finish TMPDIR FINALDIR: atomically publish a completed cache directory.
finish() {
  local tmp=$1 final=$2
  rm -rf "$final"
  mv "$tmp" "$final"
}

version_ok() { # version_ok BINARY EXPECTED-SUBSTRING [VERSION-ARGS...]
  local bin=$1 want=$2
  shift 2
  [ "$#" -gt 0 ] || set -- --version
  [ -x "$bin" ] || return 1
  # Capture first, then match: piping into `grep -q` under pipefail fails at random, because
  # grep exits at the first matching line and the binary (etcd prints four lines) then dies of
  # SIGPIPE, which made CI rebuild a good cache and reject the result.
  local out
  out=$("$bin" "$@" 2>/dev/null) || return 1
  grep -q -- "$want" <<<"$out"
}

build_etcd() {
  local out="$cache/etcd-v$ETCD_VERSION"
  if version_ok "$out/etcd" "etcd Version: $ETCD_VERSION"; then log "etcd v$ETCD_VERSION cached"; return; fi
  check_disk 4
  log "building etcd v$ETCD_VERSION"
  local w="$cache/.work-etcd" tmp="$cache/.tmp-etcd"
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp"
  (
    cd "$w"
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
  )
  version_ok "$tmp/etcd" "etcd Version: $ETCD_VERSION" || die "built etcd does not report v$ETCD_VERSION"
  finish "$tmp" "$out"; rm -rf "$w"
}

build_k8s() {
  local out="$cache/k8s-v$K8S_VERSION"
  if version_ok "$out/kube-apiserver" "Kubernetes v$K8S_VERSION" \
     && version_ok "$out/kube-controller-manager" "Kubernetes v$K8S_VERSION"; then
    log "kubernetes v$K8S_VERSION cached"; return
  fi
  check_disk 10
  log "building kube-apiserver and kube-controller-manager v$K8S_VERSION"
  local w="$cache/.work-k8s" tmp="$cache/.tmp-k8s" staging minor gomod
  staging="v0.${K8S_VERSION#1.}"
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp"
  (
    cd "$w"
    # The staging modules are required at v0.0.0 and replaced by local paths in
    # k8s.io/kubernetes' own go.mod; derive the list from the go.mod the proxy serves
    # and point each at its published v0.<minor>.<patch>.
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    [ -f "$gomod" ] || die "could not download the go.mod of k8s.io/kubernetes@v$K8S_VERSION"
    local mods=()
    while IFS= read -r m; do mods+=("$m"); done < <(
      sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\2#p' "$gomod")
    [ "${#mods[@]}" -gt 20 ] || die "found only ${#mods[@]} staging modules in $gomod"
    log "replacing ${#mods[@]} staging modules with $staging"
    local args=()
    for m in "${mods[@]}"; do args+=("-replace=$m=$m@$staging"); done
    go mod edit "${args[@]}"
    # Keep the GODEBUG defaults of an official build.
    if grep -q '^godebug ' "$gomod"; then
      sed -n 's/^godebug \(.*\)$/\1/p' "$gomod" | while IFS= read -r g; do go mod edit -godebug="$g"; done
    fi
    go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION"
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      ld="$ld -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    go build -trimpath -ldflags "$ld" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  )
  version_ok "$tmp/kube-apiserver" "Kubernetes v$K8S_VERSION" || die "kube-apiserver does not report v$K8S_VERSION"
  version_ok "$tmp/kube-controller-manager" "Kubernetes v$K8S_VERSION" || die "kube-controller-manager does not report v$K8S_VERSION"
  finish "$tmp" "$out"; rm -rf "$w"
}

capi_module_dir() { # prints the unpacked root module directory of sigs.k8s.io/cluster-api
  go mod download -json "sigs.k8s.io/cluster-api@v$CAPI_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'
}

build_capi_crds() {
  # CAPI's CRDs and webhook manifests (always needed: T1 tests install them).
  local out="$cache/capi-crds-v$CAPI_VERSION"
  if [ -f "$out/.complete" ]; then log "CAPI v$CAPI_VERSION CRDs cached"; return; fi
  log "fetching CAPI v$CAPI_VERSION CRDs"
  local w="$cache/.work-capi-crds" tmp="$cache/.tmp-capi-crds" dir
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp/crd" "$tmp/webhook"
  dir=$(cd "$w" && capi_module_dir)
  [ -d "$dir/core/config/crd/bases" ] || die "no core/config/crd/bases in $dir"
  cp "$dir"/core/config/crd/bases/*.yaml "$tmp/crd/"
  cp "$dir/core/config/webhook/manifests.yaml" "$tmp/webhook/manifests.yaml"
  if [ -d "$dir/cmd/clusterctl/config/crd/bases" ]; then
    mkdir -p "$tmp/clusterctl-crd"; cp "$dir"/cmd/clusterctl/config/crd/bases/*.yaml "$tmp/clusterctl-crd/"
  fi
  chmod -R u+w "$tmp"
  [ "$(find "$tmp/crd" -name '*.yaml' | wc -l)" -ge 10 ] || die "too few CAPI CRDs copied from $dir"
  touch "$tmp/.complete"
  finish "$tmp" "$out"; rm -rf "$w"
}

build_capi_bins() {
  local out="$cache/capi-v$CAPI_VERSION"
  if [ -x "$out/capi-manager" ] && version_ok "$out/clusterctl" "GitVersion:\"v$CAPI_VERSION\"" version; then log "CAPI v$CAPI_VERSION binaries cached"; return; fi
  check_disk 8
  log "building CAPI core manager and clusterctl v$CAPI_VERSION"
  local w="$cache/.work-capi" tmp="$cache/.tmp-capi"
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp"
  (
    cd "$w"
    # v1.14 replaces its api module by a local path; point both at the release.
    go mod edit -replace="sigs.k8s.io/cluster-api=sigs.k8s.io/cluster-api@v$CAPI_VERSION" \
                -replace="sigs.k8s.io/cluster-api/api=sigs.k8s.io/cluster-api/api@v$CAPI_VERSION"
    go get "sigs.k8s.io/cluster-api/core@v$CAPI_VERSION" "sigs.k8s.io/cluster-api/cmd/clusterctl@v$CAPI_VERSION"
    local ld="-s -w" minor kv
    minor=$(echo "$CAPI_VERSION" | cut -d. -f2)
    for kv in gitVersion=v$CAPI_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean \
              gitCommit=0000000000000000000000000000000000000000 buildDate=1970-01-01T00:00:00Z; do
      ld="$ld -X sigs.k8s.io/cluster-api/version.$kv"
    done
    go build -trimpath -ldflags "$ld" -o "$tmp/capi-manager" sigs.k8s.io/cluster-api/core
    go build -trimpath -ldflags "$ld" -o "$tmp/clusterctl" sigs.k8s.io/cluster-api/cmd/clusterctl
  )
  "$tmp/capi-manager" --help >/dev/null 2>&1 || die "capi-manager does not start"
  version_ok "$tmp/clusterctl" "GitVersion:\"v$CAPI_VERSION\"" version || die "clusterctl does not report v$CAPI_VERSION"
  finish "$tmp" "$out"; rm -rf "$w"
}

build_clusterctl_repo() {
  # What `clusterctl init` needs offline: CAPI core's provider components, assembled from
  # the module's kustomize config as CAPI's release does (the image named as released; the
  # Deployment never runs here), its metadata.yaml, and cert-manager's CRDs (clusterctl's
  # cert-manager check only creates a test Issuer and Certificate).
  local out="$cache/clusterctl-v$CAPI_VERSION-cm$CERT_MANAGER_VERSION"
  if [ -f "$out/.complete" ]; then log "clusterctl repository (CAPI v$CAPI_VERSION, cert-manager v$CERT_MANAGER_VERSION) cached"; return; fi
  command -v kubectl >/dev/null || die "kubectl is needed to assemble CAPI's core components"
  log "assembling CAPI v$CAPI_VERSION core components and cert-manager v$CERT_MANAGER_VERSION CRDs"
  local w="$cache/.work-clusterctl" tmp="$cache/.tmp-clusterctl" dir cm
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp/cert-manager-crds"
  dir=$(cd "$w" && capi_module_dir)
  cm=$(cd "$w" && go mod download -json "github.com/cert-manager/cert-manager@v$CERT_MANAGER_VERSION" \
         | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$dir/core/config/default" ] || die "no core/config/default in $dir"
  [ -d "$cm/deploy/crds" ] || die "no deploy/crds in cert-manager v$CERT_MANAGER_VERSION"
  kubectl kustomize "$dir/core/config/default" \
    | sed "s#image: gcr.io/k8s-staging-cluster-api/cluster-api-controller:main#image: registry.k8s.io/cluster-api/cluster-api-controller:v$CAPI_VERSION#" \
    > "$tmp/core-components.yaml"
  grep -q "cluster-api-controller:v$CAPI_VERSION" "$tmp/core-components.yaml" || die "unexpected image in CAPI's core components"
  cp "$dir/metadata.yaml" "$tmp/metadata.yaml"
  cp "$cm"/deploy/crds/*.yaml "$tmp/cert-manager-crds/"
  chmod -R u+w "$tmp"
  [ "$(find "$tmp/cert-manager-crds" -name '*.yaml' | wc -l)" -ge 6 ] || die "too few cert-manager CRDs"
  touch "$tmp/.complete"
  finish "$tmp" "$out"; rm -rf "$w"
}

build_helm() {
  local out="$cache/helm-v$HELM_VERSION"
  if version_ok "$out/helm" "v$HELM_VERSION" version --short; then log "helm v$HELM_VERSION cached"; return; fi
  check_disk 4
  log "building helm v$HELM_VERSION"
  local w="$cache/.work-helm" tmp="$cache/.tmp-helm"
  new_wrapper "$w"; rm -rf "$tmp"; mkdir -p "$tmp"
  (
    cd "$w"
    go get "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
      -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
  )
  version_ok "$tmp/helm" "v$HELM_VERSION" version --short || die "helm does not report v$HELM_VERSION"
  finish "$tmp" "$out"; rm -rf "$w"
}

require_go
start=$(date +%s)
build_etcd
build_k8s
build_capi_crds
if [ "$with_capi" = 1 ]; then build_capi_bins; build_clusterctl_repo; fi
if [ "$with_helm" = 1 ]; then build_helm; fi
log "done in $(( $(date +%s) - start ))s; cache uses $(du -sh "$cache" | cut -f1)"
echo "$cache"
