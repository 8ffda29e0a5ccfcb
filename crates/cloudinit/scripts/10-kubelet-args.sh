#!/bin/bash
# Appends the extra kubelet arguments cloud-init wrote to /var/tmp/extra-kubelet-args (one
# per line) to MicroK8s' kubelet arguments and restarts kubelite.
# Usage: 10-kubelet-args.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
extra="${CAPI_ROOT}/var/tmp/extra-kubelet-args"
args_file="${SNAP_ARGS}/kubelet"
[[ -e ${extra} ]] || die "${extra#"${CAPI_ROOT}"} does not exist"
[[ -e ${args_file} ]] || die "${args_file#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

{
  printf '\n# Extra arguments from Cluster API (MicroK8sConfig initConfiguration.extraKubeletArgs)\n'
  cat "${extra}"
} >>"${args_file}"
restart_service daemon-kubelite
log "extra kubelet arguments added"
