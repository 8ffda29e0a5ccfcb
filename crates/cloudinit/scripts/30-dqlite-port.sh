#!/bin/bash
# Moves this control plane node's dqlite to PORT: writes the new address to dqlite's
# update.yaml, restarts k8s-dqlite and waits for the API server.
# Usage: 30-dqlite-port.sh PORT
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 1)) || ! is_port "$1"; then
  usage "PORT"
fi
port=$1
backend="${SNAP_CURRENT}/var/kubernetes/backend"
[[ -e ${backend}/info.yaml ]] || die "${backend#"${CAPI_ROOT}"}/info.yaml does not exist; is MicroK8s installed?"

address=$(grep -m1 -E '^Address:' "${backend}/info.yaml") || die "no Address in ${backend#"${CAPI_ROOT}"}/info.yaml"
moved=$(sed -E "s/:[0-9]+([\"']?)[[:space:]]*\$/:${port}\\1/" <<<"${address}")
if [[ ${moved} == "${address}" ]]; then
  log "dqlite already listens on port ${port}"
  exit 0
fi
printf '%s\n' "${moved}" >"${backend}/update.yaml"
restart_service daemon-k8s-dqlite
wait_apiserver
log "dqlite listens on port ${port}"
