#!/bin/bash
# Makes containerd pull images through proxies: appends the proxy variables to MicroK8s'
# containerd environment file (which MicroK8s sources as shell) and restarts containerd.
# Usage: 10-containerd-proxy.sh HTTP_PROXY HTTPS_PROXY NO_PROXY   (empty: not set)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 3)) || usage "HTTP_PROXY HTTPS_PROXY NO_PROXY"
env_file="${SNAP_ARGS}/containerd-env"
[[ -e ${env_file} ]] || die "${env_file#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

lines=()
add() {
  local value
  value=$(shell_quote "$3")
  lines+=("$1=${value}" "$2=${value}")
  configured=true
}
configured=false
if [[ -n $1 ]]; then add http_proxy HTTP_PROXY "$1"; fi
if [[ -n $2 ]]; then add https_proxy HTTPS_PROXY "$2"; fi
if [[ -n $3 ]]; then add no_proxy NO_PROXY "$3"; fi

if [[ ${configured} != true ]]; then
  log "no proxy to configure"
  exit 0
fi
printf '\n# Proxy settings from Cluster API (MicroK8sConfig initConfiguration)\n' >>"${env_file}"
printf '%s\n' "${lines[@]}" >>"${env_file}"
restart_service daemon-containerd
log "containerd uses the configured proxies"
