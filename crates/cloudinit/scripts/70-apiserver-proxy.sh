#!/bin/bash
# Worker: points MicroK8s' local API server proxy at the cluster's control plane endpoint
# instead of the control plane nodes it learnt when joining.
# Usage: 70-apiserver-proxy.sh HOST:PORT [--no-refresh]
#   --no-refresh  MicroK8s 1.25 and newer: stop the proxy from replacing the endpoint with
#                 the control plane nodes' addresses, and restart it
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# < 1 || $# > 2)) || [[ -z $1 || ${2:---no-refresh} != --no-refresh ]]; then
  usage "HOST:PORT [--no-refresh]"
fi
endpoint=$1
no_refresh=${2:+true}
provider="${SNAP_ARGS}/traefik/provider.yaml"

retry 60 5 "waiting for ${provider#"${CAPI_ROOT}"}" test -e "${provider}"

prefix=""
while IFS= read -r line || [[ -n ${line} ]]; do
  if [[ ${line} =~ ^([[:space:]]*-?[[:space:]]*)address: ]]; then
    if [[ -z ${prefix} ]]; then
      prefix=${BASH_REMATCH[1]}
      printf "%saddress: '%s'\n" "${prefix}" "${endpoint}"
    fi
    continue
  fi
  printf '%s\n' "${line}"
done <"${provider}" >"${provider}.capi"
if [[ -z ${prefix} ]]; then
  rm -f "${provider}.capi"
  die "no server address in ${provider#"${CAPI_ROOT}"}"
fi
mv "${provider}.capi" "${provider}"
log "the API server proxy forwards to ${endpoint}"

if [[ ${no_refresh} == true ]]; then
  proxy_args="${SNAP_ARGS}/apiserver-proxy"
  [[ -e ${proxy_args} ]] || die "${proxy_args#"${CAPI_ROOT}"} does not exist"
  sed -i '/^--refresh-interval/d' "${proxy_args}"
  printf -- '--refresh-interval 0s\n' >>"${proxy_args}"
  restart_service daemon-apiserver-proxy
  log "the API server proxy no longer refreshes its endpoints"
fi
