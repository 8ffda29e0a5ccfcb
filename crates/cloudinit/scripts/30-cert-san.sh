#!/bin/bash
# Adds the control plane endpoint to the API server certificate's subject alternative
# names (as IP.100 or DNS.100), regenerates the certificate and restarts kubelite.
# Usage: 30-cert-san.sh IP|DNS HOST
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 2)) || [[ ($1 != IP && $1 != DNS) || -z $2 ]]; then
  usage "IP|DNS HOST"
fi
entry="$1.100 = $2"
template="${SNAP_CURRENT}/certs/csr.conf.template"
[[ -e ${template} ]] || die "${template#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

if grep -qxF "${entry}" "${template}"; then
  log "the certificate template already has ${entry}"
else
  added=false
  while IFS= read -r line || [[ -n ${line} ]]; do
    if [[ ${line} =~ ^(IP|DNS)\.100[[:space:]]*= ]]; then
      continue
    fi
    printf '%s\n' "${line}"
    if [[ ${added} == false && ${line} =~ ^\[[[:space:]]*alt_names[[:space:]]*\] ]]; then
      printf '%s\n' "${entry}"
      added=true
    fi
  done <"${template}" >"${template}.capi"
  if [[ ${added} != true ]]; then
    rm -f "${template}.capi"
    die "no [ alt_names ] section in ${template#"${CAPI_ROOT}"}"
  fi
  mv "${template}.capi" "${template}"
  log "added ${entry} to the certificate template"
fi
run_configure_hook
restart_service daemon-kubelite
wait_apiserver
