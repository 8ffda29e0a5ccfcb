#!/bin/bash
# Makes the MicroK8s cluster agent (which serves joins) listen on PORT.
# Usage: 30-cluster-agent-port.sh PORT
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 1)) || ! is_port "$1"; then
  usage "PORT"
fi
port=$1
args_file="${SNAP_ARGS}/cluster-agent"
[[ -e ${args_file} ]] || die "${args_file#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

if grep -Eq "^--bind[= ].*:${port}\$" "${args_file}"; then
  log "the cluster agent already listens on port ${port}"
  exit 0
fi
if grep -Eq '^--bind[= ]' "${args_file}"; then
  sed -i -E "s/^(--bind[= ].*):[0-9]+\$/\\1:${port}/" "${args_file}"
else
  printf -- '--bind=0.0.0.0:%s\n' "${port}" >>"${args_file}"
fi
restart_service daemon-cluster-agent
log "the cluster agent listens on port ${port}"
