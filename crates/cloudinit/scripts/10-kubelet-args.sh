#!/bin/bash
# Appends the extra kubelet arguments cloud-init wrote to /var/tmp/extra-kubelet-args (one
# per line) to MicroK8s' kubelet arguments, between two marker lines, and restarts kubelite.
# Joining nodes run it after `microk8s join`, which replaces their kubelet arguments with a
# copy of the control plane node's, that node's block included: a block between the markers
# is removed first, but for `--node-ip` (join rewrites it in place for this node). A start
# marker without an end marker (written before the end marker existed, and MicroK8s may
# have appended its own flags after it) loses only the marker line.
# Usage: 10-kubelet-args.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
extra="${CAPI_ROOT}/var/tmp/extra-kubelet-args"
args_file="${SNAP_ARGS}/kubelet"
[[ -e ${extra} ]] || die "${extra#"${CAPI_ROOT}"} does not exist"
[[ -e ${args_file} ]] || die "${args_file#"${CAPI_ROOT}"} does not exist; is MicroK8s installed?"

begin='# Extra arguments from Cluster API (MicroK8sConfig initConfiguration.extraKubeletArgs)'
end='# End of the extra arguments from Cluster API'
kept=$(awk -v begin="${begin}" -v end="${end}" '
  $0 == begin { block = 1; n = 0; next }
  block && $0 == end {
    for (i = 1; i <= n; i++) if (held[i] ~ /^--node-ip([= ]|$)/) print held[i]
    block = 0
    next
  }
  block { held[++n] = $0; next }
  { print }
  END { if (block) for (i = 1; i <= n; i++) print held[i] }
' "${args_file}")
{
  printf '%s\n' "${kept}"
  printf '%s\n' "${begin}"
  cat "${extra}"
  # A final line without its newline still gets one.
  [[ -z $(tail -c 1 "${extra}") ]] || printf '\n'
  printf '%s\n' "${end}"
} >"${args_file}"
restart_service daemon-kubelite
log "extra kubelet arguments added"
